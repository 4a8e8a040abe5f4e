/* test_gossip.c: the SWIM core (gossip/) in a tiny in-process network of a few cores: the wire
 * codec and its strictness, join by push-pull, failure detection, refutation, the buddy
 * system, Lifeguard's health multiplier and suspicion timeouts, leave, metadata, reaping,
 * return after death, the broadcast bound and determinism. Time is simulated: each step jumps
 * to the next packet delivery or core deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gossip.h"
#include "gossip_int.h"

/* ---- the network ---- */

#define MAXN 12
#define MAXPKT 8192
#define MAXLOG 8192

struct pkt {
	int from, to;
	uint64_t at;
	uint32_t len;
	uint8_t data[1500];
};

struct logent {
	char name[32];
	uint32_t type, state, inc, prev;
	uint64_t at;
};

struct net;
/* Returns true to drop the packet. */
typedef bool (*filter_fn)(struct net *n, int from, int to, const uint8_t *data, size_t len);

struct net {
	struct gossip *g[MAXN];
	struct gossip_config cfg[MAXN];
	char names[MAXN][32];
	int n;
	bool down[MAXN];
	uint64_t now;
	uint64_t latency;
	struct pkt *q;
	int nq;
	filter_fn filter;
	void *filter_data;
	struct logent *log[MAXN];
	int nlog[MAXN];
	uint64_t fnv; /* hash of every datagram sent, for determinism */
	uint64_t sent_bytes;
	/* packets captured by a filter for inspection */
	struct pkt *cap;
	int ncap;
};

static struct gossip_addr addr_of(int i)
{
	struct gossip_addr a = { .family = 4, .port = 7946 };
	a.ip[0] = 10;
	a.ip[3] = (uint8_t)(i + 1);
	return a;
}

static int index_of(const struct gossip_addr *a)
{
	if (a->family != 4 || a->ip[0] != 10 || a->port != 7946)
		return -1;
	int i = a->ip[3] - 1;
	return i >= 0 && i < MAXN ? i : -1;
}

static void net_config(struct net *n, int i, uint64_t seed)
{
	struct gossip_config *c = &n->cfg[i];
	gossip_config_init(c);
	snprintf(n->names[i], sizeof n->names[i], "node-%d", i);
	c->name = n->names[i];
	c->addr = addr_of(i);
	c->seed = seed * 1000 + (uint64_t)i;
}

static void net_start(struct net *n, int i)
{
	assert_int_equal(gossip_new(&n->cfg[i], n->now, &n->g[i]), 0);
	n->down[i] = false;
}

static struct net *net_new(int count, uint64_t seed)
{
	struct net *n = calloc(1, sizeof(*n));
	assert_non_null(n);
	n->n = count;
	n->latency = 2;
	n->now = 1000;
	n->q = calloc(MAXPKT, sizeof(*n->q));
	n->cap = calloc(64, sizeof(*n->cap));
	assert_non_null(n->q);
	for (int i = 0; i < count; i++) {
		n->log[i] = calloc(MAXLOG, sizeof(struct logent));
		assert_non_null(n->log[i]);
		net_config(n, i, seed);
	}
	n->fnv = 0xcbf29ce484222325ull;
	return n;
}

static void net_start_all(struct net *n)
{
	for (int i = 0; i < n->n; i++)
		net_start(n, i);
}

static void net_free(struct net *n)
{
	for (int i = 0; i < n->n; i++) {
		gossip_free(n->g[i]);
		free(n->log[i]);
	}
	free(n->q);
	free(n->cap);
	free(n);
}

static void pushpull(struct net *n, int from, const struct gossip_pushpull *pp)
{
	int to = index_of(&pp->to);
	struct gossip *a = n->g[from];
	if (to < 0 || n->down[to] || n->g[to] == NULL) {
		gossip_pushpull_failed(a, n->now, &pp->to);
		return;
	}
	struct gossip *b = n->g[to];
	size_t cap = gossip_state_size(a);
	uint8_t *buf = malloc(cap);
	assert_non_null(buf);
	int len = gossip_state_encode(a, pp->join, buf, cap);
	assert_true(len > 0);
	bool join = false;
	assert_int_equal(gossip_state_merge(b, n->now, buf, (size_t)len, &join), 0);
	assert_int_equal(join, pp->join);
	free(buf);
	cap = gossip_state_size(b);
	buf = malloc(cap);
	assert_non_null(buf);
	len = gossip_state_encode(b, false, buf, cap);
	assert_true(len > 0);
	assert_int_equal(gossip_state_merge(a, n->now, buf, (size_t)len, &join), 0);
	assert_false(join);
	free(buf);
}

static void drain(struct net *n)
{
	for (int round = 0; round < 100; round++) {
		bool any = false;
		for (int i = 0; i < n->n; i++) {
			struct gossip *g = n->g[i];
			if (g == NULL || n->down[i])
				continue;
			while (gossip_has_update(g)) {
				any = true;
				struct gossip_update u;
				gossip_ready(g, &u);
				for (size_t k = 0; k < u.n_events; k++) {
					const struct gossip_event *e = &u.events[k];
					assert_true(n->nlog[i] < MAXLOG);
					struct logent *l = &n->log[i][n->nlog[i]++];
					snprintf(l->name, sizeof l->name, "%s", e->member.name);
					l->type = e->type;
					l->state = e->member.state;
					l->inc = e->member.incarnation;
					l->prev = e->prev_state;
					l->at = n->now;
				}
				for (size_t k = 0; k < u.n_sends; k++) {
					const struct gossip_send *s = &u.sends[k];
					assert_true(s->len > 0 && s->len <= n->cfg[i].packet_size);
					for (uint32_t b = 0; b < s->len; b++) {
						n->fnv ^= s->data[b];
						n->fnv *= 0x100000001b3ull;
					}
					n->sent_bytes += s->len;
					int to = index_of(&s->to);
					if (to < 0 || n->down[to])
						continue;
					if (n->filter && n->filter(n, i, to, s->data, s->len))
						continue;
					assert_true(n->nq < MAXPKT);
					struct pkt *p = &n->q[n->nq++];
					p->from = i;
					p->to = to;
					p->at = n->now + n->latency;
					p->len = s->len;
					memcpy(p->data, s->data, s->len);
				}
				/* Copy: a push-pull calls into this core again. */
				struct gossip_pushpull pps[64];
				size_t npp = u.n_pushpulls < 64 ? u.n_pushpulls : 64;
				if (npp)
					memcpy(pps, u.pushpulls, npp * sizeof(*pps));
				gossip_advance(g);
				for (size_t k = 0; k < npp; k++)
					pushpull(n, i, &pps[k]);
			}
		}
		if (!any)
			return;
	}
	fail_msg("updates did not settle");
}

/* Runs the network until `until` (absolute ms). */
static void net_run(struct net *n, uint64_t until)
{
	for (long steps = 0; steps < 10000000; steps++) {
		drain(n);
		uint64_t t = UINT64_MAX;
		for (int i = 0; i < n->nq; i++)
			if (n->q[i].at < t)
				t = n->q[i].at;
		for (int i = 0; i < n->n; i++)
			if (n->g[i] && !n->down[i]) {
				uint64_t d = gossip_next_deadline(n->g[i]);
				if (d < t)
					t = d;
			}
		if (t > until) {
			n->now = until;
			return;
		}
		if (t > n->now)
			n->now = t;
		/* Deliver due packets in order of sending. */
		int j = 0;
		for (int i = 0; i < n->nq; i++) {
			struct pkt *p = &n->q[i];
			if (p->at <= n->now) {
				if (!n->down[p->to] && n->g[p->to]) {
					struct gossip_addr from = addr_of(p->from);
					assert_int_equal(gossip_recv(n->g[p->to], n->now, &from,
								     p->data, p->len),
							 0);
				}
			} else {
				if (j != i)
					n->q[j] = *p;
				j++;
			}
		}
		n->nq = j;
		for (int i = 0; i < n->n; i++)
			if (n->g[i] && !n->down[i] && gossip_next_deadline(n->g[i]) <= n->now)
				gossip_tick(n->g[i], n->now);
	}
	fail_msg("network did not reach its deadline");
}

