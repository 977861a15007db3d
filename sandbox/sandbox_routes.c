/*
 * sandbox_routes.c - what jobwire-sandbox answers: POST /steps/<name>
 * through the sim core, with the armed faults applied first; the faults
 * themselves (arm, list, clear); the sim's charges and SMS inbox; health.
 * Each handler answers through sandbox.h's respond functions.
 *
 * Threads: the one thread of the sandbox.
 */
#include "sandbox.h"

#include "jw_log.h"
#include "jw_util.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAULTS 64
#define FAULT_COUNT_MAX 1000
#define FAULT_DELAY_MAX_MS 600000
#define HUGE_BODY (300 * 1024)

enum fault_mode { F_NONE, F_HTTP_500, F_TIMEOUT, F_SLOW, F_RESET, F_BAD_JSON, F_HUGE, F__COUNT };

static const char *const fault_names[F__COUNT] = {
    [F_NONE] = "none",   [F_HTTP_500] = "http_500", [F_TIMEOUT] = "timeout", [F_SLOW] = "slow",
    [F_RESET] = "reset", [F_BAD_JSON] = "bad_json", [F_HUGE] = "huge",
};

typedef struct fault {
    char step[JW_STEP_NAME_MAX]; /* a step name or "*" */
    char job[JW_UUID_LEN + 1];   /* a job id, or "" for any job */
    enum fault_mode mode;
    int remaining;
    int delay_ms;
    bool first_call; /* only a key's first call matches (none sent under it yet) */
} fault;

static struct {
    jw_sim *sim;
    fault faults[MAX_FAULTS];
    size_t nfaults;
} S;

void sandbox__routes_init(jw_sim *sim)
{
    S.sim = sim;
}

/* --- faults -------------------------------------------------------------- */

/*
 * Takes one use of the first armed fault matching step and job (the
 * request's job_id, NULL when it has none) and, for a first_call fault,
 * first (no call came under the request's key before); F_NONE when none.
 */
static fault take_fault(const char *step, const char *job, bool first)
{
    fault none = {.mode = F_NONE};

    for (size_t i = 0; i < S.nfaults; i++) {
        fault *f = &S.faults[i];

        if (strcmp(f->step, "*") != 0 && strcmp(f->step, step) != 0)
            continue;
        if (f->job[0] && (!job || strcmp(f->job, job) != 0))
            continue;
        if (f->first_call && !first)
            continue;
        none = *f;
        if (--f->remaining == 0) {
            memmove(f, f + 1, (S.nfaults - i - 1) * sizeof(*f));
            S.nfaults--;
        }
        return none;
    }
    return none;
}

static json_t *faults_json(void)
{
    json_t *a = json_array();

    for (size_t i = 0; i < S.nfaults; i++) {
        const fault *f = &S.faults[i];

        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:i, s:i, s:b}", "step", f->step, "job",
                                           f->job[0] ? f->job : "*", "mode", fault_names[f->mode],
                                           "count", f->remaining, "delay_ms", f->delay_ms,
                                           "first_call", f->first_call));
    }
    return a;
}

