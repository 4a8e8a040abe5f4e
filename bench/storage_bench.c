/* storage_bench.c: cairn-storage-bench, the paths of kvstore/ (WAL, apply,
 * reads, reopen, compaction) measured one at a time on a real disk. No
 * timing is asserted anywhere; figures and the commands that produced them
 * go to docs/benchmarks.md.
 *
 *   cairn-storage-bench --wal [--dir D] [--entries N] [--entry-bytes B]
 *                       [--batch 1,16,128,1024] [--segment-bytes S]
 *       the Raft log: entries appended and synced per second with group
 *       commit (one kv_wal_append, so one fdatasync, per batch), for each
 *       batch size, with the fdatasync calls per second.
 *   cairn-storage-bench --apply [--keys N] [--batch 64,256,1024]
 *       the MVCC apply path: puts per second into the LMDB store, one write
 *       transaction (kv_txn_begin_write .. kv_txn_commit with the next
 *       applied index) per batch, for each batch size, on a fresh store;
 *       then the store's size on disk per key.
 *   cairn-storage-bench --range [--keys N] [--ops N]
 *       reads: single-key Ranges per second at random keys of a store of N
 *       keys, then Ranges of 100 consecutive keys per second.
 *   cairn-storage-bench --reopen [--keys N]
 *       time from kv_open to the first successful Range on a store of N
 *       keys (default 1,000,000), built first, outside the timing.
 *   cairn-storage-bench --compact [--keys K] [--ops P] [--compact-step S]
 *       the longest pause compaction imposes on the writer: P puts over K
 *       keys, then compaction to the latest revision in kv_compact_step
 *       calls of S keys, each followed by one write batch, on one thread
 *       (as the storage thread runs them); max and p99 of each.
 *   cairn-storage-bench --smoke
 *       every mode, tiny, for ctest: proves the binary runs.
 *
 * Common to the store modes: --key-bytes (256) and --value-bytes (1024);
 * keys are a fixed prefix and a zero-padded number; commits are synced
 * unless --no-sync. Every mode prints its configuration and a `rerun:` line.
 *
 * Files go to a fresh directory made under --dir (default: the current
 * directory) and removed at the end.
 *
 * Adding a mode: write `static int bench_X(const struct opts *o, const char
 * *dir)` and add a row to `modes[]` below; main() needs no change. */
#define _DEFAULT_SOURCE /* mkdtemp, strtok_r under -std=c11 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_mvcc.h"
#include "kv_wal.h"

#define MAX_BATCHES 16

struct opts {
	const char *dir;
	uint64_t entries; /* per batch size; 0: a default per batch size */
	uint32_t entry_bytes;
	uint64_t segment_bytes;
	uint32_t batches[MAX_BATCHES];
	size_t n_batches;
	bool batches_set; /* --batch given: else a default per mode */
	bool smoke;
	/* The store modes (--apply, --range, --reopen, --compact). */
	uint64_t keys;         /* 0: a default per mode */
	uint64_t ops;          /* 0: a default per mode */
	uint64_t compact_step; /* keys per kv_compact_step */
	uint32_t key_bytes;
	uint32_t value_bytes;
	bool no_sync;
	const char *argv0;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void rm_tree(const char *path)
{
	DIR *d = opendir(path);
	if (d == NULL) {
		return;
	}
	struct dirent *de;
	char p[4096];
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
			continue;
		}
		snprintf(p, sizeof p, "%s/%s", path, de->d_name);
		if (unlink(p) != 0) {
			rm_tree(p);
		}
	}
	closedir(d);
	rmdir(path);
}

/* ---- --wal: the Raft log's write path ---------------------------------- */

/* Appends `total` entries of o->entry_bytes in batches of `batch` to a fresh
 * WAL in dir and prints one line of figures. */
