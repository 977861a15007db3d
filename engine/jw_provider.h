/*
 * jw_provider.h - the provider port: how the engine asks the outside world to
 * perform one step (log in, check availability, pay, ...).
 *
 * The contract (DESIGN.md "Providers") is the same for every provider:
 *   request  {job_id, step_id, step_name, transaction_index, attempt,
 *             idempotency_key, amount, session, otp?}
 *   reply    {"status":"ok","data":{...}}
 *          | {"status":"otp_required","otp_type":"...","phone_hint":"...",
 *             "reason":"invalid_otp"?}
 *          | {"status":"pending","poll_after_ms":N}
 *          | {"status":"error","retryable":true|false,"message":"..."}
 * An "otp_required" reply to a call that carried an OTP means the OTP was
 * wrong ("reason":"invalid_otp"); the provider keeps the same code valid.
 * A provider honours idempotency keys: a second call with a key that already
 * succeeded returns the recorded outcome without a second external effect.
 *
 * Threads: start() is called on the loop thread and must not block. Replies
 * are delivered on the loop thread through the deliver callback the provider
 * was created with (the http provider posts from its curl thread to a mailbox
 * the server drains; the sim defers with the loop's timers).
 *
 * Ownership: start() takes the call; the provider frees it with
 * jw_provider_call_free (which wipes the OTP). deliver() gets a reply the
 * receiver frees with jw_provider_reply_free.
 */
#ifndef JW_PROVIDER_H
#define JW_PROVIDER_H

#include "jw_util.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define JW_STEP_NAME_MAX 40
#define JW_IDEMPOTENCY_KEY_MAX 96
#define JW_OTP_MAX 16 /* digits; longer submissions are refused before this */

typedef struct jw_provider_call {
    uint64_t id; /* the engine's id for matching the reply */
    char job_id[JW_UUID_LEN + 1];
    char step_id[JW_UUID_LEN + 1];
    char user_id[JW_UUID_LEN + 1];
    char step_name[JW_STEP_NAME_MAX];
    int transaction_index; /* 1..n for payment steps, 0 otherwise */
    int attempt;           /* 1 for the first try */
    char idempotency_key[JW_IDEMPOTENCY_KEY_MAX];
    int64_t amount;
    json_t *session; /* owned; the provider-side sessions this step may use, or NULL */
    char *otp;       /* owned; NULL or the OTP typed by the user; wiped on free */
    int timeout_ms;  /* per-call deadline for providers that wait on I/O */
} jw_provider_call;

typedef enum jw_provider_status {
    JW_PROVIDER_OK,
    JW_PROVIDER_OTP_REQUIRED,
    JW_PROVIDER_PENDING,
    JW_PROVIDER_ERROR,
} jw_provider_status;

typedef struct jw_provider_reply {
    uint64_t call_id;
    jw_provider_status status;
    json_t *data;        /* OK: owned, never NULL (may be an empty object) */
    char otp_type[32];   /* OTP_REQUIRED: gyftr_login, amazon_login, payment */
    char phone_hint[32]; /* OTP_REQUIRED: masked, e.g. "******4821" */
    bool invalid_otp;    /* OTP_REQUIRED: the call's OTP was wrong */
    int poll_after_ms;   /* PENDING */
    bool retryable;      /* ERROR */
    /*
     * ERROR: the provider answered that it did not do the step and will not
     * (a contract error reply with retryable false). Any other error - a
     * timeout, a transport failure, a garbled or oversized reply, an HTTP
     * status - leaves an external step's outcome unknown: its idempotency
     * key is kept for the next try, a job retry included.
     */
    bool refused;
    bool timed_out;    /* ERROR: no reply within the call's deadline (not in the JSON) */
    char message[256]; /* ERROR: what went wrong, for error_message */
} jw_provider_reply;

typedef void (*jw_provider_deliver_fn)(void *arg, jw_provider_reply *reply);

typedef struct jw_provider {
    const char *name; /* "sim", "http" */
    void *ctx;
    /* Starts a call and takes it. Returns 0, or an error (the call is freed). */
    int (*start)(void *ctx, jw_provider_call *call);
    /* Releases the provider; outstanding calls are dropped without replies. */
    void (*destroy)(void *ctx);
} jw_provider;

jw_provider_call *jw_provider_call_new(void);
/* Wipes the OTP and frees; NULL-safe. */
void jw_provider_call_free(jw_provider_call *call);
/* The request body of the contract above (caller frees with json_decref). */
json_t *jw_provider_call_to_json(const jw_provider_call *call);

jw_provider_reply *jw_provider_reply_new(uint64_t call_id, jw_provider_status status);
void jw_provider_reply_free(jw_provider_reply *reply);
/*
 * Parses a reply body of the contract above. Returns NULL with a message in
 * err for anything malformed: unknown status, wrong types, out-of-range
 * poll_after_ms (0..600000), over-long strings, and "data" whose compact JSON
 * (as the step's row stores it) is over JW_PROVIDER_DATA_MAX bytes.
 */
#define JW_PROVIDER_DATA_MAX (64 * 1024)
jw_provider_reply *jw_provider_reply_parse(uint64_t call_id, const json_t *body, char *err,
                                           size_t errlen);
/* The reply body of the contract above (caller frees with json_decref). */
json_t *jw_provider_reply_to_json(const jw_provider_reply *reply);

#endif
