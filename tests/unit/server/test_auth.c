/*
 * Unit tests of server/auth: the admin key, HS256 user tokens and everything
 * that must be refused. Tokens that jw_auth_mint_hs256 cannot make (other
 * algorithms, odd headers, nbf, aud, iss) are built by hand with OpenSSL's
 * HMAC, so each refusal is tested on a token that is otherwise correctly
 * signed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth.h"
#include "jw_error.h"

#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_KEY "admin-key-0123456789abcdef"
#define SECRET "jwt-secret-0123456789abcdef-0123456789"
#define USER "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
#define OTHER "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70"
#define NOW INT64_C(1767225600) /* 2026-01-01T00:00:00Z */
#define HOUR 3600

static jw_auth *auth;

/*
 * CRYPTO_memcmp, interposed: auth.o is linked statically into this program,
 * so its call binds to this definition rather than libcrypto's. It compares
 * like the real one (every byte, no early exit), records what it was given,
 * and can be told to lie: when a lie changes the verdict on a token, this
 * comparison is what decides it, not some other check (libjwt's strcmp).
 */
static struct {
    int calls;
    size_t len;
    unsigned char a[64], b[64];
    int force; /* 0: compare; 1: answer "equal"; -1: answer "different" */
} ct;

int CRYPTO_memcmp(const void *in_a, const void *in_b, size_t len)
{
    const unsigned char *x = in_a, *y = in_b;
    unsigned char d = 0;

    ct.calls++;
    ct.len = len;
    memcpy(ct.a, x, len < sizeof(ct.a) ? len : sizeof(ct.a));
    memcpy(ct.b, y, len < sizeof(ct.b) ? len : sizeof(ct.b));
    for (size_t i = 0; i < len; i++)
        d |= x[i] ^ y[i];
    if (ct.force)
        return ct.force > 0 ? 0 : 1;
    return d != 0;
}

static int setup(void **state)
{
    char err[256];

    (void)state;
    return jw_auth_new(ADMIN_KEY, SECRET, &auth, err, sizeof(err));
}

static int teardown(void **state)
{
    (void)state;
    jw_auth_free(auth);
    auth = NULL;
    return 0;
}

/* Unpadded base64url of n bytes; malloc'd. */
static char *b64url(const void *p, size_t n)
{
    char *s = malloc(4 * ((n + 2) / 3) + 1), *w;
    int len;

    assert_non_null(s);
    len = EVP_EncodeBlock((unsigned char *)s, p, (int)n);
    w = s;
    for (int i = 0; i < len; i++) {
        if (s[i] == '=')
            break;
        *w++ = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
    }
    *w = '\0';
    return s;
}

/*
 * header.payload.signature from JSON texts; the signature is the HMAC with md
 * under key, or empty when md is NULL. malloc'd.
 */
static char *make_token(const char *header, const char *payload, const EVP_MD *md, const char *key)
{
    char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
    size_t len = strlen(h) + 1 + strlen(p);
    char *input = malloc(len + 1), *sig = NULL, *token;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;

    assert_non_null(input);
    snprintf(input, len + 1, "%s.%s", h, p);
    if (md) {
        assert_non_null(
            HMAC(md, key, (int)strlen(key), (const unsigned char *)input, len, mac, &mac_len));
        sig = b64url(mac, mac_len);
    }
    token = malloc(len + 1 + (sig ? strlen(sig) : 0) + 1);
    assert_non_null(token);
    sprintf(token, "%s.%s", input, sig ? sig : "");
    free(h);
    free(p);
    free(input);
    free(sig);
    return token;
}

/* A valid-looking payload with the given exp, plus extra members (may be ""). */
static char *payload_with(int64_t exp, const char *extra)
{
    char *s = malloc(strlen(extra) + 128);

    assert_non_null(s);
    sprintf(s, "{\"sub\":\"%s\",\"exp\":%lld%s}", USER, (long long)exp, extra);
    return s;
}

/* An HS256 token for sub, valid for an hour around NOW, minted by the module. */
static char *user_token(const char *sub)
{
    char *t = jw_auth_mint_hs256(SECRET, sub, NOW - 60, NOW + HOUR);

    assert_non_null(t);
    return t;
}

