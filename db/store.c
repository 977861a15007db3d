/*
 * store.c - the db thread: group commit of delta batches to PostgreSQL.
 *
 * The thread keeps a FIFO of pending batches. Each round it forms a group from
 * the front of that FIFO (whole batches, up to max_group_deltas deltas) and
 * writes it as one pipelined implicit transaction (commit.c). A group leaves
 * the FIFO only when its outcome is known: committed, or rejected batch by
 * batch. See jw_store.h for the failure rules. Between groups the thread
 * moves retention along (retention.c) and renews this node's heartbeat
 * (every ttl/3); reads have a thread of their own (reads.c, store_read.c).
 */
#include "store_internal.h"

#include "jw_error.h"
#include "jw_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_GROUP 500
#define DEFAULT_BACKOFF_MIN_MS 100
#define DEFAULT_BACKOFF_MAX_MS 5000
#define DEFAULT_PRUNE_BATCH 1000
#define DEFAULT_MAX_READS_QUEUED 256
#define DEFAULT_PRUNE_INTERVAL_MS 600000

/* ---- small helpers ------------------------------------------------------ */

/* Microseconds: one group commit on loopback is ~1 ms; a sick disk, seconds. */
static const jw_hist_spec commit_us_spec = {
    .n = 16,
    .le = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
           2500000, 5000000, 10000000},
    .decimals = 6,
};

/* Batches or deltas in one group: up to max_group_deltas (500 by default, at most 5000). */
static const jw_hist_spec group_size_spec = {
    .n = 13,
    .le = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096},
    .decimals = 0,
};

void store__set_error(jw_store *s, const char *fmt, ...)
{
    char clean[256];
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(clean, sizeof(clean), fmt, ap);
    va_end(ap);
    /*
     * libpq messages end with newlines and indent their hints with a tab
     * ("...refused\n\tIs the server running..."): one line, single spaces, so
     * the stats line and /readyz's reason read as a sentence.
     */
    n = 0;
    for (const char *p = clean; *p; p++) {
        char ch = *p == '\n' || *p == '\t' || *p == '\r' ? ' ' : *p;

        if (ch != ' ' || (n && clean[n - 1] != ' '))
            clean[n++] = ch;
    }
    while (n && clean[n - 1] == ' ')
        n--;
    clean[n] = '\0';
    pthread_mutex_lock(&s->stats_lock);
    memcpy(s->stats.last_error, clean, n + 1);
    pthread_mutex_unlock(&s->stats_lock);
}

/* ---- answering ---------------------------------------------------------- */

/*
 * Detaches the first count batches, answers them with status/error. A
 * commit (status 0) took commit_us; it goes into the histograms. Its
 * batches' committed_us is the group's commit stamp (group_cts), the cts
 * journaled with their deltas.
 */
static void answer_front(jw_store *s, size_t count, int status, const char *error,
                         int64_t commit_us)
{
    jw_mailbox_node *first = s->pending_head, *last = NULL, *n = first;
    uint64_t deltas = 0;
    int64_t now = jw_mono_us(), wall = status == 0 ? s->group_cts : 0;

    for (size_t i = 0; i < count; i++) {
        jw_batch *b = jw_container_of(n, jw_batch, node);

        b->status = status;
        b->committed_us = wall;
        free(b->error);
        b->error = error ? jw_xstrdup(error) : NULL;
        b->done_us = now;
        deltas += b->count;
        last = n;
        n = n->next;
    }
    s->pending_head = n;
    if (!n)
        s->pending_tail = NULL;
    s->pending_count -= count;

    pthread_mutex_lock(&s->stats_lock);
    if (status == 0) {
        s->stats.batches_committed += count;
        s->stats.deltas_committed += deltas;
        s->stats.commits++;
        jw_hist_observe(&s->stats.commit_us, commit_us > 0 ? (uint64_t)commit_us : 0);
        jw_hist_observe(&s->stats.commit_batches, count);
        jw_hist_observe(&s->stats.commit_deltas, deltas);
    } else {
        s->stats.batches_failed += count;
    }
    s->stats.queued_batches -= count;
    pthread_mutex_unlock(&s->stats_lock);

    if (!jw_mailbox_post_chain(&s->done, first, last, count))
        jw_log_error("db: answer mailbox closed; %zu batches dropped", count); /* cannot happen */
}

