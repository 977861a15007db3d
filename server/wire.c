/*
 * wire.c - the gate in front of a WebSocket socket's writes (see wire.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_DEFAULT */
#endif
#include "wire.h"

#include "jw_log.h"
#include "jw_util.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct jw_wire {
    pthread_mutex_t mu; /* everything below but refs */
    int fd;
    int refs;         /* loop thread only */
    bool closed;      /* jw_wire_close was called */
    bool foreign_mid; /* the socket took part of an lws write: lws sends the rest first */
    char *held;       /* the rest of the owner's frames: held_len bytes from held_off */
    size_t held_off, held_len;
};

/* Registered gates by descriptor. Written by the loop thread, read by any thread that
 * calls send() (a descriptor is never another thread's while it is registered). */
static _Atomic(jw_wire *) *table;
static int table_len;
static bool active;

bool jw_wire_init(int max_fd)
{
    ssize_t (*used)(int, const void *, size_t, int);
    void *sym = dlsym(RTLD_DEFAULT, "send");

    memcpy(&used, &sym, sizeof(used)); /* POSIX: dlsym's answer is the function's address */
    jw_wire_shutdown();
    if (used != send) {
        jw_log_warn("websocket writes: the process' send() is not jobwire's, so lws' own"
                    " writes cannot pass the gate; every write goes through lws on the loop"
                    " thread (no direct or helper-thread writes)");
        return false;
    }
    if (max_fd > 0) {
        table = jw_xcalloc((size_t)max_fd, sizeof(*table));
        table_len = max_fd;
    }
    active = true;
    return true;
}

void jw_wire_shutdown(void)
{
    free((void *)table);
    table = NULL;
    table_len = 0;
    active = false;
}

static jw_wire *lookup(int fd)
{
    if (fd < 0 || fd >= table_len)
        return NULL;
    return atomic_load_explicit(&table[fd], memory_order_acquire);
}

jw_wire *jw_wire_open(int fd)
{
    jw_wire *w;

    if (!active || fd < 0 || fd >= table_len || lookup(fd))
        return NULL;
    w = jw_xcalloc(1, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    w->fd = fd;
    w->refs = 1;
    atomic_store_explicit(&table[fd], w, memory_order_release);
    return w;
}

jw_wire *jw_wire_ref(jw_wire *w)
{
    w->refs++;
    return w;
}

void jw_wire_unref(jw_wire *w)
{
    if (!w || --w->refs > 0)
        return;
    pthread_mutex_destroy(&w->mu);
    free(w->held);
    free(w);
}

void jw_wire_close(jw_wire *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu); /* a helper's write under way finishes first */
    w->closed = true;
    pthread_mutex_unlock(&w->mu);
    if (lookup(w->fd) == w)
        atomic_store_explicit(&table[w->fd], NULL, memory_order_release);
    jw_wire_unref(w);
}

/* As much of p as the socket takes now: the bytes sent, or -1 (errno) when it failed. */
static ssize_t push(int fd, const char *p, size_t len)
{
    size_t sent = 0;

    while (sent < len) {
        ssize_t r = sendto(fd, p + sent, len - sent, MSG_DONTWAIT | MSG_NOSIGNAL, NULL, 0);

        if (r > 0) {
            sent += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r == 0)
            errno = EPIPE;
        return -1;
    }
    return (ssize_t)sent;
}

/* With w->mu held: sends what is held. 1: nothing is held now; 0: some still is; -1: failed. */
static int flush_held(jw_wire *w, int *err)
{
    ssize_t n;

    if (w->held_len == 0)
        return 1;
    n = push(w->fd, w->held + w->held_off, w->held_len);
    if (n < 0) {
        *err = errno;
        return -1;
    }
    w->held_off += (size_t)n;
    w->held_len -= (size_t)n;
    if (w->held_len)
        return 0;
    free(w->held); /* most sockets never fall behind: no buffer kept for them */
    w->held = NULL;
    w->held_off = 0;
    return 1;
}

jw_wire_result jw_wire_send(jw_wire *w, const char *p, size_t len, int *err)
{
    jw_wire_result r;
    ssize_t n;
    int f;

    *err = 0;
    pthread_mutex_lock(&w->mu);
    if (w->closed)
        r = JW_WIRE_CLOSED;
    else if (w->foreign_mid)
        r = JW_WIRE_WAIT;
    else if ((f = flush_held(w, err)) < 0)
        r = JW_WIRE_FAILED;
    else if (f == 0)
        r = JW_WIRE_WAIT;
    else if (len == 0)
        r = JW_WIRE_SENT;
    else if ((n = push(w->fd, p, len)) < 0) {
        *err = errno;
        r = JW_WIRE_FAILED;
    } else if ((size_t)n == len)
        r = JW_WIRE_SENT;
    else {
        w->held_len = len - (size_t)n;
        w->held = jw_xmalloc(w->held_len);
        memcpy(w->held, p + n, w->held_len);
        r = JW_WIRE_HELD;
    }
    pthread_mutex_unlock(&w->mu);
    return r;
}

size_t jw_wire_held(jw_wire *w)
{
    size_t n;

    pthread_mutex_lock(&w->mu);
    n = w->held_len;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/*
 * The C library's send(), as every library in the process calls it. On a
 * registered socket (an lws write: a pong, a close, a ping) the held bytes
 * go first; while they cannot all go, the write is refused with EAGAIN,
 * which lws takes as "keep it and retry at POLLOUT". Elsewhere, sendto with
 * no address is what send is.
 */
ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    jw_wire *w = lookup(fd);
    ssize_t n;
    int err = 0, f, saved;

    if (!w)
        return sendto(fd, buf, len, flags, NULL, 0);
    pthread_mutex_lock(&w->mu);
    f = flush_held(w, &err);
    if (f <= 0) {
        pthread_mutex_unlock(&w->mu);
        errno = f < 0 ? err : EAGAIN;
        return -1;
    }
    n = sendto(fd, buf, len, flags, NULL, 0);
    saved = errno;
    if (n > 0)
        w->foreign_mid = (size_t)n < len;
    pthread_mutex_unlock(&w->mu);
    errno = saved;
    return n;
}
