/*
 * auth.h - who is calling: the admin key or a user's JWT.
 *
 * What it does
 *   Every API call and WebSocket connection presents one bearer credential,
 *   either in an "Authorization: Bearer <token>" header (jw_auth_bearer) or
 *   some other way, a ?token= query or a {"type":"auth"} message
 *   (jw_auth_token). The credential is one of two things:
 *
 *   - the admin key (JOBWIRE_ADMIN_KEY): the ADMIN principal, which may act
 *     on every job. It is compared in constant time with jw_ct_equal, which
 *     hashes both sides, so neither a guess's prefix nor its length shows in
 *     the timing.
 *   - a user's JWT signed with JOBWIRE_JWT_SECRET: a USER principal whose
 *     user_id is the token's sub, which may act on its own jobs only.
 *
 * The JWT rules (what is accepted, and why)
 *   - Compact JWS: three base64url parts (no padding) separated by '.'.
 *   - Header: a JSON object whose "alg" is exactly "HS256" (case-sensitive,
 *     as RFC 7515 says). "none", HS384, HS512, RS256, ES256, "hs256" and
 *     anything else is refused before the signature is looked at: pinning the
 *     algorithm is what stops alg-confusion attacks, and libjwt 1.10 does not
 *     pin it (see auth.c). "typ", when present, must be "JWT"; a "crit"
 *     header is refused (we implement no extensions). Duplicate keys are
 *     refused.
 *   - Signature: exactly 43 base64url characters (32 bytes; no '=' padding,
 *     no stray bits in the last character), equal to HMAC-SHA256 of the
 *     signing input "header.payload" under the JWT secret. auth.c computes
 *     the HMAC with OpenSSL and compares with CRYPTO_memcmp (constant time);
 *     libjwt verifies nothing. The payload is parsed only once the signature
 *     has matched.
 *   - Claims (a JSON object, duplicate keys refused):
 *       exp  required, a number; refused once now >= exp + JW_AUTH_LEEWAY_S.
 *       nbf  optional; refused while now < nbf - JW_AUTH_LEEWAY_S.
 *       iat  optional; refused when iat > now + JW_AUTH_LEEWAY_S (issued in
 *            the future: a clock far off, or a forged token).
 *       iss  when an issuer is configured (jw_auth_expect): required, a
 *            string equal to it byte for byte; otherwise ignored.
 *       aud  when an audience is configured: required, a string equal to it,
 *            or an array of strings one of which is; otherwise ignored.
 *       sub  required, a UUID string; becomes user_id, in lower case.
 *     Other claims (role, ...) are ignored.
 *   The leeway absorbs clock skew between the token issuer and this server.
 *
 * Errors
 *   Every refusal returns JW_EAUTH with a message in err for the client:
 *   what was wrong ("token expired at 2026-01-01T00:00:00Z", "token algorithm
 *   RS256 not accepted (HS256 only)", "token has no sub", ...). A message
 *   never contains the token or any part of it, nor a secret. The HTTP layer
 *   answers 401 with it; the caller must not log the token either.
 *
 * Ownership
 *   jw_auth_new copies both secrets, and jw_auth_expect its strings; the
 *   caller may wipe its own copies.
 *   jw_auth_free overwrites the copies (OPENSSL_cleanse) before freeing them.
 *   Strings passed in are borrowed for the call only.
 *
 * Threads
 *   A jw_auth is immutable once set up (jw_auth_new, then jw_auth_expect),
 *   and every other function here is pure apart from allocation: any thread
 *   may call them, concurrently, on the same jw_auth. new, expect and free
 *   run on the main thread, at start-up before the jw_auth is shared and at
 *   shutdown.
 */
#ifndef JW_AUTH_H
#define JW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest token accepted, in bytes; longer ones are refused unparsed. */
#define JW_AUTH_MAX_TOKEN 8192
/* Clock skew tolerated on exp, nbf and iat, in seconds. */
#define JW_AUTH_LEEWAY_S 30
/* Longest audience or issuer that jw_auth_expect takes, in bytes. */
#define JW_AUTH_MAX_CLAIM 256
/* Shortest admin key, and JWT secret in dev mode (config.c checks both too). */
#define JW_MIN_SECRET_LEN 16
/* The JWT secret outside dev mode: an HS256 key as long as its hash (RFC 7518 3.2). */
#define JW_MIN_JWT_SECRET_LEN 32