static void assert_contains(const char *err, const char *want)
{
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

/* The message must not quote the token or any sizeable piece of it. */
static void assert_no_token_text(const char *err, const char *token)
{
    size_t n = strlen(token);

    if (n >= 8 && strstr(err, token))
        fail_msg("error \"%s\" contains the token", err);
    /* Any 8-byte window of the token: covers every part, the signature included. */
    for (size_t i = 0; i + 8 <= n; i++) {
        char window[9];

        memcpy(window, token + i, 8);
        window[8] = '\0';
        if (strstr(err, window))
            fail_msg("error \"%s\" contains token text \"%s\"", err, window);
    }
}

/* jw_auth_token and jw_auth_bearer both refuse token (under a) with a message containing want. */
static void assert_refused_by(const jw_auth *a, const char *token, const char *want)
{
    jw_principal p;
    char err[256], *header;

    p.kind = JW_PRINCIPAL_ADMIN; /* a failed call must reset it */
    err[0] = '\0';
    assert_int_equal(jw_auth_token(a, token, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_int_equal(p.kind, JW_PRINCIPAL_NONE);
    assert_string_equal(p.user_id, "");
    assert_contains(err, want);
    assert_no_token_text(err, token);

    header = malloc(strlen(token) + 8);
    assert_non_null(header);
    sprintf(header, "Bearer %s", token);
    p.kind = JW_PRINCIPAL_ADMIN;
    err[0] = '\0';
    assert_int_equal(jw_auth_bearer(a, header, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_int_equal(p.kind, JW_PRINCIPAL_NONE);
    assert_contains(err, want);
    assert_no_token_text(err, token);
    free(header);
}

static void assert_refused(const char *token, const char *want)
{
    assert_refused_by(auth, token, want);
}

static void assert_user_by(const jw_auth *a, const char *token, const char *user, int64_t exp)
{
    jw_principal p;
    char err[256] = "";

    if (jw_auth_token(a, token, NOW, &p, err, sizeof(err)) != 0)
        fail_msg("token refused: %s", err);
    assert_int_equal(p.kind, JW_PRINCIPAL_USER);
    assert_string_equal(p.user_id, user);
    assert_int_equal(p.expires_at, exp);
}

static void assert_user(const char *token, const char *user, int64_t exp)
{
    assert_user_by(auth, token, user, exp);
}

static void test_admin_key_accepted(void **state)
{
    jw_principal p;
    char err[256];

    (void)state;
    assert_int_equal(jw_auth_token(auth, ADMIN_KEY, NOW, &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, JW_PRINCIPAL_ADMIN);
    assert_string_equal(p.user_id, "");
    assert_int_equal(p.expires_at, 0);
    assert_int_equal(jw_auth_bearer(auth, "Bearer " ADMIN_KEY, NOW, &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, JW_PRINCIPAL_ADMIN);
}

static void test_admin_key_wrong(void **state)
{
    /* Same length, differing in the last byte, the first byte, and everywhere. */
    static const char *const wrong[] = {
        "admin-key-0123456789abcdeX",
        "Xdmin-key-0123456789abcdef",
        "xxxxxxxxxxxxxxxxxxxxxxxxxx",
        /* A prefix, one byte more, and a case change. */
        "admin-key-0123456789abcde",
        "admin-key-0123456789abcdef0",
        "ADMIN-KEY-0123456789ABCDEF",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
        assert_refused(wrong[i], "neither the admin key nor a JWT");
}

static void test_user_token_accepted(void **state)
{
    char *t = user_token(USER), *hand, *payload;

    (void)state;
    assert_user(t, USER, NOW + HOUR);
    free(t);

    /* Upper-case sub: the principal carries the canonical lower-case form. */
    t = jw_auth_mint_hs256(SECRET, "6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B", 0, NOW + HOUR);
    assert_user(t, USER, NOW + HOUR);
    free(t);

    /* Hand-built with every time claim in range: proves make_token signs correctly. */
    payload = payload_with(NOW + HOUR, ",\"nbf\":1767225000,\"iat\":1767225000,\"role\":\"x\"");
    hand = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, EVP_sha256(), SECRET);
    assert_user(hand, USER, NOW + HOUR);
    free(hand);
    free(payload);

    /* No typ at all is fine, and a fractional exp is truncated. */
    hand = make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"" USER "\",\"exp\":1767229200.75}",
                      EVP_sha256(), SECRET);
    assert_user(hand, USER, NOW + HOUR);
    free(hand);
}

static void test_expired(void **state)
{
    char *t;

    (void)state;
    t = jw_auth_mint_hs256(SECRET, USER, NOW - 2 * HOUR, NOW - HOUR);
    assert_refused(t, "token expired at 2025-12-31T23:00:00Z");
    free(t);
    /* The leeway: 29 s past exp is accepted, 30 s is not. */
    t = jw_auth_mint_hs256(SECRET, USER, 0, NOW - JW_AUTH_LEEWAY_S + 1);
    assert_user(t, USER, NOW - JW_AUTH_LEEWAY_S + 1);
    free(t);
    t = jw_auth_mint_hs256(SECRET, USER, 0, NOW - JW_AUTH_LEEWAY_S);
    assert_refused(t, "token expired at 2025-12-31T23:59:30Z");
    free(t);
}

static void test_not_yet_valid(void **state)
{
    char extra[64], *payload, *t;

    (void)state;
    snprintf(extra, sizeof(extra), ",\"nbf\":%lld", (long long)(NOW + 600));
    payload = payload_with(NOW + HOUR, extra);
    t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, EVP_sha256(), SECRET);
    assert_refused(t, "token not valid before 2026-01-01T00:10:00Z");
    free(t);
    free(payload);

    /* Within the leeway is accepted. */
    snprintf(extra, sizeof(extra), ",\"nbf\":%lld", (long long)(NOW + JW_AUTH_LEEWAY_S));
    payload = payload_with(NOW + HOUR, extra);
    t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, EVP_sha256(), SECRET);
    assert_user(t, USER, NOW + HOUR);
    free(t);
    free(payload);

    /* Issued in the future, beyond the leeway. */
    t = jw_auth_mint_hs256(SECRET, USER, NOW + JW_AUTH_LEEWAY_S + 1, NOW + HOUR);
    assert_refused(t, "token issued in the future");
    free(t);
    t = jw_auth_mint_hs256(SECRET, USER, NOW + JW_AUTH_LEEWAY_S, NOW + HOUR);
    assert_user(t, USER, NOW + HOUR);
    free(t);
}

static void test_missing_or_bad_exp(void **state)
{
    static const char *const bad_exp[] = {
        "{\"sub\":\"" USER "\",\"exp\":\"1767229200\"}", "{\"sub\":\"" USER "\",\"exp\":null}",
        "{\"sub\":\"" USER "\",\"exp\":true}",           "{\"sub\":\"" USER "\",\"exp\":-1}",
        "{\"sub\":\"" USER "\",\"exp\":1e300}",
    };
    char *t;

    (void)state;
    t = jw_auth_mint_hs256(SECRET, USER, NOW, 0);
    assert_refused(t, "token has no exp");
    free(t);
    for (size_t i = 0; i < sizeof(bad_exp) / sizeof(bad_exp[0]); i++) {
        t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", bad_exp[i], EVP_sha256(), SECRET);
        assert_refused(t, "token exp is not a time");
        free(t);
    }
    /* nbf and iat must be numbers too when present. */
    t = make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"" USER "\",\"exp\":1767229200,\"nbf\":\"0\"}",
                   EVP_sha256(), SECRET);
    assert_refused(t, "token nbf is not a time");
    free(t);
}

static void test_missing_or_bad_sub(void **state)
{
    static const char *const bad_sub[] = {
        "{\"sub\":\"alice\",\"exp\":1767229200}",
        "{\"sub\":\"" USER "x\",\"exp\":1767229200}",
        "{\"sub\":\"6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b\",\"exp\":1767229200}",
        "{\"sub\":\"\",\"exp\":1767229200}",
        "{\"sub\":42,\"exp\":1767229200}",
        "{\"sub\":[\"" USER "\"],\"exp\":1767229200}",
    };
    char *t;

    (void)state;
    t = jw_auth_mint_hs256(SECRET, NULL, NOW, NOW + HOUR);
    assert_refused(t, "token has no sub");
    free(t);
    t = jw_auth_mint_hs256(SECRET, "not-a-uuid", NOW, NOW + HOUR);
    assert_refused(t, "sub is not a UUID");
    free(t);
    for (size_t i = 0; i < sizeof(bad_sub) / sizeof(bad_sub[0]); i++) {
        t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", bad_sub[i], EVP_sha256(), SECRET);
        assert_refused(t, "sub is not a UUID");
        free(t);
    }
}

static void test_bad_signature(void **state)
{
    char *t, *payload, *forged;
    size_t n;

    (void)state;
    t = jw_auth_mint_hs256("another-secret-0123456789", USER, NOW, NOW + HOUR);
    assert_refused(t, "token signature invalid");
    free(t);

    /* A secret that is a prefix of the real one. */
    t = jw_auth_mint_hs256("jwt-secret-0123456789abcdef-012345678", USER, NOW, NOW + HOUR);
    assert_refused(t, "token signature invalid");
    free(t);

    /* The right signature over another payload: another user's token, forged. */
    t = user_token(USER);
    forged = user_token(OTHER);
    payload = strchr(t, '.');
    n = (size_t)(strrchr(t, '.') - payload);
    assert_int_equal(n, (size_t)(strrchr(forged, '.') - strchr(forged, '.')));
    memcpy(payload, strchr(forged, '.'), n);
    assert_refused(t, "token signature invalid");
    free(forged);

    /* One character of the signature changed. */
    free(t);
    t = user_token(USER);
    n = strlen(t);
    t[n - 2] = t[n - 2] == 'A' ? 'B' : 'A';
    assert_refused(t, "token signature invalid");
    /* The signature cut short: refused on its length, before any HMAC is compared. */
    t[n - 5] = '\0';
    assert_refused(t, "token signature is 38 characters; an HS256 signature is 43");
    free(t);
}

#define HS256_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* HMAC-SHA256 under key of "b64url(header).b64url(payload)", as make_token signs. */
static void signing_mac(const char *header, const char *payload, const char *key,
                        unsigned char mac[32])
{
    char *t = make_token(header, payload, NULL, NULL);
    unsigned int len = 0;

    t[strlen(t) - 1] = '\0'; /* the '.' before the (empty) signature */
    assert_non_null(
        HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)t, strlen(t), mac, &len));
    assert_int_equal(len, 32);
    free(t);
}

/* b64url(header).b64url(payload).b64url(sig) followed by suffix; malloc'd. */
static char *token_with_sig(const char *header, const char *payload, const unsigned char *sig,
                            size_t sig_len, const char *suffix)
{
    char *t = make_token(header, payload, NULL, NULL), *s = b64url(sig, sig_len);
    char *out = malloc(strlen(t) + strlen(s) + strlen(suffix) + 1);

    assert_non_null(out);
    sprintf(out, "%s%s%s", t, s, suffix);
    free(t);
    free(s);
    return out;
}

static void test_signature_one_byte_differs(void **state)
{
    char *payload = payload_with(NOW + HOUR, ""), *t;
    unsigned char mac[32], sig[32];

    (void)state;
    signing_mac(HS256_HEADER, payload, SECRET, mac);
    t = token_with_sig(HS256_HEADER, payload, mac, 32, "");
    assert_user(t, USER, NOW + HOUR); /* the control: these helpers sign correctly */
    free(t);
    /* Every byte, with its lowest and its highest bit flipped. */
    for (size_t i = 0; i < 32; i++) {
        for (int flip = 0x01; flip <= 0x80; flip <<= 7) {
            memcpy(sig, mac, 32);
            sig[i] ^= (unsigned char)flip;
            t = token_with_sig(HS256_HEADER, payload, sig, 32, "");
            assert_refused(t, "token signature invalid");
            free(t);
        }
    }
    free(payload);
}

static int reset_ct(void **state)
{
    (void)state;
    memset(&ct, 0, sizeof(ct));
    return 0;
}

static void test_signature_decided_by_crypto_memcmp(void **state)
{
    char *payload = payload_with(NOW + HOUR, ""), *forged, *genuine, *t, err[256];
    unsigned char mac[32], sig[32], big[64];
    jw_auth *a = NULL;
    jw_principal p;

    (void)state;
    /* No admin key: jw_ct_equal, which calls CRYPTO_memcmp too, never runs. */
    assert_int_equal(jw_auth_new(NULL, SECRET, &a, err, sizeof(err)), 0);
    signing_mac(HS256_HEADER, payload, SECRET, mac);
    memcpy(sig, mac, 32);
    sig[31] ^= 1;
    forged = token_with_sig(HS256_HEADER, payload, sig, 32, "");
    genuine = token_with_sig(HS256_HEADER, payload, mac, 32, "");

    /* One comparison of 32 bytes: the HMAC computed here and the token's decoded signature. */
    memset(&ct, 0, sizeof(ct));
    assert_int_equal(jw_auth_token(a, forged, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_string_equal(err, "token signature invalid");
    assert_int_equal(ct.calls, 1);
    assert_int_equal(ct.len, 32);
    assert_true((memcmp(ct.a, mac, 32) == 0 && memcmp(ct.b, sig, 32) == 0) ||
                (memcmp(ct.a, sig, 32) == 0 && memcmp(ct.b, mac, 32) == 0));

    /* Its answer alone decides: told "equal", the forged signature passes... */
    ct.force = 1;
    assert_user_by(a, forged, USER, NOW + HOUR);
    /* ...and told "different", the genuine one fails. */
    ct.force = -1;
    assert_refused_by(a, genuine, "token signature invalid");
    ct.force = 0;
    assert_user_by(a, genuine, USER, NOW + HOUR);

    /*
     * A signature of the wrong shape is refused before any comparison, even
     * one that would answer "equal": truncated, one character more, '='
     * padded, the length of an HS512 MAC; and so is a refused algorithm.
     */
    ct.force = 1;
    ct.calls = 0;
    t = token_with_sig(HS256_HEADER, payload, mac, 31, "");
    assert_refused_by(a, t, "token signature is 42 characters; an HS256 signature is 43");
    free(t);
    t = token_with_sig(HS256_HEADER, payload, mac, 32, "A");
    assert_refused_by(a, t, "token signature is 44 characters; an HS256 signature is 43");
    free(t);
    t = token_with_sig(HS256_HEADER, payload, mac, 32, "=");
    assert_refused_by(a, t, "token signature ends in '=' padding");
    free(t);
    memset(big, 0, sizeof(big));
    t = token_with_sig(HS256_HEADER, payload, big, sizeof(big), "");
    assert_refused_by(a, t, "token signature is 86 characters; an HS256 signature is 43");
    free(t);
    t = token_with_sig("{\"alg\":\"HS384\"}", payload, mac, 32, "");
    assert_refused_by(a, t, "token algorithm HS384 not accepted");
    free(t);
    assert_int_equal(ct.calls, 0);
    ct.force = 0;

    free(forged);
    free(genuine);
    free(payload);
    jw_auth_free(a);
}

static void test_signature_strict_base64url(void **state)
{
    char *payload = payload_with(NOW + HOUR, ""), *t, *cut;
    unsigned char mac[32];
    size_t n;

    (void)state;
    signing_mac(HS256_HEADER, payload, SECRET, mac);

    /* Padding, one '=' or two, after a correct signature: refused, and said so. */
    t = token_with_sig(HS256_HEADER, payload, mac, 32, "=");
    assert_refused(t, "token signature ends in '=' padding; a JWT is base64url without padding");
    free(t);
    t = token_with_sig(HS256_HEADER, payload, mac, 32, "==");
    assert_refused(t, "token signature ends in '=' padding");
    free(t);
    /* A signature that is nothing but padding. */
    t = token_with_sig(HS256_HEADER, payload, mac, 0, "=");
    assert_refused(t, "token signature ends in '=' padding");
    free(t);

    /*
     * The last of 43 characters carries 4 bits of the MAC and 2 unused bits,
     * which must be 0: the same bytes with those bits set are a second
     * spelling of the signature, refused.
     */
    t = token_with_sig(HS256_HEADER, payload, mac, 32, "");
    n = strlen(t);
    assert_user(t, USER, NOW + HOUR);
    t[n - 1] = (char)(t[n - 1] == 'z' ? '0' : t[n - 1] == '9' ? '-' : t[n - 1] + 1);
    assert_refused(t, "token signature is not canonical base64url");

    /* Characters outside base64url, in place of a valid one or after it. */
    t[n - 1] = '+';
    assert_refused(t, "neither the admin key nor a JWT");
    t[n - 1] = '/';
    assert_refused(t, "neither the admin key nor a JWT");
    t[n - 10] = '=';
    assert_refused(t, "neither the admin key nor a JWT"); /* '=' inside, not at the end */

    /* Truncated by one character, and cut to one. */
    free(t);
    t = token_with_sig(HS256_HEADER, payload, mac, 32, "");
    n = strlen(t);
    t[n - 1] = '\0';
    assert_refused(t, "token signature is 42 characters");
    cut = strrchr(t, '.');
    cut[2] = '\0';
    assert_refused(t, "token signature is 1 characters");
    free(t);
    free(payload);
}

/* A token for USER with the given extra claims (",\"aud\":..."), signed with SECRET. */
static char *claims_token(const char *extra)
{
    char *payload = payload_with(NOW + HOUR, extra);
    char *t = make_token(HS256_HEADER, payload, EVP_sha256(), SECRET);

    free(payload);
    return t;
}

#define AUD "jobwire-api"
#define ISS "https://issuer.example/auth/v1"

static void test_audience_and_issuer(void **state)
{
    static const char *const good[] = {
        ",\"aud\":\"" AUD "\",\"iss\":\"" ISS "\"",
        ",\"iss\":\"" ISS "\",\"aud\":[\"other\",\"" AUD "\"]",
        ",\"iss\":\"" ISS "\",\"aud\":[\"" AUD "\"]",
        ",\"iss\":\"" ISS "\",\"aud\":[\"" AUD "\",\"" AUD "\"],\"role\":\"authenticated\"",
    };
    static const struct {
        const char *extra, *want;
    } bad[] = {
        {",\"iss\":\"" ISS "\"", "token has no aud (this server requires its audience)"},
        {",\"aud\":\"" AUD "\"", "token has no iss (this server requires its issuer)"},
        {"", "token has no iss"},
        {",\"iss\":\"" ISS "\",\"aud\":\"jobwire-ap\"", "token aud does not include the audience"},
        {",\"iss\":\"" ISS "\",\"aud\":\"Jobwire-API\"", "token aud does not include"},
        {",\"iss\":\"" ISS "\",\"aud\":\"" AUD " \"", "token aud does not include"},
        /* A NUL inside: C would see AUD; jansson refuses the payload outright. */
        {",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\\u0000x\"", "token payload is not a JSON object"},
        {",\"iss\":\"" ISS "\",\"aud\":[]", "token aud does not include"},
        {",\"iss\":\"" ISS "\",\"aud\":[\"other\",\"another\"]", "token aud does not include"},
        {",\"iss\":\"" ISS "\",\"aud\":[\"" AUD "\",1]", "token aud is not a string or an array"},
        {",\"iss\":\"" ISS "\",\"aud\":[[\"" AUD "\"]]", "token aud is not a string or an array"},
        {",\"iss\":\"" ISS "\",\"aud\":42", "token aud is not a string or an array"},
        {",\"iss\":\"" ISS "\",\"aud\":null", "token aud is not a string or an array"},
        {",\"iss\":\"" ISS "\",\"aud\":{\"" AUD "\":1}", "token aud is not a string or an array"},
        {",\"aud\":\"" AUD "\",\"iss\":\"" ISS "/\"", "token iss is not the issuer this server"},
        {",\"aud\":\"" AUD "\",\"iss\":\"https://evil.example/auth/v1\"", "token iss is not the"},
        {",\"aud\":\"" AUD "\",\"iss\":[\"" ISS "\"]", "token iss is not a string"},
        {",\"aud\":\"" AUD "\",\"iss\":1", "token iss is not a string"},
    };
    jw_auth *a = NULL, *aud_only = NULL, *iss_only = NULL;
    char err[256], *t;
    jw_principal p;

    (void)state;
    assert_int_equal(jw_auth_new(ADMIN_KEY, SECRET, &a, err, sizeof(err)), 0);
    assert_int_equal(jw_auth_expect(a, AUD, ISS, err, sizeof(err)), 0);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        t = claims_token(good[i]);
        assert_user_by(a, t, USER, NOW + HOUR);
        free(t);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = claims_token(bad[i].extra);
        assert_refused_by(a, t, bad[i].want);
        /* The message names the claim, never its value. */
        assert_int_equal(jw_auth_token(a, t, NOW, &p, err, sizeof(err)), JW_EAUTH);
        assert_null(strstr(err, "other"));
        assert_null(strstr(err, "evil"));
        assert_null(strstr(err, "jobwire-ap"));
        assert_null(strstr(err, "Jobwire"));
        free(t);
    }
    /* A token minted without aud or iss (jw-mint-token's) is refused; the admin key still works. */
    t = user_token(USER);
    assert_refused_by(a, t, "token has no iss");
    free(t);
    assert_int_equal(jw_auth_token(a, ADMIN_KEY, NOW, &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, JW_PRINCIPAL_ADMIN);

    /* Only one configured: the other claim is not looked at. */
    assert_int_equal(jw_auth_new(NULL, SECRET, &aud_only, err, sizeof(err)), 0);
    assert_int_equal(jw_auth_expect(aud_only, AUD, NULL, err, sizeof(err)), 0);
    assert_int_equal(jw_auth_new(NULL, SECRET, &iss_only, err, sizeof(err)), 0);
    assert_int_equal(jw_auth_expect(iss_only, NULL, ISS, err, sizeof(err)), 0);
    t = claims_token(",\"aud\":\"" AUD "\",\"iss\":1");
    assert_user_by(aud_only, t, USER, NOW + HOUR);
    assert_refused_by(iss_only, t, "token iss is not a string");
    free(t);
    t = claims_token(",\"aud\":42,\"iss\":\"" ISS "\"");
    assert_user_by(iss_only, t, USER, NOW + HOUR);
    assert_refused_by(aud_only, t, "token aud is not a string or an array");
    free(t);

    /* Unset (the default): neither is checked, whatever the token says. */
    t = claims_token(",\"aud\":42,\"iss\":[]");
    assert_user(t, USER, NOW + HOUR);
    free(t);

    /* Set again to NULL, NULL: back to unchecked. */
    assert_int_equal(jw_auth_expect(a, NULL, NULL, err, sizeof(err)), 0);
    t = user_token(USER);
    assert_user_by(a, t, USER, NOW + HOUR);
    free(t);

    jw_auth_free(a);
    jw_auth_free(aud_only);
    jw_auth_free(iss_only);
}

static void test_expect_arguments(void **state)
{
    char long_aud[JW_AUTH_MAX_CLAIM + 2], err[256], *t;
    jw_auth *a = NULL;

    (void)state;
    assert_int_equal(jw_auth_expect(NULL, AUD, NULL, err, sizeof(err)), JW_EINVAL);
    assert_int_equal(jw_auth_new(NULL, SECRET, &a, err, sizeof(err)), 0);
    assert_int_equal(jw_auth_expect(a, AUD, ISS, err, sizeof(err)), 0);
    assert_int_equal(jw_auth_expect(a, "", NULL, err, sizeof(err)), JW_EINVAL);
    assert_contains(err, "audience");
    assert_int_equal(jw_auth_expect(a, NULL, "iss\nx", err, sizeof(err)), JW_EINVAL);
    assert_contains(err, "issuer");
    memset(long_aud, 'a', sizeof(long_aud) - 1);
    long_aud[sizeof(long_aud) - 1] = '\0';
    assert_int_equal(jw_auth_expect(a, long_aud, NULL, err, sizeof(err)), JW_EINVAL);
    /* A refusal leaves what was set: aud and iss are still required. */
    t = claims_token(",\"aud\":\"" AUD "\"");
    assert_refused_by(a, t, "token has no iss");
    free(t);
    long_aud[JW_AUTH_MAX_CLAIM] = '\0';
    assert_int_equal(jw_auth_expect(a, long_aud, NULL, err, sizeof(err)), 0);
    jw_auth_free(a);
}

static void test_alg_none(void **state)
{
    /* base64url of {"alg":"none"}, as the brief's hand-built token has it. */
    static const char none_header[] = "eyJhbGciOiJub25lIn0";
    char *payload = payload_with(NOW + HOUR, ""), *p64 = b64url(payload, strlen(payload));
    char *t = malloc(strlen(none_header) + strlen(p64) + 64), *signed_hs256;
    jwt_t *jwt = NULL;

    (void)state;
    assert_non_null(t);
    sprintf(t, "%s.%s.", none_header, p64);
    assert_refused(t, "token algorithm none not accepted (HS256 only)");

    /*
     * libjwt 1.10 itself accepts this unsigned token when it gets no key: the
     * reason the module must never call it with an empty secret, and pins alg.
     */
    assert_int_equal(jwt_decode(&jwt, t, NULL, 0), 0);
    assert_int_equal(jwt_get_alg(jwt), JWT_ALG_NONE);
    jwt_free(jwt);

    /* The same with a real HS256 signature appended. */
    signed_hs256 = make_token("{\"alg\":\"none\"}", payload, EVP_sha256(), SECRET);
    assert_int_equal(strncmp(signed_hs256, none_header, strlen(none_header)), 0);
    assert_refused(signed_hs256, "token algorithm none not accepted (HS256 only)");
    free(signed_hs256);

    /* Case variants, which libjwt's strcasecmp would map to none as well. */
    free(t);
    t = make_token("{\"alg\":\"None\",\"typ\":\"JWT\"}", payload, NULL, NULL);
    assert_refused(t, "token algorithm None not accepted (HS256 only)");
    free(t);
    t = make_token("{\"alg\":\"NONE\"}", payload, EVP_sha256(), SECRET);
    assert_refused(t, "token algorithm NONE not accepted (HS256 only)");
    free(t);
    free(p64);
    free(payload);
}

static void test_other_hmac_algorithms(void **state)
{
    char *payload = payload_with(NOW + HOUR, ""), *t;
    jwt_t *jwt = NULL;

    (void)state;
    t = make_token("{\"alg\":\"HS384\",\"typ\":\"JWT\"}", payload, EVP_sha384(), SECRET);
    /* Correctly signed: libjwt on its own would accept it with our secret. */
    assert_int_equal(jwt_decode(&jwt, t, (const unsigned char *)SECRET, strlen(SECRET)), 0);
    jwt_free(jwt);
    assert_refused(t, "token algorithm HS384 not accepted (HS256 only)");
    free(t);

    t = make_token("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", payload, EVP_sha512(), SECRET);
    assert_refused(t, "token algorithm HS512 not accepted (HS256 only)");
    free(t);

    /* Built by libjwt itself. */
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grant(jwt, "sub", USER), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "exp", (long)(NOW + HOUR)), 0);
    assert_int_equal(jwt_set_alg(jwt, JWT_ALG_HS512, (const unsigned char *)SECRET, strlen(SECRET)),
                     0);
    t = jwt_encode_str(jwt);
    assert_non_null(t);
    jwt_free(jwt);
    assert_refused(t, "token algorithm HS512 not accepted (HS256 only)");
    free(t);

    /* "hs256": a valid HS256 signature that libjwt accepts (strcasecmp), but not the alg. */
    t = make_token("{\"alg\":\"hs256\",\"typ\":\"JWT\"}", payload, EVP_sha256(), SECRET);
    assert_int_equal(jwt_decode(&jwt, t, (const unsigned char *)SECRET, strlen(SECRET)), 0);
    jwt_free(jwt);
    assert_refused(t, "token algorithm hs256 not accepted (HS256 only)");
    free(t);
    free(payload);
}

static void test_asymmetric_and_odd_headers(void **state)
{
    static const struct {
        const char *header, *want;
    } cases[] = {
        {"{\"alg\":\"RS256\",\"typ\":\"JWT\"}", "token algorithm RS256 not accepted (HS256 only)"},
        {"{\"alg\":\"ES256\"}", "token algorithm ES256 not accepted (HS256 only)"},
        {"{\"alg\":\"PS256\"}", "token algorithm PS256 not accepted (HS256 only)"},
        {"{\"alg\":\"HS256 \"}", "token algorithm (unrecognised) not accepted"},
        {"{\"alg\":\"dir\",\"enc\":\"A256GCM\"}", "token algorithm dir not accepted"},
        {"{\"alg\":\"\"}", "token algorithm (empty) not accepted"},
        {"{\"alg\":\"HS256HS256HS256HS256\"}", "token algorithm (unrecognised) not accepted"},
        {"{\"typ\":\"JWT\"}", "token header has no alg"},
        {"{\"alg\":256}", "token algorithm is not a string"},
        {"{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", "token typ at+jwt not accepted (JWT only)"},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "crit extensions"},
        /* Two algs: one parser would take the first, another the last. */
        {"{\"alg\":\"none\",\"alg\":\"HS256\"}", "token header is not a JSON object"},
        {"[\"HS256\"]", "token header is not a JSON object"},
        {"not json", "token header is not a JSON object"},
    };
    char *payload = payload_with(NOW + HOUR, ""), *t;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* Signed with the secret (HS256 over the bytes), so only the header is wrong. */
        t = make_token(cases[i].header, payload, EVP_sha256(), SECRET);
        assert_refused(t, cases[i].want);
        free(t);
    }
    free(payload);
}

