/* storage_bench.c: cairn-storage-bench, the write paths of kvstore/ measured
 * one at a time on a real disk. No timing is asserted anywhere; figures and
 * the commands that produced them go to docs/benchmarks.md.
 *
 *   cairn-storage-bench --wal [--dir D] [--entries N] [--entry-bytes B]
 *                       [--batch 1,16,128,1024] [--segment-bytes S]
 *       the Raft log: entries appended and synced per second with group
 *       commit (one kv_wal_append, so one fdatasync, per batch), for each
 *       batch size, with the fdatasync calls per second.
 *   cairn-storage-bench --smoke
 *       every mode, tiny, for ctest: proves the binary runs.
 *
 * Files go to a fresh directory made under --dir (default: the current
 * directory) and removed at the end.
 *
 * Adding a mode (the MVCC apply path, `--apply`, once kv_mvcc.h exists):
 * write `static int bench_apply(const struct opts *o, const char *dir)` and
 * add a row to `modes[]` below; main() needs no change. */
#define _DEFAULT_SOURCE /* mkdtemp, strtok_r under -std=c11 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_wal.h"

#define MAX_BATCHES 16

struct opts {
	const char *dir;
	uint64_t entries; /* per batch size; 0: a default per batch size */
	uint32_t entry_bytes;
	uint64_t segment_bytes;
	uint32_t batches[MAX_BATCHES];
	size_t n_batches;
	bool smoke;
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

/* ---- modes ---------------------------------------------------------- */

/* One row per mode; --smoke runs them all. The MVCC apply path (`--apply`)
 * goes here when kv_mvcc.h lands. */
static const struct mode {
	const char *flag;
	int (*run)(const struct opts *o, const char *dir);
} modes[] = {
	{ "--wal", bench_wal },
};
#define N_MODES (sizeof modes / sizeof modes[0])

static void usage(FILE *fp)
{
	fprintf(fp, "usage: cairn-storage-bench [--wal] [--smoke] [--dir DIR] [--entries N]\n"
		    "                           [--entry-bytes B] [--batch 1,16,128,1024]\n"
		    "                           [--segment-bytes S]\n");
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
	return o->n_batches > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct opts o = {
		.dir = ".", .entry_bytes = 1024, .batches = { 1, 16, 128, 1024 }, .n_batches = 4
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
	if (o.smoke) {
		/* Tiny: a few batches of each size, small segments to cross one. */
		o.entries = 300;
		o.segment_bytes = 64 * 1024;
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
