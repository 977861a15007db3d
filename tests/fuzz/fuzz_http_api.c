/*
 * fuzz_http_api - the job API's request parsing (server/api_parse.c,
 * server/http_parse.c) on any request line, query and body a client can
 * send.
 *
 * The first input byte picks what the rest is (seeds start with a digit):
 *   byte % 8 == 0  "METHOD /path[?query]": the route and its id; the query,
 *                  split at '&' as lws does, as GET /api/jobs's filters
 *   byte % 8 == 1  "METHOD flags rest", flags a digit: bit 1 routed;
 *                  without bit 4, the framing decision for rest =
 *                  "content-length[\ntransfer-encoding]" ('-' for no
 *                  Content-Length; bit 1 sends Transfer-Encoding, "chunked"
 *                  unless given after the newline); with bit 4, rest is a
 *                  chunked body, de-chunked whole, a byte at a time and in
 *                  pieces of 3 with a --max-body of 4096
 *   byte % 8 2..5  the body of POST /api/jobs, start-payment, /api/otp/{id},
 *                  otp-received: the Content-Type up to the first newline
 *                  (empty: none), then the body; framed with Content-Length
 *                  as sent and a --max-body of 4096
 *   byte % 8 6..7  a whole request: "METHOD /path\nContent-Type\nbody",
 *                  routed, then its body parsed for the route it matched
 *
 * Checks, besides no crash, leak or UB:
 *  - a matched route takes the method, and its pattern with the id filled
 *    in is the path (the id compared in any case); the id is a lower-case
 *    UUID for the routes that have one, "" otherwise;
 *  - a refused path is 400 invalid_parameter, 404 not_found or 405
 *    method_not_allowed; 400 and 404 whatever the method; a 405's Allow is
 *    not empty, omits the method, and each method it names is matched;
 *  - list filters that parse are a known status, UUIDs and a limit 1..100;
 *    a refusal is 400 invalid_parameter;
 *  - an accepted body is an object of the route's fields only, its values
 *    in range and borrowed from it, and the canonical JSON of the struct
 *    parses back into an equal struct; a refused one is 400 (bad_request,
 *    malformed_json, unknown_field, missing_field, invalid_field), 413
 *    body_too_large or 415 unsupported_media_type (only when the
 *    Content-Type is not JSON), leaves nothing behind, and has no Allow;
 *  - framing refuses with 400 bad_request (a bad Content-Length, both
 *    headers, a transfer coding but chunked), 411 length_required (chunked
 *    on a method lws reads no such body for) or 413 body_too_large; reads a
 *    body only when a length was given within the limit, de-chunks only a
 *    routed POST, PUT or PATCH with Transfer-Encoding: chunked alone, takes
 *    an empty body only for those methods without either header, and closes
 *    without an answer of its own only when unrouted;
 *  - a chunked body decodes the same whatever pieces it comes in; the body
 *    is at most --max-body, each data piece lies within the bytes given,
 *    every call makes progress; a refusal is 400 bad_request or 413
 *    body_too_large;
 *  - every refusal has a message a JSON string can carry (UTF-8, not empty);
 *    for the OTP routes it does not quote the body where the JSON broke.
 */
#include "api_parse.h"
#include "http_parse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #x);                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_BODY 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const jw_http_method methods[] = {JW_HTTP_GET,   JW_HTTP_HEAD,   JW_HTTP_POST,   JW_HTTP_PUT,
                                         JW_HTTP_PATCH, JW_HTTP_DELETE, JW_HTTP_OPTIONS};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

static const jw_api_route body_routes[] = {JW_API_CREATE_JOB, JW_API_START_PAYMENT,
                                           JW_API_SUBMIT_OTP, JW_API_OTP_RECEIVED};

/* A refusal's message can go into a JSON string: valid UTF-8, not empty. */
static void check_message(const jw_http_error *err)
{
    json_t *s;

    CHECK(err->message[0]);
    CHECK(memchr(err->message, '\0', sizeof(err->message)));
    s = json_string(err->message);
    CHECK(s);
    json_decref(s);
}

