/*
 * cluster.c - the cluster thread: LISTEN for the other nodes, and take over
 * the jobs of the dead and the departed (see cluster.h).
 *
 * The thread blocks in poll() on its connection's socket and an eventfd
 * (stop), with the next scan as the timeout. Notifications are read after
 * every round trip (libpq keeps those that arrive during a query) and posted
 * to the loop's mailbox in arrival order. A lost connection is retried with
 * capped exponential backoff; once listening again the thread posts
 * JW_NOTICE_LISTENING so the consumers catch up from the durable rows.
 */
#include "cluster.h"

#include "claim.h"

#include "jw_error.h"
#include "jw_log.h"
#include "pgconn.h"
#include "jw_util.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define BACKOFF_MIN_US 100000
#define BACKOFF_MAX_US 5000000
/* Notices waiting for the loop; past it they are dropped and a catch-up is posted. */
#define MAX_QUEUED 10000
/* How long this connection must have been up before this node declares
 * another dead: the TTL plus the store's longest reconnect backoff (5 s). */
#define DEATH_GRACE_US(cl) (((int64_t)(cl)->ttl_ms + 5000) * 1000)
/* Jobs one claim takes; the next scan takes the rest. */
#define CLAIM_LIMIT 1000

struct jw_cluster {
    char *conninfo, *node_id;
    int64_t incarnation;
    int ttl_ms;
    int64_t scan_us;
    jw_mailbox out; /* to the loop; its wake is the caller's */
    void (*peer_joined)(void *arg);
    void *peer_arg;
    atomic_size_t queued;
    int stop_fd;
    pthread_t thread;
    bool started;

    pthread_mutex_t stats_lock;
    jw_cluster_stats stats;

    /* The thread's own. */
    PGconn *conn;
    int64_t backoff_us, next_try_us, next_scan_us;
    int64_t listening_since_us; /* monotonic: this connection's LISTEN began */
    bool reconnected;           /* the connection was lost once: see scan() */
    bool connected_once;
    bool missed; /* notices were dropped: post a catch-up when there is room */
    bool rescan; /* a node departed during a claim, or the claim was full: again at once */
};

static void set_error(jw_cluster *cl, const char *what, const char *msg)
{
    size_t n;

    pthread_mutex_lock(&cl->stats_lock);
    snprintf(cl->stats.last_error, sizeof(cl->stats.last_error), "%s%s", what, msg ? msg : "");
    n = strlen(cl->stats.last_error);
    while (n && (cl->stats.last_error[n - 1] == '\n' || cl->stats.last_error[n - 1] == ' '))
        cl->stats.last_error[--n] = '\0';
    pthread_mutex_unlock(&cl->stats_lock);
}

static void post(jw_cluster *cl, jw_notice_kind kind, const char *payload, json_t *claimed)
{
    jw_notice *n;

    if (kind != JW_NOTICE_CLAIMED && atomic_load(&cl->queued) >= MAX_QUEUED) {
        /* The loop is far behind: what this notice says, a catch-up finds. */
        cl->missed = true;
        pthread_mutex_lock(&cl->stats_lock);
        cl->stats.dropped++;
        pthread_mutex_unlock(&cl->stats_lock);
        return;
    }
    if (cl->missed && kind != JW_NOTICE_LISTENING) {
        cl->missed = false;
        post(cl, JW_NOTICE_LISTENING, NULL, NULL);
    }
    n = jw_xcalloc(1, sizeof(*n));
    n->kind = kind;
    n->payload = payload ? jw_xstrdup(payload) : NULL;
    n->claimed = claimed;
    atomic_fetch_add(&cl->queued, 1);
    if (!jw_mailbox_post(&cl->out, &n->node)) {
        atomic_fetch_sub(&cl->queued, 1);
        json_decref(n->claimed);
        free(n->payload);
        free(n);
    }
}

static void disconnect(jw_cluster *cl)
{
    PQfinish(cl->conn);
    cl->conn = NULL;
    pthread_mutex_lock(&cl->stats_lock);
    cl->stats.listening = false;
    pthread_mutex_unlock(&cl->stats_lock);
}

