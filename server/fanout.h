/*
 * fanout.h - helper threads that take batches of independent work off the
 * loop thread: a publish round's socket writes (wsconn.c).
 *
 * What it does
 *   jw_fanout_submit(pool, n, fn, done, ctx) hands a batch to the helpers
 *   and returns at once: they call fn(ctx, i, worker) once for every i in
 *   0..n-1, then done(ctx) runs on the loop thread, from jw_fanout_drain.
 *   The loop thread goes on with its own work (the engine, lws) meanwhile:
 *   it never waits for a batch. Between its own turns it may take part, one
 *   chunk at a time (jw_fanout_help), so a round does not leave its core
 *   idle and what becomes ready meanwhile waits for one chunk at most.
 *   Batches are taken in the order they were submitted, each in chunks
 *   of 8 items by whichever worker is free; the order among a batch's items
 *   is not kept. fn must touch only item i, worker's own scratch (worker is
 *   1..helpers, 0 for the loop thread) and what no other thread writes until
 *   done runs. The worker that finishes a batch's last chunk
 *   wakes the loop thread (the wake function, lws_cancel_service in the
 *   server) once for a run of batches finished before it drains them.
 *
 * Threads
 *   jw_fanout_new / submit / help / drain / finish / free: one thread (the loop).
 *   The helpers are the pool's own; they block between batches.
 */
#ifndef JW_FANOUT_H
#define JW_FANOUT_H

#include <stddef.h>

typedef struct jw_fanout jw_fanout;

/*
 * A publish round's writes are handed to the helpers from this many on: a
 * send costs a few microseconds, waking a helper (and the loop thread after
 * it) about as much as a few sends.
 */
#define JW_FANOUT_MIN_WRITES 16

typedef void jw_fanout_fn(void *ctx, size_t i, int worker);
typedef void jw_fanout_done_fn(void *ctx);

/*
 * A pool of `helpers` threads (0: none; submit then runs a batch at once on
 * the caller); wake(arg) (may be NULL) tells the loop thread that batches
 * are done. NULL if a thread failed to start.
 */
jw_fanout *jw_fanout_new(int helpers, void (*wake)(void *arg), void *wake_arg);
/* Who is woken when batches are done from now on (NULL: nobody; before a context goes). */
void jw_fanout_set_wake(jw_fanout *p, void (*wake)(void *arg), void *wake_arg);
/* Waits for every batch (jw_fanout_finish), then stops and joins the helpers. NULL is ignored. */
void jw_fanout_free(jw_fanout *p);
/* The helpers' count: workers are numbered 1..helpers. 0 for NULL. */
int jw_fanout_helpers(const jw_fanout *p);
/* Hands the batch over (see above); n may be 0. Without helpers, runs it and done now. */
void jw_fanout_submit(jw_fanout *p, size_t n, jw_fanout_fn *fn, jw_fanout_done_fn *done, void *ctx);
/*
 * The loop thread, between its turns: runs one chunk of the oldest batch with
 * items left, as worker 0; the items it ran (0: none left to take, or no helpers).
 */
size_t jw_fanout_help(jw_fanout *p);
/* Calls done of every batch finished since the last drain, in the order they finished. */
size_t jw_fanout_drain(jw_fanout *p);
/* Waits until every batch submitted has finished, and drains (shutdown; tests). */
void jw_fanout_finish(jw_fanout *p);

#endif
