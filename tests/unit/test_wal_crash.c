/* test_wal_crash.c: the WAL after crashes. Torn tails (the last record cut
 * at every byte, or its bytes garbled) are cut at the last whole record and
 * appends continue; a flipped byte in an earlier record fails the open with
 * KV_ECORRUPT naming file and offset; and real processes killed with SIGKILL
 * in the middle of appending never lose an acknowledged entry.
 * Deterministic: fixed seeds; every loop and wait is bounded. */
#define _DEFAULT_SOURCE /* usleep */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_wal.h"
#include "tmpdir.h"

/* ---- fixture: a fresh directory per test ---- */

struct fx {
	char dir[256];
	char wal[300];
	char seg1[400];
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "cairn-walcrash");
	snprintf(f->wal, sizeof f->wal, "%s/wal", f->dir);
	snprintf(f->seg1, sizeof f->seg1, "%s/%016x.wal", f->wal, 1u);
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

static int try_open(const char *dir, uint64_t seg_bytes, struct kv_wal **w, char *msg, size_t len)
{
	struct kv_wal_options o = { .segment_bytes = seg_bytes };
	return kv_wal_open(dir, &o, w, msg, len);
}

static struct kv_wal *open_wal(const char *dir, uint64_t seg_bytes)
{
	struct kv_wal *w = NULL;
	char msg[256];
	int rv = try_open(dir, seg_bytes, &w, msg, sizeof msg);
	if (rv != 0) {
		fail_msg("kv_wal_open: %s: %s", kv_strerror(rv), msg);
	}
	return w;
}

/* Entry data is a function of (index, term): any survivor can be checked. */
static uint32_t data_len(uint64_t index, uint64_t term)
{
	return (uint32_t)((index * 37 + term * 11) % 1200);
}

static uint8_t data_byte(uint64_t index, uint64_t term, uint32_t j)
{
	return (uint8_t)(index * 131 + term * 17 + j * 13);
}

static int put(struct kv_wal *w, uint64_t first, size_t n, uint64_t term,
	       const struct kv_wal_hard_state *hs)
{
	struct kv_wal_entry e[32];
	static uint8_t bufs[32][1200];
	if (n > 32) {
		return KV_EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t idx = first + i;
		e[i] = (struct kv_wal_entry){ .term = term,
					      .index = idx,
					      .type = 0,
					      .len = data_len(idx, term),
					      .data = bufs[i] };
		for (uint32_t j = 0; j < e[i].len; j++) {
			bufs[i][j] = data_byte(idx, term, j);
		}
	}
	return kv_wal_append(w, e, n, hs);
}

/* 0 if every entry [first, last] matches its (index, term) data and terms
 * never go down; else the first bad index. */
static uint64_t verify(struct kv_wal *w)
{
	uint64_t prev = 0;
	for (uint64_t i = kv_wal_first_index(w); i <= kv_wal_last_index(w); i++) {
		struct kv_wal_entry e;
		uint32_t n = 0;
		if (kv_wal_entries(w, i, i + 1, UINT64_MAX, &e, &n) != 0 || n != 1 ||
		    e.index != i || e.term < prev || e.len != data_len(i, e.term)) {
			return i;
		}
		for (uint32_t j = 0; j < e.len; j++) {
			if (e.data[j] != data_byte(i, e.term, j)) {
				return i;
			}
		}
		prev = e.term;
	}
	return 0;
}

