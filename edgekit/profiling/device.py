"""Device profiles (``profiles/devices/*.yaml``, validated against ``device-profile.schema.json``), and the
helpers every YAML file edgekit is handed goes through: :func:`read_yaml` (size-capped, no aliases, one
line on a syntax error) and :func:`validate_against` (a published JSON Schema, the field named).

A profile is data: it names delegates (``cpu``, ``gpu``, ``npu``, ...), never a library to load. A delegate
library (``gpu=/path/lib.so``) is loaded only when the user passes it on the command line
(``edgekit profile --delegate-lib gpu=/path/lib.so``): :func:`load_profile` then puts it in place of the
profile's bare ``gpu``. A library path written in the profile itself is refused.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgekit.errors import InputError

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles" / "devices"
CONFIGS_DIR = PROFILES_DIR.parent / "configs"
MAX_YAML_BYTES = 1 << 20  # configs are small; a bigger file is refused before it is parsed


def schema(name: str) -> dict:
    """A published JSON Schema: ``device-profile``, ``app-config``, ``pipeline`` or ``recipe``.

    Raises:
        InputError: no schema of that name.
    """
    try:
        return json.loads(resources.files("edgekit.schemas").joinpath(f"{name}.schema.json").read_text())
    except FileNotFoundError as e:
        raise InputError(f"no schema '{name}'") from e


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "empty (null)"}.get(type(value), type(value).__name__)


def validate_against(data, name: str, what: str) -> None:
    """Check ``data`` against the published schema ``name``.

    Raises:
        InputError: one line naming ``what``, the field (``stages/0/kernel``) and what is wrong with it.
    """
    import jsonschema

    try:
        validator = jsonschema.Draft202012Validator(schema(name))
        errors = list(itertools.islice(validator.iter_errors(data), 100))
        unknown = [e for e in errors if e.validator == "additionalProperties"]  # a misspelt key first
        error = min(unknown, key=lambda e: len(e.absolute_path)) if unknown else jsonschema.exceptions.best_match(
            errors)
    except RecursionError as e:
        raise InputError(f"{what} is nested too deeply") from e
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, str) else " or ".join(
            error.validator_value)
        message = f"must be of type {wanted}, not {_kind(error.instance)}"
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict) and isinstance(
            error.schema.get("properties"), dict):
        extra = sorted(str(k) for k in set(error.instance) - set(error.schema["properties"]))
        message = (f"unknown key(s) {', '.join(map(repr, extra))}; known: "
                   f"{', '.join(sorted(error.schema['properties']))}")
    else:
        message = error.message
    raise InputError(f"{what} is invalid at {where}: {_one_line(message)}") from error


def read_yaml(path: str | Path, what: str):
    """The YAML document in ``path``, read as plain data (safe loader, aliases refused so a small file
    cannot expand into a huge one, at most ``MAX_YAML_BYTES``).

    Raises:
        InputError: the file cannot be read, is too big, or is not valid YAML (one line with the position).
    """
    import yaml

    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise InputError(f"{what} {p.name} is {size} bytes; configs above {MAX_YAML_BYTES} bytes are refused")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {what} {p}: {_one_line(e)}") from e
    try:
        return yaml.load(text, Loader=_DataLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(f"{what} {p.name} is not valid YAML{at}: {_one_line(e.problem or e.context)}") from e
    except yaml.YAMLError as e:
        raise InputError(f"{what} {p.name} is not valid YAML: {_one_line(e)}") from e
    except RecursionError as e:
        raise InputError(f"{what} {p.name} is nested too deeply") from e


def _data_loader():
    import yaml

    class DataLoader(yaml.SafeLoader):
        """SafeLoader without aliases (``*name``): configs are small trees, never graphs."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted",
                                                  event.start_mark)
            return super().compose_node(parent, index)

    return DataLoader


class _LazyLoader:
    """Builds the loader class on first use (``import edgekit`` must not import yaml)."""

    cls = None

    def __call__(self, stream):
        if _LazyLoader.cls is None:
            _LazyLoader.cls = _data_loader()
        return _LazyLoader.cls(stream)


_DataLoader = _LazyLoader()


