/*
 * inbox.c - commands from any node: the caller's side (forward, wait, answer
 * its client) and the owner's side (take, apply, write the verdict). See
 * inbox.h for the protocol; the SQL is db/reads.c's JW_READ_INBOX_*.
 *
 * Why the order is safe (an OTP consumed once, never applied twice):
 *  - The take is one statement: it locks the job's row FOR SHARE at this
 *    node and the engine's lease epoch, then takes the inbox row only while
 *    nobody has (taken_by IS NULL, the row locked FOR UPDATE), and erases the
 *    sealed code as it does. Two takers serialize on the row: one gets it. A
 *    takeover's epoch bump waits for the take to commit, or the take sees the
 *    new epoch and takes nothing. A taken row never holds a value (a CHECK in
 *    migration 005), so no node can apply that code again.
 *  - Then the engine judges the code as for a local submission: the OTP
 *    request goes to `received` in a fenced group commit before the provider
 *    is asked, and the verdict is answered after the commit that records it.
 *  - If the owner dies between its take and its verdict, the code dies with
 *    it, as a typed code does on one node (recovery asks for the OTP again):
 *    the new owner finds the row taken at an older epoch and unanswered, and
 *    answers it 503 ("owner changed: try again") - no caller waits forever,
 *    nothing is applied twice. The code is lost in that window, never reused.
 *  - A caller that gives up (jw_inbox_wait_ms) withdraws its row in one
 *    statement that deletes it only if nobody took it: then it was not
 *    applied (503); otherwise its outcome is unknown (504).
 *
 * Loop thread only. Reads come back through on_read (jw_read.done), routed by
 * their kind and their first parameter, the row id - never a pointer, so a
 * wait that ended meanwhile is simply not found.
 */
#include "inbox.h"

#include "jw_crypto.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_map.h"
#include "jw_util.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WAITS 1024         /* commands this node waits on at once */
#define MAX_OPEN_ROWS 10000    /* open (unanswered) rows in the table, all nodes */
#define MAX_OPEN_PER_USER 64   /* open rows of one user's jobs */
#define SCAN_LIMIT 100         /* rows one owner scan looks at */
#define SCAN_PERIOD_US 2000000 /* the owner's scan, and retries of unsent answers */
#define CATCH_UP_VERDICTS 64   /* verdict reads one catch-up sends; the waits' ends cover more */
#define MAX_UNSENT 1024        /* verdicts waiting to be written again */

const char *const jw_inbox_outcome_names[JW_INBOX__N] = {
    [JW_INBOX_FORWARDED] = "forwarded", [JW_INBOX_ANSWERED] = "answered",
    [JW_INBOX_REFUSED] = "refused",     [JW_INBOX_FULL] = "full",
    [JW_INBOX_NO_KEY] = "no_key",       [JW_INBOX_NOT_APPLIED] = "not_applied",
    [JW_INBOX_UNKNOWN] = "unknown",     [JW_INBOX_DB_ERROR] = "db_error",
    [JW_INBOX_TAKEN] = "taken",         [JW_INBOX_OWNER_CHANGED] = "owner_changed",
};

typedef enum { W_PUTTING, W_WAITING, W_WITHDRAWING } wait_state;

/* A command this node forwarded, waiting for its verdict. */
typedef struct waiter {
    jw_inbox *ib;
    char id[JW_UUID_LEN + 1]; /* the row's; the waits map's key */
    char target[JW_UUID_LEN + 1];
    bool otp;
    bool value_ok; /* an OTP of 4..10 digits */
    bool sealed;   /* an OTP sealed into the row */
    wait_state state;
    jw_timer timer;
    jw_inbox_fn fn;
    void *arg;
} waiter;

/* A row this node took as the owner, until its engine answered. */
typedef struct task {
    jw_inbox *ib;
    char id[JW_UUID_LEN + 1];
    char job[JW_UUID_LEN + 1];
    struct task *prev, *next;
} task;

/* A verdict whose write failed: written again at the next tick. */
typedef struct unsent {
    char id[JW_UUID_LEN + 1];
    char *verdict;
    struct unsent *next;
} unsent;

