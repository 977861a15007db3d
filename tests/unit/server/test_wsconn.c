/*
 * wsconn.c: a WebSocket connection's output queue, its bound, the ask-once
 * write request, the publish round's direct writes and the polite close,
 * against a fake socket that records what it was asked and given, and the
 * liveness pings on a timer heap run by hand. The
 * direct writes (a round's send() to the socket itself, alone or shared with
 * a jw_fanout pool) go to real sockets: the server's end of a socketpair is
 * what direct_fd answers, and the test reads the client's end and parses the
 * frames there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fanout.h"
#include "wire.h"
#include "jw_timers.h"
#include "jw_util.h"
#include "wsconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- a fake socket ------------------------------------------------------------------ */

typedef struct sock {
    int asks; /* ask_writable calls */
    int kills;
    int closes;
    int close_code;
    char close_reason[64];
    bool backed_up; /* what backed_up answers */
    bool backs_up;  /* becomes backed up after its next write */
    bool fail;      /* the next write fails */
    bool closing;   /* what closing answers: lws began a close of its own */
    char frames[8][70000];
    size_t nframes;
    int writes; /* write_frames calls */
    int order;  /* when it was last written, across sockets */
    /* direct_io only (sock_pair sets them) */
    int fd;             /* what direct_fd answers: the server's end of a socketpair, or -1 */
    int peer;           /* the client's end, which the test reads; -1 when closed */
    unsigned char *raw; /* the bytes write_frames was handed, as they came (malloc) */
    size_t raw_len;
    int raw_writes; /* write_frames calls */
    int pings;      /* ping calls */
    int ping_order; /* when it was last pinged, on the same clock as order */
} sock;

static int write_clock;

static sock *S(struct lws *wsi)
{
    return (sock *)(void *)wsi;
}

static struct lws *W(sock *s)
{
    return (struct lws *)(void *)s;
}

static void f_ask(struct lws *wsi)
{
    S(wsi)->asks++;
}

static int f_write(struct lws *wsi, unsigned char *p, size_t len)
{
    sock *s = S(wsi);

    if (s->fail)
        return -1;
    assert_true(s->nframes < 8);
    assert_true(len < sizeof(s->frames[0]));
    memcpy(s->frames[s->nframes], p, len);
    s->frames[s->nframes++][len] = '\0';
    s->order = ++write_clock;
    if (s->backs_up)
        s->backed_up = true;
    return 0;
}

/* Whole frames: each is recorded as one frame, after checking its header. */
static int f_write_frames(struct lws *wsi, unsigned char *p, size_t len)
{
    sock *s = S(wsi);
    size_t at = 0;

    if (s->fail)
        return -1;
    while (at < len) {
        size_t n, h = 2;

        assert_true(len - at >= 2);
        assert_int_equal(p[at], 0x81); /* FIN, text */
        n = p[at + 1];
        assert_true(n < 128); /* a server frame is not masked */
        if (n == 126) {
            n = (size_t)p[at + 2] << 8 | p[at + 3];
            h = 4;
        } else if (n == 127) {
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | p[at + 2 + i];
            h = 10;
        }
        assert_true(at + h + n <= len);
        assert_true(s->nframes < 8);
        assert_true(n < sizeof(s->frames[0]));
        memcpy(s->frames[s->nframes], p + at + h, n);
        s->frames[s->nframes++][n] = '\0';
        at += h + n;
    }
    s->writes++;
    s->order = ++write_clock;
    if (s->backs_up)
        s->backed_up = true;
    return 0;
}

static bool f_backed_up(struct lws *wsi)
{
    return S(wsi)->backed_up;
}

static void f_close(struct lws *wsi, int code, const char *reason)
{
    S(wsi)->closes++;
    S(wsi)->close_code = code;
    snprintf(S(wsi)->close_reason, sizeof(S(wsi)->close_reason), "%s", reason);
}

static void f_kill(struct lws *wsi)
{
    S(wsi)->kills++;
}

static bool f_closing(struct lws *wsi)
{
    return S(wsi)->closing;
}

static const jw_wsconn_io fake_io = {
    .ask_writable = f_ask,
    .write = f_write,
    .write_frames = f_write_frames,
    .backed_up = f_backed_up,
    .close = f_close,
    .kill = f_kill,
    .closing = f_closing,
};

static void set_up(jw_wsconns *set, bool gather, size_t max_queue)
{
    jw_wsconns_init(set, "test", gather, max_queue);
    set->io = &fake_io;
}

/*
 * The direct side of the fake: write_frames keeps the bytes it is handed as
 * they come (what a direct write's socket did not take starts anywhere in a
 * frame), direct_fd answers the sock's fd.
 */
static int d_write_frames(struct lws *wsi, unsigned char *p, size_t len)
{
    sock *s = S(wsi);

    if (s->fail)
        return -1;
    s->raw = realloc(s->raw, s->raw_len + len);
    assert_non_null(s->raw);
    memcpy(s->raw + s->raw_len, p, len);
    s->raw_len += len;
    s->raw_writes++;
    return 0;
}

static int d_fd(struct lws *wsi)
{
    return S(wsi)->fd;
}

static const jw_wsconn_io direct_io = {
    .ask_writable = f_ask,
    .write = f_write,
    .write_frames = d_write_frames,
    .backed_up = f_backed_up,
    .close = f_close,
    .kill = f_kill,
    .direct_fd = d_fd,
    .closing = f_closing,
};

static void set_up_direct(jw_wsconns *set, bool gather, size_t max_queue)
{
    jw_wsconns_init(set, "test", gather, max_queue);
    set->io = &direct_io;
}

/* s gets no socket: direct_fd answers -1, as for TLS. */
static void sock_none(sock *s)
{
    s->fd = s->peer = -1;
}

