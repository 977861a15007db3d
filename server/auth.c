/*
 * auth.c - the admin key and users' HS256 JWTs.
 *
 * Why the token is inspected before libjwt sees it
 *   libjwt 1.10's jwt_decode takes the algorithm from the token's own header
 *   and offers no way to pin it (jwt_decode_2 and jwt_valid arrived in later
 *   releases). With a key it refuses "alg":"none", but with a NULL or
 *   zero-length key it accepts an unsigned token; it matches "alg" with
 *   strcasecmp, so "hs256" and "None" count; HS384 and HS512 tokens verify
 *   with the same secret; and it checks no claim at all, exp included. So
 *   this file splits and decodes the token itself, refuses every header
 *   whose alg is not exactly "HS256" before any signature work, lets libjwt
 *   verify the HMAC, then checks alg once more on libjwt's result and
 *   enforces exp / nbf / iat / sub itself.
 *
 *   The claims are read from our own parse of the payload, which is the same
 *   bytes libjwt verified (the HMAC covers "header.payload" verbatim), parsed
 *   with duplicate keys refused so no two parsers can disagree on a claim.
 */
#include "auth.h"

#include "config.h"
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
#include <stdarg.h>
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

struct jw_auth {
    char *admin_key; /* NULL: admin principal disabled */
    size_t admin_len;
    char *jwt_secret; /* NULL: user tokens disabled */
    size_t jwt_len;
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return JW_EAUTH;
}

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
        fail(err, errlen, "jw_auth_new: out is NULL");
        return JW_EINVAL;
    }
    *out = NULL;
    if (admin_key && strlen(admin_key) < JW_MIN_SECRET_LEN) {
        fail(err, errlen, "the admin key must be at least %d characters", JW_MIN_SECRET_LEN);
        return JW_EINVAL;
    }
    /* libjwt takes an int key length. */
    if (jwt_secret && (strlen(jwt_secret) < JW_MIN_SECRET_LEN || strlen(jwt_secret) > INT_MAX)) {
        fail(err, errlen, "the JWT secret must be at least %d characters", JW_MIN_SECRET_LEN);
        return JW_EINVAL;
    }
    a = jw_xcalloc(1, sizeof(*a));
    if (admin_key)
        a->admin_key = copy_secret(admin_key, &a->admin_len);
    if (jwt_secret)
        a->jwt_secret = copy_secret(jwt_secret, &a->jwt_len);
    *out = a;
    return 0;
}

