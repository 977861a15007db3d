/*
 * rt_parse.c - Phoenix messages, the watched tables and postgres_changes
 * filters (see rt_parse.h).
 */
#include "rt_parse.h"

#include "jw_log.h"
#include "jw_schema.h"
#include "jw_util.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- messages ------------------------------------------------------------------ */

static bool ref_ok(const json_t *v)
{
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) <= JW_RT_MAX_REF);
}

const char *jw_rt_parse(const char *data, size_t len, bool array, jw_rt_msg *out, char *err,
                        size_t errlen)
{
    json_error_t jerr;
    json_t *topic, *event;

    memset(out, 0, sizeof(*out));
    out->root = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!out->root) {
        /* Without jansson's "near '...'": it quotes the input, and a broken
         * otp.submit would have its code sent back (or logged). */
        const char *near = strstr(jerr.text, " near ");

        snprintf(err, errlen, "malformed JSON at column %d: %.*s", jerr.column,
                 near ? (int)(near - jerr.text) : (int)sizeof(jerr.text), jerr.text);
        return "malformed JSON";
    }
    if (array) {
        if (!json_is_array(out->root) || json_array_size(out->root) != 5) {
            snprintf(err, errlen, "vsn 2.0.0 messages are [join_ref, ref, topic, event, payload]");
            return "malformed message";
        }
        out->join_ref = json_array_get(out->root, 0);
        out->ref = json_array_get(out->root, 1);
        topic = json_array_get(out->root, 2);
        event = json_array_get(out->root, 3);
        out->payload = json_array_get(out->root, 4);
    } else {
        if (!json_is_object(out->root)) {
            snprintf(err, errlen, "vsn 1.0.0 messages are objects {topic, event, payload, ref}");
            return "malformed message";
        }
        out->join_ref = json_object_get(out->root, "join_ref");
        out->ref = json_object_get(out->root, "ref");
        topic = json_object_get(out->root, "topic");
        event = json_object_get(out->root, "event");
        out->payload = json_object_get(out->root, "payload");
    }
    if (!ref_ok(out->join_ref) || !ref_ok(out->ref)) {
        out->join_ref = out->ref = NULL;
        snprintf(err, errlen, "ref and join_ref must be strings of at most %d characters or null",
                 JW_RT_MAX_REF);
        return "malformed message";
    }
    if (!json_is_string(topic) || json_string_length(topic) == 0 ||
        json_string_length(topic) > JW_RT_MAX_TOPIC ||
        strlen(json_string_value(topic)) != json_string_length(topic)) {
        snprintf(err, errlen, "topic must be a string of 1 to %d characters", JW_RT_MAX_TOPIC);
        return "malformed message";
    }
    if (!json_is_string(event) || json_string_length(event) == 0 ||
        json_string_length(event) > 64) {
        snprintf(err, errlen, "event must be a string of 1 to 64 characters");
        return "malformed message";
    }
    if (!json_is_object(out->payload)) {
        snprintf(err, errlen, "payload must be an object");
        return "malformed message";
    }
    out->topic = json_string_value(topic);
    out->event = json_string_value(event);
    return NULL;
}

void jw_rt_msg_release(jw_rt_msg *m)
{
    json_decref(m->root);
    memset(m, 0, sizeof(*m));
}

/* ---- the tables ------------------------------------------------------------------ */

/*
 * Each table's columns, as the rows the engine writes hold them (the one
 * description in engine/jw_schema.h), once as an array and once as the
 * "columns" JSON of an event (",{…},{…}" + 1 skips the first comma).
 */
#define COL(name, type) {#name, JW_SCHEMA_PG_##type, JW_RT_##type},
#define COL_JSON(name, type) ",{\"name\":\"" #name "\",\"type\":\"" JW_SCHEMA_PG_##type "\"}"