static int wal_run(const struct opts *o, const char *dir, uint32_t batch, uint64_t total)
{
	struct kv_wal_options wo = { .segment_bytes = o->segment_bytes };
	struct kv_wal *w = NULL;
	char msg[256];
	int rv = kv_wal_open(dir, &wo, &w, msg, sizeof msg);
	if (rv != 0) {
		fprintf(stderr, "cairn-storage-bench: open %s: %s: %s\n", dir, kv_strerror(rv),
			msg);
		return 1;
	}
	struct kv_wal_entry *e = calloc(batch, sizeof *e);
	uint8_t *data = malloc(o->entry_bytes ? o->entry_bytes : 1);
	if (e == NULL || data == NULL) {
		fprintf(stderr, "cairn-storage-bench: out of memory\n");
		free(e);
		free(data);
		kv_wal_close(w);
		return 1;
	}
	for (uint32_t j = 0; j < o->entry_bytes; j++) {
		data[j] = (uint8_t)(j * 31 + 7);
	}
	struct kv_wal_hard_state hs = { .term = 1, .vote = 1, .commit = 0 };
	uint64_t next = 1;
	double t0 = now_s();
	while (next <= total) {
		uint32_t n = (uint32_t)(total - next + 1 < batch ? total - next + 1 : batch);
		for (uint32_t i = 0; i < n; i++) {
			e[i] = (struct kv_wal_entry){ .term = 1,
						      .index = next + i,
						      .type = 0,
						      .len = o->entry_bytes,
						      .data = data };
		}
		hs.commit = next - 1; /* as a follower would: commit trails the log */
		rv = kv_wal_append(w, e, n, &hs);
		if (rv != 0) {
			fprintf(stderr, "cairn-storage-bench: append: %s: %s\n", kv_strerror(rv),
				kv_wal_last_error(w));
			break;
		}
		next += n;
	}
	double dt = now_s() - t0;
	struct kv_wal_stats st;
	kv_wal_stats(w, &st);
	kv_wal_close(w);
	free(e);
	free(data);
	if (rv != 0) {
		return 1;
	}
	if (dt <= 0) {
		dt = 1e-9;
	}
	printf("wal  batch %5" PRIu32 "  entries %8" PRIu64 "  %10.0f entries/s  %8.1f MiB/s  "
	       "%8.0f fdatasync/s  %6.3f ms/batch  (%" PRIu64 " fdatasyncs, %" PRIu64
	       " segments)\n",
	       batch, total, (double)total / dt, (double)st.bytes_written / dt / 1048576.0,
	       (double)st.fdatasyncs / dt, dt * 1e3 / (double)st.appends, st.fdatasyncs,
	       st.segments_created);
	return 0;
}

static int bench_wal(const struct opts *o, const char *dir)
{
	printf("# WAL: %" PRIu32 "-byte entries, one kv_wal_append (one fdatasync) per batch, "
	       "segments of %" PRIu64 " bytes, in %s\n",
	       o->entry_bytes, o->segment_bytes ? o->segment_bytes : KV_WAL_SEGMENT_BYTES, dir);
	for (size_t i = 0; i < o->n_batches; i++) {
		uint32_t b = o->batches[i];
		uint64_t total = o->entries;
		if (total == 0) {
			/* Enough batches to time (about 2,000), at most 200,000 entries. */
			total = (uint64_t)b * 2000;
			if (total > 200000) {
				total = 200000;
			}
		}
		char sub[4200];
		int k = snprintf(sub, sizeof sub, "%s/wal-batch-%" PRIu32, dir, b);
		if (k < 0 || (size_t)k >= sizeof sub) {
			fprintf(stderr, "cairn-storage-bench: path too long\n");
			return 1;
		}
		int rv = wal_run(o, sub, b, total);
		rm_tree(sub);
		if (rv != 0) {
			return rv;
		}
	}
	return 0;
}

/* ---- the LMDB store: shared pieces ---------------------------------------- */

/* Room for every store this benchmark builds (1M keys of 256 + 1,024 bytes
 * take about 2 GiB with both indexes); the map is sparse. */
#define BENCH_QUOTA ((uint64_t)16 << 30)
#define KEY_PREFIX "/registry/bench/"
#define SCAN_KEYS 100

struct store_buf {
	uint8_t key[KV_MAX_KEY + 1];
	uint8_t *value;
};

/* Key number `num`: KEY_PREFIX then num zero-padded to o->key_bytes, so
 * keys sort as their numbers do. */
static size_t key_of(const struct opts *o, uint64_t num, uint8_t *buf)
{
	int w = (int)o->key_bytes - (int)(sizeof KEY_PREFIX - 1);
	int k = snprintf((char *)buf, KV_MAX_KEY + 1, "%s%0*" PRIu64, KEY_PREFIX, w, num);
	return (size_t)k;
}

