/* mvcc_events.c: the history reader for watchers catching up: stored
 * revisions turned back into etcd events, in revision order. */
#include <stdlib.h>
#include <string.h>

#include "mvcc_internal.h"
#include "kv_internal.h"

static int push(struct kv_events *ev, size_t *cap, struct kv_event **out)
{
	if (ev->n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		struct kv_event *e = kv__realloc(ev->events, c * sizeof *e);
		if (e == NULL)
			return KV_ENOMEM;
		ev->events = e;
		*cap = c;
	}
	*out = &ev->events[ev->n];
	memset(*out, 0, sizeof **out);
	return 0;
}

/* Cost: one cursor step per revision read, plus one index seek per event
 * when with_prev. */
int kv_events_read(struct kv_store *s, int64_t from, size_t max_events, bool with_prev,
		   struct kv_events *out, int64_t *next)
{
	MDB_txn *txn;
	MDB_cursor *c = NULL;
	int64_t cur, compacted;
	size_t cap = 0;
	memset(out, 0, sizeof *out);
	*next = from;
	if (from < 1)
		return KV_EINVAL;
	if (s->env == NULL)
		return KV_EIO; /* a failed snapshot install */
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	int err = mvcc__meta_get(s, txn, "rev", &cur);
	if (err == 0)
		err = mvcc__meta_get(s, txn, "compacted", &compacted);
	if (err == 0 && from <= compacted)
		err = KV_ECOMPACTED;
	if (err == 0)
		err = mvcc__lmdb_err(mdb_cursor_open(txn, s->rev_db, &c));
	if (err != 0)
		goto out;
	uint8_t rk[MVCC_REV_LEN];
	mvcc__be64_put(rk, (uint64_t)from);
	mvcc__be64_put(rk + 8, 0);
	MDB_val k = { sizeof rk, rk }, v;
	int64_t last = from - 1;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != MVCC_REV_LEN) {
			err = KV_ECORRUPT;
			goto out;
		}
		int64_t main = (int64_t)mvcc__be64_get(k.mv_data);
		if (main > cur)
			break;
		if (main != last && max_events && out->n >= max_events)
			break; /* whole revisions only */
		last = main;
		struct mvcc_rec rec;
		struct kv_event *e;
		if ((err = mvcc__rec_decode(&v, &rec)) != 0 || (err = push(out, &cap, &e)) != 0)
			goto out;
		e->type = (rec.flags & MVCC_TOMBSTONE) ? KV_EVENT_DELETE : KV_EVENT_PUT;
		if (e->type == KV_EVENT_DELETE)
			rec.create = rec.version = rec.lease = 0;
		if ((err = mvcc__kv_from_rec(&rec, main, e->type == KV_EVENT_DELETE, &e->kv)) != 0)
			goto out;
		out->n++;
		if (with_prev) {
			/* The index lookup may move nothing of c: own cursor. */
			struct mvcc_ver ver;
			struct mvcc_rec prec;
			err = mvcc__lookup(s, txn, rec.key, rec.key_len, main - 1, &ver);
			if (err == KV_ENOTFOUND || (err == 0 && ver.tombstone)) {
				err = 0;
				continue;
			}
			if (err != 0 ||
			    (err = mvcc__rec_get(s, txn, ver.main, ver.sub, &prec)) != 0 ||
			    (err = mvcc__kv_from_rec(&prec, ver.main, false, &e->prev_kv)) != 0)
				goto out;
			e->has_prev_kv = true;
		}
	}
	if (rc != 0 && rc != MDB_NOTFOUND) {
		err = mvcc__lmdb_err(rc);
		goto out;
	}
	*next = rc == 0 ? last + 1 : cur + 1;
	if (*next < from)
		*next = from;
out:
	if (c != NULL)
		mdb_cursor_close(c);
	mdb_txn_abort(txn);
	if (err != 0)
		kv_events_free(out);
	return err;
}
