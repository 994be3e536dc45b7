"""``reach: ssh``: a Linux device (Raspberry Pi, Jetson, a NUC, a laptop) reached with OpenSSH.

For each point edgekit makes a temporary folder on the device, pushes the artifact there (only the files its
``artifact.json`` records, plus that manifest, in one tar through ``scp``), checks the sha256 of every file
that arrived with the device's ``sha256sum`` against what the manifest records, runs ``edgekit run DIR --json``
with the device's python, reads latency p50/p90 and the process's peak memory, and removes the folder, whatever
happened. Every ssh/scp call has a timeout, runs with ``BatchMode=yes`` (never a password prompt) and offers
only the profile's key (``IdentitiesOnly=yes``). Host keys live in a known_hosts file edgekit keeps for the
profile (``ssh.known_hosts``; default ``PROFILE.known_hosts`` beside the profile): a new device's key is
accepted on first use and written there, a changed key is refused; the user's ``~/.ssh/known_hosts`` is never
written. An unreachable host, a refused key, a missing python or edgekit on the device, a missing runtime and
a dropped connection each end in one :class:`~edgekit.errors.DeviceError` line saying what to check.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.apps.profiling.device import DeviceLostError, DeviceProfile
from edgekit.core import subprocesses
from edgekit.core.artifact import MANIFEST
from edgekit.core.files import inside
from edgekit.errors import DeviceError, EdgekitError, InputError

#: seconds each kind of remote call may take before ssh/scp is killed
SSH_TIMEOUT_S = {"shell": 60.0, "push": 300.0, "measure": 900.0, "doctor": 300.0}

#: ssh's own exit status when the connection (not the remote command) failed
SSH_FAILED = 255

#: the remote runner: ``edgekit run`` in-process, then the process's peak RSS (KiB on Linux) on stderr
RUNNER = ("import resource, runpy, sys\n"
          "sys.argv = ['edgekit'] + sys.argv[1:]\n"
          "try:\n"
          "    runpy.run_module('edgekit.cli', run_name='__main__', alter_sys=True)\n"
          "finally:\n"
          "    sys.stderr.write('\\nEDGEKIT_PEAK_RSS_KB=%d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")

_TMP_NAME = re.compile(r"^/[^\n\0]*/edgekit\.[A-Za-z0-9]{6,}$")


@dataclass(frozen=True)
class SshDevice:
    """Where and how a profile's device is reached (its ``ssh:`` block, checked)."""

    profile_id: str
    host: str
    port: int
    user: str | None
    key_file: Path | None
    python: str
    remote_dir: str
    known_hosts: Path
    connect_timeout: int

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> SshDevice:
        """The ``ssh:`` block of ``profile`` (validated by the schema), paths resolved against its folder.

        Raises:
            InputError: the profile has no ``ssh`` block, or its key file is not a file.
        """
        s = profile.ssh or {}
        if not s.get("host") or not s.get("python"):
            raise InputError(f"device profile {profile.id} is reached over ssh and needs an 'ssh:' block with at "
                             "least host and python (the device's python that has edgekit)")
        folder = Path(profile.path).parent if profile.path else Path.cwd()
        key = None
        if s.get("key_file"):
            key = (folder / Path(s["key_file"]).expanduser()).resolve()
            if not key.is_file():
                raise InputError(f"device profile {profile.id}: ssh.key_file {key} is not a file")
        if s.get("known_hosts"):
            known = (folder / Path(s["known_hosts"]).expanduser()).resolve()
        else:
            known = (Path(profile.path).with_suffix(".known_hosts") if profile.path
                     else folder / f"{profile.id}.known_hosts")
        return cls(profile.id, s["host"], int(s.get("port", 22)), s.get("user"), key, s["python"],
                   s.get("remote_dir", "/tmp").rstrip("/") or "/", known, int(s.get("connect_timeout", 10)))

    @property
    def address(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def options(self) -> list[str]:
        """Options shared by ssh and scp: batch mode, our known_hosts, only our key, timeouts, keep-alives."""
        opts = ["-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes"]
        if self.key_file:
            opts += ["-i", str(self.key_file)]
        if self.user:
            opts += ["-o", f"User={self.user}"]
        return opts


def _fail_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (res.stderr or "").splitlines() if ln.strip() and "EDGEKIT_PEAK_RSS_KB" not in ln]
    return " ".join((lines[-1] if lines else (res.stdout or "").strip()[-300:] or "no output").split())[:300]


