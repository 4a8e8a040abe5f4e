/* raft.h: Cairn's Raft consensus core, a state machine without I/O.
 *
 * The core owns no clock, socket, file, thread or global state. The caller
 * drives it with events and takes back updates:
 *
 *   events in   raft_tick()                 one logical clock tick
 *               raft_step()                 a message received from a peer
 *               raft_propose()              a new entry (on any member)
 *               raft_propose_conf_change()  add a learner/voter, remove a member
 *               raft_read_index()           a linearizable read (thesis §6.4)
 *               raft_transfer_leadership()  hand leadership to a peer (§3.10)
 *               raft_advance()              "the last update is persisted,
 *                                           sent and applied"
 *   update out  raft_ready() fills a struct raft_update.
 *
 * THE LOOP CONTRACT. For each update taken with raft_ready(), in this order:
 *   1. send u.msgs at once: they never depend on this update's persistence
 *      (the leader replicates while its own write is in flight, §10.2.1);
 *   2. persist, durably (fsync) and in this order: u.snapshot_chunks (staged
 *      beside the log), then if u.snapshot is set install it (the staged data
 *      becomes the state machine, log entries up to its index are dropped),
 *      then u.entries (first truncating any stored entry with index >=
 *      u.entries[0].index), then u.hard_state if u.has_hard_state;
 *   3. only then send u.msgs_after_persist (votes, acknowledgements: §3.8
 *      "respond to RPCs only after updating stable storage");
 *   4. apply u.committed in order (conf-change entries included; the core
 *      applies their effect on membership itself at raft_advance());
 *   5. serve u.reads: each read may be served once the entries of step 4
 *      are applied (the core only releases reads whose index is covered);
 *   6. call raft_advance().
 * Events (tick, step, propose ...) may be fed between raft_ready() and
 * raft_advance(); their effects appear in the next update. raft_ready() must
 * not be called again before raft_advance().
 *
 * OWNERSHIP. Everything a struct raft_update points to is owned by the core
 * and stays valid until raft_advance(); the caller copies what it keeps.
 * Messages and data passed in (raft_step, raft_propose ...) are owned by the
 * caller and copied by the core before the call returns.
 *
 * Errors are negative codes from RAFT_ERRNO_MAP, 0 is success.
 */
#ifndef CAIRN_RAFT_H
#define CAIRN_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RAFT_API __attribute__((visibility("default")))

/* Error codes: name, number, message. Numbers are stable. */
#define RAFT_ERRNO_MAP(X)                                                  \
	X(NOMEM, 1, "out of memory")                                       \
	X(INVAL, 2, "invalid argument")                                    \
	X(NOLEADER, 3, "no leader is known")                               \
	X(NOTLEADER, 4, "this member is not the leader")                   \
	X(BUSY, 5, "too many requests")                                    \
	X(TOOBIG, 6, "entry too large")                                    \
	X(DROPPED, 7, "proposal dropped")                                  \
	X(TRANSFERRING, 8, "leadership transfer in progress")              \
	X(CONFPENDING, 9, "a configuration change is already in progress") \
	X(UNKNOWNMEMBER, 10, "unknown member")                             \
	X(COMPACTED, 11, "requested index is compacted")                   \
	X(UNAVAILABLE, 12, "requested entry is unavailable")               \
	X(SNAPOUTOFDATE, 13, "snapshot is out of date")                    \
	X(IO, 14, "storage error")                                         \
	X(LEADERLOST, 15, "leadership lost before the read was confirmed") \
	X(NOTVOTER, 16, "this member is not a voter")                      \
	X(TOOMANYMEMBERS, 17, "too many members")                          \
	X(CORRUPT, 18, "malformed data")

enum raft_errno {
#define RAFT__ERRNO_ENUM(name, num, msg) RAFT_E##name = -(num),
	RAFT_ERRNO_MAP(RAFT__ERRNO_ENUM)
#undef RAFT__ERRNO_ENUM
};

/* Message for an error code; never NULL. */
RAFT_API const char *raft_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Allocation: one replaceable allocator per node (NULL fields: libc).     */

struct raft_heap {
	void *ctx;
	void *(*malloc)(void *ctx, size_t size);
	void *(*realloc)(void *ctx, void *ptr, size_t size);
	void (*free)(void *ctx, void *ptr);
};

/* ------------------------------------------------------------------------ */
/* Log entries, hard state, membership.                                    */

