"""ONNX targets: ``onnx-fp32`` (the prepared, simplified model) and ``onnx-int8`` (static QDQ)."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

from edgekit.converters.base import ConversionJob, ConvertedModel
from edgekit.deps import require, tool_versions
from edgekit.errors import ConversionError


class OnnxConverter:
    format = "onnx"
    precisions = ("fp32", "int8")
    extra = "core"
    supports_keep_float = True

    def check_available(self) -> None:
        require("onnxruntime")

    def op_support(self, op_type: str) -> bool | None:
        return True  # the source is ONNX; ONNX Runtime implements the default opset

    def alternatives(self, job: ConversionJob) -> list[dict]:
        return []

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        out = workdir / "model.onnx"
        options: dict = {}
        if job.target.precision == "fp32":
            shutil.copyfile(job.source.onnx_path, out)
        else:
            options = quantize_static_qdq(job, out)
        return ConvertedModel(files={"model": out.name}, io=job.source.io, route="onnxruntime.quantization"
                              if job.target.is_quantized else "onnxslim", tools=tool_versions(
                                  "onnx", "onnxruntime", "onnxslim"), options=options)


class _Reader:
    """ONNX Runtime's CalibrationDataReader over edgekit samples."""

    def __init__(self, samples):
        self._it = iter(samples)

    def get_next(self):
        return next(self._it, None)


def quantize_static_qdq(job: ConversionJob, out: Path) -> dict:
    """Per-channel int8 weights, uint8 activations, QDQ format; ``job.keep_float`` nodes excluded."""
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = job.options.get("calibration_method", "percentile")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    pre = out.with_name("pre.onnx")
    try:
        quant_pre_process(str(job.source.onnx_path), str(pre), skip_symbolic_shape=True)
        try:
            _quantize(quantize_static, pre, out, job, methods[method])
        except ValueError as e:
            if method == "minmax" or "bins" not in str(e):
                raise
            # histogram methods fail on near-constant tensors (e.g. squeeze-excite scales)
            method = "minmax"
            _quantize(quantize_static, pre, out, job, methods[method])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConversionError(f"ONNX Runtime static quantization failed: {e}") from e
    finally:
        pre.unlink(missing_ok=True)
    return {"calibration_method": method, "calibration_samples": len(job.calibration),
            "activations": "uint8 per-tensor", "weights": "int8 per-channel", "format": "QDQ"}


def _quantize(quantize_static, pre: Path, out: Path, job: ConversionJob, method) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType

    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration chatter to stdout
        quantize_static(str(pre), str(out), _Reader(job.calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=method, nodes_to_exclude=list(job.keep_float),
                        extra_options={"CalibPercentile": 99.99})
