/*
 * rt_events.c - the Supabase endpoint's channels (lists, token expiry, the
 * nudge of a channel waiting for a token) and its events: a committed delta
 * becomes postgres_changes for every live channel whose bindings match, its
 * data part encoded once and shared.
 */
#include "rt_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- channels --------------------------------------------------------------------- */

channel *rt_find_channel(rconn *c, const char *topic)
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
    jw_wsmsg_unref(ch->pre);
    free(ch);
}

/* Takes ch out of its connection and the hub, and frees it. */
void rt_remove_channel(channel *ch)
{
    rconn *c = ch->c;
    jw_rt *rt = c->rt;

    if (ch->pending)
        rt_cancel_reads(c, ch->serial); /* a rejoin, a leave or a close: nobody waits for them */
    jw_timers_cancel(rt->sv->timers, &ch->expiry);
    jw_timers_cancel(rt->sv->mono_timers, &ch->nudge);
    unlink_live(rt, ch);
    for (size_t i = 0; i < c->nchans; i++) {
        if (c->chans[i] == ch) {
            c->chans[i] = c->chans[--c->nchans];
            break;
        }
    }
    rt->stats.channels--;
    c->filter_values -= ch->nvalues;
    free_channel(ch);
}

/* Tells the client the channel is gone (phx_close), then removes it. */
void rt_close_channel(channel *ch)
{
    rt_send_phx(ch->c, ch->join_ref, ch->join_ref, ch->topic, "phx_close", json_object());
    rt_remove_channel(ch);
}

/* Whether p's token is past its exp and the leeway, as jw_auth_token would judge it now. */
bool rt_token_expired(const jw_principal *p, int64_t now_us)
{
    return p->kind == JW_PRINCIPAL_USER && p->expires_at &&
           now_us / 1000000 >= p->expires_at + JW_AUTH_LEEWAY_S;
}

