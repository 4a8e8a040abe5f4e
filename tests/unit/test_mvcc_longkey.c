/* test_mvcc_longkey.c: keys longer than LMDB's key size (up to KV_MAX_KEY,
 * 32,768 bytes) in every operation of the MVCC store: Range with its
 * options over groups of long keys that share their first 447 bytes (the
 * index orders such a group by hash; answers must come in key order), ranges
 * starting and ending inside a group, DeleteRange, Txn compares and ops,
 * leases (time-to-live with keys, revoke), events, compaction steps, HashKV,
 * snapshots, the on-disk layout of short and long keys, and the refusal of a
 * store written in the old layout. Expected answers come from a small model
 * of the current state kept beside the store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lmdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_mvcc.h"
#include "tmpdir.h"

/* The store's prefix length for long keys (kv_mvcc.h): restated here, as the
 * tests are about the lengths around it. */
#define P 447

#define B(s) ((const uint8_t *)(s))
#define S(s) B(s), strlen(s)

/* ---- the key universe ---------------------------------------------------- */

struct key {
	uint8_t *b;
	size_t n;
};

/* A key of len bytes: `fill` repeated, then tail. */
struct kspec {
	size_t len;
	char fill;
	const char *tail;
};

/* Most share their first P bytes ('p' x P): one group of long keys, some of
 * them prefixes of others, of lengths P + 1, 479 (the length of a long key's
 * index form), 495 (the old limit) and the limit, with short keys of P and
 * fewer bytes that are prefixes of them all. */
static const struct kspec SPECS[] = {
	{ 1, 'a', "" },           /* short, before everything */
	{ 500, 'o', "" },         /* a group of its own, before the 'p' ones */
	{ 446, 'p', "" },         /* short, a prefix of the group */
	{ P, 'p', "" },           /* exactly P: short, a prefix of every long one */
	{ P + 1, 'p', "a" },      /* P + 1 */
	{ P + 1, 'p', "z" },      /* P + 1 */
	{ 479, 'p', "" },         /* the length of a long key's index form */
	{ 495, 'p', "" },         /* the old limit */
	{ 480, 'p', "b" },        /* a tail after a run of 'p's */
	{ 480, 'p', "c" },        /* likewise */
	{ 600, 'p', "a" },        /* likewise */
	{ 600, 'p', "q" },        /* likewise */
	{ 1000, 'p', "m" },       /* likewise */
	{ 5000, 'p', "" },        /* a prefix of the next three */
	{ KV_MAX_KEY, 'p', "a" }, /* at the limit */
	{ KV_MAX_KEY, 'p', "x" }, /* at the limit */
	{ KV_MAX_KEY, 'p', "" },  /* at the limit */
	{ 547, 'p', "q" },        /* differs at byte 546: its own group, after */
	{ 301, 'p', "q" },        /* short, after both groups */
	{ 2, 'z', "" },           /* short, after everything */
};
#define NK (sizeof SPECS / sizeof SPECS[0])

static struct key K[NK]; /* sorted bytewise */

static int bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	size_t n = al < bl ? al : bl;
	int c = n ? memcmp(a, b, n) : 0;
	if (c != 0)
		return c < 0 ? -1 : 1;
	return al < bl ? -1 : (al > bl ? 1 : 0);
}

static int key_cmp(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	return bytes_cmp(x->b, x->n, y->b, y->n);
}

static struct key key_make(size_t len, char fill, const char *tail)
{
	struct key k = { malloc(len), len };
	size_t tl = strlen(tail);
	assert_non_null(k.b);
	assert_true(tl <= len);
	memset(k.b, fill, len - tl);
	memcpy(k.b + len - tl, tail, tl);
	return k;
}

static int universe_setup(void **state)
{
	(void)state;
	for (size_t i = 0; i < NK; i++)
		K[i] = key_make(SPECS[i].len, SPECS[i].fill, SPECS[i].tail);
	qsort(K, NK, sizeof K[0], key_cmp);
	for (size_t i = 1; i < NK; i++)
		assert_true(key_cmp(&K[i - 1], &K[i]) < 0);
	return 0;
}

static int universe_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < NK; i++)
		free(K[i].b);
	return 0;
}

/* ---- the model: each key's live state ------------------------------------ */

struct mst {
	bool live;
	int64_t create, mod, version, lease;
	char val[32];
};

struct model {
	struct mst k[NK];
	int64_t rev;
};

struct fx {
	char dir[64];
	struct kv_store *s;
	uint64_t applied;
	struct model m;
};