/* s gets a socketpair: fd the server's end (sndbuf > 0: its send buffer), peer the client's. */
static void sock_pair(sock *s, int sndbuf)
{
    int sv[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    s->fd = sv[0];
    s->peer = sv[1];
    if (sndbuf > 0)
        assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
}

static void sock_done(sock *s)
{
    if (s->fd >= 0)
        close(s->fd);
    if (s->peer >= 0)
        close(s->peer);
    s->fd = s->peer = -1;
    free(s->raw);
    s->raw = NULL;
    s->raw_len = 0;
}

/*
 * Everything the client's end can read now, into buf (cap: more than can
 * come). The round's sends are over and a socketpair's bytes are in the
 * peer's queue once send returns: all of it is there.
 */
static size_t drain(sock *s, unsigned char *buf, size_t cap)
{
    size_t got = 0;

    for (;;) {
        ssize_t r = recv(s->peer, buf + got, cap - got, MSG_DONTWAIT);

        if (r > 0) {
            got += (size_t)r;
            assert_true(got < cap);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        return got;
    }
}

/*
 * What the client's end reads while the server writes on at each WRITEABLE
 * its connection asks for (lws calls it once the socket drained), until c
 * asks for nothing more: what the gate held, then what is queued (malloc).
 */
static unsigned char *pump(sock *s, jw_wsconn *c, size_t *len)
{
    size_t cap = 4 << 20, got = 0;
    unsigned char *b = malloc(cap);

    assert_non_null(b);
    for (;;) {
        got += drain(s, b + got, cap - got);
        if (!c->want_write)
            break;
        assert_int_equal(jw_wsconn_on_writable(c), 0);
    }
    *len = got;
    return b;
}

/* What left for the client in all: what its socket took, then what lws was handed (malloc). */
static unsigned char *wire(sock *s, size_t *len, size_t *taken)
{
    size_t cap = s->raw_len + (1 << 20);
    unsigned char *b = malloc(cap);

    assert_non_null(b);
    *taken = drain(s, b, cap - s->raw_len);
    if (s->raw_len)
        memcpy(b + *taken, s->raw, s->raw_len);
    *len = *taken + s->raw_len;
    return b;
}

/*
 * p[len] is exactly the server frames want[0..n-1], nothing before, between
 * or after: each FIN + text, unmasked, its length in the shortest of the
 * 7-bit, 16-bit (126) and 64-bit (127) forms.
 */
static void expect_frames(const unsigned char *p, size_t len, const char *const *want, size_t n)
{
    size_t at = 0;

    for (size_t k = 0; k < n; k++) {
        size_t wl = strlen(want[k]), pl, h = 2;

        assert_true(len - at >= 2);
        assert_int_equal(p[at], 0x81);         /* FIN, text */
        assert_int_equal(p[at + 1] & 0x80, 0); /* a server frame is not masked */
        pl = p[at + 1];
        if (pl == 126) {
            assert_true(len - at >= 4);
            pl = (size_t)p[at + 2] << 8 | p[at + 3];
            h = 4;
            assert_true(pl >= 126);
        } else if (pl == 127) {
            assert_true(len - at >= 10);
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | p[at + 2 + i];
            h = 10;
            assert_true(pl > 0xffff);
        }
        assert_int_equal(pl, wl);
        assert_true(len - at - h >= pl);
        if (wl)
            assert_memory_equal(p + at + h, want[k], wl);
        at += h + pl;
    }
    assert_int_equal(at, len);
}

/* The client's end received exactly the frames want[0..n-1], all through the socket. */
static void expect_received(sock *s, const char *const *want, size_t n)
{
    size_t len, taken;
    unsigned char *b = wire(s, &len, &taken);

    assert_int_equal(s->raw_len, 0);
    expect_frames(b, len, want, n);
    free(b);
}

/* Nothing reached the client's end. */
static void expect_nothing_received(sock *s)
{
    unsigned char b[16];

    assert_int_equal(drain(s, b, sizeof(b)), 0);
}

/* A message of len bytes that says which it is: "<tag> <k>:" then a letter of k, repeated. */
static char *numbered(const char *tag, int k, size_t len)
{
    char *m = malloc(len + 1);
    int h;

    assert_non_null(m);
    memset(m, 'a' + k % 26, len);
    m[len] = '\0';
    h = snprintf(m, len + 1, "%s %d:", tag, k);
    assert_true(h > 0 && (size_t)h < len);
    m[h] = 'a' + k % 26; /* snprintf's NUL */
    return m;
}

/* want[0..n-1] joined by '\n': a gathered frame's payload (malloc). */
static char *joined(char *const *want, size_t n)
{
    size_t len = 0, at = 0;
    char *j;

    for (size_t k = 0; k < n; k++)
        len += strlen(want[k]) + 1;
    j = malloc(len + 1);
    assert_non_null(j);
    for (size_t k = 0; k < n; k++) {
        if (k)
            j[at++] = '\n';
        memcpy(j + at, want[k], strlen(want[k]));
        at += strlen(want[k]);
    }
    j[at] = '\0';
    return j;
}

/* Queues text as one message (tag, counted as given). */
static void put(jw_wsconn *c, const char *text, const void *tag, bool counted)
{
    jw_wsmsg *m = jw_wsmsg_new(text, strlen(text));

    jw_wsconn_push(c, NULL, m, tag, counted);
    jw_wsmsg_unref(m);
}

/* ---- tests -------------------------------------------------------------------------- */

/* Messages queued before the callback leave in one frame; lws is asked once. */
static void test_gathers_and_asks_once(void **state)
{
    jw_wsconns set;
    jw_wsconn c;
    sock s = {0};

    (void)state;
    set_up(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c, W(&s));
    assert_int_equal(set.stats.connections, 1);
    put(&c, "a", NULL, false);
    put(&c, "bb", NULL, true);
    put(&c, "ccc", NULL, true);
    assert_int_equal(s.asks, 1);
    assert_int_equal(c.qbytes, (1 + 1) + (2 + 1) + (3 + 1)); /* each with its separator */
    assert_int_equal(c.qcounted, 2);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.nframes, 1);
    assert_string_equal(s.frames[0], "a\nbb\nccc");
    assert_int_equal(c.qbytes, 0);
    assert_int_equal(c.qcounted, 0);
    assert_null(c.qhead);
    assert_int_equal(set.stats.counted, 2);
    assert_int_equal(set.stats.frames, 1);
    assert_int_equal(set.stats.bytes, 8);
    assert_int_equal(s.asks, 1); /* nothing left: no new request */
    /* A later message asks again, once. */
    put(&c, "d", NULL, false);
    put(&c, "e", NULL, false);
    assert_int_equal(s.asks, 2);
    jw_wsconn_closed(&c);
    assert_int_equal(set.stats.connections, 0);
    assert_null(jw_wsconn_find(&set, c.key));
    jw_wsconns_release(&set);
}

/* A gathered frame stops at JW_WSCONN_FRAME bytes; one larger message leaves alone. */
static void test_frame_limit(void **state)
{
    jw_wsconns set;
    jw_wsconn c;
    sock *s = calloc(1, sizeof(*s));
    char *big = malloc(JW_WSCONN_FRAME + 10), *part = malloc(40001);

    (void)state;
    memset(big, 'x', JW_WSCONN_FRAME + 9);
    big[JW_WSCONN_FRAME + 9] = '\0';
    memset(part, 'y', 40000);
    part[40000] = '\0';
    set_up(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c, W(s));
    put(&c, part, NULL, false);
    put(&c, part, NULL, false); /* 80,001 bytes together: over one frame */
    put(&c, big, NULL, false);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s->nframes, 1);
    assert_int_equal(strlen(s->frames[0]), 40000);
    assert_int_equal(s->asks, 2); /* asked again for the rest */
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(strlen(s->frames[1]), 40000);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(strlen(s->frames[2]), JW_WSCONN_FRAME + 9);
    assert_null(c.qhead);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    free(big);
    free(part);
    free(s);
}

/*
 * One message per frame: a callback writes them as whole frames, as many as
 * fit in JW_WSCONN_FRAME bytes in one write, and more writes while the socket
 * takes them.
 */
static void test_one_per_frame(void **state)
{
    static char big[40001];
    jw_wsconns set;
    jw_wsconn c;
    sock s = {0};

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    set_up(&set, false, 1 << 20);
    jw_wsconn_open(&set, &c, W(&s));
    put(&c, "one", NULL, true);
    put(&c, "two", NULL, true);
    put(&c, "three", NULL, false);
    assert_int_equal(c.qbytes, 3 + 3 + 5); /* no separators */
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.writes, 1); /* three frames, one write */
    assert_int_equal(s.nframes, 3);
    assert_string_equal(s.frames[0], "one");
    assert_string_equal(s.frames[1], "two");
    assert_string_equal(s.frames[2], "three");
    assert_int_equal(set.stats.frames, 3);
    assert_int_equal(set.stats.counted, 2);
    assert_int_equal(set.stats.bytes, 11);
    /* Two 40 kB messages pass 64 KiB together: two writes (with 2- and 8-byte lengths). */
    put(&c, big, NULL, false);
    put(&c, "four", NULL, false);
    put(&c, big, NULL, false);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.writes, 3);
    assert_int_equal(s.nframes, 6);
    assert_int_equal(strlen(s.frames[3]), 40000);
    assert_string_equal(s.frames[4], "four");
    assert_int_equal(strlen(s.frames[5]), 40000);
    assert_null(c.qhead);
    /* Once lws holds bytes back, the rest waits for the next callback. */
    put(&c, big, NULL, false);
    put(&c, "five", NULL, false);
    put(&c, big, NULL, false);
    s.backs_up = true;
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.writes, 4);
    assert_int_equal(s.nframes, 8);
    assert_string_equal(s.frames[7], "five");
    assert_non_null(c.qhead);
    assert_int_equal(s.asks, 4); /* once per batch put, and once for what waits */
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
}

static int shed_calls;

/* The endpoint's shed hook: drops counted messages, as the Supabase endpoint does. */
static void shed_counted(jw_wsconn *c)
{
    shed_calls++;
    jw_wsconn_drop_counted(c);
}

/* The bound: what fits, what the shed hook frees, and a client whose replies alone pass it. */
static void test_bound_and_slow_close(void **state)
{
    jw_wsconns set;
    jw_wsconn c;
    sock s = {0};

    (void)state;
    shed_calls = 0;
    set_up(&set, true, 20);
    set.shed = shed_counted;
    jw_wsconn_open(&set, &c, W(&s));
    put(&c, "1234567", NULL, true);      /* 8 */
    put(&c, "reply", NULL, false);       /* 14 */
    assert_true(jw_wsconn_fits(&c, 5));  /* 14 + 6 = 20 */
    assert_false(jw_wsconn_fits(&c, 6)); /* 21 */
    /* Room for 9 more: the counted message goes, the reply stays. */
    assert_true(jw_wsconn_make_room(&c, 9));
    assert_int_equal(shed_calls, 1);
    assert_int_equal(c.qbytes, 6);
    assert_int_equal(c.qcounted, 0);
    assert_false(c.closing);
    /* Replies alone over the bound: the queue goes and the connection closes with 4008. */
    assert_false(jw_wsconn_make_room(&c, 15));
    assert_true(c.closing);
    assert_null(c.qhead);
    assert_int_equal(c.qbytes, 0);
    assert_int_equal(set.stats.slow_closes, 1);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.nframes, 0);
    assert_int_equal(s.closes, 1);
    assert_int_equal(s.close_code, 4008);
    assert_string_equal(s.close_reason, "slow consumer");
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
}

/* Dropping by tag or by kind keeps the others in order, and the tail right. */
static void test_drop_keeps_order(void **state)
{
    jw_wsconns set;
    jw_wsconn c;
    sock s = {0};
    int job1, job2;

    (void)state;
    set_up(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c, W(&s));
    put(&c, "A", &job1, true);
    put(&c, "B", &job2, true);
    put(&c, "C", &job1, false);
    put(&c, "r", NULL, false);
    put(&c, "D", &job1, true);
    assert_int_equal(jw_wsconn_drop_tag(&c, &job1), 3);
    assert_int_equal(c.qcounted, 1);
    assert_int_equal(c.qbytes, 4);
    put(&c, "E", &job2, true); /* after the new tail */
    assert_int_equal(jw_wsconn_drop_counted(&c), 2);
    put(&c, "F", NULL, false);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_string_equal(s.frames[0], "r\nF");
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
}

