/* test_mvcc_crash.c: the LMDB MVCC store after real crashes. A child process
 * applies batches (each one write transaction committed with applied index =
 * batch number) and acknowledges each after kv_txn_commit returns; before each
 * batch it runs a few bounded compaction steps (kv_compact_step, each its own
 * write transaction), as the storage thread does between batches. Batches hold
 * Puts (some attached to a lease), DeleteRanges, Txns, Compacts, lease grants,
 * checkpoints and revocations; some requests fail by design (a lease not
 * granted or granted twice, a compaction at or below the compacted revision or
 * past the current one) and must change nothing while the batch goes on.
 *
 * The parent kills the child with SIGKILL at a seeded point, reopens the store
 * and checks it against an in-memory model: every acknowledged batch is there,
 * each batch is all or nothing, the revision, the compacted revision and every
 * revision from the compacted one up agree (those below fail with
 * KV_ECOMPACTED), the lease table, each lease's keys and the revisions around
 * each revocation agree, and kv_hash_kv equals that of a replica that applied
 * the same batches without crashes or compaction steps. A physical compaction
 * left pending stays pending until steps finish it (one the child's steps
 * acknowledged as done stays done); on some rounds the parent finishes it and
 * checks that no answer and no hash changed. Then the store
 * takes a new batch. Rounds reuse one directory, so crashes accumulate.
 * A process kill loses nothing LMDB wrote; power cuts are not simulated here.
 *
 * Replay: MVCC_CRASH_SEED=<n> bin/test_mvcc_crash (timing varies per run; the
 * batches' contents and the steps before each are a function of the seed and
 * batch number only). Bounded: ROUNDS rounds, each child MAX_CHILD_BATCHES
 * batches, each wait bounded in time, each compaction finished within
 * MAX_FINISH_STEPS steps. */
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
#define NLEASES 4
#define MAX_OPS 6            /* requests per batch */
#define MAX_CHILD_BATCHES 60 /* per child; then it idles until killed */
#define MAX_ACKS_WAITED 12
#define ROUND_WAIT_MS 1500 /* bound on the wait for acks in one round */
#define MAX_VALUE 4200     /* > a page: some values take overflow pages */
#define QUOTA ((uint64_t)256 << 20)
#define STEP_KEYS 3                      /* a compaction step handles 1..STEP_KEYS keys */
#define MAX_CHILD_STEPS 2                /* steps before each batch in the child: 0..this */
#define MAX_FINISH_STEPS (4 * NKEYS + 4) /* a step handles >= 1 of NKEYS keys */
#define CHECK_WINDOW 32                  /* the newest revisions, each checked after a reopen */
#define LEASE_TTL_MAX 600
#define ACK_STEPS_DONE ((uint64_t)1 << 63) /* ack b | this: steps before b said done */

_Static_assert(MAX_OPS * 2 <= 16, "a batch's revisions fit the model's per-batch bound");
_Static_assert(NKEYS <= 8, "a key set is one byte; key names are one digit");

/* In code the child runs too: no cmocka there (a failure would unwind into
 * the forked copy of the test runner). */
#define MODEL_CHECK(cond)                                                                 \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "%s:%d: model: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                          \
		}                                                                         \
	} while (0)

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

/* ---- batches ---- */

enum op_kind {
	OP_PUT,
	OP_DEL,
	OP_DEL_RANGE,
	OP_TXN2,
	OP_COMPACT,
	OP_GRANT,
	OP_CHECKPOINT,
	OP_REVOKE
};

static const char *const op_names[] = { "put",     "delete", "delete range", "txn",
					"compact", "grant",  "checkpoint",   "revoke" };

/* One request as the model resolved it: its arguments, and the result and
 * revision the store must give. */
struct op {
	enum op_kind kind;
	unsigned k1, k2; /* PUT, DEL: k1; DEL_RANGE: [k1, k2); TXN2: puts of k1 and k2 */
	int64_t lease;   /* PUT, TXN2: k1's lease (0: none); GRANT..REVOKE: the lease */
	int64_t lease2;  /* TXN2: k2's lease */
	int64_t arg;     /* COMPACT: the revision; GRANT: the TTL; CHECKPOINT: remaining */
	int want;        /* 0 or the kv error the request must fail with */
	int64_t rev;     /* the revision after the request */
};

struct batch {
	struct op ops[MAX_OPS];
	unsigned n;
};

static int64_t lease_id(unsigned l)
{
	return (int64_t)(l + 1) << 40 | (int64_t)(0x3a5 + 7 * l);
}

