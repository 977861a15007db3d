/*
 * config.h - jobwire's settings: flags, environment variables, defaults.
 *
 * Every setting is a long flag and an environment variable; a flag wins over
 * the variable, the variable over the default. The settings are one table in
 * config_settings.c (flag, variable, default, help text, and the value's
 * kind, range and unit, or its parser): adding a setting is adding a field
 * below and a row there. `jobwire --help` prints the table.
 *
 * Validation happens here, once, at start-up, and every error names the
 * setting as the operator spelled it (flag or variable) and says what to do.
 * Secret values never appear in an error message.
 *
 * Outside dev mode the three secrets (admin key, JWT secret, secret key) are
 * required, and the JWT secret must have at least JW_MIN_JWT_SECRET_LEN
 * bytes; in dev mode they are optional, but a value that is given must
 * still be valid (a JWT secret of JW_MIN_SECRET_LEN bytes or more: auth.c
 * warns when it is short).
 *
 * Threads: load and release run on the main thread before and after the
 * server runs; in between the struct is read-only and any thread may read it.
 */
#ifndef JW_CONFIG_H
#define JW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef JW_VERSION
#define JW_VERSION "0.1.0"
#endif

#define JW_SECRET_KEY_LEN 32 /* AES-256 */

/* --fanout-threads auto: one less than the CPUs the process may use, at most this many. */
#define JW_FANOUT_AUTO (-1)
#define JW_FANOUT_AUTO_MAX 8
#define JW_FANOUT_AUTO_MAX_TEXT "8"
/* JW_MIN_SECRET_LEN and JW_MIN_JWT_SECRET_LEN are auth.h's: auth judges secrets. */

/* What the command line asked for. */
typedef enum jw_config_action {
    JW_CONFIG_RUN,     /* start the server */
    JW_CONFIG_HELP,    /* --help: print jw_config_print_help, exit 0 */
    JW_CONFIG_VERSION, /* --version: print jw_config_print_version, exit 0 */
} jw_config_action;

