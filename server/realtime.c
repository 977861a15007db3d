/*
 * realtime.c - the Supabase Realtime endpoint (see realtime.h and
 * docs/supabase-migration.md).
 */
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

#define MAX_CLIENT_FRAME ((size_t)rt->app->cfg->ws_max_frame)
#define MAX_CHANNELS ((size_t)rt->app->cfg->ws_max_subscriptions)
#define MAX_BINDINGS 32 /* postgres_changes entries of one join */
#define MAX_JOBS 100    /* jobs one channel's filters may name, like an in list */
/* How long a channel that joined without a user waits for an access_token (see nudge). */
#define AWAIT_TOKEN_US (1000 * 1000)
/* Database reads one connection may have out at once: one channel's worth. */
#define MAX_CONN_READS MAX_JOBS
#define AUTH_DEADLINE_US ((int64_t)rt->app->cfg->ws_auth_timeout_s * 1000000)

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
    char refusal[320];
    json_t *docs;               /* job id -> state read from the database, for initial rows */
    json_t *join_ref_v;         /* the phx_join's ref, answered when the reads are done */
    json_t *reply;              /* the ok reply's postgres_changes */
    lws_sorted_usec_list_t sul; /* the token's expiry */
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
    lws_sorted_usec_list_t auth_sul; /* the auth deadline (--ws-auth-timeout) */
    channel **chans;
    size_t nchans, capchans;
    jw_ws_rx rx;
} rconn;

typedef struct rt_job {
    char id[JW_UUID_LEN + 1];
    channel **ch;
    size_t n, cap;
} rt_job;

