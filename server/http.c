/*
 * http.c - HTTP requests on the loop thread: route table, bounded bodies,
 * JSON responses written from LWS_CALLBACK_HTTP_WRITEABLE. See http.h.
 */
#include "http.h"

#include "jw_error.h"
#include "jw_log.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Body bytes per lws_write: one HTTP/2 DATA frame at the default frame size. */
#define BODY_CHUNK 16384
/* Room for the status line and our headers; lws adds its vhost headers too. */
#define HEADER_ROOM 2048

/* Per-request state. lws allocates it zeroed for every transaction. */
enum session_state {
    S_NEW = 0,  /* no body to read (or it was read): the route runs or ran */
    S_BODY,     /* reading the body; route (if any) runs at completion */
    S_DISPATCH, /* a chunked body is complete: the route runs at the next HTTP_WRITEABLE */
    S_HEADERS,  /* response ready, headers next */
    S_BODY_OUT, /* headers sent, body next */
    S_DONE,
};

struct session {
    jw_http_request req; /* the handler's view; must stay the first member */
    struct lws *wsi;
    bool deferred; /* registered in ctx->deferred under key */
    char key[24];
    enum session_state state;
    const jw_http_route *route; /* NULL once the response is already decided */
    size_t content_length;      /* declared by the client */
    bool body_seen;             /* HTTP_BODY came (its first bytes were checked) */
    bool chunked;               /* the body comes chunked ... */
    jw_http_chunked chunks;     /* ... and is decoded by this */
    size_t body_cap;            /* bytes allocated at req.body for a chunked body */
    size_t sent;                /* body bytes written */
    void *upgraded;             /* an upgraded connection's state (ctx->upgrade's slot) */
};

/* --- responses ----------------------------------------------------------- */

void jw_http_reply(jw_http_request *req, int status, const char *content_type, const void *body,
                   size_t len)
{
    jw_http_response *r = &req->resp;

    if (r->cap < len + 1) {
        r->body = jw_xrealloc(r->body, len + 1);
        r->cap = len + 1;
    }
    if (len)
        memcpy(r->body, body, len);
    r->body[len] = '\0';
    r->len = len;
    r->status = status;
    r->content_type = content_type;
    r->allow[0] = '\0';
    r->retry_after_s = 0;
}

void jw_http_reply_json(jw_http_request *req, int status, json_t *doc)
{
    char *text;

    if (!doc) {
        jw_http_reply_error(req, 500, "internal", "the server could not build its response");
        return;
    }
    text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        jw_oom("json response");
    jw_http_reply(req, status, "application/json", text, strlen(text));
    free(text);
}

void jw_http_reply_error(jw_http_request *req, int status, const char *code, const char *fmt, ...)
{
    char message[512];
    json_t *doc;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    /* A path or a cut can bring bytes a JSON string cannot carry. */
    jw_http_clean_text(message);
    doc = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    if (!doc) {
        /* jw_http_clean_text made it UTF-8: only a failed allocation gets here. */
        doc = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
                        "(message not representable)");
        if (!doc)
            jw_oom("json error");
    }
    jw_http_reply_json(req, status, doc);
}

/* --- requests ------------------------------------------------------------ */

const char *jw_http_query(const jw_http_request *req, const char *name)
{
    return jw_http_query_get(req->query, req->query_len, name);
}

static void session_release(struct session *s)
{
    jw_http_request *req = &s->req;

    free(req->path);
    free(req->authorization);
    free(req->content_type);
    free(req->if_none_match);
    free(req->body);
    free(req->query);
    free(req->resp.body);
    memset(s, 0, sizeof(*s));
}

/* A copy of header h, or NULL when absent. */
static char *copy_header(struct lws *wsi, enum lws_token_indexes h)
{
    int n = lws_hdr_total_length(wsi, h);
    char *v;

    if (n <= 0)
        return NULL;
    v = jw_xmalloc((size_t)n + 1);
    if (lws_hdr_copy(wsi, v, n + 1, h) < 0) {
        free(v);
        return NULL;
    }
    return v;
}

