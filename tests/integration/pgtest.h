/*
 * pgtest.h - helpers for tests that run against a real PostgreSQL.
 *
 * DATABASE_URL (set by scripts/test) names a server; each test program makes
 * its own fresh database on it, so programs can run side by side.
 */
#ifndef JW_PGTEST_H
#define JW_PGTEST_H

#include "jw_store.h"

#include <libpq-fe.h>
#include <stdint.h>

/* Drops and creates database `name` on DATABASE_URL's server; returns its
 * connection string (free it). Aborts the test program when it cannot. */
char *pgtest_fresh_db(const char *name);

/* pgtest_fresh_db, then the migrations applied; aborts when they fail. */
char *pgtest_migrated_db(const char *name);

/* A connection to conninfo, or abort. */
PGconn *pgtest_connect(const char *conninfo);

/* Runs sql with optional text params; aborts on error unless allow_error. */
PGresult *pgtest_exec(PGconn *c, const char *sql, int nparams, const char *const *params);

/* First column of the first row as an integer (sql must return one row). */
int64_t pgtest_int(PGconn *c, const char *sql, int nparams, const char *const *params);

/* Row builders: full rows as the engine will write them, every column of
 * jw_schema.h in its order (JSON text; free). */
char *pgtest_job_row(const char *job_id, const char *user_id, const char *status, int progress);
char *pgtest_step_row(const char *step_id, const char *job_id, const char *name,
                      const char *status);
char *pgtest_otp_row(const char *otp_id, const char *job_id, const char *step_id,
                     const char *status);

/* A delta of a row built above, or abort. */
jw_delta *pgtest_delta(const char *job_id, const char *row_id, int64_t seq, jw_table t, jw_op op,
                       const char *row);

/* Runs the store's answers into an array: waits until `want` answers came or
 * timeout_ms passed; returns how many arrived. */
size_t pgtest_collect(jw_store *s, jw_batch **out, size_t want, int timeout_ms);

#endif
