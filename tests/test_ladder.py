"""The fallback ladder: built from measured points, shipped in the app config with every rung's files hashed, and
followed by `edgekit process` when the runtime misses its budget, with every switch reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.apps.profiling.appconfig import export_config, load_config
from edgekit.apps.profiling.choose import LADDER_QUALITY, LADDER_STEP, build_ladder, choose
from edgekit.apps.profiling.device import load_profile
from edgekit.apps.profiling.sweep import Point, cached_artifact
from edgekit.errors import InputError, RuntimeUnavailableError

PROFILE = """
id: ladder-cpu
hardware: cpu
reach: local
targets: [onnx-fp32]
threads: [1, 2]
resolutions: [[144, 256], [96, 160]]
budget: {fps: 30, model_share: 0.4}
"""


def _pt(target: str, hw, threads: int, frame_p90: float, quality: float, artifact: str = "") -> Point:
    return Point(tuple(hw), target, "cpu", threads, p50_ms=frame_p90 / 2, p90_ms=frame_p90 / 1.5,
                 quality=quality, quality_metric="mask IoU", artifact=artifact, e2e_p50_ms=frame_p90 * 0.8,
                 e2e_p90_ms=frame_p90 * 0.9, load_p50_ms=frame_p90 / 1.8, load_p90_ms=frame_p90 / 1.2,
                 load_e2e_p90_ms=frame_p90, load={"cpu": 1, "memory": 1})


def test_ladder_steps_down_by_a_clear_margin_keeping_quality():
    chosen = _pt("ncnn-fp16", (256, 256), 2, 10.0, 1.0)
    points = [chosen,
              _pt("ncnn-fp16", (256, 256), 1, 7.5, 1.0),       # threads only: the smallest change, 1.33x faster
              _pt("onnx-fp32", (256, 256), 1, 7.0, 1.0),       # faster, but another runtime
              _pt("ncnn-fp16", (144, 256), 1, 5.0, 0.97),      # lower resolution
              _pt("ncnn-int8", (144, 256), 1, 2.0, 0.80),      # fast but below the quality floor
              _pt("onnx-fp32", (144, 256), 1, 3.9, 0.97),
              _pt("ncnn-fp16", (256, 256), 4, 9.5, 1.0)]       # not 1.25x faster: never a rung
    ladder = build_ladder(chosen, points)
    labels = [p.label() for p, _ in ladder]
    assert labels == ["ncnn-fp16 cpu 1T 256x256", "ncnn-fp16 cpu 1T 144x256", "onnx-fp32 cpu 1T 144x256"]
    above = chosen
    for p, reason in ladder:  # each rung clearly faster than the one above, and good enough
        assert p.load_e2e_p90_ms <= LADDER_STEP * above.load_e2e_p90_ms
        assert p.quality >= LADDER_QUALITY * chosen.quality
        assert f"{above.load_e2e_p90_ms:.2f} -> {p.load_e2e_p90_ms:.2f} ms" in reason
        above = p
    assert "2 -> 1 thread(s)" in ladder[0][1] and "256x256 -> 144x256" in ladder[1][1]
    assert "ncnn-fp16 -> onnx-fp32" in ladder[2][1]


def test_budget_is_checked_against_the_whole_frame_under_load():
    # the model alone fits 8 ms on both; only the first point's whole frame under load does
    a = _pt("onnx-fp32", (144, 256), 1, 7.9, 0.98)
    b = _pt("ncnn-fp16", (256, 256), 1, 12.0, 1.0)
    assert b.load_p90_ms <= 10.0 and b.p90_ms <= 8.0
    c = choose([a, b], budget_ms=8.0)
    assert c.chosen is a and "frame p90 7.90 ms under load" in c.why
    assert a.budget_basis[0] == "frame p90 under load"
    # a point measured without frames is checked on what it has, and says so
    d = Point((144, 256), "tflite-fp32", "cpu", 1, p50_ms=3.0, p90_ms=4.0, quality=0.99, quality_metric="mask IoU")
    assert d.budget_basis == ("model p90 (quiet)", 4.0, None)


@pytest.fixture(scope="module")
def ladder_config(tmp_path_factory, student_onnx):
    """A real app config with a one-rung ladder: the student at 144x256 (runtime) over 96x160 (rung)."""
    tmp = tmp_path_factory.mktemp("ladder")
    cache = tmp / "artifacts"
    big = cached_artifact(student_onnx, "onnx-fp32", (144, 256), cache)
    small = cached_artifact(student_onnx, "onnx-fp32", (96, 160), cache)
    points = [_pt("onnx-fp32", (144, 256), 1, 10.0, 1.0, str(big.path)),
              _pt("onnx-fp32", (96, 160), 1, 6.0, 0.99, str(small.path))]
    (tmp / "ladder-cpu.yaml").write_text(PROFILE)
    profile = load_profile(tmp / "ladder-cpu.yaml")
    choice = choose(points, budget_ms=profile.budget_ms)
    assert [p.label() for p, _ in choice.ladder] == ["onnx-fp32 cpu 1T 96x160"]
    path = export_config(profile, choice, tmp / "configs" / "ladder-cpu.json")
    return path, choice, profile


def test_ladder_ships_hashed_and_is_checked_on_load(ladder_config, tmp_path):
    ladder_config = ladder_config[0]
    config = json.loads(ladder_config.read_text())
    rung = config["ladder"][0]
    folder = ladder_config.parent / rung["artifact"]
    assert {f.name for f in folder.iterdir() if f.is_file()} == set(rung["files"])
    assert rung["resolution"] == [96, 160] and "144x256 -> 96x160" in rung["reason"]
    assert config["measured"]["budget_basis"]["what"] == "frame p90 under load"
    assert load_config(ladder_config)["ladder"][0]["artifact_dir"] == str(folder.resolve())
    copy = tmp_path / "cfg"
    shutil.copytree(ladder_config.parent, copy)
    data = json.loads((copy / ladder_config.name).read_text())
    data["ladder"][0]["files"]["model.onnx"] = "0" * 64  # the rung names a model the folder does not hold
    (copy / ladder_config.name).write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"ladder\[0\] artifact.*sha256"):
        load_config(copy / ladder_config.name)
    data["ladder"][0]["artifact"] = "../../elsewhere"  # and a rung's folder stays inside the config's
    (copy / ladder_config.name).write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"ladder\[0\]"):
        load_config(copy / ladder_config.name)


def _frames(folder: Path, n: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), (rng.random((72, 128, 3)) * 255).astype(np.uint8))
    return folder


def _with_budget(config_path: Path, dest: Path, budget_ms: float) -> Path:
    shutil.copytree(config_path.parent, dest)
    cfg = dest / config_path.name
    data = json.loads(cfg.read_text())
    data["measured"]["budget_ms"] = budget_ms  # the config's own numbers are not hashed, its artifacts are
    cfg.write_text(json.dumps(data))
    return cfg


def test_process_follows_the_ladder_and_reports_each_switch(ladder_config, tmp_path):
    from edgekit.apps.video.process import process

    ladder_config = ladder_config[0]
    frames = _frames(tmp_path / "frames", 40)
    missed = _with_budget(ladder_config, tmp_path / "tight", 0.001)  # no model call can fit
    report = process(frames, tmp_path / "out", missed, ["blur"], sequential=True)
    ladder = report.model["ladder"]
    assert ladder["final_rung"] == 1 and len(ladder["switches"]) == 1
    switch = ladder["switches"][0]
    assert switch["p90_ms"] > switch["budget_ms"] and switch["to"].endswith("at 96x160")
    assert 30 <= switch["frame"] < 40 and report.frames_out == 40
    assert [d["kind"] for d in report.deviations] == ["ladder"]
    assert ladder["last_rung_missed_at_frame"] is None or ladder["last_rung_missed_at_frame"] > switch["frame"]
    # the same run with room to spare never leaves the runtime
    roomy = _with_budget(ladder_config, tmp_path / "roomy", 10_000.0)
    calm = process(frames, tmp_path / "out2", roomy, ["blur"], sequential=True)
    assert calm.model["ladder"]["final_rung"] == 0 and not calm.deviations
    # with --strict a step down is an error, and nothing is written
    with pytest.raises(RuntimeUnavailableError, match="--strict: .*stepped down the config's ladder"):
        process(frames, tmp_path / "out3", missed, ["blur"], sequential=True, strict=True)
    assert not (tmp_path / "out3").exists()


def test_sustained_windows_and_drift(monkeypatch):
    from edgekit.apps.profiling import latency

    clock = [0.0]
    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock[0])

    def step():  # 2 ms per run for the first 3 s, then 5 ms: a device that throttles
        clock[0] += 0.002 if clock[0] < 3.0 else 0.005

    s = latency.measure_sustained(step, seconds=6.0, window_s=1.5, warmup=0)
    assert len(s.windows) == 4 and s.window_s == 1.5
    assert [round(w.p50_ms, 3) for w in s.windows] == [2.0, 2.0, 5.0, 5.0]
    assert s.drift_p50 == pytest.approx(2.5) and s.worst_p90_ms == pytest.approx(5.0)
    assert abs(sum(w.runs for w in s.windows) - (1500 + 600)) <= 1  # 3 s of 2 ms runs, 3 s of 5 ms (float edges)
    with pytest.raises(InputError, match="sustained"):
        latency.measure_sustained(step, seconds=1.0, window_s=2.0)


@pytest.mark.slow
def test_thorough_runs_the_choice_and_its_rungs_sustained(ladder_config):
    from edgekit.apps.profiling.load import level_for
    from edgekit.apps.profiling.sustain import sustain_choice

    _, choice, profile = ladder_config
    notes = sustain_choice(choice, profile, seconds=2.0)
    for p in [choice.chosen, *(q for q, _ in choice.ladder)]:
        s = p.sustained
        assert s["what"] == "frame" and s["runs"] > 5 and 1.9 < s["seconds"] < 10
        assert s["load"] == level_for(profile.load, p.threads).to_dict()
        assert s["worst_window_p90_ms"] == max(w["p90_ms"] for w in s["windows"])
    # the budget here is 13.3 ms: every window over it is noted, none is invented
    over = [p for p in [choice.chosen, *(q for q, _ in choice.ladder)]
            if p.sustained["worst_window_p90_ms"] > choice.budget_ms]
    assert sum("over the" in n for n in notes) == len(over)


@pytest.mark.slow
def test_a_contested_choice_goes_to_an_interleaved_runoff(ladder_config):
    from dataclasses import replace

    from edgekit.apps.profiling.runoff import runoff

    path, choice, profile = ladder_config
    a = replace(choice.chosen, load_e2e_p90_ci=[8.0, 12.0])
    b = replace(a, threads=2, load_e2e_p90_ms=9.5, load_e2e_p90_ci=[8.5, 13.0])  # the same artifact, 2 threads
    first = choose([a, b], budget_ms=1000.0)  # both fit whatever this machine is doing
    assert first.chosen is a and first.contested is b and "within the noise of the fastest" in first.why
    model = Path(json.loads((Path(a.artifact) / "artifact.json").read_text())["source"]["path"])
    again = runoff(first, [a, b], profile, model, path.parent.parent / "runoff", rounds=1)
    tails = again.runoff["tails_ms"]  # the sweep's measurement, then one round each
    assert tails[a.label()][0] == 10.0 and tails[b.label()][0] == 9.5
    assert all(len(t) == 2 and t[1] > 0 for t in tails.values())
    assert again.chosen.label() in tails and "run-off over 1 interleaved rounds" in again.why
    upper = sorted(tails[again.chosen.label()])[1]  # the upper median of two is what the new choice stands on
    assert again.chosen.budget_tail_ms == pytest.approx(upper, abs=1e-3)


def test_runoff_keeps_task_quality_and_other_models_points(ladder_config, monkeypatch):
    from dataclasses import replace

    from edgekit.apps.profiling import runoff as runoff_module
    from edgekit.apps.profiling.reach import Measured

    path, choice, profile = ladder_config
    base = replace(choice.chosen, task_iou=0.91, task_boundary_f=0.8, task_on="set", model_sha256="a" * 64)

    class Reach:  # a device whose re-measurements carry timing only (as a run-off's do)
        name = "local"

        def measure(self, artifact, delegate, threads, profile, data):
            return Measured(4.0, 5.0, 100.0, 1.0, "mask IoU", "here", {"load_e2e_p90_ms": 7.0, "task_iou": None})

    again = runoff_module._remeasure(base, Reach(), profile, path)
    assert again.load_e2e_p90_ms == 7.0 and again.p50_ms == 4.0
    assert (again.task_iou, again.task_on) == (0.91, "set")  # task quality is the artifact's: kept

    # two models with a point of the same key: only the contested model's points are replaced
    a = replace(base, load_e2e_p90_ci=[8.0, 12.0])
    b = replace(a, threads=2, load_e2e_p90_ms=9.5, load_e2e_p90_ci=[8.5, 13.0])
    other = replace(a, model_sha256="b" * 64, task_iou=0.99)  # another model, same key as a, better quality
    monkeypatch.setattr(runoff_module, "_remeasure", lambda p, *args: replace(p, load_e2e_p90_ms=p.load_e2e_p90_ms))
    monkeypatch.setattr(runoff_module, "_data", lambda *args: path)
    first = choose([a, b], budget_ms=1000.0)
    again = runoff_module.runoff(first, [a, b, other], profile, path, path.parent, rounds=1)
    assert {(q.model_sha256, q.threads) for q in again.remeasured} == {("a" * 64, 1), ("a" * 64, 2)}
    assert again.chosen.model_sha256 == "b" * 64  # the other model's point was not overwritten by a's median


def test_choice_and_ladder_with_missing_numbers():
    d = Point((144, 256), "onnx-fp32", "cpu", 1, p50_ms=3.0, p90_ms=4.0, quality=None, quality_metric="cosine")
    c = choose([d], budget_ms=8.0)
    assert c.chosen is d and "cosine -" in c.why  # no quality: said so, no crash
    # a rung timed on the model alone is not compared with a choice timed on the whole frame
    chosen = _pt("onnx-fp32", (144, 256), 2, 10.0, 1.0)
    model_only = Point((96, 160), "onnx-fp32", "cpu", 1, p50_ms=1.0, p90_ms=2.0, quality=1.0,
                       quality_metric="mask IoU", load_p50_ms=1.5, load_p90_ms=2.5)
    assert build_ladder(chosen, [chosen, model_only]) == []
