/*
 * ws_rx.c - gathering client WebSocket messages (see ws_rx.h).
 */
#include "ws_rx.h"

#include "jw_log.h"

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
    /* Counted for every message, binary included: too big is said first. */
    rx->total += len;
    if (rx->total > max)
        rx->too_big = true;
    if (!(first && done) && !rx->binary && !rx->too_big) {
        rx->buf = jw_xrealloc(rx->buf, rx->len + len + 1);
        memcpy(rx->buf + rx->len, in, len);
        rx->len += len;
        *data = rx->buf;
        *n = rx->len;
    }
    if (!done)
        return JW_WS_RX_MORE;
    if (rx->too_big)
        return JW_WS_RX_TOO_BIG;
    return rx->binary ? JW_WS_RX_BINARY : JW_WS_RX_TEXT;
}

void jw_ws_rx_done(jw_ws_rx *rx)
{
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
