"""Crash harness for a fleet: N triggers published into the spools of D daemons sharing one
PostgreSQL store while the daemons are SIGKILLed and restarted at random and the server
itself is restarted once, then proof that nothing was lost or doubled and that the lane of
concurrency 1 never ran two jobs at once.

    uv run python -m bench.fleet_chaos              # default: N=1500, D=3, M=20, 1 server restart
    uv run python -m bench.fleet_chaos -n 240 -m 6  # the CI-sized run (also in the tests)

Each daemon has a spool and a state directory of its own; all of them share one schema on
the server (default postgresql://postgres@127.0.0.1:5432/test, or --url or
$SPOOLQ_BENCH_POSTGRES), created for the run and dropped afterwards. Producers, one per
spool, publish about --rate triggers a second in all (atomically: a hidden name, then a
rename). The SIGKILLs fall at random moments of the publishing, mostly on a daemon that is
running jobs; each daemon starts again at once on the same spool and state directory. The
server restart (`pg_ctlcluster --skip-systemctl-redirect VERSION main restart`, once a third
of the triggers are published, while a job runs) needs root and Debian's PostgreSQL
packaging; --no-server-restart without them. The daemons ride through it on their own.
Whatever happens, the server is running when the harness returns.

Lanes: `serial`, concurrency 1 for the whole fleet (a job runs where it was claimed; every
spool gets its share), and `shared`, concurrency 2, any_host (any daemon runs any state
directory's jobs). A job sleeps 5-30 ms and appends "trigger lane job attempt start_ns
end_ns" to one file in a single O_APPEND write (CLOCK_REALTIME, one machine). It ignores
SIGTERM, so every run of a command leaves its line: a dead daemon's orphaned job is let
finish, not cut short.

Re-runs are bounded by the jobs the killed daemons held, not by the kills: a daemon runs up
to three jobs at once here (the fleet's slots), and each job it held when it was killed runs
again. Each kill freezes the daemon first (SIGSTOP), waits until the server has answered
everything it sent, and counts the running jobs the store says it owns. The server restart
re-runs nothing: on one host a daemon's liveness is its pid, so no peer takes the jobs of a
daemon cut off from the store; it keeps them running and records them once the store is back.

Checks, printed at the end (exit 1 if any fails):
  every trigger has exactly one job, and it succeeded; nothing is left in a spool or in a
  claimed/; every trigger's command ran, never more often than its job has attempts;
  re-runs <= the jobs the killed daemons held when they were killed; the `serial` lane's
  runs, by the jobs' own stamps, never overlap; no daemon exited unless killed, and each
  stopped cleanly on SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Daemon, trigger_text, wait_for, write_file
from bench.pg import DEFAULT_URL, schema

LANES = {"serial": 1, "shared": 2}
SERIAL_SHARE = 3  # one trigger in three of each spool goes to `serial`

# The job: start, sleep argv[4] ms, end; one line per run. SIGTERM is ignored so that an
# orphan a peer reaps (SIGTERM, then SIGKILL after kill_grace) still writes its line.
SPAN_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec;
}

int main(int argc, char **argv) {
    signal(SIGTERM, SIG_IGN);
    long long start = now();
    if (argc < 5) return 2;
    long ms = atol(argv[4]);
    struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&d, &d) != 0) {}
    long long end = now();
    const char *job = getenv("SPOOLQ_JOB_ID"), *attempt = getenv("SPOOLQ_ATTEMPT");
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s %s %s %s %lld %lld\n", argv[2], argv[3],
                     job ? job : "-", attempt ? attempt : "-", start, end);
    if (n <= 0 || n >= (int)sizeof buf) return 1;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    if (write(fd, buf, (size_t)n) != n) return 1;
    return close(fd) != 0;
}
"""

SPAN_PY = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "start = time.time_ns()\n"
    "time.sleep(int(sys.argv[4]) / 1000)\n"
    "end = time.time_ns()\n"
    "env = os.environ\n"
    "line = '%s %s %s %s %d %d\\n' % (sys.argv[2], sys.argv[3], env.get('SPOOLQ_JOB_ID', '-'),\n"
    "    env.get('SPOOLQ_ATTEMPT', '-'), start, end)\n"
    "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
    "os.write(fd, line.encode())\n"
    "os.close(fd)\n"
)


