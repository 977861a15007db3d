/*
 * Unit tests of server/config: the rules on users' tokens that start-up
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

#include "config.h"
#include "jw_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        cmocka_unit_test_setup(test_jwt_secret_32_outside_dev, clean_env),
        cmocka_unit_test_setup(test_jwt_secret_short_in_dev, clean_env),
        cmocka_unit_test_setup(test_audience_issuer_default_unset, clean_env),
        cmocka_unit_test_setup(test_audience_issuer_set, clean_env),
        cmocka_unit_test_setup(test_audience_issuer_refused, clean_env),
        cmocka_unit_test(test_help),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
