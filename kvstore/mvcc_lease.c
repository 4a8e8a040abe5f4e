/* mvcc_lease.c: the lease table (etcd lessor's persistent part): leases
 * with their granted and checkpointed TTLs, and the keys attached to each. */
#include <stdlib.h>
#include <string.h>

#include "mvcc_internal.h"
#include "kv_internal.h"

/* What a lease may add to the store, for the quota: its node and a share
 * of a page. */
#define LEASE_BYTES 128

static MDB_val lease_key(uint8_t *buf, int64_t id)
{
	mvcc__be64_put(buf, (uint64_t)id);
	return (MDB_val){ 8, buf };
}

int mvcc__lease_exists(struct mvcc_req *r, int64_t id)
{
	uint8_t b[8];
	MDB_val k = lease_key(b, id), v;
	int rc = mdb_get(r->txn, r->s->lease_db, &k, &v);
	return rc == MDB_NOTFOUND ? KV_ELEASENOTFOUND : mvcc__lmdb_err(rc);
}

/* A "lease_key" entry: BE64(id) and the index form of the key (the key
 * itself up to MVCC_PREFIX bytes, else prefix and hash: LMDB's key size
 * bounds it). A long key's entry holds the full key as its value, for
 * kv_lease_time_to_live and revocation; a short key's is empty, as before. */
static int attach_key(uint8_t *buf, int64_t id, const uint8_t *key, size_t key_len, MDB_val *out)
{
	size_t ukey_len;
	mvcc__be64_put(buf, (uint64_t)id);
	int err = mvcc__ukey(key, key_len, buf + 8, &ukey_len);
	*out = (MDB_val){ 8 + ukey_len, buf };
	return err;
}

int mvcc__lease_move(struct mvcc_req *r, const uint8_t *key, size_t key_len, int64_t old_lease,
		     int64_t new_lease)
{
	uint8_t buf[8 + MVCC_UKEY_MAX];
	MDB_val k;
	if (old_lease == new_lease)
		return 0;
	if (old_lease != 0) {
		int err = attach_key(buf, old_lease, key, key_len, &k);
		if (err != 0)
			return err;
		int rc = mdb_del(r->txn, r->s->lease_key_db, &k, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND) /* its lease may be revoked already */
			return mvcc__lmdb_err(rc);
	}
	if (new_lease != 0) {
		int err = mvcc__lease_exists(r, new_lease);
		if (err == 0)
			err = attach_key(buf, new_lease, key, key_len, &k);
		if (err != 0)
			return err;
		MDB_val val = { 0, NULL };
		if (key_len > MVCC_PREFIX)
			val = (MDB_val){ key_len, (void *)key };
		return mvcc__lmdb_err(mdb_put(r->txn, r->s->lease_key_db, &k, &val, 0));
	}
	return 0;
}

static int lease_put(struct kv_wtx *w, int64_t id, int64_t ttl, int64_t remaining)
{
	uint8_t b[8], v[16];
	MDB_val k = lease_key(b, id), val = { 16, v };
	mvcc__be64_put(v, (uint64_t)ttl);
	mvcc__be64_put(v + 8, (uint64_t)remaining);
	return mvcc__lmdb_err(mdb_put(w->txn, w->s->lease_db, &k, &val, 0));
}

static int lease_get(struct kv_store *s, MDB_txn *txn, int64_t id, struct kv_lease *out)
{
	uint8_t b[8];
	MDB_val k = lease_key(b, id), v;
	int rc = mdb_get(txn, s->lease_db, &k, &v);
	if (rc == MDB_NOTFOUND)
		return KV_ELEASENOTFOUND;
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	if (v.mv_size != 16)
		return KV_ECORRUPT;
	out->id = id;
	out->ttl = (int64_t)mvcc__be64_get(v.mv_data);
	out->remaining = (int64_t)mvcc__be64_get((const uint8_t *)v.mv_data + 8);
	return 0;
}

int kv_lease_grant(struct kv_wtx *w, int64_t id, int64_t ttl)
{
	struct kv_lease l;
	if (w->err != 0)
		return w->err;
	if (id == 0 || ttl < 0)
		return KV_EINVAL;
	int err = mvcc__quota_check(w, LEASE_BYTES);
	if (err != 0)
		return err;
	err = lease_get(w->s, w->txn, id, &l);
	if (err == 0)
		return KV_ELEASEEXIST;
	if (err != KV_ELEASENOTFOUND)
		return mvcc__wtx_fail(w, err);
	return mvcc__wtx_fail(w, lease_put(w, id, ttl, 0));
}

