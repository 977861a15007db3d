/*
 * http_provider.c - the http provider: a curl thread, two mailboxes, and the mapping
 * from HTTP outcomes to contract replies. See http_provider.h.
 */
#include "http_provider.h"

#include "jw_buf.h"
#include "jw_error.h"
#include "jw_log.h"
#include "jw_mailbox.h"
#include "jw_util.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define POLL_MS 1000 /* the curl thread's longest sleep; wake-ups cut it short */

typedef struct http_req {
    jw_mailbox_node node;         /* in the inbox, until the curl thread takes it */
    struct http_req *prev, *next; /* the curl thread's list of transfers */
    uint64_t call_id;
    char job_id[JW_UUID_LEN + 1];
    char step_id[JW_UUID_LEN + 1];
    char step_name[JW_STEP_NAME_MAX];
    char key[JW_IDEMPOTENCY_KEY_MAX];
    int timeout_ms;
    char *url;
    char *body; /* carries the OTP: wiped before it is freed */
    size_t body_len;
    CURL *easy;
    struct curl_slist *headers;
    jw_buf resp;
    bool too_big;
    char errbuf[CURL_ERROR_SIZE];
    int64_t started_us; /* monotonic */
} http_req;

typedef struct http_done {
    jw_mailbox_node node;
    jw_provider_reply *reply;
} http_done;

struct jw_http_provider {
    char base_url[JW_HTTP_URL_MAX + 1];
    int default_timeout_ms;
    CURLM *multi;
    pthread_t thread;
    bool thread_started;
    jw_mailbox inbox;  /* http_req: loop -> curl thread */
    jw_mailbox outbox; /* http_done: curl thread -> loop */
    http_req *active;  /* curl thread only */
};

static void req_free(http_req *req)
{
    if (!req)
        return;
    if (req->easy)
        curl_easy_cleanup(req->easy);
    curl_slist_free_all(req->headers);
    if (req->body) {
        OPENSSL_cleanse(req->body, req->body_len);
        free(req->body);
    }
    free(req->url);
    jw_buf_release(&req->resp);
    free(req);
}

/* --- the curl thread ----------------------------------------------------- */

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    http_req *req = userdata;
    size_t n = size * nmemb;

    if (n > JW_HTTP_REPLY_MAX - req->resp.len) {
        req->too_big = true;
        return 0; /* anything but n aborts the transfer with CURLE_WRITE_ERROR */
    }
    jw_buf_add(&req->resp, ptr, n);
    return n;
}

/*
 * Messages end up in log lines and in a JSON row (error_message): control
 * characters become spaces, and a message that is not valid UTF-8 (jansson
 * refuses those) loses its non-ASCII bytes.
 */
static void one_line(char *s)
{
    json_t *probe = json_string(s);

    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || (!probe && (unsigned char)*p >= 0x80))
            *p = (unsigned char)*p >= 0x80 ? '?' : ' ';
    json_decref(probe);
}

static jw_provider_reply *error_reply(const http_req *req, bool retryable, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static jw_provider_reply *error_reply(const http_req *req, bool retryable, const char *fmt, ...)
{
    jw_provider_reply *r = jw_provider_reply_new(req->call_id, JW_PROVIDER_ERROR);
    va_list ap;

    r->retryable = retryable;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
    one_line(r->message);
    return r;
}

static jw_provider_reply *transport_reply(http_req *req, CURLcode rc)
{
    long os_errno = 0;
    const char *detail = req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc);

    curl_easy_getinfo(req->easy, CURLINFO_OS_ERRNO, &os_errno);
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: {
        jw_provider_reply *r = error_reply(req, true, "timeout after %d ms", req->timeout_ms);

        r->timed_out = true; /* /metrics tells timeouts from other errors */
        return r;
    }
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        if (req->too_big || rc == CURLE_FILESIZE_EXCEEDED)
            return error_reply(req, false, "reply larger than %d bytes", JW_HTTP_REPLY_MAX);
        break;
    case CURLE_COULDNT_CONNECT: return error_reply(req, true, "connection failed: %s", detail);
    case CURLE_COULDNT_RESOLVE_HOST:
        return error_reply(req, true, "could not resolve the provider's host: %s", detail);
    case CURLE_GOT_NOTHING: return error_reply(req, true, "connection closed without a reply");
    case CURLE_PARTIAL_FILE:
        return error_reply(req, true, "connection closed in the middle of the reply");
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        if (os_errno == ECONNRESET)
            return error_reply(req, true, "connection reset by the provider");
        return error_reply(req, true, "connection error: %s", detail);
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_PEER_FAILED_VERIFICATION:
        /* Configuration problems: trying again changes nothing. */
        return error_reply(req, false, "cannot reach the provider: %s", detail);
    default: break;
    }
    return error_reply(req, true, "transport error: %s", detail);
}

