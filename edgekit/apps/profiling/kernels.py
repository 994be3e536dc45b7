"""Per-kernel latency models, in the spirit of nn-Meter: a configuration's latency as the sum of its kernels'.

**Data.** The runtime's own per-kernel timings (``Session.kernel_times``: ONNX Runtime's session profiler,
OpenVINO's performance counters, ncnn layer by layer), taken alongside the profiler's points and stored with the
device's points (``OUT/DEVICE/kernels.jsonl``). Each kernel is the one the runtime really ran (after its fusions
and layout changes): its kind (dense / depthwise convolution, matrix product, pooling, element-wise, layout
reorder, other), multiply-accumulates, elements read and written, weights, channels and window. A kernel's time
is the fastest of its profiled runs (:data:`QUANTILE`): other jobs only ever add time.

**Model.** Per (target, delegate, threads) and kernel kind, a non-negative linear model of the kernel's time on
:func:`phi` (a constant per kernel launch, MACs, elements read, elements written, weights, and MACs per output
channel below :data:`SMALL_CHANNELS`, where thin layers use the vector units badly), fitted on every measured
kernel of that kind (weighted so a configuration's large kernels count most). A configuration is predicted as
``a * sum(kernel predictions) + b`` with ``a, b >= 0`` fitted per (target, delegate, threads) on the whole-model
points (the profiler's overhead, and what the runtime does outside its kernels). For a model already measured in
that group, the prediction is calibrated on its own points there as the whole-model method does
(:func:`~edgekit.apps.profiling.predict.calibrate`).

Predicting a model the device never ran needs only its kernels' structure: the runtime's graph of its artifact,
which this machine can make without the device (:func:`kernel_structure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from edgekit.backends.kerneltimes import KernelTime
from edgekit.errors import InputError

#: a kernel's time: this quantile of its profiled runs (0: the fastest; a kernel longer than the scheduler's time
#: slice on a busy machine is preempted in most runs, so higher quantiles carry the other jobs' time)
QUANTILE = 0.0
#: channels below which a convolution's MACs get a second cost (thin layers fill the vector units badly)
SMALL_CHANNELS = 32
#: elements moved (in + out) past which each further element may cost more (a tensor leaving a cache level; fp32:
#: 0.5, 2 and 8 MB, typical L2 and L3 sizes)
CACHE_STEPS = (128e3, 512e3, 2e6)
#: features per kernel (see :func:`phi`)
N_PHI = 7 + len(CACHE_STEPS)
#: ridge of the per-model calibration line (towards the model's mean measured/predicted ratio)
CALIBRATION_RIDGE = 0.1
#: kinds whose kernels are modelled per op type (where that op type has MIN_OP_ROWS measured kernels)
BY_OP = ("other", "eltwise", "pool", "reorder")
MIN_OP_ROWS = 6
#: the fit's error floor, as a share of the configuration's kernel total
FLOOR = 0.01


def kernel_ms(k: KernelTime) -> float:
    """The robust time of a kernel: :data:`QUANTILE` of its profiled runs."""
    return float(np.quantile(k.ms, QUANTILE)) if k.ms else 0.0


def phi(k: KernelTime) -> np.ndarray:
    """A kernel's features (millions): 1, MACs, elements in, elements out, weights, MACs of thin layers, elements
    written by thin outputs (a layer with few channels fills the vector units badly), and the elements moved past
    each of :data:`CACHE_STEPS` (a tensor that no longer fits a cache level costs more per element)."""
    thin = k.macs * max(0.0, 1.0 - min(k.cin or SMALL_CHANNELS, k.cout or SMALL_CHANNELS) / SMALL_CHANNELS) \
        if k.kind in ("conv", "gemm") else 0.0
    thin_out = k.out_elems * max(0.0, 1.0 - min(k.cout or SMALL_CHANNELS, SMALL_CHANNELS) / SMALL_CHANNELS)
    moved = k.in_elems + k.out_elems
    return np.array([1.0, k.macs / 1e6, k.in_elems / 1e6, k.out_elems / 1e6, k.weight_elems / 1e6, thin / 1e6,
                     thin_out / 1e6, *(max(0.0, moved - c) / 1e6 for c in CACHE_STEPS)])


def structure_arrays(kernels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, kinds, op types)`` of a list of kernels: one :func:`phi` row, kind and op type per kernel."""
    if not kernels:
        return np.zeros((0, N_PHI)), np.array([], dtype=object), np.array([], dtype=object)
    return (np.stack([phi(k) for k in kernels]), np.array([k.kind for k in kernels], dtype=object),
            np.array([k.op for k in kernels], dtype=object))


@dataclass(frozen=True)
class KernelSample:
    """One measured configuration: its kernels (with their times) and its whole-model latency ``y`` (ms)."""

    target: str
    delegate: str
    threads: int
    kernels: tuple[KernelTime, ...]
    y: float
    model: str = ""
    resolution: tuple[int, int] = (0, 0)

    @property
    def group(self) -> tuple[str, str, int]:
        return (self.target, self.delegate, self.threads)

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(features, kinds, kernel times, op types)``, computed once."""
        X, kinds, ops = structure_arrays(self.kernels)
        return X, kinds, np.array([kernel_ms(k) for k in self.kernels]), ops

    @property
    def structure(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(features, kinds, op types)``: what a prediction needs (no times)."""
        X, kinds, _, ops = self.arrays
        return X, kinds, ops


