/*
 * rt_internal.h - what the pieces of the Supabase Realtime endpoint share
 * (server internal; the endpoint's interface is realtime.h).
 *
 *   realtime.c   output (Phoenix messages, the queue's bound), client messages
 *                other than joins, the lws glue and the life cycle
 *   rt_events.c  channels: their lists, expiry, committed deltas become
 *                postgres_changes events (the data part encoded once per delta)
 *   rt_join.c    phx_join: bindings, who may see which job (database reads for
 *                jobs not in memory), going live only once nothing can be missed
 *
 * Loop thread only.
 */
#ifndef JW_RT_INTERNAL_H
#define JW_RT_INTERNAL_H

#include "realtime.h"

#include "rt_parse.h"
#include "ws_rx.h"
#include "wsconn.h"

#include "services.h"
#include "ws.h"
#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"
#include "wipe.h"
#include "jw_map.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_CLIENT_FRAME ((size_t)rt->sv->cfg->ws_max_frame)
#define MAX_CHANNELS ((size_t)rt->sv->cfg->ws_max_subscriptions)
#define MAX_BINDINGS 32 /* postgres_changes entries of one join */
#define MAX_JOBS 100    /* jobs one channel's filters may name, like an in list */
/* How long a channel that joined without a user waits for an access_token (see nudge). */
#define AWAIT_TOKEN_US (1000 * 1000)
/*
 * Filter values (each eq/neq/... value, each of an in list) all of one
 * connection's channels may hold: a filter value costs some 50 bytes parsed,
 * so a connection's filters stay within about 100 KB (a 16 KiB join alone can
 * carry 8,000 one-byte values, and a connection 100 such joins).
 */
#define MAX_CONN_FILTER_VALUES 2000
/* Database reads one connection may have out at once: one channel's worth. */
#define MAX_CONN_READS MAX_JOBS
#define AUTH_DEADLINE_US ((int64_t)rt->sv->cfg->ws_auth_timeout_s * 1000000)

/* 4408: no valid token in time, the code jobwire.v1 closes with in that case. */
enum { CLOSE_AUTH_TIMEOUT = 4408, CLOSE_TOO_MANY = 4429 };
enum { EV_INSERT = 1, EV_UPDATE = 2, EV_DELETE = 4, EV_ALL = 7 };

/* ---- state ------------------------------------------------------------------------ */

typedef struct binding {
    int64_t id;
    int table;       /* index into jw_rt_tables, or -1: every table */
    unsigned events; /* EV_* */
    bool initial;    /* jobwire extension: send the current rows after the join */
    jw_rt_filter filter;
} binding;

typedef struct pinned {
    char job[JW_UUID_LEN + 1];
    char owner[JW_UUID_LEN + 1]; /* "" until known */
} pinned;

struct rconn;

typedef struct channel {
    struct rconn *c;
    uint64_t serial;
    char *topic;      /* as the client sent it */
    char *topic_json; /* the same, JSON-encoded */
    json_t *join_ref; /* string or null */
    jw_principal who;
    binding *b;
    size_t nb;
    pinned *jobs; /* the jobs its filters name, authorized at join */
    size_t njobs;
    bool wildcard;   /* a binding not pinned to jobs: every job the principal may see */
    bool registered; /* in the hub's lists (from go_live until removed) */
    bool live;       /* answered ok; events flow */
    bool answered;   /* the phx_join got its ok */
    bool awaiting;   /* answered ok without a user: sees nothing until an access_token */
    bool errored;    /* sent phx_error (overflow, or a failed read): the client joins again */
    bool retry;      /* the refusal is the database's: worth joining again */
    int pending;     /* owner reads in flight */
    size_t nvalues;  /* filter values its bindings hold (counted in its connection's) */
    char refusal[320];
    json_t *docs;       /* job id -> state read from the database, for initial rows */
    json_t *join_ref_v; /* the phx_join's ref, answered when the reads are done */
    json_t *reply;      /* the ok reply's postgres_changes */
    jw_timer expiry;    /* the token's exp, on the wall-clock heap */
    jw_timer nudge;     /* rt_nudge, on the monotonic heap */
    /*
     * The head of its events up to "data": topic and binding ids, shared by
     * every queued event with the same ids (pre_ids), rebuilt when they differ.
     */
    jw_wsmsg *pre;
    int64_t pre_ids[MAX_BINDINGS];
    size_t pre_n;
} channel;

