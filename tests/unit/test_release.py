"""Reading a waiting job's trigger from its own state directory for ``retry --any-host``:
only from that directory (not another one at the same path), and only a file a daemon
would read - each refusal names the job, the file and what to do instead."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from spoolq.config import Config, Security
from spoolq.errors import SpoolqError
from spoolq.jobs import HomeInfo, Job, JobSpec, JobState
from spoolq.release import read_at_home
from spoolq.statedir import StateDir

JOB_ID = "01M98FCW5PH5BCWC4G7ZGG02BV"
TEXT = '{"argv": ["true"]}'


def job_in(root: Path, **kw: Any) -> Job:
    fields: dict[str, Any] = dict(  # noqa: C408 - reads like the dataclass's fields
        id=JOB_ID, seq=1, state=JobState.QUEUED, lane="own", priority=0,
        trigger=str(root.parent / "load.trigger"),
        claimed_path=str(root / "claimed" / f"{JOB_ID}.0a1b2c3d.load.trigger"),
        log=str(root / "logs" / f"{JOB_ID}.log"), spec=JobSpec(steps=(("true",),)),
        idem_key=None, attempts=0, failures=0, retries=0, retry_backoff=5.0, timeout=None,
        kill_grace=10.0, on_success="archive", exit_code=None, reason=None, created_at=0.0,
        started_at=None, finished_at=None, not_before=0.0, owner=None, pid=None,
        cancel_requested=False, home=StateDir(root).home,
    )  # fmt: skip
    fields.update(kw)
    return Job(**fields)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    sd = StateDir(tmp_path / "spool" / ".spoolq")
    sd.ensure()
    return sd.root


def write_claim(job: Job, text: str = TEXT, mode: int = 0o644) -> Path:
    path = Path(job.claimed_path)
    path.write_text(text)
    path.chmod(mode)
    return path


HOME = HomeInfo("home-x", "/x", "hosta", "d1@hosta", 0.0)


def test_a_trigger_a_daemon_would_read_is_read(state: Path) -> None:
    job = job_in(state)
    write_claim(job)
    assert read_at_home(Config(), job, HOME) == TEXT


def test_a_finished_job_is_read_from_its_archive(state: Path) -> None:
    job = job_in(state, state=JobState.FAILED)
    archived = state / "failed" / Path(job.claimed_path).name
    archived.write_text(TEXT)
    archived.chmod(0o644)
    assert read_at_home(Config(), job, HOME) == TEXT


def test_a_state_directory_not_reachable_from_here_is_refused(tmp_path: Path) -> None:
    job = job_in(tmp_path / "elsewhere" / ".spoolq", home="home-A")
    with pytest.raises(SpoolqError) as err:
        read_at_home(Config(), job, HOME)
    msg = str(err.value)
    assert f"job {JOB_ID}: its state directory {tmp_path}/elsewhere/.spoolq is not reachable" in msg
    assert "run this command on a host where" in msg and "last served from host hosta" in msg


def test_another_state_directory_at_the_same_path_is_not_the_jobs_home(state: Path) -> None:
    job = job_in(state, home="home-OTHER")
    write_claim(job)
    with pytest.raises(SpoolqError, match=r"is another state directory \(home-.*\), not the job's"):
        read_at_home(Config(), job, HOME)


@pytest.mark.parametrize(
    ("text", "mode", "why"),
    [
        (TEXT, 0o664, "writable by group or others"),
        ("x" * 100, 0o644, "over max_trigger_bytes (64)"),
        ('{"argv": ', 0o644, "JSON"),
    ],
)
def test_a_file_a_daemon_would_refuse_is_refused(
    state: Path, text: str, mode: int, why: str
) -> None:
    job = job_in(state)
    path = write_claim(job, text, mode)
    config = Config(security=Security(max_trigger_bytes=64))
    with pytest.raises(SpoolqError) as err:
        read_at_home(config, job, HOME)
    msg = str(err.value)
    assert f"job {JOB_ID}: its trigger file {path} fails the checks a daemon applies" in msg
    assert why in msg


def test_a_fifo_in_its_place_is_refused_without_blocking(state: Path) -> None:
    job = job_in(state)
    os.mkfifo(job.claimed_path)
    with pytest.raises(SpoolqError, match="a FIFO"):
        read_at_home(Config(), job, HOME)


def test_a_job_whose_last_run_still_has_processes_here_is_not_released(state: Path) -> None:
    """Only its daemon died: its processes run on, out of reach of the peer that re-queued
    the job. Released, it would run twice at once."""
    job = job_in(state)
    write_claim(job)
    env = {**os.environ, "SPOOLQ_JOB_ID": job.id}
    old = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    try:
        with pytest.raises(SpoolqError, match=f"process group {old.pid}") as err:
            read_at_home(Config(), job, HOME)
        assert "kill -- -PGID" in str(err.value)
    finally:
        os.killpg(old.pid, signal.SIGKILL)
        old.wait()
    assert read_at_home(Config(), job, HOME) == TEXT