static void take_inbox(jw_store *s, jw_mailbox_node *nodes)
{
    while (nodes) {
        jw_mailbox_node *next = nodes->next;

        nodes->next = NULL;
        if (s->pending_tail)
            s->pending_tail->next = nodes;
        else
            s->pending_head = nodes;
        s->pending_tail = nodes;
        s->pending_count++;
        nodes = next;
    }
}

/* How many batches the next transaction takes from the front of the FIFO. */
static size_t group_size(jw_store *s)
{
    jw_mailbox_node *n = s->pending_head;
    size_t count = 0, deltas = 0;

    if (s->unknown_batches)
        return s->unknown_batches;
    if (s->split_left)
        return s->split_chunk < s->split_left ? s->split_chunk : s->split_left;
    while (n) {
        size_t c = jw_container_of(n, jw_batch, node)->count;

        if (count && deltas + c > (size_t)s->max_group)
            break;
        deltas += c;
        count++;
        n = n->next;
    }
    return count;
}

/*
 * Sleeps for the backoff. New batches are taken in meanwhile (they must not cut
 * the sleep short, or a busy producer would turn backoff into a spin); a stop
 * ends it at the drain deadline.
 */
static void backoff_wait(jw_store *s)
{
    int64_t until = jw_mono_us() + (int64_t)s->backoff_ms * 1000;
    int64_t now;

    while ((now = jw_mono_us()) < until) {
        if (jw_mailbox_is_closed(&s->inbox)) {
            /* A closed mailbox no longer blocks: sleep plainly. */
            int64_t us = until - now, left = atomic_load(&s->drain_deadline_us) - now;
            struct timespec ts;

            if (left < us)
                us = left > 0 ? left : 0;
            ts.tv_sec = (time_t)(us / 1000000);
            ts.tv_nsec = (long)(us % 1000000) * 1000;
            nanosleep(&ts, NULL);
            break;
        }
        take_inbox(s, jw_mailbox_wait(&s->inbox, (int)((until - now + 999) / 1000)));
    }
    s->backoff_ms = s->backoff_ms * 2 > s->backoff_max_ms ? s->backoff_max_ms : s->backoff_ms * 2;
}

/*
 * Renews the node's heartbeat when it is due. Told to the loop through
 * heartbeat_sent_us (the monotonic time it was sent: leases are trusted
 * until then + ttl - 1 s) or node_dead, and a wake-up.
 */
static void maybe_heartbeat(jw_store *s)
{
    int64_t sent = jw_mono_us();
    int rc;

    if (!s->incarnation || !s->conn || s->unknown_batches || atomic_load(&s->node_dead) ||
        sent < s->next_beat_us)
        return;
    rc = store__heartbeat(s);
    if (rc < 0) {
        jw_log_warn("db: heartbeat failed: %s", s->stats.last_error);
        store__disconnect(s);
        return;
    }
    s->next_beat_us = sent + s->node_ttl_us / 3;
    if (rc == 0) {
        int64_t next = store__node_successor(s);

        if (next)
            jw_log_error("db: another process started under node id %s (incarnation %lld after "
                         "this one's %lld) and took its jobs; committing nothing more",
                         s->node_id, (long long)next, (long long)s->incarnation);
        else
            jw_log_error("db: node %s (incarnation %lld) was declared dead; committing nothing "
                         "more",
                         s->node_id, (long long)s->incarnation);
        atomic_store(&s->node_replaced, next != 0);
        atomic_store(&s->node_dead, true);
    } else {
        atomic_store(&s->heartbeat_sent_us, sent);
    }
    if (s->wake)
        s->wake(s->wake_arg);
}

