/*
 * ws_subscribe.c - answering a jobwire.v1 subscribe: from memory when the
 * job runs here or is mirrored here (its ring, or a snapshot), else from
 * PostgreSQL through the connection's own bounded, ordered and cancellable
 * reads (the journal for a resume, the job's rows for a snapshot). A job read
 * from PostgreSQL is mirrored (mirror.h) and then served from memory, so it
 * gets live deltas whichever node drives it.
 */
#include "ws_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether the ring holds every delta after since up to current. */
static bool replay_covers(const job_entry *j, int64_t since, int64_t current)
{
    if (since == current)
        return true;
    return j->count && since >= j->first_seq - 1 && since < current &&
           j->first_seq + (int64_t)j->count - 1 == current;
}

/* Replays the ring's deltas after since, or returns false when it cannot. */
bool ws_replay(conn *c, subscriber *sub, job_entry *j, int64_t since, int64_t current)
{
    if (!replay_covers(j, since, current))
        return false;
    jw_ws_publish_end(c->hub);
    for (int64_t s = since + 1; s <= current; s++) {
        jw_wsmsg *m = j->ring[(j->first + (size_t)(s - j->first_seq)) % RING];

        ws_push_delta(c, sub, m, j, 1);
    }
    return true;
}

/* Sends the job's snapshot as the answer to a subscribe. */
static void send_snapshot(conn *c, job_entry *j, const char *job_id, json_t *ref)
{
    ws_queue_snapshot(c, j, job_id, ref, NULL, NULL);
}

/*
 * A subscribe storm: the clients of a node that went (a rolling restart)
 * reconnect to this one and subscribe at once to jobs another node drives.
 * Each would read its job from PostgreSQL, one read per client, until the
 * store's queue refuses them ("busy"); yet the first read mirrors the job,
 * and memory serves the rest. So while a subscribe's read of a job is out,
 * later plain subscribes of that job park here behind it; when it ended they
 * are answered from memory, or read for themselves when memory has no answer
 * (a finished job, one not found, a refused read).
 */
typedef struct ws_loading {
    char job[JW_UUID_LEN + 1]; /* the map's key */
    size_t out;                /* shared reads of the job not ended yet */
    ws_op **parked;            /* subscribes waiting for them, oldest first */
    size_t nparked, capparked;
} ws_loading;

static ws_loading *loading_of(jw_ws *hub, const char *job, bool create)
{
    ws_loading *l = hub->loading.count ? jw_map_get(&hub->loading, job) : NULL;

    if (!l && create) {
        l = jw_xcalloc(1, sizeof(*l));
        snprintf(l->job, sizeof(l->job), "%s", job);
        jw_map_put(&hub->loading, l->job, l);
    }
    return l;
}

/* op's shared read ended (answered, refused or dropped). */
static void loaded(jw_ws *hub, ws_op *op)
{
    ws_loading *l;

    if (!op->shared)
        return;
    op->shared = false;
    l = loading_of(hub, op->job, false);
    if (l && l->out && --l->out == 0)
        hub->unpark_due = true;
}

static void read_for(conn *c, jw_read_kind kind, int n, const char **params, ws_op *op);

/*
 * The subscription op answers, if c still has it: not another one of the
 * same job made since (an unsubscribe and a subscribe while op's read was
 * out, which cannot be called back once at the store).
 */
static subscriber *op_sub(jw_ws *hub, conn *c, const ws_op *op)
{
    job_entry *j = ws_job_get(hub, op->job, false);
    subscriber *sub = j && c ? ws_find_sub(j, c) : NULL;

    return sub && sub->serial == op->sub_serial ? sub : NULL;
}

/* A parked subscribe whose job's reads ended: memory answers it, else its own read. */
static void unpark_one(jw_ws *hub, ws_op *op)
{
    conn *c = ws_find_conn(hub, op->conn_key);
    subscriber *sub = op_sub(hub, c, op);
    const char *params[1] = {op->job};

    if (!c || c->base.closing) {
        ws_free_op(op);
        return;
    }
    if (!sub || !sub->replaying) {
        /* Withdrawn meanwhile, or a later subscribe of the job answered: as after a read. */
        if (!sub)
            ws_send_error(c, op->ref, "unsubscribed",
                          "unsubscribed from job %s before this subscribe was answered", op->job);
        else
            ws_send_ack(c, op->ref);
        ws_free_op(op);
        return;
    }
    if (jw_sv_job_owner(hub->sv, op->job)) {
        sub->replaying = false;
        ws_subscribe_from_memory(c, op->job, op->since, op->ref);
        ws_free_op(op);
        return;
    }
    read_for(c, JW_READ_JOB, 1, params, op); /* not shared: as many reads as before */
}

