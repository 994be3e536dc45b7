"""Targets: ``tflite-int8`` -> format ``tflite`` + precision ``int8``."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import InputError


@dataclass(frozen=True)
class Target:
    """A conversion target: an artifact format and a numeric precision."""

    format: str
    precision: str

    def __str__(self) -> str:
        return f"{self.format}-{self.precision}"

    @property
    def backend(self):
        """The :class:`~edgekit.backends.declaration.Backend` that declares this target's format."""
        from edgekit.backends import registry

        return registry.backend(self.format)

    @property
    def is_quantized(self) -> bool:
        """Whether the backend declares this precision quantized (judged by task metric, not tight tolerances)."""
        return self.backend.is_quantized(self.precision)

    @property
    def tolerance_class(self) -> str:
        """Which parity tolerance row applies: ``fp32``, ``fp16`` or ``int8``."""
        return self.backend.tolerance_class(self.precision)

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse and check against the declared backends.

        Raises:
            InputError: an unknown target (the message lists the valid ones).
        """
        from edgekit.backends import registry

        fmt, _, precision = text.strip().lower().partition("-")
        valid = registry.all_targets()
        target = cls(fmt, precision)
        if str(target) not in valid:
            raise InputError(f"unknown target '{text}'; valid targets: {', '.join(valid)}")
        return target
