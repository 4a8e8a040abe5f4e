/* daemon.c: see daemon.h. */
#include "daemon.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static void on_stop_timeout(uv_timer_t *t)
{
	struct cairn_daemon *d = t->data;
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_ERROR, "stop-timeout");
	srv_log_u64(&l, "after-ms", d->stop_timeout_ms);
	srv_log_end(&l);
	_exit(128 + SIGTERM);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct cairn_daemon *d = h->data;
	const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
	if (d->stopping) {
		char detail[64];
		snprintf(detail, sizeof detail, "second signal during the %s", d->what);
		srv_log(SRV_LOG_WARN, "exit-now", "signal", name, "detail", detail, NULL);
		_exit(128 + signum);
	}
	d->stopping = true;
	srv_log(SRV_LOG_INFO, "stopping", "signal", name, NULL);
	if (uv_timer_init(&d->loop, &d->stop_timer) == 0) {
		d->stop_timer_on = true;
		d->stop_timer.data = d;
		uv_timer_start(&d->stop_timer, on_stop_timeout, d->stop_timeout_ms, 0);
		uv_unref((uv_handle_t *)&d->stop_timer);
	}
	d->stop(d);
}

static int watch_signal(struct cairn_daemon *d, uv_signal_t *h, int signum)
{
	int rv = uv_signal_init(&d->loop, h);
	if (rv != 0) {
		return rv;
	}
	h->data = d;
	rv = uv_signal_start(h, on_signal, signum);
	/* Unreferenced: the caller's handles keep the loop running, so a process whose handles
	 * all close by themselves ends the loop instead of waiting for a signal. */
	uv_unref((uv_handle_t *)h);
	return rv;
}

int cairn_daemon_init(struct cairn_daemon *d, const char *what, uint32_t stop_timeout_ms,
		      void (*stop)(struct cairn_daemon *d), void *data)
{
	memset(d, 0, sizeof *d);
	d->what = what;
	d->stop_timeout_ms = stop_timeout_ms;
	d->stop = stop;
	d->data = data;
	int rv = uv_loop_init(&d->loop);
	if (rv != 0) {
		srv_log(SRV_LOG_ERROR, "start-failed", "error", uv_strerror(rv), NULL);
		return 1;
	}
	if ((rv = watch_signal(d, &d->sigterm, SIGTERM)) != 0 ||
	    (rv = watch_signal(d, &d->sigint, SIGINT)) != 0) {
		srv_log(SRV_LOG_ERROR, "start-failed", "error", uv_strerror(rv), NULL);
		cairn_daemon_finish(d);
		return 1;
	}
	return 0;
}

void cairn_daemon_stopped(struct cairn_daemon *d)
{
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
	if (d->stop_timer_on) {
		uv_close((uv_handle_t *)&d->stop_timer, NULL);
	}
	uv_stop(&d->loop);
}

static void close_handle(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h)) {
		uv_close(h, NULL);
	}
}

void cairn_daemon_finish(struct cairn_daemon *d)
{
	uv_walk(&d->loop, close_handle, NULL);
	for (int i = 0; i < 100 && uv_loop_alive(&d->loop); i++) {
		uv_run(&d->loop, UV_RUN_NOWAIT);
	}
	if (uv_loop_close(&d->loop) != 0) {
		srv_log(SRV_LOG_WARN, "loop-busy", "detail", "handles still open at exit", NULL);
	}
}
