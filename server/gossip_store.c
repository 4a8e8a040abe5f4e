/* gossip_store.c: the Raft leader writes the gossip view into the store under
 * /cairn/members/<name> (gossip_store.h), one JSON value per member (gossip_store_json.h), so a
 * scheduler watching that prefix with any etcd client sees nodes join, die, come back and leave.
 * Consul's leader reconciles Serf into its catalog the same way.
 *
 * WRITES. Only the leader writes, with ordinary Requests proposed through Raft from the loop
 * thread (Request.member_id 0: nobody waits for them), so the changes reach watchers as normal
 * events with revisions, and every member's store holds the same view.
 *   - Each gossip event: the member's value is put (a Put) unless the key already says the same
 *     state, incarnation, address and tags (the since field is left out of that comparison, so a
 *     new leader does not rewrite every key); a member gossip reaped (forgotten after
 *     reap_dead_ms / reap_left_ms) has its key deleted (a DeleteRange).
 *   - A full sweep when this member becomes leader (once its store has applied everything the
 *     previous terms committed), then every GSTORE_SWEEP_MS, and soon after a change could not be
 *     written: the prefix is read from the local store and what differs from the gossip view is
 *     put, GSTORE_BATCH keys to a Txn. Keys of names the view does not hold are deleted only once
 *     srv_gossip_settled(): a leader that has not merged a full state yet must not delete what
 *     it simply does not know yet.
 *   - The leader does not write its own departure (left or dead): it is stopping, and the next
 *     leader, told by gossip, writes it; a lone server restarted finds its key as it left it.
 *
 * ORDER. Proposals made here are appended to the log in the order they are made, and each holds
 * the member's state at the time of its change, so a watcher sees one member's changes in the
 * order gossip saw them (alive, suspect, dead...). Nothing is ever retried: a change that could
 * not be proposed (no room, no space, not leader any more) marks the view dirty and a later sweep
 * writes the member's state then, which is newer than anything proposed before it. A sweep
 * trusts its own proposals that are not applied yet over what the store holds, so it never puts
 * an older state back. A new leader's gossip may be behind what the previous leader wrote (a
 * death it has not heard of yet): a key newer than the view by SWIM's order (a higher
 * incarnation, or dead over suspect over alive) is left alone, except by the periodic sweep,
 * which by then has given gossip a minute to converge and writes the view as it is. Proposals
 * are made only while the Raft core says this member leads: a follower would forward them to the
 * new leader, behind that leader's own writes.
 *
 * BOUNDS. At most GSTORE_MAX_INFLIGHT proposals not yet applied; beyond that, changes mark the
 * view dirty. The cache holds one value (at most GSTORE_JSON_MAX bytes) per key under the prefix,
 * read in pages of GSTORE_PAGE keys. A sweep is one pass over the keys and one over the members,
 * on the loop thread, once a minute; a change costs one hash lookup and one value to build. */
#include "gossip_store.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gossip_store_json.h"
#include "log.h"
#include "member_int.h"
#include "srv_gossip.h"

#define GSTORE_MAX_INFLIGHT 256 /* proposals not yet applied */
#define GSTORE_SWEEP_MS 60000   /* a full sweep this often while leading */
#define GSTORE_DIRTY_MS 1000    /* a dirty view is swept again at most this often */
#define GSTORE_PAGE 1024        /* keys read from the store at once */
#define GSTORE_BATCH 64         /* keys in one Txn of a sweep (below --max-txn-ops's 128) */

/* What the leader knows of one key under the prefix: its value in the store, or the value of
 * its last proposal about it while that is not yet applied. */
struct gs_ent {
	struct gs_ent *next; /* hash chain */
	uint64_t hash;
	uint64_t pending; /* Raft index of the last proposal about this key, 0: none */
	bool present;     /* the key exists (or a put of it is pending) */
	bool in_store;    /* sweep: the store has the key */
	bool in_view;     /* sweep: gossip knows the member */
	char *value;      /* present: the value */
	size_t value_len;
	size_t name_len;
	char name[]; /* not NUL-terminated */
};

