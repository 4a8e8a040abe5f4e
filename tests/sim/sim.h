/* sim.h: what the files of the deterministic Raft simulator share (tests/sim/).
 *
 * One process runs many seeds; each seed is one cluster of struct raft cores
 * over raft_memstore backends, driven by one priority queue of timed events on
 * one simulated clock (the step function is documented in sim_run.c). Nothing
 * here is static or global: a struct sim holds the whole of one seed, so two
 * runs of one seed are identical byte for byte.
 *
 * Files by role:
 *   sim_main.c   command line, the seed loop, the replay line of a failure
 *   sim_run.c    one seed: the step function and the quiet (liveness) phase
 *   sim_queue.c  the event queue (binary heap ordered by time, then sequence)
 *   sim_rng.c    xoshiro256** streams derived from the seed with splitmix64
 *   sim_net.c    messages in flight: delay, loss, duplication, partitions
 *   sim_node.c   a member: its core, its disk, crash and restart, the loop
 *                contract of raft.h, the application's snapshots
 *   sim_kv.c     the replicated key-value state machine and its snapshots
 *   sim_check.c  the invariants, checked as each fact appears
 *   sim_scenario.c per-seed parameters, faults and client operations
 *   sim_commit_rule.c the commit-rule scenario: rounds shaped like thesis
 *                Figure 3.7, driving partitions and crashes at its moments
 *   sim_demo.c   the narrated 5-node run of `make run`
 */
#ifndef CAIRN_SIM_H
#define CAIRN_SIM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sim_rng.h"

#include "raft.h"

/* ------------------------------------------------------------------------ */
/* Limits. Every queue and table of a seed is bounded by one of these.     */

#define SIM_MAX_SLOTS 24      /* node ids 1..24 over one seed: members and joiners */
#define SIM_MAX_JOINERS 8     /* nodes added by membership changes in one seed */
#define SIM_KV_KEYS 16        /* keys of the state machine: few, so reads meet writes */
#define SIM_TICK_MS 100       /* one raft_tick() every 100 simulated ms (± skew) */
#define SIM_MAX_QUEUE (1u << 20) /* events pending; more is a message storm */
#define SIM_MAX_TERM (1u << 20)  /* terms; more is an election storm */
#define SIM_MAX_HISTORY (1u << 22)
#define SIM_MAX_READS (1u << 20)
#define SIM_PUMP_ROUNDS 64    /* updates taken back to back for one event */
#define SIM_WHY 768

_Static_assert(SIM_MAX_SLOTS <= RAFT_MAX_MEMBERS + 8, "ids beyond the member table");
_Static_assert(7 + SIM_MAX_JOINERS <= SIM_MAX_SLOTS, "joiners need slots");

/* ------------------------------------------------------------------------ */
/* PRNG and hash: tests/sim/lib/sim_rng.h, plus (sim_rng.c):               */

/* True with probability per_mille / 1000. */
bool sim_rng_pm(struct sim_rng *r, uint32_t per_mille);
/* raft_config.rand: ctx is a struct sim_rng. */
uint64_t sim_rng_raft(void *ctx);

/* ------------------------------------------------------------------------ */
/* The state machine (sim_kv.c): SIM_KV_KEYS keys, each holding the op id   */
/* of the last "set" that wrote it (0: never written).                      */

struct sim_kv {
	uint64_t v[SIM_KV_KEYS];
};

#define SIM_KV_ENTRY_MAX 40
/* Entry data of "set k<key>=<op>"; returns its length. */
uint32_t sim_kv_format(char *buf, size_t cap, uint32_t key, uint64_t op);
/* Parse entry data; false if it is not a set. */
bool sim_kv_parse(const uint8_t *data, uint32_t len, uint32_t *key, uint64_t *op);
/* Snapshot data: magic, index, the values, a checksum. */
#define SIM_KV_SNAP_BYTES (4 + 4 + 8 + 8 * SIM_KV_KEYS + 8)
size_t sim_kv_save(const struct sim_kv *kv, uint64_t index, uint8_t *buf, size_t cap);
bool sim_kv_load(const uint8_t *data, size_t len, struct sim_kv *kv, uint64_t *index);
bool sim_kv_equal(const struct sim_kv *a, const struct sim_kv *b);

