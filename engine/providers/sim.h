/*
 * sim.h - the simulated provider: the workflow's steps (DESIGN.md "The
 * workflow") performed in memory, with OTPs sent as simulated SMS, charges
 * recorded per idempotency key, and configurable latency and failures.
 *
 * Two layers:
 *
 *  - jw_sim, the core: jw_sim_handle() takes one call and returns its reply
 *    at once. No I/O, no timers, no threads; the caller passes the time.
 *    The sandbox binary serves this core over HTTP.
 *  - jw_sim_provider, the loop adapter: implements the jw_provider port for
 *    the engine. start() runs the core immediately (so the OTP is wiped at
 *    once) and delivers the reply latency_ms later through a jw_timers on
 *    the loop thread - never from inside start().
 *
 * Behaviour per step name:
 *   gyftr_login, amazon_login  OTP type = the step name (when the step needs
 *                              an OTP), then ok {"session":{"token","expires_in":3600}}
 *   availability_check         ok {"available":bool,"vouchers":N}
 *   generate_payment_link      ok {"payment_link":"https://sim.invalid/pay/<key>"}
 *   process_payment            OTP type "payment" (when needed), then charges
 *                              once per idempotency key:
 *                              ok {"payment_id":"pay_…","charged":amount}
 *   wait_for_vouchers          pending {poll_after_ms} for the first
 *                              voucher_polls calls per key, then
 *                              ok {"vouchers":["SIMV-…"]} (the same codes on
 *                              every later call with that key)
 *   redeem_amazon_vouchers     ok {"redeemed":amount}
 *   anything else              error, not retryable, "unknown step '<name>'"
 *
 * OTP mechanics: a call without an OTP to a step that needs one sends a
 * fresh 6-digit code (OpenSSL RAND_bytes, no modulo bias; derived with a code
 * key, see jw_sim_set_code_key) as a simulated SMS - it replaces any code
 * outstanding for that step - and replies otp_required {otp_type,
 * phone_hint}. A code is accepted only while the sim holds its record, not
 * used and not expired: a call with that code proceeds and uses it up. A
 * wrong code replies otp_required with invalid_otp and the same code stays
 * valid. A code given when none is outstanding (never sent, used, older than
 * JW_SIM_OTP_TTL_MS, or sent before a restart) gets a fresh code and a plain
 * otp_required (not invalid_otp: the old code cannot become right, so the
 * engine must ask for the new one). Codes are compared in constant time.
 *
 * Idempotency: every call with an idempotency key counts as a call for that
 * key. The first successful process_payment with a key records one charge;
 * later calls with the key reply the recorded outcome without charging (and
 * without asking for an OTP again). The same key with a different amount is
 * refused (not retryable), as real payment APIs do.
 *
 * Random failures (fail_rate) are decided before a step has any effect, by a
 * small PRNG seeded from config (deterministic) or from RAND_bytes. OTP
 * codes, tokens and ids always come from RAND_bytes.
 *
 * Logging: each simulated SMS is logged at info level WITH its code - the one
 * place an OTP may appear in a log, and only because it is a simulation.
 * Nothing else here logs a code.
 *
 * Bounds: the inbox keeps the last JW_SIM_INBOX_MAX messages; at most
 * JW_SIM_MAX_KEYS idempotency keys and the OTP records of JW_SIM_MAX_OTPS
 * steps are remembered (the oldest is forgotten first).
 *
 * Threads: a jw_sim and its adapter are used by one thread at a time (the
 * loop thread in the server, the only thread in the sandbox).
 */
#ifndef JW_PROVIDERS_SIM_H
#define JW_PROVIDERS_SIM_H

#include "jw_provider.h"
#include "jw_timers.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JW_SIM_INBOX_MAX 1000
#define JW_SIM_MAX_KEYS 100000
#define JW_SIM_MAX_OTPS 10000
#define JW_SIM_OTP_TTL_MS (15 * 60 * 1000)
#define JW_SIM_SPEC_MAX 1024
#define JW_SIM_LATENCY_MAX_MS 60000
#define JW_SIM_POLLS_MAX 1000
#define JW_SIM_POLL_AFTER_MAX_MS 600000

/* The steps the sim knows, as bit numbers for the step sets below. */
enum jw_sim_step {
    JW_SIM_GYFTR_LOGIN,
    JW_SIM_AMAZON_LOGIN,
    JW_SIM_AVAILABILITY_CHECK,
    JW_SIM_GENERATE_PAYMENT_LINK,
    JW_SIM_PROCESS_PAYMENT,
    JW_SIM_WAIT_FOR_VOUCHERS,
    JW_SIM_REDEEM_AMAZON_VOUCHERS,
    JW_SIM_STEP__COUNT
};
#define JW_SIM_STEP_BIT(step) (1u << (step))
#define JW_SIM_ALL_STEPS ((1u << JW_SIM_STEP__COUNT) - 1)

typedef struct jw_sim_config {
    int latency_ms;      /* 0..JW_SIM_LATENCY_MAX_MS before a reply is delivered */
    double fail_rate;    /* 0..1: share of calls that fail with "simulated failure" */
    unsigned fail_steps; /* step bits random failures may hit */
    bool fail_retryable; /* whether those failures are retryable */
    unsigned otp_steps;  /* step bits that need an OTP (only logins and payment can) */
    int voucher_polls;   /* 0..JW_SIM_POLLS_MAX pending replies before the vouchers */
    int poll_after_ms;   /* 0..JW_SIM_POLL_AFTER_MAX_MS, in those pending replies */
    int vouchers;        /* 0..1000000, availability_check's count */
    char phone_last4[5]; /* the SMS goes to "******<phone_last4>" */
    bool has_seed;       /* seed the failure PRNG with seed (deterministic) */
    uint64_t seed;
} jw_sim_config;

