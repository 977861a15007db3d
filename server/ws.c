/*
 * ws.c - jobwire.v1 over WebSocket (see ws.h and docs/protocol.md): client
 * messages, authentication, the lws protocol and the hub's life cycle. The
 * hub's jobs and fan-out are in ws_hub.c, subscribe answers in ws_subscribe.c.
 */
#include "ws_internal.h"

#include "fanout.h"
#include "inbox.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- queues and frames ---------------------------------------------------------- */

static void start_close(conn *c, int code, const char *reason)
{
    jw_wsconn_close(&c->base, code, reason);
}

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

void ws_send_error(conn *c, json_t *ref, const char *code, const char *fmt, ...)
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

conn *ws_find_conn(jw_ws *hub, const char *key)
{
    jw_wsconn *b = jw_wsconn_find(&hub->conns, key);

    return b ? conn_of(b) : NULL;
}

void ws_send_ack(conn *c, json_t *ref)
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

static void on_expiry(jw_timer *t, void *arg);

static bool authenticate(conn *c, const char *token, json_t *ref)
{
    jw_ws *hub = c->hub;
    char err[256];

    if (jw_auth_token(hub->sv->auth, token, jw_now_us() / 1000000, &c->who, err, sizeof(err)) !=
        0) {
        ws_send_error(c, ref, "unauthorized", "%s", err);
        start_close(c, CLOSE_AUTH, "unauthorized");
        return false;
    }
    if (c->who.kind == JW_PRINCIPAL_USER && !c->user_hold &&
        !(c->user_hold = jw_limits_ws_hold(hub->sv->limits, c->who.user_id, jw_mono_us()))) {
        ws_send_error(c, ref, "too_many_connections",
                      "a user may hold at most %d WebSocket connections (--max-ws-per-user)",
                      hub->sv->cfg->max_ws_per_user);
        start_close(c, CLOSE_TOO_MANY, "too many connections");
        return false;
    }
    c->authed = true;
    jw_timers_cancel(hub->sv->mono_timers, &c->auth_deadline);
    /* From now on a timer watches the token's expiry. */
    if (c->who.kind == JW_PRINCIPAL_USER && c->who.expires_at) {
        /* The same leeway the token was accepted with (a wall-clock deadline, as exp is). */
        jw_timers_arm(hub->sv->timers, &c->expiry,
                      ((int64_t)c->who.expires_at + JW_AUTH_LEEWAY_S) * 1000000, on_expiry, c);
    } else {
        jw_timers_cancel(hub->sv->timers, &c->expiry);
    }
    hello(c);
    return true;
}

static void on_auth_deadline(jw_timer *t, void *arg)
{
    conn *c = arg;

    (void)t;
    if (!c->authed)
        start_close(c, CLOSE_AUTH_TIMEOUT, "no auth message in time");
}

static void on_expiry(jw_timer *t, void *arg)
{
    conn *c = arg;

    (void)t;
    ws_send_error(c, NULL, "token_expired", "the token expired; reconnect with a fresh one");
    start_close(c, CLOSE_AUTH, "token expired");
}

static bool get_job_id(conn *c, json_t *msgv, json_t *ref, char out[JW_UUID_LEN + 1])
{
    json_t *v = json_object_get(msgv, "job_id");

    if (!v) {
        ws_send_error(c, ref, "bad_message", "job_id is required");
        return false;
    }
    if (!json_is_string(v) || !jw_uuid_valid(json_string_value(v))) {
        ws_send_error(c, ref, "invalid_job_id", "job_id must be a UUID string");
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
            ws_send_error(c, ref, "invalid_since", "since must be an integer >= 0");
            return;
        }
        since = json_integer_value(since_v);
    }
    j = ws_job_get(hub, job, false);
    if (!(j && ws_subscribed(c, j)) && c->nsubs >= MAX_SUBS) {
        ws_send_error(c, ref, "too_many_subscriptions", "at most %zu subscriptions per connection",
                      MAX_SUBS);
        return;
    }
    if (jw_sv_job_owner(hub->sv, job)) {
        ws_subscribe_from_memory(c, job, since, ref);
        return;
    }
    /* Not in memory: finished (before this process, or long enough ago), or unknown. */
    ws_subscribe_from_db(c, ws_add_sub(c, ws_job_get(hub, job, true)), job, since, ref, NULL);
}

static void h_unsubscribe(conn *c, json_t *m, json_t *ref)
{
    char job[JW_UUID_LEN + 1];
    job_entry *j;

    if (!get_job_id(c, m, ref, job))
        return;
    j = ws_job_get(c->hub, job, false);
    if (!j || !ws_remove_sub(c, j)) {
        ws_send_error(c, ref, "not_subscribed", "not subscribed to job %s", job);
        return;
    }
    ws_cancel_reads(c, job); /* a subscribe still waiting on PostgreSQL needs no answer from it */
    ws_send_ack(c, ref);
}

