"""An artifact: a directory of model files plus ``artifact.json`` describing them.

``artifact.json`` records the target, the files (with sha256), the artifact's real IO spec
(``io``: the layout/dtype the model file itself uses) and the source's IO spec (``source_io``: what
callers of :class:`~edgekit.backends.session.Session` pass), the source model's sha256, tool versions,
conversion options, the conversion route and the parity report.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgekit.core import interrupts
from edgekit.core.files import apply_umask, inside, sha256_file, verify_sha256, write_json_atomic
from edgekit.core.iospec import IOSpec
from edgekit.core.target import Target
from edgekit.errors import InputError, OutputError

__all__ = ["MANIFEST", "Artifact", "cache_staging", "check_output", "sha256_file", "size_bytes", "staging"]

MANIFEST = "artifact.json"
SCHEMA_VERSION = 1
#: an ``artifact.json`` larger than this is not one edgekit wrote
MAX_MANIFEST_BYTES = 16 << 20


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
    #: the execution audit taken at conversion (:class:`~edgekit.core.audit.Audit` as a dict), or None
    audit: dict | None = None
    created: str = ""
    #: the prepared fp32 ONNX the artifact was proved against (relative path); ``validate`` uses it, so
    #: no source recorded in ``artifact.json`` (a ``file.py:factory``) is ever imported again
    reference: str | None = None
    #: ``convert --keep-stages``: each conversion step's product, in order, the last being the artifact itself:
    #: ``{name, format, precision, files: {role: path}, io: dict, note}`` (paths checked inside the folder at
    #: load; each file's sha256, kept in ``sha256: {role: hex}``, is checked by :meth:`stage_files` before use)
    stages: list[dict] | None = None

    def file(self, role: str = "model") -> Path:
        return self.path / self.files[role]

    def reference_file(self) -> Path:
        """The stored fp32 ONNX reference (see :attr:`reference`)."""
        return self.path / self.reference

    def stage_files(self, k: int) -> dict[str, Path]:
        """The files of kept stage ``k`` (see :attr:`stages`), each sha256-checked against ``artifact.json``.

        Raises:
            InputError: a file is missing, leaves the folder or was changed since it was recorded.
        """
        stage = self.stages[k]
        out = {}
        for role, rel in stage["files"].items():
            expected = stage.get("sha256", {}).get(role)
            if expected is None:
                raise InputError(f"artifact {self.path}: stage {k}-{stage['name']} {role} file {rel} has no recorded "
                                 "sha256")
            _verify_entry(self.path, f"stage {k}-{stage['name']} {role} file", {"path": rel, "sha256": expected})
            out[role] = inside(self.path, rel, f"artifact {self.path}")
        return out

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
            "audit": self.audit,
            "reference": None if self.reference is None else {
                "path": self.reference, "sha256": sha256_file(self.path / self.reference)},
            **({} if self.stages is None else {"stages": [
                {"name": st["name"], "format": st["format"], "precision": st["precision"],
                 "files": {r: {"path": f, "sha256": sha256_file(self.path / f)} for r, f in st["files"].items()},
                 "io": st["io"], "note": st.get("note", "")} for st in self.stages]}),
            "created": self.created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }

    def save(self) -> None:
        write_json_atomic(self.path / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        """Open an artifact directory (or its ``artifact.json``), verifying it before any file is opened.

        ``artifact.json`` is checked against ``artifact.schema.json``; every recorded path must stay inside the
        artifact folder (no absolute path, no ``..``, no symlink leading out); every file's sha256, and the
        stored reference's, must match what was recorded. So ``run``, ``validate``, ``profile``, ``process``
        and :func:`edgekit.load` never hand a runtime a file that was changed, truncated or redirected.

        Raises:
            InputError: not an artifact, a malformed or invalid ``artifact.json``, a path leaving the folder,
                a missing file, or a sha256 mismatch (one line naming the field or file).
        """
        p = Path(path)
        if p.name == MANIFEST:
            p = p.parent
        if not (p / MANIFEST).is_file():
            raise InputError(f"{p} is not an edgekit artifact (no {MANIFEST})")
        manifest = inside(p, MANIFEST, f"artifact {p}")
        what = f"{manifest}"
        try:
            if manifest.stat().st_size > MAX_MANIFEST_BYTES:
                raise InputError(f"{what} is too large ({manifest.stat().st_size} bytes) to be an artifact manifest")
            d = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise InputError(f"{what} is not readable JSON: {e}") from e
        _validate_manifest(d, what)
        try:
            art = cls(
                path=p,
                target=Target(d["format"], d["precision"]),
                files={r: v["path"] for r, v in d["files"].items()},
                io=IOSpec.from_dict(d["io"]),
                source_io=IOSpec.from_dict(d["source_io"]),
                source=d["source"],
                route=d.get("route", ""),
                tools=d.get("tools", {}),
                options=d.get("options", {}),
                notes=d.get("notes", []),
                parity=d.get("parity"),
                audit=d.get("audit"),
                created=d.get("created", ""),
                reference=(d.get("reference") or {}).get("path"),
                stages=None if d.get("stages") is None else [
                    {"name": st["name"], "format": st["format"], "precision": st["precision"],
                     "files": {r: v["path"] for r, v in st["files"].items()},
                     "sha256": {r: v["sha256"] for r, v in st["files"].items()}, "io": st["io"],
                     "note": st.get("note", "")} for st in d["stages"]],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{what} is malformed: {e}") from e
        recorded = [(f"{role} file", v) for role, v in d["files"].items()]
        if d.get("reference"):
            recorded.append(("reference", d["reference"]))
        for role, entry in recorded:
            _verify_entry(p, role, entry)
        for k, st in enumerate(art.stages or []):  # paths now; each file's sha256 when a stage is opened
            for role, rel in st["files"].items():
                what = f"artifact {p}: stage {k}-{st['name']} {role} file"
                if not inside(p, rel, what).exists():
                    raise InputError(f"{what} {rel} is missing")
        return art


def _validate_manifest(d: object, what: str) -> None:
    import jsonschema

    schema = json.loads(resources.files("edgekit.schemas").joinpath("artifact.schema.json").read_text())
    try:
        jsonschema.validate(d, schema)
    except jsonschema.ValidationError as e:
        best = jsonschema.exceptions.best_match([e]) or e
        where = "/".join(str(x) for x in best.absolute_path) or "(top level)"
        message = best.message if len(best.message) <= 200 else best.message[:200] + "..."
        raise InputError(f"{what} is invalid at {where}: {message}") from e


def _verify_entry(folder: Path, role: str, entry: dict) -> None:
    what = f"artifact {folder}: {role}"
    file = inside(folder, entry["path"], what)
    if file.resolve() == folder.resolve():
        raise InputError(f"{what}: path '{entry['path']}' names the artifact folder itself, not a file in it")
    if not file.exists():
        raise InputError(f"artifact {folder} is incomplete: {role} {entry['path']} is missing")
    if file.is_dir():  # a package folder (e.g. .mlpackage): nothing inside may lead out either
        for sub in file.rglob("*"):
            if sub.is_symlink():
                inside(folder, sub.relative_to(folder.resolve()).as_posix(), what)
    verify_sha256(file, entry["sha256"], what)


# ------------------------------------------------------------------------------------------------ writing


def check_output(final: str | Path, protect: Iterable[object] = ()) -> Path:
    """The absolute path an artifact will be written to, after refusing any place that holds the user's data.

    ``-o`` may name a free path, an empty folder, or a previous edgekit artifact (a folder with an
    ``artifact.json`` and nothing that artifact does not list). Anything else is refused: a file, a non-empty
    folder, ``/``, the home folder, the current folder (or a folder holding one of these) and any folder that
    holds one of the ``protect`` paths (the source model first, then other inputs such as ``--calib``).

    Raises:
        OutputError: one line saying why, and naming a free path to use instead.
    """
    final = _absolute(Path(final))
    reason = _refusal(final, protect)
    if reason:
        raise OutputError(f"refusing to write the artifact to {final}: {reason}; nothing was changed. "
                          f"Use a free path instead, e.g. -o {_free_path(final, reason)}")
    return final


@contextlib.contextmanager
def staging(final: Path, protect: Iterable[object] = ()):
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` atomically.

    ``final`` is checked first (see :func:`check_output`; ``protect`` lists the source paths whose folders must
    not be replaced) and again just before the swap. On any error, interrupt or termination the temporary
    directory is removed and ``final`` is left as it was, so no half-written artifact is ever visible and
    nothing of the user's is deleted. Leftovers of edgekit processes that died mid-write are removed first.

    Raises:
        OutputError: ``final`` is refused or cannot be written.
    """
    protect = list(protect)
    final = check_output(final, protect)
    with _staged(final) as tmp:
        yield tmp
        reason = _refusal(final, protect)  # the folder may have changed while we worked
        if reason:
            raise OutputError(f"refusing to write the artifact to {final}: {reason} (it changed during the "
                              f"conversion); nothing was changed. Use a free path instead, e.g. -o "
                              f"{_free_path(final, reason)}")


