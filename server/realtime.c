/*
 * realtime.c - the Supabase Realtime endpoint (see realtime.h and
 * docs/supabase-migration.md): output, client messages, lws glue, life
 * cycle. Channels and events are in rt_events.c, joins in rt_join.c.
 */
#include "rt_internal.h"

#include "fanout.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rt_start_close(rconn *c, int code, const char *reason)
{
    jw_wsconn_close(&c->base, code, reason);
}

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
                c->base.id, (size_t)c->rt->sv->cfg->ws_max_queue);
    for (size_t i = 0; i < c->nchans; i++) {
        channel *ch = c->chans[i];

        if (!ch->live)
            continue;
        ch->live = false;
        ch->errored = true;
        c->rt->stats.channel_errors++;
        rt_send_phx(c, ch->join_ref, ch->join_ref, ch->topic, "phx_error", json_object());
    }
}

/*
 * Queues one message within the connection's bound: an event that does not
 * fit sheds the queued events (overflow) and is dropped with them; a reply
 * makes room the same way (jw_wsconn_make_room).
 */
void rt_push_parts(rconn *c, jw_wsmsg *pre, jw_wsmsg *m, bool event)
{
    size_t len = (pre ? pre->len : 0) + m->len;

    if (c->base.closing)
        return;
    if (event && c->base.qcounted && !jw_wsconn_fits(&c->base, len)) {
        overflow(&c->base); /* its channel was just told to join again */
        return;
    }
    if (!jw_wsconn_make_room(&c->base, len))
        return;
    jw_wsconn_push(&c->base, pre, m, NULL, event);
}

void rt_push(rconn *c, const char *text, size_t len, bool event)
{
    jw_wsmsg *m = jw_wsmsg_new(text, len);

    rt_push_parts(c, NULL, m, event);
    jw_wsmsg_unref(m);
}

/* Sends [join_ref, ref, topic, event, payload] (or the vsn 1 object); takes payload. */
void rt_send_phx(rconn *c, json_t *join_ref, json_t *ref, const char *topic, const char *event,
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
    rt_push(c, text, strlen(text), false);
    free(text);
    json_decref(doc);
}

void rt_reply(rconn *c, const jw_rt_msg *m, const char *status, json_t *response)
{
    rt_send_phx(c, m->join_ref, m->ref, m->topic, "phx_reply",
                json_pack("{s:s, s:o}", "status", status, "response", response));
}

void rt_reply_error(rconn *c, const jw_rt_msg *m, const char *reason)
{
    rt_reply(c, m, "error", json_pack("{s:s}", "reason", reason));
}

static const char *channel_name(const char *topic)
{
    return strncmp(topic, "realtime:", 9) == 0 ? topic + 9 : topic;
}

void rt_send_system(channel *ch, const char *status, const char *extension, const char *text)
{
    rt_send_phx(ch->c, ch->join_ref, NULL, ch->topic, "system",
                json_pack("{s:s, s:s, s:s, s:s}", "message", text, "status", status, "extension",
                          extension, "channel", channel_name(ch->topic)));
}

static void h_leave(rconn *c, channel *ch, const jw_rt_msg *m)
{
    rt_reply(c, m, "ok", json_object());
    rt_close_channel(ch);
}

/*
 * A fresh token for a channel: it must still stand for someone who may see
 * its jobs. A channel that joined without a user starts with the first
 * user's token, checked as a join with it would be (finish_join).
 */
void rt_h_access_token(rconn *c, channel *ch, const jw_rt_msg *m)
{
    jw_principal who;
    char err[256];
    const char *why =
        rt_principal_of(c, json_object_get(m->payload, "access_token"), &who, err, sizeof(err));

    if (!why && who.kind != JW_PRINCIPAL_NONE && !rt_authenticated(c, &who))
        return;
    if (!why && ch->awaiting) {
        if (who.kind == JW_PRINCIPAL_NONE) /* still signed out: still nothing */
            return;
        ch->awaiting = false;
        ch->who = who;
        rt_authorize_jobs(ch);
        rt_finish_join(ch);
        return;
    }
    if (!why && ch->nb && who.kind == JW_PRINCIPAL_NONE)
        why = "signed out";
    /* Also for a channel that names no job: what it sees is its user's. */
    if (!why && ch->who.kind == JW_PRINCIPAL_USER && who.kind == JW_PRINCIPAL_USER &&
        strcmp(ch->who.user_id, who.user_id) != 0)
        why = "the new token is another user's";
    for (size_t k = 0; !why && k < ch->njobs; k++)
        if (ch->jobs[k].owner[0] && !jw_principal_may_access(&who, ch->jobs[k].owner))
            why = "the new token is another user's";
    if (why) {
        char text[320];

        snprintf(text, sizeof(text), "Invalid access_token: %s", why);
        rt_send_system(ch, "error", "system", text);
        rt_close_channel(ch);
        return;
    }
    ch->who = who;
    if (ch->live)
        rt_watch_expiry(ch);
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
        rt_start_close(c, LWS_CLOSE_STATUS_INVALID_PAYLOAD, why);
        goto out;
    }
    if (strcmp(m.topic, "phoenix") == 0) {
        if (strcmp(m.event, "heartbeat") == 0)
            rt_reply(c, &m, "ok", json_object());
        else
            rt_reply_error(c, &m, "unknown event on the phoenix topic");
        goto out;
    }
    if (strcmp(m.event, "phx_join") == 0) {
        rt_h_join(c, &m);
        goto out;
    }
    if (!(ch = rt_find_channel(c, m.topic))) {
        rt_reply_error(c, &m, "unmatched topic");
        goto out;
    }
    if (strcmp(m.event, "phx_leave") == 0)
        h_leave(c, ch, &m);
    else if (strcmp(m.event, "access_token") == 0)
        rt_h_access_token(c, ch, &m);
    else if (strcmp(m.event, "broadcast") == 0 || strcmp(m.event, "presence") == 0)
        rt_reply_error(c, &m, "jobwire serves postgres_changes only: no broadcast, no presence");
    else
        rt_reply_error(c, &m, "unknown event");
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
    if (!jw_ws_origin_allowed(wsi, rt->sv->cfg, "realtime"))
        return -1;
    return 0;
}

