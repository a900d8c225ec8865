"""The operator's commands: see the queue (status, jobs, show, logs) and steer it (retry,
cancel, pause, resume, prune). Each acts through the store; a running daemon reacts within
a second (the store wakes it)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from spoolq.config import Config, parse_duration
from spoolq.display import follow_progress, print_json, render_job, render_jobs, render_status
from spoolq.errors import SpoolqError, UsageError
from spoolq.jobs import Job, JobState
from spoolq.procs import daemon_alive
from spoolq.progress import Progress
from spoolq.release import content_to_keep, put_back
from spoolq.serialize import job_detail, jobs_json, status_dict, waiting_for
from spoolq.settings import Settings, complete_job, complete_lane
from spoolq.store import Store


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
        progress = {
            r["id"]: Progress.from_dict(r["progress"]).describe()
            for r in data["running_jobs"]
            if r["progress"]
        }
        render_status(
            data["lanes"], data["states"], data["daemons"], running, now, data["waiting_homes"],
            progress,
        )  # fmt: skip


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
    with s.store() as (config, _s, store):
        found = store.list_jobs(
            state=JobState(state_filter) if state_filter else None, lane=lane, limit=limit
        )
        if as_json:
            print_json(jobs_json(store, config, found, time.time()))
            return
        waiting = waiting_for(store, config, time.time(), found)
    render_jobs(found, waiting)


@click.command()
@click.argument("job_ref", shell_complete=complete_job)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-f", "--follow", is_flag=True, help="Then a live progress bar until it ends.")
@click.pass_obj
def show(s: Settings, job_ref: str, as_json: bool, follow: bool) -> None:
    """One job with its progress and every attempt (exit code, reason, duration, CPU, peak
    RSS)."""
    if as_json and follow:
        raise UsageError("--follow draws a progress bar for people: leave out --json")
    with s.store() as (_c, _s, store):
        job = store.get(job_ref)
        attempts = store.attempts(job.id)
        progress = store.progress_of([job.id]).get(job.id)
        data = job_detail(job, attempts, progress)
        if as_json:
            print_json(data)
            return
        text = progress.describe() if progress and data["progress"] else None
        render_job({**data, "progress": text}, attempts)
        if follow:

            def read() -> tuple[Job, Progress | None]:
                now = store.get(job.id)
                found = store.progress_of([job.id]).get(job.id)
                return now, found if found and found.attempt == now.attempts else None

            follow_progress(read)


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
                    _log_elsewhere(store, job.id, str(path))
                    return
            if not follow:
                return
            job = store.get(job.id)
            if job.state.finished:
                follow = False  # one more read picks up the tail, then stop
                continue
            time.sleep(0.2)


def _log_elsewhere(store: Store, job_id: str, path: str) -> None:
    """No log file here: the job ran on a host whose state directory this one is not.
    Print the tail the store kept when it finished, and say where the whole log is."""
    tail = store.log_tail(job_id)
    attempts = store.attempts(job_id)
    if tail is None:
        if not attempts:
            raise SpoolqError(f"no log yet for job {job_id} ({path})")
        last = attempts[-1]
        verb = "is running" if last.finished_at is None else "ran"
        raise SpoolqError(
            f"job {job_id} {verb} on {last.host or 'another host'}: its log is there ({path})"
        )
    sys.stdout.buffer.write(tail.tail)
    sys.stdout.buffer.flush()
    part = "all" if len(tail.tail) == tail.size else f"the last {len(tail.tail)} bytes"
    click.echo(f"({part} of {tail.size} bytes; the whole log is on {tail.host}: {path})", err=True)


@click.command()
@click.argument("job_refs", nargs=-1, shell_complete=complete_job)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
@click.option(
    "--any-host",
    is_flag=True,
    help="Let a daemon of any state directory run them: for jobs whose own state directory "
    "no daemon serves. Their trigger's content goes into the store, read from their file "
    "if it is reachable from here (run this where that directory is mounted) and passes "
    "the daemon's checks; an any_host lane's job has it there already.",
)
@click.pass_obj
def retry(s: Settings, job_refs: tuple[str, ...], all_failed: bool, any_host: bool) -> None:
    """Queue finished jobs again, with a fresh set of retries."""
    if not job_refs and not all_failed:
        raise UsageError("name a JOB or use --failed")
    with s.store() as (config, state, store):
        # Resolve every reference first: a typo in the third id changes nothing.
        jobs = [store.get(r) for r in job_refs]
        ids = [j.id for j in jobs]
        if all_failed:
            ids += [i for i in store.failed_ids() if i not in ids]
            if not ids:
                click.echo("no failed jobs")
        # ... and with --any-host, whether each may leave its home, with the trigger content
        # the store is to keep for it. Nothing changes if a job named may not; one that
        # only --failed brought in is left where it is, and said so.
        texts, skipped = {}, []
        for job_id in list(ids) if any_host else []:
            job = store.get(job_id)
            if job.state in (JobState.RUNNING, JobState.REJECTED):
                continue
            try:
                texts[job_id] = content_to_keep(store, config, job)
            except SpoolqError as exc:
                if any(j.id == job_id for j in jobs):  # named
                    raise
                ids.remove(job_id)
                skipped.append(str(exc))
        try:
            for job_id in ids:
                job = store.get(job_id)
                if not (any_host and job.state is JobState.QUEUED):
                    job = store.retry(job_id, time.time())
                    state.place(job.claimed_path, job.state.value)
                if any_host:
                    text = texts.get(job_id)
                    job = store.release_home(job_id, text) or job
                    if text is not None:
                        put_back(job)  # read from its home: a finished one's file is queued
                where = " by any daemon" if any_host else ""
                click.echo(f"{job.id} queued again{where} (attempt {job.attempts + 1} next)")
        finally:
            store.notify()
        if skipped:
            raise SpoolqError(
                f"{len(skipped)} failed job(s) left as they are (nothing changed for them; "
                "name a job to retry it alone, or retry it without --any-host):\n  "
                + "\n  ".join(skipped)
            )


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


def _known_lane(config: Config, store: Store, lane: str) -> None:
    """A lane the config or a job names (a typo must not create a lane and pause it)."""
    known = set(config.lane_limits()) | {ln.name for ln in store.lane_status()}
    if lane not in known:
        raise UsageError(
            f"no lane {lane!r}: neither the config nor any job names it "
            f"(lanes: {', '.join(sorted(known)) or 'none'})"
        )


def _set_paused(s: Settings, lane: str, paused: bool) -> None:
    with s.store() as (config, _s, store):
        _known_lane(config, store, lane)
        store.set_paused(lane, paused)
        store.notify()
    click.echo(f"lane {lane} {'paused' if paused else 'resumed'}")


@click.command()
@click.argument("lane", shell_complete=complete_lane)
@click.pass_obj
def pause(s: Settings, lane: str) -> None:
    """Stop starting jobs in LANE (new triggers are still queued)."""
    _set_paused(s, lane, True)


@click.command()
@click.argument("lane", shell_complete=complete_lane)
@click.pass_obj
def resume(s: Settings, lane: str) -> None:
    """Start jobs in LANE again."""
    _set_paused(s, lane, False)


@click.command()
@click.argument("lane", shell_complete=complete_lane)
@click.option("--concurrency", type=click.IntRange(1, 10_000), help="The new limit.")
@click.option("--reset", is_flag=True, help="Back to the limit the config gives.")
@click.pass_obj
def lane(s: Settings, lane: str, concurrency: int | None, reset: bool) -> None:
    """Change LANE's concurrency for every daemon on the store, at once and until --reset."""
    if (concurrency is None) == (not reset):
        raise UsageError("use either --concurrency N or --reset")
    with s.store() as (config, _s, store):
        _known_lane(config, store, lane)
        st = store.set_lane_limit(lane, concurrency)
        store.notify()
    if st is None or st.override is None:
        n = st.concurrency if st else config.lane_concurrency(lane)
        click.echo(f"lane {lane}: concurrency {n} (the config's)")
    else:
        click.echo(f"lane {lane}: concurrency {st.concurrency} (overridden until --reset)")


