"""Heterogeneous pipeline: placement, pipelined == sequential, faults, flow limiting (real models)."""

import pytest

from edgekit.apps.pipeline import placement
from edgekit.apps.pipeline.definition import PipelineSpec, Stage, load_pipeline, reset_stages
from edgekit.apps.pipeline.executor import PipelineRunner, StageCalls
from edgekit.apps.pipeline.placement import plan
from edgekit.apps.pipeline.schedule import compare, schedule, synthetic_frames


@pytest.fixture(scope="session")
def scheduled(workdir):
    return schedule("virtual-background", repeats=3)


@pytest.fixture(scope="session")
def frames():
    return synthetic_frames(16, hw=(360, 640), seed=3)


def test_plan_minimizes_busiest_unit():
    def stage(name, units):
        return Stage(name, ["frame"], [name], units, kernel=lambda x: x)

    spec = PipelineSpec("toy", [stage("a", ["u1", "u2"]), stage("b", ["u1", "u2"]), stage("c", ["u1", "u2"])])
    costs = {("a", "u1"): 5, ("a", "u2"): 5, ("b", "u1"): 4, ("b", "u2"): 4, ("c", "u1"): 1, ("c", "u2"): 9}
    p = plan(spec, costs)
    assert p.bottleneck[1] == 5  # a alone on u2, b + c on u1
    assert p.method == "exhaustive" and "busiest unit" in p.why
    # 5 + 4 + 1 = 10 ms is the shortest chain there is: a 9 ms bound cannot be met, and the plan says so
    over = plan(spec, costs, latency_bound_ms=9.0)
    assert over.latency_ms == 10 and over.assignment == p.assignment and "OVER the 9 ms bound" in over.why


def test_latency_bound_trades_throughput_for_latency():
    """Spreading two stages over two units halves the busiest unit's load but the slower unit lengthens the
    chain: without a bound the plan spreads them, with a bound only the one-unit chain meets it takes that."""
    def stage(name):
        return Stage(name, ["frame"], [name], ["fast", "slow"], kernel=lambda x: x)

    spec = PipelineSpec("toy", [stage("a"), stage("b")])
    costs = {("a", "fast"): 5.0, ("a", "slow"): 6.0, ("b", "fast"): 5.0, ("b", "slow"): 6.0}
    free = plan(spec, costs)
    assert sorted(free.assignment.values()) == ["fast", "slow"] and free.bottleneck[1] == 6.0
    assert free.latency_ms == 11.0 and "within the inf ms bound" in free.why
    bounded = plan(spec, costs, latency_bound_ms=10.5)
    assert bounded.assignment == {"a": "fast", "b": "fast"} and bounded.unit_load_ms == {"fast": 10.0}
    assert bounded.latency_ms == 10.0 and "within the 10.5 ms bound" in bounded.why


def test_list_scheduling_beyond_the_exhaustive_limit(monkeypatch):
    monkeypatch.setattr(placement, "EXHAUSTIVE_LIMIT", 1)
    stages = [Stage(f"s{i}", ["frame"], [f"s{i}"], ["u1", "u2"], kernel=lambda x: x) for i in range(6)]
    costs = {(f"s{i}", u): 1.0 for i in range(6) for u in ("u1", "u2")}
    p = plan(PipelineSpec("many", stages), costs)
    assert p.method.startswith("list-scheduling") and p.unit_load_ms == {"u1": 3.0, "u2": 3.0}


@pytest.mark.slow
def test_schedule_measures_real_units(scheduled):
    assert {"cpu0", "cpu1"} <= set(scheduled.units)
    assert all(v > 0 for v in scheduled.costs.values())
    assert scheduled.costs[("segment", "cpu0:onnx")] > 0
    assert set(scheduled.plan.assignment) == {"prepare", "segment", "refine", "smooth", "background", "composite"}
    ncnn = pytest.importorskip("ncnn")
    if ncnn.get_gpu_count() == 0:
        pytest.fail("no Vulkan device: `make setup` installs mesa-vulkan-drivers (lavapipe) for this test")
    # the Vulkan device ncnn sees is a unit, named as the device, and the model stage was measured on it
    assert f"'{ncnn.get_gpu_info(0).device_name()}'" in scheduled.units["gpu"].description
    assert scheduled.costs[("segment", "gpu:ncnn")] > 0


@pytest.mark.slow
def test_pipelined_outputs_equal_sequential(scheduled, frames, tmp_path):
    r = compare(scheduled, frames, timeline=tmp_path / "tl.png")
    assert r["outputs_equal"] and r["frames_out"] == len(frames) and r["dropped"] == 0
    assert (tmp_path / "tl.png").stat().st_size > 5000


