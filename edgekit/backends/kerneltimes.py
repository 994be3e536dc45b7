"""Per-kernel timings as a runtime reports them: what each kernel it really ran (after its own fusions and layout
changes) cost, with the shapes that say how much work it was.

Every runtime that can time its kernels (ONNX Runtime's session profiler, OpenVINO's performance counters, ncnn
layer by layer) returns the same :class:`KernelTime` records from ``Session.kernel_times(inputs, runs)``; latency
prediction (:mod:`edgekit.apps.profiling.kernels`) fits per-kind latency models on them. The runtime-specific
collection lives in each backend's ``kerneltimes.py``; this module holds the record and the arithmetic every
backend shares (so a convolution's multiply-accumulates are counted the same way whoever ran it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: the kinds of kernel the latency models tell apart
KINDS = ("conv", "dwconv", "gemm", "pool", "eltwise", "reorder", "other")


@dataclass
class KernelTime:
    """One kernel of one run configuration and what it cost.

    Attributes:
        name: the runtime's name for it.
        op: the runtime's type for it (``FusedConv``, ``GroupConvolution``, ``ConvolutionDepthWise``...).
        kind: one of :data:`KINDS`.
        macs: multiply-accumulates (convolutions and matrix products; 0 for the others).
        in_elems: elements of its data inputs (weights not counted).
        out_elems: elements of its outputs.
        weight_elems: elements of its weights (0 where it has none).
        cin, cout: input and output channels (0 where not meaningful).
        window: the kernel window's area (kh x kw; 1 for a 1x1 convolution, 0 where not meaningful).
        ms: its times over the profiled runs, milliseconds (one per run).
    """

    name: str
    op: str
    kind: str
    macs: float = 0.0
    in_elems: float = 0.0
    out_elems: float = 0.0
    weight_elems: float = 0.0
    cin: int = 0
    cout: int = 0
    window: int = 0
    ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> KernelTime:
        """A record from :meth:`to_dict`'s output (unknown keys refused: ``TypeError``)."""
        return cls(**d)


def elems(shape) -> int:
    """Elements of a shape (0 for an unknown or dynamic one)."""
    n = 1
    for d in shape or ():
        d = int(d)
        if d <= 0:
            return 0
        n *= d
    return n if shape else 0


def conv_record(name: str, op: str, data_in: list, weight_per_out: int, window: int, out_shape, ms: list[float],
                weight_elems: int = 0, depthwise: bool | None = None) -> KernelTime:
    """A convolution's record from its shapes (NCHW order for ``data_in`` and ``out_shape``).

    ``weight_per_out``: weights per output channel (Cin / groups x kh x kw); ``window``: kh x kw. Depthwise when
    each output channel reads one input channel (``weight_per_out == window`` with more than one input channel)
    unless ``depthwise`` says otherwise.
    """
    cin = int(data_in[0][1]) if data_in and len(data_in[0]) > 1 else 0
    cout = int(out_shape[1]) if len(out_shape) > 1 else 0
    dw = depthwise if depthwise is not None else (weight_per_out == window and cin > 1)
    out = elems(out_shape)
    return KernelTime(name, op, "dwconv" if dw else "conv", float(out * weight_per_out),
                      float(sum(elems(s) for s in data_in)), float(out),
                      float(weight_elems or weight_per_out * cout), cin, cout, int(window), list(ms))


def other_record(name: str, op: str, kind: str, data_in: list, outs: list, ms: list[float],
                 weight_elems: int = 0) -> KernelTime:
    """A kernel that is not a convolution (``kind`` from :data:`KINDS`); channels from NCHW shapes."""
    cin = int(data_in[0][1]) if data_in and len(data_in[0]) > 1 else 0
    cout = int(outs[0][1]) if outs and len(outs[0]) > 1 else 0
    return KernelTime(name, op, kind, 0.0, float(sum(elems(s) for s in data_in)),
                      float(sum(elems(s) for s in outs)), float(weight_elems), cin, cout, 0, list(ms))


#: op-type words (lower case, any runtime) -> kind, for kernels that are not convolutions or matrix products
_KIND_WORDS = (("reorder", "reorder"), ("transpose", "reorder"), ("permute", "reorder"), ("convert", "reorder"),
               ("pool", "pool"), ("reduce", "pool"), ("reduction", "pool"), ("add", "eltwise"), ("mul", "eltwise"),
               ("sub", "eltwise"), ("div", "eltwise"), ("eltwise", "eltwise"), ("binaryop", "eltwise"),
               ("multiply", "eltwise"), ("relu", "eltwise"), ("sigmoid", "eltwise"), ("swish", "eltwise"),
               ("clip", "eltwise"), ("clamp", "eltwise"), ("tanh", "eltwise"), ("gelu", "eltwise"),
               ("subgraph", "eltwise"), ("math", "eltwise"), ("hard", "eltwise"), ("split", "other"))


def kind_of(op: str) -> str:
    """The kind (:data:`KINDS`) of a kernel that is neither a convolution nor a matrix product, by its op type."""
    low = op.lower()
    for word, kind in _KIND_WORDS:
        if word in low:
            return kind
    return "other"