static void fx_reopen(struct fx *f)
{
	struct kv_options o = { .no_sync = true };
	kv_close(f->s);
	f->s = NULL;
	assert_int_equal(kv_open(f->dir, &o, &f->s), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "mvcc-longkey");
	fx_reopen(f);
	f->m.rev = 1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	kv_close(f->s);
	h_tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static struct kv_wtx *begin(struct fx *f)
{
	struct kv_wtx *w = NULL;
	assert_int_equal(kv_txn_begin_write(f->s, &w), 0);
	return w;
}

static void commit(struct fx *f, struct kv_wtx *w)
{
	assert_int_equal(kv_txn_commit(w, ++f->applied), 0);
}

static void check_kv(const struct kv_kv *kv, size_t i, const struct mst *m, bool keys_only)
{
	assert_int_equal(kv->key_len, K[i].n);
	assert_memory_equal(kv->key, K[i].b, K[i].n);
	assert_int_equal(kv->create_revision, m->create);
	assert_int_equal(kv->mod_revision, m->mod);
	assert_int_equal(kv->version, m->version);
	assert_int_equal(kv->lease, m->lease);
	if (keys_only) {
		assert_int_equal(kv->value_len, 0);
	} else {
		assert_int_equal(kv->value_len, strlen(m->val));
		assert_memory_equal(kv->value, m->val, kv->value_len);
	}
}

/* Puts K[i] in the open batch w at the model's next revision (one request). */
static void put_in(struct fx *f, struct kv_wtx *w, size_t i, int64_t lease)
{
	struct mst *m = &f->m.k[i];
	struct mst prev = *m;
	int64_t rev = f->m.rev + 1;
	char val[32];
	snprintf(val, sizeof val, "v%zu@%lld", i, (long long)rev);
	struct kv_put_req q = { .key = K[i].b,
				.key_len = K[i].n,
				.value = B(val),
				.value_len = strlen(val),
				.lease = lease,
				.prev_kv = true };
	struct kv_put_resp r;
	assert_int_equal(kv_put(w, &q, &r), 0);
	assert_int_equal(r.revision, rev);
	assert_int_equal(r.has_prev_kv, prev.live);
	if (prev.live)
		check_kv(&r.prev_kv, i, &prev, false);
	kv_put_resp_free(&r);
	m->create = prev.live ? prev.create : rev;
	m->version = prev.live ? prev.version + 1 : 1;
	m->mod = rev;
	m->lease = lease;
	m->live = true;
	snprintf(m->val, sizeof m->val, "%s", val);
	f->m.rev = rev;
}

static void put_k(struct fx *f, size_t i, int64_t lease)
{
	struct kv_wtx *w = begin(f);
	put_in(f, w, i, lease);
	commit(f, w);
}

/* Whether K[i] is in the span, etcd's way. */
static bool in_span(size_t i, const uint8_t *a, size_t al, const uint8_t *e, size_t el)
{
	int c = bytes_cmp(K[i].b, K[i].n, a, al);
	if (el == 0)
		return c == 0;
	if (c < 0)
		return false;
	return (el == 1 && e[0] == 0) || bytes_cmp(K[i].b, K[i].n, e, el) < 0;
}

/* DeleteRange of the span with prev_kv, in its own batch, against the model. */
static void del_span(struct fx *f, const uint8_t *a, size_t al, const uint8_t *e, size_t el)
{
	struct kv_wtx *w = begin(f);
	struct kv_delete_req q = {
		.key = a, .key_len = al, .range_end = e, .range_end_len = el, .prev_kv = true
	};
	struct kv_delete_resp r;
	assert_int_equal(kv_delete_range(w, &q, &r), 0);
	size_t n = 0;
	for (size_t i = 0; i < NK; i++) {
		if (!in_span(i, a, al, e, el) || !f->m.k[i].live)
			continue;
		assert_true(n < r.n_prev_kvs);
		check_kv(&r.prev_kvs[n++], i, &f->m.k[i], false);
		f->m.k[i].live = false;
	}
	assert_int_equal(r.deleted, (int64_t)n);
	assert_int_equal(r.n_prev_kvs, n);
	if (n)
		f->m.rev++;
	assert_int_equal(r.revision, f->m.rev);
	kv_delete_resp_free(&r);
	commit(f, w);
}

/* A Range of the span at rev (0: current) against the model state m:
 * plain, keys only, count only, with a limit, and by key descending. */
static void check_span(struct fx *f, const uint8_t *a, size_t al, const uint8_t *e, size_t el,
		       int64_t rev, const struct model *m)
{
	size_t want[NK], n = 0;
	for (size_t i = 0; i < NK; i++)
		if (in_span(i, a, al, e, el) && m->k[i].live)
			want[n++] = i;
	struct kv_range_req q = {
		.key = a, .key_len = al, .range_end = e, .range_end_len = el, .revision = rev
	};
	struct kv_range_resp r;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.count, (int64_t)n);
	assert_int_equal(r.n_kvs, n);
	assert_false(r.more);
	for (size_t j = 0; j < n; j++)
		check_kv(&r.kvs[j], want[j], &m->k[want[j]], false);
	kv_range_resp_free(&r);

	q.count_only = true;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.count, (int64_t)n);
	assert_int_equal(r.n_kvs, 0);
	kv_range_resp_free(&r);
	q.count_only = false;

	q.keys_only = true;
	q.limit = 2;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.count, (int64_t)n);
	assert_int_equal(r.n_kvs, n < 2 ? n : 2);
	assert_int_equal(r.more, n > 2);
	for (size_t j = 0; j < r.n_kvs; j++)
		check_kv(&r.kvs[j], want[j], &m->k[want[j]], true);
	kv_range_resp_free(&r);

	q.limit = 3;
	q.sort_order = KV_SORT_DESCEND;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, n < 3 ? n : 3);
	for (size_t j = 0; j < r.n_kvs; j++)
		check_kv(&r.kvs[j], want[n - 1 - j], &m->k[want[n - 1 - j]], true);
	kv_range_resp_free(&r);
}

