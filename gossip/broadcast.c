/* broadcast.c: outgoing datagrams, compound packets filled under packet_size, and the queue of
 * pending broadcasts with its retransmit limit (SWIM §4.1 dissemination; memberlist's
 * TransmitLimitedQueue). */

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gossip_core.h"

static void send_raw(struct gossip *g, const struct gossip_addr *to, const uint8_t *p, size_t n)
{
	assert(n > 0 && n <= g->cfg.packet_size);
	if (g->n_out >= MAX_SENDS) {
		g->st.dropped++;
		return;
	}
	size_t cap = g->cap_out;
	if (!gossip__grow((void **)&g->out, &cap, (size_t)g->n_out + 1, sizeof(*g->out)))
		return;
	g->cap_out = (uint32_t)cap;
	if (!gossip__grow((void **)&g->obuf, &g->ocap, g->olen + n, 1))
		return;
	memcpy(g->obuf + g->olen, p, n);
	g->out[g->n_out++] = (struct out){ .to = *to, .off = g->olen, .len = (uint32_t)n };
	g->olen += n;
	g->st.packets_out++;
	g->st.bytes_out += n;
}

void gossip__pb_init(struct gossip *g, struct pb *b)
{
	b->buf = g->pkt;
	b->cap = g->cfg.packet_size;
	b->len = GOSSIP__COMPOUND_HDR;
	b->parts = 0;
}

static bool pb_fits(const struct pb *b, size_t n)
{
	return b->parts < GOSSIP__MAX_PARTS && b->len + GOSSIP__PART_HDR + n <= b->cap;
}

static bool pb_add_raw(struct pb *b, const uint8_t *p, size_t n)
{
	if (!pb_fits(b, n))
		return false;
	b->buf[b->len] = (uint8_t)n;
	b->buf[b->len + 1] = (uint8_t)(n >> 8);
	memcpy(b->buf + b->len + GOSSIP__PART_HDR, p, n);
	b->len += GOSSIP__PART_HDR + n;
	b->parts++;
	return true;
}

bool gossip__pb_add(struct pb *b, const struct gossip__msg *m)
{
	size_t n = gossip__msg_size(m);
	if (!pb_fits(b, n))
		return false;
	size_t w = gossip__msg_encode(m, b->buf + b->len + GOSSIP__PART_HDR, n);
	assert(w == n);
	b->buf[b->len] = (uint8_t)n;
	b->buf[b->len + 1] = (uint8_t)(n >> 8);
	b->len += GOSSIP__PART_HDR + n;
	b->parts++;
	return true;
}

void gossip__pb_send(struct gossip *g, struct pb *b, const struct gossip_addr *to)
{
	if (b->parts == 0)
		return;
	if (b->parts == 1) {
		size_t off = GOSSIP__COMPOUND_HDR + GOSSIP__PART_HDR;
		send_raw(g, to, b->buf + off, b->len - off);
		return;
	}
	b->buf[0] = GOSSIP__COMPOUND;
	b->buf[1] = (uint8_t)b->parts;
	send_raw(g, to, b->buf, b->len);
}

/* --- the broadcast queue --------------------------------------------------------------- */

/* The queue is kept sorted: fewest transmits first, then newest first, so fresh news travels
 * before old news (memberlist's TransmitLimitedQueue order). */
static bool bc_before(const struct bcast *x, const struct bcast *y)
{
	if (x->transmits != y->transmits)
		return x->transmits < y->transmits;
	return x->id > y->id;
}

static void bc_unlink(struct gossip *g, uint32_t i)
{
	struct bcast *b = g->q[i];
	b->m->bc = NULL;
	free(b);
	memmove(&g->q[i], &g->q[i + 1], (g->qn - i - 1) * sizeof(*g->q));
	g->qn--;
}

static uint32_t bc_index(const struct gossip *g, const struct bcast *b)
{
	for (uint32_t i = 0; i < g->qn; i++)
		if (g->q[i] == b)
			return i;
	assert(0 && "broadcast not queued");
	return UINT32_MAX;
}

void gossip__bc_drop(struct gossip *g, struct member *m)
{
	if (m->bc != NULL)
		bc_unlink(g, bc_index(g, m->bc));
}

/* Queues the news about m (an encoded message), replacing older news about it. A new entry
 * has no transmits and the newest id: it goes first. */
