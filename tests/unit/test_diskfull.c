/* test_diskfull.c: a full disk is an error that loses nothing, never a crash,
 * for both storage components (architecture.md §4.1 and §4.2, "Errors").
 * Each scenario runs in a forked child that enters its own mount namespace,
 * mounts a small tmpfs on a fresh directory and fills it with a filler file
 * up to ENOSPC, leaving a chosen number of bytes free. The child checks
 * everything itself and reports through its exit status and a pipe of
 * messages; the parent bounds its time, kills it by pid if it overruns and
 * fails with its messages. Mounting needs root (CAP_SYS_ADMIN): without it
 * the test fails, it does not skip, since Cairn's CI runs as root.
 * Deterministic: fixed sizes and contents; every loop and wait is bounded. */
#define _GNU_SOURCE /* unshare, CLONE_NEWNS, mount */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_mvcc.h"
#include "kv_wal.h"
#include "tmpdir.h"

#define CHILD_TIMEOUT_MS 60000 /* a scenario takes well under a second */
#define MSG_MAX 16384          /* bytes of the child's messages kept */
#define PATH_LEN 512
#define FILLER_CHUNK (64u * 1024u)
#define PAGE 4096u

/* ---- the child's side: checks that report instead of aborting ---------- */

static int report_fd = -1; /* write end of the message pipe, in the child */
static int child_failures;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0) {
		return;
	}
	size_t len = (size_t)n < sizeof buf - 2 ? (size_t)n : sizeof buf - 2;
	buf[len++] = '\n';
	const char *p = buf;
	while (len > 0) {
		ssize_t k = write(report_fd, p, len);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			return;
		}
		p += k;
		len -= (size_t)k;
	}
}

#define NOTE(...) say("note: " __VA_ARGS__)

/* EXPECT records a failure and goes on (so one run shows every broken
 * promise); CHECK ends the child when going on makes no sense. */
#define EXPECT(cond, ...)                                                 \
	do {                                                              \
		if (!(cond)) {                                            \
			child_failures++;                                 \
			say("FAIL %s:%d: %s", __FILE__, __LINE__, #cond); \
			say("     " __VA_ARGS__);                         \
		}                                                         \
	} while (0)
#define CHECK(cond, ...)                                                  \
	do {                                                              \
		if (!(cond)) {                                            \
			say("FAIL %s:%d: %s", __FILE__, __LINE__, #cond); \
			say("     " __VA_ARGS__);                         \
			_exit(1);                                         \
		}                                                         \
	} while (0)

/* ---- the file system ---------------------------------------------------- */

static void path_join(char *out, const char *dir, const char *name)
{
	int n = snprintf(out, PATH_LEN, "%s/%s", dir, name);
	CHECK(n > 0 && n < PATH_LEN, "path too long: %s/%s", dir, name);
}

static uint64_t free_bytes(const char *mnt)
{
	struct statvfs v;
	CHECK(statvfs(mnt, &v) == 0, "statvfs %s: %s", mnt, strerror(errno));
	return (uint64_t)v.f_bavail * v.f_frsize;
}

/* Grow <mnt>/filler until write meets ENOSPC (bounded by the file system's
 * size), then give back `room` bytes (a multiple of the page size): the file
 * system then has exactly `room` bytes free. */
static void fill(const char *mnt, uint64_t room)
{
	static uint8_t chunk[FILLER_CHUNK];
	char path[PATH_LEN];
	struct statvfs v;
	path_join(path, mnt, "filler");
	CHECK(room % PAGE == 0, "room %" PRIu64 " is not a multiple of the page", room);
	CHECK(statvfs(mnt, &v) == 0, "statvfs %s: %s", mnt, strerror(errno));
	uint64_t bound = (uint64_t)v.f_blocks * v.f_frsize / FILLER_CHUNK + 2;
	memset(chunk, 0xa5, sizeof chunk);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	bool full = false;
	for (uint64_t i = 0; i < bound && !full; i++) {
		ssize_t k = write(fd, chunk, sizeof chunk);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k < 0) {
			CHECK(errno == ENOSPC, "filler write: %s", strerror(errno));
			full = true;
		}
	}
	CHECK(full, "the filler never met ENOSPC after %" PRIu64 " chunks", bound);
	struct stat st;
	CHECK(fstat(fd, &st) == 0, "fstat filler: %s", strerror(errno));
	CHECK((uint64_t)st.st_size >= room, "filler of %lld bytes < room %" PRIu64,
	      (long long)st.st_size, room);
	CHECK(ftruncate(fd, st.st_size - (off_t)room) == 0, "truncate filler: %s", strerror(errno));
	close(fd);
	uint64_t got = free_bytes(mnt);
	CHECK(got == room, "the file system has %" PRIu64 " bytes free, wanted %" PRIu64, got,
	      room);
}

/* Free `bytes` more (a multiple of the page size) by shrinking the filler. */
static void give_back(const char *mnt, uint64_t bytes)
{
	char path[PATH_LEN];
	struct stat st;
	path_join(path, mnt, "filler");
	uint64_t before = free_bytes(mnt);
	CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size >= bytes, "filler: %s", strerror(errno));
	CHECK(truncate(path, st.st_size - (off_t)bytes) == 0, "truncate filler: %s",
	      strerror(errno));
	CHECK(free_bytes(mnt) == before + bytes, "freeing %" PRIu64 " bytes freed %" PRIu64, bytes,
	      free_bytes(mnt) - before);
}

