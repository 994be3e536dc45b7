"""Latency prediction for a device from the measurements already taken on it (in the spirit of nn-Meter).

**Kernels.** A model at a resolution is cut into the kernels a runtime runs (:func:`kernels`): every ONNX node
of the prepared fp32 graph (the one every converter starts from), with an activation or batch norm that follows a
convolution as its only consumer fused into that convolution (each runtime edgekit targets fuses those). Each
kernel has its op type, its input/output shapes, its multiply-accumulates and the bytes it moves (inputs, outputs
and weights, fp32). A configuration's features (:data:`FEATURES`) sum them by kind: GMACs of dense convolutions,
of depthwise convolutions and of matrix products, MB moved by convolutions and by the other kernels, the number
of kernels (per-kernel launch overhead) and a constant (per-inference overhead).

**Predictor.** Three layers, each fitted by non-negative least squares on relative error. (1) A shared model
``y = s[target, delegate] * t[threads] * r[group] * (x . w)``: ``w`` (non-negative, per feature) is the device's
cost of each kind of work, ``s`` how fast each runtime and precision does it, ``t`` what more threads buy, ``r`` a
per-(target, delegate, threads) correction shrunk towards 1. (2) Per-(target, delegate, threads) feature costs
fitted on that group's points, shrunk towards the shared model's (a runtime's costs need not be proportional to
another's: one may be better at thin layers). (3) For a model already measured in that group, a calibration on
its own points (a line through predicted vs measured, ridge towards their mean ratio). Training rows are the
device's ``points.jsonl`` (any model whose artifacts are still there).

**Per-kernel method** (:mod:`edgekit.apps.profiling.kernels`). Where the profiler also timed each kernel (a
local device: every measured point's kernels, from the runtime's own profiler, go to ``OUT/DEVICE/kernels.jsonl``,
see :func:`profile_kernels`), per-kind kernel latency models are fitted on them and a configuration is predicted
as the sum of its kernels' predictions plus a fitted per-run overhead. Its kernels' structure comes from that
file, or from the runtime's graph of the model's artifact made on this machine. ``edgekit predict`` states the
expected error of both methods and uses the one whose error is lower for the case at hand (a measured model:
leave-one-out; a model never measured there: leave-one-model-out), both errors taken on the same configurations
(those both methods could predict: :func:`compare_methods`).

**Expected error.** Leave-one-out over the device's own points (each predicted from all the others): the share
within +-10% and the median error are printed with every prediction; with several models measured, the same
leave-one-model-out (a model never seen) is stated too.

**Pruning a sweep** (``edgekit profile --prune``, :func:`pruned_order`): a seed set is measured (each target and
delegate once, plus one reference target at every thread count and resolution), then only points whose
optimistic prediction (latency lowered by the error margin, quality raised by its uncertainty) could outrank the
best measured point that fits the budget, or the best fitting point of another runtime (the fallback), are
measured, one at a time, refitting after each. Points surely over the budget or surely outranked are not measured.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import InputError

#: the features of one configuration (a model at a resolution), in this order
FEATURES = ("one", "kernels", "conv_gmacs", "dw_gmacs", "gemm_gmacs", "conv_mb", "other_mb")
#: ops fused into the convolution they follow (when they are that convolution's only consumer)
FUSABLE = {"Relu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid", "LeakyRelu", "BatchNormalization", "Tanh",
           "PRelu"}
#: ops that move no data at run time (shape bookkeeping)
FREE = {"Constant", "Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Gather"}
#: the share of points within this relative error is the headline of the expected error
WITHIN = 0.10


@dataclass
class Kernel:
    name: str
    op: str
    kind: str               # conv, dwconv, gemm, other
    inputs: list[list[int]]
    output: list[int]
    macs: float
    bytes: float
    fused: list[str] = field(default_factory=list)


def _shapes(model) -> dict[str, list[int]]:
    g = model.graph
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = dims
    for init in g.initializer:
        out[init.name] = list(init.dims)
    return out


def _n(shape: list[int] | None) -> int:
    if not shape or any(d <= 0 for d in shape):
        return 0
    return int(np.prod(shape))


def kernels(model) -> list[Kernel]:
    """The kernels of a prepared ONNX model (concrete input shapes; shapes are inferred here), fused as a
    runtime would. ``model``: an ``onnx.ModelProto`` or a path.

    Raises:
        InputError: the model cannot be read or its shapes cannot be inferred.
    """
    import onnx

    try:
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model))
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # noqa: BLE001 (onnx raises many types; named in the message)
        raise InputError(f"cannot read the model's graph for latency prediction: {type(e).__name__}: {e}") from e
    shapes = _shapes(model)
    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    for o in model.graph.output:  # a graph output is read by the caller: what produces it cannot absorb the next op
        consumers.setdefault(o.name, []).append(None)
    out: list[Kernel] = []
    by_output: dict[str, Kernel] = {}
    for node in model.graph.node:
        if node.op_type in FREE:
            continue
        src = node.input[0] if node.input else ""
        if node.op_type in FUSABLE and src in by_output and len(consumers.get(src, [])) == 1:
            k = by_output.pop(src)  # fused: the convolution writes this op's output directly
            k.fused.append(node.op_type)
            by_output[node.output[0]] = k
            continue
        ins = [shapes.get(i) or [] for i in node.input if i]
        o = shapes.get(node.output[0]) or [] if node.output else []
        data_in = sum(_n(shapes.get(i)) for i in node.input if i and i not in inits)
        weights = sum(_n(shapes.get(i)) for i in node.input if i in inits)
        kind, macs = "other", float(_n(o))
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv") and len(ins) > 1 and ins[1]:
            w = ins[1]
            group = int(attrs.get("group", 1))
            k_elems = _n(w[2:]) or 1
            if node.op_type == "ConvTranspose":
                macs = float(_n(ins[0]) * w[1] * k_elems)
            else:
                macs = float(_n(o) * (w[1] if len(w) > 1 else 1) * k_elems)
            cin = ins[0][1] if len(ins[0]) > 1 else 0
            kind = "dwconv" if group > 1 and group == cin else "conv"
        elif node.op_type in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul") and len(ins) > 1:
            a = ins[0]
            macs = float(_n(o) * (a[-1] if a else 0))
            kind = "gemm"
        k = Kernel(node.name or node.output[0], node.op_type, kind, ins, o, macs,
                   4.0 * (data_in + weights + _n(o)))
        out.append(k)
        for name in node.output:
            by_output[name] = k
    return out


def features(ks: Iterable[Kernel]) -> dict[str, float]:
    """The features (:data:`FEATURES`) of a list of kernels."""
    f = dict.fromkeys(FEATURES, 0.0)
    f["one"] = 1.0
    for k in ks:
        f["kernels"] += 1
        if k.kind in ("conv", "dwconv", "gemm"):
            f[{"conv": "conv_gmacs", "dwconv": "dw_gmacs", "gemm": "gemm_gmacs"}[k.kind]] += k.macs / 1e9
            f["conv_mb"] += k.bytes / 1e6
        else:
            f["other_mb"] += k.bytes / 1e6
    return f


_FEATURE_CACHE: dict[tuple[str, int, int], dict] = {}


def model_features(model: str | Path, hw: tuple[int, int]) -> dict[str, float]:
    """Features of ``model`` (any source edgekit converts) prepared at input ``hw``, as the converters see it.

    Raises:
        InputError: the model cannot be read or prepared at that resolution.
    """
    from edgekit.core.files import sha256_file

    key = (sha256_file(model), int(hw[0]), int(hw[1]))
    if key not in _FEATURE_CACHE:
        from edgekit.core.ingest import load_source

        with tempfile.TemporaryDirectory(prefix="edgekit-predict-") as work:
            src = load_source(model, Path(work), {"": (1, 3, int(hw[0]), int(hw[1]))})
            _FEATURE_CACHE[key] = features(kernels(src.model))
    return dict(_FEATURE_CACHE[key])


def artifact_features(artifact_dir: str | Path) -> dict[str, float] | None:
    """Features of the fp32 graph a measured point's artifact was converted from (its stored reference, or the
    artifact itself when it is ONNX); None when the artifact is gone or holds neither.

    Raises:
        InputError: the artifact exists but fails its sha256 check.
    """
    from edgekit.core.artifact import Artifact

    folder = Path(artifact_dir)
    if not (folder / "artifact.json").is_file():
        return None
    art = Artifact.load(folder)  # verifies every file's sha256
    path = art.reference_file() if art.reference else art.file()
    if path.suffix != ".onnx":
        return None
    from edgekit.core.files import sha256_file

    h = sha256_file(path)
    key = (h, 0, 0)
    if key not in _FEATURE_CACHE:
        _FEATURE_CACHE[key] = features(kernels(path))
    return dict(_FEATURE_CACHE[key])


# ----------------------------------------------------------------------------------------------- the predictor

@dataclass(frozen=True)
class Sample:
    """One training row: a configuration's features and what was measured (ms)."""

    target: str
    delegate: str
    threads: int
    x: tuple[float, ...]
    y: float
    model: str = ""          # the model's sha256 (to leave a whole model out)
    resolution: tuple[int, int] = (0, 0)

    @property
    def group(self) -> tuple[str, str, int]:
        return (self.target, self.delegate, self.threads)


