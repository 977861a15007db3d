/*
 * Unit tests of server/rt_parse.c: Phoenix messages in both encodings, the
 * watched tables and their "columns", postgres_changes filters parsed and
 * matched against rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rt_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Expected refs: ABSENT (no such key), JNULL (JSON null), or the string. */
#define ABSENT NULL
#define JNULL "\x01null"

/* 'U' and 'L': two uuids, upper- and lower-case; W: another one. */
#define U1 "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"
#define L1 "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define W1 "ffffffff-0000-4000-8000-000000000001"
#define W2 "00000000-0000-4000-8000-000000000002"

static const jw_rt_table *table(const char *name)
{
    int i = jw_rt_table_find(name);

    assert_true(i >= 0);
    return &jw_rt_tables[i];
}

/* "x" repeated n times, with prefix and suffix: a heap string. */
static char *repeat(const char *prefix, char ch, size_t n, const char *suffix)
{
    size_t lp = strlen(prefix), ls = strlen(suffix);
    char *s = malloc(lp + n + ls + 1);

    assert_non_null(s);
    memcpy(s, prefix, lp);
    memset(s + lp, ch, n);
    memcpy(s + lp + n, suffix, ls + 1);
    return s;
}

static void check_ref(const json_t *got, const char *want, const char *input)
{
    if (want == ABSENT) {
        if (got)
            fail_msg("%s: a ref where none was sent", input);
    } else if (strcmp(want, JNULL) == 0) {
        if (!json_is_null(got))
            fail_msg("%s: expected a null ref", input);
    } else {
        if (!json_is_string(got) || strcmp(json_string_value(got), want) != 0)
            fail_msg("%s: expected ref \"%s\"", input, want);
    }
}

/* ---- messages ------------------------------------------------------------------ */

struct msg_ok {
    bool array;
    const char *in;
    const char *join_ref, *ref, *topic, *event;
    const char *payload_key; /* a key the payload holds, or NULL for {} */
};

static const struct msg_ok msgs_ok[] = {
    /* What supabase-js sends with vsn 2.0.0. */
    {true,
     "[\"1\",\"1\",\"realtime:job-1\",\"phx_join\",{\"config\":{\"broadcast\":{\"ack\":false,"
     "\"self\":false},\"presence\":{\"key\":\"\"},\"postgres_changes\":[{\"event\":\"*\","
     "\"schema\":\"public\",\"table\":\"job_runs\",\"filter\":\"id=eq." L1 "\"}],"
     "\"private\":false},\"access_token\":\"eyJhbGciOi.x.y\"}]",
     "1", "1", "realtime:job-1", "phx_join", "config"},
    {true, "[null,\"2\",\"phoenix\",\"heartbeat\",{}]", JNULL, "2", "phoenix", "heartbeat", NULL},
    {true, "[\"1\",\"3\",\"realtime:job-1\",\"access_token\",{\"access_token\":\"t\"}]", "1", "3",
     "realtime:job-1", "access_token", "access_token"},
    {true, "[\"1\",\"4\",\"realtime:job-1\",\"phx_leave\",{}]", "1", "4", "realtime:job-1",
     "phx_leave", NULL},
    {true, "[null,null,\"t\",\"e\",{}]", JNULL, JNULL, "t", "e", NULL},
    /* Whitespace around the tokens is JSON. */
    {true, " [ \"1\" , \"1\" , \"t\" , \"e\" , { \"k\" : 1 } ] \n", "1", "1", "t", "e", "k"},
    /* Unicode escapes in the topic are decoded. */
    {true, "[\"1\",\"1\",\"realtime:\\u00e9\",\"phx_join\",{}]", "1", "1", "realtime:\xc3\xa9",
     "phx_join", NULL},
    /* The same with vsn 1.0.0. */
    {false,
     "{\"topic\":\"realtime:job-1\",\"event\":\"phx_join\",\"payload\":{\"config\":{"
     "\"postgres_changes\":[{\"event\":\"UPDATE\",\"schema\":\"public\",\"table\":\"job_steps\","
     "\"filter\":\"job_run_id=eq." L1 "\"}]},\"access_token\":\"a.b.c\"},\"ref\":\"1\","
     "\"join_ref\":\"1\"}",
     "1", "1", "realtime:job-1", "phx_join", "config"},
    {false, "{\"topic\":\"phoenix\",\"event\":\"heartbeat\",\"payload\":{},\"ref\":\"5\"}", ABSENT,
     "5", "phoenix", "heartbeat", NULL},
    {false,
     "{\"topic\":\"realtime:job-1\",\"event\":\"phx_leave\",\"payload\":{},\"ref\":\"6\","
     "\"join_ref\":\"1\"}",
     "1", "6", "realtime:job-1", "phx_leave", NULL},
    {false,
     "{\"topic\":\"realtime:job-1\",\"event\":\"access_token\",\"payload\":{\"access_token\":"
     "\"t\"},\"ref\":null,\"join_ref\":null}",
     JNULL, JNULL, "realtime:job-1", "access_token", "access_token"},
    /* Keys in any order, no refs at all, unknown keys ignored. */
    {false, "{\"payload\":{\"a\":[]},\"extra\":1,\"event\":\"e\",\"topic\":\"t\"}", ABSENT, ABSENT,
     "t", "e", "a"},
};

static void test_msg_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(msgs_ok); i++) {
        const struct msg_ok *c = &msgs_ok[i];
        char err[256] = "";
        jw_rt_msg m;
        const char *why = jw_rt_parse(c->in, strlen(c->in), c->array, &m, err, sizeof(err));

        if (why)
            fail_msg("%s: refused (%s: %s)", c->in, why, err);
        assert_non_null(m.root);
        check_ref(m.join_ref, c->join_ref, c->in);
        check_ref(m.ref, c->ref, c->in);
        assert_string_equal(m.topic, c->topic);
        assert_string_equal(m.event, c->event);
        assert_true(json_is_object(m.payload));
        if (c->payload_key)
            assert_non_null(json_object_get(m.payload, c->payload_key));
        else
            assert_int_equal(json_object_size(m.payload), 0);
        jw_rt_msg_release(&m);
        assert_null(m.root);
        assert_null(m.topic);
        assert_null(m.payload);
    }
}

/* The same message in the other encoding is refused, whatever it holds. */
static void test_msg_wrong_encoding(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(msgs_ok); i++) {
        const struct msg_ok *c = &msgs_ok[i];
        char err[256] = "";
        jw_rt_msg m;
        const char *why = jw_rt_parse(c->in, strlen(c->in), !c->array, &m, err, sizeof(err));

        if (!why || strcmp(why, "malformed message") != 0)
            fail_msg("%s in the other encoding: %s", c->in, why ? why : "accepted");
        assert_true(err[0] != '\0');
        jw_rt_msg_release(&m);
    }
}

struct msg_bad {
    bool array;
    const char *in;
    size_t len; /* 0: strlen(in) */
    const char *why;
    const char *err; /* a part of the details */
};

#define MJSON "malformed JSON"
#define MMSG "malformed message"