int kv_lease_checkpoint(struct kv_wtx *w, int64_t id, int64_t remaining_ttl)
{
	struct kv_lease l;
	if (w->err != 0)
		return w->err;
	if (remaining_ttl < 0)
		return KV_EINVAL;
	int err = lease_get(w->s, w->txn, id, &l);
	if (err == KV_ELEASENOTFOUND)
		return err;
	if (err != 0)
		return mvcc__wtx_fail(w, err);
	return mvcc__wtx_fail(w, lease_put(w, id, l.ttl, remaining_ttl));
}

/* Swaps keys i and j of out. */
static void keys_swap(struct kv_lease_info *out, size_t i, size_t j)
{
	uint8_t *k = out->keys[i];
	size_t l = out->key_lens[i];
	out->keys[i] = out->keys[j];
	out->key_lens[i] = out->key_lens[j];
	out->keys[j] = k;
	out->key_lens[j] = l;
}

static bool keys_less(const struct kv_lease_info *out, size_t i, size_t j)
{
	return mvcc__bytes_cmp(out->keys[i], out->key_lens[i], out->keys[j], out->key_lens[j]) < 0;
}

static void keys_sift(struct kv_lease_info *out, size_t root, size_t end)
{
	for (size_t child; (child = 2 * root + 1) < end; root = child) {
		if (child + 1 < end && keys_less(out, child, child + 1))
			child++;
		if (!keys_less(out, root, child))
			return;
		keys_swap(out, root, child);
	}
}

/* Heapsort of out's keys by bytes (two parallel arrays, so no qsort): in
 * place, O(n log n), for long keys, whose entries follow their hash. */
static void keys_sort(struct kv_lease_info *out)
{
	size_t n = out->n_keys;
	for (size_t i = n / 2; i-- > 0;)
		keys_sift(out, i, n);
	for (size_t end = n; end-- > 1;) {
		keys_swap(out, 0, end);
		keys_sift(out, 0, end);
	}
}

/* The attached keys of a lease, in key order (etcd's revoke deletes them in
 * that order): each is its own allocation. The entries are in index-form
 * order: a lease with long keys sharing a prefix is sorted afterwards. */
static int lease_keys(struct kv_store *s, MDB_txn *txn, int64_t id, struct kv_lease_info *out)
{
	MDB_cursor *c;
	uint8_t b[8];
	size_t cap = 0;
	bool any_long = false;
	MDB_val k = lease_key(b, id), v;
	int rc = mdb_cursor_open(txn, s->lease_key_db, &c);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = 0;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size < 8 || memcmp(k.mv_data, b, 8) != 0)
			break;
		size_t ukey_len = k.mv_size - 8;
		const uint8_t *src = (const uint8_t *)k.mv_data + 8;
		size_t len = ukey_len;
		if (!mvcc__ukey_len_ok(ukey_len) ||
		    (mvcc__ukey_is_long(ukey_len) ?
			     v.mv_size <= MVCC_PREFIX || v.mv_size > KV_MAX_KEY ||
				     memcmp(v.mv_data, src, MVCC_PREFIX) != 0 :
			     v.mv_size != 0)) {
			err = KV_ECORRUPT;
			break;
		}
		if (mvcc__ukey_is_long(ukey_len)) {
			src = v.mv_data; /* the full key */
			len = v.mv_size;
			any_long = true;
		}
		if (out->n_keys == cap) {
			cap = cap ? cap * 2 : 8;
			uint8_t **keys = kv__realloc(out->keys, cap * sizeof *keys);
			if (keys != NULL)
				out->keys = keys;
			size_t *lens = kv__realloc(out->key_lens, cap * sizeof *lens);
			if (lens != NULL)
				out->key_lens = lens;
			if (keys == NULL || lens == NULL) {
				err = KV_ENOMEM;
				break;
			}
		}
		uint8_t *key = kv__malloc(len + 1);
		if (key == NULL) {
			err = KV_ENOMEM;
			break;
		}
		memcpy(key, src, len);
		out->keys[out->n_keys] = key;
		out->key_lens[out->n_keys++] = len;
	}
	if (err == 0 && rc != 0 && rc != MDB_NOTFOUND)
		err = mvcc__lmdb_err(rc);
	mdb_cursor_close(c);
	if (err == 0 && any_long)
		keys_sort(out);
	return err;
}

