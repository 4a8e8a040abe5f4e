/* member.c: the member table (a probe-ordered array plus a hash index by name), state changes
 * with their counters and timers, and the events they produce. */

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gossip_core.h"

uint64_t gossip__name_hash(const uint8_t *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

bool gossip__grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return true;
	size_t n = *cap ? *cap : 16;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * size);
	if (q == NULL)
		return false;
	*p = q;
	*cap = n;
	return true;
}

/* --- events ---------------------------------------------------------------------------- */

static bool ebuf_put(struct gossip *g, const void *p, size_t n, size_t *off)
{
	if (!gossip__grow((void **)&g->ebuf, &g->ecap, g->elen + n + 1, 1))
		return false;
	*off = g->elen;
	if (n)
		memcpy(g->ebuf + g->elen, p, n);
	g->ebuf[g->elen + n] = 0;
	g->elen += n + 1;
	return true;
}

static void ev_push(struct gossip *g, uint32_t type, uint32_t prev, const struct member *m)
{
	if (!gossip__grow((void **)&g->ev, &g->cap_ev, g->n_ev + 1, sizeof(*g->ev)))
		return;
	struct ev *e = &g->ev[g->n_ev];
	if (!ebuf_put(g, m->name, m->name_len, &e->name_off) ||
	    !ebuf_put(g, m->meta, m->meta_len, &e->meta_off))
		return;
	e->type = type;
	e->prev = prev;
	e->addr = m->addr;
	e->state = m->state;
	e->inc = m->inc;
	e->name_len = m->name_len;
	e->meta_len = m->meta_len;
	e->since = m->since;
	e->self = m->self;
	g->n_ev++;
}

/* --- the member table ------------------------------------------------------------------ */

/* The home slot of a hash: FNV's low bits vary little between names like "node-17" and
 * "node-18", so the index takes the high bits of a multiplicative mix. */
