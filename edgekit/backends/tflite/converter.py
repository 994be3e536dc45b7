"""TFLite targets (``tflite-fp32``, ``-fp16``, ``-int8-dynamic``, ``-int8``), two real routes:

* ONNX source -> **onnx2tf** (TensorFlow) in a subprocess. Its traps are handled here: it tries to
  download a sample calibration file (we place one of that name in its working directory), it can
  transpose an upsampling output (Resize, ConvTranspose) wrongly when C equals H or W (the parity
  gate catches it; the :meth:`alternatives` retry adds a post-process transpose on those nodes), exact GELU
  becomes a Flex op (we ask for pseudo-ops, and refuse a model that still has Flex/custom ops), and
  it can exit 0 without writing a variant (we check every file).
* PyTorch source -> **litert-torch** (no TensorFlow) for ``fp32`` and ``int8`` (PT2E, per-channel
  symmetric), which keeps NCHW IO.

onnx2tf writes NHWC in and out; ``--io-layout nchw`` keeps the input NCHW (``-k``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from edgekit.backends.converter import BaseConverter, ConversionJob, ConvertedModel
from edgekit.core import subprocesses
from edgekit.core.deps import require, require_installed, tool_versions
from edgekit.core.iospec import IOSpec, TensorSpec
from edgekit.errors import ConversionError, InputError, UnsupportedOpError

#: target precision (and int8 IO dtype) -> onnx2tf output file suffix
ONNX2TF_FILES = {
    "fp32": "float32", "fp16": "float16", "int8-dynamic": "dynamic_range_quant",
    ("int8", "float"): "integer_quant", ("int8", "int8"): "full_integer_quant",
}
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: ONNX ops onnx2tf is known not to convert here
UNSUPPORTED = frozenset({"Loop", "If", "Scan", "NonMaxSuppression", "Unique", "StringNormalizer"})


class TFLiteConverter(BaseConverter):
    format = "tflite"
    supports_keep_float = True  # tflite-int8 with kept layers: onnx2tf float + ai-edge-quantizer

    def check_available(self) -> None:
        require_installed("ai_edge_litert")
        require_installed("onnx2tf")  # runs in a subprocess: do not import TensorFlow here
        require_installed("tensorflow")

    def op_support(self, op_type: str) -> bool | None:
        return op_type not in UNSUPPORTED

    def alternatives(self, job: ConversionJob) -> list[dict]:
        """Option sets to retry with when the parity gate fails: onnx2tf's layout repair, then (for a
        PyTorch source at fp32/int8) the litert-torch route, which has no layout inference to get wrong."""
        if job.options.get("route", _route(job)) != "onnx2tf":
            return []
        fixes = ambiguous_upsamplers(job.source.model)
        # which post-process transpose undoes onnx2tf's mix-up depends on which dims collide: try each
        out = [{"onnx2tf_transpose": fixes, "onnx2tf_perm": perm} for perm in TRANSPOSE_PERMS] if fixes else []
        if job.source.torch_module is not None and job.target.precision in ("fp32", "int8"):
            out.append({"route": "litert-torch", "onnx2tf_transpose": []})
        return out

    def stages(self, job: ConversionJob) -> tuple[str, ...]:
        if job.options.get("route", _route(job)) == "litert-torch":
            return ("convert",)
        p = job.target.precision
        rewrite = ("rewrite",) if p == "int8" and job.options.get("hard_activations", "decompose") == "decompose" \
            else ()
        return (*rewrite, "layout") + ({"fp32": (), "fp16": ("fp16",)}.get(p, ("quantize",)))

    def keep_float_unsupported(self, job: ConversionJob) -> str | None:
        if job.target.precision != "int8":
            return f"only tflite-int8 can keep layers in float, not {job.target}"
        if job.options.get("route", _route(job)) == "litert-torch":
            return "the litert-torch route quantizes the whole graph (PT2E) and cannot keep layers in float"
        return None

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        io_dtype = job.options.get("io_dtype", "float")
        if io_dtype == "int8" and job.target.precision != "int8":
            raise InputError("--io-dtype int8 needs the tflite-int8 target")
        route = job.options.get("route", _route(job))
        if route == "litert-torch":
            return _convert_litert_torch(job, workdir)
        return _convert_onnx2tf(job, workdir, io_dtype)


def _route(job: ConversionJob) -> str:
    torch_ok = job.source.torch_module is not None and job.target.precision in ("fp32", "int8")
    if torch_ok and job.options.get("io_dtype", "float") == "float" and job.options.get("io_layout") != "nhwc":
        return "litert-torch"
    return "onnx2tf"


# ---------------------------------------------------------------- onnx2tf route


#: post-process transposes that repaired onnx2tf's layout mix-up (C == H == W: the first; C == W: the others)
TRANSPOSE_PERMS = ([0, 3, 1, 2], [0, 1, 3, 2], [0, 2, 1, 3])

#: ops that change H/W; onnx2tf's layout inference can go wrong on their outputs
UPSAMPLERS = ("Resize", "Upsample", "ConvTranspose", "DepthToSpace")


def ambiguous_upsamplers(model) -> list[str]:
    """Upsampling nodes whose 4-D output has C equal to H or W: onnx2tf may transpose them wrongly."""
    import onnx

    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    out = []
    for n in model.graph.node:
        s = shapes.get(n.output[0], [])
        if n.op_type in UPSAMPLERS and len(s) == 4 and s[1] in (s[2], s[3]):
            out.append(n.name)
    return out


def _convert_onnx2tf(job: ConversionJob, workdir: Path, io_dtype: str) -> ConvertedModel:
    work = workdir / ".onnx2tf"
    work.mkdir()
    src = job.source
    keep_nchw = job.options.get("io_layout") == "nchw"
    onnx_in, rewritten = src.onnx_path, 0
    if job.target.precision == "int8" and job.options.get("hard_activations", "decompose") == "decompose":
        # XNNPACK has no int8 HARD_SWISH / RELU_0_TO_1 kernel here: as Add/Clip/Mul (x/6 first, so that TensorFlow's
        # converter does not fuse them back) every op stays on XNNPACK (core/rewrites.py; the audit shows it). With
        # the squeeze-excite layers quantized too it flickered (the student: dtSSD 3.93 > 3.0); with them float
        # (pooled_layers, below) dtSSD 1.18 and 2x faster than keeping HARD_SWISH on the reference kernels
        import onnx

        from edgekit.core.rewrites import decompose_hard_activations

        model, rewritten = decompose_hard_activations(src.model)
        if rewritten:
            onnx_in = work / src.onnx_path.name
            onnx.save(model, str(onnx_in))
        job.keep_stage("rewrite", {"model": onnx_in}, "fp32", src.io, fmt="onnx",
                       note=f"{rewritten} hard activation(s) decomposed for int8")
    cmd = [sys.executable, "-m", "onnx2tf", "-i", str(onnx_in), "-o", str(work / "tf"), "-coion", "-nuo",
           "-n", "-rtpo", "Erf", "GeLU"]
    if keep_nchw:
        cmd += ["-k", *[t.name for t in src.io.inputs]]
    nhwc = [t.name for t in src.io.inputs if t.layout == "NHWC"]  # a TFLite source's inputs are NHWC already
    if nhwc and not keep_nchw:
        cmd += ["-kt", *nhwc]
    # onnx2tf downloads this sample file (even for float targets) unless one is in its working directory
    np.save(work / ONNX2TF_SAMPLE, np.zeros((20, 128, 128, 3), np.float32))
    from edgekit.backends.onnx.converter import pooled_layers

    # squeeze-excite 1x1 convolutions stay float (backends/onnx/converter.py: pooled_layers): onnx2tf's int8 cannot
    # leave a layer float, so a model that has them takes the mixed route (onnx2tf float32, then ai-edge-quantizer)
    weighted = {n.name for n in src.model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    # (with HARD_SWISH kept, ai-edge-quantizer's int8 of the student failed its gate: that case stays onnx2tf's)
    pooled = tuple(n for n in pooled_layers(src.model) if n in weighted and n not in job.keep_float) \
        if job.target.precision == "int8" and job.options.get("pooled_layers", "float") == "float" \
        and job.options.get("hard_activations", "decompose") == "decompose" else ()
    mixed = job.target.precision == "int8" and bool(job.keep_float or pooled)
    if job.target.is_quantized and not mixed:
        cmd += ["-oiqt", "-qt", "per-channel"]
        for spec in src.io.inputs:
            data = np.concatenate([s[spec.name] for s in job.calibration])
            if spec.is_image and not keep_nchw and spec.layout != "NHWC":  # a TFLite source's are NHWC already
                data = data.transpose(0, 2, 3, 1)
            np.save(work / f"calib_{spec.name}.npy", data)
            cmd += ["-cind", spec.name, str(work / f"calib_{spec.name}.npy"), "[[[[0.0]]]]", "[[[[1.0]]]]"]
    fixes = job.options.get("onnx2tf_transpose") or []
    if fixes:
        prf = {"format_version": 1, "operations": [
            {"op_name": name, "param_target": "outputs", "param_name": _output_of(src.model, name),
             "post_process_transpose_perm": list(job.options.get("onnx2tf_perm", TRANSPOSE_PERMS[0]))}
            for name in fixes]}
        (work / "replace.json").write_text(json.dumps(prf))
        cmd += ["-prf", str(work / "replace.json")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    key = (job.target.precision, io_dtype) if job.target.precision == "int8" else job.target.precision
    key = "fp32" if mixed else key
    produced = work / "tf" / f"{src.onnx_path.stem}_{ONNX2TF_FILES[key]}.tflite"
    float32 = work / "tf" / f"{src.onnx_path.stem}_{ONNX2TF_FILES['fp32']}.tflite"
    # the float32 model onnx2tf writes depends on the graph and the layout flags only: a keep-float retry (which
    # re-quantizes that float model) reuses it instead of running onnx2tf again (minutes for a MobileNet)
    reuse = _float_key(onnx_in, cmd, work, (work / "replace.json") if fixes else None)
    if mixed and reuse in _FLOAT_CACHE:
        produced.parent.mkdir(parents=True, exist_ok=True)
        produced.write_bytes(_FLOAT_CACHE[reuse])
        log = "onnx2tf: float32 model reused from the previous attempt\n"
    else:
        res = subprocesses.run(cmd, "onnx2tf", cwd=work, env=env)  # own process group, timeout, killed on interrupt
        log = res.stdout + res.stderr
        (workdir / ".onnx2tf.log").write_text(log)
        if res.returncode != 0:
            _raise_onnx2tf_error(log, str(job.target))
        if job.target.precision == "int8" and float32.is_file():
            _FLOAT_CACHE.clear()  # one model at a time: the attempts of this conversion
            _FLOAT_CACHE[reuse] = float32.read_bytes()
    if not produced.is_file():  # onnx2tf can exit 0 without writing a variant
        noise = ("W0000", "I0000", "WARNING: All log messages")  # TensorFlow's start-up lines say nothing here
        tail = "\n".join([ln for ln in log.strip().splitlines() if not ln.startswith(noise)][-3:])
        raise ConversionError(f"onnx2tf exited 0 but did not write {produced.name}: {_strip_ansi(tail)}")
    final = workdir / "model.tflite"
    if job.stages_dir is not None and (mixed or key != "fp32"):  # onnx2tf's float32 NHWC model, before fp16/int8
        job.keep_stage("layout", {"model": produced if mixed else float32}, "fp32",
                       native_io(produced if mixed else float32, src.io, "NCHW" if keep_nchw else "NHWC", "NHWC"))
    os.replace(produced, final)
    _remove_tree(work)
    (workdir / ".onnx2tf.log").unlink(missing_ok=True)
    perm = job.options.get("onnx2tf_perm", TRANSPOSE_PERMS[0])
    notes = [f"onnx2tf post-process transpose {perm} on {', '.join(fixes)}"] if fixes else []
    options = {"io_layout": "nchw" if keep_nchw else "nhwc", "io_dtype": io_dtype}
    if rewritten:
        options["int8_friendly_rewrites"] = rewritten
    layout = "NCHW" if keep_nchw else "NHWC"
    kept: tuple[str, ...] = ()
    if mixed:
        from dataclasses import replace

        floats = quantize_keeping_float(final, replace(job, keep_float=(*job.keep_float, *pooled)),
                                        native_io(final, src.io, layout, "NHWC"))
        kept = tuple(n for n in floats.pop("kept_float") if n in job.keep_float)
        options.update(floats)
        options["io_dtype"] = "int8"
        really_pooled = [n for n in options["float_layers"] if n in pooled]
        if really_pooled:
            options["pooled_float_layers"] = really_pooled
            notes.append(f"{len(really_pooled)} layer(s) fed by a global pooling computed in float (squeeze-excite: "
                         "negligible cost, and their narrow calibrated ranges saturate on inputs unlike the "
                         "calibration set; -O pooled_layers=int8 quantizes them)")
        notes.append("mixed precision: onnx2tf float32, then ai-edge-quantizer (int8 IO) with "
                     + ("the kept layers" if kept else "those layers") + " float")
    io = native_io(final, src.io, layout, "NHWC")
    if fixes:
        options.update(onnx2tf_transpose=fixes, onnx2tf_perm=list(perm))
    return ConvertedModel(files={"model": final.name}, io=io, route="onnx2tf+ai-edge-quantizer" if mixed else "onnx2tf",
                          tools=tool_versions("onnx2tf", "tensorflow", "ai_edge_litert", "onnx"),
                          options=options, notes=notes, kept_float=kept)


#: (graph, flags) -> onnx2tf's float32 .tflite bytes, for the keep-float retries of the conversion in progress
_FLOAT_CACHE: dict[str, bytes] = {}


def _float_key(onnx_in: Path, cmd: list[str], work: Path, replace: Path | None) -> str:
    """What onnx2tf's float32 output depends on: the ONNX graph, its flags (paths and the int8 calibration flags
    left out) and the post-process transposes."""
    import hashlib

    h = hashlib.sha256(Path(onnx_in).read_bytes())
    skip = {"-oiqt", "-qt", "per-channel", "-cind", "-i", "-o", "-prf"}
    flags, i = [], 3  # after [python, -m, onnx2tf]
    while i < len(cmd):
        if cmd[i] == "-cind":
            i += 5
            continue
        if cmd[i] in ("-i", "-o", "-prf"):
            i += 2
            continue
        if cmd[i] not in skip:
            flags.append(cmd[i])
        i += 1
    h.update("\0".join(flags).encode())
    if replace is not None:
        h.update(replace.read_bytes())
    return h.hexdigest()


def _output_of(model, node_name: str) -> str:
    return next(n.output[0] for n in model.graph.node if n.name == node_name)


def _strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


def _raise_onnx2tf_error(log: str, target: str):
    clean = _strip_ansi(log)
    op = re.search(r"onnx_op_type:\s*(\S+)", clean)
    node = re.search(r"onnx_op_name:\s*(\S+)", clean)
    if op and node:
        raise UnsupportedOpError(op.group(1), node.group(1), target, "onnx2tf failed on it")
    lines = [ln for ln in clean.strip().splitlines() if ln.strip()]
    raise ConversionError(f"onnx2tf failed: {lines[-1] if lines else 'no output'}")


def _remove_tree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def quantize_keeping_float(model: Path, job: ConversionJob, io: IOSpec) -> dict:
    """Full int8 of a float .tflite with ai-edge-quantizer, leaving ``job.keep_float`` layers float."""
    require("ai_edge_quantizer")
    import contextlib
    import io as _io

    from ai_edge_quantizer import quantizer, recipe

    kept = map_onnx_nodes(model, job)
    entries = list(recipe.static_wi8_ai8())
    for tensor in kept.values():
        # ai-edge-quantizer matches the op scope: its output tensor names joined by ";", plus a trailing ";"
        entries.append({"regex": "^" + re.escape(tensor) + ";$", "operation": "*", "algorithm_key": "no_quantize"})
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_path=str(model)).get_signature_list()["serving_default"]["inputs"]
    names = [t.name if t.name in signature else signature[i] for i, t in enumerate(job.source.io.inputs)]
    data = [{n: _to_layout_of(s[src.name], src, t) for n, src, t in zip(names, job.source.io.inputs, io.inputs)}
            for s in job.calibration]
    with contextlib.redirect_stderr(_io.StringIO()):  # tqdm bars
        q = quantizer.Quantizer(str(model), entries)
        result = q.quantize(q.calibrate({"serving_default": data}, num_threads=2))
    result.export_model(str(model), overwrite=True)
    float_ops = float_weighted_outputs(model)  # read back: which ops still have float weights
    really = [n for n in job.keep_float if kept.get(n) in float_ops]
    return {"quantizer": "ai-edge-quantizer static_wi8_ai8", "float_layers": really, "kept_float": really}


def float_weighted_outputs(model: Path) -> set[str]:
    """Output tensor names of the conv/fully-connected ops of a .tflite file whose weights are float."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    out = set()
    for op in it._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op["inputs"]) < 2:
            continue
        weight = tensors.get(int(op["inputs"][1]))
        if weight is not None and np.dtype(weight["dtype"]) in (np.float32, np.float16):
            out.add(tensors[int(op["outputs"][0])]["name"])
    return out


