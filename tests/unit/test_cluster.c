/* test_cluster.c: cairn-bench's cluster launcher and fault injector (bench/cluster.h): the spec
 * file and fault parsers, then real 3-member clusters on loopback (Cairn, and etcd 3.4 when
 * /usr/bin/etcd exists) killed, restarted, paused and put on a schedule, and as root the same
 * in network namespaces with a partition of the leader. Every cluster is freed by the test's
 * teardown, so a failed assertion leaves no process behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster.h"
#include "tmpdir.h"

#define ETCD_BIN "/usr/bin/etcd"

static struct cl_cluster *g_c;
static char g_tmp[512];

static int teardown_cluster(void **state)
{
	(void)state;
	cl_free(g_c);
	g_c = NULL;
	return 0;
}

/* Writes text to <tmp>/spec.conf and returns the path (static). */
static const char *write_spec(const char *text)
{
	static char path[600];
	if (g_tmp[0] == '\0')
		h_tmpdir_make(g_tmp, sizeof g_tmp, "test_cluster");
	snprintf(path, sizeof path, "%s/spec.conf", g_tmp);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	return path;
}

/* ---- the spec ---- */

static void test_spec_defaults(void **state)
{
	(void)state;
	struct cl_spec s;
	char err[CL_ERR_MAX];
	cl_spec_init(&s);
	assert_int_equal(s.system, CL_SYS_CAIRN);
	assert_int_equal(s.members, 3);
	assert_string_equal(s.host, "127.0.0.1");
	assert_int_equal(s.heartbeat_ms, 100);
	assert_int_equal(s.election_ms, 1000);
	assert_int_equal(s.start_timeout_ms, 30000);
	assert_int_equal(s.netns, 0);
	assert_int_equal(cl_spec_check(&s, err, sizeof err), 0);
	/* Command-line flags go through cl_spec_set. */
	assert_int_equal(cl_spec_set(&s, "system", "etcd", err, sizeof err), 0);
	assert_int_equal(cl_spec_set(&s, "extra", "--snapshot-count 1000", err, sizeof err), 0);
	assert_string_equal(s.extra_etcd, "--snapshot-count 1000");
	assert_string_equal(s.extra_cairn, "");
	assert_int_equal(cl_spec_set(&s, "host", "localhost", err, sizeof err), CL_EINVAL);
	assert_non_null(strstr(err, "numeric IPv4"));
	assert_int_equal(cl_spec_set(&s, "members", "0", err, sizeof err), CL_EINVAL);
	assert_non_null(strstr(err, "1 to 7"));
	assert_int_equal(cl_spec_set(&s, "netns", "on", err, sizeof err), 0);
	if (geteuid() != 0) {
		assert_int_equal(cl_spec_check(&s, err, sizeof err), CL_EINVAL);
		assert_non_null(strstr(err, "netns = on needs root"));
	} else {
		assert_int_equal(cl_spec_check(&s, err, sizeof err), 0);
	}
}

static void test_spec_file_good(void **state)
{
	(void)state;
	const char *p = write_spec(
		"# a failover run\n"
		"system = etcd\n"
		"\n"
		"  binary=/opt/etcd/etcd  \n"
		"members = 5\n"
		"host = 127.0.0.2\n"
		"base_port = 30000\n"
		"heartbeat_ms = 50\n"
		"election_ms = 500\n"
		"dir = /var/tmp\n"
		"keep = yes\n"
		"netns = off\n"
		"start_timeout_ms = 20000\n"
		"cairn_flags = \"--snapshot-count 5000\"\n"
		"etcd_flags = --snapshot-count 10000 --quota-backend-bytes 8589934592\n");
	struct cl_spec s;
	char err[CL_ERR_MAX] = "";
	assert_int_equal(cl_spec_parse_file(p, &s, err, sizeof err), 0);
	assert_int_equal(s.system, CL_SYS_ETCD);
	assert_string_equal(s.binary, "/opt/etcd/etcd");
	assert_int_equal(s.members, 5);
	assert_string_equal(s.host, "127.0.0.2");
	assert_int_equal(s.base_port, 30000);
	assert_int_equal(s.heartbeat_ms, 50);
	assert_int_equal(s.election_ms, 500);
	assert_string_equal(s.dir, "/var/tmp");
	assert_int_equal(s.keep, 1);
	assert_int_equal(s.netns, 0);
	assert_int_equal(s.start_timeout_ms, 20000);
	assert_string_equal(s.extra_cairn, "--snapshot-count 5000");
	assert_string_equal(s.extra_etcd,
			    "--snapshot-count 10000 --quota-backend-bytes 8589934592");
}