struct jw_rt {
    const jw_services *app;
    jw_map jobs; /* job id -> rt_job: live channels pinned to it */
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

static void cancel_reads(rconn *c, uint64_t serial);
static void forget_read(rconn *c, const jw_read *r);

static void grow(void *pp, size_t *cap, size_t need, size_t size)
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

static rconn *rconn_of(jw_wsconn *b)
{
    return lws_container_of(b, rconn, base);
}

static void start_close(rconn *c, int code, const char *reason)
{
    jw_wsconn_close(&c->base, code, reason);
}

static void send_phx(rconn *c, json_t *join_ref, json_t *ref, const char *topic, const char *event,
                     json_t *payload);

/*
 * The queue is past its bound. A Phoenix client cannot be told "you missed
 * some", but it can be told a channel failed: on phx_error supabase-js joins
 * the channel again (and a binding with jobwire_initial_rows then gets the
 * current rows). So the queued events are dropped, and every live channel
 * stops and gets phx_error; the connection stays. The channels stay
 * registered (this runs while the hub walks them) but take no events.
 */
static void overflow(jw_wsconn *b)
{
    rconn *c = rconn_of(b);

    if (!b->qcounted)
        return;
    jw_wsconn_drop_counted(b);
    jw_log_info("realtime conn=%" PRIu64 ": over %zu bytes queued; its channels are told "
                "to join again (phx_error)",
                c->base.id, (size_t)c->rt->app->cfg->ws_max_queue);
    for (size_t i = 0; i < c->nchans; i++) {
        channel *ch = c->chans[i];

        if (!ch->live)
            continue;
        ch->live = false;
        ch->errored = true;
        c->rt->stats.channel_errors++;
        send_phx(c, ch->join_ref, ch->join_ref, ch->topic, "phx_error", json_object());
    }
}

/*
 * Queues one message within the connection's bound: an event that does not
 * fit sheds the queued events (overflow) and is dropped with them; a reply
 * makes room the same way (jw_wsconn_make_room).
 */
static void push(rconn *c, const char *text, size_t len, bool event)
{
    jw_wsmsg *m;

    if (c->base.closing)
        return;
    if (event && c->base.qcounted && !jw_wsconn_fits(&c->base, len)) {
        overflow(&c->base); /* its channel was just told to join again */
        return;
    }
    if (!jw_wsconn_make_room(&c->base, len))
        return;
    m = jw_wsmsg_new(text, len);
    jw_wsconn_push(&c->base, NULL, m, NULL, event);
    jw_wsmsg_unref(m);
}

/* Sends [join_ref, ref, topic, event, payload] (or the vsn 1 object); takes payload. */
static void send_phx(rconn *c, json_t *join_ref, json_t *ref, const char *topic, const char *event,
                     json_t *payload)
{
    json_t *doc;
    char *text;

    if (c->array)
        doc = json_pack("[O,O,s,s,o]", join_ref ? join_ref : json_null(), ref ? ref : json_null(),
                        topic, event, payload);
    else
        doc = json_pack("{s:s, s:s, s:o, s:O, s:O}", "topic", topic, "event", event, "payload",
                        payload, "ref", ref ? ref : json_null(), "join_ref",
                        join_ref ? join_ref : json_null());
    if (!doc || !(text = json_dumps(doc, JSON_COMPACT)))
        jw_oom("realtime message");
    push(c, text, strlen(text), false);
    free(text);
    json_decref(doc);
}

static void reply(rconn *c, const jw_rt_msg *m, const char *status, json_t *response)
{
    send_phx(c, m->join_ref, m->ref, m->topic, "phx_reply",
             json_pack("{s:s, s:o}", "status", status, "response", response));
}

static void reply_error(rconn *c, const jw_rt_msg *m, const char *reason)
{
    reply(c, m, "error", json_pack("{s:s}", "reason", reason));
}

static const char *channel_name(const char *topic)
{
    return strncmp(topic, "realtime:", 9) == 0 ? topic + 9 : topic;
}

static void send_system(channel *ch, const char *status, const char *extension, const char *text)
{
    send_phx(ch->c, ch->join_ref, NULL, ch->topic, "system",
             json_pack("{s:s, s:s, s:s, s:s}", "message", text, "status", status, "extension",
                       extension, "channel", channel_name(ch->topic)));
}

/* ---- channels --------------------------------------------------------------------- */

static channel *find_channel(rconn *c, const char *topic)
{
    for (size_t i = 0; i < c->nchans; i++)
        if (strcmp(c->chans[i]->topic, topic) == 0)
            return c->chans[i];
    return NULL;
}

static void unlink_live(jw_rt *rt, channel *ch)
{
    if (!ch->registered)
        return;
    ch->registered = false;
    ch->live = false;
    if (ch->wildcard) {
        for (size_t i = 0; i < rt->nwild; i++) {
            if (rt->wild[i] == ch) {
                rt->wild[i] = rt->wild[--rt->nwild];
                break;
            }
        }
        return;
    }
    for (size_t k = 0; k < ch->njobs; k++) {
        rt_job *j = jw_map_get(&rt->jobs, ch->jobs[k].job);

        for (size_t i = 0; j && i < j->n; i++) {
            if (j->ch[i] == ch) {
                j->ch[i] = j->ch[--j->n];
                break;
            }
        }
        if (j && j->n == 0) {
            jw_map_del(&rt->jobs, j->id);
            free(j->ch);
            free(j);
        }
    }
}

static void free_channel(channel *ch)
{
    for (size_t i = 0; i < ch->nb; i++)
        jw_rt_filter_release(&ch->b[i].filter);
    free(ch->b);
    free(ch->jobs);
    free(ch->topic);
    free(ch->topic_json);
    json_decref(ch->join_ref);
    json_decref(ch->join_ref_v);
    json_decref(ch->docs);
    json_decref(ch->reply);
    free(ch);
}

/* Takes ch out of its connection and the hub, and frees it. */
static void remove_channel(channel *ch)
{
    rconn *c = ch->c;
    jw_rt *rt = c->rt;

    if (ch->pending)
        cancel_reads(c, ch->serial); /* a rejoin, a leave or a close: nobody waits for them */
    lws_sul_cancel(&ch->sul);
    unlink_live(rt, ch);
    for (size_t i = 0; i < c->nchans; i++) {
        if (c->chans[i] == ch) {
            c->chans[i] = c->chans[--c->nchans];
            break;
        }
    }
    rt->stats.channels--;
    free_channel(ch);
}

/* Tells the client the channel is gone (phx_close), then removes it. */
static void close_channel(channel *ch)
{
    send_phx(ch->c, ch->join_ref, ch->join_ref, ch->topic, "phx_close", json_object());
    remove_channel(ch);
}

/* Whether p's token is past its exp and the leeway, as jw_auth_token would judge it now. */
static bool token_expired(const jw_principal *p, int64_t now_us)
{
    return p->kind == JW_PRINCIPAL_USER && p->expires_at &&
           now_us / 1000000 >= p->expires_at + JW_AUTH_LEEWAY_S;
}

static void on_expiry(lws_sorted_usec_list_t *sul)
{
    channel *ch = lws_container_of(sul, channel, sul);

    send_system(ch, "error", "system", "Token has expired");
    close_channel(ch);
}

/*
 * A channel answered ok without a user, still without a token AWAIT_TOKEN_US
 * later. supabase-js with an accessToken callback buffers its phx_join before
 * the callback answers, and sends the token as an access_token message only if
 * it answers after the join was answered; when it answered before, the token
 * is in the channel's next join, never in a message. So the channel is told to
 * join again (phx_error, once per connection: a client that is really signed
 * out gets nothing more), and that join carries the token. The app sees
 * SUBSCRIBED, CHANNEL_ERROR, SUBSCRIBED in that case - realtime-js leaves no
 * way to fetch the token without a rejoin - and SUBSCRIBED once in the other.
 */
static void nudge(lws_sorted_usec_list_t *sul)
{
    channel *ch = lws_container_of(sul, channel, sul);
    rconn *c = ch->c;

    if (!ch->awaiting || ch->errored || c->nudged || c->base.closing)
        return;
    c->nudged = true;
    ch->errored = true;
    c->rt->stats.channel_errors++;
    jw_log_info("realtime conn=%" PRIu64 " %s: no access_token since the join; asking the client "
                "to join again",
                c->base.id, ch->topic);
    send_phx(c, ch->join_ref, ch->join_ref, ch->topic, "phx_error", json_object());
}

/* Arms the channel's timer for its principal's token expiry (with the accepted leeway). */
static void watch_expiry(channel *ch)
{
    struct lws_context *ctx = lws_get_context(ch->c->base.wsi);

    if (ch->who.kind == JW_PRINCIPAL_USER && ch->who.expires_at) {
        int64_t us = (ch->who.expires_at + JW_AUTH_LEEWAY_S) * 1000000 - jw_now_us();

        lws_sul_schedule(ctx, 0, &ch->sul, on_expiry, us > 0 ? us : 1);
    } else {
        lws_sul_cancel(&ch->sul);
    }
}

/* ---- events ----------------------------------------------------------------------- */

static unsigned event_bit(jw_op op)
{
    return op == JW_OP_INSERT ? EV_INSERT : EV_UPDATE;
}

/*
 * The shared part of an event: {"schema":…,"table":…,"commit_timestamp":…,
 * "type":…,"columns":[…],"record":…,"old_record":…,"errors":null,"seq":N}.
 * An UPDATE's old_record holds the primary key, as Supabase sends it for a
 * table without REPLICA IDENTITY FULL.
 */
static void encode_data(jw_buf *b, const jw_rt_table *t, const char *type, int64_t ts_us,
                        const char *record, size_t record_len, const char *row_id, int64_t seq)
{
    char ts[40];

    jw_format_ts(ts_us, ts, sizeof(ts));
    jw_buf_addf(b,
                "{\"schema\":\"public\",\"table\":\"%s\",\"commit_timestamp\":\"%s\","
                "\"type\":\"%s\",\"columns\":[%s],\"record\":",
                t->name, ts, type, t->columns_json);
    jw_buf_add(b, record, record_len);
    if (strcmp(type, "UPDATE") == 0)
        jw_buf_addf(b, ",\"old_record\":{\"id\":\"%s\"}", row_id);
    jw_buf_adds(b, ",\"errors\":null");
    if (seq > 0)
        jw_buf_addf(b, ",\"seq\":%" PRId64, seq);
    jw_buf_addch(b, '}');
}

/* Wraps the shared data for one channel and queues it. */
static void send_event(channel *ch, const int64_t *ids, size_t nids, const jw_buf *data)
{
    rconn *c = ch->c;
    jw_buf b;

    if (!ch->live) /* told to join again: nothing until it has */
        return;
    jw_buf_init(&b, data->len + ch->nb * 24 + strlen(ch->topic_json) + 96);
    if (c->array)
        jw_buf_addf(&b, "[null,null,%s,\"postgres_changes\",{\"ids\":[", ch->topic_json);
    else
        jw_buf_addf(&b,
                    "{\"topic\":%s,\"event\":\"postgres_changes\",\"ref\":null,"
                    "\"payload\":{\"ids\":[",
                    ch->topic_json);
    for (size_t i = 0; i < nids; i++)
        jw_buf_addf(&b, "%s%" PRId64, i ? "," : "", ids[i]);
    jw_buf_adds(&b, "],\"data\":");
    jw_buf_add(&b, data->data, data->len);
    jw_buf_adds(&b, c->array ? "}]" : "}}");
    push(c, b.data, b.len, true);
    jw_buf_release(&b);
}

typedef struct delta_ctx {
    jw_delta *d;
    const char *owner;
    int64_t now_us;
    json_t *row; /* parsed on first need */
    bool bad_row;
    jw_buf data; /* encoded on first need */
} delta_ctx;

static void deliver(channel *ch, delta_ctx *x)
{
    int64_t ids[MAX_BINDINGS];
    size_t n = 0;

    /* An expired token gets nothing, also in the moment before its timer fires. */
    if (!ch->live || ch->c->base.closing || !jw_principal_may_access(&ch->who, x->owner) ||
        token_expired(&ch->who, x->now_us))
        return;
    for (size_t i = 0; i < ch->nb; i++) {
        const binding *b = &ch->b[i];

        if ((b->table >= 0 && b->table != (int)x->d->table) || !(b->events & event_bit(x->d->op)))
            continue;
        if (b->filter.n) {
            if (!x->row && !x->bad_row) {
                x->row = json_loadb(x->d->row, x->d->row_len, 0, NULL);
                x->bad_row = !x->row;
            }
            if (!x->row || !jw_rt_filter_match(&b->filter, x->row))
                continue;
        }
        ids[n++] = b->id;
    }
    if (!n)
        return;
    if (!x->data.len)
        encode_data(&x->data, &jw_rt_tables[x->d->table],
                    x->d->op == JW_OP_INSERT ? "INSERT" : "UPDATE",
                    x->d->commit_us ? x->d->commit_us : x->d->ts_us, x->d->row, x->d->row_len,
                    x->d->row_id, x->d->seq);
    send_event(ch, ids, n, &x->data);
}

void jw_rt_publish(jw_rt *rt, jw_delta *d)
{
    rt_job *j = jw_map_get(&rt->jobs, d->job_id);
    delta_ctx x = {.d = d};

    if ((!j && !rt->nwild) || (int)d->table >= JW_RT_TABLES)
        return;
    x.now_us = jw_now_us();
    x.owner = jw_engine_job_owner(rt->app->engine, d->job_id);
    jw_buf_init(&x.data, 0);
    for (size_t i = 0; j && i < j->n; i++)
        deliver(j->ch[i], &x);
    for (size_t i = 0; i < rt->nwild; i++)
        deliver(rt->wild[i], &x);
    json_decref(x.row);
    jw_buf_release(&x.data);
}

/* The jobwire extension: the current rows a binding pinned to jobs matches. */
static void send_initial_rows(channel *ch)
{
    jw_rt *rt = ch->c->rt;

    for (size_t i = 0; i < ch->nb; i++) {
        const binding *b = &ch->b[i];
        const char *type = b->events == EV_UPDATE ? "UPDATE" : "INSERT";

        if (!b->initial)
            continue;
        for (size_t k = 0; k < ch->njobs; k++) {
            json_t *state = jw_engine_snapshot(rt->app->engine, ch->jobs[k].job);

            if (!state)
                state = json_incref(json_object_get(ch->docs, ch->jobs[k].job));
            for (int t = 0; state && t < JW_RT_TABLES; t++) {
                static const char *const keys[JW_RT_TABLES] = {"job", "steps", "otp_requests"};
                json_t *rows = json_object_get(state, keys[t]), *row;
                size_t idx;

                if (b->table >= 0 && b->table != t)
                    continue;
                if (json_is_object(rows))
                    rows = json_pack("[O]", rows);
                else
                    json_incref(rows);
                json_array_foreach(rows, idx, row)
                {
                    const char *id = json_string_value(json_object_get(row, "id"));
                    char *text;
                    jw_buf data;

                    if (!id || !jw_rt_filter_match(&b->filter, row))
                        continue;
                    text = json_dumps(row, JSON_COMPACT);
                    jw_buf_init(&data, 0);
                    encode_data(&data, &jw_rt_tables[t], type, jw_now_us(), text, strlen(text), id,
                                0);
                    send_event(ch, &b->id, 1, &data);
                    jw_buf_release(&data);
                    free(text);
                }
                json_decref(rows);
            }
            json_decref(state);
        }
    }
}

/* ---- joining ---------------------------------------------------------------------- */

/* Answers the phx_join ok: the bindings echoed by index, then the system message. */
static void answer_ok(channel *ch)
{
    json_t *resp = json_pack("{s:O}", "postgres_changes", ch->reply);

    ch->answered = true;
    send_phx(ch->c, ch->join_ref, ch->join_ref_v, ch->topic, "phx_reply",
             json_pack("{s:s, s:o}", "status", "ok", "response", resp));
    if (ch->nb)
        send_system(ch, "ok", "postgres_changes", "Subscribed to PostgreSQL");
}

/* Registers the channel's bindings: from now on it gets events (and its initial rows). */
static void go_live(channel *ch)
{
    rconn *c = ch->c;
    jw_rt *rt = c->rt;

    ch->live = true;
    ch->registered = true;
    if (ch->wildcard) {
        grow(&rt->wild, &rt->capwild, rt->nwild + 1, sizeof(*rt->wild));
        rt->wild[rt->nwild++] = ch;
    } else {
        for (size_t k = 0; k < ch->njobs; k++) {
            rt_job *j = jw_map_get(&rt->jobs, ch->jobs[k].job);

            if (!j) {
                j = jw_xcalloc(1, sizeof(*j));
                snprintf(j->id, sizeof(j->id), "%s", ch->jobs[k].job);
                jw_map_put(&rt->jobs, j->id, j);
            }
            grow(&j->ch, &j->cap, j->n + 1, sizeof(*j->ch));
            j->ch[j->n++] = ch;
        }
    }
    watch_expiry(ch);
    if (!ch->answered)
        answer_ok(ch);
    send_initial_rows(ch);
    json_decref(ch->docs);
    ch->docs = NULL;
}

/*
 * A channel that joined without a user got a token, but it may not see what
 * its filters name (or the token ran out, or the database failed): it ends
 * with the reason a join with that token would have got. A failed read is
 * worth another try: phx_error makes supabase-js join again, with the token.
 */
static void refuse_upgrade(channel *ch)
{
    rconn *c = ch->c;

    jw_log_info("realtime conn=%" PRIu64 " access_token for %s refused: %s", c->base.id, ch->topic,
                ch->refusal);
    if (ch->retry) {
        ch->errored = true;
        c->rt->stats.channel_errors++;
        send_phx(c, ch->join_ref, ch->join_ref, ch->topic, "phx_error", json_object());
        return;
    }
    send_system(ch, "error", "system", ch->refusal);
    close_channel(ch);
}

/*
 * Every owner is known (or a read failed): answer the join, or start the
 * delivery of a channel that joined without a user and has one now. Nothing
 * is sent for a token that ran out meanwhile.
 */
static void finish_join(channel *ch)
{
    rconn *c = ch->c;

    if (ch->pending)
        return;
    if (!ch->refusal[0] && token_expired(&ch->who, jw_now_us())) {
        char ts[40];

        jw_format_ts(ch->who.expires_at * 1000000, ts, sizeof(ts));
        snprintf(ch->refusal, sizeof(ch->refusal), "invalid access_token: token expired at %s", ts);
    }
    if (ch->refusal[0] && ch->answered) {
        refuse_upgrade(ch);
        return;
    }
    if (ch->refusal[0]) {
        c->rt->stats.joins_refused++;
        jw_log_info("realtime conn=%" PRIu64 " join of %s refused: %s", c->base.id, ch->topic,
                    ch->refusal);
        send_phx(c, ch->join_ref, ch->join_ref_v, ch->topic, "phx_reply",
                 json_pack("{s:s, s:{s:s}}", "status", "error", "response", "reason", ch->refusal));
        remove_channel(ch);
        return;
    }
    if (ch->awaiting) { /* SUBSCRIBED, and nothing until an access_token brings a user */
        answer_ok(ch);
        if (!c->nudged)
            lws_sul_schedule(lws_get_context(c->base.wsi), 0, &ch->sul, nudge, AWAIT_TOKEN_US);
    } else {
        go_live(ch);
    }
}

static void refuse_job(channel *ch, const char *job)
{
    if (!ch->refusal[0])
        snprintf(ch->refusal, sizeof(ch->refusal),
                 "no job %s, or it is not yours: jobwire serves a user only their own jobs", job);
}

static channel *find_serial(rconn *c, uint64_t serial)
{
    for (size_t i = 0; i < c->nchans; i++)
        if (c->chans[i]->serial == serial)
            return c->chans[i];
    return NULL;
}

void jw_rt_on_read(jw_rt *rt, jw_read *r)
{
    rt_op *op = r->user;
    jw_wsconn *b = jw_wsconn_find(&rt->conns, op->conn_key);
    rconn *c = b ? rconn_of(b) : NULL;
    channel *ch;
    json_t *doc = NULL;
    const char *owner;

    if (c)
        forget_read(c, r);
    ch = c ? find_serial(c, op->serial) : NULL;
    if (!ch || ch->registered || c->base.closing || r->status == JW_ECANCELED)
        goto out; /* gone, or not the join this read was for */
    ch->pending--;
    if (r->status == 0)
        doc = json_loads(r->result, 0, NULL);
    owner = json_string_value(json_object_get(json_object_get(doc, "job"), "user_id"));
    if (r->status != 0 && r->status != JW_ENOTFOUND) {
        if (!ch->refusal[0]) {
            snprintf(ch->refusal, sizeof(ch->refusal), "the database is unavailable; try again");
            ch->retry = true;
        }
    } else if (!owner || !jw_principal_may_access(&ch->who, owner)) {
        refuse_job(ch, op->job);
    } else {
        for (size_t k = 0; k < ch->njobs; k++)
            if (strcmp(ch->jobs[k].job, op->job) == 0)
                snprintf(ch->jobs[k].owner, sizeof(ch->jobs[k].owner), "%s", owner);
        if (ch->docs)
            json_object_set(ch->docs, op->job, doc);
    }
    json_decref(doc);
    finish_join(ch);
out:
    free(op);
    jw_read_free(r);
}

static void add_job(channel *ch, const char *job)
{
    for (size_t k = 0; k < ch->njobs; k++)
        if (strcmp(ch->jobs[k].job, job) == 0)
            return;
    if (ch->njobs == MAX_JOBS) {
        snprintf(ch->refusal, sizeof(ch->refusal),
                 "the filters of one channel may name at most %d jobs", MAX_JOBS);
        return;
    }
    ch->jobs = jw_xrealloc(ch->jobs, (ch->njobs + 1) * sizeof(*ch->jobs));
    memset(&ch->jobs[ch->njobs], 0, sizeof(*ch->jobs));
    snprintf(ch->jobs[ch->njobs++].job, JW_UUID_LEN + 1, "%s", job);
}

/*
 * The jobs a binding's filter pins it to: an eq or in condition on the
 * table's job column (job_runs.id, *.job_run_id). A binding without one
 * watches every job its principal may see.
 */
static void pin_jobs(channel *ch, const binding *b)
{
    const jw_rt_cond *pin = NULL;

    for (size_t i = 0; b->table >= 0 && i < b->filter.n && !pin; i++) {
        const jw_rt_cond *cnd = &b->filter.conds[i];

        if (strcmp(cnd->column->name, jw_rt_tables[b->table].job_column) == 0 &&
            (cnd->op == JW_RT_EQ || cnd->op == JW_RT_IN))
            pin = cnd;
    }
    if (!pin) {
        ch->wildcard = true;
        return;
    }
    for (size_t i = 0; i < pin->nvalues; i++)
        add_job(ch, pin->values[i]);
}

/* Parses one postgres_changes entry into b and its echo; NULL or the refusal. */
static const char *parse_binding(jw_rt *rt, json_t *in, binding *b, json_t **echo, char *err,
                                 size_t errlen)
{
    json_t *ev = json_object_get(in, "event"), *schema = json_object_get(in, "schema"),
           *table = json_object_get(in, "table"), *filter = json_object_get(in, "filter"),
           *initial = json_object_get(in, "jobwire_initial_rows");
    const char *e;

    memset(b, 0, sizeof(*b));
    b->table = -1;
    if (!json_is_object(in))
        return "each postgres_changes entry must be an object";
    if (!json_is_string(ev))
        return "postgres_changes needs an event: *, INSERT, UPDATE or DELETE";
    e = json_string_value(ev);
    if (strcmp(e, "*") == 0)
        b->events = EV_ALL;
    else if (strcasecmp(e, "INSERT") == 0)
        b->events = EV_INSERT;
    else if (strcasecmp(e, "UPDATE") == 0)
        b->events = EV_UPDATE;
    else if (strcasecmp(e, "DELETE") == 0)
        b->events = EV_DELETE;
    else
        return "postgres_changes event must be *, INSERT, UPDATE or DELETE";
    if (schema && !json_is_null(schema) &&
        !(json_is_string(schema) && strcmp(json_string_value(schema), "public") == 0))
        return "jobwire serves the schema public only";
    if (table && !json_is_null(table)) {
        if (!json_is_string(table) || (b->table = jw_rt_table_find(json_string_value(table))) < 0)
            return "jobwire serves the tables job_runs, job_steps and otp_requests";
    }
    if (filter && !json_is_null(filter)) {
        if (!json_is_string(filter))
            return "filter must be a string";
        if (b->table < 0)
            return "a filter needs a table";
        if (jw_rt_filter_parse(&jw_rt_tables[b->table], json_string_value(filter), &b->filter, err,
                               errlen) != 0)
            return err;
    }
    if (initial && !json_is_boolean(initial))
        return "jobwire_initial_rows must be true or false";
    b->initial = json_is_true(initial);
    b->id = ++rt->next_binding;
    /* The reply must match the request by index: echo what came, omit what did not. */
    *echo = json_pack("{s:O, s:I}", "event", ev, "id", (json_int_t)b->id);
    if (schema && !json_is_null(schema))
        json_object_set(*echo, "schema", schema);
    if (table && !json_is_null(table))
        json_object_set(*echo, "table", table);
    if (filter && !json_is_null(filter))
        json_object_set(*echo, "filter", filter);
    return NULL;
}

static bool is_apikey(const rconn *c, const char *token)
{
    unsigned char h[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)token, strlen(token), h);
    return CRYPTO_memcmp(h, c->apikey_hash, sizeof(h)) == 0;
}