/* A shared message stays alive until every queue holding it has let go. */
static void test_shared_message(void **state)
{
    jw_wsconns set;
    jw_wsconn a, b;
    sock sa = {0}, sb = {0};
    jw_wsmsg *m = jw_wsmsg_new("shared", 6), *head = jw_wsmsg_new("head:", 5);

    (void)state;
    set_up(&set, true, 1 << 20);
    jw_wsconn_open(&set, &a, W(&sa));
    jw_wsconn_open(&set, &b, W(&sb));
    assert_string_not_equal(a.key, b.key);
    assert_ptr_equal(jw_wsconn_find(&set, b.key), &b);
    jw_wsconn_push(&a, head, m, NULL, true);
    jw_wsconn_push(&b, NULL, m, NULL, true);
    assert_int_equal(m->refs, 3);
    assert_int_equal(a.qbytes, 12);
    assert_int_equal(jw_wsconn_on_writable(&a), 0);
    assert_string_equal(sa.frames[0], "head:shared");
    assert_int_equal(m->refs, 2);
    assert_int_equal(head->refs, 1);
    jw_wsconn_closed(&b); /* its queue is dropped */
    assert_int_equal(m->refs, 1);
    jw_wsmsg_unref(m);
    jw_wsmsg_unref(head);
    jw_wsconn_closed(&a);
    jw_wsconns_release(&set);
}

/*
 * A publish round: nothing is asked of lws while held; the flush writes each
 * connection once, in the order they were first given something, except one
 * lws still holds bytes for (asked instead) and one already waiting for its
 * callback.
 */
static void test_hold_and_flush(void **state)
{
    jw_wsconns set;
    jw_wsconn c1, c2, c3, c4;
    sock s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0};

    (void)state;
    write_clock = 0;
    set_up(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c1, W(&s1));
    jw_wsconn_open(&set, &c2, W(&s2));
    jw_wsconn_open(&set, &c3, W(&s3));
    jw_wsconn_open(&set, &c4, W(&s4));
    put(&c4, "early", NULL, false); /* asked before the round: its callback will write */
    assert_int_equal(s4.asks, 1);
    jw_wsconns_hold(&set);
    jw_wsconns_hold(&set); /* nested */
    put(&c2, "x", NULL, true);
    put(&c1, "y", NULL, true);
    put(&c2, "z", NULL, true);
    put(&c4, "late", NULL, true);
    s3.backed_up = true;
    put(&c3, "w", NULL, true);
    assert_int_equal(s1.asks + s2.asks + s3.asks, 0);
    jw_wsconns_flush(&set); /* the inner one: still held */
    assert_int_equal(s1.nframes + s2.nframes, 0);
    jw_wsconns_flush(&set);
    assert_int_equal(s2.nframes, 1);
    assert_string_equal(s2.frames[0], "x\nz");
    assert_int_equal(s1.nframes, 1);
    assert_true(s2.order < s1.order); /* c2 was given something first */
    assert_int_equal(s1.asks + s2.asks, 0);
    assert_int_equal(s3.nframes, 0);
    assert_int_equal(s3.asks, 1);
    assert_int_equal(s4.nframes, 0); /* its pending callback writes it, in order */
    assert_int_equal(jw_wsconn_on_writable(&c4), 0);
    assert_string_equal(s4.frames[0], "early\nlate");
    for (jw_wsconn *c = set.dirty_head; c; c = c->dnext)
        fail_msg("the dirty list is not empty after the flush");
    jw_wsconn_closed(&c1);
    jw_wsconn_closed(&c2);
    jw_wsconn_closed(&c3);
    jw_wsconn_closed(&c4);
    jw_wsconns_release(&set);
}

/* A direct write that fails drops the connection; one closed while dirty is not written. */
static void test_flush_failure_and_closed(void **state)
{
    jw_wsconns set;
    jw_wsconn c1, c2;
    sock s1 = {0}, s2 = {0};

    (void)state;
    set_up(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c1, W(&s1));
    jw_wsconn_open(&set, &c2, W(&s2));
    jw_wsconns_hold(&set);
    put(&c1, "a", NULL, false);
    put(&c2, "b", NULL, false);
    s1.fail = true;
    jw_wsconn_closed(&c2);
    jw_wsconns_flush(&set);
    assert_int_equal(s1.kills, 1);
    assert_int_equal(s2.nframes, 0);
    assert_int_equal(s2.kills, 0);
    assert_int_equal(set.stats.connections, 1);
    /* Killed (lws closes it later): nothing more is written to it, nor asked for. */
    s1.fail = false;
    s1.asks = 0;
    jw_wsconns_hold(&set);
    put(&c1, "c", NULL, false);
    jw_wsconns_flush(&set);
    assert_int_equal(jw_wsconn_on_writable(&c1), 0);
    assert_int_equal(s1.nframes, 0);
    assert_int_equal(s1.kills, 1);
    assert_int_equal(s1.asks, 0);
    jw_wsconn_closed(&c1);
    jw_wsconns_release(&set);
}

/* A close lets what is queued leave first; the first code wins; close_all reaches all. */
static void test_polite_close(void **state)
{
    jw_wsconns set;
    jw_wsconn c1, c2;
    sock s1 = {0}, s2 = {0};

    (void)state;
    set_up(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c1, W(&s1));
    jw_wsconn_open(&set, &c2, W(&s2));
    put(&c1, "last words", NULL, false);
    jw_wsconn_close(&c1, 4401, "unauthorized");
    jw_wsconn_close(&c1, 1001, "later");
    assert_int_equal(s1.asks, 1);
    assert_int_equal(jw_wsconn_on_writable(&c1), 0);
    assert_string_equal(s1.frames[0], "last words");
    assert_int_equal(s1.closes, 0);
    assert_int_equal(s1.asks, 2); /* asked again for the close */
    assert_int_equal(jw_wsconn_on_writable(&c1), 0);
    assert_int_equal(s1.closes, 1);
    assert_int_equal(s1.close_code, 4401);
    assert_string_equal(s1.close_reason, "unauthorized");
    assert_int_equal(jw_wsconn_on_writable(&c1), 0);
    assert_int_equal(s1.closes, 1); /* once */
    assert_int_equal(jw_wsconns_close_all(&set, 1001, "server shutting down"), 2);
    assert_int_equal(jw_wsconn_on_writable(&c2), 0);
    assert_int_equal(s2.close_code, 1001);
    assert_string_equal(s2.close_reason, "server shutting down");
    jw_wsconn_closed(&c1);
    jw_wsconn_closed(&c2);
    jw_wsconns_release(&set);
}

/* ---- liveness ---------------------------------------------------------------------- */

static int f_ping(struct lws *wsi)
{
    sock *s = S(wsi);

    if (s->fail)
        return -1;
    s->pings++;
    s->ping_order = ++write_clock;
    return 0;
}

static void no_wake(void *arg, int64_t at_us)
{
    (void)arg;
    (void)at_us;
}

#define PING_US (30 * 1000000LL)

/* Liveness' clock, moved by hand; the heap is run at it. */
static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

static void advance_to(jw_timers *q, int64_t t)
{
    fake_now = t;
    jw_timers_run(q, t);
}

static bool input_waits; /* what has_input answers */

static bool f_has_input(struct lws *wsi)
{
    (void)wsi;
    return input_waits;
}

static const jw_wsconn_io live_io = {
    .ask_writable = f_ask,
    .write = f_write,
    .write_frames = f_write_frames,
    .backed_up = f_backed_up,
    .close = f_close,
    .kill = f_kill,
    .closing = f_closing,
    .ping = f_ping,
    .has_input = f_has_input,
};

static jw_timers *live_set_up(jw_wsconns *set)
{
    jw_timers *q = jw_timers_new(no_wake, NULL);

    set_up(set, true, 1 << 20);
    set->io = &live_io;
    set->clock = fake_clock;
    fake_now = 1000000000;
    input_waits = false;
    jw_wsconns_set_liveness(set, q, PING_US);
    return q;
}

/*
 * Silent for the interval: pinged at the next WRITEABLE; a pong after the
 * ping puts the next check off by the interval from that pong; silent again:
 * pinged again, and silent for the interval after that ping: dropped.
 */
