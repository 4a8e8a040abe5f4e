/* test_mvcc.c: the MVCC store rule by rule: revisions and generations, each
 * Range option, Put and DeleteRange options, each Txn compare and etcd's
 * duplicate-key rule, compaction boundaries and physical compaction, HashKV,
 * error strings, the applied index committed with its batch. */
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
#include "tmpdir.h"

#define B(s) ((const uint8_t *)(s))
#define S(s) B(s), strlen(s)

struct fx {
	char dir[64];
	struct kv_store *s;
	uint64_t applied;
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
	h_tmpdir_make(f->dir, sizeof f->dir, "mvcc-unit");
	fx_reopen(f);
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

/* Put in a batch of its own; returns the revision. */
static int64_t put_lease(struct fx *f, const char *k, const char *v, int64_t lease)
{
	struct kv_wtx *w = begin(f);
	struct kv_put_req q = { .key = B(k),
				.key_len = strlen(k),
				.value = B(v),
				.value_len = strlen(v),
				.lease = lease };
	struct kv_put_resp r;
	assert_int_equal(kv_put(w, &q, &r), 0);
	int64_t rev = r.revision;
	kv_put_resp_free(&r);
	commit(f, w);
	return rev;
}

static void grant(struct fx *f, int64_t id, int64_t ttl)
{
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_lease_grant(w, id, ttl), 0);
	commit(f, w);
}

static int64_t put(struct fx *f, const char *k, const char *v)
{
	return put_lease(f, k, v, 0);
}

static int64_t del(struct fx *f, const char *k, const char *end, int64_t *deleted)
{
	struct kv_wtx *w = begin(f);
	struct kv_delete_req q = { .key = B(k), .key_len = strlen(k) };
	if (end) {
		q.range_end = B(end);
		q.range_end_len = end[0] ? strlen(end) : 1;
	}
	struct kv_delete_resp r;
	assert_int_equal(kv_delete_range(w, &q, &r), 0);
	if (deleted)
		*deleted = r.deleted;
	int64_t rev = r.revision;
	kv_delete_resp_free(&r);
	commit(f, w);
	return rev;
}

static int64_t cur_rev(struct fx *f)
{
	struct kv_status st;
	assert_int_equal(kv_status(f->s, &st), 0);
	return st.revision;
}

/* Keys of a range response joined by ','; values too when with_values. */
static void joined(const struct kv_range_resp *r, bool with_values, char *out, size_t cap)
{
	size_t o = 0;
	out[0] = 0;
	for (size_t i = 0; i < r->n_kvs; i++) {
		o += (size_t)snprintf(out + o, cap - o, "%s%.*s", i ? "," : "",
				      (int)r->kvs[i].key_len, (const char *)r->kvs[i].key);
		if (with_values)
			o += (size_t)snprintf(out + o, cap - o, "=%.*s", (int)r->kvs[i].value_len,
					      r->kvs[i].value ? (const char *)r->kvs[i].value : "");
	}
}

/* Range, expecting success; the joined keys into out. */
static void range_keys(struct fx *f, const struct kv_range_req *q, char *out, size_t cap,
		       struct kv_range_resp *keep)
{
	struct kv_range_resp r;
	assert_int_equal(kv_range(f->s, q, &r), 0);
	joined(&r, false, out, cap);
	if (keep)
		*keep = r;
	else
		kv_range_resp_free(&r);
}

static void test_mvcc_error_strings(void **state)
{
	(void)state;
	assert_string_equal(kv_strerror(KV_ECOMPACTED),
			    "etcdserver: mvcc: required revision has been compacted");
	assert_string_equal(kv_strerror(KV_EFUTUREREV),
			    "etcdserver: mvcc: required revision is a future revision");
	assert_string_equal(kv_strerror(KV_ENOSPACE), "etcdserver: mvcc: database space exceeded");
	assert_string_equal(kv_strerror(KV_EDUPLICATEKEY),
			    "etcdserver: duplicate key given in txn request");
	assert_string_equal(kv_strerror(KV_ETOOMANYOPS),
			    "etcdserver: too many operations in txn request");
	assert_string_equal(kv_strerror(KV_EKEYNOTFOUND), "etcdserver: key not found");
	assert_string_equal(kv_strerror(KV_EVALUEPROVIDED), "etcdserver: value is provided");
	assert_string_equal(kv_strerror(KV_ELEASEPROVIDED), "etcdserver: lease is provided");
	assert_string_equal(kv_strerror(KV_EEMPTYKEY), "etcdserver: key is not provided");
}

static void test_mvcc_revisions_and_generations(void **state)
{
	struct fx *f = *state;
	struct kv_range_resp r;
	assert_int_equal(cur_rev(f), 1); /* an empty etcd is at revision 1 */
	assert_int_equal(put(f, "k", "v1"), 2);
	assert_int_equal(put(f, "k", "v2"), 3);
	struct kv_range_req q = { .key = S("k") };
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 1);
	assert_int_equal(r.kvs[0].create_revision, 2);
	assert_int_equal(r.kvs[0].mod_revision, 3);
	assert_int_equal(r.kvs[0].version, 2);
	assert_memory_equal(r.kvs[0].value, "v2", 2);
	assert_int_equal(r.revision, 3);
	kv_range_resp_free(&r);
	int64_t n;
	assert_int_equal(del(f, "k", NULL, &n), 4);
	assert_int_equal(n, 1);
	/* deleting nothing takes no revision */
	assert_int_equal(del(f, "k", NULL, &n), 4);
	assert_int_equal(n, 0);
	assert_int_equal(put(f, "k", "v3"), 5); /* a new generation */
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.kvs[0].create_revision, 5);
	assert_int_equal(r.kvs[0].version, 1);
	kv_range_resp_free(&r);
	/* history */
	q.revision = 2;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 1);
	assert_memory_equal(r.kvs[0].value, "v1", 2);
	assert_int_equal(r.revision, 5); /* the header is the current revision */
	kv_range_resp_free(&r);
	q.revision = 4;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 0);
	assert_int_equal(r.count, 0);
	kv_range_resp_free(&r);
	q.revision = 6;
	assert_int_equal(kv_range(f->s, &q, &r), KV_EFUTUREREV);
	q.revision = 1;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 0);
	q = (struct kv_range_req){ .key = B(""), .key_len = 0 };
	assert_int_equal(kv_range(f->s, &q, &r), KV_EEMPTYKEY);
}

