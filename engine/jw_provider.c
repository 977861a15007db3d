/*
 * jw_provider.c - calls and replies of the provider contract: construction,
 * the request body, and the strict parse of a reply. See jw_provider.h.
 *
 * A reply comes from a peer (the http provider's remote end), so the parse
 * bounds every string and checks every type before copying anything into
 * the fixed-size fields of jw_provider_reply.
 */
#include "jw_provider.h"

#include "jw_error.h"
#include "jw_log.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_AFTER_MAX_MS 600000
/* Longer messages are refused; shorter ones are cut to reply->message. */
#define MESSAGE_MAX 4096
/* How much of a peer's bad value an error message quotes. */
#define QUOTE_MAX 40

jw_provider_call *jw_provider_call_new(void)
{
    return jw_xcalloc(1, sizeof(jw_provider_call));
}

void jw_provider_call_free(jw_provider_call *call)
{
    if (!call)
        return;
    if (call->otp) {
        OPENSSL_cleanse(call->otp, strlen(call->otp));
        free(call->otp);
    }
    json_decref(call->session);
    free(call);
}

/* json_object_set_new that aborts on out of memory: every key here is ours. */
static void set_new(json_t *obj, const char *key, json_t *value)
{
    if (!value || json_object_set_new(obj, key, value) != 0)
        jw_oom("a provider JSON field");
}

/*
 * json_string, but a value that is not valid UTF-8 (jansson refuses those)
 * goes out with its non-ASCII bytes as '?' instead of failing the body.
 */
static json_t *text(const char *s)
{
    json_t *v = json_string(s);
    char *copy;

    if (v)
        return v;
    copy = jw_xstrdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = json_string(copy);
    free(copy);
    return v;
}

json_t *jw_provider_call_to_json(const jw_provider_call *call)
{
    json_t *o = json_object();

    if (!o)
        jw_oom("a provider call");
    set_new(o, "job_id", text(call->job_id));
    set_new(o, "step_id", text(call->step_id));
    set_new(o, "step_name", text(call->step_name));
    set_new(o, "transaction_index", json_integer(call->transaction_index));
    set_new(o, "attempt", json_integer(call->attempt));
    set_new(o, "idempotency_key", text(call->idempotency_key));
    set_new(o, "amount", json_integer(call->amount));
    /* A copy, so the body never shares (or races on) the engine's object. */
    set_new(o, "session", call->session ? json_deep_copy(call->session) : json_null());
    if (call->otp)
        set_new(o, "otp", text(call->otp));
    return o;
}

jw_provider_reply *jw_provider_reply_new(uint64_t call_id, jw_provider_status status)
{
    jw_provider_reply *r = jw_xcalloc(1, sizeof(*r));

    r->call_id = call_id;
    r->status = status;
    if (status == JW_PROVIDER_OK) {
        r->data = json_object();
        if (!r->data)
            jw_oom("a provider reply");
    }
    return r;
}

void jw_provider_reply_free(jw_provider_reply *reply)
{
    if (!reply)
        return;
    json_decref(reply->data);
    free(reply);
}

/* --- parsing ------------------------------------------------------------- */

/*
 * Copies at most QUOTE_MAX bytes of a peer's string for an error message,
 * printable ASCII only, so a hostile value can neither forge log lines nor
 * flood them.
 */
static void quote(char out[QUOTE_MAX + 4], const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len && n < QUOTE_MAX; i++)
        out[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (len > QUOTE_MAX) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

/*
 * Copies the string member key into out (size outlen, NUL included).
 * allowed(c) filters characters; an absent member is an error unless
 * optional. Returns 0 or -1 with err set.
 */
static int get_string(const json_t *body, const char *key, bool optional, char *out, size_t outlen,
                      bool (*allowed)(unsigned char c), const char *allowed_what, char *err,
                      size_t errlen)
{
    const json_t *v = json_object_get(body, key);
    const char *s;
    size_t len;
    char q[QUOTE_MAX + 4];

    out[0] = '\0';
    if (!v) {
        if (optional)
            return 0;
        jw_errorf(err, errlen, JW_EINVAL, "reply has no \"%s\" (a string is required)", key);
        return -1;
    }
    if (!json_is_string(v)) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"%s\" must be a string (got %s)", key,
                  type_name(v));
        return -1;
    }
    s = json_string_value(v);
    len = json_string_length(v);
    if (len >= outlen) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"%s\" is %zu bytes (limit %zu)", key, len,
                  outlen - 1);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!allowed((unsigned char)s[i])) {
            quote(q, s, len);
            jw_errorf(err, errlen, JW_EINVAL, "reply \"%s\" \"%s\" has a character outside %s", key,
                      q, allowed_what);
            return -1;
        }
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static bool is_otp_type_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static bool is_printable(unsigned char c)
{
    return c >= 0x20 && c < 0x7f;
}

