"""Medians, ratios, the targets of issue 17, and the printed tables."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable

TOOLS = ("pipeline", "rerun", "baseline", "peer", "floor")
GB = 2**30

# pipeline log lines: "stage   users      1000000 rows    1.23s ..." / "load staging  users  1000000 rows  0.50s"
_STEP_LINE = re.compile(r"pipeline\.(?:month|pg\.staging): (stage|merge|load staging)\s+(\S+)\s+(\d+) rows\s+([\d.]+)s")


def median_run(samples: list[dict]) -> dict | None:
    ok = [s for s in samples if s.get("returncode") == 0]
    if not ok:
        return None
    return {
        "wall_s": round(statistics.median(s["wall_s"] for s in ok), 3),
        "peak_rss_mb": round(statistics.median(s["peak_rss_mb"] for s in ok), 1),
        "max_peak_rss_mb": round(max(s["peak_rss_mb"] for s in ok), 1),
        "n": len(ok),
    }


def step_timings(log_text: str) -> dict[str, dict[str, float]]:
    """Per table seconds of stage, merge and load staging, from the pipeline's own log lines."""
    steps: dict[str, dict[str, float]] = {}
    for step, table, _rows, seconds in _STEP_LINE.findall(log_text):
        steps.setdefault(step.replace(" ", "_"), {})[table] = float(seconds)
    return steps


def ratios(runs: dict[str, dict | None]) -> dict[str, float | None]:
    p = runs.get("pipeline")
    out: dict[str, float | None] = {}
    for other in ("baseline", "peer", "floor"):
        o = runs.get(other)
        out[f"pipeline/{other}"] = round(p["wall_s"] / o["wall_s"], 3) if p and o and o["wall_s"] else None
    return out


# Issue 17's targets, on 2 cores; a size not listed has no target of that kind.
SPEEDUP_TARGETS = {7_000: 2.0, 100_000: 8.0, 1_000_000: 12.0}  # every month at least this much faster than baseline
FLOOR_TARGETS = {1_000_000: 3.5}  # every month's pipeline/floor at most this
PEER_TARGET_SIZES = (1_000_000,)  # every month faster than dlt's merge alone
RSS_TARGETS_GB = {1_000_000: 1.0, 5_000_000: 2.0}  # the pipeline's peak RSS below this
COMPLETES_TARGET_SIZES = (5_000_000,)  # every month published
RERUN_TARGET_S = 1.0  # a rerun of a published month, at every size


def _worst(months: list[dict], ratio: str) -> tuple[float, str] | None:
    """The largest pipeline/<tool> ratio of the months and its as_of (the month the pipeline did worst)."""
    values = [(m["ratios"][ratio], m["as_of"]) for m in months if m["ratios"].get(ratio) is not None]
    return max(values) if values else None


def _planned(size: dict, tool: str) -> int:
    """How many months ``tool`` should have run: the baseline and the peer skip the no-change month."""
    return size["generated_months"] if tool in ("baseline", "peer") else size["months_planned"]


def _ratio_target(size: dict, tool: str, name: str, met_by: Callable[[float], bool] | None) -> dict:
    """Every month's pipeline/<tool> against a target: ``met_by`` tells whether the worst month's ratio
    meets it (None: no target at this size). Not met when some month lacks the ratio; met is None when
    the tool did not run at all."""
    key = f"pipeline/{tool}"
    worst = _worst(size["months"], key)
    if worst is None:
        return {"target": name, "measured": "not measured", "met": None}
    ratio, as_of = worst
    counted = sum(m["ratios"].get(key) is not None for m in size["months"])
    planned = _planned(size, tool)
    shown = _speed(ratio) if tool == "baseline" else f"{ratio:.2f}"
    measured = f"worst {shown} ({as_of}), {counted} of {planned} months"
    met = None if met_by is None else met_by(ratio) and counted == planned
    return {"target": name, "measured": measured, "met": met}


