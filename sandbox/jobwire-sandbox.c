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
 *   POST   /faults             {"step":"<name>"|"*","mode":"...","count":N,"delay_ms":M}
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
 */
#include "providers/sim.h"

#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 128
#define HEAD_MAX 8192
#define BODY_MAX (64 * 1024)
#define IN_MAX (HEAD_MAX + BODY_MAX)
#define IDLE_MS 60000
#define MAX_FAULTS 64
#define FAULT_COUNT_MAX 1000
#define FAULT_DELAY_MAX_MS 600000
#define HUGE_BODY (300 * 1024)

enum fault_mode { F_NONE, F_HTTP_500, F_TIMEOUT, F_SLOW, F_RESET, F_BAD_JSON, F_HUGE, F__COUNT };

static const char *const fault_names[F__COUNT] = {
    [F_NONE] = "none",   [F_HTTP_500] = "http_500", [F_TIMEOUT] = "timeout", [F_SLOW] = "slow",
    [F_RESET] = "reset", [F_BAD_JSON] = "bad_json", [F_HUGE] = "huge",
};

typedef struct fault {
    char step[JW_STEP_NAME_MAX]; /* a step name or "*" */
    enum fault_mode mode;
    int remaining;
    int delay_ms;
} fault;

enum conn_state {
    C_READ,  /* reading a request */
    C_HOLD,  /* a reply (or a close) waits for its time */
    C_WRITE, /* writing a reply */
};

typedef struct conn {
    int fd;
    enum conn_state state;
    char *in; /* IN_MAX bytes */
    size_t in_len;
    jw_buf out;
    size_t out_off;
    bool close_after;     /* close when the reply is written */
    bool hold_then_close; /* C_HOLD ends in a close, not a reply */
    bool continue_sent;   /* "100 Continue" already sent for this request */
    bool reset_pending;   /* a reset fault: close with RST, no reply */
    int64_t deadline_us;  /* C_HOLD: when it ends; C_READ: idle limit (monotonic) */
} conn;

typedef struct request {
    char method[16];
    char path[2048];
    char idem_key[JW_IDEMPOTENCY_KEY_MAX]; /* the Idempotency-Key header */
    bool has_idem_key;
    const char *body;
    size_t body_len;
    bool keep_alive;
} request;

static struct {
    jw_sim *sim;
    int listen_fd;
    conn *conns[MAX_CONNS];
    size_t nconns;
    fault faults[MAX_FAULTS];
    size_t nfaults;
} S;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* --- connections --------------------------------------------------------- */

static void conn_close(conn *c, bool reset)
{
    if (reset) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};

        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(c->fd);
    OPENSSL_cleanse(c->in, IN_MAX); /* request bodies carry OTPs */
    free(c->in);
    jw_buf_release(&c->out);
    for (size_t i = 0; i < S.nconns; i++) {
        if (S.conns[i] == c) {
            S.conns[i] = S.conns[--S.nconns];
            break;
        }
    }
    free(c);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    }
    return "Unknown";
}

/* Queues a reply; it goes out after delay_ms (0: now). */
static void respond_raw(conn *c, int status, const char *body, size_t len, bool keep_alive,
                        int delay_ms)
{
    jw_buf_reset(&c->out);
    c->out_off = 0;
    jw_buf_addf(&c->out,
                "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                "Connection: %s\r\n\r\n",
                status, reason_phrase(status), len, keep_alive ? "keep-alive" : "close");
    jw_buf_add(&c->out, body, len);
    c->close_after = !keep_alive;
    if (delay_ms > 0) {
        c->state = C_HOLD;
        c->hold_then_close = false;
        c->deadline_us = jw_mono_us() + (int64_t)delay_ms * 1000;
    } else {
        c->state = C_WRITE;
    }
}

static void respond_json(conn *c, int status, json_t *doc, bool keep_alive, int delay_ms)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    size_t len;

    if (!text)
        jw_oom("a sandbox reply");
    len = strlen(text);
    text = jw_xrealloc(text, len + 2);
    text[len++] = '\n';
    text[len] = '\0';
    respond_raw(c, status, text, len, keep_alive, delay_ms);
    free(text);
    json_decref(doc);
}

/* The admin endpoints' error shape, as jobwire's API: {"error":{code,message}}. */
static void respond_error(conn *c, int status, const char *code, bool keep_alive, const char *fmt,
                          ...) __attribute__((format(printf, 5, 6)));

