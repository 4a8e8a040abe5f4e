/* test_client.c: libcairn against real servers on 127.0.0.1: one Cairn member (KV, Txn,
 * compaction, watches, leases, keepalives, close, maybe_applied), a three-member Cairn cluster
 * (failover, watch resume across kill -9, Status of a named endpoint) and one etcd 3.4 member
 * (the same calls, to prove the library speaks to etcd too). Every child is killed by pid and
 * reaped in the group teardown and again at exit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "cairn.h"
#include "certs.h"
#include "cluster.h"
#include "tmpdir.h"

#ifndef CAIRN_BIN
#define CAIRN_BIN "cairn"
#endif
#define ETCD_BIN "/usr/bin/etcd"

/* ---- processes ---- */

#define MAX_PROCS 8
static pid_t procs[MAX_PROCS];
static char tmpdir[256];

static void kill_all(void)
{
	for (int i = 0; i < MAX_PROCS; i++) {
		if (procs[i] > 0) {
			kill(procs[i], SIGCONT);
			kill(procs[i], SIGKILL);
			waitpid(procs[i], NULL, 0);
			procs[i] = 0;
		}
	}
}

static void kill_one(pid_t pid)
{
	for (int i = 0; i < MAX_PROCS; i++) {
		if (procs[i] == pid) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			procs[i] = 0;
		}
	}
}

static pid_t spawn(char *const argv[], const char *log)
{
	int slot = -1;
	for (int i = 0; i < MAX_PROCS && slot < 0; i++)
		if (procs[i] == 0)
			slot = i;
	assert_true(slot >= 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		setenv("CAIRN_GOSSIP_STORE_MEMBERS", "false", 1);
		unsetenv("CAIRN_TEST_KEEP");
		/* Progress notifications every half second instead of etcd's ten minutes. */
		setenv("CAIRN_WATCH_PROGRESS_MS", "500", 1);
		execv(argv[0], argv);
		_exit(127);
	}
	procs[slot] = pid;
	return pid;
}

/* Ports claimed for this test (bench/cluster.h), so that a concurrent test does not take them;
 * given back at the end of main. */
static int claimed[64];
static int n_claimed;

static void free_ports(int *ports, int n)
{
	assert_true(n_claimed + n <= (int)(sizeof claimed / sizeof claimed[0]));
	assert_int_equal(cl_claim_ports(n, ports), 0);
	memcpy(claimed + n_claimed, ports, (size_t)n * sizeof *ports);
	n_claimed += n;
}

static int free_port(void)
{
	int port;
	free_ports(&port, 1);
	return port;
}

struct member {
	char name[16];
	char url[64];  /* client URL */
	char peer[64];
	int gport;
	pid_t pid;
};

static void start_cairn_x(struct member *m, const char *cluster, const char *token,
			  const char *join, char *const *extra)
{
	char data[300], log[300];
	snprintf(data, sizeof(data), "%s/%s.data", tmpdir, m->name);
	snprintf(log, sizeof(log), "%s/%s.log", tmpdir, m->name);
	char gossip[64];
	snprintf(gossip, sizeof(gossip), "127.0.0.1:%d", m->gport);
	char *argv[40];
	int n = 0;
	argv[n++] = (char *)CAIRN_BIN;
	argv[n++] = (char *)"--name";
	argv[n++] = m->name;
	argv[n++] = (char *)"--data-dir";
	argv[n++] = data;
	argv[n++] = (char *)"--listen-client-urls";
	argv[n++] = m->url;
	argv[n++] = (char *)"--advertise-client-urls";
	argv[n++] = m->url;
	argv[n++] = (char *)"--listen-peer-urls";
	argv[n++] = m->peer;
	argv[n++] = (char *)"--initial-advertise-peer-urls";
	argv[n++] = m->peer;
	argv[n++] = (char *)"--gossip-listen";
	argv[n++] = gossip;
	argv[n++] = (char *)"--gossip-store-members=false";
	argv[n++] = (char *)"--heartbeat-interval";
	argv[n++] = (char *)"50";
	argv[n++] = (char *)"--election-timeout";
	argv[n++] = (char *)"500";
	argv[n++] = (char *)"--log-level";
	argv[n++] = (char *)"warn";
	if (join != NULL && join[0] != '\0') {
		argv[n++] = (char *)"--gossip-join";
		argv[n++] = (char *)join;
	}
	if (cluster != NULL) {
		argv[n++] = (char *)"--initial-cluster";
		argv[n++] = (char *)cluster;
		argv[n++] = (char *)"--initial-cluster-state";
		argv[n++] = (char *)"new";
		argv[n++] = (char *)"--initial-cluster-token";
		argv[n++] = (char *)token;
	}
	for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 38; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	m->pid = spawn(argv, log);
}

static void start_cairn(struct member *m, const char *cluster, const char *token,
			const char *join)
{
	start_cairn_x(m, cluster, token, join, NULL);
}

static void start_etcd(struct member *m)
{
	char data[300], log[300], cluster[128];
	snprintf(data, sizeof(data), "%s/%s.etcd", tmpdir, m->name);
	snprintf(log, sizeof(log), "%s/%s.log", tmpdir, m->name);
	snprintf(cluster, sizeof(cluster), "%s=%s", m->name, m->peer);
	char *argv[] = {(char *)ETCD_BIN, (char *)"--name", m->name, (char *)"--data-dir", data,
			(char *)"--listen-client-urls", m->url, (char *)"--advertise-client-urls",
			m->url, (char *)"--listen-peer-urls", m->peer,
			(char *)"--initial-advertise-peer-urls", m->peer, (char *)"--initial-cluster",
			cluster, (char *)"--log-level", (char *)"warn", (char *)"--logger",
			(char *)"zap", NULL};
	m->pid = spawn(argv, log);
}

static void member_init(struct member *m, const char *name, int cport, int pport, int gport)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	snprintf(m->url, sizeof(m->url), "http://127.0.0.1:%d", cport);
	snprintf(m->peer, sizeof(m->peer), "http://127.0.0.1:%d", pport);
	m->gport = gport;
}

/* ---- the loop ---- */

static uv_loop_t loop;
static uv_timer_t guard;

static void guard_cb(uv_timer_t *t)
{
	(void)t;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop until *flag (or for ms when flag is NULL); false on timeout. */
static bool run_until(const bool *flag, uint64_t ms)
{
	uint64_t end = now_ms() + ms;
	uv_timer_start(&guard, guard_cb, 10, 10);
	while ((flag == NULL || !*flag) && now_ms() < end)
		uv_run(&loop, UV_RUN_ONCE);
	uv_timer_stop(&guard);
	return flag == NULL || *flag;
}

static bool cnt_ge(const size_t *cnt, size_t want, uint64_t ms)
{
	uint64_t end = now_ms() + ms;
	uv_timer_start(&guard, guard_cb, 10, 10);
	while (*cnt < want && now_ms() < end)
		uv_run(&loop, UV_RUN_ONCE);
	uv_timer_stop(&guard);
	return *cnt >= want;
}

static struct cairn_client *client_new(const char *const *eps, size_t n, size_t conns,
				       uint64_t timeout_ms)
{
	struct cairn_config cfg = {0};
	cfg.endpoints = eps;
	cfg.n_endpoints = n;
	cfg.connections = conns;
	cfg.request_timeout_ms = timeout_ms;
	cfg.dial_timeout_ms = 1000;
	cfg.keepalive_ms = 1000;
	cfg.keepalive_timeout_ms = 1000;
	struct cairn_client *c = NULL;
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), 0);
	assert_non_null(c);
	return c;
}

static void closed_cb(struct cairn_client *c, void *data)
{
	(void)c;
	*(bool *)data = true;
}

static void client_free(struct cairn_client *c)
{
	bool closed = false;
	cairn_client_close(c, closed_cb, &closed);
	assert_false(closed);
	assert_true(run_until(&closed, 5000));
}

/* ---- captured results ---- */

struct cap {
	bool done;
	int calls;
	int code;
	char msg[256];
	char endpoint[64];
	bool maybe;
	struct cairn_header h;
	/* range / delete / txn */
	int64_t count, deleted;
	bool more, succeeded;
	size_t n;
	char keys[8][32], vals[8][64];
	int64_t create[8], mod[8], version[8], lease[8];
	char prev[64];
	bool has_prev;
	int types[8];
	size_t n_sub[8];
	/* lease */
	int64_t id, ttl, granted;
	size_t n_keys, n_leases;
	bool has_lease;
	int64_t want_lease;
	/* members and status */
	size_t n_members;
	char member_urls[4][64];
	char version_s[32];
	uint64_t leader;
};

static void cap_status(struct cap *k, const struct cairn_status *st)
{
	k->calls++;
	k->done = true;
	k->code = st->code;
	snprintf(k->msg, sizeof(k->msg), "%s", st->message);
	snprintf(k->endpoint, sizeof(k->endpoint), "%s", st->endpoint);
	k->maybe = st->maybe_applied;
}

static void cap_kvs(struct cap *k, const struct cairn_kv *kvs, size_t n)
{
	k->n = n;
	for (size_t i = 0; i < n && i < 8; i++) {
		snprintf(k->keys[i], sizeof(k->keys[i]), "%.*s", (int)kvs[i].key_len,
			 (const char *)kvs[i].key);
		snprintf(k->vals[i], sizeof(k->vals[i]), "%.*s", (int)kvs[i].value_len,
			 kvs[i].value != NULL ? (const char *)kvs[i].value : "");
		k->create[i] = kvs[i].create_revision;
		k->mod[i] = kvs[i].mod_revision;
		k->version[i] = kvs[i].version;
		k->lease[i] = kvs[i].lease;
	}
}

