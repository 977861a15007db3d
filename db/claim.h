/*
 * claim.h - taking over the unfinished jobs nobody drives (db internal):
 * recovery at start-up (load.c) and the takeover of dead or departed nodes'
 * jobs at runtime (cluster.c) share one transaction.
 */
#ifndef JW_CLAIM_H
#define JW_CLAIM_H

#include "jw_store.h"

#include <libpq-fe.h>

typedef struct jw_claim {
    const char *node_id;
    int64_t incarnation; /* > 0: claim only while this incarnation is alive */
    int ttl_ms;          /* other nodes silent this long are marked dead first */
    bool include_own;    /* start-up: also the jobs this node id held before */
    bool mark_dead;      /* mark the other nodes silent past ttl_ms dead first */
    int limit;           /* most jobs per claim; 0: no limit */
} jw_claim;

/*
 * One transaction on conn: checks this node is alive (incarnation > 0: its
 * live incarnation, not declared dead, its own heartbeat within ttl_ms),
 * with mark_dead marks the other nodes past ttl_ms dead (*marked counts
 * them), claims
 * (lease_epoch + 1, FOR UPDATE SKIP LOCKED) the unfinished jobs owned by
 * nobody, by a dead node, or (include_own) by this node id, and reads them in
 * jw_db_load_active's shape into *out. With others, *others counts the
 * unfinished jobs left to live nodes. Blocking. 0; JW_ECONFLICT when this
 * node was declared dead (nothing claimed); JW_EDB with err otherwise (the
 * transaction rolled back, or the connection is broken).
 */
int db__claim(PGconn *conn, const jw_claim *c, json_t **out, int64_t *marked, int64_t *others,
              char *err, size_t errlen);

#endif
