/* kv_mvcc.h: the state machine, etcd's multi-version key-value model in LMDB.
 *
 * Model (etcd mvcc): the store has a current revision, 1 when empty. Every
 * request applied through a write transaction (Put, DeleteRange, Txn) that
 * changes something takes the next main revision; its changes are numbered
 * by sub revision 0, 1, ... A request that changes nothing takes none. Each
 * key has a create_revision, a mod_revision and a version (1 at creation,
 * +1 per Put); a delete writes a tombstone and ends the key's generation.
 * Reads see the store as of any revision from the compacted revision up to
 * the current one.
 *
 * On disk: one LMDB environment in a directory (data.mdb, lock.mdb), map size
 * = the quota (default 2 GiB, etcd's --quota-backend-bytes) plus headroom
 * (see kv_options), sub-databases:
 *   "rev"   BE64(main) BE64(sub) -> record: u8 flags (bit 0 tombstone),
 *           BE64 create_revision, BE64 version, BE64 lease, BE32 key length,
 *           key, value. mod_revision is the main revision of the LMDB key.
 *           The record always holds the whole key, however long.
 *   "key"   ikey BE64(main) BE64(sub) -> u8 flags, where ikey, the key's
 *           index form, is the key itself when it has at most 447 bytes
 *           (P), else its first P bytes and the SHA-256 of the whole key
 *           (P + 32 = 479 bytes: the lengths tell the forms apart; LMDB
 *           keys are at most 511 bytes). Sorted by a comparator that
 *           orders by ikey bytes first, then revision, so a cursor seek to
 *           (ikey(K), R+1, 0) and one step back finds K's latest revision
 *           <= R. ikey order is key order except among long keys sharing
 *           their first P bytes (a "group", ordered by hash): a Range
 *           reads such a group whole and sorts it by key; a lookup of a
 *           long key checks the full key in the record found (another key
 *           there, a SHA-256 collision, is KV_ECORRUPT, never its answer).
 *   "meta"  "rev", "compacted", "applied", "compact_target", "compact_next",
 *           "cluster_id", "member_id", "key_layout" -> BE64 (compact_next:
 *           an ikey; key_layout: 1, this layout).
 *   "lease"     BE64(id) -> BE64 granted TTL, BE64 remaining TTL checkpoint.
 *   "lease_key" BE64(id) ikey -> empty for a key of at most P bytes, the
 *           whole key for a longer one: the keys attached to a lease.
 * Keys of at most P bytes are stored exactly as before long keys existed.
 * A store written then (no key_layout) gets key_layout at kv_open, unless
 * it holds a key of 448..495 bytes (the old limit), stored whole then and
 * unreadable in this layout: kv_open refuses it with KV_EINVAL.
 *
 * Threads: the store is driven by one thread (the storage thread); read
 * functions open their own LMDB read transaction (MDB_NOTLS), so they may also
 * run on other threads concurrently with one write transaction.
 *
 * Ownership: request structs and the bytes they point to belong to the caller
 * and are only read during the call. Response structs are filled by the call;
 * what they point to is allocated by the store (kv_heap.h) and freed by the
 * matching kv_*_resp_free() (which also zeroes the struct, and accepts a
 * zeroed struct). On error a response holds nothing to free (it is zeroed).
 * Errors: 0 or a negative code from kv_err.h.
 *
 * Limits: a key is 1..KV_MAX_KEY bytes (bbolt's key limit, which etcd has;
 * KV_ETOOBIG beyond), at most KV_MAX_TXN_OPS operations per Txn level
 * (etcd's --max-txn-ops default) and KV_MAX_TXN_DEPTH nesting levels.
 * Cost of long keys: a Range (or a DeleteRange, a compare over a range)
 * that meets a group of long keys sharing their first 447 bytes reads every
 * key of the group (one seek and one record each, one small entry of memory
 * per live key) before it answers, whatever its limit. */
#ifndef CAIRN_KV_MVCC_H
#define CAIRN_KV_MVCC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

#define KV_MAX_KEY 32768
#define KV_MAX_TXN_OPS 128
#define KV_MAX_TXN_DEPTH 8
#define KV_DEFAULT_QUOTA ((uint64_t)2 << 30)

