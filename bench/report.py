"""From raw samples to figures: medians with their spread (min-max), same-run ratios, the
issue's targets, a printed table, JSON.

A ratio is computed inside each run (ours and the reference measured moments apart on the
same instance set) and the median of those per-run ratios is reported with its min and max,
so a burst of load from another process on the shared machine skews one ratio, not the
comparison, and shows as spread.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MB = 1e6
Stats = dict[str, float] | None
"""``{"median", "min", "max", "n"}`` of some samples, None when there are none."""


@dataclass(frozen=True)
class Target:
    """One row of the issue's table, and whether this run met it (None: not measured)."""

    name: str
    wanted: str
    got: str
    met: bool | None


def stats(values: list[float | None]) -> Stats:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def mid(s: Stats) -> float | None:
    return None if s is None else s["median"]


def _rate(sample: dict[str, Any], key: str = "seconds") -> float | None:
    seconds = sample.get(key)
    return None if not seconds else sample["instances"] / seconds


def _cpu_us(sample: dict[str, Any]) -> float | None:
    cpu = sample.get("cpu_seconds")
    return None if cpu is None else cpu / sample["instances"] * 1e6


def _cores(sample: dict[str, Any]) -> float | None:
    """CPU seconds per wall second: how much of the machine's 2 cores the server used."""
    cpu = sample.get("cpu_seconds")
    return None if cpu is None else cpu / sample["seconds"]


def _ratios(ours: list[float | None], reference: list[float | None]) -> Stats:
    """Per-run ratios (run i of ours over run i of the reference), then their spread."""
    pairs = zip(ours, reference, strict=False)
    return stats([a / b for a, b in pairs if a is not None and b])


# -- summaries -----------------------------------------------------------------------------------


