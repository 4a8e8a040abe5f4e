/* rules.c: what news about a member does to our view: the ordering rules of alive, suspect,
 * dead and left by incarnation (SWIM §4.2), refutation, Lifeguard's dynamic suspicion timeouts
 * (Lifeguard §IV-B), and the scan that ends suspicions and reaps the dead. */

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gossip_core.h"

/* --- formulas (Lifeguard §IV-B, memberlist util.go) ------------------------------------ */

static uint32_t susp_k(const struct gossip_config *cfg, uint32_t n)
{
	uint32_t k = cfg->indirect_checks < MAX_CONFIRM ? cfg->indirect_checks : MAX_CONFIRM;
	uint32_t bound = n >= 2 ? n - 2 : 0;
	return k < bound ? k : bound;
}

static uint64_t susp_min(const struct gossip_config *cfg, uint32_t n)
{
	double scale = n > 1 ? log10((double)n) : 0.0;
	if (scale < 1.0)
		scale = 1.0;
	return (uint64_t)((double)cfg->suspicion_mult * scale * (double)cfg->probe_interval_ms);
}

static uint64_t susp_timeout(uint64_t min, uint64_t max, uint32_t k, uint32_t c)
{
	if (k < 1)
		return min;
	if (c > k)
		c = k;
	double frac = log((double)c + 1.0) / log((double)k + 1.0);
	double t = (double)max - ((double)max - (double)min) * frac;
	uint64_t r = (uint64_t)floor(t);
	return r < min ? min : r;
}

uint64_t gossip_suspicion_timeout(const struct gossip_config *cfg, uint32_t n, uint32_t c)
{
	uint64_t min = susp_min(cfg, n);
	uint64_t max = (uint64_t)cfg->suspicion_max_mult * min;
	if (max < min)
		max = min;
	return susp_timeout(min, max, susp_k(cfg, n), c);
}

uint32_t gossip_retransmit_limit(const struct gossip_config *cfg, uint32_t n)
{
	double s = ceil(log10((double)n + 1.0));
	if (s < 1.0)
		s = 1.0;
	uint32_t r = cfg->retransmit_mult * (uint32_t)s;
	return r ? r : 1;
}

uint64_t gossip_pushpull_interval(const struct gossip_config *cfg, uint32_t n)
{
	uint64_t base = cfg->pushpull_interval_ms;
	if (n <= 32)
		return base;
	double mult = ceil(log2((double)n) - log2(32.0)) + 1.0;
	return (uint64_t)((double)base * mult);
}

/* --- messages -------------------------------------------------------------------------- */

struct gossip__msg gossip__msg_alive(const struct member *m)
{
	return (struct gossip__msg){ .type = GOSSIP__ALIVE,
				     .num = m->inc,
				     .name = (const uint8_t *)m->name,
				     .name_len = m->name_len,
				     .addr = m->addr,
				     .meta = m->meta,
				     .meta_len = (uint16_t)m->meta_len };
}

struct gossip__msg gossip__msg_accuse(uint8_t type, const struct member *m, const uint8_t *from,
				      uint8_t from_len)
{
	return (struct gossip__msg){ .type = type,
				     .num = m->inc,
				     .name = (const uint8_t *)m->name,
				     .name_len = m->name_len,
				     .from = from,
				     .from_len = from_len };
}

/* This member is said to be suspect, dead or older than it is: announce a higher incarnation
 * (SWIM §4.2). Lifeguard counts a refuted suspicion as a sign of our own slowness. */
void gossip__refute(struct gossip *g, uint32_t inc, bool accused, uint64_t now)
{
	struct member *s = g->self;
	uint32_t next = inc > s->inc ? inc : s->inc;
	if (next == UINT32_MAX)
		return; /* cannot go higher; 2^32 refutations do not happen */
	gossip__set_state(g, s, GOSSIP_ALIVE, next + 1, now);
	g->st.refutations++;
	if (accused)
		gossip__lhm_add(g, 1);
	struct gossip__msg a = gossip__msg_alive(s);
	gossip__bc_queue(g, s, &a);
}

