/* scheduler.c: an example scheduler on libcairn (bin/cairn-example-scheduler).
 *
 *   cairn-example-scheduler [--endpoints LIST] [--name NAME] [--no-gossip] [--grace-ms 3000]
 *
 * The keys (examples/README.md runs it against `make run`):
 *   /jobs/<job>            the work queue: a job to run, its value the job's spec (written by
 *                          whoever submits work, e.g. `etcdctl put /jobs/j1 "payload"`)
 *   /nodes/<name>          a node agent's registration, attached to its lease
 *                          (examples/node_agent.c): there while the agent lives
 *   /cairn/members/<name>  the gossip view Cairn's leader records (`cairn agent --name <name>` on
 *                          the node): alive, suspect, dead or left, seconds after a crash
 *   /owner/<job>           which node the job is given to (written here)
 *   /assign/<node>/<job>   the assignment the node watches, its value the spec (written here)
 *   /done/<job>            the node that finished the job (written by the node agent)
 *
 * How it works:
 *   1. One Txn reads /jobs/, /owner/ and /done/ at one revision; a watch of each prefix then
 *      follows from the next revision, so the scheduler's view never misses a change.
 *   2. Two cairn_members_follow() followers track the nodes: /nodes/ (registered or not) and,
 *      unless --no-gossip, /cairn/members/ (what gossip says of the node of the same name).
 *      A node is live when it is registered and gossip does not say otherwise (a node without
 *      a `cairn agent` is judged by its lease alone); it is down once its registration is
 *      gone, or gossip says dead or left (faster than a lease's TTL). A suspect node gets no
 *      new work but keeps what it has: it may be back in a moment.
 *   3. A job that is not done and has no owner goes to the live node with the fewest
 *      unfinished jobs, in one Txn: if /jobs/<job> is unchanged, /done/<job> absent and
 *      /owner/<job> still absent (the job is still unassigned), put /owner/<job> and
 *      /assign/<node>/<job>. A job whose owner is down moves the same way, the Txn checking
 *      that /owner/<job> is still the one seen and deleting the old assignment. So two
 *      schedulers running at once never give a job twice: the second Txn fails.
 *   4. A job deleted from /jobs/ has its owner, assignment and done keys deleted.
 * Owners the followers have not reported within --grace-ms of the start (nodes that died
 * while no scheduler ran) count as down then. A watch that ends (its revision compacted while
 * the client was cut off) is replaced: its prefix is read again, what changed meanwhile taken
 * in, and watched from there; the followers do the same by themselves. A follower that ends for
 * good stops the scheduler with status 1. SIGINT or SIGTERM stops it cleanly (status 0). */
#include <getopt.h>
#include <signal.h>

#include <uv.h>

#include "example.h"

#define MAX_JOBS 10000       /* jobs tracked; more are left alone, and logged */
#define MAX_NODES 1024       /* nodes tracked (registered or in gossip) */
#define MAX_JOB_NAME 1024    /* bytes of a job's name (the key after /jobs/) */
#define MAX_SPEC (64 * 1024) /* bytes of a job's spec copied into its assignment */
#define MAX_INFLIGHT 64      /* Txns in flight */
#define MAX_KEY 2048
#define SWEEP_MS 1000  /* a sweep at least this often: retries failed Txns */
#define RESYNC_MS 1000 /* before reading a prefix again after a failure */

struct job {
	struct ex_bytes name;
	bool present; /* /jobs/<job> exists */
	struct ex_bytes spec;
	int64_t spec_mod;
	struct ex_bytes owner; /* /owner/<job>, empty if none */
	int64_t owner_mod;
	bool done;     /* /done/<job> exists */
	bool inflight; /* a Txn about this job is in flight */
	bool listed;   /* seen by the read of a prefix in progress */
};

struct node {
	char name[EX_MAX_NAME + 1];
	bool registered;      /* /nodes/<name> holds an alive record */
	bool ever_registered; /* since this scheduler started */
	int gossip;           /* enum cairn_node_state, -1 if gossip does not know it */
	size_t load;          /* unfinished jobs it owns (computed by each sweep) */
};

enum { W_JOBS, W_OWNER, W_DONE, N_WATCHES };

struct resync_ctx {
	struct sched *s;
	int which;
};
static const char *const watch_prefix[N_WATCHES] = { "/jobs/", "/owner/", "/done/" };

struct sched {
	uv_loop_t *loop;
	struct cairn_client *c;
	bool gossip;
	uint64_t grace_ms;

