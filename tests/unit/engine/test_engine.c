/*
 * The engine with fakes of its ports: a fake clock driving the real timer
 * queue, a fake store that commits when the test says so, and a provider the
 * test answers call by call. Hours of timeouts run in microseconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_engine.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USER "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define OTHER "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define MAX_CALLS 512
#define MAX_BATCHES 256
#define MAX_PUB 4096

/* ---- fakes ------------------------------------------------------------------ */

static struct fake {
    int64_t now;
    jw_timers *timers;
    jw_engine *e;
    jw_batch *batches[MAX_BATCHES];
    size_t nbatches;
    bool refuse_next;
    int refuse_status;  /* what refuse_next answers; 0: JW_EDB */
    size_t submitted;   /* batches handed to the store, ever */
    int64_t last_epoch; /* the lease epoch of the last batch submitted */
    /* The store answers inside submit, as the server's port does when the
     * store refuses a batch (shutting down); refusing: with an error. */
    bool store_inline, store_refusing;
    int refuse_starts;                  /* the provider refuses this many calls in start() */
    jw_provider_call *calls[MAX_CALLS]; /* every call, answered or not */
    bool answered[MAX_CALLS];
    size_t ncalls;
    jw_delta *pub[MAX_PUB];
    size_t npub;
    size_t pub_closed;      /* F.npub when the published port was last called */
    int ends;               /* published port calls */
    char all_rows[1 << 20]; /* every row text ever submitted, to search */
    size_t rows_len;
} F;

static int64_t fake_now(void *ctx)
{
    (void)ctx;
    return F.now;
}

static uint64_t fake_random(void *ctx)
{
    (void)ctx;
    return UINT64_C(1) << 63; /* jitter factor 0 */
}

static void fake_submit(void *ctx, jw_batch *b)
{
    (void)ctx;
    assert_true(F.nbatches < MAX_BATCHES);
    F.submitted++;
    F.last_epoch = b->lease_epoch;
    for (size_t i = 0; i < b->count; i++) {
        size_t n = b->deltas[i]->row_len;

        if (F.rows_len + n + 1 < sizeof(F.all_rows)) {
            memcpy(F.all_rows + F.rows_len, b->deltas[i]->row, n);
            F.rows_len += n;
            F.all_rows[F.rows_len++] = '\n';
        }
    }
    if (F.store_inline) {
        if (F.store_refusing) {
            b->status = JW_ECLOSED;
            b->error = strdup("refused inside submit by the test");
        } else {
            b->committed_us = F.now;
        }
        jw_engine_on_commit(F.e, b);
        return;
    }
    F.batches[F.nbatches++] = b;
}

static void fake_publish(void *ctx, jw_delta *d)
{
    (void)ctx;
    assert_true(F.npub < MAX_PUB);
    F.pub[F.npub++] = jw_delta_ref(d);
}

/* A batch's publishes end with this, and nothing of another job comes in between. */
static void fake_published(void *ctx)
{
    (void)ctx;
    for (size_t i = F.pub_closed + 1; i < F.npub; i++)
        assert_string_equal(F.pub[i]->job_id, F.pub[F.pub_closed]->job_id);
    F.pub_closed = F.npub;
    F.ends++;
}

static int fake_start(void *ctx, jw_provider_call *c)
{
    (void)ctx;
    if (F.refuse_starts > 0) {
        F.refuse_starts--;
        jw_provider_call_free(c);
        return JW_ECLOSED;
    }
    assert_true(F.ncalls < MAX_CALLS);
    F.answered[F.ncalls] = false;
    F.calls[F.ncalls++] = c;
    return 0;
}

static void fake_destroy(void *ctx)
{
    (void)ctx;
}

/* Commits every queued batch (and those their commits queue). */
static void commit_all(void)
{
    while (F.nbatches) {
        jw_batch *b = F.batches[0];

        memmove(F.batches, F.batches + 1, --F.nbatches * sizeof(*F.batches));
        if (F.refuse_next) {
            F.refuse_next = false;
            b->status = F.refuse_status ? F.refuse_status : JW_EDB;
            b->error = strdup("refused by the test");
        }
        {
            int ends = F.ends, status = b->status;

            jw_engine_on_commit(F.e, b);
            /* Each committed batch, its deltas published or not, is closed once;
             * a refused one publishes nothing and is not. (Inline, the batches
             * its actions submit commit inside this call too.) */
            if (!F.store_inline)
                assert_int_equal(F.ends, ends + (status == 0));
            assert_int_equal(F.pub_closed, F.npub);
        }
    }
}

static void advance_ms(int64_t ms)
{
    F.now += ms * 1000;
    jw_timers_run(F.timers, F.now);
    commit_all();
}

/* The engine's ports, all fakes. */
static jw_engine_ports fake_ports(void)
{
    jw_engine_ports p = {.now_us = fake_now,
                         .random = fake_random,
                         .submit = fake_submit,
                         .publish = fake_publish,
                         .published = fake_published,
                         .timers = F.timers,
                         .provider = {"fake", NULL, fake_start, fake_destroy}};

    return p;
}

