/*
 * fuzz_bytea.c - PostgreSQL's bytea hex text (common/jw_crypto.c
 * jw_bytea_parse), as read back from the store (sealed session tokens).
 *
 * Oracles besides the sanitizers: a refusal leaves *out NULL and *n 0; an
 * accepted text is "\x" plus an even number of hex digits, and jw_bytea_hex
 * of the bytes gives it back (hex digits in lower case).
 */
#include "jw_crypto.h"
#include "jw_error.h"

#include <ctype.h>
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
    char *text = malloc(size + 1), *back;
    uint8_t *out = (uint8_t *)1;
    size_t n = 1, len;
    int rc;

    check(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    len = strlen(text);
    rc = jw_bytea_parse(text, &out, &n);
    if (rc != 0) {
        check(rc == JW_EINVAL || rc == JW_ETOOBIG);
        check(out == NULL && n == 0);
        free(text);
        return 0;
    }
    check(out != NULL);
    check(len >= 2 && text[0] == '\\' && text[1] == 'x' && len == 2 + 2 * n);
    back = jw_bytea_hex(out, n);
    check(back != NULL && strlen(back) == len);
    for (size_t i = 0; i < len; i++)
        check(back[i] == (char)tolower((unsigned char)text[i]));
    free(back);
    free(out);
    free(text);
    return 0;
}
