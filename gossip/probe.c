/* probe.c: failure detection (SWIM §4.1, §4.3): randomized round-robin probes, ping-req
 * through relays with nacks, the local health multiplier (Lifeguard §IV-A), the buddy system
 * (Lifeguard §IV-C), and the periodic gossip and push-pull rounds. */

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gossip_core.h"

/* Probe interval and timeout scaled by the local health multiplier (Lifeguard §IV-A). */
static uint64_t scaled(const struct gossip *g, uint32_t ms)
{
	return (uint64_t)ms * ((uint64_t)g->lhm + 1);
}

void gossip__lhm_add(struct gossip *g, int delta)
{
	int64_t v = (int64_t)g->lhm + delta;
	int64_t hi = g->cfg.awareness_max > 0 ? (int64_t)g->cfg.awareness_max - 1 : 0;
	if (v < 0)
		v = 0;
	if (v > hi)
		v = hi;
	g->lhm = (uint32_t)v;
}

/* --- probing (SWIM §4.1, §4.3; Lifeguard §IV-A) ----------------------------------------- */

static void shuffle(struct gossip *g)
{
	for (uint32_t i = g->n_mem; i > 1; i--) {
		uint32_t j = (uint32_t)gossip__rng_below(&g->rng, i);
		struct member *t = g->mem[i - 1];
		g->mem[i - 1] = g->mem[j];
		g->mem[j] = t;
	}
}

static struct member *next_target(struct gossip *g)
{
	for (uint32_t n = 0; n <= g->n_mem; n++) {
		if (g->probe_idx >= g->n_mem) {
			shuffle(g);
			g->probe_idx = 0;
		}
		struct member *m = g->mem[g->probe_idx++];
		if (!m->self && gossip__is_live(m->state))
			return m;
	}
	return NULL;
}

/* Chooses up to k members satisfying ok(), excluding `skip` and self, at random into g->pick;
 * returns how many. A few random draws usually suffice (most members are eligible); when they
 * do not, one pass over the view decides. */
static uint32_t pick_random(struct gossip *g, uint32_t k, const struct member *skip,
			    bool (*ok)(const struct gossip *, const struct member *))
{
	uint32_t n = 0;
	if (k == 0 || g->n_mem < 2)
		return 0;
	if (k <= 16 && g->n_mem > 8 * (uint64_t)k) {
		for (uint32_t tries = 0; tries < 4 * k + 8 && n < k; tries++) {
			uint32_t i = (uint32_t)gossip__rng_below(&g->rng, g->n_mem);
			const struct member *m = g->mem[i];
			if (m == skip || m->self || !ok(g, m))
				continue;
			bool dup = false;
			for (uint32_t j = 0; j < n && !dup; j++)
				dup = g->pick[j] == i;
			if (!dup)
				g->pick[n++] = i;
		}
		if (n == k)
			return k;
		n = 0;
	}
	for (uint32_t i = 0; i < g->n_mem; i++) {
		const struct member *m = g->mem[i];
		if (m != skip && !m->self && ok(g, m))
			g->pick[n++] = i;
	}
	if (k > n)
		k = n;
	for (uint32_t i = 0; i < k; i++) {
		uint32_t j = i + (uint32_t)gossip__rng_below(&g->rng, n - i);
		uint32_t t = g->pick[i];
		g->pick[i] = g->pick[j];
		g->pick[j] = t;
	}
	return k;
}

static bool ok_alive(const struct gossip *g, const struct member *m)
{
	(void)g;
	return m->state == GOSSIP_ALIVE;
}

/* Live members, and the dead for gossip_to_dead_ms (a member wrongly declared dead hears it
 * and refutes); not members that left: they are gone. */
static bool ok_gossip(const struct gossip *g, const struct member *m)
{
	if (gossip__is_live(m->state))
		return true;
	return m->state == GOSSIP_DEAD && g->now < m->since + g->cfg.gossip_to_dead_ms;
}

/* A suspect we have probed fewer than SUSPECT_PROBES times since we began to suspect it goes
 * before the round-robin order (the least probed first): our probe carries the suspicion to it
 * (the buddy system), so a live member that missed the news, or whose refutation we missed,
 * answers with its alive in time; a few tries get through a lossy network. Without this a
 * member of a large pool probes a given suspect only once per pass (n intervals), usually
 * after the suspicion has expired. */
static struct member *suspect_to_probe(struct gossip *g)
{
	struct member *best = NULL;
	for (uint32_t i = 0; i < g->n_mem; i++) {
		struct member *m = g->mem[i];
		if (m->state != GOSSIP_SUSPECT || m->susp == NULL ||
		    m->susp->probes >= SUSPECT_PROBES)
			continue;
		if (best == NULL || m->susp->probes < best->susp->probes)
			best = m;
	}
	return best;
}

