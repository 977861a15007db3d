/*
 * metrics.c - GET /metrics: Prometheus text exposition of the counters every
 * module keeps (store, engine, WebSocket hub, HTTP). It shares the public
 * port, so it takes the admin key like every admin route.
 */
#include "metrics.h"

#include "fanout.h"
#include "inbox.h"
#include "wsconn.h"

#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"

#include <dirent.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* ---- the process heap ------------------------------------------------------------ */

/*
 * glibc's heap as a whole (every thread's arena): what is allocated, and what
 * the heap holds from the system. Next to RSS they tell a leak (in use grows)
 * from pages touched for the first time (RSS grows towards the held figure
 * while in use stays level): memory allocated but not yet written, or freed
 * and reused at other addresses. mallinfo2 locks each arena in turn and walks
 * its free lists: a scrape's worth of work.
 */
static void write_heap(jw_buf *b)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();

    jw_buf_addf(b,
                "# HELP jobwire_heap_inuse_bytes Bytes allocated with malloc and not freed "
                "(glibc, every arena).\n# TYPE jobwire_heap_inuse_bytes gauge\n"
                "jobwire_heap_inuse_bytes %zu\n",
                mi.uordblks + mi.hblkhd);
    jw_buf_addf(b,
                "# HELP jobwire_heap_held_bytes Bytes the heap holds from the system, in use "
                "or free; RSS counts the pages of it ever touched.\n"
                "# TYPE jobwire_heap_held_bytes gauge\njobwire_heap_held_bytes %zu\n",
                mi.arena + mi.hblkhd);
#else
    (void)b;
#endif
}

/* ---- OTP outcomes and histograms (issue 6) ------------------------------------ */