static void read_file(const char *path, uint8_t **buf, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	long n = ftell(fp);
	assert_true(n > 0);
	rewind(fp);
	*buf = malloc((size_t)n);
	assert_non_null(*buf);
	assert_int_equal(fread(*buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

/* Record size of entry (index, term) in the file format of kv_wal.h. */
static size_t rec_size(uint64_t index, uint64_t term)
{
	return 12 + 20 + data_len(index, term);
}

/* ---- torn tails ---- */

static void test_wal_torn_tail_every_offset(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 64 * 1024);
	size_t end = 0;
	for (uint64_t i = 1; i <= 20; i++) {
		assert_int_equal(put(w, i, 1, 1, NULL), 0);
		end += rec_size(i, 1);
	}
	kv_wal_close(w);
	uint8_t *orig;
	size_t len;
	read_file(f->seg1, &orig, &len);
	assert_int_equal(len, 64 * 1024);
	size_t start = end - rec_size(20, 1);
	/* Cut the file at every byte of the last record: a crash mid-write. */
	for (size_t cut = start; cut < end; cut++) {
		write_file(f->seg1, orig, cut);
		w = open_wal(f->wal, 64 * 1024);
		assert_int_equal(kv_wal_last_index(w), 19);
		assert_int_equal(verify(w), 0);
		struct kv_wal_stats st;
		kv_wal_stats(w, &st);
		assert_int_equal(st.torn_bytes_cut > 0, cut > start);
		/* Appends continue, and survive the next open. */
		assert_int_equal(put(w, 20, 2, 2, NULL), 0);
		kv_wal_close(w);
		w = open_wal(f->wal, 64 * 1024);
		assert_int_equal(kv_wal_last_index(w), 21);
		assert_int_equal(verify(w), 0);
		kv_wal_close(w);
		char seg2[420];
		snprintf(seg2, sizeof seg2, "%s/%016x.wal", f->wal, 2u);
		unlink(seg2); /* the shortened segment rolled over: start clean */
	}
	/* Full-size file, last record garbled (bytes written, not all of them
	 * right): a CRC failure with only zeros after it is a torn tail too. */
	for (size_t at = start; at < end; at += 7) {
		uint8_t *copy = malloc(len);
		assert_non_null(copy);
		memcpy(copy, orig, len);
		copy[at] ^= 0x5a;
		write_file(f->seg1, copy, len);
		free(copy);
		w = open_wal(f->wal, 64 * 1024);
		assert_int_equal(kv_wal_last_index(w), 19);
		assert_int_equal(verify(w), 0);
		assert_int_equal(put(w, 20, 1, 1, NULL), 0);
		assert_int_equal(kv_wal_last_index(w), 20);
		kv_wal_close(w);
	}
	free(orig);
}

/* A torn batch whose pages landed out of order: its first record is bad but
 * later records of the same batch are whole. Still torn: no later batch
 * start follows, so the whole batch goes. */
static void test_wal_torn_batch_out_of_order(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 64 * 1024);
	size_t start = 0;
	for (uint64_t i = 1; i <= 10; i++) {
		assert_int_equal(put(w, i, 1, 1, NULL), 0);
		start += rec_size(i, 1);
	}
	assert_int_equal(put(w, 11, 5, 1, NULL), 0);
	kv_wal_close(w);
	uint8_t *buf;
	size_t len;
	read_file(f->seg1, &buf, &len);
	memset(buf + start, 0, 40); /* the first record of the batch never landed */
	write_file(f->seg1, buf, len);
	free(buf);
	w = open_wal(f->wal, 64 * 1024);
	assert_int_equal(kv_wal_last_index(w), 10);
	assert_int_equal(verify(w), 0);
	assert_int_equal(put(w, 11, 2, 2, NULL), 0);
	kv_wal_close(w);
	w = open_wal(f->wal, 64 * 1024);
	assert_int_equal(kv_wal_last_index(w), 12);
	assert_int_equal(verify(w), 0);
	assert_int_equal(put(w, 13, 1, 2, NULL), 0);
	kv_wal_close(w);
	/* The same damage to batch [11, 12], which batch [13] follows: corrupt. */
	read_file(f->seg1, &buf, &len);
	memset(buf + start, 0, 40);
	write_file(f->seg1, buf, len);
	free(buf);
	char msg[256];
	assert_int_equal(try_open(f->wal, 64 * 1024, &w, msg, sizeof msg), KV_ECORRUPT);
	assert_non_null(strstr(msg, "0000000000000001.wal"));
}

/* A torn batch that began by cutting a suffix: the cut is undone with it,
 * so the acknowledged entries it would have replaced are all still there. */
static void test_wal_torn_batch_keeps_truncated_entries(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 64 * 1024);
	assert_int_equal(put(w, 1, 10, 1, NULL), 0);
	struct kv_wal_stats st;
	kv_wal_stats(w, &st);
	size_t synced = (size_t)st.tail_offset;
	struct kv_wal_hard_state hs = { .term = 2, .vote = 3, .commit = 4 };
	assert_int_equal(put(w, 6, 3, 2, &hs), 0); /* truncation, 3 entries, hard state */
	kv_wal_close(w);
	uint8_t *buf;
	size_t len;
	read_file(f->seg1, &buf, &len);
	size_t end = len;
	while (buf[end - 1] == 0) {
		end--;
	}
	buf[end - 30] ^= 0x10; /* inside the batch's last record */
	write_file(f->seg1, buf, len);
	free(buf);
	w = open_wal(f->wal, 64 * 1024);
	assert_int_equal(kv_wal_last_index(w), 10);
	assert_int_equal(verify(w), 0);
	uint64_t t = 0;
	assert_int_equal(kv_wal_term(w, 10, &t), 0);
	assert_int_equal(t, 1);
	kv_wal_hard_state(w, &hs);
	assert_int_equal(hs.term, 0);
	kv_wal_stats(w, &st);
	assert_int_equal(st.tail_offset, synced);
	kv_wal_close(w);
}

