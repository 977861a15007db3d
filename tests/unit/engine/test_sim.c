/*
 * Unit tests of engine/providers/sim: the spec string, each step's
 * behaviour, OTPs, idempotent charges, voucher polling, deterministic
 * failures, the bounded inbox, the request parse the sandbox uses, and the
 * loop adapter driven by jw_timers on a fake clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_error.h"
#include "jw_log.h"
#include "providers/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define JOB "11111111-1111-4111-8111-111111111111"
#define STEP "22222222-2222-4222-8222-222222222222"
#define STEP2 "44444444-4444-4444-8444-444444444444"
#define T0 1700000000000000LL /* a wall-clock instant, microseconds */

static jw_provider_call *mkcall(const char *step_name, const char *step_id, const char *key,
                                int64_t amount, const char *otp)
{
    jw_provider_call *c = jw_provider_call_new();

    c->id = 1;
    strcpy(c->job_id, JOB);
    snprintf(c->step_id, sizeof(c->step_id), "%s", step_id);
    snprintf(c->step_name, sizeof(c->step_name), "%s", step_name);
    snprintf(c->idempotency_key, sizeof(c->idempotency_key), "%s", key ? key : "");
    c->transaction_index = 1;
    c->attempt = 1;
    c->amount = amount;
    c->otp = otp ? strdup(otp) : NULL;
    return c;
}

/* One call, freed; the reply is the caller's. */
static jw_provider_reply *call(jw_sim *sim, const char *step_name, const char *step_id,
                               const char *key, int64_t amount, const char *otp)
{
    jw_provider_call *c = mkcall(step_name, step_id, key, amount, otp);
    jw_provider_reply *r = jw_sim_handle(sim, c, T0);

    assert_non_null(r);
    assert_int_equal(r->call_id, 1);
    jw_provider_call_free(c);
    return r;
}

static jw_sim *sim_with(const char *spec)
{
    jw_sim_config cfg;
    char err[256];

    if (jw_sim_config_parse(&cfg, spec, err, sizeof(err)) != 0)
        fail_msg("spec %s: %s", spec, err);
    return jw_sim_new(&cfg);
}

/* The newest SMS's code; asserts its ids and type. */
static void last_code(jw_sim *sim, const char *step_id, const char *otp_type, char out[8])
{
    json_t *inbox = jw_sim_inbox_json(sim);
    json_t *m = json_array_get(inbox, json_array_size(inbox) - 1);

    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "job_id")), JOB);
    assert_string_equal(json_string_value(json_object_get(m, "step_id")), step_id);
    assert_string_equal(json_string_value(json_object_get(m, "otp_type")), otp_type);
    assert_string_equal(json_string_value(json_object_get(m, "phone_hint")), "******4821");
    assert_non_null(json_string_value(json_object_get(m, "sent_at")));
    assert_int_equal(strlen(json_string_value(json_object_get(m, "code"))), 6);
    assert_int_equal(strspn(json_string_value(json_object_get(m, "code")), "0123456789"), 6);
    strcpy(out, json_string_value(json_object_get(m, "code")));
    json_decref(inbox);
}

static size_t inbox_size(jw_sim *sim)
{
    json_t *inbox = jw_sim_inbox_json(sim);
    size_t n = json_array_size(inbox);

    json_decref(inbox);
    return n;
}

/* A code that differs from code in every digit. */
static void wrong_code(const char *code, char out[8])
{
    for (int i = 0; i < 6; i++)
        out[i] = (char)('0' + (code[i] - '0' + 1) % 10);
    out[6] = '\0';
}

/* --- configuration ------------------------------------------------------- */

static void spec_refused(const char *spec, const char *want)
{
    jw_sim_config cfg;
    char err[512] = "";

    if (jw_sim_config_parse(&cfg, spec, err, sizeof(err)) != JW_ECONFIG)
        fail_msg("accepted: %s", spec);
    if (!strstr(err, want))
        fail_msg("spec %s: message \"%s\" lacks \"%s\"", spec, err, want);
}

