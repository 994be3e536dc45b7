"""The numeric debugger: ``edgekit diff`` (per-layer error of an artifact against its fp32 reference) and
``edgekit bisect`` (the first layer that diverges, confirmed by keeping it in float).

It runs on the core and the backends only: each runtime exposes its intermediate tensors through
:meth:`~edgekit.backends.session.Session.taps` and says how they connect through
:meth:`~edgekit.backends.session.Session.chunk_inputs`; this package aligns them with the reference ONNX nodes
(by name, by weights, by structure) and never branches on a format.
"""

from edgekit.apps.debugger.bisect import BisectReport, bisect
from edgekit.apps.debugger.diff import DiffReport, LayerDiff, diff

__all__ = ["BisectReport", "DiffReport", "LayerDiff", "bisect", "diff"]
