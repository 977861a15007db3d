/*
 * config.c - loading jobwire's settings: the command line, the environment
 * and the defaults, parsed row by row from the table in config_settings.c;
 * the checks that span settings; --help. See config.h and config_internal.h.
 *
 * A typed row (a number, a duration, a switch, a choice, a bounded string)
 * is parsed here by config__parse_value and written through its offset; only
 * CONFIG_SPECIAL rows have a parser of their own.
 *
 * Threads: the main thread, before and after the server runs.
 */
#include "config_internal.h"

#include "auth.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* getopt_long values: settings are OPT_BASE + index. */
enum { OPT_HELP = 'h', OPT_VERSION = 1, OPT_BASE = 1000 };

void config__replace_str(char **slot, const char *v)
{
    free(*slot);
    *slot = jw_xstrdup(v);
}

void config__free_secret(char **slot)
{
    if (*slot) {
        OPENSSL_cleanse(*slot, strlen(*slot));
        free(*slot);
        *slot = NULL;
    }
}

void config__free_origins(jw_config *c)
{
    for (size_t i = 0; i < c->origin_count; i++)
        free(c->origins[i]);
    free(c->origins);
    c->origins = NULL;
    c->origin_count = 0;
}

bool config__parse_long(const char *v, long min, long max, long *out)
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
    if (!config__parse_long(num, 0, max_s / mult, &n) || n * mult < min_s)
        return false;
    *out = n * mult;
    return true;
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const on[] = {"1", "true", "yes", "on"};
    static const char *const off[] = {"0", "false", "no", "off", ""};

    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++)
        if (strcasecmp(v, on[i]) == 0) {
            *out = true;
            return true;
        }
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++)
        if (strcasecmp(v, off[i]) == 0) {
            *out = false;
            return true;
        }
    return false;
}

/* "one of a, b, c" from a choice list. */
static int choice_error(const struct config__setting *s, const char *v, const char *name, char *err,
                        size_t errlen)
{
    char list[256] = "";
    size_t used = 0;

    for (const struct config__choice *ch = s->choices; ch->name && used < sizeof(list); ch++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
                                 ch == s->choices ? "" : ", ", ch->name);
    return jw_errorf(err, errlen, JW_ECONFIG, "%s must be one of %s (got \"%s\")", name, list, v);
}

/*
 * Writes a whole number into the row's field. The field's type comes from
 * CONFIG_FIELD; a number row over a field of another type is a bug in the
 * table, which test_config checks for every row.
 */
static int store_number(jw_config *c, const struct config__setting *s, long n)
{
    void *field = (char *)c + s->offset;

    switch (s->store) {
    case CONFIG_STORE_INT: *(int *)field = (int)n; return 0;
    case CONFIG_STORE_LONG: *(long *)field = n; return 0;
    case CONFIG_STORE_SIZE: *(size_t *)field = (size_t)n; return 0;
    default: break;
    }
    jw_log_error("config: --%s is a number row over a field that is not one", s->flag);
    abort();
}

int config__parse_value(jw_config *c, const struct config__setting *s, const char *v,
                        const char *name, char *err, size_t errlen)
{
    void *field = (char *)c + s->offset;
    long n = 0;

    switch (s->kind) {
    case CONFIG_SPECIAL: break;
    case CONFIG_INT:
        if (config__parse_long(v, s->lo, s->hi, &n))
            return store_number(c, s, n);
        if (!s->unit)
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "%s must be a whole number %ld..%ld (got \"%s\")", name, s->lo, s->hi,
                             v);
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s must be a whole number of %s %ld..%ld (got \"%s\")", name, s->unit,
                         s->lo, s->hi, v);
    case CONFIG_DURATION:
        if (parse_duration(v, s->lo, s->hi, &n))
            return store_number(c, s, n);
        return jw_errorf(err, errlen, JW_ECONFIG, "%s must be %s (got \"%s\")", name, s->expect, v);
    case CONFIG_REAL: {
        char *end = NULL;
        double f;

        errno = 0;
        f = strtod(v, &end);
        if (errno || end == v || *end || !(f >= s->real_lo && f <= s->real_hi))
            return jw_errorf(err, errlen, JW_ECONFIG, "%s must be a number %g..%g (got \"%s\")",
                             name, s->real_lo, s->real_hi, v);
        *(double *)field = f;
        return 0;
    }
    case CONFIG_BOOL:
        if (!parse_bool(v, (bool *)field))
            return jw_errorf(err, errlen, JW_ECONFIG, "%s must be 1 (on) or 0 (off); got \"%s\"",
                             name, v);
        return 0;
    case CONFIG_ENUM:
        for (const struct config__choice *ch = s->choices; ch->name; ch++)
            if (strcmp(v, ch->name) == 0) {
                *(int *)field = ch->value;
                return 0;
            }
        return choice_error(s, v, name, err, errlen);
    case CONFIG_STRING:
        if (strlen(v) > (size_t)s->hi)
            return jw_errorf(err, errlen, JW_ECONFIG, "%s is longer than %ld characters", name,
                             s->hi);
        config__replace_str((char **)field, v);
        return 0;
    }
    return s->parse(c, v, name, err, errlen);
}

