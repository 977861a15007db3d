/*
 * sessions.c - login reuse: a login's provider session is kept per user and
 * type in memory and, sealed with the configured key, in auth_sessions, so a
 * later job of the same user skips that login while the session is valid.
 *
 * Loop thread only. The engine owns every user_session (its sessions map);
 * the plain token never leaves memory.
 */
#include "engine_internal.h"

#include "jw_schema.h"

#include "jw_buf.h"
#include "jw_crypto.h"
#include "jw_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static user_session *find_session(jw_engine *e, const char *user, const char *type)
{
    char key[JW_UUID_LEN + 24];

    snprintf(key, sizeof(key), "%s/%s", user, type);
    return jw_map_get(&e->sessions, key);
}

static void aad_of(const user_session *us, char *aad, size_t n)
{
    /* Binds the sealed token to its row and owner: it cannot be moved. */
    snprintf(aad, n, "auth_sessions/%s/%s/%s", us->id, us->user, us->type);
}

static const jw_buf *session_row(jw_engine *e, const user_session *us)
{
    json_t *data = json_object(); /* a session's data stays empty: the token is sealed apart */
    jw_row_writer w;

    if (!data)
        jw_oom("session row");
    jw_buf_reset(&e->row);
    jw_row_begin(&w, &jw_schema_tables[JW_TABLE_AUTH_SESSIONS], &e->row);
    jw_row_str(&w, JW_AUTH_SESSIONS_id, us->id);
    jw_row_str(&w, JW_AUTH_SESSIONS_user_id, us->user);
    jw_row_str(&w, JW_AUTH_SESSIONS_session_type, us->type);
    jw_row_str_or_null(&w, JW_AUTH_SESSIONS_auth_token_enc, us->sealed_hex);
    jw_row_null(&w, JW_AUTH_SESSIONS_browser_context_id);
    jw_row_json(&w, JW_AUTH_SESSIONS_session_data, data);
    json_decref(data);
    jw_row_ts(&w, JW_AUTH_SESSIONS_created_at, us->created_at);
    jw_row_ts(&w, JW_AUTH_SESSIONS_expires_at, us->expires_at);
    jw_row_ts(&w, JW_AUTH_SESSIONS_last_used_at, us->last_used_at);
    jw_row_bool(&w, JW_AUTH_SESSIONS_is_active, true);
    jw_row_end(&w);
    return &e->row;
}

/* auth_sessions belong to a user, not a job: a quiet write, not journaled. */
void engine__emit_session(job *j, const user_session *us)
{
    const jw_buf *row = session_row(j->e, us);
    jw_delta *d = jw_delta_new(j->id, us->id, 0, now_us(j->e), JW_TABLE_AUTH_SESSIONS, JW_OP_UPDATE,
                               row->data, row->len, NULL);

    if (!d)
        return;
    if (!j->open)
        j->open = jw_batch_new();
    jw_batch_add(j->open, d);
    engine__mark_dirty(j);
}

static char *seal_session(jw_engine *e, const user_session *us)
{
    char aad[160], *plain, *hex = NULL;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;

    if (!e->cfg.session_key)
        return NULL;
    plain = json_dumps(us->session, JSON_COMPACT);
    if (!plain)
        jw_oom("session");
    aad_of(us, aad, sizeof(aad));
    if (jw_seal(e->cfg.session_key, plain, strlen(plain), aad, strlen(aad), &sealed, &sealed_len) ==
        0)
        hex = jw_bytea_hex(sealed, sealed_len);
    jw_secure_free(plain, strlen(plain));
    free(sealed);
    return hex;
}

void engine__free_session(user_session *us)
{
    if (!us)
        return;
    json_decref(us->session);
    free(us->sealed_hex);
    free(us);
}