@dataclass(frozen=True)
class DeviceProfile:
    id: str
    hardware: str
    reach: str
    targets: tuple[str, ...]
    threads: tuple[int, ...]
    resolutions: tuple[tuple[int, int], ...]
    fps: float
    model_share: float = 0.5
    delegates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    runs: int = 50
    warmup: int = 10
    adb: dict = field(default_factory=dict)
    camera: tuple[int, int] = (720, 1280)
    path: str = ""

    @property
    def budget_ms(self) -> float:
        """Time the model may take per frame."""
        return 1000.0 / self.fps * self.model_share

    def delegates_for(self, fmt: str) -> tuple[str, ...]:
        return self.delegates.get(fmt, ("cpu",))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def parse_delegate_libs(items: list[str] | tuple[str, ...] | dict[str, str] | None) -> dict[str, str]:
    """``["gpu=/path/lib.so", ...]`` (command-line arguments) -> ``{"gpu": "/path/lib.so"}``.

    Raises:
        InputError: an item is not ``UNIT=PATH``, names a unit twice, or the library is not a file.
    """
    if not items:
        return {}
    if isinstance(items, dict):
        items = [f"{k}={v}" for k, v in items.items()]
    libs: dict[str, str] = {}
    for item in items:
        unit, sep, lib = str(item).partition("=")
        if not sep or not unit or not lib or "=" in lib:
            raise InputError(f"--delegate-lib {item}: expected UNIT=PATH (e.g. gpu=/path/libdelegate.so)")
        if unit in libs:
            raise InputError(f"--delegate-lib names '{unit}' twice")
        if not Path(lib).is_file():
            raise InputError(f"--delegate-lib {item}: no file {lib}")
        libs[unit] = str(Path(lib).resolve())  # an absolute path: dlopen never searches for it elsewhere
    return libs


def load_profile(name_or_path: str | Path, delegate_libs: dict[str, str] | list[str] | None = None) -> DeviceProfile:
    """Load a profile by id (``local-cpu``) or path; it must validate against the schema.

    ``delegate_libs`` (unit -> library, from the command line) replaces the profile's bare delegate of that
    unit (``gpu`` -> ``gpu=/path/lib.so``). A library path written in the profile is refused: a file may
    name a delegate, only the user may name code to load.

    Raises:
        InputError: no such profile, invalid YAML or schema, an unknown target, a library path in the
            profile, or a ``delegate_libs`` unit the profile does not use.
    """
    libs = parse_delegate_libs(delegate_libs)
    p = Path(name_or_path)
    if not p.suffix:
        p = PROFILES_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise InputError(f"no device profile '{name_or_path}'; available: {', '.join(available_profiles())}")
    raw = read_yaml(p, "device profile")
    validate_against(raw, "device-profile", f"device profile {p.name}")
    from edgekit.target import Target

    for t in raw["targets"]:
        Target.parse(t)
    delegates: dict[str, tuple[str, ...]] = {}
    used: set[str] = set()
    for fmt, names in raw.get("delegates", {}).items():
        for d in names:
            unit, sep, lib = d.partition("=")
            if sep:
                raise InputError(f"device profile {p.name}: delegate '{d}' names a library; a library is loaded "
                                 f"only when given on the command line: write '{unit}' in the profile and pass "
                                 f"--delegate-lib {unit}={lib}")
        delegates[fmt] = tuple(f"{d}={libs[d]}" if d in libs else d for d in names)
        used |= set(names)
    unused = sorted(set(libs) - used)
    if unused:
        raise InputError(f"--delegate-lib {', '.join(unused)}: device profile {p.name} uses no such delegate "
                         f"(it uses {', '.join(sorted(used)) or 'cpu only'})")
    budget = raw["budget"]
    if not all(math.isfinite(budget.get(k, 0.5)) for k in ("fps", "model_share")):
        raise InputError(f"device profile {p.name} is invalid at budget: fps and model_share must be finite numbers")
    return DeviceProfile(
        id=raw["id"], hardware=raw["hardware"], reach=raw["reach"], targets=tuple(raw["targets"]),
        threads=tuple(raw["threads"]), resolutions=tuple(tuple(r) for r in raw["resolutions"]),
        fps=float(budget["fps"]), model_share=float(budget.get("model_share", 0.5)),
        delegates=delegates, description=raw.get("description", ""),
        runs=int(raw.get("runs", 50)), warmup=int(raw.get("warmup", 10)), adb=raw.get("adb", {}),
        camera=tuple(raw.get("camera", (720, 1280))), path=str(p))
