/* sim_node.c: one simulated member: its Raft core, its disk, its state
 * machine, crashes and restarts.
 *
 * THE LOOP CONTRACT of raft.h, with a disk that takes time:
 *   pump:      while no write is in flight, take raft_ready(); check it
 *              (sim_check_update); send u.msgs at once; then, if the update
 *              has anything to persist, schedule its write to complete after
 *              this disk's delay, else complete it now;
 *   disk done: raft_memstore_persist() the whole update, send
 *              u.msgs_after_persist, install a snapshot into the state
 *              machine, apply u.committed, serve u.reads, raft_advance();
 *              then the application may take a snapshot and compact.
 * Events keep flowing into the core while the write is in flight, as the
 * contract allows. A crash frees the core without raft_advance(): the write
 * in flight is lost, and what survives is exactly the memstore. A restart is
 * a fresh raft_new() over raft_memstore_clone() of it, with the state
 * machine rebuilt from the stored snapshot and config.applied at its index.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

/* Counting allocator: a core must give back every block at raft_free(). */
static void *heap_malloc(void *ctx, size_t size)
{
	void *p = malloc(size);
	if (p != NULL)
		++*(int64_t *)ctx;
	return p;
}

static void *heap_realloc(void *ctx, void *ptr, size_t size)
{
	if (ptr == NULL)
		return heap_malloc(ctx, size);
	if (size == 0) {
		free(ptr);
		--*(int64_t *)ctx;
		return NULL;
	}
	return realloc(ptr, size);
}

static void heap_free(void *ctx, void *ptr)
{
	if (ptr == NULL)
		return;
	free(ptr);
	--*(int64_t *)ctx;
}

void sim_heap_counting(struct raft_heap *h, int64_t *blocks)
{
	h->ctx = blocks;
	h->malloc = heap_malloc;
	h->realloc = heap_realloc;
	h->free = heap_free;
}

const char *sim_state_name(uint32_t state)
{
	switch (state) {
	case RAFT_FOLLOWER:
		return "follower";
	case RAFT_PRE_CANDIDATE:
		return "pre-candidate";
	case RAFT_CANDIDATE:
		return "candidate";
	case RAFT_LEADER:
		return "LEADER";
	default:
		return "?";
	}
}

struct sim_node *sim_node_by_id(struct sim *s, uint64_t id)
{
	if (id == 0 || id > s->n_slots || !s->nodes[id - 1].used)
		return NULL;
	return &s->nodes[id - 1];
}

struct sim_node *sim_node_leader(struct sim *s)
{
	struct sim_node *best = NULL;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *n = &s->nodes[i];
		if (n->used && n->up && n->state == RAFT_LEADER && (best == NULL || n->term > best->term))
			best = n;
	}
	return best;
}

/* The common part of a first start and of a restart: a new core over the
 * node's memstore, its own random stream, a tick chain. */
static int node_boot(struct sim *s, struct sim_node *n)
{
	sim_rng_init(&n->rand, sim_seed_mix(s->seed, 0x6e6f6465ULL + n->id, n->gen));
	sim_heap_counting(&n->heap, &n->heap_blocks);

	struct raft_config cfg;
	raft_config_init(&cfg);
	cfg.id = n->id;
	cfg.storage = raft_memstore_storage(n->ms);
	cfg.heap = &n->heap;
	cfg.rand = sim_rng_raft;
	cfg.rand_ctx = &n->rand;
	cfg.election_ticks = s->p.election_ticks;
	cfg.heartbeat_ticks = s->p.heartbeat_ticks;
	cfg.applied = n->applied;
	cfg.pre_vote = s->p.pre_vote;
	cfg.check_quorum = s->p.check_quorum;
	cfg.max_inflight_msgs = s->p.max_inflight;
	cfg.max_msg_bytes = s->p.max_msg_bytes;
	if (s->p.max_uncommitted != 0)
		cfg.max_uncommitted_bytes = s->p.max_uncommitted;
	cfg.snapshot_chunk_bytes = s->p.chunk_bytes;
	cfg.max_snapshot_inflight = s->p.snap_inflight;

	int rc = raft_new(&cfg, &n->r);
	if (rc != 0) {
		sim_fail(s, "n%" PRIu64 ": raft_new failed: %s", n->id, raft_strerror(rc));
		return -1;
	}
	n->up = true;
	n->writing = false;
	n->state = 0;
	n->term = 0;
	n->commit = 0;
	n->lc_pending = false;
	/* What its storage says is committed was recorded when it was stored. */
	struct raft_hard_state hs;
	raft_memstore_hard_state(n->ms, &hs);
	n->claimed = hs.commit;
	/* The first tick falls anywhere in the first interval: nodes' clocks
	 * are not in phase. */
	sim_schedule(s, sim_rng_range(&s->net_rng, 1, n->tick_ms), SIM_EV_TICK, (uint32_t)(n->id - 1),
		     n->gen, NULL);
	sim_node_observe(s, n);
	return 0;
}

