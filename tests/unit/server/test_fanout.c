/*
 * fanout.c: a pool of helper threads sharing a batch of items with the caller.
 * Every item is called exactly once, by a worker numbered 0..helpers, and is
 * done when jw_fanout_run returns; runs back to back never mix; the helpers
 * really take items. Failures seen on a helper thread are counted in atomics
 * and checked by the caller (cmocka's asserts are the main thread's).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fanout.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One run's items: a call count per item, and what the calls saw that they should not have. */
typedef struct run_ctx {
    int kind;             /* which fn the run was given: fn_a 1, fn_b 2 */
    int helpers;          /* workers are 0..helpers */
    size_t n;             /* items */
    atomic_int *calls;    /* calls[i]: how often item i was called */
    atomic_int bad;       /* calls with an index or worker out of range, or the other fn */
    atomic_int by_helper; /* calls made on a worker other than 0 */
} run_ctx;

static void count(run_ctx *r, size_t i, int worker, int kind)
{
    if (i >= r->n || worker < 0 || worker > r->helpers || kind != r->kind) {
        atomic_fetch_add(&r->bad, 1);
        return;
    }
    atomic_fetch_add(&r->calls[i], 1);
    if (worker != 0)
        atomic_fetch_add(&r->by_helper, 1);
}

static void fn_a(void *ctx, size_t i, int worker)
{
    count(ctx, i, worker, 1);
}

/* The same with another identity: a helper that took one run's fn with another's ctx shows. */
static void fn_b(void *ctx, size_t i, int worker)
{
    count(ctx, i, worker, 2);
}

static void ctx_init(run_ctx *r, int kind, int helpers, size_t n, atomic_int *calls)
{
    r->kind = kind;
    r->helpers = helpers;
    r->n = n;
    r->calls = calls;
    for (size_t i = 0; i < n; i++)
        atomic_init(&calls[i], 0);
    atomic_init(&r->bad, 0);
    atomic_init(&r->by_helper, 0);
}

/* Every item of r was called exactly once, by a worker in range. */
static void assert_each_once(run_ctx *r)
{
    assert_int_equal(atomic_load(&r->bad), 0);
    for (size_t i = 0; i < r->n; i++)
        if (atomic_load(&r->calls[i]) != 1)
            fail_msg("item %zu of %zu was called %d times", i, r->n, atomic_load(&r->calls[i]));
}

/* ---- tests -------------------------------------------------------------------------- */

/* The pool reports its helpers; 0 helpers and NULL both leave the caller alone. */
static void test_new_and_helpers(void **state)
{
    jw_fanout *p0 = jw_fanout_new(0), *p3 = jw_fanout_new(3);

    (void)state;
    assert_non_null(p0);
    assert_non_null(p3);
    assert_int_equal(jw_fanout_helpers(p0), 0);
    assert_int_equal(jw_fanout_helpers(p3), 3);
    assert_int_equal(jw_fanout_helpers(NULL), 0);
    jw_fanout_free(p0);
    jw_fanout_free(p3);
    jw_fanout_free(NULL); /* ignored */
}

/*
 * Each item is called exactly once, by worker 0..helpers, and all are done
 * when run returns: n around the claiming chunk (1, 7, 8, 9) and many chunks
 * (1000), with 0, 1 and 3 helpers, and with no pool at all.
 */
static void test_each_item_once(void **state)
{
    static const size_t ns[] = {1, 7, 8, 9, 1000};
    static const int hs[] = {0, 1, 3};
    static atomic_int calls[1000];

    (void)state;
    for (size_t h = 0; h < sizeof(hs) / sizeof(hs[0]); h++) {
        jw_fanout *p = jw_fanout_new(hs[h]);

        assert_non_null(p);
        for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
            run_ctx r;

            ctx_init(&r, 1, hs[h], ns[k], calls);
            jw_fanout_run(p, ns[k], fn_a, &r);
            assert_each_once(&r);
            if (hs[h] == 0)
                assert_int_equal(atomic_load(&r.by_helper), 0); /* the caller alone */
        }
        jw_fanout_free(p);
    }
    for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        run_ctx r;

        ctx_init(&r, 1, 0, ns[k], calls);
        jw_fanout_run(NULL, ns[k], fn_a, &r);
        assert_each_once(&r);
    }
}

/*
 * Runs back to back on one pool: a helper often wakes for a run that the
 * caller already finished (it did every item) and may still be leaving it
 * when the next run is set up. Each run has its own counters, ctx and
 * alternately another fn: each is complete when run returns, and once all
 * are over no counter of any earlier run moved (no late call to an old run,
 * no old fn with a new ctx).
 */
