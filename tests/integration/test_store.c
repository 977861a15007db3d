/*
 * The store against a real PostgreSQL: migrations, group commit, read-back,
 * refusals (duplicate seq, gap, bad values) and how they are isolated, order,
 * recovery load and its lease claim, the lease fence, replayed deltas byte
 * for byte the live ones, the jw_events notification of each group and the
 * read of several jobs' new events, and an unreachable database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"
#include "pgtest.h"
#include "cluster.h"
#include "store_internal.h" /* the commit probe, tested on a connection of its own */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *conninfo;
static PGconn *db;

static int setup_db(void **state)
{
    (void)state;
    jw_log_set_level(JW_LOG_WARN);
    conninfo = pgtest_migrated_db("jw_test_store");
    db = pgtest_connect(conninfo);
    return 0;
}

static int teardown_db(void **state)
{
    (void)state;
    PQfinish(db);
    free(conninfo);
    return 0;
}

static jw_store *start_store(int max_group)
{
    jw_store_config cfg = {.conninfo = conninfo, .max_group_deltas = max_group};
    jw_store *s = NULL;

    assert_int_equal(jw_store_start(&s, &cfg), 0);
    return s;
}

/* A new job: its job_runs INSERT as seq 1. */
static jw_batch *new_job_batch(char job[JW_UUID_LEN + 1])
{
    char user[JW_UUID_LEN + 1];
    jw_batch *b = jw_batch_new();
    char *row;

    jw_uuid_new(job);
    jw_uuid_new(user);
    row = pgtest_job_row(job, user, "initiated", 0);
    jw_batch_add(b, pgtest_delta(job, job, 1, JW_TABLE_JOB_RUNS, JW_OP_INSERT, row));
    free(row);
    return b;
}

static jw_delta *job_update(const char *job, int64_t seq, const char *status, int progress)
{
    /* user_id does not matter for updates of these tests; keep it stable. */
    char *row = pgtest_job_row(job, "00000000-0000-4000-8000-000000000001", status, progress);
    jw_delta *d = pgtest_delta(job, job, seq, JW_TABLE_JOB_RUNS, JW_OP_UPDATE, row);

    free(row);
    return d;
}

static int64_t events_of(const char *job)
{
    const char *p[1] = {job};

    return pgtest_int(db, "SELECT count(*) FROM job_events WHERE job_run_id = $1", 1, p);
}

static int64_t last_seq_of(const char *job)
{
    const char *p[1] = {job};

    return pgtest_int(db, "SELECT last_seq FROM job_runs WHERE id = $1", 1, p);
}

/* Submits b and returns its answer (status), freeing it; error copied out. */
static int commit_one(jw_store *s, jw_batch *b, char *error, size_t errlen)
{
    jw_batch *ans[1];
    int status;

    assert_int_equal(jw_store_submit(s, b), 0);
    assert_int_equal(pgtest_collect(s, ans, 1, 10000), 1);
    assert_ptr_equal(ans[0], b);
    status = ans[0]->status;
    if (error)
        snprintf(error, errlen, "%s", ans[0]->error ? ans[0]->error : "");
    jw_batch_free(ans[0]);
    return status;
}

/*
 * The histograms agree with the counters: one observation per commit, the
 * group sizes add up to what was committed, and every commit took time.
 */
static void assert_commit_histograms(const jw_store_stats *st)
{
    assert_int_equal(st->commit_us.count, st->commits);
    assert_int_equal(jw_hist_cumulative(&st->commit_us, st->commit_us.spec->n), st->commits);
    assert_true(st->commit_us.sum > 0);
    assert_int_equal(st->commit_batches.count, st->commits);
    assert_int_equal(st->commit_batches.sum, st->batches_committed);
    assert_int_equal(st->commit_deltas.count, st->commits);
    assert_int_equal(st->commit_deltas.sum, st->deltas_committed);
}

static void test_migrations_idempotent(void **state)
{
    char err[512];

    (void)state;
    assert_int_equal(jw_db_migration_count(),
                     (int)pgtest_int(db, "SELECT count(*) FROM schema_migrations", 0, NULL));
    /* A second and third run change nothing and succeed. */
    assert_int_equal(jw_db_migrate(conninfo, err, sizeof(err)), 0);
    assert_int_equal(jw_db_migrate(conninfo, err, sizeof(err)), 0);
    assert_int_equal(jw_db_migration_count(),
                     (int)pgtest_int(db, "SELECT count(*) FROM schema_migrations", 0, NULL));
    /* The tables DESIGN.md names exist, and otp_requests has no OTP value. */
    assert_int_equal(5, pgtest_int(db,
                                   "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND "
                                   "tablename IN ('job_runs','job_steps','otp_requests',"
                                   "'auth_sessions','job_events')",
                                   0, NULL));
    assert_int_equal(0, pgtest_int(db,
                                   "SELECT count(*) FROM information_schema.columns WHERE "
                                   "table_name = 'otp_requests' AND column_name LIKE '%value%'",
                                   0, NULL));
    assert_int_equal(0, pgtest_int(db,
                                   "SELECT count(*) FROM information_schema.columns WHERE "
                                   "table_name = 'auth_sessions' AND column_name = 'auth_token'",
                                   0, NULL));
}

static void test_migration_edit_refused(void **state)
{
    char err[512], saved[65];
    const char *p[1] = {saved};
    PGresult *r;

    (void)state;
    r = pgtest_exec(db, "SELECT sha256 FROM schema_migrations WHERE name = '001_initial'", 0, NULL);
    snprintf(saved, sizeof(saved), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    /* As if 001_initial.sql had been edited after it was applied. */
    PQclear(pgtest_exec(db, "UPDATE schema_migrations SET sha256 = 'x' WHERE name = '001_initial'",
                        0, NULL));
    assert_int_equal(jw_db_migrate(conninfo, err, sizeof(err)), JW_EMIGRATE);
    assert_non_null(strstr(err, "001_initial was changed"));
    PQclear(pgtest_exec(db, "UPDATE schema_migrations SET sha256 = $1 WHERE name = '001_initial'",
                        1, p));
    assert_int_equal(jw_db_migrate(conninfo, err, sizeof(err)), 0);
}

static void test_write_and_read_back(void **state)
{
    char job[JW_UUID_LEN + 1], step[JW_UUID_LEN + 1], otp[JW_UUID_LEN + 1];
    char err[512], *row;
    jw_store *s = start_store(0);
    jw_batch *b = new_job_batch(job);
    const char *p[1] = {job};
    PGresult *r;

    (void)state;
    jw_uuid_new(step);
    jw_uuid_new(otp);
    row = pgtest_step_row(step, job, "gyftr_login", "in_progress");
    jw_batch_add(b, pgtest_delta(job, step, 2, JW_TABLE_JOB_STEPS, JW_OP_INSERT, row));
    free(row);
    row = pgtest_step_row(step, job, "gyftr_login", "waiting_otp");
    jw_batch_add(b, pgtest_delta(job, step, 3, JW_TABLE_JOB_STEPS, JW_OP_UPDATE, row));
    free(row);
    row = pgtest_otp_row(otp, job, step, "requested");
    jw_batch_add(b, pgtest_delta(job, otp, 4, JW_TABLE_OTP_REQUESTS, JW_OP_INSERT, row));
    free(row);
    jw_batch_add(b, job_update(job, 5, "validating", 5));
    assert_int_equal(commit_one(s, b, err, sizeof(err)), 0);

    /* Rows hold the newest version; the journal holds every version. */
    assert_int_equal(last_seq_of(job), 5);
    assert_int_equal(events_of(job), 5);
    r = pgtest_exec(db,
                    "SELECT j.status, j.progress_percentage, s.status, o.status, o.max_attempts, "
                    "j.metadata->>'source' FROM job_runs j JOIN job_steps s ON s.job_run_id = j.id "
                    "JOIN otp_requests o ON o.job_step_id = s.id WHERE j.id = $1",
                    1, p);
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), "validating");
    assert_string_equal(PQgetvalue(r, 0, 1), "5");
    assert_string_equal(PQgetvalue(r, 0, 2), "waiting_otp");
    assert_string_equal(PQgetvalue(r, 0, 3), "requested");
    assert_string_equal(PQgetvalue(r, 0, 4), "3");
    assert_string_equal(PQgetvalue(r, 0, 5), "test");
    PQclear(r);
    r = pgtest_exec(db,
                    "SELECT seq, table_name, op, row_data->>'status' FROM job_events "
                    "WHERE job_run_id = $1 ORDER BY seq",
                    1, p);
    assert_int_equal(PQntuples(r), 5);
    assert_string_equal(PQgetvalue(r, 0, 1), "job_runs");
    assert_string_equal(PQgetvalue(r, 0, 2), "INSERT");
    assert_string_equal(PQgetvalue(r, 1, 3), "in_progress");
    assert_string_equal(PQgetvalue(r, 2, 3), "waiting_otp");
    assert_string_equal(PQgetvalue(r, 3, 1), "otp_requests");
    assert_string_equal(PQgetvalue(r, 4, 2), "UPDATE");
    PQclear(r);

    jw_store_stats st;
    jw_store_get_stats(s, &st);
    assert_true(st.connected);
    assert_int_equal(st.batches_committed, 1);
    assert_int_equal(st.deltas_committed, 5);
    assert_int_equal(st.queued_batches, 0);
    assert_int_equal(st.commits, 1);
    assert_commit_histograms(&st);
    /* One group of one batch of five deltas: le=1 and le=8 (not le=4). */
    assert_int_equal(st.commit_batches.bucket[0], 1);
    assert_int_equal(jw_hist_cumulative(&st.commit_deltas, 2), 0);
    assert_int_equal(jw_hist_cumulative(&st.commit_deltas, 3), 1);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/*
 * A group that only updates rows an earlier group inserted, some twice: the
 * newest version of each lands, in every table.
 */