static void test_liveness_ping_and_drop(void **state)
{
    jw_wsconns set;
    jw_timers *q = live_set_up(&set);
    jw_wsconn c;
    sock s = {0};
    int64_t t0 = fake_now;

    (void)state;
    jw_wsconn_open(&set, &c, W(&s));
    assert_int_equal(c.heard_us, t0);
    assert_int_equal(jw_timers_count(q), 1);

    advance_to(q, t0 + PING_US - 1);
    assert_int_equal(s.asks, 0); /* not yet */
    advance_to(q, t0 + PING_US);
    assert_int_equal(s.asks, 1);
    assert_int_equal(s.pings, 0); /* a ping waits for WRITEABLE */
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.pings, 1);
    assert_int_equal(set.stats.pings, 1);
    assert_int_equal(s.asks, 1); /* nothing else to write */

    /* The pong comes 5 s later: no drop at ping + interval. */
    fake_now = t0 + PING_US + 5000000;
    jw_wsconn_heard(&c);
    advance_to(q, t0 + 2 * PING_US);
    assert_int_equal(s.kills, 0);
    assert_int_equal(s.asks, 1);
    /* Silent for the interval from that pong: pinged again. */
    advance_to(q, t0 + 2 * PING_US + 5000000);
    assert_int_equal(s.asks, 2);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.pings, 2);
    /* Nothing comes: dropped one interval after the ping, not before. */
    advance_to(q, t0 + 3 * PING_US + 5000000 - 1);
    assert_int_equal(s.kills, 0);
    advance_to(q, t0 + 3 * PING_US + 5000000);
    assert_int_equal(s.kills, 1);
    assert_int_equal(set.stats.idle_drops, 1);
    assert_true(c.ended);
    assert_int_equal(jw_timers_count(q), 0);
    /* Nothing more is written to it, nor is it pinged. */
    put(&c, "late", NULL, false);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.nframes, 0);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    jw_timers_free(q);
}

/*
 * A run long after the deadline (a loop that fell behind) pings and gives
 * the client the whole interval from then: it does not drop a connection
 * it never pinged. Bytes waiting unread in the socket count as heard.
 */
static void test_liveness_late_run(void **state)
{
    jw_wsconns set;
    jw_timers *q = live_set_up(&set);
    jw_wsconn c;
    sock s = {0};
    int64_t t0 = fake_now, late = t0 + 5 * PING_US;

    (void)state;
    jw_wsconn_open(&set, &c, W(&s));
    advance_to(q, late);
    assert_int_equal(s.kills, 0);
    assert_int_equal(s.asks, 1);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.pings, 1);
    advance_to(q, late + PING_US - 1);
    assert_int_equal(s.kills, 0);
    /* The answer is in the socket, unread, when the drop is due: kept, checked again later. */
    input_waits = true;
    advance_to(q, late + PING_US);
    assert_int_equal(s.kills, 0);
    assert_int_equal(c.heard_us, late + PING_US);
    assert_int_equal(c.pinged_us, 0);
    input_waits = false;
    advance_to(q, late + 2 * PING_US); /* silent since: pinged, not dropped */
    assert_int_equal(s.kills, 0);
    assert_int_equal(s.asks, 2);
    /* The ping goes late (the socket was full): the interval counts from when it went. */
    advance_to(q, late + 3 * PING_US);
    assert_int_equal(s.kills, 0);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.pings, 2);
    advance_to(q, late + 4 * PING_US - 1);
    assert_int_equal(s.kills, 0);
    advance_to(q, late + 4 * PING_US);
    assert_int_equal(s.kills, 1);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    jw_timers_free(q);
}

/*
 * A ping the socket never takes: dropped two intervals after it was due. A
 * message before it goes makes it moot: nothing is written, and the next
 * check asks for a fresh one, judged from its own time.
 */
static void test_liveness_ping_never_written(void **state)
{
    jw_wsconns set;
    jw_timers *q = live_set_up(&set);
    jw_wsconn c;
    sock s = {0};
    int64_t t0 = fake_now;

    (void)state;
    assert_ptr_equal(set.clock, fake_clock);
    jw_wsconn_open(&set, &c, W(&s));
    advance_to(q, t0 + PING_US);
    assert_int_equal(s.asks, 1);
    advance_to(q, t0 + 3 * PING_US - 1);
    assert_int_equal(s.kills, 0);
    advance_to(q, t0 + 3 * PING_US);
    assert_int_equal(s.kills, 1);
    assert_int_equal(s.pings, 0);
    assert_int_equal(set.stats.idle_drops, 1);
    jw_wsconn_closed(&c);

    /* Pinged and answered; then a ping asked for, a message before it goes. */
    memset(&s, 0, sizeof(s));
    t0 = fake_now;
    jw_wsconn_open(&set, &c, W(&s));
    advance_to(q, t0 + PING_US);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.pings, 1);
    fake_now = t0 + PING_US + 1000;
    jw_wsconn_heard(&c);
    advance_to(q, t0 + 2 * PING_US + 1000); /* silent again: a second ping asked for */
    assert_int_equal(s.asks, 2);
    fake_now = t0 + 2 * PING_US + 2000;
    jw_wsconn_heard(&c); /* before it went */
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.pings, 1); /* moot: not written */
    /* The next check (when the moot ping would have been given up) finds the client
     * silent since: a fresh ping, and no drop judged by the first ping's time. */
    advance_to(q, t0 + 4 * PING_US + 1000);
    assert_int_equal(s.kills, 0);
    assert_int_equal(s.asks, 3);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.pings, 2);
    advance_to(q, t0 + 5 * PING_US + 1000 - 1);
    assert_int_equal(s.kills, 0);
    advance_to(q, t0 + 5 * PING_US + 1000);
    assert_int_equal(s.kills, 1);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    jw_timers_free(q);
}

/*
 * A client that keeps talking is never pinged; a ping owed goes before what
 * is queued, also when it fell due inside a publish round (the round leaves
 * the connection to the callback); closing a connection takes its timer out
 * of the heap; a set without liveness, or an io without ping, arms nothing.
 */
static void test_liveness_quiet_when_heard(void **state)
{
    jw_wsconns set, off;
    jw_timers *q = live_set_up(&set);
    jw_wsconn c, d;
    sock s = {0}, s2 = {0};
    int64_t t0 = fake_now, t;

    (void)state;
    jw_wsconn_open(&set, &c, W(&s));
    for (t = t0; t < t0 + 10 * PING_US; t += PING_US / 3) {
        fake_now = t;
        jw_wsconn_heard(&c);
        advance_to(q, t);
    }
    assert_int_equal(s.pings, 0);
    assert_int_equal(s.asks, 0);
    assert_int_equal(jw_timers_count(q), 1);

    /* Silent from t - PING_US / 3 on: due inside a round, with a message queued in it. */
    jw_wsconns_hold(&set);
    advance_to(q, t + PING_US);
    put(&c, "queued", NULL, false);
    jw_wsconns_flush(&set);
    assert_int_equal(s.nframes, 0); /* not written by the round */
    assert_int_equal(s.asks, 1);    /* left to the callback */
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(s.pings, 1);
    assert_int_equal(s.nframes, 1);
    assert_string_equal(s.frames[0], "queued");
    assert_true(s.ping_order < s.order);
    jw_wsconn_closed(&c);
    assert_int_equal(jw_timers_count(q), 0);
    jw_wsconns_release(&set);

    /* Liveness off: no timer. An io without ping: none either. The default clock is
     * the monotonic one. */
    set_up(&off, true, 1 << 20);
    assert_ptr_equal(off.clock, jw_mono_us);
    off.io = &live_io;
    jw_wsconn_open(&off, &d, W(&s2));
    assert_int_equal(jw_timers_count(q), 0);
    jw_wsconn_closed(&d);
    jw_wsconns_release(&off);
    set_up(&off, true, 1 << 20); /* fake_io: no ping */
    jw_wsconns_set_liveness(&off, q, PING_US);
    jw_wsconn_open(&off, &d, W(&s2));
    assert_int_equal(jw_timers_count(q), 0);
    jw_wsconn_closed(&d);
    jw_wsconns_release(&off);
    jw_timers_free(q);
}

/* A ping that fails drops the connection (WRITEABLE answers -1). */
static void test_liveness_ping_fails(void **state)
{
    jw_wsconns set;
    jw_timers *q = live_set_up(&set);
    jw_wsconn c;
    sock s = {0};

    (void)state;
    jw_wsconn_open(&set, &c, W(&s));
    advance_to(q, c.heard_us + PING_US);
    s.fail = true;
    assert_int_equal(jw_wsconn_on_writable(&c), -1);
    assert_int_equal(set.stats.pings, 0);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    jw_timers_free(q);
}

static int owed, paid;

static bool owes_hook(const jw_wsconn *c)
{
    (void)c;
    return owed > 0;
}

static void pay_hook(jw_wsconn *c)
{
    paid++;
    owed--;
    put(c, "snapshot", NULL, false);
}

/* What is owed is built only once the queue is empty, and not while closing. */
static void test_owed_after_queue(void **state)
{
    jw_wsconns set;
    jw_wsconn c;
    sock s = {0};

    (void)state;
    owed = paid = 0;
    set_up(&set, true, 1 << 20);
    set.owes = owes_hook;
    set.pay = pay_hook;
    jw_wsconn_open(&set, &c, W(&s));
    put(&c, "queued", NULL, true);
    owed = 1;
    jw_wsconn_want_write(&c);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(paid, 0);
    assert_string_equal(s.frames[0], "queued");
    assert_int_equal(s.asks, 2); /* still owed: asked again */
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(paid, 1);
    assert_string_equal(s.frames[1], "snapshot");
    owed = 1;
    jw_wsconn_close(&c, 1000, "bye");
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(paid, 1);
    assert_int_equal(s.closes, 1);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
}

/* ---- a publish round's direct writes (real sockets) -------------------------------- */

