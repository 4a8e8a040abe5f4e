/* test_mvcc_copy.c: a copy of the store taken on another thread (kv_snapshot_copy_fd, as a
 * client's Snapshot takes it) and a snapshot install (kv_snapshot_install, as the apply thread
 * runs it) never overlap: the install waits until the copy has finished, and the copy is whole.
 * The copy writes into a pipe that the test drains only after it has seen the install wait. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_mvcc.h"
#include "tmpdir.h"

struct fx {
	char dir[64];
	struct kv_store *s;
	int pipe_w;
	int copy_err, install_err;
	atomic_bool copy_done, install_done;
	char file[128];
};

static void *copy_thread(void *arg)
{
	struct fx *f = arg;
	f->copy_err = kv_snapshot_copy_fd(f->s, f->pipe_w);
	close(f->pipe_w);
	atomic_store(&f->copy_done, true);
	return NULL;
}

static void *install_thread(void *arg)
{
	struct fx *f = arg;
	f->install_err = kv_snapshot_install(f->s, f->file);
	atomic_store(&f->install_done, true);
	return NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static void put(struct kv_store *s, const char *k, const char *v, uint64_t applied)
{
	struct kv_wtx *w = NULL;
	struct kv_put_req q = { .key = (const uint8_t *)k,
				.key_len = strlen(k),
				.value = (const uint8_t *)v,
				.value_len = strlen(v) };
	struct kv_put_resp r;
	assert_int_equal(kv_txn_begin_write(s, &w), 0);
	assert_int_equal(kv_put(w, &q, &r), 0);
	kv_put_resp_free(&r);
	assert_int_equal(kv_txn_commit(w, applied), 0);
}

static void test_install_waits_for_copy(void **state)
{
	(void)state;
	struct fx f = { 0 };
	struct kv_options o = { .no_sync = true };
	h_tmpdir_make(f.dir, sizeof f.dir, "mvcc-copy");
	assert_int_equal(kv_open(f.dir, &o, &f.s), 0);
	/* enough data that the copy fills the pipe (64 KiB) and blocks */
	char big[4096];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	for (int i = 0; i < 64; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%02d", i);
		put(f.s, k, big, (uint64_t)i + 1);
	}
	/* the snapshot to install: a copy taken now, then one more write */
	snprintf(f.file, sizeof f.file, "%s/install.mdb", f.dir);
	int fd = open(f.file, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(kv_snapshot_copy_fd(f.s, fd), 0);
	close(fd);
	put(f.s, "later", "v", 100);

	int p[2];
	assert_int_equal(pipe(p), 0);
	f.pipe_w = p[1];
	pthread_t ct, it;
	assert_int_equal(pthread_create(&ct, NULL, copy_thread, &f), 0);
	sleep_ms(50); /* the copy runs and blocks on the full pipe */
	assert_false(atomic_load(&f.copy_done));
	assert_int_equal(pthread_create(&it, NULL, install_thread, &f), 0);
	sleep_ms(100);
	assert_false(atomic_load(&f.install_done)); /* waits for the copy */

	size_t total = 0;
	char buf[65536];
	ssize_t n;
	while ((n = read(p[0], buf, sizeof buf)) > 0)
		total += (size_t)n;
	close(p[0]);
	pthread_join(ct, NULL);
	pthread_join(it, NULL);
	assert_int_equal(f.copy_err, 0);
	assert_true(total > 64 * 4096);
	assert_int_equal(f.install_err, 0);

	/* the install happened after the copy: the later write is gone */
	struct kv_range_req q = { .key = (const uint8_t *)"later", .key_len = 5 };
	struct kv_range_resp r;
	assert_int_equal(kv_range(f.s, &q, &r), 0);
	assert_int_equal(r.n_kvs, 0);
	kv_range_resp_free(&r);
	kv_close(f.s);
	h_tmpdir_remove(f.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_install_waits_for_copy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
