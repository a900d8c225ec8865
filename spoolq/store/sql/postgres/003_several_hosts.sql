-- Several hosts: a home is a state directory, attempts say where they ran, a lane's limit
-- can be overridden at run time, a finished job's log tail and an any-host job's trigger
-- are kept in the store.
--
-- Homes used to be "host:state_dir". They stay valid: the first daemon started on that
-- host and state directory adopts its old jobs under the directory's identity (see
-- adopt_home). Until then they are known here by their old name.
ALTER TABLE spoolq_daemons ADD COLUMN home TEXT NOT NULL DEFAULT '';
ALTER TABLE spoolq_attempts ADD COLUMN host TEXT;
-- concurrency is what claims read; configured is what the latest daemon's config says,
-- override what an operator set with `spoolq lane` (NULL: none, the config's value holds).
ALTER TABLE spoolq_lanes ADD COLUMN configured INTEGER;
ALTER TABLE spoolq_lanes ADD COLUMN override INTEGER;

-- The state directories that have had a daemon, and when one was last seen serving each.
CREATE TABLE spoolq_homes (
    home    TEXT PRIMARY KEY,
    path    TEXT NOT NULL DEFAULT '',
    host    TEXT NOT NULL DEFAULT '',
    daemon  TEXT,
    seen_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
INSERT INTO spoolq_homes (home, path, host)
SELECT DISTINCT home, substr(home, strpos(home, ':') + 1), split_part(home, ':', 1)
FROM spoolq_jobs WHERE home <> '' AND strpos(home, ':') > 0;

-- The last 64 KiB of a finished job's log (size: the whole log's), for hosts without it.
CREATE TABLE spoolq_log_tails (
    job_id TEXT PRIMARY KEY,
    tail   BYTEA NOT NULL,
    size   BIGINT NOT NULL,
    host   TEXT NOT NULL
);

-- The content of a trigger any daemon may run (an any-host lane), written where it runs.
CREATE TABLE spoolq_trigger_texts (
    job_id TEXT PRIMARY KEY,
    text   TEXT NOT NULL
);
