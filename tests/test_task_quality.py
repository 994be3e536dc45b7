"""Choosing the model, not only its format: the profiler sweeps candidate models and ranks them by task quality
(masks of the whole frame scored on an evaluation set), and the evaluation inputs are hostile data like the rest."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from edgekit.apps.profiling import taskeval
from edgekit.apps.profiling.device import load_profile
from edgekit.core.parity import mask_iou
from edgekit.errors import InputError

PROFILE = """
id: models-cpu
hardware: cpu
reach: local
targets: [onnx-fp32]
threads: [1]
resolutions: [[144, 256]]
budget: {fps: 10, model_share: 1.0}
runs: 8
warmup: 2
load: {busy: 0}
"""


def _my_task_iou(artifact: str, ev: taskeval.EvalSet) -> float:
    """Task IoU computed here, not by edgekit's pipeline: resize, RGB, the spec's normalization, NCHW, run, upsample."""
    from edgekit.api import load

    session = load(artifact)
    spec, out = session.io.inputs[0], session.io.outputs[0]
    h, w = spec.shape[2], spec.shape[3]
    ious = []
    for frame, truth in zip(ev.frames, ev.masks):
        rgb = cv2.cvtColor(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB) / 255.0
        lo, hi = spec.value_range
        x = ((rgb * (hi - lo) + lo - np.array(spec.mean)) / np.array(spec.std)).astype(np.float32)
        y = session.run({spec.name: x.transpose(2, 0, 1)[None].copy()})[out.name][0, 0]
        pred = cv2.resize(y, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5
        ious.append(mask_iou(pred, truth))
    return float(np.mean(ious))


@pytest.mark.slow
def test_the_profiler_compares_models_by_task_quality(tmp_path, student_onnx, tiny_onnx):
    from edgekit.apps.profiling.profile import profile_device

    (tmp_path / "models-cpu.yaml").write_text(PROFILE)
    result = profile_device(tmp_path / "models-cpu.yaml", out_dir=tmp_path / "out", config_dir=tmp_path / "cfg",
                            models=[str(tiny_onnx), str(student_onnx)])
    assert {p.model for p in result.points} == {"tiny", "student"} and all(p.ok for p in result.points)
    ev = taskeval.EvalSet.load(tmp_path / "out" / "models-cpu" / "eval.npz")
    assert "synthetic composites" in ev.label and all(p.task_on == ev.label for p in result.points)
    for p in result.points:  # each point's task IoU, recomputed here from its artifact
        assert p.task_iou == pytest.approx(_my_task_iou(p.artifact, ev), abs=1e-4)
        assert p.quality > 0.99  # both are faithful to their own fp32: fidelity cannot tell them apart
    student = next(p for p in result.points if p.model == "student")
    tiny = next(p for p in result.points if p.model == "tiny")
    assert student.task_iou > tiny.task_iou + 0.2  # a random-init network does not segment people
    assert result.choice.chosen.model == "student" and "2 models compared" in result.choice.why
    config = json.loads(result.config_path.read_text())
    assert config["model"]["name"] == "student" and config["model"]["licence"] == "Apache-2.0"  # the bundled one
    assert config["model"]["task_quality"]["iou"] == pytest.approx(student.task_iou, abs=1e-4)
    assert config["model"]["task_quality"]["on"] == ev.label


def test_eval_folder_is_read_as_hostile_data(tmp_path):
    folder = tmp_path / "labelled"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    img = np.zeros((90, 160, 3), np.uint8)
    mask = np.zeros((90, 160), np.uint8)
    mask[20:70, 50:110] = 255
    cv2.imwrite(str(folder / "images" / "a.png"), img)
    cv2.imwrite(str(folder / "masks" / "a.png"), mask)
    ev = taskeval.folder_set(folder, hw=(45, 80))
    assert ev.frames.shape == (1, 45, 80, 3)
    assert ev.masks[0].sum() == pytest.approx(50 * 60 / (90 * 160) * 45 * 80, rel=0.05)
    assert "labelled folder labelled (1 images)" == ev.label
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), img)
    os.symlink(secret, folder / "images" / "b.png")
    cv2.imwrite(str(folder / "masks" / "b.png"), mask)
    with pytest.raises(InputError, match="--eval-data"):
        taskeval.folder_set(folder)
    (folder / "images" / "b.png").unlink()
    (folder / "images" / "b.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="b.png cannot be read"):
        taskeval.folder_set(folder)


@pytest.mark.parametrize("models, match", [
    ('["../../etc/passwd"]', "models"),
    ('["/abs/model.onnx"]', "models"),
    ('["no-such-model"]', "not a known model"),
])
def test_a_profile_names_models_never_files(tmp_path, models, match):
    from edgekit.apps.profiling.profile import profile_device

    (tmp_path / "p.yaml").write_text(PROFILE + f"models: {models}\n")
    with pytest.raises(InputError, match=match):
        profile_device(load_profile(tmp_path / "p.yaml").path, out_dir=tmp_path / "out", config_dir=tmp_path / "c")


def test_synthetic_set_is_labelled_and_exact():
    from edgekit.core.samples import synthetic

    ev = taskeval.synthetic_set(n=3, hw=(72, 128), seed=9)
    assert ev.frames.dtype == np.uint8 and ev.frames.shape == (3, 72, 128, 3) and ev.masks.dtype == bool
    assert "not real people" in ev.label
    rng = np.random.default_rng(9)  # the compositor's own frames and exact masks, regenerated here
    for frame, mask in zip(ev.frames, ev.masks):
        img, truth = synthetic.composite(rng, 72, 128)
        assert np.array_equal(mask, truth > 0.5)
        assert np.abs(frame[..., ::-1].astype(float) - img * 255).max() <= 0.5  # BGR uint8 of the same pixels


def test_eval_images_are_checked_before_decoding(tmp_path):
    from PIL import Image

    folder = tmp_path / "unlabeled"
    folder.mkdir()
    Image.new("RGB", (9000, 2)).save(folder / "wide.png")  # a tiny file whose header says 9000 px
    with pytest.raises(InputError, match="9000x2; at most 8192"):
        taskeval._unlabeled(folder, (36, 64))
    (folder / "wide.png").unlink()
    (folder / "dir.png").mkdir()  # not a file
    os.mkfifo(folder / "pipe.png")  # would block a reader forever
    cv2.imwrite(str(folder / "ok.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(InputError, match="not a regular file"):
        taskeval._unlabeled(folder, (36, 64))
