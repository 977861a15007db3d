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
 * --groups G models a server fanning out G independent jobs' updates on one CPU,
 * where one job's round can wait behind another's. The sockets are split into G
 * contiguous groups, each with rounds of its own: group g's k-th is due at
 * T0 + g * phase + k * interval + jitter(g, k), the jitter uniform in [0, J) and
 * drawn per round from --seed (so a run can be repeated). The one writer loop takes
 * the rounds in order of due time: it sleeps until the next is due, or starts it at
 * once if it is late already (the sends before it took long). The message carries
 * the round's due time, not the time its sends start, so latency is from the due
 * time and includes the wait behind the other groups. Printed as well: each round's
 * start delay, its first send's start - its due time.
 *
 * With one group and no jitter the rounds run as they did before groups, so runs
 * stay comparable with the ones before them: latency is from the round's start (its
 * first send), and the next round is due --interval-ms after that start (0: as this
 * one ends), so a round longer than the interval pushes the schedule back instead of
 * being counted as latency. The start delay is then how late a round began against that.
 *
 * Usage: fanout_floor [--conns N (2000)] [--size B (2200)] [--rounds R (300, per group)]
 *                     [--interval-ms MS (20, per group)] [--writers W (1)]
 *                     [--groups G (1)] [--phase-ms P (interval / G)] [--jitter-ms J (0)]
 *                     [--seed S (1)] [--writer-cpu C] [--reader-cpu C]
 * --phase-ms and --jitter-ms take fractions of a ms. --writers W > 1 splits each
 * round's sockets (its group's) over W threads, fork-join. --writer-cpu and
 * --reader-cpu pin the writer thread(s) and the reader to one CPU each.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
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
#define MAX_MS 3600000.0   /* --phase-ms and --jitter-ms: an hour keeps the schedule in int64 */
#define MAX_SPAN_NS (366 * 86400 * INT64_C(1000000000)) /* the longest schedule taken */

static struct {
    int conns, size, rounds, interval_ms, writers, groups;
    int writer_cpu, reader_cpu; /* -1: not pinned */
    int64_t phase_ns;           /* -1: interval / groups */
    int64_t jitter_ns;
    uint64_t seed;
} opt = {.conns = 2000,
         .size = 2200,
         .rounds = 300,
         .interval_ms = 20,
         .writers = 1,
         .groups = 1,
         .writer_cpu = -1,
         .reader_cpu = -1,
         .phase_ns = -1,
         .jitter_ns = 0,
         .seed = 1};

static int *srv_fd;          /* the writer's side of pair i */
static int *cli_fd;          /* the reader's side */
static size_t *got;          /* bytes of the current message read, per pair */
static unsigned char **head; /* its first 8 bytes, per pair */
static uint64_t *hist;
static uint64_t nlat, lat_max;
static volatile bool done;
static uint64_t expect;
static double write_ns_total;

/* The attribute checks die()'s callers' formats, and lets clang's -Wformat-nonliteral
 * accept the vfprintf below. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

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

/* An int option: all of it a number, in range (atoi's overflow is undefined). */
static int arg_int(const char *name, const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < INT_MIN || v > INT_MAX)
        die("--%s: not an integer: '%s'", name, s);
    return (int)v;
}

/* A time in ms, fractions allowed, 0..MAX_MS, in ns. */
static int64_t arg_ms(const char *name, const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end || !(v >= 0 && v <= MAX_MS)) /* the last also refuses NaN */
        die("--%s: want 0 to %.0f ms, not '%s'", name, MAX_MS, s);
    return (int64_t)(v * 1e6 + 0.5);
}

static uint64_t arg_u64(const char *name, const char *s)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (end == s || *end || errno || strchr(s, '-')) /* strtoull takes "-1" as 2^64 - 1 */
        die("--%s: not an unsigned integer: '%s'", name, s);
    return (uint64_t)v;
}

