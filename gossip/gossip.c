/* gossip.c: the SWIM membership core with Lifeguard (Das, Gupta, Motivala 2002; Dadgar et al.
 * 2018), modelled on HashiCorp memberlist: the public entry points of gossip.h, the timers, the
 * receive path and push-pull. The protocol itself is in rules.c (ordering rules, refutation,
 * suspicion), probe.c (failure detection) and broadcast.c (dissemination). No I/O: see gossip.h.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gossip_core.h"

/* --- errors, names, defaults ----------------------------------------------------------- */

const char *gossip_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define GOSSIP__ERRNO_STR(name, num, msg) \
	case -(num):                      \
		return msg;
		GOSSIP_ERRNO_MAP(GOSSIP__ERRNO_STR)
#undef GOSSIP__ERRNO_STR
	default:
		return "unknown error";
	}
}

const char *gossip_state_name(uint32_t state)
{
	switch (state) {
	case GOSSIP_ALIVE:
		return "alive";
	case GOSSIP_SUSPECT:
		return "suspect";
	case GOSSIP_DEAD:
		return "dead";
	case GOSSIP_LEFT:
		return "left";
	default:
		return "unknown";
	}
}

bool gossip_addr_equal(const struct gossip_addr *a, const struct gossip_addr *b)
{
	if (a->family != b->family || a->port != b->port)
		return false;
	size_t n = a->family == 6 ? 16 : 4;
	return memcmp(a->ip, b->ip, n) == 0;
}

void gossip_config_init(struct gossip_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->probe_interval_ms = 1000;
	cfg->probe_timeout_ms = 500;
	cfg->indirect_checks = 3;
	cfg->suspicion_mult = 4;
	cfg->suspicion_max_mult = 6;
	cfg->retransmit_mult = 4;
	cfg->gossip_interval_ms = 200;
	cfg->gossip_nodes = 3;
	cfg->gossip_to_dead_ms = 30000;
	cfg->pushpull_interval_ms = 30000;
	cfg->awareness_max = 8;
	cfg->packet_size = 1400;
	cfg->reap_dead_ms = 86400000;
	cfg->reap_left_ms = 3600000;
	cfg->max_members = 65536;
	cfg->max_queue = 4096;
}

/* --- public entry points --------------------------------------------------------------- */

static bool leave_done(const struct gossip *g)
{
	return g->leaving && (g->self->bc == NULL || g->n_live == 0);
}

int gossip_new(const struct gossip_config *cfg, uint64_t now_ms, struct gossip **out)
{
	*out = NULL;
	if (cfg == NULL || cfg->name == NULL)
		return GOSSIP_EINVAL;
	size_t name_len = strlen(cfg->name);
	if (!gossip__name_valid((const uint8_t *)cfg->name, name_len) ||
	    (cfg->addr.family != 4 && cfg->addr.family != 6) || cfg->meta_len > GOSSIP_MAX_META ||
	    (cfg->meta_len > 0 && cfg->meta == NULL) || cfg->packet_size < GOSSIP_MIN_PACKET ||
	    cfg->packet_size > GOSSIP_MAX_PACKET || cfg->probe_interval_ms == 0 ||
	    cfg->gossip_interval_ms == 0 || cfg->max_members < 1 || cfg->awareness_max < 1 ||
	    cfg->suspicion_mult < 1 || cfg->retransmit_mult < 1 || cfg->max_queue < 1)
		return GOSSIP_EINVAL;
	struct gossip *g = calloc(1, sizeof(*g));
	if (g == NULL)
		return GOSSIP_ENOMEM;
	g->cfg = *cfg;
	g->cfg.name = NULL;
	g->cfg.meta = NULL;
	g->now = now_ms;
	gossip__rng_seed(&g->rng, cfg->seed);
	g->pkt = malloc(cfg->packet_size);
	g->msgs = calloc(GOSSIP__MAX_PARTS, sizeof(*g->msgs));
	if (g->pkt == NULL || g->msgs == NULL)
		goto nomem;
	g->self = gossip__member_add(g, (const uint8_t *)cfg->name, (uint8_t)name_len, &cfg->addr,
				     0, cfg->meta, cfg->meta_len, now_ms);
	if (g->self == NULL)
		goto nomem;
	g->self->self = true;
	if (g->n_ev > 0)
		g->ev[g->n_ev - 1].self = true;
	/* Our own alive message goes out with the first packets. */
	struct gossip__msg a = gossip__msg_alive(g->self);
	gossip__bc_queue(g, g->self, &a);
	/* Spread the first timers so members started together do not act in lockstep. */
	g->next_probe = now_ms + gossip__rng_below(&g->rng, cfg->probe_interval_ms);
	g->next_gossip = now_ms + gossip__rng_below(&g->rng, cfg->gossip_interval_ms);
	g->next_pushpull = cfg->pushpull_interval_ms ?
				   now_ms + cfg->pushpull_interval_ms +
					   gossip__rng_below(&g->rng, cfg->pushpull_interval_ms) :
				   UINT64_MAX;
	g->next_scan = UINT64_MAX;
	g->relay_next = UINT64_MAX;
	*out = g;
	return 0;
nomem:
	gossip_free(g);
	return GOSSIP_ENOMEM;
}