void gossip__bc_queue(struct gossip *g, struct member *m, const struct gossip__msg *msg)
{
	size_t n = gossip__msg_size(msg);
	struct bcast *b = malloc(sizeof(*b) + n);
	if (b == NULL)
		return;
	size_t w = gossip__msg_encode(msg, b->data, n);
	assert(w == n);
	b->m = m;
	b->id = ++g->bc_id;
	b->transmits = 0;
	b->len = (uint16_t)n;
	b->taken = false;
	if (m->bc != NULL) {
		uint32_t i = bc_index(g, m->bc);
		memmove(&g->q[1], &g->q[0], i * sizeof(*g->q));
		g->q[0] = b;
		free(m->bc);
		m->bc = b;
		return;
	}
	size_t cap = g->qcap;
	if (!gossip__grow((void **)&g->q, &cap, (size_t)g->qn + 1, sizeof(*g->q))) {
		free(b);
		return;
	}
	g->qcap = (uint32_t)cap;
	memmove(&g->q[1], &g->q[0], g->qn * sizeof(*g->q));
	g->q[0] = b;
	g->qn++;
	m->bc = b;
	while (g->qn > g->cfg.max_queue && g->qn > 0) {
		/* Drop the oldest news: newer news has replaced it in value. */
		uint32_t old = 0;
		for (uint32_t i = 1; i < g->qn; i++)
			if (g->q[i]->id < g->q[old]->id)
				old = i;
		bc_unlink(g, old);
		g->st.queue_dropped++;
	}
}

/* Fills b with pending broadcasts in queue order and retires those sent enough. The entries
 * sent keep their relative order (each gained one transmit), so are the others: one merge of
 * the two runs restores the order in O(queue). */
void gossip__bc_fill(struct gossip *g, struct pb *b)
{
	if (g->qn == 0)
		return;
	uint32_t limit = gossip_retransmit_limit(&g->cfg, g->n_live);
	uint32_t taken = 0, misses = 0, last = 0, top = 0;
	/* Stop at a full packet, or after a run of entries too big for the room left (the cost
	 * of one packet stays bounded however long the queue). */
	for (uint32_t i = 0; i < g->qn && misses < 32; i++) {
		if (b->cap - b->len < GOSSIP__PART_HDR + 5 || b->parts >= GOSSIP__MAX_PARTS)
			break;
		struct bcast *x = g->q[i];
		if (pb_add_raw(b, x->data, x->len)) {
			x->transmits++;
			x->taken = true;
			taken++;
			misses = 0;
			last = i;
			if (x->transmits > top)
				top = x->transmits;
		} else {
			misses++;
		}
	}
	if (taken == 0)
		return;
	/* Only q[0..end) can change order: every entry from `end` on has more transmits than any
	 * entry sent now, so it stays behind them. */
	uint32_t end = last + 1;
	while (end < g->qn && g->q[end]->transmits <= top)
		end++;
	size_t cap = g->qtmp_cap;
	if (!gossip__grow((void **)&g->qtmp, &cap, end, sizeof(*g->qtmp))) {
		/* Keep the queue valid: unmark; the order is restored at the next success. */
		for (uint32_t i = 0; i < end; i++)
			g->q[i]->taken = false;
		return;
	}
	g->qtmp_cap = cap;
	/* Split into the two runs (taken ones into qtmp's tail, in order), then merge. */
	uint32_t nt = 0, nr = 0;
	struct bcast **tk = g->qtmp + (end - taken);
	for (uint32_t i = 0; i < end; i++) {
		struct bcast *x = g->q[i];
		if (x->taken) {
			x->taken = false;
			if (x->transmits >= limit) {
				x->m->bc = NULL;
				free(x);
			} else {
				tk[nt++] = x;
			}
		} else {
			g->q[nr++] = x;
		}
	}
	/* Merge q[0..nr) and tk[0..nt) into qtmp[0..), which never overtakes tk. */
	uint32_t i = 0, j = 0, k = 0;
	while (i < nr || j < nt) {
		if (j >= nt || (i < nr && bc_before(g->q[i], tk[j])))
			g->qtmp[k++] = g->q[i++];
		else
			g->qtmp[k++] = tk[j++];
	}
	memcpy(g->q, g->qtmp, k * sizeof(*g->q));
	if (k < end)
		memmove(&g->q[k], &g->q[end], (g->qn - end) * sizeof(*g->q));
	g->qn -= end - k;
}
