/* test_worker.c: the storage thread (server/worker.h): jobs run in order on
 * another thread, their completions run in order on the loop thread, the
 * bound on outstanding jobs holds, and closing cancels what has not run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "worker.h"

#define NJOBS 2000

struct tjob {
	struct srv_job job; /* first: the callbacks get &job */
	int seq;
	uv_thread_t ran_on;
	bool ran, done, cancelled;
	unsigned sleep_us;
};

static atomic_int started; /* jobs whose run() began */

static struct {
	uv_loop_t loop;
	uv_thread_t loop_thread;
	struct srv_worker *w;
	int next_run, next_done;
	int order_errors;
	int submitted;
	struct tjob jobs[NJOBS];
	bool closed;
	bool resubmit;
} T;

static void job_run(struct srv_job *j)
{
	struct tjob *t = (struct tjob *)j;
	atomic_fetch_add(&started, 1);
	t->ran_on = uv_thread_self();
	if (t->seq != T.next_run++)
		T.order_errors++;
	if (t->sleep_us > 0) {
		struct timespec ts = { 0, (long)t->sleep_us * 1000 };
		nanosleep(&ts, NULL);
	}
	t->ran = true;
}

static void submit_next(void);

static void job_done(struct srv_job *j, bool cancelled)
{
	struct tjob *t = (struct tjob *)j;
	assert_true(uv_thread_equal(&T.loop_thread, &(uv_thread_t){ uv_thread_self() }));
	if (t->seq != T.next_done++)
		T.order_errors++;
	t->done = true;
	t->cancelled = cancelled;
	if (T.resubmit && !cancelled)
		submit_next();
}

static void submit_next(void)
{
	while (T.submitted < NJOBS) {
		struct tjob *t = &T.jobs[T.submitted];
		t->seq = T.submitted;
		t->job.run = job_run;
		t->job.done = job_done;
		int rv = srv_worker_submit(T.w, &t->job);
		if (rv == SRV_WORKER_EBUSY)
			return;
		assert_int_equal(rv, 0);
		T.submitted++;
	}
}

static void on_closed(void *data)
{
	(void)data;
	T.closed = true;
}

static int setup(void **state)
{
	(void)state;
	memset(&T, 0, sizeof T);
	atomic_store(&started, 0);
	assert_int_equal(uv_loop_init(&T.loop), 0);
	T.loop_thread = uv_thread_self();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(uv_loop_close(&T.loop), 0);
	return 0;
}

static void run_until_done(int n)
{
	for (int i = 0; i < 20000 && T.next_done < n; i++)
		uv_run(&T.loop, UV_RUN_ONCE);
}

static void test_worker_order_and_threads(void **state)
{
	(void)state;
	assert_int_equal(srv_worker_start(&T.loop, 4, &T.w), 0);
	T.resubmit = true;
	submit_next();
	assert_int_equal(T.submitted, 4); /* the bound */
	assert_int_equal(srv_worker_submit(T.w, &T.jobs[NJOBS - 1].job), SRV_WORKER_EBUSY);
	assert_int_equal(srv_worker_pending(T.w), 4);
	run_until_done(NJOBS);
	assert_int_equal(T.next_done, NJOBS);
	assert_int_equal(T.order_errors, 0);
	for (int i = 0; i < NJOBS; i++) {
		assert_true(T.jobs[i].ran && T.jobs[i].done && !T.jobs[i].cancelled);
		assert_false(uv_thread_equal(&T.jobs[i].ran_on, &T.loop_thread));
	}
	assert_int_equal(srv_worker_pending(T.w), 0);
	srv_worker_close(T.w, on_closed, NULL);
	while (!T.closed)
		uv_run(&T.loop, UV_RUN_ONCE);
}

static void test_worker_close_cancels_queued(void **state)
{
	(void)state;
	assert_int_equal(srv_worker_start(&T.loop, 16, &T.w), 0);
	for (int i = 0; i < 16; i++) {
		T.jobs[i].sleep_us = 20000; /* far longer than close takes */
	}
	submit_next();
	assert_int_equal(T.submitted, 16);
	/* close once the first job runs: it finishes, the queued ones do not */
	for (int i = 0; i < 2000 && atomic_load(&started) == 0; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	assert_true(atomic_load(&started) >= 1);
	srv_worker_close(T.w, on_closed, NULL);
	/* every done() ran during close, in order, cancelled or not */
	assert_int_equal(T.next_done, 16);
	assert_int_equal(T.order_errors, 0);
	int ran = 0;
	for (int i = 0; i < 16; i++) {
		assert_true(T.jobs[i].done);
		assert_int_equal(T.jobs[i].cancelled, !T.jobs[i].ran);
		ran += T.jobs[i].ran;
	}
	assert_true(ran >= 1 && ran < 16);
	struct tjob late = { .job = { .run = job_run, .done = job_done } };
	assert_int_equal(srv_worker_submit(T.w, &late.job), SRV_WORKER_ECLOSED);
	while (!T.closed)
		uv_run(&T.loop, UV_RUN_ONCE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_worker_order_and_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_worker_close_cancels_queued, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
