/*
 * load.c - claims and reads back the unfinished jobs at start-up, for
 * recovery, and the login sessions worth reusing.
 */
#include "jw_store.h"

#include "jw_error.h"
#include "jw_log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Recovery's claim (jw_store.h): other nodes past their TTL are marked dead
 * first, in the same transaction, so the claim below sees them dead.
 */
static const char sql_mark_dead[] =
    "UPDATE jw_nodes SET dead = true"
    " WHERE id <> $1::text AND NOT dead AND heartbeat_at < now() - $2::int8 * interval '1 ms'";

/*
 * Takes the unfinished jobs of nobody, of this node and of dead nodes (epoch
 * + 1: a batch of their old owner is refused from now on), and reads them,
 * one row per job already shaped as the engine wants it. The outer query
 * sees job_runs as before the claim; the claimed epoch comes from the claim.
 */
static const char sql_claim[] =
    "WITH c AS ("
    "  UPDATE job_runs SET owner_node = $1::text, lease_epoch = lease_epoch + 1"
    "   WHERE id IN (SELECT id FROM job_runs"
    "                 WHERE status NOT IN ('completed', 'failed', 'cancelled')"
    "                   AND (owner_node IS NULL OR owner_node = $1::text"
    "                        OR owner_node IN (SELECT id FROM jw_nodes WHERE dead))"
    "                 FOR UPDATE SKIP LOCKED)"
    "  RETURNING id, lease_epoch)"
    "SELECT json_build_object("
    "  'job', to_jsonb(j),"
    "  'last_seq', j.last_seq,"
    "  'lease_epoch', c.lease_epoch,"
    "  'steps', COALESCE((SELECT jsonb_agg(to_jsonb(s) ORDER BY s.created_at, s.id)"
    "                       FROM job_steps s WHERE s.job_run_id = j.id), '[]'::jsonb),"
    "  'otp_requests', COALESCE((SELECT jsonb_agg(to_jsonb(o) ORDER BY o.requested_at, o.id)"
    "                       FROM otp_requests o WHERE o.job_run_id = j.id), '[]'::jsonb)"
    ")::text"
    " FROM c JOIN job_runs j ON j.id = c.id"
    " ORDER BY j.created_at, j.id";

/* After the claim: the unfinished jobs left to live nodes. */
static const char sql_others[] =
    "SELECT count(*) FROM job_runs WHERE status NOT IN ('completed', 'failed', 'cancelled')"
    " AND owner_node IS DISTINCT FROM $1::text";

/*
 * Runs sql (with params) and collects its one JSON column. With node_id, the
 * claim: BEGIN, mark the dead, sql, count the others, COMMIT.
 */
static int load_json(const char *conninfo, const char *sql, const char *what, const char *node_id,
                     int ttl_ms, int64_t *others, json_t **out, char *err, size_t errlen)
{
    char ttl[32];
    const char *params[2] = {node_id, ttl};
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
    snprintf(ttl, sizeof(ttl), "%d", ttl_ms);
    if (node_id) {
        res = PQexec(conn, "BEGIN");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            goto failed;
        PQclear(res);
        res = PQexecParams(conn, sql_mark_dead, 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            goto failed;
        if (strcmp(PQcmdTuples(res), "0") != 0)
            jw_log_warn("recovery: %s nodes past their TTL marked dead", PQcmdTuples(res));
        PQclear(res);
    }
    res = PQexecParams(conn, sql, node_id ? 1 : 0, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    failed:
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
    if (node_id) {
        PQclear(res);
        res = PQexecParams(conn, sql_others, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            goto failed;
        *others = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        res = PQexec(conn, "COMMIT");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            goto failed;
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

int jw_db_load_active(const char *conninfo, const char *node_id, int ttl_ms, json_t **out,
                      int64_t *others, char *err, size_t errlen)
{
    *others = 0;
    return load_json(conninfo, sql_claim, "unfinished jobs", node_id ? node_id : "local", ttl_ms,
                     others, out, err, errlen);
}

int jw_db_load_sessions(const char *conninfo, json_t **out, char *err, size_t errlen)
{
    return load_json(conninfo,
                     "SELECT to_jsonb(a)::text FROM auth_sessions a"
                     " WHERE a.is_active AND a.expires_at > now() AND a.auth_token_enc IS NOT NULL"
                     " ORDER BY a.created_at",
                     "login sessions", NULL, 0, NULL, out, err, errlen);
}
