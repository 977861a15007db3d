/*
 * ws_hub.c's subscriptions: the index each side keeps of the other (a
 * connection's {job, place in the job's subscribers}, a subscriber's place in
 * its connection's list), kept right through subscribes, unsubscribes from the
 * middle of either list and connections closing, against a plain model of who
 * watches what. No sockets: the connections' queues stay empty.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ws_internal.h"

#include "jw_buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ws_hub.c asks for a job's rows when a resync finds it gone; no resync here. */
void ws_resync_from_db(conn *c, job_entry *j, subscriber *sub)
{
    (void)c;
    (void)j;
    (void)sub;
    fail_msg("ws_resync_from_db called");
}

#define NCONN 12
#define NJOB 9

typedef struct world {
    jw_ws hub;
    conn conns[NCONN];
    job_entry *jobs[NJOB];
    bool watches[NCONN][NJOB]; /* the model */
} world;

static void world_init(world *w)
{
    memset(w, 0, sizeof(*w));
    jw_map_init(&w->hub.jobs);
    for (int i = 0; i < NCONN; i++)
        w->conns[i].hub = &w->hub;
    for (int k = 0; k < NJOB; k++) {
        char id[JW_UUID_LEN + 1];

        snprintf(id, sizeof(id), "00000000-0000-4000-8000-%012d", k);
        w->jobs[k] = ws_job_get(&w->hub, id, true);
    }
}

static void world_free(world *w)
{
    const char *key;
    void *v;

    for (int i = 0; i < NCONN; i++)
        free(w->conns[i].subs);
    for (size_t it = 0; jw_map_next(&w->hub.jobs, &it, &key, &v);)
        ws_free_job_entry(v);
    jw_map_release(&w->hub.jobs);
}

/* Both sides' indexes agree with each other and with the model. */
static void check(world *w)
{
    size_t total = 0;

    for (int i = 0; i < NCONN; i++) {
        conn *c = &w->conns[i];
        size_t n = 0;

        for (size_t k = 0; k < c->nsubs; k++) {
            job_entry *j = c->subs[k].j;

            assert_true(c->subs[k].at < j->nsubs);
            assert_ptr_equal(j->subs[c->subs[k].at].c, c);
            assert_int_equal(j->subs[c->subs[k].at].slot, k);
        }
        for (int k = 0; k < NJOB; k++) {
            job_entry *j = w->jobs[k];
            subscriber *sub = ws_find_sub(j, c);

            assert_int_equal(ws_subscribed(c, j), w->watches[i][k]);
            assert_int_equal(sub != NULL, w->watches[i][k]);
            if (sub)
                assert_ptr_equal(sub->c, c);
            n += w->watches[i][k];
        }
        assert_int_equal(c->nsubs, n);
        total += n;
    }
    for (int k = 0; k < NJOB; k++) {
        job_entry *j = w->jobs[k];
        size_t n = 0;

        for (size_t s = 0; s < j->nsubs; s++) {
            conn *c = j->subs[s].c;

            assert_true(j->subs[s].slot < c->nsubs);
            assert_ptr_equal(c->subs[j->subs[s].slot].j, j);
            assert_int_equal(c->subs[j->subs[s].slot].at, s);
        }
        for (int i = 0; i < NCONN; i++)
            n += w->watches[i][k];
        assert_int_equal(j->nsubs, n);
    }
    assert_int_equal(w->hub.stats.subscriptions, total);
}

static void subscribe(world *w, int i, int k)
{
    subscriber *sub = ws_add_sub(&w->conns[i], w->jobs[k]);

    assert_non_null(sub);
    assert_ptr_equal(sub->c, &w->conns[i]);
    /* Subscribing again finds the same subscription. */
    assert_ptr_equal(ws_add_sub(&w->conns[i], w->jobs[k]), sub);
    w->watches[i][k] = true;
}

static void unsubscribe(world *w, int i, int k)
{
    assert_int_equal(ws_remove_sub(&w->conns[i], w->jobs[k]), w->watches[i][k]);
    w->watches[i][k] = false;
}