static const struct msg_bad msgs_bad[] = {
    /* Not JSON. */
    {true, "", 0, MJSON, "column"},
    {true, "[\"1\",\"1\",\"t\",\"e\",{}", 0, MJSON, "column"},
    {true, "[\"1\",\"1\",\"t\",\"e\",{}]x", 0, MJSON, "column"},
    {true, "[\"1\",\"1\",\"t\",\"e\",{},]", 0, MJSON, "column"},
    {true, "[\"1\",\"1\",\"t\",\"e\",{}] []", 0, MJSON, "column"},
    {false, "{'topic':'t'}", 0, MJSON, "column"},
    {false, "{\"topic\":\"t\xff\",\"event\":\"e\",\"payload\":{}}", 0, MJSON, "column"},
    /* A NUL byte inside the frame, and a topic holding one through \u0000. */
    {true, "[\"1\",\"1\",\"t\",\"e\",{}]\0", 23, MJSON, "column"},
    {true, "[\"1\",\"1\",\"t\0x\",\"e\",{}]", 22, MJSON, "column"},
    {true, "[\"1\",\"1\",\"realtime:a\\u0000b\",\"e\",{}]", 0, MJSON, "column"},
    {false, "{\"topic\":\"a\\u0000\",\"event\":\"e\",\"payload\":{}}", 0, MJSON, "column"},
    {true, "[\"1\",\"1\",\"t\",\"e\\u0000\",{}]", 0, MJSON, "column"},
    /* Duplicate keys, at the top and inside the payload. */
    {false, "{\"topic\":\"t\",\"topic\":\"u\",\"event\":\"e\",\"payload\":{}}", 0, MJSON,
     "duplicate"},
    {false, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{\"a\":1,\"a\":2}}", 0, MJSON,
     "duplicate"},
    {true, "[\"1\",\"1\",\"t\",\"e\",{\"k\":{\"x\":1,\"x\":1}}]", 0, MJSON, "duplicate"},
    /* Not a message in its encoding. */
    {true, "[]", 0, MMSG, "[join_ref"},
    {true, "[\"1\",\"1\",\"t\",\"e\"]", 0, MMSG, "[join_ref"},
    {true, "[\"1\",\"1\",\"t\",\"e\",{},{}]", 0, MMSG, "[join_ref"},
    {true, "\"phx_join\"", 0, MMSG, "[join_ref"},
    {true, "5", 0, MMSG, "[join_ref"},
    {true, "null", 0, MMSG, "[join_ref"},
    {false, "[]", 0, MMSG, "objects"},
    {false, "\"x\"", 0, MMSG, "objects"},
    {false, "true", 0, MMSG, "objects"},
    /* The payload must be an object. */
    {true, "[\"1\",\"1\",\"t\",\"e\",[]]", 0, MMSG, "payload"},
    {true, "[\"1\",\"1\",\"t\",\"e\",null]", 0, MMSG, "payload"},
    {true, "[\"1\",\"1\",\"t\",\"e\",\"{}\"]", 0, MMSG, "payload"},
    {true, "[\"1\",\"1\",\"t\",\"e\",1]", 0, MMSG, "payload"},
    {false, "{\"topic\":\"t\",\"event\":\"e\"}", 0, MMSG, "payload"},
    {false, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":[1]}", 0, MMSG, "payload"},
    /* Refs: strings or null, nothing else. */
    {true, "[1,\"1\",\"t\",\"e\",{}]", 0, MMSG, "ref"},
    {true, "[\"1\",1,\"t\",\"e\",{}]", 0, MMSG, "ref"},
    {true, "[\"1\",1.5,\"t\",\"e\",{}]", 0, MMSG, "ref"},
    {true, "[\"1\",true,\"t\",\"e\",{}]", 0, MMSG, "ref"},
    {true, "[\"1\",[\"1\"],\"t\",\"e\",{}]", 0, MMSG, "ref"},
    {true, "[{},\"1\",\"t\",\"e\",{}]", 0, MMSG, "ref"},
    {false, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":2}", 0, MMSG, "ref"},
    {false, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"join_ref\":2}", 0, MMSG, "ref"},
    {false, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":false}", 0, MMSG, "ref"},
    /* Topic and event: non-empty strings. */
    {true, "[\"1\",\"1\",\"\",\"e\",{}]", 0, MMSG, "topic"},
    {true, "[\"1\",\"1\",null,\"e\",{}]", 0, MMSG, "topic"},
    {true, "[\"1\",\"1\",7,\"e\",{}]", 0, MMSG, "topic"},
    {true, "[\"1\",\"1\",[\"t\"],\"e\",{}]", 0, MMSG, "topic"},
    {false, "{\"event\":\"e\",\"payload\":{}}", 0, MMSG, "topic"},
    {true, "[\"1\",\"1\",\"t\",\"\",{}]", 0, MMSG, "event"},
    {true, "[\"1\",\"1\",\"t\",null,{}]", 0, MMSG, "event"},
    {true, "[\"1\",\"1\",\"t\",1,{}]", 0, MMSG, "event"},
    {false, "{\"topic\":\"t\",\"payload\":{}}", 0, MMSG, "event"},
};

static void test_msg_refused(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(msgs_bad); i++) {
        const struct msg_bad *c = &msgs_bad[i];
        char err[256] = "";
        jw_rt_msg m;
        const char *why =
            jw_rt_parse(c->in, c->len ? c->len : strlen(c->in), c->array, &m, err, sizeof(err));

        if (!why || strcmp(why, c->why) != 0)
            fail_msg("case %zu %s: expected \"%s\", got \"%s\" (%s)", i, c->in, c->why,
                     why ? why : "accepted", err);
        if (!strstr(err, c->err))
            fail_msg("case %zu %s: details \"%s\" lack \"%s\"", i, c->in, err, c->err);
        /* A refusal never hands out a topic or event to answer with. */
        assert_null(m.topic);
        assert_null(m.event);
        jw_rt_msg_release(&m);
        assert_null(m.root);
    }
}

/* A refusal for a bad ref carries no ref: it cannot be echoed. */
static void test_msg_bad_ref_not_kept(void **state)
{
    static const struct {
        bool array;
        const char *in;
    } cases[] = {
        {true, "[\"1\",2,\"t\",\"e\",{}]"},
        {true, "[2,\"1\",\"t\",\"e\",{}]"},
        {false, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":\"1\",\"join_ref\":3}"},
        {false, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":{},\"join_ref\":\"1\"}"},
    };

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        char err[256] = "";
        jw_rt_msg m;

        assert_non_null(
            jw_rt_parse(cases[i].in, strlen(cases[i].in), cases[i].array, &m, err, sizeof(err)));
        assert_null(m.ref);
        assert_null(m.join_ref);
        jw_rt_msg_release(&m);
    }
}

/* ref/join_ref: JW_RT_MAX_REF bytes; topic JW_RT_MAX_TOPIC; event 64. */
static void test_msg_limits(void **state)
{
    static const struct {
        const char *what;
        size_t n;
        bool ok;
    } cases[] = {
        {"join_ref", JW_RT_MAX_REF, true},
        {"join_ref", JW_RT_MAX_REF + 1, false},
        {"ref", JW_RT_MAX_REF, true},
        {"ref", JW_RT_MAX_REF + 1, false},
        {"topic", JW_RT_MAX_TOPIC, true},
        {"topic", JW_RT_MAX_TOPIC + 1, false},
        {"event", 64, true},
        {"event", 65, false},
    };

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        char *s = repeat("", 'x', cases[i].n, "");
        const char *ref = strcmp(cases[i].what, "ref") == 0 ? s : "1";
        const char *join_ref = strcmp(cases[i].what, "join_ref") == 0 ? s : "1";
        const char *topic = strcmp(cases[i].what, "topic") == 0 ? s : "t";
        const char *event = strcmp(cases[i].what, "event") == 0 ? s : "e";

        for (int array = 0; array < 2; array++) {
            char buf[1024], err[256] = "";
            jw_rt_msg m;
            const char *why;

            if (array)
                snprintf(buf, sizeof(buf), "[\"%s\",\"%s\",\"%s\",\"%s\",{}]", join_ref, ref, topic,
                         event);
            else
                snprintf(buf, sizeof(buf),
                         "{\"join_ref\":\"%s\",\"ref\":\"%s\",\"topic\":\"%s\",\"event\":\"%s\","
                         "\"payload\":{}}",
                         join_ref, ref, topic, event);
            why = jw_rt_parse(buf, strlen(buf), array, &m, err, sizeof(err));
            if (cases[i].ok) {
                if (why)
                    fail_msg("%s of %zu bytes refused: %s", cases[i].what, cases[i].n, err);
                assert_int_equal(strlen(m.topic), strlen(topic));
                assert_int_equal(strlen(m.event), strlen(event));
                assert_int_equal(json_string_length(m.ref), strlen(ref));
                assert_int_equal(json_string_length(m.join_ref), strlen(join_ref));
            } else {
                if (!why || strcmp(why, MMSG) != 0)
                    fail_msg("%s of %zu bytes: %s", cases[i].what, cases[i].n,
                             why ? why : "accepted");
                assert_non_null(
                    strstr(err, strcmp(cases[i].what, "join_ref") == 0 ? "ref" : cases[i].what));
            }
            jw_rt_msg_release(&m);
        }
        free(s);
    }
}