static void backoff(jw_cluster *cl)
{
    cl->next_try_us = jw_mono_us() + cl->backoff_us;
    cl->backoff_us = cl->backoff_us * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : cl->backoff_us * 2;
}

/* Connects and LISTENs; false (and a backoff) when it cannot. */
static bool connect_listen(jw_cluster *cl)
{
    char set[160];
    PGresult *res;

    cl->conn = db__connect(cl->conninfo, "jobwire-cluster", true);
    if (PQstatus(cl->conn) != CONNECTION_OK) {
        set_error(cl, "cannot connect: ", PQerrorMessage(cl->conn));
        goto fail;
    }
    /* The claim's transaction too: a process stopped inside it must not keep
     * its claimed rows locked past the TTL (see store__connect). */
    snprintf(set, sizeof(set),
             "SET idle_in_transaction_session_timeout = %d;"
             " LISTEN jw_events; LISTEN jw_inbox; LISTEN jw_nodes; LISTEN jw_hello",
             cl->ttl_ms);
    res = PQexec(cl->conn, set);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        set_error(cl, "LISTEN: ", PQresultErrorMessage(res));
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    {
        /*
         * Listening: a node alone until now starts notifying its commits, and
         * answers with its own hello once it does (db/commit.c, "Alone").
         */
        const char *params[1] = {cl->node_id};

        res = PQexecParams(cl->conn, "SELECT pg_notify('jw_hello', $1::text)", 1, NULL, params,
                           NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            /* A full notification queue, say: the others find this node within a second. */
            set_error(cl, "hello: ", PQresultErrorMessage(res));
            jw_log_warn("cluster: %s", cl->stats.last_error);
        }
        PQclear(res);
        if (PQstatus(cl->conn) != CONNECTION_OK)
            goto fail;
    }
    if (PQsetnonblocking(cl->conn, 1) != 0) {
        set_error(cl, "non-blocking: ", PQerrorMessage(cl->conn));
        goto fail;
    }
    cl->backoff_us = BACKOFF_MIN_US;
    cl->listening_since_us = jw_mono_us();
    pthread_mutex_lock(&cl->stats_lock);
    cl->stats.listening = true;
    if (cl->connected_once)
        cl->stats.reconnects++;
    pthread_mutex_unlock(&cl->stats_lock);
    if (cl->connected_once) {
        cl->reconnected = true;
        jw_log_info("cluster: listening again");
        /* A hello may have come meanwhile: notify until a heartbeat says alone. */
        if (cl->peer_joined)
            cl->peer_joined(cl->peer_arg);
    }
    cl->connected_once = true;
    post(cl, JW_NOTICE_LISTENING, NULL, NULL);
    return true;
fail:
    disconnect(cl);
    backoff(cl);
    return false;
}

/* Whether a jw_events payload is this node's own (db/commit.c: node id, then a newline). */
static bool own_events(const jw_cluster *cl, const char *payload)
{
    size_t n = strlen(cl->node_id);

    return strncmp(payload, cl->node_id, n) == 0 && payload[n] == '\n' &&
           !strchr(payload + n + 1, '\n');
}

/* Posts what libpq has read; true when a node handed its leases back. */
static bool take_notifies(jw_cluster *cl)
{
    PGnotify *n;
    bool departed = false;
    uint64_t got = 0;

    while ((n = PQnotifies(cl->conn)) != NULL) {
        if (strcmp(n->relname, "jw_events") == 0) {
            /* Our own group commits ("<node id> LF ..."): nothing to fetch. */
            if (!own_events(cl, n->extra)) {
                post(cl, JW_NOTICE_EVENTS, n->extra, NULL);
                got++;
            }
        } else if (strcmp(n->relname, "jw_inbox") == 0) {
            post(cl, JW_NOTICE_INBOX, n->extra, NULL);
            got++;
        } else if (strcmp(n->relname, "jw_nodes") == 0) {
            departed = departed || strcmp(n->extra, cl->node_id) != 0;
        } else if (strcmp(n->relname, "jw_hello") == 0 && strcmp(n->extra, cl->node_id) != 0) {
            /* A node listens now, or notifies again: it may hold what no notice named. */
            if (cl->peer_joined)
                cl->peer_joined(cl->peer_arg);
            post(cl, JW_NOTICE_LISTENING, NULL, NULL);
        }
        PQfreemem(n);
    }
    if (got) {
        pthread_mutex_lock(&cl->stats_lock);
        cl->stats.notices += got;
        pthread_mutex_unlock(&cl->stats_lock);
    }
    return departed;
}

