/*
 * wipe.h - a secret that arrived inside JSON (an OTP code, a token) leaves
 * memory with the message: its string is overwritten in place before the
 * document is freed. jansson keeps string values in writable heap of its
 * own and does not hash them, so overwriting one only changes what a later
 * reader of that (about to be freed) document would see.
 */
#ifndef JW_WIPE_H
#define JW_WIPE_H

#include <jansson.h>
#include <openssl/crypto.h>

/* NULL-safe; anything but a string is left alone. */
static inline void jw_wipe_json_string(json_t *v)
{
    if (json_is_string(v))
        OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
}

#endif
