"""Latency prediction: kernel features counted on hand-built graphs, the predictor on a known cost model, and
``edgekit predict`` / ``edgekit profile --prune`` on a small local device."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.apps.profiling import predict as pr
from edgekit.errors import InputError


def _graph(two_consumers: bool = False):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c2"], ["s2"], name="sig"),
             helper.make_node("GlobalAveragePool", ["s2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w3"], ["y"], name="fc", transB=1)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]
    if two_consumers:  # conv1's output is also a graph output: the Relu cannot be fused into it
        outputs.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, 8, 32, 32]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_kernels_count_macs_bytes_and_fusion():
    ks = pr.kernels(_graph())
    assert [(k.op, k.kind, k.fused) for k in ks] == [("Conv", "conv", ["Relu"]), ("Conv", "dwconv", ["Sigmoid"]),
                                                     ("GlobalAveragePool", "other", []), ("Gemm", "gemm", [])]
    out = 8 * 32 * 32
    assert ks[0].macs == out * 3 * 3 * 3  # every output element: Cin x kh x kw multiply-adds
    assert ks[1].macs == out * 1 * 3 * 3  # depthwise: one input channel per output channel
    assert ks[3].macs == 4 * 8
    assert ks[0].bytes == 4 * (3 * 32 * 32 + 8 * 3 * 3 * 3 + 8 + out)  # input, weights, bias, output (fp32)
    f = pr.features(ks)
    assert f["kernels"] == 4 and f["one"] == 1
    assert f["conv_gmacs"] == pytest.approx(out * 27 / 1e9) and f["dw_gmacs"] == pytest.approx(out * 9 / 1e9)
    assert f["gemm_gmacs"] == pytest.approx(32 / 1e9)
    assert f["other_mb"] == pytest.approx(4 * (out + 8) / 1e6)  # the pool reads the map and writes 8 values
    unfused = pr.kernels(_graph(two_consumers=True))
    assert [k.op for k in unfused] == ["Conv", "Relu", "Conv", "GlobalAveragePool", "Gemm"]


def test_unreadable_model_is_an_input_error(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot read the model's graph"):
        pr.kernels(bad)


def test_predictor_recovers_a_known_cost_model():
    """Latencies made by the model's own form (per-runtime speed x thread factor x non-negative kernel costs):
    every held-out point is predicted almost exactly, and a runtime never measured gets no prediction."""
    rng = random.Random(3)
    w = np.array([0.2, 0.01, 30.0, 80.0, 0.0, 0.02, 0.05])
    speed = {"onnx-fp32": 1.0, "ncnn-fp16": 0.7, "openvino-fp32": 1.3}
    threads = {1: 1.0, 2: 0.6}
    samples = []
    for model in range(3):
        for hw in ((64, 64), (96, 96), (128, 128)):
            px = hw[0] * hw[1] / 4096
            x = (1.0, 40 + 10 * model, 0.01 * px * (1 + model), 0.002 * px, 0.0, 2.0 * px, 1.0 * px * (2 - model / 2))
            for t, s in speed.items():
                for n, f in threads.items():
                    samples.append(pr.Sample(t, "cpu", n, x, s * f * float(np.dot(w, x)), f"m{model}", hw))
    rng.shuffle(samples)
    loo = pr.error_summary(pr.leave_one_out(samples))
    assert loo["n"] == len(samples) and loo["share_within_10"] == 1.0 and loo["median_abs_error"] < 1e-3
    lomo = pr.error_summary(pr.leave_one_out(samples, by_model=True))
    assert lomo["share_within_10"] == 1.0
    p = pr.Predictor(samples)
    assert p.predict("tflite-fp32", "cpu", 1, samples[0].x) is None and p.predict("onnx-fp32", "cpu", 4,
                                                                                   samples[0].x) is None


def _device(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "small.yaml"
    path.write_text(json.dumps({"id": "small-cpu", "hardware": "cpu", "reach": "local",
                                "targets": ["onnx-fp32", "openvino-fp32"], "threads": [1],
                                "resolutions": [[64, 64], [96, 96], [128, 128]], "budget": {"fps": 30},
                                "runs": 7, "warmup": 2, "load": {"busy": 0}}))
    return path


@pytest.mark.slow
def test_pruned_profile_then_full_then_predict(tmp_path, tiny_onnx):
    from edgekit.apps.profiling.profile import profile_device

    dev = _device(tmp_path)
    out = tmp_path / "out"
    pruned = profile_device(dev, tiny_onnx, out, tmp_path / "configs", prune=True)
    lines = (out / "small-cpu" / "points.jsonl").read_text().splitlines()
    measured = [p for p in pruned.points if p.ok]
    skipped = [p for p in pruned.points if not p.ok]
    assert len(lines) == len(measured) < 6 and len(skipped) == 6 - len(measured)
    assert all(p.error.startswith("not measured (--prune)") for p in skipped)
    note = next(n for n in pruned.notes if n.startswith("--prune"))
    assert f"{len(skipped)} measurement(s) saved" in note and f"{len(measured)} point(s) measured" in note
    # every onnx-fp32 point (the reference target) and the openvino-fp32 point at the largest input were measured
    assert {(p.target, p.resolution) for p in measured} >= {("onnx-fp32", (64, 64)), ("onnx-fp32", (96, 96)),
                                                           ("onnx-fp32", (128, 128)), ("openvino-fp32", (128, 128))}
    # the full sweep (resuming the pruned one's points) chooses the same configuration
    full = profile_device(dev, tiny_onnx, out, tmp_path / "configs")
    assert all(p.ok for p in full.points) and len((out / "small-cpu" / "points.jsonl").read_text().splitlines()) == 6
    assert full.choice.chosen.key == pruned.choice.chosen.key

    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "predict", str(tiny_onnx), "--device", str(dev),
                          "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["trained_on"] == {"points": 6, "models": 1, "points_with_kernels": 6}
    # every measured point's kernels were timed (local device) and stored next to its points
    timed = pr.load_kernels(out / "small-cpu" / pr.KERNELS_FILE)
    assert {(k[1], k[2]) for k in timed} == {(p.resolution, p.target) for p in full.points}
    assert got["expected_error"]["per_kernel"]["leave_one_out"]["n"] == 6
    assert got["expected_error"]["method"]["p50"] in ("per-kernel", "whole-model")
    measured_p50 = {(tuple(p.resolution), p.target): p.p50_ms for p in full.points}
    assert len(got["predictions"]) == 6
    for p in got["predictions"]:
        assert p["p50_ms"] > 0 and p["measured_p50_ms"] == measured_p50[(tuple(p["resolution"]), p["target"])]
    loo = got["expected_error"]["leave_one_out"]
    assert loo["n"] == 6 and 0 <= loo["within_10"] <= 6 and loo["median_abs_error"] >= 0
    assert any("only one model" in n for n in got["notes"])
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "predict", str(tiny_onnx), "--device", str(dev),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "expected error (p50): leave-one-out:" in res.stdout, res.stderr

    # a model never measured there (same architecture, other weights): its kernels' structure comes from its own
    # artifacts, converted here into the profiler's cache; the kernels are those of the measured model (same shapes),
    # so its per-kernel prediction is the measured model's uncalibrated one
    import torch

    from edgekit.apps.profiling import kernels as kp
    from edgekit.apps.profiling.sweep import load_points
    from edgekit.core.files import sha256_file
    from edgekit.core.ingest import export_torch
    from edgekit.zoo.portrait_seg import build

    torch.manual_seed(1)
    other = tmp_path / "other" / "other.onnx"
    other.parent.mkdir()
    export_torch(build(width=0.5), other, (1, 3, 64, 64), input_name="image", output_names=["mask"], dynamic_hw=True)
    (other.parent / "model.yaml").write_text((tiny_onnx.parent / "model.yaml").read_text())
    res = pr.predict_device(other, dev, out)
    assert res.expected_error["method"]["p50"] == "per-kernel"
    assert len(list((out / "artifacts" / sha256_file(other)[:16]).glob("*/*/artifact.json"))) == 6
    points = list(load_points(out / "small-cpu" / "points.jsonl").values())
    fitted = kp.KernelPredictor(pr.kernel_samples(points, timed))
    for p in res.predictions:
        ks = timed[(sha256_file(tiny_onnx), p.resolution, p.target, p.delegate, p.threads)]
        assert p.p50_ms == pytest.approx(fitted.predict(p.target, p.delegate, p.threads, ks), rel=1e-9), (
            p.label(), res.notes)


def test_predict_without_measurements_is_one_line_exit_2(tmp_path, tiny_onnx):
    dev = _device(tmp_path)
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "predict", str(tiny_onnx), "--device", str(dev),
                          "--out", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "no measurements of device small-cpu" in res.stderr and "edgekit profile" in res.stderr


def test_points_naming_artifacts_elsewhere_are_not_read(tmp_path):
    """points.jsonl is a file: a point naming an artifact outside the profiler's artifacts folder is left out
    before anything there is opened; one whose artifact is gone is left out too. Both are noted."""
    from edgekit.apps.profiling.sweep import Point

    inside = tmp_path / "out" / "artifacts"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "artifact.json").write_text("{not json")  # would fail loudly if it were read
    pts = [Point((64, 64), "onnx-fp32", "cpu", 1, 1.0, 1.2, artifact=str(tmp_path / "elsewhere")),
           Point((64, 64), "onnx-fp32", "cpu", 1, 1.0, 1.2, artifact=str(inside / "gone"))]
    notes: list[str] = []
    assert pr.samples_from_points(pts, "p50_ms", notes, inside) == []
    assert any("1 measured point(s) were left out: their artifacts are outside" in n for n in notes)
    assert any("1 measured point(s) were left out: their artifacts are gone" in n for n in notes)
