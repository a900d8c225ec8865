-- Named queries for the SQLite store. Parameters are always bound (:name).

-- name: insert_job
INSERT INTO jobs (id, state, lane, priority, trigger, claimed_path, home, log, spec, idem_key,
                  retries, retry_backoff, timeout, kill_grace, on_success, reason,
                  created_at, finished_at, not_before)
VALUES (:id, :state, :lane, :priority, :trigger, :claimed_path, :home, :log, :spec, :idem_key,
        :retries, :retry_backoff, :timeout, :kill_grace, :on_success, :reason,
        :created_at, :finished_at, 0)
ON CONFLICT (id) DO NOTHING
RETURNING *

-- name: lock_idem_key
-- BEGIN IMMEDIATE already serializes writers: nothing more to lock.
SELECT 1

-- name: find_duplicate
SELECT id FROM jobs
WHERE idem_key = :key
  AND (state IN ('queued', 'running') OR (state = 'succeeded' AND finished_at >= :since))
LIMIT 1

-- name: ensure_lane
INSERT INTO lanes (name) VALUES (:name) ON CONFLICT (name) DO NOTHING

-- name: set_lane_concurrency
-- A daemon's config; an operator's override (spoolq lane) stays in force until reset.
INSERT INTO lanes (name, concurrency, configured) VALUES (:name, :concurrency, :concurrency)
ON CONFLICT (name) DO UPDATE
SET concurrency = coalesce(lanes.override, excluded.concurrency),
    configured = excluded.configured

-- name: set_lane_paused
INSERT INTO lanes (name, paused) VALUES (:name, :paused)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused

-- name: lock_lane
-- (the write lock of BEGIN IMMEDIATE is already held)
SELECT concurrency, paused FROM lanes WHERE name = :lane

-- name: start_batch
-- The lane's next jobs in claim order, as many as its free slots (and :limit) allow, started
-- in one statement; none if the lane is paused or unknown. Found by the claim index (a
-- subquery, so INDEXED BY holds). A negative LIMIT would mean no limit: hence max(0, ...).
UPDATE jobs
SET state = 'running', attempts = attempts + 1, started_at = :now, owner = :owner,
    pid = NULL, pid_start = NULL, exit_code = NULL, reason = NULL, cancel_requested = 0
WHERE seq IN (
    SELECT seq FROM jobs INDEXED BY jobs_queue
    WHERE state = 'queued' AND lane = :lane AND not_before <= :now
      AND (:home IS NULL OR home = :home OR home = '')
    ORDER BY priority DESC, seq
    LIMIT coalesce((
        SELECT max(0, min(coalesce(:limit, concurrency), concurrency - (
            SELECT count(*) FROM jobs WHERE state = 'running' AND lane = :lane)))
        FROM lanes WHERE name = :lane AND NOT paused
    ), 0)
)
RETURNING *

-- name: insert_attempt
INSERT INTO attempts (job_id, n, started_at, owner, host)
VALUES (:job_id, :n, :now, :owner, :host)

-- name: mark_started
UPDATE jobs SET pid = :pid, pid_start = :pid_start WHERE id = :id AND state = 'running'

-- name: close_attempt
UPDATE attempts
SET finished_at = :now, exit_code = :exit_code, reason = :reason, wall_s = :wall_s,
    cpu_s = :cpu_s, max_rss_kb = :max_rss_kb
WHERE job_id = :job_id AND n = :n AND finished_at IS NULL

-- name: finish_job
UPDATE jobs
SET state = :state, exit_code = :exit_code, reason = :reason, finished_at = :now,
    failures = failures + :failed, owner = NULL, pid = NULL, pid_start = NULL,
    cancel_requested = 0
WHERE id = :id AND state = 'running' AND owner IS :owner AND attempts = :attempts
RETURNING *

-- name: requeue_job
UPDATE jobs
SET state = 'queued', exit_code = :exit_code, reason = :reason, not_before = :not_before,
    failures = failures + :failed, owner = NULL, pid = NULL, pid_start = NULL,
    cancel_requested = 0
WHERE id = :id AND state = 'running' AND owner IS :owner AND attempts = :attempts
RETURNING *

-- name: running_jobs
-- Every heartbeat asks: along the running index, then sorted (without INDEXED BY the
-- planner walks the whole table in seq order to skip the sort, 100,000 queued rows and all).
SELECT * FROM jobs INDEXED BY jobs_running WHERE state = 'running' ORDER BY seq

-- name: running_jobs_of
SELECT * FROM jobs INDEXED BY jobs_running WHERE state = 'running' AND owner = :owner ORDER BY seq

