"""The producer's side of an outcome: ``spoolq wait``, and what ``submit`` does with
``--wait`` and ``--id`` (the duplicate check before publishing, the wait after it).

Finding and waiting for the jobs is ``waiting``'s; this module finds the store a producer
means and says the outcome: one line per job, exit 0 if every job succeeded, else 1.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import click

from spoolq.config import Config, parse_duration
from spoolq.display import print_json
from spoolq.errors import SpoolqError, StoreError, UsageError
from spoolq.jobs import Job, JobState
from spoolq.settings import Settings, complete_job
from spoolq.statedir import StateDir
from spoolq.store import Store, open_store
from spoolq.waiting import is_trigger_ref, wait_for


def near(s: Settings, config: Config, directory: Path | None) -> StateDir:
    """The state directory a producer means: the usual rule, except that with no flag and
    no config saying otherwise, a spool's own ``.spoolq`` (as ``spoolq run DIR`` makes it)."""
    if s.state_dir is None and config.state_dir is None and not config.spool and directory:
        return StateDir(directory.resolve() / ".spoolq")
    return s.state(config)


@contextlib.contextmanager
def open_near(config: Config, state: StateDir) -> Iterator[Store]:
    if config.store in ("sqlite", "") and not state.db.exists():
        raise StoreError(f"no spoolq store at {state.root} (has its daemon ever started?)")
    store = open_store(config.store, state.root)
    try:
        yield store
    finally:
        store.close()


def outcome_line(job: Job) -> str:
    """``ID succeeded`` or ``ID failed: exit 3``: what happened to a job, on one line."""
    text = f"{job.id} {job.state.value}"
    if job.state is not JobState.SUCCEEDED and job.reason:
        text += f": {job.reason}"
    return f"{text} ({os.path.basename(job.trigger)})"


def _duration(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="JOB|TRIGGER-PATH...",
                shell_complete=complete_job)  # fmt: skip
@click.option("--timeout", metavar="DURATION", help="Give up after this long (exit 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON at the end.")
@click.pass_obj
def wait(s: Settings, refs: tuple[str, ...], timeout: str | None, as_json: bool) -> None:
    """Block until the jobs end; print each outcome as it comes. Exit 0 if all succeeded,
    else 1.

    A job is named by its id (or an unambiguous prefix) or by the path its trigger was
    published under; a trigger still in its spool is waited for until it is claimed.
    """
    limit = _duration(timeout, "--timeout")
    config = s.load()
    first = next((Path(r) for r in refs if is_trigger_ref(r)), None)
    state = near(s, config, first.parent if first else None)
    with open_near(config, state) as store:
        on_end = None if as_json else lambda job: click.echo(outcome_line(job))
        jobs = wait_for(store, refs, limit, claimed_dir=state.claimed, on_end=on_end)
    if as_json:
        print_json([j.to_dict() for j in jobs])
    if any(j.state is not JobState.SUCCEEDED for j in jobs):
        raise SystemExit(1)


def check_duplicate(config: Config, state: StateDir, idem: str) -> None:
    """Before publishing a trigger with ``--id``: exit 1 naming the job that would make it
    a duplicate. A store that cannot be reached is said, and skipped."""
    try:
        with open_near(config, state) as store:
            found = store.find_active_key(idem, time.time() - config.dedup_window)
            job = store.get(found) if found else None
    except StoreError as exc:
        click.echo(f"spoolq: duplicate check for --id {idem!r} skipped: {exc}", err=True)
        return
    if job is not None:
        raise SpoolqError(
            f"--id {idem!r} is already job {job.id} ({job.state.value}); nothing published"
        )


def last_seq(config: Config, state: StateDir) -> int | None:
    """The newest job's sequence number before publishing, so that the wait finds the job
    this trigger becomes even if an older one had the same name. None: no store yet."""
    try:
        with open_near(config, state) as store:
            return store.last_seq()
    except StoreError:
        return None


def wait_published(config: Config, state: StateDir, trigger: Path, after: int | None) -> None:
    """``submit --wait``: wait for the job a just-published trigger becomes, and exit with
    its outcome (the reason on stderr). A store that does not exist yet is waited for."""
    while config.store in ("sqlite", "") and not state.db.exists():
        time.sleep(0.5)  # no store yet: its daemon has not started (it claims at start)
    with open_near(config, state) as store:
        (job,) = wait_for(store, [trigger], claimed_dir=state.claimed, after=after or 0)
    if job.state is JobState.SUCCEEDED:
        click.echo(outcome_line(job))
        return
    click.echo(f"spoolq: {outcome_line(job)}", err=True)
    raise SystemExit(1)
