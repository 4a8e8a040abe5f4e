/* test_mvcc_model.c: the LMDB MVCC store against a plain in-memory model of
 * etcd's data model, on seeded random sequences of batches of Put,
 * DeleteRange, Txn and Compact, Ranges at random revisions, physical
 * compaction steps, aborted batches and reopens, over short keys and a group
 * of long keys sharing their first 447 bytes. Every answer must agree,
 * errors included. Replay one seed: MVCC_SEED=<n> MVCC_SEEDS=1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_mvcc.h"

/* The key universe, sorted bytewise; the model finds keys by walking it.
 * Besides short keys it has a group of long ones sharing their first 447
 * bytes ("c" and 446 'p's, itself a key): the store keeps a key longer than
 * that under its prefix and a hash, so its index orders the group by hash
 * and its answers must still come in key order. Two are 448 bytes (one past
 * the prefix) and some are prefixes of others. Built by universe_init; a key
 * of the model is always one of these pointers (compared as such). */
#define NU 15
#define LONG_MAX_LEN 2002
static const char *U[NU];
/* "c", then `ps` 'p's, then tail */
static const struct {
	size_t ps;
	const char *tail;
} LONGK[] = { { 446, "" },  { 446, "a" }, { 446, "b" }, { 599, "" },
	      { 599, "a" }, { 999, "" },  { 2000, "q" } };
#define NLONG (sizeof LONGK / sizeof LONGK[0])
static char long_keys[NLONG][LONG_MAX_LEN + 1];
/* Range ends: short ones, and ones around and inside the group. */
static const char *ENDS[14];
#define NENDS (sizeof ENDS / sizeof ENDS[0])
static char long_ends[3][LONG_MAX_LEN + 1];

static void long_make(char *buf, size_t ps, const char *tail)
{
	assert_true(1 + ps + strlen(tail) <= LONG_MAX_LEN);
	buf[0] = 'c';
	memset(buf + 1, 'p', ps);
	strcpy(buf + 1 + ps, tail);
}

static void universe_init(void)
{
	static const char *const shorts[] = { "a", "ab", "abc", "b", "ba", "c", "cc", "d" };
	size_t n = 0;
	for (size_t i = 0; i < 7; i++)
		U[n++] = shorts[i];
	for (size_t i = 0; i < NLONG; i++) {
		long_make(long_keys[i], LONGK[i].ps, LONGK[i].tail);
		U[n++] = long_keys[i];
	}
	U[n++] = shorts[7];
	assert_int_equal(n, NU);
	for (size_t i = 1; i < NU; i++)
		assert_true(strcmp(U[i - 1], U[i]) < 0);
	assert_int_equal(strlen(U[7]), 447);
	assert_int_equal(strlen(U[8]), 448);
	long_make(long_ends[0], 446, "b"); /* a key of the group */
	long_make(long_ends[1], 599, "b"); /* between two of its keys */
	long_make(long_ends[2], 1500, ""); /* likewise, past one it extends */
	static const char *const ends[] = { "a", "ab", "abd", "b",  "bz", "c",
					    "d", "e",  "aa",  "cp", "cq" };
	n = 0;
	for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++)
		ENDS[n++] = ends[i];
	for (size_t i = 0; i < 3; i++)
		ENDS[n++] = long_ends[i];
	assert_int_equal(n, NENDS);
}
static const char *const VALS[] = { "", "x", "y", "zz", "hello" };
#define NVALS (sizeof VALS / sizeof VALS[0])

/* ---- a small seeded generator (splitmix64) ---- */
static uint64_t rng_state;
static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static unsigned rn(unsigned n)
{
	return (unsigned)(rnd() % n);
}

/* ---- the model ---- */
struct mrec {
	const char *key;
	int64_t main, sub, create, version, lease;
	bool tomb;
	const char *val;
};

struct model {
	struct mrec *r;
	size_t n, cap;
	int64_t rev, compacted;
	bool granted[4]; /* leases 1..3 */
};

static void model_copy(struct model *dst, const struct model *src)
{
	*dst = *src;
	dst->r = malloc((src->cap ? src->cap : 1) * sizeof *dst->r);
	assert_non_null(dst->r);
	if (src->n)
		memcpy(dst->r, src->r, src->n * sizeof *src->r);
}

static void model_append(struct model *m, struct mrec rec)
{
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 64;
		m->r = realloc(m->r, m->cap * sizeof *m->r);
		assert_non_null(m->r);
	}
	m->r[m->n++] = rec;
}

static const struct mrec *model_latest(const struct model *m, const char *key, int64_t rev)
{
	for (size_t i = m->n; i-- > 0;)
		if (m->r[i].main <= rev && m->r[i].key == key)
			return &m->r[i];
	return NULL;
}

