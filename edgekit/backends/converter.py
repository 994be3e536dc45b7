"""The converter protocol and the job it receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from edgekit.core.iospec import IOSpec
from edgekit.core.target import Target

if TYPE_CHECKING:
    from edgekit.backends.session import Session
    from edgekit.core.ingest import SourceModel


@dataclass
class ConversionJob:
    """Everything a converter needs: the prepared source, the target, data, options."""

    source: SourceModel
    target: Target
    #: calibration samples, each ``{input name: array}`` in the source's layout
    calibration: list[dict[str, np.ndarray]]
    options: dict = field(default_factory=dict)
    #: node names (of the source ONNX graph) to keep in float in a quantized target
    keep_float: tuple[str, ...] = ()
    #: ``convert --keep-stages``: the folder (inside the converter's work directory) that receives each
    #: intermediate product handed to :meth:`keep_stage`; None: intermediate products are not kept
    stages_dir: Path | None = None
    #: the products kept so far in this attempt, in the order of :meth:`Converter.stages`
    stages: list[StageProduct] = field(default_factory=list)
    #: number given to the first product kept by the converter (stages before it are edgekit's own)
    stage_base: int = 0

    def keep_stage(self, name: str, files: dict[str, Path], precision: str, io: IOSpec, fmt: str | None = None,
                   note: str = "") -> None:
        """Keep one intermediate product (``files``: role -> a file the converter wrote) as
        ``stages/<n>-<name>/``; nothing happens unless :attr:`stages_dir` is set. ``fmt``/``precision`` say how
        to open it (a format's session at that precision); the last declared stage is the artifact itself and
        is never passed here.

        Raises:
            OSError: the product cannot be copied.
        """
        if self.stages_dir is None:
            return
        import shutil

        folder = self.stages_dir / f"{self.stage_base + len(self.stages)}-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        rel = {}
        for role, src in files.items():
            shutil.copyfile(src, folder / Path(src).name)
            rel[role] = (folder / Path(src).name).relative_to(self.stages_dir.parent).as_posix()
        self.stages.append(StageProduct(name, fmt or self.target.format, precision, rel, io, note))


@dataclass
class StageProduct:
    """One conversion step's product (``convert --keep-stages``), runnable as ``format``-``precision``."""

    name: str
    format: str
    precision: str
    #: role -> path relative to the artifact folder
    files: dict[str, str]
    io: IOSpec
    note: str = ""


@dataclass
class ConvertedModel:
    """What a converter wrote into its work directory."""

    files: dict[str, str]
    io: IOSpec
    route: str
    tools: dict[str, str]
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: node names of ``job.keep_float`` that this conversion really kept in float, as read back from what it
    #: wrote (layers the backend could not map are left out, never reported as kept)
    kept_float: tuple[str, ...] = ()


@runtime_checkable
class Converter(Protocol):
    """Turns a prepared source model into an artifact of one format.

    ``format`` names the :class:`~edgekit.backends.declaration.Backend` that declares it (precisions, extra,
    options live there, once); ``supports_keep_float`` says whether the converter can honour ``job.keep_float`` at
    all, and :meth:`keep_float_unsupported` whether (and why not) one given job's route can (used by the
    parity gate's mixed-precision fallback). A converter that honours it reports the layers it really kept in
    :attr:`ConvertedModel.kept_float`.
    """

    format: str
    supports_keep_float: bool

    def check_available(self) -> None:
        """Raise :class:`~edgekit.errors.MissingDependencyError` when a needed package is missing."""

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        """Write the artifact's files into ``workdir`` and describe them."""

    def op_support(self, op_type: str) -> bool | None:
        """Whether an ONNX op type is known to convert (None: unknown)."""

    def alternatives(self, job: ConversionJob) -> list[dict]:
        """Option overrides to retry with, in order, when the parity gate fails (may be empty)."""

    def keep_float_unsupported(self, job: ConversionJob) -> str | None:
        """None when converting ``job`` (its target and options, e.g. the route) honours ``job.keep_float``;
        otherwise the reason it cannot, said to the user when the mixed-precision fallback stops."""

    def verifier(self, artifact) -> Session:
        """The session the parity gate runs on a fresh artifact (normally its own runtime)."""

    def stages(self, job: ConversionJob) -> tuple[str, ...]:
        """The steps ``job``'s route takes after edgekit's prepared ONNX, in order (``("export", "quantize")``):
        each but the last leaves a product the converter hands to :meth:`ConversionJob.keep_stage`; the last
        writes the artifact's own files. ``edgekit bisect`` evaluates each product to name the step that
        introduced an error."""


class BaseConverter:
    """Defaults for the optional parts of the :class:`Converter` protocol."""

    supports_keep_float = False

    def op_support(self, op_type: str) -> bool | None:
        return True

    def alternatives(self, job: ConversionJob) -> list[dict]:
        return []

    def keep_float_unsupported(self, job: ConversionJob) -> str | None:
        if not job.target.is_quantized:
            return f"{job.target} is not quantized: there is nothing to keep in float"
        if not self.supports_keep_float:
            return f"the {self.format} converter cannot keep layers in float"
        return None

    def verifier(self, artifact):
        """The session the parity gate runs: the artifact's own runtime, unless a format cannot run here."""
        from edgekit.backends.registry import open_session

        return open_session(artifact)

    def stages(self, job: ConversionJob) -> tuple[str, ...]:
        return ("convert",)
