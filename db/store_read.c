/*
 * store_read.c - read requests (jw_read): made and freed here, answered in
 * order by the reader thread and its own connection (reads.c); and the rows
 * of a journal read turned back into the deltas they were. See jw_store.h
 * ("Reads").
 *
 * Threads: any thread may make, queue, cancel and drain reads (normally the
 * loop); the reader thread owns a read from submit until it posts the answer.
 */
#include "store_internal.h"

#include "jw_error.h"
#include "jw_log.h"

#include <stdlib.h>
#include <string.h>

jw_read *jw_read_new(jw_read_kind kind, int nparams, const char *const *params)
{
    jw_read *r;

    if ((unsigned)kind >= JW_READ__COUNT || nparams < 0 || nparams > JW_READ_MAX_PARAMS)
        return NULL;
    r = jw_xcalloc(1, sizeof(*r));
    r->kind = kind;
    r->nparams = nparams;
    for (int i = 0; i < nparams; i++)
        r->params[i] = params[i] ? jw_xstrdup(params[i]) : NULL;
    return r;
}

void jw_read_free(jw_read *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nparams; i++)
        free(r->params[i]);
    free(r->result);
    free(r->error);
    free(r);
}

void jw_read_cancel(jw_read *r)
{
    if (r)
        atomic_store(&r->cancelled, true);
}

int jw_store_read(jw_store *s, jw_read *r)
{
    return jw_reader_submit(s->reader, r);
}

size_t jw_store_drain_reads(jw_store *s, jw_store_read_fn fn, void *arg)
{
    return jw_reader_drain(s->reader, fn, arg);
}

void jw_store_free_deltas(jw_delta **ds, size_t n)
{
    for (size_t i = 0; ds && i < n; i++)
        jw_delta_unref(ds[i]);
    free(ds);
}

/* One journal row of a JW_READ_EVENTS answer as the delta it was. */
static jw_delta *event_delta(const char *job_id, json_t *ev)
{
    json_int_t seq, ts;
    json_t *cts = NULL;
    const char *table, *op, *row_id, *row;
    size_t row_len;
    int t;
    jw_delta *d;

    if (json_unpack(ev, "{s:I, s:I, s?o, s:s, s:s, s:s, s:s%}", "seq", &seq, "ts", &ts, "cts", &cts,
                    "table", &table, "op", &op, "row_id", &row_id, "row", &row, &row_len) != 0 ||
        (t = jw_table_from_name(table)) < 0 || (cts && !json_is_null(cts) && !json_is_integer(cts)))
        return NULL;
    if (!job_id) { /* several jobs' rows: each names its job */
        job_id = json_string_value(json_object_get(ev, "job"));
        if (!job_id || strlen(job_id) != JW_UUID_LEN)
            return NULL;
    }
    if (strcmp(op, jw_op_name(JW_OP_INSERT)) != 0 && strcmp(op, jw_op_name(JW_OP_UPDATE)) != 0)
        return NULL;
    d = jw_delta_new(job_id, row_id, seq, ts, (jw_table)t,
                     strcmp(op, jw_op_name(JW_OP_INSERT)) == 0 ? JW_OP_INSERT : JW_OP_UPDATE, row,
                     row_len, NULL);
    if (d && json_is_integer(cts))
        d->commit_us = json_integer_value(cts);
    return d;
}

int jw_store_read_deltas(const jw_read *r, jw_delta ***out, size_t *n)
{
    json_t *rows = NULL, *ev;
    jw_delta **ds = NULL;
    size_t i, count = 0;
    int rc = JW_EINVAL;

    *out = NULL;
    *n = 0;
    if ((r->kind != JW_READ_EVENTS && r->kind != JW_READ_EVENTS_AFTER) || r->status != 0 ||
        !r->result || r->nparams < 1)
        return JW_EINVAL;
    rows = json_loads(r->result, 0, NULL);
    if (!json_is_array(rows))
        goto out;
    ds = jw_xcalloc(json_array_size(rows) + 1, sizeof(*ds));
    json_array_foreach(rows, i, ev)
    {
        if (!(ds[count] = event_delta(r->kind == JW_READ_EVENTS ? r->params[0] : NULL, ev)))
            goto out;
        count++;
    }
    *out = ds;
    *n = count;
    ds = NULL;
    rc = 0;
out:
    jw_store_free_deltas(ds, count);
    json_decref(rows);
    return rc;
}