void gossip__on_alive(struct gossip *g, const struct gossip__msg *msg, uint64_t now)
{
	struct member *m = gossip__find(g, msg->name, msg->name_len);
	if (m != NULL && m->self) {
		if (g->leaving)
			return;
		if (msg->num > m->inc ||
		    (msg->num == m->inc &&
		     (!gossip_addr_equal(&msg->addr, &m->addr) || msg->meta_len != m->meta_len ||
		      (msg->meta_len && memcmp(msg->meta, m->meta, msg->meta_len) != 0))))
			gossip__refute(g, msg->num, false, now);
		return;
	}
	if (m == NULL) {
		m = gossip__member_add(g, msg->name, msg->name_len, &msg->addr, msg->num, msg->meta,
				       msg->meta_len, now);
		if (m != NULL) {
			struct gossip__msg a = gossip__msg_alive(m);
			gossip__bc_queue(g, m, &a);
		}
		return;
	}
	if (!gossip_addr_equal(&m->addr, &msg->addr) && gossip__is_live(m->state)) {
		/* Two live members claim one name: keep the one we know (memberlist does too). */
		g->st.conflicts++;
		return;
	}
	/* alive(i) overrides any state at a lower incarnation. */
	if (msg->num <= m->inc)
		return;
	if (!gossip__set_meta(m, msg->meta, msg->meta_len))
		return;
	m->addr = msg->addr;
	/* The incarnation always changes here, so set_state reports the new address and meta. */
	gossip__set_state(g, m, GOSSIP_ALIVE, msg->num, now);
	struct gossip__msg a = gossip__msg_alive(m);
	gossip__bc_queue(g, m, &a);
}

static void susp_start(struct gossip *g, struct member *m, uint64_t from_hash, uint64_t now)
{
	struct suspicion *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return;
	uint32_t n = g->n_live;
	s->start = now;
	s->min_ms = susp_min(&g->cfg, n);
	s->max_ms = (uint64_t)g->cfg.suspicion_max_mult * s->min_ms;
	if (s->max_ms < s->min_ms)
		s->max_ms = s->min_ms;
	s->k = susp_k(&g->cfg, n);
	s->c = 0;
	s->from[0] = from_hash;
	s->probes = from_hash == g->self->hash; /* our own failed probe began it */
	s->deadline = now + susp_timeout(s->min_ms, s->max_ms, s->k, 0);
	free(m->susp);
	m->susp = s;
	g->next_scan = gossip__min_u64(g->next_scan, s->deadline);
}

/* A confirmation from a member that has not accused m yet shortens the timeout; returns
 * whether it counted. */
static bool susp_confirm(struct gossip *g, struct member *m, uint64_t from_hash, uint64_t now)
{
	struct suspicion *s = m->susp;
	if (s == NULL || s->c >= s->k)
		return false;
	for (uint32_t i = 0; i <= s->c; i++)
		if (s->from[i] == from_hash)
			return false;
	s->from[++s->c] = from_hash;
	uint64_t d = s->start + susp_timeout(s->min_ms, s->max_ms, s->k, s->c);
	s->deadline = d < now ? now : d;
	g->next_scan = gossip__min_u64(g->next_scan, s->deadline);
	return true;
}

/* An accusation of ourselves at an incarnation we already refuted: the sender holds stale
 * news and may have missed our refutation, so it gets our alive directly (gossip_recv). */
static bool stale_self(struct gossip *g, const struct member *m, const struct gossip__msg *msg)
{
	if (m != NULL && m->self && msg->num < m->inc && !g->leaving) {
		g->stale_self = true;
		return true;
	}
	return false;
}