static void net_join_all(struct net *n, int seed_node)
{
	struct gossip_addr a = addr_of(seed_node);
	for (int i = 0; i < n->n; i++)
		if (i != seed_node && n->g[i] && !n->down[i])
			assert_int_equal(gossip_join(n->g[i], n->now, &a, 1), 0);
}

static uint32_t state_of(struct net *n, int viewer, int who)
{
	struct gossip_member m;
	if (!gossip_member_find(n->g[viewer], n->names[who], &m))
		return 0;
	return m.state;
}

static uint32_t inc_of(struct net *n, int viewer, int who)
{
	struct gossip_member m;
	if (!gossip_member_find(n->g[viewer], n->names[who], &m))
		return UINT32_MAX;
	return m.incarnation;
}

static bool all_see(struct net *n, int who, uint32_t state)
{
	for (int i = 0; i < n->n; i++) {
		if (i == who || n->down[i] || n->g[i] == NULL)
			continue;
		if (state_of(n, i, who) != state)
			return false;
	}
	return true;
}

/* Was `who` ever reported in `state` by `viewer`? Returns the first time, or 0. */
static uint64_t logged(struct net *n, int viewer, int who, uint32_t type, uint32_t state)
{
	for (int k = 0; k < n->nlog[viewer]; k++) {
		struct logent *l = &n->log[viewer][k];
		if (strcmp(l->name, n->names[who]) == 0 && l->type == type && l->state == state)
			return l->at;
	}
	return 0;
}

static void assert_never_dead(struct net *n, int who)
{
	for (int i = 0; i < n->n; i++)
		assert_int_equal(logged(n, i, who, GOSSIP_EV_UPDATE, GOSSIP_DEAD), 0);
}

static struct net *converged(int count, uint64_t seed)
{
	struct net *n = net_new(count, seed);
	net_start_all(n);
	net_join_all(n, 0);
	net_run(n, n->now + 5000);
	for (int i = 0; i < count; i++) {
		assert_int_equal(gossip_member_count(n->g[i]), (uint32_t)count);
		assert_int_equal(gossip_live_count(n->g[i]), (uint32_t)count);
		assert_true(all_see(n, i, GOSSIP_ALIVE));
	}
	return n;
}

/* Encodes one message into buf; returns its size. */
static size_t enc(const struct gossip__msg *m, uint8_t *buf, size_t cap)
{
	size_t w = gossip__msg_encode(m, buf, cap);
	assert_true(w > 0);
	return w;
}

static struct gossip__msg mk(uint8_t type, uint32_t num, const char *name, const char *from)
{
	struct gossip__msg m = { .type = type, .num = num };
	if (name) {
		m.name = (const uint8_t *)name;
		m.name_len = (uint8_t)strlen(name);
	}
	if (from) {
		m.from = (const uint8_t *)from;
		m.from_len = (uint8_t)strlen(from);
	}
	return m;
}

/* A compound of the given messages. */
static size_t compound(const struct gossip__msg *ms, int count, uint8_t *buf, size_t cap)
{
	size_t off = 2;
	for (int i = 0; i < count; i++) {
		size_t w = gossip__msg_encode(&ms[i], buf + off + 2, cap - off - 2);
		assert_true(w > 0);
		buf[off] = (uint8_t)w;
		buf[off + 1] = (uint8_t)(w >> 8);
		off += 2 + w;
	}
	buf[0] = GOSSIP__COMPOUND;
	buf[1] = (uint8_t)count;
	return off;
}

/* ---- the codec ---- */

static void test_codec_roundtrip(void **state)
{
	(void)state;
	uint8_t meta[GOSSIP_MAX_META];
	for (size_t i = 0; i < sizeof meta; i++)
		meta[i] = (uint8_t)(i * 7);
	char longname[GOSSIP_MAX_NAME + 1];
	memset(longname, 'n', GOSSIP_MAX_NAME);
	longname[GOSSIP_MAX_NAME] = 0;

	struct gossip__msg ms[7];
	ms[0] = mk(GOSSIP__PING, 77, "node-1", NULL);
	ms[1] = mk(GOSSIP__ACK, 0xfffffffe, NULL, NULL);
	ms[2] = mk(GOSSIP__NACK, 5, NULL, NULL);
	ms[3] = mk(GOSSIP__PINGREQ, 9, "node-2", NULL);
	ms[3].nack_ms = 400;
	ms[3].addr = (struct gossip_addr){ .family = 6, .port = 65535 };
	for (int i = 0; i < 16; i++)
		ms[3].addr.ip[i] = (uint8_t)(0xf0 + i);
	ms[4] = mk(GOSSIP__ALIVE, 3, longname, NULL);
	ms[4].addr = ms[3].addr; /* IPv6: the longest address */
	ms[4].meta = meta;
	ms[4].meta_len = GOSSIP_MAX_META;
	ms[5] = mk(GOSSIP__SUSPECT, 4, "a", "b");
	ms[6] = mk(GOSSIP__DEAD, 8, "x", "x");

	/* The largest message is the alive with the longest name and meta. */
	assert_int_equal(gossip__msg_size(&ms[4]), GOSSIP__MSG_MAX);

	uint8_t buf[2048];
	for (int i = 0; i < 7; i++) {
		size_t w = enc(&ms[i], buf, sizeof buf);
		assert_int_equal(w, gossip__msg_size(&ms[i]));
		/* Too small a buffer writes nothing. */
		assert_int_equal(gossip__msg_encode(&ms[i], buf, w - 1), 0);
		struct gossip__msg out[GOSSIP__MAX_PARTS];
		size_t n = 0;
		assert_int_equal(gossip__packet_decode(buf, w, out, &n), 0);
		assert_int_equal(n, 1);
		assert_int_equal(out[0].type, ms[i].type);
		assert_int_equal(out[0].num, ms[i].num);
		assert_int_equal(out[0].name_len, ms[i].name_len);
		if (ms[i].name_len)
			assert_memory_equal(out[0].name, ms[i].name, ms[i].name_len);
		assert_int_equal(out[0].from_len, ms[i].from_len);
		if (ms[i].from_len)
			assert_memory_equal(out[0].from, ms[i].from, ms[i].from_len);
		assert_int_equal(out[0].meta_len, ms[i].meta_len);
		if (ms[i].meta_len)
			assert_memory_equal(out[0].meta, ms[i].meta, ms[i].meta_len);
		if (ms[i].type == GOSSIP__PINGREQ || ms[i].type == GOSSIP__ALIVE)
			assert_true(gossip_addr_equal(&out[0].addr, &ms[i].addr));
		if (ms[i].type == GOSSIP__PINGREQ)
			assert_int_equal(out[0].nack_ms, 400);
		/* Every strict prefix fails, and so does one trailing byte. */
		for (size_t cut = 0; cut < w; cut++)
			assert_int_equal(gossip__packet_decode(buf, cut, out, &n),
					 GOSSIP_EMALFORMED);
		buf[w] = 0;
		assert_int_equal(gossip__packet_decode(buf, w + 1, out, &n), GOSSIP_EMALFORMED);
	}

	/* A compound of all of them. */
	size_t len = compound(ms, 7, buf, sizeof buf);
	struct gossip__msg out[GOSSIP__MAX_PARTS];
	size_t n = 0;
	assert_int_equal(gossip__packet_decode(buf, len, out, &n), 0);
	assert_int_equal(n, 7);
	for (int i = 0; i < 7; i++) {
		assert_int_equal(out[i].type, ms[i].type);
		assert_int_equal(out[i].num, ms[i].num);
	}
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(gossip__packet_decode(buf, cut, out, &n), GOSSIP_EMALFORMED);
}

