/*
 * config_settings.c - the table of jobwire's settings, and the parsers of the
 * values that are more than a number, a duration, a switch, a choice or a
 * bounded string: the listen address, the database URL, the secrets, the
 * expected token claims, the provider and the browser origins. See
 * config_internal.h; config.c reads the table.
 *
 * Threads: the main thread, at start-up.
 */
#include "config_internal.h"

#include "auth.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define GENERATE_HINT "Generate one with: openssl rand -hex 32"

/* A whole number lo..hi, "of <unit>" in its message (unit may be NULL). */
#define INT_ROW(field, lo_, hi_, unit_)                                                            \
    .kind = CONFIG_INT, CONFIG_FIELD(field), .lo = (lo_), .hi = (hi_), .unit = (unit_)
/* A duration lo..hi seconds; expect is what its message says a value must be. */
#define DURATION_ROW(field, lo_, hi_, expect_)                                                     \
    .kind = CONFIG_DURATION, CONFIG_FIELD(field), .lo = (lo_), .hi = (hi_), .expect = (expect_)

static int parse_listen(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_database_url(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen);
static int parse_admin_key(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_jwt_secret(jw_config *c, const char *v, const char *name, char *err,
                            size_t errlen);
static int parse_jwt_audience(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen);
static int parse_jwt_issuer(jw_config *c, const char *v, const char *name, char *err,
                            size_t errlen);
static int parse_secret_key(jw_config *c, const char *v, const char *name, char *err,
                            size_t errlen);
static int parse_provider(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_origins(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_fanout_threads(jw_config *c, const char *v, const char *name, char *err,
                                size_t errlen);

static const struct config__choice log_levels[] = {
    {"error", JW_LOG_ERROR},
    {"warn", JW_LOG_WARN},
    {"info", JW_LOG_INFO},
    {"debug", JW_LOG_DEBUG},
    {NULL, 0},
};

/* The one table of settings. Order is --help order and parse order. */
const struct config__setting config__settings[] = {
    {
        .flag = "listen",
        .env = "JOBWIRE_LISTEN",
        .metavar = "HOST:PORT",
        .def = "127.0.0.1:8080",
        .help = "Address and port for HTTP and WebSocket. HOST is an IP address "
                "(IPv6 in brackets, e.g. [::1]:8080) or localhost; jobwire binds only that "
                "address. Use 0.0.0.0 to listen on every interface.",
        .parse = parse_listen,
    },
    {
        .flag = "database-url",
        .env = "DATABASE_URL",
        .metavar = "URL",
        .def_text = "none, required",
        .help = "PostgreSQL connection string (URI or key=value form), e.g. "
                "postgresql://user:password@127.0.0.1:5432/jobwire. Logged only with the "
                "password masked.",
        .parse = parse_database_url,
    },
    {
        .flag = "admin-key",
        .env = "JOBWIRE_ADMIN_KEY",
        .metavar = "KEY",
        .def_text = "none; required outside --dev",
        .help = "Bearer key for admin API calls (Authorization: Bearer KEY), at least 16 "
                "characters. " GENERATE_HINT,
        .parse = parse_admin_key,
    },
    {
        .flag = "jwt-secret",
        .env = "JOBWIRE_JWT_SECRET",
        .metavar = "SECRET",
        .def_text = "none; required outside --dev",
        .help = "HS256 secret that users' JWTs are signed with, at least 32 characters (with "
                "--dev 16 are enough, with a warning at start-up). Give the same value to "
                "whatever issues the tokens. " GENERATE_HINT,
        .parse = parse_jwt_secret,
    },
    {
        .flag = "jwt-audience",
        .env = "JOBWIRE_JWT_AUDIENCE",
        .metavar = "AUD",
        .def_text = "none: aud is not checked",
        .help = "When set, a user's JWT must have an aud claim equal to AUD (compared exactly), "
                "or an array of strings one of which is; any other token gets 401. Supabase "
                "access tokens carry aud authenticated.",
        .parse = parse_jwt_audience,
    },
    {
        .flag = "jwt-issuer",
        .env = "JOBWIRE_JWT_ISSUER",
        .metavar = "ISS",
        .def_text = "none: iss is not checked",
        .help = "When set, a user's JWT must have an iss claim equal to ISS (compared exactly), "
                "e.g. https://PROJECT.supabase.co/auth/v1; any other token gets 401.",
        .parse = parse_jwt_issuer,
    },
    {
        .flag = "secret-key",
        .env = "JOBWIRE_SECRET_KEY",
        .metavar = "HEX",
        .def_text = "none; required outside --dev",
        .help = "AES-256-GCM key that encrypts stored provider session tokens: exactly 64 "
                "hex characters (32 bytes). " GENERATE_HINT,
        .parse = parse_secret_key,
    },
    {
        .flag = "provider",
        .env = "JOBWIRE_PROVIDER",
        .metavar = "sim|URL",
        .def = "sim",
        .help = "Where steps run: 'sim' (the built-in simulator) or the http(s) base URL "
                "of a provider service.",
        .parse = parse_provider,
    },
    {
        .flag = "origins",
        .env = "JOBWIRE_ORIGINS",
        .metavar = "LIST",
        .def_text = "http://HOST:PORT from --listen (https:// with --tls-cert)",
        .help = "Comma-separated browser Origins allowed to open /ws and "
                "/realtime/v1/websocket, e.g. https://app.example.com,http://127.0.0.1:3000. "
                "By default, the listen address, and localhost:PORT too when it is a loopback "
                "address. Clients that send no Origin (servers, scripts) are not affected.",
        .parse = parse_origins,
    },
    {
        .flag = "tls-cert",
        .env = "JOBWIRE_TLS_CERT",
        .metavar = "FILE",
        .def_text = "none: plain HTTP",
        .help = "PEM certificate chain (the server's certificate first, then its "
                "intermediates). With --tls-key the listen port serves only HTTPS and WSS, "
                "TLS 1.2 or newer. Read once at start-up: restart jobwire after renewing it.",
        .parse = config__parse_tls_cert,
    },
    {
        .flag = "tls-key",
        .env = "JOBWIRE_TLS_KEY",
        .metavar = "FILE",
        .def_text = "none; required with --tls-cert",
        .help = "PEM private key of the --tls-cert certificate, unencrypted (keep the file "
                "readable by jobwire only).",
        .parse = config__parse_tls_key,
    },
    {
        .flag = "dev",
        .env = "JOBWIRE_DEV",
        .metavar = NULL,
        .def_text = "off; JOBWIRE_DEV=1 turns it on",
        .help = "Development mode: the admin key, JWT secret and secret key become optional, "
                "and a JWT secret may be as short as 16 characters. Never use it in production.",
        .kind = CONFIG_BOOL,
        CONFIG_FIELD(dev),
    },
    {
        .flag = "log-level",
        .env = "JOBWIRE_LOG_LEVEL",
        .metavar = "LEVEL",
        .def = "info",
        .help = "Least severe level logged: error, warn, info or debug.",
        .kind = CONFIG_ENUM,
        CONFIG_FIELD(log_level),
        .choices = log_levels,
    },
    {
        .flag = "db-max-group",
        .env = "JOBWIRE_DB_MAX_GROUP",
        .metavar = "N",
        .def = "500",
        .help = "Most changes (deltas) written in one database transaction, 1..5000.",
        INT_ROW(db_max_group, 1, 5000, NULL),
    },
    {
        .flag = "max-body",
        .env = "JOBWIRE_MAX_BODY",
        .metavar = "BYTES",
        .def = "65536",
        .help = "Largest HTTP request body accepted, 1024..16777216 bytes; larger requests get "
                "413.",
        INT_ROW(max_body, 1024, 16777216, "bytes"),
    },
    {
        .flag = "sim",
        .env = "JOBWIRE_SIM",
        .metavar = "SPEC",
        .def = "",
        .def_text = "the sim's defaults (see docs/providers.md)",
        .help = "How the built-in sim provider behaves, as comma-separated key=value pairs, "
                "e.g. latency_ms=200,fail_rate=0.1,otp=gyftr_login+process_payment.",
        .kind = CONFIG_STRING,
        CONFIG_FIELD(sim),
        .hi = 1024,
    },
    {
        .flag = "otp-timeout-login",
        .env = "JOBWIRE_OTP_TIMEOUT_LOGIN",
        .metavar = "SECONDS",
        .def = "300",
        .help = "How long a login OTP (Gyftr, Amazon) waits for the person, 1..3600 s.",
        INT_ROW(otp_timeout_login_s, 1, 3600, "seconds"),
    },
    {
        .flag = "otp-timeout-payment",
        .env = "JOBWIRE_OTP_TIMEOUT_PAYMENT",
        .metavar = "SECONDS",
        .def = "180",
        .help = "How long a payment OTP waits for the person, 1..3600 s.",
        INT_ROW(otp_timeout_payment_s, 1, 3600, "seconds"),
    },
    {
        .flag = "provider-timeout",
        .env = "JOBWIRE_PROVIDER_TIMEOUT",
        .metavar = "MS",
        .def = "30000",
        .help = "Deadline of one provider call, 100..300000 ms; a call past it is a retryable "
                "error.",
        INT_ROW(provider_timeout_ms, 100, 300000, "milliseconds"),
    },
    {
        .flag = "retry-scale",
        .env = "JOBWIRE_RETRY_SCALE",
        .metavar = "FACTOR",
        .def = "1",
        .help = "Multiplies every retry delay, 0.001..100 (tests use a small factor).",
        .kind = CONFIG_REAL,
        CONFIG_FIELD(retry_scale),
        .real_lo = 0.001,
        .real_hi = 100,
    },
    {
        .flag = "finished-job-ttl",
        .env = "JOBWIRE_FINISHED_JOB_TTL",
        .metavar = "SECONDS",
        .def = "300",
        .help = "How long a finished job stays in memory after it finished, 1..86400 s; then "
                "it is read from PostgreSQL (GET, subscribe, retry) like one that finished "
                "before a restart.",
        INT_ROW(finished_job_ttl_s, 1, 86400, "seconds"),
    },
    {
        .flag = "ws-max-frame",
        .env = "JOBWIRE_WS_MAX_FRAME",
        .metavar = "BYTES",
        .def = "16384",
        .help = "Largest client WebSocket message, 1024..1048576 bytes; larger ones get "
                "frame_too_large and close 1009.",
        INT_ROW(ws_max_frame, 1024, 1048576, "bytes"),
    },
    {
        .flag = "ws-max-subscriptions",
        .env = "JOBWIRE_WS_MAX_SUBSCRIPTIONS",
        .metavar = "N",
        .def = "100",
        .help = "Subscriptions one WebSocket connection may hold, 1..10000.",
        INT_ROW(ws_max_subscriptions, 1, 10000, "subscriptions"),
    },
    {
        .flag = "max-connections",
        .env = "JOBWIRE_MAX_CONNECTIONS",
        .metavar = "N",
        .def = "10000",
        .help = "Client connections (HTTP and WebSocket) open at once, 1..1000000; past it new "
                "ones are closed at accept. Never more than the open-file limit allows, less "
                "a reserve for jobwire's own files.",
        INT_ROW(max_connections, 1, 1000000, "connections"),
    },
    {
        .flag = "ws-max-queue",
        .env = "JOBWIRE_WS_MAX_QUEUE",
        .metavar = "BYTES",
        .def = "1048576",
        .help = "Outbound bytes queued per WebSocket connection, 65536..67108864; past it a "
                "job's queued deltas are replaced by one snapshot.",
        INT_ROW(ws_max_queue, 65536, 67108864, "bytes"),
    },
    {
        .flag = "ws-max-queue-total",
        .env = "JOBWIRE_WS_MAX_QUEUE_TOTAL",
        .metavar = "BYTES",
        .def = "268435456",
        .help = "Outbound bytes queued in the whole process, both WebSocket endpoints, "
                "1048576..68719476736; a message shared by many queues counts once. Past it "
                "the connections furthest behind are shed as if past --ws-max-queue.",
        INT_ROW(ws_max_queue_total, 1048576, 68719476736L, "bytes"),
    },
    {
        .flag = "fanout-threads",
        .env = "JOBWIRE_FANOUT_THREADS",
        .metavar = "N",
        .def = "auto",
        .help = "Helper threads that take a publish round's socket writes off the loop "
                "thread, which goes on meanwhile (both WebSocket endpoints, plain TCP), "
                "0..64, or auto: one less than the CPUs this process may run on (its "
                "affinity, or fewer under a cgroup CPU quota), at most " JW_FANOUT_AUTO_MAX_TEXT
                " (none on one CPU, where a helper only competes with the loop thread). 0: the "
                "loop thread writes alone.",
        .kind = CONFIG_SPECIAL,
        .parse = parse_fanout_threads,
    },
    {
        .flag = "ws-slow-close",
        .env = "JOBWIRE_WS_SLOW_CLOSE",
        .metavar = "SECONDS",
        .def = "60",
        .help = "How long a connection may stay over its queue bound before it is closed "
                "with 4008, 1..600 s.",
        INT_ROW(ws_slow_close_s, 1, 600, "seconds"),
    },
    {
        .flag = "ws-auth-timeout",
        .env = "JOBWIRE_WS_AUTH_TIMEOUT",
        .metavar = "SECONDS",
        .def = "10",
        .help = "How long a WebSocket connection has to show a valid token, 1..300 s: on "
                "/ws without ?token=, its auth message; on /realtime/v1/websocket, a user's "
                "token or the admin key as apikey, a join's access_token or an access_token "
                "message (else close 4408).",
        INT_ROW(ws_auth_timeout_s, 1, 300, "seconds"),
    },
    {
        .flag = "ws-ping-interval",
        .env = "JOBWIRE_WS_PING_INTERVAL",
        .metavar = "SECONDS",
        .def = "30",
        .help = "A WebSocket connection (either endpoint) the client has sent nothing on for "
                "this long is pinged, and dropped if nothing comes this long after the ping, "
                "1..3600 s.",
        INT_ROW(ws_ping_interval_s, 1, 3600, "seconds"),
    },
    {
        .flag = "ws-message-rate",
        .env = "JOBWIRE_WS_MESSAGE_RATE",
        .metavar = "N",
        .def = "100",
        .help = "Client messages one WebSocket connection (either endpoint) may send per "
                "second, with bursts of twice that, 0..1000000 (0: no limit). Past it every "
                "message is still answered, but the connection is read no faster: one client "
                "cannot take the server's loop from the others.",
        INT_ROW(ws_message_rate, 0, 1000000, "messages per second"),
    },
    {
        .flag = "max-connections-per-ip",
        .env = "JOBWIRE_MAX_CONNECTIONS_PER_IP",
        .metavar = "N",
        .def = "256",
        .help = "Connections (HTTP and both WebSocket endpoints) one client address may hold "
                "open at once, 0..1000000 (0: no limit); past it new ones are closed at "
                "accept. IPv6 addresses count by their /64. Behind a reverse proxy every "
                "client has the proxy's address: raise it or set 0 there.",
        INT_ROW(max_connections_per_ip, 0, 1000000, "connections"),
    },
    {
        .flag = "connection-rate-per-ip",
        .env = "JOBWIRE_CONNECTION_RATE_PER_IP",
        .metavar = "N",
        .def = "200",
        .help = "New connections one client address may open per second, 0..1000000 (0: no "
                "limit), with bursts of up to twice that; past it new ones are closed at "
                "accept.",
        INT_ROW(connection_rate_per_ip, 0, 1000000, "connections per second"),
    },
    {
        .flag = "max-live-jobs-per-user",
        .env = "JOBWIRE_MAX_LIVE_JOBS_PER_USER",
        .metavar = "N",
        .def = "100",
        .help = "Running (not finished) jobs one user may have at once, 1..100000; a user's "
                "create or retry past it gets 429 too_many_live_jobs. The admin key is not "
                "limited.",
        INT_ROW(max_live_jobs_per_user, 1, 100000, "jobs"),
    },
    {
        .flag = "job-rate-per-user",
        .env = "JOBWIRE_JOB_RATE_PER_USER",
        .metavar = "N",
        .def = "120",
        .help = "Job creations and retries one user may make per minute (all of it at once if "
                "need be), "
                "1..100000 (a retry runs the logins again, which sends SMS codes); past it 429 "
                "rate_limited with Retry-After. The admin key is not limited.",
        INT_ROW(job_rate_per_user, 1, 100000, "per minute"),
    },
    {
        .flag = "otp-rate-per-user",
        .env = "JOBWIRE_OTP_RATE_PER_USER",
        .metavar = "N",
        .def = "120",
        .help = "OTP submissions one user may make per minute (all of it at once if need be), "
                "over HTTP "
                "and the socket together, 1..100000; past it 429 rate_limited with Retry-After "
                "(jobwire.v1: "
                "error rate_limited with retry_after_s). The admin key is not limited.",
        INT_ROW(otp_rate_per_user, 1, 100000, "per minute"),
    },
    {
        .flag = "max-ws-per-user",
        .env = "JOBWIRE_MAX_WS_PER_USER",
        .metavar = "N",
        .def = "50",
        .help = "WebSocket connections (both endpoints) one user may hold open at once, "
                "1..100000; past it the connection is closed with 4429 (jobwire.v1: error "
                "too_many_connections first).",
        INT_ROW(max_ws_per_user, 1, 100000, "connections"),
    },
    {
        .flag = "events-retention",
        .env = "JOBWIRE_EVENTS_RETENTION",
        .metavar = "DURATION",
        .def = "30d",
        .help = "How long the change journal (job_events) of a finished job (completed, failed "
                "or cancelled) is kept after its last change: seconds, or a whole number with "
                "the unit s, m, h or d, e.g. 30d; at most 3650d. 0 keeps it forever. Job rows, "
                "steps and OTP requests stay; a client resuming such a job gets a snapshot.",
        DURATION_ROW(events_retention_s, 0, 3650L * 86400,
                     "0 (keep forever) or a duration up to 3650d: seconds, or a whole number "
                     "with s, m, h or d, e.g. 30d"),
    },
    {
        .flag = "events-retention-batch",
        .env = "JOBWIRE_EVENTS_RETENTION_BATCH",
        .metavar = "N",
        .def = "1000",
        .help = "Most job_events rows one retention transaction deletes, 1..100000.",
        INT_ROW(events_retention_batch, 1, 100000, "rows"),
    },
    {
        .flag = "events-retention-interval",
        .env = "JOBWIRE_EVENTS_RETENTION_INTERVAL",
        .metavar = "DURATION",
        .def = "10m",
        .help = "Time from the end of one retention round (a pass over every job that still "
                "has events) to the start of the next, from 1 s up to 1d: seconds, or with s, "
                "m, h or d.",
        DURATION_ROW(events_retention_interval_s, 1, 86400,
                     "a duration from 1 s to 1d: seconds, or a whole number with s, m, h or "
                     "d, e.g. 10m"),
    },
    {
        .flag = "node-id",
        .env = "JOBWIRE_NODE_ID",
        .metavar = "ID",
        .def = "",
        .def_text = "jobwire",
        .help = "This process's name among the jobwire nodes sharing the database, at most "
                "200 characters. Each job is owned by one node at a time; a node started again "
                "under the same id takes its unfinished jobs back at once, and of two processes "
                "under one id the newer takes the jobs and the older exits. Give each node of a "
                "cluster its own id.",
        .kind = CONFIG_STRING,
        CONFIG_FIELD(node_id),
        .hi = 200,
    },
    {
        .flag = "node-ttl",
        .env = "JOBWIRE_NODE_TTL",
        .metavar = "DURATION",
        .def = "10s",
        .help = "How long a node's heartbeat vouches for it, 2s..10m (sent every third of it). "
                "A node silent longer is dead: the live nodes take its jobs over (each looks "
                "every second), or the next node to start; a node that finds itself declared "
                "dead exits at once.",
        DURATION_ROW(node_ttl_s, 2, 600,
                     "a duration from 2s to 10m: seconds, or a whole number with s or m, e.g. "
                     "10s"),
    },
};

static int parse_listen(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 1];
    unsigned char addr[sizeof(struct in6_addr)];
    const char *port, *h;
    size_t hlen;
    bool v6 = false;
    long n;

    if (v[0] == '[') {
        h = v + 1;
        port = strstr(h, "]:");
        if (!port)
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "%s must be HOST:PORT with an IPv6 host in brackets, e.g. [::1]:8080 "
                             "(got \"%s\")",
                             name, v);
        hlen = (size_t)(port - h);
        port += 2;
        v6 = true;
    } else {
        port = strrchr(v, ':');
        if (!port)
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "%s must be HOST:PORT, e.g. 127.0.0.1:8080 (got \"%s\")", name, v);
        h = v;
        hlen = (size_t)(port - v);
        port++;
        if (memchr(h, ':', hlen))
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "%s: put an IPv6 host in brackets, e.g. [::1]:8080 (got \"%s\")", name,
                             v);
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s needs a host before the port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080 for "
                         "every interface (got \"%s\")",
                         name, v);
    memcpy(host, h, hlen);
    host[hlen] = '\0';

    if (!v6 && strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, addr) != 1)
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s: host must be an IP address (IPv4, or IPv6 in brackets) or localhost; "
                         "got \"%s\" in \"%s\"",
                         name, host, v);
    if (!config__parse_long(port, 1, 65535, &n))
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s: port must be a number 1..65535 (got \"%s\" in \"%s\")", name, port,
                         v);

    config__replace_str(&c->listen_host, host);
    c->listen_port = (int)n;
    c->listen_ipv6 = v6;
    return 0;
}

