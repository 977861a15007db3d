#include "jw_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

void jw_log_redact_conninfo(const char *conninfo, char *buf, size_t size)
{
    const char *p, *scheme, *at, *colon;
    size_t n = 0;

    if (!size)
        return;
    buf[0] = '\0';
    if (!conninfo) {
        snprintf(buf, size, "(none)");
        return;
    }
    /* URI form: postgresql://user:password@host/db - mask what follows ':'. */
    scheme = strstr(conninfo, "://");
    at = scheme ? strchr(scheme + 3, '@') : NULL;
    colon = at ? memchr(scheme + 3, ':', (size_t)(at - scheme - 3)) : NULL;
    for (p = conninfo; *p && n + 4 < size;) {
        if (p == colon) {
            memcpy(buf + n, ":***", 4);
            n += 4;
            p = at;
            continue;
        }
        /* "password=..." in key=value form or a URI query: mask the value. */
        if (strncmp(p, "password=", 9) == 0) {
            if (n + 12 >= size)
                break; /* no room to mask it: cut here rather than leak */
            memcpy(buf + n, "password=***", 12);
            n += 12;
            p += 9;
            if (*p == '\'') {
                /* quoted key=value password: up to the closing quote */
                for (p++; *p && *p != '\''; p++)
                    if (*p == '\\' && p[1])
                        p++;
                if (*p)
                    p++;
            } else {
                while (*p && *p != '&' && *p != ' ')
                    p++;
            }
            continue;
        }
        buf[n++] = *p++;
    }
    buf[n] = '\0';
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
