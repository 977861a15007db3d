/*
 * main.c - jobwire's start-up, service loop and shutdown.
 *
 * Order matters:
 *  1. configuration (exit 2 when invalid, TLS files that do not load
 *     included), logging, signals;
 *  2. schema migrations, retried with capped backoff while PostgreSQL is
 *     unreachable (a SIGTERM/SIGINT meanwhile ends the process cleanly);
 *  3. the lws context and its one vhost, which binds the listen address
 *     (exit 1 when it cannot) and, with a certificate, speaks only TLS there;
 *  4. the store and its db thread, whose wake-ups call lws_cancel_service on
 *     the context created in 3 - valid from then on, even before the loop
 *     runs, because the wake-up is an eventfd that the loop reads later;
 *  5. the loop until a signal; then stop the store (joining its thread,
 *     so nothing calls lws_cancel_service any more), destroy the context,
 *     free the store.
 *
 * The loop is libuv's (epoll), lws attached to it as a foreign loop: lws'
 * own loop is poll(), which scans every socket at every wake-up - with a few
 * hundred connections and a wake-up per commit and timer that scan was 40%
 * of the process' CPU (scripts/bench-ws lat). service_once() is one turn.
 *
 * Threads: main is the loop thread. The db thread is started with SIGTERM
 * and SIGINT blocked, so the signal handler always runs on the loop thread.
 */
#include "app.h"
#include "config.h"
#include "http.h"
#include "wire.h"

#include "jw_error.h"
#include "jw_log.h"
#include "jw_store.h"
#include "jw_util.h"

#include <arpa/inet.h>
#include <uv.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIGRATE_BACKOFF_MIN_MS 500
#define MIGRATE_BACKOFF_MAX_MS 5000
#define STORE_DRAIN_MS 5000

static volatile sig_atomic_t stop_requested;
/* Set while the context may be woken; read by the signal handler. */
static struct lws_context *volatile signal_context;

/*
 * Async-signal-safe: a flag, and lws_cancel_service, which only writes to
 * the loop's eventfd. It would also log at lws' debug level, which is
 * therefore never enabled (see route_lws_logs).
 */
static void on_signal(int sig)
{
    struct lws_context *ctx = signal_context;

    (void)sig;
    stop_requested = 1;
    if (ctx)
        lws_cancel_service(ctx);
}

static int install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL))
        return -1;
    /* A peer closing mid-write must not kill the process; writes report EPIPE. */
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL);
}

static void lws_log_emit(int level, const char *line)
{
    int jl = JW_LOG_DEBUG;
    size_t n = strlen(line);

    if (level & LLL_ERR)
        jl = JW_LOG_ERROR;
    else if (level & LLL_WARN)
        jl = JW_LOG_WARN;
    else if (level & (LLL_NOTICE | LLL_USER))
        jl = JW_LOG_INFO;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    jw_log(jl, "lws: %.*s", (int)n, line);
}

/*
 * lws logs go through jw_log. Only errors and warnings by default; with
 * --log-level debug also notices and info. Never LLL_DEBUG: it is very
 * chatty, and lws_cancel_service logs at that level from our signal handler.
 */
static void route_lws_logs(int log_level)
{
    int mask = LLL_ERR | LLL_WARN;

    if (log_level >= JW_LOG_DEBUG)
        mask |= LLL_NOTICE | LLL_INFO | LLL_USER;
    lws_set_log_level(mask, lws_log_emit);
}

/* Sleeps ms milliseconds in short steps; false when a stop was requested. */
static bool sleep_unless_stopped(int ms)
{
    while (ms > 0 && !stop_requested) {
        int step = ms < 100 ? ms : 100;
        struct timespec ts = {0, (long)step * 1000000L};

        nanosleep(&ts, NULL);
        ms -= step;
    }
    return !stop_requested;
}

/* libpq messages span lines ("...refused\n\tIs the server running..."); a log line must not. */
static void one_line(char *s)
{
    char *out = s;

    for (const char *in = s; *in; in++) {
        char ch = (*in == '\n' || *in == '\r' || *in == '\t') ? ' ' : *in;

        if (ch == ' ' && out > s && out[-1] == ' ')
            continue;
        *out++ = ch;
    }
    while (out > s && out[-1] == ' ')
        out--;
    *out = '\0';
}

