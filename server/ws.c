/*
 * ws.c - jobwire.v1 over WebSocket (see ws.h and docs/protocol.md).
 */
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

/* The configurable limits (docs/protocol.md), read from the app's config. */
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
#define MAX_DB_REPLAY 2000 /* deltas replayed from job_events; past it, a snapshot */
#define MAX_CONN_READS 8   /* reads one connection may have queued at the store at once */

enum { CLOSE_SLOW = 4008, CLOSE_AUTH = 4401, CLOSE_AUTH_TIMEOUT = 4408, CLOSE_TOO_MANY = 4429 };

/* ---- the hub ------------------------------------------------------------------- */

struct conn;

/* One connection's subscription to one job, kept on the job's entry. */
typedef struct subscriber {
    struct conn *c;
    bool replaying; /* a journal replay is in flight: live deltas come after it */
    bool resync;    /* deltas dropped over the queue bound: a snapshot is owed */
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
    const jw_services *app;
    jw_map jobs; /* job id -> job_entry */
    job_entry *idle_head, *idle_tail;
    size_t idle_count;
    /* Its connections' output: queues, writes, the publish round's hold (wsconn.h). */
    jw_wsconns conns;
    jw_ws_stats stats; /* what the connections' own counters do not hold */
};

/*
 * A connection. Its queue (base) holds replies, and deltas and snapshots
 * tagged with their job_entry (a resync drops them); deltas are counted.
 */