typedef enum {
    JW_PRINCIPAL_NONE, /* not authenticated (what a failed call leaves in out) */
    JW_PRINCIPAL_ADMIN,
    JW_PRINCIPAL_USER,
} jw_principal_kind;

typedef struct jw_principal {
    jw_principal_kind kind;
    char user_id[37];   /* USER: the token's sub, lower-case UUID; "" otherwise */
    int64_t expires_at; /* USER: the token's exp, unix seconds; 0 for admin */
} jw_principal;

typedef struct jw_auth jw_auth;

/*
 * Creates the authenticator. admin_key enables the admin principal,
 * jwt_secret enables user tokens; either may be NULL (dev mode without that
 * secret), and then that kind of credential is always refused. A given
 * secret must have at least JW_MIN_SECRET_LEN characters. A JWT
 * secret shorter than JW_MIN_JWT_SECRET_LEN (32 bytes, the size of an
 * HS256 key, RFC 7518 3.2) is accepted with a warning in the log: config.c
 * refuses one outside --dev, so only dev mode gets that far.
 *
 * Returns 0 with *out set (free it with jw_auth_free), or JW_EINVAL with a
 * message in err that names the setting but never shows its value.
 */
int jw_auth_new(const char *admin_key, const char *jwt_secret, jw_auth **out, char *err,
                size_t errlen);

/*
 * Makes user tokens carry an audience and an issuer: when audience is not
 * NULL a token's aud must name it, when issuer is not NULL its iss must be
 * it (the rules above); NULL leaves that claim unchecked, as after
 * jw_auth_new. Each string must be 1..JW_AUTH_MAX_CLAIM bytes without
 * control characters. Call it on the main thread before a is shared;
 * calling it again replaces both.
 *
 * Returns 0, or JW_EINVAL with a message in err (a is then unchanged).
 */
int jw_auth_expect(jw_auth *a, const char *audience, const char *issuer, char *err, size_t errlen);

/* Wipes the secrets and frees a. NULL-safe. */
void jw_auth_free(jw_auth *a);

/*
 * Authenticates an Authorization header value. The scheme "Bearer" matches
 * in any case; spaces or tabs around the scheme and the token are tolerated
 * (RFC 7235 allows 1*SP between them), anything else is malformed: a missing
 * or other scheme, no token, a space inside the token, a token byte that is
 * not visible ASCII (0x21..0x7e). A header longer than a
 * token of JW_AUTH_MAX_TOKEN bytes plus the scheme and a little whitespace is
 * refused before it is parsed. authorization_header may be NULL (no header).
 *
 * now_s is the current wall-clock time in unix seconds (a parameter so tests
 * can pin it). On success returns 0 and fills *out. On failure returns
 * JW_EAUTH (or JW_EINVAL when a or out is NULL), sets out->kind to
 * JW_PRINCIPAL_NONE and writes the reason to err (errlen may be 0).
 */
int jw_auth_bearer(const jw_auth *a, const char *authorization_header, int64_t now_s,
                   jw_principal *out, char *err, size_t errlen);

/*
 * Authenticates a bare token (from ?token= or a WebSocket auth message):
 * the admin key, or a JWT under the rules above. A token longer than
 * JW_AUTH_MAX_TOKEN bytes is refused before it is parsed. Returns and
 * reports like jw_auth_bearer.
 */
int jw_auth_token(const jw_auth *a, const char *token, int64_t now_s, jw_principal *out, char *err,
                  size_t errlen);

/*
 * May p act on a job owned by owner_user_id? The admin always may; a user
 * only when owner_user_id is a valid UUID equal to its own (case-insensitive);
 * a NULL or NONE principal never.
 */
bool jw_principal_may_access(const jw_principal *p, const char *owner_user_id);

/*
 * Mints an HS256 JWT {"sub":sub,"iat":iat,"exp":exp} signed with secret, for
 * tests and dev tooling (scripts/run prints a demo user's token). A NULL sub
 * or a zero iat / exp leaves that claim out, so tests can build incomplete
 * tokens. Returns a malloc'd NUL-terminated token (free() it), or NULL when
 * secret is NULL or empty or libjwt fails. The token is a credential: do not
 * log it.
 */
char *jw_auth_mint_hs256(const char *secret, const char *sub, int64_t iat, int64_t exp);

#endif
