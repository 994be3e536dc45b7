"""Read and write ncnn ``.param``/``.bin`` pairs (the text graph and its weight stream).

The ``.bin`` is a plain concatenation, in layer order, of what each layer's ``load_model`` reads:
*tagged* arrays (a 4-byte tag, then data: tag 0 = float32, 0x01306B47 = float16, 0x000D4B38 = int8,
padded to 4 bytes) and *raw* float32 arrays. :data:`WEIGHT_LAYOUT` says, per layer type, which
arrays it reads and their element counts from its params; a layer type that carries weights and is
not listed cannot be rewritten, and says so.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import ConversionError

MAGIC = 7767517
TAG_FP32, TAG_FP16, TAG_INT8 = 0, 0x01306B47, 0x000D4B38


def _p(params: dict, key: int, default=0):
    return params.get(key, default)


#: layer type -> list of (array name, "tagged"|"raw", element count from params)
def _conv(count_key: int, bias_key: int, groups_key: int | None = None):
    """Weights, bias, and the int8 scales ``load_model`` reads when ``8=int8_scale_term`` is set."""

    def layout(p):
        arrays = [("weight", "tagged", _p(p, count_key))]
        if _p(p, bias_key):
            arrays.append(("bias", "raw", _p(p, 0)))
        term = _p(p, 8)
        if term:
            per = _p(p, groups_key, 1) if groups_key and term in (1, 101) else (1 if groups_key else _p(p, 0))
            arrays += [("weight_scales", "raw", per), ("bottom_scales", "raw", 1)]
        if term > 100:
            arrays.append(("top_scales", "raw", 1))
        return arrays

    return layout


#: layer type -> params -> list of (array name, "tagged"|"raw", element count)
WEIGHT_LAYOUT = {
    "Convolution": _conv(6, 5),
    "ConvolutionDepthWise": _conv(6, 5, groups_key=7),
    "InnerProduct": _conv(2, 1),
    "Deconvolution": lambda p: [("weight", "tagged", _p(p, 6)), *([("bias", "raw", _p(p, 0))] if _p(p, 5) else [])],
    "DeconvolutionDepthWise": lambda p: [("weight", "tagged", _p(p, 6)),
                                         *([("bias", "raw", _p(p, 0))] if _p(p, 5) else [])],
    "BatchNorm": lambda p: [(n, "raw", _p(p, 0)) for n in ("slope", "mean", "var", "bias")],
    "Scale": lambda p: [("scale", "raw", _p(p, 0)), *([("bias", "raw", _p(p, 0))] if _p(p, 1) else [])],
    "PReLU": lambda p: [("slope", "raw", _p(p, 0))],
    "LayerNorm": lambda p: [("gamma", "raw", _p(p, 0)), ("beta", "raw", _p(p, 0))] if _p(p, 2) else [],
    "GroupNorm": lambda p: [("gamma", "raw", _p(p, 1)), ("beta", "raw", _p(p, 1))] if _p(p, 3) else [],
    "InstanceNorm": lambda p: [("gamma", "raw", _p(p, 0)), ("beta", "raw", _p(p, 0))] if _p(p, 2, 1) else [],
    "MemoryData": lambda p: [("data", "raw", max(_p(p, 0), 1) * max(_p(p, 1), 1) * max(_p(p, 11), 1)
                              * max(_p(p, 2), 1))],
    "MultiHeadAttention": lambda p: [
        ("q_weight", "tagged", _p(p, 2)), ("q_bias", "raw", _p(p, 0)),
        ("k_weight", "tagged", _p(p, 0) * _p(p, 3, _p(p, 0))), ("k_bias", "raw", _p(p, 0)),
        ("v_weight", "tagged", _p(p, 0) * _p(p, 4, _p(p, 0))), ("v_bias", "raw", _p(p, 0)),
        ("out_weight", "tagged", _p(p, 2)), ("out_bias", "raw", _p(p, 0))],
}
#: layer types that read nothing from the .bin
NO_WEIGHTS = {"Input", "Split", "BinaryOp", "UnaryOp", "Concat", "Slice", "HardSwish", "HardSigmoid", "Sigmoid",
              "ReLU", "Clip", "Swish", "Mish", "ELU", "GELU", "TanH", "Softmax", "Pooling", "Interp", "Reshape",
              "Permute", "Flatten", "Padding", "Crop", "Eltwise", "Dropout", "Noop", "ShuffleChannel", "Squeeze",
              "ExpandDims", "Reduction", "Gemm", "MatMul", "PixelShuffle", "Deconvolution1D", "Exp", "Log",
              "Power", "Threshold", "Tile", "CopyTo", "Erf", "Cast", "Dequantize", "Quantize", "Requantize"}


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, object]
    raw_params: list[str]
    arrays: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)  # name -> (tag or -1 raw, data)

    def param_line(self) -> str:
        return " ".join([f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}",
                         *self.bottoms, *self.tops, *self.raw_params]).rstrip()


#: array params are written with key ``-23300 - id`` and value ``count,v1,...,vcount``
ARRAY_KEY_BASE = -23300


@dataclass(frozen=True)
class ParamString:
    """A string-valued param (pnnx writes expressions such as ``6="1,1,//(256,0n),0n"``)."""

    text: str

    def __str__(self) -> str:
        return f'"{self.text}"'


def _is_float(token: str) -> bool:
    """ncnn's rule: a value is a float when its text has a '.' or an exponent (or is inf/nan)."""
    t = token.lower()
    return "." in t or "e" in t or t.lstrip("+-") in ("inf", "nan")