enum raft_entry_type {
	RAFT_ENTRY_NORMAL = 0,
	RAFT_ENTRY_CONF_CHANGE = 1, /* data: raft_conf_change_encode() */
	RAFT_ENTRY_NOOP = 2,        /* appended by a new leader (§6.4, §4.1 fix) */
};

/* A log entry. `data` is borrowed: see OWNERSHIP above. */
struct raft_entry {
	uint64_t term;
	uint64_t index;
	uint32_t type; /* enum raft_entry_type */
	uint32_t len;
	const uint8_t *data;
};

/* What must survive a crash beside the log (Figure 3.1 "persistent state"). */
struct raft_hard_state {
	uint64_t term;
	uint64_t vote;   /* 0: none */
	uint64_t commit; /* not required for safety; saves re-deriving it */
};

#define RAFT_MAX_MEMBERS 16

enum raft_role {
	RAFT_VOTER = 1,
	RAFT_LEARNER = 2, /* receives the log; never campaigns, is never asked
			   * for a vote nor counted in a quorum (§4.2.1) */
};

struct raft_member {
	uint64_t id;   /* never 0 */
	uint32_t role; /* enum raft_role */
};

/* A configuration: the set of members with their roles. */
struct raft_conf {
	uint32_t n;
	struct raft_member members[RAFT_MAX_MEMBERS];
};

enum raft_conf_change_type {
	RAFT_CC_ADD_VOTER = 1,   /* new voter, or promote a learner */
	RAFT_CC_ADD_LEARNER = 2, /* new learner, or demote a voter */
	RAFT_CC_REMOVE = 3,
};

/* One-server-at-a-time change (thesis §4.1). */
struct raft_conf_change {
	uint32_t type; /* enum raft_conf_change_type */
	uint64_t id;
	uint32_t context_len;   /* opaque bytes, e.g. the member's peer URLs */
	const uint8_t *context; /* borrowed */
};

#define RAFT_CONF_CHANGE_HEADER 16
#define RAFT_MAX_CONF_CONTEXT 4096

/* Encode `cc` into buf (RAFT_CONF_CHANGE_HEADER + context_len bytes).
 * Returns the encoded size, or RAFT_EINVAL if cap is too small. */
RAFT_API int raft_conf_change_encode(const struct raft_conf_change *cc, uint8_t *buf, size_t cap);
/* Decode entry data; cc->context points into `data`. */
RAFT_API int raft_conf_change_decode(const uint8_t *data, size_t len, struct raft_conf_change *cc);

/* Return the member's role in conf, or 0 if absent. */
RAFT_API uint32_t raft_conf_role(const struct raft_conf *conf, uint64_t id);
/* Number of voters. */
RAFT_API uint32_t raft_conf_voters(const struct raft_conf *conf);
/* Apply a change to conf (used by the core, and by storage/snapshot code). */
RAFT_API int raft_conf_apply(struct raft_conf *conf, const struct raft_conf_change *cc);

/* Snapshot metadata: the last entry it covers and the configuration then. */
struct raft_snapshot_meta {
	uint64_t index;
	uint64_t term;
	uint64_t size; /* bytes of data */
	struct raft_conf conf;
};

/* A piece of an incoming snapshot, to be staged by the caller (step 2). */
struct raft_snapshot_chunk {
	uint64_t index; /* snapshot identity: its last index and term */
	uint64_t term;
	uint64_t offset;
	uint32_t len;
	const uint8_t *data;
};

/* ------------------------------------------------------------------------ */
/* Messages. Plain values; proto/raft.proto is their wire schema.          */

enum raft_msg_type {
	RAFT_MSG_APPEND = 1, /* AppendEntries (§3.5) */
	RAFT_MSG_APPEND_RESP = 2,
	RAFT_MSG_VOTE = 3, /* RequestVote (§3.4) */
	RAFT_MSG_VOTE_RESP = 4,
	RAFT_MSG_PREVOTE = 5, /* pre-vote (§9.6) */
	RAFT_MSG_PREVOTE_RESP = 6,
	RAFT_MSG_HEARTBEAT = 7, /* empty AppendEntries (§3.5), carries commit */
	RAFT_MSG_HEARTBEAT_RESP = 8,
	RAFT_MSG_SNAPSHOT = 9, /* InstallSnapshot chunk (§5.1, Figure 5.3) */
	RAFT_MSG_SNAPSHOT_RESP = 10,
	RAFT_MSG_PROPOSE = 11,    /* a proposal forwarded to the leader */
	RAFT_MSG_READ_INDEX = 12, /* a read forwarded to the leader (§6.4) */
	RAFT_MSG_READ_INDEX_RESP = 13,
	RAFT_MSG_TIMEOUT_NOW = 14, /* leadership transfer (§3.10) */
	RAFT_MSG_TRANSFER = 15,    /* a transfer request forwarded to the leader */
};
#define RAFT_MSG_TYPE_MAX 15

