"""What pre-processing an image input expects, where that knowledge came from, and a check against the model.

A quantized artifact is calibrated on inputs: if they are pre-processed differently from what the model was
trained on (``[0, 1]`` pixels fed to a model trained on ImageNet-normalized input), every activation range is
wrong and the artifact is wrong on real inputs. So the pre-processing must be *stated*: by the model card
beside the model, by flags (``--preprocess`` presets, ``--mean``, ``--std``, ``--value-range``, ``--color``)
or, for the calibration data itself, by ``--calib``. :func:`resolve` records the source in each input's
:attr:`~edgekit.core.iospec.TensorSpec.preprocessing`.

:func:`check_first_layer` compares what is stated with what the model says about itself: a batch norm right
after the first convolution holds the mean and variance of that convolution's output on the training data.
If the calibration inputs give statistics far from those, and another common pre-processing fits them much
better, the stated pre-processing is probably wrong. When the model has no such batch norm (exporters fold it
into the convolution) the check says "not checked" instead of guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgekit.core.iospec import IOSpec, TensorSpec
from edgekit.errors import InputError

#: preset name -> pre-processing fields (value = (pixel / 255 * (hi - lo) + lo - mean) / std)
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "value_range": (0.0, 1.0),
                 "color": "RGB"},
    "unit": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "value_range": (0.0, 1.0), "color": "RGB"},
    "signed": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "value_range": (-1.0, 1.0), "color": "RGB"},
    "raw255": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "value_range": (0.0, 255.0), "color": "RGB"},
}
FIELDS = ("mean", "std", "value_range", "color")
#: the flags that state pre-processing (named in errors)
FLAGS = "--preprocess imagenet|unit|signed|raw255, --mean/--std/--value-range/--color"
ASSUMED = "assumed"


@dataclass(frozen=True)
class Stated:
    """Pre-processing stated by the user (flags or the ``preprocess`` argument); ``None`` = not stated."""

    preset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    value_range: tuple[float, float] | None = None
    color: str | None = None

    @property
    def given(self) -> bool:
        return any(getattr(self, k) is not None for k in ("preset", *FIELDS))

    def source(self) -> str:
        own = any(getattr(self, k) is not None for k in FIELDS)
        if self.preset and own:
            return f"preset {self.preset} + flags"
        return f"preset {self.preset}" if self.preset else "flags"

    def fields(self, channels: int) -> dict[str, Any]:
        """The pre-processing fields for an input of ``channels`` channels (a preset's three values are
        averaged for a one-channel input; values given by flags must be one per channel, or one for all).

        Raises:
            InputError: flags give another number of values than the input has channels.
        """
        out = dict(PRESETS[self.preset]) if self.preset else {}
        for k in ("mean", "std"):
            if k in out:
                out[k] = _per_channel(out[k], channels, k)
        for k in FIELDS:
            v = getattr(self, k)
            if v is not None:
                out[k] = _per_channel(v, channels, k, average=False) if k in ("mean", "std") else v
        return out


def normalize_pixels(x: np.ndarray, color: str = "RGB", value_range=(0.0, 1.0), mean=(0.0,), std=(1.0,),
                     peak: float = 1.0) -> np.ndarray:
    """Channel-last RGB pixels in ``[0, peak]`` -> the model's values: channels in ``color`` order, mapped to
    ``value_range``, then ``(x - mean) / std``, as float32. The one place images become model inputs
    (calibration, the gate, ``process`` and pipeline kernels all call it)."""
    if color == "BGR":
        x = x[..., ::-1]
    lo, hi = value_range
    x = x.astype(np.float32) * np.float32((hi - lo) / peak) + np.float32(lo)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def frame_to_input(frame_bgr: np.ndarray, hw: tuple[int, int], color: str = "RGB", value_range=(0.0, 1.0),
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> np.ndarray:
    """A uint8 BGR camera frame -> a 1x3xHxW float32 input: area-resized to ``hw``, then
    :func:`normalize_pixels`."""
    import cv2

    h, w = hw
    small = cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_AREA)
    rgb = small[..., ::-1] if color == "BGR" else cv2.cvtColor(small, cv2.COLOR_BGR2RGB)  # BGR: flipped back below
    x = normalize_pixels(rgb, color, value_range, mean, std, peak=255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _numbers(value, what: str, count: int | None = None) -> tuple[float, ...]:
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", ",").split(",") if p]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        nums = tuple(float(p) for p in parts)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be numbers separated by commas, got {value!r}") from e
    if not nums or not all(math.isfinite(v) for v in nums):
        raise InputError(f"{what} must be finite numbers, got {value!r}")
    if count is not None and len(nums) != count:
        raise InputError(f"{what} takes {count} numbers (e.g. 0,255), got {value!r}")
    return nums


def _per_channel(values: tuple[float, ...], channels: int, what: str, average: bool = True) -> tuple[float, ...]:
    if len(values) == channels:
        return tuple(values)
    if len(values) == 1:
        return tuple(values) * channels
    if channels == 1 and average:
        return (float(np.mean(values)),)
    raise InputError(f"--{what} has {len(values)} values; the input has {channels} channels")


def parse(preprocess: str | dict | Stated | None = None, *, mean=None, std=None, value_range=None,
          color: str | None = None) -> Stated:
    """Read what the user stated: a preset name or a dict of fields (``preset``, ``mean``, ``std``,
    ``value_range``, ``color``), plus keyword fields that override it.

    Raises:
        InputError: an unknown preset or key, non-numbers, a zero std, or an empty value range.
    """
    if isinstance(preprocess, Stated):
        base = preprocess
    elif preprocess is None:
        base = Stated()
    elif isinstance(preprocess, str):
        base = Stated(preset=preprocess)
    elif isinstance(preprocess, dict):
        unknown = set(preprocess) - {"preset", *FIELDS}
        if unknown:
            raise InputError(f"preprocess has unknown key(s) {sorted(unknown)}; use preset, {', '.join(FIELDS)}")
        base = Stated(**{k: preprocess.get(k) for k in ("preset", *FIELDS)})
    else:
        raise InputError(f"preprocess must be a preset name or a dict, got {type(preprocess).__name__}")
    fields = {k: v for k, v in (("mean", mean), ("std", std), ("value_range", value_range), ("color", color))
              if v is not None}
    s = replace(base, **fields)
    preset = s.preset.lower() if isinstance(s.preset, str) else s.preset
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown --preprocess '{s.preset}'; presets: {', '.join(PRESETS)}")
    m = _numbers(s.mean, "--mean") if s.mean is not None else None
    sd = _numbers(s.std, "--std") if s.std is not None else None
    if sd is not None and any(v == 0 for v in sd):
        raise InputError(f"--std must not be 0, got {s.std!r}")
    vr = _numbers(s.value_range, "--value-range", 2) if s.value_range is not None else None
    if vr is not None and not vr[0] < vr[1]:
        raise InputError(f"--value-range must be LOW,HIGH with LOW < HIGH, got {s.value_range!r}")
    c = None
    if s.color is not None:
        c = str(s.color).upper()
        if c not in ("RGB", "BGR"):
            raise InputError(f"--color must be RGB or BGR, got {s.color!r}")
    return Stated(preset=preset, mean=m, std=sd, value_range=vr, color=c)


def card_states(card, name: str) -> bool:
    """Whether the model card states pre-processing for input ``name``."""
    entry = (getattr(card, "inputs", None) or {}).get(name) or {}
    return isinstance(entry, dict) and any(k in entry for k in ("mean", "std", "value_range"))


def resolve(io: IOSpec, card, stated: Stated) -> IOSpec:
    """``io`` with each image input's pre-processing set (flags over card) and its source recorded.

    Raises:
        InputError: stated values do not fit an input (e.g. three means for a one-channel input).
    """
    inputs = []
    for t in io.inputs:
        if not t.is_image:
            inputs.append(replace(t, preprocessing="not an image"))
            continue
        if stated.given:
            fields = stated.fields(t.channels)
            src = stated.source()
            if card_states(card, t.name):
                src += " (over the model card)"
            inputs.append(replace(t, **fields, preprocessing=src))
        elif card_states(card, t.name):
            inputs.append(replace(t, preprocessing="card"))
        else:
            inputs.append(replace(t, preprocessing=ASSUMED))
    return IOSpec(tuple(inputs), io.outputs)


def describe(t: TensorSpec) -> str:
    """``RGB, range [0, 1], mean [..], std [..] (card)`` for one input."""
    def nums(v):
        return "[" + ", ".join(f"{x:g}" for x in v) + "]"

    return (f"{t.color}, range {nums(t.value_range)}, mean {nums(t.mean)}, std {nums(t.std)}"
            + (f" ({t.preprocessing})" if t.preprocessing else ""))


def assumed_inputs(io: IOSpec) -> list[TensorSpec]:
    return [t for t in io.inputs if t.preprocessing == ASSUMED]


def refusal(target: str, io: IOSpec) -> str:
    """The one line a quantized conversion without known pre-processing ends with."""
    names = ", ".join(f"'{t.name}'" for t in assumed_inputs(io))
    return (f"{target} calibrates on inputs, so it needs to know how images are pre-processed for input {names}, "
            f"and no model card states it: pass {FLAGS}, or --calib with your own images or a .npy in the "
            "model's input space")


# ---------------------------------------------------------------- first-layer check


@dataclass
class LayerCheck:
    """What the first layer says about the input scale."""

    input: str
    status: str  # "consistent", "mismatch", "not checked"
    reason: str = ""
    #: median ratio of the first convolution's output std to the batch norm's, per hypothesis
    scale: dict[str, float] = field(default_factory=dict)
    #: median |mean difference| / batch-norm std, per hypothesis
    shift: dict[str, float] = field(default_factory=dict)
    best: str | None = None

    def to_dict(self) -> dict:
        return {"input": self.input, "status": self.status, "reason": self.reason,
                "scale": {k: round(v, 4) for k, v in self.scale.items()},
                "shift": {k: round(v, 4) for k, v in self.shift.items()}, "best": self.best}

    def line(self) -> str:
        return f"first-layer check of input '{self.input}': {self.status}" + (f" ({self.reason})" if self.reason
                                                                              else "")


def _score(scale: float, shift: float) -> float:
    return abs(math.log(max(scale, 1e-6))) + shift


def _first_conv_bn(model, input_name: str):
    """(conv node, bn node, initializers) for ``input -> Conv -> BatchNormalization``, or a reason string."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    name = input_name
    for _ in range(3):  # step over Identity/Cast that some exporters put first
        nodes = consumers.get(name, [])
        if len(nodes) == 1 and nodes[0].op_type in ("Identity", "Cast"):
            name = nodes[0].output[0]
            continue
        break
    convs = [n for n in consumers.get(name, []) if n.op_type == "Conv"]
    if len(convs) != 1:
        return "the input does not feed one convolution directly"
    conv = convs[0]
    if conv.input[1] not in inits or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits):
        return "the first convolution's weights are not constants"
    after = consumers.get(conv.output[0], [])
    if len(after) != 1 or after[0].op_type != "BatchNormalization":
        return "no batch norm follows the first convolution (it was folded into the weights by the exporter)"
    bn = after[0]
    if not all(i in inits for i in bn.input[1:5]):
        return "the batch norm's statistics are not constants"
    return conv, bn, inits


