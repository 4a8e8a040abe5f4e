/* cb_opts.c: cairn-bench's command line: every flag, its default and its bound. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cb_bench.h"

static const char *const workload_names[CB_W_COUNT] = { "put",   "range", "txn", "mix",
							"watch", "lease", "k8s" };
static const char *const kind_names[CB_K_COUNT] = { "put",    "get",      "list",      "txn",
						    "delete", "grant",    "keepalive", "revoke",
						    "watch",  "watch-put" };

const char *cb_workload_name(int w)
{
	return w >= 0 && w < CB_W_COUNT ? workload_names[w] : "?";
}

const char *cb_kind_name(int k)
{
	return k >= 0 && k < CB_K_COUNT ? kind_names[k] : "?";
}

void cb_usage(FILE *f)
{
	fputs("usage: cairn-bench [target] [workload] [load] [check] [faults] [output]\n"
	      "\n"
	      "target (one of):\n"
	      "  --endpoints URLS        a running cluster: http://127.0.0.1:2379,http://127.0.0.1:22379,...\n"
	      "  --spec FILE             start a cluster from a spec file (see docs/operations.md)\n"
	      "  --system cairn|etcd     start a cluster of this system (default spec otherwise)\n"
	      "  --members N             members of the started cluster (1..7, default 3)\n"
	      "  --set KEY=VALUE         one spec key, after the file (binary=..., heartbeat_ms=...)\n"
	      "workload:\n"
	      "  --workload W            put (default), range, txn, mix, watch, lease, k8s\n"
	      "  --key-size N            key bytes (default 32)\n"
	      "  --val-size N            value bytes (default 256; at least 16 with --check)\n"
	      "  --key-space N           distinct keys (default 100000; 64 with --check)\n"
	      "  --seq | --random        key order (default random)\n"
	      "  --linearizable | --serializable   range reads (default linearizable)\n"
	      "  --prefix                range: pages over the key space instead of single keys\n"
	      "  --limit N               keys per page with --prefix and in k8s lists (default 100)\n"
	      "  --cas mod|value         txn: compare on mod_revision (default) or on the value\n"
	      "  --mix put=50,range=40,txn=10,delete=0   weights of the mix workload\n"
	      "  --watchers N            watch, k8s: watches over the key space (default 16, k8s 4)\n"
	      "  --lease-ttl S           lease: TTL of each granted lease in seconds (default 30)\n"
	      "  --key-prefix P          every key starts with P (default /bench/)\n"
	      "load:\n"
	      "  --clients N             closed loop: requests outstanding (default 16); with --rate:\n"
	      "                          the bound on requests outstanding (default 1000)\n"
	      "  --conns N               HTTP/2 connections of the client (default 1)\n"
	      "  --rate R                open loop: R requests per second on a fixed schedule\n"
	      "  --duration D            measured time (default 10s; D as 500ms, 10s, 2m)\n"
	      "  --count N               stop after N measured requests instead\n"
	      "  --warmup D              load before measuring (default 1s)\n"
	      "  --timeout D             deadline of each request (default 2s)\n"
	      "  --keepalive D           HTTP/2 PING after D without traffic (default 1s)\n"
	      "  --keepalive-timeout D   no answer to the PING: the connection is dropped (default 1s)\n"
	      "  --seed N                seed of the key choice (default: from the clock, printed)\n"
	      "check:\n"
	      "  --check                 record every operation and check linearizability at the end\n"
	      "  --max-history N         recorded operations at most (default 2000000)\n"
	      "  --check-time D          time budget of the check (default 60s)\n"
	      "faults (with a started cluster):\n"
	      "  --fault F               repeatable: kill-leader@5s, pause-leader@5s+3s,\n"
	      "                          partition-leader@5s+5s, kill-follower@5s, restart@10s, ...\n"
	      "  --runs N                repeat the scenario on fresh clusters (default 1)\n"
	      "output:\n"
	      "  --json FILE             results as JSON\n"
	      "  --csv FILE              the per-second series and the fault events as CSV\n"
	      "  --plot FILE.svg|.png    throughput and p99 over time, faults marked (gnuplot)\n"
	      "  --progress | --no-progress   the live line on stderr (default: on a terminal)\n"
	      "  --quiet                 no progress line, no notes\n"
	      "exit status: 0 done, 1 a linearizability violation, 2 bad usage, 3 the run failed,\n"
	      "4 --check could not reach a verdict\n",
	      f);
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*s == '-' || *s == '\0')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end != '\0' || v < min || v > max)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* "500ms", "10s", "1.5s", "2m", "1h" or a bare number of seconds. */
static int parse_dur(const char *s, double *out_s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return -1;
	double mul = 1;
	if (strcmp(end, "ms") == 0)
		mul = 1e-3;
	else if (strcmp(end, "s") == 0 || *end == '\0')
		mul = 1;
	else if (strcmp(end, "m") == 0)
		mul = 60;
	else if (strcmp(end, "h") == 0)
		mul = 3600;
	else
		return -1;
	*out_s = v * mul;
	return 0;
}

