/*
 * app.c - the composition root: builds every part, wires each to the narrow
 * interface it needs, and implements the engine's ports on the loop thread
 * (see app.h).
 */
#include "app.h"

#include "api.h"
#include "auth.h"
#include "fanout.h"
#include "inbox.h"
#include "limiter.h"
#include "metrics.h"
#include "pages.h"
#include "realtime.h"
#include "services.h"
#include "ws.h"
#include "wsconn.h"

#include "jw_engine.h"
#include "jw_error.h"
#include "jw_hist.h"
#include "jw_log.h"
#include "jw_timers.h"
#include "jw_util.h"
#include "providers/http_provider.h"
#include "providers/sim.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct jw_app {
    const jw_config *cfg;
    struct lws_context *ctx;
    jw_http_ctx *http;
    jw_services sv;             /* the store, engine, auth and limits, lent to the parts below */
    jw_timers *timers;          /* wall clock: the engine's, the sim's, token expiries */
    lws_sorted_usec_list_t sul; /* the native timer armed for timers' earliest */
    jw_timers *mono_timers;     /* monotonic: connections' liveness and auth deadlines */
    lws_sorted_usec_list_t mono_sul; /* the native timer armed for mono_timers' earliest */
    jw_wsmem wsmem;                  /* both endpoints' queued output (--ws-max-queue-total) */
    jw_sim *sim;                     /* sim mode only */
    jw_sim_provider *sim_port;       /* sim mode only */
    jw_http_provider *http_provider; /* http mode only */
    /*
     * The provider behind the engine's port. Calls started while this node's
     * leases are not trusted (no heartbeat within --node-ttl less a second)
     * wait in held, and start at the next good heartbeat.
     */
    jw_provider provider;
    jw_provider_call **held;
    size_t nheld, capheld;
    bool stopped;  /* jw_app_stop: no timer fires any more */
    bool draining; /* in drain: a connection's callback must not start another */
    /* Jobs claimed from other nodes whose old copy here still had a batch
     * out (jw_engine_adopt's later): given again after each store round. */
    json_t *adopt_later;
    uint64_t published; /* committed deltas handed to the fan-out */
    jw_ws *ws;          /* the jobwire.v1 hub */
    jw_rt *rt;          /* the Supabase Realtime endpoint */
    jw_api api;
    jw_metrics metrics;
    jw_http_route routes[6]; /* the HTTP side's table (build_routes) */
    /* Per committed batch, microseconds from its hand-over to the store to
     * its deltas' publication: what a watching client waits. */
    jw_hist publish_delay;
    /* The part of it after the store answered: the loop picking the batch up
     * (behind a publish round or a long turn). */
    jw_hist publish_wait;
};

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
    int rc = jw_store_submit(app->sv.store, b);

    if (rc != 0) {
        /* Shutting down: answer it ourselves so the engine sees the refusal. */
        b->status = rc;
        jw_engine_on_commit(app->sv.engine, b);
    }
}

/*
 * Both hubs: the deltas the mirror publishes (mirror.h). Batched like the
 * engine's: the end of a journal read or of the engine's batch (both
 * port_published) sends them.
 */
static void hubs_publish(void *ctx, jw_delta *d)
{
    jw_app *app = ctx;

    jw_ws_publish_batched(app->ws, d);
    jw_rt_publish(app->rt, d);
}

/* A delta the mirror's state held already: only the Supabase channels lack it. */
static void rt_publish(void *ctx, jw_delta *d)
{
    jw_rt_publish(((jw_app *)ctx)->rt, d);
}

static void port_publish(void *ctx, jw_delta *d)
{
    jw_app *app = ctx;

    app->published++;
    /* A job with a mirror (it changed hands while watched) publishes in its order. */
    if (jw_mirror_local(app->sv.mirror, d))
        return;
    jw_ws_publish_batched(app->ws, d);
    jw_rt_publish(app->rt, d);
}