	struct job *jobs; /* sorted by name */
	size_t n_jobs, cap_jobs;
	bool jobs_full_logged;
	struct node nodes[MAX_NODES];
	size_t n_nodes;

	bool ready; /* the first read is loaded */
	uint64_t grace_end;
	struct cairn_watch *watch[N_WATCHES];
	struct cairn_members *follow_nodes, *follow_gossip;
	size_t inflight;
	bool no_live_logged;

	uv_timer_t sweep_timer, kick_timer, retry_timer;
	uv_timer_t resync_timer[N_WATCHES];
	struct resync_ctx resync[N_WATCHES];
	uv_signal_t sigint, sigterm;
	bool stopping;
	int exit_code;
};

static void sweep(struct sched *s);
static void on_resync_timer(uv_timer_t *t);
static void sched_stop(struct sched *s, int code);

/* ---- tables ---- */

static int bytes_cmp(const struct ex_bytes *a, const uint8_t *p, size_t n)
{
	size_t k = a->n < n ? a->n : n;
	int c = k > 0 ? memcmp(a->p, p, k) : 0;
	if (c != 0)
		return c;
	return a->n < n ? -1 : a->n > n ? 1 : 0;
}

static size_t job_index(struct sched *s, const uint8_t *name, size_t n, bool *found)
{
	size_t lo = 0, hi = s->n_jobs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = bytes_cmp(&s->jobs[mid].name, name, n);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

/* The job of that name, added if new (NULL when the table is full or memory is short). */
static struct job *job_get(struct sched *s, const uint8_t *name, size_t n)
{
	char pb[512];
	bool found;
	size_t i = job_index(s, name, n, &found);
	if (found)
		return &s->jobs[i];
	if (n == 0 || n > MAX_JOB_NAME)
		return NULL;
	if (s->n_jobs == MAX_JOBS) {
		if (!s->jobs_full_logged)
			ex_log("more than %d jobs: job %s and later ones are left alone", MAX_JOBS,
			       ex_printable(name, n, pb));
		s->jobs_full_logged = true;
		return NULL;
	}
	if (s->n_jobs == s->cap_jobs) {
		size_t cap = s->cap_jobs == 0 ? 64 : 2 * s->cap_jobs;
		struct job *jobs = realloc(s->jobs, cap * sizeof *jobs);
		if (jobs == NULL)
			return NULL;
		s->jobs = jobs;
		s->cap_jobs = cap;
	}
	struct job j;
	memset(&j, 0, sizeof j);
	if (!ex_bytes_set(&j.name, name, n))
		return NULL;
	memmove(&s->jobs[i + 1], &s->jobs[i], (s->n_jobs - i) * sizeof s->jobs[0]);
	s->jobs[i] = j;
	s->n_jobs++;
	return &s->jobs[i];
}

/* Forgets a job nothing refers to any more. */
static void job_gc(struct sched *s, struct job *j)
{
	if (j->present || j->owner.n > 0 || j->done || j->inflight)
		return;
	size_t i = (size_t)(j - s->jobs);
	ex_bytes_free(&j->name);
	ex_bytes_free(&j->spec);
	ex_bytes_free(&j->owner);
	memmove(&s->jobs[i], &s->jobs[i + 1], (s->n_jobs - i - 1) * sizeof s->jobs[0]);
	s->n_jobs--;
}

static struct node *node_find(struct sched *s, const uint8_t *name, size_t n)
{
	for (size_t i = 0; i < s->n_nodes; i++)
		if (strlen(s->nodes[i].name) == n && memcmp(s->nodes[i].name, name, n) == 0)
			return &s->nodes[i];
	return NULL;
}

static struct node *node_get(struct sched *s, const char *name)
{
	struct node *nd = node_find(s, (const uint8_t *)name, strlen(name));
	if (nd != NULL || !ex_name_ok(name))
		return nd;
	if (s->n_nodes == MAX_NODES) {
		ex_log("more than %d nodes: %s is ignored", MAX_NODES, name);
		return NULL;
	}
	nd = &s->nodes[s->n_nodes++];
	memset(nd, 0, sizeof *nd);
	snprintf(nd->name, sizeof nd->name, "%s", name);
	nd->gossip = -1;
	return nd;
}

static bool node_live(const struct node *nd)
{
	return nd->registered && (nd->gossip < 0 || nd->gossip == CAIRN_NODE_ALIVE);
}

/* Why the owner of a job counts as down, or NULL while it does not. */
static const char *owner_down(struct sched *s, const struct ex_bytes *owner)
{
	struct node *nd = node_find(s, owner->p, owner->n);
	if (nd != NULL && (nd->gossip == CAIRN_NODE_DEAD || nd->gossip == CAIRN_NODE_LEFT))
		return nd->gossip == CAIRN_NODE_DEAD ? "gossip says dead" : "gossip says left";
	if (nd != NULL && nd->registered)
		return NULL;
	if (nd != NULL && nd->ever_registered)
		return "its registration is gone";
	if (uv_now(s->loop) >= s->grace_end)
		return "not registered";
	return NULL; /* not reported yet: maybe the followers have not read it yet */
}

/* ---- the Txns ---- */

struct txn_ctx {
	struct sched *s;
	struct ex_bytes job; /* the job's name: the table may move while the Txn is out */
	char target[EX_MAX_NAME + 1];
	struct ex_bytes prev; /* the owner it is taken from, if any */
	bool cleanup;
};

static void txn_ctx_free(struct txn_ctx *t)
{
	ex_bytes_free(&t->job);
	ex_bytes_free(&t->prev);
	free(t);
}

static void on_txn(void *data, const struct cairn_status *st, const struct cairn_txn_result *res)
{
	struct txn_ctx *t = data;
	struct sched *s = t->s;
	char pb[512], pb2[512];
	bool found;
	s->inflight--;
	size_t i = job_index(s, t->job.p, t->job.n, &found);
	struct job *j = found ? &s->jobs[i] : NULL;
	const char *job = ex_printable(t->job.p, t->job.n, pb);
	if (j != NULL)
		j->inflight = false;
	if (s->stopping) {
		txn_ctx_free(t);
		return;
	}
	if (st->code != 0) {
		ex_log("job %s: Txn failed (%s: %s%s); trying again at the next sweep", job,
		       cairn_code_name(st->code), st->message,
		       st->maybe_applied ? ", it may have applied" : "");
	} else if (!res->succeeded) {
		ex_log("job %s changed meanwhile; looking at it again", job);
	} else if (t->cleanup) {
		ex_log("job %s deleted: its owner, assignment and result are removed", job);
		if (j != NULL) {
			ex_bytes_free(&j->owner);
			j->done = false;
		}
	} else {
		if (t->prev.n > 0)
			ex_log("reassigned job %s from %s to %s", job,
			       ex_printable(t->prev.p, t->prev.n, pb2), t->target);
		else
			ex_log("assigned job %s to %s", job, t->target);
		/* the watch of /owner/ says the same later; knowing it now keeps the next
		 * sweep from trying again */
		if (j != NULL) {
			ex_bytes_set(&j->owner, (const uint8_t *)t->target, strlen(t->target));
			j->owner_mod = res->header.revision;
		}
	}
	if (j != NULL)
		job_gc(s, j);
	txn_ctx_free(t);
}

/* Gives job j to node `target` (taking it from its owner if it has one); or, with target NULL,
 * removes what belongs to a job deleted from /jobs/. */
static bool txn_send(struct sched *s, struct job *j, const char *target)
{
	uint8_t kjob[MAX_KEY], kown[MAX_KEY], kdone[MAX_KEY], knew[MAX_KEY], kold[MAX_KEY];
	struct cairn_compare cmp[3];
	struct cairn_op ops[3];
	size_t nc = 0, no = 0;
	size_t lj = ex_key(kjob, sizeof kjob, "/jobs/", j->name.p, j->name.n, NULL, 0);
	size_t lo = ex_key(kown, sizeof kown, "/owner/", j->name.p, j->name.n, NULL, 0);
	size_t ld = ex_key(kdone, sizeof kdone, "/done/", j->name.p, j->name.n, NULL, 0);
	size_t lold = j->owner.n > 0 ? ex_key(kold, sizeof kold, "/assign/", j->owner.p, j->owner.n,
					      j->name.p, j->name.n) :
				       0;
	memset(cmp, 0, sizeof cmp);
	memset(ops, 0, sizeof ops);
	struct txn_ctx *t = calloc(1, sizeof *t);
	if (t == NULL || !ex_bytes_set(&t->job, j->name.p, j->name.n) ||
	    (j->owner.n > 0 && !ex_bytes_set(&t->prev, j->owner.p, j->owner.n))) {
		if (t != NULL)
			txn_ctx_free(t);
		return false;
	}
	t->s = s;
	if (target == NULL) {
		/* the job is still deleted: drop its owner, assignment and result */
		t->cleanup = true;
		cmp[nc++] = (struct cairn_compare){ .result = CAIRN_CMP_EQUAL,
						    .target = CAIRN_CMP_VERSION,
						    .key = kjob,
						    .key_len = lj,
						    .number = 0 };
		ops[no++] =
			(struct cairn_op){ .type = CAIRN_OP_DELETE, .key = kown, .key_len = lo };
		ops[no++] =
			(struct cairn_op){ .type = CAIRN_OP_DELETE, .key = kdone, .key_len = ld };
		if (lold > 0)
			ops[no++] = (struct cairn_op){ .type = CAIRN_OP_DELETE,
						       .key = kold,
						       .key_len = lold };
	} else {
		snprintf(t->target, sizeof t->target, "%s", target);
		size_t lnew = ex_key(knew, sizeof knew, "/assign/", (const uint8_t *)target,
				     strlen(target), j->name.p, j->name.n);
		/* the job as seen, not done, and its owner as seen: none, or the one down */
		cmp[nc++] = (struct cairn_compare){ .result = CAIRN_CMP_EQUAL,
						    .target = CAIRN_CMP_MOD,
						    .key = kjob,
						    .key_len = lj,
						    .number = j->spec_mod };
		cmp[nc++] = (struct cairn_compare){ .result = CAIRN_CMP_EQUAL,
						    .target = CAIRN_CMP_VERSION,
						    .key = kdone,
						    .key_len = ld,
						    .number = 0 };
		if (j->owner.n > 0)
			cmp[nc++] = (struct cairn_compare){ .result = CAIRN_CMP_EQUAL,
							    .target = CAIRN_CMP_MOD,
							    .key = kown,
							    .key_len = lo,
							    .number = j->owner_mod };
		else
			cmp[nc++] = (struct cairn_compare){ .result = CAIRN_CMP_EQUAL,
							    .target = CAIRN_CMP_VERSION,
							    .key = kown,
							    .key_len = lo,
							    .number = 0 };
		ops[no++] = (struct cairn_op){ .type = CAIRN_OP_PUT,
					       .key = kown,
					       .key_len = lo,
					       .value = (const uint8_t *)target,
					       .value_len = strlen(target) };
		ops[no++] = (struct cairn_op){ .type = CAIRN_OP_PUT,
					       .key = knew,
					       .key_len = lnew,
					       .value = j->spec.p,
					       .value_len = j->spec.n };
		if (lold > 0)
			ops[no++] = (struct cairn_op){ .type = CAIRN_OP_DELETE,
						       .key = kold,
						       .key_len = lold };
	}
	struct cairn_txn txn = { .compare = cmp, .n_compare = nc, .success = ops, .n_success = no };
	int rc = cairn_txn(s->c, &txn, on_txn, t);
	if (rc != 0) {
		txn_ctx_free(t);
		return false;
	}
	j->inflight = true;
	s->inflight++;
	return true;
}

/* ---- the sweep: every decision is made here, from the view ---- */

static struct node *pick(struct sched *s, const struct ex_bytes * not )
{
	struct node *best = NULL;
	for (size_t i = 0; i < s->n_nodes; i++) {
		struct node *nd = &s->nodes[i];
		if (!node_live(nd) || (not != NULL && not ->n == strlen(nd->name) &&
				       memcmp(not ->p, nd->name, not ->n) == 0))
			continue;
		if (best == NULL || nd->load < best->load ||
		    (nd->load == best->load && strcmp(nd->name, best->name) < 0))
			best = nd;
	}
	return best;
}

static void sweep(struct sched *s)
{
	char pb[512], pb2[512];
	if (!s->ready || s->stopping)
		return;
	for (size_t i = 0; i < s->n_nodes; i++)
		s->nodes[i].load = 0;
	for (size_t i = 0; i < s->n_jobs; i++) {
		struct job *j = &s->jobs[i];
		struct node *nd;
		if (j->owner.n > 0 && !j->done && (nd = node_find(s, j->owner.p, j->owner.n)))
			nd->load++;
	}
	bool waiting = false;
	for (size_t i = 0; i < s->n_jobs && s->inflight < MAX_INFLIGHT; i++) {
		struct job *j = &s->jobs[i];
		if (j->inflight)
			continue;
		if (!j->present) {
			if (j->owner.n > 0 || j->done)
				txn_send(s, j, NULL);
			continue;
		}
		if (j->done)
			continue;
		const char *why = NULL;
		if (j->owner.n > 0 && (why = owner_down(s, &j->owner)) == NULL)
			continue; /* its owner has it */
		struct node *to = pick(s, j->owner.n > 0 ? &j->owner : NULL);
		if (to == NULL) {
			waiting = true;
			continue;
		}
		if (why != NULL)
			ex_log("job %s: its node %s is down (%s)",
			       ex_printable(j->name.p, j->name.n, pb),
			       ex_printable(j->owner.p, j->owner.n, pb2), why);
		if (txn_send(s, j, to->name))
			to->load++;
	}
	if (waiting && !s->no_live_logged)
		ex_log("jobs are waiting: no live node");
	s->no_live_logged = waiting;
}

static void on_kick(uv_timer_t *t)
{
	sweep(t->data);
}

/* A sweep soon, once the callbacks of this loop iteration have updated the view. */
static void kick(struct sched *s)
{
	if (!s->stopping && !uv_is_active((uv_handle_t *)&s->kick_timer))
		uv_timer_start(&s->kick_timer, on_kick, 0, 0);
}

/* ---- the view: jobs, owners, results ---- */

static void view_put(struct sched *s, int which, const struct cairn_kv *kv)
{
	char pb[512], pb2[512];
	size_t pl = strlen(watch_prefix[which]);
	if (kv->key_len <= pl)
		return;
	struct job *j = job_get(s, kv->key + pl, kv->key_len - pl);
	if (j == NULL)
		return;
	switch (which) {
	case W_JOBS:
		if (kv->value_len > MAX_SPEC) {
			ex_log("job %s: its spec is over %d bytes: ignored",
			       ex_printable(j->name.p, j->name.n, pb), MAX_SPEC);
			break;
		}
		if (!j->present && s->ready)
			ex_log("new job %s", ex_printable(j->name.p, j->name.n, pb));
		j->present = ex_bytes_set(&j->spec, kv->value, kv->value_len);
		j->spec_mod = kv->mod_revision;
		break;
	case W_OWNER:
		/* older than what this scheduler's own Txn answered with: the watch is behind */
		if (kv->mod_revision < j->owner_mod)
			break;
		ex_bytes_set(&j->owner, kv->value, kv->value_len);
		j->owner_mod = kv->mod_revision;
		break;
	default:
		if (!j->done && s->ready)
			ex_log("job %s done by %s", ex_printable(j->name.p, j->name.n, pb),
			       ex_printable(kv->value, kv->value_len, pb2));
		j->done = true;
		break;
	}
	job_gc(s, j);
}

/* The key of job j under prefix `which` is gone. */
static void view_clear(struct sched *s, int which, struct job *j)
{
	if (which == W_JOBS) {
		j->present = false;
		ex_bytes_free(&j->spec);
	} else if (which == W_OWNER) {
		ex_bytes_free(&j->owner);
	} else {
		j->done = false;
	}
	job_gc(s, j);
}

static void view_delete(struct sched *s, int which, const struct cairn_kv *kv)
{
	size_t pl = strlen(watch_prefix[which]);
	bool found;
	if (kv->key_len <= pl)
		return;
	size_t i = job_index(s, kv->key + pl, kv->key_len - pl, &found);
	if (!found)
		return;
	struct job *j = &s->jobs[i];
	if (which == W_OWNER && kv->mod_revision < j->owner_mod)
		return; /* an older deletion than the owner this scheduler just wrote */
	view_clear(s, which, j);
}

static void watch_start(struct sched *s, int which, int64_t from);
static void resync(struct sched *s, int which);

static void on_watch(void *data, struct cairn_watch *w, const struct cairn_watch_batch *b)
{
	struct sched *s = data;
	int which = 0;
	while (which < N_WATCHES && s->watch[which] != w)
		which++;
	if (which == N_WATCHES)
		return;
	if (b->canceled) {
		s->watch[which] = NULL;
		if (!s->stopping) {
			/* e.g. its revision compacted while the client was cut off: what changed
			 * meanwhile is read again */
			ex_log("the watch of %s ended (%s: %s); reading the prefix again",
			       watch_prefix[which], cairn_code_name(b->status.code),
			       b->status.message);
			resync(s, which);
		}
		return;
	}
	for (size_t i = 0; i < b->n_events; i++) {
		if (b->events[i].type == CAIRN_EVENT_PUT)
			view_put(s, which, &b->events[i].kv);
		else
			view_delete(s, which, &b->events[i].kv);
	}
	if (b->n_events > 0)
		kick(s);
}

/* A watch of prefix `which` from revision `from`; on failure, the prefix is read again later. */
static void watch_start(struct sched *s, int which, int64_t from)
{
	uint8_t end[64];
	size_t pl = strlen(watch_prefix[which]);
	struct cairn_watch_opts o = {
		.range_end = end,
		.range_end_len = cairn_prefix_end((const uint8_t *)watch_prefix[which], pl, end),
		.start_revision = from,
	};
	int rc = cairn_watch(s->c, (const uint8_t *)watch_prefix[which], pl, &o, on_watch, s,
			     &s->watch[which]);
	if (rc != 0) {
		s->watch[which] = NULL;
		ex_log("watching %s: %s; reading it again in %d ms", watch_prefix[which],
		       cairn_strerror(rc), RESYNC_MS);
		uv_timer_start(&s->resync_timer[which], on_resync_timer, RESYNC_MS, 0);
	}
}

static void on_resync_range(void *data, const struct cairn_status *st,
			    const struct cairn_range_result *res)
{
	struct sched *s = ((struct resync_ctx *)data)->s;
	int which = ((struct resync_ctx *)data)->which;
	if (s->stopping)
		return;
	if (st->code != 0) {
		ex_log("reading %s failed (%s: %s); again in %d ms", watch_prefix[which],
		       cairn_code_name(st->code), st->message, RESYNC_MS);
		uv_timer_start(&s->resync_timer[which], on_resync_timer, RESYNC_MS, 0);
		return;
	}
	/* what the prefix holds now replaces what the view had of it */
	for (size_t i = 0; i < s->n_jobs; i++)
		s->jobs[i].listed = false;
	size_t pl = strlen(watch_prefix[which]);
	for (size_t k = 0; k < res->n_kvs; k++) {
		const struct cairn_kv *kv = &res->kvs[k];
		bool found;
		if (kv->key_len <= pl)
			continue;
		view_put(s, which, kv);
		size_t i = job_index(s, kv->key + pl, kv->key_len - pl, &found);
		if (found)
			s->jobs[i].listed = true;
	}
	for (size_t i = s->n_jobs; i-- > 0;)
		if (!s->jobs[i].listed)
			view_clear(s, which, &s->jobs[i]);
	ex_log("read %s again at revision %lld: %zu keys", watch_prefix[which],
	       (long long)res->header.revision, res->n_kvs);
	watch_start(s, which, res->header.revision + 1);
	kick(s);
}

static void resync(struct sched *s, int which)
{
	uint8_t end[64];
	size_t pl = strlen(watch_prefix[which]);
	struct cairn_range_opts o = {
		.range_end = end,
		.range_end_len = cairn_prefix_end((const uint8_t *)watch_prefix[which], pl, end),
	};
	s->resync[which] = (struct resync_ctx){ s, which };
	int rc = cairn_range(s->c, (const uint8_t *)watch_prefix[which], pl, &o, on_resync_range,
			     &s->resync[which]);
	if (rc != 0) {
		ex_log("reading %s: %s; again in %d ms", watch_prefix[which], cairn_strerror(rc),
		       RESYNC_MS);
		uv_timer_start(&s->resync_timer[which], on_resync_timer, RESYNC_MS, 0);
	}
}

static void on_resync_timer(uv_timer_t *t)
{
	struct resync_ctx *r = t->data;
	if (!r->s->stopping)
		resync(r->s, r->which);
}

/* ---- nodes ---- */

static void on_nodes(void *data, struct cairn_members *m, const struct cairn_node *node,
		     const struct cairn_status *st, bool final)
{
	struct sched *s = data;
	(void)m;
	if (final) {
		s->follow_nodes = NULL;
		if (!s->stopping) {
			ex_log("following /nodes/ ended (%s: %s): stopping",
			       cairn_code_name(st->code), st->message);
			sched_stop(s, 1);
		}
		return;
	}
	struct node *nd = node_get(s, node->name);
	if (nd == NULL)
		return;
	bool was = node_live(nd);
	nd->registered = !node->removed && node->state == CAIRN_NODE_ALIVE;
	nd->ever_registered |= nd->registered;
	if (node->removed)
		ex_log("node %s unregistered (its lease ended)", nd->name);
	else
		ex_log("node %s registered", nd->name);
	if (was != node_live(nd))
		ex_log("node %s is %s", nd->name, node_live(nd) ? "live" : "not live");
	kick(s);
}

static void on_gossip(void *data, struct cairn_members *m, const struct cairn_node *node,
		      const struct cairn_status *st, bool final)
{
	struct sched *s = data;
	(void)m;
	if (final) {
		s->follow_gossip = NULL;
		if (!s->stopping) {
			ex_log("following /cairn/members/ ended (%s: %s): stopping",
			       cairn_code_name(st->code), st->message);
			sched_stop(s, 1);
		}
		return;
	}
	struct node *nd = node_get(s, node->name);
	if (nd == NULL)
		return;
	bool was = node_live(nd);
	nd->gossip = node->removed ? -1 : node->state;
	ex_log("gossip: %s %s (incarnation %llu)", nd->name,
	       node->removed ? "forgotten" : cairn_node_state_name(node->state),
	       (unsigned long long)node->incarnation);
	if (was != node_live(nd))
		ex_log("node %s is %s", nd->name, node_live(nd) ? "live" : "not live");
	kick(s);
}

/* ---- start: one read of everything, then the watches ---- */

static void start(struct sched *s);

static void on_retry(uv_timer_t *t)
{
	start(t->data);
}

static void on_snapshot(void *data, const struct cairn_status *st,
			const struct cairn_txn_result *res)
{
	struct sched *s = data;
	if (s->stopping)
		return;
	if (st->code != 0) {
		ex_log("reading the jobs failed (%s: %s); trying again", cairn_code_name(st->code),
		       st->message);
		uv_timer_start(&s->retry_timer, on_retry, 1000, 0);
		return;
	}
	for (int w = 0; w < N_WATCHES && w < (int)res->n_results; w++) {
		const struct cairn_range_result *r = &res->results[w].u.range;
		for (size_t k = 0; k < r->n_kvs; k++)
			view_put(s, w, &r->kvs[k]);
	}
	size_t pending = 0, running = 0, done = 0;
	for (size_t i = 0; i < s->n_jobs; i++) {
		const struct job *j = &s->jobs[i];
		if (!j->present)
			continue;
		if (j->done)
			done++;
		else if (j->owner.n > 0)
			running++;
		else
			pending++;
	}
	ex_log("read at revision %lld: %zu jobs unassigned, %zu assigned, %zu done",
	       (long long)res->header.revision, pending, running, done);
	for (int w = 0; w < N_WATCHES; w++)
		watch_start(s, w, res->header.revision + 1);
	int rc = cairn_members_follow(s->c, "/nodes/", on_nodes, s, &s->follow_nodes);
	if (rc == 0 && s->gossip)
		rc = cairn_members_follow(s->c, NULL, on_gossip, s, &s->follow_gossip);
	if (rc != 0) {
		ex_log("following the nodes: %s", cairn_strerror(rc));
		sched_stop(s, 1);
		return;
	}
	s->ready = true;
	s->grace_end = uv_now(s->loop) + s->grace_ms;
	kick(s);
}

static void start(struct sched *s)
{
	uint8_t ends[N_WATCHES][64];
	struct cairn_op ops[N_WATCHES];
	memset(ops, 0, sizeof ops);
	for (int w = 0; w < N_WATCHES; w++) {
		size_t pl = strlen(watch_prefix[w]);
		ops[w].type = CAIRN_OP_RANGE;
		ops[w].key = (const uint8_t *)watch_prefix[w];
		ops[w].key_len = pl;
		ops[w].range_end = ends[w];
		ops[w].range_end_len =
			cairn_prefix_end((const uint8_t *)watch_prefix[w], pl, ends[w]);
	}
	/* no compare: the success branch always runs, and its reads share one revision */
	struct cairn_txn txn = { .success = ops, .n_success = N_WATCHES, .timeout_ms = 10000 };
	int rc = cairn_txn(s->c, &txn, on_snapshot, s);
	if (rc != 0) {
		ex_log("reading the jobs: %s; trying again", cairn_strerror(rc));
		uv_timer_start(&s->retry_timer, on_retry, 1000, 0);
	}
}

static void on_sweep_timer(uv_timer_t *t)
{
	sweep(t->data);
}

/* ---- stopping ---- */

static void on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

static void on_client_closed(struct cairn_client *c, void *data)
{
	struct sched *s = data;
	(void)c;
	uv_close((uv_handle_t *)&s->sweep_timer, on_handle_closed);
	uv_close((uv_handle_t *)&s->kick_timer, on_handle_closed);
	uv_close((uv_handle_t *)&s->retry_timer, on_handle_closed);
	for (int w = 0; w < N_WATCHES; w++)
		uv_close((uv_handle_t *)&s->resync_timer[w], on_handle_closed);
	uv_close((uv_handle_t *)&s->sigint, on_handle_closed);
	uv_close((uv_handle_t *)&s->sigterm, on_handle_closed);
}

static void sched_stop(struct sched *s, int code)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->exit_code = code;
	ex_log("stopping");
	uv_timer_stop(&s->sweep_timer);
	uv_timer_stop(&s->kick_timer);
	uv_timer_stop(&s->retry_timer);
	for (int w = 0; w < N_WATCHES; w++)
		uv_timer_stop(&s->resync_timer[w]);
	/* the client's close ends the watches, followers and Txns still out (their final
	 * callbacks run with CANCELLED), then runs on_client_closed */
	cairn_client_close(s->c, on_client_closed, s);
}