void gossip__on_suspect(struct gossip *g, const struct gossip__msg *msg, uint64_t now)
{
	struct member *m = gossip__find(g, msg->name, msg->name_len);
	if (stale_self(g, m, msg) || m == NULL || msg->num < m->inc)
		return;
	if (m->self) {
		if (!g->leaving)
			gossip__refute(g, msg->num, true, now);
		return;
	}
	if (!gossip__is_live(m->state))
		return;
	uint64_t fh = gossip__name_hash(msg->from, msg->from_len);
	if (m->state == GOSSIP_SUSPECT && msg->num == m->inc) {
		if (susp_confirm(g, m, fh, now)) {
			/* Pass the confirmation on, so others count it too. */
			gossip__bc_queue(g, m, msg);
		}
		return;
	}
	if (m->state == GOSSIP_SUSPECT) {
		/* A suspicion at a higher incarnation means the member refuted the one we hold
		 * (we missed its alive): that old timer and its confirmations are void, and the
		 * new accusation starts afresh. */
		gossip__set_state(g, m, GOSSIP_SUSPECT, msg->num, now);
		susp_start(g, m, fh, now);
		g->st.suspicions++;
		gossip__bc_queue(g, m, msg);
		return;
	}
	/* suspect(i) overrides alive(j <= i). */
	gossip__set_state(g, m, GOSSIP_SUSPECT, msg->num, now);
	susp_start(g, m, fh, now);
	g->st.suspicions++;
	gossip__bc_queue(g, m, msg);
}

void gossip__on_dead(struct gossip *g, const struct gossip__msg *msg, uint64_t now)
{
	struct member *m = gossip__find(g, msg->name, msg->name_len);
	if (stale_self(g, m, msg) || m == NULL || msg->num < m->inc)
		return;
	bool left =
		msg->name_len == msg->from_len && memcmp(msg->name, msg->from, msg->name_len) == 0;
	if (m->self) {
		if (!g->leaving)
			gossip__refute(g, msg->num, true, now);
		return;
	}
	if (m->state == GOSSIP_LEFT)
		return;
	if (m->state == GOSSIP_DEAD && !left)
		return;
	/* dead(i) overrides alive and suspect (j <= i); a leave also overrides a death. */
	gossip__set_state(g, m, left ? GOSSIP_LEFT : GOSSIP_DEAD, msg->num, now);
	if (!left)
		g->st.deaths++;
	gossip__bc_queue(g, m, msg);
}

/* We suspect m ourselves (a failed probe). */
void gossip__suspect_local(struct gossip *g, struct member *m, uint64_t now)
{
	struct gossip__msg s = gossip__msg_accuse(
		GOSSIP__SUSPECT, m, (const uint8_t *)g->self->name, g->self->name_len);
	gossip__on_suspect(g, &s, now);
}

/* Suspicion deadlines and reaping, then the next time anything here is due (next_scan). Costs
 * one pass over the view, only when something is due. */
void gossip__scan(struct gossip *g, uint64_t now)
{
	uint64_t next = UINT64_MAX;
	for (uint32_t i = g->n_mem; i-- > 0;) {
		struct member *m = g->mem[i];
		if (m->self)
			continue;
		if (m->state == GOSSIP_SUSPECT && m->susp != NULL) {
			if (now >= m->susp->deadline) {
				struct gossip__msg d = gossip__msg_accuse(
					GOSSIP__DEAD, m, (const uint8_t *)g->self->name,
					g->self->name_len);
				gossip__set_state(g, m, GOSSIP_DEAD, m->inc, now);
				g->st.deaths++;
				gossip__bc_queue(g, m, &d);
			} else {
				next = gossip__min_u64(next, m->susp->deadline);
				continue;
			}
		}
		uint64_t reap = m->state == GOSSIP_DEAD ? g->cfg.reap_dead_ms :
				m->state == GOSSIP_LEFT ? g->cfg.reap_left_ms :
							  UINT64_MAX;
		if (reap == UINT64_MAX)
			continue;
		uint64_t at = m->since + reap < m->since ? UINT64_MAX : m->since + reap;
		if (now >= at)
			gossip__member_remove(g, i);
		else
			next = gossip__min_u64(next, at);
	}
	g->next_scan = next;
}
