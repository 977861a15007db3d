/*
 * rt_parse.h - the pure half of the Supabase Realtime endpoint
 * (docs/supabase-migration.md): Phoenix channel messages in both encodings,
 * the tables a client may watch with their columns, and postgres_changes
 * filters ("status=eq.completed,id=in.(a,b)") parsed and evaluated against a
 * row. No libwebsockets, no state, any thread; fuzzed in
 * tests/fuzz/fuzz_rt_message.c.
 */
#ifndef JW_RT_PARSE_H
#define JW_RT_PARSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define JW_RT_MAX_REF 64      /* ref / join_ref: decimal strings in practice */
#define JW_RT_MAX_TOPIC 256   /* "realtime:" + the channel name */
#define JW_RT_MAX_CONDS 8     /* filters ANDed in one binding */
#define JW_RT_MAX_IN 100      /* values of one in.(…) list, as Supabase */
#define JW_RT_MAX_VALUE 256   /* bytes of one filter value */
#define JW_RT_MAX_FILTER 4096 /* bytes of a whole filter string */

/*
 * One client message. vsn 2.0.0 sends [join_ref, ref, topic, event, payload];
 * vsn 1.0.0 {topic, event, payload, ref, join_ref}. The refs are echoed as
 * they came: a JSON string or null (NULL when absent).
 */
typedef struct jw_rt_msg {
    json_t *root;      /* owned (jw_rt_msg_release) */
    json_t *join_ref;  /* borrowed, string or null, or NULL */
    json_t *ref;       /* borrowed, string or null, or NULL */
    const char *topic; /* borrowed */
    const char *event; /* borrowed */
    json_t *payload;   /* borrowed, an object */
} jw_rt_msg;

/*
 * Parses one message in the encoding the connection uses (array: vsn 2).
 * Returns NULL when it is a message, or a reason for the client otherwise,
 * with details in err. Always call jw_rt_msg_release(out) after.
 */
const char *jw_rt_parse(const char *data, size_t len, bool array, jw_rt_msg *out, char *err,
                        size_t errlen);
void jw_rt_msg_release(jw_rt_msg *m);

/* ---- the tables ---------------------------------------------------------------- */

typedef enum {
    JW_RT_TEXT,
    JW_RT_UUID,
    JW_RT_INT,
    JW_RT_BOOL,
    JW_RT_TIMESTAMPTZ,
    JW_RT_JSONB,
} jw_rt_type;

typedef struct jw_rt_column {
    const char *name;
    const char *pg_type; /* as Supabase names it in "columns": "uuid", "int4", … */
    jw_rt_type type;
} jw_rt_column;

typedef struct jw_rt_table {
    const char *name;       /* job_runs, job_steps, otp_requests */
    const char *job_column; /* the column holding the job id: id or job_run_id */
    const jw_rt_column *columns;
    size_t ncolumns;
    const char *columns_json; /* the "columns" array of an event, encoded once */
} jw_rt_table;

#define JW_RT_TABLES 3
/* The tables in jw_table order (job_runs, job_steps, otp_requests). */
extern const jw_rt_table jw_rt_tables[JW_RT_TABLES];

/* The table called name, or -1. */
int jw_rt_table_find(const char *name);
const jw_rt_column *jw_rt_column_find(const jw_rt_table *t, const char *name);

/* ---- filters ------------------------------------------------------------------- */

typedef enum { JW_RT_EQ, JW_RT_NEQ, JW_RT_LT, JW_RT_LTE, JW_RT_GT, JW_RT_GTE, JW_RT_IN } jw_rt_op;

typedef struct jw_rt_cond {
    const jw_rt_column *column;
    jw_rt_op op;
    char **values; /* one for every op but in */
    size_t nvalues;
} jw_rt_cond;

typedef struct jw_rt_filter {
    jw_rt_cond conds[JW_RT_MAX_CONDS];
    size_t n; /* 0: every row */
} jw_rt_filter;

/*
 * Parses "col=op.value[,col=op.value…]" for table t: each column must be one
 * of t's, values of uuid columns must be UUIDs (kept lower-case), of int
 * columns integers, of bool columns true/false. in takes "(v1,v2,…)", values
 * optionally in double quotes. Returns 0, or -1 with the reason in err.
 * Release with jw_rt_filter_release either way.
 */
int jw_rt_filter_parse(const jw_rt_table *t, const char *text, jw_rt_filter *out, char *err,
                       size_t errlen);
void jw_rt_filter_release(jw_rt_filter *f);

/*
 * Whether row (a JSON object of t) passes every condition. SQL semantics: a
 * null or missing value passes no comparison. Numbers compare as numbers,
 * uuids case-insensitively, text and timestamps byte-wise (timestamps are
 * ISO 8601 in UTC, so that is time order for values in the same form).
 */
bool jw_rt_filter_match(const jw_rt_filter *f, json_t *row);

#endif
