/*
 * rows.c - the rows the engine's deltas carry (job_runs, job_steps,
 * otp_requests as the store writes them), the committed view of each job built
 * from them, and what callers read: snapshots and small look-ups.
 *
 * Loop thread only. A snapshot is the caller's; everything else is borrowed.
 * A row is written straight as JSON text (jw_row_writer), in the engine's
 * scratch buffer, and engine__emit copies it into its delta at once.
 */
#include "engine_internal.h"

#include "jw_schema.h"

#include "jw_log.h"
#include "jw_util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Starts a row of table t in the engine's scratch buffer. */
static jw_buf *row_begin(jw_engine *e, jw_row_writer *w, jw_table t)
{
    jw_buf_reset(&e->row);
    jw_row_begin(w, &jw_schema_tables[t], &e->row);
    return &e->row;
}

const jw_buf *engine__job_row(const job *j)
{
    jw_row_writer w;
    jw_buf *b = row_begin(j->e, &w, JW_TABLE_JOB_RUNS);

    jw_row_str(&w, JW_JOB_RUNS_id, j->id);
    jw_row_str(&w, JW_JOB_RUNS_user_id, j->user);
    jw_row_str(&w, JW_JOB_RUNS_job_type, "payment_automation");
    jw_row_str(&w, JW_JOB_RUNS_status, engine__job_names[j->status]);
    jw_row_str_or_null(&w, JW_JOB_RUNS_current_phase, j->phase);
    jw_row_int(&w, JW_JOB_RUNS_progress_percentage, j->progress);
    jw_row_int(&w, JW_JOB_RUNS_total_transactions, j->count);
    jw_row_int(&w, JW_JOB_RUNS_completed_transactions, j->completed_tx);
    jw_row_int(&w, JW_JOB_RUNS_transaction_amount, j->amount);
    jw_row_int(&w, JW_JOB_RUNS_transaction_count, j->count);
    jw_row_ts(&w, JW_JOB_RUNS_created_at, j->created_at);
    jw_row_ts(&w, JW_JOB_RUNS_updated_at, j->updated_at);
    jw_row_ts(&w, JW_JOB_RUNS_completed_at, j->completed_at);
    jw_row_str_or_null(&w, JW_JOB_RUNS_error_message, j->error);
    jw_row_int(&w, JW_JOB_RUNS_retry_count, j->retry_count);
    jw_row_json(&w, JW_JOB_RUNS_metadata, j->metadata);
    jw_row_bool(&w, JW_JOB_RUNS_cancel_requested, j->cancel_requested);
    jw_row_end(&w);
    return b;
}

const jw_buf *engine__step_row(const step *s)
{
    jw_row_writer w;
    jw_buf *b = row_begin(s->job->e, &w, JW_TABLE_JOB_STEPS);

    jw_row_str(&w, JW_JOB_STEPS_id, s->id);
    jw_row_str(&w, JW_JOB_STEPS_job_run_id, s->job->id);
    jw_row_str(&w, JW_JOB_STEPS_step_name, s->def->name);
    jw_row_str(&w, JW_JOB_STEPS_step_type, s->def->type);
    jw_row_str(&w, JW_JOB_STEPS_status, engine__step_names[s->status]);
    if (s->unit)
        jw_row_int(&w, JW_JOB_STEPS_transaction_index, s->unit);
    else
        jw_row_null(&w, JW_JOB_STEPS_transaction_index);
    jw_row_ts(&w, JW_JOB_STEPS_started_at, s->started_at);
    jw_row_ts(&w, JW_JOB_STEPS_completed_at, s->completed_at);
    jw_row_ts(&w, JW_JOB_STEPS_timeout_at, s->timeout_at);
    jw_row_json(&w, JW_JOB_STEPS_step_data, s->data);
    jw_row_str_or_null(&w, JW_JOB_STEPS_error_message, s->error);
    jw_row_ts(&w, JW_JOB_STEPS_created_at, s->created_at);
    jw_row_int(&w, JW_JOB_STEPS_attempt, s->attempt);
    jw_row_str_or_null(&w, JW_JOB_STEPS_idempotency_key, s->key);
    jw_row_ts(&w, JW_JOB_STEPS_next_retry_at, s->next_retry_at);
    jw_row_ts(&w, JW_JOB_STEPS_updated_at, s->updated_at);
    jw_row_bool(&w, JW_JOB_STEPS_outcome_unknown, s->outcome_unknown);
    jw_row_end(&w);
    return b;
}

