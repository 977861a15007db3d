#include "ws_parse.h"

#include <stdio.h>
#include <string.h>

const char *jw_ws_parse(const char *data, size_t len, jw_ws_msg *out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *ref, *type;

    memset(out, 0, sizeof(*out));
    out->root = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!out->root) {
        /* Without jansson's "near '...'": it quotes the input, and a broken
         * otp.submit would have its code sent back (or logged). */
        const char *near = strstr(jerr.text, " near ");

        if (json_error_code(&jerr) == json_error_null_character)
            snprintf(err, errlen, "malformed JSON at column %d: \\u0000 is not allowed in a string",
                     jerr.column);
        else
            snprintf(err, errlen, "malformed JSON at column %d: %.*s", jerr.column,
                     near ? (int)(near - jerr.text) : (int)sizeof(jerr.text), jerr.text);
        return "bad_json";
    }
    if (!json_is_object(out->root)) {
        snprintf(err, errlen, "a message must be a JSON object");
        return "bad_message";
    }
    ref = json_object_get(out->root, "ref");
    if (ref && !(json_is_integer(ref) ||
                 (json_is_string(ref) && json_string_length(ref) <= JW_WS_MAX_REF))) {
        snprintf(err, errlen, "ref must be an integer or a string of at most %d bytes",
                 JW_WS_MAX_REF);
        return "bad_message";
    }
    out->ref = ref;
    type = json_object_get(out->root, "type");
    if (!json_is_string(type)) {
        snprintf(err, errlen, "type is required (a string)");
        return "bad_message";
    }
    out->type = json_string_value(type);
    return NULL;
}

void jw_ws_msg_release(jw_ws_msg *m)
{
    json_decref(m->root);
    memset(m, 0, sizeof(*m));
}
