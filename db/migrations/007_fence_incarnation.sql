-- The fence checks the committing process, not only its node id (issue 14).
-- Two processes may share a node id (the default "jobwire", or a restart
-- while the old process still runs): the newer registers the next
-- incarnation and claims the old one's jobs, but the older could still
-- create a brand-new job (its first batch is not fenced by any epoch) and
-- then exit as "declared dead", leaving that job owned by a live node id
-- that does not drive it. A group of an incarnation that is not the live
-- one, or of a node declared dead, now commits nothing: every job of it is
-- refused as a lost lease (23J01). incarnation 0 skips the check (a store
-- that does not register, as in the store's own tests).
DROP FUNCTION jw_advance_seq_fenced(text, uuid[], bigint[], bigint[], bigint[], bigint[]);

CREATE FUNCTION jw_advance_seq_fenced(node text, incarnation bigint, jobs uuid[], epochs bigint[],
                                      lo bigint[], hi bigint[], n bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    advanced bigint;
    bad record;
BEGIN
    IF incarnation > 0 AND NOT EXISTS (SELECT 1 FROM jw_nodes w
                                        WHERE w.id = node AND w.incarnation = jw_advance_seq_fenced.incarnation
                                          AND NOT w.dead) THEN
        RAISE EXCEPTION 'lease lost for job %: node % incarnation % is not the live one',
            jobs[1], node, incarnation
            USING ERRCODE = '23J01';
    END IF;
    UPDATE job_runs r SET last_seq = u.hi, owner_node = node, lease_epoch = u.e
      FROM unnest(jobs, epochs, lo, hi, n) AS u(j, e, lo, hi, n)
     WHERE r.id = u.j AND r.last_seq = u.lo - 1 AND u.hi - u.lo + 1 = u.n
       AND ((r.owner_node = node AND r.lease_epoch = u.e)
            OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1));
    GET DIAGNOSTICS advanced = ROW_COUNT;
    IF advanced = cardinality(jobs) THEN
        RETURN;
    END IF;
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
