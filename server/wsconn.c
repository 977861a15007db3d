/*
 * wsconn.c - a WebSocket connection's output: queue, bound, writes, close
 * (see wsconn.h).
 */
#include "wsconn.h"

#include "fanout.h"
#include "wire.h"
#include "ws_rx.h"

#include "jw_log.h"
#include "jw_util.h"

#include <errno.h>
#include <inttypes.h>
#include <libwebsockets.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/* ---- messages ----------------------------------------------------------------------- */

/* A message of n bytes to be filled in, NUL-terminated, one reference. */
static jw_wsmsg *msg_alloc(size_t n)
{
    jw_wsmsg *m = jw_xmalloc(sizeof(*m) + n + 1);

    m->refs = 1;
    m->qrefs = 0;
    m->len = n;
    m->data[n] = '\0';
    return m;
}

jw_wsmsg *jw_wsmsg_new(const char *p, size_t n)
{
    jw_wsmsg *m = msg_alloc(n);

    memcpy(m->data, p, n);
    return m;
}

jw_wsmsg *jw_wsmsg_join(jw_wsmsg *const *parts, size_t n)
{
    size_t len = n ? n - 1 : 0, at = 0;
    jw_wsmsg *m;

    for (size_t i = 0; i < n; i++)
        len += parts[i]->len;
    m = msg_alloc(len);
    for (size_t i = 0; i < n; i++) {
        if (i)
            m->data[at++] = '\n';
        memcpy(m->data + at, parts[i]->data, parts[i]->len);
        at += parts[i]->len;
    }
    return m;
}

jw_wsmsg *jw_wsmsg_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    jw_wsmsg *m;

    json_decref(doc);
    if (!text)
        jw_oom("message");
    m = jw_wsmsg_new(text, strlen(text));
    free(text);
    return m;
}

void jw_wsmsg_unref(jw_wsmsg *m)
{
    if (m && --m->refs == 0)
        free(m);
}

/* ---- the lws side ------------------------------------------------------------------- */

static void lws_ask_writable(struct lws *wsi)
{
    lws_callback_on_writable(wsi);
}

static int lws_write_text(struct lws *wsi, unsigned char *p, size_t len)
{
    return lws_write(wsi, p, len, LWS_WRITE_TEXT) < (int)len ? -1 : 0;
}

/*
 * Bytes that are already whole WebSocket frames (header included). lws sends
 * a write of its HTTP kind on a WebSocket connection as it is (its ws role's
 * "send raw"), through TLS when there is TLS, keeping what the socket does
 * not take as it does for any write.
 */
static int lws_write_frames(struct lws *wsi, unsigned char *p, size_t len)
{
    return lws_write(wsi, p, len, LWS_WRITE_HTTP) < (int)len ? -1 : 0;
}

static bool lws_backed_up(struct lws *wsi)
{
    return lws_partial_buffered(wsi) != 0;
}

static bool lws_closing(struct lws *wsi)
{
    return lws_get_close_length(wsi) != 0;
}