int sim_node_start(struct sim *s, uint32_t slot, const struct raft_conf *conf)
{
	struct sim_node *n = &s->nodes[slot];
	memset(n, 0, sizeof(*n));
	n->sim = s;
	n->id = slot + 1;
	n->used = true;
	n->joiner = conf == NULL;
	n->gen = 1;
	int rc = raft_memstore_new(&s->store_heap, &n->ms);
	if (rc != 0) {
		sim_fail(s, "raft_memstore_new failed: %s", raft_strerror(rc));
		return -1;
	}
	if (conf != NULL) {
		rc = raft_memstore_bootstrap(n->ms, conf);
		if (rc != 0) {
			sim_fail(s, "raft_memstore_bootstrap failed: %s", raft_strerror(rc));
			return -1;
		}
		n->conf = *conf;
	}
	if (!s->opts->scripted && sim_rng_pm(&s->net_rng, s->p.slow_disk_pm)) {
		n->disk_min = 5;
		n->disk_max = 150;
	} else {
		n->disk_min = 0;
		n->disk_max = 3;
	}
	/* Clocks drift a little apart: 97..103 ms per tick. */
	n->tick_ms = s->opts->scripted ? SIM_TICK_MS
				       : (uint32_t)sim_rng_range(&s->net_rng, SIM_TICK_MS - 3,
								 SIM_TICK_MS + 3);
	sim_trace(s, "start n%" PRIu64 " (%s, disk %u..%u ms, tick %u ms)", n->id,
		  n->joiner ? "joiner, empty storage" : "first member", n->disk_min, n->disk_max,
		  n->tick_ms);
	return node_boot(s, n);
}

static void free_core(struct sim *s, struct sim_node *n)
{
	if (n->r == NULL)
		return;
	raft_free(n->r);
	n->r = NULL;
	if (n->heap_blocks != 0)
		sim_fail(s, "n%" PRIu64 ": raft_free left %" PRId64 " blocks allocated", n->id,
			 n->heap_blocks);
}

void sim_node_crash(struct sim *s, struct sim_node *n, const char *why)
{
	if (!n->up)
		return;
	if (n->writing) {
		s->st.lost_writes++;
		sim_trace(s, "CRASH n%" PRIu64 " (%s): its write in flight is lost (%u entries%s%s)", n->id,
			  why, n->u.n_entries, n->u.has_hard_state ? ", hard state" : "",
			  n->u.snapshot ? ", snapshot" : "");
	} else {
		sim_trace(s, "CRASH n%" PRIu64 " (%s)", n->id, why);
	}
	free_core(s, n);
	n->up = false;
	n->writing = false;
	n->lc_pending = false;
	n->state = 0;
	n->gen++;
	s->st.crashes++;
	if (s->narrate)
		s->narrate(s, "crash", n);
}

void sim_node_restart(struct sim *s, struct sim_node *n)
{
	struct raft_memstore *c = NULL;
	int rc = raft_memstore_clone(n->ms, &c);
	if (rc != 0) {
		sim_fail(s, "n%" PRIu64 ": raft_memstore_clone failed: %s", n->id, raft_strerror(rc));
		return;
	}
	raft_memstore_free(n->ms);
	n->ms = c;

	/* The state machine is whatever the stored snapshot holds. */
	struct raft_snapshot_meta meta;
	memset(&meta, 0, sizeof(meta));
	const uint8_t *data = NULL;
	rc = raft_memstore_snapshot_data(n->ms, &meta, &data);
	memset(&n->kv, 0, sizeof(n->kv));
	n->applied = 0;
	n->snap_index = 0;
	if (rc == 0 && meta.index > 0) {
		uint64_t idx = 0;
		if (data == NULL || !sim_kv_load(data, meta.size, &n->kv, &idx) || idx != meta.index) {
			sim_fail(s, "n%" PRIu64 ": stored snapshot %" PRIu64 " is unreadable", n->id,
				 meta.index);
			return;
		}
		n->applied = meta.index;
		n->snap_index = meta.index;
		sim_check_restore(s, n, meta.index, meta.term);
	}
	/* The configuration as of applied, as the storage reports it. */
	struct raft_storage st = raft_memstore_storage(n->ms);
	struct raft_hard_state hs;
	rc = st.initial_state(st.ctx, &hs, &n->conf);
	if (rc != 0) {
		sim_fail(s, "n%" PRIu64 ": initial_state failed: %s", n->id, raft_strerror(rc));
		return;
	}
	sim_trace(s, "RESTART n%" PRIu64 ": snapshot %" PRIu64 ", log %" PRIu64 "..%" PRIu64
		  ", term %" PRIu64 " vote %" PRIu64 " commit %" PRIu64,
		  n->id, meta.index, st.first_index(st.ctx), st.last_index(st.ctx), hs.term, hs.vote,
		  hs.commit);
	if (s->failed)
		return;
	node_boot(s, n);
}

