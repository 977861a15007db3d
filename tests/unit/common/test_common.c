/* Unit tests of common/: errors, buffers, mailboxes, UUIDs, time, redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_mailbox.h"
#include "jw_util.h"

#include <stdlib.h>
#include <string.h>

static void test_error_names(void **state)
{
    (void)state;
    assert_string_equal(jw_strerror(0), "success");
    assert_string_equal(jw_err_name(JW_EDBDOWN), "EDBDOWN");
    assert_string_equal(jw_strerror(JW_EDBDOWN), "database unreachable");
    assert_string_equal(jw_err_name(JW_EINVAL), "EINVAL");
    assert_string_equal(jw_err_name(JW_ETIMEOUT), "ETIMEOUT");
    assert_true(JW_EINVAL < 0 && JW_ETIMEOUT < 0);
    assert_string_equal(jw_strerror(-1), "unknown error");
    assert_string_equal(jw_strerror(12345), "unknown error");
}

/* jw_errorf: formats into the caller's buffer, truncates, returns the code it was given. */
static void test_errorf(void **state)
{
    char err[16] = "untouched";

    (void)state;
    assert_int_equal(jw_errorf(err, sizeof(err), JW_ECONFIG, "%s must be %d", "--x", 5),
                     JW_ECONFIG);
    assert_string_equal(err, "--x must be 5");
    assert_int_equal(jw_errorf(err, sizeof(err), JW_EAUTH, "%s", "0123456789abcdefghij"), JW_EAUTH);
    assert_string_equal(err, "0123456789abcde"); /* cut to fit, terminated */
    assert_int_equal(jw_errorf(NULL, 0, JW_EINVAL, "ignored %d", 1), JW_EINVAL);
    assert_int_equal(jw_errorf(err, 0, -7, "ignored"), -7);
    assert_string_equal(err, "0123456789abcde"); /* errlen 0: nothing written */
}

static void test_buf(void **state)
{
    jw_buf b;
    size_t len;
    char *p;

    (void)state;
    jw_buf_init(&b, 2);
    jw_buf_adds(&b, "abc");
    jw_buf_addch(&b, '-');
    for (int i = 0; i < 1000; i++)
        jw_buf_addf(&b, "%d,", i);
    assert_int_equal(strncmp(b.data, "abc-0,1,2,", 10), 0);
    assert_int_equal(strlen(b.data), b.len);
    assert_string_equal(b.data + b.len - 4, "999,");
    p = jw_buf_detach(&b, &len);
    assert_int_equal(strlen(p), len);
    /* Detached: the bytes are the caller's, the buffer holds nothing. */
    assert_int_equal(b.len, 0);
    assert_null(b.data);
    free(p);
    jw_buf_release(&b);
}

struct item {
    jw_mailbox_node node;
    int value;
};

static int wakes;
static void count_wake(void *arg)
{
    (void)arg;
    wakes++;
}

static void test_mailbox_fifo_and_chain(void **state)
{
    struct item items[5];
    jw_mailbox mb;
    jw_mailbox_node *n;
    int expect = 0;

    (void)state;
    wakes = 0;
    jw_mailbox_init(&mb, count_wake, NULL);
    for (int i = 0; i < 5; i++)
        items[i].value = i;
    assert_false(jw_mailbox_has_mail(&mb));
    assert_true(jw_mailbox_post(&mb, &items[0].node));
    assert_true(jw_mailbox_has_mail(&mb));
    assert_true(jw_mailbox_post(&mb, &items[1].node));
    /* A chain of three costs one wake. */
    items[2].node.next = &items[3].node;
    items[3].node.next = &items[4].node;
    assert_true(jw_mailbox_post_chain(&mb, &items[2].node, &items[4].node, 3));
    assert_int_equal(wakes, 3);
    assert_int_equal(jw_mailbox_count(&mb), 5);
    for (n = jw_mailbox_take_all(&mb); n; n = n->next)
        assert_int_equal(jw_container_of(n, struct item, node)->value, expect++);
    assert_int_equal(expect, 5);
    assert_false(jw_mailbox_has_mail(&mb)); /* taking all empties it */
    assert_null(jw_mailbox_take_all(&mb));
    jw_mailbox_release(&mb);
}

static void test_mailbox_wait_and_close(void **state)
{
    struct item it = {.value = 7};
    jw_mailbox mb;
    int64_t t0;

    (void)state;
    jw_mailbox_init(&mb, NULL, NULL);
    t0 = jw_mono_us();
    assert_null(jw_mailbox_wait(&mb, 30));
    assert_true(jw_mono_us() - t0 >= 25000); /* it did wait, not spin */
    assert_true(jw_mailbox_post(&mb, &it.node));
    assert_true(jw_mailbox_has_mail(&mb));
    assert_ptr_equal(jw_mailbox_wait(&mb, 1000), &it.node);
    assert_false(jw_mailbox_has_mail(&mb));
    jw_mailbox_close(&mb);
    assert_true(jw_mailbox_is_closed(&mb));
    assert_false(jw_mailbox_post(&mb, &it.node));
    assert_null(jw_mailbox_wait(&mb, -1)); /* closed: returns at once */
    jw_mailbox_release(&mb);
}

static void test_uuid(void **state)
{
    char a[JW_UUID_LEN + 1], b[JW_UUID_LEN + 1];

    (void)state;
    assert_true(jw_uuid_valid("123e4567-e89b-12d3-a456-426614174000"));
    assert_true(jw_uuid_valid("123E4567-E89B-12D3-A456-426614174000"));
    assert_false(jw_uuid_valid("123e4567-e89b-12d3-a456-42661417400"));
    assert_false(jw_uuid_valid("123e4567-e89b-12d3-a456-4266141740000"));
    assert_false(jw_uuid_valid("123e4567xe89b-12d3-a456-426614174000"));
    assert_false(jw_uuid_valid("g23e4567-e89b-12d3-a456-426614174000"));
    assert_false(jw_uuid_valid(""));
    assert_false(jw_uuid_valid(NULL));
    jw_uuid_new(a);
    jw_uuid_new(b);
    assert_true(jw_uuid_valid(a));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4'); /* version 4 */
    assert_true(strchr("89ab", a[19]) != NULL);
}

