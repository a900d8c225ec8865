"""The store's verbs for several hosts, against every store (the contract suite's kits):
homes and their adoption of old rows, attempts that say where they ran, run-time lane
limits, log tails, trigger content and what prune leaves to other homes."""

from __future__ import annotations

import dataclasses

from spoolq.jobs import DaemonInfo, HomeInfo, JobState, LogTail
from spoolq.store import Store
from tests.integration.test_store_contract import (
    DAY,
    EXIT3,
    OK,
    T0,
    WINDOW,
    claim_next,
    enqueue1,
    finish,
    new_job,
    run_to,
    schedule_retry,
)


def test_a_home_adopts_the_jobs_recorded_under_its_old_name(store: Store) -> None:
    old = enqueue1(store, home="hostA:/srv/state")
    other = enqueue1(store, home="hostB:/srv/state")
    info = HomeInfo("home-1", "/srv/state", "hostA", "d1@hostA", T0)
    assert store.adopt_home(info, "hostA:/srv/state") == 1
    assert store.get(old.id).home == "home-1"
    assert store.get(other.id).home == "hostB:/srv/state"
    assert claim_next(store, "default", "d1@hostA", T0 + 1, home="home-1") is not None
    homes = {h.home: h for h in store.homes()}
    assert homes["home-1"] == info
    assert store.adopt_home(dataclasses.replace(info, seen_at=T0 + 5), "hostA:/srv/state") == 0
    assert store.homes()[0].seen_at == T0 + 5


def test_a_heartbeat_says_when_a_home_was_last_served(store: Store) -> None:
    store.register_daemon(DaemonInfo("d1@h", "h", 1, T0, T0, "", "home-1"))
    store.adopt_home(HomeInfo("home-1", "/s", "h", "d1@h", T0), "h:/s")
    assert store.heartbeat("d1@h", T0 + 30)
    store.unregister_daemon("d1@h")
    (home,) = store.homes()
    assert (home.seen_at, home.daemon, home.host) == (T0 + 30, "d1@h", "h")
    assert store.daemons() == []


def test_queued_jobs_are_counted_for_the_homes_asked_about(store: Store) -> None:
    enqueue1(store, T0, home="home-1")
    enqueue1(store, T0 + 1, home="home-1")
    enqueue1(store, T0 + 2, home="home-2")
    enqueue1(store, T0 + 3, home="")
    run_to(store, JobState.SUCCEEDED, home="home-3", lane="other")
    homes = ["home-1", "home-2", "home-3", "home-4"]
    assert store.queued_by_home(homes) == {"home-1": (2, T0), "home-2": (1, T0 + 2)}
    assert store.queued_by_home(["home-2"]) == {"home-2": (1, T0 + 2)}
    assert store.queued_by_home([]) == {}


def test_each_attempt_records_its_daemon_and_host(store: Store) -> None:
    job = enqueue1(store)
    running = claim_next(store, "default", "01ABC@hostA", T0 + 1)
    assert running is not None
    schedule_retry(store, running, EXIT3, not_before=T0 + 2, now=T0 + 1)
    running = claim_next(store, "default", "01DEF@hostB", T0 + 3)
    assert running is not None
    finish(store, running, OK, JobState.SUCCEEDED, T0 + 4)
    first, second = store.attempts(job.id)
    assert (first.owner, first.host) == ("01ABC@hostA", "hostA")
    assert (second.owner, second.host) == ("01DEF@hostB", "hostB")
    assert second.to_dict()["daemon"] == "01DEF@hostB"
    never = enqueue1(store, lane="other")
    assert store.last_attempts([job.id, never.id]) == {job.id: ("hostB", "01DEF@hostB")}


def test_a_lane_override_holds_until_reset_whatever_the_daemons_declare(store: Store) -> None:
    store.set_lanes({"db": 2})
    lane = store.set_lane_limit("db", 5)
    assert lane is not None and (lane.concurrency, lane.override) == (5, 5)
    store.set_lanes({"db": 3})  # a daemon starting with its config
    (status,) = [ln for ln in store.lane_status() if ln.name == "db"]
    assert (status.concurrency, status.override, status.configured) == (5, 5, 3)
    assert status.to_dict(T0)["overridden"] is True
    for i in range(6):
        enqueue1(store, T0 + i, lane="db")
    assert len(store.claim_batch("db", "d1@h", T0 + 10)) == 5
    lane = store.set_lane_limit("db", None)
    assert lane is not None and (lane.concurrency, lane.override) == (3, None)
    assert store.set_lane_limit("nosuch", None) is None


