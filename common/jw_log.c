#include "jw_log.h"

#include "jw_util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int jw_log_level = JW_LOG_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void jw_log_set_level(int level)
{
    if (level >= JW_LOG_ERROR && level <= JW_LOG_DEBUG)
        jw_log_level = level;
}

int jw_log_parse_level(const char *name)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void jw_log_write(int level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    size_t n;
    int r;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%06ldZ %-5s ", ts.tv_nsec / 1000,
                 level_names[level < 0   ? 0
                             : level > 3 ? 3
                                         : level]);
    n += (size_t)r;

    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (r < 0)
        r = 0;
    /* One event, one line: a newline inside a message (libpq's are
     * multi-line) must not start what looks like another log line. */
    for (size_t i = n; i < n + (size_t)r && i < sizeof(line) - 1; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    n += (size_t)r;
    if (n > sizeof(line) - 2) {
        /* Truncated: mark it so nobody mistakes a cut line for the whole. */
        n = sizeof(line) - 2;
        memcpy(line + n - 3, "...", 3);
    }
    line[n++] = '\n';
    /* One write per line keeps lines from different threads whole. */
    if (write(STDERR_FILENO, line, n) < 0) {
        /* Nowhere left to report it. */
    }
}

/* Appends n bytes to buf (size) at *len, keeping it NUL-terminated; cuts at the end. */
static void put(char *buf, size_t size, size_t *len, const char *p, size_t n)
{
    if (*len + 1 >= size)
        return;
    if (n > size - 1 - *len)
        n = size - 1 - *len;
    memcpy(buf + *len, p, n);
    *len += n;
    buf[*len] = '\0';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Where a URI's query starts, as libpq finds it (conninfo_uri_parse_options):
 * after the hosts - each either "[...]" (an IPv6 address, which may hold
 * a '?') or running to ':', '/', '?' or ',', with an optional ":port", comma
 * separated - and after an optional "/dbname". NULL when there is none. For
 * what libpq refuses (a '[' never closed, junk after ']') it is the first
 * '?': that masks more, never less.
 */
static const char *uri_query(const char *hosts)
{
    const char *p = hosts;

    for (;;) {
        if (*p == '[') {
            p = strchr(p, ']');
            if (!p || (p[1] && !strchr(":/?,", p[1])))
                return strchr(hosts, '?');
            p++;
        } else {
            p += strcspn(p, ":/?,");
        }
        if (*p == ':')
            p += 1 + strcspn(p + 1, "/?,");
        if (*p != ',')
            break;
        p++;
    }
    if (*p == '/')
        p += strcspn(p, "?");
    return *p == '?' ? p : NULL;
}

/*
 * Whether the query parameter key (n bytes) names the password. libpq
 * percent-decodes keys, so "pass%77ord" is the password too; any case is
 * taken, as a key libpq refuses can still hold one.
 */
static bool is_password_key(const char *key, size_t n)
{
    char decoded[9];
    size_t k = 0;

    for (size_t i = 0; i < n; k++) {
        if (k == 8)
            return false;
        if (key[i] == '%' && i + 2 < n && jw_hex_digit(key[i + 1]) >= 0 &&
            jw_hex_digit(key[i + 2]) >= 0) {
            decoded[k] = (char)(jw_hex_digit(key[i + 1]) * 16 + jw_hex_digit(key[i + 2]));
            i += 3;
        } else {
            decoded[k] = key[i++];
        }
    }
    return k == 8 && strncasecmp(decoded, "password", 8) == 0;
}

/*
 * URI form: postgres[ql]://[user[:password]@]hosts[/db][?k=v&...]. The
 * password is what follows the first ':' of the userinfo, and the value of
 * any password query parameter (uri_query, is_password_key).
 */
static void redact_uri(const char *s, char *buf, size_t size)
{
    const char *auth = strstr(s, "://") + 3;
    const char *at = auth, *hosts = auth, *p, *q;
    size_t len = 0;

    /* As libpq: the userinfo runs to the first '@' before any '/'. */
    while (*at && *at != '@' && *at != '/')
        at++;
    put(buf, size, &len, s, (size_t)(auth - s));
    if (*at == '@') {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));

        if (colon) {
            put(buf, size, &len, auth, (size_t)(colon - auth));
            put(buf, size, &len, ":***", 4);
        } else {
            put(buf, size, &len, auth, (size_t)(at - auth));
        }
        auth = at;
        hosts = at + 1;
    }
    q = uri_query(hosts);
    put(buf, size, &len, auth, (size_t)((q ? q : auth + strlen(auth)) - auth));
    if (!q)
        return;
    /* Query: k=v pairs separated by '&'. */
    for (p = q; *p;) {
        size_t n = strcspn(p + 1, "&") + 1; /* the separator and the pair */
        const char *eq = memchr(p + 1, '=', n - 1);

        if (eq && is_password_key(p + 1, (size_t)(eq - p - 1))) {
            put(buf, size, &len, p, (size_t)(eq + 1 - p));
            put(buf, size, &len, "***", 3);
        } else {
            put(buf, size, &len, p, n);
        }
        p += n;
    }
}