struct jw_inbox {
    const jw_config *cfg;
    jw_engine *engine;
    jw_store *store;
    jw_timers *timers;
    bool has_key;
    uint8_t key[JW_SEAL_KEY_LEN]; /* HMAC(secret key, "jobwire inbox otp") */
    int64_t wait_ms;
    int wait_s, expiry_s;
    jw_map waits;  /* row id -> waiter */
    jw_map taking; /* row id -> its own key (a malloc'd copy): takes in flight */
    task *tasks;
    unsent *unsent;
    size_t nunsent;
    bool scanning;
    bool rescan; /* a row could not be taken yet: scan again at the next tick */
    jw_timer tick;
    uint64_t counts[JW_INBOX__N];
};

/* ---- reads ------------------------------------------------------------------------ */

static void on_read(jw_read *r, void *arg);

/* Queues a read of ours; its JW_E* refusal otherwise (the read is freed then). */
static int submit(jw_inbox *ib, jw_read_kind kind, int n, const char *const *params)
{
    jw_read *r = jw_read_new(kind, n, params);
    int rc;

    r->done = on_read;
    r->done_arg = ib;
    rc = jw_store_read(ib->store, r);
    if (rc != 0)
        jw_read_free(r);
    return rc;
}

/* ---- the caller's side ---------------------------------------------------------------- */

static void end_wait(waiter *w)
{
    jw_timers_cancel(w->ib->timers, &w->timer);
    jw_map_del(&w->ib->waits, w->id);
    free(w);
}

