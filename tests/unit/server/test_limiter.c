/*
 * limiter.c: open counts and token buckets per client address and per user,
 * on an explicit clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_error.h"
#include "limiter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define USER "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define OTHER "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define T0 INT64_C(1000000000000)

static jw_config cfg(int per_ip, int rate_ip, int jobs, int otp, int ws)
{
    jw_config c;

    memset(&c, 0, sizeof(c));
    c.max_connections_per_ip = per_ip;
    c.connection_rate_per_ip = rate_ip;
    c.job_rate_per_user = jobs;
    c.otp_rate_per_user = otp;
    c.max_ws_per_user = ws;
    return c;
}

static struct sockaddr_storage v4(const char *a)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;

    memset(&ss, 0, sizeof(ss));
    in->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, a, &in->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *a)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 *in = (struct sockaddr_in6 *)&ss;

    memset(&ss, 0, sizeof(ss));
    in->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, a, &in->sin6_addr), 1);
    return ss;
}

/* Admits and holds one connection from ss at now; returns whether it was admitted. */
static bool connect_from(jw_limits *l, const struct sockaddr_storage *ss, int64_t now,
                         jw_limit_hold **held)
{
    bool refuse;

    jw_limits_ip_check(l, (const struct sockaddr *)ss, now, &refuse);
    if (refuse)
        return false;
    *held = jw_limits_ip_hold(l, (const struct sockaddr *)ss, now);
    return true;
}

static void test_open_connections_per_address(void **state)
{
    jw_config c = cfg(3, 0, 1, 1, 1);
    jw_limits *l = jw_limits_new(&c);
    struct sockaddr_storage a = v4("192.0.2.1"), b = v4("192.0.2.2");
    jw_limit_hold *h[4] = {0}, *other = NULL;

    (void)state;
    for (int i = 0; i < 3; i++)
        assert_true(connect_from(l, &a, T0, &h[i]));
    assert_false(connect_from(l, &a, T0, &h[3]));
    assert_int_equal(jw_limits_refused(l, JW_LIMIT_IP_CONN), 1);
    assert_true(connect_from(l, &b, T0, &other)); /* another address is not affected */
    jw_limits_release(l, h[0]);
    assert_true(connect_from(l, &a, T0, &h[0])); /* one closed: room for one */
    assert_false(connect_from(l, &a, T0, &h[3]));
    for (int i = 0; i < 3; i++)
        jw_limits_release(l, h[i]);
    jw_limits_release(l, other);
    jw_limits_free(l);
}

static void test_ipv6_counts_by_64(void **state)
{
    jw_config c = cfg(2, 0, 1, 1, 1);
    jw_limits *l = jw_limits_new(&c);
    struct sockaddr_storage a1 = v6("2001:db8:1:2::1"), a2 = v6("2001:db8:1:2:ffff::9"),
                            a3 = v6("2001:db8:1:3::1"), m = v6("::ffff:192.0.2.7"),
                            m4 = v4("192.0.2.7");
    jw_limit_hold *h[6] = {0};

    (void)state;
    assert_true(connect_from(l, &a1, T0, &h[0]));
    assert_true(connect_from(l, &a2, T0, &h[1]));
    assert_false(connect_from(l, &a1, T0, &h[5])); /* same /64 */
    assert_true(connect_from(l, &a3, T0, &h[2]));  /* the next /64 */
    /* A v4-mapped address is its IPv4 address. */
    assert_true(connect_from(l, &m, T0, &h[3]));
    assert_true(connect_from(l, &m4, T0, &h[4]));
    assert_false(connect_from(l, &m4, T0, &h[5]));
    for (int i = 0; i < 5; i++)
        jw_limits_release(l, h[i]);
    jw_limits_free(l);
}

static void test_connection_rate_per_address(void **state)
{
    jw_config c = cfg(0, 10, 1, 1, 1); /* 10/s, bursts of 20, no open bound */
    jw_limits *l = jw_limits_new(&c);
    struct sockaddr_storage a = v4("198.51.100.1");
    jw_limit_hold *h = NULL;
    int ok = 0;

    (void)state;
    for (int i = 0; i < 50; i++)
        ok += connect_from(l, &a, T0, &h);
    assert_int_equal(ok, 20);
    assert_int_equal(jw_limits_refused(l, JW_LIMIT_IP_RATE), 30);
    assert_null(h);                                    /* no open bound: nothing held */
    assert_false(connect_from(l, &a, T0 + 50000, &h)); /* 0.5 token after 50 ms */
    assert_true(connect_from(l, &a, T0 + 100000, &h)); /* one after 100 ms */
    assert_false(connect_from(l, &a, T0 + 100000, &h));
    jw_limits_free(l);
}

