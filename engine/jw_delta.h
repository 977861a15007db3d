/*
 * jw_delta.h - the unit of change: one row of one table after one change.
 *
 * Durability rule 1 (DESIGN.md): every state change of a job is a delta
 * {job_id, seq, ts, table, op, row}; seq is per job, starts at 1 and grows by
 * exactly 1; row is the full row after the change, as a JSON object.
 *
 * A delta with seq == 0 is a "quiet" row write: it is stored like any other
 * (used for auth_sessions, which belong to a user, not a job) but is neither
 * journaled in job_events nor published.
 *
 * Deltas are immutable once built and reference counted (atomically), so one
 * encoded delta is shared by the store, the per-job ring and every
 * subscriber's queue without copies.
 *
 * A batch is the set of deltas the engine wants committed together. It travels
 * loop -> db thread -> loop through the store's mailboxes; whoever holds it
 * owns it, and nobody touches a batch while another thread owns it.
 */
#ifndef JW_DELTA_H
#define JW_DELTA_H

#include "jw_buf.h"
#include "jw_mailbox.h"
#include "jw_util.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef enum jw_table {
    JW_TABLE_JOB_RUNS,
    JW_TABLE_JOB_STEPS,
    JW_TABLE_OTP_REQUESTS,
    JW_TABLE_AUTH_SESSIONS,
    JW_TABLE__COUNT
} jw_table;

typedef enum jw_op {
    JW_OP_INSERT,
    JW_OP_UPDATE,
} jw_op;

typedef struct jw_delta {
    atomic_int refs;
    char job_id[JW_UUID_LEN + 1]; /* "" for a quiet write without a job */
    char row_id[JW_UUID_LEN + 1]; /* the row's primary key */
    int64_t seq;                  /* 0: quiet write, see above */
    int64_t ts_us;                /* wall clock at the change */
    /*
     * Its group commit's stamp (the store's wall clock as the transaction was
     * sent, journaled with it as job_events.cts); 0 until it committed. The
     * one field written after the delta is built: once, by the engine on the
     * loop thread, between the store's answer and publishing, when no other
     * thread holds the delta - or by whoever rebuilds it from the journal.
     */
    int64_t commit_us;
    jw_table table;
    jw_op op;
    size_t row_len;
    char *row; /* JSON object text, NUL-terminated, owned */
} jw_delta;

/*
 * Builds a delta holding a copy of row. Returns NULL (and sets *err when err
 * is not NULL) for an invalid id, a negative seq, or a row larger than
 * JW_DELTA_MAX_ROW: those are the sizes and forms a peer could influence.
 */
#define JW_DELTA_MAX_ROW (256 * 1024)
jw_delta *jw_delta_new(const char *job_id, const char *row_id, int64_t seq, int64_t ts_us,
                       jw_table table, jw_op op, const char *row, size_t row_len, int *err);
jw_delta *jw_delta_ref(jw_delta *d);
/* NULL-safe. */
void jw_delta_unref(jw_delta *d);

/*
 * Appends d's jobwire.v1 text (docs/protocol.md) to out:
 *   {"type":"delta","job_id":"…","seq":N,"ts":N,"cts":N,"table":"…","op":"…","row":{…}}
 * "cts" only when commit_us is set; the row as it is, byte for byte. This is the
 * one encoder of deltas on the wire: one sent as it commits and the same change
 * replayed from the journal are the same bytes.
 */
void jw_delta_encode(const jw_delta *d, jw_buf *out);

const char *jw_table_name(jw_table t);
/* Returns the table or -1. */
int jw_table_from_name(const char *name);
const char *jw_op_name(jw_op op);

typedef struct jw_batch {
    jw_mailbox_node node; /* owned by whichever mailbox holds the batch */
    jw_delta **deltas;
    size_t count, cap;
    /*
     * The lease epoch under which the submitter drives the batch's job: the
     * store commits the batch only while its node holds the job's lease at
     * this epoch (db/migrations/004_node_leases.sql), else answers it
     * JW_ECONFLICT ("lease lost").
     */
    int64_t lease_epoch;
    int status;           /* after commit: 0 or a JW_E* code */
    char *error;          /* after a failure: what PostgreSQL or the store said */
    int64_t queued_us;    /* monotonic, set by the store on submit */
    int64_t done_us;      /* monotonic, set by the store when it answers */
    int64_t committed_us; /* the group's commit stamp (job_events.cts), set with a success
                             answer; else 0 */
    void *user;           /* the submitter's cookie, untouched by the store */
} jw_batch;

jw_batch *jw_batch_new(void);
/* Appends d, taking over the caller's reference. */
void jw_batch_add(jw_batch *b, jw_delta *d);
/* Drops the batch's references; NULL-safe. */
void jw_batch_free(jw_batch *b);

#endif
