/*
 * engine.c - jobs, steps and OTP requests as state machines (see jw_engine.h).
 *
 * Every change goes through job_set/step_set/otp_set, which check the
 * transition against a table and emit the row as a delta into the job's open
 * batch. At the end of each event (command, reply, timer) flush() submits the
 * open batches; what must wait for durability (publishing, provider calls,
 * answers to callers) rides on the batch as actions and runs in on_commit.
 */
#include "jw_engine.h"

#include "jw_buf.h"
#include "jw_crypto.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_map.h"
#include "workflow.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- states and their transitions ---------------------------------------- */

#define B(x) (1u << (x))

typedef enum {
    JOB_INITIATED,
    JOB_VALIDATING,
    JOB_PROCESSING,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_CANCELLED,
    JOB__N
} job_status;

static const char *const job_names[JOB__N] = {"initiated", "validating", "processing",
                                              "completed", "failed",     "cancelled"};

static const unsigned job_moves[JOB__N] = {
    [JOB_INITIATED] = B(JOB_VALIDATING) | B(JOB_FAILED) | B(JOB_CANCELLED),
    [JOB_VALIDATING] = B(JOB_PROCESSING) | B(JOB_FAILED) | B(JOB_CANCELLED),
    [JOB_PROCESSING] = B(JOB_COMPLETED) | B(JOB_FAILED) | B(JOB_CANCELLED),
    [JOB_FAILED] = B(JOB_VALIDATING) | B(JOB_PROCESSING), /* retry */
};

typedef enum {
    STEP_PENDING,
    STEP_IN_PROGRESS,
    STEP_WAITING_OTP,
    STEP_RETRYING,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_CANCELLED,
    STEP__N
} step_status;

static const char *const step_names[STEP__N] = {
    "pending", "in_progress", "waiting_otp", "retrying", "completed", "failed", "cancelled"};

static const unsigned step_moves[STEP__N] = {
    [STEP_PENDING] = B(STEP_IN_PROGRESS) | B(STEP_CANCELLED),
    [STEP_IN_PROGRESS] = B(STEP_WAITING_OTP) | B(STEP_RETRYING) | B(STEP_COMPLETED) |
                         B(STEP_FAILED) | B(STEP_CANCELLED),
    [STEP_WAITING_OTP] =
        B(STEP_IN_PROGRESS) | B(STEP_RETRYING) | B(STEP_FAILED) | B(STEP_CANCELLED),
    [STEP_RETRYING] = B(STEP_IN_PROGRESS) | B(STEP_CANCELLED),
    [STEP_FAILED] = B(STEP_PENDING), /* job retry */
    [STEP_CANCELLED] = B(STEP_PENDING),
};

typedef enum {
    OTP_REQUESTED,
    OTP_RECEIVED,
    OTP_VERIFIED,
    OTP_FAILED,
    OTP_EXPIRED,
    OTP__N
} otp_status;

static const char *const otp_names[OTP__N] = {"requested", "received", "verified", "failed",
                                              "expired"};

static const unsigned otp_moves[OTP__N] = {
    [OTP_REQUESTED] = B(OTP_RECEIVED) | B(OTP_FAILED) | B(OTP_EXPIRED),
    /* back to requested: a wrong code, or a restart lost the typed value */
    [OTP_RECEIVED] = B(OTP_VERIFIED) | B(OTP_REQUESTED) | B(OTP_FAILED) | B(OTP_EXPIRED),
};

