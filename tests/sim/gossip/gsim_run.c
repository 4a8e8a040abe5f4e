/* gsim_run.c: one run of the gossip simulator: members and their loop contract, the network,
 * push-pull streams, the phases and the step function.
 *
 * THE STEP FUNCTION. A run is one priority queue of timed events on one simulated clock in
 * milliseconds. gsim_run() pops the earliest event; events at the same ms come out in the order
 * they were scheduled (a sequence number given at scheduling), never in an order that depends
 * on memory addresses or the heap's shape. The kinds:
 *   START      a member's core is created and joins through a random live member;
 *   TICK       gossip_tick() at the core's gossip_next_deadline(); after every call into a
 *              core the deadline is read again and an earlier TICK scheduled if needed (a
 *              token makes the superseded one a no-op when it pops);
 *   DELIVER    a datagram arrives: dropped if the destination stopped, if a partition
 *              separates the two members at that moment; held or lost if it is stalled;
 *   PP_REQ     a push-pull's state (encoded when the initiator asked) reaches the acceptor 2
 *              one-way latencies later (connect, send): the acceptor merges it and answers
 *              with its own state, which arrives as PP_RESP one latency later and is merged;
 *              an acceptor that is stopped, stalled or cut off makes it a PP_FAIL at the
 *              stream timeout (GSIM_STREAM_TIMEOUT_MS);
 *   RESUME     a stalled member wakes: its timers run first (gossip_tick with the clock
 *              jumped, as an event loop runs expired timers before reading sockets), then the
 *              datagrams and push-pull answers it held, in arrival order, at the same ms;
 *   JOIN_RETRY a joiner whose join reached nobody tries another live member, 1 s later;
 *   FAULT      the scenario's fault streams act (gsim_scenario.c) and reschedule themselves;
 *   HEAL       the partition ends;
 *   SAMPLE     every GSIM_SAMPLE_MS: records complete, bounds are checked, phases advance.
 * After each event the cores it touched are pumped under the loop contract of gossip.h: while
 * gossip_has_update(): send u.sends, copy u.pushpulls, observe u.events, gossip_advance(), then
 * start the push-pulls (gossip_state_encode is a call into the core, so it comes after).
 *
 * THE PHASES. BOOT: members start spread over boot_ms, each joining through a random member
 * already up, until every core reports every member alive or suspect (under heavy loss some
 * member is always suspected by someone). WARM: until the broadcast queues
 * drain (60 s at most), so that measurements start from a steady state. FAULT: the scenario's
 * faults for duration_ms; the measurement window. QUIET: partitions heal, stalls end, loss
 * stops and no new fault starts; every live member must agree on every member's state within
 * quiet_max_ms. Every phase has a deadline, so a run always ends.
 *
 * Randomness: the network (loss, latency), the faults and the choice of members draw from
 * their own streams derived from the seed; each core's generator is seeded from the run's
 * seed and its slot.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gossip_int.h" /* the codec, only to trace datagrams (--watch-packets) */
#include "gsim.h"

void gsim_fail(struct gsim *s, const char *fmt, ...)
{
	if (s->failed)
		return;
	s->failed = true;
	int n = snprintf(s->why, sizeof(s->why), "at %.3f s: ", (double)s->now / 1000.0);
	if (n < 0)
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why + n, sizeof(s->why) - (size_t)n, fmt, ap);
	va_end(ap);
	if (s->opts->verbose)
		fprintf(s->opts->out, "[%9.3f] VIOLATION: %s\n", (double)s->now / 1000.0, s->why);
}

void gsim_trace(struct gsim *s, const char *fmt, ...)
{
	if (!s->opts->verbose)
		return;
	fprintf(s->opts->out, "[%9.3f] ", (double)s->now / 1000.0);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(s->opts->out, fmt, ap);
	va_end(ap);
	fputc('\n', s->opts->out);
}

