"""The parity gate: does a converted artifact compute what the reference computes?

Metrics per output: max/mean absolute difference, cosine similarity, and by output kind mask IoU
(``probability``/``logits`` outputs of segmenters) or PSNR (``image`` outputs). Each precision class
has its tolerances; float targets must match values tightly, quantized targets are judged by the
task metric. A failed gate is an error (:class:`~edgekit.errors.ParityError`), never a warning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from edgekit.errors import ParityError


@dataclass(frozen=True)
class Tolerance:
    """Limits for one precision class. ``None`` means the metric is not gated."""

    max_abs: float | None = None       # scaled by max(1, |reference| range)
    min_iou: float | None = None
    min_psnr: float | None = None
    min_cosine: float | None = None


TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-3, min_iou=0.995, min_psnr=50.0, min_cosine=0.9999),
    "fp16": Tolerance(max_abs=3e-2, min_iou=0.98, min_psnr=35.0, min_cosine=0.999),
    "int8": Tolerance(max_abs=None, min_iou=0.97, min_psnr=28.0, min_cosine=0.98),
}


@dataclass
class OutputParity:
    name: str
    kind: str
    max_abs: float
    mean_abs: float
    cosine: float
    iou: float | None = None
    iou_min: float | None = None
    psnr: float | None = None
    failures: list[str] = field(default_factory=list)


@dataclass
class ParityReport:
    """Result of comparing a candidate session against a reference session."""

    precision_class: str
    tolerance: Tolerance
    samples: int
    outputs: list[OutputParity]
    kept_float: list[str] = field(default_factory=list)
    #: what computed the candidate's outputs (the artifact's runtime, or a reference evaluator)
    verified_by: str = "runtime"

    @property
    def passed(self) -> bool:
        return not any(o.failures for o in self.outputs)

    @property
    def failures(self) -> list[str]:
        return [f"{o.name}: {f}" for o in self.outputs for f in o.failures]

    def summary(self) -> str:
        parts = []
        for o in self.outputs:
            s = f"{o.name}: max|d|={o.max_abs:.2g} cos={o.cosine:.5f}"
            if o.iou is not None:
                s += f" IoU={o.iou:.4f}"
            if o.psnr is not None:
                s += f" PSNR={o.psnr:.1f}dB"
            parts.append(s)
        return ("PASS " if self.passed else "FAIL ") + "; ".join(parts)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "precision_class": self.precision_class,
                "tolerance": asdict(self.tolerance), "samples": self.samples,
                "outputs": [asdict(o) for o in self.outputs], "kept_float": self.kept_float,
                "verified_by": self.verified_by}

    def raise_if_failed(self, what: str) -> None:
        if not self.passed:
            raise ParityError(f"parity gate failed for {what}: " + "; ".join(self.failures), report=self)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def psnr(ref: np.ndarray, x: np.ndarray, peak: float | None = None) -> float:
    peak = peak if peak is not None else max(float(ref.max() - ref.min()), 1e-6)
    mse = float(np.mean((ref.astype(np.float64) - x) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def _binary(y: np.ndarray, kind: str) -> np.ndarray:
    if kind == "logits":
        return y > 0
    if y.ndim == 4 and y.shape[1] > 1:  # class probabilities: the arg-max map
        return y.argmax(axis=1)
    return y > 0.5


def compare_outputs(refs: list[dict[str, np.ndarray]], cands: list[dict[str, np.ndarray]], io,
                    precision_class: str) -> ParityReport:
    """Compare per-sample outputs of reference and candidate against the tolerance row."""
    tol = TOLERANCES[precision_class]
    outputs = []
    for spec in io.outputs:
        r = np.stack([s[spec.name] for s in refs]).astype(np.float64)
        c = np.stack([s[spec.name] for s in cands]).astype(np.float64)
        if r.shape != c.shape:
            outputs.append(OutputParity(spec.name, spec.kind, float("inf"), float("inf"), 0.0,
                                        failures=[f"shape {c.shape[1:]} != reference {r.shape[1:]}"]))
            continue
        d = np.abs(r - c)
        denom = np.linalg.norm(r) * np.linalg.norm(c)
        cos = float((r * c).sum() / denom) if denom > 0 else float(np.allclose(r, c))
        o = OutputParity(spec.name, spec.kind, float(d.max()), float(d.mean()), cos)
        scale = max(1.0, float(np.abs(r).max()))
        if tol.max_abs is not None and o.max_abs > tol.max_abs * scale:
            o.failures.append(f"max abs diff {o.max_abs:.3g} > {tol.max_abs * scale:.3g}")
        if spec.kind in ("probability", "logits"):
            ious = [mask_iou(_binary(a, spec.kind), _binary(b, spec.kind)) for a, b in zip(r, c)]
            o.iou, o.iou_min = float(np.mean(ious)), float(np.min(ious))
            if tol.min_iou is not None and o.iou < tol.min_iou:
                o.failures.append(f"mask IoU {o.iou:.4f} < {tol.min_iou}")
        elif spec.kind == "image":
            o.psnr = psnr(r, c)
            if tol.min_psnr is not None and o.psnr < tol.min_psnr:
                o.failures.append(f"PSNR {o.psnr:.1f} dB < {tol.min_psnr}")
        elif tol.min_cosine is not None and cos < tol.min_cosine:
            o.failures.append(f"cosine {cos:.5f} < {tol.min_cosine}")
        outputs.append(o)
    return ParityReport(precision_class, tol, len(refs), outputs)


def check(reference, candidate, samples: list[dict[str, np.ndarray]], precision_class: str,
          ref_outputs: list[dict[str, np.ndarray]] | None = None) -> ParityReport:
    """Run both sessions on ``samples`` and compare. ``ref_outputs`` reuses reference results."""
    if not samples:
        raise ParityError("parity gate needs at least one input sample")
    refs = ref_outputs if ref_outputs is not None else [reference.run(s) for s in samples]
    cands = [candidate.run(s) for s in samples]
    report = compare_outputs(refs, cands, candidate.io, precision_class)
    report.verified_by = candidate.verified_by
    return report
