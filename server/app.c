/*
 * app.c - the engine's ports, implemented on the loop thread (see app.h).
 */
#include "app.h"

#include "jw_error.h"
#include "jw_log.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Microseconds, like the store's commit latency plus the trip back: 0.1 ms .. 10 s. */
static const jw_hist_spec publish_delay_spec = {
    .n = 16,
    .le = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
           2500000, 5000000, 10000000},
    .decimals = 6,
};

/* ---- ports ------------------------------------------------------------------ */

static int64_t port_now(void *ctx)
{
    (void)ctx;
    return jw_now_us();
}

static uint64_t port_random(void *ctx)
{
    uint64_t v = 0;

    (void)ctx;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        jw_oom("random bytes");
    return v;
}

static void port_submit(void *ctx, jw_batch *b)
{
    jw_app *app = ctx;
    int rc = jw_store_submit(app->store, b);

    if (rc != 0) {
        /* Shutting down: answer it ourselves so the engine sees the refusal. */
        b->status = rc;
        jw_engine_on_commit(app->engine, b);
    }
}

static void port_publish(void *ctx, jw_delta *d)
{
    jw_app *app = ctx;

    app->published++;
    jw_ws_publish(app->ws, d);
    jw_rt_publish(app->rt, d);
}

static void on_sul(lws_sorted_usec_list_t *sul)
{
    jw_app *app = lws_container_of(sul, jw_app, sul);

    jw_timers_run(app->timers, jw_now_us());
}

/* The timer queue's earliest deadline changed: re-arm the one lws timer. */
static void timers_wake_at(void *arg, int64_t at_us)
{
    jw_app *app = arg;
    int64_t delay;

    if (at_us == INT64_MAX) {
        lws_sul_schedule(app->ctx, 0, &app->sul, on_sul, LWS_SET_TIMER_USEC_CANCEL);
        return;
    }
    delay = at_us - jw_now_us();
    lws_sul_schedule(app->ctx, 0, &app->sul, on_sul, delay > 0 ? delay : 1);
}

static void deliver_reply(void *arg, jw_provider_reply *r)
{
    jw_app *app = arg;

    jw_engine_on_reply(app->engine, r);
}

static void wake_loop(void *arg)
{
    lws_cancel_service(arg);
}

/* ---- life cycle ---------------------------------------------------------------- */

