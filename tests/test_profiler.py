"""The profiler: device profiles, a real sweep on this CPU, the choice, the app config and its schema."""

import json

import jsonschema
import pytest

from edgekit.apps.profiling.appconfig import load_config
from edgekit.apps.profiling.choose import choose, pareto_front
from edgekit.apps.profiling.device import available_profiles, load_profile
from edgekit.apps.profiling.load import default_level, usable_cpus
from edgekit.apps.profiling.reach import parse_benchmark_model
from edgekit.apps.profiling.sweep import Point
from edgekit.core.datafiles import schema
from edgekit.errors import DeviceError, InputError

SWEEP_PROFILE = """
id: test-cpu
hardware: cpu
reach: local
targets: [onnx-fp32, onnx-int8, ncnn-fp16]
threads: [1]
resolutions: [[256, 256], [144, 256]]
budget: {fps: 30, model_share: 1.0}
runs: 10
warmup: 2
"""


def test_shipped_profiles_validate():
    names = available_profiles()
    assert {"local-cpu", "android-gpu", "android-cpu", "intel-npu", "apple-ane"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.budget_ms > 0 and p.targets


def test_invalid_profile_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nhardware: cpu\nreach: local\ntargets: [onnx-fp32]\nthreads: [1]\n"
                   "resolutions: [[64, 64]]\n")
    with pytest.raises(InputError, match="budget"):
        load_profile(bad)
    with pytest.raises(InputError, match="available: .*local-cpu"):
        load_profile("no-such-device")


@pytest.fixture(scope="session")
def swept(workdir, student_onnx):
    from edgekit.apps.profiling.profile import profile_device

    prof = workdir / "test-cpu.yaml"
    prof.write_text(SWEEP_PROFILE)
    calls = []
    result = profile_device(prof, student_onnx, workdir / "profile", workdir / "configs",
                            progress=lambda label, i, n: calls.append((label, i, n)))
    return result, calls, prof


@pytest.mark.slow
def test_real_sweep_chooses_a_config_that_fits(swept):
    result, calls, _ = swept
    assert len(result.points) == 6 and all(p.ok for p in result.points), [p.error for p in result.points]
    assert {p.resolution for p in result.points} == {(256, 256), (144, 256)}
    assert calls[-1] == ("done", 6, 6)
    chosen = result.choice.chosen
    # the whole camera frame's tail under load fits (resize, colour, normalize, model, mask upsample)
    assert chosen.budget_basis[0] == "frame p90 under load" and chosen.load_e2e_p90_ms <= result.choice.budget_ms
    fits = [p.quality for p in result.points if p.load_e2e_p90_ms <= result.choice.budget_ms]
    assert chosen.quality >= max(fits) - 1e-3
    assert result.choice.fallback is not None and result.choice.fallback.format != chosen.format
    for p in result.points:
        assert p.p50_ms > 0 and p.p90_ms >= p.p50_ms and 50 < p.peak_memory_mb < 4000
        assert p.load_p90_ms >= p.load_p50_ms > 0 and p.load == default_level(usable_cpus(), 1).to_dict()
        assert p.frame == [720, 1280] and set(p.stages_ms) == {"resize", "colour", "normalize", "model", "upsample"}
        assert p.load_e2e_p90_ms >= p.load_e2e_p50_ms > 0 and p.e2e_p90_ms >= p.e2e_p50_ms > 0
        assert p.run_options["threads"] == 1 and p.run_options["spin"] in (False, None)
        assert p.quality_metric == "mask IoU" and 0.9 < p.quality <= 1.0
    assert chosen.label() in result.choice.why
    assert (result.report_path.parent / "pareto.png").stat().st_size > 10_000
    assert "Pareto" in result.report_path.read_text() or "pareto.png" in result.report_path.read_text()