def _scalar(token: str, where: str):
    try:
        return float(token) if _is_float(token) else int(token)
    except ValueError as e:
        raise ConversionError(f"ncnn param {where}: cannot read value '{token}'") from e


def parse_param(token: str, where: str = "") -> tuple[int, object]:
    """One ``key=value`` token -> (id, value): int, float, list (array key) or :class:`ParamString`.

    Raises:
        ConversionError: the token is not a valid ncnn param.
    """
    k, sep, v = token.partition("=")
    try:
        key = int(k)
    except ValueError as e:
        raise ConversionError(f"ncnn param {where}: bad key in '{token}'") from e
    if not sep:
        raise ConversionError(f"ncnn param {where}: '{token}' has no '='")
    if v.startswith('"'):
        if len(v) < 2 or not v.endswith('"'):
            raise ConversionError(f"ncnn param {where}: unterminated string in '{token}'")
        return key, ParamString(v[1:-1])
    if key <= ARRAY_KEY_BASE:
        parts = v.split(",")
        count = _scalar(parts[0], where)
        if not isinstance(count, int) or count != len(parts) - 1:
            raise ConversionError(f"ncnn param {where}: array '{token}' does not hold {parts[0]} values")
        return ARRAY_KEY_BASE - key, [_scalar(x, where) for x in parts[1:]]
    return key, _scalar(v, where)


def format_param(key: int, value) -> str:
    """The text form of one param, the inverse of :func:`parse_param`."""
    if isinstance(value, ParamString):
        return f"{key}={value}"
    if isinstance(value, (list, tuple)):
        return f"{ARRAY_KEY_BASE - key}={len(value)}," + ",".join(_format_scalar(x) for x in value)
    return f"{key}={_format_scalar(value)}"


def _format_scalar(x) -> str:
    if isinstance(x, float):
        text = format(x, ".9g")  # enough digits for every float32
        return text if _is_float(text) else text + ".0"  # ncnn must read it back as a float
    return str(int(x))


def tokenize(line: str) -> list[str]:
    """Split a param line on whitespace, keeping a double-quoted string (which may hold spaces) whole."""
    tokens, cur, quoted = [], [], False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if cur:
                tokens.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if quoted:
        raise ConversionError(f"ncnn param line has an unterminated string: {line.strip()[:80]}")
    if cur:
        tokens.append("".join(cur))
    return tokens