static void drop_filler(const char *mnt)
{
	char path[PATH_LEN];
	path_join(path, mnt, "filler");
	CHECK(unlink(path) == 0, "unlink %s: %s", path, strerror(errno));
}

/* Files in dir whose names end in suffix (dir missing: 0). */
static int count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	if (d == NULL) {
		return 0;
	}
	int n = 0;
	size_t sl = strlen(suffix);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l >= sl && strcmp(de->d_name + l - sl, suffix) == 0) {
			n++;
		}
	}
	closedir(d);
	return n;
}

/* ---- the WAL ------------------------------------------------------------ */

#define WAL_TMPFS "size=16m,mode=0700"
#define WAL_SEG (1u << 20)
#define WAL_MAX_INDEX 4096u
#define REC_BYTES(len) (12u + 20u + (len)) /* record header, entry header, data */
#define HS_BYTES (12u + 24u)
/* Batch shapes: small and medium fit anywhere, "roll" fits a fresh segment
 * but not what is left of the current one, "span" is larger than a segment. */
#define SMALL_N 1u
#define SMALL_LEN 100u
#define MEDIUM_N 8u
#define MEDIUM_LEN 2000u
#define ROLL_N 64u
#define ROLL_LEN 4000u
#define SPAN_N 300u
#define SPAN_LEN 4000u
#define BATCH_BYTES(n, len) ((uint64_t)(n)*REC_BYTES(len) + HS_BYTES)

_Static_assert(BATCH_BYTES(ROLL_N, ROLL_LEN) < WAL_SEG / 2, "a roll batch fits a fresh segment");
_Static_assert(BATCH_BYTES(SPAN_N, SPAN_LEN) > WAL_SEG, "a span batch needs two segments");
_Static_assert(BATCH_BYTES(ROLL_N, ROLL_LEN) > 2 * BATCH_BYTES(MEDIUM_N, MEDIUM_LEN),
	       "fill loop bound");

static uint32_t wal_len[WAL_MAX_INDEX + 1]; /* data length of each acknowledged index */

static uint8_t wal_byte(uint64_t index, uint32_t j)
{
	return (uint8_t)(index * 131 + j * 13 + 7);
}

/* Append entries [first, first + n), len bytes each, and the hard state
 * (term 1, vote 1, commit = the batch's last index). */
static int wal_put(struct kv_wal *w, uint64_t first, uint32_t n, uint32_t len)
{
	CHECK(first + n - 1 <= WAL_MAX_INDEX, "index %" PRIu64 " beyond the test's table",
	      first + n - 1);
	struct kv_wal_entry *e = calloc(n, sizeof *e);
	uint8_t *data = malloc((size_t)n * len);
	CHECK(e != NULL && data != NULL, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *d = data + (size_t)i * len;
		e[i] = (struct kv_wal_entry){
			.term = 1, .index = first + i, .type = 0, .len = len, .data = d
		};
		for (uint32_t j = 0; j < len; j++) {
			d[j] = wal_byte(first + i, j);
		}
	}
	struct kv_wal_hard_state hs = { .term = 1, .vote = 1, .commit = first + n - 1 };
	int rv = kv_wal_append(w, e, n, &hs);
	if (rv == 0) {
		for (uint32_t i = 0; i < n; i++) {
			wal_len[first + i] = len;
		}
	}
	free(data);
	free(e);
	return rv;
}

