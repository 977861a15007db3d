/*
 * api.c - the job API over HTTP (docs/api.md): create, read, list, cancel,
 * retry, OTP submission, the original design's two routes, and the sim inbox.
 *
 * Every route authenticates first (admin key or a user's JWT). A user acts on
 * their own jobs only; another user's job answers exactly like a missing one.
 * Answers that depend on durability wait for it: a created job is answered
 * once its first batch committed, an OTP once the provider judged it.
 */
#include "api.h"

#include "app.h"
#include "jw_error.h"
#include "jw_log.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 20
#define LIST_MAX 100

/* What an answer waiting for the engine or the store remembers. */
typedef enum { OP_CREATE, OP_GET, OP_LIST, OP_CANCEL, OP_RETRY, OP_OTP } op_kind;

typedef struct api_op {
    jw_app *app;
    uint64_t req;
    op_kind kind;
    bool original; /* answer in the original design's shape */
    jw_principal who;
    int limit;
} api_op;

static api_op *new_op(jw_app *app, jw_http_request *req, op_kind kind, const jw_principal *who)
{
    api_op *op = jw_xcalloc(1, sizeof(*op));

    op->app = app;
    op->req = jw_http_defer(app->http, req);
    op->kind = kind;
    op->who = *who;
    return op;
}

/* The waiting request, or NULL when its client left (op is freed then). */
static jw_http_request *resume(api_op *op)
{
    jw_http_request *req = jw_http_resume(op->app->http, op->req);

    if (!req)
        free(op);
    return req;
}

static void finish(api_op *op)
{
    jw_http_finish(op->app->http, op->req);
    free(op);
}

/* ---- input -------------------------------------------------------------------- */

static bool authenticate(jw_app *app, jw_http_request *req, jw_principal *who)
{
    char err[256];

    if (jw_auth_bearer(app->auth, req->authorization, jw_now_us() / 1000000, who, err,
                       sizeof(err)) != 0) {
        jw_http_reply_error(req, 401, "unauthorized", "%s", err);
        return false;
    }
    return true;
}

/*
 * The body as a JSON object with only the allowed keys (NULL-terminated), or
 * NULL after answering 400/415.
 */