static void refuse(waiter *w, jw_inbox_outcome o, int status, const char *code, int retry_after_s,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Answers the wait with a refusal and ends it. */
static void refuse(waiter *w, jw_inbox_outcome o, int status, const char *code, int retry_after_s,
                   const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    jw_inbox_verdict v = {
        .status = status, .code = code, .message = msg, .retry_after_s = retry_after_s};

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    switch (status) {
    case 400: v.rc = JW_EINVAL; break;
    case 404: v.rc = JW_ENOTFOUND; break;
    case 409: v.rc = JW_ECONFLICT; break;
    case 429: v.rc = JW_ELIMIT; break;
    case 504: v.rc = JW_ETIMEOUT; break;
    default: v.rc = JW_EDBDOWN; break;
    }
    w->ib->counts[o]++;
    w->fn(w->arg, &v);
    end_wait(w);
}

/* The owner's verdict (the row's "verdict" JSON) to the waiting caller; ends the wait. */
static void deliver(waiter *w, const json_t *verdict)
{
    const char *rc = json_string_value(json_object_get(verdict, "rc"));
    const char *msg = json_string_value(json_object_get(verdict, "message"));
    json_t *otp = json_object_get(verdict, "otp");
    jw_inbox_verdict v = {0};

    if (!rc || strcmp(rc, "ok") != 0) {
        int status = !rc                            ? 503
                     : strcmp(rc, "not_found") == 0 ? 404
                     : strcmp(rc, "invalid") == 0   ? 400
                     : strcmp(rc, "conflict") == 0  ? 409
                                                    : 503;

        refuse(w, JW_INBOX_ANSWERED, status,
               status == 404   ? "not_found"
               : status == 400 ? "invalid_field"
               : status == 409 ? "conflict"
                               : "unavailable",
               status == 503 ? 1 : 0, "%s", msg ? msg : "the job's node refused the command");
        return;
    }
    if (w->otp) {
        v.otp.ok = json_is_true(json_object_get(otp, "ok"));
        v.otp.error = json_string_value(json_object_get(otp, "error"));
        v.otp.message = json_string_value(json_object_get(otp, "message"));
        v.otp.attempts_left = (int)json_integer_value(json_object_get(otp, "attempts_left"));
    } else {
        v.snapshot = json_object_get(verdict, "snapshot");
    }
    w->ib->counts[JW_INBOX_ANSWERED]++;
    w->fn(w->arg, &v);
    end_wait(w);
}

static void wait_expired(jw_timer *t, void *arg)
{
    waiter *w = arg;
    const char *params[2] = {w->id, "withdraw"};

    (void)t;
    w->state = W_WITHDRAWING;
    if (submit(w->ib, JW_READ_INBOX_VERDICT, 2, params) != 0)
        refuse(w, JW_INBOX_UNKNOWN, 504, "timeout", 0,
               "the job's node did not answer within %d s, and the command could not be "
               "withdrawn; its outcome is unknown: read the job",
               w->ib->wait_s);
}

static bool otp_value_valid(const char *v)
{
    size_t n = 0;

    for (; v && v[n]; n++)
        if (!isdigit((unsigned char)v[n]) || n >= 10)
            return false;
    return n >= 4;
}

/* The associated data of a sealed code: it opens only in its own row, for its request. */
static void otp_aad(char *out, size_t len, const char *row_id, const char *target)
{
    snprintf(out, len, "jobwire inbox otp %s %s", row_id, target);
}

static int forward(jw_inbox *ib, bool otp, const char *target, const char *value, const char *user,
                   jw_inbox_fn fn, void *arg, char *err, size_t errlen)
{
    char max_open[16], max_user[16], expiry[16];
    char *hex = NULL;
    waiter *w;
    int rc;

    if (ib->waits.count >= MAX_WAITS) {
        snprintf(err, errlen,
                 "this node waits on %d commands for other nodes, the most it may; "
                 "try again",
                 MAX_WAITS);
        ib->counts[JW_INBOX_FULL]++;
        return JW_ELIMIT;
    }
    if (!target || !jw_uuid_valid(target)) {
        snprintf(err, errlen, "not a UUID");
        return JW_EINVAL;
    }
    w = jw_xcalloc(1, sizeof(*w));
    w->ib = ib;
    w->otp = otp;
    w->fn = fn;
    w->arg = arg;
    jw_uuid_new(w->id);
    snprintf(w->target, sizeof(w->target), "%s", target);
    for (char *p = w->target; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (otp) {
        w->value_ok = otp_value_valid(value);
        if (w->value_ok && ib->has_key) {
            char aad[128];
            uint8_t *sealed = NULL;
            size_t sealed_len = 0;

            otp_aad(aad, sizeof(aad), w->id, w->target);
            if (jw_seal(ib->key, value, strlen(value), aad, strlen(aad), &sealed, &sealed_len) == 0)
                hex = jw_bytea_hex(sealed, sealed_len);
            free(sealed); /* ciphertext */
            w->sealed = hex != NULL;
        }
    }
    snprintf(max_open, sizeof(max_open), "%d", MAX_OPEN_ROWS);
    snprintf(max_user, sizeof(max_user), "%d", MAX_OPEN_PER_USER);
    snprintf(expiry, sizeof(expiry), "%d", ib->expiry_s);
    {
        const char *params[9] = {w->id, otp ? "otp" : "cancel", w->target, user,
                                 hex,   ib->cfg->node_id,       max_open,  max_user,
                                 expiry};

        /* Waiting before the row exists: its answer may come back before the insert's. */
        jw_map_put(&ib->waits, w->id, w);
        rc = submit(ib, JW_READ_INBOX_PUT, 9, params);
    }
    free(hex);
    if (rc != 0) {
        snprintf(err, errlen,
                 rc == JW_ELIMIT ? "too many database reads are queued; try again"
                                 : "shutting down");
        jw_map_del(&ib->waits, w->id);
        free(w);
        return rc;
    }
    return 0;
}

int jw_inbox_forward_otp(jw_inbox *ib, const char *otp_request_id, const char *value,
                         const char *user, jw_inbox_fn fn, void *arg, char *err, size_t errlen)
{
    return forward(ib, true, otp_request_id, value, user, fn, arg, err, errlen);
}

int jw_inbox_forward_cancel(jw_inbox *ib, const char *job_id, const char *user, jw_inbox_fn fn,
                            void *arg, char *err, size_t errlen)
{
    return forward(ib, false, job_id, NULL, user, fn, arg, err, errlen);
}

static bool terminal(const char *status)
{
    return status && (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
                      strcmp(status, "cancelled") == 0);
}

/* The insert's answer: waiting now, or why not. */
static void on_put(jw_inbox *ib, waiter *w, jw_read *r)
{
    json_t *doc;
    const char *job_status, *otp_status;

    if (r->status == JW_ENOTFOUND) {
        refuse(w, JW_INBOX_REFUSED, 404, "not_found", 0, w->otp ? "no OTP request %s" : "no job %s",
               w->target);
        return;
    }
    if (r->status != 0) {
        refuse(w, JW_INBOX_DB_ERROR, 503, "unavailable", 1,
               "the database is unavailable; try again");
        return;
    }
    doc = json_loads(r->result, 0, NULL);
    job_status = json_string_value(json_object_get(doc, "job_status"));
    otp_status = json_string_value(json_object_get(doc, "otp_status"));
    if (json_is_true(json_object_get(doc, "queued"))) {
        ib->counts[JW_INBOX_FORWARDED]++;
        jw_log_info("inbox: %s %s forwarded to node %s (row %s)", w->otp ? "OTP for" : "cancel of",
                    w->target,
                    json_string_value(json_object_get(doc, "owner"))
                        ? json_string_value(json_object_get(doc, "owner"))
                        : "(none yet)",
                    w->id);
        if (w->state == W_PUTTING) {
            w->state = W_WAITING;
            jw_timers_arm(ib->timers, &w->timer, jw_now_us() + ib->wait_ms * 1000, wait_expired, w);
        }
    } else if (w->otp && !w->value_ok) {
        refuse(w, JW_INBOX_REFUSED, 400, "invalid_field", 0, "the OTP must be 4 to 10 digits");
    } else if (!w->otp && terminal(job_status)) {
        refuse(w, JW_INBOX_REFUSED, 409, "conflict", 0,
               "job %s is %s; only a running job can be cancelled", w->target, job_status);
    } else if (w->otp && (terminal(job_status) || !otp_status || strcmp(otp_status, "requested"))) {
        refuse(w, JW_INBOX_REFUSED, 409, "conflict", 0,
               "OTP request %s is %s, not waiting for a code", w->target,
               otp_status && strcmp(otp_status, "requested") ? otp_status : "closed");
    } else if (json_is_true(json_object_get(doc, "user_full"))) {
        refuse(w, JW_INBOX_FULL, 429, "rate_limited", 1,
               "at most %d of your commands may wait for other nodes at once; try again",
               MAX_OPEN_PER_USER);
    } else if (json_is_true(json_object_get(doc, "full"))) {
        refuse(w, JW_INBOX_FULL, 503, "unavailable", 1,
               "too many commands wait for other nodes (%d); try again", MAX_OPEN_ROWS);
    } else if (w->otp && !w->sealed) {
        refuse(w, JW_INBOX_NO_KEY, 503, "unavailable", 0,
               "OTP request %s belongs to a job another node runs, and this node cannot forward "
               "a code without --secret-key (every node of a cluster needs the same one)",
               w->target);
    } else {
        refuse(w, JW_INBOX_REFUSED, 409, "conflict", 0, "%s %s changed; try again",
               w->otp ? "OTP request" : "job", w->target);
    }
    json_decref(doc);
}

/* A verdict read (answer or withdraw) came back. */
static void on_verdict(jw_inbox *ib, waiter *w, jw_read *r)
{
    bool withdraw = strcmp(r->params[1], "withdraw") == 0;
    json_t *doc, *verdict;

    if (!withdraw) {
        if (r->status != 0)
            return; /* not answered yet (or read twice): the answer or the wait's end comes */
        doc = json_loads(r->result, 0, NULL);
        deliver(w, json_object_get(doc, "verdict"));
        json_decref(doc);
        return;
    }
    if (r->status == JW_ENOTFOUND || r->status != 0) {
        refuse(w, JW_INBOX_UNKNOWN, 504, "timeout", 0,
               "the job's node took the command but did not answer within %d s; its outcome is "
               "unknown: read the %s",
               ib->wait_s, w->otp ? "OTP request's status (GET /api/jobs/{id})" : "job");
        return;
    }
    doc = json_loads(r->result, 0, NULL);
    verdict = json_object_get(doc, "verdict");
    if (json_is_object(verdict))
        deliver(w, verdict);
    else
        refuse(w, JW_INBOX_NOT_APPLIED, 503, "unavailable", 1,
               "no node took the command within %d s (the job's node may be down or taking "
               "over); it was not applied: try again",
               ib->wait_s);
    json_decref(doc);
}

/* ---- the owner's side ------------------------------------------------------------------ */

static void answer_text(jw_inbox *ib, const char *id, char *text);

/* Writes the verdict of row id and notifies its caller; takes verdict. */
static void answer(jw_inbox *ib, const char *id, json_t *verdict)
{
    char *text = json_dumps(verdict, JSON_COMPACT);

    json_decref(verdict);
    if (!text)
        jw_oom("inbox verdict");
    answer_text(ib, id, text);
}

static void answer_text(jw_inbox *ib, const char *id, char *text)
{
    const char *params[2] = {id, text};

    if (submit(ib, JW_READ_INBOX_ANSWER, 2, params) == 0) {
        free(text);
        return;
    }
    if (ib->nunsent >= MAX_UNSENT) {
        jw_log_warn("inbox: the verdict of row %s is lost (%d unsent); its caller times out", id,
                    MAX_UNSENT);
        free(text);
        return;
    }
    {
        unsent *u = jw_xcalloc(1, sizeof(*u));

        snprintf(u->id, sizeof(u->id), "%s", id);
        u->verdict = text;
        u->next = ib->unsent;
        ib->unsent = u;
        ib->nunsent++;
    }
}

static const char *rc_name(int rc)
{
    switch (rc) {
    case JW_ENOTFOUND: return "not_found";
    case JW_EINVAL: return "invalid";
    case JW_ECONFLICT: return "conflict";
    default: return "unavailable";
    }
}

static json_t *refusal(const char *rc, const char *message)
{
    return json_pack("{s:s, s:s}", "rc", rc, "message", message);
}

static void end_task(task *t)
{
    jw_inbox *ib = t->ib;

    if (t->prev)
        t->prev->next = t->next;
    else
        ib->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    free(t);
}

static void owner_otp_done(void *arg, const jw_otp_result *r)
{
    task *t = arg;
    json_t *otp = json_pack("{s:b, s:i}", "ok", r->ok, "attempts_left", r->attempts_left);

    if (!r->ok) {
        json_object_set_new(otp, "error", json_string(r->error ? r->error : "rejected"));
        json_object_set_new(otp, "message", json_string(r->message ? r->message : ""));
    }
    answer(t->ib, t->id, json_pack("{s:s, s:o}", "rc", "ok", "otp", otp));
    end_task(t);
}

static void owner_cancel_done(void *arg, int status, const char *job_id)
{
    task *t = arg;
    json_t *snap = status == 0 ? jw_engine_snapshot(t->ib->engine, job_id) : NULL;

    if (snap) {
        json_object_set_new(snap, "job_id", json_string(job_id));
        answer(t->ib, t->id, json_pack("{s:s, s:o}", "rc", "ok", "snapshot", snap));
    } else {
        answer(t->ib, t->id,
               refusal("unavailable", status ? "the change could not be stored; try again"
                                             : "the job left the node that cancelled it"));
    }
    end_task(t);
}

/* Opens a taken row's code; NULL (and nothing to free) when it does not open here. */
static char *open_code(jw_inbox *ib, const char *row_id, const char *target, const char *hex,
                       size_t *len)
{
    uint8_t *sealed = NULL, *plain = NULL;
    size_t sealed_len = 0;
    char aad[128];
    int rc;

    if (!ib->has_key || !hex || jw_bytea_parse(hex, &sealed, &sealed_len) != 0)
        return NULL;
    otp_aad(aad, sizeof(aad), row_id, target);
    rc = jw_open(ib->key, sealed, sealed_len, aad, strlen(aad), &plain, len);
    free(sealed);
    return rc == 0 ? (char *)plain : NULL;
}

/* A row is ours: hand its command to the engine. */
static void apply(jw_inbox *ib, const json_t *row)
{
    const char *id = json_string_value(json_object_get(row, "id"));
    const char *kind = json_string_value(json_object_get(row, "kind"));
    const char *target = json_string_value(json_object_get(row, "target"));
    const char *job = json_string_value(json_object_get(row, "job_id"));
    const char *user = json_string_value(json_object_get(row, "user_id"));
    char err[256];
    task *t;
    int rc;

    if (!id || !kind || !target || !job || !user)
        return;
    ib->counts[JW_INBOX_TAKEN]++;
    if (!jw_engine_job_driven(ib->engine, job)) {
        answer(ib, id,
               refusal("unavailable", "the job moved to another node as the command "
                                      "reached it; try again"));
        return;
    }
    t = jw_xcalloc(1, sizeof(*t));
    t->ib = ib;
    snprintf(t->id, sizeof(t->id), "%s", id);
    snprintf(t->job, sizeof(t->job), "%s", job);
    t->next = ib->tasks;
    if (ib->tasks)
        ib->tasks->prev = t;
    ib->tasks = t;
    if (strcmp(kind, "otp") == 0) {
        size_t len = 0;
        char *code =
            open_code(ib, id, target, json_string_value(json_object_get(row, "sealed")), &len);

        if (!code) {
            answer(ib, id,
                   refusal("unavailable", "the node running the job cannot open the "
                                          "code: every node of a cluster needs the "
                                          "same --secret-key"));
            end_task(t);
            return;
        }
        rc = jw_engine_submit_otp(ib->engine, target, code, user, owner_otp_done, t, err,
                                  sizeof(err));
        jw_secure_free(code, len);
    } else {
        rc = jw_engine_cancel(ib->engine, job, owner_cancel_done, t, err, sizeof(err));
    }
    jw_log_info("inbox: took %s row %s for job %s: %s", kind, id, job,
                rc == 0 ? "handed to the engine" : "refused");
    if (rc != 0) {
        answer(ib, id, refusal(rc_name(rc), err));
        end_task(t);
    }
}

static void take(jw_inbox *ib, const char *id, const char *job)
{
    int64_t epoch = jw_engine_job_lease_epoch(ib->engine, job);
    char epoch_s[24], age_s[16];
    char *key;

    if (jw_map_get(&ib->taking, id))
        return; /* being taken */
    if (epoch < 0) {
        ib->rescan = true; /* not driven here (yet: adopted later, or never) */
        return;
    }
    snprintf(epoch_s, sizeof(epoch_s), "%" PRId64, epoch);
    snprintf(age_s, sizeof(age_s), "%d", ib->wait_s);
    {
        const char *params[4] = {id, ib->cfg->node_id, epoch_s, age_s};

        if (submit(ib, JW_READ_INBOX_TAKE, 4, params) != 0) {
            ib->rescan = true;
            return;
        }
    }
    key = jw_xstrdup(id);
    jw_map_put(&ib->taking, key, key);
}

static void on_take(jw_inbox *ib, jw_read *r)
{
    char *key = jw_map_del(&ib->taking, r->params[0]);
    json_t *row;

    free(key);
    if (r->status == JW_ENOTFOUND)
        return; /* taken already, withdrawn, or not ours at this epoch */
    if (r->status != 0) {
        ib->rescan = true; /* PostgreSQL away */
        return;
    }
    row = json_loads(r->result, 0, NULL);
    if (row)
        apply(ib, row);
    /* The sealed code, as text, leaves memory with the row and the read. */
    json_decref(row);
    if (r->result)
        OPENSSL_cleanse(r->result, strlen(r->result));
}

static void on_scan(jw_inbox *ib, jw_read *r)
{
    json_t *rows, *it;
    size_t i;

    ib->scanning = false;
    if (r->status != 0) {
        ib->rescan = true;
        return;
    }
    rows = json_loads(r->result, 0, NULL);
    if (json_array_size(rows) >= SCAN_LIMIT)
        ib->rescan = true; /* more than one scan's worth */
    json_array_foreach(rows, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "id"));
        const char *job = json_string_value(json_object_get(it, "job_id"));

        if (!id || !job)
            continue;
        if (!jw_engine_job_driven(ib->engine, job)) {
            ib->rescan = true; /* ours in PostgreSQL, not (yet) in the engine */
            continue;
        }
        if (json_is_true(json_object_get(it, "stale"))) {
            ib->counts[JW_INBOX_OWNER_CHANGED]++;
            jw_log_info("inbox: row %s of job %s was taken by a node that stopped before it "
                        "answered; answering for it",
                        id, job);
            answer(ib, id,
                   refusal("unavailable", "the node running the job stopped before it judged "
                                          "the command; the job now runs on another node: "
                                          "try again (or read the job)"));
        } else {
            take(ib, id, job);
        }
    }
    json_decref(rows);
}

