"""Convert one model to many targets and resolutions, then measure size, parity and latency.

The API behind ``edgekit demo``: :func:`run_matrix` returns one :class:`MatrixRow` per (target, delegate,
resolution). The scripts in ``benchmarks/`` print and save it as markdown (``benchmarks/harness.py``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekit.apps.profiling.latency import measure
from edgekit.backends import registry
from edgekit.backends.registry import open_session
from edgekit.core import calibration
from edgekit.core.conversion import convert
from edgekit.core.parity import check
from edgekit.errors import EdgekitError, MissingDependencyError

BUNDLED_MODEL = Path(__file__).resolve().parents[3] / "models" / "portrait-seg" / "student.onnx"


@dataclass
class MatrixRow:
    target: str
    delegate: str
    resolution: str
    size_kib: float = 0.0
    parity: str = "FAIL"
    iou: float | None = None
    max_abs: float = float("nan")
    convert_s: float = 0.0
    p50_ms: dict[int, float] = field(default_factory=dict)
    error: str = ""
    note: str = ""  # e.g. "latency needs macOS": converted and verified, but not timed here

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
               threads: tuple[int, ...] = (1, 2), runs: int = 50, delegates: dict[str, list[str]] | None = None,
               progress=None) -> list[MatrixRow]:
    """Convert ``model`` to each target at each resolution and measure it.

    ``delegates`` maps a target to the delegates to measure it on (default ``["cpu"]``); rows for a
    non-default delegate re-run the parity check on that delegate.
    """
    rows = []
    for h, w in resolutions:
        for target in targets:
            if progress:
                progress(f"{target} at {h}x{w}")
            t0 = time.perf_counter()
            try:
                art = convert(model, target, out_dir / f"{h}x{w}" / target, input_shapes={"": (1, 3, h, w)})
            except EdgekitError as e:
                rows.append(MatrixRow(target, "cpu", f"{h}x{w}", error=str(e)))
                continue
            convert_s = time.perf_counter() - t0
            for delegate in (delegates or {}).get(target, ["cpu"]):
                rows.append(_measure(art, delegate, f"{h}x{w}", convert_s, threads, runs))
    return rows


def _measure(art, delegate: str, resolution: str, convert_s: float, threads, runs: int) -> MatrixRow:
    row = MatrixRow(str(art.target), delegate, resolution, art.size_bytes / 1024, convert_s=convert_s)
    out = art.parity["outputs"][0]
    row.parity, row.iou, row.max_abs = "pass", out["iou"], out["max_abs"]
    sample = calibration.samples(art.source_io, None, n=1, seed=11)[0]
    from edgekit.backends.registry import session_class
    from edgekit.errors import RuntimeUnavailableError

    try:
        session_class(art.target.format).check_delegate(delegate)
    except RuntimeUnavailableError as e:  # a runtime this OS lacks (Core ML off macOS): verified, not timed
        row.note = str(e).split(";")[0]
        return row
    try:
        if delegate != "cpu":
            data = calibration.samples(art.source_io, None, n=8, seed=12)
            from edgekit.api import reference_session

            report = check(reference_session(art)[0], open_session(art, 1, delegate), data,
                           art.target.tolerance_class)
            o = report.outputs[0]
            row.parity, row.iou, row.max_abs = "pass" if report.passed else "FAIL", o.iou, o.max_abs
        for n in threads:
            sess = open_session(art, threads=n, delegate=delegate)
            row.p50_ms[n] = measure(sess, sample, runs=runs).p50_ms
            sess.close()
    except EdgekitError as e:
        row.error = str(e)
    return row