/* A batch's deltas leave as one queue entry per jobwire.v1 watcher. */
static void port_published(void *ctx)
{
    jw_ws_publish_end(((jw_app *)ctx)->ws);
}

static void port_left(void *ctx, const char *job_id)
{
    jw_app *app = ctx;

    jw_mirror_left(app->sv.mirror, job_id);
}

/* ---- the mirror's ports (mirror.h) -------------------------------------------- */

static bool mirror_watched(void *ctx, const char *job_id)
{
    jw_app *app = ctx;

    return jw_ws_watching(app->ws, job_id) || jw_rt_watching(app->rt, job_id);
}

static bool mirror_wildcard(void *ctx, const char *owner)
{
    return jw_rt_wildcards(((jw_app *)ctx)->rt, owner);
}

static int mirror_read(void *ctx, jw_read *r)
{
    return jw_store_read(((jw_app *)ctx)->sv.store, r);
}

static bool mirror_driven(void *ctx, const char *job_id)
{
    return jw_engine_job_driven(((jw_app *)ctx)->sv.engine, job_id);
}

static int64_t mirror_engine_seq(void *ctx, const char *job_id)
{
    return jw_engine_committed_seq(((jw_app *)ctx)->sv.engine, job_id);
}

static json_t *mirror_engine_snapshot(void *ctx, const char *job_id)
{
    return jw_engine_snapshot(((jw_app *)ctx)->sv.engine, job_id);
}

static const char *mirror_engine_owner(void *ctx, const char *job_id)
{
    return jw_engine_job_owner(((jw_app *)ctx)->sv.engine, job_id);
}

static jw_mirror *new_mirror(jw_app *app)
{
    const jw_mirror_ports mp = {
        .ctx = app,
        .publish = hubs_publish,
        .publish_wild = rt_publish,
        .published = port_published,
        .watched = mirror_watched,
        .wildcard = mirror_wildcard,
        .read = mirror_read,
        .driven = mirror_driven,
        .engine_seq = mirror_engine_seq,
        .engine_snapshot = mirror_engine_snapshot,
        .engine_owner = mirror_engine_owner,
        .timers = app->timers,
    };

    return jw_mirror_new(app->cfg->node_id, &mp);
}

static void on_sul(lws_sorted_usec_list_t *sul)
{
    jw_app *app = lws_container_of(sul, jw_app, sul);

    jw_timers_run(app->timers, jw_now_us());
}

static void on_mono_sul(lws_sorted_usec_list_t *sul)
{
    jw_app *app = lws_container_of(sul, jw_app, mono_sul);

    jw_timers_run(app->mono_timers, jw_mono_us());
}

/* A heap's earliest deadline changed (now on its clock): re-arm its lws timer. */
static void arm_native(jw_app *app, lws_sorted_usec_list_t *sul, sul_cb_t cb, int64_t at_us,
                       int64_t now)
{
    if (at_us == INT64_MAX || app->stopped) {
        lws_sul_schedule(app->ctx, 0, sul, cb, LWS_SET_TIMER_USEC_CANCEL);
        return;
    }
    lws_sul_schedule(app->ctx, 0, sul, cb, at_us - now > 0 ? at_us - now : 1);
}

static void timers_wake_at(void *arg, int64_t at_us)
{
    jw_app *app = arg;

    arm_native(app, &app->sul, on_sul, at_us, jw_now_us());
}

static void mono_wake_at(void *arg, int64_t at_us)
{
    jw_app *app = arg;

    arm_native(app, &app->mono_sul, on_mono_sul, at_us, jw_mono_us());
}

static void deliver_reply(void *arg, jw_provider_reply *r)
{
    jw_app *app = arg;

    jw_engine_on_reply(app->sv.engine, r);
}

static void wake_loop(void *arg)
{
    lws_cancel_service(arg);
}

static bool leases_trusted(jw_app *app)
{
    int64_t until;
    bool dead;

    jw_store_node_state(app->sv.store, &until, &dead);
    return !dead && jw_mono_us() < until;
}

