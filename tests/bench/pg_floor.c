/*
 * pg_floor - the least PostgreSQL CPU a durable delta can cost on this
 * machine, with jobwire's tables and its group commit's shape, so that what
 * the store spends per delta (db/commit.c) can be set against a floor.
 *
 * What a delta must write, by DESIGN.md's durability rules, is its journal
 * row (job_events: the changed row as JSON, its seq and stamps) and the row
 * itself (here a job_steps row), in a transaction that is flushed before it
 * is answered. This tool writes exactly that and nothing more, by the
 * cheapest means libpq offers a pipelined client:
 *
 *   - every value as a typed binary array parameter (array_recv), so that no
 *     JSON is parsed except the journal's json column (json_recv) and the
 *     row's jsonb column, and no text is converted by an input function;
 *   - new rows by a plain INSERT (no ON CONFLICT check), changed rows by a
 *     plain UPDATE ... FROM unnest(...) on the primary key;
 *   - no seq bookkeeping on job_runs, no lease fence, no NOTIFY: the store's
 *     fenced advance (an UPDATE of job_runs per group), its conflict checks
 *     and its wake-up for other nodes are what it adds on top of this;
 *   - BEGIN, the statements and COMMIT sent together, one Sync, one round
 *     trip per group, synchronous_commit on (the cluster's setting).
 *
 * The tables are scratch copies of job_events and job_steps (their columns,
 * keys, index and fillfactor, as db/migrations/ define them) in a schema of
 * its own, jw_floor, made afresh for each group size and dropped at the end;
 * a CHECKPOINT precedes each size, as scripts/bench-ws does before each run.
 * The workload has the product shape's mix (a lat-50 run of scripts/bench-ws
 * wrote 0.30 new step rows and 0.45 step updates per journaled delta; here
 * every delta writes one row, 40 % of them new): --jobs jobs, each delta
 * changing one job's current step or starting a new one, a group taking
 * deltas of distinct jobs round-robin. A row changed twice in one group is
 * written once, with its last state, as the store does.
 *
 * Printed per group size: deltas/s over the run (one connection, one group in
 * flight), PostgreSQL CPU per delta (its backend's, and all of PostgreSQL's
 * processes: the postmaster's children and its reaped children, from /proc,
 * when the server is on this machine), WAL bytes per delta, and the group's
 * round trip p50/p99.
 *
 * With --watchers, one run of the whole path from change to client at its
 * floor instead (see "the pipeline" below).
 *
 * Usage: pg_floor [--url URL ($DATABASE_URL)] [--sizes "10 25 50 100 250"]
 *                 [--deltas N per size (60000)] [--jobs N (200)] [--rate DELTAS/S]
 *        pg_floor --watchers W [--url URL] [--deltas N] [--jobs N] [--rate DELTAS/S]
 *                 [--burst B (3)] [--max-group N (250)] [--size BYTES (700)]
 *                 [--reader-cpu CPU] [--db-thread]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT4 23
#define OID_TEXT 25
#define OID_JSON 114
#define OID_TSTZ 1184
#define OID_UUID 2950
#define OID_JSONB 3802

/* Microseconds from the Unix epoch to PostgreSQL's (2000-01-01). */
#define PG_EPOCH_US 946684800000000LL

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "pg_floor: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static int64_t now_ns(clockid_t c)
{
    struct timespec ts;

    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_us(clockid_t c)
{
    return now_ns(c) / 1000;
}

/* ---- a growable byte buffer and PostgreSQL's binary array format ------- */

typedef struct {
    char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;

        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            die("out of memory", NULL);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put32(buf *b, uint32_t v)
{
    v = htonl(v);
    put(b, &v, 4);
}

static void put64(buf *b, uint64_t v)
{
    put32(b, (uint32_t)(v >> 32));
    put32(b, (uint32_t)v);
}

/* A one-dimensional array of oid's type; its length is patched by arr_end. */
typedef struct {
    buf b;
    size_t n;
} arr;

static void arr_begin(arr *a, uint32_t oid)
{
    a->b.len = 0;
    a->n = 0;
    put32(&a->b, 1);   /* ndim */
    put32(&a->b, 1);   /* may hold NULLs */
    put32(&a->b, oid); /* element type */
    put32(&a->b, 0);   /* length, patched */
    put32(&a->b, 1);   /* lower bound */
}

static void arr_null(arr *a)
{
    put32(&a->b, UINT32_MAX);
    a->n++;
}

static void arr_bytes(arr *a, const void *p, size_t n)
{
    put32(&a->b, (uint32_t)n);
    put(&a->b, p, n);
    a->n++;
}

static void arr_text(arr *a, const char *s)
{
    arr_bytes(a, s, strlen(s));
}

static void arr_int4(arr *a, int32_t v)
{
    put32(&a->b, 4);
    put32(&a->b, (uint32_t)v);
    a->n++;
}

static void arr_int8(arr *a, int64_t v)
{
    put32(&a->b, 8);
    put64(&a->b, (uint64_t)v);
    a->n++;
}

static void arr_tstz(arr *a, int64_t unix_us)
{
    if (!unix_us) {
        arr_null(a);
        return;
    }
    arr_int8(a, unix_us - PG_EPOCH_US);
}

static void arr_bool(arr *a, bool v)
{
    char c = v;

    arr_bytes(a, &c, 1);
}

static void arr_uuid(arr *a, const unsigned char id[16])
{
    arr_bytes(a, id, 16);
}

/* jsonb's binary input is a version byte, then the JSON text. */
static void arr_jsonb(arr *a, const char *json)
{
    size_t n = strlen(json);

    put32(&a->b, (uint32_t)n + 1);
    put(&a->b, "\1", 1);
    put(&a->b, json, n);
    a->n++;
}

static void arr_end(arr *a)
{
    uint32_t n = htonl((uint32_t)a->n);

    memcpy(a->b.p + 12, &n, 4);
}

/* ---- the workload ------------------------------------------------------ */

struct step {
    unsigned char id[16];
    int64_t started_us, created_us, updated_us;
    int32_t tx, attempt;
    const char *status;
    char ref[33];
    unsigned group; /* the last group that wrote it */
};

struct job {
    unsigned char id[16];
    int64_t seq;
    struct step *steps;
    size_t nsteps, cap;
};

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void new_uuid(unsigned char id[16])
{
    uint64_t a = next_rand(), b = next_rand();

    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
    id[6] = (unsigned char)((id[6] & 0x0f) | 0x40);
    id[8] = (unsigned char)((id[8] & 0x3f) | 0x80);
}

static void uuid_text(const unsigned char id[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;

    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[id[i] >> 4];
        *o++ = hex[id[i] & 15];
    }
    *o = 0;
}

static void iso(int64_t unix_us, char out[64])
{
    time_t s = (time_t)(unix_us / 1000000);
    struct tm tm;

    if (!unix_us) {
        strcpy(out, "null");
        return;
    }
    gmtime_r(&s, &tm);
    snprintf(out, 64, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(unix_us % 1000000));
}

static const char *statuses[] = {"in_progress", "waiting_otp", "retrying", "completed"};
static const char pad[] = "sim provider answer, reference and amount as the engine records them";

static void step_data(const struct step *st, char *out, size_t len)
{
    snprintf(out, len, "{\"amount\": 300, \"ref\": \"%s\", \"note\": \"%s\"}", st->ref, pad);
}

/* The row as the engine journals it (about 530 bytes, as in the product shape). */
static void row_json(const struct job *j, const struct step *st, buf *out)
{
    char id[37], job[37], data[256], started[64], created[64], updated[64];
    char line[1024];
    int n;

    uuid_text(st->id, id);
    uuid_text(j->id, job);
    step_data(st, data, sizeof(data));
    iso(st->started_us, started);
    iso(st->created_us, created);
    iso(st->updated_us, updated);
    n = snprintf(line, sizeof(line),
                 "{\"id\":\"%s\",\"job_run_id\":\"%s\",\"step_name\":\"process_payment\","
                 "\"step_type\":\"external\",\"status\":\"%s\",\"transaction_index\":%d,"
                 "\"started_at\":%s,\"completed_at\":null,\"timeout_at\":null,\"step_data\":%s,"
                 "\"error_message\":null,\"created_at\":%s,\"attempt\":%d,"
                 "\"idempotency_key\":\"pay-%s\",\"next_retry_at\":null,\"updated_at\":%s,"
                 "\"outcome_unknown\":false}",
                 id, job, st->status, st->tx, started, data, created, st->attempt, id, updated);
    out->len = 0;
    put(out, line, (size_t)n);
}

/* ---- the tables -------------------------------------------------------- */

/*
 * The update's row set is a function scan, which the planner guesses at 100
 * rows: on a young table it would hash the whole table. One index probe per
 * row (what the store's INSERT ... ON CONFLICT does) is the plan wanted.
 */
static const char ddl[] =
    "DEALLOCATE ALL;"
    "SET enable_hashjoin = off; SET enable_mergejoin = off;"
    "SET client_min_messages = warning;"
    "DROP SCHEMA IF EXISTS jw_floor CASCADE;"
    "CREATE SCHEMA jw_floor;"
    "CREATE TABLE jw_floor.events (job_run_id uuid NOT NULL, seq bigint NOT NULL,"
    " ts timestamptz NOT NULL, table_name text NOT NULL, op text NOT NULL,"
    " row_data json NOT NULL, cts timestamptz, PRIMARY KEY (job_run_id, seq));"
    "CREATE TABLE jw_floor.steps (id uuid PRIMARY KEY, job_run_id uuid NOT NULL,"
    " step_name text NOT NULL, step_type text NOT NULL, status text NOT NULL,"
    " transaction_index integer, started_at timestamptz, completed_at timestamptz,"
    " timeout_at timestamptz, step_data jsonb NOT NULL DEFAULT '{}'::jsonb,"
    " error_message text, created_at timestamptz NOT NULL DEFAULT now(),"
    " attempt integer NOT NULL DEFAULT 0, idempotency_key text, next_retry_at timestamptz,"
    " updated_at timestamptz NOT NULL DEFAULT now(),"
    " outcome_unknown boolean NOT NULL DEFAULT false) WITH (fillfactor = 70);"
    "CREATE INDEX ON jw_floor.steps (job_run_id, created_at, id);";

static const char sql_events[] =
    "INSERT INTO jw_floor.events (job_run_id, seq, ts, table_name, op, row_data, cts) "
    "SELECT * FROM unnest($1::uuid[], $2::int8[], $3::timestamptz[], $4::text[], $5::text[], "
    "$6::json[], $7::timestamptz[])";

#define STEP_COLS 17

static const char sql_insert[] =
    "INSERT INTO jw_floor.steps SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], "
    "$4::text[], $5::text[], $6::int4[], $7::timestamptz[], $8::timestamptz[], "
    "$9::timestamptz[], $10::jsonb[], $11::text[], $12::timestamptz[], $13::int4[], "
    "$14::text[], $15::timestamptz[], $16::timestamptz[], $17::bool[])";

static const char sql_update[] =
    "UPDATE jw_floor.steps s SET job_run_id = u.j, step_name = u.sn, step_type = u.sty,"
    " status = u.st, transaction_index = u.tx, started_at = u.sa, completed_at = u.ca,"
    " timeout_at = u.ta, step_data = u.sd, error_message = u.em, created_at = u.cr,"
    " attempt = u.at, idempotency_key = u.ik, next_retry_at = u.nr, updated_at = u.ua,"
    " outcome_unknown = u.ou "
    "FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int4[],"
    " $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::jsonb[], $11::text[],"
    " $12::timestamptz[], $13::int4[], $14::text[], $15::timestamptz[], $16::timestamptz[],"
    " $17::bool[]) AS u(id, j, sn, sty, st, tx, sa, ca, ta, sd, em, cr, at, ik, nr, ua, ou) "
    "WHERE s.id = u.id";

static const uint32_t step_oids[STEP_COLS] = {
    OID_UUID,  OID_UUID, OID_TEXT, OID_TEXT, OID_TEXT, OID_INT4, OID_TSTZ, OID_TSTZ, OID_TSTZ,
    OID_JSONB, OID_TEXT, OID_TSTZ, OID_INT4, OID_TEXT, OID_TSTZ, OID_TSTZ, OID_BOOL};

static void add_step(arr *c, const struct job *j, const struct step *st)
{
    char data[256], key[48], id[37];

    uuid_text(st->id, id);
    snprintf(key, sizeof(key), "pay-%s", id);
    step_data(st, data, sizeof(data));
    arr_uuid(&c[0], st->id);
    arr_uuid(&c[1], j->id);
    arr_text(&c[2], "process_payment");
    arr_text(&c[3], "external");
    arr_text(&c[4], st->status);
    arr_int4(&c[5], st->tx);
    arr_tstz(&c[6], st->started_us);
    arr_null(&c[7]);
    arr_null(&c[8]);
    arr_jsonb(&c[9], data);
    arr_null(&c[10]);
    arr_tstz(&c[11], st->created_us);
    arr_int4(&c[12], st->attempt);
    arr_text(&c[13], key);
    arr_null(&c[14]);
    arr_tstz(&c[15], st->updated_us);
    arr_bool(&c[16], false);
}

/* ---- PostgreSQL's CPU from /proc --------------------------------------- */

/* utime+stime (and, with kids, cutime+cstime) of pid in clock ticks; -1 if unreadable. */
static long long proc_ticks(int pid, bool kids, int *ppid)
{
    char path[64], line[1024], *p;
    long long v[4];
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    if (!fgets(line, sizeof(line), f)) {
        fclose(f);
        return -1;
    }
    fclose(f);
    p = strrchr(line, ')'); /* the command may hold spaces */
    if (!p)
        return -1;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     * cutime cstime */
    if (sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld %lld %lld", ppid, &v[0],
               &v[1], &v[2], &v[3]) != 5)
        return -1;
    return v[0] + v[1] + (kids ? v[2] + v[3] : 0);
}

/* All of PostgreSQL: the postmaster, its live children, its reaped ones. */
static long long pg_ticks(int postmaster)
{
    long long sum;
    struct dirent *e;
    DIR *d;
    int ppid;

    sum = proc_ticks(postmaster, true, &ppid);
    if (sum < 0)
        return -1;
    d = opendir("/proc");
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        int pid = atoi(e->d_name);
        long long t;

        if (pid <= 0)
            continue;
        t = proc_ticks(pid, false, &ppid);
        if (t >= 0 && ppid == postmaster)
            sum += t;
    }
    closedir(d);
    return sum;
}