static const struct config__setting *find_setting(const char *flag, size_t len)
{
    for (size_t i = 0; i < CONFIG__SETTING_COUNT; i++)
        if (strlen(config__settings[i].flag) == len &&
            memcmp(config__settings[i].flag, flag, len) == 0)
            return &config__settings[i];
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
        const struct config__setting *s;
        size_t len;

        if (strcmp(a, "--") == 0)
            return i + 1 < argc ? jw_errorf(err, errlen, JW_ECONFIG,
                                            "unexpected argument %d after '--': jobwire takes only "
                                            "--flags; run 'jobwire --help' for the list",
                                            i + 1)
                                : 0;
        if (strncmp(a, "--", 2) != 0) {
            if (strcmp(a, "-h") == 0)
                continue;
            if (a[0] == '-' && a[1])
                return jw_errorf(
                    err, errlen, JW_ECONFIG,
                    "unknown option '%.2s%s': jobwire has only -h and long --flags; run "
                    "'jobwire --help' for the list",
                    a, a[2] ? "..." : "");
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "unexpected argument %d: jobwire takes only --flags; run "
                             "'jobwire --help' for the list",
                             i);
        }
        eq = strchr(a + 2, '=');
        len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if ((len == 4 && memcmp(a + 2, "help", 4) == 0) ||
            (len == 7 && memcmp(a + 2, "version", 7) == 0)) {
            if (eq)
                return jw_errorf(err, errlen, JW_ECONFIG, "--%.*s takes no value", (int)len, a + 2);
            continue;
        }
        s = find_setting(a + 2, len);
        if (!s)
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "unknown option '--%.*s'; run 'jobwire --help' for the list",
                             (int)(len > 64 ? 64 : len), a + 2);
        if (!s->metavar && eq)
            return jw_errorf(err, errlen, JW_ECONFIG,
                             "--%s takes no value (set %s=1 in the environment instead)", s->flag,
                             s->env);
        if (s->metavar && !eq) {
            if (i + 1 >= argc)
                return jw_errorf(err, errlen, JW_ECONFIG, "--%s needs a value: --%s=%s", s->flag,
                                 s->flag, s->metavar);
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

/*
 * A browser on our own page sends the page's origin: https:// when we serve
 * TLS. On a loopback address the page is as often opened as localhost: a
 * browser resolves that name only to loopback, so it is our page too.
 */
static void derive_origins(jw_config *c)
{
    const char *scheme = c->tls_cert ? "https" : "http";
    bool loopback = c->listen_ipv6 ? strcmp(c->listen_host, "::1") == 0
                                   : strncmp(c->listen_host, "127.", 4) == 0;
    char origin[INET6_ADDRSTRLEN + 32];

    snprintf(origin, sizeof(origin), c->listen_ipv6 ? "%s://[%s]:%d" : "%s://%s:%d", scheme,
             c->listen_host, c->listen_port);
    c->origins = jw_xcalloc(2, sizeof(*c->origins));
    c->origins[0] = jw_xstrdup(origin);
    c->origin_count = 1;
    c->origins_derived = true;
    if (loopback) {
        snprintf(origin, sizeof(origin), "%s://localhost:%d", scheme, c->listen_port);
        c->origins[c->origin_count++] = jw_xstrdup(origin);
    }
}

int jw_config_fanout_auto(int cpus)
{
    if (cpus <= 1)
        return 0;
    return cpus - 1 < JW_FANOUT_AUTO_MAX ? cpus - 1 : JW_FANOUT_AUTO_MAX;
}

/* A quota of q per period p, in whole CPUs: the nearest, at least 1; 0 for no quota. */
static int quota_cpus(long long q, long long p)
{
    long long n;

    if (q <= 0 || p <= 0)
        return 0;
    n = q / p + (q % p >= p - p / 2); /* half up, without q + p/2 overflowing */
    return n < 1 ? 1 : n > INT_MAX ? INT_MAX : (int)n;
}

/* The first line of dir/name (a kernel file: short), or false. */
static bool read_line(const char *dir, const char *name, char *buf, size_t len)
{
    char path[PATH_MAX];
    FILE *f;
    bool ok;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
        !(f = fopen(path, "re")))
        return false;
    ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    return ok;
}

