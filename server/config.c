/*
 * config.c - the settings table and its parsers. See config.h.
 */
#include "config.h"

#include "auth.h"
#include "jw_error.h"
#include "jw_log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define GENERATE_HINT "Generate one with: openssl rand -hex 32"

/*
 * A parser gets the value and the name it came under ("--listen" or
 * "JOBWIRE_LISTEN"), so its message speaks the operator's language. It
 * returns 0 or JW_ECONFIG with err filled.
 */
typedef int (*setting_parser)(jw_config *c, const char *value, const char *name, char *err,
                              size_t errlen);

/*
 * A setting is parsed by parse, or, when parse is NULL, is a whole number in
 * min..max (of unit, for messages) stored as an int at offset in jw_config:
 * such a setting is one row and no code.
 */
struct setting {
    const char *flag;     /* long flag without the dashes */
    const char *env;      /* environment variable */
    const char *metavar;  /* shape of the value in --help; NULL: a switch */
    const char *def;      /* value used when neither flag nor variable is set */
    const char *def_text; /* shown in --help instead of def, e.g. for derived defaults */
    const char *help;
    setting_parser parse;
    size_t offset; /* parse == NULL: the int field */
    long min, max;
    const char *unit;
};

#define INT_FIELD(field, lo, hi, what)                                                             \
    .offset = offsetof(jw_config, field), .min = (lo), .max = (hi), .unit = (what)

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
static int parse_tls_cert(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_tls_key(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_dev(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_log_level(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_db_max_group(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen);
static int parse_max_body(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_sim(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_otp_login(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
static int parse_otp_payment(jw_config *c, const char *v, const char *name, char *err,
                             size_t errlen);
static int parse_provider_timeout(jw_config *c, const char *v, const char *name, char *err,
                                  size_t errlen);
static int parse_retry_scale(jw_config *c, const char *v, const char *name, char *err,
                             size_t errlen);
static int parse_finished_job_ttl(jw_config *c, const char *v, const char *name, char *err,
                                  size_t errlen);
static int parse_ws_max_frame(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen);
static int parse_ws_max_subs(jw_config *c, const char *v, const char *name, char *err,
                             size_t errlen);
static int parse_max_connections(jw_config *c, const char *v, const char *name, char *err,
                                 size_t errlen);
static int parse_ws_max_queue(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen);
static int parse_ws_slow_close(jw_config *c, const char *v, const char *name, char *err,
                               size_t errlen);
static int parse_ws_auth_timeout(jw_config *c, const char *v, const char *name, char *err,
                                 size_t errlen);
static int parse_events_retention(jw_config *c, const char *v, const char *name, char *err,
                                  size_t errlen);
static int parse_events_batch(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen);
static int parse_events_interval(jw_config *c, const char *v, const char *name, char *err,
                                 size_t errlen);
static int parse_int_field(jw_config *c, const struct setting *s, const char *v, const char *name,
                           char *err, size_t errlen);

/* The one table of settings. Order is --help order and parse order. */
static const struct setting settings[] = {
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
        .help = "Comma-separated browser Origins allowed to open /ws, e.g. "
                "https://app.example.com,http://127.0.0.1:3000.",
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
        .parse = parse_tls_cert,
    },
    {
        .flag = "tls-key",
        .env = "JOBWIRE_TLS_KEY",
        .metavar = "FILE",
        .def_text = "none; required with --tls-cert",
        .help = "PEM private key of the --tls-cert certificate, unencrypted (keep the file "
                "readable by jobwire only).",
        .parse = parse_tls_key,
    },
    {
        .flag = "dev",
        .env = "JOBWIRE_DEV",
        .metavar = NULL,
        .def_text = "off; JOBWIRE_DEV=1 turns it on",
        .help = "Development mode: the admin key, JWT secret and secret key become optional, "
                "and a JWT secret may be as short as 16 characters. Never use it in production.",
        .parse = parse_dev,
    },
    {
        .flag = "log-level",
        .env = "JOBWIRE_LOG_LEVEL",
        .metavar = "LEVEL",
        .def = "info",
        .help = "Least severe level logged: error, warn, info or debug.",
        .parse = parse_log_level,
    },
    {
        .flag = "db-max-group",
        .env = "JOBWIRE_DB_MAX_GROUP",
        .metavar = "N",
        .def = "500",
        .help = "Most changes (deltas) written in one database transaction, 1..5000.",
        .parse = parse_db_max_group,
    },
    {
        .flag = "max-body",
        .env = "JOBWIRE_MAX_BODY",
        .metavar = "BYTES",
        .def = "65536",
        .help = "Largest HTTP request body accepted, 1024..16777216 bytes; larger requests get "
                "413.",
        .parse = parse_max_body,
    },
    {
        .flag = "sim",
        .env = "JOBWIRE_SIM",
        .metavar = "SPEC",
        .def = "",
        .def_text = "the sim's defaults (see docs/providers.md)",
        .help = "How the built-in sim provider behaves, as comma-separated key=value pairs, "
                "e.g. latency_ms=200,fail_rate=0.1,otp=gyftr_login+process_payment.",
        .parse = parse_sim,
    },
    {
        .flag = "otp-timeout-login",
        .env = "JOBWIRE_OTP_TIMEOUT_LOGIN",
        .metavar = "SECONDS",
        .def = "300",
        .help = "How long a login OTP (Gyftr, Amazon) waits for the person, 1..3600 s.",
        .parse = parse_otp_login,
    },
    {
        .flag = "otp-timeout-payment",
        .env = "JOBWIRE_OTP_TIMEOUT_PAYMENT",
        .metavar = "SECONDS",
        .def = "180",
        .help = "How long a payment OTP waits for the person, 1..3600 s.",
        .parse = parse_otp_payment,
    },
    {
        .flag = "provider-timeout",
        .env = "JOBWIRE_PROVIDER_TIMEOUT",
        .metavar = "MS",
        .def = "30000",
        .help = "Deadline of one provider call, 100..300000 ms; a call past it is a retryable "
                "error.",
        .parse = parse_provider_timeout,
    },
    {
        .flag = "retry-scale",
        .env = "JOBWIRE_RETRY_SCALE",
        .metavar = "FACTOR",
        .def = "1",
        .help = "Multiplies every retry delay, 0.001..100 (tests use a small factor).",
        .parse = parse_retry_scale,
    },
    {
        .flag = "finished-job-ttl",
        .env = "JOBWIRE_FINISHED_JOB_TTL",
        .metavar = "SECONDS",
        .def = "300",
        .help = "How long a finished job stays in memory after it finished, 1..86400 s; then "
                "it is read from PostgreSQL (GET, subscribe, retry) like one that finished "
                "before a restart.",
        .parse = parse_finished_job_ttl,
    },
    {
        .flag = "ws-max-frame",
        .env = "JOBWIRE_WS_MAX_FRAME",
        .metavar = "BYTES",
        .def = "16384",
        .help = "Largest client WebSocket message, 1024..1048576 bytes; larger ones get "
                "frame_too_large and close 1009.",
        .parse = parse_ws_max_frame,
    },
    {
        .flag = "ws-max-subscriptions",
        .env = "JOBWIRE_WS_MAX_SUBSCRIPTIONS",
        .metavar = "N",
        .def = "100",
        .help = "Subscriptions one WebSocket connection may hold, 1..10000.",
        .parse = parse_ws_max_subs,
    },
    {
        .flag = "max-connections",
        .env = "JOBWIRE_MAX_CONNECTIONS",
        .metavar = "N",
        .def = "10000",
        .help = "Client connections (HTTP and WebSocket) open at once, 1..1000000; past it new "
                "ones are closed at accept. Never more than the open-file limit allows, less "
                "a reserve for jobwire's own files.",
        .parse = parse_max_connections,
    },
    {
        .flag = "ws-max-queue",
        .env = "JOBWIRE_WS_MAX_QUEUE",
        .metavar = "BYTES",
        .def = "1048576",
        .help = "Outbound bytes queued per WebSocket connection, 65536..67108864; past it a "
                "job's queued deltas are replaced by one snapshot.",
        .parse = parse_ws_max_queue,
    },
    {
        .flag = "ws-slow-close",
        .env = "JOBWIRE_WS_SLOW_CLOSE",
        .metavar = "SECONDS",
        .def = "60",
        .help = "How long a connection may stay over its queue bound before it is closed "
                "with 4008, 1..600 s.",
        .parse = parse_ws_slow_close,
    },
    {
        .flag = "ws-auth-timeout",
        .env = "JOBWIRE_WS_AUTH_TIMEOUT",
        .metavar = "SECONDS",
        .def = "10",
        .help = "How long a connection without ?token= has to send its auth message, 1..300 s.",
        .parse = parse_ws_auth_timeout,
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
        INT_FIELD(ws_message_rate, 0, 1000000, "messages per second"),
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
        INT_FIELD(max_connections_per_ip, 0, 1000000, "connections"),
    },
    {
        .flag = "connection-rate-per-ip",
        .env = "JOBWIRE_CONNECTION_RATE_PER_IP",
        .metavar = "N",
        .def = "200",
        .help = "New connections one client address may open per second, 0..1000000 (0: no "
                "limit), with bursts of up to twice that; past it new ones are closed at "
                "accept.",
        INT_FIELD(connection_rate_per_ip, 0, 1000000, "connections per second"),
    },
    {
        .flag = "max-live-jobs-per-user",
        .env = "JOBWIRE_MAX_LIVE_JOBS_PER_USER",
        .metavar = "N",
        .def = "100",
        .help = "Running (not finished) jobs one user may have at once, 1..100000; a user's "
                "create or retry past it gets 429 too_many_live_jobs. The admin key is not "
                "limited.",
        INT_FIELD(max_live_jobs_per_user, 1, 100000, "jobs"),
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
        INT_FIELD(job_rate_per_user, 1, 100000, "per minute"),
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
        INT_FIELD(otp_rate_per_user, 1, 100000, "per minute"),
    },
    {
        .flag = "max-ws-per-user",
        .env = "JOBWIRE_MAX_WS_PER_USER",
        .metavar = "N",
        .def = "50",
        .help = "WebSocket connections (both endpoints) one user may hold open at once, "
                "1..100000; past it the connection is closed with 4429 (jobwire.v1: error "
                "too_many_connections first).",
        INT_FIELD(max_ws_per_user, 1, 100000, "connections"),
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
        .parse = parse_events_retention,
    },
    {
        .flag = "events-retention-batch",
        .env = "JOBWIRE_EVENTS_RETENTION_BATCH",
        .metavar = "N",
        .def = "1000",
        .help = "Most job_events rows one retention transaction deletes, 1..100000.",
        .parse = parse_events_batch,
    },
    {
        .flag = "events-retention-interval",
        .env = "JOBWIRE_EVENTS_RETENTION_INTERVAL",
        .metavar = "DURATION",
        .def = "10m",
        .help = "Time from the end of one retention round (a pass over every job that still "
                "has events) to the start of the next, from 1 s up to 1d: seconds, or with s, "
                "m, h or d.",
        .parse = parse_events_interval,
    },
};

#define SETTING_COUNT (sizeof(settings) / sizeof(settings[0]))

/* getopt_long values: settings are OPT_BASE + index. */
enum { OPT_HELP = 'h', OPT_VERSION = 1, OPT_BASE = 1000 };

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return JW_ECONFIG;
}

static void replace_str(char **slot, const char *v)
{
    free(*slot);
    *slot = jw_xstrdup(v);
}

/* Frees a secret string after overwriting it. */
static void free_secret(char **slot)
{
    if (*slot) {
        OPENSSL_cleanse(*slot, strlen(*slot));
        free(*slot);
        *slot = NULL;
    }
}

/* Strict decimal integer in [min, max]. */
static bool parse_long(const char *v, long min, long max, long *out)
{
    char *end;
    long n;

    if (!*v || !isdigit((unsigned char)*v))
        return false;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno || *end || n < min || n > max)
        return false;
    *out = n;
    return true;
}

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
            return fail(err, errlen,
                        "%s must be HOST:PORT with an IPv6 host in brackets, e.g. [::1]:8080 "
                        "(got \"%s\")",
                        name, v);
        hlen = (size_t)(port - h);
        port += 2;
        v6 = true;
    } else {
        port = strrchr(v, ':');
        if (!port)
            return fail(err, errlen, "%s must be HOST:PORT, e.g. 127.0.0.1:8080 (got \"%s\")", name,
                        v);
        h = v;
        hlen = (size_t)(port - v);
        port++;
        if (memchr(h, ':', hlen))
            return fail(err, errlen,
                        "%s: put an IPv6 host in brackets, e.g. [::1]:8080 (got \"%s\")", name, v);
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return fail(err, errlen,
                    "%s needs a host before the port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080 for "
                    "every interface (got \"%s\")",
                    name, v);
    memcpy(host, h, hlen);
    host[hlen] = '\0';

    if (!v6 && strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, addr) != 1)
        return fail(err, errlen,
                    "%s: host must be an IP address (IPv4, or IPv6 in brackets) or localhost; "
                    "got \"%s\" in \"%s\"",
                    name, host, v);
    if (!parse_long(port, 1, 65535, &n))
        return fail(err, errlen, "%s: port must be a number 1..65535 (got \"%s\" in \"%s\")", name,
                    port, v);

    replace_str(&c->listen_host, host);
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
        return fail(err, errlen,
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
        return fail(err, errlen,
                    "%s is not a valid PostgreSQL connection string; expected a URI like "
                    "postgresql://user:password@127.0.0.1:5432/jobwire or key=value pairs like "
                    "'host=127.0.0.1 dbname=jobwire'",
                    name);
    }
    PQconninfoFree(opts);
    free_secret(&c->database_url);
    c->database_url = jw_xstrdup(v);
    return 0;
}

static int parse_secret_text(char **slot, const char *v, const char *name, char *err, size_t errlen)
{
    size_t n = strlen(v);

    if (n < JW_MIN_SECRET_LEN)
        return fail(err, errlen, "%s must be at least %d characters; got %zu characters. %s", name,
                    JW_MIN_SECRET_LEN, n, GENERATE_HINT);
    free_secret(slot);
    *slot = jw_xstrdup(v);
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
        return fail(err, errlen,
                    "%s is empty; give the exact %s users' tokens carry, or leave it "
                    "unset to not check %s",
                    name, claim, claim);
    if (n > JW_AUTH_MAX_CLAIM)
        return fail(err, errlen, "%s must be at most %d characters (got %zu)", name,
                    JW_AUTH_MAX_CLAIM, n);
    for (size_t i = 0; i < n; i++)
        if (iscntrl((unsigned char)v[i]))
            return fail(err, errlen, "%s must not contain control characters (character %zu)", name,
                        i + 1);
    if (isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1]))
        return fail(err, errlen,
                    "%s starts or ends with a space; the token's %s is compared exactly, so "
                    "remove it",
                    name, claim);
    replace_str(slot, v);
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

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int parse_secret_key(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    size_t n = strlen(v);

    if (n != 2 * JW_SECRET_KEY_LEN)
        return fail(err, errlen, "%s must be 64 hex characters (32 bytes); got %zu characters. %s",
                    name, n, GENERATE_HINT);
    for (size_t i = 0; i < JW_SECRET_KEY_LEN; i++) {
        int hi = hex_value(v[2 * i]), lo = hex_value(v[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(c->secret_key, sizeof(c->secret_key));
            return fail(err, errlen,
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
        replace_str(&c->provider, v);
        c->provider_sim = true;
        return 0;
    }
    if (strncmp(v, "http://", 7) == 0)
        rest = v + 7;
    else if (strncmp(v, "https://", 8) == 0)
        rest = v + 8;
    else
        return fail(err, errlen,
                    "%s must be 'sim' or an http:// or https:// URL, e.g. "
                    "http://127.0.0.1:9090",
                    name);
    if (!*rest || *rest == '/' || *rest == ':')
        return fail(err, errlen, "%s: the URL has no host, e.g. http://127.0.0.1:9090", name);
    for (const char *p = v; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return fail(err, errlen, "%s: the URL must not contain spaces or control characters",
                        name);

    replace_str(&c->provider, v);
    /* Steps are posted to <url>/steps/<name>: keep one slash there. */
    n = strlen(c->provider);
    while (n > 0 && c->provider[n - 1] == '/')
        c->provider[--n] = '\0';
    c->provider_sim = false;
    return 0;
}

static void free_origins(jw_config *c)
{
    for (size_t i = 0; i < c->origin_count; i++)
        free(c->origins[i]);
    free(c->origins);
    c->origins = NULL;
    c->origin_count = 0;
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
            int rc = fail(err, errlen,
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
    free_origins(c);
    c->origins = list;
    c->origin_count = count;
    return 0;
}

/* --- TLS files ------------------------------------------------------------- */

/*
 * The files are checked here, with OpenSSL, before anything else starts: lws
 * would refuse them only when it creates the vhost, after the migrations,
 * with OpenSSL's error code for a message. Here the message names the
 * setting and the file and says what to do. None quotes a file's contents.
 */

/* OpenSSL's reason for the newest error on this thread's queue, which is then emptied. */
static const char *openssl_reason(void)
{
    const char *r = ERR_reason_error_string(ERR_peek_last_error());

    ERR_clear_error();
    return r ? r : "unknown error";
}

/* Opens path for reading; a FIFO or device would block or never end, so only regular files. */
static FILE *open_regular(const char *path, const char *name, char *err, size_t errlen)
{
    struct stat st;
    FILE *fp;

    if (!*path) {
        fail(err, errlen, "%s is empty; give the path of a PEM file", name);
        return NULL;
    }
    fp = fopen(path, "re");
    if (!fp) {
        fail(err, errlen, "%s: cannot read %s: %s", name, path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        fail(err, errlen, "%s: %s is not a regular file", name, path);
        return NULL;
    }
    return fp;
}

static void record_expiry(jw_config *c, const X509 *leaf)
{
    const ASN1_TIME *na = X509_get0_notAfter(leaf);
    struct tm tm;

    c->tls_not_after[0] = '\0';
    if (ASN1_TIME_to_tm(na, &tm) == 1)
        strftime(c->tls_not_after, sizeof(c->tls_not_after), "%Y-%m-%d %H:%M:%S UTC", &tm);
    c->tls_expired = X509_cmp_current_time(na) < 0;
}

static int parse_tls_cert(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    FILE *fp = open_regular(v, name, err, errlen);
    X509 *leaf;

    if (!fp)
        return JW_ECONFIG;
    leaf = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    if (!leaf) {
        ERR_clear_error();
        return fail(err, errlen,
                    "%s: %s holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)", name,
                    v);
    }
    record_expiry(c, leaf);
    X509_free(leaf);
    replace_str(&c->tls_cert, v);
    return 0;
}

/* OpenSSL asks for a passphrase only when the key is encrypted: refuse, never prompt. */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    if (asked)
        *(bool *)asked = true;
    return 0;
}

static int parse_tls_key(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    FILE *fp = open_regular(v, name, err, errlen);
    bool asked = false;
    EVP_PKEY *key;

    if (!fp)
        return JW_ECONFIG;
    key = PEM_read_PrivateKey(fp, NULL, no_passphrase, &asked);
    fclose(fp);
    if (!key) {
        ERR_clear_error();
        if (asked)
            return fail(err, errlen,
                        "%s: the private key in %s is protected by a passphrase; jobwire needs "
                        "it unencrypted: openssl pkey -in %s -out key.pem, then chmod 600 key.pem",
                        name, v, v);
        return fail(err, errlen,
                    "%s: %s holds no PEM private key (a -----BEGIN PRIVATE KEY----- block, or "
                    "BEGIN EC/RSA PRIVATE KEY)",
                    name, v);
    }
    EVP_PKEY_free(key);
    replace_str(&c->tls_key, v);
    return 0;
}

static bool key_mismatch(unsigned long e)
{
    return ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
}

/*
 * Both files or neither; then what lws will do with them, on a scratch
 * SSL_CTX: load the chain (this also applies OpenSSL's security level, e.g.
 * refuses a 1024-bit RSA key) and the key, and check that they belong
 * together.
 */
static int check_tls(const jw_config *c, char *err, size_t errlen)
{
    SSL_CTX *ctx;
    int rc = 0;

    if (!c->tls_cert && !c->tls_key)
        return 0;
    if (!c->tls_key)
        return fail(err, errlen,
                    "--tls-cert (JOBWIRE_TLS_CERT) is set but --tls-key (JOBWIRE_TLS_KEY) is not: "
                    "give both, the certificate and its private key, or neither for plain HTTP");
    if (!c->tls_cert)
        return fail(err, errlen,
                    "--tls-key (JOBWIRE_TLS_KEY) is set but --tls-cert (JOBWIRE_TLS_CERT) is not: "
                    "give both, the certificate and its private key, or neither for plain HTTP");

    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return fail(err, errlen, "cannot set up TLS: %s", openssl_reason());
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1)
        rc = fail(err, errlen, "TLS: cannot use the certificate chain in %s: %s", c->tls_cert,
                  openssl_reason());
    else if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 &&
             !key_mismatch(ERR_peek_last_error()))
        rc = fail(err, errlen,
                  "TLS: cannot use the private key in %s with the certificate in %s: %s",
                  c->tls_key, c->tls_cert, openssl_reason());
    else if (SSL_CTX_check_private_key(ctx) != 1)
        /* Also where a mismatch ends up when use_PrivateKey_file already saw it. */
        rc = fail(err, errlen,
                  "TLS: the private key in %s does not belong to the certificate in %s; give the "
                  "key the certificate was issued for",
                  c->tls_key, c->tls_cert);
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return rc;
}

static int parse_dev(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    static const char *const on[] = {"1", "true", "yes", "on"};
    static const char *const off[] = {"0", "false", "no", "off", ""};

    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++)
        if (strcasecmp(v, on[i]) == 0) {
            c->dev = true;
            return 0;
        }
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++)
        if (strcasecmp(v, off[i]) == 0) {
            c->dev = false;
            return 0;
        }
    return fail(err, errlen, "%s must be 1 (on) or 0 (off); got \"%s\"", name, v);
}

static int parse_log_level(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    int level = jw_log_parse_level(v);

    if (level < 0)
        return fail(err, errlen, "%s must be one of error, warn, info, debug (got \"%s\")", name,
                    v);
    c->log_level = level;
    return 0;
}

static int parse_db_max_group(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen)
{
    long n;

    if (!parse_long(v, 1, 5000, &n))
        return fail(err, errlen, "%s must be a whole number 1..5000 (got \"%s\")", name, v);
    c->db_max_group = (int)n;
    return 0;
}

static int parse_max_body(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    long n;

    if (!parse_long(v, 1024, 16777216, &n))
        return fail(err, errlen, "%s must be a whole number of bytes 1024..16777216 (got \"%s\")",
                    name, v);
    c->max_body = (size_t)n;
    return 0;
}

static const struct setting *find_setting(const char *flag, size_t len)
{
    for (size_t i = 0; i < SETTING_COUNT; i++)
        if (strlen(settings[i].flag) == len && memcmp(settings[i].flag, flag, len) == 0)
            return &settings[i];
    return NULL;
}

/*
 * getopt_long accepts any unambiguous prefix (--data for --database-url) and
 * its messages quote whole arguments, values included. This pass allows only
 * exact names and never repeats a value, which may be a secret.
 */
static int check_args(int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq;
        const struct setting *s;
        size_t len;

        if (strcmp(a, "--") == 0)
            return i + 1 < argc ? fail(err, errlen,
                                       "unexpected argument %d after '--': jobwire takes only "
                                       "--flags; run 'jobwire --help' for the list",
                                       i + 1)
                                : 0;
        if (strncmp(a, "--", 2) != 0) {
            if (strcmp(a, "-h") == 0)
                continue;
            if (a[0] == '-' && a[1])
                return fail(err, errlen,
                            "unknown option '%.2s%s': jobwire has only -h and long --flags; run "
                            "'jobwire --help' for the list",
                            a, a[2] ? "..." : "");
            return fail(err, errlen,
                        "unexpected argument %d: jobwire takes only --flags; run "
                        "'jobwire --help' for the list",
                        i);
        }
        eq = strchr(a + 2, '=');
        len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if ((len == 4 && memcmp(a + 2, "help", 4) == 0) ||
            (len == 7 && memcmp(a + 2, "version", 7) == 0)) {
            if (eq)
                return fail(err, errlen, "--%.*s takes no value", (int)len, a + 2);
            continue;
        }
        s = find_setting(a + 2, len);
        if (!s)
            return fail(err, errlen, "unknown option '--%.*s'; run 'jobwire --help' for the list",
                        (int)(len > 64 ? 64 : len), a + 2);
        if (!s->metavar && eq)
            return fail(err, errlen, "--%s takes no value (set %s=1 in the environment instead)",
                        s->flag, s->env);
        if (s->metavar && !eq) {
            if (i + 1 >= argc)
                return fail(err, errlen, "--%s needs a value: --%s=%s", s->flag, s->flag,
                            s->metavar);
            i++; /* the value, whatever it looks like */
        }
    }
    return 0;
}

static void apply_builtin_defaults(jw_config *c)
{
    memset(c, 0, sizeof(*c));
    c->action = JW_CONFIG_RUN;
    c->log_level = JW_LOG_INFO;
}

/* A browser on our own page sends the page's origin: https:// when we serve TLS. */
static void derive_origins(jw_config *c)
{
    const char *scheme = c->tls_cert ? "https" : "http";
    char origin[INET6_ADDRSTRLEN + 32];

    snprintf(origin, sizeof(origin), c->listen_ipv6 ? "%s://[%s]:%d" : "%s://%s:%d", scheme,
             c->listen_host, c->listen_port);
    c->origins = jw_xmalloc(sizeof(*c->origins));
    c->origins[0] = jw_xstrdup(origin);
    c->origin_count = 1;
}

static int check_required(const jw_config *c, char *err, size_t errlen)
{
    const struct {
        bool missing;
        const char *env, *flag;
    } secrets[] = {
        {!c->admin_key, "JOBWIRE_ADMIN_KEY", "--admin-key"},
        {!c->jwt_secret, "JOBWIRE_JWT_SECRET", "--jwt-secret"},
        {!c->has_secret_key, "JOBWIRE_SECRET_KEY", "--secret-key"},
    };
    char list[256] = "";
    size_t used = 0;
    int missing = 0;

    if (!c->database_url)
        return fail(err, errlen,
                    "DATABASE_URL is not set: set it or pass --database-url with a PostgreSQL "
                    "connection string, e.g. postgresql://user:password@127.0.0.1:5432/jobwire");
    if (c->dev)
        return 0;
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        if (!secrets[i].missing)
            continue;
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s (%s)", missing ? ", " : "",
                                 secrets[i].env, secrets[i].flag);
        missing++;
    }
    if (missing)
        return fail(err, errlen,
                    "outside dev mode jobwire needs all three secrets; missing: %s. Set %s "
                    "(generate each with: openssl rand -hex 32), or pass --dev for local "
                    "development",
                    list, missing > 1 ? "them" : "it");
    if (strlen(c->jwt_secret) < JW_MIN_JWT_SECRET_LEN)
        return fail(err, errlen,
                    "JOBWIRE_JWT_SECRET (--jwt-secret) must be at least %d characters outside "
                    "--dev, the size of an HS256 key; got %zu. Generate one with: openssl rand "
                    "-hex 32, and give the same value to whatever issues the tokens",
                    JW_MIN_JWT_SECRET_LEN, strlen(c->jwt_secret));
    return 0;
}