static int setup(void **state)
{
    jw_engine_ports p;
    jw_engine_config cfg = {.otp_timeout_login_ms = 300000, .otp_timeout_payment_ms = 180000};

    (void)state;
    memset(&F, 0, sizeof(F));
    jw_log_set_level(JW_LOG_ERROR);
    F.now = INT64_C(1795687200000000); /* 2026-11-26T10:00:00Z */
    F.timers = jw_timers_new(NULL, NULL);
    p = fake_ports();
    F.e = jw_engine_new(&cfg, &p);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    commit_all();
    jw_engine_free(F.e);
    jw_timers_free(F.timers);
    for (size_t i = 0; i < F.ncalls; i++)
        jw_provider_call_free(F.calls[i]);
    for (size_t i = 0; i < F.npub; i++)
        jw_delta_unref(F.pub[i]);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

/* The oldest unanswered call, or NULL. */
static jw_provider_call *pending_call(const char *step_name)
{
    for (size_t i = 0; i < F.ncalls; i++)
        if (!F.answered[i] && (!step_name || strcmp(F.calls[i]->step_name, step_name) == 0))
            return F.calls[i];
    return NULL;
}

/* The oldest unanswered call of one job's step. */
static jw_provider_call *job_call(const char *job_id, const char *step_name)
{
    for (size_t i = 0; i < F.ncalls; i++)
        if (!F.answered[i] && strcmp(F.calls[i]->job_id, job_id) == 0 &&
            strcmp(F.calls[i]->step_name, step_name) == 0)
            return F.calls[i];
    return NULL;
}

static size_t unanswered(void)
{
    size_t n = 0;

    for (size_t i = 0; i < F.ncalls; i++)
        n += !F.answered[i];
    return n;
}

static size_t calls_named(const char *step_name)
{
    size_t n = 0;

    for (size_t i = 0; i < F.ncalls; i++)
        n += strcmp(F.calls[i]->step_name, step_name) == 0;
    return n;
}

static void mark_answered(jw_provider_call *c)
{
    for (size_t i = 0; i < F.ncalls; i++)
        if (F.calls[i] == c)
            F.answered[i] = true;
}

static void reply(jw_provider_call *c, jw_provider_reply *r)
{
    assert_non_null(c);
    mark_answered(c);
    jw_engine_on_reply(F.e, r);
    commit_all();
}

static void reply_ok(jw_provider_call *c)
{
    jw_provider_reply *r = jw_provider_reply_new(c->id, JW_PROVIDER_OK);

    if (strstr(c->step_name, "_login"))
        json_object_set_new(r->data, "session", json_pack("{s:s}", "token", "tok-secret-xyz"));
    reply(c, r);
}

static void reply_otp(jw_provider_call *c, const char *type, bool invalid)
{
    jw_provider_reply *r = jw_provider_reply_new(c->id, JW_PROVIDER_OTP_REQUIRED);

    snprintf(r->otp_type, sizeof(r->otp_type), "%s", type);
    snprintf(r->phone_hint, sizeof(r->phone_hint), "******4821");
    r->invalid_otp = invalid;
    reply(c, r);
}

static void reply_error(jw_provider_call *c, bool retryable, const char *msg)
{
    jw_provider_reply *r = jw_provider_reply_new(c->id, JW_PROVIDER_ERROR);

    r->retryable = retryable;
    r->refused = !retryable; /* a contract error reply, as jw_provider_reply_parse makes */
    snprintf(r->message, sizeof(r->message), "%s", msg);
    reply(c, r);
}

/* The provider gave up waiting for its upstream (the http provider's curl timeout). */
static void reply_timeout(jw_provider_call *c)
{
    jw_provider_reply *r = jw_provider_reply_new(c->id, JW_PROVIDER_ERROR);

    r->retryable = true;
    r->timed_out = true;
    snprintf(r->message, sizeof(r->message), "timeout after 500 ms");
    reply(c, r);
}

static void reply_pending(jw_provider_call *c, int ms)
{
    jw_provider_reply *r = jw_provider_reply_new(c->id, JW_PROVIDER_PENDING);

    r->poll_after_ms = ms;
    reply(c, r);
}

static void create_for(char id[JW_UUID_LEN + 1], int count, const char *user)
{
    char err[256];

    assert_int_equal(
        jw_engine_create_job(F.e, user, 1500, count, NULL, NULL, NULL, id, err, sizeof(err)), 0);
    commit_all();
}

static void create(char id[JW_UUID_LEN + 1], int count)
{
    create_for(id, count, USER);
}

/* Answers every call ok (logins and payments without OTP) until none is left. */
static void run_ok(void)
{
    jw_provider_call *c;

    while ((c = pending_call(NULL)) != NULL)
        reply_ok(c);
}

static json_t *snap(const char *id)
{
    json_t *s = jw_engine_snapshot(F.e, id);

    assert_non_null(s);
    return s;
}

static const char *job_field(const char *id, const char *field, char *buf, size_t n)
{
    json_t *s = snap(id);
    json_t *v = json_object_get(json_object_get(s, "job"), field);

    if (json_is_string(v))
        snprintf(buf, n, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, n, "%s", json_is_true(v) ? "true" : "false");
    else
        snprintf(buf, n, "null");
    json_decref(s);
    return buf;
}

#define JOB(id, field) job_field(id, field, (char[256]){0}, 256)

static json_t *find_step(json_t *s, const char *name, int tx)
{
    size_t i;
    json_t *st;

    json_array_foreach(json_object_get(s, "steps"), i, st)
    {
        json_t *ti = json_object_get(st, "transaction_index");

        if (strcmp(json_string_value(json_object_get(st, "step_name")), name) == 0 &&
            (tx ? json_integer_value(ti) == tx : json_is_null(ti)))
            return st;
    }
    return NULL;
}

static const char *step_status(const char *id, const char *name, int tx, char *buf, size_t n)
{
    json_t *s = snap(id);
    json_t *st = find_step(s, name, tx);

    snprintf(buf, n, "%s", st ? json_string_value(json_object_get(st, "status")) : "(none)");
    json_decref(s);
    return buf;
}

#define STEP(id, name, tx) step_status(id, name, tx, (char[64]){0}, 64)

static json_t *latest_otp(const char *id)
{
    json_t *s = snap(id), *arr = json_object_get(s, "otp_requests");
    json_t *o = json_incref(json_array_get(arr, json_array_size(arr) - 1));

    json_decref(s);
    return o;
}

/* The id of a job's newest OTP request. */
static void latest_otp_id(const char *job_id, char out[JW_UUID_LEN + 1])
{
    json_t *o = latest_otp(job_id);

    snprintf(out, JW_UUID_LEN + 1, "%s", json_string_value(json_object_get(o, "id")));
    json_decref(o);
}

/* Published deltas: per job, seq 1, 2, 3, ... with nothing missing. */
static void assert_gapless(const char *id)
{
    int64_t expect = 1;

    for (size_t i = 0; i < F.npub; i++) {
        if (strcmp(F.pub[i]->job_id, id) != 0)
            continue;
        assert_int_equal(F.pub[i]->seq, expect);
        expect++;
    }
    assert_true(expect > 1);
}

struct otp_answer {
    int calls;
    bool ok;
    char error[32];
    int attempts_left;
};

static void on_otp(void *arg, const jw_otp_result *r)
{
    struct otp_answer *a = arg;

    a->calls++;
    a->ok = r->ok;
    snprintf(a->error, sizeof(a->error), "%s", r->error ? r->error : "");
    a->attempts_left = r->attempts_left;
}

static int step_ordinal(const char *name)
{
    const jw_engine_hists *h = jw_engine_get_hists(F.e);

    for (int i = 0; i < h->nsteps; i++)
        if (strcmp(h->step[i], name) == 0)
            return i;
    fail_msg("no histogram for step %s", name);
    return -1;
}

static const jw_hist *step_hist(const char *name, jw_step_outcome oc)
{
    return &jw_engine_get_hists(F.e)->step_duration[step_ordinal(name)][oc];
}

static const jw_hist *call_hist(const char *name, jw_call_result res)
{
    return &jw_engine_get_hists(F.e)->call_duration[step_ordinal(name)][res];
}

/* Observations over every step and outcome, or every step and call result. */
static uint64_t all_steps_observed(void)
{
    const jw_engine_hists *h = jw_engine_get_hists(F.e);
    uint64_t n = 0;

    for (int i = 0; i < h->nsteps; i++)
        for (int k = 0; k < JW_STEP_OUTCOME__N; k++)
            n += h->step_duration[i][k].count;
    return n;
}

static uint64_t all_calls_observed(void)
{
    const jw_engine_hists *h = jw_engine_get_hists(F.e);
    uint64_t n = 0;

    for (int i = 0; i < h->nsteps; i++)
        for (int k = 0; k < JW_CALL_RESULT__N; k++)
            n += h->call_duration[i][k].count;
    return n;
}

/* The index of the bound le (in us) in a histogram's spec. */
static size_t le_index(const jw_hist *h, uint64_t le)
{
    for (size_t i = 0; i < h->spec->n; i++)
        if (h->spec->le[i] == le)
            return i;
    fail_msg("no bucket le=%llu us", (unsigned long long)le);
    return 0;
}

/* Exactly one observation, of us microseconds, in the bucket le=le_us and not below. */
static void assert_one_in(const jw_hist *h, uint64_t us, uint64_t le_us, uint64_t below_us)
{
    assert_int_equal(h->count, 1);
    assert_int_equal(h->sum, us);
    assert_int_equal(jw_hist_cumulative(h, le_index(h, le_us)), 1);
    assert_int_equal(jw_hist_cumulative(h, le_index(h, below_us)), 0);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_happy_path_gated_by_commits(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];

    (void)state;
    assert_int_equal(
        jw_engine_create_job(F.e, USER, 1500, 2, NULL, NULL, NULL, id, err, sizeof(err)), 0);
    /* Nothing leaves the engine before its batch committed (rules 3 and 4). */
    assert_int_equal(F.npub, 0);
    assert_int_equal(F.ncalls, 0);
    assert_null(jw_engine_snapshot(F.e, id));
    commit_all();
    assert_true(F.npub > 0);
    /* Both logins run at once; availability waits for both. */
    assert_non_null(pending_call("gyftr_login"));
    assert_non_null(pending_call("amazon_login"));
    assert_null(pending_call("availability_check"));
    assert_string_equal(JOB(id, "status"), "validating");
    reply_ok(pending_call("gyftr_login"));
    assert_null(pending_call("availability_check"));
    assert_string_equal(JOB(id, "progress_percentage"), "6");
    reply_ok(pending_call("amazon_login"));
    assert_non_null(pending_call("availability_check"));
    assert_string_equal(JOB(id, "progress_percentage"), "13");
    reply_ok(pending_call("availability_check"));
    assert_string_equal(JOB(id, "status"), "processing");
    assert_string_equal(JOB(id, "current_phase"), "payment_processing");
    assert_string_equal(JOB(id, "progress_percentage"), "20");
    /* One transaction step at a time, in order. */
    {
        static const char *const order[] = {"generate_payment_link", "process_payment",
                                            "wait_for_vouchers", "redeem_amazon_vouchers"};

        for (int tx = 1; tx <= 2; tx++) {
            for (int k = 0; k < 4; k++) {
                jw_provider_call *c = pending_call(NULL);

                assert_int_equal(unanswered(), 1);
                assert_string_equal(c->step_name, order[k]);
                assert_int_equal(c->transaction_index, tx);
                assert_int_equal(c->amount, 1500);
                assert_int_equal(c->attempt, 1);
                /* Later steps present the login sessions. */
                assert_non_null(json_object_get(c->session, "gyftr"));
                assert_non_null(json_object_get(c->session, "amazon"));
                reply_ok(c);
            }
            assert_string_equal(JOB(id, "completed_transactions"), tx == 1 ? "1" : "2");
        }
    }
    assert_string_equal(JOB(id, "status"), "completed");
    assert_string_equal(JOB(id, "progress_percentage"), "100");
    assert_string_equal(JOB(id, "current_phase"), "complete");
    assert_string_not_equal(JOB(id, "completed_at"), "null");
    assert_gapless(id);
    /* Session tokens stay in memory: never in a row. */
    assert_null(strstr(F.all_rows, "tok-secret-xyz"));
    {
        json_t *s = snap(id);

        assert_int_equal(json_array_size(json_object_get(s, "steps")), 3 + 2 * 4);
        assert_int_equal(json_integer_value(json_object_get(s, "seq")), F.pub[F.npub - 1]->seq);
        json_decref(s);
    }
}

static void test_progress_follows_count(void **state)
{
    char id[JW_UUID_LEN + 1];

    (void)state;
    create(id, 3);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    for (int k = 0; k < 4; k++)
        reply_ok(pending_call(NULL));
    assert_string_equal(JOB(id, "progress_percentage"), "46"); /* 20 + 80/3 */
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    assert_int_equal(calls_named("process_payment"), 3);
}

static void test_login_failure_cancels_other(void **state)
{
    char id[JW_UUID_LEN + 1];

    (void)state;
    create(id, 1);
    reply_otp(pending_call("amazon_login"), "amazon_login", false);
    assert_string_equal(STEP(id, "amazon_login", 0), "waiting_otp");
    reply_error(pending_call("gyftr_login"), false, "account locked");
    assert_string_equal(JOB(id, "status"), "failed");
    assert_non_null(strstr(JOB(id, "error_message"), "gyftr_login failed: account locked"));
    assert_non_null(strstr(JOB(id, "error_message"), "cancelled"));
    assert_string_equal(STEP(id, "amazon_login", 0), "cancelled");
    /* Steps that will not run now are closed too; a retry reopens them. */
    assert_string_equal(STEP(id, "availability_check", 0), "cancelled");
    {
        json_t *o = latest_otp(id);

        assert_string_equal(json_string_value(json_object_get(o, "status")), "failed");
        json_decref(o);
    }
    assert_int_equal(unanswered(), 0);
    assert_gapless(id);
    /* Outcomes: the login that waited on its OTP was cancelled, at 0 s on this clock. */
    assert_int_equal(step_hist("amazon_login", JW_STEP_OUTCOME_CANCELLED)->count, 1);
    assert_int_equal(step_hist("amazon_login", JW_STEP_OUTCOME_CANCELLED)->bucket[0], 1);
    assert_int_equal(step_hist("gyftr_login", JW_STEP_OUTCOME_FAILED)->count, 1);
    assert_int_equal(call_hist("gyftr_login", JW_CALL_FATAL)->count, 1);
    assert_int_equal(call_hist("amazon_login", JW_CALL_OTP_REQUIRED)->count, 1);
    /* availability_check was cancelled before it ever started: not observed. */
    assert_int_equal(step_hist("availability_check", JW_STEP_OUTCOME_CANCELLED)->count, 0);
    assert_int_equal(all_steps_observed(), 2);
}

static void test_otp_wrong_then_right(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], otp_id[JW_UUID_LEN + 1];
    struct otp_answer a = {0};
    json_t *o;

    (void)state;
    create(id, 1);
    reply_ok(pending_call("amazon_login"));
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    assert_string_equal(STEP(id, "gyftr_login", 0), "waiting_otp");
    o = latest_otp(id);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "requested");
    assert_string_equal(json_string_value(json_object_get(o, "otp_type")), "gyftr_login");
    assert_string_equal(json_string_value(json_object_get(o, "phone_number")), "******4821");
    assert_int_equal(json_integer_value(json_object_get(o, "max_attempts")), 3);
    assert_string_equal(json_string_value(json_object_get(o, "timeout_at")),
                        "2026-11-26T10:05:00.000000Z"); /* login: 5 min */
    snprintf(otp_id, sizeof(otp_id), "%s", json_string_value(json_object_get(o, "id")));
    json_decref(o);

    /* Wrong code: the submission wakes the step at once (a call, no poll). */
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "918273", USER, on_otp, &a, err, sizeof(err)), 0);
    assert_null(pending_call("gyftr_login")); /* not before the commit */
    commit_all();
    assert_string_equal(pending_call("gyftr_login")->otp, "918273");
    reply_otp(pending_call("gyftr_login"), "gyftr_login", true);
    assert_int_equal(a.calls, 1);
    assert_false(a.ok);
    assert_string_equal(a.error, "invalid_otp");
    assert_int_equal(a.attempts_left, 2);
    assert_string_equal(STEP(id, "gyftr_login", 0), "waiting_otp");
    o = latest_otp(id);
    assert_int_equal(json_integer_value(json_object_get(o, "attempts_count")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "requested");
    json_decref(o);

    /* Right code. */
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "564738", USER, on_otp, &a, err, sizeof(err)), 0);
    commit_all();
    /* The verdict waits for the commit of the row that records it. */
    {
        jw_provider_call *c = pending_call("gyftr_login");

        mark_answered(c);
        jw_engine_on_reply(F.e, jw_provider_reply_new(c->id, JW_PROVIDER_OK));
        assert_int_equal(a.calls, 1);
        commit_all();
    }
    assert_int_equal(a.calls, 2);
    assert_true(a.ok);
    o = latest_otp(id);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "verified");
    assert_string_not_equal(json_string_value(json_object_get(o, "verified_at")), "");
    json_decref(o);
    assert_string_equal(STEP(id, "gyftr_login", 0), "completed");
    assert_non_null(pending_call("availability_check"));
    /* Rule 5: the values typed never reached a row. */
    assert_null(strstr(F.all_rows, "918273"));
    assert_null(strstr(F.all_rows, "564738"));
    /* A verified request takes no more codes. */
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "111111", USER, NULL, NULL, err, sizeof(err)),
        JW_ECONFLICT);
    assert_non_null(strstr(err, "verified"));
    {
        jw_engine_stats st;

        jw_engine_get_stats(F.e, &st);
        assert_int_equal(st.otp_requested, 1);
        assert_int_equal(st.otp_wrong, 1);
        assert_int_equal(st.otp_verified, 1);
        assert_int_equal(st.otp_exhausted, 0);
        assert_int_equal(st.otp_expired, 0);
    }
    /* The prompt and the wrong code were otp_required replies; the right one ok. */
    assert_int_equal(call_hist("gyftr_login", JW_CALL_OTP_REQUIRED)->count, 2);
    assert_int_equal(call_hist("gyftr_login", JW_CALL_OK)->count, 1);
}

