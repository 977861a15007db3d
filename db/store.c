/*
 * store.c - the db thread: group commit of delta batches to PostgreSQL.
 *
 * The thread keeps a FIFO of pending batches. Each round it forms a group from
 * the front of that FIFO (whole batches, up to max_group_deltas deltas) and
 * writes it as one pipelined implicit transaction:
 *
 *   upsert <table> from jsonb_populate_recordset($1)      one per table touched
 *   insert into job_events from unnest(...)               all journaled deltas
 *   select jw_advance_seq(jobs, first, last, count)       gap check + last_seq
 *   Sync                                                  commit
 *
 * A group leaves the FIFO only when its outcome is known: committed, or
 * rejected batch by batch. See jw_store.h for the failure rules.
 */
#include "jw_store.h"
#include "reads.h"

#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_GROUP 500
#define DEFAULT_BACKOFF_MIN_MS 100
#define DEFAULT_BACKOFF_MAX_MS 5000
#define DEFAULT_PRUNE_BATCH 1000
#define DEFAULT_MAX_READS_QUEUED 256
#define DEFAULT_PRUNE_INTERVAL_MS 600000
/* How often an idle db thread looks for the answer of a retention statement. */
#define PRUNE_POLL_MS 5

/* Tables rows are upserted into, in foreign-key order. */
static const jw_table upsert_order[] = {
    JW_TABLE_JOB_RUNS,
    JW_TABLE_JOB_STEPS,
    JW_TABLE_OTP_REQUESTS,
    JW_TABLE_AUTH_SESSIONS,
};

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

    /* Everything below belongs to the db thread. */
    PGconn *conn;
    jw_mailbox_node *pending_head, *pending_tail;
    size_t pending_count;
    size_t unknown_batches; /* the front group whose commit outcome is unknown */
    size_t split_left;      /* batches of a rejected group still to sort out */
    size_t split_chunk;     /* how many of them the next transaction tries */
    int backoff_ms;
    int64_t unknown_since_us; /* when the unknown group's write began (commit_us) */
    jw_buf rows[JW_TABLE__COUNT];
    jw_buf ev_job, ev_seq, ev_ts, ev_table, ev_op, ev_rows;
    jw_buf adv_job, adv_lo, adv_hi, adv_n;
    /* Open-addressing scratch tables, sized per group. */
    const jw_delta **seen;
    size_t seen_cap;
    struct job_range {
        const char *job_id;
        int64_t first, last, n;
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

/* ---- small helpers ------------------------------------------------------ */

/* Microseconds: one group commit on loopback is ~1 ms; a sick disk, seconds. */
static const jw_hist_spec commit_us_spec = {
    .n = 16,
    .le = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
           2500000, 5000000, 10000000},
    .decimals = 6,
};

/* Batches or deltas in one group: up to max_group_deltas (500 by default, at most 5000). */
static const jw_hist_spec group_size_spec = {
    .n = 13,
    .le = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096},
    .decimals = 0,
};

