/*
 * Unit tests of engine/jw_provider: the request body, and the strict parse
 * of every reply kind - what it accepts and each malformed form it refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_buf.h"
#include "jw_provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOB "11111111-1111-4111-8111-111111111111"
#define STEP "22222222-2222-4222-8222-222222222222"
#define USER "33333333-3333-4333-8333-333333333333"

/* Parses text; the reply (or NULL) comes back, err holds the message. */
static jw_provider_reply *parse(const char *text, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *body = json_loads(text, JSON_ALLOW_NUL, &jerr); /* a NUL must be handled too */
    jw_provider_reply *r;

    if (!body)
        fail_msg("test JSON does not parse: %s: %s", text, jerr.text);
    r = jw_provider_reply_parse(77, body, err, errlen);
    json_decref(body);
    return r;
}

/* Asserts text is refused with a message containing want. */
static void refused(const char *text, const char *want)
{
    char err[256] = "";
    jw_provider_reply *r = parse(text, err, sizeof(err));

    if (r) {
        jw_provider_reply_free(r);
        fail_msg("accepted: %s", text);
    }
    if (!strstr(err, want))
        fail_msg("refusing %s: message \"%s\" lacks \"%s\"", text, err, want);
}

static jw_provider_call *sample_call(void)
{
    jw_provider_call *c = jw_provider_call_new();

    c->id = 9;
    strcpy(c->job_id, JOB);
    strcpy(c->step_id, STEP);
    strcpy(c->user_id, USER);
    strcpy(c->step_name, "process_payment");
    c->transaction_index = 2;
    c->attempt = 3;
    strcpy(c->idempotency_key, "jw-" STEP "-r0");
    c->amount = 150000;
    c->timeout_ms = 1234;
    return c;
}

static void test_call_json_has_every_field(void **state)
{
    jw_provider_call *c = sample_call();
    json_t *j;

    (void)state;
    c->session = json_pack("{s:{s:s}}", "gyftr", "token", "t0k");
    j = jw_provider_call_to_json(c);
    assert_string_equal(json_string_value(json_object_get(j, "job_id")), JOB);
    assert_string_equal(json_string_value(json_object_get(j, "step_id")), STEP);
    assert_string_equal(json_string_value(json_object_get(j, "step_name")), "process_payment");
    assert_int_equal(json_integer_value(json_object_get(j, "transaction_index")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 3);
    assert_string_equal(json_string_value(json_object_get(j, "idempotency_key")), "jw-" STEP "-r0");
    assert_int_equal(json_integer_value(json_object_get(j, "amount")), 150000);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(j, "session"), "gyftr"), "token")),
                        "t0k");
    /* The body holds a copy: changing it leaves the call's session alone. */
    assert_ptr_not_equal(json_object_get(j, "session"), c->session);
    /* No OTP was set: the key is absent, not null. */
    assert_null(json_object_get(j, "otp"));
    json_decref(j);

    c->otp = strdup("123456");
    j = jw_provider_call_to_json(c);
    assert_string_equal(json_string_value(json_object_get(j, "otp")), "123456");
    json_decref(j);
    jw_provider_call_free(c);
}

static void test_call_json_without_session_is_null(void **state)
{
    jw_provider_call *c = sample_call();
    json_t *j = jw_provider_call_to_json(c);

    (void)state;
    assert_true(json_is_null(json_object_get(j, "session")));
    json_decref(j);
    jw_provider_call_free(c);
    jw_provider_call_free(NULL); /* NULL-safe */
}

static void test_parse_ok(void **state)
{
    char err[256];
    jw_provider_reply *r =
        parse("{\"status\":\"ok\",\"data\":{\"payment_id\":\"p1\",\"n\":2}}", err, sizeof(err));

    (void)state;
    assert_non_null(r);
    assert_int_equal(r->call_id, 77);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_string_equal(json_string_value(json_object_get(r->data, "payment_id")), "p1");
    jw_provider_reply_free(r);

    /* Absent data is an empty object, never NULL. */
    r = parse("{\"status\":\"ok\"}", err, sizeof(err));
    assert_non_null(r);
    assert_true(json_is_object(r->data));
    assert_int_equal(json_object_size(r->data), 0);
    jw_provider_reply_free(r);
}

