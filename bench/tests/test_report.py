"""Medians of per-round ratios, unavailable rows, floors and the chart."""

import pytest

from bench import report
from bench.memprobe import MemoryResult
from bench.targets import ALL_TARGETS, select_targets
from bench.wrk import WrkResult

SPECS = {t.name: t for t in ALL_TARGETS}


def sample(target, rnd, rps, p99_ms=1.0, cpu_s=1.0, size="64", non_2xx=0):
    requests = int(rps * 5)
    wrk = WrkResult(requests=requests, duration_s=5.0, bytes_read=requests * 300, rps=rps,
                    bytes_per_s=rps * 300, p50_s=p99_ms / 2e3, p99_s=p99_ms / 1e3,
                    non_2xx=non_2xx, socket_errors=0)
    return report.Sample(target, size, rnd, wrk, cpu_s)


def test_ratio_is_median_of_per_round_ratios():
    # Rounds where the machine was slow hit both targets alike: per-round
    # ratios are 0.5, 0.5, 2.0 -> median 0.5, while the ratio of medians
    # (200/200) would claim parity.
    samples = [
        sample("haproxy-http", 0, 200), sample("lbcore-http", 0, 100),
        sample("haproxy-http", 1, 400), sample("lbcore-http", 1, 200),
        sample("haproxy-http", 2, 100), sample("lbcore-http", 2, 200),
    ]
    specs = [SPECS["haproxy-http"], SPECS["lbcore-http"]]
    (rows,) = report.aggregate(specs, ["64"], samples, {}).values()
    hap, lb = rows
    assert lb.values["rps"] == 200
    assert lb.ratios["rps"] == pytest.approx(0.5)
    assert hap.ratios["rps"] is None
    assert lb.rounds == 3


def test_cpu_per_request_and_tcp_compares_with_tcp():
    samples = [sample("haproxy-tcp", 0, 1000, cpu_s=0.05), sample("lbcore-tcp", 0, 1000, cpu_s=0.1),
               sample("haproxy-http", 0, 10, cpu_s=1.0)]
    specs = [SPECS[n] for n in ("haproxy-http", "haproxy-tcp", "lbcore-tcp")]
    rows = report.aggregate(specs, ["64"], samples, {})["64"]
    lb = rows[2]
    assert lb.values["cpu"] == pytest.approx(0.1e6 / 5000)
    assert lb.ratios["cpu"] == pytest.approx(2.0)
    assert lb.ratios["rps"] == pytest.approx(1.0)


def test_unavailable_target_is_a_row_not_a_crash(tmp_path):
    samples = [sample("haproxy-http", 0, 100)]
    specs = [SPECS["haproxy-http"], SPECS["lbcore-http"]]
    reason = "lbcore-http exited with code 1: ModuleNotFoundError\nTraceback ..."
    tables = report.aggregate(specs, ["64"], samples, {"lbcore-http": reason})
    text = report.markdown("t", [], tables, [], {"lbcore-http": reason}, None)
    assert "| lbcore-http | unavailable: lbcore-http exited with code 1: ModuleNotFoundError |" in text
    assert "Traceback" not in text
    assert "- lbcore-http 64 B req/s: not measured" in text
    report.chart(tmp_path / "c.png", tables)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_floors_met_and_not_met():
    samples = [sample("haproxy-http", 0, 100, p99_ms=1.0), sample("lbcore-http", 0, 90, p99_ms=2.0)]
    specs = [SPECS["haproxy-http"], SPECS["lbcore-http"]]
    tables = report.aggregate(specs, ["64"], samples, {})
    memory = [MemoryResult("lbcore-http", 100, 100, 1000, 1000 + 100 * 5000, 10, 110)]
    lines = report.floors(tables, memory)
    assert "- lbcore-http 64 B req/s: 0.90x (floor >= 0.8x) — met" in lines
    assert "- lbcore-http 64 B p99: 2.00x (floor <= 1.5x) — NOT met" in lines
    assert "- lbcore-http idle keep-alive connection: 5,000 B (floor <= 4096 B) — NOT met" in lines


def test_errors_are_counted_and_fail_the_floor():
    samples = [sample("haproxy-http", 0, 100), sample("lbcore-http", 0, 100, non_2xx=3)]
    tables = report.aggregate([SPECS["haproxy-http"], SPECS["lbcore-http"]], ["64"], samples, {})
    assert tables["64"][1].non_2xx == 3
    assert "- lbcore-http 64 B errors: 3 — NOT met" in report.floors(tables, [])


def test_memory_ratio():
    memory = [MemoryResult("haproxy-http", 10, 10, 0, 10 * 1400, 0, 0),
              MemoryResult("lbcore-http", 10, 8, 0, 8 * 2800, 0, 0)]
    table = report.memory_table(memory, {})
    assert "| lbcore-http | 8/10 |" in table
    assert table.rstrip().endswith("| 2.00x |")


def test_select_targets():
    assert [t.name for t in select_targets("haproxy,lbcore-http")] == [
        "haproxy-http", "haproxy-tcp", "lbcore-http", "haproxy-rules", "haproxy-stick"]
    assert [t.name for t in select_targets("haproxy-rules,lbcore-rules")] == [
        "haproxy-rules", "lbcore-rules"]
    assert len(select_targets(None)) == len(ALL_TARGETS)
    with pytest.raises(ValueError, match="haprox"):
        select_targets("haprox")


def test_ratio_range_column():
    samples = [sample("haproxy-http", r, 100) for r in range(3)] + [
        sample("lbcore-http", 0, 50), sample("lbcore-http", 1, 80), sample("lbcore-http", 2, 120)]
    tables = report.aggregate([SPECS["haproxy-http"], SPECS["lbcore-http"]], ["64"], samples, {})
    table = report.size_table(tables["64"])
    assert table.splitlines()[-1].endswith("| 3 | 0.50–1.20 |")
    assert table.splitlines()[-2].endswith("| 3 | - |")
