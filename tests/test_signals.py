"""SIGTERM (a CI timeout, ``docker stop``) is handled like Ctrl-C: the converter child's whole process group is
killed, and no staging folder, no ``edgekit-work-*`` folder and no partial artifact is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")


def _descendants(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(p) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _mentioning(text: str) -> list:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in p.info["cmdline"] or []) and _alive(p):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_sigterm_during_onnx2tf_leaves_nothing(tmp_path, tiny_onnx):
    pytest.importorskip("onnx2tf")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    outdir = tmp_path / "out"
    outdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "convert", str(tiny_onnx), "--target", "tflite-fp32",
                             "-o", str(outdir / "artifact")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    children = []
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        children = _descendants(proc.pid)
        if any("onnx2tf" in " ".join(c.cmdline()) for c in children if _alive(c)):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "conversion ended before onnx2tf started: " + (proc.stderr.read() or "")[-2000:]
    assert children, "onnx2tf never started"
    time.sleep(2)  # let onnx2tf get going (it spawns its own threads/processes)
    children = _descendants(proc.pid) or children
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 143, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines == ["edgekit: terminated; nothing was written"], stderr[-3000:]
    deadline = time.time() + 10
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.1)
    assert [c.pid for c in children if _alive(c)] == []
    assert _mentioning(str(tmpdir)) == []  # nothing still works on our temporary files
    assert list(outdir.iterdir()) == []  # no artifact, no .artifact.edgekit-tmp-*
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("edgekit-work-")] == []


@pytest.mark.parametrize("sig, code, message", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated; nothing was written")],
                         ids=["ctrl-c", "sigterm"])
@pytest.mark.slow
def test_signal_outside_a_child_tool(tmp_path, tiny_onnx, sig, code, message):
    """Ctrl-C or SIGTERM while edgekit itself calibrates (no child running): its exit code, one line, nothing
    written, no staging or work folder left."""
    outdir = tmp_path / "out"
    outdir.mkdir()
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "convert", str(tiny_onnx), "-t", "onnx-int8",
                             "--calib-samples", "3000", "-o", str(outdir / "artifact")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmpdir)})
    deadline = time.time() + 120
    while time.time() < deadline and not any("edgekit-tmp" in p.name for p in outdir.iterdir()):
        time.sleep(0.05)
    assert proc.poll() is None, "conversion ended before it could be stopped"
    time.sleep(0.5)
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-3000:]
    assert message in stderr and "Traceback" not in stderr
    assert list(outdir.iterdir()) == []
    assert [p.name for p in Path(tmpdir).iterdir() if p.name.startswith("edgekit-")] == []