static void test_user_rates_and_retry_after(void **state)
{
    jw_config c = cfg(0, 0, 6, 3, 1); /* jobs 6/min, OTP 3/min */
    jw_limits *l = jw_limits_new(&c);
    int after = -1;

    (void)state;
    /* A minute's budget may go at once. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(jw_limits_take(l, JW_LIMIT_USER_JOBS, USER, T0, &after), 0);
    assert_int_equal(jw_limits_take(l, JW_LIMIT_USER_JOBS, USER, T0, &after), JW_ELIMIT);
    assert_int_equal(after, 10 + 1); /* one job per 10 s; rounded up */
    assert_int_equal(jw_limits_take(l, JW_LIMIT_USER_JOBS, USER, T0 + 10 * 1000000, &after), 0);
    assert_int_equal(jw_limits_take(l, JW_LIMIT_USER_JOBS, OTHER, T0, &after), 0);
    /* The OTP bucket is its own. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(jw_limits_take(l, JW_LIMIT_USER_OTP, USER, T0, &after), 0);
    assert_int_equal(jw_limits_take(l, JW_LIMIT_USER_OTP, USER, T0, &after), JW_ELIMIT);
    assert_true(after >= 20 && after <= 21);
    assert_int_equal(jw_limits_take(l, JW_LIMIT_USER_OTP, USER, T0 + 20 * 1000000, &after), 0);
    assert_int_equal(jw_limits_refused(l, JW_LIMIT_USER_JOBS), 1);
    assert_int_equal(jw_limits_refused(l, JW_LIMIT_USER_OTP), 1);
    jw_limits_free(l);
}

static void test_websockets_per_user(void **state)
{
    jw_config c = cfg(0, 0, 1, 1, 2);
    jw_limits *l = jw_limits_new(&c);
    jw_limit_hold *a = jw_limits_ws_hold(l, USER, T0), *b = jw_limits_ws_hold(l, USER, T0);

    (void)state;
    assert_non_null(a);
    assert_non_null(b);
    assert_null(jw_limits_ws_hold(l, USER, T0));
    assert_non_null(jw_limits_ws_hold(l, OTHER, T0));
    jw_limits_release(l, a);
    a = jw_limits_ws_hold(l, USER, T0);
    assert_non_null(a);
    assert_int_equal(jw_limits_refused(l, JW_LIMIT_USER_WS), 1);
    jw_limits_free(l);
}

/* A stream of one-off addresses does not grow the table without end. */
static void test_idle_entries_are_swept(void **state)
{
    jw_config c = cfg(4, 1000, 1, 1, 1);
    jw_limits *l = jw_limits_new(&c);
    jw_limit_hold *keep = NULL, *h;
    struct sockaddr_storage k = v4("203.0.113.1");
    char a[32];

    (void)state;
    assert_true(connect_from(l, &k, T0, &keep));
    for (int i = 0; i < 100000; i++) {
        struct sockaddr_storage s;

        snprintf(a, sizeof(a), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        s = v4(a);
        h = NULL;
        /* 10 ms apart: each one-off bucket is full again long before the next sweep. */
        assert_true(connect_from(l, &s, T0 + (int64_t)i * 10000, &h));
        jw_limits_release(l, h);
    }
    assert_true(jw_limits_entries(l) <= 4096);
    /* The held entry survived every sweep: its count is still right. */
    for (int i = 0; i < 3; i++)
        assert_true(connect_from(l, &k, T0 + INT64_C(2000000000), &h));
    assert_false(connect_from(l, &k, T0 + INT64_C(2000000000), &h));
    jw_limits_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_connections_per_address),
        cmocka_unit_test(test_ipv6_counts_by_64),
        cmocka_unit_test(test_connection_rate_per_address),
        cmocka_unit_test(test_user_rates_and_retry_after),
        cmocka_unit_test(test_websockets_per_user),
        cmocka_unit_test(test_idle_entries_are_swept),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
