/*
 * engine.c - jobs, steps and OTP requests as state machines (see jw_engine.h;
 * the other files of the engine are listed in engine_internal.h).
 *
 * Every change goes through job_set/step_set/otp_set, which check the
 * transition against a table and emit the row as a delta into the job's open
 * batch. At the end of each event (command, reply, timer) flush() submits the
 * open batches; what must wait for durability (publishing, provider calls,
 * answers to callers) rides on the batch as actions and runs in on_commit.
 */
#include "engine_internal.h"

#include "jw_error.h"
#include "jw_log.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- states and their transitions ---------------------------------------- */

const char *const engine__job_names[JOB__N] = {"initiated", "validating", "processing",
                                               "completed", "failed",     "cancelled"};

static const unsigned job_moves[JOB__N] = {
    [JOB_INITIATED] = B(JOB_VALIDATING) | B(JOB_FAILED) | B(JOB_CANCELLED),
    [JOB_VALIDATING] = B(JOB_PROCESSING) | B(JOB_FAILED) | B(JOB_CANCELLED),
    [JOB_PROCESSING] = B(JOB_COMPLETED) | B(JOB_FAILED) | B(JOB_CANCELLED),
    [JOB_FAILED] = B(JOB_VALIDATING) | B(JOB_PROCESSING), /* retry */
};

const char *const engine__step_names[STEP__N] = {
    "pending", "in_progress", "waiting_otp", "retrying", "completed", "failed", "cancelled"};

static const unsigned step_moves[STEP__N] = {
    [STEP_PENDING] = B(STEP_IN_PROGRESS) | B(STEP_CANCELLED),
    [STEP_IN_PROGRESS] = B(STEP_WAITING_OTP) | B(STEP_RETRYING) | B(STEP_COMPLETED) |
                         B(STEP_FAILED) | B(STEP_CANCELLED),
    [STEP_WAITING_OTP] =
        B(STEP_IN_PROGRESS) | B(STEP_RETRYING) | B(STEP_FAILED) | B(STEP_CANCELLED),
    [STEP_RETRYING] = B(STEP_IN_PROGRESS) | B(STEP_CANCELLED),
    [STEP_FAILED] = B(STEP_PENDING), /* job retry */
    [STEP_CANCELLED] = B(STEP_PENDING),
};

const char *const engine__otp_names[OTP__N] = {"requested", "received", "verified", "failed",
                                               "expired"};

static const unsigned otp_moves[OTP__N] = {
    [OTP_REQUESTED] = B(OTP_RECEIVED) | B(OTP_FAILED) | B(OTP_EXPIRED),
    /* back to requested: a wrong code, or a restart lost the typed value */
    [OTP_RECEIVED] = B(OTP_VERIFIED) | B(OTP_REQUESTED) | B(OTP_FAILED) | B(OTP_EXPIRED),
};

static uint64_t elapsed_us(int64_t from, int64_t to)
{
    return to > from ? (uint64_t)(to - from) : 0; /* the wall clock may step back */
}

static void validation_progress(job *j);

/* ---- emitting deltas and flushing batches -------------------------------- */

void engine__mark_dirty(job *j)
{
    if (!j->queued) {
        j->queued = true;
        j->next_dirty = j->e->dirty;
        j->e->dirty = j;
    }
}

/*
 * Appends the change of one row to the job's open batch. Values from outside
 * (metadata, provider data and messages) are bounded where they enter, so a
 * row that cannot become a delta is a bug; it stops this job, never the
 * process: the job is halted (nothing more of it is driven or committed; a
 * restart resumes it from what was committed), and the caller's change is
 * refused where it can still be (jw_engine_create_job).
 */
void engine__emit(job *j, jw_table t, const char *row_id, jw_op op, const jw_buf *row)
{
    int err = 0;
    jw_delta *d =
        jw_delta_new(j->id, row_id, j->seq + 1, now_us(j->e), t, op, row->data, row->len, &err);

    if (!d) {
        j->e->stats.rows_refused++;
        if (!j->halted)
            jw_log_error("engine: cannot build a delta job=%s table=%s: %s; job halted until "
                         "restart",
                         j->id, jw_table_name(t), jw_strerror(err));
        j->halted = true;
        return;
    }
    j->seq++;
    if (!j->open)
        j->open = jw_batch_new();
    jw_batch_add(j->open, d);
    j->e->stats.deltas++;
    engine__mark_dirty(j);
}

static void add_action(job *j, action *a)
{
    a->next = NULL;
    if (j->acts_tail)
        j->acts_tail->next = a;
    else
        j->acts = a;
    j->acts_tail = a;
    engine__mark_dirty(j);
}

