/* main.c: the cairn daemon. Loads the configuration (server/config.h), runs one member
 * (server/member.h) on a libuv loop, and stops it gracefully on SIGTERM or SIGINT.
 * `cairn snapshot status|restore` (snapshot.c) works on snapshot files without a member.
 * `cairn agent` and `cairn gossip-keygen` (agent.c) run gossip alone for node agents.
 *
 * Exit status, as etcd's: 0 after --help, --version or a graceful stop; 2 for a command line
 * mistake; 1 for a configuration that cannot run or a member that fails to start. A second
 * SIGTERM or SIGINT during the graceful stop exits at once with 128 + the signal number, as
 * does a stop that outlasts STOP_TIMEOUT_MS. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "agent.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "member.h"
#include "snapshot.h"

extern char **environ; /* POSIX: declared by no header without _GNU_SOURCE */

/* Bound on a graceful stop (leadership handed over, in-flight requests finished, everything
 * synced); past it the process exits without waiting further. */
#define STOP_TIMEOUT_MS 60000u
#define ERR_LEN 1024


/* Whether data_dir holds no member yet: etcd's test (wal.Exist), no *.wal file in
 * <data-dir>/wal (server/logstore.h, LAYOUT). A directory that cannot be read counts as
 * holding a member, so the bootstrap checks are skipped and the member reports the error. */
static bool data_dir_is_new(const char *data_dir)
{
	size_t n = strlen(data_dir) + sizeof "/wal";
	char *path = malloc(n);
	if (path == NULL) {
		return false;
	}
	snprintf(path, n, "%s/wal", data_dir);
	DIR *d = opendir(path);
	int err = errno;
	free(path);
	if (d == NULL) {
		return err == ENOENT;
	}
	bool fresh = true;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		if (len > 4 && strcmp(e->d_name + len - 4, ".wal") == 0) {
			fresh = false;
			break;
		}
	}
	closedir(d);
	return fresh;
}

static void log_start(const struct srv_config *cfg, bool fresh)
{
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "starting");
	srv_log_str(&l, "version", SRV_CAIRN_VERSION);
	srv_log_str(&l, "data-dir", cfg->data_dir);
	srv_log_bool(&l, "new", fresh);
	for (size_t i = 0; i < cfg->listen_client_urls.n; i++) {
		srv_log_str(&l, "listen-client-url", cfg->listen_client_urls.v[i].text);
	}
	for (size_t i = 0; i < cfg->listen_peer_urls.n; i++) {
		srv_log_str(&l, "listen-peer-url", cfg->listen_peer_urls.v[i].text);
	}
	if (fresh) {
		srv_log_str(&l, "initial-cluster", cfg->initial_cluster);
		srv_log_str(&l, "initial-cluster-state",
			    srv_cluster_state_name(cfg->initial_cluster_state));
	}
	if (cfg->config_file != NULL) {
		srv_log_str(&l, "config-file", cfg->config_file);
	}
	srv_log_str(&l, "log-level", srv_log_level_name(cfg->log_level));
	srv_log_end(&l);
}

static void on_stopped(void *data)
{
	struct cairn_daemon *d = data;
	*(struct srv_member **)d->data = NULL; /* freed by the member once this returns */
	srv_log(SRV_LOG_INFO, "stopped", NULL);
	cairn_daemon_stopped(d);
}

static void stop_member(struct cairn_daemon *d)
{
	srv_member_stop(*(struct srv_member **)d->data, on_stopped, d);
}

/* The member: start it, run the loop until it has stopped. Returns the exit status. */
static int run(const struct srv_config *cfg)
{
	struct srv_member *member = NULL;
	struct cairn_daemon d;
	if (cairn_daemon_init(&d, "graceful stop", STOP_TIMEOUT_MS, stop_member, &member) != 0) {
		return 1;
	}
	char err[ERR_LEN] = "";
	int rv = srv_member_start(&d.loop, cfg, &member, err, sizeof err);
	if (rv != 0) {
		srv_log(SRV_LOG_ERROR, "start-failed", "error", err[0] ? err : "unknown error",
			NULL);
		cairn_daemon_finish(&d);
		return 1;
	}
	uv_run(&d.loop, UV_RUN_DEFAULT);
	int status = 0;
	if (member != NULL) {
		/* The loop ran out without a stop: the member closed its handles by itself. */
		srv_log(SRV_LOG_ERROR, "loop-ended", "detail",
			"the member stopped without a signal", NULL);
		status = 1;
	}
	cairn_daemon_finish(&d);
	return status;
}

int main(int argc, char **argv)
{
	/* A peer or client that goes away mid-write must not kill the process: write() returns
	 * EPIPE instead. */
	signal(SIGPIPE, SIG_IGN);

	if (argc >= 2 && strcmp(argv[1], "snapshot") == 0) {
		return cairn_snapshot_main(argc - 2, argv + 2);
	}
	if (argc >= 2 && strcmp(argv[1], "agent") == 0) {
		return cairn_agent_main(argc - 1, argv + 1);
	}
	if (argc >= 2 && strcmp(argv[1], "gossip-keygen") == 0) {
		return cairn_gossip_keygen_main(argc - 1, argv + 1);
	}

	struct srv_config cfg;
	char err[ERR_LEN];
	int rv = srv_config_load(&cfg, argc, argv, environ, err, sizeof err);
	if (rv != 0) {
		fprintf(stderr, "cairn: %s\n", err);
		if (rv == SRV_CONFIG_EUSAGE) {
			fprintf(stderr, "Run `cairn --help` for the list of flags.\n");
		}
		srv_config_free(&cfg);
		return rv == SRV_CONFIG_EUSAGE ? 2 : 1;
	}
	if (cfg.action == SRV_CONFIG_HELP || cfg.action == SRV_CONFIG_VERSION) {
		fputs(cfg.action == SRV_CONFIG_HELP ? srv_config_help() : srv_config_version(),
		      stdout);
		srv_config_free(&cfg);
		return fflush(stdout) == 0 ? 0 : 1;
	}

	srv_log_set_level(cfg.log_level);
	srv_log_set_member(cfg.name);
	for (size_t i = 0; i < cfg.warnings_n; i++) {
		srv_log(SRV_LOG_WARN, "config-warning", "detail", cfg.warnings[i], NULL);
	}

	bool fresh = data_dir_is_new(cfg.data_dir);
	log_start(&cfg, fresh);
	if (fresh && srv_config_verify_bootstrap(&cfg, err, sizeof err) != 0) {
		srv_log(SRV_LOG_ERROR, "start-failed", "error", err, NULL);
		srv_config_free(&cfg);
		return 1;
	}

	int status = run(&cfg);
	srv_config_free(&cfg);
	return status;
}