struct kv_store;
struct kv_wtx;

/* Quota (etcd --quota-backend-bytes): once the pages in use pass it, Put,
 * a Txn with a Put on any path, and lease grants fail with KV_ENOSPACE,
 * while Range, DeleteRange, lease revocation and compaction go on (etcd's
 * capped applier). The LMDB map is the quota plus max(quota, 4 MiB) of
 * headroom for those; should a batch still fill the map, the request that
 * hit MDB_MAP_FULL fails with KV_ENOSPACE and changes nothing, the rest of
 * the batch stays and commits. */
struct kv_options {
	uint64_t quota_bytes; /* 0: KV_DEFAULT_QUOTA */
	bool no_sync;         /* tests and benchmarks only: commits are not
			       * synced (MDB_NOSYNC); a crash may lose them */
};

/* Opens (creating if needed) the store in directory `dir`. `opts` may be NULL.
 * A compaction left unfinished by a crash resumes with kv_compact_step().
 * KV_EINVAL: a store in an index layout this version cannot read (above). */
KV_API int kv_open(const char *dir, const struct kv_options *opts, struct kv_store **out);
/* Closes the store, aborting an open write transaction. NULL is a no-op. */
KV_API void kv_close(struct kv_store *s);

/* A key-value as of some revision. In a response, key and value point into
 * memory owned by that response. */
