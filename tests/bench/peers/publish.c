/*
 * bench_publish - the publisher for the peers of scripts/bench-ws, in C: one
 * thread, one epoll set, non-blocking sockets. It takes a small, steady share
 * of one core, so that the peer it feeds is not starved by the harness (the
 * Node publisher shared the CPUs with the peer and the load tool).
 *
 * Sends --rate delta-shaped messages per second in total, round-robin over the
 * jobs of --jobs-file (one id a line), for --duration seconds:
 *   {"type":"delta","job_id":"<id>","seq":<1,2,...>,"ts":<us since epoch>,
 *    "table":"job_steps","op":"UPDATE","row":{"pad":"xx..."}}
 * padded to --size bytes (600, a jobwire delta's size). seq counts per job;
 * ts is CLOCK_REALTIME when the message is built, just before it is written.
 *
 * Pacing: message k is due at t0 + k / rate (a timerfd armed at the next due
 * time, so the loop never sleeps past one). A due message that cannot be sent
 * (its channel's window, or its connection's bounded output buffer, is full)
 * is held and counted as "behind"; it is built and sent, with a fresh ts, as
 * soon as there is room. After --duration, held and in-flight messages get up
 * to --drain seconds to finish.
 *
 * nchan: POST /pub/<job> to 127.0.0.1:--port, one keep-alive connection per
 *   job, up to --window requests in flight on it (pipelined: nginx answers a
 *   connection's requests in order, so each channel sees its seq in order).
 *   Each answer is read (HTTP/1.1, status 2xx, a Content-Length body); any
 *   other answer, or a closed connection, ends the run with exit status 1.
 * ws: one WebSocket to ws://127.0.0.1:--port/pub (tests/bench/peers/
 *   ws_peer.mjs), each message one masked text frame; --window is not used.
 *
 * Prints "published N in S s (R/s), behind M" on stderr (N messages written,
 * S from the first due time to the last write), then a line of details.
 *
 * Usage: bench_publish --target nchan|ws --port P --jobs-file F --rate N
 *                      --duration S [--size B (600)] [--window N (1)]
 *                      [--drain S (2)]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_JOBS 100000
#define MAX_JOB_LEN 128
#define IN_CAP 8192          /* per connection: an answer's head must fit */
#define WS_OUT (64 * 1024)   /* ws: the one connection's output buffer */
#define HTTP_HEAD_MAX 384    /* "POST /pub/<job> HTTP/1.1 ..." up to the body */
#define WS_HEAD_MAX 14       /* frame header: 2 + 8 length + 4 mask */
#define TIMER_TAG UINT32_MAX /* epoll data of the timerfd */

enum target { T_NCHAN, T_WS };
enum phase { P_CONNECT, P_RUN, P_DRAIN, P_CLOSE };

typedef struct {
    char id[MAX_JOB_LEN + 1];
    uint64_t seq; /* the last seq built */
} job;

typedef struct {
    int fd;
    int jx;         /* nchan: the job of this connection; ws: -1 (all jobs) */
    bool connected; /* TCP connected */
    bool ready;     /* nchan: connected; ws: the 101 read */
    bool want_out;  /* EPOLLOUT registered */
    int inflight;   /* nchan: requests written, answer not read yet */
    uint64_t held;  /* due messages not sent yet: window or buffer full */
    char *out;      /* bytes to write: out[off..len) */
    size_t off, len, cap;
    char *in; /* nchan: the answer being read; ws: the 101 */
    size_t in_len;
    int64_t body_left; /* nchan: body bytes of the current answer to skip; -1: in a head */
} conn;

static struct {
    enum target target;
    int port, window;
    double rate, duration, drain;
    int size;
    const char *jobs_file;
} opt = {T_NCHAN, 0, 1, 0, 0, 2, 600, NULL};