static void on_signal(uv_signal_t *sig, int signum)
{
	struct sched *s = sig->data;
	if (s->stopping) {
		ex_log("signal %d again: exiting now", signum);
		exit(1);
	}
	ex_log("signal %d", signum);
	sched_stop(s, 0);
}

/* ---- main ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cairn-example-scheduler [--endpoints LIST] [--name NAME] [--no-gossip]\n"
		"                               [--grace-ms MS]\n"
		"  --endpoints  comma-separated client URLs or host:port [%s]\n"
		"  --name       this scheduler's name, in its log lines [scheduler]\n"
		"  --no-gossip  judge nodes by their /nodes/ registration only, not by\n"
		"               /cairn/members/\n"
		"  --grace-ms   how long after the start an owner never reported counts as down "
		"[3000]\n",
		EX_DEFAULT_ENDPOINTS);
}

int main(int argc, char **argv)
{
	static struct sched sc;
	struct sched *s = &sc;
	const char *endpoints = EX_DEFAULT_ENDPOINTS, *name = "scheduler";
	static const struct option opts[] = {
		{ "endpoints", required_argument, NULL, 'e' },
		{ "name", required_argument, NULL, 'n' },
		{ "no-gossip", no_argument, NULL, 'G' },
		{ "grace-ms", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	s->gossip = true;
	s->grace_ms = 3000;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'e':
			endpoints = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'G':
			s->gossip = false;
			break;
		case 'g': {
			char *end;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || *optarg == '-' || v > 3600000) {
				fprintf(stderr, "--grace-ms: 0 to 3600000\n");
				return 2;
			}
			s->grace_ms = v;
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
	if (optind != argc || !ex_name_ok(name)) {
		usage(stderr);
		return 2;
	}
	char *store = malloc(strlen(endpoints) + 8 * EX_MAX_ENDPOINTS + 1);
	const char *eps[EX_MAX_ENDPOINTS];
	size_t n_eps = store != NULL ? ex_endpoints(endpoints, store, eps) : 0;
	if (n_eps == 0) {
		fprintf(stderr, "--endpoints: 1 to %d endpoints\n", EX_MAX_ENDPOINTS);
		return 2;
	}
	ex_log_init(name);
	s->loop = uv_default_loop();
	struct cairn_config cfg = { .endpoints = eps, .n_endpoints = n_eps };
	int rc = cairn_client_new(s->loop, &cfg, &s->c);
	if (rc != 0) {
		fprintf(stderr, "cairn_client_new: %s\n", cairn_strerror(rc));
		return 1;
	}
	uv_timer_init(s->loop, &s->sweep_timer);
	uv_timer_init(s->loop, &s->kick_timer);
	uv_timer_init(s->loop, &s->retry_timer);
	for (int w = 0; w < N_WATCHES; w++) {
		uv_timer_init(s->loop, &s->resync_timer[w]);
		s->resync[w] = (struct resync_ctx){ s, w };
		s->resync_timer[w].data = &s->resync[w];
	}
	uv_signal_init(s->loop, &s->sigint);
	uv_signal_init(s->loop, &s->sigterm);
	s->sweep_timer.data = s->kick_timer.data = s->retry_timer.data = s;
	s->sigint.data = s->sigterm.data = s;
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	uv_timer_start(&s->sweep_timer, on_sweep_timer, SWEEP_MS, SWEEP_MS);
	ex_log("starting: endpoints %s, nodes from /nodes/%s", endpoints,
	       s->gossip ? " and /cairn/members/" : "");
	start(s);

	uv_run(s->loop, UV_RUN_DEFAULT);
	for (size_t i = 0; i < s->n_jobs; i++) {
		ex_bytes_free(&s->jobs[i].name);
		ex_bytes_free(&s->jobs[i].spec);
		ex_bytes_free(&s->jobs[i].owner);
	}
	free(s->jobs);
	uv_loop_close(s->loop);
	free(store);
	ex_log("stopped");
	return s->exit_code;
}