typedef struct conn {
    jw_wsconn base; /* first: lws' per-session data is a conn */
    jw_ws *hub;
    bool authed;
    jw_principal who;
    jw_limit_hold *user_hold;   /* a user's connection counted (--max-ws-per-user) */
    lws_sorted_usec_list_t sul; /* auth deadline, then token expiry */
    jw_ws_budget rx_budget;     /* client messages: --ws-message-rate */
    job_entry **subs;
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

static const jw_config *hub_cfg(const struct conn *c);

static const jw_config *hub_cfg(const conn *c)
{
    return c->hub->app->cfg;
}

static conn *conn_of(jw_wsconn *b)
{
    return lws_container_of(b, conn, base);
}

static void idle_unlink(jw_ws *hub, job_entry *j)
{
    if (!j->idle_prev && hub->idle_head != j)
        return;
    if (j->idle_prev)
        j->idle_prev->idle_next = j->idle_next;
    else
        hub->idle_head = j->idle_next;
    if (j->idle_next)
        j->idle_next->idle_prev = j->idle_prev;
    else
        hub->idle_tail = j->idle_prev;
    j->idle_prev = j->idle_next = NULL;
    hub->idle_count--;
}

static void free_job_entry(job_entry *j)
{
    jw_wsmsg_unref(j->snap);
    for (size_t i = 0; i < j->count; i++)
        jw_wsmsg_unref(j->ring[(j->first + i) % RING]);
    free(j->subs);
    free(j);
}

/* Jobs nobody watches keep their ring for resumes, up to a bound. */
static void idle_push(jw_ws *hub, job_entry *j)
{
    /* Nobody to share a snapshot with any more. */
    jw_wsmsg_unref(j->snap);
    j->snap = NULL;
    j->idle_next = NULL;
    j->idle_prev = hub->idle_tail;
    if (hub->idle_tail)
        hub->idle_tail->idle_next = j;
    else
        hub->idle_head = j;
    hub->idle_tail = j;
    hub->idle_count++;
    while (hub->idle_count > MAX_JOBS_IDLE) {
        job_entry *old = hub->idle_head;

        idle_unlink(hub, old);
        jw_map_del(&hub->jobs, old->id);
        free_job_entry(old);
    }
}

static job_entry *job_get(jw_ws *hub, const char *id, bool create)
{
    job_entry *j = jw_map_get(&hub->jobs, id);

    if (j || !create)
        return j;
    j = jw_xcalloc(1, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    jw_map_put(&hub->jobs, j->id, j);
    idle_push(hub, j);
    return j;
}

/* ---- queues and frames ---------------------------------------------------------- */

static void start_close(conn *c, int code, const char *reason)
{
    jw_wsconn_close(&c->base, code, reason);
}

static void push_snapshot(conn *c, jw_wsmsg *head, jw_wsmsg *body, job_entry *job);

/* Queues a reply, if it finds room (jw_wsconn_make_room); takes m. */
static void send_msg(conn *c, jw_wsmsg *m)
{
    if (!c->base.closing && jw_wsconn_make_room(&c->base, m->len))
        jw_wsconn_push(&c->base, NULL, m, NULL, false);
    jw_wsmsg_unref(m);
}

static void vsend_error(conn *c, json_t *ref, const char *code, int retry_after_s, const char *fmt,
                        va_list ap) __attribute__((format(printf, 5, 0)));

/* Queues {"type":"error","code":…,"message":…[,"ref":…][,"retry_after_s":N]}. */
static void vsend_error(conn *c, json_t *ref, const char *code, int retry_after_s, const char *fmt,
                        va_list ap)
{
    char text[256];
    json_t *doc;

    vsnprintf(text, sizeof(text), fmt, ap);
    doc = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", text);
    if (ref)
        json_object_set(doc, "ref", ref);
    if (retry_after_s > 0)
        json_object_set_new(doc, "retry_after_s", json_integer(retry_after_s));
    send_msg(c, jw_wsmsg_json(doc));
}

static void send_error(conn *c, json_t *ref, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_error(conn *c, json_t *ref, const char *code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsend_error(c, ref, code, 0, fmt, ap);
    va_end(ap);
}

/* error rate_limited, with retry_after_s: when the next one will be taken. */
static void send_rate_limited(conn *c, json_t *ref, int retry_after_s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_rate_limited(conn *c, json_t *ref, int retry_after_s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsend_error(c, ref, "rate_limited", retry_after_s, fmt, ap);
    va_end(ap);
}

/*
 * A snapshot leaves as two parts in one message: a small head of its own,
 * {"type":"snapshot","job_id":…,"ref":…,"reason":…, and the job's committed
 * state, "job":…,"steps":…,"otp_requests":…,"seq":N}, encoded once per
 * committed seq and shared by every subscriber that needs it meanwhile (a
 * crowd subscribing to one job costs one encoding, not one each).
 */
static jw_wsmsg *snapshot_body(const jw_services *app, job_entry *j, const char *job_id)
{
    int64_t seq = jw_engine_committed_seq(app->engine, job_id);
    json_t *snap;
    char *text;
    jw_wsmsg *m;

    if (j && j->snap && j->snap_seq == seq) {
        j->snap->refs++;
        return j->snap;
    }
    if (!(snap = jw_engine_snapshot(app->engine, job_id)))
        return NULL;
    text = json_dumps(snap, JSON_COMPACT);
    json_decref(snap);
    if (!text || text[0] != '{')
        jw_oom("snapshot");
    m = jw_wsmsg_new(text + 1, strlen(text + 1)); /* without its opening brace */
    free(text);
    if (j && j->nsubs) {
        jw_wsmsg_unref(j->snap);
        j->snap = m;
        j->snap_seq = seq;
        m->refs++;
    }
    return m;
}

static jw_wsmsg *snapshot_head(const char *job_id, json_t *ref, const char *reason)
{
    jw_buf b;
    jw_wsmsg *m;

    jw_buf_init(&b, 128);
    jw_buf_addf(&b, "{\"type\":\"snapshot\",\"job_id\":\"%s\",", job_id);
    if (ref) {
        char *r = json_dumps(ref, JSON_ENCODE_ANY | JSON_COMPACT);

        if (!r)
            jw_oom("ref");
        jw_buf_addf(&b, "\"ref\":%s,", r);
        free(r);
    }
    if (reason)
        jw_buf_addf(&b, "\"reason\":\"%s\",", reason);
    m = jw_wsmsg_new(b.data, b.len);
    jw_buf_release(&b);
    return m;
}

/*
 * Queues the snapshot of a job in memory on c, as an answer (ref) or a
 * resync (reason); queued under job when it should go with the job's other
 * messages on a resync. False when the job is not in memory.
 */
/*
 * Queues a snapshot's head and body as one message: as a reply (job NULL),
 * within the bound; as a resync (tagged with its job), bounded by the
 * connection's subscriptions.
 */
static void push_snapshot(conn *c, jw_wsmsg *head, jw_wsmsg *body, job_entry *job)
{
    if (!job && !jw_wsconn_make_room(&c->base, head->len + body->len))
        return;
    jw_wsconn_push(&c->base, head, body, job, false);
}

static bool queue_snapshot(conn *c, job_entry *j, const char *job_id, json_t *ref,
                           const char *reason, job_entry *job)
{
    jw_wsmsg *body = snapshot_body(c->hub->app, j, job_id), *head;

    if (!body)
        return false;
    head = snapshot_head(job_id, ref, reason);
    if (!c->base.closing)
        push_snapshot(c, head, body, job);
    jw_wsmsg_unref(head);
    jw_wsmsg_unref(body);
    return true;
}

static subscriber *find_sub(job_entry *j, const conn *c)
{
    for (size_t i = 0; i < j->nsubs; i++)
        if (j->subs[i].c == c)
            return &j->subs[i];
    return NULL;
}

/*
 * A delta does not fit under the queue bound: drop this job's queued
 * messages and owe the connection one snapshot of the job instead, built when
 * the connection can take it (pay_resyncs). Until then the job's deltas are
 * dropped at no cost: the snapshot will include them. A connection that keeps
 * dropping for too long is closed.
 */
static void owe_snapshot(conn *c, subscriber *sub)
{
    int64_t now = jw_mono_us();

    sub->resync = true;
    c->resyncs_owed++;
    c->hub->stats.resyncs++;
    if (!c->over_since)
        c->over_since = now;
    jw_wsconn_want_write(&c->base);
}

static void overflow(conn *c, job_entry *j, subscriber *sub)
{
    jw_wsconn_drop_tag(&c->base, j);
    owe_snapshot(c, sub);
}

/*
 * Room for a reply (an ack, a pong, an error, an OTP verdict, a snapshot) over
 * the queue bound (the shed hook of jw_wsconn_make_room): a reply is not
 * dropped on its own; the connection's queued deltas go first, each of their
 * jobs owing a snapshot instead (as on overflow). A client whose replies
 * alone pass the bound sends without reading, and is closed (4008).
 */
static void shed(jw_wsconn *b)
{
    conn *c = conn_of(b);

    for (size_t i = 0; i < c->nsubs; i++) {
        subscriber *sub = find_sub(c->subs[i], c);

        if (sub && !sub->resync && jw_wsconn_drop_tag(b, c->subs[i]))
            owe_snapshot(c, sub);
    }
}

static void push_delta(conn *c, subscriber *sub, jw_wsmsg *m, job_entry *j)
{
    if (c->base.closing || sub->replaying || sub->resync) {
        if (sub->resync && c->over_since && jw_mono_us() - c->over_since > MAX_OVER_US) {
            char why[64];

            snprintf(why, sizeof(why), "behind for over %" PRId64 " s", MAX_OVER_US / 1000000);
            jw_wsconn_slow_close(&c->base, why);
        }
        return;
    }
    if (!jw_wsconn_fits(&c->base, m->len)) {
        overflow(c, j, sub);
        return;
    }
    jw_wsconn_push(&c->base, NULL, m, j, true);
}

static void resync_from_db(conn *c, job_entry *j, subscriber *sub);

static bool owes_resyncs(const jw_wsconn *b)
{
    return ((const conn *)(const void *)b)->resyncs_owed > 0; /* base is first */
}

/* Builds the snapshots this connection is owed, now that its queue is empty. */
static void pay_resyncs(jw_wsconn *b)
{
    conn *c = conn_of(b);

    for (size_t i = 0; i < c->nsubs && c->resyncs_owed; i++) {
        job_entry *j = c->subs[i];
        subscriber *sub = find_sub(j, c);

        if (!sub || !sub->resync)
            continue;
        sub->resync = false;
        c->resyncs_owed--;
        if (!queue_snapshot(c, j, j->id, NULL, "resync", j))
            resync_from_db(c, j, sub); /* it finished and left memory meanwhile */
    }
    if (!c->resyncs_owed)
        c->over_since = 0;
}

/* ---- subscriptions ------------------------------------------------------------ */

static bool subscribed(const conn *c, const job_entry *j)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i] == j)
            return true;
    return false;
}

static subscriber *add_sub(conn *c, job_entry *j)
{
    jw_ws *hub = c->hub;
    subscriber *sub = find_sub(j, c);

    if (sub)
        return sub;
    if (c->nsubs == c->capsubs) {
        c->capsubs = c->capsubs ? c->capsubs * 2 : 4;
        c->subs = jw_xrealloc(c->subs, c->capsubs * sizeof(*c->subs));
    }
    c->subs[c->nsubs++] = j;
    if (j->nsubs == 0)
        idle_unlink(hub, j);
    if (j->nsubs == j->capsubs) {
        j->capsubs = j->capsubs ? j->capsubs * 2 : 4;
        j->subs = jw_xrealloc(j->subs, j->capsubs * sizeof(*j->subs));
    }
    sub = &j->subs[j->nsubs++];
    memset(sub, 0, sizeof(*sub));
    sub->c = c;
    hub->stats.subscriptions++;
    return sub;
}

static bool remove_sub(conn *c, job_entry *j)
{
    jw_ws *hub = c->hub;
    subscriber *sub = find_sub(j, c);

    if (!sub)
        return false;
    if (sub->resync)
        c->resyncs_owed--;
    *sub = j->subs[--j->nsubs];
    for (size_t i = 0; i < c->nsubs; i++) {
        if (c->subs[i] == j) {
            c->subs[i] = c->subs[--c->nsubs];
            break;
        }
    }
    /* What is still queued for it is no longer wanted. */
    jw_wsconn_drop_tag(&c->base, j);
    if (j->nsubs == 0)
        idle_push(hub, j);
    hub->stats.subscriptions--;
    return true;
}

/* ---- publishing ------------------------------------------------------------------ */

/* A delta's jobwire.v1 message: the same bytes live and replayed (jw_delta_encode). */
static jw_wsmsg *delta_msg(const jw_delta *d)
{
    jw_buf b;
    jw_wsmsg *m;

    jw_buf_init(&b, d->row_len + 256);
    jw_delta_encode(d, &b);
    m = jw_wsmsg_new(b.data, b.len);
    jw_buf_release(&b);
    return m;
}

void jw_ws_publish(jw_ws *hub, jw_delta *d)
{
    job_entry *j = job_get(hub, d->job_id, true);
    jw_wsmsg *m = delta_msg(d);

    /* The ring holds the last RING deltas, contiguous in seq. */
    if (j->count && d->seq != j->first_seq + (int64_t)j->count) {
        for (size_t i = 0; i < j->count; i++)
            jw_wsmsg_unref(j->ring[(j->first + i) % RING]);
        j->count = 0;
    }
    if (!j->count) {
        j->first = 0;
        j->first_seq = d->seq;
    }
    if (j->count == RING) {
        jw_wsmsg_unref(j->ring[j->first]);
        j->first = (j->first + 1) % RING;
        j->first_seq++;
        j->count--;
    }
    m->refs++;
    j->ring[(j->first + j->count) % RING] = m;
    j->count++;

    for (size_t i = 0; i < j->nsubs; i++)
        push_delta(j->subs[i].c, &j->subs[i], m, j);
    jw_wsmsg_unref(m);
}

/* ---- client messages ---------------------------------------------------------- */

typedef struct ws_op {
    jw_ws *hub;
    char conn_key[24];
    json_t *ref;
    char job[JW_UUID_LEN + 1];
    int64_t since; /* -1: none */
    int64_t upto;  /* REPLAY: the last seq read from job_events */
    enum { OP_SUBSCRIBE, OP_REPLAY } kind;
    const char *reason; /* SUBSCRIBE: the snapshot's "reason" (a constant), or NULL */
} ws_op;

static ws_op *new_op(struct conn *c, json_t *ref);
static void free_op(ws_op *op);

static conn *find_conn(jw_ws *hub, const char *key)
{
    jw_wsconn *b = jw_wsconn_find(&hub->conns, key);

    return b ? conn_of(b) : NULL;
}

static void send_ack(conn *c, json_t *ref)
{
    json_t *doc = json_pack("{s:s}", "type", "ack");

    if (ref)
        json_object_set(doc, "ref", ref);
    send_msg(c, jw_wsmsg_json(doc));
}

static void hello(conn *c)
{
    json_t *doc = json_pack(
        "{s:s, s:s, s:o, s:{s:I, s:I, s:I, s:I}}", "type", "hello", "protocol", JW_WS_PROTOCOL,
        "user_id", c->who.kind == JW_PRINCIPAL_USER ? json_string(c->who.user_id) : json_null(),
        "limits", "max_frame", (json_int_t)MAX_CLIENT_FRAME, "max_subscriptions",
        (json_int_t)MAX_SUBS, "max_queue_bytes", (json_int_t)MAX_QUEUE_BYTES, "replay_window",
        (json_int_t)RING);

    send_msg(c, jw_wsmsg_json(doc));
}

static void on_sul(lws_sorted_usec_list_t *sul);

static bool authenticate(conn *c, const char *token, json_t *ref)
{
    jw_ws *hub = c->hub;
    char err[256];

    if (jw_auth_token(hub->app->auth, token, jw_now_us() / 1000000, &c->who, err, sizeof(err)) !=
        0) {
        send_error(c, ref, "unauthorized", "%s", err);
        start_close(c, CLOSE_AUTH, "unauthorized");
        return false;
    }
    if (c->who.kind == JW_PRINCIPAL_USER && !c->user_hold &&
        !(c->user_hold = jw_limits_ws_hold(hub->app->limits, c->who.user_id, jw_mono_us()))) {
        send_error(c, ref, "too_many_connections",
                   "a user may hold at most %d WebSocket connections (--max-ws-per-user)",
                   hub->app->cfg->max_ws_per_user);
        start_close(c, CLOSE_TOO_MANY, "too many connections");
        return false;
    }
    c->authed = true;
    /* From now on the timer watches the token's expiry. */
    if (c->who.kind == JW_PRINCIPAL_USER && c->who.expires_at) {
        /* The same leeway the token was accepted with. */
        int64_t us = (c->who.expires_at + JW_AUTH_LEEWAY_S) * 1000000 - jw_now_us();

        lws_sul_schedule(lws_get_context(c->base.wsi), 0, &c->sul, on_sul, us > 0 ? us : 1);
    } else {
        lws_sul_schedule(lws_get_context(c->base.wsi), 0, &c->sul, on_sul, LWS_SET_TIMER_USEC_CANCEL);
    }
    hello(c);
    return true;
}

static void on_sul(lws_sorted_usec_list_t *sul)
{
    conn *c = lws_container_of(sul, conn, sul);

    if (!c->authed) {
        start_close(c, CLOSE_AUTH_TIMEOUT, "no auth message in time");
        return;
    }
    send_error(c, NULL, "token_expired", "the token expired; reconnect with a fresh one");
    start_close(c, CLOSE_AUTH, "token expired");
}

/* Whether the ring holds every delta after since up to current. */
static bool replay_covers(const job_entry *j, int64_t since, int64_t current)
{
    if (since == current)
        return true;
    return j->count && since >= j->first_seq - 1 && since < current &&
           j->first_seq + (int64_t)j->count - 1 == current;
}

/* Replays the ring's deltas after since, or returns false when it cannot. */
static bool replay(conn *c, subscriber *sub, job_entry *j, int64_t since, int64_t current)
{
    if (!replay_covers(j, since, current))
        return false;
    for (int64_t s = since + 1; s <= current; s++) {
        jw_wsmsg *m = j->ring[(j->first + (size_t)(s - j->first_seq)) % RING];

        push_delta(c, sub, m, j);
    }
    return true;
}

/* Sends the job's snapshot as the answer to a subscribe. */
static void send_snapshot(conn *c, job_entry *j, const char *job_id, json_t *ref)
{
    queue_snapshot(c, j, job_id, ref, NULL, NULL);
}

/*
 * A read was refused by the store (its queue is full, or it is shutting down):
 * the subscription that waited for it is withdrawn and its subscribe answered
 * with the error.
 */
static void read_refused(conn *c, jw_read *r, int rc)
{
    ws_op *op = r->user;
    job_entry *j = job_get(c->hub, op->job, false);

    if (j && find_sub(j, c))
        remove_sub(c, j);
    if (rc == JW_ELIMIT)
        send_error(c, op->ref, "busy",
                   "too many database reads are queued; subscribe to job %s again later", op->job);
    else
        send_error(c, op->ref, "unavailable", "shutting down");
    jw_read_free(r);
    free_op(op);
}

/*
 * Hands c's waiting reads to the store while fewer than MAX_CONN_READS of its
 * own are there: one client cannot fill the store's queue, and its subscribes
 * are still all answered, in order. A read the store refuses for a full queue
 * waits for c's next answer when c has some out; otherwise it is refused.
 */
static void send_reads(conn *c)
{
    while (c->nunsent && c->nreads < MAX_CONN_READS) {
        jw_read *r = c->unsent[0];
        int rc = jw_store_read(c->hub->app->store, r);

        if (rc == JW_ELIMIT && c->nreads)
            return;
        memmove(c->unsent, c->unsent + 1, --c->nunsent * sizeof(*c->unsent));
        if (rc != 0) {
            read_refused(c, r, rc);
            continue;
        }
        if (c->nreads == c->capreads) {
            c->capreads = c->capreads ? c->capreads * 2 : MAX_CONN_READS;
            c->reads = jw_xrealloc(c->reads, c->capreads * sizeof(*c->reads));
        }
        c->reads[c->nreads++] = r;
    }
}

/* jw_read.done: the store answered one of the hub's reads. */
static void read_done(jw_read *r, void *hub)
{
    jw_ws_on_read(hub, r);
}

/* Asks PostgreSQL for op's job, after c's reads already asked for. */
static void read_for(conn *c, jw_read_kind kind, int n, const char **params, ws_op *op)
{
    jw_read *r = jw_read_new(kind, n, params);

    r->user = op;
    r->done = read_done;
    r->done_arg = c->hub;
    if (c->nunsent == c->capunsent) {
        c->capunsent = c->capunsent ? c->capunsent * 2 : 8;
        c->unsent = jw_xrealloc(c->unsent, c->capunsent * sizeof(*c->unsent));
    }
    c->unsent[c->nunsent++] = r;
    send_reads(c);
}

/* r was answered: it is no longer c's to cancel. */
static void forget_read(conn *c, const jw_read *r)
{
    for (size_t i = 0; i < c->nreads; i++) {
        if (c->reads[i] == r) {
            c->reads[i] = c->reads[--c->nreads];
            return;
        }
    }
}

/*
 * Nobody waits for c's reads of job any more (of every job when job is NULL):
 * those at the store are cancelled (answered without a query); those not sent
 * yet are dropped, their subscribes answered "unsubscribed" unless c closes.
 */
static void cancel_reads(conn *c, const char *job)
{
    size_t kept = 0;

    for (size_t i = 0; i < c->nreads; i++) {
        const ws_op *op = c->reads[i]->user;

        if (!job || strcmp(op->job, job) == 0)
            jw_read_cancel(c->reads[i]);
    }
    for (size_t i = 0; i < c->nunsent; i++) {
        jw_read *r = c->unsent[i];
        ws_op *op = r->user;

        if (job && strcmp(op->job, job) != 0) {
            c->unsent[kept++] = r;
            continue;
        }
        if (job && op->ref)
            send_error(c, op->ref, "unsubscribed",
                       "unsubscribed from job %s before this subscribe was answered", op->job);
        jw_read_free(r);
        free_op(op);
    }
    c->nunsent = kept;
}

/*
 * The job is not in the engine's memory: it finished before this process
 * started, or finished more than --finished-job-ttl ago (or is unknown). Its
 * state is read from PostgreSQL and answered by on_subscribe_read: an ack
 * when since is its last seq, else a snapshot. Meanwhile the subscription
 * waits like one being replayed.
 */
static void subscribe_from_db(conn *c, subscriber *sub, const char *job_id, int64_t since,
                              json_t *ref, const char *reason)
{
    const char *params[1] = {job_id};
    ws_op *op = new_op(c, ref);

    snprintf(op->job, sizeof(op->job), "%s", job_id);
    op->since = since;
    op->reason = reason;
    sub->replaying = true;
    read_for(c, JW_READ_JOB, 1, params, op);
}

static void resync_from_db(conn *c, job_entry *j, subscriber *sub)
{
    subscribe_from_db(c, sub, j->id, -1, NULL, "resync");
}

/*
 * Subscribes c to a job running in this process. The subscription exists
 * from here on (it counts toward the limit, unsubscribe finds it); a replay
 * from the journal marks it replaying, so live deltas wait until the replay
 * has been sent.
 */
static void subscribe_from_memory(conn *c, const char *job_id, int64_t since, json_t *ref)
{
    jw_ws *hub = c->hub;
    jw_engine *e = hub->app->engine;
    int64_t current = jw_engine_committed_seq(e, job_id);
    subscriber *sub;
    job_entry *j;

    if (!jw_principal_may_access(&c->who, jw_engine_job_owner(e, job_id))) {
        /*
         * A subscribe that read the database registered its subscription
         * before the owner was known (h_subscribe); the job may have come
         * into memory meanwhile (on_subscribe_read). Whatever registered it,
         * a foreign job's subscription must not survive the refusal.
         */
        j = job_get(hub, job_id, false);
        if (j)
            remove_sub(c, j);
        send_error(c, ref, "not_found", "no job %s", job_id);
        return;
    }
    j = job_get(hub, job_id, true);
    sub = add_sub(c, j);
    if (since >= 0 && replay(c, sub, j, since, current)) {
        send_ack(c, ref);
        return;
    }
    if (since >= 0 && since < current && current - since <= MAX_DB_REPLAY) {
        /* Older than the ring: read the journal, then splice the ring on. */
        char a[24], b[24];
        const char *params[3] = {job_id, a, b};
        ws_op *op = new_op(c, ref);

        snprintf(a, sizeof(a), "%" PRId64, since);
        snprintf(b, sizeof(b), "%" PRId64, current);
        snprintf(op->job, sizeof(op->job), "%s", job_id);
        op->kind = OP_REPLAY;
        op->since = since;
        op->upto = current;
        sub->replaying = true;
        read_for(c, JW_READ_EVENTS, 3, params, op);
        return;
    }
    send_snapshot(c, j, job_id, ref);
}

/*
 * The subscription op is for, if c still has it and it still waits. Every
 * subscribe gets one answer: one withdrawn meanwhile is told so here.
 */
static subscriber *waiting_sub(jw_ws *hub, conn *c, const ws_op *op)
{
    job_entry *j = job_get(hub, op->job, false);
    subscriber *sub = j ? find_sub(j, c) : NULL;

    if (!sub) {
        send_error(c, op->ref, "unsubscribed",
                   "unsubscribed from job %s before this subscribe was answered", op->job);
        return NULL;
    }
    if (!sub->replaying) {
        send_ack(c, op->ref); /* a later subscribe of the same job answered first */
        return NULL;
    }
    sub->replaying = false;
    return sub;
}

static void on_subscribe_read(jw_ws *hub, ws_op *op, jw_read *r)
{
    conn *c = find_conn(hub, op->conn_key);
    job_entry *j = job_get(hub, op->job, false);
    json_t *doc = NULL, *owner;

    if (!c || c->base.closing || !waiting_sub(hub, c, op))
        return;
    /* It may have come into memory meanwhile (a retry): take it from there. */
    if (jw_engine_job_owner(hub->app->engine, op->job)) {
        subscribe_from_memory(c, op->job, op->since, op->ref);
        return;
    }
    if (r->status == 0)
        doc = json_loads(r->result, 0, NULL);
    owner = json_object_get(json_object_get(doc, "job"), "user_id");
    if (!doc || !jw_principal_may_access(&c->who, json_string_value(owner))) {
        json_decref(doc);
        remove_sub(c, j);
        if (r->status == 0 || r->status == JW_ENOTFOUND)
            send_error(c, op->ref, "not_found", "no job %s", op->job);
        else
            send_error(c, op->ref, "unavailable", "the database is unavailable; try again");
        return;
    }
    if (op->since >= 0 && op->since == json_integer_value(json_object_get(doc, "seq"))) {
        json_decref(doc);
        send_ack(c, op->ref);
        return;
    }
    {
        /* The same layout as a snapshot from memory, only not shared. */
        char *text = json_dumps(doc, JSON_COMPACT);
        jw_wsmsg *head = snapshot_head(op->job, op->ref, op->reason), *body;

        json_decref(doc);
        if (!text || text[0] != '{')
            jw_oom("snapshot");
        body = jw_wsmsg_new(text + 1, strlen(text + 1));
        free(text);
        if (!c->base.closing)
            push_snapshot(c, head, body, op->reason ? job_get(hub, op->job, false) : NULL);
        jw_wsmsg_unref(head);
        jw_wsmsg_unref(body);
    }
}

static void free_op(ws_op *op)
{
    json_decref(op->ref);
    free(op);
}

/*
 * The journal after since arrived: send it, then whatever the ring holds
 * beyond it, so the client sees since+1 ... now without a gap, then live
 * deltas. Anything that does not line up falls back to a snapshot.
 */
static void on_replay_read(jw_ws *hub, ws_op *op, jw_read *r)
{
    conn *c = find_conn(hub, op->conn_key);
    int64_t current = jw_engine_committed_seq(hub->app->engine, op->job), expect = op->since + 1;
    jw_delta **events = NULL;
    subscriber *sub;
    job_entry *j;
    size_t i, n = 0;
    int rc = JW_EINVAL;

    if (!c || c->base.closing || !(sub = waiting_sub(hub, c, op)))
        return;
    j = job_get(hub, op->job, false);
    if (r->status == 0)
        rc = jw_store_read_deltas(r, &events, &n);
    for (i = 0; i < n && events[i]->seq == expect; i++)
        expect++;
    if (rc != 0 || expect != op->upto + 1 || current < op->upto ||
        !replay_covers(j, op->upto, current)) {
        jw_store_free_deltas(events, n);
        if (current < 0) /* it finished and left memory during the read */
            subscribe_from_db(c, sub, op->job, op->since, op->ref, NULL);
        else
            send_snapshot(c, j, op->job, op->ref);
        return;
    }
    /* Encoded like the live ones (jw_ws_publish): the same bytes, cts included. */
    for (i = 0; i < n; i++) {
        jw_wsmsg *m = delta_msg(events[i]);

        push_delta(c, sub, m, j);
        jw_wsmsg_unref(m);
    }
    jw_store_free_deltas(events, n);
    replay(c, sub, j, op->upto, current);
    send_ack(c, op->ref);
}

void jw_ws_on_read(jw_ws *hub, jw_read *r)
{
    ws_op *op = r->user;
    conn *c = find_conn(hub, op->conn_key);

    if (c) {
        forget_read(c, r);
        send_reads(c);
    }
    if (r->status == JW_ECANCELED) {
        /* Its subscription was withdrawn (or its connection closed): the
         * subscribe still gets its one answer. */
        if (c && !c->base.closing && op->ref)
            send_error(c, op->ref, "unsubscribed",
                       "unsubscribed from job %s before this subscribe was answered", op->job);
    } else if (op->kind == OP_REPLAY)
        on_replay_read(hub, op, r);
    else
        on_subscribe_read(hub, op, r);
    free_op(op);
    jw_read_free(r);
}

static ws_op *new_op(conn *c, json_t *ref)
{
    ws_op *op = jw_xcalloc(1, sizeof(*op));

    op->hub = c->hub;
    snprintf(op->conn_key, sizeof(op->conn_key), "%s", c->base.key);
    op->ref = json_incref(ref);
    op->since = -1;
    return op;
}

static bool get_job_id(conn *c, json_t *msgv, json_t *ref, char out[JW_UUID_LEN + 1])
{
    json_t *v = json_object_get(msgv, "job_id");

    if (!v) {
        send_error(c, ref, "bad_message", "job_id is required");
        return false;
    }
    if (!json_is_string(v) || !jw_uuid_valid(json_string_value(v))) {
        send_error(c, ref, "invalid_job_id", "job_id must be a UUID string");
        return false;
    }
    snprintf(out, JW_UUID_LEN + 1, "%s", json_string_value(v));
    for (char *p = out; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'F' ? *p + 32 : *p);
    return true;
}

static void h_subscribe(conn *c, json_t *m, json_t *ref)
{
    jw_ws *hub = c->hub;
    json_t *since_v = json_object_get(m, "since");
    int64_t since = -1;
    char job[JW_UUID_LEN + 1];
    job_entry *j;

    if (!get_job_id(c, m, ref, job))
        return;
    if (since_v) {
        if (!json_is_integer(since_v) || json_integer_value(since_v) < 0) {
            send_error(c, ref, "invalid_since", "since must be an integer >= 0");
            return;
        }
        since = json_integer_value(since_v);
    }
    j = job_get(hub, job, false);
    if (!(j && subscribed(c, j)) && c->nsubs >= MAX_SUBS) {
        send_error(c, ref, "too_many_subscriptions", "at most %zu subscriptions per connection",
                   MAX_SUBS);
        return;
    }
    if (jw_engine_job_owner(hub->app->engine, job)) {
        subscribe_from_memory(c, job, since, ref);
        return;
    }
    /* Not in memory: finished (before this process, or long enough ago), or unknown. */
    subscribe_from_db(c, add_sub(c, job_get(hub, job, true)), job, since, ref, NULL);
}

static void h_unsubscribe(conn *c, json_t *m, json_t *ref)
{
    char job[JW_UUID_LEN + 1];
    job_entry *j;

    if (!get_job_id(c, m, ref, job))
        return;
    j = job_get(c->hub, job, false);
    if (!j || !remove_sub(c, j)) {
        send_error(c, ref, "not_subscribed", "not subscribed to job %s", job);
        return;
    }
    cancel_reads(c, job); /* a subscribe still waiting on PostgreSQL needs no answer from it */
    send_ack(c, ref);
}

static void on_otp_result(void *arg, const jw_otp_result *r)
{
    ws_op *op = arg;
    conn *c = find_conn(op->hub, op->conn_key);

    if (c && !c->base.closing) {
        json_t *doc = json_pack("{s:s, s:b, s:i}", "type", "otp.result", "ok", r->ok,
                                "attempts_left", r->attempts_left);

        json_object_set(doc, "ref", op->ref);
        if (!r->ok) {
            json_object_set_new(doc, "error", json_string(r->error ? r->error : "rejected"));
            json_object_set_new(doc, "message", json_string(r->message ? r->message : ""));
        }
        send_msg(c, jw_wsmsg_json(doc));
    }
    free_op(op);
}

static void h_otp_submit(conn *c, json_t *m, json_t *ref)
{
    json_t *id = json_object_get(m, "otp_request_id"), *value = json_object_get(m, "value");
    char err[256], otp_id[JW_UUID_LEN + 1];
    ws_op *op;
    int rc;

    if (!ref) {
        send_error(c, NULL, "bad_message", "otp.submit needs a ref to answer");
        return;
    }
    if (!json_is_string(id) || !jw_uuid_valid(json_string_value(id))) {
        send_error(c, ref, "bad_message", "otp_request_id must be a UUID string");
        return;
    }
    if (!value) {
        send_error(c, ref, "bad_message", "value is required (the code, 4 to 10 digits)");
        return;
    }
    if (!json_is_string(value)) {
        send_error(c, ref, "invalid_otp", "value must be a string of 4 to 10 digits");
        return;
    }
    if (c->who.kind == JW_PRINCIPAL_USER) {
        int after;

        if (jw_limits_take(c->hub->app->limits, JW_LIMIT_USER_OTP, c->who.user_id, jw_mono_us(),
                           &after)) {
            send_rate_limited(c, ref, after,
                              "at most %d OTP submissions a minute (--otp-rate-per-user); try "
                              "again in %d s",
                              c->hub->app->cfg->otp_rate_per_user, after);
            return;
        }
    }
    snprintf(otp_id, sizeof(otp_id), "%s", json_string_value(id));
    for (char *p = otp_id; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'F' ? *p + 32 : *p);
    op = new_op(c, ref);
    rc = jw_engine_submit_otp(c->hub->app->engine, otp_id, json_string_value(value),
                              c->who.kind == JW_PRINCIPAL_USER ? c->who.user_id : NULL,
                              on_otp_result, op, err, sizeof(err));
    if (rc != 0) {
        free_op(op);
        send_error(c, ref,
                   rc == JW_ENOTFOUND ? "not_found"
                   : rc == JW_EINVAL  ? "invalid_otp"
                                      : "otp_not_waiting",
                   "%s", err);
    }
}

static void h_ping(conn *c, json_t *m, json_t *ref)
{
    json_t *doc = json_pack("{s:s}", "type", "pong");

    (void)m;
    if (ref)
        json_object_set(doc, "ref", ref);
    send_msg(c, jw_wsmsg_json(doc));
}

static void h_auth(conn *c, json_t *m, json_t *ref)
{
    json_t *token = json_object_get(m, "token");

    if (c->authed) {
        send_error(c, ref, "bad_message", "already authenticated");
        return;
    }
    if (!json_is_string(token)) {
        send_error(c, ref, "unauthorized", "auth needs a token string");
        start_close(c, CLOSE_AUTH, "unauthorized");
        return;
    }
    authenticate(c, json_string_value(token), ref);
}

static const struct {
    const char *type;
    void (*handle)(conn *c, json_t *m, json_t *ref);
    bool needs_auth;
} handlers[] = {
    {"auth", h_auth, false},
    {"subscribe", h_subscribe, true},
    {"unsubscribe", h_unsubscribe, true},
    {"otp.submit", h_otp_submit, true},
    {"ping", h_ping, true},
    {NULL, NULL, false},
};

static void handle_message(conn *c, const char *data, size_t len)
{
    char err[256];
    jw_ws_msg m;
    const char *code = jw_ws_parse(data, len, &m, err, sizeof(err));

    if (code) {
        send_error(c, m.ref, code, "%s", err);
        goto out;
    }
    for (int i = 0; handlers[i].type; i++) {
        if (strcmp(handlers[i].type, m.type) != 0)
            continue;
        if (handlers[i].needs_auth && !c->authed) {
            send_error(c, m.ref, "auth_required", "send {\"type\":\"auth\",\"token\":…} first");
            start_close(c, CLOSE_AUTH, "auth required");
            goto out;
        }
        handlers[i].handle(c, m.root, m.ref);
        goto out;
    }
    send_error(c, m.ref, "unknown_type", "unknown message type \"%.32s\"", m.type);
out:
    /* The code of an otp.submit and the token of an auth leave memory with the message. */
    jw_wipe_json_string(json_object_get(m.root, "value"));
    jw_wipe_json_string(json_object_get(m.root, "token"));
    jw_ws_msg_release(&m);
}

/* ---- lws glue -------------------------------------------------------------------- */

/* The hub jw_ws_bind gave the connection's vhost, or NULL before that. */
static jw_ws *hub_of(struct lws *wsi)
{
    jw_ws **slot = lws_protocol_vh_priv_get(lws_get_vhost(wsi), lws_get_protocol(wsi));

    return slot ? *slot : NULL;
}

int jw_ws_bind(jw_ws *hub, struct lws_vhost *vh)
{
    const struct lws_protocols *p = lws_vhost_name_to_protocol(vh, JW_WS_PROTOCOL);
    jw_ws **slot = p ? lws_protocol_vh_priv_zalloc(vh, p, sizeof(*slot)) : NULL;

    if (!slot)
        return JW_EINVAL;
    *slot = hub;
    return 0;
}

bool jw_ws_origin_allowed(struct lws *wsi, const jw_config *cfg)
{
    char origin[256];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);

    if (n <= 0)
        return true; /* not a browser */
    if (n >= (int)sizeof(origin) || lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0)
        return false;
    for (size_t i = 0; i < cfg->origin_count; i++)
        if (strcasecmp(origin, cfg->origins[i]) == 0)
            return true;
    return false;
}

