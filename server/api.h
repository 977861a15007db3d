/*
 * api.h - the job API routes (docs/api.md). Loop thread only.
 */
#ifndef JW_API_H
#define JW_API_H

#include "http.h"

/* Every path under /api/: authenticates, then dispatches on method and path. */
void jw_api_handle(jw_http_ctx *ctx, jw_http_request *req);

#endif