/* A non-2xx reply: its status decides; a contract error body lends its message. */
static jw_provider_reply *status_reply(http_req *req, long status, const json_t *body)
{
    bool retryable = status >= 500 || status == 429;
    const json_t *msg = json_object_get(body, "message");

    if (json_is_string(msg) && json_string_length(msg) > 0) {
        const char *m = json_string_value(msg);
        size_t n = json_string_length(msg);

        /* At most 200 bytes, cut at a character boundary: it must stay UTF-8. */
        if (n > 200)
            for (n = 200; n > 0 && ((unsigned char)m[n] & 0xc0) == 0x80;)
                n--;
        return error_reply(req, retryable, "HTTP %ld: %.*s", status, (int)n, m);
    }
    if (status >= 300 && status < 400)
        return error_reply(req, false, "HTTP %ld (redirects are not followed)", status);
    return error_reply(req, retryable, "HTTP %ld", status);
}

static jw_provider_reply *make_reply(http_req *req, CURLcode rc)
{
    jw_provider_reply *r;
    json_error_t jerr;
    json_t *body = NULL;
    long status = 0;
    char err[200];

    if (rc != CURLE_OK)
        return transport_reply(req, rc);
    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
    body = json_loadb(req->resp.data, req->resp.len, JSON_REJECT_DUPLICATES, &jerr);
    if (status < 200 || status >= 300) {
        r = status_reply(req, status, body);
        goto out;
    }
    if (!body) {
        r = error_reply(req, false, "unparseable reply (HTTP %ld): %s", status, jerr.text);
        goto out;
    }
    r = jw_provider_reply_parse(req->call_id, body, err, sizeof(err));
    if (!r)
        r = error_reply(req, false, "invalid reply (HTTP %ld): %s", status, err);
out:
    json_decref(body);
    return r;
}

static const char *status_name(jw_provider_status s)
{
    switch (s) {
    case JW_PROVIDER_OK: return "ok";
    case JW_PROVIDER_OTP_REQUIRED: return "otp_required";
    case JW_PROVIDER_PENDING: return "pending";
    case JW_PROVIDER_ERROR: return "error";
    }
    return "?";
}

static void post_reply(jw_http_provider *p, jw_provider_reply *reply)
{
    http_done *d = jw_xcalloc(1, sizeof(*d));

    d->reply = reply;
    if (!jw_mailbox_post(&p->outbox, &d->node)) {
        jw_provider_reply_free(reply);
        free(d);
    }
}

static void unlink_active(jw_http_provider *p, http_req *req)
{
    if (req->prev)
        req->prev->next = req->next;
    else
        p->active = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
}

static void finish(jw_http_provider *p, http_req *req, CURLcode rc)
{
    jw_provider_reply *reply = make_reply(req, rc);
    long status = 0;

    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
    jw_log_info("http provider: POST /steps/%s job=%s step=%s call=%" PRIu64
                " http=%ld -> %s%s%s (%" PRId64 " ms)",
                req->step_name, req->job_id, req->step_id, req->call_id, status,
                status_name(reply->status), reply->status == JW_PROVIDER_ERROR ? ": " : "",
                reply->status == JW_PROVIDER_ERROR ? reply->message : "",
                (jw_mono_us() - req->started_us) / 1000);
    curl_multi_remove_handle(p->multi, req->easy);
    unlink_active(p, req);
    req_free(req);
    post_reply(p, reply);
}