/* Returns 0, JW_ECLOSED when a signal ended the wait, or the migration error. */
static int migrate_with_retry(const jw_config *cfg)
{
    char err[512];
    int delay_ms = MIGRATE_BACKOFF_MIN_MS;

    for (int attempt = 1;; attempt++) {
        int rc = jw_db_migrate(cfg->database_url, err, sizeof(err));

        if (rc == 0)
            return 0;
        one_line(err);
        if (rc != JW_EDBDOWN) {
            jw_log_error("database migrations failed (%s): %s", jw_err_name(rc), err);
            return rc;
        }
        /* jw_db_migrate's messages come from libpq and never carry the password. */
        jw_log_warn("database unreachable at start-up (attempt %d): %s; retrying in %d ms", attempt,
                    err, delay_ms);
        if (!sleep_unless_stopped(delay_ms))
            return JW_ECLOSED;
        delay_ms = delay_ms * 2 > MIGRATE_BACKOFF_MAX_MS ? MIGRATE_BACKOFF_MAX_MS : delay_ms * 2;
    }
}

/* "127.0.0.1:8080" or "[::1]:8080". */
static void format_listen(const jw_config *cfg, char *out, size_t size)
{
    snprintf(out, size, cfg->listen_ipv6 ? "[%s]:%d" : "%s:%d", cfg->listen_host, cfg->listen_port);
}

/* Why the vhost could not bind (lws only logs an errno number); NULL when it can bind now. */
static const char *bind_problem(const jw_config *cfg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1, err = 0;

    memset(&ss, 0, sizeof(ss));
    if (cfg->listen_ipv6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)cfg->listen_port);
        inet_pton(AF_INET6, cfg->listen_host, &a->sin6_addr);
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;

        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)cfg->listen_port);
        inet_pton(AF_INET, cfg->listen_host, &a->sin_addr);
        len = sizeof(*a);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return strerror(errno);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0)
        err = errno;
    close(fd);
    if (err == EADDRINUSE)
        return "address in use (is another jobwire running? pick another port with --listen)";
    if (err == EADDRNOTAVAIL)
        return "not an address of this machine (check the host in --listen)";
    if (err == EACCES)
        return "permission denied (ports below 1024 need privileges)";
    return err ? strerror(err) : NULL;
}

static void wake_loop(void *arg)
{
    lws_cancel_service(arg);
}

static uv_loop_t loop;
static bool loop_ready;

/* One turn of the loop: waits for I/O or lws' next timer, handles what is ready. */
static void service_once(void)
{
    uv_run(&loop, UV_RUN_ONCE);
}

/*
 * On a foreign loop lws' destruction takes two calls: the first closes its
 * handles, which close as the loop turns until nothing is left on it; the
 * second frees the context (lws 4.1.6 does not, by itself, for a foreign
 * loop: LeakSanitizer showed the context's tables left behind).
 */
static void destroy_context(struct lws_context *ctx)
{
    lws_context_destroy(ctx);
    uv_run(&loop, UV_RUN_DEFAULT);
    lws_context_destroy(ctx);
}

/*
 * No lws validity timers (no secs_since_valid_*): WebSocket liveness is
 * jobwire's own (wsconn.h, --ws-ping-interval), on the loop's monotonic heap.
 * Without a policy lws would apply its default, a ping after 300 s.
 */
static const uint32_t idle_backoff[] = {1000};
static const lws_retry_bo_t idle_policy = {
    .retry_ms_table = idle_backoff,
    .retry_ms_table_count = 1,
};

/* The open-file limit as jobwire sizes by it (at most 2^20 descriptors). */
static long open_file_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1048576 ? 1048576 : (long)rl.rlim_cur;
}

/*
 * Every connection is a descriptor: take all the process may have (lws sizes
 * its tables by it), and size the WebSocket write gates' table by it, before
 * any thread that may call send() starts.
 */
static void raise_open_file_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            jw_log_warn("cannot raise the open-file limit: %s", strerror(errno));
    }
    jw_wire_init((int)open_file_limit());
}