static void test_spec_file_bad(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		const char *want; /* a piece of the message */
	} cases[] = {
		{ "members = 3\nmembrs = 3\n", ":2: unknown key 'membrs' (known: system," },
		{ "members = 9\n", ":1: members: '9' is not a number from 1 to 7" },
		{ "members = three\n", ":1: members: 'three' is not a number" },
		{ "system = zookeeper\n", ":1: system: 'zookeeper' is not cairn or etcd" },
		{ "netns = maybe\n", ":1: netns: 'maybe' is not on/off" },
		{ "# ok\njust words\n", ":2: expected \"key = value\", got 'just words'" },
		{ " = 3\n", ":1: empty key before '='" },
		{ "heartbeat_ms = 100\nelection_ms = 50\n",
		  "election_ms (50) must be larger than heartbeat_ms (100)" },
		{ "base_port = 65500\n",
		  "base_port 65500: ports base..base+202 must be below 65536" },
		{ "base_port = -1\n", ":1: base_port: '-1' is not 0 (pick free ports) or a port" },
		{ "heartbeat_ms = 0\n", ":1: heartbeat_ms: '0' is not a number of ms" },
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		const char *p = write_spec(cases[k].text);
		struct cl_spec s;
		char err[CL_ERR_MAX] = "";
		assert_int_equal(cl_spec_parse_file(p, &s, err, sizeof err), CL_EINVAL);
		if (strstr(err, cases[k].want) == NULL)
			fail_msg("case %zu: message '%s' lacks '%s'", k, err, cases[k].want);
		assert_non_null(strstr(err, "spec.conf"));
	}
	struct cl_spec s;
	char err[CL_ERR_MAX] = "";
	assert_int_equal(cl_spec_parse_file("/nonexistent/cluster.conf", &s, err, sizeof err),
			 CL_ESYS);
	assert_non_null(strstr(err, "/nonexistent/cluster.conf: cannot open"));
	/* A missing binary is caught before anything is created. */
	cl_spec_init(&s);
	assert_int_equal(cl_spec_set(&s, "binary", "/nonexistent/cairn", err, sizeof err), 0);
	struct cl_cluster *c = NULL;
	assert_int_equal(cl_create(&s, &c, err, sizeof err), CL_EINVAL);
	assert_null(c);
	assert_non_null(strstr(err, "'/nonexistent/cairn' is not an executable file"));
}

/* ---- faults ---- */

