"""spoolq.toml: durations, defaults, every key, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from spoolq.config import Config, load_config, parse_duration
from spoolq.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "spoolq.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, **kw: object) -> Config:
    return load_config(write(tmp_path, text), env={}, **kw)  # type: ignore[arg-type]


def error(tmp_path: Path, text: str, **kw: object) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={}, **kw)  # type: ignore[arg-type]
    assert exc.value.exit_code == 2
    message = str(exc.value)
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


# -- durations -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
        ("90", 90.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("14d", 14 * 86400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        (" 2H ", 7200.0),
        ("1d2h3m4s5ms", 86400 + 7200 + 180 + 4 + 0.005),
    ],
)
def test_parse_duration_accepts_seconds_and_unit_suffixes(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "s", "5x", "5 minutes", "h1", "1h 30x", "-5s", -1, True, None, [5], "1e3x"]
)
def test_parse_duration_rejects_everything_else(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


# -- defaults and every key ------------------------------------------------------------------
def test_zero_config_defaults_match_the_spec() -> None:
    config = load_config(None, env={})
    assert config.spool == ()
    assert config.store == "sqlite"
    assert config.state_dir is None
    assert config.lane_concurrency("default") == 1
    assert config.lane_concurrency("anything") == 1
    d = config.defaults
    assert (d.timeout, d.retries, d.retry_backoff, d.kill_grace, d.on_success) == (
        None, 0, 5.0, 10.0, "archive"
    )  # fmt: skip
    assert config.security.allow_commands is True
    assert config.security.trusted_owners == ()
    assert config.security.max_trigger_bytes == 1 << 20
    assert config.http.listen is None
    assert config.dedup_window == 14 * 86400.0
    assert config.shutdown_grace is None


def test_zero_config_with_a_directory_watches_it_for_trigger_files(tmp_path: Path) -> None:
    config = load_config(None, extra_spools=[tmp_path], env={})
    (spool,) = config.spool
    assert spool.path == tmp_path.resolve()
    assert spool.patterns == ("*.trigger",)
    assert (spool.recursive, spool.lane, spool.watcher) == (False, "default", "auto")
    assert (spool.poll_interval, spool.rescan_interval, spool.settle) == (1.0, 30.0, 1.0)


FULL = """
state_dir = "/var/spool/etl/.spoolq"
store = "sqlite"
dedup_window = "7d"
shutdown_grace = "2m"
heartbeat_interval = "5s"
stale_after = "1m"
log_format = "json"

[[spool]]
path = "/var/spool/etl"
patterns = ["*.trigger", "*.job"]
recursive = true
lane = "warehouse"
watcher = "polling"
poll_interval = "250ms"
rescan_interval = "10s"
settle = "2s"

[[spool]]
path = "/var/spool/other"

[lanes.default]
concurrency = 1
[lanes.warehouse]
concurrency = 4

[defaults]
timeout = "6h"
retries = 2
retry_backoff = "5s"
kill_grace = "10s"
on_success = "delete"

[jobs.load]
argv = ["python", "-m", "myetl.load", "--table", "{table}", "{path}", "--mode={mode}", "{n}"]
lane = "warehouse"
timeout = "1h"
retries = 1
env = { PGAPPNAME = "spoolq" }
allow_env = true
cwd = "/srv/etl"
params.table = { pattern = "^[A-Za-z_][A-Za-z0-9_]{0,62}$", max_length = 63 }
params.path = { type = "path", under = "/data/staging" }
params.mode = { type = "enum", choices = ["append", "replace"] }
params.n = { type = "int" }

[security]
allow_commands = false
trusted_owners = ["root"]
max_trigger_bytes = 4096
env_passthrough = ["PATH", "LC_*"]
allow_insecure_dirs = true

