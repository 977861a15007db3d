/*
 * jw_engine.h - the job engine: the payment workflow as a durable state
 * machine, run on the loop thread.
 *
 * The engine keeps every live job in memory and changes it only through
 * per-object set_state functions that check the transition against a table
 * and emit a delta (engine/jw_delta.h). Deltas of one event are submitted as
 * one batch through the store port. What the outside may see or feel happens
 * only after that batch committed (DESIGN.md durability rules 3 and 4):
 * deltas are published, provider calls are started, callers are answered.
 *
 * The workflow is data (engine/workflow.c): the validation unit
 * (gyftr_login and amazon_login in parallel, then availability_check), then
 * per transaction generate_payment_link -> process_payment ->
 * wait_for_vouchers -> redeem_amazon_vouchers.
 *
 * Ports: the engine reaches the outside only through jw_engine_ports, so its
 * unit tests run with a fake clock, a fake store and a fake provider.
 *
 * Threads: every function here runs on the loop thread only.
 */
#ifndef JW_ENGINE_H
#define JW_ENGINE_H

#include "jw_delta.h"
#include "jw_hist.h"
#include "jw_provider.h"
#include "jw_timers.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct jw_engine jw_engine;

typedef struct jw_engine_ports {
    void *ctx;
    /* Wall clock, microseconds since the epoch. */
    int64_t (*now_us)(void *ctx);
    /* Uniform random 64 bits, for retry jitter. */
    uint64_t (*random)(void *ctx);
    /* Hands a batch to the store; its answer comes back through
     * jw_engine_on_commit. The engine sets b->user; the port must not. */
    void (*submit)(void *ctx, jw_batch *b);
    /* A committed delta, in seq order per job; borrow it (ref to keep). */
    void (*publish)(void *ctx, jw_delta *d);
    /* The deltas of one committed batch (one job's) have all been through
     * publish, and nothing else has happened since. May be NULL. */
    void (*published)(void *ctx);
    /* A job stops being driven here: its lease was lost, or it is evicted
     * (called just before; jw_engine_snapshot still answers). May be NULL. */
    void (*left)(void *ctx, const char *job_id);
    /* Deadlines: the engine arms its timers here. */
    jw_timers *timers;
    /* Performs steps; replies come back through jw_engine_on_reply. */
    jw_provider provider;
} jw_engine_ports;

typedef struct jw_engine_config {
    int64_t otp_timeout_login_ms;   /* 0: 5 min */
    int64_t otp_timeout_payment_ms; /* 0: 3 min */
    int otp_max_attempts;           /* 0: 3 */
    int64_t voucher_deadline_ms;    /* 0: 10 min: how long wait_for_vouchers polls */
    int provider_timeout_ms;        /* 0: 30 s, passed to providers with each call */
    int max_amount;                 /* 0: 1,000,000 */
    int max_transactions;           /* 0: 50 */
    /* Scales every retry delay (tests and benchmarks: 0.001); 0: 1.0. */
    double retry_delay_scale;
    /*
     * AES-256-GCM key (32 bytes, borrowed) sealing provider session tokens in
     * auth_sessions. NULL: logins are reused only within this process.
     */
    const uint8_t *session_key;
    int64_t session_margin_ms; /* a session this close to expiry is not reused; 0: 60 s */
    /*
     * A finished job (completed, failed, cancelled) leaves memory this long
     * after it finished, once its last batch committed; from then on it is
     * read from PostgreSQL, as one that finished before a restart (a retry
     * adopts it again through jw_engine_recover). A job retried meanwhile
     * stays. 0: finished jobs stay until jw_engine_free (unit tests; the
     * server always sets it: --finished-job-ttl).
     */
    int64_t finished_job_ttl_ms;
} jw_engine_config;

jw_engine *jw_engine_new(const jw_engine_config *cfg, const jw_engine_ports *ports);
/* Cancels the engine's timers and frees every job; NULL-safe. */
void jw_engine_free(jw_engine *e);

/*
 * Rebuilds and resumes the unfinished jobs read by jw_db_load_active, each
 * under the lease epoch it was claimed with (an item's "lease_epoch"; 1 when
 * absent): OTP
 * waits re-armed with their remaining time (or expired), retry timers
 * re-armed, calls that were in flight re-issued with the same idempotency
 * key, an OTP that was typed but not yet verified asked for again (its value
 * was never stored). Returns how many jobs it resumed, or a JW_E* code.
 * A finished job may be given too (a failed one, to retry it): it is kept
 * as it is, and leaves memory again after finished_job_ttl_ms unless retried.
 */
int jw_engine_recover(jw_engine *e, const json_t *loaded, char *err, size_t errlen);

