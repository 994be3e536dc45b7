"""Wall time of the default `edgekit profile --device local-cpu` sweep of the bundled student, and its
Pareto table. Writes profiles/configs/local-cpu.json (the app config the video pipeline uses)."""

import shutil
from pathlib import Path

from edgekit.apps.profiling.profile import profile_device

if __name__ == "__main__":
    out = Path("out/bench/profile")
    shutil.rmtree(out / "local-cpu", ignore_errors=True)  # measure a full sweep, not a resumed one
    result = profile_device("local-cpu", out_dir=out)
    front = {p.key for p in result.choice.front}
    lines = [f"### edgekit profile --device local-cpu: {len(result.points)} points in {result.wall_s:.0f} s "
             f"(budget {result.choice.budget_ms:.1f} ms)", "",
             "| point | p50 ms | p90 ms | peak MB | mask IoU vs fp32 | |", "|---|---|---|---|---|---|"]
    for p in sorted(result.points, key=lambda p: p.p50_ms or 1e9):
        mark = "**chosen**" if p.key == result.choice.chosen.key else (
            "fallback" if result.choice.fallback and p.key == result.choice.fallback.key else
            ("Pareto" if p.key in front else ""))
        if p.ok:
            lines.append(f"| {p.label()} | {p.p50_ms:.2f} | {p.p90_ms:.2f} | {p.peak_memory_mb:.0f} | "
                         f"{p.quality:.4f} | {mark} |")
        else:
            lines.append(f"| {p.label()} | - | - | - | - | error: {p.error[:50]} |")
    lines += ["", f"Choice: {result.choice.why}"]
    text = "\n".join(lines)
    print(text)
    Path("benchmarks/results").mkdir(exist_ok=True)
    Path("benchmarks/results/profile-local-cpu.md").write_text(text + "\n")