static int parse_mix(const char *s, unsigned mix[CB_MIX_COUNT], char *err, size_t errlen)
{
	static const char *const names[CB_MIX_COUNT] = { "put", "range", "txn", "delete" };
	char buf[256];
	if (strlen(s) >= sizeof buf)
		return fail(err, errlen, "--mix: too long");
	strcpy(buf, s);
	memset(mix, 0, sizeof(unsigned) * CB_MIX_COUNT);
	unsigned total = 0;
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq)
			return fail(err, errlen, "--mix: '%s' is not name=weight", tok);
		*eq = '\0';
		int i;
		for (i = 0; i < CB_MIX_COUNT; i++)
			if (strcmp(tok, names[i]) == 0)
				break;
		if (i == CB_MIX_COUNT)
			return fail(err, errlen,
				    "--mix: '%s' is not one of put, range, txn, delete", tok);
		uint64_t w;
		if (parse_u64(eq + 1, 0, 1000000, &w))
			return fail(err, errlen, "--mix: weight of %s: 0..1000000", tok);
		mix[i] = (unsigned)w;
		total += (unsigned)w;
	}
	if (total == 0)
		return fail(err, errlen, "--mix: every weight is 0");
	return 0;
}

static int split_endpoints(struct cb_opts *o, const char *list, char *err, size_t errlen)
{
	const char *p = list;
	while (*p) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len > 0) {
			if (o->n_endpoints == CB_MAX_ENDPOINTS)
				return fail(err, errlen, "--endpoints: at most %u",
					    CB_MAX_ENDPOINTS);
			char *e = malloc(len + 8);
			if (!e)
				return fail(err, errlen, "out of memory");
			/* etcdctl accepts host:port alone; libcairn wants a URL. */
			bool url = false;
			for (size_t j = 0; j + 3 <= len; j++)
				if (memcmp(p + j, "://", 3) == 0)
					url = true;
			if (url)
				snprintf(e, len + 8, "%.*s", (int)len, p);
			else
				snprintf(e, len + 8, "http://%.*s", (int)len, p);
			o->endpoints[o->n_endpoints++] = e;
		}
		if (!comma)
			break;
		p = comma + 1;
	}
	if (o->n_endpoints == 0)
		return fail(err, errlen, "--endpoints: empty");
	return 0;
}

/* The value of flag n: after '=' (already in *val) or the next argument. false, with the message
 * in err, when there is none. */
static bool take_value(int argc, char **argv, int *i, const char **val, const char *n, char *err,
		       size_t errlen)
{
	if (*val)
		return true;
	if (*i + 1 >= argc) {
		fail(err, errlen, "%s needs a value", n);
		return false;
	}
	*val = argv[++*i];
	return true;
}

