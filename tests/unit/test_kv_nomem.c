/* test_kv_nomem.c: kvstore/ when allocation fails (kv_heap.h). For every
 * allocation a batch, a read or a WAL append makes, one run fails exactly
 * that allocation: the call reports KV_ENOMEM (or succeeds, if the store
 * could do without), a failed batch commits nothing, applying the same batch
 * again afterwards gives the state a store that never failed has, and no
 * allocation is left behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvstore.h"
#include "tmpdir.h"

#define B(s) ((const uint8_t *)(s))
#define S(s) B(s), strlen(s)
#define MAX_RUNS 5000 /* bound on the allocations one step may make */

/* ---- a heap that fails the n-th allocation from when it is armed ---- */

static struct {
	long live;    /* allocations not yet freed */
	long count;   /* allocations since armed */
	long fail_at; /* 0: never */
	bool failed;  /* the armed failure happened */
} H;

static bool fail_now(void)
{
	if (H.fail_at == 0)
		return false;
	if (++H.count != H.fail_at)
		return false;
	H.failed = true;
	return true;
}

static void *t_malloc(void *ctx, size_t size)
{
	(void)ctx;
	if (fail_now())
		return NULL;
	void *p = malloc(size);
	H.live += p != NULL;
	return p;
}

static void *t_realloc(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	if (fail_now())
		return NULL;
	void *p = realloc(ptr, size);
	H.live += ptr == NULL && p != NULL;
	return p;
}

static void t_free(void *ctx, void *ptr)
{
	(void)ctx;
	H.live--;
	free(ptr);
}

static const struct kv_heap test_heap = { NULL, t_malloc, t_realloc, t_free };

static void arm(long n)
{
	H.count = 0;
	H.fail_at = n;
	H.failed = false;
}

static int setup(void **state)
{
	(void)state;
	memset(&H, 0, sizeof H);
	kv_heap_set(&test_heap);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	kv_heap_set(NULL);
	return 0;
}

/* ---- one batch of every kind of request ---- */

/* Applies the script; returns the first error, with every response freed.
 * Refusals the script makes on purpose (a lease granted twice) count as
 * success. */
static int script(struct kv_wtx *w)
{
	struct kv_put_resp pr;
	struct kv_delete_resp dr;
	struct kv_txn_resp tr;
	int64_t rev;
	int err = kv_lease_grant(w, 7, 60);
	if (err == 0) {
		err = kv_lease_grant(w, 7, 60);
		err = err == KV_ELEASEEXIST ? 0 : (err == 0 ? KV_EINVAL : err);
	}
	for (int i = 0; err == 0 && i < 6; i++) {
		char k[16], v[64];
		snprintf(k, sizeof k, "k%d", i);
		snprintf(v, sizeof v, "value-%d-%040d", i, i);
		struct kv_put_req p = {
			.key = S(k), .value = S(v), .lease = i % 2 ? 7 : 0, .prev_kv = true
		};
		err = kv_put(w, &p, &pr);
		kv_put_resp_free(&pr);
	}
	if (err == 0) {
		struct kv_delete_req d = { .key = S("k4"), .range_end = S("k6"), .prev_kv = true };
		err = kv_delete_range(w, &d, &dr);
		kv_delete_resp_free(&dr);
	}
	if (err == 0) {
		struct kv_compare c = { .key = S("k0"),
					.range_end = S("k9"),
					.target = KV_CMP_VERSION,
					.result = KV_CMP_GREATER };
		struct kv_op inner_ops[1] = {
			{ .type = KV_OP_PUT, .u.put = { .key = S("nested"), .value = S("n") } }
		};
		struct kv_txn_req inner = { .success = inner_ops, .n_success = 1 };
		struct kv_op ops[4] = {
			{ .type = KV_OP_RANGE, .u.range = { .key = S("k"), .range_end = S("l") } },
			{ .type = KV_OP_PUT,
			  .u.put = { .key = S("k0"), .value = S("t"), .prev_kv = true } },
			{ .type = KV_OP_DELETE, .u.del = { .key = S("k2"), .prev_kv = true } },
			{ .type = KV_OP_TXN, .u.txn = &inner },
		};
		struct kv_txn_req t = {
			.compares = &c, .n_compares = 1, .success = ops, .n_success = 4
		};
		err = kv_txn(w, &t, &tr);
		kv_txn_resp_free(&tr);
	}
	if (err == 0)
		err = kv_lease_checkpoint(w, 7, 30);
	if (err == 0)
		err = kv_lease_revoke(w, 7, &rev);
	if (err == 0)
		err = kv_compact(w, 3);
	return err;
}