def vector(f: dict[str, float]) -> tuple[float, ...]:
    return tuple(float(f[k]) for k in FEATURES)


class Predictor:
    """``y = s[target, delegate] * t[threads] * r[group] * (x . w)``, fitted on relative error (see the module)."""

    def __init__(self, samples: list[Sample], iterations: int = 30, shrink: float = 2.0,
                 shrink_weights: float = 0.3, calibration_ridge: float = 0.1):
        from scipy.optimize import nnls

        if not samples:
            raise InputError("no measurements to predict from")
        self.samples = samples
        self.calibration_ridge = calibration_ridge
        X = np.array([s.x for s in samples], dtype=float)
        y = np.array([s.y for s in samples], dtype=float)
        scale = np.maximum(np.abs(X).max(axis=0), 1e-12)  # features of very different sizes: fit on unit columns
        Xn = X / scale
        td = [(s.target, s.delegate) for s in samples]
        th = [s.threads for s in samples]
        gr = [s.group for s in samples]
        S = dict.fromkeys(td, 1.0)
        T = dict.fromkeys(th, 1.0)
        R = dict.fromkeys(gr, 1.0)
        w = np.zeros(X.shape[1])
        for _ in range(iterations):
            m = np.array([S[a] * T[b] * R[c] for a, b, c in zip(td, th, gr, strict=True)])
            A = (Xn * m[:, None]) / y[:, None]
            w, _ = nnls(A, np.ones(len(y)))
            base = Xn @ w
            if not np.any(base > 0):
                break
            for key in ("S", "T", "R"):
                rng = range(len(y))
                table, idx, oth = {"S": (S, td, [T[th[i]] * R[gr[i]] for i in rng]),
                                   "T": (T, th, [S[td[i]] * R[gr[i]] for i in rng]),
                                   "R": (R, gr, [S[td[i]] * T[th[i]] for i in rng])}[key]
                for k in table:
                    rows = [i for i, v in enumerate(idx) if v == k and base[i] > 0]
                    if not rows:
                        continue
                    logs = [math.log(y[i] / (base[i] * oth[i])) for i in rows]
                    # a per-group correction is shrunk towards 1 where a group has few points
                    table[k] = math.exp(sum(logs) / (len(logs) + (shrink if key == "R" else 0)))
            g = math.exp(np.mean([math.log(v) for v in T.values()]))  # t is relative: its geometric mean is 1
            T = {k: v / g for k, v in T.items()}
            S = {k: v * g for k, v in S.items()}
        self.w, self.scale, self.S, self.T, self.R = w, scale, S, T, R
        self._group_weights(shrink_weights)

    def _group_weights(self, lam: float) -> None:
        """Per-(target, delegate, threads) feature costs, fitted on that group's points and shrunk towards the
        shared model's (ridge rows in the non-negative fit: a group with few points stays near the shared costs)."""
        from scipy.optimize import nnls

        self.W: dict[tuple, np.ndarray] = {}
        groups: dict[tuple, list[Sample]] = {}
        for s in self.samples:
            groups.setdefault(s.group, []).append(s)
        for key, rows in groups.items():
            prior = self._shared(*key)
            if prior is None:
                continue
            X = np.array([r.x for r in rows], dtype=float) / self.scale
            y = np.array([r.y for r in rows], dtype=float)
            A = X / y[:, None]
            c = A.mean(axis=0)
            A2 = np.vstack([A, math.sqrt(lam) * np.diag(c)])
            b2 = np.concatenate([np.ones(len(y)), math.sqrt(lam) * c * prior])
            self.W[key] = nnls(A2, b2)[0]

    def _shared(self, target: str, delegate: str, threads: int) -> np.ndarray | None:
        if not self.known(target, delegate, threads):
            return None
        return self.w * self.S[(target, delegate)] * self.T[threads] * self.R.get((target, delegate, threads), 1.0)

    def known(self, target: str, delegate: str, threads: int) -> bool:
        return (target, delegate) in self.S and threads in self.T

    def base(self, target: str, delegate: str, threads: int, x: tuple[float, ...]) -> float | None:
        """The kernel-level prediction (group costs, else the shared model's), before the per-model calibration."""
        w = self.W.get((target, delegate, threads))
        if w is None:
            w = self._shared(target, delegate, threads)
        if w is None:
            return None
        return float((np.array(x, dtype=float) / self.scale) @ w)

    def predict(self, target: str, delegate: str, threads: int, x: tuple[float, ...],
                model: str | None = None) -> float | None:
        """Predicted ms, or None where this target/delegate or thread count was never measured on the device.

        With ``model`` (its sha256), the kernel-level prediction is calibrated on that model's own points in this
        group where there are some: a line through (predicted, measured) with two or more (ridge towards their
        mean ratio), their mean ratio (shrunk towards 1) with one.
        """
        base = self.base(target, delegate, threads, x)
        if base is None or model is None:
            return base
        pairs = [(self.base(s.target, s.delegate, s.threads, s.x), s.y) for s in self.samples
                 if s.model == model and s.group == (target, delegate, threads)]
        return calibrate(base, pairs, self.calibration_ridge)


