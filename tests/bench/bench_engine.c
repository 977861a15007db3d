/*
 * bench_engine - the engine and the real store under load, without HTTP.
 *
 * N jobs of T transactions start at once (N concurrent jobs); the embedded
 * sim answers with zero latency and asks for no OTP, so the run measures the
 * engine's bookkeeping plus durable commits: jobs/s, durable deltas/s, commit
 * latency (submit -> commit answer, per batch) and the process's peak RSS.
 *
 * Usage: bench_engine --database-url URL [--jobs N] [--transactions T]
 */
#include "jw_engine.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_store.h"
#include "pgtest.h"
#include "providers/sim.h"

#include <getopt.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static struct bench {
    jw_store *store;
    jw_engine *engine;
    jw_timers *timers;
    int64_t *lat;
    size_t nlat, caplat;
    uint64_t deltas;
} B;

static int64_t now_us(void *ctx)
{
    (void)ctx;
    return jw_now_us();
}

static uint64_t rnd(void *ctx)
{
    uint64_t v;

    (void)ctx;
    RAND_bytes((unsigned char *)&v, sizeof(v));
    return v;
}

static void submit(void *ctx, jw_batch *b)
{
    (void)ctx;
    if (jw_store_submit(B.store, b) != 0) {
        fprintf(stderr, "bench: store refused a batch\n");
        exit(1);
    }
}

static void publish(void *ctx, jw_delta *d)
{
    (void)ctx;
    (void)d;
    B.deltas++;
}

static void deliver(void *arg, jw_provider_reply *r)
{
    (void)arg;
    jw_engine_on_reply(B.engine, r);
}

static void on_commit(jw_batch *b, void *arg)
{
    (void)arg;
    if (b->status != 0) {
        fprintf(stderr, "bench: batch failed: %s\n", b->error ? b->error : "?");
        exit(1);
    }
    if (B.nlat == B.caplat) {
        B.caplat = B.caplat ? B.caplat * 2 : 65536;
        B.lat = realloc(B.lat, B.caplat * sizeof(*B.lat));
    }
    B.lat[B.nlat++] = b->done_us - b->queued_us;
    jw_engine_on_commit(B.engine, b);
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"database-url", required_argument, 0, 'd'},
        {"jobs", required_argument, 0, 'j'},
        {"transactions", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *url = getenv("DATABASE_URL");
    long njobs = 1000, ntx = 4;
    jw_sim_config sc;
    jw_sim *sim;
    jw_sim_provider *sp;
    jw_engine_ports ports = {0};
    jw_engine_stats st;
    jw_store_config scfg = {0};
    char err[512], *conninfo, id[JW_UUID_LEN + 1], user[JW_UUID_LEN + 1];
    int64_t t0, t1;
    struct rusage ru;
    int ch;

    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': url = optarg; break;
        case 'j': njobs = atol(optarg); break;
        case 't': ntx = atol(optarg); break;
        case 'h':
            printf("Usage: bench_engine --database-url URL [--jobs N] [--transactions T]\n");
            return 0;
        default: return 2;
        }
    }
    if (!url || njobs < 1 || njobs > 100000 || ntx < 1 || ntx > 50) {
        fprintf(stderr, "Usage: bench_engine --database-url URL [--jobs 1..100000] "
                        "[--transactions 1..50]\n");
        return 2;
    }
    setenv("DATABASE_URL", url, 1);
    jw_log_set_level(JW_LOG_WARN);
    conninfo = pgtest_fresh_db("jobwire_bench_engine");
    if (jw_db_migrate(conninfo, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench: migrate: %s\n", err);
        return 1;
    }
    scfg.conninfo = conninfo;
    if (jw_store_start(&B.store, &scfg) != 0)
        return 1;

    B.timers = jw_timers_new(NULL, NULL);
    jw_sim_config_init(&sc);
    if (jw_sim_config_parse(&sc, "latency_ms=0,otp=none,voucher_polls=0", err, sizeof(err))) {
        fprintf(stderr, "bench: sim: %s\n", err);
        return 1;
    }
    sim = jw_sim_new(&sc);
    sp = jw_sim_provider_new(sim, B.timers, NULL, NULL, deliver, NULL);
    ports.now_us = now_us;
    ports.random = rnd;
    ports.submit = submit;
    ports.publish = publish;
    ports.timers = B.timers;
    ports.provider = jw_sim_provider_port(sp);
    B.engine = jw_engine_new(NULL, &ports);

    t0 = jw_mono_us();
    for (long i = 0; i < njobs; i++) {
        jw_uuid_new(user);
        if (jw_engine_create_job(B.engine, user, 1500, (int)ntx, NULL, NULL, NULL, id, err,
                                 sizeof(err)) != 0) {
            fprintf(stderr, "bench: create: %s\n", err);
            return 1;
        }
    }
    /* The loop thread's work: timers (the sim's replies) and commit answers. */
    for (;;) {
        int64_t next;
        int wait_ms;

        jw_timers_run(B.timers, jw_now_us());
        jw_engine_get_stats(B.engine, &st);
        if (st.jobs_finished >= (uint64_t)njobs)
            break;
        next = jw_timers_next(B.timers);
        wait_ms = next == INT64_MAX ? 50 : (int)((next - jw_now_us()) / 1000);
        if (wait_ms > 50)
            wait_ms = 50;
        jw_store_wait(B.store, wait_ms > 0 ? wait_ms : 0, on_commit, NULL);
    }
    t1 = jw_mono_us();
    getrusage(RUSAGE_SELF, &ru);
    qsort(B.lat, B.nlat, sizeof(*B.lat), cmp);

    {
        double s = (double)(t1 - t0) / 1e6;
        jw_store_stats ss;

        jw_store_get_stats(B.store, &ss);
        printf("%ld jobs x %ld transactions, sim latency 0, no OTP; %lu transactions of "
               "PostgreSQL\n\n",
               njobs, ntx, (unsigned long)ss.commits);
        printf("| jobs | s | jobs/s | durable deltas | deltas/s | batches | commit p50 ms | "
               "commit p99 ms | peak RSS MiB |\n");
        printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        printf("| %ld | %.2f | %.0f | %lu | %.0f | %zu | %.2f | %.2f | %.1f |\n", njobs, s,
               (double)njobs / s, (unsigned long)B.deltas, (double)B.deltas / s, B.nlat,
               (double)B.lat[B.nlat / 2] / 1000.0, (double)B.lat[(B.nlat * 99) / 100] / 1000.0,
               (double)ru.ru_maxrss / 1024.0);
    }
    jw_store_stop(B.store, 5000);
    jw_store_drain(B.store, on_commit, NULL);
    jw_sim_provider_free(sp);
    jw_engine_free(B.engine);
    jw_sim_free(sim);
    jw_timers_free(B.timers);
    jw_store_free(B.store);
    free(B.lat);
    free(conninfo);
    return 0;
}
