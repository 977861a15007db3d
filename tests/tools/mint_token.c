/*
 * mint_token.c - jw-mint-token: prints a user's HS256 JWT for tests and dev
 * tooling, minted by jw_auth_mint_hs256 (server/auth.h), the same code the
 * server's own tests trust.
 *
 * Usage: jw-mint-token SECRET SUB [TTL_SECONDS]
 *
 *   SECRET       the JWT secret (JOBWIRE_JWT_SECRET of the server)
 *   SUB          the user id (a UUID; not checked here, so tests can mint
 *                tokens the server must refuse)
 *   TTL_SECONDS  lifetime, default 3600. A negative TTL mints a token that
 *                expired |TTL| seconds ago (iat one minute before its exp),
 *                for tests of expiry; the server tolerates JW_AUTH_LEEWAY_S
 *                (30 s) of skew, so use -120 or less for a refused token.
 *
 * Prints the token and a newline on stdout. Exit status: 0 ok, 1 minting
 * failed, 2 usage error. The token is a credential: nothing else is printed.
 */
#include "auth.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int usage(void)
{
    fprintf(stderr, "usage: jw-mint-token SECRET SUB [TTL_SECONDS]\n"
                    "  prints an HS256 JWT {sub, iat, exp=now+TTL} signed with SECRET;\n"
                    "  TTL defaults to 3600; a negative TTL mints an expired token\n");
    return 2;
}

int main(int argc, char **argv)
{
    long long ttl = 3600;
    int64_t now, iat, exp;
    char *token;

    if (argc < 3 || argc > 4 || !argv[1][0] || !argv[2][0])
        return usage();
    if (argc == 4) {
        char *end;

        errno = 0;
        ttl = strtoll(argv[3], &end, 10);
        if (!argv[3][0] || *end || errno || ttl == 0 || ttl > 100LL * 365 * 86400 ||
            ttl < -100LL * 365 * 86400) {
            fprintf(stderr,
                    "jw-mint-token: TTL_SECONDS must be a non-zero whole number of "
                    "seconds (got '%s')\n",
                    argv[3]);
            return 2;
        }
    }
    now = (int64_t)time(NULL);
    exp = now + ttl;
    iat = ttl > 0 ? now : exp - 60;
    token = jw_auth_mint_hs256(argv[1], argv[2], iat, exp);
    if (!token) {
        fprintf(stderr, "jw-mint-token: could not mint a token\n");
        return 1;
    }
    printf("%s\n", token);
    free(token);
    return 0;
}