/* Field use by type:
 *   APPEND          index/log_term: previous entry; entries; commit
 *   APPEND_RESP     index: last index matched (accept) or the rejected
 *                   prev index (reject); hint_index/hint_term: the
 *                   follower's largest index <= the prev index whose term
 *                   is <= the prev term, and that term, so the leader skips
 *                   a conflicting term in one round (§3.5 fast back-off)
 *   VOTE, PREVOTE   index/log_term: candidate's last entry; context: 1 if
 *                   the vote is a leadership transfer (ignores the lease)
 *   *_RESP          reject: vote refused
 *   HEARTBEAT       commit; context: leader's heartbeat sequence (ReadIndex)
 *   HEARTBEAT_RESP  context: the sequence acknowledged
 *   SNAPSHOT        snap: metadata; index: offset of this chunk; entries
 *                   unused; data/len: chunk bytes; last: final chunk
 *   SNAPSHOT_RESP   index: next offset wanted (reject: restart from it)
 *   PROPOSE         entries (index/term 0)
 *   READ_INDEX      context: request id
 *   READ_INDEX_RESP context: request id; index: read index; reject: failed
 */
struct raft_msg {
	uint32_t type; /* enum raft_msg_type */
	uint64_t from;
	uint64_t to;
	uint64_t term;
	uint64_t log_term;
	uint64_t index;
	uint64_t commit;
	bool reject;
	bool last;
	uint64_t hint_index;
	uint64_t hint_term;
	uint64_t context;
	uint32_t n_entries;
	const struct raft_entry *entries;
	uint32_t len;
	const uint8_t *data;
	struct raft_snapshot_meta snap;
};

/* ------------------------------------------------------------------------ */
/* Storage: what the core reads of the persisted log. The caller writes it. */

/* Callbacks return 0 or a RAFT_E* code. Entries filled by `entries` need to
 * stay valid only until the caller next changes the storage; the core copies
 * them before returning to the caller. */
struct raft_storage {
	void *ctx;
	/* Hard state, and the configuration as of config.applied. */
	int (*initial_state)(void *ctx, struct raft_hard_state *hs, struct raft_conf *conf);
	/* Entries [lo, hi) in *out (capacity hi-lo), stopping once the total
	 * length exceeds max_bytes (at least one entry is returned). Sets *n.
	 * RAFT_ECOMPACTED if lo <= snapshot index; RAFT_EUNAVAILABLE if hi-1 >
	 * last index. */
	int (*entries)(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
		       struct raft_entry *out, uint32_t *n);
	/* Term of entry i; valid for the snapshot index too. */
	int (*term)(void *ctx, uint64_t i, uint64_t *term);
	/* Index of the first entry available (snapshot index + 1). */
	uint64_t (*first_index)(void *ctx);
	/* Index of the last entry (snapshot index if the log is empty). */
	uint64_t (*last_index)(void *ctx);
	/* Metadata of the latest snapshot (index 0 if none). */
	int (*snapshot)(void *ctx, struct raft_snapshot_meta *meta);
	/* Read up to len bytes of the snapshot with this index at offset.
	 * RAFT_ESNAPOUTOFDATE if that snapshot is no longer held. */
	int (*snapshot_read)(void *ctx, uint64_t index, uint64_t offset, uint8_t *buf, uint32_t len,
			     uint32_t *n);
};

/* ------------------------------------------------------------------------ */
/* Configuration and lifecycle.                                             */