def build_span(workdir: Path) -> list[str]:
    """The job's argv prefix: the C program compiled (static if possible), else Python."""
    src, exe = workdir / "span.c", workdir / "span"
    src.write_text(SPAN_C)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        for flags in (["-static"], []):
            res = subprocess.run(
                [cc, "-O2", *flags, "-o", str(exe), str(src)], capture_output=True, check=False
            )
            if res.returncode == 0:
                return [str(exe)]
    script = workdir / "span.py"
    script.write_text(SPAN_PY)
    return [sys.executable, "-S", str(script)]


@dataclass
class Report:
    n: int
    daemons: int
    kills: int = 0
    busy_kills: int = 0  # kills of a daemon that held running jobs
    held: int = 0  # running jobs the killed daemons held, all kills together
    server_restarts: int = 0
    outage_s: float = 0.0  # from the restart command to the server accepting connections
    reruns: int = 0  # attempts beyond the first, from the store
    extra_runs: int = 0  # stamp lines beyond one per trigger
    serial_runs: int = 0
    outages_seen: int = 0  # daemon lives that logged store_unavailable, and recovered
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [
            f"triggers published : {self.n} into {self.daemons} spools",
            f"SIGKILLs           : {self.kills} ({self.busy_kills} of a daemon running jobs)",
            f"jobs held by them  : {self.held}",
            f"server restarts    : {self.server_restarts} (down {self.outage_s:.1f} s;"
            f" {self.outages_seen} daemons rode through it)",
            f"re-runs (store)    : {self.reruns} (bound: {self.held})",
            f"extra runs (stamps): {self.extra_runs}",
            f"serial lane runs   : {self.serial_runs}, checked for overlap",
            f"wall time          : {self.wall_s:.1f} s",
        ]
        if self.problems:
            lines += ["PROBLEMS:", *(f"  - {p}" for p in self.problems)]
        else:
            lines.append("all checks passed")
        return "\n".join(lines)


# -- the server ---------------------------------------------------------------------------------
def _pg_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".")])
    return versions[-1]


def _pg_ctl(action: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", action],
        capture_output=True,
        timeout=120,
        check=False,
    )


def _answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def _wait_answers(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the PostgreSQL server does not answer after {timeout:.0f} s")
        time.sleep(0.05)


def restart_server(url: str) -> float:
    """Restart the server; seconds until it accepts connections again."""
    t0 = time.monotonic()
    res = _pg_ctl("restart")
    if res.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster restart: {res.returncode} {res.stderr.decode()}")
    _wait_answers(url)
    return time.monotonic() - t0


def ensure_server_running(url: str) -> None:
    """Leave the server as we found it: running (started again if a restart failed)."""
    if _pg_ctl("status").returncode != 0:  # 3: not running
        _pg_ctl("start")
    _wait_answers(url)


def can_restart_server() -> str | None:
    """Why the server cannot be restarted here, or None."""
    if os.geteuid() != 0:
        return "restarting the PostgreSQL server needs root"
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        return "restarting the PostgreSQL server needs pg_ctlcluster (Debian's postgresql-common)"
    return None


# -- the store, read from outside ------------------------------------------------------------
def _rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return list(conn.execute(sql, args).fetchall())


def _rows_or_none(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]] | None:
    """None while the server does not answer (it may be restarting)."""
    import psycopg

    try:
        return _rows(url, sql, *args)
    except psycopg.OperationalError:
        return None


# -- one host -----------------------------------------------------------------------------------
class _Host:
    """A daemon with its own spool, state directory and config; one event log per start."""

    def __init__(self, root: Path, index: int, store_url: str, tag: str) -> None:
        self.index = index
        self.home = root / f"host{index}"
        self.spool = self.home / "spool"
        self.spool.mkdir(parents=True)
        self.app = f"spoolq_fc_{tag}_{index}"  # names its connections in pg_stat_activity
        config = self.home / "spoolq.toml"
        config.write_text(
            f'store = "{store_url}&application_name={self.app}"\n'
            'heartbeat_interval = "0.5s"\n'
            f'[[spool]]\npath = "{self.spool}"\nrescan_interval = "2s"\nsettle = "0.2s"\n'
            # Orphans of a killed daemon finish by themselves in ms: let them.
            '[defaults]\nkill_grace = "30s"\n'
            "[lanes.serial]\nconcurrency = 1\n"
            "[lanes.shared]\nconcurrency = 2\nany_host = true\n"
        )
        self.daemon = Daemon(self.home, self.spool, env={"SPOOLQ_CONFIG": str(config)})
        self.starts = 0
        self.published: list[str] = []

    def start(self) -> None:
        self.starts += 1
        self.daemon.log = self.home / f"daemon.{self.starts}.log"
        self.daemon.start()

    @property
    def state(self) -> Path:
        return self.daemon.state


