/*
 * wire.c: the gate in front of a WebSocket socket's writes, on real sockets
 * (socketpairs with small send buffers, so sends are partial). The process'
 * send() is the gate's; the owner's frames that the socket did not take go
 * before any other write (an lws write is refused with EAGAIN meanwhile);
 * when the socket took part of an lws write, the owner waits until lws sent
 * the rest; a closed gate stops the owner and lets send() through; and, with
 * a writer thread and lws-style writes racing on one socket, the client
 * reads every frame whole and in order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char pong[2] = {(char)0x8a, 0x00}; /* what lws sends for a ping: an empty pong */

/* sv[0] the server's end (non-blocking, as lws' sockets are; send buffer sndbuf), sv[1] the
 * client's. */
static void pair(int sv[2], int sndbuf)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK), 0);
}

/* Everything the client's end can read now, appended to buf at *got. */
static void take(int fd, char *buf, size_t cap, size_t *got)
{
    for (;;) {
        ssize_t r = recv(fd, buf + *got, cap - *got, MSG_DONTWAIT);

        if (r > 0) {
            *got += (size_t)r;
            assert_true(*got < cap);
            continue;
        }
        assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
        if (errno != EINTR)
            return;
    }
}

/* A text frame (FIN, unmasked, 16-bit length) of len bytes of c; into out, its size. */
static size_t frame(char *out, size_t len, char c)
{
    out[0] = (char)0x81;
    out[1] = 126;
    out[2] = (char)(len >> 8);
    out[3] = (char)len;
    memset(out + 4, c, len);
    return len + 4;
}

static int group_setup(void **state)
{
    (void)state;
    return jw_wire_init(1024) ? 0 : -1; /* the gate is the process' send() here too */
}

static int group_teardown(void **state)
{
    (void)state;
    jw_wire_shutdown();
    return 0;
}

/*
 * The owner's frame is held where the socket stopped; an lws write (a pong)
 * is refused with EAGAIN until the held bytes all went, then goes whole:
 * the client reads the frame, then the pong.
 */
static void test_held_goes_first(void **state)
{
    static char f[30004], got[40000];
    size_t n = frame(f, 30000, 'a'), have = 0;
    jw_wire *w;
    int sv[2], err, refusals = 0;

    (void)state;
    pair(sv, 4096);
    w = jw_wire_open(sv[0]);
    assert_non_null(w);
    assert_int_equal(jw_wire_send(w, f, n, &err), JW_WIRE_HELD);
    assert_true(jw_wire_held(w) > 0);
    for (;;) {
        ssize_t r = send(sv[0], pong, sizeof(pong), MSG_NOSIGNAL);

        if (r == (ssize_t)sizeof(pong))
            break;
        assert_int_equal(r, -1);
        assert_int_equal(errno, EAGAIN);
        refusals++;
        take(sv[1], got, sizeof(got), &have);
    }
    assert_true(refusals > 0);
    assert_int_equal(jw_wire_held(w), 0);
    take(sv[1], got, sizeof(got), &have);
    assert_int_equal(have, n + sizeof(pong));
    assert_memory_equal(got, f, n);
    assert_memory_equal(got + n, pong, sizeof(pong));
    jw_wire_close(w);
    close(sv[0]);
    close(sv[1]);
}

/*
 * The socket takes part of an lws write: the owner's next write does not go
 * (JW_WIRE_WAIT, nothing sent) until lws sent the rest; then it goes.
 */
static void test_owner_waits_for_lws(void **state)
{
    static char big[30000], got[40000], f[104];
    size_t n = frame(f, 100, 'c'), have = 0, sent;
    jw_wire *w;
    int sv[2], err;
    ssize_t r;

    (void)state;
    memset(big, 'b', sizeof(big));
    pair(sv, 4096);
    w = jw_wire_open(sv[0]);
    assert_non_null(w);
    r = send(sv[0], big, sizeof(big), MSG_NOSIGNAL);
    assert_true(r > 0 && (size_t)r < sizeof(big));
    sent = (size_t)r;
    assert_int_equal(jw_wire_send(w, f, n, &err), JW_WIRE_WAIT);
    take(sv[1], got, sizeof(got), &have);
    assert_int_equal(have, sent); /* nothing of the owner's went */
    assert_int_equal(jw_wire_send(w, f, n, &err), JW_WIRE_WAIT);
    while (sent < sizeof(big)) { /* lws sends its rest, as the socket drains */
        r = send(sv[0], big + sent, sizeof(big) - sent, MSG_NOSIGNAL);
        if (r > 0)
            sent += (size_t)r;
        take(sv[1], got, sizeof(got), &have);
    }
    assert_int_equal(jw_wire_send(w, f, n, &err), JW_WIRE_SENT);
    take(sv[1], got, sizeof(got), &have);
    assert_int_equal(have, sizeof(big) + n);
    assert_memory_equal(got, big, sizeof(big));
    assert_memory_equal(got + sizeof(big), f, n);
    jw_wire_close(w);
    close(sv[0]);
    close(sv[1]);
}

/*
 * A socket whose client went: the owner's write fails (EPIPE, no SIGPIPE),
 * and so does an lws write behind held bytes. After jw_wire_close a write
 * through a reference left is refused (CLOSED) and send() is the plain one;
 * the descriptor may be opened again.
 */
