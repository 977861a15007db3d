/*
 * mirror.c - jobs watched here and driven by another node (or by nobody):
 * their state from the journal, their deltas published here. See mirror.h.
 */
#include "mirror.h"

#include "jw_error.h"
#include "jw_log.h"
#include "jw_map.h"
#include "jw_util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRACE_US (10 * 1000000) /* a mirror nobody watches stays this long */
#define FETCH_ROWS 1000         /* journal rows per read; a full answer reads on */
#define MAX_WILD_MIRRORS 4096   /* mirrors made for wildcard channels stop here */
#define MAX_UNWANTED 4096       /* remembered jobs of nobody a wildcard here may see */
#define MAX_BASES_OUT 16        /* state reads out at once: the reads queue is shared */
#define MAX_PAYLOAD 8192        /* a NOTIFY payload is under 8000 bytes */
#define LOG_EVERY_US (60 * 1000000)

typedef struct mjob {
    char id[JW_UUID_LEN + 1];
    char owner[JW_UUID_LEN + 1]; /* "" until the state names it */
    json_t *state;               /* NULL while its first read is out (pending) */
    int64_t seq;                 /* the last seq published here */
    int64_t known;               /* the highest seq a notice named */
    bool probe;                  /* read its journal at the next fetch */
    bool pending;                /* a JW_READ_JOB of its state is out (or refused: again) */
    bool base_out;
    bool wild;               /* made for wildcard channels, not for a watcher */
    int64_t from;            /* wild, made by a notice of the seqs after this: see on_base */
    int64_t replay_to;       /* the state is at this seq; seq catches up to it (on_base) */
    int64_t unwatched_since; /* monotonic; 0 while watched */
} mjob;

/* A job no wildcard channel here may see, and whose it is (MAX_UNWANTED at most). */
typedef struct unwanted {
    char id[JW_UUID_LEN + 1];
    char owner[JW_UUID_LEN + 1];
} unwanted;

struct jw_mirror {
    char *node_id;
    jw_mirror_ports p;
    jw_map jobs;     /* job id -> mjob */
    jw_map unwanted; /* job id -> unwanted */
    jw_read *fetch_out;
    bool again;      /* fetch once more when the one out is answered ... */
    int again_scope; /* ... this far */
    uint64_t ticks;
    bool retry;      /* a read was refused: the tick tries again */
    bool need_fetch; /* set by offer on a gap */
    jw_timer tick;
    int64_t tick_us;
    int64_t last_log_us;
    jw_read **bases; /* JW_READ_JOB reads out, cancelled by free */
    size_t nbases, capbases;
    jw_mirror_stats stats;
};

/* Microseconds from a commit elsewhere to publication here: 0.1 ms .. 10 s. */
static const jw_hist_spec delay_spec = {
    .n = 16,
    .le = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
           2500000, 5000000, 10000000},
    .decimals = 6,
};

/* What a fetch reads: mirrors behind a notice or new; also every unfinished one; every one. */
enum { FETCH_BEHIND, FETCH_UNFINISHED, FETCH_ALL };

static bool fetch(jw_mirror *m, int scope);

/* ---- mirrors ----------------------------------------------------------------------- */

static mjob *get(const jw_mirror *m, const char *job)
{
    return m->jobs.count ? jw_map_get(&m->jobs, job) : NULL;
}

static bool ready(const mjob *mj)
{
    return mj && mj->state && mj->owner[0];
}

static mjob *add(jw_mirror *m, const char *job)
{
    mjob *mj = jw_xcalloc(1, sizeof(*mj));

    snprintf(mj->id, sizeof(mj->id), "%s", job);
    mj->seq = -1;
    jw_map_put(&m->jobs, mj->id, mj);
    m->stats.mirrors++;
    return mj;
}

