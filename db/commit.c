/*
 * commit.c - one group commit: the db thread's main connection, and the
 * transaction that writes a group of batches on it.
 *
 * A group is written as one pipelined implicit transaction:
 *
 *   upsert <table> from jsonb_populate_recordset($1)      one per table touched
 *   insert into job_events from unnest(...)               all journaled deltas
 *   update job_runs set last_seq ... from unnest(...)     lease fence, gap check
 *     (jw_advance_refused when a job did not advance)    and last_seq
 *   Sync                                                  commit
 *
 * then, once that committed and its batches were answered (so that their
 * publication does not wait for it), the other nodes' wake-up in a
 * transaction of its own:
 *
 *   select pg_notify('jw_events', p) from unnest($1), set_config(synchronous_commit off)
 *   Sync
 *
 * The notification (db/cluster.h) is one per group - several only when the
 * group names more jobs than fit in one payload (NOTIFY_MAX bytes; NOTIFY's
 * own limit is 8000) - and says only which jobs advanced to which seq:
 *
 *   <node id> LF <job>:<after>:<last> SP <job>:<after>:<last> ...
 *
 * where the group journaled seqs after+1 .. last of the job. Never row data:
 * whoever wants the rows reads job_events. It is sent once the group
 * committed, and not at all when it was rejected; a batch retried alone after
 * its group was rejected sends its own.
 *
 * Why apart: a transaction that NOTIFYs holds one lock of the whole database
 * from its pre-commit to the end of its commit, WAL flush included, so the
 * group commits of all nodes queue for it, each behind the others' fsync;
 * and when PostgreSQL's notification queue is full, the NOTIFY fails, and
 * with it the group. Alone, the notification commits without waiting for its
 * flush (the lock is held for microseconds), and a failed one fails nothing
 * else. Nothing depends on it being durable - it is a wake-up, the journal is
 * the record, and a lost one is made good by the catch-up reads
 * (db/cluster.h).
 *
 * Alone: the wake-up is for the other nodes only (each node ignores its
 * own), so a node that is the only live one on its database sends none -
 * with a few dozen deltas a group, the notification's transaction is about
 * a sixth of PostgreSQL's CPU per delta (docs/benchmarks.md). Each heartbeat
 * (every ttl/3) asks whether another node is registered and not dead, and
 * while alone the store asks every second (PEERS_POLL_US); a node that
 * starts listening announces itself at once (its id on jw_hello, read by the
 * cluster thread: jw_store_peer_joined), and a node's own cluster thread
 * tells its store the same when its LISTEN comes back (it may have missed a
 * hello). When the store learns of a peer after commits it did not notify,
 * it first announces itself in turn, in a transaction of its own after its
 * last silent commit, and the nodes that hear it catch up from the journal
 * (JW_NOTICE_LISTENING): a commit that no notification named is read then. A
 * node whose LISTEN began after that announcement caught up as it began. A
 * time alone without a commit owes nobody an announcement.
 * Until the first heartbeat, and for a store without one (node_incarnation
 * 0), it notifies.
 *
 * The parameters are built in buffers of the store that live as long as it
 * does. Everything here runs on the db thread (store.c decides which group
 * to write, and what its outcome means).
 */
#include "store_internal.h"

#include "jw_error.h"
#include "jw_log.h"
#include "pgconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* While alone, how often the store looks for another live node (see "Alone"). */
#define PEERS_POLL_US 1000000

/* Tables rows are upserted into, in foreign-key order. */
static const jw_table upsert_order[] = {
    JW_TABLE_JOB_RUNS,
    JW_TABLE_JOB_STEPS,
    JW_TABLE_OTP_REQUESTS,
    JW_TABLE_AUTH_SESSIONS,
};

/* ---- small helpers ------------------------------------------------------ */

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

/*
 * The journal's and the fence's columns go as binary one-dimensional arrays
 * (PostgreSQL's array_recv format, all integers big-endian):
 *
 *   ndim (1, or 0 when empty)  has-nulls (0)  element type OID
 *   [length  lower bound (1)]  then per element: byte length, bytes
 *
 * Nothing to escape here and nothing to parse there: a uuid is its 16 bytes,
 * an int8 its 8, and each row's JSON is validated once, by json_recv (as text
 * it was lexed twice: json_in over the whole array, then
 * json_array_elements).
 */
