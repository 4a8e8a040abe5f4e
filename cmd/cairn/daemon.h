/* daemon.h: the life of a cairn process on one libuv loop, shared by the server (main.c) and
 * `cairn agent` (agent.c). SIGTERM or SIGINT begins a graceful stop (the caller's `stop`); a
 * second signal, or a stop that outlasts its bound, exits at once with 128 + the signal's
 * number. Signals are watched before the caller starts anything, so one that arrives during the
 * start is handled once the loop runs; the watchers are unreferenced, so the caller's own
 * handles decide whether the loop runs. */
#ifndef CAIRN_CMD_DAEMON_H
#define CAIRN_CMD_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

struct cairn_daemon {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	uv_timer_t stop_timer;
	bool stopping, stop_timer_on;
	uint32_t stop_timeout_ms;
	const char *what;                        /* "graceful stop" ..., for the logs */
	void (*stop)(struct cairn_daemon *d);    /* begins the graceful stop */
	void *data;                              /* the caller's */
};

/* Initialise the loop and watch the signals. Returns 0, or logs start-failed and returns 1
 * (nothing is left to free). */
int cairn_daemon_init(struct cairn_daemon *d, const char *what, uint32_t stop_timeout_ms,
		      void (*stop)(struct cairn_daemon *d), void *data);
/* The graceful stop is over: stop watching, end the loop. */
void cairn_daemon_stopped(struct cairn_daemon *d);
/* Close whatever is left on the loop (bounded, so a handle that never finishes closing cannot
 * hold the exit), then the loop. */
void cairn_daemon_finish(struct cairn_daemon *d);

#endif /* CAIRN_CMD_DAEMON_H */