static void probe_start(struct gossip *g, uint64_t now)
{
	g->next_probe = now + scaled(g, g->cfg.probe_interval_ms);
	/* Suspects take at most every other probe: the round robin must keep advancing, or a
	 * member that crashed unsuspected is never probed while suspicions abound (heavy loss). */
	struct member *t = g->n_suspects > 0 && !g->probe_was_suspect ? suspect_to_probe(g) : NULL;
	g->probe_was_suspect = t != NULL;
	/* A repeat: we have probed (or accused) this suspect since its suspicion began. */
	bool repeat = t != NULL && t->susp->probes > 0;
	if (t == NULL)
		t = next_target(g);
	if (t == NULL)
		return;
	if (t->susp != NULL)
		t->susp->probes++;
	struct probe *p = &g->probe;
	memset(p, 0, sizeof(*p));
	p->active = true;
	p->seq = ++g->seq;
	p->target = t;
	p->t_indirect = now + scaled(g, g->cfg.probe_timeout_ms);
	p->t_end = g->next_probe;
	p->repeat = repeat;
	struct pb b;
	gossip__pb_init(g, &b);
	if (t->state == GOSSIP_SUSPECT) {
		/* Buddy system (Lifeguard §IV-C): tell the suspect at once, so it can refute. */
		struct gossip__msg s = gossip__msg_accuse(
			GOSSIP__SUSPECT, t, (const uint8_t *)g->self->name, g->self->name_len);
		gossip__pb_add(&b, &s);
	}
	struct gossip__msg ping = { .type = GOSSIP__PING,
				    .num = p->seq,
				    .name = (const uint8_t *)t->name,
				    .name_len = t->name_len };
	gossip__pb_add(&b, &ping);
	gossip__bc_fill(g, &b);
	gossip__pb_send(g, &b, &t->addr);
	g->st.probes++;
}

static void probe_indirect(struct gossip *g, uint64_t now)
{
	struct probe *p = &g->probe;
	p->indirect = true;
	struct member *t = p->target;
	if (t == NULL)
		return;
	uint32_t k = pick_random(g, g->cfg.indirect_checks, t, ok_alive);
	if (k == 0)
		return;
	uint64_t left = p->t_end > now ? p->t_end - now : 0;
	/* The relay nacks at 80% of the time we still wait, so its nack arrives in time. */
	uint64_t nack = left * 8 / 10;
	struct gossip__msg req = { .type = GOSSIP__PINGREQ,
				   .num = p->seq,
				   .nack_ms = (uint32_t)gossip__min_u64(nack, MAX_NACK_MS),
				   .name = (const uint8_t *)t->name,
				   .name_len = t->name_len,
				   .addr = t->addr };
	for (uint32_t i = 0; i < k; i++) {
		struct member *via = g->mem[g->pick[i]];
		struct pb b;
		gossip__pb_init(g, &b);
		gossip__pb_add(&b, &req);
		gossip__bc_fill(g, &b);
		gossip__pb_send(g, &b, &via->addr);
	}
	p->nacks_expected = k;
	g->st.indirect_probes++;
}

static void probe_end(struct gossip *g, uint64_t now)
{
	struct probe *p = &g->probe;
	p->active = false;
	if (p->acked || p->target == NULL)
		return;
	g->st.probes_failed++;
	/* Lifeguard: each relay that did not even nack suggests that the fault may be ours. When
	 * every relay nacked, they vouch that the target alone is silent and our own health is
	 * not in question (memberlist's rule); with no relay to ask, the failure itself counts. */
	uint32_t missing = p->nacks_expected > p->nacks ? p->nacks_expected - p->nacks : 0;
	/* A repeated probe of a suspect is expected to fail as the first did, and on a lossy
	 * network some nack goes missing now and then: charging that would slow this member
	 * whenever others crash (suspects are probed first). It counts only when no relay at all
	 * answered, which is what a member that cannot hear sees on every probe. */
	if (p->nacks_expected == 0)
		gossip__lhm_add(g, p->repeat ? 0 : 1);
	else if (!p->repeat || p->nacks == 0)
		gossip__lhm_add(g, (int)missing);
	if (gossip__is_live(p->target->state))
		gossip__suspect_local(g, p->target, now);
}

void gossip__probe_tick(struct gossip *g, uint64_t now)
{
	struct probe *p = &g->probe;
	if (p->active && !p->acked && !p->indirect && now >= p->t_indirect)
		probe_indirect(g, now);
	if (p->active && now >= p->t_end)
		probe_end(g, now);
	if (!p->active && now >= g->next_probe) {
		if (g->leaving)
			g->next_probe = now + scaled(g, g->cfg.probe_interval_ms);
		else
			probe_start(g, now);
	}
}