static void on_otp_result(void *arg, const jw_otp_result *r)
{
    ws_op *op = arg;
    conn *c = ws_find_conn(op->hub, op->conn_key);

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
    ws_free_op(op);
}

/* The verdict of an otp.submit forwarded to the job's node (inbox.h). */
static void on_otp_forwarded(void *arg, const jw_inbox_verdict *v)
{
    ws_op *op = arg;
    conn *c;

    if (v->rc == 0) {
        on_otp_result(op, &v->otp);
        return;
    }
    c = ws_find_conn(op->hub, op->conn_key);
    if (c && c->base.closing)
        c = NULL;
    if (c && v->status == 429)
        send_rate_limited(c, op->ref, v->retry_after_s, "%s", v->message);
    else if (c)
        ws_send_error(c, op->ref,
                      v->status == 404   ? "not_found"
                      : v->status == 400 ? "invalid_otp"
                      : v->status == 409 ? "otp_not_waiting"
                      : v->status == 504 ? "timeout"
                                         : "unavailable",
                      "%s", v->message);
    ws_free_op(op);
}

static void h_otp_submit(conn *c, json_t *m, json_t *ref)
{
    json_t *id = json_object_get(m, "otp_request_id"), *value = json_object_get(m, "value");
    char err[256], otp_id[JW_UUID_LEN + 1];
    ws_op *op;
    int rc;

    if (!ref) {
        ws_send_error(c, NULL, "bad_message", "otp.submit needs a ref to answer");
        return;
    }
    if (!json_is_string(id) || !jw_uuid_valid(json_string_value(id))) {
        ws_send_error(c, ref, "bad_message", "otp_request_id must be a UUID string");
        return;
    }
    if (!value) {
        ws_send_error(c, ref, "bad_message", "value is required (the code, 4 to 10 digits)");
        return;
    }
    if (!json_is_string(value)) {
        ws_send_error(c, ref, "invalid_otp", "value must be a string of 4 to 10 digits");
        return;
    }
    if (c->who.kind == JW_PRINCIPAL_USER) {
        int after;

        if (jw_limits_take(c->hub->sv->limits, JW_LIMIT_USER_OTP, c->who.user_id, jw_mono_us(),
                           &after)) {
            send_rate_limited(c, ref, after,
                              "at most %d OTP submissions a minute (--otp-rate-per-user); try "
                              "again in %d s",
                              c->hub->sv->cfg->otp_rate_per_user, after);
            return;
        }
    }
    snprintf(otp_id, sizeof(otp_id), "%s", json_string_value(id));
    for (char *p = otp_id; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'F' ? *p + 32 : *p);
    op = ws_new_op(c, ref);
    rc = jw_engine_submit_otp(c->hub->sv->engine, otp_id, json_string_value(value),
                              c->who.kind == JW_PRINCIPAL_USER ? c->who.user_id : NULL,
                              on_otp_result, op, err, sizeof(err));
    if (rc == JW_ENOTFOUND && c->hub->sv->inbox && !jw_engine_otp_job(c->hub->sv->engine, otp_id)) {
        /* Not in memory here: another node's job (forwarded to it), or none. */
        rc = jw_inbox_forward_otp(c->hub->sv->inbox, otp_id, json_string_value(value),
                                  c->who.kind == JW_PRINCIPAL_USER ? c->who.user_id : NULL,
                                  on_otp_forwarded, op, err, sizeof(err));
        if (rc == 0)
            return;
        ws_free_op(op);
        ws_send_error(c, ref, "unavailable", "%s", err);
        return;
    }
    if (rc != 0) {
        ws_free_op(op);
        ws_send_error(c, ref,
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
        ws_send_error(c, ref, "bad_message", "already authenticated");
        return;
    }
    if (!json_is_string(token)) {
        ws_send_error(c, ref, "unauthorized", "auth needs a token string");
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
        ws_send_error(c, m.ref, code, "%s", err);
        goto out;
    }
    for (int i = 0; handlers[i].type; i++) {
        if (strcmp(handlers[i].type, m.type) != 0)
            continue;
        if (handlers[i].needs_auth && !c->authed) {
            ws_send_error(c, m.ref, "auth_required", "send {\"type\":\"auth\",\"token\":…} first");
            start_close(c, CLOSE_AUTH, "auth required");
            goto out;
        }
        handlers[i].handle(c, m.root, m.ref);
        goto out;
    }
    ws_send_error(c, m.ref, "unknown_type", "unknown message type \"%.32s\"", m.type);
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

bool jw_ws_origin_allowed(struct lws *wsi, const jw_config *cfg, const char *endpoint)
{
    char origin[256], shown[101];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    size_t i;

    if (n <= 0)
        return true; /* not a browser */
    if (n >= (int)sizeof(origin) || lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0)
        origin[0] = '\0';
    for (i = 0; origin[0] && i < cfg->origin_count; i++)
        if (strcasecmp(origin, cfg->origins[i]) == 0)
            return true;
    for (i = 0; origin[i] && i < sizeof(shown) - 1; i++)
        shown[i] = origin[i] > 0x20 && origin[i] < 0x7f ? origin[i] : '?';
    shown[i] = '\0';
    jw_log_info("%s: refused an upgrade from Origin \"%s\"%s, which --origins does not list",
                endpoint, shown, n >= (int)sizeof(origin) ? " (too long)" : "");
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
    jw_timers_arm(hub->sv->mono_timers, &c->auth_deadline, jw_mono_us() + AUTH_DEADLINE_US,
                  on_auth_deadline, c);
}

static void on_closed(conn *c)
{
    jw_ws *hub = c->hub;

    if (!c->base.open)
        return;
    jw_timers_cancel(hub->sv->mono_timers, &c->auth_deadline);
    jw_timers_cancel(hub->sv->timers, &c->expiry);
    jw_ws_budget_release(&c->rx_budget);
    while (c->nsubs)
        ws_remove_sub(c, c->subs[c->nsubs - 1].j);
    free(c->subs);
    jw_wsconn_drop_all(&c->base);
    ws_cancel_reads(c, NULL);
    free(c->reads);
    free(c->unsent);
    c->reads = c->unsent = NULL;
    c->nreads = c->capreads = c->nunsent = c->capunsent = 0;
    jw_limits_release(hub->sv->limits, c->user_hold);
    c->user_hold = NULL;
    jw_ws_rx_done(&c->rx);
    jw_wsconn_closed(&c->base);
}

/*
 * A client message, once whole (ws_rx.h gathers it, bounded). Its replies
 * leave as a publish round's do, at once when the socket is free, rather
 * than after a WRITEABLE callback (two event-loop updates per reply).
 */
static int on_receive(conn *c, struct lws *wsi, const void *in, size_t len)
{
    const char *data;
    size_t n;
    jw_ws_rx_result r = jw_ws_rx_feed(&c->rx, wsi, in, len, MAX_CLIENT_FRAME, &data, &n);

    if (r == JW_WS_RX_MORE)
        return 0;
    jw_wsconns_hold(&c->hub->conns);
    switch (r) {
    case JW_WS_RX_MORE: break;
    case JW_WS_RX_TOO_BIG:
        ws_send_error(c, NULL, "frame_too_large", "a client frame may hold at most %zu bytes",
                      MAX_CLIENT_FRAME);
        start_close(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "frame too large");
        break;
    case JW_WS_RX_BINARY:
        ws_send_error(c, NULL, "binary_not_supported", "send text frames of JSON");
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
    jw_wsconns_flush(&c->hub->conns);
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
        if (!jw_ws_origin_allowed(wsi, hub->sv->cfg, "ws"))
            return -1;
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
        jw_sv_catch_up(c->hub->sv);
        jw_wsconn_heard(&c->base);
        return on_receive(c, wsi, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        if (c && c->base.open)
            jw_wsconn_heard(&c->base);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!c)
            return 0;
        if (c->base.open)
            jw_sv_catch_up(c->hub->sv);
        return jw_wsconn_on_writable(&c->base);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c)
            jw_wsconn_peer_closed(&c->base);
        return 0;
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

jw_ws *jw_ws_new(const jw_services *sv)
{
    jw_ws *hub = jw_xcalloc(1, sizeof(*hub));

    hub->sv = sv;
    jw_map_init(&hub->jobs);
    jw_map_init(&hub->loading);
    jw_wsconns_init(&hub->conns, "ws", true, (size_t)sv->cfg->ws_max_queue);
    jw_wsconns_set_liveness(&hub->conns, sv->mono_timers,
                            (int64_t)sv->cfg->ws_ping_interval_s * 1000000);
    hub->conns.shed = ws_shed;
    hub->conns.owes = ws_owes_resyncs;
    hub->conns.pay = ws_pay_resyncs;
    jw_wsconns_set_pool(&hub->conns, sv->fanout, JW_FANOUT_MIN_WRITES);
    if (sv->wsmem)
        jw_wsconns_set_mem(&hub->conns, sv->wsmem);
    return hub;
}

void jw_ws_hold(jw_ws *hub)
{
    jw_wsconns_hold(&hub->conns);
}

void jw_ws_flush(jw_ws *hub)
{
    jw_ws_publish_end(hub); /* nothing stays pending past a round */
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
    out->direct_writes = cs->direct_writes;
    out->parallel_rounds = cs->parallel_rounds;
    out->pings = cs->pings;
    out->idle_drops = cs->idle_drops;
}

void jw_ws_free(jw_ws *hub)
{
    const char *k;
    void *v;

    if (!hub)
        return;
    for (size_t i = 0; i < hub->npend; i++)
        jw_wsmsg_unref(hub->pend[i]);
    free(hub->pend);
    for (size_t it = 0; jw_map_next(&hub->jobs, &it, &k, &v);)
        ws_free_job_entry(v);
    jw_map_release(&hub->jobs);
    ws_free_loading(hub);
    jw_wsconns_release(&hub->conns);
    free(hub);
}
