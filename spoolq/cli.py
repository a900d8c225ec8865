"""The ``spoolq`` command. Every command is a function of argv; ``main`` maps errors to
exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from click.shell_completion import CompletionItem, get_completion_class

from spoolq import __version__
from spoolq.api import build_trigger, publish
from spoolq.claims import judge
from spoolq.config import Config, load_config, parse_duration
from spoolq.display import print_json, render_job, render_jobs, render_status
from spoolq.errors import (
    ConfigError,
    JobNotFound,
    SpoolqError,
    StoreUnavailable,
    TriggerRejected,
    UsageError,
)
from spoolq.events import EventLog
from spoolq.jobs import JobState
from spoolq.lifecycle import Backoff
from spoolq.procs import daemon_alive
from spoolq.serialize import job_detail, job_list, status_dict
from spoolq.statedir import StateDir
from spoolq.store import Store, open_store
from spoolq.triggers import parse_trigger
from spoolq.trust import TrustPolicy


@dataclass
class Settings:
    config_path: Path | None
    state_dir: Path | None

    def load(self, **extra: Any) -> Config:
        return load_config(self.config_path, **extra)

    def state(self, config: Config) -> StateDir:
        return StateDir.resolve(self.state_dir, config)

    @contextlib.contextmanager
    def store(self) -> Iterator[tuple[Config, StateDir, Store]]:
        config = self.load()
        state = self.state(config)
        if config.store in ("sqlite", "") and not (state.root / "spoolq.db").exists():
            raise SpoolqError(
                f"no spoolq store at {state.root} (start the daemon first, or pass the "
                "daemon's --state-dir / -c CONFIG)"
            )
        store = open_store(config.store, state.root)
        try:
            yield config, state, store
        finally:
            store.close()


def _default_config() -> Path | None:
    env = os.environ.get("SPOOLQ_CONFIG")
    if env:
        return Path(env)
    local = Path("spoolq.toml")
    return local if local.exists() else None


def _completion_store(ctx: click.Context) -> Settings:
    """Settings from the flags parsed so far (the group callback does not run while the shell
    asks for completions)."""
    root = ctx.find_root().params
    return Settings(root.get("config_path") or _default_config(), root.get("state_dir"))


def _complete_job(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        with _completion_store(ctx).store() as (_c, _s, store):
            found = store.list_jobs(limit=500)
    except Exception:  # completion must never print a traceback into the shell
        return []
    prefix = incomplete.upper()
    return [
        CompletionItem(j.id, help=f"{j.state.value} {j.lane} {os.path.basename(j.trigger)}")
        for j in found
        if j.id.startswith(prefix)
    ]


def _complete_lane(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        with _completion_store(ctx).store() as (_c, _s, store):
            names = [lane.name for lane in store.lane_status()]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="SPOOLQ_CONFIG",
    show_envvar=True,
    help="Config file (default: ./spoolq.toml if present).",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="SPOOLQ_STATE_DIR",
    show_envvar=True,
    help="State directory (default: the config's state_dir, else <first spool>/.spoolq).",
)
@click.version_option(__version__, "-V", "--version", prog_name="spoolq")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, state_dir: Path | None) -> None:
    """spoolq: turn a directory into a durable job queue."""
    if config_path is None:
        config_path = _default_config()
    ctx.obj = Settings(config_path, state_dir)


def _lane_pairs(values: tuple[str, ...]) -> dict[str, int]:
    pairs = {}
    for v in values:
        lane, sep, n = v.partition("=")
        if not sep or not n.isdigit() or int(n) < 1:
            raise UsageError(f"--lane-concurrency {v!r}: use LANE=N with N >= 1")
        pairs[lane] = int(n)
    return pairs


@cli.command()
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--lane-concurrency", "lane_conc", multiple=True, metavar="LANE=N", help="Override a lane."
)
@click.option("--http", "http", metavar="ADDR", envvar="SPOOLQ_HTTP", show_envvar=True,
              help="Serve status, JSON and /metrics on ADDR (host:port).")  # fmt: skip
@click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    envvar="SPOOLQ_LOG_FORMAT",
    show_envvar=True,
    default=None,
    help="Event log format on stderr (default: the config's, else human).",
)
@click.pass_obj
def run(
    s: Settings, dirs: tuple[Path, ...], lane_conc: tuple[str, ...], http: str | None,
    log_format: str | None,
) -> None:  # fmt: skip
    """Run the daemon in the foreground: watch DIRS (and the config's spools)."""
    from spoolq.daemon import Daemon
    from spoolq.procs import ensure_std_fds

    ensure_std_fds()

    overrides: dict[str, Any] = {}
    if log_format:
        overrides["log_format"] = log_format
    config = s.load(
        extra_spools=list(dirs), lane_concurrency=_lane_pairs(lane_conc), overrides=overrides
    )
    if not config.spool:
        raise UsageError("no spool directory: spoolq run DIR, or [[spool]] path in the config")
    if http:
        from spoolq.web.server import with_listen

        config = with_listen(config, http, "--http")
    state = s.state(config)
    if config.http.listen:
        from spoolq.web.auth import check_exposure

        check_exposure(config, config.http.listen)  # before waiting for the store
    log = EventLog(config.log_format)
    backoff = Backoff(0.5, 30.0)
    while True:  # a full disk or a locked file at start: wait for it, do not crash-loop
        try:
            store = open_store(config.store, state.root)
            break
        except StoreUnavailable as exc:
            delay = backoff.failed()
            log.error("store_unavailable", error=str(exc), retry_in=delay)
            time.sleep(delay)
    web = None
    try:
        daemon = Daemon(config, state, store, log)
        if config.http.listen:
            from spoolq.web.server import start_in_daemon

            web = start_in_daemon(config, state.root, log, daemon)
        daemon.run()
    finally:
        if web is not None:
            web.stop()
        store.close()


@cli.command()
@click.option(
    "--listen",
    metavar="ADDR",
    envvar="SPOOLQ_HTTP",
    show_envvar=True,
    help="HOST:PORT to serve on (default: [http] listen, else 127.0.0.1:8765).",
)
@click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    envvar="SPOOLQ_LOG_FORMAT",
    show_envvar=True,
    default=None,
    help="Event log format on stderr (default: the config's, else human).",
)
@click.pass_obj
def web(s: Settings, listen: str | None, log_format: str | None) -> None:
    """Serve the status page, JSON API and /metrics from the store, without a daemon."""
    from spoolq.web.server import WebServer, with_listen

    with s.store() as (config, state, store):
        config = with_listen(config, listen or config.http.listen or "127.0.0.1:8765", "--listen")
        log = EventLog(log_format or config.log_format)
        WebServer(config, state.root, store, log, str(config.http.listen)).serve()


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("argv", nargs=-1)
@click.option("-d", "--dir", "spool_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Spool directory (default: the config's first spool).")  # fmt: skip
@click.option("--shell", "shell", metavar="CMD", help="Run CMD with /bin/sh -c.")
@click.option("--job", metavar="NAME", help="Use the job template NAME.")
@click.option("--param", "params", multiple=True, metavar="K=V", help="Template parameter.")
@click.option("--lane", help="Lane (default: the spool's lane).")
@click.option("--id", "idem", metavar="ID", help="Idempotency key.")
@click.option("--priority", type=int, default=0, help="Higher runs first.")
@click.option("--timeout", metavar="DURATION", help="e.g. 90s, 2h.")
@click.option("--retries", type=click.IntRange(0, 1000), help="Extra attempts after a failure.")
@click.option("--env", "envs", multiple=True, metavar="K=V", help="Environment variable.")
@click.option("--name", help="Trigger file name (default: a new ULID).")
@click.pass_obj
def submit(
    s: Settings, argv: tuple[str, ...], spool_dir: Path | None, shell: str | None,
    job: str | None, params: tuple[str, ...], lane: str | None, idem: str | None,
    priority: int, timeout: str | None, retries: int | None, envs: tuple[str, ...],
    name: str | None,
) -> None:  # fmt: skip
    """Publish a trigger atomically and print its path.

    \b
    spoolq submit -- python -m etl.load sales.csv
    spoolq submit --shell "make load TABLE=sales"
    spoolq submit --job load --param table=sales --param path=/data/staging/sales.csv
    """
    config = s.load()
    if spool_dir is None:
        if not config.spool:
            raise UsageError("no spool directory: pass -d DIR (or configure [[spool]])")
        spool_dir = config.spool[0].path
    if params and not job:
        raise UsageError("--param needs --job NAME (parameters fill in a job template)")
    doc = build_trigger(
        argv=list(argv) or None,
        command=shell,
        job=job,
        params=_kv(params, "--param"),
        lane=lane,
        id=idem,
        priority=priority,
        timeout=timeout,
        retries=retries,
        env=_kv(envs, "--env"),
    )
    if not job or job in config.jobs:
        # The daemon's own parser: catch mistakes before anything is published.
        try:
            parse_trigger(json.dumps(doc), config, spool_dir=spool_dir)
        except TriggerRejected as exc:
            raise UsageError(f"the daemon would reject this trigger: {exc.reason}") from None
    click.echo(publish(spool_dir, doc, name))


