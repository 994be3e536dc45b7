"""An artifact: a directory of model files plus ``artifact.json`` describing them.

``artifact.json`` records the target, the files (with sha256), the artifact's real IO spec
(``io``: the layout/dtype the model file itself uses) and the source's IO spec (``source_io``: what
callers of :class:`~edgekit.runtimes.base.Session` pass), the source model's sha256, tool versions,
conversion options, the conversion route and the parity report.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgekit import interrupts
from edgekit.errors import InputError, OutputError
from edgekit.spec import IOSpec
from edgekit.target import Target

MANIFEST = "artifact.json"
SCHEMA_VERSION = 1


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, or of a directory (e.g. an .mlpackage): its relative paths and contents."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


@dataclass
class Artifact:
    """A converted model on disk."""

    path: Path
    target: Target
    files: dict[str, str]
    io: IOSpec
    source_io: IOSpec
    source: dict
    route: str = ""
    tools: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    parity: dict | None = None
    created: str = ""
    #: the prepared fp32 ONNX the artifact was proved against (relative path); ``validate`` uses it, so
    #: no source recorded in ``artifact.json`` (a ``file.py:factory``) is ever imported again
    reference: str | None = None

    def file(self, role: str = "model") -> Path:
        return self.path / self.files[role]

    def reference_file(self) -> Path:
        """The stored fp32 ONNX reference (see :attr:`reference`)."""
        return self.path / self.reference

    @property
    def size_bytes(self) -> int:
        return sum(size_bytes(self.path / f) for f in set(self.files.values()))

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "target": str(self.target),
            "format": self.target.format,
            "precision": self.target.precision,
            "files": {r: {"path": f, "sha256": sha256_file(self.path / f)} for r, f in self.files.items()},
            "io": self.io.to_dict(),
            "source_io": self.source_io.to_dict(),
            "source": self.source,
            "route": self.route,
            "tools": self.tools,
            "options": self.options,
            "notes": self.notes,
            "parity": self.parity,
            "reference": None if self.reference is None else {
                "path": self.reference, "sha256": sha256_file(self.path / self.reference)},
            "created": self.created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }

    def save(self) -> None:
        _write_json_atomic(self.path / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        """Open an artifact directory (or its ``artifact.json``)."""
        p = Path(path)
        if p.name == MANIFEST:
            p = p.parent
        manifest = p / MANIFEST
        if not manifest.is_file():
            raise InputError(f"{p} is not an edgekit artifact (no {MANIFEST})")
        try:
            d = json.loads(manifest.read_text())
            fmt, precision = d["format"], d["precision"]
            art = cls(
                path=p,
                target=Target(fmt, precision),
                files={r: v["path"] for r, v in d["files"].items()},
                io=IOSpec.from_dict(d["io"]),
                source_io=IOSpec.from_dict(d["source_io"]),
                source=d["source"],
                route=d.get("route", ""),
                tools=d.get("tools", {}),
                options=d.get("options", {}),
                notes=d.get("notes", []),
                parity=d.get("parity"),
                created=d.get("created", ""),
                reference=(d.get("reference") or {}).get("path"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{manifest} is malformed: {e}") from e
        for role, f in art.files.items():
            if not (p / f).exists():
                raise InputError(f"artifact {p} is incomplete: {role} file {f} is missing")
        return art


def _write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staging(final: Path):
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` atomically.

    On any error or interrupt (including Ctrl-C) the temporary directory is removed and ``final``
    is left as it was, so no half-written artifact is ever visible.
    """
    final = Path(final).absolute()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.edgekit-tmp-"))
    except OSError as e:
        raise OutputError(f"cannot write to output directory {final}: {e.strerror or e}") from e
    try:
        yield tmp
        interrupts.check()  # a Ctrl-C swallowed by a finalizer must still stop the commit
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.edgekit-old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
