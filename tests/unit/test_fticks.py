"""F-TICKS: the line format (character set, hashing), emitting to a real file
and a real Unix datagram socket, and reading a hand-written corpus of other
systems' logs into DuckDB with the exact report it must give."""

import datetime as dt
import gzip
import os
import shutil
import socket
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from acctd.aaa import fticks
from acctd.aaa.fticks import Emitter, FticksSettings, format_line, parse_line

CORPUS = Path(__file__).resolve().parent.parent / "data" / "fticks"
MTIME = dt.datetime(2024, 3, 3, 12, 0, tzinfo=dt.timezone.utc).timestamp()
UTC = dt.timezone.utc

# HMAC-SHA-256 with key "secret", computed with openssl (echo -n VALUE | openssl dgst
# -sha256 -hmac secret), so the test does not check the code against itself
HMAC_MAC = "95374b9ed7d68c745473725817a16d9e4c41e55f86f7184144859c6c9803066e"  # 00:11:22:33:44:55
HMAC_ANA = "4b25dc0d602dded61307fba0c5d2e54011413792931e937a9bb769779990d563"  # ana@fing.edu.uy


def settings(**kw):
    base = dict(federation="eduroam", viscountry="UY", visinst="UDELAR", key=b"secret",
                file="/nonexistent")
    base.update(kw)
    return FticksSettings(**base)


def keyfile(tmp_path, mode=0o600, data=b"secret\n"):
    p = tmp_path / "fticks.key"
    p.write_bytes(data)
    p.chmod(mode)
    return p


# --- settings ----------------------------------------------------------------------------

def test_settings_from_mapping(tmp_path):
    keyfile(tmp_path)
    s = FticksSettings.from_mapping({"federation": "eduroam", "visinst": "UDELAR",
                                     "viscountry": "uy", "key-file": "fticks.key",
                                     "syslog": True, "syslog-facility": "local3",
                                     "file": "fticks.log"}, base=tmp_path)
    assert s.version == "1.0" and s.viscountry == "UY" and s.key == b"secret"
    assert s.file == str(tmp_path / "fticks.log") and s.raw_values is False
    assert "secret" not in repr(s)


@pytest.mark.parametrize("table, key", [
    ({"syslog": True}, "federation"),
    ({"federation": "edu roam", "syslog": True}, "federation"),
    ({"federation": "eduroam", "version": 1.0, "syslog": True}, "version"),
    ({"federation": "eduroam", "visinst": "Universidad de la República", "syslog": True},
     "visinst"),
    ({"federation": "eduroam", "viscountry": "URY", "syslog": True}, "viscountry"),
    ({"federation": "eduroam", "raw-values": "yes", "syslog": True}, "raw-values"),
    ({"federation": "eduroam", "syslog": True, "syslog-facility": "local9"}, "syslog-facility"),
    ({"federation": "eduroam"}, "F-TICKS needs a destination: syslog = true and/or file"),
    ({"federation": "eduroam", "syslog": True, "colour": "red"}, "colour: unknown key"),
    ({"federation": "eduroam", "syslog": True, "key-file": "missing.key"}, "key-file"),
])
def test_settings_errors_name_the_key(tmp_path, table, key):
    with pytest.raises(ValueError) as e:
        FticksSettings.from_mapping(table, base=tmp_path)
    assert str(e.value).startswith(key)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_key_file_open_to_others_is_refused(tmp_path, mode):
    keyfile(tmp_path, mode)
    with pytest.raises(ValueError, match=rf"key-file: .*fticks.key is accessible by group or others "
                                         rf"\(mode {mode:04o}\); chmod 600"):
        FticksSettings.from_mapping({"federation": "eduroam", "syslog": True,
                                     "key-file": "fticks.key"}, base=tmp_path)


def test_key_file_empty_is_refused(tmp_path):
    keyfile(tmp_path, data=b"\n")
    with pytest.raises(ValueError, match="key-file: .* is empty"):
        FticksSettings.from_mapping({"federation": "eduroam", "syslog": True,
                                     "key-file": "fticks.key"}, base=tmp_path)


# --- the line ------------------------------------------------------------------------------

def test_line_hashes_user_and_mac_with_the_key():
    line = format_line(settings(), realm=None, user="ana@fing.edu.uy", csi="00-11-22-33-44-55",
                       result=True, ts=1709290800)
    assert line == ("F-TICKS/eduroam/1.0#REALM=fing.edu.uy#VISCOUNTRY=UY#VISINST=UDELAR#"
                    f"CSI={HMAC_MAC}#RESULT=OK#PN={HMAC_ANA}#TS=1709290800#")