/* ------------------------------------------------------------------------ */
/* Messages in flight and the event queue (sim_queue.c).                    */

/* A deep copy of a raft_msg: entries and bytes live in the same block,
 * right after this struct. Freed with free() as one block. */
struct sim_msg {
	struct raft_msg m;
	uint64_t id; /* for the trace */
};

enum sim_ev_kind {
	SIM_EV_TICK = 1, /* a node's clock ticks */
	SIM_EV_DELIVER,  /* a message arrives */
	SIM_EV_DISK,     /* a node's write completes */
	SIM_EV_RESTART,  /* a crashed node comes back */
	SIM_EV_STOP,     /* a removed node shuts down for good */
	SIM_EV_FAULT,    /* the fault schedule acts */
	SIM_EV_CLIENT,   /* a client acts */
	SIM_EV_HEAL,     /* partitions heal */
	SIM_EV_LIVE,     /* the quiet phase's liveness probe */
	SIM_EV_CRASH,    /* a planned crash: a new leader's (sim_scenario.c) */
	SIM_EV_ROUND,    /* a step of a commit-rule round (sim_commit_rule.c):
			  * slot is the step, gen the round it belongs to */
};

struct sim_event {
	uint64_t at;  /* simulated ms */
	uint64_t seq; /* scheduling order: breaks ties in time */
	uint32_t kind;
	uint32_t slot;
	uint64_t gen; /* node incarnation the event belongs to */
	struct sim_msg *msg;
};

struct sim_queue {
	struct sim_event *ev;
	size_t len, cap;
	uint64_t seq;
};

/* 0, or -1 when the queue is full (SIM_MAX_QUEUE) or memory runs out. */
int sim_queue_push(struct sim_queue *q, struct sim_event e);
bool sim_queue_pop(struct sim_queue *q, struct sim_event *out);
/* Free the queue and every message still in it. */
void sim_queue_free(struct sim_queue *q);

/* ------------------------------------------------------------------------ */
/* One member.                                                              */

struct sim;

struct sim_node {
	struct sim *sim;
	uint64_t id; /* slot + 1 */
	bool used;     /* this slot holds a node */
	bool up;       /* running: false after a crash until the restart */
	bool stopped;  /* removed from the cluster and shut down for good */
	bool joiner;   /* added by a membership change (empty storage at start) */
	uint64_t gen;  /* incarnation; bumped at each crash */
	struct raft *r;
	struct raft_memstore *ms;
	struct raft_heap heap; /* counts the core's blocks: raft_free must return them all */
	int64_t heap_blocks;
	struct sim_rng rand; /* this incarnation's raft_config.rand */

	/* The update taken with raft_ready() whose write is in flight. */
	bool writing;
	struct raft_update u;

	/* The application: state machine, applied index, configuration. */
	struct sim_kv kv;
	uint64_t applied;
	struct raft_conf conf; /* as of applied, tracked by the application */
	uint64_t snap_index;   /* index of the latest snapshot in storage */
	bool removed;          /* its removal is committed: it will be stopped */

	/* Disk and clock of this machine. */
	uint32_t disk_min, disk_max; /* ms for a write */
	uint32_t tick_ms;

	/* Last observed soft state. */
	uint32_t state;
	uint64_t term;
	uint64_t commit;

	/* Leader completeness: checked when this leader's first entry of its
	 * term shows up in an update (everything before it is then visible). */
	bool lc_pending;
	uint64_t lc_term;
	uint64_t lc_index; /* highest index committed when it was elected */

	/* Commit safety: the hard-state commit index up to which this node's
	 * terms have been recorded (sim_check_update). */
	uint64_t claimed;
};

/* ------------------------------------------------------------------------ */
/* Invariant state (sim_check.c).                                           */

struct sim_hist {
	uint64_t term;
	uint32_t type;
	uint32_t len;
	uint8_t *data;
	struct sim_kv after; /* state machine after this entry */
};

struct sim_lt; /* (index, term) table entry */

/* The term a node's commit index covered at an index, before any node
 * applied that index: checked against the history once it gets there. */
