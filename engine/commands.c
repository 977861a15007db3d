/*
 * commands.c - the engine's life cycle (jw_engine_new/free), the commands its
 * callers give it (create, cancel, retry a job; submit an OTP), and the
 * eviction of finished jobs from memory.
 *
 * Loop thread only. Each command changes state through the state machines of
 * engine.c and flushes before it returns; its answer (done) comes once the
 * change committed.
 */
#include "engine_internal.h"

#include "jw_error.h"
#include "jw_log.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- histograms ------------------------------------------------------------ */

const char *const jw_step_outcome_names[JW_STEP_OUTCOME__N] = {
    [JW_STEP_OUTCOME_COMPLETED] = "completed",
    [JW_STEP_OUTCOME_FAILED] = "failed",
    [JW_STEP_OUTCOME_CANCELLED] = "cancelled",
};

const char *const jw_call_result_names[JW_CALL_RESULT__N] = {
    [JW_CALL_OK] = "ok",           [JW_CALL_OTP_REQUIRED] = "otp_required",
    [JW_CALL_PENDING] = "pending", [JW_CALL_RETRYABLE] = "retryable",
    [JW_CALL_FATAL] = "fatal",     [JW_CALL_TIMEOUT] = "timeout",
};

/* Microseconds. A step waits on people (OTPs, minutes) and banks: 1 ms .. 10 min. */
static const jw_hist_spec step_duration_spec = {
    .n = 18,
    .le = {1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
           10000000, 25000000, 60000000, 120000000, 300000000, 600000000},
    .decimals = 6,
};

/* Microseconds. One HTTP round trip to a provider, up to its timeout: 1 ms .. 60 s. */
static const jw_hist_spec call_duration_spec = {
    .n = 15,
    .le = {1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
           10000000, 30000000, 60000000},
    .decimals = 6,
};

/* ---- eviction of finished jobs --------------------------------------------------- */

static void free_job(job *j);

static void evict_fired(jw_timer *t, void *arg)
{
    job *j = arg;
    jw_engine *e = j->e;

    (void)t;
    if (!job_terminal(j) || j->halted)
        return; /* retried (cannot happen: the retry disarmed it), or kept for the restart */
    if (!engine__forgettable(j)) {
        /* Its last batch has not committed yet (PostgreSQL away that long): later. */
        engine__arm_eviction(j);
        return;
    }
    e->stats.jobs_evicted++;
    if (e->p.left)
        e->p.left(e->p.ctx, j->id);
    jw_log_debug("engine: finished job left memory job=%s status=%s seq=%" PRId64, j->id,
                 engine__job_names[j->status], j->committed_seq);
    engine__forget(j);
}

bool engine__forgettable(const job *j)
{
    return !j->inflight && !j->open && !j->acts && !j->queued;
}

void engine__forget(job *j)
{
    jw_engine *e = j->e;

    /* Nothing may point at the job once it is gone: its calls, its OTP requests. */
    for (size_t i = 0; i < j->nsteps; i++)
        engine__drop_call(j->steps[i]);
    for (size_t i = 0; i < j->notps; i++)
        jw_map_del(&e->otps, j->otps[i]->id);
    jw_map_del(&e->jobs, j->id);
    free_job(j);
}

/*
 * A finished job is read from PostgreSQL once it has been finished for
 * finished_job_ttl_ms: it stops costing memory (about 30 KB for a job of 4
 * transactions) however long the server runs.
 */
void engine__arm_eviction(job *j)
{
    jw_engine *e = j->e;

    if (e->cfg.finished_job_ttl_ms > 0)
        jw_timers_arm(e->p.timers, &j->evict, now_us(e) + e->cfg.finished_job_ttl_ms * 1000,
                      evict_fired, j);
}

/* ---- commands ------------------------------------------------------------------ */

job *engine__new_job(jw_engine *e, const char *id, const char *user)
{
    job *j = jw_xcalloc(1, sizeof(*j));

    j->e = e;
    j->lease_epoch = 1; /* created here; recovery sets the epoch it claimed */
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->user, sizeof(j->user), "%s", user);
    j->sessions = json_object();
    j->metadata = json_object();
    jw_map_put(&e->jobs, j->id, j);
    return j;
}

