"""Targets: ``tflite-int8`` -> format ``tflite`` + precision ``int8``."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import InputError

#: precisions whose parity is judged by task metric rather than tight tolerances
QUANTIZED_PRECISIONS = ("int8", "int8-dynamic", "w8", "w6", "w4")


@dataclass(frozen=True)
class Target:
    """A conversion target: an artifact format and a numeric precision."""

    format: str
    precision: str

    def __str__(self) -> str:
        return f"{self.format}-{self.precision}"

    @property
    def is_quantized(self) -> bool:
        return self.precision in QUANTIZED_PRECISIONS

    @property
    def tolerance_class(self) -> str:
        """Which parity tolerance row applies: ``fp32``, ``fp16`` or ``int8``."""
        if self.is_quantized:
            return "int8"
        return "fp16" if self.precision == "fp16" else "fp32"

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse and check against the registered converters; unknown targets list the valid ones."""
        from edgekit.converters import registry

        fmt, _, precision = text.strip().lower().partition("-")
        valid = registry.all_targets()
        target = cls(fmt, precision)
        if str(target) not in valid:
            raise InputError(f"unknown target '{text}'; valid targets: {', '.join(valid)}")
        return target
