/* mvcc_compact.c: compaction (logical at once, physical in bounded steps)
 * and HashKV, whose value does not depend on how far the physical part got. */
#include <stdlib.h>
#include <string.h>

#include "mvcc_internal.h"
#include "kv_internal.h"

static const char compact_next[] = "compact_next";

int kv_compact(struct kv_wtx *w, int64_t rev)
{
	/* etcd: compacting at or below the compacted revision, or past the
	 * current one, is refused. */
	if (w->err != 0)
		return w->err;
	if (rev <= w->compacted)
		return KV_ECOMPACTED;
	if (rev > w->rev)
		return KV_EFUTUREREV;
	int err = mvcc__meta_put(w->s, w->txn, "compacted", rev);
	if (err == 0)
		err = mvcc__meta_put(w->s, w->txn, "compact_target", rev);
	if (err == 0) {
		MDB_val k = { sizeof compact_next - 1, (void *)compact_next };
		int rc = mdb_del(w->txn, w->s->meta_db, &k, NULL);
		err = rc == MDB_NOTFOUND ? 0 : mvcc__lmdb_err(rc);
	}
	if (err == 0)
		w->compacted = rev;
	return mvcc__wtx_fail(w, err);
}

struct hist {
	struct mvcc_ver *v;
	size_t n, cap;
};

/* Removes one key's history at or below target, keeping its latest revision
 * there unless it is a tombstone. key is the index form (unique per key);
 * c is on the key's first index entry. */
static int compact_key(struct kv_store *s, MDB_txn *txn, MDB_cursor *c, const uint8_t *key,
		       size_t key_len, int64_t target, struct hist *h)
{
	MDB_val k, v;
	h->n = 0;
	int rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
	while (rc == 0) {
		if (k.mv_size != key_len + MVCC_REV_LEN || memcmp(k.mv_data, key, key_len) != 0)
			break;
		const uint8_t *p = (const uint8_t *)k.mv_data + key_len;
		struct mvcc_ver e = { (int64_t)mvcc__be64_get(p), (int64_t)mvcc__be64_get(p + 8),
				      v.mv_size == 1 &&
					      (((const uint8_t *)v.mv_data)[0] & MVCC_TOMBSTONE) };
		if (e.main > target)
			break;
		if (h->n == h->cap) {
			size_t cap = h->cap ? h->cap * 2 : 16;
			struct mvcc_ver *nv = kv__realloc(h->v, cap * sizeof *nv);
			if (nv == NULL)
				return KV_ENOMEM;
			h->v = nv;
			h->cap = cap;
		}
		h->v[h->n++] = e;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		return mvcc__lmdb_err(rc);
	size_t drop = h->n;
	if (drop > 0 && !h->v[h->n - 1].tombstone)
		drop--;
	for (size_t i = 0; i < drop; i++) {
		uint8_t ik[MVCC_IDX_MAX], rk[MVCC_REV_LEN];
		MDB_val ikey = { mvcc__idx_key(ik, key, key_len, (uint64_t)h->v[i].main,
					       (uint64_t)h->v[i].sub),
				 ik };
		mvcc__be64_put(rk, (uint64_t)h->v[i].main);
		mvcc__be64_put(rk + 8, (uint64_t)h->v[i].sub);
		MDB_val rkey = { sizeof rk, rk };
		if ((rc = mdb_del(txn, s->key_db, &ikey, NULL)) != 0 ||
		    (rc = mdb_del(txn, s->rev_db, &rkey, NULL)) != 0)
			return rc == MDB_NOTFOUND ? KV_ECORRUPT : mvcc__lmdb_err(rc);
	}
	return 0;
}

/* Cost: O(history of max_keys keys) per step, in one write transaction. */
int kv_compact_step(struct kv_store *s, size_t max_keys, bool *done)
{
	MDB_txn *txn;
	MDB_cursor *c = NULL;
	struct hist h = { 0 };
	uint8_t cur[MVCC_UKEY_MAX], buf[MVCC_IDX_MAX]; /* index-form keys */
	size_t cur_len = 0;
	int64_t target;

	*done = false;
	if (s->wtx != NULL || max_keys == 0)
		return KV_EINVAL;
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = mvcc__meta_get(s, txn, "compact_target", &target);
	if (err != 0 || target == 0) {
		mdb_txn_abort(txn);
		*done = err == 0;
		return err;
	}
	MDB_val mk = { sizeof compact_next - 1, (void *)compact_next }, mv;
	rc = mdb_get(txn, s->meta_db, &mk, &mv);
	if (rc == 0) {
		if (!mvcc__ukey_len_ok(mv.mv_size)) {
			err = KV_ECORRUPT;
			goto out;
		}
		cur_len = mv.mv_size;
		memcpy(cur, mv.mv_data, cur_len);
	} else if (rc != MDB_NOTFOUND) {
		err = mvcc__lmdb_err(rc);
		goto out;
	}
	rc = mdb_cursor_open(txn, s->key_db, &c);
	if (rc != 0) {
		err = mvcc__lmdb_err(rc);
		goto out;
	}
	MDB_val k = { mvcc__idx_key(buf, cur, cur_len, 0, 0), buf }, v;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	for (size_t n = 0; rc == 0 && n < max_keys; n++) {
		if (k.mv_size < MVCC_REV_LEN || !mvcc__ukey_len_ok(k.mv_size - MVCC_REV_LEN)) {
			err = KV_ECORRUPT;
			goto out;
		}
		cur_len = k.mv_size - MVCC_REV_LEN;
		memcpy(cur, k.mv_data, cur_len);
		err = compact_key(s, txn, c, cur, cur_len, target, &h);
		if (err != 0)
			goto out;
		k.mv_size = mvcc__idx_key(buf, cur, cur_len, UINT64_MAX, UINT64_MAX);
		k.mv_data = buf;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	}
	if (rc == MDB_NOTFOUND) {
		err = mvcc__meta_put(s, txn, "compact_target", 0);
		rc = err == 0 ? mdb_del(txn, s->meta_db, &mk, NULL) : 0;
		if (rc == MDB_NOTFOUND)
			rc = 0;
		*done = err == 0 && rc == 0;
	} else if (rc == 0) {
		MDB_val nv = { k.mv_size - MVCC_REV_LEN, k.mv_data };
		rc = mdb_put(txn, s->meta_db, &mk, &nv, 0);
	}
	if (err == 0)
		err = mvcc__lmdb_err(rc);
out:
	kv__free(h.v);
	if (c != NULL)
		mdb_cursor_close(c);
	if (err == 0)
		return mvcc__commit_err(s, mdb_txn_commit(txn));
	*done = false;
	mdb_txn_abort(txn);
	return err;
}

/* ---- HashKV ------------------------------------------------------------ */

#define FNV64_OFFSET 0xcbf29ce484222325ull
#define FNV64_PRIME 0x100000001b3ull

static uint64_t fnv64(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= FNV64_PRIME;
	}
	return h;
}

