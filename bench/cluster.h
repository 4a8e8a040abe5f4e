/* cluster.h: cairn-bench's cluster launcher and fault injector. Starts a Cairn or etcd 3.4
 * cluster from a small spec (the same flags and topology for both), finds its leader over the
 * HTTP/1.1 JSON gateway, and injects faults (kill -9, SIGSTOP/SIGCONT, restart, partitions,
 * netem) by hand or on a schedule run by its own thread, recording the time to a new leader.
 *
 * Plain POSIX plus Linux network namespaces: fork/exec, signals, poll-based sockets with
 * timeouts, one pthread for the schedule. Neither libuv nor libcairn: the harness must keep
 * working while the client library under test misbehaves.
 *
 * Errors: every int-returning function returns 0 (or a documented non-negative value) or a
 * negative CL_E* code; functions taking a cluster also leave a message with context in
 * cl_errmsg(c). Functions taking (err, errlen) write their message there instead.
 *
 * Threads: a cluster is driven by one thread at a time, except that while a schedule runs
 * (cl_schedule_start .. cl_schedule_wait) the schedule's thread injects the faults; the driver
 * may then call only cl_schedule_events, cl_schedule_wait/cancel, the accessors of fixed data
 * (cl_size, cl_get_spec, cl_endpoint, cl_endpoints, cl_name, cl_dir, cl_log_path) and
 * cl_emergency_cleanup; each event carries its own error message. */
#ifndef CAIRN_BENCH_CLUSTER_H
#define CAIRN_BENCH_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CL_MAX_MEMBERS 7
#define CL_PATH_MAX 512
#define CL_HOST_MAX 64
#define CL_EXTRA_MAX 1024 /* extra flags of one system, as one string */
#define CL_ERR_MAX 512    /* messages, including the terminating NUL */
#define CL_MAX_FAULTS 64  /* faults in one schedule */
#define CL_FAULT_TEXT_MAX 96

/* Error codes: X(name, value, text). */
#define CL_ERRNO_MAP(X)                                                             \
	X(CL_EINVAL, -1, "invalid argument")                                        \
	X(CL_ESYS, -2, "system call failed")                                        \
	X(CL_ETIMEDOUT, -3, "timed out")                                            \
	X(CL_ENOTSUP, -4, "not supported here")                                     \
	X(CL_ESTATE, -5, "not possible in the member's or cluster's current state") \
	X(CL_ENOLEADER, -6, "no leader agreed by a majority")                       \
	X(CL_ENOMEM, -7, "out of memory")                                           \
	X(CL_EPROTO, -8, "unexpected answer from a member")

enum {
#define CL_X(name, value, text) name = value,
	CL_ERRNO_MAP(CL_X)
#undef CL_X
};

/* A static string for a CL_E* code; "unknown error" for anything else. */
const char *cl_strerror(int code);

/* --- The spec ------------------------------------------------------------------------------- */

enum cl_system { CL_SYS_CAIRN = 0, CL_SYS_ETCD = 1 };

/* "cairn" / "etcd". */
const char *cl_system_name(enum cl_system s);

/* Plain data, no pointers: copy it freely. Keys of the spec file in [brackets]. */
struct cl_spec {
	enum cl_system system;          /* [system] cairn | etcd; default cairn */
	char binary[CL_PATH_MAX];       /* [binary] "" = build/bin/cairn or /usr/bin/etcd */
	int members;                    /* [members] 1..7, default 3 */
	char host[CL_HOST_MAX];         /* [host] default 127.0.0.1; ignored with netns */
	int base_port;                  /* [base_port] clients base+i, peers base+100+i,
						gossip base+200+i; 0 (default) = pick free ports */
	int heartbeat_ms;               /* [heartbeat_ms] default 100 */
	int election_ms;                /* [election_ms] default 1000 */
	char dir[CL_PATH_MAX];          /* [dir] parent of the data dir; "" = $TMPDIR or /tmp */
	int keep;                       /* [keep] true: leave the data dir (logs) at the end */
	int netns;                      /* [netns] off | on: a namespace per member (root) */
	int start_timeout_ms;           /* [start_timeout_ms] health wait, default 30000 */
	char extra_cairn[CL_EXTRA_MAX]; /* [cairn_flags] appended to each Cairn member */
	char extra_etcd[CL_EXTRA_MAX];  /* [etcd_flags] appended to each etcd member */
};