static struct kv_wal *wal_open(const char *dir, const char *when)
{
	struct kv_wal_options o = { .segment_bytes = WAL_SEG };
	struct kv_wal *w = NULL;
	char msg[256];
	int rv = kv_wal_open(dir, &o, &w, msg, sizeof msg);
	CHECK(rv == 0, "%s: kv_wal_open: %s: %s", when, kv_strerror(rv), msg);
	return w;
}

static uint64_t seg_left(struct kv_wal *w)
{
	struct kv_wal_stats st;
	kv_wal_stats(w, &st);
	return WAL_SEG - st.tail_offset;
}

/* Every acknowledged entry [1, acked] is there with its bytes, nothing after
 * it, and the hard state is the last acknowledged batch's. */
static void wal_verify(struct kv_wal *w, uint64_t acked, const char *when)
{
	EXPECT(kv_wal_first_index(w) == 1, "%s: first index %" PRIu64, when, kv_wal_first_index(w));
	EXPECT(kv_wal_last_index(w) == acked,
	       "%s: last index %" PRIu64 ", %" PRIu64 " entries acknowledged", when,
	       kv_wal_last_index(w), acked);
	for (uint64_t i = 1; i <= acked; i++) {
		struct kv_wal_entry e;
		uint32_t n = 0;
		int rv = kv_wal_entries(w, i, i + 1, UINT64_MAX, &e, &n);
		bool ok = rv == 0 && n == 1 && e.index == i && e.term == 1 && e.len == wal_len[i];
		for (uint32_t j = 0; ok && j < e.len; j++) {
			ok = e.data[j] == wal_byte(i, j);
		}
		if (!ok) {
			EXPECT(ok, "%s: acknowledged entry %" PRIu64 " lost or damaged (%s)", when,
			       i, kv_strerror(rv));
			return;
		}
	}
	struct kv_wal_hard_state hs;
	kv_wal_hard_state(w, &hs);
	EXPECT(hs.term == 1 && hs.vote == 1 && hs.commit == acked,
	       "%s: hard state commit %" PRIu64 ", expected %" PRIu64, when, hs.commit, acked);
}