static void test_update_only_group(void **state)
{
    char job[JW_UUID_LEN + 1], step[JW_UUID_LEN + 1], otp[JW_UUID_LEN + 1], *row;
    jw_store *s = start_store(0);
    jw_batch *b = new_job_batch(job);
    const char *p[1] = {job};
    PGresult *r;

    (void)state;
    jw_uuid_new(step);
    jw_uuid_new(otp);
    row = pgtest_step_row(step, job, "gyftr_login", "in_progress");
    jw_batch_add(b, pgtest_delta(job, step, 2, JW_TABLE_JOB_STEPS, JW_OP_INSERT, row));
    free(row);
    row = pgtest_otp_row(otp, job, step, "requested");
    jw_batch_add(b, pgtest_delta(job, otp, 3, JW_TABLE_OTP_REQUESTS, JW_OP_INSERT, row));
    free(row);
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    /* Two versions of each row in one group: the newest one lands. */
    b = jw_batch_new();
    row = pgtest_step_row(step, job, "gyftr_login", "waiting_otp");
    jw_batch_add(b, pgtest_delta(job, step, 4, JW_TABLE_JOB_STEPS, JW_OP_UPDATE, row));
    free(row);
    row = pgtest_otp_row(otp, job, step, "received");
    jw_batch_add(b, pgtest_delta(job, otp, 5, JW_TABLE_OTP_REQUESTS, JW_OP_UPDATE, row));
    free(row);
    row = pgtest_step_row(step, job, "gyftr_login", "completed");
    jw_batch_add(b, pgtest_delta(job, step, 6, JW_TABLE_JOB_STEPS, JW_OP_UPDATE, row));
    free(row);
    row = pgtest_otp_row(otp, job, step, "verified");
    jw_batch_add(b, pgtest_delta(job, otp, 7, JW_TABLE_OTP_REQUESTS, JW_OP_UPDATE, row));
    free(row);
    jw_batch_add(b, job_update(job, 8, "processing", 40));
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    assert_int_equal(last_seq_of(job), 8);
    assert_int_equal(events_of(job), 8);
    r = pgtest_exec(db,
                    "SELECT j.status, j.progress_percentage, s.status, o.status FROM job_runs j "
                    "JOIN job_steps s ON s.job_run_id = j.id JOIN otp_requests o "
                    "ON o.job_step_id = s.id WHERE j.id = $1",
                    1, p);
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), "processing");
    assert_string_equal(PQgetvalue(r, 0, 1), "40");
    assert_string_equal(PQgetvalue(r, 0, 2), "completed");
    assert_string_equal(PQgetvalue(r, 0, 3), "verified");
    PQclear(r);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_timestamp_exact(void **state)
{
    char job[JW_UUID_LEN + 1], user[JW_UUID_LEN + 1], *row;
    jw_store *s = start_store(0);
    jw_batch *b = jw_batch_new();
    const char *p[1] = {job};
    jw_delta *d;

    (void)state;
    jw_uuid_new(job);
    jw_uuid_new(user);
    row = pgtest_job_row(job, user, "initiated", 0);
    d = jw_delta_new(job, job, 1, 1795687200123457LL, JW_TABLE_JOB_RUNS, JW_OP_INSERT, row,
                     strlen(row), NULL);
    free(row);
    jw_batch_add(b, d);
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    /* Microseconds survive the trip exactly. */
    assert_int_equal(1795687200123457LL,
                     pgtest_int(db,
                                "SELECT (extract(epoch FROM ts) * 1000000)::bigint FROM "
                                "job_events WHERE job_run_id = $1",
                                1, p));
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_duplicate_seq_refused(void **state)
{
    char job[JW_UUID_LEN + 1], err[512];
    jw_store *s = start_store(0);
    jw_batch *b;

    (void)state;
    assert_int_equal(commit_one(s, new_job_batch(job), NULL, 0), 0);
    b = jw_batch_new();
    jw_batch_add(b, job_update(job, 2, "validating", 1));
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    /* seq 2 again: the primary key of job_events refuses it. */
    b = jw_batch_new();
    jw_batch_add(b, job_update(job, 2, "processing", 50));
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_EDB);
    assert_non_null(strstr(err, "job_events_pkey"));
    /* Nothing of the refused batch landed. */
    assert_int_equal(last_seq_of(job), 2);
    assert_int_equal(events_of(job), 2);
    {
        const char *p[1] = {job};
        PGresult *r = pgtest_exec(db, "SELECT status FROM job_runs WHERE id = $1", 1, p);

        assert_string_equal(PQgetvalue(r, 0, 0), "validating");
        PQclear(r);
    }
    jw_store_stats st;
    jw_store_get_stats(s, &st);
    assert_int_equal(st.batches_failed, 1);
    assert_non_null(strstr(st.last_error, "job_events_pkey"));
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/*
 * Deleting a job deletes its journal (migration 009's trigger, which replaced
 * the foreign key's ON DELETE CASCADE), and nobody else's.
 */
static void test_deleting_a_job_deletes_its_journal(void **state)
{
    char gone[JW_UUID_LEN + 1], kept[JW_UUID_LEN + 1];
    const char *p[1] = {gone};
    jw_store *s = start_store(0);
    jw_batch *b;

    (void)state;
    assert_int_equal(commit_one(s, new_job_batch(gone), NULL, 0), 0);
    assert_int_equal(commit_one(s, new_job_batch(kept), NULL, 0), 0);
    b = jw_batch_new();
    jw_batch_add(b, job_update(gone, 2, "validating", 1));
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    assert_int_equal(events_of(gone), 2);
    PQclear(pgtest_exec(db, "DELETE FROM job_runs WHERE id = $1", 1, p));
    assert_int_equal(events_of(gone), 0);
    assert_int_equal(events_of(kept), 1);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_gap_refused(void **state)
{
    char job[JW_UUID_LEN + 1], err[512];
    jw_store *s = start_store(0);
    jw_batch *b;

    (void)state;
    assert_int_equal(commit_one(s, new_job_batch(job), NULL, 0), 0);
    b = jw_batch_new();
    jw_batch_add(b, job_update(job, 3, "validating", 1)); /* seq 2 is missing */
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_EDB);
    assert_non_null(strstr(err, "seq gap"));
    assert_non_null(strstr(err, job));
    assert_int_equal(events_of(job), 1);
    /* A gap inside one batch is refused too, before it reaches PostgreSQL. */
    b = jw_batch_new();
    jw_batch_add(b, job_update(job, 2, "validating", 1));
    jw_batch_add(b, job_update(job, 4, "validating", 2));
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_EDB);
    assert_non_null(strstr(err, "seq 4 follows seq 2"));
    /* The right next seq still goes through. */
    b = jw_batch_new();
    jw_batch_add(b, job_update(job, 2, "validating", 1));
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    assert_int_equal(last_seq_of(job), 2);
    /* A delta for a job that was never created is refused. */
    char ghost[JW_UUID_LEN + 1];
    jw_uuid_new(ghost);
    b = jw_batch_new();
    {
        char step[JW_UUID_LEN + 1], *row;

        jw_uuid_new(step);
        row = pgtest_step_row(step, ghost, "gyftr_login", "pending");
        jw_batch_add(b, pgtest_delta(ghost, step, 1, JW_TABLE_JOB_STEPS, JW_OP_INSERT, row));
        free(row);
    }
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_EDB);
    assert_non_null(strstr(err, "foreign key"));
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/*
 * Many batches submitted at once share transactions; one bad batch among them
 * fails alone while every other batch of its group commits.
 */
