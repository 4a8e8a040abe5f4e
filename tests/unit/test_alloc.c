/* test_alloc.c: the replaceable allocator (raft.h struct raft_heap) made to
 * fail. A scenario touching elections, replication, reads, snapshots,
 * transfer and restart is run once to count the allocations, then again
 * with the N-th allocation failing, for every N: once only (a transient
 * failure) and from N on (memory exhausted). Every call must return 0 or a
 * documented error (RAFT_ENOMEM only when memory did fail), nothing may
 * crash or trip an assertion, every byte must be freed (the heap counts
 * live blocks; ASan's leak check sees the rest), and after a transient
 * failure the cluster must still elect a leader and commit. */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

struct fheap {
	struct raft_heap h;
	unsigned long calls; /* allocation attempts */
	unsigned long fail_at; /* 1-based; 0: never */
	bool persistent;      /* fail every attempt from fail_at on */
	unsigned long failures;
	long live;
};

static bool should_fail(struct fheap *f)
{
	f->calls++;
	if (f->fail_at == 0)
		return false;
	if (f->calls == f->fail_at || (f->persistent && f->calls > f->fail_at)) {
		f->failures++;
		return true;
	}
	return false;
}

static void *f_malloc(void *ctx, size_t size)
{
	struct fheap *f = ctx;
	if (should_fail(f))
		return NULL;
	void *p = malloc(size ? size : 1);
	if (p)
		f->live++;
	return p;
}

static void *f_realloc(void *ctx, void *ptr, size_t size)
{
	struct fheap *f = ctx;
	if (should_fail(f))
		return NULL;
	void *p = realloc(ptr, size ? size : 1);
	if (p && !ptr)
		f->live++;
	return p;
}

static void f_free(void *ctx, void *ptr)
{
	struct fheap *f = ctx;
	if (ptr) {
		f->live--;
		free(ptr);
	}
}

static void fheap_init(struct fheap *f, unsigned long fail_at, bool persistent)
{
	memset(f, 0, sizeof *f);
	f->h.ctx = f;
	f->h.malloc = f_malloc;
	f->h.realloc = f_realloc;
	f->h.free = f_free;
	f->fail_at = fail_at;
	f->persistent = persistent;
}

/* A call's result: 0, a refusal the scenario can meet anyway, or
 * RAFT_ENOMEM if (and only if) an allocation has failed. */
static void check_rc(const struct fheap *f, int rc)
{
	if (rc == RAFT_ENOMEM) {
		assert_true(f->failures > 0);
		return;
	}
	assert_true(rc == 0 || rc == RAFT_ENOLEADER || rc == RAFT_ENOTLEADER ||
		    rc == RAFT_EBUSY || rc == RAFT_ETRANSFERRING || rc == RAFT_ECONFPENDING);
}

static bool running(struct harness *h, uint64_t id)
{
	return h_node(h, id)->running;
}

static uint64_t find_leader(struct harness *h)
{
	for (uint64_t id = 1; id <= 3; id++)
		if (running(h, id) && h_state(h, id) == RAFT_LEADER)
			return id;
	return 0;
}

static void rounds(struct harness *h, int n)
{
	for (int i = 0; i < n; i++) {
		for (uint64_t id = 1; id <= 3; id++)
			if (running(h, id))
				h_tick(h, id, 1);
		h_stabilize(h);
	}
}

/* The scenario; returns whether the cluster made progress at the end
 * (checked only when asked, i.e. after a transient failure or none). */