static int parse_database_url(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen)
{
    PQconninfoOption *opts;
    char *perr = NULL;

    if (!*v)
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s is empty; set it to a PostgreSQL connection string, e.g. "
                         "postgresql://user:password@127.0.0.1:5432/jobwire",
                         name);
    /*
     * Catch a malformed string now rather than retrying it forever at start-up.
     * libpq's message may quote pieces of the string (a password among them),
     * so it is not repeated.
     */
    opts = PQconninfoParse(v, &perr);
    if (!opts) {
        PQfreemem(perr);
        return jw_errorf(
            err, errlen, JW_ECONFIG,
            "%s is not a valid PostgreSQL connection string; expected a URI like "
            "postgresql://user:password@127.0.0.1:5432/jobwire or key=value pairs like "
            "'host=127.0.0.1 dbname=jobwire'",
            name);
    }
    PQconninfoFree(opts);
    config__free_secret(&c->database_url);
    c->database_url = jw_xstrdup(v);
    return 0;
}

static int parse_secret_text(char **slot, const char *v, const char *name, char *err, size_t errlen)
{
    size_t n = strlen(v);

    if (n < JW_MIN_SECRET_LEN)
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s must be at least %d characters; got %zu characters. %s", name,
                         JW_MIN_SECRET_LEN, n, GENERATE_HINT);
    config__free_secret(slot);
    *slot = jw_xstrdup(v);
    return 0;
}

