"""Crash harness for a fleet: N triggers published into the spools of D daemons sharing one
PostgreSQL store while the daemons are SIGKILLed and restarted at random, stalled (SIGSTOP)
past stale_after with --hosts, and the server itself is restarted once; then proof that
nothing was lost or doubled, that every re-run is accounted for, and that lane limits held.

    uv run python -m bench.fleet_chaos              # default: N=1500, D=3, M=20, 1 server restart
    uv run python -m bench.fleet_chaos --hosts --stalls 6   # the cross-host paths (root)
    uv run python -m bench.fleet_chaos -n 240 -m 6 --hosts --stalls 2   # the CI-sized run

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

--hosts runs each daemon in a UTS namespace of its own (`unshare --uts`, root), as host0,
host1, ...: peers then judge each other by heartbeat, not by pid, with heartbeat_interval
0.3 s and stale_after 2 s. So the cross-host paths run: a killed daemon's jobs re-queued by
whichever comes first (its restart on its host, which reaps the orphans, or a peer), two
rescuers racing, and - as a server outage longer than stale_after can do - fencing. Each of
--stalls publishes a long job (6 s on its first attempt, alternately in each lane), waits
for a daemon to run it, and SIGSTOPs that daemon for 3.5 s: its peers re-queue its jobs
(an any-host job runs again elsewhere while the stalled copy still runs; in `serial` the
lane's slot goes to another job), and at SIGCONT it finds itself fenced and stops its copy.

Lanes: `serial`, concurrency 1 for the whole fleet (a job runs where it was claimed; every
spool gets its share), and `shared`, concurrency 2, any_host (any daemon runs any state
directory's jobs). A job sleeps 5-30 ms and appends "trigger lane job attempt start_ns
end_ns how" to one file in a single O_APPEND write (CLOCK_REALTIME, one machine). SIGTERM
ends it early, its line written all the same ("term"), so every run of a command leaves its
line with its true end: an orphan reaped by the restarted daemon, a fenced daemon's copy.

Each kill and each stall freezes the daemon first (SIGSTOP), waits until the server has
answered everything it sent, and reads which running jobs (id, attempt) the store says it
owns: each of them, and no other, must be re-queued once (an interrupted attempt).

Checks, printed at the end (exit 1 if any fails): every trigger has exactly one job, and
it succeeded; nothing is left in a spool or in a claimed/; every trigger's command ran,
never more often than its job has attempts; and those of ``bench.fleet_checks``: each
(job, attempt) ran at most once; every interrupted attempt explained (a kill, a stall, a
fencing, a claim whose commit was lost) and every held job interrupted once; on the runs
cut at their re-queue, `serial` never ran 2 jobs at once, `shared` never 3, no job twice;
a fenced daemon's copy stopped at its fencing, within a heartbeat of its SIGCONT. No
daemon exited unless killed, and each stopped cleanly on SIGTERM at the end.
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

from bench.common import Daemon, trigger_text, verdict_lines, wait_for, write_file
from bench.fleet_checks import Stall, Verdict, read_events, verify_runs
from bench.pg import DEFAULT_URL, schema

LANES = {"serial": 1, "shared": 2}
# With a hostname per daemon, peers judge each other by heartbeat (test_several_hosts's FAST):
HEARTBEAT_S, STALE_S = 0.3, 2.0
# A stall outlasts stale_after and a peer's heartbeat or two, so that a peer fences the
# stalled daemon; its long job (LONG_MS on its first attempt) outlasts the stall.
STALL_S = STALE_S + 1.5
LONG_MS = int((STALL_S + 2.5) * 1000)
SERIAL_SHARE = 3  # one trigger in three of each spool goes to `serial`

# The job: start, sleep argv[4] ms ("A:B": A ms on attempt 1, B ms on later ones), end; one
# line per run, "how" saying whether it slept its time ("done") or was stopped by SIGTERM
# ("term": the line's end is when it was told). So every run leaves its line, with its true
# end: an orphan a peer reaps (SIGTERM, then SIGKILL after kill_grace), the copy of a fenced
# daemon it stops.
SPAN_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t termed;
static void on_term(int sig) { (void)sig; termed = 1; }

static long long now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;  /* no SA_RESTART: nanosleep returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    long long start = now();
    if (argc < 5) return 2;
    const char *job = getenv("SPOOLQ_JOB_ID"), *attempt = getenv("SPOOLQ_ATTEMPT");
    long ms = atol(argv[4]);
    const char *later = strchr(argv[4], ':');
    if (later && attempt && atol(attempt) > 1) ms = atol(later + 1);
    struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
    while (!termed && nanosleep(&d, &d) != 0) {}
    long long end = now();
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s %s %s %s %lld %lld %s\n", argv[2], argv[3],
                     job ? job : "-", attempt ? attempt : "-", start, end,
                     termed ? "term" : "done");
    if (n <= 0 || n >= (int)sizeof buf) return 1;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    if (write(fd, buf, (size_t)n) != n) return 1;
    return close(fd) != 0;
}
"""