/* The engine's provider port: the provider's, unless the leases are not trusted. */
static int port_provider_start(void *ctx, jw_provider_call *call)
{
    jw_app *app = ctx;

    if (!app->nheld && leases_trusted(app))
        return app->provider.start(app->provider.ctx, call);
    if (app->nheld == app->capheld) {
        app->capheld = app->capheld ? app->capheld * 2 : 16;
        app->held = jw_xrealloc(app->held, app->capheld * sizeof(*app->held));
    }
    app->held[app->nheld++] = call;
    return 0;
}

/*
 * After each store round: a node declared dead exits at once (another node
 * may hold its jobs: nothing more of them may be committed or called); held
 * calls start once the leases are trusted again - those of jobs still driven
 * here (a job whose lease was lost meanwhile calls nobody).
 */
static void check_node(jw_app *app)
{
    int64_t until;
    bool dead;

    jw_store_node_state(app->sv.store, &until, &dead);
    if (dead) {
        if (jw_store_node_replaced(app->sv.store))
            jw_log_error("another jobwire process started with this --node-id (%s) on the same "
                         "database and took over its jobs; exiting without committing. Give "
                         "each process its own --node-id to run several",
                         app->cfg->node_id);
        else
            jw_log_error("this node was declared dead (paused or cut off past --node-ttl); "
                         "exiting without committing");
        fflush(stderr);
        _exit(1);
    }
    if (!app->nheld || jw_mono_us() >= until)
        return;
    for (size_t i = 0; i < app->nheld; i++) {
        jw_provider_call *c = app->held[i];
        uint64_t id = c->id;

        if (!jw_engine_job_driven(app->sv.engine, c->job_id)) {
            jw_provider_call_free(c);
            continue;
        }
        if (app->provider.start(app->provider.ctx, c) != 0) {
            jw_provider_reply *r = jw_provider_reply_new(id, JW_PROVIDER_ERROR);

            r->retryable = true;
            snprintf(r->message, sizeof(r->message), "provider refused the call");
            jw_engine_on_reply(app->sv.engine, r);
        }
    }
    app->nheld = 0;
}

/* ---- wiring ------------------------------------------------------------------- */

static json_t *sim_inbox(void *arg)
{
    return jw_sim_inbox_json(arg);
}

/* The HTTP side's upgrade hooks: the Supabase endpoint takes upgrades without a subprotocol. */
static int rt_accept(void *rt, struct lws *wsi)
{
    return jw_rt_accept_upgrade(rt, wsi);
}

static int rt_callback(void *rt, struct lws *wsi, enum lws_callback_reasons reason, void **slot,
                       void *in, size_t len)
{
    return jw_rt_callback(rt, wsi, reason, slot, in, len);
}

/* The route table. Adding a route is adding a row; the zeroed row ends it. */
static void build_routes(jw_app *app)
{
    const jw_http_route routes[] = {
        {.method = JW_HTTP_GET, .path = "/healthz", .handler = jw_page_healthz},
        {.method = JW_HTTP_GET, .path = "/readyz", .handler = jw_page_readyz},
        {.method = JW_HTTP_GET,
         .path = "/metrics",
         .handler = jw_metrics_handle,
         .arg = &app->metrics},
        /* The API checks methods itself, so its 405s name the right Allow. */
        {.method = JW_HTTP_GET | JW_HTTP_HEAD | JW_HTTP_POST | JW_HTTP_PUT | JW_HTTP_PATCH |
                   JW_HTTP_DELETE | JW_HTTP_OPTIONS,
         .prefix = "/api/",
         .handler = jw_api_handle,
         .arg = &app->api},
        /* Last: the web page's files, embedded from web-client/. */
        {.method = JW_HTTP_GET | JW_HTTP_HEAD,
         .prefix = "/",
         .exists = jw_page_exists,
         .handler = jw_page_static},
        {0},
    };

    _Static_assert(sizeof(routes) == sizeof(app->routes), "app->routes holds the table");
    memcpy(app->routes, routes, sizeof(routes));
}

