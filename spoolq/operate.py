"""The operator's commands: see the queue (status, jobs, show, logs) and steer it (retry,
cancel, pause, resume, prune). Each acts through the store; a running daemon reacts within
a second (the store wakes it)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from spoolq.config import parse_duration
from spoolq.display import print_json, render_job, render_jobs, render_status
from spoolq.errors import SpoolqError, UsageError
from spoolq.jobs import JobState
from spoolq.procs import daemon_alive
from spoolq.serialize import job_detail, job_list, status_dict
from spoolq.settings import Settings, complete_job, complete_lane


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(s: Settings, as_json: bool) -> None:
    """Lanes (concurrency, running, queued, paused), the running jobs with their elapsed
    time, totals per state, live daemons."""
    with s.store() as (config, _state, store):
        now = time.time()
        running = store.list_jobs(state=JobState.RUNNING, limit=10_000)
        data = status_dict(store, config, now, running)
    if as_json:
        print_json(data)
    else:
        render_status(data["lanes"], data["states"], data["daemons"], running, now)


@click.command()
@click.option("--state", "state_filter", type=click.Choice([s.value for s in JobState]))
@click.option("--lane", shell_complete=complete_lane)
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def jobs(
    s: Settings, state_filter: str | None, lane: str | None, limit: int, as_json: bool
) -> None:
    """List jobs, newest first."""
    with s.store() as (_c, _s, store):
        found = store.list_jobs(
            state=JobState(state_filter) if state_filter else None, lane=lane, limit=limit
        )
    if as_json:
        print_json(job_list(found))
    else:
        render_jobs(found)


@click.command()
@click.argument("job_ref", shell_complete=complete_job)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def show(s: Settings, job_ref: str, as_json: bool) -> None:
    """One job with its progress and every attempt (exit code, reason, duration, CPU, peak
    RSS)."""
    with s.store() as (_c, _s, store):
        job = store.get(job_ref)
        attempts = store.attempts(job.id)
        progress = store.progress_of([job.id]).get(job.id)
    data = job_detail(job, attempts, progress)
    if as_json:
        print_json(data)
    else:
        text = progress.describe() if progress and data["progress"] else None
        render_job({**data, "progress": text}, attempts)


@click.command()
@click.argument("job_ref", shell_complete=complete_job)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.pass_obj
def logs(s: Settings, job_ref: str, follow: bool) -> None:
    """Print a job's log (stdout and stderr of every attempt)."""
    with s.store() as (_c, _s, store):
        job = store.get(job_ref)
        path = Path(job.log)
        pos = 0
        sink = sys.stdout.buffer
        while True:
            try:
                with path.open("rb") as fh:
                    fh.seek(pos)
                    while chunk := fh.read(1 << 16):
                        sink.write(chunk)
                        pos += len(chunk)
                    sink.flush()
            except FileNotFoundError:
                if not follow:
                    raise SpoolqError(f"no log yet for job {job.id} ({path})") from None
            if not follow:
                return
            job = store.get(job.id)
            if job.state.finished:
                follow = False  # one more read picks up the tail, then stop
                continue
            time.sleep(0.2)


@click.command()
@click.argument("job_refs", nargs=-1, shell_complete=complete_job)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
@click.pass_obj
def retry(s: Settings, job_refs: tuple[str, ...], all_failed: bool) -> None:
    """Queue finished jobs again, with a fresh set of retries."""
    if not job_refs and not all_failed:
        raise UsageError("name a JOB or use --failed")
    with s.store() as (_c, state, store):
        # Resolve every reference first: a typo in the third id changes nothing.
        ids = [store.get(r).id for r in job_refs]
        if all_failed:
            ids += [i for i in store.failed_ids() if i not in ids]
            if not ids:
                click.echo("no failed jobs")
        try:
            for job_id in ids:
                job = store.retry(job_id, time.time())
                state.place(job.claimed_path, job.state.value)
                click.echo(f"{job.id} queued again (attempt {job.attempts + 1} next)")
        finally:
            store.notify()


@click.command()
@click.argument("job_refs", nargs=-1, required=True, shell_complete=complete_job)
@click.pass_obj
def cancel(s: Settings, job_refs: tuple[str, ...]) -> None:
    """Cancel jobs: a queued job never runs; a running one is terminated."""
    with s.store() as (config, state, store):
        # Resolve every reference first: a typo in the third id cancels nothing.
        ids = [store.get(ref).id for ref in job_refs]
        try:
            for job_id in ids:
                now = time.time()
                job = store.cancel(job_id, now)
                if job.state is JobState.CANCELLED:
                    state.place(job.claimed_path, job.state.value)
                    click.echo(f"{job.id} cancelled")
                    continue
                owner = next((d for d in store.daemons() if d.id == job.owner), None)
                if owner is not None and daemon_alive(owner, now, config.stale_after):
                    click.echo(f"{job.id} is running: its daemon is terminating it")
                else:
                    click.echo(
                        f"{job.id} is running but its daemon ({job.owner}) is gone: the "
                        "daemon that next rescues it stops it instead of running it again"
                    )
        finally:
            store.notify()  # even after an error, wake the daemon for the ones done


@click.command()
@click.argument("lane", shell_complete=complete_lane)
@click.pass_obj
def pause(s: Settings, lane: str) -> None:
    """Stop starting jobs in LANE (new triggers are still queued)."""
    with s.store() as (_c, _s, store):
        store.set_paused(lane, True)
        store.notify()
    click.echo(f"lane {lane} paused")


@click.command()
@click.argument("lane", shell_complete=complete_lane)
@click.pass_obj
def resume(s: Settings, lane: str) -> None:
    """Start jobs in LANE again."""
    with s.store() as (_c, _s, store):
        store.set_paused(lane, False)
        store.notify()
    click.echo(f"lane {lane} resumed")


@click.command()
@click.option("--older-than", "older", required=True, metavar="DURATION", help="e.g. 14d.")
@click.pass_obj
def prune(s: Settings, older: str) -> None:
    """Delete finished job records, their logs and archived triggers."""
    try:
        age = parse_duration(older)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    with s.store() as (_c, state, store):
        # Only this host's jobs: another host's triggers and logs are not here to delete,
        # and a row removed while its trigger waits in that host's claimed/ would be
        # revived there as a new job.
        removed = store.prune(time.time() - age, state.home)
        for job in removed:
            state.remove(job.claimed_path, job.state.value, job.log)
    click.echo(f"pruned {len(removed)} job(s)")


COMMANDS = [status, jobs, show, logs, retry, cancel, pause, resume, prune]
