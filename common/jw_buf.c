#include "jw_buf.h"

#include "jw_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jw_buf_init(jw_buf *b, size_t hint)
{
    b->cap = hint ? hint : 64;
    b->data = jw_xmalloc(b->cap);
    b->data[0] = '\0';
    b->len = 0;
}

void jw_buf_release(jw_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *jw_buf_detach(jw_buf *b, size_t *len)
{
    char *p = b->data;

    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void jw_buf_reset(jw_buf *b)
{
    b->len = 0;
    b->data[0] = '\0';
}

void jw_buf_grow(jw_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;

    if (need <= b->cap)
        return;
    while (b->cap < need)
        b->cap *= 2;
    b->data = jw_xrealloc(b->data, b->cap);
}

void jw_buf_add(jw_buf *b, const void *data, size_t len)
{
    jw_buf_grow(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void jw_buf_adds(jw_buf *b, const char *s)
{
    jw_buf_add(b, s, strlen(s));
}

void jw_buf_addch(jw_buf *b, char c)
{
    jw_buf_add(b, &c, 1);
}

void jw_buf_addf(jw_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= b->cap - b->len) {
        jw_buf_grow(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}
