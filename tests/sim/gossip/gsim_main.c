/* gsim_main.c: gossip-sim's command line. Runs seeds, prints each run's report (one line each
 * when several seeds run), and for a failing seed the reason and the exact command that
 * replays it. Exits 1 on any violation, 2 on a usage error.
 *
 *   gossip-sim [--seed S | --seeds N [--first-seed S]] [--scenario NAME] [--members N]
 *              [--duration S] [--loss PCT] ... [--check-determinism] [--verbose]
 *
 * Examples: the figures of docs/benchmarks.md
 *   gossip-sim --members 1000 --duration 600 --loss 5
 *   gossip-sim --members 1000 --duration 600 --scenario stall
 * and a failure's story, once its replay line is known
 *   gossip-sim --seed 7 --scenario partition --members 100 --duration 120 --watch m12
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gsim.h"

#define MAX_ARGS 64

static void usage(FILE *f)
{
	fputs("usage: gossip-sim [options]\n"
	      "  --seed S                run the one seed S (default 1)\n"
	      "  --seeds N               run N seeds from --first-seed S (default 1)\n"
	      "  --scenario NAME         steady (default), stall, partition, churn, mixed\n"
	      "  --members N             initial members (default 100)\n"
	      "  --duration S            seconds of faults after the pool formed (default 300)\n"
	      "  --loss PCT              datagram loss in percent, e.g. 5 or 0.5 (default 0)\n"
	      "  --latency MS            one-way latency (default 1)\n"
	      "  --jitter MS             plus uniform 0..MS (default 4)\n"
	      "  --crash-every S         mean seconds between crashes (0: none)\n"
	      "  --update-every S        ... metadata updates\n"
	      "  --stall-every S         ... stalls\n"
	      "  --stall-min S, --stall-max S   stall length (default 1..30)\n"
	      "  --stall-mode M          queue, drop or either (default) for inbound datagrams\n"
	      "  --partition-every S     ... partitions\n"
	      "  --partition-min S, --partition-max S  partition length (default 5..25)\n"
	      "  --partition-pct P       largest minority cut off, percent (default 30)\n"
	      "  --join-every S          ... joins\n"
	      "  --leave-every S         ... graceful leaves\n"
	      "  --probe-interval MS, --probe-timeout MS, --suspicion-mult K,\n"
	      "  --suspicion-max-mult K, --gossip-interval MS, --retransmit-mult K,\n"
	      "  --pushpull-interval MS  the cores' configuration (default memberlist's LAN)\n"
	      "  --quiet-max S           bound for convergence after faults stop\n"
	      "  --fp-check-loss PCT     a plain false positive fails the run at loss up to PCT\n"
	      "                          (default 0; 100: always)\n"
	      "  --check-determinism     run each seed twice; the reports must be identical\n"
	      "  --verbose               trace faults, phases, incidents and completions\n"
	      "  --watch NAME            --verbose, and every view change by or about member NAME\n"
	      "  --watch-packets         with --watch: every datagram NAME sends or receives,\n"
	      "                          decoded (--watch '*': every datagram of the run)\n",
	      f);
}

struct cli {
	uint64_t seeds, first;
	bool determinism;
	struct gsim_opts o;
	struct gsim_params p;
	/* The arguments that shape a run, for the replay line. */
	const char *keep[MAX_ARGS];
	int n_keep;
};

static bool parse_u64(const char *s, uint64_t *out)
{
	if (s == NULL || *s == '\0' || *s == '-')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = v;
	return true;
}

/* A non-negative decimal scaled by `scale` (seconds to ms: 1000; percent to bp: 100). */
static bool parse_scaled(const char *s, uint64_t scale, uint64_t *out)
{
	if (s == NULL || *s == '\0' || *s == '-')
		return false;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !(v >= 0) || v > 1e12)
		return false;
	*out = (uint64_t)(v * (double)scale + 0.5);
	return true;
}