int jw_config_load(jw_config *c, int argc, char **argv, char *err, size_t errlen)
{
    struct option opts[SETTING_COUNT + 3];
    const char *flagval[SETTING_COUNT] = {0};
    int ch, rc;

    apply_builtin_defaults(c);
    if (errlen)
        err[0] = '\0';

    rc = check_args(argc, argv, err, errlen);
    if (rc)
        return rc;

    for (size_t i = 0; i < SETTING_COUNT; i++)
        opts[i] =
            (struct option){settings[i].flag, settings[i].metavar ? required_argument : no_argument,
                            NULL, OPT_BASE + (int)i};
    opts[SETTING_COUNT] = (struct option){"help", no_argument, NULL, OPT_HELP};
    opts[SETTING_COUNT + 1] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    opts[SETTING_COUNT + 2] = (struct option){0};

    opterr = 0;
    optind = 0; /* GNU: start over, so load can run more than once (tests) */
    while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (ch == OPT_HELP) {
            c->action = JW_CONFIG_HELP;
            return 0;
        }
        if (ch == OPT_VERSION) {
            c->action = JW_CONFIG_VERSION;
            return 0;
        }
        if (ch >= OPT_BASE && ch < OPT_BASE + (int)SETTING_COUNT) {
            flagval[ch - OPT_BASE] = optarg ? optarg : "1";
            continue;
        }
        /* check_args has already refused what getopt_long could object to. */
        return fail(err, errlen, "invalid command line; run 'jobwire --help' for the list");
    }

    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const struct setting *s = &settings[i];
        const char *env = getenv(s->env), *value = s->def;
        char name[64];

        snprintf(name, sizeof(name), "%s", s->env);
        /* An empty variable counts as unset: shells and compose files export those. */
        if (env && *env)
            value = env;
        if (flagval[i]) {
            value = flagval[i];
            snprintf(name, sizeof(name), "--%s", s->flag);
        }
        if (!value)
            continue;
        rc = s->parse ? s->parse(c, value, name, err, errlen)
                      : parse_int_field(c, s, value, name, err, errlen);
        if (rc)
            goto fail;
    }

    rc = check_tls(c, err, errlen);
    if (rc)
        goto fail;
    if (!c->origins)
        derive_origins(c);
    rc = check_required(c, err, errlen);
    if (rc)
        goto fail;
    return 0;

