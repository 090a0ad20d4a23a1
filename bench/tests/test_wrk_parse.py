"""wrk's text report and the Lua summary line, as wrk 4.1 prints them."""

import pytest

from bench import wrk

REPORT = """Running 5s test @ http://127.0.0.1:8080/64
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   713.15us  208.80us   3.51ms   76.93%
    Req/Sec    67.85k    13.46k   87.42k    45.00%
  Latency Distribution
     50%  693.00us
     75%  822.00us
     90%    0.99ms
     99%    1.18ms
  134586 requests in 2.00s, 40.43MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 12
Requests/sec:  67203.28
Transfer/sec:     20.19MB
"""

EXACT = ("LBBENCH requests=134590 bytes=42394590 duration_us=2002670 connect=0 read=5 "
         "write=0 timeout=1 status=7 p50_us=693 p99_us=1181 max_us=3512\n")


def test_text_report():
    r = wrk.parse(REPORT)
    assert r.requests == 134586
    assert r.duration_s == pytest.approx(2.0)
    assert r.bytes_read == int(40.43 * 2**20)
    assert r.rps == pytest.approx(67203.28)
    assert r.bytes_per_s == pytest.approx(20.19 * 2**20)
    assert r.p50_s == pytest.approx(693e-6)
    assert r.p99_s == pytest.approx(1.18e-3)
    assert r.non_2xx == 12
    assert r.socket_errors == 10
    assert r.errors == 22


def test_lua_line_replaces_rounded_figures():
    r = wrk.parse(REPORT + EXACT)
    assert r.requests == 134590
    assert r.bytes_read == 42394590
    assert r.duration_s == pytest.approx(2.00267)
    assert r.rps == pytest.approx(134590 / 2.00267)
    assert r.bytes_per_s == pytest.approx(42394590 / 2.00267)
    assert r.p99_s == pytest.approx(1181e-6)
    assert (r.non_2xx, r.socket_errors) == (7, 6)


def test_units_seconds_and_gigabytes():
    text = (REPORT.replace("1.18ms", "1.50s").replace("40.43MB read", "3.71GB read")
            .replace("Transfer/sec:     20.19MB", "Transfer/sec:      1.84GB"))
    r = wrk.parse(text)
    assert r.p99_s == pytest.approx(1.5)
    assert r.bytes_read == int(3.71 * 2**30)
    assert r.bytes_per_s == pytest.approx(1.84 * 2**30)


def test_clean_run_has_no_errors():
    text = "\n".join(line for line in REPORT.splitlines()
                     if "errors" not in line and "Non-2xx" not in line)
    assert wrk.parse(text).errors == 0


def test_without_latency_flag_is_an_error():
    text = "\n".join(line for line in REPORT.splitlines() if "%  " not in line)
    with pytest.raises(wrk.WrkParseError, match="--latency"):
        wrk.parse(text)


def test_not_a_report():
    with pytest.raises(wrk.WrkParseError):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_command_rounds_duration_and_adds_script(tmp_path):
    argv = wrk.command("http://x/64", 50, 2.4, tmp_path / "s.lua")
    assert argv[:6] == ["wrk", "-t1", "-c50", "-d2s", "--timeout=5s", "--latency"]
    assert argv[-3:] == ["-s", str(tmp_path / "s.lua"), "http://x/64"]
