/*
 * ws_internal.h - what the pieces of the jobwire.v1 endpoint share (server
 * internal; the endpoint's interface is ws.h).
 *
 *   ws.c            client messages, authentication, the lws protocol, life cycle
 *   ws_hub.c        per job: subscribers, the ring of recent deltas, shared
 *                   snapshots, publishing; per connection: what may be shed and
 *                   the snapshots owed after a resync
 *   ws_subscribe.c  answering a subscribe: from memory (ring, snapshot) or from
 *                   PostgreSQL (a connection's reads, bounded and cancellable)
 *
 * Loop thread only.
 */
#ifndef JW_WS_INTERNAL_H
#define JW_WS_INTERNAL_H

#include "ws.h"

#include "ws_parse.h"
#include "ws_rx.h"
#include "wsconn.h"

#include "services.h"
#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"
#include "wipe.h"
#include "jw_map.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The configurable limits (docs/protocol.md), read from the server's config. */
#define MAX_CLIENT_FRAME ((size_t)hub_cfg(c)->ws_max_frame)
#define MAX_SUBS ((size_t)hub_cfg(c)->ws_max_subscriptions)
#define MAX_QUEUE_BYTES ((size_t)hub_cfg(c)->ws_max_queue)
#define MAX_OVER_US ((int64_t)hub_cfg(c)->ws_slow_close_s * 1000000)
#define AUTH_DEADLINE_US ((int64_t)hub_cfg(c)->ws_auth_timeout_s * 1000000)
/*
 * lws gives every connection a receive buffer of this size for its lifetime and
 * hands client frames over in chunks of it; ws_rx gathers longer messages. Client
 * messages are small (a subscribe is ~100 bytes): 16 KiB per connection was 160 MiB
 * of heap for 10,000 clients, which churn kept turning into RSS (scripts/soak), and
 * two touched pages of it per idle subscriber (scripts/bench-ws idle).
 */
#define RX_CHUNK 1024
#define RING 64
#define MAX_JOBS_IDLE 1024 /* jobs kept with a ring but no subscriber (~45 KB each, full) */
/* A committed batch's deltas joined into one queued message, at most (one alone may be more):
 * four such runs and their separators fill a gathered frame, so that frames carry what they
 * carried with the deltas one by one. (A queue's bound counts a joined message as its deltas
 * would count, len + 1 each, so joining never overflows a queue they would fit.) */
#define BATCH_JOIN_MAX ((JW_WSCONN_FRAME - 3) / 4)
#define MAX_DB_REPLAY 2000 /* deltas replayed from job_events; past it, a snapshot */
#define MAX_CONN_READS 8   /* reads one connection may have queued at the store at once */

enum { CLOSE_SLOW = 4008, CLOSE_AUTH = 4401, CLOSE_AUTH_TIMEOUT = 4408, CLOSE_TOO_MANY = 4429 };

/* ---- the hub ------------------------------------------------------------------- */

struct conn;

/*
 * One connection's subscription to one job, kept on the job's entry. Each side
 * indexes the other: the subscriber is j->subs[at] where c->subs[slot] is
 * {j, at}, so either side finds it by scanning the shorter of its two arrays
 * (a crowd of watchers re-subscribing is not quadratic in the crowd).
 */
typedef struct subscriber {
    struct conn *c;
    size_t slot;     /* its place in c->subs */
    uint64_t serial; /* this subscription's, unique in the hub: what its reads answer */
    bool replaying;  /* a journal replay is in flight: live deltas come after it */
    bool resync;     /* deltas dropped over the queue bound: a snapshot is owed */
} subscriber;

typedef struct job_entry {
    char id[JW_UUID_LEN + 1];
    subscriber *subs;
    size_t nsubs, capsubs;
    jw_wsmsg *ring[RING]; /* ring[(first + i) % RING] has seq first_seq + i */
    size_t first, count;
    int64_t first_seq;
    jw_wsmsg *snap; /* the snapshot's shared part at snap_seq (snapshot_body), or NULL */
    int64_t snap_seq;
    struct job_entry *idle_prev, *idle_next; /* on the idle list while nsubs == 0 */
} job_entry;

struct jw_ws {
    const jw_services *sv; /* borrowed: config, engine, store, auth, limits */
    jw_map jobs;           /* job id -> job_entry */
    job_entry *idle_head, *idle_tail;
    size_t idle_count;
    /* Its connections' output: queues, writes, the publish round's hold (wsconn.h). */
    jw_wsconns conns;
    jw_ws_stats stats; /* what the connections' own counters do not hold */
    /* Job id -> ws_loading: the subscribes' reads of a job out, and the
     * subscribes parked behind them (ws_subscribe.c). */
    jw_map loading;
    bool unpark_due, unparking;
    /* A committed batch's messages not yet pushed (jw_ws_publish_batched), all of pend_job,
     * which has watchers. Nothing else runs while one is open (the engine's or the mirror's
     * publish loop); what would change a job's watchers, evict an entry or send a job's
     * state ends it first all the same (jw_ws_publish_end), so that no later change can make
     * the pending deltas go twice, or to a freed entry. */
    job_entry *pend_job;
    jw_wsmsg **pend;
    uint64_t sub_serials; /* the last subscriber.serial given */
    size_t npend, cappend;
};