static void test_codec_rejects(void **state)
{
	(void)state;
	uint8_t buf[512];
	struct gossip__msg out[GOSSIP__MAX_PARTS];
	size_t n;
	struct gossip__msg a = mk(GOSSIP__ALIVE, 1, "abc", NULL);
	a.addr = addr_of(1);
	size_t w = enc(&a, buf, sizeof buf);
	assert_int_equal(gossip__packet_decode(buf, w, out, &n), 0);

	uint8_t bad[512];
	/* Unknown type. */
	memcpy(bad, buf, w);
	bad[0] = 0;
	assert_int_equal(gossip__packet_decode(bad, w, out, &n), GOSSIP_EMALFORMED);
	bad[0] = GOSSIP__STATE;
	assert_int_equal(gossip__packet_decode(bad, w, out, &n), GOSSIP_EMALFORMED);
	/* Empty name. */
	memcpy(bad, buf, w);
	bad[5] = 0;
	assert_int_equal(gossip__packet_decode(bad, w, out, &n), GOSSIP_EMALFORMED);
	/* A NUL inside the name. */
	memcpy(bad, buf, w);
	bad[7] = 0;
	assert_int_equal(gossip__packet_decode(bad, w, out, &n), GOSSIP_EMALFORMED);
	/* Bad address family (after type, inc, name). */
	memcpy(bad, buf, w);
	bad[1 + 4 + 1 + 3] = 5;
	assert_int_equal(gossip__packet_decode(bad, w, out, &n), GOSSIP_EMALFORMED);
	/* Metadata longer than the bound, and longer than the packet. */
	memcpy(bad, buf, w);
	bad[w - 2] = 0x01;
	bad[w - 1] = 0x02;
	assert_int_equal(gossip__packet_decode(bad, w, out, &n), GOSSIP_EMALFORMED);
	/* Nothing at all, and a compound of zero parts. */
	assert_int_equal(gossip__packet_decode(buf, 0, out, &n), GOSSIP_EMALFORMED);
	bad[0] = GOSSIP__COMPOUND;
	bad[1] = 0;
	assert_int_equal(gossip__packet_decode(bad, 2, out, &n), GOSSIP_EMALFORMED);
	/* A compound inside a compound. */
	struct gossip__msg ack = mk(GOSSIP__ACK, 1, NULL, NULL);
	size_t inner = compound((struct gossip__msg[]){ ack, ack }, 2, bad + 4, sizeof bad - 4);
	bad[0] = GOSSIP__COMPOUND;
	bad[1] = 1;
	bad[2] = (uint8_t)inner;
	bad[3] = 0;
	assert_int_equal(gossip__packet_decode(bad, 4 + inner, out, &n), GOSSIP_EMALFORMED);
	/* A part length past the end, and a part length of zero. */
	size_t cl = compound((struct gossip__msg[]){ ack, a }, 2, bad, sizeof bad);
	bad[2] = 200;
	assert_int_equal(gossip__packet_decode(bad, cl, out, &n), GOSSIP_EMALFORMED);
	bad[2] = 0;
	assert_int_equal(gossip__packet_decode(bad, cl, out, &n), GOSSIP_EMALFORMED);

	/* Random corruption never crashes, and anything accepted re-encodes to the same size. */
	struct gossip__rng rng;
	gossip__rng_seed(&rng, 42);
	struct gossip__msg ms[3] = { a, ack, mk(GOSSIP__SUSPECT, 3, "abc", "def") };
	cl = compound(ms, 3, buf, sizeof buf);
	for (int it = 0; it < 20000; it++) {
		memcpy(bad, buf, cl);
		int flips = 1 + (int)gossip__rng_below(&rng, 4);
		for (int f = 0; f < flips; f++)
			bad[gossip__rng_below(&rng, cl)] = (uint8_t)gossip__rng_next(&rng);
		size_t blen = cl - gossip__rng_below(&rng, 3);
		if (gossip__packet_decode(bad, blen, out, &n) == 0) {
			size_t total = n > 1 ? 2 : 0;
			for (size_t k = 0; k < n; k++)
				total += gossip__msg_size(&out[k]) + (n > 1 ? 2 : 0);
			assert_int_equal(total, blen);
		}
	}
}

/* A malformed packet changes nothing: decoded whole before anything is applied. */
static void test_recv_malformed_no_effect(void **state)
{
	(void)state;
	struct net *n = net_new(1, 1);
	net_start_all(n);
	drain(n);
	struct gossip *g = n->g[0];
	int before = n->nlog[0];
	uint8_t buf[512];
	struct gossip__msg a = mk(GOSSIP__ALIVE, 1, "stranger", NULL);
	a.addr = addr_of(5);
	struct gossip__msg ping = mk(GOSSIP__PING, 1, "node-0", NULL);
	size_t len = compound((struct gossip__msg[]){ a, ping }, 2, buf, sizeof buf);
	struct gossip_addr from = addr_of(5);
	/* Truncated by one byte: the alive in the first part must not be applied. */
	assert_int_equal(gossip_recv(g, n->now, &from, buf, len - 1), GOSSIP_EMALFORMED);
	assert_false(gossip_has_update(g));
	assert_false(gossip_member_find(g, "stranger", NULL));
	struct gossip_stats st;
	gossip_stats(g, &st);
	assert_int_equal(st.malformed, 1);
	assert_int_equal(gossip_recv(g, n->now, &from, NULL, 0), GOSSIP_EMALFORMED);
	/* The whole packet is applied: a new member and an ack. */
	assert_int_equal(gossip_recv(g, n->now, &from, buf, len), 0);
	assert_true(gossip_member_find(g, "stranger", NULL));
	struct gossip_update u;
	gossip_ready(g, &u);
	assert_int_equal(u.n_events, 1);
	assert_string_equal(u.events[0].member.name, "stranger");
	assert_int_equal(u.events[0].prev_state, 0);
	assert_int_equal(u.n_sends, 1);
	struct gossip__msg out[GOSSIP__MAX_PARTS];
	size_t k;
	assert_int_equal(gossip__packet_decode(u.sends[0].data, u.sends[0].len, out, &k), 0);
	assert_int_equal(out[0].type, GOSSIP__ACK);
	assert_int_equal(out[0].num, 1);
	gossip_advance(g);
	gossip_stats(g, &st);
	assert_int_equal(st.malformed, 2);
	assert_int_equal(n->nlog[0], before);

	/* Push-pull states: every prefix is rejected, a count larger than the entries too. */
	size_t cap = gossip_state_size(g);
	uint8_t *sb = malloc(cap + 1);
	assert_non_null(sb);
	int sl = gossip_state_encode(g, true, sb, cap);
	assert_int_equal(sl, (int)cap);
	assert_int_equal(gossip_state_encode(g, true, sb, cap - 1), GOSSIP_ETOOBIG);
	bool join;
	for (int cut = 0; cut < sl; cut++)
		assert_int_equal(gossip_state_merge(g, n->now, sb, (size_t)cut, &join),
				 GOSSIP_EMALFORMED);
	sb[sl] = 0;
	assert_int_equal(gossip_state_merge(g, n->now, sb, (size_t)sl + 1, &join),
			 GOSSIP_EMALFORMED);
	/* count is after type, flags and the sender name */
	size_t count_off = 2 + 1 + strlen("node-0");
	sb[count_off] = (uint8_t)(sb[count_off] + 1);
	assert_int_equal(gossip_state_merge(g, n->now, sb, (size_t)sl, &join), GOSSIP_EMALFORMED);
	sb[count_off] = (uint8_t)(sb[count_off] - 1);
	assert_int_equal(gossip_state_merge(g, n->now, sb, (size_t)sl, &join), 0);
	assert_true(join);
	free(sb);
	net_free(n);
}

/* ---- membership ---- */

static void test_join_pushpull(void **state)
{
	(void)state;
	struct net *n = net_new(6, 2);
	net_start_all(n);
	drain(n);
	/* Each core reports itself first. */
	for (int i = 0; i < 6; i++) {
		assert_true(n->nlog[i] >= 1);
		assert_string_equal(n->log[i][0].name, n->names[i]);
		assert_int_equal(n->log[i][0].state, GOSSIP_ALIVE);
		assert_int_equal(n->log[i][0].prev, 0);
	}
	net_join_all(n, 0);
	drain(n);
	/* The push-pull alone teaches the joiner everyone the seed knows. */
	assert_int_equal(gossip_member_count(n->g[0]), 6);
	assert_int_equal(gossip_member_count(n->g[5]), 6);
	net_run(n, n->now + 5000);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(gossip_member_count(n->g[i]), 6);
		assert_true(all_see(n, i, GOSSIP_ALIVE));
		struct gossip_stats st;
		gossip_stats(n->g[i], &st);
		assert_true(st.probes > 0);
		assert_int_equal(st.probes_failed, 0);
		assert_int_equal(st.malformed, 0);
		for (int j = 0; j < 6; j++)
			assert_true(logged(n, i, j, GOSSIP_EV_UPDATE, GOSSIP_ALIVE) > 0);
	}
	net_free(n);
}

