/* mvcc_internal.h: what the mvcc*.c files share; not installed, not public.
 * Encodings are described in kv_mvcc.h. */
#ifndef CAIRN_MVCC_INTERNAL_H
#define CAIRN_MVCC_INTERNAL_H

#include <assert.h>
#include <lmdb.h>
#include <pthread.h>

#include "kv_mvcc.h"

#define MVCC_REV_LEN 16
/* Index form of a user key (kv_mvcc.h): a key of up to MVCC_PREFIX bytes is
 * itself; a longer one is its first MVCC_PREFIX bytes and the SHA-256 of the
 * whole key (MVCC_UKEY_LONG bytes). The two forms differ in length. */
#define MVCC_PREFIX 447
#define MVCC_HASH_LEN 32
#define MVCC_UKEY_LONG (MVCC_PREFIX + MVCC_HASH_LEN)
#define MVCC_UKEY_MAX MVCC_UKEY_LONG
#define MVCC_IDX_MAX (MVCC_UKEY_MAX + MVCC_REV_LEN)
#define MVCC_REC_HDR 29 /* flags, create, version, lease, key length */
#define MVCC_TOMBSTONE 0x01u

struct kv_store {
	char *dir;
	uint64_t quota;
	bool no_sync;
	MDB_env *env; /* NULL only if a snapshot install failed to reopen */
	MDB_dbi rev_db;
	MDB_dbi key_db;
	MDB_dbi meta_db;
	MDB_dbi lease_db;     /* BE64(id) -> BE64 ttl, BE64 remaining (0: none) */
	MDB_dbi lease_key_db; /* BE64(id) index-form key -> empty or key */
	MDB_dbi member_db;    /* BE64(id) -> the server's member record (mvcc_members.c) */
	MDB_dbi removed_db;   /* BE64(id) -> empty: ids removed from the cluster */
	MDB_dbi alarm_db;     /* BE64(member) BE32(type) -> empty (mvcc_alarms.c) */
	struct kv_wtx *wtx;   /* the open write transaction, if any */
	/* held shared by each kv_snapshot_copy_fd, exclusive by
	 * kv_snapshot_install: a copy taken on another thread (a client's
	 * Snapshot) never runs on an environment being replaced */
	pthread_rwlock_t copy_lock;
};

struct kv_wtx {
	struct kv_store *s;
	MDB_txn *txn;
	int64_t rev; /* current revision including this batch's requests */
	int64_t compacted;
	struct kv_events ev; /* the batch's events so far */
	size_t ev_cap;
	int err;             /* != 0: the batch failed (see mvcc__wtx_fail) */
	bool have_used;      /* used_bytes computed */
	uint64_t used_bytes; /* pages in use at the batch's start, in bytes */
	uint64_t grown;      /* bytes the batch's writes may add (quota) */
};

/* One request (Put, DeleteRange, Txn, lease revoke) inside a batch. It runs
 * in the batch's own LMDB transaction: every check that can refuse it runs
 * before its first write, so a refused request changes nothing; an error
 * after its first write (dirty) fails the whole batch. */
struct mvcc_req {
	struct kv_wtx *w;
	struct kv_store *s;
	MDB_txn *txn;
	int64_t base; /* revision before the request */
	int64_t main; /* base + 1: the revision its changes get */
	int64_t sub;  /* changes so far */
	int64_t compacted;
	bool dirty; /* it has written something */
};

/* A decoded record; pointers into LMDB memory, valid until the next write. */
struct mvcc_rec {
	unsigned flags;
	int64_t create;
	int64_t version;
	int64_t lease;
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value;
	size_t value_len;
};

/* Latest index entry of a key at or below a revision. */
struct mvcc_ver {
	int64_t main;
	int64_t sub;
	bool tombstone;
};

void mvcc__be64_put(uint8_t *p, uint64_t v);
uint64_t mvcc__be64_get(const uint8_t *p);
int mvcc__lmdb_err(int rc);
int mvcc__bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl);

int mvcc__meta_get(struct kv_store *s, MDB_txn *txn, const char *name, int64_t *out);
int mvcc__meta_put(struct kv_store *s, MDB_txn *txn, const char *name, int64_t v);

/* The index form of key (1..KV_MAX_KEY bytes) into buf (MVCC_UKEY_MAX
 * bytes): 0 and *ukey_len, or KV_ENOMEM should SHA-256 fail. */
int mvcc__ukey(const uint8_t *key, size_t key_len, uint8_t *buf, size_t *ukey_len);
/* Whether an index-form key of this length is a long key's (prefix, hash). */
static inline bool mvcc__ukey_is_long(size_t ukey_len)
{
	return ukey_len == MVCC_UKEY_LONG;
}
/* Whether ukey_len is a valid index-form length. */
static inline bool mvcc__ukey_len_ok(size_t ukey_len)
{
	return (ukey_len >= 1 && ukey_len <= MVCC_PREFIX) || ukey_len == MVCC_UKEY_LONG;
}
/* An index key: the index-form user key, then BE64 main, BE64 sub. */
size_t mvcc__idx_key(uint8_t *buf, const uint8_t *ukey, size_t ukey_len, uint64_t main,
		     uint64_t sub);
