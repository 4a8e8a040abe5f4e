/* mvcc_internal.h: what the mvcc*.c files share; not installed, not public.
 * Encodings are described in kv_mvcc.h. */
#ifndef CAIRN_MVCC_INTERNAL_H
#define CAIRN_MVCC_INTERNAL_H

#include <assert.h>
#include <lmdb.h>

#include "kv_mvcc.h"

#define MVCC_REV_LEN 16
#define MVCC_IDX_MAX (KV_MAX_KEY + MVCC_REV_LEN)
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
	MDB_dbi lease_key_db; /* BE64(id) key -> empty */
	struct kv_wtx *wtx;   /* the open write transaction, if any */
};

struct kv_wtx {
	struct kv_store *s;
	MDB_txn *txn;
	int64_t rev; /* current revision including this batch's requests */
	int64_t compacted;
	struct kv_events ev; /* the batch's events so far */
	size_t ev_cap;
};

/* One request (Put, DeleteRange, Txn) inside a batch: a nested LMDB txn. */
struct mvcc_req {
	struct kv_wtx *w;
	struct kv_store *s;
	MDB_txn *txn;
	int64_t base; /* revision before the request */
	int64_t main; /* base + 1: the revision its changes get */
	int64_t sub;  /* changes so far */
	int64_t compacted;
	size_t ev_mark; /* the batch's event count before the request */
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

size_t mvcc__idx_key(uint8_t *buf, const uint8_t *key, size_t key_len, uint64_t main, uint64_t sub);
int mvcc__rec_decode(const MDB_val *v, struct mvcc_rec *out);
/* Latest revision of key at or below rev: 0, or KV_ENOTFOUND when none. */
int mvcc__lookup(struct kv_store *s, MDB_txn *txn, const uint8_t *key, size_t key_len, int64_t rev,
		 struct mvcc_ver *out);
int mvcc__rec_get(struct kv_store *s, MDB_txn *txn, int64_t main, int64_t sub,
		  struct mvcc_rec *out);
/* Copies a record into a kv (one allocation); keys_only leaves the value out. */
int mvcc__kv_from_rec(const struct mvcc_rec *rec, int64_t mod, bool keys_only, struct kv_kv *out);
void mvcc__kv_free(struct kv_kv *kv);
void mvcc__events_truncate(struct kv_events *ev, size_t n);

/* Calls cb for each live key of the range at rev, in key order; cb's pointers
 * are valid during the call only, and it must not write. A non-zero return of
 * cb stops the scan and is returned. */
typedef int (*mvcc_scan_cb)(void *ctx, const uint8_t *key, size_t key_len,
			    const struct mvcc_ver *ver);
int mvcc__scan(struct kv_store *s, MDB_txn *txn, const uint8_t *key, size_t key_len,
	       const uint8_t *end, size_t end_len, int64_t rev, mvcc_scan_cb cb, void *ctx);
int mvcc__check_key(const uint8_t *key, size_t key_len);

/* A request: begin (nested txn), end (commit into the batch if err is 0,
 * else drop it and its events); one change of a key. mvcc_write.c. */
int mvcc__req_begin(struct kv_wtx *w, struct mvcc_req *r);
int mvcc__req_end(struct kv_wtx *w, struct mvcc_req *r, int err);
int mvcc__write_change(struct mvcc_req *r, const uint8_t *key, size_t key_len, unsigned flags,
		       int64_t create, int64_t version, int64_t lease, const uint8_t *value,
		       size_t value_len);

/* Lease bookkeeping of one change of key: detach from old, attach to new
 * (0: none). mvcc_lease.c. */
int mvcc__lease_move(struct mvcc_req *r, const uint8_t *key, size_t key_len, int64_t old_lease,
		     int64_t new_lease);
int mvcc__lease_exists(struct mvcc_req *r, int64_t id);

/* KV_ENOSPACE when the store is past its quota. mvcc.c. */
int mvcc__quota_check(struct kv_store *s, MDB_txn *txn);

/* Range as of `view` (the header revision); an explicit revision above
 * `max_rev` is a future revision. */
int mvcc__range(struct kv_store *s, MDB_txn *txn, int64_t view, int64_t max_rev, int64_t compacted,
		const struct kv_range_req *req, struct kv_range_resp *resp);

#endif /* CAIRN_MVCC_INTERNAL_H */
