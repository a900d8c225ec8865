-- Jobs: one row per trigger. Times are UNIX seconds (double precision), UTC.
CREATE TABLE spoolq_jobs (
    seq              BIGSERIAL PRIMARY KEY,  -- FIFO order
    id               TEXT NOT NULL UNIQUE,
    state            TEXT NOT NULL,
    lane             TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    trigger          TEXT NOT NULL,
    claimed_path     TEXT NOT NULL,
    home             TEXT NOT NULL DEFAULT '',  -- host:state_dir whose daemon runs it
    log              TEXT NOT NULL,
    spec             TEXT,
    idem_key         TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    retries          INTEGER NOT NULL DEFAULT 0,
    retry_backoff    DOUBLE PRECISION NOT NULL DEFAULT 5,
    timeout          DOUBLE PRECISION,
    kill_grace       DOUBLE PRECISION NOT NULL DEFAULT 10,
    on_success       TEXT NOT NULL DEFAULT 'archive',
    exit_code        INTEGER,
    reason           TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    not_before       DOUBLE PRECISION NOT NULL DEFAULT 0,
    owner            TEXT,
    pid              INTEGER,
    pid_start        TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX spoolq_jobs_queue ON spoolq_jobs (lane, priority DESC, seq) WHERE state = 'queued';
CREATE INDEX spoolq_jobs_due ON spoolq_jobs (not_before) WHERE state = 'queued';
CREATE INDEX spoolq_jobs_running ON spoolq_jobs (lane) WHERE state = 'running';
CREATE INDEX spoolq_jobs_idem ON spoolq_jobs (idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX spoolq_jobs_state ON spoolq_jobs (state, seq);
CREATE INDEX spoolq_jobs_finished ON spoolq_jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE spoolq_attempts (
    job_id      TEXT NOT NULL,
    n           INTEGER NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    exit_code   INTEGER,
    reason      TEXT,
    wall_s      DOUBLE PRECISION,
    cpu_s       DOUBLE PRECISION,
    max_rss_kb  BIGINT,
    owner       TEXT,
    PRIMARY KEY (job_id, n)
);

-- The lane row is locked (FOR UPDATE) by every claim in that lane: claims of one lane are
-- serialized across all hosts, claims of different lanes are not.
CREATE TABLE spoolq_lanes (
    name        TEXT PRIMARY KEY,
    concurrency INTEGER NOT NULL DEFAULT 1,
    paused      BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE spoolq_daemons (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    pid_start    TEXT NOT NULL DEFAULT '',
    started_at   DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
