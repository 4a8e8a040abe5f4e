/* agent.c: `cairn agent`, a gossip-only member for a node agent: it joins the servers' gossip
 * pool under its --name, with its tags, so that the Raft leader records the node's liveness
 * under /cairn/members/<name>. No Raft, no store, no client port: one libuv loop, the gossip
 * core and its sockets, a few MiB of memory.
 *
 * Signals: SIGTERM or SIGINT leaves the pool gracefully (the others mark this node "left",
 * not "dead") and exits 0; a second one exits at once with 128 + its number, as does a stop
 * that outlasts STOP_TIMEOUT_MS. SIGHUP reads --gossip-key-file again (srv_gossip.h, KEYS).
 *
 * `cairn gossip-keygen` prints a new random key for the key file. */
#include "agent.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "gossip_seal.h"
#include "log.h"
#include "srv_gossip.h"

extern char **environ;

/* Bound on the graceful leave and the closing of the sockets. */
#define STOP_TIMEOUT_MS 10000u
#define ERR_LEN 1024

struct agent {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	uv_timer_t stop_timer;
	struct srv_gossip *sg;
	bool stopping, stop_timer_on;
};

static void on_stop_timeout(uv_timer_t *t)
{
	(void)t;
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_ERROR, "stop-timeout");
	srv_log_u64(&l, "after-ms", STOP_TIMEOUT_MS);
	srv_log_end(&l);
	_exit(128 + SIGTERM);
}

static void on_stopped(void *data)
{
	struct agent *a = data;
	a->sg = NULL;
	srv_log(SRV_LOG_INFO, "stopped", NULL);
	uv_close((uv_handle_t *)&a->sigterm, NULL);
	uv_close((uv_handle_t *)&a->sigint, NULL);
	if (a->stop_timer_on) {
		uv_close((uv_handle_t *)&a->stop_timer, NULL);
	}
}

static void on_left(void *data)
{
	struct agent *a = data;
	srv_gossip_stop(a->sg, on_stopped, a);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct agent *a = h->data;
	const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
	if (a->stopping) {
		srv_log(SRV_LOG_WARN, "exit-now", "signal", name, "detail",
			"second signal during the graceful leave", NULL);
		_exit(128 + signum);
	}
	a->stopping = true;
	srv_log(SRV_LOG_INFO, "stopping", "signal", name, NULL);
	if (uv_timer_init(&a->loop, &a->stop_timer) == 0) {
		a->stop_timer_on = true;
		uv_timer_start(&a->stop_timer, on_stop_timeout, STOP_TIMEOUT_MS, 0);
		uv_unref((uv_handle_t *)&a->stop_timer);
	}
	srv_gossip_leave(a->sg, on_left, a);
}

static int watch_signal(struct agent *a, uv_signal_t *h, int signum)
{
	int rv = uv_signal_init(&a->loop, h);
	if (rv != 0) {
		return rv;
	}
	h->data = a;
	rv = uv_signal_start(h, on_signal, signum);
	uv_unref((uv_handle_t *)h); /* the gossip's handles keep the loop running */
	return rv;
}

static void close_handle(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h)) {
		uv_close(h, NULL);
	}
}

/* Closes what is left on the loop, bounded, then the loop. */
static void loop_finish(uv_loop_t *loop)
{
	uv_walk(loop, close_handle, NULL);
	for (int i = 0; i < 100 && uv_loop_alive(loop); i++) {
		uv_run(loop, UV_RUN_NOWAIT);
	}
	(void)uv_loop_close(loop);
}

static int run(const struct srv_config *cfg)
{
	struct agent a;
	memset(&a, 0, sizeof a);
	int rv = uv_loop_init(&a.loop);
	if (rv != 0) {
		srv_log(SRV_LOG_ERROR, "start-failed", "error", uv_strerror(rv), NULL);
		return 1;
	}
	if ((rv = watch_signal(&a, &a.sigterm, SIGTERM)) != 0 ||
	    (rv = watch_signal(&a, &a.sigint, SIGINT)) != 0) {
		srv_log(SRV_LOG_ERROR, "start-failed", "error", uv_strerror(rv), NULL);
		loop_finish(&a.loop);
		return 1;
	}
	struct srv_gossip_options o;
	srv_gossip_options_from_config(&o, cfg);
	o.name = cfg->name;
	o.sighup = true;
	char err[ERR_LEN] = "";
	if (srv_gossip_start(&a.loop, &o, &a.sg, err, sizeof err) != 0) {
		srv_log(SRV_LOG_ERROR, "start-failed", "error", err[0] ? err : "unknown error",
			NULL);
		loop_finish(&a.loop);
		return 1;
	}
	uv_run(&a.loop, UV_RUN_DEFAULT);
	int status = 0;
	if (a.sg != NULL) {
		srv_log(SRV_LOG_ERROR, "loop-ended", "detail", "gossip stopped without a signal",
			NULL);
		status = 1;
	}
	loop_finish(&a.loop);
	return status;
}

int cairn_agent_main(int argc, char **argv)
{
	struct srv_config cfg;
	char err[ERR_LEN];
	/* argv[0] is "agent", skipped by the parser as a program name would be */
	int rv = srv_config_load_agent(&cfg, argc, argv, environ, err, sizeof err);
	if (rv != 0) {
		fprintf(stderr, "cairn agent: %s\n", err);
		if (rv == SRV_CONFIG_EUSAGE) {
			fprintf(stderr, "Run `cairn agent --help` for the list of flags.\n");
		}
		srv_config_free(&cfg);
		return rv == SRV_CONFIG_EUSAGE ? 2 : 1;
	}
	if (cfg.action != SRV_CONFIG_RUN) {
		fputs(cfg.action == SRV_CONFIG_HELP ? srv_config_agent_help() :
						      srv_config_version(),
		      stdout);
		srv_config_free(&cfg);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	srv_log_set_level(cfg.log_level);
	srv_log_set_member(cfg.name);
	for (size_t i = 0; i < cfg.warnings_n; i++) {
		srv_log(SRV_LOG_WARN, "config-warning", "detail", cfg.warnings[i], NULL);
	}
	srv_log(SRV_LOG_INFO, "starting", "version", SRV_CAIRN_VERSION, "mode", "agent", NULL);
	int status = run(&cfg);
	srv_config_free(&cfg);
	return status;
}

int cairn_gossip_keygen_main(int argc, char **argv)
{
	if (argc > 1) {
		bool help = strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
			    strcmp(argv[1], "-help") == 0;
		FILE *f = help ? stdout : stderr;
		if (!help) {
			fprintf(f, "cairn gossip-keygen: unexpected argument '%s'\n", argv[1]);
		}
		fprintf(f, "Usage: cairn gossip-keygen\n"
			   "  Print a new random key (32 bytes, base64) for --gossip-key-file.\n");
		return help ? 0 : 2;
	}
	char key[45];
	if (net_key_generate(key) != 0) {
		fprintf(stderr, "cairn gossip-keygen: no random bytes available\n");
		return 1;
	}
	int ok = printf("%s\n", key) > 0 && fflush(stdout) == 0;
	memset(key, 0, sizeof key);
	return ok ? 0 : 1;
}
