/* metrics.h - GET /metrics in Prometheus text format (admin key). Loop thread. */
#ifndef JW_METRICS_H
#define JW_METRICS_H

#include "http.h"

void jw_metrics_handle(jw_http_ctx *ctx, jw_http_request *req);

#endif