void ws_unpark(jw_ws *hub)
{
    if (hub->unparking)
        return;
    hub->unparking = true;
    while (hub->unpark_due) {
        ws_loading **done = NULL;
        size_t ndone = 0, it = 0;
        const char *k;
        void *v;

        hub->unpark_due = false;
        while (jw_map_next(&hub->loading, &it, &k, &v)) {
            if (((ws_loading *)v)->out == 0) {
                done = jw_xrealloc(done, (ndone + 1) * sizeof(*done));
                done[ndone++] = v;
            }
        }
        for (size_t i = 0; i < ndone; i++)
            jw_map_del(&hub->loading, done[i]->job);
        for (size_t i = 0; i < ndone; i++) {
            for (size_t p = 0; p < done[i]->nparked; p++)
                unpark_one(hub, done[i]->parked[p]);
            free(done[i]->parked);
            free(done[i]);
        }
        free(done);
    }
    hub->unparking = false;
}

void ws_free_loading(jw_ws *hub)
{
    const char *k;
    void *v;

    for (size_t it = 0; jw_map_next(&hub->loading, &it, &k, &v);) {
        ws_loading *l = v;

        for (size_t p = 0; p < l->nparked; p++)
            ws_free_op(l->parked[p]);
        free(l->parked);
        free(l);
    }
    jw_map_release(&hub->loading);
}

/*
 * A read was refused by the store (its queue is full, or it is shutting down):
 * the subscription that waited for it is withdrawn and its subscribe answered
 * with the error.
 */
static void read_refused(conn *c, jw_read *r, int rc)
{
    ws_op *op = r->user;
    job_entry *j = ws_job_get(c->hub, op->job, false);

    if (j && ws_find_sub(j, c))
        ws_remove_sub(c, j);
    if (rc == JW_ELIMIT)
        ws_send_error(c, op->ref, "busy",
                      "too many database reads are queued; subscribe to job %s again later",
                      op->job);
    else
        ws_send_error(c, op->ref, "unavailable", "shutting down");
    loaded(c->hub, op);
    jw_read_free(r);
    ws_free_op(op);
}

/*
 * Hands c's waiting reads to the store while fewer than MAX_CONN_READS of its
 * own are there: one client cannot fill the store's queue, and its subscribes
 * are still all answered, in order. A read the store refuses for a full queue
 * waits for c's next answer when c has some out; otherwise it is refused.
 */
static void send_reads(conn *c)
{
    while (c->nunsent && c->nreads < MAX_CONN_READS) {
        jw_read *r = c->unsent[0];
        int rc = jw_store_read(c->hub->sv->store, r);

        if (rc == JW_ELIMIT && c->nreads)
            return;
        memmove(c->unsent, c->unsent + 1, --c->nunsent * sizeof(*c->unsent));
        if (rc != 0) {
            read_refused(c, r, rc);
            continue;
        }
        if (c->nreads == c->capreads) {
            c->capreads = c->capreads ? c->capreads * 2 : MAX_CONN_READS;
            c->reads = jw_xrealloc(c->reads, c->capreads * sizeof(*c->reads));
        }
        c->reads[c->nreads++] = r;
    }
    ws_unpark(c->hub);
}

/* jw_read.done: the store answered one of the hub's reads. */
static void read_done(jw_read *r, void *hub)
{
    jw_ws_on_read(hub, r);
}

/* Asks PostgreSQL for op's job, after c's reads already asked for. */
static void read_for(conn *c, jw_read_kind kind, int n, const char **params, ws_op *op)
{
    jw_read *r = jw_read_new(kind, n, params);

    r->user = op;
    r->done = read_done;
    r->done_arg = c->hub;
    if (c->nunsent == c->capunsent) {
        c->capunsent = c->capunsent ? c->capunsent * 2 : 8;
        c->unsent = jw_xrealloc(c->unsent, c->capunsent * sizeof(*c->unsent));
    }
    c->unsent[c->nunsent++] = r;
    send_reads(c);
}

