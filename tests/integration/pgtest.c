#include "pgtest.h"

#include "jw_buf.h"
#include "jw_log.h"

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

static char *dump(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);

    json_decref(o);
    if (!s)
        jw_oom("json");
    return s;
}

char *pgtest_job_row(const char *job_id, const char *user_id, const char *status, int progress)
{
    return dump(json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:n, "
                          "s:n, s:i, s:{s:s}, s:b}",
                          "id", job_id, "user_id", user_id, "job_type", "payment_automation",
                          "status", status, "current_phase", "validation", "progress_percentage",
                          progress, "total_transactions", 4, "completed_transactions", 0,
                          "transaction_amount", 1500, "transaction_count", 4, "created_at",
                          "2026-11-26T10:00:00.000001Z", "updated_at", "2026-11-26T10:00:01Z",
                          "completed_at", "error_message", "retry_count", 0, "metadata", "source",
                          "test", "cancel_requested", 0));
}

char *pgtest_step_row(const char *step_id, const char *job_id, const char *name, const char *status)
{
    return dump(json_pack("{s:s, s:s, s:s, s:s, s:s, s:n, s:s, s:n, s:n, s:{}, s:n, s:s, "
                          "s:i, s:s, s:n, s:s, s:b}",
                          "id", step_id, "job_run_id", job_id, "step_name", name, "step_type",
                          "validation", "status", status, "transaction_index", "started_at",
                          "2026-11-26T10:00:02Z", "completed_at", "timeout_at", "step_data",
                          "error_message", "created_at", "2026-11-26T10:00:02Z", "attempt", 1,
                          "idempotency_key", step_id, "next_retry_at", "updated_at",
                          "2026-11-26T10:00:03Z", "outcome_unknown", 0));
}

char *pgtest_otp_row(const char *otp_id, const char *job_id, const char *step_id,
                     const char *status)
{
    return dump(json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:n, s:n, s:s, s:i, s:i, s:s}", "id", otp_id, "job_run_id",
        job_id, "job_step_id", step_id, "otp_type", "gyftr_login", "phone_number", "******1234",
        "requested_at", "2026-11-26T10:00:04Z", "received_at", "verified_at", "timeout_at",
        "2026-11-26T10:05:04Z", "attempts_count", 0, "max_attempts", 3, "status", status));
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