def test_mac_spellings_hash_alike():
    s = settings()
    csis = {format_line(s, realm="r", user=None, csi=c, result="FAIL").split("#")[4]
            for c in ("00:11:22:33:44:55", "00-11-22-33-44-55", "0011.2233.4455",
                      "001122334455")}
    assert csis == {f"CSI={HMAC_MAC}"}


def test_raw_values_only_when_configured():
    line = format_line(settings(raw_values=True), realm=None, user="ana@fing.edu.uy",
                       csi="00-11-22-33-44-55", result=False)
    assert line == ("F-TICKS/eduroam/1.0#REALM=fing.edu.uy#VISCOUNTRY=UY#VISINST=UDELAR#"
                    "CSI=00:11:22:33:44:55#RESULT=FAIL#PN=anafing.edu.uy#")


SHA_MAC = "66fd6ef831e4ec98957030be94189a78ca3c2986dbed57a3b97985d862c217af"  # openssl, no key
HMAC_ADDR = "712527486449ca308b05db14be48ff60d590af82f79cc721ec57092e87c8b77f"  # 10.0.0.9


@pytest.mark.parametrize("mac, csi", [
    ("vendor-key-hashed", f"00:11:22:{HMAC_MAC}"),     # radsecproxy's VendorKeyHashed
    ("VendorKeyHashed", f"00:11:22:{HMAC_MAC}"),
    ("fully-key-hashed", HMAC_MAC),
    ("vendor-hashed", f"00:11:22:{SHA_MAC}"),
    ("FullyHashed", SHA_MAC),
    ("original", "00:11:22:33:44:55"),
    ("static", "undisclosed"),
])
def test_mac_modes_of_radsecproxy(tmp_path, mac, csi):
    keyfile(tmp_path)
    s = FticksSettings.from_mapping({"federation": "eduroam", "file": "f", "key-file": "fticks.key",
                                     "mac": mac}, base=tmp_path)
    line = format_line(s, realm="r", user=None, csi="00-11-22-33-44-55", result=True)
    assert line == f"F-TICKS/eduroam/1.0#REALM=r#CSI={csi}#RESULT=OK#"


def test_vendor_hashing_an_address_hashes_it_whole():
    line = format_line(settings(mac="vendor-key-hashed"), realm="r", user=None, csi="10.0.0.9",
                       result=True)
    assert line.split("#")[4] == f"CSI={HMAC_ADDR}"


def test_key_hashed_mac_needs_a_key(tmp_path):
    with pytest.raises(ValueError) as e:
        FticksSettings.from_mapping({"federation": "eduroam", "syslog": True,
                                     "mac": "VendorKeyHashed"}, base=tmp_path)
    assert str(e.value) == "mac = 'vendor-key-hashed' needs key-file"
    with pytest.raises(ValueError) as e:
        FticksSettings.from_mapping({"federation": "eduroam", "syslog": True,
                                     "mac": "vendor"}, base=tmp_path)
    assert str(e.value) == ("mac: expected one of static, original, vendor-hashed, "
                            "vendor-key-hashed, fully-hashed, fully-key-hashed, got 'vendor'")


def test_ap_and_rp_are_written_where_known():
    s = settings(ap="idp.fing.edu.uy", rp="gw1.udelar")
    line = format_line(s, realm=None, user="ana@fing.edu.uy", csi=None, result=True,
                       method="login", ts=1709290800)
    assert line == ("F-TICKS/eduroam/1.0#REALM=fing.edu.uy#VISCOUNTRY=UY#VISINST=UDELAR#"
                    f"RESULT=OK#PN={HMAC_ANA}#AP=idp.fing.edu.uy#RP=gw1.udelar#AN=login#"
                    "TS=1709290800#")
    assert "#AP=home.example#" in format_line(s, realm="r", user=None, csi=None, result=True,
                                              ap="home.example")
    assert parse_line(line)["attrs"]["RP"] == "gw1.udelar"


