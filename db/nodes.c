/*
 * nodes.c - this process as a node of a jobwire cluster on one database:
 * registering at start-up and handing the leases back at a clean shutdown
 * (db/migrations/004_node_leases.sql; the heartbeat runs on the db thread,
 * store.c). Blocking, each on a short connection of its own: start-up and
 * shutdown only, on the main thread.
 */
#include "jw_store.h"

#include "jw_error.h"
#include "jw_log.h"
#include "pgconn.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static PGconn *connect_short(const char *conninfo, char *err, size_t errlen)
{
    PGconn *conn = db__connect(conninfo, "jobwire-node", false);

    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static int failed(PGconn *conn, PGresult *res, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, PQresultErrorMessage(res));
    for (size_t n = strlen(err); n && err[n - 1] == '\n'; n--)
        err[n - 1] = '\0';
    PQclear(res);
    PQfinish(conn);
    return JW_EDB;
}

int jw_db_node_register(const char *conninfo, const char *node_id, int ttl_ms, int64_t *incarnation,
                        char *err, size_t errlen)
{
    char ttl[32];
    const char *params[2] = {node_id, ttl};
    PGconn *conn = connect_short(conninfo, err, errlen);
    PGresult *res;

    if (!conn)
        return JW_EDBDOWN;
    snprintf(ttl, sizeof(ttl), "%d", ttl_ms);
    res =
        PQexecParams(conn,
                     "INSERT INTO jw_nodes (id, incarnation, ttl_ms) VALUES ($1::text, 1, $2::int)"
                     " ON CONFLICT (id) DO UPDATE SET incarnation = jw_nodes.incarnation + 1,"
                     " heartbeat_at = now(), dead = false, started_at = now(), ttl_ms = $2::int"
                     " RETURNING incarnation",
                     2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        return failed(conn, res, "registering the node", err, errlen);
    *incarnation = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(conn);
    return 0;
}

int jw_db_node_release(const char *conninfo, const char *node_id, int64_t incarnation, char *err,
                       size_t errlen)
{
    char inc[32], handed[32];
    const char *params[2] = {node_id, inc};
    PGconn *conn = connect_short(conninfo, err, errlen);
    PGresult *res;

    if (!conn)
        return JW_EDBDOWN;
    snprintf(inc, sizeof(inc), "%lld", (long long)incarnation);
    /*
     * One transaction: the leases go back only if this incarnation is still
     * the live one (a node declared dead holds none), and the other nodes
     * hear of it when it commits (jw_nodes, db/cluster.h): one of them claims
     * the jobs at once instead of after the TTL.
     */
    res = PQexec(conn, "BEGIN");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return failed(conn, res, "handing the leases back", err, errlen);
    PQclear(res);
    res = PQexecParams(conn,
                       "WITH n AS (UPDATE jw_nodes SET dead = true"
                       "  WHERE id = $1::text AND incarnation = $2::int8 AND NOT dead RETURNING id)"
                       " UPDATE job_runs SET owner_node = NULL"
                       "  WHERE owner_node IN (SELECT id FROM n)"
                       "    AND status NOT IN ('completed', 'failed', 'cancelled')",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return failed(conn, res, "handing the leases back", err, errlen);
    snprintf(handed, sizeof(handed), "%s", PQcmdTuples(res));
    PQclear(res);
    res = PQexecParams(conn, "SELECT pg_notify('jw_nodes', $1::text)", 1, NULL, params, NULL, NULL,
                       0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return failed(conn, res, "telling the other nodes", err, errlen);
    PQclear(res);
    res = PQexec(conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return failed(conn, res, "handing the leases back", err, errlen);
    jw_log_info("node %s: %s leases handed back", node_id, handed);
    PQclear(res);
    PQfinish(conn);
    return 0;
}