static void test_spec(void **state)
{
    jw_sim_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(jw_sim_config_parse(&cfg, NULL, err, sizeof(err)), 0);
    assert_int_equal(cfg.latency_ms, 100);
    assert_true(cfg.otp_steps ==
                (JW_SIM_STEP_BIT(JW_SIM_GYFTR_LOGIN) | JW_SIM_STEP_BIT(JW_SIM_AMAZON_LOGIN) |
                 JW_SIM_STEP_BIT(JW_SIM_PROCESS_PAYMENT)));
    assert_int_equal(cfg.voucher_polls, 2);
    assert_false(cfg.has_seed);

    assert_int_equal(jw_sim_config_parse(&cfg,
                                         "latency_ms=50,fail_rate=0.25,otp=gyftr_login+payment,"
                                         "voucher_polls=3,poll_after_ms=75,fail_steps=process_"
                                         "payment,fail_retryable=0,seed=42,vouchers=7,phone=0001",
                                         err, sizeof(err)),
                     0);
    assert_int_equal(cfg.latency_ms, 50);
    assert_true(cfg.fail_rate == 0.25);
    assert_true(cfg.otp_steps ==
                (JW_SIM_STEP_BIT(JW_SIM_GYFTR_LOGIN) | JW_SIM_STEP_BIT(JW_SIM_PROCESS_PAYMENT)));
    assert_int_equal(cfg.voucher_polls, 3);
    assert_int_equal(cfg.poll_after_ms, 75);
    assert_true(cfg.fail_steps == JW_SIM_STEP_BIT(JW_SIM_PROCESS_PAYMENT));
    assert_false(cfg.fail_retryable);
    assert_true(cfg.has_seed);
    assert_int_equal(cfg.seed, 42);
    assert_int_equal(cfg.vouchers, 7);
    assert_string_equal(cfg.phone_last4, "0001");
    assert_int_equal(jw_sim_config_parse(&cfg, "otp=none,fail_steps=*", err, sizeof(err)), 0);
    assert_int_equal(cfg.otp_steps, 0);
    assert_int_equal(cfg.fail_steps, JW_SIM_ALL_STEPS);

    spec_refused("latency=5", "unknown key 'latency'");
    spec_refused("latency_ms=60001", "latency_ms must be 0..60000 (got '60001')");
    spec_refused("latency_ms=abc", "latency_ms must be 0..60000");
    spec_refused("latency_ms=-1", "latency_ms must be 0..60000");
    spec_refused("fail_rate=1.5", "fail_rate must be a number 0..1");
    spec_refused("fail_rate=nan", "fail_rate must be a number 0..1");
    spec_refused("fail_steps=pay_everything", "unknown step 'pay_everything'");
    spec_refused("otp=availability_check", "only gyftr_login, amazon_login and process_payment");
    spec_refused("otp=gyftr_login+", "a '+' must be followed by a step name");
    spec_refused("voucher_polls=1001", "voucher_polls must be 0..1000");
    spec_refused("poll_after_ms=600001", "poll_after_ms must be 0..600000");
    spec_refused("phone=12", "phone must be the number's last 4 digits");
    spec_refused("seed=-3", "seed must be an unsigned decimal integer");
    spec_refused("fail_retryable=yes", "fail_retryable must be 0 or 1");
    spec_refused("latency_ms", "is not key=value");
    spec_refused("latency_ms=5 ,x=1", "space or not printable");
    {
        char big[JW_SIM_SPEC_MAX + 2];

        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        spec_refused(big, "limit 1024");
    }
}

/* --- OTP flow ------------------------------------------------------------ */

static void otp_flow(const char *step_name, const char *otp_type)
{
    jw_sim *sim = sim_with("latency_ms=0");
    jw_provider_reply *r;
    char code[8], bad[8], code2[8];
    const char *key = "jw-key-otp";
    int64_t amount = strcmp(step_name, "process_payment") == 0 ? 5000 : 0;

    /* No OTP: a fresh code goes out as an SMS. */
    r = call(sim, step_name, STEP, key, amount, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
    assert_string_equal(r->otp_type, otp_type);
    assert_string_equal(r->phone_hint, "******4821");
    assert_false(r->invalid_otp);
    jw_provider_reply_free(r);
    assert_int_equal(inbox_size(sim), 1);
    last_code(sim, STEP, otp_type, code);

    /* Wrong: asked again, the same code stays valid, no new SMS. */
    wrong_code(code, bad);
    r = call(sim, step_name, STEP, key, amount, bad);
    assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
    assert_true(r->invalid_otp);
    assert_string_equal(r->otp_type, otp_type);
    jw_provider_reply_free(r);
    assert_int_equal(inbox_size(sim), 1);
    assert_int_equal(jw_sim_charges_for(sim, key), 0);

    /* A code for another step is not this step's code. */
    r = call(sim, step_name, STEP2, "jw-other", amount, code);
    assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
    jw_provider_reply_free(r);
    assert_int_equal(inbox_size(sim), 2); /* STEP2 had none: it got a fresh one */

    /* Right: the step proceeds. */
    r = call(sim, step_name, STEP, key, amount, code);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    if (amount) {
        assert_int_equal(json_integer_value(json_object_get(r->data, "charged")), amount);
        assert_int_equal(jw_sim_charges_for(sim, key), 1);
    } else {
        json_t *session = json_object_get(r->data, "session");

        assert_int_equal(strlen(json_string_value(json_object_get(session, "token"))), 64);
        assert_int_equal(json_integer_value(json_object_get(session, "expires_in")), 3600);
    }
    jw_provider_reply_free(r);

    if (!amount) {
        /* Consumed: the same code again finds none outstanding, and a new one is sent. */
        r = call(sim, step_name, STEP, key, amount, code);
        assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
        assert_false(r->invalid_otp);
        jw_provider_reply_free(r);
        assert_int_equal(inbox_size(sim), 3);

        /* A fresh request replaces the outstanding code: the older one is dead. */
        last_code(sim, STEP, otp_type, code);
        r = call(sim, step_name, STEP, key, amount, NULL);
        jw_provider_reply_free(r);
        last_code(sim, STEP, otp_type, code2);
        if (strcmp(code, code2) != 0) { /* 1 in 10^6 they collide */
            r = call(sim, step_name, STEP, key, amount, code);
            assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
            assert_true(r->invalid_otp);
            jw_provider_reply_free(r);
        }
        r = call(sim, step_name, STEP, key, amount, code2);
        assert_int_equal(r->status, JW_PROVIDER_OK);
        jw_provider_reply_free(r);
    }
    jw_sim_free(sim);
}

static void test_otp_gyftr_login(void **state)
{
    (void)state;
    otp_flow("gyftr_login", "gyftr_login");
}

static void test_otp_amazon_login(void **state)
{
    (void)state;
    otp_flow("amazon_login", "amazon_login");
}

static void test_otp_payment(void **state)
{
    (void)state;
    otp_flow("process_payment", "payment");
}

static void test_otp_expires(void **state)
{
    jw_sim *sim = sim_with("latency_ms=0");
    jw_provider_call *c = mkcall("gyftr_login", STEP, NULL, 0, NULL);
    jw_provider_reply *r;
    char code[8];

    (void)state;
    jw_provider_reply_free(jw_sim_handle(sim, c, T0));
    last_code(sim, STEP, "gyftr_login", code);
    c->otp = strdup(code);
    r = jw_sim_handle(sim, c, T0 + (int64_t)JW_SIM_OTP_TTL_MS * 1000);
    assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED); /* too late: a new code */
    assert_false(r->invalid_otp);
    jw_provider_reply_free(r);
    assert_int_equal(inbox_size(sim), 2);
    jw_provider_call_free(c);
    jw_sim_free(sim);
}

