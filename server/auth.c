/*
 * auth.c - the admin key and users' HS256 JWTs.
 *
 * Why this file verifies tokens itself
 *   libjwt 1.10's jwt_decode takes the algorithm from the token's own header
 *   and offers no way to pin it (jwt_decode_2 and jwt_valid arrived in later
 *   releases). With a key it refuses "alg":"none", but with a NULL or
 *   zero-length key it accepts an unsigned token; it matches "alg" with
 *   strcasecmp, so "hs256" and "None" count; HS384 and HS512 tokens verify
 *   with the same secret; it checks no claim at all, exp included; and it
 *   compares the signature it computed with the token's using strcmp() on
 *   the base64url text, whose running time shows how many leading
 *   characters a forgery got right.
 *
 *   So libjwt verifies nothing here. This file splits the token, refuses
 *   every header whose alg is not exactly "HS256" before any signature work,
 *   computes HMAC-SHA256 over the signing input ("header.payload", the bytes
 *   as sent) with OpenSSL, and compares it with the decoded signature with
 *   CRYPTO_memcmp, which takes the same time whatever the bytes. Only then is
 *   the payload parsed, by jansson with duplicate keys refused, and the
 *   claims checked (exp / nbf / iat / sub, and aud / iss when configured).
 *   One parser reads the claims, the one whose bytes the HMAC covered, so two
 *   parsers can never disagree on what a token says; libjwt would have been a
 *   second parse of the same text for no gain.
 *
 *   libjwt is still used to mint tokens (jw_auth_mint_hs256, for tests and
 *   dev tooling): tokens made by another implementation are what the tests
 *   verify, so the two cross-check each other.
 *
 * base64url is decoded strictly: the alphabet A-Z a-z 0-9 - _, no padding,
 * no length of 1 mod 4, and no stray bits in the last character, so one
 * byte string has exactly one accepted encoding.
 */
#include "auth.h"

#include "jw_crypto.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_util.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* "Bearer", whitespace around it and the token: room for a few stray spaces. */
#define MAX_HEADER (JW_AUTH_MAX_TOKEN + 64)
/* NumericDates past 9999-12-31T23:59:59Z are refused (and cannot overflow). */
#define MAX_NUMERIC_DATE INT64_C(253402300799)
#define HEADER_HINT "expected 'Bearer <token>'"
#define NOT_AN_OBJECT "is not a JSON object (base64url, no duplicate keys)"
/* HMAC-SHA256: 32 bytes, 43 base64url characters without padding. */
#define HS256_LEN 32
#define HS256_B64_LEN 43

struct jw_auth {
    char *admin_key; /* NULL: admin principal disabled */
    size_t admin_len;
    char *jwt_secret; /* NULL: user tokens disabled */
    size_t jwt_len;
    char *audience; /* NULL: aud is not checked */
    char *issuer;   /* NULL: iss is not checked */
};

static char *copy_secret(const char *s, size_t *len)
{
    *len = strlen(s);
    return jw_xstrdup(s);
}

static void free_secret(char *s, size_t len)
{
    jw_secure_free(s, len + 1);
}

int jw_auth_new(const char *admin_key, const char *jwt_secret, jw_auth **out, char *err,
                size_t errlen)
{
    jw_auth *a;

    if (!out) {
        jw_errorf(err, errlen, JW_EAUTH, "jw_auth_new: out is NULL");
        return JW_EINVAL;
    }
    *out = NULL;
    if (admin_key && strlen(admin_key) < JW_MIN_SECRET_LEN) {
        jw_errorf(err, errlen, JW_EAUTH, "the admin key must be at least %d characters",
                  JW_MIN_SECRET_LEN);
        return JW_EINVAL;
    }
    /* libjwt takes an int key length. */
    if (jwt_secret && (strlen(jwt_secret) < JW_MIN_SECRET_LEN || strlen(jwt_secret) > INT_MAX)) {
        jw_errorf(err, errlen, JW_EAUTH, "the JWT secret must be at least %d characters",
                  JW_MIN_SECRET_LEN);
        return JW_EINVAL;
    }
    a = jw_xcalloc(1, sizeof(*a));
    if (admin_key)
        a->admin_key = copy_secret(admin_key, &a->admin_len);
    if (jwt_secret) {
        a->jwt_secret = copy_secret(jwt_secret, &a->jwt_len);
        /* config.c has refused this outside --dev; in dev mode it only deserves a word. */
        if (a->jwt_len < JW_MIN_JWT_SECRET_LEN)
            jw_log_warn("auth: the JWT secret is shorter than %d bytes, which only --dev allows; "
                        "generate one with: openssl rand -hex 32",
                        JW_MIN_JWT_SECRET_LEN);
    }
    *out = a;
    return 0;
}