static void test_crash_detected(void **state)
{
	(void)state;
	struct net *n = converged(6, 3);
	uint64_t crash = n->now;
	n->down[5] = true;
	net_run(n, crash + 60000);
	/* n = 6: min suspicion 4 s, max 24 s; with the probe and dissemination on top the death
	 * is known everywhere well within a minute. */
	assert_true(all_see(n, 5, GOSSIP_DEAD));
	for (int i = 0; i < 5; i++) {
		uint64_t s = logged(n, i, 5, GOSSIP_EV_UPDATE, GOSSIP_SUSPECT);
		uint64_t d = logged(n, i, 5, GOSSIP_EV_UPDATE, GOSSIP_DEAD);
		assert_true(s > crash);
		assert_true(d > s);
		assert_int_equal(gossip_live_count(n->g[i]), 5);
	}
	for (int i = 0; i < 5; i++)
		assert_never_dead(n, i);
	net_free(n);
}

/* Confirmations shorten the suspicion: with 5 live members, each accusing independently,
 * the death comes well before the 24 s maximum but never before the 4 s minimum. */
static void test_suspicion_confirmations_network(void **state)
{
	(void)state;
	struct net *n = converged(6, 4);
	n->down[5] = true;
	net_run(n, n->now + 60000);
	/* The first member to declare the death: its own suspicion lasted at least the minimum
	 * (4 s) and, confirmed by its peers, well under the 24 s maximum: with one confirmation
	 * it would be 14 s, with two 8.15 s, with all three the minimum. */
	uint64_t first = UINT64_MAX, held = 0;
	for (int i = 0; i < 5; i++) {
		uint64_t s = logged(n, i, 5, GOSSIP_EV_UPDATE, GOSSIP_SUSPECT);
		uint64_t d = logged(n, i, 5, GOSSIP_EV_UPDATE, GOSSIP_DEAD);
		assert_true(s > 0 && d > s);
		if (d < first) {
			first = d;
			held = d - s;
		}
	}
	assert_true(held >= 4000);
	assert_true(held <= 14000);
	net_free(n);
}

/* The formula, exactly: Lifeguard §IV-B with memberlist's constants. */
static void test_suspicion_formula(void **state)
{
	(void)state;
	struct gossip_config c;
	gossip_config_init(&c);
	/* n = 10: min = 4 * 1 * 1000, max = 6 * min, k = 3 */
	assert_int_equal(gossip_suspicion_timeout(&c, 10, 0), 24000);
	assert_int_equal(gossip_suspicion_timeout(&c, 10, 1), 14000);
	assert_int_equal(gossip_suspicion_timeout(&c, 10, 2), 8150); /* 24000 - 20000*log3/log4 */
	assert_int_equal(gossip_suspicion_timeout(&c, 10, 3), 4000);
	assert_int_equal(gossip_suspicion_timeout(&c, 10, 9), 4000);
	/* n = 100: log10 n = 2 doubles the minimum. n = 1000: triples it. */
	assert_int_equal(gossip_suspicion_timeout(&c, 100, 3), 8000);
	assert_int_equal(gossip_suspicion_timeout(&c, 100, 0), 48000);
	assert_int_equal(gossip_suspicion_timeout(&c, 1000, 3), 12000);
	/* Small clusters: k = n - 2; with fewer than 3 members there is nobody to confirm. */
	assert_int_equal(gossip_suspicion_timeout(&c, 3, 0), 24000);
	assert_int_equal(gossip_suspicion_timeout(&c, 3, 1), 4000);
	assert_int_equal(gossip_suspicion_timeout(&c, 2, 0), 4000);
	/* Retransmits and push-pull scaling. */
	assert_int_equal(gossip_retransmit_limit(&c, 9), 4);
	assert_int_equal(gossip_retransmit_limit(&c, 10), 8);
	assert_int_equal(gossip_retransmit_limit(&c, 1000), 16);
	assert_int_equal(gossip_pushpull_interval(&c, 32), 30000);
	assert_int_equal(gossip_pushpull_interval(&c, 64), 60000);
	assert_int_equal(gossip_pushpull_interval(&c, 1000), 30000 * 6);
}

/* Inject messages into one core and watch its timer move with each confirmation. */
static void test_suspicion_timer_reevaluated(void **state)
{
	(void)state;
	struct net *n = net_new(1, 5);
	net_start_all(n);
	struct gossip *g = n->g[0];
	struct gossip_addr from = addr_of(9);
	uint8_t buf[512];
	/* Four more members: n = 5, so k = 3, min 4 s, max 24 s. */
	const char *names[] = { "m1", "m2", "m3", "m4" };
	for (int i = 0; i < 4; i++) {
		struct gossip__msg a = mk(GOSSIP__ALIVE, 0, names[i], NULL);
		a.addr = addr_of(i + 1);
		size_t w = enc(&a, buf, sizeof buf);
		assert_int_equal(gossip_recv(g, n->now, &from, buf, w), 0);
	}
	drain(n);
	uint64_t t0 = n->now;
	struct gossip__msg s = mk(GOSSIP__SUSPECT, 0, "m1", "m2");
	size_t w = enc(&s, buf, sizeof buf);
	assert_int_equal(gossip_recv(g, t0, &from, buf, w), 0);
	struct gossip_member m;
	assert_true(gossip_member_find(g, "m1", &m));
	assert_int_equal(m.state, GOSSIP_SUSPECT);
	/* The same accuser again does not count. */
	assert_int_equal(gossip_recv(g, t0 + 500, &from, buf, w), 0);
	/* A second member confirms at t0 + 1 s: timeout 14 s from the start. */
	s = mk(GOSSIP__SUSPECT, 0, "m1", "m3");
	w = enc(&s, buf, sizeof buf);
	assert_int_equal(gossip_recv(g, t0 + 1000, &from, buf, w), 0);
	assert_true(gossip_next_deadline(g) <= t0 + 14000);
	/* Tick through, acking every ping so our own probes succeed and add no confirmation
	 * (an ack alone does not clear a suspicion: only a higher incarnation does). */
	bool probed_m1 = false;
	for (uint64_t t = t0 + 1000; t < t0 + 14000; t += 100) {
		gossip_tick(g, t);
		while (gossip_has_update(g)) {
			struct gossip_update u;
			gossip_ready(g, &u);
			uint32_t acks[64];
			struct gossip_addr to[64];
			size_t na = 0;
			for (size_t k = 0; k < u.n_sends && na < 64; k++) {
				struct gossip__msg out[GOSSIP__MAX_PARTS];
				size_t cnt;
				assert_int_equal(gossip__packet_decode(u.sends[k].data,
								       u.sends[k].len, out, &cnt),
						 0);
				for (size_t x = 0; x < cnt; x++) {
					if (out[x].type != GOSSIP__PING)
						continue;
					if (out[x].name_len == 2 &&
					    memcmp(out[x].name, "m1", 2) == 0)
						probed_m1 = true;
					acks[na] = out[x].num;
					to[na++] = u.sends[k].to;
				}
			}
			gossip_advance(g);
			for (size_t k = 0; k < na; k++) {
				struct gossip__msg ack = mk(GOSSIP__ACK, acks[k], NULL, NULL);
				size_t aw = enc(&ack, buf, sizeof buf);
				assert_int_equal(gossip_recv(g, t, &to[k], buf, aw), 0);
			}
		}
		assert_true(gossip_member_find(g, "m1", &m));
		assert_int_equal(m.state, GOSSIP_SUSPECT);
	}
	/* The suspect was probed first, out of the round-robin order, to let it refute. */
	assert_true(probed_m1);
	gossip_tick(g, t0 + 13999);
	assert_true(gossip_member_find(g, "m1", &m));
	assert_int_equal(m.state, GOSSIP_SUSPECT);
	gossip_tick(g, t0 + 14000);
	assert_true(gossip_member_find(g, "m1", &m));
	assert_int_equal(m.state, GOSSIP_DEAD);
	struct gossip_stats st;
	gossip_stats(g, &st);
	assert_true(st.deaths >= 1);
	net_free(n);
}

