/*
 * mirror.h - jobs watched on this node that its engine does not drive: their
 * state kept current from the journal, and their deltas published here like
 * local ones (the cross-node fan-out, docs/architecture.md).
 *
 * Another node drives a job; a client here subscribes to it (jobwire.v1) or
 * joins a Supabase channel pinned to it. The mirror holds the job's state -
 * JW_READ_JOB's document: job, steps, otp_requests, seq - and applies each
 * committed delta to it in seq order (a delta carries its whole row: upsert
 * by table and row id), then hands it to publish, which gives it to the two
 * hubs exactly as the engine's publish port does. The hubs ask the facade
 * (owner, seq, snapshot) instead of the engine, so a mirrored job behaves like
 * one in memory: subscribes answered from memory, the ring for since,
 * shared snapshots.
 *
 * Where deltas come from:
 *  - the owner's group commit NOTIFYs jw_events (db/commit.c) with each
 *    job's new last seq; jw_mirror_notice marks the jobs mirrored here as
 *    behind and one read (JW_READ_EVENTS_AFTER) fetches every mirrored job's
 *    new journal rows, built into deltas byte for byte as live;
 *  - a catch-up (jw_mirror_catch_up on a (re)established LISTEN, and every
 *    tick) fetches for every mirror (a finished job's: every tenth tick): a
 *    lost notification costs a tick;
 *  - the engine: while a job has a mirror, each delta the engine commits for
 *    it passes through jw_mirror_local, so a job that comes into this engine
 *    (takeover, a retry's claim) is published in order, without gap or
 *    duplicate, even when its first local deltas arrive before the journal's.
 * A delta at or below the mirror's seq is a duplicate and dropped; one past
 * seq + 1 is a gap: dropped, and the journal is read from seq.
 *
 * Life cycle: a mirror is made from the state a watcher's read brought
 * (jw_mirror_track), from the engine's state when a watched job leaves it
 * (jw_mirror_left: evicted, lease lost), or on a notice of a watched job the
 * engine does not drive. It goes when nobody has watched it for GRACE, and
 * when the engine drives the job and has committed exactly what the mirror
 * published (in sync: the engine's publish path takes over, the single-node
 * fast path). Supabase channels not pinned to jobs (wildcards): while one
 * exists, each job another node notifies is mirrored too (from seq 0 when the
 * notice shows the job's first commit, else from a read of its state), and
 * kept until it finished - unless its owner turns out to be nobody a wildcard
 * channel here may see: then it is dropped and remembered, and its notices
 * are ignored while that holds. See docs/operations.md for what that costs
 * and misses.
 *
 * Threads: loop thread only. The mirror borrows everything in its ports.
 */
#ifndef JW_MIRROR_H
#define JW_MIRROR_H

#include "jw_delta.h"
#include "jw_hist.h"
#include "jw_store.h"
#include "jw_timers.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct jw_mirror jw_mirror;

typedef struct jw_mirror_ports {
    void *ctx;
    /* A delta of a job not driven here, in seq order: to the hubs. */
    void (*publish)(void *ctx, jw_delta *d);
    /* One its state held already, which only the Supabase channels lack: to that hub. */
    void (*publish_wild)(void *ctx, jw_delta *d);
    /* A read of the journal's deltas has all been through publish: the hubs may
     * send them as one (optional). Deltas taken by jw_mirror_local are ended by
     * the engine's batch, not here. */
    void (*published)(void *ctx);
    /* Whether a client here watches the job: a subscriber, a pinned channel. */
    bool (*watched)(void *ctx, const char *job_id);
    /* Whether a Supabase channel not pinned to jobs is live here; with an owner
     * (a user id), one whose principal may see that user's jobs. */
    bool (*wildcard)(void *ctx, const char *owner);
    /* Queues a read (jw_store_read): 0, or an error and the read stays ours. */
    int (*read)(void *ctx, jw_read *r);
    /* The engine (jw_engine.h): driven, committed seq (-1), snapshot, owner. */
    bool (*driven)(void *ctx, const char *job_id);
    int64_t (*engine_seq)(void *ctx, const char *job_id);
    json_t *(*engine_snapshot)(void *ctx, const char *job_id);
    const char *(*engine_owner)(void *ctx, const char *job_id);
    /* The tick's timer queue, on the wall clock (jw_now_us) like the engine's;
     * NULL: no tick (tests call jw_mirror_tick). */
    jw_timers *timers;
    int tick_ms; /* 0: 1000 */
} jw_mirror_ports;