def test_basic_reporting_writes_realm_country_csi_result_and_time():
    """radsecproxy's FTicksReporting Basic: no VISINST; Full (the default) all."""
    s = settings(reporting="basic", ap="idp", rp="gw")
    line = format_line(s, realm=None, user="ana@fing.edu.uy", csi="00-11-22-33-44-55",
                       result=True, method="login", ts=1709290800, extra={"X1": "y"})
    assert line == (f"F-TICKS/eduroam/1.0#REALM=fing.edu.uy#VISCOUNTRY=UY#CSI={HMAC_MAC}#"
                    "RESULT=OK#TS=1709290800#")
    assert FticksSettings.from_mapping({"federation": "e", "syslog": True,
                                        "reporting": "Basic"}).reporting == "basic"
    assert FticksSettings.from_mapping({"federation": "e", "syslog": True}).reporting == "full"


def test_without_key_user_and_csi_are_left_out():
    line = format_line(settings(key=None), realm="fing.edu.uy", user="ana@fing.edu.uy",
                       csi="00:11:22:33:44:55", result="ok")
    assert line == "F-TICKS/eduroam/1.0#REALM=fing.edu.uy#VISCOUNTRY=UY#VISINST=UDELAR#RESULT=OK#"


@pytest.mark.parametrize("realm, written", [
    ("a#b=c", "abc"),                      # the separators cannot leak into a value
    ("ñandú.example", "nandu.example"),    # accents folded to ASCII
    ("x y@z/w", "xyzw"),
    ("keep_-:.,;ok", "keep_-:.,;ok"),      # the whole character set passes
    ("#=@", None),                         # nothing left: no REALM at all
])
def test_values_restricted_to_the_character_set(realm, written):
    line = format_line(settings(viscountry=None, visinst=None, key=None), realm=realm,
                       user=None, csi=None, result=True, ap="idp#1", method="radius",
                       extra={"VLAN": "10=20"})
    want = f"REALM={written}#" if written else ""
    assert line == f"F-TICKS/eduroam/1.0#{want}RESULT=OK#AP=idp1#AN=radius#VLAN=1020#"
    assert isinstance(parse_line(line + " "), dict) or written is None


def test_extra_attribute_names_are_checked():
    for bad in ("User-eduroam", "RESULT", "Ts", ""):
        with pytest.raises(ValueError, match="extra F-TICKS attribute"):
            format_line(settings(), realm="r", user=None, csi=None, result=True,
                        extra={bad: "x"})
    with pytest.raises(ValueError, match="result"):
        format_line(settings(), realm="r", user=None, csi=None, result="maybe")


# --- parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize("line, when", [
    ("Mar  1 08:00:01 rsp1 radsecproxy[812]: ", dt.datetime(2024, 3, 1, 8, 0, 1, tzinfo=UTC)),
    ("<38>Mar  3 23:59:59 rsp1 radsecproxy[812]: ", dt.datetime(2024, 3, 3, 23, 59, 59,
                                                                tzinfo=UTC)),   # ref + 1 day
    ("Mar  5 08:00:01 h p: ", dt.datetime(2023, 3, 5, 8, 0, 1, tzinfo=UTC)),
    ("Dec 31 23:00:00 h p: ", dt.datetime(2023, 12, 31, 23, tzinfo=UTC)),   # last year's
    ("<38>1 2024-03-01T09:00:00.5-03:00 h radiusd 1 - - ",
     dt.datetime(2024, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)),
    ("2024-03-01 09:00:00 h radiusd: ", dt.datetime(2024, 3, 1, 9, tzinfo=UTC)),
    ("Fri Mar  1 09:00:00 2024 : Info: ", dt.datetime(2024, 3, 1, 9, tzinfo=UTC)),
    ('{"MESSAGE":"', None),
])
def test_parse_finds_the_marker_after_any_prefix(line, when):
    r = parse_line(line + 'F-TICKS/eduroam/1.0#REALM=a.b#RESULT=OK#' + ('"}' if "{" in line
                                                                         else ""),
                   zone=UTC, ref=dt.datetime(2024, 3, 3, tzinfo=UTC))
    assert r["attrs"] == {"REALM": "a.b", "RESULT": "OK"}
    assert r["ts"] == when


def test_parse_local_zone_and_ts_attribute():
    r = parse_line("Mar  1 08:00:01 h p: F-TICKS/e/1#RESULT=OK#", zone=ZoneInfo("Europe/Madrid"),
                   ref=dt.datetime(2024, 3, 3, tzinfo=UTC))
    assert r["ts"] == dt.datetime(2024, 3, 1, 7, 0, 1, tzinfo=UTC)
    r = parse_line("Mar  1 08:00:01 h p: F-TICKS/e/1#TS=1709290800#RESULT=OK#")
    assert r["ts"] == dt.datetime(2024, 3, 1, 11, tzinfo=UTC)   # TS wins over the syslog time
    assert parse_line("Mar  1 08:00:01 h sshd[1]: Accepted password for ana") is None