def _connection_error(dev: SshDevice, what: str, res: subprocess.CompletedProcess) -> DeviceLostError:
    """One line for a failed ssh/scp connection, naming what to check. A failed connection is never about the
    point being measured, so it is a :class:`DeviceLostError`: a sweep stops there, keeping what it finished."""
    detail = _fail_line(res)
    low = detail.lower()
    if "permission denied" in low or "too many authentication failures" in low:
        hint = (f"the device refused the key {dev.key_file or '(none set)'}: check ssh.user and ssh.key_file, and "
                "that the key's .pub is in the device's ~/.ssh/authorized_keys")
    elif "host key verification failed" in low or "remote host identification has changed" in low:
        hint = (f"the device's host key is not the one recorded in {dev.known_hosts}: if the device was "
                "reinstalled, check its key and remove its line from that file")
    elif "timed out" in low or "timeout" in low:
        hint = "check the host and port, that the device is on and on the network (ssh.connect_timeout)"
    elif any(k in low for k in ("refused", "no route", "could not resolve", "name or service", "unreachable")):
        hint = "check ssh.host and ssh.port, that the device is on, and that sshd runs there"
    elif any(k in low for k in ("broken pipe", "closed by", "reset by", "connection lost", "timeout, server")):
        hint = "the connection dropped (device rebooted, sshd restarted or the network went away?)"
    else:
        hint = "check ssh.host, ssh.port, ssh.user and ssh.key_file in the profile"
    return DeviceLostError(f"ssh device {dev.profile_id} ({dev.address}): {what} failed: {detail}; {hint}")


def _call(dev: SshDevice, cmd: list[str], what: str, kind: str) -> subprocess.CompletedProcess:
    limit = SSH_TIMEOUT_S[kind]
    if not shutil.which(cmd[0]):
        raise DeviceError(f"ssh device {dev.profile_id} is reached over ssh, and '{cmd[0]}' is not installed on "
                          "this machine (Debian: apt-get install openssh-client)")
    try:
        res = subprocesses.run(cmd, f"ssh {what}", timeout=limit, error=DeviceError)
    except subprocesses.ToolTimeoutError as e:
        raise DeviceLostError(f"ssh device {dev.profile_id} ({dev.address}): {what} did not finish in {limit:g} s "
                              "and was stopped (device hung or the network dropped?)") from e
    if res.returncode == SSH_FAILED:
        raise _connection_error(dev, what, res)
    return res


def remote(dev: SshDevice, command: str, what: str, kind: str = "shell") -> subprocess.CompletedProcess:
    """Run the shell ``command`` on the device. A non-zero status of the command is returned, not raised.

    Raises:
        DeviceError: ssh cannot connect or log in, the connection drops, or the call runs past its timeout.
    """
    known = dev.known_hosts
    known.parent.mkdir(parents=True, exist_ok=True)
    return _call(dev, ["ssh", *dev.options(), "-p", str(dev.port), "--", dev.host, command], what, kind)


def remote_ok(dev: SshDevice, command: str, what: str, kind: str = "shell") -> str:
    """Run ``command`` on the device and return its stdout.

    Raises:
        DeviceError: as :func:`remote`, or the command exits non-zero.
    """
    res = remote(dev, command, what, kind)
    if res.returncode != 0:
        raise DeviceError(f"ssh device {dev.profile_id} ({dev.address}): {what} failed on the device "
                          f"(exit {res.returncode}): {_fail_line(res)}")
    return res.stdout