static void range_cb(void *data, const struct cairn_status *st, const struct cairn_range_result *r)
{
	struct cap *k = data;
	cap_status(k, st);
	if (st->code != 0) {
		assert_null(r);
		return;
	}
	k->h = r->header;
	k->count = r->count;
	k->more = r->more;
	cap_kvs(k, r->kvs, r->n_kvs);
}

static void put_cb(void *data, const struct cairn_status *st, const struct cairn_put_result *r)
{
	struct cap *k = data;
	cap_status(k, st);
	if (st->code != 0) {
		assert_null(r);
		return;
	}
	k->h = r->header;
	k->has_prev = r->prev_kv != NULL;
	if (r->prev_kv != NULL)
		snprintf(k->prev, sizeof(k->prev), "%.*s", (int)r->prev_kv->value_len,
			 (const char *)r->prev_kv->value);
}

static void delete_cb(void *data, const struct cairn_status *st,
		      const struct cairn_delete_result *r)
{
	struct cap *k = data;
	cap_status(k, st);
	if (st->code != 0)
		return;
	k->h = r->header;
	k->deleted = r->deleted;
	cap_kvs(k, r->prev_kvs, r->n_prev_kvs);
}

static void txn_cb(void *data, const struct cairn_status *st, const struct cairn_txn_result *r)
{
	struct cap *k = data;
	cap_status(k, st);
	if (st->code != 0)
		return;
	k->h = r->header;
	k->succeeded = r->succeeded;
	k->n = r->n_results;
	for (size_t i = 0; i < r->n_results && i < 8; i++) {
		const struct cairn_op_result *o = &r->results[i];
		k->types[i] = o->type;
		if (o->type == CAIRN_OP_RANGE) {
			k->n_sub[i] = o->u.range.n_kvs;
			if (o->u.range.n_kvs > 0)
				snprintf(k->vals[i], sizeof(k->vals[i]), "%.*s",
					 (int)o->u.range.kvs[0].value_len,
					 (const char *)o->u.range.kvs[0].value);
		} else if (o->type == CAIRN_OP_DELETE) {
			k->n_sub[i] = (size_t)o->u.del.deleted;
		} else {
			k->n_sub[i] = o->u.put.prev_kv != NULL;
		}
	}
}

static void header_cb(void *data, const struct cairn_status *st, const struct cairn_header *h)
{
	struct cap *k = data;
	cap_status(k, st);
	if (h != NULL)
		k->h = *h;
}

static void lease_cb(void *data, const struct cairn_status *st,
		     const struct cairn_lease_result *r)
{
	struct cap *k = data;
	cap_status(k, st);
	if (r == NULL)
		return;
	k->h = r->header;
	k->id = r->id;
	k->ttl = r->ttl;
	k->granted = r->granted_ttl;
	k->n_keys = r->n_keys;
	if (r->n_keys > 0)
		snprintf(k->keys[0], sizeof(k->keys[0]), "%.*s", (int)r->keys[0].key_len,
			 (const char *)r->keys[0].key);
	k->n_leases = r->n_leases;
	k->has_lease = false;
	for (size_t i = 0; i < r->n_leases; i++)
		k->has_lease = k->has_lease || r->leases[i] == k->want_lease;
}

static void members_cb(void *data, const struct cairn_status *st,
		       const struct cairn_member_list_result *r)
{
	struct cap *k = data;
	cap_status(k, st);
	if (r == NULL)
		return;
	k->h = r->header;
	k->n_members = r->n_members;
	for (size_t i = 0; i < r->n_members && i < 4; i++) {
		assert_non_null(r->members[i].name);
		k->member_urls[i][0] = '\0';
		if (r->members[i].n_client_urls > 0)
			snprintf(k->member_urls[i], sizeof(k->member_urls[i]), "%s",
				 r->members[i].client_urls[0]);
		assert_true(r->members[i].id != 0);
	}
}

static void status_cb(void *data, const struct cairn_status *st,
		      const struct cairn_status_result *r)
{
	struct cap *k = data;
	cap_status(k, st);
	if (r == NULL)
		return;
	k->h = r->header;
	snprintf(k->version_s, sizeof(k->version_s), "%s", r->version);
	k->leader = r->leader;
}

#define KEY(s) (const uint8_t *)(s), strlen(s)

/* Starts a call, checks the callback did not run inside it, waits for it. */
#define WAIT(k, call)                                           \
	do {                                                    \
		memset(&(k), 0, sizeof(k));                     \
		assert_int_equal((call), 0);                    \
		assert_false((k).done);                         \
		assert_true(run_until(&(k).done, 10000));       \
		assert_int_equal((k).calls, 1);                 \
	} while (0)

static struct cap do_put(struct cairn_client *c, const char *key, const char *val,
			 const struct cairn_put_opts *o)
{
	struct cap k;
	WAIT(k, cairn_put(c, KEY(key), (const uint8_t *)val, strlen(val), o, put_cb, &k));
	return k;
}

static struct cap do_range(struct cairn_client *c, const char *key,
			   const struct cairn_range_opts *o)
{
	struct cap k;
	WAIT(k, cairn_range(c, KEY(key), o, range_cb, &k));
	return k;
}

/* Puts until one succeeds (a cluster electing its leader answers UNAVAILABLE meanwhile). */
static void wait_writable(struct cairn_client *c, uint64_t ms)
{
	uint64_t end = now_ms() + ms;
	for (int i = 0; i < 400 && now_ms() < end; i++) {
		struct cap k = do_put(c, "/ready", "1", NULL);
		if (k.code == 0)
			return;
		run_until(NULL, 50);
	}
	fail_msg("no write succeeded within %llu ms", (unsigned long long)ms);
}

/* ---- watches ---- */

#define MAX_EV 256
struct wcap {
	size_t n_ev, batches, finals, progress;
	int types[MAX_EV];
	char keys[MAX_EV][32];
	char vals[MAX_EV][32];
	int64_t mods[MAX_EV];
	bool prevs[MAX_EV];
	char prevvals[MAX_EV][32];
	bool canceled;
	int code;
	char msg[128];
	int64_t compact;
	bool final_seen;
};

static void watch_cb(void *data, struct cairn_watch *w, const struct cairn_watch_batch *b)
{
	struct wcap *k = data;
	(void)w;
	if (k->final_seen)
		fail_msg("watch callback after its final one");
	k->batches++;
	if (b->n_events == 0 && !b->canceled)
		k->progress++;
	for (size_t i = 0; i < b->n_events && k->n_ev < MAX_EV; i++) {
		const struct cairn_event *e = &b->events[i];
		size_t j = k->n_ev++;
		k->types[j] = e->type;
		snprintf(k->keys[j], sizeof(k->keys[j]), "%.*s", (int)e->kv.key_len,
			 (const char *)e->kv.key);
		snprintf(k->vals[j], sizeof(k->vals[j]), "%.*s", (int)e->kv.value_len,
			 e->kv.value != NULL ? (const char *)e->kv.value : "");
		k->mods[j] = e->kv.mod_revision;
		k->prevs[j] = e->prev_kv != NULL;
		if (e->prev_kv != NULL)
			snprintf(k->prevvals[j], sizeof(k->prevvals[j]), "%.*s",
				 (int)e->prev_kv->value_len, (const char *)e->prev_kv->value);
	}
	if (b->canceled) {
		k->finals++;
		k->final_seen = true;
		k->canceled = true;
		k->code = b->status.code;
		snprintf(k->msg, sizeof(k->msg), "%s", b->status.message);
		k->compact = b->compact_revision;
	}
}

/* ---- keepalives ---- */

struct kacap {
	size_t answers, finals;
	int code;
	char msg[128];
	int64_t last_ttl, final_ttl;
	bool final_seen;
};

static void ka_cb(void *data, struct cairn_keepalive *ka, const struct cairn_status *st,
		  const struct cairn_lease_result *res, bool final)
{
	struct kacap *k = data;
	(void)ka;
	if (k->final_seen)
		fail_msg("keepalive callback after its final one");
	if (final) {
		k->finals++;
		k->final_seen = true;
		k->code = st->code;
		snprintf(k->msg, sizeof(k->msg), "%s", st->message);
		k->final_ttl = res != NULL ? res->ttl : 0;
		return;
	}
	assert_int_equal(st->code, 0);
	assert_non_null(res);
	assert_true(res->ttl > 0);
	k->answers++;
	k->last_ttl = res->ttl;
}

/* ---- groups: servers ---- */

static struct member one;      /* a lone Cairn member */
static struct member three[3]; /* a Cairn cluster */
static struct member etcd1;    /* a lone etcd member */

static int setup_one(void **state)
{
	(void)state;
	h_tmpdir_make(tmpdir, sizeof(tmpdir), "cairn-client");
	int p[3];
	free_ports(p, 3);
	member_init(&one, "c1", p[0], p[1], p[2]);
	start_cairn(&one, NULL, NULL, NULL);
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	kill_all();
	if (tmpdir[0] != '\0') {
		/* CAIRN_TEST_KEEP=1 keeps the members' data and logs for a look after a failure. */
		if (getenv("CAIRN_TEST_KEEP") == NULL)
			h_tmpdir_remove(tmpdir);
		else
			fprintf(stderr, "kept %s\n", tmpdir);
		tmpdir[0] = '\0';
	}
	return 0;
}

