/* mvcc_write.c: the write requests of a batch: Put, DeleteRange and Txn, each
 * taking one main revision when it changes something (etcd mvcc). They run in
 * the batch's LMDB transaction: a request is checked whole before its first
 * write (a Txn's compares and every op of the branch it takes), so a refused
 * request leaves no trace, and an error after a write fails the batch. */
#include <stdlib.h>
#include <string.h>

#include "mvcc_internal.h"
#include "kv_internal.h"

int mvcc__req_begin(struct kv_wtx *w, struct mvcc_req *r)
{
	memset(r, 0, sizeof *r);
	r->w = w;
	r->s = w->s;
	r->txn = w->txn;
	r->base = w->rev;
	r->main = w->rev + 1;
	r->compacted = w->compacted;
	return w->err;
}

int mvcc__req_end(struct kv_wtx *w, struct mvcc_req *r, int err)
{
	if (err == 0) {
		if (r->sub > 0)
			w->rev = r->main;
		return 0;
	}
	if (r->dirty || mvcc__store_err(err))
		return mvcc__wtx_fail(w, err);
	return err;
}

/* The revision the request's reads see: its own writes once it made some. */
static int64_t req_view(const struct mvcc_req *r)
{
	return r->sub > 0 ? r->main : r->base;
}

int mvcc__load_live(struct mvcc_req *r, const uint8_t *key, size_t key_len, struct mvcc_rec *rec,
		    int64_t *mod)
{
	struct mvcc_ver ver;
	int err = mvcc__lookup(r->s, r->txn, key, key_len, req_view(r), &ver);
	if (err != 0)
		return err;
	if (ver.tombstone)
		return KV_ENOTFOUND;
	*mod = ver.main;
	return mvcc__rec_get(r->s, r->txn, ver.main, ver.sub, rec);
}

/* Records the change as an event of the batch. Its prev kv is the key's
 * live kv before the request (at r->base, as etcd's watch reads it, not an
 * earlier write of the same Txn), so that kv_events_read gives the same
 * event: cur (the live record at the request's view) is that one unless the
 * request has written already and cur is absent or its own. */
static int add_event(struct mvcc_req *r, const struct mvcc_rec *rec, const struct mvcc_rec *cur,
		     int64_t cur_mod, struct kv_event **out)
{
	struct kv_wtx *w = r->w;
	struct mvcc_rec base_rec;
	int err;
	if (r->sub > 0 && (cur == NULL || cur_mod == r->main)) {
		struct mvcc_ver ver;
		cur = NULL;
		err = mvcc__lookup(r->s, r->txn, rec->key, rec->key_len, r->base, &ver);
		if (err == 0 && !ver.tombstone) {
			if ((err = mvcc__rec_get(r->s, r->txn, ver.main, ver.sub, &base_rec)) != 0)
				return err;
			cur = &base_rec;
			cur_mod = ver.main;
		} else if (err != 0 && err != KV_ENOTFOUND) {
			return err;
		}
	}
	if (w->ev.n == w->ev_cap) {
		size_t cap = w->ev_cap ? w->ev_cap * 2 : 16;
		struct kv_event *e = kv__realloc(w->ev.events, cap * sizeof *e);
		if (e == NULL)
			return KV_ENOMEM;
		w->ev.events = e;
		w->ev_cap = cap;
	}
	struct kv_event *e = &w->ev.events[w->ev.n];
	memset(e, 0, sizeof *e);
	e->type = (rec->flags & MVCC_TOMBSTONE) ? KV_EVENT_DELETE : KV_EVENT_PUT;
	err = mvcc__kv_from_rec(rec, r->main, e->type == KV_EVENT_DELETE, &e->kv);
	if (err == 0 && cur != NULL) {
		err = mvcc__kv_from_rec(cur, cur_mod, false, &e->prev_kv);
		e->has_prev_kv = err == 0;
	}
	if (err != 0) {
		mvcc__kv_free(&e->kv);
		mvcc__kv_free(&e->prev_kv);
		return err;
	}
	w->ev.n++;
	*out = e;
	return 0;
}