/*
 * Takeover at runtime: resumes jobs this node claimed from dead or departed
 * nodes (db/cluster.h), like jw_engine_recover. A job still in memory here
 * that is not driven (its lease was lost earlier) is replaced; one whose last
 * batch is still out is appended to later, to be given again once it is
 * back. Per-job errors are logged and skip that job. Returns how many were
 * resumed (counted in takeovers).
 */
int jw_engine_adopt(jw_engine *e, const json_t *claimed, json_t *later);
/*
 * Login reuse. A login's provider session is kept per user and type (gyftr,
 * amazon) in memory and, sealed, in auth_sessions; a later job of the same
 * user skips that login while the session is valid. At start-up, feed the
 * rows of jw_db_load_sessions here before jw_engine_recover. Rows that do not
 * open with the configured key are skipped with a warning. Returns how many
 * sessions were loaded.
 */
int jw_engine_load_sessions(jw_engine *e, const json_t *rows);

/* ---- commands --------------------------------------------------------- */

/* Called once the command's first batch committed (or failed: status != 0). */
typedef void (*jw_engine_done_fn)(void *arg, int status, const char *job_id);

/*
 * Creates and starts a job. Refuses (JW_EINVAL, message in err) a user id
 * that is not a UUID, an amount outside 1..max_amount, a count outside
 * 1..max_transactions; and (JW_ETOOBIG) metadata whose compact JSON encoding
 * (as stored, floats re-encoded by jansson) is over JW_ENGINE_METADATA_MAX
 * bytes. metadata is borrowed (copied). done may be NULL.
 */
#define JW_ENGINE_METADATA_MAX (16 * 1024)
int jw_engine_create_job(jw_engine *e, const char *user_id, int64_t amount, int count,
                         const json_t *metadata, jw_engine_done_fn done, void *arg,
                         char job_id[JW_UUID_LEN + 1], char *err, size_t errlen);

/* How many of a user's jobs are running (created or retried, not finished). */
int jw_engine_user_live_jobs(jw_engine *e, const char *user_id);

/*
 * Requests cancellation. The job stops at the next safe point: at once when
 * no payment of the running transaction has been sent; otherwise after that
 * transaction finished (money that moved is never abandoned; an unknown
 * payment outcome is reconciled with the provider by its idempotency key).
 * JW_ENOTFOUND, or JW_ECONFLICT for a finished job.
 */
int jw_engine_cancel(jw_engine *e, const char *job_id, jw_engine_done_fn done, void *arg, char *err,
                     size_t errlen);

/*
 * Retries a failed job: it resumes at the first unfinished step, never
 * repeating a finished transaction. JW_ENOTFOUND, or JW_ECONFLICT unless the
 * job failed.
 */
int jw_engine_retry(jw_engine *e, const char *job_id, jw_engine_done_fn done, void *arg, char *err,
                    size_t errlen);

/* The verdict on a submitted OTP, once the provider checked it. */
typedef struct jw_otp_result {
    bool ok;
    const char *error; /* NULL when ok: invalid_otp, expired, not_waiting, ... */
    const char *message;
    int attempts_left;
} jw_otp_result;
typedef void (*jw_otp_result_fn)(void *arg, const jw_otp_result *r);

/*
 * Submits an OTP for an OTP request. The value (4..10 digits) is kept in
 * memory only until it is handed to the provider, then wiped. The answer comes
 * through fn once the provider judged it (fn may be NULL). Immediate refusals
 * return an error and do not call fn: JW_ENOTFOUND (no such request),
 * JW_EINVAL (not 4..10 digits), JW_ECONFLICT (the request is not waiting for a
 * code: already received, verified, failed or expired; message says which).
 * owner_out, when not NULL, receives the job's user id before any check of
 * the value, so callers can authorise first; pass check_user to refuse with
 * JW_ENOTFOUND a request of another user.
 */
int jw_engine_submit_otp(jw_engine *e, const char *otp_request_id, const char *value,
                         const char *check_user, jw_otp_result_fn fn, void *arg, char *err,
                         size_t errlen);

/* ---- events from the ports ------------------------------------------- */

/*
 * The store's answer for a batch the engine submitted; takes ownership.
 * JW_ECONFLICT means the job's lease was lost (another node drives it now):
 * the job stops here at once - nothing more of it is submitted, no provider
 * call of it starts - logged at warn and counted (leases_lost). Any other
 * error halts the job until a restart.
 */
void jw_engine_on_commit(jw_engine *e, jw_batch *b);
/* A provider's reply; takes ownership. Replies to unknown calls are dropped. */
void jw_engine_on_reply(jw_engine *e, jw_provider_reply *r);

/* ---- reading ---------------------------------------------------------- */

/*
 * The committed state of a job as {"job":{…},"steps":[…],"otp_requests":[…],
 * "seq":N}: exactly what the deltas up to seq describe. NULL when the job is
 * not in memory. Caller owns the result.
 */