/*
 * Gathered: three messages given in a round leave as ONE frame "a\nbb\nccc"
 * that the round sends to the socket itself (header built by wsconn, 7-bit
 * length): lws' write and write_frames are not called, nothing is asked, the
 * queue is empty and counted. A second round writes directly again.
 */
static void test_direct_gathered(void **state)
{
    static const char *const first[] = {"a\nbb\nccc"}, *const second[] = {"d"};
    jw_wsconns set;
    jw_wsconn c;
    sock *s = calloc(1, sizeof(*s));

    (void)state;
    sock_pair(s, 0);
    set_up_direct(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c, W(s));
    jw_wsconns_hold(&set);
    put(&c, "a", NULL, false);
    put(&c, "bb", NULL, true);
    put(&c, "ccc", NULL, true);
    jw_wsconns_flush(&set);
    expect_received(s, first, 1);
    assert_int_equal(s->nframes, 0);    /* io->write */
    assert_int_equal(s->raw_writes, 0); /* io->write_frames */
    assert_int_equal(s->asks, 0);
    assert_int_equal(s->kills, 0);
    assert_false(c.want_write);
    assert_null(c.qhead);
    assert_int_equal(c.qbytes, 0);
    assert_int_equal(c.qcounted, 0);
    assert_int_equal(set.stats.direct_writes, 1);
    assert_int_equal(set.stats.parallel_rounds, 0);
    assert_int_equal(set.stats.frames, 1);
    assert_int_equal(set.stats.bytes, 8);
    assert_int_equal(set.stats.counted, 2);
    jw_wsconns_hold(&set);
    put(&c, "d", NULL, false);
    jw_wsconns_flush(&set);
    expect_received(s, second, 1);
    assert_int_equal(set.stats.direct_writes, 2);
    assert_int_equal(s->asks, 0);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    sock_done(s);
    free(s);
}

/*
 * One message per frame: three messages leave as three whole frames in the
 * bytes of one direct write, the third long enough for the 16-bit length.
 */
static void test_direct_frames(void **state)
{
    char *big = numbered("big", 3, 300);
    const char *const want[] = {"one", "two", big};
    jw_wsconns set;
    jw_wsconn c;
    sock *s = calloc(1, sizeof(*s));

    (void)state;
    sock_pair(s, 0);
    set_up_direct(&set, false, 1 << 20);
    jw_wsconn_open(&set, &c, W(s));
    jw_wsconns_hold(&set);
    put(&c, "one", NULL, true);
    put(&c, "two", NULL, true);
    put(&c, big, NULL, false);
    jw_wsconns_flush(&set);
    expect_received(s, want, 3);
    assert_int_equal(s->raw_writes + s->writes + (int)s->nframes, 0);
    assert_int_equal(s->asks, 0);
    assert_null(c.qhead);
    assert_int_equal(c.qbytes, 0);
    assert_int_equal(set.stats.direct_writes, 1);
    assert_int_equal(set.stats.frames, 3);
    assert_int_equal(set.stats.counted, 2);
    assert_int_equal(set.stats.bytes, 3 + 3 + 300);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    sock_done(s);
    free(s);
    free(big);
}

/*
 * A message over JW_WSCONN_FRAME leaves alone in one gathered frame with the
 * 64-bit length; what did not fit in the frame stays queued and asks for the
 * WRITEABLE callback, which writes it through the gate too, after what the
 * gate may hold of the big frame: never through lws.
 */
static void test_direct_big_message(void **state)
{
    char *big = numbered("big", 1, JW_WSCONN_FRAME + 4464);
    const char *const want[] = {big, "tail"};
    size_t len;
    unsigned char *b;
    jw_wsconns set;
    jw_wsconn c;
    sock *s = calloc(1, sizeof(*s));

    (void)state;
    sock_pair(s, 0);
    set_up_direct(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c, W(s));
    jw_wsconns_hold(&set);
    put(&c, big, NULL, false);
    put(&c, "tail", NULL, false);
    jw_wsconns_flush(&set);
    assert_int_equal(set.stats.direct_writes, 1);
    assert_non_null(c.qhead);
    assert_int_equal(c.qbytes, 4 + 1);
    assert_int_equal(s->asks, 1); /* the rest waits for the callback */
    assert_true(c.want_write);
    /* The socket may not take 70 kB at once: the gate holds the rest, the wire is the same. */
    b = pump(s, &c, &len);
    expect_frames(b, len, want, 2);
    free(b);
    assert_int_equal(s->nframes + s->raw_writes, 0);
    assert_int_equal(set.stats.direct_writes, 2);
    assert_null(c.qhead);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    sock_done(s);
    free(s);
    free(big);
}

/*
 * A socket that takes only part of a round's ~60 kB (a small send buffer,
 * nobody reading): the gate holds the rest, counted in the budget, and the
 * connection waits for WRITEABLE; the bytes the client reads, the rest sent
 * at those callbacks, are exactly the frames the round built, no byte lost,
 * repeated or reordered; lws is handed nothing; nothing is killed. Gathered
 * (one frame, 16-bit length) and one per frame (the rest starts inside a
 * frame).
 */
static void partial_round(bool gather)
{
    enum { NMSG = 60, MLEN = 1000 };
    char *msgs[NMSG], *one = NULL;
    size_t len;
    unsigned char *b;
    jw_wsconns set;
    jw_wsmem mem;
    jw_wsconn c;
    sock *s = calloc(1, sizeof(*s));

    sock_pair(s, 4096);
    set_up_direct(&set, gather, 1 << 20);
    jw_wsmem_init(&mem, 1 << 30, NULL);
    jw_wsconns_set_mem(&set, &mem);
    jw_wsconn_open(&set, &c, W(s));
    jw_wsconns_hold(&set);
    for (int k = 0; k < NMSG; k++) {
        msgs[k] = numbered("msg", k, MLEN);
        put(&c, msgs[k], NULL, true);
    }
    jw_wsconns_flush(&set);
    assert_int_equal(s->kills, 0);
    assert_int_equal(set.stats.direct_writes, 1);
    assert_true(c.lws_held > 0);  /* the gate holds what the socket refused */
    assert_int_equal(s->asks, 1); /* to learn when the socket drained */
    assert_null(c.qhead);
    assert_int_equal(c.qbytes, 0);
    assert_int_equal(c.qcounted, 0);
    /* The budget: the queue is gone, what the gate holds is counted until it went. */
    assert_int_equal(mem.used, c.lws_held);
    b = pump(s, &c, &len);
    assert_int_equal(s->raw_writes, 0);
    if (gather) {
        one = joined(msgs, NMSG);
        expect_frames(b, len, (const char *const *)&one, 1);
    } else {
        expect_frames(b, len, (const char *const *)msgs, NMSG);
    }
    assert_int_equal(set.stats.frames, gather ? 1 : NMSG);
    assert_int_equal(set.stats.counted, NMSG);
    assert_int_equal(set.stats.bytes, NMSG * MLEN + (gather ? NMSG - 1 : 0));
    assert_int_equal(set.stats.direct_writes, 1); /* the rest is not another write */
    assert_int_equal(c.lws_held, 0);
    assert_int_equal(mem.used, 0);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    jw_wsmem_release(&mem);
    sock_done(s);
    free(s);
    free(b);
    free(one);
    for (int k = 0; k < NMSG; k++)
        free(msgs[k]);
}

static void test_direct_partial_gathered(void **state)
{
    (void)state;
    partial_round(true);
}

static void test_direct_partial_frames(void **state)
{
    (void)state;
    partial_round(false);
}

/*
 * A send that fails for good (the client's end is closed: EPIPE, and
 * MSG_NOSIGNAL keeps SIGPIPE from ending the process) kills the connection
 * once and hands nothing to lws; it counts neither as a direct write nor as
 * sent, and no later round writes to it (part of a frame may have gone). A
 * socket whose client goes after it took part of a write: the held rest
 * fails at the next WRITEABLE, which tells lws to drop the connection.
 */
static void test_direct_failures(void **state)
{
    enum { NMSG = 40, MLEN = 1000 };
    char *msgs[NMSG];
    jw_wsconns set;
    jw_wsconn c1, c2;
    sock *s = calloc(2, sizeof(*s));

    (void)state;
    sock_pair(&s[0], 0);
    close(s[0].peer);
    s[0].peer = -1;
    sock_pair(&s[1], 4096); /* takes part of 40 kB */
    set_up_direct(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c1, W(&s[0]));
    jw_wsconn_open(&set, &c2, W(&s[1]));
    jw_wsconns_hold(&set);
    put(&c1, "a", NULL, true);
    put(&c1, "b", NULL, true);
    for (int k = 0; k < NMSG; k++) {
        msgs[k] = numbered("msg", k, MLEN);
        put(&c2, msgs[k], NULL, true);
    }
    jw_wsconns_flush(&set);
    assert_int_equal(s[0].kills, 1);
    assert_int_equal(s[0].raw_writes + (int)s[0].nframes + s[0].asks, 0);
    assert_int_equal(set.stats.direct_writes, 1); /* c2's */
    assert_int_equal(set.stats.counted, NMSG);
    assert_int_equal(s[1].kills, 0);
    assert_true(c2.lws_held > 0);
    assert_int_equal(s[1].asks, 1);
    close(s[1].peer);
    s[1].peer = -1;
    assert_int_equal(jw_wsconn_on_writable(&c2), -1);
    jw_wsconns_hold(&set);
    put(&c1, "c", NULL, true);
    jw_wsconns_flush(&set);
    assert_int_equal(s[0].kills, 1);
    assert_int_equal(s[0].raw_writes + (int)s[0].nframes + s[0].asks, 0);
    assert_int_equal(s[1].raw_writes + (int)s[1].nframes, 0);
    assert_int_equal(set.stats.direct_writes, 1);
    jw_wsconn_closed(&c1);
    jw_wsconn_closed(&c2);
    jw_wsconns_release(&set);
    sock_done(&s[0]);
    sock_done(&s[1]);
    free(s);
    for (int k = 0; k < NMSG; k++)
        free(msgs[k]);
}