static void wal_scenario(const char *mnt)
{
	char dir[PATH_LEN], dir2[PATH_LEN], msg[256];
	struct kv_wal_options o = { .segment_bytes = WAL_SEG };
	struct kv_wal_stats st0, st1;
	uint64_t acked = 0;
	int rv;
	path_join(dir, mnt, "wal");
	path_join(dir2, mnt, "wal2");

	struct kv_wal *w = wal_open(dir, "with room");
	for (int b = 0; b < 4; b++) {
		CHECK(wal_put(w, acked + 1, MEDIUM_N, MEDIUM_LEN) == 0, "append with room: %s",
		      kv_wal_last_error(w));
		acked += MEDIUM_N;
	}

	/* A. Not one byte free. */
	fill(mnt, 0);

	/* A new WAL cannot preallocate its first segment: an error, no file left. */
	struct kv_wal *w2 = NULL;
	rv = kv_wal_open(dir2, &o, &w2, msg, sizeof msg);
	EXPECT(rv == KV_EDISKFULL && w2 == NULL,
	       "kv_wal_open on a full disk: %d (%s): %s, expected KV_EDISKFULL", rv,
	       kv_strerror(rv), msg);
	kv_wal_close(w2);
	EXPECT(count_files(dir2, ".tmp") == 0 && count_files(dir2, ".wal") == 0,
	       "a failed open left segment files in %s", dir2);

	/* The segment is preallocated: appends inside it go on. */
	int inside = 0;
	while (seg_left(w) >= BATCH_BYTES(ROLL_N, ROLL_LEN)) {
		bool medium = seg_left(w) - BATCH_BYTES(MEDIUM_N, MEDIUM_LEN) >=
			      BATCH_BYTES(ROLL_N, ROLL_LEN);
		uint32_t n = medium ? MEDIUM_N : SMALL_N;
		rv = wal_put(w, acked + 1, n, medium ? MEDIUM_LEN : SMALL_LEN);
		CHECK(rv == 0, "append %d inside the preallocated segment on a full disk: %s (%s)",
		      inside, kv_strerror(rv), kv_wal_last_error(w));
		acked += n;
		inside++;
	}
	EXPECT(free_bytes(mnt) == 0, "appends inside the segment took %" PRIu64 " bytes",
	       free_bytes(mnt));
	wal_verify(w, acked, "appends inside the segment on a full disk");

	/* A batch that needs a new segment: refused before a byte is written. */
	kv_wal_stats(w, &st0);
	rv = wal_put(w, acked + 1, ROLL_N, ROLL_LEN);
	EXPECT(rv == KV_EDISKFULL, "a batch needing a new segment on a full disk: %d (%s), %s", rv,
	       kv_strerror(rv), kv_wal_last_error(w));
	kv_wal_stats(w, &st1);
	EXPECT(st1.tail_segment == st0.tail_segment && st1.tail_offset == st0.tail_offset &&
		       st1.segments_created == st0.segments_created &&
		       st1.bytes_written == st0.bytes_written,
	       "the failed roll moved the tail: segment %" PRIu64 " offset %" PRIu64
	       " -> segment %" PRIu64 " offset %" PRIu64,
	       st0.tail_segment, st0.tail_offset, st1.tail_segment, st1.tail_offset);
	EXPECT(count_files(dir, ".tmp") == 0 && count_files(dir, ".wal") == 1,
	       "after the failed roll: %d .tmp, %d .wal files", count_files(dir, ".tmp"),
	       count_files(dir, ".wal"));
	wal_verify(w, acked, "after the failed roll");
	rv = wal_put(w, acked + 1, SMALL_N, SMALL_LEN);
	CHECK(rv == 0, "the WAL refused a batch that fits after a failed roll: %s (%s)",
	      kv_strerror(rv), kv_wal_last_error(w));
	acked += SMALL_N;

	/* B. Half a segment free: the preallocation fails part way and gives
	 * back what it took. */
	give_back(mnt, WAL_SEG / 2);
	rv = wal_put(w, acked + 1, ROLL_N, ROLL_LEN);
	EXPECT(rv == KV_EDISKFULL, "a roll with half a segment free: %d (%s), %s", rv,
	       kv_strerror(rv), kv_wal_last_error(w));
	EXPECT(free_bytes(mnt) == WAL_SEG / 2,
	       "the failed preallocation kept space: %" PRIu64 " bytes free, %u before",
	       free_bytes(mnt), WAL_SEG / 2);
	EXPECT(count_files(dir, ".tmp") == 0 && count_files(dir, ".wal") == 1,
	       "after the failed partial preallocation: %d .tmp, %d .wal files",
	       count_files(dir, ".tmp"), count_files(dir, ".wal"));
	rv = wal_put(w, acked + 1, SMALL_N, SMALL_LEN);
	CHECK(rv == 0, "the WAL refused a batch that fits after a failed roll: %s (%s)",
	      kv_strerror(rv), kv_wal_last_error(w));
	acked += SMALL_N;

	/* C. Full again, and a batch larger than a segment: its first part
	 * reaches the file before the roll fails, so the WAL refuses appends
	 * (KV_EIO) until reopened; reads go on. */
	fill(mnt, 0);
	uint64_t left = seg_left(w);
	rv = wal_put(w, acked + 1, SPAN_N, SPAN_LEN);
	EXPECT(rv == KV_EDISKFULL, "a batch spanning segments on a full disk: %d (%s), %s", rv,
	       kv_strerror(rv), kv_wal_last_error(w));
	rv = wal_put(w, acked + 1, SMALL_N, SMALL_LEN);
	EXPECT(rv == KV_EIO, "an append after a failure mid-batch: %d (%s), expected KV_EIO", rv,
	       kv_strerror(rv));
	wal_verify(w, acked, "reads after a failure mid-batch");
	kv_wal_close(w);

	/* Reopening needs no new space: the torn batch is cut in place. */
	w = NULL;
	rv = kv_wal_open(dir, &o, &w, msg, sizeof msg);
	EXPECT(rv == 0, "reopen on a full disk after a failure mid-batch: %d (%s): %s", rv,
	       kv_strerror(rv), msg);
	if (rv == 0) {
		kv_wal_stats(w, &st1);
		EXPECT(st1.torn_bytes_cut > 0 && st1.torn_bytes_cut <= left,
		       "torn bytes cut at reopen: %" PRIu64 " (%" PRIu64 " were left)",
		       st1.torn_bytes_cut, left);
		wal_verify(w, acked, "reopen on a full disk");
		rv = wal_put(w, acked + 1, SMALL_N, SMALL_LEN);
		EXPECT(rv == 0, "append after reopen on a full disk: %s (%s)", kv_strerror(rv),
		       kv_wal_last_error(w));
		if (rv == 0) {
			acked += SMALL_N;
		}
	}

	/* D. Space freed: rolls, batches spanning segments and new logs work. */
	drop_filler(mnt);
	if (w == NULL) {
		w = wal_open(dir, "after freeing space");
	}
	rv = wal_put(w, acked + 1, ROLL_N, ROLL_LEN);
	CHECK(rv == 0, "a roll after freeing space: %s (%s)", kv_strerror(rv),
	      kv_wal_last_error(w));
	acked += ROLL_N;
	rv = wal_put(w, acked + 1, SPAN_N, SPAN_LEN);
	CHECK(rv == 0, "a batch spanning segments after freeing space: %s (%s)", kv_strerror(rv),
	      kv_wal_last_error(w));
	acked += SPAN_N;
	wal_verify(w, acked, "after freeing space");
	kv_wal_close(w);
	w = wal_open(dir, "reopen after freeing space");
	wal_verify(w, acked, "reopen after freeing space");
	kv_wal_stats(w, &st1);
	NOTE("WAL: %" PRIu64 " entries acknowledged (%d batches inside a preallocated segment "
	     "on a full disk), %" PRIu64 " segments",
	     acked, inside, st1.tail_segment);
	kv_wal_close(w);
	w = wal_open(dir2, "a new WAL after freeing space");
	CHECK(wal_put(w, 1, SMALL_N, SMALL_LEN) == 0, "append to a new WAL: %s",
	      kv_wal_last_error(w));
	kv_wal_close(w);
}

