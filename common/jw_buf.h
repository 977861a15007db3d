/*
 * jw_buf.h - a growable byte buffer, always NUL-terminated (git's strbuf).
 *
 * jw_buf_init/jw_buf_release for caller storage; jw_buf_detach hands the
 * bytes to the caller (free() them) and leaves the buffer released: init it
 * again before reuse (release stays harmless). Growth that
 * fails aborts: buffers hold sizes we chose, and callers bound what a peer
 * sends before appending it.
 */
#ifndef JW_BUF_H
#define JW_BUF_H

#include <stddef.h>

typedef struct jw_buf {
    char *data; /* never NULL between init and release/detach */
    size_t len;
    size_t cap;
} jw_buf;

void jw_buf_init(jw_buf *b, size_t hint);
void jw_buf_release(jw_buf *b);
char *jw_buf_detach(jw_buf *b, size_t *len);
void jw_buf_reset(jw_buf *b);
void jw_buf_grow(jw_buf *b, size_t extra);
void jw_buf_add(jw_buf *b, const void *data, size_t len);
void jw_buf_adds(jw_buf *b, const char *s);
void jw_buf_addch(jw_buf *b, char c);
void jw_buf_addf(jw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
