/*
 * store_read.c - read requests (jw_read): made and freed here, answered in
 * order by the reader thread and its own connection (reads.c). See
 * jw_store.h ("Reads").
 *
 * Threads: any thread may make, queue, cancel and drain reads (normally the
 * loop); the reader thread owns a read from submit until it posts the answer.
 */
#include "store_internal.h"

#include "jw_log.h"

#include <stdlib.h>

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
