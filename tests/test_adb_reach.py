"""``reach: adb`` through a fake ``adb`` on PATH: a small shell script whose "device" is this machine (``push``
copies, ``shell`` runs the command here), so files really arrive, ``sha256sum`` really runs on them and a fake
``benchmark_model`` really runs. Modes set by environment variables: a push that corrupts what it copies, and an
adb that hangs on one kind of call. Every adb call has a timeout; a hang ends in one line, exit 7, quickly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.apps.profiling.device import DeviceLostError, load_profile
from edgekit.apps.profiling.reach import AdbReach
from edgekit.errors import DeviceError, InputError

FAKE_ADB = """#!/bin/sh
echo "$*" >> "$FAKE_ADB_LOG"
if [ "$1" = "-s" ]; then shift 2; fi
cmd="$1"; shift
if [ "$cmd" = "$FAKE_ADB_HANG" ]; then sleep 600; fi
case "$cmd" in
  devices) printf 'List of devices attached\\nSER1\\tdevice\\n' ;;
  push) cp "$1" "$2" || exit 1
        if [ -n "$FAKE_ADB_CORRUPT" ] && [ "${2##*/}" = "model.tflite" ]; then printf 'x' >> "$2"; fi
        echo "$1: 1 file pushed" ;;
  shell) exec sh -c "$*" ;;
  *) echo "adb: unknown command $cmd" >&2; exit 1 ;;
esac
"""
FAKE_BENCHMARK_MODEL = """#!/bin/sh
g="${{1#--graph=}}"; d="${{g%/*}}"; alive=""
if [ -f "$d/hogs.pid" ]; then for p in $(cat "$d/hogs.pid"); do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done; fi
echo "hogs:$alive" >> "{log}.hogs"
echo "$*" >> "{log}"
echo 'INFO: count=50 first=5190 curr=5088 min=4950 max=6100 avg=5121.4 std=180 p5=4970 median=5080 p95=5600'
echo 'INFO: Overall peak memory footprint (MB) via periodic monitoring: 48.3'
"""


@pytest.fixture
def adb(tmp_path, monkeypatch):
    """The fake adb on PATH; returns its log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(FAKE_ADB)
    (bin_dir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.delenv("FAKE_ADB_HANG", raising=False)
    monkeypatch.delenv("FAKE_ADB_CORRUPT", raising=False)
    return tmp_path / "adb.log"


def _profile(tmp_path, delegate="gpu", timeouts=None, load="{busy: 0}") -> Path:
    tool = tmp_path / "benchmark_model"
    tool.write_text(FAKE_BENCHMARK_MODEL.format(log=tmp_path / "bench.log"))
    tool.chmod(0o755)
    device = tmp_path / "device"
    device.mkdir(exist_ok=True)
    block = f"{{benchmark_model: {tool}, remote_dir: {device}{', timeouts: ' + timeouts if timeouts else ''}}}"
    f = tmp_path / "a.yaml"
    f.write_text(f"id: a\nhardware: gpu\nreach: adb\nadb: {block}\ntargets: [tflite-fp32]\n"
                 f"delegates: {{tflite: [{delegate}]}}\nthreads: [1]\nresolutions: [[256, 256]]\nbudget: {{fps: 30}}\n"
                 f"load: {load}\n")
    return f


class _Art:
    """What the adb reach reads of an artifact: its model file and parity."""

    target = "tflite-fp32"
    parity = {"outputs": [{"iou": 0.99}]}

    def __init__(self, folder: Path):
        self.model = folder / "model.tflite"
        self.model.write_bytes(os.urandom(4096))

    def file(self):
        return self.model


def _one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value).strip(), str(e.value)
    return str(e.value)


@pytest.mark.parametrize("delegate, flag", [("gpu", "--use_gpu=true"), ("cpu", "--use_xnnpack=true"),
                                            ("nnapi", "--use_nnapi=true")])