/* Cost: one pass over every stored revision up to rev, plus one index seek
 * per revision at or below the compacted one. */
int kv_hash_kv(struct kv_store *s, int64_t rev, struct kv_hash *out)
{
	MDB_txn *txn;
	MDB_cursor *c = NULL;
	int64_t cur, compacted;
	memset(out, 0, sizeof *out);
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = mvcc__meta_get(s, txn, "rev", &cur);
	if (err == 0)
		err = mvcc__meta_get(s, txn, "compacted", &compacted);
	if (err != 0)
		goto out;
	if (rev <= 0)
		rev = cur;
	if (rev > cur) {
		err = KV_EFUTUREREV;
		goto out;
	}
	if (rev < compacted) {
		err = KV_ECOMPACTED;
		goto out;
	}
	rc = mdb_cursor_open(txn, s->rev_db, &c);
	if (rc != 0) {
		err = mvcc__lmdb_err(rc);
		goto out;
	}
	uint64_t h = FNV64_OFFSET;
	MDB_val k, v;
	rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != MVCC_REV_LEN) {
			err = KV_ECORRUPT;
			goto out;
		}
		int64_t main = (int64_t)mvcc__be64_get(k.mv_data);
		int64_t sub = (int64_t)mvcc__be64_get((const uint8_t *)k.mv_data + 8);
		if (main > rev)
			break;
		if (main <= compacted) {
			/* Only what compaction keeps: the key's latest live
			 * revision at the compacted one. */
			struct mvcc_rec rec;
			struct mvcc_ver ver;
			if ((err = mvcc__rec_decode(&v, &rec)) != 0)
				goto out;
			err = mvcc__lookup(s, txn, rec.key, rec.key_len, compacted, &ver);
			if (err == KV_ENOTFOUND) {
				err = KV_ECORRUPT;
				goto out;
			}
			if (err != 0)
				goto out;
			if (ver.main != main || ver.sub != sub || ver.tombstone)
				continue;
		}
		h = fnv64(h, k.mv_data, k.mv_size);
		h = fnv64(h, v.mv_data, v.mv_size);
	}
	if (rc != 0 && rc != MDB_NOTFOUND) {
		err = mvcc__lmdb_err(rc);
		goto out;
	}
	out->hash = h;
	out->revision = rev;
	out->compacted = compacted;
out:
	if (c != NULL)
		mdb_cursor_close(c);
	mdb_txn_abort(txn);
	return err;
}
