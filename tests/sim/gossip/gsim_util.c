/* gsim_util.c: the gossip simulator's generator, event queue, hashing and percentiles.
 *
 * The generator is xoshiro256** (Blackman and Vigna) seeded through splitmix64. The queue is a
 * binary min-heap ordered by (at, seq): seq is the scheduling order, unique in a run, so events
 * at the same simulated ms always come out in the order they were scheduled, whatever the
 * heap's shape. Push and pop cost O(log n).
 */
#include <stdlib.h>

#include "gsim.h"

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

uint64_t gsim_seed_mix(uint64_t seed, uint64_t a, uint64_t b)
{
	uint64_t x = seed;
	uint64_t h = splitmix64(&x);
	x = h ^ (a * 0xd6e8feb86659fd93ULL);
	h = splitmix64(&x);
	x = h ^ (b * 0xa0761d6478bd642fULL);
	return splitmix64(&x);
}

void gsim_rng_init(struct gsim_rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t gsim_rng_next(struct gsim_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

uint64_t gsim_rng_below(struct gsim_rng *r, uint64_t n)
{
	if (n == 0)
		return 0;
	/* Modulo bias is below 2^-40 for the n used here (members, milliseconds). */
	return gsim_rng_next(r) % n;
}

uint64_t gsim_rng_range(struct gsim_rng *r, uint64_t lo, uint64_t hi)
{
	if (hi <= lo)
		return lo;
	return lo + gsim_rng_below(r, hi - lo + 1);
}

bool gsim_rng_bp(struct gsim_rng *r, uint32_t bp)
{
	return bp > 0 && gsim_rng_below(r, 10000) < bp;
}

uint64_t gsim_hash(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

uint64_t gsim_hash_u64(uint64_t h, uint64_t v)
{
	/* One multiply-xorshift round per word: the trace hash sees every event, so it is cheap. */
	h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	h *= 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 31);
}

static bool before(const struct gsim_event *a, const struct gsim_event *b)
{
	if (a->at != b->at)
		return a->at < b->at;
	return a->seq < b->seq;
}

int gsim_queue_push(struct gsim_queue *q, struct gsim_event e)
{
	if (q->len == q->cap) {
		if (q->cap >= GSIM_MAX_QUEUE)
			return -1;
		size_t cap = q->cap ? q->cap * 2 : 1024;
		struct gsim_event *ev = realloc(q->ev, cap * sizeof(*ev));
		if (ev == NULL)
			return -1;
		q->ev = ev;
		q->cap = cap;
	}
	e.seq = q->seq++;
	size_t i = q->len++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!before(&e, &q->ev[parent]))
			break;
		q->ev[i] = q->ev[parent];
		i = parent;
	}
	q->ev[i] = e;
	return 0;
}

bool gsim_queue_pop(struct gsim_queue *q, struct gsim_event *out)
{
	if (q->len == 0)
		return false;
	*out = q->ev[0];
	struct gsim_event last = q->ev[--q->len];
	size_t i = 0;
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= q->len)
			break;
		if (child + 1 < q->len && before(&q->ev[child + 1], &q->ev[child]))
			child++;
		if (!before(&q->ev[child], &last))
			break;
		q->ev[i] = q->ev[child];
		i = child;
	}
	if (q->len > 0)
		q->ev[i] = last;
	return true;
}

void gsim_queue_free(struct gsim_queue *q)
{
	for (size_t i = 0; i < q->len; i++)
		free(q->ev[i].data);
	free(q->ev);
	q->ev = NULL;
	q->len = q->cap = 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

double gsim_percentile(uint64_t *v, size_t n, double p)
{
	if (n == 0)
		return 0.0;
	qsort(v, n, sizeof(*v), cmp_u64);
	/* Nearest rank: the smallest value with at least p% of the values at or below it. */
	double rank = p / 100.0 * (double)n;
	size_t k = (size_t)rank;
	if ((double)k < rank)
		k++;
	if (k == 0)
		k = 1;
	if (k > n)
		k = n;
	return (double)v[k - 1];
}

double gsim_mean(const uint64_t *v, size_t n)
{
	if (n == 0)
		return 0.0;
	double sum = 0.0;
	for (size_t i = 0; i < n; i++)
		sum += (double)v[i];
	return sum / (double)n;
}