static const struct mrec *model_live(const struct model *m, const char *key, int64_t rev)
{
	const struct mrec *r = model_latest(m, key, rev);
	return r && !r->tomb ? r : NULL;
}

static int bcmp_(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	size_t n = al < bl ? al : bl;
	int c = n ? memcmp(a, b, n) : 0;
	if (c)
		return c < 0 ? -1 : 1;
	return al < bl ? -1 : al > bl;
}

static bool in_range(const char *k, const uint8_t *key, size_t kl, const uint8_t *end, size_t el)
{
	const uint8_t *kb = (const uint8_t *)k;
	size_t kbl = strlen(k);
	if (el == 0)
		return bcmp_(kb, kbl, key, kl) == 0;
	if (bcmp_(kb, kbl, key, kl) < 0)
		return false;
	if (el == 1 && end[0] == 0)
		return true;
	return bcmp_(kb, kbl, end, el) < 0;
}

struct mkv {
	const char *key;
	int64_t create, mod, version, lease;
	const char *val; /* NULL: keys only */
};

struct mres {
	int err;
	struct mkv kvs[NU];
	size_t n;
	bool more;
	int64_t count, revision;
};

static int64_t mkv_num(const struct mkv *k, enum kv_sort_target t)
{
	return t == KV_SORT_VERSION ? k->version : t == KV_SORT_CREATE ? k->create : k->mod;
}

static int mkv_cmp(const struct mkv *a, const struct mkv *b, enum kv_sort_target t)
{
	if (t == KV_SORT_KEY)
		return strcmp(a->key, b->key);
	if (t == KV_SORT_VALUE)
		return bcmp_((const uint8_t *)a->val, strlen(a->val), (const uint8_t *)b->val,
			     strlen(b->val));
	int64_t x = mkv_num(a, t), y = mkv_num(b, t);
	return x < y ? -1 : x > y;
}

static void model_range(const struct model *m, const struct kv_range_req *q, int64_t view,
			int64_t max_rev, struct mres *o)
{
	memset(o, 0, sizeof *o);
	int64_t rev = q->revision;
	if (rev > max_rev) {
		o->err = KV_EFUTUREREV;
		return;
	}
	if (rev <= 0)
		rev = view;
	if (rev < m->compacted) {
		o->err = KV_ECOMPACTED;
		return;
	}
	bool fetch_all = q->sort_order != KV_SORT_NONE || q->min_mod_revision ||
			 q->max_mod_revision || q->min_create_revision || q->max_create_revision;
	size_t fetch = (!fetch_all && q->limit > 0) ? (size_t)q->limit + 1 : NU;
	for (size_t i = 0; i < NU; i++) {
		if (!in_range(U[i], q->key, q->key_len, q->range_end, q->range_end_len))
			continue;
		const struct mrec *r = model_live(m, U[i], rev);
		if (!r)
			continue;
		o->count++;
		if (q->count_only || o->n >= fetch)
			continue;
		struct mkv kv = { r->key, r->create, r->main, r->version, r->lease, r->val };
		if ((q->max_mod_revision && kv.mod > q->max_mod_revision) ||
		    (q->min_mod_revision && kv.mod < q->min_mod_revision) ||
		    (q->max_create_revision && kv.create > q->max_create_revision) ||
		    (q->min_create_revision && kv.create < q->min_create_revision))
			continue;
		o->kvs[o->n++] = kv;
	}
	enum kv_sort_order ord = q->sort_order;
	if (q->sort_target != KV_SORT_KEY && ord == KV_SORT_NONE)
		ord = KV_SORT_ASCEND;
	if (ord != KV_SORT_NONE) { /* stable insertion sort */
		for (size_t i = 1; i < o->n; i++) {
			struct mkv x = o->kvs[i];
			size_t j = i;
			while (j > 0) {
				int c = mkv_cmp(&o->kvs[j - 1], &x, q->sort_target);
				if (ord == KV_SORT_DESCEND)
					c = -c;
				if (c <= 0)
					break;
				o->kvs[j] = o->kvs[j - 1];
				j--;
			}
			o->kvs[j] = x;
		}
	}
	if (q->limit > 0 && o->n > (size_t)q->limit) {
		o->n = (size_t)q->limit;
		o->more = true;
	}
	if (q->keys_only)
		for (size_t i = 0; i < o->n; i++)
			o->kvs[i].val = NULL;
	o->revision = view;
}