static void test_failure_and_close(void **state)
{
    static char f[30004];
    size_t n = frame(f, 30000, 'd');
    jw_wire *w, *left;
    int sv[2], err;

    (void)state;
    pair(sv, 4096);
    w = jw_wire_open(sv[0]);
    assert_non_null(w);
    assert_null(jw_wire_open(sv[0])); /* one gate per socket */
    assert_int_equal(jw_wire_send(w, f, n, &err), JW_WIRE_HELD);
    close(sv[1]);
    errno = 0;
    assert_int_equal(send(sv[0], pong, sizeof(pong), MSG_NOSIGNAL), -1);
    assert_true(errno == EPIPE || errno == ECONNRESET);
    assert_int_equal(jw_wire_send(w, f, 10, &err), JW_WIRE_FAILED);
    assert_true(err == EPIPE || err == ECONNRESET);
    left = jw_wire_ref(w);
    jw_wire_close(w);
    assert_int_equal(jw_wire_send(left, f, 10, &err), JW_WIRE_CLOSED);
    jw_wire_unref(left);
    close(sv[0]);

    pair(sv, 4096);
    w = jw_wire_open(sv[0]);
    assert_non_null(w); /* maybe the same descriptor: free again */
    jw_wire_close(w);
    /* Not registered: send() is the C library's. */
    assert_int_equal(send(sv[0], pong, sizeof(pong), MSG_NOSIGNAL), (ssize_t)sizeof(pong));
    assert_null(jw_wire_open(-1));
    assert_null(jw_wire_open(5000)); /* past the table: no gate, lws writes */
    close(sv[0]);
    close(sv[1]);
}

/* ---- a writer thread and lws-style writes on one socket --------------------------------- */

enum { NFRAMES = 2000, NPONGS = 10000 };

typedef struct race {
    int peer;
    jw_wire *w;
    bool bad;           /* the reader's: it saw a byte out of place */
    size_t frames;      /* the reader's: text frames it saw whole, in order */
    size_t pongs;       /* the reader's: pongs it saw */
    bool writer_failed; /* the writer's: the gate refused a frame */
} race;

static size_t race_len(size_t k)
{
    return 200 + (k * 977) % 3000;
}

/* The owner: frame k is race_len(k) bytes of a letter of k; WAIT means: again, later. */
static void *writer(void *arg)
{
    race *r = arg;
    char *f = malloc(4 + 4000);
    int err;

    for (size_t k = 0; k < NFRAMES; k++) {
        size_t n = frame(f, race_len(k), (char)('a' + k % 26));
        jw_wire_result res;

        while ((res = jw_wire_send(r->w, f, n, &err)) == JW_WIRE_WAIT)
            sched_yield();
        if (res != JW_WIRE_SENT && res != JW_WIRE_HELD)
            r->writer_failed = true;
    }
    while (jw_wire_send(r->w, NULL, 0, &err) == JW_WIRE_WAIT)
        sched_yield();
    free(f);
    return NULL;
}

/* The client: parses the stream as it comes, frame by frame. */
static void *reader(void *arg)
{
    race *r = arg;
    size_t want = NFRAMES, cap = 1 << 20, len = 0, at = 0;
    char *buf = malloc(cap);

    while (r->frames < want || r->pongs < NPONGS) {
        ssize_t got = recv(r->peer, buf + len, cap - len, 0);

        if (got <= 0)
            break;
        len += (size_t)got;
        for (;;) {
            unsigned char op;
            size_t pl;

            if (len - at < 2)
                break;
            op = (unsigned char)buf[at];
            if (op == 0x8a) {
                if (buf[at + 1] != 0) {
                    r->bad = true;
                    goto out;
                }
                r->pongs++;
                at += 2;
                continue;
            }
            if (op != 0x81 || (unsigned char)buf[at + 1] != 126) {
                r->bad = true;
                goto out;
            }
            if (len - at < 4)
                break;
            pl = (size_t)(unsigned char)buf[at + 2] << 8 | (unsigned char)buf[at + 3];
            if (pl != race_len(r->frames)) {
                r->bad = true;
                goto out;
            }
            if (len - at < 4 + pl)
                break;
            for (size_t i = 0; i < pl; i++)
                if (buf[at + 4 + i] != (char)('a' + r->frames % 26)) {
                    r->bad = true;
                    goto out;
                }
            r->frames++;
            at += 4 + pl;
        }
        memmove(buf, buf + at, len - at); /* keep what is not a whole frame yet */
        len -= at;
        at = 0;
    }
out:
    free(buf);
    return NULL;
}

/*
 * The writer thread sends 2,000 frames through the gate while this thread, as
 * lws on the loop thread would, sends 10,000 pongs with send() (keeping and
 * resending what the socket did not take); the client reads slowly enough
 * (small buffers) that both often find it full. It reads every frame whole,
 * in order, and every pong.
 */
static void test_writer_and_lws_race(void **state)
{
    race r = {0};
    pthread_t tw, tr;
    int sv[2];

    (void)state;
    pair(sv, 2048);
    r.peer = sv[1];
    r.w = jw_wire_open(sv[0]);
    assert_non_null(r.w);
    assert_int_equal(pthread_create(&tr, NULL, reader, &r), 0);
    assert_int_equal(pthread_create(&tw, NULL, writer, &r), 0);
    for (int k = 0; k < NPONGS; k++) {
        size_t sent = 0;

        while (sent < sizeof(pong)) {
            ssize_t n = send(sv[0], pong + sent, sizeof(pong) - sent, MSG_NOSIGNAL);

            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno == EAGAIN)
                sched_yield();
            else
                fail_msg("send: %s", strerror(errno));
        }
    }
    pthread_join(tw, NULL);
    pthread_join(tr, NULL);
    assert_false(r.bad);
    assert_int_equal(r.frames, NFRAMES);
    assert_int_equal(r.pongs, NPONGS);
    assert_false(r.writer_failed);
    jw_wire_close(r.w);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_held_goes_first),
        cmocka_unit_test(test_owner_waits_for_lws),
        cmocka_unit_test(test_failure_and_close),
        cmocka_unit_test(test_writer_and_lws_race),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
