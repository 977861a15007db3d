/*
 * sim.c - the simulated provider's core: the steps, their OTPs and charges
 * in memory, and what tests and the sandbox inspect. See sim.h; the spec
 * parser is sim_spec.c, the loop adapter sim_provider.c.
 */
#include "sim.h"

#include "jw_error.h"
#include "jw_log.h"
#include "jw_util.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SESSION_TTL_S 3600
#define KEY_BUCKETS 65536 /* power of two */
#define OTP_BUCKETS 4096  /* power of two */
#define OTP_DIGITS 6
#define NODE_KEY_MAX 128 /* an idempotency key, or "<step_id>/<otp_type>" */

/*
 * --- a small bounded hash table, oldest evicted first --------------------
 * (common/jw_map has no notion of age, which the bounds need.)
 */

typedef struct node {
    struct node *hnext;         /* bucket chain */
    struct node *older, *newer; /* age list */
    char key[NODE_KEY_MAX];
} node;

typedef struct table {
    node **buckets;
    size_t mask;
    size_t count, max;
    node *oldest, *newest;
    void (*drop)(node *n); /* frees an evicted or remaining entry */
} table;

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void table_init(table *t, size_t nbuckets, size_t max, void (*drop)(node *n))
{
    t->buckets = jw_xcalloc(nbuckets, sizeof(*t->buckets));
    t->mask = nbuckets - 1;
    t->count = 0;
    t->max = max;
    t->oldest = t->newest = NULL;
    t->drop = drop;
}

static node *table_find(const table *t, const char *key)
{
    for (node *n = t->buckets[hash(key) & t->mask]; n; n = n->hnext)
        if (strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

/* Unlinks n; the caller frees it. */
static void table_unlink(table *t, node *n)
{
    node **pp = &t->buckets[hash(n->key) & t->mask];

    while (*pp != n)
        pp = &(*pp)->hnext;
    *pp = n->hnext;
    if (n->older)
        n->older->newer = n->newer;
    else
        t->oldest = n->newer;
    if (n->newer)
        n->newer->older = n->older;
    else
        t->newest = n->older;
    t->count--;
}

/* Adds n (its key set, not present yet), forgetting the oldest entry when full. */
static void table_add(table *t, node *n)
{
    size_t b = hash(n->key) & t->mask;

    if (t->count == t->max) {
        node *old = t->oldest;

        table_unlink(t, old);
        t->drop(old);
    }
    n->hnext = t->buckets[b];
    t->buckets[b] = n;
    n->older = t->newest;
    n->newer = NULL;
    if (t->newest)
        t->newest->newer = n;
    else
        t->oldest = n;
    t->newest = n;
    t->count++;
}

static void table_release(table *t)
{
    node *n = t->oldest;

    while (n) {
        node *next = n->newer;

        t->drop(n);
        n = next;
    }
    free(t->buckets);
    t->buckets = NULL;
    t->count = 0;
}

/* --- state --------------------------------------------------------------- */

typedef struct key_rec {
    node n; /* n.key: the idempotency key */
    int calls;
    int charges;
    int polls;
    int64_t amount;
    char payment_id[40];
    char job_id[JW_UUID_LEN + 1];
    char step_id[JW_UUID_LEN + 1];
    char step_name[JW_STEP_NAME_MAX];
    int transaction_index;
    json_t *vouchers; /* wait_for_vouchers' outcome once reached */
} key_rec;

/*
 * A step's OTP record. It outlives its code: the issue count must keep
 * counting after a code is used or expires, so a later code for the step
 * never comes from the same derivation input.
 */
typedef struct otp_rec {
    node n; /* n.key: "<step_id>/<otp_type>" */
    char code[OTP_DIGITS + 1];
    bool outstanding; /* code sent, not used, not expired; else code is wiped */
    int64_t expires_us;
    uint64_t issued; /* codes sent for the step by this sim */
} otp_rec;

typedef struct sms {
    uint64_t seq;
    char job_id[JW_UUID_LEN + 1];
    char step_id[JW_UUID_LEN + 1];
    char otp_type[32];
    char phone_hint[16];
    char code[OTP_DIGITS + 1];
    int64_t sent_us;
} sms;

struct jw_sim {
    jw_sim_config cfg;
    uint64_t prng; /* failure decisions only */
    table keys;    /* key_rec */
    table otps;    /* otp_rec */
    sms *inbox;    /* ring of JW_SIM_INBOX_MAX */
    size_t inbox_next, inbox_count;
    uint64_t sms_seq;
    char phone_hint[16];
    bool has_code_key; /* codes derived from code_key instead of drawn at random */
    unsigned char code_key[32];
};

static void drop_key(node *n)
{
    key_rec *r = (key_rec *)n;

    json_decref(r->vouchers);
    free(r);
}

static void drop_otp(node *n)
{
    otp_rec *o = (otp_rec *)n;

    OPENSSL_cleanse(o->code, sizeof(o->code));
    free(o);
}

/* --- randomness ---------------------------------------------------------- */

static void random_bytes(unsigned char *b, size_t n)
{
    if (RAND_bytes(b, (int)n) != 1) {
        jw_log_error("sim: the OpenSSL random generator failed; aborting");
        abort();
    }
}

static void random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[32];

    random_bytes(b, nbytes);
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * nbytes] = '\0';
    OPENSSL_cleanse(b, sizeof(b));
}

