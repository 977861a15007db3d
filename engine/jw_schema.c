/*
 * jw_schema.c - the tables of jw_schema.h as data, and rows built from them.
 */
#include "jw_schema.h"

#include "jw_log.h"

#include <assert.h>
#include <string.h>

#define COL(n, t) {#n, JW_SCHEMA_PG_##t, JW_COL_##t},

static const jw_schema_column job_runs[] = {JW_SCHEMA_JOB_RUNS(COL)};
static const jw_schema_column job_runs_store[] = {JW_SCHEMA_JOB_RUNS_STORE(COL)};
static const jw_schema_column job_steps[] = {JW_SCHEMA_JOB_STEPS(COL)};
static const jw_schema_column otp_requests[] = {JW_SCHEMA_OTP_REQUESTS(COL)};
static const jw_schema_column auth_sessions[] = {JW_SCHEMA_AUTH_SESSIONS(COL)};

#define N(a) (sizeof(a) / sizeof((a)[0]))

const jw_schema_table jw_schema_tables[JW_SCHEMA_TABLES] = {
    [JW_TABLE_JOB_RUNS] = {"job_runs", job_runs, N(job_runs), job_runs_store, N(job_runs_store)},
    [JW_TABLE_JOB_STEPS] = {"job_steps", job_steps, N(job_steps), NULL, 0},
    [JW_TABLE_OTP_REQUESTS] = {"otp_requests", otp_requests, N(otp_requests), NULL, 0},
    [JW_TABLE_AUTH_SESSIONS] = {"auth_sessions", auth_sessions, N(auth_sessions), NULL, 0},
};

bool jw_schema_fits(jw_col_type type, const json_t *v)
{
    if (!v)
        return false;
    if (json_is_null(v) || type == JW_COL_JSONB)
        return true;
    switch (type) {
    case JW_COL_TEXT:
    case JW_COL_UUID:
    case JW_COL_TIMESTAMPTZ:
    case JW_COL_BYTEA: return json_is_string(v);
    case JW_COL_INT:
    case JW_COL_BIGINT: return json_is_integer(v);
    case JW_COL_BOOL: return json_is_boolean(v);
    case JW_COL_JSONB: break;
    }
    return true;
}

json_t *jw_schema_row(const jw_schema_table *t, json_t *const *values)
{
    json_t *r = json_object();

    if (!r)
        jw_oom("row");
    for (size_t i = 0; i < t->ncolumns; i++) {
        assert(!values[i] || jw_schema_fits(t->columns[i].type, values[i]));
        json_object_set_new(r, t->columns[i].name, values[i]);
    }
    return r;
}

const jw_schema_column *jw_schema_column_find(const jw_schema_table *t, const char *name)
{
    for (size_t i = 0; i < t->ncolumns; i++)
        if (strcmp(t->columns[i].name, name) == 0)
            return &t->columns[i];
    for (size_t i = 0; i < t->nstore_columns; i++)
        if (strcmp(t->store_columns[i].name, name) == 0)
            return &t->store_columns[i];
    return NULL;
}