void gsim_schedule(struct gsim *s, struct gsim_event e)
{
	if (gsim_queue_push(&s->q, e) != 0) {
		free(e.data);
		gsim_fail(s, "event queue full (%zu events): a packet storm", s->q.len);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Names and addresses: slot k is "m<k>" at 10.x.y.z:7946 with x.y.z = k + 1.                 */

static void addr_of(uint32_t slot, struct gossip_addr *a)
{
	memset(a, 0, sizeof(*a));
	uint32_t k = slot + 1;
	a->family = 4;
	a->ip[0] = 10;
	a->ip[1] = (uint8_t)(k >> 16);
	a->ip[2] = (uint8_t)(k >> 8);
	a->ip[3] = (uint8_t)k;
	a->port = GSIM_PORT;
}

uint32_t gsim_slot_of_addr(const struct gsim *s, const struct gossip_addr *a)
{
	if (a->family != 4 || a->ip[0] != 10 || a->port != GSIM_PORT)
		return UINT32_MAX;
	uint32_t k = ((uint32_t)a->ip[1] << 16) | ((uint32_t)a->ip[2] << 8) | a->ip[3];
	if (k == 0 || k > s->n_slots)
		return UINT32_MAX;
	return k - 1;
}

uint32_t gsim_slot_of_name(const struct gsim *s, const char *name)
{
	if (name == NULL || name[0] != 'm' || name[1] < '0' || name[1] > '9')
		return UINT32_MAX;
	uint32_t k = 0;
	for (const char *p = name + 1; *p; p++) {
		if (*p < '0' || *p > '9' || k > GSIM_MAX_MEMBERS)
			return UINT32_MAX;
		k = k * 10 + (uint32_t)(*p - '0');
	}
	if (k >= s->n_slots || strcmp(s->m[k].name, name) != 0)
		return UINT32_MAX;
	return k;
}

bool gsim_live(const struct gsim_member *m)
{
	return m->status == GSIM_UP || m->status == GSIM_STALLED;
}

static bool running(const struct gsim_member *m)
{
	return m->status == GSIM_UP || m->status == GSIM_STALLED || m->status == GSIM_LEAVING;
}

static bool measuring(const struct gsim *s)
{
	return s->now >= s->measure_at && s->now < s->measure_end;
}

static uint64_t latency(struct gsim *s)
{
	return s->p.latency_ms + sim_rng_below(&s->net_rng, (uint64_t)s->p.jitter_ms + 1);
}

uint32_t gsim_pick_up(struct gsim *s, uint32_t avoid)
{
	if (s->n_slots == 0)
		return UINT32_MAX;
	uint32_t start = (uint32_t)sim_rng_below(&s->pick_rng, s->n_slots);
	for (uint32_t k = 0; k < s->n_slots; k++) {
		uint32_t i = (start + k) % s->n_slots;
		const struct gsim_member *m = &s->m[i];
		if (i != avoid && m->status == GSIM_UP && m->joined)
			return i;
	}
	return UINT32_MAX;
}

/* ------------------------------------------------------------------------------------------ */
/* The loop contract.                                                                         */

static void start_pushpull(struct gsim *s, uint32_t from, const struct gossip_pushpull *pp);
static void stop_member(struct gsim *s, uint32_t slot, uint32_t status);

static void trace_packet(struct gsim *s, const struct gsim_member *a,
			 const struct gsim_member *b, const uint8_t *buf, size_t len,
			 const char *dir)
{
	static const char *const types[] = {"?",	 "ping",    "ack",  "nack", "ping-req",
					    "alive", "suspect", "dead", "compound"};
	struct gossip__msg msgs[GOSSIP__MAX_PARTS + 1];
	size_t n = sizeof(msgs) / sizeof(msgs[0]);
	if (gossip__packet_decode(buf, len, msgs, &n) != 0) {
		gsim_trace(s, "%s %s %s: %zu bytes that do not parse", a->name, dir, b->name, len);
		return;
	}
	char line[4096];
	size_t off = 0;
	for (size_t i = 0; i < n && off < sizeof(line) - 200; i++) {
		const struct gossip__msg *m = &msgs[i];
		int k = snprintf(line + off, sizeof(line) - off, "%s%s %.*s %u", i ? ", " : "",
				 m->type < 9 ? types[m->type] : "?", (int)m->name_len,
				 m->name ? (const char *)m->name : "", m->num);
		if (k > 0)
			off += (size_t)k;
		if (m->from_len > 0 && off < sizeof(line) - 100) {
			k = snprintf(line + off, sizeof(line) - off, " by %.*s", (int)m->from_len,
				     (const char *)m->from);
			if (k > 0)
				off += (size_t)k;
		}
	}
	gsim_trace(s, "%s %s %s: %s", a->name, dir, b->name, line);
}

static void send_packet(struct gsim *s, uint32_t from, const struct gossip_send *snd)
{
	struct gsim_member *m = &s->m[from];
	uint32_t to = gsim_slot_of_addr(s, &snd->to);
	if (to == UINT32_MAX) {
		gsim_fail(s, "%s sent a datagram to an address that is no member's", m->name);
		return;
	}
	if (to == from) {
		gsim_fail(s, "%s sent a datagram to itself", m->name);
		return;
	}
	if (snd->len == 0 || snd->len > s->base_cfg.packet_size) {
		gsim_fail(s, "%s sent a datagram of %u bytes (packet_size %u)", m->name, snd->len,
			  s->base_cfg.packet_size);
		return;
	}
	if (s->opts->watch_packets &&
	    (strcmp(s->opts->watch, m->name) == 0 || strcmp(s->opts->watch, "*") == 0))
		trace_packet(s, m, &s->m[to], snd->data, snd->len, "->");
	s->r.packets++;
	s->r.payload_bytes += snd->len;
	if (measuring(s)) {
		m->udp_bytes += snd->len + GSIM_SEAL_OVERHEAD;
		m->udp_packets++;
	}
	if (gsim_rng_bp(&s->net_rng, s->loss_bp)) {
		s->r.packets_lost++;
		return;
	}
	uint8_t *copy = malloc(snd->len);
	if (copy == NULL) {
		gsim_fail(s, "out of memory");
		return;
	}
	memcpy(copy, snd->data, snd->len);
	gsim_schedule(s, (struct gsim_event){.at = s->now + latency(s),
					     .kind = GSIM_EV_DELIVER,
					     .slot = to,
					     .from = from,
					     .gen = s->m[to].gen,
					     .len = snd->len,
					     .data = copy});
}

static void reschedule_tick(struct gsim *s, uint32_t slot, bool after_tick)
{
	struct gsim_member *m = &s->m[slot];
	if (m->g == NULL || m->status == GSIM_STALLED)
		return;
	uint64_t d = gossip_next_deadline(m->g);
	uint64_t lo = after_tick ? s->now + 1 : s->now;
	if (d == UINT64_MAX)
		return;
	if (d < lo) {
		if (after_tick)
			s->r.deadline_past++;
		d = lo;
	}
	if (m->tick_at <= d)
		return;
	m->tick_token++;
	m->tick_at = d;
	gsim_schedule(s, (struct gsim_event){
				 .at = d, .kind = GSIM_EV_TICK, .slot = slot, .gen = m->tick_token});
}

static void pump(struct gsim *s, uint32_t slot)
{
	struct gsim_member *m = &s->m[slot];
	for (uint32_t rounds = 0; m->g != NULL && gossip_has_update(m->g); rounds++) {
		if (rounds >= GSIM_PUMP_ROUNDS) {
			gsim_fail(s, "%s: more than %u updates back to back", m->name,
				  GSIM_PUMP_ROUNDS);
			return;
		}
		struct gossip_update u;
		memset(&u, 0, sizeof(u));
		gossip_ready(m->g, &u);
		for (size_t i = 0; i < u.n_sends && !s->failed; i++)
			send_packet(s, slot, &u.sends[i]);
		if (u.n_pushpulls > s->pp_cap) {
			struct gossip_pushpull *pp =
				realloc(s->pp_scratch, u.n_pushpulls * sizeof(*pp));
			if (pp == NULL) {
				gsim_fail(s, "out of memory");
				return;
			}
			s->pp_scratch = pp;
			s->pp_cap = u.n_pushpulls;
		}
		size_t npp = u.n_pushpulls;
		if (npp > 0)
			memcpy(s->pp_scratch, u.pushpulls, npp * sizeof(*s->pp_scratch));
		for (size_t i = 0; i < u.n_events && !s->failed; i++)
			gsim_observe_event(s, slot, &u.events[i]);
		gossip_advance(m->g);
		for (size_t i = 0; i < npp && !s->failed; i++)
			start_pushpull(s, slot, &s->pp_scratch[i]);
		if (s->failed)
			return;
	}
	if (m->status == GSIM_LEAVING && gossip_leave_done(m->g)) {
		gsim_trace(s, "%s has left (its leave was sent enough times)", m->name);
		stop_member(s, slot, GSIM_LEFT);
		return;
	}
	reschedule_tick(s, slot, s->ticking == slot);
}

/* ------------------------------------------------------------------------------------------ */
/* Push-pull streams.                                                                         */

static void pp_fail_at(struct gsim *s, uint32_t initiator, uint32_t acceptor, bool join,
		       uint64_t at)
{
	gsim_schedule(s, (struct gsim_event){.at = at,
					     .kind = GSIM_EV_PP_FAIL,
					     .slot = initiator,
					     .from = acceptor,
					     .sub = join,
					     .gen = s->m[initiator].gen});
}

/* The state of `slot` for a stream, in a malloc()ed buffer; NULL when the run failed. */
static uint8_t *encode_state(struct gsim *s, uint32_t slot, bool join, uint32_t *len)
{
	struct gsim_member *m = &s->m[slot];
	size_t cap = gossip_state_size(m->g);
	uint8_t *buf = malloc(cap ? cap : 1);
	if (buf == NULL) {
		gsim_fail(s, "out of memory");
		return NULL;
	}
	int n = gossip_state_encode(m->g, join, buf, cap);
	if (n < 0 || (size_t)n > cap) {
		gsim_fail(s, "%s: gossip_state_encode returned %d for gossip_state_size %zu",
			  m->name, n, cap);
		free(buf);
		return NULL;
	}
	*len = (uint32_t)n;
	if (measuring(s)) {
		m->pp_bytes += (uint64_t)n + GSIM_FRAME_OVERHEAD;
		m->pp_count++;
	}
	return buf;
}

static void start_pushpull(struct gsim *s, uint32_t from, const struct gossip_pushpull *pp)
{
	struct gsim_member *m = &s->m[from];
	uint32_t to = gsim_slot_of_addr(s, &pp->to);
	if (to == UINT32_MAX || to == from) {
		gsim_fail(s, "%s asked for a push-pull with %s", m->name,
			  to == from ? "itself" : "an address that is no member's");
		return;
	}
	if (m->streams >= GSIM_MAX_STREAMS) {
		/* The transport refuses a stream beyond its bound and reports it failed. */
		m->streams++;
		pp_fail_at(s, from, to, pp->join, s->now);
		return;
	}
	uint32_t len = 0;
	uint8_t *buf = encode_state(s, from, pp->join, &len);
	if (buf == NULL)
		return;
	m->streams++;
	gsim_schedule(s, (struct gsim_event){.at = s->now + 2 * latency(s),
					     .kind = GSIM_EV_PP_REQ,
					     .slot = to,
					     .from = from,
					     .sub = pp->join,
					     .gen = m->gen,
					     .len = len,
					     .data = buf});
}

static void on_pp_req(struct gsim *s, struct gsim_event *e)
{
	struct gsim_member *ini = &s->m[e->from], *acc = &s->m[e->slot];
	if (ini->gen != e->gen)
		return; /* the initiator stopped: the stream is gone */
	if (acc->g == NULL || acc->status == GSIM_STALLED || acc->part != ini->part) {
		/* Nobody answers: the initiator's transport gives up at its stream timeout. */
		pp_fail_at(s, e->from, e->slot, e->sub != 0,
			   s->now + GSIM_STREAM_TIMEOUT_MS);
		return;
	}
	bool join = false;
	int rc = gossip_state_merge(acc->g, s->now, e->data, e->len, &join);
	if (rc == GOSSIP_ELEFT) {
		pp_fail_at(s, e->from, e->slot, e->sub != 0, s->now + latency(s));
		return;
	}
	if (rc < 0) {
		gsim_fail(s, "%s could not merge %s's push-pull state (%u bytes): %s", acc->name,
			  ini->name, e->len, gossip_strerror(rc));
		return;
	}
	if (join != (e->sub != 0)) {
		gsim_fail(s, "%s read join=%d from %s's state, which was encoded with join=%u",
			  acc->name, join, ini->name, e->sub);
		return;
	}
	pump(s, e->slot);
	if (s->failed)
		return;
	if (acc->g == NULL) {
		pp_fail_at(s, e->from, e->slot, e->sub != 0, s->now + latency(s));
		return;
	}
	uint32_t len = 0;
	uint8_t *buf = encode_state(s, e->slot, false, &len);
	if (buf == NULL)
		return;
	gsim_schedule(s, (struct gsim_event){.at = s->now + latency(s),
					     .kind = GSIM_EV_PP_RESP,
					     .slot = e->from,
					     .from = e->slot,
					     .sub = e->sub,
					     .gen = ini->gen,
					     .len = len,
					     .data = buf});
}

/* Keep an event for a stalled member; false when it cannot be kept (freed by the caller). */
static bool hold(struct gsim *s, struct gsim_member *m, struct gsim_event *e)
{
	bool packet = e->kind == GSIM_EV_DELIVER;
	if (packet && m->n_held_packets >= GSIM_HELD_MAX) {
		s->r.packets_held_dropped++;
		return false;
	}
	if (m->n_held == m->cap_held) {
		uint32_t cap = m->cap_held ? m->cap_held * 2 : 64;
		struct gsim_event *h = realloc(m->held, cap * sizeof(*h));
		if (h == NULL) {
			gsim_fail(s, "out of memory");
			return false;
		}
		m->held = h;
		m->cap_held = cap;
	}
	m->held[m->n_held++] = *e;
	if (packet)
		m->n_held_packets++;
	e->data = NULL; /* owned by the held queue now */
	return true;
}

static void on_pp_resp(struct gsim *s, struct gsim_event *e)
{
	struct gsim_member *ini = &s->m[e->slot], *acc = &s->m[e->from];
	if (ini->gen != e->gen || ini->g == NULL)
		return;
	if (ini->status == GSIM_STALLED) {
		if (!hold(s, ini, e))
			ini->streams--;
		return;
	}
	ini->streams--;
	if (ini->part != acc->part) {
		/* Cut while the answer was on its way. */
		s->r.pushpulls_failed++;
		gossip_pushpull_failed(ini->g, s->now, &acc->addr);
		pump(s, e->slot);
		return;
	}
	bool join = true;
	int rc = gossip_state_merge(ini->g, s->now, e->data, e->len, &join);
	if (rc == GOSSIP_ELEFT)
		return;
	if (rc < 0) {
		gsim_fail(s, "%s could not merge %s's push-pull answer (%u bytes): %s", ini->name,
			  acc->name, e->len, gossip_strerror(rc));
		return;
	}
	if (join) {
		gsim_fail(s, "%s read join=1 from %s's answer, which was encoded with join=0",
			  ini->name, acc->name);
		return;
	}
	s->r.pushpulls++;
	if (s->opts->watch != NULL &&
	    (strcmp(s->opts->watch, ini->name) == 0 || strcmp(s->opts->watch, acc->name) == 0))
		gsim_trace(s, "push-pull %s -> %s merged (%u bytes back)", ini->name, acc->name,
			   e->len);
	if (e->sub && !ini->joined) {
		ini->joined = true;
		ini->joined_at = s->now;
		gsim_trace(s, "%s joined through %s", ini->name, acc->name);
	}
	pump(s, e->slot);
}

static void join_through(struct gsim *s, uint32_t slot)
{
	struct gsim_member *m = &s->m[slot];
	uint32_t via = gsim_pick_up(s, slot);
	if (via == UINT32_MAX) {
		gsim_fail(s, "%s has no live member to join through", m->name);
		return;
	}
	m->join_tries++;
	int rc = gossip_join(m->g, s->now, &s->m[via].addr, 1);
	if (rc < 0) {
		gsim_fail(s, "%s: gossip_join: %s", m->name, gossip_strerror(rc));
		return;
	}
	pump(s, slot);
}

static void on_pp_fail(struct gsim *s, struct gsim_event *e)
{
	struct gsim_member *ini = &s->m[e->slot];
	if (ini->gen != e->gen || ini->g == NULL)
		return;
	if (ini->status == GSIM_STALLED) {
		if (!hold(s, ini, e))
			ini->streams--;
		return;
	}
	ini->streams--;
	s->r.pushpulls_failed++;
	gossip_pushpull_failed(ini->g, s->now, &s->m[e->from].addr);
	pump(s, e->slot);
	if (e->sub && !ini->joined && ini->g != NULL)
		gsim_schedule(s, (struct gsim_event){.at = s->now + 1000,
						     .kind = GSIM_EV_JOIN_RETRY,
						     .slot = e->slot,
						     .gen = ini->gen});
}

static void on_join_retry(struct gsim *s, struct gsim_event *e)
{
	struct gsim_member *m = &s->m[e->slot];
	if (m->gen != e->gen || m->g == NULL || m->joined)
		return;
	if (m->status == GSIM_STALLED) {
		/* Retried after the stall. */
		gsim_schedule(s, (struct gsim_event){.at = s->now + 1000,
						     .kind = GSIM_EV_JOIN_RETRY,
						     .slot = e->slot,
						     .gen = m->gen});
		return;
	}
	if (m->join_tries >= 30) {
		gsim_fail(s, "%s could not join in 30 tries", m->name);
		return;
	}
	join_through(s, e->slot);
}

/* ------------------------------------------------------------------------------------------ */
/* Datagrams, ticks, stalls.                                                                  */

static void on_deliver(struct gsim *s, struct gsim_event *e, bool held)
{
	struct gsim_member *dst = &s->m[e->slot], *src = &s->m[e->from];
	if (dst->gen != e->gen || dst->g == NULL)
		return;
	if (!held && src->part != dst->part) {
		s->r.packets_cut++;
		return;
	}
	if (dst->status == GSIM_STALLED) {
		if (dst->stall_drop)
			s->r.packets_held_dropped++;
		else
			hold(s, dst, e);
		return;
	}
	if (s->opts->watch_packets &&
	    (strcmp(s->opts->watch, dst->name) == 0 || strcmp(s->opts->watch, "*") == 0))
		trace_packet(s, dst, src, e->data, e->len, "<-");
	int rc = gossip_recv(dst->g, s->now, &src->addr, e->data, e->len);
	if (rc == GOSSIP_EMALFORMED) {
		gsim_fail(s, "%s's datagram of %u bytes to %s does not parse", src->name, e->len,
			  dst->name);
		return;
	}
	if (rc < 0 && rc != GOSSIP_ELEFT) {
		gsim_fail(s, "%s: gossip_recv: %s", dst->name, gossip_strerror(rc));
		return;
	}
	pump(s, e->slot);
}

static void on_tick(struct gsim *s, struct gsim_event *e)
{
	struct gsim_member *m = &s->m[e->slot];
	if (m->g == NULL || e->gen != m->tick_token)
		return; /* superseded by an earlier tick, or the core stopped */
	m->tick_at = UINT64_MAX;
	if (m->status == GSIM_STALLED)
		return; /* the resume ticks */
	gossip_tick(m->g, s->now);
	s->ticking = e->slot;
	pump(s, e->slot);
	s->ticking = UINT32_MAX;
}

static void resume(struct gsim *s, uint32_t slot)
{
	struct gsim_member *m = &s->m[slot];
	if (m->status != GSIM_STALLED)
		return;
	m->status = GSIM_UP;
	m->stalls[0].end = s->now;
	gsim_trace(s, "%s resumes after %.3f s with %u events held", m->name,
		   (double)(s->now - m->stalls[0].start) / 1000.0, m->n_held);
	m->tick_at = UINT64_MAX;
	gossip_tick(m->g, s->now);
	s->ticking = slot;
	pump(s, slot);
	s->ticking = UINT32_MAX;
	/* The held events, in arrival order; the member may stop while they are handled. */
	uint32_t n = m->n_held;
	struct gsim_event *held = m->held;
	m->held = NULL;
	m->n_held = m->cap_held = m->n_held_packets = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (!s->failed && m->g != NULL) {
			switch (held[i].kind) {
			case GSIM_EV_DELIVER:
				on_deliver(s, &held[i], true);
				break;
			case GSIM_EV_PP_RESP:
				on_pp_resp(s, &held[i]);
				break;
			case GSIM_EV_PP_FAIL:
				on_pp_fail(s, &held[i]);
				break;
			default:
				break;
			}
		}
		free(held[i].data);
	}
	free(held);
}

/* ------------------------------------------------------------------------------------------ */
/* Members' lives.                                                                            */

static void free_held(struct gsim_member *m)
{
	for (uint32_t i = 0; i < m->n_held; i++)
		free(m->held[i].data);
	free(m->held);
	m->held = NULL;
	m->n_held = m->cap_held = m->n_held_packets = 0;
}

static void stop_member(struct gsim *s, uint32_t slot, uint32_t status)
{
	struct gsim_member *m = &s->m[slot];
	if (m->g == NULL)
		return;
	gossip_stats(m->g, &m->last);
	gossip_free(m->g);
	m->g = NULL;
	m->status = status;
	m->gen++;
	m->streams = 0;
	m->stopped_at = s->now;
	m->tick_at = UINT64_MAX;
	if (m->stalls[0].end == UINT64_MAX && m->n_stalls > 0)
		m->stalls[0].end = s->now;
	free_held(m);
	s->up_count--;
	gsim_observe_stopped(s, slot);
}

static void start_member(struct gsim *s, uint32_t slot)
{
	struct gsim_member *m = &s->m[slot];
	struct gossip_config cfg = s->base_cfg;
	cfg.name = m->name;
	cfg.addr = m->addr;
	static const uint8_t meta0[] = "role=sim,v=0";
	cfg.meta = meta0;
	cfg.meta_len = (uint32_t)(sizeof(meta0) - 1);
	cfg.seed = sim_seed_mix(s->seed, 0x636f7265 /* "core" */, slot);
	int rc = gossip_new(&cfg, s->now, &m->g);
	if (rc < 0) {
		gsim_fail(s, "gossip_new for %s: %s", m->name, gossip_strerror(rc));
		return;
	}
	m->status = GSIM_UP;
	m->started_at = s->now;
	s->up_count++;
	if (gsim_pick_up(s, slot) == UINT32_MAX) {
		/* The first member: nobody to join; it is the pool. */
		m->joined = true;
		m->joined_at = s->now;
		pump(s, slot);
		return;
	}
	join_through(s, slot);
}

static void init_slot(struct gsim *s, uint32_t slot)
{
	struct gsim_member *m = &s->m[slot];
	memset(m, 0, sizeof(*m));
	m->slot = slot;
	snprintf(m->name, sizeof(m->name), "m%u", slot);
	addr_of(slot, &m->addr);
	m->tick_at = UINT64_MAX;
	m->minority_until = 0;
}

uint32_t gsim_add_member(struct gsim *s)
{
	if (s->n_slots >= s->cap)
		return UINT32_MAX;
	uint32_t slot = s->n_slots++;
	init_slot(s, slot);
	start_member(s, slot);
	s->r.joins++;
	gsim_trace(s, "%s starts and joins", s->m[slot].name);
	return slot;
}

void gsim_crash(struct gsim *s, uint32_t slot)
{
	struct gsim_member *m = &s->m[slot];
	if (!gsim_live(m))
		return;
	gsim_trace(s, "%s crashes", m->name);
	stop_member(s, slot, GSIM_CRASHED);
	gsim_record_crash(s, slot);
}

void gsim_stall(struct gsim *s, uint32_t slot, uint64_t ms, bool drop)
{
	struct gsim_member *m = &s->m[slot];
	if (m->status != GSIM_UP)
		return;
	m->status = GSIM_STALLED;
	memmove(&m->stalls[1], &m->stalls[0], (GSIM_STALL_HIST - 1) * sizeof(m->stalls[0]));
	m->stalls[0] = (struct gsim_stall){.start = s->now, .end = UINT64_MAX};
	if (m->n_stalls < GSIM_STALL_HIST)
		m->n_stalls++;
	m->stall_drop = drop;
	s->r.stalls++;
	gsim_trace(s, "%s stalls for %.3f s (inbound datagrams %s)", m->name, (double)ms / 1000.0,
		   drop ? "lost" : "queued");
	gsim_schedule(s, (struct gsim_event){
				 .at = s->now + ms, .kind = GSIM_EV_RESUME, .slot = slot, .gen = m->gen});
}

void gsim_leave(struct gsim *s, uint32_t slot)
{
	struct gsim_member *m = &s->m[slot];
	if (m->status != GSIM_UP)
		return;
	int rc = gossip_leave(m->g, s->now);
	if (rc < 0) {
		gsim_fail(s, "%s: gossip_leave: %s", m->name, gossip_strerror(rc));
		return;
	}
	m->status = GSIM_LEAVING;
	m->leave_deadline = s->now + 30000;
	s->r.leaves++;
	gsim_trace(s, "%s leaves", m->name);
	pump(s, slot);
}

void gsim_update_meta(struct gsim *s, uint32_t slot)
{
	struct gsim_member *m = &s->m[slot];
	if (m->status != GSIM_UP)
		return;
	char meta[64];
	int n = snprintf(meta, sizeof(meta), "role=sim,v=%" PRIu64, s->r.updates + 1);
	int rc = gossip_set_meta(m->g, s->now, (const uint8_t *)meta, (uint32_t)n);
	if (rc < 0) {
		gsim_fail(s, "%s: gossip_set_meta: %s", m->name, gossip_strerror(rc));
		return;
	}
	struct gossip_member me;
	if (!gossip_member_find(m->g, m->name, &me) || !me.self ||
	    me.meta_len != (uint32_t)n || memcmp(me.meta, meta, (size_t)n) != 0) {
		gsim_fail(s, "%s: after gossip_set_meta its own entry lacks the new meta",
			  m->name);
		return;
	}
	gsim_trace(s, "%s sets meta %s (incarnation %u)", m->name, meta, me.incarnation);
	gsim_record_update(s, slot, me.incarnation);
	pump(s, slot);
}

void gsim_partition(struct gsim *s, uint32_t pct, uint64_t ms)
{
	if (s->partitioned)
		return;
	uint32_t want = s->up_count * pct / 100;
	if (want == 0)
		want = 1;
	uint32_t cut = 0;
	for (uint32_t tries = 0; cut < want && tries < 4 * s->n_slots; tries++) {
		uint32_t i = (uint32_t)sim_rng_below(&s->fault_rng, s->n_slots);
		struct gsim_member *m = &s->m[i];
		if (!running(m) || m->part != 0)
			continue;
		m->part = 1;
		m->minority_until = UINT64_MAX;
		m->ever_minority = true;
		cut++;
	}
	s->partitioned = true;
	s->r.partitions++;
	gsim_trace(s, "partition: %u of %u live members cut off for %.3f s", cut, s->up_count,
		   (double)ms / 1000.0);
	gsim_schedule(s, (struct gsim_event){.at = s->now + ms, .kind = GSIM_EV_HEAL});
}

void gsim_heal(struct gsim *s)
{
	if (!s->partitioned)
		return;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct gsim_member *m = &s->m[i];
		if (m->part != 0) {
			m->part = 0;
			m->minority_until = s->now;
		}
	}
	s->partitioned = false;
	s->partition_healed_at = s->now;
	gsim_trace(s, "partition heals");
}

