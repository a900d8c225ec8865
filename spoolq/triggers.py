"""Trigger formats: plain (one shell command per line) and JSON; job templates.

``parse_trigger`` is the one code path used by the daemon and by ``spoolq check``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from spoolq.config import (
    ENV_NAME,
    LANE_NAME,
    PLACEHOLDER,
    Config,
    Duration,
    JobTemplate,
    ParamSpec,
)
from spoolq.errors import TriggerRejected
from spoolq.jobs import JobSpec

SHELL = "/bin/sh"
# Priorities are stored as 64-bit integers; a bound well inside keeps the store's arithmetic
# and a hostile trigger's "priority": 1e30 from ever reaching it.
PRIORITY_LIMIT = 1_000_000_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

NonEmpty = Annotated[StrictStr, Field(min_length=1)]


class _TriggerDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: NonEmpty | None = None
    commands: list[NonEmpty] | None = Field(default=None, min_length=1)
    argv: list[StrictStr] | None = Field(default=None, min_length=1)
    job: NonEmpty | None = None
    params: dict[str, Any] | None = None  # each value is checked by check_param
    lane: Annotated[StrictStr, Field(pattern=LANE_NAME)] | None = None
    id: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    priority: Annotated[StrictInt, Field(ge=-PRIORITY_LIMIT, le=PRIORITY_LIMIT)] = 0
    timeout: Duration | None = None
    retries: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None
    env: dict[str, StrictStr] | None = None
    cwd: NonEmpty | None = None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise TriggerRejected(f"key {key!r} appears twice")
        out[key] = value
    return out


def parse_trigger(text: str, config: Config, *, spool_dir: str | Path | None = None) -> JobSpec:
    """Turn trigger text into a JobSpec, or raise TriggerRejected with a reason naming the key."""
    body = text.lstrip("\ufeff")
    if body.lstrip().startswith("{"):
        return _parse_json(body, config, spool_dir)
    return _parse_plain(body, config)


def _parse_plain(text: str, config: Config) -> JobSpec:
    if not config.security.allow_commands:
        raise TriggerRejected(
            "plain command triggers are not allowed ([security] allow_commands = false); "
            'publish {"job": NAME, "params": {...}} instead'
        )
    lines = [ln.strip() for ln in text.splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#")]
    if not commands:
        raise TriggerRejected("empty trigger: no command lines (blank and # lines are ignored)")
    for cmd in commands:
        _no_nul("command", cmd)
    return JobSpec(steps=tuple((SHELL, "-c", cmd) for cmd in commands))


def _no_constant(name: str) -> Any:
    raise TriggerRejected(f"invalid JSON: {name} is not a JSON number")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_strings(value: Any, where: str = "") -> None:
    """JSON's ``\\ud800`` escapes decode to lone surrogates, which are not text: they cannot
    be stored, logged or passed to a program. Reject them wherever they appear."""
    if isinstance(value, str):
        if not _is_text(value):
            raise TriggerRejected(f"key {where!r}: contains a lone surrogate (not valid Unicode)")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _is_text(key):
                raise TriggerRejected(
                    f"key {where or '(object)'!r}: a key contains a lone surrogate "
                    "(not valid Unicode)"
                )
            _check_strings(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{where}.{i}")


def _parse_json(text: str, config: Config, spool_dir: str | Path | None) -> JobSpec:
    try:
        raw = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise TriggerRejected(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise TriggerRejected("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise TriggerRejected(f"invalid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TriggerRejected("a JSON trigger must be an object")
    _check_strings(raw)
    try:
        doc = _TriggerDoc.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(object)"
        if err["type"] == "extra_forbidden":
            known = ", ".join(_TriggerDoc.model_fields)
            raise TriggerRejected(f"unknown key {loc!r} (known keys: {known})") from None
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise TriggerRejected(f"key {loc!r}: {msg}") from None

    given = [k for k in ("command", "commands", "argv", "job") if getattr(doc, k) is not None]
    if len(given) != 1:
        if not given:
            raise TriggerRejected("needs one of 'command', 'commands', 'argv' or 'job'")
        raise TriggerRejected(f"keys {given[0]!r} and {given[1]!r} cannot be used together")
    if doc.params is not None and doc.job is None:
        raise TriggerRejected("key 'params' is only valid with 'job'")
    env = dict(doc.env or {})
    for name, value in env.items():
        if not re.match(ENV_NAME, name):
            raise TriggerRejected(f"key {'env.' + name!r}: not a valid environment variable name")
        _no_nul(f"env.{name}", value)
    if doc.id is not None:
        _no_nul("id", doc.id)

    cwd = doc.cwd
    if doc.job is not None:
        template = config.jobs.get(doc.job)
        if template is None:
            known = ", ".join(sorted(config.jobs)) or "none defined"
            raise TriggerRejected(f"key 'job': unknown job template {doc.job!r} (known: {known})")
        return _from_template(doc, doc.job, template, env, config)

    if not config.security.allow_commands:
        raise TriggerRejected(
            f"key {given[0]!r}: commands are not allowed ([security] allow_commands = false); "
            "use 'job' with a template"
        )
    steps: tuple[tuple[str, ...], ...]
    if doc.command is not None:
        steps = ((SHELL, "-c", doc.command),)
    elif doc.commands is not None:
        steps = tuple((SHELL, "-c", c) for c in doc.commands)
    else:
        assert doc.argv is not None
        if not doc.argv[0]:
            raise TriggerRejected("key 'argv': the program (argv[0]) is empty")
        steps = (tuple(doc.argv),)
    for step in steps:
        for arg in step:
            _no_nul(given[0], arg)
    if cwd is not None:
        _no_nul("cwd", cwd)
        if spool_dir is not None and not os.path.isabs(cwd):
            cwd = str(Path(spool_dir) / cwd)
    return JobSpec(
        steps=steps,
        lane=doc.lane,
        idem_key=doc.id,
        priority=doc.priority,
        timeout=doc.timeout,
        retries=doc.retries,
        env=env,
        cwd=cwd,
    )


def _from_template(
    doc: _TriggerDoc, name: str, template: JobTemplate, env: dict[str, str], config: Config
) -> JobSpec:
    """What the template sets is the administrator's decision: a trigger may fill in only
    what the template leaves open, set env only where ``allow_env`` permits, and name only
    a lane the config knows (an ad-hoc lane would escape a lane's serialization)."""
    if doc.cwd is not None:
        raise TriggerRejected("key 'cwd': not allowed with a job template (set it there)")
    fixed: tuple[tuple[str, object, object], ...] = (
        ("lane", template.lane, doc.lane),
        ("timeout", template.timeout, doc.timeout),
        ("retries", template.retries, doc.retries),
    )
    for key, mine, theirs in fixed:
        if mine is not None and theirs is not None and theirs != mine:
            raise TriggerRejected(
                f"key {key!r}: job template {name!r} sets {key} = {mine}; "
                "a trigger cannot change it"
            )
    if doc.lane is not None and template.lane is None and doc.lane not in known_lanes(config):
        raise TriggerRejected(
            f"key 'lane': {doc.lane!r} is not a lane of the config; a job template trigger "
            f"may only name one of: {', '.join(sorted(known_lanes(config)))}"
        )
    for var in env:
        if not template.env_allowed(var):
            raise TriggerRejected(
                f"key {'env.' + var!r}: job template {name!r} does not allow a trigger to "
                "set it (see allow_env)"
            )
    return JobSpec(
        steps=(expand_template(name, template, doc.params),),
        lane=template.lane or doc.lane,
        idem_key=doc.id,
        priority=doc.priority,
        timeout=template.timeout if template.timeout is not None else doc.timeout,
        retries=template.retries if template.retries is not None else doc.retries,
        env={**template.env, **env},
        cwd=str(template.cwd) if template.cwd else None,
        template=name,
    )


def known_lanes(config: Config) -> set[str]:
    lanes = {"default", *config.lanes, *(s.lane for s in config.spool)}
    return lanes | {t.lane for t in config.jobs.values() if t.lane}


def _no_nul(key: str, value: str) -> None:
    if "\x00" in value:
        raise TriggerRejected(f"key {key!r}: contains a NUL character")


def expand_template(
    name: str, template: JobTemplate, params: dict[str, str | int] | None
) -> tuple[str, ...]:
    """Substitute each ``{param}`` into the argv. The result has exactly as many elements
    as the template's argv: a value lands inside the one element that names it, verbatim
    (a path: resolved), is never re-scanned for placeholders and never meets a shell.
    Every param must be declared, given, and valid."""
    given = dict(params or {})
    unknown = sorted(set(given) - set(template.params))
    if unknown:
        raise TriggerRejected(
            f"param {unknown[0]!r} is not declared by job template {name!r} "
            f"(declared: {', '.join(sorted(template.params)) or 'none'})"
        )
    values: dict[str, str] = {}
    for pname, spec in template.params.items():
        if pname not in given:
            raise TriggerRejected(f"param {pname!r} is required by job template {name!r}")
        values[pname] = check_param(pname, given[pname], spec)
    # re.sub with a function: the replacement text is inserted as is, never interpreted.
    return tuple(PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in template.argv)


def check_param(name: str, value: str | int, spec: ParamSpec) -> str:
    """The text a param value contributes to argv, or TriggerRejected saying why not.

    Checks run cheapest first (NUL, length) so that a pattern never sees an over-long value.
    A ``path`` comes back resolved (symlinks followed, ``..`` removed, absolute), so the
    program gets the very file that was checked to lie under ``under``.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        kind = {bool: "a boolean", float: "a number", list: "a list", dict: "an object"}
        raise TriggerRejected(
            f"param {name} is {kind.get(type(value), 'null')}; give a string or an integer"
        )
    text = str(value)
    shown = text if len(text) <= 80 else text[:77] + "..."
    if "\x00" in text:
        raise TriggerRejected(f"param {name}={shown!r} contains a NUL character")
    if not _is_text(text):
        raise TriggerRejected(f"param {name}={shown!r} contains a lone surrogate")
    if len(text) > spec.max_length:
        raise TriggerRejected(
            f"param {name} is {len(text)} characters long, over max_length {spec.max_length}"
        )
    if spec.pattern is not None and not re.fullmatch(spec.pattern, text):
        raise TriggerRejected(f"param {name}={shown!r} does not match {spec.pattern}")
    if spec.type == "int":
        if not re.fullmatch(r"-?[0-9]{1,18}", text):
            raise TriggerRejected(f"param {name}={shown!r} is not an integer")
    elif spec.type == "enum":
        if text not in spec.choices:
            raise TriggerRejected(f"param {name}={shown!r} is not one of {', '.join(spec.choices)}")
    elif spec.type == "path":
        return _check_path(name, text, shown, spec)
    return text


def _check_path(name: str, text: str, shown: str, spec: ParamSpec) -> str:
    assert spec.under is not None
    if not text:
        raise TriggerRejected(f"param {name} is empty; a path under {spec.under} is needed")
    if _CONTROL.search(text):
        # Legal in file names, but only ever used to confuse people and line-based tools.
        raise TriggerRejected(f"param {name}={shown!r} contains a control character")
    under = os.path.realpath(spec.under)
    # Relative values are taken relative to ``under``; an absolute one must still end up
    # there after every symlink and ".." is resolved.
    resolved = os.path.realpath(os.path.join(under, text))
    if resolved == under or not resolved.startswith(under.rstrip("/") + "/"):
        raise TriggerRejected(
            f"param {name}={shown!r} resolves to {resolved}, not under {spec.under}"
        )
    return resolved