static job *jobs;
static int njobs;
static conn *conns;
static int nconns;
static int ep, tfd;
static enum phase phase = P_CONNECT;
static uint64_t ws_next;     /* ws: the job of the next message built, round-robin */
static uint64_t nsent;       /* messages written to a buffer */
static uint64_t nbehind;     /* due messages held for room */
static uint64_t nanswered;   /* nchan: 2xx answers read */
static int64_t t0_ns;        /* the first message's due time, CLOCK_MONOTONIC */
static int64_t last_send_ns; /* the last message's build time */
static uint32_t rng = 0x9e3779b9u;
static char *body;       /* scratch: one message */
static bool peer_closed; /* ws: the peer closed after our close frame */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("bench_publish: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* ---- jobs and messages ----------------------------------------------------------------- */

static void load_jobs(const char *file)
{
    char l[512];
    FILE *f = fopen(file, "r");

    if (!f)
        die("cannot open --jobs-file %s: %s", file, strerror(errno));
    jobs = calloc(MAX_JOBS, sizeof(*jobs));
    if (!jobs)
        die("out of memory");
    while (fgets(l, sizeof(l), f)) {
        char *s = l + strspn(l, " \t");
        size_t n = strcspn(s, "\r\n \t");

        if (!n)
            continue;
        if (n > MAX_JOB_LEN || njobs == MAX_JOBS)
            die("--jobs-file: at most %d ids of at most %d characters", MAX_JOBS, MAX_JOB_LEN);
        /* nchan's location takes [\w-]+, and the id goes unescaped into JSON and a path. */
        for (size_t i = 0; i < n; i++)
            if (!(s[i] == '-' || s[i] == '_' || (s[i] >= '0' && s[i] <= '9') ||
                  (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
                die("--jobs-file: '%.*s' is not a job id ([A-Za-z0-9_-])", (int)n, s);
        memcpy(jobs[njobs].id, s, n);
        njobs++;
    }
    fclose(f);
    if (!njobs)
        die("--jobs-file %s holds no job id", file);
}

/* One message of job jx into body (next seq, ts now); returns its length. */
static size_t build_message(int jx)
{
    job *j = &jobs[jx];
    int64_t ts_us = clock_ns(CLOCK_REALTIME) / 1000;
    int n = snprintf(body, (size_t)opt.size + 512,
                     "{\"type\":\"delta\",\"job_id\":\"%s\",\"seq\":%" PRIu64 ",\"ts\":%" PRId64
                     ",\"table\":\"job_steps\",\"op\":\"UPDATE\",\"row\":{\"pad\":\"",
                     j->id, ++j->seq, ts_us);
    size_t len = (size_t)n;

    /* Pad to --size; a skeleton longer than that is sent unpadded. */
    if (len + 3 < (size_t)opt.size) {
        memset(body + len, 'x', (size_t)opt.size - 3 - len);
        len = (size_t)opt.size - 3;
    }
    memcpy(body + len, "\"}}", 3);
    last_send_ns = mono_ns();
    return len + 3;
}

/* ---- connections ----------------------------------------------------------------------- */

static void want_out(conn *c, bool on)
{
    struct epoll_event e = {.events = EPOLLIN | (on ? EPOLLOUT : 0u),
                            .data.u32 = (uint32_t)(c - conns)};

    if (c->want_out == on)
        return;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) != 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = on;
}

/* Write what the connection holds, as far as the socket takes it. */
static void flush(conn *c)
{
    while (c->off < c->len) {
        ssize_t w = send(c->fd, c->out + c->off, c->len - c->off, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            die("send to 127.0.0.1:%d: %s", opt.port, strerror(errno));
        }
        c->off += (size_t)w;
    }
    if (c->off == c->len)
        c->off = c->len = 0;
    want_out(c, c->off < c->len);
}

/* Room for n more bytes at the end of the output buffer (moving the rest to its start)? */
static bool room(conn *c, size_t n)
{
    if (c->cap - c->len >= n)
        return true;
    if (c->cap - (c->len - c->off) < n)
        return false;
    memmove(c->out, c->out + c->off, c->len - c->off);
    c->len -= c->off;
    c->off = 0;
    return true;
}

static size_t max_message(void)
{
    return (size_t)opt.size + MAX_JOB_LEN + 200;
}

static bool can_send(conn *c)
{
    if (!c->ready)
        return false;
    if (opt.target == T_NCHAN && c->inflight >= opt.window)
        return false;
    return room(c, max_message() + (opt.target == T_NCHAN ? HTTP_HEAD_MAX : WS_HEAD_MAX));
}

/* Build the connection's next message and append it, as a POST or a frame. */
static void append_message(conn *c)
{
    if (opt.target == T_NCHAN) {
        size_t n = build_message(c->jx);
        int h = snprintf(c->out + c->len, HTTP_HEAD_MAX,
                         "POST /pub/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                         jobs[c->jx].id, n);

        c->len += (size_t)h;
        memcpy(c->out + c->len, body, n);
        c->len += n;
        c->inflight++;
    } else {
        size_t n = build_message((int)(ws_next++ % (uint64_t)njobs)), h = 0;
        unsigned char *p = (unsigned char *)c->out + c->len;
        uint32_t m = next_rand();
        unsigned char mask[4];

        p[h++] = 0x81; /* FIN, text */
        if (n < 126) {
            p[h++] = (unsigned char)(0x80 | n);
        } else if (n < 65536) {
            p[h++] = 0x80 | 126;
            p[h++] = (unsigned char)(n >> 8);
            p[h++] = (unsigned char)n;
        } else {
            p[h++] = 0x80 | 127;
            for (int s = 56; s >= 0; s -= 8)
                p[h++] = (unsigned char)((uint64_t)n >> s);
        }
        memcpy(mask, &m, 4);
        memcpy(p + h, mask, 4);
        h += 4;
        for (size_t i = 0; i < n; i++)
            p[h + i] = (unsigned char)body[i] ^ mask[i & 3];
        c->len += h + n;
    }
    nsent++;
}

/*
 * Send held messages while there is room, and write. Again while a write made room
 * for more: nothing else would wake the connection (an empty buffer waits for no
 * EPOLLOUT). Ends: the buffer is bounded.
 */
static void pump(conn *c)
{
    if (phase == P_CLOSE) /* the close frame is queued: nothing goes after it */
        return;
    do {
        while (c->held > 0 && can_send(c)) {
            append_message(c);
            c->held--;
        }
        flush(c);
    } while (c->held > 0 && can_send(c));
}

/* Message k of the schedule is due now. */
static void dispatch(uint64_t k)
{
    conn *c = &conns[opt.target == T_NCHAN ? (int)(k % (uint64_t)njobs) : 0];

    if (c->held == 0 && can_send(c)) {
        append_message(c);
        flush(c);
        return;
    }
    c->held++; /* after those held before it */
    nbehind++;
    pump(c);
}

static void open_conn(conn *c, int jx)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)opt.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)(c - conns)};
    int one = 1;

    c->jx = jx;
    c->body_left = -1;
    /* nchan: room for a window of requests (16 at most; the socket buffer holds more). */
    if (opt.target == T_NCHAN)
        c->cap =
            (size_t)((opt.window < 16 ? opt.window : 16) + 1) * (max_message() + HTTP_HEAD_MAX);
    else
        c->cap =
            WS_OUT > 2 * (max_message() + WS_HEAD_MAX) ? WS_OUT : 2 * (max_message() + WS_HEAD_MAX);
    c->out = malloc(c->cap);
    c->in = malloc(IN_CAP);
    if (!c->out || !c->in)
        die("out of memory");
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s", strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS)
        die("connect to 127.0.0.1:%d: %s", opt.port, strerror(errno));
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e) != 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = true;
}