static void check_kv(const struct kv_kv *kv, const struct mkv *m)
{
	assert_int_equal(kv->key_len, strlen(m->key));
	assert_memory_equal(kv->key, m->key, kv->key_len);
	assert_int_equal(kv->create_revision, m->create);
	assert_int_equal(kv->mod_revision, m->mod);
	assert_int_equal(kv->version, m->version);
	assert_int_equal(kv->lease, m->lease);
	if (m->val == NULL) {
		assert_int_equal(kv->value_len, 0);
	} else {
		assert_int_equal(kv->value_len, strlen(m->val));
		if (kv->value_len)
			assert_memory_equal(kv->value, m->val, kv->value_len);
	}
}

static void check_range(const struct kv_range_resp *r, const struct mres *m)
{
	assert_int_equal(r->count, m->count);
	assert_int_equal(r->more, m->more);
	assert_int_equal(r->revision, m->revision);
	assert_int_equal(r->n_kvs, m->n);
	for (size_t i = 0; i < m->n; i++)
		check_kv(&r->kvs[i], &m->kvs[i]);
}

/* ---- request context of the model: one main revision per request ---- */
struct mreq {
	struct model *m;
	int64_t base, main, sub;
};

static int64_t mreq_view(const struct mreq *r)
{
	return r->sub ? r->main : r->base;
}

static const char *key_of(const uint8_t *k, size_t kl)
{
	for (size_t i = 0; i < NU; i++)
		if (strlen(U[i]) == kl && memcmp(U[i], k, kl) == 0)
			return U[i];
	fail_msg("key outside the universe");
	return NULL;
}

static const char *val_of(const uint8_t *v, size_t vl)
{
	for (size_t i = 0; i < NVALS; i++)
		if (strlen(VALS[i]) == vl && (vl == 0 || memcmp(VALS[i], v, vl) == 0))
			return VALS[i];
	fail_msg("value outside the pool");
	return NULL;
}

struct mput {
	int err;
	bool has_prev;
	struct mkv prev;
};

static void model_put(struct mreq *r, const struct kv_put_req *q, struct mput *o)
{
	memset(o, 0, sizeof *o);
	if (q->ignore_value && q->value_len) {
		o->err = KV_EVALUEPROVIDED;
		return;
	}
	if (q->ignore_lease && q->lease) {
		o->err = KV_ELEASEPROVIDED;
		return;
	}
	const char *k = key_of(q->key, q->key_len);
	const struct mrec *p = model_live(r->m, k, INT64_MAX);
	if ((q->ignore_value || q->ignore_lease) && !p) {
		o->err = KV_EKEYNOTFOUND;
		return;
	}
	if (!q->ignore_lease && q->lease && !r->m->granted[q->lease]) {
		o->err = KV_ELEASENOTFOUND;
		return;
	}
	struct mrec rec = { k,
			    r->main,
			    r->sub++,
			    p ? p->create : r->main,
			    p ? p->version + 1 : 1,
			    q->ignore_lease ? p->lease : q->lease,
			    false,
			    q->ignore_value ? p->val : val_of(q->value, q->value_len) };
	if (p && q->prev_kv) {
		o->has_prev = true;
		o->prev = (struct mkv){ p->key, p->create, p->main, p->version, p->lease, p->val };
	}
	model_append(r->m, rec);
}

struct mdel {
	int64_t deleted;
	struct mkv prev[NU];
	size_t n_prev;
};

static void model_delete(struct mreq *r, const struct kv_delete_req *q, struct mdel *o)
{
	memset(o, 0, sizeof *o);
	const char *keys[NU];
	size_t n = 0;
	for (size_t i = 0; i < NU; i++) {
		if (!in_range(U[i], q->key, q->key_len, q->range_end, q->range_end_len))
			continue;
		const struct mrec *p = model_live(r->m, U[i], INT64_MAX);
		if (!p)
			continue;
		keys[n++] = U[i];
		if (q->prev_kv)
			o->prev[o->n_prev++] = (struct mkv){ p->key,     p->create, p->main,
							     p->version, p->lease,  p->val };
	}
	for (size_t i = 0; i < n; i++)
		model_append(r->m, (struct mrec){ keys[i], r->main, r->sub++, 0, 0, 0, true, "" });
	o->deleted = (int64_t)n;
}

