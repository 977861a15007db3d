/*
 * ws_swarm - a WebSocket client swarm that measures fan-out delivery.
 *
 * One thread, one epoll set, thousands of non-blocking connections. Every
 * connection subscribes to one job (or, with --create-jobs, to one job of
 * each wave of jobs this tool creates through POST /api/jobs). Each server
 * frame may carry several '\n'-separated messages; every message is counted,
 * and from each delta only "job_id", "seq" and "ts" are read with a small
 * scanner (no JSON library), so the tool stays cheap per message.
 *
 * Measured: deliveries/s, delivery latency = receive time (CLOCK_REALTIME, us,
 * taken once per read) - the delta's "ts" (p50/p99/p99.9/max), missing and
 * duplicate seqs per connection and job (a snapshot sets the baseline; a
 * second snapshot of the same job is a resync), and with --server-pid the
 * server's VmRSS before connecting and once every connection is subscribed
 * and idle (RSS per idle subscribed connection), plus the server's CPU.
 * Per delta (jobwire mode): when its first and its last watcher got it, from
 * its ts (p50/p99 over the deltas), which tells a round that started late from
 * one that took long.
 * Change-to-arrival: the same from ts, but to when the bytes reached this
 * tool's socket (the kernel's receive timestamp, SO_TIMESTAMPNS, of the last
 * packet a read took: never earlier than the message's own), not to when the
 * tool read them. The difference is the tool's own lag: on a machine whose
 * CPUs the server and the tool share, a read waits while the tool handles
 * thousands of other messages.
 *
 * Modes:
 *   jobwire  GET /ws?token=T, subprotocol jobwire.v1, {"type":"subscribe"}.
 *   nchan    the URL's "{job}" is replaced by the job id (one channel per
 *            job); messages are the publisher's delta-shaped lines.
 *   plain    the same, for the Node ws peer (tests/bench/peers/).
 *   In nchan/plain the baseline is seq 0: the publisher starts at seq 1 after
 *   every connection is ready, so a lost first message counts as missing.
 *   supabase  jobwire's Supabase Realtime endpoint: GET PATH?apikey=T&vsn=1.0.0
 *            (--url ws://HOST:PORT/realtime/v1/websocket, no subprotocol; the
 *            admin key as apikey stands for the admin, who sees every job). Per
 *            job one channel, topic "realtime:job-<id>": a phx_join (vsn 1.0.0
 *            objects, access_token = T as supabase-js sends it when signed out)
 *            binding * on job_runs (id=eq), job_steps and otp_requests
 *            (job_run_id=eq); a phx_leave when the job is done with; a
 *            heartbeat every 25 s. One Phoenix message per frame, no '\n'
 *            framing: a frame whole in one read is scanned in place, one that
 *            spans reads is gathered first. From a postgres_changes event the
 *            topic (the job), "commit_timestamp" (head) and jobwire's "seq"
 *            (tail) are read; from a job_runs event in --jobs-at-once also the
 *            record's "status".
 *            Latency: only commit-to-client (commit_timestamp is the delta's
 *            cts, to the microsecond). An event carries no change time: the
 *            record's updated_at is the row's last touch, not the delta's ts
 *            (a job row is emitted at the batch's flush, and otp_requests has
 *            none), so the ts figures are -1 in this mode.
 *            Baseline: the first event a channel gets, seq - 1. A job exists
 *            (and has its first deltas) before anyone can join it, Supabase
 *            sends no history and the join reply no seq, so a 0 baseline
 *            would count what came before the join as missing; the price is
 *            that losing a channel's very first events cannot be seen, every
 *            later gap can. A phx_error (the server shed the channel's queue)
 *            is counted, and the channel joins again as supabase-js would;
 *            its next event sets a new baseline, and what lies between is
 *            counted as a resync (resync_skipped), not as missing.
 *
 * Soak mode (jobwire, scripts/soak): --jobs-at-once N keeps N jobs running
 * (N slots; when a subscriber sees a slot's job row turn completed, failed or
 * cancelled, a creator thread makes the slot's next job, and the slot's
 * connections subscribe to it and unsubscribe from the finished one: the
 * subscribes 64 per loop turn, between reads, as separate clients would send
 * them, rather than a slot's 2,000 in one go with no read meanwhile);
 * --churn PCT closes PCT% of the connections at random every second (half
 * with a close frame, half without) and reconnects them at once, resuming
 * every subscription with "since" = the last seq seen, so a resumed stream is
 * checked for gaps and duplicates across reconnects like a live one. A
 * connection the server closed, or that failed to connect, is reconnected a
 * second later the same way, and counted. --report S prints a TICK line of
 * running counters every S seconds. Replayed deltas (between a resume and its
 * ack) are counted but kept out of the latency figures.
 *
 * Two nodes (jobwire, issue 14): --url-b sends every second connection of a
 * job's subscribers (odd i % subs-per-job) to another node of the same
 * cluster; jobs are still created on --url's node. The RESULT line then
 * splits deliveries, latency (from ts and from cts), missing and duplicates
 * by node: a_* for --url's connections, b_* for --url-b's; --server-pid-b
 * adds the second node's CPU. --b-stagger-ms D (with --create-jobs) holds all
 * but the first of a new job's --url-b subscribes back for D ms, so that they
 * find the job mirrored on that node instead of each reading PostgreSQL.
 *
 * Stalled readers (--stall PCT): connections with i % 100 < PCT stop reading
 * and sending once their first subscription is answered (no new subscription,
 * no heartbeat), as a frozen tab or a client behind a dead link whose socket
 * stays open: the server's queues for them fill. They are left out of
 * the missing counts (tail_missing included); the server's RSS is sampled every 200 ms from the
 * start and its peak reported (rss_peak_kb).
 *
 * "Joined" RSS: once every connection's first subscription is answered (its
 * snapshot in jobwire mode, its phx_reply ok in supabase mode), the server's
 * VmRSS is read once more (rss_joined_kb; per connection against the start).
 *
 * Not done: Sec-WebSocket-Accept is not checked (the 101 status is); server
 * frames must be unmasked (RFC 6455); permessage-deflate is not offered.
 *
 * Usage: ws_swarm --url ws://127.0.0.1:PORT/ws [--mode jobwire|nchan|plain|supabase]
 *        [--token T] (--job ID | --jobs-file F | --create-jobs W)
 *        [--subs-per-job N] [--duration S] [--ramp CONN_PER_S]
 *        [--server-pid PID] [--ready-file F] [--label NAME]
 *        [--wave-interval-ms MS] [--drain S] [--tx N] [--creators N]
 *        [--jobs-at-once N] [--jobs-ramp S] [--churn PCT] [--report S]
 *        [--url-b ws://127.0.0.1:PORT/ws] [--server-pid-b PID] [--slice-us US]
 *
 * Its own time slice (--slice-us, Linux 6.12 and later): the tool stands in
 * for clients on other machines, yet here it shares a CPU with whatever the
 * scheduler puts beside it, PostgreSQL's backends among them. It reads for
 * milliseconds on end, and with the default slice a backend woken on its CPU
 * waits until the tool's slice runs out, up to a scheduler tick (4 ms): the
 * server's commits grow a tail that is the harness's, not the server's. A
 * task whose slice is shorter than the running one's preempts it as it wakes,
 * so a long slice here (20,000 us, say) lets them in at once; the tool then
 * waits for them, and for anything else there (docs/bench-ws.md). The
 * RESULT line's slice_us is what the kernel reports afterwards: 0 when not
 * asked, or when it keeps no slice per task (before 6.12 the request is
 * accepted and ignored).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
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
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HEAD 320 /* bytes of a line read: type, job_id, seq, ts; a job row's status */
#define TAIL 192 /* bytes of a split line's end kept: a snapshot's seq, type, job_id */
#define NSUB 16  /* jobs one connection follows at once (ring by wave) */
#define RXBUF (1 << 20)
#define HS_MAX 2048
#define NBUCKET (64 + 40 * 64)

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSED };
enum { MODE_JOBWIRE, MODE_NCHAN, MODE_PLAIN, MODE_SUPABASE };
/* sub.resuming in supabase mode: joined again after a gap; the next event sets the baseline. */
#define SB_REJOINED 2
#define SB_MAX (1 << 20) /* a supabase message longer than this is cut (and counted stray) */
#define HEARTBEAT_S 25

typedef struct {
    int32_t job;      /* index in jobs[], -1 free */
    uint8_t resuming; /* subscribed with since: deltas until the ack are replays */
    uint8_t queued;   /* --jobs-at-once: its subscribe waits its turn (send_queued) */
    uint32_t jref;    /* supabase: the ref of its phx_join (its leave's join_ref) */
    int64_t last;
} sub;

typedef struct {
    int fd;
    uint8_t state, in_hdr, fhlen, op, msg_op, fin, partial, ready;
    uint8_t node; /* 0: --url, 1: --url-b */
    uint8_t fh[14];
    uint8_t ctl[126];
    uint8_t ctllen;
    uint16_t linelen, taillen;
    uint64_t remain;
    char *hs; /* handshake response until complete */
    uint16_t hslen;
    uint32_t slot; /* which job of a wave (or of the job list) */
    uint32_t ref;  /* supabase: the last ref this socket sent */
    sub subs[NSUB];
    char line[HEAD];
    char tail[TAIL];
    /* Kept across reconnects (after the part conn_open_as clears). */
    uint8_t joined;  /* its first subscription was answered (the "joined" RSS) */
    uint8_t stalled; /* --stall: reads nothing any more */
    char *msg;       /* supabase: a message that spans reads, gathered */
    uint32_t mlen, mcap;
} conn;

/* One delta's live deliveries (jobwire mode): the first and last receive time. */
typedef struct {
    int64_t ts, first, last;
} dtime;

#define DTIME_MAX_SEQ 1048576 /* seqs timed per job; later ones are not */

typedef struct {
    char id[40];
    dtime *times; /* indexed by seq, ntimes of them (grown on demand) */
    int32_t ntimes;
    int32_t wave, slot;
    int64_t base; /* lowest baseline seq any connection started from; -1 none */
    int64_t max;  /* highest seq seen */
    uint8_t done; /* its job row was seen completed, failed or cancelled */
} job;

