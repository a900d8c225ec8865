"""spoolq.toml: load, validate, and report errors as ``file: [table] key: what is wrong``."""

from __future__ import annotations

import fnmatch
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spoolq.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``1.5``, ``"90s"``, ``"500ms"``, ``"2h"``, ``"1h30m"``, ``"14d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '90s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for m in _DURATION_PART.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"{value!r} is not a duration: use seconds or a number with "
                    "ms/s/m/h/d, e.g. '90s', '2h', '1h30m'"
                ) from None
    else:
        raise ValueError("a duration must be a number of seconds or a string like '90s'")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

LANE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpoolConfig(_Model):
    path: Path
    patterns: tuple[str, ...] = ("*.trigger",)
    recursive: bool = False
    lane: str = Field(default="default", pattern=LANE_NAME)
    watcher: Literal["auto", "native", "polling"] = "auto"
    poll_interval: Duration = 1.0
    rescan_interval: Duration = 30.0
    settle: Duration = 1.0

    @field_validator("patterns")
    @classmethod
    def _patterns_not_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one pattern, e.g. ['*.trigger']")
        return v


class LaneConfig(_Model):
    concurrency: int = Field(default=1, ge=1, le=10_000)
    # The trigger's content is kept in the store, and a daemon of any state directory on
    # the store may run the lane's jobs (their inputs must be reachable from every host).
    any_host: bool = False


class Defaults(_Model):
    timeout: Duration | None = None
    retries: int = Field(default=0, ge=0, le=1000)
    retry_backoff: Duration = 5.0
    kill_grace: Duration = 10.0
    on_success: Literal["archive", "delete"] = "archive"


# A param name, and the only brace form in a template's argv that is a placeholder: other
# braces (a dict literal in ``python -c``) stay literal.
PARAM_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_GLOB = r"^[A-Za-z_*?][A-Za-z0-9_*?]*$"


class ParamSpec(_Model):
    """One declared template parameter. Every value must satisfy all that is set here."""

    pattern: str | None = None  # full match (re.fullmatch)
    type: Literal["str", "int", "path", "enum"] = "str"
    under: Path | None = None
    choices: tuple[str, ...] = ()
    max_length: int = Field(default=4096, ge=1, le=1 << 20)

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {exc}") from None
        if self.type == "path":
            if self.under is None:
                raise ValueError("a 'path' param needs under = '/allowed/dir'")
            if not self.under.is_absolute():
                raise ValueError(f"under = {str(self.under)!r} must be an absolute path")
        elif self.under is not None:
            raise ValueError("'under' is only valid with type = 'path'")
        if self.type == "enum" and not self.choices:
            raise ValueError("an 'enum' param needs choices = ['a', 'b']")
        if self.type != "enum" and self.choices:
            raise ValueError("'choices' is only valid with type = 'enum'")
        if self.type == "str" and self.pattern is None:
            raise ValueError(
                "a 'str' param needs a pattern (full match), e.g. pattern = '^[a-z_]+$'"
            )
        return self