static int parse_name(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (s && strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* ---- objects ---------------------------------------------------------------- */

typedef struct job job;
typedef struct step step;
typedef struct otp otp;

struct otp {
    job *job;
    step *step;
    char id[JW_UUID_LEN + 1];
    char type[32];
    char phone[32];
    otp_status status;
    int attempts, max_attempts;
    int64_t requested_at, received_at, verified_at, timeout_at;
    jw_timer timer;
    jw_otp_result_fn fn; /* the submitter waiting for the verdict */
    void *fn_arg;
};

struct step {
    job *job;
    const jw_step_def *def;
    char id[JW_UUID_LEN + 1];
    int unit; /* 0: validation; i: transaction i */
    step_status status;
    int attempt;
    int64_t created_at, started_at, completed_at, timeout_at, next_retry_at, updated_at;
    json_t *data;
    char *error;
    char key[JW_IDEMPOTENCY_KEY_MAX];
    /* External step: a call may have had its effect and we do not know. */
    bool outcome_unknown;
    jw_timer timer; /* retry or poll */
    uint64_t call_id;
    char call_key[24];
    otp *otp; /* the step's current OTP request */
    /* For the histograms, on the engine's clock: when this run of the step
     * started (0: not running), and when the outstanding call was issued. */
    int64_t run_started_us, call_started_us;
};

typedef struct action action;
struct action {
    action *next;
    enum { ACT_CALL, ACT_DONE, ACT_OTP } kind;
    step *step;
    int attempt;
    char *otp; /* ACT_CALL: the typed code, wiped after hand-over */
    jw_engine_done_fn done;
    void *arg;
    /* ACT_OTP: a verdict, told once the OTP row saying it committed. */
    jw_otp_result_fn otp_fn;
    jw_otp_result result; /* error and message point at string constants or msg */
    char msg[256];
};

typedef struct view_row {
    jw_table table;
    jw_delta *d; /* the latest committed version of the row */
} view_row;

struct job {
    jw_engine *e;
    char id[JW_UUID_LEN + 1];
    char user[JW_UUID_LEN + 1];
    job_status status;
    const char *phase;
    int progress, completed_tx, count, retry_count;
    int64_t amount;
    int64_t created_at, updated_at, completed_at;
    char *error;
    json_t *metadata;
    bool cancel_requested;
    int unit;
    step **steps;
    size_t nsteps, capsteps;
    otp **otps;
    size_t notps, capotps;
    json_t *sessions; /* provider sessions from this job's logins */

    int64_t seq;           /* last seq emitted */
    int64_t committed_seq; /* last seq known durable */
    jw_batch *open;        /* this event's deltas */
    action *acts, *acts_tail;
    bool row_dirty; /* the job row changed in this event */
    bool queued;    /* on the engine's dirty list */
    job *next_dirty;
    int inflight;
    bool halted; /* a batch was refused: stop driving the job */

    view_row *view;
    size_t nview, capview;

    jw_timer evict; /* finished: leaves memory when it fires */
};

/* A user's provider session of one type, reusable across jobs. */
typedef struct user_session {
    char key[JW_UUID_LEN + 24]; /* "<user>/<type>", the map key */
    char id[JW_UUID_LEN + 1];   /* its auth_sessions row */
    char user[JW_UUID_LEN + 1];
    char type[16];    /* gyftr, amazon */
    json_t *session;  /* what the provider returned: memory only */
    char *sealed_hex; /* the same, sealed, as bytea text; NULL without a key */
    int64_t created_at, expires_at, last_used_at;
} user_session;

/* How many running (not finished) jobs one user has; dropped at 0. */
typedef struct user_live {
    char user[JW_UUID_LEN + 1];
    int n;
} user_live;

typedef struct commit_ctx {
    job *job;
    action *acts;
} commit_ctx;

struct jw_engine {
    jw_engine_config cfg;
    jw_engine_ports p;
    jw_map jobs, otps, calls;
    jw_map sessions; /* "<user>/<type>" -> user_session */
    jw_map live;     /* user id -> user_live: users with running jobs */
    job *dirty;
    uint64_t next_call;
    jw_engine_stats stats;
    jw_engine_hists hists;
};

/* ---- histograms ------------------------------------------------------------ */

const char *const jw_step_outcome_names[JW_STEP_OUTCOME__N] = {
    [JW_STEP_OUTCOME_COMPLETED] = "completed",
    [JW_STEP_OUTCOME_FAILED] = "failed",
    [JW_STEP_OUTCOME_CANCELLED] = "cancelled",
};

const char *const jw_call_result_names[JW_CALL_RESULT__N] = {
    [JW_CALL_OK] = "ok",           [JW_CALL_OTP_REQUIRED] = "otp_required",
    [JW_CALL_PENDING] = "pending", [JW_CALL_RETRYABLE] = "retryable",
    [JW_CALL_FATAL] = "fatal",     [JW_CALL_TIMEOUT] = "timeout",
};

/* Microseconds. A step waits on people (OTPs, minutes) and banks: 1 ms .. 10 min. */
static const jw_hist_spec step_duration_spec = {
    .n = 18,
    .le = {1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
           10000000, 25000000, 60000000, 120000000, 300000000, 600000000},
    .decimals = 6,
};

/* Microseconds. One HTTP round trip to a provider, up to its timeout: 1 ms .. 60 s. */
static const jw_hist_spec call_duration_spec = {
    .n = 15,
    .le = {1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
           10000000, 30000000, 60000000},
    .decimals = 6,
};

static uint64_t elapsed_us(int64_t from, int64_t to)
{
    return to > from ? (uint64_t)(to - from) : 0; /* the wall clock may step back */
}

static void advance(job *j);
static void flush(jw_engine *e);
static void arm_eviction(job *j);
static void validation_progress(job *j);
static void step_attempt_failed(step *s, bool retryable, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int64_t now_us(jw_engine *e)
{
    return e->p.now_us(e->p.ctx);
}

static bool job_terminal(const job *j)
{
    return j->status == JOB_COMPLETED || j->status == JOB_FAILED || j->status == JOB_CANCELLED;
}

static bool step_terminal(const step *s)
{
    return s->status == STEP_COMPLETED || s->status == STEP_FAILED || s->status == STEP_CANCELLED;
}

/* ---- rows ------------------------------------------------------------------- */

static json_t *ts_json(int64_t us)
{
    char buf[40];

    if (!us)
        return json_null();
    jw_format_ts(us, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *job_row(const job *j)
{
    json_t *r = json_object();

    json_object_set_new(r, "id", json_string(j->id));
    json_object_set_new(r, "user_id", json_string(j->user));
    json_object_set_new(r, "job_type", json_string("payment_automation"));
    json_object_set_new(r, "status", json_string(job_names[j->status]));
    json_object_set_new(r, "current_phase", str_or_null(j->phase));
    json_object_set_new(r, "progress_percentage", json_integer(j->progress));
    json_object_set_new(r, "total_transactions", json_integer(j->count));
    json_object_set_new(r, "completed_transactions", json_integer(j->completed_tx));
    json_object_set_new(r, "transaction_amount", json_integer(j->amount));
    json_object_set_new(r, "transaction_count", json_integer(j->count));
    json_object_set_new(r, "created_at", ts_json(j->created_at));
    json_object_set_new(r, "updated_at", ts_json(j->updated_at));
    json_object_set_new(r, "completed_at", ts_json(j->completed_at));
    json_object_set_new(r, "error_message", str_or_null(j->error));
    json_object_set_new(r, "retry_count", json_integer(j->retry_count));
    json_object_set_new(r, "metadata", json_deep_copy(j->metadata));
    json_object_set_new(r, "cancel_requested", json_boolean(j->cancel_requested));
    return r;
}

static json_t *step_row(const step *s)
{
    json_t *r = json_object();

    json_object_set_new(r, "id", json_string(s->id));
    json_object_set_new(r, "job_run_id", json_string(s->job->id));
    json_object_set_new(r, "step_name", json_string(s->def->name));
    json_object_set_new(r, "step_type", json_string(s->def->type));
    json_object_set_new(r, "status", json_string(step_names[s->status]));
    json_object_set_new(r, "transaction_index", s->unit ? json_integer(s->unit) : json_null());
    json_object_set_new(r, "started_at", ts_json(s->started_at));
    json_object_set_new(r, "completed_at", ts_json(s->completed_at));
    json_object_set_new(r, "timeout_at", ts_json(s->timeout_at));
    json_object_set_new(r, "step_data", json_deep_copy(s->data));
    json_object_set_new(r, "error_message", str_or_null(s->error));
    json_object_set_new(r, "created_at", ts_json(s->created_at));
    json_object_set_new(r, "attempt", json_integer(s->attempt));
    json_object_set_new(r, "idempotency_key", str_or_null(s->key));
    json_object_set_new(r, "next_retry_at", ts_json(s->next_retry_at));
    json_object_set_new(r, "updated_at", ts_json(s->updated_at));
    json_object_set_new(r, "outcome_unknown", json_boolean(s->outcome_unknown));
    return r;
}

static json_t *otp_row(const otp *o)
{
    json_t *r = json_object();

    json_object_set_new(r, "id", json_string(o->id));
    json_object_set_new(r, "job_run_id", json_string(o->job->id));
    json_object_set_new(r, "job_step_id", json_string(o->step->id));
    json_object_set_new(r, "otp_type", json_string(o->type));
    json_object_set_new(r, "phone_number", str_or_null(o->phone));
    json_object_set_new(r, "requested_at", ts_json(o->requested_at));
    json_object_set_new(r, "received_at", ts_json(o->received_at));
    json_object_set_new(r, "verified_at", ts_json(o->verified_at));
    json_object_set_new(r, "timeout_at", ts_json(o->timeout_at));
    json_object_set_new(r, "attempts_count", json_integer(o->attempts));
    json_object_set_new(r, "max_attempts", json_integer(o->max_attempts));
    json_object_set_new(r, "status", json_string(otp_names[o->status]));
    return r;
}

/* ---- emitting deltas and flushing batches -------------------------------- */

static void mark_dirty(job *j)
{
    if (!j->queued) {
        j->queued = true;
        j->next_dirty = j->e->dirty;
        j->e->dirty = j;
    }
}

/*
 * Appends the change of one row to the job's open batch. Values from outside
 * (metadata, provider data and messages) are bounded where they enter, so a
 * row that cannot become a delta is a bug; it stops this job, never the
 * process: the job is halted (nothing more of it is driven or committed; a
 * restart resumes it from what was committed), and the caller's change is
 * refused where it can still be (jw_engine_create_job).
 */
static void emit(job *j, jw_table t, const char *row_id, jw_op op, json_t *row)
{
    char *text = json_dumps(row, JSON_COMPACT);
    jw_delta *d;
    int err = 0;

    json_decref(row);
    if (!text)
        jw_oom("row JSON");
    d = jw_delta_new(j->id, row_id, j->seq + 1, now_us(j->e), t, op, text, strlen(text), &err);
    free(text);
    if (!d) {
        j->e->stats.rows_refused++;
        if (!j->halted)
            jw_log_error("engine: cannot build a delta job=%s table=%s: %s; job halted until "
                         "restart",
                         j->id, jw_table_name(t), jw_strerror(err));
        j->halted = true;
        return;
    }
    j->seq++;
    if (!j->open)
        j->open = jw_batch_new();
    jw_batch_add(j->open, d);
    j->e->stats.deltas++;
    mark_dirty(j);
}

static void add_action(job *j, action *a)
{
    a->next = NULL;
    if (j->acts_tail)
        j->acts_tail->next = a;
    else
        j->acts = a;
    j->acts_tail = a;
    mark_dirty(j);
}

static void queue_call(step *s, const char *otp_value)
{
    action *a = jw_xcalloc(1, sizeof(*a));

    a->kind = ACT_CALL;
    a->step = s;
    a->attempt = s->attempt;
    a->otp = otp_value ? jw_xstrdup(otp_value) : NULL;
    add_action(s->job, a);
}

static void queue_done(job *j, jw_engine_done_fn done, void *arg)
{
    action *a;

    if (!done)
        return;
    a = jw_xcalloc(1, sizeof(*a));
    a->kind = ACT_DONE;
    a->done = done;
    a->arg = arg;
    add_action(j, a);
}

static void free_action(action *a)
{
    if (a->otp) {
        OPENSSL_cleanse(a->otp, strlen(a->otp));
        free(a->otp);
    }
    free(a);
}

static void touch_job(job *j)
{
    j->updated_at = now_us(j->e);
    j->row_dirty = true;
    mark_dirty(j);
}

static void run_actions(job *j, action *acts, int status);

/* Submits every job's open batch, with the actions that wait for it. */
static void flush(jw_engine *e)
{
    while (e->dirty) {
        job *j = e->dirty;
        commit_ctx *ctx;

        e->dirty = j->next_dirty;
        /* One job row per event however many fields changed; emitted while
         * still marked queued so emit() does not queue the job again. */
        if (j->row_dirty) {
            j->row_dirty = false;
            emit(j, JW_TABLE_JOB_RUNS, j->id, JW_OP_UPDATE, job_row(j));
        }
        j->queued = false;
        if (!j->open) {
            /* Actions with nothing to wait for (cannot happen today). */
            action *acts = j->acts;

            j->acts = j->acts_tail = NULL;
            run_actions(j, acts, 0);
            continue;
        }
        ctx = jw_xmalloc(sizeof(*ctx));
        ctx->job = j;
        ctx->acts = j->acts;
        j->acts = j->acts_tail = NULL;
        j->open->user = ctx;
        j->inflight++;
        e->stats.batches_inflight++;
        e->p.submit(e->p.ctx, j->open);
        j->open = NULL;
    }
}

/* ---- state changes --------------------------------------------------------- */

/* A job of j's user starts (+1) or stops (-1) running. */
static void live_add(job *j, int d)
{
    jw_engine *e = j->e;
    user_live *u = jw_map_get(&e->live, j->user);

    e->stats.jobs_live += (uint64_t)(int64_t)d;
    if (!u) {
        u = jw_xcalloc(1, sizeof(*u));
        snprintf(u->user, sizeof(u->user), "%s", j->user);
        jw_map_put(&e->live, u->user, u);
    }
    u->n += d;
    if (u->n <= 0) {
        jw_map_del(&e->live, u->user);
        free(u);
    }
}

int jw_engine_user_live_jobs(jw_engine *e, const char *user_id)
{
    char lower[JW_UUID_LEN + 1];
    user_live *u;

    snprintf(lower, sizeof(lower), "%s", user_id ? user_id : "");
    for (char *c = lower; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'F' ? *c + ('a' - 'A') : *c);
    u = jw_map_get(&e->live, lower);
    return u ? u->n : 0;
}

static bool job_set(job *j, job_status to)
{
    if (j->status != to && !(job_moves[j->status] & B(to))) {
        jw_log_error("engine: illegal job transition %s -> %s job=%s", job_names[j->status],
                     job_names[to], j->id);
        return false;
    }
    bool was_done = job_terminal(j);

    j->status = to;
    if (!was_done && job_terminal(j)) {
        live_add(j, -1);
        j->e->stats.jobs_finished++;
        arm_eviction(j);
    } else if (was_done && !job_terminal(j)) {
        live_add(j, +1); /* a retry */
        jw_timers_cancel(j->e->p.timers, &j->evict);
    }
    touch_job(j);
    return true;
}

static bool step_set(step *s, step_status to)
{
    int64_t now = now_us(s->job->e);

    if (s->status != to && !(step_moves[s->status] & B(to))) {
        jw_log_error("engine: illegal step transition %s -> %s job=%s step=%s",
                     step_names[s->status], step_names[to], s->job->id, s->def->name);
        return false;
    }
    /* A run starts when the step leaves pending; retries and OTP waits are
     * part of it. */
    if (to == STEP_IN_PROGRESS && (s->status == STEP_PENDING || !s->run_started_us))
        s->run_started_us = now;
    s->status = to;
    s->updated_at = now;
    if (to == STEP_IN_PROGRESS && !s->started_at)
        s->started_at = now;
    if (to == STEP_COMPLETED || to == STEP_FAILED || to == STEP_CANCELLED) {
        s->completed_at = now;
        if (s->run_started_us) {
            jw_step_outcome oc = to == STEP_COMPLETED ? JW_STEP_OUTCOME_COMPLETED
                                 : to == STEP_FAILED  ? JW_STEP_OUTCOME_FAILED
                                                      : JW_STEP_OUTCOME_CANCELLED;

            jw_hist_observe(&s->job->e->hists.step_duration[jw_step_def_ordinal(s->def)][oc],
                            elapsed_us(s->run_started_us, now));
            s->run_started_us = 0;
        }
    }
    if (to != STEP_RETRYING)
        s->next_retry_at = 0;
    emit(s->job, JW_TABLE_JOB_STEPS, s->id, JW_OP_UPDATE, step_row(s));
    return true;
}

static bool otp_set(otp *o, otp_status to)
{
    int64_t now = now_us(o->job->e);

    if (o->status != to && !(otp_moves[o->status] & B(to))) {
        jw_log_error("engine: illegal otp transition %s -> %s job=%s otp=%s", otp_names[o->status],
                     otp_names[to], o->job->id, o->id);
        return false;
    }
    if (o->status != to && to == OTP_VERIFIED)
        o->job->e->stats.otp_verified++;
    if (o->status != to && to == OTP_EXPIRED)
        o->job->e->stats.otp_expired++;
    o->status = to;
    if (to == OTP_RECEIVED)
        o->received_at = now;
    if (to == OTP_VERIFIED)
        o->verified_at = now;
    if (to != OTP_REQUESTED && to != OTP_RECEIVED)
        jw_timers_cancel(o->job->e->p.timers, &o->timer);
    emit(o->job, JW_TABLE_OTP_REQUESTS, o->id, JW_OP_UPDATE, otp_row(o));
    return true;
}

static void set_error(char **slot, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void set_error(char **slot, const char *fmt, va_list ap)
{
    char buf[512];

    vsnprintf(buf, sizeof(buf), fmt, ap);
    free(*slot);
    *slot = jw_xstrdup(buf);
}

static void job_error(job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_error(job *j, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    set_error(&j->error, fmt, ap);
    va_end(ap);
    touch_job(j);
}

/* Answers the OTP's waiting submitter, if any. */
/*
 * Answers the OTP's waiting submitter, if any - after the batch holding the
 * OTP row's new state commits (rule 3: nobody is told "verified" before it is
 * durable).
 */
static void otp_answer(otp *o, bool ok, const char *error, const char *message)
{
    action *a;

    if (!o->fn)
        return;
    a = jw_xcalloc(1, sizeof(*a));
    a->kind = ACT_OTP;
    a->otp_fn = o->fn;
    a->arg = o->fn_arg;
    o->fn = NULL;
    snprintf(a->msg, sizeof(a->msg), "%s", message ? message : "");
    a->result.ok = ok;
    a->result.error = error;
    a->result.message = message ? a->msg : NULL;
    a->result.attempts_left = o->max_attempts - o->attempts;
    if (a->result.attempts_left < 0)
        a->result.attempts_left = 0;
    add_action(o->job, a);
}

/* ---- login sessions ------------------------------------------------------------ */

static int64_t parse_ts(const json_t *v);

/* gyftr_login -> "gyftr" */
static void login_type(const jw_step_def *def, char *out, size_t n)
{
    const char *us = strchr(def->name, '_');

    snprintf(out, n, "%.*s", (int)(us ? us - def->name : 0), def->name);
}

static user_session *find_session(jw_engine *e, const char *user, const char *type)
{
    char key[JW_UUID_LEN + 24];

    snprintf(key, sizeof(key), "%s/%s", user, type);
    return jw_map_get(&e->sessions, key);
}

static void aad_of(const user_session *us, char *aad, size_t n)
{
    /* Binds the sealed token to its row and owner: it cannot be moved. */
    snprintf(aad, n, "auth_sessions/%s/%s/%s", us->id, us->user, us->type);
}

static json_t *session_row(const user_session *us)
{
    json_t *r = json_object();

    json_object_set_new(r, "id", json_string(us->id));
    json_object_set_new(r, "user_id", json_string(us->user));
    json_object_set_new(r, "session_type", json_string(us->type));
    json_object_set_new(r, "auth_token_enc", str_or_null(us->sealed_hex));
    json_object_set_new(r, "browser_context_id", json_null());
    json_object_set_new(r, "session_data", json_object());
    json_object_set_new(r, "created_at", ts_json(us->created_at));
    json_object_set_new(r, "expires_at", ts_json(us->expires_at));
    json_object_set_new(r, "last_used_at", ts_json(us->last_used_at));
    json_object_set_new(r, "is_active", json_true());
    return r;
}

/* auth_sessions belong to a user, not a job: a quiet write, not journaled. */
static void emit_session(job *j, const user_session *us)
{
    json_t *row = session_row(us);
    char *text = json_dumps(row, JSON_COMPACT);
    jw_delta *d;

    json_decref(row);
    if (!text)
        jw_oom("session row");
    d = jw_delta_new(j->id, us->id, 0, now_us(j->e), JW_TABLE_AUTH_SESSIONS, JW_OP_UPDATE, text,
                     strlen(text), NULL);
    free(text);
    if (!d)
        return;
    if (!j->open)
        j->open = jw_batch_new();
    jw_batch_add(j->open, d);
    mark_dirty(j);
}

static char *seal_session(jw_engine *e, const user_session *us)
{
    char aad[160], *plain, *hex = NULL;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;

    if (!e->cfg.session_key)
        return NULL;
    plain = json_dumps(us->session, JSON_COMPACT);
    if (!plain)
        jw_oom("session");
    aad_of(us, aad, sizeof(aad));
    if (jw_seal(e->cfg.session_key, plain, strlen(plain), aad, strlen(aad), &sealed, &sealed_len) ==
        0)
        hex = jw_bytea_hex(sealed, sealed_len);
    jw_secure_free(plain, strlen(plain));
    free(sealed);
    return hex;
}

static void free_session(user_session *us)
{
    if (!us)
        return;
    json_decref(us->session);
    free(us->sealed_hex);
    free(us);
}

/* A login succeeded: remember its session for this user's later jobs. */
static void keep_session(job *j, const jw_step_def *def, json_t *session)
{
    jw_engine *e = j->e;
    json_t *ttl = json_object_get(session, "expires_in");
    int64_t ttl_s = json_is_integer(ttl) ? json_integer_value(ttl) : 3600;
    user_session *us;
    char type[16];

    login_type(def, type, sizeof(type));
    if (ttl_s < 0)
        ttl_s = 0;
    if (ttl_s > 30 * 24 * 3600)
        ttl_s = 30 * 24 * 3600;
    us = find_session(e, j->user, type);
    if (!us) {
        us = jw_xcalloc(1, sizeof(*us));
        jw_uuid_new(us->id);
        snprintf(us->user, sizeof(us->user), "%s", j->user);
        snprintf(us->type, sizeof(us->type), "%s", type);
        snprintf(us->key, sizeof(us->key), "%s/%s", j->user, type);
        jw_map_put(&e->sessions, us->key, us);
    }
    json_decref(us->session);
    us->session = json_deep_copy(session);
    us->created_at = us->last_used_at = now_us(e);
    us->expires_at = us->created_at + ttl_s * 1000000;
    free(us->sealed_hex);
    us->sealed_hex = seal_session(e, us);
    if (us->sealed_hex)
        emit_session(j, us);
}

/* A valid session of this login's type for the job's user, or NULL. */
static user_session *reusable_session(job *j, const jw_step_def *def)
{
    char type[16];
    user_session *us;

    login_type(def, type, sizeof(type));
    us = find_session(j->e, j->user, type);
    if (!us || us->expires_at <= now_us(j->e) + j->e->cfg.session_margin_ms * 1000)
        return NULL;
    return us;
}

/* Jobs present the user's valid sessions to later steps. */
static void attach_sessions(job *j)
{
    for (const jw_step_def *d = jw_validation_steps; d->name; d++) {
        user_session *us;
        char type[16];

        if (!d->login || !(us = reusable_session(j, d)))
            continue;
        login_type(d, type, sizeof(type));
        if (!json_object_get(j->sessions, type))
            json_object_set(j->sessions, type, us->session);
    }
}

int jw_engine_load_sessions(jw_engine *e, const json_t *rows)
{
    const json_t *row;
    size_t i;
    int n = 0;

    json_array_foreach(rows, i, row)
    {
        const char *id = json_string_value(json_object_get(row, "id"));
        const char *user = json_string_value(json_object_get(row, "user_id"));
        const char *type = json_string_value(json_object_get(row, "session_type"));
        const char *hex = json_string_value(json_object_get(row, "auth_token_enc"));
        uint8_t *sealed = NULL, *plain = NULL;
        size_t sealed_len = 0, plain_len = 0;
        user_session probe = {0}, *us;
        char aad[160];

        if (!e->cfg.session_key || !jw_uuid_valid(id) || !jw_uuid_valid(user) || !type ||
            strlen(type) >= sizeof(probe.type) || !hex)
            continue;
        snprintf(probe.id, sizeof(probe.id), "%s", id);
        snprintf(probe.user, sizeof(probe.user), "%s", user);
        snprintf(probe.type, sizeof(probe.type), "%s", type);
        aad_of(&probe, aad, sizeof(aad));
        if (jw_bytea_parse(hex, &sealed, &sealed_len) != 0 ||
            jw_open(e->cfg.session_key, sealed, sealed_len, aad, strlen(aad), &plain, &plain_len) !=
                0) {
            jw_log_warn("engine: auth session %s does not open with the configured secret key; "
                        "skipped (was JOBWIRE_SECRET_KEY changed?)",
                        id);
            free(sealed);
            continue;
        }
        free(sealed);
        us = jw_xcalloc(1, sizeof(*us));
        *us = probe;
        snprintf(us->key, sizeof(us->key), "%s/%s", user, type);
        us->session = json_loadb((const char *)plain, plain_len, 0, NULL);
        jw_secure_free(plain, plain_len);
        if (!us->session) {
            free(us);
            continue;
        }
        us->sealed_hex = jw_xstrdup(hex);
        us->created_at = parse_ts(json_object_get(row, "created_at"));
        us->expires_at = parse_ts(json_object_get(row, "expires_at"));
        us->last_used_at = parse_ts(json_object_get(row, "last_used_at"));
        free_session(jw_map_put(&e->sessions, us->key, us));
        n++;
    }
    return n;
}

/* ---- the walk ---------------------------------------------------------------- */

static step *new_step(job *j, const jw_step_def *def, int unit)
{
    step *s = jw_xcalloc(1, sizeof(*s));

    s->job = j;
    s->def = def;
    s->unit = unit;
    jw_uuid_new(s->id);
    s->status = STEP_PENDING;
    s->data = json_object();
    s->created_at = s->updated_at = now_us(j->e);
    if (j->nsteps == j->capsteps) {
        j->capsteps = j->capsteps ? j->capsteps * 2 : 8;
        j->steps = jw_xrealloc(j->steps, j->capsteps * sizeof(*j->steps));
    }
    j->steps[j->nsteps++] = s;
    return s;
}

static step *unit_step(job *j, int unit, const jw_step_def *def)
{
    for (size_t i = 0; i < j->nsteps; i++)
        if (j->steps[i]->unit == unit && j->steps[i]->def == def)
            return j->steps[i];
    return NULL;
}

static void make_key(step *s)
{
    /* Same key for every attempt of one run of the step: a retried call that
     * already had its effect is answered from the provider's record. A job
     * retry makes a new key, unless the last outcome is unknown. */
    snprintf(s->key, sizeof(s->key), "jw-%s-r%d", s->id, s->job->retry_count);
}

/*
 * Starts a step's next attempt. A login whose session this user still holds
 * completes at once instead (returns true then): no provider call, no SMS.
 */
static bool start_step(step *s)
{
    jw_engine *e = s->job->e;
    user_session *us = s->def->login && s->attempt == 0 ? reusable_session(s->job, s->def) : NULL;

    if (!s->key[0])
        make_key(s);
    s->attempt++;
    if (us) {
        char type[16];

        login_type(s->def, type, sizeof(type));
        json_object_set(s->job->sessions, type, us->session);
        json_object_set_new(s->data, "reused_session", json_true());
        json_object_set_new(s->data, "session_id", json_string(us->id));
        us->last_used_at = now_us(e);
        step_set(s, STEP_IN_PROGRESS);
        step_set(s, STEP_COMPLETED);
        if (us->sealed_hex)
            emit_session(s->job, us);
        jw_log_info("engine: login reused job=%s step=%s session=%s", s->job->id, s->def->name,
                    us->id);
        return true;
    }
    if (s->def->polls && !s->timeout_at) {
        int64_t ms = e->cfg.voucher_deadline_ms;

        s->timeout_at = now_us(e) + ms * 1000;
    }
    step_set(s, STEP_IN_PROGRESS);
    /* Durability rule 4: the call starts once this row committed. */
    queue_call(s, NULL);
    return false;
}

static bool deps_met(job *j, const step *s)
{
    const jw_step_def *defs = jw_unit_defs(s->unit);

    for (int i = 0; defs[i].name; i++) {
        if (s->def->deps & B(i)) {
            step *d = unit_step(j, s->unit, &defs[i]);

            if (!d || d->status != STEP_COMPLETED)
                return false;
        }
    }
    return true;
}

static step *unit_external(job *j)
{
    for (size_t i = 0; i < j->nsteps; i++)
        if (j->steps[i]->unit == j->unit && j->steps[i]->def->external_effect)
            return j->steps[i];
    return NULL;
}

/* May the job stop now without abandoning money that moved? */
static bool cancel_safe(job *j)
{
    step *pay;

    if (j->unit == JW_UNIT_VALIDATION)
        return true;
    pay = unit_external(j);
    if (!pay)
        return true;
    return !(pay->status == STEP_COMPLETED || pay->outcome_unknown || pay->call_id);
}

static void drop_call(step *s)
{
    if (s->call_id) {
        jw_map_del(&s->job->e->calls, s->call_key);
        s->call_id = 0;
    }
}

/* Stops a step that has not finished: timers, outstanding call, OTP. */
static void stop_step(step *s, step_status to, const char *otp_error)
{
    jw_timers_cancel(s->job->e->p.timers, &s->timer);
    drop_call(s);
    if (s->otp && (s->otp->status == OTP_REQUESTED || s->otp->status == OTP_RECEIVED)) {
        otp_set(s->otp, OTP_FAILED);
        otp_answer(s->otp, false, otp_error, "the step this OTP was for has stopped");
    }
    step_set(s, to);
}

static void finish_cancel(job *j)
{
    for (size_t i = 0; i < j->nsteps; i++)
        if (j->steps[i]->unit == j->unit && !step_terminal(j->steps[i]))
            stop_step(j->steps[i], STEP_CANCELLED, "cancelled");
    job_set(j, JOB_CANCELLED);
    jw_log_info("engine: job cancelled job=%s completed_transactions=%d", j->id, j->completed_tx);
}

static void fail_job(job *j, step *failed)
{
    bool others = false;

    for (size_t i = 0; i < j->nsteps; i++) {
        step *s = j->steps[i];

        if (s->unit == j->unit && s != failed && !step_terminal(s)) {
            stop_step(s, STEP_CANCELLED, "step_failed");
            others = true;
        }
    }
    if (others)
        job_error(j, "%s failed: %s; the unit's other steps were cancelled", failed->def->name,
                  failed->error ? failed->error : "unknown error");
    else
        job_error(j, "%s failed: %s", failed->def->name,
                  failed->error ? failed->error : "unknown error");
    job_set(j, JOB_FAILED);
    jw_log_info("engine: job failed job=%s step=%s completed_transactions=%d: %s", j->id,
                failed->def->name, j->completed_tx, j->error);
}

static void complete_job(job *j)
{
    j->phase = "complete";
    j->progress = 100;
    j->completed_at = now_us(j->e);
    job_set(j, JOB_COMPLETED);
    jw_log_info("engine: job completed job=%s transactions=%d", j->id, j->completed_tx);
}

static void advance(job *j)
{
    for (;;) {
        const jw_step_def *defs;
        bool all_done = true, again = false;

        if (j->halted || job_terminal(j))
            return;
        if (j->status == JOB_INITIATED) {
            j->phase = "validation";
            job_set(j, JOB_VALIDATING);
        }
        if (j->cancel_requested && cancel_safe(j)) {
            finish_cancel(j);
            return;
        }
        defs = jw_unit_defs(j->unit);
        for (int i = 0; defs[i].name; i++) {
            if (!unit_step(j, j->unit, &defs[i])) {
                step *s = new_step(j, &defs[i], j->unit);

                emit(j, JW_TABLE_JOB_STEPS, s->id, JW_OP_INSERT, step_row(s));
            }
        }
        for (int i = 0; defs[i].name; i++) {
            step *s = unit_step(j, j->unit, &defs[i]);

            if (s->status == STEP_COMPLETED)
                continue;
            all_done = false;
            if (s->status == STEP_FAILED) {
                fail_job(j, s);
                return;
            }
            if (s->status == STEP_PENDING && deps_met(j, s))
                again |= start_step(s);
        }
        if (again) {
            validation_progress(j);
            continue; /* a step finished at once: its dependents may start */
        }
        if (!all_done)
            return;
        if (j->unit == JW_UNIT_VALIDATION) {
            j->phase = "payment_processing";
            j->progress = 20;
            job_set(j, JOB_PROCESSING);
        } else {
            j->completed_tx = j->unit;
            j->progress = 20 + 80 * j->unit / j->count;
            touch_job(j);
        }
        if (j->unit == j->count) {
            complete_job(j);
            return;
        }
        j->unit++;
    }
}

/* Validation progress grows as its steps complete: 0 -> 20. */
static void validation_progress(job *j)
{
    int done = 0, n = 0;

    for (size_t i = 0; i < j->nsteps; i++) {
        if (j->steps[i]->unit != JW_UNIT_VALIDATION)
            continue;
        n++;
        done += j->steps[i]->status == STEP_COMPLETED;
    }
    if (n && j->unit == JW_UNIT_VALIDATION && done < n) {
        j->progress = 20 * done / n;
        touch_job(j);
    }
}

/* ---- provider calls and replies ------------------------------------------ */

static void start_call(step *s, const char *otp_value)
{
    jw_engine *e = s->job->e;
    jw_provider_call *c = jw_provider_call_new();
    int rc;

    c->id = ++e->next_call;
    snprintf(c->job_id, sizeof(c->job_id), "%s", s->job->id);
    snprintf(c->step_id, sizeof(c->step_id), "%s", s->id);
    snprintf(c->user_id, sizeof(c->user_id), "%s", s->job->user);
    snprintf(c->step_name, sizeof(c->step_name), "%s", s->def->name);
    c->transaction_index = s->unit;
    c->attempt = s->attempt;
    snprintf(c->idempotency_key, sizeof(c->idempotency_key), "%s", s->key);
    c->amount = s->job->amount;
    c->session = json_object_size(s->job->sessions) ? json_deep_copy(s->job->sessions) : NULL;
    c->otp = otp_value ? jw_xstrdup(otp_value) : NULL;
    c->timeout_ms = e->cfg.provider_timeout_ms;

    s->call_id = c->id;
    snprintf(s->call_key, sizeof(s->call_key), "%" PRIu64, c->id);
    jw_map_put(&e->calls, s->call_key, s);
    if (s->def->external_effect)
        s->outcome_unknown = true;
    e->stats.provider_calls++;
    s->call_started_us = now_us(e);
    jw_log_debug("engine: call job=%s step=%s attempt=%d call=%" PRIu64, s->job->id, s->def->name,
                 s->attempt, c->id);
    rc = e->p.provider.start(e->p.provider.ctx, c);
    if (rc != 0) {
        drop_call(s);
        step_attempt_failed(s, true, "provider refused the call: %s", jw_strerror(rc));
    }
}

static int64_t retry_delay_ms(jw_engine *e, const step *s)
{
    const jw_retry_policy *p = &s->def->retry;
    double ms = (double)p->initial_ms;
    double jitter;

    for (int i = 1; i < s->attempt; i++)
        ms *= p->multiplier;
    if (ms > (double)p->max_ms)
        ms = (double)p->max_ms;
    /* +/- jitter, uniform */
    jitter = ((double)(e->p.random(e->p.ctx) >> 11) / 9007199254740992.0) * 2.0 - 1.0;
    ms *= 1.0 + p->jitter * jitter;
    ms *= e->cfg.retry_delay_scale;
    return ms < 1 ? 1 : (int64_t)ms;
}

static void step_timer_fired(jw_timer *t, void *arg);

static void step_attempt_failed(step *s, bool retryable, const char *fmt, ...)
{
    jw_engine *e = s->job->e;
    va_list ap;

    va_start(ap, fmt);
    set_error(&s->error, fmt, ap);
    va_end(ap);
    if (retryable && s->attempt < s->def->retry.max_attempts) {
        s->next_retry_at = now_us(e) + retry_delay_ms(e, s) * 1000;
        step_set(s, STEP_RETRYING);
        jw_timers_arm(e->p.timers, &s->timer, s->next_retry_at, step_timer_fired, s);
        jw_log_info("engine: retrying job=%s step=%s attempt=%d in %" PRId64 " ms: %s", s->job->id,
                    s->def->name, s->attempt, (s->next_retry_at - now_us(e)) / 1000, s->error);
        return;
    }
    if (retryable) {
        char buf[512];

        snprintf(buf, sizeof(buf), "%s (gave up after %d attempts)", s->error, s->attempt);
        free(s->error);
        s->error = jw_xstrdup(buf);
    }
    step_set(s, STEP_FAILED);
    advance(s->job);
}

static void otp_timer_fired(jw_timer *t, void *arg);

static int64_t otp_timeout_ms(jw_engine *e, const char *type)
{
    return strcmp(type, "payment") == 0 || strcmp(type, "process_payment") == 0
               ? e->cfg.otp_timeout_payment_ms
               : e->cfg.otp_timeout_login_ms;
}

static void request_otp(step *s, const jw_provider_reply *r)
{
    jw_engine *e = s->job->e;
    job *j = s->job;
    otp *o = jw_xcalloc(1, sizeof(*o));
    int64_t now = now_us(e);

    o->job = j;
    o->step = s;
    jw_uuid_new(o->id);
    snprintf(o->type, sizeof(o->type), "%s", r->otp_type[0] ? r->otp_type : s->def->name);
    snprintf(o->phone, sizeof(o->phone), "%s", r->phone_hint);
    o->status = OTP_REQUESTED;
    o->max_attempts = e->cfg.otp_max_attempts;
    o->requested_at = now;
    o->timeout_at = now + otp_timeout_ms(e, o->type) * 1000;
    if (j->notps == j->capotps) {
        j->capotps = j->capotps ? j->capotps * 2 : 4;
        j->otps = jw_xrealloc(j->otps, j->capotps * sizeof(*j->otps));
    }
    j->otps[j->notps++] = o;
    jw_map_put(&e->otps, o->id, o);
    s->otp = o;
    e->stats.otp_requested++;
    step_set(s, STEP_WAITING_OTP);
    emit(j, JW_TABLE_OTP_REQUESTS, o->id, JW_OP_INSERT, otp_row(o));
    jw_timers_arm(e->p.timers, &o->timer, o->timeout_at, otp_timer_fired, o);
    jw_log_info("engine: OTP requested job=%s step=%s otp=%s type=%s", j->id, s->def->name, o->id,
                o->type);
}

static void step_completed(step *s, json_t *data)
{
    job *j = s->job;

    if (json_is_object(data))
        json_object_update(s->data, data);
    if (s->def->login) {
        json_t *session = json_object_get(data, "session");

        /* gyftr_login -> "gyftr": the session later steps present. */
        if (json_is_object(session)) {
            char type[16];

            login_type(s->def, type, sizeof(type));
            json_object_set(j->sessions, type, session);
            keep_session(j, s->def, session);
        }
        /* Tokens are not journaled: memory, and sealed in auth_sessions. */
        json_object_del(s->data, "session");
    }
    s->outcome_unknown = false;
    free(s->error);
    s->error = NULL;
    step_set(s, STEP_COMPLETED);
    if (j->unit == JW_UNIT_VALIDATION)
        validation_progress(j);
    advance(j);
}

static void handle_reply(step *s, jw_provider_reply *r)
{
    otp *o = s->otp && s->otp->status == OTP_RECEIVED ? s->otp : NULL;
    jw_engine *e = s->job->e;

    switch (r->status) {
    case JW_PROVIDER_OK:
        if (o) {
            otp_set(o, OTP_VERIFIED);
            otp_answer(o, true, NULL, NULL);
        }
        step_completed(s, r->data);
        break;
    case JW_PROVIDER_OTP_REQUIRED:
        /* The provider needs a code: nothing was done yet. */
        s->outcome_unknown = false;
        if (o && r->invalid_otp) {
            o->attempts++;
            e->stats.otp_wrong++;
            if (o->attempts >= o->max_attempts) {
                e->stats.otp_exhausted++;
                otp_set(o, OTP_FAILED);
                otp_answer(o, false, "invalid_otp", "wrong code; no attempts left");
                step_attempt_failed(s, true, "OTP entered wrong %d times", o->attempts);
                break;
            }
            otp_set(o, OTP_REQUESTED);
            step_set(s, STEP_WAITING_OTP);
            otp_answer(o, false, "invalid_otp", "wrong code; try again");
            /* The wait may have run out while the provider checked. */
            if (now_us(e) >= o->timeout_at)
                jw_timers_arm(e->p.timers, &o->timer, now_us(e), otp_timer_fired, o);
            break;
        }
        if (o) {
            otp_set(o, OTP_FAILED);
            otp_answer(o, false, "otp_not_accepted", "the provider asked for a new code");
        }
        request_otp(s, r);
        break;
    case JW_PROVIDER_PENDING:
        if (s->timeout_at && now_us(e) + (int64_t)r->poll_after_ms * 1000 >= s->timeout_at) {
            /* A payment still pending may yet complete: its outcome stays unknown. */
            step_attempt_failed(s, false, "still pending at its deadline");
            break;
        }
        if (!s->timeout_at) {
            /* A step not meant to poll: give it the same deadline. */
            s->timeout_at = now_us(e) + e->cfg.voucher_deadline_ms * 1000;
            step_set(s, STEP_IN_PROGRESS);
        }
        jw_timers_arm(e->p.timers, &s->timer, now_us(e) + (int64_t)r->poll_after_ms * 1000,
                      step_timer_fired, s);
        break;
    case JW_PROVIDER_ERROR:
        if (o) {
            otp_set(o, OTP_FAILED);
            otp_answer(o, false, "provider_error", r->message);
        }
        if (r->refused)
            s->outcome_unknown = false;
        step_attempt_failed(s, r->retryable, "%s", r->message[0] ? r->message : "provider error");
        break;
    }
}

static void observe_call(step *s, const jw_provider_reply *r)
{
    jw_engine *e = s->job->e;
    jw_call_result res = JW_CALL_OK;

    switch (r->status) {
    case JW_PROVIDER_OK: res = JW_CALL_OK; break;
    case JW_PROVIDER_OTP_REQUIRED: res = JW_CALL_OTP_REQUIRED; break;
    case JW_PROVIDER_PENDING: res = JW_CALL_PENDING; break;
    case JW_PROVIDER_ERROR:
        res = r->timed_out ? JW_CALL_TIMEOUT : r->retryable ? JW_CALL_RETRYABLE : JW_CALL_FATAL;
        break;
    }
    jw_hist_observe(&e->hists.call_duration[jw_step_def_ordinal(s->def)][res],
                    elapsed_us(s->call_started_us, now_us(e)));
}

void jw_engine_on_reply(jw_engine *e, jw_provider_reply *r)
{
    char key[24];
    step *s;

    snprintf(key, sizeof(key), "%" PRIu64, r->call_id);
    s = jw_map_del(&e->calls, key);
    if (s && s->call_id == r->call_id)
        observe_call(s, r);
    if (!s || s->call_id != r->call_id || s->job->halted) {
        jw_provider_reply_free(r);
        return;
    }
    s->call_id = 0;
    if (s->status == STEP_IN_PROGRESS)
        handle_reply(s, r);
    jw_provider_reply_free(r);
    /* A cancel may have been waiting for this reply. */
    advance(s->job);
    flush(e);
}

/* ---- timers ------------------------------------------------------------------ */

static void step_timer_fired(jw_timer *t, void *arg)
{
    step *s = arg;
    jw_engine *e = s->job->e;

    (void)t;
    if (s->job->halted)
        return;
    if (s->status == STEP_RETRYING) {
        (void)start_step(s);
    } else if (s->status == STEP_IN_PROGRESS && !s->call_id) {
        /* A poll: the in_progress row is durable already. */
        start_call(s, NULL);
    }
    advance(s->job);
    flush(e);
}

static void otp_timer_fired(jw_timer *t, void *arg)
{
    otp *o = arg;
    step *s = o->step;
    jw_engine *e = o->job->e;

    (void)t;
    if (o->job->halted || o->status != OTP_REQUESTED)
        return; /* RECEIVED: the provider's verdict decides */
    otp_set(o, OTP_EXPIRED);
    otp_answer(o, false, "expired", "the OTP was not entered in time");
    if (s->status == STEP_WAITING_OTP)
        step_attempt_failed(s, true, "OTP not entered within %" PRId64 " s",
                            (o->timeout_at - o->requested_at) / 1000000);
    advance(o->job);
    flush(e);
}

/* ---- commits ------------------------------------------------------------------ */

static void view_put(job *j, jw_delta *d)
{
    for (size_t i = 0; i < j->nview; i++) {
        if (j->view[i].table == d->table && strcmp(j->view[i].d->row_id, d->row_id) == 0) {
            jw_delta_unref(j->view[i].d);
            j->view[i].d = jw_delta_ref(d);
            return;
        }
    }
    if (j->nview == j->capview) {
        j->capview = j->capview ? j->capview * 2 : 16;
        j->view = jw_xrealloc(j->view, j->capview * sizeof(*j->view));
    }
    j->view[j->nview].table = d->table;
    j->view[j->nview].d = jw_delta_ref(d);
    j->nview++;
}

static void run_actions(job *j, action *acts, int status)
{
    while (acts) {
        action *a = acts;

        acts = a->next;
        if (a->kind == ACT_DONE) {
            a->done(a->arg, status, j->id);
        } else if (a->kind == ACT_OTP) {
            if (status != 0) {
                a->result.ok = false;
                a->result.error = "unavailable";
                a->result.message = "the verdict could not be stored; submit the code again";
            }
            a->otp_fn(a->arg, &a->result);
        } else if (status == 0 && !j->halted && a->step->status == STEP_IN_PROGRESS &&
                   a->step->attempt == a->attempt && !a->step->call_id) {
            start_call(a->step, a->otp);
        }
        free_action(a);
    }
}

void jw_engine_on_commit(jw_engine *e, jw_batch *b)
{
    commit_ctx *ctx = b->user;
    job *j = ctx->job;

    j->inflight--;
    e->stats.batches_inflight--;
    if (b->status == 0) {
        for (size_t i = 0; i < b->count; i++) {
            if (b->deltas[i]->seq == 0)
                continue; /* a quiet write (auth_sessions): not part of the job */
            view_put(j, b->deltas[i]);
            /* Before publishing: a snapshot taken by a subscriber of this
             * delta must say it includes it. */
            j->committed_seq = b->deltas[i]->seq;
            b->deltas[i]->commit_us = b->committed_us;
            e->p.publish(e->p.ctx, b->deltas[i]);
        }
    } else if (!j->halted) {
        /* Memory is now ahead of PostgreSQL: stop driving the job. A restart
         * resumes it from what was committed. */
        j->halted = true;
        jw_log_error("engine: a batch of job=%s was refused, job halted until restart: %s", j->id,
                     b->error ? b->error : jw_strerror(b->status));
    }
    run_actions(j, ctx->acts, b->status);
    free(ctx);
    jw_batch_free(b);
    flush(e);
}

/* ---- eviction of finished jobs --------------------------------------------------- */

static void free_job(job *j);

static void evict_fired(jw_timer *t, void *arg)
{
    job *j = arg;
    jw_engine *e = j->e;

    (void)t;
    if (!job_terminal(j) || j->halted)
        return; /* retried (cannot happen: the retry disarmed it), or kept for the restart */
    if (j->inflight || j->open || j->acts || j->queued) {
        /* Its last batch has not committed yet (PostgreSQL away that long): later. */
        arm_eviction(j);
        return;
    }
    /* Nothing may point at the job once it is gone: its calls, its OTP requests. */
    for (size_t i = 0; i < j->nsteps; i++)
        drop_call(j->steps[i]);
    for (size_t i = 0; i < j->notps; i++)
        jw_map_del(&e->otps, j->otps[i]->id);
    jw_map_del(&e->jobs, j->id);
    e->stats.jobs_evicted++;
    jw_log_debug("engine: finished job left memory job=%s status=%s seq=%" PRId64, j->id,
                 job_names[j->status], j->committed_seq);
    free_job(j);
}

/*
 * A finished job is read from PostgreSQL once it has been finished for
 * finished_job_ttl_ms: it stops costing memory (about 30 KB for a job of 4
 * transactions) however long the server runs.
 */
static void arm_eviction(job *j)
{
    jw_engine *e = j->e;

    if (e->cfg.finished_job_ttl_ms > 0)
        jw_timers_arm(e->p.timers, &j->evict, now_us(e) + e->cfg.finished_job_ttl_ms * 1000,
                      evict_fired, j);
}

/* ---- commands ------------------------------------------------------------------ */

static job *new_job(jw_engine *e, const char *id, const char *user)
{
    job *j = jw_xcalloc(1, sizeof(*j));

    j->e = e;
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->user, sizeof(j->user), "%s", user);
    j->sessions = json_object();
    j->metadata = json_object();
    jw_map_put(&e->jobs, j->id, j);
    return j;
}

int jw_engine_create_job(jw_engine *e, const char *user_id, int64_t amount, int count,
                         const json_t *metadata, jw_engine_done_fn done, void *arg,
                         char job_id[JW_UUID_LEN + 1], char *err, size_t errlen)
{
    char id[JW_UUID_LEN + 1];
    job *j;

    if (!jw_uuid_valid(user_id)) {
        snprintf(err, errlen, "user_id must be a UUID");
        return JW_EINVAL;
    }
    if (amount < 1 || amount > e->cfg.max_amount) {
        snprintf(err, errlen, "transaction_amount must be 1..%d (got %" PRId64 ")",
                 e->cfg.max_amount, amount);
        return JW_EINVAL;
    }
    if (count < 1 || count > e->cfg.max_transactions) {
        snprintf(err, errlen, "transaction_count must be 1..%d (got %d)", e->cfg.max_transactions,
                 count);
        return JW_EINVAL;
    }
    if (metadata && !json_is_object(metadata)) {
        snprintf(err, errlen, "metadata must be an object");
        return JW_EINVAL;
    }
    if (metadata && json_dumpb(metadata, NULL, 0, JSON_COMPACT) > JW_ENGINE_METADATA_MAX) {
        snprintf(err, errlen, "metadata may take at most %d bytes as compact JSON (got %zu)",
                 JW_ENGINE_METADATA_MAX, json_dumpb(metadata, NULL, 0, JSON_COMPACT));
        return JW_ETOOBIG;
    }
    jw_uuid_new(id);
    j = new_job(e, id, user_id);
    /* PostgreSQL prints uuids in lower case; so do we, so owners compare. */
    for (char *c = j->user; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'F' ? *c + ('a' - 'A') : *c);
    j->status = JOB_INITIATED;
    j->amount = amount;
    j->count = count;
    j->created_at = j->updated_at = now_us(e);
    if (metadata) {
        json_decref(j->metadata);
        j->metadata = json_deep_copy(metadata);
    }
    emit(j, JW_TABLE_JOB_RUNS, j->id, JW_OP_INSERT, job_row(j));
    if (j->halted) { /* its first row could not be built: nothing was queued */
        snprintf(err, errlen, "the job's row could not be stored");
        jw_map_del(&e->jobs, j->id);
        free_job(j);
        return JW_ETOOBIG;
    }
    live_add(j, +1);
    queue_done(j, done, arg);
    advance(j);
    flush(e);
    snprintf(job_id, JW_UUID_LEN + 1, "%s", id);
    jw_log_info("engine: job created job=%s user=%s amount=%" PRId64 " transactions=%d", id,
                user_id, amount, count);
    return 0;
}

static job *find_job(jw_engine *e, const char *id, char *err, size_t errlen)
{
    job *j = id ? jw_map_get(&e->jobs, id) : NULL;

    if (!j || !j->committed_seq)
        snprintf(err, errlen, "no job %s", id ? id : "(null)");
    return j && j->committed_seq ? j : NULL;
}

int jw_engine_cancel(jw_engine *e, const char *job_id, jw_engine_done_fn done, void *arg, char *err,
                     size_t errlen)
{
    job *j = find_job(e, job_id, err, errlen);

    if (!j)
        return JW_ENOTFOUND;
    if (job_terminal(j) || j->halted) {
        snprintf(err, errlen, "job %s is %s; only a running job can be cancelled", j->id,
                 j->halted ? "halted" : job_names[j->status]);
        return JW_ECONFLICT;
    }
    if (j->cancel_requested) {
        snprintf(err, errlen, "job %s is already being cancelled", j->id);
        return JW_ECONFLICT;
    }
    j->cancel_requested = true;
    touch_job(j);
    queue_done(j, done, arg);
    advance(j);
    flush(e);
    return 0;
}

int jw_engine_retry(jw_engine *e, const char *job_id, jw_engine_done_fn done, void *arg, char *err,
                    size_t errlen)
{
    job *j = find_job(e, job_id, err, errlen);

    if (!j)
        return JW_ENOTFOUND;
    if (j->status != JOB_FAILED || j->halted) {
        snprintf(err, errlen, "job %s is %s; only a failed job can be retried", j->id,
                 j->halted ? "halted" : job_names[j->status]);
        return JW_ECONFLICT;
    }
    j->retry_count++;
    free(j->error);
    j->error = NULL;
    for (size_t i = 0; i < j->nsteps; i++) {
        step *s = j->steps[i];

        if (s->unit != j->unit || (s->status != STEP_FAILED && s->status != STEP_CANCELLED))
            continue;
        s->attempt = 0;
        s->timeout_at = 0;
        free(s->error);
        s->error = NULL;
        /* An unknown payment outcome keeps its key, so asking again cannot
         * pay twice; a definite failure gets a fresh key. */
        if (!s->outcome_unknown)
            s->key[0] = '\0';
        step_set(s, STEP_PENDING);
    }
    job_set(j, j->unit == JW_UNIT_VALIDATION ? JOB_VALIDATING : JOB_PROCESSING);
    queue_done(j, done, arg);
    jw_log_info("engine: job retried job=%s retry=%d resuming at %s", j->id, j->retry_count,
                j->unit == JW_UNIT_VALIDATION ? "validation" : "a transaction");
    advance(j);
    flush(e);
    return 0;
}

static bool otp_value_valid(const char *v)
{
    size_t n = 0;

    for (; v && v[n]; n++)
        if (!isdigit((unsigned char)v[n]) || n >= 10)
            return false;
    return n >= 4;
}

int jw_engine_submit_otp(jw_engine *e, const char *otp_request_id, const char *value,
                         const char *check_user, jw_otp_result_fn fn, void *arg, char *err,
                         size_t errlen)
{
    otp *o = otp_request_id ? jw_map_get(&e->otps, otp_request_id) : NULL;
    step *s;

    /* Another user's request is reported exactly like a missing one. */
    if (!o || (check_user && strcmp(check_user, o->job->user) != 0) || !o->job->committed_seq) {
        snprintf(err, errlen, "no OTP request %s", otp_request_id ? otp_request_id : "(null)");
        return JW_ENOTFOUND;
    }
    if (!otp_value_valid(value)) {
        snprintf(err, errlen, "the OTP must be 4 to 10 digits");
        return JW_EINVAL;
    }
    s = o->step;
    if (o->status != OTP_REQUESTED || s->status != STEP_WAITING_OTP || o->job->halted ||
        job_terminal(o->job)) {
        snprintf(err, errlen, "OTP request %s is %s, not waiting for a code", o->id,
                 o->status == OTP_REQUESTED ? "closed" : otp_names[o->status]);
        return JW_ECONFLICT;
    }
    o->fn = fn;
    o->fn_arg = arg;
    otp_set(o, OTP_RECEIVED);
    step_set(s, STEP_IN_PROGRESS);
    /* The value lives only in this action until the provider has it. */
    queue_call(s, value);
    jw_log_info("engine: OTP received job=%s step=%s otp=%s", o->job->id, s->def->name, o->id);
    flush(e);
    return 0;
}

/* ---- reading ------------------------------------------------------------------- */

json_t *jw_engine_snapshot(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;
    json_t *snap, *steps, *otps, *jobrow = NULL;

    if (!j || !j->committed_seq)
        return NULL;
    steps = json_array();
    otps = json_array();
    for (size_t i = 0; i < j->nview; i++) {
        json_t *row = json_loads(j->view[i].d->row, 0, NULL);

        if (!row)
            continue;
        if (j->view[i].table == JW_TABLE_JOB_RUNS)
            jobrow = row;
        else
            json_array_append_new(j->view[i].table == JW_TABLE_JOB_STEPS ? steps : otps, row);
    }
    snap = json_pack("{s:o?, s:o, s:o, s:I}", "job", jobrow, "steps", steps, "otp_requests", otps,
                     "seq", (json_int_t)j->committed_seq);
    return snap;
}

const char *jw_engine_job_owner(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && j->committed_seq ? j->user : NULL;
}

const char *jw_engine_step_otp(jw_engine *e, const char *job_id, const char *step_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    for (size_t i = 0; j && step_id && i < j->notps; i++)
        if (strcmp(j->otps[j->notps - 1 - i]->step->id, step_id) == 0)
            return j->otps[j->notps - 1 - i]->id;
    return NULL;
}

int64_t jw_engine_committed_seq(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && j->committed_seq ? j->committed_seq : -1;
}

bool jw_engine_has_job(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && j->committed_seq;
}

bool jw_engine_job_retryable(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && j->committed_seq && j->status == JOB_FAILED && !j->halted;
}

const char *jw_engine_otp_job(jw_engine *e, const char *otp_request_id)
{
    otp *o = otp_request_id ? jw_map_get(&e->otps, otp_request_id) : NULL;

    return o ? o->job->id : NULL;
}

void jw_engine_get_stats(jw_engine *e, jw_engine_stats *out)
{
    *out = e->stats;
    out->jobs_in_memory = e->jobs.count;
}

const jw_engine_hists *jw_engine_get_hists(jw_engine *e)
{
    return &e->hists;
}

/* ---- recovery ------------------------------------------------------------------- */

/* PostgreSQL's timestamptz JSON: 2026-11-26T10:00:00.123456+00:00 (or Z). */
static int64_t parse_ts(const json_t *v)
{
    const char *s = json_string_value(v);
    struct tm tm = {0};
    int64_t us = 0, off = 0;
    const char *p;
    int n = 0;

    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    p = s + n;
    if (*p == '.') {
        int digits = 0;

        for (p++; isdigit((unsigned char)*p); p++, digits++)
            if (digits < 6)
                us = us * 10 + (*p - '0');
        for (; digits < 6; digits++)
            us *= 10;
    }
    if (*p == '+' || *p == '-') {
        int hh = 0, mm = 0;

        sscanf(p + 1, "%2d:%2d", &hh, &mm);
        off = (int64_t)(hh * 3600 + mm * 60) * (*p == '-' ? -1 : 1);
    }
    return ((int64_t)timegm(&tm) - off) * 1000000 + us;
}

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int jint(const json_t *o, const char *k)
{
    return (int)json_integer_value(json_object_get(o, k));
}

static int recover_job(jw_engine *e, const json_t *item, char *err, size_t errlen)
{
    const json_t *row = json_object_get(item, "job"), *v;
    const char *id = jstr(row, "id"), *user = jstr(row, "user_id");
    int status = parse_name(job_names, JOB__N, jstr(row, "status"));
    size_t i;
    job *j;

    if (!jw_uuid_valid(id) || !jw_uuid_valid(user) || status < 0 || jw_map_get(&e->jobs, id)) {
        snprintf(err, errlen, "unusable job row %s", id ? id : "(no id)");
        return JW_EINVAL;
    }
    j = new_job(e, id, user);
    j->status = (job_status)status;
    j->phase = jstr(row, "current_phase") ? jstr(row, "current_phase") : NULL;
    /* phase strings are ours: point at the constants */
    if (j->phase)
        j->phase = strcmp(j->phase, "payment_processing") == 0 ? "payment_processing"
                   : strcmp(j->phase, "complete") == 0         ? "complete"
                                                               : "validation";
    j->progress = jint(row, "progress_percentage");
    j->completed_tx = jint(row, "completed_transactions");
    j->count = jint(row, "transaction_count");
    j->retry_count = jint(row, "retry_count");
    j->amount = json_integer_value(json_object_get(row, "transaction_amount"));
    j->created_at = parse_ts(json_object_get(row, "created_at"));
    j->updated_at = parse_ts(json_object_get(row, "updated_at"));
    j->completed_at = parse_ts(json_object_get(row, "completed_at"));
    if (jstr(row, "error_message"))
        j->error = jw_xstrdup(jstr(row, "error_message"));
    if (json_is_object(json_object_get(row, "metadata"))) {
        json_decref(j->metadata);
        j->metadata = json_deep_copy(json_object_get(row, "metadata"));
    }
    j->cancel_requested = json_is_true(json_object_get(row, "cancel_requested"));
    j->seq = j->committed_seq = json_integer_value(json_object_get(item, "last_seq"));
    if (job_terminal(j))
        arm_eviction(j); /* adopted to be retried: leaves again unless it is */
    else
        live_add(j, +1);

    {
        /* The committed view starts as the rows read back; last_seq is the
         * store's bookkeeping, not part of the row the engine writes. */
        json_t *copy = json_deep_copy(row);
        char *text;

        json_object_del(copy, "last_seq");
        text = json_dumps(copy, JSON_COMPACT);
        json_decref(copy);
        jw_delta *d = jw_delta_new(j->id, j->id, j->seq, now_us(e), JW_TABLE_JOB_RUNS, JW_OP_UPDATE,
                                   text, strlen(text), NULL);

        free(text);
        if (d) {
            view_put(j, d);
            jw_delta_unref(d);
        }
    }

    j->unit = -1;
    json_array_foreach(json_object_get(item, "steps"), i, v)
    {
        const jw_step_def *def = jw_step_def_find(jstr(v, "step_name") ? jstr(v, "step_name") : "");
        int st = parse_name(step_names, STEP__N, jstr(v, "status"));
        step *s;
        char *text;
        jw_delta *d;

        if (!def || st < 0 || !jw_uuid_valid(jstr(v, "id"))) {
            snprintf(err, errlen, "job %s: unusable step row", j->id);
            return JW_EINVAL;
        }
        s = new_step(j, def, jint(v, "transaction_index"));
        snprintf(s->id, sizeof(s->id), "%s", jstr(v, "id"));
        s->status = (step_status)st;
        s->attempt = jint(v, "attempt");
        s->created_at = parse_ts(json_object_get(v, "created_at"));
        s->started_at = parse_ts(json_object_get(v, "started_at"));
        s->completed_at = parse_ts(json_object_get(v, "completed_at"));
        s->timeout_at = parse_ts(json_object_get(v, "timeout_at"));
        s->next_retry_at = parse_ts(json_object_get(v, "next_retry_at"));
        s->updated_at = parse_ts(json_object_get(v, "updated_at"));
        if (!step_terminal(s) && s->status != STEP_PENDING)
            s->run_started_us = s->started_at; /* the histogram counts from there */
        if (json_is_object(json_object_get(v, "step_data"))) {
            json_decref(s->data);
            s->data = json_deep_copy(json_object_get(v, "step_data"));
        }
        if (jstr(v, "error_message"))
            s->error = jw_xstrdup(jstr(v, "error_message"));
        snprintf(s->key, sizeof(s->key), "%s",
                 jstr(v, "idempotency_key") ? jstr(v, "idempotency_key") : "");
        /* An external step that was running may have had its effect; one
         * that ended without a definite answer says so on its row. */
        s->outcome_unknown = def->external_effect && s->key[0] &&
                             (json_is_true(json_object_get(v, "outcome_unknown")) ||
                              (!step_terminal(s) && s->status != STEP_PENDING));
        if (!step_terminal(s) || s->status == STEP_FAILED || s->status == STEP_CANCELLED)
            if (j->unit < 0 || s->unit < j->unit)
                j->unit = s->unit;
        text = json_dumps(v, JSON_COMPACT);
        d = jw_delta_new(j->id, s->id, j->seq, now_us(e), JW_TABLE_JOB_STEPS, JW_OP_UPDATE, text,
                         strlen(text), NULL);
        free(text);
        if (d) {
            view_put(j, d);
            jw_delta_unref(d);
        }
    }
    if (j->unit < 0) /* every step completed: the next unit, if any */
        j->unit = j->nsteps == 0 ? 0 : j->completed_tx + 1;
    if (j->unit > j->count)
        j->unit = j->count;

    json_array_foreach(json_object_get(item, "otp_requests"), i, v)
    {
        int st = parse_name(otp_names, OTP__N, jstr(v, "status"));
        step *owner = NULL;
        otp *o;
        char *text;
        jw_delta *d;

        for (size_t k = 0; k < j->nsteps; k++)
            if (jstr(v, "job_step_id") && strcmp(j->steps[k]->id, jstr(v, "job_step_id")) == 0)
                owner = j->steps[k];
        if (!owner || st < 0 || !jw_uuid_valid(jstr(v, "id"))) {
            snprintf(err, errlen, "job %s: unusable otp row", j->id);
            return JW_EINVAL;
        }
        o = jw_xcalloc(1, sizeof(*o));
        o->job = j;
        o->step = owner;
        snprintf(o->id, sizeof(o->id), "%s", jstr(v, "id"));
        snprintf(o->type, sizeof(o->type), "%s", jstr(v, "otp_type") ? jstr(v, "otp_type") : "");
        snprintf(o->phone, sizeof(o->phone), "%s",
                 jstr(v, "phone_number") ? jstr(v, "phone_number") : "");
        o->status = (otp_status)st;
        o->attempts = jint(v, "attempts_count");
        o->max_attempts = jint(v, "max_attempts");
        o->requested_at = parse_ts(json_object_get(v, "requested_at"));
        o->received_at = parse_ts(json_object_get(v, "received_at"));
        o->verified_at = parse_ts(json_object_get(v, "verified_at"));
        o->timeout_at = parse_ts(json_object_get(v, "timeout_at"));
        if (j->notps == j->capotps) {
            j->capotps = j->capotps ? j->capotps * 2 : 4;
            j->otps = jw_xrealloc(j->otps, j->capotps * sizeof(*j->otps));
        }
        j->otps[j->notps++] = o;
        jw_map_put(&e->otps, o->id, o);
        owner->otp = o; /* rows come in request order: the last one is current */
        text = json_dumps(v, JSON_COMPACT);
        d = jw_delta_new(j->id, o->id, j->seq, now_us(e), JW_TABLE_OTP_REQUESTS, JW_OP_UPDATE, text,
                         strlen(text), NULL);
        free(text);
        if (d) {
            view_put(j, d);
            jw_delta_unref(d);
        }
    }

    attach_sessions(j);
    /* Resume each unfinished step of the running unit. */
    for (i = 0; i < j->nsteps; i++) {
        step *s = j->steps[i];
        otp *o = s->otp;

        if (s->unit != j->unit || job_terminal(j))
            continue;
        switch (s->status) {
        case STEP_IN_PROGRESS:
            if (o && o->status == OTP_RECEIVED) {
                /* The typed code died with the process: ask for it again. */
                otp_set(o, OTP_REQUESTED);
                step_set(s, STEP_WAITING_OTP);
                jw_timers_arm(e->p.timers, &o->timer, o->timeout_at, otp_timer_fired, o);
            } else {
                start_call(s, NULL); /* same key: the provider answers from its record */
            }
            break;
        case STEP_WAITING_OTP:
            if (o && o->status == OTP_REQUESTED)
                jw_timers_arm(e->p.timers, &o->timer, o->timeout_at, otp_timer_fired, o);
            else
                step_attempt_failed(s, true, "lost its OTP request across a restart");
            break;
        case STEP_RETRYING:
            jw_timers_arm(e->p.timers, &s->timer, s->next_retry_at, step_timer_fired, s);
            break;
        default: break;
        }
    }
    jw_log_info("engine: recovered job=%s status=%s seq=%" PRId64 " unit=%d", j->id,
                job_names[j->status], j->seq, j->unit);
    advance(j);
    return 0;
}

int jw_engine_recover(jw_engine *e, const json_t *loaded, char *err, size_t errlen)
{
    const json_t *item;
    size_t i;
    int n = 0;

    if (!json_is_array(loaded)) {
        snprintf(err, errlen, "recovery input is not an array");
        return JW_EINVAL;
    }
    json_array_foreach(loaded, i, item)
    {
        int rc = recover_job(e, item, err, errlen);

        if (rc != 0) {
            flush(e);
            return rc;
        }
        n++;
    }
    flush(e);
    return n;
}

/* ---- life cycle ------------------------------------------------------------------ */

jw_engine *jw_engine_new(const jw_engine_config *cfg, const jw_engine_ports *ports)
{
    jw_engine *e = jw_xcalloc(1, sizeof(*e));

    if (cfg)
        e->cfg = *cfg;
    e->p = *ports;
#define DEFAULT(field, value)                                                                      \
    if (!e->cfg.field)                                                                             \
    e->cfg.field = (value)
    DEFAULT(otp_timeout_login_ms, 5 * 60 * 1000);
    DEFAULT(otp_timeout_payment_ms, 3 * 60 * 1000);
    DEFAULT(otp_max_attempts, 3);
    DEFAULT(voucher_deadline_ms, 10 * 60 * 1000);
    DEFAULT(provider_timeout_ms, 30000);
    DEFAULT(max_amount, 1000000);
    DEFAULT(max_transactions, 50);
    DEFAULT(retry_delay_scale, 1.0);
    DEFAULT(session_margin_ms, 60000);
#undef DEFAULT
    jw_map_init(&e->jobs);
    jw_map_init(&e->otps);
    jw_map_init(&e->calls);
    jw_map_init(&e->sessions);
    jw_map_init(&e->live);
    e->hists.nsteps = jw_step_def_count();
    if (e->hists.nsteps > JW_ENGINE_STEP_KINDS) {
        jw_log_error("engine: the workflow has %d step definitions; raise JW_ENGINE_STEP_KINDS "
                     "(%d) in jw_engine.h",
                     e->hists.nsteps, JW_ENGINE_STEP_KINDS);
        abort();
    }
    for (int i = 0; i < e->hists.nsteps; i++) {
        e->hists.step[i] = jw_step_def_at(i)->name;
        for (int k = 0; k < JW_STEP_OUTCOME__N; k++)
            jw_hist_init(&e->hists.step_duration[i][k], &step_duration_spec);
        for (int k = 0; k < JW_CALL_RESULT__N; k++)
            jw_hist_init(&e->hists.call_duration[i][k], &call_duration_spec);
    }
    return e;
}

static void free_job(job *j)
{
    jw_timers *q = j->e->p.timers;

    jw_timers_cancel(q, &j->evict);
    for (size_t i = 0; i < j->nsteps; i++) {
        jw_timers_cancel(q, &j->steps[i]->timer);
        json_decref(j->steps[i]->data);
        free(j->steps[i]->error);
        free(j->steps[i]);
    }
    for (size_t i = 0; i < j->notps; i++) {
        jw_timers_cancel(q, &j->otps[i]->timer);
        free(j->otps[i]);
    }
    for (size_t i = 0; i < j->nview; i++)
        jw_delta_unref(j->view[i].d);
    while (j->acts) {
        action *a = j->acts;

        j->acts = a->next;
        free_action(a);
    }
    jw_batch_free(j->open);
    free(j->view);
    free(j->steps);
    free(j->otps);
    free(j->error);
    json_decref(j->metadata);
    json_decref(j->sessions);
    free(j);
}

void jw_engine_free(jw_engine *e)
{
    const char *k;
    void *v;

    if (!e)
        return;
    for (size_t it = 0; jw_map_next(&e->jobs, &it, &k, &v);)
        free_job(v);
    jw_map_release(&e->jobs);
    jw_map_release(&e->otps);
    jw_map_release(&e->calls);
    for (size_t it = 0; jw_map_next(&e->sessions, &it, &k, &v);)
        free_session(v);
    jw_map_release(&e->sessions);
    for (size_t it = 0; jw_map_next(&e->live, &it, &k, &v);)
        free(v);
    jw_map_release(&e->live);
    free(e);
}
