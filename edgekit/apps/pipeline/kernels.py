"""The kernel registry: the only kernels a pipeline file may name.

A pipeline YAML is data. Its ``kernel:`` values are names looked up here, never ``module:attr`` strings
to import: the built-in kernels are listed below (in code), and installed plugins add theirs through the
``edgekit.kernels`` entry-point group (``name = "package.module:callable"`` in the plugin's package
metadata; installing a package is the user's explicit choice to run its code). Any other string is
refused with one line naming the known kernels, before anything is imported or called.

Python callers building :class:`~edgekit.apps.pipeline.definition.Stage` objects pass callables directly; this
registry is only for names read from files.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from edgekit.core.plugins import load_entry_points
from edgekit.errors import InputError

#: name -> "module:attr" of edgekit's own kernels (functions, or classes made once per stage with ``params``)
BUILTIN: dict[str, str] = {
    "model_input": "edgekit.apps.video.kernels:model_input",
    "refine_mask": "edgekit.apps.video.kernels:refine_mask",
    "temporal_smoother": "edgekit.apps.video.kernels:TemporalSmoother",
    "blurred_background": "edgekit.apps.video.kernels:blurred_background",
    "blur_background": "edgekit.apps.video.kernels:blur_background",
    "replace_background": "edgekit.apps.video.kernels:replace_background",
    "composite": "edgekit.apps.video.kernels:composite",
    "temporal_denoiser": "edgekit.apps.video.effects.denoise:TemporalDenoiser",
    "clahe": "edgekit.apps.video.effects.lowlight:clahe",
    "face_tracker": "edgekit.apps.video.effects.beauty:FaceTracker",
    "reuse_luma": "edgekit.apps.video.reuse:luma_at",
}

GROUP = "edgekit.kernels"
_REGISTRY: dict[str, str] = dict(BUILTIN)


def known() -> list[str]:
    """Every registered kernel name (built-ins and installed plugins), sorted.

    Raises:
        EdgekitError: two plugins register the same kernel name.
    """
    load_entry_points(GROUP, _REGISTRY, what="kernel")
    return sorted(_REGISTRY)


def lookup(name: object) -> Callable:
    """The kernel registered as ``name`` (a function or a class).

    Raises:
        InputError: ``name`` is not a string or not a registered kernel (a ``module:attr`` string is not
            a name and is refused without importing anything).
    """
    names = known()
    if not isinstance(name, str) or name not in _REGISTRY:
        hint = ""
        if isinstance(name, str) and ":" in name and name.rpartition(":")[2] in names:
            hint = f" (did you mean '{name.rpartition(':')[2]}'?)"
        raise InputError(f"kernel {name!r} is not a registered kernel{hint}; known: {', '.join(names)}")
    module, _, attr = _REGISTRY[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"kernel '{name}' is registered as '{_REGISTRY[name]}', which cannot be imported: "
                         f"{type(e).__name__}: {e}") from e


def make(name: object, params: dict, n_inputs: int, stage: str) -> tuple[Callable, dict]:
    """The callable a stage runs and the keyword arguments it is called with: a function with ``params``,
    or an instance of a kernel class made with ``params`` (then called with none). The parameters and the
    number of inputs are checked against the kernel's signature here, so a wrong one is one line at load
    time, not a failure on the first frame.

    Raises:
        InputError: unknown kernel, parameters the kernel does not take, a wrong number of inputs, or a
            kernel class whose constructor refuses the parameters.
    """
    fn = lookup(name)
    inputs = [None] * n_inputs
    if isinstance(fn, type):
        _bind(fn, [], params, stage, name, "parameters")
        try:
            fn = fn(**params)
        except Exception as e:  # noqa: BLE001 - a constructor's refusal of the file's params is a bad input
            raise InputError(f"stage '{stage}': kernel '{name}' cannot be made with params {params}: "
                             f"{type(e).__name__}: {e}") from e
        _bind(fn, inputs, {}, stage, name, "inputs")
        return fn, {}
    _bind(fn, inputs, params, stage, name, "inputs and parameters")
    return fn, dict(params)


def _bind(fn, args: list, kwargs: dict, stage: str, name: object, what: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: checked when it runs
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise InputError(f"stage '{stage}': kernel '{name}' does not accept these {what} ({len(args)} input(s), "
                         f"params {sorted(kwargs)}): {e}") from e
