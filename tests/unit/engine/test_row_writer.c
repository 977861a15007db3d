/*
 * The row writer (engine/jw_schema.h, jw_row_writer) against what it
 * replaces: for every table, rows of random values - strings with every
 * control character, quotes, backslashes, multi-byte UTF-8 and byte
 * sequences that are not UTF-8; integers to both ends of int64; instants;
 * nested JSON; columns left out - written by the writer are byte for byte
 * json_dumps(jw_schema_row(...), JSON_COMPACT) of the same values. The
 * engine's deltas, the store's rows and every client's bytes depend on it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_buf.h"
#include "jw_schema.h"
#include "jw_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 4000

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t next(void)
{
    /* xorshift64*: the same rows on every run. */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ULL;
}

static unsigned pick(unsigned n)
{
    return (unsigned)(next() % n);
}

/* Appends one piece of text meant to be awkward for an encoder. */
static void add_piece(jw_buf *b)
{
    static const char *const valid[] = {"plain",
                                        "\"",
                                        "\\",
                                        "/",
                                        "\x7f",
                                        "\xc2\x80",
                                        "\xc3\xa9",
                                        "\xdf\xbf",
                                        "\xe0\xa0\x80",
                                        "\xe2\x82\xac",
                                        "\xe2\x80\xa8",
                                        "\xed\x9f\xbf",
                                        "\xee\x80\x80",
                                        "\xef\xbf\xbf",
                                        "\xf0\x90\x80\x80",
                                        "\xf0\x9f\x92\xb3",
                                        "\xf4\x8f\xbf\xbf"};
    /* Not UTF-8: overlong forms, surrogates, past U+10FFFF, cut short, stray bytes. */
    static const char *const invalid[] = {"\xc0\x80",
                                          "\xc1\xbf",
                                          "\xe0\x80\xaf",
                                          "\xe0\x9f\xbf",
                                          "\xf0\x8f\xbf\xbf",
                                          "\xed\xa0\x80",
                                          "\xed\xa5\x80",
                                          "\xed\xbf\xbf",
                                          "\xf4\x90\x80\x80",
                                          "\xf5\x80\x80\x80",
                                          "\xe2\x82",
                                          "\xe2\x28\xa1",
                                          "\x80",
                                          "\xbf",
                                          "\xfe",
                                          "\xff",
                                          "\xf0\x9f\x92",
                                          "\xc3"};

    switch (pick(16)) {
    case 0:
    case 1:
    case 2:
    case 3: jw_buf_addch(b, (char)(1 + pick(0x1f))); break; /* control (never NUL) */
    case 4: jw_buf_adds(b, invalid[pick(sizeof(invalid) / sizeof(invalid[0]))]); break;
    case 5:
    case 6:
    case 7:
    case 8: jw_buf_adds(b, valid[pick(sizeof(valid) / sizeof(valid[0]))]); break;
    default: jw_buf_addch(b, (char)(' ' + pick(95)));
    }
}

static char *random_text(void)
{
    jw_buf b;
    unsigned n = pick(12);

    jw_buf_init(&b, 64);
    for (unsigned i = 0; i < n; i++)
        add_piece(&b);
    jw_buf_addch(&b, '\0');
    return b.data;
}