static void test_otp_refusals(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], otp_id[JW_UUID_LEN + 1];

    (void)state;
    create(id, 1);
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    latest_otp_id(id, otp_id);
    assert_int_equal(jw_engine_submit_otp(F.e, "cccccccc-cccc-4ccc-8ccc-cccccccccccc", "123456",
                                          NULL, NULL, NULL, err, sizeof(err)),
                     JW_ENOTFOUND);
    /* Another user's request looks exactly like a missing one. */
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "123456", OTHER, NULL, NULL, err, sizeof(err)),
        JW_ENOTFOUND);
    assert_non_null(strstr(err, "no OTP request"));
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "12a456", USER, NULL, NULL, err, sizeof(err)), JW_EINVAL);
    assert_int_equal(jw_engine_submit_otp(F.e, otp_id, "123", USER, NULL, NULL, err, sizeof(err)),
                     JW_EINVAL);
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "12345678901", USER, NULL, NULL, err, sizeof(err)),
        JW_EINVAL);
    assert_int_equal(jw_engine_submit_otp(F.e, otp_id, NULL, USER, NULL, NULL, err, sizeof(err)),
                     JW_EINVAL);
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "123456", USER, NULL, NULL, err, sizeof(err)), 0);
    /* Received and being checked: a second code is refused. */
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "654321", USER, NULL, NULL, err, sizeof(err)),
        JW_ECONFLICT);
    assert_non_null(strstr(err, "received"));
    commit_all();
}

static void test_otp_attempt_limit_asks_fresh(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], first[JW_UUID_LEN + 1];
    struct otp_answer a = {0};
    json_t *o;

    (void)state;
    create(id, 1);
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    latest_otp_id(id, first);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            jw_engine_submit_otp(F.e, first, "000000", USER, on_otp, &a, err, sizeof(err)), 0);
        commit_all();
        reply_otp(pending_call("gyftr_login"), "gyftr_login", true);
    }
    assert_int_equal(a.attempts_left, 0);
    o = latest_otp(id);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "failed");
    assert_int_equal(json_integer_value(json_object_get(o, "attempts_count")), 3);
    json_decref(o);
    /* The step's retry policy asks for a fresh code on its next attempt. */
    assert_string_equal(STEP(id, "gyftr_login", 0), "retrying");
    assert_null(pending_call("gyftr_login"));
    advance_ms(60000);
    assert_int_equal(pending_call("gyftr_login")->attempt, 2);
    assert_null(pending_call("gyftr_login")->otp);
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    o = latest_otp(id);
    assert_string_not_equal(json_string_value(json_object_get(o, "id")), first);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "requested");
    json_decref(o);
    {
        jw_engine_stats st;

        jw_engine_get_stats(F.e, &st);
        assert_int_equal(st.otp_requested, 2);
        assert_int_equal(st.otp_wrong, 3);
        assert_int_equal(st.otp_exhausted, 1);
        assert_int_equal(st.otp_verified, 0);
        assert_int_equal(st.otp_expired, 0);
    }
}

static void test_otp_timeout(void **state)
{
    char id[JW_UUID_LEN + 1];
    json_t *o;

    (void)state;
    create(id, 1);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    reply_ok(pending_call("generate_payment_link"));
    reply_otp(pending_call("process_payment"), "payment", false);
    o = latest_otp(id);
    /* payment: 3 min */
    assert_string_equal(json_string_value(json_object_get(o, "timeout_at")),
                        "2026-11-26T10:03:00.000000Z");
    json_decref(o);
    advance_ms(179000);
    assert_string_equal(STEP(id, "process_payment", 1), "waiting_otp");
    advance_ms(1000);
    o = latest_otp(id);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "expired");
    json_decref(o);
    assert_string_equal(STEP(id, "process_payment", 1), "retrying");
    /* Every attempt left to expire: the step and the job fail. */
    for (int i = 0; i < 2; i++) {
        advance_ms(120000);
        reply_otp(pending_call("process_payment"), "payment", false);
        advance_ms(180000);
    }
    assert_string_equal(STEP(id, "process_payment", 1), "failed");
    assert_string_equal(JOB(id, "status"), "failed");
    assert_non_null(strstr(JOB(id, "error_message"), "OTP not entered within 180 s"));
    assert_string_equal(JOB(id, "completed_transactions"), "0");
    {
        jw_engine_stats st;
        const jw_hist *pay = step_hist("process_payment", JW_STEP_OUTCOME_FAILED);

        jw_engine_get_stats(F.e, &st);
        assert_int_equal(st.otp_requested, 3);
        assert_int_equal(st.otp_expired, 3);
        assert_int_equal(st.otp_verified + st.otp_wrong + st.otp_exhausted, 0);
        /* 180 s + 2 x (120 s + 180 s): past the last bound (600 s), +Inf only. */
        assert_int_equal(pay->count, 1);
        assert_int_equal(pay->sum, UINT64_C(780000000));
        assert_int_equal(jw_hist_cumulative(pay, pay->spec->n - 1), 0);
        assert_int_equal(jw_hist_cumulative(pay, pay->spec->n), 1);
    }
}

