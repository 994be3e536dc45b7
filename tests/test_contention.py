"""Profiling under contention: the background load, its processes' lifetime, interleaved timing, thread
settings each runtime applies, and a choice that needs the tail latency under load to fit the budget."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from edgekit.apps.profiling.choose import choose
from edgekit.apps.profiling.latency import measure_contended
from edgekit.apps.profiling.load import BackgroundLoad, LoadLevel, default_level, level_for
from edgekit.apps.profiling.sweep import Point
from edgekit.errors import InputError


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: it no longer runs)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wait_gone(pids, timeout=10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def test_default_level_is_free_cores_plus_one():
    assert default_level(2, 2) == LoadLevel(cpu=0, memory=1)  # 2 threads on 2 cores: one more busy process
    assert default_level(2, 1) == LoadLevel(cpu=1, memory=1)
    assert default_level(8, 2) == LoadLevel(cpu=6, memory=1)
    assert default_level(4, 8).busy == 1  # more threads than cores: still one busy process
    assert default_level(4, 1, memory=0) == LoadLevel(cpu=4, memory=0)
    assert level_for({"busy": "auto", "memory": 1, "cores": 6}, 2) == LoadLevel(cpu=4, memory=1)
    assert level_for({"busy": 3, "memory": 2}, 1) == LoadLevel(cpu=1, memory=2)
    assert level_for({"busy": 0}, 1).busy == 0
    with pytest.raises(InputError, match="busy"):
        level_for({"busy": "lots"}, 1)


def test_load_runs_pauses_and_stops():
    with BackgroundLoad(LoadLevel(cpu=1, memory=1)) as load:
        pids = load.pids
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        time.sleep(0.3)
        assert all(_state(p) in "RS" for p in pids)
        load.pause()
        time.sleep(0.1)
        assert all(_state(p) == "T" for p in pids)  # stopped: no CPU taken while the quiet runs are timed
        load.resume()
        time.sleep(0.1)
        assert all(_state(p) in "RS" for p in pids)
    assert _wait_gone(pids) == []


SCRIPT = """
import os, sys, time
from edgekit.apps.profiling.load import BackgroundLoad, LoadLevel
load = BackgroundLoad(LoadLevel(cpu=1, memory=1))
load.start()
print(" ".join(map(str, load.pids)), flush=True)
if sys.argv[1] == "exit":
    sys.exit(0)            # never stopped by the caller: the atexit hook ends them
if sys.argv[1] == "raise":
    raise SystemExit(3)
