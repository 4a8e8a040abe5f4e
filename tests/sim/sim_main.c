/* sim_main.c: raft-sim's command line: runs seeds, prints one line per
 * failing seed with the command that replays it, and a last line
 * "raft-sim: <N> seeds, <V> violations". Exits 1 on any violation.
 *
 *   raft-sim [--seeds N] [--first-seed S] [--seed S] [--nodes K] [--steps M]
 *            [--scenario NAME] [--verbose] [--demo] [--check-determinism]
 *            [--jobs J] [--stats]
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

#define DEFAULT_SEEDS 100
#define DEFAULT_STEPS 20000
#define MAX_JOBS 64

struct cli {
	uint64_t seeds;
	uint64_t first;
	uint32_t jobs;
	bool determinism;
	bool stats;
	bool demo;
	struct sim_opts o;
	const char *argv0;
};

static void usage(FILE *f)
{
	fputs("usage: raft-sim [--seeds N] [--first-seed S] [--seed S] [--nodes K] [--steps M]\n"
	      "                [--scenario NAME] [--verbose] [--demo] [--check-determinism]\n"
	      "                [--jobs J] [--stats]\n"
	      "  --seeds N            run N seeds (default 100) from --first-seed (default 1)\n"
	      "  --seed S             run the one seed S\n"
	      "  --nodes K            cluster size (default: 3, 5 or 7, drawn per seed)\n"
	      "  --steps M            events in the fault phase (default 20000)\n"
	      "  --scenario NAME      mixed (default), basic, partition, crash, membership,\n"
	      "                       snapshot, transfer, commit-rule\n"
	      "  --verbose            print the trace of every event\n"
	      "  --demo               a narrated 5-node run\n"
	      "  --check-determinism  run each seed twice and compare the trace hashes\n"
	      "  --jobs J             run seeds in J processes (default 1)\n"
	      "  --stats              print what the seeds exercised\n",
	      f);
}

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

static int parse_args(int argc, char **argv, struct cli *c)
{
	memset(c, 0, sizeof(*c));
	c->seeds = DEFAULT_SEEDS;
	c->first = 1;
	c->jobs = 1;
	c->o.kind = -1;
	c->o.steps = DEFAULT_STEPS;
	c->o.out = stdout;
	c->argv0 = argv[0];
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t x = 0;
		if (strcmp(a, "--verbose") == 0) {
			c->o.verbose = true;
		} else if (strcmp(a, "--demo") == 0) {
			c->demo = true;
		} else if (strcmp(a, "--check-determinism") == 0) {
			c->determinism = true;
		} else if (strcmp(a, "--stats") == 0) {
			c->stats = true;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		} else if (strcmp(a, "--scenario") == 0 && v != NULL) {
			if (strcmp(v, "mixed") == 0) {
				c->o.kind = -1;
			} else if ((c->o.kind = sim_kind_parse(v)) < 0) {
				fprintf(stderr, "raft-sim: unknown scenario '%s'\n", v);
				return -1;
			}
			i++;
		} else if (v != NULL && parse_u64(v, &x)) {
			if (strcmp(a, "--seeds") == 0 && x > 0) {
				c->seeds = x;
			} else if (strcmp(a, "--first-seed") == 0) {
				c->first = x;
			} else if (strcmp(a, "--seed") == 0) {
				c->first = x;
				c->seeds = 1;
			} else if (strcmp(a, "--nodes") == 0 && x >= 1 && x <= 9) {
				c->o.nodes = (uint32_t)x;
			} else if (strcmp(a, "--steps") == 0 && x > 0 && x <= 100000000ULL) {
				c->o.steps = x;
			} else if (strcmp(a, "--jobs") == 0 && x >= 1 && x <= MAX_JOBS) {
				c->jobs = (uint32_t)x;
			} else {
				fprintf(stderr, "raft-sim: bad value '%s' for %s\n", v, a);
				return -1;
			}
			i++;
		} else {
			fprintf(stderr, "raft-sim: unknown or incomplete option '%s'\n", a);
			usage(stderr);
			return -1;
		}
	}
	return 0;
}

/* If the core aborts (a failed assertion) or faults, the seed's replay line
 * is still printed: it is prepared before each seed, written from the
 * handler with write(2), which is async-signal-safe. */
static char crash_line[768];
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