static void test_retry_backoff(void **state)
{
    char id[JW_UUID_LEN + 1];
    int64_t t0;
    json_t *s, *st;

    (void)state;
    create(id, 1);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    t0 = F.now;
    reply_error(pending_call("availability_check"), true, "HTTP 503");
    s = snap(id);
    st = find_step(s, "availability_check", 0);
    assert_string_equal(json_string_value(json_object_get(st, "status")), "retrying");
    assert_string_equal(json_string_value(json_object_get(st, "error_message")), "HTTP 503");
    assert_string_equal(json_string_value(json_object_get(st, "next_retry_at")),
                        "2026-11-26T10:00:01.000000Z"); /* 1 s, jitter 0 */
    json_decref(s);
    advance_ms(999);
    assert_null(pending_call("availability_check"));
    advance_ms(1);
    assert_int_equal(pending_call("availability_check")->attempt, 2);
    reply_error(pending_call("availability_check"), true, "HTTP 503");
    advance_ms(1999); /* the second delay doubles */
    assert_null(pending_call("availability_check"));
    advance_ms(1);
    reply_error(pending_call("availability_check"), true, "timeout");
    advance_ms(4000);
    assert_int_equal(pending_call("availability_check")->attempt, 4);
    /* The key stays the same across attempts. */
    assert_string_equal(pending_call("availability_check")->idempotency_key,
                        F.calls[2]->idempotency_key);
    reply_error(pending_call("availability_check"), true, "timeout");
    assert_string_equal(JOB(id, "status"), "failed");
    assert_non_null(strstr(JOB(id, "error_message"), "gave up after 4 attempts"));
    assert_true(F.now - t0 == 7000 * 1000);
}

static void test_non_retryable_fails_at_once(void **state)
{
    char id[JW_UUID_LEN + 1];

    (void)state;
    create(id, 1);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_error(pending_call("availability_check"), false, "no vouchers for this amount");
    assert_string_equal(STEP(id, "availability_check", 0), "failed");
    assert_string_equal(JOB(id, "status"), "failed");
    assert_int_equal(calls_named("availability_check"), 1);
}

static void go_to_vouchers(const char *id)
{
    (void)id;
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    reply_ok(pending_call("generate_payment_link"));
    reply_ok(pending_call("process_payment"));
}

static void test_voucher_polling(void **state)
{
    char id[JW_UUID_LEN + 1];

    (void)state;
    create(id, 1);
    go_to_vouchers(id);
    reply_pending(pending_call("wait_for_vouchers"), 2000);
    assert_null(pending_call("wait_for_vouchers"));
    advance_ms(1999);
    assert_null(pending_call("wait_for_vouchers"));
    advance_ms(1);
    reply_pending(pending_call("wait_for_vouchers"), 2000);
    advance_ms(2000);
    reply_ok(pending_call("wait_for_vouchers"));
    assert_int_equal(calls_named("wait_for_vouchers"), 3);
    reply_ok(pending_call("redeem_amazon_vouchers"));
    assert_string_equal(JOB(id, "status"), "completed");
}

static void test_voucher_deadline(void **state)
{
    char id[JW_UUID_LEN + 1];

    (void)state;
    create(id, 1);
    go_to_vouchers(id);
    for (int i = 0; i < 9; i++) {
        reply_pending(pending_call("wait_for_vouchers"), 60000);
        advance_ms(60000);
    }
    /* Ten minutes in, another minute would pass the deadline. */
    reply_pending(pending_call("wait_for_vouchers"), 60000);
    assert_string_equal(STEP(id, "wait_for_vouchers", 1), "failed");
    assert_string_equal(JOB(id, "status"), "failed");
    assert_non_null(strstr(JOB(id, "error_message"), "deadline"));
}

static void test_partial_completion_and_retry(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], key[JW_IDEMPOTENCY_KEY_MAX];

    (void)state;
    create(id, 3);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    for (int k = 0; k < 4; k++)
        reply_ok(pending_call(NULL)); /* transaction 1 */
    reply_ok(pending_call("generate_payment_link"));
    snprintf(key, sizeof(key), "%s", pending_call("process_payment")->idempotency_key);
    reply_ok(pending_call("process_payment"));
    reply_ok(pending_call("wait_for_vouchers"));
    reply_error(pending_call("redeem_amazon_vouchers"), false, "voucher already used");
    assert_string_equal(JOB(id, "status"), "failed");
    assert_string_equal(JOB(id, "completed_transactions"), "1");
    assert_string_equal(JOB(id, "progress_percentage"), "46");
    assert_int_equal(jw_engine_cancel(F.e, id, NULL, NULL, err, sizeof(err)), JW_ECONFLICT);

    advance_ms(3600 * 1000); /* the operator retries an hour later */
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    assert_string_equal(JOB(id, "status"), "processing");
    assert_string_equal(JOB(id, "retry_count"), "1");
    assert_string_equal(JOB(id, "error_message"), "null");
    /* Resumes at the failed step of transaction 2: nothing finished repeats. */
    assert_string_equal(pending_call(NULL)->step_name, "redeem_amazon_vouchers");
    assert_int_equal(pending_call(NULL)->transaction_index, 2);
    advance_ms(20);
    reply_ok(pending_call(NULL));
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    /* The retried step's run starts anew: 20 ms, not the hour the job sat failed. */
    assert_int_equal(step_hist("redeem_amazon_vouchers", JW_STEP_OUTCOME_FAILED)->count, 1);
    assert_int_equal(step_hist("redeem_amazon_vouchers", JW_STEP_OUTCOME_COMPLETED)->count, 3);
    assert_int_equal(step_hist("redeem_amazon_vouchers", JW_STEP_OUTCOME_COMPLETED)->sum, 20000);
    assert_int_equal(calls_named("process_payment"), 3);
    assert_int_equal(calls_named("gyftr_login"), 1);
    assert_int_equal(calls_named("generate_payment_link"), 3);
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), JW_ECONFLICT);
    assert_gapless(id);
}

static void test_retry_after_unknown_payment_keeps_key(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], key[JW_IDEMPOTENCY_KEY_MAX];

    (void)state;
    create(id, 1);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    reply_ok(pending_call("generate_payment_link"));
    snprintf(key, sizeof(key), "%s", pending_call("process_payment")->idempotency_key);
    for (int i = 0; i < 3; i++) {
        reply_error(pending_call("process_payment"), true, "timeout after 30000 ms");
        advance_ms(120000);
    }
    assert_string_equal(JOB(id, "status"), "failed");
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    /* The payment may have gone through: ask again under the same key. */
    assert_string_equal(pending_call("process_payment")->idempotency_key, key);
}

static void test_cancel_waiting_otp_stops_at_once(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], otp_id[JW_UUID_LEN + 1];

    (void)state;
    create(id, 2);
    go_to_vouchers(id);
    reply_ok(pending_call("wait_for_vouchers"));
    reply_ok(pending_call("redeem_amazon_vouchers")); /* transaction 1 done */
    reply_ok(pending_call("generate_payment_link"));
    reply_otp(pending_call("process_payment"), "payment", false);
    latest_otp_id(id, otp_id);
    assert_int_equal(jw_engine_cancel(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    /* No payment was sent: nothing to wait for. */
    assert_string_equal(JOB(id, "status"), "cancelled");
    assert_string_equal(JOB(id, "cancel_requested"), "true");
    assert_string_equal(JOB(id, "completed_transactions"), "1");
    assert_string_equal(STEP(id, "process_payment", 2), "cancelled");
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "123456", USER, NULL, NULL, err, sizeof(err)),
        JW_ECONFLICT);
    assert_int_equal(unanswered(), 0);
    assert_int_equal(jw_engine_cancel(F.e, id, NULL, NULL, err, sizeof(err)), JW_ECONFLICT);
}