static void test_mvcc_batch_revisions_and_applied_index(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w = begin(f);
	struct kv_put_req a = { .key = S("a"), .value = S("1") },
			  b = { .key = S("b"), .value = S("2") };
	struct kv_put_resp r;
	assert_int_equal(kv_put(w, &a, &r), 0);
	assert_int_equal(r.revision, 2);
	assert_int_equal(kv_put(w, &b, &r), 0);
	assert_int_equal(r.revision, 3);
	/* a failing request leaves nothing and the batch goes on */
	struct kv_put_req bad = { .key = S("nokey"), .ignore_value = true };
	assert_int_equal(kv_put(w, &bad, &r), KV_EKEYNOTFOUND);
	assert_int_equal(kv_set_ids(w, 0xfedcba9876543210ull, 7), 0);
	assert_int_equal(kv_txn_commit(w, 42), 0);
	struct kv_status st;
	assert_int_equal(kv_status(f->s, &st), 0);
	assert_int_equal(st.revision, 3);
	assert_int_equal(st.applied_index, 42);
	/* an aborted batch leaves neither changes nor index */
	w = begin(f);
	assert_int_equal(kv_put(w, &a, &r), 0);
	kv_txn_abort(w);
	fx_reopen(f);
	assert_int_equal(kv_status(f->s, &st), 0);
	assert_int_equal(st.revision, 3);
	assert_int_equal(st.applied_index, 42);
	assert_true(st.cluster_id == 0xfedcba9876543210ull);
	assert_true(st.member_id == 7);
	/* one write transaction at a time */
	w = begin(f);
	struct kv_wtx *w2;
	assert_int_equal(kv_txn_begin_write(f->s, &w2), KV_EINVAL);
	kv_txn_abort(w);
}

static void fill_abc(struct fx *f)
{
	put(f, "a", "3");  /* 2 */
	put(f, "ab", "1"); /* 3 */
	put(f, "b", "2");  /* 4 */
	put(f, "a", "0");  /* 5: a version 2 */
	put(f, "c", "5");  /* 6 */
	put(f, "c", "4");  /* 7 */
	put(f, "c", "9");  /* 8: c version 3 */
}

static void test_mvcc_range_spans(void **state)
{
	struct fx *f = *state;
	char out[128];
	fill_abc(f);
	struct kv_range_req q = { .key = S("a"), .range_end = S("b") };
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "a,ab");
	q.range_end = B("");
	q.range_end_len = 1; /* "\0": every key >= key */
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "a,ab,b,c");
	q.key = B("");
	q.key_len = 1; /* "\0" to "\0": all keys */
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "a,ab,b,c");
	q = (struct kv_range_req){ .key = S("c"), .range_end = S("b") }; /* empty interval */
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "");
	q = (struct kv_range_req){ .key = S("a"),
				   .range_end = S("a\x01") }; /* prefix end of "a\0" */
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "a");
	q = (struct kv_range_req){ .key = S("a"), .range_end = S("b"), .revision = 2 };
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "a");
}

static void test_mvcc_range_limit_count(void **state)
{
	struct fx *f = *state;
	char out[128];
	struct kv_range_resp r;
	fill_abc(f);
	struct kv_range_req q = { .key = S("a"), .range_end = S("z"), .limit = 2 };
	range_keys(f, &q, out, sizeof out, &r);
	assert_string_equal(out, "a,ab");
	assert_true(r.more);
	assert_int_equal(r.count, 4);
	kv_range_resp_free(&r);
	q.limit = 4;
	range_keys(f, &q, out, sizeof out, &r);
	assert_false(r.more);
	kv_range_resp_free(&r);
	q.limit = 0;
	q.count_only = true;
	range_keys(f, &q, out, sizeof out, &r);
	assert_string_equal(out, "");
	assert_int_equal(r.count, 4);
	kv_range_resp_free(&r);
	q.count_only = false;
	q.keys_only = true;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 4);
	for (size_t i = 0; i < r.n_kvs; i++) {
		assert_null(r.kvs[i].value);
		assert_int_equal(r.kvs[i].value_len, 0);
		assert_true(r.kvs[i].version >= 1);
	}
	kv_range_resp_free(&r);
	q.limit = -1; /* no limit, as etcd reads it */
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 4);
	assert_false(r.more);
	kv_range_resp_free(&r);
}

static void test_mvcc_range_sort(void **state)
{
	struct fx *f = *state;
	char out[128];
	fill_abc(f);
	struct {
		enum kv_sort_target t;
		enum kv_sort_order o;
		const char *want;
	} cases[] = {
		{ KV_SORT_KEY, KV_SORT_NONE, "a,ab,b,c" },
		{ KV_SORT_KEY, KV_SORT_ASCEND, "a,ab,b,c" },
		{ KV_SORT_KEY, KV_SORT_DESCEND, "c,b,ab,a" },
		{ KV_SORT_VERSION, KV_SORT_ASCEND, "ab,b,a,c" },
		{ KV_SORT_VERSION, KV_SORT_NONE, "ab,b,a,c" }, /* NONE with a target: ascending */
		{ KV_SORT_VERSION, KV_SORT_DESCEND, "c,a,ab,b" }, /* ties keep key order */
		{ KV_SORT_CREATE, KV_SORT_ASCEND, "a,ab,b,c" },
		{ KV_SORT_CREATE, KV_SORT_DESCEND, "c,b,ab,a" },
		{ KV_SORT_MOD, KV_SORT_ASCEND, "ab,b,a,c" },
		{ KV_SORT_MOD, KV_SORT_DESCEND, "c,a,b,ab" },
		{ KV_SORT_VALUE, KV_SORT_ASCEND, "a,ab,b,c" }, /* 0,1,2,9 */
		{ KV_SORT_VALUE, KV_SORT_DESCEND, "c,b,ab,a" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct kv_range_req q = { .key = S("a"),
					  .range_end = S("z"),
					  .sort_target = cases[i].t,
					  .sort_order = cases[i].o,
					  .keys_only = true };
		range_keys(f, &q, out, sizeof out, NULL);
		assert_string_equal(out, cases[i].want);
	}
	/* sorting happens before the limit */
	struct kv_range_resp r;
	struct kv_range_req q = { .key = S("a"),
				  .range_end = S("z"),
				  .sort_target = KV_SORT_MOD,
				  .sort_order = KV_SORT_DESCEND,
				  .limit = 1 };
	range_keys(f, &q, out, sizeof out, &r);
	assert_string_equal(out, "c");
	assert_true(r.more);
	kv_range_resp_free(&r);
}

static void test_mvcc_range_revision_filters(void **state)
{
	struct fx *f = *state;
	char out[128];
	struct kv_range_resp r;
	fill_abc(f); /* mod: a5 ab3 b4 c8; create: a2 ab3 b4 c6 */
	struct kv_range_req q = { .key = S("a"), .range_end = S("z"), .min_mod_revision = 4 };
	range_keys(f, &q, out, sizeof out, &r);
	assert_string_equal(out, "a,b,c");
	assert_int_equal(r.count, 4); /* the count is before the filters, as in etcd */
	kv_range_resp_free(&r);
	q = (struct kv_range_req){ .key = S("a"), .range_end = S("z"), .max_mod_revision = 4 };
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "ab,b");
	q = (struct kv_range_req){ .key = S("a"),
				   .range_end = S("z"),
				   .min_create_revision = 3,
				   .max_create_revision = 4 };
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "ab,b");
	q = (struct kv_range_req){ .key = S("a"), .range_end = S("z"), .max_create_revision = 2 };
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "a");
}

