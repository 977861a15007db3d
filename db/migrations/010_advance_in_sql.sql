-- The fenced advance of a group commit becomes one SQL statement (issue 15).
-- jw_advance_seq_fenced ran its UPDATE, and its incarnation check, through
-- PL/pgSQL once per group: 44 us of a group's 114 us in the advance, in a
-- lat-50 run of scripts/bench-ws, outside the two statements themselves.
-- The store now sends the UPDATE itself (db/commit.c, sql_advance), with
-- the incarnation check as a condition of it, and calls the function below
-- only when the UPDATE did not advance every job of the group: it raises
-- what jw_advance_seq_fenced raised, with the same SQLSTATEs. The old
-- function stays for processes of the previous version during a rolling
-- deploy.
--
-- The function runs inside the statement whose UPDATE it explains, and may
-- or may not see that UPDATE's rows, so a job counts as fine here either
-- way: advanced (last_seq = hi, held by this node at the batch's epoch), or
-- still where the batch continues and fenced as the UPDATE requires.
CREATE FUNCTION jw_advance_refused(node text, incarnation bigint, jobs uuid[], epochs bigint[],
                                   lo bigint[], hi bigint[], n bigint[])
-- VOLATILE (the default, said here on purpose): a function PostgreSQL may
-- call at plan time (IMMUTABLE) would refuse every group.
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    bad record;
BEGIN
    IF incarnation > 0 AND NOT EXISTS (SELECT 1 FROM jw_nodes w
                                        WHERE w.id = node AND w.incarnation = jw_advance_refused.incarnation
                                          AND NOT w.dead) THEN
        RAISE EXCEPTION 'lease lost for job %: node % incarnation % is not the live one',
            jobs[1], node, incarnation
            USING ERRCODE = '23J01';
    END IF;
    SELECT u.j, u.e, u.lo, u.hi, u.n, r.id AS found, r.last_seq, r.owner_node, r.lease_epoch,
           NOT ((r.owner_node IS NOT DISTINCT FROM node AND r.lease_epoch = u.e)
                OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1)) AS lost
      INTO bad
      FROM unnest(jobs, epochs, lo, hi, n) AS u(j, e, lo, hi, n)
      LEFT JOIN job_runs r ON r.id = u.j
     WHERE r.id IS NULL
        OR NOT ((r.last_seq = u.hi AND r.owner_node IS NOT DISTINCT FROM node AND r.lease_epoch = u.e)
                OR (r.last_seq = u.lo - 1 AND u.hi - u.lo + 1 = u.n
                    AND ((r.owner_node IS NOT DISTINCT FROM node AND r.lease_epoch = u.e)
                         OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1))))
     ORDER BY (r.id IS NULL) DESC,
              NOT ((r.owner_node IS NOT DISTINCT FROM node AND r.lease_epoch = u.e)
                   OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1)) DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job of the group refused, yet not all advanced (% jobs: a job named twice, or a range already committed?)',
            cardinality(jobs)
            USING ERRCODE = 'integrity_constraint_violation';
    ELSIF bad.found IS NULL THEN
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