static bool model_compare(const struct model *m, int64_t base, const struct kv_compare *c)
{
	bool any = false;
	for (size_t i = 0; i < NU; i++) {
		if (!in_range(U[i], c->key, c->key_len, c->range_end, c->range_end_len))
			continue;
		const struct mrec *p = model_live(m, U[i], base);
		if (!p)
			continue;
		any = true;
		int r;
		switch (c->target) {
		case KV_CMP_VALUE:
			r = bcmp_((const uint8_t *)p->val, strlen(p->val), c->value, c->value_len);
			break;
		case KV_CMP_VERSION:
			r = p->version < c->number ? -1 : p->version > c->number;
			break;
		case KV_CMP_CREATE:
			r = p->create < c->number ? -1 : p->create > c->number;
			break;
		case KV_CMP_MOD:
			r = p->main < c->number ? -1 : p->main > c->number;
			break;
		default:
			r = p->lease < c->number ? -1 : p->lease > c->number;
			break;
		}
		bool ok = c->result == KV_CMP_EQUAL   ? r == 0 :
			  c->result == KV_CMP_GREATER ? r > 0 :
			  c->result == KV_CMP_LESS    ? r < 0 :
							r != 0;
		if (!ok)
			return false;
	}
	if (!any) {
		if (c->target == KV_CMP_VALUE)
			return false;
		int r = 0 < c->number ? -1 : 0 > c->number;
		return c->result == KV_CMP_EQUAL   ? r == 0 :
		       c->result == KV_CMP_GREATER ? r > 0 :
		       c->result == KV_CMP_LESS    ? r < 0 :
						     r != 0;
	}
	return true;
}

/* ---- random requests ---- */
struct gen {
	struct kv_op ops[6];
	struct kv_compare cmps[3];
	struct kv_txn_req txn;
	uint8_t prefix_end[9][LONG_MAX_LEN]; /* one per compare and op */
};

static void gen_span(const uint8_t **key, size_t *kl, const uint8_t **end, size_t *el,
		     uint8_t *pbuf)
{
	const char *k = U[rn(NU)];
	*key = (const uint8_t *)k;
	*kl = strlen(k);
	switch (rn(5)) {
	case 0:
	case 1:
		*end = NULL;
		*el = 0;
		break;
	case 2:
		*end = (const uint8_t *)"";
		*el = 1; /* "\0": all keys >= key */
		break;
	case 3: /* prefix */
		memcpy(pbuf, k, *kl);
		pbuf[*kl - 1]++;
		*end = pbuf;
		*el = *kl;
		break;
	default:
		*end = (const uint8_t *)ENDS[rn(NENDS)];
		*el = strlen((const char *)*end);
		break;
	}
}

static void gen_range(struct kv_range_req *q, int64_t rev, int64_t compacted, uint8_t *pbuf)
{
	memset(q, 0, sizeof *q);
	gen_span(&q->key, &q->key_len, &q->range_end, &q->range_end_len, pbuf);
	unsigned w = rn(4);
	if (w == 0)
		q->revision = 0;
	else
		q->revision = compacted - 1 + (int64_t)rn((unsigned)(rev - compacted + 3));
	if (rn(3) == 0)
		q->limit = rn(4);
	q->count_only = rn(8) == 0;
	q->keys_only = rn(5) == 0;
	if (rn(2)) {
		q->sort_order = (enum kv_sort_order)rn(3);
		q->sort_target = (enum kv_sort_target)rn(5);
	}
	if (rn(6) == 0)
		q->min_mod_revision = rn((unsigned)rev + 1);
	if (rn(6) == 0)
		q->max_mod_revision = rn((unsigned)rev + 1);
	if (rn(6) == 0)
		q->min_create_revision = rn((unsigned)rev + 1);
	if (rn(6) == 0)
		q->max_create_revision = rn((unsigned)rev + 1);
}

static void gen_put(struct kv_put_req *q)
{
	memset(q, 0, sizeof *q);
	const char *k = U[rn(NU)], *v = VALS[rn(NVALS)];
	q->key = (const uint8_t *)k;
	q->key_len = strlen(k);
	q->value = (const uint8_t *)v;
	q->value_len = strlen(v);
	q->lease = rn(3) == 0 ? (int64_t)rn(3) + 1 : 0;
	q->prev_kv = rn(2);
	if (rn(8) == 0) {
		q->ignore_value = true;
		if (rn(3))
			q->value_len = 0;
	}
	if (rn(8) == 0) {
		q->ignore_lease = true;
		if (rn(3))
			q->lease = 0;
	}
}

static void gen_delete(struct kv_delete_req *q, uint8_t *pbuf)
{
	memset(q, 0, sizeof *q);
	gen_span(&q->key, &q->key_len, &q->range_end, &q->range_end_len, pbuf);
	q->prev_kv = rn(2);
}

/* A Txn, nested one level when inner is given; its ops may repeat keys
 * (then both sides must say duplicate). */