/* ---- the MVCC store ----------------------------------------------------- */

#define KV_TMPFS "size=16m,mode=0700"
#define KV_ROOM (3u << 20)           /* free when the batches start */
#define KV_QUOTA ((uint64_t)1 << 30) /* far above the file system's size */
#define KV_PUTS 8                    /* requests per batch */
#define KV_NKEYS 600u                /* later batches overwrite earlier keys */
#define KV_MAX_BATCHES 2000u
#define KV_MAX_VALUE 6000u

/* The model: each live key's last writer (batch, request) and numbers. */
struct kv_model_key {
	bool live;
	uint32_t batch, op;
	int64_t version, create, mod;
};
static struct kv_model_key model[KV_NKEYS];
static int64_t model_rev = 1; /* an empty store is at revision 1 */
static uint64_t model_applied;

static uint32_t kv_key_of(uint32_t batch, uint32_t op)
{
	return (batch * KV_PUTS + op) % KV_NKEYS;
}

static size_t kv_key_name(char *buf, uint32_t key)
{
	return (size_t)snprintf(buf, 16, "k%05u", key);
}

static uint32_t kv_value_len(uint32_t batch, uint32_t op)
{
	return 200u + (batch * 31u + op * 17u) % 12u * 500u; /* up to 5700: overflow pages too */
}

static uint8_t kv_value_byte(uint32_t batch, uint32_t op, size_t j)
{
	return (uint8_t)(batch * 7u + op * 31u + j * 11u);
}

static void model_apply(uint32_t batch)
{
	for (uint32_t op = 0; op < KV_PUTS; op++) {
		struct kv_model_key *k = &model[kv_key_of(batch, op)];
		model_rev++;
		if (!k->live) {
			k->live = true;
			k->version = 0;
			k->create = model_rev;
		}
		k->version++;
		k->mod = model_rev;
		k->batch = batch;
		k->op = op;
	}
	model_applied = batch;
}