static unsigned lease_slot(int64_t id)
{
	for (unsigned l = 0; l < NLEASES; l++) {
		if (lease_id(l) == id) {
			return l;
		}
	}
	MODEL_CHECK(!"a lease id of the test");
	return 0;
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

/* ---- the model: each key's state after every revision, and the leases ---- */

struct mkey {
	bool live;
	uint32_t op; /* the request that put the value */
	uint64_t batch;
	int64_t create, mod, version, lease;
};

struct mlease {
	bool live;
	int64_t ttl, remaining;
	int64_t revoked_at;   /* its last revocation that deleted keys (0: none) */
	uint8_t revoked_keys; /* the keys that revocation deleted, a bit each */
};

struct model {
	struct mkey (*at)[NKEYS]; /* at[r]: the keys at revision r (r >= 1) */
	size_t cap;
	int64_t rev;
	int64_t compacted;      /* 0: never compacted */
	uint64_t compact_batch; /* the batch that set it */
	bool compact_pending;   /* compacted since physical compaction was seen done */
	struct mlease lease[NLEASES];
	uint64_t applied;
	int64_t *batch_rev; /* batch_rev[b]: the revision after batch b */
	size_t batch_cap;
	unsigned n_compacts, n_revokes, n_failed; /* informative */
};

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	MODEL_CHECK(q != NULL);
	return q;
}

static void model_reset(struct model *m)
{
	if (m->cap < 2) {
		m->cap = 1024;
		m->at = xrealloc(NULL, m->cap * sizeof *m->at);
	}
	if (m->batch_cap == 0) {
		m->batch_cap = 256;
		m->batch_rev = xrealloc(NULL, m->batch_cap * sizeof *m->batch_rev);
	}
	m->rev = 1;
	m->compacted = 0;
	m->compact_batch = 0;
	m->compact_pending = false;
	memset(m->lease, 0, sizeof m->lease);
	m->applied = 0;
	memset(m->at[1], 0, sizeof m->at[1]);
	m->batch_rev[0] = 1;
	m->n_compacts = m->n_revokes = m->n_failed = 0;
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
		m->cap *= 2;
		m->at = xrealloc(m->at, m->cap * sizeof *m->at);
	}
	memcpy(m->at[m->rev + 1], m->at[m->rev], sizeof m->at[0]);
	m->rev++;
	return m->at[m->rev];
}

static void model_put(struct mkey *kk, int64_t rev, uint64_t b, unsigned i, int64_t lease)
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
	kk->lease = lease;
}

static bool model_lease_live(const struct model *m, int64_t id)
{
	return id == 0 || m->lease[lease_slot(id)].live;
}

/* The keys attached to lease id at the current revision: a Put with another
 * lease or none, or a delete, detaches a key. */
static uint8_t model_lease_keys(const struct model *m, int64_t id)
{
	uint8_t set = 0;
	for (unsigned k = 0; k < NKEYS; k++) {
		if (m->at[m->rev][k].live && m->at[m->rev][k].lease == id) {
			set = (uint8_t)(set | 1u << k);
		}
	}
	return set;
}

/* Applies request i of batch b to the model: its result, 0 or a kv error
 * (a failed request changes nothing). */
static int model_op(struct model *m, uint64_t b, unsigned i, const struct op *o)
{
	struct mkey *nk;
	struct mlease *ml = NULL;
	if (o->kind >= OP_GRANT) {
		ml = &m->lease[lease_slot(o->lease)];
	}
	switch (o->kind) {
	case OP_PUT:
		if (!model_lease_live(m, o->lease)) {
			return KV_ELEASENOTFOUND;
		}
		nk = model_next_rev(m);
		model_put(&nk[o->k1], m->rev, b, i, o->lease);
		return 0;
	case OP_TXN2:
		if (!model_lease_live(m, o->lease) || !model_lease_live(m, o->lease2)) {
			return KV_ELEASENOTFOUND; /* the Txn's first Put is undone too */
		}
		nk = model_next_rev(m);
		model_put(&nk[o->k1], m->rev, b, i, o->lease);
		model_put(&nk[o->k2], m->rev, b, i, o->lease2);
		return 0;
	case OP_DEL:
	case OP_DEL_RANGE: {
		unsigned end = o->kind == OP_DEL ? o->k1 + 1 : o->k2;
		bool any = false;
		for (unsigned k = o->k1; k < end; k++) {
			any = any || m->at[m->rev][k].live;
		}
		if (!any) {
			return 0; /* deleting nothing takes no revision */
		}
		nk = model_next_rev(m);
		for (unsigned k = o->k1; k < end; k++) {
			memset(&nk[k], 0, sizeof nk[k]);
		}
		return 0;
	}
	case OP_COMPACT:
		if (o->arg <= m->compacted) {
			return KV_ECOMPACTED;
		}
		if (o->arg > m->rev) {
			return KV_EFUTUREREV;
		}
		m->compacted = o->arg; /* takes no revision */
		m->compact_batch = b;
		m->compact_pending = true;
		m->n_compacts++;
		return 0;
	case OP_GRANT:
		if (ml->live) {
			return KV_ELEASEEXIST;
		}
		ml->live = true;
		ml->ttl = o->arg;
		ml->remaining = 0;
		return 0;
	case OP_CHECKPOINT:
		if (!ml->live) {
			return KV_ELEASENOTFOUND;
		}
		ml->remaining = o->arg;
		return 0;
	case OP_REVOKE: {
		if (!ml->live) {
			return KV_ELEASENOTFOUND;
		}
		uint8_t keys = model_lease_keys(m, o->lease);
		if (keys != 0) { /* all in one revision; none: no revision */
			nk = model_next_rev(m);
			for (unsigned k = 0; k < NKEYS; k++) {
				if (keys & 1u << k) {
					memset(&nk[k], 0, sizeof nk[k]);
				}
			}
			ml->revoked_at = m->rev;
			ml->revoked_keys = keys;
			m->n_revokes++;
		}
		ml->live = false;
		ml->ttl = ml->remaining = 0;
		return 0;
	}
	}
	MODEL_CHECK(!"an op kind");
	return 0;
}

