"""Graph rewrites that keep what a model computes and change how a runtime can run it.

``HardSwish`` and ``HardSigmoid`` have no int8 kernel in ONNX Runtime (each becomes dequantize, f32 compute,
quantize: 58 of those passes in the bundled student) and LiteRT's XNNPACK takes no int8 ``HARD_SWISH``.
Written as ``Add``, ``Clip`` and ``Mul`` they compute the same function from ops every int8 runtime fuses
(``Clip`` folds into the quantization range of the ``Add`` before it). Converters apply this to quantized
targets only; the parity gate judges the result like any other.
"""

from __future__ import annotations

import numpy as np


def decompose_hard_activations(model):
    """A copy of ``model`` where ``HardSwish(x)`` is ``(x * 1/6) * Clip(x + 3, 0, 6)`` and ``HardSigmoid(x)``
    (``alpha``, ``beta``) is ``Clip(x + beta/alpha, 0, 1/alpha) * alpha``. Returns ``(model, rewritten count)``."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constants: dict[float, str] = {}

    def const(value: float) -> str:
        if value not in constants:
            name = f"ek_c{len(constants)}"
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
            constants[value] = name
        return constants[value]

    nodes, count = [], 0
    for n in graph.node:
        if n.op_type == "HardSwish" and n.domain in ("", "ai.onnx"):
            x, y, base, k = n.input[0], n.output[0], n.name or n.output[0], f"ek_hs{count}"
            # x/6 first: TensorFlow's converter fuses x * relu6(x + 3) / 6 back into HARD_SWISH. Short names for
            # the new tensors: the quantizer names two nodes after each, and long names weigh on the file
            nodes += [helper.make_node("Add", [x, const(3.0)], [f"{k}a"], name=f"{k}a"),
                      helper.make_node("Clip", [f"{k}a", const(0.0), const(6.0)], [f"{k}c"], name=f"{k}c"),
                      helper.make_node("Mul", [x, const(1 / 6)], [f"{k}s"], name=f"{k}s"),
                      helper.make_node("Mul", [f"{k}s", f"{k}c"], [y], name=base)]
            count += 1
        elif n.op_type == "HardSigmoid" and n.domain in ("", "ai.onnx"):
            attrs = {a.name: a.f for a in n.attribute}
            alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
            x, y, base, k = n.input[0], n.output[0], n.name or n.output[0], f"ek_hsig{count}"
            nodes += [helper.make_node("Add", [x, const(beta / alpha)], [f"{k}a"], name=f"{k}a"),
                      helper.make_node("Clip", [f"{k}a", const(0.0), const(1 / alpha)], [f"{k}c"], name=f"{k}c"),
                      helper.make_node("Mul", [f"{k}c", const(alpha)], [y], name=base)]
            count += 1
        else:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    return out, count
