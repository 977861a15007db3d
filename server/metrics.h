/*
 * metrics.h - GET /metrics in Prometheus text format (admin key). Loop thread.
 *
 * A route handler (http.h) whose arg is a jw_metrics: the counters' sources,
 * filled in by the composition root (app.c), all borrowed. Every scrape reads
 * them afresh; nothing here keeps a count of its own.
 */
#ifndef JW_METRICS_H
#define JW_METRICS_H

#include "http.h"
#include "jw_hist.h"
#include "realtime.h"
#include "services.h"
#include "ws.h"

#include <stdint.h>

typedef struct jw_metrics {
    const jw_services *sv;        /* auth (the admin key), store, engine, limits */
    const jw_ws *ws;              /* the jobwire.v1 hub's counters */
    const jw_rt *rt;              /* the Supabase endpoint's counters */
    const uint64_t *published;    /* committed deltas handed to the fan-out */
    const jw_mirror *mirror;      /* the cross-node fan-out's counters (mirror.h) */
    const jw_hist *publish_delay; /* per batch: hand-over to the store .. publication */
    const jw_hist *publish_wait;  /* per batch: the store's answer .. publication */
    const size_t *calls_held;     /* provider calls waiting for the leases to be trusted */
} jw_metrics;

/* arg: a jw_metrics. */
void jw_metrics_handle(void *arg, jw_http_ctx *ctx, jw_http_request *req);

#endif
