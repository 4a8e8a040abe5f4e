/* test_hist.c: cairn-bench's latency histogram (bench/hist.h): the bucket
 * geometry at its edges, the relative error bound over the whole range, exact
 * min/max/mean, percentiles of known distributions, merging, the empty
 * histogram and values beyond the tracked range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "hist.h"

static struct hist *new_hist(void)
{
	struct hist *h = malloc(sizeof(*h));
	assert_non_null(h);
	hist_init(h);
	return h;
}

static uint64_t rng_state = 0x853c49e6748fea9bu;

static uint64_t rng(void)
{
	uint64_t x = (rng_state += 0x9e3779b97f4a7c15u);
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

static void test_empty(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	assert_int_equal(hist_count(h), 0);
	assert_int_equal(hist_min(h), 0);
	assert_int_equal(hist_max(h), 0);
	assert_true(hist_mean(h) == 0.0);
	assert_int_equal(hist_percentile(h, 0), 0);
	assert_int_equal(hist_percentile(h, 50), 0);
	assert_int_equal(hist_percentile(h, 100), 0);
	/* Merging an empty one changes nothing; into an empty one copies. */
	struct hist *g = new_hist();
	hist_record(g, 777);
	hist_merge(g, h);
	assert_int_equal(hist_count(g), 1);
	assert_int_equal(hist_min(g), 777);
	hist_merge(h, g);
	assert_int_equal(hist_count(h), 1);
	assert_int_equal(hist_min(h), 777);
	assert_int_equal(hist_max(h), 777);
	hist_reset(h);
	assert_int_equal(hist_count(h), 0);
	assert_int_equal(hist_max(h), 0);
	free(g);
	free(h);
}

/* Bucket edges: every bucket's [low, high] is contiguous with the next, the
 * first 128 values are exact, and each edge value maps back to its bucket. */
static void test_bucket_edges(void **state)
{
	(void)state;
	for (uint64_t v = 0; v < HIST_SUB_BUCKETS; v++) {
		assert_int_equal(hist_bucket_of(v), v);
		assert_int_equal(hist_bucket_low((uint32_t)v), v);
		assert_int_equal(hist_bucket_high((uint32_t)v), v);
	}
	for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
		uint64_t lo = hist_bucket_low(i), hi = hist_bucket_high(i);
		assert_true(lo <= hi);
		assert_int_equal(hist_bucket_of(lo), i);
		assert_int_equal(hist_bucket_of(hi), i);
		if (i + 1 < HIST_BUCKETS)
			assert_int_equal(hist_bucket_low(i + 1), hi + 1);
		/* Width against value: the resolution promise. */
		assert_true((double)(hi - lo) <= (double)lo / HIST_SUB_BUCKETS);
	}
	assert_int_equal(hist_bucket_high(HIST_BUCKETS - 1), ((uint64_t)1 << HIST_MAX_BITS) - 1);
	assert_int_equal(hist_bucket_of((uint64_t)1 << HIST_MAX_BITS), HIST_BUCKETS - 1);
	assert_int_equal(hist_bucket_of(UINT64_MAX), HIST_BUCKETS - 1);
	/* Powers of two and their neighbours. */
	for (unsigned e = 8; e < HIST_MAX_BITS; e++) {
		uint64_t p = (uint64_t)1 << e;
		assert_int_equal(hist_bucket_low(hist_bucket_of(p)), p);
		assert_int_equal(hist_bucket_high(hist_bucket_of(p - 1)), p - 1);
	}
}

/* A single sample: every percentile is that sample exactly (clamped into
 * [min, max]); exact values below 128 come back exactly from the buckets too. */
static void test_exact(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	uint64_t vals[] = {0, 1, 5, 127, 128, 129, 255, 256, 1000, 123456789,
	                   ((uint64_t)1 << 40) - 1};
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		hist_reset(h);
		hist_record(h, vals[i]);
		for (double p = 0; p <= 100; p += 12.5)
			assert_int_equal(hist_percentile(h, p), vals[i]);
		assert_int_equal(hist_min(h), vals[i]);
		assert_int_equal(hist_max(h), vals[i]);
	}
	hist_reset(h);
	for (uint64_t v = 1; v <= 100; v++)
		hist_record(h, v);
	assert_int_equal(hist_percentile(h, 50), 50);
	assert_int_equal(hist_percentile(h, 90), 90);
	assert_int_equal(hist_percentile(h, 99), 99);
	assert_int_equal(hist_percentile(h, 99.9), 100);
	assert_int_equal(hist_percentile(h, 1), 1);
	assert_int_equal(hist_percentile(h, 0), 1);
	assert_true(hist_mean(h) == 50.5);
	free(h);
}

/* Random values across the whole range: every percentile of a one-value
 * histogram is within 1/128 of the value, and max is exact. */
