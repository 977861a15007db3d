/*
 * fuzz_conninfo.c - jw_log_redact_conninfo (common/jw_log.c), which puts the
 * database URL and the provider URL into log lines with the password masked.
 *
 * Input: one byte choosing the buffer size (0 means 4096, else 1..255), then
 * the connection string. The buffer is an exact-size allocation, so ASan
 * sees a write past it.
 *
 * Oracles besides the sanitizers, all judged by libpq itself
 * (PQconninfoParse, the parser PQconnectdb runs), never by counting
 * substrings (which took normalised whitespace for a leak):
 *  - the output is NUL-terminated inside the buffer, and a small buffer holds
 *    a prefix of what the large one holds;
 *  - when libpq parses the input, and the output as the input with only the
 *    password changed, the output's password is absent or exactly the mask
 *    "***";
 *  - the output does not depend on the password: the harness finds where the
 *    password is written (key=value tokens, a URI's userinfo and its
 *    password= query parameters, percent-encoded keys included, exactly as
 *    libpq reads them), checks with libpq that it found what libpq uses, and
 *    redacts the input again with the password's letters and digits changed
 *    (its quotes, escapes and '/' kept, so libpq sees the same structure,
 *    which libpq confirms: all else equal, the password not). No byte sequence
 *    of 4 or more bytes of the password may be in the output unless it is in
 *    that second output too, and the two outputs must be identical. When the
 *    harness cannot tell where the password is written (libpq disagrees with
 *    it), this check is skipped rather than guessed at.
 */
#include "jw_log.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #x);                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define BIG 4096
#define MASK "***"
#define MAX_SPANS 256 /* each needs "password=": inputs of 2047 bytes hold at most 205 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- where the password is written --------------------------------------------------- */

/* One place the input sets the password: bytes [start, end) of the input. */
typedef struct span {
    size_t start, end; /* a quoted key=value value includes its quotes */
} span;

typedef struct located {
    span spans[MAX_SPANS];
    size_t n;
    char *value; /* the password libpq would use: the last one set, decoded; NULL for none */
} located;

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* [s, e) percent-decoded as libpq decodes URI parts, or NULL where libpq refuses. */
static char *uri_decode(const char *s, const char *e)
{
    char *out = malloc((size_t)(e - s) + 1), *o = out;

    CHECK(out);
    while (s < e) {
        if (*s != '%') {
            *o++ = *s++;
            continue;
        }
        if (e - s < 3 || hex(s[1]) < 0 || hex(s[2]) < 0 || (hex(s[1]) == 0 && hex(s[2]) == 0)) {
            free(out);
            return NULL;
        }
        *o++ = (char)(hex(s[1]) * 16 + hex(s[2]));
        s += 3;
    }
    *o = '\0';
    return out;
}

static bool add(located *l, size_t start, size_t end, char *value)
{
    if (l->n == MAX_SPANS) {
        free(value);
        return false;
    }
    l->spans[l->n++] = (span){start, end};
    free(l->value);
    l->value = value;
    return true;
}

/* key=value form, as libpq's conninfo_parse reads it. */
static bool locate_kv(const char *in, located *l)
{
    const char *s = in;

    for (;;) {
        const char *key, *val;
        size_t klen;
        char *value, *v;
        bool quoted;

        while (is_space(*s))
            s++;
        if (!*s)
            return true;
        key = s;
        while (*s && !is_space(*s) && *s != '=')
            s++;
        klen = (size_t)(s - key);
        while (is_space(*s))
            s++;
        if (*s != '=')
            return false;
        s++;
        while (is_space(*s))
            s++;
        val = s;
        quoted = *s == '\'';
        value = v = malloc(strlen(s) + 1);
        CHECK(value);
        if (quoted) {
            for (s++; *s != '\''; s++) {
                if (!*s) {
                    free(value);
                    return false;
                }
                if (*s == '\\' && s[1])
                    s++;
                *v++ = *s;
            }
            s++;
        } else {
            for (; *s && !is_space(*s); s++) {
                if (*s == '\\') {
                    if (!s[1]) {
                        s++; /* a trailing backslash escapes nothing */
                        break;
                    }
                    s++;
                }
                *v++ = *s;
            }
        }
        *v = '\0';
        if (klen == 8 && strncmp(key, "password", 8) == 0) {
            if (!add(l, (size_t)(val - in), (size_t)(s - in), value))
                return false;
        } else {
            free(value);
        }
    }
}