def test_corpus_malformed_reasons(tmp_path):
    # one line per reason, in the file's order
    got = [parse_line(line) for line in (CORPUS / "malformed.log").read_text().splitlines()]
    reasons = [g if isinstance(g, str) else ("ok" if g["ts"] else "no-timestamp") for g in got]
    assert reasons == ["bad-header", "no-attributes", "unterminated", "bad-attribute",
                       "bad-value", "bad-value", "duplicate-attribute", "no-result",
                       "bad-result", "bad-ts", "no-timestamp", "ok", "ok"]
    assert set(reasons) - {"ok"} == set(fticks.MALFORMED)


# --- import and report --------------------------------------------------------------------

def corpus_copy(tmp_path):
    d = tmp_path / "logs"
    shutil.copytree(CORPUS, d)
    for p in d.iterdir():
        os.utime(p, (MTIME, MTIME))
    return [d / n for n in ("radsecproxy.log", "freeradius.log", "journal.export",
                            "malformed.log")]


EXPECTED_REPORT = """\
DAY         REALM        VISCOUNTRY  RESULT  LOGINS
2023-12-31  fing.edu.uy  UY          OK           1
2024-03-01  example.org  UY          FAIL         3
2024-03-01  fing.edu.uy  UY          OK           4
2024-03-01  fing.edu.uy  UY          FAIL         1
2024-03-02  -            UY          OK           1
2024-03-02  example.org  AR          FAIL         1
2024-03-02  example.org  UY          OK           2
2024-03-02  fing.edu.uy  UY          OK           2
total                                            15
"""


def test_corpus_import_and_exact_report(tmp_path):
    paths = corpus_copy(tmp_path)
    con = duckdb.connect()
    stats = fticks.import_files(con, paths, zone="UTC")
    assert {k: stats[k] for k in ("files", "lines", "fticks", "imported", "duplicates",
                                  "nonconforming", "malformed", "unreadable")} == {
        "files": 4, "lines": 9 + 5 + 20 + 13, "fticks": 7 + 4 + 2 + 13, "imported": 15,
        "duplicates": 0, "nonconforming": 3, "unreadable": [],
        "malformed": {"bad-attribute": 1, "bad-header": 1, "bad-result": 1, "bad-ts": 1,
                      "bad-value": 2, "duplicate-attribute": 1, "no-attributes": 1,
                      "no-result": 1, "no-timestamp": 1, "unterminated": 1}}
    assert stats["examples"][0] == (str(paths[3]), 1, "bad-header")
    assert fticks.format_report(fticks.report(con)) == EXPECTED_REPORT
    text = fticks.format_import(stats)
    assert text.splitlines()[:2] == [
        "4 file(s), 47 line(s), 26 F-TICKS line(s): 15 imported, 0 duplicate(s), 11 malformed",
        "malformed: bad-attribute 1, bad-header 1, bad-result 1, bad-ts 1, bad-value 2, "
        "duplicate-attribute 1, no-attributes 1, no-result 1, no-timestamp 1, unterminated 1"]

    row = con.execute("SELECT * FROM fticks WHERE realm = 'example.org' AND viscountry = 'AR'"
                      ).fetchall()
    assert row == [(dt.datetime(2024, 3, 2, 10), "eduroam", "1.0", "example.org", "AR", None,
                    "aabbcc", "FAIL", row[0][8], str(paths[0]))]


def test_reimport_and_rotated_copies_add_nothing(tmp_path):
    paths = corpus_copy(tmp_path)
    con = duckdb.connect()
    fticks.import_files(con, paths, zone="UTC")
    again = fticks.import_files(con, paths, zone="UTC")
    assert (again["imported"], again["duplicates"]) == (0, 15)
    rotated = paths[0].with_name("radsecproxy.log.1.gz")
    with gzip.open(rotated, "wb") as f:
        f.write(paths[0].read_bytes())
    os.utime(rotated, (MTIME, MTIME))
    r = fticks.import_files(con, [rotated, tmp_path / "missing.log"], zone="UTC")
    assert (r["imported"], r["duplicates"], r["files"]) == (0, 7, 1)
    assert r["unreadable"] == [(str(tmp_path / "missing.log"), "No such file or directory")]
    assert fticks.format_report(fticks.report(con)) == EXPECTED_REPORT