void engine__queue_call(step *s, const char *otp_value)
{
    action *a = jw_xcalloc(1, sizeof(*a));

    a->kind = ACT_CALL;
    a->step = s;
    a->attempt = s->attempt;
    a->otp = otp_value ? jw_xstrdup(otp_value) : NULL;
    add_action(s->job, a);
}

void engine__queue_done(job *j, jw_engine_done_fn done, void *arg)
{
    action *a;

    if (!done)
        return;
    a = jw_xcalloc(1, sizeof(*a));
    a->kind = ACT_DONE;
    a->done = done;
    a->arg = arg;
    add_action(j, a);
}

void engine__free_action(action *a)
{
    if (a->otp) {
        OPENSSL_cleanse(a->otp, strlen(a->otp));
        free(a->otp);
    }
    free(a);
}

void engine__touch_job(job *j)
{
    j->updated_at = now_us(j->e);
    j->row_dirty = true;
    engine__mark_dirty(j);
}

static void run_actions(job *j, action *acts, int status);

/* Submits every job's open batch, with the actions that wait for it. */
void engine__flush(jw_engine *e)
{
    while (e->dirty) {
        job *j = e->dirty;
        commit_ctx *ctx;
        jw_batch *b;

        e->dirty = j->next_dirty;
        /* One job row per event however many fields changed; emitted while
         * still marked queued so emit() does not queue the job again. */
        if (j->row_dirty) {
            j->row_dirty = false;
            engine__emit(j, JW_TABLE_JOB_RUNS, j->id, JW_OP_UPDATE, engine__job_row(j));
        }
        j->queued = false;
        if (j->lease_lost) {
            /* Another node drives the job: nothing of it may commit here. */
            action *acts = j->acts;

            j->acts = j->acts_tail = NULL;
            jw_batch_free(j->open);
            j->open = NULL;
            run_actions(j, acts, JW_ECONFLICT);
            continue;
        }
        if (!j->open) {
            /* Actions with nothing to wait for (cannot happen today). */
            action *acts = j->acts;

            j->acts = j->acts_tail = NULL;
            run_actions(j, acts, 0);
            continue;
        }
        ctx = jw_xmalloc(sizeof(*ctx));
        ctx->job = j;
        ctx->acts = j->acts;
        j->acts = j->acts_tail = NULL;
        /*
         * The job lets go of its batch before the store has it: a store may
         * answer inside submit (app.c's port does when it refuses), and then
         * on_commit runs, frees the batch and flushes here before submit
         * returns. Rows its actions emit meanwhile go into a new batch.
         */
        b = j->open;
        j->open = NULL;
        b->user = ctx;
        b->lease_epoch = j->lease_epoch;
        j->inflight++;
        e->stats.batches_inflight++;
        e->p.submit(e->p.ctx, b);
    }
}

/* ---- state changes --------------------------------------------------------- */

/* A job of j's user starts (+1) or stops (-1) running. */
void engine__live_add(job *j, int d)
{
    jw_engine *e = j->e;
    user_live *u = jw_map_get(&e->live, j->user);

    e->stats.jobs_live += (uint64_t)(int64_t)d;
    if (!u) {
        u = jw_xcalloc(1, sizeof(*u));
        snprintf(u->user, sizeof(u->user), "%s", j->user);
        jw_map_put(&e->live, u->user, u);
    }
    u->n += d;
    if (u->n <= 0) {
        jw_map_del(&e->live, u->user);
        free(u);
    }
}

int jw_engine_user_live_jobs(jw_engine *e, const char *user_id)
{
    char lower[JW_UUID_LEN + 1];
    user_live *u;

    snprintf(lower, sizeof(lower), "%s", user_id ? user_id : "");
    for (char *c = lower; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'F' ? *c + ('a' - 'A') : *c);
    u = jw_map_get(&e->live, lower);
    return u ? u->n : 0;
}

bool engine__job_set(job *j, job_status to)
{
    if (j->status != to && !(job_moves[j->status] & B(to))) {
        jw_log_error("engine: illegal job transition %s -> %s job=%s", engine__job_names[j->status],
                     engine__job_names[to], j->id);
        return false;
    }
    bool was_done = job_terminal(j);

    j->status = to;
    if (!was_done && job_terminal(j)) {
        engine__live_add(j, -1);
        j->e->stats.jobs_finished++;
        engine__arm_eviction(j);
    } else if (was_done && !job_terminal(j)) {
        engine__live_add(j, +1); /* a retry */
        jw_timers_cancel(j->e->p.timers, &j->evict);
    }
    engine__touch_job(j);
    return true;
}