static void test_mvcc_put_options(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w;
	struct kv_put_resp r;
	struct kv_range_resp rr;
	grant(f, 7, 60);
	grant(f, 9, 60);
	put_lease(f, "k", "v", 7);
	w = begin(f);
	struct kv_put_req q = { .key = S("k"), .value = S("w"), .prev_kv = true };
	assert_int_equal(kv_put(w, &q, &r), 0);
	assert_true(r.has_prev_kv);
	assert_memory_equal(r.prev_kv.value, "v", 1);
	assert_int_equal(r.prev_kv.lease, 7);
	assert_int_equal(r.prev_kv.mod_revision, 2);
	kv_put_resp_free(&r);
	/* ignore_value keeps the value, ignore_lease the lease */
	q = (struct kv_put_req){ .key = S("k"), .ignore_value = true, .lease = 9 };
	assert_int_equal(kv_put(w, &q, &r), 0);
	kv_put_resp_free(&r);
	q = (struct kv_put_req){ .key = S("k"), .value = S("z"), .ignore_lease = true };
	assert_int_equal(kv_put(w, &q, &r), 0);
	kv_put_resp_free(&r);
	q = (struct kv_put_req){ .key = S("k"), .value = S("z"), .ignore_value = true };
	assert_int_equal(kv_put(w, &q, &r), KV_EVALUEPROVIDED);
	q = (struct kv_put_req){ .key = S("k"), .lease = 1, .ignore_lease = true };
	assert_int_equal(kv_put(w, &q, &r), KV_ELEASEPROVIDED);
	q = (struct kv_put_req){ .key = S("missing"), .ignore_lease = true };
	assert_int_equal(kv_put(w, &q, &r), KV_EKEYNOTFOUND);
	q = (struct kv_put_req){ .key = B(""), .key_len = 0 };
	assert_int_equal(kv_put(w, &q, &r), KV_EEMPTYKEY);
	uint8_t big[KV_MAX_KEY + 1];
	memset(big, 'x', sizeof big);
	q = (struct kv_put_req){ .key = big, .key_len = sizeof big };
	assert_int_equal(kv_put(w, &q, &r), KV_ETOOBIG);
	q.key_len = KV_MAX_KEY;
	assert_int_equal(kv_put(w, &q, &r), 0);
	commit(f, w);
	struct kv_range_req g = { .key = S("k") };
	assert_int_equal(kv_range(f->s, &g, &rr), 0);
	assert_memory_equal(rr.kvs[0].value, "z", 1);
	assert_int_equal(rr.kvs[0].value_len, 1);
	assert_int_equal(rr.kvs[0].lease, 9);
	assert_int_equal(rr.kvs[0].version, 4);
	kv_range_resp_free(&rr);
}

static void test_mvcc_delete_prev_kv(void **state)
{
	struct fx *f = *state;
	fill_abc(f);
	struct kv_wtx *w = begin(f);
	struct kv_delete_req q = { .key = S("a"), .range_end = S("b"), .prev_kv = true };
	struct kv_delete_resp r;
	assert_int_equal(kv_delete_range(w, &q, &r), 0);
	assert_int_equal(r.deleted, 2);
	assert_int_equal(r.n_prev_kvs, 2);
	assert_int_equal(r.revision, 9);
	assert_memory_equal(r.prev_kvs[0].key, "a", 1);
	assert_memory_equal(r.prev_kvs[0].value, "0", 1);
	assert_memory_equal(r.prev_kvs[1].key, "ab", 2);
	kv_delete_resp_free(&r);
	commit(f, w);
	char out[64];
	struct kv_range_req g = {
		.key = B(""), .key_len = 1, .range_end = B(""), .range_end_len = 1
	};
	range_keys(f, &g, out, sizeof out, NULL);
	assert_string_equal(out, "b,c");
	g.revision = 8;
	range_keys(f, &g, out, sizeof out, NULL);
	assert_string_equal(out, "a,ab,b,c");
}

static void test_mvcc_batch_events(void **state)
{
	struct fx *f = *state;
	put(f, "a", "1"); /* 2 */
	struct kv_wtx *w = begin(f);
	struct kv_put_req pa = { .key = S("a"), .value = S("2") };
	struct kv_put_resp pr;
	assert_int_equal(kv_put(w, &pa, &pr), 0); /* 3 */
	struct kv_put_req bad = { .key = S("zz"), .ignore_value = true };
	assert_int_equal(kv_put(w, &bad, &pr), KV_EKEYNOTFOUND); /* no event */
	struct kv_op ops[2] = {
		{ .type = KV_OP_PUT, .u.put = { .key = S("b"), .value = S("x") } },
		{ .type = KV_OP_DELETE, .u.del = { .key = S("a") } },
	};
	struct kv_txn_req t = { .success = ops, .n_success = 2 };
	struct kv_txn_resp tr;
	assert_int_equal(kv_txn(w, &t, &tr), 0); /* 4 */
	kv_txn_resp_free(&tr);
	struct kv_events ev;
	assert_int_equal(kv_txn_commit_events(w, ++f->applied, &ev), 0);
	assert_int_equal(ev.n, 3);
	assert_int_equal(ev.events[0].type, KV_EVENT_PUT);
	assert_int_equal(ev.events[0].kv.mod_revision, 3);
	assert_int_equal(ev.events[0].kv.version, 2);
	assert_true(ev.events[0].has_prev_kv);
	assert_int_equal(ev.events[0].prev_kv.mod_revision, 2);
	assert_int_equal(ev.events[1].type, KV_EVENT_PUT);
	assert_int_equal(ev.events[1].kv.mod_revision, 4);
	assert_false(ev.events[1].has_prev_kv);
	assert_int_equal(ev.events[2].type, KV_EVENT_DELETE);
	assert_int_equal(ev.events[2].kv.mod_revision, 4);
	assert_int_equal(ev.events[2].kv.create_revision, 0);
	assert_null(ev.events[2].kv.value);
	assert_memory_equal(ev.events[2].prev_kv.value, "2", 1);
	kv_events_free(&ev);
	/* the history reader gives the same, whole revisions at a time */
	int64_t next;
	assert_int_equal(kv_events_read(f->s, 3, 1, true, &ev, &next), 0);
	assert_int_equal(ev.n, 1);
	assert_int_equal(next, 4);
	kv_events_free(&ev);
	assert_int_equal(kv_events_read(f->s, 4, 1, true, &ev, &next), 0);
	assert_int_equal(ev.n, 2); /* revision 4 has two */
	assert_int_equal(next, 5);
	assert_int_equal(ev.events[1].type, KV_EVENT_DELETE);
	assert_true(ev.events[1].has_prev_kv);
	kv_events_free(&ev);
	assert_int_equal(kv_events_read(f->s, 5, 0, true, &ev, &next), 0);
	assert_int_equal(ev.n, 0);
	assert_int_equal(next, 5);
	w = begin(f);
	assert_int_equal(kv_compact(w, 3), 0);
	commit(f, w);
	assert_int_equal(kv_events_read(f->s, 3, 0, false, &ev, &next), KV_ECOMPACTED);
	assert_int_equal(kv_events_read(f->s, 4, 0, false, &ev, &next), 0);
	assert_int_equal(ev.n, 2);
	kv_events_free(&ev);
}