typedef struct jw_config {
    jw_config_action action;

    char *listen_host; /* IP literal to bind, e.g. "127.0.0.1" or "::1" */
    int listen_port;   /* 1..65535 */
    bool listen_ipv6;  /* listen_host is an IPv6 literal */

    char *database_url; /* libpq conninfo; log only via jw_log_redact_conninfo */

    /* Secrets: NULL / false when unset (dev mode only). Never log them. */
    char *admin_key;
    char *jwt_secret;
    bool has_secret_key;
    uint8_t secret_key[JW_SECRET_KEY_LEN]; /* decoded from 64 hex chars */

    /* What users' tokens must carry (auth.h); NULL: that claim is not checked. */
    char *jwt_audience; /* aud: the string, or one element of the array */
    char *jwt_issuer;   /* iss */

    char *provider;       /* "sim" or an http(s) base URL without trailing '/' */
    bool provider_sim;    /* provider is "sim" */
    char **origins;       /* allowed browser Origins, e.g. "http://127.0.0.1:8080" */
    size_t origin_count;  /* at least 1 after a successful load */
    bool origins_derived; /* not given: derived from --listen */

    /*
     * TLS on the listen port: both set or both NULL (load refuses one
     * without the other). Load has checked that the certificate chain and
     * the unencrypted key read, parse and belong together, so a failure in
     * lws later is not the operator's file. The key file's path is not a
     * secret; its contents never pass through here.
     */
    char *tls_cert;         /* PEM certificate chain file, leaf first */
    char *tls_key;          /* PEM private key file of tls_cert's leaf */
    char tls_not_after[32]; /* the leaf's expiry, "2026-01-31 23:59:59 UTC" */
    bool tls_expired;       /* the leaf's expiry has passed: clients will refuse it */

    bool dev;         /* dev mode: secrets optional */
    int log_level;    /* JW_LOG_* */
    int db_max_group; /* deltas per transaction, 1..5000 */
    size_t max_body;  /* max HTTP request body bytes, 1024..16777216 */

    char *sim;                 /* the sim provider's spec string ("" for its defaults) */
    int otp_timeout_login_s;   /* 1..3600 */
    int otp_timeout_payment_s; /* 1..3600 */
    int provider_timeout_ms;   /* 100..300000 */
    double retry_scale;        /* multiplies every retry delay, 0.001..100 */
    int finished_job_ttl_s;    /* a finished job leaves memory this long after, 1..86400 */

    /* jobwire.v1 limits (docs/protocol.md) */
    int ws_max_frame;         /* bytes of one client message, 1024..1048576 */
    int ws_max_subscriptions; /* per connection, 1..10000 */
    long ws_max_queue;        /* outbound bytes per connection, 65536..67108864 */
    long ws_max_queue_total;  /* outbound bytes queued in the process, 1 MiB..64 GiB */
    int ws_slow_close_s;      /* seconds over the queue bound before 4008, 1..600 */
    int fanout_threads;       /* helpers sharing a publish round's socket writes, 0..64, or
                                 JW_FANOUT_AUTO until jw_config_load resolves it */
    int ws_auth_timeout_s;    /* seconds for the first auth message, 1..300 */
    int ws_ping_interval_s;   /* silence before a ping, and after it before a drop, 1..3600 */
    int ws_message_rate;      /* client messages per connection per second; 0: no limit */

    /* Client connections (HTTP and both WebSocket endpoints) open at once, 1..1000000;
     * also bounded by the open-file limit (main.c). */
    int max_connections;

    /* Per client address (docs/operations.md, Limits); 0: no limit. */
    int max_connections_per_ip; /* open at once; IPv6 by /64 */
    int connection_rate_per_ip; /* new connections per second, bursts of twice that */

    /* Per user, for users' tokens (the admin key is not limited). */
    int max_live_jobs_per_user; /* running jobs at once */
    int job_rate_per_user;      /* creations + retries per minute */
    int otp_rate_per_user;      /* OTP submissions per minute, HTTP and socket together */
    int max_ws_per_user;        /* WebSocket connections open at once, both endpoints */

    /* job_events retention (docs/operations.md) */
    /* Several nodes on one database (docs/operations.md): this node's id, and
     * how long its heartbeat vouches for it, 2..600 s. */
    char *node_id; /* default "jobwire": a restart anywhere finds its own jobs */
    int node_ttl_s;

    long events_retention_s;         /* age past a job's end; 0 keeps the journal forever */
    int events_retention_batch;      /* most rows one delete takes, 1..100000 */
    int events_retention_interval_s; /* from one retention round to the next, 1..86400 */
} jw_config;

/*
 * Fills c from argv and the environment. c needs no preparation.
 *
 * Returns 0 with c->action telling what to do, or JW_ECONFIG with a message
 * for the operator in err (what was wrong and how to fix it). For --help and
 * --version nothing else is validated, so they work without a database URL.
 * On error c holds nothing that needs releasing, but jw_config_release is
 * safe either way.
 */
int jw_config_load(jw_config *c, int argc, char **argv, char *err, size_t errlen);

/*
 * The helpers --fanout-threads auto gives a process that may use cpus CPUs
 * (its affinity, or a lower CPU quota: jw_config_quota_cpus): one less (a
 * helper sharing the loop thread's only CPU just competes with it), at most
 * JW_FANOUT_AUTO_MAX. jw_config_load resolves auto with it.
 */
int jw_config_fanout_auto(int cpus);

/*
 * The CPUs a cgroup CPU quota lets this process use: its cgroups are read
 * from cgroup_file (/proc/self/cgroup), the hierarchies are under root
 * (/sys/fs/cgroup: cgroup v2 there or at unified/, v1's cpu controller at cpu/
 * or cpu,cpuacct/). The lowest quota of its cgroup and of every parent, quota
 * / period rounded to the nearest whole CPU, at least 1; 0 when there is none
 * or none can be read. auto counts the smaller of this and the affinity.
 */
int jw_config_quota_cpus(const char *cgroup_file, const char *root);

/* Frees what load allocated and wipes the secrets; c can be loaded again. */
void jw_config_release(jw_config *c);

/* The --help text: every setting with its variable, default and meaning. */
void jw_config_print_help(FILE *out);
void jw_config_print_version(FILE *out);

#endif