/*
 * Help text for the spec string, for --help of the server and the sandbox:
 * comma-separated key=value items, lists joined with '+'.
 */
#define JW_SIM_SPEC_HELP                                                                           \
    "comma-separated key=value: latency_ms=0..60000 (default 100), fail_rate=0..1 (0), "           \
    "fail_steps=<steps>|* (*), fail_retryable=0|1 (1), "                                           \
    "otp=<steps>|none (gyftr_login+amazon_login+process_payment), voucher_polls=0..1000 (2), "     \
    "poll_after_ms=0..600000 (200), vouchers=0..1000000 (10), phone=<4 digits> (4821), "           \
    "seed=<unsigned integer> (random); <steps> are step names joined with '+'"

/* The defaults above. */
void jw_sim_config_init(jw_sim_config *cfg);

/*
 * Sets cfg to the defaults, then applies spec (NULL or "" keeps them), e.g.
 * "latency_ms=50,fail_rate=0.1,fail_steps=process_payment,otp=none,seed=7".
 * Returns 0, or JW_ECONFIG with what is wrong in err (cfg then holds the
 * defaults plus what parsed before the error: do not use it).
 */
int jw_sim_config_parse(jw_sim_config *cfg, const char *spec, char *err, size_t errlen);

/* The step's name, or NULL. */
const char *jw_sim_step_name(int step);
/* The step for a name, or -1. */
int jw_sim_step_from_name(const char *name);

/* --- the core ------------------------------------------------------------ */

typedef struct jw_sim jw_sim;

/* cfg is copied; NULL means the defaults. */
jw_sim *jw_sim_new(const jw_sim_config *cfg);
/* Wipes the outstanding codes and the inbox; NULL-safe. */
void jw_sim_free(jw_sim *sim);
/*
 * Derive OTP codes from key (32 bytes, copied) instead of drawing them at
 * random: HMAC-SHA256 over the step id, OTP type, idempotency key (it differs
 * between job retries), attempt, the step's issue count in this sim and the
 * issue time, so no two codes sent for one step come from the same input. A
 * derived code is still accepted only with its record: a sim restarted with
 * the same key does not accept codes sent before the restart, it sends a new
 * one. The server passes a key derived from its secret key in sim mode.
 */
void jw_sim_set_code_key(jw_sim *sim, const unsigned char key[32]);
const jw_sim_config *jw_sim_config_of(const jw_sim *sim);

/*
 * Performs one call at now_us (wall-clock microseconds; decides OTP expiry
 * and the SMS timestamps). Returns a reply for call->id, which the caller
 * frees; never NULL. The call stays the caller's.
 */
jw_provider_reply *jw_sim_handle(jw_sim *sim, const jw_provider_call *call, int64_t now_us);

/*
 * The simulated SMS, oldest first (at most JW_SIM_INBOX_MAX): an array of
 * {"seq","job_id","step_id","otp_type","phone_hint","code","sent_at"}, seq
 * counting from 1 over the sim's lifetime. The caller owns the array.
 */
json_t *jw_sim_inbox_json(const jw_sim *sim);

/*
 * Every remembered idempotency key: {"<key>":{"charges","calls","amount",
 * "job_id","step_id","step_name","transaction_index","payment_id"?}}, the
 * ids from the key's first call. The caller owns the object.
 */
json_t *jw_sim_charges_json(const jw_sim *sim);

/* Charges recorded for key (0 or 1: the sim never charges a key twice). */
int jw_sim_charges_for(const jw_sim *sim, const char *key);
/* Calls received with key, successful or not. */
int jw_sim_calls_for(const jw_sim *sim, const char *key);
/*
 * Charges recorded for one transaction of a job, over all keys: a caller
 * that minted a new key for a retried payment would show 2 here.
 */
int jw_sim_charges_for_transaction(const jw_sim *sim, const char *job_id, int transaction_index);

/*
 * The request side of the contract, for the sandbox: builds a call from a
 * request body posted to /steps/<step_name>. Strict: job_id and step_id are
 * UUIDs, step_name (when present) equals the URL's, attempt >= 1,
 * transaction_index and amount >= 0, the key at most 95 bytes, session an
 * object or null, otp 1..JW_OTP_MAX digits. Returns 0 and *out (caller
 * frees), or JW_EINVAL with err set.
 */
int jw_sim_call_from_json(const json_t *body, const char *step_name, jw_provider_call **out,
                          char *err, size_t errlen);

/* --- the loop adapter ---------------------------------------------------- */

typedef struct jw_sim_provider jw_sim_provider;

/*
 * sim and timers are borrowed and must outlive the adapter. now_us reads the
 * clock the timers run on (NULL: jw_now_us, the wall clock jw_timers
 * expects). deliver(deliver_arg, reply) runs from jw_timers_run on the loop
 * thread; the receiver frees the reply.
 */
jw_sim_provider *jw_sim_provider_new(jw_sim *sim, jw_timers *timers, int64_t (*now_us)(void *arg),
                                     void *now_arg, jw_provider_deliver_fn deliver,
                                     void *deliver_arg);
/* The port for the engine; its destroy() is jw_sim_provider_free. */
jw_provider jw_sim_provider_port(jw_sim_provider *sp);
/* Replies armed but not yet delivered. */
size_t jw_sim_provider_in_flight(const jw_sim_provider *sp);
/* Cancels the undelivered replies (they are dropped) and frees; NULL-safe. */
void jw_sim_provider_free(jw_sim_provider *sp);

#endif