/* ---- one run ------------------------------------------------------------ */

static PGconn *conn;

static void exec_or_die(const char *sql)
{
    PGresult *r = PQexec(conn, sql);

    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(conn));
    PQclear(r);
}

static int64_t wal_lsn(void)
{
    PGresult *r = PQexec(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::int8");
    int64_t v;

    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("reading the WAL position", PQerrorMessage(conn));
    v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

static void send_arrays(const char *name, arr *a, int n)
{
    const char *values[STEP_COLS];
    int lengths[STEP_COLS], formats[STEP_COLS];

    for (int i = 0; i < n; i++) {
        arr_end(&a[i]);
        values[i] = a[i].b.p;
        lengths[i] = (int)a[i].b.len;
        formats[i] = 1;
    }
    if (!PQsendQueryPrepared(conn, name, n, values, lengths, formats, 0))
        die("sending a statement", PQerrorMessage(conn));
}

static void send_plain(const char *sql)
{
    if (!PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0))
        die("sending a statement", PQerrorMessage(conn));
}

static double rate; /* deltas/s to pace the groups at; 0: back to back */

/* ---- building and sending a group --------------------------------------- */

/*
 * The workload's state. Delta k belongs to job (k / burst) % njobs: a burst
 * of deltas from one job (what one engine action journals), the jobs taken
 * round-robin.
 */
struct work {
    struct job *jobs;
    long njobs, burst, cap;
    long made;      /* deltas built so far */
    unsigned group; /* groups built so far */
    arr ev[7], ins[STEP_COLS], upd[STEP_COLS];
    long nrows, nnew; /* the built group's rows, and how many of them are new */
    size_t *rows;     /* per row the group writes: its index in its job's steps */
    struct job **rowjob;
    bool *rownew;
    buf js;
};

static void work_init(struct work *w, long njobs, long burst, long cap)
{
    memset(w, 0, sizeof(*w));
    w->jobs = calloc((size_t)njobs, sizeof(*w->jobs));
    w->rows = calloc((size_t)cap, sizeof(*w->rows));
    w->rowjob = calloc((size_t)cap, sizeof(*w->rowjob));
    w->rownew = calloc((size_t)cap, sizeof(*w->rownew));
    if (!w->jobs || !w->rows || !w->rowjob || !w->rownew)
        die("out of memory", NULL);
    w->njobs = njobs;
    w->burst = burst;
    w->cap = cap;
    for (long i = 0; i < njobs; i++)
        new_uuid(w->jobs[i].id);
}

static void work_free(struct work *w)
{
    for (long i = 0; i < w->njobs; i++)
        free(w->jobs[i].steps);
    free(w->jobs);
    for (int c = 0; c < STEP_COLS; c++) {
        free(w->ins[c].b.p);
        free(w->upd[c].b.p);
    }
    for (int c = 0; c < 7; c++)
        free(w->ev[c].b.p);
    free(w->rows);
    free(w->rowjob);
    free(w->rownew);
    free(w->js.p);
}

static void prepare_or_die(const char *name, const char *sql)
{
    PGresult *r = PQprepare(conn, name, sql, 0, NULL);

    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("preparing", PQerrorMessage(conn));
    PQclear(r);
}

/* Fresh tables and statements, and a checkpoint, before a run. */
static void setup_tables(void)
{
    exec_or_die(ddl);
    prepare_or_die("ev", sql_events);
    prepare_or_die("ins", sql_insert);
    prepare_or_die("upd", sql_update);
    exec_or_die("CHECKPOINT");
}

/*
 * Builds the next n deltas (n <= cap), stamped now (Unix us), into the
 * group's arrays. job_of, if not NULL, gets each delta's job index.
 */
static void build_group(struct work *w, long n, int64_t now, long *job_of)
{
    struct job *jobs = w->jobs;
    arr *ev = w->ev, *ins = w->ins, *upd = w->upd;
    unsigned g = w->group++;
    long nrows = 0, nnew = 0;

    arr_begin(&ev[0], OID_UUID);
    arr_begin(&ev[1], OID_INT8);
    arr_begin(&ev[2], OID_TSTZ);
    arr_begin(&ev[3], OID_TEXT);
    arr_begin(&ev[4], OID_TEXT);
    arr_begin(&ev[5], OID_JSON);
    arr_begin(&ev[6], OID_TSTZ);
    for (long i = 0; i < n; i++) {
        long ji = (w->made++ / w->burst) % w->njobs;
        struct job *j = &jobs[ji];
        struct step *st;
        bool fresh = !j->nsteps || next_rand() % 10 < 4;

        if (job_of)
            job_of[i] = ji;
        if (fresh) {
            if (j->nsteps == j->cap) {
                j->cap = j->cap ? j->cap * 2 : 8;
                j->steps = realloc(j->steps, j->cap * sizeof(*j->steps));
                if (!j->steps)
                    die("out of memory", NULL);
            }
            st = &j->steps[j->nsteps++];
            memset(st, 0, sizeof(*st));
            new_uuid(st->id);
            st->created_us = st->started_us = now;
            st->tx = (int32_t)(j->nsteps % 50);
            st->group = UINT32_MAX;
        } else {
            st = &j->steps[j->nsteps - 1];
            st->attempt++;
        }
        st->status = statuses[next_rand() % 4];
        st->updated_us = now;
        snprintf(st->ref, sizeof(st->ref), "%016llx%016llx", (unsigned long long)next_rand(),
                 (unsigned long long)next_rand());
        if (st->group != g) { /* first write of the row in this group */
            st->group = g;
            w->rows[nrows] = (size_t)(st - j->steps);
            w->rowjob[nrows] = j;
            w->rownew[nrows++] = fresh;
            nnew += fresh;
        }
        row_json(j, st, &w->js);
        arr_uuid(&ev[0], j->id);
        arr_int8(&ev[1], ++j->seq);
        arr_tstz(&ev[2], now);
        arr_text(&ev[3], "job_steps");
        arr_text(&ev[4], fresh ? "insert" : "update");
        arr_bytes(&ev[5], w->js.p, w->js.len);
        arr_tstz(&ev[6], now);
    }
    for (int c = 0; c < STEP_COLS; c++) {
        arr_begin(&ins[c], step_oids[c]);
        arr_begin(&upd[c], step_oids[c]);
    }
    for (long r = 0; r < nrows; r++)
        add_step(w->rownew[r] ? ins : upd, w->rowjob[r], &w->rowjob[r]->steps[w->rows[r]]);
    w->nrows = nrows;
    w->nnew = nnew;
}

/* Sends the built group as one transaction down the pipeline, with its Sync. */
static void send_group(struct work *w)
{
    send_plain("BEGIN");
    send_arrays("ev", w->ev, 7);
    if (w->nnew)
        send_arrays("ins", w->ins, STEP_COLS);
    if (w->nrows > w->nnew)
        send_arrays("upd", w->upd, STEP_COLS);
    send_plain("COMMIT");
    if (PQpipelineSync(conn) != 1)
        die("sync", PQerrorMessage(conn));
}

/* Reads the group's answers up to its Sync: it is committed when this returns. */
static void await_group(void)
{
    for (;;) {
        PGresult *r = PQgetResult(conn);
        ExecStatusType s;

        if (!r)
            continue; /* the end of one statement's results */
        s = PQresultStatus(r);
        if (s == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return;
        }
        if (s != PGRES_COMMAND_OK)
            die("a group failed", PQresultErrorMessage(r));
        PQclear(r);
    }
}

/* ---- one run: groups of a fixed size ------------------------------------ */

static void run(long group, long ndeltas, long njobs, int backend, int postmaster)
{
    struct work w;
    long ngroups = (ndeltas + group - 1) / group, done = 0;
    int64_t *rtt = calloc((size_t)ngroups, sizeof(*rtt));
    int64_t t0, t1, wal0, wal1;
    long long be0, be1, all0, all1;
    int ppid;

    if (!rtt)
        die("out of memory", NULL);
    work_init(&w, njobs, 1, group);
    setup_tables();
    wal0 = wal_lsn();
    be0 = proc_ticks(backend, false, &ppid);
    all0 = postmaster > 0 ? pg_ticks(postmaster) : -1;
    t0 = now_us(CLOCK_MONOTONIC);

    if (PQenterPipelineMode(conn) != 1)
        die("entering pipeline mode", PQerrorMessage(conn));
    for (long g = 0; g < ngroups; g++) {
        long n = ndeltas - done < group ? ndeltas - done : group;
        int64_t sent;

        if (rate > 0) { /* the group is due when its first delta would be */
            int64_t due = t0 + (int64_t)((double)done * 1e6 / rate), wait;

            wait = due - now_us(CLOCK_MONOTONIC);
            if (wait > 0) {
                struct timespec ts = {wait / 1000000, (wait % 1000000) * 1000};

                nanosleep(&ts, NULL);
            }
        }
        build_group(&w, n, now_us(CLOCK_REALTIME), NULL);
        sent = now_us(CLOCK_MONOTONIC);
        send_group(&w);
        await_group();
        rtt[g] = now_us(CLOCK_MONOTONIC) - sent;
        done += n;
    }
    if (PQexitPipelineMode(conn) != 1)
        die("leaving pipeline mode", PQerrorMessage(conn));

    t1 = now_us(CLOCK_MONOTONIC);
    be1 = proc_ticks(backend, false, &ppid);
    all1 = postmaster > 0 ? pg_ticks(postmaster) : -1;
    wal1 = wal_lsn();
    qsort(rtt, (size_t)ngroups, sizeof(*rtt), cmp_i64);
    {
        double s = (double)(t1 - t0) / 1e6, tick = 1e6 / (double)sysconf(_SC_CLK_TCK);
        char be[32] = "n/a", all[32] = "n/a";

        if (be0 >= 0 && be1 >= 0)
            snprintf(be, sizeof(be), "%.1f", (double)(be1 - be0) * tick / (double)ndeltas);
        if (all0 >= 0 && all1 >= 0)
            snprintf(all, sizeof(all), "%.1f", (double)(all1 - all0) * tick / (double)ndeltas);
        printf("| %5ld | %7ld | %6.2f | %7.0f | %10s | %10s | %6.0f | %6.2f | %6.2f |\n", group,
               ndeltas, s, (double)ndeltas / s, be, all, (double)(wal1 - wal0) / (double)ndeltas,
               (double)rtt[ngroups / 2] / 1000.0, (double)rtt[(ngroups * 99) / 100] / 1000.0);
        fflush(stdout);
    }
    work_free(&w);
    free(rtt);
}

/* ---- the pipeline: change to client at the floor ----------------------- */

/*
 * --watchers W turns the run into the product shape's whole path at its
 * floor: deltas are due at --rate, in bursts of --burst from one job; one
 * thread commits whatever is due as one group (at most --max-group deltas,
 * one group in flight) and, once a group is committed, sends each of its
 * jobs' deltas as one message to each of that job's W watcher sockets, as a
 * fan-out round that gathers a connection's deltas into one write does. It
 * sends the next group before it writes the committed one's messages, so
 * PostgreSQL works while the sockets are written. A reader thread (a load
 * tool's receive loop, with no parsing beyond a length and the stamps) reads
 * every watcher socket from one epoll set and takes, per delivered delta,
 * its receive time - the time it was due (change to client) and - the time
 * its commit was answered (commit to client).
 *
 * Left out, so that this is a floor and not a model: the engine's work, JSON
 * and WebSocket framing, the fence, the upserts' conflict checks, and (unless
 * --db-thread) a thread of its own for PostgreSQL with the two hand-overs
 * between threads each group then makes.
 */
static struct {
    long watchers, burst, max_group, size;
    int reader_cpu;
    bool db_thread;
} po = {0, 3, 250, 700, -1, false};

#define MSG_MAX_DELTAS 64
#define MSG_HEAD 16       /* u32 length, u32 count, i64 commit time (ns) */
#define MSG_SIZE_MAX 2048 /* --size */
#define MSG_CAP (MSG_MAX_DELTAS * MSG_SIZE_MAX)

struct pair {
    int srv, cli;
    size_t got;
    unsigned char *in; /* the reader's bytes of the message in progress */
};

static struct pair *pairs;
static long npairs;
static uint32_t *lat_us, *clat_us; /* per delivered delta */
static long nlat, lat_cap;
static volatile int pipe_done;

static int64_t mono_ns(void)
{
    return now_ns(CLOCK_MONOTONIC);
}

static double thread_cpu_s(void)
{
    return (double)now_ns(CLOCK_THREAD_CPUTIME_ID) / 1e9;
}

static void connect_pairs(long n)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        die("listen on 127.0.0.1", strerror(errno));
    pairs = calloc((size_t)n, sizeof(*pairs));
    if (!pairs)
        die("out of memory", NULL);
    for (long i = 0; i < n; i++) {
        /* Source addresses spread over 127.0.0.2..254, as the load tool does. */
        struct sockaddr_in src = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % 253))};
        struct pair *p = &pairs[i];

        p->cli = socket(AF_INET, SOCK_STREAM, 0);
        if (p->cli < 0 || bind(p->cli, (struct sockaddr *)&src, sizeof(src)) != 0 ||
            connect(p->cli, (struct sockaddr *)&a, sizeof(a)) != 0)
            die("connecting a watcher", strerror(errno));
        p->srv = accept(lfd, NULL, NULL);
        if (p->srv < 0)
            die("accepting a watcher", strerror(errno));
        setsockopt(p->srv, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        p->in = malloc(MSG_CAP);
        if (!p->in)
            die("out of memory", NULL);
    }
    npairs = n;
    close(lfd);
}

