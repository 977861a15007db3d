/*
 * ws_hub.c - the jobwire.v1 hub's jobs: each job's subscribers and ring of
 * recent deltas, its shared snapshot, publishing a committed delta to every
 * subscriber's queue, and what happens when a queue passes its bound (a
 * job's deltas give way to one snapshot, built once the queue has drained).
 */
#include "ws_internal.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void idle_unlink(jw_ws *hub, job_entry *j)
{
    if (!j->idle_prev && hub->idle_head != j)
        return;
    if (j->idle_prev)
        j->idle_prev->idle_next = j->idle_next;
    else
        hub->idle_head = j->idle_next;
    if (j->idle_next)
        j->idle_next->idle_prev = j->idle_prev;
    else
        hub->idle_tail = j->idle_prev;
    j->idle_prev = j->idle_next = NULL;
    hub->idle_count--;
}

void ws_free_job_entry(job_entry *j)
{
    jw_wsmsg_unref(j->snap);
    for (size_t i = 0; i < j->count; i++)
        jw_wsmsg_unref(j->ring[(j->first + i) % RING]);
    free(j->subs);
    free(j);
}

/* Jobs nobody watches keep their ring for resumes, up to a bound. */
static void idle_push(jw_ws *hub, job_entry *j)
{
    /* Nobody to share a snapshot with any more. */
    jw_wsmsg_unref(j->snap);
    j->snap = NULL;
    j->idle_next = NULL;
    j->idle_prev = hub->idle_tail;
    if (hub->idle_tail)
        hub->idle_tail->idle_next = j;
    else
        hub->idle_head = j;
    hub->idle_tail = j;
    hub->idle_count++;
    while (hub->idle_count > MAX_JOBS_IDLE) {
        job_entry *old = hub->idle_head;

        idle_unlink(hub, old);
        jw_map_del(&hub->jobs, old->id);
        ws_free_job_entry(old);
    }
}

