/*
 * http_provider.h - the http provider: performs steps by POSTing the contract's
 * request (jw_provider.h) to <base_url>/steps/<step_name> with libcurl.
 *
 * Threads: the provider owns one thread of its own, which owns a CURLM and
 * runs every transfer (curl_multi_poll). The loop thread calls start()
 * through the port; start() serialises the request, wipes and frees the call
 * (the OTP goes no further than the request buffer, which is wiped when the
 * transfer ends), posts the request to the curl thread's mailbox and wakes
 * it with curl_multi_wakeup. Replies come back through an outbound mailbox
 * whose post calls wake(wake_arg) - the server makes that lws_cancel_service
 * - and the loop thread delivers them with jw_http_provider_drain(). The
 * port's start() and drain() are loop-thread calls; new/free are start-up
 * and shutdown calls on that thread too.
 *
 * Each request: POST, Content-Type: application/json, Idempotency-Key: the
 * call's key, deadline call->timeout_ms (default_timeout_ms when 0), no
 * redirects, http and https only, reply bodies up to JW_HTTP_REPLY_MAX bytes.
 *
 * What a reply becomes:
 *   2xx and a body that parses (jw_provider_reply_parse)  that reply
 *   2xx and a body that does not                           ERROR, not retryable
 *   5xx, 429                                               ERROR, retryable ("HTTP 503")
 *   other statuses (4xx, 3xx, 1xx)                         ERROR, not retryable ("HTTP 404")
 *   timeout                                                ERROR, retryable
 *                                                          ("timeout after 5000 ms")
 *   connect failure, reset, closed without a reply, DNS    ERROR, retryable
 *   reply over JW_HTTP_REPLY_MAX                           ERROR, not retryable
 * A non-2xx body that is a contract error reply lends its message
 * ("HTTP 400: amount must be positive"). Every call gets exactly one reply,
 * unless the provider is freed first.
 *
 * Logging: one info line per call with method, step, job, HTTP status or
 * transport error, and duration. Never the body, the OTP or the URL's
 * credentials.
 */
#ifndef JW_PROVIDERS_HTTP_PROVIDER_H
#define JW_PROVIDERS_HTTP_PROVIDER_H

#include "jw_provider.h"

#include <stddef.h>

#define JW_HTTP_URL_MAX 1024
#define JW_HTTP_REPLY_MAX (256 * 1024)
#define JW_HTTP_TIMEOUT_MAX_MS 600000
#define JW_HTTP_MAX_CONNECTIONS 64

typedef struct jw_http_provider jw_http_provider;

/*
 * Validates base_url (http:// or https://, a host, at most JW_HTTP_URL_MAX
 * bytes, no query or fragment; trailing '/' dropped) and
 * default_timeout_ms (1..JW_HTTP_TIMEOUT_MAX_MS), then starts the curl
 * thread. wake may be NULL (then the owner must poll drain). Returns the
 * provider, or NULL with the reason in err.
 */
jw_http_provider *jw_http_provider_new(const char *base_url, int default_timeout_ms,
                                       void (*wake)(void *arg), void *wake_arg, char *err,
                                       size_t errlen);

/* The port for the engine; its destroy() is jw_http_provider_free. */
jw_provider jw_http_provider_port(jw_http_provider *p);

/*
 * Delivers every reply that has arrived, in arrival order, to fn(arg, reply)
 * (the receiver frees each reply). Returns how many were delivered. fn may
 * start new calls.
 */
size_t jw_http_provider_drain(jw_http_provider *p, jw_provider_deliver_fn fn, void *arg);

/*
 * Stops the curl thread (transfers in progress are aborted, their calls
 * dropped without replies), drops undelivered replies, frees; NULL-safe.
 * wake is never called after this returns. Not from inside drain's fn.
 */
void jw_http_provider_free(jw_http_provider *p);

#endif