static void test_parse_otp_required(void **state)
{
    char err[256];
    jw_provider_reply *r = parse(
        "{\"status\":\"otp_required\",\"otp_type\":\"payment\",\"phone_hint\":\"******4821\"}", err,
        sizeof(err));

    (void)state;
    assert_non_null(r);
    assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
    assert_string_equal(r->otp_type, "payment");
    assert_string_equal(r->phone_hint, "******4821");
    assert_false(r->invalid_otp);
    jw_provider_reply_free(r);

    r = parse("{\"status\":\"otp_required\",\"otp_type\":\"gyftr_login\",\"phone_hint\":\"**1\","
              "\"reason\":\"invalid_otp\"}",
              err, sizeof(err));
    assert_non_null(r);
    assert_true(r->invalid_otp);
    jw_provider_reply_free(r);
}

static void test_parse_pending(void **state)
{
    char err[256];
    jw_provider_reply *r =
        parse("{\"status\":\"pending\",\"poll_after_ms\":250}", err, sizeof(err));

    (void)state;
    assert_non_null(r);
    assert_int_equal(r->status, JW_PROVIDER_PENDING);
    assert_int_equal(r->poll_after_ms, 250);
    jw_provider_reply_free(r);
    /* Both ends of the range are fine. */
    r = parse("{\"status\":\"pending\",\"poll_after_ms\":0}", err, sizeof(err));
    assert_non_null(r);
    jw_provider_reply_free(r);
    r = parse("{\"status\":\"pending\",\"poll_after_ms\":600000}", err, sizeof(err));
    assert_non_null(r);
    assert_int_equal(r->poll_after_ms, 600000);
    jw_provider_reply_free(r);
}

static void test_parse_error(void **state)
{
    char err[256];
    jw_provider_reply *r =
        parse("{\"status\":\"error\",\"retryable\":true,\"message\":\"busy\"}", err, sizeof(err));

    (void)state;
    assert_non_null(r);
    assert_int_equal(r->status, JW_PROVIDER_ERROR);
    assert_true(r->retryable);
    assert_string_equal(r->message, "busy");
    assert_false(r->refused); /* "try again" says nothing of what was done */
    jw_provider_reply_free(r);
    r = parse("{\"status\":\"error\",\"retryable\":false,\"message\":\"no\"}", err, sizeof(err));
    assert_non_null(r);
    assert_false(r->retryable);
    assert_true(r->refused); /* a definite refusal: a retry may use a new key */
    jw_provider_reply_free(r);
}

/*
 * "data" is bounded by the size the step's row stores it at: 0.1 is sent in 3
 * bytes and written back by jansson in 19, so 8,000 of them (24 KB as sent)
 * are refused and 3,000 are not.
 */
static void test_data_bounded_as_encoded(void **state)
{
    char err[256];
    jw_buf b;
    jw_provider_reply *r;

    (void)state;
    for (int n = 8000; n >= 3000; n -= 5000) {
        jw_buf_init(&b, 64);
        jw_buf_adds(&b, "{\"status\":\"ok\",\"data\":{\"a\":[0.1");
        for (int i = 1; i < n; i++)
            jw_buf_adds(&b, ",0.1");
        jw_buf_adds(&b, "]}}");
        assert_true(b.len < JW_PROVIDER_DATA_MAX);
        r = parse(b.data, err, sizeof(err));
        if (n == 8000) {
            assert_null(r);
            assert_non_null(strstr(err, "\"data\" takes"));
            assert_non_null(strstr(err, "(limit 65536)"));
        } else {
            assert_non_null(r);
            jw_provider_reply_free(r);
        }
        jw_buf_release(&b);
    }
}

