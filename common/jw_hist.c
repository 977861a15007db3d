/*
 * jw_hist.c - fixed-bucket histograms in Prometheus text (see jw_hist.h).
 */
#include "jw_hist.h"

#include "jw_error.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void jw_hist_init(jw_hist *h, const jw_hist_spec *spec)
{
    memset(h, 0, sizeof(*h));
    h->spec = spec;
}

void jw_hist_observe(jw_hist *h, uint64_t v)
{
    size_t lo = 0, hi = h->spec->n;

    /* The first bound >= v (le is inclusive); n when v is above them all. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (h->spec->le[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    h->bucket[lo]++;
    h->count++;
    h->sum += v;
}

int jw_hist_merge(jw_hist *dst, const jw_hist *src)
{
    if (!dst->spec || dst->spec != src->spec)
        return JW_EINVAL;
    for (size_t i = 0; i <= dst->spec->n; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    dst->sum += src->sum;
    return 0;
}

uint64_t jw_hist_cumulative(const jw_hist *h, size_t i)
{
    uint64_t c = 0;

    if (i > h->spec->n)
        i = h->spec->n;
    for (size_t k = 0; k <= i; k++)
        c += h->bucket[k];
    return c;
}

void jw_hist_format_fixed(char *out, size_t n, uint64_t v, int decimals)
{
    uint64_t scale = 1;
    char frac[16];
    int len;

    if (decimals < 0)
        decimals = 0;
    if (decimals > 9)
        decimals = 9;
    for (int i = 0; i < decimals; i++)
        scale *= 10;
    if (decimals == 0 || v % scale == 0) {
        snprintf(out, n, "%" PRIu64, v / scale);
        return;
    }
    len = snprintf(frac, sizeof(frac), "%0*" PRIu64, decimals, v % scale);
    while (len > 0 && frac[len - 1] == '0')
        frac[--len] = '\0';
    snprintf(out, n, "%" PRIu64 ".%s", v / scale, frac);
}

void jw_hist_prom_header(jw_buf *b, const char *name, const char *help)
{
    jw_buf_addf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
}

void jw_hist_prom(jw_buf *b, const char *name, const char *labels, const jw_hist *h)
{
    const char *sep = labels && *labels ? "," : "";
    const char *lb = labels ? labels : "";
    uint64_t cum = 0;
    char num[32];

    for (size_t i = 0; i < h->spec->n; i++) {
        cum += h->bucket[i];
        jw_hist_format_fixed(num, sizeof(num), h->spec->le[i], h->spec->decimals);
        jw_buf_addf(b, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, lb, sep, num, cum);
    }
    cum += h->bucket[h->spec->n];
    jw_buf_addf(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, lb, sep, cum);
    jw_hist_format_fixed(num, sizeof(num), h->sum, h->spec->decimals);
    if (*lb) {
        jw_buf_addf(b, "%s_sum{%s} %s\n", name, lb, num);
        jw_buf_addf(b, "%s_count{%s} %" PRIu64 "\n", name, lb, h->count);
    } else {
        jw_buf_addf(b, "%s_sum %s\n", name, num);
        jw_buf_addf(b, "%s_count %" PRIu64 "\n", name, h->count);
    }
}