static void drop(jw_mirror *m, mjob *mj)
{
    jw_log_debug("mirror: job=%s dropped at seq=%" PRId64, mj->id, mj->seq);
    jw_map_del(&m->jobs, mj->id);
    json_decref(mj->state);
    free(mj);
    m->stats.mirrors--;
}

static void set_owner(mjob *mj)
{
    const char *u =
        json_string_value(json_object_get(json_object_get(mj->state, "job"), "user_id"));

    if (u && strlen(u) == JW_UUID_LEN)
        snprintf(mj->owner, sizeof(mj->owner), "%s", u);
}

/* Takes state (a document with "seq") as the mirror's, published up to its seq. */
static void install(mjob *mj, json_t *state)
{
    json_decref(mj->state);
    mj->state = state;
    mj->seq = json_integer_value(json_object_get(state, "seq"));
    if (mj->known < mj->seq)
        mj->known = mj->seq;
    mj->pending = false;
    mj->probe = true;
    set_owner(mj);
}

static bool finished(const mjob *mj)
{
    const char *st =
        json_string_value(json_object_get(json_object_get(mj->state, "job"), "status"));

    return st && (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0 ||
                  strcmp(st, "cancelled") == 0);
}

/* Upserts d's row into the state: job, or the step / OTP request with its id. */
static void apply(mjob *mj, const jw_delta *d)
{
    static const char *const keys[] = {"job", "steps", "otp_requests"};
    json_t *row, *rows, *v;
    size_t i;

    if ((int)d->table < 0 || d->table > JW_TABLE_OTP_REQUESTS)
        return;
    row = json_loadb(d->row, d->row_len, 0, NULL);
    if (!json_is_object(row)) {
        json_decref(row);
        return;
    }
    if (d->table == JW_TABLE_JOB_RUNS) {
        json_object_set_new(mj->state, "job", row);
        set_owner(mj);
    } else {
        rows = json_object_get(mj->state, keys[d->table]);
        if (!json_is_array(rows)) {
            rows = json_array();
            json_object_set_new(mj->state, keys[d->table], rows);
        }
        json_array_foreach(rows, i, v)
        {
            if (json_equal(json_object_get(v, "id"), json_object_get(row, "id")))
                break;
        }
        if (i < json_array_size(rows))
            json_array_set_new(rows, i, row);
        else
            json_array_append_new(rows, row);
    }
    json_object_set_new(mj->state, "seq", json_integer(d->seq));
}

static void log_gap(jw_mirror *m, const mjob *mj, const jw_delta *d)
{
    int64_t now = jw_mono_us();

    if (now - m->last_log_us < LOG_EVERY_US && m->last_log_us)
        return;
    m->last_log_us = now;
    jw_log_warn("mirror: job=%s: the journal goes from seq %" PRId64 " to %" PRId64
                " (pruned?); its watchers here see no more of it",
                mj->id, mj->seq, d->seq);
}

/* The seq the state is at: what the facade answers for. */
static int64_t state_seq(const mjob *mj)
{
    return mj->replay_to > mj->seq ? mj->replay_to : mj->seq;
}

/*
 * A delta for mj: published when it is the next, else dropped (a gap asks the
 * journal). One the state holds already (replayed, see on_base) goes to the
 * Supabase channels only.
 */
static void offer(jw_mirror *m, mjob *mj, jw_delta *d, bool fetched)
{
    bool replayed;

    if (d->seq <= mj->seq) {
        m->stats.duplicates++;
        return;
    }
    if (d->seq > mj->seq + 1) {
        m->stats.gaps++;
        if (fetched) { /* the journal itself lacks them (pruned): nothing to read on */
            log_gap(m, mj, d);
            return;
        }
        if (mj->known < d->seq)
            mj->known = d->seq;
        m->need_fetch = true;
        return;
    }
    replayed = d->seq <= mj->replay_to;
    if (!replayed)
        apply(mj, d);
    mj->seq = d->seq;
    if (mj->seq >= mj->replay_to)
        mj->replay_to = 0;
    if (mj->known < mj->seq)
        mj->known = mj->seq;
    if (fetched) {
        int64_t waited = d->commit_us ? jw_now_us() - d->commit_us : 0;

        m->stats.fetched++;
        /* A replayed one is as old as the job was when this node first saw it: not a delay. */
        if (d->commit_us && !replayed)
            jw_hist_observe(&m->stats.delivery_delay, waited > 0 ? (uint64_t)waited : 0);
    } else {
        m->stats.local++;
    }
    if (replayed)
        m->p.publish_wild(m->p.ctx, d);
    else
        m->p.publish(m->p.ctx, d);
}

