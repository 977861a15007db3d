/*
 * sim_spec.c - what the simulated provider is told, read from text: its
 * spec string (JOBWIRE_SIM, the sandbox's --sim) into a jw_sim_config, and,
 * for the sandbox, one call from the JSON body of a request. See sim.h.
 *
 * Both are pure functions of their input; any thread may call them.
 */
#include "sim.h"

#include "jw_error.h"
#include "jw_log.h"
#include "jw_util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* --- the spec string ----------------------------------------------------- */

/* The steps that can ask for an OTP (sim.c's otp_types). */
#define OTP_CAPABLE                                                                                \
    (JW_SIM_STEP_BIT(JW_SIM_GYFTR_LOGIN) | JW_SIM_STEP_BIT(JW_SIM_AMAZON_LOGIN) |                  \
     JW_SIM_STEP_BIT(JW_SIM_PROCESS_PAYMENT))

void jw_sim_config_init(jw_sim_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->latency_ms = 100;
    cfg->fail_rate = 0.0;
    cfg->fail_steps = JW_SIM_ALL_STEPS;
    cfg->fail_retryable = true;
    cfg->otp_steps = OTP_CAPABLE;
    cfg->voucher_polls = 2;
    cfg->poll_after_ms = 200;
    cfg->vouchers = 10;
    memcpy(cfg->phone_last4, "4821", 5);
}

/* Every spec error starts with "sim spec: "; fmt must be a string literal. */
#define spec_fail(err, errlen, ...) jw_errorf(err, errlen, JW_ECONFIG, "sim spec: " __VA_ARGS__)