/* "auto" (JW_FANOUT_AUTO, which jw_config_load resolves: jw_config_fanout_auto) or 0..64. */
static int parse_fanout_threads(jw_config *c, const char *v, const char *name, char *err,
                                size_t errlen)
{
    long n;

    if (strcmp(v, "auto") == 0) {
        c->fanout_threads = JW_FANOUT_AUTO;
        return 0;
    }
    if (!config__parse_long(v, 0, 64, &n))
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s must be auto or a whole number of threads 0..64 (got \"%s\")", name,
                         v);
    c->fanout_threads = (int)n;
    return 0;
}

static int parse_admin_key(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    return parse_secret_text(&c->admin_key, v, name, err, errlen);
}

static int parse_jwt_secret(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    return parse_secret_text(&c->jwt_secret, v, name, err, errlen);
}

/* An expected aud or iss: compared byte for byte, so stray spaces would never match. */
static int parse_claim_text(char **slot, const char *v, const char *name, const char *claim,
                            char *err, size_t errlen)
{
    size_t n = strlen(v);

    if (n == 0)
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s is empty; give the exact %s users' tokens carry, or leave it "
                         "unset to not check %s",
                         name, claim, claim);
    if (n > JW_AUTH_MAX_CLAIM)
        return jw_errorf(err, errlen, JW_ECONFIG, "%s must be at most %d characters (got %zu)",
                         name, JW_AUTH_MAX_CLAIM, n);
    for (size_t i = 0; i < n; i++)
        if (iscntrl((unsigned char)v[i]))
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "%s must not contain control characters (character %zu)", name, i + 1);
    if (isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1]))
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s starts or ends with a space; the token's %s is compared exactly, so "
                         "remove it",
                         name, claim);
    config__replace_str(slot, v);
    return 0;
}