static void respond_error(conn *c, int status, const char *code, bool keep_alive, const char *fmt,
                          ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    respond_json(c, status, json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg),
                 keep_alive, 0);
}

/* A /steps error in the contract's shape, so the provider can quote it. */
static void respond_step_error(conn *c, int status, bool retryable, bool keep_alive,
                               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void respond_step_error(conn *c, int status, bool retryable, bool keep_alive,
                               const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    respond_json(
        c, status,
        json_pack("{s:s, s:b, s:s}", "status", "error", "retryable", retryable, "message", msg),
        keep_alive, 0);
}

/* --- faults -------------------------------------------------------------- */

/* Takes one use of the first armed fault matching step; F_NONE when none. */
static fault take_fault(const char *step)
{
    fault none = {.mode = F_NONE};

    for (size_t i = 0; i < S.nfaults; i++) {
        fault *f = &S.faults[i];

        if (strcmp(f->step, "*") != 0 && strcmp(f->step, step) != 0)
            continue;
        none = *f;
        if (--f->remaining == 0) {
            memmove(f, f + 1, (S.nfaults - i - 1) * sizeof(*f));
            S.nfaults--;
        }
        return none;
    }
    return none;
}

static json_t *faults_json(void)
{
    json_t *a = json_array();

    for (size_t i = 0; i < S.nfaults; i++)
        json_array_append_new(a,
                              json_pack("{s:s, s:s, s:i, s:i}", "step", S.faults[i].step, "mode",
                                        fault_names[S.faults[i].mode], "count",
                                        S.faults[i].remaining, "delay_ms", S.faults[i].delay_ms));
    return a;
}

static bool step_name_ok(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && n < JW_STEP_NAME_MAX && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static void h_faults_post(conn *c, const request *r)
{
    json_error_t jerr;
    json_t *body = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    const char *step = NULL, *mode = NULL;
    json_int_t count = 1, delay = -1;
    fault f = {0};

    if (!body) {
        respond_error(c, 400, "bad_json", r->keep_alive, "the body is not JSON: %s", jerr.text);
        return;
    }
    if (json_unpack_ex(body, &jerr, JSON_STRICT, "{s:s, s:s, s?I, s?I}", "step", &step, "mode",
                       &mode, "count", &count, "delay_ms", &delay) != 0) {
        respond_error(c, 400, "bad_fault", r->keep_alive,
                      "expected {\"step\":\"<name>\"|\"*\",\"mode\":\"http_500|timeout|slow|reset|"
                      "bad_json|huge\",\"count\":N,\"delay_ms\":M}: %s",
                      jerr.text);
        goto out;
    }
    if (strcmp(step, "*") != 0 && !step_name_ok(step)) {
        respond_error(c, 400, "bad_fault", r->keep_alive,
                      "step must be \"*\" or a step name of a-z 0-9 _");
        goto out;
    }
    for (int m = F_HTTP_500; m < F__COUNT; m++)
        if (strcmp(mode, fault_names[m]) == 0)
            f.mode = (enum fault_mode)m;
    if (f.mode == F_NONE) {
        respond_error(c, 400, "bad_fault", r->keep_alive,
                      "mode must be http_500, timeout, slow, reset, bad_json or huge");
        goto out;
    }
    if (count < 1 || count > FAULT_COUNT_MAX) {
        respond_error(c, 400, "bad_fault", r->keep_alive, "count must be 1..%d (got %lld)",
                      FAULT_COUNT_MAX, (long long)count);
        goto out;
    }
    if (delay == -1)
        delay = f.mode == F_TIMEOUT ? 30000 : f.mode == F_SLOW ? 1000 : 0;
    if (delay < 0 || delay > FAULT_DELAY_MAX_MS) {
        respond_error(c, 400, "bad_fault", r->keep_alive, "delay_ms must be 0..%d (got %lld)",
                      FAULT_DELAY_MAX_MS, (long long)delay);
        goto out;
    }
    if (S.nfaults == MAX_FAULTS) {
        respond_error(c, 409, "too_many_faults", r->keep_alive,
                      "%d faults are armed already; DELETE /faults first", MAX_FAULTS);
        goto out;
    }
    snprintf(f.step, sizeof(f.step), "%s", step);
    f.remaining = (int)count;
    f.delay_ms = (int)delay;
    S.faults[S.nfaults++] = f;
    jw_log_info("sandbox: armed fault step=%s mode=%s count=%d delay_ms=%d", f.step,
                fault_names[f.mode], f.remaining, f.delay_ms);
    respond_json(c, 200, json_pack("{s:o}", "faults", faults_json()), r->keep_alive, 0);
out:
    json_decref(body);
}

static void h_faults_get(conn *c, const request *r)
{
    respond_json(c, 200, json_pack("{s:o}", "faults", faults_json()), r->keep_alive, 0);
}

static void h_faults_delete(conn *c, const request *r)
{
    S.nfaults = 0;
    jw_log_info("sandbox: faults cleared");
    respond_json(c, 200, json_pack("{s:o}", "faults", faults_json()), r->keep_alive, 0);
}

static void h_charges(conn *c, const request *r)
{
    respond_json(c, 200, jw_sim_charges_json(S.sim), r->keep_alive, 0);
}

static void h_inbox(conn *c, const request *r)
{
    respond_json(c, 200, jw_sim_inbox_json(S.sim), r->keep_alive, 0);
}

static void h_healthz(conn *c, const request *r)
{
    respond_json(c, 200, json_pack("{s:s}", "status", "ok"), r->keep_alive, 0);
}

/* --- steps --------------------------------------------------------------- */

static void respond_huge(conn *c, bool keep_alive)
{
    static const char head[] = "{\"status\":\"ok\",\"data\":{\"pad\":\"";
    static const char tail[] = "\"}}";
    char *body = jw_xmalloc(HUGE_BODY);
    size_t pad = HUGE_BODY - (sizeof(head) - 1) - (sizeof(tail) - 1);

    memcpy(body, head, sizeof(head) - 1);
    memset(body + sizeof(head) - 1, 'x', pad);
    memcpy(body + sizeof(head) - 1 + pad, tail, sizeof(tail) - 1);
    respond_raw(c, 200, body, HUGE_BODY, keep_alive, 0);
    free(body);
}

static void h_step(conn *c, const request *r)
{
    const char *step = r->path + strlen("/steps/");
    const jw_sim_config *cfg = jw_sim_config_of(S.sim);
    jw_provider_call *call = NULL;
    jw_provider_reply *reply;
    json_error_t jerr;
    json_t *body = NULL, *otp;
    char err[256];
    fault f;
    int delay;

    if (!step_name_ok(step)) {
        respond_step_error(c, 404, false, r->keep_alive,
                           "no such step: step names are 1..%d characters of a-z 0-9 _",
                           JW_STEP_NAME_MAX - 1);
        return;
    }
    f = take_fault(step);
    if (f.mode != F_NONE)
        jw_log_info("sandbox: POST /steps/%s: injecting %s", step, fault_names[f.mode]);
    switch (f.mode) {
    case F_RESET:
        c->reset_pending = true; /* the loop resets it once the handler is done */
        return;
    case F_HTTP_500:
        respond_step_error(c, 500, true, r->keep_alive, "sandbox: injected HTTP 500");
        return;
    case F_BAD_JSON: respond_raw(c, 200, "this is not JSON\n", 17, r->keep_alive, 0); return;
    case F_HUGE: respond_huge(c, r->keep_alive); return;
    default: break;
    }
    body = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        jw_log_info("sandbox: POST /steps/%s refused: the body is not JSON", step);
        respond_step_error(c, 400, false, r->keep_alive, "the request body is not JSON: %s",
                           jerr.text);
        return;
    }
    if (jw_sim_call_from_json(body, step, &call, err, sizeof(err)) != 0) {
        jw_log_info("sandbox: POST /steps/%s refused: %s", step, err);
        respond_step_error(c, 400, false, r->keep_alive, "%s", err);
        goto out;
    }
    /* The key travels twice; a client that sends both must send the same. */
    if (call->idempotency_key[0] &&
        (!r->has_idem_key || strcmp(r->idem_key, call->idempotency_key) != 0)) {
        respond_step_error(c, 400, false, r->keep_alive,
                           "the Idempotency-Key header must equal the body's idempotency_key");
        goto out;
    }
    reply = jw_sim_handle(S.sim, call, jw_now_us());
    jw_log_info("sandbox: POST /steps/%s job=%s step=%s attempt=%d%s", step, call->job_id,
                call->step_id, call->attempt, f.mode == F_TIMEOUT ? " (reply withheld)" : "");
    delay = cfg->latency_ms + (f.mode == F_SLOW || f.mode == F_TIMEOUT ? f.delay_ms : 0);
    respond_json(c, 200, jw_provider_reply_to_json(reply), r->keep_alive, delay);
    jw_provider_reply_free(reply);
    if (f.mode == F_TIMEOUT) {
        c->state = C_HOLD;
        c->hold_then_close = true;
        c->deadline_us = jw_mono_us() + (int64_t)delay * 1000;
    }
out:
    otp = json_object_get(body, "otp");
    if (json_is_string(otp))
        OPENSSL_cleanse((char *)json_string_value(otp), json_string_length(otp));
    json_decref(body);
    jw_provider_call_free(call);
}

/* --- HTTP/1.1 ------------------------------------------------------------ */

typedef void (*handler_fn)(conn *c, const request *r);

/* The routes; the zeroed row ends the table. */
static const struct route {
    const char *method;
    const char *path;
    bool prefix;
    handler_fn fn;
} routes[] = {
    {.method = "POST", .path = "/steps/", .prefix = true, .fn = h_step},
    {.method = "GET", .path = "/charges", .fn = h_charges},
    {.method = "GET", .path = "/inbox", .fn = h_inbox},
    {.method = "GET", .path = "/faults", .fn = h_faults_get},
    {.method = "POST", .path = "/faults", .fn = h_faults_post},
    {.method = "DELETE", .path = "/faults", .fn = h_faults_delete},
    {.method = "GET", .path = "/healthz", .fn = h_healthz},
    {0},
};

static void dispatch(conn *c, const request *r)
{
    bool path_known = false;

    for (const struct route *rt = routes; rt->method; rt++) {
        bool match = rt->prefix ? strncmp(r->path, rt->path, strlen(rt->path)) == 0
                                : strcmp(r->path, rt->path) == 0;

        if (!match)
            continue;
        path_known = true;
        if (strcmp(r->method, rt->method) == 0) {
            rt->fn(c, r);
            return;
        }
    }
    if (path_known)
        respond_error(c, 405, "method_not_allowed", r->keep_alive, "%s is not allowed on %s",
                      r->method, r->path);
    else
        respond_error(c, 404, "not_found", r->keep_alive,
                      "no such endpoint (see jobwire-sandbox --help)");
}

/* Case-insensitive "name:" at the start of a header line; returns the trimmed value. */
static const char *header_value(const char *line, const char *name)
{
    size_t n = strlen(name);

    if (strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    line += n + 1;
    while (*line == ' ' || *line == '\t')
        line++;
    return line;
}

/*
 * Parses the head (NUL-terminated, without the blank line). Returns 0, or an
 * HTTP status to refuse the request with (the connection then closes), with
 * why in msg.
 */
static int parse_head(char *head, request *r, size_t *content_length, bool *expect_continue,
                      char *msg, size_t msglen)
{
    char *line, *save = NULL, *sp1, *sp2, *q;
    bool http10, have_length = false;

    *content_length = 0;
    *expect_continue = false;
    line = strtok_r(head, "\r\n", &save);
    if (!line)
        return snprintf(msg, msglen, "empty request"), 400;
    sp1 = strchr(line, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || (size_t)(sp1 - line) >= sizeof(r->method) ||
        (size_t)(sp2 - sp1 - 1) >= sizeof(r->path) || sp1[1] != '/')
        return snprintf(msg, msglen, "malformed request line"), 400;
    memcpy(r->method, line, (size_t)(sp1 - line));
    r->method[sp1 - line] = '\0';
    memcpy(r->path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    r->path[sp2 - sp1 - 1] = '\0';
    q = strchr(r->path, '?');
    if (q)
        *q = '\0';
    if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
        http10 = false;
    else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
        http10 = true;
    else
        return snprintf(msg, msglen, "only HTTP/1.0 and HTTP/1.1 are served"), 400;
    r->keep_alive = !http10;
    while ((line = strtok_r(NULL, "\r\n", &save))) {
        const char *v;

        if ((v = header_value(line, "Content-Length"))) {
            char *end;
            unsigned long long n;

            errno = 0;
            n = strtoull(v, &end, 10);
            if (!isdigit((unsigned char)*v) || *end || errno ||
                (have_length && n != *content_length))
                return snprintf(msg, msglen, "malformed Content-Length"), 400;
            if (n > BODY_MAX)
                return snprintf(msg, msglen, "the body is %llu bytes (limit %d)", n, BODY_MAX), 413;
            *content_length = (size_t)n;
            have_length = true;
        } else if ((v = header_value(line, "Transfer-Encoding"))) {
            return snprintf(msg, msglen, "chunked bodies are not supported; send Content-Length"),
                   501;
        } else if ((v = header_value(line, "Connection"))) {
            if (strcasecmp(v, "close") == 0)
                r->keep_alive = false;
            else if (strcasecmp(v, "keep-alive") == 0)
                r->keep_alive = true;
        } else if ((v = header_value(line, "Idempotency-Key"))) {
            if (strlen(v) >= sizeof(r->idem_key))
                return snprintf(msg, msglen, "Idempotency-Key is longer than %zu bytes",
                                sizeof(r->idem_key) - 1),
                       400;
            snprintf(r->idem_key, sizeof(r->idem_key), "%s", v);
            r->has_idem_key = true;
        } else if ((v = header_value(line, "Expect"))) {
            *expect_continue = strcasecmp(v, "100-continue") == 0;
        }
    }
    return 0;
}

/* Consumes the first n input bytes, wiping them: they may hold an OTP. */
static void consume(conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    OPENSSL_cleanse(c->in + c->in_len - n, n);
    c->in_len -= n;
}

/*
 * Handles one complete request if the buffer holds one: on return c may be
 * writing or holding a reply, or marked reset_pending. Returns true when a
 * request was handled.
 */
static bool try_request(conn *c)
{
    char head[HEAD_MAX + 1];
    char msg[160];
    char *end;
    size_t head_len, content_length;
    bool expect_continue;
    request r;
    int status;

    memset(&r, 0, sizeof(r));
    end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in_len <= HEAD_MAX)
            return false;
        respond_error(c, 431, "headers_too_large", false, "the request head exceeds %d bytes",
                      HEAD_MAX);
        consume(c, c->in_len);
        return true;
    }
    head_len = (size_t)(end - c->in) + 4;
    if (head_len > HEAD_MAX) {
        respond_error(c, 431, "headers_too_large", false, "the request head exceeds %d bytes",
                      HEAD_MAX);
        consume(c, c->in_len);
        return true;
    }
    memcpy(head, c->in, head_len - 4);
    head[head_len - 4] = '\0';
    status = parse_head(head, &r, &content_length, &expect_continue, msg, sizeof(msg));
    if (status) {
        respond_error(c, status, "bad_request", false, "%s", msg);
        consume(c, c->in_len);
        return true;
    }
    if (c->in_len < head_len + content_length) {
        if (expect_continue && !c->continue_sent) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

            /* Best effort: a client that misses it sends the body after its wait. */
            (void)!send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
            c->continue_sent = true;
        }
        return false;
    }
    r.body = c->in + head_len;
    r.body_len = content_length;
    c->continue_sent = false;
    dispatch(c, &r);
    consume(c, head_len + content_length);
    return true;
}

