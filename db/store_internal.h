/*
 * store_internal.h - what the files of the store (db/store.c, commit.c,
 * retention.c, store_read.c) share; nothing outside db/ includes it.
 *
 *  store.c      the db thread's loop, its FIFO of batches, answers, the public API
 *  commit.c     one group's transaction: connect and prepare, build, write, and
 *               after a lost connection, whether it committed
 *  retention.c  job_events pruning on the thread's second connection
 *  store_read.c jw_read requests, handed to the reader thread (reads.c)
 *
 * Threads: everything in struct jw_store below "belongs to the db thread"
 * is touched by the db thread only; stats under stats_lock; the mailboxes
 * from any thread. Every store__ function here runs on the db thread, except
 * store__commit_init/store__commit_release (start and free, before the thread
 * starts and after it has stopped).
 */
#ifndef JW_STORE_INTERNAL_H
#define JW_STORE_INTERNAL_H

#include "jw_store.h"
#include "reads.h"

#include "jw_buf.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the fenced advance raises when a job's lease moved to another node. */
#define JW_SQLSTATE_LEASE_LOST "23J01"

enum write_result {
    WRITE_OK,
    WRITE_REJECTED, /* PostgreSQL refused the data; retrying cannot help */
    WRITE_LOST,     /* connection or transient server trouble; outcome unknown */
};

struct jw_store {
    char *conninfo;
    int max_group;
    int backoff_min_ms, backoff_max_ms;

    int64_t retention_s; /* 0: retention off */
    int prune_batch;
    int64_t prune_interval_us;

    jw_mailbox inbox;  /* loop -> db thread */
    jw_mailbox done;   /* db thread -> loop; its wake is the caller's */
    jw_reader *reader; /* reads: a thread and a connection of their own (reads.c) */
    pthread_t thread;
    bool thread_started;
    atomic_bool stopping;
    _Atomic int64_t drain_deadline_us;

    pthread_mutex_t stats_lock;
    jw_store_stats stats;

    /* This node (jw_db_node_register); its heartbeat runs every ttl/3. */
    char *node_id;
    int64_t incarnation;       /* 0: no heartbeat (tests) */
    char incarnation_text[24]; /* the same, as the fence's parameter */
    void (*wake)(void *arg);
    void *wake_arg;
    int64_t node_ttl_us;
    _Atomic int64_t heartbeat_sent_us; /* monotonic send time of the last good one */
    atomic_bool node_dead;             /* a heartbeat found this node declared dead */
    atomic_bool node_replaced;         /* ... because a newer process took its id */
    atomic_bool peer_news;             /* jw_store_peer_joined: another node listens now */

