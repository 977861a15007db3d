/*
 * jobwire-sandbox - the sim provider (engine/providers/sim.h) served over
 * HTTP on a loopback address, with fault injection, for testing the http
 * provider and for trying jobwire against a "remote" provider.
 *
 *   POST   /steps/<step_name>  contract request -> contract reply (200);
 *                              a malformed request, or an Idempotency-Key
 *                              header that differs from the body's key (or
 *                              is missing when the body has one) -> 400 with
 *                              a contract error reply
 *   GET    /charges            {"<key>":{"charges","calls","amount",...},...}
 *   GET    /inbox              the simulated SMS, oldest first
 *   GET    /faults             the armed faults
 *   POST   /faults             {"step":"<name>"|"*","mode":"...","count":N,"delay_ms":M,
 *                              "job":"<job id>"?,"first_call":true?} (job: only that
 *                              job's calls match; first_call: only a key's first call)
 *   DELETE /faults             disarms them all
 *   GET    /healthz            {"status":"ok"}
 *
 * Fault modes, applied to the next `count` matching /steps requests:
 *   http_500  answer 500 with a retryable error reply; the sim never sees it
 *   timeout   the sim performs the call, the answer is withheld: the
 *             connection is closed after delay_ms (default 30000) without
 *             a reply - the lost-reply case idempotency keys exist for
 *   slow      the sim performs the call; the answer goes out delay_ms
 *             (default 1000) late
 *   reset     the connection is reset (SO_LINGER 0) without a reply; the sim
 *             never sees the request
 *   bad_json  200 with a body that is not JSON; the sim never sees it
 *   huge      200 with a 300 KiB body; the sim never sees it
 *
 * Why not libwebsockets: the faults need exact control of each socket
 * (hold a request, answer late, reset without a reply), which is plain code
 * over a socket and awkward under lws. This is one poll() loop with
 * HTTP/1.1 keep-alive, Content-Length bodies only, and bounded sizes; it is
 * a test tool, not a general server. Single-threaded: the sim core needs no
 * locks.
 *
 * This file starts it; sandbox_http.c serves, sandbox_routes.c answers
 * (sandbox.h).
 */
#include "sandbox.h"

#include "jw_error.h"
#include "jw_log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* --- start-up ------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: jobwire-sandbox [--listen 127.0.0.1:PORT] [--sim SPEC] [--log-level LEVEL]\n"
            "\n"
            "Serves jobwire's sim provider over HTTP for tests, with fault injection.\n"
            "\n"
            "  --listen ADDR:PORT  loopback address to listen on: 127.x.x.x:PORT or [::1]:PORT\n"
            "                      (default 127.0.0.1:9090; PORT 0 picks a free port)\n"
            "  --sim SPEC          the sim's behaviour, the same spec as jobwire's:\n"
            "                      %s\n"
            "  --log-level LEVEL   error, warn, info (default) or debug\n"
            "  -h, --help          this text\n"
            "\n"
            "Endpoints:\n"
            "  POST   /steps/<step>  a provider call (the contract of docs/providers.md)\n"
            "  GET    /charges       charges and calls per idempotency key\n"
            "  GET    /inbox         the simulated SMS with their codes\n"
            "  GET    /faults        armed faults\n"
            "  POST   /faults        {\"step\":\"<step>\"|\"*\",\"mode\":\"http_500|timeout|slow|"
            "reset|bad_json|huge\",\"count\":N,\"delay_ms\":M,\"job\":\"<job id>\"}\n"
            "  DELETE /faults        disarm all faults\n"
            "  GET    /healthz       {\"status\":\"ok\"}\n"
            "\n"
            "Prints \"listening on http://ADDR:PORT\" on stderr when ready; SIGTERM or SIGINT "
            "stop it.\n"
            "Exit status: 0 after a signal, 1 when it cannot listen, 2 for a usage error.\n",
            JW_SIM_SPEC_HELP);
}