/* Hands every part its narrow interface; the parts exist. */
static void wire(jw_app *app)
{
    app->api = (jw_api){.sv = &app->sv, .http = app->http};
    if (app->sim) {
        app->api.sim_inbox = sim_inbox;
        app->api.sim_inbox_arg = app->sim;
    }
    app->metrics = (jw_metrics){
        .sv = &app->sv,
        .ws = app->ws,
        .rt = app->rt,
        .published = &app->published,
        .mirror = app->sv.mirror,
        .publish_delay = &app->publish_delay,
        .publish_wait = &app->publish_wait,
        .calls_held = &app->nheld,
    };
    build_routes(app);
    app->http->routes = app->routes;
    app->http->upgrade =
        (jw_http_upgrade){.accept = rt_accept, .callback = rt_callback, .arg = app->rt};
    app->http->limits = app->sv.limits;
    app->http->admitted_fd = -1;
}

/* Drains the loop's mailboxes whenever another thread wakes it. */
static int callback_loop(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    jw_app **slot;

    (void)user;
    (void)in;
    (void)len;
    if (reason != LWS_CALLBACK_EVENT_WAIT_CANCELLED)
        return 0;
    /* The app bound itself to the vhost (jw_app_new); wake-ups before that wait. */
    slot = lws_protocol_vh_priv_get(lws_get_vhost(wsi), lws_get_protocol(wsi));
    if (slot && *slot)
        jw_app_drain(*slot);
    return 0;
}

#define LOOP_PROTOCOL "jobwire-loop"

static const struct lws_protocols loop_protocol = {
    .name = LOOP_PROTOCOL,
    .callback = callback_loop,
};

/* protocols[0] takes plain HTTP; lws keeps a pointer, hence static storage. */
static struct lws_protocols protocols[4];

const struct lws_protocols *jw_app_protocols(void)
{
    protocols[0] = jw_http_protocol;
    protocols[1] = jw_ws_protocol;
    protocols[2] = loop_protocol;
    memset(&protocols[3], 0, sizeof(protocols[3]));
    return protocols;
}

/* Makes the vhost's wake-ups drain this app, and its jobwire.v1 connections the hub's. */
static int bind_vhost(jw_app *app, struct lws_vhost *vh, char *err, size_t errlen)
{
    const struct lws_protocols *p = lws_vhost_name_to_protocol(vh, LOOP_PROTOCOL);
    jw_app **slot = p ? lws_protocol_vh_priv_zalloc(vh, p, sizeof(*slot)) : NULL;

    if (!slot || jw_ws_bind(app->ws, vh) != 0) {
        snprintf(err, errlen, "the vhost lacks jobwire's protocols (see jw_app_protocols)");
        return JW_EINVAL;
    }
    *slot = app;
    return 0;
}

/* ---- life cycle ---------------------------------------------------------------- */

static void catch_up(void *arg);

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
        sigset_t old;

        jw_signals_block(&old); /* for the curl thread */
        app->http_provider = jw_http_provider_new(app->cfg->provider, app->cfg->provider_timeout_ms,
                                                  wake_loop, app->ctx, err, errlen);
        jw_signals_restore(&old);
    }
    if (!app->http_provider)
        return JW_ECONFIG;
    p->provider = jw_http_provider_port(app->http_provider);
    return 0;
}