/*
 * Copies a message of len bytes (valid UTF-8, as jansson guarantees) into
 * out, cutting at a character boundary when it does not fit and turning
 * control characters (newlines included) into spaces: the message ends up in
 * log lines and in the step's error_message.
 */
static void copy_message(char *out, size_t outlen, const char *s, size_t len)
{
    size_t n = len < outlen - 1 ? len : outlen - 1;

    /* Never end on half a UTF-8 sequence: back up to a lead byte. */
    if (n < len)
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        out[i] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    out[n] = '\0';
}

static int parse_ok(jw_provider_reply *r, const json_t *body, char *err, size_t errlen)
{
    const json_t *data = json_object_get(body, "data");

    if (!data)
        return 0; /* reply_new made the empty object */
    if (!json_is_object(data)) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"data\" must be an object (got %s)",
                  type_name(data));
        return -1;
    }
    /* Measured as stored: jansson may write a value back longer than it came
     * (0.1 becomes 0.10000000000000001). */
    if (json_dumpb(data, NULL, 0, JSON_COMPACT) > JW_PROVIDER_DATA_MAX) {
        jw_errorf(err, errlen, JW_EINVAL,
                  "reply \"data\" takes %zu bytes as compact JSON (limit %d)",
                  json_dumpb(data, NULL, 0, JSON_COMPACT), JW_PROVIDER_DATA_MAX);
        return -1;
    }
    json_decref(r->data);
    r->data = json_deep_copy(data);
    if (!r->data)
        jw_oom("a provider reply's data");
    return 0;
}

static int parse_otp_required(jw_provider_reply *r, const json_t *body, char *err, size_t errlen)
{
    const json_t *reason = json_object_get(body, "reason");

    if (get_string(body, "otp_type", false, r->otp_type, sizeof(r->otp_type), is_otp_type_char,
                   "a-z, 0-9 and _", err, errlen) < 0)
        return -1;
    if (!r->otp_type[0]) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"otp_type\" must not be empty");
        return -1;
    }
    if (get_string(body, "phone_hint", true, r->phone_hint, sizeof(r->phone_hint), is_printable,
                   "printable ASCII", err, errlen) < 0)
        return -1;
    if (reason && !json_is_null(reason)) {
        char q[QUOTE_MAX + 4];

        if (!json_is_string(reason)) {
            jw_errorf(err, errlen, JW_EINVAL, "reply \"reason\" must be a string (got %s)",
                      type_name(reason));
            return -1;
        }
        if (strcmp(json_string_value(reason), "invalid_otp") != 0) {
            quote(q, json_string_value(reason), json_string_length(reason));
            jw_errorf(err, errlen, JW_EINVAL,
                      "reply \"reason\" \"%s\" is unknown (expected \"invalid_otp\")", q);
            return -1;
        }
        r->invalid_otp = true;
    }
    return 0;
}

static int parse_pending(jw_provider_reply *r, const json_t *body, char *err, size_t errlen)
{
    const json_t *v = json_object_get(body, "poll_after_ms");
    json_int_t ms;

    if (!v) {
        jw_errorf(err, errlen, JW_EINVAL,
                  "reply has no \"poll_after_ms\" (an integer 0..%d is required)",
                  POLL_AFTER_MAX_MS);
        return -1;
    }
    if (!json_is_integer(v)) {
        jw_errorf(err, errlen, JW_EINVAL,
                  "reply \"poll_after_ms\" must be an integer 0..%d (got %s)", POLL_AFTER_MAX_MS,
                  type_name(v));
        return -1;
    }
    ms = json_integer_value(v);
    if (ms < 0 || ms > POLL_AFTER_MAX_MS) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"poll_after_ms\" must be 0..%d (got %lld)",
                  POLL_AFTER_MAX_MS, (long long)ms);
        return -1;
    }
    r->poll_after_ms = (int)ms;
    return 0;
}

