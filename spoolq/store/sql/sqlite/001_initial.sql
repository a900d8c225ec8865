-- Jobs: one row per trigger. Times are UNIX seconds (REAL), UTC.
CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- FIFO order; never reused
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
    retry_backoff    REAL NOT NULL DEFAULT 5,
    timeout          REAL,
    kill_grace       REAL NOT NULL DEFAULT 10,
    on_success       TEXT NOT NULL DEFAULT 'archive',
    exit_code        INTEGER,
    reason           TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    not_before       REAL NOT NULL DEFAULT 0,
    owner            TEXT,
    pid              INTEGER,
    pid_start        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
-- The claim query walks this partial index in order and stops at the first due job.
CREATE INDEX jobs_queue ON jobs (lane, priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_due ON jobs (not_before) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (lane) WHERE state = 'running';
CREATE INDEX jobs_idem ON jobs (idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE attempts (
    job_id      TEXT NOT NULL,
    n           INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    exit_code   INTEGER,
    reason      TEXT,
    wall_s      REAL,
    cpu_s       REAL,
    max_rss_kb  INTEGER,
    owner       TEXT,
    PRIMARY KEY (job_id, n)
);

CREATE TABLE lanes (
    name        TEXT PRIMARY KEY,
    concurrency INTEGER NOT NULL DEFAULT 1,
    paused      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE daemons (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    pid_start    TEXT NOT NULL DEFAULT '',
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