static int setup_three(void **state)
{
	(void)state;
	h_tmpdir_make(tmpdir, sizeof(tmpdir), "cairn-client3");
	int p[9];
	free_ports(p, 9);
	char cluster[256] = "";
	for (int i = 0; i < 3; i++) {
		char name[8];
		snprintf(name, sizeof(name), "m%d", i + 1);
		member_init(&three[i], name, p[i], p[3 + i], p[6 + i]);
		size_t l = strlen(cluster);
		snprintf(cluster + l, sizeof(cluster) - l, "%s%s=%s", i ? "," : "", name,
			 three[i].peer);
	}
	char token[32];
	snprintf(token, sizeof(token), "client-%d", (int)getpid());
	for (int i = 0; i < 3; i++) {
		char join[128] = "";
		for (int j = 0; j < 3; j++) {
			if (j == i)
				continue;
			size_t l = strlen(join);
			snprintf(join + l, sizeof(join) - l, "%s127.0.0.1:%d", l ? "," : "",
				 three[j].gport);
		}
		start_cairn(&three[i], cluster, token, join);
	}
	return 0;
}

static int setup_etcd(void **state)
{
	(void)state;
	if (access(ETCD_BIN, X_OK) != 0)
		return 0;
	h_tmpdir_make(tmpdir, sizeof(tmpdir), "cairn-client-etcd");
	int p[2];
	free_ports(p, 2);
	member_init(&etcd1, "e1", p[0], p[1], 0);
	start_etcd(&etcd1);
	return 0;
}

static struct cairn_client *one_client(void)
{
	const char *eps[] = {one.url};
	struct cairn_client *c = client_new(eps, 1, 1, 5000);
	wait_writable(c, 15000);
	return c;
}

/* ---- tests: one member ---- */

static void test_kv(void **state)
{
	(void)state;
	struct cairn_client *c = one_client();
	struct cap k = do_put(c, "/kv/a", "1", NULL);
	assert_int_equal(k.code, 0);
	assert_string_equal(k.msg, "");
	assert_string_equal(k.endpoint, one.url);
	assert_false(k.has_prev);
	assert_true(k.h.revision > 0);
	assert_true(k.h.cluster_id != 0);
	assert_true(k.h.member_id != 0);
	assert_true(k.h.raft_term > 0);
	int64_t r1 = k.h.revision;
	struct cairn_put_opts po = {.prev_kv = true};
	k = do_put(c, "/kv/a", "2", &po);
	assert_int_equal(k.code, 0);
	assert_true(k.has_prev);
	assert_string_equal(k.prev, "1");
	assert_int_equal(k.h.revision, r1 + 1);
	k = do_put(c, "/kv/b", "3", NULL);
	k = do_put(c, "/kv/c", "4", NULL);
	int64_t r4 = k.h.revision;

	/* single key */
	k = do_range(c, "/kv/a", NULL);
	assert_int_equal(k.code, 0);
	assert_int_equal(k.n, 1);
	assert_int_equal(k.count, 1);
	assert_string_equal(k.keys[0], "/kv/a");
	assert_string_equal(k.vals[0], "2");
	assert_int_equal(k.create[0], r1);
	assert_int_equal(k.mod[0], r1 + 1);
	assert_int_equal(k.version[0], 2);
	assert_int_equal(k.lease[0], 0);
	assert_int_equal(k.h.revision, r4);
	/* prefix, limit, sort, count_only, keys_only, old revision */
	uint8_t end[16];
	struct cairn_range_opts ro = {0};
	ro.range_end = end;
	ro.range_end_len = cairn_prefix_end(KEY("/kv/"), end);
	ro.limit = 2;
	k = do_range(c, "/kv/", &ro);
	assert_int_equal(k.n, 2);
	assert_true(k.more);
	assert_int_equal(k.count, 3);
	ro.limit = 0;
	ro.sort_order = CAIRN_SORT_DESCEND;
	k = do_range(c, "/kv/", &ro);
	assert_int_equal(k.n, 3);
	assert_string_equal(k.keys[0], "/kv/c");
	ro.sort_order = 0;
	ro.count_only = true;
	k = do_range(c, "/kv/", &ro);
	assert_int_equal(k.n, 0);
	assert_int_equal(k.count, 3);
	ro.count_only = false;
	ro.keys_only = true;
	ro.serializable = true;
	k = do_range(c, "/kv/", &ro);
	assert_int_equal(k.n, 3);
	assert_string_equal(k.vals[0], "");
	struct cairn_range_opts old = {.revision = r1};
	k = do_range(c, "/kv/a", &old);
	assert_string_equal(k.vals[0], "1");
	k = do_range(c, "/kv/none", NULL);
	assert_int_equal(k.code, 0);
	assert_int_equal(k.n, 0);

	/* delete with prev_kv, and a range delete */
	struct cairn_delete_opts dopt = {.prev_kv = true};
	WAIT(k, cairn_delete(c, KEY("/kv/a"), &dopt, delete_cb, &k));
	assert_int_equal(k.code, 0);
	assert_int_equal(k.deleted, 1);
	assert_int_equal(k.n, 1);
	assert_string_equal(k.vals[0], "2");
	struct cairn_delete_opts dr = {0};
	dr.range_end = end;
	dr.range_end_len = cairn_prefix_end(KEY("/kv/"), end);
	WAIT(k, cairn_delete(c, KEY("/kv/"), &dr, delete_cb, &k));
	assert_int_equal(k.deleted, 2);
	assert_int_equal(k.n, 0);
	k = do_range(c, "/kv/b", NULL);
	assert_int_equal(k.n, 0);
	/* ignore_value on a missing key: etcd's error */
	struct cairn_put_opts iv = {.ignore_value = true};
	k = do_put(c, "/kv/missing", "", &iv);
	assert_int_equal(k.code, CAIRN_INVALID_ARGUMENT);
	assert_string_equal(k.msg, "etcdserver: key not found");
	assert_false(k.maybe);
	client_free(c);
}

static void test_txn(void **state)
{
	(void)state;
	struct cairn_client *c = one_client();
	struct cap k = do_put(c, "/txn/x", "v1", NULL);
	int64_t rev = k.h.revision;
	struct cairn_compare cmp[2] = {
		{.result = CAIRN_CMP_EQUAL, .target = CAIRN_CMP_VALUE, .key = (const uint8_t *)"/txn/x",
		 .key_len = 6, .value = (const uint8_t *)"v1", .value_len = 2},
		{.result = CAIRN_CMP_EQUAL, .target = CAIRN_CMP_MOD, .key = (const uint8_t *)"/txn/x",
		 .key_len = 6, .number = rev},
	};
	struct cairn_op ops[3] = {
		{.type = CAIRN_OP_PUT, .key = (const uint8_t *)"/txn/x", .key_len = 6,
		 .value = (const uint8_t *)"v2", .value_len = 2, .prev_kv = true},
		{.type = CAIRN_OP_RANGE, .key = (const uint8_t *)"/txn/x", .key_len = 6},
		{.type = CAIRN_OP_PUT, .key = (const uint8_t *)"/txn/y", .key_len = 6,
		 .value = (const uint8_t *)"y", .value_len = 1},
	};
	struct cairn_op fops[2] = {
		{.type = CAIRN_OP_RANGE, .key = (const uint8_t *)"/txn/x", .key_len = 6},
		{.type = CAIRN_OP_DELETE, .key = (const uint8_t *)"/txn/y", .key_len = 6},
	};
	struct cairn_txn t = {cmp, 2, ops, 3, fops, 2, 0};
	WAIT(k, cairn_txn(c, &t, txn_cb, &k));
	assert_int_equal(k.code, 0);
	assert_true(k.succeeded);
	assert_int_equal(k.n, 3);
	assert_int_equal(k.types[0], CAIRN_OP_PUT);
	assert_int_equal(k.n_sub[0], 1); /* prev_kv came back */
	assert_int_equal(k.types[1], CAIRN_OP_RANGE);
	assert_int_equal(k.n_sub[1], 1);
	assert_string_equal(k.vals[1], "v2"); /* the put before it in the same txn */
	assert_int_equal(k.types[2], CAIRN_OP_PUT);
	assert_int_equal(k.h.revision, rev + 1);
	/* Same compares again: the value is v2 now, so the failure branch runs. */
	WAIT(k, cairn_txn(c, &t, txn_cb, &k));
	assert_int_equal(k.code, 0);
	assert_false(k.succeeded);
	assert_int_equal(k.n, 2);
	assert_int_equal(k.types[0], CAIRN_OP_RANGE);
	assert_string_equal(k.vals[0], "v2");
	assert_int_equal(k.types[1], CAIRN_OP_DELETE);
	assert_int_equal(k.n_sub[1], 1);
	k = do_range(c, "/txn/y", NULL);
	assert_int_equal(k.n, 0);
	/* An empty txn succeeds. */
	struct cairn_txn empty = {0};
	WAIT(k, cairn_txn(c, &empty, txn_cb, &k));
	assert_int_equal(k.code, 0);
	assert_true(k.succeeded);
	assert_int_equal(k.n, 0);
	client_free(c);
}

