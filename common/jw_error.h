/*
 * jw_error.h - the one error enum of jobwire.
 *
 * Every function that can fail returns 0 on success or a negative JW_E* code.
 * The list below is the single source: the enum and the name/message table in
 * jw_error.c are both generated from it, so they cannot drift apart.
 *
 * Any thread may call these functions; they touch no shared state.
 */
#ifndef JW_ERROR_H
#define JW_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#define JW_ERRNO_MAP(XX)                                                                           \
    XX(EINVAL, "invalid argument")                                                                 \
    XX(ENOMEM, "out of memory")                                                                    \
    XX(ETOOBIG, "value exceeds its size limit")                                                    \
    XX(ENOTFOUND, "not found")                                                                     \
    XX(ECONFLICT, "conflicts with the current state")                                              \
    XX(EDB, "database error")                                                                      \
    XX(EDBDOWN, "database unreachable")                                                            \
    XX(EMIGRATE, "schema migration failed")                                                        \
    XX(ECLOSED, "already shut down")                                                               \
    XX(EIO, "input/output error")                                                                  \
    XX(ECONFIG, "invalid configuration")                                                           \
    XX(EAUTH, "not authenticated")                                                                 \
    XX(EFORBIDDEN, "not allowed")                                                                  \
    XX(ETIMEOUT, "timed out")                                                                      \
    XX(ELIMIT, "over a limit")                                                                     \
    XX(ECANCELED, "cancelled")

enum jw_errno {
    JW_OK = 0,
#define JW__ERR_ENUM(name, msg) JW_##name,
    JW__ERR_FIRST = -1000,
    JW_ERRNO_MAP(JW__ERR_ENUM)
#undef JW__ERR_ENUM
        JW__ERR_END
};

/* The message for a JW_E* code ("success" for 0, "unknown error" otherwise). */
const char *jw_strerror(int err);

/* The symbolic name of a code, e.g. "EDBDOWN" ("OK" for 0). */
const char *jw_err_name(int err);

/*
 * Formats a message for a person into the caller's err[errlen] (truncated to
 * fit, always terminated) and returns code, so a check reads
 * `return jw_errorf(err, errlen, JW_ECONFIG, "%s must be ...", name);`.
 * err may be NULL or errlen 0: nothing is written, code is still returned.
 */
int jw_errorf(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int jw_verrorf(char *err, size_t errlen, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#endif
