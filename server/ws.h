/*
 * ws.h - the jobwire.v1 WebSocket endpoint (docs/protocol.md).
 *
 * The hub keeps, per job, the connections subscribed to it and a ring of its
 * last 64 committed deltas. Each committed delta is encoded once into a
 * reference-counted message that every subscriber's queue shares; a
 * connection's queued messages leave in one frame, newline-separated. Queues
 * are bounded in bytes: past the bound a job's queued deltas are replaced by
 * one fresh snapshot, and a connection over its bound for too long is closed.
 *
 * Loop thread only. The hub borrows the services (services.h); connections
 * are lws-owned and leave the hub when lws closes them.
 */
#ifndef JW_WS_H
#define JW_WS_H

#include "jw_delta.h"
#include "jw_store.h"

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

struct jw_services;
typedef struct jw_ws jw_ws;

#define JW_WS_PROTOCOL "jobwire.v1"

typedef struct jw_ws_stats {
    uint64_t connections;   /* open now */
    uint64_t subscriptions; /* open now */
    uint64_t deltas_sent;   /* delta messages handed to sockets */
    uint64_t frames_sent;
    uint64_t bytes_sent;
    uint64_t resyncs;           /* queued deltas replaced by a snapshot */
    uint64_t slow_closes;       /* closed with 4008 */
    uint64_t rx_throttled;      /* times a connection's reading paused: --ws-message-rate */
    uint64_t subscribes_parked; /* waited for another subscribe's read of their job */
    uint64_t direct_writes;     /* publish-round writes sent straight to the socket */
    uint64_t parallel_rounds;   /* publish rounds shared with fan-out helper threads */
    uint64_t pings;             /* sent to silent connections (--ws-ping-interval) */
    uint64_t idle_drops;        /* dropped: nothing came after a ping */
} jw_ws_stats;

extern const struct lws_protocols jw_ws_protocol;

jw_ws *jw_ws_new(const struct jw_services *sv);
/*
 * Makes vh's connections of jw_ws_protocol this hub's (lws' per-vhost protocol
 * storage); until then they are refused. Call it once the vhost exists.
 * Returns 0, or JW_EINVAL when vh has no jobwire.v1 protocol.
 */
int jw_ws_bind(jw_ws *hub, struct lws_vhost *vh);
void jw_ws_free(jw_ws *hub);

/*
 * The engine's publish port lands here, and the mirror's: committed deltas in
 * seq order per job, one call each, then jw_ws_publish_end once the batch (a
 * commit's, a journal read's) is through. Each watcher's queue gets the batch
 * as one entry per 16 KiB of it (the deltas joined with '\n', the bytes a
 * gathered frame carries for them one by one) rather than one entry per delta.
 * A delta of another job and jw_ws_flush end the batch first.
 */
void jw_ws_publish_batched(jw_ws *hub, jw_delta *d);
void jw_ws_publish_end(jw_ws *hub);
/* Whether a connection is subscribed to the job (or waits for its subscribe's read). */
bool jw_ws_watching(const jw_ws *hub, const char *job_id);
/* A database read the hub asked for has its answer (the read is the hub's; ws.c sets the
 * reads' done to call this). */
void jw_ws_on_read(jw_ws *hub, jw_read *r);
/*
 * Between jw_ws_hold and jw_ws_flush (nestable), what is queued for a
 * connection is not announced to lws but written by the flush, one frame per
 * connection with everything gathered meanwhile: the app holds the hub while it
 * publishes a round of committed batches. Loop thread only.
 */
void jw_ws_hold(jw_ws *hub);
void jw_ws_flush(jw_ws *hub);
/* Shutdown: asks every connection to close with 1001; returns how many are open. */
size_t jw_ws_close_all(jw_ws *hub);
void jw_ws_get_stats(const jw_ws *hub, jw_ws_stats *out);

struct jw_config;
/*
 * Whether an upgrade may proceed as far as its Origin goes: no Origin header
 * (not a browser) or one on the allowlist (--origins), compared without
 * case. A refusal is logged (info) under the endpoint's name, with the Origin
 * shown printable and cut to 100 bytes. Shared with the Supabase endpoint.
 */
bool jw_ws_origin_allowed(struct lws *wsi, const struct jw_config *cfg, const char *endpoint);

#endif