void gossip_free(struct gossip *g)
{
	if (g == NULL)
		return;
	for (uint32_t i = 0; i < g->qn; i++)
		free(g->q[i]);
	free(g->q);
	free(g->qtmp);
	for (uint32_t i = 0; i < g->n_mem; i++)
		gossip__member_free(g->mem[i]);
	free(g->mem);
	free(g->ht);
	free(g->pick);
	free(g->out);
	free(g->obuf);
	free(g->ev);
	free(g->ebuf);
	free(g->v_sends);
	free(g->v_ev);
	free(g->pkt);
	free(g->msgs);
	free(g);
}

void gossip_tick(struct gossip *g, uint64_t now_ms)
{
	if (now_ms < g->now)
		now_ms = g->now; /* the clock is monotonic; be safe if it is not */
	g->now = now_ms;
	if (leave_done(g))
		return;
	gossip__relay_tick(g, now_ms);
	gossip__probe_tick(g, now_ms);
	if (now_ms >= g->next_gossip) {
		g->next_gossip = now_ms + g->cfg.gossip_interval_ms;
		gossip__round(g);
	}
	if (now_ms >= g->next_pushpull) {
		g->next_pushpull = now_ms + gossip_pushpull_interval(&g->cfg, g->n_live);
		if (!g->leaving)
			gossip__pushpull_round(g);
	}
	/* Last: a probe that failed above may have confirmed a suspicion down to now. */
	if (now_ms >= g->next_scan)
		gossip__scan(g, now_ms);
}

uint64_t gossip_next_deadline(const struct gossip *g)
{
	if (leave_done(g))
		return UINT64_MAX;
	uint64_t t = gossip__min_u64(g->next_gossip, g->next_pushpull);
	t = gossip__min_u64(t, g->next_scan);
	const struct probe *p = &g->probe;
	if (p->active)
		t = gossip__min_u64(t, !p->acked && !p->indirect ? p->t_indirect : p->t_end);
	else
		t = gossip__min_u64(t, g->next_probe);
	return gossip__min_u64(t, g->relay_next);
}