/* Spreads sequence numbers over the key space: a bijection of [0, 2^40)
 * (odd multiplier modulo a power of two), so every key is new. */
static uint64_t spread(uint64_t i)
{
	return (i * UINT64_C(0x9E3779B97F4A7C15)) & ((UINT64_C(1) << 40) - 1);
}

static uint64_t rng_next(uint64_t *st)
{
	uint64_t x = *st; /* xorshift64 */
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *st = x;
}

static int store_open(const struct opts *o, const char *dir, struct kv_store **s)
{
	struct kv_options ko = { .quota_bytes = BENCH_QUOTA, .no_sync = o->no_sync };
	int rv = kv_open(dir, &ko, s);
	if (rv != 0) {
		fprintf(stderr, "cairn-storage-bench: kv_open %s: %s\n", dir, kv_strerror(rv));
	}
	return rv;
}

/* One write transaction: puts of key numbers nums[0..n), committed with
 * applied index `applied`. */
static int put_batch(struct kv_store *s, const struct opts *o, struct store_buf *b,
		     const uint64_t *nums, size_t n, uint64_t applied)
{
	struct kv_wtx *w = NULL;
	int rv = kv_txn_begin_write(s, &w);
	if (rv != 0) {
		fprintf(stderr, "cairn-storage-bench: begin: %s\n", kv_strerror(rv));
		return rv;
	}
	for (size_t i = 0; i < n; i++) {
		struct kv_put_req req = { .key = b->key,
					  .key_len = key_of(o, nums[i], b->key),
					  .value = b->value,
					  .value_len = o->value_bytes };
		struct kv_put_resp resp;
		b->value[0] = (uint8_t)applied; /* values differ from batch to batch */
		rv = kv_put(w, &req, &resp);
		if (rv != 0) {
			fprintf(stderr, "cairn-storage-bench: put: %s\n", kv_strerror(rv));
			kv_txn_abort(w);
			return rv;
		}
		kv_put_resp_free(&resp);
	}
	rv = kv_txn_commit(w, applied);
	if (rv != 0) {
		fprintf(stderr, "cairn-storage-bench: commit: %s\n", kv_strerror(rv));
	}
	return rv;
}

/* Puts key numbers 0..keys-1 in order, batches of 1,024 (untimed setup). */
static int fill_store(struct kv_store *s, const struct opts *o, struct store_buf *b, uint64_t keys,
		      uint64_t *applied)
{
	uint64_t nums[1024];
	for (uint64_t i = 0; i < keys;) {
		size_t n = 0;
		for (; n < 1024 && i < keys; n++, i++) {
			nums[n] = i;
		}
		int rv = put_batch(s, o, b, nums, n, ++*applied);
		if (rv != 0) {
			return rv;
		}
	}
	return 0;
}

static int buf_init(const struct opts *o, struct store_buf *b)
{
	b->value = malloc(o->value_bytes ? o->value_bytes : 1);
	if (b->value == NULL) {
		fprintf(stderr, "cairn-storage-bench: out of memory\n");
		return -1;
	}
	for (uint32_t j = 0; j < o->value_bytes; j++) {
		b->value[j] = (uint8_t)(j * 31 + 7);
	}
	if (o->value_bytes == 0) {
		b->value[0] = 0;
	}
	return 0;
}

static int sub_dir(char *out, size_t cap, const char *dir, const char *name)
{
	int k = snprintf(out, cap, "%s/%s", dir, name);
	if (k < 0 || (size_t)k >= cap) {
		fprintf(stderr, "cairn-storage-bench: path too long\n");
		return -1;
	}
	return 0;
}