static void on_established(conn *c, struct lws *wsi, jw_ws *hub)
{
    char buf[JW_AUTH_MAX_TOKEN + 16];
    const char *token;

    jw_wsconn_open(&hub->conns, &c->base, wsi);
    c->hub = hub;
    jw_ws_budget_init(&c->rx_budget, wsi, hub_cfg(c)->ws_message_rate);
    token = lws_get_urlarg_by_name(wsi, "token=", buf, sizeof(buf));
    if (token) {
        authenticate(c, token, NULL);
        OPENSSL_cleanse(buf, sizeof(buf));
        return;
    }
    lws_sul_schedule(lws_get_context(wsi), 0, &c->sul, on_sul, AUTH_DEADLINE_US);
}

static void on_closed(conn *c)
{
    jw_ws *hub = c->hub;

    if (!c->base.open)
        return;
    lws_sul_schedule(lws_get_context(c->base.wsi), 0, &c->sul, on_sul, LWS_SET_TIMER_USEC_CANCEL);
    jw_ws_budget_release(&c->rx_budget);
    while (c->nsubs)
        remove_sub(c, c->subs[c->nsubs - 1]);
    free(c->subs);
    jw_wsconn_drop_all(&c->base);
    cancel_reads(c, NULL);
    free(c->reads);
    free(c->unsent);
    c->reads = c->unsent = NULL;
    c->nreads = c->capreads = c->nunsent = c->capunsent = 0;
    jw_limits_release(hub->app->limits, c->user_hold);
    c->user_hold = NULL;
    jw_ws_rx_done(&c->rx);
    jw_wsconn_closed(&c->base);
}