/* Parses a loopback ADDR:PORT into ss; returns 0 or -1 with why in err. */
static int parse_listen(const char *v, struct sockaddr_storage *ss, socklen_t *len, char *err,
                        size_t errlen)
{
    char host[64];
    const char *colon, *port_s;
    char *end;
    long port;

    memset(ss, 0, sizeof(*ss));
    if (v[0] == '[') {
        const char *close_br = strchr(v, ']');

        if (!close_br || close_br[1] != ':' || (size_t)(close_br - v - 1) >= sizeof(host))
            return jw_errorf(err, errlen, -1, "--listen: expected [::1]:PORT (got '%s')", v);
        memcpy(host, v + 1, (size_t)(close_br - v - 1));
        host[close_br - v - 1] = '\0';
        port_s = close_br + 2;
    } else {
        colon = strrchr(v, ':');
        if (!colon || (size_t)(colon - v) >= sizeof(host))
            return jw_errorf(err, errlen, -1, "--listen: expected 127.0.0.1:PORT (got '%s')", v);
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
        port_s = colon + 1;
    }
    errno = 0;
    port = strtol(port_s, &end, 10);
    if (!isdigit((unsigned char)*port_s) || *end || errno || port < 0 || port > 65535)
        return jw_errorf(err, errlen, -1, "--listen: the port must be 0..65535 (got '%s')", port_s);
    if (v[0] == '[') {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1 || !IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
            return jw_errorf(err, errlen, -1, "--listen: only loopback addresses (::1) are served");
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;

        if (inet_pton(AF_INET, host, &a->sin_addr) != 1 || (ntohl(a->sin_addr.s_addr) >> 24) != 127)
            return jw_errorf(err, errlen, -1,
                             "--listen: only loopback addresses (127.x.x.x, [::1]) are served "
                             "(got '%s')",
                             host),
                   -1;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *len = sizeof(*a);
    }
    return 0;
}

static int open_listener(const struct sockaddr_storage *ss, socklen_t len)
{
    int one = 1;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 64) < 0) {
        int saved = errno;

        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static void print_listening(int listen_fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];
    int port;

    getsockname(listen_fd, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        fprintf(stderr, "listening on http://[%s]:%d\n", host, port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        fprintf(stderr, "listening on http://%s:%d\n", host, port);
    }
    fflush(stderr);
}

static int install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL))
        return -1;
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL);
}

int main(int argc, char **argv)
{
    const char *listen_arg = "127.0.0.1:9090", *spec = NULL;
    struct sockaddr_storage ss;
    socklen_t ss_len = 0;
    jw_sim_config cfg;
    jw_sim *sim;
    char err[512];
    int listen_fd;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--listen") != 0 && strcmp(a, "--sim") != 0 &&
            strcmp(a, "--log-level") != 0) {
            fprintf(stderr, "jobwire-sandbox: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "jobwire-sandbox: %s needs a value (see --help)\n", a);
            return 2;
        }
        if (strcmp(a, "--listen") == 0) {
            listen_arg = argv[++i];
        } else if (strcmp(a, "--sim") == 0) {
            spec = argv[++i];
        } else {
            int level = jw_log_parse_level(argv[++i]);

            if (level < 0) {
                fprintf(stderr,
                        "jobwire-sandbox: --log-level must be error, warn, info or debug\n");
                return 2;
            }
            jw_log_set_level(level);
        }
    }
    if (parse_listen(listen_arg, &ss, &ss_len, err, sizeof(err)) < 0 ||
        jw_sim_config_parse(&cfg, spec, err, sizeof(err)) != 0) {
        fprintf(stderr, "jobwire-sandbox: %s\n", err);
        return 2;
    }
    if (install_signals() < 0) {
        fprintf(stderr, "jobwire-sandbox: cannot install signal handlers: %s\n", strerror(errno));
        return 1;
    }
    listen_fd = open_listener(&ss, ss_len);
    if (listen_fd < 0) {
        fprintf(stderr, "jobwire-sandbox: cannot listen on %s: %s\n", listen_arg, strerror(errno));
        return 1;
    }
    sim = jw_sim_new(&cfg);
    sandbox__routes_init(sim);
    print_listening(listen_fd);
    sandbox__run(listen_fd, &stop_requested);
    jw_log_info("sandbox: stopping");
    sandbox__close_all();
    close(listen_fd);
    jw_sim_free(sim);
    return 0;
}