/* A span bound: a key of the universe, one byte shorter, or one longer
 * (its "\0" successor: the first key after it). */
struct bound {
	uint8_t *b;
	size_t n;
	bool owned; /* b is this bound's own allocation */
};

static size_t bounds_make(struct bound *out)
{
	size_t n = 0;
	for (size_t i = 0; i < NK; i++) {
		out[n++] = (struct bound){ K[i].b, K[i].n, false };
		if (K[i].n > 1)
			out[n++] = (struct bound){ K[i].b, K[i].n - 1, false };
		uint8_t *succ = malloc(K[i].n + 1);
		assert_non_null(succ);
		memcpy(succ, K[i].b, K[i].n);
		succ[K[i].n] = 0;
		out[n++] = (struct bound){ succ, K[i].n + 1, true };
	}
	return n;
}

static void bounds_free(struct bound *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i].owned)
			free(b[i].b);
}

/* Every span over the bounds: single keys, "\0", and [a, e) for each pair
 * (start and end inside groups, before and after them). */
static void check_all_spans(struct fx *f, int64_t rev, const struct model *m)
{
	static struct bound b[3 * NK];
	size_t nb = bounds_make(b);
	for (size_t i = 0; i < nb; i++) {
		if (b[i].n > KV_MAX_KEY)
			continue; /* a start key past the limit: refused, tested apart */
		check_span(f, b[i].b, b[i].n, NULL, 0, rev, m);
		check_span(f, b[i].b, b[i].n, B(""), 1, rev, m);
		for (size_t j = 0; j < nb; j++)
			if (bytes_cmp(b[i].b, b[i].n, b[j].b, b[j].n) < 0)
				check_span(f, b[i].b, b[i].n, b[j].b, b[j].n, rev, m);
	}
	bounds_free(b, nb);
}

/* ---- tests ----------------------------------------------------------------- */

static void test_longkey_limits(void **state)
{
	struct fx *f = *state;
	uint8_t *big = malloc(KV_MAX_KEY + 1);
	assert_non_null(big);
	memset(big, 'k', KV_MAX_KEY + 1);
	struct kv_wtx *w = begin(f);
	struct kv_put_req q = { .key = big, .key_len = KV_MAX_KEY + 1, .value = S("v") };
	struct kv_put_resp pr;
	assert_int_equal(kv_put(w, &q, &pr), KV_ETOOBIG);
	struct kv_delete_req d = { .key = big, .key_len = KV_MAX_KEY + 1 };
	struct kv_delete_resp dr;
	assert_int_equal(kv_delete_range(w, &d, &dr), KV_ETOOBIG);
	struct kv_compare c = { .key = big, .key_len = KV_MAX_KEY + 1, .target = KV_CMP_VERSION };
	struct kv_txn_req t = { .compares = &c, .n_compares = 1 };
	struct kv_txn_resp tr;
	assert_int_equal(kv_txn(w, &t, &tr), KV_ETOOBIG);
	for (size_t len = P - 1; len <= P + 2; len++) {
		q.key_len = len;
		assert_int_equal(kv_put(w, &q, &pr), 0);
	}
	q.key_len = KV_MAX_KEY;
	assert_int_equal(kv_put(w, &q, &pr), 0);
	commit(f, w);
	struct kv_range_req g = { .key = big, .key_len = KV_MAX_KEY + 1 };
	struct kv_range_resp r;
	assert_int_equal(kv_range(f->s, &g, &r), KV_ETOOBIG);
	/* each length is its own key; a range end may be longer than a key */
	size_t lens[] = { P - 1, P, P + 1, P + 2, KV_MAX_KEY };
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		g = (struct kv_range_req){ .key = big, .key_len = lens[i] };
		assert_int_equal(kv_range(f->s, &g, &r), 0);
		assert_int_equal(r.n_kvs, 1);
		assert_int_equal(r.kvs[0].key_len, lens[i]);
		assert_memory_equal(r.kvs[0].key, big, lens[i]);
		assert_int_equal(r.kvs[0].mod_revision, (int64_t)(i + 2));
		kv_range_resp_free(&r);
	}
	g = (struct kv_range_req){
		.key = big, .key_len = 1, .range_end = big, .range_end_len = KV_MAX_KEY + 1
	};
	assert_int_equal(kv_range(f->s, &g, &r), 0);
	assert_int_equal(r.count, 5);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(r.kvs[i].key_len, lens[i]);
	kv_range_resp_free(&r);
	g.range_end_len = KV_MAX_KEY;
	assert_int_equal(kv_range(f->s, &g, &r), 0);
	assert_int_equal(r.count, 4);
	kv_range_resp_free(&r);
	fx_reopen(f);
	g.range_end = B("");
	g.range_end_len = 1;
	assert_int_equal(kv_range(f->s, &g, &r), 0);
	assert_int_equal(r.count, 5);
	kv_range_resp_free(&r);
	free(big);
}