static int parse_jwt_audience(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen)
{
    return parse_claim_text(&c->jwt_audience, v, name, "aud", err, errlen);
}

static int parse_jwt_issuer(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    return parse_claim_text(&c->jwt_issuer, v, name, "iss", err, errlen);
}

static int parse_secret_key(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    size_t n = strlen(v);

    if (n != 2 * JW_SECRET_KEY_LEN)
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s must be 64 hex characters (32 bytes); got %zu characters. %s", name, n,
                         GENERATE_HINT);
    for (size_t i = 0; i < JW_SECRET_KEY_LEN; i++) {
        int hi = jw_hex_digit(v[2 * i]), lo = jw_hex_digit(v[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(c->secret_key, sizeof(c->secret_key));
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "%s must be 64 hex characters (32 bytes); character %zu is not 0-9 or "
                             "a-f. %s",
                             name, hi < 0 ? 2 * i + 1 : 2 * i + 2, GENERATE_HINT);
        }
        c->secret_key[i] = (uint8_t)(hi << 4 | lo);
    }
    c->has_secret_key = true;
    return 0;
}

static int parse_provider(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    const char *rest;
    size_t n;

    if (strcmp(v, "sim") == 0) {
        config__replace_str(&c->provider, v);
        c->provider_sim = true;
        return 0;
    }
    if (strncmp(v, "http://", 7) == 0)
        rest = v + 7;
    else if (strncmp(v, "https://", 8) == 0)
        rest = v + 8;
    else
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s must be 'sim' or an http:// or https:// URL, e.g. "
                         "http://127.0.0.1:9090",
                         name);
    if (!*rest || *rest == '/' || *rest == ':')
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s: the URL has no host, e.g. http://127.0.0.1:9090", name);
    for (const char *p = v; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "%s: the URL must not contain spaces or control characters", name);

    config__replace_str(&c->provider, v);
    /* Steps are posted to <url>/steps/<name>: keep one slash there. */
    n = strlen(c->provider);
    while (n > 0 && c->provider[n - 1] == '/')
        c->provider[--n] = '\0';
    c->provider_sim = false;
    return 0;
}