static void test_cancel_with_payment_in_flight(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];

    (void)state;
    create(id, 3);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    reply_ok(pending_call("generate_payment_link"));
    assert_non_null(pending_call("process_payment"));
    assert_int_equal(jw_engine_cancel(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    /* The payment is out: the job waits for its outcome. */
    assert_string_equal(JOB(id, "status"), "processing");
    assert_string_equal(JOB(id, "cancel_requested"), "true");
    /* Its outcome is unknown (a timeout): reconcile by the same key. */
    {
        char key[JW_IDEMPOTENCY_KEY_MAX];

        snprintf(key, sizeof(key), "%s", pending_call("process_payment")->idempotency_key);
        reply_error(pending_call("process_payment"), true, "timeout");
        assert_string_equal(JOB(id, "status"), "processing");
        advance_ms(10000);
        assert_string_equal(pending_call("process_payment")->idempotency_key, key);
    }
    reply_ok(pending_call("process_payment")); /* it had gone through */
    /* Money moved: the transaction is finished, then the job stops. */
    reply_ok(pending_call("wait_for_vouchers"));
    reply_ok(pending_call("redeem_amazon_vouchers"));
    assert_string_equal(JOB(id, "status"), "cancelled");
    assert_string_equal(JOB(id, "completed_transactions"), "1");
    assert_int_equal(unanswered(), 0);
    assert_int_equal(calls_named("generate_payment_link"), 1);
    assert_gapless(id);
}

/* The committed rows of a job as jw_db_load_active returns them. */
static json_t *as_loaded(const char *id)
{
    json_t *s = snap(id);
    json_t *item =
        json_pack("{s:O, s:O, s:O, s:O}", "job", json_object_get(s, "job"), "steps",
                  json_object_get(s, "steps"), "otp_requests", json_object_get(s, "otp_requests"),
                  "last_seq", json_object_get(s, "seq"));

    json_decref(s);
    return item;
}

static void restart_engine(json_t *loaded)
{
    jw_engine_ports p = fake_ports();
    char err[256];

    jw_engine_free(F.e);
    for (size_t i = 0; i < F.ncalls; i++)
        F.answered[i] = true; /* the old process's calls are gone */
    F.e = jw_engine_new(NULL, &p);
    assert_int_equal(jw_engine_recover(F.e, loaded, err, sizeof(err)),
                     (int)json_array_size(loaded));
    json_decref(loaded);
    commit_all();
}

static void test_recovery_resumes(void **state)
{
    char a[JW_UUID_LEN + 1], b[JW_UUID_LEN + 1], c[JW_UUID_LEN + 1], err[256];
    char key[JW_IDEMPOTENCY_KEY_MAX];
    json_t *loaded = json_array(), *o;
    int64_t seq_a;

    (void)state;
    /* a: a payment in flight; b: waiting for a login OTP; c: a retry timer. */
    create(a, 2);
    go_to_vouchers(a);
    reply_ok(pending_call("wait_for_vouchers"));
    reply_ok(pending_call("redeem_amazon_vouchers"));
    reply_ok(pending_call("generate_payment_link"));
    snprintf(key, sizeof(key), "%s", pending_call("process_payment")->idempotency_key);
    /* Other users: a's logins must not be reused by them. */
    create_for(b, 1, OTHER);
    reply_otp(job_call(b, "gyftr_login"), "gyftr_login", false);
    create_for(c, 1, "cccccccc-cccc-4ccc-8ccc-cccccccccccc");
    reply_error(job_call(c, "amazon_login"), true, "HTTP 502");
    {
        json_t *s = snap(a);

        seq_a = json_integer_value(json_object_get(s, "seq"));
        json_decref(s);
    }
    json_array_append_new(loaded, as_loaded(a));
    json_array_append_new(loaded, as_loaded(b));
    json_array_append_new(loaded, as_loaded(c));
    F.now += 60 * 1000000; /* a minute of downtime */
    restart_engine(loaded);

    /* a: the payment is asked again under the same key. */
    {
        jw_provider_call *pc = job_call(a, "process_payment");

        assert_non_null(pc);
        assert_string_equal(pc->idempotency_key, key);
        reply_ok(pc);
        /* Its run counts from the row's started_at: the downtime is part of it. */
        assert_int_equal(step_hist("process_payment", JW_STEP_OUTCOME_COMPLETED)->count, 1);
        assert_int_equal(step_hist("process_payment", JW_STEP_OUTCOME_COMPLETED)->sum, 60000000);
        reply_ok(job_call(a, "wait_for_vouchers"));
        reply_ok(job_call(a, "redeem_amazon_vouchers"));
        assert_string_equal(JOB(a, "status"), "completed");
        assert_int_equal(calls_named("process_payment"), 3); /* tx1, tx2, tx2 re-asked */
    }
    /* Seq continues where the old process stopped. */
    for (size_t i = 0; i < F.npub; i++)
        if (strcmp(F.pub[i]->job_id, a) == 0 && F.pub[i]->seq > seq_a) {
            assert_int_equal(F.pub[i]->seq, seq_a + 1);
            break;
        }
    /* b: the OTP wait was re-armed with what was left of it (4 min). */
    assert_string_equal(STEP(b, "gyftr_login", 0), "waiting_otp");
    advance_ms(239000);
    o = latest_otp(b);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "requested");
    json_decref(o);
    advance_ms(1000);
    o = latest_otp(b);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "expired");
    json_decref(o);
    /* c: the retry timer was re-armed (its time passed during the downtime,
     * so it fired at the first run of the timers): amazon_login runs again. */
    assert_int_equal(job_call(c, "amazon_login")->attempt, 2);
    (void)err;
}

static void test_recovery_asks_again_for_typed_otp(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], otp_id[JW_UUID_LEN + 1];
    json_t *o;

    (void)state;
    create(id, 1);
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    latest_otp_id(id, otp_id);
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "246810", USER, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    {
        json_t *loaded = json_array();

        json_array_append_new(loaded, as_loaded(id));
        restart_engine(loaded);
    }
    /* The typed value was never stored, so the person is asked again. */
    o = latest_otp(id);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "requested");
    assert_string_equal(json_string_value(json_object_get(o, "id")), otp_id);
    json_decref(o);
    assert_string_equal(STEP(id, "gyftr_login", 0), "waiting_otp");
    assert_null(pending_call("gyftr_login"));
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "246810", USER, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    assert_string_equal(pending_call("gyftr_login")->otp, "246810");
}

/*
 * The API retries a job that failed before a restart by adopting its rows
 * (jw_engine_recover) and retrying it: the failed job is not a running one
 * until the retry, so the live-jobs gauge counts it once.
 */
static void test_adopted_failed_job_counts_live_once(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];
    jw_engine_stats st;
    json_t *loaded = json_array();

    (void)state;
    create(id, 1);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_error(pending_call("availability_check"), false, "no vouchers today");
    assert_string_equal(JOB(id, "status"), "failed");
    json_array_append_new(loaded, as_loaded(id));
    restart_engine(loaded);
    jw_engine_get_stats(F.e, &st);
    assert_int_equal(st.jobs_live, 0);
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    jw_engine_get_stats(F.e, &st);
    assert_int_equal(st.jobs_live, 1);
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    jw_engine_get_stats(F.e, &st);
    assert_int_equal(st.jobs_live, 0);
    assert_gapless(id);
}

static void test_refused_batch_halts_job(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];

    (void)state;
    create(id, 1);
    F.refuse_next = true;
    reply_ok(pending_call("gyftr_login"));
    /* The refused batch's follow-ups never happen. */
    reply_ok(pending_call("amazon_login"));
    assert_null(pending_call("availability_check"));
    assert_int_equal(jw_engine_cancel(F.e, id, NULL, NULL, err, sizeof(err)), JW_ECONFLICT);
    assert_non_null(strstr(err, "halted"));
}

/*
 * A code received just before the job halts (the batch recording it refused,
 * as at shutdown): its submitter is answered, not left waiting for a verdict
 * that never comes; and the code never reaches the provider.
 */
static void test_halt_answers_waiting_otp(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], otp_id[JW_UUID_LEN + 1];
    struct otp_answer a = {0};
    size_t calls;

    (void)state;
    create(id, 1);
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    latest_otp_id(id, otp_id);
    calls = F.ncalls;
    F.refuse_next = true;
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "123456", USER, on_otp, &a, err, sizeof(err)), 0);
    assert_int_equal(a.calls, 0);
    commit_all();
    assert_int_equal(a.calls, 1);
    assert_false(a.ok);
    assert_string_equal(a.error, "unavailable");
    assert_int_equal(F.ncalls, calls);
    /* The same when the refusal comes inside submit (the store already stopped). */
    create(id, 1);
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    latest_otp_id(id, otp_id);
    memset(&a, 0, sizeof(a));
    F.store_inline = F.store_refusing = true;
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "123456", USER, on_otp, &a, err, sizeof(err)), 0);
    F.store_inline = F.store_refusing = false;
    assert_int_equal(a.calls, 1);
    assert_string_equal(a.error, "unavailable");
}

/*
 * The store's fence refused a batch: another node holds the job's lease.
 * The job stops here at once: nothing more of it is submitted, no provider
 * call of it starts (not even the one the refused batch was to start), and
 * it is counted.
 */
static void test_lost_lease_stops_job(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];
    jw_engine_stats st;
    size_t submitted, calls;

    (void)state;
    create(id, 1);
    /* A job created here drives under epoch 1. */
    assert_int_equal(F.last_epoch, 1);
    F.refuse_next = true;
    F.refuse_status = JW_ECONFLICT;
    calls = F.ncalls;
    reply_ok(pending_call("gyftr_login"));
    submitted = F.submitted;
    jw_engine_get_stats(F.e, &st);
    assert_int_equal(st.leases_lost, 1);
    /* The other login's reply, a timer, a command: nothing is submitted. */
    reply_ok(pending_call("amazon_login"));
    advance_ms(60 * 60 * 1000);
    assert_int_equal(jw_engine_cancel(F.e, id, NULL, NULL, err, sizeof(err)), JW_ECONFLICT);
    assert_int_equal(F.submitted, submitted);
    assert_int_equal(F.ncalls, calls);
    assert_null(pending_call("availability_check"));
    assert_false(jw_engine_job_driven(F.e, id));
    jw_engine_get_stats(F.e, &st);
    assert_int_equal(st.leases_lost, 1);
}

/* A recovered job drives under the epoch its claim took. */
static void test_recovered_job_uses_claimed_epoch(void **state)
{
    char id[JW_UUID_LEN + 1];
    json_t *loaded = json_array(), *item;

    (void)state;
    create(id, 1);
    item = as_loaded(id);
    json_object_set_new(item, "lease_epoch", json_integer(7));
    json_array_append_new(loaded, item);
    restart_engine(loaded);
    assert_true(jw_engine_job_driven(F.e, id));
    reply_ok(pending_call("gyftr_login"));
    assert_int_equal(F.last_epoch, 7);
}

/*
 * A store that answers inside submit: on_commit runs inside the engine's
 * flush. Its actions may change the job again (here: the provider refuses
 * both logins' calls at once, so each step goes to retrying), and those rows
 * must go into a new batch, not into the one being committed and freed.
 */