static void test_garbage(void **state)
{
    static const char *const shapes[] = {
        "garbage",
        "a.b",
        "a.b.c.d",
        "..",
        "...",
        "a..c",
        ".b.c",
        "!!!.???.###",
        "token=abc",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9=.c2ln", /* padding is not base64url */
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln~",
        "\"eyJhbGciOiJIUzI1NiJ9.eyJ9.c2ln\"",
    };
    /* Not visible ASCII: a bare token is refused as a token, a header as malformed. */
    static const char *const unprintable[] = {
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.sig with space",
        "\x01\x02\x03",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln\n",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2l\xc3\xa9",
    };
    char *payload_not_json, *dup_claims, err[256], header[256];
    jw_principal p;

    (void)state;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        assert_refused(shapes[i], "neither the admin key nor a JWT");
    for (size_t i = 0; i < sizeof(unprintable) / sizeof(unprintable[0]); i++) {
        assert_int_equal(jw_auth_token(auth, unprintable[i], NOW, &p, err, sizeof(err)), JW_EAUTH);
        assert_contains(err, "neither the admin key nor a JWT");
        assert_no_token_text(err, unprintable[i]);
        snprintf(header, sizeof(header), "Bearer %s", unprintable[i]);
        assert_int_equal(jw_auth_bearer(auth, header, NOW, &p, err, sizeof(err)), JW_EAUTH);
        assert_string_equal(err, "malformed Authorization header: expected 'Bearer <token>'");
    }

    /* Well-formed header, payload not JSON / not an object / duplicate claims. */
    payload_not_json = make_token("{\"alg\":\"HS256\"}", "sub=" USER, EVP_sha256(), SECRET);
    assert_refused(payload_not_json, "token payload is not a JSON object");
    free(payload_not_json);
    payload_not_json = make_token("{\"alg\":\"HS256\"}", "[1,2]", EVP_sha256(), SECRET);
    assert_refused(payload_not_json, "token payload is not a JSON object");
    free(payload_not_json);
    dup_claims = make_token("{\"alg\":\"HS256\"}",
                            "{\"sub\":\"" OTHER "\",\"exp\":1767229200,\"sub\":\"" USER "\"}",
                            EVP_sha256(), SECRET);
    assert_refused(dup_claims, "token payload is not a JSON object");
    free(dup_claims);
    /* A base64url part whose length cannot be base64 (1 mod 4). */
    assert_refused("eyJhbGciOiJIUzI1NiJ9A.eyJ9.c2ln", "token header is not a JSON object");
    /* HS256 header, no signature at all. */
    assert_refused("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.", "token has no signature");

    /* Empty. */
    assert_int_equal(jw_auth_token(auth, "", NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_string_equal(err, "token is empty");
}

static void test_oversize_token(void **state)
{
    char *pad = malloc(JW_AUTH_MAX_TOKEN), *extra = malloc(JW_AUTH_MAX_TOKEN + 32), *payload;
    char *best = NULL, *t, *raw, err[256];
    size_t best_len = 0;
    jw_principal p;

    (void)state;
    assert_non_null(pad);
    assert_non_null(extra);
    /*
     * A correctly signed token just under the limit is accepted, and the same
     * token grown past the limit is refused as too long: the bound is applied
     * before parsing, not after.
     */
    for (size_t n = 5900; n < 6300; n++) {
        memset(pad, 'p', n);
        pad[n] = '\0';
        snprintf(extra, JW_AUTH_MAX_TOKEN + 32, ",\"pad\":\"%s\"", pad);
        payload = payload_with(NOW + HOUR, extra);
        t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, EVP_sha256(), SECRET);
        free(payload);
        if (strlen(t) <= JW_AUTH_MAX_TOKEN && strlen(t) > best_len) {
            free(best);
            best = t;
            best_len = strlen(t);
        } else {
            free(t);
        }
    }
    assert_true(best_len >= JW_AUTH_MAX_TOKEN - 2);
    assert_user(best, USER, NOW + HOUR);
    free(best);

    memset(pad, 'p', 7000);
    pad[7000] = '\0';
    snprintf(extra, JW_AUTH_MAX_TOKEN + 32, ",\"pad\":\"%s\"", pad);
    payload = payload_with(NOW + HOUR, extra);
    t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, EVP_sha256(), SECRET);
    assert_true(strlen(t) > 9 * 1024);
    assert_refused(t, "token is longer than 8192 bytes");
    free(t);
    free(payload);

    /* 9 KiB of anything: refused on length, in a header too. */
    raw = malloc(9 * 1024 + 1);
    assert_non_null(raw);
    memset(raw, 'A', 9 * 1024);
    raw[9 * 1024] = '\0';
    assert_int_equal(jw_auth_token(auth, raw, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_contains(err, "token is longer than 8192 bytes");
    memcpy(raw, "Bearer ", 7);
    assert_int_equal(jw_auth_bearer(auth, raw, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_contains(err, "Authorization header too long: token is longer than 8192 bytes");

    /* The length check reads no further than the limit: no NUL in this buffer (ASan checks). */
    memset(raw, 'A', JW_AUTH_MAX_TOKEN + 1);
    t = malloc(JW_AUTH_MAX_TOKEN + 1);
    assert_non_null(t);
    memcpy(t, raw, JW_AUTH_MAX_TOKEN + 1);
    assert_int_equal(jw_auth_token(auth, t, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_contains(err, "token is longer than 8192 bytes");
    free(t);
    free(raw);
    free(pad);
    free(extra);
}

/* One header form: what goes before and after the token. */
struct form {
    const char *pre, *post;
};

static void test_bearer_variants(void **state)
{
    static const struct form good[] = {
        {"Bearer ", ""},   {"bearer ", ""},   {"BEARER ", ""},
        {"BeArEr ", ""},   {"Bearer  ", ""},  {"Bearer\t", ""},
        {"  Bearer ", ""}, {"Bearer ", "  "}, {"\tBearer \t ", "\t"},
    };
    static const struct form bad[] = {
        {"", ""},
        {"Bearer", ""},
        {"Bearer: ", ""},
        {"Basic ", ""},
        {"Token ", ""},
        {"Bearerx ", ""},
        {"Bearer ", " extra"},
        {"Bearer ", " x.y.z"},
        {"B ", ""},
        {"Bearer ", "\n"},
        {"Bearer ", "\x01"},
        {"Bearer ", "\xc3\xa9"},
        {"Bearer \x7f", ""},
    };
    static const char *const bad_plain[] = {
        "", "Bearer", "Bearer ", "Bearer    ", " ", "bearer\t", "Basic dXNlcjpwYXNz",
    };
    char *t = user_token(USER), header[1024], err[256];
    jw_principal p;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(header, sizeof(header), "%s%s%s", good[i].pre, t, good[i].post);
        if (jw_auth_bearer(auth, header, NOW, &p, err, sizeof(err)) != 0)
            fail_msg("header form \"%s<token>%s\" refused: %s", good[i].pre, good[i].post, err);
        assert_int_equal(p.kind, JW_PRINCIPAL_USER);
        assert_string_equal(p.user_id, USER);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(header, sizeof(header), "%s%s%s", bad[i].pre, t, bad[i].post);
        p.kind = JW_PRINCIPAL_ADMIN;
        if (jw_auth_bearer(auth, header, NOW, &p, err, sizeof(err)) != JW_EAUTH)
            fail_msg("header form \"%s<token>%s\" accepted", bad[i].pre, bad[i].post);
        assert_int_equal(p.kind, JW_PRINCIPAL_NONE);
        assert_string_equal(err, "malformed Authorization header: expected 'Bearer <token>'");
        assert_no_token_text(err, t);
    }
    for (size_t i = 0; i < sizeof(bad_plain) / sizeof(bad_plain[0]); i++) {
        if (jw_auth_bearer(auth, bad_plain[i], NOW, &p, err, sizeof(err)) != JW_EAUTH)
            fail_msg("header \"%s\" accepted", bad_plain[i]);
        assert_string_equal(err, "malformed Authorization header: expected 'Bearer <token>'");
    }
    assert_int_equal(jw_auth_bearer(auth, NULL, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_string_equal(err, "no Authorization header: expected 'Bearer <token>'");
    /* The admin key travels the same way, in any scheme case. */
    assert_int_equal(jw_auth_bearer(auth, "bearer " ADMIN_KEY, NOW, &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, JW_PRINCIPAL_ADMIN);
    /* A zero-sized err buffer is allowed. */
    assert_int_equal(jw_auth_bearer(auth, "Basic x", NOW, &p, NULL, 0), JW_EAUTH);
    assert_int_equal(jw_auth_bearer(NULL, "Bearer x", NOW, &p, err, sizeof(err)), JW_EINVAL);
    assert_int_equal(jw_auth_token(auth, t, NOW, NULL, err, sizeof(err)), JW_EINVAL);
    assert_int_equal(jw_auth_token(auth, NULL, NOW, &p, err, sizeof(err)), JW_EAUTH);
    free(t);
}

static void test_may_access(void **state)
{
    jw_principal admin = {.kind = JW_PRINCIPAL_ADMIN};
    jw_principal user = {.kind = JW_PRINCIPAL_USER, .user_id = USER, .expires_at = NOW + HOUR};
    jw_principal none = {.kind = JW_PRINCIPAL_NONE, .user_id = USER};
    jw_principal broken = {.kind = JW_PRINCIPAL_USER, .user_id = ""};

    (void)state;
    assert_true(jw_principal_may_access(&admin, USER));
    assert_true(jw_principal_may_access(&admin, OTHER));
    assert_true(jw_principal_may_access(&admin, NULL));
    assert_true(jw_principal_may_access(&user, USER));
    assert_true(jw_principal_may_access(&user, "6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B"));
    assert_false(jw_principal_may_access(&user, OTHER));
    assert_false(jw_principal_may_access(&user, USER "0"));
    assert_false(jw_principal_may_access(&user, "6f1c2a3b"));
    assert_false(jw_principal_may_access(&user, ""));
    assert_false(jw_principal_may_access(&user, NULL));
    assert_false(jw_principal_may_access(&none, USER));
    assert_false(jw_principal_may_access(&broken, ""));
    assert_false(jw_principal_may_access(NULL, USER));
}

static void test_new_and_disabled_kinds(void **state)
{
    jw_auth *a = NULL;
    jw_principal p;
    char err[256], *t = user_token(USER);

    (void)state;
    assert_int_equal(jw_auth_new("short-admin", SECRET, &a, err, sizeof(err)), JW_EINVAL);
    assert_null(a);
    assert_null(strstr(err, "short-admin"));
    assert_int_equal(jw_auth_new(ADMIN_KEY, "", &a, err, sizeof(err)), JW_EINVAL);
    assert_int_equal(jw_auth_new(ADMIN_KEY, "short-secret", &a, err, sizeof(err)), JW_EINVAL);
    assert_null(strstr(err, "short-secret"));
    /* 16..31 bytes: what --dev allows (config.c refuses it otherwise); a warning is logged. */
    assert_int_equal(jw_auth_new(ADMIN_KEY, "dev-secret-0123456789", &a, err, sizeof(err)), 0);
    assert_non_null(a);
    jw_auth_free(a);
    a = NULL;

    /* No JWT secret: user tokens refused, the admin key works. */
    assert_int_equal(jw_auth_new(ADMIN_KEY, NULL, &a, err, sizeof(err)), 0);
    assert_int_equal(jw_auth_token(a, t, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_contains(err, "no JWT secret is configured");
    assert_int_equal(jw_auth_token(a, ADMIN_KEY, NOW, &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, JW_PRINCIPAL_ADMIN);
    jw_auth_free(a);

    /* No admin key: the old admin key is just a wrong token, user tokens work. */
    assert_int_equal(jw_auth_new(NULL, SECRET, &a, err, sizeof(err)), 0);
    assert_int_equal(jw_auth_token(a, ADMIN_KEY, NOW, &p, err, sizeof(err)), JW_EAUTH);
    assert_int_equal(p.kind, JW_PRINCIPAL_NONE);
    assert_int_equal(jw_auth_token(a, t, NOW, &p, err, sizeof(err)), 0);
    assert_int_equal(p.kind, JW_PRINCIPAL_USER);
    jw_auth_free(a);
    jw_auth_free(NULL);
    free(t);
}

static void test_mint(void **state)
{
    char *t = jw_auth_mint_hs256(SECRET, USER, NOW, NOW + HOUR);
    jwt_t *jwt = NULL;

    (void)state;
    assert_non_null(t);
    /* Verifiable by libjwt with the secret, as HS256, with the claims asked for. */
    assert_int_equal(jwt_decode(&jwt, t, (const unsigned char *)SECRET, strlen(SECRET)), 0);
    assert_int_equal(jwt_get_alg(jwt), JWT_ALG_HS256);
    assert_string_equal(jwt_get_grant(jwt, "sub"), USER);
    assert_int_equal(jwt_get_grant_int(jwt, "exp"), NOW + HOUR);
    assert_int_equal(jwt_get_grant_int(jwt, "iat"), NOW);
    jwt_free(jwt);
    free(t);
    assert_null(jw_auth_mint_hs256(NULL, USER, NOW, NOW + HOUR));
    assert_null(jw_auth_mint_hs256("", USER, NOW, NOW + HOUR));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_key_accepted),
        cmocka_unit_test(test_admin_key_wrong),
        cmocka_unit_test(test_user_token_accepted),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_missing_or_bad_exp),
        cmocka_unit_test(test_missing_or_bad_sub),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_signature_one_byte_differs),
        cmocka_unit_test_teardown(test_signature_decided_by_crypto_memcmp, reset_ct),
        cmocka_unit_test(test_signature_strict_base64url),
        cmocka_unit_test(test_audience_and_issuer),
        cmocka_unit_test(test_expect_arguments),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_other_hmac_algorithms),
        cmocka_unit_test(test_asymmetric_and_odd_headers),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_oversize_token),
        cmocka_unit_test(test_bearer_variants),
        cmocka_unit_test(test_may_access),
        cmocka_unit_test(test_new_and_disabled_kinds),
        cmocka_unit_test(test_mint),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
