import numpy as np
import pytest

from edgekit.core.iospec import IOSpec, TensorSpec, to_layout
from edgekit.core.target import Target
from edgekit.errors import InputError, MissingDependencyError


def test_target_parse():
    t = Target.parse("onnx-int8")
    assert (t.format, t.precision, t.is_quantized, t.tolerance_class) == ("onnx", "int8", True, "int8")
    assert Target.parse("ONNX-FP32").tolerance_class == "fp32"


def test_unknown_target_lists_valid_ones():
    with pytest.raises(InputError, match="valid targets: .*onnx-int8"):
        Target.parse("tflite-int9")


def test_tensor_spec_layout_roundtrip():
    s = TensorSpec("image", (1, 3, 144, 256), mean=(0.5, 0.5, 0.5))
    n = s.with_layout("NHWC")
    assert n.shape == (1, 144, 256, 3) and n.hw == (144, 256) and n.channels == 3
    assert n.with_layout("NCHW") == s
    io = IOSpec((s,), (TensorSpec("mask", (1, 1, 144, 256), kind="probability"),))
    assert IOSpec.from_dict(io.to_dict()) == io
    x = np.random.rand(1, 3, 4, 5).astype(np.float32)
    assert np.array_equal(to_layout(to_layout(x, "NCHW", "NHWC"), "NHWC", "NCHW"), x)


def test_missing_dependency_names_extra():
    from edgekit.core.deps import require

    with pytest.raises(MissingDependencyError, match=r"pip install 'edgekit\[all\]'"):
        require("definitely_not_installed_pkg")
    e = MissingDependencyError("onnx2tf", "tflite", "pip install --no-deps onnx2tf==1.29.24")
    assert "--no-deps onnx2tf" in str(e)
