"""The documentation's examples are executed, so the docs cannot rot."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spoolq.config import load_config
from tests.conftest import SPOOLQ, Env

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: p.name)
def test_every_toml_block_in_the_docs_is_a_valid_config(doc: Path, tmp_path: Path) -> None:
    for i, block in enumerate(_blocks(doc, "toml")):
        cfg = tmp_path / f"{doc.stem}-{i}.toml"
        cfg.write_text(block)
        load_config(cfg, env={})


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
    readme = (ROOT / "README.md").read_text()
    shell = _blocks(ROOT / "README.md", "sh")[4]  # [0-2] install, [3] the daemon
    python = _blocks(ROOT / "README.md", "python")[0]
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
    assert "spoolq status" in readme and "spoolq logs JOB -f" in readme


def test_systemd_unit_runs_the_daemon_and_restarts_on_failure() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "contrib" / "spoolq.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[-1] == "run"
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"


@pytest.mark.parametrize(
    ("doc", "index"), [("README.md", 5), ("docs/operations.md", 1)], ids=["readme", "operations"]
)
def test_operator_command_blocks_run_against_a_daemon(env: Env, doc: str, index: int) -> None:
    """Each line of the doc's operator block, with JOB filled in, exits 0."""
    block = _blocks(ROOT / doc, "sh")[index]
    assert "spoolq status" in block
    env.write_config("[lanes.warehouse]\nconcurrency = 1\n")
    d = env.start()
    env.publish("echo some output; exit 3\n", "bad.trigger")
    failed = d.wait_for("failed")[0]["job"]
    env.cli("pause", "held", check=True)
    env.publish('{"lane": "held", "argv": ["true"]}', "held.trigger")
    queued = d.wait_for("queued", trigger=str(env.spool / "held.trigger"))[0]["job"]
    for line in block.splitlines():
        cmd = line.split("#")[0].split()
        if not cmd:
            continue
        assert cmd[0] == "spoolq", line
        args = [queued if a == "JOB" and "cancel" in cmd else failed if a == "JOB" else a
                for a in cmd[1:]]  # fmt: skip
        res = env.cli(*args)
        assert res.returncode == 0, f"{line}: {res.stderr}"


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