@pytest.mark.slow
def test_injected_unit_failure_loses_no_frame(scheduled, frames):
    seg_unit = scheduled.plan.assignment["segment"].split(":")[0]
    r = compare(scheduled, frames, inject={seg_unit: 5})
    assert r["frames_out"] == len(frames) and r["dropped"] == 0
    assert r["moves"] and r["moves"][0]["frame"] == 5 and "injected fault" in r["moves"][0]["reason"]
    assert all(m["from_choice"].split(":")[0] == seg_unit for m in r["moves"])


@pytest.mark.slow
def test_flow_limiter_drops_and_bounds_in_flight(scheduled, frames):
    spec = reset_stages(scheduled.spec)
    runner = PipelineRunner(spec, scheduled.plan, scheduled.units, max_in_flight=2)
    out = list(runner.run(frames, fps=1000.0, output="output"))  # input far faster than the pipeline
    st = runner.stats
    assert st.dropped > 0 and st.max_in_flight_seen <= 2
    assert st.completed + st.dropped == st.submitted == len(frames)
    assert [i for i, _ in out] == sorted(i for i, _ in out)  # in frame order


@pytest.mark.slow
def test_chain_exhausted_is_an_error(scheduled, frames):
    from edgekit.errors import DeviceError

    calls = StageCalls(scheduled.units)
    calls.injected = {u: 0 for u in scheduled.units}  # every unit fails
    runner = PipelineRunner(reset_stages(scheduled.spec), scheduled.plan, scheduled.units, calls=calls)
    with pytest.raises(DeviceError, match="no unit left"):
        list(runner.run(frames[:3]))


def test_bad_pipeline_is_refused(tmp_path):
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="needs \\['mask'\\]"):
        load_pipeline({"name": "bad", "stages": [{"name": "x", "kernel": "composite",
                                                  "inputs": ["mask"], "outputs": ["y"], "units": ["cpu0"]}]})


def _one(kernel, **extra):
    return {"name": "p", "stages": [{"name": "x", "kernel": kernel, "inputs": ["frame"], "outputs": ["output"],
                                     "units": ["cpu0"], **extra}]}


def test_kernels_are_registry_names_never_imports(tmp_path):
    from edgekit.apps.pipeline.kernels import known
    from edgekit.errors import InputError

    marker = tmp_path / "PWNED"
    for ref, params in [("subprocess:Popen", {"args": ["touch", str(marker)]}), ("os:system", {}),
                        ("builtins:eval", {}), ("edgekit.apps.video.kernels:composite", {})]:
        with pytest.raises(InputError, match="is not a registered kernel.*; known: .*composite"):
            load_pipeline(_one(ref, params=params))
    assert not marker.exists()
    assert {"model_input", "refine_mask", "temporal_smoother", "blurred_background", "composite"} <= set(known())
    with pytest.raises(InputError, match="did you mean 'composite'"):
        load_pipeline(_one("edgekit.apps.video.kernels:composite"))
    # params are checked against the kernel's signature at load time
    with pytest.raises(InputError, match="does not accept"):
        load_pipeline(_one("refine_mask", params={"nope": 1}))
    spec = load_pipeline(_one("temporal_smoother", params={"min_weight": 0.5}))  # a class: made once, no params
    assert spec.stages[0].kernel.min_weight == 0.5 and spec.stages[0].params == {}


def test_plugin_kernels_come_from_entry_points(monkeypatch):
    import importlib.metadata

    from edgekit.apps.pipeline import kernels
    from edgekit.core import plugins

    ep = importlib.metadata.EntryPoint("double_it", "operator:mul", "edgekit.kernels")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [ep] if group == kernels.GROUP else [])
    monkeypatch.setattr(plugins, "_done", set())
    monkeypatch.setattr(kernels, "_REGISTRY", dict(kernels.BUILTIN))
    assert "double_it" in kernels.known()
    import operator

    assert kernels.lookup("double_it") is operator.mul


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "must be of type object, not a list"),
    ("stages: []\n", "'name' is a required property"),
    ("name: x\nstages: [\n", "is not valid YAML at line"),
    ("name: x\nstagez: []\n", "stagez"),
    ("name: x\nstages:\n  - &a {name: s}\n  - *a\n", "aliases"),
])
def test_pipeline_file_shape_is_one_line(tmp_path, text, message):
    from edgekit.errors import InputError

    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(InputError, match=message) as e:
        load_pipeline(f)
    assert "\n" not in str(e.value)