def test_journal_entries_are_told_apart_by_their_time(tmp_path):
    entry = ("__CURSOR=s=1;i={i}\n__REALTIME_TIMESTAMP={us}\n"
             "MESSAGE=F-TICKS/eduroam/1.0#REALM=example.org#VISCOUNTRY=UY#VISINST=ORT#CSI=ccddee#"
             "RESULT=OK#\n\n")
    con = duckdb.connect()
    fticks.import_files(con, corpus_copy(tmp_path)[2:3])
    # another export: the corpus's last entry again, and the same message a day later
    (tmp_path / "next.export").write_text(entry.format(i=103, us=1709377200000000)
                                          + entry.format(i=200, us=1709463600000000))
    r = fticks.import_files(con, [tmp_path / "next.export"])
    assert (r["imported"], r["duplicates"]) == (1, 1)
    assert con.execute("SELECT ts FROM fticks ORDER BY ts").fetchall() == [
        (dt.datetime(2024, 3, 2, 9),), (dt.datetime(2024, 3, 2, 11),),
        (dt.datetime(2024, 3, 3, 11),)]


def test_report_since_and_zone(tmp_path):
    con = duckdb.connect()
    fticks.import_files(con, corpus_copy(tmp_path), zone="UTC")
    rows = fticks.report(con, since=dt.date(2024, 3, 2))
    assert [r["logins"] for r in rows] == [1, 1, 2, 2] and {r["day"] for r in rows} == {
        "2024-03-02"}
    # in Madrid (UTC+1) the 23:30 UTC failure is on the 2nd, the New Year's Eve login on the 1st
    madrid = {(r["day"], r["realm"], r["viscountry"], r["result"]): r["logins"]
              for r in fticks.report(con, zone="Europe/Madrid")}
    assert madrid[("2024-01-01", "fing.edu.uy", "UY", "OK")] == 1
    assert madrid[("2024-03-01", "example.org", "UY", "FAIL")] == 2
    assert madrid[("2024-03-02", "example.org", "UY", "FAIL")] == 1
    assert fticks.format_report([]) == "DAY    REALM  VISCOUNTRY  RESULT  LOGINS\ntotal" \
                                       "                                  0\n"


# --- emitting ------------------------------------------------------------------------------

def test_emit_to_file_appends_whole_lines(tmp_path):
    log = tmp_path / "fticks.log"
    log.write_text("existing line\n")
    with Emitter(settings(file=str(log)), clock=lambda: 1709290800.7) as em:
        a = em.emit(user="ana@fing.edu.uy", csi="00:11:22:33:44:55", result=True,
                    method="login")
        with open(log, "a") as other:           # another writer in between
            other.write("other writer\n")
        b = em.emit(realm="example.org", user="bob", result=False, ts=1709290900)
        assert em.written == 2 and em.lost == 0
    assert log.read_text().splitlines() == ["existing line", a, "other writer", b]
    assert a.endswith(f"#RESULT=OK#PN={HMAC_ANA}#AN=login#TS=1709290800#")


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_emit_reopen_after_rotation(tmp_path):
    log = tmp_path / "fticks.log"
    em = Emitter(settings(file=str(log)), clock=lambda: 1709290800)
    em.emit(realm="a", result=True)
    log.rename(tmp_path / "fticks.log.1")
    em.reopen()
    em.emit(realm="b", result=True)
    em.close()
    assert os.stat(log).st_mode & 0o777 == 0o640 & ~_umask()
    assert "REALM=a" in (tmp_path / "fticks.log.1").read_text()
    assert "REALM=b" in log.read_text() and "REALM=a" not in log.read_text()


