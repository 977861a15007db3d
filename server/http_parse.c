/*
 * http_parse.c - methods, Allow, framing, Content-Type and the query string,
 * without libwebsockets. See http_parse.h.
 */
#include "http_parse.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* In the order Allow lists them. */
static const struct {
    jw_http_method method;
    const char *name;
} method_names[] = {
    {JW_HTTP_GET, "GET"},         {JW_HTTP_HEAD, "HEAD"},   {JW_HTTP_POST, "POST"},
    {JW_HTTP_PUT, "PUT"},         {JW_HTTP_PATCH, "PATCH"}, {JW_HTTP_DELETE, "DELETE"},
    {JW_HTTP_OPTIONS, "OPTIONS"},
};

#define METHOD_COUNT (sizeof(method_names) / sizeof(method_names[0]))

void jw_http_error_set(jw_http_error *e, int status, const char *code, const char *fmt, ...)
{
    va_list ap;

    e->status = status;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    jw_http_clean_text(e->message);
    e->allow[0] = '\0';
}

/*
 * The length of the valid UTF-8 sequence at s (1..4), 0 when s does not
 * start one, or -1 when s starts one that the string ends too soon for.
 */
static int utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    int n;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    /* The second byte's range rules out overlongs, surrogates and > U+10FFFF. */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    for (int i = 1; i < n; i++) {
        if (!s[i])
            return -1;
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xbf))
            return 0;
    }
    return n;
}

void jw_http_clean_text(char *s)
{
    unsigned char *p = (unsigned char *)s;

    while (*p) {
        int n = utf8_seq(p);

        if (n > 0) {
            p += n;
        } else if (n < 0) {
            *p = '\0';
        } else {
            *p++ = '?';
        }
    }
}

size_t jw_http_utf8_prefix(const char *s, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = 0;

    while (p[len]) {
        int n = utf8_seq(p + len);

        if (n <= 0)
            n = 1; /* not UTF-8: one byte at a time (jw_http_clean_text replaces it) */
        if (len + (size_t)n > max)
            break;
        len += (size_t)n;
    }
    return len;
}

jw_http_method jw_http_method_parse(const char *name)
{
    for (size_t i = 0; name && i < METHOD_COUNT; i++)
        if (strcmp(name, method_names[i].name) == 0)
            return method_names[i].method;
    return 0;
}

const char *jw_http_method_name(jw_http_method m)
{
    for (size_t i = 0; i < METHOD_COUNT; i++)
        if (m == method_names[i].method)
            return method_names[i].name;
    return "?";
}

void jw_http_format_allow(unsigned mask, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    if (mask & JW_HTTP_GET)
        mask |= JW_HTTP_HEAD;
    for (size_t i = 0; i < METHOD_COUNT; i++)
        if (mask & method_names[i].method) {
            int n =
                snprintf(out + used, size - used, "%s%s", used ? ", " : "", method_names[i].name);

            if (n < 0 || (size_t)n >= size - used) {
                out[used] = '\0'; /* a method that does not fit is left out whole */
                break;
            }
            used += (size_t)n;
        }
}

bool jw_http_parse_content_length(const char *v, size_t *out)
{
    unsigned long long n;
    char *end;

    if (!v || !*v || strspn(v, "0123456789") != strlen(v))
        return false;
    errno = 0;
    n = strtoull(v, &end, 10);
    if (errno || *end || n > (unsigned long long)SIZE_MAX / 2)
        return false;
    *out = (size_t)n;
    return true;
}

jw_http_framing jw_http_frame(jw_http_method method, const char *content_length, bool chunked,
                              size_t max_body, bool routed, size_t *length, jw_http_error *err)
{
    bool has_length = content_length != NULL;

    *length = 0;
    if (has_length && !jw_http_parse_content_length(content_length, length)) {
        *length = 0;
        jw_http_error_set(err, 400, "bad_request", "Content-Length must be a number of bytes");
        return JW_HTTP_REFUSE;
    }
    if (chunked) {
        jw_http_error_set(err, 411, "length_required",
                          "chunked request bodies are not supported; send Content-Length");
        return JW_HTTP_REFUSE;
    }
    if (has_length && *length > max_body) {
        jw_http_error_set(err, 413, "body_too_large",
                          "request body of %zu bytes exceeds the limit of %zu bytes", *length,
                          max_body);
        return JW_HTTP_REFUSE;
    }
    if (!has_length && (method & (JW_HTTP_POST | JW_HTTP_PUT | JW_HTTP_PATCH))) {
        /* lws would wait for up to 100 MB of body: answer at once and close. */
        if (!routed)
            return JW_HTTP_CLOSE;
        jw_http_error_set(err, 411, "length_required",
                          "%s needs a Content-Length header (use 0 for an empty body)",
                          jw_http_method_name(method));
        return JW_HTTP_REFUSE;
    }
    /* lws delivers HTTP_BODY and HTTP_BODY_COMPLETION, even for an empty POST. */
    if (*length > 0 || (method == JW_HTTP_POST && has_length))
        return JW_HTTP_READ_BODY;
    return JW_HTTP_NO_BODY;
}

bool jw_http_is_json(const char *ct)
{
    return ct && strncasecmp(ct, "application/json", 16) == 0 &&
           (!ct[16] || ct[16] == ';' || ct[16] == ' ');
}

const char *jw_http_query_get(const char *query, size_t len, const char *name)
{
    size_t nlen = strlen(name);

    for (size_t off = 0; off < len;) {
        const char *arg = query + off;
        size_t alen = strlen(arg);

        if (strncmp(arg, name, nlen) == 0 && (arg[nlen] == '=' || arg[nlen] == '\0'))
            return arg[nlen] == '=' ? arg + nlen + 1 : arg + nlen;
        off += alen + 1;
    }
    return NULL;
}
