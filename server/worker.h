/* worker.h: the member's storage thread. The loop thread submits jobs; the
 * worker runs them one at a time, in submission order, on its own thread
 * (WAL appends with fdatasync, LMDB batches), and each job's completion then
 * runs back on the loop thread, woken through uv_async, so the loop never
 * waits on a disk (design.md, "Threads").
 *
 * Ownership: a job is the caller's memory, from submit until its done
 * callback has run (on the loop thread); the worker only reads and writes it
 * through run(). Threads: submit, close and every done callback are on the
 * loop thread; run() is on the worker thread. Bounds: at most `max_jobs`
 * jobs submitted and not yet done (SRV_WORKER_EBUSY beyond): the member
 * takes one Raft update at a time, so it needs very few. */
#ifndef CAIRN_SERVER_WORKER_H
#define CAIRN_SERVER_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#define SRV_WORKER_EBUSY (-1)
#define SRV_WORKER_ECLOSED (-2)
#define SRV_WORKER_ENOMEM (-3)

struct srv_job {
	/* On the worker thread. */
	void (*run)(struct srv_job *job);
	/* On the loop thread, after run() returned (or without run() when the
	 * worker was closed first: then cancelled is true). */
	void (*done)(struct srv_job *job, bool cancelled);
	struct srv_job *next; /* the worker's */
};

struct srv_worker;

/* Starts the thread. max_jobs >= 1. */
int srv_worker_start(uv_loop_t *loop, size_t max_jobs, struct srv_worker **out);
/* Queues job; its done() runs on the loop later. SRV_WORKER_EBUSY when
 * max_jobs are outstanding, SRV_WORKER_ECLOSED after close. */
int srv_worker_submit(struct srv_worker *w, struct srv_job *job);
/* Jobs submitted and not yet done. */
size_t srv_worker_pending(const struct srv_worker *w);
/* Lets the job that runs finish, cancels the queued ones (their done()
 * runs with cancelled = true), joins the thread, then calls closed(data)
 * on the loop once every handle is closed; w is freed after it returns. */
void srv_worker_close(struct srv_worker *w, void (*closed)(void *data), void *data);

#endif /* CAIRN_SERVER_WORKER_H */