@contextlib.contextmanager
def cache_staging(final: Path):
    """Like :func:`staging`, for folders edgekit owns (its download cache): the previous folder is replaced
    whatever it holds, atomically, and nothing partial is left on error, Ctrl-C or SIGTERM.

    Raises:
        OutputError: the folder cannot be written.
    """
    with _staged(_absolute(Path(final))) as tmp:
        yield tmp


@contextlib.contextmanager
def _staged(final: Path):
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.edgekit-tmp-{os.getpid()}-"))
        apply_umask(tmp, directory=True)
    except OSError as e:
        raise OutputError(f"cannot write to output directory {final}: {e.strerror or e}") from e
    try:
        yield tmp
        interrupts.check()  # a Ctrl-C swallowed by a finalizer must still stop the commit
        try:
            _commit(tmp, final)
        except OSError as e:
            raise OutputError(f"cannot write to output directory {final}: {e.strerror or e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _absolute(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    return p if p.parent == p else p.parent.resolve() / p.name


_STALE = re.compile(r"^\.(?P<name>.+)\.edgekit-(?:tmp|old)-(?P<pid>\d+)(?:-[^/]*)?$")


def _remove_stale(final: Path) -> None:
    """Remove ``.NAME.edgekit-tmp-PID-*`` / ``.NAME.edgekit-old-PID*`` left by edgekit processes that died."""
    if not final.parent.is_dir():
        return
    for p in final.parent.iterdir():
        m = _STALE.match(p.name)
        if not m or m["name"] != final.name or _alive(int(m["pid"])):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _refusal(final: Path, protect: Iterable[object]) -> str | None:
    """Why ``final`` may not be replaced by an artifact (None when it may)."""
    home = Path(os.path.expanduser("~")).resolve()
    cwd = Path.cwd().resolve()
    resolved = final.resolve()
    if resolved.parent == resolved:
        return "it is the filesystem root"
    if resolved == home or resolved in home.parents:
        return "it is your home folder" if resolved == home else "it holds your home folder"
    if resolved == cwd or resolved in cwd.parents:
        return "it is the current folder" if resolved == cwd else "it holds the current folder"
    for i, src in _paths(protect):
        what = f"the source model {src.name}" if i == 0 else f"{src.name}, an input of this conversion"
        if resolved == src:
            return f"it is {what}"
        if resolved in src.parents:
            return f"it holds {what}"
    if final.is_symlink():
        return "it is a symbolic link"
    if final.exists() and not final.is_dir():
        return "it is an existing file"
    if not final.is_dir():
        return None
    try:
        entries = sorted(e.name for e in final.iterdir())
    except OSError as e:
        return f"its contents cannot be listed ({e.strerror or e})"
    if not entries:
        return None
    if MANIFEST not in entries or not (final / MANIFEST).is_file() or (final / MANIFEST).is_symlink():
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        return f"it is a non-empty folder that is not an edgekit artifact (holds {shown})"
    listed = _listed_names(final / MANIFEST)
    if listed is None:
        return f"its {MANIFEST} is not one edgekit can read, so it may not be an edgekit artifact"
    extra = [e for e in entries if e not in listed]
    if extra:
        shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
        return f"it holds files that are not part of the artifact there ({shown})"
    return None


#: refusals of a folder that must stay where it is: suggest a new subfolder of it rather than a sibling
_STAYS = ("filesystem root", "home folder", "current folder", "source model ", "an input of")


def _listed_names(manifest: Path) -> set[str] | None:
    """Top-level names an existing ``artifact.json`` accounts for (None if it is not one edgekit wrote)."""
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        d = json.loads(manifest.read_text(encoding="utf-8"))
        entries = list(d["files"].values()) + ([d["reference"]] if d.get("reference") else [])
        entries += [f for st in d.get("stages") or [] for f in st["files"].values()]
        names = {MANIFEST}
        for e in entries:
            parts = Path(e["path"]).parts
            if not parts or Path(e["path"]).is_absolute() or ".." in parts:
                return None
            names.add(parts[0])
        return names
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def _paths(items: Iterable[object]) -> list[tuple[int, Path]]:
    """(position, resolved path) of the existing filesystem paths among ``items`` (paths, or ``file.py:factory``
    references); the first item is the source model."""
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, (str, Path)):
            continue
        for cand in (str(item), str(item).rsplit(":", 1)[0]):
            with contextlib.suppress(OSError, ValueError):
                if cand and Path(cand).exists():
                    out.append((i, Path(cand).resolve()))
                    break
    return out


