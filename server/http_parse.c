/*
 * http_parse.c - methods, Allow, framing, Content-Type and the query string,
 * without libwebsockets. See http_parse.h.
 */
#include "http_parse.h"

#include "jw_util.h"

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

/* Whether a Transfer-Encoding value is "chunked" alone (any case, blanks around it). */
static bool is_chunked(const char *te)
{
    size_t n;

    te += strspn(te, " \t");
    if (strncasecmp(te, "chunked", 7) != 0)
        return false;
    n = 7 + strspn(te + 7, " \t");
    return te[n] == '\0';
}

/* The methods lws 4.1.6 reads a body without Content-Length for (http_parse.h). */
#define UNFRAMED_BODY_METHODS (JW_HTTP_POST | JW_HTTP_PUT | JW_HTTP_PATCH)

jw_http_framing jw_http_frame(jw_http_method method, const char *content_length,
                              const char *transfer_encoding, size_t max_body, bool routed,
                              size_t *length, jw_http_error *err)
{
    bool has_length = content_length != NULL;

    *length = 0;
    if (has_length && transfer_encoding) {
        jw_http_error_set(err, 400, "bad_request",
                          "a request must not carry both Content-Length and Transfer-Encoding "
                          "(RFC 9112 section 6.3); send one of them");
        return JW_HTTP_REFUSE;
    }
    if (has_length && !jw_http_parse_content_length(content_length, length)) {
        *length = 0;
        jw_http_error_set(err, 400, "bad_request", "Content-Length must be a number of bytes");
        return JW_HTTP_REFUSE;
    }
    if (transfer_encoding) {
        if (!is_chunked(transfer_encoding)) {
            jw_http_error_set(err, 400, "bad_request",
                              "Transfer-Encoding must be chunked (got \"%.64s\"); other transfer "
                              "codings are not supported, send chunked or Content-Length",
                              transfer_encoding);
            return JW_HTTP_REFUSE;
        }
        /* The body is not read: answer at once and close. */
        if (!routed)
            return JW_HTTP_CLOSE;
        if (!(method & UNFRAMED_BODY_METHODS)) {
            jw_http_error_set(err, 411, "length_required",
                              "a %s body needs a Content-Length header (chunked bodies are taken "
                              "on POST, PUT and PATCH)",
                              jw_http_method_name(method));
            return JW_HTTP_REFUSE;
        }
        return JW_HTTP_READ_CHUNKED;
    }
    if (has_length && *length > max_body) {
        jw_http_error_set(err, 413, "body_too_large",
                          "request body of %zu bytes exceeds the limit of %zu bytes", *length,
                          max_body);
        return JW_HTTP_REFUSE;
    }
    /* RFC 9112 section 6.3: neither header means no body. lws waits for one: close after. */
    if (!has_length && (method & UNFRAMED_BODY_METHODS))
        return routed ? JW_HTTP_EMPTY_BODY : JW_HTTP_CLOSE;
    /* lws delivers HTTP_BODY and HTTP_BODY_COMPLETION, even for an empty POST. */
    if (*length > 0 || (method == JW_HTTP_POST && has_length))
        return JW_HTTP_READ_BODY;
    return JW_HTTP_NO_BODY;
}

/* --- chunked bodies ------------------------------------------------------- */

enum chunk_state {
    CK_SIZE = 0,   /* the chunk size's hex digits */
    CK_BLANK,      /* blanks after the size: a ';' must follow */
    CK_EXT,        /* extensions, up to CR */
    CK_SIZE_LF,    /* the size line's CR came */
    CK_DATA,       /* the chunk's data */
    CK_DATA_CR,    /* CRLF after the data */
    CK_DATA_LF,    /* its CR came */
    CK_TRAILER,    /* the start of a trailer line, or of the final CRLF */
    CK_FIELD_NAME, /* a trailer field's name, up to ':' */
    CK_FIELD,      /* its value, up to CR */
    CK_FIELD_LF,   /* its CR came */
    CK_END_LF,     /* the CR of the final CRLF came */
    CK_DONE,
    CK_ERROR,
};

