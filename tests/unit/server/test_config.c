/*
 * Unit tests of server/config. Its typed rows (config_settings.c): every
 * whole-number row's bounds, unit and default against a list written here
 * independently of the table (lo-1 refused, lo and hi taken, hi+1 refused,
 * by flag and by variable, with the exact message); the durations, the
 * number, the switch, the choice and the bounded string; a flag over a
 * variable over a default. Then the rules on users' tokens that start-up
 * enforces. The JWT secret needs 32 characters outside --dev (16 with it,
 * like the admin key, whose minimum stays 16); --jwt-audience and
 * --jwt-issuer are unset by default and, when given, must be usable as exact
 * matches. Every error names the setting and never shows a secret.
 *
 * config.c is part of the jobwire binary, not a library: the test compiles
 * it in (tests/CMakeLists.txt). The environment is emptied of jobwire's
 * variables before each test, so only what a test sets counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config_internal.h"
#include "jw_error.h"
#include "jw_log.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DB "--database-url=postgresql://jobwire@127.0.0.1:5432/jobwire"
#define ADMIN_16 "admin-key-012345" /* the admin key's minimum, unchanged */
#define KEY_HEX "--secret-key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define SECRET_31 "jwt-secret-0123456789abcdef-012"
#define SECRET_32 "jwt-secret-0123456789abcdef-0123"

extern char **environ;

static int clean_env(void **state)
{
    char name[256];

    (void)state;
    /* Unsetting changes environ: start over after each one. */
    for (size_t i = 0; environ[i];) {
        const char *eq = strchr(environ[i], '=');
        size_t n = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);

        if (n < sizeof(name) && (strncmp(environ[i], "JOBWIRE_", 8) == 0 ||
                                 strncmp(environ[i], "DATABASE_URL=", 13) == 0)) {
            memcpy(name, environ[i], n);
            name[n] = '\0';
            unsetenv(name);
            i = 0;
        } else {
            i++;
        }
    }
    return 0;
}

/* jw_config_load with "jobwire" and the given arguments (NULL-terminated). */
static int load(jw_config *c, char *err, size_t errlen, ...)
{
    char *argv[32] = {"jobwire"};
    int argc = 1;
    va_list ap;

    va_start(ap, errlen);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    err[0] = '\0';
    return jw_config_load(c, argc, argv, err, errlen);
}

static void assert_contains(const char *s, const char *want)
{
    if (!strstr(s, want))
        fail_msg("\"%s\" does not contain \"%s\"", s, want);
}

/*
 * Every whole-number setting, as docs/operations.md and --help promise it.
 * Written out here rather than read from the table, so a changed bound or
 * unit fails this test until the list (and the help text) agree.
 */