static const jw_rt_column job_runs_cols[] = {JW_SCHEMA_JOB_RUNS(COL)};
static const jw_rt_column job_steps_cols[] = {JW_SCHEMA_JOB_STEPS(COL)};
static const jw_rt_column otp_requests_cols[] = {JW_SCHEMA_OTP_REQUESTS(COL)};

#define N(a) (sizeof(a) / sizeof((a)[0]))

const jw_rt_table jw_rt_tables[JW_RT_TABLES] = {
    {"job_runs", "id", job_runs_cols, N(job_runs_cols), &(JW_SCHEMA_JOB_RUNS(COL_JSON))[1]},
    {"job_steps", "job_run_id", job_steps_cols, N(job_steps_cols),
     &(JW_SCHEMA_JOB_STEPS(COL_JSON))[1]},
    {"otp_requests", "job_run_id", otp_requests_cols, N(otp_requests_cols),
     &(JW_SCHEMA_OTP_REQUESTS(COL_JSON))[1]},
};

int jw_rt_table_find(const char *name)
{
    for (int i = 0; i < JW_RT_TABLES; i++)
        if (strcmp(jw_rt_tables[i].name, name) == 0)
            return i;
    return -1;
}

const jw_rt_column *jw_rt_column_find(const jw_rt_table *t, const char *name)
{
    for (size_t i = 0; i < t->ncolumns; i++)
        if (strcmp(t->columns[i].name, name) == 0)
            return &t->columns[i];
    return NULL;
}

/* ---- filters ------------------------------------------------------------------- */

static const struct {
    const char *name;
    jw_rt_op op;
} ops[] = {
    {"eq", JW_RT_EQ}, {"neq", JW_RT_NEQ}, {"lt", JW_RT_LT}, {"lte", JW_RT_LTE},
    {"gt", JW_RT_GT}, {"gte", JW_RT_GTE}, {"in", JW_RT_IN},
};

/* Whether s, all of it, is a decimal int64. */
static bool parse_int(const char *s, long long *out)
{
    char *end;

    if (!*s || strlen(s) > 20)
        return false;
    errno = 0;
    *out = strtoll(s, &end, 10);
    /* Blanks around it and a '+', as PostgreSQL's int8 input takes them (strtoll only before). */
    while (end != s && isspace((unsigned char)*end))
        end++;
    return !errno && end != s && *end == '\0';
}

/*
 * Checks one value against its column's type and stores its normal form:
 * uuids lower-case, integers in plain decimal (no blanks, no +, no leading 0), booleans
 * "true"/"false".
 */
static char *value_for(const jw_rt_column *col, const char *v, size_t n, char *err, size_t errlen)
{
    char buf[JW_RT_MAX_VALUE + 1];
    long long num;

    if (n > JW_RT_MAX_VALUE) {
        snprintf(err, errlen, "a filter value may hold at most %d bytes", JW_RT_MAX_VALUE);
        return NULL;
    }
    memcpy(buf, v, n);
    buf[n] = '\0';
    if (strlen(buf) != n) {
        snprintf(err, errlen, "a filter value may not hold a NUL byte");
        return NULL;
    }
    switch (col->type) {
    case JW_RT_UUID:
        if (!jw_uuid_valid(buf)) {
            snprintf(err, errlen, "%s is a uuid column: the value must be a UUID", col->name);
            return NULL;
        }
        for (char *p = buf; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'F' ? *p + 32 : *p);
        break;
    case JW_RT_INT:
        if (!parse_int(buf, &num)) {
            snprintf(err, errlen, "%s is an integer column: the value must be an integer",
                     col->name);
            return NULL;
        }
        snprintf(buf, sizeof(buf), "%lld", num); /* its normal form: no blanks, no '+' */
        break;
    case JW_RT_BOOL:
        if (strcmp(buf, "true") == 0 || strcmp(buf, "t") == 0)
            snprintf(buf, sizeof(buf), "true");
        else if (strcmp(buf, "false") == 0 || strcmp(buf, "f") == 0)
            snprintf(buf, sizeof(buf), "false");
        else {
            snprintf(err, errlen, "%s is a boolean column: the value must be true or false",
                     col->name);
            return NULL;
        }
        break;
    case JW_RT_JSONB:
        snprintf(err, errlen, "%s is a jsonb column: filters on it are not supported", col->name);
        return NULL;
    case JW_RT_TEXT:
    case JW_RT_TIMESTAMPTZ: break;
    }
    return jw_xstrdup(buf);
}

