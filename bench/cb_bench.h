/* cb_bench.h: the pieces of cairn-bench shared by its files: the options (cb_opts.c), the load
 * engine on one libuv loop with one libcairn client (cb_load.c), and the reports (cb_report.c).
 * main() and the scenario around a run (cluster, faults, repeated runs) are in cairn_bench.c.
 *
 * Times are CLOCK_MONOTONIC nanoseconds throughout, the clock of cluster.h's fault events and of
 * the linearizability history. */
#ifndef CAIRN_BENCH_CB_BENCH_H
#define CAIRN_BENCH_CB_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster.h"
#include "hist.h"

/* Bounds (style.md §9): every one of them is checked by cb_opts_parse with a clear message. */
#define CB_MAX_CLIENTS 100000u
#define CB_MAX_CONNS 1024u
#define CB_MAX_ENDPOINTS 16u
#define CB_MAX_KEY_SIZE 65536u
#define CB_MAX_VAL_SIZE (1024u * 1024u)
#define CB_MAX_KEY_SPACE 100000000u
#define CB_MAX_DURATION_S 86400.0
#define CB_MAX_SECONDS 86400u /* per-second series, warm-up excluded */
#define CB_MAX_WATCHERS 100000u
#define CB_MAX_RUNS 100
#define CB_DEFAULT_MAX_HISTORY 2000000u
#define CB_MAX_SPEC_SETS 32

enum cb_workload {
	CB_W_PUT = 0,
	CB_W_RANGE,
	CB_W_TXN,
	CB_W_MIX,
	CB_W_WATCH,
	CB_W_LEASE,
	CB_W_K8S,
	CB_W_COUNT
};

/* What one recorded operation was: a row of the final table each. */
enum cb_kind {
	CB_K_PUT = 0,
	CB_K_GET,  /* single-key Range */
	CB_K_LIST, /* prefix Range (one page) */
	CB_K_TXN,  /* compare-and-swap */
	CB_K_DELETE,
	CB_K_GRANT,
	CB_K_KEEPALIVE, /* first keepalive answer */
	CB_K_REVOKE,
	CB_K_WATCH,     /* a watcher's event: from the put's response to the event */
	CB_K_WATCH_PUT, /* the same event: from the put's start to the event */
	CB_K_COUNT
};

/* Weights of --mix, in the order put, range, txn, delete. */
enum { CB_MIX_PUT = 0, CB_MIX_RANGE, CB_MIX_TXN, CB_MIX_DELETE, CB_MIX_COUNT };

enum cb_cas { CB_CAS_MOD = 0, CB_CAS_VALUE = 1 };

struct cb_opts {
	/* target */
	char *endpoints[CB_MAX_ENDPOINTS];
	size_t n_endpoints;
	const char *spec_file;
	const char *system;                      /* --system; NULL: the spec's */
	int members;                             /* --members; 0: the spec's */
	const char *spec_sets[CB_MAX_SPEC_SETS]; /* --set key=value */
	size_t n_spec_sets;
	bool self_start; /* --spec, --system or --members given */
	/* workload */
	int workload;
	uint32_t key_size, val_size;
	uint64_t key_space; /* 0: the default of the workload */
	bool sequential;
	bool serializable;
	bool prefix;
	int64_t limit;
	int cas; /* enum cb_cas */
	unsigned mix[CB_MIX_COUNT];
	uint32_t watchers;
	int64_t lease_ttl;
	const char *key_prefix;
	/* load */
	uint32_t clients; /* closed loop: requests outstanding; open loop: the bound on them */
	uint32_t conns;
	double rate;       /* 0: closed loop */
	double duration_s; /* 0: --count, or the default */
	uint64_t count;
	double warmup_s;
	uint64_t timeout_ms;
	uint64_t keepalive_ms, keepalive_timeout_ms;
	uint64_t seed;
	/* correctness */
	bool check;
	uint64_t max_history;
	uint64_t check_ms;
	/* faults */
	struct cl_fault faults[CL_MAX_FAULTS];
	int n_faults;
	int runs;
	/* output */
	const char *json_path, *csv_path, *plot_path;
	bool quiet;
	int progress;         /* -1 auto (a terminal), 0 off, 1 on */
	const char *self_dir; /* the directory of this executable, for the default cairn binary */
};