enum width { W_INT, W_LONG, W_SIZE };
static const struct int_row {
    const char *flag, *env;
    long lo, hi;
    const char *unit; /* NULL: the message names none */
    long def;
    size_t offset;
    enum width width;
} int_rows[] = {
#define ROW(flag, env, lo, hi, unit, def, field, w)                                                \
    {                                                                                              \
        flag, env, lo, hi, unit, def, offsetof(jw_config, field), w                                \
    }
    ROW("db-max-group", "JOBWIRE_DB_MAX_GROUP", 1, 5000, NULL, 500, db_max_group, W_INT),
    ROW("max-body", "JOBWIRE_MAX_BODY", 1024, 16777216, "bytes", 65536, max_body, W_SIZE),
    ROW("otp-timeout-login", "JOBWIRE_OTP_TIMEOUT_LOGIN", 1, 3600, "seconds", 300,
        otp_timeout_login_s, W_INT),
    ROW("otp-timeout-payment", "JOBWIRE_OTP_TIMEOUT_PAYMENT", 1, 3600, "seconds", 180,
        otp_timeout_payment_s, W_INT),
    ROW("provider-timeout", "JOBWIRE_PROVIDER_TIMEOUT", 100, 300000, "milliseconds", 30000,
        provider_timeout_ms, W_INT),
    ROW("finished-job-ttl", "JOBWIRE_FINISHED_JOB_TTL", 1, 86400, "seconds", 300,
        finished_job_ttl_s, W_INT),
    ROW("ws-max-frame", "JOBWIRE_WS_MAX_FRAME", 1024, 1048576, "bytes", 16384, ws_max_frame, W_INT),
    ROW("ws-max-subscriptions", "JOBWIRE_WS_MAX_SUBSCRIPTIONS", 1, 10000, "subscriptions", 100,
        ws_max_subscriptions, W_INT),
    ROW("max-connections", "JOBWIRE_MAX_CONNECTIONS", 1, 1000000, "connections", 10000,
        max_connections, W_INT),
    ROW("ws-max-queue", "JOBWIRE_WS_MAX_QUEUE", 65536, 67108864, "bytes", 1048576, ws_max_queue,
        W_LONG),
    ROW("ws-max-queue-total", "JOBWIRE_WS_MAX_QUEUE_TOTAL", 1048576, 68719476736L, "bytes",
        268435456, ws_max_queue_total, W_LONG),
    ROW("ws-slow-close", "JOBWIRE_WS_SLOW_CLOSE", 1, 600, "seconds", 60, ws_slow_close_s, W_INT),
    ROW("ws-auth-timeout", "JOBWIRE_WS_AUTH_TIMEOUT", 1, 300, "seconds", 10, ws_auth_timeout_s,
        W_INT),
    ROW("ws-ping-interval", "JOBWIRE_WS_PING_INTERVAL", 1, 3600, "seconds", 30, ws_ping_interval_s,
        W_INT),
    ROW("ws-message-rate", "JOBWIRE_WS_MESSAGE_RATE", 0, 1000000, "messages per second", 100,
        ws_message_rate, W_INT),
    ROW("max-connections-per-ip", "JOBWIRE_MAX_CONNECTIONS_PER_IP", 0, 1000000, "connections", 256,
        max_connections_per_ip, W_INT),
    ROW("connection-rate-per-ip", "JOBWIRE_CONNECTION_RATE_PER_IP", 0, 1000000,
        "connections per second", 200, connection_rate_per_ip, W_INT),
    ROW("max-live-jobs-per-user", "JOBWIRE_MAX_LIVE_JOBS_PER_USER", 1, 100000, "jobs", 100,
        max_live_jobs_per_user, W_INT),
    ROW("job-rate-per-user", "JOBWIRE_JOB_RATE_PER_USER", 1, 100000, "per minute", 120,
        job_rate_per_user, W_INT),
    ROW("otp-rate-per-user", "JOBWIRE_OTP_RATE_PER_USER", 1, 100000, "per minute", 120,
        otp_rate_per_user, W_INT),
    ROW("max-ws-per-user", "JOBWIRE_MAX_WS_PER_USER", 1, 100000, "connections", 50, max_ws_per_user,
        W_INT),
    ROW("events-retention-batch", "JOBWIRE_EVENTS_RETENTION_BATCH", 1, 100000, "rows", 1000,
        events_retention_batch, W_INT),
#undef ROW
};
#define INT_ROWS (sizeof(int_rows) / sizeof(int_rows[0]))

static long field_value(const jw_config *c, const struct int_row *r)
{
    const char *f = (const char *)c + r->offset;

    switch (r->width) {
    case W_INT: return *(const int *)(const void *)f;
    case W_LONG: return *(const long *)(const void *)f;
    case W_SIZE: return (long)*(const size_t *)(const void *)f;
    }
    return -1;
}

/* The message a refused whole number gets, as operators have always seen it. */
static void int_message(char *out, size_t outlen, const struct int_row *r, const char *name, long v)
{
    if (r->unit)
        snprintf(out, outlen, "%s must be a whole number of %s %ld..%ld (got \"%ld\")", name,
                 r->unit, r->lo, r->hi, v);
    else
        snprintf(out, outlen, "%s must be a whole number %ld..%ld (got \"%ld\")", name, r->lo,
                 r->hi, v);
}

static const struct config__setting *row_of(const char *flag)
{
    for (size_t i = 0; i < CONFIG__SETTING_COUNT; i++)
        if (strcmp(config__settings[i].flag, flag) == 0)
            return &config__settings[i];
    return NULL;
}

/* The table's rows: each kind over a field of a type it can write, bounds in order. */
static void test_rows_fit_their_fields(void **state)
{
    size_t ints = 0;

    (void)state;
    for (size_t i = 0; i < CONFIG__SETTING_COUNT; i++) {
        const struct config__setting *s = &config__settings[i];
        char range[64];

        assert_non_null(s->flag);
        assert_non_null(s->env);
        assert_non_null(s->help);
        switch (s->kind) {
        case CONFIG_SPECIAL:
            assert_non_null(s->parse);
            assert_int_equal(s->store, CONFIG_STORE_NONE);
            break;
        case CONFIG_INT:
        case CONFIG_DURATION:
            assert_true(s->store == CONFIG_STORE_INT || s->store == CONFIG_STORE_LONG ||
                        s->store == CONFIG_STORE_SIZE);
            assert_true(s->lo >= 0 && s->lo <= s->hi);
            if (s->store == CONFIG_STORE_INT)
                assert_true(s->hi <= INT_MAX);
            if (s->kind == CONFIG_DURATION) {
                assert_non_null(s->expect);
                break;
            }
            ints++;
            /* --help states the same range. */
            snprintf(range, sizeof(range), "%ld..%ld", s->lo, s->hi);
            if (!strstr(s->help, range))
                fail_msg("--%s: the help text does not say %s", s->flag, range);
            break;
        case CONFIG_REAL:
            assert_int_equal(s->store, CONFIG_STORE_DOUBLE);
            assert_true(s->real_lo <= s->real_hi);
            break;
        case CONFIG_BOOL: assert_int_equal(s->store, CONFIG_STORE_BOOL); break;
        case CONFIG_ENUM:
            assert_int_equal(s->store, CONFIG_STORE_INT);
            assert_non_null(s->choices);
            break;
        case CONFIG_STRING:
            assert_int_equal(s->store, CONFIG_STORE_STRING);
            assert_true(s->hi > 0);
            break;
        }
    }
    /* Every whole-number row is in the list above, with its bounds, unit and field. */
    assert_int_equal(ints, INT_ROWS);
    for (size_t i = 0; i < INT_ROWS; i++) {
        const struct config__setting *s = row_of(int_rows[i].flag);

        assert_non_null(s);
        assert_int_equal(s->kind, CONFIG_INT);
        assert_string_equal(s->env, int_rows[i].env);
        assert_int_equal(s->lo, int_rows[i].lo);
        assert_int_equal(s->hi, int_rows[i].hi);
        if (int_rows[i].unit)
            assert_string_equal(s->unit, int_rows[i].unit);
        else
            assert_null(s->unit);
        assert_int_equal(s->offset, int_rows[i].offset);
    }
}