static void scan(jw_inbox *ib)
{
    char limit[16], age[16];
    const char *params[3] = {ib->cfg->node_id, limit, age};

    if (ib->scanning)
        return;
    snprintf(limit, sizeof(limit), "%d", SCAN_LIMIT);
    snprintf(age, sizeof(age), "%d", ib->wait_s);
    ib->scanning = submit(ib, JW_READ_INBOX_SCAN, 3, params) == 0;
    if (!ib->scanning)
        ib->rescan = true;
}

static void tick(jw_timer *tm, void *arg)
{
    jw_inbox *ib = arg;
    unsent *u = ib->unsent;

    (void)tm;
    ib->unsent = NULL;
    ib->nunsent = 0;
    while (u) {
        unsent *next = u->next;

        answer_text(ib, u->id, u->verdict);
        free(u);
        u = next;
    }
    /* Idle, this costs nothing: notifications, takeovers and reconnects scan; a tick
     * only scans again when a row could not be taken. */
    if (ib->rescan) {
        ib->rescan = false;
        scan(ib);
    }
    jw_timers_arm(ib->timers, &ib->tick, jw_now_us() + SCAN_PERIOD_US, tick, ib);
}

/* ---- notices and reads ----------------------------------------------------------------- */

/* "take <id> <job> <node>" or "answer <id> <node>": the node is the rest, spaces and all. */
void jw_inbox_on_notice(jw_inbox *ib, const char *payload)
{
    char id[JW_UUID_LEN + 1], job[JW_UUID_LEN + 1];
    const char *p = payload;
    bool is_take;

    if (!ib || !p)
        return;
    if (strncmp(p, "take ", 5) == 0)
        is_take = true, p += 5;
    else if (strncmp(p, "answer ", 7) == 0)
        is_take = false, p += 7;
    else
        return;
    if (strlen(p) < JW_UUID_LEN + 1 || p[JW_UUID_LEN] != ' ')
        return;
    snprintf(id, sizeof(id), "%.*s", JW_UUID_LEN, p);
    p += JW_UUID_LEN + 1;
    if (is_take) {
        if (strlen(p) < JW_UUID_LEN + 1 || p[JW_UUID_LEN] != ' ')
            return;
        snprintf(job, sizeof(job), "%.*s", JW_UUID_LEN, p);
        p += JW_UUID_LEN + 1;
    }
    if (strcmp(p, ib->cfg->node_id) != 0 || !jw_uuid_valid(id))
        return;
    if (is_take) {
        if (jw_uuid_valid(job))
            take(ib, id, job);
    } else {
        waiter *w = jw_map_get(&ib->waits, id);
        const char *params[2] = {id, "answer"};

        if (w && w->state != W_WITHDRAWING)
            (void)submit(ib, JW_READ_INBOX_VERDICT, 2, params); /* else: the wait's end reads it */
    }
}

