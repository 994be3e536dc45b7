"""Sweep reports: a Pareto plot (PNG) and an HTML page per device."""

from __future__ import annotations

import html
from pathlib import Path

from edgekit.apps.profiling.choose import Choice, same_point
from edgekit.apps.profiling.device import DeviceProfile
from edgekit.apps.profiling.sweep import Point
from edgekit.core.files import atomic_path, write_atomic


def pareto_png(points: list[Point], choice: Choice, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    ok = [p for p in points if p.ok]
    formats = sorted({p.format for p in ok})
    for i, fmt in enumerate(formats):
        ps = [p for p in ok if p.format == fmt]
        ax.scatter([p.p50_ms for p in ps], [p.rank_quality for p in ps], label=fmt, s=28, color=f"C{i}", alpha=0.8)
    front = sorted(choice.front, key=lambda p: p.p50_ms)
    ax.plot([p.p50_ms for p in front], [p.rank_quality for p in front], "k--", lw=1, label="Pareto front")
    ax.axvline(choice.budget_ms, color="red", lw=1, label=f"budget {choice.budget_ms:.1f} ms")
    if choice.chosen:
        c = choice.chosen
        ax.scatter([c.p50_ms], [c.rank_quality], s=160, facecolors="none", edgecolors="red", lw=2, label="chosen")
        ax.annotate(c.label(), (c.p50_ms, c.rank_quality), textcoords="offset points", xytext=(8, -14), fontsize=8)
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel(ok[0].rank_metric.split(" on ")[0] if ok else "quality")
    ax.set_title(title.replace("$", r"\$"))  # a model named with '$' is not mathtext
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path


def html_report(profile: DeviceProfile, points: list[Point], choice: Choice, png: Path, path: Path,
                wall_s: float, notes: list[str] | tuple[str, ...] = ()) -> Path:
    """The HTML page of a sweep (written atomically): the choice, notes, the plot and every point."""
    rows = []
    front = {(p.model_sha256, p.key) for p in choice.front}
    several = len({p.model_sha256 for p in points}) > 1

    for p in sorted(points, key=lambda p: (p.model, p.resolution, p.target, p.delegate, p.threads)):
        mark = "chosen" if same_point(p, choice.chosen) else (
            "fallback" if same_point(p, choice.fallback) else ("front" if (p.model_sha256, p.key) in front else ""))
        tail = f"{p.tail_ms:.2f}" + ("" if p.p90_ms is not None else " (p95)") if p.ok else "-"
        load = [f"{p.load_p50_ms:.2f}", f"{p.load_p90_ms:.2f}" + _ci(p.load_p90_ci), f"{p.degradation:.1f}x"] \
            if p.ok and p.loaded else ["-", "-", "-"]
        tail += _ci(p.p90_ci) if p.ok and p.p90_ms is not None else ""
        frame = [f"{p.e2e_p90_ms:.2f}" if p.e2e_p90_ms is not None else "-",
                 f"{p.load_e2e_p90_ms:.2f}" + _ci(p.load_e2e_p90_ci) if p.load_e2e_p90_ms is not None else "-",
                 html.escape(", ".join(f"{k} {v:.2f}" for k, v in (p.stages_ms or {}).items())) or "-"]
        task = f"{p.task_iou:.4f} / {p.task_boundary_f:.4f}" if p.task_iou is not None else "-"
        label = f"{p.model} {p.label()}" if several else p.label()
        cells = [html.escape(label), f"{p.p50_ms:.2f}" if p.ok else "-", tail, *load, *frame, task,
                 f"{p.peak_memory_mb:.0f}" if p.peak_memory_mb else "-",
                 f"{p.quality:.4f}" if p.quality is not None else "-", html.escape(_audit_cell(p)), mark,
                 html.escape(p.error)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    ladder = "".join(f"<p>Ladder rung {i + 1}: {html.escape(p.label())}: {html.escape(r)}</p>"
                     for i, (p, r) in enumerate(choice.ladder))
    ran = [choice.chosen, *(p for p, _ in choice.ladder)] if choice.chosen else []
    ladder += "".join(
        f"<p>Sustained {p.sustained['seconds']:.0f} s under load, {html.escape(p.label())}: {p.sustained['what']} "
        f"p90 per {p.sustained['window_s']:g} s window "
        + ", ".join(f"{w['p90_ms']:.2f}" for w in p.sustained["windows"]) + " ms"
        + (f"; drift {p.sustained['drift_p90']:.2f}x" if p.sustained.get("drift_p90") is not None else "") + "</p>"
        for p in ran if p.sustained)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>edgekit profile {html.escape(profile.id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style></head>
<body><h1>{html.escape(profile.id)}</h1><p>{html.escape(profile.description)}</p>
<p><b>Choice:</b> {html.escape(choice.why)}</p>
{_audit_warning(choice)}
{ladder}
{"".join(f"<p>Note: {html.escape(n)}</p>" for n in notes)}
<p>Budget {choice.budget_ms:.1f} ms per frame ({profile.fps:g} fps x {profile.model_share:g} share), checked against
the whole segmentation step of a {profile.camera[0]}x{profile.camera[1]} camera frame (resize, colour, normalize,
model, mask upsample) under load where it was timed; sweep wall time
{wall_s:.0f} s; {sum(p.ok for p in points)} of {len(points)} points measured.</p>
<img src="{png.name}" alt="Pareto plot">
<p>{html.escape(_load_line(points))}</p>
<table><tr><th>point</th><th>p50 ms</th><th>p90 ms</th><th>p50 ms under load</th><th>p90 ms under load</th>
<th>slowdown under load (worse of p50, p90)</th>
<th>frame p90 ms</th><th>frame p90 ms under load</th><th>frame stages (p50 ms)</th>
<th>task IoU / boundary F</th>
<th>peak MB</th><th>quality</th><th>execution audit</th><th></th><th>error</th></tr>
{"".join(rows)}</table></body></html>"""
    return write_atomic(path, page)


def _audit_cell(p: Point) -> str:
    from edgekit.core.audit import describe_point_audit

    return describe_point_audit(p.audit) if p.ok or p.audit else "-"


def _audit_warning(choice: Choice) -> str:
    """A paragraph for each shipped point (chosen, fallback) whose execution audit shows an unintended deviation."""
    from edgekit.core.audit import describe_point_audit

    return "".join(f"<p><b>Warning:</b> the {role} point {html.escape(p.label())} does not run as its target intends: "
                   f"{html.escape(describe_point_audit(p.audit))}</p>"
                   for role, p in (("chosen", choice.chosen), ("fallback", choice.fallback))
                   if p is not None and (p.audit or {}).get("unintended"))


def _load_line(points: list[Point]) -> str:
    """What the under-load columns mean, with the load levels the points were measured under."""
    levels = sorted({(p.threads, p.load["cpu"], p.load["memory"]) for p in points if p.loaded and p.load})
    if not levels:
        return "No point was measured under background load: the choice checks the quiet tail latency."
    each = "; ".join(f"{t} thread(s): {c} CPU + {m} memory-bandwidth process(es)" for t, c, m in levels)
    return ("Each point is timed quiet and under background load, interleaved (blocks of runs alternate, so the "
            "machine's own noise hits both alike); the budget is checked against p90 under load; small figures are "
            f"95% confidence intervals of p90. Load: {each}.")


def _ci(ci: list[float] | None) -> str:
    return f" <small>({ci[0]:.2f}-{ci[1]:.2f})</small>" if ci else ""