static void test_compact(void **state)
{
	(void)state;
	struct cairn_client *c = one_client();
	struct cap k = do_put(c, "/cmp/a", "1", NULL);
	int64_t r1 = k.h.revision;
	do_put(c, "/cmp/a", "2", NULL);
	k = do_put(c, "/cmp/a", "3", NULL);
	int64_t r3 = k.h.revision;
	WAIT(k, cairn_compact(c, r3, true, header_cb, &k));
	assert_int_equal(k.code, 0);
	assert_true(k.h.revision >= r3);
	struct cairn_range_opts ro = {.revision = r1};
	k = do_range(c, "/cmp/a", &ro);
	assert_int_equal(k.code, CAIRN_OUT_OF_RANGE);
	assert_string_equal(k.msg, "etcdserver: mvcc: required revision has been compacted");
	assert_false(k.maybe);
	ro.revision = r3;
	k = do_range(c, "/cmp/a", &ro);
	assert_int_equal(k.code, 0);
	assert_string_equal(k.vals[0], "3");
	/* A watch from before the compaction ends at once, with the compact revision. */
	struct wcap w = {0};
	struct cairn_watch_opts wo = {.start_revision = r1};
	struct cairn_watch *h = NULL;
	assert_int_equal(cairn_watch(c, KEY("/cmp/a"), &wo, watch_cb, &w, &h), 0);
	assert_true(run_until(&w.final_seen, 5000));
	assert_int_equal(w.finals, 1);
	assert_int_equal(w.n_ev, 0);
	assert_int_equal(w.compact, r3);
	assert_int_equal(w.code, CAIRN_OUT_OF_RANGE);
	assert_string_equal(w.msg, "etcdserver: mvcc: required revision has been compacted");
	/* Compacting again at the same revision: etcd's error. */
	WAIT(k, cairn_compact(c, r3, false, header_cb, &k));
	assert_int_equal(k.code, CAIRN_OUT_OF_RANGE);
	assert_string_equal(k.msg, "etcdserver: mvcc: required revision has been compacted");
	client_free(c);
}

static void test_watch(void **state)
{
	(void)state;
	struct cairn_client *c = one_client();
	struct cap k = do_put(c, "/w/a", "0", NULL);
	struct wcap w = {0}, wp = {0}, wnd = {0};
	struct cairn_watch *h = NULL, *hp = NULL, *hnd = NULL;
	uint8_t end[8];
	struct cairn_watch_opts wo = {0};
	wo.range_end = end;
	wo.range_end_len = cairn_prefix_end(KEY("/w/"), end);
	wo.prev_kv = true;
	assert_int_equal(cairn_watch(c, KEY("/w/"), &wo, watch_cb, &w, &h), 0);
	assert_int_equal(w.batches, 0);
	struct cairn_watch_opts wopp = {.progress_notify = true};
	assert_int_equal(cairn_watch(c, KEY("/w/quiet"), &wopp, watch_cb, &wp, &hp), 0);
	struct cairn_watch_opts nd = wo;
	nd.no_delete = true;
	nd.prev_kv = false;
	assert_int_equal(cairn_watch(c, KEY("/w/"), &nd, watch_cb, &wnd, &hnd), 0);
	/* Let the creates reach the server: a watch from "now" sees only later changes. */
	run_until(NULL, 300);
	assert_true(cairn_watch_revision(h) >= k.h.revision);
	k = do_put(c, "/w/a", "1", NULL);
	int64_t r1 = k.h.revision;
	do_put(c, "/w/b", "2", NULL);
	struct cap d;
	WAIT(d, cairn_delete(c, KEY("/w/a"), NULL, delete_cb, &d));
	size_t *n = &w.n_ev;
	assert_true(cnt_ge(n, 3, 5000));
	assert_int_equal(w.types[0], CAIRN_EVENT_PUT);
	assert_string_equal(w.keys[0], "/w/a");
	assert_string_equal(w.vals[0], "1");
	assert_int_equal(w.mods[0], r1);
	assert_true(w.prevs[0]);
	assert_string_equal(w.prevvals[0], "0");
	assert_int_equal(w.types[1], CAIRN_EVENT_PUT);
	assert_false(w.prevs[1]); /* /w/b did not exist */
	assert_int_equal(w.types[2], CAIRN_EVENT_DELETE);
	assert_string_equal(w.keys[2], "/w/a");
	assert_int_equal(w.mods[2], r1 + 2);
	assert_true(w.prevs[2]);
	assert_string_equal(w.prevvals[2], "1");
	assert_int_equal(cairn_watch_revision(h), r1 + 2);
	assert_true(cnt_ge(&wnd.n_ev, 2, 2000));
	run_until(NULL, 200);
	assert_int_equal(wnd.n_ev, 2); /* no delete */
	/* Cancel: one final callback, CANCELLED, from the loop; nothing after. */
	cairn_watch_cancel(h);
	cairn_watch_cancel(h == NULL ? NULL : hnd);
	assert_int_equal(w.finals, 0);
	assert_true(run_until(&w.final_seen, 2000));
	assert_true(run_until(&wnd.final_seen, 2000));
	assert_int_equal(w.code, CAIRN_CANCELLED);
	do_put(c, "/w/c", "3", NULL);
	run_until(NULL, 200);
	assert_int_equal(w.n_ev, 3);
	assert_int_equal(w.finals, 1);
	/* The quiet watch gets progress notifications, which move its revision up. */
	k = do_put(c, "/w/d", "4", NULL);
	uint64_t until = now_ms() + 3000;
	while (cairn_watch_revision(hp) < k.h.revision && now_ms() < until)
		run_until(NULL, 50);
	assert_true(wp.progress >= 1);
	assert_int_equal(wp.n_ev, 0);
	assert_int_equal(cairn_watch_revision(hp), k.h.revision);
	assert_int_equal(wp.finals, 0);
	cairn_watch_cancel(hp);
	assert_true(run_until(&wp.final_seen, 2000));
	client_free(c);
}

static void test_lease(void **state)
{
	(void)state;
	struct cairn_client *c = one_client();
	struct cap k;
	WAIT(k, cairn_lease_grant(c, 30, 0, lease_cb, &k));
	assert_int_equal(k.code, 0);
	int64_t id = k.id;
	assert_true(id > 0);
	assert_int_equal(k.ttl, 30);
	struct cairn_put_opts po = {.lease = id};
	k = do_put(c, "/lease/k", "v", &po);
	assert_int_equal(k.code, 0);
	k = do_range(c, "/lease/k", NULL);
	assert_int_equal(k.lease[0], id);
	WAIT(k, cairn_lease_ttl(c, id, true, lease_cb, &k));
	assert_int_equal(k.code, 0);
	assert_int_equal(k.id, id);
	assert_true(k.ttl > 0 && k.ttl <= 30);
	assert_int_equal(k.granted, 30);
	assert_int_equal(k.n_keys, 1);
	assert_string_equal(k.keys[0], "/lease/k");
	memset(&k, 0, sizeof(k));
	k.want_lease = id;
	assert_int_equal(cairn_lease_list(c, lease_cb, &k), 0);
	assert_true(run_until(&k.done, 5000));
	assert_int_equal(k.code, 0);
	assert_true(k.has_lease);
	/* A chosen id. */
	WAIT(k, cairn_lease_grant(c, 30, 0x1234, lease_cb, &k));
	assert_int_equal(k.code, 0);
	assert_int_equal(k.id, 0x1234);
	WAIT(k, cairn_lease_revoke(c, id, lease_cb, &k));
	assert_int_equal(k.code, 0);
	k = do_range(c, "/lease/k", NULL);
	assert_int_equal(k.n, 0);
	WAIT(k, cairn_lease_revoke(c, id, lease_cb, &k));
	assert_int_equal(k.code, CAIRN_NOT_FOUND);
	assert_string_equal(k.msg, "etcdserver: requested lease not found");
	assert_false(k.maybe);
	WAIT(k, cairn_lease_ttl(c, id, false, lease_cb, &k));
	assert_int_equal(k.code, 0);
	assert_int_equal(k.ttl, -1);
	client_free(c);
}