def test_emit_to_syslog_socket(tmp_path):
    path = str(tmp_path / "log.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(5)
    s = settings(file=None, syslog=True, syslog_socket=path, syslog_facility="authpriv",
                 syslog_tag="acctd-login")
    try:
        with Emitter(s, clock=lambda: 1709290800) as em:
            line = em.emit(realm="fing.edu.uy", user="ana@fing.edu.uy", result=True)
            data = srv.recv(4096).decode()
    finally:
        srv.close()
    # authpriv (10) * 8 + info (6); the local-socket form of syslog(3): no hostname
    assert data.startswith("<86>") and data.endswith(f" acctd-login[{os.getpid()}]: {line}")
    stamp = data[4:data.index(" acctd-login")]
    assert stamp == dt.datetime.fromtimestamp(1709290800).strftime("%b %e %H:%M:%S")
    assert parse_line(data, ref=dt.datetime(2024, 3, 3, tzinfo=UTC))["ts"] == \
        dt.datetime(2024, 3, 1, 11, tzinfo=UTC)


def test_syslog_down_loses_lines_without_raising_and_recovers(tmp_path, caplog):
    path = str(tmp_path / "log.sock")
    em = Emitter(settings(file=None, syslog=True, syslog_socket=path), clock=lambda: 1709290800)
    em.emit(realm="a", result=True)
    em.emit(realm="b", result=True)
    assert (em.written, em.lost) == (0, 2)
    assert sum("not written to syslog" in r.message for r in caplog.records) == 1
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(5)
    try:
        em.emit(realm="c", result=True)
        assert "REALM=c" in srv.recv(4096).decode()
        srv.close()
        os.unlink(path)                     # the syslog daemon restarts on a new socket
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        srv.bind(path)
        srv.settimeout(5)
        em.emit(realm="d", result=True)
        assert "REALM=d" in srv.recv(4096).decode()
    finally:
        srv.close()
        em.close()
    assert (em.written, em.lost) == (2, 2)


def test_emitted_lines_read_back_to_the_same_counts(tmp_path):
    log = tmp_path / "fticks.log"
    sent = {}
    t0 = dt.datetime(2024, 3, 1, 22, tzinfo=UTC).timestamp()
    with Emitter(settings(file=str(log))) as em:
        for i in range(60):
            realm = ("fing.edu.uy", "example.org", "ñandú.uy")[i % 3]
            ok = i % 4 != 0
            ts = t0 + i * 180                 # 3 hours: crosses midnight UTC
            em.emit(user=f"u{i}@{realm}", csi=f"00:00:00:00:00:{i:02x}", result=ok, ts=ts)
            day = dt.datetime.fromtimestamp(ts, UTC).date().isoformat()
            key = (day, fticks.clean(realm), "UY", "OK" if ok else "FAIL")
            sent[key] = sent.get(key, 0) + 1
    con = duckdb.connect()
    stats = fticks.import_files(con, [log])
    assert (stats["imported"], sum(stats["malformed"].values())) == (60, 0)
    got = {(r["day"], r["realm"], r["viscountry"], r["result"]): r["logins"]
           for r in fticks.report(con)}
    assert got == sent and len({k[0] for k in got}) == 2


# --- the daemon's own lines ----------------------------------------------------------------

def test_the_daemons_own_logins_are_reported_and_importing_its_file_adds_nothing(tmp_path):
    """`fticks report` counts the lines acctd writes itself, with nothing
    imported by hand; two identical failures in one second are two logins;
    importing acctd's own file afterwards finds every line a duplicate."""
    from acctd.config import loads
    from acctd.services.login import LoginService

    from .daemon_stub import daemon_stub
    from .test_login import CHEAP
    log = tmp_path / "fticks.log"
    cfg = loads(f'[fticks]\nfederation = "eduroam"\nviscountry = "UY"\nvisinst = "UDELAR"\n'
                f'raw-values = true\nfile = "{log}"\n'
                '[[unit]]\ntype = "user"\nname = "ana"\n', str(tmp_path / "acctd.toml"))
    now = [dt.datetime(2024, 3, 1, 23, 59, 59, tzinfo=UTC)]
    with daemon_stub(cfg, tmp_path=tmp_path, clock=lambda: now[0]) as d:
        d.service(LoginService).table.hasher = CHEAP
        d.call("login-set", unit="ana", words=["password", "secret"])
        for pw in ("wrong", "wrong"):
            assert not d.call("login", unit="ana", password=pw, mac="00:11:22:33:44:55")["ok"]
        now[0] += dt.timedelta(seconds=1)   # the next day (UTC)
        assert d.call("login", unit="ana", password="secret", mac="00:11:22:33:44:55")["ok"]
        d.call("logout", unit="ana", password="secret")   # not a login: no line
        report = d.call("fticks-report")
        again = d.call("fticks-import", paths=[str(log)])
        assert d.call("fticks-report") == report
    assert len(log.read_text().splitlines()) == 3
    assert report["text"] == (
        "DAY         REALM  VISCOUNTRY  RESULT  LOGINS\n"
        "2024-03-01  -      UY          FAIL         2\n"
        "2024-03-02  -      UY          OK           1\n"
        "total                                       3\n")
    assert (again["imported"], again["duplicates"]) == (0, 3)