/* ------------------------------------------------------------------------------------------ */
/* Phases.                                                                                    */

static bool queues_drained(struct gsim *s)
{
	for (uint32_t i = 0; i < s->n_slots; i++) {
		if (s->m[i].g == NULL)
			continue;
		struct gossip_stats st;
		gossip_stats(s->m[i].g, &st);
		if (st.queue_len > 0)
			return false;
	}
	return true;
}

static void enter(struct gsim *s, uint32_t phase)
{
	static const char *const names[] = {"boot", "warm", "fault", "quiet", "done"};
	s->phase = phase;
	s->phase_at = s->now;
	gsim_trace(s, "phase %s", names[phase]);
}

static void on_sample(struct gsim *s)
{
	gsim_observe_sample(s);
	if (s->failed)
		return;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct gsim_member *m = &s->m[i];
		if (m->status == GSIM_LEAVING && s->now >= m->leave_deadline) {
			gsim_fail(s, "%s: gossip_leave_done() still false 30 s after its leave",
				  m->name);
			return;
		}
	}
	switch (s->phase) {
	case GSIM_PH_BOOT: {
		bool all = s->n_slots == s->p.members;
		for (uint32_t i = 0; all && i < s->n_slots; i++)
			all = s->m[i].joined && s->m[i].live_seen + 1 == s->up_count;
		if (all) {
			s->r.boot_ms = s->now;
			enter(s, GSIM_PH_WARM);
		} else if (s->now > s->p.boot_ms + 300000) {
			char first[GSIM_WHY / 2];
			gsim_converged(s, first, sizeof(first));
			gsim_fail(s, "the pool of %u members did not form within %.0f s: %s",
				  s->p.members, (double)(s->p.boot_ms + 300000) / 1000.0, first);
		}
		break;
	}
	case GSIM_PH_WARM:
		if (s->now >= s->phase_at + 5000 &&
		    (s->now >= s->phase_at + 60000 || queues_drained(s))) {
			s->measure_at = s->now;
			s->fault_end = s->now + s->p.duration_ms;
			enter(s, GSIM_PH_FAULT);
			gsim_faults_start(s);
		}
		break;
	case GSIM_PH_FAULT:
		s->r.member_hours += (double)s->up_count * GSIM_SAMPLE_MS / 3.6e6;
		if (s->now >= s->fault_end) {
			s->measure_end = s->now;
			s->r.measure_ms = s->now - s->measure_at;
			/* Faults stop: the partition heals, stalled members resume, loss ends. */
			gsim_heal(s);
			for (uint32_t i = 0; i < s->n_slots && !s->failed; i++)
				resume(s, i);
			s->loss_ended_at = s->now;
			s->loss_bp = 0;
			s->quiet_deadline = s->now + s->p.quiet_max_ms;
			enter(s, GSIM_PH_QUIET);
		}
		break;
	case GSIM_PH_QUIET: {
		bool leaving = false;
		for (uint32_t i = 0; i < s->n_slots; i++)
			leaving |= s->m[i].status == GSIM_LEAVING;
		if (!leaving && gsim_converged(s, NULL, 0) && !gsim_pending(s, NULL, 0) &&
		    s->now >= s->next_view_check) {
			s->next_view_check = s->now + 2000;
			if (gsim_check_views(s, NULL, 0)) {
				s->r.converge_ms = s->now - s->phase_at;
				enter(s, GSIM_PH_DONE);
			}
		}
		if (s->phase != GSIM_PH_DONE && !s->failed && s->now >= s->quiet_deadline) {
			char first[GSIM_WHY / 2];
			if (gsim_converged(s, first, sizeof(first)) &&
			    !gsim_pending(s, first, sizeof(first)))
				gsim_check_views(s, first, sizeof(first));
			gsim_fail(s, "the view did not converge within %.0f s after faults stopped: %s",
				  (double)s->p.quiet_max_ms / 1000.0, first);
		}
		break;
	}
	default:
		break;
	}
	if (!s->failed && s->phase != GSIM_PH_DONE)
		gsim_schedule(s, (struct gsim_event){.at = s->now + GSIM_SAMPLE_MS,
						     .kind = GSIM_EV_SAMPLE});
}