job_entry *ws_job_get(jw_ws *hub, const char *id, bool create)
{
    job_entry *j = jw_map_get(&hub->jobs, id);

    if (j || !create)
        return j;
    jw_ws_publish_end(hub); /* the new entry may evict an idle one */
    j = jw_xcalloc(1, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    jw_map_put(&hub->jobs, j->id, j);
    idle_push(hub, j);
    return j;
}

/*
 * A snapshot leaves as two parts in one message: a small head of its own,
 * {"type":"snapshot","job_id":…,"ref":…,"reason":…, and the job's committed
 * state, "job":…,"steps":…,"otp_requests":…,"seq":N}, encoded once per
 * committed seq and shared by every subscriber that needs it meanwhile (a
 * crowd subscribing to one job costs one encoding, not one each).
 */
jw_wsmsg *ws_snapshot_body(const jw_services *sv, job_entry *j, const char *job_id)
{
    int64_t seq = jw_sv_job_seq(sv, job_id);
    json_t *snap;
    char *text;
    jw_wsmsg *m;

    if (j && j->snap && j->snap_seq == seq) {
        j->snap->refs++;
        return j->snap;
    }
    if (!(snap = jw_sv_job_snapshot(sv, job_id)))
        return NULL;
    text = json_dumps(snap, JSON_COMPACT);
    json_decref(snap);
    if (!text || text[0] != '{')
        jw_oom("snapshot");
    m = jw_wsmsg_new(text + 1, strlen(text + 1)); /* without its opening brace */
    free(text);
    if (j && j->nsubs) {
        jw_wsmsg_unref(j->snap);
        j->snap = m;
        j->snap_seq = seq;
        m->refs++;
    }
    return m;
}

jw_wsmsg *ws_snapshot_head(const char *job_id, json_t *ref, const char *reason)
{
    jw_buf b;
    jw_wsmsg *m;

    jw_buf_init(&b, 128);
    jw_buf_addf(&b, "{\"type\":\"snapshot\",\"job_id\":\"%s\",", job_id);
    if (ref) {
        char *r = json_dumps(ref, JSON_ENCODE_ANY | JSON_COMPACT);

        if (!r)
            jw_oom("ref");
        jw_buf_addf(&b, "\"ref\":%s,", r);
        free(r);
    }
    if (reason)
        jw_buf_addf(&b, "\"reason\":\"%s\",", reason);
    m = jw_wsmsg_new(b.data, b.len);
    jw_buf_release(&b);
    return m;
}

/*
 * Queues the snapshot of a job in memory on c, as an answer (ref) or a
 * resync (reason); queued under job when it should go with the job's other
 * messages on a resync. False when the job is not in memory.
 */
/*
 * Queues a snapshot's head and body as one message: as a reply (job NULL),
 * within the bound; as a resync (tagged with its job), bounded by the
 * connection's subscriptions.
 */
void ws_push_snapshot(conn *c, jw_wsmsg *head, jw_wsmsg *body, job_entry *job)
{
    if (!job && !jw_wsconn_make_room(&c->base, head->len + body->len))
        return;
    jw_wsconn_push(&c->base, head, body, job, false);
}

bool ws_queue_snapshot(conn *c, job_entry *j, const char *job_id, json_t *ref, const char *reason,
                       job_entry *job)
{
    jw_wsmsg *body = ws_snapshot_body(c->hub->sv, j, job_id), *head;

    if (!body)
        return false;
    head = ws_snapshot_head(job_id, ref, reason);
    if (!c->base.closing)
        ws_push_snapshot(c, head, body, job);
    jw_wsmsg_unref(head);
    jw_wsmsg_unref(body);
    return true;
}

/*
 * c's place in c->subs for j (SIZE_MAX: not subscribed), found from whichever
 * side has fewer subscriptions: a connection usually has one or a few, a job
 * may have thousands of watchers, and a connection up to --ws-max-subscriptions.
 */
static size_t sub_slot(const job_entry *j, const conn *c)
{
    if (c->nsubs <= j->nsubs) {
        for (size_t i = c->nsubs; i-- > 0;) /* from the end: closing removes the last */
            if (c->subs[i].j == j)
                return i;
    } else {
        for (size_t i = 0; i < j->nsubs; i++)
            if (j->subs[i].c == c)
                return j->subs[i].slot;
    }
    return SIZE_MAX;
}

subscriber *ws_find_sub(job_entry *j, const conn *c)
{
    size_t k = sub_slot(j, c);

    return k == SIZE_MAX ? NULL : &j->subs[c->subs[k].at];
}

/*
 * A delta does not fit under the queue bound: drop this job's queued
 * messages and owe the connection one snapshot of the job instead, built when
 * the connection can take it (pay_resyncs). Until then the job's deltas are
 * dropped at no cost: the snapshot will include them. A connection that keeps
 * dropping for too long is closed.
 */
static void owe_snapshot(conn *c, subscriber *sub)
{
    int64_t now = jw_mono_us();

    sub->resync = true;
    c->resyncs_owed++;
    c->hub->stats.resyncs++;
    if (!c->over_since)
        c->over_since = now;
    jw_wsconn_want_write(&c->base);
}

static void overflow(conn *c, job_entry *j, subscriber *sub)
{
    jw_wsconn_drop_tag(&c->base, j);
    owe_snapshot(c, sub);
}

/*
 * Room for a reply (an ack, a pong, an error, an OTP verdict, a snapshot) over
 * the queue bound (the shed hook of jw_wsconn_make_room): a reply is not
 * dropped on its own; the connection's queued deltas go first, each of their
 * jobs owing a snapshot instead (as on overflow). A client whose replies
 * alone pass the bound sends without reading, and is closed (4008).
 */
void ws_shed(jw_wsconn *b)
{
    conn *c = conn_of(b);

    for (size_t i = 0; i < c->nsubs; i++) {
        job_entry *j = c->subs[i].j;
        subscriber *sub = &j->subs[c->subs[i].at];

        if (!sub->resync && jw_wsconn_drop_tag(b, j))
            owe_snapshot(c, sub);
    }
}

/* m carries count deltas of j (joined, when more than one). */
void ws_push_delta(conn *c, subscriber *sub, jw_wsmsg *m, job_entry *j, unsigned count)
{
    if (c->base.closing || sub->replaying || sub->resync) {
        if (sub->resync && c->over_since && jw_mono_us() - c->over_since > MAX_OVER_US) {
            char why[64];

            snprintf(why, sizeof(why), "behind for over %" PRId64 " s", MAX_OVER_US / 1000000);
            jw_wsconn_slow_close(&c->base, why);
        }
        return;
    }
    if (!jw_wsconn_fits(&c->base, m->len)) {
        overflow(c, j, sub);
        return;
    }
    jw_wsconn_push(&c->base, NULL, m, j, count);
}

bool ws_owes_resyncs(const jw_wsconn *b)
{
    return ((const conn *)(const void *)b)->resyncs_owed > 0; /* base is first */
}

/*
 * Builds the snapshots this connection is owed, now that its queue is empty:
 * a frame's worth at a time, the rest once that has gone (it stays owed), so
 * that a client owed a snapshot of each of its jobs does not hold them all in
 * memory at once.
 */
void ws_pay_resyncs(jw_wsconn *b)
{
    conn *c = conn_of(b);

    jw_ws_publish_end(c->hub);
    for (size_t i = 0; i < c->nsubs && c->resyncs_owed && b->qbytes < JW_WSCONN_FRAME; i++) {
        job_entry *j = c->subs[i].j;
        subscriber *sub = &j->subs[c->subs[i].at];

        if (!sub->resync)
            continue;
        sub->resync = false;
        c->resyncs_owed--;
        if (!ws_queue_snapshot(c, j, j->id, NULL, "resync", j))
            ws_resync_from_db(c, j, sub); /* it finished and left memory meanwhile */
    }
    if (!c->resyncs_owed)
        c->over_since = 0;
}

/* ---- subscriptions ------------------------------------------------------------ */

bool ws_subscribed(const conn *c, const job_entry *j)
{
    return sub_slot(j, c) != SIZE_MAX;
}

subscriber *ws_add_sub(conn *c, job_entry *j)
{
    jw_ws *hub = c->hub;
    subscriber *sub = ws_find_sub(j, c);

    if (sub)
        return sub;
    jw_ws_publish_end(hub);
    if (c->nsubs == c->capsubs) {
        c->capsubs = c->capsubs ? c->capsubs * 2 : 4;
        c->subs = jw_xrealloc(c->subs, c->capsubs * sizeof(*c->subs));
    }
    if (j->nsubs == 0)
        idle_unlink(hub, j);
    if (j->nsubs == j->capsubs) {
        j->capsubs = j->capsubs ? j->capsubs * 2 : 4;
        j->subs = jw_xrealloc(j->subs, j->capsubs * sizeof(*j->subs));
    }
    c->subs[c->nsubs] = (conn_sub){.j = j, .at = j->nsubs};
    sub = &j->subs[j->nsubs++];
    memset(sub, 0, sizeof(*sub));
    sub->serial = ++hub->sub_serials;
    sub->c = c;
    sub->slot = c->nsubs++;
    hub->stats.subscriptions++;
    return sub;
}

bool ws_remove_sub(conn *c, job_entry *j)
{
    jw_ws *hub = c->hub;
    size_t k = sub_slot(j, c), at;

    if (k == SIZE_MAX)
        return false;
    jw_ws_publish_end(hub);
    at = c->subs[k].at;
    if (j->subs[at].resync)
        c->resyncs_owed--;
    /* Each array fills its hole with its last entry, whose other side learns its new place. */
    if (at != --j->nsubs) {
        j->subs[at] = j->subs[j->nsubs];
        j->subs[at].c->subs[j->subs[at].slot].at = at;
    }
    if (k != --c->nsubs) {
        c->subs[k] = c->subs[c->nsubs];
        c->subs[k].j->subs[c->subs[k].at].slot = k;
    }
    /* What is still queued for it is no longer wanted. */
    jw_wsconn_drop_tag(&c->base, j);
    if (j->nsubs == 0)
        idle_push(hub, j);
    hub->stats.subscriptions--;
    return true;
}

/* ---- publishing ------------------------------------------------------------------ */

/* A delta's jobwire.v1 message: the same bytes live and replayed (jw_delta_encode). */
jw_wsmsg *ws_delta_msg(const jw_delta *d)
{
    jw_buf b;
    jw_wsmsg *m;

    jw_buf_init(&b, d->row_len + 256);
    jw_delta_encode(d, &b);
    m = jw_wsmsg_new(b.data, b.len);
    jw_buf_release(&b);
    return m;
}

bool jw_ws_watching(const jw_ws *hub, const char *job_id)
{
    const job_entry *j = hub->jobs.count ? jw_map_get(&hub->jobs, job_id) : NULL;

    return j && j->nsubs > 0;
}

/* d's message, kept in its job's ring; a reference for the caller. */
static jw_wsmsg *ring_put(job_entry *j, const jw_delta *d)
{
    jw_wsmsg *m = ws_delta_msg(d);

    /* The ring holds the last RING deltas, contiguous in seq. */
    if (j->count && d->seq != j->first_seq + (int64_t)j->count) {
        for (size_t i = 0; i < j->count; i++)
            jw_wsmsg_unref(j->ring[(j->first + i) % RING]);
        j->count = 0;
    }
    if (!j->count) {
        j->first = 0;
        j->first_seq = d->seq;
    }
    if (j->count == RING) {
        jw_wsmsg_unref(j->ring[j->first]);
        j->first = (j->first + 1) % RING;
        j->first_seq++;
        j->count--;
    }
    m->refs++;
    j->ring[(j->first + j->count) % RING] = m;
    j->count++;
    return m;
}

static void push_all(job_entry *j, jw_wsmsg *m, unsigned count)
{
    for (size_t i = 0; i < j->nsubs; i++)
        ws_push_delta(j->subs[i].c, &j->subs[i], m, j, count);
}

void jw_ws_publish_batched(jw_ws *hub, jw_delta *d)
{
    job_entry *j;
    jw_wsmsg *m;

    /* Before the lookup, which may let an idle entry go: a pending one has watchers. */
    if (hub->pend_job && strcmp(hub->pend_job->id, d->job_id) != 0)
        jw_ws_publish_end(hub);
    j = ws_job_get(hub, d->job_id, true);
    m = ring_put(j, d);
    if (!j->nsubs) {
        jw_wsmsg_unref(m);
        return;
    }
    if (hub->npend == hub->cappend) {
        hub->cappend = hub->cappend ? 2 * hub->cappend : 16;
        hub->pend = jw_xrealloc(hub->pend, hub->cappend * sizeof(*hub->pend));
    }
    hub->pend[hub->npend++] = m;
    hub->pend_job = j;
}

/*
 * Each run of pending messages up to BATCH_JOIN_MAX bytes becomes one
 * message, pushed once per watcher: a batch of k deltas costs a watcher one
 * queue entry, not k. The round gathers entries into frames as before.
 */
void jw_ws_publish_end(jw_ws *hub)
{
    job_entry *j = hub->pend_job;
    size_t i = 0;

    while (i < hub->npend) {
        size_t n = 1, len = hub->pend[i]->len;
        jw_wsmsg *m;

        while (i + n < hub->npend && len + 1 + hub->pend[i + n]->len <= BATCH_JOIN_MAX)
            len += 1 + hub->pend[i + n++]->len;
        m = n == 1 ? hub->pend[i] : jw_wsmsg_join(hub->pend + i, n);
        if (n > 1)
            for (size_t k = i; k < i + n; k++)
                jw_wsmsg_unref(hub->pend[k]);
        push_all(j, m, (unsigned)n);
        jw_wsmsg_unref(m);
        i += n;
    }
    hub->npend = 0;
    hub->pend_job = NULL;
}
