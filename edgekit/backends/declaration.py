"""What one backend is, declared once: :class:`Backend` and its converter :class:`Option` s.

A backend's folder (``edgekit/backends/<format>/``) holds its converter, its session and their helpers, and
its ``__init__.py`` holds one :class:`Backend` named ``BACKEND``. Everything else derives from that
declaration: target parsing, tolerance classes, the registries, ``doctor``, the extras named in errors,
``inspect``'s support table, the CLI's ``-O`` options and the pipeline's compute units. The declaration is
plain data, so reading it imports none of the backend's packages.

A third-party backend declares a ``Backend`` the same way and registers it under the ``edgekit.backends``
entry-point group (``name = "package.module:BACKEND"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from edgekit.errors import InputError

#: the parity tolerance rows (see :mod:`edgekit.core.parity`)
TOLERANCE_CLASSES = ("fp32", "fp16", "int8")
#: compute-unit kinds a delegate can map to (see :mod:`edgekit.apps.pipeline.units`); ``mixed``: a device
#: choice that spans units (OpenVINO AUTO, HETERO) and so is never one pipeline unit
UNIT_KINDS = ("cpu", "gpu", "npu", "mixed")
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class Option:
    """One converter option: ``-O name=value`` on the CLI, ``options={"name": value}`` in Python.

    ``precisions`` limits it to some targets (empty: every precision of the backend).
    """

    name: str
    help: str
    type: str = "str"
    choices: tuple = ()
    default: object = None
    precisions: tuple[str, ...] = ()

    def parse(self, value: object) -> object:
        """``value`` (CLI text or a Python value) as this option's type, checked against its choices.

        Raises:
            InputError: the value has the wrong type or is not one of the choices.
        """
        kind = _TYPES[self.type]
        if isinstance(value, str) and kind is not str:
            text = value.strip().lower()
            try:
                value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[text] \
                    if kind is bool else kind(text)
            except (KeyError, ValueError) as e:
                raise InputError(f"option {self.name} takes a {self.type}, got '{value}'") from e
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"option {self.name} takes a {self.type}, got {value!r}")
        if self.choices and value not in self.choices:
            raise InputError(f"option {self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value

    def describe(self) -> str:
        kind = "|".join(map(str, self.choices)) if self.choices else self.type
        default = "" if self.default is None else f" (default {self.default})"
        only = f" [{', '.join(self.precisions)} only]" if self.precisions else ""
        return f"{self.name}={kind}{default}{only}: {self.help}"


@dataclass(frozen=True)
class Backend:
    """One artifact format: how it converts, how it runs, what it needs.

    Attributes:
        format: the artifact format and target prefix (``ncnn`` in ``ncnn-int8``).
        runtime: the runtime's name as its users know it (``LiteRT`` runs ``tflite`` artifacts).
        precisions: target precisions the converter writes.
        quantized: which of ``precisions`` are quantized (judged by the ``int8`` tolerance row).
        converter: ``"module:Class"`` of the converter (imported only when used).
        session: ``"module:Class"`` of the session.
        extra: the pip extra that installs ``packages``.
        packages: import names the converter and the session need (``doctor`` checks each).
        delegates: delegate name -> the compute-unit kind it runs on (``cpu``, ``gpu``, ``npu``).
        options: the converter options users may set.
        sources: file suffixes this backend can read as a *source* model (e.g. ``.tflite``).
        source_loader: ``"module:function"`` turning such a file into edgekit's ONNX source.
        source_original: ``"module:function"`` running such a file as it is, in its own runtime (a Session),
            without converting it: what a teacher or a reference needs.
        device_benchmark: the runtime's own benchmark binary that a remote reach (adb) pushes and runs on a
            device (LiteRT's ``benchmark_model``); empty when the backend has none.
        note: anything a reader would otherwise wonder about (e.g. why runtime and format names differ).
    """

    format: str
    runtime: str
    precisions: tuple[str, ...]
    converter: str
    session: str
    extra: str
    packages: tuple[str, ...]
    quantized: tuple[str, ...] = ()
    delegates: dict[str, str] = field(default_factory=lambda: {"cpu": "cpu"})
    options: tuple[Option, ...] = ()
    sources: tuple[str, ...] = ()
    source_loader: str = ""
    source_original: str = ""
    device_benchmark: str = ""
    note: str = ""

    def __post_init__(self):
        unknown = set(self.quantized) - set(self.precisions)
        if unknown:
            raise ValueError(f"backend {self.format}: quantized precisions {unknown} are not among its precisions")
        bad_units = {k for k in self.delegates.values() if k not in UNIT_KINDS}
        if bad_units:
            raise ValueError(f"backend {self.format}: delegates map to unknown unit kinds {bad_units}")
        names = [o.name for o in self.options]
        if len(names) != len(set(names)):
            raise ValueError(f"backend {self.format}: an option is declared twice")

    @property
    def targets(self) -> list[str]:
        return [f"{self.format}-{p}" for p in self.precisions]

    def is_quantized(self, precision: str) -> bool:
        return precision in self.quantized

    def tolerance_class(self, precision: str) -> str:
        """The parity tolerance row of ``precision``: ``int8`` for quantized ones, else ``fp16`` or ``fp32``."""
        if self.is_quantized(precision):
            return "int8"
        return "fp16" if precision == "fp16" else "fp32"

    def unit_kind(self, delegate: str) -> str | None:
        """The compute-unit kind ``delegate`` runs on (``gpu:1`` and ``gpu=LIB.so`` count as ``gpu``)."""
        base = _delegate_base(delegate)
        return next((k for d, k in self.delegates.items() if _delegate_base(d) == base), None)

    def delegate_for(self, unit_kind: str) -> str | None:
        """The delegate that runs this backend on a unit of ``unit_kind`` (None: it cannot)."""
        return next((_delegate_base(d) for d, k in self.delegates.items() if k == unit_kind), None)

    def parse_options(self, options: dict, precision: str | None = None) -> dict:
        """Check ``options`` against the declared ones and parse their values.

        Raises:
            InputError: an unknown (or misspelt) option, a bad value, or an option that does not apply to
                ``precision``.
        """
        declared = {o.name: o for o in self.options}
        parsed = {}
        for name, value in options.items():
            if name not in declared:
                import difflib

                close = difflib.get_close_matches(name, declared, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                known = ", ".join(declared) or "none"
                raise InputError(f"unknown option '{name}' for {self.format} targets{hint} (options: {known})")
            option = declared[name]
            if precision and option.precisions and precision not in option.precisions:
                applies = ", ".join(f"{self.format}-{p}" for p in option.precisions)
                raise InputError(f"option {name} applies to {applies} only, not {self.format}-{precision}")
            parsed[name] = option.parse(value)
        return parsed


def _delegate_base(delegate: str) -> str:
    """``gpu:1`` / ``gpu=LIB.so`` / ``cpu@bf16`` -> ``gpu`` / ``gpu`` / ``cpu``."""
    return re.split(r"[=:@]", delegate.lower(), maxsplit=1)[0]
