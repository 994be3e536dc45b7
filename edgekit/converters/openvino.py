"""OpenVINO IR targets: ``openvino-fp32``, ``openvino-fp16`` (fp16-compressed weights) and
``openvino-int8`` (NNCF post-training quantization on calibration data).

When plain INT8 fails the parity gate, :meth:`alternatives` retries with NNCF's accuracy-control
mode, driven by edgekit's own metric (mask IoU, or cosine similarity for plain tensors, against
the fp32 reference); after that the generic fallback keeps the most sensitive layers in float
(``ignored_scope``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.converters.base import BaseConverter, ConversionJob, ConvertedModel
from edgekit.deps import require, tool_versions
from edgekit.errors import ConversionError


class OpenVINOConverter(BaseConverter):
    format = "openvino"
    precisions = ("fp32", "fp16", "int8")
    extra = "openvino"
    supports_keep_float = True

    def check_available(self) -> None:
        require("openvino")
        require("nncf")

    def alternatives(self, job: ConversionJob) -> list[dict]:
        return [{"nncf_mode": "accuracy_control"}] if job.target.is_quantized else []

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        ov = require("openvino")
        try:
            model = ov.convert_model(str(job.source.onnx_path))
        except (RuntimeError, ov.exceptions.OVError) as e:
            raise ConversionError(f"OpenVINO could not read the model: {e}") from e
        options = {"inference_precision": job.options.get("inference_precision", "f32")}
        if job.target.is_quantized:
            model, quant_options = _quantize(model, job)
            options.update(quant_options)
        xml = workdir / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=job.target.precision == "fp16")
        return ConvertedModel(files={"model": xml.name, "weights": "model.bin"}, io=job.source.io,
                              route="openvino.convert_model" + ("+nncf" if job.target.is_quantized else ""),
                              tools=tool_versions("openvino", "nncf", "onnx"), options=options)


def _quantize(model, job: ConversionJob):
    nncf = require("nncf")
    names = [t.name for t in job.source.io.inputs]

    def transform(sample):
        return {n: sample[n] for n in names}

    dataset = nncf.Dataset(job.calibration, transform)
    ignored = None
    if job.keep_float:
        ignored = nncf.IgnoredScope(names=list(job.keep_float), validate=False)
    mode = job.options.get("nncf_mode", "default")
    options = {"nncf_mode": mode, "calibration_samples": len(job.calibration), "preset": "performance"}
    try:
        if mode == "accuracy_control":
            reference = _reference_outputs(job)
            quantized = nncf.quantize_with_accuracy_control(
                model, dataset, nncf.Dataset(list(zip(job.calibration, reference))),
                _validation_fn(job, names), max_drop=0.01, subset_size=len(job.calibration), ignored_scope=ignored)
        else:
            quantized = nncf.quantize(model, dataset, subset_size=len(job.calibration), ignored_scope=ignored)
    except (RuntimeError, ValueError, nncf.errors.ValidationError, nncf.errors.UnsupportedModelError) as e:
        raise ConversionError(f"NNCF quantization failed: {e}") from e
    return quantized, options


def _reference_outputs(job: ConversionJob) -> list[dict]:
    from edgekit.runtimes.onnxruntime import OrtSession

    ref = OrtSession.reference(job.source)
    return [ref.run(s) for s in job.calibration]


def _validation_fn(job: ConversionJob, names: list[str]):
    """NNCF validation function: edgekit's task metric of a compiled model against the fp32 outputs."""
    from edgekit.parity import mask_iou

    spec = job.source.io.outputs[0]

    def validate(compiled, data):
        scores = []
        for sample, ref in data:
            got = compiled({n: sample[n] for n in names})[0]
            r = ref[spec.name]
            if spec.kind in ("probability", "logits"):
                cut = 0.0 if spec.kind == "logits" else 0.5
                scores.append(mask_iou(r > cut, np.asarray(got) > cut))
            else:
                a, b = r.ravel(), np.asarray(got).ravel()
                scores.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
        return float(np.mean(scores)), scores

    return validate
