"""Execution audit of a LiteRT session: which ops XNNPACK (or an external delegate) took, which ran on LiteRT's
built-in kernels, and in which precision each computed (from its tensors' types)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgekit.core.audit import Audit, OpRun, intended_precision

#: ops that only move values between precisions or layouts: no compute precision of their own
_BOUNDARY = {"QUANTIZE", "DEQUANTIZE"}
_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
_INT = (np.int8, np.uint8, np.int16)


def audit_litert(session, target, kept: bool) -> Audit:
    """Intended vs actual per op of ``session`` (a :class:`~edgekit.backends.tflite.session.LiteRTSession`).

    ``kept``: the artifact kept some layers in float on purpose; a weighted op with float weights is then
    intended float.
    """
    from edgekit.backends.tflite.session import _delegated_ops

    it = session._it
    ops = it._get_ops_details()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    delegated = _delegated_ops(ops)
    asked = session._unit  # cpu:xnnpack, cpu:builtin, gpu, npu
    quantized = target.is_quantized
    out = Audit(f"LiteRT ({asked})", str(target), session.delegate)
    for o in ops:
        if o["op_name"] == "DELEGATE":
            continue
        taken = o["index"] in delegated
        unit = asked if taken else "cpu:builtin"
        dtypes = [np.dtype(tensors[int(i)]["dtype"]) for i in o["inputs"] if int(i) >= 0 and int(i) in tensors]
        first = dtypes[0] if dtypes else np.dtype(np.float32)
        weight = dtypes[1] if o["op_name"] in _WEIGHTED and len(dtypes) > 1 else None
        if first in _INT:
            precision = "int8"
        elif weight is not None and weight in _INT:
            precision = "int8" if target.precision == "int8-dynamic" else "int8-weights"  # dynamic range
        elif first == np.float16 or weight == np.float16:
            precision = "fp16"
        else:
            precision = "fp32"
        name = tensors[int(o["outputs"][0])]["name"] if len(o["outputs"]) else str(o["index"])
        float_weights = weight is not None and weight in (np.float32, np.float16)
        if o["op_name"] in _BOUNDARY:
            intended = precision
        elif target.precision == "int8-dynamic":
            # dynamic range: weighted ops int8 weights, everything else float (as intended)
            intended = "int8" if o["op_name"] in _WEIGHTED else "fp32"
        elif target.precision == "fp16":
            intended = "fp32"  # fp16 weights are dequantized: XNNPACK computes in fp32 on x86
            precision = "fp32" if precision == "fp16" else precision
        else:
            intended = intended_precision(target.precision, quantized, kept=kept and float_weights)
        why = "" if taken or asked == "cpu:builtin" else \
            f"{'XNNPACK' if asked.startswith('cpu') else asked} did not take this op ({precision} {o['op_name']}: " \
            "no kernel for it in this LiteRT build)" + (
                "; -O hard_activations=decompose runs it on XNNPACK (the gate judges the result)"
                if o["op_name"] in ("HARD_SWISH", "RELU_0_TO_1") else "")
        out.ops.append(OpRun(o["index"], o["op_name"], name, unit, "delegate" if taken else "builtin", precision,
                             asked, intended, fast=taken or asked == "cpu:builtin", why=why))
    if target.precision == "int8":
        passes = Counter(o.op for o in out.ops if o.precision == "int8" and o.op in _ELEMENTWISE)
        if passes:
            out.limits.append(f"{sum(passes.values())} element-wise int8 ops run as passes of their own ("
                              + ", ".join(f"{n} {op}" for op, n in passes.most_common()) + "): an int8 "
                              "convolution fuses only ReLU/ReLU6, where fp32 runs each HARD_SWISH as one pass and "
                              "needs no QUANTIZE/DEQUANTIZE")
    return out


#: element-wise ops (a pass over the tensor each, in int8 as in fp32)
_ELEMENTWISE = {"ADD", "MUL", "SUB", "HARD_SWISH", "LOGISTIC", "RELU_0_TO_1", "QUANTIZE", "DEQUANTIZE"}