/* ---- corruption before the tail ---- */

static void test_wal_mid_log_corruption(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 64 * 1024);
	for (uint64_t i = 1; i <= 20; i++) {
		assert_int_equal(put(w, i, 1, 1, NULL), 0);
	}
	kv_wal_close(w);
	uint8_t *orig;
	size_t len;
	read_file(f->seg1, &orig, &len);
	size_t off5 = 0;
	for (uint64_t i = 1; i < 5; i++) {
		off5 += rec_size(i, 1);
	}
	/* Flip a byte in the header, the entry header and the data of record 5. */
	const size_t inside[] = { 0, 5, 13, 40, rec_size(5, 1) - 1 };
	for (size_t k = 0; k < sizeof inside / sizeof inside[0]; k++) {
		uint8_t *copy = malloc(len);
		assert_non_null(copy);
		memcpy(copy, orig, len);
		copy[off5 + inside[k]] ^= 0x01;
		write_file(f->seg1, copy, len);
		free(copy);
		char msg[256], want[64];
		w = NULL;
		assert_int_equal(try_open(f->wal, 64 * 1024, &w, msg, sizeof msg), KV_ECORRUPT);
		assert_null(w);
		assert_non_null(strstr(msg, "0000000000000001.wal"));
		snprintf(want, sizeof want, "offset %zu", off5);
		if (strstr(msg, want) == NULL) {
			fail_msg("message \"%s\" does not name %s", msg, want);
		}
	}
	/* Unchanged file: opens again. */
	write_file(f->seg1, orig, len);
	w = open_wal(f->wal, 64 * 1024);
	assert_int_equal(kv_wal_last_index(w), 20);
	kv_wal_close(w);
	free(orig);
}

static void test_wal_corruption_in_earlier_segment(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 4096);
	for (uint64_t i = 1; i <= 40; i++) {
		assert_int_equal(put(w, i, 1, 1, NULL), 0);
	}
	kv_wal_close(w);
	/* The last record of segment 1, garbled with zeros after it: not the
	 * last segment, so corruption, not a torn tail. */
	uint8_t *orig;
	size_t len;
	read_file(f->seg1, &orig, &len);
	size_t end = 0;
	uint64_t i = 1;
	while (end + rec_size(i, 1) <= 4096) {
		end += rec_size(i, 1);
		i++;
	}
	orig[end - 3] ^= 0xff;
	write_file(f->seg1, orig, len);
	free(orig);
	struct kv_wal *w2 = NULL;
	char msg[256];
	assert_int_equal(try_open(f->wal, 4096, &w2, msg, sizeof msg), KV_ECORRUPT);
	assert_non_null(strstr(msg, "0000000000000001.wal"));
	assert_non_null(strstr(msg, "CRC"));
}

/* A lost segment file is never skipped silently: not in the middle, not at
 * the start of a log that no snapshot covers. */
