"""Backends: one folder per artifact format, each declaring itself once (see :mod:`.declaration`).

``registry`` finds them (built-ins and the ``edgekit.backends`` entry-point group); ``converter`` and
``session`` hold the protocol every converter and the API every runtime session implement.
"""
