/*
 * reads.c - the store's reads, on a thread and a PostgreSQL connection of
 * their own. See jw_store.h ("Reads").
 *
 * Reads used to run on the commit connection between write groups, so a
 * burst of them (a phx_join naming a hundred finished jobs, a subscribe loop)
 * made every commit - and every OTP verdict waiting on one - wait. Here they
 * wait only for each other. The thread takes what is queued, answers each
 * read in order (a cancelled one without touching PostgreSQL), and posts the
 * answers back. While PostgreSQL is away reads are answered at once with
 * JW_EDBDOWN rather than kept waiting; the thread tries to connect again at
 * the next read, at most once per backoff step.
 */
#include "reads.h"

#include "jw_error.h"
#include "jw_log.h"
#include "pgconn.h"
#include "jw_util.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_US 100000
#define BACKOFF_MAX_US 5000000

struct jw_reader {
    char *conninfo;
    size_t max_queued;
    jw_mailbox in, done;
    atomic_size_t queued; /* submitted and not yet answered */
    pthread_t thread;
    bool started;

    /* The thread's own. */
    PGconn *conn;
    int64_t next_try_us, backoff_us;
    char last_error[256];
};

/* What a client sees of a job: rows without the store's own columns (last_seq, the lease). */
#define JOB_STATE                                                                                  \
    "  'job', to_jsonb(j) - 'last_seq' - 'owner_node' - 'lease_epoch',"                            \
    "  'steps', COALESCE((SELECT jsonb_agg(to_jsonb(s) ORDER BY s.created_at, s.id)"               \
    "                       FROM job_steps s WHERE s.job_run_id = j.id), '[]'::jsonb),"            \
    "  'otp_requests', COALESCE((SELECT jsonb_agg(to_jsonb(o) ORDER BY o.requested_at, o.id)"      \
    "                       FROM otp_requests o WHERE o.job_run_id = j.id), '[]'::jsonb),"