/* Sets up and adds the transfer; on failure the request is answered at once. */
static void begin(jw_http_provider *p, http_req *req)
{
    CURL *e = curl_easy_init();
    CURLMcode mc;
    bool ok;

    req->started_us = jw_mono_us();
    req->easy = e;
    if (!e) {
        post_reply(p, error_reply(req, true, "could not start a transfer (out of memory)"));
        req_free(req);
        return;
    }
    ok =
        curl_easy_setopt(e, CURLOPT_URL, req->url) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->timeout_ms) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)JW_HTTP_REPLY_MAX) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_WRITEDATA, req) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_PRIVATE, req) == CURLE_OK &&
        curl_easy_setopt(e, CURLOPT_USERAGENT, "jobwire-http-provider") == CURLE_OK;
    if (!ok) {
        post_reply(p, error_reply(req, false, "could not configure a transfer"));
        req_free(req);
        return;
    }
    mc = curl_multi_add_handle(p->multi, e);
    if (mc != CURLM_OK) {
        post_reply(
            p, error_reply(req, true, "could not start a transfer: %s", curl_multi_strerror(mc)));
        req_free(req);
        return;
    }
    req->next = p->active;
    if (p->active)
        p->active->prev = req;
    p->active = req;
}

static void collect(jw_http_provider *p)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(p->multi, &left))) {
        CURLcode rc = msg->data.result;
        char *priv = NULL;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv)
            finish(p, (http_req *)(void *)priv, rc); /* msg is invalid from here on */
    }
}

static void *curl_thread(void *arg)
{
    jw_http_provider *p = arg;
    jw_mailbox_node *n;

    for (;;) {
        int running = 0;
        CURLMcode mc;

        for (n = jw_mailbox_take_all(&p->inbox); n;) {
            jw_mailbox_node *next = n->next;

            begin(p, jw_container_of(n, http_req, node));
            n = next;
        }
        if (jw_mailbox_is_closed(&p->inbox))
            break;
        curl_multi_perform(p->multi, &running);
        collect(p);
        mc = curl_multi_poll(p->multi, NULL, 0, POLL_MS, NULL);
        if (mc != CURLM_OK) {
            struct timespec ts = {0, 100 * 1000000L};

            jw_log_error("http provider: curl_multi_poll failed: %s", curl_multi_strerror(mc));
            nanosleep(&ts, NULL); /* no busy loop if it keeps failing */
        }
    }
    /* Shutdown: abort what runs, drop what waits; no replies. */
    while (p->active) {
        http_req *req = p->active;

        curl_multi_remove_handle(p->multi, req->easy);
        unlink_active(p, req);
        req_free(req);
    }
    for (n = jw_mailbox_take_all(&p->inbox); n;) {
        jw_mailbox_node *next = n->next;

        req_free(jw_container_of(n, http_req, node));
        n = next;
    }
    return NULL;
}

/* --- the loop thread ----------------------------------------------------- */