static int parse_error(jw_provider_reply *r, const json_t *body, char *err, size_t errlen)
{
    const json_t *retryable = json_object_get(body, "retryable");
    const json_t *msg = json_object_get(body, "message");

    if (!json_is_boolean(retryable)) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"retryable\" must be true or false (got %s)",
                  retryable ? type_name(retryable) : "nothing");
        return -1;
    }
    r->retryable = json_is_true(retryable);
    r->refused = !r->retryable;
    if (!json_is_string(msg)) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"message\" must be a string (got %s)",
                  msg ? type_name(msg) : "nothing");
        return -1;
    }
    if (json_string_length(msg) > MESSAGE_MAX) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"message\" is %zu bytes (limit %d)",
                  json_string_length(msg), MESSAGE_MAX);
        return -1;
    }
    copy_message(r->message, sizeof(r->message), json_string_value(msg), json_string_length(msg));
    return 0;
}

static const struct {
    const char *name;
    jw_provider_status status;
    int (*parse)(jw_provider_reply *r, const json_t *body, char *err, size_t errlen);
} statuses[] = {
    {"ok", JW_PROVIDER_OK, parse_ok},
    {"otp_required", JW_PROVIDER_OTP_REQUIRED, parse_otp_required},
    {"pending", JW_PROVIDER_PENDING, parse_pending},
    {"error", JW_PROVIDER_ERROR, parse_error},
    {0},
};

jw_provider_reply *jw_provider_reply_parse(uint64_t call_id, const json_t *body, char *err,
                                           size_t errlen)
{
    const json_t *st;
    const char *name;
    jw_provider_reply *r;
    char q[QUOTE_MAX + 4];

    if (err && errlen)
        err[0] = '\0';
    if (!json_is_object(body)) {
        jw_errorf(err, errlen, JW_EINVAL, "reply must be a JSON object (got %s)",
                  body ? type_name(body) : "nothing");
        return NULL;
    }
    st = json_object_get(body, "status");
    if (!json_is_string(st)) {
        jw_errorf(err, errlen, JW_EINVAL, "reply \"status\" must be a string (got %s)",
                  st ? type_name(st) : "nothing");
        return NULL;
    }
    name = json_string_value(st);
    for (size_t i = 0; statuses[i].name; i++) {
        if (strlen(statuses[i].name) != json_string_length(st) ||
            strcmp(statuses[i].name, name) != 0)
            continue;
        r = jw_provider_reply_new(call_id, statuses[i].status);
        if (statuses[i].parse(r, body, err, errlen) < 0) {
            jw_provider_reply_free(r);
            return NULL;
        }
        return r;
    }
    quote(q, name, json_string_length(st));
    jw_errorf(err, errlen, JW_EINVAL,
              "reply \"status\" \"%s\" is unknown (expected ok, otp_required, pending or error)",
              q);
    return NULL;
}

json_t *jw_provider_reply_to_json(const jw_provider_reply *reply)
{
    json_t *o = json_object();

    if (!o)
        jw_oom("a provider reply");
    switch (reply->status) {
    case JW_PROVIDER_OK:
        set_new(o, "status", json_string("ok"));
        set_new(o, "data", reply->data ? json_deep_copy(reply->data) : json_object());
        break;
    case JW_PROVIDER_OTP_REQUIRED:
        set_new(o, "status", json_string("otp_required"));
        set_new(o, "otp_type", text(reply->otp_type));
        set_new(o, "phone_hint", text(reply->phone_hint));
        if (reply->invalid_otp)
            set_new(o, "reason", json_string("invalid_otp"));
        break;
    case JW_PROVIDER_PENDING:
        set_new(o, "status", json_string("pending"));
        set_new(o, "poll_after_ms", json_integer(reply->poll_after_ms));
        break;
    case JW_PROVIDER_ERROR:
        set_new(o, "status", json_string("error"));
        set_new(o, "retryable", json_boolean(reply->retryable));
        set_new(o, "message", text(reply->message));
        break;
    }
    return o;
}
