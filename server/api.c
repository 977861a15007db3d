/*
 * api.c - the job API over HTTP (docs/api.md): create, read, list, cancel,
 * retry, OTP submission, the original design's two routes, and the sim inbox.
 *
 * Every route authenticates first (admin key or a user's JWT). A user acts on
 * their own jobs only; another user's job answers exactly like a missing one.
 * Answers that depend on durability wait for it: a created job is answered
 * once its first batch committed, an OTP once the provider judged it.
 *
 * What a request says (route, path id, list query, body) is judged by
 * api_parse.c, which has no lws and is fuzzed; this file acts on it.
 */
#include "api.h"

#include "api_parse.h"
#include "inbox.h"
#include "jw_error.h"
#include "jw_log.h"
#include "wipe.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A running-jobs refusal cannot know when one ends: a hint, not a promise. */
#define LIVE_JOBS_RETRY_AFTER_S 10

/* What an answer waiting for the engine or the store remembers. */
typedef enum { OP_CREATE, OP_GET, OP_LIST, OP_CANCEL, OP_RETRY, OP_OTP } op_kind;

typedef struct api_op {
    jw_api *api;
    uint64_t req;
    op_kind kind;
    bool original; /* answer in the original design's shape */
    jw_principal who;
    int limit;
} api_op;

static api_op *new_op(jw_api *api, jw_http_request *req, op_kind kind, const jw_principal *who)
{
    api_op *op = jw_xcalloc(1, sizeof(*op));

    op->api = api;
    op->req = jw_http_defer(api->http, req);
    op->kind = kind;
    op->who = *who;
    return op;
}

/* The waiting request, or NULL when its client left (op is freed then). */
static jw_http_request *resume(api_op *op)
{
    jw_http_request *req = jw_http_resume(op->api->http, op->req);

    if (!req)
        free(op);
    return req;
}

static void finish(api_op *op)
{
    jw_http_finish(op->api->http, op->req);
    free(op);
}

/* ---- input -------------------------------------------------------------------- */

static bool authenticate(jw_api *api, jw_http_request *req, jw_principal *who)
{
    char err[256];

    if (jw_auth_bearer(api->sv->auth, req->authorization, jw_now_us() / 1000000, who, err,
                       sizeof(err)) != 0) {
        jw_http_reply_error(req, 401, "unauthorized", "%s", err);
        return false;
    }
    return true;
}

/* Answers what a parser refused (api_parse.h). */
static void reply_refusal(jw_http_request *req, const jw_http_error *err)
{
    jw_http_reply_error(req, err->status, err->code, "%s", err->message);
    if (err->allow[0])
        snprintf(req->resp.allow, sizeof(req->resp.allow), "%s", err->allow);
}

/* The validated body of a POST to route, or false after answering 415/400. */
static bool parse_body(jw_http_request *req, jw_api_route route, jw_api_body *body)
{
    jw_http_error err;

    if (jw_api_parse_body(route, req->content_type, req->body, req->body_len, body, &err) != 0) {
        reply_refusal(req, &err);
        return false;
    }
    return true;
}

/* ---- answers from the engine ----------------------------------------------------- */

static int status_for(int rc)
{
    switch (rc) {
    case JW_EINVAL: return 400;
    case JW_ETOOBIG: return 413;
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
    case JW_ETOOBIG: return "field_too_large";
    case JW_ENOTFOUND: return "not_found";
    case JW_ECONFLICT: return "conflict";
    case JW_EDBDOWN: return "unavailable";
    default: return "internal";
    }
}

static void reply_snapshot(jw_api *api, jw_http_request *req, int status, const char *job_id,
                           bool original)
{
    json_t *snap;

    if (original) {
        jw_http_reply_json(
            req, 200,
            json_pack("{s:s, s:s}", "jobId", job_id, "message", "Job started successfully"));
        return;
    }
    snap = jw_engine_snapshot(api->sv->engine, job_id);
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
        reply_snapshot(op->api, req, op->kind == OP_CREATE ? 201 : 200, job_id, op->original);
    finish(op);
}

static void reply_otp(api_op *op, jw_http_request *req, const jw_otp_result *r)
{
    json_t *body;

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
}

