/*
 * fuzz_conninfo.c - jw_log_redact_conninfo (common/jw_log.c), which puts the
 * database URL and the provider URL into log lines with the password masked.
 *
 * Input: one byte choosing the buffer size (0 means 4096, else 1..255), then
 * the connection string. The buffer is an exact-size allocation, so ASan
 * sees a write past it.
 *
 * Oracles besides the sanitizers: the output is NUL-terminated inside the
 * buffer; and, with the large buffer, the password libpq itself would use
 * (PQconninfoParse, the same parser PQconnectdb runs) must not survive into
 * the output. To stay free of false alarms the leak check skips inputs with a
 * backslash (libpq unescapes those, so the value in the text is not the
 * password), looks only at passwords of 4 or more bytes without '*' that
 * appear verbatim in the input (not percent-encoded), and asks that the
 * output hold fewer copies of them than the input.
 */
#include "jw_log.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/*
 * The output with the redactor's own "password=***" blanked out: a password
 * such as "ord=" is otherwise "found" inside that literal (passw-ord=), and
 * key=value input written "password =" comes out as "password=".
 */
static char *without_masks(const char *out)
{
    char *copy = strdup(out), *p;

    if (!copy)
        abort();
    while ((p = strstr(copy, "password=***")) != NULL)
        memset(p, '\x01', 12);
    return copy;
}

static void check_password(const char *in, const char *raw_out)
{
    PQconninfoOption *opts;
    char *out;

    if (strchr(in, '\\'))
        return;
    opts = PQconninfoParse(in, NULL);
    if (!opts)
        return;
    out = without_masks(raw_out);
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "password") != 0 || !o->val)
            continue;
        if (strlen(o->val) >= 4 && !strchr(o->val, '*') && count(in, o->val) > 0 &&
            count(out, o->val) >= count(in, o->val))
            abort(); /* the password libpq would use is in the log line */
    }
    free(out);
    PQconninfoFree(opts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t bufsize;
    char *in, *out;

    if (size < 1 || size > 2048)
        return 0;
    bufsize = data[0] ? data[0] : 4096;
    in = malloc(size);
    out = malloc(bufsize);
    if (!in || !out)
        abort();
    memcpy(in, data + 1, size - 1);
    in[size - 1] = '\0';
    jw_log_redact_conninfo(in, out, bufsize);
    if (!memchr(out, '\0', bufsize))
        abort();
    if (bufsize == 4096)
        check_password(in, out);
    free(in);
    free(out);
    return 0;
}
