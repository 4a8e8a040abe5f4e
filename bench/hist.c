/* hist.c: the log-bucketed latency histogram of hist.h. */
#include "hist.h"

#include <assert.h>
#include <math.h>
#include <string.h>

_Static_assert(HIST_BUCKETS == 4352, "bucket layout: 128 exact + 33 octaves of 128");
_Static_assert(sizeof(struct hist) <= 20 * 1024, "one histogram per time slot stays small");

/* Index of the highest set bit of v (v != 0). */
static unsigned hist__log2(uint64_t v)
{
	assert(v != 0);
	return 63u - (unsigned)__builtin_clzll(v);
}

uint32_t hist_bucket_of(uint64_t v)
{
	if (v < HIST_SUB_BUCKETS)
		return (uint32_t)v;
	if (v >> HIST_MAX_BITS)
		return HIST_BUCKETS - 1;
	unsigned e = hist__log2(v); /* HIST_SUB_BITS .. HIST_MAX_BITS - 1 */
	unsigned shift = e - HIST_SUB_BITS;
	uint64_t mant = v >> shift; /* 128 .. 255 */
	uint32_t idx = (uint32_t)(HIST_SUB_BUCKETS * (shift + 1) + (mant - HIST_SUB_BUCKETS));
	assert(idx < HIST_BUCKETS);
	return idx;
}

uint64_t hist_bucket_low(uint32_t index)
{
	assert(index < HIST_BUCKETS);
	if (index < HIST_SUB_BUCKETS)
		return index;
	unsigned shift = index / HIST_SUB_BUCKETS - 1;
	uint64_t mant = HIST_SUB_BUCKETS + index % HIST_SUB_BUCKETS;
	return mant << shift;
}

uint64_t hist_bucket_high(uint32_t index)
{
	assert(index < HIST_BUCKETS);
	if (index < HIST_SUB_BUCKETS)
		return index;
	unsigned shift = index / HIST_SUB_BUCKETS - 1;
	return hist_bucket_low(index) + ((uint64_t)1 << shift) - 1;
}

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void hist_reset(struct hist *h)
{
	hist_init(h);
}

static uint64_t hist__sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void hist__bucket_add(struct hist *h, uint32_t idx, uint64_t n)
{
	uint64_t c = (uint64_t)h->counts[idx] + n;
	h->counts[idx] = c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
}

void hist_record_n(struct hist *h, uint64_t v, uint64_t n)
{
	if (n == 0)
		return;
	hist__bucket_add(h, hist_bucket_of(v), n);
	h->count = hist__sat_add(h->count, n);
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	if (n == 1)
		h->sum = hist__sat_add(h->sum, v);
	else if (v != 0 && n > UINT64_MAX / v)
		h->sum = UINT64_MAX;
	else
		h->sum = hist__sat_add(h->sum, v * n);
}

void hist_record(struct hist *h, uint64_t v)
{
	hist_record_n(h, v, 1);
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	if (src->count == 0)
		return;
	/* Read the scalars first: dst may be src. */
	uint64_t count = src->count, mn = src->min, mx = src->max, sum = src->sum;
	for (uint32_t i = 0; i < HIST_BUCKETS; i++)
		if (src->counts[i])
			hist__bucket_add(dst, i, src->counts[i]);
	dst->count = hist__sat_add(dst->count, count);
	dst->sum = hist__sat_add(dst->sum, sum);
	if (mn < dst->min)
		dst->min = mn;
	if (mx > dst->max)
		dst->max = mx;
}

uint64_t hist_count(const struct hist *h)
{
	return h->count;
}

uint64_t hist_min(const struct hist *h)
{
	return h->count ? h->min : 0;
}

uint64_t hist_max(const struct hist *h)
{
	return h->count ? h->max : 0;
}

double hist_mean(const struct hist *h)
{
	return h->count ? (double)h->sum / (double)h->count : 0.0;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	if (!(p > 0.0)) /* also NaN */
		return h->min;
	if (p >= 100.0)
		return h->max;
	/* Samples at or below the answer: ceil(p% of count), at least 1. The
	 * rank is computed in double; for counts beyond 2^53 it may be off by
	 * one sample, far below the bucket resolution. */
	double want_d = p / 100.0 * (double)h->count;
	/* 99.9 % of 1000 computes as 999.0000000000001: such dust is not a sample. */
	double near = nearbyint(want_d);
	if (fabs(want_d - near) <= 1e-9 * (near > 1.0 ? near : 1.0))
		want_d = near;
	uint64_t want = (uint64_t)want_d;
	if ((double)want < want_d)
		want++;
	if (want == 0)
		want = 1;
	if (want > h->count)
		want = h->count;
	uint64_t seen = 0;
	for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= want) {
			uint64_t v = hist_bucket_high(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	/* Only reachable when a bucket saturated and the counts fall short. */
	return h->max;
}
