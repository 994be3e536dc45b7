"""Graph rewrites for int8: the rewritten model computes what the original does (checked in ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edgekit.core.rewrites import decompose_hard_activations


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_hard_activations_decomposed_compute_the_same():
    nodes = [helper.make_node("HardSwish", ["x"], ["a"], name="hs"),
             helper.make_node("HardSigmoid", ["a"], ["b"], name="hsig", alpha=0.25, beta=0.4),
             helper.make_node("HardSigmoid", ["b"], ["y"], name="hsig_default")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1000])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewritten, count = decompose_hard_activations(model)
    onnx.checker.check_model(rewritten)
    assert count == 3
    assert {n.op_type for n in rewritten.graph.node} == {"Add", "Clip", "Mul"}
    assert {"hs", "hsig", "hsig_default"} <= {n.name for n in rewritten.graph.node}  # names kept for keep-float
    x = np.random.default_rng(0).uniform(-8, 8, (4, 1000)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), atol=1e-6)
    assert [n.op_type for n in model.graph.node] == ["HardSwish", "HardSigmoid", "HardSigmoid"]  # input untouched