/* A store with a little history the script builds on. */
static void prepare(const char *dir, struct kv_store **out)
{
	struct kv_options o = { .no_sync = true };
	struct kv_wtx *w;
	struct kv_put_resp pr;
	assert_int_equal(kv_open(dir, &o, out), 0);
	assert_int_equal(kv_txn_begin_write(*out, &w), 0);
	struct kv_put_req p = { .key = S("k0"), .value = S("zero") };
	assert_int_equal(kv_put(w, &p, &pr), 0);
	kv_put_resp_free(&pr);
	p = (struct kv_put_req){ .key = S("k2"), .value = S("two") };
	assert_int_equal(kv_put(w, &p, &pr), 0);
	kv_put_resp_free(&pr);
	assert_int_equal(kv_txn_commit(w, 1), 0);
}

/* Applies the script as batch 2 with no failure and returns the state. */
static void reference(struct kv_hash *hash, struct kv_status *st)
{
	char dir[64];
	struct kv_store *s;
	struct kv_wtx *w;
	h_tmpdir_make(dir, sizeof dir, "nomem-ref");
	prepare(dir, &s);
	assert_int_equal(kv_txn_begin_write(s, &w), 0);
	assert_int_equal(script(w), 0);
	assert_int_equal(kv_txn_commit(w, 2), 0);
	assert_int_equal(kv_hash_kv(s, 0, hash), 0);
	assert_int_equal(kv_status(s, st), 0);
	kv_close(s);
	h_tmpdir_remove(dir);
}

static void test_nomem_batches(void **state)
{
	(void)state;
	struct kv_hash want, got;
	struct kv_status want_st, st;
	reference(&want, &want_st);
	assert_int_equal(H.live, 0);
	long n = 1;
	for (; n < MAX_RUNS; n++) {
		char dir[64];
		struct kv_store *s;
		struct kv_wtx *w = NULL;
		struct kv_events ev = { 0 };
		h_tmpdir_make(dir, sizeof dir, "nomem");
		prepare(dir, &s);
		arm(n);
		int err = kv_txn_begin_write(s, &w);
		if (err == 0) {
			err = script(w);
			int cerr = kv_txn_commit_events(w, 2, &ev);
			/* a failed request fails the batch with its error */
			assert_int_equal(cerr, err);
		}
		bool failed = H.failed;
		arm(0);
		if (!failed) {
			assert_int_equal(err, 0);
			kv_events_free(&ev);
		} else {
			assert_int_equal(err, KV_ENOMEM);
			/* nothing of the batch is there; applying it again works */
			assert_int_equal(kv_status(s, &st), 0);
			assert_int_equal(st.applied_index, 1);
			assert_int_equal(st.revision, 3);
			assert_int_equal(kv_txn_begin_write(s, &w), 0);
			assert_int_equal(script(w), 0);
			assert_int_equal(kv_txn_commit(w, 2), 0);
		}
		assert_int_equal(kv_hash_kv(s, 0, &got), 0);
		assert_int_equal(got.hash, want.hash);
		assert_int_equal(kv_status(s, &st), 0);
		assert_int_equal(st.revision, want_st.revision);
		assert_int_equal(st.compacted, want_st.compacted);
		kv_close(s);
		h_tmpdir_remove(dir);
		assert_int_equal(H.live, 0);
		if (!failed)
			break; /* the batch made fewer than n allocations: all covered */
	}
	assert_true(n > 20 && n < MAX_RUNS);
}

