#include "workflow.h"

#include <string.h>

/* Logins wait on a person's SMS; payments on a bank; both get a few tries. */
#define LOGIN_RETRY                                                                                \
    {                                                                                              \
        3, 2000, 2.0, 30000, 0.2                                                                   \
    }
#define API_RETRY                                                                                  \
    {                                                                                              \
        4, 1000, 2.0, 30000, 0.2                                                                   \
    }
#define PAYMENT_RETRY                                                                              \
    {                                                                                              \
        3, 3000, 2.0, 60000, 0.2                                                                   \
    }

const jw_step_def jw_validation_steps[] = {
    {.name = "gyftr_login",
     .type = "validation",
     .login = true,
     .otp = JW_OTP_LOGIN,
     .session = "gyftr",
     .retry = LOGIN_RETRY},
    {.name = "amazon_login",
     .type = "validation",
     .login = true,
     .otp = JW_OTP_LOGIN,
     .session = "amazon",
     .retry = LOGIN_RETRY},
    {.name = "availability_check",
     .type = "validation",
     .deps = 1u << 0 | 1u << 1,
     .retry = API_RETRY},
    {0},
};

const jw_step_def jw_transaction_steps[] = {
    {.name = "generate_payment_link", .type = "payment", .retry = API_RETRY},
    {.name = "process_payment",
     .type = "payment",
     .deps = 1u << 0,
     .external_effect = true,
     .otp = JW_OTP_PAYMENT,
     .retry = PAYMENT_RETRY},
    {.name = "wait_for_vouchers",
     .type = "redemption",
     .deps = 1u << 1,
     .polls = true,
     .retry = API_RETRY},
    {.name = "redeem_amazon_vouchers", .type = "redemption", .deps = 1u << 2, .retry = API_RETRY},
    {0},
};

const jw_step_def *jw_step_def_find(const char *name)
{
    for (const jw_step_def *d = jw_validation_steps; d->name; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    for (const jw_step_def *d = jw_transaction_steps; d->name; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

int jw_step_def_index(const jw_step_def *d)
{
    for (const jw_step_def *v = jw_validation_steps; v->name; v++)
        if (v == d)
            return (int)(v - jw_validation_steps);
    return (int)(d - jw_transaction_steps);
}

int jw_step_def_ordinal(const jw_step_def *d)
{
    int n = 0;

    for (const jw_step_def *v = jw_validation_steps; v->name; v++, n++)
        if (v == d)
            return n;
    for (const jw_step_def *t = jw_transaction_steps; t->name; t++, n++)
        if (t == d)
            return n;
    return -1;
}

int jw_step_def_count(void)
{
    int n = 0;

    for (const jw_step_def *v = jw_validation_steps; v->name; v++)
        n++;
    for (const jw_step_def *t = jw_transaction_steps; t->name; t++)
        n++;
    return n;
}

const jw_step_def *jw_step_def_at(int ordinal)
{
    int n = 0;

    for (const jw_step_def *v = jw_validation_steps; v->name; v++, n++)
        if (n == ordinal)
            return v;
    for (const jw_step_def *t = jw_transaction_steps; t->name; t++, n++)
        if (n == ordinal)
            return t;
    return NULL;
}