static int replay_line(const struct cli *c, uint64_t seed, const struct sim *s, char *buf, size_t cap)
{
	return snprintf(buf, cap, "%s --seed %" PRIu64 " --nodes %u --scenario %s --steps %" PRIu64
			" --verbose",
			c->argv0, seed, s->p.nodes, sim_kind_name(s->p.kind), c->o.steps);
}

static void add_stats(struct sim_stats *a, const struct sim_stats *b)
{
	const uint64_t *src = (const uint64_t *)(const void *)b;
	uint64_t *dst = (uint64_t *)(void *)a;
	_Static_assert(sizeof(struct sim_stats) % sizeof(uint64_t) == 0, "stats are all u64");
	for (size_t i = 0; i < sizeof(*a) / sizeof(uint64_t); i++) {
		/* liveness_ms_max is a maximum, not a sum. */
		if (&dst[i] == &a->liveness_ms_max)
			dst[i] = src[i] > dst[i] ? src[i] : dst[i];
		else
			dst[i] += src[i];
	}
}

/* Run one seed (twice with --check-determinism). Returns true if it failed;
 * the line to print is in line. */
static bool run_seed(const struct cli *c, uint64_t seed, struct sim *s, struct sim_stats *total,
		     char *line, size_t cap)
{
	struct sim_opts o = c->o;
	o.hash_trace = c->determinism;

	/* Prepare the crash line: parameters come from the seed alone. */
	sim_init(s, &o, seed);
	char replay[512];
	replay_line(c, seed, s, replay, sizeof(replay));
	int k = snprintf(crash_line, sizeof(crash_line), "seed %" PRIu64 ": the process crashed -- replay: %s\n",
			 seed, replay);
	crash_len = k > 0 ? strlen(crash_line) : 0;
	fflush(stdout);

	sim_run(s);
	sim_fini(s);
	add_stats(total, &s->st);
	bool failed = s->failed;
	char why[SIM_WHY];
	snprintf(why, sizeof(why), "%s", s->why);
	uint64_t h1 = s->trace_hash;
	if (!failed && c->determinism) {
		sim_init(s, &o, seed);
		sim_run(s);
		sim_fini(s);
		if (s->failed || s->trace_hash != h1) {
			failed = true;
			snprintf(why, sizeof(why),
				 "nondeterministic: a second run of the seed %s (trace hash %016" PRIx64
				 " then %016" PRIx64 ")",
				 s->failed ? "failed" : "differs", h1, s->trace_hash);
		}
	}
	crash_len = 0;
	if (failed)
		snprintf(line, cap, "seed %" PRIu64 ": %s -- replay: %s\n", seed, why, replay);
	return failed;
}

struct tally {
	uint64_t seeds;
	uint64_t violations;
	struct sim_stats st;
};

static void run_range(const struct cli *c, uint32_t job, uint32_t jobs, struct tally *t)
{
	struct sim *s = malloc(sizeof(*s));
	if (s == NULL) {
		fprintf(stderr, "raft-sim: out of memory\n");
		exit(2);
	}
	char line[SIM_WHY + 1024];
	for (uint64_t i = job; i < c->seeds; i += jobs) {
		uint64_t seed = c->first + i;
		if (run_seed(c, seed, s, &t->st, line, sizeof(line))) {
			t->violations++;
			fputs(line, stdout);
			fflush(stdout);
		}
		t->seeds++;
	}
	free(s);
}

/* --jobs: seeds are dealt round-robin to worker processes; each reports its
 * tally through a pipe. Failure lines are printed by the workers as found. */