static void defaults(struct cb_opts *o)
{
	memset(o, 0, sizeof *o);
	o->workload = CB_W_PUT;
	o->key_size = 32;
	o->val_size = 256;
	o->limit = 100;
	o->cas = CB_CAS_MOD;
	o->mix[CB_MIX_PUT] = 50;
	o->mix[CB_MIX_RANGE] = 40;
	o->mix[CB_MIX_TXN] = 10;
	o->lease_ttl = 30;
	o->key_prefix = "/bench/";
	o->conns = 1;
	o->warmup_s = 1;
	o->timeout_ms = 2000;
	o->keepalive_ms = 1000;
	o->keepalive_timeout_ms = 1000;
	o->max_history = CB_DEFAULT_MAX_HISTORY;
	o->check_ms = 60000;
	o->runs = 1;
	o->progress = -1;
}

int cb_opts_parse(int argc, char **argv, struct cb_opts *o, char *err, size_t errlen)
{
	defaults(o);
	err[0] = '\0';
	uint64_t clients = 0, watchers = UINT64_MAX;
	int64_t limit = -1;
	bool have_duration = false;
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		const char *val = NULL;
		char name[64];
		if (strncmp(a, "--", 2) != 0 && strcmp(a, "-h") != 0)
			return fail(err, errlen,
				    "unexpected argument '%s' (--help lists the flags)", a);
		char *eq = strchr(a, '=');
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
		if (nlen >= sizeof name)
			return fail(err, errlen, "unknown flag '%s'", a);
		memcpy(name, a, nlen);
		name[nlen] = '\0';
		if (eq)
			val = eq + 1;

/* Each flag is one statement ending in `continue`. IS: this flag, without a value. TAKE: this
 * flag with its value ("--f v" or "--f=v") in val. */
#define IS(n) (strcmp(name, n) == 0 && !val)
#define TAKE(n) (strcmp(name, n) == 0 && take_value(argc, argv, &i, &val, n, err, errlen))
#define NUM(n, lo, hi, dst)                                                                      \
	if (TAKE(n)) {                                                                           \
		uint64_t v_;                                                                     \
		if (parse_u64(val, lo, hi, &v_))                                                 \
			return fail(err, errlen, "%s: a number from %" PRIu64 " to %" PRIu64, n, \
				    (uint64_t)(lo), (uint64_t)(hi));                             \
		dst = (__typeof__(dst))v_;                                                       \
		continue;                                                                        \
	}
#define DUR(n, lo, hi, dst)                                                               \
	if (TAKE(n)) {                                                                    \
		if (parse_dur(val, &dst) || dst < (lo) || dst > (hi))                     \
			return fail(err, errlen,                                          \
				    "%s: a duration (500ms, 10s, 2m) from %gs to %gs", n, \
				    (double)(lo), (double)(hi));                          \
		continue;                                                                 \
	}
#define SET(n, stmt)      \
	if (IS(n)) {      \
		stmt;     \
		continue; \
	}

		if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
			cb_usage(stdout);
			return 1;
		}
		if (TAKE("--endpoints")) {
			if (split_endpoints(o, val, err, errlen))
				return -1;
			continue;
		}
		if (TAKE("--spec")) {
			o->spec_file = val;
			o->self_start = true;
			continue;
		}
		if (TAKE("--system")) {
			if (strcmp(val, "cairn") != 0 && strcmp(val, "etcd") != 0)
				return fail(err, errlen, "--system: cairn or etcd");
			o->system = val;
			o->self_start = true;
			continue;
		}
		if (TAKE("--members")) {
			uint64_t v;
			if (parse_u64(val, 1, CL_MAX_MEMBERS, &v))
				return fail(err, errlen, "--members: 1 to %d", CL_MAX_MEMBERS);
			o->members = (int)v;
			o->self_start = true;
			continue;
		}
		if (TAKE("--set")) {
			if (o->n_spec_sets == CB_MAX_SPEC_SETS)
				return fail(err, errlen, "--set: at most %d", CB_MAX_SPEC_SETS);
			if (!strchr(val, '='))
				return fail(err, errlen, "--set: KEY=VALUE, not '%s'", val);
			o->spec_sets[o->n_spec_sets++] = val;
			o->self_start = true;
			continue;
		}
		if (TAKE("--workload")) {
			int w;
			for (w = 0; w < CB_W_COUNT; w++)
				if (strcmp(val, workload_names[w]) == 0)
					break;
			if (w == CB_W_COUNT)
				return fail(
					err, errlen,
					"--workload: put, range, txn, mix, watch, lease or k8s");
			o->workload = w;
			continue;
		}
		NUM("--key-size", 1, CB_MAX_KEY_SIZE, o->key_size)
		NUM("--val-size", 0, CB_MAX_VAL_SIZE, o->val_size)
		NUM("--key-space", 1, CB_MAX_KEY_SPACE, o->key_space)
		SET("--seq", o->sequential = true)
		SET("--random", o->sequential = false)
		SET("--linearizable", o->serializable = false)
		SET("--serializable", o->serializable = true)
		SET("--prefix", o->prefix = true)
		NUM("--limit", 1, 100000, limit)
		if (TAKE("--cas")) {
			if (strcmp(val, "mod") == 0)
				o->cas = CB_CAS_MOD;
			else if (strcmp(val, "value") == 0)
				o->cas = CB_CAS_VALUE;
			else
				return fail(err, errlen, "--cas: mod or value");
			continue;
		}
		if (TAKE("--mix")) {
			if (parse_mix(val, o->mix, err, errlen))
				return -1;
			continue;
		}
		NUM("--watchers", 0, CB_MAX_WATCHERS, watchers)
		NUM("--lease-ttl", 2, 3600, o->lease_ttl)
		if (TAKE("--key-prefix")) {
			if (strlen(val) == 0 || strlen(val) > 200)
				return fail(err, errlen, "--key-prefix: 1 to 200 bytes");
			o->key_prefix = val;
			continue;
		}
		NUM("--clients", 1, CB_MAX_CLIENTS, clients)
		NUM("--conns", 1, CB_MAX_CONNS, o->conns)
		if (TAKE("--rate")) {
			char *end;
			errno = 0;
			double r = strtod(val, &end);
			if (errno || *end || !(r > 0) || r > 10e6)
				return fail(err, errlen,
					    "--rate: requests per second, 0 < R <= 1e7");
			o->rate = r;
			continue;
		}
		if (TAKE("--duration")) {
			if (parse_dur(val, &o->duration_s) || o->duration_s < 0.1 ||
			    o->duration_s > CB_MAX_DURATION_S)
				return fail(err, errlen, "--duration: from 100ms to 24h");
			have_duration = true;
			continue;
		}
		NUM("--count", 1, UINT64_C(10000000000), o->count)
		DUR("--warmup", 0, 3600, o->warmup_s)
		if (TAKE("--timeout") || TAKE("--keepalive") || TAKE("--keepalive-timeout") ||
		    TAKE("--check-time")) {
			bool check_time = strcmp(name, "--check-time") == 0;
			double lo = check_time ? 1 : strcmp(name, "--timeout") == 0 ? 0.01 : 0.05;
			double hi = check_time ? 86400 : 3600;
			double d;
			if (parse_dur(val, &d) || d < lo || d > hi)
				return fail(err, errlen, "%s: a duration from %gs to %gs", name, lo,
					    hi);
			uint64_t msecs = (uint64_t)llround(d * 1000);
			if (strcmp(name, "--timeout") == 0)
				o->timeout_ms = msecs;
			else if (strcmp(name, "--keepalive") == 0)
				o->keepalive_ms = msecs;
			else if (strcmp(name, "--keepalive-timeout") == 0)
				o->keepalive_timeout_ms = msecs;
			else
				o->check_ms = msecs;
			continue;
		}
		NUM("--seed", 0, UINT64_MAX, o->seed)
		SET("--check", o->check = true)
		NUM("--max-history", 1, 64u * 1024u * 1024u, o->max_history)
		if (TAKE("--fault")) {
			if (o->n_faults == CL_MAX_FAULTS)
				return fail(err, errlen, "--fault: at most %d", CL_MAX_FAULTS);
			char ferr[CL_ERR_MAX];
			if (cl_fault_parse_err(val, &o->faults[o->n_faults], ferr, sizeof ferr))
				return fail(err, errlen, "--fault %s: %s", val, ferr);
			o->n_faults++;
			continue;
		}
		NUM("--runs", 1, CB_MAX_RUNS, o->runs)
		if (TAKE("--json")) {
			o->json_path = val;
			continue;
		}
		if (TAKE("--csv")) {
			o->csv_path = val;
			continue;
		}
		if (TAKE("--plot")) {
			size_t n = strlen(val);
			if (n < 5 ||
			    (strcmp(val + n - 4, ".svg") != 0 && strcmp(val + n - 4, ".png") != 0))
				return fail(err, errlen,
					    "--plot: a file name ending in .svg or .png");
			o->plot_path = val;
			continue;
		}
		SET("--quiet", o->quiet = true)
		SET("--progress", o->progress = 1)
		SET("--no-progress", o->progress = 0)
		if (err[0])
			return -1; /* a value was missing: take_value said which */
		return fail(err, errlen, "unknown flag '%s' (--help lists the flags)", a);
