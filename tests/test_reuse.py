"""Segmentation reuse between frames: the model runs every k-th frame, masks are carried between by motion
compensation, and k follows the motion. Every fact here is computed independently of the controller's own
report: the model is run on every frame by the test, the frames the model ran on are recorded by the test."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.apps.video.reuse import MaskReuse, ReuseBudget, budget_from, make_carry
from edgekit.apps.video.synthetic_video import paced_clip
from edgekit.core.parity import mask_iou
from edgekit.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
HW = (144, 256)


@pytest.fixture(scope="module")
def student():
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(ROOT / "models" / "portrait-seg" / "student.onnx"), so)

    def run(frame_bgr):
        x = ((frame_bgr[..., ::-1] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)
        return sess.run(None, {"image": x})[0][0, 0]

    return run


def _iou(a, b) -> float:
    return mask_iou(a > 0.5, b > 0.5)


def _reuse_run(frames, model, budget):
    """Run the controller; return its masks and the frame indices where it asked for the model (recorded here)."""
    reuse, ran = MaskReuse(budget), []

    def infer_at(t):
        def infer():
            ran.append(t)
            return model(frames[t])
        return infer

    outs = [reuse(t, cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), infer_at(t)) for t, f in enumerate(frames)]
    return reuse, outs, ran


@pytest.mark.parametrize("method", ["affine", "flow"])
def test_carrying_follows_the_motion(method):
    """One carried step of the exact mask is closer to the next exact mask than the unmoved mask is."""
    frames, truths = paced_clip([3.0] * 12, HW, seed=2)
    carry = make_carry(method)
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    carried = [_iou(carry(gray[t - 1], gray[t], truths[t - 1])[0], truths[t]) for t in range(1, 12)]
    still = [_iou(truths[t - 1], truths[t]) for t in range(1, 12)]
    assert np.mean(still) < 0.95  # the person moves enough for this to mean something
    assert np.mean(carried) > np.mean(still) + 0.02
    assert min(carried) > 0.95


@pytest.mark.parametrize("method", ["affine", "flow"])
def test_reuse_keeps_the_iou_budget_and_skips_the_model(student, method):
    frames, _ = paced_clip([0.6] * 80, HW, seed=3)
    every = [student(f) for f in frames]  # every-frame inference, by the test
    budget = ReuseBudget(max_k=4, min_iou=0.95, method=method)
    reuse, outs, ran = _reuse_run(frames, student, budget)
    # the frames the model ran on: the controller's output there is the model's, elsewhere it is carried
    assert ran == sorted(set(ran)) and ran[0] == 0
    for t in range(len(frames)):
        assert (t in ran) == np.array_equal(outs[t], every[t]), t
    gaps = np.diff(ran + [len(frames)])
    assert gaps.max() <= budget.max_k  # never more than max_k - 1 carried frames
    assert len(ran) <= 0.4 * len(frames)  # a slow clip: the model runs on well under half the frames
    ious = np.array([_iou(o, e) for o, e in zip(outs, every)])
    assert ious.mean() >= budget.min_iou + 0.02 and (ious < budget.min_iou).mean() <= 0.05
    s = reuse.summary()
    assert s["inferred"] == len(ran) and s["carried"] == len(frames) - len(ran)
    assert s["k_series"].count(".") == len(frames) - len(ran) and s["cpu_saved_ms"] > 0


@pytest.mark.parametrize("method", ["affine", "flow"])
def test_k_drops_when_motion_rises_and_a_jump_runs_the_model(student, method):
    """Slow sway for 50 frames, then four times faster with a sudden 40 px jump at frame 80."""
    speeds = [0.6] * 50 + [4.0] * 50
    frames, _ = paced_clip(speeds, HW, seed=3, jumps={80: 40.0})
    every = [student(f) for f in frames]
    reuse, outs, ran = _reuse_run(frames, student, ReuseBudget(max_k=6, min_iou=0.95, method=method))
    gaps = np.diff(ran)
    slow = gaps[(np.array(ran[1:]) > 15) & (np.array(ran[1:]) <= 50)]
    fast = gaps[np.array(ran[1:]) > 60]
    assert slow.mean() >= 3.0 and fast.mean() <= 0.7 * slow.mean(), (slow, fast)
    assert 80 in ran  # the jump is not carried: the motion estimate no longer explains the frame
    assert next(r for r in reuse.records if r.frame == 80).why == "motion"
    carried_at_jump = [_iou(o, e) for t, (o, e) in enumerate(zip(outs, every)) if 78 <= t <= 84]
    assert min(carried_at_jump) >= 0.9


def test_budget_is_checked_like_the_config():
    assert budget_from({"max_k": 3, "min_iou": 0.9, "method": "affine"}) == ReuseBudget(3, 0.9, "affine")
    assert budget_from({}).method == "flow"
    for bad, field in (({"max_k": 0}, "max_k"), ({"max_k": 64}, "max_k"), ({"min_iou": float("nan")}, "min_iou"),
                       ({"min_iou": 2}, "min_iou"), ({"method": "os.system"}, "method"), ({"max_k": "4"}, "max_k")):
        with pytest.raises(InputError, match=field):
            budget_from(bad, "--reuse")


@pytest.fixture(scope="module")
def shipped_config(tmp_path_factory):
    """A copy of the shipped local-cpu app config (its files are verified by sha256 when loaded)."""
    dst = tmp_path_factory.mktemp("cfg")
    shutil.copytree(ROOT / "profiles" / "configs" / "local-cpu", dst / "local-cpu")
    shutil.copy(ROOT / "profiles" / "configs" / "local-cpu.json", dst / "local-cpu.json")
    return dst / "local-cpu.json"


def _edgekit(*args):
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *map(str, args)], capture_output=True, text=True)


def test_hostile_reuse_values_are_one_line_exit_2(shipped_config, tmp_path):
    res = _edgekit("process", tmp_path / "none.avi", "-o", tmp_path / "o.avi", "-c", shipped_config,
                   "--reuse", "max_k=99")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "max_k" in res.stderr, res.stderr
    cfg = json.loads(shipped_config.read_text())
    cfg["reuse"] = {"max_k": 4, "min_iou": "high"}
    bad = shipped_config.with_name("bad.json")
    bad.write_text(json.dumps(cfg))
    res = _edgekit("process", tmp_path / "none.avi", "-o", tmp_path / "o.avi", "-c", bad)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "reuse/min_iou" in res.stderr, res.stderr
    assert not (tmp_path / "o.avi").exists()


@pytest.mark.slow
def test_process_reports_reuse(shipped_config, tmp_path):
    from edgekit.apps.video.io import FrameWriter
    from edgekit.apps.video.process import process

    frames, _ = paced_clip([1.0] * 30, (288, 512), seed=4)
    clip = tmp_path / "clip.avi"
    w = FrameWriter(clip, 30)
    for f in frames:
        w.write(f)
    w.close()
    off = process(clip, tmp_path / "off.avi", shipped_config, ["blur"], sequential=True)
    assert off.reuse == {"enabled": False, "why": "not requested (no reuse block in the app config, no --reuse)"}
    on = process(clip, tmp_path / "on.avi", shipped_config, ["blur"], sequential=True,
                 reuse={"max_k": 3, "min_iou": 0.9})
    r = on.reuse
    assert r["enabled"] and r["frames"] == on.frames_out == 30 and r["inferred"] + r["carried"] == 30
    assert r["max_k"] == 3 and len(r["k_series"]) == 30 and r["k_series"][0] == "1"
    assert max(map(len, re.findall(r"\.+", r["k_series"])), default=0) <= 2  # at most max_k - 1 carried in a row
    denoised = process(clip, tmp_path / "denoised.avi", shipped_config, ["denoise"], reuse={"max_k": 3})
    assert not denoised.reuse["enabled"] and "no segmentation" in denoised.reuse["why"]