static void test_mvcc_leases(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_lease_grant(w, 0, 10), KV_EINVAL);
	assert_int_equal(kv_lease_grant(w, 100, 10), 0);
	assert_int_equal(kv_lease_grant(w, 100, 10), KV_ELEASEEXIST);
	assert_int_equal(kv_lease_grant(w, 200, 20), 0);
	assert_int_equal(kv_lease_checkpoint(w, 300, 5), KV_ELEASENOTFOUND);
	commit(f, w);
	assert_int_equal(cur_rev(f), 1); /* grants take no revision */
	struct kv_wtx *w2 = begin(f);
	struct kv_put_req q = { .key = S("x"), .value = S("1"), .lease = 300 };
	struct kv_put_resp pr;
	assert_int_equal(kv_put(w2, &q, &pr), KV_ELEASENOTFOUND);
	kv_txn_abort(w2);
	put_lease(f, "k1", "v", 100); /* 2 */
	put_lease(f, "k2", "v", 100); /* 3 */
	put_lease(f, "k3", "v", 100); /* 4 */
	put_lease(f, "k3", "v", 200); /* 5: k3 moves to 200 */
	put(f, "k2", "w");            /* 6: k2 leaves its lease */
	put_lease(f, "k4", "v", 100); /* 7 */
	del(f, "k4", NULL, NULL);     /* 8: k4 detached by its delete */
	w = begin(f);
	assert_int_equal(kv_lease_checkpoint(w, 100, 7), 0);
	commit(f, w);
	fx_reopen(f);
	struct kv_lease_info info;
	assert_int_equal(kv_lease_time_to_live(f->s, 100, true, &info), 0);
	assert_int_equal(info.lease.ttl, 10);
	assert_int_equal(info.lease.remaining, 7);
	assert_int_equal(info.n_keys, 1);
	assert_memory_equal(info.keys[0], "k1", 2);
	kv_lease_info_free(&info);
	assert_int_equal(kv_lease_time_to_live(f->s, 300, true, &info), KV_ELEASENOTFOUND);
	struct kv_lease_list l;
	assert_int_equal(kv_lease_list(f->s, &l), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.leases[0].id, 100);
	assert_int_equal(l.leases[1].id, 200);
	assert_int_equal(l.leases[1].ttl, 20);
	kv_lease_list_free(&l);
	/* revoke: k1 goes at one revision; lease 200's k3 stays */
	w = begin(f);
	int64_t rev;
	assert_int_equal(kv_lease_revoke(w, 100, &rev), 0);
	assert_int_equal(rev, 9);
	assert_int_equal(kv_lease_revoke(w, 100, &rev), KV_ELEASENOTFOUND);
	struct kv_events ev;
	assert_int_equal(kv_txn_commit_events(w, ++f->applied, &ev), 0);
	assert_int_equal(ev.n, 1);
	assert_int_equal(ev.events[0].type, KV_EVENT_DELETE);
	assert_memory_equal(ev.events[0].kv.key, "k1", 2);
	kv_events_free(&ev);
	char out[64];
	struct kv_range_req g = { .key = S("k"), .range_end = S("l") };
	range_keys(f, &g, out, sizeof out, NULL);
	assert_string_equal(out, "k2,k3");
	/* revoking a lease without keys takes no revision */
	w = begin(f);
	struct kv_put_req q3 = { .key = S("k3"), .value = S("v") };
	assert_int_equal(kv_put(w, &q3, &pr), 0); /* 10: k3 leaves 200 */
	assert_int_equal(kv_lease_revoke(w, 200, &rev), 0);
	assert_int_equal(rev, 10);
	commit(f, w);
	assert_int_equal(kv_lease_list(f->s, &l), 0);
	assert_int_equal(l.n, 0);
	kv_lease_list_free(&l);
}

/* ---- Txn ---- */

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