#define OID_INT8 20
#define OID_TEXT 25
#define OID_JSON 114
#define OID_UUID 2950
/* The most a statement's parameters may take: under PostgreSQL's 1 GB per message. */
#define BIND_MAX (1024 * 1024 * 1024 - 64 * 1024)

static void put_u32(jw_buf *b, uint32_t v)
{
    unsigned char p[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};

    jw_buf_add(b, p, sizeof(p));
}

static void bin_begin(jw_buf *b, uint32_t oid)
{
    jw_buf_reset(b);
    put_u32(b, 1);
    put_u32(b, 0);
    put_u32(b, oid);
    put_u32(b, 0); /* the length, set by bin_end */
    put_u32(b, 1);
}

static void bin_add(jw_buf *b, const void *p, size_t len)
{
    put_u32(b, (uint32_t)len);
    jw_buf_add(b, p, len);
}

static void bin_add_int8(jw_buf *b, int64_t v)
{
    uint64_t u = (uint64_t)v;
    unsigned char p[8];

    for (int i = 7; i >= 0; i--, u >>= 8)
        p[i] = (unsigned char)u;
    bin_add(b, p, sizeof(p));
}

/* A UUID's 36-character text as its 16 bytes; false if it is not one. */
static bool bin_add_uuid(jw_buf *b, const char *text)
{
    unsigned char u[16];
    size_t k = 0;

    for (size_t i = 0; i < JW_UUID_LEN; i++) {
        int hi, lo;

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-')
                return false;
            continue;
        }
        hi = jw_hex_digit(text[i]);
        lo = jw_hex_digit(text[++i]);
        if (hi < 0 || lo < 0 || k == sizeof(u))
            return false;
        u[k++] = (unsigned char)(hi << 4 | lo);
    }
    if (k != sizeof(u))
        return false;
    bin_add(b, u, sizeof(u));
    return true;
}

/* Sets the element count; an empty array has no dimension at all. */
static void bin_end(jw_buf *b, size_t count)
{
    unsigned char *p = (unsigned char *)b->data;

    if (!count) {
        p[3] = 0; /* ndim */
        b->len = 12;
        return;
    }
    p[12] = (unsigned char)(count >> 24);
    p[13] = (unsigned char)(count >> 16);
    p[14] = (unsigned char)(count >> 8);
    p[15] = (unsigned char)count;
}

void store__commit_init(jw_store *s)
{
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        jw_buf_init(&s->rows[t], 4096);
    jw_buf_init(&s->ev_job, 1024);
    jw_buf_init(&s->ev_seq, 256);
    jw_buf_init(&s->ev_ts, 512);
    jw_buf_init(&s->ev_table, 512);
    jw_buf_init(&s->ev_op, 256);
    jw_buf_init(&s->ev_rows, 8192);
    jw_buf_init(&s->adv_job, 1024);
    jw_buf_init(&s->adv_epoch, 256);
    jw_buf_init(&s->adv_lo, 256);
    jw_buf_init(&s->adv_hi, 256);
    jw_buf_init(&s->adv_n, 256);
    jw_buf_init(&s->notify, 1024);
    s->peers = s->announced = true;
}

void store__commit_release(jw_store *s)
{
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        jw_buf_release(&s->rows[t]);
    jw_buf_release(&s->ev_job);
    jw_buf_release(&s->ev_seq);
    jw_buf_release(&s->ev_ts);
    jw_buf_release(&s->ev_table);
    jw_buf_release(&s->ev_op);
    jw_buf_release(&s->ev_rows);
    jw_buf_release(&s->adv_job);
    jw_buf_release(&s->adv_epoch);
    jw_buf_release(&s->adv_lo);
    jw_buf_release(&s->adv_hi);
    jw_buf_release(&s->adv_n);
    jw_buf_release(&s->notify);
    free(s->seen);
    free(s->jobs);
}

/* ---- connection --------------------------------------------------------- */

void store__disconnect(jw_store *s)
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
    store__set_error(s, "%s", PQresultErrorMessage(res));
    return false;
}

/*
 * Builds and prepares the upsert of one table from its catalog columns, so a
 * migration that adds a column needs no change here. The store owns
 * job_runs.last_seq and the job's lease (owner_node, lease_epoch: the fenced
 * advance moves them), so rows never write them, on INSERT or UPDATE.
 */
