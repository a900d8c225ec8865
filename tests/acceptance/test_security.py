"""Trust checks and templates mode against a real daemon and real files.

Every hostile trigger must be rejected with a precise reason (in the job row and in
``rejected/<name>.reason``), be kept under ``rejected/``, and leave the daemon running: each
test ends by running an ordinary trigger published after the hostile ones.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from spoolq.claims import Claimer
from spoolq.config import load_config
from spoolq.statedir import StateDir
from spoolq.trust import TrustPolicy
from tests.conftest import Env, needs_root, publish, wait_until

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


# -- helpers ---------------------------------------------------------------------------------
def rejection(env: Env, d: Any, trigger: Path) -> tuple[dict[str, Any], Path]:
    """Wait for ``trigger`` to be rejected; return its job row and the kept file."""
    event = d.wait_for("rejected", trigger=str(trigger))[0]
    job = env.job(event["job"])
    assert job["state"] == "rejected"
    kept = [p for p in (env.state / "rejected").iterdir() if p.name.startswith(job["id"])]
    files = [p for p in kept if not p.name.endswith(".reason")]
    reasons = [p for p in kept if p.name.endswith(".reason")]
    assert len(files) == 1 and len(reasons) == 1, kept
    first_line = reasons[0].read_text().splitlines()[0]
    assert first_line == job["reason"] == event["reason"]
    assert not os.path.lexists(trigger), "the trigger must leave the spool"
    return job, files[0]


def assert_still_running(env: Env, d: Any, text: str = "true\n") -> None:
    """An ordinary trigger published now still runs: the daemon survived what came before."""
    ok = env.publish(text, name=f"alive{len(env.jobs())}.trigger")
    d.wait_for("succeeded", trigger=str(ok))
    assert d.proc.poll() is None


def write_hidden(env: Env, name: str, data: bytes, mode: int = 0o644) -> Path:
    tmp = env.spool / f".{name}.part"
    tmp.write_bytes(data)
    tmp.chmod(mode)
    return tmp


# -- the file itself -------------------------------------------------------------------------
def test_fifo_is_rejected_and_never_opened(env: Env) -> None:
    d = env.start()
    fifo = env.spool / "x.trigger"
    os.mkfifo(fifo, 0o644)
    job, kept = rejection(env, d, fifo)
    assert job["reason"] == "a FIFO, not a regular file"
    assert stat.S_ISFIFO(kept.lstat().st_mode)
    # Nobody holds the FIFO open for reading: a non-blocking writer finds no reader.
    with pytest.raises(OSError) as exc:
        os.open(kept, os.O_WRONLY | os.O_NONBLOCK)
    assert exc.value.errno == errno.ENXIO
    assert_still_running(env, d)


def test_symlink_to_a_file_outside_is_rejected_not_followed(env: Env) -> None:
    canary = env.root / "canary"
    outside = env.root / "outside.trigger"
    outside.write_text(f"touch {canary}\n")
    outside.chmod(0o644)
    d = env.start()
    link = env.spool / "link.trigger"
    os.symlink(outside, link)
    job, kept = rejection(env, d, link)
    assert job["reason"] == "a symlink, not a regular file"
    assert kept.is_symlink() and os.readlink(kept) == str(outside)
    assert outside.read_text() == f"touch {canary}\n"  # the target is untouched
    assert_still_running(env, d)
    assert not canary.exists()


def test_hard_link_is_rejected(env: Env) -> None:
    canary = env.root / "canary"
    original = env.root / "original"
    original.write_text(f"touch {canary}\n")
    original.chmod(0o644)
    d = env.start()
    linked = env.spool / "hard.trigger"
    os.link(original, linked)
    job, kept = rejection(env, d, linked)
    assert job["reason"] == "has 2 hard links; a trigger must have exactly one"
    assert kept.samefile(original)
    assert_still_running(env, d)
    assert not canary.exists()


@pytest.mark.parametrize(
    ("mode", "shown"), [(0o666, "-rw-rw-rw-"), (0o646, "-rw-r--rw-"), (0o664, "-rw-rw-r--")]
)
def test_group_or_world_writable_trigger_is_rejected(env: Env, mode: int, shown: str) -> None:
    canary = env.root / "canary"
    d = env.start()
    tmp = write_hidden(env, "w.trigger", f"touch {canary}\n".encode(), mode)
    final = env.spool / "w.trigger"
    os.rename(tmp, final)
    job, kept = rejection(env, d, final)
    assert job["reason"].startswith(f"mode {shown} is writable by group or others")
    assert "umask" in job["reason"] and "chmod 644" in job["reason"]
    assert stat.S_IMODE(kept.stat().st_mode) == mode
    assert_still_running(env, d)
    assert not canary.exists()


@needs_root
def test_trigger_owned_by_an_untrusted_user_is_rejected(env: Env) -> None:
    nobody = pwd.getpwnam("nobody")
    canary = env.root / "canary"
    d = env.start()
    tmp = write_hidden(env, "n.trigger", f"touch {canary}\n".encode())
    os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
    final = env.spool / "n.trigger"
    os.rename(tmp, final)
    job, kept = rejection(env, d, final)
    assert job["reason"] == (
        f"owner uid {nobody.pw_uid} (nobody) is not trusted (add it to [security] trusted_owners)"
    )
    assert kept.stat().st_uid == nobody.pw_uid
    assert_still_running(env, d)
    assert not canary.exists()


@needs_root
def test_trusted_owners_admits_a_named_user(env: Env) -> None:
    nobody = pwd.getpwnam("nobody")
    out = env.root / "out"
    env.write_config('[security]\ntrusted_owners = ["nobody"]\n')
    d = env.start()
    tmp = write_hidden(env, "n.trigger", f"echo ran > {out}\n".encode())
    os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
    final = env.spool / "n.trigger"
    os.rename(tmp, final)
    d.wait_for("succeeded", trigger=str(final))
    assert out.read_text() == "ran\n"
    assert_still_running(env, d)  # root (and the daemon's own user) stay trusted


def test_oversize_trigger_is_rejected_at_the_limit(env: Env) -> None:
    env.write_config("[security]\nmax_trigger_bytes = 256\n")
    out = env.root / "o"
    d = env.start()
    exact = f"echo x >> {out} #".encode()
    exact += b"#" * (256 - len(exact))
    assert len(exact) == 256
    fits = env.spool / "fits.trigger"
    os.rename(write_hidden(env, "fits.trigger", exact), fits)
    d.wait_for("succeeded", trigger=str(fits))
    big = env.spool / "big.trigger"
    os.rename(write_hidden(env, "big.trigger", exact + b"#"), big)
    job, kept = rejection(env, d, big)
    assert job["reason"] == "size 257 bytes is over max_trigger_bytes (256)"
    assert kept.stat().st_size == 257
    assert out.read_text() == "x\n"
    assert_still_running(env, d)


def test_non_utf8_trigger_is_rejected(env: Env) -> None:
    d = env.start()
    bad = env.spool / "latin1.trigger"
    os.rename(write_hidden(env, "latin1.trigger", b"echo caf\xe9\n"), bad)
    job, kept = rejection(env, d, bad)
    assert job["reason"] == "not valid UTF-8 (byte 8)"
    assert kept.read_bytes() == b"echo caf\xe9\n"
    assert_still_running(env, d)


def test_non_utf8_file_name_is_rejected_and_the_daemon_survives(env: Env) -> None:
    canary = env.root / "canary"
    d = env.start()
    raw = os.fsencode(env.spool) + b"/caf\xe9.trigger"
    tmp = write_hidden(env, "n.trigger", f"touch {canary}\n".encode())
    os.rename(tmp, raw)
    shown = f"{env.spool}/caf\\xe9.trigger"
    job, _kept = rejection(env, d, Path(shown))
    assert job["reason"] == "file name is not valid UTF-8"
    assert not os.path.lexists(raw)
    assert_still_running(env, d)
    assert not canary.exists()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"argv": ["echo", "\\ud800"]}', "key 'argv.1': contains a lone surrogate"),
        ('{"argv": ["true"], "priority": 1' + "0" * 30 + "}", "key 'priority': Input should"),
        ('{"argv": ["true"], "priority": ' + "9" * 5000 + "}", "invalid JSON: Exceeds"),
        ('{"argv": ["true"], "timeout": NaN}', "invalid JSON: NaN is not a JSON number"),
        ('{"argv": ["true"], "env": {"A\\nB": "1"}}', "key 'env.A\\nB': not a valid"),
        ('{"a":' * 100_000, "invalid JSON"),
    ],
    ids=["surrogate", "huge-priority", "5000-digits", "nan", "env-name", "deep"],
)
def test_hostile_json_is_rejected_and_the_daemon_survives(env: Env, text: str, reason: str) -> None:
    d = env.start()
    bad = env.publish(text, name="bad.trigger")
    job, _ = rejection(env, d, bad)
    assert job["reason"].startswith(reason), job["reason"]
    assert_still_running(env, d)


def test_directory_named_like_a_trigger_is_rejected(env: Env) -> None:
    d = env.start()
    tmp = env.spool / ".dir.part"
    tmp.mkdir()
    final = env.spool / "dir.trigger"
    os.rename(tmp, final)
    job, kept = rejection(env, d, final)
    assert job["reason"] == "a directory, not a regular file"
    assert kept.is_dir()
    assert_still_running(env, d)


# -- recursive spools never follow a symlinked directory -----------------------------------
def test_recursive_spool_does_not_follow_a_symlinked_subdirectory(env: Env) -> None:
    canary = env.root / "canary"
    outside = env.root / "outside"
    outside.mkdir()
    stolen = publish(outside, f"touch {canary}\n", name="x.trigger")
    os.symlink(outside, env.spool / "sub")
    real = env.spool / "real"
    real.mkdir()
    marker = publish(real, "true\n", name="marker.trigger")
    env.write_config(f'[[spool]]\npath = "{env.spool}"\nrecursive = true\n')
    d = env.start(spool=False)
    # The start-up scan saw both; the marker running proves the scan was taken.
    d.wait_for("succeeded", trigger=str(marker))
    nested = publish(real, "true\n", name="later.trigger")  # and the watcher is live
    d.wait_for("succeeded", trigger=str(nested))
    assert stolen.exists() and not canary.exists()
    assert not [j for j in env.jobs() if "outside" in j["trigger"] or "/sub/" in j["trigger"]]


def test_claim_refuses_a_subdirectory_swapped_for_a_symlink_during_the_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a scan cannot see: ``sub`` is a real directory holding a trigger when it is
    listed, and a producer swaps it for a symlink to elsewhere while the claim walks down to
    it (here: just before the claim opens ``sub``). The claim must not take the file from
    outside the spool, nor lose the one that was listed."""
    spool, outside, state = tmp_path / "spool", tmp_path / "outside", tmp_path / "state"
    for p in (spool, outside, spool / "sub"):
        p.mkdir()
    listed = publish(spool / "sub", "true\n", name="x.trigger")
    victim = publish(outside, "true\n", name="x.trigger")
    config = load_config(None, overrides={"spool": [{"path": str(spool), "recursive": True}]})
    st = StateDir(state)
    st.ensure()
    warnings: list[tuple[str, dict[str, Any]]] = []
    claimer = Claimer(
        config,
        st,
        TrustPolicy.from_names((), 1 << 20),
        clock=lambda: 0.0,
        warn=lambda event, **f: warnings.append((event, f)),
    )
    assert [e.name for e in os.scandir(spool) if e.is_dir(follow_symlinks=False)] == ["sub"]
    real_open = os.open
    swapped: list[str] = []

    def open_racing_a_producer(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if path == "sub" and kw.get("dir_fd") is not None and not swapped:
            os.rename(spool / "sub", spool / "sub.moved")
            os.symlink(outside, spool / "sub")
            swapped.append(path)
        return real_open(path, flags, *args, **kw)

    try:
        with monkeypatch.context() as m:
            m.setattr(os, "open", open_racing_a_producer)
            taken = claimer.claim(config.spool[0], str(spool / "sub" / "x.trigger"))
        ok = publish(spool, "true\n", name="ok.trigger")
        assert claimer.claim(config.spool[0], str(ok)) is not None
    finally:
        claimer.close()
    assert swapped, "the claim never opened 'sub' on its own: the swap did not happen in it"
    assert taken is None
    assert victim.exists(), "the file outside the spool was claimed through the symlink"
    assert (spool / "sub.moved" / listed.name).exists(), "the listed trigger was lost"
    assert [p.name.split(".", 2)[2] for p in st.claimed.iterdir()] == ["ok.trigger"]
    assert warnings and warnings[0][0] == "not_followed"
    assert "'sub' is a symlink" in warnings[0][1]["reason"]


# -- directory checks at start ---------------------------------------------------------------
def run_and_fail(env: Env, *args: str) -> str:
    res = env.cli("run", *args, str(env.spool))
    assert res.returncode == 2, res.stdout + res.stderr
    return res.stderr


def test_world_writable_spool_without_sticky_refuses_to_start(env: Env) -> None:
    env.spool.chmod(0o777)
    err = run_and_fail(env)
    assert f"spool directory {env.spool} is world-writable without the sticky bit" in err
    assert "allow_insecure_dirs" in err


def test_world_writable_spool_with_sticky_bit_starts(env: Env) -> None:
    env.spool.chmod(0o1777)
    d = env.start()
    assert_still_running(env, d)


def test_insecure_spool_accepted_when_the_config_says_so(env: Env) -> None:
    env.spool.chmod(0o777)
    env.write_config("[security]\nallow_insecure_dirs = true\n")
    d = env.start()
    assert_still_running(env, d)


def test_group_writable_state_dir_refuses_to_start(env: Env) -> None:
    env.state.mkdir()
    env.state.chmod(0o770)
    err = run_and_fail(env)
    assert f"state directory {env.state} is writable by group or others" in err


def test_world_writable_parent_refuses_to_start(env: Env) -> None:
    parent = env.root / "open"
    parent.mkdir()
    env.spool = parent / "spool"
    env.spool.mkdir()
    env.state = env.spool / ".spoolq"
    parent.chmod(0o777)
    err = run_and_fail(env)
    assert f"its parent {parent} is world-writable without the sticky bit" in err


@needs_root
def test_spool_owned_by_an_untrusted_user_refuses_to_start(env: Env) -> None:
    nobody = pwd.getpwnam("nobody")
    os.chown(env.spool, nobody.pw_uid, nobody.pw_gid)
    err = run_and_fail(env)
    assert f"spool directory {env.spool} is owned by untrusted uid {nobody.pw_uid} (nobody)" in err


# -- environment ------------------------------------------------------------------------------
ENV_DUMP = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


def test_jobs_get_only_the_passthrough_environment(env: Env) -> None:
    out = env.root / "env.json"
    env.env.update({"SECRET_TOKEN": "s3cr3t", "LC_TIME": "C", "TZ": "UTC"})
    d = env.start()
    job = env.publish(json.dumps({"argv": [sys.executable, "-c", ENV_DUMP, str(out)]}))
    d.wait_for("succeeded", trigger=str(job))
    seen = json.loads(out.read_text())
    assert "SECRET_TOKEN" not in seen
    assert seen["LC_TIME"] == "C" and seen["TZ"] == "UTC" and seen["PATH"]
    # Exactly the SPOOLQ_ variables docs/triggers.md promises a job ("What a job sees").
    page = (REPO / "docs" / "triggers.md").read_text()
    sees = page.split("## What a job sees", 1)[1].split("\n## ", 1)[0]
    (environment,) = [item for item in sees.split("\n- ") if item.startswith("environment:")]
    documented = set(re.findall(r"`(SPOOLQ_\w+)`", environment))
    assert "SPOOLQ_JOB_ID" in documented, environment
    assert {k for k in seen if k.startswith("SPOOLQ_")} == documented
    allowed = {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR"}
    assert all(k in allowed or k.startswith(("LC_", "SPOOLQ_")) for k in seen), sorted(seen)


def test_env_passthrough_star_passes_everything(env: Env) -> None:
    out = env.root / "env.json"
    env.env["SECRET_TOKEN"] = "s3cr3t"
    env.write_config('[security]\nenv_passthrough = ["*"]\n')
    d = env.start()
    job = env.publish(json.dumps({"argv": [sys.executable, "-c", ENV_DUMP, str(out)]}))
    d.wait_for("succeeded", trigger=str(job))
    assert json.loads(out.read_text())["SECRET_TOKEN"] == "s3cr3t"


# -- templates mode: the injection corpus -----------------------------------------------------
# The job program: records the argv it received (after the script) as JSON, one file per job.
RECORD = (
    "import json, os, sys; "
    "out = os.path.join(os.environ['RECORD_DIR'], os.environ['SPOOLQ_JOB_ID'] + '.json'); "
    "json.dump({'argv': sys.argv[1:], 'dry': os.environ.get('DRY_RUN')}, open(out, 'w'))"
)


def templates_config(root: Path, staging: Path, record: Path) -> str:
    py = json.dumps(sys.executable)
    script = json.dumps(RECORD)
    return f"""
[security]
allow_commands = false

[jobs.load]
argv = [{py}, "-c", {script}, "{{table}}", "{{path}}"]
lane = "warehouse"
env = {{ RECORD_DIR = "{record}" }}
allow_env = ["DRY_RUN"]
params.table = {{ pattern = "^[A-Za-z_][A-Za-z0-9_]{{0,62}}$" }}
params.path = {{ type = "path", under = "{staging}" }}

[jobs.note]
# Accepts any text up to 100 000 characters: an accepted payload must still arrive verbatim
# as one argv element and never execute.
argv = [{py}, "-c", {script}, "--note={{note}}", "{{note}}"]
env = {{ RECORD_DIR = "{record}" }}
params.note = {{ pattern = '(?s).*', max_length = 100000 }}
"""


def payloads(canary: Path) -> list[str]:
    c = str(canary)
    return [
        f"x; touch {c}/semicolon",
        f"$(touch {c}/dollar)",
        f"`touch {c}/backtick`",
        f"x\ntouch {c}/newline",
        f"x\r\ntouch {c}/crlf",
        f"x' ; touch {c}/single ; '",
        f'x" ; touch {c}/double ; "',
        f"x && touch {c}/and",
        f"x | touch {c}/pipe",
        f"x > {c}/redirect",
        f"{{table}}{{path}}; touch {c}/placeholder",
        "{note}",
        "-rf",
        "../../../etc/passwd",
        "/etc/passwd",
        "ｔａｂｌｅ",  # noqa: RUF001 - fullwidth letters are the point
        "a" * 5000,
        "",
    ]


def test_the_canaries_are_live(tmp_path: Path) -> None:
    """Control: through a shell, the unquoted payloads do create their canaries, so an empty
    canary directory below means that no shell ever saw them."""
    for p in payloads(tmp_path)[:10]:
        subprocess.run(["/bin/sh", "-c", f"echo {p}"], capture_output=True, check=False)
    names = {"semicolon", "dollar", "backtick", "newline", "crlf", "and", "pipe", "redirect"}
    assert names <= {p.name for p in tmp_path.iterdir()}


def test_injection_corpus_never_executes(env: Env) -> None:
    staging, outside, record, canary = (
        env.root / n for n in ("staging", "outside", "record", "canary")
    )
    for p in (staging, outside, record, canary):
        p.mkdir()
    staging = staging.resolve()  # what a path param resolves against
    (staging / "sales.csv").write_text("a,b\n")
    os.symlink(outside, staging / "escape")  # a symlinked dir that leaves `under`
    os.symlink(staging / "sales.csv", staging / "alias.csv")  # one that stays inside
    env.write_config(templates_config(env.root, staging, record))
    d = env.start()

    # (trigger text, expected argv after the script | reason the rejection starts with)
    cases: list[tuple[str, list[str] | str]] = []

    def load(table: Any, path: Any, **extra: Any) -> str:
        return json.dumps({"job": "load", "params": {"table": table, "path": path}, **extra})

    for p in payloads(canary):
        # The strict template: anything but an identifier is refused by its pattern.
        shown = p if len(p) <= 80 else p[:77] + "..."
        why = (
            "param table is 5000 characters long, over max_length 4096"
            if len(p) > 4096
            else f"param table={shown!r} does not match ^[A-Za-z_][A-Za-z0-9_]{{0,62}}$"
        )
        cases.append((load(p, "sales.csv"), why))
        # The permissive template: accepted, and arrives verbatim as one element.
        cases.append((json.dumps({"job": "note", "params": {"note": p}}), [f"--note={p}", p]))
    sales = str(staging / "sales.csv")
    cases += [
        (load("sales", "sales.csv"), ["sales", sales]),
        (load("sales", sales), ["sales", sales]),
        (load("sales", "sub/../sales.csv"), ["sales", sales]),
        (load("sales", "alias.csv"), ["sales", sales]),  # resolved: the file that was checked
        (
            load("sales", f"$(touch {canary}/path).csv"),
            ["sales", f"{staging}/$(touch {canary}/path).csv"],
        ),
        (load("sales", "../outside/x.csv"), "param path='../outside/x.csv' resolves to"),
        (load("sales", "/etc/passwd"), "param path='/etc/passwd' resolves to /etc/passwd, not"),
        (load("sales", "escape/x.csv"), f"param path='escape/x.csv' resolves to {outside}/x.csv"),
        (load("sales", "."), f"param path='.' resolves to {staging}, not under"),
        (load("sales", "a\nb.csv"), "param path='a\\nb.csv' contains a control character"),
        (load("sales", "a" * 5000), "param path is 5000 characters long, over max_length 4096"),
        (load("sal\u0000es", "sales.csv"), "param table='sal\\x00es' contains a NUL character"),
        (load("sales", "x\u0000.csv"), "param path='x\\x00.csv' contains a NUL character"),
        (load("sales", "\udc80"), "key 'params.path': contains a lone surrogate"),
        (load(True, "sales.csv"), "param table is a boolean; give a string or an integer"),
        (load(["a", "b"], "sales.csv"), "param table is a list; give a string or an integer"),
        (load("sales", "sales.csv", env={"DRY_RUN": "1"}), ["sales", sales]),
        (
            load("sales", "x.csv", env={"LD_PRELOAD": "/tmp/evil.so"}),
            "key 'env.LD_PRELOAD': job template 'load' does not allow",
        ),
        (
            load("sales", "x.csv", lane="fast"),
            "key 'lane': job template 'load' sets lane = warehouse",
        ),
        (load("sales", "x.csv", cwd="/"), "key 'cwd': not allowed with a job template"),
        (
            json.dumps({"job": "note", "params": {"note": "n"}, "lane": "sneaky"}),
            "key 'lane': 'sneaky' is not a lane of the config",
        ),
        (
            json.dumps({"job": "note", "params": {"note": "n"}, "lane": "warehouse"}),
            ["--note=n", "n"],
        ),
        (
            json.dumps({"job": "load", "params": {"table": "t"}}),
            "param 'path' is required by job template 'load'",
        ),
        (
            json.dumps({"job": "load", "params": {"table": "t", "path": "p", "extra": "x"}}),
            "param 'extra' is not declared by job template 'load'",
        ),
        (
            json.dumps({"job": "nope"}),
            "key 'job': unknown job template 'nope' (known: load, note)",
        ),
        (f"touch {canary}/plain\n", "plain command triggers are not allowed"),
        (
            json.dumps({"command": f"touch {canary}/command"}),
            "key 'command': commands are not allowed",
        ),
        (
            json.dumps({"commands": [f"touch {canary}/commands"]}),
            "key 'commands': commands are not allowed",
        ),
        (
            json.dumps({"argv": ["touch", f"{canary}/argv"]}),
            "key 'argv': commands are not allowed",
        ),
        (
            json.dumps({"job": "load", "argv": ["touch", f"{canary}/both"]}),
            "keys 'argv' and 'job' cannot be used together",
        ),
    ]
    published = {
        str(env.publish(text, name=f"case{i:03d}.trigger")): (text, want)
        for i, (text, want) in enumerate(cases)
    }
    wait_until(
        lambda: sum(len(d.find(e)) for e in ("succeeded", "rejected", "failed")) >= len(cases),
        timeout=45,
        what="every case to finish",
    )
    for job in env.jobs():
        text, want = published[job["trigger"]]
        if isinstance(want, str):
            assert job["state"] == "rejected", (text, job)
            assert job["reason"].startswith(want), (text, job["reason"])
            reason_files = list((env.state / "rejected").glob(f"{job['id']}.*.reason"))
            assert reason_files[0].read_text().splitlines()[0] == job["reason"]
        else:
            assert job["state"] == "succeeded", (text, job)
            got = json.loads((record / f"{job['id']}.json").read_text())
            assert got["argv"] == want, text
            assert got["dry"] == ("1" if "DRY_RUN" in text else None)
    assert not list(canary.iterdir()), "a payload executed"
    assert not list(outside.iterdir())
    assert d.proc.poll() is None


# -- the documented example -------------------------------------------------------------------
def test_documented_security_config_loads() -> None:
    example = REPO / "docs" / "examples" / "security-templates.toml"
    config = load_config(example)
    assert not config.security.allow_commands
    assert config.jobs["load"].params["path"].type == "path"
    doc = (REPO / "docs" / "security.md").read_text()
    assert "docs/examples/security-templates.toml" in doc
    # Every TOML block in the page is a valid configuration (or a valid fragment of one).
    blocks = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    assert blocks
    for block in blocks:
        tomllib.loads(block)
        load_config(None, overrides=tomllib.loads(block))