static int arg_cpu(const char *name, const char *s)
{
    int c = arg_int(name, s);

    if (c < 0 || c >= CPU_SETSIZE)
        die("--%s: want a CPU number from 0 to %d, not %d", name, CPU_SETSIZE - 1, c);
    return c;
}

static void pin(pthread_t t, int cpu, const char *who)
{
    cpu_set_t set;
    int err;

    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if ((err = pthread_setaffinity_np(t, sizeof(set), &set)) != 0)
        die("cannot pin the %s to CPU %d: %s", who, cpu, strerror(err));
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

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

/*
 * Group g's k-th round's jitter, uniform in [0, J): a hash of (seed, g, k) rather
 * than the next number of one stream, so a round's jitter does not depend on the
 * order the rounds were drawn in. The modulo's bias is below J / 2^64.
 */
static int64_t jitter(int g, int k)
{
    if (opt.jitter_ns == 0)
        return 0;
    return (int64_t)(splitmix64(splitmix64(opt.seed) ^ ((uint64_t)g << 32 | (uint64_t)k)) %
                     (uint64_t)opt.jitter_ns);
}

/* The first socket of group g (g == groups: one past the last); sizes differ by 1 at most. */
static int group_from(int g)
{
    return (int)((int64_t)g * opt.conns / opt.groups);
}

/* The groups by their next round's due time, a binary min-heap: with many small groups
 * a scan for the earliest would cost the writer more than the round's sends. */
static int *heap, nheap;
static int64_t *due; /* per group, its next round's due time */

static bool before(int a, int b)
{
    return due[a] < due[b] || (due[a] == due[b] && a < b);
}

static void sift_down(int i)
{
    for (;;) {
        int l = 2 * i + 1, m = i, t;

        if (l < nheap && before(heap[l], heap[m]))
            m = l;
        if (l + 1 < nheap && before(heap[l + 1], heap[m]))
            m = l + 1;
        if (m == i)
            return;
        t = heap[i];
        heap[i] = heap[m];
        heap[m] = t;
        i = m;
    }
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000), (long)(t % 1000000000)};

    if (t > now_ns())
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"conns", 1, 0, 'c'},       {"size", 1, 0, 's'},       {"rounds", 1, 0, 'r'},
        {"interval-ms", 1, 0, 'i'}, {"writers", 1, 0, 'w'},    {"groups", 1, 0, 'g'},
        {"phase-ms", 1, 0, 'p'},    {"jitter-ms", 1, 0, 'j'},  {"seed", 1, 0, 'S'},
        {"writer-cpu", 1, 0, 'W'},  {"reader-cpu", 1, 0, 'R'}, {0, 0, 0, 0}};
    struct rlimit rl;
    pthread_t rt, wt[8];
    slice sl[8];
    double cpu0, wall0;
    int c;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'c': opt.conns = arg_int("conns", optarg); break;
        case 's': opt.size = arg_int("size", optarg); break;
        case 'r': opt.rounds = arg_int("rounds", optarg); break;
        case 'i': opt.interval_ms = arg_int("interval-ms", optarg); break;
        case 'w': opt.writers = arg_int("writers", optarg); break;
        case 'g': opt.groups = arg_int("groups", optarg); break;
        case 'p': opt.phase_ns = arg_ms("phase-ms", optarg); break;
        case 'j': opt.jitter_ns = arg_ms("jitter-ms", optarg); break;
        case 'S': opt.seed = arg_u64("seed", optarg); break;
        case 'W': opt.writer_cpu = arg_cpu("writer-cpu", optarg); break;
        case 'R': opt.reader_cpu = arg_cpu("reader-cpu", optarg); break;
        default:
            fputs("usage: fanout_floor [--conns N] [--size B] [--rounds R] [--interval-ms MS] "
                  "[--writers W]\n"
                  "                    [--groups G] [--phase-ms P] [--jitter-ms J] [--seed S]\n"
                  "                    [--writer-cpu C] [--reader-cpu C]\n"
                  "  G groups of sockets, each with R rounds due every MS ms, group g's k-th at\n"
                  "  start + g * P (default MS / G) + k * MS + a jitter uniform in [0, J) ms\n"
                  "  (from seed S); latency is from the round's due time. One group with no\n"
                  "  jitter runs as before groups: latency from the round's start, the next\n"
                  "  round MS ms after it.\n",
                  stderr);
            return 2;
        }
    }
    if (opt.conns < 1 || opt.conns > 9000 || opt.size < 8 || opt.size > 1 << 20 || opt.rounds < 1 ||
        opt.interval_ms < 0 || opt.writers < 1 || opt.writers > 8)
        die("out of range: conns 1..9000, size 8..1 MiB, rounds >= 1, writers 1..8");
    if (opt.groups < 1 || opt.groups > opt.conns)
        die("--groups %d: want 1 to --conns (%d)", opt.groups, opt.conns);

    /* One group without jitter keeps the old schedule; anything else is the fixed grid. */
    bool grid = opt.groups > 1 || opt.jitter_ns > 0;
    int64_t interval_ns = (int64_t)opt.interval_ms * 1000000;

    if (opt.phase_ns < 0)
        opt.phase_ns = interval_ns / opt.groups;
    /* On the grid, rounds due every 0 ms would all be due at once and queue without end. */
    if (grid && interval_ns == 0)
        die("--groups > 1 and --jitter-ms need --interval-ms >= 1");
    /* Bounds the grid's sums below, in int64 (interval_ns > 0 there, checked above). */
    if (grid && (opt.rounds - 1 > MAX_SPAN_NS / interval_ns ||
                 (opt.rounds - 1) * interval_ns + (opt.groups - 1) * opt.phase_ns + opt.jitter_ns >
                     MAX_SPAN_NS))
        die("the schedule would run past a year: fewer --rounds, or shorter intervals");
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    srv_fd = calloc((size_t)opt.conns, sizeof(int));
    cli_fd = calloc((size_t)opt.conns, sizeof(int));
    got = calloc((size_t)opt.conns, sizeof(size_t));
    head = calloc((size_t)opt.conns, sizeof(*head));
    hist = calloc(MAX_LAT_US, sizeof(uint64_t));
    heap = calloc((size_t)opt.groups, sizeof(*heap));
    due = calloc((size_t)opt.groups, sizeof(*due));

    int *next = calloc((size_t)opt.groups, sizeof(*next)); /* per group, its next round */
    size_t nround = 0, nrounds = (size_t)opt.rounds * (size_t)opt.groups;
    int64_t *delay = calloc(nrounds, sizeof(*delay)); /* per round taken, its start delay */

    if (!srv_fd || !cli_fd || !got || !head || !hist || !heap || !due || !next || !delay)
        die("out of memory");
    for (int i = 0; i < opt.conns; i++)
        if (!(head[i] = malloc(8)))
            die("out of memory");
    connect_pairs();
    expect = (uint64_t)opt.conns * (uint64_t)opt.rounds;
    if ((c = pthread_create(&rt, NULL, reader, NULL)) != 0)
        die("pthread_create: %s", strerror(c));
    pin(rt, opt.reader_cpu, "reader");
    /* After the reader is started, so that it does not inherit this; the --writers
     * threads started below do, from this thread. */
    pin(pthread_self(), opt.writer_cpu, "writer");

    unsigned char *msg = calloc(1, (size_t)opt.size);

    if (!msg)
        die("out of memory");
    cpu0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID);
    wall0 = (double)now_ns() / 1e9;

    int64_t start = now_ns(), end = start;

    for (int g = 0; g < opt.groups; g++) {
        due[g] = grid ? start + g * opt.phase_ns + jitter(g, 0) : start;
        heap[g] = g;
    }
    nheap = opt.groups;
    for (int i = nheap / 2 - 1; i >= 0; i--)
        sift_down(i);
    while (nheap > 0) {
        int g = heap[0], gfrom = group_from(g), gto = group_from(g + 1);
        int per = (gto - gfrom + opt.writers - 1) / opt.writers;
        int64_t t0, stamp;

        sleep_until(due[g]);
        t0 = now_ns();
        stamp = grid ? due[g] : t0;
        delay[nround++] = t0 - due[g];
        memcpy(msg, &stamp, 8);
        for (int w = 0; w < opt.writers; w++) {
            int from = gfrom + w * per < gto ? gfrom + w * per : gto;
            int to = from + per < gto ? from + per : gto;

            sl[w] = (slice){from, to, msg};
            if (opt.writers == 1)
                send_slice(&sl[w]);
            else if ((c = pthread_create(&wt[w], NULL, send_slice, &sl[w])) != 0)
                die("pthread_create: %s", strerror(c));
        }
        if (opt.writers > 1)
            for (int w = 0; w < opt.writers; w++)
                pthread_join(wt[w], NULL);
        write_ns_total += (double)(now_ns() - t0);
        next[g]++;
        if (grid)
            due[g] = start + g * opt.phase_ns + next[g] * interval_ns + jitter(g, next[g]);
        else if (interval_ns)
            due[g] = t0 + interval_ns;
        else /* back to back: due as this one ends, not late by its length */
            due[g] = now_ns();
        if (next[g] == opt.rounds) {
            /* Its last: the run lasts until its next round would be due, as before groups. */
            if (due[g] > end)
                end = due[g];
            heap[0] = heap[--nheap];
        }
        sift_down(0);
    }
    sleep_until(end);
    done = true;
    pthread_join(rt, NULL);

    double wall = (double)now_ns() / 1e9 - wall0, cpu = cpu_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;

    qsort(delay, nround, sizeof(*delay), cmp_i64);

    int64_t d50 = delay[(size_t)(0.50 * (double)nround)] / 1000,
            d99 = delay[(size_t)(0.99 * (double)nround)] / 1000, dmax = delay[nround - 1] / 1000;
    double phase_ms = (double)opt.phase_ns / 1e6, jitter_ms = (double)opt.jitter_ns / 1e6;

    printf("fanout_floor: conns=%d size=%d rounds=%d interval_ms=%d writers=%d groups=%d "
           "phase_ms=%g jitter_ms=%g seed=%" PRIu64 " start_delay_p50_us=%" PRId64
           " start_delay_p99_us=%" PRId64 " start_delay_max_us=%" PRId64 " messages=%" PRIu64
           " of %" PRIu64 "\n",
           opt.conns, opt.size, opt.rounds, opt.interval_ms, opt.writers, opt.groups, phase_ms,
           jitter_ms, opt.seed, d50, d99, dmax, nlat, expect);
    printf("  latency from round %s us: p50 %" PRIu64 " p99 %" PRIu64 " p99.9 %" PRIu64
           " max %" PRIu64 "\n",
           grid ? "due time" : "start", pct(0.50), pct(0.99), pct(0.999), lat_max);
    printf("  writers: %.2f ms per round, %.2f us per send (wall); cpu %.2f s in %.2f s "
           "(writers + reader), %.0f sends/s\n",
           write_ns_total / (double)nround / 1e6, write_ns_total / (double)expect / 1e3, cpu, wall,
           (double)expect / wall);
    printf("RESULT conns=%d size=%d writers=%d p50_us=%" PRIu64 " p99_us=%" PRIu64
           " max_us=%" PRIu64 " round_ms=%.3f send_us=%.3f groups=%d phase_ms=%g jitter_ms=%g"
           " start_delay_p50_us=%" PRId64 " start_delay_p99_us=%" PRId64
           " start_delay_max_us=%" PRId64 "\n",
           opt.conns, opt.size, opt.writers, pct(0.50), pct(0.99), lat_max,
           write_ns_total / (double)nround / 1e6, write_ns_total / (double)expect / 1e3, opt.groups,
           phase_ms, jitter_ms, d50, d99, dmax);
    return nlat == expect ? 0 : 1;
}