struct opt_u64 {
	const char *name;
	uint64_t scale; /* 0: an integer */
	size_t off;
	int width; /* 4 or 8 bytes */
	uint64_t max;
};

#define P(field) offsetof(struct gsim_params, field), (int)sizeof(((struct gsim_params *)0)->field)
static const struct opt_u64 opts[] = {
	{"--duration", 1000, P(duration_ms), 86400000},
	{"--loss", 100, P(loss_bp), 10000},
	{"--latency", 0, P(latency_ms), 10000},
	{"--jitter", 0, P(jitter_ms), 10000},
	{"--crash-every", 1000, P(crash_every_ms), 86400000},
	{"--update-every", 1000, P(update_every_ms), 86400000},
	{"--stall-every", 1000, P(stall_every_ms), 86400000},
	{"--stall-min", 1000, P(stall_min_ms), 3600000},
	{"--stall-max", 1000, P(stall_max_ms), 3600000},
	{"--partition-every", 1000, P(part_every_ms), 86400000},
	{"--partition-min", 1000, P(part_min_ms), 3600000},
	{"--partition-max", 1000, P(part_max_ms), 3600000},
	{"--partition-pct", 0, P(part_pct_max), 49},
	{"--join-every", 1000, P(join_every_ms), 86400000},
	{"--leave-every", 1000, P(leave_every_ms), 86400000},
	{"--probe-interval", 0, P(probe_interval_ms), 60000},
	{"--probe-timeout", 0, P(probe_timeout_ms), 60000},
	{"--suspicion-mult", 0, P(suspicion_mult), 100},
	{"--suspicion-max-mult", 0, P(suspicion_max_mult), 100},
	{"--gossip-interval", 0, P(gossip_interval_ms), 60000},
	{"--retransmit-mult", 0, P(retransmit_mult), 100},
	{"--pushpull-interval", 0, P(pushpull_interval_ms), 3600000},
	{"--quiet-max", 1000, P(quiet_max_ms), 86400000},
	{"--fp-check-loss", 100, P(fp_check_loss_bp), 10000},
};
#undef P

static void set_field(struct gsim_params *p, const struct opt_u64 *o, uint64_t v)
{
	char *base = (char *)p + o->off;
	if (o->width == 8) {
		memcpy(base, &v, 8);
	} else {
		uint32_t w = (uint32_t)v;
		memcpy(base, &w, 4);
	}
}

