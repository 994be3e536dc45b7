"""Hostile app configs and outputs for `edgekit process`, an interrupted process run, and a profile resumed in
a folder that holds another model's points.

App configs here are copies of the shipped ``profiles/configs/local-cpu.json`` (with its artifacts), edited the
way an attacker or an accident would; inputs are a few small generated frames, so every case runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.hostile import Case, _digest, edgekit, run_case

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "profiles" / "configs"
_CFG = json.loads((SHIPPED / "local-cpu.json").read_text())  # whatever the profiler shipped last
RUNTIME_TARGET = _CFG["runtime"]["target"]
FALLBACK_MODEL = sorted(f for f in _CFG["fallback"]["files"] if f.startswith("model."))[0]


def _config(tmp: Path, edit=None) -> str:
    """A copy of the shipped local-cpu config in ``tmp/cfg``; ``edit(config, folder)`` may change it."""
    folder = tmp / "cfg"
    folder.mkdir()
    shutil.copy(SHIPPED / "local-cpu.json", folder / "local-cpu.json")
    shutil.copytree(SHIPPED / "local-cpu", folder / "local-cpu")
    if edit is not None:
        config = json.loads((folder / "local-cpu.json").read_text())
        edit(config, folder)
        (folder / "local-cpu.json").write_text(json.dumps(config, indent=2))
    return "cfg/local-cpu.json"


def _frames(tmp: Path, sizes=((48, 64),) * 3, name="frames") -> str:
    folder = tmp / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i:03d}.png"), (rng.random((h, w, 3)) * 255).astype(np.uint8))
    return name


def _process(tmp: Path, edit=None, *extra, output="out") -> list:
    return ["process", _frames(tmp), "-o", output, "-c", _config(tmp, edit), *extra]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- edits of the config
def _tamper_fallback(config, folder):
    name = sorted(f for f in config["fallback"]["files"] if f.startswith("model."))[0]  # model.onnx, .tflite, ...
    model = folder / config["fallback"]["artifact"] / name
    model.write_bytes(model.read_bytes() + b"\0")


def _outside(config, folder):
    elsewhere = folder.parent / "elsewhere"
    shutil.copytree(folder / config["runtime"]["artifact"], elsewhere / "ncnn")
    config["runtime"]["artifact"] = "../elsewhere/ncnn"  # every sha256 still matches


def _absolute(config, folder):
    elsewhere = folder.parent / "elsewhere"
    shutil.copytree(folder / config["runtime"]["artifact"], elsewhere / "ncnn")
    config["runtime"]["artifact"] = str(elsewhere / "ncnn")


def _symlink_escape(config, folder):
    elsewhere = folder.parent / "elsewhere"
    shutil.copytree(folder / config["runtime"]["artifact"], elsewhere / "ncnn")
    (folder / "local-cpu" / "link").symlink_to(elsewhere / "ncnn", target_is_directory=True)
    config["runtime"]["artifact"] = "local-cpu/link"


def _redirect_runtime(config, folder):
    config["runtime"]["artifact"] = config["fallback"]["artifact"]


def _manifest_points_elsewhere(config, folder):
    """artifact.json names a file of another folder, and the config's hash of artifact.json is updated to
    match (as a careful attacker would): the path itself must be refused."""
    manifest = folder / config["runtime"]["artifact"] / "artifact.json"
    data = json.loads(manifest.read_text())
    data["files"]["model"]["path"] = f"../{Path(config['fallback']['artifact']).name}/{FALLBACK_MODEL}"
    manifest.write_text(json.dumps(data))
    config["runtime"]["files"]["artifact.json"] = _sha(manifest)


def _another_model(config, folder):
    config["model"]["source_sha256"] = "0" * 64


def _old_schema(config, folder):
    config["schema_version"] = 1


def _npu_delegate(config, folder):
    config["runtime"]["delegate"] = "npu"  # no NPU here: the profiler's choice cannot run


def _other_mean(config, folder):
    config["preprocessing"]["mean"] = [0.25, 0.25, 0.25]  # the artifacts were validated with another mean


# -- existing outputs
def _user_folder(tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")
    return _process(tmp)


def _user_video(tmp):
    (tmp / "out.avi").write_bytes(b"my holiday video")
    return _process(tmp, None, output="out.avi")


def _user_sheet(tmp):
    (tmp / "out_before_after.png").write_bytes(b"my picture")
    return _process(tmp)


def _two_sizes(tmp):
    return ["process", _frames(tmp, ((48, 64),) * 3 + ((40, 90),) * 3), "-o", "out.avi", "-c", _config(tmp)]


NOTHING = ["out", "out_before_after.png", "out.avi"]

CASES = [
    Case("config-fallback-tampered", "wrong result", "the fallback artifact's model was changed after the config "
         "was written", lambda t, fx: _process(t, _tamper_fallback), 2, f"fallback artifact: {FALLBACK_MODEL} does not "
         "match its recorded sha256", absent=NOTHING),
    Case("config-path-outside", "escape", "runtime.artifact leaves the config's folder with '..' (every sha256 "
         "matches)", lambda t, fx: _process(t, _outside), 2, "leaves its folder", absent=NOTHING),
    Case("config-path-absolute", "escape", "runtime.artifact is an absolute path (every sha256 matches)",
         lambda t, fx: _process(t, _absolute), 2, "leaves its folder", absent=NOTHING),
    Case("config-symlink-escape", "escape", "runtime.artifact is a symlink inside the folder pointing outside it",
         lambda t, fx: _process(t, _symlink_escape), 2, "resolves outside", absent=NOTHING),
    Case("config-runtime-redirected", "wrong result", "runtime.artifact redirected to the fallback's folder",
         lambda t, fx: _process(t, _redirect_runtime), 2, "runtime artifact: artifact.json does not match",
         absent=NOTHING),
    Case("config-manifest-points-elsewhere", "escape", "the runtime's artifact.json names a file in another "
         "folder (its hash in the config updated)", lambda t, fx: _process(t, _manifest_points_elsewhere), 2,
         "leaves its folder", absent=NOTHING),
    Case("config-another-model", "wrong result", "the config's model sha256 is not the one its artifacts were "
         "converted from", lambda t, fx: _process(t, _another_model), 2, "converted from another model",
         absent=NOTHING),
    Case("config-old-schema", "wrong result", "a schema 1 config (its fallback never hashed)",
         lambda t, fx: _process(t, _old_schema), 2, "schema_version 1", absent=NOTHING),
    Case("strict-primary-unavailable", "silent deviation", "--strict with a config whose chosen delegate (npu) "
         "is not on this machine", lambda t, fx: _process(t, _npu_delegate, "--strict"), 7,
         f"--strict: the profiler's choice {RUNTIME_TARGET} on npu", absent=NOTHING),
    Case("primary-unavailable-reported", "silent deviation", "without --strict the fallback runs and says so",
         lambda t, fx: _process(t, _npu_delegate), 0,
         f"deviation (fallback): the profiler's choice {RUNTIME_TARGET} on npu"),
    Case("strict-preprocessing-differs", "silent deviation", "--strict with a config whose mean is not the one "
         "its artifacts were validated with", lambda t, fx: _process(t, _other_mean, "--strict"), 2,
         "--strict: the config's pre-processing differs", absent=NOTHING),
    Case("preprocessing-differs-reported", "silent deviation", "without --strict the config's mean is used and the "
         "difference reported", lambda t, fx: _process(t, _other_mean), 0, "deviation (config): the config's "
         "pre-processing differs from what the runtime artifact was validated with: mean [0.25, 0.25, 0.25]"),
    Case("output-unrelated-folder", "data loss", "-o names a non-empty folder edgekit did not write",
         lambda t, fx: _user_folder(t), 3, "not edgekit's previous output",
         survive=["out"], absent=["out_before_after.png"]),
    Case("output-unrelated-video", "data loss", "-o names an existing video edgekit did not write",
         lambda t, fx: _user_video(t), 3, "not edgekit's previous output", survive=["out.avi"],
         absent=["out_before_after.png"]),
    Case("output-unrelated-sheet", "data loss", "OUTPUT_before_after.png exists and is not edgekit's",
         lambda t, fx: _user_sheet(t), 3, "not edgekit's previous before/after sheet",
         survive=["out_before_after.png"], absent=["out"]),
    Case("frame-size-changes", "wrong result", "the input's frame size changes mid-stream (a video holds one size)",
         lambda t, fx: _two_sizes(t), 0, "3 frame(s) had another size"),
    Case("max-frames-zero", "crash", "--max-frames 0", lambda t, fx: _process(t, None, "--max-frames", "0"), 2,
         "--max-frames 0"),
    Case("strength-not-a-number", "crash", "--strength blur=lots",
         lambda t, fx: _process(t, None, "--strength", "blur=lots"), 2, "expected EFFECT=NUMBER"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile(case, tmp_path, request):
    run_case(case, tmp_path, request)


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_frame_count_matches_the_written_output(tmp_path):
    """6 frames of two sizes in, 6 frames out: the count the report gives is what the file holds."""
    args = _two_sizes(tmp_path)
    res = edgekit(*args, "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    frames = _read_video(tmp_path / "out.avi")
    assert report["frames_in"] == report["frames_out"] == len(frames) == 6
    assert {f.shape for f in frames} == {(48, 64, 3)}
    manifest = json.loads((tmp_path / "out.avi.edgekit.json").read_text())
    assert manifest["frames"] == 6 and manifest["output"]["sha256"] == _sha(tmp_path / "out.avi")


def test_reports_what_ran_and_replaces_only_its_own_output(tmp_path):
    """The report names the config's exact runtime; a second run replaces the first run's folder (edgekit's),
    and a file the user puts into it makes the next run refuse."""
    args = _process(tmp_path, None, "--json")
    first = edgekit(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    config = json.loads((tmp_path / "cfg" / "local-cpu.json").read_text())
    assert report["model"]["role"] == "runtime"
    assert (report["model"]["target"], report["model"]["delegate"], report["model"]["threads"]) == (
        config["runtime"]["target"], config["runtime"]["delegate"], config["runtime"]["threads"])
    assert report["model"]["resolution"] == config["runtime"]["resolution"]
    assert report["deviations"] == [] and report["moves"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "000000.png", "000001.png", "000002.png", "edgekit-process.json"]
    again = edgekit(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    third = edgekit(*args, cwd=tmp_path)
    assert third.returncode == 3 and "not edgekit's previous output" in third.stderr
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_pre_processing_follows_the_config():
    """The model input honours the config's colour order, value range, mean and std (independently computed)."""
    from edgekit.apps.video.process import model_input

    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 100, 250  # B, G, R
    rgb = model_input(frame, (2, 2), "RGB", (0.0, 1.0), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert rgb.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(rgb[0, :, 0, 0], [(250 / 255 - 0.5) / 0.5, (100 / 255 - 0.5) / 0.5,
                                                 (10 / 255 - 0.5) / 0.5], rtol=1e-5)
    bgr = model_input(frame, (2, 2), "BGR", (0.0, 255.0), (1.0, 2.0, 3.0), (2.0, 2.0, 2.0))
    np.testing.assert_allclose(bgr[0, :, 0, 0], [(10 - 1) / 2, (100 - 2) / 2, (250 - 3) / 2], rtol=1e-5)


def _long_video(tmp: Path, n: int = 600) -> Path:
    path = tmp / "long.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    rng = np.random.default_rng(1)
    base = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    for i in range(n):
        writer.write(np.roll(base, i, axis=1))
    writer.release()
    return path


def _started_writing(tmp: Path, output: str) -> bool:
    """Whether the run has written some frames into its staging (folder: 5 PNGs; video: 20 KB)."""
    for staged in tmp.glob(f".{output}.edgekit-tmp-*"):
        if staged.is_dir() and len(list(staged.glob("*.png"))) >= 5:
            return True
        if staged.is_file() and staged.stat().st_size > 20_000:
            return True
    return False


@pytest.mark.parametrize("sig,code,output", [(signal.SIGINT, 130, "out"), (signal.SIGTERM, 143, "out"),
                                             (signal.SIGINT, 130, "out.avi")], ids=["SIGINT", "SIGTERM", "video"])
def test_interrupted_process_leaves_no_partial_frames(tmp_path, sig, code, output):
    """A real signal during a run: no partial frames anywhere, the previous output and sheet intact."""
    video = _long_video(tmp_path)
    config = _config(tmp_path)
    first = edgekit("process", video, "-o", output, "-c", config, "--max-frames", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {p: _digest(tmp_path / p) for p in (output, "out_before_after.png")}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "process", str(video), "-o", output, "-c", config],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if _started_writing(tmp_path, output):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert {p: _digest(tmp_path / p) for p in before} == before
    leftovers = [p for p in tmp_path.rglob("*") if "edgekit-tmp" in p.name or "edgekit-old" in p.name]
    assert not leftovers


# -- profile: points keyed by model, config ships only the model asked for
PROFILE = """id: resume-dev
hardware: cpu
reach: local
targets: [onnx-fp32]
threads: [1]
resolutions: [[64, 64]]
budget: {fps: 1, model_share: 1.0}
runs: 5
warmup: 1
"""


def _perturbed_copy(model: Path, dest: Path) -> Path:
    """The same network with one weight tensor scaled: another model (another sha256), still valid."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model))
    for i, init in enumerate(m.graph.initializer):
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 8:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr * np.float32(1.01), init.name))
            break
    dest.mkdir()
    onnx.save(m, str(dest / "model_b.onnx"))
    shutil.copy(model.parent / "model.yaml", dest / "model.yaml")
    return dest / "model_b.onnx"


def test_profile_resume_never_reuses_another_models_points(tmp_path, tiny_onnx):
    from edgekit.apps.profiling import appconfig
    from edgekit.apps.profiling.profile import profile_device
    from edgekit.core.artifact import sha256_file
    from edgekit.errors import OutputError

    prof = tmp_path / "resume-dev.yaml"
    prof.write_text(PROFILE)
    model_b = _perturbed_copy(tiny_onnx, tmp_path / "b")
    sha_a, sha_b = sha256_file(tiny_onnx), sha256_file(model_b)
    out, configs = tmp_path / "profile", tmp_path / "configs"
    a = profile_device(prof, tiny_onnx, out, configs)
    assert a.config_path is not None and not a.notes
    b = profile_device(prof, model_b, out, configs)
    assert any("another model" in n for n in b.notes), b.notes
    assert all(p.model_sha256 == sha_b for p in b.points)
    config = appconfig.load_config(b.config_path)
    assert config["model"]["source_sha256"] == sha_b
    shipped = json.loads((Path(config["runtime"]["artifact_dir"]) / "artifact.json").read_text())
    assert shipped["source"]["sha256"] == sha_b
    assert Path(b.choice.chosen.artifact).parent.parent.name == sha_b[:16]
    # A's points are still in the file, not deleted
    lines = [json.loads(ln) for ln in (out / "resume-dev" / "points.jsonl").read_text().splitlines()]
    assert sorted(p["model_sha256"] for p in lines) == sorted([sha_a, sha_b])

    # export: an interrupt before the commit leaves the previous config and its folder as they were
    before = _digest(configs)
    real = appconfig.build_config

    def interrupted(*args, **kw):
        real(*args, **kw)
        raise KeyboardInterrupt

    appconfig.build_config = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            appconfig.export_config(b.profile, b.choice, b.config_path, sha_b)
    finally:
        appconfig.build_config = real
    assert _digest(configs) == before
    assert not [p for p in tmp_path.rglob("*") if "edgekit-tmp" in p.name or "edgekit-old" in p.name]
    # the config must be the model asked for
    with pytest.raises(Exception, match="another model"):
        appconfig.export_config(b.profile, b.choice, b.config_path, sha_a)
    # a folder that is not edgekit's is refused before any sweep, and left intact
    foreign = tmp_path / "foreign"
    (foreign / "resume-dev").mkdir(parents=True)
    (foreign / "resume-dev" / "thesis.tex").write_text("mine")
    with pytest.raises(OutputError, match="not the artifact folder"):
        profile_device(prof, model_b, out, foreign)
    assert (foreign / "resume-dev" / "thesis.tex").read_text() == "mine"


def test_fail_over_is_reported_and_strict_refuses_it(tmp_path, monkeypatch):
    """A unit failing mid-run moves its stages (reported as moves and deviations); with strict the same run is
    an error and nothing is written."""
    import os

    from edgekit.apps.video import process as proc
    from edgekit.errors import RuntimeUnavailableError

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("fail-over between units needs two CPU cores")
    frames = tmp_path / _frames(tmp_path, ((48, 64),) * 6)
    config = tmp_path / _config(tmp_path)
    real_init = proc.ConfiguredCalls.__init__

    def failing_from_frame_2(self, *args, **kw):
        real_init(self, *args, **kw)
        self.injected["cpu1"] = 2

    monkeypatch.setattr(proc.ConfiguredCalls, "__init__", failing_from_frame_2)
    report = proc.process(frames, tmp_path / "out", config, ["blur"])
    assert report.frames_out == 6 and report.moves, report.to_dict()
    assert all(m["from"].startswith("cpu1") and m["to"].startswith("cpu0") for m in report.moves)
    assert [d["kind"] for d in report.deviations] == ["fail-over"] * len(report.moves)
    assert json.loads((tmp_path / "out" / "edgekit-process.json").read_text())["deviations"] == report.deviations
    with pytest.raises(RuntimeUnavailableError, match="--strict: frame 2: stage .* failed on cpu1"):
        proc.process(frames, tmp_path / "strict-out", config, ["blur"], strict=True)
    assert not (tmp_path / "strict-out").exists() and not (tmp_path / "strict-out_before_after.png").exists()
    assert not [p for p in tmp_path.rglob("*") if "edgekit-tmp" in p.name]
