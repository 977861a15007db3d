/*
 * cluster.h - this node's link to the other nodes on its database: one
 * thread and one PostgreSQL connection that LISTENs, and takes over the jobs
 * of nodes that died or left.
 *
 * Channels (pg_notify, delivered only when the sender's transaction commits):
 *   jw_events  a node's group commit: which jobs advanced to which seq
 *              (sent by the store, consumed by the cross-node fan-out)
 *   jw_inbox   a command for a job's owner, or the answer to one
 *   jw_nodes   a node handed its leases back (clean shutdown): claim now
 *   jw_hello   a node listens now (sent once its LISTEN is up), or notifies
 *              its commits again after a time alone (db/commit.c, "Alone"):
 *              peer_joined runs, and a JW_NOTICE_LISTENING is posted so the
 *              consumers catch up on what no notification named
 * NOTIFY is a wake-up only: whoever consumes a notice reads the durable rows
 * it points at, and catches up on JW_NOTICE_LISTENING, posted each time the
 * connection is (re)established - notifications sent while it was down, or
 * dropped because the loop fell too far behind, are lost.
 *
 * Takeover: every scan_ms, and at once on a jw_nodes notification, the thread
 * runs the claim (db/claim.h): while this node is alive (its own heartbeat
 * fresh), it marks the nodes whose heartbeat is older than ttl_ms dead and
 * claims their unfinished jobs and those nobody holds (handed back), each at
 * lease_epoch + 1. After an outage every heartbeat is old: it declares
 * nobody dead until its connection has been up again for ttl_ms + 5 s. The claim
 * commits before the jobs are posted (JW_NOTICE_CLAIMED), so the old owner
 * is fenced off before this node re-issues any of their calls.
 *
 * Threads: start/stop/free from the main thread; drain and stats from the
 * loop; the wake callback runs on the cluster thread after posting.
 */
#ifndef JW_CLUSTER_H
#define JW_CLUSTER_H

#include "jw_mailbox.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct jw_cluster jw_cluster;

typedef struct jw_cluster_config {
    const char *conninfo; /* copied */
    const char *node_id;  /* copied */
    int64_t incarnation;  /* from jw_db_node_register */
    int ttl_ms;           /* --node-ttl */
    int scan_ms;          /* takeover scan period; 0: the smaller of 1 s and ttl_ms / 3 */
    void (*wake)(void *arg);
    void *wake_arg;
    /* Another node said hello (jw_hello); runs on the cluster thread; may be NULL. */
    void (*peer_joined)(void *arg);
    void *peer_arg;
} jw_cluster_config;

typedef enum jw_notice_kind {
    JW_NOTICE_LISTENING, /* listening (again): anything notified before may be missed */
    JW_NOTICE_EVENTS,    /* a jw_events payload */
    JW_NOTICE_INBOX,     /* a jw_inbox payload */
    JW_NOTICE_CLAIMED,   /* jobs claimed here: claimed, in jw_db_load_active's shape */
} jw_notice_kind;

typedef struct jw_notice {
    jw_mailbox_node node;
    jw_notice_kind kind;
    char *payload;   /* EVENTS, INBOX: the payload, NUL-terminated */
    json_t *claimed; /* CLAIMED: a JSON array */
} jw_notice;

typedef struct jw_cluster_stats {
    bool listening;
    uint64_t notices;     /* jw_events and jw_inbox notifications received */
    uint64_t dropped;     /* of them, dropped because the loop was too far behind */
    uint64_t scans;       /* takeover claims run */
    uint64_t claimed;     /* jobs claimed at runtime from dead or departed nodes */
    uint64_t marked_dead; /* other nodes this node declared dead */
    uint64_t reconnects;  /* connections after the first */
    char last_error[256];
} jw_cluster_stats;

/* Starts the thread; it connects on its own. 0 or JW_ENOMEM. */
int jw_cluster_start(jw_cluster **out, const jw_cluster_config *cfg);

/* Hands every queued notice to fn (loop thread); it is freed after fn returns. */
size_t jw_cluster_drain(jw_cluster *cl, void (*fn)(const jw_notice *n, void *arg), void *arg);

void jw_cluster_get_stats(jw_cluster *cl, jw_cluster_stats *out);

/* Stops and joins the thread: nothing more is claimed. NULL-safe. */
void jw_cluster_stop(jw_cluster *cl);
/* Frees it and any notices not drained; NULL-safe. Stop first. */
void jw_cluster_free(jw_cluster *cl);

#endif
