/* test_mvcc_powerloss.c: the LMDB MVCC store after simulated power losses
 * (architecture.md §4.2, "Durability and recovery"): a commit writes its dirty
 * pages, syncs them once, and writes its meta page unsynced (MDB_NOMETASYNC),
 * which the next commit's sync makes durable; so after a power loss the store
 * must open consistent, at a commit no older than the one before the last
 * acknowledged one. A SIGKILL alone cannot test that (the page cache
 * survives a process), so the writes themselves are recorded.
 *
 * Each round: the data file as it stands is the base image, taken as durable
 * (rounds are separated by a clean shutdown). A child
 * (this binary re-executed with --powerloss-child, with shim/powerloss_shim.c
 * preloaded) opens the store with default sync settings and applies batches
 * of Puts, DeleteRanges and Txns (batch b committed with applied index b),
 * announcing each batch before it starts and acknowledging it after
 * kv_txn_commit returns. The shim logs every write to data.mdb (offset,
 * bytes) and every completed sync, in order. The parent kills the child with
 * SIGKILL at a seeded point, then builds the power-loss image: the base, every
 * write logged before the last sync marker, then each write after it kept,
 * dropped or torn (each 512-byte sector of it kept or not), in log order; on
 * some rounds every later write is dropped or every one kept, and on some the
 * file keeps the length the lost writes gave it (zeros). A checker process
 * (forked, so that LMDB meeting a bad page cannot take the test down: its
 * signal is reported) opens the image and checks: it opens; acked - 1 <= applied index <= the last batch
 * started (and >= the base's); the revision is the model's after that batch;
 * every revision from 1 to it reads exactly as the model says (keys, values,
 * create and mod revisions, versions), one past it is a future revision; and
 * the store takes the next batch. The image, with that batch, is the next
 * round's base, so rounds build on one another's recoveries. Round 0 starts
 * from a store the parent created; test_mvcc_powerloss_create covers creation.
 *
 * Replay: MVCC_POWERLOSS_SEED=<n> bin/test_mvcc_powerloss. The kill point
 * depends on timing; the batches are a function of the seed and batch number
 * and the image's choices of the seed, round and log. MVCC_POWERLOSS_ROUNDS=<n>
 * changes the number of rounds. MVCC_POWERLOSS_NOSYNC=1 runs the child with
 * kv_options.no_sync (MDB_NOSYNC): a store that promises nothing, which this
 * test must then fail (a manual check that it can catch a broken store).
 * Bounded: ROUNDS rounds or TIME_BUDGET_MS, each child MAX_CHILD_BATCHES
 * batches, each wait bounded in time. */
#define _DEFAULT_SOURCE /* usleep, mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_mvcc.h"
#include "shim/powerloss_log.h"
#include "tmpdir.h"

#ifndef CAIRN_POWERLOSS_SHIM
#error "CAIRN_POWERLOSS_SHIM (the path of the preload library) comes from tests/unit/CMakeLists.txt"
#endif

#define ROUNDS 100
#define TIME_BUDGET_MS 15000 /* rounds stop here (at least MIN_ROUNDS run) */
#define MIN_ROUNDS 10
#define NKEYS 8
#define MAX_OPS 6            /* requests per batch */
#define MAX_CHILD_BATCHES 40 /* per child; then it idles until killed */
#define CREATE_ROUNDS 16
#define MAX_ACKS_WAITED 12
#define ROUND_WAIT_MS 2000  /* bound on the wait for acks in one round */
#define CHECK_WAIT_MS 60000 /* bound on one checker (an ASan build is slow) */
#define MAX_VALUE 4200      /* > a page: some values take overflow pages */
#define QUOTA ((uint64_t)256 << 20)
#define SECTOR 512
#define MAX_LOG ((size_t)256 << 20)    /* bound on one round's log */
#define ACK_START ((uint64_t)1 << 63)  /* word b | this: batch b starts */
#define ACK_OPENED ((uint64_t)1 << 62) /* the word: the store is open */
#define CHILD_ARG "--powerloss-child"
#define SEED_HELP "MVCC_POWERLOSS_SEED=%" PRIu64 " bin/test_mvcc_powerloss"

_Static_assert(MAX_OPS * 2 <= 16, "a batch's revisions fit the model's per-batch bound");
_Static_assert(NKEYS <= 9, "key names are one digit, and k<NKEYS> ends the key space");

/* In code the child and the checker run: no cmocka there (a failure would
 * unwind into a copy of the test runner). */
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

/* ---- batches and the model ---- */

enum op_kind { OP_PUT, OP_DEL, OP_DEL_RANGE, OP_TXN2 };

static const char *const op_names[] = { "put", "delete", "delete range", "txn" };

/* One request: its keys, and the revision the store must report after it. */
struct op {
	enum op_kind kind;
	unsigned k1, k2; /* PUT, DEL: k1; DEL_RANGE: [k1, k2); TXN2: puts of k1 and k2 */
	int64_t rev;
};

struct batch {
	struct op ops[MAX_OPS];
	unsigned n;
};

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

struct mkey {
	bool live;
	uint32_t op; /* the request that put the value */
	uint64_t batch;
	int64_t create, mod, version;
};

/* Every key's state after every revision: no compaction here, so the whole
 * history stays readable and is checked. */