-- name: cancel_requests
SELECT * FROM jobs WHERE state = 'running' AND owner = :owner AND cancel_requested = 1

-- name: next_due
-- Walks the due-time index in order and stops at the first job of this home: O(log n)
-- with 100,000 jobs queued, where min() with the home filter would scan them all.
SELECT not_before AS v FROM jobs INDEXED BY jobs_due
WHERE state = 'queued' AND not_before > :now AND (:home IS NULL OR home = :home OR home = '')
ORDER BY not_before
LIMIT 1

-- name: lanes_with_work
-- One probe per lane along the claim index, not a scan of every queued job.
SELECT l.name AS lane FROM lanes l
WHERE EXISTS (SELECT 1 FROM jobs j INDEXED BY jobs_queue
              WHERE j.state = 'queued' AND j.lane = l.name AND j.not_before <= :now
                AND (:home IS NULL OR j.home = :home OR j.home = ''))

-- name: register_daemon
INSERT OR REPLACE INTO daemons (id, host, pid, pid_start, started_at, heartbeat_at, home)
VALUES (:id, :host, :pid, :pid_start, :started_at, :heartbeat_at, :home)

-- name: heartbeat
UPDATE daemons SET heartbeat_at = :now WHERE id = :id RETURNING id

-- name: unregister_daemon
DELETE FROM daemons WHERE id = :id

-- name: daemons
SELECT * FROM daemons ORDER BY started_at

-- name: get_job
SELECT * FROM jobs WHERE id = :id

-- name: get_job_locked
-- (Writers are serialized already: BEGIN IMMEDIATE.)
SELECT * FROM jobs WHERE id = :id

-- name: find_by_prefix
SELECT * FROM jobs WHERE id >= :prefix AND id < :prefix || '~' ORDER BY id LIMIT 2

-- name: known_ids
SELECT id, state FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: attempts
SELECT * FROM attempts WHERE job_id = :job_id ORDER BY n

-- name: list_jobs
SELECT * FROM jobs
WHERE (:state IS NULL OR state = :state) AND (:lane IS NULL OR lane = :lane)
ORDER BY seq DESC
LIMIT :limit

-- name: cancel_queued
UPDATE jobs
SET state = 'cancelled', reason = 'cancelled by operator', finished_at = :now
WHERE id = :id AND state = 'queued'
RETURNING *

-- name: request_cancel
UPDATE jobs SET cancel_requested = 1 WHERE id = :id AND state = 'running' RETURNING *

-- name: retry_job
UPDATE jobs
SET state = 'queued', failures = 0, not_before = 0, finished_at = NULL, reason = NULL,
    exit_code = NULL, cancel_requested = 0
WHERE id = :id AND state IN ('failed', 'cancelled', 'succeeded') AND spec IS NOT NULL
RETURNING *

-- name: failed_ids
-- The IN term is the partial index's own condition: SQLite uses jobs_settled only when the
-- query repeats it.
SELECT id FROM jobs
WHERE state IN ('failed', 'cancelled', 'rejected') AND state = 'failed'
ORDER BY seq

-- name: lane_status
SELECT l.name, l.concurrency, l.paused, l.override, l.configured,
       (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.lane = l.name) AS running,
       (SELECT count(*) FROM jobs j WHERE j.state = 'queued' AND j.lane = l.name) AS queued,
       (SELECT min(created_at) FROM jobs j WHERE j.state = 'queued' AND j.lane = l.name)
           AS oldest
FROM lanes l ORDER BY l.name

-- name: state_counts
-- Along the partial indexes, without a walk of the whole table; succeeded is the rest.
-- (A new state would need its own line here.)
WITH c (state, n) AS (
    SELECT 'queued', count(*) FROM jobs WHERE state = 'queued'
    UNION ALL
    SELECT 'running', count(*) FROM jobs WHERE state = 'running'
    UNION ALL
    SELECT state, count(*) FROM jobs
    WHERE state IN ('failed', 'cancelled', 'rejected')
    GROUP BY state
)
SELECT state, n FROM c
UNION ALL
SELECT 'succeeded', (SELECT count(*) FROM jobs) - (SELECT coalesce(sum(n), 0) FROM c)

-- name: prune
DELETE FROM jobs
WHERE finished_at IS NOT NULL AND finished_at < :before
  AND state IN ('succeeded', 'failed', 'cancelled', 'rejected')
  AND (:home IS NULL OR home = :home OR home = '')
RETURNING *

-- name: delete_attempts
DELETE FROM attempts WHERE job_id IN (SELECT value FROM json_each(:ids))

-- web and metrics ---------------------------------------------------------------------------