static void test_otp_not_required(void **state)
{
    jw_sim *sim = sim_with("otp=amazon_login");
    jw_provider_reply *r;

    (void)state;
    r = call(sim, "gyftr_login", STEP, NULL, 0, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_non_null(json_object_get(r->data, "session"));
    jw_provider_reply_free(r);
    r = call(sim, "process_payment", STEP, "k-1", 10, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    jw_provider_reply_free(r);
    r = call(sim, "amazon_login", STEP, NULL, 0, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
    jw_provider_reply_free(r);
    assert_int_equal(inbox_size(sim), 1);
    jw_sim_free(sim);
}

/* The SMS line is the one log line with the code; wrong codes are never logged. */
static void test_sms_logged_otp_nowhere_else(void **state)
{
    char path[] = "/tmp/test_sim_log.XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    jw_sim *sim = sim_with("latency_ms=0");
    jw_provider_reply *r;
    char code[8], bad[8], line[256], *log;
    int with_code = 0;
    FILE *f;
    long size;

    (void)state;
    assert_true(fd >= 0 && saved >= 0);
    jw_log_set_level(JW_LOG_DEBUG);
    dup2(fd, STDERR_FILENO);
    jw_provider_reply_free(call(sim, "gyftr_login", STEP, NULL, 0, NULL));
    last_code(sim, STEP, "gyftr_login", code);
    wrong_code(code, bad);
    jw_provider_reply_free(call(sim, "gyftr_login", STEP, NULL, 0, bad));
    r = call(sim, "gyftr_login", STEP, NULL, 0, code);
    dup2(saved, STDERR_FILENO);
    close(saved);
    jw_log_set_level(JW_LOG_WARN);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    jw_provider_reply_free(r);

    f = fdopen(fd, "r");
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    rewind(f);
    log = calloc(1, (size_t)size + 1);
    assert_int_equal(fread(log, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    unlink(path);
    snprintf(line, sizeof(line),
             "sim: SMS to ******4821: your gyftr_login code is %s (job=" JOB " step=" STEP ")",
             code);
    /* Messages only: a timestamp's microseconds could match six digits by chance. */
    for (char *l = strtok(log, "\n"); l; l = strtok(NULL, "\n")) {
        char *msg = strchr(l, ' '); /* "<time> <LEVEL> <message>" */

        assert_non_null(msg);
        msg += strspn(msg, " ");
        msg += strcspn(msg, " "); /* the level */
        msg += strspn(msg, " ");
        if (strstr(msg, code)) {
            assert_string_equal(msg, line);
            with_code++;
        }
        assert_null(strstr(msg, bad));
    }
    assert_int_equal(with_code, 1);
    free(log);
    jw_sim_free(sim);
}

/* --- idempotency --------------------------------------------------------- */

static void test_idempotent_charge(void **state)
{
    jw_sim *sim = sim_with("otp=none");
    jw_provider_reply *r;
    char payment_id[64];
    json_t *charges, *k;

    (void)state;
    r = call(sim, "process_payment", STEP, "jw-pay-1", 2500, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_int_equal(json_integer_value(json_object_get(r->data, "charged")), 2500);
    strcpy(payment_id, json_string_value(json_object_get(r->data, "payment_id")));
    assert_int_equal(strncmp(payment_id, "pay_", 4), 0);
    jw_provider_reply_free(r);

    /* The same key again: the recorded outcome, no second charge. */
    r = call(sim, "process_payment", STEP, "jw-pay-1", 2500, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_string_equal(json_string_value(json_object_get(r->data, "payment_id")), payment_id);
    jw_provider_reply_free(r);
    assert_int_equal(jw_sim_charges_for(sim, "jw-pay-1"), 1);
    assert_int_equal(jw_sim_calls_for(sim, "jw-pay-1"), 2);
    assert_int_equal(jw_sim_charges_for_transaction(sim, JOB, 1), 1);

    /* The same key with another amount is refused, and charges nothing. */
    r = call(sim, "process_payment", STEP, "jw-pay-1", 9999, NULL);
    assert_int_equal(r->status, JW_PROVIDER_ERROR);
    assert_false(r->retryable);
    assert_non_null(strstr(r->message, "different amount"));
    jw_provider_reply_free(r);
    assert_int_equal(jw_sim_charges_for(sim, "jw-pay-1"), 1);
    assert_int_equal(jw_sim_calls_for(sim, "jw-pay-1"), 3);

    /* A new key for the same transaction would pay twice: visible per transaction. */
    jw_provider_reply_free(call(sim, "process_payment", STEP, "jw-pay-2", 2500, NULL));
    assert_int_equal(jw_sim_charges_for(sim, "jw-pay-2"), 1);
    assert_int_equal(jw_sim_charges_for_transaction(sim, JOB, 1), 2);
    assert_int_equal(jw_sim_charges_for(sim, "never-seen"), 0);
    assert_int_equal(jw_sim_calls_for(sim, "never-seen"), 0);

    charges = jw_sim_charges_json(sim);
    k = json_object_get(charges, "jw-pay-1");
    assert_int_equal(json_integer_value(json_object_get(k, "charges")), 1);
    assert_int_equal(json_integer_value(json_object_get(k, "calls")), 3);
    assert_int_equal(json_integer_value(json_object_get(k, "amount")), 2500);
    assert_string_equal(json_string_value(json_object_get(k, "job_id")), JOB);
    assert_string_equal(json_string_value(json_object_get(k, "payment_id")), payment_id);
    assert_int_equal(json_integer_value(json_object_get(k, "transaction_index")), 1);
    json_decref(charges);
    jw_sim_free(sim);
}

static void test_payment_with_otp_replays_without_otp(void **state)
{
    jw_sim *sim = sim_with(NULL);
    jw_provider_reply *r;
    char code[8];

    (void)state;
    jw_provider_reply_free(call(sim, "process_payment", STEP, "k", 100, NULL));
    last_code(sim, STEP, "payment", code);
    r = call(sim, "process_payment", STEP, "k", 100, code);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    jw_provider_reply_free(r);
    /* A retry after a lost reply carries no OTP: it gets the outcome, not a prompt. */
    r = call(sim, "process_payment", STEP, "k", 100, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    jw_provider_reply_free(r);
    assert_int_equal(inbox_size(sim), 1);
    assert_int_equal(jw_sim_charges_for(sim, "k"), 1);
    assert_int_equal(jw_sim_calls_for(sim, "k"), 3);
    jw_sim_free(sim);
}

/* --- the other steps ----------------------------------------------------- */

static void test_voucher_polling(void **state)
{
    jw_sim *sim = sim_with("voucher_polls=2,poll_after_ms=150");
    jw_provider_reply *r;
    char code[64];

    (void)state;
    for (int i = 0; i < 2; i++) {
        r = call(sim, "wait_for_vouchers", STEP, "jw-v-1", 100, NULL);
        assert_int_equal(r->status, JW_PROVIDER_PENDING);
        assert_int_equal(r->poll_after_ms, 150);
        jw_provider_reply_free(r);
    }
    r = call(sim, "wait_for_vouchers", STEP, "jw-v-1", 100, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_int_equal(json_array_size(json_object_get(r->data, "vouchers")), 1);
    strcpy(code, json_string_value(json_array_get(json_object_get(r->data, "vouchers"), 0)));
    assert_int_equal(strncmp(code, "SIMV-", 5), 0);
    jw_provider_reply_free(r);
    /* Later calls: the same vouchers. */
    r = call(sim, "wait_for_vouchers", STEP, "jw-v-1", 100, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r->data, "vouchers"), 0)),
                        code);
    jw_provider_reply_free(r);
    /* Another key polls on its own. */
    r = call(sim, "wait_for_vouchers", STEP, "jw-v-2", 100, NULL);
    assert_int_equal(r->status, JW_PROVIDER_PENDING);
    jw_provider_reply_free(r);
    jw_sim_free(sim);

    sim = sim_with("voucher_polls=0");
    r = call(sim, "wait_for_vouchers", STEP, "jw-v-1", 100, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    jw_provider_reply_free(r);
    jw_sim_free(sim);
}

static void test_simple_steps(void **state)
{
    jw_sim *sim = sim_with("vouchers=12");
    jw_provider_reply *r;

    (void)state;
    r = call(sim, "availability_check", STEP, NULL, 0, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_true(json_is_true(json_object_get(r->data, "available")));
    assert_int_equal(json_integer_value(json_object_get(r->data, "vouchers")), 12);
    jw_provider_reply_free(r);

    r = call(sim, "generate_payment_link", STEP, "jw-link-7", 300, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_string_equal(json_string_value(json_object_get(r->data, "payment_link")),
                        "https://sim.invalid/pay/jw-link-7");
    jw_provider_reply_free(r);

    r = call(sim, "redeem_amazon_vouchers", STEP, "jw-r", 300, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_int_equal(json_integer_value(json_object_get(r->data, "redeemed")), 300);
    jw_provider_reply_free(r);

    /* Keyed steps need a key; a key must be URL- and header-safe. */
    r = call(sim, "process_payment", STEP, NULL, 300, NULL);
    assert_int_equal(r->status, JW_PROVIDER_ERROR);
    assert_false(r->retryable);
    assert_non_null(strstr(r->message, "process_payment needs an idempotency_key"));
    jw_provider_reply_free(r);
    r = call(sim, "generate_payment_link", STEP, "a/b?c", 300, NULL);
    assert_int_equal(r->status, JW_PROVIDER_ERROR);
    assert_non_null(strstr(r->message, "idempotency_key must be"));
    jw_provider_reply_free(r);
    r = call(sim, "process_payment", STEP, "jw-neg", 0, NULL);
    assert_int_equal(r->status, JW_PROVIDER_ERROR);
    assert_non_null(strstr(r->message, "amount must be positive"));
    jw_provider_reply_free(r);
    jw_sim_free(sim);
}

static void test_unknown_step(void **state)
{
    jw_sim *sim = sim_with(NULL);
    jw_provider_reply *r = call(sim, "buy_a_yacht", STEP, "jw-y", 1, NULL);

    (void)state;
    assert_int_equal(r->status, JW_PROVIDER_ERROR);
    assert_false(r->retryable);
    assert_string_equal(r->message, "unknown step 'buy_a_yacht'");
    jw_provider_reply_free(r);
    jw_sim_free(sim);
}

/* --- failures ------------------------------------------------------------ */

/* A bit per call: 1 = simulated failure. */
static void failure_pattern(const char *spec, const char *step, bool out[200])
{
    jw_sim *sim = sim_with(spec);

    for (int i = 0; i < 200; i++) {
        char key[32];
        jw_provider_reply *r;

        snprintf(key, sizeof(key), "k-%d", i);
        r = call(sim, step, STEP, key, 10, NULL);
        out[i] = r->status == JW_PROVIDER_ERROR && strcmp(r->message, "simulated failure") == 0;
        if (out[i]) {
            assert_true(r->retryable);
            assert_int_equal(jw_sim_charges_for(sim, key), 0); /* failed before any effect */
        }
        jw_provider_reply_free(r);
    }
    jw_sim_free(sim);
}

static void test_failures_deterministic_with_seed(void **state)
{
    bool a[200], b[200], c[200];
    int fails = 0, differ = 0;

    (void)state;
    failure_pattern("otp=none,fail_rate=0.5,seed=1234", "process_payment", a);
    failure_pattern("otp=none,fail_rate=0.5,seed=1234", "process_payment", b);
    failure_pattern("otp=none,fail_rate=0.5,seed=99", "process_payment", c);
    for (int i = 0; i < 200; i++) {
        fails += a[i];
        differ += a[i] != c[i];
    }
    assert_memory_equal(a, b, sizeof(a));
    /* About half fail (binomial(200, 0.5): far outside 50..150 never happens). */
    assert_in_range(fails, 50, 150);
    assert_true(differ > 0); /* another seed, another pattern */
}

static void test_failures_limited_to_steps(void **state)
{
    jw_sim *sim = sim_with("otp=none,fail_rate=1,fail_steps=process_payment,fail_retryable=0");
    jw_provider_reply *r;

    (void)state;
    r = call(sim, "availability_check", STEP, NULL, 0, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    jw_provider_reply_free(r);
    r = call(sim, "process_payment", STEP, "k", 10, NULL);
    assert_int_equal(r->status, JW_PROVIDER_ERROR);
    assert_false(r->retryable);
    assert_string_equal(r->message, "simulated failure");
    jw_provider_reply_free(r);
    assert_int_equal(jw_sim_charges_for(sim, "k"), 0);
    assert_int_equal(jw_sim_calls_for(sim, "k"), 1);
    jw_sim_free(sim);

    sim = sim_with("fail_rate=0");
    r = call(sim, "availability_check", STEP, NULL, 0, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    jw_provider_reply_free(r);
    jw_sim_free(sim);
}

/* --- the inbox ----------------------------------------------------------- */

static void test_inbox_bounded(void **state)
{
    jw_sim *sim = sim_with(NULL);
    json_t *inbox;
    int total = JW_SIM_INBOX_MAX + 5;

    (void)state;
    for (int i = 0; i < total; i++) {
        char step_id[JW_UUID_LEN + 1];
        jw_provider_reply *r;

        snprintf(step_id, sizeof(step_id), "22222222-2222-4222-8222-%012d", i);
        r = call(sim, "amazon_login", step_id, NULL, 0, NULL);
        assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
        jw_provider_reply_free(r);
    }
    inbox = jw_sim_inbox_json(sim);
    assert_int_equal(json_array_size(inbox), JW_SIM_INBOX_MAX);
    /* Oldest first; the first five fell out. */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(inbox, 0), "seq")), 6);
    assert_string_equal(json_string_value(json_object_get(json_array_get(inbox, 0), "step_id")),
                        "22222222-2222-4222-8222-000000000005");
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(inbox, JW_SIM_INBOX_MAX - 1), "seq")),
        total);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(inbox, JW_SIM_INBOX_MAX - 1), "step_id")),
        "22222222-2222-4222-8222-000000001004");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(inbox, JW_SIM_INBOX_MAX - 1), "job_id")),
        JOB);
    json_decref(inbox);
    jw_sim_free(sim);
}