/* ws: the opening handshake, queued on the connection. */
static void ws_handshake(conn *c)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char k[18] = {0}; /* 16 random bytes, 2 zero bytes to make 6 groups of 3 */
    char key[25];

    for (int i = 0; i < 16; i++)
        k[i] = (unsigned char)next_rand();
    for (int g = 0; g < 6; g++) {
        uint32_t v = (uint32_t)k[3 * g] << 16 | (uint32_t)k[3 * g + 1] << 8 | k[3 * g + 2];

        for (int s = 0; s < 4; s++)
            key[4 * g + s] = b64[(v >> (18 - 6 * s)) & 63];
    }
    key[22] = key[23] = '='; /* 16 bytes: 22 characters and "==" */
    key[24] = 0;
    c->len += (size_t)snprintf(c->out + c->len, c->cap - c->len,
                               "GET /pub HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                               "Sec-WebSocket-Version: 13\r\n\r\n",
                               opt.port, key);
}

/* The connection became writable: its connect finished, or there is room again. */
static void on_writable(conn *c)
{
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err)
            die("connect to 127.0.0.1:%d: %s", opt.port, strerror(err ? err : errno));
        c->connected = true;
        if (opt.target == T_NCHAN)
            c->ready = true;
        else
            ws_handshake(c);
    }
    pump(c);
}