/*
 * What the apikey grants now. An apikey that is a user's token runs out
 * like an access_token: past its exp (and the leeway) it is refused.
 */
static const char *key_principal(rconn *c, jw_principal *who, char *err, size_t errlen)
{
    if (token_expired(&c->key_who, jw_now_us())) {
        char ts[40];

        jw_format_ts(c->key_who.expires_at * 1000000, ts, sizeof(ts));
        snprintf(err, errlen, "the apikey's token expired at %s", ts);
        who->kind = JW_PRINCIPAL_NONE;
        return err;
    }
    *who = c->key_who;
    return NULL;
}

/*
 * Who a join's (or a refresh's) access_token stands for: a user or the
 * admin, or what the apikey grants when there is none or the app sends the
 * apikey itself (supabase-js does so while signed out), often nobody (the
 * NONE principal). NULL, or the refusal.
 */
static const char *principal_of(rconn *c, json_t *token, jw_principal *who, char *err,
                                size_t errlen)
{
    const char *t;

    if (!token || json_is_null(token))
        return key_principal(c, who, err, errlen);
    if (!json_is_string(token))
        return "access_token must be a string";
    t = json_string_value(token);
    if (jw_auth_token(c->rt->app->auth, t, jw_now_us() / 1000000, who, err, errlen) == 0)
        return NULL;
    if (is_apikey(c, t))
        return key_principal(c, who, err, errlen);
    return err;
}