static void test_group_commit_isolates_bad_batch(void **state)
{
    enum { N = 60, BAD = 30 };
    char jobs[N][JW_UUID_LEN + 1];
    jw_batch *sent[N], *ans[N];
    jw_store *s = start_store(0);
    jw_store_stats st;

    (void)state;
    for (int i = 0; i < N; i++) {
        sent[i] = new_job_batch(jobs[i]);
        if (i == BAD) {
            /* A job row whose user_id is not a UUID: PostgreSQL refuses it. */
            char *row = pgtest_job_row(jobs[i], "not-a-uuid", "initiated", 0);

            jw_batch_free(sent[i]);
            sent[i] = jw_batch_new();
            jw_batch_add(sent[i],
                         pgtest_delta(jobs[i], jobs[i], 1, JW_TABLE_JOB_RUNS, JW_OP_INSERT, row));
            free(row);
        }
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(jw_store_submit(s, sent[i]), 0);
    assert_int_equal(pgtest_collect(s, ans, N, 20000), N);
    for (int i = 0; i < N; i++) {
        /* Answers come back in submission order. */
        assert_ptr_equal(ans[i], sent[i]);
        if (i == BAD) {
            assert_int_equal(ans[i]->status, JW_EDB);
            assert_non_null(strstr(ans[i]->error, "uuid"));
        } else {
            assert_int_equal(ans[i]->status, 0);
            assert_int_equal(last_seq_of(jobs[i]), 1);
        }
        jw_batch_free(ans[i]);
    }
    jw_store_get_stats(s, &st);
    assert_int_equal(st.batches_committed, N - 1);
    assert_int_equal(st.batches_failed, 1);
    /* Fewer transactions than batches: the batches were grouped. */
    assert_true(st.commits < (uint64_t)(N - 1));
    /* The refused batch's transactions are not commits, nor observed. */
    assert_commit_histograms(&st);
    /* ...and the size histogram saw a group of more than one batch. */
    assert_true(st.commit_batches.bucket[0] < st.commit_batches.count);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_order_kept(void **state)
{
    enum { N = 300 };
    char job[JW_UUID_LEN + 1];
    jw_batch *ans[N + 1], *first;
    jw_store *s = start_store(7); /* small groups: many transactions in a row */
    const char *p[1] = {job};
    PGresult *r;

    (void)state;
    first = new_job_batch(job);
    assert_int_equal(jw_store_submit(s, first), 0);
    for (int i = 1; i <= N; i++) {
        jw_batch *b = jw_batch_new();

        jw_batch_add(b, job_update(job, i + 1, "processing", i % 101));
        assert_int_equal(jw_store_submit(s, b), 0);
    }
    assert_int_equal(pgtest_collect(s, ans, N + 1, 20000), N + 1);
    for (int i = 0; i <= N; i++) {
        assert_int_equal(ans[i]->status, 0);
        assert_int_equal(ans[i]->deltas[0]->seq, i + 1);
        jw_batch_free(ans[i]);
    }
    assert_int_equal(last_seq_of(job), N + 1);
    r = pgtest_exec(db,
                    "SELECT min(seq), max(seq), count(DISTINCT seq), "
                    "bool_and(seq = rn) FROM (SELECT seq, row_number() OVER (ORDER BY seq) rn "
                    "FROM job_events WHERE job_run_id = $1) x",
                    1, p);
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    assert_int_equal(atoi(PQgetvalue(r, 0, 1)), N + 1);
    assert_int_equal(atoi(PQgetvalue(r, 0, 2)), N + 1);
    assert_string_equal(PQgetvalue(r, 0, 3), "t");
    PQclear(r);
    /* The row is the last version written. */
    assert_int_equal(
        N % 101, pgtest_int(db, "SELECT progress_percentage FROM job_runs WHERE id = $1", 1, p));
    {
        jw_store_stats st;

        jw_store_get_stats(s, &st);
        assert_commit_histograms(&st);
        /* max_group_deltas 7: no group above the le=8 bucket. */
        assert_int_equal(st.commit_deltas.spec->le[3], 8);
        assert_int_equal(jw_hist_cumulative(&st.commit_deltas, 3), st.commits);
    }
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_bad_values(void **state)
{
    char job[JW_UUID_LEN + 1], err[512];
    jw_store *s = start_store(0);
    jw_batch *b;
    char *big;
    int code = 0;

    (void)state;
    /* Refused before they reach the store. */
    assert_null(
        jw_delta_new("1234", "1234", 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, "{}", 2, &code));
    assert_int_equal(code, JW_EINVAL);
    big = malloc(JW_DELTA_MAX_ROW + 10);
    memset(big, 'x', JW_DELTA_MAX_ROW + 10);
    jw_uuid_new(job);
    assert_null(jw_delta_new(job, job, 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, big,
                             JW_DELTA_MAX_ROW + 10, &code));
    assert_int_equal(code, JW_ETOOBIG);
    free(big);
    b = jw_batch_new();
    assert_int_equal(jw_store_submit(s, b), JW_EINVAL); /* empty */
    jw_batch_free(b);

    /* Refused by PostgreSQL and reported back with its reason. */
    b = jw_batch_new();
    jw_batch_add(b, pgtest_delta(job, job, 1, JW_TABLE_JOB_RUNS, JW_OP_INSERT, "{not json"));
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_EDB);
    assert_non_null(strstr(err, "json"));
    b = jw_batch_new();
    jw_batch_add(b, pgtest_delta(job, job, 1, JW_TABLE_JOB_RUNS, JW_OP_INSERT,
                                 "{\"id\":\"x\",\"status\":\"initiated\"}"));
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_EDB);
    assert_non_null(strstr(err, "uuid"));
    {
        char user[JW_UUID_LEN + 1], *row;

        jw_uuid_new(user);
        row = pgtest_job_row(job, user, "exploded", 0); /* not a job status */
        b = jw_batch_new();
        jw_batch_add(b, pgtest_delta(job, job, 1, JW_TABLE_JOB_RUNS, JW_OP_INSERT, row));
        free(row);
        assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_EDB);
        assert_non_null(strstr(err, "check constraint"));
    }
    assert_int_equal(events_of(job), 0);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_quiet_rows(void **state)
{
    char id[JW_UUID_LEN + 1], user[JW_UUID_LEN + 1], row[512];
    jw_store *s = start_store(0);
    jw_batch *b = jw_batch_new();
    const char *p[1] = {id};
    char expires[40];

    (void)state;
    jw_uuid_new(id);
    jw_uuid_new(user);
    /* Valid for a day from now, whenever the suite runs. */
    jw_format_ts(jw_now_us() + INT64_C(86400) * 1000000, expires, sizeof(expires));
    snprintf(row, sizeof(row),
             "{\"id\":\"%s\",\"user_id\":\"%s\",\"session_type\":\"gyftr\","
             "\"auth_token_enc\":\"\\\\x00ff\",\"browser_context_id\":null,\"session_data\":{},"
             "\"created_at\":\"2026-11-26T10:00:00Z\",\"expires_at\":\"%s\","
             "\"last_used_at\":null,\"is_active\":true}",
             id, user, expires);
    jw_batch_add(b, pgtest_delta("", id, 0, JW_TABLE_AUTH_SESSIONS, JW_OP_INSERT, row));
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    assert_int_equal(2, pgtest_int(db,
                                   "SELECT octet_length(auth_token_enc) FROM auth_sessions "
                                   "WHERE id = $1",
                                   1, p));
    /* Reusable at start-up while active and not expired. */
    {
        char err[256];
        json_t *rows = NULL, *it;
        size_t i;
        bool found = false;

        assert_int_equal(jw_db_load_sessions(conninfo, &rows, err, sizeof(err)), 0);
        json_array_foreach(rows, i, it) found |=
            strcmp(json_string_value(json_object_get(it, "id")), id) == 0;
        json_decref(rows);
        assert_true(found);
        PQclear(pgtest_exec(db,
                            "UPDATE auth_sessions SET expires_at = now() - interval '1 s' "
                            "WHERE id = $1",
                            1, p));
        assert_int_equal(jw_db_load_sessions(conninfo, &rows, err, sizeof(err)), 0);
        found = false;
        json_array_foreach(rows, i, it) found |=
            strcmp(json_string_value(json_object_get(it, "id")), id) == 0;
        json_decref(rows);
        assert_false(found);
    }
    /* Stored, not journaled. */
    assert_int_equal(
        0, pgtest_int(db, "SELECT count(*) FROM job_events WHERE row_data->>'id' = $1", 1, p));
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_load_active(void **state)
{
    char active[JW_UUID_LEN + 1], done[JW_UUID_LEN + 1], step[JW_UUID_LEN + 1], err[512];
    jw_store *s = start_store(0);
    jw_batch *b = new_job_batch(active);
    json_t *jobs = NULL, *mine = NULL;
    int64_t others = 0;
    size_t i;
    json_t *it;
    char *row;

    (void)state;
    jw_uuid_new(step);
    row = pgtest_step_row(step, active, "amazon_login", "in_progress");
    jw_batch_add(b, pgtest_delta(active, step, 2, JW_TABLE_JOB_STEPS, JW_OP_INSERT, row));
    free(row);
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    b = new_job_batch(done);
    jw_batch_add(b, job_update(done, 2, "completed", 100));
    assert_int_equal(commit_one(s, b, NULL, 0), 0);

    /* As node "local" (the store's default): it claims the job, epoch 0 -> 1. */
    assert_int_equal(jw_db_load_active(conninfo, "local", 10000, &jobs, &others, err, sizeof(err)),
                     0);
    json_array_foreach(jobs, i, it)
    {
        const char *id = json_string_value(json_object_get(json_object_get(it, "job"), "id"));

        assert_string_not_equal(id, done); /* finished jobs are not loaded */
        if (strcmp(id, active) == 0)
            mine = it;
    }
    assert_non_null(mine);
    assert_int_equal(json_integer_value(json_object_get(mine, "last_seq")), 2);
    assert_int_equal(json_array_size(json_object_get(mine, "steps")), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(mine, "steps"), 0), "step_name")),
                        "amazon_login");
    assert_int_equal(json_array_size(json_object_get(mine, "otp_requests")), 0);
    assert_int_equal(json_integer_value(json_object_get(mine, "lease_epoch")), 1);
    json_decref(jobs);

    /* The claim fences the epoch it replaced: a batch under epoch 0 is refused... */
    b = jw_batch_new();
    jw_batch_add(b, job_update(active, 3, "validating", 5));
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_ECONFLICT);
    assert_non_null(strstr(err, "lease lost"));
    assert_int_equal(last_seq_of(active), 2);
    /* ...and one under the claimed epoch commits. */
    b = jw_batch_new();
    b->lease_epoch = 1;
    jw_batch_add(b, job_update(active, 3, "validating", 5));
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    assert_int_equal(last_seq_of(active), 3);

    /* A job of a live other node is left to it; one of a dead node is taken. */
    {
        const char *p[1] = {active};

        PQclear(pgtest_exec(db,
                            "INSERT INTO jw_nodes (id, incarnation) VALUES ('live', 1), "
                            "('gone', 1) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), "
                            "dead = false",
                            0, NULL));
        PQclear(pgtest_exec(db, "UPDATE job_runs SET owner_node = 'live' WHERE id = $1", 1, p));
        assert_int_equal(
            jw_db_load_active(conninfo, "local", 10000, &jobs, &others, err, sizeof(err)), 0);
        json_array_foreach(jobs, i, it) assert_string_not_equal(
            json_string_value(json_object_get(json_object_get(it, "job"), "id")), active);
        assert_true(others >= 1);
        json_decref(jobs);
        /* 'live' stops beating: past the TTL it is marked dead and its job claimed.
         * 'patient', as silent but registered with a TTL of two hours, is judged by
         * its own TTL, not by ours: it stays alive. */
        PQclear(pgtest_exec(db,
                            "UPDATE jw_nodes SET heartbeat_at = now() - interval '1 hour' "
                            "WHERE id = 'live'",
                            0, NULL));
        PQclear(pgtest_exec(db,
                            "INSERT INTO jw_nodes (id, incarnation, ttl_ms, heartbeat_at) VALUES "
                            "('patient', 1, 7200000, now() - interval '1 hour') ON CONFLICT (id) "
                            "DO UPDATE SET heartbeat_at = now() - interval '1 hour', dead = false",
                            0, NULL));
        assert_int_equal(
            jw_db_load_active(conninfo, "local", 10000, &jobs, &others, err, sizeof(err)), 0);
        mine = NULL;
        json_array_foreach(
            jobs, i,
            it) if (strcmp(json_string_value(json_object_get(json_object_get(it, "job"), "id")),
                           active) == 0) mine = it;
        assert_non_null(mine);
        assert_int_equal(json_integer_value(json_object_get(mine, "lease_epoch")), 2);
        json_decref(jobs);
        assert_int_equal(
            pgtest_int(db, "SELECT count(*) FROM jw_nodes WHERE id = 'live' AND dead", 0, NULL), 1);
        assert_int_equal(
            pgtest_int(db, "SELECT count(*) FROM jw_nodes WHERE id = 'patient' AND dead", 0, NULL),
            0);
    }
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/*
 * The fence: another node takes a job over (owner and epoch move); this
 * node's next batch of it is refused as a lost lease and nothing of it is
 * committed, while the other jobs' batches of the same group commit.
 */