/* The end of a head (a blank line) in p[0..n), or NULL. */
static const char *head_end(const char *p, size_t n)
{
    return memmem(p, n, "\r\n\r\n", 4);
}

/* The value of header NAME in the head h[0..n) (from the second line on), or NULL. */
static const char *header(const char *h, size_t n, const char *name)
{
    size_t nl = strlen(name);

    for (const char *l = memchr(h, '\n', n); l && (size_t)(l - h) + 1 + nl < n;
         l = memchr(l + 1, '\n', n - (size_t)(l + 1 - h))) {
        if (!strncasecmp(l + 1, name, nl) && l[1 + nl] == ':')
            return l + 2 + nl;
    }
    return NULL;
}

/* nchan: consume the complete answers in c->in; returns the bytes used. */
static size_t nchan_answers(conn *c)
{
    size_t used = 0;

    for (;;) {
        const char *p = c->in + used, *e, *v;
        size_t avail = c->in_len - used;

        if (c->body_left >= 0) {
            size_t take = (size_t)c->body_left < avail ? (size_t)c->body_left : avail;

            used += take;
            c->body_left -= (int64_t)take;
            if (c->body_left > 0)
                break;
            c->body_left = -1;
            c->inflight--;
            nanswered++;
            continue;
        }
        if (!(e = head_end(p, avail))) {
            if (avail == IN_CAP)
                die("an answer's head is over %d bytes", IN_CAP);
            break;
        }
        if (c->inflight <= 0)
            die("an answer to no request: %.*s", (int)strcspn(p, "\r\n"), p);
        if (avail < 12 || memcmp(p, "HTTP/1.1 2", 10) != 0)
            die("POST /pub/%s: %.*s", jobs[c->jx].id, (int)strcspn(p, "\r\n"), p);
        if ((v = header(p, (size_t)(e - p) + 2, "transfer-encoding")) &&
            strncasecmp(v + strspn(v, " \t"), "identity", 8) != 0)
            die("POST /pub/%s: a Transfer-Encoding answer (only Content-Length is read)",
                jobs[c->jx].id);
        v = header(p, (size_t)(e - p) + 2, "content-length");
        c->body_left = v ? strtoll(v, NULL, 10) : 0;
        if (c->body_left < 0)
            die("POST /pub/%s: a bad Content-Length", jobs[c->jx].id);
        used += (size_t)(e - p) + 4;
    }
    return used;
}