/* Multi-byte characters count as the bytes they take. */
static void test_msg_topic_bytes(void **state)
{
    char buf[1024], err[256];
    char *topic = malloc(JW_RT_MAX_TOPIC + 2);
    jw_rt_msg m;

    (void)state;
    assert_non_null(topic);
    /* 128 two-byte characters: 256 bytes, fits; one more byte does not. */
    for (int i = 0; i < JW_RT_MAX_TOPIC / 2; i++)
        memcpy(topic + 2 * i, "\xc3\xa9", 2);
    topic[JW_RT_MAX_TOPIC] = '\0';
    snprintf(buf, sizeof(buf), "[null,null,\"%s\",\"e\",{}]", topic);
    assert_null(jw_rt_parse(buf, strlen(buf), true, &m, err, sizeof(err)));
    assert_string_equal(m.topic, topic);
    jw_rt_msg_release(&m);
    strcat(topic, "x");
    snprintf(buf, sizeof(buf), "[null,null,\"%s\",\"e\",{}]", topic);
    assert_string_equal(jw_rt_parse(buf, strlen(buf), true, &m, err, sizeof(err)), MMSG);
    jw_rt_msg_release(&m);
    free(topic);
}

/* Only len bytes are read: the frame need not be NUL-terminated. */
static void test_msg_len(void **state)
{
    const char *frame = "[null,\"1\",\"phoenix\",\"heartbeat\",{}]GARBAGE";
    size_t len = strlen("[null,\"1\",\"phoenix\",\"heartbeat\",{}]");
    char err[256];
    jw_rt_msg m;

    (void)state;
    assert_null(jw_rt_parse(frame, len, true, &m, err, sizeof(err)));
    assert_string_equal(m.event, "heartbeat");
    jw_rt_msg_release(&m);
    assert_string_equal(jw_rt_parse(frame, len - 1, true, &m, err, sizeof(err)), MJSON);
    jw_rt_msg_release(&m);
}

/* ---- the tables ------------------------------------------------------------------ */

/*
 * The columns as db/migrations/001_initial.sql creates them (less job_runs'
 * last_seq, the store's own), with the type names Supabase sends.
 */
static const char *const job_runs_expect[] = {"id",
                                              "uuid",
                                              "user_id",
                                              "uuid",
                                              "job_type",
                                              "text",
                                              "status",
                                              "text",
                                              "current_phase",
                                              "text",
                                              "progress_percentage",
                                              "int4",
                                              "total_transactions",
                                              "int4",
                                              "completed_transactions",
                                              "int4",
                                              "transaction_amount",
                                              "int4",
                                              "transaction_count",
                                              "int4",
                                              "created_at",
                                              "timestamptz",
                                              "updated_at",
                                              "timestamptz",
                                              "completed_at",
                                              "timestamptz",
                                              "error_message",
                                              "text",
                                              "retry_count",
                                              "int4",
                                              "metadata",
                                              "jsonb",
                                              "cancel_requested",
                                              "bool",
                                              NULL};
static const char *const job_steps_expect[] = {"id",
                                               "uuid",
                                               "job_run_id",
                                               "uuid",
                                               "step_name",
                                               "text",
                                               "step_type",
                                               "text",
                                               "status",
                                               "text",
                                               "transaction_index",
                                               "int4",
                                               "started_at",
                                               "timestamptz",
                                               "completed_at",
                                               "timestamptz",
                                               "timeout_at",
                                               "timestamptz",
                                               "step_data",
                                               "jsonb",
                                               "error_message",
                                               "text",
                                               "created_at",
                                               "timestamptz",
                                               "attempt",
                                               "int4",
                                               "idempotency_key",
                                               "text",
                                               "next_retry_at",
                                               "timestamptz",
                                               "updated_at",
                                               "timestamptz",
                                               "outcome_unknown",
                                               "bool",
                                               NULL};
static const char *const otp_requests_expect[] = {
    "id",           "uuid",        "job_run_id",  "uuid",           "job_step_id",
    "uuid",         "otp_type",    "text",        "phone_number",   "text",
    "requested_at", "timestamptz", "received_at", "timestamptz",    "verified_at",
    "timestamptz",  "timeout_at",  "timestamptz", "attempts_count", "int4",
    "max_attempts", "int4",        "status",      "text",           NULL};

static jw_rt_type type_of(const char *pg)
{
    static const struct {
        const char *pg;
        jw_rt_type type;
    } map[] = {{"uuid", JW_RT_UUID}, {"text", JW_RT_TEXT},   {"int4", JW_RT_INT},
               {"bool", JW_RT_BOOL}, {"jsonb", JW_RT_JSONB}, {"timestamptz", JW_RT_TIMESTAMPTZ}};

    for (size_t i = 0; i < N(map); i++)
        if (strcmp(map[i].pg, pg) == 0)
            return map[i].type;
    fail_msg("unknown type %s", pg);
    return JW_RT_TEXT;
}

static void test_tables(void **state)
{
    static const struct {
        const char *name, *job_column;
        const char *const *cols;
    } want[JW_RT_TABLES] = {
        {"job_runs", "id", job_runs_expect},
        {"job_steps", "job_run_id", job_steps_expect},
        {"otp_requests", "job_run_id", otp_requests_expect},
    };

    (void)state;
    for (int i = 0; i < JW_RT_TABLES; i++) {
        const jw_rt_table *t = &jw_rt_tables[i];
        size_t n = 0, len = strlen(t->columns_json);
        char *doc = malloc(len + 3);
        json_error_t jerr;
        json_t *cols;

        assert_string_equal(t->name, want[i].name);
        assert_string_equal(t->job_column, want[i].job_column);
        assert_int_equal(jw_rt_table_find(want[i].name), i);
        while (want[i].cols[2 * n])
            n++;
        assert_int_equal(t->ncolumns, n);
        /* "columns" goes into an event as [columns_json]: valid JSON, no stray comma. */
        assert_non_null(doc);
        snprintf(doc, len + 3, "[%s]", t->columns_json);
        cols = json_loads(doc, JSON_REJECT_DUPLICATES, &jerr);
        if (!cols)
            fail_msg("%s columns_json: %s at %d", t->name, jerr.text, jerr.position);
        assert_true(t->columns_json[0] == '{');
        assert_int_equal(json_array_size(cols), n);
        for (size_t k = 0; k < n; k++) {
            const char *name = want[i].cols[2 * k], *pg = want[i].cols[2 * k + 1];
            json_t *c = json_array_get(cols, k);

            assert_int_equal(json_object_size(c), 2);
            assert_string_equal(json_string_value(json_object_get(c, "name")), name);
            assert_string_equal(json_string_value(json_object_get(c, "type")), pg);
            assert_string_equal(t->columns[k].name, name);
            assert_string_equal(t->columns[k].pg_type, pg);
            assert_int_equal(t->columns[k].type, type_of(pg));
            assert_ptr_equal(jw_rt_column_find(t, name), &t->columns[k]);
        }
        assert_non_null(jw_rt_column_find(t, t->job_column));
        assert_null(jw_rt_column_find(t, ""));
        assert_null(jw_rt_column_find(t, "last_seq"));
        assert_null(jw_rt_column_find(t, "ID"));
        assert_null(jw_rt_column_find(t, "id "));
        json_decref(cols);
        free(doc);
    }
    assert_int_equal(jw_rt_table_find("auth_sessions"), -1);
    assert_int_equal(jw_rt_table_find("job_events"), -1);
    assert_int_equal(jw_rt_table_find("JOB_RUNS"), -1);
    assert_int_equal(jw_rt_table_find("public.job_runs"), -1);
    assert_int_equal(jw_rt_table_find(""), -1);
}

