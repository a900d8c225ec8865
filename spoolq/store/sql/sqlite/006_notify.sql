-- Notifications ([[notify]] in the config): the daemon declares which events each target
-- wants (notify_targets, replaced at each start); a trigger on the jobs table records one
-- outbox row per matching target in the very transaction that changes the job's state, so
-- a crash between that commit and the sending sends it at the next start (at least once;
-- the row's id lets a receiver drop a repeat). With no target declared the triggers find
-- an empty table and write nothing.
CREATE TABLE notify_targets (
    target TEXT NOT NULL,
    event  TEXT NOT NULL,
    lane   TEXT,  -- NULL: every lane
    PRIMARY KEY (target, event, lane)
);

CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    target      TEXT NOT NULL,
    event       TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    next_at     REAL NOT NULL,  -- due then (retries back off)
    lease_until REAL,  -- a sender is on it until then
    lease_owner TEXT,  -- the daemon whose sender it is
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    sent_at     REAL,
    failed_at   REAL  -- gave up after its retries
);
CREATE INDEX outbox_due ON outbox (next_at) WHERE sent_at IS NULL AND failed_at IS NULL;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
WHEN EXISTS (SELECT 1 FROM notify_targets)
BEGIN
    INSERT INTO outbox (id, target, event, job_id, created_at, next_at)
    SELECT lower(hex(randomblob(16))), t.target, t.event, NEW.id,
           (julianday('now') - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0
    FROM notify_targets t
    WHERE t.event = NEW.state AND (t.lane IS NULL OR t.lane = NEW.lane);
END;

CREATE TRIGGER jobs_notify_update AFTER UPDATE OF state ON jobs
WHEN NEW.state <> OLD.state AND EXISTS (SELECT 1 FROM notify_targets)
BEGIN
    INSERT INTO outbox (id, target, event, job_id, created_at, next_at)
    SELECT lower(hex(randomblob(16))), t.target, t.event, NEW.id,
           (julianday('now') - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0
    FROM notify_targets t
    WHERE t.event = CASE
            WHEN NEW.state = 'running' THEN 'started'
            WHEN NEW.state = 'queued' AND OLD.state = 'running' AND NEW.failures > OLD.failures
                THEN 'retrying'
            WHEN NEW.state = 'queued' AND OLD.state = 'running' THEN NULL  -- interrupted
            ELSE NEW.state END
      AND (t.lane IS NULL OR t.lane = NEW.lane);
END;

-- A pruned job's notifications go with it.
CREATE TRIGGER jobs_drop_outbox AFTER DELETE ON jobs
BEGIN
    DELETE FROM outbox WHERE job_id = OLD.id;
END;