static void test_longkey_ranges(void **state)
{
	struct fx *f = *state;
	/* in an order that is neither key nor hash order, some twice */
	for (size_t j = 0; j < NK; j++)
		put_k(f, (j * 7) % NK, 0);
	struct model at1 = f->m;
	int64_t rev1 = f->m.rev;
	for (size_t i = 0; i < NK; i += 3)
		put_k(f, i, 0);
	del_span(f, K[5].b, K[5].n, NULL, 0);
	del_span(f, K[9].b, K[9].n, K[11].b, K[11].n);
	check_all_spans(f, 0, &f->m);
	fx_reopen(f);
	check_all_spans(f, rev1, &at1);

	/* sort targets and filters over the group */
	struct kv_range_req q = { .key = S("p"),
				  .range_end = S("q"),
				  .sort_target = KV_SORT_MOD,
				  .sort_order = KV_SORT_DESCEND };
	struct kv_range_resp r;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_true(r.n_kvs > 10);
	for (size_t j = 1; j < r.n_kvs; j++)
		assert_true(r.kvs[j - 1].mod_revision > r.kvs[j].mod_revision);
	kv_range_resp_free(&r);
	q.sort_target = KV_SORT_CREATE;
	q.sort_order = KV_SORT_ASCEND;
	q.min_create_revision = 5;
	q.max_create_revision = 12;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	int64_t count = 0;
	for (size_t i = 0; i < NK; i++)
		count += f->m.k[i].live && in_span(i, B("p"), 1, B("q"), 1);
	assert_int_equal(r.count, count); /* the count is before the filters */
	assert_true(r.n_kvs > 0 && (int64_t)r.n_kvs < count);
	for (size_t j = 0; j < r.n_kvs; j++) {
		assert_true(r.kvs[j].create_revision >= 5 && r.kvs[j].create_revision <= 12);
		if (j > 0)
			assert_true(r.kvs[j - 1].create_revision < r.kvs[j].create_revision);
	}
	kv_range_resp_free(&r);
	q = (struct kv_range_req){
		.key = S("p"), .range_end = S("q"), .sort_target = KV_SORT_VALUE, .keys_only = true
	};
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	for (size_t j = 0; j < r.n_kvs; j++)
		assert_int_equal(r.kvs[j].value_len, 0);
	kv_range_resp_free(&r);
}

static void test_longkey_delete_and_recreate(void **state)
{
	struct fx *f = *state;
	for (size_t i = 0; i < NK; i++)
		put_k(f, i, 0);
	/* start and end inside the 'p' group: from P+1 bytes to the limit */
	uint8_t *a = malloc(P + 1), *e = malloc(KV_MAX_KEY);
	assert_non_null(a);
	assert_non_null(e);
	memset(a, 'p', P + 1);
	memset(e, 'p', KV_MAX_KEY);
	del_span(f, a, P + 1, e, KV_MAX_KEY);
	check_all_spans(f, 0, &f->m);
	/* the deleted keys come back as new generations */
	for (size_t i = 0; i < NK; i++)
		if (!f->m.k[i].live)
			put_k(f, i, 0);
	for (size_t i = 0; i < NK; i++)
		assert_true(f->m.k[i].live);
	check_span(f, B("p"), 1, B("q"), 1, 0, &f->m);
	del_span(f, B("p"), 1, B(""), 1);
	check_all_spans(f, 0, &f->m);
	free(a);
	free(e);
}

static bool txn_cmp(struct fx *f, struct kv_compare c)
{
	struct kv_txn_req t = { .compares = &c, .n_compares = 1 };
	struct kv_txn_resp r;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_txn(w, &t, &r), 0);
	bool ok = r.succeeded;
	kv_txn_resp_free(&r);
	kv_txn_abort(w);
	return ok;
}