def calibrate(base: float, pairs: list[tuple[float | None, float]], ridge: float = 0.1) -> float:
    """``base`` (a prediction) calibrated on a model's own measured points in the same group, ``pairs`` of
    (predicted, measured): a line through them with two or more (ridge towards their mean ratio), their mean ratio
    (shrunk towards 1) with one, ``base`` itself with none."""
    pairs = [(p, y) for p, y in pairs if p and p > 0]
    if not pairs:
        return base
    P = np.array(pairs)
    ratio = math.exp(float(np.mean(np.log(P[:, 1] / P[:, 0]))))
    if len(P) < 2 or np.ptp(P[:, 0]) <= 1e-9 * P[:, 0].max():
        return base * math.exp(math.log(ratio) * len(P) / (len(P) + 0.25))
    wt = 1 / P[:, 1]
    mp, my = float(P[:, 0].mean()), float(P[:, 1].mean())
    A = np.vstack([np.stack([np.ones(len(P)), P[:, 0]], 1) * wt[:, None],
                   math.sqrt(ridge) * np.array([[1 / my, 0.0], [0.0, mp / my]])])
    b = np.concatenate([P[:, 1] * wt, math.sqrt(ridge) * np.array([0.0, ratio * mp / my])])
    a0, a1 = np.linalg.lstsq(A, b, rcond=None)[0]
    out = float(a0 + a1 * base)
    return out if out > 0 else base * ratio


