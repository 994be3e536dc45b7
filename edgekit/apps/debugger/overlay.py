"""``edgekit diff --overlay FILE``: the per-node error as Model Explorer node data.

Model Explorer (the ``ai-edge-model-explorer`` package) colours a graph's nodes from a node-data JSON file. The
file written here is its single-graph form (``GraphNodeData``): ``results`` maps a node key to ``{"value": number}``
and ``thresholds`` colours the ranges (each item styles the values up to its ``value``). A node key may be any
output tensor name of the node (matched with the ``tensor_name`` of the node's outputs metadata), so the
reference's ONNX output tensor names are used: the overlay is meant for the reference ONNX graph (the artifact's
``reference.onnx``), whichever format the artifact is.

The value is the layer's cumulative SQNR in dB (the artifact run end to end; :data:`~.diff.SQNR_EXACT` for an exact
match), the number ``edgekit diff`` prints in its ``SQNR dB`` column. Nodes that could not be aligned have no entry.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.apps.debugger.diff import ISOLATED_MARGIN_DB, SQNR_EXACT, DiffReport

#: colours of the three ranges: below the threshold, within :data:`ISOLATED_MARGIN_DB` over it, above that
COLOURS = ("#d93025", "#f9ab00", "#1e8e3e")


def overlay_data(report: DiffReport) -> dict:
    """The node-data dict (see the module docstring) of ``report``."""
    results = {ly.tensor: {"value": round(float(ly.sqnr_db), 4)} for ly in report.layers}
    thr = float(report.threshold_db)
    thresholds = [{"value": round(thr, 4), "bgColor": COLOURS[0], "textColor": "#ffffff"},
                  {"value": round(thr + ISOLATED_MARGIN_DB, 4), "bgColor": COLOURS[1]},
                  {"value": SQNR_EXACT, "bgColor": COLOURS[2], "textColor": "#ffffff"}]
    return {"results": results, "thresholds": thresholds}


def write_overlay(report: DiffReport, path: str | Path) -> Path:
    """Write :func:`overlay_data` of ``report`` to ``path`` atomically (readers never see half a file).

    Raises:
        OutputError: the file cannot be written.
    """
    from edgekit.core.files import write_json_atomic
    from edgekit.errors import OutputError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--overlay {path} is a folder; name a .json file to write")
    try:
        return write_json_atomic(path, overlay_data(report))
    except OSError as e:
        raise OutputError(f"cannot write the overlay {path}: {e.strerror or e}") from e