void jw_auth_free(jw_auth *a)
{
    if (!a)
        return;
    free_secret(a->admin_key, a->admin_len);
    free_secret(a->jwt_secret, a->jwt_len);
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

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Decodes n base64url characters (unpadded) into a new buffer; NULL if invalid. */
static uint8_t *b64url_decode(const char *s, size_t n, size_t *out_len)
{
    size_t pad = (4 - n % 4) % 4, padded = n + pad;
    char *in;
    uint8_t *out;
    int got;

    if (n == 0 || pad == 3 || padded > INT_MAX)
        return NULL;
    in = jw_xmalloc(padded + 1);
    for (size_t i = 0; i < n; i++)
        in[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    memset(in + n, '=', pad);
    in[padded] = '\0';
    out = jw_xmalloc(padded / 4 * 3);
    /* EVP_DecodeBlock counts the bytes that stand for '=' padding: drop them. */
    got = EVP_DecodeBlock(out, (const unsigned char *)in, (int)padded);
    free(in);
    if (got < 0 || (size_t)got < pad) {
        free(out);
        return NULL;
    }
    *out_len = (size_t)got - pad;
    return out;
}

/* A JSON object from one base64url part, duplicate keys refused; NULL otherwise. */
static json_t *decode_part(const char *s, size_t n)
{
    size_t len;
    uint8_t *raw = b64url_decode(s, n, &len);
    json_t *doc;

    if (!raw)
        return NULL;
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
        return fail(err, errlen, "token header has no alg (HS256 required)");
    if (!json_is_string(alg))
        return fail(err, errlen, "token algorithm is not a string (HS256 required)");
    if (strcmp(json_string_value(alg), "HS256") != 0)
        return fail(err, errlen, "token algorithm %s not accepted (HS256 only)",
                    quotable(json_string_value(alg)));
    /* libjwt refuses any typ but JWT too, with nothing but EINVAL to say why. */
    if (typ && !(json_is_string(typ) && strcasecmp(json_string_value(typ), "JWT") == 0))
        return fail(err, errlen, "token typ %s not accepted (JWT only)",
                    json_is_string(typ) ? quotable(json_string_value(typ)) : "(not a string)");
    if (json_object_get(header, "crit"))
        return fail(err, errlen, "token header lists crit extensions, which are not supported");
    return 0;
}

static int check_claims(const json_t *claims, int64_t now_s, jw_principal *out, char *err,
                        size_t errlen)
{
    const json_t *sub;
    int64_t exp, nbf, iat;
    char when[32];
    int r;

    r = time_claim(claims, "exp", &exp);
    if (r == 0)
        return fail(err, errlen, "token has no exp (an expiry time is required)");
    if (r < 0)
        return fail(err, errlen, "token exp is not a time in seconds since the epoch");
    if (now_s >= exp + JW_AUTH_LEEWAY_S) {
        format_time(exp, when);
        return fail(err, errlen, "token expired at %s", when);
    }
    r = time_claim(claims, "nbf", &nbf);
    if (r < 0)
        return fail(err, errlen, "token nbf is not a time in seconds since the epoch");
    if (r > 0 && nbf - JW_AUTH_LEEWAY_S > now_s) {
        format_time(nbf, when);
        return fail(err, errlen, "token not valid before %s", when);
    }
    r = time_claim(claims, "iat", &iat);
    if (r < 0)
        return fail(err, errlen, "token iat is not a time in seconds since the epoch");
    if (r > 0 && iat - JW_AUTH_LEEWAY_S > now_s) {
        format_time(iat, when);
        return fail(err, errlen, "token issued in the future (iat %s); check the clocks", when);
    }

    sub = json_object_get(claims, "sub");
    if (!sub)
        return fail(err, errlen, "token has no sub (the user id is required)");
    if (!json_is_string(sub) || !jw_uuid_valid(json_string_value(sub)))
        return fail(err, errlen, "token sub is not a UUID");

    out->kind = JW_PRINCIPAL_USER;
    for (int i = 0; i < JW_UUID_LEN; i++)
        out->user_id[i] = (char)tolower((unsigned char)json_string_value(sub)[i]);
    out->user_id[JW_UUID_LEN] = '\0';
    out->expires_at = exp;
    return 0;
}

/* token is NUL-terminated, n bytes, 0 < n <= JW_AUTH_MAX_TOKEN. */
static int verify_jwt(const jw_auth *a, const char *token, size_t n, int64_t now_s,
                      jw_principal *out, char *err, size_t errlen)
{
    const char *dot1 = NULL, *dot2 = NULL;
    json_t *header = NULL, *claims = NULL;
    jwt_t *jwt = NULL;
    bool shaped = true;
    int ret;

    /* Compact JWS: header.payload.signature, base64url only, header and payload non-empty. */
    for (size_t i = 0; i < n && shaped; i++) {
        if (token[i] != '.')
            shaped = is_b64url(token[i]);
        else if (!dot1)
            dot1 = token + i;
        else if (!dot2)
            dot2 = token + i;
        else
            shaped = false;
    }
    if (!shaped || !dot2 || dot1 == token || dot2 == dot1 + 1)
        return fail(err, errlen,
                    "token is neither the admin key nor a JWT (three base64url parts "
                    "separated by '.')");
    if (!a->jwt_secret)
        return fail(err, errlen, "user tokens are not accepted: no JWT secret is configured");

    header = decode_part(token, (size_t)(dot1 - token));
    if (!header) {
        ret = fail(err, errlen, "token header " NOT_AN_OBJECT);
        goto out;
    }
    ret = check_header(header, err, errlen);
    if (ret)
        goto out;
    if (dot2[1] == '\0') {
        ret = fail(err, errlen, "token has no signature");
        goto out;
    }
    claims = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!claims) {
        ret = fail(err, errlen, "token payload " NOT_AN_OBJECT);
        goto out;
    }

    ret = jwt_decode(&jwt, token, (const unsigned char *)a->jwt_secret, (int)a->jwt_len);
    if (ret == ENOMEM)
        jw_oom("JWT decode");
    if (ret != 0 || !jwt) {
        ret = fail(err, errlen, "token signature invalid");
        goto out;
    }
    /* Unreachable while the header check above holds; kept so the pin never rests on one test. */
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        ret = fail(err, errlen, "token algorithm not accepted (HS256 only)");
        goto out;
    }
    ret = check_claims(claims, now_s, out, err, errlen);
out:
    jwt_free(jwt);
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
        fail(err, errlen, "jw_auth_token: NULL argument");
        return JW_EINVAL;
    }
    if (!token)
        return fail(err, errlen, "no token given");
    /* The bound comes first: nothing below reads past it. */
    n = strnlen(token, JW_AUTH_MAX_TOKEN + 1);
    if (n > JW_AUTH_MAX_TOKEN)
        return fail(err, errlen, "token is longer than %d bytes", JW_AUTH_MAX_TOKEN);
    if (n == 0)
        return fail(err, errlen, "token is empty");

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
        fail(err, errlen, "jw_auth_bearer: NULL argument");
        return JW_EINVAL;
    }
    if (!p)
        return fail(err, errlen, "no Authorization header: " HEADER_HINT);
    if (strnlen(p, MAX_HEADER + 1) > MAX_HEADER)
        return fail(err, errlen, "Authorization header too long: token is longer than %d bytes",
                    JW_AUTH_MAX_TOKEN);

    while (is_ows(*p))
        p++;
    if (strncasecmp(p, "Bearer", 6) != 0 || !is_ows(p[6]))
        return fail(err, errlen, "malformed Authorization header: " HEADER_HINT);
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
        return fail(err, errlen, "malformed Authorization header: " HEADER_HINT);

    /* A NUL-terminated copy for libjwt; it is a credential, so it is wiped after. */
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