def leave_one_out(samples: list[Sample], by_model: bool = False) -> list[tuple[Sample, float | None]]:
    """Each sample predicted by a predictor fitted on all the others (``by_model``: on the other models only)."""
    out = []
    for s in samples:
        rest = [o for o in samples if o is not s and not (by_model and o.model == s.model)]
        out.append((s, Predictor(rest).predict(s.target, s.delegate, s.threads, s.x, s.model) if rest else None))
    return out


def error_summary(pairs: list[tuple[Sample, float | None]]) -> dict:
    """``{"n", "within_10", "share_within_10", "median_abs_error", "p90_abs_error"}`` of (sample, predicted)."""
    errs = [abs(p - s.y) / s.y for s, p in pairs if p is not None]
    if not errs:
        return {"n": 0, "within_10": 0, "share_within_10": None, "median_abs_error": None, "p90_abs_error": None}
    within = sum(1 for e in errs if e <= WITHIN)
    return {"n": len(errs), "within_10": within, "share_within_10": within / len(errs),
            "median_abs_error": float(np.median(errs)), "p90_abs_error": float(np.quantile(errs, 0.9))}


def compare_methods(kernel_pairs: list[tuple], whole_pairs: list[tuple]) -> dict:
    """Both methods' held-out errors on the same configurations: those (model, resolution, target, delegate,
    threads) that both predicted (the per-kernel method only sees points whose kernels were timed, the whole-model
    method only points whose artifacts are left). Returns ``{"configurations", "per_kernel", "whole_model"}``,
    the last two :func:`error_summary` of those configurations."""
    def key(s) -> tuple:
        return (s.model, tuple(s.resolution), s.target, s.delegate, int(s.threads))

    k = {key(s): (s, p) for s, p in kernel_pairs if p is not None}
    w = {key(s): (s, p) for s, p in whole_pairs if p is not None}
    common = [c for c in k if c in w]
    return {"configurations": len(common), "per_kernel": error_summary([k[c] for c in common]),
            "whole_model": error_summary([w[c] for c in common])}


def choose_method(kernel_pairs: list[tuple], whole_pairs: list[tuple], unseen: bool) -> tuple[str, dict, str]:
    """The method (``"per-kernel"`` or ``"whole-model"``) with the lower median held-out error on the
    configurations both predicted (:func:`compare_methods`; a tie goes to per-kernel). Where they share none: the
    one whose error is known, else (an ``unseen`` model, neither error known) per-kernel, else whole-model.
    Returns ``(method, comparison, note)``, the note empty unless the choice was not made on errors."""
    cmp = compare_methods(kernel_pairs, whole_pairs)
    if cmp["configurations"]:
        better = cmp["per_kernel"]["median_abs_error"] <= cmp["whole_model"]["median_abs_error"]
        return ("per-kernel" if better else "whole-model"), cmp, ""
    k_known = any(p is not None for _, p in kernel_pairs)
    w_known = any(p is not None for _, p in whole_pairs)
    if k_known and not w_known:
        return "per-kernel", cmp, "the whole-model method's expected error is unknown here: per-kernel method used"
    if k_known and w_known:
        return "whole-model", cmp, ("the two methods' errors are not for the same configurations (points with kernel "
                                    "timings have no artifacts left, or the reverse): the whole-model method is used")
    if unseen and not w_known:
        return "per-kernel", cmp, ("the per-kernel method is used for this unseen model without an error estimate "
                                   "(measure a second model on this device to get one); on this machine's benchmark "
                                   "it carried over to an unseen model better than whole-model features")
    return "whole-model", cmp, ""


# ------------------------------------------------------------------------------------- from a device's points

METRICS = {"p50_ms": lambda p: p.p50_ms, "tail_ms": lambda p: p.tail_ms, "budget_tail_ms": lambda p: p.budget_tail_ms}


def samples_from_points(points: Iterable, metric: str = "p50_ms", notes: list[str] | None = None,
                        artifacts_in: Path | None = None) -> list[Sample]:
    """Training rows from measured points (their artifacts give the features); points whose artifact is gone,
    or (with ``artifacts_in``) lies outside that folder, are left out, with a note.

    Raises:
        InputError: a point's artifact fails its sha256 check.
    """
    out, gone, outside = [], 0, 0
    base = Path(artifacts_in).resolve() if artifacts_in is not None else None
    for p in points:
        y = METRICS[metric](p) if p.ok else None
        if not y or y <= 0:
            continue
        if base is not None and p.artifact and base not in Path(p.artifact).resolve().parents:
            outside += 1  # points.jsonl is a file: it does not get to point edgekit at folders elsewhere
            continue
        f = artifact_features(p.artifact) if p.artifact else None
        if f is None:
            gone += 1
            continue
        out.append(Sample(p.target, p.delegate, int(p.threads), vector(f), float(y), p.model_sha256,
                          tuple(p.resolution)))
    if gone and notes is not None:
        notes.append(f"{gone} measured point(s) were left out: their artifacts are gone, so their kernels are unknown")
    if outside and notes is not None:
        notes.append(f"{outside} measured point(s) were left out: their artifacts are outside {base}")
    return out