def _conv_outputs(conv, inits, x: np.ndarray) -> np.ndarray:
    """Run just the first convolution on ``x`` (N x C x H x W) with ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Conv", ["x", *conv.input[1:]], ["y"], **{a.name: helper.get_attribute_value(a)
                                                                       for a in conv.attribute})
    weights = [numpy_helper.from_array(inits[i].astype(np.float32), i) for i in conv.input[1:] if i]
    graph = helper.make_graph([node], "first_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *x.shape[1:]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x.astype(np.float32)})[0]


def _stats(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    m = y.mean(axis=(0, 2, 3))
    s = y.std(axis=(0, 2, 3))
    live = sigma > 1e-3 * sigma.max()
    return float(np.median(s[live] / sigma[live])), float(np.median(np.abs(m - mu)[live] / sigma[live]))


def check_first_layer(model, spec: TensorSpec, x: np.ndarray, in_model_space: bool = False) -> LayerCheck:
    """Compare the first convolution's output statistics on ``x`` with the batch norm that follows it.

    ``model`` is the ONNX model *before* simplification (batch norms not folded). ``x`` is the calibration
    batch (N x C x H x W) pre-processed as ``spec`` states. For images (``in_model_space`` False) the same
    pixels are also tried under each preset: the stated pre-processing is a mismatch when its statistics are
    far from the batch norm's (output std off by more than 2x, or means more than one std apart) and a
    preset fits clearly better. A ``.npy`` already in model space is judged on its own.
    """
    if not spec.is_image or spec.layout != "NCHW":
        return LayerCheck(spec.name, "not checked", "only NCHW image inputs are checked")
    found = _first_conv_bn(model, spec.name)
    if isinstance(found, str):
        return LayerCheck(spec.name, "not checked", found)
    conv, bn, inits = found
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    mu = inits[bn.input[3]].astype(np.float64)
    sigma = np.sqrt(inits[bn.input[4]].astype(np.float64) + eps)
    return _judge(spec, x, in_model_space, lambda data: _conv_outputs(conv, inits, data), mu, sigma)


def check_first_layer_torch(module, spec: TensorSpec, x: np.ndarray, in_model_space: bool = False) -> LayerCheck:
    """:func:`check_first_layer` for a PyTorch module: its first ``Conv2d`` taking the input's channels and the
    ``BatchNorm2d`` registered right after it (as torchvision's blocks do)."""
    import torch

    if not spec.is_image or spec.layout != "NCHW":
        return LayerCheck(spec.name, "not checked", "only NCHW image inputs are checked")
    mods = list(module.modules())
    idx = next((i for i, m in enumerate(mods) if isinstance(m, torch.nn.Conv2d)), None)
    if idx is None or mods[idx].in_channels != spec.channels:
        return LayerCheck(spec.name, "not checked", "no first convolution taking the input's channels was found")
    conv = mods[idx]
    bn = mods[idx + 1] if idx + 1 < len(mods) else None
    if not isinstance(bn, torch.nn.BatchNorm2d) or bn.num_features != conv.out_channels \
            or bn.running_mean is None or conv.padding_mode != "zeros":
        return LayerCheck(spec.name, "not checked", "no batch norm with running statistics follows the first "
                                                    "convolution")
    mu = bn.running_mean.detach().double().cpu().numpy()
    sigma = np.sqrt(bn.running_var.detach().double().cpu().numpy() + bn.eps)

    def run(data):
        with torch.no_grad():
            return conv(torch.from_numpy(np.ascontiguousarray(data, np.float32))).numpy()

    return _judge(spec, x, in_model_space, run, mu, sigma)


def _judge(spec: TensorSpec, x: np.ndarray, in_model_space: bool, run_conv, mu, sigma) -> LayerCheck:
    from edgekit.backends.session import renormalize

    hyps = {"stated": x}
    if not in_model_space:
        for name, fields in PRESETS.items():
            other = replace(spec, **{k: (_per_channel(v, spec.channels, k) if k in ("mean", "std") else v)
                                     for k, v in fields.items()})
            hyps[name] = renormalize(x, spec, other)
    check = LayerCheck(spec.name, "consistent")
    for name, data in hyps.items():
        check.scale[name], check.shift[name] = _stats(run_conv(data), mu, sigma)
    stated = _score(check.scale["stated"], check.shift["stated"])
    off = not (0.5 <= check.scale["stated"] <= 2.0) or check.shift["stated"] > 1.0
    if in_model_space:
        if off:
            check.status = "mismatch"
            check.reason = (f"on the calibration data the first convolution's output has {check.scale['stated']:.2f}x "
                            f"the spread its batch norm was trained on and means {check.shift['stated']:.2f} std away")
        return check
    best = min((n for n in hyps if n != "stated"), key=lambda n: _score(check.scale[n], check.shift[n]))
    check.best = best
    if off and _score(check.scale[best], check.shift[best]) < stated - 0.5:
        check.status = "mismatch"
        check.reason = (f"the first convolution's batch norm was trained on inputs about "
                        f"{1 / max(check.scale['stated'], 1e-6):.2f}x the spread of the stated ones; "
                        f"preset '{best}' fits it (scale {check.scale[best]:.2f}, stated {check.scale['stated']:.2f})")
    elif off:
        check.status = "not checked"
        check.reason = (f"the statistics differ from the batch norm's (scale {check.scale['stated']:.2f}, "
                        f"shift {check.shift['stated']:.2f}) but no preset fits better, so the check cannot tell")
    return check
