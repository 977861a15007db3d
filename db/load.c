/*
 * load.c - reads every unfinished job back at start-up, for recovery.
 */
#include "jw_store.h"

#include "jw_error.h"
#include "jw_log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

/* One row per job, already shaped as the engine wants it. */
static const char sql_active[] =
    "SELECT json_build_object("
    "  'job', to_jsonb(j),"
    "  'last_seq', j.last_seq,"
    "  'steps', COALESCE((SELECT jsonb_agg(to_jsonb(s) ORDER BY s.created_at, s.id)"
    "                       FROM job_steps s WHERE s.job_run_id = j.id), '[]'::jsonb),"
    "  'otp_requests', COALESCE((SELECT jsonb_agg(to_jsonb(o) ORDER BY o.requested_at, o.id)"
    "                       FROM otp_requests o WHERE o.job_run_id = j.id), '[]'::jsonb)"
    ")::text"
    " FROM job_runs j"
    " WHERE j.status NOT IN ('completed', 'failed', 'cancelled')"
    " ORDER BY j.created_at, j.id";

int jw_db_load_active(const char *conninfo, json_t **out, char *err, size_t errlen)
{
    static const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"5", "jobwire-load", conninfo, NULL};
    json_t *jobs = NULL;
    PGresult *res = NULL;
    PGconn *conn;
    int rc = 0;

    *out = NULL;
    conn = PQconnectdbParams(keys, vals, 1);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
        rc = JW_EDBDOWN;
        goto out;
    }
    res = PQexec(conn, sql_active);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "loading unfinished jobs: %s", PQresultErrorMessage(res));
        rc = JW_EDB;
        goto out;
    }
    jobs = json_array();
    if (!jobs)
        jw_oom("json array");
    for (int i = 0; i < PQntuples(res); i++) {
        json_error_t jerr;
        json_t *job = json_loads(PQgetvalue(res, i, 0), 0, &jerr);

        if (!job) {
            snprintf(err, errlen, "loading unfinished jobs: bad JSON from PostgreSQL: %s",
                     jerr.text);
            rc = JW_EDB;
            goto out;
        }
        json_array_append_new(jobs, job);
    }
    *out = jobs;
    jobs = NULL;
out:
    for (size_t n = strlen(err); rc && n && err[n - 1] == '\n'; n--)
        err[n - 1] = '\0';
    json_decref(jobs);
    PQclear(res);
    PQfinish(conn);
    return rc;
}
