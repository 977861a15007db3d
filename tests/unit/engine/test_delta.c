/* Unit tests of engine/jw_delta: validation at the boundary, sharing, batches, the wire text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_delta.h"
#include "jw_error.h"

#include <stdlib.h>
#include <string.h>

#define JOB "11111111-1111-4111-8111-111111111111"
#define ROW "22222222-2222-4222-8222-222222222222"

static void test_new_copies_row(void **state)
{
    char row[] = "{\"id\":\"x\"}";
    int err = 1;
    jw_delta *d =
        jw_delta_new(JOB, ROW, 3, 42, JW_TABLE_JOB_STEPS, JW_OP_UPDATE, row, strlen(row), &err);

    (void)state;
    assert_non_null(d);
    assert_int_equal(err, 0);
    row[2] = 'Z'; /* the delta owns its own copy */
    assert_string_equal(d->row, "{\"id\":\"x\"}");
    assert_int_equal(d->row_len, strlen(d->row));
    assert_string_equal(d->job_id, JOB);
    assert_int_equal(d->seq, 3);
    assert_int_equal(d->ts_us, 42);
    assert_int_equal(d->commit_us, 0); /* not committed yet: no cts on the wire */
    jw_delta_unref(d);
}

static void test_new_refuses_bad_input(void **state)
{
    char *big;
    int err = 0;

    (void)state;
    assert_null(
        jw_delta_new("not-a-uuid", ROW, 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, "{}", 2, &err));
    assert_int_equal(err, JW_EINVAL);
    assert_null(jw_delta_new(JOB, "nope", 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, "{}", 2, &err));
    assert_int_equal(err, JW_EINVAL);
    assert_null(jw_delta_new(JOB, ROW, -1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, "{}", 2, &err));
    assert_int_equal(err, JW_EINVAL);
    assert_null(jw_delta_new(JOB, ROW, 1, 0, (jw_table)99, JW_OP_INSERT, "{}", 2, &err));
    assert_int_equal(err, JW_EINVAL);
    assert_null(jw_delta_new(JOB, ROW, 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, NULL, 0, &err));
    assert_int_equal(err, JW_EINVAL);
    /* A journaled delta needs its job; a quiet write (seq 0) does not. */
    assert_null(jw_delta_new("", ROW, 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, "{}", 2, &err));
    assert_int_equal(err, JW_EINVAL);
    jw_delta *quiet =
        jw_delta_new("", ROW, 0, 0, JW_TABLE_AUTH_SESSIONS, JW_OP_INSERT, "{}", 2, &err);
    assert_non_null(quiet);
    jw_delta_unref(quiet);

    big = malloc(JW_DELTA_MAX_ROW + 1);
    memset(big, ' ', JW_DELTA_MAX_ROW + 1);
    assert_null(jw_delta_new(JOB, ROW, 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, big,
                             JW_DELTA_MAX_ROW + 1, &err));
    assert_int_equal(err, JW_ETOOBIG);
    jw_delta *max =
        jw_delta_new(JOB, ROW, 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, big, JW_DELTA_MAX_ROW, &err);
    assert_non_null(max);
    jw_delta_unref(max);
    free(big);
}

static void test_refcount_and_batch(void **state)
{
    jw_delta *d = jw_delta_new(JOB, ROW, 1, 0, JW_TABLE_JOB_RUNS, JW_OP_INSERT, "{}", 2, NULL);
    jw_batch *b = jw_batch_new();

    (void)state;
    jw_batch_add(b, jw_delta_ref(d));
    for (int i = 2; i <= 20; i++)
        jw_batch_add(b,
                     jw_delta_new(JOB, ROW, i, 0, JW_TABLE_JOB_RUNS, JW_OP_UPDATE, "{}", 2, NULL));
    assert_int_equal(b->count, 20);
    assert_int_equal(b->deltas[19]->seq, 20);
    assert_int_equal(atomic_load(&d->refs), 2);
    jw_batch_free(b);
    /* The batch dropped its reference; ours still holds the delta. */
    assert_int_equal(atomic_load(&d->refs), 1);
    assert_string_equal(d->row, "{}");
    jw_delta_unref(d);
    jw_delta_unref(NULL);
    jw_batch_free(NULL);
}

static void test_table_names(void **state)
{
    (void)state;
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        assert_int_equal(jw_table_from_name(jw_table_name((jw_table)t)), t);
    assert_int_equal(jw_table_from_name("job_events"), -1);
    assert_int_equal(jw_table_from_name(NULL), -1);
    assert_string_equal(jw_op_name(JW_OP_INSERT), "INSERT");
    assert_string_equal(jw_op_name(JW_OP_UPDATE), "UPDATE");
}

/* The wire text: fields in protocol order, cts only once committed, the row verbatim. */
static void test_encode(void **state)
{
    /* Spacing, key order and number forms a re-encoder would change. */
    const char row[] = "{\"id\":\"" ROW "\", \"amount\":1.50,\"b\":\"\\u00e9/\"}";
    jw_delta *d = jw_delta_new(JOB, ROW, 7, 1700000000123456, JW_TABLE_OTP_REQUESTS, JW_OP_INSERT,
                               row, strlen(row), NULL);
    jw_buf b;

    (void)state;
    jw_buf_init(&b, 64);
    jw_delta_encode(d, &b);
    assert_string_equal(b.data, "{\"type\":\"delta\",\"job_id\":\"" JOB "\",\"seq\":7,"
                                "\"ts\":1700000000123456,\"table\":\"otp_requests\","
                                "\"op\":\"INSERT\",\"row\":{\"id\":\"" ROW "\", "
                                "\"amount\":1.50,\"b\":\"\\u00e9/\"}}");
    jw_buf_reset(&b);
    d->commit_us = 1700000000125012;
    jw_delta_encode(d, &b);
    assert_non_null(strstr(b.data, "\"ts\":1700000000123456,\"cts\":1700000000125012,"
                                   "\"table\":"));
    jw_buf_release(&b);
    jw_delta_unref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_copies_row),
        cmocka_unit_test(test_new_refuses_bad_input),
        cmocka_unit_test(test_refcount_and_batch),
        cmocka_unit_test(test_table_names),
        cmocka_unit_test(test_encode),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
