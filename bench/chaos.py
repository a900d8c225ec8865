"""Crash harness: publish N triggers while the daemon is SIGKILLed and restarted M times
(and, with fault injection, dies by itself at the narrow points between a rename and a
commit), then prove nothing was lost or doubled.

    uv run python -m bench.chaos                 # default: N=5000, M=30
    uv run python -m bench.chaos -n 300 -m 5     # the CI-sized run (also in the tests)

Checks, printed at the end (exit 1 if any fails):
  every trigger has exactly one job; every job reached a terminal state; nothing is left in
  the spool or in claimed/; every job's side effect happened at least once; re-runs <=
  crashes; PRAGMA integrity_check is ok.
"""

from __future__ import annotations

import argparse
import collections
import json
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

from bench.common import verdict_lines
from spoolq.jobs import JobState
from spoolq.store.sqlite import SqliteStore

SPOOLQ = shutil.which("spoolq", path=str(Path(sys.executable).parent)) or "spoolq"
DEFAULT_FAULTS = "claimed=0.002,enqueued=0.002,started=0.002,finished=0.002"


@dataclass
class Report:
    n: int
    kills: int = 0
    fault_exits: int = 0
    restarts: int = 0
    reruns: int = 0
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [
            f"triggers published : {self.n}",
            f"SIGKILLs           : {self.kills}",
            f"fault-point exits  : {self.fault_exits}",
            f"daemon starts      : {self.restarts + 1}",
            f"re-runs observed   : {self.reruns} (bound: {self.kills + self.fault_exits})",
            f"wall time          : {self.wall_s:.1f} s",
        ]
        return "\n".join([*lines, *verdict_lines(self.problems)])