static bool is_code(const char *code, const char *const *codes)
{
    for (; *codes; codes++)
        if (strcmp(code, *codes) == 0)
            return true;
    return false;
}

/* ---- paths ------------------------------------------------------------------------------ */

/*
 * The route's pattern ("POST /api/otp/{id}") with its id filled in: the
 * path. Returns where the id starts in it, or -1 for a route without one.
 */
static int route_path(const jw_api_match *m, char *out, size_t size)
{
    const char *pattern = strchr(jw_api_route_name(m->route), ' ') + 1;
    const char *brace = strstr(pattern, "{id}");

    if (!brace) {
        snprintf(out, size, "%s", pattern);
        return -1;
    }
    snprintf(out, size, "%.*s%s%s", (int)(brace - pattern), pattern, m->id, brace + 4);
    return (int)(brace - pattern);
}

static bool takes(jw_api_route route, jw_http_method method)
{
    switch (route) {
    case JW_API_LIST_JOBS:
    case JW_API_SIM_INBOX:
    case JW_API_GET_JOB: return method == JW_HTTP_GET || method == JW_HTTP_HEAD;
    default: return method == JW_HTTP_POST;
    }
}

static void check_route(jw_http_method method, const char *path)
{
    jw_http_error err = {0};
    jw_api_match m;
    int rc = jw_api_match_route(method, path, &m, &err);

    if (rc == 0) {
        char rebuilt[128];
        int at;

        CHECK(m.route > 0 && m.route < JW_API_ROUTES);
        CHECK(takes(m.route, method));
        at = route_path(&m, rebuilt, sizeof(rebuilt));
        CHECK(strlen(rebuilt) == strlen(path));
        if (at < 0) {
            CHECK(m.id[0] == '\0');
            CHECK(strcmp(rebuilt, path) == 0);
            return;
        }
        CHECK(jw_uuid_valid(m.id));
        for (const char *c = m.id; *c; c++)
            CHECK(!(*c >= 'A' && *c <= 'Z'));
        /* The path is the pattern exactly, but for the id's case. */
        for (int i = 0; path[i]; i++)
            CHECK(path[i] == rebuilt[i] || (i >= at && i < at + JW_UUID_LEN && rebuilt[i] >= 'a' &&
                                            path[i] == rebuilt[i] - 32));
        return;
    }
    CHECK(rc == -1);
    check_message(&err);
    switch (err.status) {
    case 400: CHECK(strcmp(err.code, "invalid_parameter") == 0); break;
    case 404: CHECK(strcmp(err.code, "not_found") == 0); break;
    case 405: CHECK(strcmp(err.code, "method_not_allowed") == 0); break;
    default: CHECK(!"a path refused with another status");
    }
    if (err.status != 405) {
        CHECK(err.allow[0] == '\0');
        /* The path alone decides a 400 or 404: every method gets the same. */
        for (size_t i = 0; i < NMETHODS; i++) {
            jw_http_error other = {0};
            jw_api_match om;

            CHECK(jw_api_match_route(methods[i], path, &om, &other) == -1);
            CHECK(other.status == err.status);
        }
        return;
    }
    CHECK(err.allow[0]);
    for (size_t i = 0; i < NMETHODS; i++) {
        const char *name = jw_http_method_name(methods[i]);
        size_t n = strlen(name);
        bool listed = false;
        jw_http_error other = {0};
        jw_api_match om;

        for (const char *a = err.allow; (a = strstr(a, name)) != NULL; a += n)
            listed |= (a == err.allow || a[-1] == ' ') && (a[n] == ',' || a[n] == '\0');
        CHECK(listed == (jw_api_match_route(methods[i], path, &om, &other) == 0));
        CHECK(!listed || om.route > 0);
        if (!listed)
            CHECK(other.status == 405 && strcmp(other.allow, err.allow) == 0);
    }
}