def _kill(host: _Host, store_url: str) -> int:
    """SIGKILL the host's daemon and start it again (same spool and state directory).
    Return how many running jobs it held: frozen by SIGSTOP first, once the server has
    answered everything it sent, the store says exactly which jobs it owned; each of them,
    and no other, is re-queued as interrupted."""
    d = host.daemon
    assert d.proc is not None
    pid = d.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        active = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'"
        )
        while (rows := _rows_or_none(store_url, active, host.app)) is None or rows[0][0]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        held = _rows(
            store_url,
            "SELECT count(*) FROM spoolq_jobs WHERE state = 'running' AND owner IN"
            " (SELECT id FROM spoolq_daemons WHERE pid = %s)",
            pid,
        )[0][0]
    finally:
        os.kill(pid, signal.SIGKILL)
        d.proc.wait()
    host.start()
    return int(held)


# -- the run ------------------------------------------------------------------------------------
def run(
    n: int = 1500,
    kills: int = 20,
    daemons: int = 3,
    rate: float = 40.0,
    server_restart: bool = True,
    seed: int | None = None,
    url: str = DEFAULT_URL,
    workdir: Path | None = None,
    timeout: float = 300.0,
) -> Report:
    """Publish ``n`` triggers at about ``rate`` a second (round robin over the spools,
    one producer thread each) while ``kills`` SIGKILLs fall at random moments of the
    publishing and, once a third is published, the server restarts."""
    rng = random.Random(seed)
    root = Path(workdir or tempfile.mkdtemp(prefix="spoolq-fleet-chaos-")).resolve()
    report = Report(n, daemons)
    started = time.monotonic()
    try:
        with schema(url) as store_url:
            hosts: list[_Host] = []
            try:
                _run(report, rng, root, store_url, hosts, kills, rate, server_restart, timeout)
            finally:
                if server_restart:  # up before the daemons drain and the schema is dropped
                    ensure_server_running(url)
                _stop(report, hosts)
            _verify(report, root, store_url, hosts)
    finally:
        if server_restart:
            ensure_server_running(url)
    report.wall_s = time.monotonic() - started
    if report.ok and workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    elif not report.ok:
        report.problems.append(f"work directory kept: {root}")
    return report


