"""What every ``spoolq`` command shares: where its config, state directory and store are
(the same rule for the daemon and every other command, so that they find each other's
jobs), shell completion of job ids and lane names, and KEY=VALUE flags."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from spoolq.config import Config, load_config
from spoolq.errors import SpoolqError, UsageError
from spoolq.statedir import StateDir
from spoolq.store import Store, open_store


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


def default_config() -> Path | None:
    env = os.environ.get("SPOOLQ_CONFIG")
    if env:
        return Path(env)
    local = Path("spoolq.toml")
    return local if local.exists() else None


def _completion_settings(ctx: click.Context) -> Settings:
    """Settings from the flags parsed so far (the group callback does not run while the shell
    asks for completions)."""
    root = ctx.find_root().params
    return Settings(root.get("config_path") or default_config(), root.get("state_dir"))


def complete_job(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        with _completion_settings(ctx).store() as (_c, _s, store):
            found = store.list_jobs(limit=500)
    except Exception:  # completion must never print a traceback into the shell
        return []
    prefix = incomplete.upper()
    return [
        CompletionItem(j.id, help=f"{j.state.value} {j.lane} {os.path.basename(j.trigger)}")
        for j in found
        if j.id.startswith(prefix)
    ]


def complete_lane(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        with _completion_settings(ctx).store() as (_c, _s, store):
            names = [lane.name for lane in store.lane_status()]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def key_values(items: tuple[str, ...], flag: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: use KEY=VALUE")
        result[key] = value
    return result