/* One takeover claim; false when the connection broke. */
static bool scan(jw_cluster *cl)
{
    jw_claim c = {
        .node_id = cl->node_id,
        .incarnation = cl->incarnation,
        .ttl_ms = cl->ttl_ms,
        .limit = CLAIM_LIMIT,
        /*
         * After this connection was lost (an outage, of PostgreSQL or of
         * the network), nobody is declared dead until it has been up again
         * for a whole TTL plus the longest reconnect backoff: every node's
         * heartbeat is old, and the first node back must not declare the
         * others dead before their db threads had the time to reconnect and
         * renew theirs. (A node that starts while the others are still
         * reconnecting declares them dead at its start-up claim: docs.)
         */
        .mark_dead =
            !cl->reconnected || jw_mono_us() - cl->listening_since_us >= DEATH_GRACE_US(cl),
    };
    json_t *claimed = NULL;
    int64_t marked = 0;
    char err[512];
    int rc;

    /* The claim's queries block: the socket goes back to blocking meanwhile. */
    PQsetnonblocking(cl->conn, 0);
    rc = db__claim(cl->conn, &c, &claimed, &marked, NULL, err, sizeof(err));
    PQsetnonblocking(cl->conn, 1);
    pthread_mutex_lock(&cl->stats_lock);
    cl->stats.scans++;
    cl->stats.marked_dead += (uint64_t)marked;
    if (rc == 0)
        cl->stats.claimed += json_array_size(claimed);
    pthread_mutex_unlock(&cl->stats_lock);
    if (rc == JW_ECONFLICT)
        return true; /* declared dead: the store's heartbeat ends the process */
    if (rc != 0) {
        set_error(cl, "claim: ", err);
        json_decref(claimed);
        if (PQstatus(cl->conn) != CONNECTION_OK)
            return false;
        jw_log_warn("cluster: takeover claim failed: %s", err);
        return true;
    }
    if (marked)
        jw_log_warn("cluster: %lld nodes past their TTL marked dead", (long long)marked);
    cl->rescan = json_array_size(claimed) >= CLAIM_LIMIT;
    if (json_array_size(claimed)) {
        jw_log_warn("cluster: took over %zu unfinished jobs of dead or departed nodes",
                    json_array_size(claimed));
        post(cl, JW_NOTICE_CLAIMED, NULL, claimed);
    } else {
        json_decref(claimed);
    }
    /* A node that handed its leases back while the claim ran: claim again at once. */
    if (take_notifies(cl))
        cl->rescan = true;
    return true;
}