static void on_otp_result(void *arg, const jw_otp_result *r)
{
    api_op *op = arg;
    jw_http_request *req = resume(op);

    if (!req)
        return;
    reply_otp(op, req, r);
    finish(op);
}

/* The verdict of a command forwarded to the job's node (inbox.h). */
static void on_forwarded(void *arg, const jw_inbox_verdict *v)
{
    api_op *op = arg;
    jw_http_request *req = resume(op);

    if (!req)
        return;
    if (v->rc != 0) {
        jw_http_reply_error(req, v->status, v->code, "%s", v->message);
        req->resp.retry_after_s = v->retry_after_s;
    } else if (op->kind == OP_OTP) {
        reply_otp(op, req, &v->otp);
    } else if (v->snapshot) {
        jw_http_reply_json(req, 200, json_deep_copy(v->snapshot));
    } else {
        jw_http_reply_error(req, 503, "unavailable", "the job's node gave no answer; try again");
    }
    finish(op);
}

/* Hands op's command to the job's node; refused at once: answered 503 here. */
static void forward(jw_api *api, jw_http_request *req, api_op *op, const char *id,
                    const char *value)
{
    const char *user = op->who.kind == JW_PRINCIPAL_USER ? op->who.user_id : NULL;
    char err[256];
    int rc = op->kind == OP_OTP ? jw_inbox_forward_otp(api->sv->inbox, id, value, user,
                                                       on_forwarded, op, err, sizeof(err))
                                : jw_inbox_forward_cancel(api->sv->inbox, id, user, on_forwarded,
                                                          op, err, sizeof(err));

    if (rc == 0)
        return;
    jw_http_reply_error(req, 503, "unavailable", "%s", err);
    req->resp.retry_after_s = 1;
    finish(op);
}

/* ---- per-user limits (the admin key is not limited) ---------------------------------- */

/*
 * A user's job creation or retry: past the running-jobs bound, or out of the
 * per-minute budget, answers 429 (true: answered). A retry makes one job
 * run again, so it counts as a creation for both.
 */
static bool over_job_limits(jw_api *api, jw_http_request *req, const jw_principal *who)
{
    int live, after;

    if (who->kind != JW_PRINCIPAL_USER)
        return false;
    live = jw_engine_user_live_jobs(api->sv->engine, who->user_id);
    if (live >= api->sv->cfg->max_live_jobs_per_user) {
        jw_limits_count_refusal(api->sv->limits, JW_LIMIT_USER_LIVE_JOBS);
        jw_http_reply_error(req, 429, "too_many_live_jobs",
                            "you have %d running jobs, the most one user may have "
                            "(--max-live-jobs-per-user); wait for one to finish",
                            live);
        req->resp.retry_after_s = LIVE_JOBS_RETRY_AFTER_S;
        return true;
    }
    if (jw_limits_take(api->sv->limits, JW_LIMIT_USER_JOBS, who->user_id, jw_mono_us(), &after)) {
        jw_http_reply_error(req, 429, "rate_limited",
                            "at most %d job creations and retries a minute "
                            "(--job-rate-per-user); try again in %d s",
                            api->sv->cfg->job_rate_per_user, after);
        req->resp.retry_after_s = after;
        return true;
    }
    return false;
}

static bool over_otp_rate(jw_api *api, jw_http_request *req, const jw_principal *who)
{
    int after;

    if (who->kind != JW_PRINCIPAL_USER ||
        !jw_limits_take(api->sv->limits, JW_LIMIT_USER_OTP, who->user_id, jw_mono_us(), &after))
        return false;
    jw_http_reply_error(req, 429, "rate_limited",
                        "at most %d OTP submissions a minute (--otp-rate-per-user); try again "
                        "in %d s",
                        api->sv->cfg->otp_rate_per_user, after);
    req->resp.retry_after_s = after;
    return true;
}

/* ---- routes ------------------------------------------------------------------------ */

/*
 * A command that changes a job is answered once its change committed, so while
 * PostgreSQL is known unreachable it is refused (503, Retry-After) rather than
 * held for the whole outage: a client that gave up waiting and sent it again
 * would start a second job. One taken just before an outage still waits for
 * its commit (docs/api.md). True: answered.
 */