struct model {
	struct mkey (*at)[NKEYS]; /* at[r]: the keys at revision r (r >= 1) */
	size_t cap;
	int64_t rev;
	uint64_t applied;
	int64_t *batch_rev; /* batch_rev[b]: the revision after batch b */
	size_t batch_cap;
};

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	MODEL_CHECK(q != NULL);
	return q;
}

static void model_reset(struct model *m)
{
	m->cap = 1024;
	m->at = xrealloc(m->at, m->cap * sizeof *m->at);
	m->batch_cap = 256;
	m->batch_rev = xrealloc(m->batch_rev, m->batch_cap * sizeof *m->batch_rev);
	m->rev = 1;
	m->applied = 0;
	memset(m->at[1], 0, sizeof m->at[1]);
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
		m->cap *= 2;
		m->at = xrealloc(m->at, m->cap * sizeof *m->at);
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

static void model_op(struct model *m, uint64_t b, unsigned i, const struct op *o)
{
	struct mkey *nk;
	switch (o->kind) {
	case OP_PUT:
		nk = model_next_rev(m);
		model_put(&nk[o->k1], m->rev, b, i);
		return;
	case OP_TXN2:
		nk = model_next_rev(m);
		model_put(&nk[o->k1], m->rev, b, i);
		model_put(&nk[o->k2], m->rev, b, i);
		return;
	case OP_DEL:
	case OP_DEL_RANGE: {
		unsigned end = o->kind == OP_DEL ? o->k1 + 1 : o->k2;
		bool any = false;
		for (unsigned k = o->k1; k < end; k++) {
			any = any || m->at[m->rev][k].live;
		}
		if (!any) {
			return; /* deleting nothing takes no revision */
		}
		nk = model_next_rev(m);
		for (unsigned k = o->k1; k < end; k++) {
			memset(&nk[k], 0, sizeof nk[k]);
		}
		return;
	}
	}
	MODEL_CHECK(!"an op kind");
}

/* Batch b, drawn from (seed, b) alone and applied to the model. The first
 * request is a Put, so every batch takes at least one revision. */
static void model_apply(struct model *m, uint64_t seed, uint64_t b, struct batch *out)
{
	MODEL_CHECK(b == m->applied + 1);
	uint64_t s = mix(seed ^ (b * 0xd1b54a32d192ed03ull));
	out->n = 1 + (unsigned)(rnd(&s) % MAX_OPS);
	for (unsigned i = 0; i < out->n; i++) {
		struct op *o = &out->ops[i];
		memset(o, 0, sizeof *o);
		unsigned r = (unsigned)(rnd(&s) % 16);
		o->k1 = (unsigned)(rnd(&s) % NKEYS);
		o->k2 = (unsigned)(rnd(&s) % NKEYS);
		if (i == 0 || r < 9) {
			o->kind = OP_PUT;
		} else if (r < 12) {
			o->kind = OP_DEL;
		} else if (r < 13) {
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
				o->k2 = (o->k1 + 1) % NKEYS; /* etcd's duplicate-key rule */
			}
		}
		model_op(m, b, i, o);
		o->rev = m->rev;
	}
	if (b >= m->batch_cap) {
		m->batch_cap *= 2;
		m->batch_rev = xrealloc(m->batch_rev, m->batch_cap * sizeof *m->batch_rev);
	}
	m->batch_rev[b] = m->rev;
	m->applied = b;
}

static void model_advance_to(struct model *m, uint64_t seed, uint64_t b)
{
	while (m->applied < b) {
		struct batch bt;
		model_apply(m, seed, m->applied + 1, &bt);
	}
}

/* ---- applying a batch to the store (child and checker) ---- */

/* Runs request o of batch b; *rev: the revision the store reported. */
static int store_op(struct kv_wtx *w, uint64_t b, unsigned i, const struct op *o, int64_t *rev)
{
	static uint8_t v1[MAX_VALUE], v2[MAX_VALUE];
	char k1[3], k2[3];
	int rv = 0;
	key_name(o->k1, k1);
	key_name(o->k2, k2); /* DEL_RANGE's k2 may be NKEYS: the end of the key space */
	switch (o->kind) {
	case OP_PUT: {
		struct kv_put_req q = { .key = (const uint8_t *)k1,
					.key_len = 2,
					.value = v1,
					.value_len = value_of(b, i, o->k1, v1) };
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
			*rev = r.succeeded ? r.revision : -2; /* no compare: it must succeed */
			kv_txn_resp_free(&r);
		}
		break;
	}
	}
	return rv;
}

/* Applies batch b in one write transaction, checking each request's
 * revision, and commits it with applied index b. 0, or nonzero with a
 * message in why. */
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
		int64_t rev = -1;
		rv = store_op(w, b, i, o, &rev);
		if (rv != 0 || rev != o->rev) {
			snprintf(why, why_len,
				 "batch %" PRIu64 " request %u (%s k%u k%u): %s, revision %" PRId64
				 ", model %" PRId64 " (-2: the Txn did not succeed)",
				 b, i, op_names[o->kind], o->k1, o->k2,
				 rv == 0 ? "ok" : kv_strerror(rv), rev, o->rev);
			kv_txn_abort(w);
			return rv != 0 ? rv : 1;
		}
	}
	rv = kv_txn_commit(w, b);
	if (rv != 0) {
		snprintf(why, why_len, "batch %" PRIu64 ": commit: %s", b, kv_strerror(rv));
	}
	return rv;
}