/* Batch b: its requests are drawn from (seed, b) alone, then resolved
 * against the model's state before each (which revision a Compact names,
 * whether the first Put takes a lease), itself a function of the seed and b;
 * each is applied to the model as it is resolved. The first request is a
 * Put that succeeds, so every batch changes something. */
static void model_apply(struct model *m, uint64_t seed, uint64_t b, struct batch *out)
{
	MODEL_CHECK(b == m->applied + 1);
	uint64_t s = mix(seed ^ (b * 0xd1b54a32d192ed03ull));
	out->n = 1 + (unsigned)(rnd(&s) % MAX_OPS);
	for (unsigned i = 0; i < out->n; i++) {
		struct op *o = &out->ops[i];
		memset(o, 0, sizeof *o);
		unsigned r = (unsigned)(rnd(&s) % 20);
		o->k1 = (unsigned)(rnd(&s) % NKEYS);
		o->k2 = (unsigned)(rnd(&s) % NKEYS);
		uint64_t x = rnd(&s), y = rnd(&s);
		unsigned l1 = (unsigned)(y % NLEASES), l2 = (unsigned)((y >> 8) % NLEASES);
		if (i == 0 || r < 8) {
			o->kind = OP_PUT; /* a third with a lease, maybe one not granted */
			if (x % 3 == 0 && (i > 0 || m->lease[l1].live)) {
				o->lease = lease_id(l1);
			}
		} else if (r < 11) {
			o->kind = OP_DEL;
		} else if (r < 12) {
			o->kind = OP_DEL_RANGE;
			if (o->k2 < o->k1) {
				unsigned t = o->k1;
				o->k1 = o->k2;
				o->k2 = t;
			}
			o->k2++; /* non-empty: [k1, k2] inclusive of the larger */
		} else if (r < 14) {
			o->kind = OP_TXN2;
			if (o->k2 == o->k1) {
				o->k2 = (o->k1 + 1) %
					NKEYS; /* distinct: etcd's duplicate-key rule */
			}
			o->lease = x % 4 == 0 ? lease_id(l1) : 0;
			o->lease2 = (x >> 2) % 4 == 0 ? lease_id(l2) : 0;
		} else if (r < 15) {
			o->kind = OP_COMPACT; /* a few revisions back; now and then too far */
			int64_t back = (int64_t)(x % 8);
			o->arg = y % 12 == 0 ? m->rev + 1 : (m->rev > back ? m->rev - back : 1);
		} else if (r < 17) {
			o->kind = OP_GRANT;
			o->lease = lease_id(l1);
			o->arg = 1 + (int64_t)(x % LEASE_TTL_MAX);
		} else if (r < 18) {
			o->kind = OP_CHECKPOINT;
			o->lease = lease_id(l1);
			o->arg = (int64_t)(x % LEASE_TTL_MAX);
		} else {
			o->kind = OP_REVOKE;
			o->lease = lease_id(l1);
		}
		o->want = model_op(m, b, i, o);
		o->rev = m->rev;
		m->n_failed += o->want != 0;
	}
	MODEL_CHECK(out->ops[0].want == 0);
	if (b >= m->batch_cap) {
		m->batch_cap *= 2;
		m->batch_rev = xrealloc(m->batch_rev, m->batch_cap * sizeof *m->batch_rev);
	}
	m->batch_rev[b] = m->rev;
	m->applied = b;
}

/* ---- applying a batch to the store (child and parent) ---- */

static const char *result_name(int rv)
{
	return rv == 0 ? "ok" : kv_strerror(rv);
}

/* Runs request o of batch b; *rev: the revision the store reported, -1 if
 * none. No cmocka calls: the child runs it too. */