/* Takes the complete messages at the front of p->in; keeps a partial one. */
static void take_messages(struct pair *p, int64_t t)
{
    size_t off = 0;

    while (p->got - off >= MSG_HEAD) {
        uint32_t len, count;
        int64_t commit;

        memcpy(&len, p->in + off, 4);
        if (p->got - off < len)
            break;
        memcpy(&count, p->in + off + 4, 4);
        memcpy(&commit, p->in + off + 8, 8);
        for (uint32_t k = 0; k < count && nlat < lat_cap; k++) {
            int64_t due;

            memcpy(&due, p->in + off + MSG_HEAD + 8 * k, 8);
            lat_us[nlat] = (uint32_t)((t - due) / 1000);
            clat_us[nlat++] = (uint32_t)((t - commit) / 1000);
        }
        off += len;
    }
    memmove(p->in, p->in + off, p->got - off);
    p->got -= off;
}

static double reader_cpu;

static void *reader_main(void *arg)
{
    struct epoll_event ev[256];
    int ep = epoll_create1(0);

    (void)arg;
    if (po.reader_cpu >= 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(po.reader_cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
            fprintf(stderr, "pg_floor: cannot pin the reader to CPU %d\n", po.reader_cpu);
    }
    if (ep < 0)
        die("epoll_create1", strerror(errno));
    for (long i = 0; i < npairs; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &pairs[i]};

        if (epoll_ctl(ep, EPOLL_CTL_ADD, pairs[i].cli, &e) != 0)
            die("epoll_ctl", strerror(errno));
    }
    for (;;) {
        int n = epoll_wait(ep, ev, 256, 200);

        for (int k = 0; k < n; k++) {
            struct pair *p = ev[k].data.ptr;
            ssize_t r = read(p->cli, p->in + p->got, MSG_CAP - p->got);

            if (r <= 0)
                die("reading a watcher socket", r ? strerror(errno) : "closed");
            p->got += (size_t)r;
            take_messages(p, mono_ns());
        }
        if (n == 0 && pipe_done)
            break;
    }
    reader_cpu = thread_cpu_s();
    close(ep);
    return NULL;
}