int jw_app_new(jw_app **out, const jw_config *cfg, struct lws_context *ctx, struct lws_vhost *vh,
               jw_http_ctx *http, jw_store *store, char *err, size_t errlen)
{
    jw_app *app = jw_xcalloc(1, sizeof(*app));
    jw_engine_ports ports = {0};
    jw_engine_config ecfg = {0};
    int rc;

    *out = NULL;
    app->cfg = cfg;
    app->ctx = ctx;
    app->http = http;
    app->sv.cfg = cfg;
    app->sv.store = store;
    app->sv.catch_up = catch_up;
    app->sv.catch_up_arg = app;
    app->timers = jw_timers_new(timers_wake_at, app);
    app->sv.timers = app->timers;
    app->mono_timers = jw_timers_new(mono_wake_at, app);
    app->sv.mono_timers = app->mono_timers;
    jw_hist_init(&app->publish_delay, &publish_delay_spec);
    jw_hist_init(&app->publish_wait, &publish_delay_spec);
    rc = jw_auth_new(cfg->admin_key, cfg->jwt_secret, &app->sv.auth, err, errlen);
    if (rc == 0)
        rc = jw_auth_expect(app->sv.auth, cfg->jwt_audience, cfg->jwt_issuer, err, errlen);
    if (rc != 0)
        goto fail;
    rc = start_provider(app, &ports, err, errlen);
    if (rc != 0)
        goto fail;
    app->provider = ports.provider;
    ports.provider.ctx = app;
    ports.provider.start = port_provider_start;
    ports.provider.destroy = NULL; /* jw_app_stop frees the provider itself */
    ports.ctx = app;
    ports.now_us = port_now;
    ports.random = port_random;
    ports.submit = port_submit;
    ports.publish = port_publish;
    ports.published = port_published;
    ports.left = port_left;
    ports.timers = app->timers;
    ecfg.otp_timeout_login_ms = (int64_t)cfg->otp_timeout_login_s * 1000;
    ecfg.otp_timeout_payment_ms = (int64_t)cfg->otp_timeout_payment_s * 1000;
    ecfg.provider_timeout_ms = cfg->provider_timeout_ms;
    ecfg.retry_delay_scale = cfg->retry_scale;
    ecfg.finished_job_ttl_ms = (int64_t)cfg->finished_job_ttl_s * 1000;
    ecfg.session_key = cfg->has_secret_key ? cfg->secret_key : NULL;
    app->sv.engine = jw_engine_new(&ecfg, &ports);
    app->sv.inbox = jw_inbox_new(cfg, app->sv.engine, store, app->timers);
    app->sv.limits = jw_limits_new(cfg);
    app->sv.fanout = jw_fanout_new(cfg->fanout_threads, wake_loop, app->ctx);
    if (!app->sv.fanout) {
        snprintf(err, errlen, "cannot start %d fan-out threads", cfg->fanout_threads);
        rc = JW_EIO;
        goto fail;
    }
    jw_wsmem_init(&app->wsmem, (size_t)cfg->ws_max_queue_total, app->mono_timers);
    app->sv.wsmem = &app->wsmem;
    app->ws = jw_ws_new(&app->sv);
    app->rt = jw_rt_new(&app->sv);
    app->sv.mirror = new_mirror(app);
    rc = bind_vhost(app, vh, err, errlen);
    if (rc != 0)
        goto fail;
    wire(app);
    *out = app;
    return 0;
fail:
    jw_app_free(app);
    return rc;
}

int jw_app_recover(jw_app *app, char *err, size_t errlen)
{
    json_t *loaded = NULL;
    int64_t others = 0;
    int rc = jw_db_load_sessions(app->cfg->database_url, &loaded, err, errlen);

    if (rc != 0)
        return rc;
    rc = jw_engine_load_sessions(app->sv.engine, loaded);
    json_decref(loaded);
    jw_log_info("loaded %d reusable login sessions", rc);
    /* The claim commits before any call of those jobs is re-issued. */
    rc = jw_db_load_active(app->cfg->database_url, app->cfg->node_id, app->cfg->node_ttl_s * 1000,
                           &loaded, &others, err, errlen);
    if (rc != 0)
        return rc;
    rc = jw_engine_recover(app->sv.engine, loaded, err, errlen);
    json_decref(loaded);
    if (rc < 0)
        return rc;
    jw_log_info("recovered %d unfinished jobs", rc);
    if (others)
        jw_log_info("recovery: %lld unfinished jobs belong to live nodes; left to them",
                    (long long)others);
    return 0;
}