static void put_counter(jw_buf *b, const char *name, const char *help, uint64_t v)
{
    jw_buf_addf(b, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

/*
 * Labelled histograms show the label sets observed so far, as client
 * libraries do; the unlabelled ones are always there.
 */
static void gauge(jw_buf *b, const char *name, const char *type, const char *help, double v)
{
    jw_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

/* Open descriptors: the entries of /proc/self/fd, less the one reading it. */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;

    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* The process itself, under the names Prometheus client libraries use. */
static void write_process(jw_buf *b)
{
    long page = sysconf(_SC_PAGESIZE), size = 0, resident = 0;
    struct timespec cpu;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f) {
        if (fscanf(f, "%ld %ld", &size, &resident) != 2)
            size = resident = 0;
        fclose(f);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    gauge(b, "process_resident_memory_bytes", "gauge", "Resident memory (VmRSS).",
          (double)resident * (double)page);
    gauge(b, "process_virtual_memory_bytes", "gauge", "Virtual memory (VmSize).",
          (double)size * (double)page);
    gauge(b, "process_cpu_seconds_total", "counter", "CPU time of every thread, user and system.",
          (double)cpu.tv_sec + (double)cpu.tv_nsec / 1e9);
    gauge(b, "process_open_fds", "gauge", "Open file descriptors (connections among them).",
          (double)open_fds());
}

static void write_histograms(jw_buf *b, const jw_metrics *m, const jw_store_stats *db,
                             const jw_engine_stats *en, const jw_hist *delivery_delay)
{
    const jw_engine_hists *eh = jw_engine_get_hists(m->sv->engine);
    char labels[160];

    put_counter(b, "jobwire_otp_requests_total", "OTP requests created (a code sent to the user).",
                en->otp_requested);
    put_counter(b, "jobwire_otp_verified_total", "OTP requests whose code the provider accepted.",
                en->otp_verified);
    put_counter(b, "jobwire_otp_wrong_total", "Codes the provider judged wrong, each one.",
                en->otp_wrong);
    put_counter(b, "jobwire_otp_exhausted_total",
                "OTP requests failed by max_attempts wrong codes.", en->otp_exhausted);
    put_counter(b, "jobwire_otp_expired_total", "OTP requests nobody answered in time.",
                en->otp_expired);
    put_counter(b, "jobwire_rows_refused_total",
                "Rows too large to store; each halted its job (a bug: inputs are bounded).",
                en->rows_refused);

    jw_hist_prom_header(b, "jobwire_step_duration_seconds",
                        "Step runs from in_progress to completed, failed or cancelled "
                        "(retries and OTP waits included).");
    for (int i = 0; i < eh->nsteps; i++) {
        for (int k = 0; k < JW_STEP_OUTCOME__N; k++) {
            if (!eh->step_duration[i][k].count)
                continue;
            snprintf(labels, sizeof(labels), "step=\"%s\",outcome=\"%s\"", eh->step[i],
                     jw_step_outcome_names[k]);
            jw_hist_prom(b, "jobwire_step_duration_seconds", labels, &eh->step_duration[i][k]);
        }
    }
    jw_hist_prom_header(b, "jobwire_provider_call_duration_seconds",
                        "Provider calls from issue to reply, by step (operation) and reply.");
    for (int i = 0; i < eh->nsteps; i++) {
        for (int k = 0; k < JW_CALL_RESULT__N; k++) {
            if (!eh->call_duration[i][k].count)
                continue;
            snprintf(labels, sizeof(labels), "operation=\"%s\",result=\"%s\"", eh->step[i],
                     jw_call_result_names[k]);
            jw_hist_prom(b, "jobwire_provider_call_duration_seconds", labels,
                         &eh->call_duration[i][k]);
        }
    }
    jw_hist_prom_header(b, "jobwire_db_commit_duration_seconds",
                        "Group-commit transactions, from the first write to PostgreSQL's answer.");
    jw_hist_prom(b, "jobwire_db_commit_duration_seconds", "", &db->commit_us);
    jw_hist_prom_header(b, "jobwire_db_commit_batches", "Batches per group-commit transaction.");
    jw_hist_prom(b, "jobwire_db_commit_batches", "", &db->commit_batches);
    jw_hist_prom_header(b, "jobwire_db_commit_deltas", "Deltas per group-commit transaction.");
    jw_hist_prom(b, "jobwire_db_commit_deltas", "", &db->commit_deltas);
    jw_hist_prom_header(b, "jobwire_publish_delay_seconds",
                        "Committed batches, from their hand-over to the store to their deltas' "
                        "publication to subscribers.");
    jw_hist_prom(b, "jobwire_publish_delay_seconds", "", m->publish_delay);
    jw_hist_prom_header(b, "jobwire_publish_wait_seconds",
                        "Committed batches, from the store's answer to their deltas' "
                        "publication: the event loop's part of the publish delay.");
    jw_hist_prom(b, "jobwire_publish_wait_seconds", "", m->publish_wait);
    jw_hist_prom_header(b, "jobwire_cluster_delivery_delay_seconds",
                        "Deltas of jobs driven by another node, from their group's commit stamp "
                        "(cts, the owner's clock) to their publication here.");
    jw_hist_prom(b, "jobwire_cluster_delivery_delay_seconds", "", delivery_delay);
}

void jw_metrics_handle(void *arg, jw_http_ctx *ctx, jw_http_request *req)
{
    const jw_metrics *m = arg;
    jw_principal who;
    jw_store_stats db;
    jw_engine_stats en;
    jw_ws_stats ws;
    jw_rt_stats rt;
    jw_cluster_stats cl;
    jw_mirror_stats mi;
    char err[256];
    jw_buf b;

    if (jw_auth_bearer(m->sv->auth, req->authorization, jw_now_us() / 1000000, &who, err,
                       sizeof(err)) != 0) {
        jw_http_reply_error(req, 401, "unauthorized", "%s", err);
        return;
    }
    if (who.kind != JW_PRINCIPAL_ADMIN) {
        jw_http_reply_error(req, 403, "forbidden", "/metrics needs the admin key");
        return;
    }
    jw_store_get_stats(m->sv->store, &db);
    jw_engine_get_stats(m->sv->engine, &en);
    jw_ws_get_stats(m->ws, &ws);
    jw_rt_get_stats(m->rt, &rt);
    memset(&cl, 0, sizeof(cl));
    if (m->sv->cluster)
        jw_cluster_get_stats(m->sv->cluster, &cl);
    memset(&mi, 0, sizeof(mi));
    if (m->mirror)
        jw_mirror_get_stats(m->mirror, &mi);
    {
        const struct {
            const char *name, *type, *help;
            double value;
        } rows[] = {
            {"jobwire_http_requests_total", "counter", "HTTP requests received.",
             (double)ctx->requests},
            {"jobwire_connections_refused_total", "counter",
             "Connections closed at accept: --max-connections or the open-file limit reached.",
             (double)ctx->refused_connections},
            {"jobwire_jobs_live", "gauge", "Jobs running in this process.", (double)en.jobs_live},
            {"jobwire_jobs_finished_total", "counter",
             "Jobs that reached completed, failed or cancelled.", (double)en.jobs_finished},
            {"jobwire_jobs_in_memory", "gauge",
             "Jobs in the engine's memory: running, and finished within --finished-job-ttl.",
             (double)en.jobs_in_memory},
            {"jobwire_jobs_evicted_total", "counter",
             "Finished jobs dropped from memory after --finished-job-ttl.",
             (double)en.jobs_evicted},
            {"jobwire_deltas_total", "counter", "Changes (deltas) the engine emitted.",
             (double)en.deltas},
            {"jobwire_deltas_published_total", "counter", "Committed deltas handed to the fan-out.",
             (double)*m->published},
            {"jobwire_provider_calls_total", "counter", "Provider calls started.",
             (double)en.provider_calls},
            {"jobwire_provider_calls_held", "gauge",
             "Provider calls waiting to start until this node's leases are trusted again (no "
             "good heartbeat within --node-ttl less one second).",
             (double)*m->calls_held},
            {"jobwire_db_connected", "gauge", "1 while the store is connected to PostgreSQL.",
             db.connected ? 1 : 0},
            {"jobwire_node_heartbeat_age_seconds", "gauge",
             "Seconds since this node's last good heartbeat was sent (-1: none yet); its "
             "leases are trusted while this stays under --node-ttl less one second.",
             db.heartbeat_us ? (double)(jw_mono_us() - db.heartbeat_us) / 1e6 : -1},
            {"jobwire_leases_lost_total", "counter",
             "Jobs stopped on this node because another node took their lease (a fenced "
             "commit refused).",
             (double)en.leases_lost},
            {"jobwire_leases_held", "gauge",
             "Unfinished jobs this node drives, each under its lease.", (double)en.jobs_live},
            {"jobwire_takeovers_total", "counter",
             "Jobs this node took over at runtime from dead or departed nodes.",
             (double)en.takeovers},
            {"jobwire_cluster_listening", "gauge",
             "1 while the cluster connection LISTENs for the other nodes.", cl.listening ? 1 : 0},
            {"jobwire_cluster_notifications_received_total", "counter",
             "Notifications from other nodes (jw_events, jw_inbox) received.", (double)cl.notices},
            {"jobwire_cluster_notifications_dropped_total", "counter",
             "Notifications dropped because the loop was behind (a catch-up covers them).",
             (double)cl.dropped},
            {"jobwire_cluster_scans_total", "counter",
             "Takeover claims run (periodic, and when a node hands its leases back).",
             (double)cl.scans},
            {"jobwire_cluster_nodes_declared_dead_total", "counter",
             "Other nodes this node declared dead (heartbeat older than --node-ttl).",
             (double)cl.marked_dead},
            {"jobwire_cluster_notifications_sent_total", "counter",
             "jw_events notifications sent with committed groups (one per group, more only "
             "past 7,900 bytes of job ids and seqs).",
             (double)db.notifications},
            {"jobwire_cluster_notifications_failed_total", "counter",
             "Committed groups whose jw_events notification could not be sent (the other nodes' "
             "catch-up reads cover them).",
             (double)db.notifications_failed},
            {"jobwire_cluster_notifications_skipped_total", "counter",
             "jw_events notifications not sent because no other node was live on the database "
             "(it is told to catch up when one appears).",
             (double)db.notifications_skipped},
            {"jobwire_cluster_catchups_total", "counter",
             "Catch-up reads of the journal for the jobs mirrored here (LISTEN (re)established, "
             "and every second while some are).",
             (double)mi.catchups},
            {"jobwire_cluster_mirrors", "gauge",
             "Jobs watched here and driven by another node (or none), kept current from the "
             "journal.",
             (double)mi.mirrors},
            {"jobwire_cluster_fetches_total", "counter",
             "Reads of the journal for mirrored jobs (notified, caught up).", (double)mi.fetches},
            {"jobwire_cluster_deltas_fetched_total", "counter",
             "Deltas of jobs driven elsewhere read from the journal and published here.",
             (double)mi.fetched},
            {"jobwire_cluster_deltas_dropped_total", "counter",
             "Deltas a mirror dropped: already published (duplicate) or past a gap (read "
             "again from the journal).",
             (double)(mi.duplicates + mi.gaps)},
            {"jobwire_db_commits_total", "counter", "Group-commit transactions.",
             (double)db.commits},
            {"jobwire_db_batches_committed_total", "counter", "Batches committed.",
             (double)db.batches_committed},
            {"jobwire_db_deltas_committed_total", "counter", "Deltas committed.",
             (double)db.deltas_committed},
            {"jobwire_db_batches_failed_total", "counter", "Batches PostgreSQL refused.",
             (double)db.batches_failed},
            {"jobwire_db_queued_batches", "gauge", "Batches submitted, not yet answered.",
             (double)db.queued_batches},
            {"jobwire_db_reads_queued", "gauge",
             "Database reads submitted, not yet answered (at most 256).", (double)db.reads_queued},
            {"jobwire_db_reconnects_total", "counter", "Connections made to PostgreSQL.",
             (double)db.reconnects},
            {"jobwire_db_outage_seconds_total", "counter",
             "Seconds without a PostgreSQL connection (finished outages).",
             (double)db.outage_total_us / 1e6},
            {"jobwire_db_events_pruned_total", "counter",
             "job_events rows deleted by retention (--events-retention).",
             (double)db.events_pruned},
            {"jobwire_db_runs_pruned_total", "counter",
             "Finished jobs whose job_events retention deleted.", (double)db.runs_pruned},
            {"jobwire_db_prune_batches_total", "counter", "Retention delete transactions.",
             (double)db.prune_batches},
            {"jobwire_db_prune_rounds_total", "counter",
             "Retention rounds finished (passes over every job with events).",
             (double)db.prune_rounds},
            {"jobwire_ws_connections", "gauge", "Open jobwire.v1 connections.",
             (double)ws.connections},
            {"jobwire_ws_subscriptions", "gauge", "Open subscriptions.", (double)ws.subscriptions},
            {"jobwire_ws_deltas_sent_total", "counter", "Delta messages written to sockets.",
             (double)ws.deltas_sent},
            {"jobwire_ws_frames_sent_total", "counter", "WebSocket frames written.",
             (double)ws.frames_sent},
            {"jobwire_ws_bytes_sent_total", "counter", "Bytes of WebSocket payload written.",
             (double)ws.bytes_sent},
            {"jobwire_ws_resyncs_total", "counter",
             "Times a slow connection's deltas were replaced by a snapshot.", (double)ws.resyncs},
            {"jobwire_ws_slow_closes_total", "counter",
             "Connections closed for staying behind (4008).", (double)ws.slow_closes},
            {"jobwire_ws_pings_total", "counter",
             "Pings sent to jobwire.v1 connections silent for --ws-ping-interval.",
             (double)ws.pings},
            {"jobwire_ws_idle_drops_total", "counter",
             "jobwire.v1 connections dropped: nothing came for --ws-ping-interval after a ping.",
             (double)ws.idle_drops},
            {"jobwire_ws_rx_throttled_total", "counter",
             "Times a jobwire.v1 connection was read no faster: past --ws-message-rate.",
             (double)ws.rx_throttled},
            {"jobwire_ws_subscribes_parked_total", "counter",
             "Subscribes that waited for another's database read of their job (no read of "
             "their own).",
             (double)ws.subscribes_parked},
            {"jobwire_realtime_connections", "gauge",
             "Open Supabase-compatible (/realtime/v1/websocket) connections.",
             (double)rt.connections},
            {"jobwire_realtime_channels", "gauge", "Channels joined or joining.",
             (double)rt.channels},
            {"jobwire_realtime_joins_refused_total", "counter",
             "phx_join answered with an error (bad binding, foreign job, no user token).",
             (double)rt.joins_refused},
            {"jobwire_realtime_events_sent_total", "counter",
             "postgres_changes messages written to sockets.", (double)rt.events_sent},
            {"jobwire_realtime_bytes_sent_total", "counter",
             "Bytes of WebSocket payload written on the Supabase endpoint.", (double)rt.bytes_sent},
            {"jobwire_realtime_channel_errors_total", "counter",
             "Channels told to join again (phx_error) after their connection's queue "
             "overflowed.",
             (double)rt.channel_errors},
            {"jobwire_realtime_rx_throttled_total", "counter",
             "Times a Supabase-endpoint connection was read no faster: past --ws-message-rate.",
             (double)rt.rx_throttled},
            {"jobwire_realtime_pings_total", "counter",
             "Pings sent to Supabase-endpoint connections silent for --ws-ping-interval.",
             (double)rt.pings},
            {"jobwire_realtime_idle_drops_total", "counter",
             "Supabase-endpoint connections dropped: nothing came for --ws-ping-interval after a "
             "ping.",
             (double)rt.idle_drops},
            {"jobwire_realtime_slow_closes_total", "counter",
             "Supabase-endpoint connections closed with replies alone over the queue bound "
             "(4008).",
             (double)rt.slow_closes},
            {"jobwire_ws_queued_bytes", "gauge",
             "WebSocket output queued in the process, both endpoints: each message once however "
             "many queues hold it, queue entries, what lws holds of writes "
             "(--ws-max-queue-total).",
             (double)(m->sv->wsmem ? m->sv->wsmem->used : 0)},
            {"jobwire_ws_queue_sheds_total", "counter",
             "Connections shed (jobwire.v1: resync snapshots; Supabase: phx_error) because the "
             "process' queued output passed --ws-max-queue-total, the furthest behind first.",
             (double)(m->sv->wsmem ? m->sv->wsmem->sheds : 0)},
            {"jobwire_fanout_threads", "gauge",
             "Helper threads taking publish rounds' socket writes (--fanout-threads).",
             (double)jw_fanout_helpers(m->sv->fanout)},
            {"jobwire_fanout_direct_writes_total", "counter",
             "Publish-round writes jobwire sent to a plain-TCP socket itself, both endpoints.",
             (double)(ws.direct_writes + rt.direct_writes)},
            {"jobwire_fanout_parallel_rounds_total", "counter",
             "Publish rounds whose writes were handed to the helper threads, both endpoints.",
             (double)(ws.parallel_rounds + rt.parallel_rounds)},
        };

        jw_buf_init(&b, 4096);
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
            jw_buf_addf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", rows[i].name, rows[i].help,
                        rows[i].name, rows[i].type, rows[i].name, rows[i].value);
    }
    jw_buf_addf(&b, "# HELP jobwire_limit_refusals_total Requests and connections refused by "
                    "a per-address or per-user limit (docs/operations.md, Limits).\n"
                    "# TYPE jobwire_limit_refusals_total counter\n");
    for (int k = 0; k < JW_LIMIT__N; k++)
        jw_buf_addf(&b, "jobwire_limit_refusals_total{limit=\"%s\"} %" PRIu64 "\n",
                    jw_limit_name(k), jw_limits_refused(m->sv->limits, k));
    jw_buf_addf(&b,
                "# HELP jobwire_limit_keys Client addresses and users the limits keep an "
                "entry for.\n# TYPE jobwire_limit_keys gauge\njobwire_limit_keys %zu\n",
                jw_limits_entries(m->sv->limits));
    {
        uint64_t counts[JW_INBOX__N];

        jw_inbox_counts(m->sv->inbox, counts);
        jw_buf_addf(&b, "# HELP jobwire_inbox_commands_total Commands (OTP, cancel) for jobs "
                        "another node runs, by outcome (docs/operations.md, Commands from any "
                        "node).\n# TYPE jobwire_inbox_commands_total counter\n");
        for (int k = 0; k < JW_INBOX__N; k++)
            jw_buf_addf(&b, "jobwire_inbox_commands_total{outcome=\"%s\"} %" PRIu64 "\n",
                        jw_inbox_outcome_names[k], counts[k]);
    }
    write_heap(&b);
    write_histograms(&b, m, &db, &en, &mi.delivery_delay);
    write_process(&b);
    jw_http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    jw_buf_release(&b);
}
