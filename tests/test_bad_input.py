"""Each bad input ends with one readable stderr line, a non-zero exit code, no traceback, no files.
(Ctrl-C and SIGTERM during a conversion: tests/test_signals.py.)"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def edgekit(*args, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, **kw)


def assert_clean_failure(res, out_dir: Path, match: str):
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert match in lines[0], lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir())
    if out_dir.parent.exists():
        assert [p for p in out_dir.parent.iterdir() if "edgekit-tmp" in p.name] == []


@pytest.fixture
def outdir(tmp_path):
    return tmp_path / "out" / "artifact"


def test_missing_path(outdir):
    res = edgekit("convert", outdir.parent / "nope.onnx", "-t", "onnx-fp32", "-o", outdir)
    assert_clean_failure(res, outdir, "not found")


def test_not_onnx(tmp_path, outdir):
    f = tmp_path / "notes.onnx"
    f.write_text("this is a text file, not a model\n")
    assert_clean_failure(edgekit("convert", f, "-t", "onnx-fp32", "-o", outdir), outdir, "not a readable ONNX")


def test_truncated_onnx(tmp_path, outdir, student_onnx):
    f = tmp_path / "trunc.onnx"
    f.write_bytes(student_onnx.read_bytes()[:30000])
    assert_clean_failure(edgekit("convert", f, "-t", "onnx-fp32", "-o", outdir), outdir, "ONNX")


def test_dynamic_dims_without_shape(tmp_path, outdir, tiny_onnx):
    f = tmp_path / "nocard.onnx"  # no model.yaml beside it, so no default shape
    shutil.copy(tiny_onnx, f)
    res = edgekit("convert", f, "-t", "onnx-fp32", "-o", outdir)
    assert_clean_failure(res, outdir, "--input-shape image:1x3xHxW")


def test_unknown_target(outdir, tiny_onnx):
    res = edgekit("convert", tiny_onnx, "-t", "tflite-int9", "-o", outdir)
    assert_clean_failure(res, outdir, "valid targets:")
    assert "onnx-int8" in res.stderr


@pytest.mark.slow
def test_unwritable_output(tmp_path, tiny_onnx):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a regular file where a directory is needed (root ignores chmod)
    res = edgekit("convert", tiny_onnx, "-t", "onnx-fp32", "-o", blocker / "sub")
    assert res.returncode == 3
    assert "cannot write to output directory" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_bad_calibration_folder(tmp_path, outdir, tiny_onnx):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = edgekit("convert", tiny_onnx, "-t", "onnx-int8", "--calib", empty, "-o", outdir)
    assert_clean_failure(res, outdir, "has no images")


def test_calibration_images_with_wrong_channels(tmp_path, outdir, tiny_onnx):
    import cv2
    import numpy as np

    folder = tmp_path / "gray"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((32, 32), 100 + i, np.uint8))
    res = edgekit("convert", tiny_onnx, "-t", "onnx-int8", "--calib", folder, "-o", outdir)
    assert_clean_failure(res, outdir, "has 1 channel(s); input 'image' expects 3")


def test_swallowed_ctrl_c_still_stops_the_commit(tmp_path, monkeypatch):
    """A KeyboardInterrupt lost in a finalizer must not let the artifact be committed."""
    import threading

    from edgekit.core import interrupts
    from edgekit.core.artifact import staging

    flag = threading.Event()
    flag.set()
    monkeypatch.setattr(interrupts, "_interrupted", flag)
    with pytest.raises(KeyboardInterrupt):
        with staging(tmp_path / "artifact") as tmp:
            (tmp / "model.onnx").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []
