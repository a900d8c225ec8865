-- Named queries for the PostgreSQL store. Parameters are always bound (%(name)s).

-- name: insert_job
INSERT INTO spoolq_jobs (id, state, lane, priority, trigger, claimed_path, home, log, spec,
                         idem_key,
                         retries, retry_backoff, timeout, kill_grace, on_success, reason,
                         created_at, finished_at, not_before)
VALUES (%(id)s, %(state)s, %(lane)s, %(priority)s, %(trigger)s, %(claimed_path)s, %(home)s,
        %(log)s,
        %(spec)s, %(idem_key)s, %(retries)s, %(retry_backoff)s, %(timeout)s, %(kill_grace)s,
        %(on_success)s, %(reason)s, %(created_at)s, %(finished_at)s, 0)
ON CONFLICT (id) DO NOTHING
RETURNING *

-- name: lock_idem_key
SELECT pg_advisory_xact_lock(hashtext(%(key)s))

-- name: find_duplicate
SELECT id FROM spoolq_jobs
WHERE idem_key = %(key)s
  AND (state IN ('queued', 'running') OR (state = 'succeeded' AND finished_at >= %(since)s))
LIMIT 1

-- name: ensure_lane
INSERT INTO spoolq_lanes (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING

-- name: set_lane_concurrency
-- A daemon's config; an operator's override (spoolq lane) stays in force until reset.
INSERT INTO spoolq_lanes (name, concurrency, configured)
VALUES (%(name)s, %(concurrency)s, %(concurrency)s)
ON CONFLICT (name) DO UPDATE
SET concurrency = coalesce(spoolq_lanes.override, excluded.concurrency),
    configured = excluded.configured

-- name: set_lane_paused
INSERT INTO spoolq_lanes (name, paused) VALUES (%(name)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused

-- name: lock_lane
-- Serializes the lane's claims across hosts: the next statement (start_batch) takes its
-- snapshot once this lock is held, so it counts every job another host started.
SELECT concurrency, paused FROM spoolq_lanes WHERE name = %(lane)s FOR UPDATE

-- name: start_batch
-- The lane's next jobs in claim order, as many as its free slots (and %(limit)s) allow,
-- started in one statement; none if the lane is paused or unknown. SKIP LOCKED keeps a
-- stray row lock from stalling the claim. ARRAY(...) is computed once: as an IN (...) a
-- nested-loop plan could run the subquery again per row, each run skipping the rows this
-- UPDATE already changed, and start more jobs than the limit.
UPDATE spoolq_jobs
SET state = 'running', attempts = attempts + 1, started_at = %(now)s, owner = %(owner)s,
    pid = NULL, pid_start = NULL, exit_code = NULL, reason = NULL, cancel_requested = FALSE
WHERE seq = ANY(ARRAY(
    SELECT seq FROM spoolq_jobs
    WHERE state = 'queued' AND lane = %(lane)s AND not_before <= %(now)s
      AND (%(home)s::text IS NULL OR home = %(home)s OR home = '')
    ORDER BY priority DESC, seq
    LIMIT coalesce((
        SELECT greatest(0, least(coalesce(%(limit)s::int, concurrency), concurrency - (
            SELECT count(*) FROM spoolq_jobs WHERE state = 'running' AND lane = %(lane)s)))
        FROM spoolq_lanes WHERE name = %(lane)s AND NOT paused
    ), 0)
    FOR UPDATE SKIP LOCKED
))
RETURNING *

-- name: insert_attempt
INSERT INTO spoolq_attempts (job_id, n, started_at, owner, host)
VALUES (%(job_id)s, %(n)s, %(now)s, %(owner)s, %(host)s)

-- name: mark_started
UPDATE spoolq_jobs SET pid = %(pid)s, pid_start = %(pid_start)s
WHERE id = %(id)s AND state = 'running'

-- name: close_attempt
UPDATE spoolq_attempts
SET finished_at = %(now)s, exit_code = %(exit_code)s, reason = %(reason)s,
    wall_s = %(wall_s)s, cpu_s = %(cpu_s)s, max_rss_kb = %(max_rss_kb)s
WHERE job_id = %(job_id)s AND n = %(n)s AND finished_at IS NULL

-- name: finish_job
UPDATE spoolq_jobs
SET state = %(state)s, exit_code = %(exit_code)s, reason = %(reason)s, finished_at = %(now)s,
    failures = failures + %(failed)s, owner = NULL, pid = NULL, pid_start = NULL,
    cancel_requested = FALSE
WHERE id = %(id)s AND state = 'running' AND owner IS NOT DISTINCT FROM %(owner)s
  AND attempts = %(attempts)s
RETURNING *

-- name: requeue_job
UPDATE spoolq_jobs
SET state = 'queued', exit_code = %(exit_code)s, reason = %(reason)s,
    not_before = %(not_before)s, failures = failures + %(failed)s, owner = NULL, pid = NULL,
    pid_start = NULL, cancel_requested = FALSE
WHERE id = %(id)s AND state = 'running' AND owner IS NOT DISTINCT FROM %(owner)s
  AND attempts = %(attempts)s
RETURNING *

-- name: running_jobs
SELECT * FROM spoolq_jobs WHERE state = 'running' ORDER BY seq

-- name: running_jobs_of
SELECT * FROM spoolq_jobs WHERE state = 'running' AND owner = %(owner)s ORDER BY seq

-- name: cancel_requests
SELECT * FROM spoolq_jobs
WHERE state = 'running' AND owner = %(owner)s AND cancel_requested

-- name: next_due
SELECT not_before AS v FROM spoolq_jobs
WHERE state = 'queued' AND not_before > %(now)s
  AND (%(home)s::text IS NULL OR home = %(home)s OR home = '')
ORDER BY not_before
LIMIT 1

-- name: lanes_with_work
SELECT l.name AS lane FROM spoolq_lanes l
WHERE EXISTS (SELECT 1 FROM spoolq_jobs j
              WHERE j.state = 'queued' AND j.lane = l.name AND j.not_before <= %(now)s
                AND (%(home)s::text IS NULL OR j.home = %(home)s OR j.home = ''))

-- name: register_daemon
INSERT INTO spoolq_daemons (id, host, pid, pid_start, started_at, heartbeat_at, home)
VALUES (%(id)s, %(host)s, %(pid)s, %(pid_start)s, %(started_at)s, %(heartbeat_at)s, %(home)s)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at

-- name: heartbeat
UPDATE spoolq_daemons SET heartbeat_at = %(now)s WHERE id = %(id)s RETURNING id

-- name: unregister_daemon
DELETE FROM spoolq_daemons WHERE id = %(id)s

-- name: daemons
SELECT * FROM spoolq_daemons ORDER BY started_at

-- name: get_job
SELECT * FROM spoolq_jobs WHERE id = %(id)s

-- name: get_job_locked
-- A job about to be changed on what it is now: a peer changing it too waits for our commit.
SELECT * FROM spoolq_jobs WHERE id = %(id)s FOR UPDATE

-- name: find_by_prefix
SELECT * FROM spoolq_jobs WHERE id >= %(prefix)s AND id < %(prefix)s || '~' ORDER BY id LIMIT 2

-- name: known_ids
SELECT id, state FROM spoolq_jobs WHERE id = ANY(%(ids)s)

-- name: attempts
SELECT * FROM spoolq_attempts WHERE job_id = %(job_id)s ORDER BY n

-- name: list_jobs
SELECT * FROM spoolq_jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(lane)s::text IS NULL OR lane = %(lane)s)
ORDER BY seq DESC
LIMIT %(limit)s

-- name: cancel_queued
UPDATE spoolq_jobs
SET state = 'cancelled', reason = 'cancelled by operator', finished_at = %(now)s
WHERE id = %(id)s AND state = 'queued'
RETURNING *

-- name: request_cancel
UPDATE spoolq_jobs SET cancel_requested = TRUE
WHERE id = %(id)s AND state = 'running'
RETURNING *

-- name: retry_job
UPDATE spoolq_jobs
SET state = 'queued', failures = 0, not_before = 0, finished_at = NULL, reason = NULL,
    exit_code = NULL, cancel_requested = FALSE
WHERE id = %(id)s AND state IN ('failed', 'cancelled', 'succeeded') AND spec IS NOT NULL
RETURNING *

-- name: failed_ids
SELECT id FROM spoolq_jobs WHERE state = 'failed' ORDER BY seq

-- name: lane_status
SELECT l.name, l.concurrency, l.paused, l.override, l.configured,
       (SELECT count(*) FROM spoolq_jobs j WHERE j.state = 'running' AND j.lane = l.name)
           AS running,
       (SELECT count(*) FROM spoolq_jobs j WHERE j.state = 'queued' AND j.lane = l.name)
           AS queued,
       (SELECT min(created_at) FROM spoolq_jobs j WHERE j.state = 'queued' AND j.lane = l.name)
           AS oldest
FROM spoolq_lanes l ORDER BY l.name

-- name: state_counts
SELECT state, count(*) AS n FROM spoolq_jobs GROUP BY state

-- name: prune
DELETE FROM spoolq_jobs
WHERE finished_at IS NOT NULL AND finished_at < %(before)s
  AND state IN ('succeeded', 'failed', 'cancelled', 'rejected')
  AND (%(home)s::text IS NULL OR home = %(home)s OR home = '')
RETURNING *

-- name: delete_attempts
DELETE FROM spoolq_attempts WHERE job_id = ANY(%(ids)s)

-- name: notify
-- One channel per daemon (see PgListener), so that a daemon can wake its peers only.
SELECT pg_notify('spoolq_' || substr(md5(id), 1, 24), '')
FROM spoolq_daemons WHERE id IS DISTINCT FROM %(exclude)s

-- name: notify_slots
-- Slots freed in these lanes: wake only the daemons that have a job queued in one of them
-- (of their own state directory, or of an any-host lane). A fleet whose every daemon woke
-- at every freed slot spent most of its time claiming nothing.
SELECT pg_notify('spoolq_' || substr(md5(d.id), 1, 24), '')
FROM spoolq_daemons d
WHERE d.id IS DISTINCT FROM %(exclude)s
  AND EXISTS (SELECT 1 FROM spoolq_jobs j
              WHERE j.state = 'queued' AND j.lane = ANY(%(lanes)s)
                AND (j.home = d.home OR j.home = ''))

-- name: register_waiter
-- A process waiting for jobs to end, until expires_at (server time; refreshed while it
-- waits). Rows of waiters that died long ago go at the same time.
WITH lapsed AS (
    DELETE FROM spoolq_waiters WHERE expires_at < extract(epoch FROM clock_timestamp()) - 3600
)
INSERT INTO spoolq_waiters (id, expires_at)
VALUES (%(id)s, extract(epoch FROM clock_timestamp()) + %(ttl)s)
ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at

-- name: unregister_waiter
DELETE FROM spoolq_waiters WHERE id = %(id)s

-- name: migrations_table
CREATE TABLE IF NOT EXISTS spoolq_schema (version INTEGER NOT NULL)

-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtext('spoolq-migrations'))

-- name: schema_version
SELECT coalesce(max(version), 0) AS v FROM spoolq_schema

-- name: set_schema_version
INSERT INTO spoolq_schema (version) VALUES (%(version)s)

-- web and metrics ---------------------------------------------------------------------------

-- name: list_jobs_page
SELECT * FROM spoolq_jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(lane)s::text IS NULL OR lane = %(lane)s)
  AND (%(before)s::bigint IS NULL OR seq < %(before)s)
ORDER BY seq DESC
LIMIT %(limit)s

-- name: finished_totals
SELECT lane, outcome, n FROM spoolq_finished_totals ORDER BY lane, outcome

-- name: rejected_totals
SELECT reason, n FROM spoolq_rejected_totals ORDER BY reason

-- several hosts -----------------------------------------------------------------------------

-- name: lane_overview
SELECT l.*,
       (SELECT count(*) FROM spoolq_jobs j WHERE j.state = 'running' AND j.lane = l.name)
           AS running,
       (SELECT count(*) FROM spoolq_jobs j WHERE j.state = 'queued' AND j.lane = l.name)
           AS queued
FROM spoolq_lanes l ORDER BY l.name

-- name: lane_oldest_queued
SELECT min(created_at) AS created_at FROM spoolq_jobs
WHERE state = 'queued' AND lane = %(lane)s