static void print_rerun(const struct opts *o, const char *flag, uint64_t keys, uint64_t ops,
			bool with_batches)
{
	printf("# rerun: %s %s --dir %s --keys %" PRIu64, o->argv0, flag, o->dir, keys);
	if (ops != 0) {
		printf(" --ops %" PRIu64, ops);
	}
	if (with_batches) {
		printf(" --batch ");
		for (size_t i = 0; i < o->n_batches; i++) {
			printf("%s%" PRIu32, i ? "," : "", o->batches[i]);
		}
	}
	if (strcmp(flag, "--compact") == 0) {
		printf(" --compact-step %" PRIu64, o->compact_step);
	}
	printf(" --key-bytes %" PRIu32 " --value-bytes %" PRIu32 "%s\n", o->key_bytes,
	       o->value_bytes, o->no_sync ? " --no-sync" : "");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Sorts v and returns its p-th percentile (nearest rank). */
static double percentile(double *v, size_t n, double p)
{
	if (n == 0) {
		return 0;
	}
	qsort(v, n, sizeof *v, cmp_double);
	size_t r = (size_t)(p / 100.0 * (double)n + 0.999999);
	return v[(r == 0 ? 1 : r > n ? n : r) - 1];
}

/* ---- --apply: puts applied per second ------------------------------------- */

/* Bytes this process has passed to write system calls (/proc/self/io
 * wchar): for --apply, the pages LMDB writes at its commits. 0 if unknown. */
static uint64_t io_wchar(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	uint64_t v = 0;
	if (f == NULL) {
		return 0;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "wchar: %" SCNu64, &v) == 1) {
			break;
		}
	}
	fclose(f);
	return v;
}

static int apply_run(const struct opts *o, const char *dir, uint32_t batch, uint64_t total)
{
	struct store_buf b;
	struct kv_store *s = NULL;
	uint64_t *nums = malloc(batch * sizeof *nums);
	if (nums == NULL || buf_init(o, &b) != 0) {
		free(nums);
		return 1;
	}
	int rv = store_open(o, dir, &s);
	uint64_t applied = 0;
	uint64_t w0 = io_wchar();
	double t0 = now_s();
	for (uint64_t i = 0; rv == 0 && i < total;) {
		size_t n = 0;
		for (; n < batch && i < total; n++, i++) {
			nums[n] = spread(i);
		}
		rv = put_batch(s, o, &b, nums, n, ++applied);
	}
	double dt = now_s() - t0;
	uint64_t written = io_wchar() - w0;
	kv_close(s);
	free(nums);
	free(b.value);
	if (rv != 0) {
		return 1;
	}
	char f[4200];
	struct stat st;
	if (sub_dir(f, sizeof f, dir, "data.mdb") != 0 || stat(f, &st) != 0) {
		fprintf(stderr, "cairn-storage-bench: stat data.mdb: %s\n", strerror(errno));
		return 1;
	}
	if (dt <= 0) {
		dt = 1e-9;
	}
	double disk = (double)st.st_blocks * 512.0;
	printf("apply  batch %5" PRIu32 "  puts %8" PRIu64 "  %10.0f puts/s  %8.1f MiB/s  "
	       "%7.0f commits/s  %7.3f ms/batch  data.mdb %.1f MiB on disk (%.0f bytes/key)  "
	       "written %.1f KiB/put\n",
	       batch, total, (double)total / dt,
	       (double)total * (o->key_bytes + o->value_bytes) / dt / 1048576.0,
	       (double)applied / dt, dt * 1e3 / (double)applied, disk / 1048576.0,
	       disk / (double)total, (double)written / 1024.0 / (double)total);
	return 0;
}

static int bench_apply(const struct opts *o, const char *dir)
{
	struct opts a = *o;
	if (!a.batches_set) {
		a.batches[0] = 64;
		a.batches[1] = 256;
		a.batches[2] = 1024;
		a.n_batches = 3;
	}
	uint64_t total = a.keys ? a.keys : 200000;
	printf("# apply: %" PRIu64 " puts of new keys per batch size, %" PRIu32 "-byte keys "
	       "(spread over the key space), %" PRIu32 "-byte values, one write transaction "
	       "per batch, commits %s, fresh store in %s\n",
	       total, a.key_bytes, a.value_bytes, a.no_sync ? "NOT synced" : "synced", dir);
	print_rerun(&a, "--apply", total, 0, true);
	for (size_t i = 0; i < a.n_batches; i++) {
		char sub[4200];
		char name[64];
		snprintf(name, sizeof name, "apply-batch-%" PRIu32, a.batches[i]);
		if (sub_dir(sub, sizeof sub, dir, name) != 0) {
			return 1;
		}
		int rv = apply_run(&a, sub, a.batches[i], total);
		rm_tree(sub);
		if (rv != 0) {
			return rv;
		}
	}
	return 0;
}

/* ---- --range: reads per second -------------------------------------------- */