static void test_format_ts(void **state)
{
    char out[40];

    (void)state;
    jw_format_ts(0, out, sizeof(out));
    assert_string_equal(out, "1970-01-01T00:00:00.000000Z");
    jw_format_ts(1795687200123456LL, out, sizeof(out));
    assert_string_equal(out, "2026-11-26T10:00:00.123456Z");
}

static void test_redact(void **state)
{
    char out[256];

    (void)state;
    jw_log_redact_conninfo("postgresql://bob:s3cret@db.example:5432/jobs", out, sizeof(out));
    assert_null(strstr(out, "s3cret"));
    assert_string_equal(out, "postgresql://bob:***@db.example:5432/jobs");
    jw_log_redact_conninfo("host=db user=bob password=s3cret dbname=jobs", out, sizeof(out));
    assert_null(strstr(out, "s3cret"));
    jw_log_redact_conninfo("postgresql://postgres@127.0.0.1:5432/jobwire", out, sizeof(out));
    assert_string_equal(out, "postgresql://postgres@127.0.0.1:5432/jobwire");
    jw_log_redact_conninfo("postgresql://bob@db/jobs?password=s3cret", out, sizeof(out));
    assert_null(strstr(out, "s3cret"));
    assert_string_equal(out, "postgresql://bob@db/jobs?password=***");
    /* key=value as libpq reads it: spaces around '=', quotes, '&' inside a value. */
    jw_log_redact_conninfo("host=db password = hunter22 dbname=x", out, sizeof(out));
    assert_string_equal(out, "host=db password=*** dbname=x");
    jw_log_redact_conninfo("host=db password= 'hunter 22' port=5", out, sizeof(out));
    assert_string_equal(out, "host=db password=*** port=5");
    jw_log_redact_conninfo("host=db password=p&ssw0rd", out, sizeof(out));
    assert_string_equal(out, "host=db password=***");
    jw_log_redact_conninfo("password=hunter\\ 22 host=db", out, sizeof(out));
    assert_string_equal(out, "password=*** host=db");
    jw_log_redact_conninfo("host==:p=password='x password='s3cretvalue'", out, sizeof(out));
    assert_null(strstr(out, "s3cret"));
    /* A cut buffer never ends in part of a password. */
    jw_log_redact_conninfo("host=db password=s3cret", out, 12);
    assert_null(strstr(out, "s3c"));
    /* libpq's userinfo runs to the first '@' before any '/', '?' included. */
    jw_log_redact_conninfo("postgresql://bob:s3c?etpw@db:5432/jobs", out, sizeof(out));
    assert_null(strstr(out, "etpw"));
    assert_string_equal(out, "postgresql://bob:***@db:5432/jobs");
    /* libpq percent-decodes query keys: pass%77ord is the password too. */
    jw_log_redact_conninfo("postgresql://h/db?pass%77ord=hunter22", out, sizeof(out));
    assert_string_equal(out, "postgresql://h/db?pass%77ord=***");
    jw_log_redact_conninfo("postgresql://u@h/db?%70assword=hunter22&sslmode=disable", out,
                           sizeof(out));
    assert_string_equal(out, "postgresql://u@h/db?%70assword=***&sslmode=disable");
    /* A '?' inside an [IPv6] host does not start the query; the real one does. */
    jw_log_redact_conninfo("postgresql://[::1?x]/db?password=hunter22", out, sizeof(out));
    assert_string_equal(out, "postgresql://[::1?x]/db?password=***");
    jw_log_redact_conninfo("postgresql://[::1]:5432,[fe80::1%25eth0]/db?password=x", out,
                           sizeof(out));
    assert_string_equal(out, "postgresql://[::1]:5432,[fe80::1%25eth0]/db?password=***");
    /* ...but a '[' inside a host name is a plain character to libpq. */
    jw_log_redact_conninfo("postgresql://ho[st?password=hunter22]", out, sizeof(out));
    assert_string_equal(out, "postgresql://ho[st?password=***");
    /* A key in another case is refused by libpq, and masked all the same. */
    jw_log_redact_conninfo("postgresql://h/db?PASSWORD=hunter22", out, sizeof(out));
    assert_string_equal(out, "postgresql://h/db?PASSWORD=***");
    jw_log_redact_conninfo("host=h Password=hunter22", out, sizeof(out));
    assert_string_equal(out, "host=h Password=***");
    /* A plain word (the provider "sim") is printed as it is. */
    jw_log_redact_conninfo("sim", out, sizeof(out));
    assert_string_equal(out, "sim");
    /* The provider's URL is a URI too. */
    jw_log_redact_conninfo("https://svc:tok3n@provider.example/api", out, sizeof(out));
    assert_string_equal(out, "https://svc:***@provider.example/api");
}

static void test_log_levels(void **state)
{
    (void)state;
    assert_int_equal(jw_log_parse_level("debug"), JW_LOG_DEBUG);
    assert_int_equal(jw_log_parse_level("error"), JW_LOG_ERROR);
    assert_int_equal(jw_log_parse_level("verbose"), -1);
    assert_int_equal(jw_log_parse_level(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_errorf),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_mailbox_fifo_and_chain),
        cmocka_unit_test(test_mailbox_wait_and_close),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_format_ts),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_log_levels),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