/* A value for aud or iss: 1..JW_AUTH_MAX_CLAIM bytes, no control characters. */
static bool claim_text_valid(const char *v)
{
    size_t n = strnlen(v, JW_AUTH_MAX_CLAIM + 1);

    if (n == 0 || n > JW_AUTH_MAX_CLAIM)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return false;
    return true;
}

int jw_auth_expect(jw_auth *a, const char *audience, const char *issuer, char *err, size_t errlen)
{
    if (!a) {
        jw_errorf(err, errlen, JW_EAUTH, "jw_auth_expect: a is NULL");
        return JW_EINVAL;
    }
    if ((audience && !claim_text_valid(audience)) || (issuer && !claim_text_valid(issuer))) {
        jw_errorf(
            err, errlen, JW_EAUTH, "the JWT %s must be 1..%d characters without control characters",
            audience && !claim_text_valid(audience) ? "audience" : "issuer", JW_AUTH_MAX_CLAIM);
        return JW_EINVAL;
    }
    free(a->audience);
    free(a->issuer);
    a->audience = audience ? jw_xstrdup(audience) : NULL;
    a->issuer = issuer ? jw_xstrdup(issuer) : NULL;
    return 0;
}

void jw_auth_free(jw_auth *a)
{
    if (!a)
        return;
    free_secret(a->admin_key, a->admin_len);
    free_secret(a->jwt_secret, a->jwt_len);
    free(a->audience);
    free(a->issuer);
    OPENSSL_cleanse(a, sizeof(*a));
    free(a);
}

static void principal_clear(jw_principal *p)
{
    memset(p, 0, sizeof(*p));
    p->kind = JW_PRINCIPAL_NONE;
}

/* "2026-01-01T00:00:00Z"; t is within 0..MAX_NUMERIC_DATE. */
static void format_time(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!gmtime_r(&tt, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "%lld", (long long)t);
}

/*
 * A header value taken from the token, made safe to quote in an error: short
 * and of plain characters, or a placeholder. Never the token's own text.
 */
static const char *quotable(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        if (n >= 16 || !(isalnum((unsigned char)s[n]) || strchr("+-._", s[n])))
            return "(unrecognised)";
    }
    return n ? s : "(empty)";
}

/* The 6-bit value of a base64url character, or -1. */
static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

static bool is_b64url(char c)
{
    return b64url_value(c) >= 0;
}

/* Bytes that n base64url characters stand for. */
static size_t b64url_decoded_len(size_t n)
{
    return n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
}

/*
 * Decodes n unpadded base64url characters into out, which has room for
 * b64url_decoded_len(n) bytes. False for any character outside the
 * alphabet, a length of 1 mod 4, or set bits in the last character's unused
 * low bits (a second spelling of the same bytes).
 */
static bool b64url_decode(const char *s, size_t n, uint8_t *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t w = 0;

    if (n % 4 == 1)
        return false;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value(s[i]);

        if (v < 0)
            return false;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[w++] = (uint8_t)(acc >> bits);
            acc &= (UINT32_C(1) << bits) - 1;
        }
    }
    return acc == 0;
}

