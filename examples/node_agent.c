/* node_agent.c: an example node agent on libcairn (bin/cairn-example-node-agent).
 *
 *   cairn-example-node-agent --name n1 [--endpoints LIST] [--ttl 10] [--work-ms 2000]
 *                            [--tag key=value ...]
 *
 * What it does, with the keys it uses (examples/README.md runs it against `make run`):
 *   1. Grants a lease of --ttl seconds and keeps it alive (cairn_lease_keepalive).
 *   2. Registers /nodes/<name> with that lease: while the agent lives the key is there; when
 *      it dies the lease expires and the key goes, which is how the scheduler notices. The
 *      value is a member record, in the same JSON as the records Cairn's leader writes under
 *      /cairn/members/, so the scheduler follows both prefixes with cairn_members_follow().
 *   3. Reads, then watches, /assign/<name>/: each key /assign/<name>/<job> is a job the
 *      scheduler gave this node. Jobs run one at a time, in the order they came; "running" one
 *      is waiting --work-ms.
 *   4. A finished job is recorded with one Txn: if /owner/<job> still names this node and the
 *      assignment is the one it ran, put /done/<job> = <name> and delete the assignment.
 *      Otherwise the job was taken away meanwhile (this node was thought dead and the job
 *      given to another), and the result is dropped: every job is done by its owner only.
 *   5. SIGINT or SIGTERM: stops taking work, revokes the lease (which deletes /nodes/<name>, so
 *      the scheduler moves this node's unfinished jobs elsewhere at once), closes the client
 *      and exits 0. A second signal exits at once.
 * If the lease is lost anyway (the cluster was unreachable for longer than the TTL), the agent
 * registers again with a new lease. */
#include <getopt.h>
#include <signal.h>

#include <uv.h>

#include "example.h"

#define MAX_QUEUE 4096    /* assignments held; more are left in the store and logged */
#define MAX_JOB_NAME 1024 /* bytes of a job's name (the key after /assign/<name>/) */
#define MAX_KEY 2048
#define MAX_TAGS 32
#define RETRY_MS 1000 /* before trying again after a failed call */

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_COMMITTING };

struct job {
	struct ex_bytes name;
	struct ex_bytes spec;
	int64_t mod_revision; /* of /assign/<name>/<job>: which assignment this is */
	int state;
};

struct agent {
	uv_loop_t *loop;
	struct cairn_client *c;
	const char *name;
	char assign_prefix[EX_MAX_NAME + 16];
	char node_key[EX_MAX_NAME + 16];
	int64_t ttl;
	uint64_t work_ms;
	const char *tags[MAX_TAGS];
	size_t n_tags;

	int64_t lease; /* 0 while not registered */
	struct cairn_keepalive *ka;
	bool registering;
	struct cairn_watch *watch;
	bool watching; /* the assignments are read and watched (or being read) */

	struct job queue[MAX_QUEUE]; /* FIFO; queue[0] is the one running, if any */
	size_t n_queue;

	uv_timer_t work_timer;
	uv_timer_t retry_timer;
	uv_signal_t sigint, sigterm;
	bool stopping;
};

static void agent_register(struct agent *a);
static void assignments_read(struct agent *a);
static void run_next(struct agent *a);
static void on_work_done(uv_timer_t *t);
static void retry_later(struct agent *a);
static void agent_stop(struct agent *a);

/* ---- the queue ---- */

static struct job *job_find(struct agent *a, const uint8_t *name, size_t n, size_t *at)
{
	for (size_t i = 0; i < a->n_queue; i++)
		if (ex_bytes_eq(&a->queue[i].name, name, n)) {
			*at = i;
			return &a->queue[i];
		}
	return NULL;
}

static void job_drop(struct agent *a, size_t i)
{
	ex_bytes_free(&a->queue[i].name);
	ex_bytes_free(&a->queue[i].spec);
	memmove(&a->queue[i], &a->queue[i + 1], (a->n_queue - i - 1) * sizeof a->queue[0]);
	a->n_queue--;
}