    /* Everything below belongs to the db thread. */
    PGconn *conn;
    jw_mailbox_node *pending_head, *pending_tail;
    size_t pending_count;
    size_t unknown_batches; /* the front group whose commit outcome is unknown */
    size_t split_left;      /* batches of a rejected group still to sort out */
    size_t split_chunk;     /* how many of them the next transaction tries */
    int backoff_ms;
    int64_t unknown_since_us; /* when the unknown group's write began (commit_us) */
    int64_t group_cts;        /* the commit stamp of the group last written (wall clock) */
    bool lease_lost;          /* the last rejected write was refused for a lost lease */
    int64_t next_beat_us;     /* monotonic */
    /*
     * Whether another node may be listening (commit.c, "Alone"): the last
     * heartbeat saw one, or one announced itself since. True until a
     * heartbeat says otherwise. announced: no commit went without its
     * NOTIFY since the other nodes were last told to catch up. Skipped while
     * alone, or lost with a connection, clears it; an announcement sets it. A
     * NOTIFY that PostgreSQL refused is left to the nodes' catch-up.
     */
    bool peers, announced;
    int64_t next_peers_us; /* monotonic: while alone, the next look for a peer */
    jw_buf rows[JW_TABLE__COUNT];
    jw_buf ev_job, ev_seq, ev_ts, ev_table, ev_op, ev_rows; /* binary arrays (commit.c) */
    size_t ev_count;                                        /* the deltas in them */
    jw_buf adv_job, adv_epoch, adv_lo, adv_hi, adv_n;       /* binary arrays, one per job */
    jw_buf notify;       /* the group's jw_events payloads, a text[] literal */
    size_t notify_count; /* how many payloads it holds */
    /* Open-addressing scratch tables, sized per group. */
    const jw_delta **seen;
    size_t seen_cap;
    struct job_range {
        const char *job_id;
        int64_t first, last, n, epoch;
    } * jobs;
    size_t jobs_cap;
    /* Retention: its own connection, and the round under way (see prune_poll). */
    struct prune {
        PGconn *conn;                 /* NULL until a round needs it */
        bool busy;                    /* a statement is in flight on conn */
        bool deleting;                /* ... and it is a delete (else a walk) */
        size_t next_pos;              /* where the list stands once that delete commits */
        int64_t part_upto;            /* ... and, if it took part of a job, up to which seq */
        bool active;                  /* a round is under way */
        bool walk_done;               /* its walk reached the last job id */
        int64_t next_us;              /* when the next round starts (monotonic) */
        char cursor[JW_UUID_LEN + 1]; /* the walk goes on from this job id */
        struct prune_job {
            char id[JW_UUID_LEN + 1];
            int64_t lo, hi; /* its events still to delete, seq lo..hi */
        } * jobs;           /* found by the walk, deleted in order */
        size_t njobs, pos, cap;
        uint64_t round_events, round_runs, round_batches; /* for the round's log line */
        int64_t round_started_us;
    } prune;
};

/* ---- store.c ------------------------------------------------------------ */

/* Records a connection or database error for the stats, on one line. */
void store__set_error(jw_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- commit.c ----------------------------------------------------------- */

/* The group buffers: set up by jw_store_start, released by jw_store_free. */
void store__commit_init(jw_store *s);
void store__commit_release(jw_store *s);
/* Connects the main connection and prepares its statements; false (logged,
 * in the stats) when it cannot. */
bool store__connect(jw_store *s);
/* Closes the main connection and starts counting an outage. */
void store__disconnect(jw_store *s);
/* Writes the first count batches of the FIFO as one transaction. */
enum write_result store__write_group(jw_store *s, size_t count, char *err, size_t errlen);
/* After a group of store__write_group committed and was answered: its NOTIFY (commit.c). */
void store__notify_group(jw_store *s);
/* A group found committed after a lost connection: it notified nobody (commit.c). */
void store__group_unnotified(jw_store *s);
void store__check_peers(jw_store *s);
/* After a lost connection: 1 the front group committed, 0 it did not, -1 unknown. */
int store__group_committed(jw_store *s, size_t count);
/* Renews this node's heartbeat row: 1 renewed, 0 this node was declared dead,
 * -1 unknown (connection trouble). */
int store__heartbeat(jw_store *s);
/* After a heartbeat that renewed nothing: the incarnation of the live process
 * that registered under this node's id since (a newer start), or 0 when the
 * row is marked dead (declared dead by another node) or could not be read. */
int64_t store__node_successor(jw_store *s);
/* "primary message (detail) [SQLSTATE x]" of a failed result. */
void store__describe_error(const PGresult *res, char *err, size_t errlen);
/* Array literals for parameters: {a,b,c}, items already safe tokens. */
void store__add_array_item(jw_buf *b, const char *item, size_t len);
void store__close_array(jw_buf *b);

/* ---- retention.c -------------------------------------------------------- */

/* Moves retention along without waiting; every turn of the db thread's loop. */
void store__prune_poll(jw_store *s);
/* Closes the retention connection; a statement in flight rolls back. */
void store__prune_disconnect(jw_store *s);
/* How long the idle db thread may sleep without leaving retention waiting. */
int store__idle_wait_ms(const jw_store *s);

#endif
