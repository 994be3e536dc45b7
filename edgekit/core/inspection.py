"""``edgekit inspect``: IO, parameters, MACs per op type, op histogram and per-format op support."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.backends import registry
from edgekit.core import preprocess
from edgekit.core.ingest import load_source, parse_input_shapes
from edgekit.core.iospec import IOSpec


@dataclass
class Inspection:
    path: str
    sha256: str
    io: IOSpec
    params: int
    macs_by_op: dict[str, int]
    op_histogram: dict[str, int]
    #: format -> {op type: True (converts) / False (known not to) / None (unknown / backend missing)}
    support: dict[str, dict[str, bool | None]]

    @property
    def macs(self) -> int:
        return sum(self.macs_by_op.values())

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "io": self.io.to_dict(), "params": self.params,
                "macs": self.macs, "macs_by_op": self.macs_by_op, "op_histogram": self.op_histogram,
                "support": self.support}


def inspect_model(model, input_shapes=None) -> Inspection:
    """Inspect ``model``: IO (with each input's pre-processing and where it came from: the model card, or
    ``assumed`` when nothing states it), parameters, MACs per op type, op histogram and op support.

    Raises:
        InputError: the model cannot be read.
    """
    import onnx
    from onnx import numpy_helper

    shapes = input_shapes if isinstance(input_shapes, dict) else parse_input_shapes(input_shapes)
    with tempfile.TemporaryDirectory(prefix="edgekit-inspect-") as work:
        src = load_source(model, Path(work), shapes)
    src.io = preprocess.resolve(src.io, src.card, preprocess.Stated())  # records card / assumed per input
    m = onnx.shape_inference.infer_shapes(src.model)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    macs: Counter = Counter()
    for n in m.graph.node:
        macs[n.op_type] += _macs(n, dims, inits)
    hist = Counter(n.op_type for n in m.graph.node)
    support = {}
    for fmt in registry.formats():
        conv = registry.get(fmt)
        support[fmt] = {op: conv.op_support(op) for op in sorted(hist)}
    return Inspection(path=src.path, sha256=src.sha256, io=src.io,
                      params=int(sum(v.size for v in inits.values())),
                      macs_by_op={k: int(v) for k, v in macs.most_common() if v},
                      op_histogram=dict(hist.most_common()), support=support)


def _macs(node, dims, inits) -> int:
    out = dims.get(node.output[0]) or []
    if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in inits:
        w = inits[node.input[1]].shape  # Conv: Cout, Cin/g, kh, kw; ConvTranspose: Cin, Cout/g, kh, kw
        if node.op_type == "Conv":
            return int(np.prod(out)) * int(np.prod(w[1:])) if out else 0
        inp = dims.get(node.input[0]) or []
        return int(np.prod(inp)) * int(np.prod(w[1:])) if inp else 0
    if node.op_type in ("Gemm", "MatMul"):
        a = dims.get(node.input[0]) or (list(inits[node.input[0]].shape) if node.input[0] in inits else [])
        return int(np.prod(out)) * int(a[-1]) if out and a else 0
    return 0