int jw_engine_create_job(jw_engine *e, const char *user_id, int64_t amount, int count,
                         const json_t *metadata, jw_engine_done_fn done, void *arg,
                         char job_id[JW_UUID_LEN + 1], char *err, size_t errlen)
{
    char id[JW_UUID_LEN + 1];
    job *j;

    if (!jw_uuid_valid(user_id)) {
        snprintf(err, errlen, "user_id must be a UUID");
        return JW_EINVAL;
    }
    if (amount < 1 || amount > e->cfg.max_amount) {
        snprintf(err, errlen, "transaction_amount must be 1..%d (got %" PRId64 ")",
                 e->cfg.max_amount, amount);
        return JW_EINVAL;
    }
    if (count < 1 || count > e->cfg.max_transactions) {
        snprintf(err, errlen, "transaction_count must be 1..%d (got %d)", e->cfg.max_transactions,
                 count);
        return JW_EINVAL;
    }
    if (metadata && !json_is_object(metadata)) {
        snprintf(err, errlen, "metadata must be an object");
        return JW_EINVAL;
    }
    if (metadata && json_dumpb(metadata, NULL, 0, JSON_COMPACT) > JW_ENGINE_METADATA_MAX) {
        snprintf(err, errlen, "metadata may take at most %d bytes as compact JSON (got %zu)",
                 JW_ENGINE_METADATA_MAX, json_dumpb(metadata, NULL, 0, JSON_COMPACT));
        return JW_ETOOBIG;
    }
    jw_uuid_new(id);
    j = engine__new_job(e, id, user_id);
    /* PostgreSQL prints uuids in lower case; so do we, so owners compare. */
    for (char *c = j->user; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'F' ? *c + ('a' - 'A') : *c);
    j->status = JOB_INITIATED;
    j->amount = amount;
    j->count = count;
    j->created_at = j->updated_at = now_us(e);
    if (metadata) {
        json_decref(j->metadata);
        j->metadata = json_deep_copy(metadata);
    }
    engine__emit(j, JW_TABLE_JOB_RUNS, j->id, JW_OP_INSERT, engine__job_row(j));
    if (j->halted) { /* its first row could not be built: nothing was queued */
        snprintf(err, errlen, "the job's row could not be stored");
        jw_map_del(&e->jobs, j->id);
        free_job(j);
        return JW_ETOOBIG;
    }
    engine__live_add(j, +1);
    engine__queue_done(j, done, arg);
    engine__advance(j);
    engine__flush(e);
    snprintf(job_id, JW_UUID_LEN + 1, "%s", id);
    jw_log_info("engine: job created job=%s user=%s amount=%" PRId64 " transactions=%d", id,
                user_id, amount, count);
    return 0;
}

static job *find_job(jw_engine *e, const char *id, char *err, size_t errlen)
{
    job *j = id ? jw_map_get(&e->jobs, id) : NULL;

    if (!j || !j->committed_seq)
        snprintf(err, errlen, "no job %s", id ? id : "(null)");
    return j && j->committed_seq ? j : NULL;
}

int jw_engine_cancel(jw_engine *e, const char *job_id, jw_engine_done_fn done, void *arg, char *err,
                     size_t errlen)
{
    job *j = find_job(e, job_id, err, errlen);

    if (!j)
        return JW_ENOTFOUND;
    if (job_terminal(j) || j->halted) {
        snprintf(err, errlen, "job %s is %s; only a running job can be cancelled", j->id,
                 j->halted ? "halted" : engine__job_names[j->status]);
        return JW_ECONFLICT;
    }
    if (j->cancel_requested) {
        snprintf(err, errlen, "job %s is already being cancelled", j->id);
        return JW_ECONFLICT;
    }
    j->cancel_requested = true;
    engine__touch_job(j);
    engine__queue_done(j, done, arg);
    engine__advance(j);
    engine__flush(e);
    return 0;
}

int jw_engine_retry(jw_engine *e, const char *job_id, jw_engine_done_fn done, void *arg, char *err,
                    size_t errlen)
{
    job *j = find_job(e, job_id, err, errlen);

    if (!j)
        return JW_ENOTFOUND;
    if (j->status != JOB_FAILED || j->halted) {
        snprintf(err, errlen, "job %s is %s; only a failed job can be retried", j->id,
                 j->halted ? "halted" : engine__job_names[j->status]);
        return JW_ECONFLICT;
    }
    j->retry_count++;
    free(j->error);
    j->error = NULL;
    for (size_t i = 0; i < j->nsteps; i++) {
        step *s = j->steps[i];

        if (s->unit != j->unit || (s->status != STEP_FAILED && s->status != STEP_CANCELLED))
            continue;
        s->attempt = 0;
        s->timeout_at = 0;
        free(s->error);
        s->error = NULL;
        /* An unknown payment outcome keeps its key, so asking again cannot
         * pay twice; a definite failure gets a fresh key. */
        if (!s->outcome_unknown)
            s->key[0] = '\0';
        engine__step_set(s, STEP_PENDING);
    }
    engine__job_set(j, j->unit == JW_UNIT_VALIDATION ? JOB_VALIDATING : JOB_PROCESSING);
    engine__queue_done(j, done, arg);
    jw_log_info("engine: job retried job=%s retry=%d resuming at %s", j->id, j->retry_count,
                j->unit == JW_UNIT_VALIDATION ? "validation" : "a transaction");
    engine__advance(j);
    engine__flush(e);
    return 0;
}

static bool otp_value_valid(const char *v)
{
    size_t n = 0;

    for (; v && v[n]; n++)
        if (!isdigit((unsigned char)v[n]) || n >= 10)
            return false;
    return n >= 4;
}