static int parse_args(int argc, char **argv, struct cli *c)
{
	memset(c, 0, sizeof(*c));
	c->seeds = 1;
	c->first = 1;
	c->o.out = stdout;
	/* First the scenario and size, whose defaults the other options override. */
	uint32_t scenario = GSIM_SC_STEADY;
	uint64_t members = 100;
	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--scenario") == 0) {
			int sc = gsim_scenario_parse(argv[i + 1]);
			if (sc < 0) {
				fprintf(stderr, "gossip-sim: unknown scenario '%s'\n", argv[i + 1]);
				return -1;
			}
			scenario = (uint32_t)sc;
		} else if (strcmp(argv[i], "--members") == 0) {
			if (!parse_u64(argv[i + 1], &members) || members < 2 ||
			    members > GSIM_MAX_MEMBERS / 2) {
				fprintf(stderr, "gossip-sim: --members wants 2..%u\n",
					GSIM_MAX_MEMBERS / 2);
				return -1;
			}
		}
	}
	gsim_scenario_defaults(&c->p, scenario, (uint32_t)members);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t x = 0;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		} else if (strcmp(a, "--verbose") == 0) {
			c->o.verbose = true;
		} else if (strcmp(a, "--watch") == 0 && v) {
			c->o.verbose = true;
			c->o.watch = v;
			i++;
		} else if (strcmp(a, "--watch-packets") == 0) {
			c->o.watch_packets = true;
		} else if (strcmp(a, "--check-determinism") == 0) {
			c->determinism = true;
		} else if ((strcmp(a, "--scenario") == 0 || strcmp(a, "--members") == 0) && v) {
			c->keep[c->n_keep++] = a;
			c->keep[c->n_keep++] = v;
			i++;
		} else if (strcmp(a, "--stall-mode") == 0 && v) {
			if (strcmp(v, "queue") == 0)
				c->p.stall_mode = GSIM_STALL_QUEUE;
			else if (strcmp(v, "drop") == 0)
				c->p.stall_mode = GSIM_STALL_DROP;
			else if (strcmp(v, "either") == 0)
				c->p.stall_mode = GSIM_STALL_EITHER;
			else {
				fprintf(stderr, "gossip-sim: --stall-mode wants queue, drop or either\n");
				return -1;
			}
			c->keep[c->n_keep++] = a;
			c->keep[c->n_keep++] = v;
			i++;
		} else if (strcmp(a, "--seed") == 0 && parse_u64(v, &x)) {
			c->first = x;
			c->seeds = 1;
			i++;
		} else if (strcmp(a, "--seeds") == 0 && parse_u64(v, &x) && x > 0) {
			c->seeds = x;
			i++;
		} else if (strcmp(a, "--first-seed") == 0 && parse_u64(v, &x)) {
			c->first = x;
			i++;
		} else {
			const struct opt_u64 *o = NULL;
			for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++)
				if (strcmp(a, opts[k].name) == 0)
					o = &opts[k];
			bool ok = o != NULL && v != NULL &&
				  (o->scale ? parse_scaled(v, o->scale, &x) : parse_u64(v, &x)) &&
				  x <= o->max;
			if (!ok) {
				fprintf(stderr, "gossip-sim: unknown option or bad value: %s %s\n", a,
					v ? v : "");
				usage(stderr);
				return -1;
			}
			set_field(&c->p, o, x);
			c->keep[c->n_keep++] = a;
			c->keep[c->n_keep++] = v;
			i++;
		}
		if (c->n_keep > MAX_ARGS - 2) {
			fprintf(stderr, "gossip-sim: too many options\n");
			return -1;
		}
	}
	if (c->o.watch_packets && c->o.watch == NULL) {
		fprintf(stderr, "gossip-sim: --watch-packets needs --watch NAME\n");
		return -1;
	}
	struct gsim_params *p = &c->p;
	if (p->stall_max_ms < p->stall_min_ms || p->part_max_ms < p->part_min_ms) {
		fprintf(stderr, "gossip-sim: a minimum above its maximum\n");
		return -1;
	}
	/* Slots for joiners: twice the expected count, and some. */
	uint64_t joins = p->join_every_ms ? 2 * p->duration_ms / p->join_every_ms + 16 : 0;
	if (p->members + joins > GSIM_MAX_MEMBERS) {
		fprintf(stderr, "gossip-sim: too many joins for %u slots\n", GSIM_MAX_MEMBERS);
		return -1;
	}
	p->max_slots = p->members + (uint32_t)joins;
	return 0;
}

static void replay_line(const struct cli *c, const char *argv0, uint64_t seed, char *buf,
			size_t cap)
{
	size_t n = 0;
	int k = snprintf(buf, cap, "%s --seed %" PRIu64, argv0, seed);
	if (k < 0)
		return;
	n = (size_t)k;
	for (int i = 0; i < c->n_keep && n < cap; i++) {
		k = snprintf(buf + n, cap - n, " %s", c->keep[i]);
		if (k < 0)
			return;
		n += (size_t)k;
	}
}

/* If a core aborts (a failed assertion) or faults, the seed's replay line is still printed:
 * prepared before each seed, written from the handler with write(2). */
static char crash_line[1024];
static size_t crash_len;

