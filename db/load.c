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

static int load_json(const char *conninfo, const char *sql, const char *what, json_t **out,
                     char *err, size_t errlen)
{
    static const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"5", "jobwire-load", conninfo, NULL};
    json_t *rows = NULL;
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
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "loading %s: %s", what, PQresultErrorMessage(res));
        rc = JW_EDB;
        goto out;
    }
    rows = json_array();
    if (!rows)
        jw_oom("json array");
    for (int i = 0; i < PQntuples(res); i++) {
        json_error_t jerr;
        json_t *row = json_loads(PQgetvalue(res, i, 0), 0, &jerr);

        if (!row) {
            snprintf(err, errlen, "loading %s: bad JSON from PostgreSQL: %s", what, jerr.text);
            rc = JW_EDB;
            goto out;
        }
        json_array_append_new(rows, row);
    }
    *out = rows;
    rows = NULL;
out:
    for (size_t n = strlen(err); rc && n && err[n - 1] == '\n'; n--)
        err[n - 1] = '\0';
    json_decref(rows);
    PQclear(res);
    PQfinish(conn);
    return rc;
}

int jw_db_load_active(const char *conninfo, json_t **out, char *err, size_t errlen)
{
    return load_json(conninfo, sql_active, "unfinished jobs", out, err, errlen);
}

int jw_db_load_sessions(const char *conninfo, json_t **out, char *err, size_t errlen)
{
    return load_json(conninfo,
                     "SELECT to_jsonb(a)::text FROM auth_sessions a"
                     " WHERE a.is_active AND a.expires_at > now() AND a.auth_token_enc IS NOT NULL"
                     " ORDER BY a.created_at",
                     "login sessions", out, err, errlen);
}