[http]
listen = "127.0.0.1:8765"
"""


def test_every_documented_key_is_accepted(tmp_path: Path) -> None:
    c = load(tmp_path, FULL)
    assert c.state_dir == Path("/var/spool/etl/.spoolq")
    assert (c.dedup_window, c.shutdown_grace, c.heartbeat_interval, c.stale_after) == (
        7 * 86400.0, 120.0, 5.0, 60.0
    )  # fmt: skip
    assert c.log_format == "json"
    s = c.spool[0]
    assert (s.path, s.patterns, s.recursive, s.lane, s.watcher) == (
        Path("/var/spool/etl"), ("*.trigger", "*.job"), True, "warehouse", "polling"
    )  # fmt: skip
    assert (s.poll_interval, s.rescan_interval, s.settle) == (0.25, 10.0, 2.0)
    assert c.spool[1].patterns == ("*.trigger",)
    assert c.lane_concurrency("warehouse") == 4
    assert c.lane_concurrency("default") == 1
    d = c.defaults
    assert (d.timeout, d.retries, d.retry_backoff, d.kill_grace, d.on_success) == (
        6 * 3600.0, 2, 5.0, 10.0, "delete"
    )  # fmt: skip
    job = c.jobs["load"]
    assert job.argv[0] == "python"
    assert (job.lane, job.timeout, job.retries, job.allow_env) == ("warehouse", 3600.0, 1, True)
    assert job.env == {"PGAPPNAME": "spoolq"}
    assert job.cwd == Path("/srv/etl")
    assert job.params["table"].max_length == 63
    assert job.params["path"].under == Path("/data/staging")
    assert job.params["mode"].choices == ("append", "replace")
    assert job.params["n"].type == "int"
    sec = c.security
    assert (sec.allow_commands, sec.trusted_owners, sec.max_trigger_bytes) == (
        False, ("root",), 4096
    )  # fmt: skip
    assert sec.env_passthrough == ("PATH", "LC_*")
    assert sec.allow_insecure_dirs is True
    assert c.http.listen == "127.0.0.1:8765"


# -- errors name the file and the key -------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[lanes.db]\nconcurrency = 0\n", "[lanes.db] concurrency: "),
        ('[lanes.db]\nconcurrency = "two"\n', "[lanes.db] concurrency: "),
        ("[lanes.db]\nconcurency = 2\n", "[lanes.db] concurency: unknown key"),
        ("colour = true\n", "colour: unknown key"),
        ("[defaults]\ntimeout = '5x'\n", "[defaults] timeout: '5x' is not a duration"),
        ("[defaults]\nretries = -1\n", "[defaults] retries: "),
        ("[defaults]\non_success = 'keep'\n", "[defaults] on_success: "),
        ("[defaults]\nretry = 2\n", "[defaults] retry: unknown key"),
        ("[security]\nmax_trigger_bytes = 0\n", "[security] max_trigger_bytes: "),
        ("[security]\ntrusted_owners = 'root'\n", "[security] trusted_owners: "),
        ("[http]\nport = 80\n", "[http] port: unknown key"),
        ("[[spool]]\npatterns = ['*.t']\n", "[[spool]] #1 path: required key is missing"),
        ("[[spool]]\npath = '/a'\n[[spool]]\npath = '/b'\nwatcher = 'inotify'\n",
         "[[spool]] #2 watcher: "),
        ("[[spool]]\npath = '/a'\npatterns = []\n", "[[spool]] #1 patterns: "),
        ("[[spool]]\npath = '/a'\nlane = 'bad lane'\n", "[[spool]] #1 lane: "),
        ("[[spool]]\npath = '/a'\nsettle = 'soon'\n", "[[spool]] #1 settle: "),
        ("[jobs.load]\nargv = []\n", "[jobs.load] argv: "),
        ("[jobs.load]\nargv = ['x']\nshell = true\n", "[jobs.load] shell: unknown key"),
        ("dedup_window = true\n", "dedup_window: a duration must be"),
        ("log_format = 'xml'\n", "log_format: "),
        ("[lanes.'bad name']\nconcurrency = 1\n", "lanes: lane name 'bad name'"),
    ],
)  # fmt: skip
def test_errors_name_the_toml_key(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text).startswith(expected)


def test_every_problem_is_reported_each_on_its_own_line(tmp_path: Path) -> None:
    message = error(tmp_path, "[lanes.a]\nconcurrency = 0\n[lanes.b]\nconcurrency = 0\n")
    path = tmp_path / "spoolq.toml"
    lines = message.split("\n")
    assert len(lines) == 2
    assert lines[0].startswith("[lanes.a] concurrency")
    assert lines[1].startswith(f"{path}: [lanes.b] concurrency")


def test_bad_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, "[lanes.db]\nconcurrency = \n")
    assert message.startswith("not valid TOML")
    assert "line 2" in message


def test_missing_file_says_where_the_path_came_from(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file.*SPOOLQ_CONFIG"):
        load_config(path, env={})


def test_a_non_utf8_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "spoolq.toml"
    path.write_bytes(b'store = "\xff"\n')
    with pytest.raises(ConfigError, match=r"spoolq\.toml"):
        load_config(path, env={})


# -- environment, CLI additions, paths -------------------------------------------------------
def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'store = "sqlite"\nstate_dir = "/from/file"\n')
    env = {"SPOOLQ_STORE": "sqlite:///tmp/x.db", "SPOOLQ_STATE_DIR": "/from/env"}
    config = load_config(path, env=env)
    assert config.store == "sqlite:///tmp/x.db"
    assert config.state_dir == Path("/from/env")
    assert load_config(None, env={"SPOOLQ_STATE_DIR": "/e"}).state_dir == Path("/e")


def test_empty_environment_variables_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/from/file"\n')
    config = load_config(path, env={"SPOOLQ_STATE_DIR": "", "SPOOLQ_STORE": ""})
    assert config.state_dir == Path("/from/file")
    assert config.store == "sqlite"


def test_an_invalid_environment_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="log_format"):
        load_config(None, env={"SPOOLQ_LOG_FORMAT": "xml"})


def test_lane_concurrency_flags_merge_with_the_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "[lanes.db]\nconcurrency = 1\n[lanes.web]\nconcurrency = 3\n",
        lane_concurrency={"db": 4, "new": 2},
    )
    assert config.lane_concurrency("db") == 4
    assert config.lane_concurrency("web") == 3
    assert config.lane_concurrency("new") == 2


def test_lane_concurrency_flag_is_validated_like_the_file() -> None:
    with pytest.raises(ConfigError, match=r"\[lanes\.db\] concurrency"):
        load_config(None, lane_concurrency={"db": 0}, env={})


def test_relative_paths_resolve_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(
        tmp_path / "etc",
        'state_dir = "../state"\n[[spool]]\npath = "incoming"\n[[spool]]\npath = "/abs/spool"\n',
    )
    config = load_config(path, env={})
    base = (tmp_path / "etc").resolve()
    assert config.spool[0].path == base / "incoming"
    assert config.spool[1].path == Path("/abs/spool")
    assert config.state_dir is not None
    assert config.state_dir.resolve() == (tmp_path / "state").resolve()


def test_directories_given_on_the_command_line_add_spools_once(tmp_path: Path) -> None:
    spool = tmp_path / "in"
    spool.mkdir()
    extra = tmp_path / "extra"
    extra.mkdir()
    path = write(tmp_path, '[[spool]]\npath = "in"\nlane = "db"\n')
    config = load_config(path, extra_spools=[spool, extra], env={})
    assert [(s.path, s.lane) for s in config.spool] == [
        (spool.resolve(), "db"),
        (extra.resolve(), "default"),
    ]


# -- job templates ---------------------------------------------------------------------------
def test_template_placeholder_must_be_a_declared_param(tmp_path: Path) -> None:
    message = error(tmp_path, '[jobs.load]\nargv = ["load", "{table}"]\n')
    assert message.startswith("[jobs.load]: "), message
    assert "argv uses {table} but params.table is not declared" in message


def test_template_param_must_be_used_in_argv(tmp_path: Path) -> None:
    message = error(tmp_path, '[jobs.j]\nargv = ["true"]\nparams.n = {type = "int"}\n')
    assert message.startswith("[jobs.j]: "), message
    assert "params.n is declared but argv has no {n}" in message


def test_template_str_param_needs_a_pattern(tmp_path: Path) -> None:
    message = error(tmp_path, '[jobs.load]\nargv = ["load", "{t}"]\nparams.t = {}\n')
    assert message.startswith("[jobs.load] params.t: ")
    assert "needs a pattern" in message


def test_template_path_param_needs_under(tmp_path: Path) -> None:
    message = error(tmp_path, '[jobs.load]\nargv = ["load", "{p}"]\nparams.p = {type = "path"}\n')
    assert message.startswith("[jobs.load] params.p: ")
    assert "under" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('{type = "enum"}', "choices"),
        ('{pattern = "["}', "not a valid regex"),
        ('{type = "float"}', "params.p.type"),
        ('{pattern = "^a$", colour = 1}', "params.p.colour: unknown key"),
    ],
)
def test_template_param_specs_are_validated(tmp_path: Path, spec: str, expected: str) -> None:
    message = error(tmp_path, f'[jobs.load]\nargv = ["load", "{{p}}"]\nparams.p = {spec}\n')
    assert message.startswith("[jobs.load] "), message
    assert expected in message
