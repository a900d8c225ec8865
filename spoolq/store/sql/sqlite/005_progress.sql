-- The latest progress reading of each job's attempt (written by its daemon at most every
-- few seconds), with the rate and ETA computed when it was read. Gone with its job.
CREATE TABLE progress (
    job_id     TEXT PRIMARY KEY,
    attempt    INTEGER NOT NULL,
    done       REAL NOT NULL,
    total      REAL,
    unit       TEXT,
    message    TEXT,
    rate       REAL,
    eta_s      REAL,
    updated_at REAL NOT NULL
);

CREATE TRIGGER jobs_drop_progress AFTER DELETE ON jobs
BEGIN
    DELETE FROM progress WHERE job_id = OLD.id;
END;
