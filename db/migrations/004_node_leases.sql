-- Several jobwire processes on one database (issue 14). Each process is a node
-- with a row here, renewed by its heartbeat (database time). Each job has an
-- owner node and a lease epoch; every group commit advances a job only while
-- the committing node still holds the job's lease at that epoch, so two
-- processes can never both advance one job. A node that takes a job over
-- (recovery) bumps its epoch; the old owner's next batch is refused.
CREATE TABLE jw_nodes (
    id           text PRIMARY KEY,
    incarnation  bigint NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    dead         boolean NOT NULL DEFAULT false
);

-- Store-owned, like last_seq: the engine's rows never carry them and the
-- store's upsert never writes them. NULL owner: nobody holds the job.
ALTER TABLE job_runs ADD COLUMN owner_node text;
ALTER TABLE job_runs ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;

-- jw_advance_seq, fenced: a job advances only when its deltas continue where
-- it stands AND this node holds its lease at the batch's epoch - or it is a
-- brand-new job's first batch (nobody owns it, epoch 0, seq 1): the creating
-- node takes it. Under READ COMMITTED the UPDATE re-checks its WHERE against
-- a concurrent committed takeover, which is what makes it a fence. A job
-- whose lease moved is refused with SQLSTATE 23J01 ("lease lost"), distinct
-- from the seq-gap refusals (23000).
CREATE FUNCTION jw_advance_seq_fenced(node text, jobs uuid[], epochs bigint[], lo bigint[],
                                      hi bigint[], n bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    advanced bigint;
    bad record;
BEGIN
    UPDATE job_runs r SET last_seq = u.hi, owner_node = node, lease_epoch = u.e
      FROM unnest(jobs, epochs, lo, hi, n) AS u(j, e, lo, hi, n)
     WHERE r.id = u.j AND r.last_seq = u.lo - 1 AND u.hi - u.lo + 1 = u.n
       AND ((r.owner_node = node AND r.lease_epoch = u.e)
            OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1));
    GET DIAGNOSTICS advanced = ROW_COUNT;
    IF advanced = cardinality(jobs) THEN
        RETURN;
    END IF;
    -- Which job failed, and why: the lease first (a stale owner's batch may
    -- also look like a gap, but the lease is what it lost).
    SELECT u.j, u.e, u.lo, u.hi, u.n, r.id AS found, r.last_seq, r.owner_node, r.lease_epoch,
           NOT ((r.owner_node IS NOT DISTINCT FROM node AND r.lease_epoch = u.e)
                OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1)) AS lost
      INTO bad
      FROM unnest(jobs, epochs, lo, hi, n) AS u(j, e, lo, hi, n)
      LEFT JOIN job_runs r ON r.id = u.j
     WHERE r.id IS NULL OR r.last_seq <> u.hi
        OR NOT ((r.owner_node IS NOT DISTINCT FROM node AND r.lease_epoch = u.e)
                OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1))
     ORDER BY (r.id IS NULL) DESC,
              NOT ((r.owner_node IS NOT DISTINCT FROM node AND r.lease_epoch = u.e)
                   OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1)) DESC
     LIMIT 1;
    IF bad.found IS NULL THEN
        RAISE EXCEPTION 'job % does not exist', bad.j
            USING ERRCODE = 'foreign_key_violation';
    ELSIF bad.lost THEN
        RAISE EXCEPTION 'lease lost for job %: held by node % at epoch %, batch of node % at epoch %',
            bad.j, coalesce(bad.owner_node, '(none)'), bad.lease_epoch, node, bad.e
            USING ERRCODE = '23J01';
    ELSIF bad.hi - bad.lo + 1 <> bad.n THEN
        RAISE EXCEPTION 'seq gap in job %: % deltas span seq % to %', bad.j, bad.n, bad.lo, bad.hi
            USING ERRCODE = 'integrity_constraint_violation';
    ELSE
        RAISE EXCEPTION 'seq gap in job %: last committed seq is %, batch starts at %',
            bad.j, bad.last_seq, bad.lo
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
END
$$;

-- Nothing may advance a job unfenced any more.
DROP FUNCTION jw_advance_seq(uuid[], bigint[], bigint[], bigint[]);