/*
 * lws keeps each decoded query argument as one fragment; store them
 * NUL-separated. An empty argument ("a=1&&b=2", "?&b=2") is skipped, not
 * taken for the end: lws_hdr_copy_fragment says 0 for it, -1 past the last.
 */
static void copy_query(struct lws *wsi, jw_http_request *req)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    size_t used = 0, cap;

    if (total <= 0)
        return;
    /* Fragments total `total` bytes, plus one NUL each: bounded by the header size. */
    cap = (size_t)total * 2 + 2;
    req->query = jw_xmalloc(cap);
    for (int i = 0;; i++) {
        int n = lws_hdr_copy_fragment(wsi, req->query + used, (int)(cap - used),
                                      WSI_TOKEN_HTTP_URI_ARGS, i);

        if (n < 0)
            break; /* past the last argument */
        if (n > 0)
            used += (size_t)n + 1;
    }
    req->query_len = used;
}

/* lws' method indexes (LWSHUMETH_*) by name; HTTP/2 reports :path instead. */
static const char *const lws_methods[] = {
    [LWSHUMETH_GET] = "GET",   [LWSHUMETH_POST] = "POST",   [LWSHUMETH_OPTIONS] = "OPTIONS",
    [LWSHUMETH_PUT] = "PUT",   [LWSHUMETH_PATCH] = "PATCH", [LWSHUMETH_DELETE] = "DELETE",
    [LWSHUMETH_HEAD] = "HEAD",
};

static bool read_method(struct lws *wsi, jw_http_request *req)
{
    char *uri, name[16] = "";
    int ulen, m = lws_http_get_uri_and_method(wsi, &uri, &ulen);

    if (m == LWSHUMETH_COLON_PATH) {
        /* HTTP/2: the method is its own pseudo-header. */
        if (lws_hdr_copy(wsi, name, sizeof(name), WSI_TOKEN_HTTP_COLON_METHOD) < 0)
            return false;
    } else if (m >= 0 && (size_t)m < sizeof(lws_methods) / sizeof(lws_methods[0]) &&
               lws_methods[m]) {
        snprintf(name, sizeof(name), "%s", lws_methods[m]);
    }
    req->method = jw_http_method_parse(name);
    req->method_name = jw_http_method_name(req->method);
    return req->method != 0;
}

static bool route_path_matches(const jw_http_route *r, const char *path)
{
    if (r->path)
        return strcmp(r->path, path) == 0;
    if (!r->prefix || strncmp(r->prefix, path, strlen(r->prefix)) != 0)
        return false;
    return !r->exists || r->exists(path);
}

/* The matching route, or NULL with a 404/405 response already set. */
static const jw_http_route *find_route(const jw_http_route *routes, jw_http_request *req)
{
    char allow[sizeof(req->resp.allow)];
    unsigned allowed = 0;

    for (const jw_http_route *r = routes; r && r->handler; r++) {
        unsigned accepts = r->method;

        if (!route_path_matches(r, req->path))
            continue;
        if (accepts & JW_HTTP_GET)
            accepts |= JW_HTTP_HEAD;
        if (accepts & req->method)
            return r;
        allowed |= accepts;
    }
    if (!allowed) {
        jw_http_reply_error(req, 404, "not_found", "no route %s", req->path);
        return NULL;
    }
    jw_http_format_allow(allowed, allow, sizeof(allow));
    jw_http_reply_error(req, 405, "method_not_allowed", "%s does not accept %s; use %s", req->path,
                        req->method_name, allow);
    memcpy(req->resp.allow, allow, sizeof(allow));
    return NULL;
}

/* Sessions in S_HEADERS or S_BODY_OUT: shutdown waits for them (jw_http_responding). */
static void set_writing(struct lws *wsi, struct session *s, enum session_state to)
{
    jw_http_ctx *ctx = lws_context_user(lws_get_context(wsi));
    bool was = s->state == S_HEADERS || s->state == S_BODY_OUT;
    bool is = to == S_HEADERS || to == S_BODY_OUT;

    if (ctx && was != is) {
        if (is)
            ctx->responding++;
        else
            ctx->responding--;
    }
    s->state = to;
}

