-- Processes waiting for jobs to end (spoolq wait, submit --wait, spoolq.wait) register
-- here while they wait, and the jobs table's trigger wakes spoolq_ended only while one is
-- registered. A commit that notifies takes a lock that every notifying commit on the
-- server shares until its own commit is flushed; a fleet's job ends need not queue on it
-- when nobody waits. A waiter refreshes its row while it waits; the row of one that died
-- lapses at expires_at (epoch seconds). The payload names the store's schema: the channel
-- is shared by every schema of the database.
CREATE TABLE spoolq_waiters (
    id         TEXT PRIMARY KEY,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE OR REPLACE FUNCTION spoolq_notify_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IN ('succeeded', 'failed', 'cancelled', 'rejected')
       AND (TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state)
       AND EXISTS (SELECT 1 FROM spoolq_waiters
                   WHERE expires_at > extract(epoch FROM clock_timestamp())) THEN
        PERFORM pg_notify('spoolq_ended', TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END
$$;