/* --- the request parse (sandbox side) ------------------------------------ */

static void test_call_from_json(void **state)
{
    jw_provider_call *in = mkcall("process_payment", STEP, "jw-k", 700, "123456"), *out = NULL;
    json_t *body;
    char err[256];

    (void)state;
    in->session = json_pack("{s:{s:s}}", "gyftr", "token", "x");
    body = jw_provider_call_to_json(in);
    assert_int_equal(jw_sim_call_from_json(body, "process_payment", &out, err, sizeof(err)), 0);
    assert_string_equal(out->job_id, JOB);
    assert_string_equal(out->step_id, STEP);
    assert_string_equal(out->step_name, "process_payment");
    assert_string_equal(out->idempotency_key, "jw-k");
    assert_int_equal(out->amount, 700);
    assert_int_equal(out->attempt, 1);
    assert_int_equal(out->transaction_index, 1);
    assert_string_equal(out->otp, "123456");
    assert_true(json_equal(out->session, in->session));
    jw_provider_call_free(out);

    /* The URL's step must match the body's. */
    assert_int_equal(jw_sim_call_from_json(body, "gyftr_login", &out, err, sizeof(err)), JW_EINVAL);
    assert_null(out);
    assert_non_null(strstr(err, "must equal the step in the URL"));
    assert_int_equal(jw_sim_call_from_json(body, "Bad-Step", &out, err, sizeof(err)), JW_EINVAL);

#define REFUSE(key, value, want)                                                                   \
    do {                                                                                           \
        json_t *b = json_deep_copy(body);                                                          \
        json_object_set_new(b, key, value);                                                        \
        assert_int_equal(jw_sim_call_from_json(b, "process_payment", &out, err, sizeof(err)),      \
                         JW_EINVAL);                                                               \
        assert_null(out);                                                                          \
        if (!strstr(err, want))                                                                    \
            fail_msg("%s: \"%s\" lacks \"%s\"", key, err, want);                                   \
        json_decref(b);                                                                            \
    } while (0)
    REFUSE("job_id", json_string("nope"), "\"job_id\" must be a UUID");
    REFUSE("step_id", json_integer(3), "\"step_id\" must be a UUID");
    REFUSE("attempt", json_integer(0), "\"attempt\" must be an integer 1..");
    REFUSE("amount", json_integer(-5), "\"amount\" must be an integer 0..");
    REFUSE("amount", json_real(1.5), "\"amount\" must be an integer");
    REFUSE("transaction_index", json_string("1"), "\"transaction_index\" must be an integer");
    REFUSE("otp", json_string("12a456"), "\"otp\" must be a string of 1..16 digits");
    REFUSE("otp", json_string("12345678901234567"), "\"otp\" must be a string of 1..16 digits");
    REFUSE("otp", json_integer(123456), "\"otp\" must be a string");
    REFUSE("session", json_string("tok"), "\"session\" must be an object or null");
    {
        char longkey[JW_IDEMPOTENCY_KEY_MAX + 1];

        memset(longkey, 'k', sizeof(longkey) - 1);
        longkey[sizeof(longkey) - 1] = '\0';
        REFUSE("idempotency_key", json_string(longkey), "\"idempotency_key\" must be a string");
    }
#undef REFUSE
    assert_int_equal(jw_sim_call_from_json(json_array_get(body, 0), "x", &out, err, sizeof(err)),
                     JW_EINVAL);
    json_decref(body);
    jw_provider_call_free(in);
}