static void test_lease_fence(void **state)
{
    enum { N = 40, TAKEN = 17 };
    char jobs[N][JW_UUID_LEN + 1];
    jw_batch *sent[N], *ans[N];
    jw_store *s = start_store(0);
    const char *p[1];

    (void)state;
    for (int i = 0; i < N; i++) {
        sent[i] = new_job_batch(jobs[i]);
        sent[i]->lease_epoch = 1;
        assert_int_equal(jw_store_submit(s, sent[i]), 0);
    }
    assert_int_equal(pgtest_collect(s, ans, N, 20000), N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ans[i]->status, 0);
        jw_batch_free(ans[i]);
    }
    p[0] = jobs[TAKEN];
    /* The creating node took each new job's lease with its first batch. */
    assert_int_equal(pgtest_int(db,
                                "SELECT count(*) FROM job_runs WHERE id = $1 AND "
                                "owner_node = 'local' AND lease_epoch = 1",
                                1, p),
                     1);
    /* Another node takes one job over, as recovery's claim does. */
    PQclear(pgtest_exec(db,
                        "UPDATE job_runs SET owner_node = 'other', lease_epoch = lease_epoch + 1 "
                        "WHERE id = $1",
                        1, p));
    for (int i = 0; i < N; i++) {
        sent[i] = jw_batch_new();
        sent[i]->lease_epoch = 1;
        jw_batch_add(sent[i], job_update(jobs[i], 2, "validating", 5));
        assert_int_equal(jw_store_submit(s, sent[i]), 0);
    }
    assert_int_equal(pgtest_collect(s, ans, N, 20000), N);
    for (int i = 0; i < N; i++) {
        assert_ptr_equal(ans[i], sent[i]);
        if (i == TAKEN) {
            assert_int_equal(ans[i]->status, JW_ECONFLICT);
            assert_non_null(strstr(ans[i]->error, "lease lost"));
            assert_non_null(strstr(ans[i]->error, jobs[i]));
            assert_int_equal(last_seq_of(jobs[i]), 1);
            assert_int_equal(events_of(jobs[i]), 1);
        } else {
            assert_int_equal(ans[i]->status, 0);
            assert_int_equal(last_seq_of(jobs[i]), 2);
        }
        jw_batch_free(ans[i]);
    }
    /* The row upsert of the refused batch rolled back with it; the lease stays moved. */
    assert_int_equal(pgtest_int(db,
                                "SELECT count(*) FROM job_runs WHERE id = $1 AND status = "
                                "'initiated' AND owner_node = 'other' AND lease_epoch = 2",
                                1, p),
                     1);
    /* The same node under a wrong epoch is refused too; a gap is still a gap. */
    {
        char err[512];
        jw_batch *b = jw_batch_new();

        b->lease_epoch = 9;
        jw_batch_add(b, job_update(jobs[0], 3, "validating", 6));
        assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_ECONFLICT);
        b = jw_batch_new();
        b->lease_epoch = 1;
        jw_batch_add(b, job_update(jobs[0], 5, "validating", 6));
        assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_EDB);
        assert_non_null(strstr(err, "seq gap"));
        assert_int_equal(last_seq_of(jobs[0]), 2);
    }
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/*
 * Two processes with one node id (a restart while the old process runs):
 * once the newer registered the next incarnation, the older commits
 * nothing - not even a brand-new job, which no epoch fences - and its
 * batches are refused as lost leases.
 */
static void test_stale_incarnation_commits_nothing(void **state)
{
    char job[JW_UUID_LEN + 1], fresh[JW_UUID_LEN + 1], err[512];
    int64_t inc = 0, newer = 0;
    jw_store_config cfg = {.conninfo = conninfo, .node_id = "twin", .node_ttl_ms = 60000};
    jw_store *s = NULL;
    jw_batch *b;

    (void)state;
    assert_int_equal(jw_db_node_register(conninfo, "twin", 60000, &inc, err, sizeof(err)), 0);
    cfg.node_incarnation = inc;
    assert_int_equal(jw_store_start(&s, &cfg), 0);
    b = new_job_batch(job);
    b->lease_epoch = 1;
    assert_int_equal(commit_one(s, b, err, sizeof(err)), 0);
    /* The newer process registers: same id, the next incarnation. */
    assert_int_equal(jw_db_node_register(conninfo, "twin", 60000, &newer, err, sizeof(err)), 0);
    assert_int_equal(newer, inc + 1);
    b = new_job_batch(fresh);
    b->lease_epoch = 1;
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_ECONFLICT);
    assert_non_null(strstr(err, "is not the live one"));
    assert_int_equal(events_of(fresh), 0);
    {
        const char *p[1] = {fresh};

        assert_int_equal(pgtest_int(db, "SELECT count(*) FROM job_runs WHERE id = $1", 1, p), 0);
    }
    b = jw_batch_new();
    b->lease_epoch = 1;
    jw_batch_add(b, job_update(job, 2, "validating", 5));
    assert_int_equal(commit_one(s, b, err, sizeof(err)), JW_ECONFLICT);
    assert_int_equal(last_seq_of(job), 1);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/* Appends "<channel> <payload>" lines for every notification db has received. */
static void log_notifies(jw_buf *log)
{
    PGnotify *n;

    assert_int_equal(PQconsumeInput(db), 1);
    while ((n = PQnotifies(db)) != NULL) {
        jw_buf_addf(log, "%s %s\n", n->relname, n->extra);
        PQfreemem(n);
    }
}

