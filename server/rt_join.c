/*
 * rt_join.c - a Supabase phx_join: its bindings and filters, the principal
 * of its token, the jobs it names (owners read from PostgreSQL for those not
 * in memory, through the connection's bounded reads), and its answer, "ok"
 * only once its bindings are live.
 */
#include "rt_internal.h"

#include <inttypes.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
static void forget_read(rconn *c, const jw_read *r);

/* ---- joining ---------------------------------------------------------------------- */

/*
 * Answers the phx_join ok, once: the bindings echoed by index, then the system
 * message. The echo and the join's ref are needed for nothing else, so they go
 * (about 1 KB a channel, for as long as it lives).
 */
static void answer_ok(channel *ch)
{
    json_t *resp;

    if (ch->answered)
        return;
    resp = json_pack("{s:o}", "postgres_changes", ch->reply);
    ch->reply = NULL;
    ch->answered = true;
    rt_send_phx(ch->c, ch->join_ref, ch->join_ref_v, ch->topic, "phx_reply",
                json_pack("{s:s, s:o}", "status", "ok", "response", resp));
    json_decref(ch->join_ref_v);
    ch->join_ref_v = NULL;
    if (ch->nb)
        rt_send_system(ch, "ok", "postgres_changes", "Subscribed to PostgreSQL");
}

/* Registers the channel's bindings: from now on it gets events (and its initial rows). */
void rt_go_live(channel *ch)
{
    rconn *c = ch->c;
    jw_rt *rt = c->rt;

    ch->live = true;
    ch->registered = true;
    if (ch->wildcard) {
        grow(&rt->wild, &rt->capwild, rt->nwild + 1, sizeof(*rt->wild));
        rt->wild[rt->nwild++] = ch;
    } else {
        for (size_t k = 0; k < ch->njobs; k++) {
            rt_job *j = jw_map_get(&rt->jobs, ch->jobs[k].job);

            if (!j) {
                j = jw_xcalloc(1, sizeof(*j));
                snprintf(j->id, sizeof(j->id), "%s", ch->jobs[k].job);
                jw_map_put(&rt->jobs, j->id, j);
            }
            grow(&j->ch, &j->cap, j->n + 1, sizeof(*j->ch));
            j->ch[j->n++] = ch;
        }
    }
    rt_watch_expiry(ch);
    if (!ch->answered)
        answer_ok(ch);
    rt_send_initial_rows(ch);
    json_decref(ch->docs);
    ch->docs = NULL;
}

/*
 * A channel that joined without a user got a token, but it may not see what
 * its filters name (or the token ran out, or the database failed): it ends
 * with the reason a join with that token would have got. A failed read is
 * worth another try: phx_error makes supabase-js join again, with the token.
 */
static void refuse_upgrade(channel *ch)
{
    rconn *c = ch->c;

    jw_log_info("realtime conn=%" PRIu64 " access_token for %s refused: %s", c->base.id, ch->topic,
                ch->refusal);
    if (ch->retry) {
        ch->errored = true;
        c->rt->stats.channel_errors++;
        rt_send_phx(c, ch->join_ref, ch->join_ref, ch->topic, "phx_error", json_object());
        return;
    }
    rt_send_system(ch, "error", "system", ch->refusal);
    rt_close_channel(ch);
}

/*
 * Every owner is known (or a read failed): answer the join, or start the
 * delivery of a channel that joined without a user and has one now. Nothing
 * is sent for a token that ran out meanwhile.
 */
void rt_finish_join(channel *ch)
{
    rconn *c = ch->c;

    if (ch->pending)
        return;
    if (!ch->refusal[0] && rt_token_expired(&ch->who, jw_now_us())) {
        char ts[40];

        jw_format_ts(ch->who.expires_at * 1000000, ts, sizeof(ts));
        snprintf(ch->refusal, sizeof(ch->refusal), "invalid access_token: token expired at %s", ts);
    }
    if (ch->refusal[0] && ch->answered) {
        refuse_upgrade(ch);
        return;
    }
    if (ch->refusal[0]) {
        c->rt->stats.joins_refused++;
        jw_log_info("realtime conn=%" PRIu64 " join of %s refused: %s", c->base.id, ch->topic,
                    ch->refusal);
        rt_send_phx(
            c, ch->join_ref, ch->join_ref_v, ch->topic, "phx_reply",
            json_pack("{s:s, s:{s:s}}", "status", "error", "response", "reason", ch->refusal));
        rt_remove_channel(ch);
        return;
    }
    if (ch->awaiting) { /* SUBSCRIBED, and nothing until an access_token brings a user */
        answer_ok(ch);
        if (!c->nudged)
            jw_timers_arm(c->rt->sv->mono_timers, &ch->nudge, jw_mono_us() + AWAIT_TOKEN_US,
                          rt_nudge, ch);
    } else {
        rt_go_live(ch);
    }
}

