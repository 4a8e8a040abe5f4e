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
#include "daemon.h"
#include "gossip_seal.h"
#include "log.h"
#include "srv_gossip.h"

extern char **environ;

/* Bound on the graceful leave and the closing of the sockets. */
#define STOP_TIMEOUT_MS 10000u
#define ERR_LEN 1024

static void on_stopped(void *data)
{
	struct cairn_daemon *d = data;
	*(struct srv_gossip **)d->data = NULL;
	srv_log(SRV_LOG_INFO, "stopped", NULL);
	cairn_daemon_stopped(d);
}

static void on_left(void *data)
{
	struct cairn_daemon *d = data;
	srv_gossip_stop(*(struct srv_gossip **)d->data, on_stopped, d);
}

static void leave(struct cairn_daemon *d)
{
	srv_gossip_leave(*(struct srv_gossip **)d->data, on_left, d);
}

static int run(const struct srv_config *cfg)
{
	struct srv_gossip *sg = NULL;
	struct cairn_daemon d;
	if (cairn_daemon_init(&d, "graceful leave", STOP_TIMEOUT_MS, leave, &sg) != 0) {
		return 1;
	}
	struct srv_gossip_options o;
	srv_gossip_options_from_config(&o, cfg);
	o.name = cfg->name;
	o.sighup = true;
	char err[ERR_LEN] = "";
	if (srv_gossip_start(&d.loop, &o, &sg, err, sizeof err) != 0) {
		srv_log(SRV_LOG_ERROR, "start-failed", "error", err[0] ? err : "unknown error",
			NULL);
		cairn_daemon_finish(&d);
		return 1;
	}
	uv_run(&d.loop, UV_RUN_DEFAULT);
	int status = 0;
	if (sg != NULL) {
		srv_log(SRV_LOG_ERROR, "loop-ended", "detail", "gossip stopped without a signal",
			NULL);
		status = 1;
	}
	cairn_daemon_finish(&d);
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
