/*
 * The mirror (server/mirror.c) with fake ports: a fake engine, reads kept
 * and answered by the test, publications recorded. Deltas applied in seq
 * order, duplicates and gaps, notices (ours, malformed, wildcard), a job
 * leaving and entering the engine, the facade, and dropping mirrors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_error.h"
#include "jw_log.h"
#include "mirror.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOB "11111111-1111-4111-8111-111111111111"
#define JOB2 "22222222-2222-4222-8222-222222222222"
#define USER "99999999-9999-4999-8999-999999999999"
#define STEP "33333333-3333-4333-8333-333333333333"

typedef struct fake {
    /* the engine's one job, if any */
    bool has, driven;
    char job[JW_UUID_LEN + 1];
    int64_t seq;
    bool watched, wild;
    const char *wild_owner; /* the one user a wildcard channel may see; NULL: any */
    jw_read *reads[16];
    size_t nreads;
    int64_t published[64];
    char pub_job[64][JW_UUID_LEN + 1];
    size_t npub;
    int64_t wild_published[64]; /* to the Supabase channels only */
    size_t nwild;
    size_t ends[16]; /* npub at each call of the published port */
    size_t nends;
} fake;

static void f_publish(void *ctx, jw_delta *d)
{
    fake *f = ctx;

    assert_true(f->npub < 64);
    f->published[f->npub] = d->seq;
    snprintf(f->pub_job[f->npub], sizeof(f->pub_job[0]), "%s", d->job_id);
    f->npub++;
}

static void f_publish_wild(void *ctx, jw_delta *d)
{
    fake *f = ctx;

    assert_true(f->nwild < 64);
    f->wild_published[f->nwild++] = d->seq;
}

static void f_published(void *ctx)
{
    fake *f = ctx;

    assert_true(f->nends < 16);
    f->ends[f->nends++] = f->npub;
}

static bool f_watched(void *ctx, const char *job)
{
    (void)job;
    return ((fake *)ctx)->watched;
}

static bool f_wild(void *ctx, const char *owner)
{
    fake *f = ctx;

    return f->wild && (!owner || !f->wild_owner || strcmp(owner, f->wild_owner) == 0);
}

static int f_read(void *ctx, jw_read *r)
{
    fake *f = ctx;

    assert_true(f->nreads < 16);
    f->reads[f->nreads++] = r;
    return 0;
}

static bool mine(const fake *f, const char *job)
{
    return f->has && strcmp(f->job, job) == 0;
}

static bool f_driven(void *ctx, const char *job)
{
    fake *f = ctx;

    return mine(f, job) && f->driven;
}

static int64_t f_seq(void *ctx, const char *job)
{
    fake *f = ctx;

    return mine(f, job) ? f->seq : -1;
}

static json_t *f_snapshot(void *ctx, const char *job)
{
    fake *f = ctx;

    if (!mine(f, job))
        return NULL;
    return json_pack("{s:{s:s, s:s, s:s}, s:[], s:[], s:I}", "job", "id", job, "user_id", USER,
                     "status", "processing", "steps", "otp_requests", "seq", (json_int_t)f->seq);
}

static const char *f_owner(void *ctx, const char *job)
{
    return mine(ctx, job) ? USER : NULL;
}

static jw_mirror *new_mirror(fake *f)
{
    jw_mirror_ports p = {
        .ctx = f,
        .publish = f_publish,
        .publish_wild = f_publish_wild,
        .published = f_published,
        .watched = f_watched,
        .wildcard = f_wild,
        .read = f_read,
        .driven = f_driven,
        .engine_seq = f_seq,
        .engine_snapshot = f_snapshot,
        .engine_owner = f_owner,
    };

    memset(f, 0, sizeof(*f));
    f->watched = true;
    return jw_mirror_new("node-b", &p);
}

/* Frees the mirror, then the reads it left unanswered (a store would answer them). */
static void finish(fake *f, jw_mirror *m)
{
    jw_mirror_free(m);
    for (size_t i = 0; i < f->nreads; i++)
        jw_read_free(f->reads[i]);
    f->nreads = 0;
}

