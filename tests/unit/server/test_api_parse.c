/*
 * Unit tests of server/http_parse.c and server/api_parse.c: methods and
 * Allow, body framing, Content-Type, the query string, the API's routes and
 * path ids, the list query and every JSON body - each answer's status, code
 * and message as docs/api.md gives them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api_parse.h"
#include "http_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

#define L1 "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define U1 "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"
#define W1 "ffffffff-0000-4000-8000-000000000001"

#define JSON "application/json"

/* Fails unless err is exactly status, code and (when given) message. */
static void expect_err(const jw_http_error *err, int status, const char *code, const char *message,
                       const char *input)
{
    if (err->status != status || strcmp(err->code, code) != 0)
        fail_msg("%s: expected %d %s, got %d %s (%s)", input, status, code, err->status, err->code,
                 err->message);
    if (message && strcmp(err->message, message) != 0)
        fail_msg("%s: expected message\n  %s\ngot\n  %s", input, message, err->message);
}

static int body_case(jw_api_route route, const char *ct, const char *body, int status,
                     const char *code, const char *message, jw_api_body *out);

/* ---- methods, Allow ---------------------------------------------------------------- */

static void test_methods(void **state)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

    (void)state;
    for (size_t i = 0; i < N(names); i++) {
        jw_http_method m = jw_http_method_parse(names[i]);

        assert_int_equal(m, 1 << i);
        assert_string_equal(jw_http_method_name(m), names[i]);
    }
    assert_int_equal(jw_http_method_parse("get"), 0);
    assert_int_equal(jw_http_method_parse("CONNECT"), 0);
    assert_int_equal(jw_http_method_parse(""), 0);
    assert_int_equal(jw_http_method_parse(NULL), 0);
    assert_string_equal(jw_http_method_name(0), "?");
    assert_string_equal(jw_http_method_name(JW_HTTP_GET | JW_HTTP_POST), "?");
}

static void test_allow(void **state)
{
    char out[64], small[8];

    (void)state;
    jw_http_format_allow(JW_HTTP_GET, out, sizeof(out));
    assert_string_equal(out, "GET, HEAD");
    jw_http_format_allow(JW_HTTP_POST | JW_HTTP_GET, out, sizeof(out));
    assert_string_equal(out, "GET, HEAD, POST");
    jw_http_format_allow(0x7f, out, sizeof(out));
    assert_string_equal(out, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    jw_http_format_allow(0, out, sizeof(out));
    assert_string_equal(out, "");
    /* What does not fit is left out whole. */
    jw_http_format_allow(JW_HTTP_GET | JW_HTTP_POST, small, sizeof(small));
    assert_string_equal(small, "GET");
}

/* ---- messages that carry client text --------------------------------------------------- */

static void test_clean_text(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"plain ascii", "plain ascii"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        /* Bytes that start no character become '?', one each. */
        {"/api/\xff\xfe", "/api/??"},
        {"a\x80"
         "b",
         "a?b"},
        {"\xc3(", "?("},
        /* Overlong forms, surrogates and code points past U+10FFFF are not UTF-8. */
        {"\xc0\xaf", "??"},
        {"\xe0\x80\xaf", "???"},
        {"\xed\xa0\x80", "???"},
        {"\xf4\x90\x80\x80", "????"},
        {"\xf5\x80\x80\x80", "????"},
        /* A character cut short at the end is dropped, as a byte-count cut leaves it. */
        {"ab\xc3", "ab"},
        {"ab\xe2\x82", "ab"},
        {"ab\xf0\x9f\x98", "ab"},
        /* ...but cut short before more text it is not UTF-8. */
        {"\xe2\x82"
         "x",
         "??x"},
    };

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        char buf[64];

        snprintf(buf, sizeof(buf), "%s", cases[i].in);
        jw_http_clean_text(buf);
        if (strcmp(buf, cases[i].out) != 0)
            fail_msg("case %zu: got \"%s\", expected \"%s\"", i, buf, cases[i].out);
    }
}

static void test_utf8_prefix(void **state)
{
    (void)state;
    assert_int_equal(jw_http_utf8_prefix("abc", 2), 2);
    assert_int_equal(jw_http_utf8_prefix("abc", 40), 3);
    /* "é" is 2 bytes: a cut at 3 keeps one, not one and a half. */
    assert_int_equal(jw_http_utf8_prefix("\xc3\xa9\xc3\xa9", 3), 2);
    assert_int_equal(jw_http_utf8_prefix("\xc3\xa9\xc3\xa9", 4), 4);
    assert_int_equal(jw_http_utf8_prefix("\xf0\x9f\x98\x80", 3), 0);
    /* A byte that is not UTF-8 counts as one. */
    assert_int_equal(jw_http_utf8_prefix("\xff\xff\xff", 2), 2);
}