fail:
    jw_config_release(c);
    return rc;
}

void jw_config_release(jw_config *c)
{
    free(c->listen_host);
    free_secret(&c->database_url);
    free_secret(&c->admin_key);
    free_secret(&c->jwt_secret);
    free(c->jwt_audience);
    free(c->jwt_issuer);
    free(c->provider);
    free(c->sim);
    free(c->tls_cert);
    free(c->tls_key);
    free_origins(c);
    OPENSSL_cleanse(c->secret_key, sizeof(c->secret_key));
    apply_builtin_defaults(c);
}

/* Prints text word-wrapped to 80 columns, indented by 6, then a blank line. */
static void print_wrapped(FILE *out, const char *text)
{
    const int indent = 6, width = 80;
    int col = 0;

    while (*text) {
        size_t word = strcspn(text, " ");

        if (col && col + 1 + (int)word > width) {
            fputc('\n', out);
            col = 0;
        }
        if (!col)
            col = fprintf(out, "%*s", indent, "");
        else
            col += fprintf(out, " ");
        col += fprintf(out, "%.*s", (int)word, text);
        text += word;
        while (*text == ' ')
            text++;
    }
    fputs("\n\n", out);
}

void jw_config_print_help(FILE *out)
{
    fprintf(out,
            "Usage: jobwire [OPTION]...\n"
            "\n"
            "jobwire runs payment-automation jobs, stores them in PostgreSQL and pushes their\n"
            "progress to browsers over WebSocket.\n"
            "\n"
            "Every setting is a flag and an environment variable; a flag wins over the\n"
            "variable. Flags take their value as --flag=VALUE or --flag VALUE.\n"
            "\n"
            "Settings:\n");
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const struct setting *s = &settings[i];

        if (s->metavar)
            fprintf(out, "  --%s=%s\n", s->flag, s->metavar);
        else
            fprintf(out, "  --%s\n", s->flag);
        fprintf(out, "      env: %-22s default: %s\n", s->env, s->def_text ? s->def_text : s->def);
        print_wrapped(out, s->help);
    }
    fprintf(out, "  -h, --help      print this help and exit\n"
                 "  --version       print the version and exit\n"
                 "\n"
                 "Exit status: 0 after a clean shutdown (SIGTERM or SIGINT), 1 when the server\n"
                 "cannot start or fails, 2 for an invalid configuration.\n");
}

