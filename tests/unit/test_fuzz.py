"""Fuzzing the two parsers that read what other people write: triggers and spoolq.toml.
Whatever the input, the outcome is a result or a rejection with a reason - never an
unhandled exception."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoolq.config import Config, load_config
from spoolq.errors import ConfigError, TriggerRejected
from spoolq.triggers import parse_trigger

CONFIG = Config()
KEYS = ["command", "commands", "argv", "job", "params", "lane", "id", "priority", "timeout",
        "retries", "env", "cwd", "bogus"]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
trigger_docs = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(text: str) -> None:
    try:
        spec = parse_trigger(text, CONFIG)
    except TriggerRejected as exc:
        assert exc.reason.strip(), "a rejection always says why"
    else:
        assert spec.steps and all(
            step and all(isinstance(a, str) for a in step) for step in spec.steps
        )


@fuzz
@given(st.text(max_size=300))
def test_any_text_is_a_job_or_a_reasoned_rejection(text: str) -> None:
    _outcome(text)


@fuzz
@given(trigger_docs)
def test_any_json_object_is_a_job_or_a_reasoned_rejection(doc: dict[str, object]) -> None:
    _outcome(json.dumps(doc))


@fuzz
@given(st.binary(max_size=200))
def test_json_like_bytes(data: bytes) -> None:
    _outcome("{" + data.decode("utf-8", "replace"))


TOML_KEYS = {
    "": ["state_dir", "store", "dedup_window", "shutdown_grace", "log_format", "nonsense"],
    "defaults": ["timeout", "retries", "retry_backoff", "kill_grace", "on_success"],
    "security": ["allow_commands", "trusted_owners", "max_trigger_bytes", "env_passthrough"],
    "lanes.db": ["concurrency", "paused"],
}
toml_scalars = st.one_of(
    st.integers(-5, 10**7), st.booleans(), st.text(max_size=12), st.floats(-10, 1e6),
    st.lists(st.text(max_size=6), max_size=3),
)  # fmt: skip


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | list):
        return json.dumps(v)
    return repr(v)


@fuzz
@given(st.dictionaries(st.sampled_from(sorted(TOML_KEYS)), st.dictionaries(
    st.integers(0, 5), toml_scalars, max_size=4), max_size=4))  # fmt: skip
def test_any_config_loads_or_names_the_key(tmp_path_factory: object, tables: dict) -> None:  # type: ignore[type-arg]
    lines: list[str] = []
    for table in sorted(tables, key=lambda t: t != ""):
        keys = TOML_KEYS[table]
        if table:
            lines.append(f"[{table}]")
        for idx, value in tables[table].items():
            lines.append(f"{keys[idx % len(keys)]} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # duplicate keys from the generator; TOML's own error covers it
    path = Path(str(tmp_path_factory.mktemp("cfg"))) / "spoolq.toml"  # type: ignore[attr-defined]
    path.write_text(text)
    try:
        load_config(path, env={})
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: "), exc
