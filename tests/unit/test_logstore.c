/* test_logstore.c: server/logstore.h, the Raft core's storage on the WAL,
 * against the storage contract of raft.h: bootstrap and initial_state (the
 * configuration as of the applied index), entries/term/first/last after
 * appends and truncations, local snapshots, compaction and RAFT_ECOMPACTED,
 * snapshot_read in chunks and RAFT_ESNAPOUTOFDATE once replaced, installing
 * a received snapshot, the same answers after a reopen, a bad conf blob,
 * entry data kept valid across a compaction, a stale snapshot marker left at
 * the front of the log by compaction; a single-voter Raft node persisting
 * through it and restarting; and a writer thread appending and compacting
 * while this thread reads (kv_wal.h THREADS). Build it with
 * -fsanitize=thread as well to check the locking for data races:
 *   cmake -S . -B /tmp/tsan -DCMAKE_BUILD_TYPE=Debug \
 *     -DCMAKE_C_FLAGS="-fsanitize=thread -g -O1" \
 *     -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCAIRN_BUILD_BENCH=OFF
 *   cmake --build /tmp/tsan --target test_logstore && /tmp/tsan/bin/test_logstore */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_wal.h"
#include "logstore.h"
#include "raft.h"
#include "tmpdir.h"

/* ---- fixture: a fresh data directory per test ---- */

struct fx {
	char dir[256];
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "cairn-logstore");
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	char p[300];
	snprintf(p, sizeof p, "%s/wal", f->dir);
	h_tmpdir_remove(p);
	snprintf(p, sizeof p, "%s/snap", f->dir);
	h_tmpdir_remove(p);
	h_tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static struct logstore *open_ls(const char *dir, uint64_t seg_bytes)
{
	struct logstore_options o = { .segment_bytes = seg_bytes };
	struct logstore *ls = NULL;
	char msg[512];
	int rv = logstore_open(dir, &o, &ls, msg, sizeof msg);
	if (rv != 0) {
		fail_msg("logstore_open: %s: %s", raft_strerror(rv), msg);
	}
	return ls;
}

static size_t count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0, sl = strlen(suffix);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		n += l > sl && strcmp(de->d_name + l - sl, suffix) == 0;
	}
	closedir(d);
	return n;
}

/* Entry data is a function of (index, term), so any read can be checked. */
static uint32_t data_len(uint64_t index, uint64_t term)
{
	return 20 + (uint32_t)((index * 7 + term) % 50);
}

static void fill(uint8_t *buf, uint64_t index, uint64_t term, uint32_t len)
{
	for (uint32_t j = 0; j < len; j++) {
		buf[j] = (uint8_t)(index * 131 + term * 17 + j);
	}
}

static bool data_ok(const struct raft_entry *e)
{
	if (e->len != data_len(e->index, e->term)) {
		return false;
	}
	uint8_t b[128];
	fill(b, e->index, e->term, e->len);
	return memcmp(e->data, b, e->len) == 0;
}

/* Persist entries [first, first+n) of term `term` through logstore_persist,
 * with a hard state if hs is not NULL. */
static int put(struct logstore *ls, uint64_t first, uint32_t n, uint64_t term,
	       const struct raft_hard_state *hs)
{
	struct raft_entry *e = calloc(n ? n : 1, sizeof *e);
	uint8_t *bufs = calloc(n ? n : 1, 128);
	assert_true(e != NULL && bufs != NULL);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t idx = first + i;
		e[i] = (struct raft_entry){ .term = term,
					    .index = idx,
					    .type = RAFT_ENTRY_NORMAL,
					    .len = data_len(idx, term),
					    .data = bufs + (size_t)i * 128 };
		fill(bufs + (size_t)i * 128, idx, term, e[i].len);
	}
	struct raft_update u;
	memset(&u, 0, sizeof u);
	u.entries = e;
	u.n_entries = n;
	if (hs != NULL) {
		u.has_hard_state = true;
		u.hard_state = *hs;
	}
	int rv = logstore_persist(ls, &u);
	free(bufs);
	free(e);
	return rv;
}

static uint64_t term_of(const struct raft_storage *s, uint64_t i)
{
	uint64_t t = 99;
	assert_int_equal(s->term(s->ctx, i, &t), 0);
	return t;
}

/* Every entry in [lo, hi] has term `term` and its data. */
static void check_range(const struct raft_storage *s, uint64_t lo, uint64_t hi, uint64_t term)
{
	size_t n = (size_t)(hi - lo + 1);
	struct raft_entry *e = calloc(n, sizeof *e);
	assert_non_null(e);
	uint32_t got = 0;
	assert_int_equal(s->entries(s->ctx, lo, hi + 1, UINT64_MAX, e, &got), 0);
	assert_int_equal(got, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(e[i].index, lo + i);
		assert_int_equal(e[i].term, term);
		assert_true(data_ok(&e[i]));
		assert_int_equal(term_of(s, lo + i), term);
	}
	free(e);
}

static struct raft_conf conf_of(uint32_t n_voters, uint32_t n_learners)
{
	struct raft_conf c;
	memset(&c, 0, sizeof c);
	for (uint32_t i = 0; i < n_voters + n_learners; i++) {
		c.members[c.n++] =
			(struct raft_member){ .id = i + 1,
					      .role = i < n_voters ? RAFT_VOTER : RAFT_LEARNER };
	}
	return c;
}

static void assert_conf_equal(const struct raft_conf *a, const struct raft_conf *b)
{
	assert_int_equal(a->n, b->n);
	for (uint32_t i = 0; i < a->n; i++) {
		assert_int_equal(a->members[i].id, b->members[i].id);
		assert_int_equal(a->members[i].role, b->members[i].role);
	}
}

/* Snapshot data: a function of the snapshot's index. */
struct snap_src {
	uint64_t index;
	size_t size;
};

static uint8_t snap_byte(uint64_t index, size_t off)
{
	return (uint8_t)(index * 7 + off * 13 + (off >> 8));
}

static int write_snap(void *ctx, int fd)
{
	const struct snap_src *src = ctx;
	uint8_t buf[1000];
	size_t off = 0;
	while (off < src->size) {
		size_t k = src->size - off < sizeof buf ? src->size - off : sizeof buf;
		for (size_t i = 0; i < k; i++) {
			buf[i] = snap_byte(src->index, off + i);
		}
		if (write(fd, buf, k) != (ssize_t)k) {
			return -1;
		}
		off += k;
	}
	return 0;
}

static int write_fails(void *ctx, int fd)
{
	(void)ctx;
	(void)fd;
	return -5;
}