void jw_config_print_version(FILE *out)
{
    fprintf(out, "jobwire %s\n", JW_VERSION);
}

static int parse_sim(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    if (strlen(v) > 1024)
        return fail(err, errlen, "%s is longer than 1024 characters", name);
    free(c->sim);
    c->sim = jw_xstrdup(v);
    return 0;
}

static int parse_seconds(int *out, const char *v, const char *name, char *err, size_t errlen)
{
    long n;

    if (!parse_long(v, 1, 3600, &n))
        return fail(err, errlen, "%s must be a whole number of seconds 1..3600 (got \"%s\")", name,
                    v);
    *out = (int)n;
    return 0;
}

static int parse_otp_login(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    return parse_seconds(&c->otp_timeout_login_s, v, name, err, errlen);
}

static int parse_otp_payment(jw_config *c, const char *v, const char *name, char *err,
                             size_t errlen)
{
    return parse_seconds(&c->otp_timeout_payment_s, v, name, err, errlen);
}

static int parse_finished_job_ttl(jw_config *c, const char *v, const char *name, char *err,
                                  size_t errlen)
{
    long n;

    if (!parse_long(v, 1, 86400, &n))
        return fail(err, errlen, "%s must be a whole number of seconds 1..86400 (got \"%s\")", name,
                    v);
    c->finished_job_ttl_s = (int)n;
    return 0;
}