/*
 * The auth deadline: a connection that has presented no valid token (its
 * apikey, or a phx_join's or access_token message's access_token) within
 * --ws-auth-timeout of the upgrade is closed, heartbeats or not. Otherwise
 * anyone could hold sockets until --max-connections turns users away.
 */
static void on_auth_deadline(jw_timer *t, void *arg)
{
    rconn *c = arg;

    (void)t;
    if (c->authed)
        return;
    jw_log_info("realtime conn=%" PRIu64 " closed: no valid token within %d s", c->base.id,
                c->rt->sv->cfg->ws_auth_timeout_s);
    rt_start_close(c, CLOSE_AUTH_TIMEOUT, "no valid access_token in time");
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
        if (jw_auth_token(rt->sv->auth, key, jw_now_us() / 1000000, &c->key_who, err,
                          sizeof(err)) != 0)
            c->key_who.kind = JW_PRINCIPAL_NONE;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    *slot = c;
    jw_ws_budget_init(&c->rx_budget, wsi, rt->sv->cfg->ws_message_rate);
    if (c->key_who.kind != JW_PRINCIPAL_NONE)
        rt_authenticated(c, &c->key_who);
    else
        jw_timers_arm(rt->sv->mono_timers, &c->auth_timer, jw_mono_us() + AUTH_DEADLINE_US,
                      on_auth_deadline, c);
}

static void on_closed(rconn *c)
{
    jw_rt *rt = c->rt;

    jw_timers_cancel(rt->sv->mono_timers, &c->auth_timer);
    jw_ws_budget_release(&c->rx_budget);
    while (c->nchans)
        rt_remove_channel(c->chans[c->nchans - 1]);
    free(c->chans);
    rt_cancel_reads(c, 0);
    free(c->reads);
    jw_limits_release(rt->sv->limits, c->user_hold);
    jw_ws_rx_done(&c->rx);
    jw_wsconn_closed(&c->base);
    free(c);
}

/*
 * A client message, once whole (ws_rx.h gathers it, bounded). Its replies
 * leave as a publish round's do, at once when the socket is free, rather
 * than after a WRITEABLE callback (two event-loop updates per reply).
 */
static int on_receive(rconn *c, struct lws *wsi, const void *in, size_t len)
{
    jw_rt *rt = c->rt;
    const char *data;
    size_t n;
    jw_ws_rx_result r = jw_ws_rx_feed(&c->rx, wsi, in, len, MAX_CLIENT_FRAME, &data, &n);

    if (r == JW_WS_RX_MORE)
        return 0;
    jw_wsconns_hold(&rt->conns);
    switch (r) {
    case JW_WS_RX_MORE: break;
    case JW_WS_RX_TOO_BIG:
        rt_start_close(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "frame too large");
        break;
    case JW_WS_RX_BINARY:
        rt_start_close(c, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, "text frames only");
        break;
    case JW_WS_RX_TEXT:
        if (!c->base.closing)
            handle_message(c, data, n);
        OPENSSL_cleanse((void *)data, n); /* it may hold an access token */
        /* A join naming finished jobs costs a read each: a rejoin loop over 100
         * of them is read as slowly as 100 messages would be. */
        if (jw_ws_budget_spend(&c->rx_budget, wsi, rt->sv->cfg->ws_message_rate,
                               1.0 + (double)c->reads_asked))
            rt->stats.rx_throttled++;
        c->reads_asked = 0;
        break;
    }
    jw_ws_rx_done(&c->rx);
    jw_wsconns_flush(&rt->conns);
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
    case LWS_CALLBACK_RECEIVE:
        if (!c)
            return -1;
        jw_sv_catch_up(c->rt->sv);
        jw_wsconn_heard(&c->base);
        return on_receive(c, wsi, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        if (c)
            jw_wsconn_heard(&c->base);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!c)
            return 0;
        jw_sv_catch_up(c->rt->sv);
        return jw_wsconn_on_writable(&c->base);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c)
            jw_wsconn_peer_closed(&c->base);
        return 0;
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

jw_rt *jw_rt_new(const jw_services *sv)
{
    jw_rt *rt = jw_xcalloc(1, sizeof(*rt));

    rt->sv = sv;
    jw_map_init(&rt->jobs);
    jw_wsconns_init(&rt->conns, "realtime", false, (size_t)sv->cfg->ws_max_queue);
    jw_wsconns_set_liveness(&rt->conns, sv->mono_timers,
                            (int64_t)sv->cfg->ws_ping_interval_s * 1000000);
    rt->conns.shed = overflow;
    jw_wsconns_set_pool(&rt->conns, sv->fanout, JW_FANOUT_MIN_WRITES);
    if (sv->wsmem)
        jw_wsconns_set_mem(&rt->conns, sv->wsmem);
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
    out->direct_writes = cs->direct_writes;
    out->parallel_rounds = cs->parallel_rounds;
    out->pings = cs->pings;
    out->idle_drops = cs->idle_drops;
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