static void test_refutation(void **state)
{
	(void)state;
	struct net *n = converged(4, 6);
	assert_int_equal(inc_of(n, 0, 1), 0);
	/* Someone claims node-1 is suspect at its current incarnation. */
	uint8_t buf[256];
	struct gossip__msg s = mk(GOSSIP__SUSPECT, 0, "node-1", "node-2");
	size_t w = enc(&s, buf, sizeof buf);
	struct gossip_addr from = addr_of(2);
	assert_int_equal(gossip_recv(n->g[1], n->now, &from, buf, w), 0);
	struct gossip_stats st;
	gossip_stats(n->g[1], &st);
	assert_int_equal(st.refutations, 1);
	assert_int_equal(st.health, 1); /* Lifeguard: refuting raises our own LHM */
	assert_int_equal(inc_of(n, 1, 1), 1);
	/* A stale accusation (lower incarnation) is ignored. */
	assert_int_equal(gossip_recv(n->g[1], n->now, &from, buf, w), 0);
	gossip_stats(n->g[1], &st);
	assert_int_equal(st.refutations, 1);
	/* A death claim at the new incarnation is refuted too. */
	struct gossip__msg d = mk(GOSSIP__DEAD, 1, "node-1", "node-3");
	w = enc(&d, buf, sizeof buf);
	assert_int_equal(gossip_recv(n->g[1], n->now, &from, buf, w), 0);
	assert_int_equal(inc_of(n, 1, 1), 2);
	drain(n);
	/* A stale accusation (incarnation 0 < 2) is answered to its sender with our alive: the
	 * sender plainly missed the refutation. */
	s = mk(GOSSIP__SUSPECT, 0, "node-1", "node-3");
	w = enc(&s, buf, sizeof buf);
	assert_int_equal(gossip_recv(n->g[1], n->now, &from, buf, w), 0);
	struct gossip_update u;
	assert_true(gossip_has_update(n->g[1]));
	gossip_ready(n->g[1], &u);
	assert_int_equal(u.n_sends, 1);
	assert_true(gossip_addr_equal(&u.sends[0].to, &from));
	struct gossip__msg out[GOSSIP__MAX_PARTS];
	size_t cnt;
	assert_int_equal(gossip__packet_decode(u.sends[0].data, u.sends[0].len, out, &cnt), 0);
	assert_int_equal(cnt, 1);
	assert_int_equal(out[0].type, GOSSIP__ALIVE);
	assert_int_equal(out[0].num, 2);
	assert_memory_equal(out[0].name, "node-1", 6);
	gossip_advance(n->g[1]);
	gossip_stats(n->g[1], &st);
	assert_int_equal(st.refutations, 2);
	net_run(n, n->now + 5000);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(state_of(n, i, 1), GOSSIP_ALIVE);
		assert_int_equal(inc_of(n, i, 1), 2);
	}
	assert_never_dead(n, 1);
	net_free(n);
}

/* The ping to a suspect carries the suspicion, and the ack carries the refutation. */
struct buddy_ctx {
	bool saw_buddy_ping, saw_refuting_ack;
};

static bool buddy_filter(struct net *n, int from, int to, const uint8_t *data, size_t len)
{
	struct buddy_ctx *c = n->filter_data;
	struct gossip__msg out[GOSSIP__MAX_PARTS];
	size_t k;
	assert_int_equal(gossip__packet_decode(data, len, out, &k), 0);
	bool ping = false, suspect = false, ack = false, alive = false;
	for (size_t i = 0; i < k; i++) {
		if (out[i].type == GOSSIP__PING)
			ping = true;
		if (out[i].type == GOSSIP__ACK)
			ack = true;
		if (out[i].type == GOSSIP__SUSPECT && out[i].name_len == 6 &&
		    memcmp(out[i].name, "node-1", 6) == 0 && out[i].from_len == 6 &&
		    memcmp(out[i].from, "node-0", 6) == 0)
			suspect = true;
		if (out[i].type == GOSSIP__ALIVE && out[i].name_len == 6 &&
		    memcmp(out[i].name, "node-1", 6) == 0 && out[i].num == 1)
			alive = true;
	}
	if (from == 0 && to == 1 && ping && suspect)
		c->saw_buddy_ping = true;
	if (from == 1 && to == 0 && ack && alive)
		c->saw_refuting_ack = true;
	/* Only probes reach node-1: no gossip round can tell it first. */
	return from == 0 && to == 1 && !ping;
}

static void test_buddy_system(void **state)
{
	(void)state;
	struct net *n = converged(2, 7);
	/* node-0 hears from a third party that node-1 is suspect. Only node-0 knows; the
	 * accuser "x" is not a member, so nothing else carries the news to node-1. */
	uint8_t buf[256];
	struct gossip__msg s = mk(GOSSIP__SUSPECT, 0, "node-1", "x");
	size_t w = enc(&s, buf, sizeof buf);
	struct gossip_addr from = addr_of(9);
	assert_int_equal(gossip_recv(n->g[0], n->now, &from, buf, w), 0);
	assert_int_equal(state_of(n, 0, 1), GOSSIP_SUSPECT);
	struct buddy_ctx c = { 0 };
	n->filter = buddy_filter;
	n->filter_data = &c;
	net_run(n, n->now + 3000);
	assert_true(c.saw_buddy_ping);
	assert_true(c.saw_refuting_ack);
	assert_int_equal(state_of(n, 0, 1), GOSSIP_ALIVE);
	assert_int_equal(inc_of(n, 0, 1), 1);
	struct gossip_stats st;
	gossip_stats(n->g[1], &st);
	assert_int_equal(st.refutations, 1);
	net_free(n);
}

/* Lifeguard's LHM: a member that cannot hear acks blames itself and slows down. */
static bool contains_ack(const uint8_t *data, size_t len)
{
	struct gossip__msg out[GOSSIP__MAX_PARTS];
	size_t k;
	if (gossip__packet_decode(data, len, out, &k) != 0)
		return false;
	for (size_t i = 0; i < k; i++)
		if (out[i].type == GOSSIP__ACK || out[i].type == GOSSIP__NACK)
			return true;
	return false;
}

static bool drop_acks_to_0(struct net *n, int from, int to, const uint8_t *data, size_t len)
{
	(void)n;
	(void)from;
	return to == 0 && contains_ack(data, len);
}

static void test_lhm_slows_probing(void **state)
{
	(void)state;
	struct net *n = converged(5, 8);
	struct gossip_stats a0, a1, b0, b1;
	gossip_stats(n->g[0], &a0);
	gossip_stats(n->g[1], &a1);
	assert_int_equal(a0.health, 0);
	n->filter = drop_acks_to_0;
	net_run(n, n->now + 30000);
	gossip_stats(n->g[0], &b0);
	gossip_stats(n->g[1], &b1);
	/* node-0 saw every probe fail and every nack missing: it is at the bound. */
	assert_int_equal(b0.health, n->cfg[0].awareness_max - 1);
	assert_true(b0.probes_failed > 0);
	/* It probed far less often than a healthy member in the same time. */
	uint64_t slow = b0.probes - a0.probes, healthy = b1.probes - a1.probes;
	assert_true(healthy >= 25);
	assert_true(slow * 3 < healthy);
	/* Its false accusations were refuted: nobody was declared dead. */
	for (int i = 0; i < 5; i++)
		assert_never_dead(n, i);
	/* Healthy again: the multiplier decays with successful probes. */
	n->filter = NULL;
	net_run(n, n->now + 120000);
	gossip_stats(n->g[0], &b0);
	assert_int_equal(b0.health, 0);
	for (int i = 0; i < 5; i++)
		assert_never_dead(n, i);
	net_free(n);
}

/* Randomized round-robin (SWIM §4.3): every member is probed once per pass, so the gap between
 * two probes of one target is at most 2(n - 1) - 1 probes, and passes are shuffled. */
struct rr_ctx {
	int order[256];
	int n;
};

