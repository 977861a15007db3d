/* Unit tests of common/jw_crypto: AES-256-GCM sealing, bytea hex, constant-time compare. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_crypto.h"
#include "jw_error.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t key[JW_SEAL_KEY_LEN] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};
static const char secret[] = "session-token-for-amazon-0123456789";
/* What the store passes: the row id and the user id. */
static const char aad[] =
    "3f0c6b1e-8d7a-4c55-9b2e-1a2b3c4d5e6f|6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";

/* Seals the test secret under key and aad; the caller frees *out. */
static void seal_secret(uint8_t **out, size_t *out_len)
{
    assert_int_equal(jw_seal(key, secret, strlen(secret), aad, strlen(aad), out, out_len), 0);
    assert_non_null(*out);
    assert_int_equal(*out_len, strlen(secret) + JW_SEAL_OVERHEAD);
}

/* jw_open must refuse with JW_EAUTH and hand back nothing. */
static void assert_open_refused(const uint8_t *k, const uint8_t *sealed, size_t len, const void *a,
                                size_t alen)
{
    uint8_t *plain = (uint8_t *)"sentinel";
    size_t plain_len = 99;

    assert_int_equal(jw_open(k, sealed, len, a, alen, &plain, &plain_len), JW_EAUTH);
    assert_null(plain);
    assert_int_equal(plain_len, 0);
}

static void test_round_trip(void **state)
{
    uint8_t *sealed, *plain;
    size_t sealed_len, plain_len;

    (void)state;
    seal_secret(&sealed, &sealed_len);
    /* The ciphertext must not carry the plaintext in the clear. */
    assert_null(memmem(sealed, sealed_len, secret, 8));
    assert_int_equal(jw_open(key, sealed, sealed_len, aad, strlen(aad), &plain, &plain_len), 0);
    assert_int_equal(plain_len, strlen(secret));
    assert_memory_equal(plain, secret, plain_len);
    assert_int_equal(plain[plain_len], '\0'); /* usable as a C string */
    assert_string_equal((char *)plain, secret);
    jw_secure_free(plain, plain_len);
    free(sealed);
}

static void test_round_trip_empty_and_no_aad(void **state)
{
    uint8_t *sealed, *plain;
    size_t sealed_len, plain_len;

    (void)state;
    assert_int_equal(jw_seal(key, NULL, 0, NULL, 0, &sealed, &sealed_len), 0);
    assert_int_equal(sealed_len, JW_SEAL_OVERHEAD);
    assert_int_equal(jw_open(key, sealed, sealed_len, NULL, 0, &plain, &plain_len), 0);
    assert_int_equal(plain_len, 0);
    assert_non_null(plain);
    assert_int_equal(plain[0], '\0');
    jw_secure_free(plain, plain_len);
    /* Even an empty plaintext is authenticated: a different AAD fails. */
    assert_open_refused(key, sealed, sealed_len, "x", 1);
    free(sealed);
}

static void test_wrong_key(void **state)
{
    uint8_t other[JW_SEAL_KEY_LEN];
    uint8_t *sealed;
    size_t sealed_len;

    (void)state;
    seal_secret(&sealed, &sealed_len);
    /* One bit off anywhere in the key is enough. */
    for (size_t i = 0; i < sizeof(other); i++) {
        memcpy(other, key, sizeof(other));
        other[i] ^= 0x80;
        assert_open_refused(other, sealed, sealed_len, aad, strlen(aad));
    }
    free(sealed);
}

