"""acctd/common/durable.py: whole-or-absent files, and their readers never
seeing a write in progress."""

from acctd.aaa.radius_accounting import Spool
from acctd.common import durable
from acctd.services.alerter import Message, Outbox


def message(mid: str) -> Message:
    return Message(id=mid, message_id=f"<{mid}@isp.example>", to=("noc@isp.example",),
                   subject="s", body="b", created=1.0)


def test_a_write_in_progress_is_not_a_file_yet(tmp_path):
    d = durable.Directory(tmp_path / "q")
    d.write("a.json", "{}")
    (d.path / (durable.TEMP_PREFIX + "b.json")).write_text('{"half')  # another thread, mid-write
    assert [p.name for p in d.files("*.json")] == ["a.json"]


def test_the_outbox_and_the_spool_leave_a_write_in_progress_alone(tmp_path):
    """The mail thread reads the outbox while a drain enqueues into it: a
    half-written message is neither read, nor renamed to .bad, nor sent."""
    out = Outbox(tmp_path / "outbox")
    out.write(message("m1"))
    torn = out.path / (durable.TEMP_PREFIX + "m2.json")
    torn.write_text('{"id": "m2", "to": ')
    assert [m.id for m in out.messages()] == ["m1"]
    assert torn.read_text() == '{"id": "m2", "to": '
    assert sorted(p.name for p in out.path.iterdir()) == sorted(
        ["m1.json", "failed", torn.name])

    spool = Spool(tmp_path / "spool")
    torn = spool.path / (durable.TEMP_PREFIX + "00000000000000000009.json")
    torn.write_text('{"id": "0000')
    assert spool.load() == []
    assert sorted(p.name for p in spool.path.iterdir()) == [torn.name]


def test_a_planted_temporary_name_is_replaced_not_followed(tmp_path):
    """Whoever could plant a symlink at the temporary name does not get the
    write: the link is removed and a new file made in its place."""
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / (durable.TEMP_PREFIX + "schedule.json")).symlink_to(victim)
    durable.write_file(tmp_path / "schedule.json", "{}")
    assert victim.read_text() == "untouched"
    assert (tmp_path / "schedule.json").read_text() == "{}"
    assert (tmp_path / "schedule.json").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schedule.json", "victim"]

    d = durable.Directory(tmp_path / "q")
    (d.path / (durable.TEMP_PREFIX + "a.json")).symlink_to(victim)
    d.write_many([("a.json", "1"), ("b.json", "2")])
    assert victim.read_text() == "untouched"
    assert [(p.name, p.read_text()) for p in d.files()] == [("a.json", "1"), ("b.json", "2")]
