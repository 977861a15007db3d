/*
 * job_events retention against a real PostgreSQL: the store deletes the
 * journal of jobs finished longer ago than the retention age, in transactions
 * of at most prune_batch rows; running jobs and recently finished ones keep
 * theirs, job rows stay, and a job retried after its journal went keeps its
 * new events. "Longer ago" is made testable by backdating updated_at in SQL.
 *
 * Every statement that deletes from job_events is recorded by a test-only
 * statement trigger, so the batch bound is checked by PostgreSQL, not by the
 * store's own counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_error.h"
#include "jw_log.h"
#include "pgtest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 10      /* rows per retention delete */
#define AGE_S 3600    /* retention age */
#define SMALL_JOBS 30 /* old finished jobs of 2 events each: several walk stretches */
#define DEADLINE_S 60 /* bound of every wait; a pass never comes near it */

static char *conninfo;
static PGconn *db;

static int setup_db(void **state)
{
    (void)state;
    jw_log_set_level(JW_LOG_WARN);
    conninfo = pgtest_migrated_db("jw_test_retention");
    db = pgtest_connect(conninfo);
    /* Test-only: one row per DELETE statement on job_events, with its row count. */
    PQclear(pgtest_exec(db, "CREATE TABLE prune_log (n bigint NOT NULL)", 0, NULL));
    PQclear(
        pgtest_exec(db,
                    "CREATE FUNCTION log_prune() RETURNS trigger LANGUAGE plpgsql AS $$"
                    " BEGIN INSERT INTO prune_log SELECT count(*) FROM gone; RETURN NULL; END $$",
                    0, NULL));
    PQclear(pgtest_exec(db,
                        "CREATE TRIGGER log_prune AFTER DELETE ON job_events REFERENCING OLD TABLE "
                        "AS gone FOR EACH STATEMENT EXECUTE FUNCTION log_prune()",
                        0, NULL));
    return 0;
}

static int teardown_db(void **state)
{
    (void)state;
    PQfinish(db);
    free(conninfo);
    return 0;
}

static jw_store *start_store(int64_t retention_s)
{
    jw_store_config cfg = {
        .conninfo = conninfo,
        .events_retention_s = retention_s,
        .prune_batch = BATCH,
        .prune_interval_ms = 50,
    };
    jw_store *s = NULL;

    assert_int_equal(jw_store_start(&s, &cfg), 0);
    return s;
}

static void commit(jw_store *s, jw_batch *b)
{
    jw_batch *ans[1];

    assert_int_equal(jw_store_submit(s, b), 0);
    assert_int_equal(pgtest_collect(s, ans, 1, DEADLINE_S * 1000), 1);
    if (ans[0]->status != 0)
        fail_msg("batch refused: %s", ans[0]->error ? ans[0]->error : "");
    jw_batch_free(ans[0]);
}

static jw_delta *job_delta(const char *job, int64_t seq, const char *status)
{
    char *row = pgtest_job_row(job, "00000000-0000-4000-8000-000000000001", status, 0);
    jw_delta *d =
        pgtest_delta(job, job, seq, JW_TABLE_JOB_RUNS, seq == 1 ? JW_OP_INSERT : JW_OP_UPDATE, row);

    free(row);
    return d;
}

/*
 * A job with `events` deltas (seq 1..events), the last one setting `status`,
 * committed in batches of up to 4 deltas; then its updated_at set `age_s`
 * seconds into the past.
 */
static void make_job(jw_store *s, char id[JW_UUID_LEN + 1], int events, const char *status,
                     int age_s)
{
    char age[24];
    const char *p[2] = {id, age};

    jw_uuid_new(id);
    for (int seq = 1; seq <= events;) {
        jw_batch *b = jw_batch_new();

        for (int k = 0; k < 4 && seq <= events; k++, seq++)
            jw_batch_add(b, job_delta(id, seq, seq == events ? status : "processing"));
        commit(s, b);
    }
    snprintf(age, sizeof(age), "%d", age_s);
    PQclear(pgtest_exec(db,
                        "UPDATE job_runs SET updated_at = now() - $2::int * interval '1 second' "
                        "WHERE id = $1",
                        2, p));
}

static int64_t events_of(const char *job)
{
    const char *p[1] = {job};

    return pgtest_int(db, "SELECT count(*) FROM job_events WHERE job_run_id = $1", 1, p);
}

