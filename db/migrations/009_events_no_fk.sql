-- job_events loses its foreign key to job_runs (issue 15). The key was
-- checked once per journaled delta: a query and a FOR KEY SHARE lock on
-- the job's row, which the same group then updates (last_seq), for every
-- row of every group. jw_advance_seq_fenced already refuses, in the same
-- transaction, a group naming a job that does not exist, so the check
-- guarded nothing the commit does not. The key's ON DELETE CASCADE stays,
-- as a statement trigger: deleting jobs deletes their journal.
ALTER TABLE job_events DROP CONSTRAINT job_events_job_run_id_fkey;

CREATE FUNCTION jw_delete_journal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_events e USING gone g WHERE e.job_run_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_runs_delete_journal AFTER DELETE ON job_runs
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION jw_delete_journal();