static void test_fault_parse(void **state)
{
	(void)state;
	struct cl_fault f;
	char err[CL_ERR_MAX] = "";
	assert_int_equal(cl_fault_parse("kill-leader@5s", &f), 0);
	assert_int_equal(f.kind, CL_F_KILL_LEADER);
	assert_int_equal(f.at_ns, 5000000000LL);
	assert_int_equal(f.dur_ns, 0);
	assert_string_equal(f.text, "kill-leader@5s");
	assert_int_equal(cl_fault_parse("pause-leader@5s+3s", &f), 0);
	assert_int_equal(f.kind, CL_F_PAUSE_LEADER);
	assert_int_equal(f.dur_ns, 3000000000LL);
	assert_int_equal(cl_fault_parse("netem-leader:delay=50ms,loss=5%@5s+10s", &f), 0);
	assert_int_equal(f.kind, CL_F_NETEM_LEADER);
	assert_int_equal(f.delay_ms, 50);
	assert_int_equal(f.jitter_ms, 0);
	assert_true(f.loss_pct > 4.99 && f.loss_pct < 5.01);
	assert_int_equal(f.at_ns, 5000000000LL);
	assert_int_equal(f.dur_ns, 10000000000LL);
	assert_int_equal(cl_fault_parse("netem-leader:delay=100ms,jitter=10ms@0", &f), 0);
	assert_int_equal(f.jitter_ms, 10);
	assert_int_equal(cl_fault_parse("restart@1.5s", &f), 0);
	assert_int_equal(f.kind, CL_F_RESTART);
	assert_int_equal(f.at_ns, 1500000000LL);
	assert_int_equal(cl_fault_parse("partition-minority@250ms+2m", &f), 0);
	assert_int_equal(f.kind, CL_F_PARTITION_MINORITY);
	assert_int_equal(f.at_ns, 250000000LL);
	assert_int_equal(f.dur_ns, 120000000000LL);
	assert_int_equal(cl_fault_parse("kill-follower@0", &f), 0);
	assert_int_equal(cl_fault_parse("heal@1s", &f), 0);
	assert_int_equal(f.kind, CL_F_HEAL);
	assert_int_equal(cl_fault_parse("resume@1s", &f), 0);
	assert_int_equal(f.kind, CL_F_RESUME);
	assert_string_equal(cl_fault_kind_name(CL_F_PARTITION_LEADER), "partition-leader");

	static const struct {
		const char *text, *want;
	} bad[] = {
		{ "kill-leader", "expected <kind>[:<params>]@<time>" },
		{ "explode@1s", "unknown kind 'explode'" },
		{ "kill-leader@5x", "time '5x'" },
		{ "kill-leader@", "time ''" },
		{ "kill-leader@5s+3s",
		  "only pause-*, partition-* and netem-leader take a +duration" },
		{ "pause-leader@1s+0s", "duration '0s'" },
		{ "netem-leader@1s", "netem-leader needs parameters" },
		{ "netem-leader:delay=abc@1s", "netem delay 'abc'" },
		{ "netem-leader:loss=200%@1s", "netem loss '200%'" },
		{ "netem-leader:rate=1mbit@1s", "known are delay, jitter, loss" },
		{ "netem-leader:delay=10ms,jitter=20ms@1s", "jitter must not exceed" },
		{ "kill-leader:delay=5ms@1s", "only netem-leader takes parameters" },
		{ "", "empty fault" },
	};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		assert_int_equal(cl_fault_parse(bad[k].text, &f), CL_EINVAL);
		assert_int_equal(cl_fault_parse_err(bad[k].text, &f, err, sizeof err), CL_EINVAL);
		if (strstr(err, bad[k].want) == NULL)
			fail_msg("'%s': message '%s' lacks '%s'", bad[k].text, err, bad[k].want);
	}

	struct cl_fault list[4];
	assert_int_equal(cl_faults_parse("kill-leader@1s; restart@3s\npause-follower@4s+1s", list,
					 4, err, sizeof err),
			 3);
	assert_int_equal(list[1].kind, CL_F_RESTART);
	assert_int_equal(list[2].dur_ns, 1000000000LL);
	assert_int_equal(cl_faults_parse("heal@1s;heal@2s;heal@3s", list, 2, err, sizeof err),
			 CL_EINVAL);
	assert_non_null(strstr(err, "more than 2 faults"));
	assert_int_equal(cl_faults_parse("heal@1s;bogus@2s", list, 4, err, sizeof err), CL_EINVAL);
	assert_non_null(strstr(err, "bogus"));
}

/* ---- real clusters ---- */

