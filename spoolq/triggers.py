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

from spoolq.config import LANE_NAME, Config, Duration, JobTemplate, ParamSpec
from spoolq.errors import TriggerRejected
from spoolq.jobs import JobSpec

SHELL = "/bin/sh"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

NonEmpty = Annotated[StrictStr, Field(min_length=1)]


class _TriggerDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: NonEmpty | None = None
    commands: list[NonEmpty] | None = Field(default=None, min_length=1)
    argv: list[StrictStr] | None = Field(default=None, min_length=1)
    job: NonEmpty | None = None
    params: dict[str, StrictStr | StrictInt] | None = None
    lane: Annotated[StrictStr, Field(pattern=LANE_NAME)] | None = None
    id: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    priority: StrictInt = 0
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


def parse_trigger(text: str, config: Config, *, spool_dir: Path | None = None) -> JobSpec:
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


def _parse_json(text: str, config: Config, spool_dir: Path | None) -> JobSpec:
    try:
        raw = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise TriggerRejected(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise TriggerRejected("invalid JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise TriggerRejected("a JSON trigger must be an object")
    try:
        doc = _TriggerDoc.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(object)"
        if err["type"] == "extra_forbidden":
            known = ", ".join(_TriggerDoc.model_fields)
            raise TriggerRejected(f"unknown key {loc!r} (known keys: {known})") from None
        raise TriggerRejected(f"key {loc!r}: {err['msg']}") from None

    given = [k for k in ("command", "commands", "argv", "job") if getattr(doc, k) is not None]
    if len(given) != 1:
        if not given:
            raise TriggerRejected("needs one of 'command', 'commands', 'argv' or 'job'")
        raise TriggerRejected(f"keys {given[0]!r} and {given[1]!r} cannot be used together")
    if doc.params is not None and doc.job is None:
        raise TriggerRejected("key 'params' is only valid with 'job'")
    env = dict(doc.env or {})
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise TriggerRejected(f"key 'env.{name}': not a valid environment variable name")
        _no_nul(f"env.{name}", value)
    if doc.id is not None:
        _no_nul("id", doc.id)

    cwd = doc.cwd
    if doc.job is not None:
        template = config.jobs.get(doc.job)
        if template is None:
            known = ", ".join(sorted(config.jobs)) or "none defined"
            raise TriggerRejected(f"key 'job': unknown job template {doc.job!r} (known: {known})")
        if doc.env and not template.allow_env:
            raise TriggerRejected(f"key 'env': job template {doc.job!r} does not allow env")
        if cwd is not None:
            raise TriggerRejected("key 'cwd': not allowed with a job template (set it there)")
        steps: tuple[tuple[str, ...], ...] = (expand_template(doc.job, template, doc.params),)
        return JobSpec(
            steps=steps,
            lane=template.lane or doc.lane,
            idem_key=doc.id,
            priority=doc.priority,
            timeout=doc.timeout if doc.timeout is not None else template.timeout,
            retries=doc.retries if doc.retries is not None else template.retries,
            env={**template.env, **env},
            cwd=str(template.cwd) if template.cwd else None,
            template=doc.job,
        )

    if not config.security.allow_commands:
        raise TriggerRejected(
            f"key {given[0]!r}: commands are not allowed ([security] allow_commands = false); "
            "use 'job' with a template"
        )
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
            cwd = str(spool_dir / cwd)
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


def _no_nul(key: str, value: str) -> None:
    if "\x00" in value:
        raise TriggerRejected(f"key {key!r}: contains a NUL character")


def expand_template(
    name: str, template: JobTemplate, params: dict[str, str | int] | None
) -> tuple[str, ...]:
    """Substitute each ``{param}`` into the argv; a value is always one argv element and
    never passes through a shell. Every param must be declared and valid."""
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
    return tuple(_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in template.argv)


def check_param(name: str, value: str | int, spec: ParamSpec) -> str:
    text = str(value)
    shown = text if len(text) <= 80 else text[:77] + "..."
    if "\x00" in text:
        raise TriggerRejected(f"param {name}={shown!r} contains a NUL character")
    if len(text) > spec.max_length:
        raise TriggerRejected(f"param {name} is {len(text)} characters, over {spec.max_length}")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, text):
        raise TriggerRejected(f"param {name}={shown!r} does not match {spec.pattern}")
    if spec.type == "int":
        if isinstance(value, bool) or not re.fullmatch(r"-?[0-9]{1,18}", text):
            raise TriggerRejected(f"param {name}={shown!r} is not an integer")
    elif spec.type == "enum":
        if text not in spec.choices:
            raise TriggerRejected(f"param {name}={shown!r} is not one of {', '.join(spec.choices)}")
    elif spec.type == "path":
        assert spec.under is not None
        under = os.path.realpath(spec.under)
        resolved = os.path.realpath(os.path.join(under, text))
        if os.path.commonpath([under, resolved]) != under:
            raise TriggerRejected(f"param {name}={shown!r} resolves outside {spec.under}")
        return resolved
    return text
