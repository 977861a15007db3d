#include "pgtest.h"

#include "jw_buf.h"
#include "jw_log.h"
#include "jw_schema.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "pgtest: %s: %s\n", what, detail ? detail : "");
    exit(2);
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

char *pgtest_migrated_db(const char *name)
{
    char *conninfo = pgtest_fresh_db(name), err[512];

    if (jw_db_migrate(conninfo, err, sizeof(err)) != 0)
        die("migrate", err);
    return conninfo;
}

PGconn *pgtest_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);

    if (PQstatus(c) != CONNECTION_OK)
        die("cannot connect", PQerrorMessage(c));
    PQsetNoticeProcessor(c, ignore_notice, NULL);
    return c;
}

char *pgtest_fresh_db(const char *name)
{
    const char *base = getenv("DATABASE_URL");
    PQconninfoOption *opts, *o;
    char *errmsg = NULL, sql[256];
    PGconn *c;
    jw_buf out;

    if (!base || !*base)
        die("DATABASE_URL is not set", "run the suite through scripts/test");
    c = pgtest_connect(base);
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    PQclear(pgtest_exec(c, sql, 0, NULL));
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    PQclear(pgtest_exec(c, sql, 0, NULL));
    PQfinish(c);

    /* Same server and user, other database: rebuild as key=value pairs. */
    opts = PQconninfoParse(base, &errmsg);
    if (!opts)
        die("bad DATABASE_URL", errmsg);
    jw_buf_init(&out, 256);
    for (o = opts; o->keyword; o++) {
        const char *v = strcmp(o->keyword, "dbname") == 0 ? name : o->val;

        if (!v)
            continue;
        jw_buf_addf(&out, "%s%s='", out.len ? " " : "", o->keyword);
        for (const char *p = v; *p; p++) {
            if (*p == '\'' || *p == '\\')
                jw_buf_addch(&out, '\\');
            jw_buf_addch(&out, *p);
        }
        jw_buf_addch(&out, '\'');
    }
    if (!strstr(out.data, "dbname="))
        jw_buf_addf(&out, " dbname='%s'", name);
    PQconninfoFree(opts);
    return jw_buf_detach(&out, NULL);
}

PGresult *pgtest_exec(PGconn *c, const char *sql, int nparams, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        die(sql, PQresultErrorMessage(r));
    return r;
}

int64_t pgtest_int(PGconn *c, const char *sql, int nparams, const char *const *params)
{
    PGresult *r = pgtest_exec(c, sql, nparams, params);
    int64_t v;

    if (PQntuples(r) != 1)
        die("expected one row", sql);
    v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* A row of table t from one value per column; a missing or ill-typed one stops the test. */
static json_t *row_of(jw_table t, json_t *const *values)
{
    const jw_schema_table *st = &jw_schema_tables[t];

    for (size_t i = 0; i < st->ncolumns; i++)
        if (!jw_schema_fits(st->columns[i].type, values[i]))
            die("a test row's value does not fit its column", st->columns[i].name);
    return jw_schema_row(st, values);
}

static char *dump(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);

    json_decref(o);
    if (!s)
        jw_oom("json");
    return s;
}

/* Rows with every column of jw_schema.h, in its order, as the engine writes them. */
char *pgtest_job_row(const char *job_id, const char *user_id, const char *status, int progress)
{
    json_t *v[JW_JOB_RUNS__N] = {
        [JW_JOB_RUNS_id] = json_string(job_id),
        [JW_JOB_RUNS_user_id] = json_string(user_id),
        [JW_JOB_RUNS_job_type] = json_string("payment_automation"),
        [JW_JOB_RUNS_status] = json_string(status),
        [JW_JOB_RUNS_current_phase] = json_string("validation"),
        [JW_JOB_RUNS_progress_percentage] = json_integer(progress),
        [JW_JOB_RUNS_total_transactions] = json_integer(4),
        [JW_JOB_RUNS_completed_transactions] = json_integer(0),
        [JW_JOB_RUNS_transaction_amount] = json_integer(1500),
        [JW_JOB_RUNS_transaction_count] = json_integer(4),
        [JW_JOB_RUNS_created_at] = json_string("2026-11-26T10:00:00.000001Z"),
        [JW_JOB_RUNS_updated_at] = json_string("2026-11-26T10:00:01Z"),
        [JW_JOB_RUNS_completed_at] = json_null(),
        [JW_JOB_RUNS_error_message] = json_null(),
        [JW_JOB_RUNS_retry_count] = json_integer(0),
        [JW_JOB_RUNS_metadata] = json_pack("{s:s}", "source", "test"),
        [JW_JOB_RUNS_cancel_requested] = json_false(),
    };

    return dump(row_of(JW_TABLE_JOB_RUNS, v));
}