def make_remote_dir(dev: SshDevice) -> str:
    """A new private temporary folder under ``ssh.remote_dir`` on the device; its absolute path.

    Raises:
        DeviceError: the folder cannot be made.
    """
    base = shlex.quote(dev.remote_dir)
    out = remote_ok(dev, f"mkdir -p {base} && mktemp -d {base}/edgekit.XXXXXXXX", "making a temporary folder")
    path = out.strip().splitlines()[-1].strip() if out.strip() else ""
    if not _TMP_NAME.match(path):
        raise DeviceError(f"ssh device {dev.profile_id}: mktemp on the device printed {path!r}, not a folder path")
    return path


def remove_remote_dir(dev: SshDevice, path: str) -> None:
    """Remove a folder :func:`make_remote_dir` made (never any other path).

    Raises:
        DeviceError: the path is not one of ours, or removing it fails.
    """
    if not _TMP_NAME.match(path):
        raise DeviceError(f"refusing to remove {path!r} on ssh device {dev.profile_id}: not an edgekit temporary "
                          "folder")
    remote_ok(dev, f"rm -rf -- {shlex.quote(path)}", f"removing {path}")


def manifest_files(folder: Path) -> tuple[bytes, dict[str, str]]:
    """The bytes of ``folder/artifact.json`` and ``{relative path: sha256}`` of every file to push: each file
    and the reference it records, and the manifest itself.

    Raises:
        InputError: the manifest is unreadable or records a path that leaves the folder.
    """
    manifest = inside(folder, MANIFEST, f"artifact {folder}")
    try:
        data = manifest.read_bytes()
        d = json.loads(data)
        entries = list(d["files"].values()) + ([d["reference"]] if d.get("reference") else [])
        expected = {str(e["path"]): str(e["sha256"]) for e in entries}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{manifest} cannot be read as an artifact manifest: {e}") from e
    for rel in expected:
        inside(folder, rel, f"artifact {folder}")
    expected[MANIFEST] = hashlib.sha256(data).hexdigest()
    return data, expected


def push_artifact(dev: SshDevice, folder: Path, remote_dir: str) -> dict[str, str]:
    """Copy the artifact in ``folder`` into ``remote_dir`` on the device (one tar through scp, unpacked there);
    returns ``{relative path: sha256}`` of what was sent (the sha256 recorded in the manifest, and the manifest's).

    Raises:
        InputError: the local artifact cannot be read.
        DeviceError: the copy or the unpacking fails.
    """
    data, expected = manifest_files(folder)
    with tempfile.TemporaryDirectory(prefix="edgekit-ssh-") as tmp:
        bundle = Path(tmp) / "artifact.tar"
        with tarfile.open(bundle, "w") as tar:
            for rel in expected:
                if rel == MANIFEST:
                    info = tarfile.TarInfo(MANIFEST)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    src = inside(folder, rel, f"artifact {folder}")
                    info = tar.gettarinfo(str(src), arcname=rel)
                    if not info.isfile():
                        raise InputError(f"artifact {folder}: {rel} is not a regular file")
                    with open(src, "rb") as fh:
                        tar.addfile(info, fh)
        dest = f"{remote_dir}/artifact.tar"
        dev.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        res = _call(dev, ["scp", "-q", *dev.options(), "-P", str(dev.port), str(bundle), f"[{dev.host}]:{dest}"],
                    "copying the artifact", "push")
        if res.returncode != 0:
            raise DeviceError(f"ssh device {dev.profile_id} ({dev.address}): copying the artifact failed "
                              f"(exit {res.returncode}): {_fail_line(res)}")
    q = shlex.quote(remote_dir)
    remote_ok(dev, f"cd {q} && tar -xf artifact.tar && rm -f artifact.tar", "unpacking the artifact", "push")
    return expected