struct sim_claim {
	uint64_t term; /* 0: no claim */
	uint64_t node;
};

struct sim_read {
	uint32_t slot;
	uint32_t key;
	uint64_t acked_at_issue; /* highest index acknowledged when it was issued */
	bool done;
};

struct sim_check {
	struct sim_hist *hist; /* hist[i - 1] is index i */
	uint64_t hist_len, hist_cap;
	uint64_t *leaders; /* term -> leader id, 0: none seen */
	uint64_t leaders_cap;
	struct sim_lt *lt;
	size_t lt_len, lt_cap;
	struct sim_read *reads; /* read id i is reads[i - 1] */
	uint64_t reads_len, reads_cap;
	struct sim_claim *claims; /* claims[i - 1] is index i; read beyond hist_len */
	uint64_t claims_cap;
	struct raft_conf conf; /* configuration as of hist_len */
};

/* ------------------------------------------------------------------------ */
/* One seed.                                                                */

enum sim_kind {
	SIM_BASIC = 0,
	SIM_PARTITION,
	SIM_CRASH,
	SIM_MEMBERSHIP,
	SIM_SNAPSHOT,
	SIM_TRANSFER,
	SIM_COMMIT_RULE,
	SIM_KIND_COUNT,
};

const char *sim_kind_name(uint32_t kind);
/* -1 for an unknown name; "mixed" is -1 too and handled by the caller. */
int sim_kind_parse(const char *name);

struct sim_params {
	uint32_t nodes;
	uint32_t kind;
	bool pre_vote;
	bool check_quorum;
	uint32_t election_ticks;
	uint32_t heartbeat_ticks;
	uint32_t chunk_bytes;
	uint32_t snap_inflight;
	uint32_t max_inflight;
	uint64_t max_msg_bytes;
	uint64_t max_uncommitted; /* 0: the core's default */
	uint32_t snap_every; /* applied entries between the application's snapshots */
	uint32_t snap_keep;  /* entries kept behind a snapshot */
	uint32_t loss_pm, dup_pm, long_pm; /* per mille of messages */
	uint32_t delay_min, delay_max, long_max; /* ms */
	uint32_t slow_disk_pm; /* per mille of nodes starting with a slow disk */
	uint32_t client_gap_max; /* ms between client operations */
	uint32_t fault_gap_min, fault_gap_max;
	uint32_t down_max_ms; /* longest crash */
};

struct sim_stats {
	uint64_t seeds, steps, sim_ms;
	uint64_t msgs_sent, msgs_delivered, msgs_dropped, msgs_duplicated;
	uint64_t leaders_elected, entries_committed, proposals, proposals_refused;
	uint64_t reads_issued, reads_served, reads_failed;
	uint64_t crashes, lost_writes, partitions, snapshots_taken, snapshots_installed;
	uint64_t conf_changes_applied, transfers, leader_changes_by_transfer;
	uint64_t liveness_ms_max;
	uint64_t kinds[SIM_KIND_COUNT];
	/* commit-rule rounds: started, the old side re-elected with a
	 * majority reachable, cut off again, the rival elected after that */
	uint64_t cr_rounds, cr_returns, cr_cuts, cr_rivals;
};

struct sim_opts {
	uint32_t nodes;   /* 0: per seed, 3, 5 or 7 */
	int kind;         /* -1: mixed (a kind per seed) */
	uint64_t steps;   /* events of the fault phase */
	bool verbose;     /* print the trace */
	bool hash_trace;  /* format and hash the trace even when not printing it */
	bool scripted;    /* the demo: no random faults nor clients, a calm network */
	FILE *out;
};

/* A commit-rule round (sim_commit_rule.c): its phase, the three sides and
 * the leaders it is waiting for or acting on. */
enum sim_cr_phase {
	SIM_CR_IDLE = 0,  /* between rounds */
	SIM_CR_SPLIT,     /* the old side is cut off with its leader */
	SIM_CR_RIVAL,     /* a rival leader of the rest holds its own side */
	SIM_CR_RECONCILE, /* the rival's side is cut off; the old side may return */
	SIM_CR_BACK,      /* a leader of the old side is back with a majority */
	SIM_CR_OVERWRITE, /* it is cut off again; the rival's side may win */
	SIM_CR_ENDING,    /* a later leader is elected: the heal is planned */
};