/* Read the whole held snapshot `index` in chunks of `chunk` bytes. */
static void check_snapshot_data(const struct raft_storage *s, uint64_t index, size_t size,
				uint32_t chunk)
{
	uint8_t *buf = malloc(chunk);
	assert_non_null(buf);
	uint64_t off = 0;
	for (;;) {
		uint32_t n = 0;
		assert_int_equal(s->snapshot_read(s->ctx, index, off, buf, chunk, &n), 0);
		if (n == 0) {
			break;
		}
		assert_true(n <= chunk);
		for (uint32_t i = 0; i < n; i++) {
			if (buf[i] != snap_byte(index, (size_t)(off + i))) {
				fail_msg("snapshot %llu byte %llu differs",
					 (unsigned long long)index, (unsigned long long)(off + i));
			}
		}
		off += n;
	}
	assert_int_equal(off, size);
	free(buf);
}

/* ---- the conf blob ---- */

static void test_conf_blob(void **state)
{
	(void)state;
	struct raft_conf c = conf_of(3, 2), d;
	uint8_t b[LOGSTORE_CONF_MAX + 8];
	int len = logstore_conf_encode(&c, 12345, b, sizeof b);
	assert_int_equal(len, 16 + 12 * 5);
	uint64_t size = 0;
	assert_int_equal(logstore_conf_decode(b, (size_t)len, &d, &size), 0);
	assert_conf_equal(&c, &d);
	assert_int_equal(size, 12345);
	/* A full configuration fits LOGSTORE_CONF_MAX exactly. */
	struct raft_conf full = conf_of(RAFT_MAX_MEMBERS, 0);
	assert_int_equal(logstore_conf_encode(&full, 0, b, LOGSTORE_CONF_MAX),
			 (int)LOGSTORE_CONF_MAX);
	assert_int_equal(logstore_conf_encode(&full, 0, b, LOGSTORE_CONF_MAX - 1), RAFT_EINVAL);
	/* Malformed configurations are not encoded. */
	struct raft_conf bad = conf_of(0, 2);
	assert_int_equal(logstore_conf_encode(&bad, 0, b, sizeof b), RAFT_EINVAL);
	bad = conf_of(2, 0);
	bad.members[1].id = 1;
	assert_int_equal(logstore_conf_encode(&bad, 0, b, sizeof b), RAFT_EINVAL);

	/* Every bad blob is refused. */
	len = logstore_conf_encode(&c, 7, b, sizeof b);
	uint8_t m[sizeof b];
	for (int cut = 0; cut < len; cut++) {
		assert_int_equal(logstore_conf_decode(b, (size_t)cut, &d, &size), RAFT_ECORRUPT);
	}
	memcpy(m, b, (size_t)len);
	m[len] = 0;
	assert_int_equal(logstore_conf_decode(m, (size_t)len + 1, &d, &size), RAFT_ECORRUPT);
	memcpy(m, b, (size_t)len);
	m[0] = 2; /* version */
	assert_int_equal(logstore_conf_decode(m, (size_t)len, &d, &size), RAFT_ECORRUPT);
	memcpy(m, b, (size_t)len);
	m[4] = 4; /* count does not match the length */
	assert_int_equal(logstore_conf_decode(m, (size_t)len, &d, &size), RAFT_ECORRUPT);
	memcpy(m, b, (size_t)len);
	memset(m + 16, 0, 8); /* id 0 */
	assert_int_equal(logstore_conf_decode(m, (size_t)len, &d, &size), RAFT_ECORRUPT);
	memcpy(m, b, (size_t)len);
	m[16 + 8] = 9; /* role */
	assert_int_equal(logstore_conf_decode(m, (size_t)len, &d, &size), RAFT_ECORRUPT);
	memcpy(m, b, (size_t)len);
	m[28] = m[16]; /* member 2 gets member 1's id */
	assert_int_equal(logstore_conf_decode(m, (size_t)len, &d, &size), RAFT_ECORRUPT);
	memcpy(m, b, (size_t)len);
	for (int i = 0; i < 5; i++) {
		m[16 + 12 * i + 8] = RAFT_LEARNER; /* no voter left */
	}
	assert_int_equal(logstore_conf_decode(m, (size_t)len, &d, &size), RAFT_ECORRUPT);
	uint8_t zero[16] = { 1 };
	assert_int_equal(logstore_conf_decode(zero, sizeof zero, &d, &size), RAFT_ECORRUPT);
	assert_int_equal(logstore_conf_decode(NULL, 0, &d, &size), RAFT_ECORRUPT);
}

/* A snapshot marker whose conf blob is garbage fails the open. */
static void test_bad_conf_blob_on_open(void **state)
{
	struct fx *f = *state;
	char wal_dir[300];
	snprintf(wal_dir, sizeof wal_dir, "%s/wal", f->dir);
	struct kv_wal *w = NULL;
	assert_int_equal(kv_wal_open(wal_dir, NULL, &w, NULL, 0), 0);
	uint8_t d[8] = { 0 };
	struct kv_wal_entry e[3];
	for (uint64_t i = 0; i < 3; i++) {
		e[i] = (struct kv_wal_entry){ .term = 1, .index = i + 1, .len = 8, .data = d };
	}
	assert_int_equal(kv_wal_append(w, e, 3, NULL), 0);
	uint8_t garbage[20] = { 1, 0, 0, 0, 9, 0, 0, 0 };
	struct kv_wal_snapshot s = { .index = 2, .term = 1, .conf_len = 20, .conf = garbage };
	assert_int_equal(kv_wal_save_snapshot(w, &s), 0);
	kv_wal_close(w);

	struct logstore *ls = NULL;
	char msg[512];
	assert_int_equal(logstore_open(f->dir, NULL, &ls, msg, sizeof msg), RAFT_ECORRUPT);
	assert_null(ls);
	assert_non_null(strstr(msg, "configuration"));
}

/* ---- bootstrap and initial_state ---- */

