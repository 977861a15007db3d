/*
 * limiter.c - per-address and per-user bounds. See limiter.h.
 */
#include "limiter.h"

#include "jw_error.h"
#include "jw_log.h"
#include "jw_map.h"
#include "jw_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 48 /* "6:" + 16 hex digits of a /64, or a UUID, or dotted IPv4 */
#define SWEEP_MIN 1024

typedef struct table table;

struct jw_limit_hold {
    char key[KEY_MAX];
    table *t;
    int open;
    double tokens; /* the bucket, as of last_us */
    int64_t last_us;
};

struct table {
    jw_map map;      /* key -> jw_limit_hold */
    int max_open;    /* 0: no bound */
    double per_s;    /* refill; 0: no rate bound */
    double burst;    /* bucket size */
    size_t sweep_at; /* sweep idle entries when the map grows to this */
};

struct jw_limits {
    table ip, user_jobs, user_otp, user_ws;
    uint64_t refused[JW_LIMIT__N];
};

static const char *const names[JW_LIMIT__N] = {
    [JW_LIMIT_IP_CONN] = "ip_connections",        [JW_LIMIT_IP_RATE] = "ip_connection_rate",
    [JW_LIMIT_USER_LIVE_JOBS] = "user_live_jobs", [JW_LIMIT_USER_JOBS] = "user_job_rate",
    [JW_LIMIT_USER_OTP] = "user_otp_rate",        [JW_LIMIT_USER_WS] = "user_websockets",
};

static void table_init(table *t, int max_open, double per_s, double burst)
{
    jw_map_init(&t->map);
    t->max_open = max_open;
    t->per_s = per_s;
    t->burst = burst;
    t->sweep_at = SWEEP_MIN;
}

static void table_release(table *t)
{
    const char *k;
    void *v;

    for (size_t i = 0; jw_map_next(&t->map, &i, &k, &v);)
        free(v);
    jw_map_release(&t->map);
}

static void refill(const table *t, jw_limit_hold *h, int64_t now_us)
{
    if (t->per_s <= 0 || now_us <= h->last_us)
        return;
    h->tokens += (double)(now_us - h->last_us) / 1e6 * t->per_s;
    if (h->tokens > t->burst)
        h->tokens = t->burst;
    h->last_us = now_us;
}

static bool idle(const table *t, jw_limit_hold *h, int64_t now_us)
{
    refill(t, h, now_us);
    return h->open == 0 && (t->per_s <= 0 || h->tokens >= t->burst);
}

/* Drops entries that hold nothing and whose bucket is full again. */
static void sweep(table *t, int64_t now_us)
{
    jw_limit_hold **gone = jw_xmalloc(t->map.count * sizeof(*gone));
    size_t n = 0;
    const char *k;
    void *v;

    for (size_t i = 0; jw_map_next(&t->map, &i, &k, &v);)
        if (idle(t, v, now_us))
            gone[n++] = v;
    for (size_t i = 0; i < n; i++) {
        jw_map_del(&t->map, gone[i]->key);
        free(gone[i]);
    }
    free(gone);
    t->sweep_at = t->map.count * 2 > SWEEP_MIN ? t->map.count * 2 : SWEEP_MIN;
}

static jw_limit_hold *entry(table *t, const char *key, int64_t now_us)
{
    jw_limit_hold *h = jw_map_get(&t->map, key);

    if (h) {
        refill(t, h, now_us);
        return h;
    }
    if (t->map.count >= t->sweep_at)
        sweep(t, now_us);
    h = jw_xcalloc(1, sizeof(*h));
    snprintf(h->key, sizeof(h->key), "%s", key);
    h->t = t;
    h->tokens = t->burst;
    h->last_us = now_us;
    jw_map_put(&t->map, h->key, h);
    return h;
}

jw_limits *jw_limits_new(const jw_config *cfg)
{
    jw_limits *l = jw_xcalloc(1, sizeof(*l));

    table_init(&l->ip, cfg->max_connections_per_ip, cfg->connection_rate_per_ip,
               2.0 * cfg->connection_rate_per_ip);
    /* A minute's budget, all of which may be spent at once. */
    table_init(&l->user_jobs, 0, cfg->job_rate_per_user / 60.0, cfg->job_rate_per_user);
    table_init(&l->user_otp, 0, cfg->otp_rate_per_user / 60.0, cfg->otp_rate_per_user);
    table_init(&l->user_ws, cfg->max_ws_per_user, 0, 0);
    return l;
}