static void test_mvcc_txn_compares(void **state)
{
	struct fx *f = *state;
	fill_abc(f); /* a: create 2, mod 5, version 2, value "0" */
	grant(f, 5, 60);
	put_lease(f, "l", "x", 5); /* 9 */
	struct kv_compare c = { .key = S("a") };
	const struct {
		enum kv_compare_target t;
		int64_t n;
		const char *v;
		bool eq, gt, lt, ne;
	} cases[] = {
		{ KV_CMP_VERSION, 2, NULL, true, false, false, false },
		{ KV_CMP_VERSION, 1, NULL, false, true, false, true },
		{ KV_CMP_VERSION, 3, NULL, false, false, true, true },
		{ KV_CMP_CREATE, 2, NULL, true, false, false, false },
		{ KV_CMP_CREATE, 3, NULL, false, false, true, true },
		{ KV_CMP_MOD, 5, NULL, true, false, false, false },
		{ KV_CMP_MOD, 4, NULL, false, true, false, true },
		{ KV_CMP_VALUE, 0, "0", true, false, false, false },
		{ KV_CMP_VALUE, 0, "", false, true, false, true },
		{ KV_CMP_VALUE, 0, "00", false, false, true, true },
		{ KV_CMP_LEASE, 0, NULL, true, false, false, false },
		{ KV_CMP_LEASE, 1, NULL, false, false, true, true },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		c.target = cases[i].t;
		c.number = cases[i].n;
		c.value = cases[i].v ? B(cases[i].v) : NULL;
		c.value_len = cases[i].v ? strlen(cases[i].v) : 0;
		c.result = KV_CMP_EQUAL;
		assert_int_equal(txn_cmp(f, c), cases[i].eq);
		c.result = KV_CMP_GREATER;
		assert_int_equal(txn_cmp(f, c), cases[i].gt);
		c.result = KV_CMP_LESS;
		assert_int_equal(txn_cmp(f, c), cases[i].lt);
		c.result = KV_CMP_NOT_EQUAL;
		assert_int_equal(txn_cmp(f, c), cases[i].ne);
	}
	c = (struct kv_compare){ .key = S("l"), .target = KV_CMP_LEASE, .number = 5 };
	assert_true(txn_cmp(f, c));
	/* a missing key: version/create/mod/lease 0; a value compare fails */
	c = (struct kv_compare){ .key = S("zz"), .target = KV_CMP_VERSION, .number = 0 };
	assert_true(txn_cmp(f, c));
	c.target = KV_CMP_CREATE;
	assert_true(txn_cmp(f, c));
	c = (struct kv_compare){ .key = S("zz"), .target = KV_CMP_VALUE, .value = S("") };
	assert_false(txn_cmp(f, c));
	c.result = KV_CMP_NOT_EQUAL;
	assert_false(txn_cmp(f, c));
	/* over a range: every key must hold */
	c = (struct kv_compare){ .key = S("a"),
				 .range_end = S("c"),
				 .target = KV_CMP_VERSION,
				 .number = 0,
				 .result = KV_CMP_GREATER };
	assert_true(txn_cmp(f, c)); /* a, ab, b */
	c.number = 1;
	assert_false(txn_cmp(f, c)); /* ab and b are at version 1 */
	c.result = KV_CMP_LESS;
	c.number = 3;
	c.range_end = B("");
	c.range_end_len = 1; /* a..: c is at version 3 */
	assert_false(txn_cmp(f, c));
	c.range_end = B("zz");
	c.range_end_len = 2;
	c.key = B("y");
	c.key_len = 1; /* no key in the range */
	assert_true(txn_cmp(f, c));
}

static void test_mvcc_txn_ops_one_revision(void **state)
{
	struct fx *f = *state;
	fill_abc(f);
	struct kv_compare c = { .key = S("a"), .target = KV_CMP_VALUE, .value = S("0") };
	struct kv_op ops[4] = {
		{ .type = KV_OP_PUT, .u.put = { .key = S("n"), .value = S("new") } },
		{ .type = KV_OP_DELETE, .u.del = { .key = S("b"), .prev_kv = true } },
		{ .type = KV_OP_RANGE, .u.range = { .key = S("a"), .range_end = S("z") } },
		{ .type = KV_OP_PUT,
		  .u.put = { .key = S("c"), .value = S("cc"), .prev_kv = true } },
	};
	struct kv_txn_req t = { .compares = &c, .n_compares = 1, .success = ops, .n_success = 4 };
	struct kv_txn_resp r;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_txn(w, &t, &r), 0);
	assert_true(r.succeeded);
	assert_int_equal(r.revision, 9);
	assert_int_equal(r.n_responses, 4);
	assert_int_equal(r.responses[1].u.del.deleted, 1);
	char out[128];
	joined(&r.responses[2].u.range, false, out, sizeof out);
	assert_string_equal(out, "a,ab,c,n"); /* sees the Txn's own writes */
	assert_int_equal(r.responses[2].u.range.kvs[3].mod_revision, 9);
	assert_memory_equal(r.responses[3].u.put.prev_kv.value, "9", 1);
	kv_txn_resp_free(&r);
	commit(f, w);
	assert_int_equal(cur_rev(f), 9);
	/* a read-only Txn takes no revision; the failure branch runs */
	c.value = B("nope");
	struct kv_op rd = { .type = KV_OP_RANGE, .u.range = { .key = S("n") } };
	t = (struct kv_txn_req){ .compares = &c, .n_compares = 1, .failure = &rd, .n_failure = 1 };
	w = begin(f);
	assert_int_equal(kv_txn(w, &t, &r), 0);
	assert_false(r.succeeded);
	assert_int_equal(r.revision, 9);
	assert_int_equal(r.responses[0].u.range.n_kvs, 1);
	kv_txn_resp_free(&r);
	/* a failing op undoes the whole Txn */
	struct kv_op bad[2] = {
		{ .type = KV_OP_PUT, .u.put = { .key = S("x"), .value = S("1") } },
		{ .type = KV_OP_PUT, .u.put = { .key = S("missing"), .ignore_value = true } },
	};
	t = (struct kv_txn_req){ .success = bad, .n_success = 2 };
	assert_int_equal(kv_txn(w, &t, &r), KV_EKEYNOTFOUND);
	struct kv_op future = { .type = KV_OP_RANGE, .u.range = { .key = S("a"), .revision = 10 } };
	t = (struct kv_txn_req){ .success = bad, .n_success = 1 };
	struct kv_op both[2] = { bad[0], future };
	t.success = both;
	t.n_success = 2; /* checked against the revision before the Txn */
	assert_int_equal(kv_txn(w, &t, &r), KV_EFUTUREREV);
	commit(f, w);
	assert_int_equal(cur_rev(f), 9);
	struct kv_range_req g = { .key = S("x") };
	struct kv_range_resp rr;
	assert_int_equal(kv_range(f->s, &g, &rr), 0);
	assert_int_equal(rr.count, 0);
	kv_range_resp_free(&rr);
}

/* A DeleteRange to the end of the key space ("\0") passes etcd's duplicate
 * check beside a Put of a key it covers. The Put after it sees the key
 * deleted: with ignore_value that refuses the whole Txn before anything is
 * written, and the batch goes on. Put first, then the delete: both events
 * carry the key's kv from before the Txn as their prev kv. */
