/*
 * api_parse.h - the pure half of the job API (docs/api.md, server/api.c):
 * a method and path to a route and its id, the list query to typed filters,
 * each JSON body to a typed struct - or, for each, the answer that refuses
 * it (status, code, message). No libwebsockets, no engine, no principal, any
 * thread; unit-tested in tests/unit/test_api_parse.c, fuzzed in
 * tests/fuzz/fuzz_http_api.c.
 *
 * What stays in api.c: authentication (before any of this), and every
 * decision that needs the caller or the engine - a user naming another user
 * (403), the admin key without a user_id (400), ownership and existence
 * (404), state (409), the OTP's digits (checked by the engine after
 * ownership, so another user's request answers 404 whatever the code).
 *
 * Paths arrive as lws leaves them: percent-decoded (%2F is a '/'), with
 * "//", "/./" and "/x/../" collapsed (http_parse.h). Matching is then exact
 * and case-sensitive: /api/jobs/{id}/ is another path (404), and so is
 * /api/Jobs; after /api/jobs/ and /api/otp/ an id must follow, in the
 * canonical 8-4-4-4-12 form in either case (handed out lower-cased), else
 * the answer is 400 - /api/jobs/ and /api/otp/{id}/ included.
 */
#ifndef JW_API_PARSE_H
#define JW_API_PARSE_H

#include "http_parse.h"
#include "jw_util.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every route under /api/; 0 is none. */
typedef enum jw_api_route {
    JW_API_LIST_JOBS = 1, /* GET|HEAD /api/jobs */
    JW_API_CREATE_JOB,    /* POST /api/jobs */
    JW_API_START_PAYMENT, /* POST /api/jobs/start-payment */
    JW_API_OTP_RECEIVED,  /* POST /api/jobs/otp-received */
    JW_API_SIM_INBOX,     /* GET|HEAD /api/sim/inbox */
    JW_API_SUBMIT_OTP,    /* POST /api/otp/{id} */
    JW_API_GET_JOB,       /* GET|HEAD /api/jobs/{id} */
    JW_API_CANCEL_JOB,    /* POST /api/jobs/{id}/cancel */
    JW_API_RETRY_JOB,     /* POST /api/jobs/{id}/retry */
    JW_API_ROUTES         /* the count, plus one */
} jw_api_route;

typedef struct jw_api_match {
    jw_api_route route;
    char id[JW_UUID_LEN + 1]; /* the path's job or OTP request id, lower case; "" without */
} jw_api_match;

/*
 * Matches method (one JW_HTTP_* bit) and path. Returns 0 with *out set, or
 * -1 with *err set, checked in this order: a path id that is not a UUID
 * (400 invalid_parameter), a method the path does not take (405
 * method_not_allowed, err->allow set), no such route (404 not_found).
 */
int jw_api_match_route(jw_http_method method, const char *path, jw_api_match *out,
                       jw_http_error *err);

/* The route's pattern, e.g. "POST /api/otp/{id}" (for tests and logs). */
const char *jw_api_route_name(jw_api_route route);

#define JW_API_LIST_DEFAULT 20
#define JW_API_LIST_MAX 100

/* GET /api/jobs's filters; the strings are borrowed from the query (or static). */
typedef struct jw_api_list_query {
    const char *status;  /* one of the job statuses, or NULL (absent or empty) */
    const char *user_id; /* a UUID in any case, or NULL (absent or empty) */
    const char *before;  /* a UUID in any case, or NULL (absent or empty) */
    int limit;           /* 1..JW_API_LIST_MAX, JW_API_LIST_DEFAULT when absent */
} jw_api_list_query;

/*
 * Parses status, user_id, before and limit from query (jw_http_query_get's
 * format; other arguments are ignored). Returns 0, or -1 with *err set to
 * 400 invalid_parameter naming the first bad one (in that order).
 */
int jw_api_parse_list_query(const char *query, size_t len, jw_api_list_query *out,
                            jw_http_error *err);

#define JW_API_AMOUNT_MAX 1000000
#define JW_API_COUNT_MAX 50

/*
 * A body that passed validation. Which fields are set depends on the route;
 * the pointers borrow from doc.
 *   CREATE_JOB     amount, count, metadata (the object or NULL), user_id
 *   START_PAYMENT  amount, count (from config), metadata (config, kept
 *                  whole as the job's metadata), user_id (userId)
 *   SUBMIT_OTP     otp
 *   OTP_RECEIVED   otp_id (otpRequestId, a UUID as sent), otp (otpValue)
 * user_id is NULL when absent or null, else a UUID in any case. otp is any
 * string: its digits are the engine's to judge.
 */
typedef struct jw_api_body {
    json_t *doc; /* owned: jw_api_body_release */
    int64_t amount;
    int count;
    const json_t *metadata;
    const char *user_id;
    const char *otp_id;
    const char *otp;
} jw_api_body;

/*
 * Validates the body of a POST to route: Content-Type (415
 * unsupported_media_type), then an empty body (400 bad_request), JSON that
 * does not parse or has a duplicate key (400 malformed_json, with line and
 * column, and where it broke - quoted, except for the OTP routes, whose body
 * holds a code), not an object (400 bad_request), a field the route does not take
 * (400 unknown_field, naming it and the allowed ones), then the route's
 * fields (400 missing_field / invalid_field, in the order api.md lists
 * them). content_type may be NULL (absent), body may be NULL when len is 0.
 * Routes that take no body (the GET ones, cancel and retry: their body is
 * ignored) accept anything and leave out->doc NULL.
 *
 * Returns 0 with *out set, or -1 with *err set and *out empty. Release out
 * with jw_api_body_release either way.
 */
int jw_api_parse_body(jw_api_route route, const char *content_type, const char *body, size_t len,
                      jw_api_body *out, jw_http_error *err);
void jw_api_body_release(jw_api_body *b);

/*
 * The body in its canonical form for route: only the fields that are set,
 * as JSON the parser accepts back into an equal struct. NULL for routes
 * without a body. The caller owns the result.
 */
json_t *jw_api_body_json(jw_api_route route, const jw_api_body *b);

#endif