static void test_flipped_bits(void **state)
{
    uint8_t *sealed;
    size_t sealed_len;

    (void)state;
    seal_secret(&sealed, &sealed_len);
    /* Every single-bit change in nonce, ciphertext or tag must be detected. */
    for (size_t i = 0; i < sealed_len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            sealed[i] ^= (uint8_t)(1u << bit);
            assert_open_refused(key, sealed, sealed_len, aad, strlen(aad));
            sealed[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* And the named regions, explicitly: first nonce byte, first ciphertext byte, last tag byte. */
    sealed[0] ^= 1;
    assert_open_refused(key, sealed, sealed_len, aad, strlen(aad));
    sealed[0] ^= 1;
    sealed[JW_SEAL_NONCE_LEN] ^= 1;
    assert_open_refused(key, sealed, sealed_len, aad, strlen(aad));
    sealed[JW_SEAL_NONCE_LEN] ^= 1;
    sealed[sealed_len - 1] ^= 1;
    assert_open_refused(key, sealed, sealed_len, aad, strlen(aad));
    sealed[sealed_len - 1] ^= 1;
    free(sealed);
}

static void test_wrong_aad(void **state)
{
    char moved[sizeof(aad)];
    uint8_t *sealed;
    size_t sealed_len;

    (void)state;
    seal_secret(&sealed, &sealed_len);
    /* Another row of the same user. */
    memcpy(moved, aad, sizeof(aad));
    moved[0] = moved[0] == '4' ? '5' : '4';
    assert_open_refused(key, sealed, sealed_len, moved, strlen(moved));
    /* The same row, another user. */
    memcpy(moved, aad, sizeof(aad));
    moved[sizeof(aad) - 2] ^= 1;
    assert_open_refused(key, sealed, sealed_len, moved, strlen(moved));
    /* No AAD, a prefix of it, and one byte more. */
    assert_open_refused(key, sealed, sealed_len, NULL, 0);
    assert_open_refused(key, sealed, sealed_len, aad, strlen(aad) - 1);
    assert_open_refused(key, sealed, sealed_len, aad, strlen(aad) + 1);
    free(sealed);
}

static void test_truncated_and_extended(void **state)
{
    uint8_t *sealed, *longer;
    size_t sealed_len;

    (void)state;
    seal_secret(&sealed, &sealed_len);
    for (size_t n = 0; n < sealed_len; n++)
        assert_open_refused(key, sealed, n, aad, strlen(aad));
    /* Shorter than nonce + tag, from a NULL pointer too. */
    assert_open_refused(key, NULL, 0, aad, strlen(aad));
    longer = malloc(sealed_len + 1);
    assert_non_null(longer);
    memcpy(longer, sealed, sealed_len);
    longer[sealed_len] = 0;
    assert_open_refused(key, longer, sealed_len + 1, aad, strlen(aad));
    free(longer);
    free(sealed);
}

static void test_random_nonce(void **state)
{
    uint8_t *a, *b, *plain;
    size_t alen, blen, plain_len;

    (void)state;
    seal_secret(&a, &alen);
    seal_secret(&b, &blen);
    assert_int_equal(alen, blen);
    /* Different nonces, hence different ciphertexts and tags: GCM must never reuse a nonce. */
    assert_memory_not_equal(a, b, JW_SEAL_NONCE_LEN);
    assert_memory_not_equal(a + JW_SEAL_NONCE_LEN, b + JW_SEAL_NONCE_LEN, alen - JW_SEAL_NONCE_LEN);
    /* Both still open to the same plaintext. */
    assert_int_equal(jw_open(key, b, blen, aad, strlen(aad), &plain, &plain_len), 0);
    assert_string_equal((char *)plain, secret);
    jw_secure_free(plain, plain_len);
    free(a);
    free(b);
}

static void test_seal_bad_arguments(void **state)
{
    uint8_t *out = (uint8_t *)"sentinel";
    size_t out_len = 7;

    (void)state;
    assert_int_equal(jw_seal(NULL, "x", 1, NULL, 0, &out, &out_len), JW_EINVAL);
    assert_null(out);
    assert_int_equal(out_len, 0);
    assert_int_equal(jw_seal(key, NULL, 1, NULL, 0, &out, &out_len), JW_EINVAL);
    assert_int_equal(jw_seal(key, "x", 1, NULL, 1, &out, &out_len), JW_EINVAL);
    assert_int_equal(jw_seal(key, "x", 1, NULL, 0, NULL, &out_len), JW_EINVAL);
    assert_int_equal(jw_seal(key, "x", 1, NULL, 0, &out, NULL), JW_EINVAL);
    assert_int_equal(jw_open(NULL, (const uint8_t *)"x", 1, NULL, 0, &out, &out_len), JW_EINVAL);
    assert_int_equal(jw_open(key, NULL, 40, NULL, 0, &out, &out_len), JW_EINVAL);
    assert_int_equal(jw_open(key, (const uint8_t *)"x", 1, NULL, 0, NULL, &out_len), JW_EINVAL);
}

static void test_oversize(void **state)
{
    size_t big = JW_SEAL_MAX_SEALED + 2;
    uint8_t *buf = calloc(1, big), *sealed, *plain;
    size_t sealed_len, plain_len;

    (void)state;
    assert_non_null(buf);
    /* The limit itself is fine and round-trips. */
    assert_int_equal(
        jw_seal(key, buf, JW_SEAL_MAX_PLAIN, buf, JW_SEAL_MAX_PLAIN, &sealed, &sealed_len), 0);
    assert_int_equal(sealed_len, JW_SEAL_MAX_SEALED);
    assert_int_equal(jw_open(key, sealed, sealed_len, buf, JW_SEAL_MAX_PLAIN, &plain, &plain_len),
                     0);
    assert_int_equal(plain_len, JW_SEAL_MAX_PLAIN);
    jw_secure_free(plain, plain_len);
    free(sealed);
    /* One byte more is refused, plaintext or AAD, before anything is produced. */
    sealed = (uint8_t *)"sentinel";
    assert_int_equal(jw_seal(key, buf, JW_SEAL_MAX_PLAIN + 1, NULL, 0, &sealed, &sealed_len),
                     JW_ETOOBIG);
    assert_null(sealed);
    assert_int_equal(jw_seal(key, buf, 1, buf, JW_SEAL_MAX_PLAIN + 1, &sealed, &sealed_len),
                     JW_ETOOBIG);
    assert_int_equal(jw_open(key, buf, JW_SEAL_MAX_SEALED + 1, NULL, 0, &plain, &plain_len),
                     JW_ETOOBIG);
    assert_null(plain);
    assert_int_equal(jw_open(key, buf, 64, buf, JW_SEAL_MAX_PLAIN + 1, &plain, &plain_len),
                     JW_ETOOBIG);
    free(buf);
}

static void test_bytea_hex(void **state)
{
    static const uint8_t bytes[] = {0x00, 0x0a, 0xff, 0x7f, 0x80, 0x5c};
    uint8_t *out, *sealed;
    size_t n, sealed_len;
    char *hex;

    (void)state;
    hex = jw_bytea_hex(bytes, sizeof(bytes));
    assert_string_equal(hex, "\\x000aff7f805c");
    assert_int_equal(jw_bytea_parse(hex, &out, &n), 0);
    assert_int_equal(n, sizeof(bytes));
    assert_memory_equal(out, bytes, n);
    free(out);
    free(hex);

    /* Either case of digit is PostgreSQL's output; upper case is accepted too. */
    assert_int_equal(jw_bytea_parse("\\xDEADbeef", &out, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "\xde\xad\xbe\xef", 4);
    free(out);

    /* Zero bytes. */
    hex = jw_bytea_hex(NULL, 0);
    assert_string_equal(hex, "\\x");
    assert_int_equal(jw_bytea_parse(hex, &out, &n), 0);
    assert_int_equal(n, 0);
    assert_non_null(out);
    free(out);
    free(hex);

    /* A sealed value survives the trip through text. */
    seal_secret(&sealed, &sealed_len);
    hex = jw_bytea_hex(sealed, sealed_len);
    assert_int_equal(strlen(hex), 2 + 2 * sealed_len);
    assert_int_equal(jw_bytea_parse(hex, &out, &n), 0);
    assert_int_equal(n, sealed_len);
    assert_memory_equal(out, sealed, n);
    free(out);
    free(hex);
    free(sealed);
}

static void test_bytea_malformed(void **state)
{
    static const char *const bad[] = {
        "",      "\\",    "x00",    "00",       "\\X00",   "\\x0",  "\\x000",
        "\\x0g", "\\xg0", "\\x 00", "\\x00 ",   "\\x00\n", "\\x-1", "\\\\x00",
        "\\000", "\\x0x", "\\xzz",  "\\x00ff1", "\\x\\x",
    };
    uint8_t *out;
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        out = (uint8_t *)"sentinel";
        n = 5;
        if (jw_bytea_parse(bad[i], &out, &n) != JW_EINVAL)
            fail_msg("bytea text \"%s\" was not refused with JW_EINVAL", bad[i]);
        assert_null(out);
        assert_int_equal(n, 0);
    }
    assert_int_equal(jw_bytea_parse(NULL, &out, &n), JW_EINVAL);
    assert_int_equal(jw_bytea_parse("\\x00", NULL, &n), JW_EINVAL);
    assert_int_equal(jw_bytea_parse("\\x00", &out, NULL), JW_EINVAL);
    assert_null(jw_bytea_hex(NULL, 1));
}

static void test_bytea_oversize(void **state)
{
    size_t digits = 2 * (size_t)JW_BYTEA_MAX;
    char *text = malloc(2 + digits + 3);
    uint8_t *bytes = calloc(1, JW_BYTEA_MAX + 1), *out;
    size_t n;
    char *hex;

    (void)state;
    assert_non_null(text);
    assert_non_null(bytes);
    text[0] = '\\';
    text[1] = 'x';
    memset(text + 2, 'a', digits + 2);
    /* Exactly the limit parses. */
    text[2 + digits] = '\0';
    assert_int_equal(jw_bytea_parse(text, &out, &n), 0);
    assert_int_equal(n, JW_BYTEA_MAX);
    assert_int_equal(out[n - 1], 0xaa);
    free(out);
    /* One byte more is refused as too big (not as malformed), and nothing comes back. */
    text[2 + digits] = 'a';
    text[2 + digits + 2] = '\0';
    out = (uint8_t *)"sentinel";
    assert_int_equal(jw_bytea_parse(text, &out, &n), JW_ETOOBIG);
    assert_null(out);
    /* Also for a string whose end is not in sight: odd length past the limit. */
    text[2 + digits + 1] = '\0';
    assert_int_equal(jw_bytea_parse(text, &out, &n), JW_ETOOBIG);

    hex = jw_bytea_hex(bytes, JW_BYTEA_MAX);
    assert_non_null(hex);
    free(hex);
    assert_null(jw_bytea_hex(bytes, JW_BYTEA_MAX + 1));
    free(bytes);
    free(text);
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_true(jw_ct_equal("admin-key-0123456789", 20, "admin-key-0123456789", 20));
    assert_false(jw_ct_equal("admin-key-0123456789", 20, "admin-key-0123456788", 20));
    assert_false(jw_ct_equal("admin-key-0123456789", 20, "Xdmin-key-0123456789", 20));
    /* A prefix is not equal, in either order: lengths count. */
    assert_false(jw_ct_equal("admin-key-0123456789", 20, "admin-key-012345678", 19));
    assert_false(jw_ct_equal("admin-key-012345678", 19, "admin-key-0123456789", 20));
    /* Same bytes, lengths given differently (embedded NUL). */
    assert_false(jw_ct_equal("ab\0", 3, "ab", 2));
    assert_true(jw_ct_equal("ab\0c", 4, "ab\0c", 4));
    assert_false(jw_ct_equal("ab\0c", 4, "ab\0d", 4));
    /* Empty inputs. */
    assert_true(jw_ct_equal("", 0, NULL, 0));
    assert_false(jw_ct_equal("", 0, "a", 1));
    assert_false(jw_ct_equal(NULL, 1, "a", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_round_trip_empty_and_no_aad),
        cmocka_unit_test(test_wrong_key),       cmocka_unit_test(test_flipped_bits),
        cmocka_unit_test(test_wrong_aad),       cmocka_unit_test(test_truncated_and_extended),
        cmocka_unit_test(test_random_nonce),    cmocka_unit_test(test_seal_bad_arguments),
        cmocka_unit_test(test_oversize),        cmocka_unit_test(test_bytea_hex),
        cmocka_unit_test(test_bytea_malformed), cmocka_unit_test(test_bytea_oversize),
        cmocka_unit_test(test_ct_equal),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