static void refuse_job(channel *ch, const char *job)
{
    if (!ch->refusal[0])
        snprintf(ch->refusal, sizeof(ch->refusal),
                 "no job %s, or it is not yours: jobwire serves a user only their own jobs", job);
}

static channel *find_serial(rconn *c, uint64_t serial)
{
    for (size_t i = 0; i < c->nchans; i++)
        if (c->chans[i]->serial == serial)
            return c->chans[i];
    return NULL;
}

void jw_rt_on_read(jw_rt *rt, jw_read *r)
{
    rt_op *op = r->user;
    jw_wsconn *b = jw_wsconn_find(&rt->conns, op->conn_key);
    rconn *c = b ? rconn_of(b) : NULL;
    channel *ch;
    json_t *doc = NULL;
    const char *owner;

    if (c)
        forget_read(c, r);
    ch = c ? find_serial(c, op->serial) : NULL;
    if (!ch || ch->registered || c->base.closing || r->status == JW_ECANCELED)
        goto out; /* gone, or not the join this read was for */
    ch->pending--;
    if (r->status == 0)
        doc = json_loads(r->result, 0, NULL);
    owner = json_string_value(json_object_get(json_object_get(doc, "job"), "user_id"));
    if (r->status != 0 && r->status != JW_ENOTFOUND) {
        if (!ch->refusal[0]) {
            snprintf(ch->refusal, sizeof(ch->refusal), "the database is unavailable; try again");
            ch->retry = true;
        }
    } else if (!owner || !jw_principal_may_access(&ch->who, owner)) {
        refuse_job(ch, op->job);
    } else {
        json_t *mirrored = NULL;

        for (size_t k = 0; k < ch->njobs; k++)
            if (strcmp(ch->jobs[k].job, op->job) == 0)
                snprintf(ch->jobs[k].owner, sizeof(ch->jobs[k].owner), "%s", owner);
        /* Another node may drive it: mirror it here, so its events reach the channel;
         * its initial rows are at the seq its events continue from. */
        if (rt->sv->mirror) {
            jw_mirror_track(rt->sv->mirror, op->job, doc);
            mirrored = jw_mirror_mirrored(rt->sv->mirror, op->job);
            if (mirrored &&
                json_equal(json_object_get(mirrored, "seq"), json_object_get(doc, "seq"))) {
                json_decref(mirrored);
                mirrored = NULL;
            }
        }
        if (ch->docs)
            json_object_set(ch->docs, op->job, mirrored ? mirrored : doc);
        json_decref(mirrored);
    }
    json_decref(doc);
    rt_finish_join(ch);
out:
    free(op);
    jw_read_free(r);
}

static void add_job(channel *ch, const char *job)
{
    for (size_t k = 0; k < ch->njobs; k++)
        if (strcmp(ch->jobs[k].job, job) == 0)
            return;
    if (ch->njobs == MAX_JOBS) {
        snprintf(ch->refusal, sizeof(ch->refusal),
                 "the filters of one channel may name at most %d jobs", MAX_JOBS);
        return;
    }
    ch->jobs = jw_xrealloc(ch->jobs, (ch->njobs + 1) * sizeof(*ch->jobs));
    memset(&ch->jobs[ch->njobs], 0, sizeof(*ch->jobs));
    snprintf(ch->jobs[ch->njobs++].job, JW_UUID_LEN + 1, "%s", job);
}

/*
 * The jobs a binding's filter pins it to: an eq or in condition on the
 * table's job column (job_runs.id, *.job_run_id). A binding without one
 * watches every job its principal may see.
 */
static void pin_jobs(channel *ch, const binding *b)
{
    const jw_rt_cond *pin = NULL;

    for (size_t i = 0; b->table >= 0 && i < b->filter.n && !pin; i++) {
        const jw_rt_cond *cnd = &b->filter.conds[i];

        if (strcmp(cnd->column->name, jw_rt_tables[b->table].job_column) == 0 &&
            (cnd->op == JW_RT_EQ || cnd->op == JW_RT_IN))
            pin = cnd;
    }
    if (!pin) {
        ch->wildcard = true;
        return;
    }
    for (size_t i = 0; i < pin->nvalues; i++)
        add_job(ch, pin->values[i]);
}