static void test_mvcc_txn_delete_to_end_then_put(void **state)
{
	struct fx *f = *state;
	put(f, "c", "old"); /* 2 */
	struct kv_op ops[2] = {
		{ .type = KV_OP_DELETE, .u.del = { .key = S("a"), .range_end = B("\0"), 1 } },
		{ .type = KV_OP_PUT, .u.put = { .key = S("c"), .ignore_value = true } },
	};
	struct kv_txn_req t = { .success = ops, .n_success = 2 };
	struct kv_txn_resp r;
	struct kv_events ev;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_txn(w, &t, &r), KV_EKEYNOTFOUND);
	struct kv_put_req p = { .key = S("d"), .value = S("1") };
	struct kv_put_resp pr;
	assert_int_equal(kv_put(w, &p, &pr), 0); /* the batch goes on */
	assert_int_equal(pr.revision, 3);
	kv_put_resp_free(&pr);
	assert_int_equal(kv_txn_commit_events(w, 7, &ev), 0);
	assert_int_equal(ev.n, 1);
	kv_events_free(&ev);
	struct kv_range_req g = { .key = S("c") };
	struct kv_range_resp rr;
	assert_int_equal(kv_range(f->s, &g, &rr), 0);
	assert_int_equal(rr.count, 1);
	assert_memory_equal(rr.kvs[0].value, "old", 3);
	kv_range_resp_free(&rr);

	struct kv_op ops2[2] = {
		{ .type = KV_OP_PUT, .u.put = { .key = S("c"), .value = S("new") } },
		{ .type = KV_OP_DELETE, .u.del = { .key = S("b"), .range_end = B("\0"), 1 } },
	};
	t = (struct kv_txn_req){ .success = ops2, .n_success = 2 };
	w = begin(f);
	assert_int_equal(kv_txn(w, &t, &r), 0);
	assert_int_equal(r.revision, 4);
	kv_txn_resp_free(&r);
	assert_int_equal(kv_txn_commit_events(w, 8, &ev), 0);
	assert_int_equal(ev.n, 3); /* put c, delete c, delete d */
	assert_int_equal(ev.events[0].type, KV_EVENT_PUT);
	assert_int_equal(ev.events[1].type, KV_EVENT_DELETE);
	for (int i = 0; i < 2; i++) {
		assert_true(ev.events[i].has_prev_kv);
		assert_int_equal(ev.events[i].prev_kv.mod_revision, 2);
		assert_memory_equal(ev.events[i].prev_kv.value, "old", 3);
	}
	kv_events_free(&ev);
	assert_int_equal(kv_range(f->s, &g, &rr), 0);
	assert_int_equal(rr.count, 0);
	kv_range_resp_free(&rr);
}

static void test_mvcc_txn_nested(void **state)
{
	struct fx *f = *state;
	put(f, "a", "1"); /* 2 */
	/* The outer Txn changes a; the nested compare still sees the old a. */
	struct kv_compare inner_c = { .key = S("a"), .target = KV_CMP_VALUE, .value = S("1") };
	struct kv_op inner_ops[1] = { { .type = KV_OP_PUT,
					.u.put = { .key = S("seen-old"), .value = S("y") } } };
	struct kv_txn_req inner = {
		.compares = &inner_c, .n_compares = 1, .success = inner_ops, .n_success = 1
	};
	struct kv_op outer_ops[2] = {
		{ .type = KV_OP_PUT, .u.put = { .key = S("a"), .value = S("2") } },
		{ .type = KV_OP_TXN, .u.txn = &inner },
	};
	struct kv_txn_req outer = { .success = outer_ops, .n_success = 2 };
	struct kv_txn_resp r;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_txn(w, &outer, &r), 0);
	assert_int_equal(r.responses[1].type, KV_OP_TXN);
	assert_true(r.responses[1].u.txn->succeeded);
	assert_int_equal(r.responses[1].u.txn->revision, 3);
	kv_txn_resp_free(&r);
	commit(f, w);
	struct kv_range_req g = { .key = S("seen-old") };
	struct kv_range_resp rr;
	assert_int_equal(kv_range(f->s, &g, &rr), 0);
	assert_int_equal(rr.count, 1);
	assert_int_equal(rr.kvs[0].mod_revision, 3);
	kv_range_resp_free(&rr);
}

static int txn_check(struct fx *f, const struct kv_txn_req *t)
{
	struct kv_txn_resp r;
	struct kv_wtx *w = begin(f);
	int err = kv_txn(w, t, &r);
	kv_txn_resp_free(&r);
	kv_txn_abort(w);
	return err;
}

static void test_mvcc_txn_duplicate_keys(void **state)
{
	struct fx *f = *state;
	struct kv_op pa = { .type = KV_OP_PUT, .u.put = { .key = S("a"), .value = S("1") } };
	struct kv_op pb = { .type = KV_OP_PUT, .u.put = { .key = S("b"), .value = S("1") } };
	struct kv_op da = { .type = KV_OP_DELETE, .u.del = { .key = S("a") } };
	struct kv_op dr = { .type = KV_OP_DELETE, .u.del = { .key = S("a"), .range_end = S("c") } };
	struct kv_op dall = { .type = KV_OP_DELETE,
			      .u.del = { .key = S("a"), .range_end = B(""), .range_end_len = 1 } };
	struct kv_op two[2];
	struct kv_txn_req t = { .success = two, .n_success = 2 };
	two[0] = pa, two[1] = pa;
	assert_int_equal(txn_check(f, &t), KV_EDUPLICATEKEY);
	two[0] = da, two[1] = pa;
	assert_int_equal(txn_check(f, &t), KV_EDUPLICATEKEY);
	two[0] = pb, two[1] = dr;
	assert_int_equal(txn_check(f, &t), KV_EDUPLICATEKEY);
	two[0] = da, two[1] = dr; /* deletes may overlap */
	assert_int_equal(txn_check(f, &t), 0);
	two[0] = pb, two[1] = dall; /* etcd: "\0" as an interval end covers nothing */
	assert_int_equal(txn_check(f, &t), 0);
	/* then and else are separate paths */
	struct kv_txn_req sep = { .success = &pa, .n_success = 1, .failure = &pa, .n_failure = 1 };
	assert_int_equal(txn_check(f, &sep), 0);
	/* nested: the same key in a nested then and else is fine, not outside */
	struct kv_op nested = { .type = KV_OP_TXN, .u.txn = &sep };
	two[0] = nested, two[1] = pb;
	assert_int_equal(txn_check(f, &t), 0);
	two[1] = pa;
	assert_int_equal(txn_check(f, &t), KV_EDUPLICATEKEY);
	two[1] = dr;
	assert_int_equal(txn_check(f, &t), KV_EDUPLICATEKEY);
	/* bounds */
	struct kv_op many[KV_MAX_TXN_OPS + 1];
	for (size_t i = 0; i < KV_MAX_TXN_OPS + 1; i++)
		many[i] = (struct kv_op){ .type = KV_OP_RANGE, .u.range = { .key = S("a") } };
	struct kv_txn_req big = { .success = many, .n_success = KV_MAX_TXN_OPS + 1 };
	assert_int_equal(txn_check(f, &big), KV_ETOOMANYOPS);
	big.n_success = KV_MAX_TXN_OPS;
	assert_int_equal(txn_check(f, &big), 0);
}

/* ---- Compaction ---- */