struct raft_config {
	uint64_t id; /* this member, never 0 */
	struct raft_storage storage;
	const struct raft_heap *heap; /* NULL: libc */
	uint64_t (*rand)(void *ctx);  /* caller's seeded generator */
	void *rand_ctx;
	uint32_t election_ticks;        /* default 10; randomized in [e, 2e) */
	uint32_t heartbeat_ticks;       /* default 1 */
	uint64_t applied;               /* state machine's applied index at start */
	bool pre_vote;                  /* §9.6 */
	bool check_quorum;              /* §6.2: leader steps down without a quorum */
	uint32_t max_entry_bytes;       /* default 1.5 MiB + 64 KiB */
	uint64_t max_msg_bytes;         /* entry bytes per APPEND, default 1 MiB */
	uint32_t max_inflight_msgs;     /* APPENDs in flight per follower, default 256 */
	uint64_t max_uncommitted_bytes; /* leader's uncommitted log, default 64 MiB */
	uint64_t max_committed_bytes;   /* committed bytes per update, default 64 MiB */
	uint32_t max_pending_reads;     /* default 4096 */
	uint32_t snapshot_chunk_bytes;  /* default 1 MiB */
	uint32_t max_snapshot_inflight; /* chunks in flight, default 4 */
};

/* Fill cfg with defaults (id, storage, rand still to be set). */
RAFT_API void raft_config_init(struct raft_config *cfg);

struct raft;

/* Create a node from its storage. *out is freed with raft_free(). */
RAFT_API int raft_new(const struct raft_config *cfg, struct raft **out);
RAFT_API void raft_free(struct raft *r);

/* ------------------------------------------------------------------------ */
/* Events.                                                                  */

RAFT_API void raft_tick(struct raft *r);

/* Feed a received message. Bad input is counted in raft_stats and ignored
 * (the return is 0); a negative return is a local failure (memory, storage). */
RAFT_API int raft_step(struct raft *r, const struct raft_msg *m);

/* Propose an entry. On the leader it is appended and *index (if not NULL)
 * gets its index; on a follower it is forwarded (*index 0) and its fate is
 * learnt from the applied log. RAFT_ENOLEADER when no leader is known,
 * RAFT_EBUSY over max_uncommitted_bytes, RAFT_ETOOBIG over max_entry_bytes,
 * RAFT_ETRANSFERRING during a leadership transfer. */
RAFT_API int raft_propose(struct raft *r, const void *data, size_t len, uint64_t *index);

/* Propose a membership change (leader only: RAFT_ENOTLEADER elsewhere).
 * RAFT_ECONFPENDING while an earlier change, or the leader's first entry of
 * its term, is not yet applied (§4.1 and its fix). */
RAFT_API int raft_propose_conf_change(struct raft *r, const struct raft_conf_change *cc,
				      uint64_t *index);

/* Ask for a linearizable read. The answer comes back as a read state with
 * the same id in a later update: status 0 and the read index, or an error. */
RAFT_API int raft_read_index(struct raft *r, uint64_t id);

/* Start an election now (pre-vote first if enabled). */
RAFT_API int raft_campaign(struct raft *r);

/* Transfer leadership to `to` (§3.10). On a follower it is forwarded. */
RAFT_API int raft_transfer_leadership(struct raft *r, uint64_t to);

/* Tell the leader that sending to `id` failed: its progress drops to probe. */
RAFT_API void raft_report_unreachable(struct raft *r, uint64_t id);

/* Tell a follower that its leader `id` is known to be down (its process is
 * gone: e.g. connections to it are refused). The follower forgets it, so
 * its lease (§4.2.3) ends and it grants other members' (pre-)votes at once,
 * and it campaigns within one randomized timeout (raft_campaign() starts at
 * once). A wrong report costs nothing: a live leader's next message makes
 * it the leader again, and pre-vote fails while others still hear from it.
 * No-op unless `id` is the leader this member follows. */
RAFT_API void raft_report_leader_down(struct raft *r, uint64_t id);

/* ------------------------------------------------------------------------ */
/* Updates.                                                                 */

enum raft_state {
	RAFT_FOLLOWER = 1,
	RAFT_PRE_CANDIDATE = 2,
	RAFT_CANDIDATE = 3,
	RAFT_LEADER = 4,
};

struct raft_read_state {
	uint64_t id;    /* the caller's request id */
	uint64_t index; /* serve once applied >= index */
	int status;     /* 0, or RAFT_ELEADERLOST / RAFT_ENOLEADER / RAFT_EBUSY */
};

