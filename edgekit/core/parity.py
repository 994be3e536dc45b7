"""The parity gate: does a converted artifact compute what the reference computes?

Metrics per output: max/mean absolute difference and cosine similarity, plus by output kind:

* ``probability``/``logits`` with one channel (a binary map): mask IoU (threshold 0.5, or 0 for logits)
  *and* cosine similarity;
* ``probability``/``logits`` with several classes (channel axis > 1) and integer ``labels`` maps: the
  arg-max label maps are compared class by class: pixel agreement and mean IoU over the classes present in
  either side (class 1 everywhere vs class 2 everywhere is agreement 0, IoU 0); probabilities/logits are
  checked by cosine too;
* ``image``: PSNR.

Each precision class has its tolerances; float targets must match values tightly, quantized targets are
judged by the task metric. A failed gate is an error (:class:`~edgekit.errors.ParityError`), never a
warning. Non-finite values are errors that name their side: in the inputs or the reference outputs they
are the user's data or model (:class:`~edgekit.errors.InputError`), in the candidate they fail the gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from edgekit.errors import InputError, ParityError

#: output kinds whose values are a class map (one class per pixel, or per sample for a classifier)
MAP_KINDS = ("probability", "logits", "labels")


@dataclass(frozen=True)
class Tolerance:
    """Limits for one precision class. ``None`` means the metric is not gated."""

    max_abs: float | None = None       # scaled by max(1, |reference| range)
    min_iou: float | None = None       # binary mask IoU, or mean IoU over classes of a label map
    min_psnr: float | None = None
    min_cosine: float | None = None    # plain tensors
    #: cosine of probability/logit maps (checked on top of their IoU)
    min_map_cosine: float | None = None
    #: pixel agreement of multi-class label maps
    min_agreement: float | None = None


TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-3, min_iou=0.995, min_psnr=50.0, min_cosine=0.9999, min_map_cosine=0.9999,
                      min_agreement=0.999),
    "fp16": Tolerance(max_abs=3e-2, min_iou=0.98, min_psnr=35.0, min_cosine=0.999, min_map_cosine=0.999,
                      min_agreement=0.99),
    "int8": Tolerance(max_abs=None, min_iou=0.97, min_psnr=28.0, min_cosine=0.98, min_map_cosine=0.98,
                      min_agreement=0.98),
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
    #: multi-class label maps: share of pixels with the same class, and the classes compared
    agreement: float | None = None
    classes: int | None = None
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
    #: the temporal check (:class:`~edgekit.core.temporal.TemporalReport`), when one was run
    temporal: object | None = None

    @property
    def passed(self) -> bool:
        return not any(o.failures for o in self.outputs) and (
            self.temporal is None or self.temporal.passed or not self.temporal.enforced)

    @property
    def failures(self) -> list[str]:
        temporal = [f"{o.name}: {f}" for o in self.temporal.outputs for f in o.failures] \
            if self.temporal is not None and self.temporal.enforced else []
        return [f"{o.name}: {f}" for o in self.outputs for f in o.failures] + temporal

    def summary(self) -> str:
        parts = []
        for o in self.outputs:
            s = f"{o.name}: max|d|={o.max_abs:.2g} cos={o.cosine:.5f}"
            if o.agreement is not None:
                s += f" agreement={o.agreement:.4f}"
            if o.iou is not None:
                s += f" {'mean IoU' if o.classes else 'IoU'}={o.iou:.4f}"
            if o.psnr is not None:
                s += f" PSNR={o.psnr:.1f}dB"
            parts.append(s)
        return ("PASS " if self.passed else "FAIL ") + "; ".join(parts)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "precision_class": self.precision_class,
                "tolerance": asdict(self.tolerance), "samples": self.samples,
                "outputs": [asdict(o) for o in self.outputs], "kept_float": self.kept_float,
                "verified_by": self.verified_by,
                **({"temporal": self.temporal.to_dict()} if self.temporal is not None else {})}

    def raise_if_failed(self, what: str) -> None:
        """Raises:
            ParityError: when any output failed its tolerance row.
        """
        if not self.passed:
            raise ParityError(f"parity gate failed for {what}: " + "; ".join(self.failures), report=self)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def class_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """Compare two integer label maps class by class.

    Returns (pixel agreement, mean IoU over the classes present in either map, number of those classes).
    """
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    agreement = float(np.mean(a == b)) if a.size else 1.0
    classes = np.union1d(a, b)
    ious = [float(np.sum((a == k) & (b == k)) / np.sum((a == k) | (b == k))) for k in classes]
    return agreement, (float(np.mean(ious)) if ious else 1.0), len(classes)


def psnr(ref: np.ndarray, x: np.ndarray, peak: float | None = None) -> float:
    peak = peak if peak is not None else max(float(ref.max() - ref.min()), 1e-6)
    mse = float(np.mean((ref.astype(np.float64) - x) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def count_nonfinite(x: np.ndarray) -> int:
    """Number of NaN/Inf values of a numeric array (0 for integer arrays)."""
    x = np.asarray(x)
    return int(x.size - np.count_nonzero(np.isfinite(x))) if np.issubdtype(x.dtype, np.inexact) else 0


def _nonfinite_detail(arrays: list[np.ndarray]) -> str:
    x = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    bad = [i for i, a in enumerate(arrays) if count_nonfinite(a)]
    return (f"{n_nan + n_inf} non-finite value(s) of {x.size} ({n_nan} NaN, {n_inf} Inf) "
            f"in {len(bad)} of {len(arrays)} sample(s), first sample {bad[0]}")


def require_finite_inputs(samples: list[dict[str, np.ndarray]], what: str = "the input data") -> None:
    """Refuse input samples holding NaN/Inf: no gate can prove anything on them.

    Raises:
        InputError: naming ``what`` (e.g. the calibration file) and the input that holds them.
    """
    names = list(samples[0]) if samples else []
    for name in names:
        arrays = [s[name] for s in samples]
        if any(count_nonfinite(a) for a in arrays):
            raise InputError(f"{what} for input '{name}' holds {_nonfinite_detail(arrays)}; "
                             "inputs must be finite numbers")


def require_finite_reference(refs: list[dict[str, np.ndarray]], what: str = "the source model") -> None:
    """Refuse reference outputs holding NaN/Inf: the user's source model is broken on these inputs,
    and no target can be blamed for it.

    Raises:
        InputError: naming the output, the count and that the source model produced them.
    """
    names = list(refs[0]) if refs else []
    for name in names:
        arrays = [r[name] for r in refs]
        if any(count_nonfinite(a) for a in arrays):
            raise InputError(f"{what} itself (the fp32 reference, before any conversion) outputs non-finite "
                             f"values on finite inputs: output '{name}' has {_nonfinite_detail(arrays)}; "
                             "fix the source model: no target can be checked against it")


#: confidence with which a classifier that agreed on every gate sample is shown to meet ``min_agreement``
CLASSIFIER_CONFIDENCE = 0.95


def one_decision_per_sample(spec) -> bool:
    """Whether an output makes one class decision per sample (a classifier): then each gate sample is a single
    yes/no, and a handful of samples proves little about the agreement rate."""
    if spec.kind not in MAP_KINDS or not spec.shape:
        return False
    per_sample = [d for d in spec.shape[1:] if d != 1]  # (1, 1000): 1000 scores; (1, 1): one label
    return len(per_sample) <= 1 and (spec.kind == "labels" or (len(spec.shape) == 2 and spec.shape[1] > 1))


def samples_needed(io, precision_class: str, confidence: float = CLASSIFIER_CONFIDENCE) -> int:
    """Gate samples needed for a classifier whose only guard is top-1 agreement (no max-abs check on its
    scores, as for quantized targets): the smallest n such that agreeing on all n shows agreement >=
    ``min_agreement`` with ``confidence`` (``min_agreement ** n <= 1 - confidence``; 149 for 0.98). 0 when no
    output is a classifier or the scores themselves are checked."""
    import math

    tol = TOLERANCES[precision_class]
    if tol.max_abs is not None or not tol.min_agreement or tol.min_agreement >= 1:
        return 0
    if not any(one_decision_per_sample(s) for s in io.outputs):
        return 0
    return math.ceil(math.log(1 - confidence) / math.log(tol.min_agreement))


def _class_axis(spec, ndim: int) -> int | None:
    """Axis of the class scores in one sample (batch dim kept), or None when there is none."""
    if ndim == 2:  # (batch, classes): a classifier
        return 1
    if ndim == 4:  # an image-shaped map: its channel axis
        return 3 if spec.layout == "NHWC" else 1
    return None  # no channel axis to read classes from: a binary map


def _label_maps(y: np.ndarray, spec) -> tuple[np.ndarray, bool]:
    """One sample's output -> (label map, is multi-class). Binary maps come back as booleans."""
    if spec.kind == "labels":
        return np.rint(y).astype(np.int64), True
    axis = _class_axis(spec, y.ndim)
    if axis is not None and y.shape[axis] > 1:
        return y.argmax(axis=axis), True
    return (y > 0) if spec.kind == "logits" else (y > 0.5), False