int mvcc__rec_decode(const MDB_val *v, struct mvcc_rec *out);
/* Latest revision of key (the full user key) at or below rev: 0, or
 * KV_ENOTFOUND when none. For a long key the record found must hold that
 * very key: another key with the same prefix and hash is KV_ECORRUPT. */
int mvcc__lookup(struct kv_store *s, MDB_txn *txn, const uint8_t *key, size_t key_len, int64_t rev,
		 struct mvcc_ver *out);
int mvcc__rec_get(struct kv_store *s, MDB_txn *txn, int64_t main, int64_t sub,
		  struct mvcc_rec *out);
/* Copies a record into a kv (one allocation); keys_only leaves the value out. */
int mvcc__kv_from_rec(const struct mvcc_rec *rec, int64_t mod, bool keys_only, struct kv_kv *out);
void mvcc__kv_free(struct kv_kv *kv);
void mvcc__events_truncate(struct kv_events *ev, size_t n);

/* Calls cb for each live key of the range at rev, in key order, with the full
 * key; cb's pointers are valid during the call only, and it must not write. A
 * non-zero return of cb stops the scan and is returned. */
typedef int (*mvcc_scan_cb)(void *ctx, const uint8_t *key, size_t key_len,
			    const struct mvcc_ver *ver);
int mvcc__scan(struct kv_store *s, MDB_txn *txn, const uint8_t *key, size_t key_len,
	       const uint8_t *end, size_t end_len, int64_t rev, mvcc_scan_cb cb, void *ctx);
int mvcc__check_key(const uint8_t *key, size_t key_len);

/* mdb_txn_commit's return code as a kv error (a full disk is KV_EDISKFULL
 * even where LMDB says EIO). */
int mvcc__commit_err(struct kv_store *s, int rc);
/* Errors that say nothing about the request but about this member (memory,
 * the disk, LMDB): they fail the batch, whatever the request. */
bool mvcc__store_err(int err);
/* Records err as the batch's failure: every later call on w returns it and
 * kv_txn_commit aborts. Returns err. */
int mvcc__wtx_fail(struct kv_wtx *w, int err);

/* A request: begin (w->err if the batch failed already); end: err 0 takes
 * the revision if anything changed; a refusal before any write leaves the
 * batch as it was; anything else fails the batch. mvcc_write.c. */
int mvcc__req_begin(struct kv_wtx *w, struct mvcc_req *r);
int mvcc__req_end(struct kv_wtx *w, struct mvcc_req *r, int err);
/* One change of a key at (r->main, r->sub): rec is the new record (its key,
 * value, flags, create, version, lease); cur the key's live record at the
 * request's view (NULL: none) and cur_mod its mod revision. Records the
 * event, moves the key between leases, writes both indexes. rec and cur may
 * point into LMDB memory; they are copied before the first write. Marks r
 * dirty. */
int mvcc__write_change(struct mvcc_req *r, const struct mvcc_rec *rec, const struct mvcc_rec *cur,
		       int64_t cur_mod);
/* The live record of key at the request's view: 0 (rec points into LMDB
 * memory, valid until the next write), or KV_ENOTFOUND. */
int mvcc__load_live(struct mvcc_req *r, const uint8_t *key, size_t key_len, struct mvcc_rec *rec,
		    int64_t *mod);

/* Lease bookkeeping of one change of key (the full key): detach from old,
 * attach to new (0: none). mvcc_lease.c. */
int mvcc__lease_move(struct mvcc_req *r, const uint8_t *key, size_t key_len, int64_t old_lease,
		     int64_t new_lease);
int mvcc__lease_exists(struct mvcc_req *r, int64_t id);

/* KV_ENOSPACE when the store would pass its quota with `adding` more bytes
 * on top of what the batch has written. mvcc.c. */
int mvcc__quota_check(struct kv_wtx *w, uint64_t adding);
/* Bytes a change of a key of key_len with value_len may add to the store:
 * both indexes and LMDB's per-node overhead. */
uint64_t mvcc__change_bytes(size_t key_len, size_t value_len);

/* The checks of a Range that can refuse it: key, options, revision. */
int mvcc__range_check(const struct kv_range_req *req, int64_t max_rev, int64_t compacted);
/* Range as of `view` (the header revision); an explicit revision above
 * `max_rev` is a future revision. */
int mvcc__range(struct kv_store *s, MDB_txn *txn, int64_t view, int64_t max_rev, int64_t compacted,
		const struct kv_range_req *req, struct kv_range_resp *resp);

#endif /* CAIRN_MVCC_INTERNAL_H */
