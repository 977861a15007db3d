/*
 * pgconn.h - how jobwire's threads connect to PostgreSQL: the same defaults
 * for each (a connect timeout, TCP keepalives, its application name, the
 * session options JW_PG_OPTIONS), then the caller's connection string, which
 * overrides any of them.
 */
#ifndef JW_PGCONN_H
#define JW_PGCONN_H

#include <libpq-fe.h>
#include <stdbool.h>

/*
 * Connects (blocking) as application_name. keepalives: for the long-lived
 * connections, so a dead peer is noticed within about 25 s. Returns the
 * connection, whatever its status (the caller checks PQstatus and finishes
 * it); aborts only when libpq cannot allocate one.
 */
PGconn *db__connect(const char *conninfo, const char *application_name, bool keepalives);

#endif