def test_pipeline_paths_stay_in_the_files_folder(tmp_path, student_onnx):
    import shutil

    import yaml

    from edgekit.errors import InputError

    def write(model):
        f = tmp_path / "p" / "p.yaml"
        f.parent.mkdir(exist_ok=True)
        f.write_text(yaml.safe_dump({"name": "p", "stages": [
            {"name": "seg", "model": model, "inputs": ["frame"], "outputs": ["output"], "units": ["cpu0:onnx"]}]}))
        return f

    with pytest.raises(InputError, match="leaves its folder"):
        load_pipeline(write({"onnx": "../outside"}))
    with pytest.raises(InputError, match="leaves its folder"):
        load_pipeline(write({"onnx": "/etc"}))
    with pytest.raises(InputError, match="leaves its folder"):
        load_pipeline(write({"source": "../student.onnx", "shape": [1, 3, 64, 64], "targets": {"onnx": "onnx-fp32"}}))
    with pytest.raises(InputError, match="not found in"):
        load_pipeline(write({"onnx": "missing-artifact"}))
    (tmp_path / "p" / "art").mkdir()
    shutil.copy(student_onnx, tmp_path / "p" / "art" / "student.onnx")
    spec = load_pipeline(write({"onnx": "art"}))  # relative to the file's folder, not the working directory
    assert spec.stages[0].model["onnx"] == str((tmp_path / "p" / "art").resolve())


def test_bundled_pipeline_loads_from_any_directory(tmp_path, monkeypatch):
    from edgekit.apps.pipeline.schedule import BUNDLED

    monkeypatch.chdir(tmp_path)
    from edgekit.apps.pipeline.kernels import BUILTIN

    raw = (BUNDLED / "virtual-background.yaml").read_text()
    assert all(f"kernel: {k}" not in raw or k in BUILTIN for k in BUILTIN)
    assert ":" not in "".join(ln.split("kernel:")[1] for ln in raw.splitlines() if "kernel:" in ln)
    from edgekit.apps.pipeline.definition import _default_root

    assert (_default_root(BUNDLED / "virtual-background.yaml") / "models/portrait-seg/student.onnx").is_file()


def test_a_raising_stage_is_a_unit_failure_not_a_crash():
    from edgekit.apps.pipeline.costs import measure_costs
    from edgekit.apps.pipeline.units import Unit
    from edgekit.errors import DeviceError

    units = {u: Unit(u, "cpu", u) for u in ("cpu0", "cpu1")}

    class Flaky:
        def __call__(self, x):
            if self.fail:
                raise KeyError("error")
            return x

    flaky = Flaky()
    flaky.fail = True
    spec = PipelineSpec("t", [Stage("k", ["frame"], ["output"], ["cpu0", "cpu1"], kernel=flaky)])
    import numpy as np

    costs, unavailable = measure_costs(spec, units, np.zeros((4, 4), np.uint8), repeats=1)
    assert not costs and "KeyError: 'error'" in unavailable[("k", "cpu0")]
    flaky.fail = False
    p = plan(spec, {("k", "cpu0"): 1.0, ("k", "cpu1"): 2.0})
    calls = StageCalls(units)
    seen = []

    def kernel(x):
        seen.append(1)
        if len(seen) == 2:
            raise ZeroDivisionError("boom")
        return x

    spec.stages[0].kernel = kernel
    runner = PipelineRunner(spec, p, units, calls=calls)
    out = list(runner.run([np.zeros((2, 2), np.uint8)] * 3, output="output"))
    assert len(out) == 3
    assert runner.stats.moves and "ZeroDivisionError: boom" in runner.stats.moves[0].reason
    spec.stages[0].kernel = lambda x: {}["error"]
    with pytest.raises(DeviceError, match="stage 'k' failed on cpu0: KeyError"):
        list(__import__("edgekit.apps.pipeline.executor", fromlist=["x"]).run_sequential(spec, p, units, [np.zeros(1)]))


def test_units_share_one_heap():
    """Worker threads must not each get a malloc heap (720p buffers would be faulted in again per frame)."""
    import os
    import platform

    from edgekit.apps.pipeline.units import share_one_heap

    if "MALLOC_ARENA_MAX" in os.environ:
        assert share_one_heap() == (os.environ["MALLOC_ARENA_MAX"] == "1")
    else:
        assert share_one_heap() == (platform.libc_ver()[0] == "glibc")
