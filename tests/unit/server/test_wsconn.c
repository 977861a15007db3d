/*
 * wsconn.c: a WebSocket connection's output queue, its bound, the ask-once
 * write request, the publish round's direct writes and the polite close,
 * against a fake socket that records what it was asked and given.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "wsconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    char frames[8][70000];
    size_t nframes;
    int writes; /* write_frames calls */
    int order;  /* when it was last written, across sockets */
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

static const jw_wsconn_io fake_io = {
    .ask_writable = f_ask,
    .write = f_write,
    .write_frames = f_write_frames,
    .backed_up = f_backed_up,
    .close = f_close,
    .kill = f_kill,
};

static void set_up(jw_wsconns *set, bool gather, size_t max_queue)
{
    jw_wsconns_init(set, "test", gather, max_queue);
    set->io = &fake_io;
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
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
