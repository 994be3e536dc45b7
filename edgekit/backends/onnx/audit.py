"""Execution audit of an ONNX Runtime session, read from the graph ORT really runs (its optimized model): an
int8 node is a quantized kernel (QLinearConv, ConvInteger, com.microsoft QLinear*), or a float kernel between a
DequantizeLinear and a QuantizeLinear that ORT could not fuse (dequantize-compute-quantize: int8 storage, f32
compute)."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from edgekit.core.audit import Audit, OpRun

_CONVERSIONS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_BOUNDARY = {"Reshape", "Flatten", "Squeeze",
             "Unsqueeze", "Identity", "ReorderInput", "ReorderOutput", "Shape", "Gather", "Constant"}
_WEIGHTED = {"Conv", "FusedConv", "ConvTranspose", "MatMul", "Gemm", "FusedGemm", "FusedMatMul"}


def _precision(node) -> str:
    if node.op_type.startswith("QLinear") or node.op_type in ("ConvInteger", "MatMulInteger", "QGemm",
                                                               "DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
        return "int8"
    return "fp32"


def audit_ort(model_path: Path, target, provider: str, delegate: str, kept_nodes: set[str]) -> Audit:
    """Intended vs actual per node of the graph ORT runs for ``model_path`` on ``provider``.

    ``kept_nodes``: source node names the conversion kept in float on purpose.
    """
    import onnx
    import onnxruntime as ort

    out = Audit(f"ONNX Runtime ({provider})", str(target), delegate)
    with tempfile.TemporaryDirectory(prefix="edgekit-audit-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(optimized)
        so.log_severity_level = 3
        ort.InferenceSession(str(model_path), so, providers=[provider])
        graph = onnx.load(str(optimized), load_external_data=False).graph
    produced_by = {o: n for n in graph.node for o in n.output}
    unit = "cpu" if provider == "CPUExecutionProvider" else delegate
    for index, node in enumerate(graph.node):
        if node.op_type in _CONVERSIONS:  # a full pass over a tensor between int8 and f32: counted, not judged
            out.ops.append(OpRun(index, node.op_type, node.name or node.output[0], "cpu" if provider ==
                                 "CPUExecutionProvider" else delegate, f"ai.onnx:{node.op_type}", "int8<->fp32",
                                 unit, "int8<->fp32"))
            continue
        if node.op_type in _BOUNDARY:
            continue
        precision = _precision(node)
        dequantized_input = any(produced_by.get(i) is not None and produced_by[i].op_type == "DequantizeLinear"
                                for i in node.input[:1])
        why = ""
        if target.is_quantized and node.op_type in _WEIGHTED:
            kept = any(k and (node.name == k or node.name.startswith(k)) for k in kept_nodes)
            intended = "fp32 (kept)" if kept else "int8"
            if not kept and dequantized_input:
                why = "dequantize-compute-quantize: ORT found no fused int8 kernel for this node"
        elif target.is_quantized:
            intended = precision  # element-wise nodes around int8 ones: whatever ORT fused them into
        else:
            intended = "fp32"
        out.ops.append(OpRun(index, node.op_type, node.name or node.output[0], unit,
                             f"{node.domain or 'ai.onnx'}:{node.op_type}", precision, unit, intended, why=why))
    if target.is_quantized:
        passes = Counter(n.op_type for n in graph.node if n.op_type in _ELEMENTWISE_INT8)
        if passes:
            out.limits.append(f"{sum(passes.values())} element-wise int8 kernels run as passes of their own ("
                              + ", ".join(f"{n} {op}" for op, n in passes.most_common()) + "): ORT's QLinearConv "
                              "fuses no activation but Relu/Clip, where its fp32 Conv fuses HardSwish/HardSigmoid "
                              "and the like; on x86 these passes are most of what int8 pays beyond the convolutions")
    return out


#: quantized element-wise kernels ORT runs as a pass over the tensor (no fusion into the producing convolution)
_ELEMENTWISE_INT8 = {"QLinearAdd", "QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax"}