/* The oldest read the mirror asked for, taken off the fake's list. */
static jw_read *take_read(fake *f)
{
    jw_read *r;

    assert_true(f->nreads > 0);
    r = f->reads[0];
    memmove(f->reads, f->reads + 1, --f->nreads * sizeof(*f->reads));
    return r;
}

/* A job's state as JW_READ_JOB answers it, at seq. */
static json_t *doc_at(const char *job, int64_t seq)
{
    return json_pack("{s:{s:s, s:s, s:s}, s:[], s:[], s:I}", "job", "id", job, "user_id", USER,
                     "status", "processing", "steps", "otp_requests", "seq", (json_int_t)seq);
}

/* A journal row of JW_READ_EVENTS_AFTER: seq is a step update (or the job's insert at 1). */
static void add_row(json_t *rows, const char *job, int64_t seq)
{
    char row[256];
    bool first = seq == 1;

    if (first)
        snprintf(row, sizeof(row), "{\"id\":\"%s\",\"user_id\":\"%s\",\"status\":\"initiated\"}",
                 job, USER);
    else
        snprintf(row, sizeof(row), "{\"id\":\"%s\",\"job_run_id\":\"%s\",\"attempts\":%lld}", STEP,
                 job, (long long)seq);
    json_array_append_new(
        rows, json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:s}", "job", job, "seq",
                        (json_int_t)seq, "ts", (json_int_t)1000, "cts", (json_int_t)jw_now_us(),
                        "table", first ? "job_runs" : "job_steps", "op",
                        first ? "INSERT" : "UPDATE", "row_id", first ? job : STEP, "row", row));
}

/* Answers r (a fetch) with the journal rows given as (job, seq) pairs, ending at NULL. */
static void answer_fetch(jw_read *r, ...)
{
    json_t *rows = json_array();
    va_list ap;
    const char *job;

    assert_int_equal(r->kind, JW_READ_EVENTS_AFTER);
    va_start(ap, r);
    while ((job = va_arg(ap, const char *)) != NULL)
        add_row(rows, job, va_arg(ap, int64_t));
    va_end(ap);
    r->result = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    r->status = 0;
    r->done(r, r->done_arg);
}

static jw_delta *step_delta(const char *job, int64_t seq)
{
    char row[256];

    snprintf(row, sizeof(row), "{\"id\":\"%s\",\"job_run_id\":\"%s\",\"attempts\":%lld}", STEP, job,
             (long long)seq);
    return jw_delta_new(job, STEP, seq, 1000, JW_TABLE_JOB_STEPS, JW_OP_UPDATE, row, strlen(row),
                        NULL);
}

static void notice(jw_mirror *m, const char *node, const char *job, int64_t after, int64_t last)
{
    char p[256];

    snprintf(p, sizeof(p), "%s\n%s:%lld:%lld", node, job, (long long)after, (long long)last);
    jw_mirror_notice(m, p);
}

/* A watcher's state at 5, a notice to 7: one read past 5, published 6 and 7, state upserted. */
static void test_track_notice_fetch(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *doc = doc_at(JOB, 5), *snap;
    jw_mirror_stats st;
    jw_read *r;

    (void)state;
    assert_null(jw_mirror_owner(m, JOB));
    jw_mirror_track(m, JOB, doc);
    json_decref(doc);
    assert_true(jw_mirror_has(m, JOB));
    assert_string_equal(jw_mirror_owner(m, JOB), USER);
    assert_int_equal(jw_mirror_seq(m, JOB), 5);
    /* A new mirror reads its journal once at once. */
    r = take_read(&f);
    assert_string_equal(r->params[1], "{5}");
    answer_fetch(r, NULL);

    notice(m, "node-a", JOB, 5, 7);
    r = take_read(&f);
    assert_string_equal(r->params[0], "{" JOB "}");
    assert_string_equal(r->params[1], "{5}");
    assert_int_equal(f.nends, 0); /* the first read found nothing: nothing to end */
    answer_fetch(r, JOB, (int64_t)6, JOB, (int64_t)7, NULL);
    assert_int_equal(f.npub, 2);
    assert_int_equal(f.published[0], 6);
    assert_int_equal(f.published[1], 7);
    /* The read's deltas are one batch for the hubs: ended once, after both. */
    assert_int_equal(f.nends, 1);
    assert_int_equal(f.ends[0], 2);
    assert_int_equal(jw_mirror_seq(m, JOB), 7);
    snap = jw_mirror_snapshot(m, JOB);
    assert_int_equal(json_integer_value(json_object_get(snap, "seq")), 7);
    /* The step was inserted once and updated in place. */
    assert_int_equal(json_array_size(json_object_get(snap, "steps")), 1);
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(snap, "steps"), 0), "attempts")),
                     7);
    json_decref(snap);
    jw_mirror_get_stats(m, &st);
    assert_int_equal(st.fetched, 2);
    assert_int_equal(st.delivery_delay.count, 2);
    assert_int_equal(st.mirrors, 1);
    assert_int_equal(f.nreads, 0);
    finish(&f, m);
}

