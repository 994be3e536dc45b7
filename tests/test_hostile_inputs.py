"""int8 must know its inputs, and `edgekit run` must survive bad flags and inputs: each case runs the real CLI
(table harness: tests/hostile.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.hostile import Case, run_case


@pytest.fixture(scope="session")
def cardless_onnx(tiny_onnx, workdir):
    """The tiny student without its model card: nothing states how images are pre-processed."""
    folder = workdir / "cardless"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(tiny_onnx, folder / "tiny.onnx")
    return folder / "tiny.onnx"


@pytest.fixture(scope="session")
def imagenet_bn_onnx(workdir):
    """conv + BatchNorm whose statistics are those of ImageNet-normalized inputs (no model card)."""
    import onnx

    from tests.test_preprocess import _bn_model

    folder = workdir / "imagenet-bn"
    folder.mkdir(exist_ok=True)
    onnx.save(_bn_model("imagenet"), str(folder / "net.onnx"))
    return folder / "net.onnx"


@pytest.fixture(scope="session")
def onnx_artifact(tiny_onnx, workdir):
    import edgekit

    return edgekit.convert(tiny_onnx, "onnx-fp32", workdir / "hostile-inputs-onnx", calib_samples=4,
                           held_back=2).path


@pytest.fixture(scope="session")
def ncnn_artifact(tiny_onnx, workdir):
    pytest.importorskip("ncnn")
    import edgekit

    return edgekit.convert(tiny_onnx, "ncnn-fp32", workdir / "hostile-inputs-ncnn", calib_samples=4,
                           held_back=2).path


def convert(model_fixture: str, *args):
    def setup(tmp, fx):
        model = tmp / "model.onnx"
        shutil.copyfile(fx(model_fixture), model)
        return ["convert", "model.onnx", "-o", "out", *args]

    return setup


def run(*args, artifact: str = "onnx_artifact", files: dict | None = None):
    def setup(tmp, fx):
        for name, make in (files or {}).items():
            make(tmp / name)
        return ["run", str(fx(artifact)), "--runs", "2", *args]

    return setup


def npy(array):
    return lambda path: np.save(path, array)


SHAPE = ["--input-shape", "1x3x64x64"]
GOOD = np.zeros((1, 3, 64, 64), np.float32)

CASES = [
    Case("int8-no-preprocessing", "wrong result", "int8 of a card-less model with no pre-processing stated",
         convert("cardless_onnx", "-t", "onnx-int8", *SHAPE), 2,
         "needs to know how images are pre-processed for input 'image'", survive=["model.onnx"], absent=["out"]),
    Case("int8-no-preprocessing-names-flags", "wrong result", "the refusal names every way to state it",
         convert("cardless_onnx", "-t", "openvino-int8", *SHAPE), 2,
         "--preprocess imagenet|unit|signed|raw255, --mean/--std/--value-range/--color, or --calib",
         absent=["out"]),
    Case("fp32-assumes-and-says-so", "silent deviation", "fp32 of a card-less model records what it assumed",
         convert("cardless_onnx", "-t", "onnx-fp32", *SHAPE), 0,
         "assumed pre-processing for input 'image': RGB, range [0, 1], mean [0, 0, 0], std [1, 1, 1]"),
    Case("int8-generated-only-says-so", "silent deviation", "int8 without --calib says it saw generated images",
         convert("cardless_onnx", "-t", "onnx-int8", "--preprocess", "signed", *SHAPE), 0,
         "calibrated and validated on generated images only"),
    Case("int8-wrong-preprocessing", "wrong result", "[0,1] stated for a model whose batch norm says ImageNet",
         convert("imagenet_bn_onnx", "-t", "onnx-int8", "--preprocess", "unit"), 2,
         "first-layer check of input 'image': mismatch", absent=["out"]),
    Case("preprocess-std-zero", "crash", "--std 0 would divide by zero",
         convert("cardless_onnx", "-t", "onnx-fp32", "--std", "0", *SHAPE), 2, "--std must not be 0",
         absent=["out"]),
    Case("preprocess-bad-range", "crash", "--value-range with one number",
         convert("cardless_onnx", "-t", "onnx-fp32", "--value-range", "255", *SHAPE), 2,
         "--value-range takes 2 numbers", absent=["out"]),
    Case("preprocess-mean-count", "silent deviation", "--mean with two values for a three-channel input",
         convert("cardless_onnx", "-t", "onnx-fp32", "--mean", "0.4,0.5", *SHAPE), 2,
         "--mean has 2 values; the input has 3 channels", absent=["out"]),
    Case("inspect-says-assumed", "silent deviation", "inspect of a card-less model says the pre-processing is assumed",
         lambda tmp, fx: ["inspect", str(fx("cardless_onnx")), *SHAPE], 0,
         "input image: pre-processing assumed (no model card states it)"),
    Case("run-runs-zero", "crash", "run --runs 0", run("--runs", "0"), 2, "--runs must be at least 1"),
    Case("run-runs-negative", "crash", "run --runs -5", run("--runs", "-5"), 2, "--runs must be at least 1"),
    Case("run-save-missing-folder", "crash", "run --save into a folder that does not exist",
         run("--save", "missing/out.npz"), 3, "folder missing does not exist", absent=["missing"]),
    Case("run-threads-1000", "silent deviation", "run --threads 1000", run("--threads", "1000"), 2,
         "threads 1000 is more than this machine can use"),
    Case("run-threads-zero", "crash", "run --threads 0", run("--threads", "0"), 2,
         "threads must be a positive integer"),
    Case("run-input-strings", "crash", "run --input with a .npy of strings",
         run("--input", "s.npy", files={"s.npy": npy(np.array(["a", "b"]))}), 2,
         "input file s.npy holds <U1 values; it must hold numbers"),
    Case("run-input-objects", "code execution", "run --input with a pickled object .npy",
         run("--input", "o.npy", files={"o.npy": lambda p: np.save(p, np.array([{"a": 1}], dtype=object))}), 2,
         "cannot read input file o.npy"),
    Case("run-input-batch", "silent deviation", "run --input with a batch of 2 (one would be dropped)",
         run("--input", "b.npy", files={"b.npy": npy(np.zeros((2, 3, 64, 64), np.float32))}), 2,
         "holds a batch of 2"),
    Case("run-input-shape", "crash", "run --input of the wrong size",
         run("--input", "w.npy", files={"w.npy": npy(np.zeros((1, 3, 32, 32), np.float32))}), 2,
         "input array w.npy has shape (1, 3, 32, 32)"),
    Case("run-input-nan", "wrong result", "run --input holding NaN",
         run("--input", "n.npy", files={"n.npy": npy(np.full((1, 3, 64, 64), np.nan, np.float32))}), 2,
         "NaN or infinite"),
    Case("run-input-missing", "crash", "run --input that does not exist", run("--input", "nope.png"), 2,
         "input file not found: nope.png"),
    Case("run-input-not-image", "crash", "run --input of a text file named .png",
         run("--input", "x.png", files={"x.png": lambda p: p.write_text("hello")}), 2,
         "cannot read input image x.png"),
    Case("ncnn-wrong-shape", "crash", "an ncnn artifact given an input of another shape (segfaulted)",
         run("--input", "w.npy", artifact="ncnn_artifact",
             files={"w.npy": npy(np.zeros((1, 3, 48, 64), np.float32))}), 2, "has shape (1, 3, 48, 64)"),
    Case("ncnn-right-shape", "crash", "the same ncnn artifact with a right input still runs",
         run("--input", "g.npy", artifact="ncnn_artifact", files={"g.npy": npy(GOOD)}), 0, "p50"),
]


# the cases that took longest when timed with --durations=0 (the fast tier skips them)
SLOW = {"int8-no-preprocessing-names-flags"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.id in SLOW else c for c in CASES],
                         ids=lambda c: c.id)
def test_hostile(case, tmp_path, request):
    res = run_case(case, tmp_path, request)
    if case.exit_code:
        assert "calibration" not in res.stderr or case.id.startswith(("int8", "preprocess"))
        assert "edgekit-" not in res.stderr and "/tmp" not in res.stderr  # no temporary path shown


def test_ncnn_wrong_shape_cannot_segfault(ncnn_artifact, tmp_path):
    """The session path below ncnn: a wrong shape raised while ncnn objects were alive, then close() cleared the
    Net and the interpreter segfaulted ("pool allocator destroyed too early"). Run it in a child so a crash
    fails this test instead of killing pytest."""
    script = textwrap.dedent(f"""
        import numpy as np
        import edgekit
        from edgekit.errors import InputError
        s = edgekit.load({str(ncnn_artifact)!r})
        name = s.native_io.inputs[0].name
        kept = []
        for shape in [(1, 3, 48, 64), (3, 64, 64), (2, 3, 64, 64)]:
            try:
                s._run_native({{name: np.zeros(shape, np.float32)}})
            except InputError as e:
                kept.append(e)  # keeps the traceback (and whatever it references) alive past close()
        s.close()
        s.close()
        print(len(kept), "refused")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 refused" in res.stdout and "destroyed too early" not in res.stderr


@pytest.mark.slow
def test_convert_json_is_only_json(cardless_onnx, tmp_path):
    """NNCF draws progress bars on stdout: with --json they must go elsewhere, or the JSON cannot be parsed."""
    pytest.importorskip("openvino")
    import json

    from tests.hostile import edgekit

    res = edgekit("convert", cardless_onnx, "-t", "openvino-int8", "--preprocess", "unit", *SHAPE, "-o", "out",
                  "--calib-samples", "8", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads(res.stdout)
    assert manifest["source_io"]["inputs"][0]["preprocessing"] == "preset unit"
    assert manifest["parity"]["data"]["held_back"] == "1/f colour fields + textures (8)"