enum sim_cr_group {
	SIM_CR_REST = 0, /* neither side */
	SIM_CR_OLD,      /* the old leader's side: holds the old entries */
	SIM_CR_NEW,      /* the rival's side: holds the rival's entries */
};

struct sim_cr {
	uint32_t phase;      /* enum sim_cr_phase */
	uint64_t round;      /* ROUND events of another round are dropped */
	uint64_t until;      /* the phase gives up then */
	uint64_t idle_until; /* no new round before then */
	uint8_t group[SIM_MAX_SLOTS]; /* enum sim_cr_group by slot */
	uint32_t b_min, b_max; /* the rival's side's size, drawn at its election */
	uint64_t old_id, old_term;     /* the leader cut off first */
	uint64_t rival_id, rival_term; /* the leader of the rest */
	uint64_t back_id, back_term, back_commit; /* the old side's leader, returned */
	uint32_t cut;        /* how it is cut off again */
	bool cut_on_commit;  /* at its first commit, rather than at a random time */
	bool cut_planned;
};

struct sim {
	uint64_t seed;
	const struct sim_opts *opts;
	struct sim_params p;
	uint64_t now;  /* simulated ms */
	uint64_t step; /* events processed */
	struct sim_rng net_rng;    /* delays, loss, duplication, disk times */
	struct sim_rng fault_rng;  /* the fault schedule */
	struct sim_rng client_rng; /* client operations */
	struct sim_queue q;
	struct sim_node nodes[SIM_MAX_SLOTS];
	uint32_t n_slots; /* ids 1..n_slots are in use */
	uint32_t joiners;
	bool blocked[SIM_MAX_SLOTS][SIM_MAX_SLOTS]; /* [from][to] */
	struct raft_heap store_heap; /* the memstores' allocator, counted */
	int64_t store_blocks;
	struct sim_check chk;
	uint64_t next_msg_id;
	uint64_t next_op;
	struct sim_cr cr;

	/* Phases. */
	bool quiet;          /* faults over: the liveness phase */
	uint64_t quiet_at;   /* when it began */
	uint64_t live_deadline, converge_deadline;
	uint64_t final_op;   /* the op the liveness phase proposes */
	uint64_t final_index; /* its index once applied, 0 before */
	uint64_t final_term; /* term of the leader it was last proposed to */
	bool done;

	/* Outcome. */
	bool failed;
	char why[SIM_WHY];
	uint64_t trace_hash;
	struct sim_stats st;

	/* The demo's narration hook: called on leader changes and similar
	 * moments; NULL in normal runs. */
	void (*narrate)(struct sim *s, const char *what, struct sim_node *n);
	void *narrate_ctx;
};

/* sim_run.c */
/* Set up a seed: parameters, nodes, first events. 0 or -1 (out of memory). */
int sim_init(struct sim *s, const struct sim_opts *o, uint64_t seed);
/* Pop and handle one event; false when the queue is empty. */
bool sim_step(struct sim *s);
/* Free everything of the seed (and check that nothing leaked). */
void sim_fini(struct sim *s);
/* Run one whole seed: fault phase, quiet phase, final checks. */
void sim_run(struct sim *s);
/* Schedule an event; failure to do so is a violation (bounded queue). */
void sim_schedule(struct sim *s, uint64_t delay, uint32_t kind, uint32_t slot, uint64_t gen,
		  struct sim_msg *msg);
