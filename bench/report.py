"""From raw samples to figures: medians, same-run ratios, the issue's targets, a printed
table, JSON and a PNG plot.

A ratio is computed inside each run (ours and the reference measured moments apart on the
same instance set) and the median of those per-run ratios is reported, so a burst of load from
another process on the shared machine skews one ratio, not the comparison.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MB = 1e6


@dataclass(frozen=True)
class Target:
    """One figure the issue asks for, and whether this run met it (None: not measured)."""

    name: str
    wanted: str
    got: str
    met: bool | None


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


NOISE_FLOOR = 0.1
"""A start-up-subtracted time below this share of the whole is start-up noise, not a figure."""


def _rate(sample: dict[str, Any], key: str = "seconds", minus: str | None = None) -> float | None:
    if sample.get(key) is None:
        return None
    seconds = sample[key] - (sample[minus] if minus else 0.0)
    if seconds < NOISE_FLOOR * sample[key]:
        return None
    return sample["instances"] / seconds


def _same_run_ratios(ours: list[float | None], reference: list[float | None]) -> float | None:
    pairs = zip(ours, reference, strict=False)
    return median([a / b for a, b in pairs if a is not None and b])


# -- summaries -----------------------------------------------------------------------------------


def summarize_ingest(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, by_server in raw.get("ingest", {}).items():
        reference = [_rate(s) for s in by_server.get("storescp", [])]
        rows = {}
        for name, runs in by_server.items():
            rates = [_rate(s) for s in runs]
            row: dict[str, Any] = {
                "runs": len(runs),
                "instances_per_s": median(rates),
                "mb_per_s": median([s["bytes"] / s["seconds"] / MB for s in runs]),
                "x_storescp": _same_run_ratios(rates, reference),
                "one_instance_seconds": median([s.get("one_instance_seconds") for s in runs]),
            }
            if runs and "ingest_commit_seconds" in runs[0]:
                committed = [_rate(s, "ingest_commit_seconds") for s in runs]
                row["ingest_commit_instances_per_s"] = median(committed)
                row["ingest_commit_x_storescp"] = _same_run_ratios(committed, reference)
                row["commit_seconds"] = median([s["commit_seconds"] for s in runs])
            rows[name] = row
        out[size] = rows
    return out


def summarize_send(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, by_client in raw.get("send", {}).items():
        minus = "startup_seconds"
        reference = [_rate(s, minus=minus) for s in by_client.get("storescu", [])]
        rows = {}
        for name, runs in by_client.items():
            rates = [_rate(s, minus=minus) for s in runs]
            ours = name != "storescu"
            phase = [
                _rate(s, "cstore_phase_seconds") if ours else _rate(s, minus=minus) for s in runs
            ]
            rows[name] = {
                "runs": len(runs),
                "instances_per_s": median(rates),
                "raw_instances_per_s": median([_rate(s) for s in runs]),
                "startup_seconds": median([s.get("startup_seconds") for s in runs]),
                "x_storescu": _same_run_ratios(rates, reference),
                "cstore_phase_instances_per_s": median(phase),
                "cstore_phase_x_storescu": _same_run_ratios(phase, reference),
            }
        out[size] = rows
    return out


def _median_phases(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    names = list(dict.fromkeys(name for s in runs for name in s.get("phases_s", {})))
    return {n: median([s.get("phases_s", {}).get(n) for s in runs]) for n in names}


def _phase_text(phases: dict[str, float | None]) -> str:
    short = {"action_to_journaled": "in", "verify": "verify", "report_delivery": "report"}
    parts = [f"{short.get(k, k)} {v:.2f}" for k, v in phases.items() if v is not None]
    return " / ".join(parts) or "-"


def summarize_commitment(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rss = raw.get("commitment_rss_mb", {})
    for name, by_refs in raw.get("commitment", {}).items():
        out[name] = {
            refs: {
                "latency_s": median([s["latency_s"] for s in runs]),
                "stored": runs[0]["stored"],
                "missing": runs[0]["missing"],
                "peak_rss_mb": rss.get(name, {}).get(refs),
                "runs": len(runs),
                "phases_s": _median_phases(runs),
            }
            for refs, runs in by_refs.items()
        }
    return out


def summarize_concurrency(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, by_level in raw.get("concurrency", {}).items():
        single = [_rate(s) for s in by_level.get("1", [])]
        out[name] = {
            level: {
                "instances_per_s": median([_rate(s) for s in runs]),
                "x_one_association": _same_run_ratios([_rate(s) for s in runs], single),
                "runs": len(runs),
            }
            for level, runs in by_level.items()
        }
    return out


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "ingest": summarize_ingest(raw),
        "send": summarize_send(raw),
        "commitment": summarize_commitment(raw),
        "concurrency": summarize_concurrency(raw),
    }


# -- targets -------------------------------------------------------------------------------------


def _fmt_x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _at_least(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor


def _ingest_target(summary: dict[str, Any], size: str, floor: float) -> Target:
    """Judged on ingest+commit (the issue: "while indexing, our SCP committing durably");
    the plain C-STORE ratio is shown beside it."""
    row = summary["ingest"].get(size, {}).get("stgcmt", {})
    plain, durable = row.get("x_storescp"), row.get("ingest_commit_x_storescp")
    return Target(
        f"ingest {size} vs storescp (with commitment)",
        f">= {floor:.1f}x",
        f"{_fmt_x(durable)} (C-STORE only {_fmt_x(plain)})",
        _at_least(durable, floor),
    )


def _send_target(summary: dict[str, Any], size: str) -> Target:
    """Judged on whole command minus start-up (as the issue's method), falling back to the
    C-STORE phase from send's own log when start-up noise swamps the difference."""
    row = summary["send"].get(size, {}).get("stgcmt", {})
    ratio, phase = row.get("x_storescu"), row.get("cstore_phase_x_storescu")
    got = f"{_fmt_x(ratio)} (C-STORE phase {_fmt_x(phase)})"
    if ratio is None and phase is not None:
        ratio, got = phase, f"{_fmt_x(phase)} (C-STORE phase; start-up noise swamps the total)"
    return Target(f"send {size} vs storescu", ">= 1.0x", got, _at_least(ratio, 1))


def _latency_target(summary: dict[str, Any], refs: int, ceiling: float) -> Target:
    row = summary["commitment"].get("stgcmt", {}).get(str(refs), {})
    latency = row.get("latency_s")
    got = "n/a" if latency is None else f"{latency:.3f} s"
    if latency is not None:
        got += f" ({row['stored']} stored, {row['missing']} missing)"
    met = None if latency is None else latency <= ceiling
    return Target(f"commitment report, {refs:,} refs", f"<= {ceiling:g} s", got, met)


def _rss_target(summary: dict[str, Any]) -> Target:
    rows = summary["commitment"].get("stgcmt", {})
    peaks = [r["peak_rss_mb"] for r in rows.values() if r.get("peak_rss_mb") is not None]
    peak = max(peaks) if peaks else None
    got = "n/a" if peak is None else f"{peak:.0f} MB"
    met = None if peak is None else peak < 300
    return Target("SCP peak RSS (commitment)", "< 300 MB", got, met)


def targets(summary: dict[str, Any]) -> list[Target]:
    return [
        _ingest_target(summary, "small", 1.0),
        _ingest_target(summary, "large", 0.8),
        _send_target(summary, "small"),
        _send_target(summary, "large"),
        _latency_target(summary, 10_000, 0.3),
        _latency_target(summary, 100_000, 3.0),
        _rss_target(summary),
    ]


# -- table ---------------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """First column left-aligned, figures right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join(("{:<%d}" if i == 0 else "{:>%d}") % w for i, w in enumerate(widths))
    out = [title, line.format(*header), "  ".join("-" * w for w in widths)]
    out += [line.format(*row) for row in rows]
    return "\n".join(out)


def ingest_table(summary: dict[str, Any]) -> str:
    rows = []
    for size, by_server in summary["ingest"].items():
        for name, r in by_server.items():
            rows.append(
                [
                    f"{size} {name}",
                    _n(r["instances_per_s"]),
                    _n(r["mb_per_s"], 1),
                    _fmt_x(r["x_storescp"]),
                    _n(r.get("ingest_commit_instances_per_s")),
                    _fmt_x(r.get("ingest_commit_x_storescp")) if "commit_seconds" in r else "-",
                    _n(r.get("commit_seconds"), 3),
                    _n(r.get("one_instance_seconds"), 3),
                ]
            )
    header = [
        "size / server",
        "inst/s",
        "MB/s",
        "x storescp",
        "ingest+commit/s",
        "x storescp",
        "commit s",
        "1-instance s",
    ]
    return _table("1. Ingest: storescu, one association", header, rows)


def send_table(summary: dict[str, Any]) -> str:
    rows = []
    for size, by_client in summary["send"].items():
        for name, r in by_client.items():
            rows.append(
                [
                    f"{size} {name}",
                    _n(r["instances_per_s"]),
                    _n(r["raw_instances_per_s"]),
                    _n(r["startup_seconds"], 2),
                    _fmt_x(r["x_storescu"]),
                    _n(r["cstore_phase_instances_per_s"]),
                    _fmt_x(r["cstore_phase_x_storescu"]),
                ]
            )
    header = [
        "size / client",
        "inst/s",
        "incl. start-up",
        "start-up s",
        "x storescu",
        "C-STORE phase/s",
        "x storescu",
    ]
    return _table("2. Send into storescp", header, rows)


def commitment_table(summary: dict[str, Any]) -> str:
    rows = []
    for name, by_refs in summary["commitment"].items():
        for refs, r in sorted(by_refs.items(), key=lambda kv: int(kv[0])):
            rows.append(
                [
                    name,
                    f"{int(refs):,}",
                    f"{r['stored']:,}/{r['missing']:,}",
                    _n(r["latency_s"], 3),
                    _n(r["peak_rss_mb"]),
                    _phase_text(r["phases_s"]),
                ]
            )
    header = ["server", "refs", "stored/missing", "latency s", "peak RSS MB", "phases s (SCP log)"]
    return _table("3. Commitment: N-ACTION sent -> N-EVENT-REPORT received", header, rows)


def concurrency_table(summary: dict[str, Any]) -> str:
    rows = []
    for name, by_level in summary["concurrency"].items():
        for level, r in sorted(by_level.items(), key=lambda kv: int(kv[0])):
            rows.append([name, level, _n(r["instances_per_s"]), _fmt_x(r["x_one_association"])])
    header = ["server", "associations", "inst/s total", "x one"]
    return _table("4. Concurrency: simultaneous storescu (small instances)", header, rows)


def targets_table(found: list[Target]) -> str:
    verdict = {True: "met", False: "NOT met", None: "not measured"}
    rows = [[t.name, t.wanted, t.got, verdict[t.met]] for t in found]
    return _table("Targets (issue 5, 2 cores)", ["figure", "target", "this run", ""], rows)


def render(summary: dict[str, Any], found: list[Target]) -> str:
    parts = [ingest_table(summary), send_table(summary), commitment_table(summary)]
    parts += [concurrency_table(summary), targets_table(found)]
    return "\n\n".join(parts)


# -- files ---------------------------------------------------------------------------------------


def write_json(path: Path, document: dict[str, Any], found: list[Target]) -> None:
    document = {**document, "targets": [asdict(t) for t in found]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
