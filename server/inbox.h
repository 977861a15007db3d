/*
 * inbox.h - commands from any node (issue 14): an OTP submitted, or a cancel
 * asked, on a node whose engine does not hold the job reaches the node that
 * drives it, through the jw_inbox table (db/migrations/005_inbox.sql), and
 * the caller gets the owner's verdict once it committed.
 *
 * Caller side (the node that received the request): jw_inbox_forward_*
 * inserts a row and notifies the owner in one statement (the reads thread's
 * connection), then waits for "answer" - a notification, or the row's verdict
 * read when the cluster connection comes back. The wait is bounded
 * (jw_inbox_wait_ms): then the row is withdrawn if nobody took it (503, not
 * applied), or the caller is told the outcome is unknown (504).
 *
 * Owner side (the node whose engine drives the job): on a notification, on
 * jw_inbox_catch_up (the LISTEN connection came back, jobs were adopted) and
 * again 2 s after a row it could not take yet, it takes the rows of the jobs
 * it drives in a statement fenced on each job's lease (owner_node and
 * lease_epoch locked FOR SHARE), which also erases the sealed code; hands the
 * command to its engine; and
 * once the engine answered (after its commit) writes the verdict and
 * notifies the caller. Rows taken by an earlier owner that died before it
 * answered are answered "owner changed" (503) by the new owner.
 *
 * An OTP travels sealed (AES-256-GCM, a key derived from --secret-key, the
 * row's id and the request's id bound as associated data); without
 * --secret-key an OTP cannot be forwarded (503). The value is never logged.
 *
 * Loop thread only. Callers borrow nothing from it past the verdict call.
 */
#ifndef JW_INBOX_H
#define JW_INBOX_H

#include "config.h"

#include "jw_engine.h"
#include "jw_store.h"
#include "jw_timers.h"

#include <jansson.h>
#include <stdint.h>

typedef struct jw_inbox jw_inbox;

/* What a forwarded command came to; borrowed for the call only. */
typedef struct jw_inbox_verdict {
    int rc;                 /* 0: the owner applied it (otp / snapshot); else a JW_E* refusal */
    int status;             /* rc != 0: the HTTP status: 400, 404, 409, 429, 503, 504 */
    const char *code;       /* rc != 0: its error code (docs/api.md) */
    const char *message;    /* rc != 0: what happened, without any secret */
    int retry_after_s;      /* 0, or a hint for 429 / 503 */
    jw_otp_result otp;      /* an OTP, rc 0: the owner's verdict on the code */
    const json_t *snapshot; /* a cancel, rc 0: the job as committed after it */
} jw_inbox_verdict;

/* Called exactly once per accepted forward (jw_inbox_forward_* returned 0). */
typedef void (*jw_inbox_fn)(void *arg, const jw_inbox_verdict *v);

typedef enum jw_inbox_outcome {
    JW_INBOX_FORWARDED,     /* rows this node inserted for another node */
    JW_INBOX_ANSWERED,      /* verdicts of owners delivered to callers here */
    JW_INBOX_REFUSED,       /* forwards answered from the database (404, 409, 400) */
    JW_INBOX_FULL,          /* forwards refused: too many open rows (429 / 503) */
    JW_INBOX_NO_KEY,        /* OTPs not forwarded: no --secret-key (503) */
    JW_INBOX_NOT_APPLIED,   /* waits that ran out before any owner took the row (503) */
    JW_INBOX_UNKNOWN,       /* waits that ran out after an owner took the row (504) */
    JW_INBOX_DB_ERROR,      /* forwards that failed on PostgreSQL (503) */
    JW_INBOX_TAKEN,         /* rows this node took as the owner and applied */
    JW_INBOX_OWNER_CHANGED, /* rows of a dead owner answered here after a takeover (503) */
    JW_INBOX__N
} jw_inbox_outcome;

extern const char *const jw_inbox_outcome_names[JW_INBOX__N];

/* secret_key: the node's --secret-key (NULL: OTPs are not forwarded). All borrowed. */
jw_inbox *jw_inbox_new(const jw_config *cfg, jw_engine *engine, jw_store *store, jw_timers *timers);
/* Drops pending waits without calling them (shutdown); NULL-safe. */
void jw_inbox_free(jw_inbox *ib);

/* How long a caller waits for an owner's verdict, in milliseconds. */
int64_t jw_inbox_wait_ms(const jw_inbox *ib);

/*
 * Forwards an OTP (user: the caller's user id, NULL for the admin key) for a
 * request this node's engine does not hold. The value is checked and sealed
 * before this returns, and not kept. 0: fn will be called; JW_ELIMIT (too
 * many waits here) or JW_ECLOSED: refused now, message in err, fn not called.
 */
int jw_inbox_forward_otp(jw_inbox *ib, const char *otp_request_id, const char *value,
                         const char *user, jw_inbox_fn fn, void *arg, char *err, size_t errlen);
/* The same for cancelling a job this node's engine does not hold. */
int jw_inbox_forward_cancel(jw_inbox *ib, const char *job_id, const char *user, jw_inbox_fn fn,
                            void *arg, char *err, size_t errlen);

/* A jw_inbox notification's payload (db/cluster.h JW_NOTICE_INBOX). */
void jw_inbox_on_notice(jw_inbox *ib, const char *payload);
/* Looks at the table again: rows for jobs driven here, verdicts for waits here.
 * After the LISTEN connection came back, and after jobs were adopted. */
void jw_inbox_catch_up(jw_inbox *ib);

void jw_inbox_counts(const jw_inbox *ib, uint64_t out[JW_INBOX__N]);

#endif