void jw_limits_free(jw_limits *l)
{
    if (!l)
        return;
    table_release(&l->ip);
    table_release(&l->user_jobs);
    table_release(&l->user_otp);
    table_release(&l->user_ws);
    free(l);
}

/* "4:192.0.2.1", or "6:" and the /64 in hex: one host's addresses count as one. */
static bool ip_key(const struct sockaddr *sa, char key[KEY_MAX])
{
    if (sa->sa_family == AF_INET) {
        char a[INET_ADDRSTRLEN];

        if (!inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, a, sizeof(a)))
            return false;
        snprintf(key, KEY_MAX, "4:%s", a);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

        if (IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr)) {
            snprintf(key, KEY_MAX, "4:%u.%u.%u.%u", b[12], b[13], b[14], b[15]);
            return true;
        }
        snprintf(key, KEY_MAX, "6:%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
                 b[5], b[6], b[7]);
        return true;
    }
    return false;
}

void jw_limits_ip_check(jw_limits *l, const struct sockaddr *sa, int64_t now_us, bool *refuse)
{
    char key[KEY_MAX];
    jw_limit_hold *h;

    *refuse = false;
    if ((!l->ip.max_open && l->ip.per_s <= 0) || !ip_key(sa, key))
        return;
    h = entry(&l->ip, key, now_us);
    if (l->ip.per_s > 0) {
        if (h->tokens < 1.0) {
            l->refused[JW_LIMIT_IP_RATE]++;
            *refuse = true;
            return;
        }
        h->tokens -= 1.0;
    }
    if (l->ip.max_open && h->open >= l->ip.max_open) {
        l->refused[JW_LIMIT_IP_CONN]++;
        *refuse = true;
    }
}

jw_limit_hold *jw_limits_ip_hold(jw_limits *l, const struct sockaddr *sa, int64_t now_us)
{
    char key[KEY_MAX];
    jw_limit_hold *h;

    if (!l->ip.max_open || !ip_key(sa, key))
        return NULL;
    h = entry(&l->ip, key, now_us);
    h->open++;
    return h;
}

jw_limit_hold *jw_limits_ws_hold(jw_limits *l, const char *user, int64_t now_us)
{
    jw_limit_hold *h = entry(&l->user_ws, user, now_us);

    if (l->user_ws.max_open && h->open >= l->user_ws.max_open) {
        l->refused[JW_LIMIT_USER_WS]++;
        return NULL;
    }
    h->open++;
    return h;
}

void jw_limits_release(jw_limits *l, jw_limit_hold *h)
{
    (void)l;
    if (h && h->open > 0)
        h->open--;
}

int jw_limits_take(jw_limits *l, jw_limit_kind kind, const char *user, int64_t now_us,
                   int *retry_after_s)
{
    table *t = kind == JW_LIMIT_USER_OTP ? &l->user_otp : &l->user_jobs;
    jw_limit_hold *h;

    *retry_after_s = 0;
    if (t->per_s <= 0)
        return 0;
    h = entry(t, user, now_us);
    if (h->tokens >= 1.0) {
        h->tokens -= 1.0;
        return 0;
    }
    l->refused[kind]++;
    *retry_after_s = (int)((1.0 - h->tokens) / t->per_s) + 1;
    return JW_ELIMIT;
}

void jw_limits_count_refusal(jw_limits *l, jw_limit_kind kind)
{
    l->refused[kind]++;
}

size_t jw_limits_entries(const jw_limits *l)
{
    return l->ip.map.count + l->user_jobs.map.count + l->user_otp.map.count + l->user_ws.map.count;
}

uint64_t jw_limits_refused(const jw_limits *l, jw_limit_kind kind)
{
    return l->refused[kind];
}

const char *jw_limit_name(jw_limit_kind kind)
{
    return kind >= 0 && kind < JW_LIMIT__N ? names[kind] : "?";
}