/*
 * The connection ceiling http.c enforces at accept: --max-connections above
 * the descriptors open now, and never within a reserve (an eighth of the
 * limit, 16..256) of the open-file limit, kept for jobwire's own files.
 */
static void set_connection_ceiling(const jw_config *cfg, jw_http_ctx *hctx)
{
    long limit = open_file_limit(), reserve, base = 0, ceiling;
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);

    if (probe >= 0) {
        base = probe; /* the lowest free descriptor: all below it are in use */
        close(probe);
    }
    reserve = limit / 8 < 16 ? 16 : limit / 8 > 256 ? 256 : limit / 8;
    ceiling = base + cfg->max_connections;
    if (ceiling > limit - reserve)
        ceiling = limit - reserve;
    if (ceiling <= base)
        ceiling = base + 1;
    hctx->fd_ceiling = (int)ceiling;
    if (ceiling - base < cfg->max_connections)
        jw_log_warn("connections: at most %ld at once, not %d: the open-file limit is %ld "
                    "(raise it, e.g. LimitNOFILE= in systemd)",
                    ceiling - base, cfg->max_connections, limit);
}

/* The context and its one vhost (*vh), which serves app.c's protocols. */
static struct lws_context *create_context(const jw_config *cfg, jw_http_ctx *hctx,
                                          struct lws_vhost **vh)
{
    struct lws_context_creation_info info;
    struct lws_context *ctx;
    char where[96];

    static void *foreign_loops[1];

    foreign_loops[0] = &loop;
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_LIBUV;
    info.foreign_loops = foreign_loops;
    if (cfg->tls_cert)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.user = hctx;
    info.server_string = "jobwire";
    info.max_http_header_data = 8192; /* room for a JWT in a header or ?token= */
    ctx = lws_create_context(&info);
    if (!ctx) {
        jw_log_error("cannot create the libwebsockets context (see the lws error above; "
                     "its libuv glue is the package libwebsockets-evlib-uv)");
        return NULL;
    }

    memset(&info, 0, sizeof(info));
    info.vhost_name = "jobwire";
    info.port = cfg->listen_port;
    /* iface holds an IP literal, so lws binds that address only. */
    info.iface = cfg->listen_host;
    info.protocols = jw_app_protocols();
    info.headers = jw_http_vhost_headers();
    info.keepalive_timeout = 30;
    info.retry_and_idle_policy = &idle_policy;
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    /*
     * An IPv4 literal on an IPv6 socket would not bind that address (lws
     * would listen on [::]), so IPv4 hosts get an IPv4 socket and IPv6 hosts
     * an IPv6-only one.
     */
    if (cfg->listen_ipv6)
        info.options |= LWS_SERVER_OPTION_IPV6_V6ONLY_MODIFY | LWS_SERVER_OPTION_IPV6_V6ONLY_VALUE;
    else
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (cfg->tls_cert) {
        /*
         * lws 4.1 reads this option from the vhost's info as well as the
         * context's: without it here the vhost quietly serves plain HTTP.
         * config.c has checked that the files load and match. Plain HTTP on
         * this port then fails.
         */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
        /* TLS 1.2 at least, whatever the system's OpenSSL configuration allows. */
        info.ssl_options_set = (long)(SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1);
        /*
         * HTTP/1.1 only: lws would offer h2 by ALPN, and neither the routes'
         * replies nor the WebSocket hub are built or tested for HTTP/2.
         */
        info.alpn = "http/1.1";
    }
    *vh = lws_create_vhost(ctx, &info);
    if (!*vh) {
        const char *why = bind_problem(cfg);

        /* The address binds: then it was TLS, e.g. a file replaced since config.c read it. */
        if (!why)
            why = cfg->tls_cert
                      ? "the TLS certificate or key did not load (see the lws error above)"
                      : "address in use?";
        format_listen(cfg, where, sizeof(where));
        jw_log_error("cannot listen on %s: %s", where, why);
        destroy_context(ctx);
        return NULL;
    }
    return ctx;
}

