"""Which layers suffer most from int8? A per-layer quantization-error ranking.

For every Conv/ConvTranspose/Gemm/MatMul node of the float ONNX model, the real input activations
(captured with ONNX Runtime on calibration data) and the weights are fake-quantized the way int8
backends do (activations per-tensor uint8 over the observed range, weights per-output-channel
symmetric int8), and the layer's output is recomputed. The signal-to-quantization-noise ratio
(SQNR, dB) of that output ranks the layers: the lowest SQNR is the most sensitive. Converters that
can keep named layers in float use this ranking when the parity gate fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class LayerSensitivity:
    node: str
    op_type: str
    sqnr_db: float


def _fake_quant_act(x: np.ndarray) -> np.ndarray:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255 or 1.0
    zp = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale


def _fake_quant_weight(w: np.ndarray, axis: int = 0) -> np.ndarray:
    red = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.abs(w).max(axis=red, keepdims=True) / 127
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / scale), -127, 127) * scale


def rank_layers(onnx_path, samples: list[dict[str, np.ndarray]], max_samples: int = 8) -> list[LayerSensitivity]:
    """Rank weighted layers from most to least sensitive to int8 quantization."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    # keep-float addresses layers by name: unnamed or same-named nodes cannot be kept, so they are not ranked
    names = [n.name for n in model.graph.node]
    nodes = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in inits
             and n.name and names.count(n.name) == 1]
    if not nodes:
        return []
    wanted = {n.input[0] for n in nodes} | {n.output[0] for n in nodes}
    existing = {o.name for o in model.graph.output}
    for name in sorted(wanted - existing - set(inits)):
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    captured = [dict(zip(names, sess.run(names, s))) for s in samples[:max_samples]]

    ranking = []
    for n in nodes:
        single = _single_node_model(n, inits, model.opset_import)
        sub = ort.InferenceSession(single.SerializeToString(), so, providers=["CPUExecutionProvider"])
        signal = noise = 0.0
        w = inits[n.input[1]]
        wq = _fake_quant_weight(w, axis=1 if n.op_type == "ConvTranspose" else 0).astype(np.float32)
        for c in captured:
            x = c[n.input[0]]
            ref = c[n.output[0]]
            q = sub.run(None, {"x": _fake_quant_act(x).astype(np.float32), "w": wq})[0]
            signal += float((ref.astype(np.float64) ** 2).sum())
            noise += float(((ref - q).astype(np.float64) ** 2).sum())
        sqnr = 10 * np.log10(signal / noise) if noise > 0 else float("inf")
        ranking.append(LayerSensitivity(n.name, n.op_type, float(sqnr)))
    return sorted(ranking, key=lambda r: r.sqnr_db)


def _single_node_model(node, inits, opsets):
    import onnx
    from onnx import helper, numpy_helper

    inputs = ["x", "w"] + list(node.input[2:])
    extra = [numpy_helper.from_array(inits[i], i) for i in node.input[2:] if i in inits]
    n = helper.make_node(node.op_type, inputs, ["y"], **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    g = helper.make_graph([n], "one", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None),
                                       helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializer=extra)
    return helper.make_model(g, opset_imports=list(opsets))
