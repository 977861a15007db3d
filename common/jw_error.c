#include "jw_error.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

struct err_entry {
    const char *name;
    const char *msg;
};

static const struct err_entry err_table[] = {
#define JW__ERR_ROW(name, msg) {#name, msg},
    JW_ERRNO_MAP(JW__ERR_ROW)
#undef JW__ERR_ROW
};

static const struct err_entry *lookup(int err)
{
    int idx = err - JW__ERR_FIRST - 1;

    if (err >= 0 || idx < 0 || (size_t)idx >= sizeof(err_table) / sizeof(err_table[0]))
        return NULL;
    return &err_table[idx];
}

const char *jw_strerror(int err)
{
    const struct err_entry *e = lookup(err);

    if (err == 0)
        return "success";
    return e ? e->msg : "unknown error";
}

const char *jw_err_name(int err)
{
    const struct err_entry *e = lookup(err);

    if (err == 0)
        return "OK";
    return e ? e->name : "EUNKNOWN";
}

int jw_verrorf(char *err, size_t errlen, int code, const char *fmt, va_list ap)
{
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    return code;
}

int jw_errorf(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    code = jw_verrorf(err, errlen, code, fmt, ap);
    va_end(ap);
    return code;
}