static const char *const read_sql[JW_READ__COUNT] = {
    [JW_READ_JOB] = "SELECT json_build_object(" JOB_STATE "  'seq', j.last_seq)::text"
                    " FROM job_runs j WHERE j.id = $1::uuid",
    /* JW_READ_JOB after claiming a failed job (see jw_store.h); the outer
     * query sees the rows as before the claim, the epoch is the claim's. */
    [JW_READ_JOB_CLAIM] =
        "WITH c AS (UPDATE job_runs SET owner_node = $2::text, lease_epoch = lease_epoch + 1"
        "  WHERE id = $1::uuid AND status = 'failed' AND ($3::uuid IS NULL OR user_id = $3::uuid)"
        "  RETURNING lease_epoch)"
        "SELECT json_build_object(" JOB_STATE "  'seq', j.last_seq,"
        "  'lease_epoch', (SELECT lease_epoch FROM c))::text"
        " FROM job_runs j WHERE j.id = $1::uuid",
    [JW_READ_JOBS] =
        "SELECT COALESCE(json_agg(x.r ORDER BY x.created_at DESC, x.id DESC), '[]')::text"
        " FROM (SELECT to_jsonb(j) - 'last_seq' - 'owner_node' - 'lease_epoch' AS r,"
        "   j.created_at, j.id FROM job_runs j"
        "  WHERE ($1::text IS NULL OR j.status = $1::text)"
        "    AND ($2::uuid IS NULL OR j.user_id = $2::uuid)"
        "    AND ($3::uuid IS NULL OR (j.created_at, j.id) <"
        /* The cursor is one of the listed user's jobs, or none: another user's id
         * answers like an unknown one, so ids cannot be probed. */
        "         (SELECT b.created_at, b.id FROM job_runs b WHERE b.id = $3::uuid"
        "            AND ($2::uuid IS NULL OR b.user_id = $2::uuid)))"
        "  ORDER BY j.created_at DESC, j.id DESC LIMIT $4::int) x",
    /* The journal's rows; the row as a string holding row_data's text as stored, byte for
     * byte, for jw_store_read_deltas. */
    [JW_READ_EVENTS] =
        "SELECT COALESCE(json_agg(json_build_object('seq', e.seq,"
        " 'ts', (extract(epoch FROM e.ts) * 1000000)::bigint,"
        " 'cts', (extract(epoch FROM e.cts) * 1000000)::bigint, 'table', e.table_name,"
        " 'op', e.op, 'row_id', e.row_data->>'id', 'row', e.row_data::text) ORDER BY e.seq),"
        " '[]')::text"
        " FROM job_events e"
        " WHERE e.job_run_id = $1::uuid AND e.seq > $2::bigint AND e.seq <= $3::bigint",
    /* The inbox (migration 005, server/inbox.c). A caller's command: the job (of the user),
     * the caps, the row and the owner's wake-up, in one statement; a few expired rows go. */
    [JW_READ_INBOX_PUT] =
        "WITH o AS (SELECT o.job_run_id AS job, o.status AS otp_status FROM otp_requests o"
        "            WHERE $2::text = 'otp' AND o.id = $3::uuid"
        "           UNION ALL SELECT $3::uuid, NULL WHERE $2::text = 'cancel'),"
        " j AS (SELECT r.id, r.user_id, r.status, r.owner_node, o.otp_status"
        "        FROM o JOIN job_runs r ON r.id = o.job"
        "       WHERE $4::uuid IS NULL OR r.user_id = $4::uuid),"
        " gone AS (DELETE FROM jw_inbox WHERE id IN (SELECT id FROM jw_inbox"
        "           WHERE created_at < now() - make_interval(secs => $9::int)"
        "           ORDER BY created_at LIMIT 16)),"
        " cap AS (SELECT (SELECT count(*) FROM (SELECT 1 FROM jw_inbox WHERE answered_at IS NULL"
        "                  LIMIT $7::int) a) >= $7::int AS full,"
        "         (SELECT count(*) FROM (SELECT 1 FROM jw_inbox i, j WHERE i.user_id = j.user_id"
        "            AND i.answered_at IS NULL LIMIT $8::int) u) >= $8::int AS user_full),"
        " ins AS (INSERT INTO jw_inbox (id, job_run_id, user_id, kind, target, sealed, from_node)"
        "         SELECT $1::uuid, j.id, j.user_id, $2::text, $3::uuid, $5::bytea, $6::text"
        "           FROM j, cap"
        "          WHERE j.status NOT IN ('completed', 'failed', 'cancelled')"
        "            AND ($2::text = 'cancel'"
        "                 OR (j.otp_status = 'requested' AND $5::bytea IS NOT NULL))"
        "            AND NOT cap.full AND NOT cap.user_full"
        "         RETURNING id),"
        " note AS (SELECT pg_notify('jw_inbox', 'take ' || ins.id || ' ' || j.id || ' '"
        "                           || coalesce(j.owner_node, '')) FROM ins, j)"
        "SELECT json_build_object('job_id', j.id, 'job_status', j.status,"
        "  'otp_status', j.otp_status, 'owner', j.owner_node, 'full', cap.full,"
        "  'user_full', cap.user_full, 'queued', (SELECT count(*) FROM ins) > 0,"
        "  'notified', (SELECT count(*) FROM note))::text FROM j, cap",
    /* The owner takes a row, fenced: the job's row locked FOR SHARE at this node and epoch
     * (a takeover's epoch bump waits for this commit, or this sees it and takes nothing). */
    [JW_READ_INBOX_TAKE] =
        "WITH r AS (SELECT r.id FROM job_runs r"
        "            WHERE r.id = (SELECT job_run_id FROM jw_inbox WHERE id = $1::uuid)"
        "              AND r.owner_node = $2::text AND r.lease_epoch = $3::bigint FOR SHARE),"
        " old AS (SELECT i.id, i.kind, i.target, i.job_run_id, i.user_id, i.sealed"
        "           FROM jw_inbox i JOIN r ON r.id = i.job_run_id"
        "          WHERE i.id = $1::uuid AND i.taken_by IS NULL"
        "            AND i.created_at > now() - make_interval(secs => $4::int) FOR UPDATE OF i),"
        " t AS (UPDATE jw_inbox i SET taken_by = $2::text, taken_epoch = $3::bigint,"
        "        taken_at = now(), sealed = NULL FROM old WHERE i.id = old.id RETURNING i.id)"
        "SELECT json_build_object('id', old.id, 'kind', old.kind, 'target', old.target,"
        "  'job_id', old.job_run_id, 'user_id', old.user_id, 'sealed', old.sealed)::text"
        " FROM old JOIN t ON t.id = old.id",
    [JW_READ_INBOX_ANSWER] =
        "WITH a AS (UPDATE jw_inbox SET verdict = $2::jsonb, answered_at = now()"
        "            WHERE id = $1::uuid AND answered_at IS NULL AND taken_by IS NOT NULL"
        "           RETURNING id, from_node)"
        "SELECT json_build_object('id', a.id)::text"
        " FROM a, LATERAL pg_notify('jw_inbox', 'answer ' || a.id || ' ' || a.from_node) n",
    [JW_READ_INBOX_VERDICT] =
        "DELETE FROM jw_inbox WHERE id = $1::uuid"
        "   AND (answered_at IS NOT NULL OR ($2::text = 'withdraw' AND taken_by IS NULL))"
        " RETURNING json_build_object('verdict', verdict)::text",
    [JW_READ_INBOX_SCAN] =
        "SELECT COALESCE(json_agg(json_build_object('id', x.id, 'job_id', x.job_run_id,"
        "  'stale', x.taken_by IS NOT NULL) ORDER BY x.created_at), '[]')::text"
        " FROM (SELECT i.id, i.job_run_id, i.taken_by, i.created_at"
        "         FROM jw_inbox i JOIN job_runs r ON r.id = i.job_run_id"
        "        WHERE r.owner_node = $1::text AND i.answered_at IS NULL"
        "          AND i.created_at > now() - make_interval(secs => $3::int)"
        "          AND (i.taken_by IS NULL OR i.taken_by <> r.owner_node"
        "               OR i.taken_epoch < r.lease_epoch)"
        "        ORDER BY i.created_at LIMIT $2::int) x",
    /* Several jobs' journals past a seq each, for the cross-node fan-out: one
     * index range scan per job, at most $3 rows in all. */
    [JW_READ_EVENTS_AFTER] =
        "SELECT COALESCE(json_agg(json_build_object('job', x.job_run_id, 'seq', x.seq,"
        " 'ts', (extract(epoch FROM x.ts) * 1000000)::bigint,"
        " 'cts', (extract(epoch FROM x.cts) * 1000000)::bigint, 'table', x.table_name,"
        " 'op', x.op, 'row_id', x.row_data->>'id', 'row', x.row_data::text)"
        " ORDER BY x.job_run_id, x.seq), '[]')::text"
        " FROM (SELECT e.* FROM unnest($1::uuid[], $2::bigint[]) AS w(id, after)"
        "   CROSS JOIN LATERAL (SELECT * FROM job_events e"
        "     WHERE e.job_run_id = w.id AND e.seq > w.after ORDER BY e.seq LIMIT $3::int) e"
        "   ORDER BY e.job_run_id, e.seq LIMIT $3::int) x",
};

