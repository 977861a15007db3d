-- upsert_cost.sql - what PostgreSQL spends per row on the statements of a group commit
-- (db/commit.c), split into the parse of the rows' JSON text and the write itself.
--
--   psql -X -q -v ON_ERROR_STOP=1 -f tests/bench/upsert_cost.sql "$DATABASE_URL"
--
-- Builds a scratch table shaped like job_steps (fillfactor 70, its index) with 20,000
-- rows, in a schema of its own (jw_bench_upsert: a regular table, so that its writes go
-- through shared buffers and the WAL as job_steps' do; dropped at the end), and 1,000
-- batches of 20 distinct rows as the JSON text the db thread sends (its size a row is
-- printed; a different step_data each time). Each variant runs over every batch, the
-- variants interleaved batch by batch so that the machine's noise falls on all alike (the
-- writes take turns, one per batch: a write right after another, on the same rows, would
-- find them in the CPU's caches). It reports each variant's time per row, and the
-- writes' WAL bytes per row. Each batch commits, as a group does (so that page pruning
-- keeps the updates HOT), but only the statements are timed: commits and WAL flushes are
-- not in these figures. Times are wall time inside the statements.
--
--   parse jsonb    SELECT count(*) FROM jsonb_populate_recordset(NULL::t, $1::jsonb)
--   parse json     the same with json_populate_recordset (json is not kept parsed)
--   elements json  json_array_elements($1::json): how the events insert split its rows
--                  until it took them as a binary json[] (db/commit.c)
--   upsert         INSERT ... SELECT FROM jsonb_populate_recordset ON CONFLICT (id)
--                  DO UPDATE SET ... (what db/commit.c prepares)
--   update         UPDATE t SET ... FROM jsonb_populate_recordset WHERE t.id = s.id
--                  (a plain update of rows known to exist; nested loop forced)
--   parse record[] SELECT count(*) FROM unnest($1::t[]): the same rows as an array of
--                  composite literals, the typed text form a row could take instead
--   upsert record[] the upsert from that array
--
-- The three writes take every third batch each. The record[] variants ask whether
-- typed parameters would be cheaper than JSON for PostgreSQL. A literal still goes
-- through every column's input function (uuid_in, timestamptz_in, jsonb_in, ...); a
-- binary record (record_recv) would not, and psql cannot send one.
-- Nothing here touches jobwire's tables.
SET enable_hashjoin = off;
SET enable_mergejoin = off;
DROP SCHEMA IF EXISTS jw_bench_upsert CASCADE;
CREATE SCHEMA jw_bench_upsert;
SET search_path = jw_bench_upsert, pg_catalog;