/* Rows already published are dropped; a gap in the engine's deltas reads the journal. */
static void test_duplicates_and_gaps(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *doc = doc_at(JOB, 5);
    jw_mirror_stats st;
    jw_delta *d;
    jw_read *r;

    (void)state;
    jw_mirror_track(m, JOB, doc);
    json_decref(doc);
    r = take_read(&f);
    answer_fetch(r, JOB, (int64_t)4, JOB, (int64_t)5, JOB, (int64_t)6, NULL);
    assert_int_equal(f.npub, 1);
    assert_int_equal(f.published[0], 6);

    /* The job comes into this engine at 8 (claimed at 7): its first local delta is ahead. */
    f.has = true;
    f.driven = true;
    snprintf(f.job, sizeof(f.job), "%s", JOB);
    f.seq = 8;
    d = step_delta(JOB, 8);
    assert_true(jw_mirror_local(m, d)); /* taken: dropped, the journal is read from 6 */
    jw_delta_unref(d);
    assert_int_equal(f.npub, 1);
    r = take_read(&f);
    assert_string_equal(r->params[1], "{6}");
    answer_fetch(r, JOB, (int64_t)7, JOB, (int64_t)8, NULL);
    assert_int_equal(f.npub, 3);
    assert_int_equal(f.published[1], 7);
    assert_int_equal(f.published[2], 8);
    /* The next local delta is in order: published, and the mirror is in sync: gone. */
    f.seq = 9;
    d = step_delta(JOB, 9);
    assert_true(jw_mirror_local(m, d));
    jw_delta_unref(d);
    assert_int_equal(f.npub, 4);
    assert_int_equal(f.published[3], 9);
    /* Two reads ended their batches; a local delta is the engine's batch to end. */
    assert_int_equal(f.nends, 2);
    assert_int_equal(f.ends[1], 3);
    assert_false(jw_mirror_has(m, JOB));
    /* From now on the engine publishes alone. */
    d = step_delta(JOB, 10);
    assert_false(jw_mirror_local(m, d));
    jw_delta_unref(d);
    jw_mirror_get_stats(m, &st);
    assert_int_equal(st.duplicates, 2);
    assert_int_equal(st.gaps, 1);
    assert_int_equal(st.local, 1);
    assert_int_equal(st.mirrors, 0);
    finish(&f, m);
}

/* Our own notices, malformed ones and unwatched jobs cost nothing. */
static void test_notices_ignored(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *doc = doc_at(JOB, 5);
    jw_read *r;

    (void)state;
    jw_mirror_track(m, JOB, doc);
    json_decref(doc);
    r = take_read(&f);
    answer_fetch(r, NULL);

    notice(m, "node-b", JOB, 5, 9); /* ours */
    jw_mirror_notice(m, "node-a");  /* no line */
    jw_mirror_notice(m, "node-a\nnot-a-job:1:2 " JOB ":x:3 " JOB ":7:3 " JOB ":5");
    assert_int_equal(f.nreads, 0);
    f.watched = false;
    notice(m, "node-a", JOB2, 0, 3); /* nobody here watches it, no wildcard */
    assert_int_equal(f.nreads, 0);
    assert_false(jw_mirror_has(m, JOB2));
    /* A node id with a space and a newline in it is still told apart by its last line. */
    jw_mirror_notice(m, "node a\nx\n" JOB ":5:6");
    r = take_read(&f);
    answer_fetch(r, JOB, (int64_t)6, NULL);
    assert_int_equal(f.npub, 1);
    finish(&f, m);
}