/* ------------------------------------------------------------------------------------------ */
/* The run.                                                                                   */

int gsim_init(struct gsim *s, const struct gsim_opts *o, const struct gsim_params *p,
	      uint64_t seed)
{
	memset(s, 0, sizeof(*s));
	s->opts = o;
	s->p = *p;
	s->seed = seed;
	s->measure_at = UINT64_MAX;
	s->measure_end = UINT64_MAX;
	s->ticking = UINT32_MAX;
	s->loss_ended_at = UINT64_MAX;
	s->loss_bp = p->loss_bp;
	s->cap = p->max_slots;
	if (s->cap < p->members)
		s->cap = p->members;
	if (s->cap > GSIM_MAX_MEMBERS)
		return -1;
	sim_rng_init(&s->net_rng, sim_seed_mix(seed, 1, 0));
	sim_rng_init(&s->fault_rng, sim_seed_mix(seed, 2, 0));
	sim_rng_init(&s->pick_rng, sim_seed_mix(seed, 3, 0));
	gossip_config_init(&s->base_cfg);
	struct gossip_config *c = &s->base_cfg;
	if (p->probe_interval_ms)
		c->probe_interval_ms = p->probe_interval_ms;
	if (p->probe_timeout_ms)
		c->probe_timeout_ms = p->probe_timeout_ms;
	if (p->suspicion_mult)
		c->suspicion_mult = p->suspicion_mult;
	if (p->suspicion_max_mult)
		c->suspicion_max_mult = p->suspicion_max_mult;
	if (p->gossip_interval_ms)
		c->gossip_interval_ms = p->gossip_interval_ms;
	if (p->retransmit_mult)
		c->retransmit_mult = p->retransmit_mult;
	if (p->pushpull_interval_ms)
		c->pushpull_interval_ms = p->pushpull_interval_ms;
	/* The datagram size minus the seal's overhead, as the transport configures it. */
	c->packet_size = 1400 - GSIM_SEAL_OVERHEAD;
	s->m = calloc(s->cap, sizeof(*s->m));
	if (s->m == NULL)
		return -1;
	if (gsim_observe_init(s) != 0)
		return -1;
	if (s->p.quiet_max_ms == 0) {
		/* Long enough for the slowest suspicion to run out and be refuted, and for two
		 * push-pull rounds at the pool's scaled interval. */
		s->p.quiet_max_ms = 2 * s->susp_max_ms + 2 * s->pushpull_ms + 60000;
	}
	return 0;
}

