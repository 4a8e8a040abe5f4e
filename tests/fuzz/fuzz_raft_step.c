/* fuzz_raft_step.c: libFuzzer target for raft_step() fed by a lying peer.
 *
 * Every field of a peer message comes from outside (the transport decodes it
 * from the wire), so a malformed or malicious message must be refused or
 * ignored: never an assertion failure, a crash, or an update the storage
 * cannot apply. The input drives one member (id 1 of {1,2,3}), as a follower
 * or, after a scripted election, as the leader, through a sequence of
 * messages, ticks, proposals, reads and compactions. Each update is taken and
 * persisted through the loop contract; raft_memstore_persist() refusing it
 * means the core handed out something inconsistent, which aborts.
 *
 * Run: build-fuzz/bin/fuzz_raft_step -max_total_time=60 [corpus-dir]
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
	const uint8_t *p;
	size_t n;
};

static uint8_t u8(struct input *in)
{
	if (in->n == 0) {
		return 0;
	}
	in->n--;
	return *in->p++;
}

static uint16_t u16(struct input *in)
{
	uint16_t hi = u8(in);
	return (uint16_t)((hi << 8) | u8(in));
}

static uint64_t rng_state;

static uint64_t fuzz_rand(void *ctx)
{
	(void)ctx;
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return rng_state >> 11;
}

/* Take and persist every pending update, as a caller must. */
static void drain(struct raft *r, struct raft_memstore *ms)
{
	for (int k = 0; k < 8 && raft_has_update(r); k++) {
		struct raft_update u;
		int rv = raft_ready(r, &u);
		if (rv == RAFT_ENOMEM) {
			return;
		}
		CHECK(rv == 0);
		rv = raft_memstore_persist(ms, &u);
		CHECK(rv == 0);
		raft_advance(r);
	}
}

static void fill_conf(struct input *in, struct raft_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->n = 1u + u8(in) % 4u;
	for (uint32_t i = 0; i < c->n; i++) {
		c->members[i].id = 1u + u8(in) % 5u;
		c->members[i].role = 1u + u8(in) % 3u; /* 3 is not a role */
	}
}