-- name: settled_counts
SELECT state, count(*) AS n FROM spoolq_jobs
WHERE state IN ('failed', 'cancelled', 'rejected')
GROUP BY state

-- name: job_total
SELECT count(*) AS n FROM spoolq_jobs

-- name: register_home
INSERT INTO spoolq_homes (home, path, host, daemon, seen_at)
VALUES (%(home)s, %(path)s, %(host)s, %(daemon)s, %(now)s)
ON CONFLICT (home) DO UPDATE
SET path = excluded.path, host = excluded.host, daemon = excluded.daemon,
    seen_at = excluded.seen_at

-- name: touch_home
-- With each heartbeat: when a daemon was last seen serving its home (kept after it dies).
UPDATE spoolq_homes SET seen_at = %(now)s, daemon = %(id)s
WHERE home = (SELECT home FROM spoolq_daemons WHERE id = %(id)s)

-- name: adopt_home
-- Jobs recorded under a state directory's old name (host:path) take its identity.
UPDATE spoolq_jobs SET home = %(home)s WHERE home = %(legacy)s RETURNING id

-- name: forget_home
DELETE FROM spoolq_homes WHERE home = %(home)s

-- name: homes
SELECT * FROM spoolq_homes ORDER BY home

-- name: queued_by_home
-- Queued jobs that only these state directories' daemons may run, per home (asked for
-- the homes no live daemon serves: rarely any).
SELECT home, count(*) AS n, min(created_at) AS oldest FROM spoolq_jobs
WHERE state = 'queued' AND home = ANY(%(homes)s)
GROUP BY home

