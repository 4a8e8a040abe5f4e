/* test_wal.c: the WAL (kvstore/kv_wal.h) through its public API: CRC32C,
 * append and read back, ranges with byte limits, terms, first and last
 * index, hard state and snapshot markers across reopen, suffix truncation,
 * segment rollover, compaction, the directory lock. Crash cases (torn
 * tails, corruption, SIGKILL) are in test_wal_crash.c. Files live under a
 * mkdtemp directory removed at the end of each test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_wal.h"
#include "crc32c.h"
#include "tmpdir.h"

/* ---- fixture: a fresh directory per test ---- */

struct fx {
	char dir[256];
	char wal[300];
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "cairn-wal");
	snprintf(f->wal, sizeof f->wal, "%s/wal", f->dir);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	h_tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static size_t count_segments(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		n += l > 4 && strcmp(de->d_name + l - 4, ".wal") == 0;
	}
	closedir(d);
	return n;
}

static struct kv_wal *open_wal(const char *dir, uint64_t seg_bytes)
{
	struct kv_wal_options o = { .segment_bytes = seg_bytes };
	struct kv_wal *w = NULL;
	char msg[256];
	int rv = kv_wal_open(dir, &o, &w, msg, sizeof msg);
	if (rv != 0) {
		fail_msg("kv_wal_open: %s: %s", kv_strerror(rv), msg);
	}
	return w;
}

/* Entry data is a function of (index, term), so any read can be checked. */
static uint32_t data_len(uint64_t index, uint64_t term, uint32_t base)
{
	return base == 0 ? 0 : base + (uint32_t)((index * 7 + term) % 5);
}

static void fill(uint8_t *buf, uint64_t index, uint64_t term, uint32_t len)
{
	for (uint32_t j = 0; j < len; j++) {
		buf[j] = (uint8_t)(index * 131 + term * 17 + j);
	}
}

/* Append [first, first+n) with the given term in one batch. */
static int put(struct kv_wal *w, uint64_t first, size_t n, uint64_t term, uint32_t base,
	       const struct kv_wal_hard_state *hs)
{
	struct kv_wal_entry *e = calloc(n, sizeof *e);
	uint8_t *bufs = calloc(n, base + 8);
	assert_true(e != NULL && bufs != NULL);
	for (size_t i = 0; i < n; i++) {
		uint64_t idx = first + i;
		uint8_t *b = bufs + i * (base + 8);
		e[i] = (struct kv_wal_entry){ .term = term,
					      .index = idx,
					      .type = (uint32_t)(idx % 3),
					      .len = data_len(idx, term, base),
					      .data = b };
		fill(b, idx, term, e[i].len);
	}
	int rv = kv_wal_append(w, e, n, hs);
	free(bufs);
	free(e);
	return rv;
}

static void check_entry(const struct kv_wal_entry *e, uint64_t index, uint64_t term, uint32_t base)
{
	assert_int_equal(e->index, index);
	assert_int_equal(e->term, term);
	assert_int_equal(e->type, index % 3);
	assert_int_equal(e->len, data_len(index, term, base));
	uint8_t b[4096];
	fill(b, index, term, e->len);
	assert_memory_equal(e->data, b, e->len);
}

/* Every entry in [lo, hi] has the given term and its data. */
static void check_range(struct kv_wal *w, uint64_t lo, uint64_t hi, uint64_t term, uint32_t base)
{
	size_t n = (size_t)(hi - lo + 1);
	struct kv_wal_entry *e = calloc(n, sizeof *e);
	assert_non_null(e);
	uint32_t got = 0;
	assert_int_equal(kv_wal_entries(w, lo, hi + 1, UINT64_MAX, e, &got), 0);
	assert_int_equal(got, n);
	for (size_t i = 0; i < n; i++) {
		check_entry(&e[i], lo + i, term, base);
		uint64_t t = 0;
		assert_int_equal(kv_wal_term(w, lo + i, &t), 0);
		assert_int_equal(t, term);
	}
	free(e);
}

/* ---- tests ---- */

static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++) {
			c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		}
	}
	return ~c;
}