/*
 * A round writes what is queued; what is owed (a resync snapshot) is built
 * only after that went, in the WRITEABLE callback the round asked for, and
 * written there through the gate.
 */
static void test_direct_owed(void **state)
{
    static const char *const queued[] = {"queued"}, *const snapshot[] = {"snapshot"};
    jw_wsconns set;
    jw_wsconn c;
    sock *s = calloc(1, sizeof(*s));

    (void)state;
    owed = paid = 0;
    sock_pair(s, 0);
    set_up_direct(&set, true, 1 << 20);
    set.owes = owes_hook;
    set.pay = pay_hook;
    jw_wsconn_open(&set, &c, W(s));
    jw_wsconns_hold(&set);
    put(&c, "queued", NULL, true);
    owed = 1;
    jw_wsconns_flush(&set);
    expect_received(s, queued, 1);
    assert_int_equal(paid, 0);
    assert_int_equal(s->asks, 1); /* still owed */
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(paid, 1);
    expect_received(s, snapshot, 1);
    assert_int_equal(s->nframes, 0);
    assert_int_equal(set.stats.direct_writes, 2);
    assert_int_equal(s->kills, 0);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    sock_done(s);
    free(s);
}

/*
 * Once the client sent its close frame (lws answers it), or lws began a close
 * of its own (a protocol error), nothing more goes to it: not in a round, not
 * in a WRITEABLE callback; it is not killed.
 */
static void peer_or_lws_closed(bool by_peer)
{
    static const char *const first[] = {"a"};
    unsigned char buf[256];
    jw_wsconns set;
    jw_wsconn c;
    sock *s = calloc(1, sizeof(*s));

    sock_pair(s, 0);
    set_up_direct(&set, true, 1 << 20);
    jw_wsconn_open(&set, &c, W(s));
    jw_wsconns_hold(&set);
    put(&c, "a", NULL, false);
    jw_wsconns_flush(&set);
    expect_received(s, first, 1);
    if (by_peer)
        jw_wsconn_peer_closed(&c);
    else
        s->closing = true;
    jw_wsconns_hold(&set);
    put(&c, "b", NULL, false);
    jw_wsconns_flush(&set);
    assert_int_equal(jw_wsconn_on_writable(&c), 0);
    assert_int_equal(drain(s, buf, sizeof(buf)), 0);
    assert_int_equal(s->raw_writes + (int)s->nframes, 0);
    assert_int_equal(s->asks + s->kills, 0);
    assert_int_equal(set.stats.direct_writes, 1);
    jw_wsconn_closed(&c);
    jw_wsconns_release(&set);
    sock_done(s);
    free(s);
}

static void test_direct_peer_closed(void **state)
{
    (void)state;
    peer_or_lws_closed(true);
}

static void test_direct_lws_closing(void **state)
{
    (void)state;
    peer_or_lws_closed(false);
}

/*
 * One round, five connections: direct_fd -1 (TLS) is written the lws way
 * (io->write); one closing, one lws still holds bytes for, and one already
 * waiting for its callback are not written in the round (asked, or left to
 * the pending callback, which then writes in order, through the gate); only
 * the plain one is the round's direct write.
 */
static void test_direct_mixed_round(void **state)
{
    static const char *const plain[] = {"v"}, *const bye[] = {"bye"},
                             *const both[] = {"early\nlate"};
    jw_wsconns set;
    jw_wsconn c[5];
    sock *s = calloc(5, sizeof(*s));

    (void)state;
    sock_none(&s[0]);
    for (int i = 1; i < 5; i++)
        sock_pair(&s[i], 0);
    set_up_direct(&set, true, 1 << 20);
    for (int i = 0; i < 5; i++)
        jw_wsconn_open(&set, &c[i], W(&s[i]));
    put(&c[3], "early", NULL, false); /* asked before the round */
    assert_int_equal(s[3].asks, 1);
    jw_wsconns_hold(&set);
    put(&c[0], "x", NULL, false);
    put(&c[1], "bye", NULL, false);
    jw_wsconn_close(&c[1], 1000, "done");
    s[2].backed_up = true;
    put(&c[2], "w", NULL, false);
    put(&c[3], "late", NULL, false);
    put(&c[4], "v", NULL, false);
    jw_wsconns_flush(&set);
    assert_int_equal(set.stats.direct_writes, 1);
    /* No socket of its own: lws' write, at once. */
    assert_int_equal(s[0].nframes, 1);
    assert_string_equal(s[0].frames[0], "x");
    assert_null(c[0].qhead);
    /* Closing: asked; the callback writes what is queued, then closes. */
    expect_nothing_received(&s[1]);
    assert_int_equal(s[1].asks, 1);
    assert_int_equal(s[1].closes, 0);
    assert_int_equal(jw_wsconn_on_writable(&c[1]), 0);
    expect_received(&s[1], bye, 1);
    assert_int_equal(s[1].closes, 0); /* at the next callback, once it all went */
    assert_int_equal(jw_wsconn_on_writable(&c[1]), 0);
    assert_int_equal(s[1].closes, 1);
    /* Backed up: asked. */
    expect_nothing_received(&s[2]);
    assert_int_equal(s[2].asks, 1);
    assert_non_null(c[2].qhead);
    /* Waiting for its callback: not asked again, and the callback writes both, in order. */
    expect_nothing_received(&s[3]);
    assert_int_equal(s[3].asks, 1);
    assert_int_equal(jw_wsconn_on_writable(&c[3]), 0);
    expect_received(&s[3], both, 1);
    /* Plain TCP, free: the round's one direct write. */
    expect_received(&s[4], plain, 1);
    assert_int_equal(s[4].asks, 0);
    assert_int_equal(s[1].nframes + s[3].nframes, 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s[i].raw_writes, 0);
        assert_int_equal(s[i].kills, 0);
    }
    for (int i = 0; i < 5; i++)
        jw_wsconn_closed(&c[i]);
    jw_wsconns_release(&set);
    for (int i = 0; i < 5; i++)
        sock_done(&s[i]);
    free(s);
}

/*
 * A round handed to a pool of 2 helpers: 200 connections, each given its
 * own message (its own content and length). The flush returns with them all
 * in flight (their writes come back only when the loop thread drains the
 * pool); messages given meanwhile wait in their queues, and go in the round
 * that follows the drain. A round goes over in parts of JW_WSCONN_ROUND_MAX
 * writes. Each client reads exactly its own two frames, in order: no write
 * went to another's socket, built from another's queue or in another
 * worker's scratch. Two rounds handed over, 400 direct writes.
 */
static void test_direct_pool(void **state)
{
    enum { NCONN = 200, PARTS = (NCONN + JW_WSCONN_ROUND_MAX - 1) / JW_WSCONN_ROUND_MAX };
    jw_fanout *pool = jw_fanout_new(2, NULL, NULL);
    jw_wsconn *c = calloc(NCONN, sizeof(*c));
    sock *s = calloc(NCONN, sizeof(*s));
    char *msgs[NCONN], *later[NCONN];
    jw_wsconns set;

    (void)state;
    assert_non_null(pool);
    assert_non_null(c);
    assert_non_null(s);
    set_up_direct(&set, false, 1 << 20);
    jw_wsconns_set_pool(&set, pool, 1);
    for (int i = 0; i < NCONN; i++) {
        sock_pair(&s[i], 0);
        jw_wsconn_open(&set, &c[i], W(&s[i]));
    }
    jw_wsconns_hold(&set);
    for (int i = 0; i < NCONN; i++) {
        msgs[i] = numbered("conn", i, 20 + (size_t)i);
        put(&c[i], msgs[i], NULL, true);
    }
    jw_wsconns_flush(&set);
    assert_int_equal(set.stats.parallel_rounds, PARTS);
    assert_int_equal(set.rounds_out, PARTS);
    jw_wsconns_hold(&set);
    for (int i = 0; i < NCONN; i++) {
        assert_non_null(c[i].job); /* until the drain, whatever the helpers did */
        later[i] = numbered("later", i, 30 + (size_t)i);
        put(&c[i], later[i], NULL, true);
    }
    jw_wsconns_flush(&set);
    assert_int_equal(set.stats.parallel_rounds, PARTS); /* all in flight: nothing to write */
    for (int i = 0; i < NCONN; i++)
        assert_non_null(c[i].qhead);
    jw_fanout_finish(pool); /* drains: the first writes come back, the second round goes */
    assert_int_equal(set.rounds_out, 0);
    assert_int_equal(set.stats.parallel_rounds, 2 * PARTS);
    assert_int_equal(set.stats.direct_writes, 2 * NCONN);
    assert_int_equal(set.stats.counted, 2 * NCONN);
    for (int i = 0; i < NCONN; i++) {
        const char *const want[] = {msgs[i], later[i]};

        expect_received(&s[i], want, 2);
        assert_null(c[i].qhead);
        assert_null(c[i].job);
        assert_int_equal(c[i].fbytes, 0);
        assert_int_equal(s[i].asks + s[i].kills + (int)s[i].nframes, 0);
    }
    for (int i = 0; i < NCONN; i++)
        jw_wsconn_closed(&c[i]);
    jw_wsconns_release(&set);
    jw_fanout_free(pool);
    for (int i = 0; i < NCONN; i++) {
        sock_done(&s[i]);
        free(msgs[i]);
        free(later[i]);
    }
    free(s);
    free(c);
}