static void gen_txn(struct gen *g, int64_t rev, int64_t compacted, struct gen *inner)
{
	memset(&g->txn, 0, sizeof g->txn);
	size_t nc = rn(3), no = 1 + rn(4);
	for (size_t i = 0; i < nc; i++) {
		struct kv_compare *c = &g->cmps[i];
		memset(c, 0, sizeof *c);
		gen_span(&c->key, &c->key_len, &c->range_end, &c->range_end_len, g->prefix_end[i]);
		if (rn(2)) { /* mostly single keys */
			c->range_end = NULL;
			c->range_end_len = 0;
		}
		c->result = (enum kv_compare_result)rn(4);
		c->target = (enum kv_compare_target)rn(5);
		c->number = (int64_t)rn((unsigned)rev + 2);
		const char *v = VALS[rn(NVALS)];
		c->value = (const uint8_t *)v;
		c->value_len = strlen(v);
	}
	for (size_t i = 0; i < no; i++) {
		struct kv_op *o = &g->ops[i];
		memset(o, 0, sizeof *o);
		if (inner != NULL && rn(4) == 0) {
			gen_txn(inner, rev, compacted, NULL);
			o->type = KV_OP_TXN;
			o->u.txn = &inner->txn;
			inner = NULL; /* one nested Txn per Txn */
			continue;
		}
		switch (rn(3)) {
		case 0:
			o->type = KV_OP_RANGE;
			gen_range(&o->u.range, rev, compacted, g->prefix_end[3 + i]);
			break;
		case 1:
			o->type = KV_OP_PUT;
			gen_put(&o->u.put);
			break;
		default:
			o->type = KV_OP_DELETE;
			gen_delete(&o->u.del, g->prefix_end[3 + i]);
			break;
		}
	}
	size_t ns = rn((unsigned)no + 1);
	g->txn.compares = g->cmps;
	g->txn.n_compares = nc;
	g->txn.success = g->ops;
	g->txn.n_success = ns;
	g->txn.failure = g->ops + ns;
	g->txn.n_failure = no - ns;
}

/* etcd's checkIntervals, written again for the model: a key put twice on
 * one path, or put inside a delete's [key, range_end) taken as strings
 * ("\0" covers nothing); a nested Txn's then and else exclude each other. */
#define MAXSET 64
struct mset {
	const uint8_t *k[MAXSET], *e[MAXSET];
	size_t kl[MAXSET], el[MAXSET];
	size_t n;
};

static void mset_add(struct mset *s, const uint8_t *k, size_t kl, const uint8_t *e, size_t el)
{
	assert_true(s->n < MAXSET);
	s->k[s->n] = k;
	s->kl[s->n] = kl;
	s->e[s->n] = e;
	s->el[s->n++] = el;
}

static bool mset_has(const struct mset *s, const uint8_t *k, size_t kl)
{
	for (size_t i = 0; i < s->n; i++)
		if (bcmp_(s->k[i], s->kl[i], k, kl) == 0)
			return true;
	return false;
}

static bool mset_covers(const struct mset *d, const uint8_t *k, size_t kl)
{
	for (size_t i = 0; i < d->n; i++) {
		if (d->el[i] == 0 ? bcmp_(d->k[i], d->kl[i], k, kl) == 0 :
				    bcmp_(k, kl, d->k[i], d->kl[i]) >= 0 &&
					    bcmp_(k, kl, d->e[i], d->el[i]) < 0)
			return true;
	}
	return false;
}

static bool model_dup(const struct kv_op *ops, size_t n, struct mset *puts, struct mset *dels)
{
	for (size_t i = 0; i < n; i++)
		if (ops[i].type == KV_OP_DELETE)
			mset_add(dels, ops[i].u.del.key, ops[i].u.del.key_len,
				 ops[i].u.del.range_end, ops[i].u.del.range_end_len);
	for (size_t i = 0; i < n; i++) {
		if (ops[i].type != KV_OP_TXN)
			continue;
		const struct kv_txn_req *t = ops[i].u.txn;
		struct mset pt = { 0 }, dt = { 0 }, pe = { 0 }, de = { 0 };
		if (model_dup(t->success, t->n_success, &pt, &dt) ||
		    model_dup(t->failure, t->n_failure, &pe, &de))
			return true;
		for (size_t j = 0; j < pt.n; j++) {
			if (mset_has(puts, pt.k[j], pt.kl[j]) ||
			    mset_covers(dels, pt.k[j], pt.kl[j]))
				return true;
			mset_add(puts, pt.k[j], pt.kl[j], NULL, 0);
		}
		for (size_t j = 0; j < pe.n; j++) {
			if ((mset_has(puts, pe.k[j], pe.kl[j]) &&
			     !mset_has(&pt, pe.k[j], pe.kl[j])) ||
			    mset_covers(dels, pe.k[j], pe.kl[j]))
				return true;
			mset_add(puts, pe.k[j], pe.kl[j], NULL, 0);
		}
		for (size_t j = 0; j < dt.n; j++)
			mset_add(dels, dt.k[j], dt.kl[j], dt.e[j], dt.el[j]);
		for (size_t j = 0; j < de.n; j++)
			mset_add(dels, de.k[j], de.kl[j], de.e[j], de.el[j]);
	}
	for (size_t i = 0; i < n; i++) {
		if (ops[i].type != KV_OP_PUT)
			continue;
		const struct kv_put_req *p = &ops[i].u.put;
		if (mset_has(puts, p->key, p->key_len) || mset_covers(dels, p->key, p->key_len))
			return true;
		mset_add(puts, p->key, p->key_len, NULL, 0);
	}
	return false;
}