-- name: set_lane_override
INSERT INTO spoolq_lanes (name, concurrency, override) VALUES (%(name)s, %(n)s, %(n)s)
ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, override = excluded.override
RETURNING *

-- name: reset_lane_override
UPDATE spoolq_lanes SET concurrency = coalesce(configured, 1), override = NULL
WHERE name = %(name)s
RETURNING *

-- name: save_log_tail
INSERT INTO spoolq_log_tails (job_id, tail, size, host)
VALUES (%(job_id)s, %(tail)s, %(size)s, %(host)s)
ON CONFLICT (job_id) DO UPDATE SET tail = excluded.tail, size = excluded.size, host = excluded.host

-- name: log_tail
SELECT * FROM spoolq_log_tails WHERE job_id = %(job_id)s

-- name: prunable_elsewhere
-- Finished jobs old enough to prune whose files live in another state directory.
SELECT home, count(*) AS n FROM spoolq_jobs
WHERE finished_at IS NOT NULL AND finished_at < %(before)s
  AND state IN ('succeeded', 'failed', 'cancelled', 'rejected')
  AND home <> %(home)s AND home <> ''
GROUP BY home

-- name: delete_log_tails
DELETE FROM spoolq_log_tails WHERE job_id = ANY(%(ids)s)

-- name: delete_trigger_texts
DELETE FROM spoolq_trigger_texts WHERE job_id = ANY(%(ids)s)

-- name: save_trigger_text
INSERT INTO spoolq_trigger_texts (job_id, text) VALUES (%(job_id)s, %(text)s)
ON CONFLICT (job_id) DO NOTHING