static void add_value(jw_rt_cond *c, char *v)
{
    c->values = jw_xrealloc(c->values, (c->nvalues + 1) * sizeof(*c->values));
    c->values[c->nvalues++] = v;
}

/* "(a,\"b c\",d)": the values of an in list. */
static int parse_in(jw_rt_cond *c, const char *p, size_t n, char *err, size_t errlen)
{
    size_t i = 1;

    if (n < 2 || p[0] != '(' || p[n - 1] != ')') {
        snprintf(err, errlen, "in takes a list in parentheses: col=in.(a,b)");
        return -1;
    }
    n--; /* the closing parenthesis */
    if (i == n) {
        snprintf(err, errlen, "an in list needs at least one value");
        return -1;
    }
    while (i <= n) {
        const char *v = p + i;
        size_t len;
        char *value;

        if (*v == '"') {
            const char *q = memchr(v + 1, '"', n - i - 1);

            if (!q) {
                snprintf(err, errlen, "unterminated quoted value in an in list");
                return -1;
            }
            len = (size_t)(q - v - 1);
            v++;
            i += len + 2;
            if (i < n && p[i] != ',') {
                snprintf(err, errlen, "a quoted value must be followed by a comma or ')'");
                return -1;
            }
        } else {
            const char *q = memchr(v, ',', n - i);

            len = q ? (size_t)(q - v) : n - i;
            i += len;
            if (len == 0) {
                snprintf(err, errlen, "an empty value in an in list (quote it: \"\")");
                return -1;
            }
        }
        if (c->nvalues == JW_RT_MAX_IN) {
            snprintf(err, errlen, "an in list may hold at most %d values", JW_RT_MAX_IN);
            return -1;
        }
        if (!(value = value_for(c->column, v, len, err, errlen)))
            return -1;
        add_value(c, value);
        i++; /* the comma, or past the end */
    }
    return 0;
}

static int parse_cond(const jw_rt_table *t, jw_rt_cond *c, const char *p, size_t n, char *err,
                      size_t errlen)
{
    const char *eq = memchr(p, '=', n), *dot;
    char name[64];
    size_t oplen;
    char *value;

    if (!eq || eq == p || (size_t)(eq - p) >= sizeof(name)) {
        snprintf(err, errlen, "a filter is column=operator.value, e.g. id=eq.<uuid>");
        return -1;
    }
    memcpy(name, p, (size_t)(eq - p));
    name[eq - p] = '\0';
    if (!(c->column = jw_rt_column_find(t, name))) {
        snprintf(err, errlen, "%s has no column \"%.63s\"", t->name, name);
        return -1;
    }
    eq++;
    dot = memchr(eq, '.', n - (size_t)(eq - p));
    oplen = dot ? (size_t)(dot - eq) : 0;
    for (size_t i = 0; dot && i < N(ops); i++) {
        if (strlen(ops[i].name) == oplen && memcmp(ops[i].name, eq, oplen) == 0) {
            size_t vlen = n - (size_t)(dot + 1 - p);

            c->op = ops[i].op;
            if (c->op == JW_RT_IN)
                return parse_in(c, dot + 1, vlen, err, errlen);
            if (!(value = value_for(c->column, dot + 1, vlen, err, errlen)))
                return -1;
            add_value(c, value);
            return 0;
        }
    }
    snprintf(err, errlen, "unknown filter operator (eq, neq, lt, lte, gt, gte, in)");
    return -1;
}

