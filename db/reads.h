/*
 * reads.h - the store's read thread (internal to db/; callers use jw_store_read).
 *
 * One thread and one PostgreSQL connection that answer jw_read requests in
 * the order they were submitted, apart from the commit connection, so group
 * commits never wait behind reads. At most max_queued reads are submitted
 * and not yet answered at once: past it, submit refuses (JW_ELIMIT). A read
 * whose jw_read_cancel was called before its turn is answered JW_ECANCELED
 * without a query.
 *
 * Threads: start/stop/free from the controlling thread; submit, queued and
 * drain from any (normally the loop); wake is called from the read thread
 * after each answer is posted.
 */
#ifndef JW_READS_H
#define JW_READS_H

#include "jw_store.h"

#include <stddef.h>

typedef struct jw_reader jw_reader;

/* NULL when the thread cannot be started. */
jw_reader *jw_reader_start(const char *conninfo, size_t max_queued, void (*wake)(void *arg),
                           void *wake_arg);
/* 0, JW_ELIMIT (max_queued reached) or JW_ECLOSED (stopped): the caller keeps r. */
int jw_reader_submit(jw_reader *rd, jw_read *r);
size_t jw_reader_queued(jw_reader *rd);
size_t jw_reader_drain(jw_reader *rd, jw_store_read_fn fn, void *arg);
/* Answers what is still queued with JW_ECLOSED and joins the thread. */
void jw_reader_stop(jw_reader *rd);
/* Stops first; frees answers not drained. NULL-safe. */
void jw_reader_free(jw_reader *rd);

#endif
