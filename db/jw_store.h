/*
 * jw_store.h - jobwire's durable store: PostgreSQL through libpq, on the db
 * thread.
 *
 * The loop thread submits batches of deltas (engine/jw_delta.h). The db thread
 * takes every batch queued since its last commit, up to max_group_deltas, and
 * writes them in ONE transaction (group commit): per table one upsert of the
 * latest row of each id, one insert of all deltas into job_events, and one
 * call that advances each job's last_seq and refuses gaps - all pipelined in
 * one round trip. When it commits, every batch of the group is posted back
 * with status 0, in submission order, and the wake callback runs. The group
 * is stamped with the wall clock as it is sent: each journaled delta keeps
 * the stamp (job_events.cts), and the batches are answered with it
 * (committed_us), so a delta's cts is the same live and replayed.
 *
 * Failures:
 *  - PostgreSQL unreachable or the connection lost: nothing is dropped. The
 *    group in flight and everything queued behind it wait, in order, while the
 *    thread reconnects with capped exponential backoff. A group whose COMMIT
 *    outcome is unknown is checked against job_events after reconnecting, so
 *    it is never written twice.
 *  - PostgreSQL rejects the group (constraint violation, bad value): each of
 *    its batches is retried alone, so only the offending batches fail; each is
 *    posted back with status JW_EDB and PostgreSQL's message in ->error. A
 *    rejected batch is never retried again.
 *
 * Each committed group also notifies jw_events (one NOTIFY per group, in a
 * transaction of its own once the group committed; more only past 7,900
 * bytes): "<node id> LF <job>:<after>:<last> ..." - which jobs advanced to
 * which seq, for the other nodes' fan-out (db/commit.c, server/mirror.h).
 * Counted in stats.notifications (failed sends: notifications_failed). A
 * node alone on its database sends none (db/commit.c, "Alone"; counted in
 * notifications_skipped): its heartbeat, and while alone a look every
 * second, tell it whether another node is live, and jw_store_peer_joined
 * that one has just started listening.
 *
 * Nodes and leases (db/migrations/004_node_leases.sql): the store commits as
 * node node_id. Every group is fenced: a batch advances its job only while
 * this node holds the job's lease at the batch's lease_epoch (a brand-new
 * job's first batch takes the lease) - and only while node_incarnation is
 * the node's live incarnation (not declared dead, not replaced by a newer
 * process registered under the same id): a stale process commits nothing,
 * not even a new job. A batch refused for a lost lease is
 * answered JW_ECONFLICT with PostgreSQL's message; nothing of it commits,
 * while other jobs' batches of its group do. With node_incarnation > 0 the
 * db thread renews the node's heartbeat row every node_ttl_ms / 3 between
 * groups; jw_store_node_state says how long the leases may be trusted, or
 * that the node was declared dead (then the store writes nothing more).
 *
 * Retention: with events_retention_s > 0 the db thread deletes the journal
 * (job_events) of jobs finished (completed, failed, cancelled) longer ago
 * than that, judged by job_runs.updated_at; the job rows stay. It works in
 * rounds, one prune_interval_ms after the last ended. A round walks the ids
 * of the jobs that still have events, in order, and deletes in transactions
 * of at most prune_batch rows (whole jobs, or seq ranges of a long one). It
 * uses a second connection of the db thread, asynchronously, one statement
 * at a time: the thread sends it and takes the answer between write groups,
 * so group commits never wait for a delete. A delete rechecks the job's
 * status and age, and never touches events past those it saw (a retried job
 * keeps its new ones).
 *
 * Threads: jw_store_start/stop/free from one controlling thread (main);
 * submit, drain, wait and stats from any thread, normally the loop.
 */
#ifndef JW_STORE_H
#define JW_STORE_H

