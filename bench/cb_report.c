/* cb_report.c: cairn-bench's outputs: the final table (stdout), JSON, CSV and the gnuplot plot.
 * Several runs of one scenario (--runs) are merged in the table (operations summed, histograms
 * merged) and reported one by one in JSON and CSV; unavailability is given per run and as the
 * median over the runs. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn.h"
#include "cb_bench.h"
#include "lincheck.h"

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double cb_median_unavail(const struct cb_result *runs, int n, int i)
{
	double v[CB_MAX_RUNS];
	int k = 0;
	for (int r = 0; r < n && r < CB_MAX_RUNS; r++)
		if (i < runs[r].n_faults && runs[r].faults[i].unavail_ms >= 0)
			v[k++] = runs[r].faults[i].unavail_ms;
	if (k == 0)
		return -1;
	qsort(v, (size_t)k, sizeof v[0], cmp_double);
	return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

static double median_of(double *v, int k)
{
	if (k == 0)
		return -1;
	qsort(v, (size_t)k, sizeof v[0], cmp_double);
	return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

/* The worst verdict over the runs: violation > unknown/overflow > ok; -1 if not checked. */
static int overall_verdict(const struct cb_result *runs, int n, bool *overflow)
{
	int v = -1;
	*overflow = false;
	for (int i = 0; i < n; i++) {
		const struct cb_check_res *c = &runs[i].check;
		if (!c->enabled)
			continue;
		if (c->overflow)
			*overflow = true;
		int cv = c->overflow ? LIN_UNKNOWN : c->verdict;
		if (cv < 0)
			cv = LIN_UNKNOWN;
		if (cv == LIN_VIOLATION || v == -1 || (cv == LIN_UNKNOWN && v == LIN_OK))
			v = v == LIN_VIOLATION ? v : cv;
	}
	return v;
}

static void row(FILE *f, const char *name, uint64_t ops, uint64_t errors, double secs,
		const struct hist *h)
{
	fprintf(f, "%-10s %10" PRIu64 " %11.1f %8" PRIu64 " %9.3f %9.3f %9.3f %9.3f %9.3f\n", name,
		ops, secs > 0 ? (double)ops / secs : 0, errors, ms(hist_percentile(h, 50)),
		ms(hist_percentile(h, 90)), ms(hist_percentile(h, 99)),
		ms(hist_percentile(h, 99.9)), ms(hist_max(h)));
}