/* ---- filters: parsing ------------------------------------------------------------ */

/*
 * A filter as text: "col op v1|v2;col op v", to compare whole parses in one
 * string.
 */
static void describe(const jw_rt_filter *f, char *out, size_t n)
{
    static const char *const names[] = {"eq", "neq", "lt", "lte", "gt", "gte", "in"};
    size_t len = 0;

    out[0] = '\0';
    for (size_t i = 0; i < f->n; i++) {
        const jw_rt_cond *c = &f->conds[i];

        assert_true((size_t)c->op < N(names));
        len += (size_t)snprintf(out + len, n - len, "%s%s %s ", i ? ";" : "", c->column->name,
                                names[c->op]);
        assert_true(len < n);
        for (size_t k = 0; k < c->nvalues; k++) {
            len += (size_t)snprintf(out + len, n - len, "%s%s", k ? "|" : "", c->values[k]);
            assert_true(len < n);
        }
    }
}

struct filter_ok {
    const char *table, *text, *want;
};

static const struct filter_ok filters_ok[] = {
    /* Every operator. */
    {"job_runs", "status=eq.completed", "status eq completed"},
    {"job_runs", "status=neq.completed", "status neq completed"},
    {"job_runs", "progress_percentage=lt.50", "progress_percentage lt 50"},
    {"job_runs", "progress_percentage=lte.50", "progress_percentage lte 50"},
    {"job_runs", "progress_percentage=gt.50", "progress_percentage gt 50"},
    {"job_runs", "progress_percentage=gte.50", "progress_percentage gte 50"},
    {"job_runs", "status=in.(completed,failed)", "status in completed|failed"},
    /* The empty filter: every row. */
    {"job_runs", "", ""},
    /* Several conditions, ANDed, in the order written. */
    {"job_runs", "status=eq.completed,progress_percentage=gte.50",
     "status eq completed;progress_percentage gte 50"},
    {"job_steps", "job_run_id=eq." L1 ",status=in.(failed,retrying),attempt=gt.1",
     "job_run_id eq " L1 ";status in failed|retrying;attempt gt 1"},
    {"job_runs", "status=in.(a,b),status=in.(c)", "status in a|b;status in c"},
    /* Values may hold '=', '.', spaces, quotes and the like. */
    {"job_runs", "error_message=eq.a=b.c", "error_message eq a=b.c"},
    {"job_runs", "error_message=eq.x y", "error_message eq x y"},
    {"job_runs", "error_message=eq.\"quoted\"", "error_message eq \"quoted\""},
    {"job_runs", "error_message=eq.(a,b)", "error_message eq (a,b)"},
    {"job_runs", "error_message=eq.\xc3\xa9t\xc3\xa9", "error_message eq \xc3\xa9t\xc3\xa9"},
    /* in lists: quoted values hold commas, spaces and parentheses. */
    {"job_runs", "status=in.(\"a,b\",\"c d\",e)", "status in a,b|c d|e"},
    {"job_runs", "status=in.(\"a)\",\"(b\")", "status in a)|(b"},
    {"job_runs", "status=in.(\"\")", "status in "},
    {"job_runs", "status=in.(\"\",x)", "status in |x"},
    {"job_runs", "status=in.(single)", "status in single"},
    {"job_runs", "status=in.(a b,c)", "status in a b|c"},
    {"job_runs", "status=in.(\"a,b\"),progress_percentage=eq.1",
     "status in a,b;progress_percentage eq 1"},
    {"job_runs", "status=in.(a,\"b,c\"),error_message=in.(\"x)y\",z)",
     "status in a|b,c;error_message in x)y|z"},
    /* An unquoted value may hold a quote after its first byte. */
    {"job_runs", "status=in.(a\"b)", "status in a\"b"},
    {"job_runs", "status=in.(a\"b),error_message=in.(c\"d)",
     "status in a\"b;error_message in c\"d"},
    {"job_runs", "status=in.(x,a\"b),status=in.(\"c,d\")", "status in x|a\"b;status in c,d"},
    /* uuids: kept lower-case, in lists too. */
    {"job_runs", "id=eq." U1, "id eq " L1},
    {"job_runs", "id=eq." L1, "id eq " L1},
    {"job_runs", "user_id=neq." U1, "user_id neq " L1},
    {"job_runs", "id=in.(" U1 "," W1 ",\"" U1 "\")", "id in " L1 "|" W1 "|" L1},
    {"otp_requests", "job_step_id=gt." U1, "job_step_id gt " L1},
    /* Integers, up to int64, with a sign. */
    {"job_runs", "retry_count=eq.0", "retry_count eq 0"},
    {"job_runs", "retry_count=eq.-3", "retry_count eq -3"},
    {"job_runs", "retry_count=eq.+3", "retry_count eq 3"},
    /* Blanks on either side, as PostgreSQL's int8 input takes them (only before, once). */
    {"job_runs", "retry_count=eq. 5", "retry_count eq 5"},
    {"job_runs", "retry_count=eq.5 ", "retry_count eq 5"},
    {"job_runs", "retry_count=eq.007", "retry_count eq 7"},
    {"job_runs", "retry_count=lt.9223372036854775807", "retry_count lt 9223372036854775807"},
    {"job_runs", "retry_count=gt.-9223372036854775808", "retry_count gt -9223372036854775808"},
    {"job_steps", "transaction_index=in.(0,1,\"2\")", "transaction_index in 0|1|2"},
    /* Booleans: t/f/true/false, kept as true/false. */
    {"job_runs", "cancel_requested=eq.true", "cancel_requested eq true"},
    {"job_runs", "cancel_requested=eq.t", "cancel_requested eq true"},
    {"job_runs", "cancel_requested=eq.false", "cancel_requested eq false"},
    {"job_runs", "cancel_requested=neq.f", "cancel_requested neq false"},
    {"job_runs", "cancel_requested=in.(t,false)", "cancel_requested in true|false"},
    /* Timestamps are text to the parser. */
    {"job_runs", "created_at=gte.2024-01-01T00:00:00Z", "created_at gte 2024-01-01T00:00:00Z"},
    {"otp_requests", "timeout_at=lt.2030", "timeout_at lt 2030"},
    /* Text values may be empty. */
    {"job_runs", "error_message=eq.", "error_message eq "},
    /* A ')' in a value does not swallow the conditions after it. */
    {"job_runs", "error_message=eq.oops),status=in.(failed,cancelled)",
     "error_message eq oops);status in failed|cancelled"},
    {"job_runs", "error_message=neq.),current_phase=in.(\"a,b\",c)",
     "error_message neq );current_phase in a,b|c"},
    {"job_runs", "error_message=eq.)\",status=in.(\"x,y\")", "error_message eq )\";status in x,y"},
};

static void test_filter_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(filters_ok); i++) {
        const struct filter_ok *c = &filters_ok[i];
        char err[256] = "", got[2048];
        jw_rt_filter f;

        if (jw_rt_filter_parse(table(c->table), c->text, &f, err, sizeof(err)) != 0)
            fail_msg("%s on %s refused: %s", c->text, c->table, err);
        describe(&f, got, sizeof(got));
        if (strcmp(got, c->want) != 0)
            fail_msg("%s on %s: got \"%s\", want \"%s\"", c->text, c->table, got, c->want);
        for (size_t k = 0; k < f.n; k++)
            assert_ptr_equal(f.conds[k].column,
                             jw_rt_column_find(table(c->table), f.conds[k].column->name));
        jw_rt_filter_release(&f);
        assert_int_equal(f.n, 0);
    }
}