/* A client message, once whole (ws_rx.h gathers it, bounded). */
static int on_receive(conn *c, struct lws *wsi, const void *in, size_t len)
{
    const char *data;
    size_t n;

    switch (jw_ws_rx_feed(&c->rx, wsi, in, len, MAX_CLIENT_FRAME, &data, &n)) {
    case JW_WS_RX_MORE: return 0;
    case JW_WS_RX_TOO_BIG:
        send_error(c, NULL, "frame_too_large", "a client frame may hold at most %zu bytes",
                   MAX_CLIENT_FRAME);
        start_close(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "frame too large");
        break;
    case JW_WS_RX_BINARY:
        send_error(c, NULL, "binary_not_supported", "send text frames of JSON");
        break;
    case JW_WS_RX_TEXT:
        if (!c->base.closing)
            handle_message(c, data, n);
        OPENSSL_cleanse((void *)data, n); /* it may hold a code or a token */
        if (jw_ws_budget_spend(&c->rx_budget, wsi, hub_cfg(c)->ws_message_rate, 1.0))
            c->hub->stats.rx_throttled++;
        break;
    }
    jw_ws_rx_done(&c->rx);
    return 0;
}

static int callback_ws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    conn *c = user;
    jw_ws *hub;
    char uri[16];

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        hub = hub_of(wsi);
        if (!hub)
            return -1;
        /* Only /ws speaks jobwire.v1; browsers only from allowed Origins. */
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) < 0 || strcmp(uri, "/ws") != 0)
            return -1;
        if (!jw_ws_origin_allowed(wsi, hub->app->cfg)) {
            jw_log_info("ws: refused an upgrade from a foreign Origin");
            return -1;
        }
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        hub = hub_of(wsi);
        if (!hub)
            return -1;
        on_established(c, wsi, hub);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (!c || !c->base.open)
            return -1;
        return on_receive(c, wsi, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE: return c ? jw_wsconn_on_writable(&c->base) : 0;
    case LWS_CALLBACK_CLOSED:
        if (c)
            on_closed(c);
        return 0;
    default: return 0;
    }
}