static struct {
    /* options */
    int mode;
    char host[64], path[512], token[256], label[64], ready_file[512];
    int port;
    char host_b[64];
    int port_b, server_pid_b, b_stagger_ms;
    /* --b-stagger-ms: subscribes of --url-b connections held back, due in order */
    struct held {
        int conn, job;
        int64_t due;
    } * held;
    int nheld, capheld, heldpos;
    int subs_per_job, ramp, server_pid, create, wave_ms, tx, creators;
    double duration, drain;
    /* jobs */
    job *jobs;
    int njobs, capjobs, nslots;
    /* connections */
    conn *conns;
    int nconns, opened, nready, nfailed, nclosed, ep, efd;
    /* counters */
    uint64_t msgs, deliveries, bytes, frames, snapshots, resyncs, resync_skipped, missing, dups,
        tail_missing, errors, stray, hellos, others;
    int64_t first_rx, last_rx;
    uint64_t hist[NBUCKET]; /* receive time - ts (the change) */
    int64_t lat_max;
    uint64_t chist[NBUCKET]; /* receive time - cts (the commit), for deltas that carry it */
    int64_t clat_max;
    uint64_t ahist[NBUCKET]; /* the kernel's arrival time - ts, for reads that carried one */
    int64_t alat_max;
    uint64_t narrive;
    uint64_t ncommit;
    /* the same split by node (c->node) */
    uint64_t nhist[2][NBUCKET], nchist[2][NBUCKET], ndeliv[2], nreplayed[2], ncommits[2],
        nmissing[2], ndups[2], ntail[2], nerrors[2];
    int64_t nlat_max[2], nclat_max[2];
    int nconns_node[2];
    int close_codes[5000];
    /* --jobs-at-once: subscribes to a slot's next job, sent a chunk per loop turn */
    struct qsub {
        int32_t conn, k, job;
    } * squeue;
    size_t sq_head, sq_len, sq_cap;
    /* job creation (jobwire --create-jobs, --jobs-at-once) */
    pthread_mutex_t mu;
    pthread_cond_t want_cv;
    job *pending;
    int npending, cappending;
    volatile int stop_create, create_failed;
    int64_t run_start;
    /* soak: --jobs-at-once, --churn, --report */
    int atonce;
    double churn, report, jobs_ramp;
    int *want; /* slots waiting for their next job (under mu) */
    int nwant;
    int32_t *slot_gen; /* jobs made for each slot so far */
    int nopen;
    uint64_t replayed, churned, reconnects, acks, http_errors, jobs_created, jobs_done[3];
    /* samples in hist (from ts); the "joined" RSS */
    uint64_t nlat;
    int njoined;
    long rss_joined;
    long rss_peak;
    int stall_pct, nstalled;
    /* supabase */
    uint64_t joins_ok, join_errors, channel_errors, heartbeats, heartbeat_replies;
} S;

