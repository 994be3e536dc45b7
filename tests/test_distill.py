"""Distillation: losses, data layer, recipes, offline/online training, resume, 2-process gloo run."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgekit.apps.train import losses  # noqa: E402
from edgekit.apps.train.datasets import PortraitFolder, find_pairs  # noqa: E402
from edgekit.apps.train.recipe import load_recipe  # noqa: E402
from edgekit.errors import InputError  # noqa: E402

TINY = {"steps": 4, "batch": 2, "checkpoint_every": 2, "data": {"size": 32, "pool": 8},
        "teacher": {"width": 1.5, "train_steps": 2}, "eval": {"samples": 4, "size": [32, 32], "real_photos": False},
        "losses": {"gt": 1.0, "kl": 1.0, "affinity": 10.0, "attention": 1.0}}


def test_losses_are_zero_only_when_equal():
    torch.manual_seed(0)
    s, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    assert losses.pixelwise_kl(s, s).item() == pytest.approx(0, abs=1e-6)
    assert losses.pixelwise_kl(s, t).item() > 0.01
    fs, ft = torch.randn(2, 16, 8, 8), torch.randn(2, 40, 8, 8)  # different channel counts
    assert losses.pairwise_affinity(fs, fs).item() == pytest.approx(0, abs=1e-7)
    assert losses.pairwise_affinity(fs, ft, pool=4).item() > 0
    small = torch.randn(2, 16, 4, 4)  # attention transfer resizes the student's map
    assert losses.attention_transfer(small, ft).item() > 0
    assert losses.attention_transfer(ft, ft).item() == pytest.approx(0, abs=1e-7)
    a = losses.attention_map(ft)
    assert torch.allclose(a.norm(dim=1), torch.ones(2))


def test_recipe_validation():
    with pytest.raises(InputError, match="unknown key"):
        load_recipe({"stepz": 3})
    for bad, field in [({"steps": 0}, "at steps: 0 is less than the minimum of 1"),
                       ({"steps": "ten"}, "at steps: must be of type integer"),
                       ({"losses": {"kl": "lots"}}, "at losses/kl: must be of type number"),
                       ({"lr": float("nan")}, "at lr: nan is not a finite number"),
                       ({"batch": -1}, "at batch"), ({"eval": {"size": [32]}}, "at eval/size"),
                       ({"data": {"folders": [{"weight": 1}]}}, "at data/folders/0: 'path' is a required")]:
        with pytest.raises(InputError, match=field):
            load_recipe(bad)
    with pytest.raises(InputError, match="outputs only"):
        load_recipe({"teacher": {"kind": "artifact", "artifact": "x"}, "losses": {"attention": 1.0}})
    r = load_recipe("models/portrait-seg/distill.yaml")
    assert r.losses.kl > 0 and r.losses.affinity > 0 and r.losses.attention > 0


def test_dataset_layouts(tmp_path):
    img = np.full((40, 30, 3), 128, np.uint8)
    mask = np.zeros((40, 30), np.uint8)
    mask[10:30, 5:25] = 255
    (tmp_path / "a" / "images").mkdir(parents=True)
    (tmp_path / "a" / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "images" / "p1.jpg"), img)
    cv2.imwrite(str(tmp_path / "a" / "masks" / "p1.png"), mask)
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "b" / "p2.jpg"), img)
    cv2.imwrite(str(tmp_path / "b" / "p2_matte.png"), mask)
    assert len(find_pairs(tmp_path / "a")) == 1 and len(find_pairs(tmp_path / "b")) == 1
    folder = PortraitFolder(tmp_path / "a", recompose=1.0)
    x, m = folder.sample(np.random.default_rng(0), 24)
    assert x.shape == (24, 24, 3) and m.shape == (24, 24) and 0 < m.mean() < 1
    with pytest.raises(InputError, match="no image/mask pairs"):
        find_pairs(tmp_path)


@pytest.mark.slow
def test_offline_distill_checkpoints_resumes_and_exports(tmp_path):
    from edgekit.apps.train.distill import distill

    recipe = load_recipe({**TINY, "output": str(tmp_path / "run")})
    seen = []
    first = distill(recipe, progress=lambda what, i, n, loss: seen.append((what, i, n)))
    assert ("teacher", 2, 2) in seen and ("student", 4, 4) in seen
    assert (tmp_path / "run" / "teacher.pt").is_file() and 0 <= first["student"]["iou"] <= 1
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4
    longer = load_recipe({**TINY, "steps": 6, "output": str(tmp_path / "run")})
    seen.clear()
    distill(longer, resume=True, progress=lambda what, i, n, loss: seen.append((what, i)))
    assert [i for w, i in seen if w == "student"] == [5, 6]  # continued, not restarted
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "run" / "student.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"image": np.zeros((1, 3, 64, 96), np.float32)})[0]
    assert y.shape == (1, 1, 64, 96)


@pytest.mark.slow
def test_online_mode_trains_both(tmp_path):
    from edgekit.apps.train.distill import distill

    result = distill(load_recipe({**TINY, "mode": "online", "output": str(tmp_path / "online")}))
    assert "teacher" in result and "teacher" in torch.load(tmp_path / "online" / "checkpoint.pt", weights_only=True)


@pytest.mark.slow
def test_artifact_teacher_output_only(tmp_path, tiny_onnx):
    import edgekit
    from edgekit.apps.train.distill import distill

    art = edgekit.convert(tiny_onnx, "onnx-fp32", tmp_path / "teacher-art", input_shapes={"": (1, 3, 32, 32)})
    recipe = load_recipe({**TINY, "output": str(tmp_path / "kd"),
                          "teacher": {"kind": "artifact", "artifact": str(art.path)},
                          "losses": {"gt": 1.0, "kl": 1.0}})
    assert distill(recipe)["steps"] == 4


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path):
    import yaml

    from edgekit.apps.train.distill import launch

    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "output": str(tmp_path / "ddp")}))
    assert launch(cfg, 2, resume=False) == 0
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and (tmp_path / "ddp" / "student.onnx").is_file()


def test_recipe_file_is_refused_before_training_in_a_second(tmp_path):
    import time

    from edgekit.cli import main

    for text in ("steps: 0\n", "steps: ten\n", "losses: {kl: lots}\n", "steps: [\n", "- 1\n"):
        (tmp_path / "r.yaml").write_text(text + f"output: {tmp_path / 'out'}\n" if text[0] != "-" else text)
        t0 = time.perf_counter()
        assert main(["distill", "--config", str(tmp_path / "r.yaml")]) == 2
        assert time.perf_counter() - t0 < 1.0
        assert not (tmp_path / "out").exists()


def test_teacher_module_only_from_the_command_line(tmp_path):
    (tmp_path / "r.yaml").write_text("teacher: {kind: module, module: 'os:system'}\n")
    with pytest.raises(InputError, match="--teacher-module"):
        load_recipe(tmp_path / "r.yaml")
    r = load_recipe(tmp_path / "r.yaml", teacher_module="mypkg.models:teacher")
    assert r.teacher.module == "mypkg.models:teacher"


def test_crafted_checkpoint_runs_nothing(tmp_path):
    """A checkpoint.pt whose pickle would create a file when unpickled is refused with one line."""
    import os
    import pickle

    from edgekit.apps.train.distill import distill, load_weights

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"step": 1, "student": Evil(), "opt": {}}, run / "checkpoint.pt")
    (run / "plain.pkl").write_bytes(pickle.dumps(Evil()))
    for f in ("checkpoint.pt", "plain.pkl"):
        with pytest.raises(InputError, match="not a plain weights file"):
            load_weights(run / f, "checkpoint")
    with pytest.raises(InputError, match="not a plain weights file"):
        distill(load_recipe({**TINY, "output": str(run), "teacher": {"width": 1.5, "train_steps": 0,
                                                                       "checkpoint": str(run / "nope.pt")}}),
                resume=True)
    assert not marker.exists()


def test_checkpoint_holds_plain_data_only(tmp_path):
    """What edgekit saves loads with weights_only=True, and a plain but foreign checkpoint is one line."""
    from edgekit.apps.train.distill import _save_atomic, load_weights, plain

    state = {"step": 2, "history": plain([{"step": 1, "iou": np.float32(0.5)}]), "recipe": plain({"size": (1, 2)})}
    _save_atomic(state, tmp_path / "c.pt")
    assert load_weights(tmp_path / "c.pt", "checkpoint") == {"step": 2, "history": [{"step": 1, "iou": 0.5}],
                                                             "recipe": {"size": [1, 2]}}


# -- teacher-labelled distillation on the user's own (unlabeled) footage

def _footage(folder: Path, n: int = 12, hw=(96, 128)) -> Path:
    """Generated frames with people and no masks: what a user's own recordings look like to edgekit."""
    import cv2

    from edgekit.core.samples import synthetic

    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        img, _ = synthetic.composite(rng, *hw)
        cv2.imwrite(str(folder / f"{i:03d}.png"), (img[..., ::-1] * 255).round().astype(np.uint8))
    return folder