int gossip_recv(struct gossip *g, uint64_t now_ms, const struct gossip_addr *from,
		const uint8_t *buf, size_t len)
{
	if (now_ms < g->now)
		now_ms = g->now;
	g->now = now_ms;
	g->st.packets_in++;
	g->st.bytes_in += len;
	size_t n = 0;
	/* Decode the whole packet before acting on any part of it. */
	if (from == NULL || gossip__packet_decode(buf, len, g->msgs, &n) != 0) {
		g->st.malformed++;
		return GOSSIP_EMALFORMED;
	}
	if (leave_done(g))
		return 0;
	g->stale_self = false;
	/* News first, so an ack built for a ping in this packet carries our answer to it (a
	 * suspect piggybacked by a buddy is refuted in the ack itself). */
	for (size_t i = 0; i < n; i++) {
		const struct gossip__msg *m = &g->msgs[i];
		switch (m->type) {
		case GOSSIP__ALIVE:
			gossip__on_alive(g, m, now_ms);
			break;
		case GOSSIP__SUSPECT:
			gossip__on_suspect(g, m, now_ms);
			break;
		case GOSSIP__DEAD:
			gossip__on_dead(g, m, now_ms);
			break;
		default:
			break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct gossip__msg *m = &g->msgs[i];
		switch (m->type) {
		case GOSSIP__PING:
			gossip__on_ping(g, from, m);
			break;
		case GOSSIP__ACK:
			gossip__on_ack(g, m);
			break;
		case GOSSIP__NACK:
			gossip__on_nack(g, m);
			break;
		case GOSSIP__PINGREQ:
			gossip__on_pingreq(g, from, m, now_ms);
			break;
		default:
			break;
		}
	}
	if (g->stale_self) {
		/* No ping to answer in this packet: one datagram with our alive. */
		struct pb b;
		gossip__pb_init(g, &b);
		struct gossip__msg a = gossip__msg_alive(g->self);
		gossip__pb_add(&b, &a);
		gossip__pb_send(g, &b, from);
		g->stale_self = false;
	}
	return 0;
}

static struct gossip__state_entry entry_of(const struct member *m)
{
	return (struct gossip__state_entry){ .name = (const uint8_t *)m->name,
					     .name_len = m->name_len,
					     .addr = m->addr,
					     .state = (uint8_t)m->state,
					     .incarnation = m->inc,
					     .meta = m->meta,
					     .meta_len = (uint16_t)m->meta_len };
}

size_t gossip_state_size(const struct gossip *g)
{
	size_t n = gossip__state_hdr_size(g->self->name_len);
	for (uint32_t i = 0; i < g->n_mem; i++) {
		struct gossip__state_entry e = entry_of(g->mem[i]);
		n += gossip__state_entry_size(&e);
	}
	return n;
}

int gossip_state_encode(struct gossip *g, bool join, uint8_t *buf, size_t cap)
{
	size_t need = gossip_state_size(g);
	if (buf == NULL || cap < need)
		return GOSSIP_ETOOBIG;
	if (need > (size_t)INT32_MAX)
		return GOSSIP_ETOOBIG;
	size_t off = gossip__state_hdr_encode(buf, join, (const uint8_t *)g->self->name,
					      g->self->name_len, g->n_mem);
	for (uint32_t i = 0; i < g->n_mem; i++) {
		struct gossip__state_entry e = entry_of(g->mem[i]);
		off += gossip__state_entry_encode(buf + off, &e);
	}
	assert(off == need);
	return (int)off;
}

int gossip_state_merge(struct gossip *g, uint64_t now_ms, const uint8_t *buf, size_t len,
		       bool *join)
{
	if (now_ms < g->now)
		now_ms = g->now;
	g->now = now_ms;
	struct gossip__state_reader r;
	if (gossip__state_open(&r, buf, len) != 0) {
		g->st.malformed++;
		return GOSSIP_EMALFORMED;
	}
	if (join != NULL)
		*join = r.join;
	if (leave_done(g))
		return 0;
	struct gossip__state_entry e;
	while (gossip__state_next(&r, &e)) {
		struct gossip__msg m = { .num = e.incarnation,
					 .name = e.name,
					 .name_len = e.name_len,
					 .addr = e.addr,
					 .meta = e.meta,
					 .meta_len = e.meta_len,
					 .from = r.sender,
					 .from_len = r.sender_len };
		switch (e.state) {
		case GOSSIP_ALIVE:
			m.type = GOSSIP__ALIVE;
			gossip__on_alive(g, &m, now_ms);
			break;
		case GOSSIP_SUSPECT:
		case GOSSIP_DEAD: {
			/* A remote death becomes our suspicion, as in memberlist: state can be
			 * stale, and suspicion gives the member the chance to refute. A suspect
			 * we never heard of is learnt as such. */
			struct member *known = gossip__find(g, e.name, e.name_len);
			if (known == NULL) {
				if (e.state == GOSSIP_DEAD)
					break;
				m.type = GOSSIP__ALIVE;
				gossip__on_alive(g, &m, now_ms);
			} else if (known->state == GOSSIP_SUSPECT && known->inc == e.incarnation) {
				/* The sender may only repeat a rumour: not an independent
				 * confirmation (Lifeguard counts probes that failed). */
				break;
			}
			m.type = GOSSIP__SUSPECT;
			gossip__on_suspect(g, &m, now_ms);
			break;
		}
		case GOSSIP_LEFT:
			m.type = GOSSIP__DEAD;
			m.from = e.name;
			m.from_len = e.name_len;
			gossip__on_dead(g, &m, now_ms);
			break;
		default:
			break;
		}
	}
	g->stale_self = false; /* our state goes back in the push-pull answer anyway */
	g->st.pushpulls++;
	return 0;
}

void gossip_pushpull_failed(struct gossip *g, uint64_t now_ms, const struct gossip_addr *to)
{
	/* Nothing to undo: a periodic push-pull is simply retried at the next interval, and a
	 * failed join is retried by the caller. */
	(void)to;
	if (now_ms > g->now)
		g->now = now_ms;
}

int gossip_join(struct gossip *g, uint64_t now_ms, const struct gossip_addr *addrs, size_t n)
{
	if (now_ms > g->now)
		g->now = now_ms;
	if (g->leaving)
		return GOSSIP_ELEFT;
	if (n > 0 && addrs == NULL)
		return GOSSIP_EINVAL;
	if (n > MAX_PUSHPULLS - g->n_pp)
		return GOSSIP_EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (addrs[i].family != 4 && addrs[i].family != 6)
			return GOSSIP_EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (gossip_addr_equal(&addrs[i], &g->self->addr))
			continue;
		g->pp[g->n_pp++] = (struct gossip_pushpull){ .to = addrs[i], .join = true };
	}
	return 0;
}