def _free_path(final: Path, reason: str) -> Path:
    """A path that does not exist yet, near ``final``."""
    if any(k in reason for k in _STAYS) and final.is_dir():
        base = final / "edgekit-artifact"
    elif final.exists() and not final.is_dir():
        base = final.with_name(f"{final.stem or final.name}-artifact")
    else:
        base = final.with_name(f"{final.name}-new")
    if not base.exists() and not base.is_symlink():
        return base
    for i in range(2, 10_000):
        cand = base.with_name(f"{base.name}-{i}")
        if not cand.exists() and not cand.is_symlink():
            return cand
    return base.with_name(f"{base.name}-{secrets.token_hex(4)}")


def _commit(tmp: Path, final: Path) -> None:
    """Put ``tmp`` at ``final``: a rename, or an atomic exchange with the previous artifact, which is then
    removed. SIGINT/SIGTERM are held meanwhile; one that arrives before the previous artifact is removed undoes
    the swap (so "nothing was written" stays true) and is delivered when the mask is lifted."""
    with _signals_held() as pending:
        if pending():
            return
        occupied = final.is_dir() and not final.is_symlink() and any(final.iterdir())
        if not occupied:
            was_dir = final.is_dir()
            os.replace(tmp, final)
            if pending():
                os.replace(final, tmp)
                if was_dir:
                    final.mkdir()
            return
        _swap(tmp, final)  # tmp now holds the previous artifact
        if pending():
            _swap(tmp, final)
            return
        shutil.rmtree(tmp, ignore_errors=True)