/*
 * A valid token came: the connection may stay past the auth deadline, and the
 * first user it stands for counts it (--max-ws-per-user). False when that user
 * already holds as many: the connection is closed (4429).
 */
static bool authenticated(rconn *c, const jw_principal *who)
{
    jw_rt *rt = c->rt;

    if (who->kind == JW_PRINCIPAL_USER && !c->user_hold) {
        c->user_hold = jw_limits_ws_hold(rt->app->limits, who->user_id, jw_mono_us());
        if (!c->user_hold) {
            jw_log_info("realtime conn=%" PRIu64 " closed: the user holds --max-ws-per-user (%d) "
                        "connections",
                        c->base.id, rt->app->cfg->max_ws_per_user);
            start_close(c, CLOSE_TOO_MANY, "too many connections for this user");
            return false;
        }
    }
    if (!c->authed) {
        c->authed = true;
        lws_sul_cancel(&c->auth_sul);
    }
    return true;
}

/* Cancels the reads asked for channel serial (every one of c's when 0): nobody waits. */
static void cancel_reads(rconn *c, uint64_t serial)
{
    for (size_t i = 0; i < c->nreads; i++) {
        const rt_op *op = c->reads[i]->user;

        if (!serial || op->serial == serial)
            jw_read_cancel(c->reads[i]);
    }
}