static int idle_wait_ms(jw_store *s)
{
    int ms = store__idle_wait_ms(s);

    if (s->incarnation && !atomic_load(&s->node_dead)) {
        int64_t left = (s->next_beat_us - jw_mono_us() + 999) / 1000;

        if (left < ms)
            ms = left > 0 ? (int)left : 0;
    }
    return ms;
}

static bool drain_expired(jw_store *s)
{
    return atomic_load(&s->stopping) && jw_mono_us() >= atomic_load(&s->drain_deadline_us);
}

/*
 * While idle, notice a connection PostgreSQL closed (restart, admin kill) so
 * readiness tells the truth before the next write finds out.
 */
static void check_idle_connection(jw_store *s)
{
    if (s->conn && (!PQconsumeInput(s->conn) || PQstatus(s->conn) == CONNECTION_BAD)) {
        store__set_error(s, "connection lost while idle: %s", PQerrorMessage(s->conn));
        jw_log_warn("db: %s", s->stats.last_error);
        store__disconnect(s);
    }
}

static void *store_thread(void *arg)
{
    jw_store *s = arg;
    char err[1024];

    for (;;) {
        /* Declared dead: another node may hold our jobs; write nothing more. */
        if (atomic_load(&s->node_dead)) {
            take_inbox(s, jw_mailbox_wait(&s->inbox, 100));
            if (jw_mailbox_is_closed(&s->inbox))
                break;
            continue;
        }
        /* Connect eagerly: readiness should not wait for the first write. */
        if (!s->conn) {
            take_inbox(s, jw_mailbox_take_all(&s->inbox));
            if (jw_mailbox_is_closed(&s->inbox) && !s->pending_head)
                break;
            if (!store__connect(s)) {
                store__disconnect(s);
                if (drain_expired(s))
                    break;
                backoff_wait(s);
                continue;
            }
        }
        maybe_heartbeat(s);
        if (!s->conn)
            continue;
        store__check_peers(s);
        if (!s->pending_head) {
            take_inbox(s, jw_mailbox_wait(&s->inbox, idle_wait_ms(s)));
            if (!s->pending_head) {
                if (jw_mailbox_is_closed(&s->inbox))
                    break;
                store__prune_poll(s);
                check_idle_connection(s);
                continue;
            }
        }
        take_inbox(s, jw_mailbox_take_all(&s->inbox));

        if (s->unknown_batches) {
            int c = store__group_committed(s, s->unknown_batches);

            if (c < 0) {
                store__disconnect(s);
                continue;
            }
            if (c == 1) {
                jw_log_info("db: group of %zu batches committed before the connection broke",
                            s->unknown_batches);
                answer_front(s, s->unknown_batches, 0, NULL, jw_mono_us() - s->unknown_since_us);
                store__group_unnotified(s);
                if (s->split_left)
                    s->split_left -= s->unknown_batches;
                s->unknown_batches = 0;
                continue;
            }
            s->unknown_batches = 0;
        }

        /* A heartbeat due goes first: a node declared dead writes nothing. */
        maybe_heartbeat(s);
        if (atomic_load(&s->node_dead) || !s->conn)
            continue;
        store__check_peers(s);
        store__prune_poll(s);

        size_t count = group_size(s);
        int64_t began = jw_mono_us();
        switch (store__write_group(s, count, err, sizeof(err))) {
        case WRITE_OK:
            answer_front(s, count, 0, NULL, jw_mono_us() - began);
            store__notify_group(s);
            if (s->split_left)
                s->split_left -= count;
            break;
        case WRITE_REJECTED:
            /*
             * Bisect the rejected group: halves until the offending batch
             * stands alone, then the rest of the group together again. One
             * bad batch among n costs about 2 log2(n) transactions.
             */
            if (count > 1) {
                if (!s->split_left)
                    s->split_left = count;
                s->split_chunk = (count + 1) / 2;
                break;
            }
            store__set_error(s, "batch rejected: %s", err);
            jw_log_warn("db: %s", s->stats.last_error);
            /* Lost lease: another node drives the job now (JW_ECONFLICT). */
            answer_front(s, 1, s->lease_lost ? JW_ECONFLICT : JW_EDB, err, 0);
            if (s->split_left) {
                s->split_left--;
                s->split_chunk = s->split_left;
            }
            break;
        case WRITE_LOST:
            store__set_error(s, "connection lost: %s", err);
            jw_log_warn("db: %s; will retry %zu batches", s->stats.last_error, count);
            s->unknown_batches = count;
            s->unknown_since_us = began;
            store__disconnect(s);
            if (!drain_expired(s))
                backoff_wait(s);
            break;
        }
    }

    /* Stopped: whatever could not be written is answered as such. */
    take_inbox(s, jw_mailbox_take_all(&s->inbox));
    if (s->pending_count)
        answer_front(s, s->pending_count, JW_ECLOSED, "store stopped before this batch committed",
                     0);
    store__disconnect(s);
    store__prune_disconnect(s);
    return NULL;
}

