"""Typed description of a model's inputs and outputs, and of how an app must feed it.

A :class:`TensorSpec` says what a tensor *is* (name, shape, dtype, layout); its pre-processing
fields say how pixels become that tensor: ``value = (pixel / 255 * (hi - lo) + lo - mean) / std``
in ``color`` order. Output specs carry ``kind`` (``probability``, ``logits``, ``labels``, ``image``,
``tensor``), which selects the parity metric. A model card (``model.yaml``) is validated against
``edgekit/schemas/model-card.schema.json`` before any of its values is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from edgekit.errors import InputError


def card_schema() -> dict:
    """The model card's JSON Schema (``edgekit/schemas/model-card.schema.json``)."""
    import json
    from importlib import resources

    return json.loads(resources.files("edgekit.schemas").joinpath("model-card.schema.json").read_text())


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    color: str = "RGB"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    value_range: tuple[float, float] = (0.0, 1.0)
    kind: str = "tensor"
    #: quantization of an integer tensor: real = (q - zero_point) * scale
    quant: tuple[float, int] | None = None
    #: where an input's pre-processing fields came from: "card", "flags", "preset NAME", "assumed"
    #: (nothing stated them), "not an image", or "" (not recorded: outputs, older artifacts)
    preprocessing: str = ""

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 4 and self.layout in ("NCHW", "NHWC")

    @property
    def hw(self) -> tuple[int, int]:
        """Spatial size (H, W) of an image tensor."""
        if self.layout == "NHWC":
            return int(self.shape[1]), int(self.shape[2])
        return int(self.shape[2]), int(self.shape[3])

    @property
    def channels(self) -> int:
        return int(self.shape[3] if self.layout == "NHWC" else self.shape[1])

    def with_layout(self, layout: str) -> TensorSpec:
        """The same tensor in another 4-D layout (shape permuted)."""
        if layout == self.layout or not self.is_image:
            return replace(self, layout=layout)
        s = self.shape
        shape = (s[0], s[2], s[3], s[1]) if layout == "NHWC" else (s[0], s[3], s[1], s[2])
        return replace(self, layout=layout, shape=shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        for k in ("mean", "std", "value_range"):
            d[k] = list(d[k])
        d["quant"] = list(self.quant) if self.quant else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        for k in ("mean", "std", "value_range"):
            if k in d:
                d[k] = tuple(d[k])
        if d.get("quant"):
            d["quant"] = (float(d["quant"][0]), int(d["quant"][1]))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def to_layout(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Transpose a 4-D array between NCHW and NHWC (no-op when equal or not 4-D)."""
    if src == dst or x.ndim != 4 or "ANY" in (src, dst):
        return x
    perm = (0, 2, 3, 1) if dst == "NHWC" else (0, 3, 1, 2)
    return np.ascontiguousarray(x.transpose(perm))


@dataclass(frozen=True)
class IOSpec:
    """All inputs and outputs of a model, in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        return _find(self.inputs, name)

    def output(self, name: str) -> TensorSpec:
        return _find(self.outputs, name)

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict) -> IOSpec:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
        )


def _find(specs, name):
    for t in specs:
        if t.name == name:
            return t
    raise InputError(f"no tensor named '{name}' (have: {', '.join(t.name for t in specs)})")


# ---------------------------------------------------------------- model card


@dataclass(frozen=True)
class ModelCard:
    """What ``model.yaml`` beside a model says: task, pre-processing, default shape, resolutions."""

    name: str = "model"
    task: str = "generic"
    inputs: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    resolutions: tuple[tuple[int, int], ...] = ()
    path: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read and validate ``model.yaml`` against the model card schema before any value is used.

        Raises:
            InputError: unreadable YAML, or a field the schema refuses (one line naming the field).
        """
        from edgekit.core.datafiles import read_yaml

        p = Path(path)
        raw = read_yaml(p, "model card")
        return cls.from_dict({} if raw is None else raw, str(p))

    @classmethod
    def from_dict(cls, raw, where: str = "model card") -> ModelCard:
        """A card from parsed YAML/JSON data, validated against the schema.

        Raises:
            InputError: the data does not follow the model card schema, or names a tensor twice.
        """
        try:
            validate_card(raw, where)
        except RecursionError as e:
            raise InputError(f"model card {where} is nested too deeply to be a model card") from e
        for section in ("inputs", "outputs"):
            names = [e["name"] for e in raw.get(section, [])]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise InputError(f"model card {where}: {section} names {dup[0]!r} more than once")
        return cls(
            name=str(raw.get("name", Path(where).parent.name if where != "model card" else "model")),
            task=str(raw.get("task", "generic")),
            inputs={i["name"]: i for i in raw.get("inputs", [])},
            outputs={o["name"]: o for o in raw.get("outputs", [])},
            resolutions=tuple(tuple(r) for r in raw.get("resolutions", [])),
            path=where if where != "model card" else None,
        )

    @classmethod
    def beside(cls, model_path: str | Path) -> ModelCard:
        """The card next to a model (``model.yaml``), or an empty card."""
        p = Path(model_path).with_name("model.yaml")
        return cls.load(p) if p.is_file() else cls()

    def apply(self, spec: TensorSpec, is_input: bool) -> TensorSpec:
        """Fill a tensor spec's pre-processing fields from the card."""
        entry = (self.inputs if is_input else self.outputs).get(spec.name, {})
        fields = {}
        for key, attr in (("layout", "layout"), ("color", "color"), ("kind", "kind")):
            if key in entry:
                fields[attr] = str(entry[key])
        for key in ("mean", "std", "value_range"):
            if key in entry:
                fields[key] = tuple(float(v) for v in entry[key])
        return replace(spec, **fields)

    def default_shape(self, name: str) -> tuple[int, ...] | None:
        s = self.inputs.get(name, {}).get("shape")
        return tuple(int(v) for v in s) if s else None


def validate_card(raw, where: str = "model card") -> None:
    """Check parsed card data against ``model-card.schema.json``.

    Raises:
        InputError: one line naming the first offending field (e.g. ``outputs[0].kind``) and what is valid.
    """
    import jsonschema

    if not isinstance(raw, dict):
        raise InputError(f"model card {where} must be a mapping (name, task, inputs, outputs, ...), "
                         f"got {type(raw).__name__}")
    validator = jsonschema.Draft202012Validator(card_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(raw))
    if error is None:
        bad = _non_finite(raw)
        if bad is not None:
            raise InputError(f"model card {where}: {bad}: numbers must be finite (not .nan or .inf)")
        return
    field_name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    if error.validator == "enum":
        detail = f"{error.instance!r} is not valid; valid values: {', '.join(map(str, error.validator_value))}"
    elif error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        detail = f"{error.message}; valid fields: {', '.join(allowed)}"
    else:
        detail = error.message
    if len(detail) > 300:
        detail = detail[:300] + "..."
    raise InputError(f"model card {where}: {field_name or '(top level)'}: {detail}")


def _non_finite(value, path: str = "") -> str | None:
    """The field path of the first NaN/Inf number in parsed card data (JSON Schema cannot say "finite")."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top level)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip("."))
        if found is not None:
            return found
    return None
