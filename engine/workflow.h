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

typedef struct jw_step_def {
    const char *name;     /* step_name */
    const char *type;     /* step_type: validation, payment, redemption */
    unsigned deps;        /* bit i: definition i of this unit must be completed */
    bool external_effect; /* moves money: reconciled, never abandoned */
    bool polls;           /* "pending" replies are polled until the deadline */
    bool login;           /* failing it cancels the unit's other steps at once */
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
