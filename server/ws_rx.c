/*
 * ws_rx.c - gathering client WebSocket messages (see ws_rx.h).
 */
#include "ws_rx.h"

#include "jw_util.h"

#include "jw_log.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

jw_ws_rx_result jw_ws_rx_feed(jw_ws_rx *rx, struct lws *wsi, const void *in, size_t len, size_t max,
                              const char **data, size_t *n)
{
    bool first = lws_is_first_fragment(wsi);
    bool done = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);

    *data = in;
    *n = len;
    if (first) {
        rx->len = 0;
        rx->total = 0;
        rx->binary = lws_frame_is_binary(wsi);
        rx->too_big = false;
    }
    /*
     * Counted for every message, binary included: too big is said first, and
     * as soon as it is known - from what came plus what the current frame
     * still announces - not at the message's end, which a client can put off
     * for ever (a frame announcing 2^62 bytes, fragments without a FIN).
     * The rest of such a message is read and dropped until the close.
     */
    rx->total += len;
    if (rx->too_big)
        return JW_WS_RX_MORE;
    if (rx->total > max || lws_remaining_packet_payload(wsi) > max - rx->total) {
        rx->too_big = true;
        return JW_WS_RX_TOO_BIG;
    }
    if (!(first && done) && !rx->binary) {
        rx->buf = jw_xrealloc(rx->buf, rx->len + len + 1);
        memcpy(rx->buf + rx->len, in, len);
        rx->len += len;
        *data = rx->buf;
        *n = rx->len;
    }
    if (!done)
        return JW_WS_RX_MORE;
    return rx->binary ? JW_WS_RX_BINARY : JW_WS_RX_TEXT;
}

void jw_ws_rx_done(jw_ws_rx *rx)
{
    if (rx->buf) /* a message cut short by its size may hold a code or a token too */
        OPENSSL_cleanse(rx->buf, rx->len);
    free(rx->buf);
    rx->buf = NULL;
    rx->len = 0;
}

void jw_ws_close_politely(struct lws *wsi, int code, const char *reason)
{
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
    /*
     * lws closes a connection whose timeout runs out; with this reason (the
     * only one) it does so politely, through the closing handshake, instead of
     * marking the socket unusable. Asynchronously: lws still uses the
     * connection after the callback returns.
     */
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_KEEPALIVE_IDLE, LWS_TO_KILL_ASYNC);
}

void jw_ws_budget_init(jw_ws_budget *b, struct lws *wsi, int rate)
{
    memset(b, 0, sizeof(*b));
    b->wsi = wsi;
    b->tokens = 2.0 * rate;
    b->last_us = jw_mono_us();
}

static void budget_resume(lws_sorted_usec_list_t *sul)
{
    jw_ws_budget *b = lws_container_of(sul, jw_ws_budget, sul);

    b->paused = false;
    lws_rx_flow_control(b->wsi, 1);
}

bool jw_ws_budget_spend(jw_ws_budget *b, struct lws *wsi, int rate, double cost)
{
    int64_t now;

    if (rate <= 0)
        return false;
    now = jw_mono_us();
    b->tokens += (double)(now - b->last_us) / 1e6 * rate;
    if (b->tokens > 2.0 * rate)
        b->tokens = 2.0 * rate;
    b->last_us = now;
    b->tokens -= cost;
    if (b->tokens >= 0 || b->paused)
        return false;
    b->paused = true;
    lws_rx_flow_control(wsi, 0);
    lws_sul_schedule(lws_get_context(wsi), 0, &b->sul, budget_resume,
                     (lws_usec_t)(-b->tokens / rate * 1e6) + 1);
    return true;
}

void jw_ws_budget_release(jw_ws_budget *b)
{
    if (b->wsi)
        lws_sul_schedule(lws_get_context(b->wsi), 0, &b->sul, budget_resume,
                         LWS_SET_TIMER_USEC_CANCEL);
    b->paused = false;
}
