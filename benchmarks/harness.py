"""Shared by the ``bench_*.py`` scripts: run :func:`edgekit.apps.profiling.matrix.run_matrix` on the bundled
student, print the markdown table and save it under ``benchmarks/results/``."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from edgekit.apps.profiling.matrix import BUNDLED_MODEL, MatrixRow, run_matrix

RESULTS = Path(__file__).resolve().parent / "results"


def markdown(rows: list[MatrixRow], threads: tuple[int, ...] = (1, 2)) -> str:
    head = "| target | delegate | input | size KiB | parity | mask IoU vs fp32 | max abs diff | convert s |" + \
        "".join(f" p50 ms {n}T |" for n in threads)
    lines = [head, "|" + "---|" * (8 + len(threads))]
    for r in rows:
        iou = "-" if r.iou is None else f"{r.iou:.4f}"
        lat = "".join(f" {r.p50_ms[n]:.2f} |" if n in r.p50_ms else " - |" for n in threads)
        parity = r.parity if not r.error else f"{r.parity}: {r.error[:60]}"
        lines.append(f"| {r.target} | {r.delegate} | {r.resolution} | {r.size_kib:.0f} | {parity} | {iou} | "
                     f"{r.max_abs:.2g} | {r.convert_s:.1f} |{lat}")
    return "\n".join(lines)


def bench_main(name: str, targets: list[str], delegates: dict[str, list[str]] | None = None,
               resolutions: tuple[tuple[int, int], ...] = ((256, 256), (144, 256)), runs: int = 50,
               threads: tuple[int, ...] = (1, 2)) -> list[MatrixRow]:
    """Entry point of the ``benchmarks/bench_*.py`` scripts: measure, print and save a markdown table."""
    from rich.console import Console

    console = Console(stderr=True)
    out_dir = Path("out") / "bench" / name
    with console.status(name) as status:
        rows = run_matrix(BUNDLED_MODEL, targets, list(resolutions), out_dir, threads=threads, runs=runs,
                          delegates=delegates, progress=lambda m: status.update(f"{name}: {m}"))
    table = markdown(rows, threads)
    timing = f"median of {runs} runs" if threads else "no runtime here: parity by the MIL reference evaluator"
    header = f"### {name}: bundled portrait-seg student, {timing} ({platform.machine()}, " \
             f"{os.cpu_count()} cores)\n\n"
    print(header + table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(header + table + "\n")
    return rows
