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
 * Usage: pg_floor [--url URL ($DATABASE_URL)] [--sizes "10 25 50 100 250"]
 *                 [--deltas N per size (60000)] [--jobs N (200)] [--rate DELTAS/S]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int64_t now_us(clockid_t c)
{
    struct timespec ts;

    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
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

static void run(long group, long ndeltas, long njobs, int backend, int postmaster)
{
    struct job *jobs = calloc((size_t)njobs, sizeof(*jobs));
    arr ev[7] = {0}, ins[STEP_COLS] = {0}, upd[STEP_COLS] = {0};
    size_t *rows = calloc((size_t)group, sizeof(*rows)); /* index in its job's steps */
    struct job **rowjob = calloc((size_t)group, sizeof(*rowjob));
    bool *rownew = calloc((size_t)group, sizeof(*rownew));
    long ngroups = (ndeltas + group - 1) / group, done = 0, next_job = 0;
    int64_t *rtt = calloc((size_t)ngroups, sizeof(*rtt));
    int64_t t0, t1, wal0, wal1;
    long long be0, be1, all0, all1;
    int ppid;
    buf js = {0};

    if (!jobs || !rows || !rowjob || !rownew || !rtt)
        die("out of memory", NULL);
    for (long i = 0; i < njobs; i++)
        new_uuid(jobs[i].id);

    exec_or_die(ddl);
    {
        PGresult *r;

        r = PQprepare(conn, "ev", sql_events, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die("preparing", PQerrorMessage(conn));
        PQclear(r);
        r = PQprepare(conn, "ins", sql_insert, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die("preparing", PQerrorMessage(conn));
        PQclear(r);
        r = PQprepare(conn, "upd", sql_update, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die("preparing", PQerrorMessage(conn));
        PQclear(r);
    }
    exec_or_die("CHECKPOINT");
    wal0 = wal_lsn();
    be0 = proc_ticks(backend, false, &ppid);
    all0 = postmaster > 0 ? pg_ticks(postmaster) : -1;
    t0 = now_us(CLOCK_MONOTONIC);

    if (PQenterPipelineMode(conn) != 1)
        die("entering pipeline mode", PQerrorMessage(conn));
    for (long g = 0; g < ngroups; g++) {
        long n = ndeltas - done < group ? ndeltas - done : group, nrows = 0, nnew = 0;
        int64_t now, sent;

        if (rate > 0) { /* the group is due when its first delta would be */
            int64_t due = t0 + (int64_t)((double)done * 1e6 / rate), wait;

            wait = due - now_us(CLOCK_MONOTONIC);
            if (wait > 0) {
                struct timespec ts = {wait / 1000000, (wait % 1000000) * 1000};

                nanosleep(&ts, NULL);
            }
        }
        now = now_us(CLOCK_REALTIME);

        arr_begin(&ev[0], OID_UUID);
        arr_begin(&ev[1], OID_INT8);
        arr_begin(&ev[2], OID_TSTZ);
        arr_begin(&ev[3], OID_TEXT);
        arr_begin(&ev[4], OID_TEXT);
        arr_begin(&ev[5], OID_JSON);
        arr_begin(&ev[6], OID_TSTZ);
        for (long i = 0; i < n; i++) {
            struct job *j = &jobs[next_job++ % njobs];
            struct step *st;
            bool fresh = !j->nsteps || next_rand() % 10 < 4;

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
            if (st->group != (unsigned)g) { /* first write of the row in this group */
                st->group = (unsigned)g;
                rows[nrows] = (size_t)(st - j->steps);
                rowjob[nrows] = j;
                rownew[nrows++] = fresh;
                nnew += fresh;
            }
            row_json(j, st, &js);
            arr_uuid(&ev[0], j->id);
            arr_int8(&ev[1], ++j->seq);
            arr_tstz(&ev[2], now);
            arr_text(&ev[3], "job_steps");
            arr_text(&ev[4], fresh ? "insert" : "update");
            arr_bytes(&ev[5], js.p, js.len);
            arr_tstz(&ev[6], now);
        }
        for (int c = 0; c < STEP_COLS; c++) {
            arr_begin(&ins[c], step_oids[c]);
            arr_begin(&upd[c], step_oids[c]);
        }
        for (long r = 0; r < nrows; r++)
            add_step(rownew[r] ? ins : upd, rowjob[r], &rowjob[r]->steps[rows[r]]);

        sent = now_us(CLOCK_MONOTONIC);
        send_plain("BEGIN");
        send_arrays("ev", ev, 7);
        if (nnew)
            send_arrays("ins", ins, STEP_COLS);
        if (nrows > nnew)
            send_arrays("upd", upd, STEP_COLS);
        send_plain("COMMIT");
        if (PQpipelineSync(conn) != 1)
            die("sync", PQerrorMessage(conn));
        for (;;) {
            PGresult *r = PQgetResult(conn);
            ExecStatusType s;

            if (!r)
                continue; /* the end of one statement's results */
            s = PQresultStatus(r);
            if (s == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                break;
            }
            if (s != PGRES_COMMAND_OK)
                die("a group failed", PQresultErrorMessage(r));
            PQclear(r);
        }
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

    for (long i = 0; i < njobs; i++)
        free(jobs[i].steps);
    free(jobs);
    for (int c = 0; c < STEP_COLS; c++) {
        free(ins[c].b.p);
        free(upd[c].b.p);
    }
    for (int c = 0; c < 7; c++)
        free(ev[c].b.p);
    free(rows);
    free(rowjob);
    free(rownew);
    free(rtt);
    free(js.p);
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
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char usage[] = "usage: pg_floor [--url URL ($DATABASE_URL)] "
                                "[--sizes \"10 25 50 100 250\"] [--deltas N per size (60000)] "
                                "[--jobs N (200)] [--rate DELTAS/S (0: back to back)]\n";
    int c, backend, postmaster = -1, ppid;
    char *list, *tok, *save;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'u': url = optarg; break;
        case 's': sizes = optarg; break;
        case 'd': ndeltas = atol(optarg); break;
        case 'j': njobs = atol(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (!url || ndeltas < 1 || njobs < 1 || rate < 0)
        die("need --url (or DATABASE_URL), --deltas >= 1, --jobs >= 1 and --rate >= 0", NULL);
    conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK)
        die("cannot connect", PQerrorMessage(conn));
    backend = PQbackendPID(conn);
    if (proc_ticks(backend, false, &ppid) >= 0)
        postmaster = ppid;
    else
        fprintf(stderr, "pg_floor: PostgreSQL is not on this machine: no CPU figures\n");

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