/* The engine drives the job and has committed exactly what was published: its own path now. */
static bool in_sync(jw_mirror *m, const mjob *mj)
{
    return mj->state && m->p.driven(m->p.ctx, mj->id) &&
           m->p.engine_seq(m->p.ctx, mj->id) == mj->seq;
}

/* ---- reads ---------------------------------------------------------------------------- */

static void read_done(jw_read *r, void *arg)
{
    jw_mirror_on_read(arg, r);
}

static void forget_base(jw_mirror *m, const jw_read *r)
{
    for (size_t i = 0; i < m->nbases; i++) {
        if (m->bases[i] == r) {
            m->bases[i] = m->bases[--m->nbases];
            return;
        }
    }
}

/* Asks for the job's state (JW_READ_JOB); answered in on_base. */
static void read_base(jw_mirror *m, mjob *mj)
{
    const char *params[1] = {mj->id};
    jw_read *r;

    if (m->nbases >= MAX_BASES_OUT) {
        m->retry = true; /* the tick asks for it */
        return;
    }
    r = jw_read_new(JW_READ_JOB, 1, params);
    r->done = read_done;
    r->done_arg = m;
    if (m->p.read(m->p.ctx, r) != 0) {
        jw_read_free(r);
        m->retry = true;
        return;
    }
    mj->base_out = true;
    if (m->nbases == m->capbases) {
        m->capbases = m->capbases ? m->capbases * 2 : 8;
        m->bases = jw_xrealloc(m->bases, m->capbases * sizeof(*m->bases));
    }
    m->bases[m->nbases++] = r;
}

static void on_base(jw_mirror *m, jw_read *r)
{
    mjob *mj = get(m, r->params[0]);
    json_t *doc;

    if (!mj || !mj->pending)
        return; /* dropped, or a watcher's state came first */
    mj->base_out = false;
    if (r->status == JW_ENOTFOUND) {
        drop(m, mj);
        return;
    }
    if (r->status != 0 || !(doc = json_loads(r->result, 0, NULL))) {
        m->retry = true; /* the tick asks again */
        return;
    }
    if (m->p.driven(m->p.ctx, mj->id)) {
        json_decref(doc); /* it came into the engine meanwhile: the engine serves it */
        drop(m, mj);
        return;
    }
    install(mj, doc);
    /*
     * Made for wildcard channels by a notice of the seqs after `from`: the
     * state has them already, but the channels here have not seen them (a
     * job older than its first notice here). The journal is read from
     * there; what the state holds goes to the Supabase channels only, so a
     * watcher that takes the state meanwhile sees each seq once.
     */
    if (mj->wild && mj->from > 0 && mj->from < mj->seq) {
        mj->replay_to = mj->seq;
        mj->seq = mj->from;
    }
    mj->from = 0;
    fetch(m, FETCH_BEHIND);
}

static void log_trouble(jw_mirror *m, const char *what, const jw_read *r)
{
    int64_t now = jw_mono_us();

    if (now - m->last_log_us < LOG_EVERY_US && m->last_log_us)
        return;
    m->last_log_us = now;
    jw_log_warn("mirror: %s: %s", what, r->error ? r->error : jw_strerror(r->status));
}

