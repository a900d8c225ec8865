"""Membership of the daemons that share a store: who is alive, who is fenced, and what
becomes of a dead daemon's running jobs.

Owns registering this daemon, the heartbeat and its fencing (a daemon whose registration
a peer removed stops its copies of the jobs the peer re-queued), the wake-ups of the peers
that may fill the slots our jobs free, and the rescue of a dead daemon's jobs: another
host's are re-queued at once (their processes died with it or are out of reach), this
host's only once the supervisor has seen every process of the old
attempt gone - so that a job never runs twice at once. A re-queued job keeps its home (its
state directory): any daemon serving that directory, on any host, runs it next. Leaves the
killing to the supervisor and the re-queue rules to ``lifecycle`` through the store.
"""

from __future__ import annotations

import collections
import os
import socket
from collections.abc import Callable

from spoolq.claims import new_job_id
from spoolq.events import EventLog
from spoolq.jobs import DaemonInfo, HomeInfo, Job
from spoolq.procs import daemon_alive, pid_start_time
from spoolq.statedir import StateDir
from spoolq.store.base import Store
from spoolq.supervisor import Supervisor


class Fleet:
    def __init__(
        self,
        store: Store,
        supervisor: Supervisor,
        log: EventLog,
        *,
        stale_after: float,
        clock: Callable[[], float],
        state: StateDir,
    ) -> None:
        self.state = state
        self.store = store
        self.supervisor = supervisor
        self.log = log
        self.host = socket.gethostname()
        self.id = f"{new_job_id()}@{self.host}"  # the host part: attempts record it
        self.stale_after = stale_after
        self.clock = clock
        # Another live daemon shares the store: wake the others when slots free. Set by
        # each rescue, and by any notification (a daemon that joins sends one).
        self.peers = False

    def register(self, now: float) -> None:
        """Join the store as a daemon serving this state directory (its home)."""
        pid, home = os.getpid(), self.state.home
        self.store.register_daemon(
            DaemonInfo(self.id, self.host, pid, now, now, pid_start_time(pid), home)
        )
        info = HomeInfo(home, str(self.state.root), self.host, self.id, now)
        adopted = self.store.adopt_home(info, self.state.legacy_home)
        if adopted:
            self.log.warn("home_adopted", home=home, old=self.state.legacy_home, jobs=adopted)
        # Tell the daemons already there that we are: until their next rescue they would
        # not wake us when their jobs free a lane's slots (``peers``).
        self.store.notify(exclude=self.id)

    def offer(self, freed: list[str], refilled: list[str], everyone: bool = False) -> None:
        """Slots freed (a lane per ended job) and not all filled again here: wake the peers
        that have a job queued in those lanes. Called after the commit, once per batch.
        ``everyone``: wake every peer, filled slots or not - when a job claimed in another
        state directory (an any-host lane) ended here (the daemon that claimed it keeps a
        copy of its trigger, archived once it hears that the job ended), and while this
        daemon stops (its ends take no lane lock, so they do not wait for a peer's claim
        to commit: a peer with work may not be seen to have it yet)."""
        if not self.peers:
            return
        if everyone:
            self.store.notify(exclude=self.id)
            return
        left = collections.Counter(freed)
        left.subtract(refilled)
        if +left:
            self.store.notify(exclude=self.id, lanes=sorted(+left))

    def unregister(self) -> None:
        self.store.unregister_daemon(self.id)

    def beat(self, now: float) -> None:
        if self.store.heartbeat(self.id, now):
            return
        # Fenced: another daemon saw no heartbeat from us for stale_after (a long stall)
        # and re-queued our running jobs. Our copies must not run beside their re-runs.
        self.log.error(
            "fenced",
            daemon=self.id,
            running=len(self.supervisor.running),
            action="stopping running jobs (already re-queued by a peer), registering again",
        )
        self.supervisor.stop_all()
        self.register(now)

    def rescue(self, now: float) -> list[Job]:
        """Forget dead daemons and free their running jobs; return the jobs re-queued (or
        ended cancelled) now. Jobs whose processes still live here wait for the
        supervisor's reaping, then come back through ``settle``."""
        live = {self.id}
        for d in self.store.daemons():
            if d.id == self.id:
                continue
            if daemon_alive(d, now, self.stale_after):
                live.add(d.id)
            else:
                self.store.unregister_daemon(d.id)
                self.log.warn("daemon_gone", daemon=d.id, host=d.host, pid=d.pid)
        self.peers = len(live) > 1
        free = []
        for job in self.store.running_jobs():
            if job.owner == self.id and self.supervisor.unknown(job.id):
                # Claimed, but never started here: the claim's commit went through while
                # the daemon saw it fail (the connection dropped as it committed).
                self.log.warn("claim_not_started", job=job.id, action="queued again")
                free.append(job)
                continue
            if job.owner in live or job.id in self.supervisor.orphans:
                continue
            # Another host's processes are out of reach (and died with it).
            here = (job.owner or "").rpartition("@")[2] == self.host
            if here and self.supervisor.reap(job):
                continue
            free.append(job)
        requeued = self.store.requeue_interrupted(free, now) if free else []
        # Slots for the peers' queued work; and a job ended cancelled here must be archived
        # by every daemon holding a copy of its trigger (an any-host job's claimer too).
        ended = any(j.state.finished for j in requeued)
        self.offer([j.lane for j in requeued], [], everyone=ended)
        return requeued

    def settle(self, now: float) -> list[Job]:
        """Re-queue the orphaned jobs whose processes the supervisor has seen gone."""
        gone = self.supervisor.take_gone()
        if not gone:
            return []
        try:
            requeued = self.store.requeue_interrupted(gone, now)
        except BaseException:
            self.supervisor.give_back(gone)
            raise
        self.offer([j.lane for j in requeued], [])
        return requeued