const jw_buf *engine__otp_row(const otp *o)
{
    jw_row_writer w;
    jw_buf *b = row_begin(o->job->e, &w, JW_TABLE_OTP_REQUESTS);

    jw_row_str(&w, JW_OTP_REQUESTS_id, o->id);
    jw_row_str(&w, JW_OTP_REQUESTS_job_run_id, o->job->id);
    jw_row_str(&w, JW_OTP_REQUESTS_job_step_id, o->step->id);
    jw_row_str(&w, JW_OTP_REQUESTS_otp_type, o->type);
    jw_row_str_or_null(&w, JW_OTP_REQUESTS_phone_number, o->phone);
    jw_row_ts(&w, JW_OTP_REQUESTS_requested_at, o->requested_at);
    jw_row_ts(&w, JW_OTP_REQUESTS_received_at, o->received_at);
    jw_row_ts(&w, JW_OTP_REQUESTS_verified_at, o->verified_at);
    jw_row_ts(&w, JW_OTP_REQUESTS_timeout_at, o->timeout_at);
    jw_row_int(&w, JW_OTP_REQUESTS_attempts_count, o->attempts);
    jw_row_int(&w, JW_OTP_REQUESTS_max_attempts, o->max_attempts);
    jw_row_str(&w, JW_OTP_REQUESTS_status, engine__otp_names[o->status]);
    jw_row_end(&w);
    return b;
}

void engine__view_put(job *j, jw_delta *d)
{
    for (size_t i = 0; i < j->nview; i++) {
        if (j->view[i].table == d->table && strcmp(j->view[i].d->row_id, d->row_id) == 0) {
            jw_delta_unref(j->view[i].d);
            j->view[i].d = jw_delta_ref(d);
            return;
        }
    }
    if (j->nview == j->capview) {
        j->capview = j->capview ? j->capview * 2 : 16;
        j->view = jw_xrealloc(j->view, j->capview * sizeof(*j->view));
    }
    j->view[j->nview].table = d->table;
    j->view[j->nview].d = jw_delta_ref(d);
    j->nview++;
}

/* ---- reading ------------------------------------------------------------------- */

json_t *jw_engine_snapshot(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;
    json_t *snap, *steps, *otps, *jobrow = NULL;

    if (!j || !j->committed_seq)
        return NULL;
    steps = json_array();
    otps = json_array();
    for (size_t i = 0; i < j->nview; i++) {
        json_t *row = json_loads(j->view[i].d->row, 0, NULL);

        if (!row)
            continue;
        if (j->view[i].table == JW_TABLE_JOB_RUNS)
            jobrow = row;
        else
            json_array_append_new(j->view[i].table == JW_TABLE_JOB_STEPS ? steps : otps, row);
    }
    snap = json_pack("{s:o?, s:o, s:o, s:I}", "job", jobrow, "steps", steps, "otp_requests", otps,
                     "seq", (json_int_t)j->committed_seq);
    return snap;
}

const char *jw_engine_job_owner(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && j->committed_seq ? j->user : NULL;
}

const char *jw_engine_step_otp(jw_engine *e, const char *job_id, const char *step_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    for (size_t i = 0; j && step_id && i < j->notps; i++)
        if (strcmp(j->otps[j->notps - 1 - i]->step->id, step_id) == 0)
            return j->otps[j->notps - 1 - i]->id;
    return NULL;
}

int64_t jw_engine_committed_seq(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && j->committed_seq ? j->committed_seq : -1;
}

bool jw_engine_has_job(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && j->committed_seq;
}

bool jw_engine_job_driven(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && !j->halted;
}

int64_t jw_engine_job_lease_epoch(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && !j->halted ? j->lease_epoch : -1;
}

bool jw_engine_job_retryable(jw_engine *e, const char *job_id)
{
    job *j = job_id ? jw_map_get(&e->jobs, job_id) : NULL;

    return j && j->committed_seq && j->status == JOB_FAILED && !j->halted;
}

const char *jw_engine_otp_job(jw_engine *e, const char *otp_request_id)
{
    otp *o = otp_request_id ? jw_map_get(&e->otps, otp_request_id) : NULL;

    return o ? o->job->id : NULL;
}

void jw_engine_get_stats(jw_engine *e, jw_engine_stats *out)
{
    *out = e->stats;
    out->jobs_in_memory = e->jobs.count;
}

const jw_engine_hists *jw_engine_get_hists(jw_engine *e)
{
    return &e->hists;
}

/* PostgreSQL's timestamptz JSON: 2026-11-26T10:00:00.123456+00:00 (or Z). */
int64_t engine__parse_ts(const json_t *v)
{
    const char *s = json_string_value(v);
    struct tm tm = {0};
    int64_t us = 0, off = 0;
    const char *p;
    int n = 0;

    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    p = s + n;
    if (*p == '.') {
        int digits = 0;

        for (p++; isdigit((unsigned char)*p); p++, digits++)
            if (digits < 6)
                us = us * 10 + (*p - '0');
        for (; digits < 6; digits++)
            us *= 10;
    }
    if (*p == '+' || *p == '-') {
        int hh = 0, mm = 0;

        sscanf(p + 1, "%2d:%2d", &hh, &mm);
        off = (int64_t)(hh * 3600 + mm * 60) * (*p == '-' ? -1 : 1);
    }
    return ((int64_t)timegm(&tm) - off) * 1000000 + us;
}
