/*
 * sandbox_http.c - jobwire-sandbox's HTTP/1.1 serving: one poll() loop over
 * the listening socket and up to MAX_CONNS connections, keep-alive,
 * Content-Length bodies only, bounded sizes; replies queued now or held
 * for a fault's delay. What a request gets is sandbox_routes.c's business.
 * See sandbox.h.
 *
 * Threads: the one thread of the sandbox.
 */
#include "sandbox.h"

#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_util.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <poll.h>
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

enum conn_state {
    C_READ,  /* reading a request */
    C_HOLD,  /* a reply (or a close) waits for its time */
    C_WRITE, /* writing a reply */
};

struct conn {
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
};

static struct {
    int listen_fd;
    conn *conns[MAX_CONNS];
    size_t nconns;
} S;

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

void sandbox__respond_raw(conn *c, int status, const char *body, size_t len, bool keep_alive,
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

void sandbox__respond_json(conn *c, int status, json_t *doc, bool keep_alive, int delay_ms)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    size_t len;

    if (!text)
        jw_oom("a sandbox reply");
    len = strlen(text);
    text = jw_xrealloc(text, len + 2);
    text[len++] = '\n';
    text[len] = '\0';
    sandbox__respond_raw(c, status, text, len, keep_alive, delay_ms);
    free(text);
    json_decref(doc);
}

void sandbox__respond_error(conn *c, int status, const char *code, bool keep_alive, const char *fmt,
                            ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sandbox__respond_json(c, status,
                          json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg),
                          keep_alive, 0);
}

void sandbox__respond_step_error(conn *c, int status, bool retryable, bool keep_alive,
                                 const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sandbox__respond_json(
        c, status,
        json_pack("{s:s, s:b, s:s}", "status", "error", "retryable", retryable, "message", msg),
        keep_alive, 0);
}

void sandbox__reset(conn *c)
{
    c->reset_pending = true;
}

void sandbox__hold_then_close(conn *c, int delay_ms)
{
    c->state = C_HOLD;
    c->hold_then_close = true;
    c->deadline_us = jw_mono_us() + (int64_t)delay_ms * 1000;
}

/* --- HTTP/1.1 requests --------------------------------------------------- */

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
        return jw_errorf(msg, msglen, 400, "empty request");
    sp1 = strchr(line, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || (size_t)(sp1 - line) >= sizeof(r->method) ||
        (size_t)(sp2 - sp1 - 1) >= sizeof(r->path) || sp1[1] != '/')
        return jw_errorf(msg, msglen, 400, "malformed request line");
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
        return jw_errorf(msg, msglen, 400, "only HTTP/1.0 and HTTP/1.1 are served");
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
                return jw_errorf(msg, msglen, 400, "malformed Content-Length");
            if (n > BODY_MAX)
                return jw_errorf(msg, msglen, 413, "the body is %llu bytes (limit %d)", n,
                                 BODY_MAX);
            *content_length = (size_t)n;
            have_length = true;
        } else if ((v = header_value(line, "Transfer-Encoding"))) {
            return jw_errorf(msg, msglen, 501,
                             "chunked bodies are not supported; send Content-Length");
        } else if ((v = header_value(line, "Connection"))) {
            if (strcasecmp(v, "close") == 0)
                r->keep_alive = false;
            else if (strcasecmp(v, "keep-alive") == 0)
                r->keep_alive = true;
        } else if ((v = header_value(line, "Idempotency-Key"))) {
            if (strlen(v) >= sizeof(r->idem_key))
                return jw_errorf(msg, msglen, 400, "Idempotency-Key is longer than %zu bytes",
                                 sizeof(r->idem_key) - 1);
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
        sandbox__respond_error(c, 431, "headers_too_large", false,
                               "the request head exceeds %d bytes", HEAD_MAX);
        consume(c, c->in_len);
        return true;
    }
    head_len = (size_t)(end - c->in) + 4;
    if (head_len > HEAD_MAX) {
        sandbox__respond_error(c, 431, "headers_too_large", false,
                               "the request head exceeds %d bytes", HEAD_MAX);
        consume(c, c->in_len);
        return true;
    }
    memcpy(head, c->in, head_len - 4);
    head[head_len - 4] = '\0';
    status = parse_head(head, &r, &content_length, &expect_continue, msg, sizeof(msg));
    if (status) {
        sandbox__respond_error(c, status, "bad_request", false, "%s", msg);
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
    sandbox__dispatch(c, &r);
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

void sandbox__run(int listen_fd, volatile sig_atomic_t *stop)
{
    struct pollfd fds[MAX_CONNS + 1];
    conn *polled[MAX_CONNS];

    S.listen_fd = listen_fd;
    while (!*stop) {
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

void sandbox__close_all(void)
{
    while (S.nconns)
        conn_close(S.conns[0], false);
}
