/*
 * The http provider against the real jobwire-sandbox binary over loopback:
 * contract replies, every fault mode, idempotency through HTTP, recovery
 * after a reset, shutdown with transfers in flight.
 *
 * Usage: test_http_provider path/to/jobwire-sandbox (or JW_SANDBOX=path).
 * The sandbox is started on 127.0.0.1 port 0 (the kernel picks a free one;
 * the test reads it from the sandbox's "listening on" line) and is stopped by
 * its PID at the end; if this process dies first, the child gets SIGKILL
 * (PR_SET_PDEATHSIG). Its log is printed at the end, which ctest shows when
 * the test fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_log.h"
#include "jw_util.h"
#include "providers/http_provider.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define JOB "11111111-1111-4111-8111-111111111111"
#define WAIT_MS 10000 /* the longest any reply may take here */
#define MAX_REPLIES 64

static const char *sandbox_path;

static struct {
    pid_t pid;
    char log_path[64];
    char base[64];
    jw_http_provider *p;
    jw_provider port;
    uint64_t next_id;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned wakes;
    jw_provider_reply *replies[MAX_REPLIES];
    size_t nreplies;
    bool teardown_failed;
} T = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* --- the sandbox process ------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/*
 * SIGTERM, then SIGKILL after 5 s. Returns the exit status, or -1 when it
 * had to be killed: a clean stop exits 0 (and under ASan, 0 means no leaks).
 */
static int stop_sandbox(void)
{
    int status;

    if (T.pid <= 0)
        return -1;
    kill(T.pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(T.pid, &status, WNOHANG) == T.pid) {
            T.pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        sleep_ms(100);
    }
    kill(T.pid, SIGKILL);
    waitpid(T.pid, &status, 0);
    T.pid = 0;
    return -1;
}

static void dump_log(void)
{
    char buf[4096];
    FILE *f = fopen(T.log_path, "r");
    size_t n;

    if (!f)
        return;
    fprintf(stderr, "--- jobwire-sandbox log ---\n");
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, stderr);
    fclose(f);
}

/* Waits for "listening on http://127.0.0.1:PORT" in the log; returns PORT or -1. */
static int wait_listening(void)
{
    for (int i = 0; i < 100; i++) {
        char buf[4096] = "";
        FILE *f = fopen(T.log_path, "r");
        const char *hit;
        int status;

        if (f) {
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);

            buf[n] = '\0';
            fclose(f);
        }
        hit = strstr(buf, "listening on http://127.0.0.1:");
        if (hit)
            return atoi(hit + strlen("listening on http://127.0.0.1:"));
        if (waitpid(T.pid, &status, WNOHANG) == T.pid) {
            T.pid = 0;
            return -1;
        }
        sleep_ms(100);
    }
    return -1;
}

static void on_wake(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&T.lock);
    T.wakes++;
    pthread_cond_signal(&T.cond);
    pthread_mutex_unlock(&T.lock);
}