class JobTemplate(_Model):
    """``[jobs.NAME]``: the only thing a trigger may run in templates mode.

    What the template sets (lane, timeout, retries, env, cwd) is fixed: a trigger may only
    fill in what the template leaves open, and may set ``env`` only where ``allow_env``
    says (``true``: any name; a list: those names or globs).
    """

    argv: tuple[str, ...] = Field(min_length=1)
    lane: str | None = Field(default=None, pattern=LANE_NAME)
    timeout: Duration | None = None
    retries: int | None = Field(default=None, ge=0, le=1000)
    env: dict[str, str] = Field(default_factory=dict)
    allow_env: bool | tuple[str, ...] = False
    cwd: Path | None = None
    params: dict[str, ParamSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params_declared(self) -> JobTemplate:
        if not self.argv[0]:
            raise ValueError("argv[0] (the program) is empty")
        used = {m for arg in self.argv for m in PLACEHOLDER.findall(arg)}
        undeclared = sorted(used - set(self.params))
        if undeclared:
            raise ValueError(
                f"argv uses {{{undeclared[0]}}} but params.{undeclared[0]} is not declared"
            )
        for name in self.params:
            if not re.match(PARAM_NAME, name):
                raise ValueError(f"param name {name!r} must match {PARAM_NAME}")
        unused = sorted(set(self.params) - used)
        if unused:
            raise ValueError(f"params.{unused[0]} is declared but argv has no {{{unused[0]}}}")
        for name, value in self.env.items():
            if not re.match(ENV_NAME, name) or "\x00" in value:
                raise ValueError(f"env.{name}: not a valid environment variable")
        if isinstance(self.allow_env, tuple):
            for pat in self.allow_env:
                if not re.match(_ENV_GLOB, pat):
                    raise ValueError(f"allow_env: {pat!r} is not a variable name or glob")
        if self.cwd is not None and not self.cwd.is_absolute():
            raise ValueError(f"cwd = {str(self.cwd)!r} must be an absolute path")
        return self

    def env_allowed(self, name: str) -> bool:
        if isinstance(self.allow_env, bool):
            return self.allow_env
        return any(fnmatch.fnmatchcase(name, p) for p in self.allow_env)


# Variables a job inherits from the daemon unless [security] env_passthrough says otherwise
# ("*" passes everything, as the seed did). Globs allowed. Deliberately short: a daemon's
# environment may hold credentials (AWS_*, PGPASSWORD, tokens) that jobs should not see
# unless the config names them.
DEFAULT_ENV_PASSTHROUGH = (
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_*", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR",
)  # fmt: skip


class Security(_Model):
    allow_commands: bool = True
    trusted_owners: tuple[str, ...] = ()
    max_trigger_bytes: int = Field(default=1 << 20, ge=1, le=64 << 20)
    env_passthrough: tuple[str, ...] | Literal["*"] = DEFAULT_ENV_PASSTHROUGH
    allow_insecure_dirs: bool = False

    @field_validator("env_passthrough")
    @classmethod
    def _env_globs(cls, v: tuple[str, ...] | str) -> tuple[str, ...] | str:
        if isinstance(v, tuple):
            for pat in v:
                if pat != "*" and not re.match(_ENV_GLOB, pat):
                    raise ValueError(f"{pat!r} is not a variable name or glob")
            if "*" in v:
                return "*"
        return v


class Http(_Model):
    """The status page, JSON API and /metrics (``spoolq web``, ``run --http``)."""

    listen: str | None = None  # HOST:PORT; port 0 picks a free one (the log says which)
    token_file: Path | None = None  # default <state_dir>/http.token, made on first start

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None:
            split_address(v)
        return v


def split_address(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8765`` for IPv6, ``:8765`` for every address) -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{addr!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"  # noqa: S104
    return host, int(port)


NOTIFY_EVENTS = ("queued", "started", "succeeded", "failed", "cancelled", "rejected", "retrying")


class NotifyConfig(_Model):
    """One ``[[notify]]`` block: on these events (of these lanes), run a command with the
    job's JSON on stdin, or POST it to a URL."""

    on: tuple[Literal[NOTIFY_EVENTS], ...] = Field(min_length=1)  # type: ignore[valid-type]
    lanes: tuple[str, ...] = ()  # none: every lane
    command: tuple[str, ...] | None = Field(default=None, min_length=1)
    url: str | None = None
    name: str | None = None  # how logs and the outbox name it (default notify[N])
    timeout: Duration = 30.0  # a command is killed, a request abandoned, after this
    retries: int = Field(default=10, ge=0, le=1000)
    retry_backoff: Duration = 5.0  # doubling, capped at 10 minutes

    @model_validator(mode="after")
    def _one_target(self) -> NotifyConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError('give exactly one of command = [argv...] or url = "https://..."')
        if self.url is not None and not re.match(r"^https?://[^\s/]+", self.url):
            raise ValueError(f"url = {self.url!r} must start with http:// or https://")
        return self


class Config(_Model):
    state_dir: Path | None = None
    store: str = "sqlite"
    spool: tuple[SpoolConfig, ...] = ()
    lanes: dict[str, LaneConfig] = Field(default_factory=dict)
    defaults: Defaults = Defaults()
    jobs: dict[str, JobTemplate] = Field(default_factory=dict)
    security: Security = Security()
    http: Http = Http()
    dedup_window: Duration = 14 * 86400.0
    shutdown_grace: Duration | None = None
    heartbeat_interval: Duration = 10.0
    stale_after: Duration = 60.0
    log_format: Literal["human", "json"] = "human"
    notify: tuple[NotifyConfig, ...] = ()

    @field_validator("lanes")
    @classmethod
    def _lane_names(cls, v: dict[str, LaneConfig]) -> dict[str, LaneConfig]:
        for name in v:
            if not re.match(LANE_NAME, name):
                raise ValueError(f"lane name {name!r} must match {LANE_NAME}")
        return v

    def notify_targets(self) -> dict[str, NotifyConfig]:
        """The ``[[notify]]`` blocks by name (``name``, else ``notify[N]``, N from 1)."""
        return {n.name or f"notify[{i}]": n for i, n in enumerate(self.notify, 1)}

    def lane_concurrency(self, lane: str) -> int:
        cfg = self.lanes.get(lane)
        return cfg.concurrency if cfg else 1

    def lane_limits(self) -> dict[str, int]:
        """Every lane the config names (its lanes, its spools' and templates' lanes, and
        ``default``), with its concurrency: 1 where no [lanes.X] says otherwise."""
        lanes = {name: lane.concurrency for name, lane in self.lanes.items()}
        for spool in self.spool:
            lanes.setdefault(spool.lane, 1)
        lanes.setdefault("default", 1)
        for tmpl in self.jobs.values():
            if tmpl.lane:
                lanes.setdefault(tmpl.lane, 1)
        return lanes


ENV_KEYS = {
    "store": "SPOOLQ_STORE",
    "state_dir": "SPOOLQ_STATE_DIR",
    "log_format": "SPOOLQ_LOG_FORMAT",
}


def load_config(
    path: Path | None,
    *,
    extra_spools: list[Path] | None = None,
    lane_concurrency: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Read ``path`` (if any), apply environment variables, CLI additions, and validate.

    Raises ConfigError naming the file and the key.
    """
    env = dict(os.environ) if env is None else env
    source = str(path) if path else "configuration"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no such config file (check -c/--config or SPOOLQ_CONFIG)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        base = path.resolve().parent
        for spool in data.get("spool", []) if isinstance(data.get("spool"), list) else []:
            if isinstance(spool, dict) and isinstance(spool.get("path"), str):
                spool["path"] = str(base / Path(spool["path"]).expanduser())
        if isinstance(data.get("state_dir"), str):
            data["state_dir"] = str(base / Path(data["state_dir"]).expanduser())
        http = data.get("http")
        if isinstance(http, dict) and isinstance(http.get("token_file"), str):
            http["token_file"] = str(base / Path(http["token_file"]).expanduser())
    for key, var in ENV_KEYS.items():
        if env.get(var):
            data[key] = env[var]
    if extra_spools:
        spools = list(data.get("spool", [])) if isinstance(data.get("spool"), list) else []
        known = {str(s.get("path")) for s in spools if isinstance(s, dict)}
        for d in extra_spools:
            p = str(d.resolve())
            if p not in known:
                spools.append({"path": p})
        data["spool"] = spools
    if lane_concurrency:
        lanes = dict(data.get("lanes", {})) if isinstance(data.get("lanes"), dict) else {}
        for lane, n in lane_concurrency.items():
            lanes[lane] = {**lanes.get(lane, {}), "concurrency": n}
        data["lanes"] = lanes
    if overrides:
        data.update(overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        lines.append(f"{source}: {_toml_location(err['loc'])}: {_friendly(err)}")
    return "\n".join(lines)


def _toml_location(loc: tuple[int | str, ...]) -> str:
    """('lanes', 'db', 'concurrency') -> '[lanes.db] concurrency'; ('spool', 0, 'path') ->
    '[[spool]] #1 path'."""
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    if not parts:
        return "(top level)"
    if parts[0] == "spool" and len(parts) >= 2 and isinstance(parts[1], int):
        rest = ".".join(str(p) for p in parts[2:])
        return f"[[spool]] #{parts[1] + 1} {rest}".rstrip()
    if parts[0] in ("lanes", "jobs") and len(parts) >= 2:
        # len 2: a check of the whole table (e.g. argv against params) names the table.
        table = f"[{parts[0]}.{parts[1]}]"
        return f"{table} {'.'.join(str(p) for p in parts[2:])}".rstrip()
    if parts[0] in ("defaults", "security", "http") and len(parts) >= 2:
        return f"[{parts[0]}] {'.'.join(str(p) for p in parts[1:])}"
    return ".".join(str(p) for p in parts)


def _friendly(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling against docs/configuration.md)"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")