static int parse_provider_timeout(jw_config *c, const char *v, const char *name, char *err,
                                  size_t errlen)
{
    long n;

    if (!parse_long(v, 100, 300000, &n))
        return fail(err, errlen,
                    "%s must be a whole number of milliseconds 100..300000 (got \"%s\")", name, v);
    c->provider_timeout_ms = (int)n;
    return 0;
}

static int parse_retry_scale(jw_config *c, const char *v, const char *name, char *err,
                             size_t errlen)
{
    char *end = NULL;
    double f;

    errno = 0;
    f = strtod(v, &end);
    if (errno || end == v || *end || !(f >= 0.001 && f <= 100))
        return fail(err, errlen, "%s must be a number 0.001..100 (got \"%s\")", name, v);
    c->retry_scale = f;
    return 0;
}

static int parse_range(long *out, const char *v, const char *name, long min, long max,
                       const char *unit, char *err, size_t errlen)
{
    if (!parse_long(v, min, max, out))
        return fail(err, errlen, "%s must be a whole number of %s %ld..%ld (got \"%s\")", name,
                    unit, min, max, v);
    return 0;
}

static int parse_int_field(jw_config *c, const struct setting *s, const char *v, const char *name,
                           char *err, size_t errlen)
{
    long n = 0;
    int rc = parse_range(&n, v, name, s->min, s->max, s->unit, err, errlen);

    if (rc == 0)
        *(int *)((char *)c + s->offset) = (int)n;
    return rc;
}