static uint32_t slot_of(uint64_t h, uint32_t mask)
{
	return (uint32_t)((h * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

struct member *gossip__find(const struct gossip *g, const uint8_t *name, size_t len)
{
	if (g->ht_cap == 0)
		return NULL;
	uint64_t h = gossip__name_hash(name, len);
	uint32_t mask = g->ht_cap - 1;
	for (uint32_t i = slot_of(h, mask), n = 0; n < g->ht_cap; i = (i + 1) & mask, n++) {
		const struct gossip__slot *sl = &g->ht[i];
		if (sl->m == NULL)
			return NULL;
		if (sl->hash == h && sl->m->name_len == len && memcmp(sl->m->name, name, len) == 0)
			return sl->m;
	}
	return NULL;
}

static void ht_put(struct gossip__slot *ht, uint32_t cap, struct member *m)
{
	uint32_t mask = cap - 1;
	uint32_t i = slot_of(m->hash, mask);
	while (ht[i].m != NULL)
		i = (i + 1) & mask;
	ht[i] = (struct gossip__slot){ .hash = m->hash, .m = m };
}

/* Rebuilds the hash table with room for `n` members at a load of at most one half. */
static bool ht_rebuild(struct gossip *g, uint32_t n)
{
	uint32_t cap = 16;
	while (cap < 2 * (uint64_t)n)
		cap *= 2;
	struct gossip__slot *ht = calloc(cap, sizeof(*ht));
	if (ht == NULL)
		return false;
	for (uint32_t i = 0; i < g->n_mem; i++)
		ht_put(ht, cap, g->mem[i]);
	free(g->ht);
	g->ht = ht;
	g->ht_cap = cap;
	return true;
}

void gossip__member_free(struct member *m)
{
	if (m == NULL)
		return;
	free(m->name);
	free(m->meta);
	free(m->susp);
	free(m);
}

bool gossip__set_meta(struct member *m, const uint8_t *meta, uint32_t len)
{
	if (len == m->meta_len && (len == 0 || memcmp(m->meta, meta, len) == 0))
		return true;
	uint8_t *p = NULL;
	if (len) {
		p = malloc(len);
		if (p == NULL)
			return false;
		memcpy(p, meta, len);
	}
	free(m->meta);
	m->meta = p;
	m->meta_len = len;
	return true;
}

/* Adds an alive member at a random place in the probe order (memberlist does the same, so a
 * newcomer is probed within one pass wherever the pass stands). */
struct member *gossip__member_add(struct gossip *g, const uint8_t *name, uint8_t len,
				  const struct gossip_addr *addr, uint32_t inc, const uint8_t *meta,
				  uint32_t meta_len, uint64_t now)
{
	if (g->n_mem >= g->cfg.max_members) {
		g->st.dropped++;
		return NULL;
	}
	if (g->n_mem + 1 > g->cap_mem) {
		size_t cap = g->cap_mem;
		if (!gossip__grow((void **)&g->mem, &cap, (size_t)g->n_mem + 1, sizeof(*g->mem)))
			return NULL;
		uint32_t *pick = realloc(g->pick, cap * sizeof(*pick));
		if (pick == NULL)
			return NULL;
		g->pick = pick;
		g->cap_mem = (uint32_t)cap;
	}
	if (2 * ((uint64_t)g->n_mem + 1) > g->ht_cap && !ht_rebuild(g, g->n_mem + 1))
		return NULL;
	struct member *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	m->name = malloc((size_t)len + 1);
	if (m->name == NULL || !gossip__set_meta(m, meta, meta_len)) {
		gossip__member_free(m);
		return NULL;
	}
	memcpy(m->name, name, len);
	m->name[len] = '\0';
	m->name_len = len;
	m->hash = gossip__name_hash(name, len);
	m->addr = *addr;
	m->state = GOSSIP_ALIVE;
	m->inc = inc;
	m->since = now;
	uint32_t at = g->n_mem;
	g->mem[g->n_mem++] = m;
	if (at > 0) {
		uint32_t j = (uint32_t)gossip__rng_below(&g->rng, (uint64_t)at + 1);
		g->mem[at] = g->mem[j];
		g->mem[j] = m;
	}
	ht_put(g->ht, g->ht_cap, m);
	g->n_live++;
	ev_push(g, GOSSIP_EV_UPDATE, 0, m);
	return m;
}

/* Forgets member i (reaping). */
void gossip__member_remove(struct gossip *g, uint32_t i)
{
	struct member *m = g->mem[i];
	assert(!m->self && !gossip__is_live(m->state));
	ev_push(g, GOSSIP_EV_REMOVE, m->state, m);
	gossip__bc_drop(g, m);
	if (g->probe.target == m) {
		g->probe.target = NULL;
		g->probe.acked = true; /* nothing left to judge */
	}
	g->mem[i] = g->mem[--g->n_mem];
	gossip__member_free(m);
	if (!ht_rebuild(g, g->n_mem)) {
		/* Keep the old table valid by clearing the freed slot's chain: rebuild in place. */
		memset(g->ht, 0, g->ht_cap * sizeof(*g->ht));
		for (uint32_t j = 0; j < g->n_mem; j++)
			ht_put(g->ht, g->ht_cap, g->mem[j]);
	}
}

/* Changes a member's state and incarnation, keeping counters, timers and events right. */
void gossip__set_state(struct gossip *g, struct member *m, uint32_t state, uint32_t inc,
		       uint64_t now)
{
	uint32_t prev = m->state;
	if (prev == state && m->inc == inc)
		return;
	if (gossip__is_live(prev) && !gossip__is_live(state))
		g->n_live--;
	else if (!gossip__is_live(prev) && gossip__is_live(state))
		g->n_live++;
	if (prev == GOSSIP_SUSPECT && state != GOSSIP_SUSPECT)
		g->n_suspects--;
	else if (prev != GOSSIP_SUSPECT && state == GOSSIP_SUSPECT)
		g->n_suspects++;
	if (prev != state)
		m->since = now;
	m->state = state;
	m->inc = inc;
	if (state != GOSSIP_SUSPECT) {
		free(m->susp);
		m->susp = NULL;
	}
	if (state == GOSSIP_DEAD && !m->self)
		g->next_scan = gossip__min_u64(g->next_scan, now + g->cfg.reap_dead_ms);
	if (state == GOSSIP_LEFT && !m->self)
		g->next_scan = gossip__min_u64(g->next_scan, now + g->cfg.reap_left_ms);
	ev_push(g, GOSSIP_EV_UPDATE, prev, m);
}