static void on_commit(jw_batch *b, void *arg)
{
    jw_app *app = arg;

    /* Measured just before the engine publishes the batch's deltas. */
    if (b->status == 0) {
        int64_t now = jw_mono_us(), waited = now - b->queued_us, late = now - b->done_us;

        jw_hist_observe(&app->publish_delay, waited > 0 ? (uint64_t)waited : 0);
        jw_hist_observe(&app->publish_wait, late > 0 ? (uint64_t)late : 0);
    }
    jw_engine_on_commit(app->sv.engine, b);
}

/* Each read goes back to whoever asked, through the completion it carries. */
static void on_read(jw_read *r, void *arg)
{
    (void)arg;
    if (r->done)
        r->done(r, r->done_arg);
    else
        jw_read_free(r); /* nobody asked for the answer */
}

/* Resumes claimed jobs; those whose old copy here is still busy wait in adopt_later. */
static void adopt(jw_app *app, const json_t *claimed)
{
    json_t *later = json_array();
    int n;

    if (!later)
        jw_oom("json array");
    n = jw_engine_adopt(app->sv.engine, claimed, later);
    if (n) {
        jw_log_info("takeover: resumed %d jobs", n);
        jw_inbox_catch_up(app->sv.inbox); /* commands sent to their old node */
    }
    if (json_array_size(later)) {
        if (!app->adopt_later)
            app->adopt_later = json_array();
        if (!app->adopt_later || json_array_extend(app->adopt_later, later) != 0)
            jw_oom("json array");
    }
    json_decref(later);
}

/* What the other nodes said (db/cluster.h). */
static void on_notice(const jw_notice *n, void *arg)
{
    jw_app *app = arg;

    switch (n->kind) {
    case JW_NOTICE_CLAIMED: adopt(app, n->claimed); break;
    /* The inbox (inbox.h) and the cross-node fan-out (mirror.h): a wake-up, then the rows. */
    case JW_NOTICE_INBOX: jw_inbox_on_notice(app->sv.inbox, n->payload); break;
    case JW_NOTICE_LISTENING:
        jw_inbox_catch_up(app->sv.inbox);
        jw_mirror_catch_up(app->sv.mirror);
        break;
    case JW_NOTICE_EVENTS: jw_mirror_notice(app->sv.mirror, n->payload); break;
    }
}

/* Cluster thread: another node listens now; the store notifies its commits again. */
static void peer_joined(void *arg)
{
    jw_store_peer_joined(arg);
}

int jw_app_start_cluster(jw_app *app, int64_t incarnation)
{
    jw_cluster_config cc = {
        .conninfo = app->cfg->database_url,
        .node_id = app->cfg->node_id,
        .incarnation = incarnation,
        .ttl_ms = app->cfg->node_ttl_s * 1000,
        .wake = wake_loop,
        .wake_arg = app->ctx,
        .peer_joined = peer_joined,
        .peer_arg = app->sv.store,
    };
    sigset_t old;
    int rc;

    jw_signals_block(&old); /* for the cluster thread */
    rc = jw_cluster_start(&app->sv.cluster, &cc);
    jw_signals_restore(&old);
    return rc;
}

void jw_app_stop_cluster(jw_app *app)
{
    if (app)
        jw_cluster_stop(app->sv.cluster);
}

size_t jw_app_help(jw_app *app)
{
    return app ? jw_fanout_help(app->sv.fanout) : 0;
}

/*
 * A publish round: every committed batch first, then one write per
 * connection. The whole of the loop's mailboxes when a wake-up brought it
 * (everything), else only the committed batches (catch_up).
 */