/* ---- the child: apply batches, announce and acknowledge each ---- */

static void child_exit(int code, const char *why)
{
	fprintf(stderr, "powerloss child %d: %s\n", (int)getpid(), why);
	_exit(code);
}

static void child_say(int fd, uint64_t word)
{
	if (write(fd, &word, sizeof word) != (ssize_t)sizeof word) {
		_exit(13);
	}
}

/* argv: CHILD_ARG dir fd seed applied batches. Rebuilds the model up to the
 * store's applied index, opens the store, says ACK_OPENED, applies `batches`
 * batches, then idles until killed. */
static int child_main(int argc, char **argv)
{
	if (argc != 7) {
		child_exit(2, "usage: " CHILD_ARG " dir fd seed applied batches");
	}
	const char *dir = argv[2];
	int fd = atoi(argv[3]);
	uint64_t seed = strtoull(argv[4], NULL, 0);
	uint64_t applied = strtoull(argv[5], NULL, 0);
	uint64_t batches = strtoull(argv[6], NULL, 0);
	const char *ns = getenv("MVCC_POWERLOSS_NOSYNC");
	struct model m = { 0 };
	model_reset(&m);
	model_advance_to(&m, seed, applied);
	char why[512];
	struct kv_options o = { .quota_bytes = QUOTA, .no_sync = ns != NULL && ns[0] == '1' };
	struct kv_store *s = NULL;
	int rv = kv_open(dir, &o, &s);
	if (rv != 0) {
		snprintf(why, sizeof why, "open %s: %s", dir, kv_strerror(rv));
		child_exit(10, why);
	}
	struct kv_status st;
	if (kv_status(s, &st) != 0) {
		child_exit(11, "status");
	}
	if (st.applied_index != applied) {
		snprintf(why, sizeof why, "applied index %" PRIu64 ", the parent said %" PRIu64,
			 st.applied_index, applied);
		child_exit(14, why);
	}
	child_say(fd, ACK_OPENED);
	for (uint64_t b = applied + 1; b <= applied + batches; b++) {
		struct batch bt;
		model_apply(&m, seed, b, &bt);
		child_say(fd, b | ACK_START);
		rv = store_apply(s, b, &bt, why, sizeof why);
		if (rv != 0) {
			child_exit(12, why);
		}
		child_say(fd, b);
	}
	for (int i = 0; i < 1000; i++) {
		usleep(10000); /* idle (bounded: 10 s) until killed */
	}
	_exit(0);
}

/* ---- fixture ---- */

struct fx {
	char dir[2][256]; /* the child's directory and the image's, swapped each round */
	char logdir[256]; /* the shim's log */
	char log[300];
	char self[PATH_MAX];
	char **envp;   /* the child's environment */
	pid_t child;   /* > 0 while a child may be alive: the teardown kills it */
	pid_t checker; /* likewise for the checker */
	uint8_t *base; /* the durable image the round starts from */
	size_t base_len;
	uint8_t *img; /* the power-loss image being built */
	size_t img_len, img_cap;
	uint8_t *logbuf; /* the round's log */
	size_t log_len;
	struct model m;
};

/* The child's environment: ours, with the shim preloaded, the log named, and
 * ASan told that a preloaded library ahead of its runtime is intended. */
static char **child_env(const char *log)
{
	extern char **environ;
	size_t n = 0;
	while (environ[n] != NULL) {
		n++;
	}
	char **env = calloc(n + 4, sizeof *env);
	assert_non_null(env);
	size_t j = 0;
	const char *asan = "";
	for (size_t i = 0; i < n; i++) {
		if (strncmp(environ[i], "ASAN_OPTIONS=", 13) == 0) {
			asan = environ[i] + 13;
		} else if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0 &&
			   strncmp(environ[i], PL_LOG_ENV "=", sizeof PL_LOG_ENV) != 0) {
			env[j++] = strdup(environ[i]);
		}
	}
	size_t len = strlen(asan) + 64;
	env[j] = malloc(len);
	assert_non_null(env[j]);
	snprintf(env[j++], len, "ASAN_OPTIONS=%s%sverify_asan_link_order=0", asan,
		 asan[0] != 0 ? ":" : "");
	len = sizeof "LD_PRELOAD=" + strlen(CAIRN_POWERLOSS_SHIM);
	env[j] = malloc(len);
	assert_non_null(env[j]);
	snprintf(env[j++], len, "LD_PRELOAD=%s", CAIRN_POWERLOSS_SHIM);
	len = sizeof PL_LOG_ENV "=" + strlen(log);
	env[j] = malloc(len);
	assert_non_null(env[j]);
	snprintf(env[j++], len, PL_LOG_ENV "=%s", log);
	for (size_t i = 0; i < j; i++) {
		assert_non_null(env[i]);
	}
	return env;
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir[0], sizeof f->dir[0], "cairn-powerloss-a");
	h_tmpdir_make(f->dir[1], sizeof f->dir[1], "cairn-powerloss-b");
	h_tmpdir_make(f->logdir, sizeof f->logdir, "cairn-powerloss-log");
	snprintf(f->log, sizeof f->log, "%s/writes.log", f->logdir);
	ssize_t n = readlink("/proc/self/exe", f->self, sizeof f->self - 1);
	assert_true(n > 0 && (size_t)n < sizeof f->self - 1);
	f->self[n] = 0;
	f->envp = child_env(f->log);
	*state = f;
	return 0;
}