static void test_bootstrap_initial_state(void **state)
{
	struct fx *f = *state;
	struct logstore *ls = open_ls(f->dir, 0);
	struct raft_storage s = logstore_storage(ls);
	struct raft_hard_state hs;
	struct raft_conf conf, founding = conf_of(2, 1);

	/* Empty: no hard state, no configuration, no snapshot. */
	assert_int_equal(s.initial_state(s.ctx, &hs, &conf), 0);
	assert_int_equal(hs.term, 0);
	assert_int_equal(conf.n, 0);
	assert_int_equal(s.first_index(s.ctx), 1);
	assert_int_equal(s.last_index(s.ctx), 0);

	struct raft_conf bad = conf_of(0, 1);
	assert_int_equal(logstore_bootstrap(ls, &bad), RAFT_EINVAL);
	assert_int_equal(logstore_bootstrap(ls, &founding), 0);
	assert_int_equal(logstore_bootstrap(ls, &founding), RAFT_EINVAL); /* not empty */
	assert_true(strlen(logstore_last_error(ls)) > 0);

	for (int round = 0; round < 2; round++) {
		s = logstore_storage(ls);
		for (uint64_t applied = 0; applied <= 3; applied++) {
			logstore_set_applied(ls, applied);
			assert_int_equal(s.initial_state(s.ctx, &hs, &conf), 0);
			assert_int_equal(hs.term, 1);
			assert_int_equal(hs.vote, 0);
			assert_int_equal(hs.commit, 3);
			assert_conf_equal(&conf, &founding);
		}
		assert_int_equal(s.first_index(s.ctx), 1);
		assert_int_equal(s.last_index(s.ctx), 3);
		assert_int_equal(term_of(&s, 0), 0);
		struct raft_entry e[3];
		uint32_t n = 0;
		assert_int_equal(s.entries(s.ctx, 1, 4, UINT64_MAX, e, &n), 0);
		assert_int_equal(n, 3);
		uint64_t want_id[3] = { 1, 2, 3 };
		uint32_t want_type[3] = { RAFT_CC_ADD_VOTER, RAFT_CC_ADD_VOTER,
					  RAFT_CC_ADD_LEARNER };
		for (uint32_t i = 0; i < 3; i++) {
			struct raft_conf_change cc;
			assert_int_equal(e[i].term, 1);
			assert_int_equal(e[i].type, RAFT_ENTRY_CONF_CHANGE);
			assert_int_equal(raft_conf_change_decode(e[i].data, e[i].len, &cc), 0);
			assert_int_equal(cc.id, want_id[i]);
			assert_int_equal(cc.type, want_type[i]);
		}
		struct raft_snapshot_meta meta;
		assert_int_equal(s.snapshot(s.ctx, &meta), 0);
		assert_int_equal(meta.index, 0);
		assert_conf_equal(&meta.conf, &founding);
		uint8_t b[8];
		assert_int_equal(s.snapshot_read(s.ctx, 0, 0, b, sizeof b, &n),
				 RAFT_ESNAPOUTOFDATE);
		logstore_close(ls);
		ls = open_ls(f->dir, 0);
	}

	/* A later change counts from the applied index on: remove 3, add 4. */
	s = logstore_storage(ls);
	struct raft_conf_change cc1 = { .type = RAFT_CC_REMOVE, .id = 3 };
	struct raft_conf_change cc2 = { .type = RAFT_CC_ADD_LEARNER, .id = 4 };
	uint8_t b1[64], b2[64];
	int l1 = raft_conf_change_encode(&cc1, b1, sizeof b1);
	int l2 = raft_conf_change_encode(&cc2, b2, sizeof b2);
	uint8_t junk[3] = { 1, 2, 3 };
	struct raft_entry e[3] = {
		{ .term = 2,
		  .index = 4,
		  .type = RAFT_ENTRY_CONF_CHANGE,
		  .len = (uint32_t)l1,
		  .data = b1 },
		{ .term = 2, .index = 5, .type = RAFT_ENTRY_CONF_CHANGE, .len = 3, .data = junk },
		{ .term = 2,
		  .index = 6,
		  .type = RAFT_ENTRY_CONF_CHANGE,
		  .len = (uint32_t)l2,
		  .data = b2 },
	};
	struct raft_update u;
	memset(&u, 0, sizeof u);
	u.entries = e;
	u.n_entries = 3;
	u.has_hard_state = true;
	u.hard_state = (struct raft_hard_state){ .term = 2, .vote = 1, .commit = 6 };
	assert_int_equal(logstore_persist(ls, &u), 0);
	logstore_set_applied(ls, 3);
	assert_int_equal(s.initial_state(s.ctx, &hs, &conf), 0);
	assert_conf_equal(&conf, &founding);
	assert_int_equal(hs.term, 2);
	assert_int_equal(hs.vote, 1);
	assert_int_equal(hs.commit, 6);
	logstore_set_applied(ls, 5); /* the malformed change at 5 is skipped */
	assert_int_equal(s.initial_state(s.ctx, &hs, &conf), 0);
	struct raft_conf want = conf_of(2, 0);
	assert_conf_equal(&conf, &want);
	logstore_set_applied(ls, 100); /* beyond the log: as of its end */
	assert_int_equal(s.initial_state(s.ctx, &hs, &conf), 0);
	want.members[want.n++] = (struct raft_member){ .id = 4, .role = RAFT_LEARNER };
	assert_conf_equal(&conf, &want);
	logstore_close(ls);
}

/* ---- entries, terms, bounds, truncation ---- */

static void test_entries_and_truncation(void **state)
{
	struct fx *f = *state;
	struct logstore *ls = open_ls(f->dir, 4096);
	struct raft_storage s = logstore_storage(ls);
	for (uint64_t i = 1; i <= 100; i += 10) {
		assert_int_equal(put(ls, i, 10, 1, NULL), 0);
	}
	struct raft_hard_state hs = { .term = 2, .vote = 3, .commit = 50 };
	assert_int_equal(put(ls, 101, 20, 2, &hs), 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(s.first_index(s.ctx), 1);
		assert_int_equal(s.last_index(s.ctx), 120);
		check_range(&s, 1, 100, 1);
		check_range(&s, 101, 120, 2);
		struct raft_entry e[130];
		uint32_t n = 7;
		assert_int_equal(s.entries(s.ctx, 100, 122, UINT64_MAX, e, &n), RAFT_EUNAVAILABLE);
		assert_int_equal(n, 0);
		assert_int_equal(s.entries(s.ctx, 5, 5, UINT64_MAX, e, &n), RAFT_EUNAVAILABLE);
		assert_int_equal(s.entries(s.ctx, 0, 5, UINT64_MAX, e, &n), RAFT_ECOMPACTED);
		uint64_t t;
		assert_int_equal(s.term(s.ctx, 121, &t), RAFT_EUNAVAILABLE);
		/* max_bytes: stop before the entry that would exceed it, one at least. */
		assert_int_equal(s.entries(s.ctx, 1, 100, 0, e, &n), 0);
		assert_int_equal(n, 1);
		uint64_t lim = data_len(10, 1) + data_len(11, 1) + data_len(12, 1);
		assert_int_equal(s.entries(s.ctx, 10, 100, lim, e, &n), 0);
		assert_int_equal(n, 3);
		assert_int_equal(s.entries(s.ctx, 10, 100, lim - 1, e, &n), 0);
		assert_int_equal(n, 2);
		struct raft_conf conf;
		assert_int_equal(s.initial_state(s.ctx, &hs, &conf), 0);
		assert_int_equal(hs.term, 2);
		assert_int_equal(hs.vote, 3);
		assert_int_equal(hs.commit, 50);
		logstore_close(ls);
		ls = open_ls(f->dir, 4096);
		s = logstore_storage(ls);
	}
	/* A new leader's entries cut the suffix from their first index. */
	assert_int_equal(put(ls, 90, 5, 3, NULL), 0);
	assert_int_equal(s.last_index(s.ctx), 94);
	check_range(&s, 1, 89, 1);
	check_range(&s, 90, 94, 3);
	/* Appending past the end leaves a gap: refused, nothing changes. */
	assert_int_equal(put(ls, 97, 1, 3, NULL), RAFT_EINVAL);
	assert_int_equal(s.last_index(s.ctx), 94);
	logstore_close(ls);
	ls = open_ls(f->dir, 4096);
	s = logstore_storage(ls);
	check_range(&s, 1, 89, 1);
	check_range(&s, 90, 94, 3);
	logstore_close(ls);
}