/* Waits up to 10 s for text in the log of notifications; its offset there. */
static size_t wait_logged(jw_buf *log, const char *text)
{
    int64_t deadline = jw_mono_us() + 10 * 1000000;
    const char *at;

    for (;;) {
        log_notifies(log);
        if (log->len && (at = strstr(log->data, text)) != NULL)
            return (size_t)(at - log->data);
        assert_true(jw_mono_us() < deadline);
        usleep(5000);
    }
}

/* The store's stats once its heartbeat was sent after `after` (monotonic). */
static void stats_after_beat(jw_store *s, int64_t after, jw_store_stats *st)
{
    int64_t deadline = jw_mono_us() + 10 * 1000000;

    for (;;) {
        jw_store_get_stats(s, st);
        if (st->heartbeat_us > after)
            return;
        assert_true(jw_mono_us() < deadline);
        usleep(5000);
    }
}

/*
 * The store's stats once it dealt with the notification of `groups`
 * committed groups (sent or skipped: that follows the answer).
 */
static void stats_after_groups(jw_store *s, uint64_t groups, jw_store_stats *st)
{
    int64_t deadline = jw_mono_us() + 10 * 1000000;

    for (;;) {
        jw_store_get_stats(s, st);
        if (st->notifications + st->notifications_skipped + st->notifications_failed >= groups)
            return;
        assert_true(jw_mono_us() < deadline);
        usleep(2000);
    }
}

/* A brand-new job committed as the node's first lease epoch. */
static void commit_new_job(jw_store *s)
{
    char job[JW_UUID_LEN + 1], err[512];
    jw_batch *b = new_job_batch(job);

    b->lease_epoch = 1;
    assert_int_equal(commit_one(s, b, err, sizeof(err)), 0);
}

/* A store of node `me` registered alone (other tests' nodes declared dead), after its
 * first heartbeat; db LISTENs jw_events and jw_hello. */
static jw_store *start_alone(char *me, int ttl_ms)
{
    char err[512];
    int64_t inc = 0, mark;
    jw_store_config cfg = {.conninfo = conninfo, .node_id = me, .node_ttl_ms = ttl_ms};
    jw_store_stats st;
    jw_store *s = NULL;

    PQclear(pgtest_exec(db, "UPDATE jw_nodes SET dead = true", 0, NULL));
    PQclear(pgtest_exec(db, "LISTEN jw_events", 0, NULL));
    PQclear(pgtest_exec(db, "LISTEN jw_hello", 0, NULL));
    assert_int_equal(jw_db_node_register(conninfo, me, ttl_ms, &inc, err, sizeof(err)), 0);
    cfg.node_incarnation = inc;
    mark = jw_mono_us();
    assert_int_equal(jw_store_start(&s, &cfg), 0);
    stats_after_beat(s, mark, &st);
    return s;
}

static void stop_alone(jw_store *s, jw_buf *log)
{
    jw_store_stop(s, 1000);
    jw_store_free(s);
    PQclear(pgtest_exec(db, "UNLISTEN *", 0, NULL));
    PQclear(pgtest_exec(db, "UPDATE jw_nodes SET dead = true", 0, NULL));
    jw_buf_release(log);
}

/*
 * Alone on its database (db/commit.c, "Alone"), a node's commits notify
 * nobody. A peer's hello (jw_store_peer_joined) makes it say hello in turn -
 * after its silent commits, before its next notification - and notify again.
 * The TTL is long: no heartbeat comes during the test, only the hello acts.
 */
static void test_alone_hello_wakes(void **state)
{
    char me[] = "alone-hello";
    jw_store *s = start_alone(me, 60000);
    jw_store_stats st;
    size_t hello, events;
    jw_buf log;

    (void)state;
    jw_buf_init(&log, 1024);
    commit_new_job(s);
    commit_new_job(s);
    stats_after_groups(s, 2, &st);
    assert_int_equal(st.notifications, 0);
    assert_int_equal(st.notifications_skipped, 2);
    PQclear(pgtest_exec(db, "SELECT 1", 0, NULL));
    log_notifies(&log);
    assert_null(log.len ? strstr(log.data, "jw_events ") : NULL);
    assert_null(log.len ? strstr(log.data, "jw_hello ") : NULL);

    jw_store_peer_joined(s);
    hello = wait_logged(&log, "jw_hello alone-hello\n");
    commit_new_job(s);
    events = wait_logged(&log, "jw_events alone-hello\n");
    assert_true(hello < events);
    stats_after_groups(s, 3, &st);
    assert_int_equal(st.notifications, 1);
    assert_int_equal(st.notifications_skipped, 2);
    stop_alone(s, &log);
}

/*
 * A peer that said nothing (its hello missed): while alone the store looks
 * for one every second, and with a live one says hello - it committed
 * silently - and notifies again. Heartbeats (a 1.2 s TTL: every 400 ms) find
 * it too, and find it gone once it is declared dead: alone again.
 */
static void test_alone_finds_peers(void **state)
{
    char me[] = "alone-poll", beat[] = "alone-beat";
    jw_store *s = start_alone(me, 60000);
    jw_store_stats st;
    jw_buf log;

    (void)state;
    jw_buf_init(&log, 1024);
    commit_new_job(s);
    stats_after_groups(s, 1, &st);
    assert_int_equal(st.notifications_skipped, 1);
    /* The heartbeat is 20 s away: the one-second look finds the peer. */
    PQclear(
        pgtest_exec(db, "INSERT INTO jw_nodes (id, incarnation) VALUES ('peer-a', 1)", 0, NULL));
    wait_logged(&log, "jw_hello alone-poll\n");
    commit_new_job(s);
    wait_logged(&log, "jw_events alone-poll\n");
    stats_after_groups(s, 2, &st);
    assert_int_equal(st.notifications, 1);
    stop_alone(s, &log);

    /* With heartbeats: notifying while the peer lives, alone once it is dead. */
    s = start_alone(beat, 1200);
    jw_buf_init(&log, 1024);
    commit_new_job(s);
    stats_after_groups(s, 1, &st);
    assert_int_equal(st.notifications_skipped, 1);
    PQclear(pgtest_exec(db, "UPDATE jw_nodes SET dead = false WHERE id = 'peer-a'", 0, NULL));
    wait_logged(&log, "jw_hello alone-beat\n");
    commit_new_job(s);
    wait_logged(&log, "jw_events alone-beat\n");
    PQclear(pgtest_exec(db, "UPDATE jw_nodes SET dead = true WHERE id = 'peer-a'", 0, NULL));
    stats_after_beat(s, jw_mono_us(), &st);
    commit_new_job(s);
    stats_after_groups(s, 3, &st);
    assert_int_equal(st.notifications, 1);
    assert_int_equal(st.notifications_skipped, 2);
    stop_alone(s, &log);
}

/*
 * A time alone without a commit owes nobody a hello: the store that finds
 * a peer again (here by a hello of the peer's) notifies its next commit
 * without one.
 */
static void test_alone_without_commits_is_quiet(void **state)
{
    char me[] = "alone-quiet";
    jw_store *s = start_alone(me, 60000);
    jw_store_stats st;
    jw_buf log;

    (void)state;
    jw_buf_init(&log, 1024);
    jw_store_peer_joined(s);
    commit_new_job(s);
    /* A hello would have committed before the commit it precedes: it is in the log. */
    wait_logged(&log, "jw_events alone-quiet\n");
    assert_null(strstr(log.data, "jw_hello alone-quiet\n"));
    stats_after_groups(s, 1, &st);
    assert_int_equal(st.notifications, 1);
    assert_int_equal(st.notifications_skipped, 0);
    stop_alone(s, &log);
}

struct hello_seen {
    atomic_int peers, listening;
};

static void count_peer(void *arg)
{
    atomic_fetch_add(&((struct hello_seen *)arg)->peers, 1);
}

static void count_notice(const jw_notice *n, void *arg)
{
    if (n->kind == JW_NOTICE_LISTENING)
        atomic_fetch_add(&((struct hello_seen *)arg)->listening, 1);
}

/* Drains cl until seen->listening reaches want (10 s at most). */
static void wait_listening(jw_cluster *cl, struct hello_seen *seen, int want)
{
    int64_t deadline = jw_mono_us() + 10 * 1000000;

    while (atomic_load(&seen->listening) < want) {
        assert_true(jw_mono_us() < deadline);
        jw_cluster_drain(cl, count_notice, seen);
        usleep(5000);
    }
}

/*
 * The cluster thread says hello once it listens, and on another node's
 * hello tells the store (peer_joined) and posts a catch-up; its own hello
 * it ignores.
 */