int mvcc__write_change(struct mvcc_req *r, const struct mvcc_rec *rec, const struct mvcc_rec *cur,
		       int64_t cur_mod)
{
	struct kv_event *e;
	r->dirty = true;
	if (rec->value_len > UINT32_MAX - MVCC_REC_HDR - rec->key_len)
		return KV_ETOOBIG;
	int64_t old_lease = cur ? cur->lease : 0;
	/* The event copies the key and the value: from here on only those
	 * copies are read, since a write may move what rec and cur point into. */
	int err = add_event(r, rec, cur, cur_mod, &e);
	if (err != 0)
		return err;
	const uint8_t *key = e->kv.key, *value = rec->flags & MVCC_TOMBSTONE ? NULL : e->kv.value;
	size_t key_len = e->kv.key_len, value_len = value ? e->kv.value_len : 0;
	uint8_t uk[MVCC_UKEY_MAX];
	size_t uk_len;
	if ((err = mvcc__ukey(key, key_len, uk, &uk_len)) != 0)
		return err;
	if ((err = mvcc__lease_move(r, key, key_len, old_lease, rec->lease)) != 0)
		return err;
	uint8_t rk[MVCC_REV_LEN], ik[MVCC_IDX_MAX], fl = (uint8_t)rec->flags;
	mvcc__be64_put(rk, (uint64_t)r->main);
	mvcc__be64_put(rk + 8, (uint64_t)r->sub);
	/* revisions only grow: every record goes at the end of "rev", where
	 * MDB_APPEND fills pages instead of splitting them in half */
	MDB_val k = { sizeof rk, rk }, v = { MVCC_REC_HDR + key_len + value_len, NULL };
	int rc = mdb_put(r->txn, r->s->rev_db, &k, &v, MDB_RESERVE | MDB_APPEND);
	if (rc == MDB_KEYEXIST)
		return KV_ECORRUPT; /* a record at or past this revision exists */
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	uint8_t *p = v.mv_data;
	p[0] = fl;
	mvcc__be64_put(p + 1, (uint64_t)rec->create);
	mvcc__be64_put(p + 9, (uint64_t)rec->version);
	mvcc__be64_put(p + 17, (uint64_t)rec->lease);
	uint32_t kl = (uint32_t)key_len;
	p[25] = (uint8_t)(kl >> 24);
	p[26] = (uint8_t)(kl >> 16);
	p[27] = (uint8_t)(kl >> 8);
	p[28] = (uint8_t)kl;
	memcpy(p + MVCC_REC_HDR, key, key_len);
	if (value_len)
		memcpy(p + MVCC_REC_HDR + key_len, value, value_len);
	MDB_val ikey = { mvcc__idx_key(ik, uk, uk_len, (uint64_t)r->main, (uint64_t)r->sub), ik };
	MDB_val ival = { 1, &fl };
	rc = mdb_put(r->txn, r->s->key_db, &ikey, &ival, MDB_NOOVERWRITE);
	if (rc != 0)
		return mvcc__lmdb_err(rc);
	r->w->grown += mvcc__change_bytes(key_len, value_len);
	r->sub++;
	return 0;
}

/* The checks of a Put that can refuse it, in etcd's order (checkRequestPut:
 * a missing key for ignore_value/ignore_lease before a missing lease);
 * gone: an earlier DeleteRange of the same Txn removes the key. *have and
 * cur: the key's live record at the request's view. */
static int put_check(struct mvcc_req *r, const struct kv_put_req *req, bool gone, bool *have,
		     struct mvcc_rec *cur, int64_t *cur_mod)
{
	int err = mvcc__check_key(req->key, req->key_len);
	if (err != 0)
		return err;
	if (req->ignore_value && req->value_len)
		return KV_EVALUEPROVIDED;
	if (req->ignore_lease && req->lease)
		return KV_ELEASEPROVIDED;
	err = mvcc__load_live(r, req->key, req->key_len, cur, cur_mod);
	*have = err == 0;
	if (err != 0 && err != KV_ENOTFOUND)
		return err;
	if ((req->ignore_value || req->ignore_lease) && (!*have || gone))
		return KV_EKEYNOTFOUND;
	if (!req->ignore_lease && req->lease != 0)
		return mvcc__lease_exists(r, req->lease);
	return 0;
}