static bool rr_filter(struct net *n, int from, int to, const uint8_t *data, size_t len)
{
	struct rr_ctx *c = n->filter_data;
	struct gossip__msg out[GOSSIP__MAX_PARTS];
	size_t k;
	assert_int_equal(gossip__packet_decode(data, len, out, &k), 0);
	for (size_t i = 0; i < k; i++)
		if (from == 0 && out[i].type == GOSSIP__PING && c->n < 256)
			c->order[c->n++] = to;
	return false;
}

static void test_round_robin(void **state)
{
	(void)state;
	struct net *n = converged(6, 19);
	struct rr_ctx c = { 0 };
	n->filter = rr_filter;
	n->filter_data = &c;
	net_run(n, n->now + 60500);
	assert_true(c.n >= 55);
	int last[MAXN];
	for (int i = 0; i < MAXN; i++)
		last[i] = -1;
	bool differs = false;
	for (int i = 0; i < c.n; i++) {
		int t = c.order[i];
		assert_true(t >= 1 && t <= 5);
		if (last[t] >= 0)
			assert_true(i - last[t] <= 2 * 5 - 1);
		last[t] = i;
		if (i >= 5 && c.order[i] != c.order[i - 5])
			differs = true; /* not the same fixed cycle every pass */
	}
	for (int t = 1; t <= 5; t++)
		assert_true(last[t] >= 0);
	assert_true(differs);
	net_free(n);
}

/* node-0 and node-1 cannot reach each other directly; the others can reach both. Probes
 * between them fail directly and succeed through ping-req relays: no suspicion at all. */
static bool cut_0_1(struct net *n, int from, int to, const uint8_t *data, size_t len)
{
	(void)n;
	(void)data;
	(void)len;
	return (from == 0 && to == 1) || (from == 1 && to == 0);
}

static void test_indirect_probe(void **state)
{
	(void)state;
	struct net *n = converged(5, 17);
	struct gossip_stats a0, b0, b2;
	gossip_stats(n->g[0], &a0);
	n->filter = cut_0_1;
	net_run(n, n->now + 60000);
	gossip_stats(n->g[0], &b0);
	gossip_stats(n->g[2], &b2);
	assert_true(b0.indirect_probes > a0.indirect_probes);
	assert_int_equal(b0.probes_failed, a0.probes_failed);
	assert_int_equal(b0.health, 0);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(logged(n, i, 0, GOSSIP_EV_UPDATE, GOSSIP_SUSPECT), 0);
		assert_int_equal(logged(n, i, 1, GOSSIP_EV_UPDATE, GOSSIP_SUSPECT), 0);
		assert_never_dead(n, i);
	}
	/* Relays answered for the target; the target answered them, so no relay sent a nack
	 * (nacks only when the target is silent). */
	assert_true(all_see(n, 1, GOSSIP_ALIVE));
	for (int i = 0; i < 5; i++) {
		gossip_stats(n->g[i], &b2);
		assert_int_equal(b2.nacks_sent, 0);
	}
	net_free(n);
}

/* A relay whose target is silent sends a nack, so the requester knows the relay is fine. */
static void test_nack_from_relay(void **state)
{
	(void)state;
	struct net *n = converged(5, 18);
	n->down[4] = true;
	net_run(n, n->now + 3000);
	uint64_t nacks = 0, failed = 0;
	for (int i = 0; i < 4; i++) {
		struct gossip_stats st;
		gossip_stats(n->g[i], &st);
		nacks += st.nacks_sent;
		failed += st.probes_failed;
		/* Every relay nacked in time, vouching that only the target is silent: a failed
		 * probe with all its nacks does not count against our own health. */
		assert_int_equal(st.health, 0);
	}
	assert_true(failed > 0);
	assert_true(nacks > 0);
	net_free(n);
}

static void test_leave_is_left(void **state)
{
	(void)state;
	struct net *n = converged(5, 9);
	assert_int_equal(gossip_leave(n->g[4], n->now), 0);
	assert_false(gossip_leave_done(n->g[4]));
	assert_int_equal(gossip_set_meta(n->g[4], n->now, (const uint8_t *)"x", 1), GOSSIP_ELEFT);
	struct gossip_addr a = addr_of(0);
	assert_int_equal(gossip_join(n->g[4], n->now, &a, 1), GOSSIP_ELEFT);
	for (int t = 0; t < 100 && !gossip_leave_done(n->g[4]); t++)
		net_run(n, n->now + 100);
	assert_true(gossip_leave_done(n->g[4]));
	assert_int_equal(gossip_next_deadline(n->g[4]), UINT64_MAX);
	n->down[4] = true; /* the process exits */
	net_run(n, n->now + 60000);
	assert_true(all_see(n, 4, GOSSIP_LEFT));
	assert_never_dead(n, 4);
	for (int i = 0; i < 4; i++) {
		assert_true(logged(n, i, 4, GOSSIP_EV_UPDATE, GOSSIP_LEFT) > 0);
		assert_int_equal(gossip_live_count(n->g[i]), 4);
	}
	/* The leaver itself reported its own state as left. */
	assert_true(logged(n, 4, 4, GOSSIP_EV_UPDATE, GOSSIP_LEFT) > 0);
	net_free(n);
}

static void test_meta_update(void **state)
{
	(void)state;
	struct net *n = converged(4, 10);
	const uint8_t tags[] = "role=worker";
	assert_int_equal(gossip_set_meta(n->g[2], n->now, tags, sizeof tags), 0);
	assert_int_equal(inc_of(n, 2, 2), 1);
	net_run(n, n->now + 3000);
	for (int i = 0; i < 4; i++) {
		struct gossip_member m;
		assert_true(gossip_member_find(n->g[i], "node-2", &m));
		assert_int_equal(m.incarnation, 1);
		assert_int_equal(m.meta_len, sizeof tags);
		assert_memory_equal(m.meta, tags, sizeof tags);
		assert_int_equal(m.state, GOSSIP_ALIVE);
	}
	/* An event carried the new meta. */
	bool seen = false;
	for (int k = 0; k < n->nlog[1]; k++)
		if (strcmp(n->log[1][k].name, "node-2") == 0 && n->log[1][k].inc == 1)
			seen = true;
	assert_true(seen);
	assert_int_equal(gossip_set_meta(n->g[2], n->now, tags, GOSSIP_MAX_META + 1),
			 GOSSIP_EINVAL);
	net_free(n);
}

static void test_reap_removes(void **state)
{
	(void)state;
	struct net *n = net_new(4, 11);
	for (int i = 0; i < 4; i++) {
		n->cfg[i].reap_dead_ms = 10000;
		n->cfg[i].reap_left_ms = 5000;
	}
	net_start_all(n);
	net_join_all(n, 0);
	net_run(n, n->now + 5000);
	assert_int_equal(gossip_member_count(n->g[0]), 4);
	n->down[3] = true;
	net_run(n, n->now + 60000);
	for (int i = 0; i < 3; i++) {
		uint64_t d = logged(n, i, 3, GOSSIP_EV_UPDATE, GOSSIP_DEAD);
		uint64_t r = logged(n, i, 3, GOSSIP_EV_REMOVE, GOSSIP_DEAD);
		assert_true(d > 0);
		assert_true(r >= d + 10000);
		assert_false(gossip_member_find(n->g[i], "node-3", NULL));
		assert_int_equal(gossip_member_count(n->g[i]), 3);
	}
	/* A leave is reaped after reap_left_ms. */
	assert_int_equal(gossip_leave(n->g[2], n->now), 0);
	for (int t = 0; t < 100 && !gossip_leave_done(n->g[2]); t++)
		net_run(n, n->now + 100);
	n->down[2] = true;
	net_run(n, n->now + 20000);
	for (int i = 0; i < 2; i++) {
		uint64_t l = logged(n, i, 2, GOSSIP_EV_UPDATE, GOSSIP_LEFT);
		uint64_t r = logged(n, i, 2, GOSSIP_EV_REMOVE, GOSSIP_LEFT);
		assert_true(l > 0);
		assert_true(r >= l + 5000);
		assert_int_equal(gossip_member_count(n->g[i]), 2);
	}
	net_free(n);
}

