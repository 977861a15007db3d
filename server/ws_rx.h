/*
 * ws_rx.h - one client WebSocket message gathered from libwebsockets' chunks,
 * bounded, for both WebSocket endpoints (ws.c, realtime.c).
 *
 * lws hands a message over in chunks of the protocol's rx_buffer_size. The
 * usual message, whole in one chunk, is handed back in place; only a longer
 * one is copied, into a buffer that grows with it up to max bytes and is
 * freed by jw_ws_rx_done, so an idle connection holds no receive buffer.
 * Past max the rest is dropped, not stored. Loop thread only.
 */
#ifndef JW_WS_RX_H
#define JW_WS_RX_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jw_ws_rx {
    char *buf;    /* the gathered text, when the message came in several chunks */
    size_t len;   /* bytes in buf */
    size_t total; /* bytes of the message so far, kept or not */
    bool binary, too_big;
} jw_ws_rx;

typedef enum {
    JW_WS_RX_MORE,    /* the message goes on in the next chunk */
    JW_WS_RX_TEXT,    /* a whole text message: *data, *n */
    JW_WS_RX_BINARY,  /* a whole binary message (its bytes are not kept) */
    JW_WS_RX_TOO_BIG, /* longer than max: said once, when known; its rest comes as MORE */
} jw_ws_rx_result;

/*
 * Takes one LWS_CALLBACK_RECEIVE chunk. On JW_WS_RX_TEXT, *data and *n are the
 * message, valid until jw_ws_rx_done; after any result but MORE, call
 * jw_ws_rx_done once the message is handled.
 */
jw_ws_rx_result jw_ws_rx_feed(jw_ws_rx *rx, struct lws *wsi, const void *in, size_t len, size_t max,
                              const char **data, size_t *n);
void jw_ws_rx_done(jw_ws_rx *rx);

/*
 * Starts the closing handshake: a close frame with code and reason (lws sends
 * it when the socket takes it, then waits up to 5 s for the client's answer).
 * Called from a WRITEABLE callback once the connection's queue is empty, which
 * then returns 0. Not "return -1": on the libuv loop a debug build of lws 4.1.6
 * closes such a connection a second time at once ("uv repeat test"), and the
 * second close drops the close frame: clients saw 1006 instead of the code.
 */
void jw_ws_close_politely(struct lws *wsi, int code, const char *reason);

/*
 * What a connection's client messages may cost the loop: a token bucket of
 * twice `rate` messages, refilled at `rate` a second (--ws-message-rate; 0:
 * no bound). A message past it is still handled - nothing a client sent is
 * dropped - but the connection is not read again (lws rx flow control) until
 * the bucket is back above zero, so a flooding client waits on its own socket
 * while the others are served.
 */
typedef struct jw_ws_budget {
    struct lws *wsi;
    double tokens;
    int64_t last_us;
    bool paused;
    lws_sorted_usec_list_t sul; /* resumes reading */
} jw_ws_budget;

void jw_ws_budget_init(jw_ws_budget *b, struct lws *wsi, int rate);
/*
 * Spends what one message cost: 1, plus what it made the server do beyond
 * answering (a Supabase join's database reads: one each). True when reading
 * was just paused (count it).
 */
bool jw_ws_budget_spend(jw_ws_budget *b, struct lws *wsi, int rate, double cost);
/* The connection is closing: cancels the resume. */
void jw_ws_budget_release(jw_ws_budget *b);

#endif
