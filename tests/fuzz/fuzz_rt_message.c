/*
 * fuzz_rt_message - the Supabase Realtime parsers (server/rt_parse.c) on any
 * bytes a client can send: a Phoenix message in either encoding, and the
 * postgres_changes filters of a join, parsed for their table and matched
 * against rows.
 *
 * The first input byte picks what the rest is (seeds start with a digit):
 *   byte & 3 == 0  a vsn 1.0.0 message (object), '0'
 *   byte & 3 == 1  a vsn 2.0.0 message (array), '1'
 *   otherwise      a filter string, parsed for every table, '2'
 * A message that parses as a phx_join has each config.postgres_changes[]
 * filter parsed for its table (every table when it names none we serve). A
 * filter string holding a newline is also split there into A and B, and
 * "A,B" checked against the two.
 *
 * Checks, besides no crash, leak or UB:
 *  - a message that parses has its refs NULL, null or strings of at most
 *    JW_RT_MAX_REF bytes, a topic of 1..JW_RT_MAX_TOPIC bytes without NUL,
 *    an event of 1..64 bytes, an object payload, all borrowed from root in
 *    the places its encoding puts them; a refusal is one of the two reasons,
 *    with details, and no topic; release leaves the struct zeroed;
 *  - a filter that parses has 0..JW_RT_MAX_CONDS conditions (0 only for the
 *    empty string), each on a column of its table that is not jsonb, with
 *    one value (1..JW_RT_MAX_IN for in) of at most JW_RT_MAX_VALUE bytes in
 *    its column's normal form (uuids lower-case, booleans true/false,
 *    integers that parse); a refusal says why;
 *  - matching: rows of nulls, {} and non-objects match only the empty
 *    filter, as does a row whose every column holds the wrong JSON type;
 *    a row built from the filter's own first values matches exactly when
 *    every condition is eq, lte, gte or in (when no column repeats), and
 *    the same row with its uuids upper-cased gives the same answer;
 *  - "A,B", when A leaves no parenthesis or quote open, parses exactly
 *    when A and B do (within the limits), into A's conditions then B's.
 */
#include "jw_util.h"
#include "rt_parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static bool ref_valid(const json_t *ref)
{
    return !ref || json_is_null(ref) ||
           (json_is_string(ref) && json_string_length(ref) <= JW_RT_MAX_REF);
}

static bool is_int(const char *s, long long *out)
{
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 10);
    return *s && !errno && *end == '\0';
}

/* The value of a filter value as the row would hold it; upper: uuids upper-cased. */
static json_t *row_value(const jw_rt_column *col, const char *v, bool upper)
{
    long long n;

    switch (col->type) {
    case JW_RT_INT: CHECK(is_int(v, &n)); return json_integer(n);
    case JW_RT_BOOL: return json_boolean(strcmp(v, "true") == 0);
    case JW_RT_UUID:
        if (upper) {
            char buf[64];
            size_t i;

            for (i = 0; v[i] && i < sizeof(buf) - 1; i++)
                buf[i] = (char)toupper((unsigned char)v[i]);
            buf[i] = '\0';
            return json_string(buf);
        }
        return json_string(v);
    case JW_RT_TEXT:
    case JW_RT_TIMESTAMPTZ:
        /* Filter values may hold bytes that are not UTF-8; rows never do. */
        return json_stringn_nocheck(v, strlen(v));
    case JW_RT_JSONB: break;
    }
    abort();
}

/* Any JSON type the column cannot compare with. */
static json_t *wrong_value(const jw_rt_column *col)
{
    switch (col->type) {
    case JW_RT_INT:
    case JW_RT_BOOL: return json_string("7");
    case JW_RT_UUID:
    case JW_RT_TEXT:
    case JW_RT_TIMESTAMPTZ: return json_integer(7);
    case JW_RT_JSONB: return json_string("{}");
    }
    abort();
}

static void check_filter(const jw_rt_table *t, const char *text, const jw_rt_filter *f)
{
    for (size_t i = 0; i < f->n; i++) {
        const jw_rt_cond *c = &f->conds[i];

        CHECK(c->column >= t->columns && c->column < t->columns + t->ncolumns);
        CHECK(c->column->type != JW_RT_JSONB);
        CHECK(c->op >= JW_RT_EQ && c->op <= JW_RT_IN);
        CHECK(c->nvalues >= 1);
        CHECK(c->op == JW_RT_IN ? c->nvalues <= JW_RT_MAX_IN : c->nvalues == 1);
        for (size_t k = 0; k < c->nvalues; k++) {
            const char *v = c->values[k];
            long long n;

            CHECK(v && strlen(v) <= JW_RT_MAX_VALUE);
            switch (c->column->type) {
            case JW_RT_UUID:
                CHECK(jw_uuid_valid(v));
                for (const char *p = v; *p; p++)
                    CHECK(!isupper((unsigned char)*p));
                break;
            case JW_RT_INT: CHECK(is_int(v, &n)); break;
            case JW_RT_BOOL: CHECK(strcmp(v, "true") == 0 || strcmp(v, "false") == 0); break;
            default: break;
            }
        }
    }
    CHECK(f->n <= JW_RT_MAX_CONDS);
    CHECK((f->n == 0) == (text[0] == '\0'));
}

