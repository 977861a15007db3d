/*
 * api_parse.c - routes, the list query and the JSON bodies of the job API,
 * without libwebsockets. See api_parse.h.
 */
#include "api_parse.h"
#include "jw_engine.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- routes ------------------------------------------------------------------------ */

static const char *const route_names[JW_API_ROUTES] = {
    [JW_API_LIST_JOBS] = "GET /api/jobs",
    [JW_API_CREATE_JOB] = "POST /api/jobs",
    [JW_API_START_PAYMENT] = "POST /api/jobs/start-payment",
    [JW_API_OTP_RECEIVED] = "POST /api/jobs/otp-received",
    [JW_API_SIM_INBOX] = "GET /api/sim/inbox",
    [JW_API_SUBMIT_OTP] = "POST /api/otp/{id}",
    [JW_API_GET_JOB] = "GET /api/jobs/{id}",
    [JW_API_CANCEL_JOB] = "POST /api/jobs/{id}/cancel",
    [JW_API_RETRY_JOB] = "POST /api/jobs/{id}/retry",
};

const char *jw_api_route_name(jw_api_route route)
{
    return route > 0 && route < JW_API_ROUTES ? route_names[route] : "?";
}

static int not_allowed(jw_http_method method, const char *path, const char *allow,
                       jw_http_error *err)
{
    jw_http_error_set(err, 405, "method_not_allowed", "%s is not allowed on %s; use %s",
                      jw_http_method_name(method), path, allow);
    snprintf(err->allow, sizeof(err->allow), "%s", allow);
    return -1;
}

/* route for GET and HEAD, or for POST (0: the path takes none of them). */
static int pick(jw_http_method method, const char *path, jw_api_route get, jw_api_route post,
                const char *allow, jw_api_match *out, jw_http_error *err)
{
    if (get && (method & (JW_HTTP_GET | JW_HTTP_HEAD)))
        out->route = get;
    else if (post && method == JW_HTTP_POST)
        out->route = post;
    else
        return not_allowed(method, path, allow, err);
    return 0;
}

/* Copies the 36 characters of a valid UUID, lower-cased. */
static void copy_id(char out[JW_UUID_LEN + 1], const char *id)
{
    for (int i = 0; i < JW_UUID_LEN; i++)
        out[i] = (char)(id[i] >= 'A' && id[i] <= 'F' ? id[i] + 32 : id[i]);
    out[JW_UUID_LEN] = '\0';
}

int jw_api_match_route(jw_http_method method, const char *p, jw_api_match *out, jw_http_error *err)
{
    char id[JW_UUID_LEN + 1];
    const char *rest;

    memset(out, 0, sizeof(*out));
    if (strcmp(p, "/api/jobs") == 0)
        return pick(method, p, JW_API_LIST_JOBS, JW_API_CREATE_JOB, "GET, HEAD, POST", out, err);
    if (strcmp(p, "/api/jobs/start-payment") == 0)
        return pick(method, p, 0, JW_API_START_PAYMENT, "POST", out, err);
    if (strcmp(p, "/api/jobs/otp-received") == 0)
        return pick(method, p, 0, JW_API_OTP_RECEIVED, "POST", out, err);
    if (strcmp(p, "/api/sim/inbox") == 0)
        return pick(method, p, JW_API_SIM_INBOX, 0, "GET, HEAD", out, err);
    if (strncmp(p, "/api/otp/", 9) == 0) {
        /* The id is the whole rest: /api/otp/{id}/ is not a UUID either. */
        if (!jw_uuid_valid(p + 9)) {
            jw_http_error_set(err, 400, "invalid_parameter",
                              "the OTP request id in the path must be a UUID");
            return -1;
        }
        if (pick(method, p, 0, JW_API_SUBMIT_OTP, "POST", out, err) != 0)
            return -1;
        copy_id(out->id, p + 9);
        return 0;
    }
    if (strncmp(p, "/api/jobs/", 10) == 0) {
        rest = p + 10;
        snprintf(id, sizeof(id), "%.*s", JW_UUID_LEN, rest);
        if (strlen(rest) < JW_UUID_LEN || !jw_uuid_valid(id) ||
            (rest[JW_UUID_LEN] && rest[JW_UUID_LEN] != '/')) {
            jw_http_error_set(err, 400, "invalid_parameter",
                              "the job id in the path must be a UUID");
            return -1;
        }
        rest += JW_UUID_LEN;
        if (!*rest) {
            if (pick(method, p, JW_API_GET_JOB, 0, "GET, HEAD", out, err) != 0)
                return -1;
            copy_id(out->id, id);
            return 0;
        }
        if (strcmp(rest, "/cancel") == 0 || strcmp(rest, "/retry") == 0) {
            if (pick(method, p, 0, rest[1] == 'c' ? JW_API_CANCEL_JOB : JW_API_RETRY_JOB, "POST",
                     out, err) != 0)
                return -1;
            copy_id(out->id, id);
            return 0;
        }
    }
    jw_http_error_set(err, 404, "not_found", "no route %s", p);
    return -1;
}