/* Parses one postgres_changes entry into b and its echo; NULL or the refusal. */
static const char *parse_binding(jw_rt *rt, json_t *in, binding *b, json_t **echo, char *err,
                                 size_t errlen)
{
    json_t *ev = json_object_get(in, "event"), *schema = json_object_get(in, "schema"),
           *table = json_object_get(in, "table"), *filter = json_object_get(in, "filter"),
           *initial = json_object_get(in, "jobwire_initial_rows");
    const char *e;

    memset(b, 0, sizeof(*b));
    b->table = -1;
    if (!json_is_object(in))
        return "each postgres_changes entry must be an object";
    if (!json_is_string(ev))
        return "postgres_changes needs an event: *, INSERT, UPDATE or DELETE";
    e = json_string_value(ev);
    if (strcmp(e, "*") == 0)
        b->events = EV_ALL;
    else if (strcasecmp(e, "INSERT") == 0)
        b->events = EV_INSERT;
    else if (strcasecmp(e, "UPDATE") == 0)
        b->events = EV_UPDATE;
    else if (strcasecmp(e, "DELETE") == 0)
        b->events = EV_DELETE;
    else
        return "postgres_changes event must be *, INSERT, UPDATE or DELETE";
    if (schema && !json_is_null(schema) &&
        !(json_is_string(schema) && strcmp(json_string_value(schema), "public") == 0))
        return "jobwire serves the schema public only";
    if (table && !json_is_null(table)) {
        if (!json_is_string(table) || (b->table = jw_rt_table_find(json_string_value(table))) < 0)
            return "jobwire serves the tables job_runs, job_steps and otp_requests";
    }
    if (filter && !json_is_null(filter)) {
        if (!json_is_string(filter))
            return "filter must be a string";
        if (b->table < 0)
            return "a filter needs a table";
        if (jw_rt_filter_parse(&jw_rt_tables[b->table], json_string_value(filter), &b->filter, err,
                               errlen) != 0)
            return err;
    }
    if (initial && !json_is_boolean(initial))
        return "jobwire_initial_rows must be true or false";
    b->initial = json_is_true(initial);
    b->id = ++rt->next_binding;
    /* The reply must match the request by index: echo what came, omit what did not. */
    *echo = json_pack("{s:O, s:I}", "event", ev, "id", (json_int_t)b->id);
    if (schema && !json_is_null(schema))
        json_object_set(*echo, "schema", schema);
    if (table && !json_is_null(table))
        json_object_set(*echo, "table", table);
    if (filter && !json_is_null(filter))
        json_object_set(*echo, "filter", filter);
    return NULL;
}

static bool is_apikey(const rconn *c, const char *token)
{
    unsigned char h[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)token, strlen(token), h);
    return CRYPTO_memcmp(h, c->apikey_hash, sizeof(h)) == 0;
}

/*
 * What the apikey grants now. An apikey that is a user's token runs out
 * like an access_token: past its exp (and the leeway) it is refused.
 */
static const char *key_principal(rconn *c, jw_principal *who, char *err, size_t errlen)
{
    if (rt_token_expired(&c->key_who, jw_now_us())) {
        char ts[40];

        jw_format_ts(c->key_who.expires_at * 1000000, ts, sizeof(ts));
        snprintf(err, errlen, "the apikey's token expired at %s", ts);
        who->kind = JW_PRINCIPAL_NONE;
        return err;
    }
    *who = c->key_who;
    return NULL;
}

/*
 * Who a join's (or a refresh's) access_token stands for: a user or the
 * admin, or what the apikey grants when there is none or the app sends the
 * apikey itself (supabase-js does so while signed out), often nobody (the
 * NONE principal). NULL, or the refusal.
 */
const char *rt_principal_of(rconn *c, json_t *token, jw_principal *who, char *err, size_t errlen)
{
    const char *t;

    if (!token || json_is_null(token))
        return key_principal(c, who, err, errlen);
    if (!json_is_string(token))
        return "access_token must be a string";
    t = json_string_value(token);
    if (jw_auth_token(c->rt->sv->auth, t, jw_now_us() / 1000000, who, err, errlen) == 0)
        return NULL;
    if (is_apikey(c, t))
        return key_principal(c, who, err, errlen);
    return err;
}

