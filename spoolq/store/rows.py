"""Rows of the store's tables turned into the job's own records.

Owns the mapping from column names to ``Job``, ``Attempt`` and ``DaemonInfo`` fields, so
that both SQL stores read a row the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from spoolq.jobs import Attempt, DaemonInfo, Job, JobSpec, JobState

Row = Mapping[str, Any]


def attempt_from_row(row: Row) -> Attempt:
    return Attempt(**{f.name: row[f.name] for f in dataclasses.fields(Attempt)})


def daemon_from_row(row: Row) -> DaemonInfo:
    return DaemonInfo(
        row["id"],
        row["host"],
        row["pid"],
        row["started_at"],
        row["heartbeat_at"],
        row["pid_start"],
        row["home"],
    )


def job_from_row(row: Row, spec: JobSpec | None = None) -> Job:
    """A Job from its row; ``spec``, when the caller holds the parsed spec of this very
    row, saves parsing its JSON again."""
    if spec is None and row["spec"]:
        spec = JobSpec.from_json(row["spec"])
    return Job(
        id=row["id"],
        seq=row["seq"],
        state=JobState(row["state"]),
        lane=row["lane"],
        priority=row["priority"],
        trigger=row["trigger"],
        claimed_path=row["claimed_path"],
        log=row["log"],
        spec=spec,
        idem_key=row["idem_key"],
        attempts=row["attempts"],
        failures=row["failures"],
        retries=row["retries"],
        retry_backoff=row["retry_backoff"],
        timeout=row["timeout"],
        kill_grace=row["kill_grace"],
        on_success=row["on_success"],
        exit_code=row["exit_code"],
        reason=row["reason"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        not_before=row["not_before"],
        owner=row["owner"],
        pid=row["pid"],
        cancel_requested=bool(row["cancel_requested"]),
        pid_start=row["pid_start"],
        home=row["home"],
    )