static void forget_read(rconn *c, const jw_read *r)
{
    for (size_t i = 0; i < c->nreads; i++) {
        if (c->reads[i] == r) {
            c->reads[i] = c->reads[--c->nreads];
            return;
        }
    }
}

/* jw_read.done: the store answered one of the endpoint's reads. */
static void read_done(jw_read *r, void *rt)
{
    jw_rt_on_read(rt, r);
}

/*
 * Checks that the jobs the channel's filters name are its principal's: at
 * once for jobs in memory, otherwise with a read from PostgreSQL each
 * (jw_rt_on_read). The caller then calls finish_join.
 */
static void authorize_jobs(channel *ch)
{
    rconn *c = ch->c;
    jw_rt *rt = c->rt;

    size_t need = 0;

    for (size_t k = 0; k < ch->njobs; k++)
        need += !jw_engine_job_owner(rt->app->engine, ch->jobs[k].job);
    if (c->nreads + need > MAX_CONN_READS) {
        snprintf(ch->refusal, sizeof(ch->refusal),
                 "this connection has %zu database reads waiting (at most %d); join again once "
                 "its other joins are answered",
                 c->nreads, MAX_CONN_READS);
        return;
    }
    for (size_t k = 0; k < ch->njobs && !ch->refusal[0]; k++) {
        const char *owner = jw_engine_job_owner(rt->app->engine, ch->jobs[k].job);
        const char *params[1] = {ch->jobs[k].job};
        rt_op *op;
        jw_read *r;
        int rc;

        if (owner) {
            if (!jw_principal_may_access(&ch->who, owner))
                refuse_job(ch, ch->jobs[k].job);
            snprintf(ch->jobs[k].owner, sizeof(ch->jobs[k].owner), "%s", owner);
            continue;
        }
        op = jw_xcalloc(1, sizeof(*op));
        snprintf(op->conn_key, sizeof(op->conn_key), "%s", c->base.key);
        op->serial = ch->serial;
        snprintf(op->job, sizeof(op->job), "%s", ch->jobs[k].job);
        r = jw_read_new(JW_READ_JOB, 1, params);
        r->user = op;
        r->done = read_done;
        r->done_arg = rt;
        rc = jw_store_read(rt->app->store, r);
        if (rc != 0) {
            jw_read_free(r);
            free(op);
            snprintf(ch->refusal, sizeof(ch->refusal), "%s",
                     rc == JW_ELIMIT ? "too many database reads are queued; join again later"
                                     : "shutting down");
            ch->retry = rc == JW_ELIMIT;
            break;
        }
        grow(&c->reads, &c->capreads, c->nreads + 1, sizeof(*c->reads));
        c->reads[c->nreads++] = r;
        c->reads_asked++;
        ch->pending++;
    }
}

