"""ONNX targets: ``onnx-fp32`` (the prepared, simplified model) and ``onnx-int8`` (static QDQ)."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

from edgekit.backends.converter import BaseConverter, ConversionJob, ConvertedModel
from edgekit.core.deps import require, tool_versions
from edgekit.errors import ConversionError


class OnnxConverter(BaseConverter):
    format = "onnx"
    supports_keep_float = True

    def check_available(self) -> None:
        require("onnxruntime")

    def stages(self, job: ConversionJob) -> tuple[str, ...]:
        if not job.target.is_quantized:
            return ("copy",)
        return ("rewrite", "quantize") if job.options.get("hard_activations", "decompose") == "decompose" \
            else ("quantize",)

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        out = workdir / "model.onnx"
        options: dict = {}
        kept: tuple[str, ...] = ()
        notes: list[str] = []
        if job.target.precision == "fp32":
            shutil.copyfile(job.source.onnx_path, out)
        else:
            options = quantize_static_qdq(job, out)
            pooled = options.get("pooled_float_layers", [])
            if job.keep_float:
                kept = float_nodes(out, job.keep_float)
            weighted = float_nodes(out, tuple(pooled))
            if kept or pooled:
                # the activations too: ORT fuses a float Conv+Relu into one node named after the Relu's output
                options["float_layers"] = list(dict.fromkeys([*kept, *pooled]))
            if pooled:
                notes.append(f"{len(weighted)} layer(s) fed by a global pooling computed in float (squeeze-excite: "
                             "negligible cost, and their narrow calibrated ranges saturate on inputs unlike the "
                             "calibration set; -O pooled_layers=int8 quantizes them)")
        return ConvertedModel(files={"model": out.name}, io=job.source.io, route="onnxruntime.quantization"
                              if job.target.is_quantized else "onnxslim", tools=tool_versions(
                                  "onnx", "onnxruntime", "onnxslim"), options=options, kept_float=kept, notes=notes)


def float_nodes(path: Path, names: tuple[str, ...]) -> tuple[str, ...]:
    """Which of the named weighted nodes are float in the written model: present, and their weight does not
    come from a DequantizeLinear (their activation input may still be int8-rounded when it also feeds
    quantized layers)."""
    import onnx

    model = onnx.load(str(path))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    return tuple(name for name in names if name in by_name and len(by_name[name].input) > 1
                 and by_name[name].input[1] not in dequantized)


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
    import onnx

    from edgekit.core.rewrites import decompose_hard_activations

    pre, rewritten_path = out.with_name("pre.onnx"), out.with_name("rewritten.onnx")
    # HardSwish/HardSigmoid have no int8 kernel in ORT: as Add/Clip/Mul they stay int8 (core/rewrites.py)
    model, rewritten = decompose_hard_activations(job.source.model) \
        if job.options.get("hard_activations", "decompose") == "decompose" else (job.source.model, 0)
    onnx.save(model, str(rewritten_path))
    if job.options.get("hard_activations", "decompose") == "decompose":
        job.keep_stage("rewrite", {"model": rewritten_path}, "fp32", job.source.io,
                       note=f"{rewritten} hard activation(s) decomposed for int8")
    try:
        quant_pre_process(str(rewritten_path), str(pre), skip_symbolic_shape=True)
        try:
            folded, pooled = _quantize(quantize_static, pre, out, job, methods[method], model)
        except ValueError as e:
            if method == "minmax" or "bins" not in str(e):
                raise
            # histogram methods fail on near-constant tensors (e.g. squeeze-excite scales)
            method = "minmax"
            folded, pooled = _quantize(quantize_static, pre, out, job, methods[method], model)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConversionError(f"ONNX Runtime static quantization failed: {e}") from e
    finally:
        pre.unlink(missing_ok=True)
        rewritten_path.unlink(missing_ok=True)
    return {"calibration_method": method, "calibration_samples": len(job.calibration),
            "activations": "uint8 per-tensor", "weights": "int8 per-channel", "format": "QDQ",
            "int8_friendly_rewrites": rewritten, "scalar_muls_folded": folded, "pooled_float_layers": pooled}


def _quantize(quantize_static, pre: Path, out: Path, job: ConversionJob, method, model) -> tuple[int, list[str]]:
    """Quantize ``pre`` into ``out``; returns how many scalar products were folded into scales and the layers fed by
    a global pooling left in float."""
    from onnxruntime.quantization import QuantFormat, QuantType

    excluded = float_region(model, job.keep_float)
    pooled = [n for n in pooled_layers(model) if n not in excluded] \
        if job.options.get("pooled_layers", "float") == "float" else []
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration chatter to stdout
        quantize_static(str(pre), str(out), _Reader(job.calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=method, nodes_to_exclude=excluded + pooled,
                        extra_options={"CalibPercentile": 99.99})
    import onnx

    from edgekit.core.rewrites import fold_scalar_muls

    model = onnx.load(str(out))
    if excluded or pooled:  # ORT still quantizes what feeds a float node: the pooled value too, unless stripped
        strip_qdq_before(model, set(excluded) | set(pooled))
    # a product by a constant (the 1/6 of each decomposed HardSwish) is a change of scale, not a pass over the
    # tensor: the student at 256x256 ran 5.6 -> 4.9 ms in ORT with the same outputs (core/rewrites.py)
    folded = fold_scalar_muls(model)
    onnx.save(model, str(out))
    return folded, pooled


def pooled_layers(model) -> list[str]:
    """Weighted layers (and the activations between them) fed only by a global pooling: a squeeze-excite's
    1x1 convolutions. They cost nothing next to the convolutions around them, and their calibrated ranges are
    narrow statistics of the calibration images: on unlike inputs they saturate in int8 (the bundled student at
    144x256: a pooled value 5x its calibrated range on one held-back image turned an empty mask into 518 pixels,
    mean IoU 0.966 -> 0.991 with these four pairs in float)."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name for i in model.graph.initializer}
    found: list[str] = []
    stack = [o for n in model.graph.node if n.op_type in ("GlobalAveragePool", "GlobalMaxPool") for o in n.output]
    while stack:
        for node in consumers.get(stack.pop(), []):
            activations = [i for i in node.input if i and i not in inits]
            if node.name in found or len(activations) != 1:
                continue
            if node.op_type in ("Conv", "Gemm", "MatMul") or node.op_type in ACTIVATIONS - {"HardSigmoid",
                                                                                             "HardSwish"}:
                found.append(node.name)
                stack.extend(node.output)
    return found