/* Every message can go into a JSON string, whatever the client sent. */
static void test_messages_are_utf8(void **state)
{
    jw_http_error err = {0};
    jw_api_match m;
    jw_api_body b;
    char body[256], want[256], *path;
    json_t *s;

    (void)state;
    /* A path lws decoded from %FF%FE. */
    assert_int_equal(jw_api_match_route(JW_HTTP_GET, "/api/\xff\xfe", &m, &err), -1);
    expect_err(&err, 404, "not_found", "no route /api/??", "/api/%FF%FE");

    /* A long path of 2-byte characters, cut at the message's end mid-character. */
    path = malloc(2000);
    assert_non_null(path);
    strcpy(path, "/api/");
    for (size_t i = 5; i < 1995; i += 2)
        memcpy(path + i, "\xc3\xa9", 2);
    path[1995] = '\0';
    assert_int_equal(jw_api_match_route(JW_HTTP_GET, path, &m, &err), -1);
    assert_int_equal(err.status, 404);
    s = json_string(err.message);
    assert_non_null(s);
    json_decref(s);
    /* "no route /api/" is 14 bytes: at 511 the message would end in half an é. */
    assert_int_equal(strlen(err.message), sizeof(err.message) - 2);
    free(path);

    /* A value of 2-byte characters in an invalid_field message: cut between them. */
    snprintf(body, sizeof(body), "{\"transaction_amount\":\"%s\",\"transaction_count\":1}",
             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    snprintf(want, sizeof(want), "transaction_amount must be an integer 1..1000000 (got \"%s)",
             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    body_case(JW_API_CREATE_JOB, JSON, body, 400, "invalid_field", want, &b);
    jw_api_body_release(&b);

    /* An unknown key of 3-byte characters: cut at 63 bytes, not 64. */
    strcpy(body, "{\"");
    for (int i = 0; i < 30; i++)
        strcat(body, "\xe2\x82\xac");
    strcat(body, "\":1}");
    strcpy(want, "unknown field \"");
    for (int i = 0; i < 21; i++)
        strcat(want, "\xe2\x82\xac");
    strcat(want, "\"; allowed fields: otp");
    body_case(JW_API_SUBMIT_OTP, JSON, body, 400, "unknown_field", want, &b);
    jw_api_body_release(&b);
}

/* ---- framing --------------------------------------------------------------------------- */

struct frame_case {
    jw_http_method method;
    const char *length; /* the Content-Length header, NULL when absent */
    const char *te;     /* the Transfer-Encoding header, NULL when absent */
    bool routed;
    jw_http_framing want;
    size_t want_length;
    int status; /* for JW_HTTP_REFUSE */
    const char *code, *message;
};

static const struct frame_case frames[] = {
    {JW_HTTP_GET, NULL, NULL, true, JW_HTTP_NO_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_HEAD, NULL, NULL, false, JW_HTTP_NO_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_DELETE, NULL, NULL, true, JW_HTTP_NO_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_GET, "0", NULL, true, JW_HTTP_NO_BODY, 0, 0, NULL, NULL},
    /* A body announced on any method is read (and ignored by GET routes). */
    {JW_HTTP_GET, "5", NULL, true, JW_HTTP_READ_BODY, 5, 0, NULL, NULL},
    {JW_HTTP_POST, "17", NULL, true, JW_HTTP_READ_BODY, 17, 0, NULL, NULL},
    /* An empty POST is still read: lws completes it. A PUT of 0 bytes is not. */
    {JW_HTTP_POST, "0", NULL, true, JW_HTTP_READ_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_PUT, "0", NULL, true, JW_HTTP_NO_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_POST, "000", NULL, true, JW_HTTP_READ_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_POST, "1024", NULL, true, JW_HTTP_READ_BODY, 1024, 0, NULL, NULL},
    {JW_HTTP_POST, "1025", NULL, true, JW_HTTP_REFUSE, 1025, 413, "body_too_large",
     "request body of 1025 bytes exceeds the limit of 1024 bytes"},
    {JW_HTTP_GET, "999999", NULL, false, JW_HTTP_REFUSE, 999999, 413, "body_too_large", NULL},
    /* Neither header: an empty body (RFC 9112 section 6.3), then the connection closes. */
    {JW_HTTP_POST, NULL, NULL, true, JW_HTTP_EMPTY_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_PATCH, NULL, NULL, true, JW_HTTP_EMPTY_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_PUT, NULL, NULL, true, JW_HTTP_EMPTY_BODY, 0, 0, NULL, NULL},
    {JW_HTTP_PUT, NULL, NULL, false, JW_HTTP_CLOSE, 0, 0, NULL, NULL},
    {JW_HTTP_POST, NULL, NULL, false, JW_HTTP_CLOSE, 0, 0, NULL, NULL},
    /* Chunked, in any case and with blanks around it, on the methods lws reads it for. */
    {JW_HTTP_POST, NULL, "chunked", true, JW_HTTP_READ_CHUNKED, 0, 0, NULL, NULL},
    {JW_HTTP_PUT, NULL, " Chunked\t", true, JW_HTTP_READ_CHUNKED, 0, 0, NULL, NULL},
    {JW_HTTP_PATCH, NULL, "CHUNKED", true, JW_HTTP_READ_CHUNKED, 0, 0, NULL, NULL},
    {JW_HTTP_POST, NULL, "chunked", false, JW_HTTP_CLOSE, 0, 0, NULL, NULL},
    {JW_HTTP_DELETE, NULL, "chunked", true, JW_HTTP_REFUSE, 0, 411, "length_required",
     "a DELETE body needs a Content-Length header (chunked bodies are taken on POST, PUT and "
     "PATCH)"},
    {JW_HTTP_GET, NULL, "chunked", true, JW_HTTP_REFUSE, 0, 411, "length_required", NULL},
    {JW_HTTP_GET, NULL, "chunked", false, JW_HTTP_CLOSE, 0, 0, NULL, NULL},
    /* Both headers: refused whatever they say (request smuggling), routed or not. */
    {JW_HTTP_POST, "12", "chunked", true, JW_HTTP_REFUSE, 0, 400, "bad_request",
     "a request must not carry both Content-Length and Transfer-Encoding (RFC 9112 section "
     "6.3); send one of them"},
    {JW_HTTP_POST, "0", "chunked", false, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_GET, "abc", "identity", true, JW_HTTP_REFUSE, 0, 400, "bad_request",
     "a request must not carry both Content-Length and Transfer-Encoding (RFC 9112 section "
     "6.3); send one of them"},
    /* Only chunked alone: another coding, or chunked twice, is refused. */
    {JW_HTTP_POST, NULL, "gzip, chunked", true, JW_HTTP_REFUSE, 0, 400, "bad_request",
     "Transfer-Encoding must be chunked (got \"gzip, chunked\"); other transfer codings are not "
     "supported, send chunked or Content-Length"},
    {JW_HTTP_POST, NULL, "chunked, chunked", true, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, NULL, "chunkedx", true, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, NULL, "identity", false, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, "abc", NULL, true, JW_HTTP_REFUSE, 0, 400, "bad_request",
     "Content-Length must be a number of bytes"},
    {JW_HTTP_POST, "-1", NULL, true, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, "+5", NULL, true, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, " 5", NULL, true, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, "5 ", NULL, true, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, "0x10", NULL, true, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, "", NULL, true, JW_HTTP_REFUSE, 0, 400, "bad_request", NULL},
    {JW_HTTP_POST, "99999999999999999999999", NULL, true, JW_HTTP_REFUSE, 0, 400, "bad_request",
     NULL},
};

static void test_framing(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(frames); i++) {
        const struct frame_case *c = &frames[i];
        jw_http_error err = {0};
        size_t length = 12345;
        char input[96];
        jw_http_framing got;

        snprintf(input, sizeof(input), "%s length=%s te=%s%s", jw_http_method_name(c->method),
                 c->length ? c->length : "(none)", c->te ? c->te : "(none)",
                 c->routed ? " routed" : "");
        got = jw_http_frame(c->method, c->length, c->te, 1024, c->routed, &length, &err);
        if (got != c->want)
            fail_msg("%s: framing %d, expected %d", input, got, c->want);
        if (got != JW_HTTP_REFUSE || c->status != 400)
            assert_int_equal(length, c->want_length);
        if (got == JW_HTTP_REFUSE)
            expect_err(&err, c->status, c->code, c->message, input);
    }
}

/* ---- chunked bodies ---------------------------------------------------------------------- */

struct chunked_result {
    jw_http_chunk_step end; /* DONE, ERROR, or MORE when the input ran out first */
    char body[256];
    size_t body_len;
    size_t used; /* bytes of the input taken when it ended */
    jw_http_error err;
};

/* Decodes in (len bytes), fed in pieces of at most piece bytes, with max_body. */
static void dechunk(const char *in, size_t len, size_t piece, size_t max_body,
                    struct chunked_result *r)
{
    jw_http_chunked c;
    size_t off = 0;

    memset(r, 0, sizeof(*r));
    r->end = JW_HTTP_CHUNK_MORE;
    jw_http_chunked_init(&c, max_body);
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece;

        while (n) {
            const char *data = NULL;
            size_t used = 0, dlen = 0;
            jw_http_chunk_step step =
                jw_http_chunked_read(&c, in + off, n, &used, &data, &dlen, &r->err);

            assert_true(used <= n);
            off += used;
            n -= used;
            if (step == JW_HTTP_CHUNK_DATA) {
                assert_true(dlen >= 1 && data >= in && data + dlen <= in + off);
                assert_true(r->body_len + dlen < sizeof(r->body));
                memcpy(r->body + r->body_len, data, dlen);
                r->body_len += dlen;
            } else if (step == JW_HTTP_CHUNK_MORE) {
                assert_int_equal(n, 0);
            } else {
                r->end = step;
                r->used = off;
                return;
            }
        }
    }
    r->used = off;
}

struct chunked_case {
    const char *in;
    size_t in_len;
    jw_http_chunk_step end;
    const char *body; /* for DONE */
    size_t body_len;
    size_t used; /* for DONE: where the body ended */
    int status;  /* for ERROR */
    const char *message;
};

/* A string literal and its length, NULs inside counted. */
#define BYTES(s) s, sizeof(s) - 1
#define FIX "; send a valid chunked body, or use Content-Length"

