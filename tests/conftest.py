"""Shared, session-scoped artifacts: each real conversion happens once per test run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "models" / "portrait-seg" / "student.onnx"


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """A test that calls the CLI in-process installs edgekit's SIGINT/SIGTERM handlers in pytest's own process,
    and one that sends itself a signal leaves the interrupt recorded: put both back after every test, so no
    test's Ctrl-C reaches the next one."""
    import signal

    from edgekit.core import interrupts

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    interrupts.reset()


@pytest.fixture(scope="session")
def student_onnx() -> Path:
    return STUDENT


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("edgekit")


@pytest.fixture(scope="session")
def tiny_onnx(workdir) -> Path:
    """A small random-init student at 64x64 with dynamic H/W and a model card (fast to convert)."""
    torch = pytest.importorskip("torch")
    from edgekit.core.ingest import export_torch
    from edgekit.zoo.portrait_seg import build

    torch.manual_seed(0)
    folder = workdir / "tiny"
    folder.mkdir()
    path = folder / "tiny.onnx"
    export_torch(build(width=0.5), path, (1, 3, 64, 64), input_name="image", output_names=["mask"], dynamic_hw=True)
    card = (STUDENT.parent / "model.yaml").read_text().replace("[1, 3, 256, 256]", "[1, 3, 64, 64]")
    (folder / "model.yaml").write_text(card)
    return path


@pytest.fixture(scope="session")
def student_artifacts(workdir, student_onnx):
    """Conversions of the bundled student, made on first use and shared: {target: Artifact}."""
    from edgekit.core.conversion import convert

    cache: dict = {}

    def get(target: str, **kw):
        key = (target, repr(sorted(kw.items())))
        if key not in cache:
            cache[key] = convert(student_onnx, target, workdir / "student" / f"{target}-{len(cache)}", **kw)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def portraits():
    """Real-looking held-out inputs (synthetic composites, never used in training) at 256x256."""
    from edgekit.core.samples.synthetic import dataset

    return dataset(12, 256, 256, seed=31337)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def as_input(imgs: np.ndarray) -> np.ndarray:
    """N x H x W x 3 [0, 1] -> the student's normalized NCHW input."""
    return ((imgs - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32)


@pytest.fixture(scope="session")
def app_config(workdir, student_onnx) -> Path:
    """An app config written by a real (small) profiler sweep on this CPU."""
    from edgekit.apps.profiling.profile import profile_device

    prof = workdir / "cfg-cpu.yaml"
    prof.write_text("id: cfg-cpu\nhardware: cpu\nreach: local\ntargets: [onnx-fp32, ncnn-fp16]\nthreads: [1]\n"
                    "resolutions: [[144, 256]]\nbudget: {fps: 30, model_share: 1.0}\nruns: 5\nwarmup: 1\n")
    result = profile_device(prof, student_onnx, workdir / "cfg-profile", workdir / "cfg-configs")
    return result.config_path


@pytest.fixture(scope="session")
def mediapipe_models():
    """MediaPipe's models and the evaluation photos, fetched from PyPI packages (as `make setup` does)."""
    from edgekit.core.samples import photos
    from edgekit.zoo import mediapipe

    mediapipe.fetch()
    photos.fetch()
    return mediapipe


def mean_iou_vs_fp32(student_artifacts, artifact, portraits) -> float:
    """Mean mask IoU of ``artifact`` against the fp32 ONNX artifact on the held-out portraits."""
    import edgekit
    from edgekit.core.parity import mask_iou

    ref = edgekit.load(student_artifacts("onnx-fp32").path)
    cand = edgekit.load(artifact.path, threads=2)
    x = as_input(portraits[0])
    return float(np.mean([mask_iou(ref.run({"image": x[i:i + 1]})["mask"] > 0.5,
                                   cand.run({"image": x[i:i + 1]})["mask"] > 0.5) for i in range(len(x))]))


# The suite loads torch, TensorFlow, LiteRT, OpenVINO, ncnn (with a Vulkan instance) and coremltools into one
# process; after the last test and the summary, tearing that interpreter down segfaults inside a native
# library's finalizer (exit 139 with every test passed; each CLI run the tests make exits cleanly). So the test
# process ends with pytest's own exit status as soon as pytest is done, without running native finalizers.
_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    import os
    import sys

    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