static int kv_put_op(struct kv_wtx *wtx, uint32_t batch, uint32_t op)
{
	static uint8_t value[KV_MAX_VALUE];
	char key[16];
	uint32_t len = kv_value_len(batch, op);
	for (size_t j = 0; j < len; j++) {
		value[j] = kv_value_byte(batch, op, j);
	}
	struct kv_put_req req = { .key = (const uint8_t *)key,
				  .key_len = kv_key_name(key, kv_key_of(batch, op)),
				  .value = value,
				  .value_len = len };
	struct kv_put_resp resp;
	int rv = kv_put(wtx, &req, &resp);
	if (rv == 0) {
		kv_put_resp_free(&resp);
	}
	return rv;
}

/* Apply batch `batch` in one write transaction committed with applied index
 * = batch. 0, or the error of the call that failed (*what names it); on a
 * request's error the transaction is dead (the contract): a later request
 * fails, and kv_txn_commit fails and frees it. */
static int kv_batch(struct kv_store *s, uint32_t batch, const char **what)
{
	struct kv_wtx *wtx = NULL;
	int rv = kv_txn_begin_write(s, &wtx);
	if (rv != 0) {
		*what = "kv_txn_begin_write";
		return rv;
	}
	for (uint32_t op = 0; op < KV_PUTS; op++) {
		rv = kv_put_op(wtx, batch, op);
		if (rv == 0) {
			continue;
		}
		*what = "kv_put";
		int again = op + 1 < KV_PUTS ? kv_put_op(wtx, batch, op + 1) : -1;
		EXPECT(again != 0,
		       "batch %u: a request after a failed one (%s) succeeded in the same "
		       "transaction",
		       batch, kv_strerror(rv));
		int crv = kv_txn_commit(wtx, batch);
		EXPECT(crv != 0,
		       "batch %u: kv_txn_commit returned 0 after request %u failed with %s", batch,
		       op, kv_strerror(rv));
		return rv;
	}
	rv = kv_txn_commit(wtx, batch);
	*what = "kv_txn_commit";
	return rv;
}

/* The store against the model: status, then every key with a Range over
 * all of them and a single-key Range each. */
static void kv_verify(struct kv_store *s, const char *when)
{
	struct kv_status st;
	int rv = kv_status(s, &st);
	EXPECT(rv == 0, "%s: kv_status: %s", when, kv_strerror(rv));
	if (rv == 0) {
		EXPECT(st.applied_index == model_applied && st.revision == model_rev,
		       "%s: applied index %" PRIu64 " revision %" PRId64 ", expected %" PRIu64
		       " and %" PRId64,
		       when, st.applied_index, st.revision, model_applied, model_rev);
	}
	struct kv_range_req all = { .key = (const uint8_t *)"k",
				    .key_len = 1,
				    .range_end = (const uint8_t *)"l",
				    .range_end_len = 1 };
	struct kv_range_resp r;
	rv = kv_range(s, &all, &r);
	EXPECT(rv == 0, "%s: kv_range: %s", when, kv_strerror(rv));
	if (rv != 0) {
		return;
	}
	size_t at = 0;
	bool ok = true;
	for (uint32_t k = 0; k < KV_NKEYS && ok; k++) {
		const struct kv_model_key *m = &model[k];
		if (!m->live) {
			continue;
		}
		char name[16];
		size_t nl = kv_key_name(name, k);
		const struct kv_kv *kv = at < r.n_kvs ? &r.kvs[at] : NULL;
		ok = kv != NULL && kv->key_len == nl && memcmp(kv->key, name, nl) == 0 &&
		     kv->value_len == kv_value_len(m->batch, m->op) && kv->version == m->version &&
		     kv->create_revision == m->create && kv->mod_revision == m->mod;
		for (size_t j = 0; ok && j < kv->value_len; j++) {
			ok = kv->value[j] == kv_value_byte(m->batch, m->op, j);
		}
		EXPECT(ok,
		       "%s: key %s (batch %u, request %u, version %" PRId64 ", mod %" PRId64
		       ") missing or damaged in the Range result",
		       when, name, m->batch, m->op, m->version, m->mod);
		if (ok) {
			struct kv_range_req one = { .key = (const uint8_t *)name, .key_len = nl };
			struct kv_range_resp r1;
			rv = kv_range(s, &one, &r1);
			ok = rv == 0 && r1.n_kvs == 1 && r1.kvs[0].mod_revision == m->mod &&
			     r1.kvs[0].value_len == kv->value_len &&
			     memcmp(r1.kvs[0].value, kv->value, kv->value_len) == 0;
			EXPECT(ok, "%s: single-key Range of %s: %s, %zu kvs", when, name,
			       kv_strerror(rv), rv == 0 ? r1.n_kvs : 0);
			if (rv == 0) {
				kv_range_resp_free(&r1);
			}
		}
		at++;
	}
	EXPECT(!ok || at == r.n_kvs, "%s: Range gave %zu keys, %zu committed", when, r.n_kvs, at);
	kv_range_resp_free(&r);
}