# ----------------------------------------------------------------------------------------- per-kernel timings

#: the file next to ``points.jsonl`` holding each measured point's kernel timings
KERNELS_FILE = "kernels.jsonl"
#: profiled runs per point (after the runtime's own warm-up runs)
KERNEL_RUNS = 10


def kernel_times_of(artifact, delegate: str, threads: int, runs: int = KERNEL_RUNS) -> list | None:
    """The runtime's per-kernel timings of ``artifact`` on this machine (``runs`` runs on a calibration sample), or
    None where its runtime cannot time its kernels.

    Raises:
        DeviceError: the runtime cannot open or profile the artifact here.
        InputError: the artifact's inputs cannot be made.
    """
    from edgekit.backends.registry import open_session
    from edgekit.core import calibration

    sample = calibration.samples(artifact.source_io, None, n=1, seed=11)[0]
    sess = open_session(artifact, threads=threads, delegate=delegate)
    try:
        return sess.kernel_times(sample, runs=runs)
    finally:
        sess.close()


def profile_kernels(artifact, point, out_dir: Path, notes: list[str] | None = None) -> bool:
    """Time a just-measured point's kernels on this machine and append them to ``out_dir/kernels.jsonl`` (keyed
    like the point: model sha256, profile hash, edgekit version, resolution, target, delegate, threads). A runtime
    that cannot time its kernels, or fails to, costs the point nothing: a note says so. Returns whether a line was
    written."""
    from edgekit.errors import EdgekitError

    try:
        ks = kernel_times_of(artifact, point.delegate, point.threads)
    except EdgekitError as e:
        if notes is not None:
            notes.append(f"{point.label()}: its kernels could not be timed ({e}); prediction uses its whole-model "
                         "latency only")
        return False
    if not ks:
        return False
    import json

    line = {"resolution": list(point.resolution), "target": point.target, "delegate": point.delegate,
            "threads": point.threads, "model_sha256": point.model_sha256, "profile_hash": point.profile_hash,
            "edgekit_version": point.edgekit_version, "artifact": point.artifact,
            "kernels": [k.to_dict() for k in ks]}
    with (Path(out_dir) / KERNELS_FILE).open("a") as f:
        f.write(json.dumps(line) + "\n")
    return True


def _count(v) -> bool:
    """An integer read from a file (a bool is not one)."""
    return isinstance(v, int) and not isinstance(v, bool)


def load_kernels(path: Path, notes: list[str] | None = None) -> dict[tuple, list]:
    """``{(model sha256, resolution, target, delegate, threads): [KernelTime, ...]}`` from a ``kernels.jsonl``
    (the last line of a key wins); lines that are not kernel records are skipped and counted in ``notes``."""
    import json

    from edgekit.backends.kerneltimes import KINDS, KernelTime

    out: dict[tuple, list] = {}
    if not Path(path).is_file():
        return out
    bad = 0
    for ln in Path(path).read_text().splitlines():
        if not ln.strip():
            continue
        try:
            d = json.loads(ln)
            if not isinstance(d, dict) or not isinstance(d.get("kernels"), list):
                raise ValueError("not a kernel record")
            res, words = d["resolution"], [d["model_sha256"], d["target"], d["delegate"]]
            if not (isinstance(res, list) and len(res) == 2 and all(_count(v) and v > 0 for v in res)
                    and _count(d["threads"]) and d["threads"] > 0 and all(isinstance(v, str) for v in words)):
                raise ValueError("resolution, threads, model, target or delegate of the wrong type")
            ks = [KernelTime.from_dict(k) for k in d["kernels"]]
            for k in ks:  # names and op types are compared and sorted; counts and times summed
                nums = [k.macs, k.in_elems, k.out_elems, k.weight_elems, k.cin, k.cout, k.window]
                if not (isinstance(k.name, str) and isinstance(k.op, str) and isinstance(k.kind, str)
                        and k.kind in KINDS and isinstance(k.ms, list)) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                        for v in nums + k.ms) or not all(_count(v) for v in (k.cin, k.cout, k.window)):
                    raise ValueError("a kernel's name, op or kind is not a known string, or a count or time is not "
                                     "a number >= 0")
            out[(d["model_sha256"], (res[0], res[1]), d["target"], d["delegate"], d["threads"])] = ks
        except (ValueError, KeyError, TypeError):
            bad += 1
    if bad and notes is not None:
        notes.append(f"{path}: {bad} line(s) that are not kernel timings were ignored")
    return out


