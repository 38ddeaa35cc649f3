"""The collector's configuration, and its records turned into the
kernel's flow arrays and accounted by the same interval code as a drain."""

import datetime as dt

import numpy as np
import pytest

from acctd.bench import flowgen as g
from acctd.config import loader
from acctd.errors import BadRequest, ConfigError
from acctd.kernel import abi
from acctd.model import sources
from acctd.model.snapshot import Snapshot
from acctd.services.collector import flows, listener
from acctd.services.collector.service import parse_rawdata
from acctd.services.collector.templates import Store
from acctd.store import interval, rollup

BASE = """
[[collector]]
id = 1
listen = "127.0.0.1:2055"
source = ["192.0.2.1", "198.51.100.0/24"]
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "host"
name = "alice"
ip = "10.0.0.1"
ds-list = [1]
acct-policy = ["ip"]
[[unit]]
type = "host"
name = "bob"
ip = "10.0.0.2"
acct-policy = ["ip"]
"""


def test_collector_table_reads_netams_words():
    cfg = loader.loads(BASE + '[[collector]]\nid = 2\nlisten = "0 20001"\nsource = "192.0.2.9"\n'
                       'clock = "local"\n')
    one, two = cfg.collector
    assert one.listen == ("127.0.0.1", 2055) and one.clock == "remote"
    assert two.listen == ("0.0.0.0", 20001) and two.clock == "local"
    assert [str(n) for n in two.source] == ["192.0.2.9/32"]
    assert [u.ds_list for u in cfg.units] == [(1,), (0,)]


@pytest.mark.parametrize("text,msg", [
    ('[[collector]]\nid = 1\nlisten = "1.2.3:9"\nsource = ["192.0.2.1"]\n',
     "<string>:3: [[collector]] #1 key 'listen': expected [ADDRESS:]PORT, got '1.2.3:9'"),
    ('[[collector]]\nid = 1\nlisten = "70000"\nsource = ["192.0.2.1"]\n',
     "<string>:3: [[collector]] #1 key 'listen': port must be 1..65535, got 70000"),
    ('[[collector]]\nid = 1\n', "<string>:1: [[collector]] #1 key 'source': a netflow data "
     "source needs the exporters it accepts, e.g. source = [\"192.0.2.1\"]"),
    ('[[collector]]\nid = 1\nsource = ["x"]\n',
     "<string>:3: [[collector]] #1 key 'source[0]': expected an exporter address or prefix, got 'x'"),
    ('[[collector]]\nid = 1\nclock = "sun"\nsource = ["192.0.2.1"]\n',
     "<string>:3: [[collector]] #1 key 'clock'"),
    ('[[unit]]\ntype = "host"\nname = "a"\nip = "10.0.0.1"\nds-list = [3]\n',
     "<string>:5: [[unit]] #1 'a' key 'ds-list': data source 3 is not a [[collector]] id (known: 0)"),
])
def test_config_mistakes_name_file_line_and_key(text, msg):
    with pytest.raises(ConfigError) as e:
        loader.loads(text)
    assert str(e.value).startswith(msg), str(e.value)


def _snap():
    return Snapshot.build(loader.loads(BASE))


def _records(flows_):
    recs, _ = listener.decode(g.v5(flows_), "192.0.2.1", Store())
    return recs


def test_records_become_flows_of_the_units_of_their_source_only():
    snap = _snap()
    recs = _records([("10.0.0.1", "192.0.2.50", 1000, 80, 6, 3, 300),    # alice out
                     ("192.0.2.50", "10.0.0.1", 80, 1000, 6, 2, 200),    # alice in
                     ("10.0.0.2", "192.0.2.50", 1001, 80, 6, 5, 500),    # bob: the kernel's
                     ("10.9.9.9", "192.0.2.50", 1, 2, 17, 1, 28)])       # nobody's
    keys, vals, unmatched = flows.to_flows(recs, snap.units, sources.takes(snap.units, 1), 1)
    assert unmatched == 2
    assert list(keys["dir"]) == [abi.Dir.OUT, abi.Dir.IN]
    assert list(sources.of_flows(keys)) == [1, 1]
    assert list(vals["bytes"]) == [300, 200]


def test_sampled_records_are_renormalised():
    snap = _snap()
    recs = _records([("10.0.0.1", "192.0.2.50", 1000, 80, 6, 3, 300)])
    recs["sampling"] = 100
    _, vals, _ = flows.to_flows(recs, snap.units, sources.takes(snap.units, 1), 1)
    assert (int(vals["packets"][0]), int(vals["bytes"][0])) == (300, 30000)