static int store_op(struct kv_wtx *w, uint64_t b, unsigned i, const struct op *o, int64_t *rev)
{
	static uint8_t v1[MAX_VALUE], v2[MAX_VALUE];
	char k1[3], k2[3];
	int rv = 0;
	*rev = -1;
	key_name(o->k1, k1);
	key_name(o->k2 < NKEYS ? o->k2 : NKEYS, k2); /* "k8": end of the key space */
	switch (o->kind) {
	case OP_PUT: {
		struct kv_put_req q = { .key = (const uint8_t *)k1,
					.key_len = 2,
					.value = v1,
					.value_len = value_of(b, i, o->k1, v1),
					.lease = o->lease };
		struct kv_put_resp r;
		rv = kv_put(w, &q, &r);
		if (rv == 0) {
			*rev = r.revision;
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
			*rev = r.revision;
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
				     .value_len = value_of(b, i, o->k1, v1),
				     .lease = o->lease } },
			{ .type = KV_OP_PUT,
			  .u.put = { .key = (const uint8_t *)k2,
				     .key_len = 2,
				     .value = v2,
				     .value_len = value_of(b, i, o->k2, v2),
				     .lease = o->lease2 } },
		};
		struct kv_txn_req q = { .success = ops, .n_success = 2 };
		struct kv_txn_resp r;
		rv = kv_txn(w, &q, &r);
		if (rv == 0) {
			*rev = r.succeeded ? r.revision : -2; /* no compare: it must succeed */
			kv_txn_resp_free(&r);
		}
		break;
	}
	case OP_COMPACT:
		rv = kv_compact(w, o->arg);
		break;
	case OP_GRANT:
		rv = kv_lease_grant(w, o->lease, o->arg);
		break;
	case OP_CHECKPOINT:
		rv = kv_lease_checkpoint(w, o->lease, o->arg);
		break;
	case OP_REVOKE: {
		int64_t r = -1;
		rv = kv_lease_revoke(w, o->lease, &r);
		if (rv == 0) {
			*rev = r;
		}
		break;
	}
	}
	return rv;
}

/* Applies batch b, as the model resolved it, in one write transaction,
 * checking each request's result and revision against the model's, and
 * commits it with applied index b. 0; or, with a message in why, a kv error
 * (a request's unexpected one, or the commit's) or 1 (a request that should
 * have failed, or a revision that differs). No cmocka calls: the child runs
 * it too. */
static int store_apply(struct kv_store *s, uint64_t b, const struct batch *bt, char *why,
		       size_t why_len)
{
	struct kv_wtx *w = NULL;
	int rv = kv_txn_begin_write(s, &w);
	if (rv != 0) {
		snprintf(why, why_len, "batch %" PRIu64 ": begin: %s", b, kv_strerror(rv));
		return rv;
	}
	for (unsigned i = 0; i < bt->n; i++) {
		const struct op *o = &bt->ops[i];
		int64_t rev;
		rv = store_op(w, b, i, o, &rev);
		if (rv != o->want) {
			snprintf(why, why_len,
				 "batch %" PRIu64 " request %u (%s k%u k%u lease %#" PRIx64
				 " arg %" PRId64 "): %s, model: %s",
				 b, i, op_names[o->kind], o->k1, o->k2, (uint64_t)o->lease, o->arg,
				 result_name(rv), result_name(o->want));
			kv_txn_abort(w);
			return rv != 0 ? rv : 1;
		}
		if (rv == 0 && rev != -1 && rev != o->rev) {
			snprintf(why, why_len,
				 "batch %" PRIu64 " request %u (%s): revision %" PRId64
				 ", model %" PRId64 " (-2: the Txn did not succeed)",
				 b, i, op_names[o->kind], rev, o->rev);
			kv_txn_abort(w);
			return 1;
		}
	}
	rv = kv_txn_commit(w, b);
	if (rv != 0) {
		snprintf(why, why_len, "batch %" PRIu64 ": commit: %s", b, kv_strerror(rv));
	}
	return rv;
}

static bool batch_compacts(const struct batch *bt)
{
	for (unsigned i = 0; i < bt->n; i++) {
		if (bt->ops[i].kind == OP_COMPACT && bt->ops[i].want == 0) {
			return true;
		}
	}
	return false;
}

/* The compaction steps run before batch b: 0..MAX_CHILD_STEPS steps of
 * 1..STEP_KEYS keys, a function of (seed, b); fewer once *done. */
static int store_steps(struct kv_store *s, uint64_t seed, uint64_t b, bool *done, char *why,
		       size_t why_len)
{
	uint64_t z = mix(seed ^ (b * 0x9fb21c651e98df25ull) ^ 0x57e9ull);
	unsigned n = (unsigned)(z % (MAX_CHILD_STEPS + 1));
	size_t keys = 1 + (size_t)((z >> 16) % STEP_KEYS);
	*done = false;
	for (unsigned i = 0; i < n && !*done; i++) {
		int rv = kv_compact_step(s, keys, done);
		if (rv != 0) {
			snprintf(why, why_len, "compaction step %u before batch %" PRIu64 ": %s", i,
				 b, kv_strerror(rv));
			return rv;
		}
	}
	return 0;
}

/* ---- the child: apply batches for ever, ack each after its commit ---- */

static void child_exit(int code, const char *why)
{
	fprintf(stderr, "child %d: %s\n", (int)getpid(), why);
	_exit(code);
}

