"""Runtimes: one :class:`~edgekit.runtimes.base.Session` implementation per artifact format."""