/* An assignment seen (read or watched): queued unless it is known already. */
static void assignment_put(struct agent *a, const struct cairn_kv *kv)
{
	char pb[512];
	size_t pl = strlen(a->assign_prefix), at;
	if (kv->key_len <= pl || kv->key_len - pl > MAX_JOB_NAME)
		return;
	const uint8_t *name = kv->key + pl;
	size_t n = kv->key_len - pl;
	struct job *j = job_find(a, name, n, &at);
	if (j != NULL) {
		if (j->state == JOB_QUEUED) {
			j->mod_revision = kv->mod_revision;
			ex_bytes_set(&j->spec, kv->value, kv->value_len);
		}
		return;
	}
	if (a->n_queue == MAX_QUEUE) {
		ex_log("job %s: the queue is full (%d jobs); it stays assigned in the store",
		       ex_printable(name, n, pb), MAX_QUEUE);
		return;
	}
	j = &a->queue[a->n_queue];
	memset(j, 0, sizeof *j);
	if (!ex_bytes_set(&j->name, name, n) || !ex_bytes_set(&j->spec, kv->value, kv->value_len)) {
		ex_bytes_free(&j->name);
		ex_log("out of memory");
		return;
	}
	j->mod_revision = kv->mod_revision;
	j->state = JOB_QUEUED;
	a->n_queue++;
	ex_log("job %s assigned (%zu queued)", ex_printable(name, n, pb), a->n_queue);
}

/* An assignment deleted: the scheduler moved the job away (or this agent's own Txn deleted it
 * on completion, which the Txn's answer handles). */
static void assignment_delete(struct agent *a, const struct cairn_kv *kv)
{
	char pb[512];
	size_t pl = strlen(a->assign_prefix), at;
	if (kv->key_len <= pl)
		return;
	struct job *j = job_find(a, kv->key + pl, kv->key_len - pl, &at);
	if (j == NULL || j->state == JOB_COMMITTING)
		return;
	ex_log("job %s was taken away from this node", ex_printable(j->name.p, j->name.n, pb));
	if (j->state == JOB_RUNNING)
		uv_timer_stop(&a->work_timer);
	job_drop(a, at);
	run_next(a);
}

/* ---- running jobs ---- */

static void on_done_txn(void *data, const struct cairn_status *st,
			const struct cairn_txn_result *res)
{
	struct agent *a = data;
	char pb[512];
	struct job *j = &a->queue[0];
	if (a->n_queue == 0 || j->state != JOB_COMMITTING)
		return; /* cannot happen: only queue[0] commits */
	const char *job = ex_printable(j->name.p, j->name.n, pb);
	if (st->code != 0 && !a->stopping) {
		/* The Txn's compares make a second try safe even if the first applied: it then
		 * finds the job done and drops it. */
		ex_log("job %s: recording it failed (%s: %s); trying again", job,
		       cairn_code_name(st->code), st->message);
		j->state = JOB_RUNNING;
		uv_timer_start(&a->work_timer, on_work_done, RETRY_MS, 0);
		return;
	}
	const struct cairn_range_result *r =
		st->code == 0 && !res->succeeded && res->n_results == 1 ? &res->results[0].u.range :
									  NULL;
	if (st->code != 0)
		ex_log("job %s: not recorded before stopping (%s)", job, st->message);
	else if (res->succeeded)
		ex_log("job %s done", job);
	else if (r != NULL && r->n_kvs == 1 &&
		 ex_bytes_eq(&(struct ex_bytes){ (uint8_t *)a->name, strlen(a->name) },
			     r->kvs[0].value, r->kvs[0].value_len))
		ex_log("job %s done (recorded by an earlier try)", job);
	else
		ex_log("job %s is no longer this node's: its result is dropped", job);
	job_drop(a, 0);
	run_next(a);
}