void sim_node_stop(struct sim *s, struct sim_node *n)
{
	if (n->stopped)
		return;
	sim_node_crash(s, n, "removed from the cluster, shut down");
	n->stopped = true;
	sim_trace(s, "STOP n%" PRIu64 " for good", n->id);
}

void sim_node_free(struct sim *s, struct sim_node *n)
{
	free_core(s, n);
	if (n->ms != NULL) {
		raft_memstore_free(n->ms);
		n->ms = NULL;
	}
	n->up = false;
}

static bool update_persists(const struct raft_update *u)
{
	return u->n_snapshot_chunks > 0 || u->snapshot != NULL || u->n_entries > 0 ||
	       u->has_hard_state;
}

/* The application's snapshot: every snap_every applied entries, of the
 * state machine as of applied, then the log is compacted. Lagging and
 * restarted nodes must then be caught up by the leader's chunked snapshot. */
static void maybe_snapshot(struct sim *s, struct sim_node *n)
{
	if (n->applied < n->snap_index + s->p.snap_every)
		return;
	struct raft_storage st = raft_memstore_storage(n->ms);
	if (n->applied > st.last_index(st.ctx))
		return;
	uint8_t buf[SIM_KV_SNAP_BYTES];
	size_t len = sim_kv_save(&n->kv, n->applied, buf, sizeof(buf));
	int rc = raft_memstore_snapshot(n->ms, n->applied, &n->conf, buf, len, s->p.snap_keep);
	if (rc != 0) {
		sim_fail(s, "n%" PRIu64 ": raft_memstore_snapshot(%" PRIu64 ") failed: %s", n->id,
			 n->applied, raft_strerror(rc));
		return;
	}
	n->snap_index = n->applied;
	s->st.snapshots_taken++;
	sim_trace(s, "  n%" PRIu64 " takes a snapshot at %" PRIu64 " and compacts its log to %" PRIu64
		  "..%" PRIu64,
		  n->id, n->applied, st.first_index(st.ctx), st.last_index(st.ctx));
}

static void apply_entry(struct sim *s, struct sim_node *n, const struct raft_entry *e)
{
	if (e->index != n->applied + 1) {
		sim_fail(s, "n%" PRIu64 " was given index %" PRIu64 " to apply after %" PRIu64, n->id,
			 e->index, n->applied);
		return;
	}
	switch (e->type) {
	case RAFT_ENTRY_NORMAL: {
		uint32_t key;
		uint64_t op;
		if (!sim_kv_parse(e->data, e->len, &key, &op)) {
			sim_fail(s, "n%" PRIu64 " applied index %" PRIu64 ": data is not an entry of ours",
				 n->id, e->index);
			return;
		}
		n->kv.v[key] = op;
		break;
	}
	case RAFT_ENTRY_CONF_CHANGE: {
		struct raft_conf_change cc;
		if (raft_conf_change_decode(e->data, e->len, &cc) != 0) {
			sim_fail(s, "n%" PRIu64 " applied index %" PRIu64 ": bad conf change", n->id,
				 e->index);
			return;
		}
		/* The core skips a change that does not apply; so does this. */
		(void)raft_conf_apply(&n->conf, &cc);
		break;
	}
	case RAFT_ENTRY_NOOP:
		break;
	default:
		sim_fail(s, "n%" PRIu64 " applied index %" PRIu64 " of unknown type %u", n->id, e->index,
			 e->type);
		return;
	}
	n->applied = e->index;
	sim_check_apply(s, n, e);
}