static bool refused_while_db_down(jw_api *api, jw_http_request *req)
{
    if (!api->sv->store || jw_store_connected(api->sv->store))
        return false;
    jw_http_reply_error(req, 503, "unavailable",
                        "the database is unavailable; nothing was changed, try again");
    req->resp.retry_after_s = 5;
    return true;
}

static void create_job(jw_api *api, jw_http_request *req, const jw_principal *who,
                       const jw_api_body *body, bool original)
{
    const char *user_id = body->user_id;
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
    if (refused_while_db_down(api, req) || over_job_limits(api, req, who))
        return;
    op = new_op(api, req, OP_CREATE, who);
    op->original = original;
    rc = jw_engine_create_job(api->sv->engine, user_id, body->amount, body->count, body->metadata,
                              on_job_done, op, job_id, err, sizeof(err));
    if (rc != 0) {
        /* Refused before anything was queued: answer now. */
        jw_http_reply_error(req, status_for(rc), code_for(rc), "%s", err);
        finish(op);
    }
}

static void post_jobs(jw_api *api, jw_http_request *req, const jw_principal *who, const char *id)
{
    jw_api_body body;

    (void)id;
    if (parse_body(req, JW_API_CREATE_JOB, &body))
        create_job(api, req, who, &body, false);
    jw_api_body_release(&body);
}

static void post_start_payment(jw_api *api, jw_http_request *req, const jw_principal *who,
                               const char *id)
{
    jw_api_body body;

    (void)id;
    if (parse_body(req, JW_API_START_PAYMENT, &body))
        create_job(api, req, who, &body, true);
    jw_api_body_release(&body);
}

static void on_read(jw_read *r, void *arg);

/* Hands r to the store, to be answered at on_read; refused (its queue of reads is full, or
 * shutting down): 503. */
static void submit_read(jw_api *api, jw_http_request *req, api_op *op, jw_read *r)
{
    int rc;

    r->done = on_read;
    r->done_arg = api;
    rc = jw_store_read(api->sv->store, r);

    if (rc == 0)
        return;
    jw_read_free(r);
    if (rc == JW_ELIMIT) {
        jw_http_reply_error(req, 503, "unavailable",
                            "too many database reads are queued; try again");
        req->resp.retry_after_s = 1;
    } else {
        jw_http_reply_error(req, 503, "unavailable", "shutting down");
    }
    finish(op);
}

static void read_job(jw_api *api, jw_http_request *req, const jw_principal *who, const char *job_id,
                     op_kind kind)
{
    /* A retry claims the failed job's lease for this node as it reads it. */
    const char *params[3] = {job_id, api->sv->cfg->node_id,
                             who->kind == JW_PRINCIPAL_USER ? who->user_id : NULL};
    jw_read *r = kind == OP_RETRY ? jw_read_new(JW_READ_JOB_CLAIM, 3, params)
                                  : jw_read_new(JW_READ_JOB, 1, params);
    api_op *op = new_op(api, req, kind, who);

    r->user = op;
    submit_read(api, req, op, r);
}

static void get_job(jw_api *api, jw_http_request *req, const jw_principal *who, const char *job_id)
{
    const char *owner = jw_engine_job_owner(api->sv->engine, job_id);

    if (!owner) {
        read_job(api, req, who, job_id, OP_GET); /* finished, or unknown */
        return;
    }
    if (!jw_principal_may_access(who, owner)) {
        jw_http_reply_error(req, 404, "not_found", "no job %s", job_id);
        return;
    }
    reply_snapshot(api, req, 200, job_id, false);
}