def compare_sha256(expected: dict[str, str], sha256sum_output: str) -> list[str]:
    """What differs between ``expected`` ({path: sha256}) and ``sha256sum``'s output: one entry per file that
    is missing from the output or whose digest differs (empty when every file arrived intact)."""
    got: dict[str, str] = {}
    for line in sha256sum_output.splitlines():
        m = re.match(r"^\\?([0-9a-fA-F]{64}) [ *](.+)$", line.rstrip("\n"))
        if m:
            got[m.group(2)] = m.group(1).lower()
    problems = []
    for rel, digest in expected.items():
        if rel not in got:
            problems.append(f"{rel}: not on the device")
        elif got[rel] != digest.lower():
            problems.append(f"{rel}: sha256 {got[rel][:12]}... on the device, {digest.lower()[:12]}... sent")
    return problems


def verify_remote(dev: SshDevice, remote_dir: str, expected: dict[str, str]) -> None:
    """Check with the device's ``sha256sum`` that every file in ``expected`` arrived in ``remote_dir`` intact.

    Raises:
        DeviceError: a file is missing or differs, or ``sha256sum`` cannot run.
    """
    files = " ".join(shlex.quote(r) for r in expected)
    res = remote(dev, f"cd {shlex.quote(remote_dir)} && sha256sum -- {files}", "checking sha256 of the artifact")
    problems = compare_sha256(expected, res.stdout)
    if problems:
        raise DeviceError(f"ssh device {dev.profile_id}: the artifact did not arrive intact ({'; '.join(problems)})"
                          "; nothing was run")
    if res.returncode != 0:
        raise DeviceError(f"ssh device {dev.profile_id}: sha256sum failed on the device: {_fail_line(res)}")


def _python_call(dev: SshDevice, args: str) -> str:
    return f"{shlex.quote(dev.python)} {args}"