/* A lost notification: the tick's catch-up reads every mirror's journal anyway. */
static void test_catch_up_and_grace(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *doc = doc_at(JOB, 5);
    jw_mirror_stats st;
    jw_read *r;

    (void)state;
    jw_mirror_track(m, JOB, doc);
    json_decref(doc);
    r = take_read(&f);
    answer_fetch(r, NULL);
    jw_mirror_tick(m, 1000000);
    r = take_read(&f);
    assert_string_equal(r->params[1], "{5}");
    answer_fetch(r, JOB, (int64_t)6, NULL);
    assert_int_equal(f.npub, 1);
    jw_mirror_catch_up(m); /* LISTEN again */
    r = take_read(&f);
    assert_string_equal(r->params[1], "{6}");
    /* A notice while the read is out waits for it, then reads again. */
    notice(m, "node-a", JOB, 6, 8);
    assert_int_equal(f.nreads, 0);
    answer_fetch(r, JOB, (int64_t)7, NULL);
    r = take_read(&f);
    assert_string_equal(r->params[1], "{7}");
    answer_fetch(r, JOB, (int64_t)8, NULL);
    assert_int_equal(f.npub, 3);
    jw_mirror_get_stats(m, &st);
    assert_int_equal(st.catchups, 2);

    /* Nobody watches it any more: kept for the grace period, then dropped. */
    f.watched = false;
    jw_mirror_tick(m, 2000000);
    r = take_read(&f);
    answer_fetch(r, NULL);
    assert_true(jw_mirror_has(m, JOB));
    jw_mirror_tick(m, 2000000 + 11 * 1000000);
    r = take_read(&f);
    answer_fetch(r, NULL);
    assert_false(jw_mirror_has(m, JOB));
    jw_mirror_tick(m, 30 * 1000000); /* nothing mirrored: no read */
    assert_int_equal(f.nreads, 0);
    finish(&f, m);
}

/* A watched job leaves the engine (lease lost): the mirror goes on from the engine's seq. */
static void test_left_engine(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *snap;
    jw_read *r;

    (void)state;
    f.has = true;
    f.driven = true;
    snprintf(f.job, sizeof(f.job), "%s", JOB);
    f.seq = 12;
    assert_false(jw_mirror_has(m, JOB));
    assert_int_equal(jw_mirror_seq(m, JOB), 12); /* the engine's */
    /* Another node's notice of a job driven here as far: nothing. */
    notice(m, "node-a", JOB, 11, 12);
    assert_int_equal(f.nreads, 0);
    f.driven = false; /* halted: its lease was lost */
    jw_mirror_left(m, JOB);
    assert_true(jw_mirror_has(m, JOB));
    r = take_read(&f);
    assert_string_equal(r->params[1], "{12}");
    answer_fetch(r, JOB, (int64_t)13, NULL);
    assert_int_equal(f.npub, 1);
    assert_int_equal(f.published[0], 13);
    assert_int_equal(jw_mirror_seq(m, JOB), 13); /* the mirror's, no longer the engine's */
    snap = jw_mirror_snapshot(m, JOB);
    assert_int_equal(json_integer_value(json_object_get(snap, "seq")), 13);
    json_decref(snap);
    finish(&f, m);
}

/* A job halted here (its lease lost) while nobody watched: the hubs read it, the mirror takes it.
 */
