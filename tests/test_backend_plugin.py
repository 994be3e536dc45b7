"""A backend added from outside edgekit: a tiny package made here, registered through the ``edgekit.backends``
entry-point group (a ``.dist-info`` on PYTHONPATH, as pip would install it), with no edit to edgekit. It must
show up in ``doctor``, ``inspect``, ``convert``, ``run``, ``--help-target`` and as a pipeline unit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]

DECLARATION = '''
from edgekit.backends.declaration import Backend, Option

BACKEND = Backend(
    format="dummy", runtime="Dummy RT", precisions=("fp32", "q4"), quantized=("q4",),
    converter="edgekit_dummy.impl:DummyConverter", session="edgekit_dummy.impl:DummySession",
    extra="core", packages=("onnxruntime",), delegates={"cpu": "cpu", "accel": "gpu"},
    options=(Option("flavour", "how the dummy writes its model", choices=("plain", "salty"), default="plain"),),
)
'''

IMPL = '''
import shutil

import numpy as np

from edgekit.backends.converter import BaseConverter, ConvertedModel
from edgekit.backends.session import Session


class DummyConverter(BaseConverter):
    format = "dummy"

    def check_available(self):
        pass

    def op_support(self, op_type):
        return op_type != "Sigmoid"  # so that inspect's column says something of its own

    def convert(self, job, workdir):
        shutil.copyfile(job.source.onnx_path, workdir / "dummy.onnx")
        return ConvertedModel(files={"model": "dummy.onnx"}, io=job.source.io, route="copy", tools={},
                              options={"flavour": job.options.get("flavour", "plain")})


class DummySession(Session):
    delegates = ("cpu", "accel")

    def __init__(self, path, native_io, source_io, threads, delegate):
        import onnxruntime as ort

        super().__init__(native_io, source_io, threads, delegate)
        self._sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    @classmethod
    def open(cls, artifact, threads=1, delegate="cpu"):
        cls.check_delegate(delegate)
        return cls(artifact.file("model"), artifact.io, artifact.source_io, threads, delegate)

    @classmethod
    def devices(cls):
        return ["cpu", "accel (dummy)"]

    @classmethod
    def compute_units(cls):
        return {"gpu": "Dummy accelerator"}

    def _run_native(self, inputs):
        names = [o.name for o in self._sess.get_outputs()]
        return dict(zip(names, self._sess.run(names, inputs)))
'''


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict:
    """An environment whose PYTHONPATH holds the dummy backend package and its installed metadata."""
    site = tmp_path_factory.mktemp("site")
    pkg = site / "edgekit_dummy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(DECLARATION))
    (pkg / "impl.py").write_text(textwrap.dedent(IMPL))
    info = site / "edgekit_dummy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgekit-dummy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgekit.backends]\ndummy = edgekit_dummy:BACKEND\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _edgekit(env, *args, ok=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*EDGEKIT, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_plugin_backend_in_doctor_inspect_and_help(plugin_env, tiny_onnx):
    doctor = json.loads(_edgekit(plugin_env, "doctor", "--json").stdout)
    row = next(b for b in doctor["backends"] if b["name"] == "dummy")
    assert row["runtime"] == "Dummy RT" and row["installed"] and "accel (dummy)" in row["devices"]

    report = json.loads(_edgekit(plugin_env, "inspect", tiny_onnx, "--json").stdout)
    assert "dummy" in report["support"]
    assert all(ok is (op != "Sigmoid") for op, ok in report["support"]["dummy"].items())

    options = json.loads(_edgekit(plugin_env, "convert", tiny_onnx, "-t", "dummy-fp32", "--help-target",
                                  "--json").stdout)
    assert [o["name"] for o in options["options"]] == ["flavour"]


def test_plugin_backend_converts_and_runs(plugin_env, tiny_onnx, tmp_path):
    out = tmp_path / "art"
    _edgekit(plugin_env, "convert", tiny_onnx, "-t", "dummy-fp32", "-O", "flavour=salty", "-o", out)
    manifest = json.loads((out / "artifact.json").read_text())
    assert manifest["format"] == "dummy" and manifest["options"]["flavour"] == "salty"

    bad = _edgekit(plugin_env, "convert", tiny_onnx, "-t", "dummy-fp32", "-O", "flavor=salty", "-o",
                   tmp_path / "bad", ok=False)
    assert bad.returncode == 2 and "did you mean 'flavour'" in bad.stderr
    assert not (tmp_path / "bad").exists()

    # run through the plugin's session on its accelerator delegate; compare with ONNX Runtime on the source here
    x = np.random.default_rng(0).random(tuple(manifest["source_io"]["inputs"][0]["shape"]), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    _edgekit(plugin_env, "run", out, "--input", tmp_path / "x.npy", "--delegate", "accel", "--runs", "2",
             "--save", tmp_path / "y.npz")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    got = np.load(tmp_path / "y.npz")[sess.get_outputs()[0].name]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_plugin_backend_is_a_pipeline_unit(plugin_env):
    code = ("from edgekit.apps.pipeline.units import local_units\n"
            "u = local_units()['gpu']\n"
            "print(u.description, '|', ','.join(u.formats), '|', u.delegate_for('dummy'))")
    proc = subprocess.run([sys.executable, "-c", code], env=plugin_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _description, formats, delegate = (p.strip() for p in proc.stdout.strip().split("|"))
    assert "dummy" in formats.split(",") and delegate == "accel"


def test_plugin_registering_a_builtin_format_is_refused(tmp_path):
    site = tmp_path / "site"
    (site / "edgekit_twice").mkdir(parents=True)
    (site / "edgekit_twice" / "__init__.py").write_text(textwrap.dedent(DECLARATION).replace('"dummy"', '"onnx"'))
    info = site / "edgekit_twice-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgekit-twice\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgekit.backends]\nonnx = edgekit_twice:BACKEND\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = _edgekit(env, "doctor", ok=False)
    assert proc.returncode != 0 and "registers format 'onnx' twice" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert Path(site).exists()


def test_builtin_declarations_agree_with_packaging_and_sessions():
    """Each built-in declaration names an extra that pyproject defines (or core), and its session accepts
    exactly the delegates it declares: the declaration is the one place, and nothing contradicts it."""
    import tomllib

    from edgekit.backends import registry

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for fmt in registry.BUILTIN:
        backend = registry.backend(fmt)
        assert backend.extra == "core" or backend.extra in extras, fmt
        assert tuple(registry.session_class(fmt).delegates) == tuple(backend.delegates), fmt
        assert registry.get(fmt).format == fmt
        assert set(backend.quantized) <= set(backend.precisions)