static void set_error(jw_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(jw_store *s, const char *fmt, ...)
{
    char clean[256];
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(clean, sizeof(clean), fmt, ap);
    va_end(ap);
    /* libpq messages end with newlines; keep the stats line single. */
    n = strlen(clean);
    while (n && (clean[n - 1] == '\n' || clean[n - 1] == ' '))
        clean[--n] = '\0';
    for (char *p = clean; *p; p++)
        if (*p == '\n')
            *p = ' ';
    pthread_mutex_lock(&s->stats_lock);
    memcpy(s->stats.last_error, clean, n + 1);
    pthread_mutex_unlock(&s->stats_lock);
}

static uint64_t hash_str(const char *p, size_t n, uint64_t h)
{
    /* FNV-1a: ids are random UUIDs, so a simple hash spreads them well. */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;

    while (c < n)
        c *= 2;
    return c;
}

/* ---- connection --------------------------------------------------------- */

static void disconnect(jw_store *s)
{
    if (s->conn) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
    pthread_mutex_lock(&s->stats_lock);
    if (s->stats.connected) {
        s->stats.connected = false;
        s->stats.outage_started_us = jw_mono_us();
    }
    pthread_mutex_unlock(&s->stats_lock);
}

static bool exec_ok(jw_store *s, PGresult *res, const char *what)
{
    ExecStatusType st = PQresultStatus(res);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return true;
    jw_log_error("db: %s failed: %s", what, PQresultErrorMessage(res));
    set_error(s, "%s", PQresultErrorMessage(res));
    return false;
}

/*
 * Builds and prepares the upsert of one table from its catalog columns, so a
 * migration that adds a column needs no change here. The store owns
 * job_runs.last_seq (jw_advance_seq moves it), so rows never overwrite it.
 */
static bool prepare_upsert(jw_store *s, jw_table t)
{
    const char *table = jw_table_name(t);
    const char *params[1] = {table};
    jw_buf cols, sets, sql;
    char name[64];
    PGresult *res;
    bool ok = false;
    int n;

    res = PQexecParams(s->conn,
                       "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
                       "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                       1, NULL, params, NULL, NULL, 0);
    if (!exec_ok(s, res, "reading table columns (is the schema migrated?)")) {
        PQclear(res);
        return false;
    }
    jw_buf_init(&cols, 256);
    jw_buf_init(&sets, 256);
    jw_buf_init(&sql, 512);
    n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        const char *col = PQgetvalue(res, i, 0);
        char *q;

        if (t == JW_TABLE_JOB_RUNS && strcmp(col, "last_seq") == 0)
            continue;
        q = PQescapeIdentifier(s->conn, col, strlen(col));
        if (!q)
            jw_oom("identifier");
        jw_buf_addf(&cols, "%s%s", cols.len ? ", " : "", q);
        if (strcmp(col, "id") != 0)
            jw_buf_addf(&sets, "%s%s = EXCLUDED.%s", sets.len ? ", " : "", q, q);
        PQfreemem(q);
    }
    PQclear(res);
    if (!sets.len) {
        set_error(s, "table %s has no columns", table);
        goto out;
    }
    jw_buf_addf(&sql,
                "INSERT INTO %s (%s) SELECT %s FROM jsonb_populate_recordset(NULL::%s, $1::jsonb) "
                "ON CONFLICT (id) DO UPDATE SET %s",
                table, cols.data, cols.data, table, sets.data);
    snprintf(name, sizeof(name), "jw_up_%s", table);
    res = PQprepare(s->conn, name, sql.data, 1, NULL);
    ok = exec_ok(s, res, "preparing an upsert");
    PQclear(res);
out:
    jw_buf_release(&cols);
    jw_buf_release(&sets);
    jw_buf_release(&sql);
    return ok;
}

static const char sql_events[] =
    "INSERT INTO job_events (job_run_id, seq, ts, table_name, op, row_data) "
    "SELECT j, s, timestamptz 'epoch' + t * interval '1 microsecond', tb, op, r "
    "FROM ROWS FROM (unnest($1::uuid[]), unnest($2::int8[]), unnest($3::int8[]), "
    "unnest($4::text[]), unnest($5::text[]), json_array_elements($6::json)) "
    "AS u(j, s, t, tb, op, r)";

static const char sql_advance[] =
    "SELECT jw_advance_seq($1::uuid[], $2::int8[], $3::int8[], $4::int8[])";

static const char sql_committed[] =
    "SELECT 1 FROM job_events WHERE job_run_id = $1::uuid AND seq = $2::int8";

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

static bool connect_db(jw_store *s)
{
    static const char *const keys[] = {
        "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
        "keepalives_count", "application_name", "dbname",          NULL,
    };
    const char *vals[] = {"5", "1", "10", "5", "3", "jobwire-store", s->conninfo, NULL};
    PGresult *res;

    /* Our defaults first; the caller's connection string overrides them. */
    s->conn = PQconnectdbParams(keys, vals, 1);
    if (!s->conn)
        jw_oom("libpq connection");
    if (PQstatus(s->conn) != CONNECTION_OK) {
        set_error(s, "cannot connect: %s", PQerrorMessage(s->conn));
        goto fail;
    }
    for (size_t i = 0; i < sizeof(upsert_order) / sizeof(upsert_order[0]); i++)
        if (!prepare_upsert(s, upsert_order[i]))
            goto fail;
    res = PQprepare(s->conn, "jw_events", sql_events, 0, NULL);
    if (!exec_ok(s, res, "preparing the events insert")) {
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    res = PQprepare(s->conn, "jw_advance", sql_advance, 0, NULL);
    if (!exec_ok(s, res, "preparing the seq check")) {
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    res = PQprepare(s->conn, "jw_committed", sql_committed, 0, NULL);
    if (!exec_ok(s, res, "preparing the commit check")) {
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    if (PQenterPipelineMode(s->conn) != 1) {
        set_error(s, "cannot enter pipeline mode: %s", PQerrorMessage(s->conn));
        goto fail;
    }

    pthread_mutex_lock(&s->stats_lock);
    if (s->stats.outage_started_us)
        s->stats.outage_total_us += jw_mono_us() - s->stats.outage_started_us;
    s->stats.outage_started_us = 0;
    s->stats.connected = true;
    s->stats.reconnects++;
    pthread_mutex_unlock(&s->stats_lock);
    s->backoff_ms = s->backoff_min_ms;
    jw_log_info("db: connected (backend pid %d)", PQbackendPID(s->conn));
    return true;

fail:
    jw_log_warn("db: not connected: %s", s->stats.last_error);
    PQfinish(s->conn);
    s->conn = NULL;
    return false;
}

/* ---- building one group's statements ----------------------------------- */

/* Appends a JSON string array element for an already safe token (no escaping). */
static void add_array_item(jw_buf *b, const char *item, size_t len)
{
    jw_buf_addch(b, b->len ? ',' : '{');
    jw_buf_add(b, item, len);
}

static void close_array(jw_buf *b)
{
    if (!b->len)
        jw_buf_addch(b, '{');
    jw_buf_addch(b, '}');
}

static void reset_buffers(jw_store *s)
{
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        jw_buf_reset(&s->rows[t]);
    jw_buf_reset(&s->ev_job);
    jw_buf_reset(&s->ev_seq);
    jw_buf_reset(&s->ev_ts);
    jw_buf_reset(&s->ev_table);
    jw_buf_reset(&s->ev_op);
    jw_buf_reset(&s->ev_rows);
    jw_buf_reset(&s->adv_job);
    jw_buf_reset(&s->adv_lo);
    jw_buf_reset(&s->adv_hi);
    jw_buf_reset(&s->adv_n);
}

/* Marks (table,row_id) seen; returns true when it already was. */
static bool seen_before(jw_store *s, const jw_delta *d)
{
    size_t mask = s->seen_cap - 1;
    size_t i = hash_str(d->row_id, JW_UUID_LEN, 14695981039346656037ULL + d->table) & mask;

    while (s->seen[i]) {
        if (s->seen[i]->table == d->table &&
            memcmp(s->seen[i]->row_id, d->row_id, JW_UUID_LEN) == 0)
            return true;
        i = (i + 1) & mask;
    }
    s->seen[i] = d;
    return false;
}

static struct job_range *job_slot(jw_store *s, const char *job_id)
{
    size_t mask = s->jobs_cap - 1;
    size_t i = hash_str(job_id, JW_UUID_LEN, 14695981039346656037ULL) & mask;

    while (s->jobs[i].job_id && memcmp(s->jobs[i].job_id, job_id, JW_UUID_LEN) != 0)
        i = (i + 1) & mask;
    return &s->jobs[i];
}

/*
 * Fills the parameter buffers for the first `count` batches of the FIFO.
 * Returns false with a message when the group is malformed in a way we can
 * tell without asking PostgreSQL (seqs out of order within the group).
 */
static bool build_group(jw_store *s, size_t count, size_t *ndeltas, char *err, size_t errlen)
{
    jw_mailbox_node *n;
    size_t total = 0, i;
    char num[32];

    reset_buffers(s);
    n = s->pending_head;
    for (i = 0; i < count; i++, n = n->next)
        total += jw_container_of(n, jw_batch, node)->count;
    *ndeltas = total;

    if (s->seen_cap < 2 * total) {
        s->seen_cap = pow2_at_least(2 * total);
        free(s->seen);
        s->seen = jw_xmalloc(s->seen_cap * sizeof(*s->seen));
        free(s->jobs);
        s->jobs_cap = s->seen_cap;
        s->jobs = jw_xmalloc(s->jobs_cap * sizeof(*s->jobs));
    }
    memset(s->seen, 0, s->seen_cap * sizeof(*s->seen));
    memset(s->jobs, 0, s->jobs_cap * sizeof(*s->jobs));

    /* Journal in submission order; check each job's seqs run +1 at a time. */
    n = s->pending_head;
    for (i = 0; i < count; i++, n = n->next) {
        jw_batch *b = jw_container_of(n, jw_batch, node);

        for (size_t k = 0; k < b->count; k++) {
            const jw_delta *d = b->deltas[k];
            struct job_range *r;

            if (d->seq == 0)
                continue;
            r = job_slot(s, d->job_id);
            if (!r->job_id) {
                r->job_id = d->job_id;
                r->first = d->seq;
            } else if (d->seq != r->last + 1) {
                snprintf(err, errlen, "job %s: seq %lld follows seq %lld in the same group",
                         d->job_id, (long long)d->seq, (long long)r->last);
                return false;
            }
            r->last = d->seq;
            r->n++;
            add_array_item(&s->ev_job, d->job_id, JW_UUID_LEN);
            add_array_item(&s->ev_seq, num,
                           (size_t)snprintf(num, sizeof(num), "%lld", (long long)d->seq));
            add_array_item(&s->ev_ts, num,
                           (size_t)snprintf(num, sizeof(num), "%lld", (long long)d->ts_us));
            add_array_item(&s->ev_table, jw_table_name(d->table), strlen(jw_table_name(d->table)));
            add_array_item(&s->ev_op, jw_op_name(d->op), strlen(jw_op_name(d->op)));
            jw_buf_addch(&s->ev_rows, s->ev_rows.len ? ',' : '[');
            jw_buf_add(&s->ev_rows, d->row, d->row_len);
        }
    }

    /* Upsert only the newest row of each id: walk the group backwards. */
    {
        jw_batch **order = jw_xmalloc(count * sizeof(*order));

        n = s->pending_head;
        for (i = 0; i < count; i++, n = n->next)
            order[i] = jw_container_of(n, jw_batch, node);
        for (i = count; i-- > 0;) {
            jw_batch *b = order[i];

            for (size_t k = b->count; k-- > 0;) {
                const jw_delta *d = b->deltas[k];
                jw_buf *rows = &s->rows[d->table];

                if (seen_before(s, d))
                    continue;
                jw_buf_addch(rows, rows->len ? ',' : '[');
                jw_buf_add(rows, d->row, d->row_len);
            }
        }
        free(order);
    }

    for (i = 0; i < s->jobs_cap; i++) {
        const struct job_range *r = &s->jobs[i];

        if (!r->job_id)
            continue;
        add_array_item(&s->adv_job, r->job_id, JW_UUID_LEN);
        add_array_item(&s->adv_lo, num,
                       (size_t)snprintf(num, sizeof(num), "%lld", (long long)r->first));
        add_array_item(&s->adv_hi, num,
                       (size_t)snprintf(num, sizeof(num), "%lld", (long long)r->last));
        add_array_item(&s->adv_n, num, (size_t)snprintf(num, sizeof(num), "%lld", (long long)r->n));
    }
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        if (s->rows[t].len)
            jw_buf_addch(&s->rows[t], ']');
    if (s->ev_rows.len) {
        jw_buf_addch(&s->ev_rows, ']');
        close_array(&s->ev_job);
        close_array(&s->ev_seq);
        close_array(&s->ev_ts);
        close_array(&s->ev_table);
        close_array(&s->ev_op);
        close_array(&s->adv_job);
        close_array(&s->adv_lo);
        close_array(&s->adv_hi);
        close_array(&s->adv_n);
    }
    return true;
}

/* ---- writing ------------------------------------------------------------ */

/* "primary message (detail)" without libpq's "ERROR:" prefix and newlines. */
static void describe_error(const PGresult *res, char *err, size_t errlen)
{
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (!primary) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
        return;
    }
    snprintf(err, errlen, "%s%s%s%s [SQLSTATE %s]", primary, detail ? " (" : "",
             detail ? detail : "", detail ? ")" : "", state ? state : "?");
}

/* Transient server conditions: the same write may succeed later. */
static bool sqlstate_transient(const char *state)
{
    if (!state)
        return true;                        /* no SQLSTATE: a client-side (connection) failure */
    return strncmp(state, "08", 2) == 0 ||  /* connection exception */
           strncmp(state, "57P", 3) == 0 || /* operator intervention: shutdown */
           strncmp(state, "53", 2) == 0 ||  /* insufficient resources */
           strncmp(state, "40", 2) == 0;    /* serialization failure, deadlock */
}

/*
 * Reads one query's results in the pipeline. Records the first error in err
 * and classifies it in *res. Returns false if the connection broke.
 */
static bool read_query(jw_store *s, enum write_result *wr, char *err, size_t errlen)
{
    PGresult *res;
    bool got_any = false;

    while ((res = PQgetResult(s->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);

        got_any = true;
        if (st == PGRES_FATAL_ERROR && *wr == WRITE_OK) {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

            *wr = sqlstate_transient(state) || PQstatus(s->conn) == CONNECTION_BAD ? WRITE_LOST
                                                                                   : WRITE_REJECTED;
            describe_error(res, err, errlen);
        }
        PQclear(res);
    }
    if (!got_any || PQstatus(s->conn) == CONNECTION_BAD) {
        if (*wr == WRITE_OK || PQstatus(s->conn) == CONNECTION_BAD) {
            *wr = WRITE_LOST;
            if (!*err)
                snprintf(err, errlen, "%s", PQerrorMessage(s->conn));
        }
        return false;
    }
    return true;
}

static enum write_result write_group(jw_store *s, size_t count, char *err, size_t errlen)
{
    enum write_result wr = WRITE_OK;
    size_t ndeltas, sent = 0;
    PGresult *res;
    char name[64];

    err[0] = '\0';
    if (!build_group(s, count, &ndeltas, err, errlen))
        return WRITE_REJECTED;

    for (size_t i = 0; i < sizeof(upsert_order) / sizeof(upsert_order[0]); i++) {
        jw_buf *rows = &s->rows[upsert_order[i]];
        const char *params[1] = {rows->data};

        if (!rows->len)
            continue;
        snprintf(name, sizeof(name), "jw_up_%s", jw_table_name(upsert_order[i]));
        if (!PQsendQueryPrepared(s->conn, name, 1, params, NULL, NULL, 0))
            goto lost;
        sent++;
    }
    if (s->ev_rows.len) {
        const char *ev[6] = {s->ev_job.data,   s->ev_seq.data, s->ev_ts.data,
                             s->ev_table.data, s->ev_op.data,  s->ev_rows.data};
        const char *adv[4] = {s->adv_job.data, s->adv_lo.data, s->adv_hi.data, s->adv_n.data};

        if (!PQsendQueryPrepared(s->conn, "jw_events", 6, ev, NULL, NULL, 0))
            goto lost;
        sent++;
        if (!PQsendQueryPrepared(s->conn, "jw_advance", 4, adv, NULL, NULL, 0))
            goto lost;
        sent++;
    }
    if (!PQpipelineSync(s->conn))
        goto lost;

    for (size_t i = 0; i < sent; i++)
        if (!read_query(s, &wr, err, errlen))
            return WRITE_LOST;
    res = PQgetResult(s->conn);
    if (!res || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        PQclear(res);
        if (!*err)
            snprintf(err, errlen, "%s", PQerrorMessage(s->conn));
        return WRITE_LOST;
    }
    PQclear(res);
    return wr;

lost:
    snprintf(err, errlen, "%s", PQerrorMessage(s->conn));
    return WRITE_LOST;
}

/*
 * After a lost connection: did the group at the front commit? Its deltas were
 * one transaction, so one journaled delta answers for all. Returns 1 yes,
 * 0 no (or nothing to check: upserts alone are safe to repeat), -1 unknown.
 */
static int group_committed(jw_store *s, size_t count)
{
    jw_mailbox_node *n = s->pending_head;
    const jw_delta *probe = NULL;
    char seq[32];
    const char *params[2];
    PGresult *res;
    int answer = -1;

    for (size_t i = 0; i < count && !probe; i++, n = n->next) {
        jw_batch *b = jw_container_of(n, jw_batch, node);

        for (size_t k = 0; k < b->count && !probe; k++)
            if (b->deltas[k]->seq > 0)
                probe = b->deltas[k];
    }
    if (!probe)
        return 0;
    snprintf(seq, sizeof(seq), "%lld", (long long)probe->seq);
    params[0] = probe->job_id;
    params[1] = seq;
    if (PQsendQueryPrepared(s->conn, "jw_committed", 2, params, NULL, NULL, 0) &&
        PQpipelineSync(s->conn)) {
        while ((res = PQgetResult(s->conn)) != NULL) {
            if (PQresultStatus(res) == PGRES_TUPLES_OK)
                answer = PQntuples(res) > 0;
            PQclear(res);
        }
        res = PQgetResult(s->conn);
        if (!res || PQresultStatus(res) != PGRES_PIPELINE_SYNC)
            answer = -1;
        PQclear(res);
    }
    return answer;
}

/* ---- retention ------------------------------------------------------------ */

/*
 * Retention runs on a second connection of this thread, asynchronously: a
 * statement is sent, and its answer picked up between write groups, so a
 * delete never holds up a commit on the main connection (they touch disjoint
 * rows: events of finished jobs against those of live ones). One statement is
 * in flight at a time, which is also its throttle: at most one PostgreSQL
 * backend works on retention.
 */

static const char nil_uuid[JW_UUID_LEN + 1] = "00000000-0000-0000-0000-000000000000";

static void prune_disconnect(jw_store *s)
{
    if (s->prune.conn) {
        PQfinish(s->prune.conn);
        s->prune.conn = NULL;
    }
    s->prune.busy = false;
}

static bool prune_connect(jw_store *s)
{
    static const char *const keys[] = {
        "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
        "keepalives_count", "application_name", "dbname",          NULL,
    };
    const char *vals[] = {"5", "1", "10", "5", "3", "jobwire-retention", s->conninfo, NULL};
    static const struct {
        const char *name, *sql;
    } stmts[] = {{"jw_prune_find", sql_prune_find}, {"jw_prune_delete", sql_prune_delete}};
    PGresult *res;

    s->prune.conn = PQconnectdbParams(keys, vals, 1);
    if (!s->prune.conn)
        jw_oom("libpq connection");
    if (PQstatus(s->prune.conn) != CONNECTION_OK) {
        char err[256];

        /* The message may quote the connection string's host, never its password. */
        snprintf(err, sizeof(err), "%s", PQerrorMessage(s->prune.conn));
        err[strcspn(err, "\n")] = '\0';
        jw_log_warn("db: retention: cannot connect: %s", err);
        prune_disconnect(s);
        return false;
    }
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        res = PQprepare(s->prune.conn, stmts[i].name, stmts[i].sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            jw_log_error("db: retention: preparing %s failed: %s", stmts[i].name,
                         PQresultErrorMessage(res));
            PQclear(res);
            prune_disconnect(s);
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
        add_array_item(&ids, j->id, JW_UUID_LEN);
        add_array_item(&uptos, num, (size_t)snprintf(num, sizeof(num), "%lld", (long long)upto));
        add_array_item(&lasts, upto == j->hi ? "t" : "f", 1);
    }
    close_array(&ids);
    close_array(&uptos);
    close_array(&lasts);
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
    prune_disconnect(s);
    end_round(s, false);
}

/*
 * Moves retention along without waiting: takes the answer of the statement
 * in flight if it is there, sends the next one, starts a round when one is
 * due. Called on every turn of the db thread's loop.
 */
static void prune_poll(jw_store *s)
{
    struct prune *p = &s->prune;

    if (!s->retention_s)
        return;
    if (atomic_load(&s->stopping)) {
        prune_disconnect(s); /* a statement in flight rolls back */
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
                describe_error(res, err, sizeof(err));
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

/* How long the idle db thread may sleep without leaving retention waiting. */
static int idle_wait_ms(const jw_store *s)
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

/* ---- answering ---------------------------------------------------------- */

/*
 * Detaches the first count batches, answers them with status/error. A
 * commit (status 0) took commit_us; it goes into the histograms.
 */
static void answer_front(jw_store *s, size_t count, int status, const char *error,
                         int64_t commit_us)
{
    jw_mailbox_node *first = s->pending_head, *last = NULL, *n = first;
    uint64_t deltas = 0;
    int64_t now = jw_mono_us(), wall = status == 0 ? jw_now_us() : 0;

    for (size_t i = 0; i < count; i++) {
        jw_batch *b = jw_container_of(n, jw_batch, node);

        b->status = status;
        b->committed_us = wall;
        free(b->error);
        b->error = error ? jw_xstrdup(error) : NULL;
        b->done_us = now;
        deltas += b->count;
        last = n;
        n = n->next;
    }
    s->pending_head = n;
    if (!n)
        s->pending_tail = NULL;
    s->pending_count -= count;

    pthread_mutex_lock(&s->stats_lock);
    if (status == 0) {
        s->stats.batches_committed += count;
        s->stats.deltas_committed += deltas;
        s->stats.commits++;
        jw_hist_observe(&s->stats.commit_us, commit_us > 0 ? (uint64_t)commit_us : 0);
        jw_hist_observe(&s->stats.commit_batches, count);
        jw_hist_observe(&s->stats.commit_deltas, deltas);
    } else {
        s->stats.batches_failed += count;
    }
    s->stats.queued_batches -= count;
    pthread_mutex_unlock(&s->stats_lock);

    if (!jw_mailbox_post_chain(&s->done, first, last, count))
        jw_log_error("db: answer mailbox closed; %zu batches dropped", count); /* cannot happen */
}

static void take_inbox(jw_store *s, jw_mailbox_node *nodes)
{
    while (nodes) {
        jw_mailbox_node *next = nodes->next;

        nodes->next = NULL;
        if (s->pending_tail)
            s->pending_tail->next = nodes;
        else
            s->pending_head = nodes;
        s->pending_tail = nodes;
        s->pending_count++;
        nodes = next;
    }
}

/* How many batches the next transaction takes from the front of the FIFO. */
static size_t group_size(jw_store *s)
{
    jw_mailbox_node *n = s->pending_head;
    size_t count = 0, deltas = 0;

    if (s->unknown_batches)
        return s->unknown_batches;
    if (s->split_left)
        return s->split_chunk < s->split_left ? s->split_chunk : s->split_left;
    while (n) {
        size_t c = jw_container_of(n, jw_batch, node)->count;

        if (count && deltas + c > (size_t)s->max_group)
            break;
        deltas += c;
        count++;
        n = n->next;
    }
    return count;
}

/*
 * Sleeps for the backoff. New batches are taken in meanwhile (they must not cut
 * the sleep short, or a busy producer would turn backoff into a spin); a stop
 * ends it at the drain deadline.
 */
static void backoff_wait(jw_store *s)
{
    int64_t until = jw_mono_us() + (int64_t)s->backoff_ms * 1000;
    int64_t now;

    while ((now = jw_mono_us()) < until) {
        if (jw_mailbox_is_closed(&s->inbox)) {
            /* A closed mailbox no longer blocks: sleep plainly. */
            int64_t us = until - now, left = atomic_load(&s->drain_deadline_us) - now;
            struct timespec ts;

            if (left < us)
                us = left > 0 ? left : 0;
            ts.tv_sec = (time_t)(us / 1000000);
            ts.tv_nsec = (long)(us % 1000000) * 1000;
            nanosleep(&ts, NULL);
            break;
        }
        take_inbox(s, jw_mailbox_wait(&s->inbox, (int)((until - now + 999) / 1000)));
    }
    s->backoff_ms = s->backoff_ms * 2 > s->backoff_max_ms ? s->backoff_max_ms : s->backoff_ms * 2;
}

static bool drain_expired(jw_store *s)
{
    return atomic_load(&s->stopping) && jw_mono_us() >= atomic_load(&s->drain_deadline_us);
}

/*
 * While idle, notice a connection PostgreSQL closed (restart, admin kill) so
 * readiness tells the truth before the next write finds out.
 */
static void check_idle_connection(jw_store *s)
{
    if (s->conn && (!PQconsumeInput(s->conn) || PQstatus(s->conn) == CONNECTION_BAD)) {
        set_error(s, "connection lost while idle: %s", PQerrorMessage(s->conn));
        jw_log_warn("db: %s", s->stats.last_error);
        disconnect(s);
    }
}

static void *store_thread(void *arg)
{
    jw_store *s = arg;
    char err[1024];

    for (;;) {
        /* Connect eagerly: readiness should not wait for the first write. */
        if (!s->conn) {
            take_inbox(s, jw_mailbox_take_all(&s->inbox));
            if (jw_mailbox_is_closed(&s->inbox) && !s->pending_head)
                break;
            if (!connect_db(s)) {
                disconnect(s);
                if (drain_expired(s))
                    break;
                backoff_wait(s);
                continue;
            }
        }
        if (!s->pending_head) {
            take_inbox(s, jw_mailbox_wait(&s->inbox, idle_wait_ms(s)));
            if (!s->pending_head) {
                if (jw_mailbox_is_closed(&s->inbox))
                    break;
                prune_poll(s);
                check_idle_connection(s);
                continue;
            }
        }
        take_inbox(s, jw_mailbox_take_all(&s->inbox));

        if (s->unknown_batches) {
            int c = group_committed(s, s->unknown_batches);

            if (c < 0) {
                disconnect(s);
                continue;
            }
            if (c == 1) {
                jw_log_info("db: group of %zu batches committed before the connection broke",
                            s->unknown_batches);
                answer_front(s, s->unknown_batches, 0, NULL, jw_mono_us() - s->unknown_since_us);
                if (s->split_left)
                    s->split_left -= s->unknown_batches;
                s->unknown_batches = 0;
                continue;
            }
            s->unknown_batches = 0;
        }

        prune_poll(s);

        size_t count = group_size(s);
        int64_t began = jw_mono_us();
        switch (write_group(s, count, err, sizeof(err))) {
        case WRITE_OK:
            answer_front(s, count, 0, NULL, jw_mono_us() - began);
            if (s->split_left)
                s->split_left -= count;
            break;
        case WRITE_REJECTED:
            /*
             * Bisect the rejected group: halves until the offending batch
             * stands alone, then the rest of the group together again. One
             * bad batch among n costs about 2 log2(n) transactions.
             */
            if (count > 1) {
                if (!s->split_left)
                    s->split_left = count;
                s->split_chunk = (count + 1) / 2;
                break;
            }
            set_error(s, "batch rejected: %s", err);
            jw_log_warn("db: %s", s->stats.last_error);
            answer_front(s, 1, JW_EDB, err, 0);
            if (s->split_left) {
                s->split_left--;
                s->split_chunk = s->split_left;
            }
            break;
        case WRITE_LOST:
            set_error(s, "connection lost: %s", err);
            jw_log_warn("db: %s; will retry %zu batches", s->stats.last_error, count);
            s->unknown_batches = count;
            s->unknown_since_us = began;
            disconnect(s);
            if (!drain_expired(s))
                backoff_wait(s);
            break;
        }
    }

    /* Stopped: whatever could not be written is answered as such. */
    take_inbox(s, jw_mailbox_take_all(&s->inbox));
    if (s->pending_count)
        answer_front(s, s->pending_count, JW_ECLOSED, "store stopped before this batch committed",
                     0);
    disconnect(s);
    prune_disconnect(s);
    return NULL;
}

/* ---- public API --------------------------------------------------------- */

int jw_store_start(jw_store **out, const jw_store_config *cfg)
{
    jw_store *s;

    *out = NULL;
    if (!cfg || !cfg->conninfo || cfg->max_group_deltas < 0 || cfg->backoff_min_ms < 0 ||
        cfg->backoff_max_ms < 0 || cfg->events_retention_s < 0 || cfg->prune_batch < 0 ||
        cfg->prune_interval_ms < 0)
        return JW_EINVAL;
    s = jw_xcalloc(1, sizeof(*s));
    s->conninfo = jw_xstrdup(cfg->conninfo);
    s->max_group = cfg->max_group_deltas ? cfg->max_group_deltas : DEFAULT_MAX_GROUP;
    s->backoff_min_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
    s->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (s->backoff_max_ms < s->backoff_min_ms)
        s->backoff_max_ms = s->backoff_min_ms;
    s->backoff_ms = s->backoff_min_ms;
    s->retention_s = cfg->events_retention_s;
    s->prune_batch = cfg->prune_batch ? cfg->prune_batch : DEFAULT_PRUNE_BATCH;
    s->prune_interval_us =
        (int64_t)(cfg->prune_interval_ms ? cfg->prune_interval_ms : DEFAULT_PRUNE_INTERVAL_MS) *
        1000;
    s->prune.next_us = jw_mono_us(); /* the first round as soon as the store is idle */
    jw_mailbox_init(&s->inbox, NULL, NULL);
    jw_mailbox_init(&s->done, cfg->wake, cfg->wake_arg);
    pthread_mutex_init(&s->stats_lock, NULL);
    jw_hist_init(&s->stats.commit_us, &commit_us_spec);
    jw_hist_init(&s->stats.commit_batches, &group_size_spec);
    jw_hist_init(&s->stats.commit_deltas, &group_size_spec);
    s->stats.outage_started_us = jw_mono_us();
    snprintf(s->stats.last_error, sizeof(s->stats.last_error), "not connected yet");
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        jw_buf_init(&s->rows[t], 4096);
    jw_buf_init(&s->ev_job, 1024);
    jw_buf_init(&s->ev_seq, 256);
    jw_buf_init(&s->ev_ts, 512);
    jw_buf_init(&s->ev_table, 512);
    jw_buf_init(&s->ev_op, 256);
    jw_buf_init(&s->ev_rows, 8192);
    jw_buf_init(&s->adv_job, 1024);
    jw_buf_init(&s->adv_lo, 256);
    jw_buf_init(&s->adv_hi, 256);
    jw_buf_init(&s->adv_n, 256);

    s->reader = jw_reader_start(s->conninfo,
                                cfg->max_reads_queued ? (size_t)cfg->max_reads_queued
                                                      : DEFAULT_MAX_READS_QUEUED,
                                cfg->wake, cfg->wake_arg);
    if (!s->reader || pthread_create(&s->thread, NULL, store_thread, s) != 0) {
        jw_store_free(s);
        return JW_ENOMEM;
    }
    s->thread_started = true;
    *out = s;
    return 0;
}

int jw_store_submit(jw_store *s, jw_batch *b)
{
    if (!b || b->count == 0)
        return JW_EINVAL;
    b->status = 0;
    b->queued_us = jw_mono_us();
    pthread_mutex_lock(&s->stats_lock);
    s->stats.queued_batches++;
    pthread_mutex_unlock(&s->stats_lock);
    if (!jw_mailbox_post(&s->inbox, &b->node)) {
        pthread_mutex_lock(&s->stats_lock);
        s->stats.queued_batches--;
        pthread_mutex_unlock(&s->stats_lock);
        return JW_ECLOSED;
    }
    return 0;
}

static size_t hand_over(jw_mailbox_node *n, jw_store_done_fn fn, void *arg)
{
    size_t count = 0;

    while (n) {
        jw_mailbox_node *next = n->next;

        fn(jw_container_of(n, jw_batch, node), arg);
        count++;
        n = next;
    }
    return count;
}

size_t jw_store_drain(jw_store *s, jw_store_done_fn fn, void *arg)
{
    return hand_over(jw_mailbox_take_all(&s->done), fn, arg);
}

size_t jw_store_wait(jw_store *s, int timeout_ms, jw_store_done_fn fn, void *arg)
{
    return hand_over(jw_mailbox_wait(&s->done, timeout_ms), fn, arg);
}

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

void jw_store_get_stats(jw_store *s, jw_store_stats *out)
{
    pthread_mutex_lock(&s->stats_lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->stats_lock);
    out->reads_queued = jw_reader_queued(s->reader);
}

void jw_store_stop(jw_store *s, int drain_ms)
{
    if (!s || !s->thread_started)
        return;
    atomic_store(&s->drain_deadline_us, jw_mono_us() + (int64_t)drain_ms * 1000);
    atomic_store(&s->stopping, true);
    jw_reader_stop(s->reader);
    jw_mailbox_close(&s->inbox);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
}

static void free_answer(jw_batch *b, void *arg)
{
    (void)arg;
    jw_batch_free(b);
}

void jw_store_free(jw_store *s)
{
    if (!s)
        return;
    jw_store_stop(s, 0);
    hand_over(jw_mailbox_take_all(&s->inbox), free_answer, NULL);
    hand_over(jw_mailbox_take_all(&s->done), free_answer, NULL);
    jw_reader_free(s->reader);
    jw_mailbox_release(&s->inbox);
    jw_mailbox_release(&s->done);
    pthread_mutex_destroy(&s->stats_lock);
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        jw_buf_release(&s->rows[t]);
    jw_buf_release(&s->ev_job);
    jw_buf_release(&s->ev_seq);
    jw_buf_release(&s->ev_ts);
    jw_buf_release(&s->ev_table);
    jw_buf_release(&s->ev_op);
    jw_buf_release(&s->ev_rows);
    jw_buf_release(&s->adv_job);
    jw_buf_release(&s->adv_lo);
    jw_buf_release(&s->adv_hi);
    jw_buf_release(&s->adv_n);
    free(s->seen);
    free(s->jobs);
    free(s->prune.jobs);
    free(s->conninfo);
    free(s);
}