/* Each whole number: its default, lo and hi taken, lo-1 and hi+1 refused, by flag and variable. */
static void test_int_rows_edges(void **state)
{
    char arg[128], val[32], want[256], err[1024];
    jw_config c;

    (void)state;
    for (size_t i = 0; i < INT_ROWS; i++) {
        const struct int_row *r = &int_rows[i];
        const long ok[] = {r->lo, r->hi}, bad[] = {r->lo - 1, r->hi + 1};

        assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
        assert_int_equal(field_value(&c, r), r->def);
        jw_config_release(&c);
        for (size_t k = 0; k < 2; k++) {
            snprintf(arg, sizeof(arg), "--%s=%ld", r->flag, ok[k]);
            if (load(&c, err, sizeof(err), DB, "--dev", arg, NULL) != 0)
                fail_msg("%s refused: %s", arg, err);
            assert_int_equal(field_value(&c, r), ok[k]);
            jw_config_release(&c);

            snprintf(val, sizeof(val), "%ld", ok[k]);
            setenv(r->env, val, 1);
            assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
            assert_int_equal(field_value(&c, r), ok[k]);
            jw_config_release(&c);
            unsetenv(r->env);

            snprintf(arg, sizeof(arg), "--%s=%ld", r->flag, bad[k]);
            assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", arg, NULL), JW_ECONFIG);
            snprintf(arg, sizeof(arg), "--%s", r->flag);
            int_message(want, sizeof(want), r, arg, bad[k]);
            assert_string_equal(err, want);

            snprintf(val, sizeof(val), "%ld", bad[k]);
            setenv(r->env, val, 1);
            assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), JW_ECONFIG);
            int_message(want, sizeof(want), r, r->env, bad[k]);
            assert_string_equal(err, want);
            unsetenv(r->env);
        }
    }
}

/* Only digits: no sign, no spaces, no hex, no fraction. */
static void test_int_rows_strict(void **state)
{
    static const char *const bad[] = {
        "", "+100", " 100", "100 ", "0x100", "100.0", "1e3", "abc", "99999999999999999999"};
    char arg[128], err[1024];
    jw_config c;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(arg, sizeof(arg), "--ws-max-subscriptions=%s", bad[i]);
        assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", arg, NULL), JW_ECONFIG);
        assert_contains(err, "--ws-max-subscriptions must be a whole number of subscriptions "
                             "1..10000 (got");
    }
}

