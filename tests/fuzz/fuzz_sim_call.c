/*
 * fuzz_sim_call.c - a request body posted to the sandbox's /steps/<name>
 * (sandbox/jobwire-sandbox.c): jw_sim_call_from_json, then the sim core
 * (jw_sim_handle) with the call it built, twice, as a retry would.
 *
 * Input: "<step name>\n<JSON body>"; without a newline the step is
 * process_payment and the whole input is the body.
 *
 * Oracles besides the sanitizers: a refusal leaves a message in err and no
 * call; an accepted call honours the documented bounds and survives
 * jw_provider_call_to_json -> jw_sim_call_from_json unchanged; the sim
 * always replies, and never charges one idempotency key twice.
 */
#include "jw_log.h"
#include "jw_provider.h"
#include "jw_util.h"
#include "providers/sim.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size < 64 ? size : 64);
    char step[64] = "process_payment";
    jw_provider_call *call = NULL, *again = NULL;
    jw_provider_reply *r1, *r2;
    jw_sim_config cfg;
    json_t *body, *round;
    jw_sim *sim;
    char err[256];
    int rc;

    jw_log_level = JW_LOG_ERROR; /* the sim logs every simulated SMS at info */
    if (nl) {
        memcpy(step, data, (size_t)(nl - data));
        step[nl - data] = '\0';
        size -= (size_t)(nl - data) + 1;
        data = nl + 1;
    }
    body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!body)
        return 0;
    err[0] = '\0';
    rc = jw_sim_call_from_json(body, step, &call, err, sizeof(err));
    json_decref(body);
    if (rc != 0) {
        check(call == NULL && err[0] != '\0');
        return 0;
    }
    check(call != NULL);
    check(jw_uuid_valid(call->job_id) && jw_uuid_valid(call->step_id));
    check(!call->user_id[0] || jw_uuid_valid(call->user_id));
    check(call->attempt >= 1 && call->transaction_index >= 0 && call->amount >= 0);
    check(strlen(call->idempotency_key) < JW_IDEMPOTENCY_KEY_MAX);
    check(!call->otp || (strlen(call->otp) >= 1 && strlen(call->otp) <= JW_OTP_MAX));

    /* What the http provider sends is what the sandbox reads. */
    round = jw_provider_call_to_json(call);
    check(jw_sim_call_from_json(round, call->step_name, &again, err, sizeof(err)) == 0);
    check(strcmp(again->job_id, call->job_id) == 0 && strcmp(again->step_id, call->step_id) == 0);
    check(strcmp(again->idempotency_key, call->idempotency_key) == 0);
    check(again->amount == call->amount && again->attempt == call->attempt &&
          again->transaction_index == call->transaction_index);
    check(!call->otp == !again->otp && (!call->otp || strcmp(call->otp, again->otp) == 0));
    check(!call->session == !again->session &&
          (!call->session || json_equal(call->session, again->session)));
    json_decref(round);
    jw_provider_call_free(again);

    jw_sim_config_init(&cfg);
    cfg.has_seed = true;
    cfg.seed = 7;
    cfg.fail_rate = 0.25;
    sim = jw_sim_new(&cfg);
    r1 = jw_sim_handle(sim, call, INT64_C(1767225600000000));
    r2 = jw_sim_handle(sim, call, INT64_C(1767225601000000));
    check(r1 != NULL && r2 != NULL);
    if (call->idempotency_key[0])
        check(jw_sim_charges_for(sim, call->idempotency_key) <= 1);
    jw_provider_reply_free(r1);
    jw_provider_reply_free(r2);
    jw_sim_free(sim);
    jw_provider_call_free(call);
    return 0;
}