static int do_put(struct mvcc_req *r, const struct kv_put_req *req, struct kv_put_resp *resp)
{
	struct mvcc_rec cur;
	int64_t cur_mod = 0;
	bool have;
	memset(resp, 0, sizeof *resp);
	int err = put_check(r, req, false, &have, &cur, &cur_mod);
	if (err != 0)
		return err;
	if (have && req->prev_kv) { /* copied before writes may move cur */
		if ((err = mvcc__kv_from_rec(&cur, cur_mod, false, &resp->prev_kv)) != 0)
			return err;
		resp->has_prev_kv = true;
	}
	struct mvcc_rec rec = {
		.create = have ? cur.create : r->main,
		.version = have ? cur.version + 1 : 1,
		.lease = req->ignore_lease ? cur.lease : req->lease,
		.key = req->key,
		.key_len = req->key_len,
		.value = req->ignore_value ? cur.value : req->value,
		.value_len = req->ignore_value ? cur.value_len : req->value_len,
	};
	err = mvcc__write_change(r, &rec, have ? &cur : NULL, cur_mod);
	resp->revision = r->main;
	return err;
}

struct del_item {
	uint8_t *key;
	size_t key_len;
	struct mvcc_ver ver;
};

struct del_ctx {
	struct del_item *v; /* what to tombstone, key order */
	size_t n, cap;
};

static int del_cb(void *arg, const uint8_t *key, size_t key_len, const struct mvcc_ver *ver)
{
	struct del_ctx *c = arg;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 8;
		struct del_item *v = kv__realloc(c->v, cap * sizeof *v);
		if (v == NULL)
			return KV_ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	struct del_item *d = &c->v[c->n];
	d->key = kv__malloc(key_len + 1);
	if (d->key == NULL)
		return KV_ENOMEM;
	memcpy(d->key, key, key_len);
	d->key_len = key_len;
	d->ver = *ver;
	c->n++;
	return 0;
}

/* Tombstones every live key of [key, end) at the request's view; prevs (if
 * not NULL, n entries) get copies of their live kvs. The keys' records are
 * read as they are tombstoned: a tombstone only adds at the end of "rev". */
static int delete_keys(struct mvcc_req *r, const struct del_item *keys, size_t n,
		       struct kv_kv *prevs)
{
	for (size_t i = 0; i < n; i++) {
		struct mvcc_rec cur;
		int err = mvcc__rec_get(r->s, r->txn, keys[i].ver.main, keys[i].ver.sub, &cur);
		if (err == 0 && prevs != NULL)
			err = mvcc__kv_from_rec(&cur, keys[i].ver.main, false, &prevs[i]);
		struct mvcc_rec rec = { .flags = MVCC_TOMBSTONE,
					.key = keys[i].key,
					.key_len = keys[i].key_len };
		if (err == 0)
			err = mvcc__write_change(r, &rec, &cur, keys[i].ver.main);
		if (err != 0)
			return err;
	}
	return 0;
}

static void del_ctx_free(struct del_ctx *c)
{
	for (size_t i = 0; i < c->n; i++)
		kv__free(c->v[i].key);
	kv__free(c->v);
	memset(c, 0, sizeof *c);
}

static int do_delete(struct mvcc_req *r, const struct kv_delete_req *req,
		     struct kv_delete_resp *resp)
{
	struct del_ctx c = { 0 };
	memset(resp, 0, sizeof *resp);
	int err = mvcc__check_key(req->key, req->key_len);
	if (err != 0)
		return err;
	err = mvcc__scan(r->s, r->txn, req->key, req->key_len, req->range_end, req->range_end_len,
			 req_view(r), del_cb, &c);
	struct kv_kv *prevs = NULL;
	if (err == 0 && c.n && req->prev_kv) {
		prevs = kv__calloc(c.n, sizeof *prevs);
		if (prevs == NULL)
			err = KV_ENOMEM;
	}
	if (err == 0)
		err = delete_keys(r, c.v, c.n, prevs);
	if (err == 0 && prevs != NULL) {
		resp->prev_kvs = prevs;
		resp->n_prev_kvs = c.n;
	} else if (prevs != NULL) {
		for (size_t i = 0; i < c.n; i++)
			mvcc__kv_free(&prevs[i]);
		kv__free(prevs);
	}
	resp->deleted = (int64_t)c.n;
	del_ctx_free(&c);
	return err;
}

