/*
 * http_parse.h - the pure half of server/http.c: what a client sends before
 * any handler runs, judged without libwebsockets. HTTP methods by name and
 * the Allow header, the body framing a request announces (Content-Length,
 * chunked, --max-body), Content-Type: application/json, and the query string
 * as http.c stores it. No libwebsockets, no state, any thread; unit-tested in
 * tests/unit/test_api_parse.c, fuzzed in tests/fuzz/fuzz_http_api.c.
 *
 * What lws (4.1.6) has done before these run: it percent-decoded the path
 * and collapsed "//", "/./" and "/x/../" in it; it split the query at '&'
 * and percent-decoded each argument. http.c copies the non-empty arguments
 * NUL-separated into one buffer, which jw_http_query_get reads.
 */
#ifndef JW_HTTP_PARSE_H
#define JW_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* Bits, so a route may accept several methods and Allow is a union. */
typedef enum jw_http_method {
    JW_HTTP_GET = 1 << 0,
    JW_HTTP_HEAD = 1 << 1,
    JW_HTTP_POST = 1 << 2,
    JW_HTTP_PUT = 1 << 3,
    JW_HTTP_PATCH = 1 << 4,
    JW_HTTP_DELETE = 1 << 5,
    JW_HTTP_OPTIONS = 1 << 6,
} jw_http_method;

/*
 * An answer decided by a parser: the status, a code from docs/api.md's error
 * table (a string literal), the message for the person (what was wrong, what
 * to do; never a secret), and for 405 the Allow header ("" otherwise).
 */
typedef struct jw_http_error {
    int status;
    const char *code;
    char message[512];
    char allow[64];
} jw_http_error;

/*
 * Sets *e (allow cleared). The message is cut to fit and made valid UTF-8
 * (jw_http_clean_text), so client text in it never costs the whole message.
 */
void jw_http_error_set(jw_http_error *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The method called name (exact, upper case: "GET", "HEAD", ...), or 0. */
jw_http_method jw_http_method_parse(const char *name);
/* "GET", ... for one method bit; "?" for anything else. */
const char *jw_http_method_name(jw_http_method m);
/* The Allow value for a mask of methods, e.g. "GET, HEAD, POST"; GET brings HEAD. */
void jw_http_format_allow(unsigned mask, char *out, size_t size);

/*
 * Content-Length as the client sent it: digits only, at most SIZE_MAX / 2.
 * Returns false for anything else (an empty value included).
 */
bool jw_http_parse_content_length(const char *value, size_t *out);

/* What to do with a request once its headers are in (jw_http_frame). */
typedef enum jw_http_framing {
    JW_HTTP_NO_BODY,   /* dispatch now */
    JW_HTTP_READ_BODY, /* read *length bytes (0 for an empty POST), then dispatch */
    JW_HTTP_REFUSE,    /* answer err (400, 411 or 413) and close; the body is not read */
    JW_HTTP_CLOSE,     /* answer what routing decided (404/405) and close */
} jw_http_framing;

/*
 * Decides the framing before a body is read, in this order: a Content-Length
 * that is not a number (400 bad_request), chunked (411 length_required), over
 * max_body (413 body_too_large), then POST, PUT and PATCH without a length
 * (411 when routed, else JW_HTTP_CLOSE: the 404/405 goes out and the
 * connection closes, since lws would otherwise wait for a body). A body is
 * read when one is announced, and for a POST with Content-Length: 0 too.
 * content_length is the header's value, NULL when absent or empty; chunked
 * says a Transfer-Encoding header came; routed says a route accepts the
 * method and path. *length is the announced length (0 without one).
 */
jw_http_framing jw_http_frame(jw_http_method method, const char *content_length, bool chunked,
                              size_t max_body, bool routed, size_t *length, jw_http_error *err);

/*
 * Whether a Content-Type says JSON: "application/json" in any case, alone or
 * followed by ';' or ' ' (parameters such as charset). NULL is not JSON.
 */
bool jw_http_is_json(const char *content_type);

/*
 * The value of query argument name in query (len bytes of NUL-terminated
 * "name=value" arguments, as http.c stores them): "" for "name" or "name=",
 * NULL when absent. The first occurrence wins.
 */
const char *jw_http_query_get(const char *query, size_t len, const char *name);

/*
 * Makes s valid UTF-8 in place, as a JSON string needs it: a sequence cut
 * short at the end (what a byte-count cut leaves) is dropped, every other
 * byte that does not start a valid sequence becomes '?'. Overlong forms,
 * surrogates and code points past U+10FFFF are not valid.
 */
void jw_http_clean_text(char *s);

/* The length of s's longest prefix of at most max bytes that ends between characters. */
size_t jw_http_utf8_prefix(const char *s, size_t max);

#endif
