"""The command line as a function of argv: exit codes, ``submit``'s trigger, help, the
Python producer API, and the retry backoff."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import spoolq
from spoolq import __version__
from spoolq.cli import cli, main
from spoolq.config import Config
from spoolq.errors import UsageError
from spoolq.lifecycle import BACKOFF_CAP, retry_delay
from spoolq.store.sqlite import SqliteStore
from spoolq.triggers import parse_trigger


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No ./spoolq.toml and no SPOOLQ_* variables from the machine running the tests."""
    for var in [v for v in os.environ if v.startswith("SPOOLQ_")]:
        monkeypatch.delenv(var)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    d = tmp_path / "spool"
    d.mkdir()
    return d


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory with an (empty) store in it, as a daemon leaves behind."""
    d = tmp_path / "state"
    SqliteStore(d / "spoolq.db").close()
    return d


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exc.value.code
    assert isinstance(code, int)
    return code, out, err


def invoke(*argv: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(argv), env=env)


def submitted(result: Result) -> tuple[Path, dict[str, Any]]:
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    return path, json.loads(path.read_text())


# -- exit codes ------------------------------------------------------------------------------
BAD_USAGE: list[tuple[list[str], str]] = [
    (["--no-such-flag"], "No such option"),
    (["no-such-command"], "No such command"),
    (["jobs", "--state", "sleeping"], "--state"),
    (["jobs", "--limit", "0"], "--limit"),
    (["jobs", "--limit", "many"], "--limit"),
    (["status", "--verbose"], "No such option"),
    (["show"], "Missing argument"),
    (["cancel"], "Missing argument"),
    (["retry"], "name a JOB or use --failed"),
    (["pause"], "Missing argument"),
    (["prune"], "Missing option '--older-than'"),
    (["prune", "--older-than", "soon"], "--older-than: 'soon' is not a duration"),
    (["submit", "--priority", "high", "--", "true"], "--priority"),
    (["submit", "--retries", "-1", "--", "true"], "--retries"),
    (["submit", "--retries", "1001", "--", "true"], "--retries"),
    (["submit", "--timeout", "soon", "--", "true"], "'soon' is not a duration"),
    (["submit", "--env", "NOEQUALS", "--", "true"], "--env 'NOEQUALS': use KEY=VALUE"),
    (["submit", "--env", "=x", "--", "true"], "--env '=x': use KEY=VALUE"),
    (["submit", "--bogus", "--", "true"], "No such option"),
    (["submit"], "give exactly one of"),  # nothing to run
    (["submit", "--shell", "make", "--", "true"], "got argv, command"),  # two things to run
    (["submit", "--shell", "make", "--job", "load"], "got command, job"),
    (["submit", "--param", "a=b", "--", "true"], "--param needs --job"),
    (["submit", "ls", "-la"], "No such option '-l'"),  # the command's flags need "--" first
    (["submit", "--lane", "no spaces", "--", "true"], "would reject this trigger: key 'lane'"),
    (["submit", "--env", "1BAD=x", "--", "true"], "would reject this trigger: key 'env.1BAD'"),
    (["run", "--lane-concurrency", "db=0"], "--lane-concurrency 'db=0': use LANE=N"),
    (["run", "--lane-concurrency", "db"], "--lane-concurrency 'db': use LANE=N"),
    (["run", "--log-format", "xml"], "--log-format"),
    (["completion", "tcsh"], "'tcsh' is not one of"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_USAGE, ids=[" ".join(a) for a, _ in BAD_USAGE])
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], spool: Path, argv: list[str], message: str
) -> None:
    if argv[0] == "submit":
        argv = ["submit", "-d", str(spool), *argv[1:]]
    code, _out, err = run_main(capsys, *argv)
    assert code == 2, err
    assert message in err
    assert list(spool.iterdir()) == []  # nothing was published


def test_run_without_a_spool_directory_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(capsys, "run")
    assert code == 2
    assert "no spool directory" in err


def test_submit_without_a_spool_directory_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(capsys, "submit", "--", "true")
    assert code == 2
    assert "-d DIR" in err


def test_submit_into_a_missing_directory_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _out, err = run_main(capsys, "submit", "-d", str(tmp_path / "nope"), "--", "true")
    assert code == 2
    assert "nope" in err


def test_a_config_error_exits_2_naming_file_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "spoolq.toml"
    config.write_text("[lanes.db]\nconcurrency = 0\n")
    code, _out, err = run_main(capsys, "-c", str(config), "status")
    assert code == 2
    assert f"{config}: [lanes.db] concurrency" in err


def test_a_missing_config_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _out, err = run_main(capsys, "-c", str(tmp_path / "gone.toml"), "status")
    assert code == 2
    assert "gone.toml" in err


@pytest.mark.parametrize(
    "argv",
    [[command, "01HNOSUCHJOB"] for command in ("show", "cancel", "retry", "logs")],
    ids=" ".join,
)
def test_an_unknown_job_id_exits_1_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], state: Path, argv: list[str]
) -> None:
    code, out, err = run_main(capsys, "--state-dir", str(state), *argv)
    assert code == 1
    assert "no job '01HNOSUCHJOB'" in err
    assert out == ""


def test_commands_without_a_store_exit_1_and_say_where_they_looked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _out, err = run_main(capsys, "--state-dir", str(tmp_path / "empty"), "status")
    assert code == 1
    assert str(tmp_path / "empty") in err


def test_read_commands_exit_0_on_an_empty_store(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    code, out, _err = run_main(capsys, "--state-dir", str(state), "jobs", "--json")
    assert (code, json.loads(out)) == (0, [])
    code, out, _err = run_main(capsys, "--state-dir", str(state), "status", "--json")
    assert code == 0
    assert set(json.loads(out)) >= {"lanes", "states", "daemons"}


def test_check_exits_2_for_a_bad_trigger_and_0_for_a_good_one(
    capsys: pytest.CaptureFixture[str], spool: Path
) -> None:
    good = spool / "good.trigger"
    good.write_text('{"argv": ["true"]}')
    good.chmod(0o644)
    bad = spool / "bad.trigger"
    bad.write_text('{"argv": ["true"], "colour": 1}')
    bad.chmod(0o644)
    assert run_main(capsys, "check", str(good))[0] == 0
    code, out, _err = run_main(capsys, "check", str(good), str(bad))
    assert code == 2
    assert "unknown key 'colour'" in out


# -- version and help ------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, out, _err = run_main(capsys, flag)
    assert code == 0
    assert __version__ in out
    assert "spoolq" in out


def test_help_names_the_environment_variables() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "SPOOLQ_CONFIG" in result.stdout
    assert "SPOOLQ_STATE_DIR" in result.stdout
    for command in ("run", "submit", "status", "jobs", "show", "logs", "retry", "cancel"):
        assert command in result.stdout
    run_help = invoke("run", "--help")
    assert "SPOOLQ_HTTP" in run_help.stdout
    assert "SPOOLQ_LOG_FORMAT" in run_help.stdout


def test_state_dir_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, state: Path
) -> None:
    monkeypatch.setenv("SPOOLQ_STATE_DIR", str(state))
    code, out, _err = run_main(capsys, "jobs", "--json")
    assert (code, out.strip()) == (0, "[]")


def test_config_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "env.toml"
    config.write_text("colour = 1\n")
    monkeypatch.setenv("SPOOLQ_CONFIG", str(config))
    code, _out, err = run_main(capsys, "status")
    assert code == 2
    assert f"{config}: colour: unknown key" in err


def test_a_spoolq_toml_in_the_working_directory_is_the_default_config(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    (isolated / "spoolq.toml").write_text("[defaults]\nretries = -1\n")
    code, _out, err = run_main(capsys, "status")
    assert code == 2
    assert "spoolq.toml: [defaults] retries" in err


# -- submit ----------------------------------------------------------------------------------
SUBMIT_TABLE: list[tuple[list[str], dict[str, Any]]] = [
    (["--", "python", "-m", "etl.load", "--table", "sales"],
     {"argv": ["python", "-m", "etl.load", "--table", "sales"]}),
    (["echo", "hello world"], {"argv": ["echo", "hello world"]}),
    (["--shell", "make load TABLE=sales | tee log"],
     {"command": "make load TABLE=sales | tee log"}),
    (["--job", "load", "--param", "table=sales", "--param", "path=a=b.csv"],
     {"job": "load", "params": {"table": "sales", "path": "a=b.csv"}}),
    (["--job", "noparams"], {"job": "noparams", "params": {}}),
    (["--lane", "db", "--", "true"], {"argv": ["true"], "lane": "db"}),
    (["--id", "load-2024-01-01", "--", "true"], {"argv": ["true"], "id": "load-2024-01-01"}),
    (["--priority", "5", "--", "true"], {"argv": ["true"], "priority": 5}),
    (["--priority", "-2", "--", "true"], {"argv": ["true"], "priority": -2}),
    (["--timeout", "90s", "--", "true"], {"argv": ["true"], "timeout": 90.0}),
    (["--timeout", "2h", "--", "true"], {"argv": ["true"], "timeout": 7200.0}),
    (["--retries", "3", "--", "true"], {"argv": ["true"], "retries": 3}),
    (["--retries", "0", "--", "true"], {"argv": ["true"], "retries": 0}),
    (["--env", "A=1", "--env", "B=x=y", "--env", "C=", "--", "env"],
     {"argv": ["env"], "env": {"A": "1", "B": "x=y", "C": ""}}),
    (["--lane", "db", "--id", "k", "--priority", "1", "--timeout", "5", "--retries", "2",
      "--env", "K=V", "--shell", "echo $K"],
     {"command": "echo $K", "lane": "db", "id": "k", "priority": 1, "timeout": 5.0,
      "retries": 2, "env": {"K": "V"}}),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), SUBMIT_TABLE, ids=lambda v: str(v)[:60])
def test_submit_publishes_the_trigger_the_flags_describe(
    spool: Path, args: list[str], expected: dict[str, Any]
) -> None:
    path, doc = submitted(invoke("submit", "-d", str(spool), *args))
    assert doc == expected
    assert path.parent == spool.resolve()
    assert path.name.endswith(".trigger")


def test_submitted_trigger_is_complete_private_and_parses(spool: Path) -> None:
    old = os.umask(0o077)  # a producer's umask must not make the trigger unreadable
    try:
        path, _doc = submitted(invoke("submit", "-d", str(spool), "--retries", "1", "--", "ls"))
    finally:
        os.umask(old)
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_nlink == 1
    assert [p.name for p in spool.iterdir()] == [path.name]  # no temp file left behind
    spec = parse_trigger(path.read_text(), Config(), spool_dir=spool)
    assert spec.steps == (("ls",),)
    assert spec.retries == 1


def test_submit_names_and_never_overwrites(spool: Path) -> None:
    path, _ = submitted(invoke("submit", "-d", str(spool), "--name", "load sales", "--", "true"))
    assert path.name == "load_sales.trigger"
    again = invoke("submit", "-d", str(spool), "--name", "load sales", "--", "false")
    assert again.exit_code != 0
    assert json.loads(path.read_text()) == {"argv": ["true"]}


def test_two_submits_make_two_triggers(spool: Path) -> None:
    a, _ = submitted(invoke("submit", "-d", str(spool), "--", "true"))
    b, _ = submitted(invoke("submit", "-d", str(spool), "--", "true"))
    assert a != b
    assert sorted(p.name for p in spool.iterdir()) == sorted([a.name, b.name])


def test_submit_defaults_to_the_configs_first_spool(tmp_path: Path, spool: Path) -> None:
    config = tmp_path / "spoolq.toml"
    config.write_text('[[spool]]\npath = "spool"\n')
    path, doc = submitted(invoke("-c", str(config), "submit", "--", "true"))
    assert path.parent == spool.resolve()
    assert doc == {"argv": ["true"]}


def test_submit_checks_a_template_from_the_config_before_publishing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spool: Path
) -> None:
    config = tmp_path / "spoolq.toml"
    config.write_text(
        '[jobs.load]\nargv = ["load", "{table}"]\nparams.table = { pattern = "^[a-z]+$" }\n'
    )
    base = ["-c", str(config), "submit", "-d", str(spool), "--job", "load"]
    code, _out, err = run_main(capsys, *base, "--param", "table=Robert'); DROP TABLE")
    assert code == 2
    assert "would reject" in err and "param table" in err
    assert list(spool.iterdir()) == []
    code, out, _err = run_main(capsys, *base, "--param", "table=sales")
    assert code == 0
    assert json.loads(Path(out.strip()).read_text())["params"] == {"table": "sales"}


# -- the Python API --------------------------------------------------------------------------
def test_api_submit_returns_the_published_path(spool: Path) -> None:
    path = spoolq.submit(
        spool,
        argv=["python", "-m", "etl.load", "a b"],
        lane="db",
        id="k1",
        priority=3,
        timeout="90s",
        retries=2,
        env={"A": "1"},
    )
    assert isinstance(path, Path)
    assert path.is_absolute() and path.parent == spool.resolve()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == {
        "argv": ["python", "-m", "etl.load", "a b"],
        "lane": "db",
        "id": "k1",
        "priority": 3,
        "timeout": 90.0,
        "retries": 2,
        "env": {"A": "1"},
    }
    spec = parse_trigger(path.read_text(), Config(), spool_dir=spool)
    assert (spec.lane, spec.idem_key, spec.priority, spec.timeout, spec.retries) == (
        "db", "k1", 3, 90.0, 2
    )  # fmt: skip


def test_api_submit_command_and_job_forms(spool: Path) -> None:
    cmd = spoolq.submit(str(spool), command="make all")
    assert json.loads(cmd.read_text()) == {"command": "make all"}
    job = spoolq.submit(spool, job="load", params={"table": "sales", "n": 3})
    assert json.loads(job.read_text()) == {"job": "load", "params": {"table": "sales", "n": 3}}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"argv": ["true"], "command": "true"},
        {"command": "x", "job": "load"},
        {"argv": "echo hi"},
        {"argv": ["true"], "params": {"a": "b"}},
        {"argv": ["true"], "timeout": "soon"},
    ],
)
def test_api_submit_rejects_contradictory_arguments(spool: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        spoolq.submit(spool, **kwargs)
    assert list(spool.iterdir()) == []


def test_api_submit_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        spoolq.submit(tmp_path / "nope", argv=["true"])


# -- retry backoff ---------------------------------------------------------------------------
def test_retry_delay_doubles_from_the_base() -> None:
    middle = [retry_delay(n, 5.0, rng=lambda: 0.5) for n in range(1, 7)]
    assert middle == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0]


@pytest.mark.parametrize("failures", [1, 2, 5, 9])
def test_retry_delay_jitter_stays_within_20_percent(failures: int) -> None:
    nominal = 5.0 * 2 ** (failures - 1)
    low = retry_delay(failures, 5.0, rng=lambda: 0.0)
    high = retry_delay(failures, 5.0, rng=lambda: 0.999999)
    assert low == pytest.approx(0.8 * nominal)
    assert high == pytest.approx(1.2 * nominal, rel=1e-5)
    assert low < retry_delay(failures, 5.0, rng=lambda: 0.3) < high


@pytest.mark.parametrize("failures", [11, 12, 20, 1001, 5000])
def test_retry_delay_is_capped_at_an_hour(failures: int) -> None:
    assert BACKOFF_CAP == 3600.0
    for r in (0.0, 0.5, 0.999999):
        delay = retry_delay(failures, 5.0, rng=lambda r=r: r)
        assert 0.8 * 3600 <= delay <= 3600.0


def test_retry_delay_with_a_zero_base_is_immediate() -> None:
    assert retry_delay(3, 0.0, rng=lambda: 0.9) == 0.0
