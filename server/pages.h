/*
 * pages.h - the HTTP routes that are not the API: liveness, readiness and the
 * web page. Handlers for the route table app.c builds (http.h); none uses its
 * arg. Loop thread only; nothing blocks (readyz reads the store's stats).
 *
 *   GET /healthz   200 {"status":"ok"} while the loop turns
 *   GET /readyz    200 when PostgreSQL is reachable and migrated, else 503
 *                  with the reason (ctx->store, ctx->migrations_applied)
 *   GET /<file>    the embedded web-client/ files; / is index.html
 */
#ifndef JW_PAGES_H
#define JW_PAGES_H

#include "http.h"

void jw_page_healthz(void *arg, jw_http_ctx *ctx, jw_http_request *req);
void jw_page_readyz(void *arg, jw_http_ctx *ctx, jw_http_request *req);
void jw_page_static(void *arg, jw_http_ctx *ctx, jw_http_request *req);
/* Whether path names one of the web page's embedded files (the static route's exists). */
bool jw_page_exists(const char *path);

#endif