static void test_return_after_death(void **state)
{
	(void)state;
	struct net *n = converged(5, 12);
	n->down[4] = true;
	net_run(n, n->now + 60000);
	assert_true(all_see(n, 4, GOSSIP_DEAD));
	/* Restart with incarnation 0 and join: it learns it was dead and refutes. */
	gossip_free(n->g[4]);
	n->g[4] = NULL;
	n->cfg[4].seed += 7;
	net_start(n, 4);
	struct gossip_addr a = addr_of(1);
	assert_int_equal(gossip_join(n->g[4], n->now, &a, 1), 0);
	net_run(n, n->now + 10000);
	assert_true(all_see(n, 4, GOSSIP_ALIVE));
	uint32_t inc = inc_of(n, 4, 4);
	assert_true(inc >= 1);
	for (int i = 0; i < 4; i++)
		assert_int_equal(inc_of(n, i, 4), inc);
	/* The change from dead to alive was reported. */
	bool back = false;
	for (int k = 0; k < n->nlog[0]; k++) {
		struct logent *l = &n->log[0][k];
		if (strcmp(l->name, "node-4") == 0 && l->prev == GOSSIP_DEAD &&
		    l->state == GOSSIP_ALIVE)
			back = true;
	}
	assert_true(back);
	net_free(n);
}

/* An alive for a live member's name from another address is ignored and counted; a dead
 * member may come back at a new address. */
static void test_name_conflict(void **state)
{
	(void)state;
	struct net *n = converged(3, 13);
	uint8_t buf[256];
	struct gossip__msg a = mk(GOSSIP__ALIVE, 5, "node-2", NULL);
	a.addr = addr_of(9);
	size_t w = enc(&a, buf, sizeof buf);
	struct gossip_addr from = addr_of(9);
	assert_int_equal(gossip_recv(n->g[0], n->now, &from, buf, w), 0);
	struct gossip_member m;
	assert_true(gossip_member_find(n->g[0], "node-2", &m));
	assert_true(gossip_addr_equal(&m.addr, &n->cfg[2].addr));
	assert_int_equal(m.incarnation, 0);
	struct gossip_stats st;
	gossip_stats(n->g[0], &st);
	assert_int_equal(st.conflicts, 1);
	/* Once dead, the same name may return elsewhere with a higher incarnation. */
	struct gossip__msg d = mk(GOSSIP__DEAD, 0, "node-2", "node-1");
	size_t dw = enc(&d, buf, sizeof buf);
	assert_int_equal(gossip_recv(n->g[0], n->now, &from, buf, dw), 0);
	assert_int_equal(state_of(n, 0, 2), GOSSIP_DEAD);
	w = enc(&a, buf, sizeof buf);
	assert_int_equal(gossip_recv(n->g[0], n->now, &from, buf, w), 0);
	assert_true(gossip_member_find(n->g[0], "node-2", &m));
	assert_int_equal(m.state, GOSSIP_ALIVE);
	assert_int_equal(m.incarnation, 5);
	assert_true(gossip_addr_equal(&m.addr, &a.addr));
	net_free(n);
}

/* The ordering rules, one message at a time, with the events they produce in order. */
static void inject(struct gossip *g, uint64_t now, uint8_t type, uint32_t inc, const char *name,
		   const char *from)
{
	uint8_t buf[256];
	struct gossip__msg m = mk(type, inc, name, from);
	m.addr = addr_of(7);
	size_t w = enc(&m, buf, sizeof buf);
	struct gossip_addr src = addr_of(8);
	assert_int_equal(gossip_recv(g, now, &src, buf, w), 0);
}

static void expect(struct gossip *g, uint32_t state, uint32_t inc)
{
	struct gossip_member m;
	assert_true(gossip_member_find(g, "m", &m));
	assert_int_equal(m.state, state);
	assert_int_equal(m.incarnation, inc);
}

static void test_ordering_rules(void **state)
{
	(void)state;
	struct net *n = net_new(1, 20);
	net_start_all(n);
	drain(n);
	int first = n->nlog[0];
	struct gossip *g = n->g[0];
	uint64_t t = n->now;
	inject(g, t, GOSSIP__ALIVE, 0, "m", NULL);
	expect(g, GOSSIP_ALIVE, 0);
	inject(g, t, GOSSIP__SUSPECT, 0, "m", "a"); /* suspect(i) beats alive(i) */
	expect(g, GOSSIP_SUSPECT, 0);
	inject(g, t, GOSSIP__ALIVE, 0, "m", NULL); /* alive(i) does not beat suspect(i) */
	expect(g, GOSSIP_SUSPECT, 0);
	inject(g, t, GOSSIP__ALIVE, 1, "m", NULL); /* alive(i + 1) does */
	expect(g, GOSSIP_ALIVE, 1);
	inject(g, t, GOSSIP__SUSPECT, 0, "m", "a"); /* stale */
	expect(g, GOSSIP_ALIVE, 1);
	inject(g, t, GOSSIP__DEAD, 1, "m", "a"); /* dead(i) beats alive(i) */
	expect(g, GOSSIP_DEAD, 1);
	inject(g, t, GOSSIP__SUSPECT, 2, "m", "a"); /* the dead are not suspected */
	expect(g, GOSSIP_DEAD, 1);
	inject(g, t, GOSSIP__DEAD, 1, "m", "m"); /* its own leave beats a death */
	expect(g, GOSSIP_LEFT, 1);
	inject(g, t, GOSSIP__DEAD, 5, "m", "a"); /* and a death does not beat a leave */
	expect(g, GOSSIP_LEFT, 1);
	inject(g, t, GOSSIP__ALIVE, 1, "m", NULL); /* nor does alive at the same incarnation */
	expect(g, GOSSIP_LEFT, 1);
	inject(g, t, GOSSIP__ALIVE, 2, "m", NULL); /* it came back */
	expect(g, GOSSIP_ALIVE, 2);
	inject(g, t, GOSSIP__SUSPECT, 9, "unknown", "a"); /* news of strangers is dropped */
	inject(g, t, GOSSIP__DEAD, 9, "unknown", "a");
	assert_false(gossip_member_find(g, "unknown", NULL));
	drain(n);
	const uint32_t want[][2] = {
		{ GOSSIP_ALIVE, 0 }, { GOSSIP_SUSPECT, 0 }, { GOSSIP_ALIVE, 1 },
		{ GOSSIP_DEAD, 1 },  { GOSSIP_LEFT, 1 },    { GOSSIP_ALIVE, 2 },
	};
	assert_int_equal(n->nlog[0] - first, 6);
	for (int i = 0; i < 6; i++) {
		struct logent *l = &n->log[0][first + i];
		assert_string_equal(l->name, "m");
		assert_int_equal(l->state, want[i][0]);
		assert_int_equal(l->inc, want[i][1]);
		assert_int_equal(l->prev, i == 0 ? 0 : want[i - 1][0]);
	}
	net_free(n);
}

/* Merging a remote state: a remote "dead" for a member we think alive becomes a suspicion;
 * "left" is taken as it is. */
static void test_merge_rules(void **state)
{
	(void)state;
	struct net *n = converged(4, 14);
	/* Build a state from node-1's point of view where node-2 is dead and node-3 left. */
	struct gossip__state_entry es[2] = {
		{ .name = (const uint8_t *)"node-2",
		  .name_len = 6,
		  .addr = addr_of(2),
		  .state = GOSSIP_DEAD,
		  .incarnation = 0 },
		{ .name = (const uint8_t *)"node-3",
		  .name_len = 6,
		  .addr = addr_of(3),
		  .state = GOSSIP_LEFT,
		  .incarnation = 0 },
	};
	uint8_t buf[512];
	size_t off = gossip__state_hdr_encode(buf, false, (const uint8_t *)"node-1", 6, 2);
	for (int i = 0; i < 2; i++)
		off += gossip__state_entry_encode(buf + off, &es[i]);
	bool join = true;
	assert_int_equal(gossip_state_merge(n->g[0], n->now, buf, off, &join), 0);
	assert_false(join);
	assert_int_equal(state_of(n, 0, 2), GOSSIP_SUSPECT);
	assert_int_equal(state_of(n, 0, 3), GOSSIP_LEFT);
	struct gossip_stats st;
	gossip_stats(n->g[0], &st);
	assert_int_equal(st.deaths, 0);
	assert_true(st.pushpulls >= 1);
	net_free(n);
}