SPAN_PY = (
    "import os, signal, sys, time\n"
    "class Term(Exception): pass\n"
    "def on_term(*_): raise Term\n"
    "signal.signal(signal.SIGTERM, on_term)\n"
    "how = 'done'\n"
    "try:\n"
    "    start = time.time_ns()\n"
    "    env = os.environ\n"
    "    ms, _, later = sys.argv[4].partition(':')\n"
    "    if later and int(env.get('SPOOLQ_ATTEMPT', '1')) > 1: ms = later\n"
    "    time.sleep(int(ms) / 1000)\n"
    "except Term:\n"
    "    how = 'term'\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "end = time.time_ns()\n"
    "line = '%s %s %s %s %d %d %s\\n' % (sys.argv[2], sys.argv[3],\n"
    "    env.get('SPOOLQ_JOB_ID', '-'), env.get('SPOOLQ_ATTEMPT', '-'), start, end, how)\n"
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
    kill_held: set[tuple[str, int]] = field(default_factory=set)  # (job, attempt)
    server_restarts: int = 0
    outage_s: float = 0.0  # from the restart command to the server accepting connections
    reruns: int = 0  # attempts beyond the first, from the store
    extra_runs: int = 0  # stamp lines beyond one per trigger
    serial_runs: int = 0
    shared_runs: int = 0
    hosts: bool = False  # each daemon on a hostname of its own
    stalls: list[Stall] = field(default_factory=list)
    verdict: Verdict = field(default_factory=Verdict)
    outages_seen: int = 0  # daemon lives that logged store_unavailable, and recovered
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def stall_held(self) -> int:
        return sum(len(s.held) for s in self.stalls if s.exact)

    def summary(self) -> str:
        v = self.verdict
        woke = [s.wake_to_fence_s for s in self.stalls if s.wake_to_fence_s is not None]
        wake = f"{min(woke):.2f}-{max(woke):.2f} s" if woke else "-"
        lines = [
            f"triggers published : {self.n} into {self.daemons} spools",
            f"SIGKILLs           : {self.kills} ({self.busy_kills} of a daemon running jobs)",
            f"jobs held by them  : {self.held}",
            f"server restarts    : {self.server_restarts} (down {self.outage_s:.1f} s;"
            f" {self.outages_seen} daemons rode through it)",
            f"hostnames          : {'one per daemon' if self.hosts else 'one for all'}",
            f"stalls (SIGSTOP)   : {len(self.stalls)}, {sum(s.fenced for s in self.stalls)}"
            f" fenced, woke to fence in {wake}; {sum(s.exact for s in self.stalls)} frozen"
            f" outside a transaction, holding {self.stall_held} jobs",
            f"fencings, dropped  : {v.fences} fenced events, {v.dropped} outcomes dropped",
            f"re-runs (store)    : {self.reruns} = {v.kill_held} held at kills"
            f" + {v.stall_held} at those stalls + {v.outage_held} of daemons fenced"
            f" otherwise + {v.not_started} claims not started",
            f"extra runs (stamps): {self.extra_runs}; {v.tails} ran past their re-queue,"
            f" the longest {v.max_tail_after_wake_s:.2f} s after its daemon woke",
            f"lane runs          : serial {self.serial_runs}, shared {self.shared_runs},"
            " checked for overlap",
            f"wall time          : {self.wall_s:.1f} s",
        ]
        return "\n".join([*lines, *verdict_lines(self.problems)])


def _restart_exited(hosts: list[_Host], report: Report) -> None:
    """A daemon that exited without being killed is a problem; start it again all the same."""
    for h in hosts:
        code = h.daemon.proc.poll() if h.daemon.proc else None
        if code is not None:
            report.problems.append(
                f"daemon {h.index} exited by itself ({code}), see {h.daemon.log}"
            )
            h.start()


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


def can_use_hostnames() -> str | None:
    """Why daemons cannot get a hostname each here, or None."""
    if os.geteuid() != 0:
        return "a hostname per daemon (unshare --uts) needs root"
    if shutil.which("unshare") is None:
        return "a hostname per daemon needs unshare (util-linux)"
    return None


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

    def __init__(
        self, root: Path, index: int, store_url: str, tag: str, hosts: bool = False
    ) -> None:
        self.index = index
        self.hostname = f"host{index}" if hosts else None
        self.home = root / f"host{index}"
        self.spool = self.home / "spool"
        self.spool.mkdir(parents=True)
        self.app = f"spoolq_fc_{tag}_{index}"  # names its connections in pg_stat_activity
        config = self.home / "spoolq.toml"
        config.write_text(
            f'store = "{store_url}&application_name={self.app}"\n'
            + (
                f'heartbeat_interval = "{HEARTBEAT_S}s"\nstale_after = "{STALE_S}s"\n'
                if hosts
                else 'heartbeat_interval = "0.5s"\n'
            )
            + f'[[spool]]\npath = "{self.spool}"\nrescan_interval = "2s"\nsettle = "0.2s"\n'
            # Orphans of a killed daemon finish by themselves in ms: let them.
            '[defaults]\nkill_grace = "30s"\n'
            "[lanes.serial]\nconcurrency = 1\n"
            "[lanes.shared]\nconcurrency = 2\nany_host = true\n"
        )
        self.daemon = Daemon(self.home, self.spool, env={"SPOOLQ_CONFIG": str(config)})
        if self.hostname:  # a UTS namespace of its own (pid and all else shared), as
            # tests/acceptance/test_several_hosts.py does; unshare and sh exec: same pid
            prefix = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"']
            self.daemon.args = [*prefix, self.hostname, *self.daemon.args]
        self.starts = 0
        self.published: list[str] = []

    def start(self) -> None:
        self.starts += 1
        self.daemon.log = self.home / f"daemon.{self.starts}.log"
        self.daemon.start()

    @property
    def state(self) -> Path:
        return self.daemon.state


def _freeze(host: _Host, store_url: str) -> tuple[str, set[tuple[str, int]], bool]:
    """SIGSTOP the host's daemon; once the server has answered everything it sent, the
    store says exactly which running jobs (id, attempt) it owns. Also its id in the store,
    and whether it was frozen outside any transaction (else one may commit once it wakes)."""
    pid = host.daemon.pid
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    # Busy: a statement the server still works on. A backend waiting for the frozen
    # client (ClientRead: a pipeline sent before its Sync) changes nothing until it wakes.
    busy = (
        "SELECT count(*) FILTER (WHERE state = 'active' AND wait_event IS DISTINCT FROM"
        " 'ClientRead'), count(*) FILTER (WHERE state <> 'idle')"
        " FROM pg_stat_activity WHERE application_name = %s"
    )
    while (rows := _rows_or_none(store_url, busy, host.app)) is None or rows[0][0]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    quiet = rows is not None and not rows[0][1]
    held = _rows(
        store_url,
        "SELECT d.id, j.id, j.attempts FROM spoolq_daemons d"
        " LEFT JOIN spoolq_jobs j ON j.owner = d.id AND j.state = 'running' WHERE d.pid = %s",
        pid,
    )
    daemon = str(held[0][0]) if held else "?"
    return daemon, {(str(r[1]), int(r[2])) for r in held if r[1] is not None}, quiet


def _kill(host: _Host, store_url: str) -> set[tuple[str, int]]:
    """SIGKILL the host's daemon and start it again (same spool and state directory).
    Return the running jobs (id, attempt) it held: frozen first (``_freeze``); each of
    them, and no other, is re-queued as interrupted."""
    d = host.daemon
    assert d.proc is not None
    try:
        _, held, _ = _freeze(host, store_url)  # (SIGKILL: what it had not committed is not)
    finally:
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait()
    host.start()
    return held


def _stall(
    report: Report, hosts: list[_Host], store_url: str, k: int, argv: list[str]
) -> Stall | None:
    """Publish a long job (LONG_MS on its first attempt) into a spool, wait until a daemon
    runs it, and SIGSTOP that daemon (``_freeze``). Its SIGCONT is due STALL_S later."""
    origin = hosts[k % len(hosts)]
    lane = ("serial", "shared")[k % 2]
    name = f"h{origin.index}long{k}.trigger"
    part = origin.spool / f".{name}.part"
    write_file(part, trigger_text([*argv, name, lane, f"{LONG_MS}:10"], lane))
    os.rename(part, origin.spool / name)
    origin.published.append(name)
    report.n += 1
    find = (
        "SELECT d.pid FROM spoolq_jobs j JOIN spoolq_daemons d ON d.id = j.owner"
        " WHERE j.state = 'running' AND j.trigger = %s AND j.attempts = 1"
    )
    trigger = str(origin.spool / name)
    try:
        pid = wait_for(
            lambda: (rows := _rows_or_none(store_url, find, trigger)) and rows[0][0],
            20.0,
            "the long job to start",
            0.01,
        )
    except TimeoutError:
        return None
    target = next((h for h in hosts if h.daemon.pid == pid), None)
    if target is None:
        return None
    time.sleep(0.05)  # its process started
    stop_ns = time.time_ns()
    daemon, held, quiet = _freeze(target, store_url)
    return Stall(target.index, daemon, stop_ns, held=held, exact=quiet)


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
    hosts: bool = False,
    stalls: int = 0,
) -> Report:
    """Publish ``n`` triggers at about ``rate`` a second (round robin over the spools,
    one producer thread each) while ``kills`` SIGKILLs fall at random moments of the
    publishing and, once a third is published, the server restarts. ``hosts``: each daemon
    on a hostname of its own (root, unshare); ``stalls`` (with ``hosts``): SIGSTOPs of a
    daemon running a long job, each for STALL_S, spread over the publishing."""
    if stalls and not hosts:
        raise ValueError("stalls need a hostname per daemon (on one host, liveness is the pid)")
    rng = random.Random(seed)
    root = Path(workdir or tempfile.mkdtemp(prefix="spoolq-fleet-chaos-")).resolve()
    report = Report(n, daemons, hosts=hosts)
    started = time.monotonic()
    try:
        with schema(url) as store_url:
            fleet: list[_Host] = []
            try:
                _run(
                    report,
                    rng,
                    root,
                    store_url,
                    fleet,
                    kills,
                    stalls,
                    rate,
                    server_restart,
                    timeout,
                )
            finally:
                if server_restart:  # up before the daemons drain and the schema is dropped
                    ensure_server_running(url)
                _stop(report, fleet)
            _verify(report, root, store_url, fleet)
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
    stalls: int,
    rate: float,
    server_restart: bool,
    timeout: float,
) -> None:
    n = report.n
    span = build_span(root)
    spans = root / "spans.log"
    tag = os.urandom(3).hex()
    for i in range(report.daemons):
        hosts.append(_Host(root, i, store_url, tag, report.hosts))
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
    # One stall in each of as many equal parts of the publishing, early in its part.
    part = publish_s / max(stalls, 1)
    stall_at = [t0 + k * part + rng.uniform(0.2, part / 3) for k in range(stalls)]
    stalled: Stall | None = None
    cont_at = restart_done = -10.0
    restarted = not server_restart
    for t in threads:
        t.start()
    try:
        while kill_at or stall_at or stalled or not restarted or any(t.is_alive() for t in threads):
            if stalled and time.monotonic() >= cont_at:
                stalled.cont_ns = time.time_ns()
                os.kill(hosts[stalled.host].daemon.pid, signal.SIGCONT)
                report.stalls.append(stalled)
                stalled, cont_at = None, time.monotonic() + 1.0  # (the next waits a second)
            ready = max(stall_at[0] if stall_at else 0, cont_at, restart_done + 4.0)
            if stall_at and not stalled and time.monotonic() >= ready:
                stall_at.pop(0)
                k = stalls - len(stall_at) - 1
                stalled = _stall(report, hosts, store_url, k, [*span, str(spans)])
                if stalled is None:
                    report.problems.append("a stall found no daemon running its long job")
                cont_at = time.monotonic() + STALL_S
            _restart_exited(hosts, report)
            if not restarted and count[0] >= n // 3 and not stalled and time.monotonic() >= cont_at:
                # While jobs run (a second at most to find one running).
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: any(map(_running, hosts)), 1.0, "a job running", 0.002)
                restarted = True
                report.server_restarts += 1
                report.outage_s = restart_server(store_url)
                restart_done = time.monotonic()
            if kill_at and time.monotonic() >= kill_at[0]:
                kill_at.pop(0)
                # Mostly a daemon running jobs (the kills that cost re-runs: wait a second
                # at most for one), sometimes any.
                busy: list[_Host] = []
                awake = [h for h in hosts if not stalled or h.index != stalled.host]
                if rng.random() < 0.75:
                    with contextlib.suppress(TimeoutError):
                        busy = wait_for(
                            lambda: [h for h in awake if _running(h)],  # noqa: B023
                            1.0,
                            "a busy daemon",
                            0.001,
                        )
                held = _kill(rng.choice([h for h in busy if h in awake] or awake), store_url)
                report.kills += 1
                report.busy_kills += bool(held)
                report.held += len(held)
                report.kill_held |= held
            time.sleep(0.01)
    finally:
        for t in threads:
            t.join()

    def drained() -> bool:
        rows = _rows_or_none(
            store_url,
            "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded') FROM spoolq_jobs",
        )
        if rows is None or rows[0][0] < report.n or rows[0][0] != rows[0][1]:
            return False
        return not any(_left(h) for h in hosts)

    deadline = time.monotonic() + timeout
    while not drained():
        _restart_exited(hosts, report)
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
            os.kill(proc.pid, signal.SIGCONT)  # (an error that left it stalled)
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
    bad = [ln for ln in lines if len(ln) != 7]
    if bad:
        report.problems.append(f"{len(bad)} torn stamp lines, e.g. {bad[:2]}")
    lines = [ln for ln in lines if len(ln) == 7]
    runs = collections.Counter(ln[0] for ln in lines)
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
    # Each attempt at most once; re-runs each explained by a kill, a stall or a fencing;
    # lane limits and one run of a job at a time, on the runs as the store counts them
    # (bench.fleet_checks says why, and what a stalled daemon's copy may do).
    logs = [h.home / f"daemon.{k}.log" for h in hosts for k in range(1, h.starts + 1)]
    report.verdict = verify_runs(
        lines,
        jobs,
        _rows(
            store_url,
            "SELECT job_id, n, started_at, finished_at, reason, owner, exit_code"
            " FROM spoolq_attempts",
        ),
        report.kill_held,
        report.stalls,
        read_events(logs),
        LANES,
        HEARTBEAT_S if report.hosts else 0.5,
    )
    report.problems += report.verdict.problems
    report.extra_runs = report.verdict.extra_runs
    report.serial_runs = sum(ln[1] == "serial" for ln in lines)
    report.shared_runs = sum(ln[1] == "shared" for ln in lines)
    if not report.hosts and report.verdict.fences:
        # One host: a daemon's liveness is its pid, so a server restart cannot make a peer
        # take a live daemon's jobs; the daemons keep them running through the outage.
        report.problems.append(f"{report.verdict.fences} daemons fenced on one host")
    if report.reruns != report.verdict.interrupted:
        report.problems.append(
            f"{report.reruns} re-runs, {report.verdict.interrupted} interrupted attempts"
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
    ap.add_argument(
        "--hosts", action="store_true", help="a hostname per daemon (root, unshare --uts)"
    )
    ap.add_argument(
        "--stalls", type=int, default=0, help="SIGSTOPs past stale_after (with --hosts)"
    )
    ap.add_argument("--seed", type=int)
    ap.add_argument("--url", default=os.environ.get("SPOOLQ_BENCH_POSTGRES", DEFAULT_URL))
    ap.add_argument("--timeout", type=float, default=300.0, help="for the drain (default 300 s)")
    args = ap.parse_args(argv)
    # SIGTERM (e.g. from timeout(1)) unwinds like Ctrl-C: daemons stopped, server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.no_server_restart and (why := can_restart_server()):
        ap.error(f"{why} (or --no-server-restart)")
    if args.stalls and not args.hosts:
        ap.error("--stalls needs --hosts (on one host, a stalled daemon is alive by its pid)")
    if args.hosts and (why := can_use_hostnames()):
        ap.error(why)
    report = run(
        args.n,
        args.kills,
        args.daemons,
        args.rate,
        not args.no_server_restart,
        args.seed,
        args.url,
        timeout=args.timeout,
        hosts=args.hosts,
        stalls=args.stalls,
    )
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