static int soak_mode(void)
{
    return S.atonce > 0 || S.churn > 0;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("ws_swarm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- latency histogram: 64 sub-buckets per power of two (~1.5% resolution) ---- */

static int bucket_of(int64_t v)
{
    int e;

    if (v < 64)
        return v < 0 ? 0 : (int)v;
    e = 63 - __builtin_clzll((uint64_t)v);
    if (e > 45)
        e = 45;
    return 64 + (e - 6) * 64 + (int)((v >> (e - 6)) & 63);
}

static int64_t value_of(int b)
{
    int e, m;

    if (b < 64)
        return b;
    e = (b - 64) / 64 + 6;
    m = (b - 64) % 64;
    return ((int64_t)(64 + m) << (e - 6)) + ((int64_t)1 << (e - 6)) / 2;
}

static double pct_of(const uint64_t *hist, int64_t max, uint64_t total, double q)
{
    uint64_t want = (uint64_t)((double)total * q), acc = 0;

    if (!total)
        return 0;
    for (int b = 0; b < NBUCKET; b++) {
        acc += hist[b];
        if (acc > want)
            return (double)(value_of(b) < max ? value_of(b) : max) / 1000.0;
    }
    return (double)max / 1000.0;
}

static double pct_ms(uint64_t total, double q)
{
    return pct_of(S.hist, S.lat_max, total, q);
}

static double cpct_ms(double q)
{
    return pct_of(S.chist, S.clat_max, S.ncommit, q);
}

/* ---- /proc ---------------------------------------------------------------------- */

static long proc_rss_kb(int pid)
{
    char p[64], l[256];
    long kb = -1;
    FILE *f;

    if (pid <= 0)
        return -1;
    snprintf(p, sizeof(p), "/proc/%d/status", pid);
    if (!(f = fopen(p, "r")))
        return -1;
    while (fgets(l, sizeof(l), f))
        if (sscanf(l, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* utime + stime of pid in seconds; -1 when unreadable. */
static double proc_cpu_s(int pid)
{
    char p[64], buf[1024], *s;
    unsigned long ut, st;
    FILE *f;
    size_t n;

    if (pid <= 0)
        return -1;
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    if (!(f = fopen(p, "r")))
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    if (!(s = strrchr(buf, ')')))
        return -1;
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ---- jobs ------------------------------------------------------------------------- */

static int job_add(const char *id, int wave, int slot)
{
    job *j;

    if (S.njobs == S.capjobs) {
        S.capjobs = S.capjobs ? S.capjobs * 2 : 64;
        S.jobs = xrealloc(S.jobs, (size_t)S.capjobs * sizeof(job));
    }
    j = &S.jobs[S.njobs];
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->wave = wave;
    j->slot = slot;
    j->base = -1;
    j->max = -1;
    return S.njobs++;
}

/* ---- sending (client frames are masked, RFC 6455 5.3) ------------------------------ */

static uint32_t rng_state = 0x9e3779b9u;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void conn_close(conn *c);

static void send_all(conn *c, const void *p, size_t n)
{
    ssize_t w;

    if (c->stalled) /* frozen: sends nothing either */
        return;
    w = send(c->fd, p, n, MSG_NOSIGNAL);

    /* Small frames into an empty socket buffer: a short write means trouble. */
    if (w != (ssize_t)n) {
        fprintf(stderr, "ws_swarm: send failed on a connection: %s\n",
                w < 0 ? strerror(errno) : "short write");
        conn_close(c);
    }
}

static void send_frame(conn *c, int opcode, const char *p, size_t n)
{
    unsigned char f[14 + 2048];
    uint32_t mk = rng();
    size_t h = 0;

    if (n > 2048)
        die("client frame too long (%zu)", n);
    f[h++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        f[h++] = (unsigned char)(0x80 | n);
    } else {
        f[h++] = 0x80 | 126;
        f[h++] = (unsigned char)(n >> 8);
        f[h++] = (unsigned char)n;
    }
    memcpy(f + h, &mk, 4);
    for (size_t i = 0; i < n; i++)
        f[h + 4 + i] = (unsigned char)p[i] ^ f[h + (i & 3)];
    send_all(c, f, h + 4 + n);
}

/*
 * supabase: u's channel joins (or leaves) its job's topic. The join binds
 * every change of the job's rows in the three tables, as an app following a
 * job would; access_token is the apikey, as supabase-js sends it signed out.
 */
static void sb_send(conn *c, sub *u, bool leave)
{
    const char *id = S.jobs[u->job].id;
    char m[1600], tok[300] = "";
    int n;

    c->ref++;
    if (leave) {
        n = snprintf(m, sizeof(m),
                     "{\"topic\":\"realtime:job-%s\",\"event\":\"phx_leave\",\"payload\":{},"
                     "\"ref\":\"%" PRIu32 "\",\"join_ref\":\"%" PRIu32 "\"}",
                     id, c->ref, u->jref);
        send_frame(c, 1, m, (size_t)n);
        return;
    }
    u->jref = c->ref;
    if (S.token[0])
        snprintf(tok, sizeof(tok), ",\"access_token\":\"%s\"", S.token);
    n = snprintf(
        m, sizeof(m),
        "{\"topic\":\"realtime:job-%s\",\"event\":\"phx_join\",\"payload\":{\"config\":"
        "{\"broadcast\":{\"ack\":false,\"self\":false},\"presence\":{\"key\":\"\"},"
        "\"postgres_changes\":["
        "{\"event\":\"*\",\"schema\":\"public\",\"table\":\"job_runs\",\"filter\":\"id=eq.%s\"},"
        "{\"event\":\"*\",\"schema\":\"public\",\"table\":\"job_steps\","
        "\"filter\":\"job_run_id=eq.%s\"},"
        "{\"event\":\"*\",\"schema\":\"public\",\"table\":\"otp_requests\","
        "\"filter\":\"job_run_id=eq.%s\"}]}%s},"
        "\"ref\":\"%" PRIu32 "\",\"join_ref\":\"%" PRIu32 "\"}",
        id, id, id, id, tok, c->ref, c->ref);
    send_frame(c, 1, m, (size_t)n);
}

/* supabase: {"topic":"phoenix","event":"heartbeat"}, as supabase-js sends every 25 s. */
static void sb_heartbeat(conn *c)
{
    char m[100];
    int n = snprintf(m, sizeof(m),
                     "{\"topic\":\"phoenix\",\"event\":\"heartbeat\",\"payload\":{},"
                     "\"ref\":\"%" PRIu32 "\"}",
                     ++c->ref);

    S.heartbeats++;
    send_frame(c, 1, m, (size_t)n);
}

/* Subscribes c's subscription u to its job or unsubscribes it (supabase: joins, leaves). */
static void send_subscribe(conn *c, sub *u, bool unsub)
{
    char m[160];
    int n;

    if (S.mode == MODE_SUPABASE) {
        sb_send(c, u, unsub);
        return;
    }
    n = snprintf(m, sizeof(m), "{\"type\":\"%s\",\"job_id\":\"%s\"}",
                 unsub ? "unsubscribe" : "subscribe", S.jobs[u->job].id);
    send_frame(c, 1, m, (size_t)n);
}

/*
 * Subscribes c's subscription k: a fresh one plainly (a snapshot answers), one
 * that has seen a seq with since = that seq, so the server replays what came
 * meanwhile and acks (ref k); until the ack its deltas are replays.
 */
static void send_resume(conn *c, int k)
{
    sub *u = &c->subs[k];
    char m[200];
    int n;

    u->queued = 0; /* however it gets subscribed, a queued subscribe is not wanted */
    if (S.mode == MODE_SUPABASE) { /* no replay: a join, and a new baseline after a gap */
        if (u->last >= 0)
            u->resuming = SB_REJOINED;
        send_subscribe(c, u, false);
        return;
    }
    if (u->last < 0) {
        send_subscribe(c, u, false);
        return;
    }
    n = snprintf(m, sizeof(m),
                 "{\"type\":\"subscribe\",\"job_id\":\"%s\",\"since\":%" PRId64 ",\"ref\":%d}",
                 S.jobs[u->job].id, u->last, k);
    u->resuming = 1;
    send_frame(c, 1, m, (size_t)n);
}

/* ---- receiving ------------------------------------------------------------------- */

static int64_t rx_now;     /* CLOCK_REALTIME at the current read */
static int64_t rx_arrived; /* the kernel's receive timestamp of its last packet, 0: none */

/* The last occurrence of key in [s, e), or NULL. */
static const char *last_of(const char *s, const char *e, const char *key, size_t klen)
{
    const char *hit = NULL, *p;

    while ((p = memmem(s, (size_t)(e - s), key, klen))) {
        hit = p;
        s = p + 1;
    }
    return hit;
}

static int64_t int_after(const char *p, const char *e)
{
    int64_t v = 0;

    if (!p || p >= e || *p < '0' || *p > '9')
        return -1;
    for (; p < e && *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (*p - '0');
    return v;
}

/* The subscription of c whose job id starts at p (after "job_id":"), or NULL. */
static sub *find_sub(conn *c, const char *p, const char *e)
{
    const char *q;

    if (!p || !(q = memchr(p, '"', (size_t)(e - p))))
        return NULL;
    for (int i = 0; i < NSUB; i++) {
        sub *u = &c->subs[i];
        if (u->job >= 0 && strlen(S.jobs[u->job].id) == (size_t)(q - p) &&
            memcmp(S.jobs[u->job].id, p, (size_t)(q - p)) == 0)
            return u;
    }
    return NULL;
}

/*
 * A job row's status in [s, e) after the marker (a delta of job_runs, or a
 * snapshot's "job"): 0 completed, 1 failed, 2 cancelled, -1 running or not
 * there. The engine writes "status" fourth in a job row, PostgreSQL's jsonb
 * second: within HEAD either way.
 */
static int terminal_status(const char *s, const char *e, const char *marker)
{
    static const char *const names[3] = {"completed\"", "failed\"", "cancelled\""};
    const char *t = memmem(s, (size_t)(e - s), marker, strlen(marker)), *p;

    if (!t || !(p = memmem(t, (size_t)(e - t), "\"status\":\"", 10)))
        return -1;
    p += 10;
    for (int i = 0; i < 3; i++)
        if ((size_t)(e - p) >= strlen(names[i]) && memcmp(p, names[i], strlen(names[i])) == 0)
            return i;
    return -1;
}

/* Slot k wants its next job (--jobs-at-once): a creator thread makes it. */
static void want_job(int slot)
{
    pthread_mutex_lock(&S.mu);
    S.want[S.nwant++] = slot; /* at most one outstanding per slot: S.atonce entries */
    pthread_cond_signal(&S.want_cv);
    pthread_mutex_unlock(&S.mu);
}

static void sub_retire(const conn *c, sub *u);

/*
 * c saw its job u finish (a terminal job row, as a delta or in a snapshot):
 * the first to see it asks for the slot's next job; c leaves the job.
 */
static void job_finished(conn *c, sub *u, int st)
{
    job *j = &S.jobs[u->job];

    if (!j->done) {
        j->done = 1;
        S.jobs_done[st]++;
        if (!S.stop_create)
            want_job(j->slot);
    }
    send_subscribe(c, u, true);
    sub_retire(c, u);
}

/*
 * GCC 12 with -fsanitize=undefined inlines on_delta into on_line and then warns
 * that memmem may get a NULL haystack (it cannot: a line is never NULL).
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnonnull"

/*
 * c's subscription was answered (a snapshot, a phx_reply ok): the first time
 * for every connection, the server's RSS is read ("joined").
 */
static void note_joined(conn *c)
{
    if (c->joined)
        return;
    c->joined = 1;
    if ((int)((c - S.conns) % 100) < S.stall_pct) {
        struct epoll_event ev = {.events = 0, .data.u32 = (uint32_t)(c - S.conns)};

        c->stalled = 1;
        S.nstalled++;
        epoll_ctl(S.ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (++S.njoined + S.nfailed >= S.nconns && S.rss_joined < 0)
        S.rss_joined = proc_rss_kb(S.server_pid);
}

/* One delivery of c: the rates' span and the per-node count. */
static void count_delivery(conn *c)
{
    S.deliveries++;
    S.ndeliv[c->node]++;
    if (!S.first_rx)
        S.first_rx = rx_now;
    S.last_rx = rx_now;
}

/* Change-to-client latency: the receive time - the delta's ts (us). */
static void count_ts(conn *c, int64_t ts)
{
    int64_t lat = rx_now - ts < 0 ? 0 : rx_now - ts;

    S.hist[bucket_of(lat)]++;
    S.nhist[c->node][bucket_of(lat)]++;
    S.nlat++;
    if (lat > S.lat_max)
        S.lat_max = lat;
    if (lat > S.nlat_max[c->node])
        S.nlat_max[c->node] = lat;
    if (rx_arrived) {
        int64_t alat = rx_arrived - ts < 0 ? 0 : rx_arrived - ts;

        S.ahist[bucket_of(alat)]++;
        S.narrive++;
        if (alat > S.alat_max)
            S.alat_max = alat;
    }
}

/* Job j's delta seq, received live now (its ts): the first and last receive so far. */
static void time_delta(job *j, int64_t seq, int64_t ts)
{
    dtime *t;

    if (seq < 0 || seq >= DTIME_MAX_SEQ)
        return;
    if (seq >= j->ntimes) {
        int32_t n = j->ntimes ? j->ntimes : 64;

        while (n <= seq)
            n *= 2;
        j->times = xrealloc(j->times, (size_t)n * sizeof(*j->times));
        memset(j->times + j->ntimes, 0, (size_t)(n - j->ntimes) * sizeof(*j->times));
        j->ntimes = n;
    }
    t = &j->times[seq];
    if (!t->first) {
        t->ts = ts;
        t->first = rx_now;
    }
    t->last = rx_now;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/*
 * Over every delta received live: the p50 and p99 of (first receive - ts) and
 * of (last receive - ts), in ms (-1 without any); how many deltas.
 */
static size_t delta_times(double *first50, double *first99, double *last50, double *last99)
{
    size_t n = 0, k = 0;
    int64_t *f, *l;

    for (int i = 0; i < S.njobs; i++)
        for (int32_t s = 0; s < S.jobs[i].ntimes; s++)
            n += S.jobs[i].times[s].first != 0;
    *first50 = *first99 = *last50 = *last99 = -1;
    if (!n)
        return 0;
    f = xrealloc(NULL, n * sizeof(*f));
    l = xrealloc(NULL, n * sizeof(*l));
    for (int i = 0; i < S.njobs; i++)
        for (int32_t s = 0; s < S.jobs[i].ntimes; s++) {
            const dtime *t = &S.jobs[i].times[s];

            if (t->first) {
                f[k] = t->first - t->ts;
                l[k++] = t->last - t->ts;
            }
        }
    qsort(f, n, sizeof(*f), cmp_i64);
    qsort(l, n, sizeof(*l), cmp_i64);
    *first50 = (double)f[(n - 1) / 2] / 1000.0;
    *first99 = (double)f[(size_t)((double)(n - 1) * 0.99)] / 1000.0;
    *last50 = (double)l[(n - 1) / 2] / 1000.0;
    *last99 = (double)l[(size_t)((double)(n - 1) * 0.99)] / 1000.0;
    free(f);
    free(l);
    return n;
}

/* Commit-to-client latency: the receive time - the delta's cts (us). */
static void count_cts(conn *c, int64_t cts)
{
    int64_t clat = rx_now - cts < 0 ? 0 : rx_now - cts;

    S.chist[bucket_of(clat)]++;
    S.nchist[c->node][bucket_of(clat)]++;
    S.ncommit++;
    S.ncommits[c->node]++;
    if (clat > S.clat_max)
        S.clat_max = clat;
    if (clat > S.nclat_max[c->node])
        S.nclat_max[c->node] = clat;
}

/* seq against what subscription u saw: missing, duplicate, or next. */
static void count_seq(conn *c, sub *u, job *j, int64_t seq)
{
    if (seq > j->max)
        j->max = seq;
    if (u->last < 0) { /* no baseline yet: jobwire without a snapshot, a supabase channel */
        u->last = seq;
        if (j->base < 0 || seq - 1 < j->base)
            j->base = seq - 1;
    } else if (seq == u->last + 1) {
        u->last = seq;
    } else if (seq <= u->last) {
        S.dups++;
        S.ndups[c->node]++;
    } else {
        S.missing += (uint64_t)(seq - u->last - 1);
        S.nmissing[c->node] += (uint64_t)(seq - u->last - 1);
        u->last = seq;
    }
}

/* A delta: the fields come first ("type","job_id","seq","ts"), read from the head. */
static void on_delta(conn *c, const char *s, const char *e)
{
    const char *p = memmem(s, (size_t)(e - s), "\"job_id\":\"", 10);
    sub *u = find_sub(c, p ? p + 10 : NULL, e);
    const char *ps = memmem(s, (size_t)(e - s), "\"seq\":", 6);
    const char *pt = memmem(s, (size_t)(e - s), "\"ts\":", 5);
    int64_t seq = int_after(ps ? ps + 6 : NULL, e), ts = int_after(pt ? pt + 5 : NULL, e);

    if (!u || seq < 0 || ts < 0) {
        S.stray++;
        return;
    }
    count_delivery(c);
    if (u->resuming) {
        S.replayed++; /* sent again after a reconnect: its ts is old */
        S.nreplayed[c->node]++;
    } else {
        count_ts(c, ts);
        time_delta(&S.jobs[u->job], seq, ts);
        /* "cts" follows "ts" on live jobwire deltas: the commit time. */
        const char *pc = memmem(pt + 5, (size_t)(e - pt - 5), "\"cts\":", 6);
        int64_t cts = int_after(pc ? pc + 6 : NULL, e);

        if (cts > 0)
            count_cts(c, cts);
    }
    count_seq(c, u, &S.jobs[u->job], seq);
    if (S.atonce) {
        int st = terminal_status(s, e, "\"table\":\"job_runs\"");

        if (st >= 0)
            job_finished(c, u, st);
    }
}

#pragma GCC diagnostic pop

/*
 * A snapshot: jobwire writes "type","job_id" (and "ref","reason") first and
 * "seq" last, after the rows: job_id is read from the line's head, seq from
 * its tail (the last "seq" key there is the top-level one).
 */
static void on_snapshot(conn *c, const char *s, const char *e, const char *h, size_t hn)
{
    const char *p = memmem(h, hn, "\"job_id\":\"", 10), *ps = last_of(s, e, "\"seq\":", 6);
    sub *u = p ? find_sub(c, p + 10, h + hn) : NULL;
    int64_t seq = int_after(ps ? ps + 6 : NULL, e);
    job *j;

    S.snapshots++;
    if (!u || seq < 0) {
        S.stray++;
        return;
    }
    j = &S.jobs[u->job];
    note_joined(c);
    u->resuming = 0;    /* a resume answered with a snapshot: it could not replay */
    if (u->last >= 0) { /* a second snapshot of the same job: a resync */
        S.resyncs++;
        if (seq > u->last)
            S.resync_skipped += (uint64_t)(seq - u->last);
    } else if (!c->ready && S.create == 0 && S.atonce == 0) {
        c->ready = 1;
        S.nready++;
    }
    if (j->base < 0 || seq < j->base)
        j->base = seq;
    if (seq > j->max)
        j->max = seq;
    if (seq > u->last)
        u->last = seq;
    if (S.atonce) {
        /* Subscribed after it finished: no delta will say so. */
        int st = terminal_status(h, h + hn, "{\"job\":{");

        if (st >= 0)
            job_finished(c, u, st);
    }
}

/* {"type":"ack","ref":K}: the replay of subscription K is complete. */
static void on_ack(conn *c, const char *h, size_t hn)
{
    const char *p = memmem(h, hn, "\"ref\":", 6);
    int64_t k = int_after(p ? p + 6 : NULL, h + hn);

    S.acks++;
    if (k >= 0 && k < NSUB)
        c->subs[k].resuming = 0;
}

#define PREFIX(s, n, lit) ((n) >= sizeof(lit) - 1 && memcmp((s), lit, sizeof(lit) - 1) == 0)

/* One message: its first bytes (h, hn) and its last bytes (t, tn). */
static void on_line(conn *c, const char *h, size_t hn, const char *t, size_t tn)
{
    S.msgs++;
    if (PREFIX(h, hn, "{\"type\":\"delta\"")) {
        on_delta(c, h, h + hn);
    } else if (memmem(t, tn, "\"type\":\"snapshot\"", 17) ||
               memmem(h, hn, "\"type\":\"snapshot\"", 17)) {
        on_snapshot(c, t, t + tn, h, hn);
    } else if (PREFIX(h, hn, "{\"type\":\"ack\"")) {
        on_ack(c, h, hn);
    } else if (PREFIX(h, hn, "{\"type\":\"hello\"")) {
        S.hellos++;
    } else if (PREFIX(h, hn, "{\"type\":\"error\"")) {
        S.nerrors[c->node]++;
        if (S.errors++ < 5)
            fprintf(stderr, "ws_swarm: server error: %.*s\n", (int)hn, h);
    } else {
        S.others++;
    }
}

static void line_flush(conn *c)
{
    on_line(c, c->line, c->linelen, c->tail, c->taillen);
    c->linelen = 0;
    c->taillen = 0;
    c->partial = 0;
}

/* Appends a piece of a message that spans reads or frames: keep head and tail. */
static void line_add(conn *c, const char *p, size_t n)
{
    size_t room = HEAD - c->linelen, take = n < room ? n : room;

    memcpy(c->line + c->linelen, p, take);
    c->linelen = (uint16_t)(c->linelen + take);
    if (n >= TAIL) {
        memcpy(c->tail, p + n - TAIL, TAIL);
        c->taillen = TAIL;
    } else {
        size_t keep = c->taillen + n > TAIL ? TAIL - n : c->taillen;
        memmove(c->tail, c->tail + c->taillen - keep, keep);
        memcpy(c->tail + keep, p, n);
        c->taillen = (uint16_t)(keep + n);
    }
    c->partial = 1;
}

/* Payload bytes of a text message: split on '\n'; copy only what spans reads. */
static void on_data(conn *c, const char *p, size_t n)
{
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;

        if (!c->partial && nl) {
            if (seg)
                on_line(c, p, seg < HEAD ? seg : HEAD, p + (seg > TAIL ? seg - TAIL : 0),
                        seg < TAIL ? seg : TAIL);
        } else {
            line_add(c, p, seg);
            if (nl)
                line_flush(c);
        }
        if (!nl)
            return;
        p = nl + 1;
        n -= seg + 1;
    }
}

/* ---- supabase: one Phoenix message per frame -------------------------------------- */

static int64_t days_from_civil(int y, int m, int d)
{
    int era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int64_t)era * 146097 + doe - 719468;
}

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" (jw_format_ts: UTC) at p as us since the epoch; -1 if not. */
static int64_t iso_us(const char *p, const char *e)
{
    static const int at[6] = {0, 5, 8, 11, 14, 17}, len[6] = {4, 2, 2, 2, 2, 2};
    int v[6];
    int64_t us = 0;
    int k;

    if (e - p < 20 || p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':')
        return -1;
    for (int f = 0; f < 6; f++) {
        v[f] = 0;
        for (k = 0; k < len[f]; k++) {
            char ch = p[at[f] + k];
            if (ch < '0' || ch > '9')
                return -1;
            v[f] = v[f] * 10 + (ch - '0');
        }
    }
    if (p[19] == '.') {
        for (k = 0; k < 6 && p + 20 + k < e && p[20 + k] >= '0' && p[20 + k] <= '9'; k++)
            us = us * 10 + (p[20 + k] - '0');
        for (; k < 6; k++)
            us *= 10;
    }
    return ((days_from_civil(v[0], v[1], v[2]) * 24 + v[3]) * 60 + v[4]) * 60 * 1000000 +
           (int64_t)v[5] * 1000000 + us;
}

/*
 * {"topic":…,"event":"postgres_changes","ref":null,"payload":{"ids":[…],"data":
 * {"schema":…,"table":…,"commit_timestamp":"…",…,"record":{…},…,"seq":N}}}: the
 * commit stamp near the head, jobwire's seq last.
 */
static void sb_event(conn *c, sub *u, const char *s, const char *e)
{
    const char *pc = memmem(s, (size_t)(e - s), "\"commit_timestamp\":\"", 20);
    const char *ps = last_of(e - s > 48 ? e - 48 : s, e, ",\"seq\":", 7);
    int64_t seq = int_after(ps ? ps + 7 : NULL, e), cts = pc ? iso_us(pc + 20, e) : -1;

    if (!u || seq < 0) {
        S.stray++;
        return;
    }
    count_delivery(c);
    if (cts > 0)
        count_cts(c, cts);
    if (u->resuming == SB_REJOINED) { /* the first event since a rejoin: a new baseline */
        u->resuming = 0;
        S.resyncs++;
        if (seq > u->last + 1) {
            S.resync_skipped += (uint64_t)(seq - u->last - 1);
            u->last = seq - 1;
        }
    }
    count_seq(c, u, &S.jobs[u->job], seq);
    if (S.atonce) {
        int st = terminal_status(s, e, "\"table\":\"job_runs\"");

        if (st >= 0)
            job_finished(c, u, st);
    }
}

/* A phx_reply: to a heartbeat, to one of c's joins (ok: it is live), or to a leave. */
static void sb_reply(conn *c, sub *u, const char *s, const char *e, bool phoenix)
{
    const char *p = memmem(s, (size_t)(e - s), "\"payload\":{\"status\":\"", 21);
    bool ok = p && e - p >= 24 && memcmp(p + 21, "ok\"", 3) == 0;

    if (phoenix) {
        S.heartbeat_replies += ok;
        return;
    }
    if (!u) { /* a left channel's reply */
        S.others++;
        return;
    }
    if (!ok) {
        S.join_errors++;
        S.nerrors[c->node]++;
        if (S.errors++ < 5)
            fprintf(stderr, "ws_swarm: join refused: %.*s\n", (int)(e - s < 400 ? e - s : 400), s);
        return;
    }
    S.joins_ok++;
    note_joined(c);
    if (!c->ready && !S.create && !S.atonce) {
        c->ready = 1;
        S.nready++;
    }
}

/* One whole message: which topic (the job), which event. */
static void sb_message(conn *c, const char *s, size_t n)
{
    const char *e = s + n, *t = s + 10, *q;
    sub *u = NULL;
    bool phoenix;

    S.msgs++;
    if (!PREFIX(s, n, "{\"topic\":\"") || !(q = memchr(t, '"', (size_t)(e - t)))) {
        S.others++;
        return;
    }
    if (q - t > 13 && memcmp(t, "realtime:job-", 13) == 0)
        u = find_sub(c, t + 13, q + 1);
    phoenix = q - t == 7 && memcmp(t, "phoenix", 7) == 0;
    q++; /* past the topic: the event's key follows */
    if (PREFIX(q, (size_t)(e - q), ",\"event\":\"postgres_changes\"")) {
        sb_event(c, u, s, e);
    } else if (PREFIX(q, (size_t)(e - q), ",\"event\":\"phx_reply\"")) {
        sb_reply(c, u, s, e, phoenix);
    } else if (PREFIX(q, (size_t)(e - q), ",\"event\":\"phx_error\"")) {
        /* The server shed the channel's queue: join again, as supabase-js does. */
        S.channel_errors++;
        S.nerrors[c->node]++;
        if (S.errors++ < 5)
            fprintf(stderr, "ws_swarm: phx_error: %.*s\n", (int)(q - s), s);
        if (u)
            send_resume(c, (int)(u - c->subs));
    } else { /* phx_close after a leave, system "Subscribed to PostgreSQL" */
        S.others++;
    }
}

/*
 * Payload bytes of a supabase frame (before c->remain counts them off): a
 * message whole in this read is read in place, the rest is gathered in c->msg.
 */
static void sb_data(conn *c, const char *p, size_t n)
{
    bool last = c->fin && n == c->remain;

    if (!c->mlen && last) {
        sb_message(c, p, n);
        return;
    }
    if (c->mlen + n > c->mcap && c->mcap < SB_MAX) {
        size_t want = (c->mlen + n) * 2;

        c->mcap = (uint32_t)(want < 4096 ? 4096 : want > SB_MAX ? SB_MAX : want);
        c->msg = xrealloc(c->msg, c->mcap);
    }
    if (n > c->mcap - c->mlen)
        n = c->mcap - c->mlen; /* cut: its seq is lost, it counts as stray */
    memcpy(c->msg + c->mlen, p, n);
    c->mlen += (uint32_t)n;
    if (last) {
        sb_message(c, c->msg, c->mlen);
        c->mlen = 0;
    }
}

static void on_frame_end(conn *c)
{
    switch (c->op) {
    case 0x9: /* ping */ send_frame(c, 0xA, (const char *)c->ctl, c->ctllen); break;
    case 0x8: { /* close */
        int code = c->ctllen >= 2 ? (c->ctl[0] << 8 | c->ctl[1]) : 1005;
        if (code >= 0 && code < 5000)
            S.close_codes[code]++;
        send_frame(c, 0x8, (const char *)c->ctl, c->ctllen >= 2 ? 2 : 0);
        conn_close(c);
        return;
    }
    case 0xA: break;
    default:
        S.frames++;
        if (c->fin && c->partial)
            line_flush(c);
    }
    c->in_hdr = 1;
    c->fhlen = 0;
}

static size_t hdr_need(const conn *c)
{
    size_t need = 2;

    if (c->fhlen < 2)
        return 2;
    if ((c->fh[1] & 127) == 126)
        need += 2;
    else if ((c->fh[1] & 127) == 127)
        need += 8;
    if (c->fh[1] & 0x80)
        need += 4;
    return need;
}

static void on_bytes(conn *c, const char *p, size_t n)
{
    S.bytes += n;
    while (n && c->state == ST_OPEN) {
        if (c->in_hdr) {
            size_t need = hdr_need(c), take = need - c->fhlen;
            if (take > n)
                take = n;
            memcpy(c->fh + c->fhlen, p, take);
            c->fhlen = (uint8_t)(c->fhlen + take);
            p += take;
            n -= take;
            if (c->fhlen < hdr_need(c))
                continue;
            if (c->fh[1] & 0x80) {
                fprintf(stderr, "ws_swarm: masked server frame; closing\n");
                conn_close(c);
                return;
            }
            uint64_t len = c->fh[1] & 127;
            if (len == 126)
                len = (uint64_t)c->fh[2] << 8 | c->fh[3];
            else if (len == 127)
                for (int i = 0; i < 8; i++)
                    len = (i ? len << 8 : 0) | c->fh[2 + i];
            int op = c->fh[0] & 15;
            c->fin = c->fh[0] >> 7;
            if (op >= 8) {
                if (len > 125) {
                    conn_close(c);
                    return;
                }
                c->ctllen = 0;
            } else if (op != 0) {
                c->msg_op = (uint8_t)op;
            }
            c->op = (uint8_t)(op == 0 ? c->msg_op : op);
            c->remain = len;
            c->in_hdr = 0;
            if (!len)
                on_frame_end(c);
        } else {
            size_t take = c->remain < n ? (size_t)c->remain : n;
            if (c->op >= 8) {
                memcpy(c->ctl + c->ctllen, p, take);
                c->ctllen = (uint8_t)(c->ctllen + take);
            } else if (S.mode == MODE_SUPABASE) {
                sb_data(c, p, take);
            } else {
                on_data(c, p, take);
            }
            p += take;
            n -= take;
            c->remain -= take;
            if (!c->remain)
                on_frame_end(c);
        }
    }
}

/* ---- connections ------------------------------------------------------------------ */

/* Closes c without counting it (this tool's own decision: churn, the end). */
static void conn_drop(conn *c)
{
    if (c->state == ST_CLOSED)
        return;
    if (c->state == ST_OPEN)
        S.nopen--;
    c->state = ST_CLOSED;
    epoll_ctl(S.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->hs);
    c->hs = NULL;
}

/* A connection that failed (before it opened) or was closed by the server. */
static void conn_close(conn *c)
{
    if (c->state == ST_CLOSED)
        return;
    if (c->state != ST_OPEN)
        S.nfailed++;
    else
        S.nclosed++;
    conn_drop(c);
}

static void subscribe_initial(conn *c)
{
    /* jobs[] holds the job list in order; slot i follows job i. */
    if (S.create)
        return;
    c->subs[0].job = (int32_t)c->slot;
    if (S.mode == MODE_JOBWIRE || S.mode == MODE_SUPABASE) {
        /* Ready once answered: jobwire's snapshot, supabase's phx_reply ok. */
        c->subs[0].last = -1;
        send_subscribe(c, &c->subs[0], false);
    } else if (!c->ready) {
        c->subs[0].last = 0;
        S.jobs[c->slot].base = 0; /* the publisher starts at seq 1 */
        c->ready = 1;
        S.nready++;
    }
}

static void on_handshake(conn *c, const char *p, size_t n)
{
    char *end;
    size_t used;

    if (!c->hs)
        c->hs = xrealloc(NULL, HS_MAX);
    if (c->hslen + n > HS_MAX - 1) {
        fprintf(stderr, "ws_swarm: handshake response too long\n");
        conn_close(c);
        return;
    }
    memcpy(c->hs + c->hslen, p, n);
    c->hslen = (uint16_t)(c->hslen + n);
    c->hs[c->hslen] = 0;
    if (!(end = strstr(c->hs, "\r\n\r\n")))
        return;
    if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
        if (S.nfailed < 5)
            fprintf(stderr, "ws_swarm: upgrade refused: %.*s\n", (int)strcspn(c->hs, "\r"), c->hs);
        conn_close(c);
        return;
    }
    used = (size_t)(end + 4 - c->hs);
    c->state = ST_OPEN;
    c->in_hdr = 1;
    S.nopen++;
    if ((S.create || S.atonce) && !c->ready) {
        c->ready = 1;
        S.nready++;
    }
    if (soak_mode()) {
        /* A reconnect resumes what it followed; a first connect has nothing yet. */
        for (int k = 0; k < NSUB && c->state == ST_OPEN; k++)
            if (c->subs[k].job >= 0)
                send_resume(c, k);
    } else {
        subscribe_initial(c);
    }
    /* Frames that came with the 101. */
    if (c->state == ST_OPEN && c->hslen > used) {
        char tmp[HS_MAX];
        size_t rest = c->hslen - used;
        memcpy(tmp, c->hs + used, rest);
        free(c->hs);
        c->hs = NULL;
        on_bytes(c, tmp, rest);
    } else {
        free(c->hs);
        c->hs = NULL;
    }
}

static void send_upgrade(conn *c)
{
    char req[1536], path[700], query[320] = "";
    const char *ph = strstr(S.path, "{job}");
    int n;

    if (ph)
        snprintf(path, sizeof(path), "%.*s%s%s", (int)(ph - S.path), S.path, S.jobs[c->slot].id,
                 ph + 5);
    else
        snprintf(path, sizeof(path), "%s", S.path);
    /* supabase-js: ?apikey=KEY&vsn=…; this tool speaks vsn 1.0.0 (objects). */
    if (S.mode == MODE_SUPABASE)
        snprintf(query, sizeof(query), "%capikey=%s&vsn=1.0.0", strchr(path, '?') ? '&' : '?',
                 S.token);
    else if (S.token[0])
        snprintf(query, sizeof(query), "%ctoken=%s", strchr(path, '?') ? '&' : '?', S.token);
    n = snprintf(req, sizeof(req),
                 "GET %s%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s\r\n",
                 path, query, c->node ? S.host_b : S.host, c->node ? S.port_b : S.port,
                 S.mode == MODE_JOBWIRE ? "Sec-WebSocket-Protocol: jobwire.v1\r\n" : "");
    c->state = ST_HANDSHAKE;
    send_all(c, req, (size_t)n);
}

/* Opens connection i; a reconnect (reopen) keeps what it follows and its seqs. */
static void conn_open_as(int i, bool reopen)
{
    conn *c = &S.conns[i];
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    int one = 1;

    if (reopen) {
        uint8_t ready = c->ready;

        memset(c, 0, offsetof(conn, subs));
        c->ready = ready;
        c->mlen = 0;
        for (int k = 0; k < NSUB; k++)
            c->subs[k].resuming = 0;
    } else {
        memset(c, 0, offsetof(conn, line));
        for (int k = 0; k < NSUB; k++)
            c->subs[k].job = -1;
    }
    c->slot = (uint32_t)(i / S.subs_per_job);
    c->node = (uint8_t)(S.port_b && (i % S.subs_per_job) % 2 == 1);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s (open-file limit?)", strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
    /* Spread source addresses over 127.0.0.2..254 so ports never run short. */
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % 253));
    if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) != 0)
        die("bind 127.0.0.%d: %s", 2 + i % 253, strerror(errno));
    dst.sin_port = htons((uint16_t)(c->node ? S.port_b : S.port));
    inet_pton(AF_INET, c->node ? S.host_b : S.host, &dst.sin_addr);
    c->state = ST_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        fprintf(stderr, "ws_swarm: connect: %s\n", strerror(errno));
        c->state = ST_HANDSHAKE; /* counted as failed by conn_close */
        close(c->fd);
        c->state = ST_CLOSED;
        S.nfailed++;
        return;
    }
    epoll_ctl(S.ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_open(int i)
{
    conn_open_as(i, false);
}

/*
 * recv, noting in rx_arrived when the kernel received the last packet it
 * took (TCP hands the timestamp of the newest one read: a later time than an
 * earlier message's own, so the figure errs late).
 */
static ssize_t recv_stamped(int fd, char *p, size_t n)
{
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = p, .iov_len = n};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.buf,
                        .msg_controllen = sizeof(ctl.buf)};
    ssize_t r = recvmsg(fd, &mh, 0);

    rx_arrived = 0;
    if (r <= 0)
        return r;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;

            memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
            rx_arrived = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
        }
    }
    return r;
}

