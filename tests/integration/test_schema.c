/*
 * The one C description of the tables' columns (engine/jw_schema.h) against
 * the live schema: after the migrations ran on a fresh database, every table
 * the description names has exactly its columns (those the rows carry and
 * the store's own), each of the described type, as information_schema says.
 * A migration that adds, drops, renames or retypes a column fails here until
 * jw_schema.h says the same.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_log.h"
#include "jw_schema.h"
#include "pgtest.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *conninfo;
static PGconn *db;

static int setup_db(void **state)
{
    (void)state;
    jw_log_set_level(JW_LOG_WARN);
    conninfo = pgtest_migrated_db("jw_test_schema");
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

/* Where t and the live table differ, in why (empty when they agree). */
static void compare_table(const jw_schema_table *t, char *why, size_t n_why)
{
    const char *params[1] = {t->name};
    PGresult *r = pgtest_exec(db,
                              "SELECT column_name, udt_name FROM information_schema.columns"
                              " WHERE table_schema = current_schema() AND table_name = $1"
                              " ORDER BY ordinal_position",
                              1, params);
    int n = PQntuples(r);

    why[0] = '\0';
    if (n == 0)
        snprintf(why, n_why, "table %s of jw_schema.h is not in the database", t->name);
    /* Every live column is described, with its type... */
    for (int i = 0; i < n && !why[0]; i++) {
        const char *name = PQgetvalue(r, i, 0), *udt = PQgetvalue(r, i, 1);
        const jw_schema_column *c = jw_schema_column_find(t, name);

        if (!c)
            snprintf(why, n_why, "%s.%s (%s) is in the database but not in jw_schema.h", t->name,
                     name, udt);
        else if (strcmp(c->pg_type, udt) != 0)
            snprintf(why, n_why, "%s.%s is %s in the database but %s in jw_schema.h", t->name, name,
                     udt, c->pg_type);
    }
    /* ...and every described column is live. */
    for (size_t k = 0; k < t->ncolumns + t->nstore_columns && !why[0]; k++) {
        const jw_schema_column *c =
            k < t->ncolumns ? &t->columns[k] : &t->store_columns[k - t->ncolumns];
        bool found = false;

        for (int i = 0; i < n && !found; i++)
            found = strcmp(PQgetvalue(r, i, 0), c->name) == 0;
        if (!found)
            snprintf(why, n_why, "%s.%s is in jw_schema.h but not in the database", t->name,
                     c->name);
    }
    PQclear(r);
}

static void test_description_matches_live_schema(void **state)
{
    char why[256];

    (void)state;
    for (int i = 0; i < JW_SCHEMA_TABLES; i++) {
        compare_table(&jw_schema_tables[i], why, sizeof(why));
        if (why[0])
            fail_msg("%s", why);
    }
}

/* The comparison sees each kind of drift (each undone at once). */
static void test_comparison_sees_drift(void **state)
{
    static const struct {
        jw_table t;
        const char *change, *undo, *why;
    } drifts[] = {
        {JW_TABLE_OTP_REQUESTS, "ALTER TABLE otp_requests ADD COLUMN probe text",
         "ALTER TABLE otp_requests DROP COLUMN probe",
         "otp_requests.probe (text) is in the database but not in jw_schema.h"},
        {JW_TABLE_JOB_STEPS, "ALTER TABLE job_steps RENAME COLUMN attempt TO attempts",
         "ALTER TABLE job_steps RENAME COLUMN attempts TO attempt",
         "job_steps.attempts (int4) is in the database but not in jw_schema.h"},
        {JW_TABLE_JOB_RUNS, "ALTER TABLE job_runs ALTER COLUMN retry_count TYPE bigint",
         "ALTER TABLE job_runs ALTER COLUMN retry_count TYPE integer",
         "job_runs.retry_count is int8 in the database but int4 in jw_schema.h"},
        {JW_TABLE_JOB_RUNS, "ALTER TABLE job_runs DROP COLUMN last_seq",
         "ALTER TABLE job_runs ADD COLUMN last_seq bigint NOT NULL DEFAULT 0",
         "job_runs.last_seq is in jw_schema.h but not in the database"},
    };
    char why[256];

    (void)state;
    for (size_t i = 0; i < sizeof(drifts) / sizeof(drifts[0]); i++) {
        PQclear(pgtest_exec(db, drifts[i].change, 0, NULL));
        compare_table(&jw_schema_tables[drifts[i].t], why, sizeof(why));
        PQclear(pgtest_exec(db, drifts[i].undo, 0, NULL));
        assert_string_equal(why, drifts[i].why);
        compare_table(&jw_schema_tables[drifts[i].t], why, sizeof(why));
        assert_string_equal(why, "");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_description_matches_live_schema),
        cmocka_unit_test(test_comparison_sees_drift),
    };

    return cmocka_run_group_tests(tests, setup_db, teardown_db);
}
