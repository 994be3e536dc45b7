"""Core ML targets: ``coreml-fp32``, ``coreml-fp16`` (mlprogram compute precision), ``coreml-w8``
(int8 per-channel linear weight quantization) and ``coreml-w6``/``coreml-w4`` (k-means palettization).

Routes: a PyTorch source is traced and converted directly; an ONNX source goes through onnx2torch
first. The ``.mlpackage`` has the source's tensor names and the model card's pre-processing in its
metadata; ``options={"input_type": "image"}`` (``-O input_type=image``) makes the input an
``ImageType`` with the normalization folded into its scale and bias, for apps that pass camera frames.

Off macOS nothing can run the package, so the parity gate uses :mod:`edgekit.backends.coreml.mil_reference`,
edgekit's own evaluator of the saved MIL program (fp16 rounding per op), and says so in the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.backends.converter import BaseConverter, ConversionJob, ConvertedModel
from edgekit.core.deps import require, tool_versions
from edgekit.core.iospec import IOSpec, TensorSpec
from edgekit.errors import ConversionError, InputError

PALETTE_BITS = {"w6": 6, "w4": 4}


def import_coremltools():
    """coremltools for its PyTorch frontend.

    It is imported after torchvision (see ``deps.LOAD_BEFORE``), and with TensorFlow hidden unless
    already loaded: coremltools imports TensorFlow just to offer its TF frontends, which edgekit does
    not use (seconds of start-up and log noise).
    """
    import sys

    require("torch")
    if "coremltools" in sys.modules or "tensorflow" in sys.modules:
        return require("coremltools")
    hidden = {name: sys.modules.get(name) for name in ("tensorflow",)}
    sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ImportError
    try:
        return require("coremltools")
    finally:
        for name, mod in hidden.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


class CoreMLConverter(BaseConverter):
    format = "coreml"
    supports_keep_float = True  # compressed targets leave the kept layers' weights uncompressed

    def alternatives(self, job: ConversionJob) -> list[dict]:
        # one palette per group of 16 output channels instead of one per tensor (needs iOS18)
        return [{"palette": "per_grouped_channel"}] if job.target.precision in PALETTE_BITS else []

    def check_available(self) -> None:
        require("torch")
        require("onnx2torch")
        import_coremltools()

    def verifier(self, artifact):
        import platform

        if platform.system() == "Darwin":
            return super().verifier(artifact)
        from edgekit.backends.coreml.mil_reference import MILReferenceSession

        return MILReferenceSession.open(artifact)

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        ct = import_coremltools()
        torch = require("torch")
        module, route = _torch_module(job)
        src = job.source
        examples = tuple(torch.from_numpy(job.calibration[0][t.name]) for t in src.io.inputs)
        try:
            traced = torch.jit.trace(module.eval(), examples, check_trace=False)
        except RuntimeError as e:
            raise ConversionError(f"torch.jit.trace failed before Core ML conversion: {e}") from e
        image_input = job.options.get("input_type") == "image"
        inputs = [_input_type(ct, t, image_input) for t in src.io.inputs]
        outputs = [ct.TensorType(name=t.name) for t in src.io.outputs]
        precision = ct.precision.FLOAT32 if job.target.precision == "fp32" else ct.precision.FLOAT16
        grouped = job.options.get("palette") == "per_grouped_channel"
        deployment = "iOS18" if grouped else "iOS16"
        try:
            mlmodel = ct.convert(traced, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                                 compute_precision=precision,
                                 minimum_deployment_target=getattr(ct.target, deployment))
            skip = map_onnx_nodes(mlmodel, job) if job.keep_float else {}
            mlmodel = _compress(mlmodel, job.target.precision, grouped, sorted(skip.values()))
        except (RuntimeError, ValueError, NotImplementedError, TypeError) as e:
            raise ConversionError(f"coremltools conversion failed: {e}") from e
        native = _native_io(src.io, image_input)
        mlmodel.short_description = f"{src.card.name} converted by edgekit ({job.target})"
        mlmodel.user_defined_metadata["edgekit.source_io"] = json.dumps(src.io.to_dict())
        mlmodel.user_defined_metadata["edgekit.preprocessing"] = json.dumps(
            {t.name: {"color": t.color, "value_range": t.value_range, "mean": t.mean, "std": t.std}
             for t in src.io.inputs})
        path = workdir / "model.mlpackage"
        mlmodel.save(str(path))
        options = {"compute_precision": "fp32" if job.target.precision == "fp32" else "fp16",
                   "weights": {"w8": "int8 linear per-channel", "w6": "6-bit k-means palette",
                               "w4": "4-bit k-means palette"}.get(job.target.precision, "float"),
                   "input_type": "image" if image_input else "tensor", "deployment_target": deployment}
        if grouped:
            options["palette_granularity"] = "per_grouped_channel (16)"
        kept: tuple[str, ...] = ()
        if job.keep_float:  # read back: a kept layer's weight is still a plain float const in the program
            float_ops = float_weight_consts(mlmodel)
            kept = tuple(n for n in job.keep_float if skip.get(n) in float_ops)
            options["float_layers"] = list(kept)
        return ConvertedModel(files={"model": path.name}, io=native, route=route,
                              tools=tool_versions("coremltools", "torch", "onnx2torch"), options=options,
                              kept_float=kept)


def _torch_module(job: ConversionJob):
    if job.source.torch_module is not None:
        return job.source.torch_module, "torch.jit.trace+coremltools"
    onnx2torch = require("onnx2torch")
    try:
        return onnx2torch.convert(job.source.model), "onnx2torch+torch.jit.trace+coremltools"
    except (NotImplementedError, ValueError, KeyError) as e:
        raise ConversionError(f"onnx2torch cannot convert this ONNX model for Core ML: {e}") from e


def _input_type(ct, spec: TensorSpec, image: bool):
    if not image:
        return ct.TensorType(name=spec.name, shape=tuple(spec.shape))
    if not spec.is_image or spec.channels != 3 or len(set(spec.std)) != 1:
        raise InputError(f"an ImageType input needs a 3-channel image with one std for all channels ({spec.name})")
    lo, hi = spec.value_range
    scale = (hi - lo) / (255.0 * spec.std[0])
    bias = [(lo - m) / spec.std[0] for m in spec.mean]
    layout = ct.colorlayout.BGR if spec.color == "BGR" else ct.colorlayout.RGB
    return ct.ImageType(name=spec.name, shape=tuple(spec.shape), scale=scale, bias=bias, color_layout=layout)


def _native_io(io: IOSpec, image: bool) -> IOSpec:
    """With an ImageType input the package takes pixels 0..255 (same layout, no normalization)."""
    if not image:
        return io
    inputs = tuple(TensorSpec.from_dict({**t.to_dict(), "value_range": [0.0, 255.0], "mean": [0.0] * t.channels,
                                         "std": [1.0] * t.channels}) for t in io.inputs)
    return IOSpec(inputs, io.outputs)


def _compress(mlmodel, precision: str, grouped: bool, skip_ops: list[str]):
    from coremltools.optimize import coreml as cto

    skip = {name: None for name in skip_ops}  # None: leave this op's weights as they are
    if precision == "w8":
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=256),
            op_name_configs=skip)
        return cto.linear_quantize_weights(mlmodel, config)
    if precision in PALETTE_BITS:
        require("sklearn")
        extra = {"granularity": "per_grouped_channel", "group_size": 16} if grouped else {}
        config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
            mode="kmeans", nbits=PALETTE_BITS[precision], weight_threshold=256, **extra), op_name_configs=skip)
        return cto.palettize_weights(mlmodel, config)
    return mlmodel


def map_onnx_nodes(mlmodel, job: ConversionJob) -> dict[str, str]:
    """ONNX node name (in ``job.keep_float``) -> name of the MIL op holding the same weights."""
    from edgekit.core.weightmatch import match_by_weights, onnx_weights

    def weights():
        for op in mlmodel._mil_program.functions["main"].operations:
            weight = op.inputs.get("weight") if op.op_type in ("conv", "linear", "conv_transpose") else None
            if weight is not None and weight.op is not None and weight.val is not None:
                yield weight.op.name, weight.val

    # fp16-cast weights: compared within fp16 rounding
    return match_by_weights(onnx_weights(job.source.model, job.keep_float), weights(), atol=2e-3, rtol=2e-3)


def float_weight_consts(mlmodel) -> set[str]:
    """Names of the plain float ``const`` ops feeding conv/linear weights (compressed weights are
    ``constexpr_*`` ops instead); empty when the program cannot be read back."""
    import numpy as np

    program = getattr(mlmodel, "_mil_program", None)
    if program is None:
        return set()
    out = set()
    for op in program.functions["main"].operations:
        weight = op.inputs.get("weight") if op.op_type in ("conv", "linear", "conv_transpose") else None
        if weight is not None and weight.op is not None and weight.op.op_type == "const" and weight.val is not None \
                and np.asarray(weight.val).dtype.kind == "f":
            out.add(weight.op.name)
    return out
