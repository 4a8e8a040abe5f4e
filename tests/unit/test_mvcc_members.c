/* test_mvcc_members.c: the store's member table and removed ids (kv_mvcc.h,
 * "Members"): records inside a batch, visible to the batch and once
 * committed, gone with an aborted batch, kept across a reopen and in a
 * snapshot copy; no revision taken; a store made before the table opens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv_mvcc.h"
#include "tmpdir.h"

struct fx {
	char dir[64];
	struct kv_store *s;
	uint64_t applied;
};

static void fx_reopen(struct fx *f)
{
	struct kv_options o = { .no_sync = true };
	kv_close(f->s);
	f->s = NULL;
	assert_int_equal(kv_open(f->dir, &o, &f->s), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	h_tmpdir_make(f->dir, sizeof f->dir, "mvcc-members");
	fx_reopen(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	kv_close(f->s);
	h_tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static struct kv_wtx *begin(struct fx *f)
{
	struct kv_wtx *w = NULL;
	assert_int_equal(kv_txn_begin_write(f->s, &w), 0);
	return w;
}

static void commit(struct fx *f, struct kv_wtx *w)
{
	assert_int_equal(kv_txn_commit(w, ++f->applied), 0);
}

static void expect(const struct kv_members *m, size_t i, uint64_t id, const char *data)
{
	assert_true(i < m->n);
	assert_int_equal(m->v[i].id, id);
	assert_int_equal(m->v[i].len, strlen(data));
	assert_memory_equal(m->v[i].data, data, strlen(data));
}

static void test_put_list_delete(void **state)
{
	struct fx *f = *state;
	struct kv_members m;
	struct kv_status st0, st1;
	assert_int_equal(kv_status(f->s, &st0), 0);
	assert_int_equal(kv_members_list(f->s, &m), 0);
	assert_int_equal(m.n, 0);
	kv_members_free(&m);

	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_member_put(w, 30, "c", 1), 0);
	assert_int_equal(kv_member_put(w, 10, "a", 1), 0);
	assert_int_equal(kv_member_put(w, 0, "", 0), 0);
	assert_int_equal(kv_member_put(w, 10, "aa", 2), 0); /* replaces */
	/* the batch sees its own writes, in id order */
	assert_int_equal(kv_members_list_w(w, &m), 0);
	assert_int_equal(m.n, 3);
	expect(&m, 0, 0, "");
	expect(&m, 1, 10, "aa");
	expect(&m, 2, 30, "c");
	kv_members_free(&m);
	/* the committed view does not, yet */
	assert_int_equal(kv_members_list(f->s, &m), 0);
	assert_int_equal(m.n, 0);
	kv_members_free(&m);
	commit(f, w);

	assert_int_equal(kv_members_list(f->s, &m), 0);
	assert_int_equal(m.n, 3);
	expect(&m, 1, 10, "aa");
	kv_members_free(&m);
	/* not keys: no revision */
	assert_int_equal(kv_status(f->s, &st1), 0);
	assert_int_equal(st1.revision, st0.revision);
	assert_int_equal(st1.applied_index, f->applied);

	w = begin(f);
	assert_int_equal(kv_member_delete(w, 10), 0);
	assert_int_equal(kv_member_delete(w, 10), KV_ENOTFOUND);
	assert_int_equal(kv_txn_failed(w), 0); /* the batch goes on */
	commit(f, w);
	assert_int_equal(kv_members_list(f->s, &m), 0);
	assert_int_equal(m.n, 2);
	expect(&m, 0, 0, "");
	expect(&m, 1, 30, "c");
	kv_members_free(&m);
}

static void test_too_big(void **state)
{
	struct fx *f = *state;
	static uint8_t big[KV_MAX_MEMBER_RECORD + 1];
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_member_put(w, 1, big, sizeof big), KV_ETOOBIG);
	assert_int_equal(kv_txn_failed(w), 0);
	assert_int_equal(kv_member_put(w, 1, big, sizeof big - 1), 0);
	commit(f, w);
}