static int parse_ws_max_frame(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen)
{
    long n = 0;
    int rc = parse_range(&n, v, name, 1024, 1048576, "bytes", err, errlen);

    if (rc == 0)
        c->ws_max_frame = (int)n;
    return rc;
}

static int parse_ws_max_subs(jw_config *c, const char *v, const char *name, char *err,
                             size_t errlen)
{
    long n = 0;
    int rc = parse_range(&n, v, name, 1, 10000, "subscriptions", err, errlen);

    if (rc == 0)
        c->ws_max_subscriptions = (int)n;
    return rc;
}

static int parse_max_connections(jw_config *c, const char *v, const char *name, char *err,
                                 size_t errlen)
{
    long n = 0;
    int rc = parse_range(&n, v, name, 1, 1000000, "connections", err, errlen);

    if (rc == 0)
        c->max_connections = (int)n;
    return rc;
}

static int parse_ws_max_queue(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen)
{
    long n = 0;
    int rc = parse_range(&n, v, name, 65536, 67108864, "bytes", err, errlen);

    if (rc == 0)
        c->ws_max_queue = n;
    return rc;
}

static int parse_ws_slow_close(jw_config *c, const char *v, const char *name, char *err,
                               size_t errlen)
{
    long n = 0;
    int rc = parse_range(&n, v, name, 1, 600, "seconds", err, errlen);

    if (rc == 0)
        c->ws_slow_close_s = (int)n;
    return rc;
}