/*
 * --db-thread: the group is sent and awaited by a thread of its own, which
 * the pipeline's thread hands each group to and is woken by, as the engine's
 * loop and the store's thread do (a mutex and a condition variable here).
 */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state; /* 0: idle, 1: a group to send, 2: its answer is in, 3: quit */
    struct work *w;
} dbt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL};

static void *db_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&dbt.mu);
    for (;;) {
        while (dbt.state != 1 && dbt.state != 3)
            pthread_cond_wait(&dbt.cv, &dbt.mu);
        if (dbt.state == 3)
            break;
        pthread_mutex_unlock(&dbt.mu);
        send_group(dbt.w);
        await_group();
        pthread_mutex_lock(&dbt.mu);
        dbt.state = 2;
        pthread_cond_broadcast(&dbt.cv);
    }
    pthread_mutex_unlock(&dbt.mu);
    return NULL;
}

static void db_set(int state)
{
    pthread_mutex_lock(&dbt.mu);
    dbt.state = state;
    pthread_cond_broadcast(&dbt.cv);
    pthread_mutex_unlock(&dbt.mu);
}

static void group_send(struct work *w)
{
    if (po.db_thread)
        db_set(1);
    else
        send_group(w);
}

static void group_await(void)
{
    if (!po.db_thread) {
        await_group();
        return;
    }
    pthread_mutex_lock(&dbt.mu);
    while (dbt.state != 2)
        pthread_cond_wait(&dbt.cv, &dbt.mu);
    dbt.state = 0;
    pthread_mutex_unlock(&dbt.mu);
}

