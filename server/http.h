/*
 * http.h - jobwire's HTTP side: one libwebsockets protocol, a route table,
 * JSON responses.
 *
 * What it does
 *   Every HTTP request on the vhost lands in jw_http_protocol. The module
 *   copies what handlers need (method, path, query, a few headers) while lws
 *   still holds the headers, reads the body into a buffer bounded by
 *   config->max_body, looks the path up in the route table it was given, calls
 *   the handler, and writes the handler's response from
 *   LWS_CALLBACK_HTTP_WRITEABLE: headers first, then the body in chunks, the
 *   last with LWS_WRITE_HTTP_FINAL, then lws_http_transaction_completed() so
 *   the connection serves its next request (keep-alive). What can be judged
 *   without lws (methods, framing, the query string) is in http_parse.h.
 *
 *   Errors are JSON {"error":{"code":"...","message":"..."}}: 404 not_found
 *   for an unknown path, 405 method_not_allowed with an Allow header, 413
 *   body_too_large (refused from Content-Length before anything is
 *   buffered, or as a chunked body passes --max-body), 411 length_required
 *   for a chunked body on a method without one (GET, HEAD, DELETE,
 *   OPTIONS), 400 bad_request for a malformed request (both Content-Length
 *   and Transfer-Encoding, another coding, broken chunk framing). A POST,
 *   PUT or PATCH with neither header has an empty body (RFC 9112 6.3). Every response carries
 * X-Content-Type-Options: nosniff (see jw_http_vhost_headers) and, unless the handler marks it
 * cacheable, Cache-Control: no-store.
 *
 * Routes and upgrades are given, not known
 *   This module includes no handler. The composition root (app.c) gives the
 *   ctx its route table (ctx->routes) and the hooks that take a WebSocket
 *   upgrade made on this protocol (ctx->upgrade, the Supabase endpoint).
 *   Adding a route is adding a row to the table app.c builds:
 *       {.method = JW_HTTP_POST, .prefix = "/api/jobs/", .handler = h, .arg = state},
 *   Rows are tried in order; the first whose path (exact) or prefix matches
 *   and whose method matches wins. A path that matches rows of other methods
 *   only gets 405 with those methods in Allow. A GET row also answers HEAD.
 *   Without a table every request is a 404; without upgrade hooks every
 *   upgrade on this protocol is refused.
 *
 * Growing the protocols array
 *   jw_http_protocol must be the first entry of the vhost's protocols (app.c,
 *   jw_app_protocols): lws hands every HTTP request that no mount claims to
 *   protocols[0]. Other protocols (the /ws WebSocket protocol, the loop's
 *   wake-up protocol) go after it, then the zeroed terminator.
 *
 * Threads
 *   Everything here runs on the loop thread, inside lws_service(): the
 *   protocol callback, the handlers and the reply functions. Handlers must
 *   not block (no libpq, no sleeping): jw_store_get_stats is fine, a query is
 *   not.
 *
 * Ownership
 *   The server owns the jw_http_ctx and passes it as the lws context user
 *   pointer (info.user); it must outlive the lws context. The ctx borrows the
 *   config, the store, the limits, the route table and the upgrade hooks'
 *   state. A jw_http_request lives in lws' per-session memory
 *   for one request only: handlers get it borrowed and must not keep it or
 *   any pointer into it after they return.
 */
#ifndef JW_HTTP_H
#define JW_HTTP_H

#include "config.h"
#include "http_parse.h"
#include "jw_map.h"
#include "limiter.h"
#include "jw_store.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jw_http_ctx jw_http_ctx;

typedef struct jw_http_response {
    int status;               /* 0 until a reply function ran */
    const char *content_type; /* a string literal */
    char *body;               /* owned; NUL-terminated for convenience */
    size_t len, cap;
    bool cacheable;            /* false (default): Cache-Control: no-store */
    const char *cache_control; /* when cacheable: the Cache-Control value */
    bool page;                 /* a page or asset: CSP, framing and referrer headers */
    char etag[24];             /* ETag header, "" for none */
    bool close;                /* close the connection after this response */
    char allow[64];    /* Allow header, "" for none; set after the reply call, which clears it */
    int retry_after_s; /* Retry-After header, 0 for none; set after the reply call, as allow */
} jw_http_response;

/* One request, read-only for handlers except resp (via the reply functions). */
typedef struct jw_http_request {
    uint64_t id; /* for log lines: req=<id> */
    jw_http_method method;
    const char *method_name; /* "GET", ... */
    char *path;              /* URL-decoded, starts with '/', no query */
    char *authorization;     /* Authorization header or NULL; never log it */
    char *content_type;      /* Content-Type header or NULL */
    char *if_none_match;     /* If-None-Match header or NULL */
    char *body;              /* NUL-terminated, or NULL when there was none */
    size_t body_len;
    char *query; /* private: decoded name=value pairs, see jw_http_query */
    size_t query_len;
    jw_http_response resp;
} jw_http_request;

