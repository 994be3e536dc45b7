"""Typed errors. Library code raises these (chained with ``from``); only ``cli.py`` maps them to exit codes."""

from __future__ import annotations


class EdgekitError(Exception):
    """Base class of every error edgekit raises on purpose."""

    exit_code = 1


class InputError(EdgekitError):
    """The user gave something edgekit cannot use (missing file, bad model, bad flag value)."""

    exit_code = 2


class OutputError(EdgekitError):
    """The output location cannot be written."""

    exit_code = 3


class MissingDependencyError(EdgekitError):
    """An optional package is not installed; the message names the extra that provides it."""

    exit_code = 4

    def __init__(self, package: str, extra: str, hint: str | None = None):
        self.package = package
        self.extra = extra
        install = hint or f"pip install 'edgekit[{extra}]'"
        super().__init__(f"{package} is not installed; install it with: {install}")


class ConversionError(EdgekitError):
    """A converter failed or produced something unusable."""

    exit_code = 5


class UnsupportedOpError(ConversionError):
    """A node of the model cannot be converted to the target."""

    def __init__(self, op_type: str, node: str, target: str, detail: str = ""):
        self.op_type, self.node, self.target = op_type, node, target
        extra = f": {detail}" if detail else ""
        super().__init__(f"op {op_type} (node '{node}') cannot be converted to {target}{extra}")


class ParityError(EdgekitError):
    """The converted artifact does not compute the same thing as the reference."""

    exit_code = 6

    def __init__(self, message: str, report=None):
        self.report = report
        super().__init__(message)


class RuntimeUnavailableError(EdgekitError):
    """A runtime, delegate or device was asked for and is not present here."""

    exit_code = 7


class DeviceError(RuntimeUnavailableError):
    """A named device or delegate is not present; the message lists those that are."""


class AuditError(EdgekitError):
    """An execution audit found ops that deviate from what was asked (``--require fast|delegate|precision``)."""

    exit_code = 8
