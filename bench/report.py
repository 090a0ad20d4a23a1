"""From per-round samples to medians, ratios to haproxy, Markdown and a chart.

Ratios are computed round by round (target and haproxy ran back to back, so
they saw the same machine load) and the median of those ratios is reported,
which is steadier on a shared machine than a ratio of medians.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.memprobe import MemoryResult
from bench.targets import TargetSpec
from bench.wrk import WrkResult

SIZE_LABELS = {"64": "64 B", "1m": "1 MiB"}

# metric name -> (how to read it from a sample, higher is better)
METRICS = {
    "rps": (lambda s: s.wrk.rps, True),
    "mbps": (lambda s: s.wrk.bytes_per_s / 1e6, True),
    "p50": (lambda s: s.wrk.p50_s * 1e3, False),
    "p99": (lambda s: s.wrk.p99_s * 1e3, False),
    "cpu": (lambda s: s.cpu_us_per_req, False),
}


@dataclass
class Sample:
    target: str
    size: str
    round: int
    wrk: WrkResult
    cpu_s: float | None  # proxy process tree user+sys during the run

    @property
    def cpu_us_per_req(self) -> float | None:
        if self.cpu_s is None or self.wrk.requests == 0:
            return None
        return self.cpu_s * 1e6 / self.wrk.requests


@dataclass
class Row:
    spec: TargetSpec
    size: str
    rounds: int = 0
    values: dict[str, float | None] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    # Lowest and highest per-round req/s ratio: how far to trust the median.
    rps_ratio_range: tuple[float, float] | None = None
    non_2xx: int = 0
    socket_errors: int = 0
    unavailable: str | None = None

    @property
    def baseline(self) -> str:
        return f"haproxy-{self.spec.mode}"


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(specs: list[TargetSpec], sizes: list[str], samples: list[Sample],
              unavailable: dict[str, str]) -> dict[str, list[Row]]:
    by_key: dict[tuple[str, str, int], Sample] = {
        (s.target, s.size, s.round): s for s in samples}
    tables: dict[str, list[Row]] = {}
    for size in sizes:
        rows = []
        for spec in specs:
            row = Row(spec, size, unavailable=unavailable.get(spec.name))
            mine = [s for s in samples if s.target == spec.name and s.size == size]
            row.rounds = len(mine)
            row.non_2xx = sum(s.wrk.non_2xx for s in mine)
            row.socket_errors = sum(s.wrk.socket_errors for s in mine)
            for metric, (read, _) in METRICS.items():
                row.values[metric] = _median([read(s) for s in mine])
                ratios = []
                for s in mine:
                    base = by_key.get((row.baseline, size, s.round))
                    if base is None or spec.name == row.baseline:
                        continue
                    mine_v, base_v = read(s), read(base)
                    if mine_v is not None and base_v:
                        ratios.append(mine_v / base_v)
                row.ratios[metric] = _median(ratios)
                if metric == "rps" and ratios:
                    row.rps_ratio_range = (min(ratios), max(ratios))
            if not mine and row.unavailable is None:
                row.unavailable = "no successful run"
            rows.append(row)
        tables[size] = rows
    return tables


# --- Markdown ---------------------------------------------------------------

def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "rps":
        return f"{value:,.0f}"
    if metric == "mbps":
        return f"{value:,.1f}"
    if metric in ("p50", "p99"):
        return f"{value:.2f} ms"
    return f"{value:.1f}"


def _cell(row: Row, metric: str) -> str:
    text = _fmt(row.values.get(metric), metric)
    ratio = row.ratios.get(metric)
    if ratio is not None:
        text += f" ({ratio:.2f}x)"
    return text


def size_table(rows: list[Row]) -> str:
    lines = ["| target | req/s | MB/s | p50 | p99 | CPU us/req | non-2xx | socket err "
             "| rounds | req/s ratio range |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.unavailable and row.rounds == 0:
            lines.append(f"| {row.spec.name} | unavailable: {_oneline(row.unavailable)} "
                         "| | | | | | | | |")
            continue
        cells = [_cell(row, m) for m in METRICS]
        if not row.spec.proxied:
            cells[-1] = "-"
        spread = ("-" if row.rps_ratio_range is None
                  else "{:.2f}–{:.2f}".format(*row.rps_ratio_range))
        lines.append(f"| {row.spec.name} | " + " | ".join(cells)
                     + f" | {row.non_2xx} | {row.socket_errors} | {row.rounds} | {spread} |")
    notes = [f"- {row.spec.name} stopped early: {_oneline(row.unavailable)}"
             for row in rows if row.unavailable and row.rounds]
    return "\n".join(lines + ([""] + notes if notes else []))


def memory_table(results: list[MemoryResult], unavailable: dict[str, str]) -> str:
    lines = ["| target | idle conns open | parked | RSS before | RSS after | bytes/conn | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = next((r.bytes_per_conn for r in results if r.target == "haproxy-http"), None)
    for r in results:
        per = r.bytes_per_conn
        ratio = f"{per / base:.2f}x" if per is not None and base else "-"
        parked = "-" if r.parked is None else str(r.parked)
        unsettled = "" if r.settled else " (RSS not settled)"
        lines.append(
            f"| {r.target} | {r.still_open}/{r.wanted} | {parked} | {r.rss_before / 1024:,.0f} KiB "
            f"| {r.rss_after / 1024:,.0f} KiB{unsettled} | {fmt_bytes(per)} | {ratio} |")
    for name, reason in unavailable.items():
        lines.append(f"| {name} | unavailable: {_oneline(reason)} | | | | | |")
    return "\n".join(lines)


def fmt_bytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} B ({value / 1024:.2f} KiB)"


def _oneline(text: str) -> str:
    """First line only: reasons carry the server's log tail after it."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return " ".join(first.split()).replace("|", "/")[:200]