/* ---- snapshots and compaction ---- */

static void test_snapshot_compact(void **state)
{
	struct fx *f = *state;
	char wal_dir[300], snap_dir[300];
	snprintf(wal_dir, sizeof wal_dir, "%s/wal", f->dir);
	snprintf(snap_dir, sizeof snap_dir, "%s/snap", f->dir);
	struct logstore *ls = open_ls(f->dir, 4096);
	struct raft_storage s = logstore_storage(ls);
	for (uint64_t i = 1; i <= 200; i += 10) {
		assert_int_equal(put(ls, i, 10, 1 + i / 100, NULL), 0);
	}
	size_t segs_before = count_files(wal_dir, ".wal");
	assert_true(segs_before >= 3);
	struct raft_conf conf = conf_of(3, 0);
	struct snap_src src1 = { .index = 150, .size = 10007 };

	/* Bad requests. */
	assert_int_equal(logstore_snapshot_save(ls, 201, &conf, write_snap, &src1), RAFT_EINVAL);
	assert_int_equal(logstore_compact(ls, 10), RAFT_EINVAL); /* beyond the snapshot (0) */
	assert_int_equal(logstore_snapshot_save(ls, 150, &conf, write_fails, NULL), RAFT_EIO);
	assert_int_equal(count_files(snap_dir, ".snap") + count_files(snap_dir, ".tmp"), 0);

	assert_int_equal(logstore_snapshot_save(ls, 150, &conf, write_snap, &src1), 0);
	assert_int_equal(logstore_snapshot_save(ls, 150, &conf, write_snap, &src1), RAFT_EINVAL);
	/* Entries up to the snapshot are gone at once; later ones are kept. */
	assert_int_equal(s.first_index(s.ctx), 151);
	assert_int_equal(s.last_index(s.ctx), 200);
	check_range(&s, 151, 200, 2);
	assert_int_equal(term_of(&s, 150), 2);
	struct raft_entry e[10];
	uint32_t n;
	uint64_t t;
	assert_int_equal(s.entries(s.ctx, 10, 20, UINT64_MAX, e, &n), RAFT_ECOMPACTED);
	assert_int_equal(s.entries(s.ctx, 150, 152, UINT64_MAX, e, &n), RAFT_ECOMPACTED);
	assert_int_equal(s.term(s.ctx, 149, &t), RAFT_ECOMPACTED);
	/* Compaction deletes whole segments below the index. */
	assert_int_equal(logstore_compact(ls, 140), 0);
	assert_true(count_files(wal_dir, ".wal") < segs_before);
	check_range(&s, 151, 200, 2);

	struct raft_snapshot_meta meta;
	assert_int_equal(s.snapshot(s.ctx, &meta), 0);
	assert_int_equal(meta.index, 150);
	assert_int_equal(meta.term, 2);
	assert_int_equal(meta.size, src1.size);
	assert_conf_equal(&meta.conf, &conf);
	check_snapshot_data(&s, 150, src1.size, 3000);
	check_snapshot_data(&s, 150, src1.size, 1);
	uint8_t b[16];
	assert_int_equal(s.snapshot_read(s.ctx, 150, src1.size + 1, b, sizeof b, &n), RAFT_EINVAL);
	assert_int_equal(s.snapshot_read(s.ctx, 149, 0, b, sizeof b, &n), RAFT_ESNAPOUTOFDATE);
	char path[512];
	assert_int_equal(logstore_snapshot_path(ls, 150, path, sizeof path), 0);
	assert_int_equal(access(path, R_OK), 0);

	/* Reopen: the same answers. */
	logstore_close(ls);
	ls = open_ls(f->dir, 4096);
	s = logstore_storage(ls);
	assert_int_equal(s.first_index(s.ctx), 151);
	assert_int_equal(s.last_index(s.ctx), 200);
	check_range(&s, 151, 200, 2);
	assert_int_equal(s.snapshot(s.ctx, &meta), 0);
	assert_int_equal(meta.index, 150);
	assert_int_equal(meta.size, src1.size);
	assert_conf_equal(&meta.conf, &conf);
	check_snapshot_data(&s, 150, src1.size, 4096);

	/* A newer snapshot replaces it: the old one is out of date, its file gone. */
	struct raft_conf conf2 = conf_of(1, 2);
	struct snap_src src2 = { .index = 190, .size = 5000 };
	assert_int_equal(logstore_snapshot_save(ls, 190, &conf2, write_snap, &src2), 0);
	assert_int_equal(s.snapshot_read(s.ctx, 150, 0, b, sizeof b, &n), RAFT_ESNAPOUTOFDATE);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(count_files(snap_dir, ".snap"), 1);
	check_snapshot_data(&s, 190, src2.size, 1024);
	assert_int_equal(logstore_compact(ls, 190), 0);
	assert_int_equal(s.first_index(s.ctx), 191);
	check_range(&s, 191, 200, 2);
	/* The configuration as of applied 190 is the snapshot's. */
	logstore_set_applied(ls, 190);
	struct raft_hard_state hs;
	struct raft_conf c;
	assert_int_equal(s.initial_state(s.ctx, &hs, &c), 0);
	assert_conf_equal(&c, &conf2);
	logstore_close(ls);

	/* Leftovers of a crash (a .tmp, a file the marker does not name) go at open. */
	char junk[600];
	snprintf(junk, sizeof junk, "%s/%016x-%016x.snap.tmp", snap_dir, 300, 3);
	FILE *fp = fopen(junk, "w");
	assert_non_null(fp);
	fclose(fp);
	snprintf(junk, sizeof junk, "%s/%016x-%016x.snap", snap_dir, 250, 3);
	fp = fopen(junk, "w");
	assert_non_null(fp);
	fclose(fp);
	ls = open_ls(f->dir, 4096);
	s = logstore_storage(ls);
	assert_int_equal(count_files(snap_dir, ".tmp"), 0);
	assert_int_equal(count_files(snap_dir, ".snap"), 1);
	check_snapshot_data(&s, 190, src2.size, 999);
	logstore_close(ls);

	/* A missing snapshot file fails the open. */
	assert_int_equal(logstore_snapshot_path(ls = open_ls(f->dir, 4096), 190, path, sizeof path),
			 0);
	logstore_close(ls);
	assert_int_equal(unlink(path), 0);
	char msg[512];
	assert_int_equal(logstore_open(f->dir, NULL, &ls, msg, sizeof msg), RAFT_ECORRUPT);
}

/* A local snapshot in two steps (create on one thread, commit on the
 * storage thread): the same result as logstore_snapshot_save, and the
 * refusals leave no file behind. */