static int64_t count_of(const char *sql)
{
    return pgtest_int(db, sql, 0, NULL);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Waits until the store has finished `rounds` retention rounds in all. */
static void wait_rounds(jw_store *s, uint64_t rounds)
{
    int64_t deadline = jw_mono_us() + (int64_t)DEADLINE_S * 1000000;
    jw_store_stats st;

    for (;;) {
        jw_store_get_stats(s, &st);
        if (st.prune_rounds >= rounds)
            return;
        if (jw_mono_us() > deadline)
            fail_msg("retention finished %llu rounds, not %llu, within %d s (deleted %llu events)",
                     (unsigned long long)st.prune_rounds, (unsigned long long)rounds, DEADLINE_S,
                     (unsigned long long)st.events_pruned);
        sleep_ms(10);
    }
}

static void test_retention(void **state)
{
    char old_done[JW_UUID_LEN + 1], old_failed[JW_UUID_LEN + 1], old_cancelled[JW_UUID_LEN + 1];
    char recent[JW_UUID_LEN + 1], running[JW_UUID_LEN + 1], retried[JW_UUID_LEN + 1];
    char small[SMALL_JOBS][JW_UUID_LEN + 1];
    const int64_t old_events = 25 + 3 + 12 + 4 + 2 * SMALL_JOBS;
    const int64_t old_runs = 4 + SMALL_JOBS;
    jw_store *writer = start_store(0), *pruner;
    jw_store_stats st;
    int64_t jobs_before, total_before;

    (void)state;
    /* The old ones finished two hours ago; the age is one hour. */
    make_job(writer, old_done, 25, "completed", 2 * AGE_S); /* more than two batches */
    make_job(writer, old_failed, 3, "failed", 2 * AGE_S);
    make_job(writer, old_cancelled, 12, "cancelled", 2 * AGE_S);
    make_job(writer, retried, 4, "failed", 2 * AGE_S);
    for (int i = 0; i < SMALL_JOBS; i++)
        make_job(writer, small[i], 2, "completed", 2 * AGE_S);
    make_job(writer, recent, 6, "completed", 60);          /* finished a minute ago */
    make_job(writer, running, 7, "processing", 2 * AGE_S); /* idle for long, not finished */

    jobs_before = count_of("SELECT count(*) FROM job_runs");
    total_before = count_of("SELECT count(*) FROM job_events");
    assert_int_equal(total_before, old_events + 6 + 7);

    /* A store with retention off (the writer) deletes nothing, however old. */
    jw_store_get_stats(writer, &st);
    assert_int_equal(st.prune_rounds, 0);
    assert_int_equal(st.events_pruned, 0);
    assert_int_equal(count_of("SELECT count(*) FROM prune_log"), 0);

    pruner = start_store(AGE_S);
    wait_rounds(pruner, 1);
    jw_store_get_stats(pruner, &st);

    /* Every event of the old finished jobs went; the others stayed, whole. */
    assert_int_equal(events_of(old_done), 0);
    assert_int_equal(events_of(old_failed), 0);
    assert_int_equal(events_of(old_cancelled), 0);
    assert_int_equal(events_of(retried), 0);
    for (int i = 0; i < SMALL_JOBS; i++)
        assert_int_equal(events_of(small[i]), 0);
    assert_int_equal(events_of(recent), 6);
    assert_int_equal(events_of(running), 7);
    assert_int_equal(st.events_pruned, (uint64_t)old_events);
    assert_int_equal(st.runs_pruned, (uint64_t)old_runs);

    /* In batches: no statement deleted more than BATCH rows, so it took several. */
    assert_int_equal(count_of("SELECT coalesce(sum(n), 0) FROM prune_log"), old_events);
    assert_true(count_of("SELECT coalesce(max(n), 0) FROM prune_log") <= BATCH);
    assert_true(count_of("SELECT count(*) FROM prune_log WHERE n > 0") >=
                (old_events + BATCH - 1) / BATCH);
    assert_int_equal(count_of("SELECT count(*) FROM prune_log"), (int64_t)st.prune_batches);

    /* The job rows stay, with their seq high-water marks, and still read back whole. */
    assert_int_equal(count_of("SELECT count(*) FROM job_runs"), jobs_before);
    {
        const char *p[1] = {old_done};

        assert_int_equal(pgtest_int(db, "SELECT last_seq FROM job_runs WHERE id = $1", 1, p), 25);
        assert_int_equal(
            pgtest_int(db, "SELECT count(*) FROM job_runs WHERE id = $1 AND status = 'completed'",
                       1, p),
            1);
    }

    /*
     * The pruned failed job is retried: its new deltas continue from last_seq
     * (the journal's gap is below them) and, the job being live again, stay
     * through later rounds, as do the recent and the running job's.
     */
    {
        jw_batch *b = jw_batch_new();

        jw_batch_add(b, job_delta(retried, 5, "validating"));
        jw_batch_add(b, job_delta(retried, 6, "processing"));
        commit(writer, b);
    }
    jw_store_get_stats(pruner, &st);
    wait_rounds(pruner, st.prune_rounds + 2);
    assert_int_equal(events_of(retried), 2);
    {
        const char *p[1] = {retried};

        assert_int_equal(
            pgtest_int(db, "SELECT min(seq) FROM job_events WHERE job_run_id = $1", 1, p), 5);
    }
    assert_int_equal(events_of(recent), 6);
    assert_int_equal(events_of(running), 7);
    jw_store_get_stats(pruner, &st);
    assert_int_equal(st.events_pruned, (uint64_t)old_events);
    assert_int_equal(st.runs_pruned, (uint64_t)old_runs);

    /* Once the recent job is old enough too, its journal goes in a later round. */
    {
        const char *p[1] = {recent};

        PQclear(pgtest_exec(
            db, "UPDATE job_runs SET updated_at = now() - interval '2 hours' WHERE id = $1", 1, p));
    }
    jw_store_get_stats(pruner, &st);
    wait_rounds(pruner, st.prune_rounds + 2);
    assert_int_equal(events_of(recent), 0);
    assert_int_equal(events_of(running), 7);
    jw_store_get_stats(pruner, &st);
    assert_int_equal(st.events_pruned, (uint64_t)old_events + 6);
    assert_int_equal(st.runs_pruned, (uint64_t)old_runs + 1);

    jw_store_stop(pruner, 1000);
    jw_store_free(pruner);
    jw_store_stop(writer, 1000);
    jw_store_free(writer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retention),
    };

    return cmocka_run_group_tests(tests, setup_db, teardown_db);
}
