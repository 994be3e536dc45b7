"""Latency prediction: kernel features counted on hand-built graphs, the predictor on a known cost model, and
``edgekit predict`` / ``edgekit profile --prune`` on a small local device."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
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
    # every point has its kernels timed and its artifact: both methods' errors are compared on all six, and the
    # lower one chose the method
    cmp = got["expected_error"]["compared_on"]["p50"]
    assert cmp["configurations"] == 6 and cmp["per_kernel"]["n"] == cmp["whole_model"]["n"] == 6
    lower = cmp["per_kernel"]["median_abs_error"] <= cmp["whole_model"]["median_abs_error"]
    assert got["expected_error"]["method"]["p50"] == ("per-kernel" if lower else "whole-model")
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
    # artifacts, converted here into the profiler's cache, and is that of the measured model (same shapes, so the
    # runtime runs the same kernels); its latency on the synthetic device is checked in
    # test_unseen_model_is_predicted_from_its_kernels
    import torch

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
    assert any("without an error estimate" in n for n in res.notes)
    assert len(list((out / "artifacts" / sha256_file(other)[:16]).glob("*/*/artifact.json"))) == 6
    assert len(res.predictions) == 6 and all(p.p50_ms and p.p50_ms > 0 and p.measured_p50_ms is None
                                             for p in res.predictions)

    def shape(ks):
        return Counter((k.kind, k.op, k.macs, k.in_elems, k.out_elems, k.weight_elems, k.cin, k.cout, k.window)
                       for k in ks)

    for p in res.predictions:
        listed = pr.kernel_structure(other, p.target, p.delegate, p.resolution, out / "artifacts")
        measured = timed[(sha256_file(tiny_onnx), p.resolution, p.target, p.delegate, p.threads)]
        assert listed and shape(listed) == shape(measured), p.label()


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


# ---------------------------------------------------------------------------------------- a synthetic device
#: blocks (input channels, channels): every kernel of one model appears, with the same shapes, in the others
_BLOCKS = {"a": [(32, 32), (32, 48), (48, 48)], "b": [(32, 32), (32, 32), (32, 48), (48, 48), (48, 48)],
           "c": [(32, 32), (32, 48), (48, 48), (48, 48)]}
#: the synthetic device's true cost of a kernel (ms): per kind, x (1, M MACs, M elements in, M elements out,
#: M weights); a runtime's speed multiplies it; a run is 1.05 x its kernels' sum + 0.2 ms (x speed), its p90 1.2 x
_COST = {"conv": (0.004, 0.02, 0.3, 0.5, 1.0), "dwconv": (0.003, 0.05, 0.6, 0.6, 0.0),
         "eltwise": (0.002, 0.0, 0.4, 0.8, 0.0)}
_SPEED = {"onnx-fp32": 1.0, "openvino-fp32": 0.8}
_RES = [(16, 16), (24, 24), (32, 32)]


def _block_graph(blocks, path):
    """x -> stem conv 3->32 + Relu -> per block: conv cin->c 3x3 + Relu, depthwise 3x3, Add -> head conv c->1 1x1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(len(blocks))
    inits, nodes = [], []

    def conv(src, cin, cout, k, name, group=1):
        w = numpy_helper.from_array(rng.standard_normal((cout, cin // group, k, k)).astype(np.float32), name + "_w")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [src, w.name], [name], group=group, pads=[k // 2] * 4))
        return name

    x = conv("x", 3, 32, 3, "stem")
    nodes.append(helper.make_node("Relu", [x], ["stem_r"]))
    x = "stem_r"
    for i, (cin, c) in enumerate(blocks):
        r = conv(x, cin, c, 3, f"b{i}_c")
        nodes.append(helper.make_node("Relu", [r], [f"b{i}_r"]))
        d = conv(f"b{i}_r", c, c, 3, f"b{i}_d", group=c)
        nodes.append(helper.make_node("Add", [d, f"b{i}_r"], [f"b{i}_a"]))
        x = f"b{i}_a"
    conv(x, blocks[-1][1], 1, 1, "y")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"])], inits)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _block_kernels(blocks, hw, target):
    """The kernels the synthetic runtime runs for ``blocks`` at ``hw`` (counted here by hand), each timed 3 times
    (the fastest at its true cost), and the run's true p50 (ms)."""
    from edgekit.backends.kerneltimes import KernelTime

    n = hw[0] * hw[1]
    ks = [KernelTime("stem", "Conv", "conv", 27.0 * 32 * n, 3.0 * n, 32.0 * n, 27.0 * 32, 3, 32, 9)]
    for i, (cin, c) in enumerate(blocks):
        ks += [KernelTime(f"b{i}_c", "Conv", "conv", 9.0 * cin * c * n, float(cin * n), float(c * n), 9.0 * cin * c,
                          cin, c, 9),
               KernelTime(f"b{i}_d", "DepthwiseConv", "dwconv", 9.0 * c * n, float(c * n), float(c * n), 9.0 * c, c, c,
                          9),
               KernelTime(f"b{i}_a", "Add", "eltwise", 0.0, 2.0 * c * n, float(c * n), 0.0, c, c, 0)]
    c = blocks[-1][1]
    ks.append(KernelTime("y", "Conv", "conv", float(c * n), float(c * n), float(n), float(c), c, 1, 1))
    total = 0.0
    for k in ks:
        cost = _SPEED[target] * float(np.dot(_COST[k.kind], [1, k.macs / 1e6, k.in_elems / 1e6, k.out_elems / 1e6,
                                                            k.weight_elems / 1e6]))
        k.ms = [cost * 1.3, cost, cost * 1.1]
        total += cost
    return ks, _SPEED[target] * (1.05 * total / _SPEED[target] + 0.2)


@pytest.fixture
def synthetic_device(tmp_path):
    """Two models (a, b) measured on a synthetic device into ONE points.jsonl and kernels.jsonl (records written
    here, true latencies known), plus hostile kernel lines; c is never measured there."""
    from edgekit.apps.profiling.sweep import Point, cached_artifact
    from edgekit.core.files import sha256_file

    dev = _device(tmp_path)
    spec = json.loads(dev.read_text())
    dev.write_text(json.dumps({**spec, "resolutions": [list(r) for r in _RES]}))
    out = tmp_path / "out"
    folder = out / "small-cpu"
    folder.mkdir(parents=True)
    models = {m: _block_graph(b, tmp_path / "models" / m / f"{m}.onnx") for m, b in _BLOCKS.items()}
    truth, points, records = {}, [], []
    for m in ("a", "b", "c"):
        for hw in _RES:
            for t in _SPEED:
                ks, y = _block_kernels(_BLOCKS[m], hw, t)
                truth[(m, hw, t)] = (y, ks)
                if m == "c":
                    continue
                art = cached_artifact(models[m], "onnx-fp32", hw, out / "artifacts")  # the graph's features
                sha = sha256_file(models[m])
                points.append(Point(hw, t, "cpu", 1, y, 1.2 * y, artifact=str(art.path), model_sha256=sha, model=m))
                records.append({"resolution": list(hw), "target": t, "delegate": "cpu", "threads": 1,
                                "model_sha256": sha, "kernels": [k.to_dict() for k in ks]})
    lines = [json.dumps(p.to_dict()) for p in points]
    (folder / "points.jsonl").write_text("\n".join(lines) + "\n")
    hostile = [{**records[0], "kernels": [{**records[0]["kernels"][0], "op": 5}]},
               {**records[1], "kernels": [{**records[1]["kernels"][0], "op": ["Conv"]}]}]
    (folder / pr.KERNELS_FILE).write_text("\n".join(json.dumps(r) for r in records + hostile) + "\n")
    return dev, out, models, truth


def test_several_models_in_one_folder_all_train_the_predictor(synthetic_device):
    """Two models profiled into one device folder both reach `edgekit predict` (same configurations, different
    models: neither overwrites the other), the unseen-model error is stated for both methods, hostile kernel lines
    end in a note, and a measured model's predictions match what the synthetic device measured."""
    dev, out, models, truth = synthetic_device
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "predict", str(models["a"]), "--device", str(dev),
                          "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    got = json.loads(res.stdout)
    assert got["trained_on"] == {"points": 12, "models": 2, "points_with_kernels": 12}
    e = got["expected_error"]
    assert e["leave_one_model_out"]["n"] == 12 and e["per_kernel"]["leave_one_model_out"]["n"] == 12
    assert e["compared_on"]["p50"]["configurations"] == 12  # a measured model: every point, both methods
    # the synthetic device's latency is a sum of its kernels' costs, so the per-kernel method is exact; for a measured
    # model both methods are (every feature of one model is affine in the pixel count, and its own points calibrate)
    assert f"{out / 'small-cpu' / pr.KERNELS_FILE}: 2 line(s) that are not kernel timings were ignored" in got["notes"]
    assert len(got["predictions"]) == 6
    for p in got["predictions"]:
        y = truth[("a", tuple(p["resolution"]), p["target"])][0]
        assert p["measured_p50_ms"] == y  # model a's own point, not model b's at the same configuration
        assert p["p50_ms"] == pytest.approx(y, rel=1e-3) and p["tail_ms"] == pytest.approx(1.2 * y, rel=1e-3)


def test_unseen_model_is_predicted_from_its_kernels(synthetic_device, monkeypatch):
    """A model the device never ran (c: the measured models' kernels in another combination): its kernels come
    from the runtime's graph of it (here the synthetic runtime's, counted by the test) and its predicted latency is
    the one the synthetic device's costs give, within the stated unseen-model error."""
    dev, out, models, truth = synthetic_device
    asked = []

    def structure(model, target, delegate, hw, cache, notes=None):
        asked.append((Path(model).name, target, delegate, tuple(hw)))
        return truth[("c", tuple(hw), target)][1]

    monkeypatch.setattr(pr, "kernel_structure", structure)
    res = pr.predict_device(models["c"], dev, out)
    assert sorted(asked) == sorted(("c.onnx", t, "cpu", hw) for hw in _RES for t in _SPEED)
    e = res.expected_error
    assert e["method"]["p50"] == "per-kernel" and e["per_kernel"]["leave_one_model_out"]["share_within_10"] == 1.0
    assert e["compared_on"]["p50"]["configurations"] == 12
    assert any("never measured on this device" in n for n in res.notes)
    for p in res.predictions:
        y = truth[("c", p.resolution, p.target)][0]
        assert p.measured_p50_ms is None
        assert p.p50_ms == pytest.approx(y, rel=0.01) and p.tail_ms == pytest.approx(1.2 * y, rel=0.01), p.label()


def test_method_choice_compares_both_errors_on_the_same_configurations():
    """The whole-model method is worse overall (50% on most configurations) but better on the 4 configurations
    that have kernel timings (1% vs 5%): the per-kernel method is not chosen on an unequal comparison."""
    from edgekit.apps.profiling import kernels as kp

    def sample(i, cls):
        args = ("onnx-fp32", "cpu", 1, (1.0,) if cls is pr.Sample else (), 10.0, "m", (16 * (i + 1), 16))
        return cls(*args)

    whole = [(sample(i, pr.Sample), 10.0 * (1.01 if i < 4 else 1.5)) for i in range(10)]
    kern = [(sample(i, kp.KernelSample), 10.5) for i in range(4)]
    method, cmp, why = pr.choose_method(kern, whole, unseen=False)
    assert method == "whole-model" and why == ""
    assert cmp["configurations"] == 4
    assert cmp["per_kernel"]["median_abs_error"] == pytest.approx(0.05)
    assert cmp["whole_model"]["median_abs_error"] == pytest.approx(0.01)
    # the per-kernel method wins where it is better on the same configurations (a tie goes to it too)
    assert pr.choose_method([(s, 10.05) for s, _ in kern], whole, unseen=False)[0] == "per-kernel"
    # no configuration in common: the known error decides, else (unseen model) per-kernel, with a note
    assert pr.choose_method(kern, [(s, None) for s, _ in whole], unseen=False)[0] == "per-kernel"
    none_k = [(s, None) for s, _ in kern]
    assert pr.choose_method(none_k, [(s, None) for s, _ in whole], unseen=True)[:1] == ("per-kernel",)
    assert "without an error estimate" in pr.choose_method(none_k, [], unseen=True)[2]
    assert pr.choose_method(none_k, whole, unseen=True)[0] == "whole-model"
