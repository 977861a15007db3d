/*
 * ws_parse.c: the first look at a jobwire.v1 client message - JSON, an
 * object, a valid ref, a type - and what is answered when one is missing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ws_parse.h"

#include <string.h>

static const char *parse(const char *text, jw_ws_msg *m, char *err, size_t errlen)
{
    err[0] = '\0';
    return jw_ws_parse(text, strlen(text), m, err, errlen);
}

static void test_message(void **state)
{
    jw_ws_msg m;
    char err[256];

    (void)state;
    assert_null(
        parse("{\"type\":\"subscribe\",\"job_id\":\"x\",\"ref\":\"s1\"}", &m, err, sizeof(err)));
    assert_string_equal(m.type, "subscribe");
    assert_string_equal(json_string_value(m.ref), "s1");
    assert_string_equal(json_string_value(json_object_get(m.root, "job_id")), "x");
    jw_ws_msg_release(&m);
    assert_null(m.root);
    /* An integer ref, and none at all. */
    assert_null(parse("{\"type\":\"ping\",\"ref\":7}", &m, err, sizeof(err)));
    assert_int_equal(json_integer_value(m.ref), 7);
    jw_ws_msg_release(&m);
    assert_null(parse("{\"type\":\"ping\"}", &m, err, sizeof(err)));
    assert_null(m.ref);
    jw_ws_msg_release(&m);
}

/* Broken JSON is bad_json, and the error does not quote the input (it may hold a code). */
static void test_bad_json(void **state)
{
    jw_ws_msg m;
    char err[256];

    (void)state;
    assert_string_equal(parse("{\"type\":\"otp.submit\",\"value\":\"493817", &m, err, sizeof(err)),
                        "bad_json");
    assert_non_null(strstr(err, "malformed JSON at column"));
    assert_null(strstr(err, "493817"));
    assert_null(m.root);
    jw_ws_msg_release(&m);
    /* A NUL in a string: said in words, not as jansson's flag JSON_ALLOW_NUL. */
    assert_string_equal(parse("{\"type\":\"ping\",\"ref\":\"a\\u0000b\"}", &m, err, sizeof(err)),
                        "bad_json");
    assert_non_null(strstr(err, "\\u0000 is not allowed in a string"));
    assert_null(strstr(err, "JSON_ALLOW_NUL"));
    jw_ws_msg_release(&m);
    /* A key given twice is refused, not resolved silently. */
    assert_string_equal(parse("{\"type\":\"ping\",\"type\":\"auth\"}", &m, err, sizeof(err)),
                        "bad_json");
    jw_ws_msg_release(&m);
    assert_string_equal(parse("", &m, err, sizeof(err)), "bad_json");
    jw_ws_msg_release(&m);
}

static void test_not_an_object(void **state)
{
    static const char *const texts[] = {"[1,2]", "\"ping\"", "42", "null"};
    jw_ws_msg m;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        assert_string_equal(parse(texts[i], &m, err, sizeof(err)), "bad_message");
        assert_string_equal(err, "a message must be a JSON object");
        jw_ws_msg_release(&m);
    }
}

/* A ref is an integer or a short string; a valid ref is kept even when the type is bad. */
static void test_ref_and_type(void **state)
{
    char text[256], err[256];
    jw_ws_msg m;

    (void)state;
    snprintf(text, sizeof(text), "{\"type\":\"ping\",\"ref\":\"%0*d\"}", JW_WS_MAX_REF, 0);
    assert_null(parse(text, &m, err, sizeof(err)));
    jw_ws_msg_release(&m);
    snprintf(text, sizeof(text), "{\"type\":\"ping\",\"ref\":\"%0*d\"}", JW_WS_MAX_REF + 1, 0);
    assert_string_equal(parse(text, &m, err, sizeof(err)), "bad_message");
    assert_null(m.ref);
    assert_non_null(strstr(err, "ref must be"));
    jw_ws_msg_release(&m);
    assert_string_equal(parse("{\"type\":\"ping\",\"ref\":1.5}", &m, err, sizeof(err)),
                        "bad_message");
    jw_ws_msg_release(&m);
    assert_string_equal(parse("{\"type\":\"ping\",\"ref\":{}}", &m, err, sizeof(err)),
                        "bad_message");
    jw_ws_msg_release(&m);
    /* No type, or not a string: bad_message, answered with the ref. */
    assert_string_equal(parse("{\"ref\":\"r9\"}", &m, err, sizeof(err)), "bad_message");
    assert_string_equal(err, "type is required (a string)");
    assert_string_equal(json_string_value(m.ref), "r9");
    jw_ws_msg_release(&m);
    assert_string_equal(parse("{\"type\":3,\"ref\":4}", &m, err, sizeof(err)), "bad_message");
    assert_int_equal(json_integer_value(m.ref), 4);
    assert_null(m.type);
    jw_ws_msg_release(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_ref_and_type),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