static bool step_name_valid(const char *s)
{
    size_t n = strnlen(s, JW_STEP_NAME_MAX);

    return n > 0 && n < JW_STEP_NAME_MAX && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/* Keys go into a header: visible ASCII only, so no header can be forged. */
static bool key_valid(const char *s)
{
    size_t n = strnlen(s, JW_IDEMPOTENCY_KEY_MAX);

    if (n >= JW_IDEMPOTENCY_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return false;
    return true;
}

static struct curl_slist *add_header(struct curl_slist *list, const char *h)
{
    struct curl_slist *l = curl_slist_append(list, h);

    if (!l)
        jw_oom("an http provider header");
    return l;
}

/*
 * The request body, dumped into a buffer of its exact size (json_dumpb
 * writes straight into it, leaving no copies in freed growth buffers), and
 * the OTP's string inside the JSON tree wiped before the tree is freed.
 */
static char *serialize(const jw_provider_call *call, size_t *len)
{
    json_t *j = jw_provider_call_to_json(call);
    json_t *otp = json_object_get(j, "otp");
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    char *buf = jw_xmalloc(n ? n : 1);

    if (n == 0 || json_dumpb(j, buf, n, JSON_COMPACT) != n)
        jw_oom("an http provider request");
    if (otp)
        OPENSSL_cleanse((char *)json_string_value(otp), json_string_length(otp));
    json_decref(j);
    *len = n;
    return buf;
}

static int hp_start(void *ctx, jw_provider_call *call)
{
    jw_http_provider *p = ctx;
    http_req *req = NULL;
    char header[64 + JW_IDEMPOTENCY_KEY_MAX];
    size_t url_len;
    int rc = JW_EINVAL;

    if (!call)
        return JW_EINVAL;
    if (!step_name_valid(call->step_name) || !key_valid(call->idempotency_key)) {
        jw_log_error("http provider: refusing a call with a malformed step name or idempotency "
                     "key (job=%s step=%s call=%" PRIu64 ")",
                     call->job_id, call->step_id, call->id);
        goto out;
    }
    req = jw_xcalloc(1, sizeof(*req));
    req->call_id = call->id;
    memcpy(req->job_id, call->job_id, sizeof(req->job_id));
    req->job_id[JW_UUID_LEN] = '\0';
    memcpy(req->step_id, call->step_id, sizeof(req->step_id));
    req->step_id[JW_UUID_LEN] = '\0';
    memcpy(req->step_name, call->step_name, sizeof(req->step_name));
    memcpy(req->key, call->idempotency_key, sizeof(req->key));
    req->timeout_ms = call->timeout_ms > 0 ? call->timeout_ms : p->default_timeout_ms;
    if (req->timeout_ms > JW_HTTP_TIMEOUT_MAX_MS)
        req->timeout_ms = JW_HTTP_TIMEOUT_MAX_MS;
    url_len = strlen(p->base_url) + sizeof("/steps/") + JW_STEP_NAME_MAX;
    req->url = jw_xmalloc(url_len);
    snprintf(req->url, url_len, "%s/steps/%s", p->base_url, req->step_name);
    jw_buf_init(&req->resp, 1024);
    req->body = serialize(call, &req->body_len);
    req->headers = add_header(NULL, "Content-Type: application/json");
    req->headers = add_header(req->headers, "Accept: application/json");
    /* No "Expect: 100-continue" round trip before larger bodies. */
    req->headers = add_header(req->headers, "Expect:");
    if (req->key[0]) {
        snprintf(header, sizeof(header), "Idempotency-Key: %s", req->key);
        req->headers = add_header(req->headers, header);
    }
    if (!jw_mailbox_post(&p->inbox, &req->node)) {
        rc = JW_ECLOSED;
        goto out;
    }
    req = NULL;
    rc = 0;
out:
    req_free(req);
    jw_provider_call_free(call);
    return rc;
}

static void hp_destroy(void *ctx)
{
    jw_http_provider_free(ctx);
}

static void wake_curl(void *arg)
{
    jw_http_provider *p = arg;

    curl_multi_wakeup(p->multi);
}

static int check_url(const char *url, char *err, size_t errlen)
{
    CURLU *u = NULL;
    CURLUcode uc;
    char *scheme = NULL, *host = NULL, *query = NULL, *fragment = NULL;
    size_t len = strlen(url);
    int rc = JW_ECONFIG;

    if (len == 0 || len > JW_HTTP_URL_MAX) {
        rc = jw_errorf(err, errlen, JW_ECONFIG, "provider URL must be 1..%d bytes (got %zu)",
                       JW_HTTP_URL_MAX, len);
        goto out;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f) {
            rc = jw_errorf(err, errlen, JW_ECONFIG,
                           "provider URL must not contain spaces or control characters");
            goto out;
        }
    }
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
        rc = jw_errorf(
            err, errlen, JW_ECONFIG,
            "provider URL must start with http:// or https://, e.g. http://127.0.0.1:9090");
        goto out;
    }
    u = curl_url();
    if (!u)
        jw_oom("a URL handle");
    uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        rc = jw_errorf(err, errlen, JW_ECONFIG,
                       "provider URL is not a valid URL (%s); expected e.g. http://127.0.0.1:9090",
                       curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        rc = jw_errorf(
            err, errlen, JW_ECONFIG,
            "provider URL must start with http:// or https://, e.g. http://127.0.0.1:9090");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
        rc = jw_errorf(err, errlen, JW_ECONFIG,
                       "provider URL has no host, e.g. http://127.0.0.1:9090");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK) {
        rc = jw_errorf(err, errlen, JW_ECONFIG,
                       "provider URL must not have a query or fragment: steps are posted to "
                       "<url>/steps/<name>");
        goto out;
    }
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(query);
    curl_free(fragment);
    curl_url_cleanup(u);
    return rc;
}