static void test_snapshot_two_steps(void **state)
{
	struct fx *f = *state;
	char snap_dir[300];
	snprintf(snap_dir, sizeof snap_dir, "%s/snap", f->dir);
	struct logstore *ls = open_ls(f->dir, 4096);
	struct raft_storage s = logstore_storage(ls);
	for (uint64_t i = 1; i <= 100; i += 10) {
		assert_int_equal(put(ls, i, 10, 1, NULL), 0);
	}
	struct raft_conf conf = conf_of(3, 0);
	int fd = 123;
	char path[512];
	struct snap_src src = { .index = 60, .size = 7777 };
	assert_int_equal(logstore_snapshot_create(ls, path, 4, &fd), RAFT_EINVAL); /* too short */
	assert_int_equal(fd, -1);
	assert_int_equal(logstore_snapshot_create(ls, path, sizeof path, &fd), 0);
	assert_true(fd >= 0);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(write_snap(&src, fd), 0);
	/* a staged or held .snap does not exist before the commit */
	assert_int_equal(count_files(snap_dir, ".snap"), 0);
	assert_int_equal(logstore_snapshot_commit(ls, 60, &conf, fd), 0);
	assert_int_equal(count_files(snap_dir, ".snap"), 1);
	assert_int_equal(count_files(snap_dir, ".tmp"), 0);
	struct raft_snapshot_meta meta;
	assert_int_equal(s.snapshot(s.ctx, &meta), 0);
	assert_int_equal(meta.index, 60);
	assert_int_equal(meta.size, src.size);
	assert_conf_equal(&meta.conf, &conf);
	check_snapshot_data(&s, 60, src.size, 1000);
	assert_int_equal(logstore_compact(ls, 50), 0);
	check_range(&s, 61, 100, 1);

	/* An index not in the log: refused, the file removed. */
	assert_int_equal(logstore_snapshot_create(ls, path, sizeof path, &fd), 0);
	assert_int_equal(logstore_snapshot_commit(ls, 101, &conf, fd), RAFT_EINVAL);
	assert_int_equal(access(path, F_OK), -1);

	/* Superseded between the two steps: refused, the file removed. */
	assert_int_equal(logstore_snapshot_create(ls, path, sizeof path, &fd), 0);
	assert_int_equal(write_snap(&(struct snap_src){ .index = 70, .size = 10 }, fd), 0);
	assert_int_equal(logstore_snapshot_save(ls, 80, &conf, write_snap,
						&(struct snap_src){ .index = 80, .size = 99 }),
			 0);
	assert_int_equal(logstore_snapshot_commit(ls, 70, &conf, fd), RAFT_EINVAL);
	assert_int_equal(count_files(snap_dir, ".tmp"), 0);
	assert_int_equal(s.snapshot(s.ctx, &meta), 0);
	assert_int_equal(meta.index, 80);

	/* A copy left over by a crash before the commit goes at open. */
	assert_int_equal(logstore_snapshot_create(ls, path, sizeof path, &fd), 0);
	close(fd);
	logstore_close(ls);
	ls = open_ls(f->dir, 4096);
	assert_int_equal(count_files(snap_dir, ".tmp"), 0);
	assert_int_equal(count_files(snap_dir, ".snap"), 1);
	logstore_close(ls);
}

/* A mark: the log is compacted behind it with no file; the core is told
 * to wait (and the caller that a copy is wanted) until a copy is recorded
 * above it; it survives a reopen. */
static void test_snapshot_mark(void **state)
{
	struct fx *f = *state;
	char snap_dir[300], path[512];
	snprintf(snap_dir, sizeof snap_dir, "%s/snap", f->dir);
	struct logstore *ls = open_ls(f->dir, 4096);
	struct raft_storage s = logstore_storage(ls);
	for (uint64_t i = 1; i <= 100; i += 10) {
		assert_int_equal(put(ls, i, 10, 1, NULL), 0);
	}
	struct raft_conf conf = conf_of(3, 0);
	assert_int_equal(logstore_snapshot_mark(ls, 101, &conf), RAFT_EINVAL); /* not in the log */
	assert_int_equal(logstore_snapshot_mark(ls, 50, &conf), 0);
	assert_int_equal(logstore_snapshot_mark(ls, 50, &conf), RAFT_EINVAL); /* not above it */
	assert_int_equal(logstore_compact(ls, 40), 0);
	assert_int_equal(count_files(snap_dir, ".snap"), 0);
	struct raft_snapshot_meta meta;
	assert_false(logstore_snapshot_wanted(ls));
	assert_int_equal(s.snapshot(s.ctx, &meta), RAFT_EUNAVAILABLE);
	assert_true(logstore_snapshot_wanted(ls));
	assert_false(logstore_snapshot_wanted(ls)); /* told once */
	uint8_t b[16];
	uint32_t n;
	assert_int_equal(s.snapshot_read(s.ctx, 50, 0, b, sizeof b, &n), RAFT_ESNAPOUTOFDATE);
	assert_int_equal(logstore_snapshot_path(ls, 50, path, sizeof path), RAFT_ESNAPOUTOFDATE);
	logstore_snapshot_held(ls, &meta);
	assert_int_equal(meta.index, 50);
	assert_true(meta.size == LOGSTORE_NO_FILE);
	uint64_t t;
	assert_int_equal(s.term(s.ctx, 50, &t), 0);
	assert_int_equal(t, 1);

	/* reopened: the same mark, no file asked for */
	logstore_close(ls);
	ls = open_ls(f->dir, 4096);
	s = logstore_storage(ls);
	logstore_snapshot_held(ls, &meta);
	assert_int_equal(meta.index, 50);
	assert_true(meta.size == LOGSTORE_NO_FILE);
	assert_conf_equal(&meta.conf, &conf);
	check_range(&s, 51, 100, 1);

	/* a copy above it: the core gets it */
	int fd;
	struct snap_src src = { .index = 70, .size = 3333 };
	assert_int_equal(logstore_snapshot_create(ls, path, sizeof path, &fd), 0);
	assert_int_equal(write_snap(&src, fd), 0);
	assert_int_equal(logstore_snapshot_commit(ls, 70, &conf, fd), 0);
	assert_int_equal(s.snapshot(s.ctx, &meta), 0);
	assert_int_equal(meta.index, 70);
	assert_int_equal(meta.size, src.size);
	check_snapshot_data(&s, 70, src.size, 1000);
	/* and a later mark deletes the copy */
	assert_int_equal(logstore_snapshot_mark(ls, 90, &conf), 0);
	assert_int_equal(count_files(snap_dir, ".snap"), 0);
	logstore_close(ls);
}

/* Entry data from an entries call stays valid until the next one, even when
 * the segment holding it is compacted away in between (logstore.h, BORROWED
 * ENTRY DATA); without the read section the mapping would be gone. */