static void on_event(conn *c, uint32_t events, char *buf)
{
    if (c->state == ST_CLOSED || c->stalled)
        return;
    if (c->state == ST_CONNECTING && (events & EPOLLOUT)) {
        int err = 0;
        socklen_t l = sizeof(err);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                 .data.u32 = (uint32_t)(c - S.conns)};
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            if (S.nfailed < 5)
                fprintf(stderr, "ws_swarm: connect: %s\n", strerror(err));
            conn_close(c);
            return;
        }
        epoll_ctl(S.ep, EPOLL_CTL_MOD, c->fd, &ev);
        send_upgrade(c);
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        for (int rounds = 0; rounds < 4 && c->state != ST_CLOSED; rounds++) {
            ssize_t r = recv_stamped(c->fd, buf, RXBUF);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            if (r <= 0) {
                if (c->state == ST_HANDSHAKE && S.nfailed < 5)
                    fprintf(stderr, "ws_swarm: connection closed during the upgrade\n");
                conn_close(c);
                break;
            }
            rx_now = now_us();
            if (c->state == ST_HANDSHAKE)
                on_handshake(c, buf, (size_t)r);
            else
                on_bytes(c, buf, (size_t)r);
            if (r < RXBUF)
                break;
        }
    }
}

/* ---- job creation through the HTTP API (jobwire --create-jobs) ---------------------- */

