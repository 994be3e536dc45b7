"""Pipeline run reports: per stage and unit time, utilization, latency, throughput, drops, moves;
as a dict (JSON) and a timeline picture of a few frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.apps.pipeline.executor import RunStats
from edgekit.apps.pipeline.units import Unit


def summarize(stats: RunStats, units: dict[str, Unit]) -> dict:
    per_stage: dict[tuple[str, str], list[float]] = {}
    busy: dict[str, float] = {}
    for _, stage, unit, t0, t1 in stats.spans:
        per_stage.setdefault((stage, unit), []).append((t1 - t0) * 1000)
        busy[unit] = busy.get(unit, 0.0) + (t1 - t0)
    lat = np.asarray(stats.latencies_ms) if stats.latencies_ms else np.zeros(1)
    wall = max(stats.wall_s, 1e-9)
    return {
        "frames_in": stats.submitted, "frames_out": stats.completed, "dropped": stats.dropped,
        "wall_s": stats.wall_s, "throughput_fps": stats.completed / wall,
        "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95)),
        "max_in_flight": stats.max_in_flight_seen,
        "stages": [{"stage": s, "unit": u, "frames": len(v), "mean_ms": float(np.mean(v)),
                    "total_s": float(np.sum(v) / 1000)} for (s, u), v in per_stage.items()],
        "units": {u: {"utilization": busy.get(u, 0.0) / wall, "description": units[u].description}
                  for u in units},
        "moves": [m.__dict__ for m in stats.moves],
    }


def timeline_png(stats: RunStats, path: Path, frames: int = 6, title: str = "pipeline timeline",
                 first: int | None = None) -> Path:
    """Gantt chart of ``frames`` consecutive frames from ``first`` (default: the middle of the run, past
    the warm-up): one row per unit, one colour per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if first is None:
        first = max(0, (max((s[0] for s in stats.spans), default=0) - frames) // 2)
    spans = [s for s in stats.spans if first <= s[0] < first + frames]
    t_start = min((s[3] for s in spans), default=0.0)
    units = sorted({s[2] for s in spans})
    stages = list(dict.fromkeys(s[1] for s in spans))
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.7 * len(units)), dpi=110)
    for f, stage, unit, t0, t1 in spans:
        y = units.index(unit)
        t0, t1 = t0 - t_start, t1 - t_start
        ax.barh(y, (t1 - t0) * 1000, left=t0 * 1000, color=f"C{stages.index(stage)}", edgecolor="black", lw=0.4)
        ax.text((t0 + t1) * 500, y, str(f), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(units)), units)
    ax.set_xlabel(f"ms since frame {first} entered its first stage (numbers: frame index)")
    ax.set_title(title, pad=22)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=f"C{i}") for i in range(len(stages))], labels=stages,
              fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(stages), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