/* Fills *s with the defaults above. */
void cl_spec_init(struct cl_spec *s);

/* Sets one key (the names in brackets above; "extra" sets the flags of s->system) from its text
 * form, as the spec file and command-line flags give it. Booleans: on/off, true/false, yes/no,
 * 1/0. Returns 0 or CL_EINVAL with a message naming the key and the accepted values. */
int cl_spec_set(struct cl_spec *s, const char *key, const char *value, char *err, size_t errlen);

/* Reads a spec file: one "key = value" per line, '#' starts a comment, blank lines ignored,
 * at most 256 lines of 2048 bytes. Starts from cl_spec_init's defaults. Errors name the file
 * and line. Returns 0, CL_EINVAL or CL_ESYS (the file cannot be read). */
int cl_spec_parse_file(const char *path, struct cl_spec *s, char *err, size_t errlen);

/* Checks the combination (ranges, ports below 65536, netns needs root). 0 or CL_EINVAL. */
int cl_spec_check(const struct cl_spec *s, char *err, size_t errlen);

/* --- The cluster ---------------------------------------------------------------------------- */

struct cl_cluster;

/* Validates and copies *spec, creates the data dir (<dir>/cairn-bench-<system>.XXXXXX), picks
 * ports, and with netns claims a free 10.213.X.0/24 and creates the bridge, the namespaces and
 * the veth pairs; starts no process. *out is the caller's to cl_free. Returns 0, or a negative
 * code with the message in err (nothing to free then). */
int cl_create(const struct cl_spec *spec, struct cl_cluster **out, char *err, size_t errlen);

/* Starts every member (stdout and stderr to <datadir>/<name>.log) and waits, bounded by
 * start_timeout_ms, until each answers GET /health with {"health":"true"}; then reads each
 * member's id from its status. On failure the members started so far keep running until
 * cl_stop/cl_free. Members are children of this process, reaped with waitpid by pid: SIGCHLD
 * must not be set to SIG_IGN. Members started from the main thread get PR_SET_PDEATHSIG
 * (SIGKILL), so they die with a killed bench; those a schedule restarts cannot (the kernel
 * sends it when the forking thread ends). */
int cl_start(struct cl_cluster *c);

/* Stops every member (SIGCONT, then SIGKILL by pid, and reaps it), deletes the namespaces,
 * veths and bridge it created. Idempotent. Stops a running schedule first. */
int cl_stop(struct cl_cluster *c);

/* cl_stop, removes the data dir unless keep, frees c. NULL is ignored. */
void cl_free(struct cl_cluster *c);

/* For atexit and signal handlers: SIGCONT+SIGKILL to every member of every live cluster, and
 * removes the namespaces/bridges and (unless keep) data dirs with commands prepared in advance
 * (fork/execve/waitpid only). Safe to call more than once; frees nothing. cl_create registers
 * it with atexit once per process. */
void cl_emergency_cleanup(void);

/* n distinct ports in 20000..32767, free on 127.0.0.1 (TCP and UDP) and claimed for this
 * process in $TMPDIR/cairn-ports, which cl_create and the test harnesses also use, so that
 * concurrent runs do not pick the same ones. Returns 0, or CL_ESYS when none could be found. */
int cl_claim_ports(int n, int *ports);

/* Removes this process's claims on ports (a claim of a process that has exited lapses anyway). */
void cl_release_ports(const int *ports, int n);

