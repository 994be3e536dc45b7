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

from edgekit.backends.converter import BaseConverter, ConversionJob, ConvertedModel
from edgekit.core.deps import require, tool_versions
from edgekit.errors import ConversionError


class OpenVINOConverter(BaseConverter):
    format = "openvino"
    supports_keep_float = True

    def check_available(self) -> None:
        require("openvino")
        require("nncf")

    def alternatives(self, job: ConversionJob) -> list[dict]:
        return [{"nncf_mode": "accuracy_control"}] if job.target.is_quantized else []

    def stages(self, job: ConversionJob) -> tuple[str, ...]:
        return {"fp32": ("convert",), "fp16": ("convert", "fp16")}.get(job.target.precision, ("convert", "quantize"))

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        ov = require("openvino")
        try:
            model = ov.convert_model(str(job.source.onnx_path))
        except (RuntimeError, ov.exceptions.OVError) as e:
            raise ConversionError(f"OpenVINO could not read the model: {e}") from e
        options = {"inference_precision": job.options.get("inference_precision", "f32")}
        kept: tuple[str, ...] = ()
        notes: list[str] = []
        if job.stages_dir is not None and job.target.precision != "fp32":  # the fp32 IR before fp16 / NNCF
            plain = workdir / ".convert"
            plain.mkdir()
            ov.save_model(model, str(plain / "model.xml"), compress_to_fp16=False)
            job.keep_stage("convert", {"model": plain / "model.xml", "weights": plain / "model.bin"}, "fp32",
                           job.source.io)
            import shutil

            shutil.rmtree(plain)
        if job.target.is_quantized:
            model, quant_options = _quantize(model, job)
            kept = tuple(quant_options.pop("kept_float", ()))
            options.update(quant_options)
            if quant_options.get("pooled_float_layers"):
                notes.append(f"{len(quant_options['pooled_float_layers'])} layer(s) fed by a global pooling computed "
                             "in float (squeeze-excite: negligible cost, and their narrow calibrated ranges saturate "
                             "on inputs unlike the calibration set; -O pooled_layers=int8 quantizes them)")
        xml = workdir / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=job.target.precision == "fp16")
        return ConvertedModel(files={"model": xml.name, "weights": "model.bin"}, io=job.source.io,
                              route="openvino.convert_model" + ("+nncf" if job.target.is_quantized else ""),
                              tools=tool_versions("openvino", "nncf", "onnx"), options=options, kept_float=kept,
                              notes=notes)


def _quantize(model, job: ConversionJob):
    nncf = require("nncf")
    names = [t.name for t in job.source.io.inputs]

    def transform(sample):
        return {n: sample[n] for n in names}

    dataset = nncf.Dataset(job.calibration, transform)
    ignored = None
    from edgekit.backends.onnx.converter import pooled_layers

    # squeeze-excite 1x1 convolutions stay float (backends/onnx/converter.py: pooled_layers)
    pooled = [n for n in pooled_layers(job.source.model) if n not in job.keep_float] \
        if job.options.get("pooled_layers", "float") == "float" else []
    ov_names = ov_ops_of(model, job, (*job.keep_float, *pooled)) if job.keep_float or pooled else {}
    if ov_names:
        ignored = nncf.IgnoredScope(names=sorted(set(ov_names.values())), validate=False)
    mode = job.options.get("nncf_mode", "default")
    if job.keep_float and mode == "accuracy_control":
        # edgekit's keep-float search restores accuracy itself: accuracy control on top of each of its retries
        # re-validated op after op (minutes per retry on a MobileNetV2); plain PTQ with the kept layers ignored
        mode = "default"
    options = {"nncf_mode": mode, "calibration_samples": len(job.calibration), "preset": "performance"}
    try:
        if mode == "accuracy_control":
            reference = _reference_outputs(job)
            from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

            # NNCF reverts one op at a time, re-validating after each: on a model that cannot pass (a random-init
            # MobileNetV2) that ran for many minutes; edgekit's own keep-float search (1, 2, 4, ... layers) follows
            quantized = nncf.quantize_with_accuracy_control(
                model, dataset, nncf.Dataset(list(zip(job.calibration, reference))),
                _validation_fn(job, names), max_drop=0.01, subset_size=len(job.calibration), ignored_scope=ignored,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=AC_MAX_ITERATIONS))
        else:
            quantized = nncf.quantize(model, dataset, subset_size=len(job.calibration), ignored_scope=ignored)
    except (RuntimeError, ValueError, nncf.errors.ValidationError, nncf.errors.UnsupportedModelError) as e:
        raise ConversionError(f"NNCF quantization failed: {e}") from e
    if job.keep_float or pooled:  # read back: a kept layer is one whose weights are still float in the model
        float_ops = float_weighted_ops(quantized)
        kept = [n for n in job.keep_float if ov_names.get(n) in float_ops]
        floats = [n for n in pooled if ov_names.get(n) in float_ops]
        options.update(float_layers=kept + floats, kept_float=kept)
        if floats:
            options["pooled_float_layers"] = floats
    return quantized, options


