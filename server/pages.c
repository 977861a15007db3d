/*
 * pages.c - the routes that are not the API: /healthz, /readyz and the web
 * page's files (embedded from web-client/). See pages.h.
 */
#include "pages.h"

#include "web_assets.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The process is up and its loop turns: nothing else is checked. */
void jw_page_healthz(void *arg, jw_http_ctx *ctx, jw_http_request *req)
{
    (void)arg;
    (void)ctx;
    jw_http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/* Ready when the database is reachable and the schema is current. */
void jw_page_readyz(void *arg, jw_http_ctx *ctx, jw_http_request *req)
{
    jw_store_stats st;
    char reason[sizeof(st.last_error) + 64];

    (void)arg;
    if (!ctx->store || !ctx->migrations_applied) {
        jw_http_reply_json(
            req, 503,
            json_pack("{s:s,s:s,s:s}", "status", "not_ready", "database", "down", "reason",
                      ctx->store ? "database migrations not applied" : "store not started"));
        return;
    }
    jw_store_get_stats(ctx->store, &st);
    if (!st.connected) {
        /* last_error is redacted by the store: no password reaches the client. */
        snprintf(reason, sizeof(reason), "database unreachable%s%s", st.last_error[0] ? ": " : "",
                 st.last_error);
        jw_http_reply_json(req, 503,
                           json_pack("{s:s,s:s,s:s}", "status", "not_ready", "database", "down",
                                     "reason", reason));
        return;
    }
    jw_http_reply_json(req, 200,
                       json_pack("{s:s,s:s,s:i}", "status", "ready", "database", "up", "migrations",
                                 ctx->migrations));
}

/* --- the web page --------------------------------------------------------- */

static const char *content_type_of(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".ts", "text/plain; charset=utf-8"},
        {".md", "text/plain; charset=utf-8"},
        {NULL, NULL},
    };
    size_t n = strlen(name);

    for (int i = 0; types[i].ext; i++) {
        size_t e = strlen(types[i].ext);

        if (n > e && strcmp(name + n - e, types[i].ext) == 0)
            return types[i].type;
    }
    return "application/octet-stream";
}

static void etag_of(const struct jw_web_asset *a, char out[24])
{
    uint64_t h = 14695981039346656037ULL;

    for (size_t i = 0; i < a->len; i++) {
        h ^= a->data[i];
        h *= 1099511628211ULL;
    }
    snprintf(out, 24, "\"%016" PRIx64 "\"", h);
}

/* The embedded file a path names ("/" is index.html), or NULL. */
static const struct jw_web_asset *asset_of(const char *path, const char **name)
{
    *name = strcmp(path, "/") == 0 ? "index.html" : path + 1;
    for (int i = 0; jw_web_assets[i].name; i++)
        if (strcmp(jw_web_assets[i].name, *name) == 0)
            return &jw_web_assets[i];
    return NULL;
}

bool jw_page_exists(const char *path)
{
    const char *name;

    return asset_of(path, &name) != NULL;
}

/*
 * GET / is index.html; GET /<name> a top-level file of web-client/. The page
 * revalidates on every load (no-cache + ETag), so a new build is picked up at
 * once; the rest may be cached for five minutes.
 */
void jw_page_static(void *arg, jw_http_ctx *ctx, jw_http_request *req)
{
    const char *name;
    const struct jw_web_asset *a = asset_of(req->path, &name);
    jw_http_response *r = &req->resp;

    (void)arg;
    (void)ctx;
    if (!a) {
        jw_http_reply_error(req, 404, "not_found", "no route %s", req->path);
        return;
    }
    if (req->if_none_match) {
        char tag[24];

        etag_of(a, tag);
        if (strstr(req->if_none_match, tag)) {
            jw_http_reply(req, 304, content_type_of(name), "", 0);
            snprintf(r->etag, sizeof(r->etag), "%s", tag);
            r->cacheable = true;
            r->page = true;
            return;
        }
    }
    jw_http_reply(req, 200, content_type_of(name), a->data, a->len);
    etag_of(a, r->etag);
    r->cacheable = true;
    r->cache_control = strcmp(name, "index.html") == 0 ? "no-cache" : "public, max-age=300";
    r->page = true;
}