/* The journal's new rows of the mirrors asked for: published in order. */
static void on_fetch(jw_mirror *m, jw_read *r)
{
    jw_delta **ds = NULL;
    size_t n = 0;
    bool full = false;

    m->fetch_out = NULL;
    m->need_fetch = false;
    if (r->status == 0 && jw_store_read_deltas(r, &ds, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            mjob *mj = get(m, ds[i]->job_id);

            if (mj && mj->state)
                offer(m, mj, ds[i], true);
        }
        if (n && m->p.published)
            m->p.published(m->p.ctx);
        full = n >= FETCH_ROWS;
        jw_store_free_deltas(ds, n);
    } else if (r->status != JW_ECANCELED) {
        log_trouble(m, "reading the journal", r);
        m->retry = true;
        return;
    }
    if (!full && !m->again && !m->need_fetch) {
        /* The journal has nothing more now: a notice ahead of it waits for the next one. */
        size_t it = 0;
        const char *k;
        void *v;

        while (jw_map_next(&m->jobs, &it, &k, &v)) {
            mjob *mj = v;

            if (mj->state && mj->known > mj->seq)
                mj->known = mj->seq;
        }
    }
    if (full || m->again || m->need_fetch) {
        int scope = m->again_scope;

        m->again = false;
        m->again_scope = FETCH_BEHIND;
        fetch(m, scope);
    }
}

void jw_mirror_on_read(jw_mirror *m, jw_read *r)
{
    if (r->kind == JW_READ_JOB) {
        forget_base(m, r);
        on_base(m, r);
    } else if (r == m->fetch_out) {
        on_fetch(m, r);
    }
    jw_read_free(r);
}

/*
 * One read of the journal past each mirror's seq: those behind a notice or
 * new, and per scope every unfinished one, or every one. While one is out,
 * the next waits for it. Whether it read (or will read, after the one out).
 */
static bool fetch(jw_mirror *m, int scope)
{
    jw_buf ids, seqs;
    size_t it = 0, count = 0;
    const char *k;
    void *v;
    char rows[16];
    const char *params[3];
    jw_read *r;

    if (m->fetch_out) {
        m->again = true;
        if (m->again_scope < scope)
            m->again_scope = scope;
        return true;
    }
    jw_buf_init(&ids, 256);
    jw_buf_init(&seqs, 64);
    while (jw_map_next(&m->jobs, &it, &k, &v)) {
        mjob *mj = v;

        if (!mj->state || !(scope == FETCH_ALL || (scope == FETCH_UNFINISHED && !finished(mj)) ||
                            mj->probe || mj->known > mj->seq))
            continue;
        mj->probe = false;
        jw_buf_addch(&ids, count ? ',' : '{');
        jw_buf_adds(&ids, mj->id);
        jw_buf_addf(&seqs, "%s%" PRId64, count ? "," : "{", mj->seq);
        count++;
    }
    if (count) {
        jw_buf_addch(&ids, '}');
        jw_buf_addch(&seqs, '}');
        snprintf(rows, sizeof(rows), "%d", FETCH_ROWS);
        params[0] = ids.data;
        params[1] = seqs.data;
        params[2] = rows;
        r = jw_read_new(JW_READ_EVENTS_AFTER, 3, params);
        r->done = read_done;
        r->done_arg = m;
        if (m->p.read(m->p.ctx, r) != 0) {
            jw_read_free(r);
            m->retry = true;
        } else {
            m->fetch_out = r;
            m->stats.fetches++;
        }
    }
    jw_buf_release(&ids);
    jw_buf_release(&seqs);
    return count > 0;
}

/* ---- the facade ------------------------------------------------------------------------ */

/*
 * A mirror of an unfinished job stands in for the engine; the engine answers
 * only for a job it drives (one halted here - its lease lost - is another
 * node's now: the hubs read it, and it gets a mirror). A finished mirror does
 * not stand in: the hubs answer a finished job not in their engine from PostgreSQL, as
 * they always did (a snapshot for since, PostgreSQL's bytes); its mirror only
 * publishes what comes after (a retry elsewhere) and keeps those answers in
 * line with it (jw_mirror_mirrored).
 */
