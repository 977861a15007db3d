#include "jw_util.h"

#include "jw_log.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

int64_t jw_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t jw_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int jw_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool jw_uuid_valid(const char *s)
{
    if (!s)
        return false;
    for (int i = 0; i < JW_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (jw_hex_digit(s[i]) < 0) {
            return false;
        }
    }
    return s[JW_UUID_LEN] == '\0';
}

void jw_uuid_new(char out[JW_UUID_LEN + 1])
{
    unsigned char b[16];

    if (RAND_bytes(b, sizeof(b)) != 1)
        jw_oom("random bytes for a UUID");
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, JW_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

void jw_format_ts(int64_t ts_us, char *out, size_t size)
{
    time_t sec = (time_t)(ts_us / 1000000);
    long usec = (long)(ts_us % 1000000);
    struct tm tm;
    size_t n;

    if (usec < 0) {
        usec += 1000000;
        sec--;
    }
    gmtime_r(&sec, &tm);
    n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%06ldZ", usec);
}

void jw_signals_block(sigset_t *old)
{
    sigset_t block;

    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, old);
}

void jw_signals_restore(const sigset_t *old)
{
    pthread_sigmask(SIG_SETMASK, old, NULL);
}