/* cgroup v2: cpu.max is "QUOTA PERIOD", QUOTA "max" for none. */
static int v2_quota(const char *dir)
{
    char line[64];
    long long q, p;

    if (!read_line(dir, "cpu.max", line, sizeof(line)) || sscanf(line, "%lld %lld", &q, &p) != 2)
        return 0;
    return quota_cpus(q, p);
}

/* cgroup v1: cpu.cfs_quota_us (-1 for none) and cpu.cfs_period_us. */
static int v1_quota(const char *dir)
{
    char line[64];
    long long q, p;

    if (!read_line(dir, "cpu.cfs_quota_us", line, sizeof(line)) || sscanf(line, "%lld", &q) != 1 ||
        !read_line(dir, "cpu.cfs_period_us", line, sizeof(line)) || sscanf(line, "%lld", &p) != 1)
        return 0;
    return quota_cpus(q, p);
}

/* The lowest quota of cgroup path under mount and of each of its parents; 0: none. */
static int lowest_quota(const char *mount, const char *path, int (*quota)(const char *dir))
{
    char dir[PATH_MAX];
    size_t base = strlen(mount);
    int low = 0;

    if (path[0] != '/' || (size_t)snprintf(dir, sizeof(dir), "%s%s", mount,
                                           strcmp(path, "/") ? path : "") >= sizeof(dir))
        return 0;
    for (;;) {
        int n = quota(dir);
        char *cut;

        if (n > 0 && (!low || n < low))
            low = n;
        if (strlen(dir) <= base || !(cut = strrchr(dir + base, '/')))
            return low;
        *cut = '\0';
    }
}

/* Whether the comma-separated controller list has "cpu". */
static bool has_cpu(const char *list, size_t len)
{
    for (const char *p = list, *e = list + len; p < e;) {
        const char *comma = memchr(p, ',', (size_t)(e - p));
        size_t n = (size_t)((comma ? comma : e) - p);

        if (n == 3 && memcmp(p, "cpu", 3) == 0)
            return true;
        p += n + 1;
    }
    return false;
}