static void test_commit_inside_submit(void **state)
{
    char id[JW_UUID_LEN + 1];
    json_t *s;

    (void)state;
    F.store_inline = true;
    F.refuse_starts = 2;
    create(id, 1);
    assert_string_equal(STEP(id, "gyftr_login", 0), "retrying");
    assert_string_equal(STEP(id, "amazon_login", 0), "retrying");
    assert_int_equal(unanswered(), 0);
    /* Every row committed and was published, in order. */
    assert_gapless(id);
    assert_int_equal(F.pub[F.npub - 1]->seq, jw_engine_committed_seq(F.e, id));
    advance_ms(2000);
    assert_non_null(pending_call("gyftr_login"));
    assert_non_null(pending_call("amazon_login"));
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    assert_gapless(id);
    s = snap(id);
    assert_int_equal(json_integer_value(json_object_get(s, "seq")), F.pub[F.npub - 1]->seq);
    json_decref(s);
}

struct done_answer {
    int calls;
    int status;
};

static void on_done(void *arg, int status, const char *job_id)
{
    struct done_answer *a = arg;

    (void)job_id;
    a->calls++;
    a->status = status;
}

/* The server's port at shutdown: the store refuses inside submit. */
static void test_refusal_inside_submit(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];
    struct done_answer done = {0};
    size_t npub;
    int64_t seq;

    (void)state;
    create(id, 1);
    seq = jw_engine_committed_seq(F.e, id);
    npub = F.npub;
    F.store_inline = F.store_refusing = true;
    assert_int_equal(jw_engine_cancel(F.e, id, on_done, &done, err, sizeof(err)), 0);
    /* Told at once, with the store's error; nothing of the batch was published. */
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.status, JW_ECLOSED);
    assert_int_equal(F.npub, npub);
    assert_int_equal(jw_engine_committed_seq(F.e, id), seq);
    assert_string_equal(JOB(id, "status"), "validating");
    /* Halted: a late reply changes nothing, no command is taken. */
    reply_ok(pending_call("gyftr_login"));
    assert_int_equal(F.npub, npub);
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), JW_ECONFLICT);
    assert_non_null(strstr(err, "halted"));
}

static const uint8_t KEY[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void with_session_key(void)
{
    jw_engine_ports p = fake_ports();
    jw_engine_config cfg = {.session_key = KEY};

    jw_engine_free(F.e);
    F.e = jw_engine_new(&cfg, &p);
}

/* Every auth_sessions row written so far, as JSON rows (newest per id last). */
static json_t *session_rows(void)
{
    json_t *rows = json_array();
    char *end;

    for (char *p = F.all_rows; (end = strchr(p, '\n')) != NULL; p = end + 1) {
        json_t *r = json_loadb(p, (size_t)(end - p), 0, NULL);

        if (r && json_object_get(r, "session_type"))
            json_array_append_new(rows, r);
        else
            json_decref(r);
    }
    return rows;
}

/* A row's columns are its table's in jw_schema.h, all and in order, each of its type. */
static void assert_row_fits(jw_table t, const char *text, size_t len)
{
    const jw_schema_table *st = &jw_schema_tables[t];
    json_t *r = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL), *v;
    const char *key;
    size_t i = 0;

    assert_non_null(r);
    assert_int_equal(json_object_size(r), st->ncolumns);
    json_object_foreach(r, key, v)
    {
        assert_string_equal(key, st->columns[i].name);
        if (!jw_schema_fits(st->columns[i].type, v))
            fail_msg("%s.%s does not fit its type: %.*s", st->name, key, (int)len, text);
        i++;
    }
    json_decref(r);
}

/* Every row the engine writes, with codes, sessions, an error and a retry. */
static void test_rows_follow_schema(void **state)
{
    char id[JW_UUID_LEN + 1], otp_id[JW_UUID_LEN + 1], err[256];
    struct otp_answer ans = {0};
    json_t *rows, *row;
    size_t i, seen[JW_TABLE__COUNT] = {0};

    (void)state;
    with_session_key();
    create(id, 2);
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    latest_otp_id(id, otp_id);
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "123456", NULL, on_otp, &ans, err, sizeof(err)), 0);
    commit_all();
    reply_ok(pending_call("gyftr_login"));
    reply_error(pending_call("amazon_login"), true, "upstream busy");
    advance_ms(2000);
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    reply_ok(pending_call("generate_payment_link"));
    reply_otp(pending_call("process_payment"), "payment", false);
    latest_otp_id(id, otp_id);
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "654321", NULL, on_otp, &ans, err, sizeof(err)), 0);
    commit_all();
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    assert_int_equal(ans.calls, 2);
    for (i = 0; i < F.npub; i++) {
        assert_row_fits(F.pub[i]->table, F.pub[i]->row, F.pub[i]->row_len);
        seen[F.pub[i]->table]++;
    }
    rows = session_rows();
    json_array_foreach(rows, i, row)
    {
        char *text = json_dumps(row, JSON_COMPACT);

        assert_row_fits(JW_TABLE_AUTH_SESSIONS, text, strlen(text));
        seen[JW_TABLE_AUTH_SESSIONS]++;
        free(text);
    }
    json_decref(rows);
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        assert_true(seen[t] > 0);
}

static void test_login_reused_until_expiry(void **state)
{
    char a[JW_UUID_LEN + 1], b[JW_UUID_LEN + 1], c[JW_UUID_LEN + 1], d[JW_UUID_LEN + 1];
    json_t *rows, *s, *st;

    (void)state;
    with_session_key();
    create(a, 1);
    reply_ok(pending_call("gyftr_login")); /* session valid for an hour */
    reply_ok(pending_call("amazon_login"));
    run_ok();
    assert_string_equal(JOB(a, "status"), "completed");
    /* The tokens went to auth_sessions sealed, never in clear. */
    rows = session_rows();
    assert_true(json_array_size(rows) >= 2);
    assert_null(strstr(F.all_rows, "tok-secret-xyz"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "user_id")),
                        USER);
    assert_non_null(strstr(
        json_string_value(json_object_get(json_array_get(rows, 0), "auth_token_enc")), "\\x"));
    json_decref(rows);

    /* The same user's next job skips both logins: no call, no OTP. */
    create(b, 1);
    assert_null(job_call(b, "gyftr_login"));
    assert_null(job_call(b, "amazon_login"));
    assert_non_null(job_call(b, "availability_check"));
    assert_non_null(json_object_get(job_call(b, "availability_check")->session, "gyftr"));
    s = snap(b);
    st = find_step(s, "gyftr_login", 0);
    assert_string_equal(json_string_value(json_object_get(st, "status")), "completed");
    assert_true(json_is_true(json_object_get(json_object_get(st, "step_data"), "reused_session")));
    json_decref(s);
    assert_string_equal(JOB(b, "progress_percentage"), "13");
    run_ok();
    assert_string_equal(JOB(b, "status"), "completed");
    assert_gapless(b);

    /* Another user logs in for themselves. */
    create_for(c, 1, OTHER);
    assert_non_null(job_call(c, "gyftr_login"));
    run_ok();

    /* Past expiry (minus the margin) the login runs again. */
    F.now += INT64_C(3600) * 1000000 - 30 * 1000000;
    create(d, 1);
    assert_non_null(job_call(d, "gyftr_login"));
    assert_non_null(job_call(d, "amazon_login"));
}

static void test_sessions_survive_restart(void **state)
{
    char a[JW_UUID_LEN + 1], b[JW_UUID_LEN + 1], other[JW_UUID_LEN + 1];
    json_t *rows, *last = json_object();
    size_t i;
    json_t *r;

    (void)state;
    with_session_key();
    create(a, 1);
    run_ok();
    /* What auth_sessions holds: the newest row per id. */
    rows = session_rows();
    json_array_foreach(rows, i, r)
        json_object_set(last, json_string_value(json_object_get(r, "id")), r);
    json_decref(rows);
    rows = json_array();
    {
        const char *k;
        json_t *v;

        json_object_foreach(last, k, v) json_array_append(rows, v);
    }
    json_decref(last);
    assert_int_equal(json_array_size(rows), 2);

    restart_engine(json_array());
    /* A new engine without the key cannot open them. */
    assert_int_equal(jw_engine_load_sessions(F.e, rows), 0);
    with_session_key();
    /* A row moved to another user does not open (the AAD binds it). */
    {
        json_t *moved = json_deep_copy(rows);

        json_object_set_new(json_array_get(moved, 0), "user_id", json_string(OTHER));
        json_object_set_new(json_array_get(moved, 1), "user_id", json_string(OTHER));
        assert_int_equal(jw_engine_load_sessions(F.e, moved), 0);
        json_decref(moved);
        create_for(other, 1, OTHER);
        assert_non_null(job_call(other, "gyftr_login"));
    }
    assert_int_equal(jw_engine_load_sessions(F.e, rows), 2);
    json_decref(rows);
    create(b, 1);
    assert_null(job_call(b, "gyftr_login"));
    assert_null(job_call(b, "amazon_login"));
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(job_call(b, "availability_check")->session, "gyftr"), "token")),
        "tok-secret-xyz");
}