/* A JSON object from one base64url part, duplicate keys refused; NULL otherwise. */
static json_t *decode_part(const char *s, size_t n)
{
    size_t len = b64url_decoded_len(n);
    uint8_t *raw = jw_xmalloc(len + 1);
    json_t *doc = NULL;

    if (b64url_decode(s, n, raw))
        doc = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (doc && !json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/*
 * Reads a NumericDate claim. Returns 1 with *v set, 0 when absent, -1 when it
 * is not a number in 0..MAX_NUMERIC_DATE (fractions are truncated).
 */
static int time_claim(const json_t *claims, const char *name, int64_t *v)
{
    const json_t *j = json_object_get(claims, name);
    double d;

    if (!j)
        return 0;
    if (json_is_integer(j)) {
        json_int_t i = json_integer_value(j);

        if (i < 0 || i > MAX_NUMERIC_DATE)
            return -1;
        *v = (int64_t)i;
        return 1;
    }
    if (!json_is_real(j))
        return -1;
    d = json_real_value(j);
    if (!isfinite(d) || d < 0 || d > (double)MAX_NUMERIC_DATE)
        return -1;
    *v = (int64_t)d;
    return 1;
}

static int check_header(const json_t *header, char *err, size_t errlen)
{
    const json_t *alg = json_object_get(header, "alg");
    const json_t *typ = json_object_get(header, "typ");

    if (!alg)
        return jw_errorf(err, errlen, JW_EAUTH, "token header has no alg (HS256 required)");
    if (!json_is_string(alg))
        return jw_errorf(err, errlen, JW_EAUTH, "token algorithm is not a string (HS256 required)");
    if (strcmp(json_string_value(alg), "HS256") != 0)
        return jw_errorf(err, errlen, JW_EAUTH, "token algorithm %s not accepted (HS256 only)",
                         quotable(json_string_value(alg)));
    /* libjwt refuses any typ but JWT too, with nothing but EINVAL to say why. */
    if (typ && !(json_is_string(typ) && strcasecmp(json_string_value(typ), "JWT") == 0))
        return jw_errorf(err, errlen, JW_EAUTH, "token typ %s not accepted (JWT only)",
                         json_is_string(typ) ? quotable(json_string_value(typ)) : "(not a string)");
    if (json_object_get(header, "crit"))
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token header lists crit extensions, which are not supported");
    return 0;
}

/* Is j a JSON string of exactly the bytes of want? (jansson strings may hold NULs.) */
static bool string_is(const json_t *j, const char *want)
{
    size_t n = strlen(want);

    return json_is_string(j) && json_string_length(j) == n &&
           memcmp(json_string_value(j), want, n) == 0;
}

/*
 * iss and aud, when the server is configured to require them (RFC 7519 4.1.1
 * and 4.1.3): exact, case-sensitive matches. aud may be one string or an
 * array of strings one of which must match; an array holding anything but
 * strings is malformed and refused. The messages never quote the claim.
 */
static int check_aud_iss(const jw_auth *a, const json_t *claims, char *err, size_t errlen)
{
    const json_t *iss = json_object_get(claims, "iss");
    const json_t *aud = json_object_get(claims, "aud");
    const json_t *v;
    bool found = false;
    size_t i;

    if (a->issuer) {
        if (!iss)
            return jw_errorf(err, errlen, JW_EAUTH,
                             "token has no iss (this server requires its issuer)");
        if (!json_is_string(iss))
            return jw_errorf(err, errlen, JW_EAUTH, "token iss is not a string");
        if (!string_is(iss, a->issuer))
            return jw_errorf(err, errlen, JW_EAUTH,
                             "token iss is not the issuer this server accepts");
    }
    if (!a->audience)
        return 0;
    if (!aud)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token has no aud (this server requires its audience)");
    if (json_is_string(aud)) {
        found = string_is(aud, a->audience);
    } else if (json_is_array(aud)) {
        json_array_foreach(aud, i, v)
        {
            if (!json_is_string(v))
                return jw_errorf(err, errlen, JW_EAUTH,
                                 "token aud is not a string or an array of strings");
            found = found || string_is(v, a->audience);
        }
    } else {
        return jw_errorf(err, errlen, JW_EAUTH, "token aud is not a string or an array of strings");
    }
    if (!found)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token aud does not include the audience this server accepts");
    return 0;
}

static int check_claims(const jw_auth *a, const json_t *claims, int64_t now_s, jw_principal *out,
                        char *err, size_t errlen)
{
    const json_t *sub;
    int64_t exp, nbf, iat;
    char when[32];
    int r;

    r = time_claim(claims, "exp", &exp);
    if (r == 0)
        return jw_errorf(err, errlen, JW_EAUTH, "token has no exp (an expiry time is required)");
    if (r < 0)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token exp is not a time in seconds since the epoch");
    if (now_s >= exp + JW_AUTH_LEEWAY_S) {
        format_time(exp, when);
        return jw_errorf(err, errlen, JW_EAUTH, "token expired at %s", when);
    }
    r = time_claim(claims, "nbf", &nbf);
    if (r < 0)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token nbf is not a time in seconds since the epoch");
    if (r > 0 && nbf - JW_AUTH_LEEWAY_S > now_s) {
        format_time(nbf, when);
        return jw_errorf(err, errlen, JW_EAUTH, "token not valid before %s", when);
    }
    r = time_claim(claims, "iat", &iat);
    if (r < 0)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token iat is not a time in seconds since the epoch");
    if (r > 0 && iat - JW_AUTH_LEEWAY_S > now_s) {
        format_time(iat, when);
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token issued in the future (iat %s); check the clocks", when);
    }
    r = check_aud_iss(a, claims, err, errlen);
    if (r)
        return r;

    sub = json_object_get(claims, "sub");
    if (!sub)
        return jw_errorf(err, errlen, JW_EAUTH, "token has no sub (the user id is required)");
    if (!json_is_string(sub) || !jw_uuid_valid(json_string_value(sub)))
        return jw_errorf(err, errlen, JW_EAUTH, "token sub is not a UUID");

    out->kind = JW_PRINCIPAL_USER;
    for (int i = 0; i < JW_UUID_LEN; i++)
        out->user_id[i] = (char)tolower((unsigned char)json_string_value(sub)[i]);
    out->user_id[JW_UUID_LEN] = '\0';
    out->expires_at = exp;
    return 0;
}

/*
 * The signature part, sig_len base64url characters followed by pad '='
 * characters, against HMAC-SHA256(secret, input). The format checks only
 * look at the token; the comparison is CRYPTO_memcmp over all 32 bytes, so
 * its time does not depend on where a forged signature first differs.
 */
static int check_signature(const jw_auth *a, const char *input, size_t input_len, const char *sig,
                           size_t sig_len, size_t pad, char *err, size_t errlen)
{
    uint8_t given[HS256_LEN], mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    int ret;

    if (sig_len == 0 && pad == 0)
        return jw_errorf(err, errlen, JW_EAUTH, "token has no signature");
    if (pad)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token signature ends in '=' padding; a JWT is base64url without padding");
    if (sig_len != HS256_B64_LEN)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token signature is %zu characters; an HS256 signature is %d (%d bytes in "
                         "base64url)",
                         sig_len, HS256_B64_LEN, HS256_LEN);
    if (!b64url_decode(sig, sig_len, given))
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token signature is not canonical base64url (its last character has stray "
                         "bits)");
    if (!HMAC(EVP_sha256(), a->jwt_secret, (int)a->jwt_len, (const unsigned char *)input, input_len,
              mac, &mac_len) ||
        mac_len != HS256_LEN) {
        jw_log_error("auth: HMAC-SHA256 failed; the token is refused");
        return jw_errorf(err, errlen, JW_EAUTH, "token signature could not be checked");
    }
    ret = CRYPTO_memcmp(mac, given, HS256_LEN) == 0
              ? 0
              : jw_errorf(err, errlen, JW_EAUTH, "token signature invalid");
    OPENSSL_cleanse(mac, sizeof(mac));
    return ret;
}

/* token is NUL-terminated, n bytes, 0 < n <= JW_AUTH_MAX_TOKEN. */
static int verify_jwt(const jw_auth *a, const char *token, size_t n, int64_t now_s,
                      jw_principal *out, char *err, size_t errlen)
{
    const char *dot1 = NULL, *dot2 = NULL, *sig;
    json_t *header = NULL, *claims = NULL;
    size_t pad = 0;
    bool shaped = true;
    int ret;

    /*
     * Compact JWS: header.payload.signature, base64url only, header and
     * payload non-empty. '=' is let through at the very end of the signature
     * only, so that padding gets its own message below.
     */
    for (size_t i = 0; i < n && shaped; i++) {
        if (token[i] == '.') {
            if (!dot1)
                dot1 = token + i;
            else if (!dot2)
                dot2 = token + i;
            else
                shaped = false;
        } else if (dot2 && token[i] == '=') {
            pad++;
        } else {
            shaped = pad == 0 && is_b64url(token[i]);
        }
    }
    if (!shaped || !dot2 || dot1 == token || dot2 == dot1 + 1)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "token is neither the admin key nor a JWT (three base64url parts "
                         "separated by '.')");
    if (!a->jwt_secret)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "user tokens are not accepted: no JWT secret is configured");

    /* The algorithm is pinned before any signature work. */
    header = decode_part(token, (size_t)(dot1 - token));
    if (!header) {
        ret = jw_errorf(err, errlen, JW_EAUTH, "token header " NOT_AN_OBJECT);
        goto out;
    }
    ret = check_header(header, err, errlen);
    if (ret)
        goto out;
    sig = dot2 + 1;
    ret = check_signature(a, token, (size_t)(dot2 - token), sig, n - (size_t)(sig - token) - pad,
                          pad, err, errlen);
    if (ret)
        goto out;
    /* Only bytes the HMAC vouched for reach the JSON parser from here on. */
    claims = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!claims) {
        ret = jw_errorf(err, errlen, JW_EAUTH, "token payload " NOT_AN_OBJECT);
        goto out;
    }
    ret = check_claims(a, claims, now_s, out, err, errlen);
