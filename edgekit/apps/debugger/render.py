"""Rich tables and lines for ``edgekit diff`` and ``edgekit bisect``."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from edgekit.apps.debugger.bisect import BisectReport
from edgekit.apps.debugger.diff import SQNR_EXACT, DiffReport


def _db(v: float | None) -> str:
    if v is None:
        return "-"
    return "exact" if v >= SQNR_EXACT else f"{v:.1f}"


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def diff_table(report: DiffReport, worst: int | None = None) -> Table:
    """One row per aligned layer in graph order (or the ``worst`` lowest-SQNR ones), the first diverging
    layer marked."""
    t = Table(title=f"{report.target}: {len(report.layers)} of {report.reference_nodes} reference nodes aligned, "
                    f"{report.samples} sample(s), threshold {report.threshold_db:.1f} dB ({report.tolerance_class})")
    for col in ("#", "reference node", "op", "runtime tensor", "matched by", "max abs", "mean abs", "cosine",
                "SQNR dB", "drop dB", "isolated SQNR dB"):
        t.add_column(col, justify="right" if col in ("#", "max abs", "mean abs", "cosine", "SQNR dB", "drop dB",
                                                     "isolated SQNR dB") else "left", overflow="fold")
    rows = report.layers
    if worst:
        rows = sorted(rows, key=lambda ly: ly.sqnr_db)[:worst]
    for ly in rows:
        style = "bold red" if ly.first_diverging else ("yellow" if ly.sqnr_db < report.threshold_db else None)
        iso = _db(ly.isolated["sqnr_db"]) if ly.isolated else ("-" if ly.isolated_note.startswith("not measured")
                                                                  else "n/a")
        t.add_row(str(ly.index), escape(_short(ly.node)) + (" ◀ first diverging" if ly.first_diverging else ""),
                  ly.op, escape(_short(ly.runtime_tensor, 28)), ly.matched_by, f"{ly.max_abs:.3g}",
                  f"{ly.mean_abs:.3g}", f"{ly.cosine:.6f}", _db(ly.sqnr_db),
                  "-" if ly.drop_db is None else f"{ly.drop_db:+.1f}", iso, style=style)
    return t


def diff_lines(report: DiffReport) -> list[str]:
    """What the table does not show: the divergence, unaligned nodes, the observer check, notes."""
    lines = []
    first = report.first_diverging
    if first:
        lines.append(f"[red]first diverging layer:[/] {escape(first.node)} ({first.op}), SQNR "
                     f"{_db(first.sqnr_db)} dB (threshold {report.threshold_db:.1f} dB)")
        lines += _upstream(first)
    else:
        lines.append(f"[green]no aligned layer falls below {report.threshold_db:.1f} dB and stays there[/]")
    obs = report.observer
    state = "[green]ok[/]" if obs["ok"] else "[red]CHANGED[/]"
    lines.append(f"observer check: outputs with taps vs without differ by {obs['max_abs']:.3g} "
                 f"(tolerance {obs['tolerance']:.3g}): {state}")
    isolated_notes = {ly.isolated_note for ly in report.layers if ly.isolated is None and ly.isolated_note
                      and not ly.isolated_note.startswith("not measured")}
    for note in sorted(isolated_notes)[:3]:
        lines.append(f"[yellow]isolated error not available:[/] {escape(note)}")
    if report.unmatched:
        lines.append(f"[yellow]{len(report.unmatched)} reference node(s) not aligned (compared nowhere):[/]")
        for u in report.unmatched:
            lines.append(f"  {escape(u['node'])} ({u['op']}): {escape(u['reason'])}")
    if report.unmatched_runtime:
        shown = ", ".join(_short(n, 40) for n in report.unmatched_runtime[:5])
        more = f" and {len(report.unmatched_runtime) - 5} more" if len(report.unmatched_runtime) > 5 else ""
        lines.append(f"{len(report.unmatched_runtime)} runtime tensor(s) with no reference node: {escape(shown)}{more}")
    lines += [f"[yellow]note:[/] {escape(n)}" for n in report.notes]
    return lines


def _upstream(first) -> list[str]:
    if not first.unaligned_upstream:
        return []
    names = ", ".join(first.unaligned_upstream[:4]) + (" ..." if len(first.unaligned_upstream) > 4 else "")
    return [f"  [yellow]{len(first.unaligned_upstream)} reference node(s) between it and the aligned layers feeding "
            f"it could not be aligned ({escape(names)}): the error may start there[/]"]


def bisect_lines(report: BisectReport) -> list[str]:
    first = report.first
    lines = []
    if first is None:
        lines.append(f"[green]no diverging layer:[/] {escape(report.remedy)}")
    else:
        before = "-" if first.drop_db is None else _db(first.sqnr_db + first.drop_db)
        iso = _db(first.isolated["sqnr_db"]) if first.isolated else f"n/a ({first.isolated_note or 'not measured'})"
        lines += [f"[red]first diverging layer:[/] {escape(first.node)} ({first.op}), reference tensor "
                  f"{escape(first.tensor)}, runtime tensor {escape(first.runtime_tensor)} ({first.runtime_op}, "
                  f"matched by {first.matched_by})" + (f"; the runtime computes it together with "
                                                        f"{escape(', '.join(first.fused))}" if first.fused else ""),
                  f"  SQNR of its inputs {before} dB -> {_db(first.sqnr_db)} dB cumulative; isolated {escape(iso)}; "
                  f"max abs {first.max_abs:.3g}, cosine {first.cosine:.6f}",
                  *_upstream(first), f"  remedy: {escape(report.remedy)}"]
    c = report.confirmation
    if c:
        if c.get("passed_after") is None:
            lines.append(f"  [yellow]not confirmed:[/] {escape(c.get('note', ''))}")
        else:
            yes = "[green]yes[/]" if c["passed_after"] and c["kept"] else "[red]no[/]"
            if c["passed_before"]:
                lines.append("  the artifact already passes the parity gate on these inputs: the divergence is damped "
                             "before the outputs")
            lines.append(f"  keeping {escape(c['node'])} in float restores parity: {yes}")
            lines.append(f"    artifact:       {escape(c['before'])}")
            lines.append(f"    re-converted:   {escape(c['after'])}" + (f" ({escape(c['note'])})" if c["note"] else ""))
    lines += stage_lines(report)
    lines += [f"[yellow]note:[/] {escape(n)}" for n in report.notes]
    return lines


def stage_lines(report: BisectReport) -> list[str]:
    """Which conversion step introduced the error, then one line per step."""
    if report.stages is None:
        return []
    st = report.stages
    if st.first_failing:
        lines = [f"[red]stage:[/] {escape(st.first_failing)} is the first conversion step whose product fails the "
                 f"{report.diff.tolerance_class} tolerance"]
    elif any(r.passed is None for r in st.stages):
        lines = ["[yellow]stage: no evaluated step fails the tolerance; some could not be evaluated[/]"]
    else:
        lines = [f"[green]stage: every conversion step's product passes the {report.diff.tolerance_class} "
                 "tolerance[/]"]
    for r in st.stages:
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}[r.passed]
        sqnr = "-" if r.sqnr_db is None else _db(r.sqnr_db) + ("" if r.sqnr_db >= SQNR_EXACT else " dB")
        note = f" ({escape(r.note)})" if r.note else ""
        lines.append(f"  {r.index}. {escape(r.name):<10} {r.runs_as:<14} {r.origin:<9} {mark}  outputs SQNR {sqnr}"
                     f"  {escape(r.summary)}{note}")
    return lines
