"""Writes and artifacts under hostile input: ``-o`` never deletes anything of the user's, artifacts are verified
(schema, paths inside their folder, sha256) before any runtime opens a file, writes follow the umask, child
tools and downloads leave nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.hostile import Case, edgekit, run_case

FP32 = ["-t", "onnx-fp32"]


@pytest.fixture(scope="session")
def tiny_artifact(workdir, tiny_onnx) -> Path:
    """tiny_onnx converted to onnx-fp32 once; cases copy it."""
    from edgekit.core.conversion import convert

    return convert(tiny_onnx, "onnx-fp32", workdir / "hostile-output" / "tiny-onnx-fp32").path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _artifact(tmp: Path, fx, name: str = "art") -> Path:
    dst = tmp / name
    shutil.copytree(fx("tiny_artifact"), dst)
    return dst


def _edit_manifest(art: Path, edit) -> None:
    m = json.loads((art / "artifact.json").read_text())
    edit(m)
    (art / "artifact.json").write_text(json.dumps(m))


def _model_with_card(tmp: Path, fx, folder: str) -> Path:
    d = tmp / folder
    d.mkdir(parents=True, exist_ok=True)
    src = Path(fx("tiny_onnx"))
    shutil.copy(src, d / "tiny.onnx")
    shutil.copy(src.parent / "model.yaml", d / "model.yaml")
    return d / "tiny.onnx"


# ---------------------------------------------------------------- setups


def _nonempty_folder(tmp, fx):
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("my notes\n")
    (tmp / "out" / "photo.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return ["convert", fx("tiny_onnx"), *FP32, "-o", "out"]


def _model_folder(tmp, fx):
    model = _model_with_card(tmp, fx, "proj")
    (tmp / "proj" / "train.py").write_text("print('training')\n")
    (tmp / "proj" / "checkpoint.pt").write_bytes(b"weights")
    return ["convert", model, *FP32, "-o", "proj"]


def _existing_file(tmp, fx):
    (tmp / "result.bin").write_bytes(b"important bytes")
    return ["convert", fx("tiny_onnx"), *FP32, "-o", "result.bin"]


def _dot(tmp, fx):
    (tmp / "keep.txt").write_text("keep me\n")
    return ["convert", fx("tiny_onnx"), *FP32, "-o", "."]


def _cwd_absolute(tmp, fx):
    (tmp / "keep.txt").write_text("keep me\n")
    return ["convert", fx("tiny_onnx"), *FP32, "-o", tmp]  # the case runs in tmp


def _parent_of_cwd(tmp, fx):
    (tmp / "sub").mkdir()
    (tmp / "keep.txt").write_text("keep me\n")
    return ["convert", fx("tiny_onnx"), *FP32, "-o", ".."]  # relative to tmp: its parent holds the cwd


def _home(tmp, fx):
    # HOME points here (see the case's env); the shell would have expanded ~ to it
    return ["convert", fx("tiny_onnx"), *FP32, "-o", tmp / "home"]


def _root(tmp, fx):
    return ["convert", fx("tiny_onnx"), *FP32, "-o", "/"]


def _artifact_with_user_file(tmp, fx):
    art = _artifact(tmp, fx, "out")
    (art / "my-results.csv").write_text("a,b\n1,2\n")
    return ["convert", fx("tiny_onnx"), *FP32, "-o", "out"]


def _calib_folder(tmp, fx):
    import numpy as np

    (tmp / "calib").mkdir()
    np.save(tmp / "calib" / "batch.npy", np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32))
    return ["convert", fx("tiny_onnx"), *FP32, "--calib", "calib/batch.npy", "-o", "calib"]


def _absolute_path(tmp, fx):
    art = _artifact(tmp, fx)
    _edit_manifest(art, lambda m: m["files"]["model"].update(path="/etc/passwd", sha256=_sha(Path("/etc/passwd"))))
    return ["run", "art", "--runs", "1"]


def _dotdot(tmp, fx):
    art = _artifact(tmp, fx)
    shutil.copy(art / "model.onnx", tmp / "elsewhere.onnx")
    _edit_manifest(art, lambda m: m["files"]["model"].update(path="../elsewhere.onnx"))
    return ["run", "art", "--runs", "1"]


def _symlink_escape(tmp, fx):
    art = _artifact(tmp, fx)
    shutil.move(art / "model.onnx", tmp / "outside.onnx")  # same bytes, so the sha256 alone would pass
    (art / "model.onnx").symlink_to(tmp / "outside.onnx")
    return ["run", "art", "--runs", "1"]


def _reference_escape(tmp, fx):
    art = _artifact(tmp, fx)
    shutil.copy(art / "reference.onnx", tmp / "ref.onnx")
    _edit_manifest(art, lambda m: m["reference"].update(path=str(tmp / "ref.onnx")))
    return ["validate", "art", "--samples", "2"]


def _files_list(tmp, fx):
    art = _artifact(tmp, fx)
    _edit_manifest(art, lambda m: m.update(files=[{"role": r, **v} for r, v in m["files"].items()]))
    return ["run", "art", "--runs", "1"]


def _no_sha(tmp, fx):
    art = _artifact(tmp, fx)
    _edit_manifest(art, lambda m: m["files"]["model"].pop("sha256"))
    return ["run", "art", "--runs", "1"]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2  # inside the weights
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _tampered(command):
    def setup(tmp, fx):
        art = _artifact(tmp, fx)
        _flip_byte(art / "model.onnx")
        return [command, "art", *(["--runs", "1"] if command == "run" else ["--samples", "2"])]
    return setup


def _truncated(command):
    def setup(tmp, fx):
        art = _artifact(tmp, fx)
        data = (art / "model.onnx").read_bytes()
        (art / "model.onnx").write_bytes(data[: len(data) // 2])
        return [command, "art", *(["--runs", "1"] if command == "run" else ["--samples", "2"])]
    return setup


def _tampered_reference(tmp, fx):
    art = _artifact(tmp, fx)
    _flip_byte(art / "reference.onnx")
    return ["validate", "art", "--samples", "2"]


def _manifest_garbage(tmp, fx):
    art = _artifact(tmp, fx)
    (art / "artifact.json").write_text('{"files": ')
    return ["run", "art", "--runs", "1"]


def _replace_previous(tmp, fx):
    art = _artifact(tmp, fx, "out")
    _edit_manifest(art, lambda m: m.update(created="previous-artifact"))
    return ["convert", fx("tiny_onnx"), *FP32, "-o", "out"]


REFUSED = "refusing to write the artifact to"

CASES = [
    Case("out-nonempty-folder", "data loss", "-o names a folder of unrelated files", _nonempty_folder, 3,
         "not an edgekit artifact", survive=["out"]),
    Case("out-model-folder", "data loss", "-o names the model's own folder (model, card, train.py, checkpoint)",
         _model_folder, 3, "holds the source model tiny.onnx", survive=["proj"]),
    Case("out-existing-file", "data loss", "-o names an existing file", _existing_file, 3, "it is an existing file",
         survive=["result.bin"], absent=[".result.bin*"]),
    Case("out-dot", "data loss", "-o .", _dot, 3, "it is the current folder", survive=["keep.txt"]),
    Case("out-cwd-absolute", "data loss", "-o the current folder by its absolute path", _cwd_absolute, 3,
         "it is the current folder", survive=["keep.txt"]),
    Case("out-parent-of-cwd", "data loss", "-o .. (a folder holding the current folder)", _parent_of_cwd, 3,
         "it holds the current folder", survive=["keep.txt", "sub"]),
    Case("out-home", "data loss", "-o ~ (HOME set to a folder holding a file)", _home, 3, "it is your home folder",
         survive=["home/.bashrc"]),
    Case("out-root", "data loss", "-o /", _root, 3, "it is the filesystem root"),
    Case("out-artifact-with-user-file", "data loss", "-o names a previous artifact the user added a file to",
         _artifact_with_user_file, 3, "not part of the artifact there (my-results.csv)", survive=["out"]),
    Case("out-calib-folder", "data loss", "-o names the folder of the --calib data", _calib_folder, 3,
         "an input of this conversion", survive=["calib"]),
    Case("artifact-absolute-path", "escape", "artifact.json names /etc/passwd as the model", _absolute_path, 2,
         "leaves its folder"),
    Case("artifact-dotdot", "escape", "artifact.json names ../elsewhere.onnx", _dotdot, 2, "leaves its folder"),
    Case("artifact-symlink-escape", "escape", "the model file is a symlink to a file outside the artifact",
         _symlink_escape, 2, "symlink escape refused"),
    Case("artifact-reference-absolute", "escape", "artifact.json's reference is an absolute path (validate)",
         _reference_escape, 2, "leaves its folder"),
    Case("artifact-files-list", "crash", "artifact.json `files` is a list", _files_list, 2,
         "is invalid at files"),
    Case("artifact-no-sha256", "wrong result", "artifact.json's model entry has no sha256", _no_sha, 2,
         "is invalid at files/model: 'sha256' is a required property"),
    Case("artifact-not-json", "crash", "artifact.json is cut off", _manifest_garbage, 2, "is not readable JSON"),
    Case("tampered-weights-run", "wrong result", "one byte of the weights flipped (run)", _tampered("run"), 2,
         "model.onnx does not match its recorded sha256"),
    Case("tampered-weights-validate", "wrong result", "one byte of the weights flipped (validate)",
         _tampered("validate"), 2, "model.onnx does not match its recorded sha256"),
    Case("tampered-reference-validate", "wrong result", "one byte of the stored reference flipped (validate)",
         _tampered_reference, 2, "reference.onnx does not match its recorded sha256"),
    Case("truncated-model-run", "crash", "the model file inside an artifact truncated (run)", _truncated("run"), 2,
         "model.onnx does not match its recorded sha256"),
    Case("truncated-model-validate", "crash", "the model file inside an artifact truncated (validate)",
         _truncated("validate"), 2, "model.onnx does not match its recorded sha256"),
    Case("replace-previous-artifact", "data loss", "-o names a previous edgekit artifact: it is replaced",
         _replace_previous, 0, "onnx-fp32 -> "),
]


def _prepare_home(case: Case, tmp: Path) -> Case:
    if case.id != "out-home":
        return case
    (tmp / "home").mkdir()
    (tmp / "home" / ".bashrc").write_text("export PATH\n")
    return Case(**{**case.__dict__, "env": {"HOME": str(tmp / "home")}})


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile(case, tmp_path, request):
    res = run_case(_prepare_home(case, tmp_path), tmp_path, request)
    if case.exit_code:
        assert "Use a free path instead" in res.stderr or REFUSED not in res.stderr
        if REFUSED in res.stderr:  # the path it names is free
            free = res.stderr.strip().rsplit("-o ", 1)[1].strip()
            assert not Path(tmp_path, free).exists(), free
    if case.id == "replace-previous-artifact":
        from edgekit.core.artifact import Artifact

        art = Artifact.load(tmp_path / "out")  # the new one loads (and verifies)
        assert art.created != "previous-artifact"
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["artifact.json", "model.onnx",
                                                                         "reference.onnx"]
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- umask


@pytest.mark.parametrize("umask,dir_mode,file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_outputs_follow_the_umask(tmp_path, tiny_onnx, umask, dir_mode, file_mode):
    res = edgekit("convert", tiny_onnx, *FP32, "-o", tmp_path / "out", preexec_fn=lambda: os.umask(umask))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"artifact.json", "model.onnx", "reference.onnx"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == file_mode, p
    for p in out.rglob("*"):
        if p.is_dir():
            assert stat.S_IMODE(p.stat().st_mode) == dir_mode, p


# ---------------------------------------------------------------- staging, in process


def test_staging_removes_leftovers_of_dead_runs_only(tmp_path):
    from edgekit.core.artifact import staging

    dead = 4_194_304 + 12345  # above Linux's largest pid: no such process
    stale_tmp = tmp_path / f".out.edgekit-tmp-{dead}-abc123"
    stale_old = tmp_path / f".out.edgekit-old-{dead}"
    live = tmp_path / ".out.edgekit-tmp-1-xyz"  # pid 1 is alive
    other = tmp_path / f".other.edgekit-tmp-{dead}-abc"  # another output's: not ours to judge now
    for p in (stale_tmp, stale_old, live, other):
        p.mkdir()
        (p / "model.onnx").write_bytes(b"x")
    with staging(tmp_path / "out") as stage:
        (stage / "artifact.json").write_text("{}")
    assert not stale_tmp.exists() and not stale_old.exists()
    assert live.exists() and other.exists()
    assert (tmp_path / "out" / "artifact.json").is_file()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_staging_replaces_a_previous_artifact_whole(tmp_path, monkeypatch, exchange):
    from edgekit.core import artifact

    if not exchange:
        monkeypatch.setattr(artifact, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "artifact.json").write_text(json.dumps({"files": {"model": {"path": "old.onnx", "sha256": "0" * 64}}}))
    (out / "old.onnx").write_bytes(b"old")
    with artifact.staging(out) as stage:
        (stage / "new.onnx").write_bytes(b"new")
        (stage / "artifact.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["artifact.json", "new.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_signal_during_the_swap_undoes_it(tmp_path, monkeypatch):
    """Ctrl-C/SIGTERM arriving while the previous artifact is swapped out: the previous one is put back whole,
    the interrupt is delivered after, and nothing is left beside it."""
    import signal

    from edgekit.core import artifact

    out = tmp_path / "out"
    out.mkdir()
    (out / "artifact.json").write_text(json.dumps({"files": {"model": {"path": "old.onnx", "sha256": "0" * 64}}}))
    (out / "old.onnx").write_bytes(b"old")
    real, calls = artifact._swap, []

    def swap(a, b):
        real(a, b)
        calls.append((a, b))
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # recorded; delivered once the commit is undone

    monkeypatch.setattr(artifact, "_swap", swap)
    with pytest.raises(KeyboardInterrupt):
        with artifact.staging(out) as stage:
            (stage / "new.onnx").write_bytes(b"new")
            (stage / "artifact.json").write_text("{}")
    assert len(calls) == 2  # swapped, then swapped back
    assert sorted(p.name for p in out.iterdir()) == ["artifact.json", "old.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staging_refuses_before_any_work(tmp_path):
    from edgekit.core.artifact import staging
    from edgekit.errors import OutputError

    (tmp_path / "src").mkdir()
    model = tmp_path / "src" / "m.onnx"
    model.write_bytes(b"m")
    ran = []
    with pytest.raises(OutputError, match="holds the source model m.onnx"):
        with staging(tmp_path, protect=[model]):
            ran.append(1)
    assert not ran and sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    with pytest.raises(OutputError, match="holds the source model"):
        with staging(tmp_path / "src", protect=[f"{model}:build"]):  # a file.py:factory reference
            pass


def test_api_load_verifies(tmp_path, tiny_artifact):
    import edgekit
    from edgekit.errors import InputError

    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    _flip_byte(art / "model.onnx")
    with pytest.raises(InputError, match="does not match its recorded sha256"):
        edgekit.load(art)


# ---------------------------------------------------------------- child tools


GRANDCHILD = """
import subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(p.pid))
time.sleep(120)
"""


def _wait_for_pid(path: Path) -> int:
    deadline = time.time() + 30
    while time.time() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError("the child tool did not start")


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_tool_timeout_kills_the_whole_group(tmp_path):
    from edgekit.core import subprocesses

    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    with pytest.raises(subprocesses.ToolTimeoutError, match="faketool did not finish within 2 s") as e:
        subprocesses.run([sys.executable, "-c", GRANDCHILD, str(pidfile)], "faketool", timeout=2)
    assert e.value.tool == "faketool" and e.value.exit_code == 5
    assert time.monotonic() - t0 < 30
    grandchild = _wait_for_pid(pidfile)
    deadline = time.time() + 10
    while not _gone(grandchild) and time.time() < deadline:
        time.sleep(0.1)
    assert _gone(grandchild)


def test_tool_is_killed_on_an_interrupt(tmp_path, monkeypatch):
    from edgekit.core import interrupts, subprocesses

    flag = threading.Event()
    monkeypatch.setattr(interrupts, "_interrupted", flag)  # as if a Ctrl-C was swallowed by a finalizer
    pidfile = tmp_path / "pid"
    threading.Timer(0.1, lambda: (_wait_for_pid(pidfile), flag.set())).start()
    with pytest.raises(KeyboardInterrupt):
        subprocesses.run([sys.executable, "-c", GRANDCHILD, str(pidfile)], "faketool", timeout=60)
    grandchild = _wait_for_pid(pidfile)
    deadline = time.time() + 10
    while not _gone(grandchild) and time.time() < deadline:
        time.sleep(0.1)
    assert _gone(grandchild)


def test_tool_timeout_env_is_checked(monkeypatch):
    from edgekit.core import subprocesses
    from edgekit.errors import EdgekitError

    monkeypatch.setenv("EDGEKIT_TOOL_TIMEOUT", "soon")
    with pytest.raises(EdgekitError, match="EDGEKIT_TOOL_TIMEOUT must be a positive number"):
        subprocesses.timeout_for("onnx2tf")
    monkeypatch.setenv("EDGEKIT_TOOL_TIMEOUT", "7")
    assert subprocesses.timeout_for("onnx2tf") == 7.0


# ---------------------------------------------------------------- models fetch


def _fake_pip(wheel_bytes: bytes | None, raise_exc: BaseException | None = None):
    def run(cmd, tool, **kw):
        if raise_exc is not None:
            raise raise_exc
        dest = Path(cmd[cmd.index("-d") + 1])
        if wheel_bytes is not None:
            (dest / "mediapipe-0.10.14-cp311-none-any.whl").write_bytes(wheel_bytes)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def _wheel(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("how", ["bad-wheel", "missing-member", "ctrl-c", "sigterm"])
def test_models_fetch_leaves_nothing_partial(tmp_path, monkeypatch, how):
    from edgekit.core import interrupts, subprocesses
    from edgekit.errors import EdgekitError
    from edgekit.zoo import mediapipe

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    members = {m: b"tflite " + m.encode() for m in mediapipe.MODELS.values()}
    fake = {"bad-wheel": _fake_pip(b"not a zip"),
            "missing-member": _fake_pip(_wheel(dict(list(members.items())[:2]))),
            "ctrl-c": _fake_pip(None, KeyboardInterrupt()),
            "sigterm": _fake_pip(None, interrupts.Terminated())}[how]
    monkeypatch.setattr(subprocesses, "run", fake)
    with pytest.raises((EdgekitError, KeyboardInterrupt)):
        mediapipe.fetch()
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() or "edgekit-" in p.name]
    assert left == []


def test_models_fetch_replaces_a_partial_cache(tmp_path, monkeypatch):
    from edgekit.core import subprocesses
    from edgekit.zoo import mediapipe

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    dest = mediapipe.cache_dir()
    dest.mkdir(parents=True)
    (dest / "selfie_segmentation.tflite").write_bytes(b"half")  # a partial cache from an older edgekit
    members = {m: b"tflite " + m.encode() for m in mediapipe.MODELS.values()}
    monkeypatch.setattr(subprocesses, "run", _fake_pip(_wheel(members)))
    paths = mediapipe.fetch()
    assert {p.read_bytes() for p in paths.values()} == set(members.values())
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_photos_fetch_leaves_nothing_partial(tmp_path, monkeypatch):
    import io
    import tarfile

    from edgekit.core import subprocesses
    from edgekit.core.samples import photos
    from edgekit.errors import EdgekitError

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:  # an sdist holding only one of the photos
        info = tarfile.TarInfo("face_recognition-1.3.0/tests/test_images/obama.jpg")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"jpeg"))

    def fake(cmd, tool, **kw):
        (Path(cmd[cmd.index("-d") + 1]) / "face_recognition-1.3.0.tar.gz").write_bytes(buf.getvalue())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocesses, "run", fake)
    with pytest.raises(EdgekitError, match="does not hold obama2.jpg"):
        photos.fetch()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file() or "edgekit-" in p.name] == []