static int start_provider(jw_app *app, jw_engine_ports *p, char *err, size_t errlen)
{
    if (app->cfg->provider_sim) {
        jw_sim_config sc;

        jw_sim_config_init(&sc);
        if (app->cfg->sim && *app->cfg->sim &&
            jw_sim_config_parse(&sc, app->cfg->sim, err, errlen) != 0)
            return JW_ECONFIG;
        app->sim = jw_sim_new(&sc);
        if (app->cfg->has_secret_key) {
            /* A key derived for this purpose only, never the secret key itself. */
            unsigned char k[32];
            unsigned int klen = 0;

            HMAC(EVP_sha256(), app->cfg->secret_key, sizeof(app->cfg->secret_key),
                 (const unsigned char *)"jobwire sim otp codes", 21, k, &klen);
            jw_sim_set_code_key(app->sim, k);
            OPENSSL_cleanse(k, sizeof(k));
        }
        app->sim_port = jw_sim_provider_new(app->sim, app->timers, NULL, NULL, deliver_reply, app);
        p->provider = jw_sim_provider_port(app->sim_port);
        return 0;
    }
    {
        sigset_t block, old;

        /* The curl thread inherits this mask: signals stay with the loop. */
        sigemptyset(&block);
        sigaddset(&block, SIGTERM);
        sigaddset(&block, SIGINT);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        app->http_provider = jw_http_provider_new(app->cfg->provider, app->cfg->provider_timeout_ms,
                                                  wake_loop, app->ctx, err, errlen);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (!app->http_provider)
        return JW_ECONFIG;
    p->provider = jw_http_provider_port(app->http_provider);
    return 0;
}

int jw_app_new(jw_app **out, const jw_config *cfg, struct lws_context *ctx, jw_http_ctx *http,
               jw_store *store, char *err, size_t errlen)
{
    jw_app *app = jw_xcalloc(1, sizeof(*app));
    jw_engine_ports ports = {0};
    jw_engine_config ecfg = {0};
    int rc;

    *out = NULL;
    app->cfg = cfg;
    app->ctx = ctx;
    app->http = http;
    app->store = store;
    app->timers = jw_timers_new(timers_wake_at, app);
    jw_hist_init(&app->publish_delay, &publish_delay_spec);
    rc = jw_auth_new(cfg->admin_key, cfg->jwt_secret, &app->auth, err, errlen);
    if (rc == 0)
        rc = jw_auth_expect(app->auth, cfg->jwt_audience, cfg->jwt_issuer, err, errlen);
    if (rc != 0)
        goto fail;
    rc = start_provider(app, &ports, err, errlen);
    if (rc != 0)
        goto fail;
    ports.ctx = app;
    ports.now_us = port_now;
    ports.random = port_random;
    ports.submit = port_submit;
    ports.publish = port_publish;
    ports.timers = app->timers;
    ecfg.otp_timeout_login_ms = (int64_t)cfg->otp_timeout_login_s * 1000;
    ecfg.otp_timeout_payment_ms = (int64_t)cfg->otp_timeout_payment_s * 1000;
    ecfg.provider_timeout_ms = cfg->provider_timeout_ms;
    ecfg.retry_delay_scale = cfg->retry_scale;
    ecfg.finished_job_ttl_ms = (int64_t)cfg->finished_job_ttl_s * 1000;
    ecfg.session_key = cfg->has_secret_key ? cfg->secret_key : NULL;
    app->engine = jw_engine_new(&ecfg, &ports);
    app->limits = jw_limits_new(cfg);
    http->limits = app->limits;
    http->admitted_fd = -1;
    app->ws = jw_ws_new(app);
    app->rt = jw_rt_new(app);
    http->app = app;
    *out = app;
    return 0;
fail:
    jw_app_free(app);
    return rc;
}

int jw_app_recover(jw_app *app, char *err, size_t errlen)
{
    json_t *loaded = NULL;
    int rc = jw_db_load_sessions(app->cfg->database_url, &loaded, err, errlen);

    if (rc != 0)
        return rc;
    rc = jw_engine_load_sessions(app->engine, loaded);
    json_decref(loaded);
    jw_log_info("loaded %d reusable login sessions", rc);
    rc = jw_db_load_active(app->cfg->database_url, &loaded, err, errlen);
    if (rc != 0)
        return rc;
    rc = jw_engine_recover(app->engine, loaded, err, errlen);
    json_decref(loaded);
    if (rc < 0)
        return rc;
    jw_log_info("recovered %d unfinished jobs", rc);
    return 0;
}

static void on_commit(jw_batch *b, void *arg)
{
    jw_app *app = arg;

    /* Measured just before the engine publishes the batch's deltas. */
    if (b->status == 0) {
        int64_t waited = jw_mono_us() - b->queued_us;

        jw_hist_observe(&app->publish_delay, waited > 0 ? (uint64_t)waited : 0);
    }
    jw_engine_on_commit(app->engine, b);
}

static void on_read(jw_read *r, void *arg)
{
    jw_app *app = arg;

    if (r->tag == JW_READ_TAG_WS)
        jw_ws_on_read(app->ws, r);
    else if (r->tag == JW_READ_TAG_RT)
        jw_rt_on_read(app->rt, r);
    else
        jw_api_on_read(app, r);
}

void jw_app_drain(jw_app *app)
{
    /* Every committed batch of this round first, then one write per connection. */
    jw_ws_hold(app->ws);
    jw_rt_hold(app->rt);
    jw_store_drain(app->store, on_commit, app);
    jw_store_drain_reads(app->store, on_read, app);
    jw_ws_flush(app->ws);
    jw_rt_flush(app->rt);
    if (app->http_provider)
        jw_http_provider_drain(app->http_provider, deliver_reply, app);
}

void jw_app_stop(jw_app *app)
{
    if (!app)
        return;
    lws_sul_schedule(app->ctx, 0, &app->sul, on_sul, LWS_SET_TIMER_USEC_CANCEL);
    /* Providers first: they must not deliver into a freed engine, nor wake a
     * destroyed context. */
    jw_sim_provider_free(app->sim_port);
    app->sim_port = NULL;
    jw_http_provider_free(app->http_provider);
    app->http_provider = NULL;
}

void jw_app_free(jw_app *app)
{
    if (!app)
        return;
    jw_sim_provider_free(app->sim_port);
    jw_http_provider_free(app->http_provider);
    jw_engine_free(app->engine);
    jw_ws_free(app->ws);
    jw_rt_free(app->rt);
    jw_sim_free(app->sim);
    jw_timers_free(app->timers);
    jw_auth_free(app->auth);
    if (app->http) {
        app->http->app = NULL;
        app->http->limits = NULL;
    }
    jw_limits_free(app->limits);
    free(app);
}