static void test_mvcc_compact_boundaries(void **state)
{
	struct fx *f = *state;
	fill_abc(f); /* revisions 2..8 */
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_compact(w, 9), KV_EFUTUREREV);
	assert_int_equal(kv_compact(w, 5), 0);
	assert_int_equal(kv_compact(w, 5), KV_ECOMPACTED);
	assert_int_equal(kv_compact(w, 4), KV_ECOMPACTED);
	commit(f, w);
	struct kv_range_req q = { .key = S("a"), .revision = 4 };
	struct kv_range_resp r;
	assert_int_equal(kv_range(f->s, &q, &r), KV_ECOMPACTED);
	/* etcd serves the compacted revision itself: its state is what is kept */
	q.revision = 5;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 1);
	kv_range_resp_free(&r);
	q.revision = 6;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	kv_range_resp_free(&r);
	struct kv_hash h;
	assert_int_equal(kv_hash_kv(f->s, 4, &h), KV_ECOMPACTED);
	assert_int_equal(kv_hash_kv(f->s, 9, &h), KV_EFUTUREREV);
	assert_int_equal(kv_hash_kv(f->s, 5, &h), 0);
	/* a Range inside a Txn follows the same rule */
	w = begin(f);
	struct kv_op op = { .type = KV_OP_RANGE, .u.range = { .key = S("a"), .revision = 4 } };
	struct kv_txn_req t = { .success = &op, .n_success = 1 };
	struct kv_txn_resp tr;
	assert_int_equal(kv_txn(w, &t, &tr), KV_ECOMPACTED);
	kv_txn_abort(w);
}

static size_t count_history(struct fx *f, const char *key, int64_t from, int64_t to)
{
	size_t n = 0;
	for (int64_t rev = from; rev <= to; rev++) {
		struct kv_range_req q = { .key = S(key), .revision = rev };
		struct kv_range_resp r;
		assert_int_equal(kv_range(f->s, &q, &r), 0);
		n += r.n_kvs;
		kv_range_resp_free(&r);
	}
	return n;
}

static void test_mvcc_compact_physical(void **state)
{
	struct fx *f = *state;
	fill_abc(f);             /* 2..8 */
	del(f, "b", NULL, NULL); /* 9: b's latest at 9 is a tombstone */
	put(f, "d", "1");        /* 10 */
	struct kv_hash before;
	assert_int_equal(kv_hash_kv(f->s, 0, &before), 0);
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_compact(w, 9), 0);
	commit(f, w);
	struct kv_hash h;
	assert_int_equal(kv_hash_kv(f->s, 0, &h), 0);
	struct kv_status st;
	assert_int_equal(kv_status(f->s, &st), 0);
	assert_int_equal(st.compact_target, 9);
	/* one key per step, a reopen in the middle */
	bool done = false;
	assert_int_equal(kv_compact_step(f->s, 1, &done), 0);
	assert_false(done);
	fx_reopen(f);
	int steps = 1;
	while (!done) {
		assert_int_equal(kv_compact_step(f->s, 1, &done), 0);
		steps++;
	}
	assert_true(steps >= 5); /* a ab b c d, then the end */
	struct kv_hash after;
	assert_int_equal(kv_hash_kv(f->s, 0, &after), 0);
	assert_true(h.hash == after.hash);
	assert_int_equal(kv_status(f->s, &st), 0);
	assert_int_equal(st.compact_target, 0);
	char out[64];
	struct kv_range_req q = {
		.key = B(""), .key_len = 1, .range_end = B(""), .range_end_len = 1, .revision = 9
	};
	range_keys(f, &q, out, sizeof out, NULL);
	assert_string_equal(out, "a,ab,c");
	assert_int_equal(count_history(f, "a", 9, 10), 2);
	/* A second compaction on top, then the same again on a fresh store
	 * compacted once: same hash (history is logical). */
	assert_int_equal(kv_compact_step(f->s, 1, &done), 0);
	assert_true(done);
}

static void test_mvcc_hash_same_log_same_hash(void **state)
{
	struct fx *f = *state;
	struct fx g = { 0 };
	snprintf(g.dir, sizeof g.dir, "/tmp/mvcc-unit-XXXXXX");
	assert_non_null(mkdtemp(g.dir));
	fx_reopen(&g);
	struct fx *both[2] = { f, &g };
	for (int i = 0; i < 2; i++) {
		fill_abc(both[i]);
		del(both[i], "a", "b", NULL);
		struct kv_wtx *w = begin(both[i]);
		assert_int_equal(kv_compact(w, 6), 0);
		commit(both[i], w);
	}
	/* only g has done its physical compaction */
	for (bool done = false; !done;)
		assert_int_equal(kv_compact_step(g.s, 100, &done), 0);
	struct kv_hash h1, h2;
	for (int64_t rev = 6; rev <= 9; rev++) {
		assert_int_equal(kv_hash_kv(f->s, rev, &h1), 0);
		assert_int_equal(kv_hash_kv(g.s, rev, &h2), 0);
		assert_true(h1.hash == h2.hash);
		assert_int_equal(h1.revision, rev);
		assert_int_equal(h1.compacted, 6);
	}
	assert_int_equal(kv_hash_kv(f->s, 8, &h1), 0);
	assert_int_equal(kv_hash_kv(f->s, 9, &h2), 0);
	assert_true(h1.hash != h2.hash);
	put(&g, "z", "diverge");
	assert_int_equal(kv_hash_kv(g.s, 0, &h2), 0);
	assert_int_equal(kv_hash_kv(f->s, 0, &h1), 0);
	assert_true(h1.hash != h2.hash);
	kv_close(g.s);
	h_tmpdir_remove(g.dir);
}

