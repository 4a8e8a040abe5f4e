/* worker.c: the member's storage thread (worker.h). One mutex guards two
 * singly linked FIFOs: jobs to run, and jobs run whose done() the loop has
 * yet to call; uv_async wakes the loop, a condition variable the thread. */
#include "worker.h"

#include <stdlib.h>

struct fifo {
	struct srv_job *head, *tail;
};

struct srv_worker {
	uv_loop_t *loop;
	uv_async_t async;
	uv_thread_t thread;
	uv_mutex_t mu;
	uv_cond_t cv;
	struct fifo todo; /* mu */
	struct fifo ran;  /* mu */
	bool stopping;    /* mu */
	size_t pending;   /* loop thread only */
	size_t max;       /* loop thread only */
	bool closing;     /* loop thread only */
	void (*closed)(void *data);
	void *closed_data;
};

static void fifo_push(struct fifo *f, struct srv_job *j)
{
	j->next = NULL;
	if (f->tail != NULL)
		f->tail->next = j;
	else
		f->head = j;
	f->tail = j;
}

static struct srv_job *fifo_take_all(struct fifo *f)
{
	struct srv_job *h = f->head;
	f->head = f->tail = NULL;
	return h;
}

static void thread_main(void *arg)
{
	struct srv_worker *w = arg;
	uv_mutex_lock(&w->mu);
	for (;;) {
		while (w->todo.head == NULL && !w->stopping)
			uv_cond_wait(&w->cv, &w->mu);
		if (w->stopping)
			break;
		struct srv_job *j = w->todo.head;
		w->todo.head = j->next;
		if (w->todo.head == NULL)
			w->todo.tail = NULL;
		uv_mutex_unlock(&w->mu);
		j->run(j);
		uv_mutex_lock(&w->mu);
		fifo_push(&w->ran, j);
		uv_async_send(&w->async);
	}
	uv_mutex_unlock(&w->mu);
}

/* Calls done() of every job in the list, in order. */
static void complete(struct srv_worker *w, struct srv_job *j, bool cancelled)
{
	while (j != NULL) {
		struct srv_job *next = j->next;
		w->pending--;
		j->done(j, cancelled);
		j = next;
	}
}

static void on_async(uv_async_t *a)
{
	struct srv_worker *w = a->data;
	uv_mutex_lock(&w->mu);
	struct srv_job *j = fifo_take_all(&w->ran);
	uv_mutex_unlock(&w->mu);
	complete(w, j, false);
}

static void on_closed(uv_handle_t *h)
{
	struct srv_worker *w = h->data;
	void (*closed)(void *) = w->closed;
	void *data = w->closed_data;
	uv_cond_destroy(&w->cv);
	uv_mutex_destroy(&w->mu);
	free(w);
	if (closed != NULL)
		closed(data);
}

int srv_worker_start(uv_loop_t *loop, size_t max_jobs, struct srv_worker **out)
{
	*out = NULL;
	struct srv_worker *w = calloc(1, sizeof *w);
	if (w == NULL)
		return SRV_WORKER_ENOMEM;
	w->loop = loop;
	w->max = max_jobs ? max_jobs : 1;
	if (uv_mutex_init(&w->mu) != 0) {
		free(w);
		return SRV_WORKER_ENOMEM;
	}
	if (uv_cond_init(&w->cv) != 0) {
		uv_mutex_destroy(&w->mu);
		free(w);
		return SRV_WORKER_ENOMEM;
	}
	if (uv_async_init(loop, &w->async, on_async) != 0) {
		uv_cond_destroy(&w->cv);
		uv_mutex_destroy(&w->mu);
		free(w);
		return SRV_WORKER_ENOMEM;
	}
	w->async.data = w;
	if (uv_thread_create(&w->thread, thread_main, w) != 0) {
		/* the async handle is closed through the loop, which frees w */
		w->closing = true;
		uv_close((uv_handle_t *)&w->async, on_closed);
		return SRV_WORKER_ENOMEM;
	}
	*out = w;
	return 0;
}

int srv_worker_submit(struct srv_worker *w, struct srv_job *job)
{
	if (w->closing)
		return SRV_WORKER_ECLOSED;
	if (w->pending >= w->max)
		return SRV_WORKER_EBUSY;
	w->pending++;
	uv_mutex_lock(&w->mu);
	fifo_push(&w->todo, job);
	uv_cond_signal(&w->cv);
	uv_mutex_unlock(&w->mu);
	return 0;
}

size_t srv_worker_pending(const struct srv_worker *w)
{
	return w->pending;
}

void srv_worker_close(struct srv_worker *w, void (*closed)(void *data), void *data)
{
	if (w->closing)
		return;
	w->closing = true;
	w->closed = closed;
	w->closed_data = data;
	uv_mutex_lock(&w->mu);
	w->stopping = true;
	struct srv_job *cancelled = fifo_take_all(&w->todo);
	uv_cond_signal(&w->cv);
	uv_mutex_unlock(&w->mu);
	/* waits for the job that runs, if any: at most one disk operation */
	uv_thread_join(&w->thread);
	uv_mutex_lock(&w->mu);
	struct srv_job *ran = fifo_take_all(&w->ran);
	uv_mutex_unlock(&w->mu);
	complete(w, ran, false);
	complete(w, cancelled, true);
	uv_close((uv_handle_t *)&w->async, on_closed);
}
