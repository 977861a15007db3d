/*
 * bench_store - durable deltas per second through the real store.
 *
 * Two modes against the same PostgreSQL, in one run:
 *   group   the store as the server runs it: group commit of whatever is queued
 *   single  one transaction per delta (max group 1), as the original design's
 *           update-per-change calls commit
 * Each delta is one row change (a job_steps or job_runs row of about 500
 * bytes) in its own batch, as the engine submits them; up to --window batches
 * are in flight, like that many jobs changing at once. A delta counts when the
 * store answers that its transaction committed (synchronous_commit as the
 * server has it; the tool prints it).
 *
 * Usage: bench_store --database-url URL [--deltas N] [--single-deltas N]
 *                    [--jobs N] [--window N] [--max-group N] [--mode both|group|single]
 */
#include "jw_error.h"
#include "jw_log.h"
#include "pgtest.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct opts {
    const char *url;
    long deltas, single_deltas, jobs, window, max_group;
    const char *mode;
};

struct result {
    long deltas;
    double seconds;
    double p50_ms, p99_ms, max_ms;
    uint64_t commits;
};

struct drain_ctx {
    int64_t *lat;
    long n;
    long failed;
};

static void on_done(jw_batch *b, void *arg)
{
    struct drain_ctx *c = arg;

    if (b->status != 0) {
        if (c->failed++ < 3)
            fprintf(stderr, "bench: batch failed: %s\n", b->error ? b->error : "?");
    }
    c->lat[c->n++] = b->done_us - b->queued_us;
    jw_batch_free(b);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static double pct(const int64_t *sorted, long n, double p)
{
    long i = (long)(p * (double)(n - 1));

    return n ? (double)sorted[i] / 1000.0 : 0;
}

static int run_mode(const struct opts *o, const char *mode, long ndeltas, struct result *res)
{
    long njobs = o->jobs < ndeltas ? o->jobs : ndeltas;
    char(*jobs)[JW_UUID_LEN + 1] = calloc((size_t)njobs, sizeof(*jobs));
    char(*steps)[JW_UUID_LEN + 1] = calloc((size_t)njobs, sizeof(*steps));
    int64_t *seq = calloc((size_t)njobs, sizeof(*seq));
    jw_delta **deltas = calloc((size_t)ndeltas, sizeof(*deltas));
    struct drain_ctx ctx = {calloc((size_t)ndeltas + (size_t)njobs, sizeof(int64_t)), 0, 0};
    jw_store_config cfg = {0};
    char user[JW_UUID_LEN + 1], err[512], *conninfo;
    jw_store *s = NULL;
    jw_store_stats st;
    long submitted = 0;
    int64_t t0, t1;
    int rc = 1;

    conninfo = pgtest_fresh_db("jobwire_bench");
    if (jw_db_migrate(conninfo, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench: migrate: %s\n", err);
        goto out;
    }
    cfg.conninfo = conninfo;
    cfg.max_group_deltas = strcmp(mode, "single") == 0 ? 1 : (int)o->max_group;
    if (jw_store_start(&s, &cfg) != 0)
        goto out;

    /* Set-up, not timed: the jobs and one step each exist. */
    jw_uuid_new(user);
    for (long j = 0; j < njobs; j++) {
        jw_batch *b = jw_batch_new();
        char *row;

        jw_uuid_new(jobs[j]);
        jw_uuid_new(steps[j]);
        row = pgtest_job_row(jobs[j], user, "processing", 20);
        jw_batch_add(b, pgtest_delta(jobs[j], jobs[j], 1, JW_TABLE_JOB_RUNS, JW_OP_INSERT, row));
        free(row);
        row = pgtest_step_row(steps[j], jobs[j], "process_payment", "pending");
        jw_batch_add(b, pgtest_delta(jobs[j], steps[j], 2, JW_TABLE_JOB_STEPS, JW_OP_INSERT, row));
        free(row);
        seq[j] = 2;
        jw_store_submit(s, b);
    }
    ctx.n = 0;
    while (ctx.n < njobs)
        jw_store_wait(s, 1000, on_done, &ctx);
    if (ctx.failed) {
        fprintf(stderr, "bench: set-up batches failed\n");
        goto out;
    }

    /* Encode every delta before the clock starts: we time the store. */
    for (long i = 0; i < ndeltas; i++) {
        long j = i % njobs;
        bool step = (i / njobs) % 2 == 0;
        char *row = step ? pgtest_step_row(steps[j], jobs[j], "process_payment",
                                           i % 3 ? "in_progress" : "completed")
                         : pgtest_job_row(jobs[j], user, "processing", (int)(20 + i % 80));

        deltas[i] = pgtest_delta(jobs[j], step ? steps[j] : jobs[j], ++seq[j],
                                 step ? JW_TABLE_JOB_STEPS : JW_TABLE_JOB_RUNS, JW_OP_UPDATE, row);
        free(row);
    }

    jw_store_get_stats(s, &st);
    res->commits = st.commits;
    ctx.n = 0;
    t0 = jw_mono_us();
    while (ctx.n < ndeltas) {
        while (submitted < ndeltas && submitted - ctx.n < o->window) {
            jw_batch *b = jw_batch_new();

            jw_batch_add(b, deltas[submitted++]);
            jw_store_submit(s, b);
        }
        jw_store_wait(s, 1000, on_done, &ctx);
    }
    t1 = jw_mono_us();
    jw_store_get_stats(s, &st);
    if (ctx.failed) {
        fprintf(stderr, "bench: %ld batches failed\n", ctx.failed);
        goto out;
    }
    qsort(ctx.lat, (size_t)ctx.n, sizeof(int64_t), cmp_i64);
    res->deltas = ndeltas;
    res->seconds = (double)(t1 - t0) / 1e6;
    res->p50_ms = pct(ctx.lat, ctx.n, 0.50);
    res->p99_ms = pct(ctx.lat, ctx.n, 0.99);
    res->max_ms = ctx.n ? (double)ctx.lat[ctx.n - 1] / 1000.0 : 0;
    res->commits = st.commits - res->commits;
    rc = 0;
out:
    jw_store_stop(s, 5000);
    jw_store_free(s);
    free(conninfo);
    free(ctx.lat);
    free(deltas);
    free(seq);
    free(steps);
    free(jobs);
    return rc;
}

static void print_row(const char *mode, const struct result *r)
{
    printf("| %-6s | %8ld | %7.2f | %10.0f | %7lu | %9.1f | %8.2f | %8.2f | %8.2f |\n", mode,
           r->deltas, r->seconds, (double)r->deltas / r->seconds, (unsigned long)r->commits,
           r->commits ? (double)r->deltas / (double)r->commits : 0, r->p50_ms, r->p99_ms,
           r->max_ms);
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: bench_store --database-url URL [--deltas N] [--single-deltas N] "
               "[--jobs N] [--window N] [--max-group N] [--mode both|group|single]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"database-url", required_argument, 0, 'd'},
        {"deltas", required_argument, 0, 'n'},
        {"single-deltas", required_argument, 0, 's'},
        {"jobs", required_argument, 0, 'j'},
        {"window", required_argument, 0, 'w'},
        {"max-group", required_argument, 0, 'g'},
        {"mode", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct opts o = {getenv("DATABASE_URL"), 200000, 10000, 1000, 4000, 500, "both"};
    struct result group = {0}, single = {0};
    PGconn *c;
    int ch;

    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'd': o.url = optarg; break;
        case 'n': o.deltas = atol(optarg); break;
        case 's': o.single_deltas = atol(optarg); break;
        case 'j': o.jobs = atol(optarg); break;
        case 'w': o.window = atol(optarg); break;
        case 'g': o.max_group = atol(optarg); break;
        case 'm': o.mode = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!o.url || o.deltas < 1 || o.single_deltas < 1 || o.jobs < 1 || o.window < 1 ||
        o.max_group < 1 || o.max_group > 100000 ||
        (strcmp(o.mode, "both") && strcmp(o.mode, "group") && strcmp(o.mode, "single"))) {
        usage(stderr);
        return 2;
    }
    setenv("DATABASE_URL", o.url, 1);
    jw_log_set_level(JW_LOG_WARN);

    c = pgtest_connect(o.url);
    {
        PGresult *r = pgtest_exec(c,
                                  "SELECT current_setting('server_version'), "
                                  "current_setting('synchronous_commit'), current_setting('fsync')",
                                  0, NULL);

        printf("PostgreSQL %s, synchronous_commit=%s, fsync=%s; %ld jobs, window %ld batches, "
               "max group %ld deltas\n\n",
               PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), o.jobs, o.window,
               o.max_group);
        PQclear(r);
    }
    PQfinish(c);

    printf("| mode   |   deltas |     s   | deltas/s   | commits | deltas/tx | p50 ms   | p99 ms   "
           "| max ms   |\n");
    printf("|--------|---------:|--------:|-----------:|--------:|----------:|---------:|---------:"
           "|---------:|\n");
    if (strcmp(o.mode, "single") != 0) {
        if (run_mode(&o, "group", o.deltas, &group))
            return 1;
        print_row("group", &group);
    }
    if (strcmp(o.mode, "group") != 0) {
        if (run_mode(&o, "single", o.single_deltas, &single))
            return 1;
        print_row("single", &single);
    }
    if (group.deltas && single.deltas)
        printf("\ngroup commit / one transaction per delta: %.1fx\n",
               ((double)group.deltas / group.seconds) / ((double)single.deltas / single.seconds));
    return 0;
}
