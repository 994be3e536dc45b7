"""int8 graph rewrites of the ONNX Runtime converter: a product by a constant folded into a scale changes nothing
the model computes (run both in ORT), and squeeze-excite layers are found as the layers fed by a global pooling."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.backends.onnx.converter import pooled_layers
from edgekit.core.rewrites import decompose_hard_activations, fold_scalar_muls


def _se_model():
    """Conv -> HardSwish -> squeeze-excite (GAP, 1x1 conv, Relu, 1x1 conv, HardSigmoid, Mul) -> Conv."""
    rng = np.random.default_rng(0)
    w = lambda *s: numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32))  # noqa: E731
    inits = []
    for name, shape in [("w1", (8, 3, 3, 3)), ("f1", (4, 8, 1, 1)), ("f2", (8, 4, 1, 1)), ("w2", (2, 8, 1, 1))]:
        t = w(*shape)
        t.name = name
        inits.append(t)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c1"], ["h1"], name="hs"),
             helper.make_node("GlobalAveragePool", ["h1"], ["g"], name="gap"),
             helper.make_node("Conv", ["g", "f1"], ["s1"], name="fc1"),
             helper.make_node("Relu", ["s1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "f2"], ["s2"], name="fc2"),
             helper.make_node("HardSigmoid", ["s2"], ["gate"], name="hsig", alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["h1", "gate"], ["m"], name="se_mul"),
             helper.make_node("Conv", ["m", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    tmp = tmp_path_factory.mktemp("fold")
    model, _ = decompose_hard_activations(_se_model())
    onnx.save(model, tmp / "f.onnx")
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]

    class Reader:
        it = iter([{"x": x} for x in xs])

        def get_next(self):
            return next(self.it, None)

    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(tmp / "f.onnx"), str(tmp / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    return onnx.load(str(tmp / "q.onnx")), xs


def test_scalar_muls_fold_into_scales_and_compute_the_same(quantized):
    q, xs = quantized
    folded = onnx.ModelProto()
    folded.CopyFrom(q)
    n = fold_scalar_muls(folded)
    onnx.checker.check_model(folded)
    muls = lambda m: sum(node.op_type == "Mul" for node in m.graph.node)  # noqa: E731
    # HardSwish: x*(1/6) and the product; HardSigmoid: *(1/6); SE: the gate product -> the two constant ones go
    assert (n, muls(q), muls(folded)) == (2, 4, 2)
    for x in xs[:3]:
        a, b = _run(q, x), _run(folded, x)
        # the quantizer gave x*(1/6) exactly 1/6 of x's scale: reading x's integers at that scale is the same value
        np.testing.assert_allclose(b, a, atol=1e-6)
    assert fold_scalar_muls(folded) == 0  # nothing left to fold


def test_a_mul_read_by_a_graph_output_is_not_folded(quantized):
    q, _ = quantized
    m = onnx.ModelProto()
    m.CopyFrom(q)
    scaled = [n for n in m.graph.node if n.op_type == "Mul" and n.name.endswith("s")][0]
    m.graph.output.append(onnx.ValueInfoProto(name=scaled.output[0]))
    assert fold_scalar_muls(m) == 1  # only the HardSigmoid's


def test_pooled_layers_are_the_squeeze_excite_path():
    model, _ = decompose_hard_activations(_se_model())
    assert pooled_layers(model) == ["fc1", "relu", "fc2"]  # not the HardSigmoid's Add/Clip, nor the Mul, nor conv2


def test_pooled_layers_read_the_pooled_value_in_float(tmp_path):
    """A squeeze-excite's pooled value far outside its calibrated range (a flat bright input: each pixel within the
    range calibrated on noise, their mean not) reaches fc1 unclipped: no Quantize/Dequantize between the pool and
    the float layers. fc1's output is compared with the float model's, run by ORT."""
    from types import SimpleNamespace

    from onnxruntime.quantization import CalibrationMethod, quantize_static

    from edgekit.backends.onnx.converter import _quantize

    model, _ = decompose_hard_activations(_se_model())
    onnx.save(model, tmp_path / "pre.onnx")
    rng = np.random.default_rng(1)
    job = SimpleNamespace(keep_float=(), options={}, calibration=[
        {"x": rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(8)])
    _, pooled = _quantize(quantize_static, tmp_path / "pre.onnx", tmp_path / "q.onnx", job, CalibrationMethod.MinMax,
                          model)
    assert pooled == ["fc1", "relu", "fc2"]
    q = onnx.load(str(tmp_path / "q.onnx"))
    producer = {o: n for n in q.graph.node for o in n.output}
    fc1 = next(n for n in q.graph.node if n.name == "fc1")
    assert producer[fc1.input[0]].op_type == "GlobalAveragePool"  # read straight from the pool
    flat = np.full((1, 3, 16, 16), 0.9, np.float32)

    def fc1_out(m):
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        probe.graph.output.append(onnx.ValueInfoProto(name=fc1.output[0]))
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run([fc1.output[0]], {"x": flat})[0]

    want, got = fc1_out(model), fc1_out(q)
    # only conv1's int8 rounding remains (a few %); a pooled value clipped to its calibrated range is far off
    np.testing.assert_allclose(got, want, rtol=0.1, atol=0.05 * np.abs(want).max())