static bool model_txn_dup(const struct kv_txn_req *t)
{
	struct mset p1 = { 0 }, d1 = { 0 }, p2 = { 0 }, d2 = { 0 };
	return model_dup(t->success, t->n_success, &p1, &d1) ||
	       model_dup(t->failure, t->n_failure, &p2, &d2);
}

/* ---- events ---- */

/* The event of model record i, with the key's live kv before it. */
static void check_event(const struct model *m, size_t i, const struct kv_event *e, bool with_prev)
{
	const struct mrec *r = &m->r[i];
	assert_int_equal(e->type, r->tomb ? KV_EVENT_DELETE : KV_EVENT_PUT);
	struct mkv want = { r->key,     r->create, r->main,
			    r->version, r->lease,  r->tomb ? NULL : r->val };
	check_kv(&e->kv, &want);
	if (!with_prev) {
		assert_false(e->has_prev_kv);
		return;
	}
	const struct mrec *p = NULL;
	for (size_t j = i; j-- > 0;)
		if (m->r[j].main < r->main && m->r[j].key == r->key) {
			p = m->r[j].tomb ? NULL : &m->r[j];
			break;
		}
	assert_int_equal(e->has_prev_kv, p != NULL);
	if (p) {
		struct mkv pk = { p->key, p->create, p->main, p->version, p->lease, p->val };
		check_kv(&e->prev_kv, &pk);
	}
}

static void check_events_read(struct kv_store *s, const struct model *m)
{
	int64_t from = m->compacted + (int64_t)rn((unsigned)(m->rev - m->compacted + 2));
	size_t max = rn(4);
	bool with_prev = rn(2);
	struct kv_events ev;
	int64_t next;
	int err = kv_events_read(s, from, max, with_prev, &ev, &next);
	if (from < 1) {
		assert_int_equal(err, KV_EINVAL);
		return;
	}
	if (from <= m->compacted) {
		assert_int_equal(err, KV_ECOMPACTED);
		return;
	}
	assert_int_equal(err, 0);
	size_t i = 0, got = 0;
	while (i < m->n && m->r[i].main < from)
		i++;
	int64_t want_next = m->rev + 1 > from ? m->rev + 1 : from;
	for (; i < m->n; i++) {
		if (max && got >= max && m->r[i].main != m->r[i - 1].main) {
			want_next = m->r[i].main;
			break;
		}
		assert_true(got < ev.n);
		check_event(m, i, &ev.events[got++], with_prev);
	}
	assert_int_equal(got, ev.n);
	assert_int_equal(next, want_next);
	kv_events_free(&ev);
}

/* ---- the run ---- */
struct fixture {
	char dir[64];
	struct kv_store *s;
};

static void fx_open(struct fixture *f)
{
	struct kv_options o = { .no_sync = true };
	assert_int_equal(kv_open(f->dir, &o, &f->s), 0);
}

static void fx_remove(struct fixture *f)
{
	char p[128];
	kv_close(f->s);
	f->s = NULL;
	snprintf(p, sizeof p, "%s/data.mdb", f->dir);
	unlink(p);
	snprintf(p, sizeof p, "%s/lock.mdb", f->dir);
	unlink(p);
	assert_int_equal(rmdir(f->dir), 0);
}

static void check_random_range(struct fixture *f, const struct model *m)
{
	struct kv_range_req q;
	uint8_t pbuf[LONG_MAX_LEN];
	struct mres want;
	struct kv_range_resp got;
	gen_range(&q, m->rev, m->compacted, pbuf);
	model_range(m, &q, m->rev, m->rev, &want);
	int err = kv_range(f->s, &q, &got);
	assert_int_equal(err, want.err);
	if (err == 0)
		check_range(&got, &want);
	kv_range_resp_free(&got);
}

static void check_put(const struct kv_put_resp *got, const struct mput *want)
{
	assert_int_equal(got->has_prev_kv, want->has_prev);
	if (want->has_prev)
		check_kv(&got->prev_kv, &want->prev);
}

static void check_del(const struct kv_delete_resp *got, const struct mdel *want)
{
	assert_int_equal(got->deleted, want->deleted);
	assert_int_equal(got->n_prev_kvs, want->n_prev);
	for (size_t i = 0; i < want->n_prev; i++)
		check_kv(&got->prev_kvs[i], &want->prev[i]);
}