/* r was answered: it is no longer c's to cancel. */
static void forget_read(conn *c, const jw_read *r)
{
    for (size_t i = 0; i < c->nreads; i++) {
        if (c->reads[i] == r) {
            c->reads[i] = c->reads[--c->nreads];
            return;
        }
    }
}

/*
 * Nobody waits for c's reads of job any more (of every job when job is NULL):
 * those at the store are cancelled (answered without a query); those not sent
 * yet are dropped, their subscribes answered "unsubscribed" unless c closes.
 */
void ws_cancel_reads(conn *c, const char *job)
{
    ws_loading *l;
    size_t kept = 0;

    for (size_t i = 0; i < c->nreads; i++) {
        const ws_op *op = c->reads[i]->user;

        if (!job || strcmp(op->job, job) == 0)
            jw_read_cancel(c->reads[i]);
    }
    for (size_t i = 0; i < c->nunsent; i++) {
        jw_read *r = c->unsent[i];
        ws_op *op = r->user;

        if (job && strcmp(op->job, job) != 0) {
            c->unsent[kept++] = r;
            continue;
        }
        if (job && op->ref)
            ws_send_error(c, op->ref, "unsubscribed",
                          "unsubscribed from job %s before this subscribe was answered", op->job);
        loaded(c->hub, op);
        jw_read_free(r);
        ws_free_op(op);
    }
    c->nunsent = kept;
    /* Parked behind another's read: withdrawn like an unsent one (so they stay bounded
     * by the subscriptions). On close (job NULL) they are dropped when that read ends. */
    if (job && (l = loading_of(c->hub, job, false)) != NULL) {
        kept = 0;
        for (size_t i = 0; i < l->nparked; i++) {
            ws_op *op = l->parked[i];

            if (strcmp(op->conn_key, c->base.key) != 0) {
                l->parked[kept++] = op;
                continue;
            }
            if (op->ref)
                ws_send_error(c, op->ref, "unsubscribed",
                              "unsubscribed from job %s before this subscribe was answered",
                              op->job);
            ws_free_op(op);
        }
        l->nparked = kept;
    }
    ws_unpark(c->hub);
}

/*
 * The job is not in the engine's memory: it finished before this process
 * started, or finished more than --finished-job-ttl ago (or is unknown). Its
 * state is read from PostgreSQL and answered by on_subscribe_read: an ack
 * when since is its last seq, else a snapshot. Meanwhile the subscription
 * waits like one being replayed.
 */
void ws_subscribe_from_db(conn *c, subscriber *sub, const char *job_id, int64_t since, json_t *ref,
                          const char *reason)
{
    const char *params[1] = {job_id};
    ws_op *op = ws_new_op(c, ref);
    /* Only where a read can bring the job into memory (mirror.h): see ws_loading. */
    ws_loading *l = c->hub->sv->mirror && !reason ? loading_of(c->hub, job_id, true) : NULL;

    snprintf(op->job, sizeof(op->job), "%s", job_id);
    op->since = since;
    op->reason = reason;
    op->sub_serial = sub->serial;
    sub->replaying = true;
    if (l && l->out) {
        if (l->nparked == l->capparked) {
            l->capparked = l->capparked ? l->capparked * 2 : 8;
            l->parked = jw_xrealloc(l->parked, l->capparked * sizeof(*l->parked));
        }
        l->parked[l->nparked++] = op;
        c->hub->stats.subscribes_parked++;
        return;
    }
    if (l) {
        l->out++;
        op->shared = true;
    }
    read_for(c, JW_READ_JOB, 1, params, op);
}

void ws_resync_from_db(conn *c, job_entry *j, subscriber *sub)
{
    ws_subscribe_from_db(c, sub, j->id, -1, NULL, "resync");
}

/*
 * Subscribes c to a job running in this process. The subscription exists
 * from here on (it counts toward the limit, unsubscribe finds it); a replay
 * from the journal marks it replaying, so live deltas wait until the replay
 * has been sent.
 */