/* Record a violation (the first one wins) and stop the seed. */
void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One trace line; formatted only when printed or hashed. */
void sim_trace(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool sim_tracing(const struct sim *s)
{
	return s->opts->verbose || s->opts->hash_trace;
}
/* Enter the quiet phase: heal, restart, stop faults, probe liveness. */
void sim_quiet(struct sim *s);

/* sim_net.c */
const char *sim_msg_name(uint32_t type);
/* Copy m and schedule its delivery (or drop it). */
void sim_net_send(struct sim *s, struct sim_node *from, const struct raft_msg *m);
void sim_net_deliver(struct sim *s, struct sim_msg *m);
void sim_net_heal(struct sim *s);
/* Cut both directions between the groups (in_a[slot] true: group A). */
void sim_net_split(struct sim *s, const bool *in_a);
void sim_net_block(struct sim *s, uint32_t from, uint32_t to);
/* Describe a message for the trace. */
int sim_msg_describe(const struct raft_msg *m, char *buf, size_t cap);

/* sim_node.c */
/* A raft_heap over libc that counts the blocks it hands out. */
void sim_heap_counting(struct raft_heap *h, int64_t *blocks);
/* Start a node in an unused slot: a first member (bootstrapped with conf)
 * or a joiner (empty storage). 0 or -1. */
int sim_node_start(struct sim *s, uint32_t slot, const struct raft_conf *conf);
void sim_node_crash(struct sim *s, struct sim_node *n, const char *why);
void sim_node_restart(struct sim *s, struct sim_node *n);
void sim_node_stop(struct sim *s, struct sim_node *n);
/* Take updates while the node has some and no write is in flight. */
void sim_node_pump(struct sim *s, struct sim_node *n);
void sim_node_disk_done(struct sim *s, struct sim_node *n);
/* Look at the node's soft state: trace changes, check election safety. */
void sim_node_observe(struct sim *s, struct sim_node *n);
/* End of seed: free the core and the storage. */
void sim_node_free(struct sim *s, struct sim_node *n);
struct sim_node *sim_node_by_id(struct sim *s, uint64_t id);
/* The node that is leader with the highest term among running nodes. */
struct sim_node *sim_node_leader(struct sim *s);
const char *sim_state_name(uint32_t state);

/* sim_check.c */
int sim_check_init(struct sim_check *c, const struct raft_conf *conf);
void sim_check_free(struct sim_check *c);
/* A node is observed as leader of term (election safety). */
void sim_check_leader(struct sim *s, struct sim_node *n, uint64_t term);
/* An update was taken: entries' log matching, hard state rules, leader
 * completeness. Storage is as of the previous update. */
void sim_check_update(struct sim *s, struct sim_node *n, const struct raft_update *u);
/* Entry e was applied by n (n->kv is the state after it). */
void sim_check_apply(struct sim *s, struct sim_node *n, const struct raft_entry *e);
/* n's state machine was loaded from a snapshot at index. */
void sim_check_restore(struct sim *s, struct sim_node *n, uint64_t index, uint64_t term);
/* A read was issued / served. */
uint64_t sim_check_read_issue(struct sim *s, struct sim_node *n, uint32_t key);
void sim_check_read_serve(struct sim *s, struct sim_node *n, const struct raft_read_state *rs);
/* Pairwise comparison of all running nodes' stored logs. */
void sim_check_logs(struct sim *s);
/* The highest index applied by any node: acknowledged to a client. */
static inline uint64_t sim_check_acked(const struct sim *s)
{
	return s->chk.hist_len;
}
/* Term of the history's entry at index (0 if beyond). */
uint64_t sim_check_hist_term(const struct sim *s, uint64_t index);

/* sim_scenario.c */
void sim_scenario_params(struct sim *s, uint32_t nodes, int kind);
void sim_scenario_fault(struct sim *s);
void sim_scenario_client(struct sim *s);
/* A node was just elected: maybe plan its crash within its first moments. */
void sim_scenario_new_leader(struct sim *s, struct sim_node *n);
/* Crash n (within the bound on nodes down) and plan its restart. */
void sim_scenario_crash(struct sim *s, struct sim_node *n);

/* sim_commit_rule.c */
/* The fault schedule acts in a commit-rule seed: maybe start a round.
 * True if it did (the schedule then takes no other action). */
bool sim_cr_fault(struct sim *s);
/* n was just elected; called before its first update is taken, so a
 * partition set here already holds for that update's messages. */
void sim_cr_leader(struct sim *s, struct sim_node *n);
/* n's commit index advanced (in memory; its update is not yet taken). */
void sim_cr_commit(struct sim *s, struct sim_node *n);
/* A SIM_EV_ROUND event. */
void sim_cr_event(struct sim *s, uint32_t step, uint64_t round);

/* sim_demo.c */
int sim_demo(FILE *out);

#endif /* CAIRN_SIM_H */
