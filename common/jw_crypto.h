/*
 * jw_crypto.h - sealing secrets at rest, bytea text form, constant-time compare.
 *
 * What it is for
 *   auth_sessions.auth_token is stored encrypted (DESIGN.md, "Data model"):
 *   jw_seal encrypts it with AES-256-GCM under the JOBWIRE_SECRET_KEY before
 *   it goes to PostgreSQL, jw_open decrypts and authenticates it on the way
 *   back. The sealed form is
 *
 *       nonce (12 bytes, RAND_bytes) || ciphertext (len bytes) || tag (16 bytes)
 *
 *   so a sealed value is exactly JW_SEAL_OVERHEAD bytes longer than its
 *   plaintext. The nonce is random per seal: sealing the same plaintext twice
 *   gives different bytes. With 96-bit random nonces one key may seal about
 *   2^32 values before a nonce repeat becomes a real risk; auth_sessions is
 *   orders of magnitude below that.
 *
 *   AAD (additional authenticated data) binds a sealed value to its context
 *   without being stored in it: pass the same bytes to jw_open that were
 *   passed to jw_seal, or the open fails. The store passes the row id and the
 *   user id, so a sealed token copied into another row (or another user's
 *   row) does not open there.
 *
 *   jw_bytea_hex / jw_bytea_parse convert to and from PostgreSQL's bytea hex
 *   text form ("\x0a1b..."), for text-mode query parameters and results.
 *
 *   jw_ct_equal compares secrets (keys, tokens) in time that does not depend
 *   on where they differ or on whether their lengths differ.
 *
 * Limits
 *   Plaintext and AAD are at most JW_SEAL_MAX_PLAIN bytes each; a sealed
 *   value at most JW_SEAL_MAX_SEALED. Larger inputs are refused with
 *   JW_ETOOBIG before anything is allocated.
 *
 * Ownership
 *   Every buffer returned through an out-parameter is malloc'd and belongs to
 *   the caller. Plaintext from jw_open is a secret: release it with
 *   jw_secure_free, which overwrites it first. Inputs are borrowed and never
 *   kept. On error no out-parameter is allocated (they are set to NULL / 0).
 *
 * Threads
 *   Every function is safe from any thread; none touches shared state apart
 *   from OpenSSL's thread-safe random generator.
 */
#ifndef JW_CRYPTO_H
#define JW_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JW_SEAL_KEY_LEN 32   /* AES-256 */
#define JW_SEAL_NONCE_LEN 12 /* GCM's native nonce size */
#define JW_SEAL_TAG_LEN 16   /* full-length GCM tag */
#define JW_SEAL_OVERHEAD (JW_SEAL_NONCE_LEN + JW_SEAL_TAG_LEN)
#define JW_SEAL_MAX_PLAIN 65536 /* bytes of plaintext, and of AAD */
#define JW_SEAL_MAX_SEALED (JW_SEAL_MAX_PLAIN + JW_SEAL_OVERHEAD)
/* jw_bytea_* handle any sealed value and nothing larger. */
#define JW_BYTEA_MAX JW_SEAL_MAX_SEALED

/*
 * Encrypts len bytes of plain under key, authenticating aad too, into a new
 * buffer *out of *out_len = len + JW_SEAL_OVERHEAD bytes.
 *
 * plain may be NULL when len is 0, aad NULL when aad_len is 0.
 *
 * Returns 0; JW_EINVAL for a NULL key/out/out_len or a NULL pointer with a
 * non-zero length; JW_ETOOBIG when len or aad_len exceeds JW_SEAL_MAX_PLAIN;
 * JW_EIO when OpenSSL fails (no random bytes for the nonce, or a cipher
 * error; not expected in practice).
 */
int jw_seal(const uint8_t key[JW_SEAL_KEY_LEN], const void *plain, size_t len, const void *aad,
            size_t aad_len, uint8_t **out, size_t *out_len);

/*
 * Authenticates and decrypts a value made by jw_seal with the same key and
 * the same aad. On success *plain is a new buffer of *plain_len bytes plus a
 * NUL after them (so a sealed string comes back as a C string); release it
 * with jw_secure_free(*plain, *plain_len).
 *
 * Returns 0; JW_EAUTH when the value does not authenticate: wrong key, wrong
 * aad, any changed bit in nonce, ciphertext or tag, or a value shorter than
 * JW_SEAL_OVERHEAD (a truncated value is indistinguishable from a tampered
 * one); no plaintext is released in that case. JW_EINVAL for NULL arguments
 * (as for jw_seal); JW_ETOOBIG when len exceeds JW_SEAL_MAX_SEALED or aad_len
 * exceeds JW_SEAL_MAX_PLAIN; JW_EIO when OpenSSL fails otherwise.
 */
int jw_open(const uint8_t key[JW_SEAL_KEY_LEN], const uint8_t *sealed, size_t len, const void *aad,
            size_t aad_len, uint8_t **plain, size_t *plain_len);

/* Overwrites n bytes at p (OPENSSL_cleanse), then frees p. NULL-safe. */
void jw_secure_free(void *p, size_t n);

/*
 * PostgreSQL bytea hex text form of n bytes: "\x" and two lower-case hex
 * digits per byte, NUL-terminated, malloc'd (free() it). Returns NULL when n
 * exceeds JW_BYTEA_MAX or p is NULL with n > 0.
 */
char *jw_bytea_hex(const uint8_t *p, size_t n);

/*
 * Parses the bytea hex text form (as PostgreSQL outputs it: "\x" then pairs
 * of hex digits of either case, nothing else; the legacy escape format and
 * whitespace are not accepted). On success *out is a new buffer of *n bytes
 * (free() it; non-NULL even for zero bytes).
 *
 * Returns 0; JW_EINVAL for NULL arguments, a missing "\x" prefix, a non-hex
 * character or an odd number of digits; JW_ETOOBIG when the text would decode
 * to more than JW_BYTEA_MAX bytes (checked before reading further or
 * allocating).
 */
int jw_bytea_parse(const char *text, uint8_t **out, size_t *n);

/*
 * True when the alen bytes at a equal the blen bytes at b. The time taken
 * depends on alen and blen (each input is hashed with SHA-256 and the digests
 * compared with CRYPTO_memcmp) but not on the contents, nor on whether the
 * lengths are equal, so neither a guess's prefix nor its length tells an
 * attacker anything about the secret. A NULL pointer is allowed with a zero
 * length.
 */
bool jw_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