void gossip__relay_tick(struct gossip *g, uint64_t now)
{
	if (now < g->relay_next)
		return;
	uint64_t next = UINT64_MAX;
	for (uint32_t i = 0; i < MAX_RELAYS; i++) {
		struct relay *r = &g->relays[i];
		if (!r->used)
			continue;
		if (now < r->nack_at) {
			next = gossip__min_u64(next, r->nack_at);
			continue;
		}
		struct pb b;
		gossip__pb_init(g, &b);
		struct gossip__msg nack = { .type = GOSSIP__NACK, .num = r->orig_seq };
		gossip__pb_add(&b, &nack);
		gossip__pb_send(g, &b, &r->requester);
		g->st.nacks_sent++;
		r->used = false;
	}
	g->relay_next = next;
}

void gossip__on_ping(struct gossip *g, const struct gossip_addr *from,
		     const struct gossip__msg *msg)
{
	/* A ping meant for a previous owner of our address gets no ack. */
	if (msg->name_len != g->self->name_len ||
	    memcmp(msg->name, g->self->name, msg->name_len) != 0)
		return;
	struct pb b;
	gossip__pb_init(g, &b);
	struct gossip__msg ack = { .type = GOSSIP__ACK, .num = msg->num };
	gossip__pb_add(&b, &ack);
	if (g->stale_self) {
		/* Someone missed our refutation: queue our alive afresh, so it goes first in this
		 * ack (the queue's newest entry) and gets a new retransmit budget. */
		struct gossip__msg a = gossip__msg_alive(g->self);
		gossip__bc_queue(g, g->self, &a);
		g->stale_self = false;
	}
	gossip__bc_fill(g, &b);
	gossip__pb_send(g, &b, from);
}

void gossip__on_ack(struct gossip *g, const struct gossip__msg *msg)
{
	struct probe *p = &g->probe;
	if (p->active && !p->acked && msg->num == p->seq) {
		p->acked = true;
		gossip__lhm_add(g, -1);
		return;
	}
	for (uint32_t i = 0; i < MAX_RELAYS; i++) {
		struct relay *r = &g->relays[i];
		if (r->used && r->seq == msg->num) {
			struct pb b;
			gossip__pb_init(g, &b);
			struct gossip__msg ack = { .type = GOSSIP__ACK, .num = r->orig_seq };
			gossip__pb_add(&b, &ack);
			gossip__pb_send(g, &b, &r->requester);
			r->used = false;
			return;
		}
	}
}

void gossip__on_nack(struct gossip *g, const struct gossip__msg *msg)
{
	struct probe *p = &g->probe;
	if (p->active && p->indirect && msg->num == p->seq && p->nacks < p->nacks_expected)
		p->nacks++;
}

void gossip__on_pingreq(struct gossip *g, const struct gossip_addr *from,
			const struct gossip__msg *msg, uint64_t now)
{
	if (msg->name_len == g->self->name_len &&
	    memcmp(msg->name, g->self->name, msg->name_len) == 0)
		return;
	struct relay *r = NULL;
	for (uint32_t i = 0; i < MAX_RELAYS && r == NULL; i++)
		if (!g->relays[i].used)
			r = &g->relays[i];
	if (r == NULL) {
		g->st.dropped++;
		return;
	}
	r->used = true;
	r->seq = ++g->seq;
	r->orig_seq = msg->num;
	r->requester = *from;
	r->nack_at = now + (msg->nack_ms < MAX_NACK_MS ? msg->nack_ms : MAX_NACK_MS);
	g->relay_next = gossip__min_u64(g->relay_next, r->nack_at);
	struct pb b;
	gossip__pb_init(g, &b);
	const struct member *t = gossip__find(g, msg->name, msg->name_len);
	if (t != NULL && t->state == GOSSIP_SUSPECT) {
		/* The buddy system applies to relayed pings too. */
		struct gossip__msg s = gossip__msg_accuse(
			GOSSIP__SUSPECT, t, (const uint8_t *)g->self->name, g->self->name_len);
		gossip__pb_add(&b, &s);
	}
	struct gossip__msg ping = {
		.type = GOSSIP__PING, .num = r->seq, .name = msg->name, .name_len = msg->name_len
	};
	gossip__pb_add(&b, &ping);
	gossip__bc_fill(g, &b);
	gossip__pb_send(g, &b, &msg->addr);
}

/* --- gossip rounds and push-pull (SWIM §4.1; memberlist state.go) ---------------------- */

void gossip__round(struct gossip *g)
{
	if (g->qn == 0)
		return;
	uint32_t k = pick_random(g, g->cfg.gossip_nodes, NULL, ok_gossip);
	for (uint32_t i = 0; i < k && g->qn > 0; i++) {
		struct member *to = g->mem[g->pick[i]];
		struct pb b;
		gossip__pb_init(g, &b);
		gossip__bc_fill(g, &b);
		gossip__pb_send(g, &b, &to->addr);
	}
}

void gossip__pushpull_round(struct gossip *g)
{
	uint32_t k = pick_random(g, 1, NULL, ok_alive);
	if (k == 0 || g->n_pp >= MAX_PUSHPULLS)
		return;
	g->pp[g->n_pp++] =
		(struct gossip_pushpull){ .to = g->mem[g->pick[0]]->addr, .join = false };
}