/* ---- public API --------------------------------------------------------- */

int jw_store_start(jw_store **out, const jw_store_config *cfg)
{
    jw_store *s;

    *out = NULL;
    if (!cfg || !cfg->conninfo || cfg->max_group_deltas < 0 || cfg->backoff_min_ms < 0 ||
        cfg->backoff_max_ms < 0 || cfg->events_retention_s < 0 || cfg->prune_batch < 0 ||
        cfg->prune_interval_ms < 0)
        return JW_EINVAL;
    s = jw_xcalloc(1, sizeof(*s));
    s->conninfo = jw_xstrdup(cfg->conninfo);
    s->node_id = jw_xstrdup(cfg->node_id && cfg->node_id[0] ? cfg->node_id : "local");
    s->incarnation = cfg->node_incarnation;
    snprintf(s->incarnation_text, sizeof(s->incarnation_text), "%lld", (long long)s->incarnation);
    s->node_ttl_us = (int64_t)(cfg->node_ttl_ms > 0 ? cfg->node_ttl_ms : 10000) * 1000;
    s->wake = cfg->wake;
    s->wake_arg = cfg->wake_arg;
    s->max_group = cfg->max_group_deltas ? cfg->max_group_deltas : DEFAULT_MAX_GROUP;
    s->backoff_min_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
    s->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (s->backoff_max_ms < s->backoff_min_ms)
        s->backoff_max_ms = s->backoff_min_ms;
    s->backoff_ms = s->backoff_min_ms;
    s->retention_s = cfg->events_retention_s;
    s->prune_batch = cfg->prune_batch ? cfg->prune_batch : DEFAULT_PRUNE_BATCH;
    s->prune_interval_us =
        (int64_t)(cfg->prune_interval_ms ? cfg->prune_interval_ms : DEFAULT_PRUNE_INTERVAL_MS) *
        1000;
    s->prune.next_us = jw_mono_us(); /* the first round as soon as the store is idle */
    jw_mailbox_init(&s->inbox, NULL, NULL);
    jw_mailbox_init(&s->done, cfg->wake, cfg->wake_arg);
    pthread_mutex_init(&s->stats_lock, NULL);
    jw_hist_init(&s->stats.commit_us, &commit_us_spec);
    jw_hist_init(&s->stats.commit_batches, &group_size_spec);
    jw_hist_init(&s->stats.commit_deltas, &group_size_spec);
    s->stats.outage_started_us = jw_mono_us();
    snprintf(s->stats.last_error, sizeof(s->stats.last_error), "not connected yet");
    store__commit_init(s);

    s->reader = jw_reader_start(s->conninfo,
                                cfg->max_reads_queued ? (size_t)cfg->max_reads_queued
                                                      : DEFAULT_MAX_READS_QUEUED,
                                cfg->wake, cfg->wake_arg);
    if (!s->reader || pthread_create(&s->thread, NULL, store_thread, s) != 0) {
        jw_store_free(s);
        return JW_ENOMEM;
    }
    s->thread_started = true;
    *out = s;
    return 0;
}