void kv_lease_info_free(struct kv_lease_info *info)
{
	if (info == NULL)
		return;
	for (size_t i = 0; i < info->n_keys; i++)
		kv__free(info->keys[i]);
	kv__free(info->keys);
	kv__free(info->key_lens);
	memset(info, 0, sizeof *info);
}

/* etcd lessor Revoke: the attached keys go in one revision, then the lease. */
int kv_lease_revoke(struct kv_wtx *w, int64_t id, int64_t *revision)
{
	struct mvcc_req r;
	struct kv_lease l;
	struct kv_lease_info keys = { 0 };
	*revision = w->rev;
	int err = mvcc__req_begin(w, &r);
	if (err == 0)
		err = lease_get(w->s, r.txn, id, &l);
	if (err == 0)
		err = lease_keys(w->s, r.txn, id, &keys);
	for (size_t i = 0; err == 0 && i < keys.n_keys; i++) {
		struct mvcc_rec cur;
		int64_t mod;
		err = mvcc__load_live(&r, keys.keys[i], keys.key_lens[i], &cur, &mod);
		if (err == KV_ENOTFOUND) {
			err = KV_ECORRUPT; /* an attached key is live */
			break;
		}
		struct mvcc_rec rec = { .flags = MVCC_TOMBSTONE,
					.key = keys.keys[i],
					.key_len = keys.key_lens[i] };
		if (err == 0)
			err = mvcc__write_change(&r, &rec, &cur, mod);
	}
	if (err == 0) {
		uint8_t b[8];
		MDB_val k = lease_key(b, id);
		r.dirty = true;
		err = mvcc__lmdb_err(mdb_del(r.txn, w->s->lease_db, &k, NULL));
	}
	kv_lease_info_free(&keys);
	err = mvcc__req_end(w, &r, err);
	if (err == 0)
		*revision = w->rev;
	return err;
}

int kv_lease_time_to_live(struct kv_store *s, int64_t id, bool with_keys, struct kv_lease_info *out)
{
	MDB_txn *txn;
	memset(out, 0, sizeof *out);
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = lease_get(s, txn, id, &out->lease);
	if (err == 0 && with_keys)
		err = lease_keys(s, txn, id, out);
	mdb_txn_abort(txn);
	if (err != 0)
		kv_lease_info_free(out);
	return err;
}

int kv_lease_list(struct kv_store *s, struct kv_lease_list *out)
{
	MDB_txn *txn;
	MDB_cursor *c = NULL;
	size_t cap = 0;
	memset(out, 0, sizeof *out);
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = mvcc__lmdb_err(mdb_cursor_open(txn, s->lease_db, &c));
	MDB_val k, v;
	for (rc = err ? MDB_NOTFOUND : mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && err == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8 || v.mv_size != 16) {
			err = KV_ECORRUPT;
			break;
		}
		if (out->n == cap) {
			cap = cap ? cap * 2 : 8;
			struct kv_lease *l = kv__realloc(out->leases, cap * sizeof *l);
			if (l == NULL) {
				err = KV_ENOMEM;
				break;
			}
			out->leases = l;
		}
		struct kv_lease *l = &out->leases[out->n++];
		l->id = (int64_t)mvcc__be64_get(k.mv_data);
		l->ttl = (int64_t)mvcc__be64_get(v.mv_data);
		l->remaining = (int64_t)mvcc__be64_get((const uint8_t *)v.mv_data + 8);
	}
	if (err == 0 && rc != 0 && rc != MDB_NOTFOUND)
		err = mvcc__lmdb_err(rc);
	if (c != NULL)
		mdb_cursor_close(c);
	mdb_txn_abort(txn);
	if (err != 0)
		kv_lease_list_free(out);
	return err;
}

void kv_lease_list_free(struct kv_lease_list *l)
{
	if (l == NULL)
		return;
	kv__free(l->leases);
	memset(l, 0, sizeof *l);
}