typedef struct jw_mirror_stats {
    uint64_t mirrors;    /* jobs mirrored now */
    uint64_t catchups;   /* catch-up fetches (on LISTEN, periodic) */
    uint64_t fetches;    /* journal reads */
    uint64_t fetched;    /* deltas read from the journal and published here */
    uint64_t local;      /* engine deltas that passed through a mirror */
    uint64_t duplicates; /* deltas dropped: already published */
    uint64_t gaps;       /* deltas dropped past a gap (then read from the journal) */
    /* Fetched deltas: microseconds from their group's commit stamp (cts) to
     * their publication here. */
    jw_hist delivery_delay;
} jw_mirror_stats;

/* node_id: this node's (its own notifications are ignored). */
jw_mirror *jw_mirror_new(const char *node_id, const jw_mirror_ports *ports);
/* NULL-safe. Reads still out are cancelled; their answers must not reach it. */
void jw_mirror_free(jw_mirror *m);

/*
 * ---- the facade: the mirror's view of a mirrored unfinished job, else the engine's ----
 * A finished job's mirror is not in it: the hubs answer finished jobs not in
 * their engine from PostgreSQL, as on a single node (a snapshot for since).
 */

/* The job's user id, or NULL when it is neither mirrored (unfinished) nor driven here. */
const char *jw_mirror_owner(jw_mirror *m, const char *job_id);
/* Its last published seq, or -1. */
int64_t jw_mirror_seq(jw_mirror *m, const char *job_id);
/* {"job","steps","otp_requests","seq"} at that seq; the caller owns it. NULL like owner. */
json_t *jw_mirror_snapshot(jw_mirror *m, const char *job_id);
/* Whether the facade answers for the job from its mirror. */
bool jw_mirror_has(jw_mirror *m, const char *job_id);
/* The owner of any job with a mirror (finished too), else the engine's: for publishing. */
const char *jw_mirror_publish_owner(jw_mirror *m, const char *job_id);
/* The state of any job with a mirror (finished too), at its published seq; NULL. */
json_t *jw_mirror_mirrored(jw_mirror *m, const char *job_id);

/* ---- what happens to the jobs -------------------------------------------------- */

/* A watcher read the job's state (JW_READ_JOB's document, borrowed): mirror it
 * unless the engine drives the job or a mirror has a state already. */
void jw_mirror_track(jw_mirror *m, const char *job_id, const json_t *doc);
/* The engine committed d: false when the job has no mirror (publish it
 * directly); true when the mirror took it (published in order, or dropped). */
bool jw_mirror_local(jw_mirror *m, jw_delta *d);
/* The engine stops driving the job (evicted, lease lost): a watched job's
 * mirror takes over from the engine's last published seq. */
void jw_mirror_left(jw_mirror *m, const char *job_id);
/* A jw_events payload (db/commit.c's format). */
void jw_mirror_notice(jw_mirror *m, const char *payload);
/* Reads what is new for every mirror (LISTEN (re)established, notices dropped). */
void jw_mirror_catch_up(jw_mirror *m);
/* The periodic work: a catch-up, mirrors nobody watches or in sync dropped. */
void jw_mirror_tick(jw_mirror *m, int64_t now_mono_us);
/* An answer to one of the mirror's reads (jw_read.done calls it). */
void jw_mirror_on_read(jw_mirror *m, jw_read *r);

void jw_mirror_get_stats(const jw_mirror *m, jw_mirror_stats *out);

#endif
