"""Letting any daemon run a job that waits for its home: ``spoolq retry --any-host``.

A job of an ordinary lane runs only where its trigger is, in the state directory that
claimed it (its home). When no daemon serves that directory any more, an operator may
release the job to every daemon on the store. Any daemon can run it once the store holds
its trigger's content: an any-host lane's job has it from the start; for any other job it
is read here, from the job's own file, if that file can be reached from where the command
runs (the same host, or shared storage) - and only if it passes the very checks a daemon
applies to a trigger (``claims.judged()``).

Owns the decision whether a job may leave its home and where its content comes from. Leaves
the release itself (content kept and home let go, in one transaction) to the store, and
the daemon that runs it to ``Ledger._here``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from spoolq.claims import judged
from spoolq.config import Config
from spoolq.errors import SpoolqError, TriggerRejected
from spoolq.jobs import HomeInfo, Job
from spoolq.procs import daemon_alive, job_process_groups
from spoolq.statedir import StateDir
from spoolq.store import Store
from spoolq.trust import TrustPolicy


def content_to_keep(store: Store, config: Config, job: Job) -> str | None:
    """The trigger content the store must keep before ``job`` can leave its home: None if
    it needs none (it holds it already, or the job has no home). Raises SpoolqError, naming
    the job and what to do, if the job cannot be released from here."""
    if not job.home or store.trigger_text(job.id) is not None:
        return None
    now = time.time()
    for d in store.daemons():
        if d.home == job.home and daemon_alive(d, now, config.stale_after):
            raise SpoolqError(
                f"job {job.id}: its home {job.home} is served by daemon {d.id} on host "
                f"{d.host}, which runs it (retry it without --any-host if it has ended); "
                "--any-host is for jobs whose home no daemon serves"
            )
    home = next((h for h in store.homes() if h.home == job.home), None)
    return read_at_home(config, job, home)


def read_at_home(config: Config, job: Job, home: HomeInfo | None) -> str:
    """The text of ``job``'s trigger file in its own state directory, as seen from here,
    judged as a daemon judges a trigger (no link followed, a regular file, trusted, at most
    ``max_trigger_bytes``, parsed)."""
    path = job.file_path  # claimed/ while queued, its archive once finished
    root = path.parent.parent
    last = f", last served from host {home.host}" if home is not None else ""
    serve = f"start a daemon on {root}{last}, and the job runs there"
    # Only its daemon died, not this host: a peer elsewhere re-queued the job without
    # reaching its processes. Released now, it would run twice at once.
    left = job_process_groups(job.id)
    if left:
        groups = ", ".join(str(g) for g in sorted(left))
        raise SpoolqError(
            f"job {job.id}: processes of its last run still run on this host (process "
            f"group {groups}): stop them (kill -- -PGID) and run this again, or {serve} "
            "(a daemon stops them before the job runs again)"
        )
    if not root.is_dir():
        raise SpoolqError(
            f"job {job.id}: its state directory {root} is not reachable from here, and the "
            f"store does not hold its trigger's content: run this command on a host where "
            f"{root} is mounted, or {serve}"
        )
    found = StateDir(root).home
    if found != job.home:
        raise SpoolqError(
            f"job {job.id}: {root} here is another state directory ({found}), not the "
            f"job's home ({job.home}): run this command on a host where the job's own "
            f"{root} is mounted, or {serve}"
        )
    policy = TrustPolicy.from_names(
        config.security.trusted_owners, config.security.max_trigger_bytes
    )
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _spec, text = judged(fd, path.name, policy, config, os.path.dirname(job.trigger))
        finally:
            os.close(fd)
    except TriggerRejected as exc:
        raise SpoolqError(
            f"job {job.id}: its trigger file {path} fails the checks a daemon applies "
            f"({exc.reason}): put the job's trigger back there as a plain file (spoolq "
            f"check {path} shows what a daemon thinks of it), or {serve}"
        ) from None
    except FileNotFoundError:
        raise SpoolqError(
            f"job {job.id}: its trigger file {path} is gone, and the store does not hold its "
            f"content: {serve}"
        ) from None
    except OSError as exc:
        raise SpoolqError(
            f"job {job.id}: cannot read its trigger file {path} ({exc.strerror or exc}): {serve}"
        ) from None
    return text


def put_back(job: Job) -> None:
    """After a finished job was queued again: its trigger back into its home's claimed/
    (where that directory's daemon, if it returns, archives it once the job has run)."""
    root = Path(job.claimed_path).parent.parent
    if root.is_dir():
        StateDir(root).place(job.claimed_path, job.state.value)
