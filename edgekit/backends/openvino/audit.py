"""Execution audit of an OpenVINO session, read from the compiled model's executed graph: each layer's runtime
precision and implementation (``brgconv_avx512_1x1_i8``, ``ref_any_f32``) and the ONNX layers it computes."""

from __future__ import annotations

from edgekit.core.audit import Audit, OpRun

#: layers that hold or move data: they have no compute precision to judge
_PLUMBING = {"Const", "Input", "Output", "Parameter", "Result", "Reshape", "Reorder", "Squeeze", "Unsqueeze"}
#: layers that a quantized IR is meant to compute in int8
_WEIGHTED = {"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"}
_PRECISION = {"i8": "int8", "u8": "int8", "f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def _reader(info):
    return lambda key: info[key].astype(str) if key in info else ""


def audit_openvino(session, target, kept_layers: set[str]) -> Audit:
    """Intended vs actual per executed layer of ``session`` (an OpenVINO session).

    ``kept_layers``: names of layers the conversion kept in float on purpose (matched against the layer's own
    name and the original layers it fused).
    """
    device = session.device
    compute = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[session.precision]
    out = Audit(f"OpenVINO ({device})", str(target), session.delegate)
    try:
        runtime = session._compiled.get_runtime_model()
    except RuntimeError as e:
        out.limits.append(f"{device} does not expose its executed graph: {str(e).splitlines()[0]}")
        return out
    for index, op in enumerate(runtime.get_ordered_ops()):
        info = op.get_rt_info()
        read = _reader(info)
        layer = read("layerType")
        if layer in _PLUMBING:
            continue
        impl = read("primitiveType") or "unknown"
        precision = _PRECISION.get(read("runtimePrecision").lower(), read("runtimePrecision") or "?")
        originals = {n.strip() for n in read("originalLayersNames").split(",") if n.strip()}
        kept = bool(originals & kept_layers) or op.get_friendly_name() in kept_layers
        if target.is_quantized and layer in _WEIGHTED:
            intended = "fp32 (kept)" if kept else "int8"
        elif target.is_quantized:
            intended = precision  # element-wise layers around int8 ones run in whatever the plugin chose
        else:
            intended = compute
        fast = not impl.startswith("ref")
        why = "" if fast else f"OpenVINO runs this {layer} with its reference implementation ({impl})"
        if intended == "int8" and precision != "int8":
            why = (why + "; " if why else "") + "no int8 implementation was chosen (no FakeQuantize fused into it)"
        out.ops.append(OpRun(index, layer, op.get_friendly_name(), device.split(":")[0].lower(), impl, precision,
                             device.split(":")[0].lower(), intended, fast=fast, why=why))
    return out
