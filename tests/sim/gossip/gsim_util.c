/* gsim_util.c: the gossip simulator's event queue, trace hashing and percentiles (the generator
 * is tests/sim/lib/sim_rng.h, shared with raft-sim).
 *
 * The queue is a
 * binary min-heap ordered by (at, seq): seq is the scheduling order, unique in a run, so events
 * at the same simulated ms always come out in the order they were scheduled, whatever the
 * heap's shape. Push and pop cost O(log n).
 */
#include <stdlib.h>

#include "gsim.h"

bool gsim_rng_bp(struct sim_rng *r, uint32_t bp)
{
	return bp > 0 && sim_rng_below(r, 10000) < bp;
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