static void on_fatal(int sig)
{
	if (crash_len > 0) {
		ssize_t w = write(STDOUT_FILENO, crash_line, crash_len);
		(void)w;
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* One run; its report goes to a malloc()ed string. Returns false on a violation. */
static bool run_once(const struct cli *c, uint64_t seed, char **report, uint64_t *hash,
		     char *why, size_t cap)
{
	struct gsim *s = malloc(sizeof(*s));
	if (s == NULL) {
		snprintf(why, cap, "out of memory");
		return false;
	}
	bool ok = true;
	if (gsim_init(s, &c->o, &c->p, seed) != 0) {
		snprintf(why, cap, "cannot set up the run (out of memory?)");
		ok = false;
	} else {
		gsim_run(s);
		ok = !s->failed;
		if (!ok)
			snprintf(why, cap, "%s", s->why);
	}
	size_t len = 0;
	*report = NULL;
	FILE *f = open_memstream(report, &len);
	if (f != NULL) {
		if (ok)
			gsim_report(s, f);
		fclose(f);
	}
	*hash = s->trace_hash;
	gsim_fini(s);
	free(s);
	return ok;
}

int main(int argc, char **argv)
{
	struct cli c;
	if (parse_args(argc, argv, &c) != 0)
		return 2;
	const char *argv0 = "gossip-sim";
	signal(SIGABRT, on_fatal);
	signal(SIGSEGV, on_fatal);
	signal(SIGBUS, on_fatal);
	signal(SIGFPE, on_fatal);
	signal(SIGILL, on_fatal);

	uint64_t failures = 0;
	clock_t t0 = clock();
	for (uint64_t k = 0; k < c.seeds; k++) {
		uint64_t seed = c.first + k;
		char replay[900];
		replay_line(&c, argv0, seed, replay, sizeof(replay));
		int n = snprintf(crash_line, sizeof(crash_line),
				 "gossip-sim: seed %" PRIu64 ": the process crashed\n  replay: %s\n",
				 seed, replay);
		crash_len = n > 0 ? strlen(crash_line) : 0;
		fflush(stdout);

		clock_t c0 = clock();
		char why[GSIM_WHY];
		char *report = NULL;
		uint64_t h1 = 0;
		bool ok = run_once(&c, seed, &report, &h1, why, sizeof(why));
		if (ok && c.determinism) {
			char *again = NULL;
			uint64_t h2 = 0;
			bool ok2 = run_once(&c, seed, &again, &h2, why, sizeof(why));
			if (!ok2 || h1 != h2 || report == NULL || again == NULL ||
			    strcmp(report, again) != 0) {
				ok = false;
				snprintf(why, sizeof(why),
					 "nondeterministic: a second run %s (trace %016" PRIx64
					 " then %016" PRIx64 ")",
					 ok2 ? "differs" : "failed", h1, h2);
			}
			free(again);
		}
		crash_len = 0;
		double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
		if (!ok) {
			failures++;
			printf("gossip-sim: seed %" PRIu64 ": FAILED: %s\n  replay: %s\n", seed, why,
			       replay);
		} else if (c.seeds == 1 && report != NULL) {
			fputs(report, stdout);
			printf("  trace %016" PRIx64 ", %.1f s of CPU%s\n", h1, cpu,
			       c.determinism ? ", identical on a second run" : "");
		} else if (report != NULL) {
			/* One line: the report's first line and its detection figure. */
			const char *nl = strchr(report, '\n');
			int len = nl ? (int)(nl - report) : (int)strlen(report);
			printf("%.*s: ok (%.1f s CPU%s)\n", len, report, cpu,
			       c.determinism ? ", deterministic" : "");
		}
		free(report);
		fflush(stdout);
	}
	double total = (double)(clock() - t0) / CLOCKS_PER_SEC;
	printf("gossip-sim: %" PRIu64 " seeds, %" PRIu64 " failed, %.1f s of CPU\n", c.seeds,
	       failures, total);
	return failures ? 1 : 0;
}