static void *cluster_main(void *arg)
{
    jw_cluster *cl = arg;

    cl->backoff_us = BACKOFF_MIN_US;
    for (;;) {
        struct pollfd fds[2] = {{.fd = cl->stop_fd, .events = POLLIN}};
        int64_t now = jw_mono_us(), wait_us;
        bool departed = false;
        int nfds = 1;

        if (!cl->conn && now >= cl->next_try_us && connect_listen(cl))
            cl->next_scan_us = now; /* scan at once: a node may have died meanwhile */
        if (cl->conn) {
            fds[1] = (struct pollfd){.fd = PQsocket(cl->conn), .events = POLLIN};
            nfds = 2;
            wait_us = cl->next_scan_us - jw_mono_us();
        } else {
            wait_us = cl->next_try_us - jw_mono_us();
        }
        if (wait_us < 0)
            wait_us = 0;
        if (poll(fds, (nfds_t)nfds, (int)((wait_us + 999) / 1000)) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        if (!cl->conn)
            continue;
        if (fds[1].revents) {
            if (!PQconsumeInput(cl->conn)) {
                set_error(cl, "connection lost: ", PQerrorMessage(cl->conn));
                jw_log_warn("cluster: %s", cl->stats.last_error);
                disconnect(cl);
                backoff(cl);
                continue;
            }
            departed = take_notifies(cl);
        }
        if (departed || jw_mono_us() >= cl->next_scan_us) {
            if (!scan(cl)) {
                jw_log_warn("cluster: connection lost during a claim");
                disconnect(cl);
                backoff(cl);
                continue;
            }
            cl->next_scan_us = jw_mono_us() + (cl->rescan ? 0 : cl->scan_us);
            cl->rescan = false;
        }
    }
    disconnect(cl);
    return NULL;
}

int jw_cluster_start(jw_cluster **out, const jw_cluster_config *cfg)
{
    jw_cluster *cl = jw_xcalloc(1, sizeof(*cl));
    int scan_ms = cfg->scan_ms;

    *out = NULL;
    cl->conninfo = jw_xstrdup(cfg->conninfo);
    cl->node_id = jw_xstrdup(cfg->node_id);
    cl->incarnation = cfg->incarnation;
    cl->peer_joined = cfg->peer_joined;
    cl->peer_arg = cfg->peer_arg;
    cl->ttl_ms = cfg->ttl_ms > 0 ? cfg->ttl_ms : 10000;
    if (scan_ms <= 0)
        scan_ms = cl->ttl_ms / 3 < 1000 ? cl->ttl_ms / 3 : 1000;
    cl->scan_us = (int64_t)(scan_ms > 0 ? scan_ms : 1) * 1000;
    jw_mailbox_init(&cl->out, cfg->wake, cfg->wake_arg);
    pthread_mutex_init(&cl->stats_lock, NULL);
    cl->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (cl->stop_fd < 0 || pthread_create(&cl->thread, NULL, cluster_main, cl) != 0) {
        jw_cluster_free(cl);
        return JW_ENOMEM;
    }
    cl->started = true;
    *out = cl;
    return 0;
}

size_t jw_cluster_drain(jw_cluster *cl, void (*fn)(const jw_notice *n, void *arg), void *arg)
{
    jw_mailbox_node *node = jw_mailbox_take_all(&cl->out);
    size_t count = 0;

    while (node) {
        jw_notice *n = jw_container_of(node, jw_notice, node);

        node = node->next;
        atomic_fetch_sub(&cl->queued, 1);
        fn(n, arg);
        json_decref(n->claimed);
        free(n->payload);
        free(n);
        count++;
    }
    return count;
}

void jw_cluster_get_stats(jw_cluster *cl, jw_cluster_stats *out)
{
    pthread_mutex_lock(&cl->stats_lock);
    *out = cl->stats;
    pthread_mutex_unlock(&cl->stats_lock);
}

void jw_cluster_stop(jw_cluster *cl)
{
    uint64_t one = 1;

    if (!cl || !cl->started)
        return;
    if (write(cl->stop_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
        jw_log_warn("cluster: cannot signal the thread to stop");
    pthread_join(cl->thread, NULL);
    cl->started = false;
    jw_mailbox_close(&cl->out);
}

void jw_cluster_free(jw_cluster *cl)
{
    jw_mailbox_node *node;

    if (!cl)
        return;
    jw_cluster_stop(cl);
    node = jw_mailbox_take_all(&cl->out);
    while (node) {
        jw_notice *n = jw_container_of(node, jw_notice, node);

        node = node->next;
        json_decref(n->claimed);
        free(n->payload);
        free(n);
    }
    jw_mailbox_release(&cl->out);
    pthread_mutex_destroy(&cl->stats_lock);
    if (cl->stop_fd >= 0)
        close(cl->stop_fd);
    free(cl->conninfo);
    free(cl->node_id);
    free(cl);
}
