/*
 * fuzz_provider_reply.c - a provider's reply body, as the http provider reads
 * it (engine/providers/http_provider.c make_reply): json_loadb with duplicate keys
 * refused, then jw_provider_reply_parse.
 *
 * Oracles besides the sanitizers: a refusal leaves a message in err; an
 * accepted reply survives jw_provider_reply_to_json and parses again into the
 * same fields (what the sandbox serves is what the engine reads).
 */
#include "jw_provider.h"

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
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    jw_provider_reply *r, *again;
    json_t *out;
    char err[200];

    if (!body)
        return 0;
    r = jw_provider_reply_parse(42, body, err, sizeof(err));
    if (!r) {
        check(err[0] != '\0' && strlen(err) < sizeof(err));
        json_decref(body);
        return 0;
    }
    check(r->call_id == 42);
    check(r->status != JW_PROVIDER_OK || r->data != NULL);
    check(strlen(r->otp_type) < sizeof(r->otp_type));
    check(strlen(r->phone_hint) < sizeof(r->phone_hint));
    check(strlen(r->message) < sizeof(r->message));
    check(r->poll_after_ms >= 0 && r->poll_after_ms <= 600000);

    out = jw_provider_reply_to_json(r);
    check(out != NULL);
    again = jw_provider_reply_parse(43, out, err, sizeof(err));
    check(again != NULL);
    check(again->status == r->status);
    check(strcmp(again->otp_type, r->otp_type) == 0);
    check(strcmp(again->phone_hint, r->phone_hint) == 0);
    check(again->invalid_otp == r->invalid_otp);
    check(again->poll_after_ms == r->poll_after_ms);
    check(again->retryable == r->retryable);
    check(strcmp(again->message, r->message) == 0);
    check(r->status != JW_PROVIDER_OK || json_equal(again->data, r->data));

    jw_provider_reply_free(again);
    json_decref(out);
    jw_provider_reply_free(r);
    json_decref(body);
    return 0;
}