static void test_histograms_time_steps_and_calls(void **state)
{
    const jw_engine_hists *h = jw_engine_get_hists(F.e);
    jw_engine_stats st;
    char id[JW_UUID_LEN + 1];

    (void)state;
    /* One histogram row per step of the workflow, named after it. */
    assert_int_equal(h->nsteps, 7);
    assert_string_equal(h->step[0], "gyftr_login");
    assert_string_equal(h->step[6], "redeem_amazon_vouchers");
    create(id, 1);
    advance_ms(1200);
    reply_ok(pending_call("gyftr_login"));
    assert_one_in(step_hist("gyftr_login", JW_STEP_OUTCOME_COMPLETED), 1200000, 2500000, 1000000);
    assert_one_in(call_hist("gyftr_login", JW_CALL_OK), 1200000, 2500000, 1000000);
    advance_ms(30);
    reply_ok(pending_call("amazon_login"));
    assert_one_in(step_hist("amazon_login", JW_STEP_OUTCOME_COMPLETED), 1230000, 2500000, 1000000);

    /* availability_check: a 503 after 40 ms, a timeout after 7 ms, then ok after 3 ms. */
    advance_ms(40);
    reply_error(pending_call("availability_check"), true, "HTTP 503");
    assert_one_in(call_hist("availability_check", JW_CALL_RETRYABLE), 40000, 50000, 25000);
    assert_int_equal(step_hist("availability_check", JW_STEP_OUTCOME_COMPLETED)->count, 0);
    advance_ms(1000); /* the first retry delay */
    advance_ms(7);
    reply_timeout(pending_call("availability_check"));
    assert_one_in(call_hist("availability_check", JW_CALL_TIMEOUT), 7000, 10000, 5000);
    advance_ms(2000);
    advance_ms(3);
    reply_ok(pending_call("availability_check"));
    assert_one_in(call_hist("availability_check", JW_CALL_OK), 3000, 5000, 2500);
    /* The step's run spans its attempts and the waits between them. */
    assert_one_in(step_hist("availability_check", JW_STEP_OUTCOME_COMPLETED), 3050000, 5000000,
                  2500000);

    /* A fatal error fails the step and the job. */
    advance_ms(15);
    reply_error(pending_call("generate_payment_link"), false, "card declined");
    assert_one_in(call_hist("generate_payment_link", JW_CALL_FATAL), 15000, 25000, 10000);
    assert_one_in(step_hist("generate_payment_link", JW_STEP_OUTCOME_FAILED), 15000, 25000, 10000);
    assert_string_equal(JOB(id, "status"), "failed");
    /* Steps that never started (process_payment, ...) are not observed. */
    assert_int_equal(all_steps_observed(), 4);
    jw_engine_get_stats(F.e, &st);
    assert_int_equal(all_calls_observed(), st.provider_calls);
    assert_int_equal(st.provider_calls, 6);
}

/* ---- finished jobs leave memory ---------------------------------------------- */

/* Replaces the engine with one whose finished jobs leave memory ms after they end. */
static void use_finished_job_ttl(int64_t ms)
{
    jw_engine_ports p = fake_ports();
    jw_engine_config cfg = {.otp_timeout_login_ms = 300000,
                            .otp_timeout_payment_ms = 180000,
                            .finished_job_ttl_ms = ms};

    jw_engine_free(F.e);
    F.e = jw_engine_new(&cfg, &p);
}

static jw_engine_stats stats(void)
{
    jw_engine_stats st;

    jw_engine_get_stats(F.e, &st);
    return st;
}

static void assert_in_memory(const char *id)
{
    json_t *s = jw_engine_snapshot(F.e, id);

    assert_non_null(s);
    json_decref(s);
    assert_true(jw_engine_has_job(F.e, id));
    assert_non_null(jw_engine_job_owner(F.e, id));
}

static void assert_gone(const char *id)
{
    assert_null(jw_engine_snapshot(F.e, id));
    assert_false(jw_engine_has_job(F.e, id));
    assert_null(jw_engine_job_owner(F.e, id));
    assert_int_equal(jw_engine_committed_seq(F.e, id), -1);
}

static void test_finished_job_leaves_memory_after_ttl(void **state)
{
    char id[JW_UUID_LEN + 1], other[JW_UUID_LEN + 1], err[256], otp_id[JW_UUID_LEN + 1];

    (void)state;
    use_finished_job_ttl(60000);
    create(id, 1);
    /* One login asks for a code, so the job owns an OTP request. */
    reply_ok(pending_call("amazon_login"));
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    latest_otp_id(id, otp_id);
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "123456", USER, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    create(other, 1); /* a running job: never evicted */
    assert_int_equal(stats().jobs_in_memory, 2);

    advance_ms(59999);
    assert_in_memory(id);
    assert_string_equal(jw_engine_otp_job(F.e, otp_id), id);
    advance_ms(1);
    assert_gone(id);
    assert_null(jw_engine_otp_job(F.e, otp_id));
    assert_int_equal(
        jw_engine_submit_otp(F.e, otp_id, "123456", USER, NULL, NULL, err, sizeof(err)),
        JW_ENOTFOUND);
    assert_int_equal(jw_engine_cancel(F.e, id, NULL, NULL, err, sizeof(err)), JW_ENOTFOUND);
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), JW_ENOTFOUND);
    assert_int_equal(stats().jobs_in_memory, 1);
    assert_int_equal(stats().jobs_evicted, 1);
    assert_int_equal(stats().jobs_finished, 1);
    assert_int_equal(stats().jobs_live, 1);
    assert_in_memory(other);
    /* Logins reused; its availability_check call is out. */
    assert_string_equal(JOB(other, "status"), "validating");
    run_ok();
    assert_string_equal(JOB(other, "status"), "completed");
    advance_ms(60000);
    assert_gone(other);
    assert_int_equal(stats().jobs_in_memory, 0);
    assert_int_equal(stats().jobs_live, 0);
    assert_gapless(id);
}

/* The last batch of a finished job has not committed: it stays until it has. */
static void test_eviction_waits_for_the_last_commit(void **state)
{
    char id[JW_UUID_LEN + 1];
    jw_provider_call *c;
    size_t published;

    (void)state;
    use_finished_job_ttl(1000);
    create(id, 1);
    for (int k = 0; k < 6; k++)
        reply_ok(pending_call(NULL));
    c = pending_call("redeem_amazon_vouchers");
    assert_non_null(c);
    mark_answered(c);
    jw_engine_on_reply(F.e, jw_provider_reply_new(c->id, JW_PROVIDER_OK));
    assert_int_equal(F.nbatches, 1); /* completed, not yet durable */
    published = F.npub;

    F.now += 10 * 1000000; /* PostgreSQL away for 10 s */
    jw_timers_run(F.timers, F.now);
    assert_in_memory(id);
    assert_int_equal(F.npub, published);
    commit_all();
    assert_string_equal(JOB(id, "status"), "completed");
    advance_ms(1000);
    assert_gone(id);
    assert_int_equal(stats().jobs_evicted, 1);
    assert_gapless(id);
}

/* A job waiting for a person far longer than the TTL is running: it stays. */
static void test_running_job_stays(void **state)
{
    char id[JW_UUID_LEN + 1];

    (void)state;
    use_finished_job_ttl(1000);
    create(id, 1);
    reply_ok(pending_call("amazon_login"));
    reply_otp(pending_call("gyftr_login"), "gyftr_login", false);
    advance_ms(240000); /* 4 of the OTP's 5 minutes */
    assert_in_memory(id);
    assert_string_equal(STEP(id, "gyftr_login", 0), "waiting_otp");
    assert_int_equal(stats().jobs_evicted, 0);
}

/* Retried before the TTL ran out: running again, it stays; finished, it goes. */
static void test_retry_keeps_job_in_memory(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];

    (void)state;
    use_finished_job_ttl(60000);
    create(id, 1);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_error(pending_call("availability_check"), false, "no vouchers today");
    assert_string_equal(JOB(id, "status"), "failed");
    advance_ms(30000);
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    advance_ms(120000); /* its availability_check call is out, unanswered */
    assert_in_memory(id);
    assert_string_equal(JOB(id, "status"), "validating");
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    advance_ms(60000);
    assert_gone(id);
    assert_int_equal(stats().jobs_evicted, 1);
    assert_int_equal(stats().jobs_live, 0);
}

/*
 * A failed job that left memory is retried the way the API retries one that
 * failed before a restart: its committed rows are adopted (jw_engine_recover),
 * then retried. It resumes where it failed, its seq goes on, the live-jobs
 * gauge stays right, and it leaves memory again once finished.
 */
static void test_evicted_failed_job_retried_by_adoption(void **state)
{
    char id[JW_UUID_LEN + 1], done[JW_UUID_LEN + 1], err[256];
    json_t *loaded = json_array(), *done_rows;

    (void)state;
    use_finished_job_ttl(60000);
    create(id, 2);
    for (int k = 0; k < 7; k++) /* validation and transaction 1 */
        reply_ok(pending_call(NULL));
    reply_ok(pending_call("generate_payment_link"));
    reply_error(pending_call("process_payment"), false, "card declined");
    assert_string_equal(JOB(id, "status"), "failed");
    assert_string_equal(JOB(id, "completed_transactions"), "1");
    create(done, 1);
    run_ok();
    /* What PostgreSQL holds: exactly the committed state. */
    json_array_append_new(loaded, as_loaded(id));
    done_rows = json_pack("[o]", as_loaded(done));
    advance_ms(60000);
    assert_gone(id);
    assert_gone(done);
    assert_int_equal(stats().jobs_live, 0);

    assert_int_equal(jw_engine_recover(F.e, loaded, err, sizeof(err)), 1);
    json_decref(loaded);
    commit_all();
    assert_int_equal(stats().jobs_live, 0); /* adopted, still failed */
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    assert_int_equal(stats().jobs_live, 1);
    assert_string_equal(pending_call(NULL)->step_name, "process_payment");
    assert_int_equal(pending_call(NULL)->transaction_index, 2);
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    assert_string_equal(JOB(id, "retry_count"), "1");
    assert_int_equal(calls_named("generate_payment_link"), 3); /* tx1, tx2, done's tx1 */
    assert_int_equal(stats().jobs_live, 0);
    assert_gapless(id); /* seq 1..N across the eviction and the adoption */
    advance_ms(60000);
    assert_gone(id);

    /* Adopted and not retried (a retry refused): it leaves again. */
    assert_int_equal(jw_engine_recover(F.e, done_rows, err, sizeof(err)), 1);
    json_decref(done_rows);
    assert_in_memory(done);
    assert_int_equal(jw_engine_retry(F.e, done, NULL, NULL, err, sizeof(err)), JW_ECONFLICT);
    advance_ms(60000);
    assert_gone(done);
    assert_int_equal(stats().jobs_evicted, 4);
    assert_int_equal(stats().jobs_live, 0);
    assert_int_equal(stats().jobs_in_memory, 0);
}

