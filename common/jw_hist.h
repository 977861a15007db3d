/*
 * jw_hist.h - a fixed-bucket histogram for /metrics (Prometheus "histogram").
 *
 * Debian packages no C Prometheus client (prometheus-cpp is C++), and what
 * /metrics needs is small: counts per fixed bucket, a sum and a count, and the
 * text exposition format 0.0.4. This is that, and nothing more.
 *
 * A jw_hist_spec names the buckets once, statically: ascending inclusive
 * upper bounds ("le") in an integer unit (microseconds, or plain counts), and
 * how many decimal places the exported value shifts the unit by (6 turns
 * microseconds into seconds). Bounds are integers so that bucket edges and the
 * exported le labels are exact: no float rounding decides which bucket 100 us
 * falls in, and le="0.0001" prints as written.
 *
 * A jw_hist is a plain value with no pointers but its static spec: observe
 * never allocates or locks, and copying the struct takes a snapshot. It has no
 * lock of its own; its owner decides the thread story (the engine's live on
 * the loop thread; the store's are copied out under its stats lock).
 */
#ifndef JW_HIST_H
#define JW_HIST_H

#include "jw_buf.h"

#include <stddef.h>
#include <stdint.h>

#define JW_HIST_MAX_BOUNDS 20

typedef struct jw_hist_spec {
    size_t n;                        /* finite bounds, 1..JW_HIST_MAX_BOUNDS */
    uint64_t le[JW_HIST_MAX_BOUNDS]; /* strictly ascending, inclusive, in the unit */
    int decimals;                    /* exported = unit / 10^decimals; 0..9 */
} jw_hist_spec;

typedef struct jw_hist {
    const jw_hist_spec *spec; /* static; NULL until jw_hist_init */
    uint64_t count;
    uint64_t sum; /* in the unit; 2^64 us is 584,000 years */
    /* Per bucket, not cumulative: [i] counts le[i-1] < v <= le[i];
     * [n] counts v > le[n-1] (only the +Inf bucket holds it). */
    uint64_t bucket[JW_HIST_MAX_BOUNDS + 1];
} jw_hist;

/* Zeroes h and ties it to spec (borrowed, must outlive h). */
void jw_hist_init(jw_hist *h, const jw_hist_spec *spec);

/* Counts one value. O(log n); no allocation, no lock. */
void jw_hist_observe(jw_hist *h, uint64_t v);

/*
 * Adds src's counts into dst. Returns 0, or JW_EINVAL (dst unchanged) when
 * they do not share one spec: buckets of different bounds cannot be added.
 */
int jw_hist_merge(jw_hist *dst, const jw_hist *src);

/* Observations <= le[i]; i == spec->n gives the +Inf bucket (== count). */
uint64_t jw_hist_cumulative(const jw_hist *h, size_t i);

/*
 * Appends h as Prometheus text: one name_bucket{labels,le="…"} line per bound
 * and +Inf (cumulative), then name_sum{labels} and name_count{labels}.
 * labels is "" or a ready label list without braces, e.g. step="gyftr_login"
 * (values are the caller's constants: nothing here escapes them). The
 * "# HELP" and "# TYPE name histogram" lines are the caller's: write them
 * once per metric family, before its first series (jw_hist_prom_header).
 */
void jw_hist_prom(jw_buf *b, const char *name, const char *labels, const jw_hist *h);
void jw_hist_prom_header(jw_buf *b, const char *name, const char *help);

/* v / 10^decimals as an exact decimal: 100,6 -> "0.0001"; 2500000,6 -> "2.5". */
void jw_hist_format_fixed(char *out, size_t n, uint64_t v, int decimals);

#endif
