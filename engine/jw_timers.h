/*
 * jw_timers.h - deadlines for the loop thread: a min-heap of timers, so the
 * event loop needs exactly one native timer per heap (an lws_sul in the
 * server, a fake clock in unit tests) armed for the earliest deadline. No
 * periodic scans over jobs or connections.
 *
 * A heap does not read a clock: its owner runs it with the time. The
 * server keeps two (app.c). The engine's, the sim provider's and token
 * expiries are wall-clock microseconds since the epoch, the same clock as the
 * timestamps stored in PostgreSQL, so a deadline read back after a restart
 * (an OTP's timeout_at, a step's next_retry_at) is re-armed as it is. The
 * WebSocket connections' liveness and auth deadlines are on the monotonic
 * clock (jw_mono_us), which a wall-clock step does not move.
 *
 * Loop thread only. A jw_timer is embedded in its owner; cancel it before the
 * owner is freed.
 */
#ifndef JW_TIMERS_H
#define JW_TIMERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jw_timer jw_timer;
typedef void (*jw_timer_fn)(jw_timer *t, void *arg);

struct jw_timer {
    int64_t at_us;
    size_t slot; /* 1-based heap position; 0 while not armed */
    jw_timer_fn fn;
    void *arg;
};

typedef struct jw_timers jw_timers;

/*
 * wake_at(arg, at_us) is called whenever the earliest deadline changes
 * (INT64_MAX: no timer armed); the owner then calls jw_timers_run at or after
 * that time.
 */
jw_timers *jw_timers_new(void (*wake_at)(void *arg, int64_t at_us), void *arg);
void jw_timers_free(jw_timers *q);

/* (Re)arms t to call fn(t, arg) at at_us. */
void jw_timers_arm(jw_timers *q, jw_timer *t, int64_t at_us, jw_timer_fn fn, void *arg);
/* Disarms t; harmless when not armed. */
void jw_timers_cancel(jw_timers *q, jw_timer *t);
static inline bool jw_timer_armed(const jw_timer *t)
{
    return t->slot != 0;
}

/* Fires every timer due at now_us, earliest first; returns how many fired.
 * A callback may arm or cancel any timer, itself included. */
size_t jw_timers_run(jw_timers *q, int64_t now_us);
/* The earliest deadline, or INT64_MAX. */
int64_t jw_timers_next(const jw_timers *q);
size_t jw_timers_count(const jw_timers *q);

#endif