static void list_jobs(jw_api *api, jw_http_request *req, const jw_principal *who, const char *id)
{
    jw_api_list_query q;
    jw_http_error err;
    const char *params[4];
    char limit_buf[16];
    jw_read *r;
    api_op *op;

    (void)id;
    if (jw_api_parse_list_query(req->query, req->query_len, &q, &err) != 0) {
        reply_refusal(req, &err);
        return;
    }
    if (who->kind == JW_PRINCIPAL_USER) {
        if (q.user_id && strcasecmp(q.user_id, who->user_id) != 0) {
            jw_http_reply_error(req, 403, "forbidden", "a user can list only their own jobs");
            return;
        }
        q.user_id = who->user_id;
    }
    snprintf(limit_buf, sizeof(limit_buf), "%d", q.limit);
    params[0] = q.status;
    params[1] = q.user_id;
    params[2] = q.before;
    params[3] = limit_buf;
    r = jw_read_new(JW_READ_JOBS, 4, params);
    op = new_op(api, req, OP_LIST, who);
    op->limit = q.limit;
    r->user = op;
    submit_read(api, req, op, r);
}

static void command(jw_api *api, jw_http_request *req, const jw_principal *who, const char *job_id,
                    op_kind kind)
{
    const char *owner = jw_engine_job_owner(api->sv->engine, job_id);
    char err[256];
    api_op *op;
    int rc;

    if (refused_while_db_down(api, req))
        return;
    if (kind == OP_CANCEL && api->sv->inbox &&
        (!owner || jw_engine_job_retryable(api->sv->engine, job_id))) {
        /* Not in memory here, or failed here and maybe retried by another node since:
         * running on another node (forwarded to it), finished or unknown - the inbox's
         * insert decides, from PostgreSQL, for this user. */
        forward(api, req, new_op(api, req, kind, who), job_id, NULL);
        return;
    }
    if (!owner) {
        /* Not running here: finished (or unknown). The read decides. */
        read_job(api, req, who, job_id, kind);
        return;
    }
    if (!jw_principal_may_access(who, owner)) {
        jw_http_reply_error(req, 404, "not_found", "no job %s", job_id);
        return;
    }
    if (kind == OP_RETRY && jw_engine_job_retryable(api->sv->engine, job_id) &&
        over_job_limits(api, req, who))
        return;
    op = new_op(api, req, kind, who);
    rc = kind == OP_CANCEL
             ? jw_engine_cancel(api->sv->engine, job_id, on_job_done, op, err, sizeof(err))
             : jw_engine_retry(api->sv->engine, job_id, on_job_done, op, err, sizeof(err));
    if (rc != 0) {
        jw_http_reply_error(req, status_for(rc), code_for(rc), "%s", err);
        finish(op);
    }
}