-- name: list_jobs_page
SELECT * FROM jobs
WHERE (:state IS NULL OR state = :state) AND (:lane IS NULL OR lane = :lane)
  AND (:before IS NULL OR seq < :before)
ORDER BY seq DESC
LIMIT :limit

-- name: finished_totals
SELECT lane, outcome, n FROM finished_totals ORDER BY lane, outcome

-- name: rejected_totals
SELECT reason, n FROM rejected_totals ORDER BY reason

-- several hosts -----------------------------------------------------------------------------

-- name: lane_overview
-- Along the partial indexes: a count of index entries, no table rows read.
SELECT l.*,
       (SELECT count(*) FROM jobs j INDEXED BY jobs_running
        WHERE j.state = 'running' AND j.lane = l.name) AS running,
       (SELECT count(*) FROM jobs j INDEXED BY jobs_queue
        WHERE j.state = 'queued' AND j.lane = l.name) AS queued
FROM lanes l ORDER BY l.name

-- name: lane_oldest_queued
-- The lane's first queued job in claim order: the first entry of each priority level of the
-- claim index (one probe per level, found by skipping from level to level), not a walk of
-- every queued job as min(created_at) would be.
WITH RECURSIVE levels (priority) AS (
    SELECT max(priority) FROM jobs INDEXED BY jobs_queue WHERE state = 'queued' AND lane = :lane
    UNION ALL
    SELECT (SELECT max(priority) FROM jobs INDEXED BY jobs_queue
            WHERE state = 'queued' AND lane = :lane AND priority < levels.priority)
    FROM levels WHERE levels.priority IS NOT NULL
)
SELECT created_at FROM jobs WHERE seq = (
    SELECT min((SELECT seq FROM jobs INDEXED BY jobs_queue
                WHERE state = 'queued' AND lane = :lane AND priority = levels.priority
                ORDER BY priority DESC, seq LIMIT 1))
    FROM levels WHERE levels.priority IS NOT NULL)

-- name: settled_counts
-- The IN term is the partial index's own condition (jobs_settled).
SELECT state, count(*) AS n FROM jobs
WHERE state IN ('failed', 'cancelled', 'rejected')
GROUP BY state

-- name: job_total
SELECT count(*) AS n FROM jobs

-- name: register_home
INSERT INTO homes (home, path, host, daemon, seen_at)
VALUES (:home, :path, :host, :daemon, :now)
ON CONFLICT (home) DO UPDATE
SET path = excluded.path, host = excluded.host, daemon = excluded.daemon,
    seen_at = excluded.seen_at

-- name: touch_home
-- With each heartbeat: when a daemon was last seen serving its home (kept after it dies).
UPDATE homes SET seen_at = :now, daemon = :id
WHERE home = (SELECT home FROM daemons WHERE id = :id)

-- name: adopt_home
-- Jobs recorded under a state directory's old name (host:path) take its identity.
UPDATE jobs SET home = :home WHERE home = :legacy RETURNING id

-- name: forget_home
DELETE FROM homes WHERE home = :home

-- name: homes
SELECT * FROM homes ORDER BY home

-- name: queued_by_home
-- Queued jobs that only these state directories' daemons may run, per home (asked for
-- the homes no live daemon serves: rarely any).
SELECT home, count(*) AS n, min(created_at) AS oldest FROM jobs
WHERE state = 'queued' AND home IN (SELECT value FROM json_each(:homes))
GROUP BY home

-- name: set_lane_override
INSERT INTO lanes (name, concurrency, override) VALUES (:name, :n, :n)
ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, override = excluded.override
RETURNING *

-- name: reset_lane_override
UPDATE lanes SET concurrency = coalesce(configured, 1), override = NULL
WHERE name = :name
RETURNING *

-- name: save_log_tail
INSERT INTO log_tails (job_id, tail, size, host)
VALUES (:job_id, :tail, :size, :host)
ON CONFLICT (job_id) DO UPDATE SET tail = excluded.tail, size = excluded.size, host = excluded.host

-- name: log_tail
SELECT * FROM log_tails WHERE job_id = :job_id

-- name: prunable_elsewhere
-- Finished jobs old enough to prune whose files live in another state directory.
SELECT home, count(*) AS n FROM jobs
WHERE finished_at IS NOT NULL AND finished_at < :before
  AND state IN ('succeeded', 'failed', 'cancelled', 'rejected')
  AND home <> :home AND home <> ''
GROUP BY home

-- name: delete_log_tails
DELETE FROM log_tails WHERE job_id IN (SELECT value FROM json_each(:ids))

