/*
 * A PostgreSQL restart (pg_ctl restart -m fast, through $JW_PG_SCRIPT) in the
 * middle of a stream of 10,000 queued deltas: none is lost, none is written
 * twice, every batch is answered exactly once and with success.
 *
 * "Written twice" would show as a duplicate-key refusal: a group whose commit
 * landed just before the connection broke, blindly retried, collides with its
 * own rows. The store must find out that it committed instead.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_error.h"
#include "jw_log.h"
#include "pgtest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { JOBS = 100, PER_JOB = 100, TOTAL = JOBS * PER_JOB };

static atomic_int restart_rc = -1;

static void *restart_pg(void *arg)
{
    const char *script = arg;
    char cmd[1024];

    snprintf(cmd, sizeof(cmd), "'%s' restart >/dev/null", script);
    atomic_store(&restart_rc, system(cmd));
    return NULL;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

    nanosleep(&ts, NULL);
}

static void test_restart_mid_stream(void **state)
{
    const char *script = getenv("JW_PG_SCRIPT");
    char(*jobs)[JW_UUID_LEN + 1] = calloc(JOBS, sizeof(*jobs));
    char user[JW_UUID_LEN + 1], err[512], *conninfo;
    jw_store_config cfg = {.backoff_min_ms = 50, .backoff_max_ms = 500};
    jw_store *s = NULL;
    jw_batch **ans;
    size_t batches = 0, got;
    int64_t seq[JOBS];
    pthread_t restarter;
    jw_store_stats st;
    PGconn *db;
    PGresult *r;

    (void)state;
    if (!script || !*script)
        fail_msg("JW_PG_SCRIPT is not set: run through scripts/test, which provides a "
                 "restartable throwaway cluster");
    conninfo = pgtest_fresh_db("jw_test_restart");
    assert_int_equal(jw_db_migrate(conninfo, err, sizeof(err)), 0);
    cfg.conninfo = conninfo;
    assert_int_equal(jw_store_start(&s, &cfg), 0);
    ans = calloc(TOTAL, sizeof(*ans));
    jw_uuid_new(user);

    /*
     * Deltas are job-row updates, 1 to 3 per batch, round-robin over the
     * jobs, submitted at a steady pace; the restart starts a third of the way
     * in, so batches pile up during the outage and after it.
     */
    for (int j = 0; j < JOBS; j++)
        seq[j] = 0;
    for (int produced = 0, j = 0; produced < TOTAL; j = (j + 1) % JOBS) {
        int n = 1 + (int)((unsigned)produced % 3);
        jw_batch *b = jw_batch_new();

        if (seq[j] == 0)
            jw_uuid_new(jobs[j]);
        for (int k = 0; k < n && seq[j] < PER_JOB; k++, produced++) {
            char *row = pgtest_job_row(jobs[j], user, seq[j] == 0 ? "initiated" : "processing",
                                       (int)((seq[j] + 1) % 101));

            seq[j]++;
            jw_batch_add(b, pgtest_delta(jobs[j], jobs[j], seq[j], JW_TABLE_JOB_RUNS,
                                         seq[j] == 1 ? JW_OP_INSERT : JW_OP_UPDATE, row));
            free(row);
        }
        if (b->count == 0) {
            jw_batch_free(b);
            continue;
        }
        assert_int_equal(jw_store_submit(s, b), 0);
        batches++;
        if (produced >= TOTAL / 3 && atomic_load(&restart_rc) == -1) {
            assert_int_equal(pthread_create(&restarter, NULL, restart_pg, (void *)script), 0);
            atomic_store(&restart_rc, -2); /* started */
        }
        sleep_us(150);
    }
    pthread_join(restarter, NULL);
    assert_int_equal(atomic_load(&restart_rc), 0);

    got = pgtest_collect(s, ans, batches, 120000);
    assert_int_equal(got, batches);
    for (size_t i = 0; i < got; i++) {
        if (ans[i]->status != 0)
            fail_msg("batch %zu answered %s: %s", i, jw_err_name(ans[i]->status),
                     ans[i]->error ? ans[i]->error : "");
        jw_batch_free(ans[i]);
    }
    /*
     * The restart really cut the connection during the stream. If every batch
     * committed before the cut, the store notices it only idle (up to a second)
     * and reconnects after its backoff: waited for, bounded.
     */
    {
        int64_t deadline = jw_mono_us() + 20 * 1000000;

        for (;;) {
            jw_store_get_stats(s, &st);
            if ((st.reconnects >= 2 && st.connected) || jw_mono_us() >= deadline)
                break;
            sleep_us(20000);
        }
        assert_true(st.reconnects >= 2);
    }
    assert_int_equal(st.deltas_committed, TOTAL);
    assert_int_equal(st.batches_failed, 0);
    /* Across the outage, one commit_us observation per commit still, and the
     * group sizes add up (a group found committed after reconnecting too). */
    assert_int_equal(st.commit_us.count, st.commits);
    assert_int_equal(st.commit_batches.sum, st.batches_committed);
    assert_int_equal(st.commit_deltas.sum, TOTAL);

    /*
     * Idle now. Stop PostgreSQL: the store notices without any write (so
     * readiness reports the outage), and reconnects by itself once it is back.
     */
    {
        char cmd[1024];
        uint64_t before = st.reconnects;
        int64_t deadline;

        snprintf(cmd, sizeof(cmd), "'%s' stop >/dev/null", script);
        assert_int_equal(system(cmd), 0);
        deadline = jw_mono_us() + 10 * 1000000;
        do {
            sleep_us(20000);
            jw_store_get_stats(s, &st);
        } while (st.connected && jw_mono_us() < deadline);
        assert_false(st.connected);
        assert_true(st.outage_started_us > 0);
        snprintf(cmd, sizeof(cmd), "'%s' start >/dev/null", script);
        assert_int_equal(system(cmd), 0);
        deadline = jw_mono_us() + 20 * 1000000;
        do {
            sleep_us(20000);
            jw_store_get_stats(s, &st);
        } while (!st.connected && jw_mono_us() < deadline);
        assert_true(st.connected);
        assert_true(st.reconnects > before);
        assert_true(st.outage_total_us > 0);
    }
    jw_store_stop(s, 1000);
    jw_store_free(s);

    db = pgtest_connect(conninfo);
    assert_int_equal(TOTAL, pgtest_int(db, "SELECT count(*) FROM job_events", 0, NULL));
    /* Per job: seq 1..100 with no gap and no duplicate, and last_seq agrees. */
    r = pgtest_exec(db,
                    "SELECT count(*) FROM (SELECT job_run_id, min(seq) lo, max(seq) hi, "
                    "count(*) n, count(DISTINCT seq) d FROM job_events GROUP BY job_run_id) e "
                    "JOIN job_runs j ON j.id = e.job_run_id "
                    "WHERE lo = 1 AND hi = 100 AND n = 100 AND d = 100 AND j.last_seq = 100 "
                    "AND j.progress_percentage = 100",
                    0, NULL);
    assert_int_equal(atoi(PQgetvalue(r, 0, 0)), JOBS);
    PQclear(r);
    PQfinish(db);
    free(ans);
    free(jobs);
    free(conninfo);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_mid_stream),
    };

    jw_log_set_level(JW_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