static void h_join(rconn *c, const jw_rt_msg *m)
{
    jw_rt *rt = c->rt;
    json_t *config = json_object_get(m->payload, "config");
    json_t *changes = json_object_get(config, "postgres_changes"), *entry;
    channel *ch, *old = find_channel(c, m->topic);
    char err[256];
    const char *why;
    size_t i;

    if (old && old->errored) /* the rejoin phx_error asked for */
        remove_channel(old);
    else if (old) /* a join of a joined topic replaces it, as Phoenix does */
        close_channel(old);
    if (c->nchans >= MAX_CHANNELS) {
        snprintf(err, sizeof(err), "at most %zu channels per connection", MAX_CHANNELS);
        reply_error(c, m, err);
        return;
    }
    if (changes && !json_is_null(changes) &&
        (!json_is_array(changes) || json_array_size(changes) > MAX_BINDINGS)) {
        snprintf(err, sizeof(err), "config.postgres_changes must be an array of at most %d",
                 MAX_BINDINGS);
        reply_error(c, m, err);
        return;
    }
    ch = jw_xcalloc(1, sizeof(*ch));
    ch->c = c;
    ch->serial = ++rt->next_serial;
    ch->topic = jw_xstrdup(m->topic);
    {
        json_t *s = json_string(m->topic);

        ch->topic_json = json_dumps(s, JSON_ENCODE_ANY);
        json_decref(s);
    }
    ch->join_ref = json_incref(m->join_ref ? m->join_ref : json_null());
    ch->join_ref_v = json_incref(m->ref ? m->ref : json_null());
    ch->reply = json_array();
    grow(&c->chans, &c->capchans, c->nchans + 1, sizeof(*c->chans));
    c->chans[c->nchans++] = ch;
    rt->stats.channels++;

    why = principal_of(c, json_object_get(m->payload, "access_token"), &ch->who, err, sizeof(err));
    if (why) {
        snprintf(ch->refusal, sizeof(ch->refusal), "invalid access_token: %s", why);
        finish_join(ch);
        return;
    }
    if (ch->who.kind != JW_PRINCIPAL_NONE && !authenticated(c, &ch->who))
        return; /* closing: the channel goes with the connection */
    ch->b = jw_xcalloc(json_array_size(changes) + 1, sizeof(*ch->b));
    json_array_foreach(changes, i, entry)
    {
        binding *b = &ch->b[ch->nb];
        json_t *echo = NULL;

        if ((why = parse_binding(rt, entry, b, &echo, err, sizeof(err)))) {
            jw_rt_filter_release(&b->filter);
            snprintf(ch->refusal, sizeof(ch->refusal), "postgres_changes[%zu]: %s", i, why);
            finish_join(ch);
            return;
        }
        ch->nb++;
        json_array_append_new(ch->reply, echo);
        pin_jobs(ch, b);
        if (b->initial && !ch->docs)
            ch->docs = json_object();
    }
    /*
     * No user yet: supabase-js joins before its accessToken callback has
     * answered and sends the token in an access_token message once joined
     * (h_access_token). Supabase accepts such a join; so does jobwire, with
     * nothing delivered and no job checked until a user's token comes.
     */
    if (ch->nb && ch->who.kind == JW_PRINCIPAL_NONE)
        ch->awaiting = true;
    else
        authorize_jobs(ch);
    finish_join(ch);
}