/* A Txn on the model: compares (nested ones too) at r->base, ops in order.
 * got: the store's answer to compare with, NULL when the store failed.
 * Returns the error the model expects. */
static int model_txn(struct mreq *r, const struct kv_txn_req *t, const struct kv_txn_resp *got)
{
	bool ok = true;
	for (size_t i = 0; i < t->n_compares && ok; i++)
		ok = model_compare(r->m, r->base, &t->compares[i]);
	const struct kv_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;
	int want_err = 0;
	if (got) {
		assert_int_equal(got->succeeded, ok);
		assert_int_equal(got->n_responses, n);
	}
	for (size_t i = 0; i < n && want_err == 0; i++) {
		if (got)
			assert_int_equal(got->responses[i].type, ops[i].type);
		if (ops[i].type == KV_OP_RANGE) {
			struct mres mr;
			model_range(r->m, &ops[i].u.range, mreq_view(r), r->base, &mr);
			want_err = mr.err;
			if (got && mr.err == 0) {
				mr.revision =
					0; /* every header is the Txn's: checked by the caller */
				struct kv_range_resp rr = got->responses[i].u.range;
				rr.revision = 0;
				check_range(&rr, &mr);
			}
		} else if (ops[i].type == KV_OP_PUT) {
			struct mput mp;
			model_put(r, &ops[i].u.put, &mp);
			want_err = mp.err;
			if (got && mp.err == 0)
				check_put(&got->responses[i].u.put, &mp);
		} else if (ops[i].type == KV_OP_DELETE) {
			struct mdel md;
			model_delete(r, &ops[i].u.del, &md);
			if (got)
				check_del(&got->responses[i].u.del, &md);
		} else {
			want_err = model_txn(r, ops[i].u.txn, got ? got->responses[i].u.txn : NULL);
		}
	}
	return want_err;
}

/* One request of a batch on both sides. */
static void step_request(struct kv_wtx *w, struct model *m)
{
	static struct gen g, inner;
	unsigned what = rn(12);
	if (what < 4) {
		struct kv_put_req q;
		struct kv_put_resp got;
		struct mput want;
		struct mreq r = { m, m->rev, m->rev + 1, 0 };
		gen_put(&q);
		model_put(&r, &q, &want);
		int err = kv_put(w, &q, &got);
		assert_int_equal(err, want.err);
		if (err == 0) {
			m->rev = r.main;
			assert_int_equal(got.revision, m->rev);
			check_put(&got, &want);
		}
		kv_put_resp_free(&got);
	} else if (what < 6) {
		struct kv_delete_req q;
		struct kv_delete_resp got;
		struct mdel want;
		uint8_t pbuf[LONG_MAX_LEN];
		struct mreq r = { m, m->rev, m->rev + 1, 0 };
		gen_delete(&q, pbuf);
		model_delete(&r, &q, &want);
		assert_int_equal(kv_delete_range(w, &q, &got), 0);
		if (r.sub)
			m->rev = r.main;
		assert_int_equal(got.revision, m->rev);
		check_del(&got, &want);
		kv_delete_resp_free(&got);
	} else if (what < 9) {
		struct kv_txn_resp got;
		gen_txn(&g, m->rev, m->compacted, &inner);
		int err = kv_txn(w, &g.txn, &got);
		if (model_txn_dup(&g.txn)) {
			assert_int_equal(err, KV_EDUPLICATEKEY);
			return;
		}
		struct model t;
		model_copy(&t, m);
		struct mreq r = { &t, m->rev, m->rev + 1, 0 };
		int want_err = model_txn(&r, &g.txn, err == 0 ? &got : NULL);
		assert_int_equal(err, want_err);
		if (err == 0) {
			free(m->r);
			*m = t;
			if (r.sub)
				m->rev = r.main;
			assert_int_equal(got.revision, m->rev);
		} else {
			free(t.r);
		}
		kv_txn_resp_free(&got);
	} else if (what == 10) {
		/* revoke: the lease's live keys go in one revision */
		int64_t id = 1 + rn(3), rev;
		int err = kv_lease_revoke(w, id, &rev);
		if (!m->granted[id]) {
			assert_int_equal(err, KV_ELEASENOTFOUND);
			return;
		}
		assert_int_equal(err, 0);
		struct mreq r = { m, m->rev, m->rev + 1, 0 };
		for (size_t i = 0; i < NU; i++) {
			const struct mrec *p = model_live(m, U[i], INT64_MAX);
			if (p && p->lease == id)
				model_append(m, (struct mrec){ U[i], r.main, r.sub++, 0, 0, 0, true,
							       "" });
		}
		if (r.sub)
			m->rev = r.main;
		assert_int_equal(rev, m->rev);
		m->granted[id] = false;
	} else if (what == 11) {
		int64_t id = 1 + rn(3);
		assert_int_equal(kv_lease_grant(w, id, 10), m->granted[id] ? KV_ELEASEEXIST : 0);
		m->granted[id] = true;
	} else {
		int64_t rev = m->compacted - 1 + (int64_t)rn((unsigned)(m->rev - m->compacted + 3));
		int want = rev <= m->compacted ? KV_ECOMPACTED : rev > m->rev ? KV_EFUTUREREV : 0;
		assert_int_equal(kv_compact(w, rev), want);
		if (want == 0)
			m->compacted = rev;
	}
}

