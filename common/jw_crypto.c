#include "jw_crypto.h"

#include "jw_util.h"

#include "jw_error.h"
#include "jw_log.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/*
 * One AES-256-GCM pass. enc = 1 encrypts in into out; enc = 0 decrypts and
 * checks tag. Returns 0, JW_EAUTH (tag mismatch, decrypt only) or JW_EIO.
 * OpenSSL takes int lengths; callers have bounded every length far below
 * INT_MAX.
 */
static int gcm(int enc, const uint8_t *key, const uint8_t *nonce, const void *aad, size_t aad_len,
               const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n, ret = JW_EIO;

    if (!ctx)
        return JW_EIO;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, JW_SEAL_NONCE_LEN, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1)
        goto out;
    if (aad_len > 0 && EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
        goto out;
    if (len > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, JW_SEAL_TAG_LEN, tag) != 1)
        goto out;
    /* GCM is a stream mode: Final writes no bytes; for decryption it checks the tag. */
    if (EVP_CipherFinal_ex(ctx, out + len, &n) != 1) {
        ret = enc ? JW_EIO : JW_EAUTH;
        goto out;
    }
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, JW_SEAL_TAG_LEN, tag) != 1)
        goto out;
    ret = 0;
out:
    EVP_CIPHER_CTX_free(ctx); /* cleanses the key schedule */
    return ret;
}

int jw_seal(const uint8_t key[JW_SEAL_KEY_LEN], const void *plain, size_t len, const void *aad,
            size_t aad_len, uint8_t **out, size_t *out_len)
{
    uint8_t *buf;
    size_t total;
    int ret;

    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!key || !out || !out_len || (!plain && len > 0) || (!aad && aad_len > 0))
        return JW_EINVAL;
    if (len > JW_SEAL_MAX_PLAIN || aad_len > JW_SEAL_MAX_PLAIN)
        return JW_ETOOBIG;

    total = len + JW_SEAL_OVERHEAD;
    buf = jw_xmalloc(total);
    if (RAND_bytes(buf, JW_SEAL_NONCE_LEN) != 1) {
        free(buf);
        return JW_EIO;
    }
    ret = gcm(1, key, buf, aad, aad_len, plain, len, buf + JW_SEAL_NONCE_LEN,
              buf + JW_SEAL_NONCE_LEN + len);
    if (ret) {
        /* The buffer may hold part of the keystream applied to the secret. */
        jw_secure_free(buf, total);
        return ret;
    }
    *out = buf;
    *out_len = total;
    return 0;
}

int jw_open(const uint8_t key[JW_SEAL_KEY_LEN], const uint8_t *sealed, size_t len, const void *aad,
            size_t aad_len, uint8_t **plain, size_t *plain_len)
{
    uint8_t tag[JW_SEAL_TAG_LEN];
    uint8_t *buf;
    size_t n;
    int ret;

    if (plain)
        *plain = NULL;
    if (plain_len)
        *plain_len = 0;
    if (!key || !plain || !plain_len || (!sealed && len > 0) || (!aad && aad_len > 0))
        return JW_EINVAL;
    if (len > JW_SEAL_MAX_SEALED || aad_len > JW_SEAL_MAX_PLAIN)
        return JW_ETOOBIG;
    if (len < JW_SEAL_OVERHEAD)
        return JW_EAUTH;

    n = len - JW_SEAL_OVERHEAD;
    /* The tag buffer must be writable for OpenSSL's ctrl signature. */
    memcpy(tag, sealed + JW_SEAL_NONCE_LEN + n, JW_SEAL_TAG_LEN);
    buf = jw_xmalloc(n + 1);
    ret = gcm(0, key, sealed, aad, aad_len, sealed + JW_SEAL_NONCE_LEN, n, buf, tag);
    if (ret) {
        /* Never release unauthenticated plaintext, and leave none in the heap. */
        jw_secure_free(buf, n + 1);
        return ret;
    }
    buf[n] = '\0';
    *plain = buf;
    *plain_len = n;
    return 0;
}

void jw_secure_free(void *p, size_t n)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, n);
    free(p);
}

char *jw_bytea_hex(const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *s, *w;

    if (n > JW_BYTEA_MAX || (!p && n > 0))
        return NULL;
    s = jw_xmalloc(2 + 2 * n + 1);
    w = s;
    *w++ = '\\';
    *w++ = 'x';
    for (size_t i = 0; i < n; i++) {
        *w++ = digits[p[i] >> 4];
        *w++ = digits[p[i] & 0x0f];
    }
    *w = '\0';
    return s;
}

int jw_bytea_parse(const char *text, uint8_t **out, size_t *n)
{
    size_t digits;
    uint8_t *buf;

    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!text || !out || !n)
        return JW_EINVAL;
    if (text[0] != '\\' || text[1] != 'x')
        return JW_EINVAL;
    text += 2;
    /* Bounded scan: never walk past what the limit allows. */
    digits = strnlen(text, 2 * (size_t)JW_BYTEA_MAX + 1);
    if (digits > 2 * (size_t)JW_BYTEA_MAX)
        return JW_ETOOBIG;
    if (digits % 2 != 0)
        return JW_EINVAL;

    buf = jw_xmalloc(digits / 2);
    for (size_t i = 0; i < digits / 2; i++) {
        int hi = jw_hex_digit(text[2 * i]), lo = jw_hex_digit(text[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            free(buf);
            return JW_EINVAL;
        }
        buf[i] = (uint8_t)(hi << 4 | lo);
    }
    *out = buf;
    *n = digits / 2;
    return 0;
}

bool jw_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    static const uint8_t empty = 0;
    uint8_t da[EVP_MAX_MD_SIZE], db[EVP_MAX_MD_SIZE];
    unsigned int la = 0, lb = 0;
    int ok_a, ok_b;

    if ((!a && alen > 0) || (!b && blen > 0))
        return false;
    /* Hash both so the compare below always covers 32 bytes, whatever the lengths. */
    ok_a = EVP_Digest(a ? a : &empty, alen, da, &la, EVP_sha256(), NULL);
    ok_b = EVP_Digest(b ? b : &empty, blen, db, &lb, EVP_sha256(), NULL);
    if (ok_a != 1 || ok_b != 1 || la != lb)
        return false;
    /* Length equality is implied by equal digests; it is folded in without a branch. */
    return (CRYPTO_memcmp(da, db, la) | (alen != blen)) == 0;
}
