"""The CLI on real artifacts: JSON output, tables, exit codes."""

import json
import subprocess
import sys

import pytest


def edgekit(*args):
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *map(str, args)], capture_output=True, text=True)


def test_inspect_json(student_onnx):
    res = edgekit("inspect", student_onnx, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert 50_000 < info["params"] <= 150_000
    assert info["io"]["inputs"][0]["shape"] == [1, 3, 256, 256]
    assert info["op_histogram"]["Conv"] > 20
    assert info["macs_by_op"]["Conv"] > 1e6
    assert info["support"]["onnx"]["Conv"] is True


@pytest.mark.slow
def test_inspect_landscape_scales_macs(student_onnx):
    full = json.loads(edgekit("inspect", student_onnx, "--json").stdout)
    land = json.loads(edgekit("inspect", student_onnx, "--input-shape", "image:1x3x144x256", "--json").stdout)
    assert abs(land["macs"] / full["macs"] - 144 / 256) < 0.02


@pytest.mark.slow
def test_run_and_validate_json(student_artifacts):
    art = student_artifacts("onnx-int8")
    res = edgekit("run", art.path, "--threads", "2", "--runs", "5", "--placement", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["outputs"]["mask"]["shape"] == [1, 1, 256, 256]
    assert 0 <= out["outputs"]["mask"]["min"] and out["outputs"]["mask"]["max"] <= 1
    assert out["latency"]["p50_ms"] > 0 and out["placement"]["ops_per_unit"]["cpu"] > 0
    res = edgekit("validate", art.path, "--samples", "16", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["passed"] is True


@pytest.mark.slow
def test_run_on_image_file(student_artifacts, tmp_path, portraits):
    import cv2

    img = tmp_path / "p.jpg"
    cv2.imwrite(str(img), (portraits[0][0][..., ::-1] * 255).astype("uint8"))
    res = edgekit("run", student_artifacts("onnx-fp32").path, "--input", img, "--runs", "2", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["outputs"]["mask"]["max"] > 0.5  # a person is found


def test_unknown_delegate_is_clear(student_artifacts):
    res = edgekit("run", student_artifacts("onnx-fp32").path, "--delegate", "cuda", "--runs", "1")
    assert res.returncode == 7
    assert "available delegates: cpu" in res.stderr and "Traceback" not in res.stderr


def test_doctor_json():
    res = edgekit("doctor", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["backends"]}
    assert rows["onnx"]["installed"] and "cpu" in rows["onnx"]["devices"]
    assert rows["onnx"]["packages"]["onnxruntime"] == "1.32.0"
