/*
 * jw_schema.c - the tables of jw_schema.h as data, and rows built from them.
 */
#include "jw_schema.h"

#include "jw_log.h"
#include "jw_util.h"

#include <assert.h>
#include <stdint.h>
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

/* ---- rows as text ---------------------------------------------------------------- */

/*
 * Length of the UTF-8 sequence at p (at most n bytes), 0 if it is not one:
 * the shortest form, no surrogate, nothing past U+10FFFF (RFC 3629, which is
 * what json_string accepts).
 */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4)
        return 0;
    len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (n < len)
        return 0;
    cp = c & (0x3F >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* s as a JSON string, escaped as jansson escapes it; false (nothing kept) if not UTF-8. */
static bool add_string(jw_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), mark = b->len, run = 0;

    jw_buf_addch(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len;

        if (c >= 0x20 && c != '"' && c != '\\') {
            if (!(len = utf8_seq(p + i, n - i))) {
                b->len = mark;
                return false;
            }
            i += len;
            run += len;
            continue;
        }
        jw_buf_add(b, p + i - run, run);
        run = 0;
        switch (c) {
        case '"': jw_buf_add(b, "\\\"", 2); break;
        case '\\': jw_buf_add(b, "\\\\", 2); break;
        case '\b': jw_buf_add(b, "\\b", 2); break;
        case '\f': jw_buf_add(b, "\\f", 2); break;
        case '\n': jw_buf_add(b, "\\n", 2); break;
        case '\r': jw_buf_add(b, "\\r", 2); break;
        case '\t': jw_buf_add(b, "\\t", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

            jw_buf_add(b, u, sizeof(u));
        }
        }
        i++;
    }
    jw_buf_add(b, p + n - run, run);
    jw_buf_addch(b, '"');
    return true;
}

/* The column's key, after a comma unless it is the first one written. */
static void add_key(jw_row_writer *w, size_t col)
{
    assert(col == w->next && col < w->t->ncolumns);
    if (w->any)
        jw_buf_addch(w->out, ',');
    jw_buf_addch(w->out, '"');
    jw_buf_adds(w->out, w->t->columns[col].name);
    jw_buf_add(w->out, "\":", 2);
}

/* The column's value is written: the next one may come. */
static void done(jw_row_writer *w)
{
    w->any = true;
    w->next++;
}

/* The column is left out. */
static void skip(jw_row_writer *w, size_t col)
{
    assert(col == w->next && col < w->t->ncolumns);
    (void)col;
    w->next++;
}

void jw_row_begin(jw_row_writer *w, const jw_schema_table *t, jw_buf *out)
{
    w->out = out;
    w->t = t;
    w->next = 0;
    w->any = false;
    jw_buf_addch(out, '{');
}

void jw_row_str(jw_row_writer *w, size_t col, const char *s)
{
    size_t mark = w->out->len;

    assert(col == w->next && col < w->t->ncolumns);
    assert(w->t->columns[col].type != JW_COL_INT && w->t->columns[col].type != JW_COL_BIGINT &&
           w->t->columns[col].type != JW_COL_BOOL);
    if (!s) {
        skip(w, col);
        return;
    }
    add_key(w, col);
    if (!add_string(w->out, s)) {
        w->out->len = mark; /* json_string refuses it: left out */
        skip(w, col);
        return;
    }
    done(w);
}

void jw_row_str_or_null(jw_row_writer *w, size_t col, const char *s)
{
    if (s && *s)
        jw_row_str(w, col, s);
    else
        jw_row_null(w, col);
}

void jw_row_int(jw_row_writer *w, size_t col, int64_t v)
{
    char digits[24];
    size_t n = sizeof(digits);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

    assert(col == w->next && col < w->t->ncolumns);
    assert(w->t->columns[col].type == JW_COL_INT || w->t->columns[col].type == JW_COL_BIGINT ||
           w->t->columns[col].type == JW_COL_JSONB);
    add_key(w, col);
    do
        digits[--n] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        digits[--n] = '-';
    jw_buf_add(w->out, digits + n, sizeof(digits) - n);
    done(w);
}

void jw_row_bool(jw_row_writer *w, size_t col, bool v)
{
    assert(col == w->next && col < w->t->ncolumns);
    assert(w->t->columns[col].type == JW_COL_BOOL || w->t->columns[col].type == JW_COL_JSONB);
    add_key(w, col);
    jw_buf_adds(w->out, v ? "true" : "false");
    done(w);
}

void jw_row_null(jw_row_writer *w, size_t col)
{
    add_key(w, col);
    jw_buf_add(w->out, "null", 4);
    done(w);
}

void jw_row_ts(jw_row_writer *w, size_t col, int64_t us)
{
    char text[40];

    if (!us) {
        jw_row_null(w, col);
        return;
    }
    jw_format_ts(us, text, sizeof(text));
    jw_row_str(w, col, text);
}

static int add_dumped(const char *p, size_t len, void *arg)
{
    jw_buf_add(arg, p, len);
    return 0;
}

void jw_row_json(jw_row_writer *w, size_t col, const json_t *v)
{
    if (!v) {
        skip(w, col);
        return;
    }
    add_key(w, col);
    if (json_dump_callback(v, add_dumped, w->out, JSON_COMPACT | JSON_ENCODE_ANY) != 0)
        jw_oom("row JSON");
    done(w);
}

void jw_row_end(jw_row_writer *w)
{
    assert(w->next == w->t->ncolumns);
    jw_buf_addch(w->out, '}');
}