static int bench_range(const struct opts *o, const char *dir)
{
	uint64_t keys = o->keys ? o->keys : 100000;
	uint64_t ops = o->ops ? o->ops : 100000;
	if (keys < SCAN_KEYS) {
		fprintf(stderr, "cairn-storage-bench: --range needs --keys >= %d\n", SCAN_KEYS);
		return 2;
	}
	printf("# range: store of %" PRIu64 " keys (%" PRIu32 "-byte keys, %" PRIu32
	       "-byte values), %" PRIu64 " single-key Ranges at random keys, then %" PRIu64
	       " Ranges of %d consecutive keys at random starts, one thread, in %s\n",
	       keys, o->key_bytes, o->value_bytes, ops, ops, SCAN_KEYS, dir);
	print_rerun(o, "--range", keys, ops, false);
	char sub[4200];
	struct store_buf b;
	struct kv_store *s = NULL;
	if (sub_dir(sub, sizeof sub, dir, "range") != 0 || buf_init(o, &b) != 0) {
		return 1;
	}
	uint64_t applied = 0;
	int rv = store_open(o, sub, &s);
	if (rv == 0) {
		rv = fill_store(s, o, &b, keys, &applied);
	}
	uint8_t end[KV_MAX_KEY + 1];
	uint64_t rng = 0x2545F4914F6CDD1DULL;
	double t_get = 0, t_scan = 0;
	for (int phase = 0; phase < 2 && rv == 0; phase++) {
		double t0 = now_s();
		for (uint64_t i = 0; i < ops && rv == 0; i++) {
			struct kv_range_req req = { .key = b.key };
			size_t want = 1;
			if (phase == 0) {
				req.key_len = key_of(o, rng_next(&rng) % keys, b.key);
			} else {
				uint64_t k0 = rng_next(&rng) % (keys - SCAN_KEYS + 1);
				req.key_len = key_of(o, k0, b.key);
				req.range_end = end;
				req.range_end_len = key_of(o, k0 + SCAN_KEYS, end);
				want = SCAN_KEYS;
			}
			struct kv_range_resp resp;
			rv = kv_range(s, &req, &resp);
			if (rv != 0) {
				fprintf(stderr, "cairn-storage-bench: range: %s\n",
					kv_strerror(rv));
				break;
			}
			if (resp.n_kvs != want) {
				fprintf(stderr,
					"cairn-storage-bench: range gave %zu keys, not %zu\n",
					resp.n_kvs, want);
				rv = -1;
			}
			kv_range_resp_free(&resp);
		}
		double dt = now_s() - t0;
		*(phase == 0 ? &t_get : &t_scan) = dt > 0 ? dt : 1e-9;
	}
	kv_close(s);
	free(b.value);
	rm_tree(sub);
	if (rv != 0) {
		return 1;
	}
	printf("range  keys %8" PRIu64 "  get: %10.0f Ranges/s (%6.2f us each)  scan of %d: "
	       "%9.0f Ranges/s (%6.2f us each, %10.0f keys/s)\n",
	       keys, (double)ops / t_get, t_get * 1e6 / (double)ops, SCAN_KEYS,
	       (double)ops / t_scan, t_scan * 1e6 / (double)ops, (double)ops * SCAN_KEYS / t_scan);
	return 0;
}

/* ---- --reopen: kv_open to the first Range ---------------------------------- */