static void h_leave(rconn *c, channel *ch, const jw_rt_msg *m)
{
    reply(c, m, "ok", json_object());
    close_channel(ch);
}

/*
 * A fresh token for a channel: it must still stand for someone who may see
 * its jobs. A channel that joined without a user starts with the first
 * user's token, checked as a join with it would be (finish_join).
 */
static void h_access_token(rconn *c, channel *ch, const jw_rt_msg *m)
{
    jw_principal who;
    char err[256];
    const char *why =
        principal_of(c, json_object_get(m->payload, "access_token"), &who, err, sizeof(err));

    if (!why && who.kind != JW_PRINCIPAL_NONE && !authenticated(c, &who))
        return;
    if (!why && ch->awaiting) {
        if (who.kind == JW_PRINCIPAL_NONE) /* still signed out: still nothing */
            return;
        ch->awaiting = false;
        ch->who = who;
        authorize_jobs(ch);
        finish_join(ch);
        return;
    }
    if (!why && ch->nb && who.kind == JW_PRINCIPAL_NONE)
        why = "signed out";
    for (size_t k = 0; !why && k < ch->njobs; k++)
        if (ch->jobs[k].owner[0] && !jw_principal_may_access(&who, ch->jobs[k].owner))
            why = "the new token is another user's";
    if (why) {
        char text[320];

        snprintf(text, sizeof(text), "Invalid access_token: %s", why);
        send_system(ch, "error", "system", text);
        close_channel(ch);
        return;
    }
    ch->who = who;
    if (ch->live)
        watch_expiry(ch);
}

static void handle_message(rconn *c, const char *data, size_t len)
{
    char err[256];
    jw_rt_msg m;
    const char *why = jw_rt_parse(data, len, c->array, &m, err, sizeof(err));
    channel *ch;

    if (why) {
        /* Nothing to address an answer to: Phoenix closes such a socket too. */
        jw_log_info("realtime conn=%" PRIu64 " closed: %s (%s)", c->base.id, why, err);
        start_close(c, LWS_CLOSE_STATUS_INVALID_PAYLOAD, why);
        goto out;
    }
    if (strcmp(m.topic, "phoenix") == 0) {
        if (strcmp(m.event, "heartbeat") == 0)
            reply(c, &m, "ok", json_object());
        else
            reply_error(c, &m, "unknown event on the phoenix topic");
        goto out;
    }
    if (strcmp(m.event, "phx_join") == 0) {
        h_join(c, &m);
        goto out;
    }
    if (!(ch = find_channel(c, m.topic))) {
        reply_error(c, &m, "unmatched topic");
        goto out;
    }
    if (strcmp(m.event, "phx_leave") == 0)
        h_leave(c, ch, &m);
    else if (strcmp(m.event, "access_token") == 0)
        h_access_token(c, ch, &m);
    else if (strcmp(m.event, "broadcast") == 0 || strcmp(m.event, "presence") == 0)
        reply_error(c, &m, "jobwire serves postgres_changes only: no broadcast, no presence");
    else
        reply_error(c, &m, "unknown event");
out:
    jw_wipe_json_string(json_object_get(m.payload, "access_token"));
    jw_rt_msg_release(&m);
}

/* ---- lws glue --------------------------------------------------------------------- */

int jw_rt_accept_upgrade(jw_rt *rt, struct lws *wsi)
{
    char uri[sizeof(JW_RT_PATH) + 1], buf[JW_AUTH_MAX_TOKEN + 16];
    const char *vsn, *key;

    if (!rt || lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) < 0 ||
        strcmp(uri, JW_RT_PATH) != 0)
        return -1;
    /* supabase-js always sends one; Supabase refuses a connection without it. */
    key = lws_get_urlarg_by_name(wsi, "apikey=", buf, sizeof(buf));
    if (!key || !*key) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return -1;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    vsn = lws_get_urlarg_by_name(wsi, "vsn=", buf, sizeof(buf));
    if (vsn && strcmp(vsn, "1.0.0") != 0 && strcmp(vsn, "2.0.0") != 0)
        return -1;
    if (!jw_ws_origin_allowed(wsi, rt->app->cfg)) {
        jw_log_info("realtime: refused an upgrade from a foreign Origin");
        return -1;
    }
    return 0;
}

/*
 * The auth deadline: a connection that has presented no valid token (its
 * apikey, or a phx_join's or access_token message's access_token) within
 * --ws-auth-timeout of the upgrade is closed, heartbeats or not. Otherwise
 * anyone could hold sockets until --max-connections turns users away.
 */