int jw_config_quota_cpus(const char *cgroup_file, const char *root)
{
    static const char *const v2_mounts[] = {"", "/unified"};
    static const char *const v1_mounts[] = {"/cpu", "/cpu,cpuacct", "/cpuacct,cpu"};
    char line[4096], mount[PATH_MAX];
    FILE *f = fopen(cgroup_file, "re");
    int low = 0;

    if (!f)
        return 0;
    /* "ID:CONTROLLERS:PATH": ID 0 and no controllers is v2's, "cpu" among them v1's. */
    while (fgets(line, sizeof(line), f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *nl;
        bool v2;

        if (!c2 || !(nl = strchr(c2, '\n')))
            continue; /* not that shape, or longer than the buffer */
        *nl = '\0';
        v2 = c1 - line == 1 && line[0] == '0' && c2 == c1 + 1;
        if (!v2 && !has_cpu(c1 + 1, (size_t)(c2 - c1 - 1)))
            continue;
        for (size_t i = 0; i < (v2 ? 2 : 3); i++) {
            int n;

            if ((size_t)snprintf(mount, sizeof(mount), "%s%s", root,
                                 v2 ? v2_mounts[i] : v1_mounts[i]) >= sizeof(mount))
                continue;
            n = lowest_quota(mount, c2 + 1, v2 ? v2_quota : v1_quota);
            if (n > 0 && (!low || n < low))
                low = n;
        }
    }
    fclose(f);
    return low;
}

/*
 * The CPUs this process may run on (taskset, cpusets), or fewer if a cgroup
 * CPU quota allows less time than that (a container's --cpus); 1 if the
 * affinity cannot be told.
 */
static int allowed_cpus(void)
{
    cpu_set_t set;
    int n, q;

    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 1;
    n = CPU_COUNT(&set);
    q = jw_config_quota_cpus("/proc/self/cgroup", "/sys/fs/cgroup");
    if (q > 0 && q < n)
        n = q;
    return n > 0 ? n : 1;
}

/*
 * The default node id: one name for every process started without one, so a
 * lone node restarted anywhere (another host name, another port, a new
 * container) takes its jobs back at once, and a second process started
 * without an id is the same node: the newer one takes the jobs, the older
 * one is fenced and exits. A cluster gives each node its own id.
 */
#define DEFAULT_NODE_ID "jobwire"

static void derive_node_id(jw_config *c)
{
    free(c->node_id);
    c->node_id = jw_xstrdup(DEFAULT_NODE_ID);
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
        return jw_errorf(
            err, errlen, JW_ECONFIG,
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
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "outside dev mode jobwire needs all three secrets; missing: %s. Set %s "
                         "(generate each with: openssl rand -hex 32), or pass --dev for local "
                         "development",
                         list, missing > 1 ? "them" : "it");
    if (strlen(c->jwt_secret) < JW_MIN_JWT_SECRET_LEN)
        return jw_errorf(
            err, errlen, JW_ECONFIG,
            "JOBWIRE_JWT_SECRET (--jwt-secret) must be at least %d characters outside "
            "--dev, the size of an HS256 key; got %zu. Generate one with: openssl rand "
            "-hex 32, and give the same value to whatever issues the tokens",
            JW_MIN_JWT_SECRET_LEN, strlen(c->jwt_secret));
    return 0;
}

int jw_config_load(jw_config *c, int argc, char **argv, char *err, size_t errlen)
{
    struct option opts[CONFIG__SETTING_COUNT + 3];
    const char *flagval[CONFIG__SETTING_COUNT] = {0};
    int ch, rc;

    apply_builtin_defaults(c);
    if (errlen)
        err[0] = '\0';

    rc = check_args(argc, argv, err, errlen);
    if (rc)
        return rc;

    for (size_t i = 0; i < CONFIG__SETTING_COUNT; i++)
        opts[i] = (struct option){config__settings[i].flag,
                                  config__settings[i].metavar ? required_argument : no_argument,
                                  NULL, OPT_BASE + (int)i};
    opts[CONFIG__SETTING_COUNT] = (struct option){"help", no_argument, NULL, OPT_HELP};
    opts[CONFIG__SETTING_COUNT + 1] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    opts[CONFIG__SETTING_COUNT + 2] = (struct option){0};

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
        if (ch >= OPT_BASE && ch < OPT_BASE + (int)CONFIG__SETTING_COUNT) {
            flagval[ch - OPT_BASE] = optarg ? optarg : "1";
            continue;
        }
        /* check_args has already refused what getopt_long could object to. */
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "invalid command line; run 'jobwire --help' for the list");
    }

    for (size_t i = 0; i < CONFIG__SETTING_COUNT; i++) {
        const struct config__setting *s = &config__settings[i];
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
        rc = config__parse_value(c, s, value, name, err, errlen);
        if (rc)
            goto fail;
    }

    rc = config__check_tls(c, err, errlen);
    if (rc)
        goto fail;
    if (!c->origins)
        derive_origins(c);
    if (!c->node_id || !*c->node_id)
        derive_node_id(c);
    if (c->fanout_threads == JW_FANOUT_AUTO)
        c->fanout_threads = jw_config_fanout_auto(allowed_cpus());
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
    config__free_secret(&c->database_url);
    config__free_secret(&c->admin_key);
    config__free_secret(&c->jwt_secret);
    free(c->jwt_audience);
    free(c->jwt_issuer);
    free(c->provider);
    free(c->sim);
    free(c->node_id);
    free(c->tls_cert);
    free(c->tls_key);
    config__free_origins(c);
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
    for (size_t i = 0; i < CONFIG__SETTING_COUNT; i++) {
        const struct config__setting *s = &config__settings[i];

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