static void on_work_done(uv_timer_t *t)
{
	struct agent *a = t->data;
	char pb[512];
	uint8_t owner[MAX_KEY], assign[MAX_KEY], done[MAX_KEY];
	if (a->n_queue == 0 || a->queue[0].state != JOB_RUNNING || a->stopping)
		return;
	struct job *j = &a->queue[0];
	size_t ol = ex_key(owner, sizeof owner, "/owner/", j->name.p, j->name.n, NULL, 0);
	size_t al = ex_key(assign, sizeof assign, a->assign_prefix, j->name.p, j->name.n, NULL, 0);
	size_t dl = ex_key(done, sizeof done, "/done/", j->name.p, j->name.n, NULL, 0);
	/* still this node's job, the same assignment, and not done by anyone yet */
	struct cairn_compare cmp[3] = {
		{ .result = CAIRN_CMP_EQUAL,
		  .target = CAIRN_CMP_VALUE,
		  .key = owner,
		  .key_len = ol,
		  .value = (const uint8_t *)a->name,
		  .value_len = strlen(a->name) },
		{ .result = CAIRN_CMP_EQUAL,
		  .target = CAIRN_CMP_MOD,
		  .key = assign,
		  .key_len = al,
		  .number = j->mod_revision },
		{ .result = CAIRN_CMP_EQUAL,
		  .target = CAIRN_CMP_VERSION,
		  .key = done,
		  .key_len = dl,
		  .number = 0 },
	};
	struct cairn_op ops[2] = {
		{ .type = CAIRN_OP_PUT,
		  .key = done,
		  .key_len = dl,
		  .value = (const uint8_t *)a->name,
		  .value_len = strlen(a->name) },
		{ .type = CAIRN_OP_DELETE, .key = assign, .key_len = al },
	};
	/* otherwise, who did it: this node itself when an earlier try applied unanswered */
	struct cairn_op who = { .type = CAIRN_OP_RANGE, .key = done, .key_len = dl };
	struct cairn_txn txn = { .compare = cmp,
				 .n_compare = 3,
				 .success = ops,
				 .n_success = 2,
				 .failure = &who,
				 .n_failure = 1 };
	int rc = cairn_txn(a->c, &txn, on_done_txn, a);
	if (rc != 0) {
		ex_log("job %s: cannot record it (%s); trying again",
		       ex_printable(j->name.p, j->name.n, pb), cairn_strerror(rc));
		uv_timer_start(&a->work_timer, on_work_done, RETRY_MS, 0);
		return;
	}
	j->state = JOB_COMMITTING;
}

static void run_next(struct agent *a)
{
	char pb[512];
	if (a->stopping || a->n_queue == 0 || a->queue[0].state != JOB_QUEUED)
		return;
	struct job *j = &a->queue[0];
	j->state = JOB_RUNNING;
	ex_log("running job %s (%zu bytes of spec, %llu ms)",
	       ex_printable(j->name.p, j->name.n, pb), j->spec.n, (unsigned long long)a->work_ms);
	uv_timer_start(&a->work_timer, on_work_done, a->work_ms, 0);
}

/* ---- the assignments: read, then watched ---- */

static void on_assign_watch(void *data, struct cairn_watch *w, const struct cairn_watch_batch *b)
{
	struct agent *a = data;
	(void)w;
	if (b->canceled) {
		a->watch = NULL;
		a->watching = false;
		if (a->stopping)
			return;
		/* compacted, or the server ended it: read the assignments again */
		ex_log("the watch of %s ended (%s); reading the assignments again",
		       a->assign_prefix, b->status.message);
		retry_later(a);
		return;
	}
	for (size_t i = 0; i < b->n_events; i++) {
		if (b->events[i].type == CAIRN_EVENT_PUT)
			assignment_put(a, &b->events[i].kv);
		else
			assignment_delete(a, &b->events[i].kv);
	}
	run_next(a);
}

static void on_assign_range(void *data, const struct cairn_status *st,
			    const struct cairn_range_result *res)
{
	struct agent *a = data;
	if (a->stopping)
		return;
	if (st->code != 0) {
		ex_log("reading %s failed (%s: %s); trying again", a->assign_prefix,
		       cairn_code_name(st->code), st->message);
		a->watching = false;
		retry_later(a);
		return;
	}
	/* a queued job no longer in the list was taken away while nobody watched */
	for (size_t i = 0; i < a->n_queue;) {
		struct job *j = &a->queue[i];
		bool listed = false;
		for (size_t k = 0; k < res->n_kvs && !listed; k++) {
			size_t pl = strlen(a->assign_prefix);
			listed = ex_bytes_eq(&j->name, res->kvs[k].key + pl,
					     res->kvs[k].key_len - pl);
		}
		if (!listed && j->state == JOB_QUEUED)
			job_drop(a, i);
		else
			i++;
	}
	for (size_t k = 0; k < res->n_kvs; k++)
		assignment_put(a, &res->kvs[k]);
	ex_log("%zu assignments under %s", res->n_kvs, a->assign_prefix);
	uint8_t end[MAX_KEY];
	size_t pl = strlen(a->assign_prefix);
	struct cairn_watch_opts o = {
		.range_end = end,
		.range_end_len = cairn_prefix_end((const uint8_t *)a->assign_prefix, pl, end),
		.start_revision = res->header.revision + 1,
	};
	int rc = cairn_watch(a->c, (const uint8_t *)a->assign_prefix, pl, &o, on_assign_watch, a,
			     &a->watch);
	if (rc != 0) {
		ex_log("watching %s: %s; trying again", a->assign_prefix, cairn_strerror(rc));
		a->watching = false;
		a->watch = NULL;
		retry_later(a);
		return;
	}
	run_next(a);
}

