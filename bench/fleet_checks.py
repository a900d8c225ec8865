"""The fleet crash harness's judgement of a run, from the jobs' own stamp lines, the store's
attempts and the daemons' event logs (``bench.fleet_chaos`` collects them).

What the store promises, and what is checked here:

* Each attempt runs at most once: a (job, attempt) has at most one stamp line, and every
  line names an attempt the store recorded; each job's last attempt succeeded and ran.
* Re-runs are exactly accounted for: every attempt the store closed as ``interrupted`` is
  one a killed daemon held (frozen and counted before the SIGKILL), one a stalled daemon
  held (counted while it was stopped) if a peer fenced it, one held by a daemon fenced for
  another reason (cut off from the store by the server's restart for longer than
  ``stale_after``: the daemon says ``fenced``), or one whose claim never started
  (``claim_not_started``). And each job a killed daemon held, or a fenced stalled daemon
  held, has exactly that attempt interrupted: one re-run each, no more, no fewer.
* Lane limits and "a job never runs twice at once", with the one overlap the design
  accepts. The store counts an attempt as running from its claim until its outcome or
  until a peer re-queues it. A peer re-queues the jobs of a daemon silent for
  ``stale_after`` (stalled, or cut off from the store) while that daemon's processes may
  still run: nothing can stop them until the daemon can act again. Guarantee 6 says that
  the daemon then finds itself fenced at its next heartbeat and stops its copies. So each
  run is cut at its attempt's re-queue (the attempt's ``finished_at``): on those cut
  intervals the lane limits hold (`serial` 1, `shared` 2) and no two runs of one job
  overlap. What is cut off, a run's *tail* past its re-queue, is allowed only to a copy of
  a daemon that was fenced, and must end by that daemon's ``fenced`` event plus
  ``STOP_SLACK_S`` (it stops its copies there); for a SIGSTOP stall, the ``fenced`` event
  must come within one ``heartbeat_interval`` (plus the same slack) of the SIGCONT. A
  killed daemon's orphans get no tail at all: the daemon restarted on their host reaps them
  before their jobs are re-queued.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# A fenced daemon SIGTERMs its copies as it logs ``fenced`` (they write their line and
# exit at once); on a 2-core machine under load, allow this much for that to show.
STOP_SLACK_S = 0.5


@dataclass
class Stall:
    """One SIGSTOP of a daemon: when, for how long, and the attempts it held."""

    host: int
    daemon: str  # its id in the store
    stop_ns: int
    cont_ns: int = 0
    held: set[tuple[str, int]] = field(default_factory=set)
    # Frozen outside any transaction: else one it had begun (an outcome, a claim) commits
    # once it wakes, before it finds itself fenced, and ``held`` is not what was re-queued.
    exact: bool = True
    fenced: bool = False  # filled in by the checks
    wake_to_fence_s: float | None = None


@dataclass
class Events:
    """What the daemons said, from their event logs."""

    fenced: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    dropped: int = 0  # outcome_dropped
    not_started: set[str] = field(default_factory=set)  # jobs of claim_not_started


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def read_events(logs: list[Path]) -> Events:
    ev = Events()
    for log in logs:
        for raw in log.read_text(errors="replace").splitlines():
            try:
                e: dict[str, Any] = json.loads(raw)
            except ValueError:
                continue
            kind = e.get("event")
            if kind == "fenced":
                ev.fenced[str(e["daemon"])].append(_epoch(str(e["ts"])))
            elif kind == "outcome_dropped":
                ev.dropped += 1
            elif kind == "claim_not_started":
                ev.not_started.add(str(e["job"]))
    return ev


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    interrupted: int = 0  # attempts the store closed as interrupted (= re-runs)
    kill_held: int = 0
    stall_held: int = 0  # held by stalled daemons that were fenced
    outage_held: int = 0  # held by daemons fenced while cut off from the store
    not_started: int = 0
    tails: int = 0  # runs that went on past their re-queue
    max_tail_after_wake_s: float = 0.0  # the longest, from the SIGCONT or fencing
    extra_runs: int = 0
    dropped: int = 0
    fences: int = 0


def verify_runs(
    lines: list[list[str]],
    jobs: list[tuple[Any, ...]],
    attempts: list[tuple[Any, ...]],
    kill_held: set[tuple[str, int]],
    stalls: list[Stall],
    events: Events,
    lanes: dict[str, int],
    heartbeat_s: float,
) -> Verdict:
    """``lines``: stamp lines split (trigger lane job attempt start_ns end_ns how);
    ``jobs``: (id, state, lane, trigger, attempts); ``attempts``: (job_id, n, started_at,
    finished_at, reason, owner, exit_code)."""
    v = Verdict(dropped=events.dropped, fences=sum(map(len, events.fenced.values())))
    p = v.problems
    att = {(str(a[0]), int(a[1])): a for a in attempts}
    last = {str(j[0]): int(j[4]) for j in jobs}

    # -- each attempt at most once, every line an attempt, every job's last one ran ---------
    seen = collections.Counter((ln[2], int(ln[3])) for ln in lines)
    twice = [k for k, c in seen.items() if c > 1]
    if twice:
        p.append(f"{len(twice)} (job, attempt) ran more than once, e.g. {twice[:3]}")
    unknown = [k for k in seen if k not in att]
    if unknown:
        p.append(f"{len(unknown)} runs of no recorded attempt, e.g. {unknown[:3]}")
    for job_id, n in last.items():
        a = att.get((job_id, n))
        if a is None or a[6] != 0 or (job_id, n) not in seen:
            p.append(f"job {job_id}: its last attempt {n} did not run and succeed: {a}")
            break
    v.extra_runs = len(lines) - len({ln[2] for ln in lines})

    # -- re-runs, each one explained ----------------------------------------------------------
    interrupted = {k for k, a in att.items() if a[4] == "interrupted"}
    others = {k for k, a in att.items() if a[4] is not None and a[4] != "interrupted"}
    if others:
        p.append(f"{len(others)} attempts ended neither succeeded nor interrupted: {others}")
    v.interrupted = len(interrupted)
    v.kill_held = len(kill_held)
    missed = kill_held - interrupted
    if missed:
        p.append(f"{len(missed)} jobs a killed daemon held were not interrupted: {missed}")
    stall_held: set[tuple[str, int]] = set()
    for s in stalls:
        after = [t for t in events.fenced.get(s.daemon, []) if t * 1e9 >= s.cont_ns - 1e8]
        s.fenced = bool(after)
        if s.fenced:
            s.wake_to_fence_s = min(after) - s.cont_ns / 1e9
            if s.wake_to_fence_s > heartbeat_s + STOP_SLACK_S:
                p.append(
                    f"daemon {s.daemon} found itself fenced {s.wake_to_fence_s:.2f} s after"
                    f" its SIGCONT (more than a heartbeat_interval of {heartbeat_s} s)"
                )
            if not s.exact:
                continue  # (its re-runs are explained as any fenced daemon's, below)
            stall_held |= s.held
            lost = s.held - interrupted
            if lost:
                p.append(f"stalled daemon {s.daemon} was fenced, its jobs not re-queued: {lost}")
    v.stall_held = len(stall_held)
    for k in sorted(interrupted - kill_held - stall_held):
        owner = att[k][5]
        if k[0] in events.not_started and k not in seen:
            v.not_started += 1  # (a claim its daemon saw fail: it must not have run)
        elif any(t >= float(att[k][3]) - 0.5 for t in events.fenced.get(owner, [])):
            v.outage_held += 1  # its daemon was cut off past stale_after, then fenced
        else:
            p.append(f"attempt {k} was interrupted, and no kill, stall or fence explains it")

    # -- lane limits and one run per job at a time, on the runs the store counts -----------
    counted: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(list)
    by_job: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for ln in lines:
        key = (ln[2], int(ln[3]))
        start, end = int(ln[4]), int(ln[5])
        a = att.get(key)
        if a is None:
            continue
        cut = end
        if key in interrupted and a[3] is not None and float(a[3]) * 1e9 < end:
            requeued = float(a[3])
            cut = max(start, int(requeued * 1e9))
            v.tails += 1
            owner = str(a[5])
            fences = [t for t in events.fenced.get(owner, []) if t >= requeued - 0.5]
            if key in kill_held or not fences:
                why = "killed" if key in kill_held else "never fenced"
                p.append(
                    f"{key} ran {(end - requeued * 1e9) / 1e6:.0f} ms past its re-queue,"
                    f" and its daemon {owner} was {why}"
                )
            else:
                past = end / 1e9 - min(fences)
                wake = min(fences)
                for s in stalls:  # re-queued during a stall: measured from its SIGCONT
                    if s.daemon == owner and s.stop_ns <= requeued * 1e9 <= s.cont_ns:
                        wake = s.cont_ns / 1e9
                v.max_tail_after_wake_s = max(v.max_tail_after_wake_s, end / 1e9 - wake)
                if past > STOP_SLACK_S:
                    p.append(
                        f"{key}: the copy of fenced daemon {owner} ran {past:.2f} s past"
                        " its fencing (it should have been stopped there)"
                    )
        counted[ln[1]].append((start, cut, key[0]))
        by_job[key[0]].append((start, cut))
    for lane, limit in lanes.items():
        worst = _over_limit(counted[lane], limit)
        if worst:
            p.append(
                f"lane {lane} (concurrency {limit}) ran {worst[0]} jobs at once,"
                f" e.g. {worst[1]} (runs cut at their re-queue)"
            )
    for job_id, runs in by_job.items():
        if _over_limit([(s, e, job_id) for s, e in runs], 1):
            p.append(f"job {job_id} ran twice at once: {sorted(runs)}")
            break
    return v


def _over_limit(runs: list[tuple[int, int, str]], limit: int) -> tuple[int, list[str]] | None:
    """The most runs at once, and which, if more than ``limit``."""
    edges = sorted(
        [(s, 1, name) for s, e, name in runs if e > s]
        + [(e, -1, name) for s, e, name in runs if e > s]
    )
    now: collections.Counter[str] = collections.Counter()
    worst: tuple[int, list[str]] | None = None
    for _, step, name in edges:  # ends sort before starts at the same instant
        now[name] += step
        count = sum(now.values())
        if step > 0 and count > limit and (worst is None or count > worst[0]):
            worst = (count, sorted(+now))
    return worst