static void test_cluster_hello(void **state)
{
    struct hello_seen seen = {0};
    char err[512];
    int64_t inc = 0;
    jw_cluster_config cc = {.conninfo = conninfo,
                            .node_id = "hello-node",
                            .ttl_ms = 60000,
                            .peer_joined = count_peer,
                            .peer_arg = &seen};
    jw_cluster *cl = NULL;
    jw_buf log;

    (void)state;
    jw_buf_init(&log, 256);
    PQclear(pgtest_exec(db, "LISTEN jw_hello", 0, NULL));
    assert_int_equal(jw_db_node_register(conninfo, "hello-node", 60000, &inc, err, sizeof(err)), 0);
    cc.incarnation = inc;
    assert_int_equal(jw_cluster_start(&cl, &cc), 0);
    wait_logged(&log, "jw_hello hello-node\n");
    wait_listening(cl, &seen, 1); /* its first LISTEN */
    assert_int_equal(atomic_load(&seen.peers), 0);

    PQclear(pgtest_exec(db, "NOTIFY jw_hello, 'hello-node'", 0, NULL));
    PQclear(pgtest_exec(db, "NOTIFY jw_hello, 'other-node'", 0, NULL));
    wait_listening(cl, &seen, 2);
    assert_int_equal(atomic_load(&seen.peers), 1); /* the other's hello, not its own */
    usleep(100000);
    jw_cluster_drain(cl, count_notice, &seen);
    assert_int_equal(atomic_load(&seen.listening), 2);

    jw_cluster_stop(cl);
    jw_cluster_free(cl);
    PQclear(pgtest_exec(db, "UNLISTEN *", 0, NULL));
    PQclear(pgtest_exec(db, "UPDATE jw_nodes SET dead = true", 0, NULL));
    jw_buf_release(&log);
}

/*
 * After a lost connection the store asks whether its group committed. A
 * journaled delta of the same job and seq committed by another node (which
 * took the job over) is not this node's commit.
 */
static void test_group_committed_probe_is_ours_only(void **state)
{
    static char local[] = "local";
    char job[JW_UUID_LEN + 1];
    jw_store *s = calloc(1, sizeof(*s));
    jw_batch *b;
    const char *p[1];

    (void)state;
    assert_non_null(s);
    pthread_mutex_init(&s->stats_lock, NULL);
    s->conninfo = conninfo;
    s->node_id = local;
    s->backoff_min_ms = 100;
    assert_true(store__connect(s));

    /* Job committed by us at seq 1 under epoch 1: the probe of it says yes. */
    b = new_job_batch(job);
    b->lease_epoch = 1;
    {
        jw_store *real = start_store(0);

        assert_int_equal(commit_one(real, b, NULL, 0), 0);
        jw_store_stop(real, 1000);
        jw_store_free(real);
    }
    /* The same batch again (job id, seq 1), as the unknown group at the front. */
    b = jw_batch_new();
    b->lease_epoch = 1;
    {
        char *row = pgtest_job_row(job, "00000000-0000-4000-8000-000000000001", "initiated", 0);

        jw_batch_add(b, pgtest_delta(job, job, 1, JW_TABLE_JOB_RUNS, JW_OP_INSERT, row));
        free(row);
    }
    s->pending_head = &b->node;
    assert_int_equal(store__group_committed(s, 1), 1);

    /* Another node takes the job over and journals seq 2 itself. */
    p[0] = job;
    PQclear(pgtest_exec(db,
                        "UPDATE job_runs SET owner_node = 'other', lease_epoch = 2, last_seq = 2 "
                        "WHERE id = $1",
                        1, p));
    PQclear(pgtest_exec(db,
                        "INSERT INTO job_events (job_run_id, seq, ts, table_name, op, row_data) "
                        "VALUES ($1, 2, now(), 'job_runs', 'UPDATE', '{}')",
                        1, p));
    /* Our batch of seq 2 (epoch 1), whose commit outcome we lost: not ours. */
    jw_batch_free(b);
    b = jw_batch_new();
    b->lease_epoch = 1;
    jw_batch_add(b, job_update(job, 2, "validating", 5));
    s->pending_head = &b->node;
    assert_int_equal(store__group_committed(s, 1), 0);

    jw_batch_free(b);
    PQfinish(s->conn);
    pthread_mutex_destroy(&s->stats_lock);
    free(s);
}

struct reads {
    jw_read *got[8];
    size_t n;
};

static void collect_read(jw_read *r, void *arg)
{
    struct reads *rs = arg;

    rs->got[rs->n++] = r;
}

/* Submits one read and waits for its answer (the caller frees it). */
static jw_read *read_one(jw_store *s, jw_read_kind kind, int n, const char *const *params)
{
    struct reads rs = {0};
    int64_t deadline = jw_mono_us() + 10 * 1000000;
    jw_read *r = jw_read_new(kind, n, params);

    assert_non_null(r);
    assert_int_equal(jw_store_read(s, r), 0);
    while (!rs.n && jw_mono_us() < deadline) {
        jw_mono_us();
        jw_store_drain_reads(s, collect_read, &rs);
    }
    assert_int_equal(rs.n, 1);
    assert_ptr_equal(rs.got[0], r);
    return r;
}

static void test_reads(void **state)
{
    char a[JW_UUID_LEN + 1], b[JW_UUID_LEN + 1], step[JW_UUID_LEN + 1], *row;
    jw_store *s = start_store(0);
    jw_batch *batch;
    jw_read *r;
    json_t *doc;

    (void)state;
    batch = new_job_batch(a);
    jw_uuid_new(step);
    row = pgtest_step_row(step, a, "gyftr_login", "pending");
    jw_batch_add(batch, pgtest_delta(a, step, 2, JW_TABLE_JOB_STEPS, JW_OP_INSERT, row));
    free(row);
    assert_int_equal(commit_one(s, batch, NULL, 0), 0);
    batch = new_job_batch(b);
    jw_batch_add(batch, job_update(b, 2, "failed", 40));
    assert_int_equal(commit_one(s, batch, NULL, 0), 0);

    /* One job, as a snapshot at its committed seq. */
    {
        const char *p[1] = {a};

        r = read_one(s, JW_READ_JOB, 1, p);
        assert_int_equal(r->status, 0);
        doc = json_loads(r->result, 0, NULL);
        assert_non_null(doc);
        assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "job"), "id")),
                            a);
        assert_null(json_object_get(json_object_get(doc, "job"), "last_seq"));
        assert_int_equal(json_integer_value(json_object_get(doc, "seq")), 2);
        assert_int_equal(json_array_size(json_object_get(doc, "steps")), 1);
        json_decref(doc);
        jw_read_free(r);
    }
    {
        const char *p[1] = {"eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"};

        r = read_one(s, JW_READ_JOB, 1, p);
        assert_int_equal(r->status, JW_ENOTFOUND);
        jw_read_free(r);
    }
    /* Lists: by status, newest first, and paged with "before". */
    {
        const char *p[4] = {"failed", NULL, NULL, "50"};

        r = read_one(s, JW_READ_JOBS, 4, p);
        assert_int_equal(r->status, 0);
        doc = json_loads(r->result, 0, NULL);
        assert_true(json_array_size(doc) >= 1);
        for (size_t i = 0; i < json_array_size(doc); i++)
            assert_string_equal(
                json_string_value(json_object_get(json_array_get(doc, i), "status")), "failed");
        json_decref(doc);
        jw_read_free(r);
    }
    {
        const char *p[4] = {NULL, NULL, NULL, "2"};
        const char *q[4] = {NULL, NULL, NULL, "1"};
        char first[JW_UUID_LEN + 1], second[JW_UUID_LEN + 1];

        r = read_one(s, JW_READ_JOBS, 4, p);
        doc = json_loads(r->result, 0, NULL);
        assert_int_equal(json_array_size(doc), 2);
        snprintf(first, sizeof(first), "%s",
                 json_string_value(json_object_get(json_array_get(doc, 0), "id")));
        snprintf(second, sizeof(second), "%s",
                 json_string_value(json_object_get(json_array_get(doc, 1), "id")));
        json_decref(doc);
        jw_read_free(r);
        /* The page after the first item starts with the second. */
        q[2] = first;
        r = read_one(s, JW_READ_JOBS, 4, q);
        doc = json_loads(r->result, 0, NULL);
        assert_int_equal(json_array_size(doc), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(doc, 0), "id")),
                            second);
        json_decref(doc);
        jw_read_free(r);
        /* By user: a's owner (a fresh user) has exactly a. */
        {
            const char *pb[1] = {a};
            const char *pu[4] = {NULL, NULL, NULL, "10"};
            json_t *bj;

            r = read_one(s, JW_READ_JOB, 1, pb);
            bj = json_loads(r->result, 0, NULL);
            pu[1] = json_string_value(json_object_get(json_object_get(bj, "job"), "user_id"));
            jw_read_free(r);
            r = read_one(s, JW_READ_JOBS, 4, pu);
            json_decref(bj);
            doc = json_loads(r->result, 0, NULL);
            assert_int_equal(json_array_size(doc), 1);
            assert_string_equal(json_string_value(json_object_get(json_array_get(doc, 0), "id")),
                                a);
            json_decref(doc);
            jw_read_free(r);
        }
    }
    /* Bad input is PostgreSQL's to refuse, and comes back as an error. */
    {
        const char *p[1] = {"not-a-uuid"};

        r = read_one(s, JW_READ_JOB, 1, p);
        assert_int_equal(r->status, JW_EDB);
        assert_non_null(strstr(r->error, "uuid"));
        jw_read_free(r);
    }
    assert_null(jw_read_new(JW_READ_JOB, JW_READ_MAX_PARAMS + 1, NULL));
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/* The jobwire.v1 text of d, as the fan-out sends it (free it). */
static char *encoded(const jw_delta *d)
{
    jw_buf b;

    jw_buf_init(&b, 256);
    jw_delta_encode(d, &b);
    return jw_buf_detach(&b, NULL);
}

