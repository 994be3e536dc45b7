"""The converter protocol and the job it receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from edgekit.spec import IOSpec
from edgekit.target import Target

if TYPE_CHECKING:
    from edgekit.ingest import SourceModel
    from edgekit.runtimes.base import Session


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


@dataclass
class ConvertedModel:
    """What a converter wrote into its work directory."""

    files: dict[str, str]
    io: IOSpec
    route: str
    tools: dict[str, str]
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Converter(Protocol):
    """Turns a prepared source model into an artifact of one format.

    ``precisions`` lists the target precisions it produces; ``extra`` is the pip extra that installs
    its dependencies; ``supports_keep_float`` says whether ``job.keep_float`` is honoured (used by the
    parity gate's mixed-precision fallback).
    """

    format: str
    precisions: tuple[str, ...]
    extra: str
    supports_keep_float: bool

    def check_available(self) -> None:
        """Raise :class:`~edgekit.errors.MissingDependencyError` when a needed package is missing."""

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        """Write the artifact's files into ``workdir`` and describe them."""

    def op_support(self, op_type: str) -> bool | None:
        """Whether an ONNX op type is known to convert (None: unknown)."""

    def alternatives(self, job: ConversionJob) -> list[dict]:
        """Option overrides to retry with, in order, when the parity gate fails (may be empty)."""

    def verifier(self, artifact) -> Session:
        """The session the parity gate runs on a fresh artifact (normally its own runtime)."""


class BaseConverter:
    """Defaults for the optional parts of the :class:`Converter` protocol."""

    supports_keep_float = False

    def op_support(self, op_type: str) -> bool | None:
        return True

    def alternatives(self, job: ConversionJob) -> list[dict]:
        return []

    def verifier(self, artifact):
        """The session the parity gate runs: the artifact's own runtime, unless a format cannot run here."""
        from edgekit.runtimes.registry import open_session

        return open_session(artifact)
