"""Execution audit of an ncnn session, read from the layers it loaded: ncnn runs a Convolution/InnerProduct in
int8 when the layer carries ``int8_scale_term`` and the net has ``use_int8_inference``; weights stored as fp16
are computed in fp32 on x86 (fp16 storage, fp32 arithmetic here); everything else runs in fp32."""

from __future__ import annotations

from edgekit.backends.ncnn import model as nm
from edgekit.core.audit import Audit, OpRun

_PLUMBING = {"Input", "Split", "Reshape", "Flatten", "Noop", "MemoryData"}
#: layer type -> the param id of its int8_scale_term
_INT8_CAPABLE = {"Convolution": 8, "ConvolutionDepthWise": 8, "InnerProduct": 8}


def audit_ncnn(session, target, kept_layers: set[str]) -> Audit:
    """Intended vs actual per layer of ``session`` (an ncnn session) for ``target``."""
    param, _weights = session._files
    int8_net = session._net.opt.use_int8_inference
    fp16_storage = session._net.opt.use_fp16_storage
    unit = session._unit
    out = Audit(f"ncnn ({unit})", str(target), session.delegate)
    # the .param alone says what each layer is and whether it carries int8 scales; the .bin is not needed
    for index, layer in enumerate(nm.read_param(param)):
        if layer.type in _PLUMBING:
            continue
        scale_key = _INT8_CAPABLE.get(layer.type)
        if scale_key is not None and int8_net and int(layer.params.get(scale_key, 0)):
            precision = "int8"
        else:
            precision = "fp32"
        if target.is_quantized and scale_key is not None:
            intended = "fp32 (kept)" if layer.name in kept_layers else "int8"
        elif target.is_quantized:
            intended = precision  # ncnn's int8 scheme quantizes convolutions and inner products only
        else:
            intended = "fp32"  # fp16 targets: fp16 storage, fp32 arithmetic on this CPU
        kernel = "int8" if precision == "int8" else ("fp16 storage" if fp16_storage else "fp32")
        why = "" if precision == intended or intended.endswith("(kept)") else \
            "the layer has no int8_scale_term (not quantized by the conversion)"
        out.ops.append(OpRun(index, layer.type, layer.name, unit.split(":")[0], kernel, precision,
                             session.delegate.split(":")[0], intended, why=why))
    if unit.startswith("gpu"):
        out.limits.append("on Vulkan ncnn chooses fp16/fp32 per layer at run time; not reported per layer")
    if int8_net:
        layers = [ly for ly in nm.read_param(param) if ly.type not in _PLUMBING]
        int8 = {ly.name for ly in layers if ly.type in _INT8_CAPABLE and int(ly.params.get(8, 0))}
        between = sorted({ly.type for ly in layers if ly.name not in int8})
        if int8:
            out.limits.append(f"ncnn's int8 is per layer: each of the {len(int8)} int8 layers quantizes its fp32 "
                              "input and dequantizes its output, and every other layer ("
                              + ", ".join(between[:8]) + (" ..." if len(between) > 8 else "")
                              + ") runs in fp32 between them; those passes and fp32 layers are what int8 pays "
                              "beyond the convolutions")
    return out