-- name: delete_trigger_texts
DELETE FROM trigger_texts WHERE job_id IN (SELECT value FROM json_each(:ids))

-- name: save_trigger_text
INSERT INTO trigger_texts (job_id, text) VALUES (:job_id, :text)
ON CONFLICT (job_id) DO NOTHING

-- name: trigger_text
SELECT text FROM trigger_texts WHERE job_id = :job_id

-- name: last_attempts
-- Where each of these jobs ran last: its latest attempt's host and daemon.
SELECT a.job_id, a.host, a.owner FROM attempts a
WHERE a.job_id IN (SELECT value FROM json_each(:ids))
  AND a.n = (SELECT max(b.n) FROM attempts b WHERE b.job_id = a.job_id)

-- name: relocate
-- A job claimed in another state directory runs here: its trigger and log are here now.
UPDATE jobs SET claimed_path = :claimed_path, log = :log WHERE id = :id
RETURNING (SELECT text FROM trigger_texts WHERE job_id = :id) AS text

-- name: release_home
-- An operator lets any daemon run a job whose trigger content is in the store.
UPDATE jobs SET home = ''
WHERE id = :id AND EXISTS (SELECT 1 FROM trigger_texts WHERE job_id = :id)
RETURNING *

-- -- progress, waiting, notifications ------------------------------------------------------

-- name: last_seq
SELECT max(seq) AS v FROM jobs

-- name: find_by_trigger
-- Newest first, stopping at the first match: a recent trigger is found at once.
SELECT * FROM jobs WHERE trigger = :trigger AND seq > :after ORDER BY seq DESC LIMIT 1

-- name: save_progress
INSERT INTO progress (job_id, attempt, done, total, unit, message, rate, eta_s, updated_at)
VALUES (:job_id, :attempt, :done, :total, :unit, :message, :rate, :eta_s, :updated_at)
ON CONFLICT (job_id) DO UPDATE SET
    attempt = excluded.attempt, done = excluded.done, total = excluded.total,
    unit = excluded.unit, message = excluded.message, rate = excluded.rate,
    eta_s = excluded.eta_s, updated_at = excluded.updated_at

-- name: get_progress
SELECT * FROM progress WHERE job_id IN (SELECT value FROM json_each(:ids))

-- name: wake_waiters_on_update
-- A TEMP trigger: it lives in this connection only, and calls back into this process,
-- which wakes the processes waiting for jobs to end once the transaction has committed.
CREATE TEMP TRIGGER IF NOT EXISTS spoolq_wake_waiters_update AFTER UPDATE OF state ON main.jobs
WHEN NEW.state IN ('succeeded', 'failed', 'cancelled', 'rejected') AND NEW.state <> OLD.state
BEGIN
    SELECT spoolq_job_ended();
END

-- name: wake_waiters_on_insert
CREATE TEMP TRIGGER IF NOT EXISTS spoolq_wake_waiters_insert AFTER INSERT ON main.jobs
WHEN NEW.state = 'rejected'
BEGIN
    SELECT spoolq_job_ended();
END

-- name: clear_notify_targets
DELETE FROM notify_targets

-- name: add_notify_target
INSERT OR IGNORE INTO notify_targets (target, event, lane) VALUES (:target, :event, :lane)

-- name: claim_notifications
-- Due, and no sender on it: none took it, its lease ran out, or its daemon is gone (it
-- died while sending; its registration goes when a daemon finds it dead).
UPDATE outbox SET lease_until = :until, lease_owner = :owner, attempts = attempts + 1
WHERE seq IN (
    SELECT seq FROM outbox INDEXED BY outbox_due
    WHERE sent_at IS NULL AND failed_at IS NULL AND next_at <= :now
      AND (lease_until IS NULL OR lease_until < :now
           OR lease_owner NOT IN (SELECT id FROM daemons))
    ORDER BY next_at LIMIT :limit
)
RETURNING *

-- name: notification_sent
UPDATE outbox SET sent_at = :now, lease_until = NULL, error = NULL WHERE id = :id

-- name: notification_failed
UPDATE outbox SET next_at = :next_at, lease_until = NULL, error = :error, failed_at = :failed_at
WHERE id = :id

-- name: next_notification
SELECT min(next_at) AS v FROM outbox INDEXED BY outbox_due
WHERE sent_at IS NULL AND failed_at IS NULL

-- name: notification_backlog
-- Unsent notifications per target, and how many of them failed at least once.
SELECT target, count(*) AS pending, count(error) AS failing FROM outbox INDEXED BY outbox_due
WHERE sent_at IS NULL AND failed_at IS NULL
GROUP BY target