/* Each table knows its own columns only. */
static void test_filter_columns_per_table(void **state)
{
    (void)state;
    for (int i = 0; i < JW_RT_TABLES; i++) {
        const jw_rt_table *t = &jw_rt_tables[i];

        for (size_t k = 0; k < t->ncolumns; k++) {
            const jw_rt_column *col = &t->columns[k];
            const char *v = col->type == JW_RT_UUID   ? L1
                            : col->type == JW_RT_INT  ? "7"
                            : col->type == JW_RT_BOOL ? "true"
                                                      : "x";
            char text[128], err[256] = "";
            jw_rt_filter f;
            int rc;

            snprintf(text, sizeof(text), "%s=eq.%s", col->name, v);
            rc = jw_rt_filter_parse(t, text, &f, err, sizeof(err));
            if (col->type == JW_RT_JSONB) {
                assert_int_equal(rc, -1);
                assert_non_null(strstr(err, "jsonb"));
            } else {
                if (rc != 0)
                    fail_msg("%s on %s: %s", text, t->name, err);
                assert_int_equal(f.n, 1);
                assert_ptr_equal(f.conds[0].column, col);
                assert_string_equal(f.conds[0].values[0], v);
            }
            jw_rt_filter_release(&f);
        }
    }
}

struct filter_bad {
    const char *table, *text, *err;
};

static const struct filter_bad filters_bad[] = {
    /* Columns. */
    {"job_runs", "nope=eq.1", "job_runs has no column \"nope\""},
    {"job_runs", "job_run_id=eq." L1, "no column \"job_run_id\""},
    {"job_steps", "user_id=eq." L1, "job_steps has no column \"user_id\""},
    {"otp_requests", "cancel_requested=eq.true", "no column"},
    {"job_runs", "last_seq=eq.1", "no column"},
    {"job_runs", "Status=eq.x", "no column"},
    {"job_runs", " status=eq.x", "no column"},
    {"job_runs", "status =eq.x", "no column"},
    {"job_runs", "=eq.x", "column=operator.value"},
    {"job_runs", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=eq.x",
     "column=operator.value"},
    /* Shape: '=' and '.'. */
    {"job_runs", "status", "column=operator.value"},
    {"job_runs", "statuseq.x", "column=operator.value"},
    {"job_runs", "status=eq", "unknown filter operator"},
    {"job_runs", "status=", "unknown filter operator"},
    {"job_runs", "status=.x", "unknown filter operator"},
    /* Operators. */
    {"job_runs", "status=like.x", "unknown filter operator"},
    {"job_runs", "status=is.null", "unknown filter operator"},
    {"job_runs", "status=EQ.x", "unknown filter operator"},
    {"job_runs", "status=eqq.x", "unknown filter operator"},
    {"job_runs", "status=e.x", "unknown filter operator"},
    {"job_runs", "status=not.eq.x", "unknown filter operator"},
    {"job_runs", "status= eq.x", "unknown filter operator"},
    /* Empty conditions. */
    {"job_runs", ",", "column=operator.value"},
    {"job_runs", "status=eq.a,", "column=operator.value"},
    {"job_runs", ",status=eq.a", "column=operator.value"},
    {"job_runs", "status=eq.a,,status=eq.b", "column=operator.value"},
    /* Any bad condition refuses the filter. */
    {"job_runs", "status=eq.a,nope=eq.b", "no column \"nope\""},
    {"job_runs", "status=in.(a,b),id=eq.nope", "uuid"},
    /* in lists. */
    {"job_runs", "status=in.()", "at least one value"},
    {"job_runs", "status=in.(a,)", "empty value"},
    {"job_runs", "status=in.(,a)", "empty value"},
    {"job_runs", "status=in.(a,,b)", "empty value"},
    {"job_runs", "status=in.(\"a)", "unterminated"},
    {"job_runs", "status=in.(\")", "unterminated"},
    {"job_runs", "status=in.(a,\"b)", "unterminated"},
    {"job_runs", "status=in.(\"a\"b)", "followed by a comma"},
    {"job_runs", "status=in.(\"a\" ,b)", "followed by a comma"},
    {"job_runs", "status=in.(\"a\",)", "empty value"},
    {"job_runs", "status=in.a", "parentheses"},
    {"job_runs", "status=in.a,b", "parentheses"},
    {"job_runs", "status=in.(a", "parentheses"},
    {"job_runs", "status=in.a)", "parentheses"},
    {"job_runs", "status=in.", "parentheses"},
    {"job_runs", "status=in.(", "parentheses"},
    {"job_runs", "status=in.)", "parentheses"},
    {"job_runs", "status=in.(a)x", "parentheses"},
    /* uuids. */
    {"job_runs", "id=eq.nope", "id is a uuid column"},
    {"job_runs", "id=eq.", "uuid column"},
    {"job_runs", "id=eq.0a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d", "uuid column"},
    {"job_runs", "id=eq.{" L1 "}", "uuid column"},
    {"job_runs", "id=eq." L1 "0", "uuid column"},
    {"job_runs", "id=eq.0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4", "uuid column"},
    {"job_runs", "id=eq.0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4g", "uuid column"},
    {"job_runs", "id=eq.0a1b2c3d_4e5f-4a6b-8c7d-9e0f1a2b3c4d", "uuid column"},
    {"job_runs", "id=eq. " L1, "uuid column"},
    {"job_runs", "id=in.(" L1 ",nope)", "uuid column"},
    {"job_runs", "id=in.(" L1 ", " W1 ")", "uuid column"},
    {"otp_requests", "job_step_id=eq.1", "job_step_id is a uuid column"},
    /* Integers. */
    {"job_runs", "retry_count=eq.x", "retry_count is an integer column"},
    {"job_runs", "retry_count=eq.", "integer column"},
    {"job_runs", "retry_count=eq.1.5", "integer column"},
    {"job_runs", "retry_count=eq.1e3", "integer column"},
    {"job_runs", "retry_count=eq.0x10", "integer column"},
    {"job_runs", "retry_count=eq. ", "integer column"},
    {"job_runs", "retry_count=eq.5a", "integer column"},
    {"job_runs", "retry_count=eq.-", "integer column"},
    {"job_runs", "retry_count=eq.9223372036854775808", "integer column"},
    {"job_runs", "retry_count=eq.-9223372036854775809", "integer column"},
    {"job_runs", "retry_count=eq.99999999999999999999", "integer column"},
    {"job_runs", "retry_count=eq.123456789012345678901234567890", "integer column"},
    {"job_runs", "retry_count=in.(1,two)", "integer column"},
    {"job_runs", "retry_count=in.(1,\"\")", "integer column"},
    /* Booleans. */
    {"job_runs", "cancel_requested=eq.yes", "cancel_requested is a boolean column"},
    {"job_runs", "cancel_requested=eq.TRUE", "boolean column"},
    {"job_runs", "cancel_requested=eq.1", "boolean column"},
    {"job_runs", "cancel_requested=eq.", "boolean column"},
    {"job_runs", "cancel_requested=eq.tru", "boolean column"},
    {"job_runs", "cancel_requested=eq.true ", "boolean column"},
    {"job_runs", "cancel_requested=in.(t,maybe)", "boolean column"},
    /* jsonb columns cannot be filtered. */
    {"job_runs", "metadata=eq.{}", "metadata is a jsonb column"},
    {"job_runs", "metadata=neq.x", "jsonb"},
    {"job_runs", "metadata=in.(a)", "jsonb"},
    {"job_steps", "step_data=eq.x", "step_data is a jsonb column"},
};

static void expect_refused(const char *tname, const char *text, const char *want)
{
    char err[256] = "";
    jw_rt_filter f;

    if (jw_rt_filter_parse(table(tname), text, &f, err, sizeof(err)) != -1) {
        char got[2048];

        describe(&f, got, sizeof(got));
        fail_msg("%.80s on %s accepted as \"%.80s\"", text, tname, got);
    }
    if (!strstr(err, want))
        fail_msg("%.80s on %s: \"%s\" lacks \"%s\"", text, tname, err, want);
    jw_rt_filter_release(&f);
    assert_int_equal(f.n, 0);
}

static void test_filter_refused(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(filters_bad); i++)
        expect_refused(filters_bad[i].table, filters_bad[i].text, filters_bad[i].err);
}