static void test_borrowed_data_survives_compaction(void **state)
{
	struct fx *f = *state;
	char wal_dir[300];
	snprintf(wal_dir, sizeof wal_dir, "%s/wal", f->dir);
	struct logstore *ls = open_ls(f->dir, 4096);
	struct raft_storage s = logstore_storage(ls);
	for (uint64_t i = 1; i <= 200; i += 10) {
		assert_int_equal(put(ls, i, 10, 1, NULL), 0);
	}
	struct raft_entry e[10];
	uint32_t n = 0;
	assert_int_equal(s.entries(s.ctx, 1, 11, UINT64_MAX, e, &n), 0);
	assert_int_equal(n, 10);
	size_t segs = count_files(wal_dir, ".wal");
	struct raft_conf conf = conf_of(1, 0);
	struct snap_src src = { .index = 190, .size = 10 };
	assert_int_equal(logstore_snapshot_save(ls, 190, &conf, write_snap, &src), 0);
	assert_int_equal(logstore_compact(ls, 190), 0);
	assert_true(count_files(wal_dir, ".wal") < segs); /* entry 1's segment is gone */
	for (uint32_t i = 0; i < n; i++) {
		assert_true(data_ok(&e[i]));
	}
	/* The next call ends the section; a compacted range is refused. */
	assert_int_equal(s.entries(s.ctx, 1, 11, UINT64_MAX, e, &n), RAFT_ECOMPACTED);
	check_range(&s, 191, 200, 1);
	logstore_release(ls);
	logstore_release(ls); /* no section held: a no-op */
	logstore_close(ls);
}

/* The WAL under the logstore's pattern (local snapshot a few entries below
 * the end, more appends, a newer snapshot, compaction): a compaction can
 * leave the older marker at the front of the oldest segment, with the
 * entries that followed its index deleted; the log must still reopen. */
static void test_wal_stale_marker_reopens(void **state)
{
	struct fx *f = *state;
	char wal_dir[300];
	snprintf(wal_dir, sizeof wal_dir, "%s/wal", f->dir);
	struct kv_wal_options o = { .segment_bytes = 4096 };
	struct kv_wal *w = NULL;
	assert_int_equal(kv_wal_open(wal_dir, &o, &w, NULL, 0), 0);
	static uint8_t d[4096];
	uint64_t last = 0;
	struct kv_wal_entry e;
	for (; last < 20; last++) {
		e = (struct kv_wal_entry){ .term = 1, .index = last + 1, .len = 10, .data = d };
		assert_int_equal(kv_wal_append(w, &e, 1, NULL), 0);
	}
	/* Fill the segment so that the next marker (32 bytes) starts a new one. */
	struct kv_wal_stats st;
	kv_wal_stats(w, &st);
	uint64_t room = 4096 - st.tail_offset;
	assert_true(room > 64);
	e = (struct kv_wal_entry){
		.term = 1, .index = ++last, .len = (uint32_t)(room - 48), .data = d
	};
	assert_int_equal(kv_wal_append(w, &e, 1, NULL), 0);
	uint64_t seg1 = st.tail_segment;
	struct kv_wal_snapshot snap = { .index = last - 5, .term = 1 };
	assert_int_equal(kv_wal_save_snapshot(w, &snap), 0);
	kv_wal_stats(w, &st);
	assert_int_equal(st.tail_segment, seg1 + 1); /* the marker opened a segment */
	for (int i = 0; i < 20; i++) {
		e = (struct kv_wal_entry){ .term = 1, .index = ++last, .len = 10, .data = d };
		assert_int_equal(kv_wal_append(w, &e, 1, NULL), 0);
	}
	snap.index = last - 5;
	assert_int_equal(kv_wal_save_snapshot(w, &snap), 0);
	assert_int_equal(kv_wal_compact(w, last - 10), 0);
	assert_int_equal(count_files(wal_dir, ".wal"), 1);
	kv_wal_close(w);
	char msg[256];
	int rv = kv_wal_open(wal_dir, &o, &w, msg, sizeof msg);
	if (rv != 0) {
		fail_msg("reopen: %s", msg);
	}
	assert_int_equal(kv_wal_first_index(w), last - 4);
	assert_int_equal(kv_wal_last_index(w), last);
	kv_wal_close(w);
}

/* A snapshot received in chunks, installed by persist with entries after it. */
static void test_install_received(void **state)
{
	struct fx *f = *state;
	struct logstore *ls = open_ls(f->dir, 4096);
	struct raft_storage s = logstore_storage(ls);
	assert_int_equal(put(ls, 1, 30, 1, NULL), 0);

	uint8_t data[7000];
	for (size_t i = 0; i < sizeof data; i++) {
		data[i] = snap_byte(100, i);
	}
	struct raft_snapshot_chunk ch[3] = {
		{ .index = 100, .term = 5, .offset = 0, .len = 3000, .data = data },
		{ .index = 100, .term = 5, .offset = 3000, .len = 3000, .data = data + 3000 },
		{ .index = 100, .term = 5, .offset = 6000, .len = 1000, .data = data + 6000 },
	};
	struct raft_update u;
	memset(&u, 0, sizeof u);
	/* The first two chunks in one update, the rest with the install. */
	u.snapshot_chunks = ch;
	u.n_snapshot_chunks = 2;
	assert_int_equal(logstore_persist(ls, &u), 0);
	/* A chunk that leaves a hole is refused. */
	struct raft_snapshot_chunk hole = {
		.index = 100, .term = 5, .offset = 6500, .len = 1, .data = data
	};
	u.snapshot_chunks = &hole;
	u.n_snapshot_chunks = 1;
	assert_int_equal(logstore_persist(ls, &u), RAFT_ECORRUPT);

	struct raft_snapshot_meta meta = {
		.index = 100, .term = 5, .size = 7000, .conf = conf_of(3, 1)
	};
	uint8_t ebuf[2][128];
	struct raft_entry e[2];
	for (int i = 0; i < 2; i++) {
		e[i] = (struct raft_entry){ .term = 5,
					    .index = 101 + (uint64_t)i,
					    .len = data_len(101 + (uint64_t)i, 5),
					    .data = ebuf[i] };
		fill(ebuf[i], 101 + (uint64_t)i, 5, e[i].len);
	}
	/* A size that does not match what was staged is refused. */
	meta.size = 6999;
	memset(&u, 0, sizeof u);
	u.snapshot_chunks = &ch[2];
	u.n_snapshot_chunks = 1;
	u.snapshot = &meta;
	assert_int_equal(logstore_persist(ls, &u), RAFT_ECORRUPT);
	meta.size = 7000;
	u.n_snapshot_chunks = 0;
	u.entries = e;
	u.n_entries = 2;
	u.has_hard_state = true;
	u.hard_state = (struct raft_hard_state){ .term = 5, .vote = 2, .commit = 101 };
	assert_int_equal(logstore_persist(ls, &u), 0);

	for (int round = 0; round < 2; round++) {
		assert_int_equal(s.first_index(s.ctx), 101);
		assert_int_equal(s.last_index(s.ctx), 102);
		assert_int_equal(term_of(&s, 100), 5);
		check_range(&s, 101, 102, 5);
		struct raft_snapshot_meta m;
		assert_int_equal(s.snapshot(s.ctx, &m), 0);
		assert_int_equal(m.index, 100);
		assert_int_equal(m.term, 5);
		assert_int_equal(m.size, 7000);
		assert_conf_equal(&m.conf, &meta.conf);
		check_snapshot_data(&s, 100, 7000, 2048);
		struct raft_hard_state hs;
		struct raft_conf c;
		logstore_set_applied(ls, 100);
		assert_int_equal(s.initial_state(s.ctx, &hs, &c), 0);
		assert_int_equal(hs.commit, 101);
		assert_int_equal(hs.vote, 2);
		assert_conf_equal(&c, &meta.conf);
		logstore_close(ls);
		ls = open_ls(f->dir, 4096);
		s = logstore_storage(ls);
	}
	logstore_close(ls);
}

