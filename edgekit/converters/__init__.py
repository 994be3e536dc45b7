"""Converters: one per artifact format, each implementing :class:`~edgekit.converters.base.Converter`."""