static void submit_otp(jw_api *api, jw_http_request *req, const jw_principal *who,
                       const char *otp_id, const char *value, bool original)
{
    char err[256];
    api_op *op;
    int rc;

    if (over_otp_rate(api, req, who))
        return;
    op = new_op(api, req, OP_OTP, who);
    op->original = original;
    rc = jw_engine_submit_otp(api->sv->engine, otp_id, value,
                              who->kind == JW_PRINCIPAL_USER ? who->user_id : NULL, on_otp_result,
                              op, err, sizeof(err));
    if (rc == JW_ENOTFOUND && api->sv->inbox && !jw_engine_otp_job(api->sv->engine, otp_id)) {
        /* Not in memory here: another node's job (forwarded to it), or none. */
        forward(api, req, op, otp_id, value);
        return;
    }
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

static void post_otp(jw_api *api, jw_http_request *req, const jw_principal *who, const char *otp_id)
{
    jw_api_body body;
    bool ok = parse_body(req, JW_API_SUBMIT_OTP, &body);

    wipe_body(req);
    if (ok)
        submit_otp(api, req, who, otp_id, body.otp, false);
    jw_wipe_json_string(json_object_get(body.doc, "otp")); /* the parsed copy of the code */
    jw_api_body_release(&body);
}

static void post_otp_received(jw_api *api, jw_http_request *req, const jw_principal *who,
                              const char *id)
{
    jw_api_body body;
    bool ok = parse_body(req, JW_API_OTP_RECEIVED, &body);

    (void)id;
    wipe_body(req);
    if (ok)
        submit_otp(api, req, who, body.otp_id, body.otp, true);
    jw_wipe_json_string(json_object_get(body.doc, "otpValue")); /* the parsed copy of the code */
    jw_api_body_release(&body);
}

static void get_inbox(jw_api *api, jw_http_request *req, const jw_principal *who, const char *id)
{
    json_t *msgs, *m;
    size_t i;

    (void)id;
    if (who->kind != JW_PRINCIPAL_ADMIN) {
        jw_http_reply_error(req, 403, "forbidden", "the sim inbox needs the admin key");
        return;
    }
    if (!api->sim_inbox) {
        jw_http_reply_error(req, 404, "not_found", "the sim inbox exists only in sim mode");
        return;
    }
    msgs = api->sim_inbox(api->sim_inbox_arg);
    json_array_foreach(msgs, i, m)
    {
        const char *otp =
            jw_engine_step_otp(api->sv->engine, json_string_value(json_object_get(m, "job_id")),
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

/* A read of ours has its answer (jw_read.done); takes r. */
static void on_read(jw_read *r, void *arg)
{
    jw_api *api = arg;
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
        } else if (jw_engine_has_job(api->sv->engine, job_id)) {
            /* It came back into memory meanwhile (another request): try again. */
            jw_http_reply_error(req, 409, "conflict", "job %s changed; try again", job_id);
        } else if (op->kind == OP_CANCEL || strcmp(status, "failed") != 0) {
            jw_http_reply_error(req, 409, "conflict", "job %s is %s; %s", job_id, status,
                                op->kind == OP_CANCEL ? "only a running job can be cancelled"
                                                      : "only a failed job can be retried");
        } else if (!json_is_integer(json_object_get(doc, "lease_epoch"))) {
            /* Not claimed: it stopped being failed as we read it. */
            jw_http_reply_error(req, 409, "conflict", "job %s changed; try again", job_id);
        } else if (over_job_limits(api, req, &op->who)) {
            /* answered: 429 */
        } else {
            /* A failed job from before this process: adopt it (its lease claimed by the
             * read), then retry. */
            json_t *loaded = json_pack("[{s:O, s:O, s:O, s:O, s:O}]", "job", jobrow, "steps",
                                       json_object_get(doc, "steps"), "otp_requests",
                                       json_object_get(doc, "otp_requests"), "last_seq",
                                       json_object_get(doc, "seq"), "lease_epoch",
                                       json_object_get(doc, "lease_epoch"));
            char err[256];
            int rc = jw_engine_recover(api->sv->engine, loaded, err, sizeof(err));

            json_decref(loaded);
            if (rc < 0) {
                jw_http_reply_error(req, 500, "internal", "cannot load job %s: %s", job_id, err);
            } else {
                rc = jw_engine_retry(api->sv->engine, job_id, on_job_done, op, err, sizeof(err));
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

static void cancel_job(jw_api *api, jw_http_request *req, const jw_principal *who, const char *id)
{
    command(api, req, who, id, OP_CANCEL);
}

static void retry_job(jw_api *api, jw_http_request *req, const jw_principal *who, const char *id)
{
    command(api, req, who, id, OP_RETRY);
}

/* One handler per route (api_parse.h); id is the path's id, lower case, or "". */
typedef void (*api_handler)(jw_api *api, jw_http_request *req, const jw_principal *who,
                            const char *id);

static const api_handler handlers[JW_API_ROUTES] = {
    [JW_API_LIST_JOBS] = list_jobs,
    [JW_API_CREATE_JOB] = post_jobs,
    [JW_API_START_PAYMENT] = post_start_payment,
    [JW_API_OTP_RECEIVED] = post_otp_received,
    [JW_API_SIM_INBOX] = get_inbox,
    [JW_API_SUBMIT_OTP] = post_otp,
    [JW_API_GET_JOB] = get_job,
    [JW_API_CANCEL_JOB] = cancel_job,
    [JW_API_RETRY_JOB] = retry_job,
};

void jw_api_handle(void *arg, jw_http_ctx *ctx, jw_http_request *req)
{
    jw_api *api = arg;
    jw_principal who;
    jw_api_match m;
    jw_http_error err;

    (void)ctx; /* the same as api->http */
    /* Authentication first, on every path: unknown routes included (docs/api.md). */
    if (!authenticate(api, req, &who))
        return;
    if (jw_api_match_route(req->method, req->path, &m, &err) != 0) {
        reply_refusal(req, &err);
        return;
    }
    handlers[m.route](api, req, &who, m.id);
}
