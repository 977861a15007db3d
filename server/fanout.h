/*
 * fanout.h - helper threads that share one batch of independent work with the
 * loop thread: a publish round's socket writes (wsconn.c).
 *
 * What it does
 *   jw_fanout_run(pool, n, fn, ctx) calls fn(ctx, i, worker) once for every i
 *   in 0..n-1 and returns when all n calls have returned. The calling thread
 *   takes items too, so a run does not depend on a helper waking up: a helper
 *   not scheduled before the items run out takes none, and the caller waits
 *   only for chunks a helper did take (and, at the next run's start, for a
 *   helper that woke late to leave the last one empty-handed). Items are
 *   taken in chunks of 8 from a shared counter; the order among them is not
 *   kept, so fn must touch only item i and worker's own scratch (worker is 0
 *   for the caller, 1..helpers for the helpers). A run wakes only as many
 *   helpers as there are chunks beyond the caller's first.
 *
 *   While a run is under way the caller does nothing else, so the items may
 *   read (never write) loop-thread state, and nothing else writes it:
 *   everything fn wrote is visible to the caller once run returns.
 *
 * Threads
 *   jw_fanout_new / run / free: one thread (the loop). The helpers are the
 *   pool's own; they block between runs.
 */
#ifndef JW_FANOUT_H
#define JW_FANOUT_H

#include <stddef.h>

typedef struct jw_fanout jw_fanout;

/*
 * A publish round's writes are shared with the helpers from this many on: a
 * send costs a few microseconds, waking a helper about as much as a few sends.
 */
#define JW_FANOUT_MIN_WRITES 16

typedef void jw_fanout_fn(void *ctx, size_t i, int worker);

/* A pool of `helpers` threads (0: runs are the caller's alone); NULL if a thread failed to start.
 */
jw_fanout *jw_fanout_new(int helpers);
/* Stops and joins the helpers. NULL is ignored. */
void jw_fanout_free(jw_fanout *p);
/* The helpers' count: workers are numbered 0..helpers. 0 for NULL. */
int jw_fanout_helpers(const jw_fanout *p);
/* Calls fn(ctx, i, worker) for each i < n, the caller taking part; returns when all are done. */
void jw_fanout_run(jw_fanout *p, size_t n, jw_fanout_fn *fn, void *ctx);

#endif