static int group_setup(void **state)
{
    pid_t parent = getpid();
    char err[256];
    int fd, port;

    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    jw_log_set_level(JW_LOG_WARN);
    snprintf(T.log_path, sizeof(T.log_path), "/tmp/jw-sandbox-log.XXXXXX");
    fd = mkstemp(T.log_path);
    if (fd < 0)
        return -1;
    T.pid = fork();
    if (T.pid < 0)
        return -1;
    if (T.pid == 0) {
        int null = open("/dev/null", O_RDWR);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        execl(sandbox_path, sandbox_path, "--listen", "127.0.0.1:0", "--sim",
              "latency_ms=0,otp=gyftr_login+amazon_login,voucher_polls=1,poll_after_ms=100",
              (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", sandbox_path, strerror(errno));
        _exit(127);
    }
    close(fd);
    port = wait_listening();
    if (port <= 0) {
        fprintf(stderr, "jobwire-sandbox did not start (%s)\n", sandbox_path);
        dump_log();
        stop_sandbox();
        return -1;
    }
    snprintf(T.base, sizeof(T.base), "http://127.0.0.1:%d/", port); /* '/' is dropped */
    T.p = jw_http_provider_new(T.base, 5000, on_wake, NULL, err, sizeof(err));
    if (!T.p) {
        fprintf(stderr, "jw_http_provider_new: %s\n", err);
        stop_sandbox();
        return -1;
    }
    T.port = jw_http_provider_port(T.p);
    return 0;
}

static int group_teardown(void **state)
{
    int status;

    (void)state;
    jw_http_provider_free(T.p);
    for (size_t i = 0; i < T.nreplies; i++)
        jw_provider_reply_free(T.replies[i]);
    status = stop_sandbox();
    dump_log();
    unlink(T.log_path);
    curl_global_cleanup();
    if (status != 0) {
        fprintf(stderr, "jobwire-sandbox did not exit cleanly on SIGTERM (status %d)\n", status);
        T.teardown_failed = true; /* cmocka 1.1 reports a failed teardown but exits 0 */
        return -1;
    }
    return 0;
}

/* --- the sandbox's admin endpoints, with plain libcurl ------------------- */

static size_t collect_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    char **buf = userdata;
    size_t old = *buf ? strlen(*buf) : 0, n = size * nmemb;

    *buf = realloc(*buf, old + n + 1);
    memcpy(*buf + old, ptr, n);
    (*buf)[old + n] = '\0';
    return n;
}

/* METHOD path [body] -> the parsed 200 reply (the caller decrefs). */
static json_t *admin(const char *method, const char *path, const char *body)
{
    CURL *e = curl_easy_init();
    char url[256], *out = NULL;
    long status = 0;
    json_t *doc;
    CURLcode rc;

    snprintf(url, sizeof(url), "%.*s%s", (int)strlen(T.base) - 1, T.base, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)WAIT_MS);
    rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    if (rc != CURLE_OK || status != 200)
        fail_msg("%s %s: %s, HTTP %ld: %s", method, path, curl_easy_strerror(rc), status,
                 out ? out : "");
    doc = json_loads(out, 0, NULL);
    free(out);
    assert_non_null(doc);
    return doc;
}

static void arm_fault(const char *step, const char *mode, int count, int delay_ms)
{
    char body[256];

    snprintf(body, sizeof(body), "{\"step\":\"%s\",\"mode\":\"%s\",\"count\":%d,\"delay_ms\":%d}",
             step, mode, count, delay_ms);
    json_decref(admin("POST", "/faults", body));
}

static void clear_faults(void)
{
    json_decref(admin("DELETE", "/faults", NULL));
}

/* The key's {"charges","calls",...} record from GET /charges. */
static int charges_field(const char *key, const char *field)
{
    json_t *all = admin("GET", "/charges", NULL);
    json_t *rec = json_object_get(all, key);
    int v;

    if (!rec)
        fail_msg("no charges record for %s", key);
    v = (int)json_integer_value(json_object_get(rec, field));
    json_decref(all);
    return v;
}

/* The newest code sent for step_id, from GET /inbox. */
static void inbox_code(const char *step_id, char out[8])
{
    json_t *inbox = admin("GET", "/inbox", NULL);
    size_t i;
    json_t *m;

    out[0] = '\0';
    json_array_foreach(inbox, i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "step_id")), step_id) == 0)
            snprintf(out, 8, "%s", json_string_value(json_object_get(m, "code")));
    }
    json_decref(inbox);
    assert_int_equal(strlen(out), 6);
}

/* --- calls through the provider ------------------------------------------ */

static void keep_reply(void *arg, jw_provider_reply *r)
{
    (void)arg;
    assert_true(T.nreplies < MAX_REPLIES);
    T.replies[T.nreplies++] = r;
}

/* Removes and returns the reply to call_id, waiting up to WAIT_MS for it. */
static jw_provider_reply *await_reply(uint64_t call_id)
{
    int64_t deadline = jw_mono_us() + (int64_t)WAIT_MS * 1000;

    for (;;) {
        unsigned seen;

        pthread_mutex_lock(&T.lock);
        seen = T.wakes;
        pthread_mutex_unlock(&T.lock);
        jw_http_provider_drain(T.p, keep_reply, NULL);
        for (size_t i = 0; i < T.nreplies; i++) {
            if (T.replies[i]->call_id == call_id) {
                jw_provider_reply *r = T.replies[i];

                T.replies[i] = T.replies[--T.nreplies];
                return r;
            }
        }
        if (jw_mono_us() > deadline)
            fail_msg("no reply to call %llu within %d ms", (unsigned long long)call_id, WAIT_MS);
        /* Sleep until the provider's wake callback runs (or 100 ms). */
        pthread_mutex_lock(&T.lock);
        if (T.wakes == seen) {
            struct timespec ts;

            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&T.cond, &T.lock, &ts);
        }
        pthread_mutex_unlock(&T.lock);
    }
}