void gsim_run(struct gsim *s)
{
	for (uint32_t i = 0; i < s->p.members; i++) {
		uint64_t at = s->p.members > 1 ? s->p.boot_ms * i / (s->p.members - 1) : 0;
		gsim_schedule(s, (struct gsim_event){.at = at, .kind = GSIM_EV_START, .slot = i});
	}
	gsim_schedule(s, (struct gsim_event){.at = GSIM_SAMPLE_MS, .kind = GSIM_EV_SAMPLE});
	struct gsim_event e;
	while (!s->failed && s->phase != GSIM_PH_DONE && gsim_queue_pop(&s->q, &e)) {
		s->now = e.at;
		s->r.events++;
		uint64_t h = s->trace_hash;
		h = gsim_hash_u64(h, e.at);
		h = gsim_hash_u64(h, ((uint64_t)e.kind << 32) | e.slot);
		h = gsim_hash_u64(h, ((uint64_t)e.from << 32) | e.len);
		s->trace_hash = h;
		switch (e.kind) {
		case GSIM_EV_START:
			init_slot(s, e.slot);
			s->n_slots = e.slot + 1 > s->n_slots ? e.slot + 1 : s->n_slots;
			start_member(s, e.slot);
			break;
		case GSIM_EV_TICK:
			on_tick(s, &e);
			break;
		case GSIM_EV_DELIVER:
			on_deliver(s, &e, false);
			break;
		case GSIM_EV_PP_REQ:
			on_pp_req(s, &e);
			break;
		case GSIM_EV_PP_RESP:
			on_pp_resp(s, &e);
			break;
		case GSIM_EV_PP_FAIL:
			on_pp_fail(s, &e);
			break;
		case GSIM_EV_RESUME:
			if (s->m[e.slot].gen == e.gen)
				resume(s, e.slot);
			break;
		case GSIM_EV_JOIN_RETRY:
			on_join_retry(s, &e);
			break;
		case GSIM_EV_FAULT:
			gsim_fault(s, e.sub);
			break;
		case GSIM_EV_HEAL:
			gsim_heal(s);
			break;
		case GSIM_EV_SAMPLE:
			on_sample(s);
			break;
		default:
			gsim_fail(s, "unknown event kind %u", e.kind);
			break;
		}
		free(e.data);
	}
	if (!s->failed && s->phase != GSIM_PH_DONE)
		gsim_fail(s, "the event queue ran dry in phase %u", s->phase);
	gsim_observe_finish(s);
}

void gsim_fini(struct gsim *s)
{
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct gsim_member *m = &s->m[i];
		if (m->g != NULL)
			gossip_free(m->g);
		free_held(m);
	}
	free(s->m);
	s->m = NULL;
	gsim_queue_free(&s->q);
	free(s->pp_scratch);
	s->pp_scratch = NULL;
	gsim_observe_fini(s);
}