int jw_rt_filter_parse(const jw_rt_table *t, const char *text, jw_rt_filter *out, char *err,
                       size_t errlen)
{
    size_t len = strlen(text), start = 0;
    int depth = 0;
    bool quoted = false;

    memset(out, 0, sizeof(*out));
    if (len > JW_RT_MAX_FILTER) {
        snprintf(err, errlen, "a filter may hold at most %d bytes", JW_RT_MAX_FILTER);
        return -1;
    }
    if (len == 0)
        return 0;
    /*
     * Conditions are separated by commas outside parentheses and quotes. A
     * quote opens only where parse_in reads one: first in a list's value.
     */
    for (size_t i = 0; i <= len; i++) {
        char ch = text[i];

        if (quoted) {
            quoted = ch != '"';
            if (ch != '\0')
                continue;
        }
        if (ch == '"' && depth && (text[i - 1] == '(' || text[i - 1] == ',')) {
            quoted = true;
        } else if (ch == '(') {
            depth++;
        } else if (ch == ')') {
            /* A ')' with no '(' before it is a value's byte, not a close. */
            if (depth)
                depth--;
        } else if ((ch == ',' && !depth) || ch == '\0') {
            if (out->n == JW_RT_MAX_CONDS) {
                snprintf(err, errlen, "at most %d filters per binding", JW_RT_MAX_CONDS);
                return -1;
            }
            if (parse_cond(t, &out->conds[out->n++], text + start, i - start, err, errlen) != 0)
                return -1;
            start = i + 1;
        }
    }
    return 0;
}

void jw_rt_filter_release(jw_rt_filter *f)
{
    for (size_t i = 0; i < f->n; i++) {
        for (size_t k = 0; k < f->conds[i].nvalues; k++)
            free(f->conds[i].values[k]);
        free(f->conds[i].values);
    }
    memset(f, 0, sizeof(*f));
}

/*
 * Compares a row's value with a filter value of the same column: <0, 0, >0,
 * or 2 when they cannot be compared (null, or the row holds another type).
 */
static int compare(const jw_rt_column *col, json_t *v, const char *want)
{
    long long w;
    int r;

    switch (col->type) {
    case JW_RT_INT:
        if (!json_is_integer(v) || !parse_int(want, &w))
            return 2;
        return json_integer_value(v) < w ? -1 : json_integer_value(v) > w;
    case JW_RT_BOOL:
        if (!json_is_boolean(v))
            return 2;
        return (int)json_is_true(v) - (strcmp(want, "true") == 0);
    case JW_RT_UUID:
    case JW_RT_TEXT:
    case JW_RT_TIMESTAMPTZ:
        if (!json_is_string(v))
            return 2;
        r = col->type == JW_RT_UUID ? strcasecmp(json_string_value(v), want)
                                    : strcmp(json_string_value(v), want);
        return r < 0 ? -1 : r > 0;
    case JW_RT_JSONB: return 2;
    }
    return 2;
}

static bool cond_match(const jw_rt_cond *c, json_t *row)
{
    json_t *v = json_object_get(row, c->column->name);
    int r;

    if (!v || json_is_null(v))
        return false;
    if (c->op == JW_RT_IN) {
        for (size_t i = 0; i < c->nvalues; i++)
            if (compare(c->column, v, c->values[i]) == 0)
                return true;
        return false;
    }
    r = compare(c->column, v, c->values[0]);
    if (r == 2)
        return false;
    switch (c->op) {
    case JW_RT_EQ: return r == 0;
    case JW_RT_NEQ: return r != 0;
    case JW_RT_LT: return r < 0;
    case JW_RT_LTE: return r <= 0;
    case JW_RT_GT: return r > 0;
    case JW_RT_GTE: return r >= 0;
    case JW_RT_IN: break;
    }
    return false;
}

bool jw_rt_filter_match(const jw_rt_filter *f, json_t *row)
{
    for (size_t i = 0; i < f->n; i++)
        if (!cond_match(&f->conds[i], row))
            return false;
    return true;
}