/*
 * A uniform 6-digit code: 32 random bits, redrawn while they fall in the
 * incomplete last block of 10^6, so every code is equally likely.
 */
static void random_code(char out[OTP_DIGITS + 1])
{
    const uint32_t limit = 4294000000u; /* the largest multiple of 10^6 below 2^32 */
    uint32_t v;
    unsigned char b[4];

    do {
        random_bytes(b, sizeof(b));
        v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    } while (v >= limit);
    snprintf(out, OTP_DIGITS + 1, "%06" PRIu32, v % 1000000u);
    OPENSSL_cleanse(b, sizeof(b));
}

/* splitmix64: small, fast and good enough for a failure coin. */
static uint64_t prng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* --- configuration -------------------------------------------------------- */

static const char *const step_names[JW_SIM_STEP__COUNT] = {
    [JW_SIM_GYFTR_LOGIN] = "gyftr_login",
    [JW_SIM_AMAZON_LOGIN] = "amazon_login",
    [JW_SIM_AVAILABILITY_CHECK] = "availability_check",
    [JW_SIM_GENERATE_PAYMENT_LINK] = "generate_payment_link",
    [JW_SIM_PROCESS_PAYMENT] = "process_payment",
    [JW_SIM_WAIT_FOR_VOUCHERS] = "wait_for_vouchers",
    [JW_SIM_REDEEM_AMAZON_VOUCHERS] = "redeem_amazon_vouchers",
};

/* The OTP type each step asks for when it needs one; NULL: never. */
static const char *const otp_types[JW_SIM_STEP__COUNT] = {
    [JW_SIM_GYFTR_LOGIN] = "gyftr_login",
    [JW_SIM_AMAZON_LOGIN] = "amazon_login",
    [JW_SIM_PROCESS_PAYMENT] = "payment",
};

const char *jw_sim_step_name(int step)
{
    return step >= 0 && step < JW_SIM_STEP__COUNT ? step_names[step] : NULL;
}

int jw_sim_step_from_name(const char *name)
{
    for (int i = 0; name && i < JW_SIM_STEP__COUNT; i++)
        if (strcmp(step_names[i], name) == 0)
            return i;
    return -1;
}

/* --- the core ------------------------------------------------------------ */

