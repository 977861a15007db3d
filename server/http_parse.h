/*
 * http_parse.h - the pure half of server/http.c: what a client sends before
 * any handler runs, judged without libwebsockets. HTTP methods by name and
 * the Allow header, the body framing a request announces (Content-Length,
 * Transfer-Encoding, --max-body) and the chunked body decoder, Content-Type:
 * application/json, and the query string as http.c stores it. No
 * libwebsockets, no global state, any thread; unit-tested in
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
    JW_HTTP_NO_BODY,      /* dispatch now */
    JW_HTTP_READ_BODY,    /* read *length bytes (0 for an empty POST), then dispatch */
    JW_HTTP_READ_CHUNKED, /* de-chunk the body (jw_http_chunked_read), dispatch, then close */
    JW_HTTP_EMPTY_BODY,   /* no body was announced: dispatch now with none, then close */
    JW_HTTP_REFUSE,       /* answer err (400, 411 or 413) and close; the body is not read */
    JW_HTTP_CLOSE,        /* answer what routing decided (404/405) and close */
} jw_http_framing;

/*
 * Decides the framing before a body is read (RFC 9112 section 6.3), in this
 * order: Content-Length and Transfer-Encoding together (400 bad_request: a
 * request smuggling vector), a Content-Length that is not a number (400), a
 * Transfer-Encoding but "chunked" alone, in any case, blanks around it
 * (400: other codings are not supported), then for chunked: unrouted
 * JW_HTTP_CLOSE, on a method other than POST, PUT and PATCH 411
 * length_required, else JW_HTTP_READ_CHUNKED; a Content-Length over
 * max_body (413 body_too_large); POST, PUT and PATCH without a length
 * (JW_HTTP_EMPTY_BODY: an empty body, as RFC 9112 says; JW_HTTP_CLOSE when
 * unrouted). A body is read when a length is announced, and for a POST with
 * Content-Length: 0 too.
 *
 * Why chunked and an absent length close the connection: lws 4.1.6 takes
 * whatever follows the headers of a POST, PUT or PATCH without
 * Content-Length for a body of up to 100 MB (and nothing for other
 * methods), delivered as it came; it cannot be told where that body ended,
 * so the connection cannot carry another request.
 *
 * content_length and transfer_encoding are the headers' values, NULL when
 * absent or empty; routed says a route accepts the method and path.
 * *length is the announced length (0 without one).
 */
jw_http_framing jw_http_frame(jw_http_method method, const char *content_length,
                              const char *transfer_encoding, size_t max_body, bool routed,
                              size_t *length, jw_http_error *err);

/* The longest chunk-size line (size, extensions, CRLF) taken. */
#define JW_HTTP_CHUNK_LINE_MAX 1024
/* The largest trailer section (its lines, with their CRLFs) taken. */
#define JW_HTTP_CHUNK_TRAILER_MAX 8192
/* Framing bytes (all but the data) a chunked body may spend beyond max_body. */
#define JW_HTTP_CHUNK_FRAMING_SLACK 65536

/*
 * A chunked request body (RFC 9112 section 7.1) decoded as its bytes come,
 * in pieces of any size. Strict, so that it frames a request as any other
 * reader would: lines end with CRLF only, a chunk size is hex digits (no
 * sign, no space, then ';' extensions after optional blanks, or CRLF);
 * extensions and trailer fields are checked for shape and skipped. Bounded:
 * the de-chunked body by max_body (413 as soon as a chunk size says it
 * would pass it, before its data comes), a size line by
 * JW_HTTP_CHUNK_LINE_MAX, the trailers by JW_HTTP_CHUNK_TRAILER_MAX, all
 * framing together by max_body + JW_HTTP_CHUNK_FRAMING_SLACK (413).
 * Caller's storage; no allocation, nothing to release.
 */
typedef struct jw_http_chunked {
    int state;       /* internal */
    size_t max_body; /* the de-chunked body's limit */
    size_t body;     /* de-chunked bytes so far */
    size_t size;     /* the chunk size being read, then its data bytes left */
    size_t line;     /* bytes of the current size line so far */
    size_t trailer;  /* bytes of the trailer section so far */
    size_t framing;  /* bytes that were not data so far */
} jw_http_chunked;

/* What jw_http_chunked_read found. */
typedef enum jw_http_chunk_step {
    JW_HTTP_CHUNK_MORE,  /* all of in was used: call again with the next bytes */
    JW_HTTP_CHUNK_DATA,  /* *data_len (>= 1) body bytes at *data, inside in; call again */
    JW_HTTP_CHUNK_DONE,  /* the body ended; bytes of in past *used are not part of it */
    JW_HTTP_CHUNK_ERROR, /* err is 400 bad_request (malformed) or 413 body_too_large */
} jw_http_chunk_step;

void jw_http_chunked_init(jw_http_chunked *c, size_t max_body);

/*
 * Reads in (len bytes) up to the next piece of body data, the end of the
 * body, an error, or the end of in, whichever comes first. *used says how
 * many bytes of in were taken (the data piece included); *data and
 * *data_len are set for JW_HTTP_CHUNK_DATA only. Once DONE or ERROR it
 * stays so: it takes nothing more and leaves err alone.
 */
jw_http_chunk_step jw_http_chunked_read(jw_http_chunked *c, const char *in, size_t len,
                                        size_t *used, const char **data, size_t *data_len,
                                        jw_http_error *err);

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