static int parse_ws_auth_timeout(jw_config *c, const char *v, const char *name, char *err,
                                 size_t errlen)
{
    long n = 0;
    int rc = parse_range(&n, v, name, 1, 300, "seconds", err, errlen);

    if (rc == 0)
        c->ws_auth_timeout_s = (int)n;
    return rc;
}

/*
 * A duration: whole seconds, or a whole number with one unit, s, m, h or d,
 * as operators write retention ("30d").
 */
static bool parse_duration(const char *v, long min_s, long max_s, long *out)
{
    static const struct {
        char unit;
        long seconds;
    } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
    char num[24];
    size_t len = strlen(v);
    long n, mult = 1;

    if (len == 0 || len >= sizeof(num))
        return false;
    memcpy(num, v, len + 1);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (num[len - 1] == units[i].unit) {
            mult = units[i].seconds;
            num[len - 1] = '\0';
            break;
        }
    if (!parse_long(num, 0, max_s / mult, &n) || n * mult < min_s)
        return false;
    *out = n * mult;
    return true;
}

static int parse_events_retention(jw_config *c, const char *v, const char *name, char *err,
                                  size_t errlen)
{
    long n;

    if (!parse_duration(v, 0, 3650L * 86400, &n))
        return fail(err, errlen,
                    "%s must be 0 (keep forever) or a duration up to 3650d: seconds, or a whole "
                    "number with s, m, h or d, e.g. 30d (got \"%s\")",
                    name, v);
    c->events_retention_s = n;
    return 0;
}

static int parse_events_batch(jw_config *c, const char *v, const char *name, char *err,
                              size_t errlen)
{
    long n = 0;
    int rc = parse_range(&n, v, name, 1, 100000, "rows", err, errlen);

    if (rc == 0)
        c->events_retention_batch = (int)n;
    return rc;
}

static int parse_events_interval(jw_config *c, const char *v, const char *name, char *err,
                                 size_t errlen)
{
    long n;

    if (!parse_duration(v, 1, 86400, &n))
        return fail(err, errlen,
                    "%s must be a duration from 1 s to 1d: seconds, or a whole number with s, m, "
                    "h or d, e.g. 10m (got \"%s\")",
                    name, v);
    c->events_retention_interval_s = (int)n;
    return 0;
}
