/*
 * pgconn.c - jobwire's connections to PostgreSQL. See pgconn.h.
 */
#include "pgconn.h"

#include "jw_log.h"
#include "jw_store.h"

PGconn *db__connect(const char *conninfo, const char *application_name, bool keepalives)
{
    /* Our defaults first; the caller's connection string (dbname, expanded) overrides them. */
    static const char *const keys[] = {
        "connect_timeout",     "application_name", "options", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "dbname",  NULL,
    };
    static const char *const short_keys[] = {"connect_timeout", "application_name", "options",
                                             "dbname", NULL};
    const char *vals[] = {"5", application_name, JW_PG_OPTIONS, "1", "10", "5",
                          "3", conninfo,         NULL};
    const char *short_vals[] = {"5", application_name, JW_PG_OPTIONS, conninfo, NULL};
    PGconn *conn = keepalives ? PQconnectdbParams(keys, vals, 1)
                              : PQconnectdbParams(short_keys, short_vals, 1);

    if (!conn)
        jw_oom("libpq connection");
    return conn;
}