static void reap(pid_t *pid, int *status)
{
	*status = 0;
	if (*pid <= 0) {
		return;
	}
	kill(*pid, SIGKILL);
	pid_t r;
	do {
		r = waitpid(*pid, status, 0);
	} while (r < 0 && errno == EINTR);
	*pid = 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	int status;
	reap(&f->child, &status); /* an assertion left a process behind: kill it by pid */
	reap(&f->checker, &status);
	h_tmpdir_remove(f->dir[0]);
	h_tmpdir_remove(f->dir[1]);
	h_tmpdir_remove(f->logdir);
	for (size_t i = 0; f->envp[i] != NULL; i++) {
		free(f->envp[i]);
	}
	free(f->envp);
	free(f->base);
	free(f->img);
	free(f->logbuf);
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

/* Reads the whole file at path into *buf (0 bytes if it does not exist). */
static void read_file(const char *path, uint8_t **buf, size_t *len)
{
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		assert_int_equal(errno, ENOENT);
		return;
	}
	struct stat sb;
	assert_int_equal(fstat(fd, &sb), 0);
	assert_true(sb.st_size >= 0 && (uint64_t)sb.st_size <= MAX_LOG);
	size_t n = (size_t)sb.st_size;
	*buf = realloc(*buf, n + 1);
	assert_non_null(*buf);
	size_t got = 0;
	while (got < n) {
		ssize_t k = read(fd, *buf + got, n - got);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		assert_true(k > 0);
		got += (size_t)k;
	}
	close(fd);
	*len = n;
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	size_t done = 0;
	while (done < len) {
		ssize_t k = write(fd, buf + done, len - done);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		assert_true(k > 0);
		done += (size_t)k;
	}
	assert_int_equal(close(fd), 0);
}

static void file_path(char *out, size_t len, const char *dir, const char *name)
{
	int n = snprintf(out, len, "%s/%s", dir, name);
	assert_true(n > 0 && (size_t)n < len);
}

/* ---- the power-loss image ---- */

static void img_resize(struct fx *f, size_t len)
{
	assert_true(len <= MAX_LOG);
	if (len > f->img_cap) {
		size_t cap = f->img_cap > 0 ? f->img_cap : 1 << 16;
		while (cap < len) {
			cap *= 2;
		}
		f->img = realloc(f->img, cap);
		assert_non_null(f->img);
		f->img_cap = cap;
	}
	if (len > f->img_len) {
		memset(f->img + f->img_len, 0, len - f->img_len);
	}
	f->img_len = len;
}

static void img_write(struct fx *f, uint64_t off, const uint8_t *data, uint64_t len)
{
	assert_true(off <= MAX_LOG && len <= MAX_LOG);
	if (off + len > f->img_len) {
		img_resize(f, (size_t)(off + len));
	}
	memcpy(f->img + off, data, (size_t)len);
}

/* How the writes after the last sync reach the disk in one image. */
enum fate { FATE_MIXED, FATE_NONE, FATE_ALL };

struct img_stats {
	size_t records, writes, after_sync; /* writes logged; after the last sync */
	size_t kept, dropped, torn;
	bool cut;      /* the log's last record was cut short by the kill */
	bool extended; /* the file keeps the length lost writes gave it */
	enum fate fate;
};

/* One log record at *pos, checked; false at the end of the log or at a
 * record cut short (the last one, by the kill). */
static bool log_next(struct fx *f, size_t *pos, struct pl_rec *h, const uint8_t **data, bool *cut,
		     uint64_t seed, int round)
{
	size_t left = f->log_len - *pos;
	if (left == 0) {
		return false;
	}
	if (left < sizeof *h) {
		*cut = true;
		return false;
	}
	memcpy(h, f->logbuf + *pos, sizeof *h);
	if (h->magic != PL_MAGIC || h->type < PL_REC_WRITE || h->type > PL_REC_BAD) {
		fail_msg("seed %" PRIu64 " round %d: log record at %zu: magic %#x type %u", seed,
			 round, *pos, h->magic, h->type);
	}
	if (h->type == PL_REC_BAD) {
		fail_msg("seed %" PRIu64 " round %d: the shim cannot follow the writes to "
			 "data.mdb (reason %" PRIu64 ": 1 fd beyond its table, 2 O_APPEND, 3 a "
			 "writable shared mapping, 4 too many iovecs)",
			 seed, round, h->off);
	}
	size_t len = h->type == PL_REC_WRITE ? (size_t)h->len : 0;
	if (h->type != PL_REC_WRITE && h->len != 0) {
		fail_msg("seed %" PRIu64 " round %d: log record at %zu: type %u with %" PRIu64
			 " bytes",
			 seed, round, *pos, h->type, h->len);
	}
	if (left - sizeof *h < len) {
		*cut = true;
		return false;
	}
	*data = f->logbuf + *pos + sizeof *h;
	*pos += sizeof *h + len;
	return true;
}

/* Builds f->img from f->base and the log: every write before the last sync
 * marker, then each later one kept, dropped or torn by sector, per the
 * round's fate (drawn from is). first_sync: the power fails during the first
 * sync instead (the log ends before its marker). */