static bool live(const mjob *mj)
{
    return ready(mj) && !finished(mj);
}

const char *jw_mirror_owner(jw_mirror *m, const char *job)
{
    mjob *mj = get(m, job);

    if (live(mj))
        return mj->owner;
    return m->p.driven(m->p.ctx, job) ? m->p.engine_owner(m->p.ctx, job) : NULL;
}

int64_t jw_mirror_seq(jw_mirror *m, const char *job)
{
    mjob *mj = get(m, job);

    if (live(mj))
        return state_seq(mj);
    return m->p.driven(m->p.ctx, job) ? m->p.engine_seq(m->p.ctx, job) : -1;
}

json_t *jw_mirror_snapshot(jw_mirror *m, const char *job)
{
    mjob *mj = get(m, job);

    if (live(mj))
        return json_deep_copy(mj->state);
    return m->p.driven(m->p.ctx, job) ? m->p.engine_snapshot(m->p.ctx, job) : NULL;
}

bool jw_mirror_has(jw_mirror *m, const char *job)
{
    return live(get(m, job));
}

const char *jw_mirror_publish_owner(jw_mirror *m, const char *job)
{
    mjob *mj = get(m, job);

    return ready(mj) ? mj->owner : m->p.engine_owner(m->p.ctx, job);
}

json_t *jw_mirror_mirrored(jw_mirror *m, const char *job)
{
    mjob *mj = get(m, job);

    return ready(mj) ? json_deep_copy(mj->state) : NULL;
}

/* ---- inputs ---------------------------------------------------------------------------- */

void jw_mirror_track(jw_mirror *m, const char *job, const json_t *doc)
{
    mjob *mj = get(m, job);
    json_t *state;

    if (m->p.driven(m->p.ctx, job) || (mj && mj->state) ||
        !json_is_integer(json_object_get(doc, "seq")) || !(state = json_deep_copy(doc)))
        return;
    if (!mj)
        mj = add(m, job);
    install(mj, state);
    fetch(m, FETCH_BEHIND);
}

bool jw_mirror_local(jw_mirror *m, jw_delta *d)
{
    mjob *mj = m ? get(m, d->job_id) : NULL;

    if (!mj)
        return false;
    if (!mj->state) {
        drop(m, mj); /* its state was still being read: the engine has it now */
        return false;
    }
    offer(m, mj, d, false);
    if (m->need_fetch)
        fetch(m, FETCH_BEHIND);
    else if (in_sync(m, mj))
        drop(m, mj);
    return true;
}

/* A mirror of a job in the engine, from its state there. */
static mjob *from_engine(jw_mirror *m, const char *job)
{
    json_t *snap = m->p.engine_snapshot(m->p.ctx, job);
    mjob *mj;

    if (!snap)
        return NULL;
    mj = add(m, job);
    install(mj, snap);
    return mj;
}

void jw_mirror_left(jw_mirror *m, const char *job)
{
    if (!m || get(m, job) || !m->p.watched(m->p.ctx, job))
        return;
    if (from_engine(m, job))
        fetch(m, FETCH_BEHIND);
}

static void forget_unwanted(jw_mirror *m)
{
    size_t it = 0;
    const char *k;
    void *v;

    while (jw_map_next(&m->unwanted, &it, &k, &v))
        free(v);
    jw_map_release(&m->unwanted);
    jw_map_init(&m->unwanted);
}