def _size_targets(size: dict) -> list[dict]:
    users = size["users"]
    months = size["months"]
    goal = SPEEDUP_TARGETS.get(users)
    speedup = f"every month >= {goal:g}x faster than the baseline" if goal else "every month vs the baseline"
    targets = [_ratio_target(size, "baseline", speedup, (lambda r: 1 / r >= goal) if goal else None)]
    reruns = [m["runs"]["rerun"]["wall_s"] for m in months if m["runs"].get("rerun")]
    targets.append(
        {
            "target": f"rerun of a published month < {RERUN_TARGET_S:g} s",
            "measured": f"max {max(reruns):.2f} s (median per month)" if reruns else "not measured",
            "met": max(reruns) < RERUN_TARGET_S if reruns else None,
        }
    )
    if users in FLOOR_TARGETS:
        limit = FLOOR_TARGETS[users]
        targets.append(_ratio_target(size, "floor", f"every month <= {limit:g}x the floor", lambda r: r <= limit))
    if users in PEER_TARGET_SIZES:
        targets.append(_ratio_target(size, "peer", "every month faster than dlt (pipeline/peer < 1)", lambda r: r < 1))
    published = sum(m["runs"].get("pipeline") is not None for m in months)
    if users in COMPLETES_TARGET_SIZES:
        targets.append(
            {
                "target": "completes",
                "measured": f"{published} of {size['months_planned']} months published",
                "met": published == size["months_planned"],
            }
        )
    if users in RSS_TARGETS_GB:
        limit_gb = RSS_TARGETS_GB[users]
        rss = [m["runs"]["pipeline"]["max_peak_rss_mb"] for m in months if m["runs"].get("pipeline")]
        targets.append(
            {
                "target": f"pipeline peak RSS < {limit_gb:g} GB",
                "measured": f"max {max(rss):.0f} MB" if rss else "not measured",
                "met": max(rss) * 2**20 < limit_gb * GB if rss else None,
            }
        )
    return [{"users": users, **t} for t in targets]


def evaluate_targets(sizes: list[dict]) -> list[dict]:
    """Issue 17's targets against the measured medians, for each size of the sweep."""
    return [t for size in sizes for t in _size_targets(size)]


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _speed(ratio: float | None) -> str:
    """pipeline/other as the pipeline's speed: 0.25 -> "4.0x faster", 2.0 -> "2.0x slower"."""
    if ratio is None:
        return "-"
    return f"{1 / ratio:.1f}x faster" if ratio <= 1 else f"{ratio:.1f}x slower"


def _wall(month: dict, tool: str) -> str:
    if tool not in month["runs"]:
        return "-"
    run = month["runs"][tool]
    return "FAILED" if run is None else f"{run['wall_s']:.2f}"


_SIZE_COLUMNS = (
    ("month", "<20"),
    ("pipeline s", ">10"),
    ("rerun s", ">8"),
    ("baseline s", ">10"),
    ("peer s", ">8"),
    ("floor s", ">8"),
    ("vs baseline", ">13"),
    ("pipe/peer", ">9"),
    ("pipe/floor", ">10"),
    ("peak RSS MB", ">11"),
)


def _row(values: list[str]) -> str:
    return "  " + "  ".join(format(v, spec) for v, (_, spec) in zip(values, _SIZE_COLUMNS, strict=True))


def format_size(size: dict) -> str:
    """One size: a row per month (wall seconds of each tool, medians; the ratios; the pipeline's peak
    RSS), then each month's pipeline stages from its run record."""
    months = size["months"]
    lines = [
        f"{size['users']:,} users ({len(months)} of {size['months_planned']} months run; "
        f"pipeline = the whole luigi command; medians)",
        _row([name for name, _ in _SIZE_COLUMNS]),
    ]
    for m in months:
        pipeline = m["runs"].get("pipeline")
        lines.append(
            _row(
                [
                    f"{m['as_of']} {m['label']}",
                    *(_wall(m, tool) for tool in TOOLS),
                    _speed(m["ratios"].get("pipeline/baseline")),
                    _fmt(m["ratios"].get("pipeline/peer"), ".2f"),
                    _fmt(m["ratios"].get("pipeline/floor"), ".2f"),
                    _fmt(pipeline["max_peak_rss_mb"] if pipeline else None, ".0f"),
                ]
            )
        )
    lines.append(
        "  pipeline stages from the run record (s; other = the rest of the wall time: interpreter, imports, Luigi):"
    )
    for m in months:
        t = m.get("pipeline_timings")
        if t:
            stages = "  ".join(f"{k}={v:.2f}" for k, v in t.items())
            lines.append(f"    {m['as_of']}  {stages}  other={_fmt(m.get('pipeline_other_s'), '.2f')}")
    return "\n".join(lines)


def format_targets(targets: list[dict]) -> str:
    """The targets of every size: met, not met, or "-" where there is no target or nothing measured."""
    width = max((len(t["target"]) for t in targets), default=0)
    lines = ["targets (issue 17):", f"  {'users':>11}  {'target':<{width}}  {'met':<7}  measured"]
    for t in targets:
        mark = {True: "MET", False: "NOT MET", None: "-"}[t["met"]]
        lines.append(f"  {t['users']:>11,}  {t['target']:<{width}}  {mark:<7}  {t['measured']}")
    return "\n".join(lines)