/*
 * A delta replayed from the journal (JW_READ_EVENTS, jw_store_read_deltas,
 * jw_delta_encode) is the bytes of the live one (the answered batch's
 * committed_us as its cts, encoded as the fan-out publishes it), cts
 * included. The step row is written with a space, a number and escapes no
 * JSON re-encoder keeps. A row journaled before cts was kept replays
 * without it.
 */
static void test_replay_bytes_are_live_bytes(void **state)
{
    char job[JW_UUID_LEN + 1], step[JW_UUID_LEN + 1], *row, *odd, *live[2], *again;
    const char *p[3] = {job, "0", "2"};
    jw_store *s = start_store(0);
    jw_batch *b = new_job_batch(job), *ans[1];
    jw_delta **ds;
    jw_read *r;
    size_t n;

    (void)state;
    jw_uuid_new(step);
    row = pgtest_step_row(step, job, "gyftr_login", "pending");
    assert_int_equal(row[0], '{');
    assert_true(asprintf(&odd, "{ \"note\":1.50,\"text\":\"\\u00e9\\/\",%s", row + 1) > 0);
    jw_batch_add(b, pgtest_delta(job, step, 2, JW_TABLE_JOB_STEPS, JW_OP_INSERT, odd));
    free(row);
    free(odd);
    assert_int_equal(jw_store_submit(s, b), 0);
    assert_int_equal(pgtest_collect(s, ans, 1, 10000), 1);
    assert_int_equal(ans[0]->status, 0);
    assert_true(ans[0]->committed_us > 0);
    for (size_t i = 0; i < 2; i++) {
        /* What the engine does before publishing. */
        ans[0]->deltas[i]->commit_us = ans[0]->committed_us;
        live[i] = encoded(ans[0]->deltas[i]);
    }
    assert_non_null(strstr(live[1], "\"row\":{ \"note\":1.50,\"text\":\"\\u00e9\\/\","));

    r = read_one(s, JW_READ_EVENTS, 3, p);
    assert_int_equal(r->status, 0);
    assert_int_equal(jw_store_read_deltas(r, &ds, &n), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < 2; i++) {
        again = encoded(ds[i]);
        assert_string_equal(again, live[i]);
        free(again);
    }
    jw_store_free_deltas(ds, n);
    jw_read_free(r);

    /* As if seq 2 had been journaled before migration 003. */
    PQclear(pgtest_exec(db, "UPDATE job_events SET cts = NULL WHERE job_run_id = $1 AND seq = 2", 1,
                        p));
    r = read_one(s, JW_READ_EVENTS, 3, p);
    assert_int_equal(jw_store_read_deltas(r, &ds, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ds[1]->commit_us, 0);
    again = encoded(ds[1]);
    ans[0]->deltas[1]->commit_us = 0;
    free(live[1]);
    live[1] = encoded(ans[0]->deltas[1]);
    assert_string_equal(again, live[1]);
    assert_null(strstr(again, "\"cts\""));
    free(again);
    jw_store_free_deltas(ds, n);
    jw_read_free(r);

    /* Not a journal answer: refused, nothing handed out. */
    r = jw_read_new(JW_READ_EVENTS, 3, p);
    r->result = jw_xstrdup("[{\"seq\":1}]");
    assert_int_equal(jw_store_read_deltas(r, &ds, &n), JW_EINVAL);
    assert_null(ds);
    assert_int_equal(n, 0);
    jw_read_free(r);

    for (size_t i = 0; i < 2; i++)
        free(live[i]);
    jw_batch_free(ans[0]);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/* Drains answered reads into rs until it holds want or timeout_ms passed. */
static void wait_reads(jw_store *s, struct reads *rs, size_t want, int timeout_ms)
{
    int64_t deadline = jw_mono_us() + (int64_t)timeout_ms * 1000;

    while (rs->n < want && jw_mono_us() < deadline)
        jw_store_drain_reads(s, collect_read, rs);
}

/*
 * Reads run on a connection of their own: a read stuck behind a lock (here on
 * otp_requests, which a job read scans and a job_runs write never touches)
 * does not hold back a group commit. The queue of outstanding reads is
 * bounded, and a cancelled read is answered without a query.
 */
static void test_reads_apart_bounded_cancellable(void **state)
{
    jw_store_config cfg = {.conninfo = conninfo, .max_reads_queued = 3};
    jw_store *s = NULL;
    PGconn *locker = pgtest_connect(conninfo);
    char job[JW_UUID_LEN + 1], job2[JW_UUID_LEN + 1];
    const char *p[1];
    struct reads rs = {0};
    jw_read *r[4];
    jw_batch *ans[1];

    (void)state;
    assert_int_equal(jw_store_start(&s, &cfg), 0);
    assert_int_equal(commit_one(s, new_job_batch(job), NULL, 0), 0);
    PQclear(pgtest_exec(locker, "BEGIN", 0, NULL));
    PQclear(pgtest_exec(locker, "LOCK TABLE otp_requests IN ACCESS EXCLUSIVE MODE", 0, NULL));
    p[0] = job;
    for (int i = 0; i < 4; i++)
        r[i] = jw_read_new(JW_READ_JOB, 1, p);
    for (int i = 0; i < 3; i++)
        assert_int_equal(jw_store_read(s, r[i]), 0);
    /* r[0] waits on the lock, r[1] and r[2] behind it: the queue is full. */
    assert_int_equal(jw_store_read(s, r[3]), JW_ELIMIT);
    jw_read_free(r[3]);
    jw_read_cancel(r[2]);
    /* A commit goes through while the reads wait. */
    assert_int_equal(jw_store_submit(s, new_job_batch(job2)), 0);
    assert_int_equal(pgtest_collect(s, ans, 1, 10000), 1);
    assert_int_equal(ans[0]->status, 0);
    jw_batch_free(ans[0]);
    wait_reads(s, &rs, 1, 200);
    assert_int_equal(rs.n, 0); /* still held by the lock */
    PQclear(pgtest_exec(locker, "COMMIT", 0, NULL));
    wait_reads(s, &rs, 3, 10000);
    assert_int_equal(rs.n, 3);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(rs.got[i], r[i]); /* in order */
    assert_int_equal(r[0]->status, 0);
    assert_int_equal(r[1]->status, 0);
    assert_int_equal(r[2]->status, JW_ECANCELED);
    assert_null(r[2]->result);
    for (int i = 0; i < 3; i++)
        jw_read_free(r[i]);
    /* Room again once answered. */
    r[0] = jw_read_new(JW_READ_JOB, 1, p);
    assert_int_equal(jw_store_read(s, r[0]), 0);
    rs.n = 0;
    wait_reads(s, &rs, 1, 10000);
    assert_int_equal(rs.n, 1);
    jw_read_free(r[0]);
    PQfinish(locker);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

/* Every jw_events payload db has received since LISTEN, appended to got (one per line). */
static size_t take_notifies(jw_buf *got)
{
    PGnotify *n;
    size_t count = 0;

    assert_int_equal(PQconsumeInput(db), 1);
    while ((n = PQnotifies(db)) != NULL) {
        if (strcmp(n->relname, "jw_events") == 0) {
            assert_true(strlen(n->extra) < 8000);
            jw_buf_adds(got, n->extra);
            jw_buf_addch(got, '\n');
            count++;
        }
        PQfreemem(n);
    }
    return count;
}

/*
 * A committed group notifies jw_events once with each job and its new seqs
 * ("<node> LF <job>:<after>:<last> ..."), in several payloads only past the
 * size NOTIFY takes; a refused batch notifies nothing. JW_READ_EVENTS_AFTER
 * reads several jobs' events past a seq each, as the live deltas' bytes.
 */
static void test_notify_and_events_after(void **state)
{
    enum { MANY = 220 };
    char jobs[MANY][JW_UUID_LEN + 1], entry[128], *live[3];
    jw_store_config cfg = {.conninfo = conninfo, .node_id = "node \"x\""};
    jw_store *s = NULL;
    jw_store_stats st;
    jw_batch *b = jw_batch_new(), *ans[1];
    jw_delta **ds;
    jw_buf got;
    jw_read *r;
    size_t n, payloads = 0;
    int64_t deadline;

    (void)state;
    assert_int_equal(jw_store_start(&s, &cfg), 0);
    PQclear(pgtest_exec(db, "LISTEN jw_events", 0, NULL));
    jw_buf_init(&got, 1024);
    /* One batch naming MANY jobs: its group's payload is split. */
    for (int i = 0; i < MANY; i++) {
        char user[JW_UUID_LEN + 1], *row;

        jw_uuid_new(jobs[i]);
        jw_uuid_new(user);
        row = pgtest_job_row(jobs[i], user, "initiated", 0);
        jw_batch_add(b, pgtest_delta(jobs[i], jobs[i], 1, JW_TABLE_JOB_RUNS, JW_OP_INSERT, row));
        free(row);
    }
    assert_int_equal(commit_one(s, b, NULL, 0), 0);
    /* Then two more deltas of jobs 0 and one of job 1, in one batch. */
    b = jw_batch_new();
    jw_batch_add(b, job_update(jobs[0], 2, "processing", 10));
    jw_batch_add(b, job_update(jobs[0], 3, "processing", 20));
    jw_batch_add(b, job_update(jobs[1], 2, "processing", 30));
    assert_int_equal(jw_store_submit(s, b), 0);
    assert_int_equal(pgtest_collect(s, ans, 1, 10000), 1);
    assert_int_equal(ans[0]->status, 0);
    for (size_t i = 0; i < 3; i++) {
        ans[0]->deltas[i]->commit_us = ans[0]->committed_us;
        live[i] = encoded(ans[0]->deltas[i]);
    }
    jw_batch_free(ans[0]);
    /* A refused batch (a gap) sends nothing. */
    b = jw_batch_new();
    jw_batch_add(b, job_update(jobs[2], 5, "processing", 30));
    assert_int_not_equal(commit_one(s, b, NULL, 0), 0);

    jw_store_get_stats(s, &st);
    assert_true(st.notifications >= 3);
    deadline = jw_mono_us() + 10 * 1000000;
    while (payloads < st.notifications && jw_mono_us() < deadline)
        payloads += take_notifies(&got);
    assert_int_equal(payloads, st.notifications);
    assert_int_equal(payloads, 3); /* two for the MANY jobs, one for the update */
    for (int i = 0; i < MANY; i++) {
        const char *at;

        snprintf(entry, sizeof(entry), "%.36s:0:1", jobs[i]);
        at = strstr(got.data, entry);
        assert_non_null(at);
        assert_null(strstr(at + 1, entry)); /* once */
    }
    assert_non_null(strstr(got.data, "node \"x\"\n"));
    snprintf(entry, sizeof(entry), "%.36s:1:3", jobs[0]);
    assert_non_null(strstr(got.data, entry));
    snprintf(entry, sizeof(entry), "%.36s:1:2", jobs[1]);
    assert_non_null(strstr(got.data, entry));
    snprintf(entry, sizeof(entry), "%.36s:", jobs[2]);
    assert_non_null(strstr(got.data, entry)); /* its INSERT only */
    snprintf(entry, sizeof(entry), "%.36s:4:5", jobs[2]);
    assert_null(strstr(got.data, entry));

    /* Job 0 after seq 1, job 1 after 0, job 2 after 1 (nothing): ordered by job, then seq. */
    {
        char ids[3 * (JW_UUID_LEN + 1) + 2], *again;
        const char *p[3] = {ids, "{1,0,1}", "100"};
        size_t k0 = 0, k1 = 0;

        snprintf(ids, sizeof(ids), "{%.36s,%.36s,%.36s}", jobs[0], jobs[1], jobs[2]);
        r = read_one(s, JW_READ_EVENTS_AFTER, 3, p);
        assert_int_equal(r->status, 0);
        assert_int_equal(jw_store_read_deltas(r, &ds, &n), 0);
        assert_int_equal(n, 4);
        for (size_t i = 0; i < n; i++) {
            again = encoded(ds[i]);
            if (strcmp(ds[i]->job_id, jobs[0]) == 0) {
                assert_int_equal(ds[i]->seq, 2 + (int64_t)k0);
                assert_string_equal(again, live[k0]);
                k0++;
            } else {
                assert_string_equal(ds[i]->job_id, jobs[1]);
                assert_int_equal(ds[i]->seq, 1 + (int64_t)k1);
                if (ds[i]->seq == 2)
                    assert_string_equal(again, live[2]);
                k1++;
            }
            if (i)
                assert_true(
                    strcmp(ds[i - 1]->job_id, ds[i]->job_id) < 0 ||
                    (strcmp(ds[i - 1]->job_id, ds[i]->job_id) == 0 && ds[i - 1]->seq < ds[i]->seq));
            free(again);
        }
        assert_int_equal(k0, 2);
        assert_int_equal(k1, 2);
        jw_store_free_deltas(ds, n);
        jw_read_free(r);
        /* At most limit rows in all: the caller reads on from where it got. */
        p[2] = "3";
        r = read_one(s, JW_READ_EVENTS_AFTER, 3, p);
        assert_int_equal(jw_store_read_deltas(r, &ds, &n), 0);
        assert_int_equal(n, 3);
        jw_store_free_deltas(ds, n);
        jw_read_free(r);
    }
    for (size_t i = 0; i < 3; i++)
        free(live[i]);
    PQclear(pgtest_exec(db, "UNLISTEN jw_events", 0, NULL));
    jw_buf_release(&got);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_connects_eagerly(void **state)
{
    jw_store *s = start_store(0);
    jw_store_stats st;
    int64_t deadline = jw_mono_us() + 10 * 1000000;

    (void)state;
    /* Ready before the first write: /readyz depends on it. */
    do {
        jw_store_get_stats(s, &st);
    } while (!st.connected && jw_mono_us() < deadline);
    assert_true(st.connected);
    assert_int_equal(st.outage_started_us, 0);
    assert_int_equal(st.commits, 0);
    jw_store_stop(s, 1000);
    jw_store_free(s);
}

static void test_unreachable_database(void **state)
{
    /* Port 1 on loopback: nothing listens there. */
    jw_store_config cfg = {.conninfo = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2",
                           .backoff_min_ms = 20,
                           .backoff_max_ms = 40};
    char job[JW_UUID_LEN + 1], err[512];
    jw_store *s = NULL;
    jw_batch *ans[1], *b;
    jw_store_stats st;
    json_t *jobs = NULL;
    int64_t others = 0;

    (void)state;
    assert_int_equal(jw_store_start(&s, &cfg), 0);
    b = new_job_batch(job);
    assert_int_equal(jw_store_submit(s, b), 0);
    /* Kept, not failed, while the database is away. */
    assert_int_equal(pgtest_collect(s, ans, 1, 300), 0);
    jw_store_get_stats(s, &st);
    assert_false(st.connected);
    assert_true(st.outage_started_us > 0);
    assert_non_null(strstr(st.last_error, "cannot connect"));
    /* libpq's "...refused\n\tIs the server running" reads as one line (/readyz's reason). */
    assert_null(strpbrk(st.last_error, "\t\r\n"));
    assert_null(strstr(st.last_error, "  "));
    assert_false(jw_store_connected(s));
    assert_int_equal(st.queued_batches, 1);
    /* A read is refused at once while the database is away. */
    {
        const char *p[1] = {job};

        jw_read *r = read_one(s, JW_READ_JOB, 1, p);
        assert_int_equal(r->status, JW_EDBDOWN);
        jw_read_free(r);
    }
    /* Stopping answers what could not be written. */
    jw_store_stop(s, 100);
    assert_int_equal(pgtest_collect(s, ans, 1, 1000), 1);
    assert_int_equal(ans[0]->status, JW_ECLOSED);
    jw_batch_free(ans[0]);
    b = new_job_batch(job);
    assert_int_equal(jw_store_submit(s, b), JW_ECLOSED);
    jw_batch_free(b);
    jw_store_free(s);

    assert_int_equal(jw_db_migrate(cfg.conninfo, err, sizeof(err)), JW_EDBDOWN);
    assert_non_null(strstr(err, "cannot connect"));
    assert_int_equal(
        jw_db_load_active(cfg.conninfo, "local", 10000, &jobs, &others, err, sizeof(err)),
        JW_EDBDOWN);
    assert_null(jobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations_idempotent),
        cmocka_unit_test(test_migration_edit_refused),
        cmocka_unit_test(test_write_and_read_back),
        cmocka_unit_test(test_update_only_group),
        cmocka_unit_test(test_timestamp_exact),
        cmocka_unit_test(test_duplicate_seq_refused),
        cmocka_unit_test(test_gap_refused),
        cmocka_unit_test(test_deleting_a_job_deletes_its_journal),
        cmocka_unit_test(test_group_commit_isolates_bad_batch),
        cmocka_unit_test(test_order_kept),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_quiet_rows),
        cmocka_unit_test(test_load_active),
        cmocka_unit_test(test_lease_fence),
        cmocka_unit_test(test_stale_incarnation_commits_nothing),
        cmocka_unit_test(test_group_committed_probe_is_ours_only),
        cmocka_unit_test(test_reads),
        cmocka_unit_test(test_replay_bytes_are_live_bytes),
        cmocka_unit_test(test_reads_apart_bounded_cancellable),
        cmocka_unit_test(test_notify_and_events_after),
        cmocka_unit_test(test_alone_hello_wakes),
        cmocka_unit_test(test_alone_finds_peers),
        cmocka_unit_test(test_alone_without_commits_is_quiet),
        cmocka_unit_test(test_cluster_hello),
        cmocka_unit_test(test_connects_eagerly),
        cmocka_unit_test(test_unreachable_database),
    };

    return cmocka_run_group_tests(tests, setup_db, teardown_db);
}