class _Daemon:
    def __init__(self, root: Path, spool: Path, faults: str) -> None:
        self.root, self.spool, self.faults = root, spool, faults
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {**os.environ, "SPOOLQ_FAULTS": self.faults}
        log = (self.root / "daemon.log").open("ab")
        self.proc = subprocess.Popen(
            [SPOOLQ, "-c", str(self.root / "spoolq.toml"), "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        self.starts += 1


def run(
    n: int = 5000,
    kills: int = 30,
    producers: int = 4,
    faults: str = DEFAULT_FAULTS,
    seed: int | None = None,
    workdir: Path | None = None,
    max_kill_interval: float = 1.0,
    timeout: float = 600.0,
) -> Report:
    rng = random.Random(seed)
    root = Path(workdir or tempfile.mkdtemp(prefix="spoolq-chaos-"))
    spool = root / "spool"
    spool.mkdir(parents=True)
    effects = root / "effects.log"
    # rescan often: a crash can drop triggers that were only in the dead daemon's memory
    (root / "spoolq.toml").write_text(
        f'[[spool]]\npath = "{spool}"\nrescan_interval = "2s"\nsettle = "0.2s"\n'
        '[defaults]\nkill_grace = "2s"\n'
    )
    report = Report(n)
    started = time.monotonic()
    daemon = _Daemon(root, spool, faults)
    daemon.start()
    published = threading.Event()

    def produce(worker: int) -> None:
        prng = random.Random(rng.random())
        for i in range(worker, n, producers):
            token = f"t{i:07d}"
            doc = {"argv": ["/bin/sh", "-c", f"echo {token} >> {effects}"]}
            tmp = spool / f".{token}.part"
            tmp.write_text(json.dumps(doc))
            os.chmod(tmp, 0o644)
            os.rename(tmp, spool / f"{token}.trigger")
            if prng.random() < 0.05:
                time.sleep(prng.uniform(0, 0.02))

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(producers)]
    for t in threads:
        t.start()

    kills_left = kills
    next_kill = time.monotonic() + rng.uniform(0.05, max_kill_interval)
    deadline = time.monotonic() + timeout
    store_path = root / "spool" / ".spoolq" / "spoolq.db"
    while True:
        if not published.is_set() and not any(t.is_alive() for t in threads):
            published.set()
        assert daemon.proc is not None
        code = daemon.proc.poll()
        if code is not None:
            if code == 86:
                report.fault_exits += 1
            elif code != -signal.SIGKILL:
                report.problems.append(f"daemon exited with {code} (see {root}/daemon.log)")
                break
            daemon.start()
            report.restarts += 1
            continue
        now = time.monotonic()
        if kills_left and now >= next_kill:
            daemon.proc.kill()
            daemon.proc.wait()
            report.kills += 1
            kills_left -= 1
            next_kill = now + rng.uniform(0.05, max_kill_interval)
            daemon.start()
            report.restarts += 1
            continue
        if published.is_set() and not kills_left and _all_finished(store_path, n):
            break
        if now > deadline:
            report.problems.append(f"not finished after {timeout}s")
            break
        time.sleep(0.05)

    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        daemon.proc.wait(60)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        report.problems.append("daemon did not exit after SIGTERM")
    for t in threads:
        t.join()
    report.wall_s = time.monotonic() - started
    _verify(report, root, spool, effects, store_path)
    if report.ok and workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        report.problems.append(f"work directory kept: {root}") if not report.ok else None
    return report


def _all_finished(store_path: Path, n: int) -> bool:
    if not store_path.exists():
        return False
    store = SqliteStore(store_path)
    try:
        counts = store.state_counts()
    finally:
        store.close()
    return counts["succeeded"] + counts["failed"] + counts["rejected"] >= n and not (
        counts["queued"] or counts["running"]
    )


def _verify(report: Report, root: Path, spool: Path, effects: Path, store_path: Path) -> None:
    store = SqliteStore(store_path)
    try:
        jobs = store.list_jobs(limit=10 * report.n + 100)
        integrity = store.integrity_check()
    finally:
        store.close()
    per_trigger = collections.Counter(Path(j.trigger).name for j in jobs)
    expected = {f"t{i:07d}.trigger" for i in range(report.n)}
    missing = expected - set(per_trigger)
    doubled = {name: c for name, c in per_trigger.items() if c > 1}
    if missing:
        report.problems.append(f"{len(missing)} triggers have no job, e.g. {sorted(missing)[:3]}")
    if doubled:
        report.problems.append(f"{len(doubled)} triggers have several jobs: {list(doubled)[:3]}")
    not_ok = [j for j in jobs if j.state is not JobState.SUCCEEDED]
    if not_ok:
        sample = [(j.id, j.state.value, j.reason) for j in not_ok[:3]]
        report.problems.append(f"{len(not_ok)} jobs did not succeed: {sample}")
    left = [p.name for p in spool.iterdir() if p.name.endswith(".trigger")]
    if left:
        report.problems.append(f"{len(left)} triggers left in the spool: {left[:3]}")
    claimed = list((spool / ".spoolq" / "claimed").iterdir())
    if claimed:
        report.problems.append(f"{len(claimed)} files left in claimed/: {claimed[:3]}")
    ran = collections.Counter(effects.read_text().split()) if effects.exists() else {}
    never = [t for t in (f"t{i:07d}" for i in range(report.n)) if t not in ran]
    if never:
        report.problems.append(f"{len(never)} side effects never happened, e.g. {never[:3]}")
    report.reruns = sum(ran.values()) - len(ran)
    if report.reruns > report.kills + report.fault_exits:
        report.problems.append(
            f"{report.reruns} re-runs > {report.kills + report.fault_exits} crashes"
        )
    if integrity != "ok":
        report.problems.append(f"PRAGMA integrity_check: {integrity}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="triggers to publish")
    ap.add_argument("-m", "--kills", type=int, default=30, help="SIGKILLs of the daemon")
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--faults", default=DEFAULT_FAULTS, help="SPOOLQ_FAULTS for the daemon")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()
    report = run(args.n, args.kills, args.producers, args.faults, args.seed)
    print(report.summary())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