def _cosine(r: np.ndarray, c: np.ndarray) -> float:
    denom = np.linalg.norm(r) * np.linalg.norm(c)
    return float((r * c).sum() / denom) if denom > 0 else float(np.allclose(r, c))


def compare_outputs(refs: list[dict[str, np.ndarray]], cands: list[dict[str, np.ndarray]], io,
                    precision_class: str) -> ParityReport:
    """Compare per-sample outputs of reference and candidate against the tolerance row.

    Raises:
        InputError: the reference outputs hold NaN/Inf (the source model's fault, not the candidate's).
    """
    tol = TOLERANCES[precision_class]
    require_finite_reference([{s.name: r[s.name] for s in io.outputs} for r in refs])
    outputs = []
    for spec in io.outputs:
        r = np.stack([s[spec.name] for s in refs]).astype(np.float64)
        c = np.stack([s[spec.name] for s in cands]).astype(np.float64)
        if r.shape != c.shape:
            outputs.append(OutputParity(spec.name, spec.kind, float("inf"), float("inf"), 0.0,
                                        failures=[f"shape {c.shape[1:]} != reference {r.shape[1:]}"]))
            continue
        bad = count_nonfinite(c)
        if bad:
            outputs.append(OutputParity(spec.name, spec.kind, float("inf"), float("inf"), 0.0, failures=[
                f"artifact output {spec.name} has {bad} non-finite value(s) of {c.size} (NaN/Inf; "
                "the reference has none)"]))
            continue
        d = np.abs(r - c)
        cos = _cosine(r, c)
        o = OutputParity(spec.name, spec.kind, float(d.max()), float(d.mean()), cos)
        scale = max(1.0, float(np.abs(r).max()))
        if tol.max_abs is not None and spec.kind != "labels" and o.max_abs > tol.max_abs * scale:
            o.failures.append(f"max abs diff {o.max_abs:.3g} > {tol.max_abs * scale:.3g}")
        if spec.kind in MAP_KINDS:
            _compare_maps(o, r, c, spec, tol)
        elif spec.kind == "image":
            o.psnr = psnr(r, c)
            if tol.min_psnr is not None and o.psnr < tol.min_psnr:
                o.failures.append(f"PSNR {o.psnr:.1f} dB < {tol.min_psnr}")
        elif tol.min_cosine is not None and cos < tol.min_cosine:
            o.failures.append(f"cosine {cos:.5f} < {tol.min_cosine}")
        outputs.append(o)
    return ParityReport(precision_class, tol, len(refs), outputs)


