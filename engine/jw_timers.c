#include "jw_timers.h"

#include "jw_log.h"

#include <stdlib.h>

struct jw_timers {
    jw_timer **heap; /* heap[0] unused: 1-based keeps the index math plain */
    size_t count, cap;
    int64_t announced;
    void (*wake_at)(void *arg, int64_t at_us);
    void *wake_arg;
};

jw_timers *jw_timers_new(void (*wake_at)(void *arg, int64_t at_us), void *arg)
{
    jw_timers *q = jw_xcalloc(1, sizeof(*q));

    q->cap = 64;
    q->heap = jw_xmalloc((q->cap + 1) * sizeof(*q->heap));
    q->announced = INT64_MAX;
    q->wake_at = wake_at;
    q->wake_arg = arg;
    return q;
}

void jw_timers_free(jw_timers *q)
{
    if (!q)
        return;
    for (size_t i = 1; i <= q->count; i++)
        q->heap[i]->slot = 0;
    free(q->heap);
    free(q);
}

static void place(jw_timers *q, size_t i, jw_timer *t)
{
    q->heap[i] = t;
    t->slot = i;
}

static void sift_up(jw_timers *q, size_t i)
{
    jw_timer *t = q->heap[i];

    while (i > 1 && q->heap[i / 2]->at_us > t->at_us) {
        place(q, i, q->heap[i / 2]);
        i /= 2;
    }
    place(q, i, t);
}

static void sift_down(jw_timers *q, size_t i)
{
    jw_timer *t = q->heap[i];

    for (;;) {
        size_t c = 2 * i;

        if (c > q->count)
            break;
        if (c + 1 <= q->count && q->heap[c + 1]->at_us < q->heap[c]->at_us)
            c++;
        if (q->heap[c]->at_us >= t->at_us)
            break;
        place(q, i, q->heap[c]);
        i = c;
    }
    place(q, i, t);
}

static void announce(jw_timers *q)
{
    int64_t next = jw_timers_next(q);

    if (next != q->announced) {
        q->announced = next;
        if (q->wake_at)
            q->wake_at(q->wake_arg, next);
    }
}

static void remove_at(jw_timers *q, size_t i)
{
    jw_timer *last = q->heap[q->count--];

    q->heap[i]->slot = 0;
    if (i <= q->count) {
        place(q, i, last);
        sift_down(q, i);
        sift_up(q, last->slot);
    }
}

void jw_timers_arm(jw_timers *q, jw_timer *t, int64_t at_us, jw_timer_fn fn, void *arg)
{
    if (t->slot)
        remove_at(q, t->slot);
    t->at_us = at_us;
    t->fn = fn;
    t->arg = arg;
    if (q->count == q->cap) {
        q->cap *= 2;
        q->heap = jw_xrealloc(q->heap, (q->cap + 1) * sizeof(*q->heap));
    }
    place(q, ++q->count, t);
    sift_up(q, q->count);
    announce(q);
}

void jw_timers_cancel(jw_timers *q, jw_timer *t)
{
    if (!t->slot)
        return;
    remove_at(q, t->slot);
    announce(q);
}

size_t jw_timers_run(jw_timers *q, int64_t now_us)
{
    size_t fired = 0;

    while (q->count && q->heap[1]->at_us <= now_us) {
        jw_timer *t = q->heap[1];

        remove_at(q, 1);
        fired++;
        t->fn(t, t->arg);
    }
    /* Callbacks may have armed earlier ones; the loop above took them. */
    q->announced = INT64_MIN; /* force: the native timer just fired */
    announce(q);
    return fired;
}

int64_t jw_timers_next(const jw_timers *q)
{
    return q->count ? q->heap[1]->at_us : INT64_MAX;
}

size_t jw_timers_count(const jw_timers *q)
{
    return q->count;
}