/* Parses argv; 0, 1 after --help (printed), or -1 with a message in err. */
int cb_opts_parse(int argc, char **argv, struct cb_opts *o, char *err, size_t errlen);
void cb_usage(FILE *f);
const char *cb_workload_name(int w);
const char *cb_kind_name(int k);

/* One second of the measured phase, by completion time. Latencies in ns. */
struct cb_sec {
	uint64_t ops, errors;
	uint64_t p50, p99, max;
};

/* The figures of one fault of one run (times relative to the injection). */
struct cb_fault_fig {
	char text[CL_FAULT_TEXT_MAX];
	int kind; /* enum cl_fault_kind */
	int rc;   /* 0, or the injection's error */
	char err[CL_ERR_MAX];
	double at_s;          /* injection, seconds after the measured phase began */
	double unavail_ms;    /* -1: no write started after it succeeded */
	double new_leader_ms; /* -1: none seen */
	int leader_changed;
	uint64_t errors;     /* failed ops ending in the window */
	uint64_t window_ops; /* ops started in the window */
	double window_s;     /* the window: max(5 s, recovery + 1 s) */
	uint64_t p99_5s_ns;  /* p99 of the ops started in the 5 s after the injection */
	bool is_write_fault; /* it stops/cuts a member: unavailability is meaningful */
};

struct cb_check_res {
	bool enabled;
	bool overflow; /* the history passed --max-history: no verdict */
	int verdict;   /* enum lin_verdict; -1 not run */
	size_t ops;
	size_t partitions, checked_partitions;
	uint64_t bad_values;           /* reads of values that do not decode */
	uint64_t unknown;              /* ops recorded with an unknown outcome */
	uint64_t skipped_serializable; /* serializable reads, not linearizable: not recorded */
	double check_s;
	char *report; /* malloc'd, or NULL */
};

/* Everything one run measured. cb_result_free releases it. */
struct cb_result {
	char system[16];
	char endpoints[1024];
	double elapsed_s;     /* of the measured phase */
	uint64_t ops, errors; /* measured, watch events excluded */
	uint64_t kind_ops[CB_K_COUNT], kind_errors[CB_K_COUNT];
	struct hist all; /* every measured op but watch events */
	struct hist kind[CB_K_COUNT];
	uint64_t errors_by_code[17];
	uint64_t local_errors;       /* requests libcairn refused to start (CAIRN_E*) */
	uint64_t cancelled_at_end;   /* in flight when the run stopped */
	uint64_t conflicts;          /* CAS whose compare failed (not an error) */
	uint64_t watch_early;        /* events seen before their put's response (latency 0) */
	uint64_t watch_canceled;     /* watches ended by the server */
	uint64_t watch_chain_breaks; /* k8s: events whose prev_kv is not the last value seen */
	uint64_t warmup_ops;
	struct cb_sec *secs;
	size_t n_secs;
	struct cb_fault_fig *faults;
	int n_faults;
	struct cb_check_res check;
	bool interrupted;
	bool oplog_overflow; /* fault figures computed from the first --max-history ops */
	char failure[1024];  /* why the run could not run, "" if it did */
};

void cb_result_free(struct cb_result *r);

/* Runs the load against `endpoints` (comma-separated), with the fault schedule on `cl` when
 * o->n_faults > 0 (cl non-NULL then). Fills *res; returns 0, or -1 when the run could not run
 * (res->failure says why). Honours cb_interrupted(). */
int cb_load_run(const struct cb_opts *o, const char *endpoints, struct cl_cluster *cl,
		struct cb_result *res);

/* SIGINT/SIGTERM seen (set by the handler in cairn_bench.c, read by the load loop). */
bool cb_interrupted(void);
void cb_set_interrupted(void);

/* The reports. runs[0..n-1] are the runs of one scenario. */
void cb_report_table(FILE *f, const struct cb_opts *o, const struct cb_result *runs, int n);
int cb_report_json(const char *path, const struct cb_opts *o, const struct cb_result *runs, int n);
int cb_report_csv(const char *path, const struct cb_result *runs, int n);
int cb_report_plot(const char *path, const struct cb_opts *o, const struct cb_result *r);
/* Median of the unavailability of fault i over the runs (runs without a recovery count as
 * missing); -1 if no run recovered. */
double cb_median_unavail(const struct cb_result *runs, int n, int i);

uint64_t cb_now_ns(void);

#endif /* CAIRN_BENCH_CB_BENCH_H */
