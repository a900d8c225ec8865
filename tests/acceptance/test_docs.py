"""The documentation's examples are executed, so the docs cannot rot."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spoolq.config import load_config
from tests.conftest import SPOOLQ, DaemonProcess, Env

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def _block_with(path: Path, lang: str, text: str) -> str:
    """The one ``lang`` block of ``path`` that contains ``text`` (found by what it shows,
    not by its position, so that a new block elsewhere on the page changes nothing)."""
    found = [b for b in _blocks(path, lang) if text in b]
    assert len(found) == 1, f"{path.name}: {len(found)} ```{lang} blocks contain {text!r}"
    return found[0]


TOML_BLOCKS = [(doc, i) for doc in MARKDOWN for i, _ in enumerate(_blocks(doc, "toml"))]
EXAMPLE_CONFIGS = sorted(EXAMPLES.glob("*.toml"))
# Pages whose subject is setting spoolq up must show a configuration a reader can copy: a
# ```toml block, or a link to a complete example under docs/examples/ (loaded below). The
# others (triggers, guarantees, performance, the README) only name keys in passing.
CONFIG_PAGES = ["configuration.md", "security.md", "operations.md"]


@pytest.mark.parametrize(
    ("doc", "index"), TOML_BLOCKS, ids=[f"{d.name}-{i}" for d, i in TOML_BLOCKS]
)
def test_every_toml_block_in_the_docs_is_a_valid_config(
    doc: Path, index: int, tmp_path: Path
) -> None:
    cfg = tmp_path / f"{doc.stem}-{index}.toml"
    cfg.write_text(_blocks(doc, "toml")[index])
    load_config(cfg, env={})


@pytest.mark.parametrize("example", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads(example: Path) -> None:
    config = load_config(example, env={})
    assert config.spool, f"{example.name} configures no spool directory"


@pytest.mark.parametrize("page", CONFIG_PAGES)
def test_a_page_about_configuration_shows_a_config(page: str) -> None:
    doc = DOCS / page
    linked = re.findall(r"\]\((?:\.\./docs/)?examples/([\w.-]+\.toml)\)", doc.read_text())
    assert _blocks(doc, "toml") or linked, f"{page} shows no configuration to copy"
    for name in linked:
        assert (EXAMPLES / name) in EXAMPLE_CONFIGS, f"{page} links to a missing {name}"


def test_the_complete_example_config_loads_with_every_table(tmp_path: Path) -> None:
    config = load_config(EXAMPLES / "spoolq.toml", env={})
    assert config.spool and config.lanes and config.jobs
    assert config.defaults.retries == 2
    assert "load" in config.jobs


def test_example_triggers_pass_spoolq_check(tmp_path: Path) -> None:
    res = subprocess.run(
        [SPOOLQ, "-c", str(EXAMPLES / "spoolq.toml"), "check",
         *(str(EXAMPLES / n) for n in ("plain.trigger", "json.trigger", "template.trigger"))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(": ok") == 4  # the config and the three triggers


def test_publish_sh_and_publish_py_examples_run(env: Env) -> None:
    d = env.start()
    out = subprocess.run(
        ["sh", str(EXAMPLES / "publish.sh"), str(env.spool), "from-shell", "echo from shell"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == str(env.spool / "from-shell.trigger")
    subprocess.run(
        [sys.executable, str(EXAMPLES / "publish.py"), str(env.spool)], check=True, timeout=60
    )
    d.wait_for("succeeded", count=3)
    assert {j["state"] for j in env.jobs()} == {"succeeded"}
    logs = "".join(Path(j["log"]).read_text() for j in env.jobs())
    for text in ("from shell", "published with spoolq.submit", "published by hand"):
        assert text in logs


def test_readme_quick_start_runs(env: Env) -> None:
    """The quick start's publishing commands, run as printed, make jobs whose output is
    what the README says they print."""
    readme = ROOT / "README.md"
    shell = _block_with(readme, "sh", "spoolq submit")
    python = _block_with(readme, "python", "spoolq.submit")
    d = env.start()
    script = "\n".join(
        line for line in shell.replace("/tmp/spool", str(env.spool)).splitlines()
        if not line.startswith(("spoolq run", "mkdir"))
    )  # fmt: skip
    subprocess.run(["bash", "-euc", script], check=True, env=env.env, timeout=60)
    py = python.replace('"/tmp/spool"', repr(str(env.spool)))
    py = py.replace('["python3", "-m", "myetl.load", "sales.csv"]', '["echo", "loaded"]')
    subprocess.run([sys.executable, "-c", py], check=True, timeout=60)
    d.wait_for("succeeded", count=3)
    # What each published job prints, read from the commands the README shows.
    echoed = re.search(r"echo '(echo [^']*)' >", shell)
    printed = re.search(r"print\(\"([^\"]*)\"\)", shell)
    assert echoed and printed, shell
    outputs = sorted(Path(j["log"]).read_text() for j in env.jobs())
    wanted = [echoed.group(1).removeprefix("echo "), printed.group(1), "loaded"]
    for text in wanted:
        assert any(f"\n{text}\n" in out for out in outputs), (text, outputs)


def test_systemd_unit_runs_the_daemon_and_a_stop_lets_running_jobs_finish(tmp_path: Path) -> None:
    """What operations.md promises of contrib/spoolq.service, with its lines applied the way
    systemd applies them: ExecStart (specifiers expanded, Environment set) starts a daemon on
    the documented config; KillSignal, sent as KillMode says, lets a running job finish and
    ends the daemon with exit 0, which Restart does not take for a failure."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(ROOT / "contrib" / "spoolq.service")
    service = unit["Service"]
    home = tmp_path / "home"
    specifiers = {"%h": str(home), "%E": str(home / ".config"), "%%": "%"}

    def expand(value: str) -> str:
        return re.sub(r"%[hE%]", lambda m: specifiers[m.group()], value)

    env = {**os.environ, "HOME": str(home), "SPOOLQ_LOG_FORMAT": "json"}
    for assignment in shlex.split(service.get("Environment", "")):
        key, _, value = assignment.partition("=")
        env[key] = expand(value)
    spool = tmp_path / "spool"
    spool.mkdir()
    config = Path(env["SPOOLQ_CONFIG"])  # where the unit tells spoolq to look
    config.parent.mkdir(parents=True)
    config.write_text(f'[[spool]]\npath = "{spool}"\n')
    argv = shlex.split(expand(service["ExecStart"]))
    Path(argv[0]).parent.mkdir(parents=True)
    Path(argv[0]).symlink_to(SPOOLQ)  # the spoolq that `make install` puts there
    d = DaemonProcess(argv[1:], env, tmp_path)  # DaemonProcess runs SPOOLQ, i.e. argv[0]
    try:
        d.wait_for("ready")
        gate = tmp_path / "gate"
        job = spool / "long.trigger"
        (spool / ".long.part").write_text(f"while [ ! -e {gate} ]; do sleep 0.05; done\n")
        (spool / ".long.part").rename(job)
        started = d.wait_for("started")[0]
        # systemctl stop: KillSignal to the daemon alone (mixed, process) or to every
        # process of the unit (control-group: the job too).
        stop = getattr(signal, service.get("KillSignal", "SIGTERM"))
        d.signal(stop)
        if service.get("KillMode", "control-group") == "control-group":
            os.kill(started["pid"], stop)
        d.wait_for("stopping")
        gate.touch()
        d.wait_for("succeeded", job=started["job"])
        code = d.proc.wait(60)
    finally:
        d.stop()
    assert code == 0, "a stop must not look like a failure to systemd"
    # Restart= values that restart a daemon whose exit code is not 0 (systemd.service(5)).
    assert service.get("Restart") in ("on-failure", "always"), "a crashed daemon must restart"


