"""The conversion core: ingest a source, describe its IO, convert it through a backend, prove parity.

Nothing here names a format: what one format is and does lives in its folder under :mod:`edgekit.backends`.
"""