static int http_connect(void)
{
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)S.port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    inet_pton(AF_INET, S.host, &dst.sin_addr);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* POST /api/jobs on a keep-alive socket; writes the job id into id (37 bytes). */
static int http_create(int fd, char *id)
{
    static const char body_fmt[] = "{\"transaction_amount\":100,\"transaction_count\":%d,"
                                   "\"user_id\":\"00000000-0000-4000-8000-000000000b0b\"}";
    char body[256], req[1024], resp[65536], *p, *hend;
    size_t have = 0, need = 0;
    int bn = snprintf(body, sizeof(body), body_fmt, S.tx);
    int n = snprintf(req, sizeof(req),
                     "POST /api/jobs HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     S.host, S.port, S.token, bn, body);

    if (write(fd, req, (size_t)n) != n)
        return -1;
    for (;;) {
        ssize_t r = read(fd, resp + have, sizeof(resp) - 1 - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        resp[have] = 0;
        if (!need && (hend = strstr(resp, "\r\n\r\n"))) {
            char *cl = strcasestr(resp, "Content-Length:");
            if (!cl)
                return -1;
            need = (size_t)(hend + 4 - resp) + strtoul(cl + 15, NULL, 10);
        }
        if (need && have >= need)
            break;
        if (have == sizeof(resp) - 1)
            return -1;
    }
    if (strncmp(resp, "HTTP/1.1 201", 12) != 0 || !(p = strstr(resp, "\"id\":\""))) {
        fprintf(stderr, "ws_swarm: POST /api/jobs: %.*s\n", (int)strcspn(resp, "\r"), resp);
        return -1;
    }
    snprintf(id, 37, "%.36s", p + 6);
    return 0;
}

typedef struct {
    int k;
} creator_arg;

static void *creator(void *arg)
{
    int k = ((creator_arg *)arg)->k, fd = http_connect();
    int64_t t0 = mono_us(), stop_at = t0 + (int64_t)((S.duration - S.drain) * 1e6);

    if (fd < 0) {
        S.create_failed = 1;
        return NULL;
    }
    for (int wave = 0; !S.stop_create; wave++) {
        int64_t due = t0 + (int64_t)wave * S.wave_ms * 1000;
        while (mono_us() < due && !S.stop_create)
            usleep(1000);
        if (mono_us() >= stop_at || S.stop_create)
            break;
        for (int slot = k; slot < S.create && !S.stop_create; slot += S.creators) {
            char id[40];
            if (http_create(fd, id) != 0) {
                S.create_failed = 1;
                close(fd);
                return NULL;
            }
            pthread_mutex_lock(&S.mu);
            if (S.npending == S.cappending) {
                S.cappending = S.cappending ? S.cappending * 2 : 256;
                S.pending = xrealloc(S.pending, (size_t)S.cappending * sizeof(job));
            }
            snprintf(S.pending[S.npending].id, 40, "%s", id);
            S.pending[S.npending].wave = wave;
            S.pending[S.npending].slot = slot;
            S.npending++;
            pthread_mutex_unlock(&S.mu);
            uint64_t one = 1;
            if (write(S.efd, &one, 8) != 8)
                die("eventfd write");
        }
        if (!S.wave_ms)
            break;
    }
    close(fd);
    return NULL;
}

/*
 * --jobs-at-once: a creator takes a slot that wants its next job, creates
 * it, and hands it to the loop thread. A failed POST is counted, and the
 * slot is tried again on a fresh HTTP connection.
 */
static void *creator_atonce(void *arg)
{
    int fd = http_connect();

    (void)arg;
    for (;;) {
        char id[40];
        int slot;

        pthread_mutex_lock(&S.mu);
        while (!S.nwant && !S.stop_create)
            pthread_cond_wait(&S.want_cv, &S.mu);
        if (S.stop_create) {
            pthread_mutex_unlock(&S.mu);
            break;
        }
        slot = S.want[--S.nwant];
        pthread_mutex_unlock(&S.mu);
        if (fd < 0 || http_create(fd, id) != 0) {
            __atomic_add_fetch(&S.http_errors, 1, __ATOMIC_RELAXED);
            if (fd >= 0)
                close(fd);
            usleep(100000);
            fd = http_connect();
            pthread_mutex_lock(&S.mu);
            S.want[S.nwant++] = slot;
            pthread_mutex_unlock(&S.mu);
            continue;
        }
        pthread_mutex_lock(&S.mu);
        if (S.npending == S.cappending) {
            S.cappending = S.cappending ? S.cappending * 2 : 256;
            S.pending = xrealloc(S.pending, (size_t)S.cappending * sizeof(job));
        }
        snprintf(S.pending[S.npending].id, 40, "%s", id);
        S.pending[S.npending].wave = 0;
        S.pending[S.npending].slot = slot;
        S.npending++;
        pthread_mutex_unlock(&S.mu);
        uint64_t one = 1;
        if (write(S.efd, &one, 8) != 8)
            die("eventfd write");
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* Counts what a subscription missed at its end against the job's highest seq. */
static void sub_retire(const conn *c, sub *u)
{
    if (u->job >= 0 && u->last >= 0 && !c->stalled && S.jobs[u->job].max > u->last) {
        S.tail_missing += (uint64_t)(S.jobs[u->job].max - u->last);
        S.ntail[c->node] += (uint64_t)(S.jobs[u->job].max - u->last);
    }
    u->job = -1;
}

/*
 * The slot's next job: each of the slot's connections follows it in the next
 * subscription of its ring (one left unfinished NSUB jobs back is retired and
 * what it missed counted). A connection that is reconnecting subscribes
 * when it is back.
 */
/*
 * A slot's next job has 2,000 watchers to subscribe. Sent in one go, the tool
 * would spend over 10 ms of its CPU on them (on loopback a send does the
 * server's receive work too) with none left to read what arrives meanwhile:
 * its own lag, not the server's, and one 2,000 separate clients would not
 * have. So they wait in a queue, SUBSCRIBE_CHUNK per loop turn, between reads.
 */
#define SUBSCRIBE_CHUNK 64

static void queue_subscribe(int i, int k, int ji)
{
    if (S.sq_len == S.sq_cap) {
        size_t cap = S.sq_cap ? S.sq_cap * 2 : 4096;
        struct qsub *q = xrealloc(NULL, cap * sizeof(*q));

        for (size_t n = 0; n < S.sq_len; n++) /* unwrapped, oldest first */
            q[n] = S.squeue[(S.sq_head + n) % S.sq_cap];
        free(S.squeue);
        S.squeue = q;
        S.sq_cap = cap;
        S.sq_head = 0;
    }
    S.squeue[(S.sq_head + S.sq_len++) % S.sq_cap] = (struct qsub){i, k, ji};
    S.conns[i].subs[k].queued = 1;
}

/* Up to SUBSCRIBE_CHUNK queued subscribes still wanted (open, following that job). */
static void send_queued(void)
{
    for (int sent = 0; S.sq_len && sent < SUBSCRIBE_CHUNK;) {
        struct qsub q = S.squeue[S.sq_head];
        conn *c = &S.conns[q.conn];
        sub *u = &c->subs[q.k];

        S.sq_head = (S.sq_head + 1) % S.sq_cap;
        S.sq_len--;
        if (!u->queued || u->job != q.job || c->state != ST_OPEN)
            continue;
        u->queued = 0;
        send_resume(c, q.k);
        sent++;
    }
}

static void take_slot_job(const char *id, int slot)
{
    int gen = S.slot_gen[slot]++;
    int ji = job_add(id, gen, slot);
    int lo = slot * S.subs_per_job, hi = lo + S.subs_per_job;

    S.jobs_created++;
    for (int i = lo; i < hi && i < S.nconns; i++) {
        conn *c = &S.conns[i];
        int k = gen % NSUB;
        sub *u = &c->subs[k];

        if (u->job >= 0) {
            if (c->state == ST_OPEN)
                send_subscribe(c, u, true);
            sub_retire(c, u);
        }
        u->job = ji;
        u->last = -1;
        u->resuming = 0;
        if (c->state == ST_OPEN)
            queue_subscribe(i, k, ji);
    }
}

/* A --url-b connection's subscribe to job ji, sent --b-stagger-ms from now. */
static void hold(int i, int ji)
{
    if (S.nheld == S.capheld) {
        S.capheld = S.capheld ? S.capheld * 2 : 1024;
        S.held = xrealloc(S.held, (size_t)S.capheld * sizeof(*S.held));
    }
    S.held[S.nheld].conn = i;
    S.held[S.nheld].job = ji;
    S.held[S.nheld].due = mono_us() + (int64_t)S.b_stagger_ms * 1000;
    S.nheld++;
}

/* Sends the held subscribes that are due (still wanted: the connection follows the job). */
static void send_held(int64_t now)
{
    while (S.heldpos < S.nheld && S.held[S.heldpos].due <= now) {
        conn *c = &S.conns[S.held[S.heldpos].conn];
        int ji = S.held[S.heldpos].job;

        S.heldpos++;
        if (c->state != ST_OPEN)
            continue;
        for (int k = 0; k < NSUB; k++)
            if (c->subs[k].job == ji && c->subs[k].last < 0)
                send_subscribe(c, &c->subs[k], false);
    }
    if (S.heldpos == S.nheld)
        S.heldpos = S.nheld = 0;
}

static void take_created(void)
{
    job batch[512];
    int n;
    uint64_t v;

    if (read(S.efd, &v, 8) != 8) { /* nothing signalled: still drain what is pending */
    }
    for (;;) {
        pthread_mutex_lock(&S.mu);
        n = S.npending < 512 ? S.npending : 512;
        memcpy(batch, S.pending, (size_t)n * sizeof(job));
        memmove(S.pending, S.pending + n, (size_t)(S.npending - n) * sizeof(job));
        S.npending -= n;
        pthread_mutex_unlock(&S.mu);
        if (!n)
            return;
        for (int b = 0; b < n; b++) {
            if (S.atonce) {
                take_slot_job(batch[b].id, batch[b].slot);
                continue;
            }
            int ji = job_add(batch[b].id, batch[b].wave, batch[b].slot);
            int lo = batch[b].slot * S.subs_per_job, hi = lo + S.subs_per_job, first_b = 1;
            for (int i = lo; i < hi && i < S.nconns; i++) {
                conn *c = &S.conns[i];
                sub *u = &c->subs[batch[b].wave % NSUB];
                if (c->state != ST_OPEN)
                    continue;
                if (u->job >= 0) { /* the job NSUB waves back: long finished */
                    send_subscribe(c, u, true);
                    sub_retire(c, u);
                }
                if (c->state != ST_OPEN)
                    continue;
                u->job = ji;
                u->last = -1;
                u->resuming = 0;
                if (c->node && S.b_stagger_ms && !first_b) {
                    hold(i, ji);
                    continue;
                }
                first_b &= !c->node;
                send_subscribe(c, u, false);
            }
        }
    }
}

/* ---- soak: churn and progress ---------------------------------------------------- */

/*
 * Once a second: close --churn % of the connections, picked at random, and
 * reconnect them at once (half say goodbye with a close frame, half just
 * drop the socket); reconnect those the server closed or that failed.
 */
static void churn_tick(void)
{
    static double owed;
    int n;

    for (int i = 0; i < S.nconns; i++) {
        if (S.conns[i].state == ST_CLOSED) {
            S.reconnects++;
            conn_open_as(i, true);
        }
    }
    owed += (double)S.nconns * S.churn / 100.0;
    n = (int)owed;
    owed -= n;
    for (int m = 0; m < n; m++) {
        conn *c = &S.conns[rng() % (uint32_t)S.nconns];

        if (c->state != ST_OPEN)
            continue; /* already reconnecting */
        if (S.churned & 1)
            send_frame(c, 0x8, "\x03\xe9", 2); /* 1001 going away */
        S.churned++;
        conn_drop(c);
        conn_open_as((int)(c - S.conns), true);
    }
}

/* Subscriptions held by open connections. */
static long open_subs(void)
{
    long n = 0;

    for (int i = 0; i < S.nconns; i++)
        if (S.conns[i].state == ST_OPEN)
            for (int k = 0; k < NSUB; k++)
                n += S.conns[i].subs[k].job >= 0;
    return n;
}

/* One line of running totals since the start (the run's first line: t_s=0). */
static void print_tick(double t_s)
{
    printf("TICK t_s=%.1f conns_open=%d subs=%ld deliveries=%" PRIu64 " replayed=%" PRIu64
           " missing=%" PRIu64 " dup=%" PRIu64 " resyncs=%" PRIu64 " snapshots=%" PRIu64
           " stray=%" PRIu64 " errors=%" PRIu64 " connect_failed=%d server_closed=%d"
           " churned=%" PRIu64 " reconnects=%" PRIu64 " http_errors=%" PRIu64
           " jobs_created=%" PRIu64 " jobs_completed=%" PRIu64 " jobs_failed=%" PRIu64
           " jobs_cancelled=%" PRIu64 " p50_ms=%.2f p99_ms=%.2f commit_p50_ms=%.2f"
           " commit_p99_ms=%.2f\n",
           t_s, S.nopen, open_subs(), S.deliveries, S.replayed, S.missing, S.dups, S.resyncs,
           S.snapshots, S.stray, S.errors, S.nfailed, S.nclosed, S.churned, S.reconnects,
           __atomic_load_n(&S.http_errors, __ATOMIC_RELAXED), S.jobs_created, S.jobs_done[0],
           S.jobs_done[1], S.jobs_done[2], S.mode == MODE_SUPABASE ? -1 : pct_ms(S.nlat, 0.50),
           S.mode == MODE_SUPABASE ? -1 : pct_ms(S.nlat, 0.99), cpct_ms(0.50), cpct_ms(0.99));
    fflush(stdout);
}

/* The RESULT line's end: the figures of each node's connections (b_*: --url-b). */
static void print_nodes(double span_s, double cpu_srv_b)
{
    for (int i = 0; i < S.nconns; i++)
        S.nconns_node[S.conns[i].node]++;
    for (int k = 0; k < 2; k++) {
        uint64_t live = S.ndeliv[k] - S.nreplayed[k];
        char n = (char)('a' + k);
        bool ts = S.mode != MODE_SUPABASE; /* else no change time: -1 */

        printf(" %c_conns=%d %c_deliveries=%" PRIu64 " %c_deliveries_per_s=%.0f %c_p50_ms=%.3f"
               " %c_p99_ms=%.3f %c_p999_ms=%.3f %c_max_ms=%.3f %c_commit_p50_ms=%.3f"
               " %c_commit_p99_ms=%.3f %c_commit_p999_ms=%.3f %c_commit_max_ms=%.3f"
               " %c_commit_n=%" PRIu64 " %c_missing=%" PRIu64 " %c_dup=%" PRIu64
               " %c_tail_missing=%" PRIu64 " %c_errors=%" PRIu64,
               n, S.nconns_node[k], n, S.ndeliv[k], n,
               span_s > 0 ? (double)S.ndeliv[k] / span_s : 0, n,
               ts ? pct_of(S.nhist[k], S.nlat_max[k], live, 0.50) : -1, n,
               ts ? pct_of(S.nhist[k], S.nlat_max[k], live, 0.99) : -1, n,
               ts ? pct_of(S.nhist[k], S.nlat_max[k], live, 0.999) : -1, n,
               ts ? (double)S.nlat_max[k] / 1000.0 : -1, n,
               pct_of(S.nchist[k], S.nclat_max[k], S.ncommits[k], 0.50), n,
               pct_of(S.nchist[k], S.nclat_max[k], S.ncommits[k], 0.99), n,
               pct_of(S.nchist[k], S.nclat_max[k], S.ncommits[k], 0.999), n,
               (double)S.nclat_max[k] / 1000.0, n, S.ncommits[k], n, S.nmissing[k], n, S.ndups[k],
               n, S.ntail[k], n, S.nerrors[k]);
    }
    printf(" cpu_server_b_s=%.2f\n", cpu_srv_b);
}

/* ---- main --------------------------------------------------------------------------- */

/* sched_setattr(2)'s argument as far as its first version goes (48 bytes). */
struct slice_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};

/*
 * Sets this thread's time slice to us (the threads it starts later inherit
 * it), keeping its policy and nice value; returns the slice the kernel
 * reports afterwards in us, 0 when it reports none.
 */
static long set_slice(long us)
{
    struct slice_attr a;

    memset(&a, 0, sizeof(a));
    if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) != 0)
        die("sched_getattr: %s", strerror(errno));
    if (a.policy != SCHED_OTHER && a.policy != SCHED_BATCH)
        die("--slice-us: the tool runs under policy %u, not SCHED_OTHER or SCHED_BATCH", a.policy);
    a.size = sizeof(a);
    a.flags = 0;
    a.runtime = (uint64_t)us * 1000;
    if (syscall(SYS_sched_setattr, 0, &a, 0) != 0)
        die("--slice-us %ld: sched_setattr: %s", us, strerror(errno));
    memset(&a, 0, sizeof(a));
    if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) != 0)
        die("sched_getattr: %s", strerror(errno));
    return (long)(a.runtime / 1000);
}