/* m: the child's copy of the parent's model, at the store's applied index. */
static void child_run(const char *dir, int fd, uint64_t seed, struct model *m)
{
	char why[512];
	struct kv_options o = { .quota_bytes = QUOTA };
	struct kv_store *s = NULL;
	if (kv_open(dir, &o, &s) != 0) {
		_exit(10);
	}
	struct kv_status st;
	if (kv_status(s, &st) != 0) {
		_exit(11);
	}
	if (st.applied_index != m->applied) {
		snprintf(why, sizeof why, "applied index %" PRIu64 ", model %" PRIu64,
			 st.applied_index, m->applied);
		child_exit(14, why);
	}
	for (uint64_t b = st.applied_index + 1; b <= st.applied_index + MAX_CHILD_BATCHES; b++) {
		bool done;
		int rv = store_steps(s, seed, b, &done, why, sizeof why);
		if (rv != 0) {
			child_exit(15, why);
		}
		uint64_t ack = b | ACK_STEPS_DONE;
		if (done && write(fd, &ack, sizeof ack) != (ssize_t)sizeof ack) {
			_exit(13);
		}
		struct batch bt;
		model_apply(m, seed, b, &bt);
		rv = store_apply(s, b, &bt, why, sizeof why);
		if (rv != 0) {
			child_exit(rv < 0 && rv > -100 ? 20 - rv : 12, why);
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
	char rdir[256];           /* the replica's */
	pid_t child;              /* > 0 while a child may be alive: the teardown kills it */
	struct kv_store *s;       /* the reopened store, closed by the teardown on failure */
	struct kv_store *replica; /* the same batches, no crash, no compaction step */
	uint64_t steps_done;      /* the last batch before which the child's steps said done */
	struct model m;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "cairn-mvcccrash");
	h_tmpdir_make(f->rdir, sizeof f->rdir, "cairn-mvcccrash-replica");
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
	kv_close(f->s);
	kv_close(f->replica);
	h_tmpdir_remove(f->dir);
	h_tmpdir_remove(f->rdir);
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

/* One word from the child: 1 if it acknowledges a batch (in *acked),
 * 0 if steps said done (in f->steps_done). */
static uint64_t take_ack(struct fx *f, uint64_t a, uint64_t *acked)
{
	uint64_t b = a & ~ACK_STEPS_DONE;
	if (a & ACK_STEPS_DONE) {
		f->steps_done = b > f->steps_done ? b : f->steps_done;
		return 0;
	}
	*acked = b > *acked ? b : *acked;
	return 1;
}

/* The model and the replica take batch applied + 1. */
static void advance(struct fx *f, uint64_t seed, int round, struct batch *bt)
{
	char why[512];
	uint64_t b = f->m.applied + 1;
	model_apply(&f->m, seed, b, bt);
	int rv = store_apply(f->replica, b, bt, why, sizeof why);
	if (rv != 0) {
		fail_msg("seed %" PRIu64 " round %d: replica: %s", seed, round, why);
	}
}

/* ---- checks after reopen ---- */

/* The store's keys at revision rev against the model's; below the
 * compacted revision, KV_ECOMPACTED. */
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
	if (rev < m->compacted) {
		if (rv != KV_ECOMPACTED) {
			fail_msg("seed %" PRIu64 " round %d: range at %" PRId64
				 " below the compacted revision %" PRId64 ": %s",
				 seed, round, rev, m->compacted, result_name(rv));
		}
		return;
	}
	if (rv != 0) {
		fail_msg("seed %" PRIu64 " round %d: range at %" PRId64 " (compacted %" PRId64
			 "): %s",
			 seed, round, rev, m->compacted, kv_strerror(rv));
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
				 " key %s missing (%zu keys returned, compacted %" PRId64 ")",
				 seed, round, rev, name, r.n_kvs, m->compacted);
		}
		const struct kv_kv *kv = &r.kvs[j];
		size_t len = value_of(mk[k].batch, mk[k].op, k, want);
		if (kv->create_revision != mk[k].create || kv->mod_revision != mk[k].mod ||
		    kv->version != mk[k].version || kv->lease != mk[k].lease ||
		    kv->value_len != len || memcmp(kv->value, want, len) != 0) {
			fail_msg("seed %" PRIu64 " round %d: at revision %" PRId64
				 " key %s: create %" PRId64 " mod %" PRId64 " version %" PRId64
				 " lease %#" PRIx64 " len %zu; model: create %" PRId64
				 " mod %" PRId64 " version %" PRId64 " lease %#" PRIx64
				 " len %zu (batch %" PRIu64 " op %u)",
				 seed, round, rev, name, kv->create_revision, kv->mod_revision,
				 kv->version, (uint64_t)kv->lease, kv->value_len, mk[k].create,
				 mk[k].mod, mk[k].version, (uint64_t)mk[k].lease, len, mk[k].batch,
				 mk[k].op);
		}
		j++;
	}
	if (j != r.n_kvs || r.count != (int64_t)j) {
		fail_msg("seed %" PRIu64 " round %d: at revision %" PRId64
			 " %zu keys (count %" PRId64 "), model %zu (compacted %" PRId64 ")",
			 seed, round, rev, r.n_kvs, r.count, j, m->compacted);
	}
	kv_range_resp_free(&r);
}

/* The newest CHECK_WINDOW revisions, revision 1, those around the compacted
 * one and around each lease's last revocation, and a random sample. */
