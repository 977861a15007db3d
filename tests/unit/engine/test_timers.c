/*
 * jw_timers (engine/jw_timers.h): the one min-heap of deadlines behind every
 * engine and sim timer. Timers fire earliest first, once, never before their
 * deadline; cancel and re-arm move them; the owner hears of every change of
 * the earliest deadline; callbacks may arm and cancel timers, themselves too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_timers.h"

#include <stdlib.h>
#include <string.h>

#define MAX_FIRED 2048

static struct {
    jw_timers *q;
    jw_timer *fired[MAX_FIRED]; /* in firing order */
    int64_t fired_at[MAX_FIRED];
    size_t nfired;
    int64_t wakes[4096]; /* what wake_at was told, in order */
    size_t nwakes;
} T;

static void on_wake(void *arg, int64_t at_us)
{
    (void)arg;
    assert_true(T.nwakes < sizeof(T.wakes) / sizeof(T.wakes[0]));
    T.wakes[T.nwakes++] = at_us;
}

static void record(jw_timer *t, void *arg)
{
    (void)arg;
    assert_true(T.nfired < MAX_FIRED);
    T.fired[T.nfired] = t;
    T.fired_at[T.nfired++] = t->at_us;
}

static int setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof(T));
    T.q = jw_timers_new(on_wake, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    jw_timers_free(T.q);
    return 0;
}

static size_t times_fired(const jw_timer *t)
{
    size_t n = 0;

    for (size_t i = 0; i < T.nfired; i++)
        n += T.fired[i] == t;
    return n;
}

/* Many deadlines in scrambled order (more than the heap's first allocation). */
static void test_ordering(void **state)
{
    enum { N = 1000 };
    static jw_timer t[N];
    uint64_t x = 88172645463325252u;
    size_t before;

    (void)state;
    memset(t, 0, sizeof(t));
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        jw_timers_arm(T.q, &t[i], 1000 + (int64_t)(x % 100000), record, NULL);
    }
    assert_int_equal(jw_timers_count(T.q), N);
    /* Only what is due fires, earliest first. */
    jw_timers_run(T.q, 50000);
    for (size_t i = 0; i < T.nfired; i++) {
        assert_true(T.fired_at[i] <= 50000);
        if (i)
            assert_true(T.fired_at[i - 1] <= T.fired_at[i]);
    }
    assert_true(T.nfired > 0 && T.nfired < N);
    assert_true(jw_timers_next(T.q) > 50000);
    before = T.nfired;
    assert_int_equal(jw_timers_run(T.q, INT64_MAX - 1), N - before);
    assert_int_equal(T.nfired, N);
    for (size_t i = 1; i < T.nfired; i++)
        assert_true(T.fired_at[i - 1] <= T.fired_at[i]);
    for (int i = 0; i < N; i++) {
        assert_false(jw_timer_armed(&t[i]));
        assert_int_equal(times_fired(&t[i]), 1);
    }
    assert_int_equal(jw_timers_count(T.q), 0);
    assert_int_equal(jw_timers_next(T.q), INT64_MAX);
}

static void test_cancel(void **state)
{
    jw_timer a = {0}, b = {0}, c = {0}, never = {0};

    (void)state;
    jw_timers_arm(T.q, &a, 100, record, NULL);
    jw_timers_arm(T.q, &b, 200, record, NULL);
    jw_timers_arm(T.q, &c, 300, record, NULL);
    jw_timers_cancel(T.q, &b);
    assert_false(jw_timer_armed(&b));
    assert_int_equal(jw_timers_count(T.q), 2);
    /* Harmless twice, and on a timer never armed. */
    jw_timers_cancel(T.q, &b);
    jw_timers_cancel(T.q, &never);
    assert_int_equal(jw_timers_count(T.q), 2);
    /* Cancelling the earliest moves the earliest. */
    jw_timers_cancel(T.q, &a);
    assert_int_equal(jw_timers_next(T.q), 300);
    assert_int_equal(jw_timers_run(T.q, 1000), 1);
    assert_int_equal(times_fired(&a), 0);
    assert_int_equal(times_fired(&b), 0);
    assert_int_equal(times_fired(&c), 1);
}

static void other(jw_timer *t, void *arg)
{
    (void)t;
    *(int *)arg += 1;
}

/* Arming an armed timer moves it (and replaces its callback): one entry, one firing. */
static void test_rearm(void **state)
{
    jw_timer a = {0};
    int calls = 0;

    (void)state;
    jw_timers_arm(T.q, &a, 100, record, NULL);
    jw_timers_arm(T.q, &a, 50, record, NULL);
    assert_int_equal(jw_timers_count(T.q), 1);
    assert_int_equal(jw_timers_next(T.q), 50);
    assert_int_equal(jw_timers_run(T.q, 60), 1);
    assert_int_equal(jw_timers_run(T.q, 1000), 0);
    assert_int_equal(times_fired(&a), 1);
    /* Later, and another callback. */
    jw_timers_arm(T.q, &a, 2000, record, NULL);
    jw_timers_arm(T.q, &a, 3000, other, &calls);
    assert_int_equal(jw_timers_run(T.q, 2500), 0);
    assert_true(jw_timer_armed(&a));
    assert_int_equal(jw_timers_run(T.q, 3000), 1);
    assert_int_equal(calls, 1);
    assert_int_equal(times_fired(&a), 1);
}

