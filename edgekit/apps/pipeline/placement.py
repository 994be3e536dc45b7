"""Placing whole stages on units from measured (stage, unit) costs.

The throughput of a pipelined run is set by its busiest unit (the sum of the costs of the stages it
runs); its latency by the sum along the chain. The plan minimizes the busiest unit's load under a
per-frame latency bound: exhaustively for a handful of stages, with a HEFT-style list schedule
(each stage, in order, to the choice that keeps the busiest unit lightest) beyond that.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from edgekit.apps.pipeline.definition import PipelineSpec
from edgekit.errors import InputError

EXHAUSTIVE_LIMIT = 20_000


@dataclass
class Plan:
    assignment: dict[str, str]          # stage -> "unit" or "unit:format"
    unit_load_ms: dict[str, float]
    latency_ms: float
    method: str
    considered: int
    why: str = ""

    @property
    def bottleneck(self) -> tuple[str, float]:
        unit = max(self.unit_load_ms, key=self.unit_load_ms.get)
        return unit, self.unit_load_ms[unit]

    def to_dict(self) -> dict:
        return {"assignment": self.assignment, "unit_load_ms": self.unit_load_ms, "latency_ms": self.latency_ms,
                "method": self.method, "considered": self.considered, "why": self.why}


def _evaluate(spec: PipelineSpec, choice: dict[str, str], costs: dict[tuple[str, str], float]):
    load: dict[str, float] = {}
    latency = 0.0
    for s in spec.stages:
        c = costs[(s.name, choice[s.name])]
        unit = s.unit_of(choice[s.name])
        load[unit] = load.get(unit, 0.0) + c
        latency += c
    return load, latency


def plan(spec: PipelineSpec, costs: dict[tuple[str, str], float], latency_bound_ms: float = float("inf"),
         exclude: set[str] | frozenset = frozenset()) -> Plan:
    """The best assignment of ``spec``'s stages given measured ``costs`` (ms) per (stage, choice)."""
    options = []
    for s in spec.stages:
        opts = [c for c in s.units if (s.name, c) in costs and s.unit_of(c) not in exclude]
        if not opts:
            raise InputError(f"stage '{s.name}' has no measured unit left (chain: {s.units})")
        options.append(opts)
    n = 1
    for o in options:
        n *= len(o)
    if n <= EXHAUSTIVE_LIMIT:
        best = None
        for combo in itertools.product(*options):
            choice = {s.name: c for s, c in zip(spec.stages, combo)}
            load, latency = _evaluate(spec, choice, costs)
            pref = sum(s.units.index(c) for s, c in zip(spec.stages, combo))
            key = (latency > latency_bound_ms, max(load.values()), latency, pref)
            if best is None or key < best[0]:
                best = (key, choice, load, latency)
        _, choice, load, latency = best
        method, considered = "exhaustive", n
    else:
        choice, load = {}, {}
        for s, opts in zip(spec.stages, options):
            def score(c, s=s):
                trial = dict(load)
                trial[s.unit_of(c)] = trial.get(s.unit_of(c), 0.0) + costs[(s.name, c)]
                return (max(trial.values()), costs[(s.name, c)], s.units.index(c))

            pick = min(opts, key=score)
            choice[s.name] = pick
            load[s.unit_of(pick)] = load.get(s.unit_of(pick), 0.0) + costs[(s.name, pick)]
        load, latency = _evaluate(spec, choice, costs)
        method, considered = "list-scheduling (HEFT-style)", len(spec.stages)
    p = Plan(choice, load, latency, method, considered)
    unit, ms = p.bottleneck
    fits = "within" if latency <= latency_bound_ms else "OVER"
    p.why = (f"{method} over {considered} assignment(s): busiest unit {unit} at {ms:.2f} ms/frame "
             f"(<= {1000 / ms:.0f} fps pipelined); chain latency {latency:.2f} ms, {fits} the "
             f"{latency_bound_ms:g} ms bound")
    return p
