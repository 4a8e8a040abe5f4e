/* cairn_bench.c: cairn-bench, a load generator and failover harness for any etcd v3 server.
 *
 *   cairn-bench --endpoints http://127.0.0.1:2379 --workload put --clients 16 --duration 10s
 *   cairn-bench --system cairn --fault kill-leader@5s --rate 2000 --check --runs 5
 *
 * It measures Cairn and etcd with the same client (libcairn) in the same way: a workload over
 * one libuv loop (cb_load.c), latencies in hist.h histograms, faults injected by cluster.h's
 * schedule on a cluster it starts itself, and every operation recorded for lincheck.h when
 * --check is given. The flags are in cb_opts.c (and `cairn-bench --help`), the operator's guide
 * in docs/operations.md, "cairn-bench".
 *
 * This file: main(), the cluster around each run (started fresh for each of --runs), the
 * cleanup on every exit path, and the outputs. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cb_bench.h"
#include "lincheck.h"

/* Outside the loop (cluster start, the check, the reports), SIGINT and SIGTERM stop the members
 * at once and leave; inside it, cb_load.c's libuv handlers stop the load gracefully first. */
static void on_fatal_signal(int sig)
{
	cl_emergency_cleanup();
	_exit(128 + sig);
}

static void install_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_fatal_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void find_self_dir(char *out, size_t cap)
{
	ssize_t n = readlink("/proc/self/exe", out, cap - 1);
	if (n <= 0) {
		out[0] = '\0';
		return;
	}
	out[n] = '\0';
	char *slash = strrchr(out, '/');
	if (slash)
		*slash = '\0';
}

/* The spec of the cluster to start: the file, then --system/--members/--set. */
static int build_spec(const struct cb_opts *o, struct cl_spec *spec, char *err, size_t errlen)
{
	cl_spec_init(spec);
	if (o->spec_file && cl_spec_parse_file(o->spec_file, spec, err, errlen) < 0)
		return -1;
	if (o->system && cl_spec_set(spec, "system", o->system, err, errlen) < 0)
		return -1;
	if (o->members) {
		char m[16];
		snprintf(m, sizeof m, "%d", o->members);
		if (cl_spec_set(spec, "members", m, err, errlen) < 0)
			return -1;
	}
	for (size_t i = 0; i < o->n_spec_sets; i++) {
		char kv[2048];
		snprintf(kv, sizeof kv, "%s", o->spec_sets[i]);
		char *eq = strchr(kv, '=');
		*eq = '\0';
		if (cl_spec_set(spec, kv, eq + 1, err, errlen) < 0)
			return -1;
	}
	/* Cairn: the cairn next to this executable (build/bin/) unless the spec names one. */
	if (spec->system == CL_SYS_CAIRN && spec->binary[0] == '\0' && o->self_dir &&
	    o->self_dir[0]) {
		char path[CL_PATH_MAX + 16];
		snprintf(path, sizeof path, "%s/cairn", o->self_dir);
		size_t len = strlen(path);
		if (access(path, X_OK) == 0 && len < sizeof spec->binary)
			memcpy(spec->binary, path, len + 1);
	}
	return cl_spec_check(spec, err, errlen) < 0 ? -1 : 0;
}

/* One run: a fresh cluster when cairn-bench starts its own, the load, the teardown. */
static int one_run(const struct cb_opts *o, const struct cl_spec *spec, int run,
		   struct cb_result *res)
{
	struct cl_cluster *cl = NULL;
	char err[CL_ERR_MAX];
	char eps[1024];
	memset(res, 0, sizeof *res);
	if (o->self_start) {
		if (cl_create(spec, &cl, err, sizeof err) < 0) {
			snprintf(res->failure, sizeof res->failure, "cluster: %s", err);
			return -1;
		}
		if (!o->quiet)
			fprintf(stderr, "cairn-bench: run %d/%d: starting %d %s members in %s\n",
				run + 1, o->runs, spec->members, cl_system_name(spec->system),
				cl_dir(cl));
		if (cl_start(cl) < 0) {
			snprintf(res->failure, sizeof res->failure,
				 "the cluster did not start: %.400s (member logs: %.400s)",
				 cl_errmsg(cl), cl_dir(cl));
			/* Keep the logs of a cluster that failed to start. */
			fprintf(stderr, "cairn-bench: %s\n", res->failure);
			for (int i = 0; i < cl_size(cl); i++) {
				char cmd[CL_PATH_MAX + 32];
				snprintf(cmd, sizeof cmd, "%s", cl_log_path(cl, i));
				FILE *f = fopen(cmd, "r");
				if (!f)
					continue;
				char line[512];
				fprintf(stderr, "----- %s (last lines) -----\n", cl_name(cl, i));
				long lines = 0;
				while (fgets(line, sizeof line, f))
					lines++;
				rewind(f);
				long skip = lines > 20 ? lines - 20 : 0;
				while (fgets(line, sizeof line, f))
					if (skip-- <= 0)
						fputs(line, stderr);
				fclose(f);
			}
			cl_free(cl);
			return -1;
		}
		if (cl_wait_leader(cl, -1, 15000) < 0) {
			snprintf(res->failure, sizeof res->failure,
				 "the cluster elected no leader within 15 s: %.400s",
				 cl_errmsg(cl));
			cl_free(cl);
			return -1;
		}
		snprintf(eps, sizeof eps, "%s", cl_endpoints(cl));
	} else {
		eps[0] = '\0';
		for (size_t i = 0; i < o->n_endpoints; i++)
			snprintf(eps + strlen(eps), sizeof eps - strlen(eps), "%s%s", i ? "," : "",
				 o->endpoints[i]);
	}
	int rc = cb_load_run(o, eps, cl, res);
	install_signals(); /* libuv put the default dispositions back */
	snprintf(res->system, sizeof res->system, "%s",
		 o->self_start ? cl_system_name(spec->system) : "external");
	cl_free(cl);
	return rc;
}