int kv_put(struct kv_wtx *w, const struct kv_put_req *req, struct kv_put_resp *resp)
{
	struct mvcc_req r;
	memset(resp, 0, sizeof *resp);
	int err = mvcc__req_begin(w, &r);
	if (err == 0)
		err = mvcc__quota_check(w, mvcc__change_bytes(req->key_len, req->value_len));
	if (err == 0)
		err = do_put(&r, req, resp);
	err = mvcc__req_end(w, &r, err);
	if (err != 0)
		kv_put_resp_free(resp);
	return err;
}

void kv_put_resp_free(struct kv_put_resp *resp)
{
	if (resp == NULL)
		return;
	mvcc__kv_free(&resp->prev_kv);
	memset(resp, 0, sizeof *resp);
}

int kv_delete_range(struct kv_wtx *w, const struct kv_delete_req *req, struct kv_delete_resp *resp)
{
	struct mvcc_req r;
	memset(resp, 0, sizeof *resp);
	int err = mvcc__req_begin(w, &r);
	if (err == 0) {
		err = do_delete(&r, req, resp);
		resp->revision = req_view(&r);
	}
	err = mvcc__req_end(w, &r, err);
	if (err != 0)
		kv_delete_resp_free(resp);
	return err;
}

void kv_delete_resp_free(struct kv_delete_resp *resp)
{
	if (resp == NULL)
		return;
	for (size_t i = 0; i < resp->n_prev_kvs; i++)
		mvcc__kv_free(&resp->prev_kvs[i]);
	kv__free(resp->prev_kvs);
	memset(resp, 0, sizeof *resp);
}

/* ---- Txn: etcd's checkIntervals ------------------------------------------ */

struct ivl {
	const uint8_t *k;
	size_t kl;
	const uint8_t *e; /* NULL: the point k */
	size_t el;
};

struct ivs {
	struct ivl *v;
	size_t n, cap;
};

static int ivs_add(struct ivs *s, struct ivl iv)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		struct ivl *v = kv__realloc(s->v, cap * sizeof *v);
		if (v == NULL)
			return KV_ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = iv;
	return 0;
}

/* The span of a DeleteRange, as an interval. */
static struct ivl del_ivl(const struct kv_delete_req *d)
{
	return (struct ivl){ d->key, d->key_len, d->range_end_len ? d->range_end : NULL,
			     d->range_end_len };
}

static bool ivs_has_point(const struct ivs *s, const uint8_t *k, size_t kl)
{
	for (size_t i = 0; i < s->n; i++)
		if (mvcc__bytes_cmp(s->v[i].k, s->v[i].kl, k, kl) == 0)
			return true;
	return false;
}

/* An interval is [k, e) compared as strings, as etcd's interval tree does;
 * so a range_end of "\0" ("all keys >= k") covers no point here, as in etcd. */
static bool ivs_intersects(const struct ivs *s, const uint8_t *k, size_t kl)
{
	for (size_t i = 0; i < s->n; i++) {
		const struct ivl *iv = &s->v[i];
		if (iv->e == NULL) {
			if (mvcc__bytes_cmp(iv->k, iv->kl, k, kl) == 0)
				return true;
		} else if (mvcc__bytes_cmp(k, kl, iv->k, iv->kl) >= 0 &&
			   mvcc__bytes_cmp(k, kl, iv->e, iv->el) < 0) {
			return true;
		}
	}
	return false;
}

static int check_intervals(const struct kv_op *ops, size_t n, int depth, struct ivs *puts,
			   struct ivs *dels);