static void test_durations(void **state)
{
    static const struct {
        const char *arg;
        long want; /* -1: refused */
    } cases[] = {
        {"--events-retention=0", 0},
        {"--events-retention=30d", 30L * 86400},
        {"--events-retention=3650d", 3650L * 86400},
        {"--events-retention=315360000", 3650L * 86400},
        {"--events-retention=315360001", -1},
        {"--events-retention=3651d", -1},
        {"--events-retention=87601h", -1},
        {"--events-retention=-1", -1},
        {"--events-retention=1w", -1},
        {"--events-retention=d", -1},
        {"--events-retention-interval=1", 1},
        {"--events-retention-interval=1s", 1},
        {"--events-retention-interval=10m", 600},
        {"--events-retention-interval=24h", 86400},
        {"--events-retention-interval=1d", 86400},
        {"--events-retention-interval=86400", 86400},
        {"--events-retention-interval=0", -1},
        {"--events-retention-interval=0s", -1},
        {"--events-retention-interval=86401", -1},
        {"--events-retention-interval=1441m", -1},
        {"--events-retention-interval=2d", -1},
    };
    char err[1024];
    jw_config c;

    (void)state;
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_int_equal(c.events_retention_s, 30L * 86400);
    assert_int_equal(c.events_retention_interval_s, 600);
    jw_config_release(&c);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool interval = strstr(cases[i].arg, "interval") != NULL;
        int rc = load(&c, err, sizeof(err), DB, "--dev", cases[i].arg, NULL);

        if (cases[i].want < 0) {
            if (rc != JW_ECONFIG)
                fail_msg("%s was taken", cases[i].arg);
            assert_contains(err, interval ? "--events-retention-interval must be a duration "
                                            "from 1 s to 1d: seconds, or a whole number with "
                                            "s, m, h or d, e.g. 10m (got \""
                                          : "--events-retention must be 0 (keep forever) or a "
                                            "duration up to 3650d: seconds, or a whole number "
                                            "with s, m, h or d, e.g. 30d (got \"");
            continue;
        }
        if (rc != 0)
            fail_msg("%s refused: %s", cases[i].arg, err);
        assert_int_equal(interval ? c.events_retention_interval_s : c.events_retention_s,
                         cases[i].want);
        jw_config_release(&c);
    }
}

static void test_real_bool_choice_string(void **state)
{
    char err[1024], arg[1100];
    jw_config c;

    (void)state;
    /* --retry-scale: a number 0.001..100. */
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_true(c.retry_scale == 1.0);
    assert_true(c.dev);
    assert_int_equal(c.log_level, JW_LOG_INFO);
    assert_string_equal(c.sim, "");
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--retry-scale=0.001", NULL), 0);
    assert_true(c.retry_scale == 0.001);
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--retry-scale=100", NULL), 0);
    assert_true(c.retry_scale == 100.0);
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--retry-scale=0.0009", NULL),
                     JW_ECONFIG);
    assert_string_equal(err, "--retry-scale must be a number 0.001..100 (got \"0.0009\")");
    setenv("JOBWIRE_RETRY_SCALE", "100.5", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), JW_ECONFIG);
    assert_string_equal(err, "JOBWIRE_RETRY_SCALE must be a number 0.001..100 (got \"100.5\")");
    unsetenv("JOBWIRE_RETRY_SCALE");

    /* JOBWIRE_DEV: on and off words, anything else refused. */
    setenv("JOBWIRE_DEV", "Yes", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, NULL), 0);
    assert_true(c.dev);
    jw_config_release(&c);
    setenv("JOBWIRE_DEV", "off", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, NULL), JW_ECONFIG);
    assert_contains(err, "outside dev mode jobwire needs all three secrets");
    setenv("JOBWIRE_DEV", "maybe", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, NULL), JW_ECONFIG);
    assert_string_equal(err, "JOBWIRE_DEV must be 1 (on) or 0 (off); got \"maybe\"");
    unsetenv("JOBWIRE_DEV");
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev=1", NULL), JW_ECONFIG);
    assert_string_equal(err, "--dev takes no value (set JOBWIRE_DEV=1 in the environment instead)");

    /* --log-level: one of four words, exactly. */
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--log-level=debug", NULL), 0);
    assert_int_equal(c.log_level, JW_LOG_DEBUG);
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--log-level=error", NULL), 0);
    assert_int_equal(c.log_level, JW_LOG_ERROR);
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--log-level=INFO", NULL), JW_ECONFIG);
    assert_string_equal(err, "--log-level must be one of error, warn, info, debug (got \"INFO\")");

    /* --sim: at most 1024 characters (the sim itself checks the spec). */
    snprintf(arg, sizeof(arg), "--sim=%01024d", 0);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", arg, NULL), 0);
    assert_int_equal(strlen(c.sim), 1024);
    jw_config_release(&c);
    snprintf(arg, sizeof(arg), "--sim=%01025d", 0);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", arg, NULL), JW_ECONFIG);
    assert_string_equal(err, "--sim is longer than 1024 characters");
}

