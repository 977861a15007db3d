/*
 * app.h - the composition root: the one place that builds every part of the
 * server and wires them together (server internal).
 *
 * jw_app owns the loop-thread side of jobwire: the engine, the one timer
 * queue (driven by a single lws_sul), the provider (the embedded sim or the
 * http provider), the authenticator, the limits, the two WebSocket endpoints
 * (jobwire.v1 and the Supabase one), the API and /metrics, and the hand-off
 * of store answers and provider replies from other threads (drained in
 * LWS_CALLBACK_EVENT_WAIT_CANCELLED). It implements the engine's ports:
 * clock, randomness, store, publish, timers, provider.
 *
 * Wiring, all here and nowhere else: each part gets the narrow interface it
 * needs - the endpoints and handlers the services (services.h), the HTTP
 * layer its route table and upgrade hooks (http.h), the API and /metrics
 * their structs (api.h, metrics.h), each database read its own completion
 * (jw_read.done). No other server module includes this header but main.c,
 * which runs the process: configuration, signals, the lws context, the store
 * and the loop.
 *
 * Loop thread only, except jw_app_new/jw_app_free (main, before and after
 * the service loop).
 */
#ifndef JW_APP_H
#define JW_APP_H

#include "config.h"
#include "http.h"
#include "jw_store.h"

#include <libwebsockets.h>
#include <stddef.h>

typedef struct jw_app jw_app;

/*
 * The vhost's protocols, in the order lws needs them: HTTP (with its
 * upgrade hooks) first, then jobwire.v1, then the loop's wake-up. Static
 * storage: lws keeps the pointer.
 */
const struct lws_protocols *jw_app_protocols(void);

/*
 * Builds the app on the lws context ctx and its vhost vh (made with
 * jw_app_protocols), and hands the HTTP side (http) its routes, upgrade hooks
 * and limits. Borrows cfg, ctx, vh, http and store; they must outlive it.
 */
int jw_app_new(jw_app **out, const jw_config *cfg, struct lws_context *ctx, struct lws_vhost *vh,
               jw_http_ctx *http, jw_store *store, char *err, size_t errlen);
/* Start-up: loads the unfinished jobs (blocking) and resumes them. */
int jw_app_recover(jw_app *app, char *err, size_t errlen);
/*
 * After recovery: starts the cluster thread (db/cluster.h), which listens
 * for the other nodes and takes over the jobs of dead or departed ones.
 * 0 or JW_ENOMEM.
 */
int jw_app_start_cluster(jw_app *app, int64_t incarnation);
/* Shutdown, before the leases are handed back: nothing more is claimed. */
void jw_app_stop_cluster(jw_app *app);
/* Hands store answers, read results and provider replies to their owners. */
void jw_app_drain(jw_app *app);
/*
 * Between two turns of the loop: one chunk (8) of a publish round's writes
 * that no fan-out helper has taken yet, made here; how many (0: none waits).
 */
size_t jw_app_help(jw_app *app);
/* Shutdown: asks every WebSocket connection to close with 1001; returns how many are open. */
size_t jw_app_close_connections(jw_app *app);
/* WebSocket connections still open, both endpoints. */
size_t jw_app_connections(const jw_app *app);
/* Shutdown, before the lws context goes: stops the provider threads. */
void jw_app_stop(jw_app *app);
/* After the lws context is gone. */
void jw_app_free(jw_app *app);

#endif