struct gossip_store {
	struct srv_member *m;
	bool leading;              /* the cache is this term's */
	uint64_t term;
	uint64_t start_index; /* the last index at promotion: applied up to it, sweep */
	bool built;           /* the first sweep of the term is done: the cache follows the store */
	bool dirty;           /* a change was not written: sweep soon */
	uint64_t swept_at;    /* the last sweep */
	uint64_t full_at;     /* the last periodic sweep (or the first of the term) */
	struct gs_ent **buckets;
	size_t n_buckets, n_ents;
	uint64_t inflight[GSTORE_MAX_INFLIGHT]; /* indexes of proposals, ascending (a ring) */
	size_t head, n_inflight;
};

_Static_assert(GSTORE_MAX_INFLIGHT <= MAX_WAITERS, "in flight below the member's own bound");

/* ---- the cache --------------------------------------------------------- */

static uint64_t name_hash(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static struct gs_ent *ent_find(struct gossip_store *gs, const void *name, size_t n)
{
	if (gs->n_buckets == 0)
		return NULL;
	uint64_t h = name_hash(name, n);
	for (struct gs_ent *e = gs->buckets[h & (gs->n_buckets - 1)]; e != NULL; e = e->next)
		if (e->hash == h && e->name_len == n && memcmp(e->name, name, n) == 0)
			return e;
	return NULL;
}

static int grow(struct gossip_store *gs)
{
	size_t nb = gs->n_buckets ? gs->n_buckets * 2 : 64;
	struct gs_ent **b = calloc(nb, sizeof *b);
	if (b == NULL)
		return -1;
	for (size_t i = 0; i < gs->n_buckets; i++) {
		for (struct gs_ent *e = gs->buckets[i], *next; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(gs->buckets);
	gs->buckets = b;
	gs->n_buckets = nb;
	return 0;
}

static struct gs_ent *ent_get(struct gossip_store *gs, const void *name, size_t n)
{
	struct gs_ent *e = ent_find(gs, name, n);
	if (e != NULL)
		return e;
	if (gs->n_ents + 1 > gs->n_buckets && grow(gs) != 0)
		return NULL;
	e = calloc(1, sizeof *e + n);
	if (e == NULL)
		return NULL;
	memcpy(e->name, name, n);
	e->name_len = n;
	e->hash = name_hash(name, n);
	e->next = gs->buckets[e->hash & (gs->n_buckets - 1)];
	gs->buckets[e->hash & (gs->n_buckets - 1)] = e;
	gs->n_ents++;
	return e;
}

static int ent_set(struct gs_ent *e, const void *value, size_t n)
{
	char *v = malloc(n ? n : 1);
	if (v == NULL)
		return -1;
	memcpy(v, value, n);
	free(e->value);
	e->value = v;
	e->value_len = n;
	e->present = true;
	return 0;
}

static void ent_clear(struct gs_ent *e)
{
	free(e->value);
	e->value = NULL;
	e->value_len = 0;
	e->present = false;
}

static void cache_free(struct gossip_store *gs)
{
	for (size_t i = 0; i < gs->n_buckets; i++) {
		for (struct gs_ent *e = gs->buckets[i], *next; e != NULL; e = next) {
			next = e->next;
			free(e->value);
			free(e);
		}
	}
	free(gs->buckets);
	gs->buckets = NULL;
	gs->n_buckets = 0;
	gs->n_ents = 0;
}

/* Forget the term: the cache, what is in flight, the sweep's state. */
static void reset(struct gossip_store *gs)
{
	cache_free(gs);
	gs->leading = false;
	gs->built = false;
	gs->dirty = false;
	gs->term = 0;
	gs->start_index = 0;
	gs->head = 0;
	gs->n_inflight = 0;
}

/* ---- proposals ----------------------------------------------------------- */

/* Proposals applied by now leave the ring. */
static void drain(struct gossip_store *gs)
{
	while (gs->n_inflight > 0 && gs->inflight[gs->head] <= gs->m->applied) {
		gs->head = (gs->head + 1) % GSTORE_MAX_INFLIGHT;
		gs->n_inflight--;
	}
}

static bool room(const struct gossip_store *gs)
{
	return gs->n_inflight < GSTORE_MAX_INFLIGHT;
}

static bool leads(const struct gossip_store *gs)
{
	struct raft_status rs;
	raft_status(gs->m->raft, &rs);
	return rs.state == RAFT_LEADER && rs.term == gs->term;
}

static void log_failed(const char *op, const struct gs_ent *e, size_t keys, const char *why)
{
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_DEBUG, "gossip-store-write-failed");
	srv_log_str(&l, "op", op);
	srv_log_mem(&l, "name", e->name, e->name_len);
	srv_log_u64(&l, "keys", keys);
	srv_log_str(&l, "error", why);
	srv_log_end(&l);
}

/* Proposes req as the leader: 0 with *index set, or -1 (logged, the view marked dirty). e is
 * the first of the `keys` entries it writes, for the log. */
static int propose(struct gossip_store *gs, const Cairn__Serverpb__Request *req, const char *op,
		   const struct gs_ent *e, size_t keys, uint64_t *index)
{
	struct srv_member *m = gs->m;
	const char *why = NULL;
	*index = 0;
	if (maint_quota_refuses(m, req, cairn__serverpb__request__get_packed_size(req))) {
		why = "database space exceeded";
	} else {
		int err = member_propose(m, req, index);
		if (err != 0)
			why = raft_strerror(err);
		else if (*index == 0)
			why = "not leader"; /* forwarded: cannot be, leads() was checked */
	}
	if (why != NULL) {
		log_failed(op, e, keys, why);
		gs->dirty = true;
		return -1;
	}
	size_t tail = (gs->head + gs->n_inflight) % GSTORE_MAX_INFLIGHT;
	gs->inflight[tail] = *index;
	gs->n_inflight++;
	return 0;
}

/* Writes gathered to be proposed together: a sweep's go in Txns of up to GSTORE_BATCH
 * operations (one Raft entry and one revision each), an event's alone as a plain Put or
 * DeleteRange. Each entry already holds what its key will say (its value, or absent). */
struct gs_batch {
	size_t n;
	struct gs_ent *ents[GSTORE_BATCH];
	size_t puts, deletes; /* added in all, for the log */
};

static int flush(struct gossip_store *gs, struct gs_batch *b)
{
	const size_t p = sizeof GOSSIP_STORE_PREFIX - 1;
	Etcdserverpb__PutRequest puts[GSTORE_BATCH];
	Etcdserverpb__DeleteRangeRequest dels[GSTORE_BATCH];
	Etcdserverpb__RequestOp ops[GSTORE_BATCH], *opp[GSTORE_BATCH];
	Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	size_t n = b->n, bytes = 0;
	uint64_t index = 0;
	int rv = -1;
	if (n == 0)
		return 0;
	b->n = 0;
	for (size_t i = 0; i < n; i++)
		bytes += p + b->ents[i]->name_len;
	uint8_t *keys = malloc(bytes); /* a key of any length may be under the prefix */
	if (keys != NULL) {
		uint8_t *k = keys;
		for (size_t i = 0; i < n; i++) {
			struct gs_ent *e = b->ents[i];
			memcpy(k, GOSSIP_STORE_PREFIX, p);
			memcpy(k + p, e->name, e->name_len);
			etcdserverpb__request_op__init(&ops[i]);
			opp[i] = &ops[i];
			if (e->present) {
				etcdserverpb__put_request__init(&puts[i]);
				puts[i].key.data = k;
				puts[i].key.len = p + e->name_len;
				puts[i].value.data = (uint8_t *)e->value;
				puts[i].value.len = e->value_len;
				ops[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
				ops[i].request_put = &puts[i];
			} else {
				etcdserverpb__delete_range_request__init(&dels[i]);
				dels[i].key.data = k;
				dels[i].key.len = p + e->name_len;
				ops[i].request_case =
					ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
				ops[i].request_delete_range = &dels[i];
			}
			k += p + e->name_len;
		}
		/* id 0, member_id 0: nobody waits for it */
		if (n == 1 && b->ents[0]->present) {
			req.op_case = CAIRN__SERVERPB__REQUEST__OP_PUT;
			req.put = &puts[0];
		} else if (n == 1) {
			req.op_case = CAIRN__SERVERPB__REQUEST__OP_DELETE_RANGE;
			req.delete_range = &dels[0];
		} else {
			txn.n_success = n;
			txn.success = opp;
			req.op_case = CAIRN__SERVERPB__REQUEST__OP_TXN;
			req.txn = &txn;
		}
		const char *op = n > 1 ? "txn" : b->ents[0]->present ? "put" : "delete";
		rv = propose(gs, &req, op, b->ents[0], n, &index);
		free(keys);
	} else {
		log_failed("write", b->ents[0], n, "out of memory");
		gs->dirty = true;
	}
	for (size_t i = 0; i < n; i++) {
		if (rv == 0)
			b->ents[i]->pending = index;
		else
			ent_clear(b->ents[i]); /* not known any more: the next sweep reads it */
	}
	return rv;
}

/* Room for one more write in b: flushes a full batch, and refuses (the view marked dirty)
 * when no proposal may start. */
static bool batch_room(struct gossip_store *gs, struct gs_batch *b)
{
	if (b->n == GSTORE_BATCH)
		(void)flush(gs, b);
	if (b->n == 0 && !room(gs)) {
		gs->dirty = true;
		return false;
	}
	return true;
}

/* ---- reconciling --------------------------------------------------------- */

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The key of member g says what the view says, or a put joins b. A key newer than the view
 * (gstore_json_newer: an earlier leader's news that has not reached this one's gossip yet) is
 * left alone unless `force` (the periodic sweep): a restarted member too, until it has refuted
 * the news of its death with a higher incarnation. Returns its entry (NULL when out of
 * memory). */
static struct gs_ent *write_member(struct gossip_store *gs, struct gs_batch *b,
				   const struct srv_gossip *sg, const struct gossip_member *g,
				   bool force)
{
	char buf[GSTORE_JSON_MAX];
	size_t name_len = strnlen(g->name, GOSSIP_MAX_NAME + 1);
	if (name_len == 0 || name_len > GOSSIP_MAX_NAME)
		return NULL;
	struct gs_ent *e = ent_get(gs, g->name, name_len);
	if (e == NULL) {
		gs->dirty = true;
		return NULL;
	}
	/* a leader leaving the pool does not write its own departure */
	if (g->self && (g->state == GOSSIP_LEFT || g->state == GOSSIP_DEAD))
		return e;
	size_t body = gstore_json_body(g, buf, sizeof buf);
	if (body == 0)
		return e; /* cannot be: the bound holds the largest member */
	if (e->present && (gstore_json_same(e->value, e->value_len, buf, body) ||
			   (!force && gstore_json_newer(e->value, e->value_len, g))))
		return e;
	if (!batch_room(gs, b))
		return e;
	uint64_t since = gstore_since_wall(wall_ms(), srv_gossip_now(sg), g->since_ms);
	size_t n = gstore_json_finish(buf, sizeof buf, body, since);
	if (n == 0)
		return e;
	if (ent_set(e, buf, n) != 0) {
		ent_clear(e); /* not known any more: the next sweep reads it */
		gs->dirty = true;
		return e;
	}
	b->ents[b->n++] = e;
	b->puts++;
	return e;
}

/* The key of e is absent, or a delete joins b. */
static void write_absent(struct gossip_store *gs, struct gs_batch *b, struct gs_ent *e)
{
	if (!e->present || !batch_room(gs, b))
		return;
	ent_clear(e);
	b->ents[b->n++] = e;
	b->deletes++;
}

/* The cache takes the store's keys, except those with a proposal not yet applied. */
static int read_store(struct gossip_store *gs)
{
	struct srv_member *m = gs->m;
	static const char prefix[] = GOSSIP_STORE_PREFIX;
	size_t plen = sizeof prefix - 1;
	uint8_t end[sizeof prefix - 1];
	memcpy(end, prefix, plen);
	end[plen - 1]++; /* "/cairn/members0": the end of the prefix */
	uint8_t *from = NULL;
	size_t from_len = 0;
	int rv = 0;

	for (size_t i = 0; i < gs->n_buckets; i++)
		for (struct gs_ent *e = gs->buckets[i]; e != NULL; e = e->next)
			e->in_store = e->in_view = false;
	for (bool more = true; more;) {
		struct kv_range_req q;
		struct kv_range_resp r;
		memset(&q, 0, sizeof q);
		q.key = from != NULL ? from : (const uint8_t *)prefix;
		q.key_len = from != NULL ? from_len : plen;
		q.range_end = end;
		q.range_end_len = plen;
		q.limit = GSTORE_PAGE;
		int err = kv_range(m->kv, &q, &r);
		if (err != 0) {
			struct srv_log_line l;
			srv_log_begin(&l, SRV_LOG_WARN, "gossip-store-read-failed");
			srv_log_str(&l, "error", kv_strerror(err));
			srv_log_end(&l);
			rv = -1;
			break;
		}
		for (size_t k = 0; k < r.n_kvs && rv == 0; k++) {
			const struct kv_kv *kv = &r.kvs[k];
			struct gs_ent *e = ent_get(gs, kv->key + plen, kv->key_len - plen);
			if (e == NULL) {
				rv = -1;
				break;
			}
			e->in_store = true;
			if (e->pending > m->applied)
				continue; /* ours is newer */
			if (ent_set(e, kv->value, kv->value_len) != 0)
				rv = -1;
		}
		more = rv == 0 && r.more && r.n_kvs > 0;
		if (more) {
			/* the next page starts just after the last key */
			const struct kv_kv *last = &r.kvs[r.n_kvs - 1];
			uint8_t *next = realloc(from, last->key_len + 1);
			if (next == NULL) {
				rv = -1;
				more = false;
			} else {
				from = next;
				memcpy(from, last->key, last->key_len);
				from[last->key_len] = 0;
				from_len = last->key_len + 1;
			}
		}
		kv_range_resp_free(&r);
	}
	free(from);
	if (rv != 0)
		return rv;
	for (size_t i = 0; i < gs->n_buckets; i++)
		for (struct gs_ent *e = gs->buckets[i]; e != NULL; e = e->next)
			if (!e->in_store && e->pending <= m->applied)
				ent_clear(e);
	return 0;
}

/* Entries of absent keys with nothing pending are dropped. */
static void prune(struct gossip_store *gs)
{
	for (size_t i = 0; i < gs->n_buckets; i++) {
		for (struct gs_ent **p = &gs->buckets[i]; *p != NULL;) {
			struct gs_ent *e = *p;
			if (!e->present && e->pending <= gs->m->applied) {
				*p = e->next;
				free(e->value);
				free(e);
				gs->n_ents--;
			} else {
				p = &e->next;
			}
		}
	}
}

static void sweep(struct gossip_store *gs, bool periodic)
{
	struct srv_member *m = gs->m;
	const struct srv_gossip *sg = m->gossip;
	const struct gossip *core = srv_gossip_core(sg);
	struct gs_batch b = { 0 };
	bool first = !gs->built;

	gs->swept_at = now_ms(m);
	gs->dirty = false;
	if (read_store(gs) != 0) {
		gs->dirty = true;
		return;
	}
	gs->built = true;
	uint32_t n = gossip_member_count(core);
	for (uint32_t i = 0; i < n; i++) {
		struct gossip_member g;
		if (!gossip_member_at(core, i, &g))
			break;
		struct gs_ent *e = write_member(gs, &b, sg, &g, periodic);
		if (e != NULL)
			e->in_view = true;
	}
	bool settled = srv_gossip_settled(sg);
	if (settled) {
		for (size_t i = 0; i < gs->n_buckets; i++)
			for (struct gs_ent *e = gs->buckets[i]; e != NULL; e = e->next)
				if (e->present && !e->in_view)
					write_absent(gs, &b, e);
	}
	(void)flush(gs, &b);
	prune(gs);
	struct srv_log_line l;
	srv_log_begin(&l, first ? SRV_LOG_INFO : SRV_LOG_DEBUG, "gossip-store-swept");
	srv_log_u64(&l, "members", n);
	srv_log_u64(&l, "keys", gs->n_ents);
	srv_log_u64(&l, "puts", b.puts);
	srv_log_u64(&l, "deletes", b.deletes);
	srv_log_bool(&l, "settled", settled);
	srv_log_bool(&l, "dirty", gs->dirty);
	srv_log_end(&l);
}

/* ---- the member's hooks --------------------------------------------------- */

/* The member's reconciler, created at its first tick as leader unless
 * --gossip-store-members=false (tests that compare revisions with etcd's, where every key
 * counts). */
static struct gossip_store *store_of(struct srv_member *m, bool create)
{
	if (m->gstore == NULL && create && m->gossip_store_members &&
	    (m->gstore = calloc(1, sizeof *m->gstore)) != NULL)
		m->gstore->m = m;
	return m->gstore;
}

void gossip_store_event(struct srv_member *m, const struct gossip_event *ev)
{
	struct gossip_store *gs = store_of(m, false);
	if (gs == NULL || !gs->leading || m->gossip == NULL || m->stopping)
		return;
	if (!gs->built || !leads(gs)) {
		gs->dirty = true; /* the first sweep, or the next leader's, writes it */
		return;
	}
	drain(gs);
	struct gs_batch b = { 0 }; /* one change, one Put or DeleteRange, at once */
	if (ev->type == GOSSIP_EV_REMOVE) {
		size_t n = strnlen(ev->member.name, GOSSIP_MAX_NAME + 1);
		struct gs_ent *e = ent_find(gs, ev->member.name, n);
		if (e != NULL)
			write_absent(gs, &b, e);
	} else {
		(void)write_member(gs, &b, m->gossip, &ev->member, false);
	}
	(void)flush(gs, &b);
}

void gossip_store_tick(struct srv_member *m)
{
	if (m->gossip == NULL || m->stopping)
		return;
	struct raft_status rs;
	raft_status(m->raft, &rs);
	struct gossip_store *gs = store_of(m, rs.state == RAFT_LEADER);
	if (gs == NULL)
		return;
	if (rs.state != RAFT_LEADER) {
		if (gs->leading)
			reset(gs);
		return;
	}
	if (!gs->leading || gs->term != rs.term) {
		reset(gs);
		gs->leading = true;
		gs->term = rs.term;
		gs->start_index = rs.last_index;
	}
	drain(gs);
	if (m->installing > 0)
		return;
	uint64_t now = now_ms(m);
	if (!gs->built) {
		/* the store must hold what earlier terms committed before it is compared */
		if (m->applied >= gs->start_index) {
			sweep(gs, false);
			gs->full_at = now;
		}
	} else if (now - gs->full_at >= GSTORE_SWEEP_MS) {
		gs->full_at = now;
		sweep(gs, true);
	} else if (gs->dirty && now - gs->swept_at >= GSTORE_DIRTY_MS &&
		   gs->n_inflight <= GSTORE_MAX_INFLIGHT / 2) {
		sweep(gs, false);
	}
}

void gossip_store_free(struct srv_member *m)
{
	struct gossip_store *gs = m->gstore;
	m->gstore = NULL;
	if (gs != NULL) {
		reset(gs);
		free(gs);
	}
}
