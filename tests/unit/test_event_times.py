"""One time format in the daemon's log: a point in time in a field is ISO 8601 UTC, the
same as the line's own timestamp, in both the human and the JSON form."""

from __future__ import annotations

import io
import json
import re

import pytest

from spoolq.events import EventLog

WHEN = 1796627247.87  # 2026-12-07T07:07:27.870Z
ISO = "2026-12-07T07:07:27.870Z"


@pytest.mark.parametrize("field", ["not_before", "started_at", "heartbeat_at"])
def test_time_fields_are_iso_in_human_lines(field: str) -> None:
    out = io.StringIO()
    EventLog("human", out).warn("retry_scheduled", job="J1", **{field: WHEN})
    line = out.getvalue()
    assert f"{field}={ISO}" in line
    assert "1796627247" not in line
    stamp = line.split()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)  # the same format


def test_time_fields_are_iso_in_json_lines() -> None:
    out = io.StringIO()
    EventLog("json", out).warn("retry_scheduled", job="J1", attempt=1, not_before=WHEN)
    data = json.loads(out.getvalue())
    assert data["not_before"] == ISO
    assert data["attempt"] == 1


def test_durations_and_counts_stay_numbers() -> None:
    out = io.StringIO()
    EventLog("json", out).error("store_unavailable", retry_in=0.5, wall_s=1.25, pending=3)
    data = json.loads(out.getvalue())
    assert (data["retry_in"], data["wall_s"], data["pending"]) == (0.5, 1.25, 3)


def test_held_lines_are_formatted_the_same_way() -> None:
    out = io.StringIO()
    log = EventLog("human", out)
    log.hold()
    log.emit("queued", job="J2", not_before=WHEN)
    log.flush()
    assert f"not_before={ISO}" in out.getvalue()