/* A value of JW_RT_MAX_VALUE bytes, a filter of JW_RT_MAX_FILTER, JW_RT_MAX_CONDS. */
static void test_filter_limits(void **state)
{
    char err[256], *s, *big;
    jw_rt_filter f;

    (void)state;
    /* One value: 256 bytes fit, 257 do not, in an in list too. */
    s = repeat("error_message=eq.", 'v', JW_RT_MAX_VALUE, "");
    assert_int_equal(jw_rt_filter_parse(table("job_runs"), s, &f, err, sizeof(err)), 0);
    assert_int_equal(strlen(f.conds[0].values[0]), JW_RT_MAX_VALUE);
    jw_rt_filter_release(&f);
    free(s);
    s = repeat("error_message=eq.", 'v', JW_RT_MAX_VALUE + 1, "");
    expect_refused("job_runs", s, "at most 256 bytes");
    free(s);
    s = repeat("error_message=in.(a,", 'v', JW_RT_MAX_VALUE, ")");
    assert_int_equal(jw_rt_filter_parse(table("job_runs"), s, &f, err, sizeof(err)), 0);
    assert_int_equal(strlen(f.conds[0].values[1]), JW_RT_MAX_VALUE);
    jw_rt_filter_release(&f);
    free(s);
    s = repeat("error_message=in.(a,\"", 'v', JW_RT_MAX_VALUE + 1, "\")");
    expect_refused("job_runs", s, "at most 256 bytes");
    free(s);
    s = repeat("error_message=in.(", 'v', JW_RT_MAX_VALUE + 1, ",a)");
    expect_refused("job_runs", s, "at most 256 bytes");
    free(s);

    /* The whole filter: 4096 bytes fit, 4097 do not. Seven conditions of 274 bytes... */
    big = malloc(JW_RT_MAX_FILTER + 2);
    assert_non_null(big);
    big[0] = '\0';
    for (int i = 0; i < JW_RT_MAX_CONDS - 1; i++) {
        s = repeat("error_message=eq.", (char)('a' + i), JW_RT_MAX_VALUE, ",");
        strcat(big, s);
        free(s);
    }
    /* ...and an in list of 200-byte values filling the rest to 4096 exactly. */
    strcat(big, "status=in.(");
    while (strlen(big) + 201 + 1 <= JW_RT_MAX_FILTER) {
        s = repeat("", 'q', 200, ",");
        strcat(big, s);
        free(s);
    }
    {
        size_t rest = JW_RT_MAX_FILTER - strlen(big) - 1; /* for ')' */

        assert_true(rest >= 1 && rest <= JW_RT_MAX_VALUE);
        s = repeat("", 'r', rest, ")");
        strcat(big, s);
        free(s);
    }
    assert_int_equal(strlen(big), JW_RT_MAX_FILTER);
    if (jw_rt_filter_parse(table("job_runs"), big, &f, err, sizeof(err)) != 0)
        fail_msg("a filter of %d bytes refused: %s", JW_RT_MAX_FILTER, err);
    assert_int_equal(f.n, JW_RT_MAX_CONDS);
    jw_rt_filter_release(&f);
    /* One more byte in the last value. */
    big[JW_RT_MAX_FILTER - 1] = 'r';
    big[JW_RT_MAX_FILTER] = ')';
    big[JW_RT_MAX_FILTER + 1] = '\0';
    expect_refused("job_runs", big, "at most 4096 bytes");
    free(big);

    /* Conditions: 8 fit, 9 do not. */
    big = malloc(1024);
    assert_non_null(big);
    big[0] = '\0';
    for (int i = 0; i < JW_RT_MAX_CONDS; i++)
        strcat(big, i ? ",retry_count=gte.0" : "retry_count=gte.0");
    assert_int_equal(jw_rt_filter_parse(table("job_runs"), big, &f, err, sizeof(err)), 0);
    assert_int_equal(f.n, JW_RT_MAX_CONDS);
    jw_rt_filter_release(&f);
    strcat(big, ",retry_count=gte.0");
    expect_refused("job_runs", big, "at most 8 filters");
    free(big);
}

/* in lists: exactly JW_RT_MAX_IN values fit, one more does not. */
static void test_filter_in_max(void **state)
{
    char text[2048], err[256];
    jw_rt_filter f;
    size_t len;

    (void)state;
    for (int quoted = 0; quoted < 2; quoted++) {
        len = (size_t)snprintf(text, sizeof(text), "retry_count=in.(");
        for (int i = 0; i < JW_RT_MAX_IN; i++)
            len += (size_t)snprintf(text + len, sizeof(text) - len, quoted ? "%s\"%d\"" : "%s%d",
                                    i ? "," : "", i);
        snprintf(text + len, sizeof(text) - len, ")");
        if (jw_rt_filter_parse(table("job_runs"), text, &f, err, sizeof(err)) != 0)
            fail_msg("%d values refused: %s", JW_RT_MAX_IN, err);
        assert_int_equal(f.n, 1);
        assert_int_equal(f.conds[0].nvalues, JW_RT_MAX_IN);
        for (int i = 0; i < JW_RT_MAX_IN; i++)
            assert_int_equal(atoi(f.conds[0].values[i]), i);
        jw_rt_filter_release(&f);
        snprintf(text + len, sizeof(text) - len, quoted ? ",\"100\")" : ",100)");
        expect_refused("job_runs", text, "at most 100 values");
    }
}

/* A parse that fails half-way leaves nothing to leak (ASan checks) and err set. */
static void test_filter_release_after_failure(void **state)
{
    char err[256];
    jw_rt_filter f;

    (void)state;
    err[0] = '\0';
    assert_int_equal(jw_rt_filter_parse(table("job_runs"),
                                        "status=in.(a,b,c),id=in.(" L1 "," W1 ",bad)", &f, err,
                                        sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "uuid"));
    jw_rt_filter_release(&f);
    assert_int_equal(f.n, 0);
    /* Releasing twice is harmless. */
    jw_rt_filter_release(&f);
    /* A short err buffer is filled, not overrun. */
    assert_int_equal(jw_rt_filter_parse(table("job_runs"), "nope=eq.1", &f, err, 8), -1);
    assert_int_equal(strlen(err), 7);
    jw_rt_filter_release(&f);
}

/* ---- filters: matching ----------------------------------------------------------- */

struct match_case {
    const char *table, *filter, *row;
    bool want;
};