static void test_halted_unwatched(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *doc = doc_at(JOB, 15);

    (void)state;
    f.has = true;
    f.driven = false;
    snprintf(f.job, sizeof(f.job), "%s", JOB);
    f.seq = 12;
    f.watched = false;
    jw_mirror_left(m, JOB); /* nobody watches: no mirror */
    assert_false(jw_mirror_has(m, JOB));
    /* Not driven here: the facade does not answer from the engine's stale copy. */
    assert_null(jw_mirror_owner(m, JOB));
    assert_int_equal(jw_mirror_seq(m, JOB), -1);
    assert_null(jw_mirror_snapshot(m, JOB));
    f.watched = true;
    jw_mirror_track(m, JOB, doc); /* a subscriber's read */
    json_decref(doc);
    assert_true(jw_mirror_has(m, JOB));
    assert_int_equal(jw_mirror_seq(m, JOB), 15);
    finish(&f, m);
}

/* A wildcard channel: a job new to the cluster is mirrored from seq 0, owner from its row. */
static void test_wildcard(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *doc, *st;
    jw_read *r;

    (void)state;
    f.watched = false;
    f.wild = true;
    notice(m, "node-a", JOB2, 0, 2);
    assert_false(jw_mirror_has(m, JOB2)); /* no owner yet */
    r = take_read(&f);
    assert_string_equal(r->params[1], "{0}");
    answer_fetch(r, JOB2, (int64_t)1, JOB2, (int64_t)2, NULL);
    assert_int_equal(f.npub, 2);
    assert_string_equal(f.pub_job[0], JOB2);
    assert_true(jw_mirror_has(m, JOB2));
    assert_string_equal(jw_mirror_owner(m, JOB2), USER);
    /*
     * Known from before: its state is read first (at 7: a commit after the
     * notice's), then its journal from the notice's "after": 5..7 reach the
     * Supabase channels, which have not seen them, and not the jobwire.v1
     * watchers, which the state (at 7) serves meanwhile; 8 reaches both.
     */
    f.npub = 0;
    notice(m, "node-a", JOB, 4, 6);
    r = take_read(&f);
    assert_int_equal(r->kind, JW_READ_JOB);
    assert_false(jw_mirror_has(m, JOB));
    doc = doc_at(JOB, 7);
    r->result = json_dumps(doc, 0);
    json_decref(doc);
    r->status = 0;
    r->done(r, r->done_arg);
    assert_true(jw_mirror_has(m, JOB));
    assert_int_equal(jw_mirror_seq(m, JOB), 7);
    r = take_read(&f);
    assert_true(strstr(r->params[1], "4") != NULL); /* its journal after 4 */
    answer_fetch(r, JOB, (int64_t)5, JOB, (int64_t)6, JOB, (int64_t)7, JOB, (int64_t)8, NULL);
    assert_int_equal(f.nwild, 3);
    assert_int_equal(f.wild_published[0], 5);
    assert_int_equal(f.wild_published[2], 7);
    assert_int_equal(f.npub, 1);
    assert_int_equal(f.published[0], 8);
    assert_int_equal(jw_mirror_seq(m, JOB), 8);
    st = jw_mirror_snapshot(m, JOB);
    assert_int_equal(json_integer_value(json_object_get(st, "seq")), 8);
    json_decref(st);
    finish(&f, m);
}

/* A wildcard channel of another user: a job turns out to be nobody's here, and is let go. */
static void test_wildcard_unwanted(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    jw_read *r;

    (void)state;
    f.watched = false;
    f.wild = true;
    f.wild_owner = "88888888-8888-4888-8888-888888888888";
    notice(m, "node-a", JOB2, 0, 2);
    r = take_read(&f);
    answer_fetch(r, JOB2, (int64_t)1, JOB2, (int64_t)2, NULL);
    assert_true(jw_mirror_has(m, JOB2)); /* published (the hubs check who may see it) */
    jw_mirror_tick(m, 1000000);          /* its owner is known now: nobody's here */
    r = take_read(&f);
    answer_fetch(r, NULL);
    assert_false(jw_mirror_has(m, JOB2));
    notice(m, "node-a", JOB2, 2, 4); /* ignored: no read */
    assert_int_equal(f.nreads, 0);
    assert_false(jw_mirror_has(m, JOB2));
    /* A wildcard channel that may see it: mirrored again. */
    f.wild_owner = NULL;
    notice(m, "node-a", JOB2, 4, 5);
    r = take_read(&f);
    assert_int_equal(r->kind, JW_READ_JOB);
    jw_read_cancel(r);
    finish(&f, m);
    jw_read_free(r);
}