/* mj was mirrored for wildcard channels, none of which may see its owner's jobs. */
static void remember_unwanted(jw_mirror *m, const mjob *mj)
{
    unwanted *u;

    if (m->unwanted.count >= MAX_UNWANTED)
        forget_unwanted(m);
    u = jw_xcalloc(1, sizeof(*u));
    snprintf(u->id, sizeof(u->id), "%s", mj->id);
    snprintf(u->owner, sizeof(u->owner), "%s", mj->owner);
    free(jw_map_put(&m->unwanted, u->id, u));
}

/* Whether a wildcard channel here may see the job (true while its owner is unknown). */
static bool wildcard_wants(jw_mirror *m, const char *job)
{
    unwanted *u = m->unwanted.count ? jw_map_get(&m->unwanted, job) : NULL;

    if (!m->p.wildcard(m->p.ctx, NULL))
        return false;
    if (!u || m->p.wildcard(m->p.ctx, u->owner))
        return true;
    return false;
}

/* One "<job>:<after>:<last>" of a notice. */
static void noticed(jw_mirror *m, const char *job, int64_t after, int64_t last)
{
    mjob *mj = get(m, job);

    if (mj) {
        if (mj->known < last)
            mj->known = last;
        return;
    }
    if (m->p.engine_owner(m->p.ctx, job)) {
        /* In the engine: driven here and as far (a notice from before a takeover), or
         * a stale copy (its lease lost, or finished and retried elsewhere). */
        if ((m->p.driven(m->p.ctx, job) && m->p.engine_seq(m->p.ctx, job) >= last) ||
            !m->p.watched(m->p.ctx, job) || !(mj = from_engine(m, job)))
            return;
    } else if (m->p.watched(m->p.ctx, job)) {
        mj = add(m, job); /* a watcher's own read is out: whichever answers first */
        mj->pending = true;
        read_base(m, mj);
    } else if (m->stats.mirrors < MAX_WILD_MIRRORS && wildcard_wants(m, job)) {
        free(jw_map_del(&m->unwanted, job));
        mj = add(m, job);
        mj->wild = true;
        if (after == 0) {
            /* Its first commit: every row is in the journal, from seq 1. */
            install(mj, json_pack("{s:n, s:[], s:[], s:i}", "job", "steps", "otp_requests", "seq",
                                  (json_int_t)0));
        } else {
            mj->from = after;
            mj->pending = true;
            read_base(m, mj);
        }
    } else {
        return;
    }
    if (mj->known < last)
        mj->known = last;
}

void jw_mirror_notice(jw_mirror *m, const char *payload)
{
    const char *nl = strrchr(payload, '\n'), *p;
    size_t len = strnlen(payload, MAX_PAYLOAD + 1);

    if (!nl || len > MAX_PAYLOAD)
        return;
    if ((size_t)(nl - payload) == strlen(m->node_id) &&
        memcmp(payload, m->node_id, (size_t)(nl - payload)) == 0)
        return; /* our own commit */
    for (p = nl + 1; *p;) {
        char job[JW_UUID_LEN + 1];
        const char *end = strchr(p, ' ');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        long long after, last;
        char tail;

        if (n > JW_UUID_LEN && n < JW_UUID_LEN + 48 && p[JW_UUID_LEN] == ':') {
            char entry[JW_UUID_LEN + 48];

            memcpy(entry, p, n);
            entry[n] = '\0';
            memcpy(job, p, JW_UUID_LEN);
            job[JW_UUID_LEN] = '\0';
            if (jw_uuid_valid(job) &&
                sscanf(entry + JW_UUID_LEN, ":%lld:%lld%c", &after, &last, &tail) == 2 &&
                after >= 0 && last > after)
                noticed(m, job, after, last);
        }
        p += n;
        while (*p == ' ')
            p++;
    }
    fetch(m, FETCH_BEHIND);
}

/* A catch-up of scope: states still to read asked for again, then one fetch. */
static void catch_up(jw_mirror *m, int scope)
{
    size_t it = 0;
    const char *k;
    void *v;

    m->retry = false;
    while (jw_map_next(&m->jobs, &it, &k, &v)) {
        mjob *mj = v;

        if (mj->pending && !mj->base_out)
            read_base(m, mj);
    }
    if (m->jobs.count && fetch(m, scope))
        m->stats.catchups++;
}