/*
 * A valid token came: the connection may stay past the auth deadline, and the
 * first user it stands for counts it (--max-ws-per-user). False when that user
 * already holds as many: the connection is closed (4429).
 */
bool rt_authenticated(rconn *c, const jw_principal *who)
{
    jw_rt *rt = c->rt;

    if (who->kind == JW_PRINCIPAL_USER && !c->user_hold) {
        c->user_hold = jw_limits_ws_hold(rt->sv->limits, who->user_id, jw_mono_us());
        if (!c->user_hold) {
            jw_log_info("realtime conn=%" PRIu64 " closed: the user holds --max-ws-per-user (%d) "
                        "connections",
                        c->base.id, rt->sv->cfg->max_ws_per_user);
            rt_start_close(c, CLOSE_TOO_MANY, "too many connections for this user");
            return false;
        }
    }
    if (!c->authed) {
        c->authed = true;
        jw_timers_cancel(c->rt->sv->mono_timers, &c->auth_timer);
    }
    return true;
}

/* Cancels the reads asked for channel serial (every one of c's when 0): nobody waits. */
void rt_cancel_reads(rconn *c, uint64_t serial)
{
    for (size_t i = 0; i < c->nreads; i++) {
        const rt_op *op = c->reads[i]->user;

        if (!serial || op->serial == serial)
            jw_read_cancel(c->reads[i]);
    }
}

static void forget_read(rconn *c, const jw_read *r)
{
    for (size_t i = 0; i < c->nreads; i++) {
        if (c->reads[i] == r) {
            c->reads[i] = c->reads[--c->nreads];
            return;
        }
    }
}

/* jw_read.done: the store answered one of the endpoint's reads. */
static void read_done(jw_read *r, void *rt)
{
    jw_rt_on_read(rt, r);
}

/*
 * Checks that the jobs the channel's filters name are its principal's: at
 * once for jobs in memory, otherwise with a read from PostgreSQL each
 * (jw_rt_on_read). The caller then calls finish_join.
 */
void rt_authorize_jobs(channel *ch)
{
    rconn *c = ch->c;
    jw_rt *rt = c->rt;

    size_t need = 0, live = 0;

    for (size_t k = 0; k < ch->njobs; k++)
        need += !jw_sv_job_owner(rt->sv, ch->jobs[k].job);
    /*
     * Reads of joins replaced or left are cancelled but stay counted until the
     * store answers them: they may fill a second MAX_CONN_READS, so one join
     * replaced by another of the same size goes through, while a rejoin loop
     * still cannot queue reads without bound.
     */
    for (size_t i = 0; i < c->nreads; i++)
        live += !atomic_load(&c->reads[i]->cancelled);
    if (live + need > MAX_CONN_READS || c->nreads + need > 2 * MAX_CONN_READS) {
        snprintf(ch->refusal, sizeof(ch->refusal),
                 "this connection has %zu database reads waiting (at most %d); join again once "
                 "its other joins are answered",
                 live + need > MAX_CONN_READS ? live : c->nreads,
                 live + need > MAX_CONN_READS ? MAX_CONN_READS : 2 * MAX_CONN_READS);
        return;
    }
    for (size_t k = 0; k < ch->njobs && !ch->refusal[0]; k++) {
        const char *owner = jw_sv_job_owner(rt->sv, ch->jobs[k].job);
        const char *params[1] = {ch->jobs[k].job};
        rt_op *op;
        jw_read *r;
        int rc;

        if (owner) {
            if (!jw_principal_may_access(&ch->who, owner))
                refuse_job(ch, ch->jobs[k].job);
            snprintf(ch->jobs[k].owner, sizeof(ch->jobs[k].owner), "%s", owner);
            continue;
        }
        op = jw_xcalloc(1, sizeof(*op));
        snprintf(op->conn_key, sizeof(op->conn_key), "%s", c->base.key);
        op->serial = ch->serial;
        snprintf(op->job, sizeof(op->job), "%s", ch->jobs[k].job);
        r = jw_read_new(JW_READ_JOB, 1, params);
        r->user = op;
        r->done = read_done;
        r->done_arg = rt;
        rc = jw_store_read(rt->sv->store, r);
        if (rc != 0) {
            jw_read_free(r);
            free(op);
            snprintf(ch->refusal, sizeof(ch->refusal), "%s",
                     rc == JW_ELIMIT ? "too many database reads are queued; join again later"
                                     : "shutting down");
            ch->retry = rc == JW_ELIMIT;
            break;
        }
        grow(&c->reads, &c->capreads, c->nreads + 1, sizeof(*c->reads));
        c->reads[c->nreads++] = r;
        c->reads_asked++;
        ch->pending++;
    }
}