static void build_image(struct fx *f, uint64_t is, struct img_stats *st, bool first_sync,
			uint64_t seed, int round)
{
	memset(st, 0, sizeof *st);
	f->img_len = 0;
	img_resize(f, f->base_len);
	if (f->base_len > 0) {
		memcpy(f->img, f->base, f->base_len);
	}
	size_t pos = 0, last_sync = 0; /* the record after the last sync */
	struct pl_rec h;
	const uint8_t *data;
	size_t stop = SIZE_MAX; /* records from here on are ignored */
	while (log_next(f, &pos, &h, &data, &st->cut, seed, round)) {
		st->records++;
		if (h.type == PL_REC_SYNC && first_sync && stop == SIZE_MAX) {
			stop = st->records - 1;
		}
		if (h.type == PL_REC_SYNC && stop == SIZE_MAX) {
			last_sync = st->records;
		}
	}
	unsigned r = (unsigned)(rnd(&is) % 8);
	st->fate = r == 0 ? FATE_NONE : r == 1 ? FATE_ALL : FATE_MIXED;
	st->extended = rnd(&is) % 2 == 0;
	uint64_t extent = 0; /* the file's length had every write landed */
	pos = 0;
	for (size_t i = 0; i < stop && log_next(f, &pos, &h, &data, &st->cut, seed, round); i++) {
		bool durable = i < last_sync;
		if (h.type == PL_REC_SIZE) {
			/* A length change after the last sync may or may not land. */
			if (durable || st->fate == FATE_ALL ||
			    (st->fate == FATE_MIXED && rnd(&is) % 2 == 0)) {
				img_resize(f, (size_t)h.off);
			}
			continue;
		}
		if (h.type != PL_REC_WRITE) {
			continue;
		}
		st->writes++;
		extent = h.off + h.len > extent ? h.off + h.len : extent;
		if (durable) {
			img_write(f, h.off, data, h.len);
			continue;
		}
		st->after_sync++;
		unsigned c = st->fate == FATE_ALL  ? 0 :
			     st->fate == FATE_NONE ? 1 :
						     (unsigned)(rnd(&is) % 3);
		if (c == 0) {
			st->kept++;
			img_write(f, h.off, data, h.len);
		} else if (c == 1) {
			st->dropped++;
		} else {
			/* Torn: each sector the write covers lands or not. */
			st->torn++;
			uint64_t end = h.off + h.len;
			for (uint64_t s = h.off; s < end;) {
				uint64_t next = (s / SECTOR + 1) * SECTOR;
				next = next < end ? next : end;
				if (rnd(&is) % 2 == 0) {
					img_write(f, s, data + (s - h.off), next - s);
				}
				s = next;
			}
		}
	}
	if (st->extended && extent > f->img_len) {
		img_resize(f, (size_t)extent);
	}
}

/* ---- the checker: open the image, compare with the model, add a batch ---- */

struct check_res {
	int ok;
	uint64_t applied; /* the store's applied index at open */
	int64_t rev;
	char msg[900];
};

static struct check_res ck;

#define CK_FAIL(...)                                          \
	do {                                                  \
		snprintf(ck.msg, sizeof ck.msg, __VA_ARGS__); \
		return;                                       \
	} while (0)

/* The store's keys at revision rev against the model's. */
static void check_rev(struct kv_store *s, const struct model *m, int64_t rev)
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
		CK_FAIL("range at %" PRId64 ": %s", rev, kv_strerror(rv));
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
			size_t n = r.n_kvs;
			kv_range_resp_free(&r);
			CK_FAIL("at revision %" PRId64 " key %s missing (%zu keys returned)", rev,
				name, n);
		}
		const struct kv_kv *kv = &r.kvs[j];
		size_t len = value_of(mk[k].batch, mk[k].op, k, want);
		if (kv->create_revision != mk[k].create || kv->mod_revision != mk[k].mod ||
		    kv->version != mk[k].version || kv->lease != 0 || kv->value_len != len ||
		    memcmp(kv->value, want, len) != 0) {
			snprintf(ck.msg, sizeof ck.msg,
				 "at revision %" PRId64 " key %s: create %" PRId64 " mod %" PRId64
				 " version %" PRId64 " lease %" PRId64 " len %zu; model: create "
				 "%" PRId64 " mod %" PRId64 " version %" PRId64
				 " len %zu (batch %" PRIu64 " op %u)",
				 rev, name, kv->create_revision, kv->mod_revision, kv->version,
				 kv->lease, kv->value_len, mk[k].create, mk[k].mod, mk[k].version,
				 len, mk[k].batch, mk[k].op);
			kv_range_resp_free(&r);
			return;
		}
		j++;
	}
	if (j != r.n_kvs || r.count != (int64_t)j) {
		size_t n = r.n_kvs;
		int64_t count = r.count;
		kv_range_resp_free(&r);
		CK_FAIL("at revision %" PRId64 " %zu keys (count %" PRId64 "), model %zu", rev, n,
			count, j);
	}
	kv_range_resp_free(&r);
}

/* Checks the store in dir against m (advanced to the applied index found);
 * applied must lie in [lo, hi]. Then applies the next batch. Fills ck. */
