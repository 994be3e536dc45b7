"""Segmentation reuse in a pipeline file: a model stage with ``reuse`` runs the model on some frames only and
carries its mask on the others; checked against the model run on every frame here."""

import numpy as np
import pytest

from edgekit.apps.pipeline.definition import load_pipeline, reset_stages
from edgekit.apps.pipeline.executor import run_sequential
from edgekit.apps.pipeline.placement import plan
from edgekit.apps.pipeline.units import local_units
from edgekit.apps.video.synthetic_video import synthetic_clip
from edgekit.errors import InputError

HW = (64, 64)


def _pipeline(artifact: str, reuse=None, luma_input: bool = True) -> dict:
    seg = {"name": "segment", "model": {"onnx": artifact}, "inputs": ["seg_in", "seg_gray"] if luma_input
           else ["seg_in"], "outputs": ["mask"], "units": ["cpu0:onnx"]}
    if reuse is not None:
        seg["reuse"] = reuse
    return {"name": "reuse-test", "stages": [
        {"name": "prepare", "kernel": "model_input", "params": {"hw": list(HW)}, "inputs": ["frame"],
         "outputs": ["seg_in"], "units": ["cpu0"]},
        {"name": "luma", "kernel": "reuse_luma", "params": {"hw": list(HW)}, "inputs": ["frame"],
         "outputs": ["seg_gray"], "units": ["cpu0"]},
        seg]}


@pytest.fixture(scope="module")
def tiny_artifact(tiny_onnx, workdir):
    import edgekit

    return edgekit.convert(str(tiny_onnx), "onnx-fp32", workdir / "reuse-tiny-art")  # 64x64 (its card)


def test_reuse_in_a_pipeline_file_skips_inferences_and_stays_near_every_frame(tiny_artifact, workdir):
    import edgekit
    from edgekit.apps.video.kernels import model_input
    from edgekit.apps.video.reuse import iou

    root = tiny_artifact.path.parent
    spec = load_pipeline(_pipeline(tiny_artifact.path.name, {"max_k": 4, "min_iou": 0.9}), root=root)
    stage = spec.stages[-1]
    assert stage.reuse is not None and stage.reuse.budget.max_k == 4
    units = {u: v for u, v in local_units().items() if u == "cpu0"}
    p = plan(spec, {(s.name, s.units[0]): 1.0 for s in spec.stages})
    frames, _ = synthetic_clip(30, (240, 320), seed=5, motion=0.3)
    reset_stages(spec)
    masks = [np.asarray(m) for _, m in run_sequential(spec, p, units, frames, output="mask")]
    # independently: the same model on every frame
    sess = edgekit.load(tiny_artifact.path)
    name = sess.io.inputs[0].name
    every = [np.asarray(next(iter(sess.run({name: model_input(f, HW)}).values()))) for f in frames]
    assert masks[0].shape == every[0].shape  # the model output's shape, carried or not
    inferred = [r.frame for r in stage.reuse.records if r.inferred]
    assert inferred[0] == 0 and len(inferred) < len(frames)  # the model ran on some frames only
    for i in inferred:  # on those, the pipeline's mask is the model's
        assert np.allclose(masks[i], every[i], atol=1e-5)
    # the random-init model's masks are not a person: compare their upper halves (above frame 0's median)
    cut = float(np.median(every[0]))
    assert np.std(every[0]) > 1e-3 and all(np.abs(every[i] - every[0]).mean() > 1e-4 for i in (10, 20))
    ious = [iou(m.reshape(HW) > cut, e.reshape(HW) > cut) for m, e in zip(masks, every)]
    assert np.mean(ious) > 0.9