static struct cl_cluster *start(enum cl_system sys, const char *binary, int netns)
{
	struct cl_spec s;
	char err[CL_ERR_MAX] = "";
	cl_spec_init(&s);
	s.system = sys;
	snprintf(s.binary, sizeof s.binary, "%s", binary);
	s.heartbeat_ms = 50;
	s.election_ms = 500;
	s.netns = netns;
	s.start_timeout_ms = 30000;
	int rc = cl_create(&s, &g_c, err, sizeof err);
	if (rc != 0)
		fail_msg("cl_create: %s", err);
	if (cl_start(g_c) != 0)
		fail_msg("cl_start: %s", cl_errmsg(g_c));
	return g_c;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static int64_t ms_since(int64_t t0)
{
	return (cl_now_ns() - t0) / 1000000;
}

/* Start, leader, kill the leader, a new leader: what every system must do. */
static int kill_leader_and_see_another(struct cl_cluster *c)
{
	assert_int_equal(cl_size(c), 3);
	for (int i = 0; i < 3; i++) {
		assert_true(cl_pid(c, i) > 0);
		assert_int_equal(cl_state(c, i), CL_RUNNING);
		assert_true(cl_member_id(c, i) != 0);
		assert_non_null(strstr(cl_endpoint(c, i), "http://"));
		assert_non_null(strstr(cl_endpoints(c), cl_endpoint(c, i)));
		for (int j = 0; j < i; j++)
			assert_true(cl_member_id(c, i) != cl_member_id(c, j));
		assert_int_equal(access(cl_log_path(c, i), R_OK), 0);
	}
	int l = cl_wait_leader(c, -1, 10000);
	if (l < 0)
		fail_msg("no leader: %s", cl_errmsg(c));
	struct cl_status st;
	assert_int_equal(cl_status(c, l, 2000, &st), 0);
	assert_true(st.member_id == cl_member_id(c, l));
	assert_true(st.leader == cl_member_id(c, l));
	assert_true(st.raft_term >= 1);

	int64_t t0 = cl_now_ns();
	assert_int_equal(cl_kill(c, l), 0);
	assert_int_equal(cl_pid(c, l), 0);
	assert_int_equal(cl_state(c, l), CL_DOWN);
	int nl = cl_wait_leader(c, l, 15000);
	if (nl < 0)
		fail_msg("no new leader after killing %s: %s", cl_name(c, l), cl_errmsg(c));
	assert_true(nl != l);
	print_message("  %s: killed leader %s, new leader %s after %lld ms\n",
		      cl_system_name(cl_get_spec(c)->system), cl_name(c, l), cl_name(c, nl),
		      (long long)ms_since(t0));
	/* A killed member cannot be killed again, nor a running one restarted. */
	assert_int_equal(cl_kill(c, l), CL_ESTATE);
	assert_non_null(strstr(cl_errmsg(c), "is not running"));
	assert_int_equal(cl_restart(c, nl), CL_ESTATE);
	return l;
}

static void test_cairn_faults(void **state)
{
	(void)state;
#ifndef CAIRN_BIN
	print_message("  skipped: built without the cairn target (CAIRN_BIN)\n");
	skip();
#else
	struct cl_cluster *c = start(CL_SYS_CAIRN, CAIRN_BIN, 0);
	int l = kill_leader_and_see_another(c);

	assert_int_equal(cl_restart(c, l), 0);
	assert_true(cl_pid(c, l) > 0);
	if (cl_wait_healthy(c, 20000) != 0)
		fail_msg("after restart: %s", cl_errmsg(c));
	struct cl_status st;
	assert_int_equal(cl_status(c, l, 2000, &st), 0);
	assert_true(st.member_id == cl_member_id(c, l));

	/* A paused follower: the leader is still found, and without waiting for the paused one. */
	int leader = cl_wait_leader(c, -1, 10000);
	assert_true(leader >= 0);
	int f = (leader + 1) % 3;
	assert_int_equal(cl_pause(c, f), 0);
	assert_int_equal(cl_state(c, f), CL_PAUSED);
	assert_true(cl_pid(c, f) > 0);
	assert_int_equal(cl_pause(c, f), CL_ESTATE);
	int64_t t0 = cl_now_ns();
	int l2 = cl_leader(c, 3000);
	assert_true(l2 >= 0 && l2 != f);
	assert_true(ms_since(t0) < 2500);
	/* Asking the paused member itself times out within the bound. */
	t0 = cl_now_ns();
	assert_int_equal(cl_status(c, f, 300, &st), CL_ETIMEDOUT);
	assert_true(ms_since(t0) < 1500);
	assert_int_equal(cl_resume(c, f), 0);
	assert_int_equal(cl_state(c, f), CL_RUNNING);
	assert_int_equal(cl_resume(c, f), CL_ESTATE);
	if (cl_wait_healthy(c, 20000) != 0)
		fail_msg("after resume: %s", cl_errmsg(c));

	/* Network faults need namespaces. */
	int one = 0;
	assert_int_equal(cl_partition(c, &one, 1), CL_ENOTSUP);
	assert_non_null(strstr(cl_errmsg(c), "needs netns = on (root)"));
	assert_int_equal(cl_netem(c, 0, 50, 0, 1.0), CL_ENOTSUP);
	assert_non_null(strstr(cl_errmsg(c), "needs netns = on (root)"));
	assert_int_equal(cl_kill(c, 7), CL_EINVAL);
#endif
}

struct reader {
	struct cl_cluster *c;
	int stop;
	int reads;
	pthread_mutex_t mu;
};

/* Reads the events while the schedule runs, as the driver's progress line does. */
static void *read_events(void *arg)
{
	struct reader *r = arg;
	for (int iter = 0; iter < 10000; iter++) {
		pthread_mutex_lock(&r->mu);
		int stop = r->stop;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		struct cl_event *ev = NULL;
		int n = 0;
		if (cl_schedule_events(r->c, &ev, &n) == 0) {
			for (int k = 0; k < n; k++)
				assert_true(ev[k].index >= 0 && ev[k].index < 3);
			free(ev);
			r->reads++;
		}
		sleep_ms(5);
	}
	return NULL;
}

static void test_cairn_schedule(void **state)
{
	(void)state;
#ifndef CAIRN_BIN
	print_message("  skipped: built without the cairn target (CAIRN_BIN)\n");
	skip();
#else
	struct cl_cluster *c = start(CL_SYS_CAIRN, CAIRN_BIN, 0);
	assert_true(cl_wait_leader(c, -1, 10000) >= 0);
	struct cl_fault faults[3];
	char err[CL_ERR_MAX] = "";
	int n = cl_faults_parse("kill-leader@200ms restart@2500ms pause-leader@3500ms+1500ms",
				faults, 3, err, sizeof err);
	assert_int_equal(n, 3);
	struct reader r = { .c = c };
	pthread_mutex_init(&r.mu, NULL);
	pthread_t th;
	int64_t t0 = cl_now_ns();
	assert_int_equal(cl_schedule_start(c, faults, n, t0), 0);
	assert_int_equal(cl_schedule_start(c, faults, n, t0), CL_ESTATE);
	assert_int_equal(pthread_create(&th, NULL, read_events, &r), 0);
	int rc = cl_schedule_wait(c);
	pthread_mutex_lock(&r.mu);
	r.stop = 1;
	pthread_mutex_unlock(&r.mu);
	pthread_join(th, NULL);
	pthread_mutex_destroy(&r.mu);
	assert_true(r.reads > 0);

	struct cl_event *ev = NULL;
	int ne = 0;
	assert_int_equal(cl_schedule_events(c, &ev, &ne), 0);
	for (int k = 0; k < ne; k++)
		print_message(
			"  %-40s rc %d member %s old %s new %s after %lld ms%s%s\n",
			ev[k].fault.text, ev[k].rc, cl_name(c, ev[k].member),
			cl_name(c, ev[k].old_leader), cl_name(c, ev[k].new_leader),
			ev[k].new_leader_ns ?
				(long long)((ev[k].new_leader_ns - ev[k].injected_ns) / 1000000) :
				-1LL,
			ev[k].rc ? ": " : "", ev[k].err);
	assert_int_equal(rc, 0);
	assert_int_equal(ne, 3);
	/* kill-leader: hit the leader, a different one followed. */
	assert_int_equal(ev[0].index, 0);
	assert_int_equal(ev[0].rc, 0);
	assert_true(ev[0].old_leader >= 0);
	assert_int_equal(ev[0].member, ev[0].old_leader);
	assert_true(ev[0].injected_ns >= t0 + 200000000LL);
	assert_true(ev[0].new_leader >= 0 && ev[0].new_leader != ev[0].member);
	assert_true(ev[0].leader_changed);
	assert_true(ev[0].new_leader_ns > ev[0].injected_ns);
	assert_true(ev[0].new_leader_ns - ev[0].injected_ns < 15000000000LL);
	/* restart: the member killed last. */
	assert_int_equal(ev[1].rc, 0);
	assert_int_equal(ev[1].fault.kind, CL_F_RESTART);
	assert_int_equal(ev[1].member, ev[0].member);
	assert_true(ev[1].injected_ns >= t0 + 2500000000LL);
	assert_true(ev[1].new_leader >= 0);
	/* pause-leader with a duration: continued afterwards, a new leader meanwhile. */
	assert_int_equal(ev[2].rc, 0);
	assert_int_equal(ev[2].member, ev[2].old_leader);
	assert_true(ev[2].new_leader >= 0 && ev[2].new_leader != ev[2].member);
	assert_true(ev[2].undone_ns >= ev[2].injected_ns + 1500000000LL);
	assert_int_equal(cl_state(c, ev[2].member), CL_RUNNING);
	free(ev);
	if (cl_wait_healthy(c, 20000) != 0)
		fail_msg("after the schedule: %s", cl_errmsg(c));

	/* A fault that cannot be applied is an error recorded in its event. */
	struct cl_fault bad;
	assert_int_equal(cl_fault_parse("kill-follower@0", &bad), 0);
	assert_int_equal(cl_schedule_start(c, &bad, 1, cl_now_ns()), 0);
	assert_int_equal(cl_schedule_wait(c), 0);
	assert_int_equal(cl_fault_parse("partition-leader@0+1s", &bad), 0);
	assert_int_equal(cl_schedule_start(c, &bad, 1, cl_now_ns()), 0);
	assert_int_equal(cl_schedule_wait(c), CL_ENOTSUP);
	assert_int_equal(cl_schedule_events(c, &ev, &ne), 0);
	assert_int_equal(ne, 1);
	assert_non_null(strstr(ev[0].err, "needs netns = on"));
	free(ev);
	/* Cancel: pending faults are dropped. */
	assert_int_equal(cl_fault_parse("kill-follower@60s", &bad), 0);
	assert_int_equal(cl_schedule_start(c, &bad, 1, cl_now_ns()), 0);
	int64_t tc = cl_now_ns();
	assert_int_equal(cl_schedule_cancel(c), 0);
	assert_true(ms_since(tc) < 2000);
	assert_int_equal(cl_schedule_events(c, &ev, &ne), 0);
	assert_int_equal(ne, 0);
	assert_null(ev);
#endif
}

static void test_etcd_faults(void **state)
{
	(void)state;
	if (access(ETCD_BIN, X_OK) != 0) {
		print_message("  skipped: %s is not installed (Debian: etcd-server)\n", ETCD_BIN);
		skip();
	}
	struct cl_cluster *c = start(CL_SYS_ETCD, ETCD_BIN, 0);
	int l = kill_leader_and_see_another(c);
	assert_int_equal(cl_restart(c, l), 0);
	if (cl_wait_healthy(c, 20000) != 0)
		fail_msg("after restart: %s", cl_errmsg(c));
	/* etcd's flags put its zap logs in the member's log file. */
	FILE *f = fopen(cl_log_path(c, 0), "r");
	assert_non_null(f);
	char line[512] = "";
	assert_non_null(fgets(line, sizeof line, f));
	fclose(f);
	assert_non_null(strstr(line, "\"level\""));
}

static void test_netns_partition(void **state)
{
	(void)state;
#ifndef CAIRN_BIN
	print_message("  skipped: built without the cairn target (CAIRN_BIN)\n");
	skip();
#else
	if (geteuid() != 0) {
		print_message("  skipped: network namespaces need root\n");
		skip();
	}
	struct cl_cluster *c = start(CL_SYS_CAIRN, CAIRN_BIN, 1);
	assert_non_null(strstr(cl_endpoint(c, 0), "http://10.213."));
	int l = cl_wait_leader(c, -1, 10000);
	if (l < 0)
		fail_msg("no leader: %s", cl_errmsg(c));
	int64_t t0 = cl_now_ns();
	assert_int_equal(cl_partition(c, &l, 1), 0);
	assert_true(cl_is_partitioned(c, l));
	assert_int_equal(cl_state(c, l), CL_RUNNING);
	int nl = cl_wait_leader(c, l, 15000);
	if (nl < 0)
		fail_msg("no new leader after cutting off %s: %s", cl_name(c, l), cl_errmsg(c));
	print_message("  cut off leader %s, new leader %s after %lld ms\n", cl_name(c, l),
		      cl_name(c, nl), (long long)ms_since(t0));
	/* Cut off, the old leader does not answer the bench either. */
	struct cl_status st;
	assert_int_equal(cl_status(c, l, 300, &st), CL_ETIMEDOUT);
	assert_int_equal(cl_heal(c), 0);
	assert_false(cl_is_partitioned(c, l));
	if (cl_wait_healthy(c, 20000) != 0)
		fail_msg("after heal: %s", cl_errmsg(c));
	/* The old leader rejoins and follows the new term's leader. */
	for (int iter = 0; iter < 200; iter++) {
		if (cl_status(c, l, 500, &st) == 0 && st.leader != 0 &&
		    st.leader != cl_member_id(c, l))
			break;
		sleep_ms(50);
	}
	assert_true(st.leader != 0 && st.leader != cl_member_id(c, l));

	/* This kernel has no qdiscs: netem says so, at once and every time after. */
	int rc = cl_netem(c, nl, 50, 0, 1.0);
	if (rc == 0) {
		print_message("  this kernel has sch_netem: delay applied\n");
		assert_int_equal(cl_netem(c, nl, 0, 0, 0.0), 0);
	} else {
		assert_int_equal(rc, CL_ENOTSUP);
		assert_string_equal(cl_errmsg(c),
				    "tc netem is not available on this kernel (sch_netem missing)");
		assert_int_equal(cl_netem(c, nl, 10, 0, 0.0), CL_ENOTSUP);
		assert_string_equal(cl_errmsg(c),
				    "tc netem is not available on this kernel (sch_netem missing)");
	}
	int have_netem = rc == 0;

	/* The same faults on a schedule, undone after their durations. */
	struct cl_fault faults[3];
	char err[CL_ERR_MAX] = "";
	assert_int_equal(cl_faults_parse("partition-minority@100ms+1s;"
					 "netem-leader:delay=20ms,loss=1%@300ms+500ms;"
					 "partition-leader@1500ms+1500ms",
					 faults, 3, err, sizeof err),
			 3);
	assert_int_equal(cl_schedule_start(c, faults, 3, cl_now_ns()), 0);
	rc = cl_schedule_wait(c);
	struct cl_event *ev = NULL;
	int ne = 0;
	assert_int_equal(cl_schedule_events(c, &ev, &ne), 0);
	for (int k = 0; k < ne; k++)
		print_message(
			"  %-44s rc %d member %s old %s new %s after %lld ms%s%s\n",
			ev[k].fault.text, ev[k].rc, cl_name(c, ev[k].member),
			cl_name(c, ev[k].old_leader), cl_name(c, ev[k].new_leader),
			ev[k].new_leader_ns ?
				(long long)((ev[k].new_leader_ns - ev[k].injected_ns) / 1000000) :
				-1LL,
			ev[k].rc ? ": " : "", ev[k].err);
	assert_int_equal(ne, 3);
	assert_int_equal(rc, have_netem ? 0 : CL_ENOTSUP);
	/* partition-minority: a follower, healed after 1 s, the leader unchanged or re-elected. */
	assert_int_equal(ev[0].rc, 0);
	assert_true(ev[0].member >= 0 && ev[0].member != ev[0].old_leader);
	assert_true(ev[0].undone_ns >= ev[0].injected_ns + 1000000000LL);
	assert_true(ev[0].new_leader >= 0);
	if (!have_netem) {
		assert_int_equal(ev[1].rc, CL_ENOTSUP);
		assert_string_equal(ev[1].err,
				    "tc netem is not available on this kernel (sch_netem missing)");
	}
	assert_int_equal(ev[2].rc, 0);
	assert_int_equal(ev[2].member, ev[2].old_leader);
	assert_true(ev[2].new_leader >= 0 && ev[2].new_leader != ev[2].member);
	assert_true(ev[2].undone_ns >= ev[2].injected_ns + 1500000000LL);
	free(ev);
	for (int i = 0; i < 3; i++)
		assert_false(cl_is_partitioned(c, i));
	if (cl_wait_healthy(c, 20000) != 0)
		fail_msg("after the schedule: %s", cl_errmsg(c));
#endif
}

/* A child process starts a one-member cluster, reports the member's pid and the data dir, then
 * ends the way asked: exit() without cl_free (atexit cleanup), or SIGKILL from us (the member
 * dies with it). Returns the child's pid. */
static pid_t child_with_cluster(int how_exit, pid_t *member, char *dir, size_t dirlen)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		struct cl_spec s;
		char err[CL_ERR_MAX];
		cl_spec_init(&s);
		s.members = 1;
		snprintf(s.binary, sizeof s.binary, "%s", CAIRN_BIN);
		struct cl_cluster *c = NULL;
		if (cl_create(&s, &c, err, sizeof err) != 0 || cl_start(c) != 0)
			_exit(3);
		pid_t mp = cl_pid(c, 0);
		char buf[600];
		int n = snprintf(buf, sizeof buf, "%d %s\n", (int)mp, cl_dir(c));
		if (write(p[1], buf, (size_t)n) != n)
			_exit(4);
		close(p[1]);
		if (how_exit)
			exit(0); /* c is left alive on purpose */
		for (int i = 0; i < 600; i++)
			sleep_ms(100);
		_exit(5);
	}
	close(p[1]);
	char buf[600] = "";
	size_t got = 0;
	for (int i = 0; i < 1000 && got < sizeof buf - 1; i++) {
		ssize_t k = read(p[0], buf + got, sizeof buf - 1 - got);
		if (k <= 0)
			break;
		got += (size_t)k;
		if (memchr(buf, '\n', got) != NULL)
			break;
	}
	close(p[0]);
	buf[got] = '\0';
	int mp = 0;
	assert_int_equal(sscanf(buf, "%d %511s", &mp, dir), 2);
	(void)dirlen;
	*member = (pid_t)mp;
	return pid;
}