static int start_store(const jw_config *cfg, struct lws_context *ctx, int64_t incarnation,
                       jw_store **out)
{
    jw_store_config scfg = {
        .conninfo = cfg->database_url,
        .node_id = cfg->node_id,
        .node_incarnation = incarnation,
        .node_ttl_ms = cfg->node_ttl_s * 1000,
        .max_group_deltas = cfg->db_max_group,
        .events_retention_s = cfg->events_retention_s,
        .prune_batch = cfg->events_retention_batch,
        .prune_interval_ms = cfg->events_retention_interval_s * 1000,
        .wake = wake_loop,
        .wake_arg = ctx,
    };
    sigset_t old;
    int rc;

    jw_signals_block(&old); /* for the db thread */
    rc = jw_store_start(out, &scfg);
    jw_signals_restore(&old);
    return rc;
}

static void log_start(const jw_config *cfg)
{
    char where[96], db[512], provider[512];

    format_listen(cfg, where, sizeof(where));
    jw_log_redact_conninfo(cfg->database_url, db, sizeof(db));
    /* A provider URL may carry credentials too. */
    jw_log_redact_conninfo(cfg->provider, provider, sizeof(provider));
    jw_log_info("listening on %s://%s (%s) provider=%s db=%s fanout_threads=%d",
                cfg->tls_cert ? "https" : "http", where, cfg->dev ? "dev mode" : "production",
                provider, db, cfg->fanout_threads);
    if (cfg->tls_cert) {
        jw_log_info("tls: certificate %s valid until %s; WebSocket at wss://%s/ws; restart "
                    "jobwire after renewing it",
                    cfg->tls_cert, cfg->tls_not_after[0] ? cfg->tls_not_after : "(unknown)", where);
        if (cfg->tls_expired)
            jw_log_warn("tls: the certificate in %s expired on %s: clients will refuse it",
                        cfg->tls_cert, cfg->tls_not_after);
    }
    if (cfg->dev)
        jw_log_warn("dev mode: secrets are optional; never run dev mode in production");
    if (cfg->origins_derived &&
        (strcmp(cfg->listen_host, "0.0.0.0") == 0 || strcmp(cfg->listen_host, "::") == 0))
        jw_log_warn("listening on every interface without --origins: a browser page can open "
                    "a WebSocket only from %s, an address no browser shows; set --origins to "
                    "the page's origin (e.g. http://HOSTNAME:%d)",
                    cfg->origins[0], cfg->listen_port);
    for (size_t i = 0; i < cfg->origin_count; i++)
        jw_log_info("browser pages may open WebSockets from %s%s", cfg->origins[i],
                    cfg->origins_derived ? " (derived from --listen; set --origins to change)"
                                         : "");
}

