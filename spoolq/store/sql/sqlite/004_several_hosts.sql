-- Several hosts: a home is a state directory, attempts say where they ran, a lane's limit
-- can be overridden at run time, a finished job's log tail and an any-host job's trigger
-- are kept in the store.
--
-- Homes used to be "host:state_dir". They stay valid: the first daemon started on that
-- host and state directory adopts its old jobs under the directory's identity (see
-- adopt_home). Until then they are known here by their old name.
ALTER TABLE daemons ADD COLUMN home TEXT NOT NULL DEFAULT '';
ALTER TABLE attempts ADD COLUMN host TEXT;
-- concurrency is what claims read; configured is what the latest daemon's config says,
-- override what an operator set with `spoolq lane` (NULL: none, the config's value holds).
ALTER TABLE lanes ADD COLUMN configured INTEGER;
ALTER TABLE lanes ADD COLUMN override INTEGER;

-- The state directories that have had a daemon, and when one was last seen serving each.
CREATE TABLE homes (
    home    TEXT PRIMARY KEY,
    path    TEXT NOT NULL DEFAULT '',
    host    TEXT NOT NULL DEFAULT '',
    daemon  TEXT,
    seen_at REAL NOT NULL DEFAULT 0
);
INSERT INTO homes (home, path, host)
SELECT DISTINCT home, substr(home, instr(home, ':') + 1), substr(home, 1, instr(home, ':') - 1)
FROM jobs WHERE home <> '' AND instr(home, ':') > 0;

-- The last 64 KiB of a finished job's log (size: the whole log's), for hosts without it.
CREATE TABLE log_tails (
    job_id TEXT PRIMARY KEY,
    tail   BLOB NOT NULL,
    size   INTEGER NOT NULL,
    host   TEXT NOT NULL
);

-- The content of a trigger any daemon may run (an any-host lane), written where it runs.
CREATE TABLE trigger_texts (
    job_id TEXT PRIMARY KEY,
    text   TEXT NOT NULL
);