/*
 * key=value form, read as libpq reads it: spaces around '=' allowed; a value
 * is either single-quoted (with backslash escapes) or runs to the next space
 * (with backslash escapes). Written back normalised, the password masked.
 * Anything that does not parse is not copied at all.
 */
static void redact_kv(const char *s, char *buf, size_t size)
{
    size_t len = 0;

    for (;;) {
        const char *key, *val;
        size_t klen;

        while (is_space(*s))
            s++;
        if (!*s)
            return;
        key = s;
        while (*s && !is_space(*s) && *s != '=')
            s++;
        klen = (size_t)(s - key);
        while (is_space(*s))
            s++;
        if (*s != '=' || klen == 0) {
            put(buf, size, &len, " (unparsable rest hidden)", 25);
            return;
        }
        s++;
        while (is_space(*s))
            s++;
        val = s;
        if (*s == '\'') {
            for (s++; *s && *s != '\''; s++)
                if (*s == '\\' && s[1])
                    s++;
            if (*s != '\'') {
                put(buf, size, &len, " (unparsable rest hidden)", 25);
                return;
            }
            s++;
        } else {
            for (; *s && !is_space(*s); s++)
                if (*s == '\\' && s[1])
                    s++;
        }
        if (len)
            put(buf, size, &len, " ", 1);
        put(buf, size, &len, key, klen);
        put(buf, size, &len, "=", 1);
        /* Any case: a key libpq refuses ("Password") can still hold one. */
        if (klen == 8 && strncasecmp(key, "password", 8) == 0)
            put(buf, size, &len, "***", 3);
        else
            put(buf, size, &len, val, (size_t)(s - val));
    }
}

void jw_log_redact_conninfo(const char *conninfo, char *buf, size_t size)
{
    if (!size)
        return;
    buf[0] = '\0';
    if (!conninfo) {
        snprintf(buf, size, "(none)");
        return;
    }
    {
        /* A URI (postgresql://, or the provider's http(s)://) has its scheme
         * before any '=' or space; everything else is key=value. */
        const char *scheme = strstr(conninfo, "://");

        if (scheme && scheme > conninfo && strcspn(conninfo, "= \t") > (size_t)(scheme - conninfo))
            redact_uri(conninfo, buf, size);
        else if (!strchr(conninfo, '='))
            snprintf(buf, size, "%s", conninfo); /* a plain word ("sim"): nothing to hide */
        else
            redact_kv(conninfo, buf, size);
    }
}

void jw_oom(const char *what)
{
    jw_log_error("out of memory allocating %s; aborting", what);
    abort();
}

void *jw_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        jw_oom("memory");
    return p;
}

void *jw_xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);

    if (!p)
        jw_oom("memory");
    return p;
}

void *jw_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q)
        jw_oom("memory");
    return q;
}

char *jw_xstrdup(const char *s)
{
    char *p = strdup(s);

    if (!p)
        jw_oom("string");
    return p;
}
