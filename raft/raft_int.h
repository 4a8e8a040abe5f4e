/* raft_int.h: internals shared by the files of the Raft core. Nothing here is
 * part of the public API (raft.h). */
#ifndef CAIRN_RAFT_INT_H
#define CAIRN_RAFT_INT_H

#include "raft.h"

#include <stdio.h>
#include <stdlib.h>

/* Assertions carry the invariants (style.md 8). They stay on in every build:
 * a Raft core that continues past a broken invariant corrupts data. */
#define RAFT_ASSERT(cond)                                                       \
	do {                                                                    \
		if (!(cond)) {                                                  \
			raft__assert_fail(#cond, __FILE__, __LINE__, __func__); \
		}                                                               \
	} while (0)

_Noreturn void raft__assert_fail(const char *expr, const char *file, int line, const char *func);

#define RAFT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RAFT_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- heap ---------------------------------------------------------------- */

void *raft__malloc(const struct raft_heap *h, size_t size);
void *raft__realloc(const struct raft_heap *h, void *p, size_t size);
void raft__free(const struct raft_heap *h, void *p);
/* Grow *arr (elements of elem bytes) to hold at least `need`; 0 or NOMEM. */
int raft__grow(const struct raft_heap *h, void **arr, uint32_t *cap, uint32_t need, size_t elem);

/* ---- arena: a bump allocator for what an update hands out ---------------- */

struct raft__arena_block;

struct raft__arena {
	const struct raft_heap *heap;
	struct raft__arena_block *head;  /* current block */
	struct raft__arena_block *spare; /* reused after reset */
	size_t spare_bytes;              /* sum of the spare blocks' sizes */
	size_t used;                     /* bytes handed out since reset */
};

void raft__arena_init(struct raft__arena *a, const struct raft_heap *h);
void *raft__arena_alloc(struct raft__arena *a, size_t size);
void raft__arena_reset(struct raft__arena *a);
void raft__arena_close(struct raft__arena *a);

/* ---- the log: stable storage plus the unstable tail (§3.5, §5) ----------- */

/* Entry data lives in reference-counted blocks of RAFT__BLOCK_BYTES, filled
 * in log order: the unstable tail is appended at its end and released from
 * its front, so a block is freed once its last entry is persisted or
 * truncated, and a steady load makes one allocation per block, not one per
 * entry. An entry larger than a quarter block gets a block of its own. */
#define RAFT__BLOCK_BYTES (64u * 1024u)

struct raft__block {
	uint32_t refs; /* entries pointing into it, plus one while current */
	uint32_t used;
	uint32_t size;
	uint32_t pad;
	_Alignas(16) uint8_t data[];
};

/* Room for len bytes in *cur (a new current block when full, or a block of
 * its own when large); *blk gets the reference taken. NULL: out of memory. */
uint8_t *raft__block_alloc(const struct raft_heap *h, struct raft__block **cur, uint32_t len,
			   struct raft__block **blk);
void raft__block_unref(const struct raft_heap *h, struct raft__block *b);

/* Entries not yet persisted, and a snapshot not yet installed. Data of each
 * entry is held here (blk[i]) until the entry is persisted or truncated. */
struct raft__unstable {
	bool has_snapshot;
	bool snapshot_in_progress;
	struct raft_snapshot_meta snapshot;
	struct raft_entry *ents;
	struct raft__block **blk; /* blk[i] holds ents[i].data; NULL if empty */
	uint32_t n;
	uint32_t cap;
	uint32_t cap_blk;
	struct raft__block *cur; /* block being filled */
	uint32_t in_progress;    /* ents[0, in_progress) handed out for persistence */
	uint64_t offset;         /* index of ents[0] */
};

struct raft__log {
	struct raft_storage st;
	const struct raft_heap *heap;
	struct raft__unstable u;
	uint64_t committed;
	uint64_t applying; /* highest index handed out for applying */
	uint64_t applied;
	/* blocks of handed-out entries that were truncated: released at
	 * advance, when the caller is done with the update that shows them */
	struct raft__block **garbage;
	uint32_t n_garbage;
	uint32_t cap_garbage;
};

int raft__log_init(struct raft__log *l, const struct raft_storage *st, const struct raft_heap *h,
		   uint64_t applied);
void raft__log_close(struct raft__log *l);
uint64_t raft__log_first_index(const struct raft__log *l);
uint64_t raft__log_last_index(const struct raft__log *l);
uint64_t raft__log_last_term(const struct raft__log *l);
/* Term of entry i: 0 with RAFT_ECOMPACTED/RAFT_EUNAVAILABLE, or the term. */
int raft__log_term(const struct raft__log *l, uint64_t i, uint64_t *term);
uint64_t raft__log_term_or0(const struct raft__log *l, uint64_t i);
bool raft__log_match_term(const struct raft__log *l, uint64_t i, uint64_t term);
bool raft__log_up_to_date(const struct raft__log *l, uint64_t last_index, uint64_t last_term);
/* §3.5 receiver rules 3-4 once the previous entry matched: skip what is
 * present, replace from the first conflict. RAFT_ECORRUPT (nothing changed)
 * if the conflict is at or below the commit index. */
int raft__log_maybe_append(struct raft__log *l, const struct raft_entry *ents, uint32_t n);
/* Append entries at the end (leader), copying data. */
int raft__log_append(struct raft__log *l, const struct raft_entry *ents, uint32_t n);
/* Largest index <= index whose term <= term, and that term (§3.5 fast back-off). */
void raft__log_find_conflict_by_term(const struct raft__log *l, uint64_t index, uint64_t term,
				     uint64_t *out_index, uint64_t *out_term);
void raft__log_commit_to(struct raft__log *l, uint64_t index);
/* Entries [lo, hi) copied into the arena (data too), at most max_bytes
 * (at least one). */
int raft__log_slice(const struct raft__log *l, struct raft__arena *a, uint64_t lo, uint64_t hi,
		    uint64_t max_bytes, struct raft_entry **out, uint32_t *n);
/* Install a snapshot in the unstable part: the log becomes empty after it. */
void raft__log_restore(struct raft__log *l, const struct raft_snapshot_meta *meta);
/* Entries [index of first, ...] were persisted: drop them from unstable. */
void raft__log_stable_to(struct raft__log *l, uint64_t index, uint64_t term);
void raft__log_free_garbage(struct raft__log *l);

/* Upper bound of config.max_inflight_msgs: the ring lives inline so a
 * membership change never allocates. */
#define RAFT__MAX_INFLIGHT 512

/* ---- progress: the leader's view of each member (etcd-style states) ------ */

struct raft__progress {
	uint64_t id;
	uint32_t role;
	uint32_t state; /* enum raft_progress_state */
	uint64_t match;
	uint64_t next;
	bool probe_sent;
	bool recent_active;
	/* in-flight APPENDs: last index of each, a ring of max_inflight_msgs */
	uint64_t infl[RAFT__MAX_INFLIGHT];
	uint32_t infl_start;
	uint32_t infl_count;
	/* READ_INDEX confirmation: highest heartbeat sequence acknowledged */
	uint64_t hb_acked;
	/* snapshot being sent (state SNAPSHOT) */
	struct raft_snapshot_meta snap;
	uint64_t snap_offset; /* next byte to send */
	uint64_t snap_acked;  /* bytes the follower has staged */
	uint64_t snap_acked_at_check;
	bool snap_sent_all;
	bool snap_resend; /* rewound by a rejection: resend at the next tick */
	uint32_t snap_stall;
	/* vote in the current election: 0 none, 1 granted, 2 refused */
	uint8_t vote;
};

/* ---- pending reads ------------------------------------------------------- */

struct raft__read {
	uint64_t id;
	uint64_t from; /* 0: local; else the follower that forwarded it */
	uint64_t index;
	uint64_t seq; /* heartbeat sequence that confirms it; 0: not sent yet */
};

/* ---- what the next update will hand out ---------------------------------- */

/* Messages one update may carry in each of its two lists. Beyond it a
 * message is dropped, which Raft tolerates as loss; a proposal or read that
 * would be forwarded is refused with RAFT_EBUSY instead. */
#define RAFT__MAX_OUTBOX_MSGS (1u << 16)

struct raft__outbox {
	struct raft__arena arena;
	struct raft_msg *msgs;
	uint32_t n_msgs, cap_msgs;
	struct raft_msg *after;
	uint32_t n_after, cap_after;
	struct raft_snapshot_chunk *chunks;
	uint32_t n_chunks, cap_chunks;
	uint64_t chunk_bytes; /* staged by this update, at most one window */
	struct raft_read_state *reads;
	uint32_t n_reads, cap_reads;
	bool has_snapshot;
	struct raft_snapshot_meta snapshot;
	/* conf-change entries among the committed ones handed out */
	struct raft_conf_change *ccs;
	uint64_t *cc_index;
	uint32_t n_ccs, cap_ccs;
	/* the last entry handed out for persistence */
	uint64_t persist_index;
	uint64_t persist_term;
	uint64_t apply_to;
	uint64_t snapshot_handed; /* index of the snapshot handed out, 0 none */
};

struct raft {
	struct raft_config cfg;
	struct raft_heap heap_store;
	const struct raft_heap *heap;
	uint64_t id;
	uint32_t state;
	uint64_t term;
	uint64_t vote;
	uint64_t leader;
	struct raft__log log;
	struct raft_conf conf;
	struct raft__progress prs[RAFT_MAX_MEMBERS];
	uint32_t n_prs;

	uint32_t election_elapsed;
	uint32_t heartbeat_elapsed;
	uint32_t randomized_timeout;
	uint32_t transfer_elapsed;
	uint64_t transferee;
	uint64_t pending_conf_index;
	uint64_t uncommitted_bytes;
	bool bcast_pending;   /* leader: new entries to send at the next update */
	bool read_hb_pending; /* leader: a heartbeat round to confirm reads */

	/* ReadIndex (§6.4) */
	uint64_t hb_seq;
	struct raft__read *reads; /* leader: awaiting confirmation, in seq order */
	uint32_t n_reads, cap_reads;
	struct raft_read_state *waiting; /* confirmed, awaiting apply */
	uint32_t n_waiting, cap_waiting;

	/* InstallSnapshot being received */
	bool recv_active;
	uint64_t recv_index;
	uint64_t recv_term;
	uint64_t recv_offset;

	/* output: one outbox being filled, one handed out (double buffer) */
	struct raft__outbox box[2];
	uint32_t cur;
	bool handed_out;
	struct raft_hard_state prev_hs;

	struct raft_stats stats;
};

enum raft__campaign_kind { CAMPAIGN_PREVOTE, CAMPAIGN_ELECTION, CAMPAIGN_TRANSFER };

/* progress.c */
struct raft__progress *raft__progress_get(struct raft *r, uint64_t id);
uint32_t raft__quorum(const struct raft *r);
bool raft__promotable(const struct raft *r);
void raft__infl_reset(struct raft__progress *pr);
bool raft__infl_full(const struct raft *r, const struct raft__progress *pr);
void raft__infl_add(const struct raft *r, struct raft__progress *pr, uint64_t last);
void raft__infl_free_le(const struct raft *r, struct raft__progress *pr, uint64_t index);
void raft__progress_init(struct raft *r, struct raft__progress *pr, uint64_t id, uint32_t role);
void raft__become_probe(struct raft__progress *pr);
void raft__become_replicate(struct raft__progress *pr);
bool raft__paused(const struct raft *r, const struct raft__progress *pr);
bool raft__progress_update(struct raft__progress *pr, uint64_t n);
bool raft__progress_decr_to(struct raft__progress *pr, uint64_t rejected, uint64_t match_hint);
void raft__progress_sync(struct raft *r);

/* raft.c */
void raft__become_follower(struct raft *r, uint64_t term, uint64_t leader);
void raft__become_pre_candidate(struct raft *r);
void raft__become_candidate(struct raft *r);
void raft__become_leader(struct raft *r);
bool raft__from_leader(uint32_t type);

/* election.c */
void raft__campaign(struct raft *r, enum raft__campaign_kind kind);
void raft__handle_vote_request(struct raft *r, const struct raft_msg *m);
void raft__handle_vote_response(struct raft *r, const struct raft_msg *m);

/* replication.c */
bool raft__append_well_formed(const struct raft_msg *m);
void raft__start_snapshot(struct raft *r, struct raft__progress *pr);
bool raft__send_append(struct raft *r, struct raft__progress *pr, bool send_if_empty);
void raft__send_append_all(struct raft *r);
void raft__send_heartbeat_all(struct raft *r);
bool raft__maybe_commit(struct raft *r);
void raft__send_timeout_now(struct raft *r, uint64_t to);
void raft__handle_append_response(struct raft *r, struct raft__progress *pr,
				  const struct raft_msg *m);
void raft__handle_heartbeat_response(struct raft *r, struct raft__progress *pr,
				     const struct raft_msg *m);
void raft__handle_snapshot_response(struct raft *r, struct raft__progress *pr,
				    const struct raft_msg *m);
void raft__check_snapshot_stall(struct raft *r, struct raft__progress *pr);
int raft__handle_append(struct raft *r, const struct raft_msg *m);
void raft__handle_heartbeat(struct raft *r, const struct raft_msg *m);
bool raft__conf_well_formed(const struct raft_conf *c);
int raft__handle_snapshot(struct raft *r, const struct raft_msg *m);

/* read_index.c */
int raft__push_waiting(struct raft *r, uint64_t id, uint64_t index);
void raft__answer_read(struct raft *r, const struct raft__read *rd, int status);
void raft__release_reads(struct raft *r);
void raft__on_commit_in_term(struct raft *r);
void raft__fail_pending_reads(struct raft *r);
int raft__leader_read(struct raft *r, uint64_t id, uint64_t from);

/* outbox.c */
void raft__outbox_init(struct raft__outbox *o, const struct raft_heap *h);
void raft__outbox_close(struct raft__outbox *o, const struct raft_heap *h);
void raft__outbox_reset(struct raft__outbox *o);
bool raft__outbox_empty(const struct raft__outbox *o);
/* Queue a message to send. With copy, entries and data are deep-copied into
 * the outbox arena; without, they already live there. A message that cannot
 * be queued for lack of memory is dropped, which Raft tolerates as loss. */
void raft__send(struct raft *r, const struct raft_msg *m, bool copy);
/* Queue a read state for the next update. */
int raft__read_out(struct raft *r, uint64_t id, uint64_t index, int status);
/* Whether a message of this type may only leave after the update's
 * persistence (§3.8). */
bool raft__after_persist(uint32_t type);

#endif /* CAIRN_RAFT_INT_H */