static int bench_reopen(const struct opts *o, const char *dir)
{
	uint64_t keys = o->keys ? o->keys : 1000000;
	printf("# reopen: store of %" PRIu64 " keys (%" PRIu32 "-byte keys, %" PRIu32
	       "-byte values) built with batches of 1024 puts and closed (untimed), then "
	       "timed from kv_open to the first successful single-key Range, in %s; "
	       "the file is in the page cache (caches are not dropped)\n",
	       keys, o->key_bytes, o->value_bytes, dir);
	print_rerun(o, "--reopen", keys, 0, false);
	char sub[4200];
	struct store_buf b;
	struct kv_store *s = NULL;
	if (keys == 0 || sub_dir(sub, sizeof sub, dir, "reopen") != 0 || buf_init(o, &b) != 0) {
		return keys == 0 ? 2 : 1;
	}
	uint64_t applied = 0;
	double t_fill = now_s();
	int rv = store_open(o, sub, &s);
	if (rv == 0) {
		rv = fill_store(s, o, &b, keys, &applied);
	}
	t_fill = now_s() - t_fill;
	kv_close(s);
	s = NULL;
	double t_open = 0, t_ready = 0;
	if (rv == 0) {
		double t0 = now_s();
		rv = store_open(o, sub, &s);
		double t1 = now_s();
		if (rv == 0) {
			struct kv_range_req req = { .key = b.key,
						    .key_len = key_of(o, keys / 2, b.key) };
			struct kv_range_resp resp;
			rv = kv_range(s, &req, &resp);
			t_ready = now_s() - t0;
			t_open = t1 - t0;
			if (rv == 0 && resp.n_kvs != 1) {
				fprintf(stderr, "cairn-storage-bench: key %" PRIu64 " not found\n",
					keys / 2);
				rv = -1;
			} else if (rv != 0) {
				fprintf(stderr, "cairn-storage-bench: range: %s\n",
					kv_strerror(rv));
			}
			kv_range_resp_free(&resp);
		}
		struct kv_status ks;
		if (rv == 0 && (rv = kv_status(s, &ks)) == 0 && ks.applied_index != applied) {
			fprintf(stderr,
				"cairn-storage-bench: applied index %" PRIu64 " not %" PRIu64 "\n",
				ks.applied_index, applied);
			rv = -1;
		}
		kv_close(s);
	}
	free(b.value);
	rm_tree(sub);
	if (rv != 0) {
		return 1;
	}
	printf("reopen keys %8" PRIu64 "  kv_open %8.3f ms  open to first Range %8.3f ms  "
	       "(build took %.1f s)\n",
	       keys, t_open * 1e3, t_ready * 1e3, t_fill);
	return 0;
}

/* ---- --compact: the writer's longest pause ---------------------------------- */