/* A login succeeded: remember its session for this user's later jobs. */
void engine__keep_session(job *j, const jw_step_def *def, json_t *session)
{
    jw_engine *e = j->e;
    json_t *ttl = json_object_get(session, "expires_in");
    int64_t ttl_s = json_is_integer(ttl) ? json_integer_value(ttl) : 3600;
    const char *type = def->session;
    user_session *us;

    if (ttl_s < 0)
        ttl_s = 0;
    if (ttl_s > 30 * 24 * 3600)
        ttl_s = 30 * 24 * 3600;
    us = find_session(e, j->user, type);
    if (!us) {
        us = jw_xcalloc(1, sizeof(*us));
        jw_uuid_new(us->id);
        snprintf(us->user, sizeof(us->user), "%s", j->user);
        snprintf(us->type, sizeof(us->type), "%s", type);
        snprintf(us->key, sizeof(us->key), "%s/%s", j->user, type);
        jw_map_put(&e->sessions, us->key, us);
    }
    json_decref(us->session);
    us->session = json_deep_copy(session);
    us->created_at = us->last_used_at = now_us(e);
    us->expires_at = us->created_at + ttl_s * 1000000;
    free(us->sealed_hex);
    us->sealed_hex = seal_session(e, us);
    if (us->sealed_hex)
        engine__emit_session(j, us);
}

/* A valid session of this login's type for the job's user, or NULL. */
user_session *engine__reusable_session(job *j, const jw_step_def *def)
{
    user_session *us;

    if (!def->session)
        return NULL;
    us = find_session(j->e, j->user, def->session);
    if (!us || us->expires_at <= now_us(j->e) + j->e->cfg.session_margin_ms * 1000)
        return NULL;
    return us;
}

/* Jobs present the user's valid sessions to later steps. */
void engine__attach_sessions(job *j)
{
    for (const jw_step_def *d = jw_validation_steps; d->name; d++) {
        user_session *us;

        if (!d->login || !(us = engine__reusable_session(j, d)))
            continue;
        if (!json_object_get(j->sessions, d->session))
            json_object_set(j->sessions, d->session, us->session);
    }
}

int jw_engine_load_sessions(jw_engine *e, const json_t *rows)
{
    const json_t *row;
    size_t i;
    int n = 0;

    json_array_foreach(rows, i, row)
    {
        const char *id = json_string_value(json_object_get(row, "id"));
        const char *user = json_string_value(json_object_get(row, "user_id"));
        const char *type = json_string_value(json_object_get(row, "session_type"));
        const char *hex = json_string_value(json_object_get(row, "auth_token_enc"));
        uint8_t *sealed = NULL, *plain = NULL;
        size_t sealed_len = 0, plain_len = 0;
        user_session probe = {0}, *us;
        char aad[160];

        if (!e->cfg.session_key || !jw_uuid_valid(id) || !jw_uuid_valid(user) || !type ||
            strlen(type) >= sizeof(probe.type) || !hex)
            continue;
        snprintf(probe.id, sizeof(probe.id), "%s", id);
        snprintf(probe.user, sizeof(probe.user), "%s", user);
        snprintf(probe.type, sizeof(probe.type), "%s", type);
        aad_of(&probe, aad, sizeof(aad));
        if (jw_bytea_parse(hex, &sealed, &sealed_len) != 0 ||
            jw_open(e->cfg.session_key, sealed, sealed_len, aad, strlen(aad), &plain, &plain_len) !=
                0) {
            jw_log_warn("engine: auth session %s does not open with the configured secret key; "
                        "skipped (was JOBWIRE_SECRET_KEY changed?)",
                        id);
            free(sealed);
            continue;
        }
        free(sealed);
        us = jw_xcalloc(1, sizeof(*us));
        *us = probe;
        snprintf(us->key, sizeof(us->key), "%s/%s", user, type);
        us->session = json_loadb((const char *)plain, plain_len, 0, NULL);
        jw_secure_free(plain, plain_len);
        if (!us->session) {
            free(us);
            continue;
        }
        us->sealed_hex = jw_xstrdup(hex);
        us->created_at = engine__parse_ts(json_object_get(row, "created_at"));
        us->expires_at = engine__parse_ts(json_object_get(row, "expires_at"));
        us->last_used_at = engine__parse_ts(json_object_get(row, "last_used_at"));
        engine__free_session(jw_map_put(&e->sessions, us->key, us));
        n++;
    }
    return n;
}