def _ingest_row(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    rates, ref_rates = [_rate(s) for s in runs], [_rate(s) for s in reference]
    cpu, ref_cpu = [_cpu_us(s) for s in runs], [_cpu_us(s) for s in reference]
    row: dict[str, Any] = {
        "instances_per_s": stats(rates),
        "mb_per_s": stats([s["bytes"] / s["seconds"] / MB for s in runs]),
        "x_storescp": _ratios(rates, ref_rates),
        "cpu_us_per_instance": stats(cpu),
        "cpu_x_storescp": _ratios(cpu, ref_cpu),
    }
    if runs and "ingest_commit_seconds" in runs[0]:
        committed = [_rate(s, "ingest_commit_seconds") for s in runs]
        row["ingest_commit_instances_per_s"] = stats(committed)
        row["ingest_commit_x_storescp"] = _ratios(committed, ref_rates)
        row["commit_seconds"] = stats([s["commit_seconds"] for s in runs])
    return row


def summarize_ingest(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, by_server in raw.get("ingest", {}).items():
        reference = by_server.get("storescp", [])
        out[size] = {name: _ingest_row(runs, reference) for name, runs in by_server.items()}
    return out


def summarize_send(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, by_client in raw.get("send", {}).items():
        reference = [_rate(s) for s in by_client.get("storescu", [])]
        rows = {}
        for name, runs in by_client.items():
            rates = [_rate(s) for s in runs]
            rows[name] = {"instances_per_s": stats(rates), "x_storescu": _ratios(rates, reference)}
            if name != "storescu":
                phase = [_rate(s, "cstore_phase_seconds") for s in runs]
                rows[name]["cstore_phase_instances_per_s"] = stats(phase)
                rows[name]["cstore_phase_x_storescu"] = _ratios(phase, reference)
        out[size] = rows
    return out


def summarize_startup(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        name: stats([s["seconds"] for s in runs]) for name, runs in raw.get("startup", {}).items()
    }


def _median_phases(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    names = list(dict.fromkeys(name for s in runs for name in s.get("phases_s", {})))
    return {n: mid(stats([s.get("phases_s", {}).get(n) for s in runs])) for n in names}


def summarize_commitment(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rss = raw.get("commitment_rss_mb", {})
    for kind, by_server in raw.get("commitment", {}).items():
        for name, by_refs in by_server.items():
            out.setdefault(kind, {})[name] = {
                refs: {
                    "latency_s": stats([s["latency_s"] for s in runs]),
                    "stored": runs[0]["stored"],
                    "missing": runs[0]["missing"],
                    "peak_rss_mb": rss.get(kind, {}).get(name, {}).get(refs),
                    "phases_s": _median_phases(runs),
                }
                for refs, runs in by_refs.items()
            }
    return out


def summarize_concurrency(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_server = raw.get("concurrency", {})
    for name, by_level in by_server.items():
        single = [_rate(s) for s in by_level.get("1", [])]
        out[name] = {}
        for level, runs in by_level.items():
            rates = [_rate(s) for s in runs]
            reference = [_rate(s) for s in by_server.get("storescp", {}).get(level, [])]
            out[name][level] = {
                "instances_per_s": stats(rates),
                "x_one_association": _ratios(rates, single),
                "x_storescp": _ratios(rates, reference),
                "cpu_us_per_instance": stats([_cpu_us(s) for s in runs]),
                "cores_used": stats([_cores(s) for s in runs]),
            }
    return out


DROPPED = "responses_dropped_by_client"
"""pynetdicom's own race (bench.nagle.ResponseLost): runs done again, counted."""
CLIENT_CPU = "client_cpu_ms_per_instance"
"""The pynetdicom client's own CPU time per instance (bench.nagle.pynetdicom_store)."""


def summarize_nagle(raw: dict[str, Any]) -> dict[str, Any]:
    by_client = raw.get("nagle", {})
    out: dict[str, Any] = {
        name: stats([s["seconds"] / s["instances"] * 1e3 for s in runs])
        for name, runs in by_client.items()
    }
    out[CLIENT_CPU] = {
        name: stats([s["client_cpu_seconds"] / s["instances"] * 1e3 for s in runs])
        for name, runs in by_client.items()
        if runs and "client_cpu_seconds" in runs[0]
    }
    out[DROPPED] = sum(s.get(DROPPED, 0) for runs in by_client.values() for s in runs)
    return out


def summarize_memory(raw: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, runs in raw.get("memory", {}).items():
        out[name] = {
            "mib": runs[0]["bytes"] / 2**20,
            "rss_before_mb": mid(stats([s["rss_before_mb"] for s in runs])),
            "rss_growth_mb": stats([s["rss_after_mb"] - s["rss_before_mb"] for s in runs]),
            "seconds": stats([s["seconds"] for s in runs]),
        }
    return out


SUMMARIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "startup": summarize_startup,
    "ingest": summarize_ingest,
    "send": summarize_send,
    "commitment": summarize_commitment,
    "concurrency": summarize_concurrency,
    "nagle": summarize_nagle,
    "memory": summarize_memory,
}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: summary(raw) for key, summary in SUMMARIES.items()}


# -- targets -------------------------------------------------------------------------------------


def spread(s: Stats, unit: str = "x", digits: int = 2) -> str:
    """``0.85x (0.80-0.90, 6 runs)``; a single sample without its spread."""
    if s is None:
        return "n/a"
    text = f"{s['median']:,.{digits}f}{unit}"
    if s["n"] > 1:
        text += f" ({s['min']:,.{digits}f}-{s['max']:,.{digits}f}, {s['n']:.0f} runs)"
    return text


def _judge(s: Stats, test: Callable[[float], bool]) -> bool | None:
    return None if s is None else test(s["median"])


def _target(name: str, wanted: str, s: Stats, test: Callable[[float], bool], **fmt: Any) -> Target:
    return Target(name, wanted, spread(s, **fmt), _judge(s, test))


def _ours(summary: dict[str, Any], part: str) -> list[str]:
    """Our SCP's variants measured in a part of the summary (stgcmt, stgcmt+uvloop)."""
    names: set[str] = set()
    for rows in summary[part].values():
        names.update(n for n in rows if n.startswith("stgcmt"))
    return sorted(names)


COMMIT_X = "ingest_commit_x_storescp"
INGEST_TARGETS = {
    "ingest small, C-STORE only, vs storescp": ("small", "x_storescp", ">= 1.0x"),
    "ingest large, C-STORE only, vs storescp": ("large", "x_storescp", ">= 0.8x"),
    "ingest small + commitment of all, vs storescp": ("small", COMMIT_X, ">= 0.8x"),
    "ingest large + commitment of all, vs storescp": ("large", COMMIT_X, ">= 0.8x"),
    "server CPU per small instance, x storescp's": ("small", "cpu_x_storescp", "<= 1.0x"),
}
"""Issue 12's ingest targets for each of our SCP variants: what -> (instance size, ratio in the
summary, what is wanted)."""


def _meets(wanted: str) -> Callable[[float], bool]:
    """The test a wanted ratio states: ``>= 0.8x`` or ``<= 1.0x``."""
    op, bound = wanted.split()
    limit = float(bound.rstrip("x"))
    return (lambda v: v >= limit) if op == ">=" else (lambda v: v <= limit)


def ingest_targets(summary: dict[str, Any]) -> list[Target]:
    return [
        _target(f"{name}, {what}", wanted, by_size.get(figure), _meets(wanted))
        for name in _ours(summary, "ingest")
        for what, (size, figure, wanted) in INGEST_TARGETS.items()
        for by_size in [summary["ingest"].get(size, {}).get(name, {})]
    ]


def commitment_targets(summary: dict[str, Any]) -> list[Target]:
    rows = summary["commitment"].get("all stored", {}).get("stgcmt", {})
    found = []
    for refs, ceiling in (("10000", 0.3), ("100000", 3.0)):
        s = rows.get(refs, {}).get("latency_s")
        found.append(
            Target(
                f"commitment report, every reference stored, {int(refs):,} refs",
                f"<= {ceiling:g} s",
                spread(s, unit=" s", digits=3),
                _judge(s, lambda v, c=ceiling: v <= c),  # type: ignore[misc]
            )
        )
    peaks = [r["peak_rss_mb"] for r in rows.values() if r.get("peak_rss_mb") is not None]
    peak = stats([max(peaks)]) if peaks else None
    found.append(
        _target(
            "SCP peak RSS during those commitments",
            "< 300 MB",
            peak,
            lambda v: v < 300,
            unit=" MB",
            digits=0,
        )
    )
    return found


def send_targets(summary: dict[str, Any]) -> list[Target]:
    row = summary["send"].get("small", {}).get("stgcmt", {})
    return [
        _target(
            "stgcmt send small: C-STORE phase vs storescu",
            ">= 1.0x",
            row.get("cstore_phase_x_storescu"),
            lambda v: v >= 1.0,
        ),
        _target(
            "stgcmt send small: whole command vs storescu",
            ">= 0.5x",
            row.get("x_storescu"),
            lambda v: v >= 0.5,
        ),
    ]


def concurrency_targets(summary: dict[str, Any]) -> list[Target]:
    found = []
    for name in sorted(n for n in summary["concurrency"] if n.startswith("stgcmt")):
        s = summary["concurrency"][name].get("2", {}).get("x_storescp")
        found.append(
            _target(
                f"{name}, 2 concurrent associations vs storescp", ">= 1.0x", s, lambda v: v >= 1.0
            )
        )
    return found


def nagle_targets(summary: dict[str, Any]) -> list[Target]:
    rows = summary["nagle"]
    return [
        _target(
            f"Nagle-on client, {client} -> stgcmt, per instance",
            "<= 2 ms",
            rows.get(f"{client} -> stgcmt"),
            lambda v: v <= 2.0,
            unit=" ms",
            digits=1,
        )
        for client in ("storescu", "pynetdicom")
    ]


def memory_targets(summary: dict[str, Any]) -> list[Target]:
    row = summary["memory"].get("stgcmt")
    name = "memory for one C-STORE (peak RSS growth)"
    if row is None:
        return [Target(name, "<= +16 MB", "n/a", None)]
    s = row["rss_growth_mb"]
    return [
        _target(
            f"memory for one {row['mib']:.0f} MiB C-STORE (peak RSS growth)",
            "<= +16 MB",
            s,
            lambda v: v <= 16,
            unit=" MB",
            digits=1,
        )
    ]


def startup_targets(summary: dict[str, Any]) -> list[Target]:
    s = summary["startup"].get("stgcmt")
    return [
        _target(
            "stgcmt --version wall time", "< 0.15 s", s, lambda v: v < 0.15, unit=" s", digits=3
        )
    ]


def targets(summary: dict[str, Any]) -> list[Target]:
    found: list[Target] = []
    for part in (
        ingest_targets,
        commitment_targets,
        send_targets,
        concurrency_targets,
        nagle_targets,
        memory_targets,
        startup_targets,
    ):
        found += part(summary)
    return found


# -- tables --------------------------------------------------------------------------------------


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """First column left-aligned, figures right-aligned."""
    if not rows:
        return f"{title}\n(not measured)"
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join(("{:<%d}" if i == 0 else "{:>%d}") % w for i, w in enumerate(widths))
    out = [title, line.format(*header), "  ".join("-" * w for w in widths)]
    out += [line.format(*row) for row in rows]
    return "\n".join(out)


def _n(s: Stats, digits: int = 0, unit: str = "") -> str:
    return spread(s, unit=unit, digits=digits) if s else "-"


def _rows_by_size(
    by_size: dict[str, dict[str, Any]], cells: Callable[[dict[str, Any]], list[str]]
) -> list[list[str]]:
    """One row per instance size and program, its figures from ``cells``: the layout of
    every section measured per size (ingest, send)."""
    return [
        [f"{size} {name}", *cells(r)]
        for size, by_name in by_size.items()
        for name, r in by_name.items()
    ]


def _ingest_cells(r: dict[str, Any]) -> list[str]:
    return [
        _n(r["instances_per_s"]),
        _n(r["x_storescp"], 2, "x"),
        _n(r.get("ingest_commit_x_storescp"), 2, "x"),
        _n(r.get("commit_seconds"), 3),
        _n(r["cpu_us_per_instance"]),
    ]


def ingest_table(summary: dict[str, Any]) -> str:
    header = ["size / server", "inst/s", "x storescp", "+commit x storescp", "commit s"]
    header += ["CPU us/inst"]
    rows = _rows_by_size(summary["ingest"], _ingest_cells)
    return _table("Ingest: storescu (TCP_NODELAY=1), one association", header, rows)


def _send_cells(r: dict[str, Any]) -> list[str]:
    return [
        _n(r["instances_per_s"]),
        _n(r["x_storescu"], 2, "x"),
        _n(r.get("cstore_phase_instances_per_s")),
        _n(r.get("cstore_phase_x_storescu"), 2, "x"),
    ]


def send_table(summary: dict[str, Any]) -> str:
    header = ["size / client", "inst/s whole", "x storescu", "C-STORE phase/s", "x storescu"]
    rows = _rows_by_size(summary["send"], _send_cells)
    return _table("Send into storescp (whole command, and send's C-STORE phase)", header, rows)


def commitment_table(summary: dict[str, Any]) -> str:
    rows = []
    short = {"action_to_journaled": "in", "verify": "verify", "report_delivery": "report"}
    for kind, by_server in summary["commitment"].items():
        for name, by_refs in by_server.items():
            for refs, r in sorted(by_refs.items(), key=lambda kv: int(kv[0])):
                phases = " / ".join(
                    f"{short.get(k, k)} {v:.2f}" for k, v in r["phases_s"].items() if v is not None
                )
                rows.append(
                    [
                        f"{kind} {name}",
                        f"{int(refs):,}",
                        f"{r['stored']:,}/{r['missing']:,}",
                        _n(r["latency_s"], 3),
                        "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}",
                        phases or "-",
                    ]
                )
    header = ["kind / server", "refs", "stored/missing", "latency s", "peak RSS MB"]
    header += ["phases s (SCP log)"]
    return _table("Commitment: N-ACTION sent -> N-EVENT-REPORT received", header, rows)


def concurrency_table(summary: dict[str, Any]) -> str:
    rows = []
    for name, by_level in summary["concurrency"].items():
        for level, r in sorted(by_level.items(), key=lambda kv: int(kv[0])):
            rows.append(
                [
                    name,
                    level,
                    _n(r["instances_per_s"]),
                    _n(r["x_one_association"], 2, "x"),
                    _n(r["x_storescp"], 2, "x") if name != "storescp" else "-",
                    _n(r["cpu_us_per_instance"]),
                    _n(r["cores_used"], 2),
                ]
            )
    header = ["server", "associations", "inst/s total", "x one", "x storescp"]
    header += ["CPU us/inst", "cores used"]
    return _table("Concurrency: simultaneous storescu, small instances", header, rows)


def nagle_table(summary: dict[str, Any]) -> str:
    nagle = summary["nagle"]
    cpu = nagle.get(CLIENT_CPU, {})
    rows = [
        [name, _n(s, 1, " ms"), _n(cpu.get(name), 1, " ms")]
        for name, s in nagle.items()
        if name not in (DROPPED, CLIENT_CPU)
    ]
    table = _table(
        "Nagle-on clients (no TCP_NODELAY): wall time per instance",
        ["client -> server", "per instance", "client's own CPU"],
        rows,
    )
    dropped = summary["nagle"].get(DROPPED)
    if dropped:
        table += (
            f"\n({dropped} pynetdicom run(s) done again: its association reactor dropped a"
            " C-STORE response the SCP had sent, as an 'unexpected C-STORE service message')"
        )
    return table


def memory_table(summary: dict[str, Any]) -> str:
    rows = [
        [
            name,
            f"{r['mib']:.0f} MiB",
            f"{r['rss_before_mb']:.0f}",
            _n(r["rss_growth_mb"], 1),
            _n(r["seconds"], 2),
        ]
        for name, r in summary["memory"].items()
    ]
    header = ["server", "C-STORE of", "peak RSS before MB", "growth MB", "seconds"]
    return _table("One big C-STORE (storescu): server peak RSS (VmHWM)", header, rows)


def startup_table(summary: dict[str, Any]) -> str:
    rows = [[f"{name} --version", _n(s, 3, " s")] for name, s in summary["startup"].items()]
    return _table("Start-up: wall time of a --version run", ["command", "seconds"], rows)


def targets_table(found: list[Target]) -> str:
    verdict = {True: "met", False: "not met", None: "not measured"}
    rows = [[t.name, t.wanted, t.got, verdict[t.met]] for t in found]
    header = ["figure", "target", "this run: median (min-max)", ""]
    return _table("Targets (issue 12, ratios within one run)", header, rows)


def render(summary: dict[str, Any], found: list[Target]) -> str:
    parts = [startup_table(summary), ingest_table(summary), send_table(summary)]
    parts += [commitment_table(summary), concurrency_table(summary), nagle_table(summary)]
    parts += [memory_table(summary), targets_table(found)]
    return "\n\n".join(parts)


# -- files ---------------------------------------------------------------------------------------


def write_json(path: Path, document: dict[str, Any], found: list[Target]) -> None:
    document = {**document, "targets": [asdict(t) for t in found]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