/* What ws.c does when a connection closes: its last subscription first. */
static void close_conn(world *w, int i)
{
    conn *c = &w->conns[i];

    while (c->nsubs)
        assert_true(ws_remove_sub(c, c->subs[c->nsubs - 1].j));
    memset(w->watches[i], 0, sizeof(w->watches[i]));
}

/* A subscriber's state travels with it when another takes its place. */
static void test_flags_follow_the_subscriber(void **state)
{
    world w;

    (void)state;
    world_init(&w);
    for (int i = 0; i < 4; i++)
        subscribe(&w, i, 0);
    ws_find_sub(w.jobs[0], &w.conns[3])->replaying = true;
    unsubscribe(&w, 0, 0); /* the last subscriber (conn 3) moves into place 0 */
    check(&w);
    assert_true(ws_find_sub(w.jobs[0], &w.conns[3])->replaying);
    assert_false(ws_find_sub(w.jobs[0], &w.conns[1])->replaying);
    assert_false(ws_find_sub(w.jobs[0], &w.conns[2])->replaying);
    world_free(&w);
}

/* An owed resync is forgotten with the subscription that owed it. */
static void test_unsubscribe_forgets_an_owed_resync(void **state)
{
    world w;
    conn *c;

    (void)state;
    world_init(&w);
    c = &w.conns[0];
    subscribe(&w, 0, 0);
    subscribe(&w, 0, 1);
    ws_find_sub(w.jobs[0], c)->resync = true;
    c->resyncs_owed = 1;
    unsubscribe(&w, 0, 0);
    assert_int_equal(c->resyncs_owed, 0);
    check(&w);
    world_free(&w);
}

/* Random subscribes, unsubscribes (from anywhere in either list) and closes. */
static void test_index_against_a_model(void **state)
{
    world w;
    unsigned seed = 12345;

    (void)state;
    world_init(&w);
    for (int step = 0; step < 20000; step++) {
        int i, k, op;

        seed = seed * 1103515245u + 12345u;
        i = (int)((seed >> 8) % NCONN);
        k = (int)((seed >> 16) % NJOB);
        op = (int)((seed >> 24) % 10);
        if (op < 5)
            subscribe(&w, i, k);
        else if (op < 9)
            unsubscribe(&w, i, k);
        else
            close_conn(&w, i);
        check(&w);
    }
    for (int i = 0; i < NCONN; i++)
        close_conn(&w, i);
    check(&w);
    for (int k = 0; k < NJOB; k++)
        assert_int_equal(w.jobs[k]->nsubs, 0);
    world_free(&w);
}

/*
 * Many watchers of one job, and one connection with many jobs: each side's
 * search runs over the other's shorter list, and both must find the same.
 */
static void test_long_lists_on_either_side(void **state)
{
    world w;

    (void)state;
    world_init(&w);
    for (int k = 0; k < NJOB; k++)
        subscribe(&w, 0, k); /* conn 0 watches every job */
    for (int i = 1; i < NCONN; i++)
        subscribe(&w, i, 4); /* job 4 has every connection */
    check(&w);
    unsubscribe(&w, 0, 4);
    unsubscribe(&w, 5, 4);
    unsubscribe(&w, 0, 0);
    check(&w);
    close_conn(&w, 0);
    check(&w);
    world_free(&w);
}

/* ---- publishing a committed batch ------------------------------------------------ */

static void no_ask(struct lws *wsi)
{
    (void)wsi;
}

static bool never(struct lws *wsi)
{
    (void)wsi;
    return false;
}

static const jw_wsconn_io quiet_io = {.ask_writable = no_ask, .backed_up = never, .closing = never};

/* w's connections open in its hub's set, held: what is pushed stays queued, to be looked at. */
static void open_conns(world *w)
{
    jw_wsconns_init(&w->hub.conns, "test", true, (size_t)1 << 24);
    w->hub.conns.io = &quiet_io;
    for (int i = 0; i < NCONN; i++)
        jw_wsconn_open(&w->hub.conns, &w->conns[i].base, (struct lws *)(void *)&w->conns[i]);
    jw_wsconns_hold(&w->hub.conns);
}

static void close_conns(world *w)
{
    for (int i = 0; i < NCONN; i++)
        jw_wsconn_closed(&w->conns[i].base);
    jw_wsconns_release(&w->hub.conns);
    free(w->hub.pend);
}