struct kv_kv {
	uint8_t *key;
	size_t key_len;
	uint8_t *value;
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

/* Committed state: current and compacted revision, Raft applied index. */
struct kv_status {
	int64_t revision;
	int64_t compacted;
	uint64_t applied_index;
	int64_t compact_target; /* > 0 while physical compaction is pending */
	uint64_t cluster_id;    /* 0 until kv_set_ids */
	uint64_t member_id;
};
KV_API int kv_status(struct kv_store *s, struct kv_status *out);
/* Records the cluster and member ids in the batch (server/ at bootstrap). */
KV_API int kv_set_ids(struct kv_wtx *wtx, uint64_t cluster_id, uint64_t member_id);

/* ---- Range ------------------------------------------------------------ */

enum kv_sort_order { KV_SORT_NONE = 0, KV_SORT_ASCEND, KV_SORT_DESCEND };
enum kv_sort_target {
	KV_SORT_KEY = 0,
	KV_SORT_VERSION,
	KV_SORT_CREATE,
	KV_SORT_MOD,
	KV_SORT_VALUE
};

/* etcd RangeRequest. range_end_len 0: the single key; range_end "\0" (one
 * zero byte): every key >= key; otherwise [key, range_end). revision 0: the
 * current one; below the compacted revision KV_ECOMPACTED, above the current
 * KV_EFUTUREREV. limit 0: none. The min/max filters (0: off) apply after
 * the count, as in etcd; sorting by a target other than KEY with order NONE
 * sorts ascending (etcd); ties keep key order. */
struct kv_range_req {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end;
	size_t range_end_len;
	int64_t revision;
	int64_t limit;
	bool count_only;
	bool keys_only;
	enum kv_sort_order sort_order;
	enum kv_sort_target sort_target;
	int64_t min_mod_revision;
	int64_t max_mod_revision;
	int64_t min_create_revision;
	int64_t max_create_revision;
};

struct kv_range_resp {
	struct kv_kv *kvs; /* n_kvs entries, owned */
	size_t n_kvs;
	bool more;        /* limit cut the result */
	int64_t count;    /* keys in the range at the revision, before limit */
	int64_t revision; /* header revision: the store's current revision */
};

/* Range over the committed state. Frees nothing of the request. */
KV_API int kv_range(struct kv_store *s, const struct kv_range_req *req, struct kv_range_resp *resp);
KV_API void kv_range_resp_free(struct kv_range_resp *resp);

/* ---- Write transactions --------------------------------------------------
 * One per applied batch of Raft entries: begin, any number of requests
 * (each its own revision), commit with the last applied index (stored in the
 * same LMDB transaction), or abort.
 * A request refused by etcd's rules (a bad key or option, a missing lease or
 * key, a compare's range, a compacted or future revision, the quota, ...)
 * is refused before it writes anything: it leaves no change and the batch
 * goes on, exactly as on every other member. An error that comes from this
 * member rather than from the request (KV_ENOMEM, KV_EIO, KV_ECORRUPT,
 * KV_EDISKFULL, or LMDB's map filling up: KV_ENOSPACE from a write already
 * under way) fails the batch: every later call on the transaction returns
 * the same error and kv_txn_commit aborts it and returns it. The caller then
 * applies the same batch again once the cause is gone (the log and the
 * applied index make that safe); it must not skip it.
 * Durability: a commit syncs the data pages it wrote (one fdatasync) and
 * leaves its meta page to the next commit's sync (MDB_NOMETASYNC): after a
 * power loss the store is consistent and at most its last commit is undone,
 * which replaying the log from the applied index restores. */

KV_API int kv_txn_begin_write(struct kv_store *s, struct kv_wtx **out);
/* 0, or the error that failed the batch (see above): the batch can only be
 * aborted, or committed to get that error back, and applied again later. */
KV_API int kv_txn_failed(const struct kv_wtx *wtx);
/* Commits and frees wtx (also on failure: a failed batch is aborted). */
KV_API int kv_txn_commit(struct kv_wtx *wtx, uint64_t applied_index);

/* ---- Events ----------------------------------------------------------------
 * A change as etcd's mvccpb.Event: PUT with the new kv, or DELETE with a kv
 * holding the key and mod_revision only; prev_kv is the key's live kv before
 * the change (has_prev_kv false when there was none). */
enum kv_event_type { KV_EVENT_PUT = 0, KV_EVENT_DELETE = 1 };
struct kv_event {
	enum kv_event_type type;
	struct kv_kv kv;
	bool has_prev_kv;
	struct kv_kv prev_kv;
};
struct kv_events {
	struct kv_event *events; /* owned, in revision order */
	size_t n;
};
KV_API void kv_events_free(struct kv_events *ev);

/* kv_txn_commit that also hands over the batch's events (of the requests
 * that succeeded), in revision order; *out is set only on success and is
 * then the caller's to free with kv_events_free. */
KV_API int kv_txn_commit_events(struct kv_wtx *wtx, uint64_t applied_index, struct kv_events *out);

/* History for watchers catching up: the events of revisions [from, ...)
 * committed so far, whole revisions only, stopping once at least
 * max_events are read (0: no bound). *next is the revision to read from
 * next time (current + 1 when all was read). with_prev fills prev_kv.
 * from <= the compacted revision: KV_ECOMPACTED (stricter than etcd by one
 * revision: physical compaction drops tombstones at the compacted revision,
 * so its events cannot be given whole; the watcher is cancelled with
 * compact_revision and re-lists). from < 1: KV_EINVAL. */
KV_API int kv_events_read(struct kv_store *s, int64_t from, size_t max_events, bool with_prev,
			  struct kv_events *out, int64_t *next);
/* Discards every change of the batch and frees wtx. NULL is a no-op. */
KV_API void kv_txn_abort(struct kv_wtx *wtx);

/* etcd PutRequest. ignore_value: keep the current value (value must be
 * empty, else KV_EVALUEPROVIDED; the key must exist, else KV_EKEYNOTFOUND);
 * ignore_lease likewise with lease. A nonzero lease must have been granted
 * (KV_ELEASENOTFOUND). */
struct kv_put_req {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value;
	size_t value_len;
	int64_t lease;
	bool prev_kv;
	bool ignore_value;
	bool ignore_lease;
};
struct kv_put_resp {
	int64_t revision;
	bool has_prev_kv;
	struct kv_kv prev_kv; /* owned; set when prev_kv was asked and existed */
};
KV_API int kv_put(struct kv_wtx *wtx, const struct kv_put_req *req, struct kv_put_resp *resp);
KV_API void kv_put_resp_free(struct kv_put_resp *resp);

/* etcd DeleteRangeRequest; key/range_end as in kv_range_req. */
struct kv_delete_req {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end;
	size_t range_end_len;
	bool prev_kv;
};
struct kv_delete_resp {
	int64_t revision;
	int64_t deleted;
	struct kv_kv *prev_kvs; /* owned; n_prev_kvs (= deleted when asked) */
	size_t n_prev_kvs;
};
KV_API int kv_delete_range(struct kv_wtx *wtx, const struct kv_delete_req *req,
			   struct kv_delete_resp *resp);
KV_API void kv_delete_resp_free(struct kv_delete_resp *resp);

/* ---- Txn ----------------------------------------------------------------
 * etcd TxnRequest. Every compare (nested ones too) is evaluated against the
 * state before the Txn; a compare over a range holds when it holds for every
 * key in it; on no key, a VALUE compare fails and the others compare with
 * a zero key-value (version, create, mod and lease 0). Ops run in order and
 * see the Txn's earlier writes; all writes share one main revision. A key Put
 * twice, or Put and deleted, on one path is KV_EDUPLICATEKEY (etcd's
 * checkIntervals); a Range in a Txn is checked against the revision before
 * the Txn (KV_EFUTUREREV/KV_ECOMPACTED). */

enum kv_compare_result { KV_CMP_EQUAL = 0, KV_CMP_GREATER, KV_CMP_LESS, KV_CMP_NOT_EQUAL };
enum kv_compare_target {
	KV_CMP_VERSION = 0,
	KV_CMP_CREATE,
	KV_CMP_MOD,
	KV_CMP_VALUE,
	KV_CMP_LEASE
};

struct kv_compare {
	enum kv_compare_result result;
	enum kv_compare_target target;
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end;
	size_t range_end_len;
	int64_t number;       /* VERSION, CREATE, MOD, LEASE */
	const uint8_t *value; /* VALUE */
	size_t value_len;
};

enum kv_op_type { KV_OP_RANGE = 0, KV_OP_PUT, KV_OP_DELETE, KV_OP_TXN };

struct kv_txn_req;
struct kv_op {
	enum kv_op_type type;
	union {
		struct kv_range_req range;
		struct kv_put_req put;
		struct kv_delete_req del;
		const struct kv_txn_req *txn;
	} u;
};

struct kv_txn_req {
	const struct kv_compare *compares;
	size_t n_compares;
	const struct kv_op *success;
	size_t n_success;
	const struct kv_op *failure;
	size_t n_failure;
};

struct kv_txn_resp;
struct kv_op_resp {
	enum kv_op_type type;
	union {
		struct kv_range_resp range;
		struct kv_put_resp put;
		struct kv_delete_resp del;
		struct kv_txn_resp *txn; /* owned */
	} u;
};

struct kv_txn_resp {
	int64_t revision;
	bool succeeded;
	struct kv_op_resp *responses; /* owned, one per op of the branch taken */
	size_t n_responses;
};

KV_API int kv_txn(struct kv_wtx *wtx, const struct kv_txn_req *req, struct kv_txn_resp *resp);
KV_API void kv_txn_resp_free(struct kv_txn_resp *resp);

/* ---- Leases ---------------------------------------------------------------
 * The lease table of etcd's lessor, applied through Raft: grant, revoke
 * (deleting every attached key in one revision, none if no key), and
 * checkpoints of the remaining TTL so that a new leader neither extends nor
 * cuts a lease (etcd's LeaseCheckpoint). Expiry is the server's: its leader
 * proposes the revocation. A Put with a lease attaches the key (the lease
 * must exist: KV_ELEASENOTFOUND), a Put with another lease or none, or a
 * delete, detaches it. Ids are nonzero (0 is "no lease"). Grant and
 * checkpoint take no revision. */
KV_API int kv_lease_grant(struct kv_wtx *wtx, int64_t id, int64_t ttl);
/* *revision: the revision of the deletes, or the current one if none. */
KV_API int kv_lease_revoke(struct kv_wtx *wtx, int64_t id, int64_t *revision);
KV_API int kv_lease_checkpoint(struct kv_wtx *wtx, int64_t id, int64_t remaining_ttl);

struct kv_lease {
	int64_t id;
	int64_t ttl;       /* granted */
	int64_t remaining; /* last checkpoint; 0: never checkpointed */
};
struct kv_lease_list {
	struct kv_lease *leases; /* owned, by id (as unsigned BE64) */
	size_t n;
};
KV_API int kv_lease_list(struct kv_store *s, struct kv_lease_list *out);
KV_API void kv_lease_list_free(struct kv_lease_list *l);

/* etcd LeaseTimeToLive: the lease, and its keys (sorted) when with_keys. */
struct kv_lease_info {
	struct kv_lease lease;
	uint8_t **keys; /* owned: n_keys keys, each its own allocation */
	size_t *key_lens;
	size_t n_keys;
};
KV_API int kv_lease_time_to_live(struct kv_store *s, int64_t id, bool with_keys,
				 struct kv_lease_info *out);
KV_API void kv_lease_info_free(struct kv_lease_info *info);

/* ---- Snapshots ------------------------------------------------------------
 * kv_snapshot_copy_fd writes a consistent, compacted copy of the whole
 * environment (mdb_env_copyfd2 with MDB_CP_COMPACT: free pages dropped) to
 * fd, from one read transaction: it may run beside a write transaction. The
 * caller owns fd (and syncs it if it keeps the file).
 * kv_snapshot_install replaces the store's data with the copy in `file`
 * (on the same file system as the store's directory): checks that file is
 * such a copy (KV_ECORRUPT if not), closes the environment, renames file
 * over data.mdb and reopens. No write transaction may be open, nor any read
 * running on another thread, except kv_snapshot_copy_fd and reads held
 * with kv_reader_hold: an install waits for the copies and held reads that
 * run, and one started meanwhile waits for the new environment. On failure
 * after the close the store may be unusable (every call then fails);
 * kv_close still frees it.
 * kv_reader_hold / kv_reader_release bracket reads made on a thread other
 * than the installing one (a hash of the whole history on the snapshot
 * thread); kv_snapshot_copy_fd holds it itself and must not be called
 * inside. kv_reader_hold gives 0 or KV_EIO. */
KV_API int kv_snapshot_copy_fd(struct kv_store *s, int fd);
KV_API int kv_reader_hold(struct kv_store *s);
KV_API void kv_reader_release(struct kv_store *s);
KV_API int kv_snapshot_install(struct kv_store *s, const char *file);
/* Checks that `file` is such a copy (KV_ECORRUPT, KV_ENOTFOUND if not) and
 * gives the Raft index it records as applied: the index a copy taken beside
 * a writer stands for. */
KV_API int kv_snapshot_file_applied(const char *file, uint64_t *applied);

/* ---- Compaction ------------------------------------------------------
 * kv_compact (a request in a batch, like etcd's Compact through Raft):
 * rev <= compacted: KV_ECOMPACTED; rev > current: KV_EFUTUREREV. Records
 * the compacted revision at once (reads below it fail from this commit on)
 * and schedules the physical removal: every revision below rev except each
 * key's latest one at or below rev, unless that one is a tombstone.
 * kv_compact_step removes up to max_keys keys' history in its own write
 * transaction (no revision, no applied index), and sets *done when nothing
 * is left; the storage thread calls it between batches. Reads at revisions
 * >= compacted give the same answers whatever the progress. */
KV_API int kv_compact(struct kv_wtx *wtx, int64_t rev);
KV_API int kv_compact_step(struct kv_store *s, size_t max_keys, bool *done);

/* ---- HashKV ----------------------------------------------------------
 * FNV-1a 64 over the logical history up to rev (0: current): the kept
 * state at the compacted revision (each key's latest live revision <= it)
 * and every revision in (compacted, rev], in revision order, each as its
 * revision and record bytes. Identical on every member that applied the same
 * log, whatever the progress of physical compaction. etcd's hash is 32 bits:
 * the server sends the low 32 bits. */
struct kv_hash {
	uint64_t hash;
	int64_t revision;  /* the revision hashed */
	int64_t compacted; /* compacted revision at the time */
};
KV_API int kv_hash_kv(struct kv_store *s, int64_t rev, struct kv_hash *out);

/* ---- Members -------------------------------------------------------------
 * The cluster's member table, kept beside the keys so that a snapshot (a
 * copy of the store) carries it: one record per member id, opaque bytes to
 * the store (the server packs an etcdserverpb.Member), and the set of ids
 * removed from the cluster, which are never admitted again. Neither has a
 * revision nor an event: they are not keys. Writes go in a batch's write
 * transaction, so they commit with the applied index of the entry that made
 * them; any id is accepted, 0 included (the server keeps a record of its
 * own there). A store made before this section opens with both empty. */

#define KV_MAX_MEMBER_RECORD 16384

/* A record: id and its bytes (owned by the list that holds it). */
struct kv_member {
	uint64_t id;
	uint8_t *data;
	size_t len;
};

/* Records in increasing id order; n may be 0 (v then NULL). */
struct kv_members {
	struct kv_member *v;
	size_t n;
};

/* Sets the record of id to data[0..len) (copied), replacing any. len 0 to
 * KV_MAX_MEMBER_RECORD, else KV_ETOOBIG (the batch goes on). */
KV_API int kv_member_put(struct kv_wtx *wtx, uint64_t id, const void *data, size_t len);
/* Deletes the record of id: 0, or KV_ENOTFOUND when there is none (the
 * batch goes on). */
KV_API int kv_member_delete(struct kv_wtx *wtx, uint64_t id);
/* Records id as removed (idempotent). */
KV_API int kv_member_set_removed(struct kv_wtx *wtx, uint64_t id);
/* Forgets every removed id (`cairn snapshot restore`: a new cluster). */
KV_API int kv_member_clear_removed(struct kv_wtx *wtx);

/* Every record as the batch sees it (its own writes included), or as
 * committed (kv_members_list, its own read transaction, any thread). *out
 * is filled on 0 and freed with kv_members_free. */
KV_API int kv_members_list_w(struct kv_wtx *wtx, struct kv_members *out);
KV_API int kv_members_list(struct kv_store *s, struct kv_members *out);
KV_API void kv_members_free(struct kv_members *m);
/* Whether id was removed: *removed set on 0. */
KV_API int kv_member_removed_w(struct kv_wtx *wtx, uint64_t id, bool *removed);
KV_API int kv_member_removed(struct kv_store *s, uint64_t id, bool *removed);

/* ---- Alarms ------------------------------------------------------------
 * etcd's alarm table: (member id, alarm type) pairs, raised and cleared
 * through Raft (the server's AlarmRequest), kept beside the keys so that
 * they survive restarts and travel in snapshots. No revision, no event.
 * type is etcd's AlarmType number (1 NOSPACE, 2 CORRUPT; 0 is refused with
 * KV_EINVAL). At most KV_MAX_ALARMS pairs (KV_ETOOBIG beyond, the batch
 * goes on). */
#define KV_MAX_ALARMS 1024

struct kv_alarm {
	uint64_t member_id;
	uint32_t type;
};
/* By member id, then type; n may be 0 (v then NULL). */
struct kv_alarms {
	struct kv_alarm *v;
	size_t n;
};

/* Raises (active) or clears the pair; *changed (may be NULL) tells whether
 * the table changed. */
KV_API int kv_alarm_set(struct kv_wtx *wtx, uint64_t member_id, uint32_t type, bool active,
			bool *changed);
/* Every pair as the batch sees it, or as committed (own read transaction,
 * any thread); freed with kv_alarms_free. */
KV_API int kv_alarms_list_w(struct kv_wtx *wtx, struct kv_alarms *out);
KV_API int kv_alarms_list(struct kv_store *s, struct kv_alarms *out);
KV_API void kv_alarms_free(struct kv_alarms *a);
/* Whether any member has an alarm of `type` raised, as the batch sees it. */
KV_API int kv_alarm_active_w(struct kv_wtx *wtx, uint32_t type, bool *active);

/* ---- Space -----------------------------------------------------------------
 * The file's size (its high-water mark of pages), the pages in use in it
 * (the size less LMDB's free pages, which later writes reuse), and the
 * quota; for etcd's Status dbSize and dbSizeInUse (exact) and for the
 * server's quota check before it proposes a write (not exact: while the file
 * is within the quota, used_bytes is the file's size, an upper bound, and
 * the free list is not read). Cost: a walk of LMDB's free list when exact
 * or past the quota. */
struct kv_space {
	uint64_t file_bytes;
	uint64_t used_bytes;
	uint64_t quota_bytes;
};
KV_API int kv_space(struct kv_store *s, bool exact, struct kv_space *out);

#endif /* CAIRN_KV_MVCC_H */