int main(int argc, char **argv)
{
    jw_http_ctx hctx;
    struct lws_context *ctx = NULL;
    struct lws_vhost *vh = NULL;
    jw_store *store = NULL;
    jw_app *app = NULL;
    int64_t incarnation = 0;
    jw_config cfg;
    char err[1024];
    int rc, status = 0;

    rc = jw_config_load(&cfg, argc, argv, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "jobwire: %s\n", err);
        return 2;
    }
    if (cfg.action == JW_CONFIG_HELP) {
        jw_config_print_help(stdout);
        jw_config_release(&cfg);
        return 0;
    }
    if (cfg.action == JW_CONFIG_VERSION) {
        jw_config_print_version(stdout);
        jw_config_release(&cfg);
        return 0;
    }

    jw_log_set_level(cfg.log_level);
    route_lws_logs(cfg.log_level);
    raise_open_file_limit();
    if (install_signals()) {
        jw_log_error("cannot install signal handlers: %s", strerror(errno));
        jw_config_release(&cfg);
        return 1;
    }

    memset(&hctx, 0, sizeof(hctx));
    hctx.config = &cfg;
    jw_map_init(&hctx.deferred);
    rc = migrate_with_retry(&cfg);
    if (rc == JW_ECLOSED) {
        jw_log_info("stop requested while waiting for the database; exiting");
        goto out;
    }
    if (rc) {
        status = 1;
        goto out;
    }
    hctx.migrations_applied = true;
    hctx.migrations = jw_db_migration_count();

    /* Signals stay ours (installed above): the loop gets no signal handles. */
    rc = uv_loop_init(&loop);
    if (rc) {
        jw_log_error("cannot create the event loop: %s", uv_strerror(rc));
        status = 1;
        goto out;
    }
    loop_ready = true;
    ctx = create_context(&cfg, &hctx, &vh);
    if (!ctx) {
        status = 1;
        goto out;
    }
    signal_context = ctx;

    /* This process as a node: before recovery claims the jobs it may run. */
    rc = jw_db_node_register(cfg.database_url, cfg.node_id, cfg.node_ttl_s * 1000, &incarnation,
                             err, sizeof(err));
    if (rc) {
        one_line(err);
        jw_log_error("cannot register node %s: %s", cfg.node_id, err);
        status = 1;
        goto out;
    }
    jw_log_info("node %s (incarnation %lld), ttl %d s", cfg.node_id, (long long)incarnation,
                cfg.node_ttl_s);
    rc = start_store(&cfg, ctx, incarnation, &store);
    if (rc) {
        jw_log_error("cannot start the database store: %s", jw_strerror(rc));
        status = 1;
        goto out;
    }
    hctx.store = store;

    rc = jw_app_new(&app, &cfg, ctx, vh, &hctx, store, err, sizeof(err));
    if (rc) {
        jw_log_error("cannot start: %s", err);
        status = 1;
        goto out;
    }
    /* Start-up may block: nothing is served yet. */
    rc = jw_app_recover(app, err, sizeof(err));
    if (rc) {
        one_line(err);
        jw_log_error("cannot recover unfinished jobs (%s): %s", jw_err_name(rc), err);
        status = 1;
        goto out;
    }

    rc = jw_app_start_cluster(app, incarnation);
    if (rc) {
        jw_log_error("cannot start the cluster thread: %s", jw_strerror(rc));
        status = 1;
        goto out;
    }

    set_connection_ceiling(&cfg, &hctx);
    log_start(&cfg);
    /* A signal after this check still ends the wait: it cancels the service. */
    while (!stop_requested) {
        /*
         * While writes of a publish round wait that no fan-out helper has
         * taken yet, the loop makes one chunk of them here, then a turn that
         * does not wait: what is ready meanwhile waits for one chunk, never
         * for a round.
         */
        if (jw_app_help(app))
            uv_run(&loop, UV_RUN_NOWAIT);
        else
            service_once();
    }
    if (stop_requested)
        jw_log_info("stop requested; shutting down");

out:
    /*
     * The leases go back first, so another node resumes the jobs within a
     * second: nothing more is claimed, what is queued commits (or is
     * refused), the engine takes the answers, and the leases are handed back.
     * Anything this node still tries for those jobs afterwards is fenced off.
     */
    jw_app_stop_cluster(app);
    if (store)
        jw_store_stop(store, STORE_DRAIN_MS);
    if (app)
        jw_app_drain(app);
    if (incarnation &&
        jw_db_node_release(cfg.database_url, cfg.node_id, incarnation, err, sizeof(err)) != 0) {
        one_line(err);
        jw_log_warn("node %s: cannot hand the leases back (%s); they go after --node-ttl",
                    cfg.node_id, err);
    }
    /* WebSocket clients are told next: close 1001, given a second to go. */
    if (app && ctx && jw_app_close_connections(app)) {
        int64_t until = jw_mono_us() + 1000000;

        do
            service_once();
        while (jw_app_connections(app) && jw_mono_us() < until);
    }
    /* The drain answered the requests that waited on the store (201, or 503 when
     * PostgreSQL was away): write them out, given up to a second. */
    if (ctx) {
        int64_t until = jw_mono_us() + 1000000;

        while (jw_http_responding(&hctx) && jw_mono_us() < until)
            service_once();
    }
    jw_app_stop(app);
    signal_context = NULL;
    if (ctx)
        destroy_context(ctx);
    if (loop_ready && uv_loop_close(&loop))
        jw_log_warn("the event loop still had handles at exit");
    jw_app_free(app);
    hctx.store = NULL;
    jw_store_free(store);
    jw_map_release(&hctx.deferred);
    jw_wire_shutdown(); /* every thread that sends has been joined */
    if (!status)
        jw_log_info("stopped");
    jw_config_release(&cfg);
    return status;
}