/* The end of a publishing test: its deltas let go, the connections closed, the world freed. */
static void publish_done(world *w, jw_delta **d, int n)
{
    for (int i = 0; i < n; i++)
        jw_delta_unref(d[i]);
    close_conns(w);
    world_free(w);
}

/* Delta seq of job k with a row of rowlen bytes; the caller unrefs it. */
static jw_delta *delta(world *w, int k, int64_t seq, size_t rowlen)
{
    char row[40000];
    int err = 0;
    jw_delta *d;

    assert_true(rowlen >= 8 && rowlen < sizeof(row));
    memset(row, 'x', rowlen);
    memcpy(row, "{\"a\":\"", 6);
    memcpy(row + rowlen - 2, "\"}", 2);
    d = jw_delta_new(w->jobs[k]->id, w->jobs[k]->id, seq, 1000 + seq, JW_TABLE_JOB_STEPS,
                     JW_OP_UPDATE, row, rowlen, &err);
    assert_non_null(d);
    return d;
}

/* How many entries are queued for connection i. */
static size_t queued(world *w, int i)
{
    size_t n = 0;

    for (const jw_wsq *e = w->conns[i].base.qhead; e; e = e->next)
        n++;
    return n;
}

/* Connection i's queued entry at (from the front). */
static const jw_wsq *entry(world *w, int i, size_t at)
{
    const jw_wsq *e = w->conns[i].base.qhead;

    while (at--)
        e = e->next;
    return e;
}

/* The messages of ds, as a gathered frame would carry them one by one. */
static char *joined(jw_delta **ds, size_t n)
{
    jw_buf b;
    char *out;

    jw_buf_init(&b, 1024);
    for (size_t i = 0; i < n; i++) {
        if (i)
            jw_buf_addch(&b, '\n');
        jw_delta_encode(ds[i], &b);
    }
    out = strdup(b.data);
    jw_buf_release(&b);
    assert_non_null(out);
    return out;
}

/*
 * A batch's deltas reach each watcher as one queue entry, shared, carrying
 * them all in seq order and counting each; the ring keeps them one by one; a
 * watcher owed a resync gets nothing; a delta of another job closes the batch
 * before its own starts.
 */
static void test_a_batch_is_one_entry_per_watcher(void **state)
{
    world w;
    jw_delta *d[6];
    char *want0, *want1;

    (void)state;
    world_init(&w);
    open_conns(&w);
    subscribe(&w, 0, 0);
    subscribe(&w, 1, 0);
    subscribe(&w, 2, 1);
    subscribe(&w, 3, 0);
    subscribe(&w, 3, 1);
    ws_find_sub(w.jobs[0], &w.conns[3])->resync = true;
    for (int i = 0; i < 6; i++)
        d[i] = delta(&w, i < 3 ? 0 : 1, 10 + i, 100 + (size_t)i);
    for (int i = 0; i < 6; i++)
        jw_ws_publish_batched(&w.hub, d[i]);
    /* The second job's first delta closed the first's batch; its own is still open. */
    assert_int_equal(queued(&w, 0), 1);
    assert_int_equal(queued(&w, 2), 0);
    jw_ws_publish_end(&w.hub);

    want0 = joined(d, 3);
    want1 = joined(d + 3, 3);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(queued(&w, i), 1);
        assert_string_equal(entry(&w, i, 0)->m->data, want0);
        assert_int_equal(entry(&w, i, 0)->counted, 3);
        assert_ptr_equal(entry(&w, i, 0)->tag, w.jobs[0]);
    }
    assert_ptr_equal(entry(&w, 0, 0)->m, entry(&w, 1, 0)->m); /* encoded once */
    assert_int_equal(w.conns[0].base.qcounted, 3);
    assert_int_equal(queued(&w, 2), 1);
    assert_string_equal(entry(&w, 2, 0)->m->data, want1);
    assert_int_equal(entry(&w, 2, 0)->counted, 3);
    /* Conn 3 is owed a resync of job 0: only job 1's batch. */
    assert_int_equal(queued(&w, 3), 1);
    assert_ptr_equal(entry(&w, 3, 0)->m, entry(&w, 2, 0)->m);
    /* The ring has each delta on its own, for resumes. */
    assert_int_equal(w.jobs[0]->count, 3);
    assert_int_equal(w.jobs[0]->first_seq, 10);
    for (size_t i = 0; i < 3; i++) {
        char *one = joined(d + i, 1);

        assert_string_equal(w.jobs[0]->ring[(w.jobs[0]->first + i) % RING]->data, one);
        free(one);
    }
    /* Nothing stays pending: a second end pushes nothing. */
    jw_ws_publish_end(&w.hub);
    assert_int_equal(queued(&w, 0), 1);
    free(want0);
    free(want1);
    publish_done(&w, d, 6);
}