/* Read-only accessors. Strings are owned by c and live until cl_free; i in 0..cl_size-1. */
int cl_size(const struct cl_cluster *c);
const struct cl_spec *cl_get_spec(const struct cl_cluster *c);
const char *cl_endpoint(const struct cl_cluster *c, int i); /* "http://IP:port" */
const char *cl_endpoints(const struct cl_cluster *c);       /* every endpoint, comma-separated */
const char *cl_name(const struct cl_cluster *c, int i);     /* "m1" .. "m7" */
const char *cl_dir(const struct cl_cluster *c);             /* the data dir root */
const char *cl_log_path(const struct cl_cluster *c, int i); /* <dir>/<name>.log */
const char *cl_errmsg(const struct cl_cluster *c);          /* the last error, "" if none */

/* The member's pid while it runs (also while paused), 0 after a kill or before start. */
pid_t cl_pid(const struct cl_cluster *c, int i);

/* The member's id as its status reports it (learned at cl_start), 0 if unknown. */
uint64_t cl_member_id(const struct cl_cluster *c, int i);

enum cl_member_state { CL_DOWN = 0, CL_RUNNING = 1, CL_PAUSED = 2 };
enum cl_member_state cl_state(const struct cl_cluster *c, int i);
int cl_is_partitioned(const struct cl_cluster *c, int i);

/* One member's POST /v3/maintenance/status (body {}), bounded by timeout_ms. */
struct cl_status {
	uint64_t member_id;
	uint64_t leader; /* 0: the member knows no leader */
	uint64_t raft_term;
	uint64_t raft_index;
	int64_t revision;
};
int cl_status(struct cl_cluster *c, int i, int timeout_ms, struct cl_status *st);

/* Asks every running, unpaused, uncut member for its status at once; returns the index of the
 * member that a majority of the cluster (members/2+1 answers) names as leader, as soon as such a
 * majority has answered, or CL_ENOLEADER (none within timeout_ms: no quorum reachable, an
 * election running, answers that disagree, or a leader the bench has killed, paused or cut off
 * and the followers still name). Never blocks longer than timeout_ms. */
int cl_leader(struct cl_cluster *c, int timeout_ms);

/* Polls cl_leader every 10 ms until a leader other than `not` (-1: any) is agreed, bounded by
 * timeout_ms. Returns its index or CL_ENOLEADER. */
int cl_wait_leader(struct cl_cluster *c, int not, int timeout_ms);

/* Waits until every running member answers /health with true. 0 or CL_ETIMEDOUT. */
int cl_wait_healthy(struct cl_cluster *c, int timeout_ms);

/* --- Faults, by hand. Each returns 0 or a negative code (message in cl_errmsg). ------------- */

int cl_kill(struct cl_cluster *c, int i);    /* SIGKILL and reap; the member is then down */
int cl_pause(struct cl_cluster *c, int i);   /* SIGSTOP */
int cl_resume(struct cl_cluster *c, int i);  /* SIGCONT */
int cl_restart(struct cl_cluster *c, int i); /* a down member, same flags and data dir; does not
						wait for health (cl_wait_healthy does) */

/* Netns only (CL_ENOTSUP otherwise, "needs netns = on (root)"): cuts members[0..n-1] off from
 * everyone (the other members and the bench) by setting their host-side veths down; cl_heal
 * sets every veth up again. Connections are not reset: packets are dropped, as in a real cut. */
int cl_partition(struct cl_cluster *c, const int *members, int n);
int cl_heal(struct cl_cluster *c);

/* Netns only: `tc qdisc replace ... netem delay D jitter J loss L%` on member i's veth; all zero
 * removes it. Where the kernel lacks sch_netem (found at the first attempt, then remembered) it
 * fails with CL_ENOTSUP and "tc netem is not available on this kernel (sch_netem missing)". */
int cl_netem(struct cl_cluster *c, int i, int delay_ms, int jitter_ms, double loss_pct);

/* --- The schedule --------------------------------------------------------------------------- */