def test_adb_times_the_requested_delegate_checks_sha256_and_cleans_up(tmp_path, adb, delegate, flag):
    prof = load_profile(_profile(tmp_path, delegate))
    AdbReach().check(prof)
    m = AdbReach().measure(_Art(tmp_path), delegate, 1, prof, tmp_path)
    bench = (tmp_path / "bench.log").read_text().splitlines()
    assert len(bench) == 1 and flag in bench[0].split() and "--num_threads=1" in bench[0].split()
    assert m.p90_ms is None and m.p95_ms == pytest.approx(5.6) and m.tail == ("p95", m.p95_ms)
    assert m.p50_ms == pytest.approx(5.08) and m.peak_memory_mb == pytest.approx(48.3)
    calls = adb.read_text().splitlines()
    assert any("sha256sum benchmark_model model.tflite" in c for c in calls)
    assert m.detail["sha256_checked"] == ["benchmark_model", "model.tflite"]
    assert list((tmp_path / "device").iterdir()) == []  # the temporary folder is gone


def test_adb_refuses_a_delegate_it_cannot_time(tmp_path, adb):
    prof = load_profile(_profile(tmp_path, "npu"))
    with pytest.raises(InputError, match="delegate 'npu' cannot be timed over adb"):
        AdbReach().check(prof)


def test_wrong_sha256_after_push_runs_nothing(tmp_path, adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_CORRUPT", "1")
    prof = load_profile(_profile(tmp_path))
    art = _Art(tmp_path)
    with pytest.raises(DeviceError, match="did not arrive intact") as e:
        AdbReach().measure(art, "gpu", 1, prof, tmp_path)
    line = _one_line(e)
    assert "model.tflite: sha256" in line and "benchmark_model" not in line.split("(")[1]  # only the model differs
    assert not isinstance(e.value, DeviceLostError)  # the device answered: the point failed, not the device
    assert not (tmp_path / "bench.log").exists()  # nothing was run
    assert list((tmp_path / "device").iterdir()) == []


def test_hung_adb_push_ends_in_one_line_quickly(tmp_path, adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_HANG", "push")
    prof = load_profile(_profile(tmp_path, timeouts="{push: 0.5}"))
    t0 = time.perf_counter()
    with pytest.raises(DeviceLostError, match=r"did not answer in 0\.5 s") as e:
        AdbReach().measure(_Art(tmp_path), "gpu", 1, prof, tmp_path)
    assert time.perf_counter() - t0 < 10
    assert "adb push" in _one_line(e)
    assert e.value.exit_code == 7
    assert list((tmp_path / "device").iterdir()) == []  # the clean-up still ran (the shell answers)


def test_hung_adb_through_the_cli_is_exit_7_quickly(tmp_path, adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_HANG", "devices")
    prof = _profile(tmp_path, timeouts="{devices: 1}")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "doctor", "--device", str(prof)],
                         capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    assert res.returncode == 7, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "adb devices did not answer in 1 s" in lines[0]
    assert took < 30  # python start-up plus the 1 s timeout, not adb's 600 s sleep


def test_adb_timeouts_are_validated(tmp_path):
    with pytest.raises(InputError, match="timeouts"):
        load_profile(_profile(tmp_path, timeouts="{push: -1}"))
    with pytest.raises(InputError, match="unknown key"):
        load_profile(_profile(tmp_path, timeouts="{pull: 3}"))


def test_the_device_runs_the_load_beside_the_second_run(tmp_path, adb):
    """With the default load the device times the model quiet, then beside as many busy processes as the cores
    the point leaves free plus one (its own cores: nproc there), started detached and killed afterwards."""
    from edgekit.apps.profiling.load import default_level

    prof = load_profile(_profile(tmp_path, "cpu", load="{busy: auto, memory: 1}"))
    m = AdbReach().measure(_Art(tmp_path), "cpu", 1, prof, tmp_path)
    hogs = [ln.split(":", 1)[1].split() for ln in (tmp_path / "bench.log.hogs").read_text().splitlines()]
    device_cores = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)  # the fake's device
    level = default_level(device_cores, 1)
    assert [len(h) for h in hogs] == [0, level.busy]  # quiet first, then beside the load
    assert m.detail["load"] == level.to_dict() and "not interleaved" in m.detail["load_note"]
    assert m.detail["load_p50_ms"] == pytest.approx(5.08) and m.detail["load_p95_ms"] == pytest.approx(5.6)
    time.sleep(0.2)
    for pid in hogs[1]:  # every hog is gone
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert list((tmp_path / "device").iterdir()) == []
