/*
 * fanout.c - helper threads sharing a batch of work with the loop thread
 * (see fanout.h).
 *
 * One mutex guards the run's description (fn, ctx, n), its generation and
 * the count of helpers inside it; items are claimed with an atomic counter.
 * A helper that wakes late, after its run ended, still registers as busy
 * before it looks at the counter, and a new run is set up only once no
 * helper is busy: so a late helper either finds its old run exhausted or
 * joins the new one, never mixes the two.
 */
#include "fanout.h"

#include "jw_log.h"
#include "jw_util.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define CHUNK 8 /* items claimed at once: few trips to the counter, little left waiting */

typedef struct helper {
    jw_fanout *pool;
    int index; /* 1..helpers */
    pthread_t thread;
} helper;

struct jw_fanout {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a new run, or stop */
    pthread_cond_t done; /* busy fell to 0 */
    unsigned gen;        /* runs started */
    bool stop;
    int busy; /* helpers inside a run */
    jw_fanout_fn *fn;
    void *ctx;
    size_t n;
    atomic_size_t next; /* the next unclaimed item */
    int nhelpers;
    helper *helpers;
};

/* Takes chunks of the current run until none is left. */
static void take(jw_fanout *p, jw_fanout_fn *fn, void *ctx, size_t n, int worker)
{
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&p->next, CHUNK, memory_order_relaxed);
        size_t end = i + CHUNK < n ? i + CHUNK : n;

        if (i >= n)
            return;
        for (; i < end; i++)
            fn(ctx, i, worker);
    }
}

static void *helper_main(void *arg)
{
    helper *h = arg;
    jw_fanout *p = h->pool;
    unsigned seen = 0;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        jw_fanout_fn *fn;
        void *ctx;
        size_t n;

        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        p->busy++;
        fn = p->fn;
        ctx = p->ctx;
        n = p->n;
        pthread_mutex_unlock(&p->mu);
        take(p, fn, ctx, n, h->index);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

jw_fanout *jw_fanout_new(int helpers)
{
    jw_fanout *p = jw_xcalloc(1, sizeof(*p));
    sigset_t old;

    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    if (helpers <= 0)
        return p;
    p->helpers = jw_xcalloc((size_t)helpers, sizeof(*p->helpers));
    /* Signals stay with the loop thread. */
    jw_signals_block(&old);
    for (int i = 0; i < helpers; i++) {
        helper *h = &p->helpers[i];

        h->pool = p;
        h->index = i + 1;
        if (pthread_create(&h->thread, NULL, helper_main, h) != 0) {
            jw_log_error("fanout: cannot start helper thread %d of %d", i + 1, helpers);
            break;
        }
        p->nhelpers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (p->nhelpers < helpers) {
        jw_fanout_free(p);
        return NULL;
    }
    return p;
}

void jw_fanout_free(jw_fanout *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nhelpers; i++)
        pthread_join(p->helpers[i].thread, NULL);
    free(p->helpers);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int jw_fanout_helpers(const jw_fanout *p)
{
    return p ? p->nhelpers : 0;
}

void jw_fanout_run(jw_fanout *p, size_t n, jw_fanout_fn *fn, void *ctx)
{
    size_t wake;

    if (n == 0)
        return;
    if (!p || p->nhelpers == 0) {
        for (size_t i = 0; i < n; i++)
            fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    /* A helper that woke after the last run ended may still be leaving it. */
    while (p->busy > 0)
        pthread_cond_wait(&p->done, &p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->gen++;
    /* As many helpers as there are chunks beyond the caller's first. */
    wake = (n - 1) / CHUNK < (size_t)p->nhelpers ? (n - 1) / CHUNK : (size_t)p->nhelpers;
    while (wake-- > 0)
        pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);

    take(p, fn, ctx, n, 0);

    pthread_mutex_lock(&p->mu);
    while (p->busy > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