#undef IS
#undef TAKE
#undef NUM
#undef DUR
#undef SET
	}

	if (o->n_endpoints > 0 && o->self_start)
		return fail(err, errlen,
			    "--endpoints and --spec/--system/--members/--set: one target only");
	if (o->n_endpoints == 0 && !o->self_start)
		return fail(err, errlen,
			    "no target: --endpoints URLS, or --spec FILE / --system "
			    "cairn|etcd to start a cluster (--help)");
	if (o->n_faults > 0 && !o->self_start)
		return fail(err, errlen,
			    "--fault needs a cluster cairn-bench starts itself "
			    "(--spec or --system), not --endpoints");
	if (o->runs > 1 && !o->self_start)
		return fail(err, errlen, "--runs needs a cluster cairn-bench starts itself");
	if (o->check && o->val_size < 16)
		return fail(err, errlen,
			    "--check writes a 16-byte id into each value: "
			    "--val-size must be at least 16");
	if (have_duration && o->count)
		return fail(err, errlen, "--duration and --count: one of them");

	o->clients = (uint32_t)(clients ? clients : (o->rate > 0 ? 1000 : 16));
	if (watchers == UINT64_MAX)
		watchers = o->workload == CB_W_K8S ? 4 : 16;
	o->watchers = (uint32_t)watchers;
	if (o->workload != CB_W_WATCH && o->workload != CB_W_K8S)
		o->watchers = 0;
	if (limit > 0)
		o->limit = limit;
	if (o->key_space == 0) {
		if (o->workload == CB_W_LEASE)
			o->key_space = o->clients;
		else if (o->workload == CB_W_K8S)
			o->key_space = o->check ? 64 : 1000;
		else
			o->key_space = o->check ? 64 : 100000;
	}
	if (o->workload == CB_W_LEASE && o->key_space < o->clients)
		return fail(err, errlen,
			    "--workload lease uses one key per client: "
			    "--key-space must be at least --clients");
	if (o->duration_s == 0 && o->count == 0) {
		o->duration_s = 10;
		/* A fault schedule runs inside the measured phase: cover it and 10 s after. */
		for (int f = 0; f < o->n_faults; f++) {
			double end = (double)(o->faults[f].at_ns + o->faults[f].dur_ns) / 1e9 + 10;
			if (end > o->duration_s)
				o->duration_s = end;
		}
	}
	if (o->n_faults > 0 && o->count)
		return fail(err, errlen, "--fault needs --duration (the schedule is in time)");
	/* The key: prefix, the index in decimal, padding. */
	char digits[24];
	int nd = snprintf(digits, sizeof digits, "%" PRIu64, o->key_space - 1);
	if (strlen(o->key_prefix) + (size_t)nd + 9 > o->key_size)
		return fail(
			err, errlen,
			"--key-size %u is too small for --key-prefix '%s', a run tag and '/' (9) and %d "
			"digits of the key index: at least %zu",
			o->key_size, o->key_prefix, nd, strlen(o->key_prefix) + (size_t)nd + 9);
	return 0;
}