static void check_reads(struct kv_store *s, const struct model *m, int round, uint64_t seed,
			uint64_t *rs)
{
	for (int64_t rev = m->rev > CHECK_WINDOW ? m->rev - CHECK_WINDOW : 1; rev <= m->rev;
	     rev++) {
		check_rev(s, m, rev, round, seed);
	}
	check_rev(s, m, 1, round, seed);
	if (m->compacted > 1) {
		check_rev(s, m, m->compacted - 1, round, seed);
	}
	if (m->compacted > 0) {
		check_rev(s, m, m->compacted, round, seed);
	}
	if (m->applied > 0) {
		check_rev(s, m, m->batch_rev[m->applied - 1], round, seed);
	}
	for (int i = 0; i < 16; i++) {
		check_rev(s, m, 1 + (int64_t)(rnd(rs) % (uint64_t)m->rev), round, seed);
	}
	/* A revoked lease's keys: there, attached, at the revision before the
	 * revocation; gone at its revision. */
	for (unsigned l = 0; l < NLEASES; l++) {
		const struct mlease *ml = &m->lease[l];
		if (ml->revoked_at == 0) {
			continue;
		}
		for (unsigned k = 0; k < NKEYS; k++) {
			if (ml->revoked_keys & 1u << k) {
				assert_true(m->at[ml->revoked_at - 1][k].live);
				assert_true(m->at[ml->revoked_at - 1][k].lease == lease_id(l));
				assert_false(m->at[ml->revoked_at][k].live);
			}
		}
		check_rev(s, m, ml->revoked_at - 1, round, seed);
		check_rev(s, m, ml->revoked_at, round, seed);
	}
	struct kv_range_req q = { .key = (const uint8_t *)"k0",
				  .key_len = 2,
				  .revision = m->rev + 1 };
	struct kv_range_resp r;
	assert_int_equal(kv_range(s, &q, &r), KV_EFUTUREREV);
}

/* kv_lease_list and kv_lease_time_to_live (with and without keys) against
 * the model's leases. */
static void check_leases(struct kv_store *s, const struct model *m, int round, uint64_t seed)
{
	struct kv_lease_list ll;
	int rv = kv_lease_list(s, &ll);
	if (rv != 0) {
		fail_msg("seed %" PRIu64 " round %d: lease list: %s", seed, round, kv_strerror(rv));
	}
	size_t j = 0;
	for (unsigned l = 0; l < NLEASES; l++) {
		const struct mlease *ml = &m->lease[l];
		if (!ml->live) {
			continue;
		}
		if (j >= ll.n || ll.leases[j].id != lease_id(l) || ll.leases[j].ttl != ml->ttl ||
		    ll.leases[j].remaining != ml->remaining) {
			struct kv_lease got = j < ll.n ? ll.leases[j] : (struct kv_lease){ 0 };
			fail_msg("seed %" PRIu64
				 " round %d: lease list entry %zu of %zu: id %#" PRIx64
				 " ttl %" PRId64 " remaining %" PRId64 "; model: id %#" PRIx64
				 " ttl %" PRId64 " remaining %" PRId64,
				 seed, round, j, ll.n, (uint64_t)got.id, got.ttl, got.remaining,
				 (uint64_t)lease_id(l), ml->ttl, ml->remaining);
		}
		j++;
	}
	if (j != ll.n) {
		fail_msg("seed %" PRIu64 " round %d: %zu leases listed, model %zu", seed, round,
			 ll.n, j);
	}
	kv_lease_list_free(&ll);
	for (unsigned l = 0; l < NLEASES; l++) {
		const struct mlease *ml = &m->lease[l];
		for (int with_keys = 1; with_keys >= 0; with_keys--) {
			struct kv_lease_info info;
			rv = kv_lease_time_to_live(s, lease_id(l), with_keys, &info);
			if (!ml->live) {
				if (rv != KV_ELEASENOTFOUND) {
					fail_msg("seed %" PRIu64 " round %d: time to live of lease "
						 "%#" PRIx64 " (not granted): %s",
						 seed, round, (uint64_t)lease_id(l),
						 result_name(rv));
				}
				continue;
			}
			if (rv != 0 || info.lease.id != lease_id(l) || info.lease.ttl != ml->ttl ||
			    info.lease.remaining != ml->remaining) {
				fail_msg("seed %" PRIu64
					 " round %d: time to live of lease %#" PRIx64
					 ": %s, ttl %" PRId64 " remaining %" PRId64
					 "; model: ttl %" PRId64 " remaining %" PRId64,
					 seed, round, (uint64_t)lease_id(l), result_name(rv),
					 info.lease.ttl, info.lease.remaining, ml->ttl,
					 ml->remaining);
			}
			uint8_t keys = with_keys ? model_lease_keys(m, lease_id(l)) : 0;
			size_t n = 0;
			for (unsigned k = 0; k < NKEYS; k++) {
				if (!(keys & 1u << k)) {
					continue;
				}
				char name[3];
				key_name(k, name);
				if (n >= info.n_keys || info.key_lens[n] != 2 ||
				    memcmp(info.keys[n], name, 2) != 0) {
					fail_msg("seed %" PRIu64 " round %d: lease %#" PRIx64
						 ": key %s missing or out of order (%zu keys)",
						 seed, round, (uint64_t)lease_id(l), name,
						 info.n_keys);
				}
				n++;
			}
			if (n != info.n_keys) {
				fail_msg("seed %" PRIu64 " round %d: lease %#" PRIx64
					 " (with keys: %d): %zu keys, model %zu",
					 seed, round, (uint64_t)lease_id(l), with_keys, info.n_keys,
					 n);
			}
			kv_lease_info_free(&info);
		}
	}
}