static json_t *random_json(int depth)
{
    switch (pick(depth > 2 ? 6 : 8)) {
    case 0: return json_null();
    case 1: return json_boolean(pick(2));
    case 2: return json_integer((json_int_t)next());
    case 3: return json_real((double)(int64_t)next() / 1e6);
    case 4:
    case 5: {
        char *t = random_text();
        json_t *s = json_string(t);

        free(t);
        return s ? s : json_string("fallback");
    }
    case 6: {
        json_t *a = json_array();

        for (unsigned i = pick(4); i > 0; i--)
            json_array_append_new(a, random_json(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();

        for (unsigned i = pick(4); i > 0; i--) {
            char key[16];

            snprintf(key, sizeof(key), "k%u\t%u", pick(100), i);
            json_object_set_new(o, key, random_json(depth + 1));
        }
        return o;
    }
    }
}

static int64_t random_int(void)
{
    static const int64_t edges[] = {0, 1, -1, 9, 10, -10, INT64_MAX, INT64_MIN, INT64_MIN + 1};

    return pick(3) ? (int64_t)(next() >> pick(64)) * (pick(2) ? 1 : -1)
                   : edges[pick(sizeof(edges) / sizeof(edges[0]))];
}

/* One column both ways: through the writer, and as the value jw_schema_row takes. */
static json_t *one_column(jw_row_writer *w, size_t col, jw_col_type type)
{
    if (pick(8) == 0) {
        jw_row_null(w, col);
        return json_null();
    }
    switch (type) {
    case JW_COL_INT:
    case JW_COL_BIGINT: {
        int64_t v = random_int();

        jw_row_int(w, col, v);
        return json_integer((json_int_t)v);
    }
    case JW_COL_BOOL: {
        bool v = pick(2);

        jw_row_bool(w, col, v);
        return json_boolean(v);
    }
    case JW_COL_JSONB: {
        json_t *v = pick(6) ? random_json(0) : NULL;

        jw_row_json(w, col, v);
        return v; /* NULL: left out both ways */
    }
    case JW_COL_TIMESTAMPTZ: {
        int64_t us = pick(5) ? (int64_t)(next() % 4102444800000000ULL) : 0;
        char text[40];

        jw_row_ts(w, col, us);
        if (!us)
            return json_null();
        jw_format_ts(us, text, sizeof(text));
        return json_string(text);
    }
    default: {
        char *t = pick(10) ? random_text() : NULL;
        json_t *v;

        if (pick(2)) {
            jw_row_str(w, col, t);
            v = t ? json_string(t) : NULL;
        } else {
            jw_row_str_or_null(w, col, t);
            v = t && *t ? json_string(t) : json_null();
        }
        free(t);
        return v;
    }
    }
}

static void rows_match(jw_table table)
{
    const jw_schema_table *t = &jw_schema_tables[table];
    json_t *v[32];
    jw_buf out;
    int left_out = 0, escaped = 0;

    assert_true(t->ncolumns <= sizeof(v) / sizeof(v[0]));
    jw_buf_init(&out, 1024);
    for (int r = 0; r < ROWS; r++) {
        jw_row_writer w;
        char *want;
        json_t *row;

        jw_buf_reset(&out);
        jw_row_begin(&w, t, &out);
        for (size_t c = 0; c < t->ncolumns; c++) {
            v[c] = one_column(&w, c, t->columns[c].type);
            left_out += !v[c];
        }
        jw_row_end(&w);
        row = jw_schema_row(t, v);
        want = json_dumps(row, JSON_COMPACT);
        assert_non_null(want);
        if (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
            fail_msg("%s row %d:\n writer: %.*s\n jansson: %s", t->name, r, (int)out.len, out.data,
                     want);
        escaped += strstr(want, "\\u00") != NULL;
        free(want);
        json_decref(row);
    }
    /* The rows did reach the awkward cases. */
    assert_true(left_out > 0);
    assert_true(escaped > 0);
    jw_buf_release(&out);
}

/* Random rows of the table the state names. */
static void test_rows(void **state)
{
    rows_match(*(const jw_table *)*state);
}

/* The cases by name: what is left out, what is escaped, and how. */
static void test_cases(void **state)
{
    static const struct {
        const char *in, *out; /* out NULL: left out */
    } cases[] = {
        {"", "\"\""},
        {"a\"b\\c/d", "\"a\\\"b\\\\c/d\""},
        {"\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\""},
        {"\x01\x1f\x7f", "\"\\u0001\\u001F\x7f\""},
        {"\xe2\x82\xac \xf0\x9f\x92\xb3", "\"\xe2\x82\xac \xf0\x9f\x92\xb3\""},
        {"\xc0\x80", NULL},
        {"\xed\xa0\x80", NULL},
        {"\xed\xbf\xbf", NULL},
        {"\xe0\x9f\xbf", NULL},
        {"\xf0\x8f\xbf\xbf", NULL},
        {"\xf4\x90\x80\x80", NULL},
        {"ok\xe2\x82", NULL},
    };
    const jw_schema_table *t = &jw_schema_tables[JW_TABLE_OTP_REQUESTS];
    jw_buf out;

    (void)state;
    jw_buf_init(&out, 256);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        jw_row_writer w;
        char want[128];

        jw_buf_reset(&out);
        jw_row_begin(&w, t, &out);
        jw_row_str(&w, JW_OTP_REQUESTS_id, cases[i].in);
        for (size_t c = JW_OTP_REQUESTS_id + 1; c < t->ncolumns; c++)
            jw_row_json(&w, c, NULL);
        jw_row_end(&w);
        if (cases[i].out)
            snprintf(want, sizeof(want), "{\"id\":%s}", cases[i].out);
        else
            snprintf(want, sizeof(want), "{}");
        assert_int_equal(out.len, strlen(want));
        assert_memory_equal(out.data, want, out.len);
    }
    /* A column after one left out has no comma before it. */
    {
        jw_row_writer w;
        const char *want = "{\"job_run_id\":null,\"max_attempts\":-9223372036854775808}";

        jw_buf_reset(&out);
        jw_row_begin(&w, t, &out);
        for (size_t c = 0; c < t->ncolumns; c++) {
            if (c == JW_OTP_REQUESTS_job_run_id)
                jw_row_str_or_null(&w, c, "");
            else if (c == JW_OTP_REQUESTS_max_attempts)
                jw_row_int(&w, c, INT64_MIN);
            else if (t->columns[c].type == JW_COL_INT)
                jw_row_json(&w, c, NULL);
            else
                jw_row_str(&w, c, NULL);
        }
        jw_row_end(&w);
        assert_int_equal(out.len, strlen(want));
        assert_memory_equal(out.data, want, out.len);
    }
    jw_buf_release(&out);
}

int main(void)
{
    static const jw_table tables[] = {JW_TABLE_JOB_RUNS, JW_TABLE_JOB_STEPS, JW_TABLE_OTP_REQUESTS,
                                      JW_TABLE_AUTH_SESSIONS};
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test_prestate(test_rows, (void *)&tables[0]),
        cmocka_unit_test_prestate(test_rows, (void *)&tables[1]),
        cmocka_unit_test_prestate(test_rows, (void *)&tables[2]),
        cmocka_unit_test_prestate(test_rows, (void *)&tables[3]),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