/* An Origin is scheme://host[:port] with nothing after it (RFC 6454). */
static bool origin_valid(const char *o)
{
    const char *host;

    if (strncmp(o, "http://", 7) == 0)
        host = o + 7;
    else if (strncmp(o, "https://", 8) == 0)
        host = o + 8;
    else
        return false;
    if (!*host)
        return false;
    for (const char *p = host; *p; p++)
        if (*p == '/' || *p == '?' || *p == '#' || *p == '@' || isspace((unsigned char)*p) ||
            iscntrl((unsigned char)*p))
            return false;
    return true;
}

static int parse_origins(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    const char *p = v;
    char **list = NULL;
    size_t count = 0;

    while (1) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *item;

        while (len && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        item = jw_xmalloc(len + 1);
        memcpy(item, p, len);
        item[len] = '\0';
        if (!origin_valid(item)) {
            int rc =
                jw_errorf(err, errlen, JW_ECONFIG,
                          "%s: \"%s\" is not an Origin; give scheme://host[:port] without a path, "
                          "comma-separated, e.g. https://app.example.com,http://127.0.0.1:3000",
                          name, item);

            free(item);
            for (size_t i = 0; i < count; i++)
                free(list[i]);
            free(list);
            return rc;
        }
        list = jw_xrealloc(list, (count + 1) * sizeof(*list));
        list[count++] = item;
        if (!end)
            break;
        p = end + 1;
    }
    config__free_origins(c);
    c->origins = list;
    c->origin_count = count;
    return 0;
}
