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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags_follow_the_subscriber),
        cmocka_unit_test(test_unsubscribe_forgets_an_owed_resync),
        cmocka_unit_test(test_index_against_a_model),
        cmocka_unit_test(test_long_lists_on_either_side),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