/* A flag wins over its variable (which is then not even read), the variable over the default. */
static void test_flag_over_env_over_default(void **state)
{
    char err[1024];
    jw_config c;

    (void)state;
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_int_equal(c.ws_max_frame, 16384);
    jw_config_release(&c);
    setenv("JOBWIRE_WS_MAX_FRAME", "", 1); /* empty: unset */
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_int_equal(c.ws_max_frame, 16384);
    jw_config_release(&c);
    setenv("JOBWIRE_WS_MAX_FRAME", "2048", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_int_equal(c.ws_max_frame, 2048);
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--ws-max-frame", "4096", NULL), 0);
    assert_int_equal(c.ws_max_frame, 4096);
    jw_config_release(&c);
    /* A bad variable under a good flag is not an error: the flag's value is the one used. */
    setenv("JOBWIRE_WS_MAX_FRAME", "huge", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--ws-max-frame=4096", NULL), 0);
    assert_int_equal(c.ws_max_frame, 4096);
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), JW_ECONFIG);
    assert_string_equal(err, "JOBWIRE_WS_MAX_FRAME must be a whole number of bytes "
                             "1024..1048576 (got \"huge\")");
    unsetenv("JOBWIRE_WS_MAX_FRAME");
    /* The same for a duration and a switch. */
    setenv("JOBWIRE_EVENTS_RETENTION", "1d", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--events-retention=2h", NULL), 0);
    assert_int_equal(c.events_retention_s, 7200);
    jw_config_release(&c);
    unsetenv("JOBWIRE_EVENTS_RETENTION");
    setenv("JOBWIRE_DEV", "0", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_true(c.dev);
    jw_config_release(&c);
}

/* The secret key is 64 hex digits, either case; the message points at the first bad one. */
static void test_secret_key_hex(void **state)
{
    char err[1024];
    jw_config c;

    (void)state;
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev",
                          "--secret-key=000102030405060708090A0B0C0D0E0F"
                          "101112131415161718191a1b1c1d1e1f",
                          NULL),
                     0);
    assert_true(c.has_secret_key);
    assert_int_equal(c.secret_key[10], 0x0a);
    assert_int_equal(c.secret_key[31], 0x1f);
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev",
                          "--secret-key=000102030405060708090a0b0c0d0e0f"
                          "101112131415161718191a1b1c1d1e1g",
                          NULL),
                     JW_ECONFIG);
    assert_contains(err, "--secret-key must be 64 hex characters (32 bytes); character 64 is not "
                         "0-9 or a-f");
}

static void test_jwt_secret_32_outside_dev(void **state)
{
    jw_config c;
    char err[1024];

    (void)state;
    /* 31 characters: refused at start-up, naming the setting and how to make one. */
    assert_int_equal(load(&c, err, sizeof(err), DB, "--admin-key=" ADMIN_16, KEY_HEX,
                          "--jwt-secret=" SECRET_31, NULL),
                     JW_ECONFIG);
    assert_contains(err, "JOBWIRE_JWT_SECRET (--jwt-secret) must be at least 32 characters "
                         "outside --dev");
    assert_contains(err, "got 31");
    assert_contains(err, "openssl rand -hex 32");
    assert_null(strstr(err, SECRET_31));
    assert_null(strstr(err, "0123456789abcdef"));
    assert_null(c.jwt_secret); /* released on the error */

    /* The same from the environment. */
    setenv("JOBWIRE_JWT_SECRET", SECRET_31, 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--admin-key=" ADMIN_16, KEY_HEX, NULL),
                     JW_ECONFIG);
    assert_contains(err, "must be at least 32 characters outside --dev");
    assert_null(strstr(err, SECRET_31));
    unsetenv("JOBWIRE_JWT_SECRET");

    /* 32 is enough; the admin key's minimum is still 16. */
    assert_int_equal(load(&c, err, sizeof(err), DB, "--admin-key=" ADMIN_16, KEY_HEX,
                          "--jwt-secret=" SECRET_32, NULL),
                     0);
    assert_string_equal(c.jwt_secret, SECRET_32);
    assert_string_equal(c.admin_key, ADMIN_16);
    jw_config_release(&c);
}

static void test_jwt_secret_short_in_dev(void **state)
{
    jw_config c;
    char err[1024];

    (void)state;
    /* --dev lets 16..31 through (auth.c warns at start-up)... */
    assert_int_equal(
        load(&c, err, sizeof(err), DB, "--dev", "--jwt-secret=dev-secret-0123456", NULL), 0);
    assert_string_equal(c.jwt_secret, "dev-secret-0123456");
    jw_config_release(&c);
    setenv("JOBWIRE_DEV", "1", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--jwt-secret=" SECRET_31, NULL), 0);
    jw_config_release(&c);
    unsetenv("JOBWIRE_DEV");
    /* ...but not under 16, as before. */
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--jwt-secret=dev-secret-0123", NULL),
                     JW_ECONFIG);
    assert_contains(err, "--jwt-secret must be at least 16 characters");
    assert_null(strstr(err, "dev-secret"));
}