class KernelPredictor:
    """Per-kind kernel models and a per-group ``a * sum + b`` (see the module)."""

    def __init__(self, samples: list[KernelSample]):
        from scipy.optimize import nnls

        if not samples:
            raise InputError("no kernel timings to predict from")
        self.samples = samples
        self.models: dict[tuple, np.ndarray] = {}
        groups: dict[tuple, list[KernelSample]] = {}
        for s in samples:
            groups.setdefault(s.group, []).append(s)
        for g, items in groups.items():
            X = np.vstack([s.arrays[0] for s in items])
            kinds = np.concatenate([s.arrays[1] for s in items])
            y = np.concatenate([s.arrays[2] for s in items])
            totals = np.concatenate([np.full(len(s.kernels), s.arrays[2].sum() or 1.0) for s in items])
            # relative to a floor of FLOOR x the configuration's total: big kernels count most, tiny ones still count
            w = 1.0 / (y + FLOOR * totals)
            ops = np.concatenate([s.arrays[3] for s in items])
            keys = [*[(k, kinds == k) for k in sorted(set(kinds))], ("*", np.ones(len(y), bool))]
            keys += [(("op", o), ops == o) for o in sorted(set(ops)) if (ops == o).sum() >= MIN_OP_ROWS]
            for kind, rows in keys:
                A = X[rows]
                scale = np.maximum(np.abs(A).max(axis=0), 1e-12)
                self.models[(g, kind)] = nnls((A / scale) * w[rows, None], y[rows] * w[rows])[0] / scale
        self.overhead: dict[tuple, tuple[float, float]] = {}
        for g, items in groups.items():
            S = np.array([self._sum(g, *s.structure) for s in items])
            y = np.array([s.y for s in items])
            A = np.stack([S, np.ones_like(S)], 1) / y[:, None]
            a, b = nnls(A, np.ones(len(y)))[0]
            self.overhead[g] = (a, b) if a > 0 else (float(np.mean(y / np.maximum(S, 1e-9))), 0.0)

    def _sum(self, group: tuple, X: np.ndarray, kinds: np.ndarray, ops: np.ndarray | None = None) -> float:
        total = 0.0
        for kind in set(kinds):
            rows = kinds == kind
            coef = self.models.get((group, kind))
            if coef is None:
                coef = self.models[(group, "*")]
            if ops is not None and kind in BY_OP:  # an op type with its own model where it has enough rows
                for o in set(ops[rows]):
                    sub = rows & (ops == o)
                    total += float((X[sub] @ self.models.get((group, ("op", o)), coef)).sum())
            else:
                total += float((X[rows] @ coef).sum())
        return total

    def known(self, target: str, delegate: str, threads: int) -> bool:
        return (target, delegate, threads) in self.overhead

    def base(self, target: str, delegate: str, threads: int, kernels, arrays=None) -> float | None:
        """The sum of the kernels' predictions with the group's overhead, before any per-model calibration."""
        g = (target, delegate, threads)
        if g not in self.overhead:
            return None
        a, b = self.overhead[g]
        return a * self._sum(g, *(arrays if arrays is not None else structure_arrays(kernels))) + b

    def predict(self, target: str, delegate: str, threads: int, kernels, model: str | None = None,
                arrays=None) -> float | None:
        """Predicted ms of a configuration whose kernels are ``kernels`` (their times are not used), or None where
        this (target, delegate, threads) was never profiled. With ``model`` (its sha256) measured in this group, the
        prediction is calibrated on that model's points there (:func:`~edgekit.apps.profiling.predict.calibrate`)."""
        base = self.base(target, delegate, threads, kernels, arrays)
        if base is None or not model:
            return base
        from edgekit.apps.profiling.predict import calibrate

        pairs = [(self.base(*s.group, s.kernels, s.structure), s.y) for s in self.samples
                 if s.model == model and s.group == (target, delegate, threads)]
        return calibrate(base, pairs, CALIBRATION_RIDGE)


def leave_one_out(samples: list[KernelSample], by_model: bool = False) -> list[tuple[KernelSample, float | None]]:
    """Each configuration predicted from a predictor fitted on all the others (``by_model``: on the other models
    only), from its kernels' structure alone."""
    out = []
    for s in samples:
        rest = [o for o in samples if o is not s and not (by_model and o.model == s.model)]
        p = KernelPredictor(rest).predict(s.target, s.delegate, s.threads, s.kernels, s.model,
                                          s.structure) if rest else None
        out.append((s, p))
    return out


def repeatability(samples: list[KernelSample]) -> float | None:
    """Share of configurations whose kernel-time sum, from two disjoint halves of the profiled runs, agrees within
    +-10%: the per-kernel data's own repeatability."""
    ok, n = 0, 0
    for s in samples:
        a = sum(float(np.quantile(k.ms[0::2], QUANTILE)) for k in s.kernels if len(k.ms) > 1)
        b = sum(float(np.quantile(k.ms[1::2], QUANTILE)) for k in s.kernels if len(k.ms) > 1)
        if a > 0 and b > 0:
            n += 1
            ok += abs(a - b) <= 0.1 * min(a, b)
    return ok / n if n else None
