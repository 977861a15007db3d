/*
 * retention.c - deleting the journal (job_events) of jobs finished longer
 * ago than events_retention_s; see jw_store.h ("Retention") for the rules.
 *
 * Retention runs on a second connection of the db thread, asynchronously: a
 * statement is sent, and its answer picked up between write groups, so a
 * delete never holds up a commit on the main connection (they touch disjoint
 * rows: events of finished jobs against those of live ones). One statement is
 * in flight at a time, which is also its throttle: at most one PostgreSQL
 * backend works on retention.
 */
#include "store_internal.h"

#include "jw_log.h"
#include "pgconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often an idle db thread looks for the answer of a retention statement. */
#define PRUNE_POLL_MS 5

/*
 * Retention, step one: walk the ids of the jobs that still have events, from
 * $1 on, in order, one index probe each (a loose index scan of job_events'
 * primary key): at most $3 of them, plus one more that says where the next
 * walk starts. For each job finished (and last changed) longer than $2
 * seconds ago, the seq range of its events still there.
 */
static const char sql_prune_find[] =
    "WITH RECURSIVE walk(id, n) AS ("
    "  (SELECT e.job_run_id, 1 FROM job_events e WHERE e.job_run_id >= $1::uuid"
    "    ORDER BY e.job_run_id LIMIT 1)"
    "  UNION ALL"
    "  SELECT (SELECT e.job_run_id FROM job_events e WHERE e.job_run_id > w.id"
    "           ORDER BY e.job_run_id LIMIT 1), w.n + 1"
    "    FROM walk w WHERE w.id IS NOT NULL AND w.n <= $3::int)"
    " SELECT w.id, w.n,"
    "  (SELECT min(e.seq) FROM job_events e WHERE e.job_run_id = r.id),"
    "  (SELECT max(e.seq) FROM job_events e WHERE e.job_run_id = r.id)"
    " FROM walk w LEFT JOIN job_runs r ON r.id = w.id"
    "  AND r.status IN ('completed', 'failed', 'cancelled')"
    "  AND r.updated_at < now() - $2::int8 * interval '1 second'"
    " WHERE w.id IS NOT NULL ORDER BY w.n";

/*
 * Step two: delete events of the jobs $1 up to seq $2 (each), checking again
 * that each job is still finished and old enough (a retry makes it live).
 * $3 says whether that is the end of a job's range. Answers how many rows
 * went, and how many jobs lost their last ones.
 */
static const char sql_prune_delete[] =
    "WITH d AS (DELETE FROM job_events e"
    "  USING unnest($1::uuid[], $2::int8[], $3::bool[]) AS u(j, upto, last), job_runs r"
    "  WHERE e.job_run_id = u.j AND e.seq <= u.upto AND r.id = u.j"
    "    AND r.status IN ('completed', 'failed', 'cancelled')"
    "    AND r.updated_at < now() - $4::int8 * interval '1 second'"
    "  RETURNING e.job_run_id, u.last)"
    " SELECT count(*), count(DISTINCT job_run_id) FILTER (WHERE last) FROM d";

static const char nil_uuid[JW_UUID_LEN + 1] = "00000000-0000-0000-0000-000000000000";

void store__prune_disconnect(jw_store *s)
{
    if (s->prune.conn) {
        PQfinish(s->prune.conn);
        s->prune.conn = NULL;
    }
    s->prune.busy = false;
}

static bool prune_connect(jw_store *s)
{
    static const struct {
        const char *name, *sql;
    } stmts[] = {{"jw_prune_find", sql_prune_find}, {"jw_prune_delete", sql_prune_delete}};
    PGresult *res;

    s->prune.conn = db__connect(s->conninfo, "jobwire-retention", true);
    if (PQstatus(s->prune.conn) != CONNECTION_OK) {
        char err[256];

        /* The message may quote the connection string's host, never its password. */
        snprintf(err, sizeof(err), "%s", PQerrorMessage(s->prune.conn));
        err[strcspn(err, "\n")] = '\0';
        jw_log_warn("db: retention: cannot connect: %s", err);
        store__prune_disconnect(s);
        return false;
    }
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        res = PQprepare(s->prune.conn, stmts[i].name, stmts[i].sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            jw_log_error("db: retention: preparing %s failed: %s", stmts[i].name,
                         PQresultErrorMessage(res));
            PQclear(res);
            store__prune_disconnect(s);
            return false;
        }
        PQclear(res);
    }
    /* Sending never blocks the thread; a large parameter list is flushed by polls. */
    PQsetnonblocking(s->prune.conn, 1);
    return true;
}

