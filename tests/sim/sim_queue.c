/* sim_queue.c: the simulator's event queue, a binary min-heap.
 *
 * Ordered by (at, seq): seq is the scheduling order, unique per seed, so two
 * events at the same simulated ms always come out in the order they were
 * scheduled, whatever the heap's shape. Push and pop cost O(log n).
 */
#include <stdlib.h>

#include "sim.h"

static bool before(const struct sim_event *a, const struct sim_event *b)
{
	if (a->at != b->at)
		return a->at < b->at;
	return a->seq < b->seq;
}

int sim_queue_push(struct sim_queue *q, struct sim_event e)
{
	if (q->len == q->cap) {
		if (q->cap >= SIM_MAX_QUEUE)
			return -1;
		size_t cap = q->cap ? q->cap * 2 : 256;
		struct sim_event *ev = realloc(q->ev, cap * sizeof(*ev));
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

bool sim_queue_pop(struct sim_queue *q, struct sim_event *out)
{
	if (q->len == 0)
		return false;
	*out = q->ev[0];
	struct sim_event last = q->ev[--q->len];
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

void sim_queue_free(struct sim_queue *q)
{
	for (size_t i = 0; i < q->len; i++)
		free(q->ev[i].msg);
	free(q->ev);
	q->ev = NULL;
	q->len = q->cap = 0;
}
