/*
 * recover.c - rebuilding jobs from their rows (jw_engine_recover): at
 * start-up the unfinished ones read by jw_db_load_active, later a failed job
 * adopted to be retried. Each job gets back its steps and OTP requests, its
 * committed view, and its waits: OTP timeouts and retry timers re-armed, calls
 * in flight re-issued under the same idempotency key.
 *
 * Loop thread only. The rows are borrowed; what is kept is copied.
 */
#include "engine_internal.h"

#include "jw_schema.h"

#include "jw_error.h"
#include "jw_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_name(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (s && strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* The rows' columns, by their names in jw_schema.h. */
#define RUN(c) JW_COLUMN(JOB_RUNS, c)
#define STEP_COL(c) JW_COLUMN(JOB_STEPS, c)
#define OTP_COL(c) JW_COLUMN(OTP_REQUESTS, c)

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int jint(const json_t *o, const char *k)
{
    return (int)json_integer_value(json_object_get(o, k));
}

static int recover_job(jw_engine *e, const json_t *item, char *err, size_t errlen)
{
    const json_t *row = json_object_get(item, "job"), *v;
    const char *id = jstr(row, RUN(id)), *user = jstr(row, RUN(user_id));
    int status = parse_name(engine__job_names, JOB__N, jstr(row, RUN(status)));
    size_t i;
    job *j;

    if (!jw_uuid_valid(id) || !jw_uuid_valid(user) || status < 0 || jw_map_get(&e->jobs, id)) {
        snprintf(err, errlen, "unusable job row %s", id ? id : "(no id)");
        return JW_EINVAL;
    }
    j = engine__new_job(e, id, user);
    j->status = (job_status)status;
    j->phase = jstr(row, RUN(current_phase)) ? jstr(row, RUN(current_phase)) : NULL;
    /* phase strings are ours: point at the constants */
    if (j->phase)
        j->phase = strcmp(j->phase, "payment_processing") == 0 ? "payment_processing"
                   : strcmp(j->phase, "complete") == 0         ? "complete"
                                                               : "validation";
    j->progress = jint(row, RUN(progress_percentage));
    j->completed_tx = jint(row, RUN(completed_transactions));
    j->count = jint(row, RUN(transaction_count));
    j->retry_count = jint(row, RUN(retry_count));
    j->amount = json_integer_value(json_object_get(row, RUN(transaction_amount)));
    j->created_at = engine__parse_ts(json_object_get(row, RUN(created_at)));
    j->updated_at = engine__parse_ts(json_object_get(row, RUN(updated_at)));
    j->completed_at = engine__parse_ts(json_object_get(row, RUN(completed_at)));
    if (jstr(row, RUN(error_message)))
        j->error = jw_xstrdup(jstr(row, RUN(error_message)));
    if (json_is_object(json_object_get(row, RUN(metadata)))) {
        json_decref(j->metadata);
        j->metadata = json_deep_copy(json_object_get(row, RUN(metadata)));
    }
    j->cancel_requested = json_is_true(json_object_get(row, RUN(cancel_requested)));
    j->seq = j->committed_seq = json_integer_value(json_object_get(item, "last_seq"));
    if (json_is_integer(json_object_get(item, "lease_epoch")))
        j->lease_epoch = json_integer_value(json_object_get(item, "lease_epoch"));
    if (job_terminal(j))
        engine__arm_eviction(j); /* adopted to be retried: leaves again unless it is */
    else
        engine__live_add(j, +1);

    {
        /* The committed view starts as the rows read back; the store's own
         * columns (last_seq) are not part of the row the engine writes. */
        const jw_schema_table *runs = &jw_schema_tables[JW_TABLE_JOB_RUNS];
        json_t *copy = json_deep_copy(row);
        char *text;

        for (size_t k = 0; k < runs->nstore_columns; k++)
            json_object_del(copy, runs->store_columns[k].name);
        text = json_dumps(copy, JSON_COMPACT);
        json_decref(copy);
        jw_delta *d = jw_delta_new(j->id, j->id, j->seq, now_us(e), JW_TABLE_JOB_RUNS, JW_OP_UPDATE,
                                   text, strlen(text), NULL);

        free(text);
        if (d) {
            engine__view_put(j, d);
            jw_delta_unref(d);
        }
    }

    j->unit = -1;
    json_array_foreach(json_object_get(item, "steps"), i, v)
    {
        const jw_step_def *def =
            jw_step_def_find(jstr(v, STEP_COL(step_name)) ? jstr(v, STEP_COL(step_name)) : "");
        int st = parse_name(engine__step_names, STEP__N, jstr(v, STEP_COL(status)));
        step *s;
        char *text;
        jw_delta *d;

        if (!def || st < 0 || !jw_uuid_valid(jstr(v, STEP_COL(id)))) {
            snprintf(err, errlen, "job %s: unusable step row", j->id);
            return JW_EINVAL;
        }
        s = engine__new_step(j, def, jint(v, STEP_COL(transaction_index)));
        snprintf(s->id, sizeof(s->id), "%s", jstr(v, STEP_COL(id)));
        s->status = (step_status)st;
        s->attempt = jint(v, STEP_COL(attempt));
        s->created_at = engine__parse_ts(json_object_get(v, STEP_COL(created_at)));
        s->started_at = engine__parse_ts(json_object_get(v, STEP_COL(started_at)));
        s->completed_at = engine__parse_ts(json_object_get(v, STEP_COL(completed_at)));
        s->timeout_at = engine__parse_ts(json_object_get(v, STEP_COL(timeout_at)));
        s->next_retry_at = engine__parse_ts(json_object_get(v, STEP_COL(next_retry_at)));
        s->updated_at = engine__parse_ts(json_object_get(v, STEP_COL(updated_at)));
        if (!step_terminal(s) && s->status != STEP_PENDING)
            s->run_started_us = s->started_at; /* the histogram counts from there */
        if (json_is_object(json_object_get(v, STEP_COL(step_data)))) {
            json_decref(s->data);
            s->data = json_deep_copy(json_object_get(v, STEP_COL(step_data)));
        }
        if (jstr(v, STEP_COL(error_message)))
            s->error = jw_xstrdup(jstr(v, STEP_COL(error_message)));
        snprintf(s->key, sizeof(s->key), "%s",
                 jstr(v, STEP_COL(idempotency_key)) ? jstr(v, STEP_COL(idempotency_key)) : "");
        /* An external step that was running may have had its effect; one
         * that ended without a definite answer says so on its row. */
        s->outcome_unknown = def->external_effect && s->key[0] &&
                             (json_is_true(json_object_get(v, STEP_COL(outcome_unknown))) ||
                              (!step_terminal(s) && s->status != STEP_PENDING));
        if (!step_terminal(s) || s->status == STEP_FAILED || s->status == STEP_CANCELLED)
            if (j->unit < 0 || s->unit < j->unit)
                j->unit = s->unit;
        text = json_dumps(v, JSON_COMPACT);
        d = jw_delta_new(j->id, s->id, j->seq, now_us(e), JW_TABLE_JOB_STEPS, JW_OP_UPDATE, text,
                         strlen(text), NULL);
        free(text);
        if (d) {
            engine__view_put(j, d);
            jw_delta_unref(d);
        }
    }
    if (j->unit < 0) /* every step completed: the next unit, if any */
        j->unit = j->nsteps == 0 ? 0 : j->completed_tx + 1;
    if (j->unit > j->count)
        j->unit = j->count;

    json_array_foreach(json_object_get(item, "otp_requests"), i, v)
    {
        int st = parse_name(engine__otp_names, OTP__N, jstr(v, OTP_COL(status)));
        step *owner = NULL;
        otp *o;
        char *text;
        jw_delta *d;

        for (size_t k = 0; k < j->nsteps; k++)
            if (jstr(v, OTP_COL(job_step_id)) &&
                strcmp(j->steps[k]->id, jstr(v, OTP_COL(job_step_id))) == 0)
                owner = j->steps[k];
        if (!owner || st < 0 || !jw_uuid_valid(jstr(v, OTP_COL(id)))) {
            snprintf(err, errlen, "job %s: unusable otp row", j->id);
            return JW_EINVAL;
        }
        o = jw_xcalloc(1, sizeof(*o));
        o->job = j;
        o->step = owner;
        snprintf(o->id, sizeof(o->id), "%s", jstr(v, OTP_COL(id)));
        snprintf(o->type, sizeof(o->type), "%s",
                 jstr(v, OTP_COL(otp_type)) ? jstr(v, OTP_COL(otp_type)) : "");
        snprintf(o->phone, sizeof(o->phone), "%s",
                 jstr(v, OTP_COL(phone_number)) ? jstr(v, OTP_COL(phone_number)) : "");
        o->status = (otp_status)st;
        o->attempts = jint(v, OTP_COL(attempts_count));
        o->max_attempts = jint(v, OTP_COL(max_attempts));
        o->requested_at = engine__parse_ts(json_object_get(v, OTP_COL(requested_at)));
        o->received_at = engine__parse_ts(json_object_get(v, OTP_COL(received_at)));
        o->verified_at = engine__parse_ts(json_object_get(v, OTP_COL(verified_at)));
        o->timeout_at = engine__parse_ts(json_object_get(v, OTP_COL(timeout_at)));
        if (j->notps == j->capotps) {
            j->capotps = j->capotps ? j->capotps * 2 : 4;
            j->otps = jw_xrealloc(j->otps, j->capotps * sizeof(*j->otps));
        }
        j->otps[j->notps++] = o;
        jw_map_put(&e->otps, o->id, o);
        owner->otp = o; /* rows come in request order: the last one is current */
        text = json_dumps(v, JSON_COMPACT);
        d = jw_delta_new(j->id, o->id, j->seq, now_us(e), JW_TABLE_OTP_REQUESTS, JW_OP_UPDATE, text,
                         strlen(text), NULL);
        free(text);
        if (d) {
            engine__view_put(j, d);
            jw_delta_unref(d);
        }
    }

    engine__attach_sessions(j);
    /* Resume each unfinished step of the running unit. */
    for (i = 0; i < j->nsteps; i++) {
        step *s = j->steps[i];
        otp *o = s->otp;

        if (s->unit != j->unit || job_terminal(j))
            continue;
        switch (s->status) {
        case STEP_IN_PROGRESS:
            if (o && o->status == OTP_RECEIVED) {
                /* The typed code died with the process: ask for it again. */
                engine__otp_set(o, OTP_REQUESTED);
                engine__step_set(s, STEP_WAITING_OTP);
                jw_timers_arm(e->p.timers, &o->timer, o->timeout_at, engine__otp_timer_fired, o);
            } else {
                engine__start_call(s, NULL); /* same key: the provider answers from its record */
            }
            break;
        case STEP_WAITING_OTP:
            if (o && o->status == OTP_REQUESTED)
                jw_timers_arm(e->p.timers, &o->timer, o->timeout_at, engine__otp_timer_fired, o);
            else
                engine__step_attempt_failed(s, true, "lost its OTP request across a restart");
            break;
        case STEP_RETRYING:
            jw_timers_arm(e->p.timers, &s->timer, s->next_retry_at, engine__step_timer_fired, s);
            break;
        default: break;
        }
    }
    jw_log_info("engine: recovered job=%s status=%s seq=%" PRId64 " unit=%d", j->id,
                engine__job_names[j->status], j->seq, j->unit);
    engine__advance(j);
    return 0;
}