/* §3.8: respond only after updating stable storage. An acknowledgement of
 * entries, or a granted vote, must be backed by what the storage holds at
 * the moment it is sent, or a crash could take back what a quorum counted. */
static void check_durable(struct sim *s, struct sim_node *n, const struct raft_msg *m)
{
	struct raft_storage st = raft_memstore_storage(n->ms);
	if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && m->index > st.last_index(st.ctx)) {
		sim_fail(s, "n%" PRIu64 " acknowledges index %" PRIu64 " to n%" PRIu64
			 " but has stored only up to %" PRIu64,
			 n->id, m->index, m->to, st.last_index(st.ctx));
		return;
	}
	if (m->type == RAFT_MSG_VOTE_RESP && !m->reject) {
		struct raft_hard_state hs;
		raft_memstore_hard_state(n->ms, &hs);
		/* A later stored term also binds: no other vote in m->term. */
		if (hs.term < m->term || (hs.term == m->term && hs.vote != m->to))
			sim_fail(s, "n%" PRIu64 " grants its vote of term %" PRIu64 " to n%" PRIu64
				 " before storing it (stored term %" PRIu64 " vote %" PRIu64 ")",
				 n->id, m->term, m->to, hs.term, hs.vote);
	}
}

/* Steps 2 to 6 of the loop contract, once the write is done. */
static void node_finish(struct sim *s, struct sim_node *n)
{
	struct raft_update *u = &n->u;
	int rc = raft_memstore_persist(n->ms, u);
	if (rc != 0) {
		sim_fail(s, "n%" PRIu64 ": raft_memstore_persist failed: %s", n->id, raft_strerror(rc));
		return;
	}
	struct raft_storage st = raft_memstore_storage(n->ms);
	if (u->has_hard_state && u->hard_state.commit > st.last_index(st.ctx)) {
		sim_fail(s, "n%" PRIu64 ": hard state commit %" PRIu64 " beyond its last index %" PRIu64,
			 n->id, u->hard_state.commit, st.last_index(st.ctx));
		return;
	}
	if (sim_tracing(s) && update_persists(u))
		sim_trace(s, "  n%" PRIu64 " write done: log now %" PRIu64 "..%" PRIu64, n->id,
			  st.first_index(st.ctx), st.last_index(st.ctx));
	for (uint32_t i = 0; i < u->n_msgs_after_persist && !s->failed; i++) {
		check_durable(s, n, &u->msgs_after_persist[i]);
		sim_net_send(s, n, &u->msgs_after_persist[i]);
	}

	if (u->snapshot != NULL && !s->failed) {
		struct raft_snapshot_meta meta;
		memset(&meta, 0, sizeof(meta));
		const uint8_t *data = NULL;
		uint64_t idx = 0;
		struct sim_kv kv;
		rc = raft_memstore_snapshot_data(n->ms, &meta, &data);
		if (rc != 0 || meta.index != u->snapshot->index || data == NULL ||
		    !sim_kv_load(data, meta.size, &kv, &idx) || idx != meta.index) {
			sim_fail(s, "n%" PRIu64 ": installed snapshot %" PRIu64 "/%" PRIu64
				 " does not read back whole (%s)",
				 n->id, u->snapshot->index, u->snapshot->term,
				 rc != 0 ? raft_strerror(rc) : "bad data");
			return;
		}
		if (meta.index <= n->applied) {
			sim_fail(s, "n%" PRIu64 ": installing snapshot %" PRIu64 " would take its state"
				 " machine back from applied %" PRIu64,
				 n->id, meta.index, n->applied);
			return;
		}
		n->kv = kv;
		n->applied = meta.index;
		n->snap_index = meta.index;
		n->conf = meta.conf;
		s->st.snapshots_installed++;
		sim_trace(s, "  n%" PRIu64 " installs snapshot %" PRIu64 "/%" PRIu64 " (%" PRIu64 " bytes)",
			  n->id, meta.index, meta.term, meta.size);
		sim_check_restore(s, n, meta.index, meta.term);
	}
	for (uint32_t i = 0; i < u->n_committed && !s->failed; i++)
		apply_entry(s, n, &u->committed[i]);
	if (sim_tracing(s) && u->n_committed > 0)
		sim_trace(s, "  n%" PRIu64 " applied %" PRIu64 "..%" PRIu64, n->id, u->committed[0].index,
			  u->committed[u->n_committed - 1].index);
	for (uint32_t i = 0; i < u->n_reads && !s->failed; i++)
		sim_check_read_serve(s, n, &u->reads[i]);
	if (s->failed)
		return;
	raft_advance(n->r);
	n->writing = false;
	maybe_snapshot(s, n);
}