@pytest.mark.parametrize(
    ("doc", "index"), [("README.md", 5), ("docs/operations.md", 1)], ids=["readme", "operations"]
)
def test_operator_command_blocks_run_against_a_daemon(env: Env, doc: str, index: int) -> None:
    """Each line of the doc's operator block, with JOB filled in, exits 0."""
    block = _blocks(ROOT / doc, "sh")[index]
    assert "spoolq status" in block
    # (A lane must be named by the config or a job before it can be paused.)
    env.write_config("[lanes.warehouse]\nconcurrency = 1\n[lanes.held]\n")
    d = env.start()
    env.publish("echo some output; exit 3\n", "bad.trigger")
    failed = d.wait_for("failed")[0]["job"]
    env.cli("pause", "held", check=True)
    env.publish('{"lane": "held", "argv": ["true"]}', "held.trigger")
    queued = d.wait_for("queued", trigger=str(env.spool / "held.trigger"))[0]["job"]
    seen = set()
    for line in block.splitlines():
        cmd = line.split("#")[0].split()
        if not cmd:
            continue
        assert cmd[0] == "spoolq", line
        args = [queued if a == "JOB" and "cancel" in cmd else failed if a == "JOB" else a
                for a in cmd[1:]]  # fmt: skip
        res = env.cli(*args)
        assert res.returncode == 0, f"{line}: {res.stderr}"
        # What the operator sees, or what the command did, as the doc's comment says.
        verb, target = args[0], args[1] if len(args) > 1 else None
        seen.add(verb)
        if verb == "status":
            rows = {r.split()[1]: r for r in res.stdout.splitlines() if r.startswith("│")}
            assert "held" in rows and "yes" in rows["held"], res.stdout  # paused
        elif verb == "jobs":
            assert failed in res.stdout and queued not in res.stdout, res.stdout
        elif verb == "show":
            assert failed in res.stdout and "exit 3" in res.stdout, res.stdout
        elif verb == "logs":
            assert "some output" in res.stdout.splitlines(), res.stdout
        elif verb == "retry":
            again = d.wait_for("failed", count=2, job=failed)[-1]
            assert again["attempt"] == 2
        elif verb == "cancel":
            assert env.job(queued)["state"] == "cancelled"
        elif verb == "lane":
            status = json.loads(env.cli("status", "--json", check=True).stdout)
            lane = next(lane for lane in status["lanes"] if lane["name"] == target)
            assert (lane["concurrency"], lane["overridden"]) == (int(args[-1]), True), status
        elif verb in ("pause", "resume"):
            status = json.loads(env.cli("status", "--json", check=True).stdout)
            lane = next(lane for lane in status["lanes"] if lane["name"] == target)
            assert lane["paused"] is (verb == "pause"), status
        else:
            raise AssertionError(f"{doc}: no check for what `{line.strip()}` does")
    assert {"status", "jobs", "retry"} <= seen, seen


def test_triggers_md_publishing_snippets_run(env: Env) -> None:
    doc = DOCS / "triggers.md"
    shell, plain = _blocks(doc, "sh")[:2]
    python = _blocks(doc, "python")[0]
    assert plain.strip() in (EXAMPLES / "plain.trigger").read_text()
    d = env.start()
    subprocess.run(["sh", "-euc", shell.replace("/var/spool/etl", str(env.spool))], check=True)
    py = python.replace('"/var/spool/etl"', repr(str(env.spool)))
    py = py.replace('["python3", "-m", "myetl.load", "sales.csv"]', '["echo", "loaded"]')
    subprocess.run([sys.executable, "-c", py], check=True, timeout=60)
    d.wait_for("queued", count=2)
    names = sorted(Path(j["trigger"]).name for j in env.jobs())
    assert "sales.trigger" in names and len(names) == 2