static void set_error(jw_reader *rd, const char *what, const char *msg)
{
    size_t n;

    snprintf(rd->last_error, sizeof(rd->last_error), "%s%s", what, msg ? msg : "");
    n = strlen(rd->last_error);
    while (n && (rd->last_error[n - 1] == '\n' || rd->last_error[n - 1] == ' '))
        rd->last_error[--n] = '\0';
}

static void disconnect(jw_reader *rd)
{
    PQfinish(rd->conn);
    rd->conn = NULL;
}

/* Connects and prepares the reads; false (and a backoff) when it cannot. */
static bool connect_reader(jw_reader *rd)
{
    int64_t now = jw_mono_us();

    if (now < rd->next_try_us)
        return false;
    rd->conn = db__connect(rd->conninfo, "jobwire-reads", true);
    if (PQstatus(rd->conn) != CONNECTION_OK) {
        set_error(rd, "cannot connect: ", PQerrorMessage(rd->conn));
        goto fail;
    }
    for (int k = 0; k < JW_READ__COUNT; k++) {
        char name[32];
        PGresult *res;
        bool ok;

        snprintf(name, sizeof(name), "jw_read_%d", k);
        res = PQprepare(rd->conn, name, read_sql[k], 0, NULL);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            set_error(rd, "preparing a read: ", PQresultErrorMessage(res));
        PQclear(res);
        if (!ok)
            goto fail;
    }
    rd->backoff_us = BACKOFF_MIN_US;
    rd->next_try_us = 0;
    jw_log_info("db: reads connected (backend pid %d)", PQbackendPID(rd->conn));
    return true;
fail:
    jw_log_warn("db: reads not connected: %s", rd->last_error);
    disconnect(rd);
    rd->next_try_us = now + rd->backoff_us;
    rd->backoff_us = rd->backoff_us * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : rd->backoff_us * 2;
    return false;
}

static void answer(jw_read *r, int status, const char *error)
{
    r->status = status;
    free(r->error);
    r->error = error ? jw_xstrdup(error) : NULL;
}

