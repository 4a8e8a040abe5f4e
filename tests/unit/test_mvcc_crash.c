/* test_mvcc_crash.c: the LMDB MVCC store after real crashes. A child process
 * applies batches (each one write transaction committed with applied index =
 * batch number) and acknowledges each after kv_txn_commit returns; the parent
 * kills it with SIGKILL at a seeded point, reopens the store and checks it
 * against an in-memory model: every acknowledged batch is there, each batch
 * is all or nothing, the revision and every older revision agree, and the
 * store takes new writes. Rounds reuse one directory, so crashes accumulate.
 * A process kill loses nothing LMDB wrote; power cuts are not simulated here.
 * Replay: MVCC_CRASH_SEED=<n> bin/test_mvcc_crash (timing varies per run;
 * the batches' contents are a function of the seed and batch number only).
 * Bounded: ROUNDS rounds, each child MAX_CHILD_BATCHES batches, each wait
 * bounded in time. */
#define _DEFAULT_SOURCE /* usleep, mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_mvcc.h"
#include "tmpdir.h"

#define ROUNDS 30
#define NKEYS 8
#define MAX_OPS 6            /* requests per batch */
#define MAX_CHILD_BATCHES 60 /* per child; then it idles until killed */
#define MAX_ACKS_WAITED 12
#define ROUND_WAIT_MS 1500 /* bound on the wait for acks in one round */
#define MAX_VALUE 4200     /* > a page: some values take overflow pages */
#define QUOTA ((uint64_t)256 << 20)

_Static_assert(MAX_OPS * 2 <= 16, "a batch's revisions fit the model's per-batch bound");

/* ---- seeded generator (splitmix64) ---- */

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return mix(*s);
}

/* ---- batches: a pure function of (seed, batch number) ---- */

enum op_kind { OP_PUT, OP_DEL, OP_DEL_RANGE, OP_TXN2 };

struct op {
	enum op_kind kind;
	unsigned k1, k2; /* PUT, DEL: k1; DEL_RANGE: [k1, k2); TXN2: puts of k1 and k2 */
};

struct batch {
	struct op ops[MAX_OPS];
	unsigned n;
};

static void gen_batch(uint64_t seed, uint64_t b, struct batch *out)
{
	uint64_t s = mix(seed ^ (b * 0xd1b54a32d192ed03ull));
	out->n = 1 + (unsigned)(rnd(&s) % MAX_OPS);
	for (unsigned i = 0; i < out->n; i++) {
		struct op *o = &out->ops[i];
		unsigned r = (unsigned)(rnd(&s) % 10);
		o->k1 = (unsigned)(rnd(&s) % NKEYS);
		o->k2 = (unsigned)(rnd(&s) % NKEYS);
		if (i == 0 || r < 5) {
			o->kind = OP_PUT; /* every batch changes something: one put at least */
		} else if (r < 7) {
			o->kind = OP_DEL;
		} else if (r < 8) {
			o->kind = OP_DEL_RANGE;
			if (o->k2 < o->k1) {
				unsigned t = o->k1;
				o->k1 = o->k2;
				o->k2 = t;
			}
			o->k2++; /* non-empty: [k1, k2] inclusive of the larger */
		} else {
			o->kind = OP_TXN2;
			if (o->k2 == o->k1) {
				o->k2 = (o->k1 + 1) %
					NKEYS; /* distinct: etcd's duplicate-key rule */
			}
		}
	}
}

static void key_name(unsigned k, char out[3])
{
	out[0] = 'k';
	out[1] = (char)('0' + k);
	out[2] = 0;
}

/* The value put by batch b, request i, on key k: a header naming them, then
 * filler bytes derived from them; the length varies, sometimes past a page. */
static size_t value_of(uint64_t b, unsigned i, unsigned k, uint8_t *out)
{
	uint64_t s = mix(b * 131 + i * 17 + k);
	size_t len = (s % 7 == 0) ? 1000 + (size_t)(s >> 8) % (MAX_VALUE - 1000) :
				    24 + (size_t)(s >> 8) % 40;
	int h = snprintf((char *)out, len, "b%08" PRIu64 ".o%u.k%u.", b, i, k);
	if (h < 0 || (size_t)h >= len) {
		h = 0;
	}
	for (size_t j = (size_t)h; j < len; j++) {
		out[j] = (uint8_t)((s >> (j % 56)) ^ j);
	}
	return len;
}

