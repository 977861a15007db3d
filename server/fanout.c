/*
 * fanout.c - helper threads that take batches off the loop thread (see
 * fanout.h).
 *
 * One mutex guards the two lists: batches with items left to claim (todo),
 * and batches whose every item returned (done), for the loop thread to
 * drain. A batch's counters (claimed, left) are the mutex's too: a chunk of
 * 8 sends costs tens of microseconds, its two lock round-trips little.
 */
#include "fanout.h"

#include "jw_log.h"
#include "jw_util.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#define CHUNK 8 /* items claimed at once: few trips to the lock, little left waiting */

typedef struct batch {
    struct batch *next;
    jw_fanout_fn *fn;
    jw_fanout_done_fn *done;
    void *ctx;
    size_t n, claimed, left;
} batch;

typedef struct helper {
    jw_fanout *pool;
    int index; /* 1..helpers */
    pthread_t thread;
} helper;

struct jw_fanout {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a batch to take, or stop */
    pthread_cond_t idle; /* unfinished fell to 0 */
    bool stop;
    batch *todo_head, *todo_tail; /* items left to claim, oldest first */
    batch *done_head, *done_tail; /* finished, not yet drained */
    size_t unfinished;            /* submitted, some item not returned yet */
    void (*wake)(void *arg);
    void *wake_arg;
    int nhelpers;
    helper *helpers;
};

/* With p->mu held: takes the next chunk of the oldest batch with items left (NULL: none). */
static batch *claim(jw_fanout *p, size_t *from, size_t *to)
{
    batch *b = p->todo_head;

    if (!b)
        return NULL;
    *from = b->claimed;
    *to = *from + CHUNK < b->n ? *from + CHUNK : b->n;
    b->claimed = *to;
    if (*to == b->n && !(p->todo_head = b->next))
        p->todo_tail = NULL;
    return b;
}

/* Runs items from..to-1 of b on worker, then, with p->mu held again, counts them back. */
static void run_chunk(jw_fanout *p, batch *b, size_t from, size_t to, int worker)
{
    pthread_mutex_unlock(&p->mu);
    for (size_t k = from; k < to; k++)
        b->fn(b->ctx, k, worker);
    pthread_mutex_lock(&p->mu);
    b->left -= to - from;
    if (b->left > 0)
        return;
    b->next = NULL;
    if (!p->done_head && p->wake) { /* one wake-up for a run of batches not yet drained */
        void (*wake_fn)(void *) = p->wake;
        void *wake_arg = p->wake_arg;

        p->done_head = p->done_tail = b;
        pthread_mutex_unlock(&p->mu);
        wake_fn(wake_arg);
        pthread_mutex_lock(&p->mu);
    } else {
        if (p->done_tail)
            p->done_tail->next = b;
        else
            p->done_head = b;
        p->done_tail = b;
    }
    /* Only now: jw_fanout_finish's caller may take the wake's target away. */
    if (--p->unfinished == 0)
        pthread_cond_broadcast(&p->idle);
}

static void *helper_main(void *arg)
{
    helper *h = arg;
    jw_fanout *p = h->pool;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        batch *b;
        size_t from, to;

        while (!p->stop && !p->todo_head)
            pthread_cond_wait(&p->work, &p->mu);
        if (!(b = claim(p, &from, &to)))
            break; /* stop, and nothing left */
        run_chunk(p, b, from, to, h->index);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

jw_fanout *jw_fanout_new(int helpers, void (*wake)(void *arg), void *wake_arg)
{
    jw_fanout *p = jw_xcalloc(1, sizeof(*p));
    sigset_t old;

    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    p->wake = wake;
    p->wake_arg = wake_arg;
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
    jw_fanout_finish(p);
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nhelpers; i++)
        pthread_join(p->helpers[i].thread, NULL);
    free(p->helpers);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void jw_fanout_set_wake(jw_fanout *p, void (*wake)(void *arg), void *wake_arg)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->wake = wake;
    p->wake_arg = wake_arg;
    pthread_mutex_unlock(&p->mu);
}

int jw_fanout_helpers(const jw_fanout *p)
{
    return p ? p->nhelpers : 0;
}

void jw_fanout_submit(jw_fanout *p, size_t n, jw_fanout_fn *fn, jw_fanout_done_fn *done, void *ctx)
{
    batch *b;
    size_t wake;

    if (!p || p->nhelpers == 0 || n == 0) {
        for (size_t i = 0; i < n; i++)
            fn(ctx, i, 0);
        done(ctx);
        return;
    }
    b = jw_xcalloc(1, sizeof(*b));
    b->fn = fn;
    b->done = done;
    b->ctx = ctx;
    b->n = b->left = n;
    pthread_mutex_lock(&p->mu);
    if (p->todo_tail)
        p->todo_tail->next = b;
    else
        p->todo_head = b;
    p->todo_tail = b;
    p->unfinished++;
    /* As many helpers as the batch has chunks. */
    wake = (n + CHUNK - 1) / CHUNK < (size_t)p->nhelpers ? (n + CHUNK - 1) / CHUNK
                                                         : (size_t)p->nhelpers;
    while (wake-- > 0)
        pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

size_t jw_fanout_help(jw_fanout *p)
{
    size_t from, to;
    batch *b;

    if (!p || p->nhelpers == 0)
        return 0;
    pthread_mutex_lock(&p->mu);
    b = claim(p, &from, &to);
    if (b)
        run_chunk(p, b, from, to, 0);
    pthread_mutex_unlock(&p->mu);
    return b ? to - from : 0;
}

size_t jw_fanout_drain(jw_fanout *p)
{
    batch *b;
    size_t n = 0;

    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    b = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (b) {
        batch *next = b->next;

        b->done(b->ctx);
        free(b);
        b = next;
        n++;
    }
    return n;
}

void jw_fanout_finish(jw_fanout *p)
{
    bool more;

    if (!p)
        return;
    do { /* a batch's done may hand over another */
        pthread_mutex_lock(&p->mu);
        while (p->unfinished > 0)
            pthread_cond_wait(&p->idle, &p->mu);
        pthread_mutex_unlock(&p->mu);
        jw_fanout_drain(p);
        pthread_mutex_lock(&p->mu);
        more = p->unfinished > 0 || p->done_head;
        pthread_mutex_unlock(&p->mu);
    } while (more);
}
