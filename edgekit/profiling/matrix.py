"""Convert one model to many targets and resolutions, then measure size, parity and latency.

Shared by ``edgekit demo`` and the scripts in ``benchmarks/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit import calibration
from edgekit.conversion import convert
from edgekit.converters import registry
from edgekit.errors import EdgekitError, MissingDependencyError
from edgekit.profiling.latency import measure
from edgekit.runtimes.registry import open_session

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "models" / "portrait-seg" / "student.onnx"


@dataclass
class MatrixRow:
    target: str
    resolution: str
    size_kib: float
    parity: str
    iou: float | None
    max_abs: float
    convert_s: float
    p50_ms: dict[int, float]
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def available_targets() -> list[str]:
    """Every registered target whose backend is installed here."""
    out = []
    for target in registry.all_targets():
        try:
            registry.get(target.split("-")[0]).check_available()
        except MissingDependencyError:
            continue
        out.append(target)
    return out


def run_matrix(model: str | Path, targets: list[str], resolutions: list[tuple[int, int]], out_dir: Path,
               threads: tuple[int, ...] = (1, 2), runs: int = 50, progress=None) -> list[MatrixRow]:
    """Convert ``model`` to each target at each resolution; measure what the README tables show."""
    rows = []
    for h, w in resolutions:
        for target in targets:
            if progress:
                progress(f"{target} at {h}x{w}")
            t0 = time.perf_counter()
            try:
                art = convert(model, target, out_dir / f"{h}x{w}" / target, input_shapes={"": (1, 3, h, w)})
            except EdgekitError as e:
                rows.append(MatrixRow(target, f"{h}x{w}", 0, "FAIL", None, float("nan"), 0, {}, str(e)))
                continue
            convert_s = time.perf_counter() - t0
            out = art.parity["outputs"][0]
            sample = calibration.samples(art.source_io, None, n=1, seed=11)[0]
            p50 = {}
            for n in threads:
                sess = open_session(art, threads=n)
                p50[n] = measure(sess, sample, runs=runs).p50_ms
                sess.close()
            rows.append(MatrixRow(target, f"{h}x{w}", art.size_bytes / 1024, "pass", out["iou"], out["max_abs"],
                                  convert_s, p50))
    return rows


def markdown(rows: list[MatrixRow], threads: tuple[int, ...] = (1, 2)) -> str:
    head = "| target | input | size KiB | parity | mask IoU vs fp32 | max abs diff | convert s | " + \
        " | ".join(f"p50 ms {n}T" for n in threads) + " |"
    lines = [head, "|" + "---|" * (7 + len(threads))]
    for r in rows:
        iou = "-" if r.iou is None else f"{r.iou:.4f}"
        lat = " | ".join(f"{r.p50_ms[n]:.2f}" if n in r.p50_ms else "-" for n in threads)
        lines.append(f"| {r.target} | {r.resolution} | {r.size_kib:.0f} | {r.parity} | {iou} | {r.max_abs:.2g} | "
                     f"{r.convert_s:.1f} | {lat} |")
    return "\n".join(lines)
