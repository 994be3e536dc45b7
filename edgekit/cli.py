"""The ``edgekit`` command line. It parses arguments, calls the Python API and prints; it is the
only place that turns errors into exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from edgekit.core import interrupts
from edgekit.errors import EdgekitError

out = Console()
err = Console(stderr=True)


def _emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _fmt_bool(v) -> str:
    return {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]?[/]"}[v]


#: flags shared by several commands, declared once
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of tables.")
input_shape_option = click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:1x3xHxW",
                                  help="Fix dynamic input dims (repeat per input).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekit")
def cli():
    """Convert, validate, run and profile small vision models for edge devices.

    \b
    Examples:
      edgekit inspect models/portrait-seg/student.onnx
      edgekit convert models/portrait-seg/student.onnx --target onnx-int8
      edgekit convert student.onnx --target tflite-int8 --input-shape image:1x3x144x256
      edgekit run out/student-onnx-int8 --threads 2
      edgekit validate out/student-onnx-int8
      edgekit doctor
    """


@cli.command()
@click.argument("model")
@input_shape_option
@json_option
def inspect(model, input_shapes, as_json):
    """IO, parameters, MACs per op type, op histogram and per-target op support of MODEL.

    \b
    Example:  edgekit inspect student.onnx --input-shape image:1x3x256x256
    """
    from edgekit.api import inspect as do_inspect

    info = do_inspect(model, list(input_shapes))
    if as_json:
        return _emit_json(info.to_dict())
    out.print(f"[bold]{info.path}[/]  sha256 {info.sha256[:12]}  params {info.params:,}  MACs {info.macs / 1e6:.1f} M")
    io = Table("direction", "name", "shape", "dtype", "layout", "pre/post-processing", title="IO")
    for direction, specs in (("in", info.io.inputs), ("out", info.io.outputs)):
        for t in specs:
            pre = f"{t.color} range {list(t.value_range)} mean {list(t.mean)} std {list(t.std)}" if direction == "in" \
                else f"kind {t.kind}"
            if direction == "in" and t.preprocessing:
                pre += f" ({t.preprocessing})"
            io.add_row(direction, t.name, "x".join(map(str, t.shape)), t.dtype, t.layout, pre)
    out.print(io)
    for t in info.io.inputs:
        if t.preprocessing == "assumed":
            out.print(f"  input {t.name}: pre-processing assumed (no model card states it); quantized targets need "
                      "--preprocess, --mean/--std/--value-range/--color or --calib", highlight=False, soft_wrap=True)
    formats = list(info.support)
    ops = Table("op", "count", "MMACs", *formats, title="Ops (support per target format)")
    for op, count in info.op_histogram.items():
        ops.add_row(op, str(count), f"{info.macs_by_op.get(op, 0) / 1e6:.2f}",
                    *(_fmt_bool(info.support[f][op]) for f in formats))
    out.print(ops)


@cli.command()
@click.argument("model")
@click.option("--target", "-t", required=True, help="e.g. onnx-fp32, onnx-int8, tflite-int8, openvino-fp16.")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Artifact directory (default out/NAME-TARGET).")
@click.option("--calib", type=click.Path(path_type=Path), help="Folder of images or .npy batch for calibration.")
@input_shape_option
@click.option("--option", "-O", "target_options", multiple=True, metavar="KEY=VALUE",
              help="A converter option of the target's backend (repeatable); --help-target T lists them.")
@click.option("--help-target", is_flag=True, help="List the options of --target's backend and exit.")
@click.option("--calib-samples", default=32, show_default=True, help="Calibration samples to use.")
@click.option("--preprocess", type=click.Choice(["imagenet", "unit", "signed", "raw255"], case_sensitive=False),
              help="How images become the input: imagenet (mean/std of ImageNet on [0,1]), unit ([0,1]), "
                   "signed ([-1,1]), raw255 ([0,255]). Overrides the model card.")
@click.option("--mean", metavar="M[,M,M]", help="Per-channel mean subtracted (in --value-range units).")
@click.option("--std", metavar="S[,S,S]", help="Per-channel std divided by.")
@click.option("--value-range", metavar="LO,HI", help="Pixel 0..255 maps to LO..HI before mean/std (e.g. 0,255).")
@click.option("--color", type=click.Choice(["RGB", "BGR"], case_sensitive=False), help="Channel order.")
@click.option("--confirm-preprocess", is_flag=True,
              help="Quantize even though the model's first layer suggests another pre-processing.")
@click.option("--keep-stages", is_flag=True, help="Keep each conversion step's product in the artifact (stages/), "
              "so that edgekit bisect names the step that introduced an error without rebuilding them.")
@json_option
def convert(model, target, output, calib, input_shapes, target_options, help_target, calib_samples, preprocess, mean,
            std, value_range, color, confirm_preprocess, keep_stages, as_json):
    """Convert MODEL (ONNX file or PyTorch reference) to TARGET and prove parity.

    \b
    Examples:
      edgekit convert student.onnx --target onnx-int8 --calib photos/
      edgekit convert resnet18.onnx --target openvino-int8 --preprocess imagenet
      edgekit convert student.onnx --target tflite-int8 -O io_dtype=int8
      edgekit convert x.onnx --target tflite --help-target        (list tflite's -O options)
      edgekit convert mypkg.models:build --target onnx-fp32 --input-shape 1x3x256x256
    Quantized targets need to know the pre-processing: from the model card, the flags above or --calib;
    they refuse to guess. The artifact is written only if its parity gate passes.
    """
    from edgekit.core import preprocess as preprocessing
    from edgekit.core.artifact import check_output
    from edgekit.core.conversion import convert as do_convert

    if help_target:
        return _print_target_options(target, as_json)
    if output is not None:  # refuse a place holding the user's files before any work (checked again at the end)
        check_output(output, protect=[model, calib])
    stated = preprocessing.parse(preprocess, mean=mean, std=std, value_range=value_range, color=color)
    options = _parse_key_values(target_options, "-O")
    import contextlib

    # converters' own progress output (NNCF's bars) must not corrupt --json on stdout
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with quiet, err.status("converting") as status:
        art = do_convert(model, target, output, calib=calib, input_shapes=list(input_shapes),
                         calib_samples=calib_samples, options=options,
                         progress=lambda msg: status.update(msg), preprocess=stated,
                         confirm_preprocess=confirm_preprocess, keep_stages=keep_stages)
    if as_json:
        return _emit_json(art.to_dict())
    out.print(f"[green]✓[/] {art.target} -> {art.path}  ({art.size_bytes / 1024:.0f} KiB, route {art.route})")
    for t in art.source_io.inputs:
        if t.is_image:
            out.print(f"  input {t.name}: {preprocessing.describe(t)}", highlight=False, soft_wrap=True)
    data = art.parity.get("data") or {}
    if data:
        out.print(f"  validated on: {data.get('calibration')} (calibration) + {data.get('held_back')} (held back)",
                  highlight=False, soft_wrap=True)
    _print_parity(art.parity)
    for note in art.notes:
        out.print(f"  note: {note}", highlight=False, soft_wrap=True, markup=False)


def _parse_key_values(pairs, flag: str) -> dict[str, str]:
    """``("a=1", "b=x")`` -> ``{"a": "1", "b": "x"}`` (values are checked by whoever declares the keys)."""
    from edgekit.errors import InputError

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} takes KEY=VALUE, got '{pair}'")
        parsed[key.strip()] = value.strip()
    return parsed


def _print_target_options(target: str, as_json: bool) -> None:
    """``--help-target``: the declared options of a target's backend (``tflite`` or ``tflite-int8``)."""
    from edgekit.backends import registry

    backend = registry.backend(target.strip().lower().split("-")[0])
    if as_json:
        return _emit_json({"format": backend.format, "runtime": backend.runtime, "targets": backend.targets,
                           "options": [{"name": o.name, "type": o.type, "choices": list(o.choices),
                                        "default": o.default, "precisions": list(o.precisions), "help": o.help}
                                       for o in backend.options]})
    t = Table("option", "values", "default", "targets", "help",
              title=f"{backend.format} ({backend.runtime}) converter options: -O KEY=VALUE")
    for o in backend.options:
        t.add_row(o.name, "|".join(map(str, o.choices)) or o.type, "-" if o.default is None else str(o.default),
                  ", ".join(f"{backend.format}-{p}" for p in o.precisions) or "all", o.help)
    out.print(t)


def _print_parity(parity: dict) -> None:
    t = Table("output", "max |diff|", "mean |diff|", "cosine", "mask IoU", "PSNR dB", "result",
              title=f"parity vs {parity.get('reference', 'ONNX Runtime fp32')} ({parity['samples']} inputs, "
                    f"{parity['precision_class']} tolerances)")
    for o in parity["outputs"]:
        t.add_row(o["name"], f"{o['max_abs']:.3g}", f"{o['mean_abs']:.3g}", f"{o['cosine']:.6f}",
                  "-" if o["iou"] is None else f"{o['iou']:.4f} (min {o['iou_min']:.4f})" + (
                      f", {o['classes']} classes, agreement {o['agreement']:.4f}" if o.get("agreement") is not None
                      else ""),
                  "-" if o["psnr"] is None else f"{o['psnr']:.1f}",
                  "[red]" + "; ".join(o["failures"]) + "[/]" if o["failures"] else "[green]pass[/]")
    out.print(t)
    if parity.get("kept_float"):
        out.print(f"  kept in float: {', '.join(parity['kept_float'])}")
    temporal = parity.get("temporal")
    if temporal:
        for o in temporal["outputs"]:
            verdict = "; ".join(o["failures"]) or "pass"
            out.print(f"  temporal ({temporal['frames']} frames): {o['name']} dtSSD {o['dtssd']:.3f}, flicker "
                      f"{o['flicker_artifact']:.4f} vs reference {o['flicker_reference']:.4f}: {verdict}",
                      highlight=False, soft_wrap=True)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--input", "input_file", type=click.Path(path_type=Path), help=".npy array or an image file.")
@click.option("--threads", default=1, show_default=True)
@click.option("--delegate", default="cpu", show_default=True, help="cpu, gpu, npu, ... (per runtime).")
@click.option("--runs", default=50, show_default=True, help="Timed runs after 10 warm-up runs.")
@click.option("--placement", is_flag=True, help="Show which unit ran how many ops.")
@click.option("--spin/--no-spin", default=None, help="Let the runtime's worker threads busy-wait between runs "
              "(default: off, fit for a device with other work; the settings applied are reported).")
@click.option("--under-load", is_flag=True, help="Also time under background load (busy processes on the cores "
              "left free, plus one), interleaved with the quiet runs.")
@click.option("--frame", help="Also time a camera frame of this size end to end, per stage (resize, colour, "
              "normalize, model, upsample): 480p, 720p, 1080p or HEIGHTxWIDTH.")
@click.option("--sustained", type=click.FloatRange(min=1.0, max=3600.0), metavar="SECONDS",
              help="Also run back to back this long (the whole frame with --frame) and report p50/p90 per 5 s "
              "window and their drift (throttling, noisy neighbours).")
@click.option("--save", type=click.Path(path_type=Path),
              help="Save outputs to this .npz file (its folder must exist; an existing file is replaced whole).")
@click.option("--audit", "audit", is_flag=True, help="Show what each op really ran as, against the target's intent.")
@click.option("--require", "require", multiple=True, type=click.Choice(["fast", "delegate", "precision"]),
              help="With --audit: any op off the fast path / off the delegate / in another precision is an error "
                   "(exit 8; repeatable, for CI).")
@json_option
def run(artifact, input_file, threads, delegate, runs, placement, spin, under_load, frame, sustained, save, audit,
        require, as_json):
    """Run ARTIFACT on an input (or a generated one) and report latency and outputs.

    \b
    Examples:
      edgekit run out/student-onnx-int8 --input face.jpg --threads 2 --placement
      edgekit run out/student-tflite-int8 --audit --require fast --require precision
    """
    from edgekit.api import benchmark
    from edgekit.apps.profiling.latency import parse_frame
    from edgekit.core.audit import Audit

    result = benchmark(artifact, input_file, threads=threads, delegate=delegate, runs=runs, placement=placement,
                       save=save, audit=audit or bool(require), spin=spin, under_load=under_load,
                       frame=parse_frame(frame) if frame else None, sustained=sustained)
    if as_json:
        _emit_json(result)
        if require:
            Audit.from_dict(result["audit"]).require(tuple(require))
        return
    lat = result["latency"]
    out.print(f"{artifact}: p50 {lat['p50_ms']:.2f} ms  p90 {lat['p90_ms']:.2f} ms  ({runs} runs, {threads} "
              f"thread(s), {delegate})")
    if "latency_under_load" in result:
        busy = result["latency_under_load"]
        out.print(f"under load ({result['load']['cpu']} CPU + {result['load']['memory']} memory hog processes): "
                  f"p50 {busy['p50_ms']:.2f} ms  p90 {busy['p90_ms']:.2f} ms  (interleaved with the quiet runs)")
    if result.get("frame_note"):
        from rich.markup import escape

        out.print(f"[yellow]note:[/] no camera frame timed: {escape(result['frame_note'])}", highlight=False,
                  soft_wrap=True)
    if result.get("frame"):
        f = result["frame"]
        whole = f["end_to_end"]["p50_ms"]
        out.print(f"{f['frame'][0]}x{f['frame'][1]} frame end to end: p50 {whole:.2f} ms  p90 "
                  f"{f['end_to_end']['p90_ms']:.2f} ms; model only p50 {f['model']['p50_ms']:.2f} ms "
                  f"({100 * f['model_share']:.0f}%); stages "
                  + ", ".join(f"{k} {v:.2f}" for k, v in f["stages_p50_ms"].items())
                  + f" (sum {f['stage_sum_ms']:.2f} ms, {100 * f['stage_sum_ms'] / whole:.0f}% of the whole)",
                  highlight=False, soft_wrap=True)
        if "under_load" in f:
            q, b = f["under_load"]["quiet"], f["under_load"]["loaded"]
            out.print(f"whole frame under load: p50 {b['p50_ms']:.2f} ms  p90 {b['p90_ms']:.2f} ms  (quiet, "
                      f"interleaved: p50 {q['p50_ms']:.2f}  p90 {q['p90_ms']:.2f})", highlight=False, soft_wrap=True)
    if "sustained" in result:
        s = result["sustained"]
        out.print(f"sustained {s['seconds']:.0f} s ({s['what']}, {s['runs']} runs): p50/p90 per {s['window_s']:g} s "
                  "window " + ", ".join(f"{w['p50_ms']:.2f}/{w['p90_ms']:.2f}" for w in s["windows"])
                  + (f"; drift (last/first window) p50 {s['drift_p50']:.2f}x, p90 {s['drift_p90']:.2f}x"
                     if s["drift_p50"] is not None else ""), highlight=False, soft_wrap=True)
    ro = result["run_options"]
    out.print(f"threads: {ro['threads']}, spin: {ro['spin']}"
              + "".join(f", {k}={v}" for k, v in ro["settings"].items()), highlight=False, soft_wrap=True)
    t = Table("output", "shape", "min", "max", "mean")
    for k, v in result["outputs"].items():
        t.add_row(k, "x".join(map(str, v["shape"])), f"{v['min']:.4g}", f"{v['max']:.4g}", f"{v['mean']:.4g}")
    out.print(t)
    if placement:
        p = result["placement"]
        out.print("placement: " + ", ".join(f"{u}: {n} ops" for u, n in p["ops_per_unit"].items()))
    if "audit" in result:
        report = Audit.from_dict(result["audit"])
        _print_audit(report, every_op=False)
        if require:
            report.require(tuple(require))


def _print_audit(report, every_op: bool) -> None:
    """The audit's summary line and its table (every op, or only those that deviate)."""
    s = report.summary()
    dev = ", ".join(f"{k} {n}" for k, n in s["deviations"].items())
    out.print(f"audit ({report.runtime}, {report.target}): {s['fast']}/{s['ops']} ops on the fast path; "
              f"deviations: {dev}; precision: {', '.join(f'{k} {n}' for k, n in s['by_precision'].items())}",
              highlight=False, soft_wrap=True)
    rows = report.ops if every_op else report.deviating()
    if rows:
        t = Table("op", "name", "ran as", "intended", "deviation", "why",
                  title="every op" if every_op else "ops that deviate")
        for o in rows:
            t.add_row(o.op, o.name[-32:], f"{o.unit} {o.precision} ({o.kernel})",
                      f"{o.intended_unit} {o.intended_precision}", ", ".join(o.deviations()) or "-", o.why)
        out.print(t)
    for limit in report.limits:
        out.print(f"  limit: {limit}", highlight=False)


@cli.command("audit")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("other", required=False, type=click.Path(path_type=Path))
@click.option("--threads", default=1, show_default=True)
@click.option("--delegate", default="cpu", show_default=True, help="cpu, gpu, npu, ... (per runtime).")
@click.option("--recorded", is_flag=True, help="Use the audits recorded at conversion instead of auditing here.")
@click.option("--require", "require", multiple=True, type=click.Choice(["fast", "delegate", "precision"]),
              help="Any op deviating this way is an error (exit 8; repeatable).")
@json_option
def audit_cmd(artifact, other, threads, delegate, recorded, require, as_json):
    """What each op of ARTIFACT really runs as, against what its target intends; with OTHER, what changed
    between two artifacts (or one artifact recorded under two toolchains: --recorded).

    \b
    Examples:
      edgekit audit out/student-tflite-int8
      edgekit audit out/student-tflite-int8 out/student-tflite-int8-new --recorded
    """
    from edgekit.api import audit as do_audit
    from edgekit.core.artifact import Artifact
    from edgekit.core.audit import Audit, compare, describe_moves
    from edgekit.errors import AuditError

    def one(path):
        if recorded:
            art = Artifact.load(path)
            if not art.audit:
                raise AuditError(f"{path} records no audit (made by an older edgekit, or its runtime cannot run "
                                 "here); drop --recorded to audit it on this machine")
            return Audit.from_dict(art.audit)
        return do_audit(path, threads=threads, delegate=delegate)

    first = one(artifact)
    if other is None:
        if as_json:
            _emit_json(first.to_dict())
        else:
            _print_audit(first, every_op=True)
        if require:
            first.require(tuple(require))
        return
    diff = compare(first, one(other))
    if as_json:
        return _emit_json(diff)
    lines = describe_moves(diff) or ["no op moved: same units, precisions and fast path"]
    out.print(f"{artifact} -> {other}:")
    for line in lines:
        out.print(f"  {line}", highlight=False, soft_wrap=True)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--reference", type=click.Path(path_type=Path), help="Compare against this model instead.")
@click.option("--data", type=click.Path(path_type=Path), help="Folder of images or .npy (default: generated).")
@click.option("--samples", default=16, show_default=True)
@click.option("--temporal", is_flag=True, help="Also run a generated 100-frame clip: dtSSD and flow-warped "
              "flicker against the reference.")
@json_option
def validate(artifact, reference, data, samples, temporal, as_json):
    """Re-run the parity gate of ARTIFACT on fresh inputs (exit code 6 when it fails).

    \b
    Examples:
      edgekit validate out/student-tflite-int8 --data photos/
      edgekit validate out/student-ncnn-int8 --temporal      (also: does it flicker more than its source?)
    """
    from edgekit.api import validate as do_validate

    report = do_validate(artifact, reference, data, samples, raise_on_fail=False, temporal=temporal)
    if as_json:
        _emit_json(report.to_dict())
    else:
        _print_parity(report.to_dict())
    if not report.passed:
        import shlex

        from edgekit.errors import ParityError

        ref = f" --reference {shlex.quote(str(reference))}" if reference else ""
        raise ParityError(f"parity gate failed for {artifact}: " + "; ".join(report.failures) + " (to find the "
                          f"layer that diverges: edgekit bisect {shlex.quote(str(artifact))}{ref})", report=report)


@cli.command()
@click.option("--device", help="Check this device profile end to end instead (reach, its python and edgekit, the "
              "runtimes its targets need), without sweeping.")
@json_option
def doctor(device, as_json):
    """List each backend: installed or not, versions, devices/delegates it sees here."""
    from edgekit.backends import doctor as doc

    if device:
        from edgekit.apps.profiling.device import load_profile
        from edgekit.apps.profiling.ssh import device_doctor

        info = device_doctor(load_profile(device))
        if as_json:
            return _emit_json(info)
        for key, value in info.items():
            if key == "runtimes":
                value = ", ".join(f"{f} ({', '.join(f'{p} {v}' for p, v in r['packages'].items())})"
                                  for f, r in value.items())
            out.print(f"{key}: {value}", highlight=False, soft_wrap=True)
        return None
    rows = doc.report()
    if as_json:
        return _emit_json(doc.to_dict(rows))
    t = Table("backend", "runtime", "installed", "versions", "devices here", "note",
              title=f"edgekit doctor ({doc.system()['platform']})")
    for r in rows:
        versions = ", ".join(f"{k} {v or '-'}" for k, v in r.packages.items())
        t.add_row(r.name, r.runtime, _fmt_bool(r.installed), versions, ", ".join(r.devices) or "-", r.note)
    out.print(t)


@cli.command()
@click.option("--model", type=click.Path(path_type=Path), help="Default: the bundled portrait-seg student.")
@click.option("--target", "targets", multiple=True, help="Targets (default: every one installed here).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("out/demo"), show_default=True)
@click.option("--runs", default=50, show_default=True)
@json_option
def demo(model, targets, output, runs, as_json):
    """Convert the bundled student to every implemented target; one table of size, parity, latency."""
    from edgekit.apps.profiling.matrix import BUNDLED_MODEL, available_targets, run_matrix

    model = model or BUNDLED_MODEL
    targets = list(targets) or available_targets()
    with err.status("demo") as status:
        rows = run_matrix(model, targets, [(256, 256)], output, runs=runs, progress=lambda m: status.update(m))
    if as_json:
        return _emit_json([r.to_dict() for r in rows])
    t = Table("target", "size KiB", "parity", "mask IoU", "max |diff|", "p50 ms 1T", "p50 ms 2T",
              title=f"{model} at 256x256 -> {output}")
    for r in rows:
        t.add_row(r.target, f"{r.size_kib:.0f}", r.parity if not r.error else f"[red]{r.error}[/]",
                  "-" if r.iou is None else f"{r.iou:.4f}", f"{r.max_abs:.2g}",
                  *(f"{r.p50_ms[n]:.2f}" if n in r.p50_ms else ("n/a" if r.note else "-") for n in (1, 2)))
    out.print(t)
    for r in rows:
        if r.note:
            out.print(f"  {r.target}: {r.note}")
    if any(r.error for r in rows):
        raise EdgekitError("some targets failed; see the table")


@cli.command()
@click.option("--device", "-d", "devices", multiple=True, help="Device profile id (profiles/devices/ID.yaml) or a "
              "path; repeat it to sweep several devices at once (a farm: one worker per device).")
@click.option("--farm", type=click.Path(path_type=Path), help="A farm file (edgekit schema farm) listing the devices "
              "to sweep at once.")
@click.option("--model", "models", multiple=True, help="A model file or a name from `edgekit models list`; repeat "
              "it to compare candidates by task quality (default: the profile's models, else the bundled student).")
@click.option("--eval-data", type=click.Path(path_type=Path), help="Task quality on this folder: images with masks "
              "(images/ + masks/, or NAME.jpg + NAME_mask.png); with --eval-reference, images without masks.")
@click.option("--eval-reference", type=click.Path(path_type=Path), help="Task quality as agreement with this model "
              "on unlabeled images (--eval-data, or the reserved real portraits).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out/profile"), show_default=True)
@click.option("--config-dir", type=click.Path(path_type=Path), help="Where the app config goes "
              "(default profiles/configs/).")
@click.option("--delegate-lib", "delegate_libs", multiple=True, metavar="UNIT=PATH",
              help="Library of a delegate the profile names (e.g. gpu=/path/libdelegate.so); a profile file "
                   "never names a library itself.")
@click.option("--prune", is_flag=True, help="Measure only the points whose predicted latency could make them the "
              "choice or its fallback (edgekit predict's model, refitted as points come); says how many it saved.")
@click.option("--thorough", is_flag=True, help="Also run the choice and each rung of its ladder back to back under "
              "load (the whole frame) and report drift per window; a worst window over the budget is noted.")
@click.option("--sustained", "sustained_s", type=click.FloatRange(min=1.0, max=3600.0), default=30.0,
              show_default=True, metavar="SECONDS", help="How long each --thorough run lasts.")
@json_option
def profile(devices, farm, models, eval_data, eval_reference, out_dir, config_dir, delegate_libs, prune, thorough,
            sustained_s, as_json):
    """Sweep a device profile, pick the best configuration under its frame budget, write the app config.

    \b
    Examples:
      edgekit profile --device local-cpu
      edgekit profile --device android-gpu --model student.onnx
      edgekit profile --device local-cpu --device pi.yaml --device jetson.yaml    # a farm, swept at once
    Interrupted sweeps resume: finished points are kept in OUT/DEVICE/points.jsonl.
    """
    model = models[0] if len(models) == 1 else None
    if farm or len(devices) > 1:
        from edgekit.apps.profiling.farm import run_farm_cli

        if len(models) > 1 or eval_data or eval_reference:
            raise click.UsageError("a farm sweeps one --model; compare models on one device at a time")

        return run_farm_cli(devices, farm, model, out_dir, config_dir, delegate_libs, as_json, out, err, prune)
    if not devices:
        raise click.UsageError("give --device ID (repeat it for several devices) or --farm FILE")
    device = devices[0]
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekit.apps.profiling.profile import profile_device

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not err.is_terminal) as bar:
        task = bar.add_task("sweep", total=None)
        result = profile_device(device, model, out_dir, config_dir,
                                progress=lambda label, i, n: bar.update(task, completed=i, total=n,
                                                                        description=label),
                                delegate_libs=list(delegate_libs), prune=prune, thorough=thorough,
                                sustained_s=sustained_s, models=models, eval_data=eval_data,
                                eval_reference=eval_reference)
    if as_json:
        return _emit_json(result.to_dict())
    t = Table("point", "p50 ms", "p90 ms", "p50 loaded", "p90 loaded", "frame p90", "frame p90 loaded", "peak MB",
              "quality", "task IoU", "",
              title=f"{result.profile.id}: budget "
              f"{result.choice.budget_ms:.1f} ms, sweep {result.wall_s:.0f} s")
    front = {(p.model_sha256, p.key) for p in result.choice.front}
    several = len({p.model_sha256 for p in result.points}) > 1
    from edgekit.apps.profiling.choose import same_point

    def name(p) -> str:
        return f"{p.model} {p.label()}" if several else p.label()

    for p in result.points:
        mark = "[red]chosen[/]" if same_point(p, result.choice.chosen) else (
            "fallback" if same_point(p, result.choice.fallback) else
            ("front" if (p.model_sha256, p.key) in front else ""))
        if p.ok:
            t.add_row(name(p), f"{p.p50_ms:.2f}", f"{p.tail_ms:.2f}" + ("" if p.p90_ms is not None else " (p95)"),
                      *((f"{p.load_p50_ms:.2f}", f"{p.load_p90_ms:.2f}") if p.loaded else ("-", "-")),
                      *(f"{v:.2f}" if v is not None else "-" for v in (p.e2e_p90_ms, p.load_e2e_p90_ms)),
                      f"{p.peak_memory_mb or 0:.0f}",
                      "-" if p.quality is None else f"{p.quality:.4f}",
                      "-" if p.task_iou is None else f"{p.task_iou:.4f}", mark)
        else:
            t.add_row(name(p), "-", "-", "-", "-", "-", "-", "-", "-", "-", f"[red]{p.error[:60]}[/]")
    out.print(t)
    out.print(result.choice.why)
    ran = [result.choice.chosen, *(q for q, _ in result.choice.ladder)] if result.choice.chosen else []
    for i, p in enumerate(ran):
        if p.sustained:
            s = p.sustained
            out.print(f"sustained {s['seconds']:.0f} s under load ({'choice' if i == 0 else f'rung {i}'} {p.label()}): "
                      f"{s['what']} p90 per window " + ", ".join(f"{w['p90_ms']:.2f}" for w in s["windows"])
                      + (f"; drift p90 {s['drift_p90']:.2f}x" if s.get("drift_p90") is not None else ""),
                      highlight=False, soft_wrap=True)
    for note in result.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    out.print(f"config: {result.config_path or '(none: nothing fits)'}   report: {result.report_path}")
    if result.config_path is None:
        raise EdgekitError(result.choice.why)


