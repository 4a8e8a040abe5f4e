/* test_memstore.c: the in-memory storage backend against the storage
 * contract of raft.h: bootstrap, append with truncation, reads and their
 * errors, compaction with `keep`, the persist order of step 2 (chunks, then
 * install, then entries, then hard state), deep clones. */
#include "unit.h"

#include <stdio.h>

static struct raft_memstore *new_store(void)
{
	struct raft_memstore *ms = NULL;
	assert_int_equal(raft_memstore_new(NULL, &ms), 0);
	assert_non_null(ms);
	return ms;
}

/* Persist entries [first, first+n) of the given terms, data "e<index>". */
static int put(struct raft_memstore *ms, uint64_t first, const uint64_t *terms, uint32_t n)
{
	struct raft_entry e[16];
	char data[16][16];
	for (uint32_t i = 0; i < n; i++) {
		int len = snprintf(data[i], sizeof data[i], "e%d", (int)(first + i));
		e[i] = (struct raft_entry){.term = terms[i],
					   .index = first + i,
					   .type = RAFT_ENTRY_NORMAL,
					   .len = (uint32_t)len,
					   .data = (const uint8_t *)data[i]};
	}
	struct raft_update u;
	memset(&u, 0, sizeof u);
	u.entries = e;
	u.n_entries = n;
	return raft_memstore_persist(ms, &u);
}

static uint64_t term_of(struct raft_storage *s, uint64_t i)
{
	uint64_t t = 99;
	assert_int_equal(s->term(s->ctx, i, &t), 0);
	return t;
}

static void test_memstore_bootstrap_writes_conf_entries(void **state)
{
	(void)state;
	struct raft_memstore *ms = new_store();
	struct raft_conf c;
	memset(&c, 0, sizeof c);
	h_conf_add(&c, 5, RAFT_LEARNER);
	h_conf_add(&c, 1, RAFT_VOTER);
	h_conf_add(&c, 3, RAFT_VOTER);
	assert_int_equal(raft_memstore_bootstrap(ms, &c), 0);
	struct raft_storage s = raft_memstore_storage(ms);
	assert_int_equal(s.first_index(s.ctx), 1);
	assert_int_equal(s.last_index(s.ctx), 3);
	struct raft_entry e[3];
	uint32_t n = 0;
	assert_int_equal(s.entries(s.ctx, 1, 4, UINT64_MAX, e, &n), 0);
	assert_int_equal(n, 3);
	/* voters first, in conf order, then learners */
	const uint64_t ids[] = {1, 3, 5};
	const uint32_t types[] = {RAFT_CC_ADD_VOTER, RAFT_CC_ADD_VOTER, RAFT_CC_ADD_LEARNER};
	for (uint32_t i = 0; i < 3; i++) {
		assert_int_equal(e[i].index, i + 1);
		assert_int_equal(e[i].term, 1);
		assert_int_equal(e[i].type, RAFT_ENTRY_CONF_CHANGE);
		struct raft_conf_change cc;
		assert_int_equal(raft_conf_change_decode(e[i].data, e[i].len, &cc), 0);
		assert_int_equal(cc.id, ids[i]);
		assert_int_equal(cc.type, types[i]);
	}
	struct raft_hard_state hs;
	struct raft_conf got;
	assert_int_equal(s.initial_state(s.ctx, &hs, &got), 0);
	assert_int_equal(hs.term, 1);
	assert_int_equal(hs.vote, 0);
	assert_int_equal(hs.commit, 3);
	assert_int_equal(got.n, 3);
	assert_int_equal(raft_conf_role(&got, 5), RAFT_LEARNER);
	/* Only once, and only a sensible configuration. */
	assert_int_equal(raft_memstore_bootstrap(ms, &c), RAFT_EINVAL);
	raft_memstore_free(ms);

	ms = new_store();
	struct raft_conf empty;
	memset(&empty, 0, sizeof empty);
	assert_int_equal(raft_memstore_bootstrap(ms, &empty), RAFT_EINVAL);
	struct raft_conf learners_only;
	memset(&learners_only, 0, sizeof learners_only);
	h_conf_add(&learners_only, 2, RAFT_LEARNER);
	assert_int_equal(raft_memstore_bootstrap(ms, &learners_only), RAFT_EINVAL);
	s = raft_memstore_storage(ms);
	assert_int_equal(s.last_index(s.ctx), 0);
	raft_memstore_free(ms);
}