static void assignments_read(struct agent *a)
{
	uint8_t end[MAX_KEY];
	size_t pl = strlen(a->assign_prefix);
	struct cairn_range_opts o = {
		.range_end = end,
		.range_end_len = cairn_prefix_end((const uint8_t *)a->assign_prefix, pl, end),
	};
	a->watching = true;
	int rc = cairn_range(a->c, (const uint8_t *)a->assign_prefix, pl, &o, on_assign_range, a);
	if (rc != 0) {
		ex_log("reading %s: %s; trying again", a->assign_prefix, cairn_strerror(rc));
		a->watching = false;
		retry_later(a);
	}
}

/* ---- registration: lease, keepalive, /nodes/<name> ---- */

/* What is missing, RETRY_MS after a failure: the registration, or the assignments' watch. */
static void on_retry(uv_timer_t *t)
{
	struct agent *a = t->data;
	if (a->lease == 0)
		agent_register(a);
	else if (!a->watching)
		assignments_read(a);
}

static void retry_later(struct agent *a)
{
	if (!a->stopping)
		uv_timer_start(&a->retry_timer, on_retry, RETRY_MS, 0);
}

static void on_keepalive(void *data, struct cairn_keepalive *ka, const struct cairn_status *st,
			 const struct cairn_lease_result *res, bool final)
{
	struct agent *a = data;
	(void)res;
	if (!final)
		return;
	if (a->ka == ka)
		a->ka = NULL;
	if (a->stopping || a->registering)
		return;
	ex_log("lease %llx lost (%s: %s); registering again", (unsigned long long)a->lease,
	       cairn_code_name(st->code), st->message);
	a->lease = 0;
	agent_register(a);
}

static void on_registered(void *data, const struct cairn_status *st,
			  const struct cairn_put_result *res)
{
	struct agent *a = data;
	(void)res;
	a->registering = false;
	if (a->stopping)
		return;
	if (st->code != 0) {
		ex_log("registering %s failed (%s: %s); trying again", a->node_key,
		       cairn_code_name(st->code), st->message);
		if (a->ka != NULL)
			cairn_lease_keepalive_stop(a->ka); /* the lease expires by itself */
		a->ka = NULL;
		a->lease = 0;
		retry_later(a);
		return;
	}
	ex_log("registered %s with lease %llx (ttl %lld s)", a->node_key,
	       (unsigned long long)a->lease, (long long)a->ttl);
	if (!a->watching)
		assignments_read(a);
}

/* The record: the same JSON as /cairn/members/ (server/gossip_store_json.h), so that
 * cairn_node_parse() reads it. Tags were checked to need no escaping. */
