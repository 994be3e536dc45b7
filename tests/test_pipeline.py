"""Heterogeneous pipeline: placement, pipelined == sequential, faults, flow limiting (real models)."""

import pytest

from edgekit.pipeline import placement
from edgekit.pipeline.executor import PipelineRunner, StageCalls
from edgekit.pipeline.placement import plan
from edgekit.pipeline.schedule import compare, schedule, synthetic_frames
from edgekit.pipeline.spec import PipelineSpec, Stage, load_pipeline, reset_stages


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
    tight = plan(spec, costs, latency_bound_ms=9.0)  # 5 + 4 + 1 is the only chain within 10 ms
    assert tight.latency_ms <= 10


def test_list_scheduling_beyond_the_exhaustive_limit(monkeypatch):
    monkeypatch.setattr(placement, "EXHAUSTIVE_LIMIT", 1)
    stages = [Stage(f"s{i}", ["frame"], [f"s{i}"], ["u1", "u2"], kernel=lambda x: x) for i in range(6)]
    costs = {(f"s{i}", u): 1.0 for i in range(6) for u in ("u1", "u2")}
    p = plan(PipelineSpec("many", stages), costs)
    assert p.method.startswith("list-scheduling") and p.unit_load_ms == {"u1": 3.0, "u2": 3.0}


def test_schedule_measures_real_units(scheduled):
    assert {"cpu0", "cpu1"} <= set(scheduled.units)
    assert all(v > 0 for v in scheduled.costs.values())
    assert scheduled.costs[("segment", "cpu0:onnx")] > 0
    assert set(scheduled.plan.assignment) == {"prepare", "segment", "refine", "smooth", "background", "composite"}
    if "gpu" in scheduled.units:
        assert "software GPU" in scheduled.units["gpu"].description or "Vulkan" in scheduled.units["gpu"].description


def test_pipelined_outputs_equal_sequential(scheduled, frames, tmp_path):
    r = compare(scheduled, frames, timeline=tmp_path / "tl.png")
    assert r["outputs_equal"] and r["frames_out"] == len(frames) and r["dropped"] == 0
    assert (tmp_path / "tl.png").stat().st_size > 5000


def test_injected_unit_failure_loses_no_frame(scheduled, frames):
    seg_unit = scheduled.plan.assignment["segment"].split(":")[0]
    r = compare(scheduled, frames, inject={seg_unit: 5})
    assert r["frames_out"] == len(frames) and r["dropped"] == 0
    assert r["moves"] and r["moves"][0]["frame"] == 5 and "injected fault" in r["moves"][0]["reason"]
    assert all(m["from_choice"].split(":")[0] == seg_unit for m in r["moves"])


def test_flow_limiter_drops_and_bounds_in_flight(scheduled, frames):
    spec = reset_stages(scheduled.spec)
    runner = PipelineRunner(spec, scheduled.plan, scheduled.units, max_in_flight=2)
    out = list(runner.run(frames, fps=1000.0, output="output"))  # input far faster than the pipeline
    st = runner.stats
    assert st.dropped > 0 and st.max_in_flight_seen <= 2
    assert st.completed + st.dropped == st.submitted == len(frames)
    assert [i for i, _ in out] == sorted(i for i, _ in out)  # in frame order


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
        load_pipeline({"stages": [{"name": "x", "kernel": "edgekit.video.kernels:composite",
                                   "inputs": ["mask"], "outputs": ["y"], "units": ["cpu0"]}]})


def test_units_share_one_heap():
    """Worker threads must not each get a malloc heap (720p buffers would be faulted in again per frame)."""
    import os
    import platform

    from edgekit.pipeline.units import share_one_heap

    if "MALLOC_ARENA_MAX" in os.environ:
        assert share_one_heap() == (os.environ["MALLOC_ARENA_MAX"] == "1")
    else:
        assert share_one_heap() == (platform.libc_ver()[0] == "glibc")