void cb_report_table(FILE *f, const struct cb_opts *o, const struct cb_result *runs, int n)
{
	struct hist *all = malloc(sizeof *all);
	struct hist *kh = malloc(sizeof *kh);
	if (!all || !kh) {
		free(all);
		free(kh);
		fprintf(f, "cairn-bench: out of memory for the report\n");
		return;
	}
	double secs = 0;
	uint64_t ops = 0, errors = 0, codes[17] = { 0 }, local = 0, cancelled = 0, conflicts = 0;
	uint64_t kops[CB_K_COUNT] = { 0 }, kerr[CB_K_COUNT] = { 0 }, early = 0;
	hist_init(all);
	for (int i = 0; i < n; i++) {
		const struct cb_result *r = &runs[i];
		secs += r->elapsed_s;
		ops += r->ops;
		errors += r->errors;
		local += r->local_errors;
		cancelled += r->cancelled_at_end;
		conflicts += r->conflicts;
		early += r->watch_early;
		hist_merge(all, &r->all);
		for (int c = 0; c < 17; c++)
			codes[c] += r->errors_by_code[c];
		for (int k = 0; k < CB_K_COUNT; k++) {
			kops[k] += r->kind_ops[k];
			kerr[k] += r->kind_errors[k];
		}
	}
	fprintf(f,
		"\ncairn-bench: %s workload, %s loop, %u connection%s, key %u B, value %u B, "
		"%" PRIu64 " keys\n",
		cb_workload_name(o->workload), o->rate > 0 ? "open" : "closed", o->conns,
		o->conns == 1 ? "" : "s", o->key_size, o->val_size, o->key_space);
	if (o->rate > 0)
		fprintf(f, "load: %.0f requests/s, at most %u outstanding\n", o->rate, o->clients);
	else
		fprintf(f, "load: %u clients (requests outstanding)\n", o->clients);
	fprintf(f, "target: %s%s\n", n > 0 ? runs[0].system : "?",
		o->self_start ? " (started by cairn-bench)" : "");
	fprintf(f, "endpoints: %s\n", n > 0 ? runs[0].endpoints : "");
	if (n > 1)
		fprintf(f, "measured: %.2f s over %d runs (the figures below merge them)\n\n", secs,
			n);
	else
		fprintf(f, "measured: %.2f s\n\n", secs);
	fprintf(f, "%-10s %10s %11s %8s %9s %9s %9s %9s %9s\n", "op", "ops", "ops/s", "errors",
		"p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms");
	int kinds_used = 0;
	for (int k = 0; k < CB_K_COUNT; k++)
		if (kops[k] && k != CB_K_WATCH && k != CB_K_WATCH_PUT)
			kinds_used++;
	for (int k = 0; k < CB_K_COUNT; k++) {
		if (!kops[k] || k == CB_K_WATCH || k == CB_K_WATCH_PUT)
			continue;
		hist_init(kh);
		for (int i = 0; i < n; i++)
			hist_merge(kh, &runs[i].kind[k]);
		row(f, cb_kind_name(k), kops[k], kerr[k], secs, kh);
	}
	if (kinds_used > 1 || kinds_used == 0)
		row(f, "all", ops, errors, secs, all);
	for (int k = CB_K_WATCH; k <= CB_K_WATCH_PUT; k++) {
		if (!kops[k])
			continue;
		hist_init(kh);
		for (int i = 0; i < n; i++)
			hist_merge(kh, &runs[i].kind[k]);
		row(f, cb_kind_name(k), kops[k], 0, secs, kh);
	}
	if (kops[CB_K_WATCH])
		fprintf(f,
			"  (events seen by %u watchers. watch: latency from the put's response to "
			"the event, %" PRIu64 " events came before the response and count as 0; "
			"watch-put: from the put's start to the event)\n",
			o->watchers, early);
	if (errors) {
		fprintf(f, "\nerrors by code:");
		for (int c = 0; c < 17; c++)
			if (codes[c])
				fprintf(f, " %s %" PRIu64, cairn_code_name(c), codes[c]);
		fputc('\n', f);
	}
	uint64_t breaks = 0, wcanceled = 0;
	for (int i = 0; i < n; i++) {
		breaks += runs[i].watch_chain_breaks;
		wcanceled += runs[i].watch_canceled;
	}
	if (o->workload == CB_W_K8S && o->watchers > 0)
		fprintf(f,
			"watch order (prev_kv of each event = the watcher's previous value of the "
			"key): %s, %" PRIu64 " breaks (lost, repeated or reordered events)\n",
			breaks ? "BROKEN" : "ok", breaks);
	if (wcanceled)
		fprintf(f, "watches cancelled by the server: %" PRIu64 "\n", wcanceled);
	if (local)
		fprintf(f, "requests libcairn refused to start (retried 1 ms later): %" PRIu64 "\n",
			local);
	if (conflicts)
		fprintf(f, "compare-and-swap conflicts (compare failed, not errors): %" PRIu64 "\n",
			conflicts);
	if (cancelled)
		fprintf(f,
			"requests still in flight at the end (cancelled, not counted): %" PRIu64
			"\n",
			cancelled);

	int nf = 0;
	for (int i = 0; i < n; i++)
		if (runs[i].n_faults > nf)
			nf = runs[i].n_faults;
	if (nf > 0) {
		fprintf(f, "\nfaults (unavailability: from the injection to the end of the first "
			   "successful write started after it):\n");
		fprintf(f, "%-28s %7s %12s %14s %8s %11s\n", "fault", "at s", "unavail ms",
			"new leader ms", "errors", "p99 5s ms");
		for (int fi = 0; fi < nf; fi++) {
			double un[CB_MAX_RUNS], nl[CB_MAX_RUNS], p99[CB_MAX_RUNS], at = 0;
			int kun = 0, knl = 0, kp = 0;
			uint64_t ferr = 0;
			const char *text = "?";
			for (int i = 0; i < n; i++) {
				if (fi >= runs[i].n_faults)
					continue;
				const struct cb_fault_fig *ff = &runs[i].faults[fi];
				text = ff->text;
				at = ff->at_s;
				if (ff->rc < 0) {
					fprintf(f, "  run %d: %s failed: %s\n", i + 1, ff->text,
						ff->err);
					continue;
				}
				if (ff->unavail_ms >= 0)
					un[kun++] = ff->unavail_ms;
				if (ff->new_leader_ms >= 0)
					nl[knl++] = ff->new_leader_ms;
				p99[kp++] = ms(ff->p99_5s_ns);
				ferr += ff->errors;
			}
			char u[32], l[32];
			double mu = median_of(un, kun), ml = median_of(nl, knl);
			if (mu >= 0)
				snprintf(u, sizeof u, "%.1f", mu);
			else
				snprintf(u, sizeof u, "none");
			if (ml >= 0)
				snprintf(l, sizeof l, "%.1f", ml);
			else
				snprintf(l, sizeof l, "-");
			fprintf(f, "%-28s %7.2f %12s %14s %8" PRIu64 " %11.3f\n", text, at, u, l,
				n > 0 ? ferr / (uint64_t)n : 0, median_of(p99, kp));
			if (n > 1) {
				fprintf(f, "  unavailability per run (ms):");
				for (int i = 0; i < n; i++) {
					if (fi < runs[i].n_faults &&
					    runs[i].faults[fi].unavail_ms >= 0)
						fprintf(f, " %.1f", runs[i].faults[fi].unavail_ms);
					else
						fprintf(f, " none");
				}
				fprintf(f, "  (median of %d; errors: the mean per run)\n", kun);
			}
		}
		if (o->rate <= 0)
			fprintf(f,
				"  (closed loop: a client waiting on a stalled request starts no new "
				"write; --rate gives a finer measure)\n");
	}

	bool overflow;
	int v = overall_verdict(runs, n, &overflow);
	if (o->check) {
		size_t hops = 0;
		uint64_t bad = 0, unknown = 0, serial = 0;
		double cs = 0;
		for (int i = 0; i < n; i++) {
			hops += runs[i].check.ops;
			bad += runs[i].check.bad_values;
			unknown += runs[i].check.unknown;
			serial += runs[i].check.skipped_serializable;
			cs += runs[i].check.check_s;
		}
		fprintf(f, "\nlinearizability: %s",
			overflow ? "not checked" :
			v < 0    ? "not checked" :
				   lin_verdict_name(v));
		if (overflow)
			fprintf(f, " (the history passed --max-history %" PRIu64 " ops)",
				o->max_history);
		else
			fprintf(f,
				" (%zu ops, %" PRIu64
				" with an unknown outcome, checked in %.2f s)",
				hops, unknown, cs);
		fputc('\n', f);
		if (bad)
			fprintf(f,
				"  %" PRIu64 " reads returned a value no write of this run wrote "
				"(it does not decode): a violation\n",
				bad);
		if (serial)
			fprintf(f,
				"  %" PRIu64 " serializable reads were not checked (they may be "
				"stale by design)\n",
				serial);
		for (int i = 0; i < n; i++)
			if (runs[i].check.report && runs[i].check.verdict != LIN_OK) {
				fprintf(f, "%srun %d:\n%s\n", n > 1 ? "" : "", i + 1,
					runs[i].check.report);
			}
	}
	for (int i = 0; i < n; i++)
		if (runs[i].failure[0])
			fprintf(f, "run %d failed: %s\n", i + 1, runs[i].failure);
	for (int i = 0; i < n; i++)
		if (runs[i].interrupted) {
			fprintf(f,
				"interrupted: the figures cover the time before the interruption\n");
			break;
		}
	free(all);
	free(kh);
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* A number JSON accepts: -1 stands for "none" where a figure is missing. */
static void json_num(FILE *f, double v)
{
	if (!isfinite(v))
		fputs("null", f);
	else
		fprintf(f, "%.6g", v);
}

static void json_lat(FILE *f, const struct hist *h)
{
	fprintf(f, "{\"count\": %" PRIu64 ", \"p50_ms\": ", hist_count(h));
	json_num(f, ms(hist_percentile(h, 50)));
	fputs(", \"p90_ms\": ", f);
	json_num(f, ms(hist_percentile(h, 90)));
	fputs(", \"p99_ms\": ", f);
	json_num(f, ms(hist_percentile(h, 99)));
	fputs(", \"p999_ms\": ", f);
	json_num(f, ms(hist_percentile(h, 99.9)));
	fputs(", \"max_ms\": ", f);
	json_num(f, ms(hist_max(h)));
	fputs(", \"mean_ms\": ", f);
	json_num(f, hist_mean(h) / 1e6);
	fputc('}', f);
}

static void json_run(FILE *f, const struct cb_result *r)
{
	fputs("    {\"system\": ", f);
	json_str(f, r->system);
	fputs(", \"endpoints\": ", f);
	json_str(f, r->endpoints);
	fprintf(f, ", \"elapsed_s\": %.3f, \"ops\": %" PRIu64 ", \"ops_per_s\": ", r->elapsed_s,
		r->ops);
	json_num(f, r->elapsed_s > 0 ? (double)r->ops / r->elapsed_s : 0);
	fprintf(f,
		", \"errors\": %" PRIu64 ", \"warmup_ops\": %" PRIu64
		", \"cancelled_at_end\": %" PRIu64 ", \"local_errors\": %" PRIu64
		", \"conflicts\": %" PRIu64 ", \"interrupted\": %s,\n     \"latency\": ",
		r->errors, r->warmup_ops, r->cancelled_at_end, r->local_errors, r->conflicts,
		r->interrupted ? "true" : "false");
	json_lat(f, &r->all);
	fputs(",\n     \"ops_by_kind\": {", f);
	bool first = true;
	for (int k = 0; k < CB_K_COUNT; k++) {
		if (!r->kind_ops[k])
			continue;
		fprintf(f,
			"%s\n       \"%s\": {\"ops\": %" PRIu64 ", \"errors\": %" PRIu64
			", \"latency\": ",
			first ? "" : ",", cb_kind_name(k), r->kind_ops[k], r->kind_errors[k]);
		json_lat(f, &r->kind[k]);
		fputc('}', f);
		first = false;
	}
	fputs("},\n     \"errors_by_code\": {", f);
	first = true;
	for (int c = 0; c < 17; c++) {
		if (!r->errors_by_code[c])
			continue;
		fprintf(f, "%s\"%s\": %" PRIu64, first ? "" : ", ", cairn_code_name(c),
			r->errors_by_code[c]);
		first = false;
	}
	fprintf(f,
		"},\n     \"watch_events_before_response\": %" PRIu64
		", \"watch_chain_breaks\": %" PRIu64 ", \"watches_cancelled\": %" PRIu64
		",\n     \"faults\": [",
		r->watch_early, r->watch_chain_breaks, r->watch_canceled);
	for (int i = 0; i < r->n_faults; i++) {
		const struct cb_fault_fig *ff = &r->faults[i];
		fprintf(f, "%s\n       {\"fault\": ", i ? "," : "");
		json_str(f, ff->text);
		fputs(", \"kind\": ", f);
		json_str(f, cl_fault_kind_name((enum cl_fault_kind)ff->kind));
		fprintf(f, ", \"ok\": %s, \"error\": ", ff->rc == 0 ? "true" : "false");
		json_str(f, ff->err);
		fputs(", \"at_s\": ", f);
		json_num(f, ff->at_s);
		fputs(", \"unavailability_ms\": ", f);
		if (ff->unavail_ms >= 0)
			json_num(f, ff->unavail_ms);
		else
			fputs("null", f);
		fputs(", \"new_leader_ms\": ", f);
		if (ff->new_leader_ms >= 0)
			json_num(f, ff->new_leader_ms);
		else
			fputs("null", f);
		fprintf(f,
			", \"leader_changed\": %s, \"errors\": %" PRIu64
			", \"window_s\": %.3f, \"window_ops\": %" PRIu64 ", \"p99_5s_ms\": ",
			ff->leader_changed ? "true" : "false", ff->errors, ff->window_s,
			ff->window_ops);
		json_num(f, ms(ff->p99_5s_ns));
		fputc('}', f);
	}
	fputs("],\n     \"check\": ", f);
	const struct cb_check_res *c = &r->check;
	if (!c->enabled) {
		fputs("null", f);
	} else {
		fputs("{\"verdict\": ", f);
		json_str(f, c->overflow    ? "not checked" :
			    c->verdict < 0 ? "not checked" :
					     lin_verdict_name(c->verdict));
		fprintf(f,
			", \"history_overflow\": %s, \"ops\": %zu, \"unknown_outcome\": %" PRIu64
			", \"undecodable_values\": %" PRIu64
			", \"serializable_unchecked\": %" PRIu64
			", \"partitions\": %zu, \"check_s\": %.3f, \"report\": ",
			c->overflow ? "true" : "false", c->ops, c->unknown, c->bad_values,
			c->skipped_serializable, c->partitions, c->check_s);
		if (c->report)
			json_str(f, c->report);
		else
			fputs("null", f);
		fputc('}', f);
	}
	fputs(",\n     \"series\": [", f);
	for (size_t i = 0; i < r->n_secs; i++) {
		const struct cb_sec *s = &r->secs[i];
		fprintf(f,
			"%s\n       {\"t\": %zu, \"ops\": %" PRIu64 ", \"errors\": %" PRIu64
			", \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}",
			i ? "," : "", i, s->ops, s->errors, ms(s->p50), ms(s->p99), ms(s->max));
	}
	fputs("],\n     \"failure\": ", f);
	if (r->failure[0])
		json_str(f, r->failure);
	else
		fputs("null", f);
	fputc('}', f);
}

int cb_report_json(const char *path, const struct cb_opts *o, const struct cb_result *runs, int n)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "cairn-bench: --json %s: %s\n", path, strerror(errno));
		return -1;
	}
	fputs("{\n  \"config\": {\"workload\": ", f);
	json_str(f, cb_workload_name(o->workload));
	fprintf(f, ", \"clients\": %u, \"conns\": %u, \"rate\": ", o->clients, o->conns);
	json_num(f, o->rate);
	fprintf(f,
		", \"duration_s\": %.3f, \"count\": %" PRIu64 ", \"warmup_s\": %.3f"
		", \"key_size\": %u, \"val_size\": %u, \"key_space\": %" PRIu64
		", \"sequential\": %s, \"serializable\": %s, \"prefix\": %s, \"limit\": %" PRId64
		", \"watchers\": %u, \"timeout_ms\": %" PRIu64 ", \"check\": %s, \"seed\": %" PRIu64
		", \"runs\": %d, \"self_started\": %s, \"faults\": [",
		o->duration_s, o->count, o->warmup_s, o->key_size, o->val_size, o->key_space,
		o->sequential ? "true" : "false", o->serializable ? "true" : "false",
		o->prefix ? "true" : "false", o->limit, o->watchers, o->timeout_ms,
		o->check ? "true" : "false", o->seed, o->runs, o->self_start ? "true" : "false");
	for (int i = 0; i < o->n_faults; i++) {
		if (i)
			fputs(", ", f);
		json_str(f, o->faults[i].text);
	}
	fputs("]},\n  \"runs\": [\n", f);
	for (int i = 0; i < n; i++) {
		json_run(f, &runs[i]);
		fputs(i + 1 < n ? ",\n" : "\n", f);
	}
	/* The summary: what a comparison reads. */
	double secs = 0;
	uint64_t ops = 0, errors = 0;
	struct hist *all = malloc(sizeof *all);
	if (all)
		hist_init(all);
	for (int i = 0; i < n; i++) {
		secs += runs[i].elapsed_s;
		ops += runs[i].ops;
		errors += runs[i].errors;
		if (all)
			hist_merge(all, &runs[i].all);
	}
	fprintf(f,
		"  ],\n  \"summary\": {\"ops\": %" PRIu64 ", \"errors\": %" PRIu64
		", \"ops_per_s\": ",
		ops, errors);
	json_num(f, secs > 0 ? (double)ops / secs : 0);
	fputs(", \"latency\": ", f);
	if (all)
		json_lat(f, all);
	else
		fputs("null", f);
	free(all);
	fputs(", \"unavailability_median_ms\": [", f);
	int nf = 0;
	for (int i = 0; i < n; i++)
		if (runs[i].n_faults > nf)
			nf = runs[i].n_faults;
	for (int i = 0; i < nf; i++) {
		double m = cb_median_unavail(runs, n, i);
		if (i)
			fputs(", ", f);
		if (m >= 0)
			json_num(f, m);
		else
			fputs("null", f);
	}
	fputs("], \"new_leader_median_ms\": [", f);
	for (int i = 0; i < nf; i++) {
		double v[CB_MAX_RUNS];
		int k = 0;
		for (int r = 0; r < n; r++)
			if (i < runs[r].n_faults && runs[r].faults[i].new_leader_ms >= 0)
				v[k++] = runs[r].faults[i].new_leader_ms;
		double m = median_of(v, k);
		if (i)
			fputs(", ", f);
		if (m >= 0)
			json_num(f, m);
		else
			fputs("null", f);
	}
	bool overflow;
	int v = overall_verdict(runs, n, &overflow);
	fputs("], \"verdict\": ", f);
	if (!o->check)
		fputs("null", f);
	else
		json_str(f, overflow || v < 0 ? "not checked" : lin_verdict_name(v));
	fputs(", \"failures\": [", f);
	bool first = true;
	for (int i = 0; i < n; i++) {
		if (!runs[i].failure[0])
			continue;
		if (!first)
			fputs(", ", f);
		json_str(f, runs[i].failure);
		first = false;
	}
	fputs("]}\n}\n", f);
	if (fclose(f) != 0) {
		fprintf(stderr, "cairn-bench: --json %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- CSV ---- */

int cb_report_csv(const char *path, const struct cb_result *runs, int n)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "cairn-bench: --csv %s: %s\n", path, strerror(errno));
		return -1;
	}
	/* One row per second of each run; then one row per fault (event set, t its injection). */
	fputs("run,t,ops,errors,p50_ms,p99_ms,max_ms,event,unavailability_ms,new_leader_ms\n", f);
	for (int i = 0; i < n; i++) {
		const struct cb_result *r = &runs[i];
		for (size_t s = 0; s < r->n_secs; s++)
			fprintf(f, "%d,%zu,%" PRIu64 ",%" PRIu64 ",%.3f,%.3f,%.3f,,,\n", i + 1, s,
				r->secs[s].ops, r->secs[s].errors, ms(r->secs[s].p50),
				ms(r->secs[s].p99), ms(r->secs[s].max));
		for (int k = 0; k < r->n_faults; k++) {
			const struct cb_fault_fig *ff = &r->faults[k];
			fprintf(f, "%d,%.3f,,,,,,%s,", i + 1, ff->at_s, ff->text);
			if (ff->unavail_ms >= 0)
				fprintf(f, "%.1f", ff->unavail_ms);
			fputc(',', f);
			if (ff->new_leader_ms >= 0)
				fprintf(f, "%.1f", ff->new_leader_ms);
			fputc('\n', f);
		}
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "cairn-bench: --csv %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- the plot, through gnuplot ---- */

int cb_report_plot(const char *path, const struct cb_opts *o, const struct cb_result *r)
{
	char dir[] = "/tmp/cairn-bench-plot.XXXXXX";
	if (!mkdtemp(dir)) {
		fprintf(stderr, "cairn-bench: --plot: mkdtemp: %s\n", strerror(errno));
		return -1;
	}
	char data[64], script[64];
	snprintf(data, sizeof data, "%s/series.dat", dir);
	snprintf(script, sizeof script, "%s/plot.gp", dir);
	int ret = -1;
	FILE *d = fopen(data, "w");
	FILE *g = d ? fopen(script, "w") : NULL;
	if (!d || !g) {
		fprintf(stderr, "cairn-bench: --plot: %s: %s\n", dir, strerror(errno));
		if (d)
			fclose(d);
		goto out;
	}
	/* Each second is drawn from its start to its end: a step plot of the successes. */
	fputs("# t ok/s p99_ms errors/s\n", d);
	for (size_t s = 0; s < r->n_secs; s++)
		fprintf(d, "%zu %" PRIu64 " %.3f %" PRIu64 "\n", s,
			r->secs[s].ops - r->secs[s].errors, ms(r->secs[s].p99), r->secs[s].errors);
	if (r->n_secs > 0)
		fprintf(d, "%zu %" PRIu64 " %.3f %" PRIu64 "\n", r->n_secs,
			r->secs[r->n_secs - 1].ops - r->secs[r->n_secs - 1].errors,
			ms(r->secs[r->n_secs - 1].p99), r->secs[r->n_secs - 1].errors);
	fclose(d);
	size_t n = strlen(path);
	bool svg = strcmp(path + n - 4, ".svg") == 0;
	fprintf(g, "set terminal %s size 1000,700%s\n", svg ? "svg dynamic" : "pngcairo",
		svg ? "" : " noenhanced");
	fputs("set output '", g);
	for (const char *p = path; *p; p++) {
		if (*p == '\'')
			fputc('\'', g);
		fputc(*p, g);
	}
	fputs("'\nset multiplot layout 2,1\nset grid\nset key below horizontal\n", g);
	fprintf(g, "set title \"%s, %s workload, %u %s%s\" noenhanced\n", r->system,
		cb_workload_name(o->workload), o->rate > 0 ? (unsigned)o->rate : o->clients,
		o->rate > 0 ? "requests/s" : "clients", o->runs > 1 ? " (run 1)" : "");
	for (int k = 0; k < r->n_faults; k++) {
		const struct cb_fault_fig *ff = &r->faults[k];
		if (ff->rc < 0)
			continue;
		fprintf(g,
			"set arrow %d from %.3f, graph 0 to %.3f, graph 1 nohead lc rgb 'red' "
			"dt 2\n",
			k + 1, ff->at_s, ff->at_s);
		fprintf(g,
			"set label %d \"%s\" at %.3f, graph 0.95 left offset 0.5,0 tc rgb 'red' "
			"noenhanced\n",
			k + 1, ff->text, ff->at_s);
	}
	fprintf(g,
		"set xlabel 'seconds'\nset ylabel 'ops/s'\nset yrange [0:*]\n"
		"plot '%s' using 1:2 with steps lw 2 lc rgb '#1f77b4' title 'successful', "
		"'' using 1:4 with steps lw 1 lc rgb '#ff7f0e' title 'errors'\n",
		data);
	/* Linear: a second without a success draws as 0 rather than a gap. */
	fputs("unset title\nset ylabel 'p99 ms'\nset yrange [0:*]\n", g);
	fprintf(g,
		"plot '%s' using 1:3 with steps lw 2 lc rgb '#d62728' "
		"title 'p99 of the successful'\n"
		"unset multiplot\n",
		data);
	fclose(g);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "cairn-bench: --plot: fork: %s\n", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
		fprintf(stderr, "cairn-bench: --plot: gnuplot is not installed (Debian: apt-get "
				"install gnuplot-nox); use --csv for the data\n");
	} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "cairn-bench: --plot: gnuplot failed on %s\n", path);
	} else {
		ret = 0;
	}
out:
	unlink(data);
	unlink(script);
	rmdir(dir);
	return ret;
}