/*
 * A connection. Its queue (base) holds one Phoenix message per frame; events
 * are counted, and shed together when the queue passes its bound (overflow).
 */
typedef struct rconn {
    jw_wsconn base;
    jw_rt *rt;
    bool array;               /* vsn 2.0.0 */
    bool authed;              /* a valid token came in time: the auth deadline is off */
    bool nudged;              /* a channel waiting for a token was told to join again */
    jw_limit_hold *user_hold; /* counted as a user's connection (--max-ws-per-user) */
    jw_ws_budget rx_budget;   /* client messages: --ws-message-rate */
    size_t reads_asked;       /* by the message being handled: it costs one each */
    jw_read **reads;          /* asked for this connection's joins, not yet answered */
    size_t nreads, capreads;
    jw_principal key_who; /* what the apikey grants, often nothing */
    unsigned char apikey_hash[SHA256_DIGEST_LENGTH];
    jw_timer auth_timer; /* the auth deadline (--ws-auth-timeout), on the monotonic heap */
    channel **chans;
    size_t nchans, capchans;
    size_t filter_values; /* its channels' nvalues: at most MAX_CONN_FILTER_VALUES */
    jw_ws_rx rx;
} rconn;

typedef struct rt_job {
    char id[JW_UUID_LEN + 1];
    channel **ch;
    size_t n, cap;
} rt_job;

struct jw_rt {
    const jw_services *sv; /* borrowed: config, engine, store, auth, limits */
    jw_map jobs;           /* job id -> rt_job: live channels pinned to it */
    /* Its connections' output: queues, writes, the publish round's hold (wsconn.h). */
    jw_wsconns conns;
    channel **wild;
    size_t nwild, capwild;
    uint64_t next_serial;
    int64_t next_binding;
    jw_rt_stats stats;
};

typedef struct rt_op {
    char conn_key[24];
    uint64_t serial;
    char job[JW_UUID_LEN + 1];
} rt_op;

static inline void grow(void *pp, size_t *cap, size_t need, size_t size)
{
    void **p = pp;

    if (need <= *cap)
        return;
    *cap = *cap ? *cap * 2 : 4;
    if (*cap < need)
        *cap = need;
    *p = jw_xrealloc(*p, *cap * size);
}

/* ---- output ----------------------------------------------------------------------- */

static inline rconn *rconn_of(jw_wsconn *b)
{
    return lws_container_of(b, rconn, base);
}

/* realtime.c */
void rt_start_close(rconn *c, int code, const char *reason);
void rt_push(rconn *c, const char *text, size_t len, bool event);
/* The same for pre (may be NULL) then m, shared: the queue takes references of its own. */
void rt_push_parts(rconn *c, jw_wsmsg *pre, jw_wsmsg *m, bool event);
void rt_send_phx(rconn *c, json_t *join_ref, json_t *ref, const char *topic, const char *event,
                 json_t *payload);
void rt_reply(rconn *c, const jw_rt_msg *m, const char *status, json_t *response);
void rt_reply_error(rconn *c, const jw_rt_msg *m, const char *reason);
void rt_send_system(channel *ch, const char *status, const char *extension, const char *text);
void rt_h_access_token(rconn *c, channel *ch, const jw_rt_msg *m);

/* rt_events.c */
channel *rt_find_channel(rconn *c, const char *topic);
void rt_remove_channel(channel *ch);
void rt_close_channel(channel *ch);
bool rt_token_expired(const jw_principal *p, int64_t now_us);
void rt_nudge(jw_timer *t, void *arg);
void rt_watch_expiry(channel *ch);
void rt_send_initial_rows(channel *ch);

/* rt_join.c */
void rt_go_live(channel *ch);
void rt_finish_join(channel *ch);
const char *rt_principal_of(rconn *c, json_t *token, jw_principal *who, char *err, size_t errlen);
bool rt_authenticated(rconn *c, const jw_principal *who);
void rt_cancel_reads(rconn *c, uint64_t serial);
void rt_authorize_jobs(channel *ch);
void rt_h_join(rconn *c, const jw_rt_msg *m);

#endif
