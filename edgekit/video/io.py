"""Reading frames (video files, image folders, a camera) and writing them (video file or folder).

A video that cannot be read to its end (truncated, corrupt) yields the frames it can; the reader
then says where it stopped and why, instead of failing the whole run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

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
    s = str(source)
    if s.startswith("camera:") or s.isdigit():
        index = int(s.split(":")[-1])
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


class FrameWriter:
    """Writes to ``OUTPUT.mp4``/``.avi`` or a folder of PNGs; the file appears only when closed whole."""

    def __init__(self, output: str | Path, fps: float):
        self.output, self.fps = Path(output), fps
        self._writer = None
        self._tmp: Path | None = None
        self.count = 0
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write to {self.output.parent}: {e.strerror or e}") from e
        self.is_video = self.output.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov")
        if not self.is_video:
            self.output.mkdir(parents=True, exist_ok=True)

    def write(self, frame: np.ndarray) -> None:
        if not self.is_video:
            cv2.imwrite(str(self.output / f"{self.count:06d}.png"), frame)
        else:
            if self._writer is None:
                fd, tmp = tempfile.mkstemp(dir=self.output.parent, prefix=f".{self.output.stem}.",
                                           suffix=self.output.suffix)
                os.close(fd)
                self._tmp = Path(tmp)
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.output.suffix.lower() != ".avi" else "MJPG"))
                self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
                if not self._writer.isOpened():
                    raise OutputError(f"OpenCV cannot write video {self.output}")
            self._writer.write(frame)
        self.count += 1

    def close(self, keep: bool = True) -> None:
        if self._writer is not None:
            self._writer.release()
            if keep:
                os.replace(self._tmp, self.output)
            else:
                self._tmp.unlink(missing_ok=True)


def before_after_sheet(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path, width: int = 640) -> Path:
    """A PNG with one row per sampled frame: before | after."""
    rows = []
    for before, after in pairs:
        h = int(before.shape[0] * width / before.shape[1])
        rows.append(np.concatenate([cv2.resize(before, (width, h)), cv2.resize(after, (width, h))], axis=1))
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))
    return path