@cli.command()
@click.option("--config", "-c", "config", required=True, type=click.Path(path_type=Path, exists=True),
              help="Recipe YAML (see models/portrait-seg/distill.yaml).")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint.pt.")
@click.option("--nproc", default=1, show_default=True, help="CPU processes (torch.distributed, gloo).")
@click.option("--teacher-module", metavar="PKG.MOD:FACTORY", help="A teacher given as code (teacher.kind: module); "
              "a recipe file alone cannot name code to import.")
@json_option
def distill(config, resume, nproc, teacher_module, as_json):
    """Train a student from a teacher (pixelwise KL, pairwise affinity, attention transfer).

    \b
    Examples:
      edgekit distill --config models/portrait-seg/distill.yaml
      edgekit distill --config recipe.yaml --nproc 2 --resume
    Ends with the student's mask IoU / boundary F on the held-out set and OUTPUT/student.onnx.
    """
    from edgekit.apps.train.distill import distill as run_distill
    from edgekit.apps.train.distill import distill_distributed
    from edgekit.apps.train.recipe import load_recipe

    recipe = load_recipe(config, teacher_module=teacher_module)  # validated before anything trains
    if nproc > 1:
        result = distill_distributed(recipe, config, nproc, resume, teacher_module)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err) as bar:
            tasks = {}

            def show(what, i, n, loss):
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=n)
                bar.update(tasks[what], completed=i, description=f"{what} loss {loss:.3f}")
                if not err.is_terminal and (i == n or i % max(1, n // 10) == 0):  # logs get a line per 10%
                    err.print(f"{what}: step {i}/{n}, loss {loss:.3f}")

            result = run_distill(recipe, resume=resume, progress=show)
    if as_json:
        return _emit_json(result)
    t = Table("model", "mask IoU", "boundary F", title=f"{recipe.name}: held-out synthetic set")
    for who in ("teacher", "student"):
        if who in result:
            t.add_row(who, f"{result[who]['iou']:.4f}", f"{result[who]['boundary_f']:.4f}")
    out.print(t)
    out.print(f"student: {Path(recipe.output) / 'student.onnx'}")


@cli.command()
@click.argument("pipeline")
@click.option("--device", default="local", show_default=True, help="Where to measure (this machine).")
@click.option("--latency-bound", default=100.0, show_default=True, help="Per-frame latency bound (ms).")
@click.option("--run", "frames", default=0, help="Also run N synthetic 720p frames pipelined vs sequential.")
@click.option("--timeline", type=click.Path(path_type=Path), help="Write a timeline PNG of the run.")
@json_option
def schedule(pipeline, device, latency_bound, frames, timeline, as_json):
    """Place a multi-model pipeline's stages on this machine's compute units and explain the plan.

    \b
    Examples:
      edgekit schedule virtual-background
      edgekit schedule profiles/pipelines/virtual-background.yaml --run 120 --timeline tl.png
    """
    from edgekit.apps.pipeline.schedule import compare, cost_table, synthetic_frames
    from edgekit.apps.pipeline.schedule import schedule as do_schedule

    with err.status("measuring every stage on every unit"):
        s = do_schedule(pipeline, device, latency_bound)
    result = {"plan": s.plan.to_dict(), "costs_ms": {f"{k[0]}@{k[1]}": v for k, v in s.costs.items()},
              "unavailable": {f"{k[0]}@{k[1]}": v for k, v in s.unavailable.items()},
              "units": {u.name: u.description for u in s.units.values()}}
    if frames:
        with err.status(f"running {frames} frames sequentially and pipelined"):
            result["run"] = compare(s, synthetic_frames(frames), timeline=timeline)
    if as_json:
        return _emit_json(result)
    units, rows = cost_table(s)
    t = Table("stage", *units, "placed on", title=f"{s.spec.name}: measured ms per frame")
    for stage, cells, placed in rows:
        t.add_row(stage, *cells, f"[bold]{placed}[/]")
    out.print(t)
    for u in s.units.values():
        out.print(f"  {u.name}: {u.description}")
    out.print(s.plan.why)
    if frames:
        r = result["run"]
        out.print(f"run: {r['frames_out']} frames, pipelined {r['throughput_fps']:.1f} fps vs sequential "
                  f"{r['sequential_fps']:.1f} fps on one thread ({r['speedup']:.2f}x), "
                  f"{r['sequential_library_threads_fps']:.1f} fps with threaded libraries "
                  f"({r['speedup_vs_library_threads']:.2f}x); p50/p95 latency {r['latency_p50_ms']:.1f}/"
                  f"{r['latency_p95_ms']:.1f} ms; outputs equal: {r['outputs_equal']}")


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="OUTPUT.mp4 or a folder.")
@click.option("--config", "-c", "config", required=True, type=click.Path(path_type=Path),
              help="App config from `edgekit profile` (profiles/configs/DEVICE.json).")
@click.option("--effects", "-e", default="blur", show_default=True,
              help="Comma list of: blur, replace, beauty, denoise, lowlight.")
@click.option("--background", type=click.Path(path_type=Path), help="Image or video for the replace effect.")
@click.option("--strength", "strengths", multiple=True, metavar="EFFECT=X", help="e.g. beauty=0.5 (0..1).")
@click.option("--max-frames", type=int)
@click.option("--sequential", is_flag=True, help="One stage after another (no pipelining), for comparison.")
@click.option("--strict", is_flag=True, help="Any deviation from the app config (fallback used, fail-over, a unit "
              "of the chosen runtime unavailable, a config field that disagrees with its artifact) is an error.")
@click.option("--reuse", "reuse", metavar="on|KEY=VALUE,...", help="Segmentation reuse: run the model every k-th frame "
              "and carry the mask between, k adapted to an IoU budget vs every-frame inference: 'on' (the config's "
              "reuse block, or max_k=4,min_iou=0.95) or max_k=N,min_iou=X,method=affine|flow.")
@click.option("--no-reuse", is_flag=True, help="Run the model on every frame even when the config asks for reuse.")
@json_option
def process(input_path, output, config, effects, background, strengths, max_frames, sequential, strict, reuse, no_reuse,
            as_json):
    """Run video pre-processing effects on INPUT (video file, image folder, or camera:N).

    \b
    Examples:
      edgekit process talk.mp4 -o out/talk_blur.mp4 -c profiles/configs/local-cpu.json
      edgekit process camera:0 -o out/cam.mp4 -c profiles/configs/local-cpu.json -e blur,beauty,denoise,lowlight
    Writes OUTPUT and OUTPUT_before_after.png whole or not at all; an existing OUTPUT is replaced only when it
    is edgekit's previous output. The model runs as the app config says; every fallback, fail-over and
    unavailable unit is reported (--strict: an error). A truncated video is processed up to where it breaks.
    """
    import math

    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekit.apps.video.process import EFFECTS
    from edgekit.apps.video.process import process as run_process
    from edgekit.errors import InputError

    parsed = {}
    for item in strengths:
        name, _, value = item.partition("=")
        try:
            parsed[name] = float(value)
        except ValueError as e:
            raise InputError(f"--strength {item}: expected EFFECT=NUMBER") from e
        if name not in EFFECTS or not math.isfinite(parsed[name]) or parsed[name] < 0:
            raise InputError(f"--strength {item}: expected EFFECT=NUMBER with EFFECT one of {', '.join(EFFECTS)} "
                             "and NUMBER >= 0")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--max-frames {max_frames}: expected a count of at least 1")
    from edgekit.apps.video.reuse import describe as describe_reuse
    from edgekit.apps.video.reuse import parse_reuse_option

    if no_reuse and reuse:
        raise InputError("--reuse and --no-reuse contradict each other; give one")
    reuse_arg = False if no_reuse else None if reuse is None else {} if reuse == "on" else parse_reuse_option(reuse)
    bar = Progress(TextColumn("processing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                   disable=not err.is_terminal)  # off a terminal stderr holds only errors
    with bar:
        task = bar.add_task("frames", total=None)
        report = run_process(input_path, output, config, [e.strip() for e in effects.split(",") if e.strip()],
                             parsed, background, max_frames, sequential,
                             progress=lambda n, total: bar.update(task, completed=n, total=total), strict=strict,
                             reuse=reuse_arg)
    if as_json:
        return _emit_json(report.to_dict())
    out.print(f"{report.frames_out} frames -> {report.output} at {report.fps:.1f} fps "
              f"({'sequential' if sequential else 'pipelined'}); before/after: {report.sheet or '(none)'}")
    if report.model:
        m = report.model
        out.print(f"model: {m['target']} ({m['role']}) on {m['delegate']}, {m['threads']} thread(s), "
                  f"{m['resolution'][0]}x{m['resolution'][1]}, unit {m['choice']}")
    out.print(report.plan["why"])
    for choice, why in report.unavailable.items():
        out.print(f"[yellow]unavailable:[/] {escape(choice)}: {escape(why)}", highlight=False, soft_wrap=True)
    for d in report.deviations:
        out.print(f"[red]deviation ({d['kind']}):[/] {escape(d['message'])}", highlight=False, soft_wrap=True)
    for note in report.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    for line in describe_reuse(report.reuse):
        out.print(escape(line), highlight=False, soft_wrap=True)


@cli.group()
def models():
    """Models edgekit can fetch from packages (nothing is downloaded at run time)."""


@models.command("fetch")
@click.argument("name", type=click.Choice(["mediapipe", "photos"]))
def models_fetch(name):
    """Fetch MediaPipe's models (from the mediapipe wheel) or the evaluation photos (face_recognition sdist)."""
    if name == "mediapipe":
        from edgekit.zoo import mediapipe

        for model, path in mediapipe.fetch().items():
            out.print(f"{model}: {path}")
    else:
        from edgekit.core.samples import photos

        for path in photos.fetch():
            out.print(str(path))


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json):
    """Every model edgekit bundles or can fetch: licence, task, size and input resolutions.

    \b
    Examples:
      edgekit models list
      edgekit convert ~/.cache/edgekit/mediapipe/0.10.14/selfie_segmentation.tflite --target ncnn-fp16
    """
    from edgekit.zoo.mediapipe import catalogue

    rows = catalogue()
    if as_json:
        return _emit_json(rows)
    t = Table("model", "task", "licence", "size KiB", "resolutions (HxW)", "source", title="models edgekit knows")
    for r in rows:
        size = f"{r['size_bytes'] / 1024:.0f}" if r["size_bytes"] else "not fetched"
        t.add_row(r["name"], r["task"], r["licence"], size, ", ".join(f"{h}x{w}" for h, w in r["resolutions"]),
                  r["source"])
    out.print(t)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", "-d", required=True, help="Device profile id (profiles/devices/ID.yaml) or a path.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out/profile"), show_default=True,
              help="Where edgekit profile wrote that device's points (OUT/DEVICE/points.jsonl).")
@json_option
def predict(model, device, out_dir, as_json):
    """Predict MODEL's latency for every configuration of a device from the points already measured there.

    \b
    Examples:
      edgekit predict student.onnx --device local-cpu
      edgekit predict other.onnx --device pi.yaml --json
    Kernel-level features (op type, shapes, MACs, bytes moved, fusion) and the device's measured points; the
    expected error (leave-one-out, and for a model never measured) is printed with the predictions.
    """
    from edgekit.apps.profiling.predict import expected_error_line, predict_device

    result = predict_device(model, device, out_dir)
    if as_json:
        return _emit_json(result.to_dict())
    t = Table("configuration", "p50 ms (predicted)", "p90 ms (predicted)", "p50 ms (measured)",
              title=f"{result.device}: {result.model} (from {result.trained_on['points']} points of "
              f"{result.trained_on['models']} model(s))")
    for p in result.predictions:
        t.add_row(p.label(), "-" if p.p50_ms is None else f"{p.p50_ms:.2f}",
                  "-" if p.tail_ms is None else f"{p.tail_ms:.2f}",
                  "-" if p.measured_p50_ms is None else f"{p.measured_p50_ms:.2f}")
    out.print(t)
    out.print(expected_error_line(result.expected_error), highlight=False, soft_wrap=True)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    return None


@cli.command()
@click.argument("name", type=click.Choice(["device-profile", "app-config", "pipeline", "recipe", "farm"]))
def schema(name):
    """Print a published JSON Schema (device profiles, app configs, pipelines, distillation recipes)."""
    from edgekit.core.datafiles import schema as load_schema

    _emit_json(load_schema(name))


@cli.command("diff")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--reference", type=click.Path(path_type=Path), help="Compare against this model instead.")
@click.option("--data", type=click.Path(path_type=Path), help="Folder of images or .npy (default: generated).")
@click.option("--samples", default=4, show_default=True)
@click.option("--threshold", "threshold_db", type=float, help="SQNR (dB) below which a layer diverges "
              "(default: from the target's tolerance class).")
@click.option("--worst", type=int, help="Show only the N layers with the lowest SQNR.")
@click.option("--isolated", type=click.Choice(["low", "all", "none"]), default="low", show_default=True,
              help="Layers whose isolated error (a cut sub-model fed the reference) is measured: those near or "
                   "below the threshold, all, or none.")
@click.option("--overlay", type=click.Path(path_type=Path), help="Also write each layer's SQNR as Model Explorer "
              "node data (JSON) for the reference ONNX graph.")
@click.option("--json", "as_json", is_flag=True)
def diff_command(artifact, reference, data, samples, threshold_db, worst, isolated, overlay, as_json):
    """Per-layer error of ARTIFACT against its fp32 reference, in every tensor its runtime exposes.

    \b
    Example:  edgekit diff out/student-ncnn-int8 --data photos/ --worst 10
    """
    from edgekit.apps.debugger import diff
    from edgekit.apps.debugger.render import diff_lines, diff_table

    with err.status("diff") as status:
        report = diff(artifact, reference, data, samples=samples, threshold_db=threshold_db,
                      isolated=isolated, progress=lambda m: status.update(m))
    if overlay is not None:
        from edgekit.apps.debugger.overlay import write_overlay

        write_overlay(report, overlay)
        err.print(f"wrote the Model Explorer overlay {overlay}", highlight=False, soft_wrap=True)
    if as_json:
        return _emit_json(report.to_dict())
    out.print(diff_table(report, worst))
    for line in diff_lines(report):
        out.print(line, highlight=False, soft_wrap=True)


@cli.command("bisect")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--reference", type=click.Path(path_type=Path), help="Compare against this model instead.")
@click.option("--data", type=click.Path(path_type=Path), help="Folder of images or .npy (default: generated).")
@click.option("--samples", default=4, show_default=True)
@click.option("--threshold", "threshold_db", type=float, help="SQNR (dB) below which a layer diverges.")
@click.option("--no-confirm", is_flag=True, help="Do not re-convert with the culprit kept in float.")
@click.option("--stages", "stages", type=click.Choice(["auto", "kept", "none"]), default="auto", show_default=True,
              help="Stage attribution: the products kept by convert --keep-stages, else rebuilt (auto); kept ones "
                   "only (kept); none.")
@click.option("--json", "as_json", is_flag=True)
def bisect_command(artifact, reference, data, samples, threshold_db, no_confirm, stages, as_json):
    """The first layer where ARTIFACT diverges from its reference, and the first conversion step whose product
    fails; for quantized targets, whether keeping the layer in float restores parity.

    \b
    Example:  edgekit bisect out/student-onnx-int8
    """
    from edgekit.apps.debugger import bisect
    from edgekit.apps.debugger.render import bisect_lines

    with err.status("bisect") as status:
        report = bisect(artifact, reference, data, samples=samples, threshold_db=threshold_db,
                        confirm=not no_confirm, progress=lambda m: status.update(m), stages=stages != "none",
                        rebuild=stages == "auto")
    if as_json:
        return _emit_json(report.to_dict())
    for line in bisect_lines(report):
        out.print(line, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map edgekit errors to one stderr line and an exit code."""
    interrupts.install()
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except EdgekitError as e:
        err.print(f"[red]edgekit: error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as e:  # click turns Ctrl-C into Abort
        if interrupts.terminated() or isinstance(e.__context__, interrupts.Terminated):
            err.print("edgekit: terminated; nothing was written")
            return 143
        err.print("edgekit: interrupted; nothing was written")
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