def kernel_samples(points: Iterable, kernels: dict[tuple, list], metric: str = "p50_ms") -> list:
    """Per-kernel training rows: measured points that have kernel timings."""
    from edgekit.apps.profiling.kernels import KernelSample

    out = []
    for p in points:
        y = METRICS[metric](p) if p.ok else None
        ks = kernels.get((p.model_sha256, tuple(p.resolution), p.target, p.delegate, p.threads))
        if y and y > 0 and ks:
            out.append(KernelSample(p.target, p.delegate, int(p.threads), tuple(ks), float(y), p.model_sha256,
                                    tuple(p.resolution)))
    return out


@dataclass
class Prediction:
    resolution: tuple[int, int]
    target: str
    delegate: str
    threads: int
    p50_ms: float | None
    tail_ms: float | None
    measured_p50_ms: float | None = None
    note: str = ""

    def label(self) -> str:
        return f"{self.target} {self.delegate} {self.threads}T {self.resolution[0]}x{self.resolution[1]}"

    def to_dict(self) -> dict:
        return {"resolution": list(self.resolution), "target": self.target, "delegate": self.delegate,
                "threads": self.threads, "p50_ms": self.p50_ms, "tail_ms": self.tail_ms,
                "measured_p50_ms": self.measured_p50_ms, "note": self.note}


@dataclass
class PredictResult:
    device: str
    model: str
    predictions: list[Prediction]
    expected_error: dict
    trained_on: dict
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"device": self.device, "model": self.model, "predictions": [p.to_dict() for p in self.predictions],
                "expected_error": self.expected_error, "trained_on": self.trained_on, "notes": self.notes}


def predict_device(model: str | Path, device: str | Path, out_dir: str | Path = "out/profile") -> PredictResult:
    """Predict the latency of every configuration of ``device``'s profile for ``model`` from the points already
    measured on that device (``OUT/DEVICE/points.jsonl``, any model, this edgekit version and profile content or
    not: latency does not depend on the profile's budget), with the expected error. Where the device's kernels
    were timed too (``OUT/DEVICE/kernels.jsonl``), the per-kernel method is fitted as well and the method with the
    lower expected error for this model, on the configurations both methods predicted (:func:`compare_methods`),
    gives the p50 (the p90 likewise, by its own error). Every model's points in ``points.jsonl`` are used (keyed
    by model sha256 and configuration).

    Raises:
        InputError: no profile, no model, or no usable measurements of that device under ``out_dir``.
    """
    from edgekit.apps.profiling.device import load_profile
    from edgekit.apps.profiling.sweep import load_points

    prof = load_profile(device)
    model = Path(model)
    if not model.is_file():
        raise InputError(f"model not found: {model}")
    folder = Path(out_dir) / prof.id
    notes: list[str] = []
    points = list(load_points(folder / "points.jsonl", None, notes, by_model=True).values())
    samples = {m: samples_from_points(points, m, notes if m == "p50_ms" else None, Path(out_dir) / "artifacts")
               for m in ("p50_ms", "tail_ms")}
    if not samples["p50_ms"]:
        raise InputError(f"no measurements of device {prof.id} under {folder} to predict from: run edgekit profile "
                         f"--device {device} --out {out_dir} first (on any model)")
    from edgekit.core.files import sha256_file

    sha = sha256_file(model)
    models = {s.model for s in samples["p50_ms"]}
    whole = {m: Predictor(v) for m, v in samples.items() if v}
    w_pairs = {("p50_ms", "leave_one_out"): leave_one_out(samples["p50_ms"])}
    expected = {"leave_one_out": error_summary(w_pairs[("p50_ms", "leave_one_out")]), "within": WITHIN}
    if len(models) > 1:
        w_pairs[("p50_ms", "leave_one_model_out")] = leave_one_out(samples["p50_ms"], by_model=True)
        expected["leave_one_model_out"] = error_summary(w_pairs[("p50_ms", "leave_one_model_out")])
    else:
        notes.append("only one model was measured on this device: the error for a model it never saw is unknown "
                     "(the leave-one-out error is for configurations of a measured model)")
    if sha not in models:
        notes.append("this model was never measured on this device: expect the leave-one-model-out error, not the "
                     "leave-one-out one")
    hold = "leave_one_out" if sha in models else "leave_one_model_out"
    # the per-kernel method, where kernels were timed on this device
    from edgekit.apps.profiling import kernels as kp

    timed = load_kernels(folder / KERNELS_FILE, notes)
    ksamples = {m: kernel_samples(points, timed, m) for m in ("p50_ms", "tail_ms")}
    kpred = {m: kp.KernelPredictor(v) for m, v in ksamples.items() if v}
    use = {m: "whole-model" for m in ("p50_ms", "tail_ms")}
    if ksamples["p50_ms"]:
        kmodels = {s.model for s in ksamples["p50_ms"]}
        k_loo = kp.leave_one_out(ksamples["p50_ms"])
        per_kernel = {"leave_one_out": error_summary(k_loo), "points": len(ksamples["p50_ms"])}
        k_pairs = {("p50_ms", "leave_one_out"): k_loo}
        if len(kmodels) > 1:
            k_pairs[("p50_ms", "leave_one_model_out")] = kp.leave_one_out(ksamples["p50_ms"], by_model=True)
            per_kernel["leave_one_model_out"] = error_summary(k_pairs[("p50_ms", "leave_one_model_out")])
        expected["per_kernel"] = per_kernel
        compared = {}
        for m in ("p50_ms", "tail_ms"):
            if m not in kpred:
                continue
            by_model = hold != "leave_one_out"
            kp_m = k_pairs.get((m, hold))
            if kp_m is None:
                kp_m = kp.leave_one_out(ksamples[m], by_model=by_model)
            wp_m = w_pairs.get((m, hold))
            if wp_m is None:
                wp_m = leave_one_out(samples[m], by_model=by_model) if samples[m] else []
            use[m], compared["p50" if m == "p50_ms" else "p90"], why = choose_method(
                kp_m, wp_m, hold == "leave_one_model_out")
            if why and m == "p50_ms":
                notes.append(why)
        expected["compared_on"] = compared
    else:
        notes.append(f"no kernel timings of {prof.id} (profile it on this machine to take them): whole-model "
                     "method only")
    expected["method"] = {"p50": use["p50_ms"], "p90": use["tail_ms"]}
    measured = {(tuple(p.resolution), p.target, p.delegate, p.threads): p.p50_ms for p in points
                if p.ok and p.model_sha256 == sha}
    structure_cache: dict[tuple, list | None] = {}

    def structure(hw, t, d) -> list | None:
        key = (tuple(hw), t, d)
        if key not in structure_cache:
            structure_cache[key] = next((ks for (m_, hw_, t_, d_, _), ks in timed.items()
                                         if (m_, hw_, t_, d_) == (sha, tuple(hw), t, d)), None)
            if structure_cache[key] is None:
                structure_cache[key] = kernel_structure(model, t, d, tuple(hw), Path(out_dir) / "artifacts", notes)
        return structure_cache[key]

    preds = []
    for hw in prof.resolutions:
        x = vector(model_features(model, tuple(hw)))
        for t in prof.targets:
            for d in prof.delegates_for(t.split("-")[0]):
                for n in prof.threads:
                    vals = {}
                    for m in ("p50_ms", "tail_ms"):
                        v = None
                        if use[m] == "per-kernel" and kpred[m].known(t, d, n):
                            ks = structure(hw, t, d)
                            v = kpred[m].predict(t, d, n, ks, sha) if ks else None
                        if v is None and m in whole:
                            v = whole[m].predict(t, d, n, x, sha)
                        vals[m] = v
                    note = "" if vals["p50_ms"] is not None else "never measured on this device: no prediction"
                    preds.append(Prediction(tuple(hw), t, d, n, vals["p50_ms"], vals["tail_ms"],
                                            measured.get((tuple(hw), t, d, n)), note))
    trained = {"points": len(samples["p50_ms"]), "models": len(models),
               "points_with_kernels": len(ksamples["p50_ms"])}
    return PredictResult(prof.id, str(model), preds, expected, trained, notes)