/* The member was the child's: once gone it is reaped by init, so kill(pid, 0) fails. */
static int gone_within(pid_t pid, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (kill(pid, 0) != 0)
			return 1;
		sleep_ms(10);
	}
	return 0;
}

static void test_abnormal_exit(void **state)
{
	(void)state;
#ifndef CAIRN_BIN
	print_message("  skipped: built without the cairn target (CAIRN_BIN)\n");
	skip();
#else
	char dir[512] = "";
	pid_t member = 0;
	/* exit() without cl_free: the atexit handler kills the member and removes the dir. */
	pid_t child = child_with_cluster(1, &member, dir, sizeof dir);
	int status = 0;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(member > 0);
	assert_true(gone_within(member, 5000));
	assert_int_equal(access(dir, F_OK), -1);
	/* SIGKILL of the bench: the member dies with it (the dir stays: nothing can run). */
	child = child_with_cluster(0, &member, dir, sizeof dir);
	assert_true(member > 0);
	assert_int_equal(kill(member, 0), 0);
	assert_int_equal(kill(child, SIGKILL), 0);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(gone_within(member, 5000));
	assert_int_equal(access(dir, F_OK), 0);
	h_tmpdir_remove(dir);
#endif
}

/* cl_claim_ports in a claims directory of its own ($TMPDIR): every port of the range claimed by
 * a live process (pid 1) but ten, whose claims belong to a process that has exited; the ten are
 * exactly what a claim gets, claimed for this process, then none is left, not even for this
 * process again; cl_release_ports gives them back. */