static void test_audience_issuer_default_unset(void **state)
{
    jw_config c;
    char err[1024];

    (void)state;
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_null(c.jwt_audience);
    assert_null(c.jwt_issuer);
    jw_config_release(&c);
    /* An empty variable counts as unset, as for every setting. */
    setenv("JOBWIRE_JWT_AUDIENCE", "", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_null(c.jwt_audience);
    jw_config_release(&c);
}

/*
 * --fanout-threads: auto by default, resolved at load to one less than the
 * CPUs the process may run on (none on one CPU), at most 8; or 0..64 as
 * given, by flag or variable; anything else refused with a message that
 * says what is accepted.
 */
static void test_fanout_threads(void **state)
{
    static const char *const bad[] = {"-1", "65", "", "Auto", "auto ", "1.5", "x"};
    char arg[128], want[256], err[1024];
    cpu_set_t set;
    jw_config c;
    int cpus, quota;

    (void)state;
    assert_int_equal(jw_config_fanout_auto(0), 0);
    assert_int_equal(jw_config_fanout_auto(1), 0);
    assert_int_equal(jw_config_fanout_auto(2), 1);
    assert_int_equal(jw_config_fanout_auto(4), 3);
    assert_int_equal(jw_config_fanout_auto(9), 8);
    assert_int_equal(jw_config_fanout_auto(256), 8);
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    /* The affinity, or fewer under a CPU quota (test_quota_cpus has the quotas). */
    cpus = CPU_COUNT(&set);
    quota = jw_config_quota_cpus("/proc/self/cgroup", "/sys/fs/cgroup");
    if (quota > 0 && quota < cpus)
        cpus = quota;
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_int_equal(c.fanout_threads, jw_config_fanout_auto(cpus));
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--fanout-threads=auto", NULL), 0);
    assert_int_equal(c.fanout_threads, jw_config_fanout_auto(cpus));
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--fanout-threads=0", NULL), 0);
    assert_int_equal(c.fanout_threads, 0);
    jw_config_release(&c);
    setenv("JOBWIRE_FANOUT_THREADS", "64", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_int_equal(c.fanout_threads, 64);
    jw_config_release(&c);
    unsetenv("JOBWIRE_FANOUT_THREADS");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(arg, sizeof(arg), "--fanout-threads=%s", bad[i]);
        assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", arg, NULL), JW_ECONFIG);
        snprintf(want, sizeof(want),
                 "--fanout-threads must be auto or a whole number of threads 0..64 (got \"%s\")",
                 bad[i]);
        assert_string_equal(err, want);
    }

    /* On one CPU, auto is none: this process pinned to the first CPU it may use. */
    {
        cpu_set_t one;
        int first = 0;

        while (!CPU_ISSET(first, &set))
            first++;
        CPU_ZERO(&one);
        CPU_SET(first, &one);
        assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
        assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
        assert_int_equal(sched_setaffinity(0, sizeof(set), &set), 0);
        assert_int_equal(c.fanout_threads, 0);
        jw_config_release(&c);
    }
}

/* ---- a cgroup tree made up in a temporary directory -------------------------------- */

static char cg_root[64];

/* Writes text to cg_root/rel, making its directories. */
static void cg_put(const char *rel, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", cg_root, rel);
    for (char *p = path + strlen(cg_root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    assert_non_null(f = fopen(path, "w"));
    fputs(text, f);
    fclose(f);
}

/* The quota in CPUs for the cgroup file's text, the tree being under cg_root/fs. */
static int cg_quota(const char *cgroup)
{
    char file[128], fs[128];

    cg_put("cgroup", cgroup);
    snprintf(file, sizeof(file), "%s/cgroup", cg_root);
    snprintf(fs, sizeof(fs), "%s/fs", cg_root);
    return jw_config_quota_cpus(file, fs);
}

/* Teardown: the made-up tree goes, whether the test passed or not. */
static int cg_wipe(void **state)
{
    char cmd[128];

    (void)state;
    if (!cg_root[0])
        return 0;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cg_root);
    cg_root[0] = '\0';
    return system(cmd) == 0 ? 0 : -1;
}

/* A CPU quota counts as whole CPUs: cgroup v2 (pure or beside v1), v1, nested, malformed. */
static void test_quota_cpus(void **state)
{
    char file[128];

    (void)state;
    snprintf(cg_root, sizeof(cg_root), "/tmp/jw-test-cgroup-XXXXXX");
    assert_non_null(mkdtemp(cg_root));

    /* v2: the lowest of the cgroup and its parents; 1.5 CPUs round to 2. */
    cg_put("fs/a/b/cpu.max", "max 100000\n");
    cg_put("fs/a/cpu.max", "150000 100000\n");
    assert_int_equal(cg_quota("0::/a/b\n"), 2);
    cg_put("fs/a/b/cpu.max", "100000 100000\n");
    assert_int_equal(cg_quota("0::/a/b\n"), 1);
    /* The namespace's root itself (a container sees "/"). */
    cg_put("fs/cpu.max", "300000 100000\n");
    assert_int_equal(cg_quota("0::/\n"), 3);
    /* A sliver of a CPU is still one; 1.4 is one, 2.5 is three. */
    cg_put("fs/a/cpu.max", "1000 100000\n");
    cg_put("fs/a/b/cpu.max", "max 100000\n");
    assert_int_equal(cg_quota("0::/a/b\n"), 1);
    cg_put("fs/a/cpu.max", "140000 100000\n");
    assert_int_equal(cg_quota("0::/a\n"), 1);
    cg_put("fs/a/cpu.max", "250000 100000\n");
    assert_int_equal(cg_quota("0::/a\n"), 3);
    /* No quota anywhere, or files that do not read as one. */
    cg_put("fs/cpu.max", "max 100000\n");
    /* (A quota past any CPU count: no overflow on the way.) */
    cg_put("fs/h/cpu.max", "9223372036854775807 2\n");
    assert_int_equal(cg_quota("0::/h\n"), INT_MAX);
    cg_put("fs/a/cpu.max", "max\n");
    cg_put("fs/a/b/cpu.max", "-5 100000\n");
    assert_int_equal(cg_quota("0::/a/b\n"), 0);
    cg_put("fs/a/b/cpu.max", "100000 0\n");
    assert_int_equal(cg_quota("0::/a/b\n"), 0);
    cg_put("fs/a/b/cpu.max", "lots\n");
    assert_int_equal(cg_quota("0::/a/b\n"), 0);
    assert_int_equal(cg_quota("0::/not/there\n"), 0);
    assert_int_equal(cg_quota("0::relative\n"), 0);
    assert_int_equal(cg_quota("garbage\n\n::\n"), 0);

    /* v2 beside v1 (a hybrid host): the unified hierarchy at unified/. */
    cg_put("fs/unified/u/cpu.max", "200000 100000\n");
    assert_int_equal(cg_quota("0::/u\n"), 2);

    /* v1: the cpu controller's line, alone or with cpuacct; the lowest of both versions. */
    cg_put("fs/cpu,cpuacct/x/cpu.cfs_quota_us", "400000\n");
    cg_put("fs/cpu,cpuacct/x/cpu.cfs_period_us", "100000\n");
    assert_int_equal(cg_quota("4:memory:/x\n3:cpu,cpuacct:/x\n"), 4);
    assert_int_equal(cg_quota("3:cpuacct,cpu:/x\n"), 4); /* the mount's name is not the line's */
    assert_int_equal(cg_quota("3:cpu,cpuacct:/z\n"), 0);
    cg_put("fs/cpu/y/cpu.cfs_quota_us", "-1\n");
    cg_put("fs/cpu/y/cpu.cfs_period_us", "100000\n");
    cg_put("fs/cpu/cpu.cfs_quota_us", "600000\n");
    cg_put("fs/cpu/cpu.cfs_period_us", "100000\n");
    assert_int_equal(cg_quota("2:cpu:/y\n"), 6);
    assert_int_equal(cg_quota("2:cpu:/y\n0::/u\n"), 2);
    /* "cpuset" is not "cpu". */
    assert_int_equal(cg_quota("5:cpuset:/x\n"), 0);

    /* No cgroup file at all. */
    snprintf(file, sizeof(file), "%s/none", cg_root);
    assert_int_equal(jw_config_quota_cpus(file, cg_root), 0);
}

/* Without --node-id every process is the same node, wherever it runs; --node-id names one. */
static void test_node_id(void **state)
{
    jw_config c;
    char err[1024];

    (void)state;
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--listen", "127.0.0.1:18080", NULL),
                     0);
    assert_string_equal(c.node_id, "jobwire");
    assert_int_equal(c.node_ttl_s, 10);
    jw_config_release(&c);
    assert_int_equal(
        load(&c, err, sizeof(err), DB, "--dev", "--node-id", "b", "--node-ttl", "3s", NULL), 0);
    assert_string_equal(c.node_id, "b");
    assert_int_equal(c.node_ttl_s, 3);
    jw_config_release(&c);
}

/* The Origins a browser page may open WebSockets from (--origins, or derived from --listen). */
static void expect_origins(const char *listen, const char *origins, const char *want0,
                           const char *want1)
{
    jw_config c;
    char err[1024];
    int rc = origins ? load(&c, err, sizeof(err), DB, "--dev", "--listen", listen, "--origins",
                            origins, NULL)
                     : load(&c, err, sizeof(err), DB, "--dev", "--listen", listen, NULL);

    assert_int_equal(rc, 0);
    assert_int_equal(c.origin_count, want1 ? 2 : 1);
    assert_string_equal(c.origins[0], want0);
    if (want1)
        assert_string_equal(c.origins[1], want1);
    assert_true(c.origins_derived == (origins == NULL));
    jw_config_release(&c);
}

static void test_origins(void **state)
{
    (void)state;
    /* On loopback the page is opened as localhost as often as by its address. */
    expect_origins("127.0.0.1:18080", NULL, "http://127.0.0.1:18080", "http://localhost:18080");
    expect_origins("localhost:18081", NULL, "http://127.0.0.1:18081", "http://localhost:18081");
    expect_origins("[::1]:18082", NULL, "http://[::1]:18082", "http://localhost:18082");
    /* Elsewhere only the address itself (main.c warns about 0.0.0.0). */
    expect_origins("0.0.0.0:18083", NULL, "http://0.0.0.0:18083", NULL);
    expect_origins("192.168.1.5:18084", NULL, "http://192.168.1.5:18084", NULL);
    /* Given: exactly the list, nothing added. */
    expect_origins("127.0.0.1:18085", "https://app.example.com", "https://app.example.com", NULL);
}

static void test_audience_issuer_set(void **state)
{
    jw_config c;
    char err[1024];

    (void)state;
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--jwt-audience=authenticated",
                          "--jwt-issuer", "https://abc.supabase.co/auth/v1", NULL),
                     0);
    assert_string_equal(c.jwt_audience, "authenticated");
    assert_string_equal(c.jwt_issuer, "https://abc.supabase.co/auth/v1");
    jw_config_release(&c);
    assert_null(c.jwt_audience);

    /* From the environment; a flag wins over it. */
    setenv("JOBWIRE_JWT_AUDIENCE", "env-aud", 1);
    setenv("JOBWIRE_JWT_ISSUER", "env-iss", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), 0);
    assert_string_equal(c.jwt_audience, "env-aud");
    assert_string_equal(c.jwt_issuer, "env-iss");
    jw_config_release(&c);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", "--jwt-issuer=flag-iss", NULL), 0);
    assert_string_equal(c.jwt_audience, "env-aud");
    assert_string_equal(c.jwt_issuer, "flag-iss");
    jw_config_release(&c);
}

