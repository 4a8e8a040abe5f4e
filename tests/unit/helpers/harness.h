/* harness.h: an in-memory cluster driving the Raft core through its public
 * API only (raft.h), for the unit tests and the transcript runner.
 *
 * Each node is a raft_memstore bootstrapped with a configuration, a
 * deterministic generator, a tiny state machine and a mailbox. The network is
 * one FIFO queue of copied messages that the test delivers, drops or filters;
 * links can be cut. h_process_ready() follows THE LOOP CONTRACT of raft.h step
 * by step, and checks invariants on the way (one leader per term, applied
 * entries identical on every node, gap-free application, reads released only
 * once covered). A violated invariant aborts with the file, line and state.
 *
 * Ownership: the harness owns every node, memstore, raft and queued message;
 * pointers it returns stay valid until the next harness call that changes
 * that object (h_deliver, h_ready_finish, h_free ...).
 */
#ifndef CAIRN_TEST_HARNESS_H
#define CAIRN_TEST_HARNESS_H

#include "raft.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define H_MAX_ID 16 /* node ids are 1..H_MAX_ID */

/* ---- A growable string. ------------------------------------------------ */

struct h_buf {
	char *s;
	size_t len;
	size_t cap;
};

void h_buf_printf(struct h_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void h_buf_reset(struct h_buf *b);
void h_buf_free(struct h_buf *b);
const char *h_buf_str(const struct h_buf *b); /* "" when empty, never NULL */

/* ---- Rendering (render.c). --------------------------------------------- */

const char *h_msg_type_name(uint32_t type);
uint32_t h_msg_type_parse(const char *name); /* 0 if unknown */
const char *h_state_name(uint32_t state);
const char *h_progress_name(uint32_t state);
void h_render_entry(struct h_buf *b, const struct raft_entry *e);
void h_render_entries(struct h_buf *b, const struct raft_entry *e, uint32_t n);
void h_render_conf(struct h_buf *b, const struct raft_conf *c);
void h_render_msg(struct h_buf *b, const struct raft_msg *m);
/* "1: LEADER term=2 vote=1 leader=1 commit=5 applied=5 first=1 last=5 ..." */
void h_render_status(struct h_buf *b, const struct raft *r);
const char *h_errname(int err); /* "RAFT_ENOMEM" ..., "0" for 0 */

/* ---- Nodes. ------------------------------------------------------------ */

/* Options of one node. pre_vote and check_quorum are as given (off unless
 * set, whatever raft_config_init() defaults to); other zero fields keep
 * raft_config_init()'s defaults. */
struct h_opts {
	bool pre_vote;
	bool check_quorum;
	uint32_t election_ticks;
	uint32_t heartbeat_ticks;
	uint32_t max_entry_bytes;
	uint64_t max_msg_bytes;
	uint32_t max_inflight_msgs;
	uint64_t max_uncommitted_bytes;
	uint64_t max_committed_bytes;
	uint32_t max_pending_reads;
	uint32_t snapshot_chunk_bytes;
	uint32_t max_snapshot_inflight;
	const struct raft_heap *heap;
};

struct h_read {
	uint64_t id;
	uint64_t index;
	int status;
};

struct h_node {
	uint64_t id;
	bool exists;  /* memstore created */
	bool running; /* raft created (not crashed) */
	struct raft_memstore *ms;
	struct raft *r;
	struct h_opts opts;
	uint64_t base; /* last index after bootstrap */
	uint64_t rng;
	bool rand_fixed; /* rand returns rand_value (test control) */
	uint64_t rand_value;
	/* Between h_ready_begin() and h_ready_finish(). */
	bool pending;
	struct raft_update u;
	/* The state machine: NORMAL payloads joined by ','. */
	uint64_t applied;
	uint64_t n_applied_normal;
	uint64_t n_applied_conf;
	uint64_t n_applied_bad_conf;
	struct h_buf sm;
	/* Read states released to this node, in order. */
	struct h_read *reads;
	size_t n_reads;
	size_t cap_reads;
	uint64_t last_term; /* for the "term never decreases" check */
};

/* A queued message: a deep copy of what a node sent. */
struct h_msg {
	struct raft_msg m; /* entries and data point into ents and blob */
	struct raft_entry *ents;
	uint8_t *blob;
};

struct h_committed {
	bool set;
	uint64_t term;
	uint32_t type;
	uint64_t hash;
};

struct harness {
	struct h_node nodes[H_MAX_ID + 1];
	uint64_t seed;
	/* The network. */
	struct h_msg *q;
	size_t nq;
	size_t capq;
	bool cut[H_MAX_ID + 1][H_MAX_ID + 1];
	uint64_t sent[H_MAX_ID + 1][RAFT_MSG_TYPE_MAX + 1]; /* by sender, type */
	uint64_t granted_votes[H_MAX_ID + 1];              /* VOTE_RESP !reject sent */
	/* Invariant bookkeeping. */
	struct h_committed *committed; /* by index */
	size_t cap_committed;
	uint64_t leader_of_term[256]; /* terms < 256 are checked */
	/* When set, every event is rendered here (transcripts). */
	struct h_buf *out;
	bool trace; /* CAIRN_TRACE=1: render events to stderr as well */
	/* Allocation-failure tests: raft_ready() may fail with RAFT_ENOMEM
	 * (counted, the update is simply not taken) instead of aborting. */
	bool tolerate_nomem;
	uint64_t n_nomem;
	uint64_t n_unstable; /* h_stabilize() calls that gave up (tolerate_nomem) */
};

struct harness *h_new(void);
void h_free(struct harness *h);

/* Create node `id` with a fresh memstore bootstrapped with `conf` (NULL: not
 * bootstrapped). The node is not started. */
void h_node_init(struct harness *h, uint64_t id, const struct raft_conf *conf);
/* Persist entries of these terms after the last index of the bootstrapped
 * store, each with data "t<term>i<index>", and the hard state (a term below
 * the stored one keeps the stored one). Before start. */
void h_node_preload(struct harness *h, uint64_t id, const uint64_t *terms, size_t n,
		    uint64_t term, uint64_t vote);
/* raft_new() for the node with opts (NULL: defaults). Returns its error. */
int h_node_start(struct harness *h, uint64_t id, const struct h_opts *opts);
/* Nodes 1..n, all voters of one configuration, started with opts. */
void h_cluster(struct harness *h, uint32_t n, const struct h_opts *opts);
/* Nodes 1..nv voters and nv+1..nv+nl learners, started with opts. */
void h_cluster_learners(struct harness *h, uint32_t nv, uint32_t nl, const struct h_opts *opts);

/* Node `id` of the configuration {1..nvoters}, preloaded with entries of
 * these terms and the hard state (term, vote), started with opts. */
void h_start_alone(struct harness *h, uint64_t id, uint32_t nvoters, const uint64_t *terms,
		   size_t n, uint64_t term, uint64_t vote, const struct h_opts *opts);
/* Nodes 1..n, voters, each preloaded as given, started with opts. */
struct h_preset {
	size_t n;
	uint64_t terms[32];
	uint64_t term; /* hard state term (vote 0) */
};
void h_cluster_preset(struct harness *h, uint32_t n, const struct h_preset *p,
		      const struct h_opts *opts);

/* raft_free() keeping the persisted store: whatever the pending update had
 * not yet persisted is lost, as in a crash. */
void h_crash(struct harness *h, uint64_t id);
/* Start again from the store; the state machine restarts from the store's
 * snapshot and the core re-applies the committed entries after it. */
int h_restart(struct harness *h, uint64_t id);

struct h_node *h_node(struct harness *h, uint64_t id);
struct raft *h_raft(struct harness *h, uint64_t id);
void h_status(struct harness *h, uint64_t id, struct raft_status *st);
uint32_t h_state(struct harness *h, uint64_t id);
uint64_t h_term(struct harness *h, uint64_t id);
uint64_t h_commit(struct harness *h, uint64_t id);
uint64_t h_last_index(struct harness *h, uint64_t id);
uint64_t h_leader(struct harness *h, uint64_t id);
/* Term of entry i in the node's persisted store; 0 if not there. */
uint64_t h_log_term(struct harness *h, uint64_t id, uint64_t i);
/* Entry i of the node's persisted store (data borrowed); false if absent. */
bool h_log_entry(struct harness *h, uint64_t id, uint64_t i, struct raft_entry *e);
/* The last index of the node's store right after bootstrap (the bootstrap
 * writes one conf-change entry per member): what preloads follow. */
uint64_t h_base(struct harness *h, uint64_t id);
const struct raft_stats *h_stats(struct harness *h, uint64_t id);
/* Progress of `peer` as the leader `id` sees it; false if none. */
bool h_progress(struct harness *h, uint64_t id, uint64_t peer, struct raft_progress_info *pi);

/* ---- Time. -------------------------------------------------------------- */

void h_tick(struct harness *h, uint64_t id, uint32_t n);
/* Enough ticks to pass any randomized election timeout: 2 * election_ticks. */
void h_tick_election(struct harness *h, uint64_t id);
void h_tick_heartbeat(struct harness *h, uint64_t id);
uint32_t h_election_ticks(struct harness *h, uint64_t id);

/* ---- The loop contract. ------------------------------------------------ */

/* raft_ready() and send u.msgs (step 1). False if no update. The update
 * stays in h_node(h, id)->u until h_ready_finish(). */
bool h_ready_begin(struct harness *h, uint64_t id);
/* Steps 2-6: persist, send msgs_after_persist, apply, collect reads, advance. */
void h_ready_finish(struct harness *h, uint64_t id);
/* Both; false if there was no update. */
bool h_process_ready(struct harness *h, uint64_t id);
/* Process updates and deliver messages until quiet (bounded; aborts if not). */
void h_stabilize(struct harness *h);

/* ---- The network. ------------------------------------------------------- */

/* Filters: 0 matches any from, to or type. */
size_t h_deliver(struct harness *h, uint64_t from, uint64_t to, uint32_t type);
size_t h_deliver_all(struct harness *h);
size_t h_drop(struct harness *h, uint64_t from, uint64_t to, uint32_t type);
/* Drop only the n-th (from 0) queued message matching; false if none. */
bool h_drop_nth(struct harness *h, uint64_t from, uint64_t to, uint32_t type, size_t nth);
size_t h_count(const struct harness *h, uint64_t from, uint64_t to, uint32_t type);
/* The n-th (from 0) queued message matching; NULL if none. */
const struct raft_msg *h_find(const struct harness *h, uint64_t from, uint64_t to,
			      uint32_t type, size_t nth);
/* Queue a copy of m (bypasses cut links): to inject hand-made messages. */
void h_inject(struct harness *h, const struct raft_msg *m);
/* raft_step() on node m->to directly; returns its result. */
int h_step(struct harness *h, const struct raft_msg *m);
void h_cut(struct harness *h, uint64_t a, uint64_t b); /* both directions */
void h_isolate(struct harness *h, uint64_t id);
void h_recover(struct harness *h); /* heal every link */

/* ---- Helpers for tests. -------------------------------------------------- */

/* Campaign on id and stabilize; returns whether id became leader. */
bool h_elect(struct harness *h, uint64_t id);
/* raft_propose of a string. */
int h_propose(struct harness *h, uint64_t id, const char *s, uint64_t *index);
/* Snapshot node id's state machine at its applied index, keeping `keep`
 * entries before it in its log. */
int h_compact(struct harness *h, uint64_t id, uint64_t keep);
/* The read state with this id released to node id; NULL if none. */
const struct h_read *h_find_read(const struct harness *h, uint64_t id, uint64_t read_id);

/* A message with only type, from, to and term set. */
static inline struct raft_msg h_mk(uint32_t type, uint64_t from, uint64_t to, uint64_t term)
{
	struct raft_msg m;
	memset(&m, 0, sizeof m);
	m.type = type;
	m.from = from;
	m.to = to;
	m.term = term;
	return m;
}

/* Configurations. */
struct raft_conf h_conf_voters(uint32_t n); /* voters 1..n */
void h_conf_add(struct raft_conf *c, uint64_t id, uint32_t role);
/* The first message in msgs[0, n) to `to` (0: any) of `type`; NULL if none. */
const struct raft_msg *h_umsg(const struct raft_msg *msgs, uint32_t n, uint64_t to,
			      uint32_t type);
/* How many of msgs[0, n) are of `type`. */
uint32_t h_ucount(const struct raft_msg *msgs, uint32_t n, uint32_t type);

void h_fatal(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));
#define H_FATAL(...) h_fatal(__FILE__, __LINE__, __VA_ARGS__)
#define H_CHECK(cond, ...)                                                       \
	do {                                                                     \
		if (!(cond))                                                     \
			H_FATAL(__VA_ARGS__);                                    \
	} while (0)

#endif /* CAIRN_TEST_HARNESS_H */