static void send_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("writing a watcher socket", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
}

/*
 * Writes a committed group: each run of one job's deltas as one message to
 * each of its watchers. due[i] and job_of[i] are delta i's.
 */
static void publish(long n, const int64_t *due, const long *job_of, int64_t commit,
                    unsigned char *msg)
{
    for (long i = 0; i < n;) {
        long j = job_of[i], k = i;
        uint32_t count, len;

        while (k < n && job_of[k] == j && k - i < MSG_MAX_DELTAS)
            k++;
        count = (uint32_t)(k - i);
        len = (uint32_t)(count * (uint32_t)po.size);
        if (len < MSG_HEAD + 8 * count)
            len = MSG_HEAD + 8 * count;
        memcpy(msg, &len, 4);
        memcpy(msg + 4, &count, 4);
        memcpy(msg + 8, &commit, 8);
        memcpy(msg + MSG_HEAD, due + i, 8 * count);
        for (long wtr = 0; wtr < po.watchers; wtr++)
            send_all(pairs[j * po.watchers + wtr].srv, msg, len);
        i = k;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static double pct_ms(const uint32_t *v, long n, double q)
{
    long i = (long)(q * (double)n);

    if (!n)
        return 0;
    return (double)v[i < n ? i : n - 1] / 1000.0;
}

static void pipe_run(long ndeltas, long njobs, int backend, int postmaster)
{
    struct work w;
    long cap = po.max_group, made = 0, ngroups = 0, nslot[2] = {0, 0};
    int64_t *due[2], *rtt = calloc((size_t)ndeltas, sizeof(*rtt));
    long *job_of[2];
    unsigned char *msg = calloc(1, MSG_CAP);
    int64_t t0, t1, sent = 0;
    int flight = -1; /* the slot of the group in flight */
    long long all0, all1;
    double server_cpu;
    pthread_t rd, db;

    (void)backend;
    for (int i = 0; i < 2; i++) {
        due[i] = calloc((size_t)cap, sizeof(*due[i]));
        job_of[i] = calloc((size_t)cap, sizeof(*job_of[i]));
        if (!due[i] || !job_of[i])
            die("out of memory", NULL);
    }
    lat_cap = ndeltas * po.watchers;
    lat_us = calloc((size_t)lat_cap, sizeof(*lat_us));
    clat_us = calloc((size_t)lat_cap, sizeof(*clat_us));
    if (!rtt || !msg || !lat_us || !clat_us)
        die("out of memory", NULL);
    connect_pairs(njobs * po.watchers);
    work_init(&w, njobs, po.burst, cap);
    setup_tables();
    if (pthread_create(&rd, NULL, reader_main, NULL) != 0)
        die("starting the reader", NULL);
    dbt.w = &w;
    if (po.db_thread && pthread_create(&db, NULL, db_main, NULL) != 0)
        die("starting the db thread", NULL);
    all0 = postmaster > 0 ? pg_ticks(postmaster) : -1;
    if (PQenterPipelineMode(conn) != 1)
        die("entering pipeline mode", PQerrorMessage(conn));
    server_cpu = thread_cpu_s();
    t0 = mono_ns();

    for (;;) {
        int done_slot = -1;
        int64_t now, commit = 0;
        long ready;

        if (flight >= 0) {
            group_await();
            commit = mono_ns();
            rtt[ngroups++] = commit - sent;
            done_slot = flight;
            flight = -1;
        }
        now = mono_ns();
        /* Bursts due by now: burst b of po.burst deltas is due at t0 + b * burst / rate. */
        if (rate > 0) {
            ready = ((long)((double)(now - t0) * rate / 1e9 / (double)po.burst) + 1) * po.burst;
            if (ready > ndeltas)
                ready = ndeltas;
        } else {
            ready = ndeltas;
        }
        if (ready > made) {
            int s = done_slot == 0 ? 1 : 0;
            long n = ready - made < cap ? ready - made : cap;

            for (long i = 0; i < n; i++) {
                long b = (made + i) / po.burst;

                due[s][i] =
                    rate > 0 ? t0 + (int64_t)((double)b * (double)po.burst * 1e9 / rate) : t0;
            }
            build_group(&w, n, now_us(CLOCK_REALTIME), job_of[s]);
            sent = mono_ns();
            group_send(&w);
            nslot[s] = n;
            made += n;
            flight = s;
        }
        if (done_slot >= 0)
            publish(nslot[done_slot], due[done_slot], job_of[done_slot], commit, msg);
        if (flight < 0) {
            int64_t next;
            struct timespec ts;

            if (made == ndeltas || rate <= 0)
                break;
            next = t0 + (int64_t)((double)(made / po.burst) * (double)po.burst * 1e9 / rate);
            ts.tv_sec = next / 1000000000;
            ts.tv_nsec = next % 1000000000;
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        }
    }
    t1 = mono_ns();
    server_cpu = thread_cpu_s() - server_cpu;
    if (po.db_thread) {
        db_set(3);
        pthread_join(db, NULL);
    }
    all1 = postmaster > 0 ? pg_ticks(postmaster) : -1;
    if (PQexitPipelineMode(conn) != 1)
        die("leaving pipeline mode", PQerrorMessage(conn));
    pipe_done = 1;
    pthread_join(rd, NULL);

    qsort(rtt, (size_t)ngroups, sizeof(*rtt), cmp_i64);
    qsort(lat_us, (size_t)nlat, sizeof(*lat_us), cmp_u32);
    qsort(clat_us, (size_t)nlat, sizeof(*clat_us), cmp_u32);
    {
        double s = (double)(t1 - t0) / 1e9, tick = 1e6 / (double)sysconf(_SC_CLK_TCK);
        char all[32] = "n/a";

        if (all0 >= 0 && all1 >= 0)
            snprintf(all, sizeof(all), "%.1f", (double)(all1 - all0) * tick / (double)ndeltas);
        printf("pipeline: %ld jobs x %ld watchers, bursts of %ld, %s %.0f deltas/s, groups of at "
               "most %ld, %ld-byte deltas%s\n",
               njobs, po.watchers, po.burst, rate > 0 ? "due at" : "back to back,", rate,
               po.max_group, po.size, po.db_thread ? ", a db thread" : "");
        printf("  deltas %ld in %.2f s: %.0f deltas/s, %.0f deliveries/s (%ld delivered of %ld)\n",
               ndeltas, s, (double)ndeltas / s, (double)nlat / s, nlat, lat_cap);
        printf("  groups %ld, %.1f deltas each; commit round trip p50 %.2f ms, p99 %.2f ms\n",
               ngroups, (double)ndeltas / (double)ngroups, (double)rtt[ngroups / 2] / 1e6,
               (double)rtt[(ngroups * 99) / 100] / 1e6);
        if (rate > 0)
            printf("  change to client p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n",
                   pct_ms(lat_us, nlat, 0.5), pct_ms(lat_us, nlat, 0.99),
                   pct_ms(lat_us, nlat, 0.999), pct_ms(lat_us, nlat, 1));
        printf("  commit to client p50 %.2f ms, p99 %.2f ms\n", pct_ms(clat_us, nlat, 0.5),
               pct_ms(clat_us, nlat, 0.99));
        printf("  CPU per delta: PostgreSQL (all) %s us, this thread %.1f us, the reader %.1f us\n",
               all, server_cpu * 1e6 / (double)ndeltas, reader_cpu * 1e6 / (double)ndeltas);
        printf("RESULT pipe db_thread=%d jobs=%ld watchers=%ld rate=%.0f deltas_per_s=%.0f "
               "deliveries_per_s=%.0f delivered=%ld expected=%ld p50_ms=%.2f p99_ms=%.2f "
               "p999_ms=%.2f commit_p99_ms=%.2f rtt_p99_ms=%.2f group=%.1f pg_us=%s "
               "server_us=%.1f reader_us=%.1f\n",
               po.db_thread, njobs, po.watchers, rate, (double)ndeltas / s, (double)nlat / s, nlat,
               lat_cap, rate > 0 ? pct_ms(lat_us, nlat, 0.5) : -1,
               rate > 0 ? pct_ms(lat_us, nlat, 0.99) : -1,
               rate > 0 ? pct_ms(lat_us, nlat, 0.999) : -1, pct_ms(clat_us, nlat, 0.99),
               (double)rtt[(ngroups * 99) / 100] / 1e6, (double)ndeltas / (double)ngroups, all,
               server_cpu * 1e6 / (double)ndeltas, reader_cpu * 1e6 / (double)ndeltas);
        fflush(stdout);
    }
    if (nlat != lat_cap)
        die("a watcher missed deltas", NULL);
    work_free(&w);
    for (int i = 0; i < 2; i++) {
        free(due[i]);
        free(job_of[i]);
    }
    for (long i = 0; i < npairs; i++) {
        close(pairs[i].srv);
        close(pairs[i].cli);
        free(pairs[i].in);
    }
    free(pairs);
    free(lat_us);
    free(clat_us);
    free(rtt);
    free(msg);
}

int main(int argc, char **argv)
{
    const char *url = getenv("DATABASE_URL"), *sizes = "10 25 50 100 250";
    long ndeltas = 60000, njobs = 200;
    static const struct option opts[] = {
        {"url", required_argument, 0, 'u'},
        {"sizes", required_argument, 0, 's'},
        {"deltas", required_argument, 0, 'd'},
        {"jobs", required_argument, 0, 'j'},
        {"rate", required_argument, 0, 'r'},
        {"watchers", required_argument, 0, 'w'},
        {"burst", required_argument, 0, 'b'},
        {"max-group", required_argument, 0, 'g'},
        {"size", required_argument, 0, 'z'},
        {"reader-cpu", required_argument, 0, 'c'},
        {"db-thread", no_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char usage[] =
        "usage: pg_floor [--url URL ($DATABASE_URL)] [--sizes \"10 25 50 100 250\"]\n"
        "                [--deltas N per size (60000)] [--jobs N (200)]\n"
        "                [--rate DELTAS/S (0: back to back)]\n"
        "       pg_floor --watchers W [--url URL] [--deltas N] [--jobs N] [--rate DELTAS/S]\n"
        "                [--burst B (3)] [--max-group N (250)] [--size BYTES (700)]\n"
        "                [--reader-cpu CPU (none)] [--db-thread]\n";
    int c, backend, postmaster = -1, ppid;
    char *list, *tok, *save;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'u': url = optarg; break;
        case 's': sizes = optarg; break;
        case 'd': ndeltas = atol(optarg); break;
        case 'j': njobs = atol(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'w': po.watchers = atol(optarg); break;
        case 'b': po.burst = atol(optarg); break;
        case 'g': po.max_group = atol(optarg); break;
        case 'z': po.size = atol(optarg); break;
        case 'c': po.reader_cpu = atoi(optarg); break;
        case 't': po.db_thread = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (!url || ndeltas < 1 || njobs < 1 || rate < 0)
        die("need --url (or DATABASE_URL), --deltas >= 1, --jobs >= 1 and --rate >= 0", NULL);
    if (po.watchers < 0 || po.watchers > 20000 || po.burst < 1 || po.max_group < 1 ||
        po.max_group > 100000 || po.size < 1 || po.size > MSG_SIZE_MAX ||
        njobs * po.watchers > 20000)
        die("need --watchers 0..20000 (jobs x watchers <= 20000), --burst >= 1, "
            "--max-group 1..100000 and --size 1..2048",
            NULL);
    conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK)
        die("cannot connect", PQerrorMessage(conn));
    backend = PQbackendPID(conn);
    if (proc_ticks(backend, false, &ppid) >= 0)
        postmaster = ppid;
    else
        fprintf(stderr, "pg_floor: PostgreSQL is not on this machine: no CPU figures\n");

    if (po.watchers > 0) {
        pipe_run(ndeltas, njobs, backend, postmaster);
        exec_or_die("SET client_min_messages = warning; DROP SCHEMA jw_floor CASCADE");
        PQfinish(conn);
        return 0;
    }
    printf("pg_floor: %ld deltas per size, %ld jobs; PostgreSQL CPU in us per delta\n\n", ndeltas,
           njobs);
    printf("| group | deltas  |   s    | deltas/s | backend us | all PG us | WAL B  | rtt p50 "
           "| rtt p99 |\n");
    printf("|------:|--------:|-------:|---------:|-----------:|----------:|-------:|--------:"
           "|--------:|\n");
    list = strdup(sizes);
    if (!list)
        die("out of memory", NULL);
    for (tok = strtok_r(list, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save)) {
        long g = atol(tok);

        if (g < 1 || g > 100000)
            die("a group size must be 1..100000", tok);
        run(g, ndeltas, njobs, backend, postmaster);
    }
    free(list);
    exec_or_die("SET client_min_messages = warning; DROP SCHEMA jw_floor CASCADE");
    PQfinish(conn);
    return 0;
}