/* ---- the list query ------------------------------------------------------------------ */

int jw_api_parse_list_query(const char *query, size_t len, jw_api_list_query *out,
                            jw_http_error *err)
{
    static const char *const statuses[] = {"initiated", "validating", "processing",
                                           "completed", "failed",     "cancelled"};
    const char *status = jw_http_query_get(query, len, "status");
    const char *user = jw_http_query_get(query, len, "user_id");
    const char *before = jw_http_query_get(query, len, "before");
    const char *limit = jw_http_query_get(query, len, "limit");

    memset(out, 0, sizeof(*out));
    out->limit = JW_API_LIST_DEFAULT;
    if (status && *status) {
        for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]) && !out->status; i++)
            if (strcmp(status, statuses[i]) == 0)
                out->status = statuses[i];
        if (!out->status) {
            jw_http_error_set(err, 400, "invalid_parameter",
                              "status must be one of initiated, validating, processing, "
                              "completed, failed, cancelled");
            return -1;
        }
    }
    if (user && *user) {
        if (!jw_uuid_valid(user)) {
            jw_http_error_set(err, 400, "invalid_parameter", "user_id must be a UUID");
            return -1;
        }
        out->user_id = user;
    }
    if (before && *before) {
        if (!jw_uuid_valid(before)) {
            jw_http_error_set(err, 400, "invalid_parameter",
                              "before must be the id of a job from the previous page");
            return -1;
        }
        out->before = before;
    }
    if (limit) {
        /* strtol: leading blanks and a sign are taken, as they always were. */
        char *end = NULL;
        long n = strtol(limit, &end, 10);

        if (!*limit || *end || n < 1 || n > JW_API_LIST_MAX) {
            jw_http_error_set(err, 400, "invalid_parameter", "limit must be 1..%d",
                              JW_API_LIST_MAX);
            return -1;
        }
        out->limit = (int)n;
    }
    return 0;
}

/* ---- bodies -------------------------------------------------------------------------- */

/*
 * The body as a JSON object with only the allowed keys (NULL-terminated), or
 * NULL with *err set (415, 400). quote: whether a malformed_json message may
 * quote the body where it broke (jansson's "near '...'").
 */