void jw_inbox_catch_up(jw_inbox *ib)
{
    const char *k;
    void *v;
    int sent = 0;

    if (!ib)
        return;
    scan(ib);
    for (size_t it = 0; sent < CATCH_UP_VERDICTS && jw_map_next(&ib->waits, &it, &k, &v);) {
        waiter *w = v;
        const char *params[2] = {w->id, "answer"};

        if (w->state == W_WAITING && submit(ib, JW_READ_INBOX_VERDICT, 2, params) == 0)
            sent++;
    }
}

static void on_read(jw_read *r, void *arg)
{
    jw_inbox *ib = arg;
    waiter *w = r->nparams ? jw_map_get(&ib->waits, r->params[0]) : NULL;

    switch (r->kind) {
    case JW_READ_INBOX_PUT:
        if (w)
            on_put(ib, w, r);
        break;
    case JW_READ_INBOX_VERDICT:
        if (w)
            on_verdict(ib, w, r);
        break;
    case JW_READ_INBOX_TAKE: on_take(ib, r); break;
    case JW_READ_INBOX_SCAN: on_scan(ib, r); break;
    case JW_READ_INBOX_ANSWER:
        if (r->status != 0 && r->status != JW_ENOTFOUND)
            jw_log_warn("inbox: the verdict of row %s was not written (%s); its caller times out",
                        r->params[0], jw_strerror(r->status));
        break;
    default: break;
    }
    jw_read_free(r);
}