static void test_removed(void **state)
{
	struct fx *f = *state;
	bool r = true;
	assert_int_equal(kv_member_removed(f->s, 7, &r), 0);
	assert_false(r);
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_member_set_removed(w, 7), 0);
	assert_int_equal(kv_member_set_removed(w, 7), 0); /* idempotent */
	assert_int_equal(kv_member_removed_w(w, 7, &r), 0);
	assert_true(r);
	assert_int_equal(kv_member_removed_w(w, 8, &r), 0);
	assert_false(r);
	commit(f, w);
	assert_int_equal(kv_member_removed(f->s, 7, &r), 0);
	assert_true(r);
}

static void test_abort_and_reopen(void **state)
{
	struct fx *f = *state;
	struct kv_members m;
	bool r;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_member_put(w, 5, "five", 4), 0);
	assert_int_equal(kv_member_set_removed(w, 6), 0);
	kv_txn_abort(w);
	assert_int_equal(kv_members_list(f->s, &m), 0);
	assert_int_equal(m.n, 0);
	kv_members_free(&m);
	assert_int_equal(kv_member_removed(f->s, 6, &r), 0);
	assert_false(r);

	w = begin(f);
	assert_int_equal(kv_member_put(w, 5, "five", 4), 0);
	assert_int_equal(kv_member_set_removed(w, 6), 0);
	commit(f, w);
	fx_reopen(f);
	assert_int_equal(kv_members_list(f->s, &m), 0);
	assert_int_equal(m.n, 1);
	expect(&m, 0, 5, "five");
	kv_members_free(&m);
	assert_int_equal(kv_member_removed(f->s, 6, &r), 0);
	assert_true(r);
}

/* A snapshot is a copy of the store: the table goes with it. */
static void test_snapshot_carries(void **state)
{
	struct fx *f = *state;
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_member_put(w, 9, "nine", 4), 0);
	assert_int_equal(kv_member_set_removed(w, 4), 0);
	commit(f, w);
	char snap[128], dir2[64];
	snprintf(snap, sizeof snap, "%s/snap.mdb", f->dir);
	int fd = open(snap, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(kv_snapshot_copy_fd(f->s, fd), 0);
	close(fd);

	h_tmpdir_make(dir2, sizeof dir2, "mvcc-members2");
	struct kv_store *s2 = NULL;
	struct kv_options o = { .no_sync = true };
	assert_int_equal(kv_open(dir2, &o, &s2), 0);
	assert_int_equal(kv_snapshot_install(s2, snap), 0);
	struct kv_members m;
	bool r;
	assert_int_equal(kv_members_list(s2, &m), 0);
	assert_int_equal(m.n, 1);
	expect(&m, 0, 9, "nine");
	kv_members_free(&m);
	assert_int_equal(kv_member_removed(s2, 4, &r), 0);
	assert_true(r);
	kv_close(s2);
	h_tmpdir_remove(dir2);
}

/* A store written before the member table existed: only the older
 * sub-databases. It opens, with an empty table that then takes records. */
static void test_older_store(void **state)
{
	struct fx *f = *state;
	char dir2[64];
	kv_close(f->s);
	f->s = NULL;
	h_tmpdir_remove(f->dir);
	h_tmpdir_make(dir2, sizeof dir2, "mvcc-members-old");
	snprintf(f->dir, sizeof f->dir, "%s", dir2);

	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	const char *names[] = { "rev", "key", "meta", "lease", "lease_key" };
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(mdb_dbi_open(txn, names[i], MDB_CREATE, &dbi), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);

	fx_reopen(f);
	struct kv_members m;
	assert_int_equal(kv_members_list(f->s, &m), 0);
	assert_int_equal(m.n, 0);
	kv_members_free(&m);
	struct kv_wtx *w = begin(f);
	assert_int_equal(kv_member_put(w, 1, "one", 3), 0);
	commit(f, w);
	assert_int_equal(kv_members_list(f->s, &m), 0);
	assert_int_equal(m.n, 1);
	kv_members_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_list_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_carries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_older_store, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