void ws_subscribe_from_memory(conn *c, const char *job_id, int64_t since, json_t *ref)
{
    jw_ws *hub = c->hub;
    int64_t current = jw_sv_job_seq(hub->sv, job_id);
    subscriber *sub;
    job_entry *j;

    if (!jw_principal_may_access(&c->who, jw_sv_job_owner(hub->sv, job_id))) {
        /*
         * A subscribe that read the database registered its subscription
         * before the owner was known (h_subscribe); the job may have come
         * into memory meanwhile (on_subscribe_read). Whatever registered it,
         * a foreign job's subscription must not survive the refusal.
         */
        j = ws_job_get(hub, job_id, false);
        if (j)
            ws_remove_sub(c, j);
        ws_send_error(c, ref, "not_found", "no job %s", job_id);
        return;
    }
    j = ws_job_get(hub, job_id, true);
    sub = ws_add_sub(c, j);
    if (since >= 0 && ws_replay(c, sub, j, since, current)) {
        ws_send_ack(c, ref);
        return;
    }
    if (since >= 0 && since < current && current - since <= MAX_DB_REPLAY) {
        /* Older than the ring: read the journal, then splice the ring on. */
        char a[24], b[24];
        const char *params[3] = {job_id, a, b};
        ws_op *op = ws_new_op(c, ref);

        snprintf(a, sizeof(a), "%" PRId64, since);
        snprintf(b, sizeof(b), "%" PRId64, current);
        snprintf(op->job, sizeof(op->job), "%s", job_id);
        op->kind = OP_REPLAY;
        op->since = since;
        op->upto = current;
        op->sub_serial = sub->serial;
        sub->replaying = true;
        read_for(c, JW_READ_EVENTS, 3, params, op);
        return;
    }
    send_snapshot(c, j, job_id, ref);
}

/*
 * The subscription op is for, if c still has it and it still waits. Every
 * subscribe gets one answer: one withdrawn meanwhile is told so here.
 */
static subscriber *waiting_sub(jw_ws *hub, conn *c, const ws_op *op)
{
    subscriber *sub = op_sub(hub, c, op);

    if (!sub) {
        ws_send_error(c, op->ref, "unsubscribed",
                      "unsubscribed from job %s before this subscribe was answered", op->job);
        return NULL;
    }
    if (!sub->replaying) {
        ws_send_ack(c, op->ref); /* a later subscribe of the same job answered first */
        return NULL;
    }
    sub->replaying = false;
    return sub;
}

static void on_subscribe_read(jw_ws *hub, ws_op *op, jw_read *r)
{
    conn *c = ws_find_conn(hub, op->conn_key);
    job_entry *j = ws_job_get(hub, op->job, false);
    json_t *doc = NULL, *owner;

    if (!c || c->base.closing || !waiting_sub(hub, c, op))
        return;
    /* It may have come into memory meanwhile (a retry): take it from there. */
    if (jw_sv_job_owner(hub->sv, op->job)) {
        ws_subscribe_from_memory(c, op->job, op->since, op->ref);
        return;
    }
    if (r->status == 0)
        doc = json_loads(r->result, 0, NULL);
    owner = json_object_get(json_object_get(doc, "job"), "user_id");
    if (!doc || !jw_principal_may_access(&c->who, json_string_value(owner))) {
        json_decref(doc);
        ws_remove_sub(c, j);
        if (r->status == 0 || r->status == JW_ENOTFOUND)
            ws_send_error(c, op->ref, "not_found", "no job %s", op->job);
        else
            ws_send_error(c, op->ref, "unavailable", "the database is unavailable; try again");
        return;
    }
    /* Another node may drive it: mirror it here (mirror.h), then serve it from memory. */
    if (hub->sv->mirror) {
        json_t *mirrored;

        jw_mirror_track(hub->sv->mirror, op->job, doc);
        if (jw_mirror_has(hub->sv->mirror, op->job)) {
            json_decref(doc);
            if (op->reason)
                ws_queue_snapshot(c, j, op->job, op->ref, op->reason, j);
            else
                ws_subscribe_from_memory(c, op->job, op->since, op->ref);
            return;
        }
        /* Finished: answered from PostgreSQL as ever, unless its mirror (which publishes
         * what comes next) is elsewhere than the read - then from the mirror. */
        mirrored = jw_mirror_mirrored(hub->sv->mirror, op->job);
        if (mirrored && json_integer_value(json_object_get(mirrored, "seq")) !=
                            json_integer_value(json_object_get(doc, "seq"))) {
            json_decref(doc);
            doc = mirrored;
        } else {
            json_decref(mirrored);
        }
    }
    if (op->since >= 0 && op->since == json_integer_value(json_object_get(doc, "seq"))) {
        json_decref(doc);
        ws_send_ack(c, op->ref);
        return;
    }
    {
        /* The same layout as a snapshot from memory, only not shared. */
        char *text = json_dumps(doc, JSON_COMPACT);
        jw_wsmsg *head = ws_snapshot_head(op->job, op->ref, op->reason), *body;

        json_decref(doc);
        if (!text || text[0] != '{')
            jw_oom("snapshot");
        body = jw_wsmsg_new(text + 1, strlen(text + 1));
        free(text);
        if (!c->base.closing)
            ws_push_snapshot(c, head, body, op->reason ? ws_job_get(hub, op->job, false) : NULL);
        jw_wsmsg_unref(head);
        jw_wsmsg_unref(body);
    }
}