static void scenario(struct fheap *f, bool check_liveness)
{
	struct harness *h = h_new();
	h->tolerate_nomem = true;
	const struct h_opts o = {.heap = &f->h, .snapshot_chunk_bytes = 16, .election_ticks = 5};
	struct raft_conf c = h_conf_voters(3);
	for (uint64_t id = 1; id <= 3; id++) {
		h_node_init(h, id, &c);
		check_rc(f, h_node_start(h, id, &o));
	}
	if (running(h, 1))
		check_rc(f, raft_campaign(h_raft(h, 1)));
	h_stabilize(h);
	rounds(h, 12);
	uint64_t l = find_leader(h);
	if (l) {
		h_isolate(h, 3);
		char v[32];
		for (int i = 0; i < 6; i++) {
			snprintf(v, sizeof v, "value-%d", i);
			check_rc(f, h_propose(h, l, v, NULL));
		}
		/* entries beyond one arena block make the arena grow */
		static uint8_t big[100000];
		memset(big, 'b', sizeof big);
		check_rc(f, raft_propose(h_raft(h, l), big, sizeof big, NULL));
		check_rc(f, raft_read_index(h_raft(h, l), 1));
		struct raft_conf_change cc = {.type = RAFT_CC_ADD_LEARNER, .id = 4};
		check_rc(f, raft_propose_conf_change(h_raft(h, l), &cc, NULL));
		h_stabilize(h);
		rounds(h, 2);
		if (running(h, l) && h_node(h, l)->applied > 0)
			assert_int_equal(h_compact(h, l, 0), 0);
		h_recover(h);
		rounds(h, 8);
		uint64_t other = l == 2 ? 3 : 2;
		if (running(h, l) && running(h, other)) {
			check_rc(f, raft_read_index(h_raft(h, other), 2));
			int rc = raft_transfer_leadership(h_raft(h, l), other);
			check_rc(f, rc);
		}
		rounds(h, 8);
	}
	if (running(h, 2)) {
		h_crash(h, 2);
		check_rc(f, h_restart(h, 2));
	}
	rounds(h, 4);

	if (check_liveness) {
		/* Memory is back: the cluster must recover by itself. */
		f->fail_at = 0;
		for (uint64_t id = 1; id <= 3; id++)
			if (!running(h, id))
				assert_int_equal(h_restart(h, id), 0);
		bool done = false;
		for (int tries = 0; tries < 40 && !done; tries++) {
			rounds(h, 5);
			l = find_leader(h);
			uint64_t ix = 0;
			if (l && h_propose(h, l, "live", &ix) == 0) {
				rounds(h, 5);
				done = h_commit(h, 1) >= ix && h_commit(h, 2) >= ix &&
				       h_commit(h, 3) >= ix;
			}
		}
		assert_true(done);
	}
	h_free(h);
	assert_int_equal(f->live, 0);
}

static unsigned long dry_run(void)
{
	struct fheap f;
	fheap_init(&f, 0, false);
	scenario(&f, true);
	assert_int_equal(f.failures, 0);
	assert_true(f.calls > 10);
	return f.calls;
}

static void test_alloc_transient_failure_anywhere(void **state)
{
	(void)state;
	unsigned long total = dry_run();
	for (unsigned long n = 1; n <= total; n++) {
		struct fheap f;
		fheap_init(&f, n, false);
		if (getenv("CAIRN_TRACE"))
			fprintf(stderr, "=== transient failure at allocation %lu of %lu\n", n, total);
		scenario(&f, true);
	}
}

static void test_alloc_exhausted_from_anywhere(void **state)
{
	(void)state;
	unsigned long total = dry_run();
	for (unsigned long n = 1; n <= total; n++) {
		struct fheap f;
		fheap_init(&f, n, true);
		if (getenv("CAIRN_TRACE"))
			fprintf(stderr, "=== memory exhausted from allocation %lu of %lu\n", n, total);
		scenario(&f, false);
	}
}

/* The memstore takes the same allocator: a failing persist, snapshot or
 * clone returns RAFT_ENOMEM and leaks nothing. */
static void test_alloc_memstore(void **state)
{
	(void)state;
	for (unsigned long n = 1; n <= 64; n++) {
		struct fheap f;
		fheap_init(&f, n, false);
		struct raft_memstore *ms = NULL;
		int rc = raft_memstore_new(&f.h, &ms);
		check_rc(&f, rc);
		if (rc == 0) {
			struct raft_conf c = h_conf_voters(3);
			check_rc(&f, raft_memstore_bootstrap(ms, &c));
			struct raft_entry e[3];
			for (uint64_t i = 0; i < 3; i++)
				e[i] = (struct raft_entry){.term = 1, .index = 4 + i, .len = 4,
							   .data = (const uint8_t *)"data"};
			struct raft_update u;
			memset(&u, 0, sizeof u);
			struct raft_storage s = raft_memstore_storage(ms);
			uint64_t last = s.last_index(s.ctx);
			if (last == 3) {
				u.entries = e;
				u.n_entries = 3;
				check_rc(&f, raft_memstore_persist(ms, &u));
			}
			struct raft_snapshot_chunk ch = {.index = 50, .term = 2, .len = 4,
							 .data = (const uint8_t *)"snap"};
			struct raft_snapshot_meta meta = {.index = 50, .term = 2, .size = 4, .conf = c};
			memset(&u, 0, sizeof u);
			u.snapshot_chunks = &ch;
			u.n_snapshot_chunks = 1;
			u.snapshot = &meta;
			check_rc(&f, raft_memstore_persist(ms, &u));
			struct raft_memstore *cl = NULL;
			if (raft_memstore_clone(ms, &cl) == 0)
				raft_memstore_free(cl);
			if (s.last_index(s.ctx) > 0)
				check_rc(&f, raft_memstore_snapshot(ms, s.last_index(s.ctx), &c, "x",
								   1, 0));
			raft_memstore_free(ms);
		}
		assert_int_equal(f.live, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_transient_failure_anywhere),
		cmocka_unit_test(test_alloc_exhausted_from_anywhere),
		cmocka_unit_test(test_alloc_memstore),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