static void test_wal_missing_segment(void **state)
{
	struct fx *f = *state;
	struct kv_wal *w = open_wal(f->wal, 4096);
	for (uint64_t i = 1; i <= 40; i++) {
		assert_int_equal(put(w, i, 1, 1, NULL), 0);
	}
	kv_wal_close(w);
	char path[420], msg[256];
	snprintf(path, sizeof path, "%s/%016x.wal", f->wal, 3u);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(try_open(f->wal, 4096, &w, msg, sizeof msg), KV_ECORRUPT);
	assert_non_null(strstr(msg, "0000000000000003 missing"));
	assert_int_equal(unlink(f->seg1), 0);
	snprintf(path, sizeof path, "%s/%016x.wal", f->wal, 2u);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(try_open(f->wal, 4096, &w, msg, sizeof msg), KV_ECORRUPT);
	assert_non_null(strstr(msg, "segments missing"));
	/* Not a directory: a clear error, not a crash. */
	snprintf(path, sizeof path, "%s/%016x.wal", f->wal, 4u);
	assert_int_equal(try_open(path, 4096, &w, msg, sizeof msg), KV_EIO);
	assert_null(w);
	assert_non_null(strstr(msg, path));
}

/* ---- real processes killed mid-append ---- */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* What the child reports after each synced batch. */
struct ack {
	uint64_t last; /* acknowledged last index */
	uint64_t seq;  /* synced up to (seq, off): kv_wal_stats tail */
	uint64_t off;
};

/* Appends batches for ever: sometimes overwrites its last entry with a new
 * term (the suffix cut), always grows; after each synced batch writes an
 * ack to fd. */
static void child_run(const char *dir, int fd, uint64_t seed)
{
	struct kv_wal *w = NULL;
	struct kv_wal_options o = { .segment_bytes = 32 * 1024 };
	if (kv_wal_open(dir, &o, &w, NULL, 0) != 0) {
		_exit(2);
	}
	/* The current term: never append below the last entry's term (a batch
	 * spanning two segments may be recovered without its hard state). */
	struct kv_wal_hard_state hs;
	kv_wal_hard_state(w, &hs);
	uint64_t t = 0;
	kv_wal_term(w, kv_wal_last_index(w), &t);
	if (hs.term < t) {
		hs.term = t;
	}
	if (hs.term == 0) {
		hs.term = 1;
	}
	for (int round = 0; round < 100000; round++) {
		uint64_t last = kv_wal_last_index(w);
		uint64_t start = last + 1;
		size_t n = 1 + (size_t)(rnd(&seed) % 16);
		if (last >= 2 && rnd(&seed) % 6 == 0) {
			start = last; /* cut the last entry, rewrite it with a new term */
			hs.term++;
			n++;
		}
		if (put(w, start, n, hs.term, &hs) != 0) {
			_exit(3);
		}
		struct kv_wal_stats st;
		kv_wal_stats(w, &st);
		struct ack ack = { kv_wal_last_index(w), st.tail_segment, st.tail_offset };
		if (write(fd, &ack, sizeof ack) != (ssize_t)sizeof ack) {
			_exit(4);
		}
	}
	_exit(0);
}

/* Damage what was not synced after a: chop the tail segment at a random
 * point after a.off, or zero from there, or flip one byte there; segments
 * after it (created after its last sync) lose all their content. mode 0: no
 * damage. */
