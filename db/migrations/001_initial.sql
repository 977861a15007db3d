-- 001_initial: the tables of the original design, changed as DESIGN.md says:
-- user_id is a plain uuid (identity comes from the token), otp_requests has no
-- OTP value column (durability rule 5), auth_sessions keeps its token only
-- encrypted, steps gain retry bookkeeping, jobs gain last_seq and
-- cancel_requested, and every change is journaled in job_events.

-- The three job tables are updated many times per row: fillfactor leaves room
-- in each page so most updates stay HOT (no index writes).
CREATE TABLE job_runs (
    id                     uuid PRIMARY KEY,
    user_id                uuid NOT NULL,
    job_type               text NOT NULL DEFAULT 'payment_automation',
    status                 text NOT NULL
        CHECK (status IN ('initiated', 'validating', 'processing', 'completed', 'failed', 'cancelled')),
    current_phase          text,
    progress_percentage    integer NOT NULL DEFAULT 0 CHECK (progress_percentage BETWEEN 0 AND 100),
    total_transactions     integer NOT NULL DEFAULT 4,
    completed_transactions integer NOT NULL DEFAULT 0 CHECK (completed_transactions >= 0),
    transaction_amount     integer NOT NULL CHECK (transaction_amount > 0),
    transaction_count      integer NOT NULL CHECK (transaction_count > 0),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    completed_at           timestamptz,
    error_message          text,
    retry_count            integer NOT NULL DEFAULT 0,
    metadata               jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The store owns last_seq: it advances it in the transaction that journals
    -- the deltas, and refuses a batch that would leave a gap.
    last_seq               bigint NOT NULL DEFAULT 0,
    cancel_requested       boolean NOT NULL DEFAULT false
) WITH (fillfactor = 70);

-- Start-up loads every job that is not finished.
CREATE INDEX job_runs_active_idx ON job_runs (created_at)
    WHERE status NOT IN ('completed', 'failed', 'cancelled');
-- A user's jobs, newest first (GET /api/jobs?user_id=).
CREATE INDEX job_runs_user_recent_idx ON job_runs (user_id, created_at DESC, id DESC);
-- All jobs by status, newest first (GET /api/jobs?status=).
CREATE INDEX job_runs_status_recent_idx ON job_runs (status, created_at DESC, id DESC);

CREATE TABLE job_steps (
    id                uuid PRIMARY KEY,
    job_run_id        uuid NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    step_name         text NOT NULL,
    step_type         text NOT NULL,
    status            text NOT NULL
        CHECK (status IN ('pending', 'in_progress', 'waiting_otp', 'retrying', 'completed', 'failed', 'cancelled')),
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

CREATE INDEX job_steps_job_idx ON job_steps (job_run_id, created_at, id);

CREATE TABLE otp_requests (
    id             uuid PRIMARY KEY,
    job_run_id     uuid NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    job_step_id    uuid NOT NULL REFERENCES job_steps (id) ON DELETE CASCADE,
    otp_type       text NOT NULL,
    phone_number   text,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    received_at    timestamptz,
    verified_at    timestamptz,
    timeout_at     timestamptz,
    attempts_count integer NOT NULL DEFAULT 0,
    max_attempts   integer NOT NULL DEFAULT 3,
    status         text NOT NULL DEFAULT 'requested'
        CHECK (status IN ('requested', 'received', 'verified', 'failed', 'expired'))
) WITH (fillfactor = 70);

CREATE INDEX otp_requests_job_idx ON otp_requests (job_run_id, requested_at, id);

CREATE TABLE auth_sessions (
    id                 uuid PRIMARY KEY,
    user_id            uuid NOT NULL,
    session_type       text NOT NULL CHECK (session_type IN ('gyftr', 'amazon')),
    -- AES-256-GCM: nonce || ciphertext || tag. Never the plain token.
    auth_token_enc     bytea,
    browser_context_id text,
    session_data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    last_used_at       timestamptz,
    is_active          boolean NOT NULL DEFAULT true
);

-- Login reuse looks up a user's live session of one type.
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id, session_type, expires_at DESC)
    WHERE is_active;

-- row_data is json, not jsonb: the journal is written for every change and read
-- back whole (replay, recovery), never searched inside on the hot path. json
-- only validates its input, jsonb converts it; measured with scripts/bench
-- store, json raised durable deltas/s by about 40%.
CREATE TABLE job_events (
    job_run_id uuid NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    seq        bigint NOT NULL CHECK (seq > 0),
    ts         timestamptz NOT NULL,
    table_name text NOT NULL CHECK (table_name IN ('job_runs', 'job_steps', 'otp_requests')),
    op         text NOT NULL CHECK (op IN ('INSERT', 'UPDATE')),
    row_data   json NOT NULL,
    PRIMARY KEY (job_run_id, seq)
);

-- Advances each job's last_seq over one committed group of deltas and refuses
-- the whole transaction when a job's deltas do not continue exactly where the
-- job stands (a gap), or skip numbers inside the group. Duplicates are refused
-- by job_events' primary key before this runs.
CREATE FUNCTION jw_advance_seq(jobs uuid[], lo bigint[], hi bigint[], n bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    advanced bigint;
    bad record;
BEGIN
    UPDATE job_runs r SET last_seq = u.hi
      FROM unnest(jobs, lo, hi, n) AS u(j, lo, hi, n)
     WHERE r.id = u.j AND r.last_seq = u.lo - 1 AND u.hi - u.lo + 1 = u.n;
    GET DIAGNOSTICS advanced = ROW_COUNT;
    IF advanced = cardinality(jobs) THEN
        RETURN;
    END IF;
    SELECT u.j, u.lo, u.hi, u.n, r.id AS found, r.last_seq
      INTO bad
      FROM unnest(jobs, lo, hi, n) AS u(j, lo, hi, n)
      LEFT JOIN job_runs r ON r.id = u.j
     WHERE r.id IS NULL OR r.last_seq <> u.hi
     LIMIT 1;
    IF bad.found IS NULL THEN
        RAISE EXCEPTION 'job % does not exist', bad.j
            USING ERRCODE = 'foreign_key_violation';
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