static bool store_column(jw_table t, const char *col)
{
    return t == JW_TABLE_JOB_RUNS &&
           (strcmp(col, "last_seq") == 0 || strcmp(col, "owner_node") == 0 ||
            strcmp(col, "lease_epoch") == 0);
}

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

        if (store_column(t, col))
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
        store__set_error(s, "table %s has no columns", table);
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

/* $7, the group's commit stamp, is every row's cts. */
static const char sql_events[] =
    "INSERT INTO job_events (job_run_id, seq, ts, cts, table_name, op, row_data) "
    "SELECT j, s, timestamptz 'epoch' + t * interval '1 microsecond', "
    "timestamptz 'epoch' + $7::int8 * interval '1 microsecond', tb, op, r "
    "FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::json[]) "
    "AS u(j, s, t, tb, op, r)";

/*
 * The fenced advance (db/migrations/004, 007, 010): each job's last_seq
 * moves to its last journaled seq only where the group continues it, and
 * only while this node holds the job at the batch's epoch (a brand-new job:
 * nobody does) and $2, this process's incarnation, is the live one (0: not
 * checked). When a job did not advance, jw_advance_refused raises why, and
 * the group commits nothing.
 */
static const char sql_advance[] =
    "WITH adv AS (UPDATE job_runs r SET last_seq = u.hi, owner_node = $1::text, lease_epoch = u.e"
    " FROM unnest($3::uuid[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])"
    " AS u(j, e, lo, hi, n)"
    " WHERE r.id = u.j AND r.last_seq = u.lo - 1 AND u.hi - u.lo + 1 = u.n"
    " AND ((r.owner_node = $1::text AND r.lease_epoch = u.e)"
    " OR (r.owner_node IS NULL AND r.lease_epoch = 0 AND u.lo = 1))"
    " AND ($2::int8 <= 0 OR EXISTS (SELECT 1 FROM jw_nodes w WHERE w.id = $1::text"
    " AND w.incarnation = $2::int8 AND NOT w.dead))"
    " RETURNING 1)"
    " SELECT CASE WHEN (SELECT count(*) FROM adv) = cardinality($3::uuid[]) THEN 0"
    " ELSE jw_advance_refused($1::text, $2::int8, $3::uuid[], $4::int8[], $5::int8[], $6::int8[],"
    " $7::int8[]) END";

/* Another node's commit of the same seq (a job taken over) is not ours. */
static const char sql_committed[] =
    "SELECT (extract(epoch FROM e.cts) * 1000000)::int8 FROM job_events e "
    "JOIN job_runs r ON r.id = e.job_run_id "
    "WHERE e.job_run_id = $1::uuid AND e.seq = $2::int8 "
    "AND r.owner_node = $3::text AND r.lease_epoch = $4::int8";

/* The group's wake-up for the other nodes: one NOTIFY per payload, committed without
 * waiting for the WAL flush (see the top). */
static const char sql_notify[] =
    "SELECT pg_notify('jw_events', p)"
    " FROM unnest($1::text[]) AS p, set_config('synchronous_commit', 'off', true)";

/* Answers whether another node is alive (registered, not declared dead): see "Alone". */
static const char sql_heartbeat[] =
    "UPDATE jw_nodes SET heartbeat_at = now() "
    "WHERE id = $1::text AND incarnation = $2::int8 AND NOT dead "
    "RETURNING EXISTS (SELECT 1 FROM jw_nodes o WHERE o.id <> $1::text AND NOT o.dead)";

/* Why a heartbeat renewed nothing: the row's incarnation now (another process
 * registered under this id) and whether it is marked dead. */
static const char sql_node_fate[] = "SELECT incarnation, dead FROM jw_nodes WHERE id = $1::text";

/* While alone, whether another node is live now (see "Alone"). */
static const char sql_peers[] =
    "SELECT EXISTS (SELECT 1 FROM jw_nodes o WHERE o.id <> $1::text AND NOT o.dead)";

/* "Catch up on my jobs": to the nodes, once this one notifies again (see "Alone"). */
static const char sql_announce[] =
    "SELECT pg_notify('jw_hello', $1::text), set_config('synchronous_commit', 'off', true)";