/* ---- the model: each key's state after every revision ---- */

struct mkey {
	bool live;
	uint32_t op; /* the request that put the value */
	uint64_t batch;
	int64_t create, mod, version;
};

struct model {
	struct mkey (*at)[NKEYS]; /* at[r]: the keys at revision r (r >= 1) */
	size_t cap;
	int64_t rev;
	uint64_t applied;
	int64_t *batch_rev; /* batch_rev[b]: the revision after batch b */
	size_t batch_cap;
};

static void model_reset(struct model *m)
{
	m->rev = 1;
	m->applied = 0;
	if (m->cap < 2) {
		m->cap = 1024;
		m->at = calloc(m->cap, sizeof *m->at);
		assert_non_null(m->at);
	}
	memset(m->at[1], 0, sizeof m->at[1]);
	if (m->batch_cap == 0) {
		m->batch_cap = 256;
		m->batch_rev = calloc(m->batch_cap, sizeof *m->batch_rev);
		assert_non_null(m->batch_rev);
	}
	m->batch_rev[0] = 1;
}

static void model_free(struct model *m)
{
	free(m->at);
	free(m->batch_rev);
	memset(m, 0, sizeof *m);
}

/* A new revision starting from the current state. */
static struct mkey *model_next_rev(struct model *m)
{
	if ((size_t)m->rev + 1 >= m->cap) {
		size_t cap = m->cap * 2;
		void *p = realloc(m->at, cap * sizeof *m->at);
		assert_non_null(p);
		m->at = p;
		m->cap = cap;
	}
	memcpy(m->at[m->rev + 1], m->at[m->rev], sizeof m->at[0]);
	m->rev++;
	return m->at[m->rev];
}

static void model_put(struct mkey *kk, int64_t rev, uint64_t b, unsigned i)
{
	if (!kk->live) {
		kk->live = true;
		kk->create = rev;
		kk->version = 0;
	}
	kk->version++;
	kk->mod = rev;
	kk->batch = b;
	kk->op = i;
}

static void model_apply(struct model *m, uint64_t seed, uint64_t b)
{
	assert_int_equal(b, m->applied + 1);
	struct batch bt;
	gen_batch(seed, b, &bt);
	for (unsigned i = 0; i < bt.n; i++) {
		const struct op *o = &bt.ops[i];
		const struct mkey *cur = m->at[m->rev];
		struct mkey *nk;
		switch (o->kind) {
		case OP_PUT:
			nk = model_next_rev(m);
			model_put(&nk[o->k1], m->rev, b, i);
			break;
		case OP_TXN2:
			nk = model_next_rev(m);
			model_put(&nk[o->k1], m->rev, b, i);
			model_put(&nk[o->k2], m->rev, b, i);
			break;
		case OP_DEL:
		case OP_DEL_RANGE: {
			unsigned end = o->kind == OP_DEL ? o->k1 + 1 : o->k2;
			bool any = false;
			for (unsigned k = o->k1; k < end; k++) {
				any = any || cur[k].live;
			}
			if (!any) {
				break; /* deleting nothing takes no revision */
			}
			nk = model_next_rev(m);
			for (unsigned k = o->k1; k < end; k++) {
				memset(&nk[k], 0, sizeof nk[k]);
			}
			break;
		}
		}
	}
	if (b >= m->batch_cap) {
		size_t cap = m->batch_cap * 2;
		int64_t *p = realloc(m->batch_rev, cap * sizeof *p);
		assert_non_null(p);
		m->batch_rev = p;
		m->batch_cap = cap;
	}
	m->batch_rev[b] = m->rev;
	m->applied = b;
}

/* ---- applying a batch to the store (child and parent) ---- */