/* jw_timers_next and wake_at follow the earliest deadline, and only its changes. */
static void test_earliest(void **state)
{
    jw_timer a = {0}, b = {0}, c = {0};

    (void)state;
    assert_int_equal(jw_timers_next(T.q), INT64_MAX);
    jw_timers_arm(T.q, &a, 100, record, NULL);
    assert_int_equal(T.nwakes, 1);
    assert_int_equal(T.wakes[0], 100);
    jw_timers_arm(T.q, &b, 200, record, NULL); /* not earlier: no news */
    assert_int_equal(T.nwakes, 1);
    jw_timers_arm(T.q, &c, 50, record, NULL);
    assert_int_equal(jw_timers_next(T.q), 50);
    assert_int_equal(T.nwakes, 2);
    assert_int_equal(T.wakes[1], 50);
    jw_timers_cancel(T.q, &b); /* not the earliest: no news */
    assert_int_equal(T.nwakes, 2);
    jw_timers_cancel(T.q, &c);
    assert_int_equal(T.nwakes, 3);
    assert_int_equal(T.wakes[2], 100);
    /* After a run the owner is always told what is next: its native timer fired. */
    jw_timers_arm(T.q, &b, 200, record, NULL);
    assert_int_equal(jw_timers_run(T.q, 10), 0);
    assert_int_equal(T.wakes[T.nwakes - 1], 100);
    assert_int_equal(jw_timers_run(T.q, 150), 1);
    assert_int_equal(T.wakes[T.nwakes - 1], 200);
    assert_int_equal(jw_timers_run(T.q, 200), 1);
    assert_int_equal(T.wakes[T.nwakes - 1], INT64_MAX);
    assert_int_equal(jw_timers_next(T.q), INT64_MAX);
}

/* Equal deadlines: none early, all at it, each once; a later one waits. */
static void test_equal_deadlines(void **state)
{
    jw_timer t[10], later = {0};

    (void)state;
    memset(t, 0, sizeof(t));
    for (int i = 0; i < 10; i++)
        jw_timers_arm(T.q, &t[i], 500, record, NULL);
    jw_timers_arm(T.q, &later, 501, record, NULL);
    assert_int_equal(jw_timers_next(T.q), 500);
    assert_int_equal(jw_timers_run(T.q, 499), 0);
    assert_int_equal(jw_timers_run(T.q, 500), 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(times_fired(&t[i]), 1);
    assert_int_equal(times_fired(&later), 0);
    assert_true(jw_timer_armed(&later));
    /* Cancelling one of several equal ones leaves the others. */
    for (int i = 0; i < 3; i++)
        jw_timers_arm(T.q, &t[i], 600, record, NULL);
    jw_timers_cancel(T.q, &t[1]);
    assert_int_equal(jw_timers_run(T.q, 600), 3); /* later, t[0], t[2] */
    assert_int_equal(times_fired(&t[1]), 1);
    assert_int_equal(times_fired(&t[0]), 2);
    assert_int_equal(times_fired(&later), 1);
}

/* Callbacks may arm and cancel timers, themselves included, during a run. */
static struct {
    jw_timer self, victim, spawned;
    int self_runs;
} C;

static void cb_cancel_victim(jw_timer *t, void *arg)
{
    record(t, arg);
    jw_timers_cancel(T.q, &C.victim);
}

static void cb_rearm_self(jw_timer *t, void *arg)
{
    record(t, arg);
    /* Twice due again at once (fired in this run), then later. */
    if (++C.self_runs < 3)
        jw_timers_arm(T.q, t, t->at_us, cb_rearm_self, arg);
    else
        jw_timers_arm(T.q, t, 10000, cb_rearm_self, arg);
}

static void cb_spawn(jw_timer *t, void *arg)
{
    record(t, arg);
    jw_timers_arm(T.q, &C.spawned, 150, record, NULL); /* already due */
}

static void test_callbacks_arm_and_cancel(void **state)
{
    jw_timer first = {0}, spawner = {0};

    (void)state;
    memset(&C, 0, sizeof(C));
    jw_timers_arm(T.q, &first, 10, cb_cancel_victim, NULL);
    jw_timers_arm(T.q, &C.victim, 20, record, NULL);
    jw_timers_arm(T.q, &C.self, 30, cb_rearm_self, NULL);
    jw_timers_arm(T.q, &spawner, 40, cb_spawn, NULL);
    /* first, self three times, spawner, and what it spawned; not the victim */
    assert_int_equal(jw_timers_run(T.q, 200), 6);
    assert_int_equal(times_fired(&C.victim), 0);
    assert_int_equal(times_fired(&C.self), 3);
    assert_int_equal(times_fired(&C.spawned), 1);
    assert_true(jw_timer_armed(&C.self));
    assert_int_equal(jw_timers_next(T.q), 10000);
}

static void test_free_disarms(void **state)
{
    jw_timer a = {0};

    (void)state;
    jw_timers_arm(T.q, &a, 100, record, NULL);
    jw_timers_free(T.q);
    assert_false(jw_timer_armed(&a));
    T.q = jw_timers_new(NULL, NULL); /* for teardown; and no wake_at is fine */
    jw_timers_arm(T.q, &a, 5, record, NULL);
    assert_int_equal(jw_timers_run(T.q, 5), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ordering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rearm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_earliest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal_deadlines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callbacks_arm_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_disarms, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