/* --- the loop ------------------------------------------------------------ */

static void conn_new(int fd)
{
    conn *c;
    int one = 1;

    if (S.nconns == MAX_CONNS) {
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = jw_xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->in = jw_xmalloc(IN_MAX);
    jw_buf_init(&c->out, 1024);
    c->state = C_READ;
    c->deadline_us = jw_mono_us() + (int64_t)IDLE_MS * 1000;
    S.conns[S.nconns++] = c;
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(S.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                jw_log_warn("sandbox: accept failed: %s", strerror(errno));
            return;
        }
        conn_new(fd);
    }
}

/*
 * Runs the requests the buffer holds until one leaves c holding or writing.
 * Returns false when c was closed.
 */
static bool serve(conn *c)
{
    while (c->state == C_READ && try_request(c)) {
        if (c->reset_pending) {
            conn_close(c, true);
            return false;
        }
    }
    return true;
}

/* Returns false when c was closed. */
static bool on_readable(conn *c)
{
    for (;;) {
        ssize_t n;

        if (c->in_len == IN_MAX)
            break; /* full: try_request refuses it */
        n = recv(c->fd, c->in + c->in_len, IN_MAX - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_close(c, false);
            return false;
        }
        if (errno == EINTR)
            continue;
        break;
    }
    c->deadline_us = jw_mono_us() + (int64_t)IDLE_MS * 1000;
    return serve(c);
}

