"""The Prometheus and Grafana files in contrib/ use only metrics that /metrics exposes
(as docs/web.md lists them), and the dashboard is valid JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
NAME = re.compile(r"\bspoolq_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def documented() -> set[str]:
    """The metric names of docs/web.md's table (first column)."""
    text = (ROOT / "docs" / "web.md").read_text()
    return set(re.findall(r"^\| `(spoolq_[a-z_]+)` \|", text, flags=re.MULTILINE))


def used(text: str) -> set[str]:
    names = set()
    for name in NAME.findall(text):
        for suffix in SUFFIXES:
            name = name.removesuffix(suffix)
        names.add(name)
    return names


def test_the_docs_list_the_metrics() -> None:
    assert {
        "spoolq_jobs", "spoolq_jobs_finished_total", "spoolq_lane_concurrency",
        "spoolq_lane_paused", "spoolq_lane_oldest_queued_seconds",
        "spoolq_job_duration_seconds", "spoolq_job_wait_seconds",
        "spoolq_triggers_rejected_total", "spoolq_rescans_total", "spoolq_daemons",
        "spoolq_job_progress_ratio",
    } <= documented()  # fmt: skip


def test_alert_rules_use_only_documented_metrics() -> None:
    text = (CONTRIB / "spoolq-alerts.yml").read_text()
    assert used(text) and used(text) <= documented()
    alerts = re.findall(r"^\s+- alert: (\w+)$", text, flags=re.MULTILINE)
    assert {"SpoolqJobsFailing", "SpoolqQueueWaitingTooLong", "SpoolqNoDaemon"} <= set(alerts)
    assert "SpoolqTriggersRejected" in alerts
    assert len(alerts) == len(re.findall(r"^\s+expr: ", text, flags=re.MULTILINE))


def test_the_dashboard_is_json_on_documented_metrics() -> None:
    dashboard = json.loads((CONTRIB / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and used("\n".join(exprs)) <= documented()
    assert "spoolq-alerts.yml" in (CONTRIB / "prometheus.yml").read_text()