/* Reads: each fails cleanly or answers, and leaves nothing allocated. */
static void test_nomem_reads(void **state)
{
	(void)state;
	char dir[64];
	struct kv_store *s;
	struct kv_wtx *w;
	h_tmpdir_make(dir, sizeof dir, "nomem-read");
	prepare(dir, &s);
	assert_int_equal(kv_txn_begin_write(s, &w), 0);
	assert_int_equal(kv_lease_grant(w, 9, 60), 0);
	for (int i = 0; i < 20; i++) {
		char k[16];
		struct kv_put_resp pr;
		snprintf(k, sizeof k, "r%02d", i);
		struct kv_put_req p = { .key = S(k), .value = S("v"), .lease = i % 3 ? 0 : 9 };
		assert_int_equal(kv_put(w, &p, &pr), 0);
		kv_put_resp_free(&pr);
	}
	assert_int_equal(kv_txn_commit(w, 2), 0);
	long live = H.live;
	int steps = 0;
	for (int kind = 0; kind < 5; kind++) {
		for (long n = 1; n < MAX_RUNS; n++) {
			struct kv_range_resp rr;
			struct kv_events ev;
			struct kv_lease_list ll;
			struct kv_lease_info li;
			int64_t next;
			int err = 0;
			arm(n);
			switch (kind) {
			case 0: {
				struct kv_range_req q = { .key = S("r"),
							  .range_end = S("s"),
							  .sort_order = KV_SORT_DESCEND,
							  .sort_target = KV_SORT_VALUE };
				err = kv_range(s, &q, &rr);
				if (err == 0) {
					assert_int_equal(rr.n_kvs, 20);
					kv_range_resp_free(&rr);
				}
				break;
			}
			case 1:
				err = kv_events_read(s, 1, 0, true, &ev, &next);
				if (err == 0) {
					assert_int_equal(ev.n, 22);
					kv_events_free(&ev);
				}
				break;
			case 2:
				err = kv_lease_list(s, &ll);
				if (err == 0) {
					assert_int_equal(ll.n, 1);
					kv_lease_list_free(&ll);
				}
				break;
			case 3:
				err = kv_lease_time_to_live(s, 9, true, &li);
				if (err == 0) {
					assert_int_equal(li.n_keys, 7);
					kv_lease_info_free(&li);
				}
				break;
			default: {
				struct kv_hash h;
				err = kv_hash_kv(s, 0, &h);
				break;
			}
			}
			bool failed = H.failed;
			arm(0);
			assert_int_equal(H.live, live);
			steps++;
			if (!failed) {
				assert_int_equal(err, 0);
				break;
			}
			assert_int_equal(err, KV_ENOMEM);
		}
	}
	assert_true(steps > 10);
	kv_close(s);
	h_tmpdir_remove(dir);
	assert_int_equal(H.live, 0);
}

/* The WAL: an open or an append whose allocation fails reports it; every
 * batch acknowledged before is there after a reopen, and appends go on. */
static void test_nomem_wal(void **state)
{
	(void)state;
	char dir[64];
	char msg[256];
	h_tmpdir_make(dir, sizeof dir, "nomem-wal");
	uint64_t acked = 0;
	long n = 1;
	for (; n < MAX_RUNS; n++) {
		struct kv_wal *w = NULL;
		arm(n);
		int err = kv_wal_open(dir, NULL, &w, msg, sizeof msg);
		bool failed = H.failed;
		if (err != 0) {
			arm(0);
			assert_true(failed);
			assert_int_equal(err, KV_ENOMEM);
			assert_int_equal(H.live, 0);
			continue;
		}
		/* appends of 8 entries; the armed failure may hit one of them */
		for (int b = 0; b < 3; b++) {
			struct kv_wal_entry e[8];
			uint8_t data[8][100];
			for (int i = 0; i < 8; i++) {
				memset(data[i], (int)(acked + (uint64_t)i) & 0xff, sizeof data[i]);
				e[i] = (struct kv_wal_entry){ .term = 1,
							      .index = acked + 1 + (uint64_t)i,
							      .data = data[i],
							      .len = sizeof data[i] };
			}
			struct kv_wal_hard_state hs = { 1, 1, acked };
			err = kv_wal_append(w, e, 8, &hs);
			if (err != 0)
				break;
			acked += 8;
		}
		failed = H.failed;
		arm(0);
		if (err != 0)
			assert_int_equal(err, KV_ENOMEM);
		kv_wal_close(w);
		assert_int_equal(H.live, 0);
		/* reopen with no failure: every acknowledged entry is there */
		assert_int_equal(kv_wal_open(dir, NULL, &w, msg, sizeof msg), 0);
		assert_true(kv_wal_last_index(w) >= acked);
		struct kv_wal_entry got;
		uint32_t cnt;
		for (uint64_t i = 1; i <= acked; i++) {
			assert_int_equal(kv_wal_entries(w, i, i + 1, 1 << 20, &got, &cnt), 0);
			assert_int_equal(cnt, 1);
			assert_int_equal(got.data[0], (uint8_t)((i - 1) & 0xff));
		}
		acked = kv_wal_last_index(w);
		kv_wal_close(w);
		if (!failed)
			break;
	}
	assert_true(n > 3 && n < MAX_RUNS);
	h_tmpdir_remove(dir);
	assert_int_equal(H.live, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_nomem_batches),
		T(test_nomem_reads),
		T(test_nomem_wal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