/* A whole decimal integer in lo..hi. */
static bool parse_int(const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    long long x;

    if (!*v || !(isdigit((unsigned char)*v) || *v == '-'))
        return false;
    errno = 0;
    x = strtoll(v, &end, 10);
    if (errno || *end || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

/* "a+b+c" of step names, "*" for all, "none" for no step (when allowed). */
static int parse_steps(const char *key, const char *v, bool allow_none, unsigned *out, char *err,
                       size_t errlen)
{
    unsigned bits = 0;
    const char *p = v;

    if (strcmp(v, "*") == 0) {
        *out = JW_SIM_ALL_STEPS;
        return 0;
    }
    if (allow_none && strcmp(v, "none") == 0) {
        *out = 0;
        return 0;
    }
    while (*p) {
        size_t n = strcspn(p, "+");
        char name[JW_STEP_NAME_MAX];
        int step;

        if (n == 0 || n >= sizeof(name))
            return spec_fail(err, errlen, "%s: expected step names joined with '+' (got '%s')", key,
                             v);
        memcpy(name, p, n);
        name[n] = '\0';
        /* "payment" is the OTP type of process_payment; accept either name. */
        step = strcmp(name, "payment") == 0 ? JW_SIM_PROCESS_PAYMENT : jw_sim_step_from_name(name);
        if (step < 0)
            return spec_fail(err, errlen,
                             "%s: unknown step '%s' (known: gyftr_login, amazon_login, "
                             "availability_check, generate_payment_link, process_payment, "
                             "wait_for_vouchers, redeem_amazon_vouchers)",
                             key, name);
        bits |= JW_SIM_STEP_BIT(step);
        p += n;
        if (*p == '+' && !*++p)
            return spec_fail(err, errlen, "%s: a '+' must be followed by a step name", key);
    }
    *out = bits;
    return 0;
}

static int apply_item(jw_sim_config *cfg, const char *key, const char *v, char *err, size_t errlen)
{
    long long x;

    if (strcmp(key, "latency_ms") == 0) {
        if (!parse_int(v, 0, JW_SIM_LATENCY_MAX_MS, &x))
            return spec_fail(err, errlen, "latency_ms must be 0..%d (got '%s')",
                             JW_SIM_LATENCY_MAX_MS, v);
        cfg->latency_ms = (int)x;
    } else if (strcmp(key, "fail_rate") == 0) {
        char *end;
        double d;

        errno = 0;
        d = strtod(v, &end);
        if (!*v || *end || errno || !(d >= 0.0 && d <= 1.0))
            return spec_fail(err, errlen, "fail_rate must be a number 0..1 (got '%s')", v);
        cfg->fail_rate = d;
    } else if (strcmp(key, "fail_steps") == 0) {
        return parse_steps(key, v, false, &cfg->fail_steps, err, errlen);
    } else if (strcmp(key, "fail_retryable") == 0) {
        if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
            return spec_fail(err, errlen, "fail_retryable must be 0 or 1 (got '%s')", v);
        cfg->fail_retryable = v[0] == '1';
    } else if (strcmp(key, "otp") == 0) {
        unsigned bits;
        int rc = parse_steps(key, v, true, &bits, err, errlen);

        if (rc)
            return rc;
        if (bits & ~(unsigned)OTP_CAPABLE)
            return spec_fail(err, errlen,
                             "otp: only gyftr_login, amazon_login and process_payment can need "
                             "an OTP (got '%s')",
                             v);
        cfg->otp_steps = bits;
    } else if (strcmp(key, "voucher_polls") == 0) {
        if (!parse_int(v, 0, JW_SIM_POLLS_MAX, &x))
            return spec_fail(err, errlen, "voucher_polls must be 0..%d (got '%s')",
                             JW_SIM_POLLS_MAX, v);
        cfg->voucher_polls = (int)x;
    } else if (strcmp(key, "poll_after_ms") == 0) {
        if (!parse_int(v, 0, JW_SIM_POLL_AFTER_MAX_MS, &x))
            return spec_fail(err, errlen, "poll_after_ms must be 0..%d (got '%s')",
                             JW_SIM_POLL_AFTER_MAX_MS, v);
        cfg->poll_after_ms = (int)x;
    } else if (strcmp(key, "vouchers") == 0) {
        if (!parse_int(v, 0, 1000000, &x))
            return spec_fail(err, errlen, "vouchers must be 0..1000000 (got '%s')", v);
        cfg->vouchers = (int)x;
    } else if (strcmp(key, "phone") == 0) {
        if (strlen(v) != 4 || strspn(v, "0123456789") != 4)
            return spec_fail(err, errlen, "phone must be the number's last 4 digits (got '%s')", v);
        memcpy(cfg->phone_last4, v, 5);
    } else if (strcmp(key, "seed") == 0) {
        char *end;
        unsigned long long s;

        errno = 0;
        s = strtoull(v, &end, 10);
        if (!isdigit((unsigned char)*v) || *end || errno)
            return spec_fail(err, errlen, "seed must be an unsigned decimal integer (got '%s')", v);
        cfg->seed = (uint64_t)s;
        cfg->has_seed = true;
    } else {
        return spec_fail(err, errlen,
                         "unknown key '%s' (known: latency_ms, fail_rate, fail_steps, "
                         "fail_retryable, otp, voucher_polls, poll_after_ms, vouchers, phone, "
                         "seed)",
                         key);
    }
    return 0;
}

int jw_sim_config_parse(jw_sim_config *cfg, const char *spec, char *err, size_t errlen)
{
    char buf[JW_SIM_SPEC_MAX + 1];
    char *item, *save = NULL;
    size_t len;

    jw_sim_config_init(cfg);
    if (err && errlen)
        err[0] = '\0';
    if (!spec || !*spec)
        return 0;
    len = strlen(spec);
    if (len > JW_SIM_SPEC_MAX)
        return spec_fail(err, errlen, "%zu bytes long (limit %d)", len, JW_SIM_SPEC_MAX);
    for (size_t i = 0; i < len; i++)
        if (!isprint((unsigned char)spec[i]) || spec[i] == ' ')
            return spec_fail(err, errlen,
                             "character %zu is a space or not printable; write "
                             "key=value,key=value",
                             i + 1);
    memcpy(buf, spec, len + 1);
    for (item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        int rc;

        if (!eq || eq == item || !eq[1])
            return spec_fail(err, errlen, "'%s' is not key=value", item);
        *eq = '\0';
        rc = apply_item(cfg, item, eq + 1, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

/* --- the request side, for the sandbox ----------------------------------- */

static int req_uuid(const json_t *body, const char *key, bool required, char *out, char *err,
                    size_t errlen)
{
    const json_t *v = json_object_get(body, key);

    out[0] = '\0';
    if (!v && !required)
        return 0;
    if (!json_is_string(v) || json_string_length(v) != JW_UUID_LEN ||
        !jw_uuid_valid(json_string_value(v)))
        return jw_errorf(err, errlen, JW_EINVAL, "request \"%s\" must be a UUID string", key);
    memcpy(out, json_string_value(v), JW_UUID_LEN + 1);
    return 0;
}

static int req_int(const json_t *body, const char *key, json_int_t lo, json_int_t hi,
                   json_int_t *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(body, key);

    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return jw_errorf(err, errlen, JW_EINVAL, "request \"%s\" must be an integer %lld..%lld",
                         key, (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return 0;
}

int jw_sim_call_from_json(const json_t *body, const char *step_name, jw_provider_call **out,
                          char *err, size_t errlen)
{
    jw_provider_call *c = jw_provider_call_new();
    const json_t *v;
    json_int_t x;
    int rc = JW_EINVAL;

    *out = NULL;
    if (!json_is_object(body)) {
        jw_errorf(err, errlen, JW_EINVAL, "the request body must be a JSON object");
        goto out;
    }
    if (!step_name || !*step_name || strlen(step_name) >= JW_STEP_NAME_MAX ||
        strspn(step_name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(step_name)) {
        jw_errorf(err, errlen, JW_EINVAL, "the step name must be 1..%d characters of a-z 0-9 _",
                  JW_STEP_NAME_MAX - 1);
        goto out;
    }
    memcpy(c->step_name, step_name, strlen(step_name) + 1);
    v = json_object_get(body, "step_name");
    if (v && (!json_is_string(v) || strcmp(json_string_value(v), step_name) != 0)) {
        jw_errorf(err, errlen, JW_EINVAL,
                  "request \"step_name\" must equal the step in the URL (%s)", step_name);
        goto out;
    }
    if (req_uuid(body, "job_id", true, c->job_id, err, errlen) ||
        req_uuid(body, "step_id", true, c->step_id, err, errlen) ||
        req_uuid(body, "user_id", false, c->user_id, err, errlen))
        goto out;
    if (req_int(body, "transaction_index", 0, 1000000, &x, err, errlen))
        goto out;
    c->transaction_index = (int)x;
    if (req_int(body, "attempt", 1, 1000000, &x, err, errlen))
        goto out;
    c->attempt = (int)x;
    if (req_int(body, "amount", 0, INT64_MAX, &x, err, errlen))
        goto out;
    c->amount = (int64_t)x;
    v = json_object_get(body, "idempotency_key");
    if (!json_is_string(v) || json_string_length(v) >= JW_IDEMPOTENCY_KEY_MAX ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        jw_errorf(err, errlen, JW_EINVAL,
                  "request \"idempotency_key\" must be a string of at most %d bytes",
                  JW_IDEMPOTENCY_KEY_MAX - 1);
        goto out;
    }
    memcpy(c->idempotency_key, json_string_value(v), json_string_length(v) + 1);
    v = json_object_get(body, "session");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) {
            jw_errorf(err, errlen, JW_EINVAL, "request \"session\" must be an object or null");
            goto out;
        }
        c->session = json_deep_copy(v);
        if (!c->session)
            jw_oom("a sim session");
    }
    v = json_object_get(body, "otp");
    if (v && !json_is_null(v)) {
        size_t n = json_is_string(v) ? json_string_length(v) : 0;

        if (n == 0 || n > JW_OTP_MAX || strspn(json_string_value(v), "0123456789") != n) {
            jw_errorf(err, errlen, JW_EINVAL, "request \"otp\" must be a string of 1..%d digits",
                      JW_OTP_MAX);
            goto out;
        }
        c->otp = jw_xstrdup(json_string_value(v));
    }
    *out = c;
    c = NULL;
    rc = 0;
out:
    jw_provider_call_free(c);
    return rc;
}