static void usage(FILE *f)
{
    fputs("Usage: ws_swarm --url ws://127.0.0.1:PORT/PATH [--mode jobwire|nchan|plain|supabase]\n"
          "  [--token T] (--job ID | --jobs-file F | --create-jobs W)\n"
          "  [--subs-per-job N (10)] [--duration S (10)] [--ramp CONN_PER_S (5000)]\n"
          "  [--server-pid PID] [--ready-file F] [--label NAME]\n"
          "  [--wave-interval-ms MS (0: one wave)] [--drain S (5)] [--tx N (50)]\n"
          "  [--creators N (4)] [--jobs-at-once N] [--jobs-ramp S (0)] [--churn PCT]\n"
          "  [--report S] [--url-b ws://127.0.0.1:PORT/PATH] [--server-pid-b PID]\n"
          "  [--slice-us US (100-100000; the kernel's default if not given)]\n"
          "nchan/plain: '{job}' in the URL path is replaced by each job id.\n"
          "supabase: --url ws://127.0.0.1:PORT/realtime/v1/websocket, --token the apikey\n"
          "(the admin key); one channel per job (realtime:job-<id>, vsn 1.0.0), bindings\n"
          "on job_runs, job_steps, otp_requests; latency from commit_timestamp only.\n"
          "--create-jobs W (jobwire, supabase): W jobs per wave via POST /api/jobs with\n"
          "--token as the admin key; connection i follows job i/subs-per-job of every wave.\n"
          "--jobs-at-once N (jobwire, supabase; soak): N slots, each keeping one job running (its\n"
          "next job is created when a subscriber sees it finish); connection i follows\n"
          "slot i/subs-per-job; the slots' first jobs are spread over --jobs-ramp S.\n"
          "--churn PCT: every second close PCT% of the connections\n"
          "at random and reconnect them, resuming with since. --report S: a TICK line of\n"
          "running totals every S seconds.\n"
          "--url-b (jobwire, two nodes): every second subscriber of each job (odd\n"
          "i % subs-per-job) connects there (same path); jobs are created on --url.\n"
          "The RESULT line adds a_* (--url) and b_* (--url-b) figures.\n"
          "--b-stagger-ms D (--create-jobs): of each new job's --url-b subscribers, the\n"
          "first subscribes at once, the others D ms later (its mirror is there then).\n"
          "--stall PCT: connections with i % 100 < PCT stop reading and sending once subscribed;\n"
          "the server's peak RSS is reported (rss_peak_kb).\n",
          f);
}

