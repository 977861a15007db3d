-- Commands from any node (issue 14): an OTP typed, or a cancel asked, on a node
-- that does not drive the job reaches the job's owner through this table. The
-- node that received the command inserts a row and notifies the owner
-- (pg_notify('jw_inbox', '<owner> <id>')) in one statement; the owner takes the
-- row in a transaction fenced on the job's lease (the job_runs row locked FOR
-- SHARE at owner_node = it and its lease_epoch), hands the command to its
-- engine, and writes the verdict (pg_notify('jw_inbox', '<from_node> answer
-- <id>')); the caller reads the verdict and deletes the row. server/inbox.c
-- holds the protocol; docs/operations.md ("Commands from any node") the why.
--
-- An OTP is stored only sealed (AES-256-GCM under a key derived from
-- --secret-key, the row's id and target bound as associated data), and the
-- take erases it: a taken row never holds a value (the CHECK below), so a code
-- can be handed to an engine once at most. Rows are bounded: the caller deletes
-- its row once answered (or withdraws it when it gives up), every insert
-- deletes a few rows older than the longest wait, and inserts stop at a cap of
-- open rows, overall and per user.
CREATE TABLE jw_inbox (
    id          uuid PRIMARY KEY,
    job_run_id  uuid NOT NULL,
    user_id     uuid NOT NULL,          -- the job's owner, for the per-user cap
    kind        text NOT NULL CHECK (kind IN ('otp', 'cancel')),
    target      uuid NOT NULL,          -- the OTP request (otp), the job (cancel)
    sealed      bytea,                  -- otp: the sealed code until taken
    from_node   text NOT NULL,          -- who waits for the verdict
    created_at  timestamptz NOT NULL DEFAULT now(),
    taken_by    text,
    taken_epoch bigint,
    taken_at    timestamptz,
    verdict     jsonb,
    answered_at timestamptz,
    CHECK (taken_by IS NULL OR sealed IS NULL),
    CHECK (kind <> 'otp' OR taken_by IS NOT NULL OR sealed IS NOT NULL)
);

CREATE INDEX jw_inbox_open_job ON jw_inbox (job_run_id) WHERE answered_at IS NULL;
CREATE INDEX jw_inbox_open_user ON jw_inbox (user_id) WHERE answered_at IS NULL;
CREATE INDEX jw_inbox_created ON jw_inbox (created_at);