/* ---- a real Raft node on the logstore ---- */

static uint64_t node_rand(void *ctx)
{
	uint64_t *x = ctx;
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

struct node {
	struct logstore *ls;
	struct raft *r;
	uint64_t rng;
	uint64_t applied;
	uint32_t applied_normal;
};

static void node_start(struct node *nd, const char *dir)
{
	nd->ls = open_ls(dir, 8192);
	logstore_set_applied(nd->ls, nd->applied);
	struct raft_config cfg;
	raft_config_init(&cfg);
	cfg.id = 1;
	cfg.storage = logstore_storage(nd->ls);
	cfg.rand = node_rand;
	cfg.rand_ctx = &nd->rng;
	cfg.applied = nd->applied;
	nd->rng = 0x9e3779b97f4a7c15ull;
	assert_int_equal(raft_new(&cfg, &nd->r), 0);
}

static void node_stop(struct node *nd)
{
	raft_free(nd->r);
	logstore_close(nd->ls);
	nd->r = NULL;
	nd->ls = NULL;
}

/* THE LOOP CONTRACT with one member: no one to send to. */
static void node_drive(struct node *nd)
{
	for (int guard = 0; raft_has_update(nd->r); guard++) {
		assert_true(guard < 1000);
		struct raft_update u;
		assert_int_equal(raft_ready(nd->r, &u), 0);
		int rv = logstore_persist(nd->ls, &u);
		if (rv != 0) {
			fail_msg("persist: %s: %s", raft_strerror(rv), logstore_last_error(nd->ls));
		}
		for (uint32_t i = 0; i < u.n_committed; i++) {
			const struct raft_entry *e = &u.committed[i];
			assert_int_equal(e->index, nd->applied + 1);
			nd->applied = e->index;
			if (e->type == RAFT_ENTRY_NORMAL) {
				char want[32];
				snprintf(want, sizeof want, "put %u", nd->applied_normal);
				assert_int_equal(e->len, strlen(want));
				assert_memory_equal(e->data, want, e->len);
				nd->applied_normal++;
			}
		}
		raft_advance(nd->r);
	}
}

static void node_elect(struct node *nd)
{
	struct raft_status st;
	for (int i = 0; i < 100; i++) {
		raft_status(nd->r, &st);
		if (st.state == RAFT_LEADER) {
			return;
		}
		raft_tick(nd->r);
		node_drive(nd);
	}
	fail_msg("no leader after 100 ticks (state %u)", st.state);
}

static void node_propose(struct node *nd, uint32_t k)
{
	char d[32];
	int len = snprintf(d, sizeof d, "put %u", k);
	uint64_t idx = 0;
	assert_int_equal(raft_propose(nd->r, d, (size_t)len, &idx), 0);
	assert_true(idx > 0);
}

static void test_raft_node(void **state)
{
	struct fx *f = *state;
	struct node nd;
	memset(&nd, 0, sizeof nd);
	struct logstore *ls = open_ls(f->dir, 8192);
	struct raft_conf founding = conf_of(1, 0);
	assert_int_equal(logstore_bootstrap(ls, &founding), 0);
	logstore_close(ls);

	node_start(&nd, f->dir);
	node_drive(&nd); /* applies the founding entry */
	node_elect(&nd);
	uint32_t proposed = 0;
	for (int b = 0; b < 20; b++) {
		for (int k = 0; k < 10; k++) {
			node_propose(&nd, proposed++);
		}
		node_drive(&nd);
	}
	struct raft_status st;
	raft_status(nd.r, &st);
	assert_int_equal(st.state, RAFT_LEADER);
	assert_int_equal(nd.applied_normal, proposed);
	assert_int_equal(st.commit, st.last_index);
	assert_int_equal(st.applied, st.last_index);
	uint64_t term = st.term, last = st.last_index;
	/* What the node persisted is in the log store. */
	struct raft_storage s = logstore_storage(nd.ls);
	assert_int_equal(s.last_index(s.ctx), last);
	assert_int_equal(term_of(&s, last), term);
	struct raft_hard_state hs;
	struct raft_conf c;
	assert_int_equal(s.initial_state(s.ctx, &hs, &c), 0);
	assert_int_equal(hs.term, term);
	assert_int_equal(hs.vote, 1);
	assert_int_equal(hs.commit, last);
	node_stop(&nd);

	/* Restart from the same directory with the state machine's applied index. */
	node_start(&nd, f->dir);
	raft_status(nd.r, &st);
	assert_int_equal(st.term, term);
	assert_int_equal(st.vote, 1);
	assert_int_equal(st.last_index, last);
	assert_int_equal(st.commit, last);
	assert_int_equal(st.applied, last);
	assert_int_equal(st.conf.n, 1);
	assert_int_equal(st.conf.members[0].id, 1);
	node_elect(&nd);
	raft_status(nd.r, &st);
	assert_true(st.term > term);
	node_propose(&nd, proposed++);
	node_drive(&nd);
	assert_int_equal(nd.applied_normal, proposed);

	/* A snapshot at applied, compaction, and one more restart. */
	struct snap_src src = { .index = nd.applied, .size = 3333 };
	assert_int_equal(logstore_snapshot_save(nd.ls, nd.applied, &st.conf, write_snap, &src), 0);
	assert_int_equal(logstore_compact(nd.ls, nd.applied - 20), 0);
	uint64_t applied = nd.applied;
	node_stop(&nd);
	node_start(&nd, f->dir);
	raft_status(nd.r, &st);
	assert_int_equal(st.applied, applied);
	assert_int_equal(st.first_index, applied + 1);
	assert_int_equal(st.conf.n, 1);
	node_elect(&nd);
	node_propose(&nd, proposed++);
	node_drive(&nd);
	assert_int_equal(nd.applied_normal, proposed);
	node_stop(&nd);
}

/* ---- one writer thread, one reader thread ---- */

struct race {
	struct logstore *ls;
	atomic_bool stop;
	atomic_bool done;
	atomic_uint_fast64_t started; /* last index of the batch being written */
	atomic_uint_fast64_t synced;  /* last index of the last batch appended */
	atomic_uint_fast64_t batches;
	atomic_uint_fast64_t snapshots;
	atomic_uint_fast64_t compactions;
	int error;
};

/* Terms grow with the index, so a rewrite of a suffix with a higher term
 * keeps them non-decreasing and changes the data of rewritten entries. */
static void *race_writer(void *arg)
{
	struct race *rc = arg;
	uint64_t last = 0, term = 1, snap = 0, x = 88172645463325252ull;
	while (!atomic_load(&rc->stop)) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint32_t n = 1 + (uint32_t)(x % 16);
		uint64_t from = last + 1;
		if (x % 7 == 0 && last > snap + 3) {
			term++; /* a new leader rewrites the last three entries and more */
			from = last - 2;
		}
		uint64_t end = from + n - 1 > last ? from + n - 1 : last;
		n = (uint32_t)(end - from + 1);
		atomic_store(&rc->started, end);
		int rv = put(rc->ls, from, n, term, NULL);
		if (rv != 0) {
			rc->error = rv;
			break;
		}
		last = end;
		atomic_store(&rc->synced, last);
		atomic_fetch_add(&rc->batches, 1);
		if (x % 13 == 0 && last > snap + 40) {
			struct raft_conf conf = conf_of(1, 0);
			struct snap_src src = { .index = last - 10, .size = 100 };
			rv = logstore_snapshot_save(rc->ls, last - 10, &conf, write_snap, &src);
			if (rv == 0) {
				snap = last - 10;
				atomic_fetch_add(&rc->snapshots, 1);
				rv = logstore_compact(rc->ls, snap - 5);
				atomic_fetch_add(&rc->compactions, 1);
			}
			if (rv != 0) {
				rc->error = rv;
				break;
			}
		}
	}
	atomic_store(&rc->done, true);
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_two_threads(void **state)
{
	struct fx *f = *state;
	struct race rc;
	memset(&rc, 0, sizeof rc);
	rc.ls = open_ls(f->dir, 4096);
	atomic_init(&rc.stop, false);
	atomic_init(&rc.done, false);
	atomic_init(&rc.started, 0);
	atomic_init(&rc.synced, 0);
	atomic_init(&rc.batches, 0);
	atomic_init(&rc.snapshots, 0);
	atomic_init(&rc.compactions, 0);
	struct raft_storage s = logstore_storage(rc.ls);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, race_writer, &rc), 0);

	double t0 = now_s();
	uint64_t reads = 0, compacted = 0, x = 0x2545F4914F6CDD1Dull;
	struct raft_entry *e = calloc(64, sizeof *e);
	assert_non_null(e);
	while (!atomic_load(&rc.done)) {
		if (now_s() - t0 > 2.0) {
			atomic_store(&rc.stop, true);
		}
		uint64_t synced0 = atomic_load(&rc.synced);
		uint64_t first = s.first_index(s.ctx);
		uint64_t last = s.last_index(s.ctx);
		uint64_t started1 = atomic_load(&rc.started);
		/* Visible once appended, never before its batch was written. */
		if (last < synced0 || last > started1) {
			fail_msg("last index %llu outside [%llu, %llu]", (unsigned long long)last,
				 (unsigned long long)synced0, (unsigned long long)started1);
		}
		if (last < first) {
			continue; /* empty log */
		}
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		/* Half of the reads at the oldest entries, the ones compaction takes. */
		uint64_t lo = (x & 1) ? first : first + x % (last - first + 1);
		uint64_t hi = lo + 1 + (x >> 20) % 64;
		if (hi > last + 1) {
			hi = last + 1;
		}
		uint32_t n = 0;
		int rv = s.entries(s.ctx, lo, hi, 2000, e, &n);
		reads++;
		if (rv == RAFT_ECOMPACTED || rv == RAFT_EUNAVAILABLE) {
			/* compacted, or a suffix being rewritten shorter (never here) */
			compacted += rv == RAFT_ECOMPACTED;
			assert_int_equal(rv, RAFT_ECOMPACTED);
			continue;
		}
		assert_int_equal(rv, 0);
		assert_true(n >= 1 && n <= hi - lo);
		for (uint32_t i = 0; i < n; i++) {
			assert_int_equal(e[i].index, lo + i);
			assert_true(i == 0 || e[i].term >= e[i - 1].term);
			if (!data_ok(&e[i])) {
				fail_msg("entry %llu term %llu: data differs",
					 (unsigned long long)e[i].index,
					 (unsigned long long)e[i].term);
			}
		}
		/* The data stays readable until the next entries call, whatever
		 * the writer compacts meanwhile. */
		sched_yield();
		for (uint32_t i = 0; i < n; i++) {
			assert_true(data_ok(&e[i]));
		}
		uint64_t t1 = 0, t2 = 0;
		int r1 = s.term(s.ctx, lo, &t1);
		int r2 = s.term(s.ctx, hi - 1, &t2);
		if (r1 == 0 && r2 == 0) {
			assert_true(t2 >= t1);
		} else {
			assert_true(r1 == RAFT_ECOMPACTED || r1 == 0);
			assert_true(r2 == RAFT_ECOMPACTED || r2 == 0);
		}
	}
	free(e);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(rc.error, 0);
	uint64_t batches = atomic_load(&rc.batches);
	print_message("two threads: %llu batches, %llu snapshots, %llu reads (%llu compacted)\n",
		      (unsigned long long)batches, (unsigned long long)atomic_load(&rc.snapshots),
		      (unsigned long long)reads, (unsigned long long)compacted);
	assert_true(batches > 10);
	assert_true(reads > 10);

	/* Everything the writer appended is there after a reopen. */
	uint64_t last = atomic_load(&rc.synced);
	logstore_close(rc.ls);
	struct logstore *ls = open_ls(f->dir, 4096);
	s = logstore_storage(ls);
	assert_int_equal(s.last_index(s.ctx), last);
	uint64_t first = s.first_index(s.ctx);
	uint64_t prev = 0;
	for (uint64_t i = first; i <= last; i++) {
		struct raft_entry one;
		uint32_t n = 0;
		assert_int_equal(s.entries(s.ctx, i, i + 1, UINT64_MAX, &one, &n), 0);
		assert_true(data_ok(&one));
		assert_true(one.term >= prev);
		prev = one.term;
	}
	logstore_close(ls);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conf_blob),
		cmocka_unit_test_setup_teardown(test_bad_conf_blob_on_open, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bootstrap_initial_state, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_entries_and_truncation, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_compact, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_two_steps, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_mark, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_borrowed_data_survives_compaction, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_wal_stale_marker_reopens, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_install_received, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_raft_node, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_two_threads, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
