/*
 * jw_log.h - one logging macro for the whole process.
 *
 * A line is: "<UTC time> <LEVEL> <message>\n" on stderr, written with one
 * write(2) so lines from different threads never interleave. The message is
 * printf-formatted and checked by the compiler. Formatting is skipped when the
 * level is off, so debug lines cost a compare in production.
 *
 * Convention: every line names the ids it concerns as key=value
 * (job=… step=… conn=… user=…). Never log an OTP value, a token, a session
 * secret or a full connection string; jw_log_redact_conninfo() exists for the
 * last one.
 *
 * Any thread may log. jw_log_set_level() is meant for start-up.
 */
#ifndef JW_LOG_H
#define JW_LOG_H

#include <stddef.h>

enum jw_log_level {
    JW_LOG_ERROR = 0,
    JW_LOG_WARN = 1,
    JW_LOG_INFO = 2,
    JW_LOG_DEBUG = 3,
};

extern int jw_log_level;

#define jw_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) <= jw_log_level)                                                               \
            jw_log_write((level), __VA_ARGS__);                                                    \
    } while (0)

#define jw_log_error(...) jw_log(JW_LOG_ERROR, __VA_ARGS__)
#define jw_log_warn(...) jw_log(JW_LOG_WARN, __VA_ARGS__)
#define jw_log_info(...) jw_log(JW_LOG_INFO, __VA_ARGS__)
#define jw_log_debug(...) jw_log(JW_LOG_DEBUG, __VA_ARGS__)

void jw_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses "error", "warn", "info" or "debug"; returns the level or -1. */
int jw_log_parse_level(const char *name);
void jw_log_set_level(int level);

/*
 * Copies a libpq connection string (URI or key=value form) into buf with any
 * password replaced by "***", for log lines and error messages.
 */
void jw_log_redact_conninfo(const char *conninfo, char *buf, size_t size);

/* Out of memory on a small internal allocation: log and abort (h2o style). */
void jw_oom(const char *what) __attribute__((noreturn));

/* malloc/calloc/strdup that abort on failure, for sizes we chose ourselves. */
void *jw_xmalloc(size_t n);
void *jw_xcalloc(size_t count, size_t n);
void *jw_xrealloc(void *p, size_t n);
char *jw_xstrdup(const char *s);

#endif