def _kv(items: tuple[str, ...], flag: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: use KEY=VALUE")
        result[key] = value
    return result


@cli.command()
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


@cli.command()
@click.option("--state", "state_filter", type=click.Choice([s.value for s in JobState]))
@click.option("--lane", shell_complete=_complete_lane)
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


@cli.command()
@click.argument("job_ref", shell_complete=_complete_job)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def show(s: Settings, job_ref: str, as_json: bool) -> None:
    """One job with every attempt (exit code, reason, duration, CPU, peak RSS)."""
    with s.store() as (_c, _s, store):
        job = store.get(job_ref)
        attempts = store.attempts(job.id)
    data = job_detail(job, attempts)
    if as_json:
        print_json(data)
    else:
        render_job(data, attempts)


@cli.command()
@click.argument("job_ref", shell_complete=_complete_job)
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


@cli.command()
@click.argument("job_refs", nargs=-1, shell_complete=_complete_job)
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


@cli.command()
@click.argument("job_refs", nargs=-1, required=True, shell_complete=_complete_job)
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


@cli.command()
@click.argument("lane", shell_complete=_complete_lane)
@click.pass_obj
def pause(s: Settings, lane: str) -> None:
    """Stop starting jobs in LANE (new triggers are still queued)."""
    with s.store() as (_c, _s, store):
        store.set_paused(lane, True)
        store.notify()
    click.echo(f"lane {lane} paused")


@cli.command()
@click.argument("lane", shell_complete=_complete_lane)
@click.pass_obj
def resume(s: Settings, lane: str) -> None:
    """Start jobs in LANE again."""
    with s.store() as (_c, _s, store):
        store.set_paused(lane, False)
        store.notify()
    click.echo(f"lane {lane} resumed")


@cli.command()
@click.argument("triggers", nargs=-1, type=click.Path(path_type=Path, dir_okay=True))
@click.pass_obj
def check(s: Settings, triggers: tuple[Path, ...]) -> None:
    """Validate the config and each TRIGGER exactly as the daemon would."""
    config = s.load()
    policy = TrustPolicy.from_names(
        config.security.trusted_owners, config.security.max_trigger_bytes
    )
    where = s.config_path or "(no config file: defaults)"
    click.echo(f"config {where}: ok")
    bad = 0
    for path in triggers:
        try:
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            bad += 1
            click.echo(f"{path}: cannot open its directory: {exc.strerror or exc}")
            continue
        try:
            spec = judge(fd, path.name, policy, config, str(path.parent.resolve()))
        except TriggerRejected as exc:
            bad += 1
            click.echo(f"{path}: rejected: {exc.reason}")
            continue
        except FileNotFoundError:
            bad += 1
            click.echo(f"{path}: no such file")
            continue
        except OSError as exc:
            bad += 1
            click.echo(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        finally:
            os.close(fd)
        lane = spec.lane or (config.spool[0].lane if config.spool else "default")
        click.echo(f"{path}: ok ({len(spec.steps)} step(s), lane {lane})")
    if bad:
        raise SystemExit(2)


@cli.command()
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


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary workspace.")
@click.option(
    "--workspace",
    type=click.Path(path_type=Path, file_okay=False),
    help="Use this (new or empty) directory instead of a temporary one; implies --keep.",
)
def demo(keep: bool, workspace: Path | None) -> None:
    """The end-to-end demonstration on embedded defaults (needs the 'demo' extra)."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        raise SpoolqError(
            "the demo needs DuckDB: run 'make demo', or pip install 'spoolq[demo]'"
        ) from None
    from spoolq.demo import main as demo_main

    raise SystemExit(demo_main(keep=keep or workspace is not None, workspace=workspace))


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: eval "$(spoolq completion bash)"     (e.g. in ~/.bashrc)
    zsh:  eval "$(spoolq completion zsh)"      (e.g. in ~/.zshrc)
    fish: spoolq completion fish > ~/.config/fish/completions/spoolq.fish
    """
    cls = get_completion_class(shell)
    assert cls is not None  # the three shells click ships
    click.echo(cls(cli, {}, "spoolq", "_SPOOLQ_COMPLETE").source())


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        cli.main(args=argv, prog_name="spoolq", standalone_mode=False)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(2) from None
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        raise SystemExit(1) from None
    except (ConfigError, UsageError) as exc:
        click.echo(f"spoolq: error: {exc}", err=True)
        raise SystemExit(2) from None
    except JobNotFound as exc:
        click.echo(f"spoolq: {exc}", err=True)
        raise SystemExit(1) from None
    except SpoolqError as exc:
        click.echo(f"spoolq: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(0)


__all__ = ["cli", "main"]
