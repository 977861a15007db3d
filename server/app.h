/*
 * app.h - the server's wiring of the engine to the outside (server internal).
 *
 * jw_app owns the loop-thread side of jobwire: the engine, the one timer
 * queue (driven by a single lws_sul), the provider (the embedded sim or the
 * http provider), the authenticator, and the hand-off of store answers and
 * provider replies from other threads (drained in
 * LWS_CALLBACK_EVENT_WAIT_CANCELLED). It implements the engine's ports:
 * clock, randomness, store, publish, timers, provider.
 *
 * Loop thread only, except jw_app_new/jw_app_free (main, before and after
 * the service loop).
 */
#ifndef JW_APP_H
#define JW_APP_H

#include "auth.h"
#include "config.h"
#include "http.h"
#include "jw_engine.h"
#include "jw_store.h"
#include "jw_timers.h"
#include "providers/http_provider.h"
#include "providers/sim.h"
#include "realtime.h"
#include "ws.h"

#include <libwebsockets.h>

typedef struct jw_app {
    const jw_config *cfg;
    struct lws_context *ctx;
    jw_http_ctx *http;
    jw_store *store;
    jw_timers *timers;
    lws_sorted_usec_list_t sul; /* the one native timer, armed for timers' earliest */
    jw_engine *engine;
    jw_auth *auth;
    jw_sim *sim;                     /* sim mode only */
    jw_sim_provider *sim_port;       /* sim mode only */
    jw_http_provider *http_provider; /* http mode only */
    uint64_t published;              /* committed deltas handed to the fan-out */
    jw_ws *ws;                       /* the jobwire.v1 hub */
    jw_rt *rt;                       /* the Supabase Realtime endpoint */
    jw_limits *limits;               /* per client address and per user (limiter.h) */
    /* Per committed batch, microseconds from its hand-over to the store to
     * its deltas' publication: what a watching client waits. */
    jw_hist publish_delay;
} jw_app;

/* Who asked for a database read: jw_read.tag. */
enum { JW_READ_TAG_API = 0, JW_READ_TAG_WS = 1, JW_READ_TAG_RT = 2 };

int jw_app_new(jw_app **out, const jw_config *cfg, struct lws_context *ctx, jw_http_ctx *http,
               jw_store *store, char *err, size_t errlen);
/* Start-up: loads the unfinished jobs (blocking) and resumes them. */
int jw_app_recover(jw_app *app, char *err, size_t errlen);
/* Hands store answers, read results and provider replies to their owners. */
void jw_app_drain(jw_app *app);
/* Shutdown, before the lws context goes: stops the provider threads. */
void jw_app_stop(jw_app *app);
/* After the lws context is gone. */
void jw_app_free(jw_app *app);

/* api.c: read results come back here (the read's user is the API's). */
void jw_api_on_read(jw_app *app, jw_read *r);

#endif