static void test_claim_ports(void **state)
{
	(void)state;
	char dir[256], path[320];
	const char *old_tmp = getenv("TMPDIR");
	char saved[256] = "";
	if (old_tmp != NULL)
		snprintf(saved, sizeof saved, "%s", old_tmp);
	h_tmpdir_make(dir, sizeof dir, "claims");
	assert_int_equal(setenv("TMPDIR", dir, 1), 0);
	snprintf(path, sizeof path, "%s/cairn-ports", dir);
	assert_int_equal(mkdir(path, 0755), 0);

	pid_t dead = fork();
	assert_true(dead >= 0);
	if (dead == 0)
		_exit(0);
	int status;
	assert_int_equal(waitpid(dead, &status, 0), dead);

	int free_ports[10], nfree = 0, first_free;
	/* ten ports bindable now, from a probe claim (the directory is empty so far) */
	assert_int_equal(cl_claim_ports(10, free_ports), 0);
	first_free = free_ports[0];
	for (int port = 20000; port <= 32767; port++) {
		bool is_free = false;
		for (int j = 0; j < 10; j++)
			is_free = is_free || free_ports[j] == port;
		snprintf(path, sizeof path, "%s/cairn-ports/%d", dir, port);
		FILE *f = fopen(path, "w");
		assert_non_null(f);
		fprintf(f, "%d\n", is_free ? (int)dead : 1);
		fclose(f);
		nfree += is_free;
	}
	assert_int_equal(nfree, 10);

	int got[10];
	assert_int_equal(cl_claim_ports(10, got), 0);
	for (int i = 0; i < 10; i++) {
		bool known = false;
		for (int j = 0; j < 10; j++)
			known = known || got[i] == free_ports[j];
		assert_true(known);
		for (int j = 0; j < i; j++)
			assert_int_not_equal(got[i], got[j]);
		snprintf(path, sizeof path, "%s/cairn-ports/%d", dir, got[i]);
		FILE *f = fopen(path, "r");
		assert_non_null(f);
		long owner = 0;
		assert_int_equal(fscanf(f, "%ld", &owner), 1);
		fclose(f);
		assert_int_equal(owner, (long)getpid());
	}
	int more;
	assert_int_equal(cl_claim_ports(1, &more), CL_ESYS); /* ours are taken too */
	cl_release_ports(got, 10);
	snprintf(path, sizeof path, "%s/cairn-ports/%d", dir, first_free);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(cl_claim_ports(1, &more), 0); /* released: usable again */
	cl_release_ports(&more, 1);

	if (saved[0] != '\0')
		setenv("TMPDIR", saved, 1);
	else
		unsetenv("TMPDIR");
	h_tmpdir_remove(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_defaults),
		cmocka_unit_test(test_spec_file_good),
		cmocka_unit_test(test_spec_file_bad),
		cmocka_unit_test(test_fault_parse),
		cmocka_unit_test(test_claim_ports),
		cmocka_unit_test_teardown(test_cairn_faults, teardown_cluster),
		cmocka_unit_test_teardown(test_cairn_schedule, teardown_cluster),
		cmocka_unit_test_teardown(test_etcd_faults, teardown_cluster),
		cmocka_unit_test_teardown(test_netns_partition, teardown_cluster),
		cmocka_unit_test(test_abnormal_exit),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	if (g_tmp[0] != '\0')
		h_tmpdir_remove(g_tmp);
	return rc;
}