static int check_nested(const struct kv_txn_req *t, int depth, struct ivs *puts, struct ivs *dels)
{
	struct ivs pt = { 0 }, dt = { 0 }, pe = { 0 }, de = { 0 };
	int err = 0;
	if (t == NULL)
		return KV_EINVAL;
	if (t->n_compares > KV_MAX_TXN_OPS)
		return KV_ETOOMANYOPS;
	err = check_intervals(t->success, t->n_success, depth + 1, &pt, &dt);
	if (err == 0)
		err = check_intervals(t->failure, t->n_failure, depth + 1, &pe, &de);
	for (size_t i = 0; err == 0 && i < pt.n; i++) {
		if (ivs_has_point(puts, pt.v[i].k, pt.v[i].kl) ||
		    ivs_intersects(dels, pt.v[i].k, pt.v[i].kl))
			err = KV_EDUPLICATEKEY;
		else
			err = ivs_add(puts, pt.v[i]);
	}
	for (size_t i = 0; err == 0 && i < pe.n; i++) {
		/* then and else exclude each other: a key in both is fine */
		if ((ivs_has_point(puts, pe.v[i].k, pe.v[i].kl) &&
		     !ivs_has_point(&pt, pe.v[i].k, pe.v[i].kl)) ||
		    ivs_intersects(dels, pe.v[i].k, pe.v[i].kl))
			err = KV_EDUPLICATEKEY;
		else
			err = ivs_add(puts, pe.v[i]);
	}
	for (size_t i = 0; err == 0 && i < dt.n; i++)
		err = ivs_add(dels, dt.v[i]);
	for (size_t i = 0; err == 0 && i < de.n; i++)
		err = ivs_add(dels, de.v[i]);
	kv__free(pt.v);
	kv__free(dt.v);
	kv__free(pe.v);
	kv__free(de.v);
	return err;
}

static int check_intervals(const struct kv_op *ops, size_t n, int depth, struct ivs *puts,
			   struct ivs *dels)
{
	int err = 0;
	if (depth > KV_MAX_TXN_DEPTH)
		return KV_EINVAL;
	if (n > KV_MAX_TXN_OPS)
		return KV_ETOOMANYOPS;
	for (size_t i = 0; err == 0 && i < n; i++) {
		if (ops[i].type == KV_OP_DELETE)
			err = ivs_add(dels, del_ivl(&ops[i].u.del));
	}
	for (size_t i = 0; err == 0 && i < n; i++)
		if (ops[i].type == KV_OP_TXN)
			err = check_nested(ops[i].u.txn, depth, puts, dels);
	for (size_t i = 0; err == 0 && i < n; i++) {
		const struct kv_put_req *p = &ops[i].u.put;
		if (ops[i].type != KV_OP_PUT)
			continue;
		if (ivs_has_point(puts, p->key, p->key_len) ||
		    ivs_intersects(dels, p->key, p->key_len))
			err = KV_EDUPLICATEKEY;
		else
			err = ivs_add(puts, (struct ivl){ p->key, p->key_len, NULL, 0 });
	}
	return err;
}

static int check_txn(const struct kv_txn_req *t)
{
	struct ivs p = { 0 }, d = { 0 };
	if (t->n_compares > KV_MAX_TXN_OPS)
		return KV_ETOOMANYOPS;
	int err = check_intervals(t->success, t->n_success, 1, &p, &d);
	kv__free(p.v);
	kv__free(d.v);
	p = (struct ivs){ 0 };
	d = (struct ivs){ 0 };
	if (err == 0)
		err = check_intervals(t->failure, t->n_failure, 1, &p, &d);
	kv__free(p.v);
	kv__free(d.v);
	return err;
}

/* ---- Txn: compares (etcd applyCompare) ------------------------------------ */

struct cmp_ctx {
	struct mvcc_req *r;
	const struct kv_compare *c;
	bool ok;
	bool any;
};

static int cmp_i64(int64_t a, int64_t b)
{
	return a < b ? -1 : (a > b ? 1 : 0);
}

static bool compare_holds(const struct kv_compare *c, const struct mvcc_rec *rec, int64_t mod)
{
	int r;
	switch (c->target) {
	case KV_CMP_VALUE:
		r = mvcc__bytes_cmp(rec->value, rec->value_len, c->value, c->value_len);
		break;
	case KV_CMP_VERSION:
		r = cmp_i64(rec->version, c->number);
		break;
	case KV_CMP_CREATE:
		r = cmp_i64(rec->create, c->number);
		break;
	case KV_CMP_MOD:
		r = cmp_i64(mod, c->number);
		break;
	default:
		r = cmp_i64(rec->lease, c->number);
		break;
	}
	switch (c->result) {
	case KV_CMP_EQUAL:
		return r == 0;
	case KV_CMP_GREATER:
		return r > 0;
	case KV_CMP_LESS:
		return r < 0;
	default:
		return r != 0;
	}
}

#define CMP_STOP 1 /* positive: stops the scan without an error */