/* A batch past BATCH_JOIN_MAX is joined in runs of at most that; a larger delta goes alone. */
static void test_a_large_batch_is_joined_in_runs(void **state)
{
    world w;
    jw_delta *d[6];
    size_t at = 0, total = 0;

    (void)state;
    world_init(&w);
    open_conns(&w);
    subscribe(&w, 0, 0);
    for (int i = 0; i < 6; i++) {
        d[i] = delta(&w, 0, 1 + i, i < 5 ? 5000 : 20000);
        jw_ws_publish_batched(&w.hub, d[i]);
    }
    jw_ws_publish_end(&w.hub);
    /* Three deltas (~15.5 KB) in the first run, two in the next, the large one alone. */
    assert_int_equal(queued(&w, 0), 3);
    for (size_t e = 0; e < 3; e++) {
        const jw_wsq *q = entry(&w, 0, e);
        size_t n = e == 0 ? 3 : e == 1 ? 2 : 1;
        char *want = joined(d + at, n);

        assert_true(n == 1 || q->m->len <= BATCH_JOIN_MAX);
        assert_string_equal(q->m->data, want);
        assert_int_equal(q->counted, n);
        total += q->counted;
        at += n;
        free(want);
    }
    assert_int_equal(total, 6);
    assert_true(entry(&w, 0, 2)->m->len > BATCH_JOIN_MAX);
    publish_done(&w, d, 6);
}

/*
 * What changes a job's watchers ends an open batch first: a watcher that
 * subscribes meanwhile gets none of it (its snapshot or replay will hold
 * those deltas), the others have it before one leaves, and so the batch
 * never outlives its job's last watcher (whose entry could then be evicted). (Nothing does so
 * inside the publish loops today; this keeps it so if something ever does.)
 */
static void test_a_watcher_change_ends_the_batch(void **state)
{
    world w;
    jw_delta *d[4];
    char *first, *second;

    (void)state;
    world_init(&w);
    open_conns(&w);
    subscribe(&w, 0, 0);
    for (int i = 0; i < 4; i++)
        d[i] = delta(&w, 0, 1 + i, 64);
    jw_ws_publish_batched(&w.hub, d[0]);
    jw_ws_publish_batched(&w.hub, d[1]);
    subscribe(&w, 1, 0);
    assert_null(w.hub.pend_job);
    assert_int_equal(queued(&w, 0), 1);
    assert_int_equal(queued(&w, 1), 0);

    jw_ws_publish_batched(&w.hub, d[2]);
    jw_ws_publish_batched(&w.hub, d[3]);
    unsubscribe(&w, 1, 0); /* its share is dropped with its subscription */
    assert_null(w.hub.pend_job);
    jw_ws_publish_end(&w.hub); /* nothing left open: a no-op */
    first = joined(d, 2);
    second = joined(d + 2, 2);
    assert_int_equal(queued(&w, 0), 2);
    assert_string_equal(entry(&w, 0, 0)->m->data, first);
    assert_string_equal(entry(&w, 0, 1)->m->data, second);
    assert_int_equal(queued(&w, 1), 0);
    free(first);
    free(second);
    publish_done(&w, d, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags_follow_the_subscriber),
        cmocka_unit_test(test_unsubscribe_forgets_an_owed_resync),
        cmocka_unit_test(test_index_against_a_model),
        cmocka_unit_test(test_long_lists_on_either_side),
        cmocka_unit_test(test_a_batch_is_one_entry_per_watcher),
        cmocka_unit_test(test_a_large_batch_is_joined_in_runs),
        cmocka_unit_test(test_a_watcher_change_ends_the_batch),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