def test_reuse_blocks_that_cannot_work_are_refused(tiny_artifact):
    root = tiny_artifact.path.parent
    name = tiny_artifact.path.name
    with pytest.raises(InputError, match="min_iou"):
        load_pipeline(_pipeline(name, {"max_k": 4, "min_iou": 2.0}), root=root)
    with pytest.raises(InputError, match="inputs"):
        load_pipeline(_pipeline(name, {"max_k": 4}, luma_input=False), root=root)
    bad = _pipeline(name)
    bad["stages"][1]["reuse"] = {"max_k": 4}
    with pytest.raises(InputError, match="model stage"):
        load_pipeline(bad, root=root)
    bad["stages"][1]["reuse"] = "yes"
    with pytest.raises(InputError, match="reuse"):
        load_pipeline(bad, root=root)


def test_reuse_mask_takes_one_channel_probabilities_at_the_lumas_size():
    from edgekit.apps.pipeline.executor import reuse_mask

    ok = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(1, 1, 64, 64)
    assert reuse_mask("s", ok, (64, 64)).shape == (64, 64)
    assert reuse_mask("s", ok.reshape(1, 64, 64, 1) * 1.0005, (64, 64)).max() > 1  # rounding slack only
    with pytest.raises(InputError, match="2 channels"):
        reuse_mask("s", np.zeros((1, 2, 64, 64), np.float32), (64, 64))
    with pytest.raises(InputError, match="32x32.*1x1x64x64"):
        reuse_mask("s", ok, (32, 32))
    for bad in (ok * 8 - 4, ok + 0.01, np.full_like(ok, np.nan)):
        with pytest.raises(InputError, match=r"probability mask in \[0, 1\]"):
            reuse_mask("s", bad, (64, 64))


class _Logits:
    """A session whose 'mask' is logits (the channel mean x 10): not a probability."""

    class io:  # noqa: N801 - the session's attribute
        inputs = [type("T", (), {"name": "image"})]
        outputs = [type("T", (), {"name": "mask"})]

    def run(self, feeds):
        return {"mask": feeds["image"].mean(axis=1, keepdims=True) * 10}


@pytest.mark.parametrize("case", ["wrong size", "logits"])
def test_a_reuse_model_that_cannot_be_thresholded_is_refused_not_failed_over(tiny_artifact, case):
    """The luma at 32x32 for a 64x64 mask, or a model giving logits: an InputError on the first inference, both run
    ways, and the pipelined runner moves no stage to the chain's next unit (every unit would give the same)."""
    from edgekit.apps.pipeline.executor import PipelineRunner, StageCalls

    units = {u: v for u, v in local_units().items() if u in ("cpu0", "cpu1")}
    if len(units) < 2:
        pytest.skip("needs two CPU units to show no fail-over")
    doc = _pipeline(tiny_artifact.path.name, {"max_k": 4})
    doc["stages"][-1]["units"] = ["cpu0:onnx", "cpu1:onnx"]
    if case == "wrong size":
        doc["stages"][1]["params"]["hw"] = [32, 32]
    spec = load_pipeline(doc, root=tiny_artifact.path.parent)
    p = plan(spec, {(s.name, c): 1.0 for s in spec.stages for c in s.units})
    frames, _ = synthetic_clip(3, (120, 160), seed=5)
    match = "32x32" if case == "wrong size" else "logits"

    def calls():
        c = StageCalls(units)
        if case == "logits":
            for choice in ("cpu0:onnx", "cpu1:onnx"):
                c._sessions[("segment", choice)] = _Logits()
        return c

    with pytest.raises(InputError, match=match):
        list(run_sequential(reset_stages(spec), p, units, frames, output="mask", calls=calls()))
    runner = PipelineRunner(reset_stages(spec), p, units, calls=calls())
    with pytest.raises(InputError, match=match):
        list(runner.run(frames, output="mask"))
    assert runner.stats.moves == [] and not runner.failed


def test_schedule_refuses_a_reuse_luma_of_another_size_with_exit_2(tiny_artifact):
    import json
    import subprocess
    import sys

    doc = _pipeline(tiny_artifact.path.name, {"max_k": 4})
    doc["stages"][1]["params"]["hw"] = [32, 32]
    path = tiny_artifact.path.parent / "reuse-wrong-size.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "schedule", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "32x32" in lines[0] and "Traceback" not in res.stderr
