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
#include "jw_timers.h"
#include "limiter.h"
#include "mirror.h"

typedef struct jw_services {
    const jw_config *cfg;
    jw_store *store;          /* reads (jw_store_read) and stats; commits go through the engine */
    jw_engine *engine;        /* the jobs: snapshots, commands, OTP submission */
    jw_auth *auth;            /* the admin key and users' JWTs */
    jw_limits *limits;        /* per client address and per user (limiter.h) */
    jw_cluster *cluster;      /* the other nodes (db/cluster.h); NULL until jw_app_start_cluster */
    struct jw_inbox *inbox;   /* commands for jobs another node runs (inbox.h) */
    jw_mirror *mirror;        /* jobs watched here, driven elsewhere (mirror.h); NULL: none */
    struct jw_fanout *fanout; /* helpers for publish rounds' writes (fanout.h); NULL: none */
    struct jw_wsmem *wsmem;   /* both endpoints' budget for queued output (wsconn.h) */
    jw_timers *timers;        /* the loop's deadlines on the wall clock (jw_now_us) */
    jw_timers *mono_timers;   /* and on the monotonic clock (jw_mono_us): connections' */
    /*
     * Publishes the batches that committed since the last round (app.c); NULL:
     * never. The endpoints ask for it before each connection's receive and write
     * callback (jw_sv_catch_up), so a loop turn busy with thousands of clients'
     * messages does not hold committed deltas back until the turn ends.
     */
    void (*catch_up)(void *arg);
    void *catch_up_arg;
} jw_services;

/* One relaxed load when nothing committed meanwhile. */
static inline void jw_sv_catch_up(const jw_services *sv)
{
    if (sv->catch_up && jw_store_has_answers(sv->store))
        sv->catch_up(sv->catch_up_arg);
}

/*
 * What the hubs ask about a job: the mirror's view when it mirrors the job
 * (unfinished), else the engine's - so a job another node drives is served
 * like one in memory. Owner: its user id, NULL when neither has it; seq: the last one
 * published here, -1; snapshot: the caller's, NULL.
 */
static inline const char *jw_sv_job_owner(const jw_services *sv, const char *job_id)
{
    return sv->mirror ? jw_mirror_owner(sv->mirror, job_id)
                      : jw_engine_job_owner(sv->engine, job_id);
}

static inline int64_t jw_sv_job_seq(const jw_services *sv, const char *job_id)
{
    return sv->mirror ? jw_mirror_seq(sv->mirror, job_id)
                      : jw_engine_committed_seq(sv->engine, job_id);
}

/* The owner to authorize a delta being published with: of any mirrored job, finished too. */
static inline const char *jw_sv_job_publish_owner(const jw_services *sv, const char *job_id)
{
    return sv->mirror ? jw_mirror_publish_owner(sv->mirror, job_id)
                      : jw_engine_job_owner(sv->engine, job_id);
}

static inline json_t *jw_sv_job_snapshot(const jw_services *sv, const char *job_id)
{
    return sv->mirror ? jw_mirror_snapshot(sv->mirror, job_id)
                      : jw_engine_snapshot(sv->engine, job_id);
}

#endif