/* --- the loop adapter ---------------------------------------------------- */

static struct {
    int64_t now;
    jw_provider_reply *got[8];
    size_t ngot;
} L;

static int64_t fake_now(void *arg)
{
    (void)arg;
    return L.now;
}

static void deliver(void *arg, jw_provider_reply *r)
{
    assert_ptr_equal(arg, &L);
    assert_true(L.ngot < 8);
    L.got[L.ngot++] = r;
}

static void test_adapter_delivers_after_latency(void **state)
{
    jw_sim *sim = sim_with("latency_ms=50,otp=none");
    jw_timers *timers = jw_timers_new(NULL, NULL);
    jw_sim_provider *sp;
    jw_provider port;
    jw_provider_call *c;

    (void)state;
    memset(&L, 0, sizeof(L));
    L.now = T0;
    sp = jw_sim_provider_new(sim, timers, fake_now, NULL, deliver, &L);
    port = jw_sim_provider_port(sp);
    assert_string_equal(port.name, "sim");

    c = mkcall("process_payment", STEP, "jw-a", 80, NULL);
    c->id = 41;
    assert_int_equal(port.start(port.ctx, c), 0);
    /* The effect happened at start; the reply waits for the latency. */
    assert_int_equal(jw_sim_charges_for(sim, "jw-a"), 1);
    assert_int_equal(L.ngot, 0);
    assert_int_equal(jw_sim_provider_in_flight(sp), 1);
    assert_true(jw_timers_next(timers) == T0 + 50000);

    L.now = T0 + 49999;
    jw_timers_run(timers, L.now);
    assert_int_equal(L.ngot, 0);
    L.now = T0 + 50000;
    jw_timers_run(timers, L.now);
    assert_int_equal(L.ngot, 1);
    assert_int_equal(L.got[0]->call_id, 41);
    assert_int_equal(L.got[0]->status, JW_PROVIDER_OK);
    assert_int_equal(jw_sim_provider_in_flight(sp), 0);
    jw_provider_reply_free(L.got[0]);

    /* Freeing with replies in flight drops them: no delivery, no leak. */
    c = mkcall("availability_check", STEP, NULL, 0, NULL);
    assert_int_equal(port.start(port.ctx, c), 0);
    assert_int_equal(jw_timers_count(timers), 1);
    port.destroy(port.ctx);
    assert_int_equal(jw_timers_count(timers), 0);
    assert_int_equal(L.ngot, 1);
    jw_timers_free(timers);
    jw_sim_free(sim);
}