static struct kv_store *kv_open_ok(const char *dir, const char *when)
{
	struct kv_options o = { .quota_bytes = KV_QUOTA };
	struct kv_store *s = NULL;
	int rv = kv_open(dir, &o, &s);
	CHECK(rv == 0, "%s: kv_open: %s", when, kv_strerror(rv));
	return s;
}

/* Commit batches until a call fails; returns the failed batch. */
static uint32_t kv_fill(struct kv_store *s)
{
	for (uint32_t b = 1; b <= KV_MAX_BATCHES; b++) {
		const char *what = "";
		int rv = kv_batch(s, b, &what);
		if (rv == 0) {
			model_apply(b);
			continue;
		}
		EXPECT(rv == KV_EDISKFULL,
		       "batch %u on a full disk: %s returned %d (%s), expected KV_EDISKFULL (%d)",
		       b, what, rv, kv_strerror(rv), KV_EDISKFULL);
		NOTE("MVCC: batch %u failed in %s with %s after %" PRIu64 " committed, "
		     "revision %" PRId64,
		     b, what, kv_strerror(rv), model_applied, model_rev);
		return b;
	}
	CHECK(false, "%u batches committed and the disk never filled", KV_MAX_BATCHES);
	return 0;
}

static void kv_apply_again(struct kv_store *s, uint32_t batch, const char *when)
{
	const char *what = "";
	int rv = kv_batch(s, batch, &what);
	CHECK(rv == 0, "%s: applying batch %u again: %s: %s", when, batch, what, kv_strerror(rv));
	model_apply(batch);
}

/* Full disk, then a reopen once space is freed. */
static void kv_scenario_reopen(const char *mnt)
{
	char dir[PATH_LEN];
	path_join(dir, mnt, "kv");
	struct kv_store *s = kv_open_ok(dir, "with room");
	fill(mnt, KV_ROOM);
	uint32_t failed = kv_fill(s);
	kv_verify(s, "same process, disk still full");

	drop_filler(mnt);
	kv_close(s);
	s = kv_open_ok(dir, "reopen after freeing space");
	kv_verify(s, "reopen after freeing space");
	kv_apply_again(s, failed, "reopen after freeing space");
	kv_apply_again(s, failed + 1, "reopen after freeing space");
	kv_verify(s, "after applying the failed batch again");
	kv_close(s);
	s = kv_open_ok(dir, "second reopen");
	kv_verify(s, "second reopen");
	kv_close(s);
}

/* Full disk, then the same open handle once space is freed. */
static void kv_scenario_same_handle(const char *mnt)
{
	char dir[PATH_LEN];
	path_join(dir, mnt, "kv");
	struct kv_store *s = kv_open_ok(dir, "with room");
	fill(mnt, KV_ROOM);
	uint32_t failed = kv_fill(s);
	kv_verify(s, "same process, disk still full");

	drop_filler(mnt);
	struct kv_wtx *wtx = NULL;
	int rv = kv_txn_begin_write(s, &wtx);
	CHECK(rv == 0,
	      "the open store cannot start a write transaction after a full disk, once space "
	      "is freed: %s",
	      kv_strerror(rv));
	kv_txn_abort(wtx);
	kv_apply_again(s, failed, "same handle after freeing space");
	kv_apply_again(s, failed + 1, "same handle after freeing space");
	kv_verify(s, "same handle, after applying the failed batch again");
	kv_close(s);
	s = kv_open_ok(dir, "reopen");
	kv_verify(s, "reopen after the same handle applied the batch again");
	kv_close(s);
}