static int run_jobs(const struct cli *c, struct tally *t)
{
	int fds[MAX_JOBS];
	pid_t pids[MAX_JOBS];
	fflush(stdout);
	for (uint32_t j = 0; j < c->jobs; j++) {
		int p[2];
		if (pipe(p) != 0)
			return -1;
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0) {
			close(p[0]);
			struct tally mine;
			memset(&mine, 0, sizeof(mine));
			run_range(c, j, c->jobs, &mine);
			const char *b = (const char *)&mine;
			size_t left = sizeof(mine);
			while (left > 0) {
				ssize_t w = write(p[1], b, left);
				if (w <= 0)
					_exit(2);
				b += w;
				left -= (size_t)w;
			}
			_exit(0);
		}
		close(p[1]);
		fds[j] = p[0];
		pids[j] = pid;
	}
	for (uint32_t j = 0; j < c->jobs; j++) {
		struct tally part;
		char *b = (char *)&part;
		size_t got = 0;
		while (got < sizeof(part)) {
			ssize_t r = read(fds[j], b + got, sizeof(part) - got);
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		close(fds[j]);
		int status = 0;
		waitpid(pids[j], &status, 0);
		if (got != sizeof(part) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			/* A worker that died (the core aborted) counts as a violation;
			 * its replay line was printed by the signal handler. */
			t->violations++;
			continue;
		}
		t->seeds += part.seeds;
		t->violations += part.violations;
		add_stats(&t->st, &part.st);
	}
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	timespec_get(&ts, TIME_UTC);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_stats(const struct tally *t, double secs)
{
	const struct sim_stats *st = &t->st;
	printf("raft-sim stats: %" PRIu64 " steps, %.1f simulated s, %.2f s wall (%.1f seeds/s)\n"
	       "  kinds: basic %" PRIu64 " partition %" PRIu64 " crash %" PRIu64 " membership %" PRIu64
	       " snapshot %" PRIu64 " transfer %" PRIu64 " commit-rule %" PRIu64 "\n"
	       "  commit-rule rounds: %" PRIu64 " started, %" PRIu64 " old side back, %" PRIu64
	       " cut off again, %" PRIu64 " rival back\n"
	       "  messages: %" PRIu64 " sent, %" PRIu64 " delivered, %" PRIu64 " dropped, %" PRIu64
	       " duplicated\n"
	       "  leaders elected %" PRIu64 ", entries committed %" PRIu64 ", proposals %" PRIu64
	       " (%" PRIu64 " refused)\n"
	       "  reads: %" PRIu64 " issued, %" PRIu64 " served, %" PRIu64 " failed\n"
	       "  crashes %" PRIu64 " (%" PRIu64 " lost a write in flight), partitions %" PRIu64
	       ", transfers %" PRIu64 "\n"
	       "  snapshots: %" PRIu64 " taken, %" PRIu64 " installed; conf changes applied %" PRIu64
	       "\n"
	       "  slowest recovery after faults: %" PRIu64 " ms\n",
	       st->steps, (double)st->sim_ms / 1000.0, secs, secs > 0 ? (double)t->seeds / secs : 0.0,
	       st->kinds[SIM_BASIC], st->kinds[SIM_PARTITION], st->kinds[SIM_CRASH],
	       st->kinds[SIM_MEMBERSHIP], st->kinds[SIM_SNAPSHOT], st->kinds[SIM_TRANSFER],
	       st->kinds[SIM_COMMIT_RULE], st->cr_rounds, st->cr_returns, st->cr_cuts, st->cr_rivals,
	       st->msgs_sent, st->msgs_delivered, st->msgs_dropped, st->msgs_duplicated,
	       st->leaders_elected, st->entries_committed, st->proposals, st->proposals_refused,
	       st->reads_issued, st->reads_served, st->reads_failed, st->crashes, st->lost_writes,
	       st->partitions, st->transfers, st->snapshots_taken, st->snapshots_installed,
	       st->conf_changes_applied, st->liveness_ms_max);
}

int main(int argc, char **argv)
{
	struct cli c;
	if (parse_args(argc, argv, &c) != 0)
		return 2;
	if (c.demo)
		return sim_demo(stdout) == 0 ? 0 : 1;

	signal(SIGABRT, on_fatal);
	signal(SIGSEGV, on_fatal);
	signal(SIGBUS, on_fatal);
	signal(SIGFPE, on_fatal);
	signal(SIGILL, on_fatal);

	struct tally t;
	memset(&t, 0, sizeof(t));
	double t0 = now_s();
	if (c.jobs > 1 && c.seeds > 1 && !c.o.verbose) {
		if (run_jobs(&c, &t) != 0) {
			fprintf(stderr, "raft-sim: cannot start workers: %s\n", strerror(errno));
			return 2;
		}
	} else {
		run_range(&c, 0, 1, &t);
	}
	if (c.stats)
		print_stats(&t, now_s() - t0);
	printf("raft-sim: %" PRIu64 " seeds, %" PRIu64 " violations\n", t.seeds, t.violations);
	return t.violations ? 1 : 0;
}