/* A step's outcome_unknown as its committed row says. */
static bool step_unknown(const char *id, const char *name, int tx)
{
    json_t *s = snap(id);
    json_t *st = find_step(s, name, tx);
    bool v;

    assert_non_null(st);
    assert_true(json_is_boolean(json_object_get(st, "outcome_unknown")));
    v = json_is_true(json_object_get(st, "outcome_unknown"));
    json_decref(s);
    return v;
}

/* Runs a one-transaction job up to its payment and lets the payment fail. */
static void fail_payment(const char *id, bool timeouts, char key[JW_IDEMPOTENCY_KEY_MAX])
{
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    reply_ok(pending_call("generate_payment_link"));
    snprintf(key, JW_IDEMPOTENCY_KEY_MAX, "%s", pending_call("process_payment")->idempotency_key);
    if (timeouts) {
        for (int i = 0; i < 3; i++) {
            reply_timeout(pending_call("process_payment"));
            advance_ms(120000);
        }
    } else {
        reply_error(pending_call("process_payment"), false, "card declined");
    }
    assert_string_equal(JOB(id, "status"), "failed");
}

/*
 * The fact that a payment's outcome is unknown is on its row, so a retry after
 * a restart (or after the job left memory: the same adoption) asks under the
 * same key; a payment the provider refused gets a fresh one.
 */
static void test_unknown_payment_keeps_key_across_restart(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], key[JW_IDEMPOTENCY_KEY_MAX];

    (void)state;
    create(id, 1);
    fail_payment(id, true, key);
    assert_true(step_unknown(id, "process_payment", 1));
    restart_engine(json_pack("[o]", as_loaded(id)));
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    assert_string_equal(pending_call("process_payment")->idempotency_key, key);
    reply_ok(pending_call("process_payment"));
    assert_false(step_unknown(id, "process_payment", 1));
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
    assert_gapless(id);
}

static void test_refused_payment_new_key_across_restart(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], key[JW_IDEMPOTENCY_KEY_MAX];

    (void)state;
    create(id, 1);
    fail_payment(id, false, key);
    assert_false(step_unknown(id, "process_payment", 1));
    restart_engine(json_pack("[o]", as_loaded(id)));
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    assert_string_not_equal(pending_call("process_payment")->idempotency_key, key);
}

/* A payment still pending at its deadline may yet complete: same key on a retry. */
static void test_pending_payment_at_deadline_stays_unknown(void **state)
{
    char id[JW_UUID_LEN + 1], err[256], key[JW_IDEMPOTENCY_KEY_MAX];

    (void)state;
    create(id, 1);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    reply_ok(pending_call("availability_check"));
    reply_ok(pending_call("generate_payment_link"));
    snprintf(key, sizeof(key), "%s", pending_call("process_payment")->idempotency_key);
    for (int i = 0; i < 100 && strcmp(JOB(id, "status"), "failed") != 0; i++) {
        reply_pending(pending_call("process_payment"), 600000);
        advance_ms(600000);
    }
    assert_string_equal(JOB(id, "status"), "failed");
    assert_true(step_unknown(id, "process_payment", 1));
    restart_engine(json_pack("[o]", as_loaded(id)));
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), 0);
    commit_all();
    assert_string_equal(pending_call("process_payment")->idempotency_key, key);
}

/*
 * Metadata is bounded by the size it is stored at: 16,300 times 0.1 is 65 KB
 * as sent and over 300 KB as jansson writes it back. Refused, nothing queued.
 */
static void test_metadata_bounded_as_encoded(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];
    json_t *meta = json_object(), *arr = json_array();

    (void)state;
    for (int i = 0; i < 16300; i++)
        json_array_append_new(arr, json_real(0.1));
    json_object_set_new(meta, "a", arr);
    assert_int_equal(jw_engine_create_job(F.e, USER, 1, 1, meta, NULL, NULL, id, err, sizeof(err)),
                     JW_ETOOBIG);
    assert_non_null(strstr(err, "metadata may take at most 16384 bytes"));
    assert_int_equal(F.nbatches, 0);
    assert_int_equal(stats().jobs_in_memory, 0);
    assert_int_equal(stats().jobs_live, 0);
    json_array_clear(arr);
    for (int i = 0; i < 100; i++)
        json_array_append_new(arr, json_real(0.1));
    assert_int_equal(jw_engine_create_job(F.e, USER, 1, 1, meta, NULL, NULL, id, err, sizeof(err)),
                     0);
    json_decref(meta);
    commit_all();
    run_ok();
    assert_string_equal(JOB(id, "status"), "completed");
}

/*
 * A row that cannot become a delta (here a fake provider's data past the
 * delta limit, which the real reply parser refuses) halts its job; the
 * engine and its other jobs go on.
 */
static void test_unbuildable_row_halts_job_not_process(void **state)
{
    char id[JW_UUID_LEN + 1], other[JW_UUID_LEN + 1], err[256];
    jw_provider_call *c;
    jw_provider_reply *r;
    char *big = malloc(300 * 1024);

    (void)state;
    memset(big, 'x', 300 * 1024 - 1);
    big[300 * 1024 - 1] = '\0';
    create(id, 1);
    reply_ok(pending_call("gyftr_login"));
    reply_ok(pending_call("amazon_login"));
    c = pending_call("availability_check");
    r = jw_provider_reply_new(c->id, JW_PROVIDER_OK);
    json_object_set_new(r->data, "blob", json_string(big));
    free(big);
    reply(c, r);
    assert_int_equal(stats().rows_refused, 1);
    assert_int_equal(unanswered(), 0); /* nothing more of it is driven */
    assert_int_equal(jw_engine_retry(F.e, id, NULL, NULL, err, sizeof(err)), JW_ECONFLICT);
    create(other, 1);
    run_ok();
    assert_string_equal(JOB(other, "status"), "completed");
    assert_gapless(id);
}

static void test_create_validates(void **state)
{
    char id[JW_UUID_LEN + 1], err[256];
    json_t *arr = json_array();

    (void)state;
    assert_int_equal(
        jw_engine_create_job(F.e, "nope", 1500, 4, NULL, NULL, NULL, id, err, sizeof(err)),
        JW_EINVAL);
    assert_string_equal(err, "user_id must be a UUID");
    assert_int_equal(jw_engine_create_job(F.e, USER, 0, 4, NULL, NULL, NULL, id, err, sizeof(err)),
                     JW_EINVAL);
    assert_string_equal(err, "transaction_amount must be 1..1000000 (got 0)");
    assert_int_equal(
        jw_engine_create_job(F.e, USER, 1500, 51, NULL, NULL, NULL, id, err, sizeof(err)),
        JW_EINVAL);
    assert_string_equal(err, "transaction_count must be 1..50 (got 51)");
    assert_int_equal(
        jw_engine_create_job(F.e, USER, 1500, 0, NULL, NULL, NULL, id, err, sizeof(err)),
        JW_EINVAL);
    assert_int_equal(
        jw_engine_create_job(F.e, USER, 1500, 2, arr, NULL, NULL, id, err, sizeof(err)), JW_EINVAL);
    json_decref(arr);
    assert_int_equal(F.nbatches, 0);
    assert_int_equal(
        jw_engine_cancel(F.e, "dddddddd-dddd-4ddd-8ddd-dddddddddddd", NULL, NULL, err, sizeof(err)),
        JW_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_happy_path_gated_by_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_progress_follows_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_failure_cancels_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_otp_wrong_then_right, setup, teardown),
        cmocka_unit_test_setup_teardown(test_otp_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_otp_attempt_limit_asks_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_otp_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_retryable_fails_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_voucher_polling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_voucher_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_completion_and_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_unknown_payment_keeps_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_waiting_otp_stops_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_with_payment_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_asks_again_for_typed_otp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopted_failed_job_counts_live_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_batch_halts_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_halt_answers_waiting_otp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_lease_stops_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovered_job_uses_claimed_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_inside_submit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_follow_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusal_inside_submit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_reused_until_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions_survive_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_validates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histograms_time_steps_and_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finished_job_leaves_memory_after_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction_waits_for_the_last_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_running_job_stays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_keeps_job_in_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_payment_keeps_key_across_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refused_payment_new_key_across_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pending_payment_at_deadline_stays_unknown, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_metadata_bounded_as_encoded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unbuildable_row_halts_job_not_process, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_evicted_failed_job_retried_by_adoption, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
