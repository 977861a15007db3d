/*
 * ws_parse.h - the first look at a jobwire.v1 client message: JSON, an
 * object, a valid ref, a type string (docs/protocol.md "Errors"). Pure: no
 * libwebsockets, no state, any thread; fuzzed in tests/fuzz/fuzz_ws_message.c.
 */
#ifndef JW_WS_PARSE_H
#define JW_WS_PARSE_H

#include <jansson.h>
#include <stddef.h>

#define JW_WS_MAX_REF 64

typedef struct jw_ws_msg {
    json_t *root;     /* the message object; owned (jw_ws_msg_release) */
    const char *type; /* borrowed from root */
    json_t *ref;      /* borrowed from root, or NULL: echo it in answers */
} jw_ws_msg;

/*
 * Parses one client message of len bytes. Returns NULL when it is a message
 * (out filled), or the protocol error code to answer with ("bad_json",
 * "bad_message") and a message for the client in err. out->ref is set before
 * the type is checked, so an answer to a message without a valid type can
 * still carry its ref. Always call jw_ws_msg_release(out) after.
 */
const char *jw_ws_parse(const char *data, size_t len, jw_ws_msg *out, char *err, size_t errlen);
void jw_ws_msg_release(jw_ws_msg *m);

#endif
