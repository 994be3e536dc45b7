"""``reach: ssh`` against a real OpenSSH server on 127.0.0.1 (Debian's openssh-server, see ``make setup``).

A session fixture starts ``/usr/sbin/sshd`` on a free port as the current user with a temporary host key and a
temporary user key, and stops it at the end. The "remote" device's python is this venv's python. No mocks.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
pytestmark = pytest.mark.skipif(not SSHD.is_file() or not shutil.which("ssh") or not shutil.which("ssh-keygen"),
                                reason="OpenSSH server/client not installed (make setup installs openssh-server)")

from edgekit.apps.profiling import ssh  # noqa: E402
from edgekit.apps.profiling.device import load_profile  # noqa: E402
from edgekit.apps.profiling.reach import reach_for  # noqa: E402
from edgekit.errors import DeviceError, InputError  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return path


class Sshd:
    """An OpenSSH server on 127.0.0.1 in folder ``d`` (its own host key, user key and authorized_keys), started
    with :meth:`start` on ``port`` and killed with :meth:`kill` (as a device that reboots) or :meth:`stop`."""

    def __init__(self, d: Path, port: int | None = None):
        self.dir, self.port = d, port or _free_port()
        self.key = _keygen(d / "user_key")
        host_key = _keygen(d / "host_key")
        self.host_pub = (d / "host_key.pub").read_text().split()[1]
        (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
        self.config = d / "sshd_config"
        self.config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"AuthorizedKeysFile {d / 'authorized_keys'}",
            f"PidFile {d / 'sshd.pid'}", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
            "Subsystem sftp /usr/lib/openssh/sftp-server", ""]))
        self.proc: subprocess.Popen | None = None
        self.log = None

    def start(self) -> Sshd:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
        self.log = open(self.dir / "sshd.log", "a")  # noqa: SIM115 (closed by stop/kill)
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"sshd exited ({self.proc.returncode}): {(self.dir / 'sshd.log').read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("sshd did not start listening within 15 s")
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the listener and every process under it at once (its sessions and what they run)."""
        victims = [self.proc.pid, *_descendants(self.proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A running sshd on 127.0.0.1: {"port", "key", "host_pub", "dir", "pid"}."""
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield {"port": server.port, "key": server.key, "host_pub": server.host_pub, "dir": server.dir,
               "pid": server.pid}
    finally:
        server.stop()


def _profile(folder: Path, sshd: dict, runs: int = 7, resolutions=((64, 64),), threads=(1,), **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    remote_dir = folder / "remote"
    remote_dir.mkdir(exist_ok=True)
    block = {"host": "127.0.0.1", "port": sshd["port"], "user": os.environ.get("USER") or _user(),
             "key_file": str(sshd["key"]), "python": sys.executable, "remote_dir": str(remote_dir), **overrides}
    block = {k: v for k, v in block.items() if v is not None}
    path = folder / "box.yaml"
    path.write_text(json.dumps({"id": "ssh-box", "hardware": "cpu", "reach": "ssh", "targets": ["onnx-fp32"],
                                "threads": list(threads), "resolutions": [list(r) for r in resolutions],
                                "budget": {"fps": 30}, "runs": runs,
                                "warmup": 2, "ssh": block}))  # JSON is YAML
    return path


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture(scope="session")
def tiny_fp32(tiny_onnx, workdir):
    from edgekit.core.conversion import convert

    return convert(tiny_onnx, "onnx-fp32", workdir / "ssh-tiny-onnx-fp32")


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text.strip(), text
    return text


def test_ssh_profile_loads_and_is_validated(tmp_path, sshd):
    prof = load_profile(_profile(tmp_path, sshd))
    assert prof.reach == "ssh" and prof.ssh["port"] == sshd["port"]
    assert type(reach_for(prof)).__name__ == "SshReach"
    bad = _profile(tmp_path / "bad", sshd, python="relative/python")
    with pytest.raises(InputError, match="ssh"):
        load_profile(bad)
    no_block = tmp_path / "nob.yaml"
    raw = json.loads(_profile(tmp_path / "nob", sshd).read_text())
    del raw["ssh"]
    no_block.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="needs an 'ssh:' block"):
        reach_for(load_profile(no_block)).measure(None, "cpu", 1, load_profile(no_block), tmp_path)


@pytest.mark.slow
def test_measure_over_ssh(tmp_path, sshd, tiny_fp32):
    prof = load_profile(_profile(tmp_path, sshd))
    m = reach_for(prof).measure(tiny_fp32, "cpu", 1, prof, tmp_path)
    assert 0 < m.p50_ms <= m.p90_ms
    assert m.detail["remote_latency"]["runs"] == prof.runs
    assert m.peak_memory_mb and m.peak_memory_mb > 1  # a python process running onnxruntime
    assert m.measured_on == f"ssh {prof.ssh['user']}@127.0.0.1:{sshd['port']}"
    assert m.quality == tiny_fp32.parity["outputs"][0].get("iou")
    # the device ran this very model: its outputs on edgekit run's seeded input are the ones it gives here
    from edgekit.api import benchmark

    here = benchmark(tiny_fp32, runs=1)["outputs"]
    assert m.detail["remote_outputs"].keys() == here.keys()
    for name, stats in here.items():
        assert m.detail["remote_outputs"][name]["shape"] == stats["shape"]
        for k in ("min", "max", "mean"):
            assert m.detail["remote_outputs"][name][k] == pytest.approx(stats[k], rel=1e-5, abs=1e-6)
    # the temporary folder on the device is gone, nothing else was left there
    assert list((tmp_path / "remote").iterdir()) == []
    # the host key went into the profile's own known_hosts, and it is the server's key
    known = (tmp_path / "box.known_hosts").read_text()
    assert sshd["host_pub"] in known


@pytest.mark.slow
def test_remote_folder_removed_when_the_run_fails(tmp_path, sshd, tiny_fp32):
    prof = load_profile(_profile(tmp_path, sshd))
    with pytest.raises(DeviceError) as e:
        reach_for(prof).measure(tiny_fp32, "no-such-unit", 1, prof, tmp_path)
    assert "edgekit run" in _one_line(e)
    assert list((tmp_path / "remote").iterdir()) == []


@pytest.mark.slow
def test_tampered_file_on_the_device_is_refused(tmp_path, sshd, tiny_fp32):
    dev = ssh.SshDevice.from_profile(load_profile(_profile(tmp_path, sshd)))
    rdir = ssh.make_remote_dir(dev)
    try:
        expected = ssh.push_artifact(dev, tiny_fp32.path, rdir)
        assert set(expected) == {*tiny_fp32.files.values(), "artifact.json"} | (
            {tiny_fp32.reference} if tiny_fp32.reference else set())
        ssh.verify_remote(dev, rdir, expected)  # arrived intact
        model = Path(rdir) / tiny_fp32.files["model"]  # the "device" is this machine: change the file there
        model.write_bytes(model.read_bytes()[:-1] + b"\0")
        with pytest.raises(DeviceError, match="did not arrive intact") as e:
            ssh.verify_remote(dev, rdir, expected)
        assert tiny_fp32.files["model"] in _one_line(e)
    finally:
        ssh.remove_remote_dir(dev, rdir)
    assert not Path(rdir).exists()


def test_compare_sha256():
    a, b = "a" * 64, "b" * 64
    assert ssh.compare_sha256({"m.onnx": a}, f"{a}  m.onnx\n") == []
    assert ssh.compare_sha256({"m.onnx": a}, f"{a.upper()} *m.onnx\n") == []
    assert ssh.compare_sha256({"m.onnx": a}, f"{b}  m.onnx\n") == [
        f"m.onnx: sha256 {b[:12]}... on the device, {a[:12]}... sent"]
    assert ssh.compare_sha256({"m.onnx": a, "x.bin": b}, f"{a}  m.onnx\n") == ["x.bin: not on the device"]


def test_wrong_key_is_one_line(tmp_path, sshd):
    other = _keygen(tmp_path / "other_key")
    prof = load_profile(_profile(tmp_path, sshd, key_file=str(other)))
    with pytest.raises(DeviceError) as e:
        ssh.check(prof)
    assert "refused the key" in _one_line(e) and "authorized_keys" in str(e.value)


def test_closed_port_is_one_line(tmp_path, sshd):
    prof = load_profile(_profile(tmp_path, sshd, port=_free_port()))
    with pytest.raises(DeviceError) as e:
        ssh.check(prof)
    assert "refused" in _one_line(e) and "ssh.port" in str(e.value)


def test_missing_remote_python_is_one_line(tmp_path, sshd):
    prof = load_profile(_profile(tmp_path, sshd, python="/nonexistent/bin/python3"))
    with pytest.raises(DeviceError) as e:
        ssh.check(prof)
    assert "no python at /nonexistent/bin/python3" in _one_line(e)


def test_remote_python_without_edgekit_is_one_line(tmp_path, sshd):
    bare = shutil.which("python3", path="/usr/bin:/bin")
    if not bare or subprocess.run([bare, "-c", "import importlib.metadata as m; m.version('edgekit')"], cwd="/",
                                  capture_output=True).returncode == 0:
        pytest.skip("no system python3 without edgekit on this machine")
    prof = load_profile(_profile(tmp_path, sshd, python=bare))
    with pytest.raises(DeviceError) as e:
        ssh.check(prof)
    assert "edgekit is not installed" in _one_line(e)


@pytest.mark.slow
def test_doctor_device_cli(tmp_path, sshd):
    path = _profile(tmp_path, sshd)
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "doctor", "--device", str(path), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["ok"] and info["reach"] == "ssh"
    assert info["edgekit"] == importlib.metadata.version("edgekit")
    assert info["python"] == platform.python_version()
    assert info["runtimes"]["onnx"]["installed"]
    assert info["runtimes"]["onnx"]["packages"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert info["edgekit_here"] == info["edgekit"] and "note" not in info
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "doctor", "--device", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    runtimes = next(ln for ln in res.stdout.splitlines() if ln.startswith("runtimes: onnx ("))
    assert f"onnxruntime {importlib.metadata.version('onnxruntime')}" in runtimes
    # a refused key through the command line: exit 7 and one stderr line
    bad = _profile(tmp_path / "bad", sshd, key_file=str(_keygen(tmp_path / "k2")))
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "doctor", "--device", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 7
    assert len(res.stderr.strip().splitlines()) == 1 and "refused the key" in res.stderr


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.slow
def test_connection_killed_mid_measurement(tmp_path, sshd, tiny_fp32):
    """The device's sshd session dies while the model is being timed: one DeviceError line naming the dropped
    connection, and the temporary folder is still removed once the device answers again."""
    import threading

    prof = load_profile(_profile(tmp_path, sshd, runs=100000))
    caught: list[BaseException] = []

    def measure():
        try:
            reach_for(prof).measure(tiny_fp32, "cpu", 1, prof, tmp_path)
        except BaseException as e:  # noqa: BLE001 (handed to the test thread)
            caught.append(e)

    worker = threading.Thread(target=measure)
    worker.start()
    remote = str(tmp_path / "remote")
    deadline = time.monotonic() + 60
    runner = []
    while not runner and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.2)
        runner = [p for p in _descendants(sshd["pid"]) if _comm(p).startswith("python")
                  and remote in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert runner, "the remote edgekit run never started"
    time.sleep(1.0)  # timing has begun
    sessions = [p for p in _descendants(sshd["pid"]) if _comm(p).startswith("sshd")]
    for pid in sessions:  # the connection dies as it would when the device reboots (the listener stays up)
        os.kill(pid, signal.SIGKILL)
    for pid in runner:  # the orphaned remote run: this test started it
        os.kill(pid, signal.SIGKILL)
    worker.join(120)
    assert not worker.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], DeviceError), caught
    text = str(caught[0])
    assert "\n" not in text and "connection dropped" in text, text
    assert list((tmp_path / "remote").iterdir()) == []


def test_changed_host_key_is_refused(tmp_path, sshd):
    other = _keygen(tmp_path / "impostor")
    kind, pub = (tmp_path / "impostor.pub").read_text().split()[:2]
    (tmp_path / "box.known_hosts").write_text(f"[127.0.0.1]:{sshd['port']} {kind} {pub}\n")
    prof = load_profile(_profile(tmp_path, sshd))
    with pytest.raises(DeviceError) as e:
        ssh.check(prof)
    assert "host key" in _one_line(e) and str(tmp_path / "box.known_hosts") in str(e.value)
    assert other.is_file() and (tmp_path / "box.known_hosts").read_text().count("\n") == 1  # not overwritten


@pytest.mark.slow
def test_sweep_over_ssh_resumes(tmp_path, sshd, tiny_onnx):
    """A whole (one-point) sweep of an ssh device; run again, the finished point is reused, not measured twice."""
    from edgekit.apps.profiling.sweep import sweep

    prof = load_profile(_profile(tmp_path, sshd))
    out = tmp_path / "out"
    points = sweep(tiny_onnx, prof, out, cache=tmp_path / "cache")
    assert len(points) == 1 and points[0].ok, points[0].error
    assert points[0].measured_on.startswith("ssh ") and 0 < points[0].p50_ms <= points[0].p90_ms
    again = sweep(tiny_onnx, prof, out, cache=tmp_path / "cache")
    assert again[0].p50_ms == points[0].p50_ms
    assert len((out / "points.jsonl").read_text().splitlines()) == 1
    assert list((tmp_path / "remote").iterdir()) == []


def _counting_python(folder: Path) -> tuple[Path, Path]:
    """The "device's python": a wrapper that appends a line to a log each time it is started to time a model
    (the runner's code is in its arguments), then runs this venv's python. The log counts the measurements the
    device really ran, independently of points.jsonl."""
    log = folder / "measurements.log"
    wrapper = folder / "python-wrapper"
    wrapper.write_text(f"#!/bin/sh\ncase \"$*\" in *EDGEKIT_PEAK_RSS_KB*) echo run >> {log};; esac\n"
                       f"exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper, log


def _runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.is_file() else 0


@pytest.mark.slow
def test_device_reboots_mid_sweep_then_resumes(tmp_path, tiny_onnx):
    """The device (its sshd and everything under it) dies while the second of four points is being timed:
    ``edgekit profile`` stops at once with exit 7 and one line saying 1 of 4 points finished and is kept; with
    the device back, the same command measures only the 3 missing points (counted on the device)."""
    import threading

    (tmp_path / "server").mkdir()
    server = Sshd(tmp_path / "server").start()
    try:
        python, log = _counting_python(tmp_path)
        info = {"port": server.port, "key": server.key}
        prof = _profile(tmp_path / "prof", info, python=str(python), resolutions=((64, 64), (96, 96)), threads=(1, 2))
        cmd = [sys.executable, "-m", "edgekit.cli", "profile", "--device", str(prof), "--model", str(tiny_onnx),
               "--out", str(tmp_path / "out"), "--config-dir", str(tmp_path / "configs")]

        def reboot_during_second_point():
            deadline = time.monotonic() + 240
            while _runs(log) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            server.kill()

        watcher = threading.Thread(target=reboot_during_second_point)
        watcher.start()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        watcher.join(30)
        assert _runs(log) == 2, "the device was not killed during the second measurement"
        assert res.returncode == 7, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert "stopped answering at point 2 of 4" in lines[0] and "1 of 4 point(s) finished and are kept" in lines[0]
        assert "run the same command again" in lines[0] and "ssh" in lines[0]
        points_file = tmp_path / "out" / "ssh-box" / "points.jsonl"
        kept = [json.loads(ln) for ln in points_file.read_text().splitlines()]
        assert len(kept) == 1 and not kept[0]["error"] and kept[0]["threads"] == 1 and kept[0]["resolution"] == [64, 64]
        assert not (tmp_path / "configs").exists() or not list((tmp_path / "configs").iterdir())

        server.start()  # the device is back (same host key, same port)
        res = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert _runs(log) == 2 + 3  # only the three missing points were timed on the device
        result = json.loads(res.stdout)
        assert len(result["points"]) == 4 and all(not p["error"] for p in result["points"])
        assert result["points"][0]["p50_ms"] == kept[0]["p50_ms"]  # the kept point, resumed as it was
        assert len(points_file.read_text().splitlines()) == 4
    finally:
        server.stop()


def test_the_device_runs_the_load_and_times_the_whole_frame(tmp_path, sshd, tiny_fp32):
    """An ssh device is measured like this machine: the default background load runs there, beside the point, and
    the whole camera frame is timed quiet and under it; the budget is then checked on the frame under load."""
    from edgekit.apps.profiling.load import default_level, usable_cpus
    from edgekit.apps.profiling.sweep import FRAME_FIELDS, Point

    prof = load_profile(_profile(tmp_path, sshd))
    assert prof.load["busy"] == "auto"
    m = reach_for(prof).measure(tiny_fp32, "cpu", 1, prof, tmp_path)
    d = m.detail
    assert d["load"] == default_level(usable_cpus(), 1).to_dict()  # the device is this machine here
    assert 0 < d["load_p50_ms"] <= d["load_p90_ms"] and 0 < d["load_e2e_p50_ms"] <= d["load_e2e_p90_ms"]
    assert d["frame"] == [720, 1280] and set(d["stages_ms"]) == {"resize", "colour", "normalize", "model", "upsample"}
    p = Point((64, 64), "onnx-fp32", "cpu", 1, m.p50_ms, m.p90_ms, quality=1.0,
              **{k: d.get(k) for k in ("load_p50_ms", "load_p90_ms", *FRAME_FIELDS) if d.get(k) is not None})
    assert p.budget_basis[0] == "frame p90 under load" and p.budget_tail_ms == d["load_e2e_p90_ms"]
    assert list((tmp_path / "remote").iterdir()) == []