int jw_engine_recover(jw_engine *e, const json_t *loaded, char *err, size_t errlen)
{
    const json_t *item;
    size_t i;
    int n = 0;

    if (!json_is_array(loaded)) {
        snprintf(err, errlen, "recovery input is not an array");
        return JW_EINVAL;
    }
    json_array_foreach(loaded, i, item)
    {
        int rc = recover_job(e, item, err, errlen);

        if (rc != 0) {
            engine__flush(e);
            return rc;
        }
        n++;
    }
    engine__flush(e);
    return n;
}

int jw_engine_adopt(jw_engine *e, const json_t *claimed, json_t *later)
{
    const json_t *item;
    size_t i;
    int n = 0;

    json_array_foreach(claimed, i, item)
    {
        const char *id = jstr(json_object_get(item, "job"), RUN(id));
        job *old = id ? jw_map_get(&e->jobs, id) : NULL;
        char err[256];

        if (old && !old->halted) {
            /* Driven here already: the claim found it ownerless (cannot happen
             * while this node holds it, but nothing is driven twice). */
            jw_log_warn("takeover: job %s is already driven here; claim ignored", id);
            continue;
        }
        if (old && !engine__forgettable(old)) {
            json_array_append(later, (json_t *)item); /* its last batch is still out */
            continue;
        }
        if (old)
            engine__forget(old); /* stopped here before (its lease was lost): start afresh */
        if (recover_job(e, item, err, sizeof(err)) != 0) {
            jw_log_error("takeover: cannot resume job %s: %s", id ? id : "(no id)", err);
            continue;
        }
        e->stats.takeovers++;
        n++;
    }
    engine__flush(e);
    return n;
}