void rt_h_join(rconn *c, const jw_rt_msg *m)
{
    jw_rt *rt = c->rt;
    json_t *config = json_object_get(m->payload, "config");
    json_t *changes = json_object_get(config, "postgres_changes"), *entry;
    channel *ch, *old = rt_find_channel(c, m->topic);
    char err[256];
    const char *why;
    size_t i;

    if (old && old->errored) /* the rejoin phx_error asked for */
        rt_remove_channel(old);
    else if (old) /* a join of a joined topic replaces it, as Phoenix does */
        rt_close_channel(old);
    if (c->nchans >= MAX_CHANNELS) {
        snprintf(err, sizeof(err), "at most %zu channels per connection", MAX_CHANNELS);
        rt_reply_error(c, m, err);
        return;
    }
    if (changes && !json_is_null(changes) &&
        (!json_is_array(changes) || json_array_size(changes) > MAX_BINDINGS)) {
        snprintf(err, sizeof(err), "config.postgres_changes must be an array of at most %d",
                 MAX_BINDINGS);
        rt_reply_error(c, m, err);
        return;
    }
    ch = jw_xcalloc(1, sizeof(*ch));
    ch->c = c;
    ch->serial = ++rt->next_serial;
    ch->topic = jw_xstrdup(m->topic);
    {
        json_t *s = json_string(m->topic);

        ch->topic_json = json_dumps(s, JSON_ENCODE_ANY);
        json_decref(s);
    }
    ch->join_ref = json_incref(m->join_ref ? m->join_ref : json_null());
    ch->join_ref_v = json_incref(m->ref ? m->ref : json_null());
    ch->reply = json_array();
    grow(&c->chans, &c->capchans, c->nchans + 1, sizeof(*c->chans));
    c->chans[c->nchans++] = ch;
    rt->stats.channels++;

    why =
        rt_principal_of(c, json_object_get(m->payload, "access_token"), &ch->who, err, sizeof(err));
    if (why) {
        snprintf(ch->refusal, sizeof(ch->refusal), "invalid access_token: %s", why);
        rt_finish_join(ch);
        return;
    }
    if (ch->who.kind != JW_PRINCIPAL_NONE && !rt_authenticated(c, &ch->who))
        return; /* closing: the channel goes with the connection */
    ch->b = jw_xcalloc(json_array_size(changes) + 1, sizeof(*ch->b));
    json_array_foreach(changes, i, entry)
    {
        binding *b = &ch->b[ch->nb];
        json_t *echo = NULL;
        size_t values = 0;

        if ((why = parse_binding(rt, entry, b, &echo, err, sizeof(err)))) {
            jw_rt_filter_release(&b->filter);
            snprintf(ch->refusal, sizeof(ch->refusal), "postgres_changes[%zu]: %s", i, why);
            rt_finish_join(ch);
            return;
        }
        for (size_t k = 0; k < b->filter.n; k++)
            values += b->filter.conds[k].nvalues;
        if (c->filter_values + values > MAX_CONN_FILTER_VALUES) {
            jw_rt_filter_release(&b->filter);
            json_decref(echo);
            snprintf(ch->refusal, sizeof(ch->refusal),
                     "postgres_changes[%zu]: this connection's channels hold %zu filter values; "
                     "at most %d in all",
                     i, c->filter_values, MAX_CONN_FILTER_VALUES);
            rt_finish_join(ch);
            return;
        }
        ch->nvalues += values;
        c->filter_values += values;
        ch->nb++;
        json_array_append_new(ch->reply, echo);
        pin_jobs(ch, b);
        if (b->initial && !ch->docs)
            ch->docs = json_object();
    }
    /*
     * No user yet: supabase-js joins before its accessToken callback has
     * answered and sends the token in an access_token message once joined
     * (h_access_token). Supabase accepts such a join; so does jobwire, with
     * nothing delivered and no job checked until a user's token comes.
     */
    if (ch->nb && ch->who.kind == JW_PRINCIPAL_NONE)
        ch->awaiting = true;
    else
        rt_authorize_jobs(ch);
    rt_finish_join(ch);
}