#: single-input ops that ONNX Runtime quantizes on their own; their output feeds a kept-float layer
ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "PRelu"}


def float_region(model, keep: tuple[str, ...]) -> list[str]:
    """The kept layers plus the activations feeding them (walked back through single-input ops)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    out = list(keep)
    stack = [i for n in model.graph.node if n.name in keep for i in n.input[:1]]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.op_type in ACTIVATIONS and node.name not in out:
            out.append(node.name)
            stack.append(node.input[0])
    return out


def strip_qdq_before(model, float_nodes: set[str]) -> None:
    """Remove Quantize/Dequantize pairs whose output only feeds float nodes.

    ONNX Runtime's ``nodes_to_exclude`` computes a node in float but still quantizes the activation
    feeding it (as the producer's output); for a layer kept float because its *input* does not survive
    int8, that pair must go too.
    """
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    producer = {o: n for n in model.graph.node for o in n.output}
    drop = set()
    for dq in model.graph.node:
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in producer:
            continue
        q = producer[dq.input[0]]
        users = consumers.get(dq.output[0], [])
        if q.op_type != "QuantizeLinear" or not users or any(u.name not in float_nodes for u in users):
            continue
        for u in users:
            for k, name in enumerate(u.input):
                if name == dq.output[0]:
                    u.input[k] = q.input[0]
        if len(consumers.get(q.output[0], [])) == 1:
            drop.update({id(q), id(dq)})
        else:
            drop.add(id(dq))
    kept = [n for n in model.graph.node if id(n) not in drop]
    del model.graph.node[:]
    model.graph.node.extend(kept)