/* A job_runs row with every kind of column; cases override what they test. */
static const struct match_case matches[] = {
    /* int: numeric, not lexical. */
    {"job_runs", "progress_percentage=eq.50", "{\"progress_percentage\":50}", true},
    {"job_runs", "progress_percentage=eq.50", "{\"progress_percentage\":51}", false},
    {"job_runs", "progress_percentage=eq.+50", "{\"progress_percentage\":50}", true},
    {"job_runs", "progress_percentage=eq.050", "{\"progress_percentage\":50}", true},
    {"job_runs", "progress_percentage=neq.50", "{\"progress_percentage\":50}", false},
    {"job_runs", "progress_percentage=neq.50", "{\"progress_percentage\":49}", true},
    {"job_runs", "progress_percentage=lt.50", "{\"progress_percentage\":49}", true},
    {"job_runs", "progress_percentage=lt.50", "{\"progress_percentage\":50}", false},
    {"job_runs", "progress_percentage=lte.50", "{\"progress_percentage\":50}", true},
    {"job_runs", "progress_percentage=lte.50", "{\"progress_percentage\":51}", false},
    {"job_runs", "progress_percentage=gt.50", "{\"progress_percentage\":51}", true},
    {"job_runs", "progress_percentage=gt.50", "{\"progress_percentage\":50}", false},
    {"job_runs", "progress_percentage=gte.50", "{\"progress_percentage\":50}", true},
    {"job_runs", "progress_percentage=gte.50", "{\"progress_percentage\":49}", false},
    {"job_runs", "progress_percentage=gt.9", "{\"progress_percentage\":10}", true},
    {"job_runs", "progress_percentage=lt.10", "{\"progress_percentage\":9}", true},
    {"job_runs", "retry_count=lt.0", "{\"retry_count\":-1}", true},
    {"job_runs", "retry_count=gt.-2", "{\"retry_count\":-1}", true},
    {"job_runs", "retry_count=gt.-1", "{\"retry_count\":-2}", false},
    {"job_runs", "retry_count=lt.9223372036854775807", "{\"retry_count\":9223372036854775806}",
     true},
    {"job_runs", "retry_count=gt.-9223372036854775808", "{\"retry_count\":-9223372036854775807}",
     true},
    {"job_runs", "retry_count=in.(1,2,3)", "{\"retry_count\":1}", true},
    {"job_runs", "retry_count=in.(1,2,3)", "{\"retry_count\":3}", true},
    {"job_runs", "retry_count=in.(1,2,3)", "{\"retry_count\":4}", false},
    {"job_runs", "retry_count=in.(1,2,3)", "{\"retry_count\":0}", false},
    /* int columns holding another type never match, neq included. */
    {"job_runs", "progress_percentage=eq.50", "{\"progress_percentage\":\"50\"}", false},
    {"job_runs", "progress_percentage=neq.50", "{\"progress_percentage\":\"49\"}", false},
    {"job_runs", "progress_percentage=eq.50", "{\"progress_percentage\":50.0}", false},
    {"job_runs", "progress_percentage=neq.50", "{\"progress_percentage\":49.5}", false},
    {"job_runs", "progress_percentage=lt.50", "{\"progress_percentage\":true}", false},
    {"job_runs", "progress_percentage=in.(50)", "{\"progress_percentage\":\"50\"}", false},
    {"job_runs", "progress_percentage=neq.50", "{\"progress_percentage\":[50]}", false},
    /* text: byte-wise and case-sensitive. */
    {"job_runs", "status=eq.completed", "{\"status\":\"completed\"}", true},
    {"job_runs", "status=eq.completed", "{\"status\":\"Completed\"}", false},
    {"job_runs", "status=eq.completed", "{\"status\":\"completed \"}", false},
    {"job_runs", "status=eq.completed", "{\"status\":\"complete\"}", false},
    {"job_runs", "status=neq.completed", "{\"status\":\"failed\"}", true},
    {"job_runs", "status=neq.completed", "{\"status\":\"completed\"}", false},
    {"job_runs", "status=lt.b", "{\"status\":\"a\"}", true},
    {"job_runs", "status=lt.b", "{\"status\":\"b\"}", false},
    {"job_runs", "status=lt.a", "{\"status\":\"B\"}", true},
    {"job_runs", "status=lt.ab", "{\"status\":\"a\"}", true},
    {"job_runs", "status=lte.b", "{\"status\":\"b\"}", true},
    {"job_runs", "status=gt.a", "{\"status\":\"b\"}", true},
    {"job_runs", "status=gt.a", "{\"status\":\"\xc3\xa9\"}", true},
    {"job_runs", "status=gt.b", "{\"status\":\"b\"}", false},
    {"job_runs", "status=gte.b", "{\"status\":\"b\"}", true},
    {"job_runs", "status=gte.b", "{\"status\":\"a\"}", false},
    {"job_runs", "error_message=eq.", "{\"error_message\":\"\"}", true},
    {"job_runs", "error_message=eq.", "{\"error_message\":null}", false},
    {"job_runs", "status=in.(completed,failed,cancelled)", "{\"status\":\"failed\"}", true},
    {"job_runs", "status=in.(completed,failed,cancelled)", "{\"status\":\"cancelled\"}", true},
    {"job_runs", "status=in.(completed,failed,cancelled)", "{\"status\":\"processing\"}", false},
    {"job_runs", "error_message=in.(\"a,b\",\"c d\")", "{\"error_message\":\"a,b\"}", true},
    {"job_runs", "error_message=in.(\"a,b\",\"c d\")", "{\"error_message\":\"c d\"}", true},
    {"job_runs", "error_message=in.(\"a,b\",\"c d\")", "{\"error_message\":\"a\"}", false},
    {"job_runs", "status=eq.1", "{\"status\":1}", false},
    {"job_runs", "status=neq.1", "{\"status\":1}", false},
    {"job_runs", "status=neq.x", "{\"status\":false}", false},
    /* uuid: case-insensitive, both ways. */
    {"job_runs", "id=eq." L1, "{\"id\":\"" L1 "\"}", true},
    {"job_runs", "id=eq." L1, "{\"id\":\"" U1 "\"}", true},
    {"job_runs", "id=eq." U1, "{\"id\":\"" L1 "\"}", true},
    {"job_runs", "id=eq." L1, "{\"id\":\"" W1 "\"}", false},
    {"job_runs", "id=neq." U1, "{\"id\":\"" L1 "\"}", false},
    {"job_runs", "id=neq." L1, "{\"id\":\"" W1 "\"}", true},
    {"job_runs", "id=lt." W1, "{\"id\":\"" W2 "\"}", true},
    {"job_runs", "id=lt." W1, "{\"id\":\"" L1 "\"}", true},
    {"job_runs", "id=gt." L1, "{\"id\":\"" W1 "\"}", true},
    {"job_runs", "id=gt." W2, "{\"id\":\"" U1 "\"}", true},
    {"job_runs", "id=gte." U1, "{\"id\":\"" L1 "\"}", true},
    {"job_runs", "id=lte." U1, "{\"id\":\"" L1 "\"}", true},
    {"job_runs", "id=in.(" W1 "," U1 ")", "{\"id\":\"" L1 "\"}", true},
    {"job_runs", "id=in.(" W1 "," U1 ")", "{\"id\":\"" W2 "\"}", false},
    {"otp_requests", "job_run_id=in.(" W2 "," W1 ")", "{\"job_run_id\":\"" W1 "\"}", true},
    {"job_runs", "id=eq." L1, "{\"id\":1}", false},
    /* bool: false < true, as in SQL. */
    {"job_runs", "cancel_requested=eq.true", "{\"cancel_requested\":true}", true},
    {"job_runs", "cancel_requested=eq.t", "{\"cancel_requested\":false}", false},
    {"job_runs", "cancel_requested=eq.f", "{\"cancel_requested\":false}", true},
    {"job_runs", "cancel_requested=neq.true", "{\"cancel_requested\":false}", true},
    {"job_runs", "cancel_requested=neq.false", "{\"cancel_requested\":false}", false},
    {"job_runs", "cancel_requested=lt.true", "{\"cancel_requested\":false}", true},
    {"job_runs", "cancel_requested=lt.true", "{\"cancel_requested\":true}", false},
    {"job_runs", "cancel_requested=gt.false", "{\"cancel_requested\":true}", true},
    {"job_runs", "cancel_requested=gt.false", "{\"cancel_requested\":false}", false},
    {"job_runs", "cancel_requested=lte.false", "{\"cancel_requested\":false}", true},
    {"job_runs", "cancel_requested=gte.true", "{\"cancel_requested\":false}", false},
    {"job_runs", "cancel_requested=in.(t,f)", "{\"cancel_requested\":false}", true},
    {"job_runs", "cancel_requested=in.(t)", "{\"cancel_requested\":false}", false},
    {"job_runs", "cancel_requested=eq.true", "{\"cancel_requested\":\"true\"}", false},
    {"job_runs", "cancel_requested=neq.true", "{\"cancel_requested\":0}", false},
    /* timestamptz: byte-wise on the ISO 8601 text. */
    {"job_runs", "created_at=eq.2024-05-01T10:00:00Z", "{\"created_at\":\"2024-05-01T10:00:00Z\"}",
     true},
    {"job_runs", "created_at=gt.2024-05-01T10:00:00Z", "{\"created_at\":\"2024-05-01T10:00:01Z\"}",
     true},
    {"job_runs", "created_at=gt.2024-05-01T10:00:00Z", "{\"created_at\":\"2024-04-30T23:59:59Z\"}",
     false},
    {"job_runs", "created_at=lt.2024-05-01", "{\"created_at\":\"2024-04-30T23:59:59Z\"}", true},
    {"job_runs", "created_at=gte.2024-05-01", "{\"created_at\":\"2024-05-01T00:00:00Z\"}", true},
    {"job_runs", "created_at=lte.2024-05-01T00:00:00Z", "{\"created_at\":\"2024-05-01T00:00:00Z\"}",
     true},
    {"job_steps", "next_retry_at=neq.x", "{\"next_retry_at\":null}", false},
    {"otp_requests", "timeout_at=in.(a,2024-05-01T00:00:00Z)",
     "{\"timeout_at\":\"2024-05-01T00:00:00Z\"}", true},
    /* null and missing values pass no comparison, neq included. */
    {"job_runs", "error_message=eq.x", "{\"error_message\":null}", false},
    {"job_runs", "error_message=neq.x", "{\"error_message\":null}", false},
    {"job_runs", "error_message=neq.x", "{}", false},
    {"job_runs", "completed_at=lt.9", "{\"completed_at\":null}", false},
    {"job_runs", "completed_at=gt.0", "{\"completed_at\":null}", false},
    {"job_runs", "completed_at=gte.", "{\"completed_at\":null}", false},
    {"job_runs", "completed_at=lte.~", "{}", false},
    {"job_runs", "progress_percentage=neq.1", "{\"progress_percentage\":null}", false},
    {"job_runs", "progress_percentage=lt.1", "{}", false},
    {"job_runs", "cancel_requested=neq.true", "{\"cancel_requested\":null}", false},
    {"job_runs", "id=neq." L1, "{\"id\":null}", false},
    {"job_runs", "id=in.(" L1 ")", "{}", false},
    {"job_runs", "status=in.(a,b)", "{\"status\":null}", false},
    {"job_steps", "transaction_index=gte.0", "{\"transaction_index\":null}", false},
    /* A column of the same name elsewhere in the row does not count. */
    {"job_runs", "status=eq.x", "{\"metadata\":{\"status\":\"x\"}}", false},
    /* AND: every condition must hold. */
    {"job_runs", "status=eq.completed,progress_percentage=eq.100",
     "{\"status\":\"completed\",\"progress_percentage\":100}", true},
    {"job_runs", "status=eq.completed,progress_percentage=eq.100",
     "{\"status\":\"completed\",\"progress_percentage\":99}", false},
    {"job_runs", "status=eq.completed,progress_percentage=eq.100",
     "{\"status\":\"failed\",\"progress_percentage\":100}", false},
    {"job_runs", "status=eq.completed,progress_percentage=eq.100", "{\"status\":\"completed\"}",
     false},
    {"job_runs", "progress_percentage=gt.10,progress_percentage=lt.20",
     "{\"progress_percentage\":15}", true},
    {"job_runs", "progress_percentage=gt.10,progress_percentage=lt.20",
     "{\"progress_percentage\":25}", false},
    {"job_runs", "progress_percentage=gt.10,progress_percentage=lt.20",
     "{\"progress_percentage\":5}", false},
    {"job_steps", "job_run_id=eq." L1 ",status=in.(failed,retrying),attempt=gte.2",
     "{\"job_run_id\":\"" U1 "\",\"status\":\"retrying\",\"attempt\":2}", true},
    {"job_steps", "job_run_id=eq." L1 ",status=in.(failed,retrying),attempt=gte.2",
     "{\"job_run_id\":\"" U1 "\",\"status\":\"retrying\",\"attempt\":1}", false},
    {"job_steps", "job_run_id=eq." L1 ",status=in.(failed,retrying),attempt=gte.2",
     "{\"job_run_id\":\"" W1 "\",\"status\":\"retrying\",\"attempt\":2}", false},
    {"job_steps", "job_run_id=eq." L1 ",status=in.(failed,retrying),attempt=gte.2",
     "{\"job_run_id\":\"" L1 "\",\"status\":\"pending\",\"attempt\":2}", false},
    /* The empty filter takes every row, even nulls and {}. */
    {"job_runs", "", "{}", true},
    {"job_runs", "", "{\"status\":null,\"id\":null}", true},
    {"otp_requests", "", "{\"status\":\"requested\"}", true},
};