/* The response is set: write it when the socket can take it. */
static void respond(struct lws *wsi, struct session *s)
{
    set_writing(wsi, s, S_HEADERS);
    lws_callback_on_writable(wsi);
}

/* An error decided before the body was read: answer and close, the body unread. */
static void respond_and_close(struct lws *wsi, struct session *s)
{
    s->route = NULL;
    s->req.resp.close = true;
    respond(wsi, s);
}

static void undefer(jw_http_ctx *ctx, struct session *s)
{
    if (s->deferred) {
        jw_map_del(&ctx->deferred, s->key);
        s->deferred = false;
    }
}

uint64_t jw_http_defer(jw_http_ctx *ctx, jw_http_request *req)
{
    struct session *s = (struct session *)(void *)req;

    s->deferred = true;
    snprintf(s->key, sizeof(s->key), "%" PRIu64, req->id);
    jw_map_put(&ctx->deferred, s->key, s);
    return req->id;
}

jw_http_request *jw_http_resume(jw_http_ctx *ctx, uint64_t id)
{
    char key[24];
    struct session *s;

    snprintf(key, sizeof(key), "%" PRIu64, id);
    s = jw_map_get(&ctx->deferred, key);
    return s ? &s->req : NULL;
}

void jw_http_finish(jw_http_ctx *ctx, uint64_t id)
{
    char key[24];
    struct session *s;

    snprintf(key, sizeof(key), "%" PRIu64, id);
    s = jw_map_del(&ctx->deferred, key);
    if (!s)
        return;
    s->deferred = false;
    if (!s->req.resp.status)
        jw_http_reply_error(&s->req, 500, "internal", "no answer was produced for %s", s->req.path);
    respond(s->wsi, s);
}

size_t jw_http_responding(const jw_http_ctx *ctx)
{
    return ctx->responding;
}

size_t jw_http_deferred_count(const jw_http_ctx *ctx)
{
    return ctx->deferred.count;
}

static void dispatch(jw_http_ctx *ctx, struct lws *wsi, struct session *s)
{
    if (s->route) {
        s->route->handler(s->route->arg, ctx, &s->req);
        if (s->deferred)
            return; /* answered later through jw_http_finish */
        if (!s->req.resp.status)
            jw_http_reply_error(&s->req, 500, "internal", "the handler for %s sent no response",
                                s->req.path);
    }
    respond(wsi, s);
}