@pytest.mark.slow
def test_app_config_validates_and_pins_files(swept, tmp_path):
    result, _, _ = swept
    config = json.loads(result.config_path.read_text())
    jsonschema.validate(config, schema("app-config"))
    assert config["measured"]["p90_ms"] <= config["measured"]["budget_ms"]
    assert config["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    loaded = load_config(result.config_path)
    # every file each runtime loads is listed and hashed, artifact.json included, primary and fallback
    for role in ("runtime", "fallback"):
        folder = result.config_path.parent / config[role]["artifact"]
        on_disk = {f.name for f in folder.iterdir() if f.is_file()}
        assert set(config[role]["files"]) == on_disk and "artifact.json" in on_disk
        assert loaded[role]["artifact_dir"] == str(folder.resolve())
    # a config whose model (or its fallback's model) no longer matches its hash is refused
    import shutil

    for role in ("runtime", "fallback"):
        copy = tmp_path / f"cfg-{role}"
        shutil.copytree(result.config_path.parent, copy)
        cfg = copy / result.config_path.name
        model = copy / config[role]["artifact"] / next(f for f in config[role]["files"] if f != "artifact.json")
        model.write_bytes(model.read_bytes() + b"\0")
        with pytest.raises(InputError, match=f"{role} artifact.*sha256"):
            load_config(cfg)


@pytest.mark.slow
def test_interrupted_sweep_resumes(swept, workdir, student_onnx):
    from edgekit.apps.profiling.device import load_profile as lp
    from edgekit.apps.profiling.sweep import load_points, sweep

    result, _, prof = swept
    points_file = workdir / "profile" / "test-cpu" / "points.jsonl"
    lines = points_file.read_text().splitlines()
    points_file.write_text("\n".join(lines[:4]) + "\n" + lines[4][:30])  # as if stopped writing the 5th point
    notes = []
    again = sweep(student_onnx, lp(prof), workdir / "profile" / "test-cpu", cache=workdir / "profile" / "artifacts",
                  notes=notes)
    assert len(points_file.read_text().splitlines()) == 7  # the cut line stays, on its own line
    assert any("not points" in n for n in notes), notes
    assert [p.p50_ms for p in again[:4]] == [p.p50_ms for p in result.points[:4]]  # kept, not re-measured
    assert len(load_points(points_file, again[0].provenance)) == 6 and all(p.ok for p in again)


@pytest.mark.parametrize("device,match", [("android-gpu", "adb"), ("intel-npu", "NPU"), ("apple-ane", "macOS")])
def test_unreachable_devices_fail_clearly(device, match, tmp_path):
    import platform
    import shutil

    from edgekit.apps.profiling.profile import profile_device

    if device == "android-gpu" and shutil.which("adb"):
        pytest.skip("adb is installed here")
    if device == "apple-ane" and platform.system() == "Darwin":
        pytest.skip("this is macOS")
    with pytest.raises(DeviceError, match=match):
        profile_device(device, out_dir=tmp_path)
    assert not (tmp_path / device / "points.jsonl").exists()  # no numbers it did not measure


def test_parse_benchmark_model():
    text = """INFO: Running benchmark for at least 10 iterations and at least 0.5 seconds
INFO: count=10 first=20581 curr=5120 min=5002 max=20581 avg=6711.2 std=4620 p5=5002 median=5122 p95=20581
INFO: Running benchmark for at least 50 iterations and at least 1 seconds
INFO: count=50 first=5190 curr=5088 min=4950 max=6100 avg=5121.4 std=180 p5=4970 median=5080 p95=5600
INFO: Inference timings in us: Init: 31250, First inference: 20581, Warmup (avg): 6711.2, Inference (avg): 5121.4
INFO: Overall peak memory footprint (MB) via periodic monitoring: 48.3
"""
    t = parse_benchmark_model(text)
    assert t["runs"] == 50 and t["median_ms"] == pytest.approx(5.08) and t["p95_ms"] == pytest.approx(5.6)
    assert "p90_ms" not in t  # benchmark_model prints no p90: its p95 is never stored as one
    assert t["peak_memory_mb"] == pytest.approx(48.3)
    with pytest.raises(DeviceError):
        parse_benchmark_model("ERROR: could not open model")


def test_pareto_and_choice_logic():
    def pt(target, p50, q, hw=(256, 256)):
        return Point(hw, target, "cpu", 1, p50, p50 * 1.1, 100, q, "mask IoU")

    pts = [pt("onnx-fp32", 10, 1.0), pt("onnx-int8", 6, 0.98), pt("tflite-int8", 8, 0.97), pt("ncnn-fp16", 7, 0.999)]
    assert [p.target for p in pareto_front(pts)] == ["onnx-int8", "ncnn-fp16", "onnx-fp32"]
    c = choose(pts, budget_ms=9.0)
    assert c.chosen.target == "ncnn-fp16" and c.fallback.target == "onnx-int8"
    assert choose(pts, budget_ms=1.0).chosen is None


def test_p95_only_points_are_chosen_under_their_name():
    pts = [Point((256, 256), "tflite-fp32", "gpu", 1, 5.0, None, 10, 0.99, "mask IoU", p95_ms=6.0)]
    assert pts[0].ok and pts[0].tail_name == "p95"
    c = choose(pts, budget_ms=10)
    assert c.chosen is pts[0] and "p95 6.00 ms" in c.why and "p90" not in c.why


def test_delegate_libraries_only_from_the_command_line(tmp_path):
    lib = tmp_path / "libdelegate.so"
    lib.write_bytes(b"not loaded")
    base = "id: d\nhardware: gpu\nreach: local\ntargets: [tflite-fp32]\nthreads: [1]\nresolutions: [[256, 256]]\n" \
           "budget: {fps: 30}\n"
    f = tmp_path / "d.yaml"
    f.write_text(base + f"delegates: {{tflite: ['gpu={lib}']}}\n")
    with pytest.raises(InputError, match="names a library; a library is loaded only when given on the command line"):
        load_profile(f)
    f.write_text(base + "delegates: {tflite: [gpu]}\n")
    assert load_profile(f).delegates["tflite"] == ("gpu",)
    assert load_profile(f, [f"gpu={lib}"]).delegates["tflite"] == (f"gpu={lib.resolve()}",)
    with pytest.raises(InputError, match="uses no such delegate"):
        load_profile(f, [f"npu={lib}"])
    with pytest.raises(InputError, match="no file"):
        load_profile(f, ["gpu=/nonexistent/lib.so"])