bool engine__step_set(step *s, step_status to)
{
    int64_t now = now_us(s->job->e);

    if (s->status != to && !(step_moves[s->status] & B(to))) {
        jw_log_error("engine: illegal step transition %s -> %s job=%s step=%s",
                     engine__step_names[s->status], engine__step_names[to], s->job->id,
                     s->def->name);
        return false;
    }
    /* A run starts when the step leaves pending; retries and OTP waits are
     * part of it. */
    if (to == STEP_IN_PROGRESS && (s->status == STEP_PENDING || !s->run_started_us))
        s->run_started_us = now;
    s->status = to;
    s->updated_at = now;
    if (to == STEP_IN_PROGRESS && !s->started_at)
        s->started_at = now;
    if (to == STEP_COMPLETED || to == STEP_FAILED || to == STEP_CANCELLED) {
        s->completed_at = now;
        if (s->run_started_us) {
            jw_step_outcome oc = to == STEP_COMPLETED ? JW_STEP_OUTCOME_COMPLETED
                                 : to == STEP_FAILED  ? JW_STEP_OUTCOME_FAILED
                                                      : JW_STEP_OUTCOME_CANCELLED;

            jw_hist_observe(&s->job->e->hists.step_duration[jw_step_def_ordinal(s->def)][oc],
                            elapsed_us(s->run_started_us, now));
            s->run_started_us = 0;
        }
    }
    if (to != STEP_RETRYING)
        s->next_retry_at = 0;
    engine__emit(s->job, JW_TABLE_JOB_STEPS, s->id, JW_OP_UPDATE, engine__step_row(s));
    return true;
}

bool engine__otp_set(otp *o, otp_status to)
{
    int64_t now = now_us(o->job->e);

    if (o->status != to && !(otp_moves[o->status] & B(to))) {
        jw_log_error("engine: illegal otp transition %s -> %s job=%s otp=%s",
                     engine__otp_names[o->status], engine__otp_names[to], o->job->id, o->id);
        return false;
    }
    if (o->status != to && to == OTP_VERIFIED)
        o->job->e->stats.otp_verified++;
    if (o->status != to && to == OTP_EXPIRED)
        o->job->e->stats.otp_expired++;
    o->status = to;
    if (to == OTP_RECEIVED)
        o->received_at = now;
    if (to == OTP_VERIFIED)
        o->verified_at = now;
    if (to != OTP_REQUESTED && to != OTP_RECEIVED)
        jw_timers_cancel(o->job->e->p.timers, &o->timer);
    engine__emit(o->job, JW_TABLE_OTP_REQUESTS, o->id, JW_OP_UPDATE, engine__otp_row(o));
    return true;
}

