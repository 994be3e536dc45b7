"""Video effects and `edgekit process`: real models, synthetic video with exact ground truth, real photos."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgekit.apps.video import kernels, quality
from edgekit.apps.video.synthetic_video import synthetic_clip
from edgekit.errors import InputError


@pytest.fixture(scope="session")
def clip():
    return synthetic_clip(24, (360, 640), seed=4)


@pytest.fixture(scope="session")
def clip_file(workdir, clip):
    from edgekit.apps.video.io import FrameWriter

    path = workdir / "clip.avi"
    w = FrameWriter(path, 30)
    for f in clip[0]:
        w.write(f)
    w.close()
    return path


def test_refine_follows_frame_edges(clip):
    """A soft low-res mask becomes sharp where the frame has a clear edge (guided upsampling)."""
    truth = clip[1][0]
    rng = np.random.default_rng(0)
    frame = np.clip(truth[..., None] * 170 + 40 + rng.normal(0, 3, (*truth.shape, 3)), 0, 255).astype(np.uint8)
    soft = cv2.GaussianBlur(cv2.resize(truth, (128, 72), interpolation=cv2.INTER_AREA), (0, 0), 1.5)
    bilinear = cv2.resize(soft, (640, 360), interpolation=cv2.INTER_LINEAR)
    refined = kernels.refine_mask(soft, frame)
    assert refined.shape == truth.shape and 0 <= refined.min() and refined.max() <= 1

    def fractional(a):
        return int(((a > 0.1) & (a < 0.9)).sum())

    assert fractional(refined) < 0.8 * fractional(bilinear)
    assert np.abs(refined - truth).mean() < 0.9 * np.abs(bilinear - truth).mean()


def test_blur_keeps_the_person_and_blurs_the_rest(clip):
    frame, truth = clip[0][0], clip[1][0]
    out = kernels.blur_background(frame, truth)
    person, bg = truth > 0.99, truth < 0.01
    assert np.abs(out[person].astype(int) - frame[person]).mean() < 1.0
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_32F)  # noqa: E731
    assert np.abs(lap(out))[bg].mean() < 0.7 * np.abs(lap(frame))[bg].mean()


def test_temporal_smoothing_steadies_a_flickering_mask():
    _, truths = synthetic_clip(24, (180, 320), seed=6, motion=0.2)
    rng = np.random.default_rng(0)
    noisy = [np.clip(t + rng.normal(0, 0.2, t.shape), 0, 1).astype(np.float32) for t in truths]  # flicker
    sm = kernels.TemporalSmoother()
    smoothed = [sm(m) for m in noisy]
    assert quality.dtssd(smoothed, truths) < 0.8 * quality.dtssd(noisy, truths)


def test_denoiser_gains_psnr():
    from edgekit.apps.video.effects.denoise import TemporalDenoiser

    rng = np.random.default_rng(1)
    clean, _ = synthetic_clip(24, (360, 640), seed=4, motion=0.5)
    noisy = [np.clip(f + rng.normal(0, 15, f.shape), 0, 255).astype(np.uint8) for f in clean]
    den = TemporalDenoiser()
    out = [den(f) for f in noisy]
    gain = np.mean([quality.psnr(o, c) - quality.psnr(n, c) for o, n, c in zip(out[8:], noisy[8:], clean[8:])])
    assert gain > 6.0


def test_lowlight_beats_clahe():
    from edgekit.apps.video.effects.lowlight import clahe, curve_lut, open_lowlight
    from edgekit.core.samples.synthetic import dataset

    lut = curve_lut()
    assert lut.shape == (65, 256) and (lut[32] == np.arange(256)).all()  # A = 0 leaves pixels as they are
    ll = open_lowlight()
    imgs, _ = dataset(8, 144, 256, seed=99)
    ours, base = [], []
    for im in imgs:
        bright = (im[..., ::-1] * 255).astype(np.uint8)
        dark = np.clip(0.4 * (bright / 255.0) ** 2.2 * 255, 0, 255).astype(np.uint8)
        ll.curves = None
        ours.append(quality.psnr(ll(dark), bright))
        base.append(quality.psnr(clahe(dark), bright))
    assert np.mean(ours) > np.mean(base) + 1.0


@pytest.mark.slow
def test_face_landmarks_and_jitter(mediapipe_models):
    from edgekit.apps.video.effects.beauty import BeautySettings, FaceTracker, apply_beauty
    from edgekit.core.samples.photos import evaluation_photos

    name, img = evaluation_photos()[0]
    frame = cv2.resize((img[..., ::-1] * 255).astype(np.uint8), None, fx=0.5, fy=0.5)
    rng = np.random.default_rng(0)
    clip = [np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8) for _ in range(30)]
    raw, filt = FaceTracker(smooth=False), FaceTracker(smooth=True)
    raw_tracks = [raw(f) for f in clip]
    assert raw_tracks[0] is not None and raw_tracks[0].shape == (468, 2)
    filt_tracks = [filt(f) for f in clip]
    # after the filter has settled (10 frames), One Euro cuts the jitter of a still face
    assert quality.landmark_jitter(filt_tracks[10:]) < 0.5 * quality.landmark_jitter(raw_tracks[10:])
    out = apply_beauty(frame, filt_tracks[-1], BeautySettings())
    changed = np.any(out != frame, axis=-1)
    ys, xs = np.nonzero(changed)
    pts = filt_tracks[-1]
    assert changed.sum() > 1000
    assert xs.min() >= pts[:, 0].min() - 0.2 * np.ptp(pts[:, 0]) - 2  # only around the face


@pytest.mark.slow
def test_process_video(clip_file, app_config, workdir):
    from edgekit.apps.video.process import process

    report = process(clip_file, workdir / "processed.avi", app_config, ["blur", "denoise"])
    assert report.frames_in == report.frames_out == 24 and not report.stopped
    cap = cv2.VideoCapture(str(workdir / "processed.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    assert (workdir / "processed_before_after.png").stat().st_size > 10_000
    assert set(report.plan["assignment"]) >= {"segment", "composite", "denoise"}


@pytest.mark.slow
def test_truncated_video_processes_what_it_can(clip_file, app_config, workdir):
    data = clip_file.read_bytes()
    broken = workdir / "broken.avi"
    broken.write_bytes(data[: len(data) // 2])
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "process", str(broken), "-o",
                          str(workdir / "broken_out"), "-c", str(app_config), "--json"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert 0 < report["frames_out"] < 24 and "stopped at frame" in report["stopped"]


@pytest.mark.slow
def test_config_with_changed_model_is_refused(app_config, clip_file, workdir):
    import shutil

    from edgekit.apps.profiling.appconfig import load_config
    from edgekit.apps.video.process import process

    copy = workdir / "tampered-config"
    shutil.copytree(app_config.parent, copy)
    cfg = copy / app_config.name
    model_dir = cfg.parent / load_config(app_config)["runtime"]["artifact"]
    for f in model_dir.iterdir():
        if f.name != "artifact.json" and f.is_file():
            f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(InputError, match="sha256"):
        process(clip_file, workdir / "x.avi", cfg, ["blur"])
    with pytest.raises(InputError, match="unknown effect"):
        process(clip_file, workdir / "x.avi", app_config, ["sparkles"])
    with pytest.raises(InputError, match="needs --background"):
        process(clip_file, workdir / "x.avi", app_config, ["replace"])


def test_fast_blur_path_matches_the_full_resolution_one(clip):
    """The blur as process runs it now (1/4 frame made once, smoothing and background weights at the mask's
    resolution) against the earlier full-resolution path, on exact masks at the model's resolution."""
    smoother_old, smoother_new = kernels.TemporalSmoother(), kernels.MaskSmoother()
    diffs = []
    for frame, truth in zip(clip[0][:6], clip[1][:6]):
        mask = cv2.resize(truth, (256, 144), interpolation=cv2.INTER_AREA)
        old_alpha = smoother_old(kernels.refine_mask(mask, frame))
        old = kernels.composite(frame, kernels.blurred_background(frame, old_alpha), old_alpha)
        small = smoother_new(mask[None, None])
        assert small.shape == (144, 256)
        alpha = kernels.refine_mask(small, frame)
        new = kernels.composite(frame, kernels.blurred_background_small(kernels.quarter(frame), small, frame), alpha)
        diffs.append(np.abs(new.astype(int) - old).mean())
        person, bg = truth > 0.99, truth < 0.01
        assert np.abs(new[person].astype(int) - frame[person]).mean() < 1.0
        lap = lambda im: np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_32F))  # noqa: E731
        assert lap(new)[bg].mean() < 0.7 * lap(frame)[bg].mean()
    assert np.mean(diffs) < 1.0, diffs
