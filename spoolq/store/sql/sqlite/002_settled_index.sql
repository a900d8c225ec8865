-- Only the rare finished states get an index on (state, seq).
--
-- jobs_state (state, seq) covered every job, so every state change rewrote it: about a
-- quarter of the pages that a busy lane's hand-off (finish one job, start the next) writes
-- to the WAL. Queued and running jobs have partial indexes of their own (jobs_queue,
-- jobs_due, jobs_running), succeeded is the bulk of the table and is counted as the rest.
DROP INDEX jobs_state;
CREATE INDEX jobs_settled ON jobs (state, seq) WHERE state IN ('failed', 'cancelled', 'rejected');