#define TEXT_(x) #x
#define TEXT(x) TEXT_(x)
#define LINE_MAX_TEXT TEXT(JW_HTTP_CHUNK_LINE_MAX)
#define TRAILER_MAX_TEXT TEXT(JW_HTTP_CHUNK_TRAILER_MAX)

static const char chunk_fix[] = "send a valid chunked body, or use Content-Length";

void jw_http_chunked_init(jw_http_chunked *c, size_t max_body)
{
    memset(c, 0, sizeof(*c));
    c->state = CK_SIZE;
    c->max_body = max_body;
}

/* A field-name character (RFC 9110 tchar). */
static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* A byte a chunk extension or a trailer value may hold: not a control but HTAB. */
static bool is_field_byte(unsigned char ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

static jw_http_chunk_step chunk_fail(jw_http_chunked *c, jw_http_error *err, const char *what,
                                     unsigned char ch)
{
    c->state = CK_ERROR;
    jw_http_error_set(err, 400, "bad_request", "malformed chunked body: %s (byte 0x%02x); %s", what,
                      ch, chunk_fix);
    return JW_HTTP_CHUNK_ERROR;
}

static jw_http_chunk_step chunk_too_large(jw_http_chunked *c, jw_http_error *err)
{
    c->state = CK_ERROR;
    jw_http_error_set(err, 413, "body_too_large",
                      "chunked request body exceeds the limit of %zu bytes (%zu received, the "
                      "next chunk is larger than what is left)",
                      c->max_body, c->body);
    return JW_HTTP_CHUNK_ERROR;
}

/* max_body + JW_HTTP_CHUNK_FRAMING_SLACK, without wrapping. */
static size_t framing_limit(const jw_http_chunked *c)
{
    return c->max_body > SIZE_MAX - JW_HTTP_CHUNK_FRAMING_SLACK
               ? SIZE_MAX
               : c->max_body + JW_HTTP_CHUNK_FRAMING_SLACK;
}

/* One framing byte ch: JW_HTTP_CHUNK_MORE to go on, or the step that ends the read. */
static jw_http_chunk_step chunk_byte(jw_http_chunked *c, unsigned char ch, jw_http_error *err)
{
    int d;

    switch (c->state) {
    case CK_SIZE:
        d = jw_hex_digit((char)ch);
        if (d >= 0) {
            size_t left = c->max_body - c->body;

            /* size * 16 + d cannot wrap: size <= left / 16 first. */
            if (c->size > left / 16 || c->size * 16 + (size_t)d > left)
                return chunk_too_large(c, err);
            c->size = c->size * 16 + (size_t)d;
            return JW_HTTP_CHUNK_MORE;
        }
        if (c->line == 1) /* the line's first byte (counted already) */
            return chunk_fail(c, err, "a chunk size must start with a hex digit", ch);
        if (ch == ' ' || ch == '\t')
            c->state = CK_BLANK;
        else if (ch == ';')
            c->state = CK_EXT;
        else if (ch == '\r')
            c->state = CK_SIZE_LF;
        else
            return chunk_fail(c, err, "a chunk size must be hex digits, then ';' or CRLF", ch);
        return JW_HTTP_CHUNK_MORE;
    case CK_BLANK:
        if (ch == ';')
            c->state = CK_EXT;
        else if (ch != ' ' && ch != '\t')
            return chunk_fail(c, err, "only a ';' extension may follow a chunk size", ch);
        return JW_HTTP_CHUNK_MORE;
    case CK_EXT:
        if (ch == '\r')
            c->state = CK_SIZE_LF;
        else if (!is_field_byte(ch))
            return chunk_fail(c, err, "a chunk extension holds a control character", ch);
        return JW_HTTP_CHUNK_MORE;
    case CK_SIZE_LF:
        if (ch != '\n')
            return chunk_fail(c, err, "a chunk size line must end with CRLF", ch);
        c->line = 0;
        c->state = c->size ? CK_DATA : CK_TRAILER;
        return JW_HTTP_CHUNK_MORE;
    case CK_DATA_CR:
        if (ch != '\r')
            return chunk_fail(c, err, "a chunk's data must be followed by CRLF", ch);
        c->state = CK_DATA_LF;
        return JW_HTTP_CHUNK_MORE;
    case CK_DATA_LF:
        if (ch != '\n')
            return chunk_fail(c, err, "a chunk's data must be followed by CRLF", ch);
        c->state = CK_SIZE;
        return JW_HTTP_CHUNK_MORE;
    case CK_TRAILER:
        if (ch == '\r')
            c->state = CK_END_LF;
        else if (is_tchar(ch))
            c->state = CK_FIELD_NAME;
        else
            return chunk_fail(c, err, "a trailer field must start with its name", ch);
        return JW_HTTP_CHUNK_MORE;
    case CK_FIELD_NAME:
        if (ch == ':')
            c->state = CK_FIELD;
        else if (!is_tchar(ch))
            return chunk_fail(c, err, "a trailer field must be a name, ':' and a value", ch);
        return JW_HTTP_CHUNK_MORE;
    case CK_FIELD:
        if (ch == '\r')
            c->state = CK_FIELD_LF;
        else if (!is_field_byte(ch))
            return chunk_fail(c, err, "a trailer field holds a control character", ch);
        return JW_HTTP_CHUNK_MORE;
    case CK_FIELD_LF:
        if (ch != '\n')
            return chunk_fail(c, err, "a trailer field must end with CRLF", ch);
        c->state = CK_TRAILER;
        return JW_HTTP_CHUNK_MORE;
    case CK_END_LF:
        if (ch != '\n')
            return chunk_fail(c, err, "a chunked body must end with CRLF", ch);
        c->state = CK_DONE;
        return JW_HTTP_CHUNK_DONE;
    case CK_DATA: /* jw_http_chunked_read takes data itself */
    case CK_DONE:
    case CK_ERROR: break;
    }
    return chunk_fail(c, err, "a byte past the end of the body", ch); /* not reached */
}

jw_http_chunk_step jw_http_chunked_read(jw_http_chunked *c, const char *in, size_t len,
                                        size_t *used, const char **data, size_t *data_len,
                                        jw_http_error *err)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0;

    *used = 0;
    *data = NULL;
    *data_len = 0;
    if (c->state == CK_DONE)
        return JW_HTTP_CHUNK_DONE;
    if (c->state == CK_ERROR)
        return JW_HTTP_CHUNK_ERROR;
    while (i < len) {
        jw_http_chunk_step step;

        if (c->state == CK_DATA) {
            size_t n = len - i < c->size ? len - i : c->size;

            c->size -= n;
            c->body += n;
            if (!c->size)
                c->state = CK_DATA_CR;
            *data = in + i;
            *data_len = n;
            *used = i + n;
            return JW_HTTP_CHUNK_DATA;
        }
        if (++c->framing > framing_limit(c)) {
            c->state = CK_ERROR;
            *used = i + 1;
            jw_http_error_set(err, 413, "body_too_large",
                              "chunked request body spends over %zu bytes on chunk framing; "
                              "send larger chunks, or use Content-Length",
                              framing_limit(c));
            return JW_HTTP_CHUNK_ERROR;
        }
        if (c->state <= CK_SIZE_LF && ++c->line > JW_HTTP_CHUNK_LINE_MAX) {
            *used = i + 1;
            return chunk_fail(c, err, "a chunk size line is over " LINE_MAX_TEXT " bytes", p[i]);
        }
        if (c->state >= CK_TRAILER && ++c->trailer > JW_HTTP_CHUNK_TRAILER_MAX) {
            *used = i + 1;
            return chunk_fail(c, err, "the trailer section is over " TRAILER_MAX_TEXT " bytes",
                              p[i]);
        }
        step = chunk_byte(c, p[i], err);
        i++;
        if (step != JW_HTTP_CHUNK_MORE) {
            *used = i;
            return step;
        }
    }
    *used = i;
    return JW_HTTP_CHUNK_MORE;
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