def _to_layout_of(x: np.ndarray, src: TensorSpec, native: TensorSpec) -> np.ndarray:
    from edgekit.core.iospec import to_layout

    return to_layout(x, src.layout, native.layout)


def map_onnx_nodes(model: Path, job: ConversionJob) -> dict[str, str]:
    """ONNX node name (in ``job.keep_float``) -> output tensor name of the TFLite op with the same weights."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.core.weightmatch import match_by_weights, onnx_weights

    it = Interpreter(model_path=str(model))
    tensors = {t["index"]: t for t in it.get_tensor_details()}

    def filters():
        for op in it._get_ops_details():
            if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op["inputs"]) < 2:
                continue
            try:
                filt = it.get_tensor(int(op["inputs"][1]))
            except ValueError:  # a weight the interpreter cannot hand out (e.g. quantized and freed)
                continue
            yield tensors[int(op["outputs"][0])]["name"], filt

    return match_by_weights(onnx_weights(job.source.model, job.keep_float), filters())


# ---------------------------------------------------------------- litert-torch route


def _convert_litert_torch(job: ConversionJob, workdir: Path) -> ConvertedModel:
    torch = require("torch")
    litert_torch = require("litert_torch")
    src = job.source
    module = src.torch_module.eval()
    example = tuple(torch.from_numpy(job.calibration[0][t.name]) for t in src.io.inputs)
    final = workdir / "model.tflite"
    options = {"io_layout": "nchw", "io_dtype": "float"}
    try:
        if job.target.precision == "int8":
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            q = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
            prepared = prepare_pt2e(torch.export.export(module, example).module(), q)
            with torch.no_grad():
                for s in job.calibration:
                    prepared(*(torch.from_numpy(s[t.name]) for t in src.io.inputs))
            qm = convert_pt2e(prepared, fold_quantize=False)
            edge = litert_torch.convert(qm, example, quant_config=QuantConfig(pt2e_quantizer=q))
            options.update(quantization="pt2e symmetric per-channel int8")
        else:
            edge = litert_torch.convert(module, example)
        edge.export(str(final))
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise ConversionError(f"litert-torch conversion failed: {e}") from e
    return ConvertedModel(files={"model": final.name}, io=native_io(final, src.io, "NCHW", "NCHW"),
                          route="litert-torch",
                          tools=tool_versions("litert_torch", "torch", "ai_edge_litert"), options=options)


# ---------------------------------------------------------------- IO of a .tflite file


def native_io(path: Path, source_io: IOSpec, input_layout: str, output_layout: str) -> IOSpec:
    """IO spec of a .tflite file, matched to the source's tensors by name (then by order).

    ``input_layout``/``output_layout`` are the layouts the route writes for 4-D tensors; they are
    checked against the shapes, since C == H == W makes shapes alone ambiguous."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    ops = {o["op_name"] for o in it._get_ops_details()}
    flex = sorted(o for o in ops if o.startswith("Flex") or o == "CUSTOM")
    if flex:
        raise UnsupportedOpError(flex[0], "(tflite graph)", "tflite",
                                 "needs TensorFlow Select ops that LiteRT cannot run")
    return IOSpec(_match(it.get_input_details(), source_io.inputs, input_layout),
                  _match(it.get_output_details(), source_io.outputs, output_layout))


def _match(details: list[dict], specs, layout4d: str) -> tuple[TensorSpec, ...]:
    by_name = {d["name"]: d for d in details}
    ordered = [by_name.get(s.name) for s in specs]
    if None in ordered:
        ordered = sorted(details, key=lambda d: d["index"])
    out = []
    for spec, d in zip(specs, ordered):
        shape = tuple(int(v) for v in d["shape"])
        layout = layout4d if len(shape) == 4 and spec.is_image else spec.layout
        expected = spec.with_layout(layout).shape if spec.is_image else spec.shape
        if tuple(expected) != shape:
            raise ConversionError(f"tflite tensor {d['name']} has shape {shape}; expected {tuple(expected)} "
                                  f"({layout}) for source tensor {spec.name}")
        scale, zp = d["quantization"]
        dtype = np.dtype(d["dtype"]).name
        out.append(TensorSpec(name=d["name"], shape=shape, dtype=dtype, layout=layout, color=spec.color,
                              mean=spec.mean, std=spec.std, value_range=spec.value_range, kind=spec.kind,
                              quant=(float(scale), int(zp)) if dtype in ("int8", "uint8") else None))
    return tuple(out)