def read_param(param: Path) -> list[Layer]:
    """Parse a .param file into layers (no weights).

    Raises:
        ConversionError: the file is not an ncnn param file or a line cannot be read.
    """
    lines = param.read_text().split("\n")
    if lines[0].strip() != str(MAGIC):
        raise ConversionError(f"{param.name} is not an ncnn param file (magic {lines[0][:20]!r})")
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        parts = tokenize(line)
        if not parts:
            continue
        where = f"{param.name}:{number}"
        try:
            nb, nt = int(parts[2]), int(parts[3])
        except (IndexError, ValueError) as e:
            raise ConversionError(f"ncnn param {where}: bad layer line") from e
        bottoms, tops = parts[4 : 4 + nb], parts[4 + nb : 4 + nb + nt]
        raw = parts[4 + nb + nt :]
        params = dict(parse_param(kv, where) for kv in raw)
        layers.append(Layer(parts[0], parts[1], bottoms, tops, params, raw))
    return layers


def read(param: Path, binf: Path) -> list[Layer]:
    """Parse a .param/.bin pair into layers with their weight arrays.

    Raises:
        ConversionError: the pair cannot be read or its weights do not match the layers.
    """
    layers = read_param(param)
    data = binf.read_bytes()
    offset = 0
    for layer in layers:
        if layer.type in NO_WEIGHTS:
            continue
        if layer.type not in WEIGHT_LAYOUT:
            raise ConversionError(f"ncnn layer type {layer.type} ({layer.name}): edgekit does not know its "
                                  "weight layout, so it cannot rewrite this model")
        for name, kind, count in WEIGHT_LAYOUT[layer.type](layer.params):
            offset, tag, arr = _read_array(data, offset, kind, int(count))
            layer.arrays[name] = (tag, arr)
    if offset != len(data):
        raise ConversionError(f"{binf.name}: read {offset} of {len(data)} bytes; the weight layout did not match")
    return layers


def _read_array(data: bytes, offset: int, kind: str, count: int):
    if kind == "raw":
        end = offset + 4 * count
        return end, -1, np.frombuffer(data[offset:end], np.float32).copy()
    (tag,) = struct.unpack_from("<I", data, offset)
    offset += 4
    if tag == TAG_FP16:
        n = _align4(2 * count)
        return offset + n, tag, np.frombuffer(data[offset : offset + 2 * count], np.float16).astype(np.float32)
    if tag == TAG_INT8:
        n = _align4(count)
        return offset + n, tag, np.frombuffer(data[offset : offset + count], np.int8).copy()
    if tag == TAG_FP32:
        return offset + 4 * count, tag, np.frombuffer(data[offset : offset + 4 * count], np.float32).copy()
    raise ConversionError(f"unsupported ncnn weight tag 0x{tag:08x}")


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def write(layers: list[Layer], param: Path, binf: Path) -> None:
    """Write layers back as a .param/.bin pair."""
    blobs = {b for ly in layers for b in ly.tops}
    lines = [str(MAGIC), f"{len(layers)} {len(blobs)}", *(ly.param_line() for ly in layers)]
    param.write_text("\n".join(lines) + "\n")
    out = bytearray()
    for ly in layers:
        for tag, arr in ly.arrays.values():
            if tag == -1:
                out += np.asarray(arr, np.float32).tobytes()
                continue
            out += struct.pack("<I", tag)
            payload = {TAG_FP32: np.float32, TAG_FP16: np.float16, TAG_INT8: np.int8}[tag]
            raw = np.asarray(arr).astype(payload).tobytes()
            out += raw + b"\0" * (_align4(len(raw)) - len(raw))
    binf.write_bytes(bytes(out))


def set_param(layer: Layer, key: int, value) -> None:
    """Set ``key=value`` in a layer's params (and its text form)."""
    layer.params[key] = value
    keys = {str(key), str(ARRAY_KEY_BASE - key)}
    layer.raw_params = [kv for kv in layer.raw_params if kv.partition("=")[0] not in keys] + [format_param(key, value)]
