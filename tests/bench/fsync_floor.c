/*
 * fsync_floor - what a durable commit's flush costs on this machine's disk,
 * with nothing else in the way: no PostgreSQL, no WAL record, no lock. The
 * floor under any commit's latency here, and so under a change-to-client
 * latency that waits for its commit (DESIGN.md: nothing visible before it).
 *
 * A file of --size bytes per write in --dir (put it on PostgreSQL's file
 * system), written like a WAL segment: each round writes --size bytes with
 * pwrite() and flushes them with fdatasync(), one after the other, every
 * --interval-us (0: back to back). The file's --span bytes are written and
 * flushed once before any round is timed (PostgreSQL zero-fills a new WAL
 * segment or reuses an old one, so its flushes never meet blocks the file
 * system has only reserved), and the rounds cycle through them. Printed: the
 * flush's latency (pwrite + fdatasync) p50/p90/p99/p99.9/max over every
 * round, nearest-rank.
 *
 * Usage: fsync_floor [--dir D (.)] [--size B (8192)] [--rounds R (2000)]
 *                    [--interval-us US (0)] [--span B (16 MiB)]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
    const char *dir;
    long size, rounds, interval_us, span;
} opt = {".", 8192, 2000, 0, 16L << 20};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n sorted values, in microseconds. */
static double pct(const uint64_t *v, long n, double p)
{
    double r = p / 100.0 * (double)n;
    long rank = (long)r, i;

    if ((double)rank < r) /* rounded up: the smallest value with p % at or below it */
        rank++;
    i = rank < 1 ? 0 : rank - 1;

    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1000.0;
}

/* Writes all of buf at off, or says why not. */
static int write_all(int fd, const char *buf, long len, off_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, (size_t)len, off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        buf += n;
        len -= n;
        off += n;
    }
    return 0;
}

static long arg_long(const char *s, long lo, long hi, const char *what)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "fsync_floor: %s must be %ld..%ld, got '%s'\n", what, lo, hi, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"dir", required_argument, NULL, 'd'},    {"size", required_argument, NULL, 's'},
        {"rounds", required_argument, NULL, 'r'}, {"interval-us", required_argument, NULL, 'i'},
        {"span", required_argument, NULL, 'S'},   {NULL, 0, NULL, 0},
    };
    char path[4096];
    uint64_t *lat, t0, total;
    char *block;
    int c, fd;

    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'd': opt.dir = optarg; break;
        case 's': opt.size = arg_long(optarg, 512, 1L << 20, "--size"); break;
        case 'r': opt.rounds = arg_long(optarg, 10, 10000000, "--rounds"); break;
        case 'i': opt.interval_us = arg_long(optarg, 0, 10000000, "--interval-us"); break;
        case 'S': opt.span = arg_long(optarg, 1L << 20, 1L << 34, "--span"); break;
        default:
            fprintf(stderr, "usage: fsync_floor [--dir D] [--size B] [--rounds R] "
                            "[--interval-us US] [--span B]\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fsync_floor: unexpected argument '%s' (the directory is --dir)\n",
                argv[optind]);
        return 2;
    }
    if (opt.span < opt.size) {
        fprintf(stderr, "fsync_floor: --span must be at least --size\n");
        return 2;
    }
    snprintf(path, sizeof(path), "%s/fsync_floor.%d", opt.dir, (int)getpid());
    fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        fprintf(stderr, "fsync_floor: %s: %s\n", path, strerror(errno));
        return 1;
    }
    unlink(path); /* gone when we exit, however we exit */
    block = malloc((size_t)opt.size);
    lat = calloc((size_t)opt.rounds, sizeof(*lat));
    if (!block || !lat) {
        fprintf(stderr, "fsync_floor: out of memory\n");
        return 1;
    }
    memset(block, 'w', (size_t)opt.size);
    for (long at = 0; at + opt.size <= opt.span; at += opt.size) {
        if (write_all(fd, block, opt.size, (off_t)at) != 0) {
            fprintf(stderr, "fsync_floor: filling %ld bytes: %s\n", opt.span, strerror(errno));
            return 1;
        }
    }
    if (fsync(fd) != 0) {
        fprintf(stderr, "fsync_floor: fsync: %s\n", strerror(errno));
        return 1;
    }

    total = now_ns();
    for (long i = 0; i < opt.rounds; i++) {
        off_t at = (off_t)((i * opt.size) % (opt.span - opt.span % opt.size));

        memcpy(block, &i, sizeof(i)); /* not the same bytes every time */
        t0 = now_ns();
        if (write_all(fd, block, opt.size, at) != 0 || fdatasync(fd) != 0) {
            fprintf(stderr, "fsync_floor: write: %s\n", strerror(errno));
            return 1;
        }
        lat[i] = now_ns() - t0;
        if (opt.interval_us) {
            struct timespec ts = {opt.interval_us / 1000000, (opt.interval_us % 1000000) * 1000};

            nanosleep(&ts, NULL);
        }
    }
    total = now_ns() - total;
    close(fd);

    qsort(lat, (size_t)opt.rounds, sizeof(*lat), cmp_u64);
    printf("fsync_floor: %ld rounds of pwrite(%ld B) + fdatasync in %s, interval %ld us, "
           "%.2f s: latency us p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f\n",
           opt.rounds, opt.size, opt.dir, opt.interval_us, (double)total / 1e9,
           pct(lat, opt.rounds, 50), pct(lat, opt.rounds, 90), pct(lat, opt.rounds, 99),
           pct(lat, opt.rounds, 99.9), (double)lat[opt.rounds - 1] / 1000.0);
    free(block);
    free(lat);
    return 0;
}
