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
