"""The crash harness at CI size: SIGKILLs at random moments plus crashes at the fault
points between renames and commits; nothing lost, nothing doubled."""

from __future__ import annotations

import pytest

from bench.chaos import run


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nothing_lost_or_doubled_under_kills_and_faults() -> None:
    report = run(n=400, kills=6, producers=3, seed=7, faults="claimed=0.01,enqueued=0.01,"
                 "started=0.01,finished=0.01")  # fmt: skip
    assert report.ok, report.summary()
    assert report.kills == 6
    assert report.reruns <= report.kills + report.fault_exits