def test_unlabeled_footage_needs_a_teacher_that_labels_it(tmp_path):
    base = {**TINY, "data": {"synthetic": 0, "unlabeled": [{"path": str(tmp_path)}]}}
    with pytest.raises(InputError, match="labelled by the teacher"):
        load_recipe(base)
    with pytest.raises(InputError, match="teacher.model"):
        load_recipe({**base, "teacher": {"kind": "model", "model": "../../teacher.tflite"}, "losses": {"gt": 1.0}})
    from edgekit.core.samples.photos import cache_dir

    reserved = {**base, "teacher": {"kind": "model", "model": "mediapipe:selfie_segmentation"}, "losses": {"gt": 1.0},
                "data": {"unlabeled": [{"path": str(cache_dir())}]}}
    with pytest.raises(InputError, match="reserved for evaluation"):
        load_recipe(reserved)


def test_teacher_labels_each_crop_of_unlabeled_footage(tmp_path, mediapipe_models):
    import cv2

    from edgekit.apps.train.datasets import UnlabeledSource
    from edgekit.apps.train.distill import Teacher

    recipe = load_recipe({**TINY, "teacher": {"kind": "model", "model": "mediapipe:selfie_segmentation"},
                          "losses": {"gt": 1.0, "kl": 1.0}, "data": {"synthetic": 0, "unlabeled": [
                              {"path": str(_footage(tmp_path / "footage", n=3))}]}})
    teacher = Teacher(recipe, tmp_path, None, lambda *a: None)
    source = UnlabeledSource(recipe.data.unlabeled[0]["path"], teacher.label)
    assert len(source) == 3
    img, soft = source.sample(np.random.default_rng(0), 64)
    # the same crop through MediaPipe's own model, fed here by hand (RGB [0, 1], NCHW at 256x256)
    seg = mediapipe_models.selfie_segmenter(landscape=False)
    u8 = (img * 255).round().astype(np.uint8)
    x = cv2.resize(u8, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    mine = cv2.resize(seg.run({"image": x.transpose(2, 0, 1)[None].copy()})["mask"][0, 0], (64, 64),
                      interpolation=cv2.INTER_LINEAR)
    assert soft.shape == (64, 64) and 0 <= soft.min() and soft.max() <= 1
    assert np.abs(soft - mine).max() < 1e-3  # soft masks, not thresholded ones


@pytest.mark.slow
def test_distill_on_unlabeled_video_moves_the_student_to_the_teacher(tmp_path, mediapipe_models):
    import cv2
    import onnxruntime as ort

    from edgekit.apps.train.distill import distill
    from edgekit.apps.train.segmentation import to_tensor
    from edgekit.core.parity import mask_iou
    from edgekit.core.samples.clips import moving_clip
    from edgekit.zoo.portrait_seg import build

    rgb, _ = moving_clip(30, (96, 128), seed=3)  # RGB [0, 1]; its exact masks are not given to edgekit
    video = tmp_path / "call.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 15, (128, 96))
    for f in rgb:
        writer.write((f[..., ::-1] * 255).round().astype(np.uint8))
    writer.release()
    recipe = load_recipe({**TINY, "steps": 120, "batch": 4, "lr": 5e-3, "output": str(tmp_path / "kd"),
                          "teacher": {"kind": "model", "model": "mediapipe:selfie_segmentation"},
                          "student": {"width": 0.5}, "losses": {"gt": 1.0, "kl": 0.5},
                          "data": {"synthetic": 0, "size": 48, "unlabeled": [{"path": str(video), "every": 2}]}})
    # held-out frames (odd ones; training sees every second frame from 0) and the teacher's masks of them, by hand
    seg = mediapipe_models.selfie_segmenter(landscape=False)
    held = [cv2.resize(f, (64, 48), interpolation=cv2.INTER_AREA) for f in rgb[1::4]]
    teacher = [cv2.resize(seg.run({"image": cv2.resize(h, (256, 256), interpolation=cv2.INTER_AREA).transpose(
        2, 0, 1)[None].copy()})["mask"][0, 0], (64, 48)) > 0.5 for h in held]

    def agreement(predict) -> float:
        return float(np.mean([mask_iou(predict(h) > 0.5, t) for h, t in zip(held, teacher)]))

    torch.manual_seed(recipe.seed)  # the student distill starts from
    start = build(width=0.5).eval()
    with torch.no_grad():
        before = agreement(lambda h: torch.sigmoid(start.forward_logits(to_tensor(h[None]))).numpy()[0, 0])
    distill(recipe)
    sess = ort.InferenceSession(str(tmp_path / "kd" / "student.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    after = agreement(lambda h: sess.run(None, {name: to_tensor(h[None]).numpy()})[0][0, 0])
    print("agreement with the teacher (mask IoU) before/after", before, after)
    assert after > before + 0.3, (before, after)  # a student trained on no signal stays near 0


def test_reserved_photos_are_refused_even_through_a_symlink(tmp_path, mediapipe_models):
    import os

    from edgekit.apps.train.datasets import unlabeled_frames
    from edgekit.core.samples import photos

    footage = _footage(tmp_path / "footage", n=2)
    reserved = next(p for p in sorted(photos.cache_dir().iterdir()) if p.suffix.lower() in (".jpg", ".png"))
    os.symlink(reserved, footage / f"zz{reserved.suffix}")
    with pytest.raises(InputError, match="reserved for evaluation"):
        unlabeled_frames(footage)
