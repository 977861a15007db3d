/*
 * fanout_floor - what one message to N loopback TCP sockets costs on this
 * machine with nothing else in the way: no WebSocket framing, no JSON, no
 * event library, no queue. The floor under any fan-out server's latency here.
 *
 * N connected pairs over 127.0.0.1. Each round, the writer thread(s) take the
 * time once and send one message of --size bytes, the time in its first 8,
 * to every server-side socket in turn (blocking sends, one syscall each: what a
 * server that gathered a round into one frame per connection has left to do).
 * A reader thread, like a load tool's, reads every client-side socket from
 * one epoll set and takes, per message, receive time - round time. Printed:
 * that latency's p50/p99/p99.9/max over every message, the writers' time per
 * round and per send, and the CPU of both sides.
 *
 * Usage: fanout_floor [--conns N (2000)] [--size B (2200)] [--rounds R (300)]
 *                     [--interval-ms MS (20)] [--writers W (1)]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LAT_US 2000000 /* histogram range, 1 us buckets */

static struct {
    int conns, size, rounds, interval_ms, writers;
} opt = {2000, 2200, 300, 20, 1};

static int *srv_fd;          /* the writer's side of pair i */
static int *cli_fd;          /* the reader's side */
static size_t *got;          /* bytes of the current message read, per pair */
static unsigned char **head; /* its first 8 bytes, per pair */
static uint64_t *hist;
static uint64_t nlat, lat_max;
static volatile bool done;
static uint64_t expect;
static double write_ns_total;

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("fanout_floor: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double cpu_s(int who)
{
    struct timespec ts;

    clock_gettime(who, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void connect_pairs(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        die("listen on 127.0.0.1: %s", strerror(errno));
    for (int i = 0; i < opt.conns; i++) {
        /* Source addresses spread over 127.0.0.2..254, as the load tool does. */
        struct sockaddr_in src = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % 253))};

        cli_fd[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (cli_fd[i] < 0 || bind(cli_fd[i], (struct sockaddr *)&src, sizeof(src)) != 0 ||
            connect(cli_fd[i], (struct sockaddr *)&a, sizeof(a)) != 0)
            die("connect %d: %s", i, strerror(errno));
        srv_fd[i] = accept(lfd, NULL, NULL);
        if (srv_fd[i] < 0)
            die("accept %d: %s", i, strerror(errno));
        setsockopt(srv_fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    close(lfd);
}

static void record(int64_t us)
{
    if (us < 0)
        us = 0;
    if ((uint64_t)us > lat_max)
        lat_max = (uint64_t)us;
    hist[us < MAX_LAT_US ? us : MAX_LAT_US - 1]++;
    nlat++;
}

static void *reader(void *arg)
{
    int ep = epoll_create1(0);
    struct epoll_event ev[256];
    static unsigned char buf[65536];

    (void)arg;
    for (int i = 0; i < opt.conns; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};

        if (epoll_ctl(ep, EPOLL_CTL_ADD, cli_fd[i], &e) != 0)
            die("epoll_ctl: %s", strerror(errno));
    }
    while (nlat < expect) {
        int n = epoll_wait(ep, ev, 256, 1000);

        for (int k = 0; k < n; k++) {
            int i = (int)ev[k].data.u32;
            ssize_t r = read(cli_fd[i], buf, sizeof(buf));
            int64_t t = now_ns();

            /* Walk the stream in messages of opt.size: each one's time is its first 8 bytes. */
            for (ssize_t p = 0; p < r;) {
                size_t take = (size_t)(r - p), left = (size_t)opt.size - got[i];

                if (take > left)
                    take = left;
                if (got[i] < 8) {
                    size_t h = 8 - got[i] < take ? 8 - got[i] : take;

                    memcpy(head[i] + got[i], buf + p, h);
                }
                got[i] += take;
                p += (ssize_t)take;
                if (got[i] == (size_t)opt.size) {
                    int64_t t0;

                    memcpy(&t0, head[i], 8);
                    record((t - t0) / 1000);
                    got[i] = 0;
                }
            }
        }
        if (n == 0 && done)
            break;
    }
    close(ep);
    return NULL;
}

typedef struct {
    int from, to;
    const unsigned char *msg; /* the round's message: its time in the first 8 bytes */
} slice;

static void *send_slice(void *arg)
{
    slice *s = arg;

    for (int i = s->from; i < s->to; i++) {
        for (ssize_t off = 0; off < opt.size;) {
            ssize_t w = send(srv_fd[i], s->msg + off, (size_t)(opt.size - off), MSG_NOSIGNAL);

            if (w < 0)
                die("send: %s", strerror(errno));
            off += w;
        }
    }
    return NULL;
}

static uint64_t pct(double q)
{
    uint64_t want = (uint64_t)(q * (double)nlat), seen = 0;

    for (uint64_t us = 0; us < MAX_LAT_US; us++)
        if ((seen += hist[us]) > want)
            return us;
    return MAX_LAT_US;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"conns", 1, 0, 'c'},   {"size", 1, 0, 's'},
                                       {"rounds", 1, 0, 'r'},  {"interval-ms", 1, 0, 'i'},
                                       {"writers", 1, 0, 'w'}, {0, 0, 0, 0}};
    struct rlimit rl;
    pthread_t rt, wt[8];
    slice sl[8];
    double cpu0, wall0;
    int c;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'c': opt.conns = atoi(optarg); break;
        case 's': opt.size = atoi(optarg); break;
        case 'r': opt.rounds = atoi(optarg); break;
        case 'i': opt.interval_ms = atoi(optarg); break;
        case 'w': opt.writers = atoi(optarg); break;
        default:
            fputs("usage: fanout_floor [--conns N] [--size B] [--rounds R] [--interval-ms MS] "
                  "[--writers W]\n",
                  stderr);
            return 2;
        }
    }
    if (opt.conns < 1 || opt.conns > 9000 || opt.size < 8 || opt.size > 1 << 20 || opt.rounds < 1 ||
        opt.interval_ms < 0 || opt.writers < 1 || opt.writers > 8)
        die("out of range: conns 1..9000, size 8..1 MiB, rounds >= 1, writers 1..8");
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    srv_fd = calloc((size_t)opt.conns, sizeof(int));
    cli_fd = calloc((size_t)opt.conns, sizeof(int));
    got = calloc((size_t)opt.conns, sizeof(size_t));
    head = calloc((size_t)opt.conns, sizeof(*head));
    hist = calloc(MAX_LAT_US, sizeof(uint64_t));
    if (!srv_fd || !cli_fd || !got || !head || !hist)
        die("out of memory");
    for (int i = 0; i < opt.conns; i++)
        if (!(head[i] = malloc(8)))
            die("out of memory");
    connect_pairs();
    expect = (uint64_t)opt.conns * (uint64_t)opt.rounds;
    pthread_create(&rt, NULL, reader, NULL);

    unsigned char *msg = calloc(1, (size_t)opt.size);

    if (!msg)
        die("out of memory");
    cpu0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID);
    wall0 = (double)now_ns() / 1e9;
    for (int r = 0; r < opt.rounds; r++) {
        int64_t t0 = now_ns(), per = (opt.conns + opt.writers - 1) / opt.writers;

        memcpy(msg, &t0, 8);
        for (int w = 0; w < opt.writers; w++) {
            int from = w * (int)per, to = from + (int)per < opt.conns ? from + (int)per : opt.conns;

            sl[w] = (slice){from, to, msg};
            if (opt.writers == 1)
                send_slice(&sl[w]);
            else
                pthread_create(&wt[w], NULL, send_slice, &sl[w]);
        }
        if (opt.writers > 1)
            for (int w = 0; w < opt.writers; w++)
                pthread_join(wt[w], NULL);
        write_ns_total += (double)(now_ns() - t0);
        if (opt.interval_ms) {
            int64_t next = t0 + (int64_t)opt.interval_ms * 1000000, left = next - now_ns();

            if (left > 0) {
                struct timespec ts = {left / 1000000000, left % 1000000000};

                nanosleep(&ts, NULL);
            }
        }
    }
    done = true;
    pthread_join(rt, NULL);

    double wall = (double)now_ns() / 1e9 - wall0, cpu = cpu_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;

    printf("fanout_floor: conns=%d size=%d rounds=%d interval_ms=%d writers=%d messages=%" PRIu64
           " of %" PRIu64 "\n",
           opt.conns, opt.size, opt.rounds, opt.interval_ms, opt.writers, nlat, expect);
    printf("  latency from round start us: p50 %" PRIu64 " p99 %" PRIu64 " p99.9 %" PRIu64
           " max %" PRIu64 "\n",
           pct(0.50), pct(0.99), pct(0.999), lat_max);
    printf("  writers: %.2f ms per round, %.2f us per send (wall); cpu %.2f s in %.2f s "
           "(writers + reader), %.0f sends/s\n",
           write_ns_total / opt.rounds / 1e6, write_ns_total / (double)expect / 1e3, cpu, wall,
           (double)expect / wall);
    printf("RESULT conns=%d size=%d writers=%d p50_us=%" PRIu64 " p99_us=%" PRIu64
           " max_us=%" PRIu64 " round_ms=%.3f send_us=%.3f\n",
           opt.conns, opt.size, opt.writers, pct(0.50), pct(0.99), lat_max,
           write_ns_total / opt.rounds / 1e6, write_ns_total / (double)expect / 1e3);
    return nlat == expect ? 0 : 1;
}