/*
 * A handler answers with exactly one reply call (a later call replaces the
 * earlier response). If it makes none, the client gets a 500. arg is its
 * route's arg: the handler's own state, given by whoever built the table.
 */
typedef void (*jw_http_handler)(void *arg, jw_http_ctx *ctx, jw_http_request *req);

typedef struct jw_http_route {
    unsigned method;    /* JW_HTTP_* bits */
    const char *path;   /* exact path, or NULL when prefix is used */
    const char *prefix; /* matches every path that starts with it */
    /*
     * Optional, for a prefix route: whether the path names something it
     * serves. A path it does not is no route's (404 for every method), so a
     * POST to a missing file is 404 like its GET, and a 405 means the path exists.
     */
    bool (*exists)(const char *path);
    jw_http_handler handler;
    void *arg; /* borrowed; handed to handler */
} jw_http_route;

/*
 * A WebSocket upgrade that lands on this protocol (no subprotocol named; lws
 * keeps such a connection on protocols[0]). accept answers
 * LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: 0 takes the upgrade, nonzero
 * refuses it. callback then gets the connection's ESTABLISHED, RECEIVE,
 * SERVER_WRITEABLE and CLOSED, with slot: one pointer of per-connection
 * state that the hook owns (NULL at first), and returns what lws expects.
 */
typedef struct jw_http_upgrade {
    int (*accept)(void *arg, struct lws *wsi);
    int (*callback)(void *arg, struct lws *wsi, enum lws_callback_reasons reason, void **slot,
                    void *in, size_t len);
    void *arg; /* borrowed; handed to both */
} jw_http_upgrade;

/* Shared by the server and every handler; loop thread only after start-up. */
struct jw_http_ctx {
    const jw_config *config;     /* borrowed */
    jw_store *store;             /* borrowed; NULL until the store is started */
    bool migrations_applied;     /* set by main once jw_db_migrate succeeded */
    int migrations;              /* migrations this binary carries (and applied) */
    uint64_t requests;           /* requests seen; the last one's id */
    const jw_http_route *routes; /* borrowed; ends with a zeroed row; NULL: none */
    jw_http_upgrade upgrade;     /* zeroed: upgrades on this protocol are refused */
    jw_map deferred;             /* request id -> session waiting for an answer */
    size_t responding;           /* responses decided, not yet written (shutdown waits) */
    int fd_ceiling;              /* accepted sockets numbered from here on are closed (main.c) */
    uint64_t refused_connections;
    /*
     * Per client address (limiter.h); NULL: none. A connection admitted at
     * FILTER_NETWORK_CONNECTION is held by its address once lws made it
     * (SERVER_NEW_CLIENT_INSTANTIATED, same turn, matched by descriptor),
     * and given back at WSI_DESTROY.
     */
    jw_limits *limits;
    int admitted_fd; /* -1 when none waits */
    int64_t ip_refused_logged_us;
    struct sockaddr_storage admitted_addr;
    int64_t refused_logged_us; /* monotonic; refusals are logged at most every 10 s */
};

/* The HTTP protocol; copy it into protocols[0] of the vhost. */
extern const struct lws_protocols jw_http_protocol;

/*
 * Headers lws adds to every response it writes on the vhost, its own error
 * pages included: set info.headers to this when creating the vhost.
 */
const struct lws_protocol_vhost_options *jw_http_vhost_headers(void);

/* Sets the response; body is copied (len bytes, may be 0). */
void jw_http_reply(jw_http_request *req, int status, const char *content_type, const void *body,
                   size_t len);

/*
 * Sets a JSON response and takes ownership of doc, like json_object_set_new;
 * a NULL doc (a failed json_pack) becomes a 500.
 */
void jw_http_reply_json(jw_http_request *req, int status, json_t *doc);

/*
 * Sets {"error":{"code":code,"message":...}}. The message goes to the client:
 * say what was wrong and what to do, and never include a secret.
 */
void jw_http_reply_error(jw_http_request *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * The URL-decoded value of query parameter name ("" for ?name or ?name=),
 * or NULL when absent. The first occurrence wins.
 */
const char *jw_http_query(const jw_http_request *req, const char *name);

/*
 * Deferred answers. A handler whose answer waits for something (a commit, a
 * database read, an OTP verdict) calls jw_http_defer and returns without a
 * reply; it keeps the returned id, never the request pointer, because the
 * client may go away meanwhile. Later, on the loop thread:
 *   req = jw_http_resume(ctx, id)   the request, or NULL if the client left
 *   jw_http_reply_*(req, ...)       as usual
 *   jw_http_finish(ctx, id)         sends it
 */
uint64_t jw_http_defer(jw_http_ctx *ctx, jw_http_request *req);
jw_http_request *jw_http_resume(jw_http_ctx *ctx, uint64_t id);
void jw_http_finish(jw_http_ctx *ctx, uint64_t id);
/* Requests still waiting for their answers. */
size_t jw_http_deferred_count(const jw_http_ctx *ctx);
/* Responses decided but not yet written out (shutdown serves until they are). */
size_t jw_http_responding(const jw_http_ctx *ctx);

#endif
