/* mvcc_alarms.c: the alarm table (kv_mvcc.h, "Alarms"), one sub-database
 * keyed by BE64(member id) BE32(type), with empty values. */
#include <string.h>

#include "kv_internal.h"
#include "mvcc_internal.h"

#define ALARM_KEY 12

static void alarm_key(uint8_t buf[ALARM_KEY], uint64_t member, uint32_t type, MDB_val *k)
{
	mvcc__be64_put(buf, member);
	buf[8] = (uint8_t)(type >> 24);
	buf[9] = (uint8_t)(type >> 16);
	buf[10] = (uint8_t)(type >> 8);
	buf[11] = (uint8_t)type;
	k->mv_size = ALARM_KEY;
	k->mv_data = buf;
}

void kv_alarms_free(struct kv_alarms *a)
{
	kv__free(a->v);
	a->v = NULL;
	a->n = 0;
}

/* Cost: one cursor walk of the table (at most KV_MAX_ALARMS records). */
static int list(struct kv_store *s, MDB_txn *txn, struct kv_alarms *out)
{
	MDB_cursor *c;
	MDB_val k, v;
	size_t cap = 0;
	int err = 0;
	memset(out, 0, sizeof *out);
	int rc = mdb_cursor_open(txn, s->alarm_db, &c);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && err == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != ALARM_KEY || out->n >= KV_MAX_ALARMS) {
			err = KV_ECORRUPT;
			break;
		}
		if (out->n == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			struct kv_alarm *nv = kv__realloc(out->v, ncap * sizeof *nv);
			if (nv == NULL) {
				err = KV_ENOMEM;
				break;
			}
			out->v = nv;
			cap = ncap;
		}
		const uint8_t *p = k.mv_data;
		out->v[out->n].member_id = mvcc__be64_get(p);
		out->v[out->n].type = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 |
				      (uint32_t)p[10] << 8 | (uint32_t)p[11];
		out->n++;
	}
	mdb_cursor_close(c);
	if (err == 0 && rc != 0 && rc != MDB_NOTFOUND)
		err = mvcc__lmdb_err(rc);
	if (err != 0)
		kv_alarms_free(out);
	return err;
}

int kv_alarm_set(struct kv_wtx *w, uint64_t member, uint32_t type, bool active, bool *changed)
{
	uint8_t kb[ALARM_KEY];
	MDB_val k, v = { 0, (void *)"" };
	if (changed != NULL)
		*changed = false;
	if (w->err != 0)
		return w->err;
	if (type == 0)
		return KV_EINVAL;
	alarm_key(kb, member, type, &k);
	int rc = mdb_get(w->txn, w->s->alarm_db, &k, &v);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return mvcc__wtx_fail(w, mvcc__lmdb_err(rc));
	bool present = rc == 0;
	if (present == active)
		return 0;
	if (active) {
		MDB_stat st;
		rc = mdb_stat(w->txn, w->s->alarm_db, &st);
		if (rc != 0)
			return mvcc__wtx_fail(w, mvcc__lmdb_err(rc));
		if (st.ms_entries >= KV_MAX_ALARMS)
			return KV_ETOOBIG;
		v.mv_size = 0;
		v.mv_data = (void *)"";
		rc = mdb_put(w->txn, w->s->alarm_db, &k, &v, 0);
	} else {
		rc = mdb_del(w->txn, w->s->alarm_db, &k, NULL);
	}
	/* MDB_MAP_FULL too: the alarm is raised on every member or on none */
	int err = mvcc__wtx_fail(w, mvcc__lmdb_err(rc));
	if (err == 0 && changed != NULL)
		*changed = true;
	return err;
}

int kv_alarms_list_w(struct kv_wtx *w, struct kv_alarms *out)
{
	memset(out, 0, sizeof *out);
	if (w->err != 0)
		return w->err;
	return list(w->s, w->txn, out);
}

int kv_alarm_active_w(struct kv_wtx *w, uint32_t type, bool *active)
{
	struct kv_alarms a;
	*active = false;
	int err = kv_alarms_list_w(w, &a);
	for (size_t i = 0; err == 0 && i < a.n; i++)
		if (a.v[i].type == type)
			*active = true;
	kv_alarms_free(&a);
	return err;
}

int kv_alarms_list(struct kv_store *s, struct kv_alarms *out)
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