static int cmp_cb(void *arg, const uint8_t *key, size_t key_len, const struct mvcc_ver *ver)
{
	struct cmp_ctx *c = arg;
	struct mvcc_rec rec;
	(void)key;
	(void)key_len;
	c->any = true;
	int err = mvcc__rec_get(c->r->s, c->r->txn, ver->main, ver->sub, &rec);
	if (err != 0)
		return err;
	if (!compare_holds(c->c, &rec, ver->main)) {
		c->ok = false;
		return CMP_STOP;
	}
	return 0;
}

/* Evaluated at r->base: the state before the Txn, for nested Txns too. */
static int compares_hold(struct mvcc_req *r, const struct kv_txn_req *t, bool *out)
{
	*out = true;
	for (size_t i = 0; i < t->n_compares && *out; i++) {
		const struct kv_compare *c = &t->compares[i];
		int err = mvcc__check_key(c->key, c->key_len);
		if (err != 0)
			return err;
		if ((unsigned)c->result > KV_CMP_NOT_EQUAL || (unsigned)c->target > KV_CMP_LEASE)
			return KV_EINVAL;
		struct cmp_ctx cc = { .r = r, .c = c, .ok = true };
		err = mvcc__scan(r->s, r->txn, c->key, c->key_len, c->range_end, c->range_end_len,
				 r->base, cmp_cb, &cc);
		if (err < 0)
			return err;
		if (!cc.any) {
			struct mvcc_rec zero = { 0 };
			cc.ok = c->target != KV_CMP_VALUE && compare_holds(c, &zero, 0);
		}
		*out = cc.ok;
	}
	return 0;
}

static void op_resp_free(struct kv_op_resp *o)
{
	switch (o->type) {
	case KV_OP_RANGE:
		kv_range_resp_free(&o->u.range);
		break;
	case KV_OP_PUT:
		kv_put_resp_free(&o->u.put);
		break;
	case KV_OP_DELETE:
		kv_delete_resp_free(&o->u.del);
		break;
	case KV_OP_TXN:
		kv_txn_resp_free(o->u.txn);
		kv__free(o->u.txn);
		o->u.txn = NULL;
		break;
	}
}

void kv_txn_resp_free(struct kv_txn_resp *resp)
{
	if (resp == NULL)
		return;
	for (size_t i = 0; i < resp->n_responses; i++)
		op_resp_free(&resp->responses[i]);
	kv__free(resp->responses);
	memset(resp, 0, sizeof *resp);
}

/* Whether a DeleteRange of iv removes key (its real span, where "\0" as
 * the end means every key from k on). */
static bool ivl_covers(const struct ivl *iv, const uint8_t *key, size_t key_len)
{
	if (iv->e == NULL)
		return mvcc__bytes_cmp(iv->k, iv->kl, key, key_len) == 0;
	if (mvcc__bytes_cmp(key, key_len, iv->k, iv->kl) < 0)
		return false;
	return (iv->el == 1 && iv->e[0] == 0) || mvcc__bytes_cmp(key, key_len, iv->e, iv->el) < 0;
}

/* Every check that can refuse the Txn, before its first write: compares
 * (which pick the branches) and each op of the branches taken, in the order
 * they run. A Put's key is looked up at the state before the Txn: check_txn
 * refuses a key Put twice, so only an earlier DeleteRange of the Txn can
 * have changed it (one whose end is "\0", which etcd's check lets by):
 * dels holds the DeleteRanges so far. */
static int txn_check(struct mvcc_req *r, const struct kv_txn_req *t, struct ivs *dels)
{
	bool ok, have;
	struct mvcc_rec cur;
	int64_t mod;
	int err = compares_hold(r, t, &ok);
	const struct kv_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;
	for (size_t i = 0; i < n && err == 0; i++) {
		switch (ops[i].type) {
		case KV_OP_RANGE:
			err = mvcc__range_check(&ops[i].u.range, r->base, r->compacted);
			break;
		case KV_OP_PUT: {
			const struct kv_put_req *p = &ops[i].u.put;
			bool gone = false;
			for (size_t j = 0; !gone && j < dels->n; j++)
				gone = ivl_covers(&dels->v[j], p->key, p->key_len);
			err = put_check(r, p, gone, &have, &cur, &mod);
			break;
		}
		case KV_OP_DELETE: {
			const struct kv_delete_req *d = &ops[i].u.del;
			err = mvcc__check_key(d->key, d->key_len);
			if (err == 0)
				err = ivs_add(dels, del_ivl(d));
			break;
		}
		case KV_OP_TXN:
			err = ops[i].u.txn ? txn_check(r, ops[i].u.txn, dels) : KV_EINVAL;
			break;
		default:
			err = KV_EINVAL;
			break;
		}
	}
	return err;
}