json_t *jw_engine_snapshot(jw_engine *e, const char *job_id);
/* The owner of a job in memory, or NULL. */
const char *jw_engine_job_owner(jw_engine *e, const char *job_id);
/* The newest OTP request of a step, or NULL (the sim inbox links SMS to it). */
const char *jw_engine_step_otp(jw_engine *e, const char *job_id, const char *step_id);
/* The last committed seq of a job in memory, or -1. */
int64_t jw_engine_committed_seq(jw_engine *e, const char *job_id);
/* Whether a job is in memory (committed at least once). */
bool jw_engine_has_job(jw_engine *e, const char *job_id);
/* Whether the job is in memory and driven here (not halted, its lease not lost). */
bool jw_engine_job_driven(jw_engine *e, const char *job_id);
/* The lease epoch a driven job commits under (its owner's fence), or -1 when not driven. */
int64_t jw_engine_job_lease_epoch(jw_engine *e, const char *job_id);
/* Whether jw_engine_retry would take the job now (in memory, failed, not halted). */
bool jw_engine_job_retryable(jw_engine *e, const char *job_id);
/* The job an OTP request belongs to, or NULL. */
const char *jw_engine_otp_job(jw_engine *e, const char *otp_request_id);

typedef struct jw_engine_stats {
    uint64_t jobs_live;      /* in memory, not finished */
    uint64_t jobs_finished;  /* since start */
    uint64_t jobs_in_memory; /* running, and finished ones not yet evicted */
    uint64_t jobs_evicted;   /* finished jobs dropped from memory, since start */
    uint64_t deltas;         /* emitted */
    uint64_t batches_inflight;
    uint64_t provider_calls;
    /* OTP requests and what became of them, since start. */
    uint64_t otp_requested; /* requests created (a prompt sent to the user) */
    uint64_t otp_verified;  /* the provider accepted the code */
    uint64_t otp_wrong;     /* codes the provider judged wrong, each one */
    uint64_t otp_exhausted; /* requests failed by max_attempts wrong codes */
    uint64_t otp_expired;   /* requests nobody answered in time */
    uint64_t rows_refused;  /* rows too large to become a delta: each halted its job */
    uint64_t leases_lost;   /* jobs stopped here because another node took their lease */
    uint64_t takeovers;     /* jobs resumed here after a dead or departed node (adopt) */
} jw_engine_stats;
void jw_engine_get_stats(jw_engine *e, jw_engine_stats *out);

/*
 * Histograms of what the engine times, on its own clock (the now_us port).
 *
 * step_duration: from the step's start (pending -> in_progress) to its end
 * (completed, failed or cancelled), retries and OTP waits included; a step
 * that never started is not observed. A login answered from a reused session
 * is observed with its (near zero) duration. A job retry starts the step's
 * run anew; a step recovered at start-up counts from its started_at.
 *
 * call_duration: from handing a call to the provider to its reply, by the
 * reply: ok, otp_required, pending (a poll), retryable or fatal error, and
 * timeout (the provider gave up waiting; retryable too). Calls whose reply
 * never arrives (dropped by a cancel) are not observed.
 *
 * Indexed by the step's ordinal in the workflow (step[] names it); both in
 * microseconds. Borrowed, loop thread only, valid until jw_engine_free.
 */
#define JW_ENGINE_STEP_KINDS 16 /* room for the workflow's step definitions */

typedef enum jw_step_outcome {
    JW_STEP_OUTCOME_COMPLETED,
    JW_STEP_OUTCOME_FAILED,
    JW_STEP_OUTCOME_CANCELLED,
    JW_STEP_OUTCOME__N
} jw_step_outcome;

typedef enum jw_call_result {
    JW_CALL_OK,
    JW_CALL_OTP_REQUIRED,
    JW_CALL_PENDING,
    JW_CALL_RETRYABLE,
    JW_CALL_FATAL,
    JW_CALL_TIMEOUT,
    JW_CALL_RESULT__N
} jw_call_result;

/* Label values: "completed" ...; "ok", "otp_required" ... */
extern const char *const jw_step_outcome_names[JW_STEP_OUTCOME__N];
extern const char *const jw_call_result_names[JW_CALL_RESULT__N];

typedef struct jw_engine_hists {
    int nsteps;                             /* step kinds in use */
    const char *step[JW_ENGINE_STEP_KINDS]; /* their names, workflow order */
    jw_hist step_duration[JW_ENGINE_STEP_KINDS][JW_STEP_OUTCOME__N];
    jw_hist call_duration[JW_ENGINE_STEP_KINDS][JW_CALL_RESULT__N];
} jw_engine_hists;

const jw_engine_hists *jw_engine_get_hists(jw_engine *e);

#endif