/* kv_hash_kv at rev: the revision and compacted revision it reports agree
 * with the model. */
static uint64_t hash_at(struct kv_store *s, const struct model *m, int64_t rev, const char *who,
			int round, uint64_t seed)
{
	struct kv_hash h;
	int rv = kv_hash_kv(s, rev, &h);
	if (rv != 0 || h.revision != rev || h.compacted != m->compacted) {
		fail_msg("seed %" PRIu64 " round %d: %s: hash at %" PRId64 ": %s, revision %" PRId64
			 " compacted %" PRId64 " (model: compacted %" PRId64 ")",
			 seed, round, who, rev, result_name(rv), h.revision, h.compacted,
			 m->compacted);
	}
	return h.hash;
}

/* The hashes at the current and the compacted revision, equal to the
 * replica's (same batches, no step run): *cur and *at_compacted (0 if never
 * compacted). */
static void check_hashes(struct fx *f, struct kv_store *s, int round, uint64_t seed, uint64_t *cur,
			 uint64_t *at_compacted)
{
	const struct model *m = &f->m;
	*cur = hash_at(s, m, m->rev, "store", round, seed);
	uint64_t r = hash_at(f->replica, m, m->rev, "replica", round, seed);
	if (*cur != r) {
		fail_msg("seed %" PRIu64 " round %d: hash at %" PRId64 " (compacted %" PRId64
			 ") %#" PRIx64 ", the replica's %#" PRIx64,
			 seed, round, m->rev, m->compacted, *cur, r);
	}
	*at_compacted = 0;
	if (m->compacted > 0) {
		*at_compacted = hash_at(s, m, m->compacted, "store", round, seed);
		r = hash_at(f->replica, m, m->compacted, "replica", round, seed);
		if (*at_compacted != r) {
			fail_msg("seed %" PRIu64
				 " round %d: hash at the compacted revision %" PRId64 " %#" PRIx64
				 ", the replica's %#" PRIx64,
				 seed, round, m->compacted, *at_compacted, r);
		}
	}
	if (m->compacted > 1) {
		struct kv_hash h;
		assert_int_equal(kv_hash_kv(s, m->compacted - 1, &h), KV_ECOMPACTED);
	}
}

static void check_status(const struct model *m, const struct kv_status *st, int round,
			 uint64_t seed)
{
	/* Each batch changes something, so the revision names the last batch
	 * applied: it must be exactly the applied index's (all or nothing). */
	if (st->revision != m->rev || st->compacted != m->compacted) {
		fail_msg("seed %" PRIu64 " round %d: applied %" PRIu64 " revision %" PRId64
			 " compacted %" PRId64 ", model %" PRId64 " and %" PRId64 " (batch %" PRIu64
			 " partly or not applied?)",
			 seed, round, st->applied_index, st->revision, st->compacted, m->rev,
			 m->compacted, st->applied_index);
	}
	/* A physical compaction is pending (up to the compacted revision) only
	 * if one was recorded since the last was seen done. */
	if (st->compact_target < 0 || st->compact_target > st->compacted ||
	    (st->compact_target > 0 && !m->compact_pending)) {
		fail_msg("seed %" PRIu64 " round %d: compact target %" PRId64 ", compacted %" PRId64
			 " (a compaction pending in the model: %d)",
			 seed, round, st->compact_target, st->compacted, m->compact_pending);
	}
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
		struct batch bt;
		advance(f, seed, round, &bt);
	}
	check_status(&f->m, &st, round, seed);
	/* Steps the child acknowledged as done after the last compaction:
	 * their commits survive the kill. */
	if (f->steps_done > f->m.compact_batch && st.compact_target != 0) {
		fail_msg("seed %" PRIu64 " round %d: compaction steps before batch %" PRIu64
			 " said done, compact target %" PRId64 " (compacted by batch %" PRIu64 ")",
			 seed, round, f->steps_done, st.compact_target, f->m.compact_batch);
	}
	if (st.compact_target == 0) {
		f->m.compact_pending = false;
	}
	check_reads(s, &f->m, round, seed, rs);
	check_leases(s, &f->m, round, seed);
	uint64_t h, hc;
	check_hashes(f, s, round, seed, &h, &hc);
}

/* Finishes a pending physical compaction with kv_compact_step: pending until
 * a step says done, then not; no answer nor hash changes. */
