"""``/metrics``: the queue as Prometheus sees it.

Two sources. The store, read at each scrape (``StoreCollector``): jobs queued and running,
lane limits and pauses, the oldest queued job's age, live daemons, and the totals of
finished jobs and rejected triggers, which the store keeps in the transaction that changes
a job (so they never go backwards: not on a restart, not on ``prune``, and they are the
fleet's on PostgreSQL). And, inside a daemon only, what that daemon saw
(``DaemonMetrics``): how long its jobs ran and waited, its rescans and its failed
notifications, observed from its event log. ``spoolq web`` has no daemon, so no histograms.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from ulid import ULID

from spoolq.procs import daemon_alive
from spoolq.serialize import waiting_homes
from spoolq.web.context import WebContext

DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 86400)
_ENDED = frozenset({"succeeded", "failed", "cancelled", "retry_scheduled"})


class StoreCollector(Collector):
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        def read(store: Any) -> tuple[Any, ...]:
            running = store.running_jobs()
            return (
                store.overview()[0],
                store.finished_totals(),
                store.rejected_totals(),
                store.daemons(),
                running,
                store.progress_of([j.id for j in running]) if running else {},
                store.notification_backlog(),
                waiting_homes(store, self.ctx.config, time.time()),
            )

        lanes, finished, rejected, daemons, running, progress, backlog, stuck = self.ctx.call(read)
        now = time.time()
        jobs = GaugeMetricFamily("spoolq_jobs", "Jobs queued or running", labels=["lane", "state"])
        conc = GaugeMetricFamily("spoolq_lane_concurrency", "Lane limit", labels=["lane"])
        paused = GaugeMetricFamily("spoolq_lane_paused", "1 if the lane is paused", labels=["lane"])
        oldest = GaugeMetricFamily(
            "spoolq_lane_oldest_queued_seconds",
            "Age of the lane's oldest queued job (0 when none waits)",
            labels=["lane"],
        )
        for lane in lanes:
            jobs.add_metric([lane.name, "queued"], lane.queued)
            jobs.add_metric([lane.name, "running"], lane.running)
            conc.add_metric([lane.name], lane.concurrency)
            paused.add_metric([lane.name], 1 if lane.paused else 0)
            age = now - lane.oldest_queued_at if lane.oldest_queued_at else 0.0
            oldest.add_metric([lane.name], max(0.0, age))
        yield from (jobs, conc, paused, oldest)

        done = CounterMetricFamily(
            "spoolq_jobs_finished",
            "Jobs that ended, by outcome (succeeded, failed, cancelled, rejected)",
            labels=["lane", "outcome"],
        )
        for lane_name, outcome, n in finished:
            done.add_metric([lane_name, outcome], n)
        yield done

        rej = CounterMetricFamily(
            "spoolq_triggers_rejected", "Triggers rejected, by kind of reason", labels=["reason"]
        )
        for reason, n in rejected.items():
            rej.add_metric([reason], n)
        yield rej

        alive = Counter(
            d.host for d in daemons if daemon_alive(d, now, self.ctx.config.stale_after)
        )
        hosts = GaugeMetricFamily("spoolq_daemons", "Live daemons on the store", labels=["host"])
        for host in sorted({d.host for d in daemons}):
            hosts.add_metric([host], alive[host])
        yield hosts

        waiting = GaugeMetricFamily(
            "spoolq_jobs_waiting_for_home",
            "Queued jobs whose home (state directory) no live daemon serves",
            labels=["home"],
        )
        for home in stuck:
            waiting.add_metric([home["home"]], home["queued"])
        yield waiting

        ratio = GaugeMetricFamily(
            "spoolq_job_progress_ratio",
            "Done/total of a running job that reports its progress with a total",
            labels=["lane", "job"],
        )
        for job in running:
            reading = progress.get(job.id)
            if reading is not None and reading.ratio is not None:
                ratio.add_metric([job.lane, job.id], reading.ratio)
        yield ratio

        pending = GaugeMetricFamily(
            "spoolq_notifications_pending",
            "Notifications recorded and not yet delivered, per [[notify]] target",
            labels=["target"],
        )
        failing = GaugeMetricFamily(
            "spoolq_notifications_failing",
            "Undelivered notifications that failed at least once (being retried)",
            labels=["target"],
        )
        for target, (n_pending, n_failing) in sorted(backlog.items()):
            pending.add_metric([target], n_pending)
            failing.add_metric([target], n_failing)
        yield from (pending, failing)


class DaemonMetrics:
    """What one daemon observes of its own jobs, fed by its event log."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "spoolq_job_duration_seconds",
            "Run time of the attempts this daemon ran",
            ["lane"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "spoolq_job_wait_seconds",
            "Time from a trigger's claim to its job's first start, on this daemon",
            ["lane"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.rescans = PromCounter(
            "spoolq_rescans",
            "Full scans of the spool directories by this daemon",
            ["cause"],
            registry=registry,
        )
        self.notify_failures = PromCounter(
            "spoolq_notify_failures",
            "Failed deliveries of notifications by this daemon (each retry counts)",
            ["target"],
            registry=registry,
        )

    def observe(self, event: str, fields: dict[str, Any]) -> None:
        """An ``EventLog`` observer: runs in the daemon's loop, so it only counts."""
        try:
            if event in _ENDED and "wall_s" in fields:
                self.duration.labels(str(fields["lane"])).observe(float(fields["wall_s"]))
            elif event == "started" and fields.get("attempt") == 1:
                claimed = ULID.from_str(str(fields["job"])).timestamp
                self.wait.labels(str(fields["lane"])).observe(max(0.0, time.time() - claimed))
            elif event == "ready":
                self.rescans.labels("start").inc()
            elif event == "notify_failed":
                self.notify_failures.labels(str(fields["target"])).inc()
            elif event == "rescan":
                why = str(fields.get("why", ""))
                self.rescans.labels("overflow" if "overflow" in why else "other").inc()
        except (KeyError, TypeError, ValueError):
            pass  # a metric is never worth disturbing the daemon