static void test_longkey_txn(void **state)
{
	struct fx *f = *state;
	for (size_t i = 0; i < NK; i++)
		put_k(f, i, 0);
	/* K[0] "a" and K[NK-1] "zz" are short: [K[1], K[NK-1]) spans every
	 * group. All at version 1; then one long key of the group at 2. */
	struct kv_compare c = { .key = K[1].b,
				.key_len = K[1].n,
				.range_end = K[NK - 1].b,
				.range_end_len = K[NK - 1].n,
				.target = KV_CMP_VERSION,
				.result = KV_CMP_EQUAL,
				.number = 1 };
	assert_true(txn_cmp(f, c));
	size_t bump = 0;
	for (size_t i = 0; i < NK; i++)
		if (K[i].n == KV_MAX_KEY && K[i].b[KV_MAX_KEY - 1] == 'x')
			bump = i;
	assert_true(bump > 0);
	put_k(f, bump, 0);
	assert_false(txn_cmp(f, c));
	c.range_end = K[bump].b; /* ends just before it */
	c.range_end_len = K[bump].n;
	assert_true(txn_cmp(f, c));
	/* start and end both inside the group: 'p' x 5000 up to a key past
	 * the bumped one, then up to the bumped one */
	struct key g_start = key_make(5000, 'p', ""), g_end = key_make(KV_MAX_KEY, 'p', "y");
	c.key = g_start.b;
	c.key_len = g_start.n;
	c.range_end = g_end.b;
	c.range_end_len = g_end.n;
	assert_false(txn_cmp(f, c));
	c.result = KV_CMP_LESS; /* the bumped key is not below 2 */
	c.number = 2;
	assert_false(txn_cmp(f, c));
	c.result = KV_CMP_EQUAL;
	c.number = 1;
	c.range_end = K[bump].b;
	c.range_end_len = K[bump].n;
	assert_true(txn_cmp(f, c));
	free(g_start.b);
	free(g_end.b);
	c.key = K[bump].b; /* a single long key */
	c.key_len = K[bump].n;
	c.range_end_len = 0;
	c.number = 2;
	assert_true(txn_cmp(f, c));
	c.target = KV_CMP_VALUE;
	c.value = B(f->m.k[bump].val);
	c.value_len = strlen(f->m.k[bump].val);
	assert_true(txn_cmp(f, c));
	/* a key of the group that was never written: zero key-value */
	struct key absent = key_make(KV_MAX_KEY, 'p', "b");
	c = (struct kv_compare){ .key = absent.b,
				 .key_len = absent.n,
				 .target = KV_CMP_CREATE,
				 .result = KV_CMP_EQUAL };
	assert_true(txn_cmp(f, c));

	/* ops: a long key Put twice, or Put inside a delete, is a duplicate */
	struct kv_op ops[3] = {
		{ .type = KV_OP_PUT, .u.put = { .key = K[bump].b, .key_len = K[bump].n } },
		{ .type = KV_OP_PUT, .u.put = { .key = K[bump].b, .key_len = K[bump].n } },
	};
	struct kv_txn_req t = { .success = ops, .n_success = 2 };
	struct kv_txn_resp tr;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_txn(w, &t, &tr), KV_EDUPLICATEKEY);
	ops[1] = (struct kv_op){ .type = KV_OP_DELETE,
				 .u.del = { .key = S("p"), .range_end = S("q") } };
	assert_int_equal(kv_txn(w, &t, &tr), KV_EDUPLICATEKEY);
	/* Put of a new long key, delete of the group's others, a Range that
	 * sees both, in one revision */
	ops[0] = (struct kv_op){ .type = KV_OP_DELETE,
				 .u.del = { .key = K[bump].b,
					    .key_len = K[bump].n,
					    .range_end = B(""),
					    .range_end_len = 1,
					    .prev_kv = true } };
	ops[1] = (struct kv_op){
		.type = KV_OP_PUT,
		.u.put = { .key = absent.b, .key_len = absent.n, .value = S("new") }
	};
	ops[2] = (struct kv_op){ .type = KV_OP_RANGE,
				 .u.range = { .key = S("p"), .range_end = S("q") } };
	t.n_success = 3;
	assert_int_equal(kv_txn(w, &t, &tr), 0);
	int64_t rev = f->m.rev + 1;
	assert_int_equal(tr.revision, rev);
	assert_true(tr.succeeded);
	size_t ndel = 0;
	for (size_t i = bump; i < NK; i++)
		if (f->m.k[i].live) {
			check_kv(&tr.responses[0].u.del.prev_kvs[ndel++], i, &f->m.k[i], false);
			f->m.k[i].live = false;
		}
	assert_int_equal(tr.responses[0].u.del.deleted, (int64_t)ndel);
	struct kv_range_resp *rr = &tr.responses[2].u.range;
	size_t seen = 0, j = 0;
	for (size_t i = 0; i < NK; i++) {
		if (!f->m.k[i].live || !in_span(i, B("p"), 1, B("q"), 1))
			continue;
		if (bytes_cmp(absent.b, absent.n, K[i].b, K[i].n) < 0 && !seen) {
			assert_memory_equal(rr->kvs[j].key, absent.b, absent.n);
			assert_int_equal(rr->kvs[j].mod_revision, rev);
			j++;
			seen = 1;
		}
		check_kv(&rr->kvs[j++], i, &f->m.k[i], false);
	}
	if (!seen) {
		assert_memory_equal(rr->kvs[j].key, absent.b, absent.n);
		j++;
	}
	assert_int_equal(rr->n_kvs, j);
	kv_txn_resp_free(&tr);
	commit(f, w);
	f->m.rev = rev;
	struct kv_range_req q = { .key = absent.b, .key_len = absent.n };
	struct kv_range_resp r;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 1);
	assert_int_equal(r.kvs[0].create_revision, rev);
	assert_memory_equal(r.kvs[0].value, "new", 3);
	kv_range_resp_free(&r);
	free(absent.b);
}