jw_http_provider *jw_http_provider_new(const char *base_url, int default_timeout_ms,
                                       void (*wake)(void *arg), void *wake_arg, char *err,
                                       size_t errlen)
{
    jw_http_provider *p = NULL;
    sigset_t all, old;
    size_t len;
    int rc;

    if (!base_url) {
        jw_errorf(err, errlen, JW_ECONFIG, "provider URL is missing");
        return NULL;
    }
    if (check_url(base_url, err, errlen))
        return NULL;
    if (default_timeout_ms < 1 || default_timeout_ms > JW_HTTP_TIMEOUT_MAX_MS) {
        jw_errorf(err, errlen, JW_ECONFIG, "provider timeout must be 1..%d ms (got %d)",
                  JW_HTTP_TIMEOUT_MAX_MS, default_timeout_ms);
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        jw_errorf(err, errlen, JW_EIO, "libcurl failed to initialise");
        return NULL;
    }
    p = jw_xcalloc(1, sizeof(*p));
    len = strlen(base_url);
    while (len > 0 && base_url[len - 1] == '/')
        len--;
    memcpy(p->base_url, base_url, len);
    p->base_url[len] = '\0';
    p->default_timeout_ms = default_timeout_ms;
    p->multi = curl_multi_init();
    if (!p->multi)
        jw_oom("a curl multi handle");
    curl_multi_setopt(p->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)JW_HTTP_MAX_CONNECTIONS);
    curl_multi_setopt(p->multi, CURLMOPT_MAXCONNECTS, (long)JW_HTTP_MAX_CONNECTIONS);
    jw_mailbox_init(&p->inbox, wake_curl, p);
    jw_mailbox_init(&p->outbox, wake, wake_arg);
    /* Signals belong to the loop thread: the curl thread blocks them all. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&p->thread, NULL, curl_thread, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        jw_errorf(err, errlen, JW_EIO, "could not start the http provider thread: %s",
                  strerror(rc));
        jw_http_provider_free(p);
        return NULL;
    }
    p->thread_started = true;
    return p;
}

jw_provider jw_http_provider_port(jw_http_provider *p)
{
    jw_provider port = {.name = "http", .ctx = p, .start = hp_start, .destroy = hp_destroy};

    return port;
}

size_t jw_http_provider_drain(jw_http_provider *p, jw_provider_deliver_fn fn, void *arg)
{
    size_t count = 0;

    for (jw_mailbox_node *n = jw_mailbox_take_all(&p->outbox); n;) {
        jw_mailbox_node *next = n->next;
        http_done *d = jw_container_of(n, http_done, node);

        fn(arg, d->reply);
        free(d);
        count++;
        n = next;
    }
    return count;
}

void jw_http_provider_free(jw_http_provider *p)
{
    if (!p)
        return;
    jw_mailbox_close(&p->inbox);
    if (p->thread_started)
        pthread_join(p->thread, NULL);
    /* The thread is gone: nothing posts to the outbox any more. */
    for (jw_mailbox_node *n = jw_mailbox_take_all(&p->outbox); n;) {
        jw_mailbox_node *next = n->next;
        http_done *d = jw_container_of(n, http_done, node);

        jw_provider_reply_free(d->reply);
        free(d);
        n = next;
    }
    curl_multi_cleanup(p->multi);
    jw_mailbox_release(&p->inbox);
    jw_mailbox_release(&p->outbox);
    free(p);
    curl_global_cleanup();
}
