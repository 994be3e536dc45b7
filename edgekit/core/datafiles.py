"""Files a user hands edgekit, read as data: YAML through a safe loader (size-capped, nesting-capped, no
aliases, one line on a syntax error) and checked against edgekit's published JSON Schemas with the field named.

Every YAML file edgekit reads (model cards, device profiles, pipelines, recipes) goes through :func:`read_yaml`,
and every schema check through :func:`validate_against`.
"""

from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path

from edgekit.errors import InputError

MAX_YAML_BYTES = 1 << 20  # configs are small; a bigger file is refused before it is parsed
#: deepest ``[``/``{`` nesting accepted: checked before PyYAML, whose scanner is quadratic in the flow depth
#: (a 200 KB file of nested brackets took it two minutes)
MAX_YAML_DEPTH = 64


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
    if flow_depth(text) > MAX_YAML_DEPTH:
        raise InputError(f"{what} {p.name} is nested too deeply (more than {MAX_YAML_DEPTH} levels of [ ] or {{ }})")
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


def flow_depth(text: str) -> int:
    """Deepest nesting of YAML flow collections (``[``, ``{``) in ``text``, skipping quoted strings and comments.

    An approximation that never over-counts a well-formed file; it only has to be cheap and linear."""
    depth = deepest = 0
    for line in text.splitlines():
        quote = None
        previous = " "
        for ch in line:
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#" and previous in " \t":
                break
            elif ch in "[{":
                depth += 1
                deepest = max(deepest, depth)
            elif ch in "]}":
                depth = max(depth - 1, 0)
            previous = ch
    return deepest
