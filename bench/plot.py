"""The PNG: one panel per measurement. Matplotlib with the Agg backend (no display needed);
imported only when plotting, after :mod:`bench.deps` has made sure it is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _legend(ax: Any) -> None:
    """A legend only where something was drawn (a broken scenario leaves its panel empty)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _reference_first(name: str) -> tuple[bool, str]:
    """DCMTK and Orthanc first, ours after, so colours mean the same in every run."""
    return (name.startswith("stgcmt"), name)


def _bars(ax: Any, groups: dict[str, dict[str, float | None]], ylabel: str, title: str) -> None:
    """Grouped bars: one group per size, one bar per server/client."""
    names = sorted({name for rows in groups.values() for name in rows}, key=_reference_first)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [g + i * width for g in range(len(groups))]
        ys = [rows.get(name) or 0.0 for rows in groups.values()]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels(list(groups))
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend(ax)


def _median(stats: dict[str, float] | None) -> float | None:
    return None if stats is None else stats["median"]


def _ingest(ax: Any, summary: dict[str, Any]) -> None:
    groups: dict[str, dict[str, float | None]] = {}
    for size, rows in summary["ingest"].items():
        groups[size] = {name: _median(r["instances_per_s"]) for name, r in rows.items()}
        for name, r in rows.items():
            if "ingest_commit_instances_per_s" in r:
                groups[size][f"{name} +commit"] = _median(r["ingest_commit_instances_per_s"])
    _bars(ax, groups, "instances/s", "Ingest (storescu, 1 association)")


def _send(ax: Any, summary: dict[str, Any]) -> None:
    groups = {
        size: {name: _median(r["instances_per_s"]) for name, r in rows.items()}
        for size, rows in summary["send"].items()
    }
    _bars(ax, groups, "instances/s", "Send into storescp (whole command)")


def _commitment(ax: Any, summary: dict[str, Any]) -> None:
    for kind, by_server in summary["commitment"].items():
        for name, by_refs in by_server.items():
            points = sorted(
                (int(k), _median(r["latency_s"])) for k, r in by_refs.items() if r["latency_s"]
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=f"{name} ({kind})")
    ax.plot([10_000, 100_000], [0.3, 3.0], "k*", markersize=10, label="target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("references in one N-ACTION")
    ax.set_ylabel("seconds to report")
    ax.set_title("Commitment latency")
    _legend(ax)


def _concurrency(ax: Any, summary: dict[str, Any]) -> None:
    for name, by_level in summary["concurrency"].items():
        points = sorted((int(k), _median(r["instances_per_s"])) for k, r in by_level.items())
        ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set_xlabel("simultaneous storescu associations")
    ax.set_ylabel("instances/s (total)")
    ax.set_title("Concurrency (small instances)")
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.15)
    ax.set_xticks(sorted({int(k) for rows in summary["concurrency"].values() for k in rows}))
    _legend(ax)


def write_png(path: Path, summary: dict[str, Any], subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, draw in zip(axes.flat, (_ingest, _send, _commitment, _concurrency), strict=True):
        try:
            draw(ax, summary)
        except (KeyError, ValueError, TypeError):  # a scenario that broke: leave its panel empty
            ax.set_title(ax.get_title() or "(no data)")
    fig.suptitle(f"stgcmt benchmark — {subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
