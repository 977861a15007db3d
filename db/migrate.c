/*
 * migrate.c - applies the embedded db/migrations at start-up.
 *
 * Each migration runs in its own transaction together with its row in
 * schema_migrations, so a migration is either wholly applied and recorded or
 * not at all. A session advisory lock serialises servers starting together.
 * The SHA-256 of each applied file is recorded; a changed file is refused,
 * because the database would no longer match what the file says.
 */
#include "jw_store.h"

#include "jw_error.h"
#include "jw_log.h"
#include "migrations.h"

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

/* Any constant unique to jobwire: "jobwire" in ASCII, 0x6a6f6277697265 (PostgreSQL 15 has no hex
 * literals). */
#define MIGRATION_LOCK_KEY "29958816232206949"

static void sha256_hex(const char *text, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL);
    for (unsigned int i = 0; i < len && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int fail(PGconn *conn, PGresult *res, int code, char *err, size_t errlen, const char *what)
{
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);

    snprintf(err, errlen, "%s: %s", what, msg);
    /* libpq ends messages with a newline; the caller adds its own. */
    for (size_t n = strlen(err); n && err[n - 1] == '\n'; n--)
        err[n - 1] = '\0';
    PQclear(res);
    return code;
}

/* Runs sql; on failure hands the result to *failed for the message. */
static bool run(PGconn *conn, const char *sql, PGresult **failed)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(res);
        *failed = NULL;
        return true;
    }
    *failed = res;
    return false;
}

static void ignore_notice(void *arg, const char *message)
{
    /* "relation already exists, skipping" and the like: expected here. */
    (void)arg;
    (void)message;
}

int jw_db_migration_count(void)
{
    int n = 0;

    while (jw_migrations[n].name)
        n++;
    return n;
}

static int apply_one(PGconn *conn, const struct jw_migration *m, char *err, size_t errlen)
{
    char sum[65], what[160];
    const char *params[2] = {m->name, sum};
    PGresult *res = NULL;

    sha256_hex(m->sql, sum);
    if (!run(conn, "BEGIN", &res))
        return fail(conn, res, JW_EDBDOWN, err, errlen, "BEGIN");
    res = PQexecParams(conn, "SELECT sha256 FROM schema_migrations WHERE name = $1", 1, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto failed;
    if (PQntuples(res) == 1) {
        bool same = strcmp(PQgetvalue(res, 0, 0), sum) == 0;

        PQclear(res);
        res = NULL;
        if (!run(conn, "COMMIT", &res))
            goto failed;
        if (!same) {
            snprintf(err, errlen,
                     "migration %s was changed after it was applied (sha256 differs); "
                     "add a new migration instead of editing an applied one",
                     m->name);
            return JW_EMIGRATE;
        }
        return 0;
    }
    PQclear(res);
    res = NULL;
    if (!run(conn, m->sql, &res))
        goto failed;
    res = PQexecParams(conn, "INSERT INTO schema_migrations (name, sha256) VALUES ($1, $2)", 2,
                       NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto failed;
    PQclear(res);
    res = NULL;
    if (!run(conn, "COMMIT", &res))
        goto failed;
    jw_log_info("db: applied migration %s", m->name);
    return 0;

failed:
    snprintf(what, sizeof(what), "migration %s", m->name);
    fail(conn, res, JW_EMIGRATE, err, errlen, what);
    res = PQexec(conn, "ROLLBACK");
    PQclear(res);
    return PQstatus(conn) == CONNECTION_OK ? JW_EMIGRATE : JW_EDBDOWN;
}

int jw_db_migrate(const char *conninfo, char *err, size_t errlen)
{
    static const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"5", "jobwire-migrate", conninfo, NULL};
    PGresult *res = NULL;
    PGconn *conn;
    int rc = 0;

    conn = PQconnectdbParams(keys, vals, 1);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        rc = fail(conn, NULL, JW_EDBDOWN, err, errlen, "cannot connect to PostgreSQL");
        PQfinish(conn);
        return rc;
    }
    /* Notices such as "relation already exists, skipping" are noise here. */
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    if (!run(conn, "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")", &res)) {
        rc = fail(conn, res, JW_EDBDOWN, err, errlen, "taking the migration lock");
        goto out;
    }
    if (!run(conn,
             "CREATE TABLE IF NOT EXISTS schema_migrations ("
             " name text PRIMARY KEY,"
             " sha256 text NOT NULL,"
             " applied_at timestamptz NOT NULL DEFAULT now())",
             &res)) {
        rc = fail(conn, res, JW_EMIGRATE, err, errlen, "creating schema_migrations");
        goto out;
    }
    for (int i = 0; jw_migrations[i].name; i++) {
        rc = apply_one(conn, &jw_migrations[i], err, errlen);
        if (rc)
            goto out;
    }
out:
    /* Closing the session releases the advisory lock too. */
    PQfinish(conn);
    return rc;
}