void sim_node_pump(struct sim *s, struct sim_node *n)
{
	for (int round = 0; round < SIM_PUMP_ROUNDS && !s->failed; round++) {
		if (!n->up || n->writing || !raft_has_update(n->r))
			return;
		/* Look first: a node that just won must be known as leader
		 * before its first update is checked (leader completeness). */
		sim_node_observe(s, n);
		int rc = raft_ready(n->r, &n->u);
		if (rc != 0) {
			sim_fail(s, "n%" PRIu64 ": raft_ready failed: %s", n->id, raft_strerror(rc));
			return;
		}
		n->writing = true;
		struct raft_update *u = &n->u;
		if (sim_tracing(s)) {
			char hs[96] = "";
			if (u->has_hard_state)
				snprintf(hs, sizeof(hs), " hard state term %" PRIu64 " vote %" PRIu64
					 " commit %" PRIu64,
					 u->hard_state.term, u->hard_state.vote, u->hard_state.commit);
			char ents[64] = "";
			if (u->n_entries > 0)
				snprintf(ents, sizeof(ents), " entries [%" PRIu64 "..%" PRIu64 "]",
					 u->entries[0].index, u->entries[u->n_entries - 1].index);
			sim_trace(s, "  n%" PRIu64 " update:%s%s%s%s msgs %u+%u committed %u reads %u", n->id,
				  ents, hs, u->snapshot ? " SNAPSHOT" : "",
				  u->n_snapshot_chunks ? " chunks" : "", u->n_msgs, u->n_msgs_after_persist,
				  u->n_committed, u->n_reads);
		}
		sim_check_update(s, n, u);
		for (uint32_t i = 0; i < u->n_msgs && !s->failed; i++) {
			check_durable(s, n, &u->msgs[i]);
			sim_net_send(s, n, &u->msgs[i]);
		}
		if (s->failed)
			return;
		if (update_persists(u)) {
			uint64_t d = sim_rng_range(&s->net_rng, n->disk_min, n->disk_max);
			sim_schedule(s, d, SIM_EV_DISK, (uint32_t)(n->id - 1), n->gen, NULL);
			return;
		}
		node_finish(s, n);
	}
}

void sim_node_disk_done(struct sim *s, struct sim_node *n)
{
	if (!n->up || !n->writing)
		return;
	node_finish(s, n);
	sim_node_pump(s, n);
	sim_node_observe(s, n);
}

void sim_node_observe(struct sim *s, struct sim_node *n)
{
	if (!n->up || s->failed)
		return;
	struct raft_status st;
	raft_status(n->r, &st);
	if (st.id != n->id) {
		sim_fail(s, "n%" PRIu64 ": raft_status reports id %" PRIu64, n->id, st.id);
		return;
	}
	if (st.term < n->term) {
		sim_fail(s, "n%" PRIu64 ": term went back from %" PRIu64 " to %" PRIu64, n->id, n->term,
			 st.term);
		return;
	}
	if (st.commit < n->commit) {
		sim_fail(s, "n%" PRIu64 ": commit went back from %" PRIu64 " to %" PRIu64, n->id,
			 n->commit, st.commit);
		return;
	}
	if (st.state != n->state || st.term != n->term) {
		uint32_t was = n->state;
		uint64_t was_term = n->term;
		n->state = st.state;
		n->term = st.term;
		sim_trace(s, "n%" PRIu64 " is %s of term %" PRIu64 " (leader n%" PRIu64 ")", n->id,
			  sim_state_name(st.state), st.term, st.leader);
		if (st.state == RAFT_LEADER && (was != RAFT_LEADER || was_term != st.term)) {
			s->st.leaders_elected++;
			sim_check_leader(s, n, st.term);
			sim_scenario_new_leader(s, n);
			if (s->narrate)
				s->narrate(s, "leader", n);
		} else if (was == RAFT_LEADER && st.state != RAFT_LEADER) {
			if (s->narrate)
				s->narrate(s, was_term == st.term ? "stepdown" : "deposed", n);
		}
	}
	bool advanced = st.commit > n->commit;
	n->commit = st.commit;
	if (advanced && s->p.kind == SIM_COMMIT_RULE && !s->opts->scripted)
		sim_cr_commit(s, n);
}
