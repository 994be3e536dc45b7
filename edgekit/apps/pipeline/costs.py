"""Measuring (stage, unit) costs on the spot: each stage on each unit it may use, in a thread
entered into that unit (pinned to its core), on real intermediate values of a sample frame."""

from __future__ import annotations

import threading
import time

import numpy as np

from edgekit.apps.pipeline.definition import PipelineSpec
from edgekit.apps.pipeline.executor import StageCalls
from edgekit.apps.pipeline.units import Unit, unit_execution
from edgekit.errors import EdgekitError, InputError


def measure_costs(spec: PipelineSpec, units: dict[str, Unit], frame: np.ndarray, repeats: int = 10,
                  calls: StageCalls | None = None) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], str]]:
    """Median ms per (stage, choice); choices that cannot run here are returned with the reason. A stage
    raising any exception on a choice makes that choice unavailable (with the exception named), never a
    crash of the measurement, except an input error (the pipeline file's fault, the same on every unit).

    Raises:
        InputError: a stage refused what the pipeline file gives it (e.g. a reuse stage whose model gives logits).
    """
    with unit_execution():
        return _measure(spec, units, frame, repeats, calls or StageCalls(units))


def _measure(spec, units, frame, repeats, calls):
    values = {"frame": frame}
    inputs = {}
    for s in spec.stages:  # intermediate values from the first runnable choice of each stage
        inputs[s.name] = dict(values)
        for choice in s.units:
            if s.unit_of(choice) in units:
                try:
                    values.update(calls(s, choice, values, 0))
                    break
                except InputError:
                    raise
                except Exception:  # noqa: BLE001 - measured (and reported) per choice below
                    continue
    costs, unavailable = {}, {}
    for s in spec.stages:
        for choice in s.units:
            unit = units.get(s.unit_of(choice))
            if unit is None:
                unavailable[(s.name, choice)] = f"no unit '{s.unit_of(choice)}' on this machine"
                continue
            result: dict = {}

            def bench(unit=unit, s=s, choice=choice, result=result):
                unit.enter()
                try:
                    calls(s, choice, dict(inputs[s.name]), 0)  # warm-up (opens sessions)
                    times = []
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        calls(s, choice, dict(inputs[s.name]), 0)
                        times.append((time.perf_counter() - t0) * 1000)
                    result["ms"] = float(np.median(times))
                except InputError as e:
                    result["input_error"] = e
                except EdgekitError as e:
                    result["error"] = str(e)
                except Exception as e:  # noqa: BLE001 - a stage failing here makes its choice unavailable
                    result["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"

            t = threading.Thread(target=bench)
            t.start()
            t.join()
            if "input_error" in result:
                raise result["input_error"]
            if "ms" in result:
                costs[(s.name, choice)] = result["ms"]
            else:
                unavailable[(s.name, choice)] = result.get("error", "the measurement ended without a result")
    return costs, unavailable