static int bench_compact(const struct opts *o, const char *dir)
{
	uint64_t keys = o->keys ? o->keys : 20000;
	uint64_t puts = o->ops ? o->ops : 200000;
	uint32_t batch = o->batches_set ? o->batches[0] : 256;
	printf("# compact: %" PRIu64 " puts over %" PRIu64 " keys (%" PRIu32 "-byte keys, %" PRIu32
	       "-byte values) in batches of %" PRIu32 ", then kv_compact to the current revision "
	       "and kv_compact_step(%" PRIu64
	       " keys) calls, each followed by one write batch of %" PRIu32
	       " puts, on one thread; commits %s; in %s\n",
	       puts, keys, o->key_bytes, o->value_bytes, batch, o->compact_step, batch,
	       o->no_sync ? "NOT synced" : "synced", dir);
	printf("# (--batch sets the write batch; only its first size is used)\n");
	print_rerun(o, "--compact", keys, puts, o->batches_set);
	char sub[4200];
	struct store_buf b;
	struct kv_store *s = NULL;
	if (keys == 0 || sub_dir(sub, sizeof sub, dir, "compact") != 0 || buf_init(o, &b) != 0) {
		return keys == 0 ? 2 : 1;
	}
	size_t cap_steps = 1024, n_steps = 0, n_wb = 0, n_fill = 0;
	size_t cap_fill = (size_t)(puts / batch + 2);
	double *steps = malloc(cap_steps * sizeof *steps);
	double *wbs = malloc(cap_steps * sizeof *wbs);
	double *fills = malloc(cap_fill * sizeof *fills);
	uint64_t *nums = malloc(batch * sizeof *nums);
	uint64_t applied = 0, seq = 0;
	int rv = (steps && wbs && fills && nums) ? store_open(o, sub, &s) : -1;
	/* Writing phase: the same batches the writer makes later, timed too,
	 * as the reference without compaction. */
	for (uint64_t i = 0; rv == 0 && i < puts;) {
		size_t n = 0;
		for (; n < batch && i < puts; n++, i++) {
			nums[n] = seq++ % keys;
		}
		double t0 = now_s();
		rv = put_batch(s, o, &b, nums, n, ++applied);
		fills[n_fill++] = now_s() - t0;
	}
	struct kv_status ks;
	struct kv_wtx *w = NULL;
	if (rv == 0 && (rv = kv_status(s, &ks)) == 0 && (rv = kv_txn_begin_write(s, &w)) == 0) {
		rv = kv_compact(w, ks.revision);
		if (rv != 0) {
			kv_txn_abort(w);
		} else {
			rv = kv_txn_commit(w, ++applied);
		}
		if (rv != 0) {
			fprintf(stderr, "cairn-storage-bench: compact: %s\n", kv_strerror(rv));
		}
	}
	bool done = false;
	double t_all = now_s();
	while (rv == 0 && !done) {
		if (n_steps == cap_steps) {
			cap_steps *= 2;
			double *a = realloc(steps, cap_steps * sizeof *a);
			double *c = a ? realloc(wbs, cap_steps * sizeof *c) : NULL;
			if (a) {
				steps = a;
			}
			if (c == NULL) {
				fprintf(stderr, "cairn-storage-bench: out of memory\n");
				rv = -1;
				break;
			}
			wbs = c;
		}
		double t0 = now_s();
		rv = kv_compact_step(s, o->compact_step, &done);
		steps[n_steps++] = now_s() - t0;
		if (rv != 0) {
			fprintf(stderr, "cairn-storage-bench: kv_compact_step: %s\n",
				kv_strerror(rv));
			break;
		}
		for (size_t n = 0; n < batch; n++) {
			nums[n] = seq++ % keys;
		}
		t0 = now_s();
		rv = put_batch(s, o, &b, nums, batch, ++applied);
		wbs[n_wb++] = now_s() - t0;
	}
	t_all = now_s() - t_all;
	/* The writer's longest wait: a step and the batch right after it. */
	double pause = 0;
	for (size_t i = 0; i < n_wb; i++) {
		pause = steps[i] + wbs[i] > pause ? steps[i] + wbs[i] : pause;
	}
	kv_close(s);
	free(b.value);
	free(nums);
	rm_tree(sub);
	if (rv == 0 && (n_fill == 0 || n_wb == 0)) {
		fprintf(stderr, "cairn-storage-bench: --compact needs --ops > 0\n");
		rv = -1;
	}
	if (rv == 0) {
		double fp99 = percentile(fills, n_fill, 99), fmax = fills[n_fill - 1];
		double sp99 = percentile(steps, n_steps, 99), smax = steps[n_steps - 1];
		double wp99 = percentile(wbs, n_wb, 99), wmax = wbs[n_wb - 1];
		printf("compact  revisions %8" PRIu64 "  keys %7" PRIu64 "  %zu steps of %" PRIu64
		       " keys in %.3f s (with the batches)\n",
		       puts, keys, n_steps, o->compact_step, t_all);
		printf("compact  kv_compact_step: p99 %8.3f ms  max %8.3f ms\n", sp99 * 1e3,
		       smax * 1e3);
		printf("compact  write batch during compaction: p99 %8.3f ms  max %8.3f ms  "
		       "(%zu batches)\n",
		       wp99 * 1e3, wmax * 1e3, n_wb);
		printf("compact  write batch before compaction: p99 %8.3f ms  max %8.3f ms  "
		       "(%zu batches)\n",
		       fp99 * 1e3, fmax * 1e3, n_fill);
		printf("compact  longest step + following batch: %.3f ms\n", pause * 1e3);
	}
	free(steps);
	free(wbs);
	free(fills);
	return rv == 0 ? 0 : 1;
}

/* ---- modes ---------------------------------------------------------- */

/* One row per mode; --smoke runs them all. */
static const struct mode {
	const char *flag;
	int (*run)(const struct opts *o, const char *dir);
} modes[] = {
	{ "--wal", bench_wal },       { "--apply", bench_apply },     { "--range", bench_range },
	{ "--reopen", bench_reopen }, { "--compact", bench_compact },
};
#define N_MODES (sizeof modes / sizeof modes[0])

static void usage(FILE *fp)
{
	fprintf(fp,
		"usage: cairn-storage-bench [--wal] [--apply] [--range] [--reopen] [--compact]\n"
		"                           [--smoke] [--dir DIR] [--batch 1,16,128,1024]\n"
		"  --wal:   [--entries N] [--entry-bytes B] [--segment-bytes S]\n"
		"  store:   [--keys N] [--ops N] [--compact-step K] [--key-bytes B]\n"
		"           [--value-bytes B] [--no-sync]\n");
}

