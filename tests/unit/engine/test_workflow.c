/*
 * The workflow table (engine/workflow.c): its rows are consistent, the facts
 * the engine reads from them (OTP class, session name) are set where they
 * must be, and the look-ups find each row by name, index and ordinal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_engine.h"
#include "workflow.h"

#include <string.h>

static int list_len(const jw_step_def *defs)
{
    int n = 0;

    while (defs[n].name)
        n++;
    return n;
}

static void check_list(const jw_step_def *defs)
{
    int n = list_len(defs);

    assert_true(n > 0);
    assert_true(n <= (int)(sizeof(unsigned) * 8));
    for (int i = 0; i < n; i++) {
        const jw_step_def *d = &defs[i];
        const jw_retry_policy *r = &d->retry;

        assert_non_null(d->type);
        assert_true(strlen(d->name) > 0);
        /* A step depends only on steps listed before it: the walk has no cycle. */
        assert_int_equal(d->deps >> i, 0);
        assert_true(r->max_attempts >= 1);
        assert_true(r->initial_ms > 0);
        assert_true(r->multiplier >= 1.0);
        assert_true(r->max_ms >= r->initial_ms);
        assert_true(r->jitter >= 0.0 && r->jitter < 1.0);
    }
    /* The terminating row is all zero. */
    assert_null(defs[n].type);
    assert_int_equal(defs[n].deps, 0);
    assert_null(defs[n].session);
}

static void test_table_consistent(void **state)
{
    int total = list_len(jw_validation_steps) + list_len(jw_transaction_steps);

    (void)state;
    check_list(jw_validation_steps);
    check_list(jw_transaction_steps);
    assert_int_equal(jw_step_def_count(), total);
    assert_true(total <= JW_ENGINE_STEP_KINDS);
    /* Names are unique across both lists: rows are found by step_name. */
    for (int i = 0; i < total; i++)
        for (int k = i + 1; k < total; k++)
            assert_string_not_equal(jw_step_def_at(i)->name, jw_step_def_at(k)->name);
    /* A job runs validation first, and a transaction moves money once. */
    assert_ptr_equal(jw_unit_defs(JW_UNIT_VALIDATION), jw_validation_steps);
    assert_ptr_equal(jw_unit_defs(1), jw_transaction_steps);
    assert_ptr_equal(jw_unit_defs(50), jw_transaction_steps);
    {
        int external = 0;

        for (const jw_step_def *d = jw_transaction_steps; d->name; d++)
            external += d->external_effect;
        assert_int_equal(external, 1);
        for (const jw_step_def *d = jw_validation_steps; d->name; d++)
            assert_false(d->external_effect);
    }
}

/* The facts the engine reads instead of parsing step names. */
static void test_otp_steps(void **state)
{
    static const struct {
        const char *name;
        jw_otp_class otp;
        const char *session;
    } want[] = {
        {"gyftr_login", JW_OTP_LOGIN, "gyftr"},        {"amazon_login", JW_OTP_LOGIN, "amazon"},
        {"availability_check", JW_OTP_NONE, NULL},     {"generate_payment_link", JW_OTP_NONE, NULL},
        {"process_payment", JW_OTP_PAYMENT, NULL},     {"wait_for_vouchers", JW_OTP_NONE, NULL},
        {"redeem_amazon_vouchers", JW_OTP_NONE, NULL},
    };

    (void)state;
    assert_int_equal(jw_step_def_count(), (int)(sizeof(want) / sizeof(want[0])));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const jw_step_def *d = jw_step_def_find(want[i].name);

        assert_non_null(d);
        assert_int_equal(d->otp, want[i].otp);
        if (want[i].session)
            assert_string_equal(d->session, want[i].session);
        else
            assert_null(d->session);
    }
}

/* The rules behind those facts, for any row added later. */
static void test_sessions_of_logins(void **state)
{
    (void)state;
    for (int i = 0; i < jw_step_def_count(); i++) {
        const jw_step_def *d = jw_step_def_at(i);

        /* A login yields a session and waits like a login; nothing else has one. */
        assert_int_equal(d->login, d->session != NULL);
        if (!d->login)
            continue;
        assert_int_equal(d->otp, JW_OTP_LOGIN);
        assert_true(strlen(d->session) > 0);
        assert_true(strlen(d->session) < JW_STEP_SESSION_MAX);
        assert_int_equal(strspn(d->session, "abcdefghijklmnopqrstuvwxyz"), strlen(d->session));
        /* Sessions are attached from the validation unit (engine's sessions.c). */
        assert_true(d >= jw_validation_steps &&
                    d < jw_validation_steps + list_len(jw_validation_steps));
        for (int k = i + 1; k < jw_step_def_count(); k++) {
            const jw_step_def *o = jw_step_def_at(k);

            if (o->session)
                assert_string_not_equal(o->session, d->session);
        }
    }
}

static void test_lookups(void **state)
{
    int n = jw_step_def_count();

    (void)state;
    for (int i = 0; i < n; i++) {
        const jw_step_def *d = jw_step_def_at(i);

        assert_non_null(d);
        assert_ptr_equal(jw_step_def_find(d->name), d);
        assert_int_equal(jw_step_def_ordinal(d), i);
    }
    /* Ordinals: validation first, in list order. */
    assert_ptr_equal(jw_step_def_at(0), &jw_validation_steps[0]);
    assert_ptr_equal(jw_step_def_at(list_len(jw_validation_steps)), &jw_transaction_steps[0]);
    assert_null(jw_step_def_at(n));
    assert_null(jw_step_def_at(-1));
    /* Indices are per list. */
    for (int i = 0; jw_validation_steps[i].name; i++)
        assert_int_equal(jw_step_def_index(&jw_validation_steps[i]), i);
    for (int i = 0; jw_transaction_steps[i].name; i++)
        assert_int_equal(jw_step_def_index(&jw_transaction_steps[i]), i);
    assert_string_equal(jw_step_def_find("process_payment")->type, "payment");
    assert_null(jw_step_def_find("gyftr"));
    assert_null(jw_step_def_find("process_payment_"));
    assert_null(jw_step_def_find(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_consistent),
        cmocka_unit_test(test_otp_steps),
        cmocka_unit_test(test_sessions_of_logins),
        cmocka_unit_test(test_lookups),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
