/* mvcc_members.c: the member table and the removed ids (kv_mvcc.h, "Members"),
 * two sub-databases keyed by the big-endian member id. */
#include <string.h>

#include "kv_internal.h"
#include "mvcc_internal.h"

static void id_key(uint8_t buf[8], uint64_t id, MDB_val *k)
{
	mvcc__be64_put(buf, id);
	k->mv_size = 8;
	k->mv_data = buf;
}

int kv_member_put(struct kv_wtx *w, uint64_t id, const void *data, size_t len)
{
	if (w->err != 0)
		return w->err;
	if (len > KV_MAX_MEMBER_RECORD)
		return KV_ETOOBIG;
	uint8_t kb[8];
	MDB_val k, v = { len, (void *)(len ? data : "") };
	id_key(kb, id, &k);
	int err = mvcc__lmdb_err(mdb_put(w->txn, w->s->member_db, &k, &v, 0));
	/* MDB_MAP_FULL too: a member change must not be half applied */
	return mvcc__wtx_fail(w, err);
}

int kv_member_delete(struct kv_wtx *w, uint64_t id)
{
	if (w->err != 0)
		return w->err;
	uint8_t kb[8];
	MDB_val k;
	id_key(kb, id, &k);
	int rc = mdb_del(w->txn, w->s->member_db, &k, NULL);
	if (rc == MDB_NOTFOUND)
		return KV_ENOTFOUND;
	return mvcc__wtx_fail(w, mvcc__lmdb_err(rc));
}

int kv_member_set_removed(struct kv_wtx *w, uint64_t id)
{
	if (w->err != 0)
		return w->err;
	uint8_t kb[8];
	MDB_val k, v = { 0, (void *)"" };
	id_key(kb, id, &k);
	return mvcc__wtx_fail(w, mvcc__lmdb_err(mdb_put(w->txn, w->s->removed_db, &k, &v, 0)));
}

int kv_member_clear_removed(struct kv_wtx *w)
{
	if (w->err != 0)
		return w->err;
	/* mdb_drop with del 0 empties the sub-database and keeps it open */
	return mvcc__wtx_fail(w, mvcc__lmdb_err(mdb_drop(w->txn, w->s->removed_db, 0)));
}

void kv_members_free(struct kv_members *m)
{
	for (size_t i = 0; i < m->n; i++)
		kv__free(m->v[i].data);
	kv__free(m->v);
	m->v = NULL;
	m->n = 0;
}

/* Cost: one cursor walk of the table, one allocation per record. */
static int list(struct kv_store *s, MDB_txn *txn, struct kv_members *out)
{
	MDB_cursor *c;
	MDB_val k, v;
	size_t cap = 0;
	int err = 0;
	memset(out, 0, sizeof *out);
	int rc = mdb_cursor_open(txn, s->member_db, &c);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && err == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8 || v.mv_size > KV_MAX_MEMBER_RECORD) {
			err = KV_ECORRUPT;
			break;
		}
		if (out->n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct kv_member *nv = kv__realloc(out->v, ncap * sizeof *nv);
			if (nv == NULL) {
				err = KV_ENOMEM;
				break;
			}
			out->v = nv;
			cap = ncap;
		}
		struct kv_member *m = &out->v[out->n];
		m->id = mvcc__be64_get(k.mv_data);
		m->len = v.mv_size;
		m->data = kv__malloc(v.mv_size ? v.mv_size : 1);
		if (m->data == NULL) {
			err = KV_ENOMEM;
			break;
		}
		memcpy(m->data, v.mv_data, v.mv_size);
		out->n++;
	}
	mdb_cursor_close(c);
	if (err == 0 && rc != 0 && rc != MDB_NOTFOUND)
		err = mvcc__lmdb_err(rc);
	if (err != 0)
		kv_members_free(out);
	return err;
}

static int removed(struct kv_store *s, MDB_txn *txn, uint64_t id, bool *out)
{
	uint8_t kb[8];
	MDB_val k, v;
	id_key(kb, id, &k);
	int rc = mdb_get(txn, s->removed_db, &k, &v);
	*out = rc == 0;
	return rc == MDB_NOTFOUND ? 0 : mvcc__lmdb_err(rc);
}

int kv_members_list_w(struct kv_wtx *w, struct kv_members *out)
{
	memset(out, 0, sizeof *out);
	if (w->err != 0)
		return w->err;
	return list(w->s, w->txn, out);
}

int kv_member_removed_w(struct kv_wtx *w, uint64_t id, bool *out)
{
	*out = false;
	if (w->err != 0)
		return w->err;
	return removed(w->s, w->txn, id, out);
}

int kv_members_list(struct kv_store *s, struct kv_members *out)
{
	MDB_txn *txn;
	memset(out, 0, sizeof *out);
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = list(s, txn, out);
	mdb_txn_abort(txn);
	return err;
}

int kv_member_removed(struct kv_store *s, uint64_t id, bool *out)
{
	MDB_txn *txn;
	*out = false;
	if (s->env == NULL)
		return KV_EIO;
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = removed(s, txn, id, out);
	mdb_txn_abort(txn);
	return err;
}