static void check_list_query(const char *query, size_t len)
{
    static const char *const statuses[] = {"initiated", "validating", "processing",
                                           "completed", "failed",     "cancelled"};
    jw_http_error err = {0};
    jw_api_list_query q;

    if (jw_api_parse_list_query(query, len, &q, &err) != 0) {
        CHECK(err.status == 400 && strcmp(err.code, "invalid_parameter") == 0);
        CHECK(err.allow[0] == '\0');
        check_message(&err);
        return;
    }
    if (q.status) {
        bool known = false;

        for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
            known |= strcmp(q.status, statuses[i]) == 0;
        CHECK(known);
    }
    CHECK(!q.user_id || jw_uuid_valid(q.user_id));
    CHECK(!q.before || jw_uuid_valid(q.before));
    CHECK(q.limit >= 1 && q.limit <= JW_API_LIST_MAX);
    if (!jw_http_query_get(query, len, "limit"))
        CHECK(q.limit == JW_API_LIST_DEFAULT);
}

/* "METHOD rest": the method, or 0 when the token names none (lws never calls us then). */
static jw_http_method take_method(const char **p, const char *end)
{
    const char *sp = memchr(*p, ' ', (size_t)(end - *p));
    char name[16];

    if (!sp || sp - *p >= (long)sizeof(name))
        return 0;
    memcpy(name, *p, (size_t)(sp - *p));
    name[sp - *p] = '\0';
    *p = sp + 1;
    return jw_http_method_parse(name);
}

static void fuzz_path(const char *in, size_t len)
{
    const char *p = in, *end = in + len, *q;
    jw_http_method method = take_method(&p, end);
    char *path, *query;
    size_t plen, qlen = 0;

    if (!method)
        return;
    q = memchr(p, '?', (size_t)(end - p));
    plen = (size_t)((q ? q : end) - p);
    path = malloc(plen + 1);
    CHECK(path);
    memcpy(path, p, plen);
    path[plen] = '\0'; /* a NUL inside ends the path, as in http.c's copy */
    check_route(method, path);

    /* The query as http.c stores it: the arguments split at '&', NUL-separated. */
    q = q ? q + 1 : end;
    query = malloc((size_t)(end - q) + 1);
    CHECK(query);
    for (const char *a = q; a < end; a++)
        query[qlen++] = *a == '&' ? '\0' : *a;
    query[qlen++] = '\0';
    check_list_query(query, q < end ? qlen : 0);
    free(query);
    free(path);
}

/* ---- framing ---------------------------------------------------------------------------- */

#define BODY_METHODS (JW_HTTP_POST | JW_HTTP_PUT | JW_HTTP_PATCH)

struct dechunked {
    jw_http_chunk_step end; /* DONE, ERROR, or MORE when the bytes ran out */
    char body[MAX_BODY];
    size_t body_len, used;
    jw_http_error err;
};

/* De-chunks in (len bytes) fed in pieces of at most piece bytes. */
static void dechunk(const char *in, size_t len, size_t piece, struct dechunked *r)
{
    jw_http_chunked c;
    size_t off = 0;

    memset(r, 0, sizeof(*r));
    r->end = JW_HTTP_CHUNK_MORE;
    jw_http_chunked_init(&c, MAX_BODY);
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece;

        while (n) {
            const char *data = NULL;
            size_t used = 7, dlen = 7;
            jw_http_chunk_step step =
                jw_http_chunked_read(&c, in + off, n, &used, &data, &dlen, &r->err);

            CHECK(used <= n);
            if (step == JW_HTTP_CHUNK_DATA) {
                CHECK(used >= 1 && dlen >= 1 && dlen <= used);
                CHECK(data >= in + off && data + dlen == in + off + used);
                CHECK(r->body_len + dlen <= MAX_BODY);
                memcpy(r->body + r->body_len, data, dlen);
                r->body_len += dlen;
            } else {
                CHECK(!data && dlen == 0);
            }
            off += used;
            n -= used;
            if (step == JW_HTTP_CHUNK_MORE) {
                CHECK(n == 0);
            } else if (step != JW_HTTP_CHUNK_DATA) {
                r->end = step;
                r->used = off;
                /* It stays ended, and takes nothing more. */
                CHECK(jw_http_chunked_read(&c, in + off, len - off, &used, &data, &dlen, &r->err) ==
                          step &&
                      used == 0);
                return;
            }
        }
    }
    r->used = off;
}