static void test_longkey_leases(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_lease_grant(w, 7, 30), 0);
	assert_int_equal(kv_lease_grant(w, 8, 30), 0);
	commit(f, w);
	for (size_t j = 0; j < NK; j++)
		put_k(f, (j * 3) % NK, j % 4 == 3 ? 0 : 7);
	/* one long key moves to lease 8, one leaves its lease, one is deleted */
	size_t moved = 0, left = 0, gone = 0;
	for (size_t i = 0; i < NK; i++) {
		if (f->m.k[i].lease != 7 || K[i].n <= P)
			continue;
		if (!moved)
			moved = i;
		else if (!left)
			left = i;
		else if (!gone)
			gone = i;
	}
	assert_true(gone > 0);
	put_k(f, moved, 8);
	put_k(f, left, 0);
	del_span(f, K[gone].b, K[gone].n, NULL, 0);
	fx_reopen(f);
	struct kv_lease_info info;
	assert_int_equal(kv_lease_time_to_live(f->s, 7, true, &info), 0);
	size_t n = 0;
	for (size_t i = 0; i < NK; i++) {
		if (!f->m.k[i].live || f->m.k[i].lease != 7)
			continue;
		assert_true(n < info.n_keys);
		assert_int_equal(info.key_lens[n], K[i].n);
		assert_memory_equal(info.keys[n], K[i].b, K[i].n); /* key order */
		n++;
	}
	assert_true(n > 5);
	assert_int_equal(info.n_keys, n);
	kv_lease_info_free(&info);
	assert_int_equal(kv_lease_time_to_live(f->s, 8, true, &info), 0);
	assert_int_equal(info.n_keys, 1);
	assert_int_equal(info.key_lens[0], K[moved].n);
	assert_memory_equal(info.keys[0], K[moved].b, K[moved].n);
	kv_lease_info_free(&info);

	/* revoke: every key in one revision, deleted in key order */
	w = begin(f);
	int64_t rev;
	assert_int_equal(kv_lease_revoke(w, 7, &rev), 0);
	assert_int_equal(rev, f->m.rev + 1);
	struct kv_events ev;
	assert_int_equal(kv_txn_commit_events(w, ++f->applied, &ev), 0);
	f->m.rev = rev;
	size_t e = 0;
	for (size_t i = 0; i < NK; i++) {
		if (!f->m.k[i].live || f->m.k[i].lease != 7)
			continue;
		assert_true(e < ev.n);
		assert_int_equal(ev.events[e].type, KV_EVENT_DELETE);
		assert_int_equal(ev.events[e].kv.key_len, K[i].n);
		assert_memory_equal(ev.events[e].kv.key, K[i].b, K[i].n);
		assert_true(ev.events[e].has_prev_kv);
		check_kv(&ev.events[e].prev_kv, i, &f->m.k[i], false);
		f->m.k[i].live = false;
		e++;
	}
	assert_int_equal(ev.n, e);
	kv_events_free(&ev);
	check_all_spans(f, 0, &f->m);
	w = begin(f);
	assert_int_equal(kv_lease_revoke(w, 8, &rev), 0);
	commit(f, w);
	f->m.k[moved].live = false;
	f->m.rev = rev;
	check_span(f, B(""), 1, B(""), 1, 0, &f->m);
}

static void test_longkey_events(void **state)
{
	struct fx *f = *state;
	int64_t from = f->m.rev + 1;
	/* a batch: each key once, then a second revision of each long key */
	struct kv_wtx *w = begin(f);
	for (size_t i = 0; i < NK; i++)
		put_in(f, w, i, 0);
	struct model first = f->m;
	for (size_t i = 0; i < NK; i++)
		if (K[i].n > P)
			put_in(f, w, i, 0);
	struct kv_events ev;
	assert_int_equal(kv_txn_commit_events(w, ++f->applied, &ev), 0);
	size_t nlong = 0;
	for (size_t i = 0; i < NK; i++)
		nlong += K[i].n > P;
	assert_int_equal(ev.n, NK + nlong);
	struct kv_events rd;
	int64_t next;
	assert_int_equal(kv_events_read(f->s, from, 0, true, &rd, &next), 0);
	assert_int_equal(next, f->m.rev + 1);
	assert_int_equal(rd.n, ev.n);
	for (size_t j = 0; j < ev.n; j++) {
		const struct kv_event *a = &ev.events[j], *b = &rd.events[j];
		size_t i = j < NK ? j : 0;
		if (j >= NK) { /* the j-NK-th long key */
			size_t c = 0;
			for (i = 0; i < NK; i++)
				if (K[i].n > P && c++ == j - NK)
					break;
		}
		assert_int_equal(a->type, KV_EVENT_PUT);
		assert_int_equal(a->kv.key_len, K[i].n);
		assert_memory_equal(a->kv.key, K[i].b, K[i].n);
		assert_int_equal(b->kv.key_len, K[i].n);
		assert_memory_equal(b->kv.key, K[i].b, K[i].n);
		assert_int_equal(a->kv.mod_revision, b->kv.mod_revision);
		assert_int_equal(a->has_prev_kv, j >= NK);
		assert_int_equal(b->has_prev_kv, j >= NK);
		if (j >= NK) {
			check_kv(&a->prev_kv, i, &first.k[i], false);
			check_kv(&b->prev_kv, i, &first.k[i], false);
		}
	}
	kv_events_free(&ev);
	kv_events_free(&rd);
	/* a delete of the group: DELETE events with the full keys */
	from = f->m.rev + 1;
	del_span(f, B("p"), 1, B("q"), 1);
	assert_int_equal(kv_events_read(f->s, from, 1, false, &rd, &next), 0);
	assert_int_equal(next, from + 1);
	size_t j = 0;
	for (size_t i = 0; i < NK; i++) {
		if (!in_span(i, B("p"), 1, B("q"), 1))
			continue;
		assert_int_equal(rd.events[j].type, KV_EVENT_DELETE);
		assert_int_equal(rd.events[j].kv.key_len, K[i].n);
		assert_memory_equal(rd.events[j].kv.key, K[i].b, K[i].n);
		j++;
	}
	assert_int_equal(rd.n, j);
	kv_events_free(&rd);
}