char *pgtest_step_row(const char *step_id, const char *job_id, const char *name, const char *status)
{
    json_t *v[JW_JOB_STEPS__N] = {
        [JW_JOB_STEPS_id] = json_string(step_id),
        [JW_JOB_STEPS_job_run_id] = json_string(job_id),
        [JW_JOB_STEPS_step_name] = json_string(name),
        [JW_JOB_STEPS_step_type] = json_string("validation"),
        [JW_JOB_STEPS_status] = json_string(status),
        [JW_JOB_STEPS_transaction_index] = json_null(),
        [JW_JOB_STEPS_started_at] = json_string("2026-11-26T10:00:02Z"),
        [JW_JOB_STEPS_completed_at] = json_null(),
        [JW_JOB_STEPS_timeout_at] = json_null(),
        [JW_JOB_STEPS_step_data] = json_object(),
        [JW_JOB_STEPS_error_message] = json_null(),
        [JW_JOB_STEPS_created_at] = json_string("2026-11-26T10:00:02Z"),
        [JW_JOB_STEPS_attempt] = json_integer(1),
        [JW_JOB_STEPS_idempotency_key] = json_string(step_id),
        [JW_JOB_STEPS_next_retry_at] = json_null(),
        [JW_JOB_STEPS_updated_at] = json_string("2026-11-26T10:00:03Z"),
        [JW_JOB_STEPS_outcome_unknown] = json_false(),
    };

    return dump(row_of(JW_TABLE_JOB_STEPS, v));
}

char *pgtest_otp_row(const char *otp_id, const char *job_id, const char *step_id,
                     const char *status)
{
    json_t *v[JW_OTP_REQUESTS__N] = {
        [JW_OTP_REQUESTS_id] = json_string(otp_id),
        [JW_OTP_REQUESTS_job_run_id] = json_string(job_id),
        [JW_OTP_REQUESTS_job_step_id] = json_string(step_id),
        [JW_OTP_REQUESTS_otp_type] = json_string("gyftr_login"),
        [JW_OTP_REQUESTS_phone_number] = json_string("******1234"),
        [JW_OTP_REQUESTS_requested_at] = json_string("2026-11-26T10:00:04Z"),
        [JW_OTP_REQUESTS_received_at] = json_null(),
        [JW_OTP_REQUESTS_verified_at] = json_null(),
        [JW_OTP_REQUESTS_timeout_at] = json_string("2026-11-26T10:05:04Z"),
        [JW_OTP_REQUESTS_attempts_count] = json_integer(0),
        [JW_OTP_REQUESTS_max_attempts] = json_integer(3),
        [JW_OTP_REQUESTS_status] = json_string(status),
    };

    return dump(row_of(JW_TABLE_OTP_REQUESTS, v));
}

jw_delta *pgtest_delta(const char *job_id, const char *row_id, int64_t seq, jw_table t, jw_op op,
                       const char *row)
{
    int err = 0;
    jw_delta *d = jw_delta_new(job_id, row_id, seq, jw_now_us(), t, op, row, strlen(row), &err);

    if (!d)
        die("jw_delta_new refused a test delta", row);
    return d;
}

struct collect {
    jw_batch **out;
    size_t n;
};

static void collect_one(jw_batch *b, void *arg)
{
    struct collect *c = arg;

    c->out[c->n++] = b;
}

size_t pgtest_collect(jw_store *s, jw_batch **out, size_t want, int timeout_ms)
{
    struct collect c = {out, 0};
    int64_t deadline = jw_mono_us() + (int64_t)timeout_ms * 1000;

    while (c.n < want) {
        int64_t left = (deadline - jw_mono_us()) / 1000;

        if (left <= 0)
            break;
        jw_store_wait(s, (int)left, collect_one, &c);
    }
    return c.n;
}