static void one_message(struct input *in, struct raft *r, uint64_t term)
{
	static struct raft_entry ents[4];
	static uint8_t payload[4][16];
	static uint8_t chunk[64];
	struct raft_msg m;
	memset(&m, 0, sizeof(m));
	m.type = 1u + u8(in) % (RAFT_MSG_TYPE_MAX + 1u); /* one past the last type too */
	m.from = u8(in) % 6u;                             /* 0, self and a stranger too */
	m.to = u8(in) % 8u == 0 ? 2 : 1;
	m.term = term + u8(in) % 4u;
	m.term = m.term > 1 ? m.term - 1 : m.term;
	m.index = u16(in) % 64u;
	m.log_term = u8(in) % 6u;
	m.commit = u16(in) % 64u;
	uint8_t flags = u8(in);
	m.reject = flags & 1u;
	m.last = (flags >> 1) & 1u;
	m.hint_index = u8(in) % 64u;
	m.hint_term = u8(in) % 6u;
	m.context = u8(in) % 4u;
	m.n_entries = u8(in) % 5u;
	for (uint32_t i = 0; i < m.n_entries; i++) {
		uint8_t shape = u8(in);
		ents[i].index = (shape & 1u) ? m.index + 1 + i : u8(in);
		ents[i].term = (shape & 2u) ? m.term : u8(in) % 6u;
		ents[i].type = (shape >> 2) % 4u;
		ents[i].len = u8(in) % 17u;
		for (uint32_t b = 0; b < ents[i].len && b < 16; b++) {
			payload[i][b] = u8(in);
		}
		if (ents[i].len > 16) {
			ents[i].len = 16;
		}
		ents[i].data = payload[i];
		if (ents[i].type == RAFT_ENTRY_CONF_CHANGE && (shape & 32u)) {
			struct raft_conf_change cc = {
				.type = 1u + u8(in) % 3u,
				.id = 1u + u8(in) % 5u,
			};
			int n = raft_conf_change_encode(&cc, payload[i], sizeof(payload[i]));
			ents[i].len = n > 0 ? (uint32_t)n : 0;
		}
	}
	m.entries = m.n_entries > 0 ? ents : NULL;
	if (m.type == RAFT_MSG_SNAPSHOT || m.type == RAFT_MSG_SNAPSHOT_RESP) {
		m.snap.index = u16(in) % 80u;
		m.snap.term = u8(in) % 6u;
		m.snap.size = u8(in) % 64u;
		fill_conf(in, &m.snap.conf);
		m.index = u8(in) % 70u;
		m.len = u8(in) % 65u;
		for (uint32_t b = 0; b < m.len; b++) {
			chunk[b] = u8(in);
		}
		m.data = chunk;
	}
	int rv = raft_step(r, &m);
	CHECK(rv == 0 || rv == RAFT_ENOMEM);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, size};
	uint8_t setup = u8(&in);
	rng_state = setup;

	struct raft_memstore *ms;
	CHECK(raft_memstore_new(NULL, &ms) == 0);
	struct raft_conf conf = {.n = 3};
	for (uint32_t i = 0; i < 3; i++) {
		conf.members[i].id = i + 1;
		conf.members[i].role = RAFT_VOTER;
	}
	CHECK(raft_memstore_bootstrap(ms, &conf) == 0);
	struct raft_config cfg;
	raft_config_init(&cfg);
	cfg.id = 1;
	cfg.storage = raft_memstore_storage(ms);
	cfg.rand = fuzz_rand;
	cfg.pre_vote = (setup & 2u) != 0;
	cfg.check_quorum = (setup & 4u) != 0;
	cfg.snapshot_chunk_bytes = 16;
	cfg.max_msg_bytes = 32;
	cfg.max_inflight_msgs = 4;
	struct raft *r;
	CHECK(raft_new(&cfg, &r) == 0);
	drain(r, ms);

	if (setup & 1u) {
		/* become leader of term 2 with the votes of 2 and 3 */
		cfg.pre_vote = false;
		CHECK(raft_campaign(r) == 0);
		drain(r, ms);
		struct raft_status st;
		raft_status(r, &st);
		if (st.state == RAFT_PRE_CANDIDATE) {
			struct raft_msg pv = {.type = RAFT_MSG_PREVOTE_RESP,
					      .from = 2,
					      .to = 1,
					      .term = st.term + 1};
			CHECK(raft_step(r, &pv) == 0);
			drain(r, ms);
			raft_status(r, &st);
		}
		struct raft_msg v = {.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = st.term};
		CHECK(raft_step(r, &v) == 0);
		drain(r, ms);
	}

	for (int steps = 0; steps < 256 && in.n > 0; steps++) {
		struct raft_status st;
		raft_status(r, &st);
		uint8_t op = u8(&in) % 16u;
		if (op < 10) {
			one_message(&in, r, st.term);
		} else if (op == 10) {
			raft_tick(r);
		} else if (op == 11) {
			uint8_t buf[8] = {0};
			(void)raft_propose(r, buf, u8(&in) % 9u, NULL);
		} else if (op == 12) {
			(void)raft_read_index(r, u8(&in));
		} else if (op == 13) {
			struct raft_conf_change cc = {.type = 1u + u8(&in) % 3u,
						      .id = 1u + u8(&in) % 5u};
			(void)raft_propose_conf_change(r, &cc, NULL);
		} else if (op == 14) {
			(void)raft_transfer_leadership(r, u8(&in) % 5u);
		} else {
			/* the application snapshots what it applied and compacts */
			if (st.applied > 0) {
				uint8_t snapdata[24];
				memset(snapdata, (int)st.applied, sizeof(snapdata));
				(void)raft_memstore_snapshot(ms, st.applied, &st.conf, snapdata,
							     u8(&in) % 25u, u8(&in) % 3u);
			}
		}
		drain(r, ms);
		raft_status(r, &st);
		CHECK(st.commit <= st.last_index);
		CHECK(st.applied <= st.commit);
	}
	raft_free(r);
	raft_memstore_free(ms);
	return 0;
}
