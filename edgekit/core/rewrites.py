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


def fold_scalar_muls(model) -> int:
    """In a QDQ (quantized) ONNX model, remove each ``DequantizeLinear -> Mul(positive scalar c) -> QuantizeLinear``
    by reading the integer tensor before it with scale ``c * scale`` (the same zero point). A product by a
    constant is only a change of scale: ONNX Runtime would otherwise run it as a full pass over the tensor
    (``QLinearMul``, e.g. the ``x * 1/6`` of each decomposed HardSwish) and round it once more. Edits ``model``
    in place; returns the number of Muls removed.

    A Mul is folded only when its other input is a per-tensor ``DequantizeLinear``, its output goes through one
    per-tensor ``QuantizeLinear`` whose every consumer is a ``DequantizeLinear``, and nothing else (a graph
    output, another op) reads the removed tensors.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}

    def scalar(name: str):
        return numpy_helper.to_array(inits[name]) if name in inits and _size(inits[name]) == 1 else None

    def constant(dq) -> float | None:
        """The value of a DequantizeLinear of a scalar initializer (or a plain scalar initializer)."""
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            return None
        q, s = scalar(dq.input[0]), scalar(dq.input[1]) if len(dq.input) > 1 else None
        z = scalar(dq.input[2]) if len(dq.input) > 2 else np.zeros(1)
        if q is None or s is None or z is None:
            return None
        return float((float(q.ravel()[0]) - float(z.ravel()[0])) * float(s.ravel()[0]))

    folded, changed = 0, True
    while changed:
        changed = False
        producer = {o: n for n in graph.node for o in n.output}
        consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for mul in graph.node:
            if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or len(mul.input) != 2:
                continue
            dqs = [producer.get(i) for i in mul.input]
            values = [constant(d) for d in dqs]
            if (values[0] is None) == (values[1] is None):
                continue
            k = 0 if values[1] is not None else 1  # the activation side
            c, dq_a = values[1 - k], dqs[k]
            q_b = consumers.get(mul.output[0], [])
            if (c is None or not c > 0 or dq_a is None or dq_a.op_type != "DequantizeLinear" or len(dq_a.input) < 3
                    or scalar(dq_a.input[1]) is None or scalar(dq_a.input[2]) is None or len(q_b) != 1
                    or q_b[0].op_type != "QuantizeLinear" or mul.output[0] in outputs
                    or q_b[0].output[0] in outputs):
                continue
            q_b = q_b[0]
            readers = consumers.get(q_b.output[0], [])
            if not readers or any(r.op_type != "DequantizeLinear" or r.input[0] != q_b.output[0] for r in readers):
                continue
            if len(q_b.input) < 3 or (scalar(q_b.input[2]) is not None and scalar(q_b.input[2]).dtype
                                      != scalar(dq_a.input[2]).dtype):
                continue
            scale = np.array(float(scalar(dq_a.input[1]).ravel()[0]) * c,
                             scalar(dq_a.input[1]).dtype).reshape(scalar(dq_a.input[1]).shape)
            scale_name = f"{mul.name or mul.output[0]}_folded_scale"
            graph.initializer.append(numpy_helper.from_array(scale, scale_name))
            inits[scale_name] = graph.initializer[-1]
            for r in readers:
                r.input[0], r.input[1], r.input[2] = dq_a.input[0], scale_name, dq_a.input[2]
            drop = {id(mul), id(q_b)}
            for d in dqs:
                if d is not None and len(consumers.get(d.output[0], [])) == 1 and d.output[0] not in outputs:
                    drop.add(id(d))
            kept = [n for n in graph.node if id(n) not in drop]
            del graph.node[:]
            graph.node.extend(kept)
            folded += 1
            changed = True
            break
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used or i.name in outputs]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return folded


def _size(tensor) -> int:
    return int(np.prod(tensor.dims)) if len(tensor.dims) else 1