/* URI form, as libpq's conninfo_uri_parse_options reads it. */
static bool locate_uri(const char *in, size_t prefix, located *l)
{
    const char *start = in + prefix, *p = start, *u;
    char prev;

    while (*p && *p != '@' && *p != '/')
        p++;
    if (*p == '@') {
        for (u = start; *u != ':' && *u != '@'; u++)
            ;
        /* libpq keeps a userinfo password only when it is not empty. */
        if (*u == ':' && u + 1 < p) {
            char *value = uri_decode(u + 1, p);

            if (!value || !add(l, (size_t)(u + 1 - in), (size_t)(p - in), value))
                return false;
        }
        p++;
    } else {
        p = start;
    }
    for (;;) {
        if (*p == '[') {
            const char *host = ++p;

            while (*p && *p != ']')
                p++;
            if (!*p || p == host)
                return false;
            p++;
            if (*p && *p != ':' && *p != '/' && *p != '?' && *p != ',')
                return false;
        } else {
            while (*p && *p != ':' && *p != '/' && *p != '?' && *p != ',')
                p++;
        }
        prev = *p;
        if (prev == ':') {
            for (p++; *p && *p != '/' && *p != '?' && *p != ','; p++)
                ;
            prev = *p;
        }
        if (prev != ',')
            break;
        p++;
    }
    if (prev && prev != '?') {
        for (p++; *p && *p != '?'; p++)
            ;
        prev = *p;
    }
    if (!prev)
        return true;
    /* The query: key=value pairs split at '&', both percent-decoded. */
    for (p++; *p;) {
        const char *key = p, *eq = NULL, *end;
        char *k;

        for (end = p; *end && *end != '&'; end++)
            if (*end == '=') {
                if (eq)
                    return false;
                eq = end;
            }
        if (!eq)
            return false;
        k = uri_decode(key, eq);
        if (!k)
            return false;
        if (strcmp(k, "password") == 0) {
            char *value = uri_decode(eq + 1, end);

            if (!value || !add(l, (size_t)(eq + 1 - in), (size_t)(end - in), value)) {
                free(k);
                return false;
            }
        }
        free(k);
        p = *end ? end + 1 : end;
    }
    return true;
}

/* Where in fills in the password; false when the harness cannot say. */
static bool locate(const char *in, located *l)
{
    memset(l, 0, sizeof(*l));
    if (strncmp(in, "postgresql://", 13) == 0)
        return locate_uri(in, 13, l);
    if (strncmp(in, "postgres://", 11) == 0)
        return locate_uri(in, 11, l);
    return locate_kv(in, l);
}

/*
 * Another character of the same class: digits 1-9 and hex letters rotate
 * among themselves (so %XX stays a valid escape and never becomes %00), 0
 * stays, other letters rotate among the non-hex ones, the rest (quotes,
 * backslashes, '/', '%', ...) stay where they are, keeping every boundary
 * libpq and the redactor see.
 */
static char rotate(char c)
{
    if (c >= '1' && c <= '9')
        return (char)('1' + (c - '1' + 1) % 9);
    if (c >= 'a' && c <= 'f')
        return (char)('a' + (c - 'a' + 1) % 6);
    if (c >= 'A' && c <= 'F')
        return (char)('A' + (c - 'A' + 1) % 6);
    if (c >= 'g' && c <= 'z')
        return (char)('g' + (c - 'g' + 1) % 20);
    if (c >= 'G' && c <= 'Z')
        return (char)('G' + (c - 'G' + 1) % 20);
    return c;
}

/* in with the text of every span rotated: the same structure, another password. */
static char *replace(const char *in, const located *l)
{
    char *out = strdup(in);

    CHECK(out);
    for (size_t i = 0; i < l->n; i++)
        for (size_t j = l->spans[i].start; j < l->spans[i].end; j++)
            out[j] = rotate(out[j]);
    return out;
}