/* The statements prepared on every (re)connection, besides the upserts. */
static const struct {
    const char *name, *sql, *what;
} statements[] = {
    {"jw_events", sql_events, "preparing the events insert"},
    {"jw_advance", sql_advance, "preparing the seq check"},
    {"jw_committed", sql_committed, "preparing the commit check"},
    {"jw_heartbeat", sql_heartbeat, "preparing the heartbeat"},
    {"jw_node_fate", sql_node_fate, "preparing the node's fate"},
    {"jw_notify", sql_notify, "preparing the notification"},
    {"jw_peers", sql_peers, "preparing the peers check"},
    {"jw_announce", sql_announce, "preparing the announcement"},
};

bool store__connect(jw_store *s)
{
    PGresult *res;

    s->conn = db__connect(s->conninfo, "jobwire-store", true);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        store__set_error(s, "cannot connect: %s", PQerrorMessage(s->conn));
        goto fail;
    }
    {
        /*
         * A process stopped (SIGSTOP, a frozen VM) in the middle of sending
         * a group leaves its transaction open, and its row locks would keep
         * the jobs from any other node's claim (SKIP LOCKED) for as long as
         * the connection lives: PostgreSQL ends such a transaction after the
         * node's TTL. A group never waits on the client mid-transaction
         * otherwise (it is pipelined).
         */
        char set[96];
        bool ok;

        snprintf(set, sizeof(set), "SET idle_in_transaction_session_timeout = %lld",
                 (long long)(s->node_ttl_us / 1000));
        res = PQexec(s->conn, set);
        ok = exec_ok(s, res, "setting idle_in_transaction_session_timeout");
        PQclear(res);
        if (!ok)
            goto fail;
    }
    for (size_t i = 0; i < sizeof(upsert_order) / sizeof(upsert_order[0]); i++)
        if (!prepare_upsert(s, upsert_order[i]))
            goto fail;
    for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++) {
        bool ok;

        res = PQprepare(s->conn, statements[i].name, statements[i].sql, 0, NULL);
        ok = exec_ok(s, res, statements[i].what);
        PQclear(res);
        if (!ok)
            goto fail;
    }
    if (PQenterPipelineMode(s->conn) != 1) {
        store__set_error(s, "cannot enter pipeline mode: %s", PQerrorMessage(s->conn));
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
void store__add_array_item(jw_buf *b, const char *item, size_t len)
{
    jw_buf_addch(b, b->len ? ',' : '{');
    jw_buf_add(b, item, len);
}

void store__close_array(jw_buf *b)
{
    if (!b->len)
        jw_buf_addch(b, '{');
    jw_buf_addch(b, '}');
}

static void reset_buffers(jw_store *s)
{
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        jw_buf_reset(&s->rows[t]);
    bin_begin(&s->ev_job, OID_UUID);
    bin_begin(&s->ev_seq, OID_INT8);
    bin_begin(&s->ev_ts, OID_INT8);
    bin_begin(&s->ev_table, OID_TEXT);
    bin_begin(&s->ev_op, OID_TEXT);
    bin_begin(&s->ev_rows, OID_JSON);
    s->ev_count = 0;
    bin_begin(&s->adv_job, OID_UUID);
    bin_begin(&s->adv_epoch, OID_INT8);
    bin_begin(&s->adv_lo, OID_INT8);
    bin_begin(&s->adv_hi, OID_INT8);
    bin_begin(&s->adv_n, OID_INT8);
    jw_buf_reset(&s->notify);
    s->notify_count = 0;
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

/* A payload's bytes at most: under NOTIFY's 8000, with room for the node id's escapes. */
#define NOTIFY_MAX 7900

/* Appends text to a quoted element of an array literal (" and \ escaped). */
static void add_quoted(jw_buf *b, const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '"' || text[i] == '\\')
            jw_buf_addch(b, '\\');
        jw_buf_addch(b, text[i]);
    }
}

/* Opens the next payload: its node id line. */
static size_t open_payload(jw_store *s)
{
    size_t start;

    jw_buf_adds(&s->notify, s->notify_count ? ",\"" : "{\"");
    start = s->notify.len;
    add_quoted(&s->notify, s->node_id, strlen(s->node_id));
    jw_buf_addch(&s->notify, '\n');
    s->notify_count++;
    return start;
}

