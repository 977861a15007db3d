/*
 * fuzz_ws_message - the first parse of a jobwire.v1 client message
 * (server/ws_parse.c), on any bytes a client can send in a text frame.
 *
 * Checks, besides no crash, leak or UB: a message that parses is an object
 * with a string type and a ref that is absent, an integer, or a string of at
 * most JW_WS_MAX_REF characters; a refusal names one of the two codes the
 * protocol gives for it and carries a ref only when the ref itself was valid.
 */
#include "ws_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int valid_ref(const json_t *ref)
{
    return !ref || json_is_integer(ref) ||
           (json_is_string(ref) && json_string_length(ref) <= JW_WS_MAX_REF);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    jw_ws_msg m;
    const char *code = jw_ws_parse((const char *)data, size, &m, err, sizeof(err));

    if (!code) {
        if (!json_is_object(m.root) || !m.type ||
            m.type != json_string_value(json_object_get(m.root, "type")) || !valid_ref(m.ref))
            abort();
    } else {
        if (strcmp(code, "bad_json") != 0 && strcmp(code, "bad_message") != 0)
            abort();
        if (!valid_ref(m.ref) || (m.ref && !json_is_object(m.root)))
            abort();
        if (!err[0])
            abort();
    }
    jw_ws_msg_release(&m);
    if (m.root || m.ref || m.type)
        abort();
    return 0;
}