static void test_adapter_never_delivers_inside_start(void **state)
{
    jw_sim *sim = sim_with("latency_ms=0");
    jw_timers *timers = jw_timers_new(NULL, NULL);
    jw_sim_provider *sp;
    jw_provider port;

    (void)state;
    memset(&L, 0, sizeof(L));
    L.now = T0;
    sp = jw_sim_provider_new(sim, timers, fake_now, NULL, deliver, &L);
    port = jw_sim_provider_port(sp);
    assert_int_equal(port.start(port.ctx, mkcall("availability_check", STEP, NULL, 0, NULL)), 0);
    assert_int_equal(port.start(port.ctx, mkcall("gyftr_login", STEP, NULL, 0, NULL)), 0);
    assert_int_equal(L.ngot, 0);
    assert_int_equal(jw_timers_run(timers, L.now), 2);
    assert_int_equal(L.ngot, 2);
    assert_int_equal(port.start(port.ctx, NULL), JW_EINVAL);
    for (size_t i = 0; i < L.ngot; i++)
        jw_provider_reply_free(L.got[i]);
    jw_sim_provider_free(sp);
    jw_sim_provider_free(NULL);
    jw_timers_free(timers);
    jw_sim_free(sim);
}

/* --- codes derived from a code key --------------------------------------- */