int main(int argc, char **argv)
{
	static struct cb_opts o;
	char err[1024];
	char self_dir[PATH_MAX];
	setvbuf(stdout, NULL, _IOLBF, 0);
	int prc = cb_opts_parse(argc, argv, &o, err, sizeof err);
	if (prc == 1)
		return 0;
	if (prc < 0) {
		fprintf(stderr, "cairn-bench: %s\n", err);
		return 2;
	}
	find_self_dir(self_dir, sizeof self_dir);
	o.self_dir = self_dir;
	if (o.seed == 0) {
		o.seed = cb_now_ns() | 1;
	}
	install_signals();

	struct cl_spec spec;
	if (o.self_start && build_spec(&o, &spec, err, sizeof err) < 0) {
		fprintf(stderr, "cairn-bench: %s\n", err);
		return 2;
	}
	if (!o.quiet) {
		fprintf(stderr,
			"cairn-bench: %s workload, %s %u, %u connection%s, %s, seed %" PRIu64
			"%s\n",
			cb_workload_name(o.workload), o.rate > 0 ? "open loop, at most" : "clients",
			o.clients, o.conns, o.conns == 1 ? "" : "s",
			o.count ? "by count" : "by duration", o.seed,
			o.check ? ", linearizability check on" : "");
		if (o.check && o.serializable && o.workload != CB_W_PUT)
			fprintf(stderr,
				"cairn-bench: note: serializable reads may be stale by design; "
				"they are left out of the check\n");
	}

	struct cb_result *runs = calloc((size_t)o.runs, sizeof *runs);
	if (!runs) {
		fprintf(stderr, "cairn-bench: out of memory\n");
		return 3;
	}
	int done = 0;
	bool failed = false;
	for (int i = 0; i < o.runs; i++) {
		int rc = one_run(&o, &spec, i, &runs[i]);
		done++;
		if (rc < 0)
			failed = true;
		if (o.runs > 1 && !o.quiet) {
			fprintf(stderr, "cairn-bench: run %d/%d: %" PRIu64 " ops, %.0f ops/s",
				i + 1, o.runs, runs[i].ops,
				runs[i].elapsed_s > 0 ? (double)runs[i].ops / runs[i].elapsed_s :
							0);
			for (int k = 0; k < runs[i].n_faults; k++) {
				if (runs[i].faults[k].unavail_ms >= 0)
					fprintf(stderr, ", %s: unavailable %.1f ms",
						runs[i].faults[k].text,
						runs[i].faults[k].unavail_ms);
				else
					fprintf(stderr, ", %s: no write succeeded after it",
						runs[i].faults[k].text);
			}
			if (runs[i].check.enabled)
				fprintf(stderr, ", check %s",
					runs[i].check.overflow || runs[i].check.verdict < 0 ?
						"not checked" :
						lin_verdict_name(runs[i].check.verdict));
			if (runs[i].failure[0])
				fprintf(stderr, ", failed: %s", runs[i].failure);
			fputc('\n', stderr);
		}
		if (cb_interrupted())
			break;
	}

	cb_report_table(stdout, &o, runs, done);
	int status = 0;
	if (o.json_path && cb_report_json(o.json_path, &o, runs, done) < 0)
		status = 3;
	if (o.csv_path && cb_report_csv(o.csv_path, runs, done) < 0)
		status = 3;
	if (o.plot_path && done > 0 && cb_report_plot(o.plot_path, &o, &runs[0]) < 0)
		status = 3;
	bool violation = false, no_verdict = false;
	for (int i = 0; i < done; i++) {
		const struct cb_check_res *c = &runs[i].check;
		if (!c->enabled)
			continue;
		if (c->verdict == LIN_VIOLATION || runs[i].watch_chain_breaks > 0)
			violation = true;
		else if (c->overflow || c->verdict != LIN_OK)
			no_verdict = true;
	}
	if (failed && status == 0)
		status = 3;
	if (no_verdict && status == 0 && !cb_interrupted())
		status = 4;
	if (violation)
		status = 1;
	if (cb_interrupted() && status == 0)
		status = 130;
	for (int i = 0; i < done; i++)
		cb_result_free(&runs[i]);
	free(runs);
	for (size_t i = 0; i < o.n_endpoints; i++)
		free(o.endpoints[i]);
	return status;
}