static void test_longkey_compact_hash_snapshot(void **state)
{
	struct fx *f = *state;
	for (int round = 0; round < 3; round++)
		for (size_t j = 0; j < NK; j++)
			put_k(f, (j * 7 + (size_t)round) % NK, 0);
	del_span(f, K[6].b, K[6].n, K[9].b, K[9].n);
	struct model at = f->m;
	int64_t crev = f->m.rev;
	for (size_t i = 0; i < NK; i += 2)
		put_k(f, i, 0);
	del_span(f, K[12].b, K[12].n, NULL, 0);
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_compact(w, crev), 0);
	commit(f, w);
	struct kv_hash h0, h;
	assert_int_equal(kv_hash_kv(f->s, 0, &h0), 0);
	/* one key per step: compact_next passes through every group */
	bool done = false;
	int steps = 0;
	while (!done) {
		assert_int_equal(kv_compact_step(f->s, 1, &done), 0);
		assert_int_equal(kv_hash_kv(f->s, 0, &h), 0);
		assert_true(h.hash == h0.hash);
		if (++steps % 5 == 0)
			fx_reopen(f); /* resumes from compact_next */
	}
	assert_true(steps >= (int)NK);
	check_all_spans(f, crev, &at);
	check_all_spans(f, 0, &f->m);
	struct kv_range_req q = { .key = S("a"), .revision = crev - 1 };
	struct kv_range_resp r;
	assert_int_equal(kv_range(f->s, &q, &r), KV_ECOMPACTED);

	char file[64];
	snprintf(file, sizeof file, "/tmp/mvcc-longkey-snap-XXXXXX");
	int fd = mkstemp(file);
	assert_true(fd >= 0);
	assert_int_equal(kv_snapshot_copy_fd(f->s, fd), 0);
	close(fd);
	struct fx *g = calloc(1, sizeof *g);
	assert_non_null(g);
	/* beside the copy in /tmp: the install renames it into the directory */
	snprintf(g->dir, sizeof g->dir, "/tmp/mvcc-longkey-XXXXXX");
	assert_non_null(mkdtemp(g->dir));
	fx_reopen(g);
	assert_int_equal(kv_snapshot_install(g->s, file), 0);
	assert_int_equal(kv_hash_kv(g->s, 0, &h), 0);
	assert_true(h.hash == h0.hash);
	kv_close(f->s);
	f->s = g->s; /* the checks run on the installed copy */
	check_all_spans(f, 0, &f->m);
	f->s = NULL;
	fx_reopen(f);
	kv_close(g->s);
	h_tmpdir_remove(g->dir);
	free(g);
}

/* ---- the layout on disk ------------------------------------------------------- */