static void test_memstore_append_and_read(void **state)
{
	(void)state;
	struct raft_memstore *ms = new_store();
	struct raft_storage s = raft_memstore_storage(ms);
	assert_int_equal(s.first_index(s.ctx), 1);
	assert_int_equal(s.last_index(s.ctx), 0);
	assert_int_equal(term_of(&s, 0), 0);
	const uint64_t t[] = {1, 1, 2, 2, 3};
	assert_int_equal(put(ms, 1, t, 5), 0);
	assert_int_equal(s.last_index(s.ctx), 5);
	for (uint64_t i = 1; i <= 5; i++)
		assert_int_equal(term_of(&s, i), t[i - 1]);
	struct raft_entry e[5];
	uint32_t n = 0;
	assert_int_equal(s.entries(s.ctx, 2, 5, UINT64_MAX, e, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].index, 2);
	assert_memory_equal(e[2].data, "e4", 2);
	/* max_bytes stops the read, but never below one entry */
	assert_int_equal(s.entries(s.ctx, 1, 6, 0, e, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(s.entries(s.ctx, 1, 6, 4, e, &n), 0);
	assert_int_equal(n, 2);
	/* out of range */
	uint64_t x;
	assert_int_equal(s.entries(s.ctx, 0, 2, UINT64_MAX, e, &n), RAFT_ECOMPACTED);
	assert_int_equal(s.entries(s.ctx, 4, 7, UINT64_MAX, e, &n), RAFT_EUNAVAILABLE);
	assert_int_equal(s.term(s.ctx, 6, &x), RAFT_EUNAVAILABLE);
	raft_memstore_free(ms);
}

static void test_memstore_overlapping_append_truncates(void **state)
{
	(void)state;
	struct raft_memstore *ms = new_store();
	struct raft_storage s = raft_memstore_storage(ms);
	const uint64_t t[] = {1, 1, 1, 1, 1};
	assert_int_equal(put(ms, 1, t, 5), 0);
	const uint64_t t2[] = {2};
	assert_int_equal(put(ms, 3, t2, 1), 0);
	assert_int_equal(s.last_index(s.ctx), 3);
	assert_int_equal(term_of(&s, 3), 2);
	assert_int_equal(term_of(&s, 2), 1);
	uint64_t x;
	assert_int_equal(s.term(s.ctx, 4, &x), RAFT_EUNAVAILABLE);
	/* a gap is refused and changes nothing */
	assert_int_equal(put(ms, 5, t2, 1), RAFT_EINVAL);
	assert_int_equal(s.last_index(s.ctx), 3);
	/* the data is the store's own copy */
	struct raft_entry src = {.term = 2, .index = 4, .type = RAFT_ENTRY_NORMAL, .len = 3};
	uint8_t buf[3] = {'a', 'b', 'c'};
	src.data = buf;
	struct raft_update u;
	memset(&u, 0, sizeof u);
	u.entries = &src;
	u.n_entries = 1;
	assert_int_equal(raft_memstore_persist(ms, &u), 0);
	memset(buf, 'z', sizeof buf);
	struct raft_entry e;
	uint32_t n;
	assert_int_equal(s.entries(s.ctx, 4, 5, UINT64_MAX, &e, &n), 0);
	assert_memory_equal(e.data, "abc", 3);
	raft_memstore_free(ms);
}

static void test_memstore_snapshot_compacts_with_keep(void **state)
{
	(void)state;
	struct raft_memstore *ms = new_store();
	struct raft_storage s = raft_memstore_storage(ms);
	const uint64_t t[] = {1, 1, 1, 2, 2, 2, 3, 3, 3, 3};
	assert_int_equal(put(ms, 1, t, 10), 0);
	struct raft_conf c = h_conf_voters(3);
	assert_int_equal(raft_memstore_snapshot(ms, 6, &c, "state", 5, 2), 0);
	assert_int_equal(s.first_index(s.ctx), 5); /* 6 - keep: entries <= 4 go */
	assert_int_equal(s.last_index(s.ctx), 10);
	assert_int_equal(term_of(&s, 4), 2); /* the entry before the first */
	uint64_t x;
	assert_int_equal(s.term(s.ctx, 3, &x), RAFT_ECOMPACTED);
	struct raft_entry e[8];
	uint32_t n;
	assert_int_equal(s.entries(s.ctx, 4, 6, UINT64_MAX, e, &n), RAFT_ECOMPACTED);
	assert_int_equal(s.entries(s.ctx, 5, 11, UINT64_MAX, e, &n), 0);
	assert_int_equal(n, 6);
	struct raft_snapshot_meta meta;
	assert_int_equal(s.snapshot(s.ctx, &meta), 0);
	assert_int_equal(meta.index, 6);
	assert_int_equal(meta.term, 2);
	assert_int_equal(meta.size, 5);
	assert_int_equal(raft_conf_voters(&meta.conf), 3);
	const uint8_t *data;
	assert_int_equal(raft_memstore_snapshot_data(ms, &meta, &data), 0);
	assert_memory_equal(data, "state", 5);
	uint8_t buf[16];
	assert_int_equal(s.snapshot_read(s.ctx, 6, 1, buf, 2, &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(buf, "ta", 2);
	assert_int_equal(s.snapshot_read(s.ctx, 6, 3, buf, 10, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(s.snapshot_read(s.ctx, 6, 5, buf, 10, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(s.snapshot_read(s.ctx, 5, 0, buf, 10, &n), RAFT_ESNAPOUTOFDATE);
	/* not backwards, not past the log */
	assert_int_equal(raft_memstore_snapshot(ms, 5, &c, "old", 3, 0), RAFT_EINVAL);
	assert_int_equal(raft_memstore_snapshot(ms, 11, &c, "new", 3, 0), RAFT_EINVAL);
	/* a newer one replaces it; keep beyond the log drops nothing */
	assert_int_equal(raft_memstore_snapshot(ms, 8, &c, "newer", 5, 100), 0);
	assert_int_equal(s.first_index(s.ctx), 5);
	assert_int_equal(s.snapshot_read(s.ctx, 6, 0, buf, 10, &n), RAFT_ESNAPOUTOFDATE);
	assert_int_equal(raft_memstore_snapshot(ms, 10, &c, "all", 3, 0), 0);
	assert_int_equal(s.first_index(s.ctx), 11);
	assert_int_equal(s.last_index(s.ctx), 10);
	assert_int_equal(term_of(&s, 10), 3);
	raft_memstore_free(ms);
}

/* Step 2 of the loop contract in one update: chunks are staged, the
 * snapshot installed from them, entries after it appended, hard state set. */
static void test_memstore_persist_order(void **state)
{
	(void)state;
	struct raft_memstore *ms = new_store();
	struct raft_storage s = raft_memstore_storage(ms);
	const uint64_t t[] = {1, 1, 1};
	assert_int_equal(put(ms, 1, t, 3), 0);
	struct raft_snapshot_chunk ch[2] = {
		{.index = 20, .term = 3, .offset = 0, .len = 3, .data = (const uint8_t *)"abc"},
		{.index = 20, .term = 3, .offset = 3, .len = 3, .data = (const uint8_t *)"def"},
	};
	struct raft_snapshot_meta meta = {.index = 20, .term = 3, .size = 6};
	meta.conf = h_conf_voters(2);
	struct raft_entry e = {.term = 3, .index = 21, .type = RAFT_ENTRY_NORMAL, .len = 1,
			       .data = (const uint8_t *)"x"};
	struct raft_update u;
	memset(&u, 0, sizeof u);
	u.snapshot_chunks = ch;
	u.n_snapshot_chunks = 2;
	u.snapshot = &meta;
	u.entries = &e;
	u.n_entries = 1;
	u.has_hard_state = true;
	u.hard_state = (struct raft_hard_state){.term = 3, .vote = 1, .commit = 20};
	assert_int_equal(raft_memstore_persist(ms, &u), 0);
	assert_int_equal(s.first_index(s.ctx), 21);
	assert_int_equal(s.last_index(s.ctx), 21);
	assert_int_equal(term_of(&s, 20), 3);
	assert_int_equal(term_of(&s, 21), 3);
	const uint8_t *data;
	struct raft_snapshot_meta got;
	assert_int_equal(raft_memstore_snapshot_data(ms, &got, &data), 0);
	assert_int_equal(got.index, 20);
	assert_int_equal(got.size, 6);
	assert_memory_equal(data, "abcdef", 6);
	struct raft_hard_state hs;
	struct raft_conf conf;
	assert_int_equal(s.initial_state(s.ctx, &hs, &conf), 0);
	assert_int_equal(hs.term, 3);
	assert_int_equal(hs.vote, 1);
	assert_int_equal(hs.commit, 20);
	assert_int_equal(conf.n, 2);

	/* Chunks over two updates; an update without hard state keeps it. */
	struct raft_update a;
	memset(&a, 0, sizeof a);
	struct raft_snapshot_chunk c1 = {.index = 30, .term = 4, .offset = 0, .len = 2,
					 .data = (const uint8_t *)"12"};
	a.snapshot_chunks = &c1;
	a.n_snapshot_chunks = 1;
	assert_int_equal(raft_memstore_persist(ms, &a), 0);
	assert_int_equal(s.last_index(s.ctx), 21); /* staged only */
	struct raft_snapshot_chunk c2 = {.index = 30, .term = 4, .offset = 2, .len = 2,
					 .data = (const uint8_t *)"34"};
	struct raft_snapshot_meta m2 = {.index = 30, .term = 4, .size = 4, .conf = meta.conf};
	a.snapshot_chunks = &c2;
	a.snapshot = &m2;
	assert_int_equal(raft_memstore_persist(ms, &a), 0);
	assert_int_equal(raft_memstore_snapshot_data(ms, &got, &data), 0);
	assert_memory_equal(data, "1234", 4);
	assert_int_equal(s.first_index(s.ctx), 31);
	raft_memstore_hard_state(ms, &hs);
	assert_int_equal(hs.term, 3);
	assert_int_equal(hs.commit, 30); /* an installed snapshot is committed */

	/* Inconsistent input is refused. */
	struct raft_snapshot_chunk gap = {.index = 40, .term = 4, .offset = 5, .len = 1,
					  .data = (const uint8_t *)"z"};
	memset(&a, 0, sizeof a);
	a.snapshot_chunks = &gap;
	a.n_snapshot_chunks = 1;
	assert_int_equal(raft_memstore_persist(ms, &a), RAFT_ECORRUPT);
	struct raft_snapshot_chunk c3 = {.index = 40, .term = 4, .offset = 0, .len = 1,
					 .data = (const uint8_t *)"z"};
	struct raft_snapshot_meta wrong_size = {.index = 40, .term = 4, .size = 2, .conf = meta.conf};
	a.snapshot_chunks = &c3;
	a.snapshot = &wrong_size;
	assert_int_equal(raft_memstore_persist(ms, &a), RAFT_ECORRUPT);
	struct raft_snapshot_meta other = {.index = 41, .term = 4, .size = 1, .conf = meta.conf};
	a.n_snapshot_chunks = 0;
	a.snapshot = &other;
	assert_int_equal(raft_memstore_persist(ms, &a), RAFT_ECORRUPT);
	assert_int_equal(raft_memstore_snapshot_data(ms, &got, &data), 0);
	assert_int_equal(got.index, 30);
	raft_memstore_free(ms);
}

/* A clone is the persisted state a restarted node finds: deep, and
 * independent of the original from then on. */
static void test_memstore_clone_is_deep(void **state)
{
	(void)state;
	struct raft_memstore *ms = new_store();
	struct raft_conf c = h_conf_voters(3);
	assert_int_equal(raft_memstore_bootstrap(ms, &c), 0);
	const uint64_t t[] = {2, 2, 2};
	assert_int_equal(put(ms, 4, t, 3), 0);
	assert_int_equal(raft_memstore_snapshot(ms, 5, &c, "snap", 4, 1), 0);
	struct raft_memstore *cl = NULL;
	assert_int_equal(raft_memstore_clone(ms, &cl), 0);
	/* change and free the original */
	const uint64_t t3[] = {3};
	assert_int_equal(put(ms, 5, t3, 1), 0);
	assert_int_equal(raft_memstore_snapshot(ms, 5, &c, "gone", 4, 0), 0);
	raft_memstore_free(ms);

	struct raft_storage s = raft_memstore_storage(cl);
	assert_int_equal(s.first_index(s.ctx), 5);
	assert_int_equal(s.last_index(s.ctx), 6);
	assert_int_equal(term_of(&s, 6), 2);
	struct raft_entry e[2];
	uint32_t n;
	assert_int_equal(s.entries(s.ctx, 5, 7, UINT64_MAX, e, &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(e[1].data, "e6", 2);
	struct raft_snapshot_meta meta;
	const uint8_t *data;
	assert_int_equal(raft_memstore_snapshot_data(cl, &meta, &data), 0);
	assert_int_equal(meta.index, 5);
	assert_memory_equal(data, "snap", 4);
	struct raft_hard_state hs;
	raft_memstore_hard_state(cl, &hs);
	assert_int_equal(hs.term, 1);
	assert_int_equal(hs.commit, 3);
	raft_memstore_free(cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_memstore_bootstrap_writes_conf_entries),
		cmocka_unit_test(test_memstore_append_and_read),
		cmocka_unit_test(test_memstore_overlapping_append_truncates),
		cmocka_unit_test(test_memstore_snapshot_compacts_with_keep),
		cmocka_unit_test(test_memstore_persist_order),
		cmocka_unit_test(test_memstore_clone_is_deep),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
