/*
 * realtime.h - the Supabase Realtime endpoint, /realtime/v1/websocket
 * (docs/supabase-migration.md): Phoenix channels carrying postgres_changes
 * of job_runs, job_steps and otp_requests, so an app written against
 * @supabase/supabase-js works by pointing its URL at jobwire.
 *
 * It is fed by the same committed deltas as jobwire.v1 (jw_rt_publish is
 * called next to jw_ws_publish_batched): no second source of truth. A join is
 * answered "ok" only once its bindings are live, so nothing committed after
 * SUBSCRIBED is missed. Each delta's "data" part is encoded once and shared
 * by every channel it goes to; a channel adds only its topic and binding
 * ids around it.
 *
 * Who sees what: a channel's principal is its join's access_token (a user's
 * JWT or the admin key), else what the apikey grants (the same, or nobody).
 * A user sees only their own jobs. A join without a user is answered ok and
 * gets nothing until an access_token message brings a user's token; then its
 * jobs are checked as a join with that token would check them. A token's exp
 * (an apikey's included) closes the channel, and nothing is sent for a token
 * already past it. A connection that presents no valid token (apikey, join
 * or access_token) within --ws-auth-timeout is closed with 4408; heartbeats
 * do not extend that deadline.
 *
 * Connections are libwebsockets connections of the http protocol (the client
 * sends no subprotocol): http.c hands their WebSocket callbacks to the
 * upgrade hooks app.c gave it (jw_http_upgrade), which call the two functions
 * at the end of this file, with a slot in http.c's per-session data where this
 * module keeps its own state.
 *
 * Loop thread only. The endpoint borrows the services (services.h).
 */
#ifndef JW_REALTIME_H
#define JW_REALTIME_H

#include "jw_delta.h"
#include "jw_store.h"

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

struct jw_services;
typedef struct jw_rt jw_rt;

#define JW_RT_PATH "/realtime/v1/websocket"

typedef struct jw_rt_stats {
    uint64_t connections;   /* open now */
    uint64_t channels;      /* joined or joining now */
    uint64_t joins_refused; /* phx_join answered with an error */
    uint64_t events_sent;   /* postgres_changes messages handed to sockets */
    uint64_t bytes_sent;
    uint64_t channel_errors;  /* phx_error sent: events shed over the queue bound */
    uint64_t slow_closes;     /* connections closed with only replies over the bound */
    uint64_t rx_throttled;    /* times a connection's reading paused: --ws-message-rate */
    uint64_t direct_writes;   /* publish-round writes sent straight to the socket */
    uint64_t parallel_rounds; /* publish rounds shared with fan-out helper threads */
    uint64_t pings;           /* sent to silent connections (--ws-ping-interval) */
    uint64_t idle_drops;      /* dropped: nothing came after a ping */
} jw_rt_stats;

jw_rt *jw_rt_new(const struct jw_services *sv);
void jw_rt_free(jw_rt *rt);

/* A committed delta, in seq order per job (the engine's publish port). */
void jw_rt_publish(jw_rt *rt, jw_delta *d);
/* Whether a live channel is pinned to the job. */
bool jw_rt_watching(const jw_rt *rt, const char *job_id);
/* Whether a live channel watches every job its principal may see (a wildcard);
 * with owner (a user id), one whose principal may see that user's jobs. */
bool jw_rt_wildcards(const jw_rt *rt, const char *owner);
/* A database read this module asked for has its answer; takes r (realtime.c sets the reads'
 * done to call this). */
void jw_rt_on_read(jw_rt *rt, jw_read *r);
/*
 * A publish round: between jw_rt_hold and jw_rt_flush (nestable), what is
 * queued for a connection is written by the flush (wsconn.h), not announced
 * to lws one connection at a time.
 */
void jw_rt_hold(jw_rt *rt);
void jw_rt_flush(jw_rt *rt);
/* Shutdown: asks every connection to close with 1001; returns how many are open. */
size_t jw_rt_close_all(jw_rt *rt);
void jw_rt_get_stats(const jw_rt *rt, jw_rt_stats *out);

/*
 * LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION of an upgrade without a
 * subprotocol: 0 to accept it (the path is JW_RT_PATH, an apikey is given,
 * vsn is 1.0.0 or 2.0.0, the Origin is allowed), -1 to refuse.
 */
int jw_rt_accept_upgrade(jw_rt *rt, struct lws *wsi);
/*
 * The WebSocket callbacks of such a connection (ESTABLISHED, RECEIVE,
 * SERVER_WRITEABLE, CLOSED). slot is a pointer-sized field of the caller's
 * per-session data, NULL before ESTABLISHED, that this module owns.
 */
int jw_rt_callback(jw_rt *rt, struct lws *wsi, enum lws_callback_reasons reason, void **slot,
                   void *in, size_t len);

#endif