static void on_auth_deadline(lws_sorted_usec_list_t *sul)
{
    rconn *c = lws_container_of(sul, rconn, auth_sul);

    if (c->authed)
        return;
    jw_log_info("realtime conn=%" PRIu64 " closed: no valid token within %d s", c->base.id,
                c->rt->app->cfg->ws_auth_timeout_s);
    start_close(c, CLOSE_AUTH_TIMEOUT, "no valid access_token in time");
}

static void on_established(struct lws *wsi, jw_rt *rt, void **slot)
{
    rconn *c = jw_xcalloc(1, sizeof(*c));
    char buf[JW_AUTH_MAX_TOKEN + 16], err[256];
    const char *key, *vsn;

    jw_wsconn_open(&rt->conns, &c->base, wsi);
    c->rt = rt;
    vsn = lws_get_urlarg_by_name(wsi, "vsn=", buf, sizeof(buf));
    c->array = vsn && strcmp(vsn, "2.0.0") == 0;
    key = lws_get_urlarg_by_name(wsi, "apikey=", buf, sizeof(buf));
    if (key) {
        SHA256((const unsigned char *)key, strlen(key), c->apikey_hash);
        /* The apikey grants what it is: the admin key, a user's token, or nothing. */
        if (jw_auth_token(rt->app->auth, key, jw_now_us() / 1000000, &c->key_who, err,
                          sizeof(err)) != 0)
            c->key_who.kind = JW_PRINCIPAL_NONE;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    *slot = c;
    jw_ws_budget_init(&c->rx_budget, wsi, rt->app->cfg->ws_message_rate);
    if (c->key_who.kind != JW_PRINCIPAL_NONE)
        authenticated(c, &c->key_who);
    else
        lws_sul_schedule(lws_get_context(wsi), 0, &c->auth_sul, on_auth_deadline, AUTH_DEADLINE_US);
}

static void on_closed(rconn *c)
{
    jw_rt *rt = c->rt;

    lws_sul_cancel(&c->auth_sul);
    jw_ws_budget_release(&c->rx_budget);
    while (c->nchans)
        remove_channel(c->chans[c->nchans - 1]);
    free(c->chans);
    cancel_reads(c, 0);
    free(c->reads);
    jw_limits_release(rt->app->limits, c->user_hold);
    jw_ws_rx_done(&c->rx);
    jw_wsconn_closed(&c->base);
    free(c);
}

/* A client message, once whole (ws_rx.h gathers it, bounded). */
static int on_receive(rconn *c, struct lws *wsi, const void *in, size_t len)
{
    jw_rt *rt = c->rt;
    const char *data;
    size_t n;

    switch (jw_ws_rx_feed(&c->rx, wsi, in, len, MAX_CLIENT_FRAME, &data, &n)) {
    case JW_WS_RX_MORE: return 0;
    case JW_WS_RX_TOO_BIG:
        start_close(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "frame too large");
        break;
    case JW_WS_RX_BINARY:
        start_close(c, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, "text frames only");
        break;
    case JW_WS_RX_TEXT:
        if (!c->base.closing)
            handle_message(c, data, n);
        OPENSSL_cleanse((void *)data, n); /* it may hold an access token */
        /* A join naming finished jobs costs a read each: a rejoin loop over 100
         * of them is read as slowly as 100 messages would be. */
        if (jw_ws_budget_spend(&c->rx_budget, wsi, rt->app->cfg->ws_message_rate,
                               1.0 + (double)c->reads_asked))
            rt->stats.rx_throttled++;
        c->reads_asked = 0;
        break;
    }
    jw_ws_rx_done(&c->rx);
    return 0;
}

int jw_rt_callback(jw_rt *rt, struct lws *wsi, enum lws_callback_reasons reason, void **slot,
                   void *in, size_t len)
{
    rconn *c = slot ? *slot : NULL;

    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        if (!slot || !rt)
            return -1;
        on_established(wsi, rt, slot);
        return 0;
    case LWS_CALLBACK_RECEIVE: return c ? on_receive(c, wsi, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE: return c ? jw_wsconn_on_writable(&c->base) : 0;
    case LWS_CALLBACK_CLOSED:
        if (c) {
            on_closed(c);
            *slot = NULL;
        }
        return 0;
    default: return 0;
    }
}

/* ---- life cycle ------------------------------------------------------------------- */

jw_rt *jw_rt_new(const jw_services *app)
{
    jw_rt *rt = jw_xcalloc(1, sizeof(*rt));

    rt->app = app;
    jw_map_init(&rt->jobs);
    jw_wsconns_init(&rt->conns, "realtime", false, (size_t)app->cfg->ws_max_queue);
    rt->conns.shed = overflow;
    return rt;
}

void jw_rt_hold(jw_rt *rt)
{
    jw_wsconns_hold(&rt->conns);
}

void jw_rt_flush(jw_rt *rt)
{
    jw_wsconns_flush(&rt->conns);
}

size_t jw_rt_close_all(jw_rt *rt)
{
    return jw_wsconns_close_all(&rt->conns, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
}

void jw_rt_get_stats(const jw_rt *rt, jw_rt_stats *out)
{
    const jw_wsconns_stats *cs = &rt->conns.stats;

    *out = rt->stats;
    out->connections = cs->connections;
    out->events_sent = cs->counted;
    out->bytes_sent = cs->bytes;
    out->slow_closes = cs->slow_closes;
}

void jw_rt_free(jw_rt *rt)
{
    const char *k;
    void *v;

    if (!rt)
        return;
    for (size_t it = 0; jw_map_next(&rt->jobs, &it, &k, &v);) {
        free(((rt_job *)v)->ch);
        free(v);
    }
    jw_map_release(&rt->jobs);
    jw_wsconns_release(&rt->conns);
    free(rt->wild);
    free(rt);
}
