/*
 * workflow.h - the payment workflow as data (engine internal).
 *
 * A job runs units in order: unit 0 is validation, units 1..n are the
 * transactions. Each unit is a list of step definitions; a step starts when
 * the steps named in its deps mask (indices into the same list) completed.
 * Adding a step is a new row here, not new engine code.
 */
#ifndef JW_WORKFLOW_H
#define JW_WORKFLOW_H

#include <stdbool.h>
#include <stdint.h>

typedef struct jw_retry_policy {
    int max_attempts;   /* including the first */
    int64_t initial_ms; /* delay before the second attempt */
    double multiplier;  /* each later delay grows by this */
    int64_t max_ms;     /* cap */
    double jitter;      /* +/- this fraction, at random */
} jw_retry_policy;

/*
 * How long an OTP request of a step waits for the code: which of the engine's
 * configured timeouts applies (jw_engine_config.otp_timeout_*_ms).
 */
typedef enum jw_otp_class {
    /* The step does not ask for codes; should a provider ask anyway, the
     * request waits as long as a login's. */
    JW_OTP_NONE,
    JW_OTP_LOGIN,   /* a person reads an SMS to log in: otp_timeout_login_ms */
    JW_OTP_PAYMENT, /* a bank confirms a payment: otp_timeout_payment_ms */
} jw_otp_class;

/* A session name's room, its NUL included (auth_sessions.session_type). */
#define JW_STEP_SESSION_MAX 16

typedef struct jw_step_def {
    const char *name;     /* step_name */
    const char *type;     /* step_type: validation, payment, redemption */
    unsigned deps;        /* bit i: definition i of this unit must be completed */
    bool external_effect; /* moves money: reconciled, never abandoned */
    bool polls;           /* "pending" replies are polled until the deadline */
    bool login;           /* failing it cancels the unit's other steps at once */
    jw_otp_class otp;     /* the wait of its OTP requests */
    /*
     * A login's provider session: the name it is kept under for the user's
     * later jobs (auth_sessions.session_type) and presented to later steps
     * (the call's "session" object). Set exactly on logins; NULL otherwise.
     */
    const char *session;
    jw_retry_policy retry;
} jw_step_def;

#define JW_UNIT_VALIDATION 0

/* Both lists end with a zeroed entry. */
extern const jw_step_def jw_validation_steps[];
extern const jw_step_def jw_transaction_steps[];

static inline const jw_step_def *jw_unit_defs(int unit)
{
    return unit == JW_UNIT_VALIDATION ? jw_validation_steps : jw_transaction_steps;
}

/* The definition named name in either list, or NULL. */
const jw_step_def *jw_step_def_find(const char *name);
/* Index of d in its list. */
int jw_step_def_index(const jw_step_def *d);
/* Index of d across both lists, validation first (0..jw_step_def_count()-1):
 * a dense number for per-step arrays such as the engine's histograms. */
int jw_step_def_ordinal(const jw_step_def *d);
/* How many step definitions both lists hold; the ordinal's bound. */
int jw_step_def_count(void);
/* The definition with that ordinal, or NULL. */
const jw_step_def *jw_step_def_at(int ordinal);

#endif