/* Returns false when c was closed. */
static bool on_writable(conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            conn_close(c, false);
            return false;
        }
        c->out_off += (size_t)n;
    }
    if (c->close_after) {
        conn_close(c, false);
        return false;
    }
    jw_buf_reset(&c->out);
    c->out_off = 0;
    c->state = C_READ;
    c->deadline_us = jw_mono_us() + (int64_t)IDLE_MS * 1000;
    return serve(c); /* a pipelined request may be waiting */
}

/* Ends holds and idle connections that are due. */
static void run_deadlines(int64_t now)
{
    for (size_t i = 0; i < S.nconns;) {
        conn *c = S.conns[i];

        if (c->deadline_us > now) {
            i++;
            continue;
        }
        if (c->state == C_HOLD && !c->hold_then_close) {
            c->state = C_WRITE;
            if (on_writable(c))
                i++;
            continue; /* a closed c was replaced by the last one at i */
        }
        if (c->state == C_HOLD)
            jw_log_info("sandbox: timeout fault: closing the connection without a reply");
        if (c->state != C_WRITE) {
            conn_close(c, false);
            continue;
        }
        i++;
    }
}

static void run(void)
{
    struct pollfd fds[MAX_CONNS + 1];
    conn *polled[MAX_CONNS];

    while (!stop_requested) {
        int64_t now = jw_mono_us(), next = now + 1000 * 1000;
        size_t n = 0, npolled;
        int timeout_ms, rc;

        fds[n++] = (struct pollfd){.fd = S.listen_fd, .events = S.nconns < MAX_CONNS ? POLLIN : 0};
        for (size_t i = 0; i < S.nconns; i++) {
            conn *c = S.conns[i];
            short ev = c->state == C_READ ? POLLIN : c->state == C_WRITE ? POLLOUT : POLLRDHUP;

            polled[i] = c;
            fds[n++] = (struct pollfd){.fd = c->fd, .events = ev};
            if (c->state != C_WRITE && c->deadline_us < next)
                next = c->deadline_us;
        }
        npolled = S.nconns;
        timeout_ms = next <= now ? 0 : (int)((next - now + 999) / 1000);
        rc = poll(fds, n, timeout_ms);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            jw_log_error("sandbox: poll failed: %s", strerror(errno));
            break;
        }
        if (fds[0].revents & POLLIN)
            on_accept();
        for (size_t i = 0; i < npolled; i++) {
            conn *c = polled[i];
            short re = fds[i + 1].revents;

            if (!re)
                continue;
            if (c->state == C_HOLD) {
                /* The client gave up (its timeout): nothing left to answer. */
                if (re & (POLLRDHUP | POLLHUP | POLLERR))
                    conn_close(c, false);
            } else if (re & (POLLERR | POLLNVAL)) {
                conn_close(c, false);
            } else if (c->state == C_READ && (re & (POLLIN | POLLHUP))) {
                on_readable(c);
            } else if (c->state == C_WRITE && (re & POLLOUT)) {
                on_writable(c);
            } else if (re & POLLHUP) {
                conn_close(c, false);
            }
        }
        run_deadlines(jw_mono_us());
    }
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
            "reset|bad_json|huge\",\"count\":N,\"delay_ms\":M}\n"
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
            return snprintf(err, errlen, "--listen: expected [::1]:PORT (got '%s')", v), -1;
        memcpy(host, v + 1, (size_t)(close_br - v - 1));
        host[close_br - v - 1] = '\0';
        port_s = close_br + 2;
    } else {
        colon = strrchr(v, ':');
        if (!colon || (size_t)(colon - v) >= sizeof(host))
            return snprintf(err, errlen, "--listen: expected 127.0.0.1:PORT (got '%s')", v), -1;
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
        port_s = colon + 1;
    }
    errno = 0;
    port = strtol(port_s, &end, 10);
    if (!isdigit((unsigned char)*port_s) || *end || errno || port < 0 || port > 65535)
        return snprintf(err, errlen, "--listen: the port must be 0..65535 (got '%s')", port_s), -1;
    if (v[0] == '[') {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1 || !IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
            return snprintf(err, errlen, "--listen: only loopback addresses (::1) are served"), -1;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;

        if (inet_pton(AF_INET, host, &a->sin_addr) != 1 || (ntohl(a->sin_addr.s_addr) >> 24) != 127)
            return snprintf(err, errlen,
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

static void print_listening(void)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];
    int port;

    getsockname(S.listen_fd, (struct sockaddr *)&ss, &len);
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
    char err[512];

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
    S.listen_fd = open_listener(&ss, ss_len);
    if (S.listen_fd < 0) {
        fprintf(stderr, "jobwire-sandbox: cannot listen on %s: %s\n", listen_arg, strerror(errno));
        return 1;
    }
    S.sim = jw_sim_new(&cfg);
    print_listening();
    run();
    jw_log_info("sandbox: stopping");
    while (S.nconns)
        conn_close(S.conns[0], false);
    close(S.listen_fd);
    jw_sim_free(S.sim);
    return 0;
}