static void end_round(jw_store *s, bool finished)
{
    struct prune *p = &s->prune;
    int64_t now = jw_mono_us();

    p->active = false;
    p->njobs = p->pos = 0;
    p->next_us = now + s->prune_interval_us;
    if (!finished)
        return;
    pthread_mutex_lock(&s->stats_lock);
    s->stats.prune_rounds++;
    pthread_mutex_unlock(&s->stats_lock);
    if (p->round_events)
        jw_log_info("db: retention: deleted %llu events of %llu finished jobs in %llu "
                    "transactions (%.1f s)",
                    (unsigned long long)p->round_events, (unsigned long long)p->round_runs,
                    (unsigned long long)p->round_batches,
                    (double)(now - p->round_started_us) / 1e6);
}

/* Sends the walk of the next stretch: which jobs past the cursor may lose events. */
static bool send_find(jw_store *s)
{
    struct prune *p = &s->prune;
    char age[24], limit[16];
    const char *params[3] = {p->cursor, age, limit};

    snprintf(age, sizeof(age), "%lld", (long long)s->retention_s);
    snprintf(limit, sizeof(limit), "%d", s->prune_batch);
    p->deleting = false;
    return PQsendQueryPrepared(p->conn, "jw_prune_find", 3, params, NULL, NULL, 0) == 1;
}

static void on_find(jw_store *s, PGresult *res)
{
    struct prune *p = &s->prune;
    int n = PQntuples(res);

    p->njobs = p->pos = 0;
    p->walk_done = true;
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(res, i, 0);
        struct prune_job *j;

        if (strlen(id) != JW_UUID_LEN)
            continue; /* cannot happen: uuid text */
        if (strtol(PQgetvalue(res, i, 1), NULL, 10) > s->prune_batch) {
            /* One past the stretch: where the next walk starts. */
            memcpy(p->cursor, id, JW_UUID_LEN + 1);
            p->walk_done = false;
            break;
        }
        if (PQgetisnull(res, i, 2) || PQgetisnull(res, i, 3))
            continue; /* not finished long enough ago */
        if (p->njobs == p->cap) {
            p->cap = p->cap ? 2 * p->cap : 64;
            p->jobs = jw_xrealloc(p->jobs, p->cap * sizeof(*p->jobs));
        }
        j = &p->jobs[p->njobs++];
        memcpy(j->id, id, JW_UUID_LEN + 1);
        j->lo = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        j->hi = strtoll(PQgetvalue(res, i, 3), NULL, 10);
    }
}

/*
 * Sends one delete of at most prune_batch rows: whole jobs from the list
 * while they fit, then the low end of the next one's seq range. The list
 * moves on only when the delete has committed (on_delete).
 */
static bool send_delete(jw_store *s)
{
    struct prune *p = &s->prune;
    int64_t budget = s->prune_batch;
    size_t pos = p->pos;
    jw_buf ids, uptos, lasts;
    char num[24], age[24];
    const char *params[4];
    bool ok;

    p->part_upto = 0;
    jw_buf_init(&ids, 1024);
    jw_buf_init(&uptos, 256);
    jw_buf_init(&lasts, 64);
    while (pos < p->njobs && budget > 0) {
        const struct prune_job *j = &p->jobs[pos];
        int64_t rows = j->hi - j->lo + 1, upto;

        if (rows <= 0) {
            pos++;
            continue;
        }
        if (rows <= budget) {
            upto = j->hi;
            budget -= rows;
            pos++;
        } else {
            upto = p->part_upto = j->lo + budget - 1;
            budget = 0;
        }
        store__add_array_item(&ids, j->id, JW_UUID_LEN);
        store__add_array_item(&uptos, num,
                              (size_t)snprintf(num, sizeof(num), "%lld", (long long)upto));
        store__add_array_item(&lasts, upto == j->hi ? "t" : "f", 1);
    }
    store__close_array(&ids);
    store__close_array(&uptos);
    store__close_array(&lasts);
    snprintf(age, sizeof(age), "%lld", (long long)s->retention_s);
    params[0] = ids.data;
    params[1] = uptos.data;
    params[2] = lasts.data;
    params[3] = age;
    p->deleting = true;
    p->next_pos = pos;
    ok = PQsendQueryPrepared(p->conn, "jw_prune_delete", 4, params, NULL, NULL, 0) == 1;
    jw_buf_release(&ids);
    jw_buf_release(&uptos);
    jw_buf_release(&lasts);
    return ok;
}