static void check_image(const char *dir, struct model *m, uint64_t seed, uint64_t lo, uint64_t hi)
{
	struct kv_options o = { .quota_bytes = QUOTA };
	struct kv_store *s = NULL;
	int rv = kv_open(dir, &o, &s);
	if (rv != 0) {
		CK_FAIL("open: %s", kv_strerror(rv));
	}
	struct kv_status st;
	rv = kv_status(s, &st);
	if (rv != 0) {
		kv_close(s);
		CK_FAIL("status: %s", kv_strerror(rv));
	}
	ck.applied = st.applied_index;
	ck.rev = st.revision;
	if (st.applied_index < lo || st.applied_index > hi) {
		kv_close(s);
		CK_FAIL("applied index %" PRIu64 " (revision %" PRId64 "), expected %" PRIu64
			"..%" PRIu64 " (acknowledged - 1 .. started)",
			st.applied_index, st.revision, lo, hi);
	}
	model_advance_to(m, seed, st.applied_index);
	if (st.revision != m->rev || st.compacted != 0) {
		kv_close(s);
		CK_FAIL("applied index %" PRIu64 ": revision %" PRId64 " compacted %" PRId64
			", model %" PRId64 " and 0 (batch %" PRIu64 " partly applied?)",
			st.applied_index, st.revision, st.compacted, m->rev, st.applied_index);
	}
	for (int64_t rev = 1; rev <= m->rev && ck.msg[0] == 0; rev++) {
		check_rev(s, m, rev);
	}
	if (ck.msg[0] != 0) {
		kv_close(s);
		return;
	}
	struct kv_range_req q = { .key = (const uint8_t *)"k0",
				  .key_len = 2,
				  .revision = m->rev + 1 };
	struct kv_range_resp r;
	rv = kv_range(s, &q, &r);
	if (rv != KV_EFUTUREREV) {
		if (rv == 0) {
			kv_range_resp_free(&r);
		}
		kv_close(s);
		CK_FAIL("range one past revision %" PRId64 ": %s, not a future revision", m->rev,
			rv == 0 ? "ok" : kv_strerror(rv));
	}
	/* The store takes the next batch. */
	char why[512];
	struct batch bt;
	uint64_t b = m->applied + 1;
	model_apply(m, seed, b, &bt);
	rv = store_apply(s, b, &bt, why, sizeof why);
	if (rv == 0) {
		rv = kv_status(s, &st);
		if (rv == 0 && (st.applied_index != b || st.revision != m->rev)) {
			snprintf(why, sizeof why,
				 "after batch %" PRIu64 ": applied %" PRIu64 " revision %" PRId64
				 ", model revision %" PRId64,
				 b, st.applied_index, st.revision, m->rev);
			rv = 1;
		}
	}
	if (rv == 0) {
		check_rev(s, m, m->rev);
	}
	kv_close(s);
	if (rv != 0) {
		CK_FAIL("after recovery: %s", why);
	}
	if (ck.msg[0] == 0) {
		ck.ok = 1;
	}
}

/* Runs check_image in a forked process and returns its verdict in *res; a
 * checker that dies (LMDB meeting a page it cannot read) or hangs fails. */
static void run_checker(struct fx *f, const char *dir, uint64_t seed, int round, uint64_t lo,
			uint64_t hi, struct check_res *res)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	f->checker = fork();
	if (f->checker < 0) {
		close(p[0]);
		close(p[1]);
		fail_msg("fork: %s", strerror(errno));
	}
	if (f->checker == 0) {
		/* A fault in LMDB ends this process with its signal, which the
		 * parent reports, instead of unwinding into cmocka's copy. */
		static const int faults[] = { SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE };
		for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
			signal(faults[i], SIG_DFL);
		}
		close(p[0]);
		memset(&ck, 0, sizeof ck);
		check_image(dir, &f->m, seed, lo, hi);
		size_t done = 0;
		while (done < sizeof ck) {
			ssize_t k = write(p[1], (const char *)&ck + done, sizeof ck - done);
			if (k <= 0) {
				_exit(3);
			}
			done += (size_t)k;
		}
		_exit(0);
	}
	close(p[1]);
	memset(res, 0, sizeof *res);
	size_t got = 0;
	int64_t deadline = now_ms() + CHECK_WAIT_MS;
	while (got < sizeof *res) {
		int64_t left = deadline - now_ms();
		if (left <= 0) {
			break;
		}
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		if (poll(&pfd, 1, (int)left) <= 0) {
			continue;
		}
		ssize_t k = read(p[0], (char *)res + got, sizeof *res - got);
		if (k <= 0) {
			break;
		}
		got += (size_t)k;
	}
	close(p[0]);
	int status;
	pid_t pid = f->checker;
	reap(&f->checker, &status);
	if (got < sizeof *res) {
		fail_msg("seed %" PRIu64 " round %d: checker %d gave no verdict (status %#x%s%d) "
			 "on the image in %s; replay: " SEED_HELP,
			 seed, round, (int)pid, (unsigned)status,
			 WIFSIGNALED(status) ? ", signal " : ", exit ",
			 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), dir, seed);
	}
	res->msg[sizeof res->msg - 1] = 0;
}

/* ---- the test ---- */

static const char *const fate_names[] = { "mixed", "none", "all" };

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	return v != NULL && v[0] != 0 ? strtoull(v, NULL, 0) : dflt;
}

