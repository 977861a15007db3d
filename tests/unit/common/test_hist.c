/* Unit tests of common/jw_hist: bucket edges, cumulative Prometheus text, merge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_buf.h"
#include "jw_error.h"
#include "jw_hist.h"

#include <string.h>

/* 0.1 ms, 1 ms, 10 ms, 2.5 s, in microseconds, exported in seconds. */
static const jw_hist_spec us_spec = {.n = 4, .le = {100, 1000, 10000, 2500000}, .decimals = 6};
/* Plain counts. */
static const jw_hist_spec count_spec = {.n = 3, .le = {1, 2, 4}, .decimals = 0};

static void test_le_is_inclusive(void **state)
{
    jw_hist h;

    (void)state;
    jw_hist_init(&h, &us_spec);
    jw_hist_observe(&h, 100); /* exactly on a bound: that bucket, not the next */
    assert_int_equal(h.bucket[0], 1);
    assert_int_equal(h.bucket[1], 0);
    jw_hist_observe(&h, 101); /* just above: the next */
    assert_int_equal(h.bucket[1], 1);
    jw_hist_observe(&h, 0); /* the lowest bucket takes everything below it */
    assert_int_equal(h.bucket[0], 2);
    jw_hist_observe(&h, 2500000);
    assert_int_equal(h.bucket[3], 1);
    jw_hist_observe(&h, 2500001); /* above the last bound: +Inf only */
    assert_int_equal(h.bucket[3], 1);
    assert_int_equal(h.bucket[4], 1);
    assert_int_equal(h.count, 5);
    assert_int_equal(h.sum, 100 + 101 + 0 + 2500000 + 2500001);
    assert_int_equal(jw_hist_cumulative(&h, 0), 2);
    assert_int_equal(jw_hist_cumulative(&h, 1), 3);
    assert_int_equal(jw_hist_cumulative(&h, 2), 3);
    assert_int_equal(jw_hist_cumulative(&h, 3), 4);
    assert_int_equal(jw_hist_cumulative(&h, 4), 5); /* +Inf == count */
    assert_int_equal(jw_hist_cumulative(&h, 99), 5);
}

static void test_every_bucket_edge(void **state)
{
    static jw_hist_spec wide;
    jw_hist h;

    (void)state;
    /* Bounds 10, 20, ..., 200: each value v lands in bucket ceil(v/10)-1. */
    wide.n = JW_HIST_MAX_BOUNDS;
    for (size_t i = 0; i < wide.n; i++)
        wide.le[i] = (i + 1) * 10;
    jw_hist_init(&h, &wide);
    for (uint64_t v = 1; v <= 210; v++) {
        uint64_t before[JW_HIST_MAX_BOUNDS + 1];
        size_t want = v > 200 ? wide.n : (size_t)((v + 9) / 10 - 1);

        memcpy(before, h.bucket, sizeof(before));
        jw_hist_observe(&h, v);
        for (size_t k = 0; k <= wide.n; k++)
            assert_int_equal(h.bucket[k], before[k] + (k == want));
    }
}

static void test_prometheus_text(void **state)
{
    jw_hist h;
    jw_buf b;

    (void)state;
    jw_hist_init(&h, &us_spec);
    jw_hist_observe(&h, 50);
    jw_hist_observe(&h, 1000);
    jw_hist_observe(&h, 3000000);
    jw_buf_init(&b, 256);
    jw_hist_prom_header(&b, "x_seconds", "Something timed.");
    jw_hist_prom(&b, "x_seconds", "step=\"a\"", &h);
    assert_string_equal(b.data, "# HELP x_seconds Something timed.\n"
                                "# TYPE x_seconds histogram\n"
                                "x_seconds_bucket{step=\"a\",le=\"0.0001\"} 1\n"
                                "x_seconds_bucket{step=\"a\",le=\"0.001\"} 2\n"
                                "x_seconds_bucket{step=\"a\",le=\"0.01\"} 2\n"
                                "x_seconds_bucket{step=\"a\",le=\"2.5\"} 2\n"
                                "x_seconds_bucket{step=\"a\",le=\"+Inf\"} 3\n"
                                "x_seconds_sum{step=\"a\"} 3.00105\n"
                                "x_seconds_count{step=\"a\"} 3\n");
    /* No labels: no braces on _sum and _count, le alone on buckets. */
    jw_buf_reset(&b);
    jw_hist_init(&h, &count_spec);
    jw_hist_observe(&h, 3);
    jw_hist_prom(&b, "g", "", &h);
    assert_string_equal(b.data, "g_bucket{le=\"1\"} 0\n"
                                "g_bucket{le=\"2\"} 0\n"
                                "g_bucket{le=\"4\"} 1\n"
                                "g_bucket{le=\"+Inf\"} 1\n"
                                "g_sum 3\n"
                                "g_count 1\n");
    jw_buf_release(&b);
}

static void test_format_fixed(void **state)
{
    char s[32];

    (void)state;
    jw_hist_format_fixed(s, sizeof(s), 100, 6);
    assert_string_equal(s, "0.0001");
    jw_hist_format_fixed(s, sizeof(s), 2500000, 6);
    assert_string_equal(s, "2.5");
    jw_hist_format_fixed(s, sizeof(s), 600000000, 6);
    assert_string_equal(s, "600");
    jw_hist_format_fixed(s, sizeof(s), 1, 6);
    assert_string_equal(s, "0.000001");
    jw_hist_format_fixed(s, sizeof(s), 0, 6);
    assert_string_equal(s, "0");
    jw_hist_format_fixed(s, sizeof(s), 1234567, 6);
    assert_string_equal(s, "1.234567");
    jw_hist_format_fixed(s, sizeof(s), 512, 0);
    assert_string_equal(s, "512");
    jw_hist_format_fixed(s, sizeof(s), UINT64_MAX, 0);
    assert_string_equal(s, "18446744073709551615");
}

static void test_merge_and_snapshot(void **state)
{
    jw_hist a, b, other, snap;

    (void)state;
    jw_hist_init(&a, &us_spec);
    jw_hist_init(&b, &us_spec);
    jw_hist_observe(&a, 10);
    jw_hist_observe(&a, 5000);
    jw_hist_observe(&b, 5000);
    jw_hist_observe(&b, 9999999);
    snap = a; /* a copy is a snapshot: later observations do not reach it */
    assert_int_equal(jw_hist_merge(&a, &b), 0);
    assert_int_equal(a.count, 4);
    assert_int_equal(a.sum, 10 + 5000 + 5000 + 9999999);
    assert_int_equal(a.bucket[0], 1);
    assert_int_equal(a.bucket[2], 2);
    assert_int_equal(a.bucket[4], 1);
    assert_int_equal(jw_hist_cumulative(&a, us_spec.n), a.count);
    assert_int_equal(snap.count, 2);
    assert_int_equal(snap.bucket[2], 1);
    /* Different bounds cannot be added: refused, nothing changed. */
    jw_hist_init(&other, &count_spec);
    jw_hist_observe(&other, 1);
    assert_int_equal(jw_hist_merge(&a, &other), JW_EINVAL);
    assert_int_equal(a.count, 4);
    assert_int_equal(jw_hist_merge(&other, &a), JW_EINVAL);
    assert_int_equal(other.count, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_le_is_inclusive),    cmocka_unit_test(test_every_bucket_edge),
        cmocka_unit_test(test_prometheus_text),    cmocka_unit_test(test_format_fixed),
        cmocka_unit_test(test_merge_and_snapshot),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