static void test_refuses_wrong_shapes(void **state)
{
    (void)state;
    refused("[]", "must be a JSON object");
    refused("{}", "\"status\" must be a string");
    refused("{\"status\":1}", "\"status\" must be a string (got an integer)");
    refused("{\"status\":\"done\"}", "\"status\" \"done\" is unknown");
    refused("{\"status\":\"OK\"}", "is unknown"); /* exact, case-sensitive */
    /* ok */
    refused("{\"status\":\"ok\",\"data\":[1]}", "\"data\" must be an object (got an array)");
    refused("{\"status\":\"ok\",\"data\":null}", "\"data\" must be an object (got null)");
    refused("{\"status\":\"ok\",\"data\":\"x\"}", "\"data\" must be an object (got a string)");
    /* otp_required */
    refused("{\"status\":\"otp_required\"}", "no \"otp_type\"");
    refused("{\"status\":\"otp_required\",\"otp_type\":5}", "\"otp_type\" must be a string");
    refused("{\"status\":\"otp_required\",\"otp_type\":\"\"}", "must not be empty");
    refused("{\"status\":\"otp_required\",\"otp_type\":\"Pay ment\"}", "outside a-z");
    refused("{\"status\":\"otp_required\",\"otp_type\":\"payment\",\"phone_hint\":7}",
            "\"phone_hint\" must be a string");
    refused("{\"status\":\"otp_required\",\"otp_type\":\"payment\",\"phone_hint\":\"a\\nb\"}",
            "outside printable ASCII");
    refused("{\"status\":\"otp_required\",\"otp_type\":\"payment\",\"reason\":\"other\"}",
            "\"reason\" \"other\" is unknown");
    refused("{\"status\":\"otp_required\",\"otp_type\":\"payment\",\"reason\":true}",
            "\"reason\" must be a string");
    /* pending */
    refused("{\"status\":\"pending\"}", "no \"poll_after_ms\"");
    refused("{\"status\":\"pending\",\"poll_after_ms\":\"5\"}", "must be an integer");
    refused("{\"status\":\"pending\",\"poll_after_ms\":1.5}", "must be an integer");
    refused("{\"status\":\"pending\",\"poll_after_ms\":-1}", "0..600000 (got -1)");
    refused("{\"status\":\"pending\",\"poll_after_ms\":600001}", "0..600000 (got 600001)");
    /* error */
    refused("{\"status\":\"error\",\"message\":\"x\"}", "\"retryable\" must be true or false");
    refused("{\"status\":\"error\",\"retryable\":\"yes\",\"message\":\"x\"}",
            "\"retryable\" must be true or false (got a string)");
    refused("{\"status\":\"error\",\"retryable\":true}", "\"message\" must be a string");
    refused("{\"status\":\"error\",\"retryable\":true,\"message\":{}}",
            "\"message\" must be a string (got an object)");
}

/* Builds {"status":<status>,<field>:"<n times c>"<extra>}. */
static char *long_string_reply(const char *status, const char *field, size_t n, char c,
                               const char *extra)
{
    size_t cap = n + 256;
    char *s = malloc(cap);
    size_t off = (size_t)snprintf(s, cap, "{\"status\":\"%s\",\"%s\":\"", status, field);

    memset(s + off, c, n);
    snprintf(s + off + n, cap - off - n, "\"%s}", extra);
    return s;
}

static void test_refuses_huge_strings(void **state)
{
    char *text;

    (void)state;
    text = long_string_reply("otp_required", "otp_type", 32, 'a', "");
    refused(text, "\"otp_type\" is 32 bytes (limit 31)");
    free(text);
    text =
        long_string_reply("otp_required", "phone_hint", 100000, '*', ",\"otp_type\":\"payment\"");
    refused(text, "\"phone_hint\" is 100000 bytes (limit 31)");
    free(text);
    text = long_string_reply("error", "message", 4097, 'm', ",\"retryable\":true");
    refused(text, "\"message\" is 4097 bytes (limit 4096)");
    free(text);
    /* An over-long unknown status is quoted cut short, not whole. */
    {
        char err[256] = "";
        char big[2000];
        jw_provider_reply *r;

        memset(big, 'z', sizeof(big));
        big[sizeof(big) - 1] = '\0';
        text = malloc(sizeof(big) + 32);
        snprintf(text, sizeof(big) + 32, "{\"status\":\"%s\"}", big);
        r = parse(text, err, sizeof(err));
        assert_null(r);
        assert_non_null(strstr(err, "is unknown"));
        assert_true(strlen(err) < 200);
        free(text);
    }
}