/* Runs r on the connection; false when the connection failed (r answered JW_EDBDOWN). */
static bool run_read(jw_reader *rd, jw_read *r)
{
    char name[32];
    PGresult *res;

    snprintf(name, sizeof(name), "jw_read_%d", (int)r->kind);
    res = PQexecPrepared(rd->conn, name, r->nparams, (const char *const *)r->params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
            free(r->result);
            r->result = jw_xstrdup(PQgetvalue(res, 0, 0));
            answer(r, 0, NULL);
        } else {
            answer(r, JW_ENOTFOUND, "not found");
        }
        PQclear(res);
        return true;
    }
    if (PQstatus(rd->conn) == CONNECTION_BAD) {
        set_error(rd, "connection lost: ", PQerrorMessage(rd->conn));
        answer(r, JW_EDBDOWN, rd->last_error);
        PQclear(res);
        disconnect(rd);
        return false;
    }
    {
        const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        char err[512];

        snprintf(err, sizeof(err), "%s [SQLSTATE %s]",
                 primary ? primary : PQresultErrorMessage(res), state ? state : "?");
        answer(r, JW_EDB, err);
    }
    PQclear(res);
    return true;
}

static void serve(jw_reader *rd, jw_read *r)
{
    if (atomic_load(&r->cancelled)) {
        answer(r, JW_ECANCELED, "cancelled");
        return;
    }
    if (!rd->conn && !connect_reader(rd)) {
        answer(r, JW_EDBDOWN, rd->last_error);
        return;
    }
    /* A connection PostgreSQL dropped while idle (a restart) fails the first
     * statement: connect again at once and give the read one more try. */
    if (!run_read(rd, r) && connect_reader(rd))
        run_read(rd, r);
}

static void *reader_thread(void *arg)
{
    jw_reader *rd = arg;

    for (;;) {
        jw_mailbox_node *n = jw_mailbox_wait(&rd->in, -1);

        if (!n && jw_mailbox_is_closed(&rd->in))
            break;
        while (n) {
            jw_mailbox_node *next = n->next;
            jw_read *r = jw_container_of(n, jw_read, node);

            if (jw_mailbox_is_closed(&rd->in))
                answer(r, JW_ECLOSED, "store stopped");
            else
                serve(rd, r);
            atomic_fetch_sub(&rd->queued, 1);
            jw_mailbox_post(&rd->done, &r->node);
            n = next;
        }
    }
    disconnect(rd);
    return NULL;
}

jw_reader *jw_reader_start(const char *conninfo, size_t max_queued, void (*wake)(void *arg),
                           void *wake_arg)
{
    jw_reader *rd = jw_xcalloc(1, sizeof(*rd));

    rd->conninfo = jw_xstrdup(conninfo);
    rd->max_queued = max_queued;
    rd->backoff_us = BACKOFF_MIN_US;
    snprintf(rd->last_error, sizeof(rd->last_error), "not connected yet");
    jw_mailbox_init(&rd->in, NULL, NULL);
    jw_mailbox_init(&rd->done, wake, wake_arg);
    atomic_init(&rd->queued, 0);
    if (pthread_create(&rd->thread, NULL, reader_thread, rd) != 0) {
        jw_reader_free(rd);
        return NULL;
    }
    rd->started = true;
    return rd;
}

int jw_reader_submit(jw_reader *rd, jw_read *r)
{
    if (atomic_fetch_add(&rd->queued, 1) >= rd->max_queued) {
        atomic_fetch_sub(&rd->queued, 1);
        return JW_ELIMIT;
    }
    if (!jw_mailbox_post(&rd->in, &r->node)) {
        atomic_fetch_sub(&rd->queued, 1);
        return JW_ECLOSED;
    }
    return 0;
}

size_t jw_reader_queued(jw_reader *rd)
{
    return atomic_load(&rd->queued);
}

size_t jw_reader_drain(jw_reader *rd, jw_store_read_fn fn, void *arg)
{
    jw_mailbox_node *n = jw_mailbox_take_all(&rd->done);
    size_t count = 0;

    while (n) {
        jw_mailbox_node *next = n->next;

        fn(jw_container_of(n, jw_read, node), arg);
        count++;
        n = next;
    }
    return count;
}

void jw_reader_stop(jw_reader *rd)
{
    if (!rd || !rd->started)
        return;
    jw_mailbox_close(&rd->in);
    pthread_join(rd->thread, NULL);
    rd->started = false;
}

void jw_reader_free(jw_reader *rd)
{
    jw_mailbox_node *n;

    if (!rd)
        return;
    jw_reader_stop(rd);
    for (int box = 0; box < 2; box++) {
        n = jw_mailbox_take_all(box ? &rd->done : &rd->in);
        while (n) {
            jw_mailbox_node *next = n->next;

            jw_read_free(jw_container_of(n, jw_read, node));
            n = next;
        }
    }
    jw_mailbox_release(&rd->in);
    jw_mailbox_release(&rd->done);
    free(rd->conninfo);
    free(rd);
}