@click.command()
@click.option("--older-than", "older", required=True, metavar="DURATION", help="e.g. 14d.")
@click.option(
    "--all-homes",
    is_flag=True,
    help="Also other state directories' jobs (their rows; their files where reachable).",
)
@click.pass_obj
def prune(s: Settings, older: str, all_homes: bool) -> None:
    """Delete finished job records, their logs and archived triggers."""
    try:
        age = parse_duration(older)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    with s.store() as (_c, state, store):
        cutoff = time.time() - age
        # Without --all-homes, only this state directory's jobs: another's triggers and
        # logs are not here to delete, and a row removed while its trigger waits in that
        # directory's claimed/ would be revived there as a new job.
        left = {} if all_homes else store.prunable_elsewhere(cutoff, state.home)
        paths = {h.home: h.path for h in store.homes()} if left else {}
        removed = store.prune(cutoff, None if all_homes else state.home)
        for job in removed:
            state.remove(job.claimed_path, job.state.value, job.log)
    click.echo(f"pruned {len(removed)} job(s)")
    if left:
        where = ", ".join(f"{n} of {paths.get(h) or h} ({h})" for h, n in sorted(left.items()))
        click.echo(
            f"left {sum(left.values())} job(s) of other state directories: {where}; prune "
            "there, or use --all-homes"
        )


COMMANDS = [status, jobs, show, logs, retry, cancel, pause, resume, lane, prune]