def test_collected_flows_account_like_the_kernels():
    """Through interval.columns, the drain's own accounting: alice's total
    and her policy row from the router's records; flows between two of her
    addresses in one record count in and out."""
    snap = _snap()
    recs = _records([("10.0.0.1", "192.0.2.50", 1000, 80, 6, 3, 300),
                     ("192.0.2.50", "10.0.0.1", 80, 1000, 6, 2, 200)] * 2)
    keys, vals, _ = flows.to_flows(recs, snap.units, sources.takes(snap.units, 1), 1)
    keys, vals = flows.compact(keys, vals)
    assert len(keys) == 2
    ak, av = flows.addr_deltas(keys, vals, 77)
    assert list(av["last_ns"]) == [77]  # arrival, for the login service's inactivity
    rows, _ = interval.columns(snap, dt.datetime(2026, 1, 1, 12), keys, vals, ak, av,
                               np.zeros(2, np.uint64), np.zeros(2, np.uint64))
    alice = int(snap.unit_oids[snap.find("alice")])
    got = {(int(p), int(d)): (int(pk), int(b)) for u, p, d, pk, b in
           zip(rows["unit_oid"], rows["policy_oid"], rows["dir"], rows["packets"], rows["bytes"])
           if u == alice}
    ip = int(snap.policy_oids[0])
    assert got == {(rollup.ALL_TRAFFIC, 0): (4, 400), (rollup.ALL_TRAFFIC, 1): (6, 600),
                   (ip, 0): (4, 400), (ip, 1): (6, 600)}


def test_the_kernel_view_leaves_out_units_that_count_from_a_router():
    snap = _snap()
    addrs = np.zeros(2, abi.ADDR_KEY)
    addrs["addr"][0, 10:] = [0xFF, 0xFF, 10, 0, 0, 1]
    addrs["addr"][1, 10:] = [0xFF, 0xFF, 10, 0, 0, 2]
    vals = np.zeros(2, abi.ADDR_VAL)
    vals["bytes"] = [[10, 20], [30, 40]]
    vals["packets"] = [[1, 2], [3, 4]]
    fk, fv, ak, av, up, ub = sources.kernel_view(snap.units, np.zeros(0, abi.FLOW_KEY),
                                                 np.zeros(0, abi.FLOW_VAL), addrs, vals)
    assert len(ak) == 1 and bytes(ak["addr"][0][12:]) == bytes([10, 0, 0, 2])
    assert list(ub) == [10, 20] and list(up) == [1, 2]


@pytest.mark.parametrize("argv,want", [
    (["in", "100", "out", "200"], (None, (100, 200))),
    (["web", "out", "5"], ("web", (0, 5))),
])
def test_rawdata_words(argv, want):
    assert parse_rawdata(argv) == want


@pytest.mark.parametrize("argv", [[], ["in"], ["in", "-1"], ["sideways", "3"], ["in", "1.5"]])
def test_rawdata_bad_words(argv):
    with pytest.raises(BadRequest, match="rawdata"):
        parse_rawdata(argv)


class _Core:
    netns = None

    def __init__(self, snap):
        self.snapshot = snap


def _config_on_a_free_port():
    from tests.ports import free_port
    return loader.loads(BASE.replace("2055", str(free_port())))


def test_flows_held_between_drains_are_capped(tmp_path, monkeypatch):
    from acctd.services.collector import service
    monkeypatch.setattr(service, "MAX_ROWS", 50)
    monkeypatch.setattr(service, "BATCH", 10)
    cfg = _config_on_a_free_port()
    src = service._Source(_Core(Snapshot.build(cfg)), cfg.collector[0], str(tmp_path))
    try:
        for i in range(10):  # 10 packets of 10 distinct flows of alice
            src.listener.handle(g.v5([("10.0.0.1", "192.0.2.50", 1000 + 10 * i + j, 80, 6, 1,
                                       100) for j in range(10)]), "192.0.2.1")
        keys, vals = src.take()
        assert len(keys) == 50 and src.dropped == 50
        assert src.status()["dropped"] == 50
    finally:
        src.listener.sock.close()


def test_templates_survive_a_restart_of_the_source(tmp_path):
    """An IPFIX exporter's template, saved after a drain, decodes its data
    sets at once after a restart (before the exporter resends it)."""
    from acctd.services.collector.service import _Source
    cfg = _config_on_a_free_port()
    snap = Snapshot.build(cfg)
    flows_ = [("10.0.0.1", "192.0.2.50", 1000, 80, 6, 3, 300)]
    first = _Source(_Core(snap), cfg.collector[0], str(tmp_path))
    first.listener.handle(g.ipfix(flows_), "192.0.2.1")
    first.save()
    first.listener.sock.close()
    assert (tmp_path / "collector-1.templates.json").stat().st_mode & 0o777 == 0o600
    again = _Source(_Core(snap), cfg.collector[0], str(tmp_path))
    try:
        again.listener.handle(g.ipfix(flows_, template=False), "192.0.2.1")
        keys, vals = again.take()
        assert list(vals["bytes"]) == [300]
        assert again.status()["exporters"]["192.0.2.1"]["templates"] == 1
    finally:
        again.listener.sock.close()


def test_a_port_in_use_is_a_config_error_at_listen(tmp_path):
    import socket
    from acctd.services.collector.service import CollectorService
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        path = tmp_path / "acctd.toml"
        path.write_text(BASE.replace("2055", str(port)))
        cfg = loader.load(str(path))

        class Core:
            netns, config, state_dir = None, cfg, str(tmp_path)
        svc = CollectorService(Core(), cfg.collector)
        with pytest.raises(ConfigError) as e:
            svc.serve()
        assert str(e.value) == (f"{path}:4: [[collector]] #1 key 'listen': cannot listen on "
                                f"127.0.0.1:{port}: Address already in use")
        svc.close()
