/*
 * sim_provider.c - the simulated provider's loop adapter: the jw_provider
 * port over the jw_sim core. start() runs the core at once and delivers its
 * reply latency_ms later through a jw_timers timer. See sim.h.
 *
 * Threads: the loop thread only, like the jw_timers it arms.
 */
#include "sim.h"

#include "jw_error.h"
#include "jw_log.h"
#include "jw_util.h"

#include <stdlib.h>

typedef struct pending {
    jw_timer timer;
    struct jw_sim_provider *sp;
    jw_provider_reply *reply;
    struct pending *prev, *next;
} pending;

struct jw_sim_provider {
    jw_sim *sim;
    jw_timers *timers;
    int64_t (*now_us)(void *arg);
    void *now_arg;
    jw_provider_deliver_fn deliver;
    void *deliver_arg;
    pending *head;
    size_t in_flight;
};

static void unlink_pending(jw_sim_provider *sp, pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        sp->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    sp->in_flight--;
}

static void on_due(jw_timer *t, void *arg)
{
    pending *p = arg;
    jw_sim_provider *sp = p->sp;
    jw_provider_reply *reply = p->reply;

    (void)t;
    unlink_pending(sp, p);
    free(p);
    sp->deliver(sp->deliver_arg, reply);
}

static int64_t wall_clock(void *arg)
{
    (void)arg;
    return jw_now_us();
}

static int sp_start(void *ctx, jw_provider_call *call)
{
    jw_sim_provider *sp = ctx;
    pending *p;
    int64_t now;

    if (!call)
        return JW_EINVAL;
    now = sp->now_us(sp->now_arg);
    p = jw_xcalloc(1, sizeof(*p));
    p->sp = sp;
    p->reply = jw_sim_handle(sp->sim, call, now);
    /* Done with the call: its OTP is wiped now, not after the latency. */
    jw_provider_call_free(call);
    p->next = sp->head;
    if (sp->head)
        sp->head->prev = p;
    sp->head = p;
    sp->in_flight++;
    jw_timers_arm(sp->timers, &p->timer,
                  now + (int64_t)jw_sim_config_of(sp->sim)->latency_ms * 1000, on_due, p);
    return 0;
}

static void sp_destroy(void *ctx)
{
    jw_sim_provider_free(ctx);
}

jw_sim_provider *jw_sim_provider_new(jw_sim *sim, jw_timers *timers, int64_t (*now_us)(void *arg),
                                     void *now_arg, jw_provider_deliver_fn deliver,
                                     void *deliver_arg)
{
    jw_sim_provider *sp = jw_xcalloc(1, sizeof(*sp));

    sp->sim = sim;
    sp->timers = timers;
    sp->now_us = now_us ? now_us : wall_clock;
    sp->now_arg = now_arg;
    sp->deliver = deliver;
    sp->deliver_arg = deliver_arg;
    return sp;
}

jw_provider jw_sim_provider_port(jw_sim_provider *sp)
{
    jw_provider port = {.name = "sim", .ctx = sp, .start = sp_start, .destroy = sp_destroy};

    return port;
}

size_t jw_sim_provider_in_flight(const jw_sim_provider *sp)
{
    return sp->in_flight;
}

void jw_sim_provider_free(jw_sim_provider *sp)
{
    if (!sp)
        return;
    while (sp->head) {
        pending *p = sp->head;

        jw_timers_cancel(sp->timers, &p->timer);
        unlink_pending(sp, p);
        jw_provider_reply_free(p->reply);
        free(p);
    }
    free(sp);
}
