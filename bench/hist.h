/* hist.h: cairn-bench's latency histogram, log-bucketed in the manner of
 * HdrHistogram, so that percentiles up to the maximum carry no sampling bias.
 *
 * Buckets: values 0..127 ns each have their own bucket (exact). Above, every
 * power of two [2^e, 2^(e+1)) is cut into 128 equal sub-buckets, so a value
 * is known to within 1/128 of itself (0.78 %, a little better than two
 * significant digits). Tracked range: 0 .. 2^40 - 1 ns (about 18 minutes);
 * a larger value is counted in the top bucket, and min/max stay exact.
 *
 * The struct is fixed-size (HIST_BUCKETS 32-bit counters, about 17 KiB) and
 * owns no memory: embed one per time slot, copy it with memcpy or
 * assignment, and never free it. A bucket saturates at 2^32 - 1 (four
 * billion samples in one bucket); the total count is 64-bit and exact.
 *
 * Threads: none of this is synchronised; one histogram per recording thread,
 * merged afterwards with hist_merge(). */
#ifndef CAIRN_BENCH_HIST_H
#define CAIRN_BENCH_HIST_H

#include <stdint.h>

/* Sub-buckets per power of two; the relative error of a reported value is at
 * most 1/HIST_SUB_BUCKETS. */
#define HIST_SUB_BITS 7
#define HIST_SUB_BUCKETS (1u << HIST_SUB_BITS)
/* Values at or above 2^HIST_MAX_BITS land in the top bucket. */
#define HIST_MAX_BITS 40
#define HIST_BUCKETS (HIST_SUB_BUCKETS * (HIST_MAX_BITS - HIST_SUB_BITS + 1))

struct hist {
	uint64_t count; /* samples recorded */
	uint64_t min, max; /* exact; min is UINT64_MAX while empty */
	uint64_t sum; /* ns, saturating: for the mean */
	uint32_t counts[HIST_BUCKETS];
};

/* Empty the histogram. hist_init and hist_reset are the same operation; init
 * is for a fresh struct, reset for reuse. */
void hist_init(struct hist *h);
void hist_reset(struct hist *h);

/* Count one sample. O(1). */
void hist_record(struct hist *h, uint64_t value_ns);
/* Count `n` samples of the same value (n may be 0). */
void hist_record_n(struct hist *h, uint64_t value_ns, uint64_t n);

/* dst += src (counts, min, max, sum). dst == src is allowed (doubles it). */
void hist_merge(struct hist *dst, const struct hist *src);

uint64_t hist_count(const struct hist *h);
/* Exact minimum and maximum recorded values; 0 for an empty histogram. */
uint64_t hist_min(const struct hist *h);
uint64_t hist_max(const struct hist *h);
/* Exact mean of the recorded values (unless the sum saturated); 0 if empty. */
double hist_mean(const struct hist *h);

/* The value at percentile p (0..100, clamped): the smallest bucket value v
 * such that at least ceil(p/100 * count) samples are <= v, reported as the
 * highest value equivalent to that bucket (as HdrHistogram's
 * getValueAtPercentile), then clamped into [min, max]: p = 100 is the exact
 * max, p = 0 the exact min. Relative error at most 1/128. 0 if empty.
 * Cost: one pass over the buckets (HIST_BUCKETS). */
uint64_t hist_percentile(const struct hist *h, double p);

/* Bucket geometry, for tests and for printing distributions: the bucket index
 * of a value, and the lowest and highest values a bucket stands for. */
uint32_t hist_bucket_of(uint64_t value_ns);
uint64_t hist_bucket_low(uint32_t index);
uint64_t hist_bucket_high(uint32_t index);

#endif /* CAIRN_BENCH_HIST_H */