def test_a_lane_made_by_an_override_resets_to_one(store: Store) -> None:
    store.set_lane_limit("new", 4)
    lane = store.set_lane_limit("new", None)
    assert lane is not None and lane.concurrency == 1


def test_a_finished_job_keeps_its_log_tail_and_a_retried_attempt_does_not(store: Store) -> None:
    job = enqueue1(store, retries=1)
    running = claim_next(store, "default", "d1@hostA", T0 + 1)
    assert running is not None
    tail = LogTail(b"first\n", 6, "hostA")
    store.end_attempt(running, EXIT3, None, T0 + 2, log_tail=tail)()
    assert store.log_tail(job.id) is None  # it will run again: its log grows
    running = claim_next(store, "default", "d1@hostB", T0 + 100)
    assert running is not None
    tail = LogTail(b"\x00end\xff", 70_000, "hostB")
    assert store.end_attempt(running, OK, None, T0 + 101, log_tail=tail)().state.finished
    assert store.log_tail(job.id) == tail
    store.prune(T0 + DAY)
    assert store.log_tail(job.id) is None


def test_trigger_content_is_kept_and_lets_an_operator_release_the_job(store: Store) -> None:
    with_text = dataclasses.replace(new_job(home="home-1"), text='{"argv": ["true"]}')
    (job,) = store.enqueue([with_text], dedup_window=WINDOW, now=T0)
    plain = enqueue1(store, home="home-1")
    assert store.trigger_text(job.id) == '{"argv": ["true"]}'
    assert store.trigger_text(plain.id) is None
    assert store.release_home(plain.id) is None
    released = store.release_home(job.id)
    assert released is not None and released.home == ""
    assert claim_next(store, "default", "d9@elsewhere", T0 + 1, home="home-9") is not None
    store.prune(T0 + DAY)  # still running: kept
    assert store.trigger_text(job.id) is not None


def test_an_operator_releases_a_job_with_the_content_read_from_its_file(store: Store) -> None:
    job = enqueue1(store, home="home-1")
    released = store.release_home(job.id, '{"argv": ["true"]}')
    assert released is not None and released.home == ""
    assert store.trigger_text(job.id) == '{"argv": ["true"]}'
    again = store.release_home(job.id, "other text")  # kept as it was first stored
    assert again is not None and store.trigger_text(job.id) == '{"argv": ["true"]}'
    running = claim_next(store, "default", "d9@elsewhere", T0 + 1, home="home-9")
    assert running is not None and running.id == job.id
    assert store.relocate(job.id, "/b/claimed/x", "/b/logs/x.log") == '{"argv": ["true"]}'


def test_prune_of_one_home_reports_what_it_leaves_to_the_others(store: Store) -> None:
    for home in ("home-1", "home-2", "home-2", ""):
        run_to(store, JobState.SUCCEEDED, home=home)
    assert store.prunable_elsewhere(T0 + DAY, "home-1") == {"home-2": 2}
    assert len(store.prune(T0 + DAY, "home-1")) == 2  # its own and the any-host one
    assert store.prunable_elsewhere(T0 + DAY, "home-1") == {"home-2": 2}
    assert len(store.prune(T0 + DAY)) == 2
    assert store.prunable_elsewhere(T0 + DAY, "home-1") == {}


def test_a_job_run_in_another_state_directory_is_relocated_there(store: Store) -> None:
    with_text = dataclasses.replace(new_job(home=""), text="true\n")
    (job,) = store.enqueue([with_text], dedup_window=WINDOW, now=T0)
    assert store.relocate(job.id, "/b/claimed/x.trigger", "/b/logs/x.log") == "true\n"
    moved = store.get(job.id)
    assert (moved.claimed_path, moved.log) == ("/b/claimed/x.trigger", "/b/logs/x.log")
    plain = enqueue1(store)
    assert store.relocate(plain.id, "/b/claimed/y", "/b/logs/y.log") is None
