"""A device farm: a local device and an ssh device (a real sshd on 127.0.0.1) swept at once by one
``edgekit profile --device A --device B --device C``, one of them unreachable; and farm files (schema, paths)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.apps.profiling.farm import load_farm, profile_farm
from edgekit.errors import InputError
from tests.test_ssh_reach import SSHD, Sshd, _counting_python, _free_port, _profile, _runs

LOCAL = {"id": "farm-local", "hardware": "cpu", "reach": "local", "targets": ["onnx-fp32"], "threads": [1],
         "resolutions": [[64, 64]], "budget": {"fps": 30}, "runs": 7, "warmup": 2, "load": {"busy": 0}}


def _local(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "local.yaml"
    path.write_text(json.dumps(LOCAL))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.slow
@pytest.mark.skipif(not SSHD.is_file(), reason="OpenSSH server not installed (make setup installs openssh-server)")
def test_farm_of_local_and_ssh_devices_one_failing(tmp_path, tiny_onnx):
    (tmp_path / "server").mkdir()
    server = Sshd(tmp_path / "server").start()
    try:
        python, log = _counting_python(tmp_path)
        info = {"port": server.port, "key": server.key}
        box = _profile(tmp_path / "box", info, python=str(python))
        dead = _profile(tmp_path / "dead", info, port=_free_port())  # nothing listens there
        raw = json.loads(dead.read_text())
        dead.write_text(json.dumps({**raw, "id": "ssh-dead"}))
        local = _local(tmp_path / "local")
        out, configs = tmp_path / "out", tmp_path / "configs"
        cmd = [sys.executable, "-m", "edgekit.cli", "profile", "--device", str(local), "--device", str(box),
               "--device", str(dead), "--model", str(tiny_onnx), "--out", str(out), "--config-dir", str(configs),
               "--json"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 7, res.stderr
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and "1 of 3 device(s) failed: ssh-dead:" in err[0] and "refused" in err[0], res.stderr
        farm = json.loads(res.stdout)
        assert [d["device"] for d in farm["devices"]] == ["farm-local", "ssh-box", "ssh-dead"]
        assert farm["failed"] == ["ssh-dead"]
        by_id = {d["device"]: d for d in farm["devices"]}
        for dev in ("farm-local", "ssh-box"):
            assert by_id[dev]["ok"] and by_id[dev]["points"] == by_id[dev]["points_ok"] == 1
            config = json.loads((configs / f"{dev}.json").read_text())  # one app config per device
            assert config["device"] == dev
            points = _lines(out / dev / "points.jsonl")  # each device's points, on their own
            assert len(points) == 1 and not points[0]["error"]
        assert _lines(out / "farm-local" / "points.jsonl")[0]["measured_on"] == "this machine"
        assert _lines(out / "ssh-box" / "points.jsonl")[0]["measured_on"].startswith("ssh ")
        assert _runs(log) == 1  # the ssh device timed its one point once
        assert by_id["ssh-dead"]["exit_code"] == 7 and not (configs / "ssh-dead.json").exists()
        # the devices were swept at once: each started before any other finished
        spans = [(by_id[d]["started_s"], by_id[d]["finished_s"]) for d in by_id]
        assert max(s for s, _ in spans) < min(f for _, f in spans)
        assert json.loads((out / "farm.json").read_text())["failed"] == ["ssh-dead"]
        assert any("farm-local, ssh-box are all measured on this machine" in n for n in farm["notes"])
        assert "ssh-dead" in (out / "farm.html").read_text()

        # again, the two good devices only: every point is resumed, nothing is measured again
        res = subprocess.run(cmd[:8] + cmd[10:], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert _runs(log) == 1
        for dev in ("farm-local", "ssh-box"):
            assert len(_lines(out / dev / "points.jsonl")) == 1
    finally:
        server.stop()


def test_farm_file_is_validated_and_kept_inside_its_folder(tmp_path):
    _local(tmp_path / "farm")
    farm = tmp_path / "farm" / "farm.yaml"
    farm.write_text("devices: [local.yaml, local-cpu]\n")
    devices, model = load_farm(farm)
    assert devices == [str((tmp_path / "farm" / "local.yaml").resolve()), "local-cpu"] and model is None
    for text, match in [("devices: [../x.yaml]\n", "leaves its folder"), ("devices: [/etc/x.yaml]\n", "leaves"),
                        ("devices: []\n", "devices"), ("devices: [local-cpu]\nspeed: 3\n", "unknown key"),
                        ("devices: [missing.yaml]\n", "not a file"), ("devices: [os.system]\n", "devices/0"),
                        ("devices: [local-cpu]\nmodel: ../m.onnx\n", "leaves its folder")]:
        farm.write_text(text)
        with pytest.raises(InputError, match=match):
            load_farm(farm)


def test_farm_refuses_two_devices_with_one_id(tmp_path):
    a, b = _local(tmp_path / "a"), _local(tmp_path / "b")
    with pytest.raises(InputError, match="two devices of the farm have the id 'farm-local'"):
        profile_farm([a, b], out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was measured


def test_cli_farm_bad_file_is_exit_2(tmp_path):
    farm = tmp_path / "farm.yaml"
    farm.write_text("devices: [../../etc/passwd.yaml]\n")
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "profile", "--farm", str(farm), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "leaves its folder" in res.stderr