static json_t *parse_object(const char *content_type, const char *body, size_t len,
                            const char *const *allowed, bool quote, jw_http_error *err)
{
    json_error_t jerr;
    const char *key;
    json_t *doc, *v;

    if (!jw_http_is_json(content_type)) {
        jw_http_error_set(err, 415, "unsupported_media_type",
                          "send the body as JSON with Content-Type: application/json");
        return NULL;
    }
    if (!body || !len) {
        jw_http_error_set(err, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        const char *near = quote ? NULL : strstr(jerr.text, " near ");

        jw_http_error_set(err, 400, "malformed_json", "malformed JSON at line %d column %d: %.*s",
                          jerr.line, jerr.column,
                          near ? (int)(near - jerr.text) : (int)sizeof(jerr.text), jerr.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        jw_http_error_set(err, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    json_object_foreach(doc, key, v)
    {
        bool known = false;

        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, key) == 0;
        if (!known) {
            char list[256] = "";

            for (const char *const *a = allowed; *a; a++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                         a == allowed ? "" : ", ", *a);
            jw_http_error_set(err, 400, "unknown_field",
                              "unknown field \"%.*s\"; allowed fields: %s",
                              (int)jw_http_utf8_prefix(key, 64), key, list);
            json_decref(doc);
            return NULL;
        }
    }
    return doc;
}

/* An integer field in min..max; *err set (400) otherwise. */
static bool get_int(const json_t *obj, const char *name, json_int_t min, json_int_t max,
                    json_int_t *out, jw_http_error *err)
{
    json_t *v = json_object_get(obj, name);

    if (!v) {
        jw_http_error_set(err, 400, "missing_field",
                          "%s is required (an integer %" JSON_INTEGER_FORMAT
                          "..%" JSON_INTEGER_FORMAT ")",
                          name, min, max);
        return false;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char *got = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

        jw_http_error_set(
            err, 400, "invalid_field",
            "%s must be an integer %" JSON_INTEGER_FORMAT "..%" JSON_INTEGER_FORMAT " (got %.*s)",
            name, min, max, got ? (int)jw_http_utf8_prefix(got, 40) : 1, got ? got : "?");
        free(got);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

/* An optional UUID field (null counts as absent); *err set (400) when it is not a UUID. */
static bool get_uuid(const json_t *obj, const char *name, const char **out, jw_http_error *err)
{
    json_t *v = json_object_get(obj, name);

    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v) || !jw_uuid_valid(json_string_value(v))) {
        jw_http_error_set(err, 400, "invalid_field", "%s must be a UUID", name);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

/*
 * The size a JSON object field is stored at: its compact encoding, as jansson
 * writes it back (a float such as 0.1 grows to 0.10000000000000001), not the
 * bytes the client sent. Over the engine's limit: 413, naming the limit.
 */
static bool json_field_fits(const json_t *v, const char *name, jw_http_error *err)
{
    size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT);

    if (n <= JW_ENGINE_METADATA_MAX)
        return true;
    jw_http_error_set(err, 413, "field_too_large",
                      "%s may take at most %d bytes as compact JSON (got %zu)", name,
                      JW_ENGINE_METADATA_MAX, n);
    return false;
}

static int create_job(jw_api_body *b, jw_http_error *err)
{
    const json_t *meta = json_object_get(b->doc, "metadata");
    json_int_t amount, count;

    if (meta && !json_is_object(meta)) {
        jw_http_error_set(err, 400, "invalid_field", "metadata must be a JSON object");
        return -1;
    }
    if (meta && !json_field_fits(meta, "metadata", err))
        return -1;
    if (!get_int(b->doc, "transaction_amount", 1, JW_API_AMOUNT_MAX, &amount, err) ||
        !get_int(b->doc, "transaction_count", 1, JW_API_COUNT_MAX, &count, err) ||
        !get_uuid(b->doc, "user_id", &b->user_id, err))
        return -1;
    b->amount = amount;
    b->count = (int)count;
    b->metadata = meta;
    return 0;
}

static int start_payment(jw_api_body *b, jw_http_error *err)
{
    const json_t *config = json_object_get(b->doc, "config");
    json_int_t amount, count;

    if (!json_is_object(config)) {
        jw_http_error_set(err, 400, "invalid_field",
                          "config must be an object with transactionAmount and "
                          "transactionCount");
        return -1;
    }
    if (!get_uuid(b->doc, "userId", &b->user_id, err) ||
        !get_int(config, "transactionAmount", 1, JW_API_AMOUNT_MAX, &amount, err) ||
        !get_int(config, "transactionCount", 1, JW_API_COUNT_MAX, &count, err) ||
        !json_field_fits(config, "config", err))
        return -1;
    b->amount = amount;
    b->count = (int)count;
    /* The original stored the whole config as the job's metadata. */
    b->metadata = config;
    return 0;
}

static int submit_otp(jw_api_body *b, jw_http_error *err)
{
    const json_t *v = json_object_get(b->doc, "otp");

    if (!json_is_string(v)) {
        jw_http_error_set(err, 400, "invalid_field", "otp must be a string of 4 to 10 digits");
        return -1;
    }
    b->otp = json_string_value(v);
    return 0;
}

static int otp_received(jw_api_body *b, jw_http_error *err)
{
    const json_t *v = json_object_get(b->doc, "otpValue");

    if (!get_uuid(b->doc, "otpRequestId", &b->otp_id, err))
        return -1;
    if (!b->otp_id) {
        jw_http_error_set(err, 400, "missing_field", "otpRequestId is required (a UUID)");
        return -1;
    }
    if (!json_is_string(v)) {
        jw_http_error_set(err, 400, "invalid_field", "otpValue must be a string of 4 to 10 digits");
        return -1;
    }
    b->otp = json_string_value(v);
    return 0;
}

/*
 * Each body route: its fields (NULL-terminated), what checks them, and
 * whether the body carries an OTP, which a refusal must not quote back
 * (docs/api.md: messages never contain an OTP value).
 */
static const struct {
    const char *const fields[5];
    int (*check)(jw_api_body *b, jw_http_error *err);
    bool otp;
} bodies[JW_API_ROUTES] = {
    [JW_API_CREATE_JOB] = {{"transaction_amount", "transaction_count", "metadata", "user_id"},
                           create_job,
                           false},
    [JW_API_START_PAYMENT] = {{"userId", "config"}, start_payment, false},
    [JW_API_SUBMIT_OTP] = {{"otp"}, submit_otp, true},
    [JW_API_OTP_RECEIVED] = {{"otpRequestId", "otpValue"}, otp_received, true},
};

int jw_api_parse_body(jw_api_route route, const char *content_type, const char *body, size_t len,
                      jw_api_body *out, jw_http_error *err)
{
    memset(out, 0, sizeof(*out));
    if (route <= 0 || route >= JW_API_ROUTES || !bodies[route].check)
        return 0;
    out->doc = parse_object(content_type, body, len, bodies[route].fields, !bodies[route].otp, err);
    if (!out->doc)
        return -1;
    if (bodies[route].check(out, err) != 0) {
        jw_api_body_release(out);
        return -1;
    }
    return 0;
}

void jw_api_body_release(jw_api_body *b)
{
    json_decref(b->doc);
    memset(b, 0, sizeof(*b));
}

/* Sets key to v (stolen), unless v is NULL. */
static void set_opt(json_t *obj, const char *key, json_t *v)
{
    if (v)
        json_object_set_new(obj, key, v);
}

json_t *jw_api_body_json(jw_api_route route, const jw_api_body *b)
{
    json_t *doc;

    switch (route) {
    case JW_API_CREATE_JOB:
        doc = json_pack("{s:I, s:i}", "transaction_amount", (json_int_t)b->amount,
                        "transaction_count", b->count);
        set_opt(doc, "metadata", b->metadata ? json_deep_copy(b->metadata) : NULL);
        set_opt(doc, "user_id", b->user_id ? json_string(b->user_id) : NULL);
        return doc;
    case JW_API_START_PAYMENT:
        doc = json_object();
        set_opt(doc, "config", b->metadata ? json_deep_copy(b->metadata) : NULL);
        set_opt(doc, "userId", b->user_id ? json_string(b->user_id) : NULL);
        return doc;
    case JW_API_SUBMIT_OTP: return json_pack("{s:s?}", "otp", b->otp);
    case JW_API_OTP_RECEIVED:
        return json_pack("{s:s?, s:s?}", "otpRequestId", b->otp_id, "otpValue", b->otp);
    default: return NULL;
    }
}