static int parse_batches(struct opts *o, const char *arg)
{
	char buf[256];
	snprintf(buf, sizeof buf, "%s", arg);
	o->n_batches = 0;
	char *save = NULL;
	for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		long v = strtol(t, NULL, 10);
		if (v < 1 || v > 65536 || o->n_batches == MAX_BATCHES) {
			return -1;
		}
		o->batches[o->n_batches++] = (uint32_t)v;
	}
	o->batches_set = true;
	return o->n_batches > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct opts o = {
		.dir = ".",
		.entry_bytes = 1024,
		.batches = { 1, 16, 128, 1024 },
		.n_batches = 4,
		.compact_step = 1000,
		.key_bytes = 256,
		.value_bytes = 1024,
		.argv0 = argv[0],
	};
	bool run[N_MODES] = { false };
	bool any = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool matched = false;
		for (size_t m = 0; m < N_MODES; m++) {
			if (strcmp(a, modes[m].flag) == 0) {
				run[m] = any = matched = true;
			}
		}
		if (matched) {
			continue;
		}
		if (strcmp(a, "--smoke") == 0) {
			o.smoke = true;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (i + 1 < argc && strcmp(a, "--dir") == 0) {
			o.dir = argv[++i];
		} else if (i + 1 < argc && strcmp(a, "--entries") == 0) {
			o.entries = strtoull(argv[++i], NULL, 10);
		} else if (i + 1 < argc && strcmp(a, "--entry-bytes") == 0) {
			o.entry_bytes = (uint32_t)strtoul(argv[++i], NULL, 10);
		} else if (i + 1 < argc && strcmp(a, "--segment-bytes") == 0) {
			o.segment_bytes = strtoull(argv[++i], NULL, 10);
		} else if (i + 1 < argc && strcmp(a, "--keys") == 0) {
			o.keys = strtoull(argv[++i], NULL, 10);
		} else if (i + 1 < argc && strcmp(a, "--ops") == 0) {
			o.ops = strtoull(argv[++i], NULL, 10);
		} else if (i + 1 < argc && strcmp(a, "--compact-step") == 0) {
			o.compact_step = strtoull(argv[++i], NULL, 10);
		} else if (i + 1 < argc && strcmp(a, "--key-bytes") == 0) {
			o.key_bytes = (uint32_t)strtoul(argv[++i], NULL, 10);
		} else if (i + 1 < argc && strcmp(a, "--value-bytes") == 0) {
			o.value_bytes = (uint32_t)strtoul(argv[++i], NULL, 10);
		} else if (strcmp(a, "--no-sync") == 0) {
			o.no_sync = true;
		} else if (i + 1 < argc && strcmp(a, "--batch") == 0) {
			if (parse_batches(&o, argv[++i]) != 0) {
				usage(stderr);
				return 2;
			}
		} else {
			usage(stderr);
			return 2;
		}
	}
	/* A key is the prefix and at least 20 digits, at most KV_MAX_KEY. */
	if (o.key_bytes < sizeof KEY_PREFIX - 1 + 20 || o.key_bytes > KV_MAX_KEY ||
	    o.compact_step == 0) {
		fprintf(stderr,
			"cairn-storage-bench: --key-bytes must be %zu..%d, --compact-step > 0\n",
			sizeof KEY_PREFIX - 1 + 20, KV_MAX_KEY);
		return 2;
	}
	if (o.smoke) {
		/* Tiny: a few batches of each size, small segments to cross one;
		 * a few hundred keys for the store modes (--keys and --ops apply to
		 * every store mode; --batch stays the WAL's default, the others
		 * take theirs). */
		o.entries = 300;
		o.segment_bytes = 64 * 1024;
		o.keys = 300;
		o.ops = 1000;
		o.compact_step = 50;
		for (size_t m = 0; m < N_MODES; m++) {
			run[m] = true;
		}
		any = true;
	}
	if (!any) {
		run[0] = true; /* --wal */
	}
	char dir[4000];
	int k = snprintf(dir, sizeof dir, "%s/cairn-storage-bench-XXXXXX", o.dir);
	if (k < 0 || (size_t)k >= sizeof dir) {
		fprintf(stderr, "cairn-storage-bench: --dir too long\n");
		return 2;
	}
	if (mkdtemp(dir) == NULL) {
		fprintf(stderr, "cairn-storage-bench: mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	int rv = 0;
	for (size_t m = 0; m < N_MODES && rv == 0; m++) {
		if (run[m]) {
			rv = modes[m].run(&o, dir);
		}
	}
	rm_tree(dir);
	return rv;
}