static void test_keepalive(void **state)
{
	(void)state;
	struct cairn_client *c = one_client();
	struct cap k;
	WAIT(k, cairn_lease_grant(c, 2, 0, lease_cb, &k));
	int64_t id = k.id;
	struct cairn_put_opts po = {.lease = id};
	do_put(c, "/ka/k", "v", &po);
	struct kacap ka = {0}, ka2 = {0};
	struct cairn_keepalive *h = NULL, *h2 = NULL;
	assert_int_equal(cairn_lease_keepalive(c, id, ka_cb, &ka, &h), 0);
	assert_int_equal(ka.answers, 0);
	/* A second handle of the same lease gets answers of its own. */
	assert_int_equal(cairn_lease_keepalive(c, id, ka_cb, &ka2, &h2), 0);
	run_until(NULL, 6000);
	assert_int_equal(ka.finals, 0);
	assert_true(ka.answers >= 6); /* every 2/3 s */
	assert_true(ka2.answers >= 6);
	cairn_lease_keepalive_stop(h2);
	assert_true(run_until(&ka2.final_seen, 1000));
	assert_int_equal(ka2.code, CAIRN_CANCELLED);
	assert_int_equal(ka.last_ttl, 2);
	k = do_range(c, "/ka/k", NULL);
	assert_int_equal(k.n, 1);
	WAIT(k, cairn_lease_ttl(c, id, false, lease_cb, &k));
	assert_true(k.ttl >= 1);
	cairn_lease_keepalive_stop(h);
	assert_int_equal(ka.finals, 0);
	assert_true(run_until(&ka.final_seen, 1000));
	assert_int_equal(ka.code, CAIRN_CANCELLED);
	/* Without keepalives the lease expires. */
	uint64_t end = now_ms() + 6000;
	do {
		run_until(NULL, 250);
		k = do_range(c, "/ka/k", NULL);
	} while (k.n == 1 && now_ms() < end);
	assert_int_equal(k.n, 0);

	/* Revoked under a keepalive: the final callback says so. */
	WAIT(k, cairn_lease_grant(c, 3, 0, lease_cb, &k));
	id = k.id;
	struct kacap kb = {0};
	assert_int_equal(cairn_lease_keepalive(c, id, ka_cb, &kb, &h), 0);
	assert_true(cnt_ge(&kb.answers, 1, 3000));
	WAIT(k, cairn_lease_revoke(c, id, lease_cb, &k));
	assert_int_equal(k.code, 0);
	assert_true(run_until(&kb.final_seen, 4000));
	assert_int_equal(kb.finals, 1);
	assert_int_equal(kb.code, CAIRN_NOT_FOUND);
	assert_string_equal(kb.msg, "etcdserver: requested lease not found");
	assert_int_equal(kb.final_ttl, -1);
	client_free(c);
}

static void test_cluster_calls(void **state)
{
	(void)state;
	struct cairn_client *c = one_client();
	struct cap k;
	WAIT(k, cairn_member_list(c, members_cb, &k));
	assert_int_equal(k.code, 0);
	assert_int_equal(k.n_members, 1);
	assert_string_equal(k.member_urls[0], one.url);
	WAIT(k, cairn_status_get(c, NULL, status_cb, &k));
	assert_int_equal(k.code, 0);
	assert_true(k.version_s[0] != '\0');
	assert_int_equal(k.leader, k.h.member_id);
	/* By name, with or without the scheme. */
	WAIT(k, cairn_status_get(c, one.url, status_cb, &k));
	assert_int_equal(k.code, 0);
	assert_string_equal(k.endpoint, one.url);
	WAIT(k, cairn_status_get(c, one.url + 7, status_cb, &k));
	assert_int_equal(k.code, 0);
	client_free(c);
}

struct many {
	size_t ok, calls, in_flight, max_in_flight;
	int64_t last_rev;
	bool revs_unique;
	uint8_t *seen;
	int64_t base;
};

static void many_cb(void *data, const struct cairn_status *st, const struct cairn_put_result *r)
{
	struct many *m = data;
	m->calls++;
	m->in_flight--;
	if (st->code != 0)
		return;
	m->ok++;
	/* Every put has a revision of its own. */
	int64_t i = r->header.revision - m->base;
	if (i >= 0 && i < 4096) {
		if (m->seen[i])
			m->revs_unique = false;
		m->seen[i] = 1;
	}
}

