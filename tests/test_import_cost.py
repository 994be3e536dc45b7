"""``import edgekit`` and ``edgekit --help`` must not import heavy frameworks."""

import subprocess
import sys

HEAVY = ("torch", "tensorflow", "openvino", "coremltools", "ncnn", "onnxruntime", "onnx2tf")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint('LOADED:' + ' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return res.stdout.rpartition("LOADED:")[2].split()


def test_import_edgekit_is_light():
    assert _loaded_after("import edgekit") == []


def test_cli_help_is_light():
    code = "from edgekit.cli import main\nmain(['--help'])\nmain(['convert', '--help'])"
    assert _loaded_after(code) == []


def test_cli_help_explains_by_example():
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "convert", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "edgekit convert student.onnx --target" in res.stdout
