"""Per-kernel latency models, in the spirit of nn-Meter: a configuration's latency as the sum of its kernels'.

**Data.** The runtime's own per-kernel timings (``Session.kernel_times``: ONNX Runtime's session profiler,
OpenVINO's performance counters, ncnn layer by layer), taken alongside the profiler's points and stored with the
device's points (``OUT/DEVICE/kernels.jsonl``). Each kernel is the one the runtime really ran (after its fusions
and layout changes): its kind (dense / depthwise convolution, matrix product, pooling, element-wise, layout
reorder, other), multiply-accumulates, elements read and written, weights, channels and window. A kernel's time
is a low quantile (:data:`QUANTILE`) of its profiled runs: other jobs only ever add time.

**Model.** Per (target, delegate, threads) and kernel kind, a non-negative linear model of the kernel's time on
:func:`phi` (a constant per kernel launch, MACs, elements read, elements written, weights, and MACs per output
channel below :data:`SMALL_CHANNELS`, where thin layers use the vector units badly), fitted on every measured
kernel of that kind (weighted so a configuration's large kernels count most). A configuration is predicted as
``a * sum(kernel predictions) + b`` with ``a, b >= 0`` fitted per (target, delegate, threads) on the whole-model
points (the profiler's overhead, and what the runtime does outside its kernels). For a model already measured in
that group, the prediction is multiplied by its mean measured/predicted ratio there (shrunk towards 1).

Predicting a model the device never ran needs only its kernels' structure: the runtime's graph of its artifact,
which this machine can make without the device (:func:`kernel_structure`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from edgekit.backends.kerneltimes import KernelTime
from edgekit.errors import InputError

#: a kernel's time: this quantile of its profiled runs
QUANTILE = 0.2
#: channels below which a convolution's MACs get a second cost (thin layers fill the vector units badly)
SMALL_CHANNELS = 32
#: weight of the ratio shrink for a model already measured in a group (pseudo-points at ratio 1)
CALIBRATION_SHRINK = 0.5


def kernel_ms(k: KernelTime) -> float:
    """The robust time of a kernel: :data:`QUANTILE` of its profiled runs."""
    return float(np.quantile(k.ms, QUANTILE)) if k.ms else 0.0


def phi(k: KernelTime) -> np.ndarray:
    """A kernel's features (millions): 1, MACs, elements in, elements out, weights, MACs of thin layers."""
    thin = k.macs * max(0.0, 1.0 - min(k.cin or SMALL_CHANNELS, k.cout or SMALL_CHANNELS) / SMALL_CHANNELS) \
        if k.kind in ("conv", "gemm") else 0.0
    return np.array([1.0, k.macs / 1e6, k.in_elems / 1e6, k.out_elems / 1e6, k.weight_elems / 1e6, thin / 1e6])


def structure_arrays(kernels) -> tuple[np.ndarray, np.ndarray]:
    """``(features, kinds)`` of a list of kernels: one :func:`phi` row and one kind per kernel."""
    if not kernels:
        return np.zeros((0, 6)), np.array([], dtype=object)
    return np.stack([phi(k) for k in kernels]), np.array([k.kind for k in kernels], dtype=object)


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
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(features, kinds, kernel times)``, computed once."""
        X, kinds = structure_arrays(self.kernels)
        return X, kinds, np.array([kernel_ms(k) for k in self.kernels])


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
            # relative to a floor of 1% of the configuration's total: big kernels count most, tiny ones still count
            w = 1.0 / (y + 0.01 * totals)
            for kind in [*sorted(set(kinds)), "*"]:
                rows = np.ones(len(y), bool) if kind == "*" else kinds == kind
                A = X[rows]
                scale = np.maximum(np.abs(A).max(axis=0), 1e-12)
                self.models[(g, kind)] = nnls((A / scale) * w[rows, None], y[rows] * w[rows])[0] / scale
        self.overhead: dict[tuple, tuple[float, float]] = {}
        for g, items in groups.items():
            S = np.array([self._sum(g, *s.arrays[:2]) for s in items])
            y = np.array([s.y for s in items])
            A = np.stack([S, np.ones_like(S)], 1) / y[:, None]
            a, b = nnls(A, np.ones(len(y)))[0]
            self.overhead[g] = (a, b) if a > 0 else (float(np.mean(y / np.maximum(S, 1e-9))), 0.0)

    def _sum(self, group: tuple, X: np.ndarray, kinds: np.ndarray) -> float:
        total = 0.0
        for kind in set(kinds):
            coef = self.models.get((group, kind))
            if coef is None:
                coef = self.models[(group, "*")]
            total += float((X[kinds == kind] @ coef).sum())
        return total

    def known(self, target: str, delegate: str, threads: int) -> bool:
        return (target, delegate, threads) in self.overhead

    def base(self, target: str, delegate: str, threads: int, kernels, arrays=None) -> float | None:
        """The sum of the kernels' predictions with the group's overhead, before any per-model calibration."""
        g = (target, delegate, threads)
        if g not in self.overhead:
            return None
        a, b = self.overhead[g]
        X, kinds = arrays if arrays is not None else structure_arrays(kernels)
        return a * self._sum(g, X, kinds) + b

    def predict(self, target: str, delegate: str, threads: int, kernels, model: str | None = None,
                arrays=None) -> float | None:
        """Predicted ms of a configuration whose kernels are ``kernels`` (their times are not used), or None where
        this (target, delegate, threads) was never profiled. With ``model`` (its sha256) measured in this group, the
        prediction is scaled by that model's mean measured/predicted ratio there, shrunk towards 1."""
        base = self.base(target, delegate, threads, kernels, arrays)
        if base is None or not model:
            return base
        logs = [math.log(s.y / p) for s in self.samples if s.model == model and s.group == (target, delegate, threads)
                for p in [self.base(*s.group, s.kernels, s.arrays[:2])] if p and p > 0]
        if not logs:
            return base
        return base * math.exp(sum(logs) / (len(logs) + CALIBRATION_SHRINK))


def leave_one_out(samples: list[KernelSample], by_model: bool = False) -> list[tuple[KernelSample, float | None]]:
    """Each configuration predicted from a predictor fitted on all the others (``by_model``: on the other models
    only), from its kernels' structure alone."""
    out = []
    for s in samples:
        rest = [o for o in samples if o is not s and not (by_model and o.model == s.model)]
        p = KernelPredictor(rest).predict(s.target, s.delegate, s.threads, s.kernels, s.model,
                                          s.arrays[:2]) if rest else None
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
