/*
 * engine_internal.h - what the engine's files share (engine internal; callers
 * use jw_engine.h).
 *
 * The engine is one module in several files, each one concern:
 *   engine.c    the state machines: transitions, deltas and batches, the walk
 *               over the workflow, provider replies, timers, commits
 *   commands.c  the engine's life cycle and its commands (create, cancel,
 *               retry, submit an OTP), eviction of finished jobs
 *   rows.c      the rows the deltas carry, the committed view, snapshots
 *   sessions.c  login sessions kept per user and reused across jobs
 *   recover.c   rebuilding unfinished jobs from their rows at start-up
 *
 * Loop thread only, like the whole engine. Names shared across these files
 * are engine__*; everything else stays static in its file.
 */
#ifndef JW_ENGINE_INTERNAL_H
#define JW_ENGINE_INTERNAL_H

#include "jw_buf.h"
#include "jw_engine.h"
#include "jw_map.h"
#include "workflow.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- states ------------------------------------------------------------------ */

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

typedef enum {
    OTP_REQUESTED,
    OTP_RECEIVED,
    OTP_VERIFIED,
    OTP_FAILED,
    OTP_EXPIRED,
    OTP__N
} otp_status;

/* Their names, as the rows spell them (engine.c). */
extern const char *const engine__job_names[JOB__N];
extern const char *const engine__step_names[STEP__N];
extern const char *const engine__otp_names[OTP__N];

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
    /* The lease this node drives the job under: 1 when created here, the
     * claimed epoch when recovered. Every batch carries it (the store's fence). */
    int64_t lease_epoch;
    bool lease_lost; /* another node holds the lease now: halted, nothing more submitted */

    view_row *view;
    size_t nview, capview;

    jw_timer evict; /* finished: leaves memory when it fires */
};

/* A user's provider session of one type, reusable across jobs. */
typedef struct user_session {
    char key[JW_UUID_LEN + 24]; /* "<user>/<type>", the map key */
    char id[JW_UUID_LEN + 1];   /* its auth_sessions row */
    char user[JW_UUID_LEN + 1];
    char type[JW_STEP_SESSION_MAX]; /* the login's session name: gyftr, amazon */
    json_t *session;                /* what the provider returned: memory only */
    char *sealed_hex;               /* the same, sealed, as bytea text; NULL without a key */
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
    jw_buf row; /* the row being written (rows.c), reused */
};

static inline int64_t now_us(jw_engine *e)
{
    return e->p.now_us(e->p.ctx);
}

static inline bool job_terminal(const job *j)
{
    return j->status == JOB_COMPLETED || j->status == JOB_FAILED || j->status == JOB_CANCELLED;
}

static inline bool step_terminal(const step *s)
{
    return s->status == STEP_COMPLETED || s->status == STEP_FAILED || s->status == STEP_CANCELLED;
}

/* ---- engine.c: the state machines ---------------------------------------------- */

void engine__mark_dirty(job *j);
/* Appends a row change (its JSON text: rows.c) to the job's open batch. */
void engine__emit(job *j, jw_table t, const char *row_id, jw_op op, const jw_buf *row);
void engine__touch_job(job *j);
void engine__queue_call(step *s, const char *otp_value);
void engine__queue_done(job *j, jw_engine_done_fn done, void *arg);
void engine__free_action(action *a);
/* Submits every job's open batch, with the actions that wait for it. */
void engine__flush(jw_engine *e);
void engine__live_add(job *j, int d);
bool engine__job_set(job *j, job_status to);
bool engine__step_set(step *s, step_status to);
bool engine__otp_set(otp *o, otp_status to);
void engine__advance(job *j);
step *engine__new_step(job *j, const jw_step_def *def, int unit);
void engine__drop_call(step *s);
void engine__start_call(step *s, const char *otp_value);
void engine__step_attempt_failed(step *s, bool retryable, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void engine__step_timer_fired(jw_timer *t, void *arg);
void engine__otp_timer_fired(jw_timer *t, void *arg);

/* ---- commands.c ------------------------------------------------------------------ */

job *engine__new_job(jw_engine *e, const char *id, const char *user);
void engine__arm_eviction(job *j);
/* Whether nothing of the job is in flight or queued: it may leave memory. */
bool engine__forgettable(const job *j);
/* Takes a forgettable job out of memory (its calls, OTP requests) and frees it. */
void engine__forget(job *j);

/* ---- rows.c ---------------------------------------------------------------------- */

/* A row's JSON text, in the engine's scratch buffer until the next row is built. */
const jw_buf *engine__job_row(const job *j);
const jw_buf *engine__step_row(const step *s);
const jw_buf *engine__otp_row(const otp *o);
/* Keeps d (a reference) as the latest committed version of its row. */
void engine__view_put(job *j, jw_delta *d);
int64_t engine__parse_ts(const json_t *v);

/* ---- sessions.c ------------------------------------------------------------------ */

void engine__emit_session(job *j, const user_session *us);
void engine__free_session(user_session *us);
void engine__keep_session(job *j, const jw_step_def *def, json_t *session);
user_session *engine__reusable_session(job *j, const jw_step_def *def);
void engine__attach_sessions(job *j);

#endif