const struct lws_protocols jw_ws_protocol = {
    .name = JW_WS_PROTOCOL,
    .callback = callback_ws,
    .per_session_data_size = sizeof(conn),
    .rx_buffer_size = RX_CHUNK,
    /* Without it lws cuts every send() to rx_buffer_size: a 64 KiB frame would leave
     * in 64 pieces, each a syscall and a trip through lws' own buffer list. */
    .tx_packet_size = 4 * JW_WSCONN_FRAME,
};

/* ---- life cycle ------------------------------------------------------------------- */

jw_ws *jw_ws_new(const jw_services *app)
{
    jw_ws *hub = jw_xcalloc(1, sizeof(*hub));

    hub->app = app;
    jw_map_init(&hub->jobs);
    jw_wsconns_init(&hub->conns, "ws", true, (size_t)app->cfg->ws_max_queue);
    hub->conns.shed = shed;
    hub->conns.owes = owes_resyncs;
    hub->conns.pay = pay_resyncs;
    return hub;
}

void jw_ws_hold(jw_ws *hub)
{
    jw_wsconns_hold(&hub->conns);
}

void jw_ws_flush(jw_ws *hub)
{
    jw_wsconns_flush(&hub->conns);
}

size_t jw_ws_close_all(jw_ws *hub)
{
    return jw_wsconns_close_all(&hub->conns, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
}

void jw_ws_get_stats(const jw_ws *hub, jw_ws_stats *out)
{
    const jw_wsconns_stats *cs = &hub->conns.stats;

    *out = hub->stats;
    out->connections = cs->connections;
    out->deltas_sent = cs->counted;
    out->frames_sent = cs->frames;
    out->bytes_sent = cs->bytes;
    out->slow_closes = cs->slow_closes;
}

void jw_ws_free(jw_ws *hub)
{
    const char *k;
    void *v;

    if (!hub)
        return;
    for (size_t it = 0; jw_map_next(&hub->jobs, &it, &k, &v);)
        free_job_entry(v);
    jw_map_release(&hub->jobs);
    jw_wsconns_release(&hub->conns);
    free(hub);
}