/*
 * Partial sends on the pool's helpers: 24 connections with small send
 * buffers, each given 20 kB of its own messages one per frame; the gate
 * holds each one's rest (copied out of the worker's scratch before the
 * scratch is reused), and each client's bytes, the rest sent at WRITEABLE,
 * are exactly its own frames.
 */
static void test_direct_pool_partial(void **state)
{
    enum { NCONN = 24, NMSG = 20, MLEN = 1000 };
    jw_fanout *pool = jw_fanout_new(2, NULL, NULL);
    jw_wsconn *c = calloc(NCONN, sizeof(*c));
    sock *s = calloc(NCONN, sizeof(*s));
    char *msgs[NCONN][NMSG];
    jw_wsconns set;

    (void)state;
    assert_non_null(pool);
    assert_non_null(c);
    assert_non_null(s);
    set_up_direct(&set, false, 1 << 20);
    jw_wsconns_set_pool(&set, pool, 1);
    for (int i = 0; i < NCONN; i++) {
        sock_pair(&s[i], 4096);
        jw_wsconn_open(&set, &c[i], W(&s[i]));
    }
    jw_wsconns_hold(&set);
    for (int k = 0; k < NMSG; k++)
        for (int i = 0; i < NCONN; i++) {
            msgs[i][k] = numbered(k % 2 ? "odd" : "even", i * NMSG + k, MLEN);
            put(&c[i], msgs[i][k], NULL, false);
        }
    jw_wsconns_flush(&set);
    jw_fanout_finish(pool);
    assert_int_equal(set.stats.parallel_rounds, 1);
    assert_int_equal(set.stats.direct_writes, NCONN);
    for (int i = 0; i < NCONN; i++) {
        size_t len;
        unsigned char *b;

        assert_true(c[i].lws_held > 0); /* the gate's rest was exercised */
        b = pump(&s[i], &c[i], &len);
        assert_int_equal(s[i].raw_len, 0);
        expect_frames(b, len, (const char *const *)msgs[i], NMSG);
        free(b);
        assert_null(c[i].qhead);
        assert_int_equal(s[i].kills, 0);
    }
    for (int i = 0; i < NCONN; i++)
        jw_wsconn_closed(&c[i]);
    jw_wsconns_release(&set);
    jw_fanout_free(pool);
    for (int i = 0; i < NCONN; i++) {
        sock_done(&s[i]);
        for (int k = 0; k < NMSG; k++)
            free(msgs[i][k]);
    }
    free(s);
    free(c);
}

/*
 * The pool takes a round only from parallel_min direct writes on: a
 * connection written the lws way (direct_fd -1) does not count towards it.
 */
static void test_direct_pool_threshold(void **state)
{
    jw_fanout *pool = jw_fanout_new(2, NULL, NULL);
    jw_wsconn c[5];
    sock *s = calloc(5, sizeof(*s));
    jw_wsconns set;

    (void)state;
    assert_non_null(pool);
    set_up_direct(&set, true, 1 << 20);
    jw_wsconns_set_pool(&set, pool, 4);
    sock_none(&s[0]);
    for (int i = 1; i < 5; i++)
        sock_pair(&s[i], 0);
    for (int i = 0; i < 5; i++)
        jw_wsconn_open(&set, &c[i], W(&s[i]));
    /* Four dirty connections, three direct writes: the loop thread alone. */
    jw_wsconns_hold(&set);
    for (int i = 0; i < 4; i++)
        put(&c[i], "r1", NULL, false);
    jw_wsconns_flush(&set);
    assert_int_equal(set.stats.direct_writes, 3);
    assert_int_equal(set.stats.parallel_rounds, 0);
    /* Four direct writes: shared. */
    jw_wsconns_hold(&set);
    for (int i = 1; i < 5; i++)
        put(&c[i], "r2", NULL, false);
    jw_wsconns_flush(&set);
    jw_fanout_finish(pool);
    assert_int_equal(set.stats.direct_writes, 7);
    assert_int_equal(set.stats.parallel_rounds, 1);
    for (int i = 1; i < 5; i++) {
        static const char *const both[] = {"r1", "r2"}, *const last[] = {"r2"};

        expect_received(&s[i], i < 4 ? both : last, i < 4 ? 2 : 1);
    }
    assert_string_equal(s[0].frames[0], "r1");
    for (int i = 0; i < 5; i++)
        jw_wsconn_closed(&c[i]);
    jw_wsconns_release(&set);
    jw_fanout_free(pool);
    for (int i = 0; i < 5; i++)
        sock_done(&s[i]);
    free(s);
}

/* The fake yield: the direct writes made by each call (the set under test). */
static const jw_wsconns *yield_set;
static uint64_t yield_at[8];
static int nyield;

static void fake_yield(void)
{
    if (nyield < 8)
        yield_at[nyield] = yield_set->stats.direct_writes;
    nyield++;
}

/*
 * A round written alone yields the CPU between its parts of JW_WSCONN_ROUND_MAX,
 * after each part's sends and not after the last; with helpers, never. Every
 * connection still gets its message, once.
 */
static void test_direct_round_yields(void **state)
{
    enum { N = 2 * JW_WSCONN_ROUND_MAX + 10 };
    jw_fanout *pool = jw_fanout_new(2, NULL, NULL);
    jw_wsconn *c = calloc(N, sizeof(*c));
    sock *s = calloc(N, sizeof(*s));
    jw_wsconns set;
    static const char *const one[] = {"m"}, *const both[] = {"m", "m2"};

    (void)state;
    assert_non_null(pool);
    set_up_direct(&set, true, 1 << 20);
    set.yield = fake_yield;
    yield_set = &set;
    nyield = 0;
    for (int i = 0; i < N; i++) {
        sock_pair(&s[i], 0);
        jw_wsconn_open(&set, &c[i], W(&s[i]));
    }
    jw_wsconns_hold(&set);
    for (int i = 0; i < N; i++)
        put(&c[i], "m", NULL, false);
    jw_wsconns_flush(&set);
    assert_int_equal(set.stats.direct_writes, N);
    assert_int_equal(nyield, 2);
    assert_int_equal(yield_at[0], JW_WSCONN_ROUND_MAX);
    assert_int_equal(yield_at[1], 2 * JW_WSCONN_ROUND_MAX);
    for (int i = 0; i < N; i++)
        expect_received(&s[i], one, 1);
    /* With helpers the loop thread does not write the round: no yield. */
    jw_wsconns_set_pool(&set, pool, 1);
    jw_wsconns_hold(&set);
    for (int i = 0; i < N; i++)
        put(&c[i], "m2", NULL, false);
    jw_wsconns_flush(&set);
    jw_fanout_finish(pool);
    assert_int_equal(set.stats.direct_writes, 2 * N);
    assert_int_equal(nyield, 2);
    for (int i = 0; i < N; i++)
        expect_received(&s[i], both + 1, 1);
    for (int i = 0; i < N; i++)
        jw_wsconn_closed(&c[i]);
    jw_wsconns_release(&set);
    jw_fanout_free(pool);
    for (int i = 0; i < N; i++)
        sock_done(&s[i]);
    free(s);
    free(c);
}

/* ---- the process' budget (jw_wsmem) ------------------------------------------------- */

/*
 * A message shared by several queues counts once: the second and third queue
 * add only their entry; letting go of every entry brings the count to zero.
 */
