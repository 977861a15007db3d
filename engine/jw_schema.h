/*
 * jw_schema.h - the columns of the tables the engine writes, described once.
 *
 * The migrations (db/migrations/NNN_*.sql) create the tables; this is the C side's
 * one description of their columns: a name and a type per column, in the
 * order the engine's rows hold them. Everything in C that spells a column
 * reads it from here: the engine's row builders and its recovery, the
 * Supabase endpoint's tables and filters (server/rt_parse.c), the rows the
 * integration tests write (tests/integration/pgtest.c).
 * tests/integration/test_schema.c checks it against the live schema's
 * information_schema after the migrations ran, so the two cannot drift.
 *
 * Each table is an X-macro list, X(name, TYPE), so a user can expand it at
 * compile time (rt_parse.c builds its "columns" JSON that way); the same
 * lists make jw_schema_tables and the column indices JW_<TABLE>_<name>.
 *
 * Constant data and pure functions: any thread.
 */
#ifndef JW_SCHEMA_H
#define JW_SCHEMA_H

#include "jw_buf.h"
#include "jw_delta.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Column types. JW_SCHEMA_PG_<TYPE> is the type's name as PostgreSQL's
 * information_schema.columns.udt_name spells it (and Supabase's "columns");
 * the JSON a row carries for it:
 *   TEXT, UUID, TIMESTAMPTZ, BYTEA: a string (timestamps ISO 8601 in UTC,
 *                                   bytea as its hex text) or null
 *   INT, BIGINT: an integer or null     BOOL: true, false or null
 *   JSONB: any JSON value
 */
typedef enum jw_col_type {
    JW_COL_TEXT,
    JW_COL_UUID,
    JW_COL_INT,
    JW_COL_BIGINT,
    JW_COL_BOOL,
    JW_COL_TIMESTAMPTZ,
    JW_COL_JSONB,
    JW_COL_BYTEA,
} jw_col_type;

#define JW_SCHEMA_PG_TEXT "text"
#define JW_SCHEMA_PG_UUID "uuid"
#define JW_SCHEMA_PG_INT "int4"
#define JW_SCHEMA_PG_BIGINT "int8"
#define JW_SCHEMA_PG_BOOL "bool"
#define JW_SCHEMA_PG_TIMESTAMPTZ "timestamptz"
#define JW_SCHEMA_PG_JSONB "jsonb"
#define JW_SCHEMA_PG_BYTEA "bytea"

/* ---- the tables ------------------------------------------------------------------ */

#define JW_SCHEMA_JOB_RUNS(X)                                                                      \
    X(id, UUID)                                                                                    \
    X(user_id, UUID)                                                                               \
    X(job_type, TEXT)                                                                              \
    X(status, TEXT)                                                                                \
    X(current_phase, TEXT)                                                                         \
    X(progress_percentage, INT)                                                                    \
    X(total_transactions, INT)                                                                     \
    X(completed_transactions, INT)                                                                 \
    X(transaction_amount, INT)                                                                     \
    X(transaction_count, INT)                                                                      \
    X(created_at, TIMESTAMPTZ)                                                                     \
    X(updated_at, TIMESTAMPTZ)                                                                     \
    X(completed_at, TIMESTAMPTZ)                                                                   \
    X(error_message, TEXT)                                                                         \
    X(retry_count, INT)                                                                            \
    X(metadata, JSONB)                                                                             \
    X(cancel_requested, BOOL)

#define JW_SCHEMA_JOB_STEPS(X)                                                                     \
    X(id, UUID)                                                                                    \
    X(job_run_id, UUID)                                                                            \
    X(step_name, TEXT)                                                                             \
    X(step_type, TEXT)                                                                             \
    X(status, TEXT)                                                                                \
    X(transaction_index, INT)                                                                      \
    X(started_at, TIMESTAMPTZ)                                                                     \
    X(completed_at, TIMESTAMPTZ)                                                                   \
    X(timeout_at, TIMESTAMPTZ)                                                                     \
    X(step_data, JSONB)                                                                            \
    X(error_message, TEXT)                                                                         \
    X(created_at, TIMESTAMPTZ)                                                                     \
    X(attempt, INT)                                                                                \
    X(idempotency_key, TEXT)                                                                       \
    X(next_retry_at, TIMESTAMPTZ)                                                                  \
    X(updated_at, TIMESTAMPTZ)                                                                     \
    X(outcome_unknown, BOOL)

#define JW_SCHEMA_OTP_REQUESTS(X)                                                                  \
    X(id, UUID)                                                                                    \
    X(job_run_id, UUID)                                                                            \
    X(job_step_id, UUID)                                                                           \
    X(otp_type, TEXT)                                                                              \
    X(phone_number, TEXT)                                                                          \
    X(requested_at, TIMESTAMPTZ)                                                                   \
    X(received_at, TIMESTAMPTZ)                                                                    \
    X(verified_at, TIMESTAMPTZ)                                                                    \
    X(timeout_at, TIMESTAMPTZ)                                                                     \
    X(attempts_count, INT)                                                                         \
    X(max_attempts, INT)                                                                           \
    X(status, TEXT)

#define JW_SCHEMA_AUTH_SESSIONS(X)                                                                 \
    X(id, UUID)                                                                                    \
    X(user_id, UUID)                                                                               \
    X(session_type, TEXT)                                                                          \
    X(auth_token_enc, BYTEA)                                                                       \
    X(browser_context_id, TEXT)                                                                    \
    X(session_data, JSONB)                                                                         \
    X(created_at, TIMESTAMPTZ)                                                                     \
    X(expires_at, TIMESTAMPTZ)                                                                     \
    X(last_used_at, TIMESTAMPTZ)                                                                   \
    X(is_active, BOOL)

/*
 * Columns the rows do not carry: the store's own bookkeeping - last_seq, and
 * the job's lease (owner_node, lease_epoch: db/migrations/004_node_leases.sql).
 */
#define JW_SCHEMA_JOB_RUNS_STORE(X)                                                                \
    X(last_seq, BIGINT)                                                                            \
    X(owner_node, TEXT)                                                                            \
    X(lease_epoch, BIGINT)

/* Column indices, e.g. JW_JOB_RUNS_status; JW_JOB_RUNS__N counts them. */
#define JW_SCHEMA__IDX_JOB_RUNS(n, t) JW_JOB_RUNS_##n,
#define JW_SCHEMA__IDX_JOB_STEPS(n, t) JW_JOB_STEPS_##n,
#define JW_SCHEMA__IDX_OTP_REQUESTS(n, t) JW_OTP_REQUESTS_##n,
#define JW_SCHEMA__IDX_AUTH_SESSIONS(n, t) JW_AUTH_SESSIONS_##n,
enum { JW_SCHEMA_JOB_RUNS(JW_SCHEMA__IDX_JOB_RUNS) JW_JOB_RUNS__N };
enum { JW_SCHEMA_JOB_STEPS(JW_SCHEMA__IDX_JOB_STEPS) JW_JOB_STEPS__N };
enum { JW_SCHEMA_OTP_REQUESTS(JW_SCHEMA__IDX_OTP_REQUESTS) JW_OTP_REQUESTS__N };
enum { JW_SCHEMA_AUTH_SESSIONS(JW_SCHEMA__IDX_AUTH_SESSIONS) JW_AUTH_SESSIONS__N };

typedef struct jw_schema_column {
    const char *name;
    const char *pg_type; /* JW_SCHEMA_PG_<TYPE> */
    jw_col_type type;
} jw_schema_column;

typedef struct jw_schema_table {
    const char *name;
    const jw_schema_column *columns; /* in row order */
    size_t ncolumns;
    const jw_schema_column *store_columns; /* the table's other columns */
    size_t nstore_columns;
} jw_schema_table;

/* Indexed by jw_table: job_runs, job_steps, otp_requests, auth_sessions. */
#define JW_SCHEMA_TABLES JW_TABLE__COUNT
extern const jw_schema_table jw_schema_tables[JW_SCHEMA_TABLES];

/* The name of a column, checked at compile time: JW_COLUMN(JOB_STEPS, status). */
#define JW_COLUMN(TABLE, col) (jw_schema_tables[JW_TABLE_##TABLE].columns[JW_##TABLE##_##col].name)

/*
 * A row of t as a JSON object: values[i] under column i's name, in the
 * description's order. Takes every value (a NULL one, a failed json_string,
 * leaves its column out, as json_object_set_new would). A value whose JSON
 * does not fit its column's type is a bug of the caller: debug builds assert.
 * The engine writes its rows with jw_row_writer (below); this stays as the
 * tests' way to build rows, and the reference the writer is checked against.
 */
json_t *jw_schema_row(const jw_schema_table *t, json_t *const *values);

/*
 * A row of t written straight as the JSON text json_dumps(jw_schema_row(...),
 * JSON_COMPACT) would give, byte for byte, without building the object: the
 * engine's rows (every delta) are written this way. Columns come in the
 * description's order, each named by its index (debug builds assert the
 * order); one left out is simply not written. What json_string would refuse
 * (NULL, or not UTF-8) leaves its column out, as jw_schema_row does.
 */
typedef struct jw_row_writer {
    jw_buf *out;
    const jw_schema_table *t;
    size_t next; /* the index the next column must have */
    bool any;    /* a column was written: the next one follows a comma */
} jw_row_writer;

void jw_row_begin(jw_row_writer *w, const jw_schema_table *t, jw_buf *out);
void jw_row_str(jw_row_writer *w, size_t col, const char *s);
/* NULL or empty: null (an optional text column of the engine's rows). */
void jw_row_str_or_null(jw_row_writer *w, size_t col, const char *s);
void jw_row_int(jw_row_writer *w, size_t col, int64_t v);
void jw_row_bool(jw_row_writer *w, size_t col, bool v);
void jw_row_null(jw_row_writer *w, size_t col);
/* An instant as jw_format_ts writes it; 0: null. */
void jw_row_ts(jw_row_writer *w, size_t col, int64_t us);
/* Any JSON value, as json_dumps writes it; NULL leaves the column out. */
void jw_row_json(jw_row_writer *w, size_t col, const json_t *v);
void jw_row_end(jw_row_writer *w);

/* Whether v may be the value of a column of that type (see the table above). */
bool jw_schema_fits(jw_col_type type, const json_t *v);

/* The column of t called name (row or store column), or NULL. */
const jw_schema_column *jw_schema_column_find(const jw_schema_table *t, const char *name);

#endif