void jw_mirror_catch_up(jw_mirror *m)
{
    catch_up(m, FETCH_ALL);
}

void jw_mirror_tick(jw_mirror *m, int64_t now)
{
    bool wild = m->p.wildcard(m->p.ctx, NULL);
    mjob **gone = NULL;
    size_t ngone = 0, it = 0;
    const char *k;
    void *v;

    /* Finished jobs' mirrors wait for a retry elsewhere, which notifies: their
     * own catch-up is every tenth tick. */
    catch_up(m, ++m->ticks % 10 ? FETCH_UNFINISHED : FETCH_ALL);
    if (!wild && m->unwanted.count)
        forget_unwanted(m); /* the next wildcard channel may be someone else's */
    if (m->jobs.count)
        gone = jw_xmalloc(m->jobs.count * sizeof(*gone));
    while (jw_map_next(&m->jobs, &it, &k, &v)) {
        mjob *mj = v;

        bool keep = m->p.watched(m->p.ctx, mj->id);

        if (!keep && wild && mj->state && !finished(mj)) {
            keep = !mj->owner[0] || m->p.wildcard(m->p.ctx, mj->owner);
            if (!keep && mj->wild) { /* nobody's here: forget it, and ignore its notices */
                remember_unwanted(m, mj);
                gone[ngone++] = mj;
                continue;
            }
        }
        if (keep)
            mj->unwatched_since = 0;
        else if (!mj->unwatched_since)
            mj->unwatched_since = now;
        if ((mj->unwatched_since && now - mj->unwatched_since >= GRACE_US) || in_sync(m, mj))
            gone[ngone++] = mj;
    }
    for (size_t i = 0; i < ngone; i++)
        drop(m, gone[i]);
    free(gone);
}

static void on_tick(jw_timer *t, void *arg)
{
    jw_mirror *m = arg;

    (void)t;
    jw_mirror_tick(m, jw_mono_us());
    jw_timers_arm(m->p.timers, &m->tick, jw_now_us() + m->tick_us, on_tick, m);
}

/* ---- life cycle ------------------------------------------------------------------------- */

jw_mirror *jw_mirror_new(const char *node_id, const jw_mirror_ports *ports)
{
    jw_mirror *m = jw_xcalloc(1, sizeof(*m));

    m->node_id = jw_xstrdup(node_id ? node_id : "");
    m->p = *ports;
    m->tick_us = (int64_t)(ports->tick_ms > 0 ? ports->tick_ms : 1000) * 1000;
    jw_map_init(&m->jobs);
    jw_map_init(&m->unwanted);
    jw_hist_init(&m->stats.delivery_delay, &delay_spec);
    if (m->p.timers)
        jw_timers_arm(m->p.timers, &m->tick, jw_now_us() + m->tick_us, on_tick, m);
    return m;
}

void jw_mirror_free(jw_mirror *m)
{
    size_t it = 0;
    const char *k;
    void *v;

    if (!m)
        return;
    if (m->p.timers)
        jw_timers_cancel(m->p.timers, &m->tick);
    if (m->fetch_out)
        jw_read_cancel(m->fetch_out);
    for (size_t i = 0; i < m->nbases; i++)
        jw_read_cancel(m->bases[i]);
    while (jw_map_next(&m->jobs, &it, &k, &v)) {
        mjob *mj = v;

        json_decref(mj->state);
        free(mj);
    }
    jw_map_release(&m->jobs);
    forget_unwanted(m);
    jw_map_release(&m->unwanted);
    free(m->bases);
    free(m->node_id);
    free(m);
}

void jw_mirror_get_stats(const jw_mirror *m, jw_mirror_stats *out)
{
    *out = m->stats;
}