static void test_audience_issuer_refused(void **state)
{
    static const struct {
        const char *arg, *want;
    } bad[] = {
        {"--jwt-audience=", "--jwt-audience is empty"},
        {"--jwt-issuer=", "--jwt-issuer is empty"},
        {"--jwt-audience= authenticated", "--jwt-audience starts or ends with a space"},
        {"--jwt-issuer=https://x.example/ ", "--jwt-issuer starts or ends with a space"},
        {"--jwt-audience=a\tb", "--jwt-audience must not contain control characters"},
        {"--jwt-issuer=a\nb", "--jwt-issuer must not contain control characters"},
    };
    char arg[400], err[1024];
    jw_config c;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", bad[i].arg, NULL), JW_ECONFIG);
        assert_contains(err, bad[i].want);
    }
    setenv("JOBWIRE_JWT_ISSUER", "iss ", 1);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", NULL), JW_ECONFIG);
    assert_contains(err, "JOBWIRE_JWT_ISSUER starts or ends with a space");
    unsetenv("JOBWIRE_JWT_ISSUER");

    /* 256 characters are taken, 257 are not. */
    snprintf(arg, sizeof(arg), "--jwt-audience=%0256d", 7);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", arg, NULL), 0);
    assert_int_equal(strlen(c.jwt_audience), 256);
    jw_config_release(&c);
    snprintf(arg, sizeof(arg), "--jwt-audience=%0257d", 7);
    assert_int_equal(load(&c, err, sizeof(err), DB, "--dev", arg, NULL), JW_ECONFIG);
    assert_contains(err, "--jwt-audience must be at most 256 characters (got 257)");
}