static bool step_name_ok(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && n < JW_STEP_NAME_MAX && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static void h_faults_post(conn *c, const request *r)
{
    json_error_t jerr;
    json_t *body = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    const char *step = NULL, *mode = NULL, *job = NULL;
    json_int_t count = 1, delay = -1;
    int first_call = 0;
    fault f = {0};

    if (!body) {
        sandbox__respond_error(c, 400, "bad_json", r->keep_alive, "the body is not JSON: %s",
                               jerr.text);
        return;
    }
    if (json_unpack_ex(body, &jerr, JSON_STRICT, "{s:s, s:s, s?I, s?I, s?s, s?b}", "step", &step,
                       "mode", &mode, "count", &count, "delay_ms", &delay, "job", &job,
                       "first_call", &first_call) != 0) {
        sandbox__respond_error(
            c, 400, "bad_fault", r->keep_alive,
            "expected {\"step\":\"<name>\"|\"*\",\"mode\":\"http_500|timeout|slow|reset|"
            "bad_json|huge\",\"count\":N,\"delay_ms\":M,\"job\":\"<job id>\","
            "\"first_call\":true|false}: %s",
            jerr.text);
        goto out;
    }
    if (job && !jw_uuid_valid(job)) {
        sandbox__respond_error(c, 400, "bad_fault", r->keep_alive, "job must be a job id (a UUID)");
        goto out;
    }
    if (strcmp(step, "*") != 0 && !step_name_ok(step)) {
        sandbox__respond_error(c, 400, "bad_fault", r->keep_alive,
                               "step must be \"*\" or a step name of a-z 0-9 _");
        goto out;
    }
    for (int m = F_HTTP_500; m < F__COUNT; m++)
        if (strcmp(mode, fault_names[m]) == 0)
            f.mode = (enum fault_mode)m;
    if (f.mode == F_NONE) {
        sandbox__respond_error(c, 400, "bad_fault", r->keep_alive,
                               "mode must be http_500, timeout, slow, reset, bad_json or huge");
        goto out;
    }
    if (count < 1 || count > FAULT_COUNT_MAX) {
        sandbox__respond_error(c, 400, "bad_fault", r->keep_alive, "count must be 1..%d (got %lld)",
                               FAULT_COUNT_MAX, (long long)count);
        goto out;
    }
    if (delay == -1)
        delay = f.mode == F_TIMEOUT ? 30000 : f.mode == F_SLOW ? 1000 : 0;
    if (delay < 0 || delay > FAULT_DELAY_MAX_MS) {
        sandbox__respond_error(c, 400, "bad_fault", r->keep_alive,
                               "delay_ms must be 0..%d (got %lld)", FAULT_DELAY_MAX_MS,
                               (long long)delay);
        goto out;
    }
    if (S.nfaults == MAX_FAULTS) {
        sandbox__respond_error(c, 409, "too_many_faults", r->keep_alive,
                               "%d faults are armed already; DELETE /faults first", MAX_FAULTS);
        goto out;
    }
    snprintf(f.step, sizeof(f.step), "%s", step);
    snprintf(f.job, sizeof(f.job), "%s", job ? job : "");
    f.remaining = (int)count;
    f.delay_ms = (int)delay;
    f.first_call = first_call != 0;
    S.faults[S.nfaults++] = f;
    jw_log_info("sandbox: armed fault step=%s job=%s mode=%s count=%d delay_ms=%d%s", f.step,
                f.job[0] ? f.job : "*", fault_names[f.mode], f.remaining, f.delay_ms,
                f.first_call ? " first_call" : "");
    sandbox__respond_json(c, 200, json_pack("{s:o}", "faults", faults_json()), r->keep_alive, 0);
out:
    json_decref(body);
}

static void h_faults_get(conn *c, const request *r)
{
    sandbox__respond_json(c, 200, json_pack("{s:o}", "faults", faults_json()), r->keep_alive, 0);
}

static void h_faults_delete(conn *c, const request *r)
{
    S.nfaults = 0;
    jw_log_info("sandbox: faults cleared");
    sandbox__respond_json(c, 200, json_pack("{s:o}", "faults", faults_json()), r->keep_alive, 0);
}

static void h_charges(conn *c, const request *r)
{
    sandbox__respond_json(c, 200, jw_sim_charges_json(S.sim), r->keep_alive, 0);
}

static void h_inbox(conn *c, const request *r)
{
    sandbox__respond_json(c, 200, jw_sim_inbox_json(S.sim), r->keep_alive, 0);
}

static void h_healthz(conn *c, const request *r)
{
    sandbox__respond_json(c, 200, json_pack("{s:s}", "status", "ok"), r->keep_alive, 0);
}

/* --- steps --------------------------------------------------------------- */

static void respond_huge(conn *c, bool keep_alive)
{
    static const char head[] = "{\"status\":\"ok\",\"data\":{\"pad\":\"";
    static const char tail[] = "\"}}";
    char *body = jw_xmalloc(HUGE_BODY);
    size_t pad = HUGE_BODY - (sizeof(head) - 1) - (sizeof(tail) - 1);

    memcpy(body, head, sizeof(head) - 1);
    memset(body + sizeof(head) - 1, 'x', pad);
    memcpy(body + sizeof(head) - 1 + pad, tail, sizeof(tail) - 1);
    sandbox__respond_raw(c, 200, body, HUGE_BODY, keep_alive, 0);
    free(body);
}

static void h_step(conn *c, const request *r)
{
    const char *step = r->path + strlen("/steps/");
    const jw_sim_config *cfg = jw_sim_config_of(S.sim);
    jw_provider_call *call = NULL;
    jw_provider_reply *reply;
    json_error_t jerr;
    json_t *body = NULL, *otp;
    const char *key;
    char err[256];
    fault f;
    int delay;

    if (!step_name_ok(step)) {
        sandbox__respond_step_error(c, 404, false, r->keep_alive,
                                    "no such step: step names are 1..%d characters of a-z 0-9 _",
                                    JW_STEP_NAME_MAX - 1);
        return;
    }
    /* Parsed first: a fault may be armed for one job (the body's job_id), or for
     * the first call under a key (one the sim has no call for yet). */
    body = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    key = json_string_value(json_object_get(body, "idempotency_key"));
    f = take_fault(step, json_string_value(json_object_get(body, "job_id")),
                   !key || jw_sim_calls_for(S.sim, key) == 0);
    if (f.mode != F_NONE)
        jw_log_info("sandbox: POST /steps/%s: injecting %s", step, fault_names[f.mode]);
    switch (f.mode) {
    case F_RESET:
        sandbox__reset(c); /* the loop resets it once the handler is done */
        goto out;
    case F_HTTP_500:
        sandbox__respond_step_error(c, 500, true, r->keep_alive, "sandbox: injected HTTP 500");
        goto out;
    case F_BAD_JSON:
        sandbox__respond_raw(c, 200, "this is not JSON\n", 17, r->keep_alive, 0);
        goto out;
    case F_HUGE: respond_huge(c, r->keep_alive); goto out;
    default: break;
    }
    if (!body) {
        jw_log_info("sandbox: POST /steps/%s refused: the body is not JSON", step);
        sandbox__respond_step_error(c, 400, false, r->keep_alive,
                                    "the request body is not JSON: %s", jerr.text);
        return;
    }
    if (jw_sim_call_from_json(body, step, &call, err, sizeof(err)) != 0) {
        jw_log_info("sandbox: POST /steps/%s refused: %s", step, err);
        sandbox__respond_step_error(c, 400, false, r->keep_alive, "%s", err);
        goto out;
    }
    /* The key travels twice; a client that sends both must send the same. */
    if (call->idempotency_key[0] &&
        (!r->has_idem_key || strcmp(r->idem_key, call->idempotency_key) != 0)) {
        sandbox__respond_step_error(
            c, 400, false, r->keep_alive,
            "the Idempotency-Key header must equal the body's idempotency_key");
        goto out;
    }
    reply = jw_sim_handle(S.sim, call, jw_now_us());
    jw_log_info("sandbox: POST /steps/%s job=%s step=%s attempt=%d%s", step, call->job_id,
                call->step_id, call->attempt, f.mode == F_TIMEOUT ? " (reply withheld)" : "");
    delay = cfg->latency_ms + (f.mode == F_SLOW || f.mode == F_TIMEOUT ? f.delay_ms : 0);
    sandbox__respond_json(c, 200, jw_provider_reply_to_json(reply), r->keep_alive, delay);
    jw_provider_reply_free(reply);
    if (f.mode == F_TIMEOUT)
        sandbox__hold_then_close(c, delay);
out:
    otp = json_object_get(body, "otp");
    if (json_is_string(otp))
        OPENSSL_cleanse((char *)json_string_value(otp), json_string_length(otp));
    json_decref(body);
    jw_provider_call_free(call);
}

/* --- routes -------------------------------------------------------------- */

typedef void (*handler_fn)(conn *c, const request *r);

/* The routes; the zeroed row ends the table. */
static const struct route {
    const char *method;
    const char *path;
    bool prefix;
    handler_fn fn;
} routes[] = {
    {.method = "POST", .path = "/steps/", .prefix = true, .fn = h_step},
    {.method = "GET", .path = "/charges", .fn = h_charges},
    {.method = "GET", .path = "/inbox", .fn = h_inbox},
    {.method = "GET", .path = "/faults", .fn = h_faults_get},
    {.method = "POST", .path = "/faults", .fn = h_faults_post},
    {.method = "DELETE", .path = "/faults", .fn = h_faults_delete},
    {.method = "GET", .path = "/healthz", .fn = h_healthz},
    {0},
};

void sandbox__dispatch(conn *c, const request *r)
{
    bool path_known = false;

    for (const struct route *rt = routes; rt->method; rt++) {
        bool match = rt->prefix ? strncmp(r->path, rt->path, strlen(rt->path)) == 0
                                : strcmp(r->path, rt->path) == 0;

        if (!match)
            continue;
        path_known = true;
        if (strcmp(r->method, rt->method) == 0) {
            rt->fn(c, r);
            return;
        }
    }
    if (path_known)
        sandbox__respond_error(c, 405, "method_not_allowed", r->keep_alive,
                               "%s is not allowed on %s", r->method, r->path);
    else
        sandbox__respond_error(c, 404, "not_found", r->keep_alive,
                               "no such endpoint (see jobwire-sandbox --help)");
}