time.sleep(60)             # killed by the test with SIGKILL or SIGTERM
"""


@pytest.mark.parametrize("how", ["exit", "raise", "SIGKILL", "SIGTERM"])
def test_load_processes_never_outlive_edgekit(tmp_path, how):
    script = tmp_path / "owner.py"
    script.write_text(SCRIPT)
    owner = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in owner.stdout.readline().split()]
    assert len(pids) == 2
    if how.startswith("SIG"):
        assert all(_alive(p) for p in pids)
        owner.send_signal(getattr(signal, how))
    owner.wait(timeout=30)
    left = _wait_gone(pids)
    for p in left:  # do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert left == [], f"load processes outlived their owner ({how})"


class _Counting:
    """A session whose run takes longer while the fake load is on."""

    def __init__(self, load):
        self.load, self.calls = load, []

    def run(self, _inputs):
        self.calls.append(self.load.on)
        time.sleep(0.002 if self.load.on else 0.0005)


class _FakeLoad:
    def __init__(self):
        self.on, self.switches = False, 0

    def resume(self):
        self.switches += not self.on
        self.on = True

    def pause(self):
        self.switches += self.on
        self.on = False


def test_contended_timing_interleaves_quiet_and_loaded_runs():
    load = _FakeLoad()
    session = _Counting(load)
    quiet, loaded = measure_contended(session, {}, load, runs=20, warmup=2, block=5)
    assert quiet.runs == loaded.runs == 20
    assert loaded.p50_ms > 2 * quiet.p50_ms  # each side was timed in its own state
    assert load.switches >= 8  # 4 blocks a side, alternating (not 20 quiet then 20 loaded)
    assert not load.on  # left paused
    timed = session.calls[4:]  # after the two warm-ups
    changes = sum(a != b for a, b in zip(timed, timed[1:]))
    assert changes >= 7


def _point(target, p50, p90, load_p90=None, q=1.0, threads=1):
    return Point((256, 256), target, "cpu", threads, p50, p90, 100, q, "mask IoU",
                 load_p50_ms=None if load_p90 is None else load_p90 * 0.9, load_p90_ms=load_p90,
                 load={"cpu": 1, "memory": 1} if load_p90 is not None else None)


def test_choice_needs_the_tail_under_load_to_fit():
    collapses = _point("ncnn-fp16", 2.0, 2.1, load_p90=500.0, q=1.0, threads=2)
    holds = _point("onnx-fp32", 3.0, 3.5, load_p90=6.0, q=0.999)
    c = choose([collapses, holds], budget_ms=8.3)
    assert c.chosen is holds
    assert "under load" in c.why and "fit only on a quiet device" in c.why and collapses.label() in c.why
    # without the load numbers the quiet tail decides, and the reason says the point was not measured under load
    c = choose([_point("ncnn-fp16", 2.0, 2.1, q=1.0), holds], budget_ms=8.3)
    assert c.chosen.target == "ncnn-fp16" and "not measured under load" in c.why
    assert choose([collapses], budget_ms=8.3).chosen is None


def test_points_round_trip_with_load_columns():
    p = _point("onnx-fp32", 3.0, 3.5, load_p90=6.0)
    p.run_options = {"threads": 1, "spin": False, "settings": {}}
    q = Point.from_dict(json.loads(json.dumps(p.to_dict())))
    assert (q.load_p90_ms, q.load, q.run_options) == (6.0, {"cpu": 1, "memory": 1}, p.run_options)
    assert q.budget_tail_ms == 6.0 and q.degradation == pytest.approx(max(5.4 / 3.0, 6.0 / 3.5))


def test_report_shows_both_columns(tmp_path):
    from edgekit.apps.profiling.device import load_profile
    from edgekit.apps.profiling.report import html_report

    pts = [_point("onnx-fp32", 3.0, 3.5, load_p90=6.0), _point("ncnn-fp16", 2.0, 2.1, load_p90=500.0, threads=2)]
    c = choose(pts, budget_ms=8.3)
    page = html_report(load_profile("local-cpu"), pts, c, tmp_path / "pareto.png", tmp_path / "r.html", 1.0
                       ).read_text()
    assert "p90 ms under load" in page and "500.00" in page and "6.00" in page
    assert "1 CPU + 1 memory-bandwidth" in page


@pytest.mark.slow  # converts the tiny model
def test_onnxruntime_spinning_is_off_unless_asked(tiny_onnx, workdir):
    from edgekit.apps.profiling.sweep import cached_artifact
    from edgekit.backends.onnx.session import OrtSession

    art = cached_artifact(tiny_onnx, "onnx-fp32", (64, 64), workdir / "contention-cache")
    for spin in (False, True):
        s = OrtSession.open(art, threads=2, spin=spin)
        options = s._sess.get_session_options()  # what ONNX Runtime holds, not what edgekit recorded
        want = "1" if spin else "0"
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == want
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == want
        assert s.run_options()["spin"] is spin and s.run_options()["threads"] == 2


NCNN_SCRIPT = """
import json, os, sys
from edgekit.api import load
s = load(sys.argv[1], threads=2, spin=sys.argv[2] == "1")
maps = open("/proc/self/maps").read()
print(json.dumps({"options": s.run_options(), "env": os.environ.get("OMP_WAIT_POLICY"),
                  "gomp": "libgomp" in maps}))