out:
    json_decref(header);
    json_decref(claims);
    return ret;
}

int jw_auth_token(const jw_auth *a, const char *token, int64_t now_s, jw_principal *out, char *err,
                  size_t errlen)
{
    size_t n;

    if (out)
        principal_clear(out);
    if (!a || !out) {
        jw_errorf(err, errlen, JW_EAUTH, "jw_auth_token: NULL argument");
        return JW_EINVAL;
    }
    if (!token)
        return jw_errorf(err, errlen, JW_EAUTH, "no token given");
    /* The bound comes first: nothing below reads past it. */
    n = strnlen(token, JW_AUTH_MAX_TOKEN + 1);
    if (n > JW_AUTH_MAX_TOKEN)
        return jw_errorf(err, errlen, JW_EAUTH, "token is longer than %d bytes", JW_AUTH_MAX_TOKEN);
    if (n == 0)
        return jw_errorf(err, errlen, JW_EAUTH, "token is empty");

    if (a->admin_key && jw_ct_equal(token, n, a->admin_key, a->admin_len)) {
        out->kind = JW_PRINCIPAL_ADMIN;
        return 0;
    }
    /* out is only written once every check has passed, so a refusal leaves it NONE. */
    return verify_jwt(a, token, n, now_s, out, err, errlen);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int jw_auth_bearer(const jw_auth *a, const char *authorization_header, int64_t now_s,
                   jw_principal *out, char *err, size_t errlen)
{
    const char *p = authorization_header, *tok;
    size_t len;
    char *copy;
    int ret;

    if (out)
        principal_clear(out);
    if (!a || !out) {
        jw_errorf(err, errlen, JW_EAUTH, "jw_auth_bearer: NULL argument");
        return JW_EINVAL;
    }
    if (!p)
        return jw_errorf(err, errlen, JW_EAUTH, "no Authorization header: " HEADER_HINT);
    if (strnlen(p, MAX_HEADER + 1) > MAX_HEADER)
        return jw_errorf(err, errlen, JW_EAUTH,
                         "Authorization header too long: token is longer than %d bytes",
                         JW_AUTH_MAX_TOKEN);

    while (is_ows(*p))
        p++;
    if (strncasecmp(p, "Bearer", 6) != 0 || !is_ows(p[6]))
        return jw_errorf(err, errlen, JW_EAUTH, "malformed Authorization header: " HEADER_HINT);
    p += 6;
    while (is_ows(*p))
        p++;
    tok = p;
    /* Visible ASCII only: token68 is narrower, but an admin key may use any of these. */
    while ((unsigned char)*p > ' ' && (unsigned char)*p < 0x7f)
        p++;
    len = (size_t)(p - tok);
    while (is_ows(*p))
        p++;
    if (len == 0 || *p)
        return jw_errorf(err, errlen, JW_EAUTH, "malformed Authorization header: " HEADER_HINT);

    /* A NUL-terminated copy for jw_auth_token; it is a credential, so it is wiped after. */
    copy = jw_xmalloc(len + 1);
    memcpy(copy, tok, len);
    copy[len] = '\0';
    ret = jw_auth_token(a, copy, now_s, out, err, errlen);
    jw_secure_free(copy, len + 1);
    return ret;
}

bool jw_principal_may_access(const jw_principal *p, const char *owner_user_id)
{
    if (!p)
        return false;
    switch (p->kind) {
    case JW_PRINCIPAL_ADMIN: return true;
    case JW_PRINCIPAL_USER:
        return jw_uuid_valid(owner_user_id) && jw_uuid_valid(p->user_id) &&
               strncasecmp(p->user_id, owner_user_id, JW_UUID_LEN) == 0;
    case JW_PRINCIPAL_NONE: break;
    }
    return false;
}

char *jw_auth_mint_hs256(const char *secret, const char *sub, int64_t iat, int64_t exp)
{
    jwt_t *jwt = NULL;
    char *token = NULL;
    size_t n;

    if (!secret || (n = strlen(secret)) == 0 || n > INT_MAX)
        return NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if ((sub && jwt_add_grant(jwt, "sub", sub) != 0) ||
        (iat && jwt_add_grant_int(jwt, "iat", (long)iat) != 0) ||
        (exp && jwt_add_grant_int(jwt, "exp", (long)exp) != 0) ||
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)n) != 0)
        goto out;
    token = jwt_encode_str(jwt);
out:
    jwt_free(jwt); /* libjwt zeroes its copy of the key */
    return token;
}