static void drain(jw_app *app, bool everything)
{
    app->draining = true;
    jw_ws_hold(app->ws);
    jw_rt_hold(app->rt);
    /* Writes the helpers finished: what their connections were given meanwhile joins
     * this round. */
    jw_fanout_drain(app->sv.fanout);
    jw_store_drain(app->sv.store, on_commit, app);
    if (everything) {
        check_node(app);
        if (app->adopt_later && json_array_size(app->adopt_later)) {
            json_t *again = app->adopt_later;

            app->adopt_later = NULL;
            adopt(app, again);
            json_decref(again);
        }
        if (app->sv.cluster)
            jw_cluster_drain(app->sv.cluster, on_notice, app);
        jw_store_drain_reads(app->sv.store, on_read, NULL);
    }
    jw_ws_flush(app->ws);
    jw_rt_flush(app->rt);
    if (everything && app->http_provider)
        jw_http_provider_drain(app->http_provider, deliver_reply, app);
    app->draining = false;
}

void jw_app_drain(jw_app *app)
{
    if (!app->draining)
        drain(app, true);
}

/*
 * Before a connection's receive or write callback, when batches committed
 * since the last round (jw_sv_catch_up): publish them now. The store's wake-up
 * is one event among those of the loop's turn, handled in whatever order the
 * poll returned them; in a crowd's burst of client messages a turn runs to
 * thousands of callbacks, and committed deltas waited for it to end.
 */
static void catch_up(void *arg)
{
    jw_app *app = arg;

    if (!app->draining && !app->stopped)
        drain(app, false);
}

size_t jw_app_close_connections(jw_app *app)
{
    return jw_ws_close_all(app->ws) + jw_rt_close_all(app->rt);
}

size_t jw_app_connections(const jw_app *app)
{
    jw_ws_stats ws;
    jw_rt_stats rt;

    jw_ws_get_stats(app->ws, &ws);
    jw_rt_get_stats(app->rt, &rt);
    return ws.connections + rt.connections;
}

void jw_app_stop(jw_app *app)
{
    if (!app)
        return;
    /*
     * No timer fires from here on: the engine's retry timers would start
     * calls on a freed provider while the context is destroyed. Freeing the
     * providers cancels their timers, which re-arms the native one unless
     * stopped is set first.
     */
    app->stopped = true;
    lws_sul_schedule(app->ctx, 0, &app->sul, on_sul, LWS_SET_TIMER_USEC_CANCEL);
    lws_sul_schedule(app->ctx, 0, &app->mono_sul, on_mono_sul, LWS_SET_TIMER_USEC_CANCEL);
    /* Providers first: they must not deliver into a freed engine, nor wake a
     * destroyed context. */
    jw_sim_provider_free(app->sim_port);
    app->sim_port = NULL;
    jw_http_provider_free(app->http_provider);
    app->http_provider = NULL;
    /* Nor may the fan-out helpers: their writes under way finish, and later ones (at
     * the context's destruction) are drained as the endpoints are freed. */
    jw_fanout_finish(app->sv.fanout);
    jw_fanout_set_wake(app->sv.fanout, NULL, NULL);
}

void jw_app_free(jw_app *app)
{
    if (!app)
        return;
    jw_sim_provider_free(app->sim_port);
    jw_http_provider_free(app->http_provider);
    jw_cluster_free(app->sv.cluster);
    json_decref(app->adopt_later);
    jw_mirror_free(app->sv.mirror); /* before the engine: it has the engine's jobs' ports */
    app->sv.mirror = NULL;
    jw_engine_free(app->sv.engine);
    jw_inbox_free(app->sv.inbox); /* after the engine, which may hold its tasks */
    jw_ws_free(app->ws);
    jw_rt_free(app->rt);
    jw_wsmem_release(&app->wsmem);  /* after the endpoints, before the heap of its timer */
    jw_fanout_free(app->sv.fanout); /* after the endpoints, which borrow it */
    jw_sim_free(app->sim);
    jw_timers_free(app->timers);
    jw_timers_free(app->mono_timers);
    jw_auth_free(app->sv.auth);
    if (app->http && app->http->routes == app->routes) {
        app->http->routes = NULL;
        app->http->upgrade = (jw_http_upgrade){0};
        app->http->limits = NULL;
    }
    jw_limits_free(app->sv.limits);
    for (size_t i = 0; i < app->nheld; i++)
        jw_provider_call_free(app->held[i]);
    free(app->held);
    free(app);
}