enum cl_fault_kind {
	CL_F_KILL_LEADER,        /* kill-leader */
	CL_F_KILL_FOLLOWER,      /* kill-follower */
	CL_F_PAUSE_LEADER,       /* pause-leader[@T+D]: SIGSTOP, SIGCONT after D */
	CL_F_PAUSE_FOLLOWER,     /* pause-follower */
	CL_F_RESTART,            /* restart: the member killed last */
	CL_F_PARTITION_LEADER,   /* partition-leader: heals after D if given */
	CL_F_PARTITION_MINORITY, /* partition-minority: one follower */
	CL_F_NETEM_LEADER,       /* netem-leader:delay=50ms,jitter=5ms,loss=5%: removed after D */
	CL_F_HEAL,               /* heal: every partition */
	CL_F_RESUME,             /* resume: every paused member */
};

/* Text form: <kind>[:<params>]@<at>[+<duration>], times as 500ms, 5s, 1.5s or 2m. */
struct cl_fault {
	enum cl_fault_kind kind;
	int64_t at_ns;  /* offset from the schedule's t0 */
	int64_t dur_ns; /* 0: not undone automatically; else undone dur_ns after it took effect */
	int delay_ms, jitter_ms;
	double loss_pct;
	char text[CL_FAULT_TEXT_MAX]; /* as written (truncated) */
};

/* Parses one fault. 0 or CL_EINVAL. The _err form says what is wrong. */
int cl_fault_parse(const char *s, struct cl_fault *f);
int cl_fault_parse_err(const char *s, struct cl_fault *f, char *err, size_t errlen);

/* Parses a list separated by ';' or white space into out[0..max-1]. Returns the count or
 * CL_EINVAL. Faults need not be in time order. */
int cl_faults_parse(const char *list, struct cl_fault *out, int max, char *err, size_t errlen);

/* "kill-leader" ... */
const char *cl_fault_kind_name(enum cl_fault_kind k);

/* What the schedule did for one fault. Times are CLOCK_MONOTONIC ns (0: did not happen). */
struct cl_event {
	int index;             /* in the array given to cl_schedule_start */
	struct cl_fault fault; /* a copy */
	int rc;                /* 0, or the fault's negative code */
	char err[CL_ERR_MAX];  /* its message when rc < 0 */
	int64_t injected_ns;   /* when the fault was applied */
	int member;            /* the member it hit, -1 none */
	int old_leader;        /* the leader just before, -1 none agreed */
	int new_leader;        /* the first leader agreed after it, -1 none yet */
	int64_t new_leader_ns; /* when that was first seen (poll every 10 ms, up to 30 s) */
	int leader_changed;    /* new_leader differs from old_leader */
	int64_t undone_ns;     /* when the +duration undo (SIGCONT, heal, netem off) ran */
};

/* Starts the schedule's thread: faults[i] is applied at t0_ns + at_ns. For a fault that stops,
 * pauses or cuts off the leader, the thread then waits for a leader other than it; for other
 * faults, for any agreed leader. The faults are copied. One schedule per cluster at a time:
 * CL_ESTATE if one runs. */
int cl_schedule_start(struct cl_cluster *c, const struct cl_fault *faults, int n, int64_t t0_ns);

/* Joins the thread once every fault, undo and leader watch is done (bounded: the last offset
 * plus its duration plus 30 s). Returns 0, or the first fault's negative code. */
int cl_schedule_wait(struct cl_cluster *c);

/* Asks the thread to stop early (pending faults are not applied, pending undos are) and joins. */
int cl_schedule_cancel(struct cl_cluster *c);

/* Copies the events recorded so far (in schedule order, only faults already applied) into a
 * new array; *events is the caller's to free(), NULL when *n == 0. Thread-safe. 0 or
 * CL_ENOMEM. */
int cl_schedule_events(struct cl_cluster *c, struct cl_event **events, int *n);

/* CLOCK_MONOTONIC in ns, the clock of t0_ns and the events. */
int64_t cl_now_ns(void);

#endif