/* ---- life cycle --------------------------------------------------------------------------- */

jw_inbox *jw_inbox_new(const jw_config *cfg, jw_engine *engine, jw_store *store, jw_timers *timers)
{
    jw_inbox *ib = jw_xcalloc(1, sizeof(*ib));

    ib->cfg = cfg;
    ib->engine = engine;
    ib->store = store;
    ib->timers = timers;
    if (cfg->has_secret_key) {
        unsigned int klen = 0;

        /* A key for this purpose only, never the secret key itself. */
        HMAC(EVP_sha256(), cfg->secret_key, sizeof(cfg->secret_key),
             (const unsigned char *)"jobwire inbox otp", 17, ib->key, &klen);
        ib->has_key = klen == sizeof(ib->key);
    }
    /* Long enough for a takeover (the TTL, a scan) and the provider's verdict. */
    ib->wait_ms = (int64_t)cfg->node_ttl_s * 1000 + 2 * SCAN_PERIOD_US / 1000 +
                  cfg->provider_timeout_ms + 5000;
    ib->wait_s = (int)((ib->wait_ms + 999) / 1000);
    ib->expiry_s = 2 * ib->wait_s + 60;
    jw_map_init(&ib->waits);
    jw_map_init(&ib->taking);
    jw_timers_arm(timers, &ib->tick, jw_now_us() + SCAN_PERIOD_US, tick, ib);
    return ib;
}

int64_t jw_inbox_wait_ms(const jw_inbox *ib)
{
    return ib->wait_ms;
}

void jw_inbox_counts(const jw_inbox *ib, uint64_t out[JW_INBOX__N])
{
    for (int i = 0; i < JW_INBOX__N; i++)
        out[i] = ib ? ib->counts[i] : 0;
}

void jw_inbox_free(jw_inbox *ib)
{
    const char *k;
    void *v;

    if (!ib)
        return;
    jw_timers_cancel(ib->timers, &ib->tick);
    for (size_t it = 0; jw_map_next(&ib->waits, &it, &k, &v);) {
        waiter *w = v;

        jw_timers_cancel(ib->timers, &w->timer);
        free(w);
    }
    for (size_t it = 0; jw_map_next(&ib->taking, &it, &k, &v);)
        free(v);
    jw_map_release(&ib->waits);
    jw_map_release(&ib->taking);
    while (ib->tasks)
        end_task(ib->tasks);
    while (ib->unsent) {
        unsent *u = ib->unsent;

        ib->unsent = u->next;
        free(u->verdict);
        free(u);
    }
    OPENSSL_cleanse(ib->key, sizeof(ib->key));
    free(ib);
}