int gossip_leave(struct gossip *g, uint64_t now_ms)
{
	if (now_ms > g->now)
		g->now = now_ms;
	if (g->leaving)
		return 0;
	g->leaving = true;
	struct member *s = g->self;
	gossip__set_state(g, s, GOSSIP_LEFT, s->inc, g->now);
	struct gossip__msg d =
		gossip__msg_accuse(GOSSIP__DEAD, s, (const uint8_t *)s->name, s->name_len);
	gossip__bc_queue(g, s, &d);
	g->probe.active = false;
	return 0;
}

bool gossip_leave_done(const struct gossip *g)
{
	return leave_done(g);
}

int gossip_set_meta(struct gossip *g, uint64_t now_ms, const uint8_t *meta, uint32_t len)
{
	if (now_ms > g->now)
		g->now = now_ms;
	if (len > GOSSIP_MAX_META || (len > 0 && meta == NULL))
		return GOSSIP_EINVAL;
	if (g->leaving)
		return GOSSIP_ELEFT;
	struct member *s = g->self;
	if (s->inc == UINT32_MAX)
		return GOSSIP_EINVAL;
	if (!gossip__set_meta(s, meta, len))
		return GOSSIP_ENOMEM;
	gossip__set_state(g, s, GOSSIP_ALIVE, s->inc + 1, g->now);
	struct gossip__msg a = gossip__msg_alive(s);
	gossip__bc_queue(g, s, &a);
	return 0;
}

bool gossip_has_update(const struct gossip *g)
{
	return g->n_out > 0 || g->n_pp > 0 || g->n_ev > 0;
}

void gossip_ready(struct gossip *g, struct gossip_update *u)
{
	memset(u, 0, sizeof(*u));
	if (g->n_out > 0) {
		size_t cap = g->cap_v_sends;
		if (gossip__grow((void **)&g->v_sends, &cap, g->n_out, sizeof(*g->v_sends))) {
			g->cap_v_sends = (uint32_t)cap;
			for (uint32_t i = 0; i < g->n_out; i++)
				g->v_sends[i] =
					(struct gossip_send){ .to = g->out[i].to,
							      .len = g->out[i].len,
							      .data = g->obuf + g->out[i].off };
			u->sends = g->v_sends;
			u->n_sends = g->n_out;
		}
	}
	if (g->n_pp > 0) {
		u->pushpulls = g->pp;
		u->n_pushpulls = g->n_pp;
	}
	if (g->n_ev > 0 &&
	    gossip__grow((void **)&g->v_ev, &g->cap_v_ev, g->n_ev, sizeof(*g->v_ev))) {
		for (size_t i = 0; i < g->n_ev; i++) {
			const struct ev *e = &g->ev[i];
			g->v_ev[i] = (struct gossip_event){
				.type = e->type,
				.prev_state = e->prev,
				.member = { .name = (const char *)g->ebuf + e->name_off,
					    .addr = e->addr,
					    .state = e->state,
					    .incarnation = e->inc,
					    .meta = e->meta_len ? g->ebuf + e->meta_off : NULL,
					    .meta_len = e->meta_len,
					    .since_ms = e->since,
					    .self = e->self }
			};
		}
		u->events = g->v_ev;
		u->n_events = g->n_ev;
	}
}

void gossip_advance(struct gossip *g)
{
	g->n_out = 0;
	g->olen = 0;
	g->n_pp = 0;
	g->n_ev = 0;
	g->elen = 0;
}

static void member_view(const struct member *m, struct gossip_member *out)
{
	*out = (struct gossip_member){ .name = m->name,
				       .addr = m->addr,
				       .state = m->state,
				       .incarnation = m->inc,
				       .meta = m->meta,
				       .meta_len = m->meta_len,
				       .since_ms = m->since,
				       .self = m->self };
}

uint32_t gossip_member_count(const struct gossip *g)
{
	return g->n_mem;
}

bool gossip_member_at(const struct gossip *g, uint32_t i, struct gossip_member *out)
{
	if (i >= g->n_mem)
		return false;
	member_view(g->mem[i], out);
	return true;
}

bool gossip_member_find(const struct gossip *g, const char *name, struct gossip_member *out)
{
	if (name == NULL)
		return false;
	size_t n = strlen(name);
	if (n == 0 || n > GOSSIP_MAX_NAME)
		return false;
	const struct member *m = gossip__find(g, (const uint8_t *)name, n);
	if (m == NULL)
		return false;
	if (out != NULL)
		member_view(m, out);
	return true;
}

uint32_t gossip_live_count(const struct gossip *g)
{
	return g->n_live;
}

void gossip_stats(const struct gossip *g, struct gossip_stats *out)
{
	*out = g->st;
	out->health = g->lhm;
	out->queue_len = g->qn;
}
