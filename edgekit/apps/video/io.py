"""Reading frames (video files, image folders, a camera) and writing them (video file or folder).

A video that cannot be read to its end (truncated, corrupt) yields the frames it can; the reader
then says where it stopped and why, instead of failing the whole run. What is written appears whole or
not at all, and replaces only edgekit's own previous output (:class:`FrameWriter`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgekit.core import interrupts
from edgekit.core.files import apply_umask, sha256_file, write_json_atomic
from edgekit.errors import InputError, OutputError

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class FrameSource:
    frames: Iterator[np.ndarray]
    fps: float
    expected: int | None          # frame count the container announces (None: unknown / camera)
    kind: str
    read: int = 0
    stopped: str = ""             # why reading stopped early ("" when it reached the end)


def open_input(source: str | Path, max_frames: int | None = None) -> FrameSource:
    """Frames from a video file, a folder of images (sorted by name) or ``camera:N``.

    Raises:
        InputError: the source does not exist, cannot be read, or ``max_frames`` is below 1.
    """
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames {max_frames}: expected a count of at least 1")
    s = str(source)
    if s.startswith("camera:") or s.isdigit():
        number = s.split(":", 1)[-1]
        if not number.isdigit():
            raise InputError(f"'{s}': a camera is camera:N with N a number")
        index = int(number)
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            raise InputError(f"no camera {index} on this machine (OpenCV could not open it)")
        return _from_capture(cap, max_frames, "camera", None)
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXT)
        if not files:
            raise InputError(f"{p} has no images ({', '.join(sorted(IMAGE_EXT))})")
        src = FrameSource(iter(()), 30.0, len(files), "images")
        src.frames = _images(files[:max_frames], src)
        return src
    if not p.is_file():
        raise InputError(f"input not found: {p}")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise InputError(f"{p} is not a video OpenCV can read")
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    return _from_capture(cap, max_frames, "video", expected)


def _from_capture(cap, max_frames, kind, expected) -> FrameSource:
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    src = FrameSource(iter(()), fps if 1 <= fps <= 240 else 30.0, expected, kind)

    def frames():
        try:
            while max_frames is None or src.read < max_frames:
                ok, frame = cap.read()
                if not ok or frame is None:
                    if expected and src.read < expected:
                        src.stopped = f"stopped at frame {src.read} of {expected}: the rest could not be decoded"
                    break
                src.read += 1
                yield frame
        finally:
            cap.release()
        if src.read == 0:
            raise InputError("no frame could be read")

    src.frames = frames()
    return src


def _images(files, src: FrameSource):
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            src.stopped = f"stopped at {f.name}: not a readable image"
            return
        src.read += 1
        yield img


VIDEO_EXT = {".mp4", ".avi", ".mkv", ".mov"}
#: the manifest inside a folder output, and the suffix of the one beside a video output: what edgekit wrote
#: there, so a later run may replace its own output and nothing else
FOLDER_MANIFEST = "edgekit-process.json"
VIDEO_MANIFEST_SUFFIX = ".edgekit.json"


def _read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == "edgekit process" else None


def _listed(manifest: dict | None, key: str, path: Path) -> bool:
    """Whether ``manifest[key]`` records ``path`` with its current sha256."""
    entry = (manifest or {}).get(key)
    return (isinstance(entry, dict) and entry.get("path") == path.name and path.is_file()
            and not path.is_symlink() and sha256_file(path) == entry.get("sha256"))


class FrameWriter:
    """Writes to ``OUTPUT.mp4``/``.avi``/... or a folder of PNGs, and the before/after sheet beside it.

    Everything is staged beside the output (``.NAME.edgekit-tmp-*``) and appears only when :meth:`close`
    commits it whole; ``close(keep=False)`` (an error, Ctrl-C, SIGTERM) removes the staging and leaves what
    was there before untouched. An existing output (or sheet) is replaced only when it is edgekit's own
    previous output, recognised by its manifest (``edgekit-process.json`` inside a folder output,
    ``OUTPUT.edgekit.json`` beside a video); anything else is refused before a frame is processed.

    Raises:
        OutputError: (on construction) the output or sheet exists and is not edgekit's, or cannot be written.
    """

    def __init__(self, output: str | Path, fps: float, sheet: str | Path | None = None):
        self.output, self.fps = Path(output), fps
        self.is_video = self.output.suffix.lower() in VIDEO_EXT
        self.sheet = Path(sheet) if sheet is not None else None
        self.manifest = (self.output / FOLDER_MANIFEST if not self.is_video
                         else self.output.with_name(self.output.name + VIDEO_MANIFEST_SUFFIX))
        self._writer = None
        self._tmp: Path | None = None
        self._sheet_tmp: Path | None = None
        self._size: tuple[int, ...] | None = None
        self.count = 0
        self.closed = False
        self._check_replaceable()
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            if self.is_video:
                fd, tmp = tempfile.mkstemp(dir=self.output.parent, prefix=f".{self.output.name}.edgekit-tmp-",
                                           suffix=self.output.suffix)
                os.close(fd)
                self._tmp = Path(tmp)
            else:
                self._tmp = Path(tempfile.mkdtemp(dir=self.output.parent, prefix=f".{self.output.name}.edgekit-tmp-"))
            apply_umask(self._tmp, directory=not self.is_video)
        except OSError as e:
            self.close(keep=False)
            raise OutputError(f"cannot write to {self.output.parent}: {e.strerror or e}") from e

    # -- what may be replaced
    def _previous(self) -> dict | None:
        return _read_manifest(self.manifest)

    def _own_output(self, previous: dict | None) -> bool:
        if self.is_video:
            return _listed(previous, "output", self.output) and not self.manifest.is_symlink()
        if previous is None or self.output.is_symlink() or self.manifest.is_symlink():
            return False
        files = previous.get("files")
        if not isinstance(files, list):
            return False
        return {p.name for p in self.output.iterdir()} <= {*map(str, files), FOLDER_MANIFEST}

    def _check_replaceable(self) -> None:
        previous = self._previous()
        if self.output.exists() or self.output.is_symlink():
            empty_folder = (not self.is_video and self.output.is_dir() and not self.output.is_symlink()
                            and not any(self.output.iterdir()))
            if not empty_folder and not self._own_output(previous):
                kind = "folder" if self.output.is_dir() else "file"
                raise OutputError(f"output {self.output} exists and is not edgekit's previous output (a {kind} "
                                  f"without a matching edgekit manifest); refusing to replace it: use a new path, "
                                  f"e.g. {self._free()}")
        if self.sheet is not None and (self.sheet.exists() or self.sheet.is_symlink()) \
                and not _listed(previous, "sheet", self.sheet):
            raise OutputError(f"{self.sheet} exists and is not edgekit's previous before/after sheet; refusing to "
                              f"replace it: use a new output path, e.g. {self._free()}")

    def _free(self) -> Path:
        """A sibling output path where neither the output nor its sheet exists."""
        stem, suffix = self.output.stem, self.output.suffix if self.is_video else ""
        for i in range(2, 10_000):
            candidate = self.output.with_name(f"{stem if self.is_video else self.output.name}-{i}{suffix}")
            sheet = candidate.with_name(candidate.stem + "_before_after.png")
            if not (candidate.exists() or candidate.is_symlink() or sheet.exists()):
                return candidate
        return self.output.with_name(f"{self.output.name}-{os.getpid()}")

    # -- writing
    def write(self, frame: np.ndarray) -> None:
        """Append one frame.

        Raises:
            OutputError: the frame's size differs from the first one's (a video cannot hold it), or the
                frame cannot be written.
        """
        if self.closed:
            raise OutputError(f"{self.output} is already closed")
        if self._size is None:
            self._size = frame.shape
        elif frame.shape != self._size:
            raise OutputError(f"frame {self.count} is {frame.shape[1]}x{frame.shape[0]}, the output's frames are "
                              f"{self._size[1]}x{self._size[0]}")
        if not self.is_video:
            if not cv2.imwrite(str(self._tmp / f"{self.count:06d}.png"), frame):
                raise OutputError(f"cannot write frame {self.count} to {self.output}")
        else:
            if self._writer is None:
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.output.suffix.lower() != ".avi" else "MJPG"))
                self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
                if not self._writer.isOpened():
                    raise OutputError(f"OpenCV cannot write video {self.output}")
            self._writer.write(frame)
        self.count += 1

    def write_sheet(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Stage the before/after sheet (committed with the frames)."""
        if self.sheet is None or not pairs:
            return
        fd, tmp = tempfile.mkstemp(dir=self.sheet.parent, prefix=f".{self.sheet.name}.edgekit-tmp-", suffix=".png")
        os.close(fd)
        self._sheet_tmp = Path(tmp)
        before_after_sheet(pairs, self._sheet_tmp)
        apply_umask(self._sheet_tmp)

    def close(self, keep: bool = True, info: dict | None = None) -> None:
        """Commit the output (``keep``), or remove everything staged (``keep=False``).

        ``info`` goes into the manifest (frames, config, deviations).

        Raises:
            OutputError: the output cannot be committed (nothing partial is left).
            KeyboardInterrupt: a Ctrl-C arrived (even one swallowed elsewhere); nothing is committed.
        """
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.release()
        try:
            if keep:
                interrupts.check()
                self._commit(info or {})
        finally:
            self._discard()

    def _discard(self) -> None:
        for tmp in (self._tmp, self._sheet_tmp):
            if tmp is None:
                continue
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)

    def _commit(self, info: dict) -> None:
        if self.count == 0:
            raise OutputError(f"no frame was written to {self.output}")
        from edgekit import __version__

        previous = self._previous()
        manifest = {"written_by": "edgekit process", "edgekit_version": __version__, "frames": self.count, **info,
                    "sheet": None}
        if self._sheet_tmp is not None:
            manifest["sheet"] = {"path": self.sheet.name, "sha256": sha256_file(self._sheet_tmp)}
        if self.is_video:
            manifest["output"] = {"path": self.output.name, "sha256": sha256_file(self._tmp)}
        else:
            manifest["files"] = sorted(p.name for p in self._tmp.iterdir())
            write_json_atomic(self._tmp / FOLDER_MANIFEST, manifest)
        old = self.output.with_name(f".{self.output.name}.edgekit-old-{os.getpid()}")
        moved = False
        try:
            self._check_replaceable()  # nothing foreign appeared while we worked
            if self.output.exists():
                os.replace(self.output, old)
                moved = True
            os.replace(self._tmp, self.output)
        except OSError as e:
            if moved and not self.output.exists():
                os.replace(old, self.output)  # put the previous output back
            raise OutputError(f"cannot write {self.output}: {e.strerror or e}") from e
        if moved:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        try:
            if self._sheet_tmp is not None:
                os.replace(self._sheet_tmp, self.sheet)
                self._sheet_tmp = None
            elif self.sheet is not None and _listed(previous, "sheet", self.sheet):
                self.sheet.unlink()  # our previous run's sheet would not match this output
            if self.is_video:
                write_json_atomic(self.manifest, manifest)
        except OSError as e:
            raise OutputError(f"wrote {self.output} but not its sheet/manifest: {e.strerror or e}") from e


def before_after_sheet(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path, width: int = 640) -> Path:
    """A PNG with one row per sampled frame: before | after."""
    rows = []
    for before, after in pairs:
        h = int(before.shape[0] * width / before.shape[1])
        rows.append(np.concatenate([cv2.resize(before, (width, h)), cv2.resize(after, (width, h))], axis=1))
    if not cv2.imwrite(str(path), np.concatenate(rows, axis=0)):
        raise OutputError(f"cannot write the before/after sheet {path}")
    return path