static int do_txn(struct mvcc_req *r, const struct kv_txn_req *t, struct kv_txn_resp *resp)
{
	bool ok;
	memset(resp, 0, sizeof *resp);
	int err = compares_hold(r, t, &ok);
	if (err != 0)
		return err;
	resp->succeeded = ok;
	const struct kv_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;
	if (n == 0)
		return 0;
	resp->responses = kv__calloc(n, sizeof *resp->responses);
	if (resp->responses == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < n && err == 0; i++) {
		struct kv_op_resp *o = &resp->responses[i];
		o->type = ops[i].type;
		resp->n_responses++;
		switch (ops[i].type) {
		case KV_OP_RANGE:
			err = mvcc__range(r->s, r->txn, req_view(r), r->base, r->compacted,
					  &ops[i].u.range, &o->u.range);
			break;
		case KV_OP_PUT:
			err = do_put(r, &ops[i].u.put, &o->u.put);
			break;
		case KV_OP_DELETE:
			err = do_delete(r, &ops[i].u.del, &o->u.del);
			break;
		case KV_OP_TXN:
			o->u.txn = kv__calloc(1, sizeof *o->u.txn);
			err = o->u.txn ? do_txn(r, ops[i].u.txn, o->u.txn) : KV_ENOMEM;
			break;
		default:
			o->type = KV_OP_RANGE; /* nothing to free */
			err = KV_EINVAL;
			break;
		}
	}
	return err;
}

/* Every header of a Txn's responses carries the Txn's revision. */
static void set_revision(struct kv_txn_resp *resp, int64_t rev)
{
	resp->revision = rev;
	for (size_t i = 0; i < resp->n_responses; i++) {
		struct kv_op_resp *o = &resp->responses[i];
		switch (o->type) {
		case KV_OP_RANGE:
			o->u.range.revision = rev;
			break;
		case KV_OP_PUT:
			o->u.put.revision = rev;
			break;
		case KV_OP_DELETE:
			o->u.del.revision = rev;
			break;
		case KV_OP_TXN:
			if (o->u.txn != NULL) /* NULL: its allocation failed */
				set_revision(o->u.txn, rev);
			break;
		}
	}
}

/* What the Txn's Puts, on every path, may add to the store (for the quota:
 * etcd's capped applier refuses a Txn with a Put on any path). */
static uint64_t txn_put_bytes(const struct kv_txn_req *t)
{
	const struct kv_op *lists[2] = { t->success, t->failure };
	size_t ns[2] = { t->n_success, t->n_failure };
	uint64_t sum = 0;
	for (int l = 0; l < 2; l++)
		for (size_t i = 0; i < ns[l]; i++) {
			const struct kv_op *o = &lists[l][i];
			if (o->type == KV_OP_PUT)
				sum += mvcc__change_bytes(o->u.put.key_len, o->u.put.value_len);
			else if (o->type == KV_OP_TXN && o->u.txn)
				sum += txn_put_bytes(o->u.txn);
		}
	return sum;
}

int kv_txn(struct kv_wtx *w, const struct kv_txn_req *req, struct kv_txn_resp *resp)
{
	struct mvcc_req r;
	memset(resp, 0, sizeof *resp);
	int err = mvcc__req_begin(w, &r);
	if (err == 0)
		err = check_txn(req); /* bounds the depth before txn_put_bytes recurses */
	uint64_t put_bytes = err == 0 ? txn_put_bytes(req) : 0;
	if (put_bytes > 0)
		err = mvcc__quota_check(w, put_bytes);
	if (err == 0) {
		struct ivs dels = { 0 };
		err = txn_check(&r, req, &dels);
		kv__free(dels.v);
	}
	if (err == 0) {
		err = do_txn(&r, req, resp);
		set_revision(resp, req_view(&r));
	}
	err = mvcc__req_end(w, &r, err);
	if (err != 0)
		kv_txn_resp_free(resp);
	return err;
}