def _compare_maps(o: OutputParity, r: np.ndarray, c: np.ndarray, spec, tol: Tolerance) -> None:
    """Class-map metrics of one output (``r``/``c``: samples x one sample's output)."""
    pairs = [(_label_maps(a, spec), _label_maps(b, spec)) for a, b in zip(r, c)]
    multi = pairs[0][0][1] if pairs else False
    if multi:
        stats = [class_agreement(a, b) for (a, _), (b, _) in pairs]
        o.agreement = float(np.mean([s[0] for s in stats]))
        ious = [s[1] for s in stats]
        o.classes = int(max(s[2] for s in stats))
        if tol.min_agreement is not None and o.agreement < tol.min_agreement:
            what = "top-1 agreement" if one_decision_per_sample(spec) else "pixel agreement"
            o.failures.append(f"{what} {o.agreement:.4f} < {tol.min_agreement}")
    else:
        ious = [mask_iou(a, b) for (a, _), (b, _) in pairs]
    o.iou, o.iou_min = float(np.mean(ious)), float(np.min(ious))
    label = "mean class IoU" if multi else "mask IoU"
    if tol.min_iou is not None and o.iou < tol.min_iou:
        o.failures.append(f"{label} {o.iou:.4f} < {tol.min_iou}")
    if spec.kind != "labels" and tol.min_map_cosine is not None and o.cosine < tol.min_map_cosine:
        o.failures.append(f"cosine {o.cosine:.5f} < {tol.min_map_cosine}")


def task_score(ref: np.ndarray, cand: np.ndarray, spec) -> float:
    """One sample's task metric in [0, 1] (higher is better), as the gate computes it: mask IoU or mean class
    IoU for map kinds, cosine otherwise. Quantizers that search for a setting (NNCF's accuracy control) use it
    so they optimise what the gate will judge.
    """
    o = OutputParity(spec.name, spec.kind, 0.0, 0.0, _cosine(ref.astype(np.float64)[None],
                                                              np.asarray(cand, np.float64)[None]))
    if spec.kind in MAP_KINDS:
        _compare_maps(o, ref.astype(np.float64)[None], np.asarray(cand, np.float64)[None], spec, TOLERANCES["int8"])
        return float(o.iou)
    return o.cosine


def check(reference, candidate, samples: list[dict[str, np.ndarray]], precision_class: str,
          ref_outputs: list[dict[str, np.ndarray]] | None = None, inputs_from: str = "the input data") -> ParityReport:
    """Run both sessions on ``samples`` and compare. ``ref_outputs`` reuses reference results.

    Raises:
        ParityError: no samples.
        InputError: the samples (named by ``inputs_from``) or the reference outputs hold NaN/Inf.
    """
    if not samples:
        raise ParityError("parity gate needs at least one input sample")
    require_finite_inputs(samples, inputs_from)
    refs = ref_outputs if ref_outputs is not None else [reference.run(s) for s in samples]
    require_finite_reference(refs)
    cands = [candidate.run(s) for s in samples]
    report = compare_outputs(refs, cands, candidate.io, precision_class)
    report.verified_by = candidate.verified_by
    return report