/* Starts the child on dir (with the shim preloaded, logging to f->log from
 * empty); its words come on *rfd. */
static void spawn_child(struct fx *f, const char *dir, uint64_t seed, uint64_t applied,
			unsigned batches, int *rfd)
{
	if (unlink(f->log) != 0) {
		assert_int_equal(errno, ENOENT);
	}
	int p[2];
	assert_int_equal(pipe(p), 0);
	char fdarg[16], seedarg[32], appliedarg[32], batchesarg[16];
	snprintf(fdarg, sizeof fdarg, "%d", p[1]);
	snprintf(seedarg, sizeof seedarg, "%" PRIu64, seed);
	snprintf(appliedarg, sizeof appliedarg, "%" PRIu64, applied);
	snprintf(batchesarg, sizeof batchesarg, "%u", batches);
	char *argv[] = { f->self, CHILD_ARG,  (char *)dir, fdarg,
			 seedarg, appliedarg, batchesarg,  NULL };
	f->child = fork();
	if (f->child < 0) {
		close(p[0]);
		close(p[1]);
		fail_msg("fork: %s", strerror(errno));
	}
	if (f->child == 0) {
		close(p[0]);
		execve(f->self, argv, f->envp);
		_exit(127);
	}
	close(p[1]);
	*rfd = p[0];
}

/* What the child said: the last batch started and acknowledged. */
struct said {
	uint64_t started, acked, acks;
	bool opened;
};

static void take_word(struct said *sd, uint64_t w)
{
	if (w == ACK_OPENED) {
		sd->opened = true;
	} else if (w & ACK_START) {
		sd->started = w & ~ACK_START;
	} else {
		sd->acked = w;
		sd->acks++;
	}
}

/* Reads the child's words until `acks` acknowledgements (or the store open,
 * for acks == 0 with opened), EOF or ROUND_WAIT_MS. */
static void wait_words(int fd, struct said *sd, uint64_t acks, bool opened)
{
	int64_t deadline = now_ms() + ROUND_WAIT_MS;
	while (sd->acks < acks || (opened && !sd->opened)) {
		int64_t left = deadline - now_ms();
		if (left <= 0) {
			return;
		}
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, (int)left) <= 0) {
			continue;
		}
		uint64_t w;
		if (read(fd, &w, sizeof w) != (ssize_t)sizeof w) {
			return; /* the child died: its status says why */
		}
		take_word(sd, w);
	}
}

/* Kills and reaps the child, then reads the words it wrote before dying
 * (the write end closed with it, so this ends); fails unless the kill ended
 * it. */
static void kill_child(struct fx *f, int fd, struct said *sd, uint64_t seed, int round)
{
	int status;
	pid_t pid = f->child;
	reap(&f->child, &status);
	for (int k = 0; k < 2 * MAX_CHILD_BATCHES + 4; k++) {
		uint64_t w;
		if (read(fd, &w, sizeof w) != (ssize_t)sizeof w) {
			break;
		}
		take_word(sd, w);
	}
	close(fd);
	if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
		fail_msg("seed %" PRIu64 " round %d: child %d ended with status %#x before the "
			 "kill (exit 10: open, 12: a revision unlike the model's, 14: applied "
			 "index, 127: exec; its message is on stderr); replay: " SEED_HELP,
			 seed, round, (int)pid, (unsigned)status, seed);
	}
}

/* Writes f->img as dir's data.mdb (no file if the image is empty), with no
 * lock file left from an earlier round. */
static void put_image(struct fx *f, const char *dir)
{
	char path[600];
	file_path(path, sizeof path, dir, "lock.mdb");
	unlink(path);
	file_path(path, sizeof path, dir, "data.mdb");
	if (f->img_len > 0) {
		write_file(path, f->img, f->img_len);
	} else {
		unlink(path); /* nothing reached the disk */
	}
}

static void fail_round(uint64_t seed, int round, const struct check_res *res, const struct said *sd,
		       uint64_t base_applied, const struct img_stats *st, size_t img_len,
		       const char *replay_env)
{
	fail_msg("seed %" PRIu64 " round %d: %s\n  base applied %" PRIu64 ", acknowledged %" PRIu64
		 ", started %" PRIu64 ", applied found %" PRIu64 "; log: %zu records (last cut: "
		 "%d), %zu writes, %zu after the last sync (fate %s: %zu kept, %zu dropped, %zu "
		 "torn); image %zu bytes (extended to the end of every write: %d); replay: "
		 "%s" SEED_HELP,
		 seed, round, res->msg, base_applied, sd->acked, sd->started, res->applied,
		 st->records, st->cut, st->writes, st->after_sync, fate_names[st->fate], st->kept,
		 st->dropped, st->torn, img_len, st->extended, replay_env, seed);
}

static uint64_t round_seed(uint64_t seed, int round)
{
	return mix(seed ^ ((uint64_t)(unsigned)round * 0x9fb21c651e98df25ull));
}