/* The broadcast queue holds one entry per member and at most max_queue. */
static void test_queue_bound(void **state)
{
	(void)state;
	struct net *n = net_new(1, 15);
	n->cfg[0].max_queue = 8;
	net_start_all(n);
	struct gossip *g = n->g[0];
	struct gossip_addr from = addr_of(9);
	uint8_t buf[256];
	struct gossip_stats st;
	gossip_stats(g, &st);
	assert_int_equal(st.queue_len, 1); /* our own alive */
	for (int i = 0; i < 20; i++) {
		char name[16];
		snprintf(name, sizeof name, "m%d", i);
		struct gossip__msg a = mk(GOSSIP__ALIVE, 0, name, NULL);
		a.addr = addr_of(i % 8);
		a.addr.port = (uint16_t)(1000 + i);
		size_t w = enc(&a, buf, sizeof buf);
		assert_int_equal(gossip_recv(g, n->now, &from, buf, w), 0);
		/* News about the same member replaces the pending entry. */
		struct gossip__msg s = mk(GOSSIP__SUSPECT, 0, name, "zz");
		w = enc(&s, buf, sizeof buf);
		assert_int_equal(gossip_recv(g, n->now, &from, buf, w), 0);
	}
	gossip_stats(g, &st);
	assert_int_equal(st.queue_len, 8);
	assert_int_equal(st.queue_dropped, 21 - 8);
	assert_int_equal(gossip_member_count(g), 21);
	net_free(n);
}

/* Same seeds and same calls give the same bytes; another seed gives others. */
static uint64_t run_fingerprint(uint64_t seed)
{
	struct net *n = net_new(6, seed);
	net_start_all(n);
	net_join_all(n, 0);
	net_run(n, n->now + 10000);
	n->down[5] = true;
	net_run(n, n->now + 40000);
	uint64_t f = n->fnv ^ n->sent_bytes;
	net_free(n);
	return f;
}

static void test_determinism(void **state)
{
	(void)state;
	uint64_t a = run_fingerprint(21), b = run_fingerprint(21), c = run_fingerprint(22);
	assert_true(a == b);
	assert_true(a != c);
}

/* Packets never exceed packet_size, and many pending updates spread over several packets. */
struct pack_ctx {
	size_t max_parts, max_len;
};

static bool pack_filter(struct net *n, int from, int to, const uint8_t *data, size_t len)
{
	(void)from;
	(void)to;
	struct pack_ctx *c = n->filter_data;
	struct gossip__msg out[GOSSIP__MAX_PARTS];
	size_t k;
	assert_int_equal(gossip__packet_decode(data, len, out, &k), 0);
	if (k > c->max_parts)
		c->max_parts = k;
	if (len > c->max_len)
		c->max_len = len;
	return false;
}

static void test_packet_size(void **state)
{
	(void)state;
	struct net *n = net_new(3, 16);
	for (int i = 0; i < 3; i++) {
		n->cfg[i].packet_size = GOSSIP_MIN_PACKET;
		n->cfg[i].suspicion_mult = 100; /* the fake members stay suspect, not dead */
	}
	net_start_all(n);
	net_join_all(n, 0);
	net_run(n, n->now + 3000);
	struct gossip *g = n->g[0];
	struct gossip_addr from = addr_of(9);
	uint8_t buf[1024];
	uint8_t meta[GOSSIP_MAX_META];
	memset(meta, 'm', sizeof meta);
	for (int i = 0; i < 30; i++) {
		char name[16];
		snprintf(name, sizeof name, "big%d", i);
		struct gossip__msg a = mk(GOSSIP__ALIVE, 0, name, NULL);
		a.addr = addr_of(9);
		a.addr.port = (uint16_t)(2000 + i);
		a.meta = meta;
		a.meta_len = i % 2 ? sizeof meta : 40; /* some fill a packet alone, some share */
		size_t w = enc(&a, buf, sizeof buf);
		assert_int_equal(gossip_recv(g, n->now, &from, buf, w), 0);
	}
	/* drain() asserts every send is within packet_size; the filter records compounds. */
	struct pack_ctx pc = { 0 };
	n->filter = pack_filter;
	n->filter_data = &pc;
	net_run(n, n->now + 70000);
	assert_true(pc.max_parts >= 3);
	assert_true(pc.max_len <= GOSSIP_MIN_PACKET);
	assert_true(pc.max_len > GOSSIP_MIN_PACKET / 2);
	/* The fake members never answer, so much gossip goes nowhere (how much the others learn
	 * depends on the draws); node-0 keeps them all, and the others learn some. */
	assert_int_equal(gossip_member_count(n->g[0]), 33);
	for (int i = 1; i < 3; i++)
		assert_true(gossip_member_count(n->g[i]) > 3);
	struct gossip_config c;
	gossip_config_init(&c);
	c.name = "x";
	c.addr = addr_of(0);
	c.packet_size = GOSSIP_MIN_PACKET - 1;
	struct gossip *bad = NULL;
	assert_int_equal(gossip_new(&c, 0, &bad), GOSSIP_EINVAL);
	assert_null(bad);
	net_free(n);
}

static void test_errors_and_names(void **state)
{
	(void)state;
	assert_string_equal(gossip_strerror(GOSSIP_EMALFORMED), "malformed message");
	assert_string_equal(gossip_strerror(0), "success");
	assert_string_equal(gossip_strerror(-999), "unknown error");
	assert_string_equal(gossip_state_name(GOSSIP_LEFT), "left");
	assert_string_equal(gossip_state_name(0), "unknown");
	struct gossip_config c;
	gossip_config_init(&c);
	assert_int_equal(c.probe_interval_ms, 1000);
	assert_int_equal(c.probe_timeout_ms, 500);
	assert_int_equal(c.indirect_checks, 3);
	assert_int_equal(c.suspicion_mult, 4);
	assert_int_equal(c.suspicion_max_mult, 6);
	assert_int_equal(c.retransmit_mult, 4);
	assert_int_equal(c.gossip_interval_ms, 200);
	assert_int_equal(c.gossip_nodes, 3);
	assert_int_equal(c.pushpull_interval_ms, 30000);
	assert_int_equal(c.awareness_max, 8);
	assert_int_equal(c.packet_size, 1400);
	struct gossip *g = NULL;
	assert_int_equal(gossip_new(&c, 0, &g), GOSSIP_EINVAL); /* no name */
	c.name = "";
	c.addr = addr_of(0);
	assert_int_equal(gossip_new(&c, 0, &g), GOSSIP_EINVAL);
	c.name = "ok";
	c.addr.family = 5;
	assert_int_equal(gossip_new(&c, 0, &g), GOSSIP_EINVAL);
	c.addr.family = 4;
	assert_int_equal(gossip_new(&c, 0, &g), 0);
	struct gossip_member m;
	assert_true(gossip_member_at(g, 0, &m));
	assert_true(m.self);
	assert_string_equal(m.name, "ok");
	assert_false(gossip_member_at(g, 1, &m));
	gossip_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec_roundtrip),
		cmocka_unit_test(test_codec_rejects),
		cmocka_unit_test(test_recv_malformed_no_effect),
		cmocka_unit_test(test_errors_and_names),
		cmocka_unit_test(test_join_pushpull),
		cmocka_unit_test(test_crash_detected),
		cmocka_unit_test(test_suspicion_confirmations_network),
		cmocka_unit_test(test_suspicion_formula),
		cmocka_unit_test(test_suspicion_timer_reevaluated),
		cmocka_unit_test(test_refutation),
		cmocka_unit_test(test_buddy_system),
		cmocka_unit_test(test_lhm_slows_probing),
		cmocka_unit_test(test_round_robin),
		cmocka_unit_test(test_indirect_probe),
		cmocka_unit_test(test_nack_from_relay),
		cmocka_unit_test(test_leave_is_left),
		cmocka_unit_test(test_meta_update),
		cmocka_unit_test(test_reap_removes),
		cmocka_unit_test(test_return_after_death),
		cmocka_unit_test(test_name_conflict),
		cmocka_unit_test(test_ordering_rules),
		cmocka_unit_test(test_merge_rules),
		cmocka_unit_test(test_queue_bound),
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_packet_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