static void fuzz_chunked(const char *in, size_t len)
{
    static struct dechunked whole, bytes, threes;

    dechunk(in, len, len ? len : 1, &whole);
    dechunk(in, len, 1, &bytes);
    dechunk(in, len, 3, &threes);
    for (int i = 0; i < 2; i++) {
        const struct dechunked *o = i ? &threes : &bytes;

        CHECK(o->end == whole.end && o->used == whole.used && o->body_len == whole.body_len);
        CHECK(memcmp(o->body, whole.body, whole.body_len) == 0);
        if (whole.end == JW_HTTP_CHUNK_ERROR)
            CHECK(o->err.status == whole.err.status &&
                  strcmp(o->err.message, whole.err.message) == 0);
    }
    if (whole.end == JW_HTTP_CHUNK_ERROR) {
        check_message(&whole.err);
        CHECK(whole.err.allow[0] == '\0');
        CHECK((whole.err.status == 400 && strcmp(whole.err.code, "bad_request") == 0) ||
              (whole.err.status == 413 && strcmp(whole.err.code, "body_too_large") == 0));
    }
}

/* Transfer-Encoding te is "chunked" alone, in any case, blanks around it. */
static bool says_chunked(const char *te)
{
    size_t n = strlen(te), lead = strspn(te, " \t");

    while (n > lead && (te[n - 1] == ' ' || te[n - 1] == '\t'))
        n--;
    return n - lead == 7 && strncasecmp(te + lead, "chunked", 7) == 0;
}

static void fuzz_framing(const char *in, size_t len)
{
    const char *p = in, *end = in + len, *nl;
    jw_http_method method = take_method(&p, end);
    jw_http_error err = {0};
    bool has_te, te_chunked, routed, cl_sent, cl_ok, body_method;
    size_t length = 0, parsed = 0;
    jw_http_framing f;
    char *cl, *te = NULL;

    if (!method || end - p < 2)
        return;
    has_te = *p & 1;
    routed = *p & 2;
    if (*p & 4) {
        fuzz_chunked(p + 2, (size_t)(end - p - 2));
        return;
    }
    p += 2;
    nl = memchr(p, '\n', (size_t)(end - p));
    cl = strndup(p, (size_t)((nl ? nl : end) - p));
    CHECK(cl);
    if (has_te) {
        te = nl ? strndup(nl + 1, (size_t)(end - nl - 1)) : strdup("chunked");
        CHECK(te);
    }
    cl_sent = strcmp(cl, "-") != 0;
    te_chunked = te && says_chunked(te);
    body_method = method & BODY_METHODS;
    f = jw_http_frame(method, cl_sent ? cl : NULL, te, MAX_BODY, routed, &length, &err);
    cl_ok = cl_sent && jw_http_parse_content_length(cl, &parsed);
    if (cl_ok) {
        char back[32];
        const char *digits = cl + strspn(cl, "0");

        snprintf(back, sizeof(back), "%zu", parsed);
        CHECK(strcmp(back, *digits ? digits : "0") == 0);
    }
    /* Both headers, or a bad length, or a coding but chunked: 400 before anything else. */
    if ((cl_sent && te) || (cl_sent && !cl_ok) || (te && !te_chunked))
        CHECK(f == JW_HTTP_REFUSE && err.status == 400);
    switch (f) {
    case JW_HTTP_REFUSE:
        check_message(&err);
        CHECK(err.allow[0] == '\0');
        if (err.status == 400)
            CHECK(strcmp(err.code, "bad_request") == 0 &&
                  ((cl_sent && te) || (cl_sent && !cl_ok) || (te && !te_chunked)));
        else if (err.status == 411)
            CHECK(strcmp(err.code, "length_required") == 0 && te_chunked && !cl_sent && routed &&
                  !body_method);
        else if (err.status == 413)
            CHECK(strcmp(err.code, "body_too_large") == 0 && cl_ok && parsed > MAX_BODY && !te);
        else
            CHECK(!"framing refused with another status");
        break;
    case JW_HTTP_READ_BODY: CHECK(cl_ok && length == parsed && length <= MAX_BODY && !te); break;
    case JW_HTTP_READ_CHUNKED:
        CHECK(te_chunked && !cl_sent && routed && body_method && length == 0);
        break;
    case JW_HTTP_EMPTY_BODY: CHECK(!te && !cl_sent && routed && body_method && length == 0); break;
    case JW_HTTP_NO_BODY: CHECK(length == 0 && !te); break;
    case JW_HTTP_CLOSE: CHECK(!routed && !cl_sent && (te_chunked || (!te && body_method))); break;
    default: CHECK(!"an unknown framing");
    }
    free(te);
    free(cl);
}