/* ---- the parent's side -------------------------------------------------- */

typedef void (*scenario_fn)(const char *mnt);

struct fx {
	char dir[256];
	pid_t child; /* > 0 while a child may be alive: the teardown kills it */
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "cairn-diskfull");
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
	reap(f, &status);        /* a failed assertion left a child behind: kill it by pid */
	h_tmpdir_remove(f->dir); /* the tmpfs went with the child's mount namespace */
	free(f);
	return 0;
}

static _Noreturn void child_main(const char *mnt, const char *opts, scenario_fn fn)
{
	const char *hint = "mounting a small tmpfs needs root (CAP_SYS_ADMIN); Cairn's CI "
			   "runs as root";
	if (unshare(CLONE_NEWNS) != 0) {
		say("FAIL unshare(CLONE_NEWNS): %s: %s", strerror(errno), hint);
		_exit(2);
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
		say("FAIL making mounts private: %s: %s", strerror(errno), hint);
		_exit(2);
	}
	if (mount("cairn-diskfull", mnt, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) {
		say("FAIL mount tmpfs (%s) on %s: %s: %s", opts, mnt, strerror(errno), hint);
		_exit(2);
	}
	fn(mnt);
	/* exit, not _exit: LeakSanitizer checks the child in sanitizer builds. */
	exit(child_failures > 0 ? 1 : 0);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run fn in a child on a tmpfs mounted with opts at f->dir; fail the test
 * with the child's messages unless it exits 0 within CHILD_TIMEOUT_MS. */
static void run_child(struct fx *f, const char *opts, scenario_fn fn)
{
	static char out[MSG_MAX];
	size_t used = 0;
	int p[2];
	if (geteuid() != 0) {
		fail_msg("test_diskfull must run as root: it mounts a small tmpfs in a private "
			 "mount namespace (Cairn's CI runs as root)");
	}
	assert_int_equal(pipe(p), 0);
	fflush(NULL);
	int64_t start = now_ms();
	f->child = fork();
	if (f->child < 0) {
		fail_msg("fork: %s", strerror(errno));
	}
	if (f->child == 0) {
		close(p[0]);
		report_fd = p[1];
		child_main(f->dir, opts, fn);
	}
	close(p[1]);
	/* Read the messages until the child closes the pipe (it exited). */
	bool timed_out = false;
	for (;;) {
		int64_t left = start + CHILD_TIMEOUT_MS - now_ms();
		if (left <= 0) {
			timed_out = true;
			break;
		}
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		int r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r == 0) {
			timed_out = true;
			break;
		}
		char scratch[512];
		char *dst = used < sizeof out - 1 ? out + used : scratch;
		size_t room = used < sizeof out - 1 ? sizeof out - 1 - used : sizeof scratch;
		ssize_t k = read(p[0], dst, room);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			break;
		}
		if (dst != scratch) {
			used += (size_t)k;
		}
	}
	close(p[0]);
	out[used] = '\0';
	int status = 0;
	if (timed_out) {
		reap(f, &status);
		fail_msg("the child overran %d ms and was killed; its messages:\n%s",
			 CHILD_TIMEOUT_MS, out);
	}
	pid_t r;
	do {
		r = waitpid(f->child, &status, 0);
	} while (r < 0 && errno == EINTR);
	assert_int_equal(r, f->child);
	f->child = 0;
	if (WIFSIGNALED(status)) {
		fail_msg("the child crashed with signal %d (%s); its messages:\n%s",
			 WTERMSIG(status), strsignal(WTERMSIG(status)), out);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fail_msg("the child failed (exit %d); its messages:\n%s",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
	}
	print_message("%s(%lld ms)\n", out, (long long)(now_ms() - start));
}

static void test_diskfull_wal(void **state)
{
	run_child(*state, WAL_TMPFS, wal_scenario);
}

static void test_diskfull_mvcc_reopen(void **state)
{
	run_child(*state, KV_TMPFS, kv_scenario_reopen);
}

static void test_diskfull_mvcc_same_handle(void **state)
{
	run_child(*state, KV_TMPFS, kv_scenario_same_handle);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_diskfull_wal, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_diskfull_mvcc_reopen, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_diskfull_mvcc_same_handle, fx_setup,
						fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
