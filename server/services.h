/*
 * services.h - what the loop thread's endpoints and handlers borrow from the
 * composition root (server internal).
 *
 * app.c builds one jw_services at start-up and hands a const pointer to each
 * part that needs it: the jobwire.v1 hub (ws.c), the Supabase endpoint
 * (realtime.c), the job API (api.c) and /metrics (metrics.c). It holds the
 * services themselves, never the app or another endpoint, so a part that
 * borrows it cannot call back into the app or its siblings.
 *
 * Threads: loop thread only. Ownership: every pointer is borrowed from app.c,
 * which frees them after the endpoints; the struct lives inside the app.
 */
#ifndef JW_SERVICES_H
#define JW_SERVICES_H

#include "auth.h"
#include "cluster.h"
#include "config.h"
#include "jw_engine.h"
#include "jw_store.h"
#include "limiter.h"

typedef struct jw_services {
    const jw_config *cfg;
    jw_store *store;   /* reads (jw_store_read) and stats; commits go through the engine */
    jw_engine *engine; /* the jobs: snapshots, commands, OTP submission */
    jw_auth *auth;     /* the admin key and users' JWTs */
    jw_limits *limits; /* per client address and per user (limiter.h) */
    jw_cluster *cluster; /* the other nodes (db/cluster.h); NULL until jw_app_start_cluster */
    struct jw_inbox *inbox; /* commands for jobs another node runs (inbox.h) */
} jw_services;

#endif