void ws_free_op(ws_op *op)
{
    json_decref(op->ref);
    free(op);
}

/*
 * The journal after since arrived: send it, then whatever the ring holds
 * beyond it, so the client sees since+1 ... now without a gap, then live
 * deltas. Anything that does not line up falls back to a snapshot.
 */
static void on_replay_read(jw_ws *hub, ws_op *op, jw_read *r)
{
    conn *c = ws_find_conn(hub, op->conn_key);
    int64_t current = jw_sv_job_seq(hub->sv, op->job), expect = op->since + 1;
    jw_delta **events = NULL;
    subscriber *sub;
    job_entry *j;
    size_t i, n = 0;
    int rc = JW_EINVAL;

    if (!c || c->base.closing || !(sub = waiting_sub(hub, c, op)))
        return;
    j = ws_job_get(hub, op->job, false);
    if (r->status == 0)
        rc = jw_store_read_deltas(r, &events, &n);
    for (i = 0; i < n && events[i]->seq == expect; i++)
        expect++;
    if (rc != 0 || expect != op->upto + 1 || current < op->upto ||
        !replay_covers(j, op->upto, current)) {
        jw_store_free_deltas(events, n);
        if (current < 0) /* it finished and left memory during the read */
            ws_subscribe_from_db(c, sub, op->job, op->since, op->ref, NULL);
        else
            send_snapshot(c, j, op->job, op->ref);
        return;
    }
    /* Encoded like the live ones (jw_ws_publish_batched): the same bytes, cts included. */
    for (i = 0; i < n; i++) {
        jw_wsmsg *m = ws_delta_msg(events[i]);

        ws_push_delta(c, sub, m, j, 1);
        jw_wsmsg_unref(m);
    }
    jw_store_free_deltas(events, n);
    ws_replay(c, sub, j, op->upto, current);
    ws_send_ack(c, op->ref);
}

void jw_ws_on_read(jw_ws *hub, jw_read *r)
{
    ws_op *op = r->user;
    conn *c = ws_find_conn(hub, op->conn_key);

    if (c) {
        forget_read(c, r);
        send_reads(c);
    }
    if (r->status == JW_ECANCELED) {
        /* Its subscription was withdrawn (or its connection closed): the
         * subscribe still gets its one answer. */
        if (c && !c->base.closing && op->ref)
            ws_send_error(c, op->ref, "unsubscribed",
                          "unsubscribed from job %s before this subscribe was answered", op->job);
    } else if (op->kind == OP_REPLAY)
        on_replay_read(hub, op, r);
    else
        on_subscribe_read(hub, op, r);
    loaded(hub, op); /* answered (the job mirrored): the subscribes parked behind it go */
    ws_free_op(op);
    jw_read_free(r);
    ws_unpark(hub);
}

ws_op *ws_new_op(conn *c, json_t *ref)
{
    ws_op *op = jw_xcalloc(1, sizeof(*op));

    op->hub = c->hub;
    snprintf(op->conn_key, sizeof(op->conn_key), "%s", c->base.key);
    op->ref = json_incref(ref);
    op->since = -1;
    return op;
}