static void env_open_raw(const char *dir, MDB_env **env, MDB_txn **txn, unsigned txn_flags)
{
	assert_int_equal(mdb_env_create(env), 0);
	assert_int_equal(mdb_env_set_maxdbs(*env, 8), 0);
	assert_int_equal(mdb_env_open(*env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(*env, NULL, txn_flags, txn), 0);
}

/* The "key" index entry at (main, sub) must be ikey ‖ BE64 main ‖ BE64 sub. */
static bool has_entry(MDB_txn *txn, MDB_dbi dbi, const uint8_t *want, size_t want_len)
{
	MDB_cursor *c;
	MDB_val k, v;
	bool found = false;
	assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
	for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !found;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
		found = k.mv_size == want_len && memcmp(k.mv_data, want, want_len) == 0;
	mdb_cursor_close(c);
	return found;
}

static void test_longkey_layout_on_disk(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_lease_grant(w, 5, 10), 0);
	commit(f, w);
	struct key sk = key_make(P, 's', ""), lk = key_make(5000, 's', "t");
	struct kv_put_req q = { .key = sk.b, .key_len = sk.n, .value = S("v"), .lease = 5 };
	struct kv_put_resp pr;
	w = begin(f);
	assert_int_equal(kv_put(w, &q, &pr), 0); /* revision 2 */
	q.key = lk.b;
	q.key_len = lk.n;
	assert_int_equal(kv_put(w, &q, &pr), 0); /* revision 3 */
	commit(f, w);
	kv_close(f->s); /* LMDB: one environment per file per process */
	f->s = NULL;

	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi key_db, lk_db, meta_db;
	env_open_raw(f->dir, &env, &txn, MDB_RDONLY);
	assert_int_equal(mdb_dbi_open(txn, "key", 0, &key_db), 0);
	assert_int_equal(mdb_dbi_open(txn, "lease_key", 0, &lk_db), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta_db), 0);
	static uint8_t want[8 + P + 32 + 16];
	/* a key of P bytes: as it always was, key ‖ revision */
	memcpy(want, sk.b, P);
	memset(want + P, 0, 16);
	want[P + 7] = 2;
	assert_true(has_entry(txn, key_db, want, P + 16));
	/* a longer key: first P bytes ‖ SHA-256 ‖ revision */
	unsigned hl = 0;
	memcpy(want, lk.b, P);
	assert_int_equal(EVP_Digest(lk.b, lk.n, want + P, &hl, EVP_sha256(), NULL), 1);
	assert_int_equal(hl, 32);
	memset(want + P + 32, 0, 16);
	want[P + 32 + 7] = 3;
	assert_true(has_entry(txn, key_db, want, P + 32 + 16));
	/* lease_key: id ‖ index form; the long key's value is the key */
	memset(want, 0, 8);
	want[7] = 5;
	memcpy(want + 8, sk.b, P);
	assert_true(has_entry(txn, lk_db, want, 8 + P));
	memcpy(want + 8, lk.b, P);
	EVP_Digest(lk.b, lk.n, want + 8 + P, &hl, EVP_sha256(), NULL);
	MDB_val k = { 8 + P + 32, want }, v;
	assert_int_equal(mdb_get(txn, lk_db, &k, &v), 0);
	assert_int_equal(v.mv_size, lk.n);
	assert_memory_equal(v.mv_data, lk.b, lk.n);
	MDB_val mk = { strlen("key_layout"), (void *)"key_layout" };
	assert_int_equal(mdb_get(txn, meta_db, &mk, &v), 0);
	assert_int_equal(v.mv_size, 8);
	assert_int_equal(((const uint8_t *)v.mv_data)[7], 1);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	fx_reopen(f);
	free(sk.b);
	free(lk.b);
}

/* Writes a store of the old layout (no key_layout) in a fresh f->dir: one
 * index entry of a 100-byte key, and one of a 470-byte key (stored whole, as
 * the old layout did) when old_long. */
static void old_store(struct fx *f, bool old_long)
{
	static uint8_t entry[470 + 16];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi key_db;
	uint8_t flags = 0;
	MDB_val k = { 100 + 16, entry }, v = { 1, &flags };
	kv_close(f->s);
	f->s = NULL;
	h_tmpdir_remove(f->dir);
	h_tmpdir_make(f->dir, sizeof f->dir, "mvcc-longkey");
	env_open_raw(f->dir, &env, &txn, 0);
	assert_int_equal(mdb_dbi_open(txn, "key", MDB_CREATE, &key_db), 0);
	memset(entry, 'o', sizeof entry);
	memset(entry + 100, 0, 16);
	assert_int_equal(mdb_put(txn, key_db, &k, &v, 0), 0);
	if (old_long) {
		memset(entry + 470, 0, 16);
		k.mv_size = 470 + 16;
		assert_int_equal(mdb_put(txn, key_db, &k, &v, 0), 0);
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* An old store is opened and marked when its index has no entry past
 * P + 16 bytes, refused when it holds a key of 448..495 bytes. */
static void test_longkey_old_layout(void **state)
{
	struct fx *f = *state;
	struct kv_options o = { .no_sync = true };
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta_db;
	MDB_val mk = { strlen("key_layout"), (void *)"key_layout" }, v;
	old_store(f, false);
	assert_int_equal(kv_open(f->dir, &o, &f->s), 0);
	kv_close(f->s);
	f->s = NULL;
	env_open_raw(f->dir, &env, &txn, MDB_RDONLY);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta_db), 0);
	assert_int_equal(mdb_get(txn, meta_db, &mk, &v), 0);
	assert_int_equal(v.mv_size, 8);
	assert_int_equal(((const uint8_t *)v.mv_data)[7], 1);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	fx_reopen(f); /* marked: opens again */

	old_store(f, true);
	assert_int_equal(kv_open(f->dir, &o, &f->s), KV_EINVAL);
	assert_null(f->s);
	old_store(f, false); /* a fresh store for the teardown */
	fx_reopen(f);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_longkey_limits),
		T(test_longkey_ranges),
		T(test_longkey_delete_and_recreate),
		T(test_longkey_txn),
		T(test_longkey_leases),
		T(test_longkey_events),
		T(test_longkey_compact_hash_snapshot),
		T(test_longkey_layout_on_disk),
		T(test_longkey_old_layout),
	};
	return cmocka_run_group_tests(tests, universe_setup, universe_teardown);
}