static void on_delete(jw_store *s, PGresult *res)
{
    struct prune *p = &s->prune;
    uint64_t events = (uint64_t)strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    uint64_t runs = (uint64_t)strtoull(PQgetvalue(res, 0, 1), NULL, 10);

    pthread_mutex_lock(&s->stats_lock);
    s->stats.events_pruned += events;
    s->stats.runs_pruned += runs;
    s->stats.prune_batches++;
    pthread_mutex_unlock(&s->stats_lock);
    p->round_events += events;
    p->round_runs += runs;
    p->round_batches++;
    if (p->part_upto)
        p->jobs[p->next_pos].lo = p->part_upto + 1;
    p->pos = p->next_pos;
}

/*
 * Sends the round's next statement: a delete while the walk's list lasts,
 * else the next stretch of the walk; ends the round when the walk is through.
 * Returns false when the connection failed.
 */
static bool prune_send_next(jw_store *s)
{
    struct prune *p = &s->prune;
    bool ok;

    while (p->pos < p->njobs && p->jobs[p->pos].hi < p->jobs[p->pos].lo)
        p->pos++;
    if (p->pos < p->njobs)
        ok = send_delete(s);
    else if (!p->walk_done)
        ok = send_find(s);
    else {
        end_round(s, true);
        return true;
    }
    if (ok) {
        p->busy = true;
        ok = PQflush(p->conn) != -1;
    }
    return ok;
}

static void prune_failed(jw_store *s, const char *what)
{
    char err[256];

    snprintf(err, sizeof(err), "%s", what);
    for (char *c = err; *c; c++)
        if (*c == '\n')
            *c = ' ';
    jw_log_warn("db: retention round stopped: %s; the next starts in %lld s", err,
                (long long)(s->prune_interval_us / 1000000));
    store__prune_disconnect(s);
    end_round(s, false);
}

/*
 * Moves retention along without waiting: takes the answer of the statement
 * in flight if it is there, sends the next one, starts a round when one is
 * due. Called on every turn of the db thread's loop.
 */
void store__prune_poll(jw_store *s)
{
    struct prune *p = &s->prune;

    if (!s->retention_s)
        return;
    if (atomic_load(&s->stopping)) {
        store__prune_disconnect(s); /* a statement in flight rolls back */
        return;
    }
    if (p->busy) {
        PGresult *res;
        char err[512] = "";
        bool got = false;

        if (PQflush(p->conn) == -1 || !PQconsumeInput(p->conn)) {
            prune_failed(s, PQerrorMessage(p->conn));
            return;
        }
        if (PQisBusy(p->conn))
            return;
        while ((res = PQgetResult(p->conn)) != NULL) {
            if (PQresultStatus(res) == PGRES_TUPLES_OK && !got && !err[0]) {
                got = true;
                if (p->deleting)
                    on_delete(s, res);
                else
                    on_find(s, res);
            } else if (!err[0]) {
                store__describe_error(res, err, sizeof(err));
            }
            PQclear(res);
        }
        p->busy = false;
        if (!got) {
            prune_failed(s, err[0] ? err : PQerrorMessage(p->conn));
            return;
        }
    }
    if (!p->active) {
        if (!s->conn || jw_mono_us() < p->next_us)
            return; /* the main connection says whether PostgreSQL is there */
        if (!p->conn && !prune_connect(s)) {
            end_round(s, false);
            return;
        }
        p->active = true;
        p->walk_done = false;
        p->njobs = p->pos = 0;
        memcpy(p->cursor, nil_uuid, sizeof(nil_uuid));
        p->round_events = p->round_runs = p->round_batches = 0;
        p->round_started_us = jw_mono_us();
    }
    if (!prune_send_next(s))
        prune_failed(s, PQerrorMessage(p->conn));
}

int store__idle_wait_ms(const jw_store *s)
{
    int64_t left;

    if (!s->retention_s || atomic_load(&s->stopping))
        return 1000;
    if (s->prune.busy)
        return PRUNE_POLL_MS;
    if (s->prune.active)
        return 0;
    left = (s->prune.next_us - jw_mono_us() + 999) / 1000;
    return left <= 0 ? 0 : left < 1000 ? (int)left : 1000;
}
