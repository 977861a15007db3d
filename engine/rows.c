/*
 * rows.c - the rows the engine's deltas carry (job_runs, job_steps,
 * otp_requests as the store writes them), the committed view of each job built
 * from them, and what callers read: snapshots and small look-ups.
 *
 * Loop thread only. A snapshot is the caller's; everything else is borrowed.
 * A row lives only until engine__emit has encoded it, so it holds references
 * to the job's JSON values (metadata, step_data) instead of copies.
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

json_t *engine__ts_json(int64_t us)
{
    char buf[40];

    if (!us)
        return json_null();
    jw_format_ts(us, buf, sizeof(buf));
    return json_string(buf);
}

json_t *engine__str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

json_t *engine__job_row(const job *j)
{
    json_t *v[JW_JOB_RUNS__N] = {
        [JW_JOB_RUNS_id] = json_string(j->id),
        [JW_JOB_RUNS_user_id] = json_string(j->user),
        [JW_JOB_RUNS_job_type] = json_string("payment_automation"),
        [JW_JOB_RUNS_status] = json_string(engine__job_names[j->status]),
        [JW_JOB_RUNS_current_phase] = engine__str_or_null(j->phase),
        [JW_JOB_RUNS_progress_percentage] = json_integer(j->progress),
        [JW_JOB_RUNS_total_transactions] = json_integer(j->count),
        [JW_JOB_RUNS_completed_transactions] = json_integer(j->completed_tx),
        [JW_JOB_RUNS_transaction_amount] = json_integer(j->amount),
        [JW_JOB_RUNS_transaction_count] = json_integer(j->count),
        [JW_JOB_RUNS_created_at] = engine__ts_json(j->created_at),
        [JW_JOB_RUNS_updated_at] = engine__ts_json(j->updated_at),
        [JW_JOB_RUNS_completed_at] = engine__ts_json(j->completed_at),
        [JW_JOB_RUNS_error_message] = engine__str_or_null(j->error),
        [JW_JOB_RUNS_retry_count] = json_integer(j->retry_count),
        [JW_JOB_RUNS_metadata] = json_incref(j->metadata),
        [JW_JOB_RUNS_cancel_requested] = json_boolean(j->cancel_requested),
    };

    return jw_schema_row(&jw_schema_tables[JW_TABLE_JOB_RUNS], v);
}

json_t *engine__step_row(const step *s)
{
    json_t *v[JW_JOB_STEPS__N] = {
        [JW_JOB_STEPS_id] = json_string(s->id),
        [JW_JOB_STEPS_job_run_id] = json_string(s->job->id),
        [JW_JOB_STEPS_step_name] = json_string(s->def->name),
        [JW_JOB_STEPS_step_type] = json_string(s->def->type),
        [JW_JOB_STEPS_status] = json_string(engine__step_names[s->status]),
        [JW_JOB_STEPS_transaction_index] = s->unit ? json_integer(s->unit) : json_null(),
        [JW_JOB_STEPS_started_at] = engine__ts_json(s->started_at),
        [JW_JOB_STEPS_completed_at] = engine__ts_json(s->completed_at),
        [JW_JOB_STEPS_timeout_at] = engine__ts_json(s->timeout_at),
        [JW_JOB_STEPS_step_data] = json_incref(s->data),
        [JW_JOB_STEPS_error_message] = engine__str_or_null(s->error),
        [JW_JOB_STEPS_created_at] = engine__ts_json(s->created_at),
        [JW_JOB_STEPS_attempt] = json_integer(s->attempt),
        [JW_JOB_STEPS_idempotency_key] = engine__str_or_null(s->key),
        [JW_JOB_STEPS_next_retry_at] = engine__ts_json(s->next_retry_at),
        [JW_JOB_STEPS_updated_at] = engine__ts_json(s->updated_at),
        [JW_JOB_STEPS_outcome_unknown] = json_boolean(s->outcome_unknown),
    };

    return jw_schema_row(&jw_schema_tables[JW_TABLE_JOB_STEPS], v);
}

json_t *engine__otp_row(const otp *o)
{
    json_t *v[JW_OTP_REQUESTS__N] = {
        [JW_OTP_REQUESTS_id] = json_string(o->id),
        [JW_OTP_REQUESTS_job_run_id] = json_string(o->job->id),
        [JW_OTP_REQUESTS_job_step_id] = json_string(o->step->id),
        [JW_OTP_REQUESTS_otp_type] = json_string(o->type),
        [JW_OTP_REQUESTS_phone_number] = engine__str_or_null(o->phone),
        [JW_OTP_REQUESTS_requested_at] = engine__ts_json(o->requested_at),
        [JW_OTP_REQUESTS_received_at] = engine__ts_json(o->received_at),
        [JW_OTP_REQUESTS_verified_at] = engine__ts_json(o->verified_at),
        [JW_OTP_REQUESTS_timeout_at] = engine__ts_json(o->timeout_at),
        [JW_OTP_REQUESTS_attempts_count] = json_integer(o->attempts),
        [JW_OTP_REQUESTS_max_attempts] = json_integer(o->max_attempts),
        [JW_OTP_REQUESTS_status] = json_string(engine__otp_names[o->status]),
    };

    return jw_schema_row(&jw_schema_tables[JW_TABLE_OTP_REQUESTS], v);
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