def kernel_structure(model: Path, target: str, delegate: str, hw: tuple[int, int], cache: Path,
                     notes: list[str] | None = None) -> list | None:
    """The kernels (structure; their times unused) the runtime makes of ``model`` for ``target`` at ``hw`` on this
    machine: the artifact converted into ``cache`` (the profiler's artifact cache, reused) and profiled once. None,
    with a note, where that cannot be done here (the method then falls back to whole-model features)."""
    from edgekit.apps.profiling.sweep import cached_artifact
    from edgekit.errors import EdgekitError

    try:
        art = cached_artifact(model, target, hw, cache)
        return kernel_times_of(art, delegate, 1, runs=3)
    except EdgekitError as e:
        if notes is not None:
            notes.append(f"{target} {delegate} {hw[0]}x{hw[1]}: its kernels cannot be listed on this machine ({e}); "
                         "predicted from whole-model features")
        return None


def expected_error_line(expected: dict) -> str:
    """One line: the share of predictions within +-10% and the median error, per method and kind of hold-out,
    and which method gave the p50."""
    def parts(d: dict) -> list[str]:
        out = []
        for key, name in (("leave_one_out", "leave-one-out"), ("leave_one_model_out", "unseen model")):
            e = d.get(key)
            if e and e["n"]:
                out.append(f"{name}: {e['within_10']}/{e['n']} ({e['share_within_10']:.0%}) within +-10%, median "
                           f"|error| {e['median_abs_error']:.1%}")
        return out

    whole = parts(expected)
    line = "expected error (p50): " + ("; ".join(whole) if whole else "unknown (too few measurements)")
    if expected.get("per_kernel"):
        line += "; per-kernel method: " + ("; ".join(parts(expected["per_kernel"])) or "unknown")
    if expected.get("method"):
        line += f" (p50 from the {expected['method']['p50']} method"
        cmp = (expected.get("compared_on") or {}).get("p50")
        if cmp and cmp["configurations"]:
            line += (f": median |error| {cmp['per_kernel']['median_abs_error']:.1%} per-kernel vs "
                     f"{cmp['whole_model']['median_abs_error']:.1%} whole-model on the same {cmp['configurations']} "
                     "configurations")
        line += ")"
    return line


# ----------------------------------------------------------------------------------------------- pruning