/* 0, or a negative kv error. No cmocka calls: the child runs it too. */
static int store_apply(struct kv_store *s, uint64_t seed, uint64_t b)
{
	static uint8_t v1[MAX_VALUE], v2[MAX_VALUE];
	struct batch bt;
	gen_batch(seed, b, &bt);
	struct kv_wtx *w = NULL;
	int rv = kv_txn_begin_write(s, &w);
	if (rv != 0) {
		return rv;
	}
	for (unsigned i = 0; i < bt.n && rv == 0; i++) {
		const struct op *o = &bt.ops[i];
		char k1[3], k2[3];
		key_name(o->k1, k1);
		key_name(o->k2 < NKEYS ? o->k2 : NKEYS, k2); /* "k8": end of the key space */
		switch (o->kind) {
		case OP_PUT: {
			struct kv_put_req q = { .key = (const uint8_t *)k1,
						.key_len = 2,
						.value = v1,
						.value_len = value_of(b, i, o->k1, v1) };
			struct kv_put_resp r;
			rv = kv_put(w, &q, &r);
			if (rv == 0) {
				kv_put_resp_free(&r);
			}
			break;
		}
		case OP_DEL:
		case OP_DEL_RANGE: {
			struct kv_delete_req q = { .key = (const uint8_t *)k1, .key_len = 2 };
			if (o->kind == OP_DEL_RANGE) {
				q.range_end = (const uint8_t *)k2;
				q.range_end_len = 2;
			}
			struct kv_delete_resp r;
			rv = kv_delete_range(w, &q, &r);
			if (rv == 0) {
				kv_delete_resp_free(&r);
			}
			break;
		}
		case OP_TXN2: {
			struct kv_op ops[2] = {
				{ .type = KV_OP_PUT,
				  .u.put = { .key = (const uint8_t *)k1,
					     .key_len = 2,
					     .value = v1,
					     .value_len = value_of(b, i, o->k1, v1) } },
				{ .type = KV_OP_PUT,
				  .u.put = { .key = (const uint8_t *)k2,
					     .key_len = 2,
					     .value = v2,
					     .value_len = value_of(b, i, o->k2, v2) } },
			};
			struct kv_txn_req q = { .success = ops, .n_success = 2 };
			struct kv_txn_resp r;
			rv = kv_txn(w, &q, &r);
			if (rv == 0) {
				if (!r.succeeded) {
					rv = KV_EINVAL;
				}
				kv_txn_resp_free(&r);
			}
			break;
		}
		}
	}
	if (rv != 0) {
		kv_txn_abort(w);
		return rv;
	}
	return kv_txn_commit(w, b);
}

/* ---- the child: apply batches for ever, ack each after its commit ---- */

static void child_run(const char *dir, int fd, uint64_t seed)
{
	struct kv_options o = { .quota_bytes = QUOTA };
	struct kv_store *s = NULL;
	if (kv_open(dir, &o, &s) != 0) {
		_exit(10);
	}
	struct kv_status st;
	if (kv_status(s, &st) != 0) {
		_exit(11);
	}
	for (uint64_t b = st.applied_index + 1; b <= st.applied_index + MAX_CHILD_BATCHES; b++) {
		int rv = store_apply(s, seed, b);
		if (rv != 0) {
			_exit(rv < 0 && rv > -100 ? 20 - rv : 12);
		}
		if (write(fd, &b, sizeof b) != (ssize_t)sizeof b) {
			_exit(13);
		}
	}
	for (int i = 0; i < 1000; i++) {
		usleep(10000); /* idle (bounded: 10 s) until killed */
	}
	_exit(0);
}

/* ---- fixture ---- */

struct fx {
	char dir[256];
	pid_t child; /* > 0 while a child may be alive: the teardown kills it */
	struct model m;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "cairn-mvcccrash");
	*state = f;
	return 0;
}