static void test_help(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    (void)state;
    assert_non_null(out);
    jw_config_print_help(out);
    fclose(out);
    assert_contains(text, "--jwt-audience=AUD");
    assert_contains(text, "JOBWIRE_JWT_AUDIENCE");
    assert_contains(text, "--jwt-issuer=ISS");
    assert_contains(text, "JOBWIRE_JWT_ISSUER");
    assert_contains(text, "at least 32 characters");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_fit_their_fields),
        cmocka_unit_test_setup(test_int_rows_edges, clean_env),
        cmocka_unit_test_setup(test_int_rows_strict, clean_env),
        cmocka_unit_test_setup(test_durations, clean_env),
        cmocka_unit_test_setup(test_real_bool_choice_string, clean_env),
        cmocka_unit_test_setup(test_flag_over_env_over_default, clean_env),
        cmocka_unit_test_setup(test_secret_key_hex, clean_env),
        cmocka_unit_test_setup(test_jwt_secret_32_outside_dev, clean_env),
        cmocka_unit_test_setup(test_jwt_secret_short_in_dev, clean_env),
        cmocka_unit_test_setup(test_audience_issuer_default_unset, clean_env),
        cmocka_unit_test_setup(test_node_id, clean_env),
        cmocka_unit_test_setup(test_origins, clean_env),
        cmocka_unit_test_setup(test_fanout_threads, clean_env),
        cmocka_unit_test_teardown(test_quota_cpus, cg_wipe),
        cmocka_unit_test_setup(test_audience_issuer_set, clean_env),
        cmocka_unit_test_setup(test_audience_issuer_refused, clean_env),
        cmocka_unit_test(test_help),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