/* ---- the checks ------------------------------------------------------------------------ */

static const char *option(const PQconninfoOption *opts, const char *keyword)
{
    for (; opts->keyword; opts++)
        if (strcmp(opts->keyword, keyword) == 0)
            return opts->val;
    return NULL;
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Whether a and b set every option but the password alike. */
static bool same_but_password(const PQconninfoOption *a, const PQconninfoOption *b)
{
    for (; a->keyword; a++)
        if (strcmp(a->keyword, "password") != 0 && !same(a->val, option(b, a->keyword)))
            return false;
    return true;
}

static char *redact(const char *in)
{
    char *out = malloc(BIG);

    CHECK(out);
    jw_log_redact_conninfo(in, out, BIG);
    CHECK(memchr(out, '\0', BIG));
    return out;
}

/* The output for the input with another password must be out itself. */
static void check_independent(const char *in, const PQconninfoOption *opts, const char *password,
                              const char *out)
{
    PQconninfoOption *opts2;
    located l;
    char *in2, *out2;
    bool found = locate(in, &l) && same(l.value, password);

    if (!found || !l.n) {
        /* No password written, or not where the harness looks: nothing to vary. */
        free(l.value);
        if (getenv("JW_FUZZ_CONNINFO_STRICT") && !found)
            CHECK(!"the harness and libpq disagree on the password");
        return;
    }
    in2 = replace(in, &l);
    opts2 = PQconninfoParse(in2, NULL);
    if (!opts2 || !same_but_password(opts, opts2)) {
        /* The replacement changed more than the password: not a fair comparison. */
        if (getenv("JW_FUZZ_CONNINFO_STRICT"))
            CHECK(!"replacing the password changed the other options");
    } else if (!same(option(opts2, "password"), password)) {
        out2 = redact(in2);
        /* No 4 bytes of the password in the output that the rest does not explain. */
        if (strlen(password) >= 4)
            for (const char *w = password; w[3]; w++) {
                char win[5] = {w[0], w[1], w[2], w[3], '\0'};

                CHECK(!strstr(out, win) || strstr(out2, win));
            }
        /* And nothing else of it either: the outputs are the same. */
        CHECK(strcmp(out, out2) == 0);
        free(out2);
    }
    PQconninfoFree(opts2);
    free(in2);
    free(l.value);
}

static void check_password(const char *in, const char *out)
{
    PQconninfoOption *opts = PQconninfoParse(in, NULL), *opts_out;
    const char *masked;

    if (!opts)
        return; /* libpq would not connect with it: no password to keep */
    /*
     * When libpq reads the output as the input with only the password
     * changed, that password is the mask or nothing. Otherwise the mask
     * itself moved libpq's boundaries (a password holding '/' decides where
     * a URI's userinfo ends; masking more than libpq would can leave the
     * text unreadable), and libpq's "password" of the output is no longer
     * the input's: the check below judges those.
     */
    opts_out = PQconninfoParse(out, NULL);
    if (opts_out && same_but_password(opts, opts_out)) {
        masked = option(opts_out, "password");
        CHECK(!masked || strcmp(masked, MASK) == 0);
    }
    check_independent(in, opts, option(opts, "password"), out);
    PQconninfoFree(opts_out);
    PQconninfoFree(opts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t bufsize;
    char *in, *out, *full;

    if (size < 1 || size > 2048)
        return 0;
    bufsize = data[0] ? data[0] : BIG;
    in = malloc(size);
    out = malloc(bufsize);
    CHECK(in && out);
    memcpy(in, data + 1, size - 1);
    in[size - 1] = '\0';
    jw_log_redact_conninfo(in, out, bufsize);
    CHECK(memchr(out, '\0', bufsize));
    full = redact(in);
    if (bufsize < BIG) {
        /* A small buffer cuts the same text short: a prefix, never other bytes. */
        size_t n = strlen(out);

        CHECK(n == strlen(full) || n == bufsize - 1);
        CHECK(strncmp(out, full, n) == 0);
    }
    check_password(in, full);
    free(full);
    free(in);
    free(out);
    return 0;
}
