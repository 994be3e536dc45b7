"""The parity gate's fallback: when int8 breaks the gate, the most sensitive layers stay float."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.sensitivity import rank_layers


@pytest.fixture(scope="session")
def outlier_model(workdir):
    """conv1 makes one channel ~1000x larger than the rest; conv2 undoes it. Per-tensor int8 on conv2's
    input then wipes out the seven small channels, which carry the whole signal."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w1[0] *= 1000.0
    w2 = rng.standard_normal((1, 8, 3, 3)).astype(np.float32) * 10.0  # confident logits
    w2[:, 0] = 0.0  # the huge channel contributes nothing: the output depends only on the small ones
    nodes = [helper.make_node("Conv", ["image", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["a"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2", "b2"], ["logit"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Sigmoid", ["logit"], ["mask"], name="sigmoid")]
    graph = helper.make_graph(nodes, "outlier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 32, 32])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(np.zeros(1, np.float32), "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # centre the logits on the data so that the mask is about half the image
    import onnxruntime as ort

    from edgekit import calibration
    from edgekit.spec import IOSpec, TensorSpec

    io = IOSpec((TensorSpec("image", (1, 3, 32, 32)),), ())
    x = np.concatenate([s["image"] for s in calibration.samples(io, None, n=8)])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    probe.graph.output.append(helper.make_tensor_value_info("logit", TensorProto.FLOAT, None))
    probe.ir_version = 8
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(["logit"], {"image": x[i:i + 1]})[0] for i in range(8)])
    model.graph.initializer[2].CopyFrom(numpy_helper.from_array(np.array([-np.median(logits)], np.float32), "b2"))
    folder = workdir / "outlier"
    folder.mkdir()
    onnx.save(model, str(folder / "outlier.onnx"))
    (folder / "model.yaml").write_text("inputs:\n  - name: image\n    value_range: [0.0, 1.0]\n    mean: [0.0]\n"
                                       "    std: [1.0]\noutputs:\n  - name: mask\n    kind: probability\n")
    return folder / "outlier.onnx"


def test_sensitivity_ranks_the_outlier_layer_first(outlier_model, tmp_path):
    from edgekit import calibration
    from edgekit.ingest import load_source

    src = load_source(outlier_model, tmp_path)
    ranking = rank_layers(src.onnx_path, calibration.samples(src.io, None, n=4))
    assert ranking[0].node == "conv2" and ranking[0].sqnr_db < ranking[1].sqnr_db - 10


@pytest.mark.parametrize("target", ["onnx-int8", "openvino-int8", "ncnn-int8", "tflite-int8"])
def test_gate_keeps_sensitive_layer_in_float(outlier_model, workdir, target):
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn",
                         "tflite": "ai_edge_litert"}[target.split("-")[0]])
    art = edgekit.convert(outlier_model, target, workdir / f"outlier-{target}", calib_samples=16, preprocess="unit")
    assert art.parity["passed"] and art.parity["outputs"][0]["iou"] >= 0.97
    if art.options.get("nncf_mode") == "accuracy_control":  # NNCF restored accuracy itself, and it says so
        assert any("first attempt failed the parity gate" in note for note in art.notes)
    else:
        assert "conv2" in art.parity["kept_float"]
        assert any("kept" in note and "conv2" in note for note in art.notes)
