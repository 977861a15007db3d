/*
 * fanout.c: a pool of helper threads taking batches of items off the loop
 * thread. jw_fanout_submit returns at once (a batch whose items block does
 * not hold the caller); every item is called exactly once, by a helper
 * numbered 1..helpers (0: the caller, without helpers); done runs once per
 * batch, on the caller, from jw_fanout_drain, after every item returned,
 * and the wake function tells the caller so; many batches in flight never
 * mix. Failures seen on a helper thread are counted in atomics and checked
 * by the caller (cmocka's asserts are the main thread's).
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
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One batch's items: a call count per item, and what the calls saw that they should not have. */
typedef struct run_ctx {
    int kind;             /* which fn the batch was given: fn_a 1, fn_b 2 */
    int helpers;          /* workers are 1..helpers (0 without) */
    size_t n;             /* items */
    atomic_int *calls;    /* calls[i]: how often item i was called */
    atomic_int bad;       /* calls with an index or worker out of range, or the other fn */
    atomic_int by_helper; /* calls made on a worker other than 0 */
    int done;             /* done calls (the caller's thread) */
    int done_seen;        /* items called when done ran */
    int order;            /* when done ran, among the test's batches: 1, 2, ... */
} run_ctx;

static int done_order;

static void count(run_ctx *r, size_t i, int worker, int kind)
{
    if (i >= r->n || worker < 0 || worker > r->helpers || (r->helpers && worker == 0) ||
        kind != r->kind) {
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

/* The same with another identity: a helper that took one batch's fn with another's ctx shows. */
static void fn_b(void *ctx, size_t i, int worker)
{
    count(ctx, i, worker, 2);
}

static void on_done(void *ctx)
{
    run_ctx *r = ctx;

    r->done++;
    r->order = ++done_order;
    r->done_seen = 0;
    for (size_t i = 0; i < r->n; i++)
        r->done_seen += atomic_load(&r->calls[i]);
}

static void ctx_init(run_ctx *r, int kind, int helpers, size_t n, atomic_int *calls)
{
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->helpers = helpers;
    r->n = n;
    r->calls = calls;
    for (size_t i = 0; i < n; i++)
        atomic_init(&calls[i], 0);
    atomic_init(&r->bad, 0);
    atomic_init(&r->by_helper, 0);
}

/* Every item of r was called exactly once, by a worker in range, before its one done. */
static void assert_each_once(run_ctx *r)
{
    assert_int_equal(atomic_load(&r->bad), 0);
    for (size_t i = 0; i < r->n; i++)
        if (atomic_load(&r->calls[i]) != 1)
            fail_msg("item %zu of %zu was called %d times", i, r->n, atomic_load(&r->calls[i]));
    assert_int_equal(r->done, 1);
    assert_int_equal(r->done_seen, (int)r->n);
}

/* ---- tests -------------------------------------------------------------------------- */

/* The pool reports its helpers; 0 helpers and NULL both leave the caller alone. */
static void test_new_and_helpers(void **state)
{
    jw_fanout *p0 = jw_fanout_new(0, NULL, NULL), *p3 = jw_fanout_new(3, NULL, NULL);

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
 * Each item is called exactly once, by a helper (by the caller without
 * helpers, at once), and done once after all of them: n around the claiming
 * chunk (1, 7, 8, 9) and many chunks (1000), with 0, 1 and 3 helpers, and
 * with no pool at all.
 */
static void test_each_item_once(void **state)
{
    static const size_t ns[] = {1, 7, 8, 9, 1000};
    static const int hs[] = {0, 1, 3};
    static atomic_int calls[1000];

    (void)state;
    for (size_t h = 0; h < sizeof(hs) / sizeof(hs[0]); h++) {
        jw_fanout *p = jw_fanout_new(hs[h], NULL, NULL);

        assert_non_null(p);
        for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
            run_ctx r;

            ctx_init(&r, 1, hs[h], ns[k], calls);
            jw_fanout_submit(p, ns[k], fn_a, on_done, &r);
            if (hs[h] == 0)
                assert_int_equal(r.done, 1); /* the caller's, at once */
            jw_fanout_finish(p);
            assert_each_once(&r);
            assert_int_equal(atomic_load(&r.by_helper), hs[h] ? (int)ns[k] : 0);
        }
        jw_fanout_free(p);
    }
    for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        run_ctx r;

        ctx_init(&r, 1, 0, ns[k], calls);
        jw_fanout_submit(NULL, ns[k], fn_a, on_done, &r);
        assert_each_once(&r);
    }
}

/*
 * Many batches in flight at once on one pool, never drained in between: each
 * has its own counters, ctx and alternately another fn; each is complete
 * with one done once all finished, no counter of another moved (no call to
 * a batch with another's fn or ctx), and with one helper the batches finish
 * (and are drained) in the order they were handed over.
 */
static void test_many_in_flight(void **state)
{
    enum { RUNS = 2000, MAXN = 20 };
    static const int hs[] = {1, 3};
    atomic_int *calls = malloc(sizeof(*calls) * RUNS * MAXN);
    run_ctx *rs = malloc(sizeof(*rs) * RUNS);

    (void)state;
    assert_non_null(calls);
    assert_non_null(rs);
    for (size_t h = 0; h < sizeof(hs) / sizeof(hs[0]); h++) {
        jw_fanout *p = jw_fanout_new(hs[h], NULL, NULL);

        assert_non_null(p);
        done_order = 0;
        for (size_t k = 0; k < RUNS; k++) {
            size_t n = k % MAXN + 1; /* 1..20: within one chunk, and a few chunks */
            int kind = k % 2 ? 2 : 1;

            ctx_init(&rs[k], kind, hs[h], n, calls + k * MAXN);
            jw_fanout_submit(p, n, kind == 1 ? fn_a : fn_b, on_done, &rs[k]);
        }
        jw_fanout_finish(p);
        for (size_t k = 0; k < RUNS; k++) {
            assert_each_once(&rs[k]);
            if (hs[h] == 1)
                assert_int_equal(rs[k].order, (int)k + 1);
        }
        jw_fanout_free(p);
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

static void count_done(void *ctx)
{
    ++*(int *)ctx;
}

/* n = 0 calls nothing but done (at once), with and without helpers; the pool still works. */
static void test_zero_items(void **state)
{
    jw_fanout *p0 = jw_fanout_new(0, NULL, NULL), *p2 = jw_fanout_new(2, NULL, NULL);
    atomic_int calls[9];
    int dones = 0;
    run_ctx r;

    (void)state;
    atomic_init(&never_calls, 0);
    jw_fanout_submit(p0, 0, fn_never, count_done, &dones);
    jw_fanout_submit(p2, 0, fn_never, count_done, &dones);
    jw_fanout_submit(NULL, 0, fn_never, count_done, &dones);
    assert_int_equal(atomic_load(&never_calls), 0);
    assert_int_equal(dones, 3);
    ctx_init(&r, 1, 2, 9, calls);
    jw_fanout_submit(p2, 9, fn_a, on_done, &r);
    jw_fanout_finish(p2);
    assert_each_once(&r);
    jw_fanout_free(p0);
    jw_fanout_free(p2);
}

/* A batch whose items wait for the test to let them go; the wake function's calls. */
typedef struct gate_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    int wakes; /* wake() calls */
    int entered, dones;
} gate_ctx;

static void fn_gated(void *ctx, size_t i, int worker)
{
    gate_ctx *g = ctx;

    (void)i;
    (void)worker;
    pthread_mutex_lock(&g->mu);
    g->entered++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gated_done(void *ctx)
{
    ((gate_ctx *)ctx)->dones++;
}

static void on_wake(void *arg)
{
    gate_ctx *g = arg;

    pthread_mutex_lock(&g->mu);
    g->wakes++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/*
 * The caller never waits for a batch: submit returns while its item is still
 * running on a helper (blocked until the test opens the gate); meanwhile
 * drain finds nothing done and nobody was woken. Once the item returns, the
 * wake function is called (once), and drain runs done (once).
 */
static void test_caller_does_not_wait(void **state)
{
    gate_ctx g = {.open = false};
    jw_fanout *p;

    (void)state;
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    p = jw_fanout_new(1, on_wake, &g);
    assert_non_null(p);
    jw_fanout_submit(p, 1, fn_gated, gated_done, &g);
    pthread_mutex_lock(&g.mu);
    while (g.entered == 0) /* the helper holds the item */
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    assert_int_equal(jw_fanout_drain(p), 0);
    assert_int_equal(g.dones, 0);
    assert_int_equal(g.wakes, 0);
    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    while (g.wakes == 0)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    assert_int_equal(jw_fanout_drain(p), 1);
    assert_int_equal(g.dones, 1);
    assert_int_equal(jw_fanout_drain(p), 0);
    jw_fanout_free(p);
    assert_int_equal(g.wakes, 1);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
}

/* Which worker ran each item of a batch of 16 whose items block until the gate opens. */
typedef struct help_ctx {
    gate_ctx g;
    atomic_int worker[16];
} help_ctx;

static void fn_help(void *ctx, size_t i, int worker)
{
    help_ctx *h = ctx;

    atomic_store(&h->worker[i], worker);
    if (worker != 0)
        fn_gated(&h->g, i, worker); /* the helper stays in its chunk until the gate opens */
}

static void help_done(void *ctx)
{
    ((help_ctx *)ctx)->g.dones++;
}

/*
 * The loop thread takes part between its turns: with the one helper held in the
 * first chunk of a batch of 16, jw_fanout_help runs the second chunk at once
 * on worker 0 (8 items), then finds nothing left to take; the batch is done
 * (done runs once) when the helper's chunk returns. Without helpers, help
 * does nothing.
 */
static void test_loop_helps(void **state)
{
    help_ctx h;
    jw_fanout *p, *p0 = jw_fanout_new(0, NULL, NULL);

    (void)state;
    memset(&h, 0, sizeof(h));
    pthread_mutex_init(&h.g.mu, NULL);
    pthread_cond_init(&h.g.cv, NULL);
    for (int i = 0; i < 16; i++)
        atomic_init(&h.worker[i], -1);
    p = jw_fanout_new(1, on_wake, &h.g);
    assert_non_null(p);
    assert_int_equal(jw_fanout_help(p0), 0);
    assert_int_equal(jw_fanout_help(p), 0); /* nothing handed over yet */
    jw_fanout_submit(p, 16, fn_help, help_done, &h);
    pthread_mutex_lock(&h.g.mu);
    while (h.g.entered == 0) /* the helper holds the first chunk */
        pthread_cond_wait(&h.g.cv, &h.g.mu);
    pthread_mutex_unlock(&h.g.mu);
    assert_int_equal(jw_fanout_help(p), 8);
    assert_int_equal(jw_fanout_help(p), 0);
    for (int i = 8; i < 16; i++)
        assert_int_equal(atomic_load(&h.worker[i]), 0);
    assert_int_equal(jw_fanout_drain(p), 0); /* the helper's chunk is not back */
    pthread_mutex_lock(&h.g.mu);
    h.g.open = true;
    pthread_cond_broadcast(&h.g.cv);
    pthread_mutex_unlock(&h.g.mu);
    jw_fanout_finish(p);
    assert_int_equal(h.g.dones, 1);
    for (int i = 0; i < 8; i++)
        assert_int_equal(atomic_load(&h.worker[i]), 1);
    jw_fanout_free(p);
    jw_fanout_free(p0);
    pthread_cond_destroy(&h.g.cv);
    pthread_mutex_destroy(&h.g.mu);
}

/* Items that each take ~1 ms, and which worker ran each; helpers note their signal mask. */
typedef struct slow_ctx {
    atomic_int worker[64]; /* which worker ran item i, -1: none yet */
    atomic_int calls;      /* calls in all */
    atomic_int term_open;  /* calls on a helper with SIGTERM not blocked */
} slow_ctx;

static void slow_done(void *ctx)
{
    (void)ctx;
}

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
 * The helpers share a batch: with 2 helpers and 64 items of ~1 ms each (8
 * chunks of 8), both take some. A functional check, no timing is asserted:
 * a machine too loaded to run the second helper within ~60 ms in five
 * batches is the only way it could fail without a bug. The helpers keep SIGTERM
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
    p = jw_fanout_new(2, NULL, NULL);
    assert_non_null(p);
    pthread_sigmask(SIG_BLOCK, NULL, &after);
    assert_int_equal(sigismember(&before, SIGTERM), sigismember(&after, SIGTERM));
    assert_int_equal(sigismember(&before, SIGINT), sigismember(&after, SIGINT));
    for (int attempt = 0; attempt < 5 && helped != 6; attempt++) {
        atomic_init(&c.calls, 0);
        atomic_init(&c.term_open, 0);
        for (int i = 0; i < 64; i++)
            atomic_init(&c.worker[i], -1);
        jw_fanout_submit(p, 64, fn_slow, slow_done, &c);
        jw_fanout_finish(p);
        assert_int_equal(atomic_load(&c.calls), 64);
        assert_int_equal(atomic_load(&c.term_open), 0);
        for (int i = 0; i < 64; i++) {
            int w = atomic_load(&c.worker[i]);

            assert_true(w >= 1 && w <= 2);
            helped |= 1 << w;
        }
    }
    assert_int_equal(helped, 6); /* both helpers took items */
    jw_fanout_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_and_helpers),      cmocka_unit_test(test_each_item_once),
        cmocka_unit_test(test_many_in_flight),       cmocka_unit_test(test_zero_items),
        cmocka_unit_test(test_caller_does_not_wait), cmocka_unit_test(test_loop_helps),
        cmocka_unit_test(test_helpers_take_part),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