static jw_provider_call *mkcall(const char *step_name, const char *key, int64_t amount)
{
    jw_provider_call *c = jw_provider_call_new();

    c->id = ++T.next_id;
    strcpy(c->job_id, JOB);
    jw_uuid_new(c->step_id);
    snprintf(c->step_name, sizeof(c->step_name), "%s", step_name);
    snprintf(c->idempotency_key, sizeof(c->idempotency_key), "%s", key ? key : "");
    c->transaction_index = 1;
    c->attempt = 1;
    c->amount = amount;
    return c;
}

/* Starts c and waits for its reply; *elapsed_ms (when not NULL) is how long it took. */
static jw_provider_reply *run(jw_provider_call *c, int64_t *elapsed_ms)
{
    uint64_t id = c->id;
    int64_t t0 = jw_mono_us();
    jw_provider_reply *r;

    assert_int_equal(T.port.start(T.port.ctx, c), 0);
    r = await_reply(id);
    if (elapsed_ms)
        *elapsed_ms = (jw_mono_us() - t0) / 1000;
    return r;
}

static void expect_error(jw_provider_reply *r, bool retryable, const char *want)
{
    if (r->status != JW_PROVIDER_ERROR)
        fail_msg("expected an error containing \"%s\", got status %d", want, (int)r->status);
    if (!strstr(r->message, want))
        fail_msg("message \"%s\" lacks \"%s\"", r->message, want);
    if (r->retryable != retryable)
        fail_msg("\"%s\": retryable is %d, expected %d", r->message, r->retryable, retryable);
    /* Only a deadline passing is a timeout (/metrics counts them apart). */
    if (r->timed_out != (strstr(want, "timeout after") != NULL))
        fail_msg("\"%s\": timed_out is %d", r->message, r->timed_out);
    jw_provider_reply_free(r);
}

static void expect_ok(jw_provider_reply *r)
{
    if (r->status != JW_PROVIDER_OK)
        fail_msg("expected ok, got status %d (%s)", (int)r->status, r->message);
    jw_provider_reply_free(r);
}

/* --- tests --------------------------------------------------------------- */