# Issue 5's floors for lbcore, each as (mode, size, metric, op, limit).
FLOORS = [
    ("http", "64", "rps", ">=", 0.8), ("http", "1m", "rps", ">=", 1.0),
    ("tcp", "64", "rps", ">=", 0.9), ("tcp", "1m", "rps", ">=", 1.5),
]
PER_ROW_FLOORS = [("p99", "<=", 1.5), ("cpu", "<=", 1.5)]
# Issue 9: with rules (3 ACLs, 4 http_request rules, 2 use_backend) lbcore's
# CPU per request stays within 1.1x haproxy's running the same rules.
RULES_FLOORS = [("rules", "64", "cpu", "<=", 1.1)]
IDLE_CONN_LIMIT = 4096


def floors(tables: dict[str, list[Row]], memory: list[MemoryResult]) -> list[str]:
    """One line per issue-5 floor: met, NOT met, or not measured."""
    lines = []

    def check(label: str, value: float | None, op: str, limit: float, unit: str = "x") -> None:
        if value is None:
            lines.append(f"- {label}: not measured")
            return
        ok = value >= limit if op == ">=" else value <= limit
        shown = f"{value:.2f}{unit}" if unit == "x" else f"{value:,.0f} {unit}"
        lines.append(f"- {label}: {shown} (floor {op} {limit:g}{'x' if unit == 'x' else ' ' + unit})"
                     f" — {'met' if ok else 'NOT met'}")

    rows = {(r.spec.name, size): r for size, rs in tables.items() for r in rs}
    for mode, size, metric, op, limit in FLOORS:
        row = rows.get((f"lbcore-{mode}", size))
        check(f"lbcore-{mode} {SIZE_LABELS[size]} req/s", row and row.ratios.get(metric),
              op, limit)
    for mode, size, metric, op, limit in RULES_FLOORS:
        row = rows.get((f"lbcore-{mode}", size))
        check(f"lbcore-{mode} {SIZE_LABELS[size]} {metric} (issue 9)", row and row.ratios.get(metric),
              op, limit)
    for (name, size), row in rows.items():
        if not name.startswith("lbcore-") or not row.rounds:
            continue
        for metric, op, limit in PER_ROW_FLOORS:
            check(f"{name} {SIZE_LABELS[size]} {metric}", row.ratios.get(metric), op, limit)
        errors = row.non_2xx + row.socket_errors
        if row.rounds:
            lines.append(f"- {name} {SIZE_LABELS[size]} errors: {errors} "
                         f"— {'met' if errors == 0 else 'NOT met'}")
    # Issue 12: `stick on src` costs lbcore at most 1.1x the CPU per request
    # of plain roundrobin (both lbcore, same run).
    stick, plain = rows.get(("lbcore-stick", "64")), rows.get(("lbcore-http", "64"))
    stick_cpu = stick and stick.values.get("cpu")
    plain_cpu = plain and plain.values.get("cpu")
    check("lbcore-stick 64 B CPU us/req vs lbcore-http (issue 12)",
          stick_cpu / plain_cpu if stick_cpu and plain_cpu else None, "<=", 1.1)
    lb_mem = next((m for m in memory if m.target == "lbcore-http"), None)
    check("lbcore-http idle keep-alive connection", lb_mem and lb_mem.bytes_per_conn,
          "<=", IDLE_CONN_LIMIT, "B")
    return lines


def markdown(title: str, environment: list[str], tables: dict[str, list[Row]],
             memory: list[MemoryResult], memory_unavailable: dict[str, str],
             chart_name: str | None) -> str:
    parts = [f"# {title}", "", *environment, ""]
    for size, rows in tables.items():
        parts += [f"## {SIZE_LABELS[size]} body", "", size_table(rows), ""]
    if memory or memory_unavailable:
        parts += ["## Idle keep-alive connections", "",
                  memory_table(memory, memory_unavailable), ""]
    parts += ["## Issue 5 floors (lbcore vs haproxy, medians of per-round ratios)", "",
              *floors(tables, memory), ""]
    if chart_name:
        parts += [f"![chart]({chart_name})", ""]
    parts += ["Values are medians over rounds; (N.NNx) is the median of per-round ratios "
              "to haproxy in the same mode, and the ratio range the lowest and highest "
              "per-round req/s ratio. MB/s is 10^6 bytes/s of response (head + body) "
              "read by wrk.", ""]
    return "\n".join(parts)


# --- chart ------------------------------------------------------------------

def chart(path: Path, tables: dict[str, list[Row]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("rps", "req/s (higher is better)"), ("p99", "p99 latency, ms"),
              ("cpu", "proxy CPU us/request")]
    fig, axes = plt.subplots(len(tables), len(panels),
                             figsize=(5 * len(panels), 3.2 * len(tables)), squeeze=False)
    colors = {"haproxy": "#4c72b0", "lbcore": "#dd8452", "nginx": "#55a868", "direct": "#999999"}
    for r, (size, rows) in enumerate(tables.items()):
        for c, (metric, label) in enumerate(panels):
            ax = axes[r][c]
            shown = [row for row in rows
                     if row.rounds and (metric != "cpu" or row.spec.proxied)]
            names = [row.spec.name for row in shown]
            values = [row.values.get(metric) or 0.0 for row in shown]
            bars = ax.barh(names, values, color=[colors[row.spec.kind] for row in shown])
            for bar, row in zip(bars, shown):
                ratio = row.ratios.get(metric)
                if ratio is not None:
                    ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                            f" {ratio:.2f}x", va="center", fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"{SIZE_LABELS[size]}: {label}", fontsize=10)
            ax.margins(x=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