static void test_match(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(matches); i++) {
        const struct match_case *c = &matches[i];
        char err[256] = "";
        json_error_t jerr;
        json_t *row = json_loads(c->row, 0, &jerr);
        jw_rt_filter f;

        if (!row)
            fail_msg("bad test row %s: %s", c->row, jerr.text);
        if (jw_rt_filter_parse(table(c->table), c->filter, &f, err, sizeof(err)) != 0)
            fail_msg("%s refused: %s", c->filter, err);
        if (jw_rt_filter_match(&f, row) != c->want)
            fail_msg("%s on %s: expected %s", c->filter, c->row, c->want ? "a match" : "none");
        jw_rt_filter_release(&f);
        json_decref(row);
    }
}

/* Every operator on every filterable column: null and missing never match. */
static void test_match_null_every_column(void **state)
{
    static const char *const ops[] = {"eq", "neq", "lt", "lte", "gt", "gte", "in"};

    (void)state;
    for (int i = 0; i < JW_RT_TABLES; i++) {
        const jw_rt_table *t = &jw_rt_tables[i];
        json_t *nulls = json_object(), *empty = json_object();

        for (size_t k = 0; k < t->ncolumns; k++)
            json_object_set_new(nulls, t->columns[k].name, json_null());
        for (size_t k = 0; k < t->ncolumns; k++) {
            const jw_rt_column *col = &t->columns[k];
            const char *v = col->type == JW_RT_UUID   ? L1
                            : col->type == JW_RT_INT  ? "7"
                            : col->type == JW_RT_BOOL ? "true"
                                                      : "x";

            if (col->type == JW_RT_JSONB)
                continue;
            for (size_t o = 0; o < N(ops); o++) {
                char text[128], err[256];
                jw_rt_filter f;

                snprintf(text, sizeof(text), strcmp(ops[o], "in") == 0 ? "%s=%s.(%s)" : "%s=%s.%s",
                         col->name, ops[o], v);
                assert_int_equal(jw_rt_filter_parse(t, text, &f, err, sizeof(err)), 0);
                if (jw_rt_filter_match(&f, nulls) || jw_rt_filter_match(&f, empty))
                    fail_msg("%s on %s matched a null", text, t->name);
                jw_rt_filter_release(&f);
            }
        }
        json_decref(nulls);
        json_decref(empty);
    }
}

/* A row that is not an object matches no condition (and the empty filter). */
static void test_match_not_an_object(void **state)
{
    json_t *rows[] = {json_array(), json_string("x"), json_null(), json_integer(1)};
    char err[256];
    jw_rt_filter f, none;

    (void)state;
    assert_int_equal(jw_rt_filter_parse(table("job_runs"), "status=neq.x", &f, err, sizeof(err)),
                     0);
    assert_int_equal(jw_rt_filter_parse(table("job_runs"), "", &none, err, sizeof(err)), 0);
    for (size_t i = 0; i < N(rows); i++) {
        assert_false(jw_rt_filter_match(&f, rows[i]));
        assert_true(jw_rt_filter_match(&none, rows[i]));
        json_decref(rows[i]);
    }
    jw_rt_filter_release(&f);
    jw_rt_filter_release(&none);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msg_ok),
        cmocka_unit_test(test_msg_wrong_encoding),
        cmocka_unit_test(test_msg_refused),
        cmocka_unit_test(test_msg_bad_ref_not_kept),
        cmocka_unit_test(test_msg_limits),
        cmocka_unit_test(test_msg_topic_bytes),
        cmocka_unit_test(test_msg_len),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_filter_ok),
        cmocka_unit_test(test_filter_columns_per_table),
        cmocka_unit_test(test_filter_refused),
        cmocka_unit_test(test_filter_limits),
        cmocka_unit_test(test_filter_in_max),
        cmocka_unit_test(test_filter_release_after_failure),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_match_null_every_column),
        cmocka_unit_test(test_match_not_an_object),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