/* host (64 bytes), port and path (512 bytes) of a ws:// URL on loopback. */
static void parse_url(const char *u, char *host, int *port, char *path)
{
    const char *p, *slash;

    if (strncmp(u, "ws://", 5) != 0)
        die("--url must start with ws:// (got '%s')", u);
    p = u + 5;
    slash = strchr(p, '/');
    if (!slash)
        slash = p + strlen(p);
    if (sscanf(p, "%63[^:]:%d", host, port) != 2 || *port < 1 || *port > 65535)
        die("--url needs HOST:PORT with a numeric IPv4 host (got '%s')", u);
    snprintf(path, 512, "%s", *slash ? slash : "/");
    if (strncmp(host, "127.", 4) != 0)
        die("only 127.0.0.x targets are allowed (got %s)", host);
}

static void load_jobs(const char *file, const char *one)
{
    char l[256];
    FILE *f;

    if (one) {
        job_add(one, 0, 0);
        return;
    }
    if (!(f = fopen(file, "r")))
        die("cannot open --jobs-file %s: %s", file, strerror(errno));
    while (fgets(l, sizeof(l), f)) {
        l[strcspn(l, "\r\n \t")] = 0;
        if (l[0])
            job_add(l, 0, S.njobs);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"url", 1, 0, 'u'},
                                         {"mode", 1, 0, 'm'},
                                         {"token", 1, 0, 't'},
                                         {"job", 1, 0, 'j'},
                                         {"jobs-file", 1, 0, 'f'},
                                         {"create-jobs", 1, 0, 'c'},
                                         {"subs-per-job", 1, 0, 'n'},
                                         {"duration", 1, 0, 'd'},
                                         {"ramp", 1, 0, 'r'},
                                         {"server-pid", 1, 0, 'p'},
                                         {"ready-file", 1, 0, 'R'},
                                         {"label", 1, 0, 'l'},
                                         {"wave-interval-ms", 1, 0, 'w'},
                                         {"drain", 1, 0, 'D'},
                                         {"tx", 1, 0, 'x'},
                                         {"creators", 1, 0, 'C'},
                                         {"jobs-at-once", 1, 0, 'A'},
                                         {"churn", 1, 0, 'X'},
                                         {"report", 1, 0, 'T'},
                                         {"jobs-ramp", 1, 0, 'J'},
                                         {"url-b", 1, 0, 'U'},
                                         {"server-pid-b", 1, 0, 'P'},
                                         {"b-stagger-ms", 1, 0, 'S'},
                                         {"stall", 1, 0, 'Z'},
                                         {"slice-us", 1, 0, 's'},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *url = NULL, *url_b = NULL, *one = NULL, *file = NULL;
    int o, ncreators = 0;
    long slice_us = 0, slice_set = 0;
    pthread_t th[64];
    creator_arg ca[64];
    char *buf;

    S.subs_per_job = 10;
    S.duration = 10;
    S.ramp = 5000;
    S.drain = 5;
    S.tx = 50;
    S.creators = 4;
    S.rss_joined = -1;
    snprintf(S.label, sizeof(S.label), "run");
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u': url = optarg; break;
        case 'm':
            if (!strcmp(optarg, "jobwire"))
                S.mode = MODE_JOBWIRE;
            else if (!strcmp(optarg, "nchan"))
                S.mode = MODE_NCHAN;
            else if (!strcmp(optarg, "plain"))
                S.mode = MODE_PLAIN;
            else if (!strcmp(optarg, "supabase"))
                S.mode = MODE_SUPABASE;
            else
                die("--mode must be jobwire, nchan, plain or supabase (got '%s')", optarg);
            break;
        case 't': snprintf(S.token, sizeof(S.token), "%s", optarg); break;
        case 'j': one = optarg; break;
        case 'f': file = optarg; break;
        case 'c': S.create = atoi(optarg); break;
        case 'n': S.subs_per_job = atoi(optarg); break;
        case 'd': S.duration = atof(optarg); break;
        case 'r': S.ramp = atoi(optarg); break;
        case 'p': S.server_pid = atoi(optarg); break;
        case 'R': snprintf(S.ready_file, sizeof(S.ready_file), "%s", optarg); break;
        case 'l': snprintf(S.label, sizeof(S.label), "%s", optarg); break;
        case 'w': S.wave_ms = atoi(optarg); break;
        case 'D': S.drain = atof(optarg); break;
        case 'x': S.tx = atoi(optarg); break;
        case 'C': S.creators = atoi(optarg); break;
        case 'A': S.atonce = atoi(optarg); break;
        case 'X': S.churn = atof(optarg); break;
        case 'T': S.report = atof(optarg); break;
        case 'J': S.jobs_ramp = atof(optarg); break;
        case 'U': url_b = optarg; break;
        case 'P': S.server_pid_b = atoi(optarg); break;
        case 'S': S.b_stagger_ms = atoi(optarg); break;
        case 'Z': S.stall_pct = atoi(optarg); break;
        case 's': {
            char *end;

            errno = 0;
            slice_us = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end)
                slice_us = -1; /* refused below */
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!url || (!one && !file && !S.create && !S.atonce) || S.subs_per_job < 1 ||
        S.duration <= 0 || S.ramp < 1 || S.creators < 1 || S.creators > 64 || S.atonce < 0 ||
        S.churn < 0 || S.churn > 100 || S.report < 0 || S.jobs_ramp < 0 ||
        (slice_us && (slice_us < 100 || slice_us > 100000))) {
        usage(stderr);
        return 2;
    }
    if ((S.create || S.atonce) && S.mode != MODE_JOBWIRE && S.mode != MODE_SUPABASE)
        die("--create-jobs and --jobs-at-once work with --mode jobwire or supabase only");
    if (S.create && S.atonce)
        die("--create-jobs and --jobs-at-once exclude each other");
    if (S.churn > 0 && !S.atonce)
        die("--churn needs --jobs-at-once");
    if (S.churn > 0 && S.mode == MODE_SUPABASE)
        die("--churn works with --mode jobwire only (a Supabase channel cannot resume)");
    if (S.mode == MODE_SUPABASE && !S.token[0])
        die("--mode supabase needs --token (the apikey; the admin key to create jobs)");
    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_url(url, S.host, &S.port, S.path);
    if (slice_us) {
        slice_set = set_slice(slice_us);
        if (slice_set != slice_us)
            fprintf(stderr, "ws_swarm: asked for a %ld us time slice, the kernel reports %ld us\n",
                    slice_us, slice_set);
    }
    if (url_b) {
        char path_b[512];

        if (S.mode != MODE_JOBWIRE)
            die("--url-b works with --mode jobwire only");
        parse_url(url_b, S.host_b, &S.port_b, path_b);
    }
    if (S.atonce) {
        S.nslots = S.atonce;
        S.want = calloc((size_t)S.atonce, sizeof(*S.want));
        S.slot_gen = calloc((size_t)S.atonce, sizeof(*S.slot_gen));
        if (!S.want || !S.slot_gen)
            die("out of memory");
    } else if (S.create)
        S.nslots = S.create;
    else
        load_jobs(file, one), S.nslots = S.njobs;
    if (!S.nslots)
        die("no jobs");
    S.nconns = S.nslots * S.subs_per_job;
    S.conns = calloc((size_t)S.nconns, sizeof(conn));
    buf = malloc(RXBUF);
    if (!S.conns || !buf)
        die("out of memory");
    S.ep = epoll_create1(EPOLL_CLOEXEC);
    S.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&S.mu, NULL);
    pthread_cond_init(&S.want_cv, NULL);
    {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
        epoll_ctl(S.ep, EPOLL_CTL_ADD, S.efd, &ev);
    }

    long rss0 = proc_rss_kb(S.server_pid), rss_ready = -1, rss_end;
    int64_t t_conn = mono_us(), t_ready = 0, t_end = 0, deadline_connect = t_conn + 120000000;
    double cpu_self0 = 0, cpu_srv0 = 0, cpu_srv_b0 = 0;
    struct epoll_event evs[1024];
    uint64_t d0 = 0;
    int64_t next_tick = INT64_MAX, next_churn = INT64_MAX, next_beat = t_conn + 1000000;
    int64_t next_rss = 0;
    int beat = 0;
    int ramped = 0;

    for (;;) {
        int64_t t = mono_us();
        /* Ramp: open what the rate allows by now. */
        while (S.opened < S.nconns && (int64_t)S.opened * 1000000 / S.ramp <= t - t_conn)
            conn_open(S.opened++);
        int n = epoll_wait(S.ep, evs, 1024, S.sq_len ? 0 : S.opened < S.nconns ? 1 : 50);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == UINT32_MAX)
                take_created();
            else
                on_event(&S.conns[evs[i].data.u32], evs[i].events, buf);
        }
        send_queued();
        t = mono_us();
        if (!t_ready && S.opened == S.nconns && S.nready + S.nfailed + S.nclosed >= S.nconns) {
            /* Everyone subscribed (or failed): let the server settle, then read its RSS. */
            static int64_t settle;
            if (!settle)
                settle = t + 1000000;
            if (t >= settle) {
                rss_ready = proc_rss_kb(S.server_pid);
                t_ready = t;
                t_end = t + (int64_t)(S.duration * 1e6);
                S.run_start = t;
                d0 = S.deliveries;
                (void)d0;
                cpu_self0 = self_cpu_s();
                cpu_srv0 = proc_cpu_s(S.server_pid);
                cpu_srv_b0 = proc_cpu_s(S.server_pid_b);
                fprintf(stderr, "ws_swarm: %d/%d connections ready (%d failed) in %.2f s\n",
                        S.nready, S.nconns, S.nfailed, (double)(t - t_conn) / 1e6);
                if (S.ready_file[0]) {
                    FILE *f = fopen(S.ready_file, "w");
                    if (f)
                        fclose(f);
                }
                if (S.atonce) {
                    print_tick(0);
                    next_tick = t + (int64_t)(S.report * 1e6);
                    next_churn = t + 1000000;
                }
                if (S.create || S.atonce)
                    for (int k = 0; k < S.creators; k++) {
                        ca[k].k = k;
                        if (pthread_create(&th[k], NULL, S.atonce ? creator_atonce : creator,
                                           &ca[k]) != 0)
                            die("pthread_create");
                        ncreators++;
                    }
            }
        }
        if (S.nheld)
            send_held(t);
        if (S.server_pid && t >= next_rss) {
            long r = proc_rss_kb(S.server_pid);

            if (r > S.rss_peak)
                S.rss_peak = r;
            next_rss = t + 200000;
        }
        /* supabase: each connection's heartbeat every HEARTBEAT_S, spread over the seconds. */
        if (S.mode == MODE_SUPABASE && t >= next_beat) {
            for (int i = beat % HEARTBEAT_S; i < S.opened; i += HEARTBEAT_S)
                if (S.conns[i].state == ST_OPEN)
                    sb_heartbeat(&S.conns[i]);
            beat++;
            next_beat += 1000000;
        }
        /* The first job of each slot, spread over --jobs-ramp. */
        while (t_ready && ramped < S.atonce &&
               t >= t_ready + (int64_t)(S.jobs_ramp * 1e6) * ramped / S.atonce)
            want_job(ramped++);
        if (t_ready && S.atonce && t >= next_churn) {
            churn_tick();
            next_churn += 1000000;
        }
        if (t_ready && S.report > 0 && t >= next_tick && t < t_end) {
            print_tick((double)(t - t_ready) / 1e6);
            next_tick += (int64_t)(S.report * 1e6);
        }
        if (!t_ready && t > deadline_connect)
            die("connections not ready after 120 s (%d ready, %d failed of %d)", S.nready,
                S.nfailed, S.nconns);
        if (t_ready && t >= t_end)
            break;
    }
    pthread_mutex_lock(&S.mu);
    S.stop_create = 1;
    pthread_cond_broadcast(&S.want_cv);
    pthread_mutex_unlock(&S.mu);
    double cpu_self = self_cpu_s() - cpu_self0;
    double cpu_srv = S.server_pid ? proc_cpu_s(S.server_pid) - cpu_srv0 : -1;
    double cpu_srv_b = S.server_pid_b ? proc_cpu_s(S.server_pid_b) - cpu_srv_b0 : -1;
    rss_end = proc_rss_kb(S.server_pid);
    for (int k = 0; k < ncreators; k++)
        pthread_join(th[k], NULL);
    for (int i = 0; i < S.nconns; i++)
        for (int k = 0; k < NSUB; k++)
            sub_retire(&S.conns[i], &S.conns[i].subs[k]);

    uint64_t unique = 0;
    for (int i = 0; i < S.njobs; i++)
        if (S.jobs[i].max > S.jobs[i].base && S.jobs[i].base >= 0)
            unique += (uint64_t)(S.jobs[i].max - S.jobs[i].base);
    double run_s = (double)(t_end - t_ready) / 1e6;
    double span_s = S.last_rx > S.first_rx ? (double)(S.last_rx - S.first_rx) / 1e6 : 0;
    double dps = span_s > 0 ? (double)S.deliveries / span_s : 0;
    double per_conn =
        (rss0 >= 0 && rss_ready >= 0) ? (double)(rss_ready - rss0) / (S.nconns - S.nfailed) : -1;
    const char *modes[] = {"jobwire", "nchan", "plain", "supabase"};
    /* From ts (the change): none in supabase mode, whose events carry no change time. */
    bool no_ts = S.mode == MODE_SUPABASE;
    double l50 = no_ts ? -1 : pct_ms(S.nlat, 0.50), l99 = no_ts ? -1 : pct_ms(S.nlat, 0.99),
           l999 = no_ts ? -1 : pct_ms(S.nlat, 0.999),
           lmax = no_ts ? -1 : (double)S.lat_max / 1000.0;
    double joined_per_conn = (rss0 >= 0 && S.rss_joined >= 0 && S.njoined)
                                 ? (double)(S.rss_joined - rss0) / S.njoined
                                 : -1;
    int closes = 0;
    double first50, first99, last50, last99;
    size_t ntimed = delta_times(&first50, &first99, &last50, &last99);

    for (int i = 0; i < 5000; i++)
        closes += S.close_codes[i];
    printf("%s: mode=%s conns=%d failed=%d closed=%d jobs=%d deliveries=%" PRIu64
           " in %.2f s = %.0f/s (source %" PRIu64 " deltas = %.0f/s) latency ms p50 %.2f p99 %.2f "
           "p99.9 %.2f max %.2f%s (from commit: p50 %.2f p99 %.2f p99.9 %.2f max %.2f over %" PRIu64
           "); missing %" PRIu64 " dup %" PRIu64 " tail_missing %" PRIu64 " resyncs %" PRIu64
           " (skipped %" PRIu64 ") snapshots %" PRIu64 " stray %" PRIu64 " errors %" PRIu64
           "; msgs %" PRIu64 " in %" PRIu64 " frames (%.1f/frame); "
           "server RSS kB %ld -> %ld idle (%.2f kB/conn) -> %ld end; cpu s: swarm %.2f server %.2f"
           " over %.1f s%s\n",
           S.label, modes[S.mode], S.nconns, S.nfailed, S.nclosed, S.njobs, S.deliveries, span_s,
           dps, unique, span_s > 0 ? (double)unique / span_s : 0, l50, l99, l999, lmax,
           no_ts ? " (none: no change time on the wire)" : "", cpct_ms(0.50), cpct_ms(0.99),
           cpct_ms(0.999), (double)S.clat_max / 1000.0, S.ncommit, S.missing, S.dups,
           S.tail_missing, S.resyncs, S.resync_skipped, S.snapshots, S.stray, S.errors, S.msgs,
           S.frames, S.frames ? (double)S.msgs / (double)S.frames : 0, rss0, rss_ready, per_conn,
           rss_end, cpu_self, cpu_srv, run_s, S.create_failed ? " (job creation FAILED)" : "");
    printf("RESULT label=%s mode=%s conns=%d failed=%d closed=%d close_codes=%d jobs=%d "
           "deliveries=%" PRIu64 " span_s=%.3f deliveries_per_s=%.0f source_deltas=%" PRIu64
           " p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f commit_p50_ms=%.3f commit_p99_ms=%.3f"
           " commit_p999_ms=%.3f commit_max_ms=%.3f commit_n=%" PRIu64 " missing=%" PRIu64
           " dup=%" PRIu64 " tail_missing=%" PRIu64 " resyncs=%" PRIu64 " snapshots=%" PRIu64
           " stray=%" PRIu64 " errors=%" PRIu64 " msgs=%" PRIu64 " frames=%" PRIu64
           " bytes=%" PRIu64
           " rss_before_kb=%ld rss_idle_kb=%ld rss_per_conn_kb=%.3f rss_end_kb=%ld"
           " cpu_swarm_s=%.2f cpu_server_s=%.2f run_s=%.1f create_failed=%d"
           " replayed=%" PRIu64 " churned=%" PRIu64 " reconnects=%" PRIu64 " http_errors=%" PRIu64
           " jobs_created=%" PRIu64 " jobs_completed=%" PRIu64 " jobs_failed=%" PRIu64
           " jobs_cancelled=%" PRIu64,
           S.label, modes[S.mode], S.nconns, S.nfailed, S.nclosed, closes, S.njobs, S.deliveries,
           span_s, dps, unique, l50, l99, l999, lmax, cpct_ms(0.50), cpct_ms(0.99), cpct_ms(0.999),
           (double)S.clat_max / 1000.0, S.ncommit, S.missing, S.dups, S.tail_missing, S.resyncs,
           S.snapshots, S.stray, S.errors, S.msgs, S.frames, S.bytes, rss0, rss_ready, per_conn,
           rss_end, cpu_self, cpu_srv, run_s, S.create_failed, S.replayed, S.churned, S.reconnects,
           S.http_errors, S.jobs_created, S.jobs_done[0], S.jobs_done[1], S.jobs_done[2]);
    printf(" stalled=%d rss_peak_kb=%ld slice_us=%ld", S.nstalled, S.rss_peak, slice_set);
    printf(" deltas_timed=%zu delta_first_p50_ms=%.3f delta_first_p99_ms=%.3f"
           " delta_last_p50_ms=%.3f delta_last_p99_ms=%.3f",
           ntimed, first50, first99, last50, last99);
    printf(" arrive_n=%" PRIu64 " arrive_p50_ms=%.3f arrive_p99_ms=%.3f arrive_p999_ms=%.3f"
           " arrive_max_ms=%.3f",
           S.narrive, S.narrive ? pct_of(S.ahist, S.alat_max, S.narrive, 0.50) : -1,
           S.narrive ? pct_of(S.ahist, S.alat_max, S.narrive, 0.99) : -1,
           S.narrive ? pct_of(S.ahist, S.alat_max, S.narrive, 0.999) : -1,
           S.narrive ? (double)S.alat_max / 1000.0 : -1);
    printf(" rss_joined_kb=%ld rss_joined_per_conn_kb=%.3f joins_ok=%" PRIu64
           " join_errors=%" PRIu64 " channel_errors=%" PRIu64 " heartbeats=%" PRIu64
           " heartbeat_replies=%" PRIu64,
           S.rss_joined, joined_per_conn, S.joins_ok, S.join_errors, S.channel_errors, S.heartbeats,
           S.heartbeat_replies);
    print_nodes(span_s, cpu_srv_b);
    fflush(stdout);
    for (int i = 0; i < S.nconns; i++)
        if (S.conns[i].state != ST_CLOSED)
            close(S.conns[i].fd);
    return S.create_failed ? 1 : 0;
}