static const unsigned char code_key[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1};

static jw_sim *keyed_sim(void)
{
    jw_sim *sim = sim_with("otp=gyftr_login+payment");

    jw_sim_set_code_key(sim, code_key);
    return sim;
}

/*
 * A call as the engine makes it for step_id, attempt 1 of job retry retry:
 * key "jw-<step_id>-r<retry>" (engine.c make_key), with otp, handled at now.
 * The reply is the caller's.
 */
static jw_provider_reply *step_call(jw_sim *sim, const char *step_name, const char *step_id,
                                    int retry, const char *otp, int64_t now)
{
    char key[JW_IDEMPOTENCY_KEY_MAX];
    jw_provider_call *c;
    jw_provider_reply *r;

    snprintf(key, sizeof(key), "jw-%s-r%d", step_id, retry);
    c = mkcall(step_name, step_id, key, 5000, otp);
    r = jw_sim_handle(sim, c, now);
    jw_provider_call_free(c);
    return r;
}

/* Asserts the reply's status and invalid_otp, and frees it. */
static void expect(jw_provider_reply *r, jw_provider_status status, bool invalid_otp)
{
    assert_int_equal(r->status, status);
    assert_int_equal(r->invalid_otp, invalid_otp);
    jw_provider_reply_free(r);
}

/*
 * A job retry starts the step's attempts again at 1 under the key of the new
 * retry: its code is a new one. Both calls at one instant, so the issue time
 * in the derivation does not tell them apart.
 */
static void test_code_new_on_job_retry(void **state)
{
    jw_sim *sim = keyed_sim();
    char first[8], retried[8];

    (void)state;
    expect(step_call(sim, "gyftr_login", STEP, 0, NULL, T0), JW_PROVIDER_OTP_REQUIRED, false);
    last_code(sim, STEP, "gyftr_login", first);
    expect(step_call(sim, "gyftr_login", STEP, 1, NULL, T0), JW_PROVIDER_OTP_REQUIRED, false);
    last_code(sim, STEP, "gyftr_login", retried);
    assert_string_not_equal(first, retried);
    jw_sim_free(sim);
}

/*
 * A job retry of a payment whose outcome was unknown keeps its key: the same
 * call again (key, attempt 1, same instant) still gets a new code, and only
 * the newest is accepted.
 */