/* ---- bodies ----------------------------------------------------------------------------- */

static const char *const *fields_of(jw_api_route route)
{
    static const char *const job[] = {"transaction_amount", "transaction_count", "metadata",
                                      "user_id", NULL};
    static const char *const start[] = {"userId", "config", NULL};
    static const char *const otp[] = {"otp", NULL};
    static const char *const received[] = {"otpRequestId", "otpValue", NULL};

    switch (route) {
    case JW_API_CREATE_JOB: return job;
    case JW_API_START_PAYMENT: return start;
    case JW_API_SUBMIT_OTP: return otp;
    case JW_API_OTP_RECEIVED: return received;
    default: return NULL;
    }
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_accepted(jw_api_route route, const jw_api_body *b)
{
    const char *const *fields = fields_of(route);
    const char *key;
    json_t *v, *canon;
    jw_http_error err = {0};
    jw_api_body again;
    char *text;

    CHECK(json_is_object(b->doc));
    json_object_foreach(b->doc, key, v)
    {
        bool known = false;

        for (const char *const *f = fields; *f; f++)
            known |= strcmp(*f, key) == 0;
        CHECK(known);
    }
    switch (route) {
    case JW_API_CREATE_JOB:
    case JW_API_START_PAYMENT:
        CHECK(b->amount >= 1 && b->amount <= JW_API_AMOUNT_MAX);
        CHECK(b->count >= 1 && b->count <= JW_API_COUNT_MAX);
        CHECK(!b->user_id || jw_uuid_valid(b->user_id));
        CHECK(!b->otp && !b->otp_id);
        if (route == JW_API_CREATE_JOB) {
            CHECK(b->metadata == json_object_get(b->doc, "metadata"));
            CHECK(!b->metadata || json_is_object(b->metadata));
            CHECK(json_integer_value(json_object_get(b->doc, "transaction_amount")) == b->amount);
        } else {
            CHECK(b->metadata == json_object_get(b->doc, "config"));
            CHECK(json_is_object(b->metadata));
            CHECK(json_integer_value(json_object_get(b->metadata, "transactionCount")) == b->count);
        }
        break;
    case JW_API_SUBMIT_OTP:
        CHECK(b->otp && b->otp == json_string_value(json_object_get(b->doc, "otp")));
        CHECK(!b->otp_id && !b->user_id && !b->metadata && !b->amount);
        break;
    case JW_API_OTP_RECEIVED:
        CHECK(b->otp && b->otp == json_string_value(json_object_get(b->doc, "otpValue")));
        CHECK(b->otp_id && jw_uuid_valid(b->otp_id));
        CHECK(!b->user_id && !b->metadata && !b->amount);
        break;
    default: CHECK(!"a body for a route without one");
    }

    /* The canonical form parses back into the same struct. */
    canon = jw_api_body_json(route, b);
    CHECK(canon);
    text = json_dumps(canon, JSON_COMPACT);
    CHECK(text);
    CHECK(jw_api_parse_body(route, "application/json", text, strlen(text), &again, &err) == 0);
    CHECK(again.amount == b->amount && again.count == b->count);
    CHECK(!again.metadata == !b->metadata);
    CHECK(!b->metadata || json_equal(again.metadata, b->metadata));
    CHECK(same_str(again.user_id, b->user_id));
    CHECK(same_str(again.otp_id, b->otp_id));
    CHECK(same_str(again.otp, b->otp));
    jw_api_body_release(&again);
    free(text);
    json_decref(canon);
}

static void check_refused(const jw_http_error *err, const char *content_type)
{
    static const char *const codes_400[] = {"bad_request",   "malformed_json", "unknown_field",
                                            "missing_field", "invalid_field",  NULL};

    check_message(err);
    CHECK(err->allow[0] == '\0');
    switch (err->status) {
    case 400:
        CHECK(is_code(err->code, codes_400));
        CHECK(jw_http_is_json(content_type));
        break;
    case 413: CHECK(strcmp(err->code, "body_too_large") == 0); break;
    case 415:
        CHECK(strcmp(err->code, "unsupported_media_type") == 0);
        CHECK(!jw_http_is_json(content_type));
        break;
    default: CHECK(!"a body refused with another status");
    }
}

/* Frames and parses body (len bytes) as a POST to route would be. */
static void check_body(jw_api_route route, const char *content_type, const char *body, size_t len)
{
    jw_http_error err = {0};
    jw_api_body b;
    size_t length;
    char cl[32];
    int rc;

    snprintf(cl, sizeof(cl), "%zu", len);
    if (jw_http_frame(JW_HTTP_POST, cl, NULL, MAX_BODY, true, &length, &err) != JW_HTTP_READ_BODY) {
        CHECK(len > MAX_BODY && err.status == 413);
        check_refused(&err, content_type);
        return;
    }
    CHECK(length == len);
    rc = jw_api_parse_body(route, content_type, body, len, &b, &err);
    if (!fields_of(route)) {
        CHECK(rc == 0 && !b.doc && !jw_api_body_json(route, &b));
    } else if (rc == 0) {
        check_accepted(route, &b);
    } else {
        CHECK(rc == -1);
        CHECK(!b.doc && !b.user_id && !b.otp && !b.otp_id && !b.metadata);
        check_refused(&err, content_type);
        /* A body holding a code is not quoted back where it broke. */
        if ((route == JW_API_SUBMIT_OTP || route == JW_API_OTP_RECEIVED) &&
            strcmp(err.code, "malformed_json") == 0)
            CHECK(!strstr(err.message, " near "));
    }
    jw_api_body_release(&b);
    CHECK(!b.doc);
}

/* "Content-Type\nbody"; an empty first line is no Content-Type. */
static void fuzz_body(jw_api_route route, const char *in, size_t len)
{
    const char *nl = memchr(in, '\n', len);
    size_t ctlen = nl ? (size_t)(nl - in) : len;
    char *ct = strndup(in, ctlen), *body;
    size_t blen = nl ? len - ctlen - 1 : 0;

    CHECK(ct);
    /* The body in a buffer of its own size, so ASan sees a read past it. */
    body = malloc(blen ? blen : 1);
    CHECK(body);
    if (blen)
        memcpy(body, nl + 1, blen);
    check_body(route, ct[0] ? ct : NULL, blen ? body : NULL, blen);
    free(body);
    free(ct);
}

/* "METHOD /path\nContent-Type\nbody": routed, then the body for the route. */
static void fuzz_request(const char *in, size_t len)
{
    const char *p = in, *end = in + len, *nl;
    jw_http_method method = take_method(&p, end);
    jw_http_error err = {0};
    jw_api_match m;
    char *path;

    if (!method)
        return;
    nl = memchr(p, '\n', (size_t)(end - p));
    path = strndup(p, (size_t)((nl ? nl : end) - p));
    CHECK(path);
    check_route(method, path);
    if (jw_api_match_route(method, path, &m, &err) == 0 && nl)
        fuzz_body(m.route, nl + 1, (size_t)(end - nl - 1));
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    if (size < 1)
        return 0;
    switch (data[0] % 8) {
    case 0: fuzz_path(in, len); break;
    case 1: fuzz_framing(in, len); break;
    case 2:
    case 3:
    case 4:
    case 5: fuzz_body(body_routes[data[0] % 8 - 2], in, len); break;
    default: fuzz_request(in, len); break;
    }
    return 0;
}