static size_t node_record(struct agent *a, char *buf, size_t cap)
{
	char since[32];
	ex_now_rfc3339(since);
	int n = snprintf(buf, cap,
			 "{\"name\":\"%s\",\"address\":\"\",\"state\":\"alive\",\"incarnation\":0,"
			 "\"tags\":{",
			 a->name);
	for (size_t i = 0; i < a->n_tags && n > 0 && (size_t)n < cap; i++) {
		const char *eq = strchr(a->tags[i], '=');
		n += snprintf(buf + n, cap - (size_t)n, "%s\"%.*s\":\"%s\"", i > 0 ? "," : "",
			      (int)(eq - a->tags[i]), a->tags[i], eq + 1);
	}
	if (n > 0 && (size_t)n < cap)
		n += snprintf(buf + n, cap - (size_t)n, "},\"since\":\"%s\"}", since);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void on_late_revoke(void *data, const struct cairn_status *st,
			   const struct cairn_lease_result *res)
{
	(void)data;
	(void)st;
	(void)res;
}

static void on_granted(void *data, const struct cairn_status *st,
		       const struct cairn_lease_result *res)
{
	struct agent *a = data;
	char rec[4096];
	if (a->stopping) {
		a->registering = false;
		if (st->code == 0) /* not kept: revoke it rather than wait for its TTL */
			cairn_lease_revoke(a->c, res->id, on_late_revoke, a);
		return;
	}
	if (st->code != 0) {
		a->registering = false;
		ex_log("lease grant failed (%s: %s); trying again", cairn_code_name(st->code),
		       st->message);
		retry_later(a);
		return;
	}
	a->lease = res->id;
	int rc = cairn_lease_keepalive(a->c, a->lease, on_keepalive, a, &a->ka);
	size_t len = node_record(a, rec, sizeof rec);
	struct cairn_put_opts po = { .lease = a->lease };
	if (rc == 0)
		rc = cairn_put(a->c, (const uint8_t *)a->node_key, strlen(a->node_key),
			       (const uint8_t *)rec, len, &po, on_registered, a);
	if (rc != 0) {
		a->registering = false;
		ex_log("registering: %s; trying again", cairn_strerror(rc));
		if (a->ka != NULL)
			cairn_lease_keepalive_stop(a->ka); /* the lease expires by itself */
		a->ka = NULL;
		a->lease = 0;
		retry_later(a);
	}
}

static void agent_register(struct agent *a)
{
	if (a->stopping || a->registering)
		return;
	a->registering = true;
	int rc = cairn_lease_grant(a->c, a->ttl, 0, on_granted, a);
	if (rc != 0) {
		a->registering = false;
		ex_log("lease grant: %s; trying again", cairn_strerror(rc));
		retry_later(a);
	}
}

/* ---- stopping ---- */

static void on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

static void on_client_closed(struct cairn_client *c, void *data)
{
	struct agent *a = data;
	(void)c;
	uv_close((uv_handle_t *)&a->work_timer, on_handle_closed);
	uv_close((uv_handle_t *)&a->retry_timer, on_handle_closed);
	uv_close((uv_handle_t *)&a->sigint, on_handle_closed);
	uv_close((uv_handle_t *)&a->sigterm, on_handle_closed);
}

static void on_revoked(void *data, const struct cairn_status *st,
		       const struct cairn_lease_result *res)
{
	struct agent *a = data;
	(void)res;
	if (st->code == 0)
		ex_log("lease %llx revoked: %s is gone", (unsigned long long)a->lease, a->node_key);
	else
		ex_log("revoking lease %llx failed (%s: %s); it expires in %lld s",
		       (unsigned long long)a->lease, cairn_code_name(st->code), st->message,
		       (long long)a->ttl);
	cairn_client_close(a->c, on_client_closed, a);
}

static void agent_stop(struct agent *a)
{
	if (a->stopping)
		return;
	a->stopping = true;
	ex_log("stopping (%zu jobs unfinished)", a->n_queue);
	uv_timer_stop(&a->work_timer);
	uv_timer_stop(&a->retry_timer);
	if (a->watch != NULL)
		cairn_watch_cancel(a->watch);
	if (a->ka != NULL)
		cairn_lease_keepalive_stop(a->ka);
	a->ka = NULL;
	if (a->lease != 0 && cairn_lease_revoke(a->c, a->lease, on_revoked, a) == 0)
		return;
	cairn_client_close(a->c, on_client_closed, a);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct agent *a = s->data;
	if (a->stopping) {
		ex_log("signal %d again: exiting now", signum);
		exit(1);
	}
	ex_log("signal %d", signum);
	agent_stop(a);
}

/* ---- main ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cairn-example-node-agent --name NAME [--endpoints LIST] [--ttl SECONDS]\n"
		"                                [--work-ms MS] [--tag KEY=VALUE]...\n"
		"  --endpoints  comma-separated client URLs or host:port [%s]\n"
		"  --name       this node's name: letters, digits, '.', '_', '-' (required)\n"
		"  --ttl        lease TTL in seconds: how long after a crash the node is gone [10]\n"
		"  --work-ms    how long \"running\" one job takes [2000]\n"
		"  --tag        a tag in the node's record (letters, digits, '.', '_', '-'), "
		"repeatable\n",
		EX_DEFAULT_ENDPOINTS);
}

static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *v)
{
	char *end;
	unsigned long long x = strtoull(s, &end, 10);
	if (*s == '\0' || *end != '\0' || *s == '-' || x < lo || x > hi)
		return false;
	*v = x;
	return true;
}

int main(int argc, char **argv)
{
	static struct agent ag;
	struct agent *a = &ag;
	const char *endpoints = EX_DEFAULT_ENDPOINTS;
	uint64_t ttl = 10, work_ms = 2000;
	static const struct option opts[] = {
		{ "endpoints", required_argument, NULL, 'e' },
		{ "name", required_argument, NULL, 'n' },
		{ "ttl", required_argument, NULL, 't' },
		{ "work-ms", required_argument, NULL, 'w' },
		{ "tag", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'e':
			endpoints = optarg;
			break;
		case 'n':
			a->name = optarg;
			break;
		case 't':
			if (!parse_u64(optarg, 1, 86400, &ttl)) {
				fprintf(stderr, "--ttl: 1 to 86400 seconds\n");
				return 2;
			}
			break;
		case 'w':
			if (!parse_u64(optarg, 0, 86400000, &work_ms)) {
				fprintf(stderr, "--work-ms: 0 to 86400000\n");
				return 2;
			}
			break;
		case 'g': {
			const char *eq = strchr(optarg, '=');
			char k[EX_MAX_NAME + 1];
			size_t kl = eq != NULL ? (size_t)(eq - optarg) : 0;
			if (eq == NULL || kl > EX_MAX_NAME || a->n_tags == MAX_TAGS) {
				fprintf(stderr, "--tag KEY=VALUE, at most %d\n", MAX_TAGS);
				return 2;
			}
			memcpy(k, optarg, kl);
			k[kl] = '\0';
			if (!ex_name_ok(k) || (eq[1] != '\0' && !ex_name_ok(eq + 1))) {
				fprintf(stderr, "--tag %s: letters, digits, '.', '_', '-' only\n",
					optarg);
				return 2;
			}
			a->tags[a->n_tags++] = optarg;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || a->name == NULL) {
		usage(stderr);
		return 2;
	}
	if (!ex_name_ok(a->name)) {
		fprintf(stderr, "--name %s: 1 to %d letters, digits, '.', '_', '-'\n", a->name,
			EX_MAX_NAME);
		return 2;
	}
	char *store = malloc(strlen(endpoints) + 8 * EX_MAX_ENDPOINTS + 1);
	const char *eps[EX_MAX_ENDPOINTS];
	size_t n_eps = store != NULL ? ex_endpoints(endpoints, store, eps) : 0;
	if (n_eps == 0) {
		fprintf(stderr, "--endpoints: 1 to %d endpoints\n", EX_MAX_ENDPOINTS);
		return 2;
	}
	char who[EX_MAX_NAME + 16];
	snprintf(who, sizeof who, "node-agent %s", a->name);
	ex_log_init(who);
	snprintf(a->assign_prefix, sizeof a->assign_prefix, "/assign/%s/", a->name);
	snprintf(a->node_key, sizeof a->node_key, "/nodes/%s", a->name);
	a->ttl = (int64_t)ttl;
	a->work_ms = work_ms;
	a->loop = uv_default_loop();

	struct cairn_config cfg = { .endpoints = eps, .n_endpoints = n_eps };
	int rc = cairn_client_new(a->loop, &cfg, &a->c);
	if (rc != 0) {
		fprintf(stderr, "cairn_client_new: %s\n", cairn_strerror(rc));
		return 1;
	}
	uv_timer_init(a->loop, &a->work_timer);
	uv_timer_init(a->loop, &a->retry_timer);
	uv_signal_init(a->loop, &a->sigint);
	uv_signal_init(a->loop, &a->sigterm);
	a->work_timer.data = a->retry_timer.data = a->sigint.data = a->sigterm.data = a;
	uv_signal_start(&a->sigint, on_signal, SIGINT);
	uv_signal_start(&a->sigterm, on_signal, SIGTERM);
	ex_log("starting: endpoints %s, ttl %llu s, %llu ms a job", endpoints,
	       (unsigned long long)ttl, (unsigned long long)work_ms);
	agent_register(a);

	uv_run(a->loop, UV_RUN_DEFAULT);
	for (size_t i = 0; i < a->n_queue; i++) {
		ex_bytes_free(&a->queue[i].name);
		ex_bytes_free(&a->queue[i].spec);
	}
	uv_loop_close(a->loop);
	free(store);
	ex_log("stopped");
	return 0;
}