static void set_error(char **slot, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void set_error(char **slot, const char *fmt, va_list ap)
{
    char buf[512];

    vsnprintf(buf, sizeof(buf), fmt, ap);
    free(*slot);
    *slot = jw_xstrdup(buf);
}

static void job_error(job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_error(job *j, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    set_error(&j->error, fmt, ap);
    va_end(ap);
    engine__touch_job(j);
}

/* Answers the OTP's waiting submitter, if any. */
/*
 * Answers the OTP's waiting submitter, if any - after the batch holding the
 * OTP row's new state commits (rule 3: nobody is told "verified" before it is
 * durable).
 */
static void otp_answer(otp *o, bool ok, const char *error, const char *message)
{
    action *a;

    if (!o->fn)
        return;
    a = jw_xcalloc(1, sizeof(*a));
    a->kind = ACT_OTP;
    a->otp_fn = o->fn;
    a->arg = o->fn_arg;
    o->fn = NULL;
    snprintf(a->msg, sizeof(a->msg), "%s", message ? message : "");
    a->result.ok = ok;
    a->result.error = error;
    a->result.message = message ? a->msg : NULL;
    a->result.attempts_left = o->max_attempts - o->attempts;
    if (a->result.attempts_left < 0)
        a->result.attempts_left = 0;
    add_action(o->job, a);
}

/* ---- the walk ---------------------------------------------------------------- */

step *engine__new_step(job *j, const jw_step_def *def, int unit)
{
    step *s = jw_xcalloc(1, sizeof(*s));

    s->job = j;
    s->def = def;
    s->unit = unit;
    jw_uuid_new(s->id);
    s->status = STEP_PENDING;
    s->data = json_object();
    s->created_at = s->updated_at = now_us(j->e);
    if (j->nsteps == j->capsteps) {
        j->capsteps = j->capsteps ? j->capsteps * 2 : 8;
        j->steps = jw_xrealloc(j->steps, j->capsteps * sizeof(*j->steps));
    }
    j->steps[j->nsteps++] = s;
    return s;
}

static step *unit_step(job *j, int unit, const jw_step_def *def)
{
    for (size_t i = 0; i < j->nsteps; i++)
        if (j->steps[i]->unit == unit && j->steps[i]->def == def)
            return j->steps[i];
    return NULL;
}

static void make_key(step *s)
{
    /* Same key for every attempt of one run of the step: a retried call that
     * already had its effect is answered from the provider's record. A job
     * retry makes a new key, unless the last outcome is unknown. */
    snprintf(s->key, sizeof(s->key), "jw-%s-r%d", s->id, s->job->retry_count);
}

/*
 * Starts a step's next attempt. A login whose session this user still holds
 * completes at once instead (returns true then): no provider call, no SMS.
 */
static bool start_step(step *s)
{
    jw_engine *e = s->job->e;
    user_session *us =
        s->def->login && s->attempt == 0 ? engine__reusable_session(s->job, s->def) : NULL;

    if (!s->key[0])
        make_key(s);
    s->attempt++;
    if (us) {
        json_object_set(s->job->sessions, s->def->session, us->session);
        json_object_set_new(s->data, "reused_session", json_true());
        json_object_set_new(s->data, "session_id", json_string(us->id));
        us->last_used_at = now_us(e);
        engine__step_set(s, STEP_IN_PROGRESS);
        engine__step_set(s, STEP_COMPLETED);
        if (us->sealed_hex)
            engine__emit_session(s->job, us);
        jw_log_info("engine: login reused job=%s step=%s session=%s", s->job->id, s->def->name,
                    us->id);
        return true;
    }
    if (s->def->polls && !s->timeout_at) {
        int64_t ms = e->cfg.voucher_deadline_ms;

        s->timeout_at = now_us(e) + ms * 1000;
    }
    engine__step_set(s, STEP_IN_PROGRESS);
    /* Durability rule 4: the call starts once this row committed. */
    engine__queue_call(s, NULL);
    return false;
}

static bool deps_met(job *j, const step *s)
{
    const jw_step_def *defs = jw_unit_defs(s->unit);

    for (int i = 0; defs[i].name; i++) {
        if (s->def->deps & B(i)) {
            step *d = unit_step(j, s->unit, &defs[i]);

            if (!d || d->status != STEP_COMPLETED)
                return false;
        }
    }
    return true;
}

static step *unit_external(job *j)
{
    for (size_t i = 0; i < j->nsteps; i++)
        if (j->steps[i]->unit == j->unit && j->steps[i]->def->external_effect)
            return j->steps[i];
    return NULL;
}

/* May the job stop now without abandoning money that moved? */
static bool cancel_safe(job *j)
{
    step *pay;

    if (j->unit == JW_UNIT_VALIDATION)
        return true;
    pay = unit_external(j);
    if (!pay)
        return true;
    return !(pay->status == STEP_COMPLETED || pay->outcome_unknown || pay->call_id);
}

void engine__drop_call(step *s)
{
    if (s->call_id) {
        jw_map_del(&s->job->e->calls, s->call_key);
        s->call_id = 0;
    }
}

/* Stops a step that has not finished: timers, outstanding call, OTP. */
static void stop_step(step *s, step_status to, const char *otp_error)
{
    jw_timers_cancel(s->job->e->p.timers, &s->timer);
    engine__drop_call(s);
    if (s->otp && (s->otp->status == OTP_REQUESTED || s->otp->status == OTP_RECEIVED)) {
        engine__otp_set(s->otp, OTP_FAILED);
        otp_answer(s->otp, false, otp_error, "the step this OTP was for has stopped");
    }
    engine__step_set(s, to);
}

static void finish_cancel(job *j)
{
    for (size_t i = 0; i < j->nsteps; i++)
        if (j->steps[i]->unit == j->unit && !step_terminal(j->steps[i]))
            stop_step(j->steps[i], STEP_CANCELLED, "cancelled");
    engine__job_set(j, JOB_CANCELLED);
    jw_log_info("engine: job cancelled job=%s completed_transactions=%d", j->id, j->completed_tx);
}

static void fail_job(job *j, step *failed)
{
    bool others = false;

    for (size_t i = 0; i < j->nsteps; i++) {
        step *s = j->steps[i];

        if (s->unit == j->unit && s != failed && !step_terminal(s)) {
            stop_step(s, STEP_CANCELLED, "step_failed");
            others = true;
        }
    }
    if (others)
        job_error(j, "%s failed: %s; the steps running beside it were cancelled", failed->def->name,
                  failed->error ? failed->error : "unknown error");
    else
        job_error(j, "%s failed: %s", failed->def->name,
                  failed->error ? failed->error : "unknown error");
    engine__job_set(j, JOB_FAILED);
    jw_log_info("engine: job failed job=%s step=%s completed_transactions=%d: %s", j->id,
                failed->def->name, j->completed_tx, j->error);
}

static void complete_job(job *j)
{
    j->phase = "complete";
    j->progress = 100;
    j->completed_at = now_us(j->e);
    engine__job_set(j, JOB_COMPLETED);
    jw_log_info("engine: job completed job=%s transactions=%d", j->id, j->completed_tx);
}

void engine__advance(job *j)
{
    for (;;) {
        const jw_step_def *defs;
        bool all_done = true, again = false;

        if (j->halted || job_terminal(j))
            return;
        if (j->status == JOB_INITIATED) {
            j->phase = "validation";
            engine__job_set(j, JOB_VALIDATING);
        }
        if (j->cancel_requested && cancel_safe(j)) {
            finish_cancel(j);
            return;
        }
        defs = jw_unit_defs(j->unit);
        for (int i = 0; defs[i].name; i++) {
            if (!unit_step(j, j->unit, &defs[i])) {
                step *s = engine__new_step(j, &defs[i], j->unit);

                engine__emit(j, JW_TABLE_JOB_STEPS, s->id, JW_OP_INSERT, engine__step_row(s));
            }
        }
        for (int i = 0; defs[i].name; i++) {
            step *s = unit_step(j, j->unit, &defs[i]);

            if (s->status == STEP_COMPLETED)
                continue;
            all_done = false;
            if (s->status == STEP_FAILED) {
                fail_job(j, s);
                return;
            }
            if (s->status == STEP_PENDING && deps_met(j, s))
                again |= start_step(s);
        }
        if (again) {
            validation_progress(j);
            continue; /* a step finished at once: its dependents may start */
        }
        if (!all_done)
            return;
        if (j->unit == JW_UNIT_VALIDATION) {
            j->phase = "payment_processing";
            j->progress = 20;
            engine__job_set(j, JOB_PROCESSING);
        } else {
            j->completed_tx = j->unit;
            j->progress = 20 + 80 * j->unit / j->count;
            engine__touch_job(j);
        }
        if (j->unit == j->count) {
            complete_job(j);
            return;
        }
        j->unit++;
    }
}

/* Validation progress grows as its steps complete: 0 -> 20. */
static void validation_progress(job *j)
{
    int done = 0, n = 0;

    for (size_t i = 0; i < j->nsteps; i++) {
        if (j->steps[i]->unit != JW_UNIT_VALIDATION)
            continue;
        n++;
        done += j->steps[i]->status == STEP_COMPLETED;
    }
    if (n && j->unit == JW_UNIT_VALIDATION && done < n) {
        j->progress = 20 * done / n;
        engine__touch_job(j);
    }
}

/* ---- provider calls and replies ------------------------------------------ */

void engine__start_call(step *s, const char *otp_value)
{
    jw_engine *e = s->job->e;
    jw_provider_call *c = jw_provider_call_new();
    int rc;

    c->id = ++e->next_call;
    snprintf(c->job_id, sizeof(c->job_id), "%s", s->job->id);
    snprintf(c->step_id, sizeof(c->step_id), "%s", s->id);
    snprintf(c->user_id, sizeof(c->user_id), "%s", s->job->user);
    snprintf(c->step_name, sizeof(c->step_name), "%s", s->def->name);
    c->transaction_index = s->unit;
    c->attempt = s->attempt;
    snprintf(c->idempotency_key, sizeof(c->idempotency_key), "%s", s->key);
    c->amount = s->job->amount;
    c->session = json_object_size(s->job->sessions) ? json_deep_copy(s->job->sessions) : NULL;
    c->otp = otp_value ? jw_xstrdup(otp_value) : NULL;
    c->timeout_ms = e->cfg.provider_timeout_ms;

    s->call_id = c->id;
    snprintf(s->call_key, sizeof(s->call_key), "%" PRIu64, c->id);
    jw_map_put(&e->calls, s->call_key, s);
    if (s->def->external_effect)
        s->outcome_unknown = true;
    e->stats.provider_calls++;
    s->call_started_us = now_us(e);
    jw_log_debug("engine: call job=%s step=%s attempt=%d call=%" PRIu64, s->job->id, s->def->name,
                 s->attempt, c->id);
    rc = e->p.provider.start(e->p.provider.ctx, c);
    if (rc != 0) {
        engine__drop_call(s);
        engine__step_attempt_failed(s, true, "provider refused the call: %s", jw_strerror(rc));
    }
}

static int64_t retry_delay_ms(jw_engine *e, const step *s)
{
    const jw_retry_policy *p = &s->def->retry;
    double ms = (double)p->initial_ms;
    double jitter;

    for (int i = 1; i < s->attempt; i++)
        ms *= p->multiplier;
    if (ms > (double)p->max_ms)
        ms = (double)p->max_ms;
    /* +/- jitter, uniform */
    jitter = ((double)(e->p.random(e->p.ctx) >> 11) / 9007199254740992.0) * 2.0 - 1.0;
    ms *= 1.0 + p->jitter * jitter;
    ms *= e->cfg.retry_delay_scale;
    return ms < 1 ? 1 : (int64_t)ms;
}

void engine__step_attempt_failed(step *s, bool retryable, const char *fmt, ...)
{
    jw_engine *e = s->job->e;
    va_list ap;

    va_start(ap, fmt);
    set_error(&s->error, fmt, ap);
    va_end(ap);
    if (retryable && s->attempt < s->def->retry.max_attempts) {
        s->next_retry_at = now_us(e) + retry_delay_ms(e, s) * 1000;
        engine__step_set(s, STEP_RETRYING);
        jw_timers_arm(e->p.timers, &s->timer, s->next_retry_at, engine__step_timer_fired, s);
        jw_log_info("engine: retrying job=%s step=%s attempt=%d in %" PRId64 " ms: %s", s->job->id,
                    s->def->name, s->attempt, (s->next_retry_at - now_us(e)) / 1000, s->error);
        return;
    }
    if (retryable) {
        char buf[512];

        snprintf(buf, sizeof(buf), "%s (gave up after %d attempts)", s->error, s->attempt);
        free(s->error);
        s->error = jw_xstrdup(buf);
    }
    engine__step_set(s, STEP_FAILED);
    engine__advance(s->job);
}

/* The step's OTP class says which wait applies (workflow.h). */
static int64_t otp_timeout_ms(jw_engine *e, const jw_step_def *def)
{
    return def->otp == JW_OTP_PAYMENT ? e->cfg.otp_timeout_payment_ms : e->cfg.otp_timeout_login_ms;
}

static void request_otp(step *s, const jw_provider_reply *r)
{
    jw_engine *e = s->job->e;
    job *j = s->job;
    otp *o = jw_xcalloc(1, sizeof(*o));
    int64_t now = now_us(e);

    o->job = j;
    o->step = s;
    jw_uuid_new(o->id);
    snprintf(o->type, sizeof(o->type), "%s", r->otp_type[0] ? r->otp_type : s->def->name);
    snprintf(o->phone, sizeof(o->phone), "%s", r->phone_hint);
    o->status = OTP_REQUESTED;
    o->max_attempts = e->cfg.otp_max_attempts;
    o->requested_at = now;
    o->timeout_at = now + otp_timeout_ms(e, s->def) * 1000;
    if (j->notps == j->capotps) {
        j->capotps = j->capotps ? j->capotps * 2 : 4;
        j->otps = jw_xrealloc(j->otps, j->capotps * sizeof(*j->otps));
    }
    j->otps[j->notps++] = o;
    jw_map_put(&e->otps, o->id, o);
    s->otp = o;
    e->stats.otp_requested++;
    engine__step_set(s, STEP_WAITING_OTP);
    engine__emit(j, JW_TABLE_OTP_REQUESTS, o->id, JW_OP_INSERT, engine__otp_row(o));
    jw_timers_arm(e->p.timers, &o->timer, o->timeout_at, engine__otp_timer_fired, o);
    jw_log_info("engine: OTP requested job=%s step=%s otp=%s type=%s", j->id, s->def->name, o->id,
                o->type);
}

static void step_completed(step *s, json_t *data)
{
    job *j = s->job;

    if (json_is_object(data))
        json_object_update(s->data, data);
    if (s->def->login) {
        json_t *session = json_object_get(data, "session");

        /* Kept under the step's session name: the session later steps present. */
        if (json_is_object(session) && s->def->session) {
            json_object_set(j->sessions, s->def->session, session);
            engine__keep_session(j, s->def, session);
        }
        /* Tokens are not journaled: memory, and sealed in auth_sessions. */
        json_object_del(s->data, "session");
    }
    s->outcome_unknown = false;
    free(s->error);
    s->error = NULL;
    engine__step_set(s, STEP_COMPLETED);
    if (j->unit == JW_UNIT_VALIDATION)
        validation_progress(j);
    engine__advance(j);
}

static void handle_reply(step *s, jw_provider_reply *r)
{
    otp *o = s->otp && s->otp->status == OTP_RECEIVED ? s->otp : NULL;
    jw_engine *e = s->job->e;

    switch (r->status) {
    case JW_PROVIDER_OK:
        if (o) {
            engine__otp_set(o, OTP_VERIFIED);
            otp_answer(o, true, NULL, NULL);
        }
        step_completed(s, r->data);
        break;
    case JW_PROVIDER_OTP_REQUIRED:
        /* The provider needs a code: nothing was done yet. */
        s->outcome_unknown = false;
        if (o && r->invalid_otp) {
            o->attempts++;
            e->stats.otp_wrong++;
            if (o->attempts >= o->max_attempts) {
                e->stats.otp_exhausted++;
                engine__otp_set(o, OTP_FAILED);
                otp_answer(o, false, "invalid_otp", "wrong code; no attempts left");
                engine__step_attempt_failed(s, true, "OTP entered wrong %d times", o->attempts);
                break;
            }
            engine__otp_set(o, OTP_REQUESTED);
            engine__step_set(s, STEP_WAITING_OTP);
            otp_answer(o, false, "invalid_otp", "wrong code; try again");
            /* The wait may have run out while the provider checked. */
            if (now_us(e) >= o->timeout_at)
                jw_timers_arm(e->p.timers, &o->timer, now_us(e), engine__otp_timer_fired, o);
            break;
        }
        if (o) {
            engine__otp_set(o, OTP_FAILED);
            otp_answer(o, false, "otp_not_accepted", "the provider asked for a new code");
        }
        request_otp(s, r);
        break;
    case JW_PROVIDER_PENDING:
        if (s->timeout_at && now_us(e) + (int64_t)r->poll_after_ms * 1000 >= s->timeout_at) {
            /* A payment still pending may yet complete: its outcome stays unknown. */
            engine__step_attempt_failed(s, false, "still pending at its deadline");
            break;
        }
        if (!s->timeout_at) {
            /* A step not meant to poll: give it the same deadline. */
            s->timeout_at = now_us(e) + e->cfg.voucher_deadline_ms * 1000;
            engine__step_set(s, STEP_IN_PROGRESS);
        }
        jw_timers_arm(e->p.timers, &s->timer, now_us(e) + (int64_t)r->poll_after_ms * 1000,
                      engine__step_timer_fired, s);
        break;
    case JW_PROVIDER_ERROR:
        if (o) {
            engine__otp_set(o, OTP_FAILED);
            otp_answer(o, false, "provider_error", r->message);
        }
        if (r->refused)
            s->outcome_unknown = false;
        engine__step_attempt_failed(s, r->retryable, "%s",
                                    r->message[0] ? r->message : "provider error");
        break;
    }
}

static void observe_call(step *s, const jw_provider_reply *r)
{
    jw_engine *e = s->job->e;
    jw_call_result res = JW_CALL_OK;

    switch (r->status) {
    case JW_PROVIDER_OK: res = JW_CALL_OK; break;
    case JW_PROVIDER_OTP_REQUIRED: res = JW_CALL_OTP_REQUIRED; break;
    case JW_PROVIDER_PENDING: res = JW_CALL_PENDING; break;
    case JW_PROVIDER_ERROR:
        res = r->timed_out ? JW_CALL_TIMEOUT : r->retryable ? JW_CALL_RETRYABLE : JW_CALL_FATAL;
        break;
    }
    jw_hist_observe(&e->hists.call_duration[jw_step_def_ordinal(s->def)][res],
                    elapsed_us(s->call_started_us, now_us(e)));
}

void jw_engine_on_reply(jw_engine *e, jw_provider_reply *r)
{
    char key[24];
    step *s;

    snprintf(key, sizeof(key), "%" PRIu64, r->call_id);
    s = jw_map_del(&e->calls, key);
    if (s && s->call_id == r->call_id)
        observe_call(s, r);
    if (!s || s->call_id != r->call_id || s->job->halted) {
        jw_provider_reply_free(r);
        return;
    }
    s->call_id = 0;
    if (s->status == STEP_IN_PROGRESS)
        handle_reply(s, r);
    jw_provider_reply_free(r);
    /* A cancel may have been waiting for this reply. */
    engine__advance(s->job);
    engine__flush(e);
}

/* ---- timers ------------------------------------------------------------------ */

void engine__step_timer_fired(jw_timer *t, void *arg)
{
    step *s = arg;
    jw_engine *e = s->job->e;

    (void)t;
    if (s->job->halted)
        return;
    if (s->status == STEP_RETRYING) {
        (void)start_step(s);
    } else if (s->status == STEP_IN_PROGRESS && !s->call_id) {
        /* A poll: the in_progress row is durable already. */
        engine__start_call(s, NULL);
    }
    engine__advance(s->job);
    engine__flush(e);
}

void engine__otp_timer_fired(jw_timer *t, void *arg)
{
    otp *o = arg;
    step *s = o->step;
    jw_engine *e = o->job->e;

    (void)t;
    if (o->job->halted || o->status != OTP_REQUESTED)
        return; /* RECEIVED: the provider's verdict decides */
    engine__otp_set(o, OTP_EXPIRED);
    otp_answer(o, false, "expired", "the OTP was not entered in time");
    if (s->status == STEP_WAITING_OTP)
        engine__step_attempt_failed(s, true, "OTP not entered within %" PRId64 " s",
                                    (o->timeout_at - o->requested_at) / 1000000);
    engine__advance(o->job);
    engine__flush(e);
}

/* ---- commits ------------------------------------------------------------------ */

static void run_actions(job *j, action *acts, int status)
{
    while (acts) {
        action *a = acts;

        acts = a->next;
        if (a->kind == ACT_DONE) {
            a->done(a->arg, status, j->id);
        } else if (a->kind == ACT_OTP) {
            if (status != 0) {
                a->result.ok = false;
                a->result.error = "unavailable";
                a->result.message = "the verdict could not be stored; submit the code again";
            }
            a->otp_fn(a->arg, &a->result);
        } else if (status == 0 && !j->halted && a->step->status == STEP_IN_PROGRESS &&
                   a->step->attempt == a->attempt && !a->step->call_id) {
            engine__start_call(a->step, a->otp);
        }
        engine__free_action(a);
    }
}

/*
 * A job that stops here (a refused batch, a lost lease) commits nothing more,
 * so whoever waits for the verdict on a code it received would wait for a
 * commit that never comes: told now that the code was not checked.
 */
static void answer_waiting_otps(job *j)
{
    for (size_t i = 0; i < j->nsteps; i++) {
        otp *o = j->steps[i]->otp;
        jw_otp_result r = {.ok = false, .error = "unavailable"};
        jw_otp_result_fn fn;

        if (!o || !o->fn)
            continue;
        fn = o->fn;
        o->fn = NULL;
        r.message = "the job stopped on this node before the code was checked; submit it again";
        r.attempts_left = o->max_attempts > o->attempts ? o->max_attempts - o->attempts : 0;
        fn(o->fn_arg, &r);
    }
}

void jw_engine_on_commit(jw_engine *e, jw_batch *b)
{
    commit_ctx *ctx = b->user;
    job *j = ctx->job;

    j->inflight--;
    e->stats.batches_inflight--;
    if (b->status == 0) {
        for (size_t i = 0; i < b->count; i++) {
            if (b->deltas[i]->seq == 0)
                continue; /* a quiet write (auth_sessions): not part of the job */
            engine__view_put(j, b->deltas[i]);
            /* Before publishing: a snapshot taken by a subscriber of this
             * delta must say it includes it. */
            j->committed_seq = b->deltas[i]->seq;
            b->deltas[i]->commit_us = b->committed_us;
            e->p.publish(e->p.ctx, b->deltas[i]);
        }
        if (e->p.published)
            e->p.published(e->p.ctx);
    } else if (b->status == JW_ECONFLICT) {
        /* The store's fence: another node took the job's lease. Stop at once;
         * the calls this batch would have started are never started. */
        if (!j->lease_lost) {
            j->lease_lost = true;
            j->halted = true;
            e->stats.leases_lost++;
            jw_log_warn("job %s: ownership lost (another node holds its lease)", j->id);
            if (e->p.left)
                e->p.left(e->p.ctx, j->id);
        }
        answer_waiting_otps(j);
    } else if (!j->halted) {
        /* Memory is now ahead of PostgreSQL: stop driving the job. A restart
         * resumes it from what was committed. */
        j->halted = true;
        jw_log_error("engine: a batch of job=%s was refused, job halted until restart: %s", j->id,
                     b->error ? b->error : jw_strerror(b->status));
        answer_waiting_otps(j);
    }
    run_actions(j, ctx->acts, b->status);
    free(ctx);
    jw_batch_free(b);
    engine__flush(e);
}