static void reap(struct fx *f, int *status)
{
	if (f->child <= 0) {
		return;
	}
	kill(f->child, SIGKILL);
	pid_t r;
	do {
		r = waitpid(f->child, status, 0);
	} while (r < 0 && errno == EINTR);
	f->child = 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	int status;
	reap(f, &status); /* an assertion left a child behind: kill it by pid */
	h_tmpdir_remove(f->dir);
	model_free(&f->m);
	free(f);
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- checks after reopen ---- */

/* The store's keys at revision rev against the model's. */
static void check_rev(struct kv_store *s, const struct model *m, int64_t rev, int round,
		      uint64_t seed)
{
	static uint8_t want[MAX_VALUE];
	struct kv_range_req q = { .key = (const uint8_t *)"k",
				  .key_len = 1,
				  .range_end = (const uint8_t *)"l",
				  .range_end_len = 1,
				  .revision = rev };
	struct kv_range_resp r;
	int rv = kv_range(s, &q, &r);
	if (rv != 0) {
		fail_msg("seed %" PRIu64 " round %d: range at %" PRId64 ": %s", seed, round, rev,
			 kv_strerror(rv));
	}
	const struct mkey *mk = m->at[rev];
	size_t j = 0;
	for (unsigned k = 0; k < NKEYS; k++) {
		if (!mk[k].live) {
			continue;
		}
		char name[3];
		key_name(k, name);
		if (j >= r.n_kvs || r.kvs[j].key_len != 2 || memcmp(r.kvs[j].key, name, 2) != 0) {
			fail_msg("seed %" PRIu64 " round %d: at revision %" PRId64
				 " key %s missing (%zu keys returned)",
				 seed, round, rev, name, r.n_kvs);
		}
		const struct kv_kv *kv = &r.kvs[j];
		size_t len = value_of(mk[k].batch, mk[k].op, k, want);
		if (kv->create_revision != mk[k].create || kv->mod_revision != mk[k].mod ||
		    kv->version != mk[k].version || kv->value_len != len ||
		    memcmp(kv->value, want, len) != 0) {
			fail_msg("seed %" PRIu64 " round %d: at revision %" PRId64
				 " key %s: create %" PRId64 " mod %" PRId64 " version %" PRId64
				 " len %zu; model: create %" PRId64 " mod %" PRId64
				 " version %" PRId64 " len %zu (batch %" PRIu64 " op %u)",
				 seed, round, rev, name, kv->create_revision, kv->mod_revision,
				 kv->version, kv->value_len, mk[k].create, mk[k].mod, mk[k].version,
				 len, mk[k].batch, mk[k].op);
		}
		j++;
	}
	if (j != r.n_kvs || r.count != (int64_t)j) {
		fail_msg("seed %" PRIu64 " round %d: at revision %" PRId64
			 " %zu keys (count %" PRId64 "), model %zu",
			 seed, round, rev, r.n_kvs, r.count, j);
	}
	kv_range_resp_free(&r);
}

static void check_store(struct fx *f, struct kv_store *s, uint64_t acked, int round, uint64_t seed,
			uint64_t *rs)
{
	struct kv_status st;
	assert_int_equal(kv_status(s, &st), 0);
	if (st.applied_index < acked) {
		fail_msg("seed %" PRIu64 " round %d: batch %" PRIu64
			 " acknowledged, applied index %" PRIu64,
			 seed, round, acked, st.applied_index);
	}
	/* The model up to the store's applied index. Batches never shrink it. */
	if (st.applied_index < f->m.applied) {
		fail_msg("seed %" PRIu64 " round %d: applied index went back from %" PRIu64
			 " to %" PRIu64,
			 seed, round, f->m.applied, st.applied_index);
	}
	if (st.applied_index > f->m.applied + MAX_CHILD_BATCHES + 1) {
		fail_msg("seed %" PRIu64 " round %d: applied index %" PRIu64 " beyond any batch",
			 seed, round, st.applied_index);
	}
	while (f->m.applied < st.applied_index) {
		model_apply(&f->m, seed, f->m.applied + 1);
	}
	/* Each batch changes something, so the revision names the last batch
	 * applied: it must be exactly the applied index's (all or nothing). */
	if (st.revision != f->m.rev) {
		fail_msg("seed %" PRIu64 " round %d: applied %" PRIu64 " revision %" PRId64
			 ", model %" PRId64 " (batch %" PRIu64 " partly or not applied?)",
			 seed, round, st.applied_index, st.revision, f->m.rev, st.applied_index);
	}
	assert_int_equal(st.compact_target, 0);
	check_rev(s, &f->m, f->m.rev, round, seed);
	/* Older revisions: the one before the last batch, revision 1 and a
	 * random sample (no compaction: every revision is still held). */
	if (f->m.applied > 0) {
		check_rev(s, &f->m, f->m.batch_rev[f->m.applied - 1], round, seed);
	}
	check_rev(s, &f->m, 1, round, seed);
	for (int i = 0; i < 16; i++) {
		check_rev(s, &f->m, 1 + (int64_t)(rnd(rs) % (uint64_t)f->m.rev), round, seed);
	}
	struct kv_range_req q = { .key = (const uint8_t *)"k0",
				  .key_len = 2,
				  .revision = f->m.rev + 1 };
	struct kv_range_resp r;
	assert_int_equal(kv_range(s, &q, &r), KV_EFUTUREREV);
}

static void test_mvcc_crash_sigkill(void **state)
{
	struct fx *f = *state;
	uint64_t seed = 0x5eed0c4a5ull;
	const char *env = getenv("MVCC_CRASH_SEED");
	if (env != NULL) {
		seed = strtoull(env, NULL, 0);
	}
	uint64_t rs = seed; /* the parent's choices */
	model_reset(&f->m);
	uint64_t acked = 0;
	int mid_open = 0, in_flight = 0, short_rounds = 0;
	int64_t t0 = now_ms();
	for (int round = 0; round < ROUNDS; round++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		f->child = fork();
		if (f->child < 0) {
			close(p[0]);
			close(p[1]);
			fail_msg("fork: %s", strerror(errno));
		}
		if (f->child == 0) {
			close(p[0]);
			child_run(f->dir, p[1], seed);
		}
		close(p[1]);
		/* Kill after a number of acks (0: after a short delay only, maybe
		 * while the child opens), then a random sub-batch delay. No
		 * assertion until the child is reaped. */
		uint64_t want = rnd(&rs) % (MAX_ACKS_WAITED + 1);
		uint64_t got = 0;
		bool eof = false;
		int64_t deadline = now_ms() + ROUND_WAIT_MS;
		while (got < want && !eof) {
			int64_t left = deadline - now_ms();
			if (left <= 0) {
				break;
			}
			struct pollfd pfd = { .fd = p[0], .events = POLLIN };
			int r = poll(&pfd, 1, (int)left);
			if (r <= 0) {
				continue;
			}
			uint64_t b;
			ssize_t k = read(p[0], &b, sizeof b);
			if (k != (ssize_t)sizeof b) {
				eof = true; /* the child died: its status says why */
				break;
			}
			acked = b > acked ? b : acked;
			got++;
		}
		usleep((useconds_t)(rnd(&rs) % (want == 0 ? 2000 : 3000)));
		int status = 0;
		pid_t pid = f->child;
		reap(f, &status);
		/* Acks written just before the kill count too (the pipe holds them;
		 * the write end closed with the child, so this ends at EOF). */
		for (int k = 0; k < MAX_CHILD_BATCHES + 1; k++) {
			uint64_t b;
			if (read(p[0], &b, sizeof b) != (ssize_t)sizeof b) {
				break;
			}
			acked = b > acked ? b : acked;
			got++;
		}
		close(p[0]);
		if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
			fail_msg("seed %" PRIu64 " round %d: child %d ended with status %#x before "
				 "the kill (exit 10: open, 2x: kv error -(x-20))",
				 seed, round, (int)pid, (unsigned)status);
		}
		short_rounds += got < want; /* a slow machine: still a valid round */

		struct kv_options o = { .quota_bytes = QUOTA };
		struct kv_store *s = NULL;
		int rv = kv_open(f->dir, &o, &s);
		if (rv != 0) {
			fail_msg("seed %" PRIu64 " round %d: reopen: %s", seed, round,
				 kv_strerror(rv));
		}
		uint64_t before = f->m.applied;
		check_store(f, s, acked, round, seed, &rs);
		mid_open += f->m.applied == before;
		in_flight += f->m.applied > acked;
		/* The store takes new writes: the next batch, by the parent. */
		rv = store_apply(s, seed, f->m.applied + 1);
		if (rv != 0) {
			kv_close(s);
			fail_msg("seed %" PRIu64 " round %d: batch %" PRIu64 " after reopen: %s",
				 seed, round, f->m.applied + 1, kv_strerror(rv));
		}
		model_apply(&f->m, seed, f->m.applied + 1);
		acked = f->m.applied;
		check_store(f, s, acked, round, seed, &rs);
		kv_close(s);
	}
	/* Where the kills landed depends on timing: informative only. */
	print_message("seed %" PRIu64 ": %d kills, %" PRIu64 " batches, revision %" PRId64
		      ", %d rounds with no new batch, %d with an unacknowledged batch "
		      "committed, %d short of acks, %lld ms\n",
		      seed, ROUNDS, f->m.applied, f->m.rev, mid_open, in_flight, short_rounds,
		      (long long)(now_ms() - t0));
	assert_true(f->m.applied > ROUNDS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_mvcc_crash_sigkill, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