/* The group's jw_events payloads (see the top of this file), from its job ranges. */
static void build_notify(jw_store *s)
{
    size_t start = 0, entries = 0;
    char entry[JW_UUID_LEN + 48];

    for (size_t i = 0; i < s->jobs_cap; i++) {
        const struct job_range *r = &s->jobs[i];
        int n;

        if (!r->job_id)
            continue;
        n = snprintf(entry, sizeof(entry), "%.*s:%lld:%lld", JW_UUID_LEN, r->job_id,
                     (long long)(r->first - 1), (long long)r->last);
        if (!s->notify_count || s->notify.len - start + 1 + (size_t)n > NOTIFY_MAX) {
            if (s->notify_count)
                jw_buf_addch(&s->notify, '"');
            start = open_payload(s);
            entries = 0;
        }
        if (entries++)
            jw_buf_addch(&s->notify, ' ');
        jw_buf_add(&s->notify, entry, (size_t)n);
    }
    if (s->notify_count)
        jw_buf_adds(&s->notify, "\"}");
}

/*
 * Fills the parameter buffers for the first `count` batches of the FIFO.
 * Returns false with a message when the group is malformed in a way we can
 * tell without asking PostgreSQL (seqs out of order within the group).
 */
static bool build_group(jw_store *s, size_t count, size_t *ndeltas, char *err, size_t errlen)
{
    jw_mailbox_node *n;
    size_t total = 0, njobs, i;

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
                r->epoch = b->lease_epoch;
            } else if (b->lease_epoch != r->epoch) {
                snprintf(err, errlen, "job %s: batches of lease epochs %lld and %lld in one group",
                         d->job_id, (long long)r->epoch, (long long)b->lease_epoch);
                return false;
            } else if (d->seq != r->last + 1) {
                snprintf(err, errlen, "job %s: seq %lld follows seq %lld in the same group",
                         d->job_id, (long long)d->seq, (long long)r->last);
                return false;
            }
            r->last = d->seq;
            r->n++;
            if (!bin_add_uuid(&s->ev_job, d->job_id)) {
                snprintf(err, errlen, "job id %.*s is not a UUID", JW_UUID_LEN, d->job_id);
                return false;
            }
            bin_add_int8(&s->ev_seq, d->seq);
            bin_add_int8(&s->ev_ts, d->ts_us);
            bin_add(&s->ev_table, jw_table_name(d->table), strlen(jw_table_name(d->table)));
            bin_add(&s->ev_op, jw_op_name(d->op), strlen(jw_op_name(d->op)));
            bin_add(&s->ev_rows, d->row, d->row_len);
            s->ev_count++;
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

    njobs = 0;
    for (i = 0; i < s->jobs_cap; i++) {
        const struct job_range *r = &s->jobs[i];

        if (!r->job_id)
            continue;
        if (!bin_add_uuid(&s->adv_job, r->job_id)) { /* checked above, with its deltas */
            snprintf(err, errlen, "job id %.*s is not a UUID", JW_UUID_LEN, r->job_id);
            return false;
        }
        bin_add_int8(&s->adv_epoch, r->epoch);
        bin_add_int8(&s->adv_lo, r->first);
        bin_add_int8(&s->adv_hi, r->last);
        bin_add_int8(&s->adv_n, r->n);
        njobs++;
    }
    for (int t = 0; t < JW_TABLE__COUNT; t++)
        if (s->rows[t].len)
            jw_buf_addch(&s->rows[t], ']');
    bin_end(&s->ev_job, s->ev_count);
    bin_end(&s->ev_seq, s->ev_count);
    bin_end(&s->ev_ts, s->ev_count);
    bin_end(&s->ev_table, s->ev_count);
    bin_end(&s->ev_op, s->ev_count);
    bin_end(&s->ev_rows, s->ev_count);
    bin_end(&s->adv_job, njobs);
    bin_end(&s->adv_epoch, njobs);
    bin_end(&s->adv_lo, njobs);
    bin_end(&s->adv_hi, njobs);
    bin_end(&s->adv_n, njobs);
    /*
     * PostgreSQL refuses a Bind message past 1 GB and drops the connection,
     * which would only repeat: refused here, the group is split like any
     * other rejected one, down to the batch that cannot go.
     */
    {
        size_t bind = s->ev_job.len + s->ev_seq.len + s->ev_ts.len + s->ev_table.len +
                      s->ev_op.len + s->ev_rows.len;

        if (bind > BIND_MAX) {
            snprintf(err, errlen,
                     "group too large: %zu bytes in one statement (PostgreSQL takes at most %d)",
                     bind, BIND_MAX);
            return false;
        }
    }
    if (s->ev_count)
        build_notify(s);
    return true;
}

