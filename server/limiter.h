/*
 * limiter.h - what one client address or one user may take of the server.
 *
 * Two kinds of bound, each kept per key (a client address, a user id):
 *  - open: how many of something one key holds at once (connections);
 *    jw_limits_open takes one or refuses, jw_limits_close gives it back;
 *  - rate: a token bucket of `burst` tokens refilled at `per_s` tokens a
 *    second; jw_limits_take spends one or refuses, saying when the next one
 *    is due (for Retry-After).
 *
 * The limits (docs/operations.md, Limits):
 *   JW_LIMIT_IP_CONN   open connections per client address (IPv6 by /64)
 *   JW_LIMIT_IP_RATE   new connections per client address per second
 *   JW_LIMIT_USER_JOBS job creations and retries per user per minute
 *   JW_LIMIT_USER_OTP  OTP submissions per user per minute
 *   JW_LIMIT_USER_WS   WebSocket connections open per user
 * A limit configured as 0 never refuses. Live jobs per user are the
 * engine's to count (jw_engine_user_live_jobs); jw_limits_refused counts
 * those refusals too, so /metrics has one family for every limit.
 *
 * Memory: an entry per key with something open or a bucket not yet full
 * again; idle entries are swept as the table grows, so a stream of one-off
 * keys costs O(keys seen in the last refill period).
 *
 * Loop thread only.
 */
#ifndef JW_LIMITER_H
#define JW_LIMITER_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef enum jw_limit_kind {
    JW_LIMIT_IP_CONN,
    JW_LIMIT_IP_RATE,
    JW_LIMIT_USER_LIVE_JOBS,
    JW_LIMIT_USER_JOBS,
    JW_LIMIT_USER_OTP,
    JW_LIMIT_USER_WS,
    JW_LIMIT__N
} jw_limit_kind;

typedef struct jw_limits jw_limits;
/* An entry of an open-count table: what a connection holds, to give back. */
typedef struct jw_limit_hold jw_limit_hold;

jw_limits *jw_limits_new(const jw_config *cfg);
/* NULL-safe. Holds still out are freed with it. */
void jw_limits_free(jw_limits *l);

/*
 * A new connection from sa (FILTER_NETWORK_CONNECTION): counts the attempt
 * against the address's rate, then checks its open connections. Returns
 * NULL to admit (*refuse false), or NULL with *refuse true to refuse.
 * Admitted, the caller confirms with jw_limits_ip_hold once the connection
 * exists; what it gets back goes to jw_limits_release when it is gone.
 */
void jw_limits_ip_check(jw_limits *l, const struct sockaddr *sa, int64_t now_us, bool *refuse);
jw_limit_hold *jw_limits_ip_hold(jw_limits *l, const struct sockaddr *sa, int64_t now_us);

/* One more WebSocket connection of user (a UUID); NULL (refused) past the limit. */
jw_limit_hold *jw_limits_ws_hold(jw_limits *l, const char *user, int64_t now_us);

/* Gives back what a hold took; NULL-safe. */
void jw_limits_release(jw_limits *l, jw_limit_hold *h);

/*
 * Spends one of user's JW_LIMIT_USER_JOBS or JW_LIMIT_USER_OTP tokens.
 * Returns 0, or JW_ELIMIT with *retry_after_s (>= 1) until the next one.
 */
int jw_limits_take(jw_limits *l, jw_limit_kind kind, const char *user, int64_t now_us,
                   int *retry_after_s);

/* Counts a refusal decided elsewhere (live jobs). */
void jw_limits_count_refusal(jw_limits *l, jw_limit_kind kind);

/* Keys with an entry now, every table together (/metrics). */
size_t jw_limits_entries(const jw_limits *l);

/* Refusals since start, per kind. */
uint64_t jw_limits_refused(const jw_limits *l, jw_limit_kind kind);
/* The label /metrics gives a kind: "ip_connections", "user_otp_rate", ... */
const char *jw_limit_name(jw_limit_kind kind);

#endif
