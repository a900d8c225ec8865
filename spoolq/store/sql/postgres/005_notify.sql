-- Notifications ([[notify]] in the config): the daemons declare which events each target
-- wants (spoolq_notify_targets, replaced by each daemon as it starts); a trigger on the
-- jobs table records one outbox row per matching target in the very transaction that
-- changes the job's state, so a crash between that commit and the sending sends it at the
-- next start (at least once; the row's id lets a receiver drop a repeat). With no target
-- declared the trigger finds an empty table and writes nothing.
CREATE TABLE spoolq_notify_targets (
    target TEXT NOT NULL,
    event  TEXT NOT NULL,
    lane   TEXT  -- NULL: every lane
);

CREATE TABLE spoolq_outbox (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    target      TEXT NOT NULL,
    event       TEXT NOT NULL,
    job_id      TEXT NOT NULL REFERENCES spoolq_jobs (id) ON DELETE CASCADE,
    created_at  DOUBLE PRECISION NOT NULL,
    next_at     DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION,
    lease_owner TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    sent_at     DOUBLE PRECISION,
    failed_at   DOUBLE PRECISION
);
CREATE INDEX spoolq_outbox_due ON spoolq_outbox (next_at)
WHERE sent_at IS NULL AND failed_at IS NULL;

CREATE FUNCTION spoolq_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev TEXT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spoolq_notify_targets) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        ev := NEW.state;
    ELSIF NEW.state IS NOT DISTINCT FROM OLD.state THEN
        RETURN NULL;
    ELSIF NEW.state = 'running' THEN
        ev := 'started';
    ELSIF NEW.state = 'queued' AND OLD.state = 'running' THEN
        IF NEW.failures > OLD.failures THEN ev := 'retrying'; ELSE RETURN NULL; END IF;
    ELSE
        ev := NEW.state;
    END IF;
    INSERT INTO spoolq_outbox (id, target, event, job_id, created_at, next_at)
    SELECT md5(random()::text || clock_timestamp()::text || t.target), t.target, ev, NEW.id,
           extract(epoch FROM clock_timestamp()), extract(epoch FROM clock_timestamp())
    FROM spoolq_notify_targets t
    WHERE t.event = ev AND (t.lane IS NULL OR t.lane = NEW.lane);
    RETURN NULL;
END
$$;

CREATE TRIGGER spoolq_jobs_notify_outbox
AFTER INSERT OR UPDATE OF state ON spoolq_jobs
FOR EACH ROW EXECUTE FUNCTION spoolq_notify_outbox();