static void on_expiry(jw_timer *t, void *arg)
{
    channel *ch = arg;

    (void)t;
    rt_send_system(ch, "error", "system", "Token has expired");
    rt_close_channel(ch);
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
void rt_nudge(jw_timer *t, void *arg)
{
    channel *ch = arg;
    rconn *c = ch->c;

    (void)t;
    if (!ch->awaiting || ch->errored || c->nudged || c->base.closing)
        return;
    c->nudged = true;
    ch->errored = true;
    c->rt->stats.channel_errors++;
    jw_log_info("realtime conn=%" PRIu64 " %s: no access_token since the join; asking the client "
                "to join again",
                c->base.id, ch->topic);
    rt_send_phx(c, ch->join_ref, ch->join_ref, ch->topic, "phx_error", json_object());
}

/* Arms the channel's timer for its principal's token expiry (with the accepted leeway). */
void rt_watch_expiry(channel *ch)
{
    jw_timers *timers = ch->c->rt->sv->timers;

    if (ch->who.kind == JW_PRINCIPAL_USER && ch->who.expires_at)
        jw_timers_arm(timers, &ch->expiry, (ch->who.expires_at + JW_AUTH_LEEWAY_S) * 1000000,
                      on_expiry, ch);
    else
        jw_timers_cancel(timers, &ch->expiry);
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

/*
 * The head of ch's events, up to "data": topic and binding ids. Shared by
 * its queued events while the ids stay the same (a filter can change them
 * from one event to the next).
 */
static jw_wsmsg *event_head(channel *ch, const int64_t *ids, size_t nids)
{
    jw_buf b;

    if (ch->pre && ch->pre_n == nids && memcmp(ch->pre_ids, ids, nids * sizeof(*ids)) == 0)
        return ch->pre;
    jw_buf_init(&b, strlen(ch->topic_json) + nids * 24 + 96);
    if (ch->c->array)
        jw_buf_addf(&b, "[null,null,%s,\"postgres_changes\",{\"ids\":[", ch->topic_json);
    else
        jw_buf_addf(&b,
                    "{\"topic\":%s,\"event\":\"postgres_changes\",\"ref\":null,"
                    "\"payload\":{\"ids\":[",
                    ch->topic_json);
    for (size_t i = 0; i < nids; i++)
        jw_buf_addf(&b, "%s%" PRId64, i ? "," : "", ids[i]);
    jw_buf_adds(&b, "],\"data\":");
    jw_wsmsg_unref(ch->pre);
    ch->pre = jw_wsmsg_new(b.data, b.len);
    memcpy(ch->pre_ids, ids, nids * sizeof(*ids));
    ch->pre_n = nids;
    jw_buf_release(&b);
    return ch->pre;
}

/*
 * An event's tail: the data part and the message's end in one of the two
 * shapes (tails[0] vsn 1's object, tails[1] vsn 2's array), encoded on first
 * need and shared by every channel the event goes to.
 */
typedef struct event_tails {
    const jw_buf *data;
    jw_wsmsg *m[2];
} event_tails;

static void tails_release(event_tails *t)
{
    jw_wsmsg_unref(t->m[0]);
    jw_wsmsg_unref(t->m[1]);
}

/* Queues the event for one channel: its own head, the shared tail. */
static void send_event(channel *ch, const int64_t *ids, size_t nids, event_tails *t)
{
    rconn *c = ch->c;
    jw_wsmsg **tail = &t->m[c->array];

    if (!ch->live) /* told to join again: nothing until it has */
        return;
    if (!*tail) {
        jw_buf b;

        jw_buf_init(&b, t->data->len + 2);
        jw_buf_add(&b, t->data->data, t->data->len);
        jw_buf_adds(&b, c->array ? "}]" : "}}");
        *tail = jw_wsmsg_new(b.data, b.len);
        jw_buf_release(&b);
    }
    rt_push_parts(c, event_head(ch, ids, nids), *tail, true);
}

typedef struct delta_ctx {
    jw_delta *d;
    const char *owner;
    int64_t now_us;
    json_t *row; /* parsed on first need */
    bool bad_row;
    jw_buf data; /* encoded on first need */
    event_tails tails;
} delta_ctx;

static void deliver(channel *ch, delta_ctx *x)
{
    int64_t ids[MAX_BINDINGS];
    size_t n = 0;

    /* An expired token gets nothing, also in the moment before its timer fires. */
    if (!ch->live || ch->c->base.closing || !jw_principal_may_access(&ch->who, x->owner) ||
        rt_token_expired(&ch->who, x->now_us))
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
    send_event(ch, ids, n, &x->tails);
}

bool jw_rt_watching(const jw_rt *rt, const char *job_id)
{
    return rt->jobs.count && jw_map_get(&rt->jobs, job_id);
}

bool jw_rt_wildcards(const jw_rt *rt, const char *owner)
{
    for (size_t i = 0; owner && i < rt->nwild; i++)
        if (rt->wild[i]->live && jw_principal_may_access(&rt->wild[i]->who, owner))
            return true;
    return !owner && rt->nwild > 0;
}

void jw_rt_publish(jw_rt *rt, jw_delta *d)
{
    rt_job *j = jw_map_get(&rt->jobs, d->job_id);
    delta_ctx x = {.d = d, .tails = {.data = &x.data}};

    if ((!j && !rt->nwild) || (int)d->table >= JW_RT_TABLES)
        return;
    x.now_us = jw_now_us();
    x.owner = jw_sv_job_publish_owner(rt->sv, d->job_id);
    jw_buf_init(&x.data, 0);
    for (size_t i = 0; j && i < j->n; i++)
        deliver(j->ch[i], &x);
    for (size_t i = 0; i < rt->nwild; i++)
        deliver(rt->wild[i], &x);
    json_decref(x.row);
    tails_release(&x.tails);
    jw_buf_release(&x.data);
}

/* The jobwire extension: the current rows a binding pinned to jobs matches. */
void rt_send_initial_rows(channel *ch)
{
    jw_rt *rt = ch->c->rt;

    for (size_t i = 0; i < ch->nb; i++) {
        const binding *b = &ch->b[i];
        const char *type = b->events == EV_UPDATE ? "UPDATE" : "INSERT";

        if (!b->initial)
            continue;
        for (size_t k = 0; k < ch->njobs; k++) {
            json_t *state = jw_sv_job_snapshot(rt->sv, ch->jobs[k].job);

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
                    event_tails tails = {.data = &data};

                    if (!id || !jw_rt_filter_match(&b->filter, row))
                        continue;
                    text = json_dumps(row, JSON_COMPACT);
                    jw_buf_init(&data, 0);
                    encode_data(&data, &jw_rt_tables[t], type, jw_now_us(), text, strlen(text), id,
                                0);
                    send_event(ch, &b->id, 1, &tails);
                    tails_release(&tails);
                    jw_buf_release(&data);
                    free(text);
                }
                json_decref(rows);
            }
            json_decref(state);
        }
    }
}