static void test_many(void **state)
{
	(void)state;
	const char *eps[] = {one.url};
	struct cairn_client *c = client_new(eps, 1, 2, 10000);
	wait_writable(c, 15000);
	struct cap k = do_put(c, "/many/base", "0", NULL);
	struct many m = {0};
	m.revs_unique = true;
	m.base = k.h.revision;
	m.seen = calloc(4096, 1);
	assert_non_null(m.seen);
	/* Fifty watchers on one stream, each must see the last put. */
	struct wcap *ws = calloc(50, sizeof(*ws));
	struct cairn_watch *wh[50];
	assert_non_null(ws);
	for (int i = 0; i < 50; i++)
		assert_int_equal(cairn_watch(c, KEY("/many/last"), NULL, watch_cb, &ws[i], &wh[i]),
				 0);
	/* 2000 puts, 1000 in flight at once. */
	char key[32], val[256];
	memset(val, 'v', sizeof(val));
	size_t started = 0;
	uint64_t end = now_ms() + 30000;
	uv_timer_start(&guard, guard_cb, 10, 10);
	while (m.calls < 2000 && now_ms() < end) {
		while (started < 2000 && m.in_flight < 1000) {
			snprintf(key, sizeof(key), "/many/%04zu", started % 500);
			assert_int_equal(cairn_put(c, KEY(key), (const uint8_t *)val, sizeof(val), NULL,
						   many_cb, &m),
					 0);
			started++;
			m.in_flight++;
			if (m.in_flight > m.max_in_flight)
				m.max_in_flight = m.in_flight;
		}
		uv_run(&loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&guard);
	assert_int_equal(m.calls, 2000);
	assert_int_equal(m.ok, 2000);
	assert_true(m.revs_unique);
	assert_int_equal(m.max_in_flight, 1000);
	free(m.seen);
	run_until(NULL, 100);
	k = do_put(c, "/many/last", "x", NULL);
	for (int i = 0; i < 50; i++) {
		assert_true(cnt_ge(&ws[i].n_ev, 1, 5000));
		assert_int_equal(ws[i].n_ev, 1);
		assert_int_equal(ws[i].mods[0], k.h.revision);
	}
	for (int i = 0; i < 50; i += 2)
		cairn_watch_cancel(wh[i]);
	run_until(NULL, 200);
	for (int i = 0; i < 50; i += 2)
		assert_int_equal(ws[i].finals, 1);
	k = do_put(c, "/many/last", "y", NULL);
	for (int i = 1; i < 50; i += 2)
		assert_true(cnt_ge(&ws[i].n_ev, 2, 5000));
	for (int i = 0; i < 50; i += 2)
		assert_int_equal(ws[i].n_ev, 1);
	client_free(c);
	for (int i = 0; i < 50; i++)
		assert_int_equal(ws[i].finals, 1);
	free(ws);
}

static void count_cb(void *data, const struct cairn_status *st, const struct cairn_put_result *r)
{
	int *n = data;
	assert_int_equal(st->code, CAIRN_CANCELLED);
	assert_null(r);
	n[0]++;
	if (st->maybe_applied)
		n[1]++;
}

struct close_state {
	int puts[2];
	struct wcap w;
	struct kacap ka;
	bool closed;
	bool order_ok;
};

static void close_state_cb(struct cairn_client *c, void *data)
{
	struct close_state *s = data;
	(void)c;
	s->closed = true;
	s->order_ok = s->puts[0] == 100 && s->w.finals == 1 && s->ka.finals == 1;
}

static void test_close_pending(void **state)
{
	(void)state;
	struct cairn_client *c = one_client();
	struct cap k;
	WAIT(k, cairn_lease_grant(c, 30, 0, lease_cb, &k));
	struct close_state s;
	memset(&s, 0, sizeof(s));
	struct cairn_watch *w = NULL;
	struct cairn_keepalive *ka = NULL;
	assert_int_equal(cairn_watch(c, KEY("/close/"), NULL, watch_cb, &s.w, &w), 0);
	assert_int_equal(cairn_lease_keepalive(c, k.id, ka_cb, &s.ka, &ka), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(cairn_put(c, KEY("/close/k"), KEY("v"), NULL, count_cb, s.puts), 0);
	cairn_client_close(c, close_state_cb, &s);
	cairn_client_close(c, close_state_cb, &s); /* idempotent */
	assert_int_equal(s.puts[0], 0);
	assert_false(s.closed);
	assert_true(run_until(&s.closed, 5000));
	assert_true(s.order_ok);
	assert_int_equal(s.puts[0], 100);
	assert_int_equal(s.w.finals, 1);
	assert_int_equal(s.w.code, CAIRN_CANCELLED);
	assert_int_equal(s.ka.finals, 1);
	assert_int_equal(s.ka.code, CAIRN_CANCELLED);
	run_until(NULL, 100);
	assert_int_equal(s.puts[0], 100);

	/* Without a server: requests waiting for a connection are cancelled the same way. */
	int port = free_port();
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	const char *eps[] = {url};
	c = client_new(eps, 1, 2, 5000);
	memset(&s, 0, sizeof(s));
	for (int i = 0; i < 100; i++)
		assert_int_equal(cairn_put(c, KEY("/close/k"), KEY("v"), NULL, count_cb, s.puts), 0);
	assert_int_equal(cairn_watch(c, KEY("/close/"), NULL, watch_cb, &s.w, &w), 0);
	assert_int_equal(cairn_lease_keepalive(c, 5, ka_cb, &s.ka, &ka), 0);
	run_until(NULL, 100);
	cairn_client_close(c, close_state_cb, &s);
	assert_true(run_until(&s.closed, 5000));
	assert_true(s.order_ok);
	assert_int_equal(s.puts[1], 0); /* never sent */
	/* A closed client refuses new requests... after close, before close_cb. */
}

static void test_maybe_applied(void **state)
{
	(void)state;
	/* Nothing listens: never sent, so certainly not applied. */
	int port = free_port();
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	const char *eps[] = {url};
	struct cairn_client *c = client_new(eps, 1, 1, 300);
	struct cap k = do_put(c, "/m/a", "1", NULL);
	assert_int_equal(k.code, CAIRN_DEADLINE_EXCEEDED);
	assert_false(k.maybe);
	assert_string_equal(k.endpoint, "");
	client_free(c);

	/* Sent to a member that stopped: the write may have been applied, a read says no. */
	c = one_client();
	kill(one.pid, SIGSTOP);
	struct cairn_put_opts po = {.timeout_ms = 400};
	k = do_put(c, "/m/a", "1", &po);
	struct cairn_range_opts ro = {.timeout_ms = 400};
	struct cap r = do_range(c, "/m/a", &ro);
	kill(one.pid, SIGCONT);
	assert_int_equal(k.code, CAIRN_DEADLINE_EXCEEDED);
	assert_true(k.maybe);
	assert_string_equal(k.endpoint, one.url);
	assert_int_equal(r.code, CAIRN_DEADLINE_EXCEEDED);
	assert_false(r.maybe);
	wait_writable(c, 5000);

	/* A keepalive without answers for its lease's TTL ends: the lease must be presumed gone. */
	struct cap g;
	WAIT(g, cairn_lease_grant(c, 2, 0, lease_cb, &g));
	struct kacap ka = {0};
	struct cairn_keepalive *kh = NULL;
	assert_int_equal(cairn_lease_keepalive(c, g.id, ka_cb, &ka, &kh), 0);
	assert_true(cnt_ge(&ka.answers, 1, 3000));
	kill(one.pid, SIGSTOP);
	bool ended = run_until(&ka.final_seen, 4000);
	kill(one.pid, SIGCONT);
	assert_true(ended);
	assert_int_equal(ka.code, CAIRN_DEADLINE_EXCEEDED);
	wait_writable(c, 5000);
	client_free(c);
}

static void dummy_range(void *d, const struct cairn_status *s, const struct cairn_range_result *r)
{
	(void)d;
	(void)s;
	(void)r;
	fail_msg("callback of a refused request");
}
static void dummy_watch(void *d, struct cairn_watch *w, const struct cairn_watch_batch *b)
{
	(void)d;
	(void)w;
	(void)b;
	fail_msg("callback of a refused watch");
}

static void test_bad_args(void **state)
{
	(void)state;
	struct cairn_client *c = NULL;
	struct cairn_config cfg = {0};
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), CAIRN_EINVAL);
	assert_null(c);
	const char *bad[] = {"ftp://127.0.0.1:1"};
	cfg.endpoints = bad;
	cfg.n_endpoints = 1;
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), CAIRN_EINVAL);
	assert_int_equal(cairn_client_new(NULL, &cfg, &c), CAIRN_EINVAL);
	const char *noport[] = {"http://127.0.0.1"};
	cfg.endpoints = noport;
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), CAIRN_EINVAL);
	const char *tls[] = {"https://127.0.0.1:1"};
	cfg.endpoints = tls;
	cfg.ca_file = "/nonexistent/ca.pem";
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), CAIRN_ETLS);
	cfg.ca_file = NULL;
	cfg.cert_file = "/nonexistent/c.pem";
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), CAIRN_EINVAL); /* cert without key */
	assert_null(c);
	/* https with the system's roots builds a client */
	cfg.cert_file = NULL;
	cfg.insecure_skip_verify = true;
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), 0);
	client_free(c);

	const char *eps[] = {one.url};
	c = client_new(eps, 1, 1, 1000);
	assert_int_equal(cairn_range(NULL, KEY("a"), NULL, dummy_range, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_range(c, KEY("a"), NULL, NULL, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_range(c, NULL, 0, NULL, dummy_range, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_range(c, (const uint8_t *)"", 0, NULL, dummy_range, NULL),
			 CAIRN_EINVAL);
	struct cairn_range_opts ro = {.sort_order = 7};
	assert_int_equal(cairn_range(c, KEY("a"), &ro, dummy_range, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_put(c, KEY("a"), NULL, 3, NULL, put_cb, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_delete(c, NULL, 0, NULL, delete_cb, NULL), CAIRN_EINVAL);
	struct cairn_op op = {.type = 9, .key = (const uint8_t *)"a", .key_len = 1};
	struct cairn_txn t = {NULL, 0, &op, 1, NULL, 0, 0};
	assert_int_equal(cairn_txn(c, &t, txn_cb, NULL), CAIRN_EINVAL);
	t.n_compare = 1;
	assert_int_equal(cairn_txn(c, &t, txn_cb, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_compact(c, 0, false, header_cb, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_lease_grant(c, 0, 0, lease_cb, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_lease_revoke(c, 0, lease_cb, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_lease_ttl(c, -1, false, lease_cb, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_lease_list(c, NULL, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_member_list(c, NULL, NULL), CAIRN_EINVAL);
	assert_int_equal(cairn_status_get(c, "http://10.9.9.9:1", status_cb, NULL), CAIRN_EINVAL);
	struct cairn_watch *w = (struct cairn_watch *)1;
	struct cairn_watch_opts wo = {.start_revision = -1};
	assert_int_equal(cairn_watch(c, KEY("a"), &wo, dummy_watch, NULL, &w), CAIRN_EINVAL);
	assert_null(w);
	assert_int_equal(cairn_watch(c, KEY("a"), NULL, NULL, NULL, &w), CAIRN_EINVAL);
	struct cairn_keepalive *ka = NULL;
	assert_int_equal(cairn_lease_keepalive(c, 0, ka_cb, NULL, &ka), CAIRN_EINVAL);
	cairn_watch_cancel(NULL);
	cairn_lease_keepalive_stop(NULL);
	assert_int_equal(cairn_watch_revision(NULL), 0);
	/* After close, before close_cb: CAIRN_ECLOSED. */
	bool closed = false;
	cairn_client_close(c, closed_cb, &closed);
	assert_int_equal(cairn_range(c, KEY("a"), NULL, dummy_range, NULL), CAIRN_ECLOSED);
	assert_int_equal(cairn_watch(c, KEY("a"), NULL, dummy_watch, NULL, &w), CAIRN_ECLOSED);
	assert_true(run_until(&closed, 3000));

	/* max_inflight */
	cfg = (struct cairn_config){0};
	cfg.endpoints = eps;
	cfg.n_endpoints = 1;
	cfg.max_inflight = 2;
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), 0);
	int n[2] = {0, 0};
	assert_int_equal(cairn_put(c, KEY("/lim"), KEY("v"), NULL, count_cb, n), 0);
	assert_int_equal(cairn_put(c, KEY("/lim"), KEY("v"), NULL, count_cb, n), 0);
	assert_int_equal(cairn_put(c, KEY("/lim"), KEY("v"), NULL, count_cb, n), CAIRN_ELIMIT);
	closed = false;
	cairn_client_close(c, closed_cb, &closed);
	assert_true(run_until(&closed, 3000));
	assert_int_equal(n[0], 2);

	/* names */
	assert_string_equal(cairn_code_name(14), "UNAVAILABLE");
	assert_string_equal(cairn_code_name(99), "UNKNOWN");
	assert_string_equal(cairn_strerror(CAIRN_ELIMIT), "too many requests in flight");
	uint8_t out[4];
	assert_int_equal(cairn_prefix_end(KEY("ab"), out), 2);
	assert_memory_equal(out, "ac", 2);
	const uint8_t ff[2] = {'a', 0xff};
	assert_int_equal(cairn_prefix_end(ff, 2, out), 1);
	assert_int_equal(out[0], 'b');
	const uint8_t allff[2] = {0xff, 0xff};
	assert_int_equal(cairn_prefix_end(allff, 2, out), 1);
	assert_int_equal(out[0], 0);
}

/* ---- tests: three members ---- */

static struct cairn_client *three_client(size_t conns)
{
	const char *eps[] = {three[0].url, three[1].url, three[2].url};
	struct cairn_client *c = client_new(eps, 3, conns, 3000);
	return c;
}

/* A keepalive sent at once after the grant, through each member in turn: through a follower, the
 * grant is answered once the follower applied it, which can be before the leader did; the
 * leader must still know the lease when the follower asks it to renew. */
static void test_keepalive_after_grant(void **state)
{
	(void)state;
	for (int i = 0; i < 3; i++) {
		const char *eps[] = {three[i].url};
		struct cairn_client *c = client_new(eps, 1, 1, 3000);
		wait_writable(c, 15000); /* the cluster has a leader */
		for (int round = 0; round < 8; round++) {
			struct cap lk;
			WAIT(lk, cairn_lease_grant(c, 5, 0, lease_cb, &lk));
			assert_int_equal(lk.code, 0);
			struct kacap ka = {0};
			struct cairn_keepalive *kh = NULL;
			assert_int_equal(cairn_lease_keepalive(c, lk.id, ka_cb, &ka, &kh), 0);
			bool answered = cnt_ge(&ka.answers, 1, 5000);
			if (ka.final_seen)
				fail_msg("member %d round %d: keepalive ended with %d \"%s\"", i, round,
					 ka.code, ka.msg);
			assert_true(answered);
			cairn_lease_keepalive_stop(kh);
			assert_true(run_until(&ka.final_seen, 2000));
		}
		client_free(c);
	}
}

static void test_failover_dead_endpoint(void **state)
{
	(void)state;
	struct cairn_client *c0 = three_client(1);
	wait_writable(c0, 20000);
	client_free(c0);
	/* The first endpoint is dead: every call goes to the second. */
	int port = free_port();
	char dead[64];
	snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", port);
	const char *eps[] = {dead, three[1].url};
	struct cairn_client *c = client_new(eps, 2, 1, 5000);
	struct cap k = do_put(c, "/fo/a", "1", NULL);
	assert_int_equal(k.code, 0);
	assert_string_equal(k.endpoint, three[1].url);
	k = do_range(c, "/fo/a", NULL);
	assert_int_equal(k.code, 0);
	assert_string_equal(k.vals[0], "1");
	/* Two connections over both: the dead one keeps failing, requests use the other. */
	client_free(c);
	c = client_new(eps, 2, 2, 5000);
	for (int i = 0; i < 10; i++) {
		k = do_range(c, "/fo/a", NULL);
		assert_int_equal(k.code, 0);
	}
	WAIT(k, cairn_member_list(c, members_cb, &k));
	assert_int_equal(k.code, 0);
	assert_int_equal(k.n_members, 3);
	/* Status of each named member, on connections of their own. */
	client_free(c);
	c = three_client(1);
	uint64_t leader = 0;
	for (int i = 0; i < 3; i++) {
		WAIT(k, cairn_status_get(c, three[i].url, status_cb, &k));
		assert_int_equal(k.code, 0);
		assert_string_equal(k.endpoint, three[i].url);
		assert_true(k.leader != 0);
		if (leader != 0)
			assert_int_equal(k.leader, leader);
		leader = k.leader;
	}
	client_free(c);
}

struct resume_ctx {
	struct cairn_client *c;
	int next, done_ok, target;
	bool busy;
	char ep[64];
};

static void resume_put_cb(void *data, const struct cairn_status *st,
			  const struct cairn_put_result *r)
{
	struct resume_ctx *x = data;
	(void)r;
	x->busy = false;
	if (st->code == 0) {
		x->done_ok++;
		snprintf(x->ep, sizeof(x->ep), "%s", st->endpoint);
	}
}

/* Puts /wr/<i> with value i, one at a time, until `target` succeeded; a failed put is sent
 * again with the next value (it may or may not have been applied: the watch must show what
 * the server has, once). */
static bool resume_puts(struct resume_ctx *x, int target, uint64_t ms)
{
	uint64_t end = now_ms() + ms;
	x->target = target;
	uv_timer_start(&guard, guard_cb, 10, 10);
	while (x->done_ok < target && now_ms() < end) {
		if (!x->busy) {
			char key[32], val[16];
			snprintf(key, sizeof(key), "/wr/%03d", x->next);
			snprintf(val, sizeof(val), "%d", x->next);
			x->next++;
			struct cairn_put_opts po = {.timeout_ms = 1000};
			if (cairn_put(x->c, KEY(key), KEY(val), &po, resume_put_cb, x) == 0)
				x->busy = true;
		}
		uv_run(&loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&guard);
	return x->done_ok >= target;
}

static void test_watch_resume(void **state)
{
	(void)state;
	struct cairn_client *c = three_client(1);
	wait_writable(c, 20000);
	struct cap k = do_put(c, "/wr/start", "s", NULL);
	int64_t start = k.h.revision;
	/* The member this client talks to. */
	int victim = -1;
	for (int i = 0; i < 3; i++)
		if (strcmp(k.endpoint, three[i].url) == 0)
			victim = i;
	assert_true(victim >= 0);
	struct wcap w;
	memset(&w, 0, sizeof(w));
	struct cairn_watch *h = NULL;
	uint8_t end[8];
	struct cairn_watch_opts wo = {0};
	wo.range_end = end;
	wo.range_end_len = cairn_prefix_end(KEY("/wr/"), end);
	wo.start_revision = start + 1;
	assert_int_equal(cairn_watch(c, KEY("/wr/"), &wo, watch_cb, &w, &h), 0);
	/* A lease kept alive across the kill too. */
	struct cap lk;
	WAIT(lk, cairn_lease_grant(c, 5, 0, lease_cb, &lk));
	assert_int_equal(lk.code, 0);
	struct kacap ka = {0};
	struct cairn_keepalive *kh = NULL;
	assert_int_equal(cairn_lease_keepalive(c, lk.id, ka_cb, &ka, &kh), 0);
	struct resume_ctx x = {.c = c};
	assert_true(resume_puts(&x, 5, 10000));
	assert_true(cnt_ge(&w.n_ev, 5, 5000));
	assert_true(cnt_ge(&ka.answers, 1, 3000));
	kill_one(three[victim].pid);
	three[victim].pid = 0;
	/* A read fails over by itself (retried after UNAVAILABLE within its deadline). */
	struct cap rk = do_range(c, "/wr/start", NULL);
	assert_int_equal(rk.code, 0);
	assert_string_equal(rk.vals[0], "s");
	assert_true(strcmp(rk.endpoint, three[victim].url) != 0);
	assert_true(resume_puts(&x, 15, 20000));
	assert_true(strcmp(x.ep, three[victim].url) != 0);
	size_t before = ka.answers;
	assert_true(cnt_ge(&ka.answers, before + 2, 6000));
	assert_int_equal(ka.finals, 0);
	cairn_lease_keepalive_stop(kh);
	assert_true(run_until(&ka.final_seen, 2000));
	assert_int_equal(ka.code, CAIRN_CANCELLED);
	k = do_put(c, "/wr/zlast", "z", NULL);
	assert_int_equal(k.code, 0);
	int64_t last = k.h.revision;
	uint64_t until = now_ms() + 10000;
	while ((w.n_ev == 0 || w.mods[w.n_ev - 1] < last) && now_ms() < until)
		run_until(NULL, 50);
	assert_int_equal(w.finals, 0);
	/* What the server has, read by a fresh watch from the same revision. */
	struct wcap ref;
	memset(&ref, 0, sizeof(ref));
	struct cairn_watch *hr = NULL;
	assert_int_equal(cairn_watch(c, KEY("/wr/"), &wo, watch_cb, &ref, &hr), 0);
	until = now_ms() + 10000;
	while ((ref.n_ev == 0 || ref.mods[ref.n_ev - 1] < last) && now_ms() < until)
		run_until(NULL, 50);
	assert_true(ref.n_ev >= 16);
	assert_int_equal(w.n_ev, ref.n_ev);
	for (size_t i = 0; i < w.n_ev; i++) {
		assert_int_equal(w.mods[i], ref.mods[i]);
		assert_string_equal(w.keys[i], ref.keys[i]);
		assert_string_equal(w.vals[i], ref.vals[i]);
		if (i > 0)
			assert_true(w.mods[i] > w.mods[i - 1]);
	}
	cairn_watch_cancel(h);
	cairn_watch_cancel(hr);
	assert_true(run_until(&w.final_seen, 3000));
	client_free(c);
}

/* ---- tests: etcd 3.4 ---- */

static void test_etcd(void **state)
{
	(void)state;
	if (etcd1.pid == 0)
		skip();
	const char *eps[] = {etcd1.url};
	struct cairn_client *c = client_new(eps, 1, 2, 5000);
	wait_writable(c, 15000);
	struct cap k = do_put(c, "/e/a", "1", NULL);
	assert_int_equal(k.code, 0);
	int64_t r1 = k.h.revision;
	struct cairn_put_opts po = {.prev_kv = true};
	k = do_put(c, "/e/a", "2", &po);
	assert_string_equal(k.prev, "1");
	k = do_range(c, "/e/a", NULL);
	assert_int_equal(k.n, 1);
	assert_string_equal(k.vals[0], "2");
	assert_int_equal(k.create[0], r1);
	assert_int_equal(k.version[0], 2);
	struct cairn_compare cmp = {.result = CAIRN_CMP_EQUAL, .target = CAIRN_CMP_VERSION,
				    .key = (const uint8_t *)"/e/a", .key_len = 4, .number = 2};
	struct cairn_op ops[2] = {
		{.type = CAIRN_OP_PUT, .key = (const uint8_t *)"/e/b", .key_len = 4,
		 .value = (const uint8_t *)"b", .value_len = 1},
		{.type = CAIRN_OP_RANGE, .key = (const uint8_t *)"/e/a", .key_len = 4},
	};
	struct cairn_txn t = {&cmp, 1, ops, 2, NULL, 0, 0};
	WAIT(k, cairn_txn(c, &t, txn_cb, &k));
	assert_int_equal(k.code, 0);
	assert_true(k.succeeded);
	assert_int_equal(k.n, 2);
	assert_string_equal(k.vals[1], "2");
	/* watch with prev_kv */
	struct wcap w;
	memset(&w, 0, sizeof(w));
	struct cairn_watch *h = NULL;
	struct cairn_watch_opts wo = {.prev_kv = true};
	assert_int_equal(cairn_watch(c, KEY("/e/a"), &wo, watch_cb, &w, &h), 0);
	run_until(NULL, 300);
	do_put(c, "/e/a", "3", NULL);
	WAIT(k, cairn_delete(c, KEY("/e/a"), NULL, delete_cb, &k));
	assert_int_equal(k.deleted, 1);
	assert_true(cnt_ge(&w.n_ev, 2, 5000));
	assert_int_equal(w.types[0], CAIRN_EVENT_PUT);
	assert_string_equal(w.prevvals[0], "2");
	assert_int_equal(w.types[1], CAIRN_EVENT_DELETE);
	cairn_watch_cancel(h);
	assert_true(run_until(&w.final_seen, 3000));
	/* compacted read and watch */
	k = do_put(c, "/e/c", "1", NULL);
	int64_t rc = k.h.revision;
	WAIT(k, cairn_compact(c, rc, true, header_cb, &k));
	assert_int_equal(k.code, 0);
	struct cairn_range_opts ro = {.revision = r1};
	k = do_range(c, "/e/a", &ro);
	assert_int_equal(k.code, CAIRN_OUT_OF_RANGE);
	assert_string_equal(k.msg, "etcdserver: mvcc: required revision has been compacted");
	memset(&w, 0, sizeof(w));
	struct cairn_watch_opts wc = {.start_revision = r1};
	assert_int_equal(cairn_watch(c, KEY("/e/a"), &wc, watch_cb, &w, &h), 0);
	assert_true(run_until(&w.final_seen, 5000));
	assert_int_equal(w.compact, rc);
	assert_string_equal(w.msg, "etcdserver: mvcc: required revision has been compacted");
	/* leases and a keepalive */
	WAIT(k, cairn_lease_grant(c, 2, 0, lease_cb, &k));
	int64_t id = k.id;
	assert_int_equal(k.ttl, 2);
	struct kacap ka = {0};
	struct cairn_keepalive *kh = NULL;
	assert_int_equal(cairn_lease_keepalive(c, id, ka_cb, &ka, &kh), 0);
	run_until(NULL, 3000);
	assert_true(ka.answers >= 3);
	WAIT(k, cairn_lease_ttl(c, id, false, lease_cb, &k));
	assert_true(k.ttl > 0);
	WAIT(k, cairn_lease_revoke(c, id, lease_cb, &k));
	assert_int_equal(k.code, 0);
	assert_true(run_until(&ka.final_seen, 3000));
	assert_int_equal(ka.code, CAIRN_NOT_FOUND);
	WAIT(k, cairn_lease_revoke(c, id, lease_cb, &k));
	assert_int_equal(k.code, CAIRN_NOT_FOUND);
	assert_string_equal(k.msg, "etcdserver: requested lease not found");
	WAIT(k, cairn_member_list(c, members_cb, &k));
	assert_int_equal(k.n_members, 1);
	WAIT(k, cairn_status_get(c, etcd1.url, status_cb, &k));
	assert_int_equal(k.code, 0);
	assert_true(strncmp(k.version_s, "3.4", 3) == 0);
	client_free(c);
}

/* ---- tests: TLS ---- */

static struct member tlsm; /* https, client certificates required */
static char ca_pem[300], other_ca_pem[300], cli_pem[300], cli_key[300];

static int setup_tls(void **state)
{
	(void)state;
	h_tmpdir_make(tmpdir, sizeof(tmpdir), "cairn-client-tls");
	EVP_PKEY *cak = h_key_new(), *sk = h_key_new(), *ck = h_key_new(), *ok = h_key_new();
	X509 *ca = h_cert_new(cak, "cairn-test", "ca", NULL, NULL, NULL, 1);
	X509 *other = h_cert_new(ok, "other", "ca", NULL, NULL, NULL, 2);
	X509 *srv = h_cert_new(sk, "cairn-test", "server", ca, cak, "IP:127.0.0.1", 3);
	X509 *cli = h_cert_new(ck, "cairn-test", "client", ca, cak, NULL, 4);
	char srv_pem[300], srv_key[300];
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", tmpdir);
	snprintf(other_ca_pem, sizeof(other_ca_pem), "%s/other.pem", tmpdir);
	snprintf(srv_pem, sizeof(srv_pem), "%s/server.pem", tmpdir);
	snprintf(srv_key, sizeof(srv_key), "%s/server.key", tmpdir);
	snprintf(cli_pem, sizeof(cli_pem), "%s/client.pem", tmpdir);
	snprintf(cli_key, sizeof(cli_key), "%s/client.key", tmpdir);
	h_pem_write(ca_pem, ca, NULL);
	h_pem_write(other_ca_pem, other, NULL);
	h_pem_write(srv_pem, srv, NULL);
	h_pem_write(srv_key, NULL, sk);
	h_pem_write(cli_pem, cli, NULL);
	h_pem_write(cli_key, NULL, ck);
	X509_free(ca);
	X509_free(other);
	X509_free(srv);
	X509_free(cli);
	EVP_PKEY_free(cak);
	EVP_PKEY_free(sk);
	EVP_PKEY_free(ck);
	EVP_PKEY_free(ok);
	int p[3];
	free_ports(p, 3);
	member_init(&tlsm, "t1", p[0], p[1], p[2]);
	snprintf(tlsm.url, sizeof(tlsm.url), "https://127.0.0.1:%d", p[0]);
	char *extra[] = {(char *)"--cert-file", srv_pem, (char *)"--key-file", srv_key,
			 (char *)"--trusted-ca-file", ca_pem, (char *)"--client-cert-auth=true",
			 NULL};
	start_cairn_x(&tlsm, NULL, NULL, NULL, extra);
	return 0;
}

static struct cairn_client *tls_client(const char *ca, const char *cert, const char *key,
				       bool skip, uint64_t timeout_ms)
{
	const char *eps[] = {tlsm.url};
	struct cairn_config cfg = {0};
	cfg.endpoints = eps;
	cfg.n_endpoints = 1;
	cfg.request_timeout_ms = timeout_ms;
	cfg.dial_timeout_ms = 1000;
	cfg.ca_file = ca;
	cfg.cert_file = cert;
	cfg.key_file = key;
	cfg.insecure_skip_verify = skip;
	struct cairn_client *c = NULL;
	assert_int_equal(cairn_client_new(&loop, &cfg, &c), 0);
	return c;
}

static void test_tls(void **state)
{
	(void)state;
	struct cairn_client *c = tls_client(ca_pem, cli_pem, cli_key, false, 5000);
	wait_writable(c, 15000);
	struct cap k = do_put(c, "/tls/a", "1", NULL);
	assert_int_equal(k.code, 0);
	assert_string_equal(k.endpoint, tlsm.url);
	struct wcap w;
	memset(&w, 0, sizeof(w));
	struct cairn_watch *h = NULL;
	assert_int_equal(cairn_watch(c, KEY("/tls/a"), NULL, watch_cb, &w, &h), 0);
	run_until(NULL, 200);
	do_put(c, "/tls/a", "2", NULL);
	assert_true(cnt_ge(&w.n_ev, 1, 5000));
	assert_string_equal(w.vals[0], "2");
	client_free(c);
	/* No CA but insecure_skip_verify. */
	c = tls_client(NULL, cli_pem, cli_key, true, 5000);
	k = do_range(c, "/tls/a", NULL);
	assert_int_equal(k.code, 0);
	assert_string_equal(k.vals[0], "2");
	client_free(c);
	/* A server whose CA we do not trust, and a client without a certificate: nothing goes. */
	c = tls_client(other_ca_pem, cli_pem, cli_key, false, 700);
	k = do_range(c, "/tls/a", NULL);
	assert_int_not_equal(k.code, 0);
	client_free(c);
	c = tls_client(ca_pem, NULL, NULL, false, 700);
	k = do_range(c, "/tls/a", NULL);
	assert_int_not_equal(k.code, 0);
	client_free(c);
}

int main(void)
{
	atexit(kill_all);
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&loop);
	uv_timer_init(&loop, &guard);
	if (access(CAIRN_BIN, X_OK) != 0) {
		fprintf(stderr, "test_client: %s is not built; skipped\n", CAIRN_BIN);
		return 0;
	}
	const struct CMUnitTest single[] = {
		cmocka_unit_test(test_bad_args),   cmocka_unit_test(test_kv),
		cmocka_unit_test(test_txn),        cmocka_unit_test(test_watch),
		cmocka_unit_test(test_compact),    cmocka_unit_test(test_lease),
		cmocka_unit_test(test_keepalive),  cmocka_unit_test(test_cluster_calls),
		cmocka_unit_test(test_close_pending), cmocka_unit_test(test_maybe_applied),
		cmocka_unit_test(test_many),
	};
	const struct CMUnitTest cluster[] = {
		cmocka_unit_test(test_keepalive_after_grant),
		cmocka_unit_test(test_failover_dead_endpoint),
		cmocka_unit_test(test_watch_resume),
	};
	const struct CMUnitTest tls[] = {
		cmocka_unit_test(test_tls),
	};
	const struct CMUnitTest etcd[] = {
		cmocka_unit_test(test_etcd),
	};
	int fails = cmocka_run_group_tests_name("client_single", single, setup_one, teardown_all);
	fails += cmocka_run_group_tests_name("client_cluster", cluster, setup_three, teardown_all);
	fails += cmocka_run_group_tests_name("client_tls", tls, setup_tls, teardown_all);
	fails += cmocka_run_group_tests_name("client_etcd", etcd, setup_etcd, teardown_all);
	cl_release_ports(claimed, n_claimed);
	/* Every client was closed: the loop must end (bounded; a failed test may leave one open). */
	uv_close((uv_handle_t *)&guard, NULL);
	uint64_t end = now_ms() + 2000;
	while (uv_loop_alive(&loop) && now_ms() < end)
		uv_run(&loop, UV_RUN_NOWAIT);
	if (fails == 0 && uv_loop_close(&loop) != 0) {
		fprintf(stderr, "test_client: handles left open on the loop\n");
		fails++;
	}
	return fails;
}