static void finish_compaction(struct fx *f, struct kv_store *s, int round, uint64_t seed,
			      uint64_t *rs)
{
	uint64_t h0, hc0, h1, hc1;
	check_hashes(f, s, round, seed, &h0, &hc0);
	bool done = false;
	int n = 0;
	while (!done) {
		if (n++ == MAX_FINISH_STEPS) {
			fail_msg("seed %" PRIu64 " round %d: compaction to %" PRId64
				 " not done after %d steps",
				 seed, round, f->m.compacted, MAX_FINISH_STEPS);
		}
		int rv = kv_compact_step(s, 1 + (size_t)(rnd(rs) % STEP_KEYS), &done);
		if (rv != 0) {
			fail_msg("seed %" PRIu64 " round %d: compaction step %d: %s", seed, round,
				 n, kv_strerror(rv));
		}
		struct kv_status st;
		assert_int_equal(kv_status(s, &st), 0);
		check_status(&f->m, &st, round, seed);
		if ((st.compact_target == 0) != done) {
			fail_msg("seed %" PRIu64 " round %d: after compaction step %d: done %d, "
				 "compact target %" PRId64,
				 seed, round, n, done, st.compact_target);
		}
	}
	f->m.compact_pending = false;
	check_reads(s, &f->m, round, seed, rs);
	check_hashes(f, s, round, seed, &h1, &hc1);
	if (h1 != h0 || hc1 != hc0) {
		fail_msg("seed %" PRIu64 " round %d: finishing the compaction to %" PRId64
			 " changed the hash at %" PRId64 " from %#" PRIx64 " to %#" PRIx64
			 ", at the compacted revision from %#" PRIx64 " to %#" PRIx64,
			 seed, round, f->m.compacted, f->m.rev, h0, h1, hc0, hc1);
	}
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
	struct kv_options ro = { .quota_bytes = QUOTA, .no_sync = true };
	assert_int_equal(kv_open(f->rdir, &ro, &f->replica), 0);
	uint64_t acked = 0;
	int mid_open = 0, in_flight = 0, short_rounds = 0, pending = 0, finished = 0;
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
			child_run(f->dir, p[1], seed, &f->m);
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
			got += take_ack(f, b, &acked);
		}
		usleep((useconds_t)(rnd(&rs) % (want == 0 ? 2000 : 3000)));
		int status = 0;
		pid_t pid = f->child;
		reap(f, &status);
		/* Acks written just before the kill count too (the pipe holds them;
		 * the write end closed with the child, so this ends at EOF). */
		for (int k = 0; k < 2 * MAX_CHILD_BATCHES + 1; k++) {
			uint64_t b;
			if (read(p[0], &b, sizeof b) != (ssize_t)sizeof b) {
				break;
			}
			got += take_ack(f, b, &acked);
		}
		close(p[0]);
		if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
			fail_msg(
				"seed %" PRIu64 " round %d: child %d ended with status %#x before "
				"the kill (exit 10: open, 12: a result or revision unlike the "
				"model's, 14: applied index, 15: compaction step, 20 + n: kv error "
				"-n; its message is on stderr)",
				seed, round, (int)pid, (unsigned)status);
		}
		short_rounds += got < want; /* a slow machine: still a valid round */

		struct kv_options o = { .quota_bytes = QUOTA };
		int rv = kv_open(f->dir, &o, &f->s);
		if (rv != 0) {
			fail_msg("seed %" PRIu64 " round %d: reopen: %s", seed, round,
				 kv_strerror(rv));
		}
		uint64_t before = f->m.applied;
		check_store(f, f->s, acked, round, seed, &rs);
		mid_open += f->m.applied == before;
		in_flight += f->m.applied > acked;
		struct kv_status st;
		assert_int_equal(kv_status(f->s, &st), 0);
		pending += st.compact_target > 0;
		/* A compaction the crash left unfinished: the parent finishes it
		 * on some rounds, and leaves it to the next child on others. */
		if (st.compact_target > 0 && rnd(&rs) % 2 == 0) {
			finish_compaction(f, f->s, round, seed, &rs);
			finished++;
		}
		/* The store takes new writes: the next batch, by the parent. */
		struct batch bt;
		char why[512];
		uint64_t b = f->m.applied + 1;
		advance(f, seed, round, &bt);
		rv = store_apply(f->s, b, &bt, why, sizeof why);
		if (rv != 0) {
			fail_msg("seed %" PRIu64 " round %d: after reopen: %s", seed, round, why);
		}
		acked = f->m.applied;
		assert_int_equal(kv_status(f->s, &st), 0);
		if (batch_compacts(&bt) && st.compact_target == 0) {
			fail_msg("seed %" PRIu64 " round %d: batch %" PRIu64
				 " compacted to %" PRId64 ", no physical compaction pending",
				 seed, round, b, f->m.compacted);
		}
		check_store(f, f->s, acked, round, seed, &rs);
		kv_close(f->s);
		f->s = NULL;
	}
	/* Where the kills landed depends on timing: informative only. */
	print_message("seed %" PRIu64 ": %d kills, %" PRIu64 " batches, revision %" PRId64
		      ", compacted %" PRId64 " (%u compactions, %u revocations deleting keys, "
		      "%u requests failing by design), %d rounds with no new batch, %d with an "
		      "unacknowledged batch committed, %d short of acks, %d with a compaction "
		      "pending (%d finished by the parent), %lld ms\n",
		      seed, ROUNDS, f->m.applied, f->m.rev, f->m.compacted, f->m.n_compacts,
		      f->m.n_revokes, f->m.n_failed, mid_open, in_flight, short_rounds, pending,
		      finished, (long long)(now_ms() - t0));
	assert_true(f->m.applied > ROUNDS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_mvcc_crash_sigkill, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