static void power_cut(const char *dir, const struct ack *a, uint64_t r)
{
	int mode = (int)(r % 4);
	if (mode == 0 || a->seq == 0) {
		return;
	}
	for (uint64_t seq = a->seq; seq < a->seq + 1000; seq++) {
		char path[400];
		snprintf(path, sizeof path, "%s/%016llx.wal", dir, (unsigned long long)seq);
		if (access(path, F_OK) != 0) {
			break;
		}
		char next[400];
		snprintf(next, sizeof next, "%s/%016llx.wal", dir, (unsigned long long)(seq + 1));
		if (seq == a->seq && access(next, F_OK) == 0) {
			continue; /* a roll syncs the segment it leaves: nothing to lose */
		}
		uint8_t *buf;
		size_t len;
		read_file(path, &buf, &len);
		size_t from = seq == a->seq ? (size_t)a->off : 0, end = len;
		while (end > from && buf[end - 1] == 0) {
			end--;
		}
		if (end > from) {
			size_t at = from + (size_t)((r >> 8) % (end - from));
			if (seq != a->seq) {
				memset(buf, 0, len);
			} else if (mode == 1) {
				len = at;
			} else if (mode == 2) {
				memset(buf + at, 0, end - at);
			} else {
				buf[at] ^= (uint8_t)(1 + (r >> 40) % 255);
			}
			write_file(path, buf, len);
		}
		free(buf);
	}
}

static void test_wal_crash_sigkill(void **state)
{
	struct fx *f = *state;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	uint64_t acked = 0;
	struct ack last_ack = { 0, 0, 0 };
	int torn = 0;
	for (int round = 0; round < 30; round++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		uint64_t child_seed = rnd(&seed);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			child_run(f->wal, p[1], child_seed);
		}
		close(p[1]);
		/* Wait for a random number of acks (bounded in time), then a
		 * random sub-batch delay, then SIGKILL. */
		uint64_t want = 1 + rnd(&seed) % 25;
		uint64_t got = 0;
		int polls = 0;
		while (got < want && polls < 500) {
			struct pollfd pfd = { .fd = p[0], .events = POLLIN };
			int r = poll(&pfd, 1, 20);
			polls++;
			if (r <= 0) {
				continue;
			}
			struct ack a;
			ssize_t k = read(p[0], &a, sizeof a);
			if (k != (ssize_t)sizeof a) {
				break; /* child died or short read: checked below */
			}
			if (a.last > acked) {
				acked = a.last;
			}
			last_ack = a;
			got++;
		}
		usleep((useconds_t)(rnd(&seed) % 2000));
		kill(pid, SIGKILL);
		int status = 0;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* Acks written just before the kill still count. */
		for (int k = 0; k < 100000; k++) {
			struct ack a;
			if (read(p[0], &a, sizeof a) != (ssize_t)sizeof a) {
				break;
			}
			if (a.last > acked) {
				acked = a.last;
			}
			last_ack = a;
		}
		close(p[0]);
		if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
			fail_msg("round %d: child exited with status %d before the kill", round,
				 status);
		}
		assert_true(got > 0);
		/* A process kill loses nothing written; a power cut may lose or
		 * garble anything after the last sync. Simulate one in most rounds. */
		power_cut(f->wal, &last_ack, rnd(&seed));

		struct kv_wal *w = open_wal(f->wal, 32 * 1024);
		struct kv_wal_stats st;
		kv_wal_stats(w, &st);
		torn += st.torn_bytes_cut > 0;
		uint64_t last = kv_wal_last_index(w);
		if (last < acked) {
			fail_msg("round %d: acknowledged %llu, log ends at %llu", round,
				 (unsigned long long)acked, (unsigned long long)last);
		}
		uint64_t bad = verify(w);
		if (bad != 0) {
			fail_msg("round %d: entry %llu damaged", round, (unsigned long long)bad);
		}
		assert_int_equal(kv_wal_first_index(w), 1);
		/* The hard state is the last record of a batch: it may lag the
		 * entries of a batch cut in two, never lead them. */
		struct kv_wal_hard_state hs;
		kv_wal_hard_state(w, &hs);
		uint64_t t = 0;
		assert_int_equal(kv_wal_term(w, last, &t), 0);
		assert_true(hs.term <= t);
		kv_wal_close(w);
	}
	assert_true(acked > 30);
	/* How many kills landed inside a write depends on timing: informative. */
	print_message("30 kills and power cuts, %d torn tails cut, %llu entries acknowledged\n",
		      torn, (unsigned long long)acked);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_wal_torn_tail_every_offset, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_torn_batch_out_of_order, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_torn_batch_keeps_truncated_entries,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_mid_log_corruption, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_corruption_in_earlier_segment, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_missing_segment, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_crash_sigkill, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