def _aspect_error(hw: tuple[int, int], camera: tuple[int, int]) -> float:
    return abs(math.log((hw[1] / hw[0]) / (camera[1] / camera[0])))


def rank(quality: float, hw: tuple[int, int], tail_ms: float, camera: tuple[int, int]) -> tuple:
    """The chooser's ranking of a point (higher is better): quality to 3 decimals, the camera's aspect ratio,
    input size, then speed."""
    return (round(quality, 3), -round(_aspect_error(hw, camera), 2), hw[0] * hw[1], -tail_ms)


def seed_keys(plan: list[tuple], camera: tuple[int, int]) -> list[tuple]:
    """The points a pruned sweep measures first: for each (target, delegate) the point at its most thread count
    and the resolution closest to the camera's aspect (largest first), and every point of the first target and
    delegate (what threads and resolutions do there)."""
    seeds: dict[tuple, tuple] = {}
    for key in plan:
        hw, t, d, n = key
        cur = seeds.get((t, d))
        score = (n, -round(_aspect_error(hw, camera), 2), hw[0] * hw[1])
        if cur is None or score > (cur[3], -round(_aspect_error(cur[0], camera), 2), cur[0][0] * cur[0][1]):
            seeds[(t, d)] = key
    first = (plan[0][1], plan[0][2]) if plan else None
    out = [k for k in plan if (k[1], k[2]) == first] + [k for k in seeds.values() if (k[1], k[2]) != first]
    return list(dict.fromkeys(out))


@dataclass
class PruneLog:
    measured: list[tuple] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)   # key -> why (predicted ms, margin)


def pruned_order(plan: list[tuple], measure: Callable[[tuple], object], quality_hint: Callable[[tuple], float | None],
                 features_of: Callable[[tuple], tuple[float, ...]], budget_ms: float,
                 camera: tuple[int, int] = (720, 1280), min_margin: float = 0.10) -> PruneLog:
    """Measure the seed points, then only the points whose optimistic prediction could outrank the best
    measured fitting point (or the best fitting point of another runtime), one at a time, refitting after each.

    ``measure(key)`` measures a point (``key`` = (resolution, target, delegate, threads)) and returns it (a
    :class:`~edgekit.apps.profiling.sweep.Point`); ``quality_hint(key)`` is the quality expected without
    measuring (the artifact's parity), or None; ``features_of(key)`` the features of the point's configuration.
    """
    log = PruneLog()
    done: dict[tuple, object] = {}

    def run(key):
        done[key] = measure(key)
        log.measured.append(key)

    for key in seed_keys(plan, camera):
        run(key)
    while True:
        ok = {k: p for k, p in done.items() if p.ok and p.budget_tail_ms is not None}
        fitting = [(rank(p.quality or 0.0, k[0], p.budget_tail_ms, camera), k) for k, p in ok.items()
                   if p.budget_tail_ms <= budget_ms]
        fitting.sort(reverse=True)
        best = fitting[0] if fitting else None
        best_other: dict[str, tuple] = {}  # per runtime: the best fitting point of any OTHER runtime
        for fmt in {k[1].split("-")[0] for k in plan}:
            others = [f for f in fitting if f[1][1].split("-")[0] != fmt]
            if others:
                best_other[fmt] = others[0]
        samples = [Sample(k[1], k[2], k[3], features_of(k), p.budget_tail_ms, "", k[0]) for k, p in ok.items()]
        pred = Predictor(samples) if samples else None
        margin = min_margin
        if len(samples) >= 6:
            errs = error_summary(leave_one_out(samples))
            if errs["n"]:
                margin = max(min_margin, errs["p90_abs_error"])
        candidates = []
        for key in plan:
            if key in done:
                continue
            y = pred.predict(key[1], key[2], key[3], features_of(key), "") if pred else None
            if y is None:
                candidates.append(((9, 0, 0, 0), key))  # nothing to predict it from: measure it
                continue
            sib = [p.quality for k, p in ok.items() if (k[0], k[1], k[2]) == (key[0], key[1], key[2])
                   and p.quality is not None]
            q = sib[0] if sib else quality_hint(key)
            q_up = (q + (0.002 if sib else 0.01)) if q is not None else 1.0
            low = y * (1 - margin)
            if low > budget_ms:
                log.skipped[key] = f"predicted {y:.2f} ms (+-{margin:.0%}) is over the {budget_ms:.1f} ms budget"
                continue
            r = rank(min(q_up, 1.0), key[0], low, camera)
            fmt = key[1].split("-")[0]
            if best is None or r > best[0] or (fmt in best_other and r > best_other[fmt][0]) or (
                    best is not None and fmt not in best_other and fmt != best[1][1].split("-")[0]):
                candidates.append((r, key))
            else:
                log.skipped[key] = (f"predicted {y:.2f} ms (+-{margin:.0%}), quality ~{q if q is not None else '?'}: "
                                    "outranked by measured points")
        if not candidates:
            break
        candidates.sort(reverse=True)
        key = candidates[0][1]
        log.skipped.pop(key, None)
        run(key)
    for k in log.measured:
        log.skipped.pop(k, None)
    return log