static void test_back_to_back(void **state)
{
    enum { RUNS = 2000, MAXN = 20 };
    static const int hs[] = {1, 3};
    atomic_int *calls = malloc(sizeof(*calls) * RUNS * MAXN);
    run_ctx *rs = malloc(sizeof(*rs) * RUNS);

    (void)state;
    assert_non_null(calls);
    assert_non_null(rs);
    for (size_t h = 0; h < sizeof(hs) / sizeof(hs[0]); h++) {
        jw_fanout *p = jw_fanout_new(hs[h]);

        assert_non_null(p);
        for (size_t k = 0; k < RUNS; k++) {
            size_t n = k % MAXN + 1; /* 1..20: within one chunk, and a few chunks */
            int kind = k % 2 ? 2 : 1;

            ctx_init(&rs[k], kind, hs[h], n, calls + k * MAXN);
            jw_fanout_run(p, n, kind == 1 ? fn_a : fn_b, &rs[k]);
            assert_each_once(&rs[k]);
        }
        jw_fanout_free(p); /* joins the helpers: nothing can still be under way */
        for (size_t k = 0; k < RUNS; k++)
            assert_each_once(&rs[k]);
    }
    free(rs);
    free(calls);
}

static atomic_int never_calls;

static void fn_never(void *ctx, size_t i, int worker)
{
    (void)ctx;
    (void)i;
    (void)worker;
    atomic_fetch_add(&never_calls, 1);
}

/* n = 0 calls nothing, with and without helpers; the pool still works afterwards. */
static void test_zero_items(void **state)
{
    jw_fanout *p0 = jw_fanout_new(0), *p2 = jw_fanout_new(2);
    atomic_int calls[9];
    run_ctx r;

    (void)state;
    atomic_init(&never_calls, 0);
    jw_fanout_run(p0, 0, fn_never, NULL);
    jw_fanout_run(p2, 0, fn_never, NULL);
    jw_fanout_run(NULL, 0, fn_never, NULL);
    assert_int_equal(atomic_load(&never_calls), 0);
    ctx_init(&r, 1, 2, 9, calls);
    jw_fanout_run(p2, 9, fn_a, &r);
    assert_each_once(&r);
    jw_fanout_free(p0);
    jw_fanout_free(p2);
}

/* Items that each take ~1 ms, and which worker ran each; helpers note their signal mask. */
typedef struct slow_ctx {
    atomic_int worker[64]; /* which worker ran item i, -1: none yet */
    atomic_int calls;      /* calls in all */
    atomic_int term_open;  /* calls on a helper with SIGTERM not blocked */
} slow_ctx;

static void fn_slow(void *ctx, size_t i, int worker)
{
    slow_ctx *c = ctx;
    struct timespec ms = {0, 1000000};

    atomic_store(&c->worker[i], worker);
    atomic_fetch_add(&c->calls, 1);
    if (worker != 0) {
        sigset_t cur;

        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        if (!sigismember(&cur, SIGTERM))
            atomic_fetch_add(&c->term_open, 1);
    }
    nanosleep(&ms, NULL);
}

/*
 * The helpers take part: with 2 helpers and 64 items of ~1 ms each (8 chunks
 * of 8), the caller cannot finish before a helper wakes, so some item runs
 * on a worker other than 0. A functional check, no timing is asserted: a
 * machine too loaded to run a helper within the first ~8 ms of several runs
 * is the only way it could fail without a bug. The helpers keep SIGTERM
 * blocked (signals stay with the loop thread), and the caller's mask is
 * what it was before the pool was made.
 */
static void test_helpers_take_part(void **state)
{
    sigset_t before, after;
    jw_fanout *p;
    int helped = 0;
    slow_ctx c;

    (void)state;
    pthread_sigmask(SIG_BLOCK, NULL, &before);
    p = jw_fanout_new(2);
    assert_non_null(p);
    pthread_sigmask(SIG_BLOCK, NULL, &after);
    assert_int_equal(sigismember(&before, SIGTERM), sigismember(&after, SIGTERM));
    assert_int_equal(sigismember(&before, SIGINT), sigismember(&after, SIGINT));
    for (int attempt = 0; attempt < 5 && !helped; attempt++) {
        atomic_init(&c.calls, 0);
        atomic_init(&c.term_open, 0);
        for (int i = 0; i < 64; i++)
            atomic_init(&c.worker[i], -1);
        jw_fanout_run(p, 64, fn_slow, &c);
        assert_int_equal(atomic_load(&c.calls), 64);
        assert_int_equal(atomic_load(&c.term_open), 0);
        for (int i = 0; i < 64; i++) {
            int w = atomic_load(&c.worker[i]);

            assert_true(w >= 0 && w <= 2);
            helped += w != 0;
        }
    }
    assert_true(helped > 0);
    jw_fanout_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_and_helpers),   cmocka_unit_test(test_each_item_once),
        cmocka_unit_test(test_back_to_back),      cmocka_unit_test(test_zero_items),
        cmocka_unit_test(test_helpers_take_part),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