static void lws_kill(struct lws *wsi)
{
    lws_set_timeout(wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

/* Plain TCP of its own: TLS keeps its state in lws, a mux child shares its parent's socket. */
static int lws_direct_fd(struct lws *wsi)
{
    if (lws_is_ssl(wsi) || lws_get_network_wsi(wsi) != wsi)
        return -1;
    return lws_get_socket_fd(wsi);
}

/*
 * With a payload: lws 4.1 passes a pong up (LWS_CALLBACK_RECEIVE_PONG) only
 * when it carries one, and a client's pong echoes the ping's.
 */
static int lws_ping(struct lws *wsi)
{
    unsigned char buf[LWS_PRE + 2];

    memcpy(buf + LWS_PRE, "jw", 2);
    return lws_write(wsi, buf + LWS_PRE, 2, LWS_WRITE_PING) < 2 ? -1 : 0;
}

static bool lws_has_input(struct lws *wsi)
{
    int fd = lws_get_socket_fd(lws_get_network_wsi(wsi)), n = 0;

    return fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

const jw_wsconn_io jw_wsconn_lws_io = {
    .ask_writable = lws_ask_writable,
    .write = lws_write_text,
    .write_frames = lws_write_frames,
    .backed_up = lws_backed_up,
    .close = jw_ws_close_politely,
    .kill = lws_kill,
    .direct_fd = lws_direct_fd,
    .closing = lws_closing,
    .ping = lws_ping,
    .has_input = lws_has_input,
};

/* ---- the set ------------------------------------------------------------------------ */

static void yield_cpu(void)
{
    sched_yield();
}

/*
 * One write of a connection jobwire writes itself: the messages it carries
 * are off the queue, the write's until it returns (on a helper, they are
 * read there while the loop thread goes on with the queue).
 */
struct jw_wsjob {
    jw_wsconn *c;         /* loop thread only: NULL once c closed */
    struct jw_wire *wire; /* a reference of the write's */
    jw_wsq *first, *last; /* the messages, NULL-terminated */
    size_t n, counted;    /* their count; the counted ones */
    size_t cost;          /* their bytes under the bound (c->fbytes) */
    size_t frames, payload;
    jw_wire_result result;
    int err;
};

/* A round's writes, handed to helpers or made at once. */
struct jw_wsround {
    jw_wsconns *s;
    size_t n, cap;
    jw_wsjob *jobs;
};

void jw_wsconns_init(jw_wsconns *s, const char *name, bool gather, size_t max_queue)
{
    memset(s, 0, sizeof(*s));
    s->name = name;
    s->io = &jw_wsconn_lws_io;
    s->gather = gather;
    s->max_queue = max_queue;
    s->clock = jw_mono_us;
    s->yield = yield_cpu;
    jw_map_init(&s->conns);
    jw_wsconns_set_pool(s, NULL, 0);
}

static void scratch_release(jw_wsconns *s)
{
    for (int i = 0; i < s->nscratch; i++)
        jw_buf_release(&s->scratch[i]);
    free(s->scratch);
    s->scratch = NULL;
    s->nscratch = 0;
}

void jw_wsconns_set_pool(jw_wsconns *s, jw_fanout *pool, size_t min)
{
    scratch_release(s);
    s->pool = jw_fanout_helpers(pool) > 0 ? pool : NULL; /* no helpers: nothing to share */
    s->parallel_min = min;
    s->nscratch = 1 + jw_fanout_helpers(pool);
    s->scratch = jw_xcalloc((size_t)s->nscratch, sizeof(*s->scratch));
    for (int i = 0; i < s->nscratch; i++)
        jw_buf_init(&s->scratch[i], LWS_PRE + 4096);
}

void jw_wsconns_set_mem(jw_wsconns *s, jw_wsmem *m)
{
    if (m->nsets == (int)(sizeof(m->sets) / sizeof(m->sets[0]))) {
        jw_log_error("%s: a queue budget counts two sets at most", s->name);
        abort();
    }
    m->sets[m->nsets++] = s;
    s->mem = m;
}

void jw_wsconns_set_liveness(jw_wsconns *s, jw_timers *timers, int64_t ping_us)
{
    s->timers = ping_us > 0 ? timers : NULL;
    s->ping_us = ping_us;
}

static void round_free(jw_wsround *r);

void jw_wsconns_release(jw_wsconns *s)
{
    while (s->rounds_out > 0) /* its writes still with helpers */
        jw_fanout_finish(s->pool);
    jw_map_release(&s->conns);
    scratch_release(s);
    round_free(s->round);
    s->round = NULL;
}

static void dirty_unlink(jw_wsconn *c)
{
    jw_wsconns *s = c->set;

    if (!c->dirty)
        return;
    if (c->dprev)
        c->dprev->dnext = c->dnext;
    else
        s->dirty_head = c->dnext;
    if (c->dnext)
        c->dnext->dprev = c->dprev;
    else
        s->dirty_tail = c->dprev;
    c->dprev = c->dnext = NULL;
    c->dirty = false;
}

static void on_live(jw_timer *t, void *arg);
static void held_set(jw_wsconn *c, size_t n);

void jw_wsconn_open(jw_wsconns *s, jw_wsconn *c, struct lws *wsi)
{
    memset(c, 0, sizeof(*c));
    c->set = s;
    c->wsi = wsi;
    c->id = ++s->next_id;
    snprintf(c->key, sizeof(c->key), "%" PRIu64, c->id);
    jw_map_put(&s->conns, c->key, c);
    c->open = true;
    c->wire = s->io->direct_fd ? jw_wire_open(s->io->direct_fd(wsi)) : NULL;
    s->stats.connections++;
    if (s->timers && s->io->ping) {
        c->heard_us = s->clock();
        jw_timers_arm(s->timers, &c->live, c->heard_us + s->ping_us, on_live, c);
    }
}

void jw_wsconn_closed(jw_wsconn *c)
{
    if (!c->open)
        return;
    if (c->set->timers) {
        jw_timers_cancel(c->set->timers, &c->live);
        jw_timers_cancel(c->set->timers, &c->close_due);
    }
    dirty_unlink(c);
    if (c->job) /* in flight: its messages are freed when the write comes back */
        c->job->c = NULL;
    c->job = NULL;
    jw_wire_close(c->wire); /* before lws closes the socket; waits for a send under way */
    c->wire = NULL;
    jw_wsconn_drop_all(c);
    held_set(c, 0);
    jw_map_del(&c->set->conns, c->key);
    c->set->stats.connections--;
    c->open = false;
}

jw_wsconn *jw_wsconn_find(jw_wsconns *s, const char *key)
{
    return jw_map_get(&s->conns, key);
}

/* ---- liveness ----------------------------------------------------------------------- */

void jw_wsconn_heard(jw_wsconn *c)
{
    if (!c->set->timers)
        return;
    c->heard_us = c->set->clock();
    c->pinged_us = c->ping_sent_us = 0;
    c->ping_owed = false; /* one not yet written is moot */
}

static bool ended(jw_wsconn *c);

/*
 * Due at heard + ping_us, then (pinged) at sent + ping_us, judged by the
 * clock: a run that comes late (a loop that fell behind) must neither drop
 * a connection whose ping has not gone nor one whose answer waits unread.
 * A ping that cannot even be written (the socket stays full) gives up
 * 2 * ping_us after it was asked for.
 */
static void on_live(jw_timer *t, void *arg)
{
    jw_wsconns *s;
    jw_wsconn *c = arg;
    int64_t now, due;

    (void)t;
    if (!c->open || ended(c))
        return; /* lws is closing it, with timeouts of its own */
    s = c->set;
    now = s->clock();
    if (c->heard_us + s->ping_us <= now && s->io->has_input && s->io->has_input(c->wsi))
        jw_wsconn_heard(c);               /* something came: it will be read */
    if (c->heard_us + s->ping_us > now) { /* heard since: due later */
        jw_timers_arm(s->timers, &c->live, c->heard_us + s->ping_us, on_live, c);
        return;
    }
    if (!c->pinged_us) {
        c->pinged_us = now;
        c->ping_sent_us = 0;
        c->ping_owed = true;
        jw_wsconn_want_write(c);
    }
    due = c->ping_sent_us ? c->ping_sent_us + s->ping_us : c->pinged_us + 2 * s->ping_us;
    if (now < due) {
        jw_timers_arm(s->timers, &c->live, due, on_live, c);
        return;
    }
    jw_log_info("%s conn=%" PRIu64 ": nothing came in %" PRId64 " s after a ping%s; dropped",
                s->name, c->id, s->ping_us / 1000000,
                c->ping_sent_us ? "" : " (which the socket did not take)");
    s->stats.idle_drops++;
    c->ended = true;
    s->io->kill(c->wsi);
}

/* ---- the process' budget ----------------------------------------------------------- */

/*
 * What the budget counts, malloc's overhead included (an estimate: glibc adds
 * 8 bytes and rounds to 16).
 */
#define ENTRY_COST (sizeof(jw_wsq) + 16)

static size_t msg_cost(const jw_wsmsg *m)
{
    return sizeof(*m) + m->len + 1 + 16;
}

static void on_check(jw_timer *t, void *arg)
{
    (void)t;
    jw_wsmem_enforce(arg);
}

/* A set of m's is in a publish round, whose flush checks m at its end. */
static bool mem_in_round(const jw_wsmem *m)
{
    for (int i = 0; i < m->nsets; i++)
        if (m->sets[i]->hold > 0)
            return true;
    return false;
}

/* m grew: past its limit outside a round, a check is due at once (not in the middle of a
 * caller's walk over connections, which a shed would change under it). */
static void mem_grew(jw_wsmem *m)
{
    if (!m || !m->limit || m->used <= m->limit || m->enforcing || mem_in_round(m))
        return;
    if (m->timers && !jw_timer_armed(&m->check))
        jw_timers_arm(m->timers, &m->check, 0, on_check, m);
}

/* A queue entry took (or let go of) a reference to msg: counted while any holds it. */
static void mem_take(jw_wsconns *s, jw_wsmsg *msg)
{
    if (msg && msg->qrefs++ == 0 && s->mem)
        s->mem->used += msg_cost(msg);
}

static void mem_let_go(jw_wsconns *s, jw_wsmsg *msg)
{
    if (msg && --msg->qrefs == 0 && s->mem)
        s->mem->used -= msg_cost(msg);
}

/*
 * lws holds bytes of c's last write and nothing else is queued: its WRITEABLE
 * callback, which lws makes only once it has sent them, says when they stop
 * counting. Not marked want_write: a round may still write c directly as soon
 * as lws holds nothing (it checks).
 */
static void ask_when_drained(jw_wsconn *c)
{
    if (!c->want_write)
        c->set->io->ask_writable(c->wsi);
}

/* lws may hold n bytes of c's last write (it sends them before calling WRITEABLE). */
static void held_set(jw_wsconn *c, size_t n)
{
    jw_wsmem *m = c->set->mem;

    if (m) {
        m->used = m->used - c->lws_held + n;
        if (n > c->lws_held)
            mem_grew(m);
    }
    c->lws_held = n;
}

void jw_wsmem_init(jw_wsmem *m, size_t limit, jw_timers *timers)
{
    memset(m, 0, sizeof(*m));
    m->limit = limit;
    m->timers = timers;
    m->clock = jw_mono_us;
}

void jw_wsmem_release(jw_wsmem *m)
{
    if (m->timers)
        jw_timers_cancel(m->timers, &m->check);
}

typedef struct victim {
    jw_wsconn *c;
    size_t qbytes;
} victim;

/* Furthest behind first; among equals, the oldest connection. */
static int victim_cmp(const void *a, const void *b)
{
    const victim *x = a, *y = b;

    if (x->qbytes != y->qbytes)
        return x->qbytes > y->qbytes ? -1 : 1;
    return x->c->id < y->c->id ? -1 : x->c->id > y->c->id;
}

/* One line at most every 10 s, with what happened since the last. */
#define MEM_LOG_US (10 * 1000000LL)

static void mem_log(jw_wsmem *m, size_t before, int64_t took_us)
{
    int64_t now = m->clock();

    if (m->logged_us && now - m->logged_us < MEM_LOG_US)
        return;
    jw_log_warn("websocket output: %zu bytes queued, over --ws-max-queue-total %zu; shed %" PRIu64
                " connection(s) furthest behind in %" PRIu64 " pass(es)%s, %zu bytes now"
                " (this pass: %.1f ms)",
                before, m->limit, m->unlogged_sheds, m->unlogged_passes,
                m->logged_us ? " since the last report" : "", m->used, (double)took_us / 1000);
    m->logged_us = now;
    m->unlogged_sheds = m->unlogged_passes = 0;
}

size_t jw_wsmem_enforce(jw_wsmem *m)
{
    size_t low, before = m->used, n = 0, cap = 0, shed = 0;
    victim *v = NULL;
    int64_t t0;

    if (m->used <= m->limit)
        m->stuck_at = 0;
    if (!m->limit || m->used <= m->limit || m->enforcing || m->used <= m->stuck_at)
        return 0;
    t0 = m->clock();
    m->enforcing = true;
    if (m->timers)
        jw_timers_cancel(m->timers, &m->check);
    for (int i = 0; i < m->nsets; i++) {
        jw_wsconns *s = m->sets[i];
        const char *k;
        void *val;

        if (!s->shed)
            continue;
        for (size_t it = 0; jw_map_next(&s->conns, &it, &k, &val);) {
            jw_wsconn *c = val;

            if (!c->qcounted)
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                v = jw_xrealloc(v, cap * sizeof(*v));
            }
            v[n++] = (victim){c, c->qbytes};
        }
    }
    if (n) /* qsort's array may not be NULL, even empty */
        qsort(v, n, sizeof(*v), victim_cmp);
    low = m->limit - m->limit / 4;
    for (size_t i = 0; i < n && m->used > low; i++) {
        v[i].c->set->shed(v[i].c);
        shed++;
    }
    free(v);
    /* Still over: what is left cannot be shed (replies, lws' copies). No walk over every
     * connection at each round until it grows by an eighth of the limit. */
    m->stuck_at = m->used > m->limit ? m->used + m->limit / 8 : 0;
    m->sheds += shed;
    m->passes++;
    m->unlogged_sheds += shed;
    m->unlogged_passes++;
    mem_log(m, before, m->clock() - t0);
    m->enforcing = false;
    return shed;
}

/* ---- the queue ---------------------------------------------------------------------- */

/* What a message of len bytes costs under the bound: a gathered one, its separator too. */
static size_t cost(const jw_wsconns *s, size_t len)
{
    return len + (s->gather ? 1 : 0);
}

static size_t entry_len(const jw_wsq *e)
{
    return (e->pre ? e->pre->len : 0) + e->m->len;
}

static void entry_free(jw_wsconns *s, jw_wsq *e)
{
    mem_let_go(s, e->pre);
    mem_let_go(s, e->m);
    if (s->mem)
        s->mem->used -= ENTRY_COST;
    jw_wsmsg_unref(e->pre);
    jw_wsmsg_unref(e->m);
    free(e);
}

/* c has something to send: now (a WRITEABLE callback), or at the flush when held. */
void jw_wsconn_want_write(jw_wsconn *c)
{
    jw_wsconns *s = c->set;

    if (c->dirty || c->want_write)
        return;
    if (!s->hold) {
        c->want_write = true;
        s->io->ask_writable(c->wsi);
        return;
    }
    /* At the tail: the connections given the round's oldest messages are written first. */
    c->dirty = true;
    c->dnext = NULL;
    c->dprev = s->dirty_tail;
    if (s->dirty_tail)
        s->dirty_tail->dnext = c;
    else
        s->dirty_head = c;
    s->dirty_tail = c;
}

void jw_wsconn_push(jw_wsconn *c, jw_wsmsg *pre, jw_wsmsg *m, const void *tag, unsigned counted)
{
    jw_wsq *e = jw_xmalloc(sizeof(*e));

    if (pre)
        pre->refs++;
    m->refs++;
    e->pre = pre;
    e->m = m;
    e->tag = tag;
    e->counted = counted;
    e->next = NULL;
    if (c->qtail)
        c->qtail->next = e;
    else
        c->qhead = e;
    c->qtail = e;
    c->qbytes += cost(c->set, entry_len(e));
    c->qcounted += counted;
    mem_take(c->set, pre);
    mem_take(c->set, m);
    if (c->set->mem) {
        c->set->mem->used += ENTRY_COST;
        mem_grew(c->set->mem);
    }
    jw_wsconn_want_write(c);
}

bool jw_wsconn_fits(const jw_wsconn *c, size_t len)
{
    return c->qbytes + c->fbytes + cost(c->set, len) <= c->set->max_queue;
}

/* Drops the entries that carry counted messages, or those tagged tag; how many entries. */
static size_t drop_where(jw_wsconn *c, bool counted_only, const void *tag)
{
    jw_wsq **pp = &c->qhead, *last = NULL;
    size_t n = 0;

    while (*pp) {
        jw_wsq *e = *pp;

        if (counted_only ? e->counted : e->tag == tag) {
            *pp = e->next;
            c->qbytes -= cost(c->set, entry_len(e));
            c->qcounted -= e->counted;
            entry_free(c->set, e);
            n++;
            continue;
        }
        last = e;
        pp = &e->next;
    }
    c->qtail = last;
    return n;
}

size_t jw_wsconn_drop_tag(jw_wsconn *c, const void *tag)
{
    return drop_where(c, false, tag);
}

size_t jw_wsconn_drop_counted(jw_wsconn *c)
{
    return drop_where(c, true, NULL);
}

void jw_wsconn_drop_all(jw_wsconn *c)
{
    while (c->qhead) {
        jw_wsq *e = c->qhead;

        c->qhead = e->next;
        entry_free(c->set, e);
    }
    c->qtail = NULL;
    c->qbytes = 0;
    c->qcounted = 0;
}

void jw_wsconn_slow_close(jw_wsconn *c, const char *why)
{
    c->set->stats.slow_closes++;
    jw_log_warn("%s conn=%" PRIu64 " closed: %s", c->set->name, c->id, why);
    jw_wsconn_close(c, 4008, "slow consumer");
}

bool jw_wsconn_make_room(jw_wsconn *c, size_t len)
{
    char why[96];

    if (jw_wsconn_fits(c, len))
        return true;
    if (c->set->shed)
        c->set->shed(c);
    if (jw_wsconn_fits(c, len))
        return true;
    snprintf(why, sizeof(why), "more than %zu bytes of replies queued", c->set->max_queue);
    jw_wsconn_drop_all(c);
    jw_wsconn_slow_close(c, why);
    return false;
}

/* A write failed: c is killed, and nothing more is written to it (a failed send may
 * have sent part of a frame, so a next write would start in its middle). */
static void kill_conn(jw_wsconn *c)
{
    c->ended = true;
    c->set->io->kill(c->wsi);
}

void jw_wsconn_peer_closed(jw_wsconn *c)
{
    c->ended = true;
}

/*
 * Nothing more may be written to c: it ended, or lws began a close (after its
 * close frame nothing may follow, RFC 6455 5.5.1; lws' write path does not
 * refuse data then, and it still calls WRITEABLE while it waits for the ack).
 */
static bool ended(jw_wsconn *c)
{
    const jw_wsconn_io *io = c->set->io;

    if (!c->ended && io->closing && io->closing(c->wsi))
        c->ended = true;
    return c->ended;
}

/*
 * A close goes out from a WRITEABLE callback, which never comes while the
 * client reads nothing and its socket stays full - and meanwhile lws keeps
 * reading what the client sends, to be thrown away. Past this the connection
 * is dropped without its close frame (lws' own timeout takes over once the
 * frame went).
 */
#define CLOSE_DEADLINE_US (5 * 1000000)

static void on_close_due(jw_timer *t, void *arg)
{
    jw_wsconn *c = arg;

    (void)t;
    if (!c->open || c->close_begun || ended(c))
        return;
    jw_log_info("%s conn=%" PRIu64 ": its close (%d) could not be sent in %d s; dropped",
                c->set->name, c->id, c->close_code, CLOSE_DEADLINE_US / 1000000);
    c->ended = true;
    c->set->io->kill(c->wsi);
}

void jw_wsconn_close(jw_wsconn *c, int code, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    if (c->set->timers && c->open)
        jw_timers_arm(c->set->timers, &c->close_due, c->set->clock() + CLOSE_DEADLINE_US,
                      on_close_due, c);
    jw_wsconn_want_write(c);
}

/* ---- writing ------------------------------------------------------------------------ */

static bool owes(const jw_wsconn *c)
{
    return c->set->owes && c->set->owes(c);
}

/* The first n entries of c's queue left in `frames` frames, `bytes` bytes: counted, dropped. */
static void written(jw_wsconn *c, size_t n, size_t frames, size_t bytes)
{
    jw_wsconns *s = c->set;

    s->stats.frames += frames;
    s->stats.bytes += bytes;
    while (n--) {
        jw_wsq *e = c->qhead;

        c->qhead = e->next;
        c->qbytes -= cost(s, entry_len(e));
        c->qcounted -= e->counted;
        s->stats.counted += e->counted;
        entry_free(s, e);
    }
    if (!c->qhead)
        c->qtail = NULL;
}

static size_t header_len(size_t len)
{
    return len < 126 ? 2 : len <= 0xffff ? 4 : 10;
}

/* A server frame's header (RFC 6455 5.2): FIN, text, unmasked, the length. */
static void add_frame_header(jw_buf *f, size_t len)
{
    unsigned char h[10];
    size_t n = header_len(len);

    h[0] = 0x81;
    if (n == 2) {
        h[1] = (unsigned char)len;
    } else if (n == 4) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    }
    jw_buf_add(f, (const char *)h, n);
}

/*
 * How many entries from e on one write carries (at least one): up to
 * JW_WSCONN_FRAME bytes of messages gathered into one frame ('\n'-separated),
 * or whole frames, one message each, as many as fit in JW_WSCONN_FRAME bytes
 * (one send for a burst of Phoenix messages rather than one each).
 */
static size_t batch_count(const jw_wsconns *s, const jw_wsq *e)
{
    size_t n = 0, bytes = 0;

    for (; e; e = e->next, n++) {
        size_t len = entry_len(e);

        if (s->gather) {
            if (n && bytes + 1 + len > JW_WSCONN_FRAME)
                break;
            bytes += (n ? 1 : 0) + len;
        } else {
            if (n && bytes + len + 10 > JW_WSCONN_FRAME)
                break;
            bytes += header_len(len) + len;
        }
    }
    return n;
}

/* What one write carries: queue entries, frames, payload bytes. */
typedef struct carried {
    size_t n, frames, payload;
} carried;

/*
 * n entries from e as one gathered frame into f after LWS_PRE bytes: the
 * payload alone for lws_write to frame, or with its header. Reads the
 * entries and their messages only.
 */
static carried build_gathered(const jw_wsq *e, size_t n, jw_buf *f, bool header)
{
    carried w = {n, 1, 0};
    const jw_wsq *p = e;

    for (size_t i = 0; i < n; i++, p = p->next)
        w.payload += (i ? 1 : 0) + entry_len(p);
    jw_buf_reset(f);
    jw_buf_grow(f, LWS_PRE + 10 + w.payload);
    f->len = LWS_PRE;
    if (header)
        add_frame_header(f, w.payload);
    for (size_t i = 0; i < n; i++, e = e->next) {
        if (i)
            jw_buf_addch(f, '\n');
        if (e->pre)
            jw_buf_add(f, e->pre->data, e->pre->len);
        jw_buf_add(f, e->m->data, e->m->len);
    }
    return w;
}

/* n entries from e as whole frames, one message each, into f after LWS_PRE bytes. */
static carried build_frames(const jw_wsq *e, size_t n, jw_buf *f)
{
    carried w = {n, n, 0};

    jw_buf_reset(f);
    jw_buf_grow(f, LWS_PRE);
    f->len = LWS_PRE;
    for (size_t i = 0; i < n; i++, e = e->next) {
        add_frame_header(f, entry_len(e));
        if (e->pre)
            jw_buf_add(f, e->pre->data, e->pre->len);
        jw_buf_add(f, e->m->data, e->m->len);
        w.payload += entry_len(e);
    }
    return w;
}

/* One write of the front of c's queue through lws (TLS); the bytes it took, -1. */
static int write_frame(jw_wsconn *c)
{
    jw_wsconns *s = c->set;
    jw_buf *f = &s->scratch[0]; /* the loop thread's: worker 0 */
    size_t n = batch_count(s, c->qhead);
    carried w;
    int rc;

    if (s->gather) {
        w = build_gathered(c->qhead, n, f, false);
        rc = s->io->write(c->wsi, (unsigned char *)f->data + LWS_PRE, f->len - LWS_PRE);
    } else {
        w = build_frames(c->qhead, n, f);
        rc = s->io->write_frames(c->wsi, (unsigned char *)f->data + LWS_PRE, f->len - LWS_PRE);
    }
    if (rc < 0)
        return -1;
    written(c, w.n, w.frames, w.payload);
    if (s->io->backed_up(c->wsi))
        held_set(c, f->len - LWS_PRE); /* at most all of it */
    return (int)(f->len - LWS_PRE);
}

/* ---- writes through the gate (plain TCP) ------------------------------------------- */

/* The write of the front of c's queue becomes j's. */
static void job_take(jw_wsjob *j, jw_wsconn *c)
{
    jw_wsconns *s = c->set;
    jw_wsq *e = c->qhead;

    *j = (jw_wsjob){.c = c, .wire = jw_wire_ref(c->wire), .first = e};
    j->n = batch_count(s, e);
    for (size_t i = 0; i < j->n; i++) {
        j->last = e;
        j->cost += cost(s, entry_len(e));
        j->counted += e->counted;
        e = e->next;
    }
    j->last->next = NULL; /* nothing on the loop thread reaches the write's messages now */
    c->qhead = e;
    if (!e)
        c->qtail = NULL;
    c->qbytes -= j->cost;
    c->qcounted -= j->counted;
    c->fbytes += j->cost;
}

/* Any thread: builds j's frames in worker's scratch and hands them to the gate. */
static void job_send(jw_wsconns *s, jw_wsjob *j, int worker)
{
    jw_buf *f = &s->scratch[worker];
    carried w =
        s->gather ? build_gathered(j->first, j->n, f, true) : build_frames(j->first, j->n, f);

    j->frames = w.frames;
    j->payload = w.payload;
    j->result = jw_wire_send(j->wire, f->data + LWS_PRE, f->len - LWS_PRE, &j->err);
}

/* c waits for its socket: a WRITEABLE callback, once until it comes. */
static void wait_writable(jw_wsconn *c)
{
    if (c->want_write)
        return;
    c->want_write = true;
    c->set->io->ask_writable(c->wsi);
}

/* The gate's held bytes of c, counted in the budget. */
static void refresh_held(jw_wsconn *c)
{
    if (c->wire)
        held_set(c, jw_wire_held(c->wire));
    else if (c->lws_held && !c->set->io->backed_up(c->wsi))
        held_set(c, 0); /* lws has sent them */
}

/* Back on the loop thread: what went is counted and freed; what did not, queued again. */
static void job_done(jw_wsconns *s, jw_wsjob *j)
{
    jw_wsconn *c = j->c;
    bool went = j->result == JW_WIRE_SENT || j->result == JW_WIRE_HELD;

    if (c) {
        c->job = NULL;
        c->fbytes -= j->cost;
    }
    if (c && j->result == JW_WIRE_WAIT) {
        /* Nothing went (the socket is behind): back to the front, in order. */
        j->last->next = c->qhead;
        c->qhead = j->first;
        if (!c->qtail)
            c->qtail = j->last;
        c->qbytes += j->cost;
        c->qcounted += j->counted;
    } else {
        if (went) {
            s->stats.direct_writes++;
            s->stats.frames += j->frames;
            s->stats.bytes += j->payload;
            s->stats.counted += j->counted;
        }
        for (jw_wsq *e = j->first, *next; e; e = next) {
            next = e->next;
            entry_free(s, e);
        }
    }
    jw_wire_unref(j->wire);
    j->wire = NULL;
    if (!c || ended(c))
        return;
    if (j->result == JW_WIRE_FAILED || j->result == JW_WIRE_CLOSED) {
        kill_conn(c); /* part of a frame may have gone: nothing may follow it */
        return;
    }
    refresh_held(c);
    if (j->result != JW_WIRE_SENT)
        wait_writable(c);
    else if (c->qhead || owes(c) || c->closing || c->ping_owed)
        jw_wsconn_want_write(c);
}

/*
 * write_some for a connection jobwire writes itself: the gate's held bytes,
 * then one write of the front of the queue, at once; with the queue empty,
 * the close once nothing is held.
 */
static int write_wire(jw_wsconn *c)
{
    jw_wsconns *s = c->set;
    jw_wsjob j;
    int err;

    if (c->qhead) {
        job_take(&j, c);
        c->job = &j;
        job_send(s, &j, 0);
        job_done(s, &j);
        return 0;
    }
    switch (jw_wire_send(c->wire, NULL, 0, &err)) {
    case JW_WIRE_SENT: break;
    case JW_WIRE_WAIT:
        refresh_held(c);
        wait_writable(c);
        return 0;
    default: return -1;
    }
    refresh_held(c);
    if (c->closing && !c->close_begun) {
        c->close_begun = true;
        s->io->close(c->wsi, c->close_code, c->close_reason);
    }
    return 0;
}

/*
 * Writes what is queued: one gathered frame, or writes of whole frames (one
 * message each) while less than JW_WSCONN_FRAME bytes went and lws holds
 * nothing back. What remains (or a close, or something owed) asks for the
 * next callback.
 */
static int write_some(jw_wsconn *c)
{
    jw_wsconns *s = c->set;
    size_t sent = 0;

    /* Only once what is queued has gone: what is owed is the newest state. */
    if (!c->qhead && !c->closing && owes(c))
        s->pay(c);
    if (c->wire)
        return write_wire(c);
    if (!c->qhead) {
        if (c->closing && !c->close_begun) {
            c->close_begun = true;
            s->io->close(c->wsi, c->close_code, c->close_reason);
        }
        return 0;
    }
    do {
        int n = write_frame(c);

        if (n < 0)
            return -1;
        sent += (size_t)n;
    } while (!s->gather && c->qhead && sent < JW_WSCONN_FRAME && !s->io->backed_up(c->wsi));
    if (c->qhead || c->closing || owes(c))
        jw_wsconn_want_write(c);
    else if (c->lws_held)
        ask_when_drained(c);
    return 0;
}

int jw_wsconn_on_writable(jw_wsconn *c)
{
    jw_wsconns *s = c->set;

    if (!c->open || ended(c))
        return 0;
    c->want_write = false;
    if (c->job)
        return 0;    /* its write is with a helper; when it comes back, the rest follows */
    refresh_held(c); /* lws calls WRITEABLE only once it holds nothing back; the gate may */
    if (c->ping_owed) {
        c->ping_owed = false;
        if (s->io->ping(c->wsi) < 0)
            return -1;
        s->stats.pings++;
        /* The answer has ping_us from now: the check moves to then. */
        c->ping_sent_us = s->clock();
        if (s->timers)
            jw_timers_arm(s->timers, &c->live, c->ping_sent_us + s->ping_us, on_live, c);
        if (s->io->backed_up(c->wsi)) { /* the rest at the next callback */
            if (c->qhead || c->closing || owes(c))
                jw_wsconn_want_write(c);
            return 0;
        }
    }
    return write_some(c);
}

void jw_wsconns_hold(jw_wsconns *s)
{
    s->hold++;
}

/* ---- a round's writes -------------------------------------------------------------- */

static void round_free(jw_wsround *r)
{
    if (r) {
        free(r->jobs);
        free(r);
    }
}

/* c's write joins the round being built (started when r is NULL). */
static jw_wsround *round_add(jw_wsconns *s, jw_wsround *r, jw_wsconn *c)
{
    if (!r) {
        r = s->round ? s->round : jw_xcalloc(1, sizeof(*r));
        s->round = NULL;
        r->s = s;
        r->n = 0;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->jobs = jw_xrealloc(r->jobs, r->cap * sizeof(*r->jobs));
    }
    job_take(&r->jobs[r->n++], c);
    return r;
}

/* The set keeps one round for the next flush (most are made at once). */
static void round_recycle(jw_wsconns *s, jw_wsround *r)
{
    if (s->round)
        round_free(r);
    else
        s->round = r;
}

/* Helper thread: write i of the round. */
static void round_send(void *arg, size_t i, int worker)
{
    jw_wsround *r = arg;

    job_send(r->s, &r->jobs[i], worker);
}

/* Loop thread, from jw_fanout_drain: the round's writes came back. Connections with more
 * queued meanwhile are written in a round of their own. */
static void round_done(void *arg)
{
    jw_wsround *r = arg;
    jw_wsconns *s = r->s;

    s->rounds_out--;
    jw_wsconns_hold(s);
    for (size_t i = 0; i < r->n; i++)
        job_done(s, &r->jobs[i]);
    round_recycle(s, r);
    jw_wsconns_flush(s);
}

static void round_run(jw_wsconns *s, jw_wsround *r)
{
    for (size_t i = 0; i < r->n; i++)
        r->jobs[i].c->job = &r->jobs[i];
    if (s->pool && r->n >= s->parallel_min) {
        s->stats.parallel_rounds++;
        s->rounds_out++;
        jw_fanout_submit(s->pool, r->n, round_send, round_done, r);
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        job_send(s, &r->jobs[i], 0);
        job_done(s, &r->jobs[i]);
    }
    round_recycle(s, r);
}

static void flush_round(jw_wsconns *s);

void jw_wsconns_flush(jw_wsconns *s)
{
    if (s->hold > 0 && --s->hold > 0)
        return;
    flush_round(s);
    /* The round's output is queued or gone: the budget is checked now, unless another
     * set's round is under way (its flush checks). */
    if (s->mem && !mem_in_round(s->mem))
        jw_wsmem_enforce(s->mem);
}

static void flush_round(jw_wsconns *s)
{
    jw_wsround *r = NULL;
    jw_wsconn *c;

    while ((c = s->dirty_head)) {
        dirty_unlink(c);
        /* In flight: when its write comes back, the queue is looked at again. */
        if (ended(c) || c->job)
            continue;
        refresh_held(c);
        /* Behind a pending callback, lws' own leftovers, the gate's, a ping or a close:
         * the callback writes it, in order. */
        if (c->closing || c->want_write || c->ping_owed || s->io->backed_up(c->wsi) ||
            (c->wire && c->lws_held)) {
            jw_wsconn_want_write(c);
            continue;
        }
        if (c->wire && c->qhead) {
            r = round_add(s, r, c);
            if (r->n == JW_WSCONN_ROUND_MAX) { /* the helpers start on it; the next part follows */
                bool alone = !s->pool;

                round_run(s, r);
                r = NULL;
                /*
                 * Written alone, a crowd's round is thousands of sends, ~10 ms for
                 * 2,000. The db thread and a local PostgreSQL backend woken meanwhile
                 * may share this CPU (one CPU, or a quota of one): the yield offers
                 * it to them between parts, so the next commit need not wait out the
                 * round. Whether they get it is the scheduler's choice: Linux 6.18
                 * mostly keeps the loop running (docs/benchmarks.md, twelfth and
                 * thirteenth looks). With nothing else runnable here, this is one
                 * cheap syscall per part.
                 */
                if (alone)
                    s->yield();
            }
            continue;
        }
        /* The socket took everything so far: it very likely takes this too, and
         * what it does not, lws keeps and sends before anything else. */
        if (write_some(c) < 0)
            kill_conn(c);
    }
    if (r)
        round_run(s, r);
}

size_t jw_wsconns_close_all(jw_wsconns *s, int code, const char *reason)
{
    const char *k;
    void *v;

    for (size_t it = 0; jw_map_next(&s->conns, &it, &k, &v);)
        jw_wsconn_close(v, code, reason);
    return s->conns.count;
}