static const struct chunked_case chunked_cases[] = {
    {BYTES("5\r\nhello\r\n0\r\n\r\n"), JW_HTTP_CHUNK_DONE, BYTES("hello"), 15, 0, NULL},
    {BYTES("0\r\n\r\n"), JW_HTTP_CHUNK_DONE, BYTES(""), 5, 0, NULL},
    {BYTES("000\r\n\r\n"), JW_HTTP_CHUNK_DONE, BYTES(""), 7, 0, NULL},
    {BYTES("3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"), JW_HTTP_CHUNK_DONE, BYTES("abc0123456789"),
     28, 0, NULL},
    {BYTES("0a\r\n0123456789\r\n0\r\n\r\n"), JW_HTTP_CHUNK_DONE, BYTES("0123456789"), 21, 0, NULL},
    /* Extensions (after blanks too) and trailer fields are skipped. */
    {BYTES("2;name=value\r\nhi\r\n0;last\r\n\r\n"), JW_HTTP_CHUNK_DONE, BYTES("hi"), 28, 0, NULL},
    {BYTES("2 \t;x=\"q; r\"\r\nhi\r\n0\r\n\r\n"), JW_HTTP_CHUNK_DONE, BYTES("hi"), 23, 0, NULL},
    {BYTES("2\r\nhi\r\n0\r\nX-Sum: 1\r\nEmpty:\r\n\r\n"), JW_HTTP_CHUNK_DONE, BYTES("hi"), 30, 0,
     NULL},
    /* Data may hold CR, LF and NUL; what follows the body is not taken. */
    {BYTES("3\r\n\r\n\0\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), JW_HTTP_CHUNK_DONE, BYTES("\r\n\0"), 13,
     0, NULL},
    /* Incomplete: more is needed. */
    {BYTES("5\r\nhel"), JW_HTTP_CHUNK_MORE, NULL, 0, 0, 0, NULL},
    {BYTES("5\r\nhello\r\n0\r\n"), JW_HTTP_CHUNK_MORE, NULL, 0, 0, 0, NULL},
    {BYTES("5\r\nhello\r\n0\r\nX: 1\r\n"), JW_HTTP_CHUNK_MORE, NULL, 0, 0, 0, NULL},
    {BYTES(""), JW_HTTP_CHUNK_MORE, NULL, 0, 0, 0, NULL},
    /* Malformed. */
    {BYTES("x\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400,
     "malformed chunked body: a chunk size must start with a hex digit (byte 0x78)" FIX},
    {BYTES("\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES("-1\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES(" 5\r\nhello\r\n0\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES("0x5\r\nhello\r\n0\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400,
     "malformed chunked body: a chunk size must be hex digits, then ';' or CRLF (byte 0x78)" FIX},
    {BYTES("5 \r\nhello\r\n0\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400,
     "malformed chunked body: only a ';' extension may follow a chunk size (byte 0x0d)" FIX},
    /* A bare LF or CR is refused, never guessed at. */
    {BYTES("5\nhello\r\n0\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES("5\r\rhello\r\n0\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400,
     "malformed chunked body: a chunk size line must end with CRLF (byte 0x0d)" FIX},
    {BYTES("5\r\nhello\n0\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    /* More data than the size said. */
    {BYTES("3\r\nhello\r\n0\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400,
     "malformed chunked body: a chunk's data must be followed by CRLF (byte 0x6c)" FIX},
    {BYTES("2;a\x01\r\nhi\r\n0\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES("0\r\n: no name\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES("0\r\n folded\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES("0\r\nNo-Colon\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES("0\r\nX: a\rb\r\n\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400, NULL},
    {BYTES("0\r\n\rx"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 400,
     "malformed chunked body: a chunked body must end with CRLF (byte 0x78)" FIX},
    /* Over max_body (64 here): refused at the size, before its data comes. */
    {BYTES("41\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 413,
     "chunked request body exceeds the limit of 64 bytes (0 received, the next chunk is larger "
     "than what is left)"},
    {BYTES("40\r\n"), JW_HTTP_CHUNK_MORE, NULL, 0, 0, 0, NULL},
    {BYTES("20\r\n0123456789abcdef0123456789abcdef\r\n21\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0,
     413,
     "chunked request body exceeds the limit of 64 bytes (32 received, the next chunk is larger "
     "than what is left)"},
    /* A size of any number of digits does not wrap. */
    {BYTES("10000000000000000000000000000001\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 413, NULL},
    {BYTES("ffffffffffffffffffffffffffffffff\r\n"), JW_HTTP_CHUNK_ERROR, NULL, 0, 0, 413, NULL},
};

static void test_chunked(void **state)
{
    static const size_t pieces[] = {1, 2, 3, 7, 4096};

    (void)state;
    for (size_t i = 0; i < N(chunked_cases); i++) {
        const struct chunked_case *c = &chunked_cases[i];

        /* The same answer whatever pieces the bytes come in. */
        for (size_t p = 0; p < N(pieces); p++) {
            struct chunked_result r;

            dechunk(c->in, c->in_len, pieces[p], 64, &r);
            if (r.end != c->end)
                fail_msg("chunked case %zu (pieces of %zu): ended with %d, expected %d (%s)", i,
                         pieces[p], r.end, c->end, r.err.message);
            if (c->end == JW_HTTP_CHUNK_DONE) {
                assert_int_equal(r.body_len, c->body_len);
                assert_memory_equal(r.body, c->body, c->body_len);
                assert_int_equal(r.used, c->used);
            } else if (c->end == JW_HTTP_CHUNK_ERROR) {
                char input[48];

                snprintf(input, sizeof(input), "chunked case %zu", i);
                expect_err(&r.err, c->status, c->status == 400 ? "bad_request" : "body_too_large",
                           c->message, input);
            }
        }
    }
}

/* The bounds on what is not data: a size line, the trailers, all framing together. */
static void test_chunked_bounds(void **state)
{
    static char in[80000];
    struct chunked_result r;
    size_t n;

    (void)state;
    /* A size line of 1024 bytes is taken, one of 1025 is not. */
    n = (size_t)snprintf(in, sizeof(in), "1;%01020d\r\nx\r\n0\r\n\r\n", 0);
    dechunk(in, n, 4096, 64, &r);
    assert_int_equal(r.end, JW_HTTP_CHUNK_DONE);
    n = (size_t)snprintf(in, sizeof(in), "1;%01021d\r\nx\r\n0\r\n\r\n", 0);
    dechunk(in, n, 4096, 64, &r);
    assert_int_equal(r.end, JW_HTTP_CHUNK_ERROR);
    expect_err(&r.err, 400, "bad_request",
               "malformed chunked body: a chunk size line is over 1024 bytes (byte 0x0a)" FIX,
               "a size line of 1025 bytes");
    /* Leading zeros count toward it too. */
    memset(in, '0', 2000);
    memcpy(in + 2000, "\r\n\r\n", 4);
    dechunk(in, 2004, 4096, 64, &r);
    assert_int_equal(r.end, JW_HTTP_CHUNK_ERROR);
    assert_int_equal(r.err.status, 400);

    /* Trailers: 8192 bytes are taken (the final CRLF counted), 8193 are not. */
    n = (size_t)snprintf(in, sizeof(in), "0\r\nX: %08185d\r\n\r\n", 0);
    assert_int_equal(n, 3 + 8192);
    dechunk(in, n, 4096, 64, &r);
    assert_int_equal(r.end, JW_HTTP_CHUNK_DONE);
    n = (size_t)snprintf(in, sizeof(in), "0\r\nX: %08186d\r\n\r\n", 0);
    dechunk(in, n, 4096, 64, &r);
    assert_int_equal(r.end, JW_HTTP_CHUNK_ERROR);
    expect_err(&r.err, 400, "bad_request",
               "malformed chunked body: the trailer section is over 8192 bytes (byte 0x0a)" FIX,
               "a trailer section of 8193 bytes");

    /*
     * All framing: with a max_body of 1024, 1024 + 65536 bytes. One-byte
     * chunks with long extensions spend 1006 framing bytes per data byte:
     * the 67th chunk passes it, long before the body reaches 1024 bytes.
     */
    n = 0;
    while (n + 1100 < sizeof(in))
        n += (size_t)snprintf(in + n, sizeof(in) - n, "1;%01000d\r\nx\r\n", 0);
    dechunk(in, n, 4096, 1024, &r);
    assert_int_equal(r.end, JW_HTTP_CHUNK_ERROR);
    assert_int_equal(r.body_len, 66);
    expect_err(&r.err, 413, "body_too_large",
               "chunked request body spends over 66560 bytes on chunk framing; send larger "
               "chunks, or use Content-Length",
               "too much framing");
}

static void test_content_length(void **state)
{
    size_t n = 7;

    (void)state;
    assert_true(jw_http_parse_content_length("0", &n));
    assert_int_equal(n, 0);
    assert_true(jw_http_parse_content_length("0065536", &n));
    assert_int_equal(n, 65536);
    assert_false(jw_http_parse_content_length(NULL, &n));
    assert_false(jw_http_parse_content_length("", &n));
    assert_false(jw_http_parse_content_length("1e3", &n));
    /* SIZE_MAX / 2 is the largest taken: twice it cannot overflow a sum. */
    {
        char buf[32];

        snprintf(buf, sizeof(buf), "%zu", (size_t)SIZE_MAX / 2);
        assert_true(jw_http_parse_content_length(buf, &n));
        assert_int_equal(n, SIZE_MAX / 2);
        snprintf(buf, sizeof(buf), "%zu", (size_t)SIZE_MAX / 2 + 1);
        assert_false(jw_http_parse_content_length(buf, &n));
    }
}

static void test_is_json(void **state)
{
    static const char *const yes[] = {"application/json", "application/json; charset=utf-8",
                                      "Application/JSON", "application/json ", "application/json;"};
    static const char *const no[] = {"",
                                     "text/plain",
                                     "application/jsonfoo",
                                     "application/json-patch+json",
                                     "application/jso",
                                     " application/json",
                                     "application/json\t",
                                     "application/x-www-form-urlencoded"};

    (void)state;
    for (size_t i = 0; i < N(yes); i++)
        if (!jw_http_is_json(yes[i]))
            fail_msg("\"%s\" is JSON", yes[i]);
    for (size_t i = 0; i < N(no); i++)
        if (jw_http_is_json(no[i]))
            fail_msg("\"%s\" is not JSON", no[i]);
    assert_false(jw_http_is_json(NULL));
}

/* ---- the query string ------------------------------------------------------------------- */

/* A query buffer as http.c stores it: the arguments, NUL-separated. */
struct query {
    char buf[512];
    size_t len;
};

static void query_of(struct query *q, const char *const *args, size_t n)
{
    q->len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(args[i]);

        assert_true(q->len + l + 1 <= sizeof(q->buf));
        memcpy(q->buf + q->len, args[i], l + 1);
        q->len += l + 1;
    }
}

#define QUERY(q, ...)                                                                              \
    do {                                                                                           \
        static const char *const args_[] = {__VA_ARGS__};                                          \
        query_of(q, args_, N(args_));                                                              \
    } while (0)

static void test_query_get(void **state)
{
    struct query q;

    (void)state;
    QUERY(&q, "limit=5", "status", "user_id=", "limit=7", "limits=9", "x=a=b");
    assert_string_equal(jw_http_query_get(q.buf, q.len, "limit"), "5");
    assert_string_equal(jw_http_query_get(q.buf, q.len, "status"), "");
    assert_string_equal(jw_http_query_get(q.buf, q.len, "user_id"), "");
    assert_string_equal(jw_http_query_get(q.buf, q.len, "limits"), "9");
    assert_string_equal(jw_http_query_get(q.buf, q.len, "x"), "a=b");
    assert_null(jw_http_query_get(q.buf, q.len, "before"));
    assert_null(jw_http_query_get(q.buf, q.len, "lim"));
    assert_null(jw_http_query_get(NULL, 0, "limit"));
}

struct list_case {
    const char *args[4];
    size_t nargs;
    int rc;
    const char *status, *user_id, *before;
    int limit;
    const char *message; /* for rc -1 */
};

#define BAD_LIMIT "limit must be 1..100"
#define BAD_BEFORE "before must be the id of a job from the previous page"
#define BAD_STATUS                                                                                 \
    "status must be one of initiated, validating, processing, completed, failed, cancelled"

static const struct list_case lists[] = {
    {{NULL}, 0, 0, NULL, NULL, NULL, 20, NULL},
    {{"status=completed", "limit=10"}, 2, 0, "completed", NULL, NULL, 10, NULL},
    {{"status=initiated"}, 1, 0, "initiated", NULL, NULL, 20, NULL},
    {{"status=cancelled"}, 1, 0, "cancelled", NULL, NULL, 20, NULL},
    {{"status="}, 1, 0, NULL, NULL, NULL, 20, NULL},
    {{"status"}, 1, 0, NULL, NULL, NULL, 20, NULL},
    {{"user_id=" U1, "before=" L1}, 2, 0, NULL, U1, L1, 20, NULL},
    {{"user_id=", "before="}, 2, 0, NULL, NULL, NULL, 20, NULL},
    {{"limit=1"}, 1, 0, NULL, NULL, NULL, 1, NULL},
    {{"limit=100"}, 1, 0, NULL, NULL, NULL, 100, NULL},
    {{"limit=007"}, 1, 0, NULL, NULL, NULL, 7, NULL},
    /* strtol's leading blanks and sign, kept as they were. */
    {{"limit= 5"}, 1, 0, NULL, NULL, NULL, 5, NULL},
    {{"limit=+5"}, 1, 0, NULL, NULL, NULL, 5, NULL},
    /* The first occurrence wins; unknown arguments are ignored. */
    {{"limit=5", "limit=abc", "colour=red"}, 3, 0, NULL, NULL, NULL, 5, NULL},
    {{"status=done"}, 1, -1, NULL, NULL, NULL, 0, BAD_STATUS},
    {{"status=Completed"}, 1, -1, NULL, NULL, NULL, 0, BAD_STATUS},
    {{"user_id=nope"}, 1, -1, NULL, NULL, NULL, 0, "user_id must be a UUID"},
    {{"user_id=" L1 "x"}, 1, -1, NULL, NULL, NULL, 0, "user_id must be a UUID"},
    {{"before=nope"}, 1, -1, NULL, NULL, NULL, 0, BAD_BEFORE},
    {{"limit=0"}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    {{"limit=101"}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    {{"limit=abc"}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    {{"limit=-1"}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    {{"limit="}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    {{"limit"}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    {{"limit=1x"}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    {{"limit=5 "}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    {{"limit=99999999999999999999"}, 1, -1, NULL, NULL, NULL, 0, BAD_LIMIT},
    /* The first bad one decides: status, user_id, before, limit. */
    {{"limit=0", "before=x", "user_id=y", "status=z"}, 4, -1, NULL, NULL, NULL, 0, BAD_STATUS},
    {{"limit=0", "before=x", "user_id=y"}, 3, -1, NULL, NULL, NULL, 0, "user_id must be a UUID"},
    {{"limit=0", "before=x"}, 2, -1, NULL, NULL, NULL, 0, BAD_BEFORE},
};

static void check_str(const char *got, const char *want, const char *what, size_t i)
{
    if (!want ? got != NULL : !got || strcmp(got, want) != 0)
        fail_msg("case %zu: %s is %s, expected %s", i, what, got ? got : "NULL",
                 want ? want : "NULL");
}

static void test_list_query(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(lists); i++) {
        const struct list_case *c = &lists[i];
        jw_api_list_query lq;
        jw_http_error err = {0};
        struct query q;
        int rc;

        query_of(&q, c->args, c->nargs);
        rc = jw_api_parse_list_query(q.buf, q.len, &lq, &err);
        if (rc != c->rc)
            fail_msg("case %zu (%s): rc %d, expected %d (%s)", i, c->nargs ? c->args[0] : "", rc,
                     c->rc, err.message);
        if (rc != 0) {
            expect_err(&err, 400, "invalid_parameter", c->message, c->args[0]);
            continue;
        }
        check_str(lq.status, c->status, "status", i);
        check_str(lq.user_id, c->user_id, "user_id", i);
        check_str(lq.before, c->before, "before", i);
        assert_int_equal(lq.limit, c->limit);
    }
}

/* ---- routes ---------------------------------------------------------------------------------- */

struct route_case {
    jw_http_method method;
    const char *path;
    jw_api_route route; /* 0: refused with status/code/message/allow */
    const char *id;
    int status;
    const char *code, *message, *allow;
};

#define BAD_JOB_ID "the job id in the path must be a UUID"
#define BAD_OTP_ID "the OTP request id in the path must be a UUID"

static const struct route_case routes[] = {
    {JW_HTTP_GET, "/api/jobs", JW_API_LIST_JOBS, "", 0, NULL, NULL, NULL},
    {JW_HTTP_HEAD, "/api/jobs", JW_API_LIST_JOBS, "", 0, NULL, NULL, NULL},
    {JW_HTTP_POST, "/api/jobs", JW_API_CREATE_JOB, "", 0, NULL, NULL, NULL},
    {JW_HTTP_POST, "/api/jobs/start-payment", JW_API_START_PAYMENT, "", 0, NULL, NULL, NULL},
    {JW_HTTP_POST, "/api/jobs/otp-received", JW_API_OTP_RECEIVED, "", 0, NULL, NULL, NULL},
    {JW_HTTP_GET, "/api/sim/inbox", JW_API_SIM_INBOX, "", 0, NULL, NULL, NULL},
    {JW_HTTP_HEAD, "/api/sim/inbox", JW_API_SIM_INBOX, "", 0, NULL, NULL, NULL},
    {JW_HTTP_POST, "/api/otp/" L1, JW_API_SUBMIT_OTP, L1, 0, NULL, NULL, NULL},
    {JW_HTTP_POST, "/api/otp/" U1, JW_API_SUBMIT_OTP, L1, 0, NULL, NULL, NULL},
    {JW_HTTP_GET, "/api/jobs/" L1, JW_API_GET_JOB, L1, 0, NULL, NULL, NULL},
    {JW_HTTP_HEAD, "/api/jobs/" U1, JW_API_GET_JOB, L1, 0, NULL, NULL, NULL},
    {JW_HTTP_POST, "/api/jobs/" U1 "/cancel", JW_API_CANCEL_JOB, L1, 0, NULL, NULL, NULL},
    {JW_HTTP_POST, "/api/jobs/" W1 "/retry", JW_API_RETRY_JOB, W1, 0, NULL, NULL, NULL},
    /* 405: the route exists, the method does not; Allow lists the methods. */
    {JW_HTTP_PUT, "/api/jobs", 0, NULL, 405, "method_not_allowed",
     "PUT is not allowed on /api/jobs; use GET, HEAD, POST", "GET, HEAD, POST"},
    {JW_HTTP_DELETE, "/api/jobs", 0, NULL, 405, "method_not_allowed", NULL, "GET, HEAD, POST"},
    {JW_HTTP_GET, "/api/jobs/start-payment", 0, NULL, 405, "method_not_allowed",
     "GET is not allowed on /api/jobs/start-payment; use POST", "POST"},
    {JW_HTTP_HEAD, "/api/jobs/otp-received", 0, NULL, 405, "method_not_allowed", NULL, "POST"},
    {JW_HTTP_POST, "/api/sim/inbox", 0, NULL, 405, "method_not_allowed", NULL, "GET, HEAD"},
    {JW_HTTP_GET, "/api/otp/" L1, 0, NULL, 405, "method_not_allowed",
     "GET is not allowed on /api/otp/" L1 "; use POST", "POST"},
    {JW_HTTP_POST, "/api/jobs/" L1, 0, NULL, 405, "method_not_allowed",
     "POST is not allowed on /api/jobs/" L1 "; use GET, HEAD", "GET, HEAD"},
    {JW_HTTP_DELETE, "/api/jobs/" L1, 0, NULL, 405, "method_not_allowed", NULL, "GET, HEAD"},
    {JW_HTTP_GET, "/api/jobs/" L1 "/cancel", 0, NULL, 405, "method_not_allowed", NULL, "POST"},
    {JW_HTTP_OPTIONS, "/api/jobs/" L1 "/retry", 0, NULL, 405, "method_not_allowed", NULL, "POST"},
    /* The path's id is judged before the method. */
    {JW_HTTP_GET, "/api/otp/not-a-uuid", 0, NULL, 400, "invalid_parameter", BAD_OTP_ID, ""},
    {JW_HTTP_POST, "/api/otp/", 0, NULL, 400, "invalid_parameter", BAD_OTP_ID, ""},
    {JW_HTTP_POST, "/api/otp/" L1 "/", 0, NULL, 400, "invalid_parameter", BAD_OTP_ID, ""},
    {JW_HTTP_POST, "/api/otp/" L1 "0", 0, NULL, 400, "invalid_parameter", BAD_OTP_ID, ""},
    {JW_HTTP_POST, "/api/otp/{" L1 "}", 0, NULL, 400, "invalid_parameter", BAD_OTP_ID, ""},
    {JW_HTTP_GET, "/api/jobs/not-a-uuid", 0, NULL, 400, "invalid_parameter", BAD_JOB_ID, ""},
    {JW_HTTP_DELETE, "/api/jobs/not-a-uuid", 0, NULL, 400, "invalid_parameter", BAD_JOB_ID, ""},
    /* A trailing slash after /api/jobs is an empty id. */
    {JW_HTTP_GET, "/api/jobs/", 0, NULL, 400, "invalid_parameter", BAD_JOB_ID, ""},
    {JW_HTTP_POST, "/api/jobs//cancel", 0, NULL, 400, "invalid_parameter", BAD_JOB_ID, ""},
    {JW_HTTP_GET, "/api/jobs/" L1 "x", 0, NULL, 400, "invalid_parameter", BAD_JOB_ID, ""},
    {JW_HTTP_GET, "/api/jobs/0a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d0000", 0, NULL, 400,
     "invalid_parameter", BAD_JOB_ID, ""},
    {JW_HTTP_POST, "/api/jobs/START-PAYMENT", 0, NULL, 400, "invalid_parameter", BAD_JOB_ID, ""},
    /* 404: no such route. Matching is exact (case, slashes, suffixes). */
    {JW_HTTP_GET, "/api/nope", 0, NULL, 404, "not_found", "no route /api/nope", ""},
    {JW_HTTP_GET, "/api/", 0, NULL, 404, "not_found", "no route /api/", ""},
    {JW_HTTP_GET, "/api/jobs/" L1 "/", 0, NULL, 404, "not_found", "no route /api/jobs/" L1 "/", ""},
    {JW_HTTP_GET, "/api/jobs/" L1 "/steps", 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_POST, "/api/jobs/" L1 "/cancel/", 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_POST, "/api/jobs/" L1 "//cancel", 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_POST, "/api/jobs/" L1 "/Cancel", 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_GET, "/api/jobs?limit=1", 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_GET, "/api/jobs/", 0, NULL, 400, "invalid_parameter", NULL, ""},
    {JW_HTTP_GET, "/api/Jobs", 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_GET, "/api//jobs", 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_GET, "/api/jobs/../jobs", 0, NULL, 400, "invalid_parameter", NULL, ""},
    {JW_HTTP_GET, "/api/sim/inbox/", 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_POST, "/api/otp", 0, NULL, 404, "not_found", NULL, ""},
    /* lws decodes %2F before we see the path; an encoded %2F (%252F) stays text. */
    {JW_HTTP_GET, "/api/jobs%2F" L1, 0, NULL, 404, "not_found", NULL, ""},
    {JW_HTTP_GET, "", 0, NULL, 404, "not_found", "no route ", ""},
};

static void test_routes(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(routes); i++) {
        const struct route_case *c = &routes[i];
        jw_http_error err = {0};
        jw_api_match m;
        char input[160];
        int rc = jw_api_match_route(c->method, c->path, &m, &err);

        snprintf(input, sizeof(input), "%s %s", jw_http_method_name(c->method), c->path);
        if (c->route) {
            if (rc != 0)
                fail_msg("%s: refused (%d %s)", input, err.status, err.message);
            assert_int_equal(m.route, c->route);
            assert_string_equal(m.id, c->id);
        } else {
            if (rc != -1)
                fail_msg("%s: matched %s", input, jw_api_route_name(m.route));
            expect_err(&err, c->status, c->code, c->message, input);
            assert_string_equal(err.allow, c->allow);
        }
    }
}

static void test_route_overlong(void **state)
{
    jw_http_error err = {0};
    jw_api_match m;
    char *path = malloc(8200);

    (void)state;
    assert_non_null(path);
    memcpy(path, "/api/", 5);
    memset(path + 5, 'a', 8190);
    path[8195] = '\0';
    assert_int_equal(jw_api_match_route(JW_HTTP_GET, path, &m, &err), -1);
    expect_err(&err, 404, "not_found", NULL, "an 8 KB path");
    assert_int_equal(strlen(err.message), sizeof(err.message) - 1);
    assert_memory_equal(err.message, "no route /api/aaa", 17);
    /* The same under /api/jobs/ and /api/otp/: a bad id. */
    memcpy(path, "/api/jobs/", 10);
    assert_int_equal(jw_api_match_route(JW_HTTP_GET, path, &m, &err), -1);
    expect_err(&err, 400, "invalid_parameter", BAD_JOB_ID, "an 8 KB job id");
    memcpy(path, "/api/otp//", 10);
    assert_int_equal(jw_api_match_route(JW_HTTP_POST, path, &m, &err), -1);
    expect_err(&err, 400, "invalid_parameter", BAD_OTP_ID, "an 8 KB OTP id");
    free(path);
}

static void test_route_names(void **state)
{
    (void)state;
    for (int r = 1; r < JW_API_ROUTES; r++)
        assert_true(strchr(jw_api_route_name((jw_api_route)r), '/') != NULL);
    assert_string_equal(jw_api_route_name(JW_API_SUBMIT_OTP), "POST /api/otp/{id}");
    assert_string_equal(jw_api_route_name(0), "?");
    assert_string_equal(jw_api_route_name(JW_API_ROUTES), "?");
}

/* ---- bodies --------------------------------------------------------------------------------- */

/* Parses body for route; checks the answer (0, or status/code/message), returns rc. */
static int body_case(jw_api_route route, const char *ct, const char *body, int status,
                     const char *code, const char *message, jw_api_body *out)
{
    jw_http_error err = {0};
    int rc = jw_api_parse_body(route, ct, body, body ? strlen(body) : 0, out, &err);
    char input[300];

    snprintf(input, sizeof(input), "%s %.200s", jw_api_route_name(route), body ? body : "(none)");
    if (!status) {
        if (rc != 0)
            fail_msg("%s: refused (%d %s: %s)", input, err.status, err.code, err.message);
        assert_non_null(out->doc);
        return rc;
    }
    if (rc != -1)
        fail_msg("%s: accepted, expected %d %s", input, status, code);
    expect_err(&err, status, code, message, input);
    assert_string_equal(err.allow, "");
    assert_null(out->doc);
    assert_null(out->user_id);
    assert_null(out->otp);
    return rc;
}

/* The body rebuilt from its canonical JSON parses into the same struct. */
static void check_canonical(jw_api_route route, const jw_api_body *b)
{
    json_t *canon = jw_api_body_json(route, b);
    char *text = json_dumps(canon, JSON_COMPACT);
    jw_http_error err = {0};
    jw_api_body again;

    assert_non_null(text);
    if (jw_api_parse_body(route, JSON, text, strlen(text), &again, &err) != 0)
        fail_msg("canonical %s refused: %s", text, err.message);
    assert_int_equal(again.amount, b->amount);
    assert_int_equal(again.count, b->count);
    assert_true(!b->metadata == !again.metadata);
    if (b->metadata)
        assert_true(json_equal(b->metadata, again.metadata));
    check_str(again.user_id, b->user_id, "user_id", 0);
    check_str(again.otp_id, b->otp_id, "otp_id", 0);
    check_str(again.otp, b->otp, "otp", 0);
    jw_api_body_release(&again);
    free(text);
    json_decref(canon);
}

static void test_body_create_ok(void **state)
{
    jw_api_body b;

    (void)state;
    body_case(JW_API_CREATE_JOB, JSON, "{\"transaction_amount\":1500,\"transaction_count\":4}", 0,
              NULL, NULL, &b);
    assert_int_equal(b.amount, 1500);
    assert_int_equal(b.count, 4);
    assert_null(b.metadata);
    assert_null(b.user_id);
    check_canonical(JW_API_CREATE_JOB, &b);
    jw_api_body_release(&b);
    assert_null(b.doc);

    body_case(JW_API_CREATE_JOB, "Application/JSON; charset=utf-8",
              "{\"user_id\":\"" U1 "\",\"transaction_count\":50,\"metadata\":{\"source\":\"cli\","
              "\"n\":[1,2.5,null]},\"transaction_amount\":1000000}",
              0, NULL, NULL, &b);
    assert_int_equal(b.amount, 1000000);
    assert_int_equal(b.count, 50);
    assert_string_equal(b.user_id, U1); /* as sent: the engine matches any case */
    assert_string_equal(json_string_value(json_object_get(b.metadata, "source")), "cli");
    check_canonical(JW_API_CREATE_JOB, &b);
    jw_api_body_release(&b);

    /* A null user_id is no user_id; whitespace around the object is JSON. */
    body_case(JW_API_CREATE_JOB, JSON,
              " \n{\"transaction_amount\":1,\"transaction_count\":1,\"user_id\":null,"
              "\"metadata\":{}}\n",
              0, NULL, NULL, &b);
    assert_null(b.user_id);
    assert_int_equal(json_object_size(b.metadata), 0);
    check_canonical(JW_API_CREATE_JOB, &b);
    jw_api_body_release(&b);
}

#define AMOUNT_MSG(got) "transaction_amount must be an integer 1..1000000 (got " got ")"
#define COUNT_MSG(got) "transaction_count must be an integer 1..50 (got " got ")"
#define UNKNOWN_JOB(k)                                                                             \
    "unknown field \"" k "\"; allowed fields: transaction_amount, transaction_count, metadata, "   \
    "user_id"

static void test_body_create_refused(void **state)
{
    static const struct {
        const char *ct, *body;
        int status;
        const char *code, *message;
    } cases[] = {
        {NULL, "{}", 415, "unsupported_media_type",
         "send the body as JSON with Content-Type: application/json"},
        {"text/plain", "{}", 415, "unsupported_media_type", NULL},
        {"application/jsonfoo", "{}", 415, "unsupported_media_type", NULL},
        /* Content-Type is judged before the body, even an empty one. */
        {"text/plain", "", 415, "unsupported_media_type", NULL},
        {JSON, "", 400, "bad_request", "the body must be a JSON object"},
        {JSON, "[{\"transaction_amount\":1500,\"transaction_count\":1}]", 400, "bad_request",
         "the body must be a JSON object"},
        {JSON, "\"hello\"", 400, "malformed_json",
         "malformed JSON at line 1 column 7: '[' or '{' expected near '\"hello\"'"},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":1", 400, "malformed_json",
         "malformed JSON at line 1 column 48: '}' expected near end of file"},
        {JSON, "{\"transaction_amount\":1500,\n\"transaction_amount\":1,\"transaction_count\":1}",
         400, "malformed_json",
         "malformed JSON at line 2 column 20: duplicate object key near '\"transaction_amount\"'"},
        {JSON, "{} {}", 400, "malformed_json", NULL},
        {JSON, "{\"a\":\"\\u0000\"}", 400, "malformed_json", NULL},
        {JSON, "{\"a\":\"\xff\"}", 400, "malformed_json", NULL},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":1,\"colour\":\"red\"}", 400,
         "unknown_field", UNKNOWN_JOB("colour")},
        {JSON, "{\"transactionAmount\":1500,\"transactionCount\":1}", 400, "unknown_field",
         UNKNOWN_JOB("transactionAmount")},
        /* Unknown fields are judged before the known ones' values. */
        {JSON, "{\"transaction_amount\":\"x\",\"x\":1}", 400, "unknown_field", UNKNOWN_JOB("x")},
        {JSON, "{\"transaction_amount\":0,\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("0")},
        {JSON, "{\"transaction_amount\":1000001,\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("1000001")},
        {JSON, "{\"transaction_amount\":\"1500\",\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("\"1500\"")},
        {JSON, "{\"transaction_amount\":1.5,\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("1.5")},
        {JSON, "{\"transaction_amount\":1500.0,\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("1500.0")},
        {JSON, "{\"transaction_amount\":-1,\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("-1")},
        {JSON, "{\"transaction_amount\":null,\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("null")},
        {JSON, "{\"transaction_amount\":true,\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("true")},
        {JSON, "{\"transaction_amount\":{},\"transaction_count\":1}", 400, "invalid_field",
         AMOUNT_MSG("{}")},
        {JSON,
         "{\"transaction_amount\":\"0123456789012345678901234567890123456789xyz\","
         "\"transaction_count\":1}",
         400, "invalid_field", AMOUNT_MSG("\"012345678901234567890123456789012345678")},
        {JSON, "{\"transaction_count\":1}", 400, "missing_field",
         "transaction_amount is required (an integer 1..1000000)"},
        {JSON, "{}", 400, "missing_field",
         "transaction_amount is required (an integer 1..1000000)"},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":0}", 400, "invalid_field",
         COUNT_MSG("0")},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":51}", 400, "invalid_field",
         COUNT_MSG("51")},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":2.0}", 400, "invalid_field",
         COUNT_MSG("2.0")},
        {JSON, "{\"transaction_amount\":1500}", 400, "missing_field",
         "transaction_count is required (an integer 1..50)"},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":1,\"metadata\":\"x\"}", 400,
         "invalid_field", "metadata must be a JSON object"},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":1,\"metadata\":[]}", 400,
         "invalid_field", "metadata must be a JSON object"},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":1,\"metadata\":null}", 400,
         "invalid_field", "metadata must be a JSON object"},
        /* metadata is judged first, then amount, count, user_id. */
        {JSON, "{\"metadata\":7}", 400, "invalid_field", "metadata must be a JSON object"},
        {JSON, "{\"transaction_amount\":0,\"transaction_count\":0,\"user_id\":1}", 400,
         "invalid_field", AMOUNT_MSG("0")},
        {JSON, "{\"transaction_amount\":1,\"transaction_count\":0,\"user_id\":1}", 400,
         "invalid_field", COUNT_MSG("0")},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":1,\"user_id\":\"nope\"}", 400,
         "invalid_field", "user_id must be a UUID"},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":1,\"user_id\":42}", 400,
         "invalid_field", "user_id must be a UUID"},
        {JSON, "{\"transaction_amount\":1500,\"transaction_count\":1,\"user_id\":\"{" L1 "}\"}",
         400, "invalid_field", "user_id must be a UUID"},
    };

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        jw_api_body b;

        body_case(JW_API_CREATE_JOB, cases[i].ct, cases[i].body, cases[i].status, cases[i].code,
                  cases[i].message, &b);
        jw_api_body_release(&b);
    }
}

static void test_body_empty(void **state)
{
    jw_http_error err = {0};
    jw_api_body b;

    (void)state;
    /* No body at all (NULL) is the empty body. */
    assert_int_equal(jw_api_parse_body(JW_API_CREATE_JOB, JSON, NULL, 0, &b, &err), -1);
    expect_err(&err, 400, "bad_request", "the body must be a JSON object", "no body");
    /* len decides, not a NUL: a body of 0 bytes is empty whatever the pointer holds. */
    assert_int_equal(jw_api_parse_body(JW_API_SUBMIT_OTP, JSON, "{\"otp\":\"1\"}", 0, &b, &err),
                     -1);
    expect_err(&err, 400, "bad_request", NULL, "len 0");
    /* ...and bytes after len are not read. */
    assert_int_equal(
        jw_api_parse_body(JW_API_SUBMIT_OTP, JSON, "{\"otp\":\"1234\"}garbage", 14, &b, &err), 0);
    assert_string_equal(b.otp, "1234");
    jw_api_body_release(&b);
}

static void test_body_start_payment(void **state)
{
    static const struct {
        const char *body;
        int status;
        const char *code, *message;
    } refused[] = {
        {"{\"userId\":\"" L1 "\"}", 400, "invalid_field",
         "config must be an object with transactionAmount and transactionCount"},
        {"{\"config\":[1500,2]}", 400, "invalid_field", NULL},
        {"{\"config\":null}", 400, "invalid_field", NULL},
        {"{\"userId\":\"nope\",\"config\":{\"transactionAmount\":1500,\"transactionCount\":1}}",
         400, "invalid_field", "userId must be a UUID"},
        {"{\"userId\":42,\"config\":{\"transactionAmount\":1500,\"transactionCount\":1}}", 400,
         "invalid_field", "userId must be a UUID"},
        /* userId is judged before config's fields. */
        {"{\"userId\":42,\"config\":{}}", 400, "invalid_field", "userId must be a UUID"},
        {"{\"config\":{\"transactionCount\":1}}", 400, "missing_field",
         "transactionAmount is required (an integer 1..1000000)"},
        {"{\"config\":{\"transactionAmount\":\"1500\",\"transactionCount\":1}}", 400,
         "invalid_field", "transactionAmount must be an integer 1..1000000 (got \"1500\")"},
        {"{\"config\":{\"transactionAmount\":1500}}", 400, "missing_field",
         "transactionCount is required (an integer 1..50)"},
        {"{\"config\":{\"transactionAmount\":1500,\"transactionCount\":51}}", 400, "invalid_field",
         "transactionCount must be an integer 1..50 (got 51)"},
        {"{\"config\":{\"transactionAmount\":1500,\"transactionCount\":1},\"priority\":1}", 400,
         "unknown_field", "unknown field \"priority\"; allowed fields: userId, config"},
        {"{\"transaction_amount\":1500}", 400, "unknown_field", NULL},
    };
    jw_api_body b;

    (void)state;
    body_case(JW_API_START_PAYMENT, JSON,
              "{\"userId\":\"" L1 "\",\"config\":{\"transactionAmount\":1500,"
              "\"transactionCount\":2,\"note\":\"kept\"}}",
              0, NULL, NULL, &b);
    assert_int_equal(b.amount, 1500);
    assert_int_equal(b.count, 2);
    assert_string_equal(b.user_id, L1);
    /* The whole config, unknown keys included, is the job's metadata. */
    assert_true(json_is_object(b.metadata));
    assert_int_equal(json_object_size(b.metadata), 3);
    assert_string_equal(json_string_value(json_object_get(b.metadata, "note")), "kept");
    assert_ptr_equal(b.metadata, json_object_get(b.doc, "config"));
    check_canonical(JW_API_START_PAYMENT, &b);
    jw_api_body_release(&b);

    body_case(JW_API_START_PAYMENT, JSON,
              "{\"config\":{\"transactionAmount\":100,\"transactionCount\":1},\"userId\":null}", 0,
              NULL, NULL, &b);
    assert_null(b.user_id);
    check_canonical(JW_API_START_PAYMENT, &b);
    jw_api_body_release(&b);

    body_case(JW_API_START_PAYMENT, NULL, "{}", 415, "unsupported_media_type", NULL, &b);
    jw_api_body_release(&b);
    for (size_t i = 0; i < N(refused); i++) {
        body_case(JW_API_START_PAYMENT, JSON, refused[i].body, refused[i].status, refused[i].code,
                  refused[i].message, &b);
        jw_api_body_release(&b);
    }
}

static void test_body_otp(void **state)
{
    static const struct {
        jw_api_route route;
        const char *body;
        int status;
        const char *code, *message;
    } refused[] = {
        {JW_API_SUBMIT_OTP, "{\"otp\":123456}", 400, "invalid_field",
         "otp must be a string of 4 to 10 digits"},
        {JW_API_SUBMIT_OTP, "{\"otp\":null}", 400, "invalid_field", NULL},
        {JW_API_SUBMIT_OTP, "{}", 400, "invalid_field", "otp must be a string of 4 to 10 digits"},
        {JW_API_SUBMIT_OTP, "{\"otp\":\"123456\",\"remember\":true}", 400, "unknown_field",
         "unknown field \"remember\"; allowed fields: otp"},
        {JW_API_SUBMIT_OTP, "[\"123456\"]", 400, "bad_request", NULL},
        {JW_API_OTP_RECEIVED, "{\"otpValue\":\"123456\"}", 400, "missing_field",
         "otpRequestId is required (a UUID)"},
        {JW_API_OTP_RECEIVED, "{\"otpRequestId\":null,\"otpValue\":\"123456\"}", 400,
         "missing_field", NULL},
        {JW_API_OTP_RECEIVED, "{\"otpRequestId\":\"nope\",\"otpValue\":\"123456\"}", 400,
         "invalid_field", "otpRequestId must be a UUID"},
        {JW_API_OTP_RECEIVED, "{\"otpRequestId\":\"" L1 "\",\"otpValue\":123456}", 400,
         "invalid_field", "otpValue must be a string of 4 to 10 digits"},
        {JW_API_OTP_RECEIVED, "{\"otpRequestId\":\"" L1 "\"}", 400, "invalid_field",
         "otpValue must be a string of 4 to 10 digits"},
        /* otpRequestId is judged before otpValue. */
        {JW_API_OTP_RECEIVED, "{\"otpRequestId\":7,\"otpValue\":7}", 400, "invalid_field",
         "otpRequestId must be a UUID"},
        {JW_API_OTP_RECEIVED, "{\"otpRequestId\":\"" L1 "\",\"otpValue\":\"1\",\"jobId\":\"x\"}",
         400, "unknown_field", "unknown field \"jobId\"; allowed fields: otpRequestId, otpValue"},
    };
    static const struct {
        jw_api_route route;
        const char *body, *message;
    } malformed[] = {
        {JW_API_SUBMIT_OTP, "{\"otp\":\"123456",
         "malformed JSON at line 1 column 14: premature end of input"},
        {JW_API_SUBMIT_OTP, "{\"otp\":123456x}",
         "malformed JSON at line 1 column 14: '}' expected"},
        {JW_API_SUBMIT_OTP, "{\"otp\":\"12345\\x\"}",
         "malformed JSON at line 1 column 15: invalid escape"},
        {JW_API_SUBMIT_OTP, "{\"otp\":\"1\",\"otp\":\"123456\"}",
         "malformed JSON at line 1 column 16: duplicate object key"},
        {JW_API_OTP_RECEIVED, "{\"otpRequestId\":\"" L1 "\",\"otpValue\":\"723278}",
         "malformed JSON at line 1 column 74: premature end of input"},
        {JW_API_OTP_RECEIVED, "{\"otpValue\":723278.}",
         "malformed JSON at line 1 column 19: invalid token"},
    };
    jw_api_body b;

    (void)state;
    /* A body that breaks is not quoted back: it holds the code (POST /api/jobs's is). */
    for (size_t i = 0; i < N(malformed); i++) {
        body_case(malformed[i].route, JSON, malformed[i].body, 400, "malformed_json",
                  malformed[i].message, &b);
        jw_api_body_release(&b);
    }
    body_case(JW_API_CREATE_JOB, JSON, "{\"transaction_amount\":15x}", 400, "malformed_json",
              "malformed JSON at line 1 column 25: '}' expected near 'x'", &b);
    jw_api_body_release(&b);

    body_case(JW_API_SUBMIT_OTP, JSON, "{\"otp\":\"123456\"}", 0, NULL, NULL, &b);
    assert_string_equal(b.otp, "123456");
    check_canonical(JW_API_SUBMIT_OTP, &b);
    jw_api_body_release(&b);
    /* The digits are the engine's to judge, after ownership (docs/api.md). */
    body_case(JW_API_SUBMIT_OTP, JSON, "{\"otp\":\"12\"}", 0, NULL, NULL, &b);
    assert_string_equal(b.otp, "12");
    jw_api_body_release(&b);
    body_case(JW_API_SUBMIT_OTP, JSON, "{\"otp\":\"\"}", 0, NULL, NULL, &b);
    assert_string_equal(b.otp, "");
    jw_api_body_release(&b);

    body_case(JW_API_OTP_RECEIVED, JSON, "{\"otpRequestId\":\"" U1 "\",\"otpValue\":\"723278\"}", 0,
              NULL, NULL, &b);
    assert_string_equal(b.otp_id, U1);
    assert_string_equal(b.otp, "723278");
    check_canonical(JW_API_OTP_RECEIVED, &b);
    jw_api_body_release(&b);

    body_case(JW_API_SUBMIT_OTP, "text/plain", "{\"otp\":\"123456\"}", 415,
              "unsupported_media_type", NULL, &b);
    jw_api_body_release(&b);
    for (size_t i = 0; i < N(refused); i++) {
        body_case(refused[i].route, JSON, refused[i].body, refused[i].status, refused[i].code,
                  refused[i].message, &b);
        jw_api_body_release(&b);
    }
}

/* GET routes, cancel and retry take no body: whatever came is ignored. */
static void test_body_ignored(void **state)
{
    static const jw_api_route none[] = {JW_API_LIST_JOBS,  JW_API_SIM_INBOX, JW_API_GET_JOB,
                                        JW_API_CANCEL_JOB, JW_API_RETRY_JOB, 0,
                                        JW_API_ROUTES};
    jw_http_error err = {0};
    jw_api_body b;

    (void)state;
    for (size_t i = 0; i < N(none); i++) {
        assert_int_equal(jw_api_parse_body(none[i], "text/plain", "[1", 2, &b, &err), 0);
        assert_null(b.doc);
        assert_null(jw_api_body_json(none[i], &b));
        jw_api_body_release(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_clean_text),
        cmocka_unit_test(test_utf8_prefix),
        cmocka_unit_test(test_messages_are_utf8),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_bounds),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_is_json),
        cmocka_unit_test(test_query_get),
        cmocka_unit_test(test_list_query),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_route_overlong),
        cmocka_unit_test(test_route_names),
        cmocka_unit_test(test_body_create_ok),
        cmocka_unit_test(test_body_create_refused),
        cmocka_unit_test(test_body_empty),
        cmocka_unit_test(test_body_start_payment),
        cmocka_unit_test(test_body_otp),
        cmocka_unit_test(test_body_ignored),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