static void test_ok_reply(void **state)
{
    jw_provider_reply *r;

    (void)state;
    assert_string_equal(T.port.name, "http");
    r = run(mkcall("availability_check", "jw-avail-1", 0), NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_true(json_is_true(json_object_get(r->data, "available")));
    assert_int_equal(json_integer_value(json_object_get(r->data, "vouchers")), 10);
    jw_provider_reply_free(r);
}

static void test_otp_flow(void **state)
{
    jw_provider_call *c = mkcall("gyftr_login", "jw-login-1", 0);
    char step_id[JW_UUID_LEN + 1], code[8], bad[8];
    jw_provider_reply *r;

    (void)state;
    strcpy(step_id, c->step_id);
    r = run(c, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
    assert_string_equal(r->otp_type, "gyftr_login");
    assert_string_equal(r->phone_hint, "******4821");
    assert_false(r->invalid_otp);
    jw_provider_reply_free(r);

    inbox_code(step_id, code);
    for (int i = 0; i < 6; i++)
        bad[i] = (char)('0' + (code[i] - '0' + 1) % 10);
    bad[6] = '\0';
    c = mkcall("gyftr_login", "jw-login-1", 0);
    strcpy(c->step_id, step_id);
    c->otp = strdup(bad);
    r = run(c, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OTP_REQUIRED);
    assert_true(r->invalid_otp);
    jw_provider_reply_free(r);

    c = mkcall("gyftr_login", "jw-login-1", 0);
    strcpy(c->step_id, step_id);
    c->otp = strdup(code);
    r = run(c, NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_int_equal(
        strlen(json_string_value(json_object_get(json_object_get(r->data, "session"), "token"))),
        64);
    jw_provider_reply_free(r);
}

static void test_pending_then_ok(void **state)
{
    jw_provider_reply *r;

    (void)state;
    r = run(mkcall("wait_for_vouchers", "jw-vouch-1", 100), NULL);
    assert_int_equal(r->status, JW_PROVIDER_PENDING);
    assert_int_equal(r->poll_after_ms, 100);
    jw_provider_reply_free(r);
    r = run(mkcall("wait_for_vouchers", "jw-vouch-1", 100), NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_int_equal(json_array_size(json_object_get(r->data, "vouchers")), 1);
    jw_provider_reply_free(r);
}

static void test_idempotent_through_http(void **state)
{
    jw_provider_reply *r;
    char payment_id[64];

    (void)state;
    r = run(mkcall("process_payment", "jw-pay-http-1", 4200), NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    strcpy(payment_id, json_string_value(json_object_get(r->data, "payment_id")));
    jw_provider_reply_free(r);
    r = run(mkcall("process_payment", "jw-pay-http-1", 4200), NULL);
    assert_int_equal(r->status, JW_PROVIDER_OK);
    assert_string_equal(json_string_value(json_object_get(r->data, "payment_id")), payment_id);
    jw_provider_reply_free(r);
    assert_int_equal(charges_field("jw-pay-http-1", "charges"), 1);
    assert_int_equal(charges_field("jw-pay-http-1", "calls"), 2);
    assert_int_equal(charges_field("jw-pay-http-1", "amount"), 4200);
}

static void test_fault_http_500(void **state)
{
    int64_t ms;

    (void)state;
    arm_fault("availability_check", "http_500", 1, 0);
    expect_error(run(mkcall("availability_check", "jw-500", 0), &ms), true, "HTTP 500");
    expect_ok(run(mkcall("availability_check", "jw-500", 0), NULL));
}

/* The sim performs the call, the reply never comes: a retry with the key pays once. */
static void test_fault_timeout_then_same_key(void **state)
{
    jw_provider_call *c;
    int64_t ms;

    (void)state;
    arm_fault("process_payment", "timeout", 1, 20000);
    c = mkcall("process_payment", "jw-pay-lost-1", 900);
    c->timeout_ms = 300;
    expect_error(run(c, &ms), true, "timeout after 300 ms");
    assert_true(ms < 5000);
    expect_ok(run(mkcall("process_payment", "jw-pay-lost-1", 900), NULL));
    assert_int_equal(charges_field("jw-pay-lost-1", "charges"), 1);
    assert_int_equal(charges_field("jw-pay-lost-1", "calls"), 2);
}

static void test_fault_slow(void **state)
{
    jw_provider_call *c;
    int64_t ms;

    (void)state;
    /* Slower than the deadline: a timeout. */
    arm_fault("availability_check", "slow", 1, 3000);
    c = mkcall("availability_check", "jw-slow-1", 0);
    c->timeout_ms = 300;
    expect_error(run(c, &ms), true, "timeout after 300 ms");
    assert_true(ms < 5000);
    /* Slow but within it: the reply arrives. */
    arm_fault("availability_check", "slow", 1, 200);
    expect_ok(run(mkcall("availability_check", "jw-slow-2", 0), NULL));
}

/* A fault armed for one job leaves other jobs' calls alone and waits for that job's. */
static void test_fault_for_one_job(void **state)
{
    static const char other[] = "9b2d1f3e-0c4a-4e5b-8f6a-7d8c9e0a1b2c";
    jw_provider_call *c;
    json_t *armed;
    char body[256];

    (void)state;
    snprintf(body, sizeof(body),
             "{\"step\":\"availability_check\",\"mode\":\"http_500\",\"count\":1,"
             "\"job\":\"%s\"}",
             other);
    json_decref(admin("POST", "/faults", body));
    expect_ok(run(mkcall("availability_check", "jw-job-1", 0), NULL)); /* JOB: not matched */
    armed = admin("GET", "/faults", NULL);
    assert_int_equal(json_array_size(json_object_get(armed, "faults")), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(armed, "faults"), 0), "job")),
                        other);
    json_decref(armed);
    c = mkcall("availability_check", "jw-job-2", 0);
    strcpy(c->job_id, other);
    expect_error(run(c, NULL), true, "HTTP 500");
    armed = admin("GET", "/faults", NULL);
    assert_int_equal(json_array_size(json_object_get(armed, "faults")), 0);
    json_decref(armed);
}

/*
 * A first_call fault matches only a key's first call: armed after it, the key's
 * later calls (an OTP's, a retry's) go by, and a new key's first call takes it.
 */
static void test_fault_first_call_only(void **state)
{
    json_t *armed;

    (void)state;
    expect_ok(run(mkcall("availability_check", "jw-first-1", 0), NULL));
    json_decref(admin("POST", "/faults",
                      "{\"step\":\"availability_check\",\"mode\":\"http_500\",\"count\":1,"
                      "\"first_call\":true}"));
    expect_ok(run(mkcall("availability_check", "jw-first-1", 0), NULL)); /* its second call */
    armed = admin("GET", "/faults", NULL);
    assert_int_equal(json_array_size(json_object_get(armed, "faults")), 1);
    assert_true(json_is_true(
        json_object_get(json_array_get(json_object_get(armed, "faults"), 0), "first_call")));
    json_decref(armed);
    expect_error(run(mkcall("availability_check", "jw-first-2", 0), NULL), true, "HTTP 500");
    armed = admin("GET", "/faults", NULL);
    assert_int_equal(json_array_size(json_object_get(armed, "faults")), 0);
    json_decref(armed);
    assert_int_equal(charges_field("jw-first-1", "calls"), 2);
}

static void test_fault_reset_and_recovery(void **state)
{
    int64_t ms;

    (void)state;
    /*
     * Two resets: libcurl resends a request once, on a fresh connection,
     * when a reused one dies before any reply byte; the second reset is the
     * one the provider sees. Whatever is left is cleared below.
     */
    arm_fault("availability_check", "reset", 2, 0);
    expect_error(run(mkcall("availability_check", "jw-reset-1", 0), &ms), true, "reset");
    assert_true(ms < 5000);
    clear_faults();
    /* The provider keeps working after a reset. */
    expect_ok(run(mkcall("availability_check", "jw-reset-2", 0), NULL));
    expect_ok(run(mkcall("process_payment", "jw-reset-3", 10), NULL));
}

static void test_bad_replies_not_retryable(void **state)
{
    jw_provider_call *c;

    (void)state;
    arm_fault("availability_check", "bad_json", 1, 0);
    expect_error(run(mkcall("availability_check", "jw-bad-1", 0), NULL), false,
                 "unparseable reply (HTTP 200)");
    arm_fault("availability_check", "huge", 1, 0);
    expect_error(run(mkcall("availability_check", "jw-huge-1", 0), NULL), false,
                 "reply larger than 262144 bytes");
    /* A 4xx: the sandbox refuses attempt 0, and its message comes along. */
    c = mkcall("availability_check", "jw-400", 0);
    c->attempt = 0;
    expect_error(run(c, NULL), false, "HTTP 400: request \"attempt\" must be an integer 1..");
    /* A contract error in a 200 passes through as it is. */
    expect_error(run(mkcall("fly_to_the_moon", "jw-moon", 0), NULL), false,
                 "unknown step 'fly_to_the_moon'");
    /* Still fine afterwards. */
    expect_ok(run(mkcall("availability_check", "jw-after-bad", 0), NULL));
}

static void test_many_calls_at_once(void **state)
{
    uint64_t ids[20];

    (void)state;
    for (int i = 0; i < 20; i++) {
        char key[32];
        jw_provider_call *c;

        snprintf(key, sizeof(key), "jw-many-%d", i);
        c = mkcall("process_payment", key, 100 + i);
        ids[i] = c->id;
        assert_int_equal(T.port.start(T.port.ctx, c), 0);
    }
    for (int i = 19; i >= 0; i--) {
        jw_provider_reply *r = await_reply(ids[i]);

        assert_int_equal(r->status, JW_PROVIDER_OK);
        assert_int_equal(json_integer_value(json_object_get(r->data, "charged")), 100 + i);
        jw_provider_reply_free(r);
    }
}

static void test_connection_refused(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    jw_http_provider *saved = T.p;
    jw_provider saved_port = T.port;
    char url[64], err[256];
    jw_provider_call *c;

    (void)state;
    /* A port that was free a moment ago, with nobody listening now. */
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    T.p = jw_http_provider_new(url, 2000, on_wake, NULL, err, sizeof(err));
    assert_non_null(T.p);
    T.port = jw_http_provider_port(T.p);
    c = mkcall("availability_check", "jw-refused", 0);
    expect_error(run(c, NULL), true, "connection failed");
    T.port.destroy(T.port.ctx); /* the port's destroy frees the provider */
    T.p = saved;
    T.port = saved_port;
}

static void test_free_with_transfer_in_flight(void **state)
{
    jw_http_provider *p;
    jw_provider port;
    jw_provider_call *c;
    char err[256];
    int64_t t0;

    (void)state;
    arm_fault("availability_check", "timeout", 1, 30000);
    p = jw_http_provider_new(T.base, 20000, NULL, NULL, err, sizeof(err));
    assert_non_null(p);
    port = jw_http_provider_port(p);
    c = mkcall("availability_check", "jw-inflight", 0);
    assert_int_equal(port.start(port.ctx, c), 0);
    sleep_ms(200); /* let the request reach the sandbox */
    t0 = jw_mono_us();
    jw_http_provider_free(p);
    assert_true(jw_mono_us() - t0 < 5 * 1000000LL);
    clear_faults();
    expect_ok(run(mkcall("availability_check", "jw-after-free", 0), NULL));
}

static void test_new_validates(void **state)
{
    static const struct {
        const char *url;
        int timeout_ms;
        const char *want;
    } bad[] = {
        {"", 1000, "must be 1..1024 bytes"},
        {"ftp://127.0.0.1/", 1000, "must start with http:// or https://"},
        {"127.0.0.1:9090", 1000, "must start with http:// or https://"},
        {"http://", 1000, "not a valid URL"},
        {"http://127.0.0.1:9090/?x=1", 1000, "must not have a query or fragment"},
        {"http://127.0.0.1:9090/#top", 1000, "must not have a query or fragment"},
        {"http://127.0.0.1:9090/a b", 1000, "must not contain spaces"},
        {"http://127.0.0.1:9090", 0, "timeout must be 1..600000 ms (got 0)"},
        {"http://127.0.0.1:9090", 600001, "timeout must be 1..600000 ms"},
        {0},
    };
    char err[256], longurl[1100];
    jw_http_provider *p;

    (void)state;
    for (size_t i = 0; bad[i].url; i++) {
        err[0] = '\0';
        p = jw_http_provider_new(bad[i].url, bad[i].timeout_ms, NULL, NULL, err, sizeof(err));
        if (p) {
            jw_http_provider_free(p);
            fail_msg("accepted %s", bad[i].url);
        }
        if (!strstr(err, bad[i].want))
            fail_msg("%s: \"%s\" lacks \"%s\"", bad[i].url, err, bad[i].want);
    }
    assert_null(jw_http_provider_new(NULL, 1000, NULL, NULL, err, sizeof(err)));
    memset(longurl, 'a', sizeof(longurl) - 1);
    memcpy(longurl, "http://", 7);
    longurl[sizeof(longurl) - 1] = '\0';
    assert_null(jw_http_provider_new(longurl, 1000, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "must be 1..1024 bytes"));
    p = jw_http_provider_new("https://provider.example/api/", 1000, NULL, NULL, err, sizeof(err));
    assert_non_null(p);
    jw_http_provider_free(p);
    jw_http_provider_free(NULL);
}

int main(int argc, char **argv)
{
    int rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_validates),
        cmocka_unit_test(test_ok_reply),
        cmocka_unit_test(test_otp_flow),
        cmocka_unit_test(test_pending_then_ok),
        cmocka_unit_test(test_idempotent_through_http),
        cmocka_unit_test(test_fault_http_500),
        cmocka_unit_test(test_fault_timeout_then_same_key),
        cmocka_unit_test(test_fault_slow),
        cmocka_unit_test(test_fault_for_one_job),
        cmocka_unit_test(test_fault_first_call_only),
        cmocka_unit_test(test_fault_reset_and_recovery),
        cmocka_unit_test(test_bad_replies_not_retryable),
        cmocka_unit_test(test_many_calls_at_once),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_free_with_transfer_in_flight),
    };

    sandbox_path = argc > 1 ? argv[1] : getenv("JW_SANDBOX");
    if (!sandbox_path || access(sandbox_path, X_OK) != 0) {
        fprintf(stderr, "usage: %s path/to/jobwire-sandbox (or set JW_SANDBOX)\n", argv[0]);
        return 2;
    }
    rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    return rc ? rc : T.teardown_failed;
}
