#include "jw_delta.h"

#include "jw_error.h"
#include "jw_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const table_names[JW_TABLE__COUNT] = {
    [JW_TABLE_JOB_RUNS] = "job_runs",
    [JW_TABLE_JOB_STEPS] = "job_steps",
    [JW_TABLE_OTP_REQUESTS] = "otp_requests",
    [JW_TABLE_AUTH_SESSIONS] = "auth_sessions",
};

const char *jw_table_name(jw_table t)
{
    return (unsigned)t < JW_TABLE__COUNT ? table_names[t] : "?";
}

int jw_table_from_name(const char *name)
{
    for (int i = 0; i < JW_TABLE__COUNT; i++)
        if (name && strcmp(name, table_names[i]) == 0)
            return i;
    return -1;
}

const char *jw_op_name(jw_op op)
{
    return op == JW_OP_INSERT ? "INSERT" : "UPDATE";
}

static jw_delta *fail(int *err, int code)
{
    if (err)
        *err = code;
    return NULL;
}

jw_delta *jw_delta_new(const char *job_id, const char *row_id, int64_t seq, int64_t ts_us,
                       jw_table table, jw_op op, const char *row, size_t row_len, int *err)
{
    jw_delta *d;

    if ((unsigned)table >= JW_TABLE__COUNT || (op != JW_OP_INSERT && op != JW_OP_UPDATE) ||
        seq < 0 || !row || !jw_uuid_valid(row_id))
        return fail(err, JW_EINVAL);
    /* Journaled deltas belong to a job; quiet writes may not. */
    if (seq > 0 ? !jw_uuid_valid(job_id) : (job_id && *job_id && !jw_uuid_valid(job_id)))
        return fail(err, JW_EINVAL);
    if (row_len > JW_DELTA_MAX_ROW)
        return fail(err, JW_ETOOBIG);

    d = jw_xmalloc(sizeof(*d));
    atomic_init(&d->refs, 1);
    snprintf(d->job_id, sizeof(d->job_id), "%s", job_id ? job_id : "");
    snprintf(d->row_id, sizeof(d->row_id), "%s", row_id);
    d->seq = seq;
    d->ts_us = ts_us;
    d->commit_us = 0;
    d->table = table;
    d->op = op;
    d->row_len = row_len;
    d->row = jw_xmalloc(row_len + 1);
    memcpy(d->row, row, row_len);
    d->row[row_len] = '\0';
    if (err)
        *err = 0;
    return d;
}

jw_delta *jw_delta_ref(jw_delta *d)
{
    atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
    return d;
}

void jw_delta_unref(jw_delta *d)
{
    if (!d)
        return;
    if (atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) == 1) {
        free(d->row);
        free(d);
    }
}

void jw_delta_encode(const jw_delta *d, jw_buf *out)
{
    jw_buf_addf(out, "{\"type\":\"delta\",\"job_id\":\"%s\",\"seq\":%" PRId64 ",\"ts\":%" PRId64,
                d->job_id, d->seq, d->ts_us);
    if (d->commit_us)
        jw_buf_addf(out, ",\"cts\":%" PRId64, d->commit_us);
    jw_buf_addf(out, ",\"table\":\"%s\",\"op\":\"%s\",\"row\":", jw_table_name(d->table),
                jw_op_name(d->op));
    jw_buf_add(out, d->row, d->row_len);
    jw_buf_addch(out, '}');
}

jw_batch *jw_batch_new(void)
{
    return jw_xcalloc(1, sizeof(jw_batch));
}

void jw_batch_add(jw_batch *b, jw_delta *d)
{
    if (b->count == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 8;
        b->deltas = jw_xrealloc(b->deltas, b->cap * sizeof(*b->deltas));
    }
    b->deltas[b->count++] = d;
}

void jw_batch_free(jw_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->count; i++)
        jw_delta_unref(b->deltas[i]);
    free(b->deltas);
    free(b->error);
    free(b);
}