/* ---- writing ------------------------------------------------------------ */

/* "primary message (detail)" without libpq's "ERROR:" prefix and newlines. */
void store__describe_error(const PGresult *res, char *err, size_t errlen)
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
            s->lease_lost = state && strcmp(state, JW_SQLSTATE_LEASE_LOST) == 0;
            store__describe_error(res, err, errlen);
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

static PGresult *run_one(jw_store *s, const char *name, int n, const char *const *params);

/*
 * The committed group's notification, in its own transaction (see the top),
 * sent once the group is answered: the publication does not wait for it.
 * A failure costs the other nodes a wake-up, not a delta: their catch-up
 * reads the journal; a broken connection shows at the next write.
 */
void store__notify_group(jw_store *s)
{
    const char *nt[1] = {s->notify.data};
    PGresult *res;
    bool ok;

    if (!s->notify_count)
        return;
    if (!s->peers) {
        /* A commit nobody was told of: the next peer hears this node's hello first. */
        s->announced = false;
        pthread_mutex_lock(&s->stats_lock);
        s->stats.notifications_skipped += s->notify_count;
        pthread_mutex_unlock(&s->stats_lock);
        return;
    }
    res = run_one(s, "jw_notify", 1, nt);
    ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;

    PQclear(res);
    pthread_mutex_lock(&s->stats_lock);
    if (ok)
        s->stats.notifications += s->notify_count;
    else
        s->stats.notifications_failed++;
    pthread_mutex_unlock(&s->stats_lock);
}

void store__group_unnotified(jw_store *s)
{
    /*
     * Its NOTIFY was never sent. A hello makes the nodes that hear it catch
     * up at once (now, or when the next peer appears if alone).
     */
    s->announced = false;
}

enum write_result store__write_group(jw_store *s, size_t count, char *err, size_t errlen)
{
    enum write_result wr = WRITE_OK;
    size_t ndeltas, sent = 0;
    PGresult *res;
    char name[64], cts[24];