/* The connection has bytes to read (or was closed). */
static void on_readable(conn *c)
{
    for (;;) {
        ssize_t r;

        if (c->in_len == IN_CAP) /* ws, after the 101: nothing the peer sends is kept */
            c->in_len = 0;
        r = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
        if (r == 0) {
            if (phase == P_CLOSE) {
                peer_closed = true;
                return;
            }
            die("127.0.0.1:%d closed the connection%s", opt.port,
                c->inflight ? " with requests in flight" : "");
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            die("recv from 127.0.0.1:%d: %s", opt.port, strerror(errno));
        }
        c->in_len += (size_t)r;
        if (opt.target == T_NCHAN) {
            size_t used = nchan_answers(c);

            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
        } else if (!c->ready) {
            const char *e = head_end(c->in, c->in_len);

            if (!e && c->in_len == IN_CAP)
                die("the WebSocket handshake's answer is over %d bytes", IN_CAP);
            if (!e)
                continue;
            if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0)
                die("GET /pub: %.*s", (int)strcspn(c->in, "\r\n"), c->in);
            c->ready = true;
            c->in_len = 0; /* frames from the peer (none expected) are read and dropped */
        } else {
            c->in_len = 0;
        }
    }
    pump(c);
}

/* Every connection has nothing held, in flight or unwritten. */
static bool idle(void)
{
    for (int i = 0; i < nconns; i++)
        if (conns[i].held || conns[i].inflight || conns[i].off < conns[i].len)
            return false;
    return true;
}

static void arm(int64_t at_ns)
{
    struct itimerspec its = {.it_value = {at_ns / 1000000000, at_ns % 1000000000}};

    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        die("timerfd_settime: %s", strerror(errno));
}

