-- The latest progress reading of each job's attempt (written by its daemon at most every
-- few seconds), with the rate and ETA computed when it was read. Gone with its job.
CREATE TABLE spoolq_progress (
    job_id     TEXT PRIMARY KEY REFERENCES spoolq_jobs (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    done       DOUBLE PRECISION NOT NULL,
    total      DOUBLE PRECISION,
    unit       TEXT,
    message    TEXT,
    rate       DOUBLE PRECISION,
    eta_s      DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL
);

-- Whoever waits for jobs to end (spoolq wait, submit --wait) LISTENs on spoolq_ended: a
-- job reaching a final state wakes them when its transaction commits. One payload, so a
-- transaction that ends many jobs sends one notification.
CREATE FUNCTION spoolq_notify_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IN ('succeeded', 'failed', 'cancelled', 'rejected')
       AND (TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state) THEN
        PERFORM pg_notify('spoolq_ended', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER spoolq_jobs_notify_ended
AFTER INSERT OR UPDATE OF state ON spoolq_jobs
FOR EACH ROW EXECUTE FUNCTION spoolq_notify_ended();