static void test_mem_counts_shared_once(void **state)
{
    jw_wsconns set;
    jw_wsmem mem;
    jw_wsconn a, b, c;
    sock sa = {0}, sb = {0}, sc = {0};
    jw_wsmsg *m = jw_wsmsg_new("a shared message of some length", 31),
             *head = jw_wsmsg_new("head:", 5);
    size_t u1, u2, u3, entry;

    (void)state;
    set_up(&set, true, 1 << 20);
    jw_wsmem_init(&mem, 1 << 20, NULL);
    jw_wsconns_set_mem(&set, &mem);
    jw_wsconn_open(&set, &a, W(&sa));
    jw_wsconn_open(&set, &b, W(&sb));
    jw_wsconn_open(&set, &c, W(&sc));
    jw_wsconn_push(&a, NULL, m, NULL, true);
    u1 = mem.used;
    jw_wsconn_push(&b, NULL, m, NULL, true);
    u2 = mem.used;
    entry = u2 - u1;
    assert_true(entry >= sizeof(jw_wsq));
    assert_true(u1 >= entry + m->len); /* the first queue: its entry and the message */
    jw_wsconn_push(&c, NULL, m, NULL, true);
    u3 = mem.used;
    assert_int_equal(u3 - u2, entry); /* the third: its entry alone */
    jw_wsconn_push(&a, head, m, NULL, true);
    assert_true(mem.used >= u3 + entry + head->len);
    assert_int_equal(jw_wsconn_drop_counted(&b), 1);
    assert_int_equal(m->qrefs, 3);
    assert_int_equal(jw_wsconn_on_writable(&a), 0); /* both of a's go */
    assert_int_equal(mem.used, u1);                 /* c's entry, and the message */
    assert_int_equal(m->qrefs, 1);
    assert_int_equal(head->qrefs, 0);
    jw_wsconn_closed(&c);
    assert_int_equal(mem.used, 0);
    assert_int_equal(m->refs, 1);
    jw_wsmsg_unref(m);
    jw_wsmsg_unref(head);
    jw_wsconn_closed(&a);
    jw_wsconn_closed(&b);
    jw_wsconns_release(&set);
    jw_wsmem_release(&mem);
}

/* n bytes of 'x', counted or not, as a message of its own. */
static void put_n(jw_wsconn *c, size_t n, bool counted)
{
    char *t = malloc(n + 1);

    assert_non_null(t);
    memset(t, 'x', n);
    t[n] = '\0';
    put(c, t, NULL, counted);
    free(t);
}

/*
 * Over the limit: the connections furthest behind are shed first, until
 * under three quarters of it; one holding only replies (nothing to shed)
 * is passed over however far behind; under the limit nothing happens.
 */
static void test_mem_sheds_furthest_behind(void **state)
{
    jw_wsconns set;
    jw_wsmem mem;
    jw_wsconn c[4];
    sock s[4] = {{0}};

    (void)state;
    shed_calls = 0;
    set_up(&set, true, 1 << 20);
    set.shed = shed_counted;
    jw_wsmem_init(&mem, 8000, NULL);
    jw_wsconns_set_mem(&set, &mem);
    for (int i = 0; i < 4; i++)
        jw_wsconn_open(&set, &c[i], W(&s[i]));
    put_n(&c[0], 2000, true);
    put_n(&c[1], 3000, true);
    put_n(&c[2], 1000, true);
    put_n(&c[2], 100, false);
    put_n(&c[3], 4000, false); /* replies only */
    assert_true(mem.used > 10000 && mem.used < 10600);
    assert_int_equal(jw_wsmem_enforce(&mem), 2); /* 3000 and 2000: then under 6000 */
    assert_int_equal(shed_calls, 2);
    assert_int_equal(c[1].qcounted, 0);
    assert_int_equal(c[0].qcounted, 0);
    assert_int_equal(c[2].qcounted, 1);
    assert_int_equal(c[3].qbytes, 4001);
    assert_true(mem.used <= 6000);
    assert_int_equal(mem.sheds, 2);
    assert_int_equal(mem.passes, 1);
    /* Under the limit: nothing. */
    assert_int_equal(jw_wsmem_enforce(&mem), 0);
    assert_int_equal(mem.passes, 1);
    /* Over it with nothing left to shed but c[2]: it goes, and the pass ends. */
    put_n(&c[3], 3000, false);
    assert_true(mem.used > 8000);
    assert_int_equal(jw_wsmem_enforce(&mem), 1);
    assert_int_equal(c[2].qcounted, 0);
    assert_int_equal(mem.passes, 2);
    /* Over it with replies alone: a pass sheds nothing, and the next rounds walk nothing
     * until the total has grown by an eighth of the limit. */
    put_n(&c[3], 2000, false);
    assert_true(mem.used > 8000);
    assert_int_equal(jw_wsmem_enforce(&mem), 0);
    assert_int_equal(mem.passes, 3);
    put_n(&c[0], 500, true);
    assert_int_equal(jw_wsmem_enforce(&mem), 0);
    assert_int_equal(mem.passes, 3);
    assert_int_equal(c[0].qcounted, 1);
    put_n(&c[0], 600, true);
    assert_int_equal(jw_wsmem_enforce(&mem), 1);
    assert_int_equal(mem.passes, 4);
    assert_int_equal(c[0].qcounted, 0);
    for (int i = 0; i < 4; i++)
        jw_wsconn_closed(&c[i]);
    assert_int_equal(mem.used, 0);
    jw_wsconns_release(&set);
    jw_wsmem_release(&mem);
}

/*
 * When the check runs: output queued outside a round arms a timer due at
 * once (a caller may be walking connections); inside a round, the flush
 * checks at its end - the last flush when two sets share the budget.
 */
static void test_mem_when_checked(void **state)
{
    jw_timers *q = jw_timers_new(no_wake, NULL);
    jw_wsconns s1, s2;
    jw_wsmem mem;
    jw_wsconn a, b;
    sock sa = {0}, sb = {0};

    (void)state;
    shed_calls = 0;
    set_up(&s1, true, 1 << 20);
    set_up(&s2, false, 1 << 20);
    s1.shed = s2.shed = shed_counted;
    jw_wsmem_init(&mem, 5000, q);
    jw_wsconns_set_mem(&s1, &mem);
    jw_wsconns_set_mem(&s2, &mem);
    jw_wsconn_open(&s1, &a, W(&sa));
    jw_wsconn_open(&s2, &b, W(&sb));
    sa.backed_up = sb.backed_up = true; /* lws holds bytes back: nothing is written */
    put_n(&a, 5000, true);
    assert_true(jw_timer_armed(&mem.check));
    assert_int_equal(shed_calls, 0);
    jw_timers_run(q, 1);
    assert_int_equal(shed_calls, 1);
    assert_int_equal(a.qcounted, 0);
    assert_false(jw_timer_armed(&mem.check));
    /* Two sets in one round: the first flush leaves it to the second. */
    jw_wsconns_hold(&s1);
    jw_wsconns_hold(&s2);
    put_n(&a, 3000, true);
    put_n(&b, 3000, true);
    assert_false(jw_timer_armed(&mem.check));
    jw_wsconns_flush(&s1);
    assert_int_equal(shed_calls, 1);
    assert_int_equal(a.qcounted + b.qcounted, 2);
    jw_wsconns_flush(&s2);
    assert_int_equal(shed_calls, 2); /* one was enough: under 3750 */
    assert_int_equal(a.qcounted + b.qcounted, 1);
    assert_false(jw_timer_armed(&mem.check));
    jw_wsconn_closed(&a);
    jw_wsconn_closed(&b);
    assert_int_equal(mem.used, 0);
    jw_wsconns_release(&s1);
    jw_wsconns_release(&s2);
    jw_wsmem_release(&mem);
    jw_timers_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gathers_and_asks_once),
        cmocka_unit_test(test_frame_limit),
        cmocka_unit_test(test_one_per_frame),
        cmocka_unit_test(test_bound_and_slow_close),
        cmocka_unit_test(test_drop_keeps_order),
        cmocka_unit_test(test_shared_message),
        cmocka_unit_test(test_hold_and_flush),
        cmocka_unit_test(test_flush_failure_and_closed),
        cmocka_unit_test(test_polite_close),
        cmocka_unit_test(test_owed_after_queue),
        cmocka_unit_test(test_liveness_ping_and_drop),
        cmocka_unit_test(test_liveness_late_run),
        cmocka_unit_test(test_liveness_ping_never_written),
        cmocka_unit_test(test_liveness_quiet_when_heard),
        cmocka_unit_test(test_liveness_ping_fails),
        cmocka_unit_test(test_direct_gathered),
        cmocka_unit_test(test_direct_frames),
        cmocka_unit_test(test_direct_big_message),
        cmocka_unit_test(test_direct_partial_gathered),
        cmocka_unit_test(test_direct_partial_frames),
        cmocka_unit_test(test_direct_failures),
        cmocka_unit_test(test_direct_owed),
        cmocka_unit_test(test_direct_peer_closed),
        cmocka_unit_test(test_direct_lws_closing),
        cmocka_unit_test(test_direct_mixed_round),
        cmocka_unit_test(test_direct_pool),
        cmocka_unit_test(test_direct_pool_partial),
        cmocka_unit_test(test_direct_pool_threshold),
        cmocka_unit_test(test_direct_round_yields),
        cmocka_unit_test(test_mem_counts_shared_once),
        cmocka_unit_test(test_mem_sheds_furthest_behind),
        cmocka_unit_test(test_mem_when_checked),
    };

    /* The gate is the process' send() here too: direct writes go through it. */
    if (!jw_wire_init(1024))
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