jw_sim *jw_sim_new(const jw_sim_config *cfg)
{
    jw_sim *sim = jw_xcalloc(1, sizeof(*sim));

    if (cfg)
        sim->cfg = *cfg;
    else
        jw_sim_config_init(&sim->cfg);
    if (sim->cfg.has_seed)
        sim->prng = sim->cfg.seed;
    else
        random_bytes((unsigned char *)&sim->prng, sizeof(sim->prng));
    table_init(&sim->keys, KEY_BUCKETS, JW_SIM_MAX_KEYS, drop_key);
    table_init(&sim->otps, OTP_BUCKETS, JW_SIM_MAX_OTPS, drop_otp);
    sim->inbox = jw_xcalloc(JW_SIM_INBOX_MAX, sizeof(*sim->inbox));
    snprintf(sim->phone_hint, sizeof(sim->phone_hint), "******%s", sim->cfg.phone_last4);
    return sim;
}

void jw_sim_free(jw_sim *sim)
{
    if (!sim)
        return;
    table_release(&sim->keys);
    table_release(&sim->otps);
    OPENSSL_cleanse(sim->inbox, JW_SIM_INBOX_MAX * sizeof(*sim->inbox));
    free(sim->inbox);
    free(sim);
}

const jw_sim_config *jw_sim_config_of(const jw_sim *sim)
{
    return &sim->cfg;
}

static jw_provider_reply *reply_error(const jw_provider_call *call, bool retryable, const char *fmt,
                                      ...) __attribute__((format(printf, 3, 4)));

static jw_provider_reply *reply_error(const jw_provider_call *call, bool retryable, const char *fmt,
                                      ...)
{
    jw_provider_reply *r = jw_provider_reply_new(call->id, JW_PROVIDER_ERROR);
    va_list ap;

    r->retryable = retryable;
    r->refused = !retryable; /* the sim knows it did nothing */
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
    return r;
}

static void data_set(jw_provider_reply *r, const char *key, json_t *value)
{
    if (!value || json_object_set_new(r->data, key, value) != 0)
        jw_oom("a sim reply");
}

/* Keys end up in URLs and headers: a conservative alphabet. */
static bool key_valid(const char *k)
{
    size_t n = strnlen(k, JW_IDEMPOTENCY_KEY_MAX);

    if (n == 0 || n >= JW_IDEMPOTENCY_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)k[i]) && !strchr("-._:~", k[i]))
            return false;
    return true;
}