#: ops NNCF's accuracy control may revert to float before edgekit's keep-float search takes over
AC_MAX_ITERATIONS = 8

#: ops whose second input is a weight
OV_WEIGHTED = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
               "MatMul")


def ov_ops_of(model, job: ConversionJob, wanted: tuple[str, ...] | None = None) -> dict[str, str]:
    """ONNX node name (of ``wanted``, default ``job.keep_float``) -> friendly name of the OpenVINO op computing it.

    OpenVINO names an op after its ONNX node, except an op that produces a graph output, which it names
    after that output; a Conv with a bias becomes ``NODE/WithoutBiases`` followed by an Add named ``NODE``.
    All are matched here, on weighted ops only."""
    wanted = set(job.keep_float if wanted is None else wanted)
    outputs = {n.name: set(n.output) for n in job.source.model.graph.node if n.name in wanted}
    found = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() not in OV_WEIGHTED:
            continue
        names = {op.get_friendly_name(), op.get_friendly_name().split("/")[0]}
        tensors = set().union(*(o.get_names() for o in op.outputs()))
        for target in op.output(0).get_target_inputs():  # the bias Add carries the node's name and tensor
            consumer = target.get_node()
            if consumer.get_type_name() == "Add":
                names.add(consumer.get_friendly_name())
                tensors |= set().union(*(o.get_names() for o in consumer.outputs()))
        for node, produced in outputs.items():
            if node in names or tensors & produced:
                found.setdefault(node, op.get_friendly_name())
    return found


def float_weighted_ops(model) -> set[str]:
    """Friendly names of the weighted ops whose weights are float (no int8 constant, no FakeQuantize)."""
    out = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() not in OV_WEIGHTED or op.get_input_size() < 2:
            continue
        stack, quantized = [op.input_value(1).get_node()], False
        while stack and not quantized:
            node = stack.pop()
            kind = node.get_type_name()
            if kind in ("FakeQuantize", "FakeConvert") or (
                    kind == "Constant" and node.get_output_element_type(0).is_integral()):
                quantized = True
            elif kind in ("Multiply", "Subtract"):  # a dequantization's scale and zero point
                stack.extend(v.get_node() for v in node.input_values())
            elif kind in ("Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze"):  # not their shape input
                stack.append(node.input_value(0).get_node())
        if not quantized:
            out.add(op.get_friendly_name())
    return out


def _reference_outputs(job: ConversionJob) -> list[dict]:
    from edgekit.backends.onnx.session import OrtSession

    ref = OrtSession.reference(job.source)
    return [ref.run(s) for s in job.calibration]


def _validation_fn(job: ConversionJob, names: list[str]):
    """NNCF validation function: the gate's task metric of a compiled model against the fp32 outputs."""
    from edgekit.core.parity import task_score

    spec = job.source.io.outputs[0]

    def validate(compiled, data):
        scores = [task_score(ref[spec.name], compiled({n: sample[n] for n in names})[0], spec)
                  for sample, ref in data]
        return float(np.mean(scores)), scores

    return validate