def _run(
    report: Report,
    rng: random.Random,
    root: Path,
    store_url: str,
    hosts: list[_Host],
    kills: int,
    rate: float,
    server_restart: bool,
    timeout: float,
) -> None:
    n = report.n
    span = build_span(root)
    spans = root / "spans.log"
    tag = os.urandom(3).hex()
    for i in range(report.daemons):
        hosts.append(_Host(root, i, store_url, tag))
    for h in hosts:
        h.start()
    for h in hosts:
        h.daemon.wait_ready()

    count = [0]
    lock = threading.Lock()

    def produce(host: _Host, indices: list[int], prng: random.Random) -> None:
        gap = len(hosts) / rate
        for k in indices:
            lane = "serial" if (k // len(hosts)) % SERIAL_SHARE == 0 else "shared"
            name = f"h{host.index}t{k:06d}.trigger"
            argv = [*span, str(spans), name, lane, str(prng.randint(5, 30))]
            part = host.spool / f".{name}.part"  # atomic publish: a hidden name, then rename
            write_file(part, trigger_text(argv, lane))
            os.rename(part, host.spool / name)
            host.published.append(name)
            with lock:
                count[0] += 1
            time.sleep(prng.uniform(0, 2 * gap))

    threads = [
        threading.Thread(
            target=produce, args=(h, list(range(i, n, len(hosts))), random.Random(rng.random()))
        )
        for i, h in enumerate(hosts)
    ]
    publish_s = n / rate
    t0 = time.monotonic()
    kill_at = sorted(t0 + rng.uniform(0.2, publish_s) for _ in range(kills))
    restarted = not server_restart
    for t in threads:
        t.start()
    try:
        while kill_at or not restarted or any(t.is_alive() for t in threads):
            for h in hosts:
                code = h.daemon.proc.poll() if h.daemon.proc else None
                if code is not None:
                    report.problems.append(
                        f"daemon {h.index} exited by itself ({code}), see {h.daemon.log}"
                    )
                    h.start()
            if not restarted and count[0] >= n // 3:
                # While jobs run (a second at most to find one running).
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: any(map(_running, hosts)), 1.0, "a job running", 0.002)
                restarted = True
                report.server_restarts += 1
                report.outage_s = restart_server(store_url)
            if kill_at and time.monotonic() >= kill_at[0]:
                kill_at.pop(0)
                # Mostly a daemon running jobs (the kills that cost re-runs: wait a second
                # at most for one), sometimes any.
                busy: list[_Host] = []
                if rng.random() < 0.75:
                    with contextlib.suppress(TimeoutError):
                        busy = wait_for(
                            lambda: [h for h in hosts if _running(h)], 1.0, "a busy daemon", 0.001
                        )
                held = _kill(rng.choice(busy or hosts), store_url)
                report.kills += 1
                report.busy_kills += held > 0
                report.held += held
            time.sleep(0.01)
    finally:
        for t in threads:
            t.join()

    def drained() -> bool:
        rows = _rows_or_none(
            store_url,
            "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded') FROM spoolq_jobs",
        )
        if rows is None or rows[0][0] < n or rows[0][0] != rows[0][1]:
            return False
        return not any(_left(h) for h in hosts)

    deadline = time.monotonic() + timeout
    while not drained():
        for h in hosts:
            code = h.daemon.proc.poll() if h.daemon.proc else None
            if code is not None:
                report.problems.append(
                    f"daemon {h.index} exited by itself ({code}), see {h.daemon.log}"
                )
                h.start()
        if time.monotonic() > deadline:
            states = _rows_or_none(
                store_url, "SELECT state, count(*) FROM spoolq_jobs GROUP BY state"
            )
            left = {h.index: _left(h)[:3] for h in hosts}
            report.problems.append(
                f"drain: not done after {timeout:.0f} s: {states} in the store, left: {left}"
            )
            return
        time.sleep(0.1)


def _running(h: _Host) -> bool:
    """Whether the host's daemon has a child process now (a job, or its exit not reaped)."""
    pid = h.daemon.proc.pid if h.daemon.proc else -1
    tasks = f"/proc/{pid}/task"
    with contextlib.suppress(OSError):
        for tid in os.listdir(tasks):
            with open(f"{tasks}/{tid}/children") as fh:
                if fh.read().strip():
                    return True
    return False


def _left(h: _Host) -> list[str]:
    """Triggers still in the host's spool or claimed/."""
    spool = [p.name for p in h.spool.iterdir() if p.name.endswith(".trigger")]
    claimed = h.state / "claimed"
    return spool + ([p.name for p in claimed.iterdir()] if claimed.exists() else [])


def _stop(report: Report, hosts: list[_Host]) -> None:
    """SIGTERM each daemon (drain) once it is ready (a daemon just started again may not
    have its handlers yet); it must exit 0. Escalate if one hangs."""
    for h in hosts:
        proc = h.daemon.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(RuntimeError):  # not ready: the exit code will say
                h.daemon.wait_ready(60)
            proc.send_signal(signal.SIGTERM)
    for h in hosts:
        proc = h.daemon.proc
        if proc is None:
            continue
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            report.problems.append(f"daemon {h.index} did not exit after SIGTERM")
            h.daemon.stop()
            continue
        if code != 0:
            report.problems.append(f"daemon {h.index} exited {code} on SIGTERM, see {h.daemon.log}")