static void test_wal_crc32c(void **state)
{
	(void)state;
	assert_int_equal(cairn_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(cairn_crc32c(0, "", 0), 0);
	/* Incremental equals one shot; slicing equals bitwise at every alignment. */
	assert_int_equal(cairn_crc32c(cairn_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	assert_int_equal(cairn__crc32c_sw(cairn_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	uint8_t buf[300];
	uint64_t x = 88172645463325252ull;
	for (size_t i = 0; i < sizeof buf; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	for (size_t off = 0; off < 9; off++) {
		for (size_t n = 0; n < 200; n += 7) {
			assert_int_equal(cairn_crc32c(0, buf + off, n),
					 crc32c_bitwise(buf + off, n));
			/* the tables agree too where the CPU has its own CRC32C */
			assert_int_equal(cairn__crc32c_sw(0, buf + off, n),
					 crc32c_bitwise(buf + off, n));
		}
	}
}

static void test_wal_append_read_back(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 0);
	assert_int_equal(kv_wal_first_index(w), 1);
	assert_int_equal(kv_wal_last_index(w), 0);
	for (uint64_t i = 1; i <= 100; i += 10) {
		assert_int_equal(put(w, i, 10, 2, 100, NULL), 0);
	}
	assert_int_equal(kv_wal_first_index(w), 1);
	assert_int_equal(kv_wal_last_index(w), 100);
	check_range(w, 1, 100, 2, 100);
	struct kv_wal_stats st;
	kv_wal_stats(w, &st);
	assert_int_equal(st.appends, 10);
	assert_int_equal(st.entries_written, 100);
	/* One fdatasync per batch, plus the fsync that created the segment. */
	assert_int_equal(st.fdatasyncs, 10 + 1);
	kv_wal_close(w);

	w = open_wal(f->wal, 0);
	assert_int_equal(kv_wal_last_index(w), 100);
	check_range(w, 1, 100, 2, 100);
	assert_int_equal(put(w, 101, 1, 3, 100, NULL), 0);
	check_range(w, 101, 101, 3, 100);
	kv_wal_close(w);
}

static void test_wal_ranges_and_errors(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 0);
	struct kv_wal_entry e[20];
	uint32_t n = 99;
	/* Empty log. */
	assert_int_equal(kv_wal_entries(w, 1, 2, UINT64_MAX, e, &n), KV_EUNAVAILABLE);
	assert_int_equal(n, 0);
	uint64_t t = 9;
	assert_int_equal(kv_wal_term(w, 0, &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(kv_wal_term(w, 1, &t), KV_EUNAVAILABLE);
	/* Entries of 10 bytes each (base 0 would be empty; use fixed 10). */
	struct kv_wal_entry in[10];
	uint8_t data[10][10];
	for (int i = 0; i < 10; i++) {
		memset(data[i], 'a' + i, 10);
		in[i] = (struct kv_wal_entry){
			.term = 1, .index = (uint64_t)i + 1, .type = 0, .len = 10, .data = data[i]
		};
	}
	assert_int_equal(kv_wal_append(w, in, 10, NULL), 0);
	/* Byte limit: stop before the entry that would exceed it, at least one. */
	assert_int_equal(kv_wal_entries(w, 1, 11, 25, e, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(kv_wal_entries(w, 1, 11, 30, e, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(kv_wal_entries(w, 4, 11, 0, e, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].index, 4);
	assert_memory_equal(e[0].data, data[3], 10);
	assert_int_equal(kv_wal_entries(w, 3, 8, UINT64_MAX, e, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(e[4].index, 7);
	/* Out of range. */
	assert_int_equal(kv_wal_entries(w, 0, 3, UINT64_MAX, e, &n), KV_ECOMPACTED);
	assert_int_equal(kv_wal_entries(w, 5, 12, UINT64_MAX, e, &n), KV_EUNAVAILABLE);
	assert_int_equal(kv_wal_entries(w, 5, 5, UINT64_MAX, e, &n), KV_EUNAVAILABLE);
	assert_int_equal(kv_wal_term(w, 11, &t), KV_EUNAVAILABLE);
	/* Bad batches: a gap, non-consecutive indexes; nothing is written. */
	in[0].index = 12;
	assert_int_equal(kv_wal_append(w, in, 1, NULL), KV_EINVAL);
	in[0].index = 11;
	in[1].index = 13;
	assert_int_equal(kv_wal_append(w, in, 2, NULL), KV_EINVAL);
	assert_int_equal(kv_wal_last_index(w), 10);
	assert_true(strlen(kv_wal_last_error(w)) > 0);
	kv_wal_close(w);
}

static void test_wal_hard_state_and_snapshot_survive_reopen(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 0);
	struct kv_wal_hard_state hs = { .term = 3, .vote = 2, .commit = 0 }, got;
	assert_int_equal(kv_wal_append(w, NULL, 0, &hs), 0);
	assert_int_equal(put(w, 1, 20, 3, 50, NULL), 0);
	hs.commit = 15;
	assert_int_equal(put(w, 21, 5, 3, 50, &hs), 0);
	/* A local snapshot at 10 (term matches): entries after it are kept. */
	const uint8_t conf[] = "voters=1,2,3";
	struct kv_wal_snapshot snap = {
		.index = 10, .term = 3, .conf_len = sizeof conf, .conf = conf
	};
	assert_int_equal(kv_wal_save_snapshot(w, &snap), 0);
	assert_int_equal(kv_wal_save_snapshot(w, &snap), KV_EINVAL); /* not above */
	assert_int_equal(kv_wal_first_index(w), 11);
	assert_int_equal(kv_wal_last_index(w), 25);
	kv_wal_close(w);

	w = open_wal(f->wal, 0);
	kv_wal_hard_state(w, &got);
	assert_int_equal(got.term, 3);
	assert_int_equal(got.vote, 2);
	assert_int_equal(got.commit, 15);
	struct kv_wal_snapshot s2;
	kv_wal_snapshot_get(w, &s2);
	assert_int_equal(s2.index, 10);
	assert_int_equal(s2.term, 3);
	assert_int_equal(s2.conf_len, sizeof conf);
	assert_memory_equal(s2.conf, conf, sizeof conf);
	assert_int_equal(kv_wal_first_index(w), 11);
	assert_int_equal(kv_wal_last_index(w), 25);
	uint64_t t = 0;
	assert_int_equal(kv_wal_term(w, 10, &t), 0);
	assert_int_equal(t, 3);
	assert_int_equal(kv_wal_term(w, 9, &t), KV_ECOMPACTED);
	struct kv_wal_entry e[1];
	uint32_t n;
	assert_int_equal(kv_wal_entries(w, 10, 11, UINT64_MAX, e, &n), KV_ECOMPACTED);
	check_range(w, 11, 25, 3, 50);

	/* An installed snapshot (unknown term at 40): the whole log goes. */
	snap = (struct kv_wal_snapshot){ .index = 40, .term = 5, .conf_len = 0, .conf = NULL };
	assert_int_equal(kv_wal_save_snapshot(w, &snap), 0);
	assert_int_equal(kv_wal_first_index(w), 41);
	assert_int_equal(kv_wal_last_index(w), 40);
	assert_int_equal(put(w, 42, 1, 5, 50, NULL), KV_EINVAL);
	assert_int_equal(put(w, 41, 3, 5, 50, NULL), 0);
	kv_wal_close(w);

	w = open_wal(f->wal, 0);
	assert_int_equal(kv_wal_first_index(w), 41);
	assert_int_equal(kv_wal_last_index(w), 43);
	check_range(w, 41, 43, 5, 50);
	kv_wal_snapshot_get(w, &s2);
	assert_int_equal(s2.index, 40);
	assert_int_equal(s2.conf_len, 0);
	kv_wal_close(w);
}

static void test_wal_truncation_survives_reopen(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 0);
	assert_int_equal(put(w, 1, 30, 1, 40, NULL), 0);
	/* A new leader overwrites 21.. with term 2: the old 21..30 are cut. */
	assert_int_equal(put(w, 21, 3, 2, 40, NULL), 0);
	assert_int_equal(kv_wal_last_index(w), 23);
	check_range(w, 1, 20, 1, 40);
	check_range(w, 21, 23, 2, 40);
	/* And again, cutting into the rewritten part. */
	assert_int_equal(put(w, 23, 2, 3, 40, NULL), 0);
	kv_wal_close(w);

	w = open_wal(f->wal, 0);
	assert_int_equal(kv_wal_last_index(w), 24);
	check_range(w, 1, 20, 1, 40);
	check_range(w, 21, 22, 2, 40);
	check_range(w, 23, 24, 3, 40);
	/* Cut everything from the first index. */
	assert_int_equal(put(w, 1, 1, 4, 40, NULL), 0);
	kv_wal_close(w);
	w = open_wal(f->wal, 0);
	assert_int_equal(kv_wal_first_index(w), 1);
	assert_int_equal(kv_wal_last_index(w), 1);
	check_range(w, 1, 1, 4, 40);
	kv_wal_close(w);
}

static void test_wal_rollover_and_compaction(void **state)
{
	struct fx *f = *state;
	const uint64_t seg = 4096;
	struct kv_wal *w = open_wal(f->wal, seg);
	struct kv_wal_hard_state hs = { .term = 7, .vote = 1, .commit = 1 };
	assert_int_equal(kv_wal_append(w, NULL, 0, &hs), 0);
	for (uint64_t i = 1; i <= 100; i += 2) {
		assert_int_equal(put(w, i, 2, 7, 500, NULL), 0);
	}
	size_t before = count_segments(f->wal);
	assert_true(before >= 12); /* ~7 entries of ~530 bytes per 4 KiB segment */
	check_range(w, 1, 100, 7, 500);
	/* A batch larger than a segment spans several. */
	assert_int_equal(put(w, 101, 20, 7, 500, NULL), 0);
	check_range(w, 1, 120, 7, 500);
	/* A record larger than a segment is refused, nothing written. */
	assert_int_equal(put(w, 121, 1, 7, 4096, NULL), KV_ETOOBIG);
	assert_int_equal(kv_wal_last_index(w), 120);

	assert_int_equal(kv_wal_compact(w, 60), KV_EINVAL); /* no snapshot covers it */
	struct kv_wal_snapshot snap = { .index = 60, .term = 7 };
	assert_int_equal(kv_wal_save_snapshot(w, &snap), 0);
	size_t mid = count_segments(f->wal);
	assert_int_equal(kv_wal_compact(w, 60), 0);
	size_t after = count_segments(f->wal);
	assert_true(after < mid);
	struct kv_wal_stats st;
	kv_wal_stats(w, &st);
	assert_int_equal(st.segments_deleted, mid - after);
	assert_int_equal(kv_wal_first_index(w), 61);
	check_range(w, 61, 120, 7, 500);
	/* Compacting again deletes nothing more. */
	assert_int_equal(kv_wal_compact(w, 60), 0);
	assert_int_equal(count_segments(f->wal), after);
	kv_wal_close(w);

	/* The hard state lived in the first segment: it was re-recorded. */
	w = open_wal(f->wal, seg);
	struct kv_wal_hard_state got;
	kv_wal_hard_state(w, &got);
	assert_int_equal(got.term, 7);
	assert_int_equal(got.vote, 1);
	assert_int_equal(kv_wal_first_index(w), 61);
	assert_int_equal(kv_wal_last_index(w), 120);
	uint64_t t = 0;
	assert_int_equal(kv_wal_term(w, 60, &t), 0);
	assert_int_equal(t, 7);
	check_range(w, 61, 120, 7, 500);
	assert_int_equal(put(w, 121, 5, 8, 500, NULL), 0);
	/* Snapshot and compact everything but the segment being written. */
	snap = (struct kv_wal_snapshot){ .index = 125, .term = 8 };
	assert_int_equal(kv_wal_save_snapshot(w, &snap), 0);
	assert_int_equal(kv_wal_compact(w, 125), 0);
	kv_wal_close(w);
	w = open_wal(f->wal, seg);
	assert_int_equal(kv_wal_first_index(w), 126);
	assert_int_equal(kv_wal_last_index(w), 125);
	assert_int_equal(put(w, 126, 1, 8, 500, NULL), 0);
	check_range(w, 126, 126, 8, 500);
	kv_wal_close(w);
}

static void test_wal_lock(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 0);
	struct kv_wal *w2 = NULL;
	char msg[256];
	assert_int_equal(kv_wal_open(f->wal, NULL, &w2, msg, sizeof msg), KV_ELOCKED);
	assert_null(w2);
	assert_non_null(strstr(msg, "LOCK"));
	kv_wal_close(w);
	assert_int_equal(kv_wal_open(f->wal, NULL, &w2, msg, sizeof msg), 0);
	kv_wal_close(w2);
	struct kv_wal_options bad = { .segment_bytes = 100 };
	assert_int_equal(kv_wal_open(f->wal, &bad, &w2, msg, sizeof msg), KV_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wal_crc32c),
		cmocka_unit_test_setup_teardown(test_wal_append_read_back, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_ranges_and_errors, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_hard_state_and_snapshot_survive_reopen,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_truncation_survives_reopen, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_rollover_and_compaction, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_lock, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