/* A finished job's mirror publishes (a retry elsewhere) but the facade leaves it to PostgreSQL. */
static void test_finished(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *doc = doc_at(JOB, 9), *st;
    jw_read *r;

    (void)state;
    json_object_set_new(json_object_get(doc, "job"), "status", json_string("failed"));
    jw_mirror_track(m, JOB, doc);
    json_decref(doc);
    assert_false(jw_mirror_has(m, JOB));
    assert_null(jw_mirror_owner(m, JOB));
    assert_int_equal(jw_mirror_seq(m, JOB), -1);
    assert_string_equal(jw_mirror_publish_owner(m, JOB), USER);
    st = jw_mirror_mirrored(m, JOB);
    assert_int_equal(json_integer_value(json_object_get(st, "seq")), 9);
    json_decref(st);
    /* Retried on another node: a step first (the owner still authorizes it), then live. */
    r = take_read(&f);
    answer_fetch(r, JOB, (int64_t)10, NULL);
    assert_int_equal(f.npub, 1);
    assert_false(jw_mirror_has(m, JOB));
    {
        json_t *rows = json_array();
        char row[256];

        snprintf(row, sizeof(row), "{\"id\":\"%s\",\"user_id\":\"%s\",\"status\":\"processing\"}",
                 JOB, USER);
        json_array_append_new(rows,
                              json_pack("{s:s, s:i, s:i, s:i, s:s, s:s, s:s, s:s}", "job", JOB,
                                        "seq", 11, "ts", 1000, "cts", 2000, "table", "job_runs",
                                        "op", "UPDATE", "row_id", JOB, "row", row));
        notice(m, "node-a", JOB, 10, 11);
        r = take_read(&f);
        r->result = json_dumps(rows, JSON_COMPACT);
        json_decref(rows);
        r->status = 0;
        r->done(r, r->done_arg);
    }
    assert_int_equal(f.npub, 2);
    assert_true(jw_mirror_has(m, JOB));
    assert_string_equal(jw_mirror_owner(m, JOB), USER);
    assert_int_equal(jw_mirror_seq(m, JOB), 11);
    finish(&f, m);
}

/* A finished job's mirror waits for a notice; the tick reads its journal only every tenth time. */
static void test_finished_catch_up(void **state)
{
    fake f;
    jw_mirror *m = new_mirror(&f);
    json_t *doc = doc_at(JOB, 9);
    jw_mirror_stats st;
    jw_read *r;

    (void)state;
    json_object_set_new(json_object_get(doc, "job"), "status", json_string("completed"));
    jw_mirror_track(m, JOB, doc);
    json_decref(doc);
    r = take_read(&f);
    answer_fetch(r, NULL);
    for (int i = 1; i < 10; i++) {
        jw_mirror_tick(m, i * 1000000);
        assert_int_equal(f.nreads, 0);
    }
    jw_mirror_tick(m, 10 * 1000000);
    r = take_read(&f);
    assert_string_equal(r->params[1], "{9}");
    answer_fetch(r, NULL);
    jw_mirror_get_stats(m, &st);
    assert_int_equal(st.catchups, 1);
    finish(&f, m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_track_notice_fetch), cmocka_unit_test(test_duplicates_and_gaps),
        cmocka_unit_test(test_notices_ignored),    cmocka_unit_test(test_catch_up_and_grace),
        cmocka_unit_test(test_left_engine),        cmocka_unit_test(test_wildcard),
        cmocka_unit_test(test_finished),           cmocka_unit_test(test_wildcard_unwanted),
        cmocka_unit_test(test_finished_catch_up),  cmocka_unit_test(test_halted_unwatched),
    };

    jw_log_set_level(JW_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