static void match_filter(const jw_rt_table *t, const jw_rt_filter *f)
{
    json_t *nulls = json_object(), *wrong = json_object(), *own = json_object(),
           *own_upper = json_object(), *not_object = json_array();
    bool repeats = false, expect = true;

    for (size_t k = 0; k < t->ncolumns; k++) {
        json_object_set_new(nulls, t->columns[k].name, json_null());
        json_object_set_new(wrong, t->columns[k].name, wrong_value(&t->columns[k]));
    }
    CHECK(jw_rt_filter_match(f, nulls) == (f->n == 0));
    CHECK(jw_rt_filter_match(f, wrong) == (f->n == 0));
    CHECK(jw_rt_filter_match(f, not_object) == (f->n == 0));
    json_object_clear(nulls);
    CHECK(jw_rt_filter_match(f, nulls) == (f->n == 0));

    for (size_t i = 0; i < f->n; i++) {
        const jw_rt_cond *c = &f->conds[i];

        if (json_object_get(own, c->column->name))
            repeats = true;
        json_object_set_new(own, c->column->name, row_value(c->column, c->values[0], false));
        json_object_set_new(own_upper, c->column->name, row_value(c->column, c->values[0], true));
        if (c->op == JW_RT_NEQ || c->op == JW_RT_LT || c->op == JW_RT_GT)
            expect = false;
    }
    if (!repeats)
        CHECK(jw_rt_filter_match(f, own) == expect);
    CHECK(jw_rt_filter_match(f, own) == jw_rt_filter_match(f, own_upper));

    json_decref(nulls);
    json_decref(wrong);
    json_decref(own);
    json_decref(own_upper);
    json_decref(not_object);
}

static void fuzz_filter(const jw_rt_table *t, const char *text)
{
    char err[256];
    jw_rt_filter f;

    err[0] = '\0';
    if (jw_rt_filter_parse(t, text, &f, err, sizeof(err)) == 0) {
        check_filter(t, text, &f);
        match_filter(t, &f);
    } else {
        CHECK(err[0] != '\0');
    }
    jw_rt_filter_release(&f);
    CHECK(f.n == 0);
}

static void fuzz_filter_all(const char *text)
{
    for (int i = 0; i < JW_RT_TABLES; i++)
        fuzz_filter(&jw_rt_tables[i], text);
}

/*
 * Whether the splitter ends a text where it began, outside parentheses and
 * quotes, by the rule rt_parse.c states: conditions are split at commas
 * outside them, and a quote opens only first in a list's value. Only then
 * are the conditions of "A,B" those of A followed by those of B.
 */
static bool closed(const char *s)
{
    int depth = 0;
    bool quoted = false;

    for (size_t i = 0; s[i]; i++) {
        if (quoted)
            quoted = s[i] != '"';
        else if (s[i] == '"' && depth && (s[i - 1] == '(' || s[i - 1] == ','))
            quoted = true;
        else if (s[i] == '(')
            depth++;
        else if (s[i] == ')' && depth)
            depth--;
    }
    return !depth && !quoted;
}

static bool same_cond(const jw_rt_cond *x, const jw_rt_cond *y)
{
    if (x->column != y->column || x->op != y->op || x->nvalues != y->nvalues)
        return false;
    for (size_t k = 0; k < x->nvalues; k++)
        if (strcmp(x->values[k], y->values[k]) != 0)
            return false;
    return true;
}