def _swap(a: Path, b: Path) -> None:
    """Exchange two directories: atomically with renameat2, else with three renames (under held signals)."""
    if _exchange(a, b):
        return
    parked = b.with_name(f".{b.name}.edgekit-old-{os.getpid()}-{secrets.token_hex(4)}")
    os.replace(b, parked)
    try:
        os.replace(a, b)
    except OSError:
        os.replace(parked, b)
        raise
    os.replace(parked, a)


_HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT/SIGTERM for the block; yields ``pending()``: whether one arrived meanwhile (or before).

    The handlers are swapped for one that only records (a signal mask would not do: another thread, e.g. a
    progress spinner's, would take the signal and Python would still raise in the main thread). On exit the
    recorded signal is handed to the handler that was there, which raises (Ctrl-C, SIGTERM under the CLI).
    """
    import threading

    if threading.current_thread() is not threading.main_thread():  # handlers can only change there
        yield interrupts.pending
        interrupts.check()
        return
    arrived: list[int] = []
    before = {s: signal.getsignal(s) for s in _HELD}
    held = [s for s, h in before.items() if h not in (signal.SIG_IGN, None)]
    for s in held:
        signal.signal(s, lambda signum, frame: arrived.append(signum))
    try:
        yield lambda: bool(arrived) or interrupts.pending()
    finally:
        for s in held:
            signal.signal(s, before[s])
    if arrived:
        handler = before[arrived[0]]
        if callable(handler):
            handler(arrived[0], None)
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), arrived[0])
        raise KeyboardInterrupt
    interrupts.check()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux's renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