/* Copies a string of the call for a message, printable ASCII only. */
static void printable(char *out, size_t size, const char *s)
{
    size_t i = 0;

    for (; s[i] && i + 1 < size; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = '\0';
}

static key_rec *key_get(jw_sim *sim, const jw_provider_call *call)
{
    key_rec *r = (key_rec *)table_find(&sim->keys, call->idempotency_key);

    if (r)
        return r;
    r = jw_xcalloc(1, sizeof(*r));
    snprintf(r->n.key, sizeof(r->n.key), "%s", call->idempotency_key);
    snprintf(r->job_id, sizeof(r->job_id), "%s", call->job_id);
    snprintf(r->step_id, sizeof(r->step_id), "%s", call->step_id);
    snprintf(r->step_name, sizeof(r->step_name), "%s", call->step_name);
    r->transaction_index = call->transaction_index;
    table_add(&sim->keys, &r->n);
    return r;
}

static void send_sms(jw_sim *sim, const jw_provider_call *call, const char *otp_type,
                     const char *code, int64_t now_us)
{
    sms *m = &sim->inbox[sim->inbox_next];

    OPENSSL_cleanse(m->code, sizeof(m->code));
    memset(m, 0, sizeof(*m));
    m->seq = ++sim->sms_seq;
    snprintf(m->job_id, sizeof(m->job_id), "%s", call->job_id);
    snprintf(m->step_id, sizeof(m->step_id), "%s", call->step_id);
    snprintf(m->otp_type, sizeof(m->otp_type), "%s", otp_type);
    snprintf(m->phone_hint, sizeof(m->phone_hint), "%s", sim->phone_hint);
    memcpy(m->code, code, sizeof(m->code));
    m->sent_us = now_us;
    sim->inbox_next = (sim->inbox_next + 1) % JW_SIM_INBOX_MAX;
    if (sim->inbox_count < JW_SIM_INBOX_MAX)
        sim->inbox_count++;
    /* Sim mode only: the simulated SMS is the one log line with a code. */
    jw_log_info("sim: SMS to %s: your %s code is %s (job=%s step=%s)", sim->phone_hint, otp_type,
                code, m->job_id, m->step_id);
}

static jw_provider_reply *otp_required(jw_sim *sim, const jw_provider_call *call,
                                       const char *otp_type, bool invalid)
{
    jw_provider_reply *r = jw_provider_reply_new(call->id, JW_PROVIDER_OTP_REQUIRED);

    snprintf(r->otp_type, sizeof(r->otp_type), "%s", otp_type);
    snprintf(r->phone_hint, sizeof(r->phone_hint), "%s", sim->phone_hint);
    r->invalid_otp = invalid;
    return r;
}

/*
 * With a code key, a code is HMAC-SHA256(key, "<step_id>/<otp_type>/
 * <idempotency_key>/<attempt>/<issued>/<now_us>") reduced to six digits (the
 * 2^32 mod 10^6 bias is below 0.03%, plenty for a simulator). The key ends in
 * -r<retry_count> and tells job retries apart; issued, the step's issue count,
 * tells apart every code this sim sends for the step, a retry that kept its key
 * included; the issue time tells apart the codes of a restarted sim, or of a
 * record forgotten at the bound, whose issue counts start again at 1. So no
 * two codes for one step share an input (unless the wall clock is set back).
 * The input is not enough to accept a code: otp_gate requires the record.
 */
static void derived_code(const jw_sim *sim, const jw_provider_call *call, const char *otp_type,
                         uint64_t issued, int64_t now_us, char out[OTP_DIGITS + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char msg[256];
    uint32_t v;

    snprintf(msg, sizeof(msg), "%s/%s/%s/%d/%" PRIu64 "/%" PRId64, call->step_id, otp_type,
             call->idempotency_key, call->attempt, issued, now_us);
    HMAC(EVP_sha256(), sim->code_key, sizeof(sim->code_key), (const unsigned char *)msg,
         strlen(msg), md, &mdlen);
    v = (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 | (uint32_t)md[2] << 8 | md[3];
    snprintf(out, OTP_DIGITS + 1, "%06" PRIu32, v % 1000000u);
    OPENSSL_cleanse(md, sizeof(md));
}

void jw_sim_set_code_key(jw_sim *sim, const unsigned char key[32])
{
    memcpy(sim->code_key, key, sizeof(sim->code_key));
    sim->has_code_key = true;
}

/* The code can no longer be used; the record stays for its issue count. */
static void retire_code(otp_rec *o)
{
    OPENSSL_cleanse(o->code, sizeof(o->code));
    o->outstanding = false;
}

/* Sends a fresh code for the step, replacing any outstanding one. */
static void issue_code(jw_sim *sim, const jw_provider_call *call, const char *otp_type,
                       const char *okey, int64_t now_us)
{
    otp_rec *o = (otp_rec *)table_find(&sim->otps, okey);

    if (o) {
        table_unlink(&sim->otps, &o->n); /* added again below, as the newest */
    } else {
        o = jw_xcalloc(1, sizeof(*o));
        snprintf(o->n.key, sizeof(o->n.key), "%s", okey);
    }
    o->issued++;
    if (sim->has_code_key)
        derived_code(sim, call, otp_type, o->issued, now_us, o->code);
    else
        random_code(o->code);
    o->outstanding = true;
    o->expires_us = now_us + (int64_t)JW_SIM_OTP_TTL_MS * 1000;
    table_add(&sim->otps, &o->n);
    send_sms(sim, call, otp_type, o->code, now_us);
}

/*
 * The OTP gate of a step: NULL when the call carries the outstanding code
 * (which is consumed), otherwise the otp_required reply to send.
 */
static jw_provider_reply *otp_gate(jw_sim *sim, const jw_provider_call *call, int step,
                                   int64_t now_us)
{
    const char *type = otp_types[step];
    char okey[NODE_KEY_MAX];
    otp_rec *o;
    size_t given;

    if (!type || !(sim->cfg.otp_steps & JW_SIM_STEP_BIT(step)))
        return NULL;
    snprintf(okey, sizeof(okey), "%s/%s", call->step_id, type);
    if (!call->otp) {
        issue_code(sim, call, type, okey, now_us);
        return otp_required(sim, call, type, false);
    }
    o = (otp_rec *)table_find(&sim->otps, okey);
    if (o && o->outstanding && o->expires_us <= now_us)
        retire_code(o);
    if (!o || !o->outstanding) {
        /*
         * Never sent, used, expired, or sent before a restart: only a record
         * makes a code valid, even one this sim could derive again. Not
         * "wrong, try again": that code is gone, so this asks for the new one.
         */
        jw_log_info("sim: an OTP for %s with no outstanding code; sending a new one "
                    "(job=%s step=%s)",
                    type, call->job_id, call->step_id);
        issue_code(sim, call, type, okey, now_us);
        return otp_required(sim, call, type, false);
    }
    given = strnlen(call->otp, JW_OTP_MAX + 1);
    if (given != OTP_DIGITS || CRYPTO_memcmp(call->otp, o->code, OTP_DIGITS) != 0) {
        jw_log_info("sim: wrong OTP for %s; the code stays valid (job=%s step=%s)", type,
                    call->job_id, call->step_id);
        return otp_required(sim, call, type, true);
    }
    retire_code(o);
    return NULL;
}

typedef jw_provider_reply *(*step_fn)(jw_sim *sim, const jw_provider_call *call, key_rec *rec,
                                      int step, int64_t now_us);

static jw_provider_reply *do_login(jw_sim *sim, const jw_provider_call *call, key_rec *rec,
                                   int step, int64_t now_us)
{
    jw_provider_reply *r = otp_gate(sim, call, step, now_us);
    json_t *session;
    char token[65];

    (void)rec;
    if (r)
        return r;
    random_hex(token, 32);
    session = json_pack("{s:s, s:i}", "token", token, "expires_in", SESSION_TTL_S);
    OPENSSL_cleanse(token, sizeof(token));
    r = jw_provider_reply_new(call->id, JW_PROVIDER_OK);
    data_set(r, "session", session);
    return r;
}

static jw_provider_reply *do_availability(jw_sim *sim, const jw_provider_call *call, key_rec *rec,
                                          int step, int64_t now_us)
{
    jw_provider_reply *r = jw_provider_reply_new(call->id, JW_PROVIDER_OK);

    (void)rec, (void)step, (void)now_us;
    data_set(r, "available", json_boolean(sim->cfg.vouchers > 0));
    data_set(r, "vouchers", json_integer(sim->cfg.vouchers));
    return r;
}

static jw_provider_reply *do_payment_link(jw_sim *sim, const jw_provider_call *call, key_rec *rec,
                                          int step, int64_t now_us)
{
    jw_provider_reply *r = jw_provider_reply_new(call->id, JW_PROVIDER_OK);
    char link[64 + JW_IDEMPOTENCY_KEY_MAX];

    (void)sim, (void)step, (void)now_us;
    snprintf(link, sizeof(link), "https://sim.invalid/pay/%s", rec->n.key);
    data_set(r, "payment_link", json_string(link));
    data_set(r, "amount", json_integer(call->amount));
    return r;
}

static jw_provider_reply *payment_outcome(const jw_provider_call *call, const key_rec *rec)
{
    jw_provider_reply *r = jw_provider_reply_new(call->id, JW_PROVIDER_OK);

    data_set(r, "payment_id", json_string(rec->payment_id));
    data_set(r, "charged", json_integer(rec->amount));
    return r;
}

static jw_provider_reply *do_payment(jw_sim *sim, const jw_provider_call *call, key_rec *rec,
                                     int step, int64_t now_us)
{
    jw_provider_reply *r;
    char id[33];

    if (call->amount <= 0)
        return reply_error(call, false,
                           "process_payment: amount must be positive (got %" PRId64 ")",
                           call->amount);
    if (rec->charges) {
        if (rec->amount != call->amount)
            return reply_error(call, false,
                               "idempotency key reused with a different amount (charged %" PRId64
                               ", now %" PRId64 ")",
                               rec->amount, call->amount);
        jw_log_info("sim: payment replayed for its idempotency key, not charged again "
                    "(job=%s step=%s payment=%s)",
                    call->job_id, call->step_id, rec->payment_id);
        return payment_outcome(call, rec);
    }
    r = otp_gate(sim, call, step, now_us);
    if (r)
        return r;
    random_hex(id, 16);
    snprintf(rec->payment_id, sizeof(rec->payment_id), "pay_%s", id);
    rec->amount = call->amount;
    rec->charges = 1;
    jw_log_info("sim: charged %" PRId64 " (job=%s step=%s payment=%s)", call->amount, call->job_id,
                call->step_id, rec->payment_id);
    return payment_outcome(call, rec);
}

static jw_provider_reply *do_vouchers(jw_sim *sim, const jw_provider_call *call, key_rec *rec,
                                      int step, int64_t now_us)
{
    jw_provider_reply *r;

    (void)step, (void)now_us;
    if (!rec->vouchers && rec->polls < sim->cfg.voucher_polls) {
        rec->polls++;
        r = jw_provider_reply_new(call->id, JW_PROVIDER_PENDING);
        r->poll_after_ms = sim->cfg.poll_after_ms;
        return r;
    }
    if (!rec->vouchers) {
        char hex[13], code[32];

        random_hex(hex, 6);
        for (char *p = hex; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        snprintf(code, sizeof(code), "SIMV-%.4s-%.4s-%.4s", hex, hex + 4, hex + 8);
        rec->vouchers = json_pack("[s]", code);
        if (!rec->vouchers)
            jw_oom("sim vouchers");
    }
    r = jw_provider_reply_new(call->id, JW_PROVIDER_OK);
    data_set(r, "vouchers", json_deep_copy(rec->vouchers));
    return r;
}

static jw_provider_reply *do_redeem(jw_sim *sim, const jw_provider_call *call, key_rec *rec,
                                    int step, int64_t now_us)
{
    jw_provider_reply *r = jw_provider_reply_new(call->id, JW_PROVIDER_OK);

    (void)sim, (void)rec, (void)step, (void)now_us;
    data_set(r, "redeemed", json_integer(call->amount));
    return r;
}

static const struct {
    step_fn fn;
    bool needs_key; /* the step's effect or reply depends on the key */
} step_defs[JW_SIM_STEP__COUNT] = {
    [JW_SIM_GYFTR_LOGIN] = {do_login, false},
    [JW_SIM_AMAZON_LOGIN] = {do_login, false},
    [JW_SIM_AVAILABILITY_CHECK] = {do_availability, false},
    [JW_SIM_GENERATE_PAYMENT_LINK] = {do_payment_link, true},
    [JW_SIM_PROCESS_PAYMENT] = {do_payment, true},
    [JW_SIM_WAIT_FOR_VOUCHERS] = {do_vouchers, true},
    [JW_SIM_REDEEM_AMAZON_VOUCHERS] = {do_redeem, false},
};

static bool should_fail(jw_sim *sim, int step)
{
    double coin;

    if (sim->cfg.fail_rate <= 0.0 || !(sim->cfg.fail_steps & JW_SIM_STEP_BIT(step)))
        return false;
    /* 53 random bits make a double in [0, 1). */
    coin = (double)(prng_next(&sim->prng) >> 11) * (1.0 / 9007199254740992.0);
    return coin < sim->cfg.fail_rate;
}

jw_provider_reply *jw_sim_handle(jw_sim *sim, const jw_provider_call *call, int64_t now_us)
{
    char shown[JW_STEP_NAME_MAX];
    key_rec *rec = NULL;
    int step;

    if (call->idempotency_key[0]) {
        if (!key_valid(call->idempotency_key))
            return reply_error(call, false,
                               "idempotency_key must be 1..%d characters of A-Z a-z 0-9 - . _ : ~",
                               JW_IDEMPOTENCY_KEY_MAX - 1);
        rec = key_get(sim, call);
        rec->calls++;
    }
    step = jw_sim_step_from_name(call->step_name);
    if (step < 0) {
        printable(shown, sizeof(shown), call->step_name);
        return reply_error(call, false, "unknown step '%s'", shown);
    }
    if (step_defs[step].needs_key && !rec)
        return reply_error(call, false, "%s needs an idempotency_key", step_names[step]);
    if (should_fail(sim, step)) {
        jw_log_info("sim: simulated failure of %s (job=%s step=%s)", step_names[step], call->job_id,
                    call->step_id);
        return reply_error(call, sim->cfg.fail_retryable, "simulated failure");
    }
    /* rec is NULL for a call without a key: only steps that need none get here. */
    return step_defs[step].fn(sim, call, rec, step, now_us);
}

/* --- inspection ----------------------------------------------------------- */

json_t *jw_sim_inbox_json(const jw_sim *sim)
{
    json_t *a = json_array();
    size_t first = (sim->inbox_next + JW_SIM_INBOX_MAX - sim->inbox_count) % JW_SIM_INBOX_MAX;

    if (!a)
        jw_oom("the sim inbox");
    for (size_t i = 0; i < sim->inbox_count; i++) {
        const sms *m = &sim->inbox[(first + i) % JW_SIM_INBOX_MAX];
        char ts[40];
        json_t *o;

        jw_format_ts(m->sent_us, ts, sizeof(ts));
        o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "seq", (json_int_t)m->seq, "job_id",
                      m->job_id, "step_id", m->step_id, "otp_type", m->otp_type, "phone_hint",
                      m->phone_hint, "code", m->code, "sent_at", ts);
        if (!o || json_array_append_new(a, o) != 0)
            jw_oom("the sim inbox");
    }
    return a;
}

json_t *jw_sim_charges_json(const jw_sim *sim)
{
    json_t *all = json_object();

    if (!all)
        jw_oom("the sim charges");
    for (const node *n = sim->keys.oldest; n; n = n->newer) {
        const key_rec *r = (const key_rec *)n;
        json_t *o = json_pack("{s:i, s:i, s:I, s:s, s:s, s:s, s:i}", "charges", r->charges, "calls",
                              r->calls, "amount", (json_int_t)r->amount, "job_id", r->job_id,
                              "step_id", r->step_id, "step_name", r->step_name, "transaction_index",
                              r->transaction_index);

        if (!o)
            jw_oom("the sim charges");
        if (r->payment_id[0] && json_object_set_new(o, "payment_id", json_string(r->payment_id)))
            jw_oom("the sim charges");
        if (json_object_set_new(all, r->n.key, o) != 0)
            jw_oom("the sim charges");
    }
    return all;
}

int jw_sim_charges_for(const jw_sim *sim, const char *key)
{
    const key_rec *r = (const key_rec *)table_find(&sim->keys, key);

    return r ? r->charges : 0;
}

int jw_sim_calls_for(const jw_sim *sim, const char *key)
{
    const key_rec *r = (const key_rec *)table_find(&sim->keys, key);

    return r ? r->calls : 0;
}

int jw_sim_charges_for_transaction(const jw_sim *sim, const char *job_id, int transaction_index)
{
    int total = 0;

    for (const node *n = sim->keys.oldest; n; n = n->newer) {
        const key_rec *r = (const key_rec *)n;

        if (r->transaction_index == transaction_index && strcmp(r->job_id, job_id) == 0)
            total += r->charges;
    }
    return total;
}