/* "A,B" parses when A and B do, into A's conditions then B's. */
static void fuzz_compose(const jw_rt_table *t, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *ab, err[256];
    jw_rt_filter fa, fb, fab;
    int ra, rb, rab;

    if (!la || !lb || !closed(a))
        return;
    ab = malloc(la + lb + 2);
    if (!ab)
        abort();
    memcpy(ab, a, la);
    ab[la] = ',';
    memcpy(ab + la + 1, b, lb + 1);
    ra = jw_rt_filter_parse(t, a, &fa, err, sizeof(err));
    rb = jw_rt_filter_parse(t, b, &fb, err, sizeof(err));
    rab = jw_rt_filter_parse(t, ab, &fab, err, sizeof(err));
    if (ra == 0 && rb == 0 && fa.n + fb.n <= JW_RT_MAX_CONDS && la + lb + 1 <= JW_RT_MAX_FILTER) {
        CHECK(rab == 0 && fab.n == fa.n + fb.n);
        for (size_t i = 0; i < fa.n; i++)
            CHECK(same_cond(&fab.conds[i], &fa.conds[i]));
        for (size_t i = 0; i < fb.n; i++)
            CHECK(same_cond(&fab.conds[fa.n + i], &fb.conds[i]));
    } else {
        CHECK(rab == -1);
    }
    jw_rt_filter_release(&fa);
    jw_rt_filter_release(&fb);
    jw_rt_filter_release(&fab);
    free(ab);
}

static void fuzz_join(const jw_rt_msg *m)
{
    json_t *changes = json_object_get(json_object_get(m->payload, "config"), "postgres_changes");
    json_t *entry;
    size_t i;

    json_array_foreach(changes, i, entry)
    {
        json_t *filter = json_object_get(entry, "filter");
        const char *table = json_string_value(json_object_get(entry, "table"));
        int ti = table ? jw_rt_table_find(table) : -1;

        if (!json_is_string(filter))
            continue;
        if (ti >= 0)
            fuzz_filter(&jw_rt_tables[ti], json_string_value(filter));
        else
            fuzz_filter_all(json_string_value(filter));
    }
}

static void fuzz_message(const char *data, size_t size, bool array)
{
    char err[256];
    jw_rt_msg m;
    const char *why;

    err[0] = '\0';
    why = jw_rt_parse(data, size, array, &m, err, sizeof(err));
    if (!why) {
        json_t *topic, *event;

        CHECK(ref_valid(m.join_ref) && ref_valid(m.ref));
        CHECK(m.topic && m.topic[0] && strlen(m.topic) <= JW_RT_MAX_TOPIC);
        CHECK(m.event && m.event[0] && strlen(m.event) <= 64);
        CHECK(json_is_object(m.payload));
        if (array) {
            CHECK(json_is_array(m.root) && json_array_size(m.root) == 5);
            CHECK(m.join_ref == json_array_get(m.root, 0));
            CHECK(m.ref == json_array_get(m.root, 1));
            topic = json_array_get(m.root, 2);
            event = json_array_get(m.root, 3);
            CHECK(m.payload == json_array_get(m.root, 4));
        } else {
            CHECK(json_is_object(m.root));
            CHECK(m.join_ref == json_object_get(m.root, "join_ref"));
            CHECK(m.ref == json_object_get(m.root, "ref"));
            topic = json_object_get(m.root, "topic");
            event = json_object_get(m.root, "event");
            CHECK(m.payload == json_object_get(m.root, "payload"));
        }
        /* Borrowed, and whole: no NUL cut a topic short. */
        CHECK(m.topic == json_string_value(topic));
        CHECK(strlen(m.topic) == json_string_length(topic));
        CHECK(m.event == json_string_value(event));
        CHECK(strlen(m.event) == json_string_length(event));
        if (strcmp(m.event, "phx_join") == 0)
            fuzz_join(&m);
    } else {
        CHECK(strcmp(why, "malformed JSON") == 0 || strcmp(why, "malformed message") == 0);
        CHECK(err[0] != '\0');
        CHECK(!m.topic && !m.event);
        CHECK(ref_valid(m.join_ref) && ref_valid(m.ref));
        CHECK(m.root || (!m.join_ref && !m.ref && !m.payload));
    }
    jw_rt_msg_release(&m);
    CHECK(!m.root && !m.join_ref && !m.ref && !m.topic && !m.event && !m.payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *rest = (const char *)data + 1;

    if (size == 0)
        return 0;
    switch (data[0] & 3) {
    case 0: fuzz_message(rest, size - 1, false); break;
    case 1: fuzz_message(rest, size - 1, true); break;
    default: {
        /* A C string: up to the first NUL, as a filter reaches the parser. */
        char *text = malloc(size), *nl;

        if (!text)
            abort();
        memcpy(text, rest, size - 1);
        text[size - 1] = '\0';
        fuzz_filter_all(text);
        /* Text with a newline: the filters before and after it, ANDed. */
        if ((nl = strchr(text, '\n'))) {
            *nl = '\0';
            for (int i = 0; i < JW_RT_TABLES; i++)
                fuzz_compose(&jw_rt_tables[i], text, nl + 1);
        }
        free(text);
        break;
    }
    }
    return 0;
}
