"""Waiting for jobs to end, from outside the daemon: ``spoolq wait``, ``submit --wait`` and
``spoolq.wait``.

Owns finding the job a reference names (a job id or prefix, or the path a trigger was
published under - then the job it became, once the daemon has claimed it) and sleeping
until every one has reached a final state. The store's wake-up (``Store.listen_ended``)
ends the sleep as a job ends; a slow poll backs it up, so a lost wake-up costs seconds,
never a hang. A trigger still in its spool is watched with a cheap ``stat`` until it is
claimed. Leaves what a final state means to ``jobs`` and printing to the CLI.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spoolq.claims import origin_tag, split_claim_name
from spoolq.errors import JobNotFound, SpoolqError, WaitTimeout
from spoolq.jobs import Job
from spoolq.store.base import Store

POLL_WITH_WAKEUP = 5.0  # seconds between looks at the store when it can wake us
POLL_WITHOUT = 1.0  # ... when it cannot (no listener could be made)
TRIGGER_POLL = 0.1  # seconds between stat()s of a trigger waiting in its spool
UNCLAIMED_GRACE = 10.0  # a trigger gone from its spool, with no job and no claim, after this


def is_trigger_ref(ref: str | os.PathLike[str]) -> bool:
    """Whether ``ref`` names a trigger file rather than a job: a path (it has a slash or
    exists), not an id."""
    text = os.fspath(ref)
    return isinstance(ref, os.PathLike) or os.sep in text or os.path.lexists(text)


@dataclass
class _Target:
    ref: str
    paths: tuple[str, ...] = ()  # a trigger's absolute path(s) (as given, and resolved)
    after: int = 0  # its job is newer than this sequence number
    job: Job | None = None
    gone_since: float | None = None  # when the trigger left its spool without a job


def _trigger_paths(ref: str) -> tuple[str, ...]:
    given = os.path.abspath(ref)
    head, base = os.path.split(given)
    resolved = os.path.join(os.path.realpath(head), base)
    return (given,) if resolved == given else (given, resolved)


def wait_for(
    store: Store,
    refs: Sequence[str | os.PathLike[str]],
    timeout: float | None = None,
    *,
    claimed_dir: Path | None = None,
    after: int | None = None,
    on_end: Callable[[Job], None] | None = None,
    mono: Callable[[], float] = time.monotonic,
) -> list[Job]:
    """Block until the job of every reference has reached a final state; return them in
    the order given. ``after``: the triggers' jobs are newer than this sequence number (a
    producer reads ``last_seq()`` before publishing). ``claimed_dir``: the daemon's
    claimed/, where a trigger taken but not yet recorded can be seen. ``on_end`` is called
    as each job ends. Raises JobNotFound, WaitTimeout."""
    deadline = None if timeout is None else mono() + timeout
    listener = store.listen_ended()
    try:
        targets = _resolve(store, refs, after, claimed_dir)
        left = list(targets)
        while True:
            quick = _look(store, left, claimed_dir, mono)
            for t in [t for t in left if t.job is not None and t.job.state.finished]:
                left.remove(t)
                if on_end is not None:
                    assert t.job is not None
                    on_end(t.job)
            if not left:
                return [t.job for t in targets if t.job is not None]
            pause = TRIGGER_POLL if quick else POLL_WITH_WAKEUP if listener else POLL_WITHOUT
            if deadline is not None:
                remaining = deadline - mono()
                if remaining <= 0:
                    names = ", ".join(t.job.id if t.job else t.ref for t in left)
                    raise WaitTimeout(f"timed out after {timeout:g}s waiting for {names}")
                pause = min(pause, remaining)
            if listener is not None and listener.fileno() >= 0:
                select.select([listener.fileno()], [], [], pause)
                listener.drain()
            else:
                time.sleep(pause)
                if listener is not None:
                    listener.drain()  # a listener whose connection dropped connects again
    finally:
        if listener is not None:
            listener.close()


def _resolve(
    store: Store,
    refs: Sequence[str | os.PathLike[str]],
    after: int | None,
    claimed_dir: Path | None,
) -> list[_Target]:
    targets = []
    for ref in refs:
        if is_trigger_ref(ref):
            paths = _trigger_paths(os.fspath(ref))
            # Read before looking at the file: a job recorded after this look is newer.
            seq = after if after is not None else store.last_seq()
            t = _Target(os.fspath(ref), paths, seq)
            if not os.path.lexists(paths[0]):
                t.after = 0  # published earlier: its newest job
                t.job = _by_trigger(store, t)
                if t.job is None and not (claimed_dir and _claimed(claimed_dir, paths[0])):
                    raise SpoolqError(f"no job for trigger {t.ref}, and it is not in its spool")
            targets.append(t)
        else:
            targets.append(_Target(str(ref), job=store.get(str(ref))))  # JobNotFound at once
    return targets


def _look(
    store: Store, left: list[_Target], claimed_dir: Path | None, mono: Callable[[], float]
) -> bool:
    """Bring each target's job up to date. True if a trigger still waits to be claimed (look
    again soon: a trigger's claim wakes nobody)."""
    quick = False
    ids = [t.job.id for t in left if t.job is not None]
    states = store.known_ids(ids) if ids else {}
    for t in left:
        if t.job is None:
            if os.path.lexists(t.paths[0]):
                quick = True  # still in its spool
                continue
            t.job = _by_trigger(store, t)
            if t.job is None:
                quick = True
                _check_claimed(t, claimed_dir, mono())
            continue
        state = states.get(t.job.id)
        if state is None:
            raise JobNotFound(t.job.id)  # pruned meanwhile
        if state is not t.job.state:
            t.job = store.get(t.job.id)
    return quick


def _by_trigger(store: Store, t: _Target) -> Job | None:
    for path in t.paths:
        job = store.find_by_trigger(path, t.after)
        if job is not None:
            return job
    return None


def _check_claimed(t: _Target, claimed_dir: Path | None, now: float) -> None:
    """A trigger gone from its spool with no job yet: claimed and about to be recorded (or
    recorded when its daemon restarts), or deleted by someone. The latter is an error once
    ``UNCLAIMED_GRACE`` has passed without a claimed file to show for it."""
    if t.gone_since is None:
        t.gone_since = now
        return
    if now - t.gone_since < UNCLAIMED_GRACE:
        return
    if claimed_dir is not None and _claimed(claimed_dir, t.paths[0]):
        return
    raise SpoolqError(
        f"trigger {t.ref} left its spool {UNCLAIMED_GRACE:g}s ago, but no job was recorded "
        "for it: deleted or moved away before spoolq claimed it?"
    )


def _claimed(claimed_dir: Path, path: str) -> bool:
    directory, base = os.path.split(path)
    tag = origin_tag(directory)
    try:
        names = os.listdir(claimed_dir)
    except OSError:
        return False
    for name in names:
        parts = split_claim_name(name)
        if parts is not None and parts[1] == tag and base.startswith(parts[2]):
            return True
    return False