struct raft_update {
	bool has_hard_state;
	struct raft_hard_state hard_state;
	uint32_t n_snapshot_chunks;
	const struct raft_snapshot_chunk *snapshot_chunks;
	const struct raft_snapshot_meta *snapshot; /* install; NULL if none */
	uint32_t n_entries;
	const struct raft_entry *entries;
	uint32_t n_msgs;
	const struct raft_msg *msgs;
	uint32_t n_msgs_after_persist;
	const struct raft_msg *msgs_after_persist;
	uint32_t n_committed;
	const struct raft_entry *committed;
	uint32_t n_reads;
	const struct raft_read_state *reads;
	/* Soft state, for the caller's information. */
	uint32_t state; /* enum raft_state */
	uint64_t leader;
};

RAFT_API bool raft_has_update(const struct raft *r);
/* Take the next update (see THE LOOP CONTRACT). RAFT_EINVAL if the previous
 * one was not advanced; a negative code on storage failure. */
RAFT_API int raft_ready(struct raft *r, struct raft_update *u);
RAFT_API void raft_advance(struct raft *r);

/* ------------------------------------------------------------------------ */
/* Introspection.                                                           */

struct raft_status {
	uint64_t id;
	uint32_t state; /* enum raft_state */
	uint64_t term;
	uint64_t vote;
	uint64_t leader;
	uint64_t commit;
	uint64_t applied;
	uint64_t first_index;
	uint64_t last_index;
	uint64_t transferee; /* leadership transfer target, 0 if none */
	struct raft_conf conf;
};

RAFT_API void raft_status(const struct raft *r, struct raft_status *st);

/* Per-follower replication state, on the leader. */
enum raft_progress_state {
	RAFT_PROGRESS_PROBE = 1,
	RAFT_PROGRESS_REPLICATE = 2,
	RAFT_PROGRESS_SNAPSHOT = 3,
};

struct raft_progress_info {
	uint64_t id;
	uint32_t state;
	uint64_t match;
	uint64_t next;
	uint32_t inflight;
	bool recent_active;
};

/* Fill up to cap entries; returns the count (0 on a non-leader). */
RAFT_API uint32_t raft_progress(const struct raft *r, struct raft_progress_info *out, uint32_t cap);

/* Counters of what the node refused or ignored, for metrics and tests. */
struct raft_stats {
	uint64_t msgs_received;
	uint64_t dropped_unknown_member;
	uint64_t dropped_stale_term;
	uint64_t dropped_malformed;
	uint64_t dropped_unexpected; /* right term, wrong state or kind */
	uint64_t dropped_snapshot;   /* chunk not expected */
	uint64_t proposals_dropped;
	uint64_t elections_started;
	uint64_t leader_changes;
	uint64_t snapshots_sent;
	uint64_t snapshots_installed;
};

RAFT_API const struct raft_stats *raft_stats(const struct raft *r);

/* ------------------------------------------------------------------------ */
/* An in-memory storage backend, used by tests, the simulator and bench.   */

struct raft_memstore;

RAFT_API int raft_memstore_new(const struct raft_heap *heap, struct raft_memstore **out);
RAFT_API void raft_memstore_free(struct raft_memstore *ms);
/* The storage vtable reading this memstore. */
RAFT_API struct raft_storage raft_memstore_storage(struct raft_memstore *ms);
/* Start a new cluster's log: one conf-change entry per member (voters
 * first, then learners, in conf order) at indexes 1..n, term 1, committed,
 * so the log alone rebuilds the configuration on a member that joins later.
 * Every founding member must be bootstrapped with the same conf. */
RAFT_API int raft_memstore_bootstrap(struct raft_memstore *ms, const struct raft_conf *conf);
/* Step 2 of the loop contract, whole: stage chunks, install a snapshot,
 * append entries, set the hard state. */
RAFT_API int raft_memstore_persist(struct raft_memstore *ms, const struct raft_update *u);
/* Record a snapshot of the state machine at `index` (<= last index) with its
 * configuration, then drop entries up to `index - keep` (compaction). */
RAFT_API int raft_memstore_snapshot(struct raft_memstore *ms, uint64_t index,
				    const struct raft_conf *conf, const void *data, size_t len,
				    uint64_t keep);
/* The latest snapshot's data (borrowed) and metadata. */
RAFT_API int raft_memstore_snapshot_data(const struct raft_memstore *ms,
					 struct raft_snapshot_meta *meta, const uint8_t **data);
RAFT_API void raft_memstore_hard_state(const struct raft_memstore *ms, struct raft_hard_state *hs);
/* A deep copy: the persisted state a restarted node finds. */
RAFT_API int raft_memstore_clone(const struct raft_memstore *ms, struct raft_memstore **out);

#endif /* CAIRN_RAFT_H */
