"""Following an app config's fallback ladder at run time.

The profiler ships a ladder below its choice (``ladder`` in the app config: each rung faster than the one above,
measured, every file hashed). While ``edgekit process`` runs, :class:`LadderFollower` times every model call of
the segmentation stage; when the p90 of the last frames misses the rung's budget it steps down one rung, and
every switch is recorded (frame, from, to, the p90 that missed, the budget) for the report. It never steps
silently and never steps back up: a device that got slower is not assumed to have recovered.

The budget a model call is held to is the config's frame budget for segmentation minus what the rest of that
step (resize, normalize, mask upsample) measured on the profiled device for that rung, so the whole step keeps
the budget the profiler checked.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Switch:
    frame: int
    from_label: str
    to_label: str
    p90_ms: float
    budget_ms: float

    def to_dict(self) -> dict:
        return {"frame": self.frame, "from": self.from_label, "to": self.to_label, "p90_ms": round(self.p90_ms, 3),
                "budget_ms": round(self.budget_ms, 3)}

    def message(self) -> str:
        return (f"frame {self.frame}: the segmentation model's p90 {self.p90_ms:.2f} ms missed its "
                f"{self.budget_ms:.2f} ms budget on {self.from_label}; stepped down the config's ladder to "
                f"{self.to_label}")


@dataclass
class LadderFollower:
    """Which rung runs now. ``rungs[0]`` is the config's runtime; ``budgets[i]`` the model-call budget of rung i.

    ``window`` frames are judged at a time (their p90); the first ``settle`` calls on a rung are not timed
    (sessions load, caches warm)."""

    rungs: list
    budgets: list[float]
    window: int = 30
    settle: int = 3
    index: int = 0
    switches: list[Switch] = field(default_factory=list)
    exhausted_at: int | None = None  # the frame the last rung missed its budget too
    _times: list[float] = field(default_factory=list)
    _seen: int = 0
    _sessions: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def current(self):
        return self.rungs[self.index]

    def observe(self, frame: int, ms: float) -> Switch | None:
        """Record one model call of the current rung; returns the switch when this call made the follower step
        down."""
        with self._lock:
            self._seen += 1
            if self._seen <= self.settle:
                return None
            self._times.append(ms)
            if len(self._times) < self.window:
                return None
            p90 = float(np.percentile(self._times, 90))
            self._times.clear()
            budget = self.budgets[self.index]
            if p90 <= budget:
                return None
            if self.index + 1 >= len(self.rungs):
                if self.exhausted_at is None:
                    self.exhausted_at = frame
                return None
            switch = Switch(frame, self.rungs[self.index].label(), self.rungs[self.index + 1].label(), p90, budget)
            self.switches.append(switch)
            self.index += 1
            self._seen = 0
            return switch

    def session(self, entry):
        """The session of a rung below the runtime (loaded once, as the rung says)."""
        with self._lock:
            if entry.key not in self._sessions:
                from edgekit.api import load

                self._sessions[entry.key] = load(entry.artifact_dir, threads=entry.threads, delegate=entry.delegate)
            return self._sessions[entry.key]

    def to_dict(self) -> dict:
        return {"rungs": [r.label() for r in self.rungs], "model_budgets_ms": [round(b, 3) for b in self.budgets],
                "window": self.window, "final_rung": self.index, "switches": [s.to_dict() for s in self.switches],
                "last_rung_missed_at_frame": self.exhausted_at}


def model_budget(config: dict, rung: dict) -> float:
    """The budget of one model call on ``rung``: the config's segmentation budget minus the rest of the step as
    the profiler measured it for that rung (frame p50 minus model p50), or the whole budget where the frame was
    not timed."""
    budget = float(config["measured"]["budget_ms"])
    if rung.get("e2e_p50_ms") is not None and rung.get("p50_ms") is not None:
        budget -= max(float(rung["e2e_p50_ms"]) - float(rung["p50_ms"]), 0.0)
    return max(budget, 0.0)


def follower_for(config: dict, runtime_entry, make_entry, window: int = 30) -> LadderFollower | None:
    """The follower of ``config``'s ladder (None when it has none). ``make_entry(role, key, rung)`` builds the
    process's model entry of a rung (the config must come from ``load_config``, which checked every rung's
    files)."""
    ladder = config.get("ladder") or []
    if not ladder:
        return None
    rungs = [runtime_entry] + [make_entry(f"ladder[{i}]", f"{r['target']}-rung{i + 1}", r)
                               for i, r in enumerate(ladder)]
    budgets = [model_budget(config, config["runtime"])] + [model_budget(config, r) for r in ladder]
    return LadderFollower(rungs, budgets, window=window)