int jw_store_submit(jw_store *s, jw_batch *b)
{
    if (!b || b->count == 0)
        return JW_EINVAL;
    b->status = 0;
    b->queued_us = jw_mono_us();
    pthread_mutex_lock(&s->stats_lock);
    s->stats.queued_batches++;
    pthread_mutex_unlock(&s->stats_lock);
    if (!jw_mailbox_post(&s->inbox, &b->node)) {
        pthread_mutex_lock(&s->stats_lock);
        s->stats.queued_batches--;
        pthread_mutex_unlock(&s->stats_lock);
        return JW_ECLOSED;
    }
    return 0;
}

static size_t hand_over(jw_mailbox_node *n, jw_store_done_fn fn, void *arg)
{
    size_t count = 0;

    while (n) {
        jw_mailbox_node *next = n->next;

        fn(jw_container_of(n, jw_batch, node), arg);
        count++;
        n = next;
    }
    return count;
}

size_t jw_store_drain(jw_store *s, jw_store_done_fn fn, void *arg)
{
    return hand_over(jw_mailbox_take_all(&s->done), fn, arg);
}

bool jw_store_has_answers(jw_store *s)
{
    return jw_mailbox_has_mail(&s->done);
}

size_t jw_store_wait(jw_store *s, int timeout_ms, jw_store_done_fn fn, void *arg)
{
    return hand_over(jw_mailbox_wait(&s->done, timeout_ms), fn, arg);
}

void jw_store_get_stats(jw_store *s, jw_store_stats *out)
{
    pthread_mutex_lock(&s->stats_lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->stats_lock);
    out->reads_queued = jw_reader_queued(s->reader);
    out->heartbeat_us = atomic_load(&s->heartbeat_sent_us);
}

bool jw_store_connected(jw_store *s)
{
    bool up;

    pthread_mutex_lock(&s->stats_lock);
    up = s->stats.connected;
    pthread_mutex_unlock(&s->stats_lock);
    return up;
}

void jw_store_peer_joined(jw_store *s)
{
    atomic_store(&s->peer_news, true);
    jw_mailbox_kick(&s->inbox);
}

bool jw_store_node_replaced(jw_store *s)
{
    return atomic_load(&s->node_replaced);
}

void jw_store_node_state(jw_store *s, int64_t *trusted_until_us, bool *dead)
{
    int64_t sent = atomic_load(&s->heartbeat_sent_us);

    *dead = atomic_load(&s->node_dead);
    if (!s->incarnation)
        *trusted_until_us = INT64_MAX;
    else
        *trusted_until_us = sent ? sent + s->node_ttl_us - 1000000 : 0;
}

void jw_store_stop(jw_store *s, int drain_ms)
{
    if (!s || !s->thread_started)
        return;
    atomic_store(&s->drain_deadline_us, jw_mono_us() + (int64_t)drain_ms * 1000);
    atomic_store(&s->stopping, true);
    jw_reader_stop(s->reader);
    jw_mailbox_close(&s->inbox);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
}

static void free_answer(jw_batch *b, void *arg)
{
    (void)arg;
    jw_batch_free(b);
}

void jw_store_free(jw_store *s)
{
    if (!s)
        return;
    jw_store_stop(s, 0);
    hand_over(jw_mailbox_take_all(&s->inbox), free_answer, NULL);
    hand_over(jw_mailbox_take_all(&s->done), free_answer, NULL);
    jw_reader_free(s->reader);
    jw_mailbox_release(&s->inbox);
    jw_mailbox_release(&s->done);
    pthread_mutex_destroy(&s->stats_lock);
    store__commit_release(s);
    free(s->prune.jobs);
    free(s->conninfo);
    free(s->node_id);
    free(s);
}