int jw_engine_submit_otp(jw_engine *e, const char *otp_request_id, const char *value,
                         const char *check_user, jw_otp_result_fn fn, void *arg, char *err,
                         size_t errlen)
{
    otp *o = otp_request_id ? jw_map_get(&e->otps, otp_request_id) : NULL;
    step *s;

    /* Another user's request is reported exactly like a missing one. */
    if (!o || (check_user && strcmp(check_user, o->job->user) != 0) || !o->job->committed_seq) {
        snprintf(err, errlen, "no OTP request %s", otp_request_id ? otp_request_id : "(null)");
        return JW_ENOTFOUND;
    }
    if (!otp_value_valid(value)) {
        snprintf(err, errlen, "the OTP must be 4 to 10 digits");
        return JW_EINVAL;
    }
    s = o->step;
    if (o->status != OTP_REQUESTED || s->status != STEP_WAITING_OTP || o->job->halted ||
        job_terminal(o->job)) {
        snprintf(err, errlen, "OTP request %s is %s, not waiting for a code", o->id,
                 o->status == OTP_REQUESTED ? "closed" : engine__otp_names[o->status]);
        return JW_ECONFLICT;
    }
    o->fn = fn;
    o->fn_arg = arg;
    engine__otp_set(o, OTP_RECEIVED);
    engine__step_set(s, STEP_IN_PROGRESS);
    /* The value lives only in this action until the provider has it. */
    engine__queue_call(s, value);
    jw_log_info("engine: OTP received job=%s step=%s otp=%s", o->job->id, s->def->name, o->id);
    engine__flush(e);
    return 0;
}

/* ---- life cycle ------------------------------------------------------------------ */

jw_engine *jw_engine_new(const jw_engine_config *cfg, const jw_engine_ports *ports)
{
    jw_engine *e = jw_xcalloc(1, sizeof(*e));

    if (cfg)
        e->cfg = *cfg;
    e->p = *ports;
#define DEFAULT(field, value)                                                                      \
    if (!e->cfg.field)                                                                             \
    e->cfg.field = (value)
    DEFAULT(otp_timeout_login_ms, 5 * 60 * 1000);
    DEFAULT(otp_timeout_payment_ms, 3 * 60 * 1000);
    DEFAULT(otp_max_attempts, 3);
    DEFAULT(voucher_deadline_ms, 10 * 60 * 1000);
    DEFAULT(provider_timeout_ms, 30000);
    DEFAULT(max_amount, 1000000);
    DEFAULT(max_transactions, 50);
    DEFAULT(retry_delay_scale, 1.0);
    DEFAULT(session_margin_ms, 60000);
#undef DEFAULT
    jw_map_init(&e->jobs);
    jw_map_init(&e->otps);
    jw_map_init(&e->calls);
    jw_map_init(&e->sessions);
    jw_map_init(&e->live);
    jw_buf_init(&e->row, 1024);
    e->hists.nsteps = jw_step_def_count();
    if (e->hists.nsteps > JW_ENGINE_STEP_KINDS) {
        jw_log_error("engine: the workflow has %d step definitions; raise JW_ENGINE_STEP_KINDS "
                     "(%d) in jw_engine.h",
                     e->hists.nsteps, JW_ENGINE_STEP_KINDS);
        abort();
    }
    for (int i = 0; i < e->hists.nsteps; i++) {
        e->hists.step[i] = jw_step_def_at(i)->name;
        for (int k = 0; k < JW_STEP_OUTCOME__N; k++)
            jw_hist_init(&e->hists.step_duration[i][k], &step_duration_spec);
        for (int k = 0; k < JW_CALL_RESULT__N; k++)
            jw_hist_init(&e->hists.call_duration[i][k], &call_duration_spec);
    }
    return e;
}

static void free_job(job *j)
{
    jw_timers *q = j->e->p.timers;

    jw_timers_cancel(q, &j->evict);
    for (size_t i = 0; i < j->nsteps; i++) {
        jw_timers_cancel(q, &j->steps[i]->timer);
        json_decref(j->steps[i]->data);
        free(j->steps[i]->error);
        free(j->steps[i]);
    }
    for (size_t i = 0; i < j->notps; i++) {
        jw_timers_cancel(q, &j->otps[i]->timer);
        free(j->otps[i]);
    }
    for (size_t i = 0; i < j->nview; i++)
        jw_delta_unref(j->view[i].d);
    while (j->acts) {
        action *a = j->acts;

        j->acts = a->next;
        engine__free_action(a);
    }
    jw_batch_free(j->open);
    free(j->view);
    free(j->steps);
    free(j->otps);
    free(j->error);
    json_decref(j->metadata);
    json_decref(j->sessions);
    free(j);
}

void jw_engine_free(jw_engine *e)
{
    const char *k;
    void *v;

    if (!e)
        return;
    for (size_t it = 0; jw_map_next(&e->jobs, &it, &k, &v);)
        free_job(v);
    jw_map_release(&e->jobs);
    jw_map_release(&e->otps);
    jw_map_release(&e->calls);
    for (size_t it = 0; jw_map_next(&e->sessions, &it, &k, &v);)
        engine__free_session(v);
    jw_map_release(&e->sessions);
    for (size_t it = 0; jw_map_next(&e->live, &it, &k, &v);)
        free(v);
    jw_map_release(&e->live);
    jw_buf_release(&e->row);
    free(e);
}