-- name: trigger_text
SELECT text FROM spoolq_trigger_texts WHERE job_id = %(job_id)s

-- name: last_attempts
-- Where each of these jobs ran last: its latest attempt's host and daemon.
SELECT a.job_id, a.host, a.owner FROM spoolq_attempts a
WHERE a.job_id = ANY(%(ids)s)
  AND a.n = (SELECT max(b.n) FROM spoolq_attempts b WHERE b.job_id = a.job_id)

-- name: relocate
-- A job claimed in another state directory runs here: its trigger and log are here now.
UPDATE spoolq_jobs SET claimed_path = %(claimed_path)s, log = %(log)s WHERE id = %(id)s
RETURNING (SELECT text FROM spoolq_trigger_texts WHERE job_id = %(id)s) AS text

-- name: release_home
-- An operator lets any daemon run a job whose trigger content is in the store.
UPDATE spoolq_jobs SET home = ''
WHERE id = %(id)s AND EXISTS (SELECT 1 FROM spoolq_trigger_texts WHERE job_id = %(id)s)
RETURNING *

-- -- progress, waiting, notifications ------------------------------------------------------

-- name: last_seq
SELECT max(seq) AS v FROM spoolq_jobs

-- name: find_by_trigger
-- Newest first, stopping at the first match: a recent trigger is found at once.
SELECT * FROM spoolq_jobs WHERE trigger = %(trigger)s AND seq > %(after)s
ORDER BY seq DESC LIMIT 1

-- name: save_progress
INSERT INTO spoolq_progress
    (job_id, attempt, done, total, unit, message, rate, eta_s, updated_at)
VALUES (%(job_id)s, %(attempt)s, %(done)s, %(total)s, %(unit)s, %(message)s, %(rate)s,
        %(eta_s)s, %(updated_at)s)
ON CONFLICT (job_id) DO UPDATE SET
    attempt = excluded.attempt, done = excluded.done, total = excluded.total,
    unit = excluded.unit, message = excluded.message, rate = excluded.rate,
    eta_s = excluded.eta_s, updated_at = excluded.updated_at

-- name: get_progress
SELECT * FROM spoolq_progress WHERE job_id = ANY(%(ids)s)

-- name: clear_notify_targets
DELETE FROM spoolq_notify_targets

-- name: add_notify_target
INSERT INTO spoolq_notify_targets (target, event, lane) VALUES (%(target)s, %(event)s, %(lane)s)

-- name: claim_notifications
-- Due, and no sender on it: none took it, its lease ran out, or its daemon is gone (it
-- died while sending; its registration goes when a daemon finds it dead).
UPDATE spoolq_outbox
SET lease_until = %(until)s, lease_owner = %(owner)s, attempts = attempts + 1
WHERE seq IN (
    SELECT seq FROM spoolq_outbox
    WHERE sent_at IS NULL AND failed_at IS NULL AND next_at <= %(now)s
      AND (lease_until IS NULL OR lease_until < %(now)s
           OR lease_owner NOT IN (SELECT id FROM spoolq_daemons))
    ORDER BY next_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING *

-- name: notification_sent
UPDATE spoolq_outbox SET sent_at = %(now)s, lease_until = NULL, error = NULL WHERE id = %(id)s

-- name: notification_failed
UPDATE spoolq_outbox
SET next_at = %(next_at)s, lease_until = NULL, error = %(error)s, failed_at = %(failed_at)s
WHERE id = %(id)s

-- name: next_notification
SELECT min(next_at) AS v FROM spoolq_outbox WHERE sent_at IS NULL AND failed_at IS NULL

-- name: notification_backlog
-- Unsent notifications per target, and how many of them failed at least once.
SELECT target, count(*) AS pending, count(error) AS failing FROM spoolq_outbox
WHERE sent_at IS NULL AND failed_at IS NULL
GROUP BY target