CREATE TABLE xsteps (
    id                uuid PRIMARY KEY,
    job_run_id        uuid NOT NULL,
    step_name         text NOT NULL,
    step_type         text NOT NULL,
    status            text NOT NULL,
    transaction_index integer,
    started_at        timestamptz,
    completed_at      timestamptz,
    timeout_at        timestamptz,
    step_data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    error_message     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    attempt           integer NOT NULL DEFAULT 0,
    idempotency_key   text,
    next_retry_at     timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
CREATE INDEX ON xsteps (job_run_id, created_at, id);

-- Row i of batch b, as the engine would write it.
CREATE FUNCTION pg_temp.xrow(i int, b int) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object(
    'id', md5('step' || i)::uuid, 'job_run_id', md5('job' || (i / 10))::uuid,
    'step_name', 'process_payment', 'step_type', 'external',
    'status', (ARRAY['in_progress', 'completed', 'retrying'])[1 + (i + b) % 3],
    'transaction_index', i % 50, 'started_at', '2026-12-06T16:00:00.123456Z',
    'completed_at', NULL, 'timeout_at', NULL,
    'step_data', jsonb_build_object('amount', 300, 'batch', b, 'ref', md5(i || '/' || b),
                                    'note', repeat('x', 40)),
    'error_message', NULL, 'created_at', '2026-12-06T16:00:00Z', 'attempt', b % 3,
    'idempotency_key', 'key-' || md5('step' || i), 'next_retry_at', NULL,
    'updated_at', '2026-12-06T16:00:01Z')
$$;

INSERT INTO xsteps SELECT * FROM jsonb_populate_recordset(NULL::xsteps,
    (SELECT jsonb_agg(pg_temp.xrow(i, 0)) FROM generate_series(0, 19999) i));
ANALYZE xsteps;

-- 1,000 batches of 20 distinct rows (a stride through the table), as text, stored
-- uncompressed: a statement's parameter arrives as plain text.
CREATE TEMP TABLE xbatch (b int, rows text, recs text);
ALTER TABLE xbatch ALTER rows SET STORAGE EXTERNAL;
ALTER TABLE xbatch ALTER recs SET STORAGE EXTERNAL;
INSERT INTO xbatch
  SELECT b, (SELECT jsonb_agg(pg_temp.xrow((b * 7919 + k * 997) % 20000, b))
               FROM generate_series(0, 19) k)::text, NULL
    FROM generate_series(1, 1000) b;
UPDATE xbatch SET recs = (SELECT array_agg(jsonb_populate_record(NULL::xsteps, e))
                            FROM jsonb_array_elements(rows::jsonb) e)::text;
SELECT format('upsert_cost: %s bytes of JSON text a row', round(avg(octet_length(rows)) / 20))
  AS " " FROM xbatch;

DO $$
DECLARE
    names text[] := ARRAY['parse jsonb', 'parse json', 'elements json', 'upsert', 'update',
                          'parse record[]', 'upsert record[]'];
    spent float8[] := ARRAY[0, 0, 0, 0, 0, 0, 0];
    wal numeric[] := ARRAY[0, 0, 0, 0, 0, 0, 0];
    rows_of int[] := ARRAY[0, 0, 0, 0, 0, 0, 0];
    w int;
    rtxt text;
    lsn pg_lsn;
    txt text;
    nrows int := 0;
    t timestamptz;
    x record;
    n bigint;
BEGIN
    FOR x IN SELECT b, rows, recs FROM xbatch ORDER BY b LOOP
        txt := x.rows;
        rtxt := x.recs;
        t := clock_timestamp();
        SELECT count(*) INTO n FROM unnest(rtxt::xsteps[]);
        spent[6] := spent[6] + extract(epoch FROM clock_timestamp() - t);
        t := clock_timestamp();
        SELECT count(*) INTO n FROM jsonb_populate_recordset(NULL::xsteps, txt::jsonb);
        spent[1] := spent[1] + extract(epoch FROM clock_timestamp() - t);
        t := clock_timestamp();
        SELECT count(*) INTO n FROM json_populate_recordset(NULL::xsteps, txt::json);
        spent[2] := spent[2] + extract(epoch FROM clock_timestamp() - t);
        t := clock_timestamp();
        SELECT count(*) INTO n FROM json_array_elements(txt::json);
        spent[3] := spent[3] + extract(epoch FROM clock_timestamp() - t);
        IF x.b % 3 = 2 THEN
            lsn := pg_current_wal_insert_lsn();
            t := clock_timestamp();
            INSERT INTO xsteps SELECT * FROM unnest(rtxt::xsteps[])
                ON CONFLICT (id) DO UPDATE SET job_run_id = EXCLUDED.job_run_id,
                  step_name = EXCLUDED.step_name, step_type = EXCLUDED.step_type,
                  status = EXCLUDED.status, transaction_index = EXCLUDED.transaction_index,
                  started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
                  timeout_at = EXCLUDED.timeout_at, step_data = EXCLUDED.step_data,
                  error_message = EXCLUDED.error_message, created_at = EXCLUDED.created_at,
                  attempt = EXCLUDED.attempt, idempotency_key = EXCLUDED.idempotency_key,
                  next_retry_at = EXCLUDED.next_retry_at, updated_at = EXCLUDED.updated_at;
            w := 7;
        ELSIF x.b % 3 = 0 THEN
            lsn := pg_current_wal_insert_lsn();
            t := clock_timestamp();
            INSERT INTO xsteps SELECT * FROM jsonb_populate_recordset(NULL::xsteps, txt::jsonb)
                ON CONFLICT (id) DO UPDATE SET job_run_id = EXCLUDED.job_run_id,
                  step_name = EXCLUDED.step_name, step_type = EXCLUDED.step_type,
                  status = EXCLUDED.status, transaction_index = EXCLUDED.transaction_index,
                  started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
                  timeout_at = EXCLUDED.timeout_at, step_data = EXCLUDED.step_data,
                  error_message = EXCLUDED.error_message, created_at = EXCLUDED.created_at,
                  attempt = EXCLUDED.attempt, idempotency_key = EXCLUDED.idempotency_key,
                  next_retry_at = EXCLUDED.next_retry_at, updated_at = EXCLUDED.updated_at;
            w := 4;
        ELSE
            lsn := pg_current_wal_insert_lsn();
            t := clock_timestamp();
            UPDATE xsteps t SET job_run_id = s.job_run_id, step_name = s.step_name,
                  step_type = s.step_type, status = s.status,
                  transaction_index = s.transaction_index, started_at = s.started_at,
                  completed_at = s.completed_at, timeout_at = s.timeout_at,
                  step_data = s.step_data, error_message = s.error_message,
                  created_at = s.created_at, attempt = s.attempt,
                  idempotency_key = s.idempotency_key, next_retry_at = s.next_retry_at,
                  updated_at = s.updated_at
              FROM jsonb_populate_recordset(NULL::xsteps, txt::jsonb) s WHERE t.id = s.id;
            w := 5;
        END IF;
        spent[w] := spent[w] + extract(epoch FROM clock_timestamp() - t);
        wal[w] := wal[w] + pg_wal_lsn_diff(pg_current_wal_insert_lsn(), lsn);
        rows_of[w] := rows_of[w] + 20;
        nrows := nrows + 20;
        COMMIT;
    END LOOP;
    FOR i IN 1 .. 7 LOOP
        n := CASE WHEN i IN (4, 5, 7) THEN rows_of[i] ELSE nrows END;
        RAISE NOTICE 'upsert_cost: % % us per row over % rows%', rpad(names[i], 16),
            round((spent[i] * 1e6 / n)::numeric, 2), n,
            CASE WHEN i IN (4, 5, 7) THEN format(', %s WAL bytes per row', round(wal[i] / n)) ELSE '' END;
    END LOOP;
END
$$;
DROP SCHEMA jw_bench_upsert CASCADE;
