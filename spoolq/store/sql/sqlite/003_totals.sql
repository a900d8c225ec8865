-- Totals that only grow: jobs finished per lane and outcome, triggers rejected per reason.
--
-- /metrics reads them as counters, which must never go backwards: not when a daemon
-- restarts, not when prune deletes the rows they counted. Triggers on the jobs table bump
-- them in the very transaction that changes a job's state, whichever verb does it.
CREATE TABLE finished_totals (
    lane    TEXT NOT NULL,
    outcome TEXT NOT NULL,
    n       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (lane, outcome)
);

CREATE TABLE rejected_totals (
    reason TEXT PRIMARY KEY,
    n      INTEGER NOT NULL DEFAULT 0
);

-- The jobs already finished when this migration runs are counted once.
INSERT INTO finished_totals (lane, outcome, n)
SELECT lane, state, count(*) FROM jobs
WHERE state IN ('succeeded', 'failed', 'cancelled', 'rejected')
GROUP BY lane, state;
INSERT INTO rejected_totals (reason, n)
SELECT kind, count(*) FROM (
    SELECT CASE
        WHEN reason LIKE 'duplicate%' THEN 'duplicate'
        WHEN reason LIKE '%max_trigger_bytes%' THEN 'too_large'
        WHEN reason LIKE 'not valid UTF-8%' THEN 'encoding'
        WHEN reason LIKE 'owner %' OR reason LIKE 'mode %'
          OR reason LIKE '%hard links%' THEN 'untrusted'
        WHEN reason LIKE '%not a regular file%' OR reason LIKE 'was replaced%'
          OR reason LIKE 'permission denied%' THEN 'not_a_file'
        ELSE 'invalid'
    END AS kind
    FROM jobs WHERE state = 'rejected'
) AS r
GROUP BY kind;

CREATE TRIGGER jobs_count_finished AFTER UPDATE OF state ON jobs
WHEN NEW.state IN ('succeeded', 'failed', 'cancelled', 'rejected') AND NEW.state <> OLD.state
BEGIN
    INSERT INTO finished_totals (lane, outcome, n) VALUES (NEW.lane, NEW.state, 1)
    ON CONFLICT (lane, outcome) DO UPDATE SET n = n + 1;
END;

-- A rejected trigger is recorded as a finished row at once (never updated into the state).
-- Its reason is free text; the metric's label is its kind, from the reason's wording.
CREATE TRIGGER jobs_count_rejected AFTER INSERT ON jobs
WHEN NEW.state IN ('succeeded', 'failed', 'cancelled', 'rejected')
BEGIN
    INSERT INTO finished_totals (lane, outcome, n) VALUES (NEW.lane, NEW.state, 1)
    ON CONFLICT (lane, outcome) DO UPDATE SET n = n + 1;
    INSERT INTO rejected_totals (reason, n)
    SELECT CASE
        WHEN NEW.reason LIKE 'duplicate%' THEN 'duplicate'
        WHEN NEW.reason LIKE '%max_trigger_bytes%' THEN 'too_large'
        WHEN NEW.reason LIKE 'not valid UTF-8%' THEN 'encoding'
        WHEN NEW.reason LIKE 'owner %' OR NEW.reason LIKE 'mode %'
          OR NEW.reason LIKE '%hard links%' THEN 'untrusted'
        WHEN NEW.reason LIKE '%not a regular file%' OR NEW.reason LIKE 'was replaced%'
          OR NEW.reason LIKE 'permission denied%' THEN 'not_a_file'
        ELSE 'invalid'
    END, 1
    WHERE NEW.state = 'rejected'
    ON CONFLICT (reason) DO UPDATE SET n = n + 1;
END;