/* A connection's subscription: the job, and its subscriber's place in j->subs. */
typedef struct conn_sub {
    struct job_entry *j;
    size_t at;
} conn_sub;

/*
 * A connection. Its queue (base) holds replies, and deltas and snapshots
 * tagged with their job_entry (a resync drops them); deltas are counted.
 */
typedef struct conn {
    jw_wsconn base; /* first: lws' per-session data is a conn */
    jw_ws *hub;
    bool authed;
    jw_principal who;
    jw_limit_hold *user_hold; /* a user's connection counted (--max-ws-per-user) */
    jw_timer auth_deadline;   /* --ws-auth-timeout, on the monotonic heap */
    jw_timer expiry;          /* the token's exp, on the wall-clock heap */
    jw_ws_budget rx_budget;   /* client messages: --ws-message-rate */
    conn_sub *subs;
    size_t nsubs, capsubs;
    int64_t over_since;  /* since when deltas are being dropped for this connection */
    size_t resyncs_owed; /* subscribers of this connection with resync set */
    /* Database reads handed to the store for this connection and not yet
     * answered (at most MAX_CONN_READS; cancelled if it closes), and the ones
     * waiting their turn, oldest first. */
    jw_read **reads;
    size_t nreads, capreads;
    jw_read **unsent;
    size_t nunsent, capunsent;
    jw_ws_rx rx;
} conn;

static inline const jw_config *hub_cfg(const conn *c)
{
    return c->hub->sv->cfg;
}

static inline conn *conn_of(jw_wsconn *b)
{
    return lws_container_of(b, conn, base);
}

/* ---- what a subscribe waits for ---------------------------------------------------- */

typedef struct ws_op {
    jw_ws *hub;
    char conn_key[24];
    json_t *ref;
    char job[JW_UUID_LEN + 1];
    int64_t since; /* -1: none */
    int64_t upto;  /* REPLAY: the last seq read from job_events */
    enum { OP_SUBSCRIBE, OP_REPLAY } kind;
    uint64_t sub_serial; /* the subscription it answers (subscriber.serial) */
    const char *reason;  /* SUBSCRIBE: the snapshot's "reason" (a constant), or NULL */
    bool shared;         /* SUBSCRIBE: counted in hub->loading; others may park behind it */
} ws_op;

/* ws.c */
void ws_send_error(conn *c, json_t *ref, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
conn *ws_find_conn(jw_ws *hub, const char *key);
void ws_send_ack(conn *c, json_t *ref);

/* ws_hub.c */
void ws_free_job_entry(job_entry *j);
job_entry *ws_job_get(jw_ws *hub, const char *id, bool create);
jw_wsmsg *ws_snapshot_body(const jw_services *sv, job_entry *j, const char *job_id);
jw_wsmsg *ws_snapshot_head(const char *job_id, json_t *ref, const char *reason);
void ws_push_snapshot(conn *c, jw_wsmsg *head, jw_wsmsg *body, job_entry *job);
bool ws_queue_snapshot(conn *c, job_entry *j, const char *job_id, json_t *ref, const char *reason,
                       job_entry *job);
subscriber *ws_find_sub(job_entry *j, const conn *c);
void ws_shed(jw_wsconn *b);
void ws_push_delta(conn *c, subscriber *sub, jw_wsmsg *m, job_entry *j, unsigned count);
bool ws_owes_resyncs(const jw_wsconn *b);
void ws_pay_resyncs(jw_wsconn *b);
bool ws_subscribed(const conn *c, const job_entry *j);
subscriber *ws_add_sub(conn *c, job_entry *j);
bool ws_remove_sub(conn *c, job_entry *j);
jw_wsmsg *ws_delta_msg(const jw_delta *d);

/* ws_subscribe.c */
bool ws_replay(conn *c, subscriber *sub, job_entry *j, int64_t since, int64_t current);
void ws_cancel_reads(conn *c, const char *job);
/* Answers the subscribes parked behind reads that have ended; the hub frees the rest. */
void ws_unpark(jw_ws *hub);
void ws_free_loading(jw_ws *hub);
void ws_subscribe_from_db(conn *c, subscriber *sub, const char *job_id, int64_t since, json_t *ref,
                          const char *reason);
void ws_resync_from_db(conn *c, job_entry *j, subscriber *sub);
void ws_subscribe_from_memory(conn *c, const char *job_id, int64_t since, json_t *ref);
void ws_free_op(ws_op *op);
ws_op *ws_new_op(conn *c, json_t *ref);

#endif
