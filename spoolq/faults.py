"""Crash points for the chaos harness (bench/chaos.py), off unless SPOOLQ_FAULTS is set.

``SPOOLQ_FAULTS="claimed=0.01,finished=0.02"`` makes the daemon die (``os._exit``, like a
SIGKILL: no cleanup, no flush) with that probability at each named point, so that the
harness reaches the narrow windows between a rename and a commit that random kills rarely
hit. Points: claimed (trigger renamed, no row yet), enqueued (row committed, not yet
dispatched), started (claimed in the store, process not spawned), spawned (process
running, its pid not yet recorded), finished (outcome committed, trigger not yet
archived).
"""

from __future__ import annotations

import os
import random

EXIT_CODE = 86


def _parse(spec: str | None) -> dict[str, float]:
    points: dict[str, float] = {}
    for part in (spec or "").split(","):
        name, _, p = part.partition("=")
        if name.strip():
            points[name.strip()] = float(p or 1)
    return points


_POINTS = _parse(os.environ.get("SPOOLQ_FAULTS"))


def crash_point(name: str) -> None:
    if _POINTS and random.random() < _POINTS.get(name, 0.0):  # noqa: S311 - not crypto
        os._exit(EXIT_CODE)