static void test_message_truncated_safely(void **state)
{
    char err[256];
    jw_provider_reply *r;
    char *text;
    size_t len;

    (void)state;
    /* 300 bytes: cut to the 255 that fit, NUL-terminated. */
    text = long_string_reply("error", "message", 300, 'm', ",\"retryable\":false");
    r = parse(text, err, sizeof(err));
    free(text);
    assert_non_null(r);
    assert_int_equal(strlen(r->message), sizeof(r->message) - 1);
    jw_provider_reply_free(r);

    /* 200 two-byte characters (400 bytes): the cut never splits one. */
    {
        char body[1024];
        size_t off = (size_t)snprintf(body, sizeof(body),
                                      "{\"status\":\"error\",\"retryable\":true,\"message\":\"");

        for (int i = 0; i < 200; i++) {
            body[off++] = (char)0xc3;
            body[off++] = (char)0xa9; /* e-acute */
        }
        snprintf(body + off, sizeof(body) - off, "\"}");
        r = parse(body, err, sizeof(err));
        assert_non_null(r);
        len = strlen(r->message);
        assert_int_equal(len % 2, 0);
        assert_int_equal(len, 254);
        {
            json_t *v = json_string(r->message); /* NULL if not valid UTF-8 */

            assert_non_null(v);
            json_decref(v);
        }
        jw_provider_reply_free(r);
    }

    /* Control characters (a forged log line) become spaces. */
    r = parse("{\"status\":\"error\",\"retryable\":true,\"message\":\"a\\nb\\r\\u0000c\"}", err,
              sizeof(err));
    assert_non_null(r);
    assert_string_equal(r->message, "a b  c");
    jw_provider_reply_free(r);
}

static void test_round_trip(void **state)
{
    jw_provider_reply *in[4], *out;
    char err[256];

    (void)state;
    in[0] = jw_provider_reply_new(5, JW_PROVIDER_OK);
    json_object_set_new(in[0]->data, "k", json_string("v"));
    in[1] = jw_provider_reply_new(5, JW_PROVIDER_OTP_REQUIRED);
    strcpy(in[1]->otp_type, "amazon_login");
    strcpy(in[1]->phone_hint, "******0001");
    in[1]->invalid_otp = true;
    in[2] = jw_provider_reply_new(5, JW_PROVIDER_PENDING);
    in[2]->poll_after_ms = 42;
    in[3] = jw_provider_reply_new(5, JW_PROVIDER_ERROR);
    in[3]->retryable = true;
    strcpy(in[3]->message, "simulated failure");
    for (int i = 0; i < 4; i++) {
        json_t *j = jw_provider_reply_to_json(in[i]);

        out = jw_provider_reply_parse(in[i]->call_id, j, err, sizeof(err));
        json_decref(j);
        assert_non_null(out);
        assert_int_equal(out->status, in[i]->status);
        assert_string_equal(out->otp_type, in[i]->otp_type);
        assert_string_equal(out->phone_hint, in[i]->phone_hint);
        assert_int_equal(out->invalid_otp, in[i]->invalid_otp);
        assert_int_equal(out->poll_after_ms, in[i]->poll_after_ms);
        assert_int_equal(out->retryable, in[i]->retryable);
        assert_string_equal(out->message, in[i]->message);
        if (in[i]->status == JW_PROVIDER_OK)
            assert_true(json_equal(out->data, in[i]->data));
        jw_provider_reply_free(out);
        jw_provider_reply_free(in[i]);
    }
    /* A reply's reason appears only when the OTP was wrong. */
    out = jw_provider_reply_new(1, JW_PROVIDER_OTP_REQUIRED);
    strcpy(out->otp_type, "payment");
    {
        json_t *j = jw_provider_reply_to_json(out);

        assert_null(json_object_get(j, "reason"));
        json_decref(j);
    }
    jw_provider_reply_free(out);
    jw_provider_reply_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_json_has_every_field),
        cmocka_unit_test(test_call_json_without_session_is_null),
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_otp_required),
        cmocka_unit_test(test_parse_pending),
        cmocka_unit_test(test_parse_error),
        cmocka_unit_test(test_data_bounded_as_encoded),
        cmocka_unit_test(test_refuses_wrong_shapes),
        cmocka_unit_test(test_refuses_huge_strings),
        cmocka_unit_test(test_message_truncated_safely),
        cmocka_unit_test(test_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