static void run_seed(uint64_t seed, int steps)
{
	struct fixture f;
	struct model m = { 0 };
	uint64_t applied = 0;
	rng_state = seed;
	snprintf(f.dir, sizeof f.dir, "/tmp/mvcc-model-XXXXXX");
	assert_non_null(mkdtemp(f.dir));
	fx_open(&f);
	m.rev = 1;
	{
		struct kv_wtx *w;
		assert_int_equal(kv_txn_begin_write(f.s, &w), 0);
		for (int64_t id = 1; id <= 3; id++)
			assert_int_equal(kv_lease_grant(w, id, 60), 0);
		assert_int_equal(kv_txn_commit(w, ++applied), 0);
		m.granted[1] = m.granted[2] = m.granted[3] = true;
	}
	for (int i = 0; i < steps; i++) {
		unsigned what = rn(20);
		if (what < 6) {
			check_random_range(&f, &m);
		} else if (what < 8) {
			check_events_read(f.s, &m);
		} else if (what < 17) {
			struct kv_wtx *w;
			struct model saved;
			struct kv_events ev;
			model_copy(&saved, &m);
			assert_int_equal(kv_txn_begin_write(f.s, &w), 0);
			unsigned n = 1 + rn(4);
			for (unsigned j = 0; j < n; j++)
				step_request(w, &m);
			if (rn(10) == 0) {
				kv_txn_abort(w);
				free(m.r);
				m = saved;
			} else {
				assert_int_equal(kv_txn_commit_events(w, ++applied, &ev), 0);
				assert_int_equal(ev.n, m.n - saved.n);
				for (size_t j = saved.n; j < m.n; j++)
					check_event(&m, j, &ev.events[j - saved.n], true);
				kv_events_free(&ev);
				free(saved.r);
			}
		} else if (what < 19) {
			/* Physical compaction changes no answer and no hash. */
			struct kv_hash h1, h2;
			bool done;
			assert_int_equal(kv_hash_kv(f.s, 0, &h1), 0);
			assert_int_equal(kv_compact_step(f.s, 1 + rn(3), &done), 0);
			assert_int_equal(kv_hash_kv(f.s, 0, &h2), 0);
			assert_true(h1.hash == h2.hash);
			assert_int_equal(h2.revision, m.rev);
			assert_int_equal(h2.compacted, m.compacted);
		} else {
			kv_close(f.s);
			fx_open(&f);
		}
		struct kv_status st;
		assert_int_equal(kv_status(f.s, &st), 0);
		assert_int_equal(st.revision, m.rev);
		assert_int_equal(st.compacted, m.compacted);
		assert_int_equal(st.applied_index, applied);
	}
	/* Finish compaction; then every revision from compacted on agrees. */
	for (bool done = false; !done;)
		assert_int_equal(kv_compact_step(f.s, 2, &done), 0);
	for (int64_t rev = m.compacted; rev <= m.rev; rev++) {
		/* every key >= "a" */
		struct kv_range_req q = { .key = (const uint8_t *)"a",
					  .key_len = 1,
					  .range_end = (const uint8_t *)"",
					  .range_end_len = 1,
					  .revision = rev };
		struct mres want;
		struct kv_range_resp got;
		model_range(&m, &q, m.rev, m.rev, &want);
		assert_int_equal(kv_range(f.s, &q, &got), want.err);
		if (want.err == 0)
			check_range(&got, &want);
		kv_range_resp_free(&got);
	}
	free(m.r);
	fx_remove(&f);
}

static void test_mvcc_model_random(void **state)
{
	(void)state;
	const char *s = getenv("MVCC_SEED"), *n = getenv("MVCC_SEEDS");
	uint64_t first = s ? strtoull(s, NULL, 10) : 1;
	universe_init();
	unsigned seeds = n ? (unsigned)strtoul(n, NULL, 10) : 40;
	for (uint64_t seed = first; seed < first + seeds; seed++) {
		fprintf(stderr, "# seed %llu (replay: MVCC_SEED=%llu MVCC_SEEDS=1)\n",
			(unsigned long long)seed, (unsigned long long)seed);
		run_seed(seed, 400);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mvcc_model_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