static json_t *parse_body(jw_http_request *req, const char *const *allowed)
{
    json_error_t jerr;
    const char *key;
    json_t *doc, *v;

    if (!req->content_type || strncasecmp(req->content_type, "application/json", 16) != 0 ||
        (req->content_type[16] && req->content_type[16] != ';' && req->content_type[16] != ' ')) {
        jw_http_reply_error(req, 415, "unsupported_media_type",
                            "send the body as JSON with Content-Type: application/json");
        return NULL;
    }
    if (!req->body || !req->body_len) {
        jw_http_reply_error(req, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        jw_http_reply_error(req, 400, "malformed_json", "malformed JSON at line %d column %d: %s",
                            jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        jw_http_reply_error(req, 400, "bad_request", "the body must be a JSON object");
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
            jw_http_reply_error(req, 400, "unknown_field",
                                "unknown field \"%.64s\"; allowed fields: %s", key, list);
            json_decref(doc);
            return NULL;
        }
    }
    return doc;
}

/* An integer field in min..max; answers 400 and returns false otherwise. */
static bool get_int(jw_http_request *req, const json_t *obj, const char *name, json_int_t min,
                    json_int_t max, json_int_t *out)
{
    json_t *v = json_object_get(obj, name);

    if (!v) {
        jw_http_reply_error(req, 400, "missing_field",
                            "%s is required (an integer %" JSON_INTEGER_FORMAT
                            "..%" JSON_INTEGER_FORMAT ")",
                            name, min, max);
        return false;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char *got = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

        jw_http_reply_error(req, 400, "invalid_field",
                            "%s must be an integer %" JSON_INTEGER_FORMAT "..%" JSON_INTEGER_FORMAT
                            " (got %.40s)",
                            name, min, max, got ? got : "?");
        free(got);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

/* An optional UUID field; answers 400 when present and not a UUID. */
static bool get_uuid(jw_http_request *req, const json_t *obj, const char *name, const char **out)
{
    json_t *v = json_object_get(obj, name);

    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v) || !jw_uuid_valid(json_string_value(v))) {
        jw_http_reply_error(req, 400, "invalid_field", "%s must be a UUID", name);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

/* ---- answers from the engine ----------------------------------------------------- */

static int status_for(int rc)
{
    switch (rc) {
    case JW_EINVAL: return 400;
    case JW_ENOTFOUND: return 404;
    case JW_ECONFLICT: return 409;
    case JW_EDBDOWN: return 503;
    default: return 500;
    }
}

static const char *code_for(int rc)
{
    switch (rc) {
    case JW_EINVAL: return "invalid_field";
    case JW_ENOTFOUND: return "not_found";
    case JW_ECONFLICT: return "conflict";
    case JW_EDBDOWN: return "unavailable";
    default: return "internal";
    }
}

static void reply_snapshot(jw_app *app, jw_http_request *req, int status, const char *job_id,
                           bool original)
{
    json_t *snap;

    if (original) {
        jw_http_reply_json(
            req, 200,
            json_pack("{s:s, s:s}", "jobId", job_id, "message", "Job started successfully"));
        return;
    }
    snap = jw_engine_snapshot(app->engine, job_id);
    if (!snap) {
        jw_http_reply_error(req, 404, "not_found", "no job %s", job_id);
        return;
    }
    json_object_set_new(snap, "job_id", json_string(job_id));
    jw_http_reply_json(req, status, snap);
}

static void on_job_done(void *arg, int status, const char *job_id)
{
    api_op *op = arg;
    jw_http_request *req = resume(op);

    if (!req)
        return;
    if (status != 0)
        jw_http_reply_error(req, 503, "unavailable", "the change could not be stored: %s",
                            jw_strerror(status));
    else
        reply_snapshot(op->app, req, op->kind == OP_CREATE ? 201 : 200, job_id, op->original);
    finish(op);
}

static void on_otp_result(void *arg, const jw_otp_result *r)
{
    api_op *op = arg;
    jw_http_request *req = resume(op);
    json_t *body;

    if (!req)
        return;
    if (op->original) {
        body = json_pack("{s:b}", "success", r->ok);
    } else {
        body = json_pack("{s:b}", "ok", r->ok);
    }
    if (!r->ok) {
        json_object_set_new(body, "error", json_string(r->error ? r->error : "rejected"));
        json_object_set_new(body, "message", json_string(r->message ? r->message : ""));
    }
    json_object_set_new(body, "attempts_left", json_integer(r->attempts_left));
    jw_http_reply_json(req, r->ok ? 200 : 422, body);
    finish(op);
}

/* ---- routes ------------------------------------------------------------------------ */

static void create_job(jw_app *app, jw_http_request *req, const jw_principal *who,
                       const char *user_id, json_int_t amount, json_int_t count,
                       const json_t *metadata, bool original)
{
    const char *field = original ? "userId" : "user_id";

    char job_id[JW_UUID_LEN + 1], err[256];
    api_op *op;
    int rc;

    if (who->kind == JW_PRINCIPAL_USER) {
        if (user_id && strcasecmp(user_id, who->user_id) != 0) {
            jw_http_reply_error(req, 403, "forbidden",
                                "a user can start jobs only for themselves (%s is another user)",
                                field);
            return;
        }
        user_id = who->user_id;
    } else if (!user_id) {
        jw_http_reply_error(req, 400, "missing_field",
                            "%s is required when the admin key starts a job", field);
        return;
    }
    op = new_op(app, req, OP_CREATE, who);
    op->original = original;
    rc = jw_engine_create_job(app->engine, user_id, amount, (int)count, metadata, on_job_done, op,
                              job_id, err, sizeof(err));
    if (rc != 0) {
        /* Refused before anything was queued: answer now. */
        jw_http_reply_error(req, status_for(rc), code_for(rc), "%s", err);
        finish(op);
    }
}

static void post_jobs(jw_app *app, jw_http_request *req, const jw_principal *who)
{
    static const char *const allowed[] = {"transaction_amount", "transaction_count", "metadata",
                                          "user_id", NULL};
    json_t *doc = parse_body(req, allowed), *meta;
    json_int_t amount, count;
    const char *user_id;

    if (!doc)
        return;
    meta = json_object_get(doc, "metadata");
    if (meta && !json_is_object(meta)) {
        jw_http_reply_error(req, 400, "invalid_field", "metadata must be a JSON object");
    } else if (get_int(req, doc, "transaction_amount", 1, 1000000, &amount) &&
               get_int(req, doc, "transaction_count", 1, 50, &count) &&
               get_uuid(req, doc, "user_id", &user_id)) {
        create_job(app, req, who, user_id, amount, count, meta, false);
    }
    json_decref(doc);
}

static void post_start_payment(jw_app *app, jw_http_request *req, const jw_principal *who)
{
    static const char *const allowed[] = {"userId", "config", NULL};
    json_t *doc = parse_body(req, allowed), *config;
    json_int_t amount, count;
    const char *user_id;

    if (!doc)
        return;
    config = json_object_get(doc, "config");
    if (!json_is_object(config)) {
        jw_http_reply_error(req, 400, "invalid_field",
                            "config must be an object with transactionAmount and "
                            "transactionCount");
    } else if (get_uuid(req, doc, "userId", &user_id) &&
               get_int(req, config, "transactionAmount", 1, 1000000, &amount) &&
               get_int(req, config, "transactionCount", 1, 50, &count)) {
        /* The original stored the whole config as the job's metadata. */
        create_job(app, req, who, user_id, amount, count, config, true);
    }
    json_decref(doc);
}

static void read_job(jw_app *app, jw_http_request *req, const jw_principal *who, const char *job_id,
                     op_kind kind)
{
    const char *params[1] = {job_id};
    jw_read *r = jw_read_new(JW_READ_JOB, 1, params);
    api_op *op = new_op(app, req, kind, who);

    r->user = op;
    if (jw_store_read(app->store, r) != 0) {
        jw_read_free(r);
        jw_http_reply_error(req, 503, "unavailable", "shutting down");
        finish(op);
    }
}

static void get_job(jw_app *app, jw_http_request *req, const jw_principal *who, const char *job_id)
{
    const char *owner = jw_engine_job_owner(app->engine, job_id);

    if (!owner) {
        read_job(app, req, who, job_id, OP_GET); /* finished, or unknown */
        return;
    }
    if (!jw_principal_may_access(who, owner)) {
        jw_http_reply_error(req, 404, "not_found", "no job %s", job_id);
        return;
    }
    reply_snapshot(app, req, 200, job_id, false);
}

static void list_jobs(jw_app *app, jw_http_request *req, const jw_principal *who)
{
    static const char *const statuses[] = {"initiated", "validating", "processing",
                                           "completed", "failed",     "cancelled"};
    const char *status = jw_http_query(req, "status"), *user = jw_http_query(req, "user_id");
    const char *before = jw_http_query(req, "before"), *limit_s = jw_http_query(req, "limit");
    const char *params[4];
    char limit_buf[16];
    long limit = LIST_DEFAULT;
    jw_read *r;
    api_op *op;

    if (status && *status) {
        bool ok = false;

        for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
            ok |= strcmp(status, statuses[i]) == 0;
        if (!ok) {
            jw_http_reply_error(req, 400, "invalid_parameter",
                                "status must be one of initiated, validating, processing, "
                                "completed, failed, cancelled");
            return;
        }
    } else {
        status = NULL;
    }
    if (user && *user && !jw_uuid_valid(user)) {
        jw_http_reply_error(req, 400, "invalid_parameter", "user_id must be a UUID");
        return;
    }
    if (before && *before && !jw_uuid_valid(before)) {
        jw_http_reply_error(req, 400, "invalid_parameter",
                            "before must be the id of a job from the previous page");
        return;
    }
    if (limit_s) {
        char *end = NULL;

        limit = strtol(limit_s, &end, 10);
        if (!*limit_s || *end || limit < 1 || limit > LIST_MAX) {
            jw_http_reply_error(req, 400, "invalid_parameter", "limit must be 1..%d", LIST_MAX);
            return;
        }
    }
    if (who->kind == JW_PRINCIPAL_USER) {
        if (user && *user && strcasecmp(user, who->user_id) != 0) {
            jw_http_reply_error(req, 403, "forbidden", "a user can list only their own jobs");
            return;
        }
        user = who->user_id;
    }
    snprintf(limit_buf, sizeof(limit_buf), "%ld", limit);
    params[0] = status;
    params[1] = user && *user ? user : NULL;
    params[2] = before && *before ? before : NULL;
    params[3] = limit_buf;
    r = jw_read_new(JW_READ_JOBS, 4, params);
    op = new_op(app, req, OP_LIST, who);
    op->limit = (int)limit;
    r->user = op;
    if (jw_store_read(app->store, r) != 0) {
        jw_read_free(r);
        jw_http_reply_error(req, 503, "unavailable", "shutting down");
        finish(op);
    }
}

static void command(jw_app *app, jw_http_request *req, const jw_principal *who, const char *job_id,
                    op_kind kind)
{
    const char *owner = jw_engine_job_owner(app->engine, job_id);
    char err[256];
    api_op *op;
    int rc;

    if (!owner) {
        /* Not running here: finished (or unknown). The read decides. */
        read_job(app, req, who, job_id, kind);
        return;
    }
    if (!jw_principal_may_access(who, owner)) {
        jw_http_reply_error(req, 404, "not_found", "no job %s", job_id);
        return;
    }
    op = new_op(app, req, kind, who);
    rc = kind == OP_CANCEL
             ? jw_engine_cancel(app->engine, job_id, on_job_done, op, err, sizeof(err))
             : jw_engine_retry(app->engine, job_id, on_job_done, op, err, sizeof(err));
    if (rc != 0) {
        jw_http_reply_error(req, status_for(rc), code_for(rc), "%s", err);
        finish(op);
    }
}

static void submit_otp(jw_app *app, jw_http_request *req, const jw_principal *who,
                       const char *otp_id, const char *value, bool original)
{
    char err[256];
    api_op *op = new_op(app, req, OP_OTP, who);
    int rc;

    op->original = original;
    rc = jw_engine_submit_otp(app->engine, otp_id, value,
                              who->kind == JW_PRINCIPAL_USER ? who->user_id : NULL, on_otp_result,
                              op, err, sizeof(err));
    if (rc != 0) {
        jw_http_reply_error(req, status_for(rc), code_for(rc), "%s", err);
        finish(op);
    }
}

/* Wipes the typed code from the request body once it was read. */
static void wipe_body(jw_http_request *req)
{
    if (req->body)
        OPENSSL_cleanse(req->body, req->body_len);
}

static void post_otp(jw_app *app, jw_http_request *req, const jw_principal *who, const char *otp_id)
{
    static const char *const allowed[] = {"otp", NULL};
    json_t *doc = parse_body(req, allowed), *v;

    wipe_body(req);
    if (!doc)
        return;
    v = json_object_get(doc, "otp");
    if (!json_is_string(v))
        jw_http_reply_error(req, 400, "invalid_field", "otp must be a string of 4 to 10 digits");
    else
        submit_otp(app, req, who, otp_id, json_string_value(v), false);
    json_decref(doc);
}

static void post_otp_received(jw_app *app, jw_http_request *req, const jw_principal *who)
{
    static const char *const allowed[] = {"otpRequestId", "otpValue", NULL};
    json_t *doc = parse_body(req, allowed), *v;
    const char *otp_id;

    wipe_body(req);
    if (!doc)
        return;
    v = json_object_get(doc, "otpValue");
    if (!get_uuid(req, doc, "otpRequestId", &otp_id)) {
        /* answered */
    } else if (!otp_id) {
        jw_http_reply_error(req, 400, "missing_field", "otpRequestId is required (a UUID)");
    } else if (!json_is_string(v)) {
        jw_http_reply_error(req, 400, "invalid_field",
                            "otpValue must be a string of 4 to 10 digits");
    } else {
        submit_otp(app, req, who, otp_id, json_string_value(v), true);
    }
    json_decref(doc);
}

static void get_inbox(jw_app *app, jw_http_request *req, const jw_principal *who)
{
    json_t *msgs, *m;
    size_t i;

    if (who->kind != JW_PRINCIPAL_ADMIN) {
        jw_http_reply_error(req, 403, "forbidden", "the sim inbox needs the admin key");
        return;
    }
    if (!app->sim) {
        jw_http_reply_error(req, 404, "not_found", "the sim inbox exists only in sim mode");
        return;
    }
    msgs = jw_sim_inbox_json(app->sim);
    json_array_foreach(msgs, i, m)
    {
        const char *otp =
            jw_engine_step_otp(app->engine, json_string_value(json_object_get(m, "job_id")),
                               json_string_value(json_object_get(m, "step_id")));

        json_object_set_new(m, "otp_request_id", otp ? json_string(otp) : json_null());
    }
    jw_http_reply_json(req, 200, json_pack("{s:o}", "messages", msgs));
}

/* ---- read results ------------------------------------------------------------------ */

static bool read_failed(jw_http_request *req, const jw_read *r, const char *what)
{
    if (r->status == 0)
        return false;
    if (r->status == JW_ENOTFOUND)
        jw_http_reply_error(req, 404, "not_found", "no job %s", what);
    else if (r->status == JW_EDB)
        jw_http_reply_error(req, 400, "bad_request", "%s", r->error ? r->error : "refused");
    else
        jw_http_reply_error(req, 503, "unavailable", "the database is unavailable; try again");
    return true;
}

void jw_api_on_read(jw_app *app, jw_read *r)
{
    api_op *op = r->user;
    jw_http_request *req = resume(op);
    const char *job_id = r->nparams ? r->params[0] : NULL;
    json_t *doc;

    if (!req) {
        jw_read_free(r);
        return;
    }
    if (read_failed(req, r, job_id ? job_id : "")) {
        finish(op);
        jw_read_free(r);
        return;
    }
    doc = json_loads(r->result, 0, NULL);
    if (op->kind == OP_LIST) {
        json_t *last = json_array_get(doc, json_array_size(doc) - 1);
        json_t *next = (int)json_array_size(doc) == op->limit
                           ? json_incref(json_object_get(last, "id"))
                           : json_null();

        jw_http_reply_json(req, 200, json_pack("{s:o, s:o}", "jobs", doc, "next_before", next));
        finish(op);
        jw_read_free(r);
        return;
    }
    {
        json_t *jobrow = json_object_get(doc, "job");
        const char *owner = json_string_value(json_object_get(jobrow, "user_id"));
        const char *status = json_string_value(json_object_get(jobrow, "status"));

        if (!owner || !jw_principal_may_access(&op->who, owner)) {
            jw_http_reply_error(req, 404, "not_found", "no job %s", job_id);
        } else if (op->kind == OP_GET) {
            json_object_set_new(doc, "job_id", json_string(job_id));
            jw_http_reply_json(req, 200, json_incref(doc));
        } else if (jw_engine_has_job(app->engine, job_id)) {
            /* It came back into memory meanwhile (another request): try again. */
            jw_http_reply_error(req, 409, "conflict", "job %s changed; try again", job_id);
        } else if (op->kind == OP_CANCEL || strcmp(status, "failed") != 0) {
            jw_http_reply_error(req, 409, "conflict", "job %s is %s; %s", job_id, status,
                                op->kind == OP_CANCEL ? "only a running job can be cancelled"
                                                      : "only a failed job can be retried");
        } else {
            /* A failed job from before this process: adopt it, then retry. */
            json_t *loaded = json_pack("[{s:O, s:O, s:O, s:O}]", "job", jobrow, "steps",
                                       json_object_get(doc, "steps"), "otp_requests",
                                       json_object_get(doc, "otp_requests"), "last_seq",
                                       json_object_get(doc, "seq"));
            char err[256];
            int rc = jw_engine_recover(app->engine, loaded, err, sizeof(err));

            json_decref(loaded);
            if (rc < 0) {
                jw_http_reply_error(req, 500, "internal", "cannot load job %s: %s", job_id, err);
            } else {
                rc = jw_engine_retry(app->engine, job_id, on_job_done, op, err, sizeof(err));
                if (rc == 0) {
                    json_decref(doc);
                    jw_read_free(r);
                    return; /* answered by on_job_done */
                }
                jw_http_reply_error(req, status_for(rc), code_for(rc), "%s", err);
            }
        }
    }
    json_decref(doc);
    finish(op);
    jw_read_free(r);
}

/* ---- dispatch ----------------------------------------------------------------------- */

static void method_not_allowed(jw_http_request *req, const char *allow)
{
    jw_http_reply_error(req, 405, "method_not_allowed", "%s is not allowed on %s; use %s",
                        req->method_name, req->path, allow);
    snprintf(req->resp.allow, sizeof(req->resp.allow), "%s", allow);
}

void jw_api_handle(jw_http_ctx *ctx, jw_http_request *req)
{
    jw_app *app = ctx->app;
    const char *p = req->path;
    bool get = req->method & (JW_HTTP_GET | JW_HTTP_HEAD), post = req->method == JW_HTTP_POST;
    jw_principal who;
    char id[JW_UUID_LEN + 1];
    const char *rest;

    if (!app) {
        jw_http_reply_error(req, 503, "unavailable", "starting up");
        return;
    }
    if (!authenticate(app, req, &who))
        return;

    if (strcmp(p, "/api/jobs") == 0) {
        if (get)
            list_jobs(app, req, &who);
        else if (post)
            post_jobs(app, req, &who);
        else
            method_not_allowed(req, "GET, HEAD, POST");
        return;
    }
    if (strcmp(p, "/api/jobs/start-payment") == 0 || strcmp(p, "/api/jobs/otp-received") == 0) {
        if (!post)
            method_not_allowed(req, "POST");
        else if (p[10] == 's')
            post_start_payment(app, req, &who);
        else
            post_otp_received(app, req, &who);
        return;
    }
    if (strcmp(p, "/api/sim/inbox") == 0) {
        if (get)
            get_inbox(app, req, &who);
        else
            method_not_allowed(req, "GET, HEAD");
        return;
    }
    if (strncmp(p, "/api/otp/", 9) == 0) {
        if (!jw_uuid_valid(p + 9)) {
            jw_http_reply_error(req, 400, "invalid_parameter",
                                "the OTP request id in the path must be a UUID");
            return;
        }
        if (!post) {
            method_not_allowed(req, "POST");
            return;
        }
        snprintf(id, sizeof(id), "%s", p + 9);
        for (char *c = id; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
        post_otp(app, req, &who, id);
        return;
    }
    if (strncmp(p, "/api/jobs/", 10) == 0) {
        rest = p + 10;
        snprintf(id, sizeof(id), "%.*s", JW_UUID_LEN, rest);
        if (strlen(rest) < JW_UUID_LEN || !jw_uuid_valid(id) ||
            (rest[JW_UUID_LEN] && rest[JW_UUID_LEN] != '/')) {
            jw_http_reply_error(req, 400, "invalid_parameter",
                                "the job id in the path must be a UUID");
            return;
        }
        for (char *c = id; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
        rest += JW_UUID_LEN;
        if (!*rest) {
            if (get)
                get_job(app, req, &who, id);
            else
                method_not_allowed(req, "GET, HEAD");
            return;
        }
        if (strcmp(rest, "/cancel") == 0 || strcmp(rest, "/retry") == 0) {
            if (post)
                command(app, req, &who, id, rest[1] == 'c' ? OP_CANCEL : OP_RETRY);
            else
                method_not_allowed(req, "POST");
            return;
        }
    }
    jw_http_reply_error(req, 404, "not_found", "no route %s", p);
}
