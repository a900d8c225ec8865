"""The ``spoolq`` command: the group and its global flags, the commands that start things
(run, web, submit, check, demo) and ``main``, which maps errors to exit codes: 0 ok, 1 the
operation failed, 2 usage or configuration error. The operator's commands are in
``operate``; what every command shares, in ``settings``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from click.shell_completion import get_completion_class

from spoolq import __version__, notify, operate, waitcli
from spoolq.api import build_trigger, publish
from spoolq.claims import judge
from spoolq.errors import (
    ConfigError,
    JobNotFound,
    SpoolqError,
    StoreUnavailable,
    TriggerRejected,
    UsageError,
)
from spoolq.events import EventLog
from spoolq.lifecycle import Backoff
from spoolq.settings import Settings, default_config, key_values
from spoolq.store import open_store
from spoolq.triggers import parse_trigger
from spoolq.trust import TrustPolicy


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
        config_path = default_config()
    ctx.obj = Settings(config_path, state_dir)


log_format_option = click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    envvar="SPOOLQ_LOG_FORMAT",
    show_envvar=True,
    default=None,
    help="Event log format on stderr (default: the config's, else human).",
)


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
@log_format_option
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
    web = notifier = None
    try:
        daemon = Daemon(config, state, store, log)
        notifier = notify.start(config, store, state.root, log, daemon.id)
        if config.http.listen:
            from spoolq.web.server import start_in_daemon

            web = start_in_daemon(config, state.root, log, daemon)
        daemon.run()
    finally:
        if web is not None:
            web.stop()
        if notifier is not None:
            notifier.stop()
        store.close()


@cli.command()
@click.option(
    "--listen",
    metavar="ADDR",
    envvar="SPOOLQ_HTTP",
    show_envvar=True,
    help="HOST:PORT to serve on (default: [http] listen, else 127.0.0.1:8765).",
)
@log_format_option
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
@click.option("--wait", "wait_end", is_flag=True,
              help="Wait for the job to end: exit 0 if it succeeded, else 1.")  # fmt: skip
@click.pass_obj
def submit(
    s: Settings, argv: tuple[str, ...], spool_dir: Path | None, shell: str | None,
    job: str | None, params: tuple[str, ...], lane: str | None, idem: str | None,
    priority: int, timeout: str | None, retries: int | None, envs: tuple[str, ...],
    name: str | None, wait_end: bool,
) -> None:  # fmt: skip
    """Publish a trigger atomically and print its path. With --id, a job already queued,
    running or succeeded under that id is reported (exit 1) and nothing is published.

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
        params=key_values(params, "--param"),
        lane=lane,
        id=idem,
        priority=priority,
        timeout=timeout,
        retries=retries,
        env=key_values(envs, "--env"),
    )
    if not job or job in config.jobs:
        # The daemon's own parser: catch mistakes before anything is published.
        try:
            parse_trigger(json.dumps(doc), config, spool_dir=spool_dir)
        except TriggerRejected as exc:
            raise UsageError(f"the daemon would reject this trigger: {exc.reason}") from None
    state = waitcli.near(s, config, spool_dir)
    if idem:
        waitcli.check_duplicate(config, state, idem)
    after = waitcli.last_seq(config, state) if wait_end else None
    trigger = publish(spool_dir, doc, name)
    click.echo(trigger)
    if wait_end:
        waitcli.wait_published(config, state, trigger, after)


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


@cli.group(name="notify")
def notify_group() -> None:
    """Notifications ([[notify]] in the config)."""


@notify_group.command(name="test")
@click.pass_obj
def notify_test(s: Settings) -> None:
    """Send a sample notification (event "test") to every [[notify]] target now; exit 1
    if any did not take it."""
    config = s.load()
    if not config.notify:
        raise UsageError("no [[notify]] block in the config (see -c/--config)")
    failed = 0
    for name, error in notify.send_samples(config).items():
        click.echo(f"{name}: {'ok' if error is None else 'failed: ' + error}")
        failed += error is not None
    if failed:
        raise SystemExit(1)


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


for _command in [*operate.COMMANDS, waitcli.wait]:
    cli.add_command(_command)

__all__ = ["cli", "main"]
