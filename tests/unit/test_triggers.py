"""Trigger formats: plain and JSON, job templates, and rejections that name the key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from spoolq.config import Config
from spoolq.errors import TriggerRejected
from spoolq.jobs import JobSpec
from spoolq.triggers import parse_trigger

SH = "/bin/sh"
DEFAULT = Config()


def parse(text: str, config: Config = DEFAULT, spool_dir: Path | None = None) -> JobSpec:
    return parse_trigger(text, config, spool_dir=spool_dir)


def parse_doc(doc: dict[str, Any], config: Config = DEFAULT) -> JobSpec:
    return parse(json.dumps(doc), config)


def rejected(text: str, config: Config = DEFAULT) -> str:
    with pytest.raises(TriggerRejected) as exc:
        parse(text, config)
    assert exc.value.reason == str(exc.value)
    return exc.value.reason


# -- plain -----------------------------------------------------------------------------------
def test_plain_trigger_runs_each_command_line_with_the_shell_in_order() -> None:
    text = "# load the day\n\necho one\n   \n  # indented comment\n  cp a b  \nmake load | tee x\n"
    spec = parse(text)
    assert spec.steps == (
        (SH, "-c", "echo one"),
        (SH, "-c", "cp a b"),
        (SH, "-c", "make load | tee x"),
    )
    assert (spec.lane, spec.idem_key, spec.priority, spec.timeout, spec.retries) == (
        None, None, 0, None, None
    )  # fmt: skip
    assert spec.env == {}


def test_plain_trigger_without_trailing_newline_or_with_crlf() -> None:
    assert parse("echo a").steps == ((SH, "-c", "echo a"),)
    assert parse("echo a\r\necho b\r\n").steps == ((SH, "-c", "echo a"), (SH, "-c", "echo b"))


@pytest.mark.parametrize("text", ["", "\n\n", "   \n\t\n", "# only a comment\n\n# another\n"])
def test_empty_plain_trigger_is_rejected(text: str) -> None:
    assert "empty trigger" in rejected(text)


def test_plain_trigger_with_a_nul_is_rejected() -> None:
    assert "NUL" in rejected("echo a\x00b\n")


def test_a_byte_order_mark_is_ignored() -> None:
    assert parse("\ufeffecho a\n").steps == ((SH, "-c", "echo a"),)
    assert parse('\ufeff{"argv": ["true"]}').steps == (("true",),)


# -- JSON ------------------------------------------------------------------------------------
def test_json_trigger_with_every_key(tmp_path: Path) -> None:
    doc = {
        "argv": ["python", "-m", "etl.load", "a b", "$HOME", "; rm -rf /"],
        "lane": "warehouse",
        "id": "load-2024-01-01",
        "priority": 7,
        "timeout": "2h",
        "retries": 3,
        "env": {"TABLE": "sales", "_X1": ""},
        "cwd": "work",
    }
    spec = parse(json.dumps(doc), spool_dir=tmp_path)
    assert spec.steps == (tuple(doc["argv"]),)  # no shell: every element as given
    assert (spec.lane, spec.idem_key, spec.priority, spec.timeout, spec.retries) == (
        "warehouse", "load-2024-01-01", 7, 7200.0, 3
    )  # fmt: skip
    assert spec.env == {"TABLE": "sales", "_X1": ""}
    assert spec.cwd == str(tmp_path / "work")  # relative cwd: inside the spool directory
    assert spec.template is None


def test_json_command_and_commands_run_with_the_shell() -> None:
    assert parse_doc({"command": "make all"}).steps == ((SH, "-c", "make all"),)
    assert parse_doc({"commands": ["a", "b && c"]}).steps == (
        (SH, "-c", "a"),
        (SH, "-c", "b && c"),
    )


@pytest.mark.parametrize(("value", "seconds"), [(90, 90.0), (1.5, 1.5), ("90s", 90.0)])
def test_json_timeout_in_seconds_or_with_a_unit(value: object, seconds: float) -> None:
    assert parse_doc({"argv": ["true"], "timeout": value}).timeout == seconds


def test_json_absolute_cwd_is_kept_and_leading_whitespace_is_fine(tmp_path: Path) -> None:
    spec = parse('\n  \t{"argv": ["true"], "cwd": "/srv"}', spool_dir=tmp_path)
    assert spec.cwd == "/srv"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"argv": ["true"], "colour": "red"}, "unknown key 'colour'"),
        ({"argv": ["true"], "priority": "5"}, "key 'priority'"),
        ({"argv": ["true"], "priority": 1.5}, "key 'priority'"),
        ({"argv": ["true"], "priority": True}, "key 'priority'"),
        ({"argv": ["true"], "retries": -1}, "key 'retries'"),
        ({"argv": ["true"], "retries": "2"}, "key 'retries'"),
        ({"argv": ["true"], "timeout": "soon"}, "key 'timeout'"),
        ({"argv": ["true"], "timeout": -5}, "key 'timeout'"),
        ({"argv": ["true"], "lane": "no spaces"}, "key 'lane'"),
        ({"argv": ["true"], "lane": 3}, "key 'lane'"),
        ({"argv": ["true"], "id": ""}, "key 'id'"),
        ({"argv": ["true"], "id": 42}, "key 'id'"),
        ({"argv": ["true"], "env": ["A=1"]}, "key 'env'"),
        ({"argv": ["true"], "env": {"A": 1}}, "key 'env.A'"),
        ({"argv": ["true"], "env": {"1BAD": "x"}}, "key 'env.1BAD'"),
        ({"argv": ["true"], "env": {"A-B": "x"}}, "key 'env.A-B'"),
        ({"argv": ["true"], "env": {"": "x"}}, "key 'env.'"),
        ({"argv": ["true"], "cwd": ""}, "key 'cwd'"),
        ({"argv": "echo hi"}, "key 'argv'"),
        ({"argv": []}, "key 'argv'"),
        ({"argv": ["echo", 1]}, "key 'argv.1'"),
        ({"argv": [""]}, "key 'argv'"),
        ({"command": ""}, "key 'command'"),
        ({"command": ["echo"]}, "key 'command'"),
        ({"commands": []}, "key 'commands'"),
        ({"commands": "echo"}, "key 'commands'"),
        ({"job": 1}, "key 'job'"),
        ({"command": "a", "argv": ["b"]}, "keys 'command' and 'argv' cannot be used together"),
        ({"commands": ["a"], "job": "j"}, "keys 'commands' and 'job' cannot be used together"),
        ({"lane": "db"}, "needs one of 'command', 'commands', 'argv' or 'job'"),
        ({}, "needs one of"),
        ({"argv": ["true"], "params": {"a": "b"}}, "key 'params' is only valid with 'job'"),
        ({"argv": ["a\x00b"]}, "key 'argv': contains a NUL"),
        ({"command": "a\x00b"}, "key 'command': contains a NUL"),
        ({"argv": ["true"], "env": {"A": "x\x00y"}}, "key 'env.A': contains a NUL"),
        ({"argv": ["true"], "id": "a\x00"}, "key 'id': contains a NUL"),
        ({"argv": ["true"], "cwd": "/a\x00"}, "key 'cwd': contains a NUL"),
        ({"job": "nope"}, "key 'job': unknown job template 'nope'"),
    ],
)
def test_json_rejections_name_the_key(doc: dict[str, Any], expected: str) -> None:
    assert expected in rejected(json.dumps(doc))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"argv": ["a"], "lane": "x", "lane": "y"}', "key 'lane' appears twice"),
        ('{"argv": ["a"], "env": {"A": "1", "A": "2"}}', "key 'A' appears twice"),
        ('{"argv": ["a"],}', "invalid JSON at line 1"),
        ('{"argv": ["a"]', "invalid JSON"),
        ('{"argv": ["a"], "timeout": NaN}', "NaN"),
        ('{"argv": ["a"], "id": "\\ud800"}', "key 'id'"),
    ],
)
def test_malformed_json_is_rejected_with_a_reason(text: str, expected: str) -> None:
    assert expected in rejected(text)


# -- templates -------------------------------------------------------------------------------
@pytest.fixture
def staging(tmp_path: Path) -> Path:
    root = tmp_path / "staging"
    (root / "in").mkdir(parents=True)
    (root / "in" / "sales.csv").write_text("x")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_text("k")
    (root / "escape").symlink_to(outside)  # a symlinked directory leading out
    (root / "inner").symlink_to(root / "in")  # one that stays inside
    return root


def templates(staging: Path, *, allow_commands: bool = True) -> Config:
    return Config.model_validate(
        {
            "security": {"allow_commands": allow_commands},
            "jobs": {
                "load": {
                    "argv": ["load", "--table", "{table}", "{path}", "--into={table}_raw"],
                    "lane": "warehouse",
                    "params": {
                        "table": {"pattern": "^[a-z_]+$"},
                        "path": {"type": "path", "under": str(staging)},
                    },
                },
                "batch": {
                    "argv": ["batch", "{n}", "{mode}"],
                    "params": {
                        "n": {"type": "int"},
                        "mode": {"type": "enum", "choices": ["append", "replace"]},
                    },
                },
                "say": {
                    "argv": ["echo", "{msg}"],
                    "params": {"msg": {"pattern": "^[^\\n]*$", "max_length": 40}},
                },
            },
        }
    )


def job(config: Config, name: str, **params: Any) -> JobSpec:
    return parse_doc({"job": name, "params": params}, config)


def job_rejected(config: Config, name: str, **params: Any) -> str:
    return rejected(json.dumps({"job": name, "params": params}), config)


def test_template_expands_each_param_inside_its_own_argv_element(staging: Path) -> None:
    config = templates(staging)
    spec = job(config, "load", table="sales", path="in/sales.csv")
    assert spec.steps == (
        (
            "load",
            "--table",
            "sales",
            str((staging / "in" / "sales.csv").resolve()),
            "--into=sales_raw",
        ),
    )
    assert spec.template == "load"
    assert spec.lane == "warehouse"


@pytest.mark.parametrize(
    "msg", ["a b c", "$(rm -rf /)", "; reboot", "'quoted' \"x\"", "{msg}", "{n}", "*", ""]
)
def test_a_param_value_stays_one_verbatim_argv_element(staging: Path, msg: str) -> None:
    spec = job(templates(staging), "say", msg=msg)
    assert spec.steps == (("echo", msg),)


def test_unknown_and_missing_params_are_rejected(staging: Path) -> None:
    config = templates(staging)
    assert "param 'extra' is not declared" in job_rejected(
        config, "batch", n=1, mode="append", extra="x"
    )
    assert "param 'mode' is required" in job_rejected(config, "batch", n=1)
    assert "param 'n' is required" in rejected('{"job": "batch"}', config)


@pytest.mark.parametrize("table", ["Sales", "sales;drop", "sales\n", " sales", "", "sales2"])
def test_pattern_must_match_the_whole_value(staging: Path, table: str) -> None:
    reason = job_rejected(templates(staging), "load", table=table, path="in/sales.csv")
    assert "param table" in reason


def test_max_length_is_enforced(staging: Path) -> None:
    assert "max_length" in job_rejected(templates(staging), "say", msg="x" * 41)


@pytest.mark.parametrize(
    ("n", "ok"),
    [(5, True), ("42", True), ("-3", True), ("4x", False), ("1.5", False), ("", False),
     (True, False), (1.5, False)],
)  # fmt: skip
def test_int_params(staging: Path, n: object, ok: bool) -> None:
    config = templates(staging)
    if ok:
        assert job(config, "batch", n=n, mode="append").steps == (("batch", str(n), "append"),)
    else:
        assert "param n" in job_rejected(config, "batch", n=n, mode="append")


@pytest.mark.parametrize("mode", ["APPEND", "append ", "delete", ""])
def test_enum_params_accept_only_their_choices(staging: Path, mode: str) -> None:
    assert "param mode" in job_rejected(templates(staging), "batch", n=1, mode=mode)


@pytest.mark.parametrize(
    "path",
    [
        "../secret/key",
        "in/../../secret/key",
        "escape/key",  # a symlinked directory inside `under` that leads out of it
        "/etc/passwd",
        "",
        ".",
    ],
)
def test_path_params_must_resolve_inside_under(staging: Path, path: str) -> None:
    reason = job_rejected(templates(staging), "load", table="t", path=path)
    assert "param path" in reason


@pytest.mark.parametrize("path", ["inner/sales.csv", "in/./sales.csv", "in/new.csv"])
def test_path_params_inside_under_resolve_to_the_real_path(staging: Path, path: str) -> None:
    spec = job(templates(staging), "load", table="t", path=path)
    assert spec.steps[0][3] == os.path.realpath(staging / path)
    assert spec.steps[0][3].startswith(str(staging.resolve()) + "/")


def test_an_absolute_path_inside_under_is_accepted(staging: Path) -> None:
    path = str(staging / "in" / "sales.csv")
    assert job(templates(staging), "load", table="t", path=path).steps[0][3] == path


def test_a_template_fixes_what_it_sets(staging: Path) -> None:
    config = templates(staging)
    doc = {"job": "load", "params": {"table": "t", "path": "in/sales.csv"}}
    assert "key 'lane'" in rejected(json.dumps({**doc, "lane": "other"}), config)
    assert "key 'cwd'" in rejected(json.dumps({**doc, "cwd": "/tmp"}), config)
    assert "key 'env.A'" in rejected(json.dumps({**doc, "env": {"A": "1"}}), config)
    spec = parse_doc({**doc, "id": "k", "priority": 3, "lane": "warehouse"}, config)
    assert (spec.idem_key, spec.priority, spec.lane) == ("k", 3, "warehouse")


# -- allow_commands = false ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["echo hi\n", '{"command": "echo hi"}', '{"commands": ["a"]}', '{"argv": ["echo", "hi"]}'],
)
def test_templates_mode_rejects_every_command_form(staging: Path, text: str) -> None:
    reason = rejected(text, templates(staging, allow_commands=False))
    assert "allow_commands = false" in reason


def test_templates_mode_still_runs_templates(staging: Path) -> None:
    config = templates(staging, allow_commands=False)
    assert job(config, "batch", n=2, mode="replace").steps == (("batch", "2", "replace"),)


def test_a_jobspec_survives_its_json_round_trip_with_every_field() -> None:
    """The store keeps the spec as JSON; every field must come back as it was."""
    import dataclasses

    from spoolq.jobs import JobSpec

    spec = JobSpec(
        steps=(("/bin/sh", "-c", "echo ü"), ("true",)), lane="l", idem_key="k", priority=-3,
        timeout=1.5, retries=2, env={"A": "1"}, cwd="/w", template="t",
    )  # fmt: skip
    assert JobSpec.from_json(spec.to_json()) == spec
    assert {f.name for f in dataclasses.fields(JobSpec)} == set(json.loads(spec.to_json()))
