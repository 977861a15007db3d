/*
 * load.c - claims and reads back the unfinished jobs at start-up, for
 * recovery, and the login sessions worth reusing.
 */
#include "claim.h"

#include "jw_error.h"
#include "jw_log.h"
#include "pgconn.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The claim (db/claim.h): first this node must still be alive (given its
 * incarnation, its own heartbeat within the TTL): a node declared dead, or
 * one whose heartbeat lags (it was paused, or PostgreSQL was away), claims
 * nothing and declares nobody dead. A plain read, no row
 * lock: were this node declared dead right after it, what it claims belongs
 * to a dead node and the next claim of a live one takes it (and this node's
 * batches of it are fenced off, migration 007) - while a lock on the node's
 * row would make its heartbeat, and other nodes marking it dead, wait.
 * Then the other nodes past their TTL are marked dead, in the same
 * transaction, so the claim below sees them dead.
 */
static const char sql_alive[] =
    "SELECT 1 FROM jw_nodes WHERE id = $1::text AND incarnation = $2::int8 AND NOT dead"
    " AND heartbeat_at >= now() - $3::int8 * interval '1 ms'";

/* Each node by the TTL it registered with (migration 008); an older row by ours. */
static const char sql_mark_dead[] =
    "UPDATE jw_nodes SET dead = true"
    " WHERE id <> $1::text AND NOT dead"
    " AND heartbeat_at < now() - coalesce(ttl_ms, $2::int8) * interval '1 ms'";

/*
 * Takes the unfinished jobs of nobody, of dead nodes and (at start-up,
 * $2) of this node (epoch + 1: a batch of their old owner is refused from
 * now on), and reads them, one row per job already shaped as the engine
 * wants it. The outer query sees job_runs as before the claim; the claimed
 * epoch comes from the claim.
 */
static const char sql_claim[] =
    "WITH c AS ("
    "  UPDATE job_runs SET owner_node = $1::text, lease_epoch = lease_epoch + 1"
    "   WHERE id IN (SELECT id FROM job_runs"
    "                 WHERE status NOT IN ('completed', 'failed', 'cancelled')"
    "                   AND (owner_node IS NULL OR ($2::bool AND owner_node = $1::text)"
    "                        OR owner_node IN (SELECT id FROM jw_nodes"
    "                                           WHERE dead AND id <> $1::text))"
    "                 ORDER BY created_at, id LIMIT $3::int"
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

static int query_failed(PGresult *res, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, PQresultErrorMessage(res));
    for (size_t n = strlen(err); n && err[n - 1] == '\n'; n--)
        err[n - 1] = '\0';
    PQclear(res);
    return JW_EDB;
}

/* Each row's one JSON column, as an array; NULL (message in err) on bad JSON. */
static json_t *json_rows(PGresult *res, const char *what, char *err, size_t errlen)
{
    json_t *rows = json_array();

    if (!rows)
        jw_oom("json array");
    for (int i = 0; i < PQntuples(res); i++) {
        json_error_t jerr;
        json_t *row = json_loads(PQgetvalue(res, i, 0), 0, &jerr);

        if (!row) {
            snprintf(err, errlen, "loading %s: bad JSON from PostgreSQL: %s", what, jerr.text);
            json_decref(rows);
            return NULL;
        }
        json_array_append_new(rows, row);
    }
    return rows;
}

int db__claim(PGconn *conn, const jw_claim *c, json_t **out, int64_t *marked, int64_t *others,
              char *err, size_t errlen)
{
    char inc[32], ttl[32], lim[32];
    const char *alive[3] = {c->node_id, inc, ttl}, *mark[2] = {c->node_id, ttl};
    const char *claim[3] = {c->node_id, c->include_own ? "true" : "false", lim};
    PGresult *res;
    json_t *rows;

    *out = NULL;
    *marked = 0;
    if (others)
        *others = 0;
    snprintf(inc, sizeof(inc), "%lld", (long long)c->incarnation);
    snprintf(ttl, sizeof(ttl), "%d", c->ttl_ms);
    snprintf(lim, sizeof(lim), "%d", c->limit > 0 ? c->limit : 1000000);
    res = PQexec(conn, "BEGIN");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return query_failed(res, "claiming jobs", err, errlen);
    PQclear(res);
    res = c->incarnation > 0 ? PQexecParams(conn, sql_alive, 3, NULL, alive, NULL, NULL, 0)
                             : PQexec(conn, "SELECT 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto failed;
    if (PQntuples(res) == 0) { /* declared dead meanwhile: claim nothing */
        PQclear(res);
        res = PQexec(conn, "ROLLBACK");
        PQclear(res);
        snprintf(err, errlen, "node %s was declared dead", c->node_id);
        return JW_ECONFLICT;
    }
    PQclear(res);
    if (c->mark_dead) {
        res = PQexecParams(conn, sql_mark_dead, 2, NULL, mark, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            goto failed;
        *marked = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
    }
    res = PQexecParams(conn, sql_claim, 3, NULL, claim, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto failed;
    if (!(rows = json_rows(res, "claimed jobs", err, errlen))) {
        PQclear(res);
        res = PQexec(conn, "ROLLBACK");
        PQclear(res);
        return JW_EDB;
    }
    PQclear(res);
    if (others) {
        res = PQexecParams(conn, sql_others, 1, NULL, claim, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            json_decref(rows);
            goto failed;
        }
        *others = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    res = PQexec(conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        json_decref(rows);
        return query_failed(res, "committing the claim", err, errlen);
    }
    PQclear(res);
    *out = rows;
    return 0;
failed:
    rows = NULL;
    {
        int rc = query_failed(res, "claiming jobs", err, errlen);

        res = PQexec(conn, "ROLLBACK");
        PQclear(res);
        return rc;
    }
}

static PGconn *connect_load(const char *conninfo, char *err, size_t errlen)
{
    PGconn *conn = db__connect(conninfo, "jobwire-load", false);

    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
        for (size_t n = strlen(err); n && err[n - 1] == '\n'; n--)
            err[n - 1] = '\0';
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

int jw_db_load_active(const char *conninfo, const char *node_id, int ttl_ms, json_t **out,
                      int64_t *others, char *err, size_t errlen)
{
    jw_claim c = {
        .node_id = node_id ? node_id : "local",
        .ttl_ms = ttl_ms,
        .include_own = true,
        .mark_dead = true,
    };
    PGconn *conn = connect_load(conninfo, err, errlen);
    int64_t marked = 0;
    int rc;

    *out = NULL;
    *others = 0;
    if (!conn)
        return JW_EDBDOWN;
    rc = db__claim(conn, &c, out, &marked, others, err, errlen);
    PQfinish(conn);
    if (rc == 0 && marked)
        jw_log_warn("recovery: %lld nodes past their TTL marked dead", (long long)marked);
    return rc;
}

int jw_db_load_sessions(const char *conninfo, json_t **out, char *err, size_t errlen)
{
    PGconn *conn = connect_load(conninfo, err, errlen);
    PGresult *res;

    *out = NULL;
    if (!conn)
        return JW_EDBDOWN;
    res =
        PQexec(conn, "SELECT to_jsonb(a)::text FROM auth_sessions a"
                     " WHERE a.is_active AND a.expires_at > now() AND a.auth_token_enc IS NOT NULL"
                     " ORDER BY a.created_at");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        int rc = query_failed(res, "loading login sessions", err, errlen);

        PQfinish(conn);
        return rc;
    }
    *out = json_rows(res, "login sessions", err, errlen);
    PQclear(res);
    PQfinish(conn);
    return *out ? 0 : JW_EDB;
}
