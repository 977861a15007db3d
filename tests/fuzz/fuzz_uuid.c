/*
 * fuzz_uuid.c - jw_uuid_valid (common/jw_util.c), the gate every job, step,
 * user and OTP id from a path, a body, a message or a token passes.
 *
 * The input is given as an exact-size NUL-terminated copy, so ASan sees any
 * read past the terminator. The oracle is the canonical form spelled out
 * independently: 36 characters, '-' at 8, 13, 18 and 23, hex digits of either
 * case elsewhere, nothing after.
 */
#include "jw_util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool expected(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!strchr("0123456789abcdefABCDEF", s[i])) {
            return false;
        }
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    if (jw_uuid_valid(s) != expected(s))
        abort();
    free(s);
    return 0;
}