static void test_relative_error(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	double worst = 0;
	for (int i = 0; i < 200000; i++) {
		unsigned bits = (unsigned)(rng() % HIST_MAX_BITS) + 1;
		uint64_t v = rng() & (((uint64_t)1 << bits) - 1);
		uint64_t w = hist_bucket_high(hist_bucket_of(v));
		assert_true(w >= v);
		double err = v ? (double)(w - v) / (double)v : 0;
		if (err > worst)
			worst = err;
		assert_true(err <= 1.0 / HIST_SUB_BUCKETS);
		/* Two samples, v and a larger one: p50 is v's bucket top, within bound. */
		hist_reset(h);
		hist_record(h, v);
		hist_record(h, v + 1000000);
		uint64_t p50 = hist_percentile(h, 50);
		assert_true(p50 >= v);
		assert_true((double)(p50 - v) <= (double)v / HIST_SUB_BUCKETS);
		assert_int_equal(hist_max(h), v + 1000000);
	}
	assert_true(worst > 0.005); /* the bound is reached, not vacuous */
	free(h);
}

/* Uniform 1..1,000,000 ns (each once): the p-th percentile is p% of 1e6
 * within the bound; the max is exact. */
static void test_uniform(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	for (uint64_t v = 1; v <= 1000000; v++)
		hist_record(h, v);
	assert_int_equal(hist_count(h), 1000000);
	double ps[] = {1, 10, 25, 50, 75, 90, 99, 99.9, 99.99};
	for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
		double want = ps[i] / 100.0 * 1e6;
		uint64_t got = hist_percentile(h, ps[i]);
		assert_true((double)got >= want);
		assert_true((double)got <= want * (1.0 + 1.0 / HIST_SUB_BUCKETS) + 1);
	}
	assert_int_equal(hist_percentile(h, 100), 1000000);
	assert_int_equal(hist_min(h), 1);
	assert_true(hist_mean(h) == 500000.5);
	free(h);
}

/* A bimodal latency: 99% at ~1 ms, 1% at ~200 ms. p99 is in the fast mode,
 * p99.5 and max in the slow one: a sampled histogram would hide this tail. */
static void test_bimodal(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	for (int i = 0; i < 99000; i++)
		hist_record(h, 1000000 + rng() % 1000);
	for (int i = 0; i < 1000; i++)
		hist_record(h, 200000000 + rng() % 1000000);
	hist_record(h, 987654321);
	assert_true(hist_percentile(h, 50) < 1010000);
	assert_true(hist_percentile(h, 98.9) < 1010000);
	assert_true(hist_percentile(h, 99.5) >= 200000000);
	assert_true(hist_percentile(h, 99.5) < 203000000);
	assert_int_equal(hist_percentile(h, 100), 987654321);
	assert_int_equal(hist_max(h), 987654321);
	free(h);
}

/* Merging per-second histograms equals recording everything in one. */
static void test_merge(void **state)
{
	(void)state;
	struct hist *all = new_hist(), *sum = new_hist(), *slot = new_hist();
	for (int s = 0; s < 10; s++) {
		hist_reset(slot);
		for (int i = 0; i < 5000; i++) {
			uint64_t v = rng() % ((uint64_t)1 << (10 + 2 * s));
			hist_record(slot, v);
			hist_record(all, v);
		}
		hist_merge(sum, slot);
	}
	assert_memory_equal(sum, all, sizeof(*all));
	assert_int_equal(hist_count(sum), 50000);
	for (double p = 0; p <= 100; p += 0.5)
		assert_int_equal(hist_percentile(sum, p), hist_percentile(all, p));
	/* Merging into itself doubles the counts, keeps min and max. */
	uint64_t mx = hist_max(sum), mn = hist_min(sum);
	hist_merge(sum, sum);
	assert_int_equal(hist_count(sum), 100000);
	assert_int_equal(hist_max(sum), mx);
	assert_int_equal(hist_min(sum), mn);
	free(all);
	free(sum);
	free(slot);
}

/* Values beyond 2^40 ns go to the top bucket; max stays exact and the
 * percentiles never exceed it. record_n counts in bulk. */
static void test_out_of_range(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	hist_record_n(h, 10, 3);
	hist_record(h, UINT64_MAX / 2);
	assert_int_equal(hist_count(h), 4);
	assert_int_equal(hist_percentile(h, 75), 10);
	assert_int_equal(hist_percentile(h, 100), UINT64_MAX / 2);
	assert_int_equal(hist_max(h), UINT64_MAX / 2);
	uint64_t p90 = hist_percentile(h, 90);
	assert_true(p90 <= hist_max(h));
	assert_true(p90 >= ((uint64_t)1 << HIST_MAX_BITS) - 1);
	hist_record_n(h, 5, 0);
	assert_int_equal(hist_count(h), 4);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_bucket_edges),
		cmocka_unit_test(test_exact),
		cmocka_unit_test(test_relative_error),
		cmocka_unit_test(test_uniform),
		cmocka_unit_test(test_bimodal),
		cmocka_unit_test(test_merge),
		cmocka_unit_test(test_out_of_range),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