static void test_mvcc_powerloss(void **state)
{
	struct fx *f = *state;
	uint64_t seed = env_u64("MVCC_POWERLOSS_SEED", 0x5eedb0a7ull);
	int rounds = (int)env_u64("MVCC_POWERLOSS_ROUNDS", ROUNDS);
	uint64_t rs = seed; /* the parent's choices of kill points */
	model_reset(&f->m);
	/* The store is created first: creation is not covered by the claim
	 * (see test_mvcc_powerloss_create). */
	struct kv_options o = { .quota_bytes = QUOTA };
	struct kv_store *s = NULL;
	assert_int_equal(kv_open(f->dir[0], &o, &s), 0);
	kv_close(s);
	int cur = 0; /* f->dir[cur]: the child's; the other: the image's */
	int64_t t0 = now_ms();
	int round = 0;
	unsigned lost_ack = 0, unacked_kept = 0, short_rounds = 0, no_batch = 0;
	size_t after_sync = 0, torn = 0, dropped = 0;
	for (; round < rounds; round++) {
		if (round >= MIN_ROUNDS && now_ms() - t0 > TIME_BUDGET_MS) {
			break;
		}
		char path[600];
		file_path(path, sizeof path, f->dir[cur], "data.mdb");
		read_file(path, &f->base, &f->base_len);
		uint64_t base_applied = f->m.applied;
		int fd;
		spawn_child(f, f->dir[cur], seed, base_applied, MAX_CHILD_BATCHES, &fd);
		/* Kill after a number of acks (0: early, maybe while the child
		 * opens the store), then a random sub-batch delay. No assertion
		 * until the child is reaped. */
		uint64_t want = rnd(&rs) % (MAX_ACKS_WAITED + 1);
		struct said sd = { .started = base_applied, .acked = base_applied };
		wait_words(fd, &sd, want, false);
		usleep((useconds_t)(rnd(&rs) % (want == 0 ? 5000 : 3000)));
		kill_child(f, fd, &sd, seed, round);
		short_rounds += sd.acks < want;
		assert_true(sd.acked <= sd.started && sd.started <= sd.acked + 1);

		read_file(f->log, &f->logbuf, &f->log_len);
		struct img_stats st;
		build_image(f, round_seed(seed, round), &st, false, seed, round);
		const char *idir = f->dir[1 - cur];
		put_image(f, idir);
		uint64_t lo = sd.acked > base_applied ? sd.acked - 1 : base_applied;
		struct check_res res;
		run_checker(f, idir, seed, round, lo, sd.started, &res);
		if (!res.ok) {
			fail_round(seed, round, &res, &sd, base_applied, &st, f->img_len, "");
		}
		/* The checker added batch applied + 1. */
		model_advance_to(&f->m, seed, res.applied + 1);
		lost_ack += res.applied < sd.acked;
		unacked_kept += res.applied > sd.acked;
		no_batch += sd.started == base_applied;
		after_sync += st.after_sync;
		torn += st.torn;
		dropped += st.dropped;
		cur = 1 - cur;
	}
	print_message("seed %" PRIu64 ": %d power losses, %" PRIu64 " batches, revision %" PRId64
		      "; %u rounds lost the last acknowledged batch, %u kept an unacknowledged "
		      "one, %u killed before any batch started, %u short of acks; %zu writes "
		      "after the last sync (%zu dropped, %zu torn); %lld ms\n",
		      seed, round, f->m.applied, f->m.rev, lost_ack, unacked_kept, no_batch,
		      short_rounds, after_sync, dropped, torn, (long long)(now_ms() - t0));
	assert_true(round >= MIN_ROUNDS);
}

/* Store creation under a power loss. liblmdb 0.9.24 creates data.mdb by
 * writing its two meta pages (8 KiB at offset 0) with no sync, so kv_open
 * builds a new store in <dir>/create.tmp, syncs it whole and only then
 * renames it into place (a power loss before the rename leaves no data.mdb,
 * and the next kv_open starts again). The shim cannot see the rename, so this
 * checks what it rests on: when kv_open returns from creating the store,
 * every write to data.mdb is followed by a sync (none is left after the last
 * one), and the synced file opens as an empty store (applied index 0). */
static void test_mvcc_powerloss_create(void **state)
{
	struct fx *f = *state;
	uint64_t seed = env_u64("MVCC_POWERLOSS_SEED", 0x5eedb0a7ull);
	f->base_len = 0;
	for (int round = 0; round < CREATE_ROUNDS; round++) {
		char path[600];
		file_path(path, sizeof path, f->dir[0], "lock.mdb");
		unlink(path);
		file_path(path, sizeof path, f->dir[0], "data.mdb");
		unlink(path);
		model_reset(&f->m);
		int fd;
		spawn_child(f, f->dir[0], seed, 0, 0, &fd);
		struct said sd = { 0 };
		wait_words(fd, &sd, 0, true);
		kill_child(f, fd, &sd, seed, round);
		assert_true(sd.opened);
		read_file(f->log, &f->logbuf, &f->log_len);
		struct img_stats st;
		build_image(f, round_seed(seed, round), &st, false, seed, round);
		if (st.after_sync != 0) {
			fail_msg("seed %llu round %d: creating the store left %zu write(s) to "
				 "data.mdb after its last sync",
				 (unsigned long long)seed, round, st.after_sync);
		}
		put_image(f, f->dir[1]);
		struct check_res res;
		run_checker(f, f->dir[1], seed, round, 0, 0, &res);
		if (!res.ok) {
			fail_round(seed, round, &res, &sd, 0, &st, f->img_len, "");
		}
	}
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], CHILD_ARG) == 0) {
		return child_main(argc, argv);
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_mvcc_powerloss_create, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_mvcc_powerloss, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