static void usage(FILE *f)
{
    fputs("Usage: bench_publish --target nchan|ws --port P --jobs-file F --rate N --duration S\n"
          "  [--size B (600)] [--window N (1)] [--drain S (2)]\n"
          "nchan: POST /pub/<job> on one keep-alive connection per job, up to --window in\n"
          "flight on each; ws: one WebSocket to /pub, one text frame per message.\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"target", 1, 0, 't'},    {"port", 1, 0, 'p'},
                                       {"jobs-file", 1, 0, 'f'}, {"rate", 1, 0, 'r'},
                                       {"duration", 1, 0, 'd'},  {"size", 1, 0, 's'},
                                       {"window", 1, 0, 'w'},    {"drain", 1, 0, 'D'},
                                       {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
    struct epoll_event ev[64];
    struct rlimit rl;
    struct rusage ru;
    uint64_t total, k = 0, unsent = 0;
    int64_t end_ns = 0, deadline = 0, armed = -1;
    int c;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 't':
            if (!strcmp(optarg, "nchan"))
                opt.target = T_NCHAN;
            else if (!strcmp(optarg, "ws"))
                opt.target = T_WS;
            else
                die("--target must be nchan or ws (got '%s')", optarg);
            break;
        case 'p': opt.port = atoi(optarg); break;
        case 'f': opt.jobs_file = optarg; break;
        case 'r': opt.rate = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 's': opt.size = atoi(optarg); break;
        case 'w': opt.window = atoi(optarg); break;
        case 'D': opt.drain = atof(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || opt.port < 1 || opt.port > 65535 || !opt.jobs_file || !(opt.rate > 0) ||
        !(opt.duration > 0) || opt.rate * opt.duration > 1e9 || opt.size < 1 ||
        opt.size > 1 << 20 || opt.window < 1 || opt.window > 1024 || !(opt.drain >= 0)) {
        usage(stderr);
        fputs("(port 1..65535, rate > 0, duration > 0, size 1..1 MiB, window 1..1024)\n", stderr);
        return 2;
    }
    load_jobs(opt.jobs_file);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    rng ^= (uint32_t)clock_ns(CLOCK_REALTIME) ^ (uint32_t)getpid() << 16;
    if (!rng) /* xorshift stays at 0 */
        rng = 1;
    if (!(body = malloc((size_t)opt.size + 512)))
        die("out of memory");
    ep = epoll_create1(EPOLL_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep < 0 || tfd < 0)
        die("epoll/timerfd: %s", strerror(errno));
    {
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = TIMER_TAG};

        if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e) != 0)
            die("epoll_ctl: %s", strerror(errno));
    }
    nconns = opt.target == T_NCHAN ? njobs : 1;
    if (!(conns = calloc((size_t)nconns, sizeof(*conns))))
        die("out of memory");
    for (int i = 0; i < nconns; i++)
        open_conn(&conns[i], opt.target == T_NCHAN ? i : -1);
    total = (uint64_t)(opt.rate * opt.duration + 0.5);
    deadline = mono_ns() + 10 * (int64_t)1000000000; /* to connect */
    arm(deadline);

    for (;;) {
        int64_t now = mono_ns();

        if (phase == P_CONNECT) {
            int ready = 0;

            for (int i = 0; i < nconns; i++)
                ready += conns[i].ready;
            if (ready == nconns) {
                phase = P_RUN;
                t0_ns = now;
            } else if (now >= deadline) {
                die("%d of %d connection(s) to 127.0.0.1:%d not ready after 10 s", nconns - ready,
                    nconns, opt.port);
            }
        }
        if (phase == P_RUN) {
            /* Message k is due at t0 + k / rate: send every one that is due by now. */
            while (k < total && t0_ns + (int64_t)((double)k * 1e9 / opt.rate) <= now)
                dispatch(k++);
            if (k == total) {
                phase = P_DRAIN;
                end_ns = now;
                deadline = now + (int64_t)(opt.drain * 1e9);
            } else if (armed != t0_ns + (int64_t)((double)k * 1e9 / opt.rate)) {
                armed = t0_ns + (int64_t)((double)k * 1e9 / opt.rate);
                arm(armed);
            }
        }
        if (phase == P_DRAIN && (idle() || now >= deadline)) {
            for (int i = 0; i < nconns; i++)
                unsent += conns[i].held;
            if (opt.target == T_NCHAN || conns[0].off < conns[0].len)
                break;
            /* ws: a close frame (1000), then wait a little for the peer's close. */
            phase = P_CLOSE;
            {
                conn *w = &conns[0];
                unsigned char f[8] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8};

                memcpy(w->out + w->len, f, sizeof(f));
                w->len += sizeof(f);
                flush(w);
                shutdown(w->fd, SHUT_WR);
            }
            deadline = now + 500000000;
        }
        if (phase == P_CLOSE && (peer_closed || now >= deadline))
            break;
        if (phase != P_RUN && armed != deadline) {
            armed = deadline;
            arm(armed);
        }

        int n = epoll_wait(ep, ev, 64, -1);

        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint32_t tag = ev[i].data.u32;
            conn *cn;

            if (tag == TIMER_TAG) {
                uint64_t x;

                if (read(tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
                    die("timerfd read: %s", strerror(errno));
                continue;
            }
            cn = &conns[tag];
            if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (!cn->connected && (ev[i].events & (EPOLLHUP | EPOLLERR)))
                    on_writable(cn); /* reports the connect's error */
                on_readable(cn);
            }
            if (ev[i].events & EPOLLOUT)
                on_writable(cn);
        }
    }

    double span = (double)((last_send_ns > t0_ns ? last_send_ns : end_ns) - t0_ns) / 1e9;

    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "published %" PRIu64 " in %.2f s (%.0f/s), behind %" PRIu64 "\n", nsent, span,
            span > 0 ? (double)nsent / span : 0, nbehind);
    fprintf(stderr,
            "bench_publish: target=%s jobs=%d due=%" PRIu64 " sent=%" PRIu64 " behind=%" PRIu64
            " unsent_after_drain=%" PRIu64 " answered=%" PRIu64 " window=%d size=%d cpu_s=%.2f\n",
            opt.target == T_NCHAN ? "nchan" : "ws", njobs, total, nsent, nbehind, unsent, nanswered,
            opt.window, opt.size,
            (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);
    return 0;
}