#include "jw_delta.h"
#include "jw_hist.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * The session options of every connection jobwire makes ("options" in
 * libpq; the caller's connection string overrides them). JIT off: each of
 * our statements runs in milliseconds, but a planner estimate past
 * jit_above_cost (a claim's per-job subqueries, say) compiled it with LLVM
 * on every run - 0.5-0.9 s of CPU for a takeover scan that found nothing,
 * once a second on every node.
 */
#define JW_PG_OPTIONS "-c jit=off"

typedef struct jw_store jw_store;

typedef struct jw_store_config {
    const char *conninfo;       /* libpq URI or key=value string; copied */
    int max_group_deltas;       /* deltas per transaction, at least one batch; 0: 500 */
    int backoff_min_ms;         /* first reconnect delay; 0: 100 */
    int backoff_max_ms;         /* reconnect delay cap; 0: 5000 */
    int64_t events_retention_s; /* journal age past a job's end to delete it; 0: keep */
    int prune_batch;            /* most job_events rows per delete; 0: 1000 */
    int prune_interval_ms;      /* from one retention round to the next; 0: 600000 */
    int max_reads_queued;       /* reads submitted and not yet answered; 0: 256 */
    const char *node_id;        /* this node (copied); NULL: "local" */
    int64_t node_incarnation;   /* from jw_db_node_register; 0: no heartbeat */
    int node_ttl_ms;            /* heartbeat TTL; 0: 10000 */
    /* Called from the db thread after results were posted; may be NULL. */
    void (*wake)(void *arg);
    void *wake_arg;
} jw_store_config;

typedef struct jw_store_stats {
    bool connected;
    int64_t outage_started_us; /* monotonic; 0 while connected */
    int64_t outage_total_us;   /* all finished outages, for metrics */
    uint64_t batches_committed;
    uint64_t deltas_committed;
    uint64_t batches_failed;
    uint64_t commits; /* transactions, i.e. groups */
    uint64_t reconnects;
    uint64_t notifications;         /* jw_events NOTIFYs sent with committed groups */
    uint64_t notifications_failed;  /* groups whose NOTIFY failed (the catch-up covers) */
    uint64_t notifications_skipped; /* payloads not sent: no other node was live */
    uint64_t queued_batches;        /* submitted, not yet answered */
    uint64_t reads_queued;          /* reads submitted, not yet answered */
    uint64_t events_pruned;         /* job_events rows deleted by retention */
    uint64_t runs_pruned;           /* finished jobs whose journal retention deleted, each once */
    uint64_t prune_batches;         /* retention delete transactions */
    uint64_t prune_rounds;          /* retention rounds finished */
    char last_error[256];           /* last connection or database error, redacted */
    int64_t heartbeat_us;           /* monotonic send time of the last good heartbeat; 0: none */
    /*
     * One observation per committed group (so each count equals commits):
     * commit_us, microseconds from building the group's first write to
     * PostgreSQL's answer - for a group whose COMMIT outcome was lost with
     * the connection and later found committed, until it was found, outage
     * included; commit_batches and commit_deltas, the group's size. The db
     * thread updates them under the stats lock; jw_store_get_stats copies.
     */
    jw_hist commit_us;
    jw_hist commit_batches;
    jw_hist commit_deltas;
} jw_store_stats;

/* Starts the db thread. It connects on its own; an unreachable database is not
 * an error here (see stats). Returns 0, JW_EINVAL or JW_ENOMEM. */
int jw_store_start(jw_store **out, const jw_store_config *cfg);

/*
 * Queues b for commit and takes ownership of it; it comes back through
 * jw_store_drain/jw_store_wait. Returns JW_EINVAL for an empty batch and
 * JW_ECLOSED after jw_store_stop; then the caller keeps b.
 */
int jw_store_submit(jw_store *s, jw_batch *b);

/*
 * Hands every answered batch to fn in submission order; fn owns each batch it
 * gets (free with jw_batch_free). Returns how many were handed over.
 */
typedef void (*jw_store_done_fn)(jw_batch *b, void *arg);
size_t jw_store_drain(jw_store *s, jw_store_done_fn fn, void *arg);
/* Whether answered batches wait for jw_store_drain: one relaxed load, for checks
 * between other work (a false answer is caught up by the drain the wake brings). */
bool jw_store_has_answers(jw_store *s);
/* Like drain, but first waits up to timeout_ms for at least one answer. */
size_t jw_store_wait(jw_store *s, int timeout_ms, jw_store_done_fn fn, void *arg);

void jw_store_get_stats(jw_store *s, jw_store_stats *out);
/* stats.connected alone: whether the db thread's connection is up (false until
 * it first connects, and from a failed statement or connection until it is back). */
bool jw_store_connected(jw_store *s);

/*
 * This node's lease state, any thread: *trusted_until_us, monotonic, the
 * last good heartbeat's send time + TTL - 1 s (0: none yet; INT64_MAX
 * without a heartbeat); *dead once a heartbeat found the node declared dead
 * (paused or cut off past its TTL: another node may hold its jobs).
 */
void jw_store_node_state(jw_store *s, int64_t *trusted_until_us, bool *dead);
/* Once dead: whether it was because a newer process registered under this
 * node's id (two processes started with one --node-id), not a missed heartbeat. */
bool jw_store_node_replaced(jw_store *s);

/*
 * Another node announced that it listens now (db/cluster.h, any thread): the
 * store notifies its commits from then on, and if it was not, first tells
 * the nodes to catch up (db/commit.c, "Alone").
 */
void jw_store_peer_joined(jw_store *s);

/*
 * Reads. The loop thread never blocks on PostgreSQL, so reads are queued and
 * answered through jw_store_drain_reads. They run in submission order on a
 * thread and a connection of their own (db/reads.c), so group commits never
 * wait behind them; while PostgreSQL is away they are answered at once with
 * JW_EDBDOWN rather than kept waiting. At most max_reads_queued are
 * outstanding: past it jw_store_read refuses with JW_ELIMIT. A read cancelled
 * (jw_read_cancel) before its turn is answered JW_ECANCELED without a query,
 * and is still handed back through jw_store_drain_reads.
 *
 *  JW_READ_JOB   (job id)  -> {"job":{…},"steps":[…],"otp_requests":[…],"seq":N}
 *  JW_READ_JOBS  (status|NULL, user id|NULL, before job id|NULL, limit)
 *                -> [{job row}, …] newest first; "before" pages past a job
 *  JW_READ_EVENTS (job id, after seq, up to seq)
 *                -> [{"seq","ts","cts","table","op","row_id","row"}, …] in seq
 *                   order: the journal's rows, "row" the row's text as stored
 *                   (a string), "cts" null for rows journaled before it was kept
 *                   (migration 003). jw_store_read_deltas makes them deltas.
 *  JW_READ_JOB_CLAIM (job id, node id, user id|NULL) -> JW_READ_JOB's answer
 *                plus "lease_epoch": a failed job (of that user, when given)
 *                is claimed for the node first (epoch + 1; a retry adopts it
 *                under that epoch); null when it was not (not failed, or
 *                another user's).
 *  JW_READ_EVENTS_AFTER ("{job,…}", "{after,…}", limit) -> JW_READ_EVENTS'
 *                rows of several jobs, each with its "job": per job those
 *                after its seq (the arrays pair them), ordered by job then
 *                seq, at most limit rows in all (a full answer: read on).
 * A job that does not exist answers JW_ENOTFOUND.
 *
 * The inbox of commands between nodes (server/inbox.c, migration 005); each
 * one statement, so one transaction, answering JW_ENOTFOUND when it matched
 * nothing:
 *  JW_READ_INBOX_PUT (row id, kind otp|cancel, target, user id|NULL, sealed
 *                bytea text|NULL, from node, most open rows, most open rows
 *                per user, expiry s) -> {"job_id","job_status","otp_status",
 *                "owner","full","user_full","queued"}: inserts the row when
 *                the job runs (and the OTP request waits, and a sealed value
 *                is given) and the caps allow, and notifies the owner;
 *                deletes a few rows older than the expiry. No job (of that
 *                user): JW_ENOTFOUND.
 *  JW_READ_INBOX_TAKE (row id, node, lease epoch, max age s) ->
 *                {"id","kind","target","job_id","user_id","sealed"}: takes an
 *                untaken row of a job this node holds at that epoch (the job
 *                row locked FOR SHARE) and erases its sealed value.
 *  JW_READ_INBOX_ANSWER (row id, verdict JSON) -> {"id"}: records the verdict
 *                of a taken row once and notifies the caller.
 *  JW_READ_INBOX_VERDICT (row id, answer|withdraw) -> {"verdict"}: deletes
 *                an answered row (withdraw: or one nobody took; its verdict
 *                is null then).
 *  JW_READ_INBOX_SCAN (node, limit, max age s) -> [{"id","job_id","stale"}]:
 *                open rows of jobs the node owns, younger than max age:
 *                untaken, or taken by an earlier owner (stale).
 */
typedef enum jw_read_kind {
    JW_READ_JOB,
    JW_READ_JOBS,
    JW_READ_EVENTS,
    JW_READ_JOB_CLAIM,
    JW_READ_INBOX_PUT,
    JW_READ_INBOX_TAKE,
    JW_READ_INBOX_ANSWER,
    JW_READ_INBOX_VERDICT,
    JW_READ_INBOX_SCAN,
    JW_READ_EVENTS_AFTER,
    JW_READ__COUNT
} jw_read_kind;

#define JW_READ_MAX_PARAMS 9

typedef struct jw_read {
    jw_mailbox_node node;
    jw_read_kind kind;
    int nparams;
    char *params[JW_READ_MAX_PARAMS]; /* owned copies; NULL is SQL NULL */
    int status;            /* 0, JW_ENOTFOUND, JW_EDB, JW_EDBDOWN, JW_ECLOSED, JW_ECANCELED */
    atomic_bool cancelled; /* jw_read_cancel: skip it if it has not run yet */
    char *result;          /* JSON text when status is 0 */
    char *error;
    void *user; /* the submitter's cookie */
    /*
     * The submitter's completion: whoever drains the answered reads
     * (jw_store_drain_reads) calls done(r, done_arg), which owns r from
     * then on. Set before jw_store_read; a cancelled read comes back
     * through it too, with status JW_ECANCELED.
     */
    void (*done)(struct jw_read *r, void *arg);
    void *done_arg;
} jw_read;

/* Params are copied; pass NULL for SQL NULL. Returns NULL for a bad count. */
jw_read *jw_read_new(jw_read_kind kind, int nparams, const char *const *params);
void jw_read_free(jw_read *r);
/* Queues r and takes it; JW_ELIMIT when max_reads_queued are outstanding,
 * JW_ECLOSED after stop (the caller keeps r then). */
int jw_store_read(jw_store *s, jw_read *r);
/* Any thread, while r is queued: it will be answered JW_ECANCELED unless it already ran. */
void jw_read_cancel(jw_read *r);
typedef void (*jw_store_read_fn)(jw_read *r, void *arg);
/* Hands every answered read to fn, which owns it. */
size_t jw_store_drain_reads(jw_store *s, jw_store_read_fn fn, void *arg);

/*
 * The deltas of an answered JW_READ_EVENTS or JW_READ_EVENTS_AFTER read (status 0), in its order,
 * each as it was committed: ts, commit_us from the row's cts (0 when it has
 * none), the row's text byte for byte - so jw_delta_encode gives what was
 * published live. On 0, *out is an array of *n deltas, the caller's to free
 * with jw_store_free_deltas. JW_EINVAL (and nothing to free) when r is not
 * such an answer or a row does not make a delta.
 */
int jw_store_read_deltas(const jw_read *r, jw_delta ***out, size_t *n);
/* Drops the deltas' references and frees the array; NULL-safe. */
void jw_store_free_deltas(jw_delta **ds, size_t n);

/*
 * Stops accepting batches, commits what is queued if it can within drain_ms,
 * answers the rest with JW_ECLOSED, and joins the thread. Answers stay
 * drainable until jw_store_free.
 */
void jw_store_stop(jw_store *s, int drain_ms);
/* Frees the store and any answers not drained; NULL-safe. Stop first. */
void jw_store_free(jw_store *s);

/*
 * Applies db/migrations (embedded in the binary at build time) that are not
 * yet recorded in schema_migrations, each in its own transaction, under an
 * advisory lock so two servers never race. A recorded migration whose text
 * changed since it was applied is refused. Blocking: start-up only. On error
 * returns JW_EDBDOWN or JW_EMIGRATE with a message in err.
 */
int jw_db_migrate(const char *conninfo, char *err, size_t errlen);

/* How many migrations this binary carries, and how many the database has. */
int jw_db_migration_count(void);

/*
 * Registers node_id at start-up, before recovery (db/nodes.c), with its TTL
 * (--node-ttl): the other nodes judge its heartbeat by it. Blocking.
 * A node id seen before gets the next incarnation and is alive again.
 * Returns 0 (*incarnation set), JW_EDBDOWN or JW_EDB.
 */
int jw_db_node_register(const char *conninfo, const char *node_id, int ttl_ms, int64_t *incarnation,
                        char *err, size_t errlen);

/*
 * Clean shutdown, once nothing more is committed: hands this node's leases
 * of unfinished jobs back (owner_node = NULL) and marks it dead, so another
 * node or the next start claims them at once. Does nothing when this
 * incarnation was already declared dead. Blocking. 0, JW_EDBDOWN or JW_EDB.
 */
int jw_db_node_release(const char *conninfo, const char *node_id, int64_t incarnation, char *err,
                       size_t errlen);

/*
 * Claims and loads the unfinished jobs this node may run, for recovery at
 * start-up. Blocking. In one transaction it marks dead the other nodes whose
 * heartbeat is older than ttl_ms, then takes (lease_epoch + 1) every
 * unfinished job owned by nobody, by this node or by a dead node (FOR UPDATE
 * SKIP LOCKED); jobs of live nodes are left to them (*others counts them).
 * *out becomes a JSON array of objects
 *   {"job": {...job_runs row...}, "steps": [...], "otp_requests": [...],
 *    "last_seq": N, "lease_epoch": E}
 * with steps and OTP requests in creation order. Returns 0, JW_EDBDOWN or
 * JW_EDB (message in err).
 */
int jw_db_load_active(const char *conninfo, const char *node_id, int ttl_ms, json_t **out,
                      int64_t *others, char *err, size_t errlen);

/*
 * Loads the auth_sessions rows still usable (active, not expired) for login
 * reuse at start-up. Blocking. *out becomes a JSON array of rows; the sealed
 * token stays sealed (bytea text). Returns 0, JW_EDBDOWN or JW_EDB.
 */
int jw_db_load_sessions(const char *conninfo, json_t **out, char *err, size_t errlen);

#endif
