"""Per-kernel timings and the per-kernel latency method: each runtime's records counted against the ONNX graph
(computed independently), the per-kind models on a known cost model, and kernels.jsonl as hostile data."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from edgekit.apps.profiling import kernels as kp
from edgekit.apps.profiling import predict as pr
from edgekit.backends.kerneltimes import KernelTime


def _graph(path):
    """x[1,3,32,32] -> conv 3->16 3x3 -> relu -> depthwise 3x3 (16) -> global pool -> gemm 16->4 (channel counts
    that are whole NCHWc blocks, so ONNX Runtime runs the shapes the graph has)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((16, 1, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="dw", group=16, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w3"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_onnxruntime_kernel_records_count_the_graphs_work(tmp_path):
    from edgekit.backends.onnx.kerneltimes import ort_kernel_times

    path = _graph(tmp_path / "g.onnx")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ks = ort_kernel_times(path, {"x": x}, 1, {}, "CPUExecutionProvider", runs=3)
    assert all(len(k.ms) == 3 and all(t >= 0 for t in k.ms) for k in ks)
    convs = sorted((k.kind, k.macs, k.cin, k.cout, k.window) for k in ks if k.kind in ("conv", "dwconv"))
    out = 16 * 32 * 32
    assert convs == sorted([("conv", out * 3 * 9, 3, 16, 9), ("dwconv", out * 9, 16, 16, 9)])
    gemm = [k for k in ks if k.kind == "gemm"]
    assert len(gemm) == 1 and gemm[0].macs == 16 * 4
    # what the predictor counts on the ONNX graph agrees (the Relu fused into the convolution in both)
    ref = Counter((k.kind, k.macs) for k in pr.kernels(path) if k.kind != "other")
    assert ref == Counter((k.kind, k.macs) for k in ks if k.kind in ("conv", "dwconv", "gemm"))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["openvino-fp32", "ncnn-fp32"])
def test_runtime_kernel_records_match_the_reference_graph(student_artifacts, target):
    """OpenVINO's runtime graph and ncnn's layers: every convolution or matrix product the runtime ran has the
    multiply-accumulates of one in the ONNX graph the artifact came from (counted by predict.kernels)."""
    from edgekit.backends.registry import open_session
    from edgekit.core import calibration

    art = student_artifacts(target)
    x = calibration.samples(art.source_io, None, n=1, seed=3)[0]
    sess = open_session(art, threads=1, delegate="cpu")
    try:
        ks = sess.kernel_times(x, runs=2)
    finally:
        sess.close()
    # every run timed every convolution; a kernel of a microsecond may be reported not run now and then (OpenVINO)
    assert ks and all(len(k.ms) == 2 for k in ks if k.kind in ("conv", "dwconv")) and all(len(k.ms) <= 2 for k in ks)
    ran = Counter(k.macs for k in ks if k.kind in ("conv", "dwconv", "gemm"))
    ref = Counter(k.macs for k in pr.kernels(art.reference_file()) if k.kind in ("conv", "dwconv", "gemm"))
    assert ran == ref
    assert sum(k.kind == "dwconv" for k in ks) == sum(k.kind == "dwconv" for k in pr.kernels(art.reference_file()))


def _kernel(kind, macs, cin, cout, hw, rng):
    out = cout * hw
    return KernelTime(f"k{rng.random()}", kind, kind, float(macs), float(cin * hw), float(out), float(macs / hw),
                      cin, cout, 9 if kind == "dwconv" else 1, [])


def test_kernel_predictor_recovers_a_known_cost_model():
    """Kernel times made by a per-kind linear cost (different per runtime and thread count), whole-model latency
    1.1 x their sum + 0.3 ms: every configuration is predicted from the others (of the same model, or of other
    models only) almost exactly, and a group never profiled gets no prediction."""
    rng = random.Random(5)
    steps = len(kp.CACHE_STEPS)  # the last features: elements moved past each cache step
    cost = {"conv": np.array([0.004, 0.002, 0.001, 0.001, 0.0, 0.003, 0.0, *[0.002] * steps]),
            "dwconv": np.array([0.003, 0.01, 0.004, 0.004, 0.0, 0.0, 0.002, *[0.0] * steps]),
            "eltwise": np.array([0.002, 0.0, 0.003, 0.002, 0.0, 0.0, 0.001, *[0.001] * steps])}
    assert all(len(c) == kp.N_PHI == len(kp.phi(KernelTime("k", "Conv", "conv"))) for c in cost.values())
    speed = {("onnx-fp32", 1): 1.0, ("onnx-fp32", 2): 0.6, ("ncnn-fp32", 1): 1.3}
    samples = []
    for model, width in enumerate((8, 16, 24, 40)):
        for hw in (16 * 16, 32 * 32, 48 * 48):
            structure = []
            for i in range(6):
                c = width * (1 + i % 3)
                structure += [_kernel("conv", hw * c * width, width, c, hw, rng), _kernel("dwconv", hw * c * 9, c, c,
                                                                                        hw, rng),
                              _kernel("eltwise", 0, c, c, hw, rng)]
            for (target, threads), f in speed.items():
                ks = [KernelTime(k.name, k.op, k.kind, k.macs, k.in_elems, k.out_elems, k.weight_elems, k.cin, k.cout,
                                 k.window, [f * float(kp.phi(k) @ cost[k.kind]) * (1 + 0.5 * j) for j in range(3)])
                      for k in structure]
                y = 1.1 * sum(kp.kernel_ms(k) for k in ks) + 0.3
                samples.append(kp.KernelSample(target, "cpu", threads, tuple(ks), y, f"m{model}", (hw, hw)))
    for by_model in (False, True):
        e = pr.error_summary(kp.leave_one_out(samples, by_model=by_model))
        assert e["n"] == len(samples) and e["share_within_10"] == 1.0 and e["median_abs_error"] < 0.01, e
    p = kp.KernelPredictor(samples)
    assert p.predict("openvino-fp32", "cpu", 1, samples[0].kernels) is None
    assert p.predict("ncnn-fp32", "cpu", 2, samples[0].kernels) is None
    # a kernel's time is the fastest of its runs (other jobs only ever add time)
    assert kp.kernel_ms(KernelTime("a", "Conv", "conv", ms=[5.0, 1.5, 2.0, 3.0, 4.0, 9.0])) == pytest.approx(1.5)


def test_kernels_file_is_read_as_hostile_data(tmp_path):
    good = {"resolution": [64, 64], "target": "onnx-fp32", "delegate": "cpu", "threads": 1, "model_sha256": "ab",
            "profile_hash": "", "edgekit_version": "", "artifact": "",
            "kernels": [KernelTime("c", "Conv", "conv", 10.0, 1.0, 1.0, 1.0, 1, 1, 1, [0.1, 0.2]).to_dict()]}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "kernels": [{"name": "x", "evil": 1}]}),
             json.dumps({**good, "kernels": [{**good["kernels"][0], "kind": "__import__"}]}),
             json.dumps({**good, "kernels": [{**good["kernels"][0], "ms": ["1"]}]}),
             json.dumps({**good, "kernels": [{**good["kernels"][0], "macs": "1e9"}]}),
             json.dumps({**good, "kernels": [{**good["kernels"][0], "ms": [float("nan")]}]}), ""]
    # fields that are compared, hashed or sorted later (op types sorted with strings: TypeError; a list: unhashable)
    k0 = good["kernels"][0]
    hostile = [{**good, "kernels": [{**k0, "op": 5}]}, {**good, "kernels": [{**k0, "op": ["Conv"]}]},
               {**good, "kernels": [{**k0, "name": 7}]}, {**good, "kernels": [{**k0, "kind": ["conv"]}]},
               {**good, "kernels": [{**k0, "cin": 1.5}]}, {**good, "kernels": [k0, 3]}, {**good, "kernels": "x"},
               {**good, "threads": "1"}, {**good, "threads": True}, {**good, "resolution": ["64", 64]},
               {**good, "resolution": [64, 64, 3]}, {**good, "target": 5}, {**good, "model_sha256": ["ab"]}, [good]]
    lines += [json.dumps(h) for h in hostile]
    path = tmp_path / "kernels.jsonl"
    path.write_text("\n".join(lines))
    notes: list[str] = []
    got = pr.load_kernels(path, notes)
    assert list(got) == [("ab", (64, 64), "onnx-fp32", "cpu", 1)] and got[list(got)[0]][0].ms == [0.1, 0.2]
    assert notes == [f"{path}: {6 + len(hostile)} line(s) that are not kernel timings were ignored"]
    # what is kept trains the per-kernel models without a TypeError
    ks = got[list(got)[0]]
    assert kp.KernelPredictor([kp.KernelSample("onnx-fp32", "cpu", 1, tuple(ks), 1.0, "ab", (64, 64))]).known(
        "onnx-fp32", "cpu", 1)
