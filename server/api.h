/*
 * api.h - the job API routes (docs/api.md). Loop thread only.
 *
 * One route handler (http.h) for every path under /api/, whose arg is a
 * jw_api filled in by the composition root (app.c). The API borrows the
 * services (services.h): auth for every request, the engine for jobs, the
 * store for reads of jobs no longer in memory, the limits for per-user
 * budgets. Its database reads come back through their own callback
 * (jw_read.done), so nothing outside this file knows the API's reads.
 */
#ifndef JW_API_H
#define JW_API_H

#include "http.h"
#include "services.h"

#include <jansson.h>

typedef struct jw_api {
    const jw_services *sv; /* borrowed */
    jw_http_ctx *http;     /* answers deferred requests (jw_http_resume, jw_http_finish) */
    /*
     * Sim mode only: the simulated SMS messages as a new JSON array
     * ([{job_id, step_id, ...}], jw_sim_inbox_json). NULL outside sim mode:
     * the inbox route answers 404 then.
     */
    json_t *(*sim_inbox)(void *arg);
    void *sim_inbox_arg;
} jw_api;

/* Every path under /api/: authenticates, then dispatches on method and path. arg: a jw_api. */
void jw_api_handle(void *arg, jw_http_ctx *ctx, jw_http_request *req);

#endif