    err[0] = '\0';
    s->lease_lost = false;
    if (!build_group(s, count, &ndeltas, err, errlen))
        return WRITE_REJECTED;
    /*
     * The commit stamp: journaled with the deltas (job_events.cts), answered
     * as the batches' committed_us, so a delta replayed from the journal
     * carries the cts it was published with. It has to be known before the
     * COMMIT, so it is taken as the transaction leaves.
     */
    s->group_cts = jw_now_us();
    snprintf(cts, sizeof(cts), "%lld", (long long)s->group_cts);

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
    if (s->ev_count) {
        /* Binary arrays (see bin_begin) but for the stamp, and the advance's first two. */
        const jw_buf *evb[6] = {&s->ev_job,   &s->ev_seq, &s->ev_ts,
                                &s->ev_table, &s->ev_op,  &s->ev_rows};
        const jw_buf *advb[5] = {&s->adv_job, &s->adv_epoch, &s->adv_lo, &s->adv_hi, &s->adv_n};
        const char *ev[7], *adv[7];
        int evlen[7], evfmt[7], advlen[7], advfmt[7];

        for (int k = 0; k < 6; k++) {
            ev[k] = evb[k]->data;
            evlen[k] = (int)evb[k]->len;
            evfmt[k] = 1;
        }
        ev[6] = cts;
        evlen[6] = 0;
        evfmt[6] = 0;
        adv[0] = s->node_id;
        adv[1] = s->incarnation_text;
        advlen[0] = advlen[1] = 0;
        advfmt[0] = advfmt[1] = 0;
        for (int k = 0; k < 5; k++) {
            adv[k + 2] = advb[k]->data;
            advlen[k + 2] = (int)advb[k]->len;
            advfmt[k + 2] = 1;
        }
        if (!PQsendQueryPrepared(s->conn, "jw_events", 7, ev, evlen, evfmt, 0))
            goto lost;
        sent++;
        if (!PQsendQueryPrepared(s->conn, "jw_advance", 7, adv, advlen, advfmt, 0))
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
 * One prepared statement on its own in the pipeline: its result (the
 * caller clears it), or NULL when the connection failed on the way.
 */
static PGresult *run_one(jw_store *s, const char *name, int n, const char *const *params)
{
    PGresult *res, *first = NULL;

    if (!PQsendQueryPrepared(s->conn, name, n, params, NULL, NULL, 0) || !PQpipelineSync(s->conn))
        return NULL;
    while ((res = PQgetResult(s->conn)) != NULL) {
        if (!first)
            first = res;
        else
            PQclear(res);
    }
    res = PQgetResult(s->conn);
    if (!first || !res || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        PQclear(first);
        first = NULL;
    }
    PQclear(res);
    return first;
}

/*
 * After a lost connection: did the group at the front commit? Its deltas were
 * one transaction, so one journaled delta answers for all. Returns 1 yes,
 * 0 no (or nothing to check: upserts alone are safe to repeat), -1 unknown.
 * On yes, group_cts is the stamp the journal holds for the group.
 */
int store__group_committed(jw_store *s, size_t count)
{
    jw_mailbox_node *n = s->pending_head;
    const jw_delta *probe = NULL;
    int64_t epoch = 0;
    char seq[32], ep[32];
    const char *params[4];
    PGresult *res;
    int answer = -1;

    for (size_t i = 0; i < count && !probe; i++, n = n->next) {
        jw_batch *b = jw_container_of(n, jw_batch, node);

        for (size_t k = 0; k < b->count && !probe; k++)
            if (b->deltas[k]->seq > 0) {
                probe = b->deltas[k];
                epoch = b->lease_epoch;
            }
    }
    if (!probe)
        return 0;
    snprintf(seq, sizeof(seq), "%lld", (long long)probe->seq);
    snprintf(ep, sizeof(ep), "%lld", (long long)epoch);
    params[0] = probe->job_id;
    params[1] = seq;
    params[2] = s->node_id;
    params[3] = ep;
    if ((res = run_one(s, "jw_committed", 4, params)) == NULL)
        return -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        answer = PQntuples(res) > 0;
        if (answer && !PQgetisnull(res, 0, 0))
            s->group_cts = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }
    PQclear(res);
    return answer;
}

int store__heartbeat(jw_store *s)
{
    char inc[32];
    const char *params[2] = {s->node_id, inc};
    PGresult *res;
    int answer = -1;

    snprintf(inc, sizeof(inc), "%lld", (long long)s->incarnation);
    if ((res = run_one(s, "jw_heartbeat", 2, params)) == NULL)
        return -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        answer = PQntuples(res) > 0;
        if (answer)
            s->peers = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    } else {
        store__set_error(s, "heartbeat: %s", PQresultErrorMessage(res));
    }
    PQclear(res);
    return answer;
}

int64_t store__node_successor(jw_store *s)
{
    const char *params[1] = {s->node_id};
    PGresult *res = run_one(s, "jw_node_fate", 1, params);
    int64_t now = 0;

    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 1), "f") == 0)
        now = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return now != s->incarnation ? now : 0;
}

/*
 * Takes what the cluster thread heard (a node announced itself), looks for
 * a live peer every PEERS_POLL_US while alone, and announces this node once
 * it has peers again after a silent commit (see "Alone"). An announcement
 * that fails is tried again on the next call; the groups notify meanwhile.
 */
void store__check_peers(jw_store *s)
{
    const char *params[1] = {s->node_id};
    PGresult *res;

    if (atomic_exchange(&s->peer_news, false))
        s->peers = true;
    if (!s->peers && s->conn && jw_mono_us() >= s->next_peers_us) {
        s->next_peers_us = jw_mono_us() + PEERS_POLL_US;
        if ((res = run_one(s, "jw_peers", 1, params)) == NULL)
            return;
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            s->peers = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
    }
    if (!s->peers || s->announced || !s->conn)
        return;
    if ((res = run_one(s, "jw_announce", 1, params)) == NULL)
        return;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        s->announced = true;
        jw_log_info("db: another node is live; notifying its commits again");
    } else {
        jw_log_warn("db: announcing this node failed: %s", PQresultErrorMessage(res));
    }
    PQclear(res);
}