static void test_code_new_when_key_kept(void **state)
{
    jw_sim *sim = keyed_sim();
    char first[8], retried[8];

    (void)state;
    expect(step_call(sim, "process_payment", STEP, 0, NULL, T0), JW_PROVIDER_OTP_REQUIRED, false);
    last_code(sim, STEP, "payment", first);
    expect(step_call(sim, "process_payment", STEP, 0, NULL, T0), JW_PROVIDER_OTP_REQUIRED, false);
    last_code(sim, STEP, "payment", retried);
    assert_string_not_equal(first, retried);
    expect(step_call(sim, "process_payment", STEP, 0, first, T0), JW_PROVIDER_OTP_REQUIRED, true);
    expect(step_call(sim, "process_payment", STEP, 0, retried, T0), JW_PROVIDER_OK, false);
    jw_sim_free(sim);
}

/* An expired code is refused although the sim could derive it again; a new one is sent. */
static void test_code_expired_refused(void **state)
{
    jw_sim *sim = keyed_sim();
    int64_t late = T0 + (int64_t)JW_SIM_OTP_TTL_MS * 1000;
    char code[8], fresh[8];

    (void)state;
    expect(step_call(sim, "gyftr_login", STEP, 0, NULL, T0), JW_PROVIDER_OTP_REQUIRED, false);
    last_code(sim, STEP, "gyftr_login", code);
    expect(step_call(sim, "gyftr_login", STEP, 0, code, late), JW_PROVIDER_OTP_REQUIRED, false);
    assert_int_equal(inbox_size(sim), 2);
    last_code(sim, STEP, "gyftr_login", fresh);
    assert_string_not_equal(code, fresh);
    expect(step_call(sim, "gyftr_login", STEP, 0, fresh, late), JW_PROVIDER_OK, false);
    jw_sim_free(sim);
}

/* A used code is refused although the sim could derive it again; a new one is sent. */
static void test_code_used_refused(void **state)
{
    jw_sim *sim = keyed_sim();
    char code[8], fresh[8];

    (void)state;
    expect(step_call(sim, "gyftr_login", STEP, 0, NULL, T0), JW_PROVIDER_OTP_REQUIRED, false);
    last_code(sim, STEP, "gyftr_login", code);
    expect(step_call(sim, "gyftr_login", STEP, 0, code, T0), JW_PROVIDER_OK, false);
    expect(step_call(sim, "gyftr_login", STEP, 0, code, T0), JW_PROVIDER_OTP_REQUIRED, false);
    assert_int_equal(inbox_size(sim), 2);
    last_code(sim, STEP, "gyftr_login", fresh);
    assert_string_not_equal(code, fresh);
    jw_sim_free(sim);
}

/*
 * A sim restarted with the same key has no record of the code sent before the
 * restart: it refuses it and sends a new one (the engine shows that as
 * otp_not_accepted and a new OTP request), never the same code again.
 */
static void test_restarted_sim_sends_new_code(void **state)
{
    jw_sim *before = keyed_sim(), *after;
    int64_t later = T0 + 1000000;
    char code[8], fresh[8];

    (void)state;
    expect(step_call(before, "gyftr_login", STEP, 0, NULL, T0), JW_PROVIDER_OTP_REQUIRED, false);
    last_code(before, STEP, "gyftr_login", code);
    jw_sim_free(before); /* the process dies */

    after = keyed_sim();
    expect(step_call(after, "gyftr_login", STEP, 0, code, later), JW_PROVIDER_OTP_REQUIRED, false);
    assert_int_equal(inbox_size(after), 1);
    last_code(after, STEP, "gyftr_login", fresh);
    assert_string_not_equal(code, fresh);
    expect(step_call(after, "gyftr_login", STEP, 0, fresh, later), JW_PROVIDER_OK, false);
    jw_sim_free(after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec),
        cmocka_unit_test(test_otp_gyftr_login),
        cmocka_unit_test(test_otp_amazon_login),
        cmocka_unit_test(test_otp_payment),
        cmocka_unit_test(test_otp_expires),
        cmocka_unit_test(test_otp_not_required),
        cmocka_unit_test(test_sms_logged_otp_nowhere_else),
        cmocka_unit_test(test_idempotent_charge),
        cmocka_unit_test(test_payment_with_otp_replays_without_otp),
        cmocka_unit_test(test_voucher_polling),
        cmocka_unit_test(test_simple_steps),
        cmocka_unit_test(test_unknown_step),
        cmocka_unit_test(test_failures_deterministic_with_seed),
        cmocka_unit_test(test_failures_limited_to_steps),
        cmocka_unit_test(test_inbox_bounded),
        cmocka_unit_test(test_call_from_json),
        cmocka_unit_test(test_adapter_delivers_after_latency),
        cmocka_unit_test(test_adapter_never_delivers_inside_start),
        cmocka_unit_test(test_code_new_on_job_retry),
        cmocka_unit_test(test_code_new_when_key_kept),
        cmocka_unit_test(test_code_expired_refused),
        cmocka_unit_test(test_code_used_refused),
        cmocka_unit_test(test_restarted_sim_sends_new_code),
    };

    jw_log_set_level(JW_LOG_WARN); /* a thousand SMS lines help nobody */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