static int on_request(jw_http_ctx *ctx, struct lws *wsi, struct session *s, const char *path,
                      size_t len)
{
    jw_http_request *req = &s->req;
    jw_http_framing framing;
    jw_http_error err;
    char *length_hdr, *te_hdr;
    size_t length;

    undefer(ctx, s);
    session_release(s);
    s->wsi = wsi;
    req->id = ++ctx->requests;
    if (!read_method(wsi, req)) {
        /* lws only calls us for methods it parsed; anything else is a client bug. */
        req->method = JW_HTTP_GET;
        req->method_name = "?";
        req->path = jw_xstrdup("?");
        jw_http_reply_error(req, 400, "bad_request", "unsupported HTTP method");
        respond_and_close(wsi, s);
        return 0;
    }
    req->path = jw_xmalloc(len + 1);
    memcpy(req->path, path, len);
    req->path[len] = '\0';
    copy_query(wsi, req);
    req->authorization = copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    req->content_type = copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    req->if_none_match = copy_header(wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH);
    s->route = find_route(ctx->routes, req);

    /*
     * Framing first: it decides whether the connection can carry another
     * request (http_parse.h, jw_http_frame).
     */
    length_hdr = copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    te_hdr = copy_header(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
    framing = jw_http_frame(req->method, length_hdr, te_hdr, ctx->config->max_body,
                            s->route != NULL, &length, &err);
    free(length_hdr);
    free(te_hdr);
    switch (framing) {
    case JW_HTTP_REFUSE:
        jw_http_reply_error(req, err.status, err.code, "%s", err.message);
        respond_and_close(wsi, s);
        return 0;
    case JW_HTTP_CLOSE: respond_and_close(wsi, s); return 0;
    case JW_HTTP_READ_BODY:
        s->content_length = length;
        s->state = S_BODY;
        return 0;
    case JW_HTTP_READ_CHUNKED:
        /* lws delivers the body as sent and cannot be told where it ended: close after. */
        s->chunked = true;
        jw_http_chunked_init(&s->chunks, ctx->config->max_body);
        req->resp.close = true;
        s->state = S_BODY;
        return 0;
    case JW_HTTP_EMPTY_BODY:
        /* lws takes what follows for a body: the connection carries no other request. */
        req->resp.close = true;
        break;
    case JW_HTTP_NO_BODY: break;
    }
    dispatch(ctx, wsi, s);
    return 0;
}

/* Appends n bytes of a chunked body; 0, or -1 past max_body (the decoder stops that first). */
static int body_append(struct session *s, const char *data, size_t n)
{
    jw_http_request *req = &s->req;
    size_t max = s->chunks.max_body, cap;
    char *grown;

    if (n > max - req->body_len)
        return -1;
    if (req->body_len + n + 1 > s->body_cap) {
        cap = s->body_cap > max / 2 ? max + 1 : s->body_cap * 2;
        if (cap < 1024)
            cap = max < 1024 ? max + 1 : 1024;
        if (cap < req->body_len + n + 1)
            cap = req->body_len + n + 1;
        /* Not realloc: the old copy, which may hold an OTP, is wiped before it is freed. */
        grown = jw_xmalloc(cap);
        if (req->body_len)
            memcpy(grown, req->body, req->body_len);
        if (req->body)
            OPENSSL_cleanse(req->body, req->body_len);
        free(req->body);
        req->body = grown;
        s->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return 0;
}

/*
 * lws 4.1.6 hands a chunked body over as it came, framing and all: it is
 * decoded here. Once complete, the route runs from the next HTTP_WRITEABLE:
 * lws re-arms its body timeout after this callback returns, which would cut
 * a route that answers later (jw_http_defer) short.
 */
static int on_chunked_body(struct session *s, const char *in, size_t len)
{
    jw_http_request *req = &s->req;
    jw_http_error err;

    while (len) {
        const char *data;
        size_t used, n;
        jw_http_chunk_step step = jw_http_chunked_read(&s->chunks, in, len, &used, &data, &n, &err);

        in += used;
        len -= used;
        switch (step) {
        case JW_HTTP_CHUNK_MORE: break;
        case JW_HTTP_CHUNK_DATA:
            if (body_append(s, data, n))
                return -1;
            break;
        case JW_HTTP_CHUNK_DONE:
            /* Bytes after the body (a pipelined request) are dropped with the connection. */
            s->state = S_DISPATCH;
            lws_callback_on_writable(s->wsi);
            return 0;
        case JW_HTTP_CHUNK_ERROR:
            if (req->body)
                OPENSSL_cleanse(req->body, req->body_len); /* the route never sees it */
            jw_http_reply_error(req, err.status, err.code, "%s", err.message);
            respond_and_close(s->wsi, s);
            return 0;
        }
    }
    return 0;
}

/* lws read all the body it was told of. */
static void on_body_complete(jw_http_ctx *ctx, struct lws *wsi, struct session *s)
{
    if (s->chunked) {
        /* lws' own bound (100 MB) came before the chunked body's end. */
        jw_http_reply_error(&s->req, 413, "body_too_large",
                            "chunked request body did not end within the limit of %zu bytes",
                            s->chunks.max_body);
        respond_and_close(wsi, s);
        return;
    }
    s->state = S_NEW; /* read: the route runs now, once */
    dispatch(ctx, wsi, s);
}

/*
 * Whether the "body" lws hands over is the request's own first line. lws
 * 4.1.6 reads a request with a body that came pipelined behind another one
 * (its headers already in lws' buffer) wrongly: it gives the start of that
 * buffer, the request line and headers, as the body, then calls
 * HTTP_BODY_COMPLETION over and over without moving on, inside one call -
 * the loop thread would spin for good. No route takes a body that starts
 * with the method and a space (all take JSON), so this is that case.
 */
static bool body_is_request_line(const jw_http_request *req, const char *in, size_t len)
{
    size_t m = strlen(req->method_name);

    while (len && (*in == '\r' || *in == '\n')) {
        in++;
        len--;
    }
    if (!len)
        return false;
    if (len > m)
        return memcmp(in, req->method_name, m) == 0 && in[m] == ' ';
    return memcmp(in, req->method_name, len) == 0;
}

static int on_body(jw_http_ctx *ctx, struct session *s, const void *in, size_t len)
{
    jw_http_request *req = &s->req;

    if (s->state != S_BODY || !len)
        return 0;
    if (!s->body_seen) {
        s->body_seen = true;
        if (body_is_request_line(req, in, len)) {
            /* Nothing ran: closing is the only way out of lws' loop, and tells the client. */
            jw_log_info("http req=%" PRIu64 " %s %s: a request with a body pipelined behind "
                        "another; closing the connection unanswered (send it once the "
                        "previous response has come)",
                        req->id, req->method_name, req->path);
            return -1;
        }
    }
    if (!s->route)
        return 0; /* the response is already decided: read and drop the body */
    if (s->chunked)
        return on_chunked_body(s, in, len);
    if (req->body_len + len > s->content_length || req->body_len + len > ctx->config->max_body)
        return -1; /* more than announced: lws would have stopped it; drop the connection */
    if (!req->body)
        req->body = jw_xmalloc(s->content_length + 1);
    memcpy(req->body + req->body_len, in, len);
    req->body_len += len;
    req->body[req->body_len] = '\0';
    return 0;
}

/* --- writing ------------------------------------------------------------- */

static int write_headers(struct lws *wsi, struct session *s)
{
    const jw_http_response *r = &s->req.resp;
    uint8_t buf[LWS_PRE + HEADER_ROOM], *start = buf + LWS_PRE, *p = start,
                                        *end = buf + sizeof(buf) - 1;

    if (lws_add_http_common_headers(wsi, (unsigned)r->status, r->content_type, r->len, &p, end))
        return -1;
    {
        const char *cc = r->cacheable && r->cache_control ? r->cache_control : "no-store";

        if ((!r->cacheable || r->cache_control) &&
            lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                         (const unsigned char *)cc, (int)strlen(cc), &p, end))
            return -1;
    }
    if (r->etag[0] &&
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ETAG, (const unsigned char *)r->etag,
                                     (int)strlen(r->etag), &p, end))
        return -1;
    if (r->page) {
        /* The page runs only its own scripts and styles, talks only to us. */
        static const struct {
            const char *name, *value;
        } page_headers[] = {
            {"content-security-policy:",
             "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
             "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; "
             "form-action 'self'; object-src 'none'"},
            /* x-frame-options and referrer-policy come with every response */
            {NULL, NULL},
        };

        for (int i = 0; page_headers[i].name; i++)
            if (lws_add_http_header_by_name(wsi, (const unsigned char *)page_headers[i].name,
                                            (const unsigned char *)page_headers[i].value,
                                            (int)strlen(page_headers[i].value), &p, end))
                return -1;
    }
    if (r->allow[0] &&
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ALLOW, (const unsigned char *)r->allow,
                                     (int)strlen(r->allow), &p, end))
        return -1;
    if (r->retry_after_s > 0) {
        char v[16];
        int n = snprintf(v, sizeof(v), "%d", r->retry_after_s);

        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_RETRY_AFTER, (const unsigned char *)v,
                                         n, &p, end))
            return -1;
    }
    if (r->close && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                 (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    return 0;
}

/* One lws_write per callback: the headers, then each body chunk. */
static int on_writeable(struct lws *wsi, struct session *s)
{
    jw_http_request *req = &s->req;
    uint8_t buf[LWS_PRE + BODY_CHUNK];
    size_t left, n;
    bool final;

    if (s->state == S_DISPATCH) {
        jw_http_ctx *ctx = lws_context_user(lws_get_context(wsi));

        if (!ctx)
            return -1;
        /* The body is complete: no body timeout runs while the route answers. */
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
        s->state = S_NEW;
        dispatch(ctx, wsi, s);
        return 0;
    }
    if (s->state == S_HEADERS) {
        if (write_headers(wsi, s)) {
            jw_log_warn("http req=%" PRIu64 " could not write response headers; closing", req->id);
            return -1;
        }
        s->state = S_BODY_OUT;
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (s->state != S_BODY_OUT)
        return 0;

    left = req->method == JW_HTTP_HEAD ? 0 : req->resp.len - s->sent;
    n = left < BODY_CHUNK ? left : BODY_CHUNK;
    final = n == left;
    if (n)
        memcpy(buf + LWS_PRE, req->resp.body + s->sent, n);
    if (lws_write(wsi, buf + LWS_PRE, n, final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
        return -1;
    s->sent += n;
    if (!final) {
        lws_callback_on_writable(wsi);
        return 0;
    }

    /* Only the path: the query may carry a token. */
    jw_log_debug("http req=%" PRIu64 " %s %s status=%d bytes=%zu", req->id, req->method_name,
                 req->path, req->resp.status, req->resp.len);
    set_writing(wsi, s, S_DONE);
    if (req->resp.close)
        return -1;
    /* This may free s (lws rebinds the protocol for the next request). */
    if (lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

/*
 * A socket was just accepted. Descriptors are handed out lowest first, so one
 * numbered at or past the ceiling means that many are open already: it is
 * closed at once. That holds --max-connections, and keeps a reserve of
 * descriptors for jobwire's own files (PostgreSQL, pipes, libcurl): without
 * it a flood would exhaust them, accept() would fail with EMFILE, and lws
 * would spin on the still-readable listener.
 */
static int accept_or_refuse(jw_http_ctx *ctx, int fd, const struct lws_filter_network_conn_args *a)
{
    int64_t now = jw_mono_us();
    bool refuse = false;

    ctx->admitted_fd = -1;
    if (ctx->fd_ceiling > 0 && fd >= ctx->fd_ceiling) {
        ctx->refused_connections++;
        if (!ctx->refused_logged_us || now - ctx->refused_logged_us >= 10000000) {
            ctx->refused_logged_us = now;
            jw_log_warn("connection limit reached: closing new connections (%" PRIu64
                        " so far; see --max-connections and the open-file limit)",
                        ctx->refused_connections);
        }
        return -1;
    }
    if (!ctx->limits || !a)
        return 0;
    jw_limits_ip_check(ctx->limits, (const struct sockaddr *)&a->cli_addr, now, &refuse);
    if (refuse) {
        if (!ctx->ip_refused_logged_us || now - ctx->ip_refused_logged_us >= 10000000) {
            ctx->ip_refused_logged_us = now;
            jw_log_warn("a client address is over its connection limit: closing its new "
                        "connections (see --max-connections-per-ip, --connection-rate-per-ip)");
        }
        return -1;
    }
    ctx->admitted_fd = fd;
    memcpy(&ctx->admitted_addr, &a->cli_addr, sizeof(ctx->admitted_addr));
    return 0;
}

/* The connection just admitted now exists: its address holds one more. */
static void hold_address(jw_http_ctx *ctx, struct lws *wsi)
{
    if (!ctx->limits || ctx->admitted_fd < 0 || lws_get_socket_fd(wsi) != ctx->admitted_fd)
        return;
    ctx->admitted_fd = -1;
    lws_set_opaque_user_data(
        wsi,
        jw_limits_ip_hold(ctx->limits, (const struct sockaddr *)&ctx->admitted_addr, jw_mono_us()));
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct session *s = user;
    jw_http_ctx *ctx;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        ctx = lws_context_user(lws_get_context(wsi));
        if (!s || !ctx)
            return -1;
        return on_request(ctx, wsi, s, in, len);

    case LWS_CALLBACK_HTTP_BODY:
        ctx = lws_context_user(lws_get_context(wsi));
        if (!s || !ctx)
            return -1;
        return on_body(ctx, s, in, len);

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        ctx = lws_context_user(lws_get_context(wsi));
        if (!s || !ctx)
            return -1;
        /*
         * lws 4.1.6 stays in its body state until the response is out
         * (lws_http_transaction_completed), and while bytes past the body
         * are buffered (a pipelined request, a stray CRLF) it comes back here
         * on each turn of the loop: the request ran once (on_body_complete
         * leaves S_BODY), so these are ignored.
         */
        if (s->state == S_BODY)
            on_body_complete(ctx, wsi, s);
        return 0;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /*
         * Upgrade: h2c. The routes are neither built nor tested for HTTP/2
         * (main.c), and lws 4.1.6 has no switch for cleartext h2. A server
         * may ignore an Upgrade (RFC 9110, 7.8): lws reads the token again
         * after this returns, and emptied it matches neither websocket nor
         * h2c, so the request is served as the HTTP/1.1 it came as.
         */
        if (in && strcasecmp(in, "websocket") != 0)
            ((char *)in)[0] = '\0';
        return 0;

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (s && (s->state == S_DISPATCH || s->state == S_HEADERS || s->state == S_BODY_OUT))
            return on_writeable(wsi, s);
        break;

    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        ctx = lws_context_user(lws_get_context(wsi));
        return ctx ? accept_or_refuse(ctx, (int)(lws_intptr_t)in, user) : 0;

    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        ctx = lws_context_user(lws_get_context(wsi));
        if (ctx)
            hold_address(ctx, wsi);
        return 0;

    case LWS_CALLBACK_WSI_DESTROY:
        ctx = lws_context_user(lws_get_context(wsi));
        if (ctx && ctx->limits && lws_get_opaque_user_data(wsi)) {
            jw_limits_release(ctx->limits, lws_get_opaque_user_data(wsi));
            lws_set_opaque_user_data(wsi, NULL);
        }
        break;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* A WebSocket upgrade without a subprotocol lands here: the upgrade
         * hook (the Supabase endpoint) takes its own path, anything else is
         * refused rather than left holding a socket nobody answers. */
        ctx = lws_context_user(lws_get_context(wsi));
        if (!ctx || !ctx->upgrade.accept)
            return -1;
        return ctx->upgrade.accept(ctx->upgrade.arg, wsi);

    case LWS_CALLBACK_ESTABLISHED:
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_RECEIVE_PONG:
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    case LWS_CALLBACK_CLOSED:
        ctx = lws_context_user(lws_get_context(wsi));
        if (!ctx || !ctx->upgrade.callback) /* no hook took an upgrade: nothing to serve */
            return reason == LWS_CALLBACK_ESTABLISHED || reason == LWS_CALLBACK_RECEIVE ? -1 : 0;
        return ctx->upgrade.callback(ctx->upgrade.arg, wsi, reason, s ? &s->upgraded : NULL, in,
                                     len);

    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        /* Either may come first, or alone; release is idempotent. */
        if (s) {
            ctx = lws_context_user(lws_get_context(wsi));
            if (ctx)
                undefer(ctx, s);
            set_writing(wsi, s, S_DONE); /* a response cut short is no longer waited for */
            session_release(s);
        }
        break;

    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

const struct lws_protocols jw_http_protocol = {
    .name = "http",
    .callback = callback_http,
    .per_session_data_size = sizeof(struct session),
    /* A send() may take a whole response chunk or Supabase event (lws would otherwise cut
     * sends to the 4 KiB it reads in, for protocols without an rx_buffer_size). */
    .tx_packet_size = 65536,
};

/* lws prepends each entry, so the list is walked from the last one. */
static const struct lws_protocol_vhost_options vhost_headers[] = {
    {NULL, NULL, "x-content-type-options:", "nosniff"},
    {&vhost_headers[0], NULL, "x-frame-options:", "DENY"},
    {&vhost_headers[1], NULL, "referrer-policy:", "no-referrer"},
};

const struct lws_protocol_vhost_options *jw_http_vhost_headers(void)
{
    return &vhost_headers[2];
}