"""


@pytest.fixture(scope="module")
def tiny_ncnn(tiny_onnx, workdir):
    from edgekit.core.conversion import convert

    return convert(tiny_onnx, "ncnn-fp32", workdir / "contention-ncnn", input_shapes={"": (1, 3, 64, 64)})


@pytest.mark.slow  # converts the tiny model
@pytest.mark.parametrize("user, spin, policy", [(None, "0", "PASSIVE"), (None, "1", "ACTIVE"),
                                                ("active", "0", "ACTIVE")])
def test_ncnn_openmp_wait_policy(tiny_ncnn, tmp_path, user, spin, policy):
    script = tmp_path / "n.py"
    script.write_text(textwrap.dedent(NCNN_SCRIPT))
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user:
        env["OMP_WAIT_POLICY"] = user
    res = subprocess.run([sys.executable, str(script), str(tiny_ncnn.path), spin], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["gomp"]  # ncnn really runs on libgomp here (the policy matters)
    assert out["options"]["settings"]["OMP_WAIT_POLICY"] == policy
    assert out["options"]["spin"] is (policy != "PASSIVE")
    assert out["env"] == user  # the variable was set only while libgomp loaded, the user's left alone
    if user and spin == "0":
        assert "note" in out["options"]["settings"]  # asked for no spin, got the user's: said so


@pytest.mark.slow  # converts the tiny model
def test_worker_measures_quiet_and_loaded_and_leaves_no_load(tiny_onnx, workdir):
    from edgekit.apps.profiling.sweep import _data, cached_artifact
    from edgekit.apps.profiling.worker import measure_point
    from edgekit.core.files import sha256_file

    art = cached_artifact(tiny_onnx, "onnx-fp32", (64, 64), workdir / "contention-cache")
    data = _data(tiny_onnx, sha256_file(tiny_onnx), (64, 64), workdir / "contention-data")
    before = set(_children())
    out = measure_point(str(art.path), "cpu", 1, 10, 2, str(data), LoadLevel(cpu=1, memory=1))
    assert out["load_p50_ms"] > 0 and out["load_p90_ms"] >= out["load_p50_ms"]
    assert out["load"] == {"cpu": 1, "memory": 1}
    assert out["run_options"]["spin"] is False
    assert _wait_gone(set(_children()) - before) == []


def _children() -> list[int]:
    me = str(os.getpid())
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        out.append(int(d))
            except (FileNotFoundError, IndexError):
                pass
    return out


def test_device_profile_load_settings_validate(tmp_path):
    from edgekit.apps.profiling.device import load_profile

    base = ("id: x\nhardware: cpu\nreach: local\ntargets: [onnx-fp32]\nthreads: [1]\nresolutions: [[64, 64]]\n"
            "budget: {fps: 30}\n")
    f = tmp_path / "x.yaml"
    f.write_text(base)
    assert load_profile(f).load == {"busy": "auto", "memory": 1}
    f.write_text(base + "load: {busy: 3, memory: 0}\n")
    assert level_for(load_profile(f).load, 1) == LoadLevel(cpu=3, memory=0)
    for bad in ("load: {busy: -1}\n", "load: {busy: many}\n", "load: {hogs: 2}\n"):
        f.write_text(base + bad)
        with pytest.raises(InputError):
            load_profile(f)


def test_quantile_intervals_cover_the_true_quantile():
    from edgekit.apps.profiling.latency import quantile_ci

    rng = np.random.default_rng(7)
    true_p50, true_p90 = np.log(2.0) / 1.0 + 1.0, np.log(10.0) + 1.0  # 1 ms + exponential(1 ms)
    hits50 = hits90 = 0
    trials = 400
    for _ in range(trials):
        ms = 1.0 + rng.exponential(1.0, 50)
        lo, hi = quantile_ci(ms, 0.5)
        hits50 += lo <= true_p50 <= hi
        lo, hi = quantile_ci(ms, 0.9)
        hits90 += lo <= true_p90 <= hi
    # a 95% interval: coverage near 0.95 (not 1.0, which an interval of the whole sample would give)
    assert 0.90 <= hits50 / trials <= 0.995 and 0.88 <= hits90 / trials <= 0.995, (hits50, hits90)
    lo, hi = quantile_ci(np.arange(1000.0), 0.5)
    assert 460 < lo < 500 < hi < 540  # narrow with many runs


def test_a_choice_within_the_noise_is_made_by_a_rule_that_repeats():
    a = _point("onnx-fp32", 3.0, 3.5, load_p90=6.0, threads=2)
    b = _point("ncnn-fp32", 3.1, 3.6, load_p90=6.2, threads=1)
    a.load_p90_ci, b.load_p90_ci = [5.0, 7.0], [5.5, 7.5]
    # a is faster, but not beyond the noise: the one leaving more CPU to the app (fewer threads) is chosen
    c = choose([a, b], budget_ms=8.3)
    assert c.chosen is b and c.contested is a and "within the noise of the fastest" in c.why and a.label() in c.why
    c2 = choose([b, a], budget_ms=8.3)  # the order the points came in does not matter
    assert c2.chosen is b
    b.load_p50_ms, b.load_p90_ms, b.load_p90_ci = 5.85, 6.5, [6.45, 6.55]  # median within 10% of the fastest's
    assert choose([a, b], budget_ms=8.3).chosen is b
    b.load_p50_ms, b.load_p90_ms, b.load_p90_ci = 6.6, 7.3, [7.1, 7.5]  # separable: the faster one wins
    c = choose([a, b], budget_ms=8.3)
    assert c.chosen is a and c.contested is None and "within the noise" not in c.why
    b.quality = 0.99  # decided by quality, not by latency: nothing to say about the noise
    b.load_p50_ms, b.load_p90_ms, b.load_p90_ci = 5.58, 6.2, [5.5, 7.5]
    c = choose([a, b], budget_ms=8.3)
    assert c.chosen is a and c.contested is None


def test_within_the_noise_memory_a_few_hundred_kb_apart_is_the_same_and_the_profile_order_decides():
    a = _point("tflite-fp32", 3.0, 3.5, load_p90=6.0)
    b = _point("ncnn-fp16", 3.1, 3.6, load_p90=6.1)
    a.peak_memory_mb, b.peak_memory_mb = 176.9, 176.6  # allocator noise, not a difference
    for prefer, first in ((("tflite-fp32", "ncnn-fp16"), a), (("ncnn-fp16", "tflite-fp32"), b)):
        for order in ([a, b], [b, a]):
            c = choose(order, budget_ms=8.3, prefer=prefer)
            assert c.chosen is first and "target order" in c.why
    c = _point("openvino-fp32", 3.05, 3.55, load_p90=6.05)
    c.peak_memory_mb = 161.2  # a third, lighter within 10%: all three one band, whichever of a, b is the heavier
    for ma, mb in ((176.9, 177.7), (177.7, 176.6)):
        a.peak_memory_mb, b.peak_memory_mb = ma, mb
        assert choose([a, b, c], budget_ms=8.3, prefer=("tflite-fp32", "ncnn-fp16", "openvino-fp32")).chosen is a
    b.peak_memory_mb = 150.0  # 15% lighter: a real difference, it decides whatever the order
    a.peak_memory_mb = 176.9
    assert choose([a, b], budget_ms=8.3, prefer=("tflite-fp32", "ncnn-fp16")).chosen is b
    b.threads = 2  # fewer threads first, memory second
    assert choose([a, b], budget_ms=8.3, prefer=("ncnn-fp16", "tflite-fp32")).chosen is a


def _frame_point(target, threads, quiet, loaded, q=1.0):
    """A point whose whole frame was timed: ``quiet``/``loaded`` are (p50, p90) in ms."""
    p = _point(target, 1.5, 1.6, load_p90=1.7, q=q, threads=threads)
    p.frame = [720, 1280]
    (p.e2e_p50_ms, p.e2e_p90_ms), (p.load_e2e_p50_ms, p.load_e2e_p90_ms) = quiet, loaded
    return p


def test_a_point_that_slows_down_more_than_twice_under_load_is_not_chosen_over_one_that_holds():
    # the shipped config's case: one thread is time-sliced with the load on every p90 (7.4 ms), two threads hold
    sliced = _frame_point("tflite-fp32", 1, (3.0, 3.2), (3.1, 7.4))
    holds = _frame_point("tflite-fp32", 2, (2.9, 3.2), (3.3, 4.0))
    assert sliced.degradation == pytest.approx(7.4 / 3.2) and holds.degradation == pytest.approx(4.0 / 3.2)
    c = choose([sliced, holds], budget_ms=10.0)
    assert c.chosen is holds
    assert "slow down more than 2x under load" in c.why and sliced.label() in c.why and "2.31x" in c.why
    # a profile allowing more: the two are within the noise (medians within 10%) and fewer threads wins
    assert choose([sliced, holds], budget_ms=10.0, max_degradation=2.5).chosen is sliced
    # quality comes first: a better mask that slows down is still chosen over a worse one that holds, and the
    # reason says it slows down
    holds.quality = 0.9
    c = choose([sliced, holds], budget_ms=10.0)
    assert c.chosen is sliced and "every equally good point slows down more than 2x" in c.why and "2.31x" in c.why


def test_the_app_config_records_the_slowdown():
    from edgekit.apps.profiling.appconfig import _frame_entry

    p = _frame_point("onnx-fp32", 1, (3.0, 3.2), (3.1, 7.4))
    assert _frame_entry(p)["degradation"] == pytest.approx(2.312, abs=1e-3)


def test_frame_timing_runs_every_stage_of_a_camera_frame():
    from types import SimpleNamespace

    from edgekit.apps.profiling.latency import measure_frame, parse_frame
    from edgekit.core.iospec import TensorSpec

    seen = []

    class _Seg:
        io = SimpleNamespace(inputs=[TensorSpec("image", (1, 3, 64, 96), mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)],
                             outputs=[TensorSpec("mask", (1, 1, 64, 96))])

        def run(self, feeds):
            x = feeds["image"]
            seen.append((x.shape, x.dtype, float(x.min()), float(x.max())))
            return {"mask": np.zeros((1, 1, 64, 96), np.float32)}

    t = measure_frame(_Seg(), parse_frame("720p"), runs=6, warmup=1)
    assert t.frame == (720, 1280) and list(t.stages) == ["resize", "colour", "normalize", "model", "upsample"]
    assert len(seen) == 2 * 7  # warm-up and timed runs, each once stage by stage and once as a whole
    shape, dtype, lo, hi = seen[0]
    assert shape == (1, 3, 64, 96) and dtype == np.float32 and -2.0 - 1e-6 <= lo < hi <= 2.0 + 1e-6  # (x-.5)/.25
    d = t.to_dict()
    assert d["end_to_end"]["runs"] == d["model"]["runs"] == 6 and 0 < d["model_share"]
    assert parse_frame("1080p") == (1080, 1920) and parse_frame("300x400") == (300, 400)
    for bad in ("4k", "0x10", "720", "10x99999"):
        with pytest.raises(InputError, match="frame"):
            parse_frame(bad)


@pytest.mark.parametrize("field, value", [
    ("audit", {"unintended": 2, "deviations": [1]}),
    ("audit", {"unintended": -1, "deviations": {}}),
    ("audit", "as intended"),
    ("load", {"cpu": "many", "memory": 1}),
    ("stages_ms", {"model": "fast"}),
    ("sustained", {"seconds": 30, "window_s": 5, "what": "frame", "windows": [{"p90_ms": None}]}),
])
def test_a_points_file_with_a_nested_record_of_the_wrong_shape_is_refused(field, value):
    from edgekit.errors import InputError

    good = _point("onnx-fp32", 3.0, 3.5, load_p90=6.0).to_dict()
    good["audit"] = {"source": "this machine's runtime", "ops": 10, "fast": 10, "deviations": {"fast": 0},
                     "off_fast_path": {}, "unintended": 0}
    good["sustained"] = {"what": "frame", "seconds": 30.0, "window_s": 5.0, "windows": [{"p90_ms": 7.5}],
                         "drift_p90": 1.01}
    assert Point.from_dict(json.loads(json.dumps(good))).audit["unintended"] == 0  # what edgekit writes loads
    with pytest.raises(InputError, match=field):
        Point.from_dict({**good, field: value})