static void test_mvcc_snapshot_copy_install(void **state)
{
	struct fx *f = *state;
	fill_abc(f);
	grant(f, 100, 30);
	put_lease(f, "leased", "v", 100); /* 9 */
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_compact(w, 4), 0);
	commit(f, w);
	char file[64];
	snprintf(file, sizeof file, "/tmp/mvcc-snap-XXXXXX");
	int fd = mkstemp(file);
	assert_true(fd >= 0);
	w = begin(f); /* a copy may run beside a write transaction */
	assert_int_equal(kv_snapshot_copy_fd(f->s, fd), 0);
	kv_txn_abort(w);
	close(fd);
	struct kv_hash want;
	assert_int_equal(kv_hash_kv(f->s, 0, &want), 0);
	/* the copy names the applied index it stands for */
	uint64_t applied = 0;
	assert_int_equal(kv_snapshot_file_applied(file, &applied), 0);
	assert_int_equal(applied, f->applied);

	struct fx g = { 0 };
	snprintf(g.dir, sizeof g.dir, "/tmp/mvcc-unit-XXXXXX");
	assert_non_null(mkdtemp(g.dir));
	fx_reopen(&g);
	put(&g, "other", "x");
	/* not a snapshot: refused, the store goes on */
	char bad[64];
	snprintf(bad, sizeof bad, "/tmp/mvcc-bad-XXXXXX");
	int bfd = mkstemp(bad);
	assert_true(bfd >= 0);
	assert_int_equal(write(bfd, "garbage", 7), 7);
	close(bfd);
	assert_int_equal(kv_snapshot_install(g.s, bad), KV_ECORRUPT);
	assert_int_equal(kv_snapshot_file_applied(bad, &applied), KV_ECORRUPT);
	unlink(bad);
	assert_int_equal(cur_rev(&g), 2);
	assert_int_equal(kv_snapshot_install(g.s, file), 0);
	struct kv_status st;
	assert_int_equal(kv_status(g.s, &st), 0);
	assert_int_equal(st.revision, 9);
	assert_int_equal(st.compacted, 4);
	assert_int_equal(st.applied_index, f->applied);
	struct kv_hash h;
	assert_int_equal(kv_hash_kv(g.s, 0, &h), 0);
	assert_true(h.hash == want.hash);
	char out[64];
	struct kv_range_req q = {
		.key = B(""), .key_len = 1, .range_end = B(""), .range_end_len = 1
	};
	range_keys(&g, &q, out, sizeof out, NULL);
	assert_string_equal(out, "a,ab,b,c,leased");
	struct kv_lease_info info;
	assert_int_equal(kv_lease_time_to_live(g.s, 100, true, &info), 0);
	assert_int_equal(info.n_keys, 1);
	kv_lease_info_free(&info);
	put(&g, "after", "y"); /* writable after the install */
	assert_int_equal(cur_rev(&g), 10);
	fx_reopen(&g);
	assert_int_equal(cur_rev(&g), 10);
	kv_close(g.s);
	h_tmpdir_remove(g.dir);
}

static int put_big(struct kv_wtx *w, int i, size_t len)
{
	static uint8_t val[256 << 10];
	char key[32];
	memset(val, 'v', sizeof val);
	assert_true(len <= sizeof val);
	snprintf(key, sizeof key, "big%05d", i);
	struct kv_put_req q = { .key = S(key), .value = val, .value_len = len };
	struct kv_put_resp r;
	int err = kv_put(w, &q, &r);
	kv_put_resp_free(&r);
	return err;
}

static void test_mvcc_quota(void **state)
{
	struct fx *f = *state;
	kv_close(f->s);
	struct kv_options o = { .quota_bytes = 1 << 20, .no_sync = true };
	assert_int_equal(kv_open(f->dir, &o, &f->s), 0);
	/* fill past the quota, one put per batch */
	int i = 0, err = 0;
	for (; i < 1000 && err == 0; i++) {
		struct kv_wtx *w = begin(f);
		err = put_big(w, i, 8 << 10);
		commit(f, w);
	}
	assert_int_equal(err, KV_ENOSPACE);
	assert_true(i > 50);
	/* then smaller and smaller puts, to the last few bytes */
	for (int len = 4 << 10; len >= 0; len = len ? len / 2 : -1) {
		for (int n = 0, e = 0; e == 0 && n < 100; n++) {
			struct kv_wtx *w = begin(f);
			e = put_big(w, i, (size_t)len);
			commit(f, w);
			i += e == 0;
			if (e != 0)
				assert_int_equal(e, KV_ENOSPACE);
		}
	}
	int64_t rev = cur_rev(f);
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_lease_grant(w, 1, 10), KV_ENOSPACE);
	struct kv_op put_op = { .type = KV_OP_PUT, .u.put = { .key = S("x"), .value = S("1") } };
	struct kv_op rd = { .type = KV_OP_RANGE, .u.range = { .key = S("x") } };
	struct kv_txn_req t = { .failure = &put_op, .n_failure = 1 };
	struct kv_txn_resp tr;
	assert_int_equal(kv_txn(w, &t, &tr), KV_ENOSPACE);
	t = (struct kv_txn_req){ .success = &rd, .n_success = 1 };
	assert_int_equal(kv_txn(w, &t, &tr), 0);
	kv_txn_resp_free(&tr);
	commit(f, w);
	/* Range, DeleteRange and Compact still work */
	struct kv_range_req q = { .key = S("big"), .range_end = S("bih"), .count_only = true };
	struct kv_range_resp r;
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.count, i - 1);
	int64_t n;
	assert_int_equal(del(f, "big", "bih", &n), rev + 1);
	assert_int_equal(n, i - 1);
	w = begin(f);
	assert_int_equal(kv_compact(w, rev + 1), 0);
	commit(f, w);
	for (bool done = false; !done;)
		assert_int_equal(kv_compact_step(f->s, 1000, &done), 0);
	/* the freed pages count: writes work again */
	w = begin(f);
	assert_int_equal(put_big(w, 0, 8 << 10), 0);
	commit(f, w);
	/* One batch that would pass the quota: the quota counts what the
	 * batch has written so far, so its puts are refused from there on,
	 * alone, and its earlier writes commit. */
	w = begin(f);
	int ok = 0;
	for (err = 0; err == 0 && ok < 200; ok++)
		err = put_big(w, 1000 + ok, 200 << 10);
	assert_int_equal(err, KV_ENOSPACE);
	assert_true(ok > 2);
	commit(f, w);
	q = (struct kv_range_req){ .key = S("big01"), .range_end = S("big02"), .count_only = true };
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.count, ok - 1);
	fx_reopen(f);
	assert_int_equal(kv_range(f->s, &q, &r), 0);
	assert_int_equal(r.count, ok - 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mvcc_error_strings),
		T(test_mvcc_revisions_and_generations),
		T(test_mvcc_batch_revisions_and_applied_index),
		T(test_mvcc_range_spans),
		T(test_mvcc_range_limit_count),
		T(test_mvcc_range_sort),
		T(test_mvcc_range_revision_filters),
		T(test_mvcc_put_options),
		T(test_mvcc_delete_prev_kv),
		T(test_mvcc_batch_events),
		T(test_mvcc_leases),
		T(test_mvcc_txn_compares),
		T(test_mvcc_txn_ops_one_revision),
		T(test_mvcc_txn_nested),
		T(test_mvcc_txn_delete_to_end_then_put),
		T(test_mvcc_txn_duplicate_keys),
		T(test_mvcc_compact_boundaries),
		T(test_mvcc_compact_physical),
		T(test_mvcc_hash_same_log_same_hash),
		T(test_mvcc_snapshot_copy_install),
		T(test_mvcc_quota),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
