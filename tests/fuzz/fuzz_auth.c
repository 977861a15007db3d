/*
 * fuzz_auth.c - bearer credentials (server/auth.c): jw_auth_token (a ?token=
 * or a WebSocket auth message) and jw_auth_bearer (the Authorization header).
 *
 * A fuzzer cannot forge an HMAC, so a raw token never gets past the
 * signature check. The signed modes let it write the JWT's header and claims
 * as JSON; the driver base64url-encodes them and signs them with the server's
 * secret, which is what reaches the alg pin and the exp/nbf/iat/sub checks.
 *
 * Input: one mode byte, then
 *   0  the token, as given to jw_auth_token
 *   1  the Authorization header value, as given to jw_auth_bearer
 *   2  header JSON, a NUL byte, claims JSON: signed, then jw_auth_token
 *   3  as 2, then presented as "Bearer <token>" to jw_auth_bearer
 *
 * Oracles besides the sanitizers: a refusal returns JW_EAUTH with a message
 * and leaves the principal NONE; an accepted user has a lower-case UUID and a
 * token that has not expired (leeway included); a message never quotes
 * either secret.
 */
#include "auth.h"
#include "jw_error.h"
#include "jw_util.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ADMIN_KEY "fuzz-admin-key-0123456789abcdef-0123456789"
#define JWT_SECRET "fuzz-jwt-secret-0123456789abcdef-0123456789"
#define NOW INT64_C(1767225600) /* 2026-01-01T00:00:00Z */

static jw_auth *auth;

static void check(int ok)
{
    if (!ok)
        abort();
}

static char *b64url(const uint8_t *p, size_t n, char *w)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);

        *w++ = abc[v >> 18 & 63];
        *w++ = abc[v >> 12 & 63];
        if (i + 1 < n)
            *w++ = abc[v >> 6 & 63];
        if (i + 2 < n)
            *w++ = abc[v & 63];
    }
    return w;
}

/* header.claims.signature, HS256 with JWT_SECRET; malloc'd. */
static char *sign(const uint8_t *hdr, size_t hn, const uint8_t *cl, size_t cn)
{
    char *tok = malloc(2 * (hn + cn) + 128), *w = tok;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;

    check(tok != NULL);
    w = b64url(hdr, hn, w);
    *w++ = '.';
    w = b64url(cl, cn, w);
    check(HMAC(EVP_sha256(), JWT_SECRET, (int)strlen(JWT_SECRET), (const unsigned char *)tok,
               (size_t)(w - tok), mac, &mac_len) != NULL);
    *w++ = '.';
    w = b64url(mac, mac_len, w);
    *w = '\0';
    return tok;
}

static void check_outcome(int rc, const jw_principal *who, const char *err)
{
    if (rc != 0) {
        check(rc == JW_EAUTH);
        check(who->kind == JW_PRINCIPAL_NONE && who->user_id[0] == '\0');
        check(err[0] != '\0');
        check(strstr(err, ADMIN_KEY) == NULL && strstr(err, JWT_SECRET) == NULL);
        return;
    }
    check(who->kind == JW_PRINCIPAL_ADMIN || who->kind == JW_PRINCIPAL_USER);
    if (who->kind == JW_PRINCIPAL_USER) {
        check(jw_uuid_valid(who->user_id));
        for (const char *c = who->user_id; *c; c++)
            check(!(*c >= 'A' && *c <= 'F'));
        check(NOW < who->expires_at + JW_AUTH_LEEWAY_S);
        check(jw_principal_may_access(who, who->user_id));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jw_principal who, who2;
    char err[256], err2[256];
    char *s, *hdr;
    const uint8_t *nul;
    int mode, rc, rc2;

    if (!auth && jw_auth_new(ADMIN_KEY, JWT_SECRET, &auth, err, sizeof(err)) != 0)
        abort();
    if (size < 1 || size > 3 * JW_AUTH_MAX_TOKEN)
        return 0;
    mode = data[0] & 3;
    data++;
    size--;
    err[0] = err2[0] = '\0';

    switch (mode) {
    case 0:
    case 1:
        s = malloc(size + 1);
        check(s != NULL);
        memcpy(s, data, size);
        s[size] = '\0';
        if (mode == 0)
            rc = jw_auth_token(auth, s, NOW, &who, err, sizeof(err));
        else
            rc = jw_auth_bearer(auth, s, NOW, &who, err, sizeof(err));
        check_outcome(rc, &who, err);
        free(s);
        break;
    default:
        nul = memchr(data, '\0', size);
        if (!nul)
            return 0;
        s = sign(data, (size_t)(nul - data), nul + 1, size - (size_t)(nul - data) - 1);
        rc = jw_auth_token(auth, s, NOW, &who, err, sizeof(err));
        check_outcome(rc, &who, err);
        if (mode == 3) {
            hdr = malloc(strlen(s) + 16);
            check(hdr != NULL);
            strcpy(hdr, "bearer \t");
            strcat(hdr, s);
            strcat(hdr, " ");
            rc2 = jw_auth_bearer(auth, hdr, NOW, &who2, err2, sizeof(err2));
            check_outcome(rc2, &who2, err2);
            /* The header form must decide exactly as the bare token does. */
            check(rc2 == rc && who2.kind == who.kind && strcmp(who2.user_id, who.user_id) == 0 &&
                  who2.expires_at == who.expires_at);
            free(hdr);
        }
        free(s);
        break;
    }
    return 0;
}
