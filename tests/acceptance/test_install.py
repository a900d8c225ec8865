"""The README, followed as a new user follows it: in a fresh copy of the repository and a
fresh HOME, run the install block, find ``spoolq`` on the PATH, run the Quick start as
written; then check that the shipped systemd units point at what that install put in place.

Only two things come from outside the README: uv on the PATH (``make install`` would
otherwise first fetch it from PyPI) and uv's package cache (``UV_CACHE_DIR``), so that the
install takes seconds and works offline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from spoolq import __version__
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
UNITS = ("spoolq.service", "spoolq-prune.service", "spoolq-prune.timer")


def readme_blocks(heading: str) -> list[str]:
    """The ```sh blocks under the README's ``## heading``, in order."""
    text = README.read_text()
    section = text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert blocks, f"README: no sh block under '## {heading}'"
    return blocks


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not os.access(found, os.X_OK):
        pytest.fail("uv not found: `make test` installs it into .tools/bin")
    return found


def _uv_cache() -> str | None:
    res = subprocess.run([_uv(), "cache", "dir"], capture_output=True, text=True, check=False)
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def _fresh_copy(dest: Path) -> None:
    """The repository's files as a clone would have them, from the working tree (so that
    uncommitted changes are what is tested), without .venv, .tools or caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        pytest.skip("not a git checkout: nothing to clone")
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@dataclass
class Installed:
    home: Path
    clone: Path
    env: dict[str, str]
    seconds: float

    def run(self, script: str, cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euc", script], cwd=cwd, env=self.env, capture_output=True, text=True,
            timeout=90, check=False, **kw,  # type: ignore[arg-type]
        )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    home, clone, uvbin = base / "home", base / "spoolq", base / "uv-bin"
    for d in (home, clone, uvbin):
        d.mkdir()
    _fresh_copy(clone)
    (uvbin / "uv").symlink_to(_uv())
    # A new user's PATH: ~/.local/bin (as Debian's ~/.profile adds it), uv, and the system's
    # directories; no directory that already holds a spoolq (this checkout's .venv/bin).
    system = [
        p for p in os.environ["PATH"].split(os.pathsep)
        if p and not os.access(os.path.join(p, "spoolq"), os.X_OK)
    ]  # fmt: skip
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SPOOLQ_", "VIRTUAL_ENV", "UV_", "XDG_", "PYTHON"))
    }
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(home / ".local" / "bin"), str(uvbin), *system]),
        UV_PYTHON_DOWNLOADS="never",  # the README asks for a Python >= 3.11 already there
    )
    cache = _uv_cache()
    if cache:
        env["UV_CACHE_DIR"] = cache
    inst = Installed(home, clone, env, 0.0)
    started = time.monotonic()
    res = inst.run(readme_blocks("Install")[0], cwd=clone)
    inst.seconds = time.monotonic() - started
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"version {__version__}" in res.stdout, res.stdout
    return inst


def test_readme_install_puts_spoolq_on_the_path(installed: Installed) -> None:
    res = installed.run("command -v spoolq && spoolq --version", cwd=installed.home)
    assert res.returncode == 0, res.stderr
    where, version = res.stdout.splitlines()
    assert where == str(installed.home / ".local" / "bin" / "spoolq")
    assert version == f"spoolq, version {__version__}"
    # It runs from its own virtualenv, not from the clone: deleting the clone's build
    # leftovers or the clone itself would not break it.
    real = Path(where).resolve()
    assert installed.home / ".local" / "lib" / "spoolq" in real.parents
    assert installed.seconds < 60, f"make install took {installed.seconds:.0f}s"
    # The docs and units the systemd unit's Documentation= points to.
    doc = installed.home / ".local" / "share" / "doc" / "spoolq"
    assert {"operations.md", "README.md", *UNITS} <= {p.name for p in doc.iterdir()}


def test_readme_quick_start_runs_as_written(installed: Installed, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # The one change to the README's text: its /tmp/spool becomes this test's own directory.
    daemon_block, commands = (
        b.replace("/tmp/spool", str(spool)) for b in readme_blocks("Quick start")[:2]
    )
    state = spool / ".spoolq"
    log = tmp_path / "daemon.log"
    with log.open("w") as sink:  # the first terminal: the daemon in the foreground
        daemon = subprocess.Popen(
            ["bash", "-euc", daemon_block], cwd=installed.home, env=installed.env,
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: "event=ready" in log.read_text() or daemon.poll() is not None,
                   timeout=30, what="event=ready")  # fmt: skip
        assert daemon.poll() is None, log.read_text()
        # The second terminal, with a desktop's umask 002: the README's shell publish must
        # still give a trigger nobody else could have edited.
        res = installed.run(commands, cwd=installed.home, umask=0o002)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "hello.trigger" in res.stdout, res.stdout  # the jobs table names the trigger

        def finished() -> list[dict[str, object]] | None:
            res = installed.run(f"spoolq --state-dir {state} jobs --json", cwd=installed.home)
            jobs = json.loads(res.stdout) if res.returncode == 0 else []
            done = [j for j in jobs if j["state"] not in ("queued", "running")]
            return jobs if len(jobs) == 2 and len(done) == 2 else None

        jobs = wait_until(finished, timeout=30, what="both Quick start jobs to finish")
        assert {j["state"] for j in jobs} == {"succeeded"}, jobs
        logs = {
            Path(str(j["trigger"])).name: Path(str(j["log"])).read_text().splitlines() for j in jobs
        }
        assert "hello from spoolq" in logs.pop("hello.trigger")
        assert "loaded" in next(iter(logs.values()))
        os.killpg(daemon.pid, signal.SIGINT)  # Ctrl-C in the first terminal
        assert daemon.wait(timeout=30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=10)


def _systemd_verify(installed: Installed, tmp_path: Path, *units: Path) -> str:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**installed.env, "XDG_RUNTIME_DIR": str(runtime)}
    res = subprocess.run(
        ["systemd-analyze", "--user", "verify", *map(str, units)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return res.stdout + res.stderr if res.returncode else ""


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed: apt-get install systemd (Debian)",
)
def test_systemd_units_verify_against_the_installed_spoolq(
    installed: Installed, tmp_path: Path
) -> None:
    units = [installed.clone / "contrib" / u for u in UNITS]
    # Documentation= and ExecStart= point into the install: the docs, the executable.
    for unit in units:
        text = unit.read_text()
        assert "example.invalid" not in text
        assert "Documentation=file:%h/.local/share/doc/spoolq/" in text
    assert "ExecStart=%h/.local/bin/spoolq run" in units[0].read_text()
    assert "ExecStart=%h/.local/bin/spoolq prune --older-than 14d" in units[1].read_text()
    assert _systemd_verify(installed, tmp_path, *units) == ""
    # And the check has teeth: without the installed executable, verify refuses the unit.
    bare = tmp_path / "bare"
    bare.mkdir()
    problems = _systemd_verify(
        Installed(bare, installed.clone, {**installed.env, "HOME": str(bare)}, 0.0),
        tmp_path,
        units[0],
    )
    assert f"{bare}/.local/bin/spoolq" in problems
