/*
 * fuzz_row_text.c - the row writer (engine/jw_schema.h, jw_row_writer),
 * which writes every delta's row, including text that came from outside
 * (a provider's error message, a phone number).
 *
 * The input up to its first NUL is a text column, written both as is and
 * as "text or null"; what follows the NUL, if it parses as JSON, is a JSONB
 * column. Oracle besides the sanitizers: the bytes are exactly
 * json_dumps(jw_schema_row(...), JSON_COMPACT) of the same values.
 */
#include "jw_buf.h"
#include "jw_schema.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const jw_schema_table *t = &jw_schema_tables[JW_TABLE_JOB_STEPS];
    char *text = malloc(size + 1);
    json_t *v[JW_JOB_STEPS__N] = {0}, *data_json = NULL, *row;
    jw_row_writer w;
    size_t n;
    char *want;
    jw_buf out;

    check(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    n = strlen(text);
    if (n < size)
        data_json = json_loadb(text + n + 1, size - n - 1, JSON_DECODE_ANY, NULL);

    jw_buf_init(&out, 256);
    jw_row_begin(&w, t, &out);
    for (size_t c = 0; c < t->ncolumns; c++) {
        if (c == JW_JOB_STEPS_step_name) {
            jw_row_str(&w, c, text);
            v[c] = json_string(text);
        } else if (c == JW_JOB_STEPS_error_message) {
            jw_row_str_or_null(&w, c, text);
            v[c] = *text ? json_string(text) : json_null();
        } else if (c == JW_JOB_STEPS_step_data) {
            jw_row_json(&w, c, data_json);
            v[c] = data_json; /* the row takes this reference */
        } else if (c == JW_JOB_STEPS_attempt) {
            int64_t i = (int64_t)n * (n % 2 ? -1 : 1) * 1000003;

            jw_row_int(&w, c, i);
            v[c] = json_integer((json_int_t)i);
        } else {
            jw_row_null(&w, c);
            v[c] = json_null();
        }
    }
    jw_row_end(&w);
    row = jw_schema_row(t, v);
    want = json_dumps(row, JSON_COMPACT);
    check(want != NULL);
    check(out.len == strlen(want) && memcmp(out.data, want, out.len) == 0);
    free(want);
    json_decref(row);
    jw_buf_release(&out);
    free(text);
    return 0;
}