def _verify(report: Report, root: Path, store_url: str, hosts: list[_Host]) -> None:
    # The restart reached the fleet: daemons lost the store and, without being restarted,
    # found it again (a daemon killed during the outage may have had no time to).
    for h in hosts:
        for k in range(1, h.starts + 1):
            log = (h.home / f"daemon.{k}.log").read_text(errors="replace")
            lost = log.find('"event": "store_unavailable"')
            if lost >= 0 and log.find('"event": "store_recovered"', lost) >= 0:
                report.outages_seen += 1
    if report.server_restarts and not report.outages_seen:
        report.problems.append("no daemon lost the store and recovered it: was it restarted?")
    jobs = _rows(store_url, "SELECT id, state, lane, trigger, attempts FROM spoolq_jobs")
    published = {name for h in hosts for name in h.published}
    if len(published) != report.n:
        report.problems.append(f"published {len(published)} triggers, meant {report.n}")
    per_trigger = collections.Counter(Path(j[3]).name for j in jobs)
    missing = published - set(per_trigger)
    doubled = sorted(name for name, c in per_trigger.items() if c > 1)
    if missing:
        report.problems.append(f"{len(missing)} triggers have no job, e.g. {sorted(missing)[:3]}")
    if doubled:
        report.problems.append(f"{len(doubled)} triggers have several jobs: {doubled[:3]}")
    strangers = set(per_trigger) - published
    if strangers:
        report.problems.append(f"{len(strangers)} jobs of no published trigger: {strangers}")
    not_ok = [(j[0], j[1]) for j in jobs if j[1] != "succeeded"]
    if not_ok:
        report.problems.append(f"{len(not_ok)} jobs did not succeed: {not_ok[:3]}")
    for h in hosts:
        left = _left(h)
        if left:
            report.problems.append(f"host {h.index}: {len(left)} triggers left: {left[:3]}")

    attempts = {Path(j[3]).name: int(j[4]) for j in jobs}
    report.reruns = sum(max(a - 1, 0) for a in attempts.values())
    spans_file = root / "spans.log"
    lines = (
        [ln.split() for ln in spans_file.read_text().splitlines()] if spans_file.exists() else []
    )
    bad = [ln for ln in lines if len(ln) != 6]
    if bad:
        report.problems.append(f"{len(bad)} torn stamp lines, e.g. {bad[:2]}")
    lines = [ln for ln in lines if len(ln) == 6]
    runs = collections.Counter(ln[0] for ln in lines)
    report.extra_runs = len(lines) - len(runs)
    never = sorted(published - set(runs))
    if never:
        report.problems.append(f"{len(never)} triggers' commands never ran, e.g. {never[:3]}")
    # A run without an attempt of its own would be a job running twice at once.
    over = sorted(t for t, c in runs.items() if c > attempts.get(t, 0))
    if over:
        report.problems.append(
            f"{len(over)} triggers ran more often than their job has attempts: "
            f"{[(t, runs[t], attempts.get(t)) for t in over[:3]]}"
        )
    # Each job a killed daemon held is re-queued once (an interrupted attempt); nothing
    # else may run a job again. Same host: a daemon's liveness is its pid, so the server's
    # restart cannot make a peer take a live daemon's jobs; the daemons keep their running
    # jobs through the outage and record them afterwards.
    if report.reruns > report.held:
        report.problems.append(
            f"{report.reruns} re-runs > {report.held} jobs held by the killed daemons"
        )
    # The serial lane, by the jobs' own clocks: sorted by start, each run starts after
    # every earlier one ended.
    serial = sorted((int(ln[4]), int(ln[5]), ln[0]) for ln in lines if ln[1] == "serial")
    report.serial_runs = len(serial)
    overlaps = []
    last_end, last_name = 0, ""
    for start, end, name in serial:
        if start < last_end:
            overlaps.append((last_name, name, (last_end - start) / 1e6))
        if end > last_end:
            last_end, last_name = end, name
    if overlaps:
        report.problems.append(
            f"the serial lane ran two jobs at once {len(overlaps)} times, e.g. "
            + ", ".join(f"{a} and {b} for {ms:.1f} ms" for a, b, ms in overlaps[:3])
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.fleet_chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("-n", type=int, default=1500, help="triggers to publish (default 1500)")
    ap.add_argument("-m", "--kills", type=int, default=20, help="SIGKILLs (default 20)")
    ap.add_argument("-d", "--daemons", type=int, default=3, help="daemons (default 3)")
    ap.add_argument("--rate", type=float, default=40.0, help="triggers a second (default 40)")
    ap.add_argument("--no-server-restart", action="store_true")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--url", default=os.environ.get("SPOOLQ_BENCH_POSTGRES", DEFAULT_URL))
    ap.add_argument("--timeout", type=float, default=300.0, help="for the drain (default 300 s)")
    args = ap.parse_args(argv)
    # SIGTERM (e.g. from timeout(1)) unwinds like Ctrl-C: daemons stopped, server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.no_server_restart and (why := can_restart_server()):
        ap.error(f"{why} (or --no-server-restart)")
    report = run(
        args.n,
        args.kills,
        args.daemons,
        args.rate,
        not args.no_server_restart,
        args.seed,
        args.url,
        timeout=args.timeout,
    )
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