def remote_edgekit(dev: SshDevice) -> dict:
    """The device's python and edgekit versions and machine.

    Raises:
        DeviceError: ssh fails, the python is missing, or edgekit is not installed for it.
    """
    probe = ("import importlib.metadata as m, json, platform, sys\n"
             "try:\n"
             "    import edgekit\n"
             "    v = m.version('edgekit')\n"
             "except Exception as e:\n"
             "    v = None\n"
             "print(json.dumps({'python': platform.python_version(), 'machine': platform.machine(),\n"
             "                  'system': platform.platform(), 'edgekit': v}))\n")
    res = remote(dev, _python_call(dev, f"-c {shlex.quote(probe)}"), "asking the device's python")
    if res.returncode == 127 or (res.returncode != 0 and "no such file" in (res.stderr or "").lower()):
        raise DeviceError(f"ssh device {dev.profile_id} ({dev.address}): no python at {dev.python} on the device "
                          "(set ssh.python to the device's python that has edgekit installed)")
    try:
        info = json.loads((res.stdout or "").strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise DeviceError(f"ssh device {dev.profile_id}: {dev.python} on the device did not answer as python "
                          f"(exit {res.returncode}): {_fail_line(res)}") from e
    if not info.get("edgekit"):
        raise DeviceError(f"ssh device {dev.profile_id} ({dev.address}): edgekit is not installed for {dev.python} "
                          "on the device (pip install edgekit with the targets' extras there)")
    return info


def remote_runtimes(dev: SshDevice, profile: DeviceProfile) -> dict:
    """``{format: {"installed": bool, "packages": {...}, "note": str}}`` for each format the profile sweeps,
    from ``edgekit doctor --json`` on the device.

    Raises:
        DeviceError: the remote doctor fails, or a format the profile needs is not installed there.
    """
    out = remote_ok(dev, _python_call(dev, "-m edgekit.cli doctor --json"), "edgekit doctor on the device", "doctor")
    try:
        rows = {r["name"]: r for r in json.loads(out[out.index("{"):])["backends"]}
    except (ValueError, KeyError, TypeError) as e:
        raise DeviceError(f"ssh device {dev.profile_id}: edgekit doctor on the device printed no report: {e}") from e
    formats = sorted({t.split("-")[0] for t in profile.targets})
    found = {f: {k: rows[f].get(k) for k in ("installed", "packages", "devices", "note")} if f in rows else
             {"installed": False, "packages": {}, "devices": [], "note": "unknown to the device's edgekit"}
             for f in formats}
    missing = [f for f in formats if not found[f]["installed"]]
    if missing:
        notes = "; ".join(f"{f}: {found[f]['note'] or 'not installed'}" for f in missing)
        raise DeviceError(f"ssh device {dev.profile_id} ({dev.address}): the device cannot run "
                          f"{', '.join(missing)} ({notes})")
    return found


def check(profile: DeviceProfile) -> dict:
    """Check an ssh device end to end, without measuring: the connection and login, a temporary folder that
    can be made and removed, the device's python and edgekit, and the runtime of every format the profile
    sweeps. Returns what was found.

    Raises:
        InputError: the profile's ``ssh`` block is incomplete.
        DeviceError: the first check that fails, in one line.
    """
    dev = SshDevice.from_profile(profile)
    info = {"device": profile.id, "reach": "ssh", "address": dev.address, "known_hosts": str(dev.known_hosts)}
    d = make_remote_dir(dev)
    remove_remote_dir(dev, d)
    info["remote_dir"] = dev.remote_dir
    info.update(remote_edgekit(dev))
    from edgekit.apps.profiling.sweep import edgekit_version

    info["edgekit_here"] = edgekit_version()
    if info["edgekit"] != info["edgekit_here"]:
        info["note"] = (f"the device runs edgekit {info['edgekit']}, this machine {info['edgekit_here']}: "
                        "install the same version there so both read the same artifacts")
    info["runtimes"] = remote_runtimes(dev, profile)
    return info


def device_doctor(profile: DeviceProfile) -> dict:
    """``edgekit doctor --device``: :func:`check` for an ssh device; the reach's own check for others.

    Raises:
        InputError: the profile is incomplete.
        DeviceError: the device cannot be used, in one line.
        MissingDependencyError: a runtime the profile needs is not installed (local reach).
    """
    if profile.reach == "ssh":
        return {**check(profile), "ok": True}
    from edgekit.apps.profiling.reach import reach_for

    reach_for(profile).check(profile)
    return {"device": profile.id, "reach": profile.reach, "ok": True}


def parse_run(stdout: str, stderr: str) -> dict:
    """The JSON ``edgekit run --json`` printed, with ``peak_memory_mb`` from the runner's last line.

    Raises:
        DeviceError: no JSON report, or no p50/p90 in it.
    """
    start = stdout.find("{")
    try:
        result = json.loads(stdout[start:]) if start >= 0 else None
        lat = result["latency"]
        p50, p90 = float(lat["p50_ms"]), float(lat["p90_ms"])
    except (ValueError, KeyError, TypeError) as e:
        raise DeviceError(f"edgekit run on the device printed no latency report: {stdout.strip()[-200:]!r}") from e
    peak = re.findall(r"EDGEKIT_PEAK_RSS_KB=(\d+)", stderr or "")
    result["p50_ms"], result["p90_ms"] = p50, p90
    result["peak_memory_mb"] = int(peak[-1]) / 1024 if peak else None
    return result


def remote_load_fields(result: dict) -> dict:
    """The point fields of a remote ``edgekit run --json [--under-load] [--frame]`` report: latency under the
    device's own default load, the whole frame quiet and loaded, and each stage's p50."""
    out: dict = {"p90_ci": result["latency"].get("p90_ci")}
    busy = result.get("latency_under_load")
    if busy:
        out.update(load_p50_ms=busy["p50_ms"], load_p90_ms=busy["p90_ms"], load_p90_ci=busy.get("p90_ci"),
                   load=result.get("load"))
    frame = result.get("frame")
    if frame:
        out.update(frame=list(frame["frame"]), stages_ms=frame["stages_p50_ms"],
                   e2e_p50_ms=frame["end_to_end"]["p50_ms"], e2e_p90_ms=frame["end_to_end"]["p90_ms"],
                   e2e_p90_ci=frame["end_to_end"].get("p90_ci"))
        whole = frame.get("under_load")
        if whole:
            out.update(e2e_p50_ms=whole["quiet"]["p50_ms"], e2e_p90_ms=whole["quiet"]["p90_ms"],
                       e2e_p90_ci=whole["quiet"].get("p90_ci"), load_e2e_p50_ms=whole["loaded"]["p50_ms"],
                       load_e2e_p90_ms=whole["loaded"]["p90_ms"], load_e2e_p90_ci=whole["loaded"].get("p90_ci"))
    return out


class SshReach:
    """A Linux device over OpenSSH, timed by ``edgekit run`` with the device's own python."""

    name = "ssh"
    #: whether the background load runs on the device beside each point (see load.py)
    runs_load = True
    #: whether that load follows the profile's ``load`` settings (else the device's default load)
    profile_load = False

    def check(self, profile: DeviceProfile) -> None:
        """See :func:`check`.

        Raises:
            InputError: the profile's ``ssh`` block is incomplete.
            DeviceError: the device cannot be reached or cannot run what the profile needs.
        """
        check(profile)

    def measure(self, artifact, delegate: str, threads: int, profile: DeviceProfile, data: Path):
        """Push ``artifact``, check it arrived intact, time it on the device, and remove it there.

        The device runs ``edgekit run`` (10 warm-up runs, ``profile.runs`` timed runs) on a generated input;
        quality is the artifact's parity on this machine, labelled so. ``data`` is not sent.

        Raises:
            DeviceError: any remote step fails (one line), including the clean-up after a good measurement.
        """
        from edgekit.apps.profiling.reach import Measured

        dev = SshDevice.from_profile(profile)
        rdir = make_remote_dir(dev)
        failed = True
        try:
            expected = push_artifact(dev, Path(artifact.path), rdir)
            verify_remote(dev, rdir, expected)
            loaded = profile.load.get("busy", "auto") != 0  # the device runs the default load itself
            frame = "x".join(str(int(v)) for v in profile.camera)
            args = (f"-c {shlex.quote(RUNNER)} run {shlex.quote(rdir)} --json --runs {int(profile.runs)} "
                    f"--threads {int(threads)} --delegate {shlex.quote(delegate)} --frame {frame}"
                    + (" --under-load" if loaded else ""))
            res = remote(dev, _python_call(dev, args), f"timing {artifact.target} on {delegate}", "measure")
            if res.returncode != 0:
                raise DeviceError(f"ssh device {dev.profile_id}: edgekit run {artifact.target} on {delegate} failed "
                                  f"there (exit {res.returncode}): {_fail_line(res)}")
            result = parse_run(res.stdout, res.stderr)
            failed = False
        finally:
            try:
                remove_remote_dir(dev, rdir)
            except EdgekitError:
                if not failed:
                    raise
        outputs = (getattr(artifact, "parity", None) or {}).get("outputs") or [{}]
        return Measured(result["p50_ms"], result["p90_ms"], result["peak_memory_mb"], outputs[0].get("iou"),
                        "mask IoU (parity check on this machine)", f"ssh {dev.address}",
                        {**remote_load_fields(result),
                         "remote_latency": result["latency"], "run_options": result.get("run_options"),
                         "remote_outputs": result.get("outputs"),
                         "peak_memory": "peak RSS of the device's edgekit run process"})
