/* lease.c: etcd's Lease service on a member: LeaseGrant, LeaseRevoke,
 * LeaseKeepAlive, LeaseTimeToLive, LeaseLeases; and the leader's lease
 * table, which alone keeps deadlines and expires leases.
 *
 * Grant and revoke go through Raft (Requests LeaseGrant, LeaseRevoke,
 * applied in apply.c). Deadlines are in the leader's memory only: a renewal
 * (KeepAlive) sets deadline = now + TTL there without a Raft write; a
 * follower forwards renewals and TimeToLive to the leader over the peer
 * transport (ASK and ANSWER frames, lease.h) and answers with its reply. The
 * leader proposes LeaseRevoke (Request.member_id 0) for each lease past its
 * deadline, at most LEASE_REVOKE_RATE a second, earliest first, again after
 * LEASE_REVOKE_RETRY_MS if the revocation did not get applied.
 *
 * The table follows the store: on promotion it is built from the store's
 * lease list, and at the first heartbeat after a batch that granted,
 * revoked or checkpointed a lease (or a snapshot install) it is brought in
 * line with that list again (new grants in, revoked leases out); other
 * writes never make it read the list.
 * A renewal of a lease granted so recently that the table has not seen it
 * yet looks the lease up in the store.
 *
 * CHECKPOINTS. On promotion a new leader gives each lease the deadline
 * now + cp, where cp is the lease's last checkpointed remaining TTL, or its
 * TTL if it was never checkpointed. Let x be the deadline the old leader
 * held when it stopped at time d, and p the promotion. The new leader's
 * deadline differs from x + (p - d) (the old deadline moved by the time
 * without leader) by
 *
 *     e = cp - (x - d)
 *
 * which the old leader can compute at any time t as e(t) = t + cp - x(t).
 * RULE: every heartbeat, the leader proposes a checkpoint remaining =
 * round((x - t) / 1 s) (at least 1) for each lease whose |e(t)| exceeds
 * theta = election timeout + 500 ms; all of a heartbeat's checkpoints go in
 * one LeaseCheckpoint Request, at most LEASE_CP_RATE a second (the scan
 * resumes where it stopped, so every lease gets its turn).
 * BOUND: as long as that rate keeps up, |e| <= theta + one heartbeat + the
 * time to commit a checkpoint: a new leader extends or cuts a lease by at
 * most about an election timeout plus half a second (the resolution of
 * TTLs in seconds), beyond the time the cluster spent without a leader
 * (which extends every lease, as in etcd).
 * COST: e grows by one second per second between renewals and falls back at
 * each renewal to cp - TTL. A lease renewed at least every theta seconds
 * (10,000 leases renewed every second, say) settles after at most one
 * checkpoint and needs none afterwards; a lease not renewed (or renewed
 * less often than theta) needs one checkpoint per theta, about 20 bytes of
 * Raft log each. The pass over the table is O(leases) per heartbeat, as is
 * the comparison with the store's list (10,000 leases: about 0.15 ms for
 * both, plus reading the list from LMDB).
 *
 * A renewal is not replicated until the heartbeat's checkpoints are: one
 * less than a heartbeat before the leader stops may be lost with it, and the
 * new leader then gives that lease the time left of its last checkpoint. */
#include "lease.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "member_int.h"

#define LEASE_REVOKE_RATE 1000     /* revocations proposed per second (etcd's) */
#define LEASE_REVOKE_RETRY_MS 3000 /* a revocation not applied is proposed again (etcd's) */
#define LEASE_CP_RATE 20000        /* checkpoints proposed per second */
#define LEASE_MAX_STREAMS 16384    /* KeepAlive streams at once */
#define LEASE_MAX_HELD 256         /* followers' questions held until the leader applies */
#define LEASE_MAX_ASKS 4096        /* questions to the leader in flight (a power of two) */
#define LEASE_COUNT_AGE_MS 1000    /* a follower recounts the store's leases this often */

_Static_assert((LEASE_MAX_ASKS & (LEASE_MAX_ASKS - 1)) == 0, "asks: a power of two");
_Static_assert(LEASE_MAX < UINT32_MAX / 4, "slots hold an index");

/* ---- the table -------------------------------------------------------- */

static uint64_t id_hash(int64_t id)
{
	return srv_mix64((uint64_t)id);
}

void lease_tab_init(struct lease_tab *t, uint64_t theta_ms)
{
	memset(t, 0, sizeof *t);
	t->theta_ms = theta_ms;
}

void lease_tab_free(struct lease_tab *t)
{
	free(t->v);
	free(t->slots);
	lease_tab_init(t, t->theta_ms);
}

void lease_tab_clear(struct lease_tab *t)
{
	t->n = 0;
	t->cursor = 0;
	if (t->slots != NULL)
		memset(t->slots, 0, t->n_slots * sizeof *t->slots);
}

/* The slot holding id, or the empty slot where it would go. */
static size_t slot_of(const struct lease_tab *t, int64_t id)
{
	size_t mask = t->n_slots - 1;
	size_t i = (size_t)id_hash(id) & mask;
	while (t->slots[i] != 0 && t->v[t->slots[i] - 1].id != id)
		i = (i + 1) & mask;
	return i;
}

struct lease_ent *lease_tab_find(struct lease_tab *t, int64_t id)
{
	if (t->n_slots == 0)
		return NULL;
	size_t i = slot_of(t, id);
	return t->slots[i] != 0 ? &t->v[t->slots[i] - 1] : NULL;
}

static int rehash(struct lease_tab *t, size_t n_slots)
{
	uint32_t *s = calloc(n_slots, sizeof *s);
	if (s == NULL)
		return -1;
	free(t->slots);
	t->slots = s;
	t->n_slots = n_slots;
	for (size_t k = 0; k < t->n; k++)
		t->slots[slot_of(t, t->v[k].id)] = (uint32_t)(k + 1);
	return 0;
}

int lease_tab_add(struct lease_tab *t, int64_t id, int64_t ttl, int64_t cp, uint64_t now)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct lease_ent *v = realloc(t->v, cap * sizeof *v);
		if (v == NULL)
			return -1;
		t->v = v;
		t->cap = cap;
	}
	if (2 * (t->n + 1) > t->n_slots && rehash(t, t->n_slots ? t->n_slots * 2 : 128) != 0)
		return -1;
	if (cp <= 0 || cp > ttl)
		cp = ttl;
	struct lease_ent *e = &t->v[t->n];
	memset(e, 0, sizeof *e);
	e->id = id;
	e->ttl = ttl;
	e->cp = cp;
	e->expiry = now + (uint64_t)(cp > 0 ? cp : 0) * 1000u;
	e->seen = true;
	t->slots[slot_of(t, id)] = (uint32_t)(++t->n);
	return 0;
}

void lease_tab_remove(struct lease_tab *t, int64_t id)
{
	if (t->n_slots == 0)
		return;
	size_t mask = t->n_slots - 1;
	size_t i = slot_of(t, id);
	if (t->slots[i] == 0)
		return;
	size_t k = t->slots[i] - 1;
	/* backward-shift deletion keeps every probe chain whole */
	t->slots[i] = 0;
	for (size_t j = (i + 1) & mask; t->slots[j] != 0; j = (j + 1) & mask) {
		size_t home = (size_t)id_hash(t->v[t->slots[j] - 1].id) & mask;
		/* move j's entry to i unless its home lies cyclically in (i, j] */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			t->slots[i] = t->slots[j];
			t->slots[j] = 0;
			i = j;
		}
	}
	/* the last entry fills the hole in v */
	size_t last = t->n - 1;
	if (k != last) {
		t->v[k] = t->v[last];
		t->slots[slot_of(t, t->v[k].id)] = (uint32_t)(k + 1);
	}
	t->n--;
	if (t->cursor > t->n)
		t->cursor = 0;
}

int lease_tab_sync(struct lease_tab *t, const struct kv_lease *list, size_t n, uint64_t now)
{
	int rv = 0;
	for (size_t k = 0; k < t->n; k++)
		t->v[k].seen = false;
	for (size_t i = 0; i < n; i++) {
		struct lease_ent *e = lease_tab_find(t, list[i].id);
		if (e != NULL)
			e->seen = true;
		else if (lease_tab_add(t, list[i].id, list[i].ttl, list[i].remaining, now) != 0)
			rv = -1;
	}
	for (size_t k = 0; k < t->n;) {
		if (!t->v[k].seen)
			lease_tab_remove(t, t->v[k].id); /* k now holds another entry */
		else
			k++;
	}
	return rv;
}

int64_t lease_tab_renew(struct lease_tab *t, int64_t id, uint64_t now)
{
	struct lease_ent *e = lease_tab_find(t, id);
	if (e == NULL)
		return -1;
	if (e->expiry <= now)
		return 0; /* expired: its revocation is on its way */
	e->expiry = now + (uint64_t)e->ttl * 1000u;
	return e->ttl;
}

int64_t lease_tab_remaining(struct lease_tab *t, int64_t id, uint64_t now)
{
	struct lease_ent *e = lease_tab_find(t, id);
	if (e == NULL)
		return -1;
	return e->expiry > now ? (int64_t)((e->expiry - now) / 1000u) : 0;
}

/* A max-heap of up to max entries by deadline: the max earliest. */
static bool later(const struct lease_tab *t, int64_t a, int64_t b)
{
	const struct lease_ent *x = lease_tab_find((struct lease_tab *)t, a);
	const struct lease_ent *y = lease_tab_find((struct lease_tab *)t, b);
	return x->expiry > y->expiry || (x->expiry == y->expiry && x->id > y->id);
}

static void heap_down(const struct lease_tab *t, int64_t *h, size_t n, size_t i)
{
	for (size_t c; (c = 2 * i + 1) < n; i = c) {
		if (c + 1 < n && later(t, h[c + 1], h[c]))
			c++;
		if (!later(t, h[c], h[i]))
			return;
		int64_t x = h[i];
		h[i] = h[c];
		h[c] = x;
	}
}

static void heap_up(const struct lease_tab *t, int64_t *h, size_t i)
{
	while (i > 0 && later(t, h[i], h[(i - 1) / 2])) {
		int64_t x = h[i];
		h[i] = h[(i - 1) / 2];
		h[(i - 1) / 2] = x;
		i = (i - 1) / 2;
	}
}

size_t lease_tab_expired(struct lease_tab *t, uint64_t now, uint64_t retry_ms, size_t max,
			 int64_t *out)
{
	size_t n = 0;
	if (max == 0)
		return 0;
	for (size_t k = 0; k < t->n; k++) {
		const struct lease_ent *e = &t->v[k];
		if (e->expiry > now || (e->revoke_at != 0 && now - e->revoke_at < retry_ms))
			continue;
		if (n < max) {
			out[n++] = e->id;
			heap_up(t, out, n - 1);
		} else if (later(t, out[0], e->id)) {
			out[0] = e->id;
			heap_down(t, out, n, 0);
		}
	}
	/* heap sort: earliest first */
	for (size_t end = n; end > 1; end--) {
		int64_t x = out[0];
		out[0] = out[end - 1];
		out[end - 1] = x;
		heap_down(t, out, end - 1, 0);
	}
	for (size_t i = 0; i < n; i++)
		lease_tab_find(t, out[i])->revoke_at = now ? now : 1;
	return n;
}

size_t lease_tab_checkpoints(struct lease_tab *t, uint64_t now, size_t max, struct lease_cp *out)
{
	size_t n = 0;
	for (size_t seen = 0; seen < t->n && n < max; seen++) {
		if (t->cursor >= t->n)
			t->cursor = 0;
		const struct lease_ent *e = &t->v[t->cursor++];
		if (e->expiry <= now)
			continue; /* being revoked */
		/* e(t) = t + cp - x, in ms */
		int64_t err = (int64_t)now + e->cp * 1000 - (int64_t)e->expiry;
		if (err <= (int64_t)t->theta_ms && err >= -(int64_t)t->theta_ms)
			continue;
		int64_t rem = (int64_t)((e->expiry - now + 500u) / 1000u);
		out[n].id = e->id;
		out[n++].remaining = rem > 0 ? rem : 1;
	}
	return n;
}

void lease_tab_checkpointed(struct lease_tab *t, const struct lease_cp *cps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct lease_ent *e = lease_tab_find(t, cps[i].id);
		if (e != NULL)
			e->cp = cps[i].remaining;
	}
}

/* ---- the wire ------------------------------------------------------------- */

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

void lease_ask_encode(const struct lease_ask_msg *a, uint8_t out[LEASE_ASK_SIZE])
{
	out[0] = a->kind;
	put64(out + 1, a->seq);
	put64(out + 9, (uint64_t)a->id);
}

int lease_ask_decode(const uint8_t *buf, size_t len, struct lease_ask_msg *out)
{
	if (len != LEASE_ASK_SIZE || (buf[0] != LEASE_ASK_RENEW && buf[0] != LEASE_ASK_TTL))
		return -1;
	out->kind = buf[0];
	out->seq = get64(buf + 1);
	out->id = (int64_t)get64(buf + 9);
	return 0;
}

void lease_answer_encode(const struct lease_answer_msg *a, uint8_t out[LEASE_ANSWER_SIZE])
{
	out[0] = a->kind;
	put64(out + 1, a->seq);
	out[9] = a->status;
	put64(out + 10, (uint64_t)a->ttl);
	put64(out + 18, (uint64_t)a->granted);
}

int lease_answer_decode(const uint8_t *buf, size_t len, struct lease_answer_msg *out)
{
	if (len != LEASE_ANSWER_SIZE || (buf[0] != LEASE_ASK_RENEW && buf[0] != LEASE_ASK_TTL) ||
	    buf[9] > LEASE_ANS_NOT_LEADER)
		return -1;
	out->kind = buf[0];
	out->seq = get64(buf + 1);
	out->status = buf[9];
	out->ttl = (int64_t)get64(buf + 10);
	out->granted = (int64_t)get64(buf + 18);
	return 0;
}

/* ---- the service ------------------------------------------------------------ */

struct lease_srv;

/* One LeaseKeepAlive stream. One renewal at a time: the stream is paused
 * while its renewal waits for the leader or for room to send. */
struct lease_ka {
	struct lease_srv *ls;
	struct lease_ka *prev, *next;
	struct net_grpc_call *call;
	uint64_t ask; /* seq of the question in flight, 0: none */
	bool unsent;  /* a reply that met NET_EAGAIN, sent again on_writable */
	int64_t unsent_id, unsent_ttl;
	bool half_closed; /* finish once nothing is in flight */
	bool paused;
};

/* A question to the leader in flight, for a stream or a TimeToLive call. */
struct lease_ask {
	uint64_t seq; /* 0: free */
	uint8_t kind;
	uint64_t to;
	uint64_t deadline;
	int64_t id;
	bool keys;
	struct lease_ka *ka;
	struct net_grpc_call *call;
	struct lease_srv *ls;
};

struct lease_srv {
	struct srv_member *m;
	struct lease_tab tab;
	bool leading, built;
	bool stale; /* the store's lease table changed since the last sync */
	uint64_t rng;
	int64_t min_ttl;
	struct lease_ask asks[LEASE_MAX_ASKS];
	size_t n_asks;
	uint64_t next_seq;
	struct lease_ka *streams;
	size_t n_streams;
	size_t count; /* leases in the store, as last counted (followers) */
	uint64_t count_at;
	bool count_known;
	/* A follower's question about a lease this leader does not know while it still has
	 * committed entries to apply: a follower can apply a grant (and answer the client) before
	 * the leader has, so the answer waits until the leader has applied up to `index`. */
	struct lease_held {
		struct net_transport *t;
		uint64_t from;
		uint64_t index;
		struct lease_ask_msg q;
	} held[LEASE_MAX_HELD];
	size_t n_held;
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12; /* xorshift64* */
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

static bool is_leader(const struct srv_member *m)
{
	return m->leader == m->id && m->leader != 0;
}

static void header(struct srv_member *m, Etcdserverpb__ResponseHeader *h)
{
	member_header_init(m, h, m->revision);
}

/* The table brought in line with the store (leader only). */
static void sync_table(struct lease_srv *ls, bool full)
{
	struct srv_member *m = ls->m;
	struct kv_lease_list l;
	if (m->installing > 0 || (!full && ls->built && !ls->stale))
		return;
	if (kv_lease_list(m->kv, &l) != 0)
		return; /* tried again next heartbeat */
	uint64_t now = now_ms(m);
	if (!ls->built)
		lease_tab_clear(&ls->tab);
	if (lease_tab_sync(&ls->tab, l.leases, l.n, now) == 0) {
		if (!ls->built) {
			struct srv_log_line ll;
			srv_log_begin(&ll, SRV_LOG_INFO, "leases-promoted");
			srv_log_u64(&ll, "leases", l.n);
			srv_log_end(&ll);
		}
		ls->built = true;
		ls->stale = false;
	}
	ls->count = l.n;
	ls->count_at = now;
	ls->count_known = true;
	kv_lease_list_free(&l);
}

/* Leader: lease id in the table, or NULL if it does not exist. */
static struct lease_ent *leader_lookup(struct lease_srv *ls, int64_t id)
{
	struct srv_member *m = ls->m;
	if (!ls->built)
		sync_table(ls, true);
	struct lease_ent *e = lease_tab_find(&ls->tab, id);
	if (e != NULL && ls->stale && m->installing == 0) {
		/* revoked since the table last followed the store? (one read) */
		struct kv_lease_info info;
		int err = kv_lease_time_to_live(m->kv, id, false, &info);
		if (err == 0)
			kv_lease_info_free(&info);
		else if (err == KV_ELEASENOTFOUND)
			lease_tab_remove(&ls->tab, id);
		return err == KV_ELEASENOTFOUND ? NULL : e;
	}
	if (e == NULL && m->installing == 0) {
		/* granted so recently that the table has not seen it yet? */
		struct kv_lease_info info;
		if (kv_lease_time_to_live(m->kv, id, false, &info) == 0) {
			if (lease_tab_add(&ls->tab, id, info.lease.ttl, info.lease.remaining,
					  now_ms(m)) == 0)
				e = lease_tab_find(&ls->tab, id);
			kv_lease_info_free(&info);
		}
	}
	return e;
}

/* Leader: the renewal of lease id (-1 unknown, 0 expired, else the TTL). */
static int64_t leader_renew(struct lease_srv *ls, int64_t id)
{
	if (leader_lookup(ls, id) == NULL)
		return -1;
	return lease_tab_renew(&ls->tab, id, now_ms(ls->m));
}

/* Leader: seconds left and the granted TTL, -1 if unknown. */
static int64_t leader_ttl(struct lease_srv *ls, int64_t id, int64_t *granted)
{
	struct lease_ent *e = leader_lookup(ls, id);
	if (e == NULL)
		return -1;
	*granted = e->ttl;
	return lease_tab_remaining(&ls->tab, id, now_ms(ls->m));
}

/* ---- LeaseGrant, LeaseRevoke ---- */

static size_t lease_count(struct lease_srv *ls)
{
	struct srv_member *m = ls->m;
	if (ls->leading && ls->built)
		return ls->tab.n;
	uint64_t now = now_ms(m);
	if (m->installing == 0 && (!ls->count_known || now - ls->count_at >= LEASE_COUNT_AGE_MS)) {
		struct kv_lease_list l;
		if (kv_lease_list(m->kv, &l) == 0) {
			ls->count = l.n;
			ls->count_at = now;
			ls->count_known = true;
			kv_lease_list_free(&l);
		}
	}
	return ls->count;
}

static void on_msg_grant(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct lease_srv *ls = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__LeaseGrantRequest *q =
		etcdserverpb__lease_grant_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	Etcdserverpb__LeaseGrantRequest g = *q;
	etcdserverpb__lease_grant_request__free_unpacked(q, NULL);
	if (g.ttl > LEASE_MAX_TTL) {
		member_finish_error(call, 11 /* OUT_OF_RANGE */, "etcdserver: too large lease TTL");
		return;
	}
	if (g.ttl < ls->min_ttl)
		g.ttl = ls->min_ttl; /* etcd's lessor raises a short TTL to its minimum */
	if (lease_count(ls) >= LEASE_MAX) {
		member_finish_error(call, ST_RESOURCE_EXHAUSTED, "etcdserver: too many leases");
		return;
	}
	/* a server-chosen id: random, positive, never 0 (etcd's are positive) */
	while (g.id == 0)
		g.id = (int64_t)(rng_next(&ls->rng) & (uint64_t)INT64_MAX);
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_LEASE_GRANT;
	req.lease_grant = &g;
	member_propose_call(ls->m, call, &req);
}

static void on_msg_revoke(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct lease_srv *ls = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__LeaseRevokeRequest *q =
		etcdserverpb__lease_revoke_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_LEASE_REVOKE;
	req.lease_revoke = q;
	member_propose_call(ls->m, call, &req);
	etcdserverpb__lease_revoke_request__free_unpacked(q, NULL);
}

/* ---- questions to the leader ---- */

static struct lease_ask *ask_find(struct lease_srv *ls, uint64_t seq)
{
	struct lease_ask *a = &ls->asks[seq & (LEASE_MAX_ASKS - 1)];
	return seq != 0 && a->seq == seq ? a : NULL;
}

static void ask_release(struct lease_srv *ls, struct lease_ask *a)
{
	memset(a, 0, sizeof *a);
	ls->n_asks--;
}

/* Sends a question about lease id to the leader. The slot, or NULL with
 * *code and *msg set. */
static struct lease_ask *ask_leader(struct lease_srv *ls, uint8_t kind, int64_t id, int *code,
				    const char **msg)
{
	struct srv_member *m = ls->m;
	*code = ST_UNAVAILABLE;
	*msg = "etcdserver: no leader";
	if (m->leader == 0 || m->leader == m->id)
		return NULL;
	uint64_t seq = ++ls->next_seq;
	struct lease_ask *a = &ls->asks[seq & (LEASE_MAX_ASKS - 1)];
	if (a->seq != 0) {
		*code = ST_RESOURCE_EXHAUSTED;
		*msg = "etcdserver: too many requests";
		return NULL;
	}
	uint8_t buf[LEASE_ASK_SIZE];
	struct lease_ask_msg q = { .kind = kind, .seq = seq, .id = id };
	lease_ask_encode(&q, buf);
	if (net_transport_ask(m->transport, m->leader, buf, sizeof buf) != 0) {
		*msg = "etcdserver: request timed out";
		return NULL;
	}
	memset(a, 0, sizeof *a);
	a->seq = seq;
	a->kind = kind;
	a->to = m->leader;
	a->id = id;
	a->ls = ls;
	/* a renewal lost on the way is cut short well before a client's own
	 * deadline: the client retries on UNAVAILABLE */
	a->deadline = now_ms(m) + 2 * (uint64_t)m->election_ms;
	ls->n_asks++;
	return a;
}

/* ---- LeaseKeepAlive ---- */

static void ka_free(struct lease_ka *ka)
{
	struct lease_srv *ls = ka->ls;
	struct lease_ask *a = ask_find(ls, ka->ask);
	if (a != NULL)
		a->ka = NULL; /* the answer, if it comes, is dropped */
	if (ka->prev != NULL)
		ka->prev->next = ka->next;
	else
		ls->streams = ka->next;
	if (ka->next != NULL)
		ka->next->prev = ka->prev;
	ls->n_streams--;
	free(ka);
}

static void ka_finish(struct lease_ka *ka, int code, const char *msg)
{
	struct net_grpc_call *call = ka->call;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	ka_free(ka);
	net_grpc_call_finish(call, code, msg);
}

static void ka_pause(struct lease_ka *ka, bool paused)
{
	if (ka->paused != paused) {
		ka->paused = paused;
		net_grpc_call_pause(ka->call, paused);
	}
}

/* Sends {ID, TTL}; false when the stream ended. */
static bool ka_reply(struct lease_ka *ka, int64_t id, int64_t ttl)
{
	struct srv_member *m = ka->ls->m;
	Etcdserverpb__LeaseKeepAliveResponse r = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	uint8_t buf[128];
	header(m, &h);
	r.header = &h;
	r.id = id;
	r.ttl = ttl > 0 ? ttl : 0;
	size_t n = etcdserverpb__lease_keep_alive_response__get_packed_size(&r);
	if (n > sizeof buf) {
		ka_finish(ka, ST_INTERNAL, "response too large");
		return false;
	}
	etcdserverpb__lease_keep_alive_response__pack(&r, buf);
	int err = net_grpc_call_send(ka->call, buf, n);
	if (err == NET_EAGAIN) {
		ka->unsent = true;
		ka->unsent_id = id;
		ka->unsent_ttl = ttl;
		ka_pause(ka, true);
		return true;
	}
	if (err != 0) {
		ka_finish(ka, ST_UNAVAILABLE, "send failed");
		return false;
	}
	ka->unsent = false;
	if (ka->half_closed) {
		ka_finish(ka, ST_OK, "");
		return false;
	}
	ka_pause(ka, false);
	return true;
}

static void ka_on_message(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct lease_ka *ka = user;
	struct lease_srv *ls = ka->ls;
	struct srv_member *m = ls->m;
	(void)call;
	if (ka->ask != 0 || ka->unsent) {
		/* paused, so this is not expected: one renewal at a time */
		ka_finish(ka, ST_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
		return;
	}
	Etcdserverpb__LeaseKeepAliveRequest *q =
		etcdserverpb__lease_keep_alive_request__unpack(NULL, len, data);
	if (q == NULL) {
		ka_finish(ka, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	int64_t id = q->id;
	etcdserverpb__lease_keep_alive_request__free_unpacked(q, NULL);
	if (is_leader(m) && ls->leading) {
		ka_reply(ka, id, leader_renew(ls, id));
		return;
	}
	int code;
	const char *msg;
	struct lease_ask *a = ask_leader(ls, LEASE_ASK_RENEW, id, &code, &msg);
	if (a == NULL) {
		ka_finish(ka, code, msg);
		return;
	}
	a->ka = ka;
	ka->ask = a->seq;
	ka_pause(ka, true);
}

static void ka_on_half_close(struct net_grpc_call *call, void *user)
{
	struct lease_ka *ka = user;
	(void)call;
	if (ka->ask != 0 || ka->unsent)
		ka->half_closed = true;
	else
		ka_finish(ka, ST_OK, "");
}

static void ka_on_cancel(struct net_grpc_call *call, void *user)
{
	(void)call;
	ka_free(user);
}

static void ka_on_writable(struct net_grpc_call *call, void *user)
{
	struct lease_ka *ka = user;
	(void)call;
	if (ka->unsent)
		(void)ka_reply(ka, ka->unsent_id, ka->unsent_ttl);
}

static void h_keepalive(struct net_grpc_call *call, void *data)
{
	static const struct net_grpc_call_callbacks cbs = { .on_message = ka_on_message,
							    .on_half_close = ka_on_half_close,
							    .on_cancel = ka_on_cancel,
							    .on_writable = ka_on_writable };
	struct srv_member *m = data;
	struct lease_srv *ls = m->lease;
	if (ls->n_streams >= LEASE_MAX_STREAMS) {
		member_finish_error(call, ST_RESOURCE_EXHAUSTED,
				    "etcdserver: too many keepalive streams");
		return;
	}
	struct lease_ka *ka = calloc(1, sizeof *ka);
	if (ka == NULL) {
		member_finish_error(call, ST_INTERNAL, "out of memory");
		return;
	}
	ka->ls = ls;
	ka->call = call;
	ka->next = ls->streams;
	if (ls->streams != NULL)
		ls->streams->prev = ka;
	ls->streams = ka;
	ls->n_streams++;
	net_grpc_call_set_callbacks(call, &cbs, ka);
}

/* ---- LeaseTimeToLive, LeaseLeases ---- */

/* Answers a TimeToLive: ttl -1 when the lease does not exist (etcd); the
 * granted TTL and the keys from this member's store. */
static void ttl_answer(struct srv_member *m, struct net_grpc_call *call, int64_t id, bool keys,
		       int64_t ttl, int64_t granted)
{
	Etcdserverpb__LeaseTimeToLiveResponse r = ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	struct kv_lease_info info = { 0 };
	ProtobufCBinaryData *kd = NULL;
	header(m, &h);
	r.header = &h;
	r.id = id;
	r.ttl = ttl;
	if (ttl >= 0) {
		r.grantedttl = granted;
		if (keys && m->installing == 0 &&
		    kv_lease_time_to_live(m->kv, id, true, &info) == 0 && info.n_keys > 0) {
			kd = calloc(info.n_keys, sizeof *kd);
			if (kd == NULL) {
				kv_lease_info_free(&info);
				member_finish_error(call, ST_INTERNAL, "out of memory");
				return;
			}
			for (size_t i = 0; i < info.n_keys; i++)
				kd[i] = (ProtobufCBinaryData){ info.key_lens[i], info.keys[i] };
			r.n_keys = info.n_keys;
			r.keys = kd;
		}
	}
	member_finish_msg(call, &r.base);
	free(kd);
	kv_lease_info_free(&info);
}

static void ttl_on_cancel(struct net_grpc_call *call, void *user)
{
	struct lease_ask *a = user;
	(void)call;
	a->call = NULL; /* the answer, if it comes, is dropped */
}

static void on_msg_ttl(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	static const struct net_grpc_call_callbacks cbs = { .on_cancel = ttl_on_cancel };
	struct lease_srv *ls = user;
	struct srv_member *m = ls->m;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__LeaseTimeToLiveRequest *q =
		etcdserverpb__lease_time_to_live_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	int64_t id = q->id;
	bool keys = q->keys;
	etcdserverpb__lease_time_to_live_request__free_unpacked(q, NULL);
	if (is_leader(m) && ls->leading) {
		int64_t granted = 0, ttl = leader_ttl(ls, id, &granted);
		ttl_answer(m, call, id, keys, ttl, granted);
		return;
	}
	int code;
	const char *msg;
	struct lease_ask *a = ask_leader(ls, LEASE_ASK_TTL, id, &code, &msg);
	if (a == NULL) {
		member_finish_error(call, code, msg);
		return;
	}
	a->call = call;
	a->keys = keys;
	net_grpc_call_set_callbacks(call, &cbs, a);
}

static void on_msg_leases(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct lease_srv *ls = user;
	struct srv_member *m = ls->m;
	(void)data;
	(void)len;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	struct kv_lease_list l;
	if (m->installing > 0) {
		member_finish_error(call, ST_UNAVAILABLE,
				    "etcdserver: server is installing a snapshot");
		return;
	}
	int err = kv_lease_list(m->kv, &l);
	if (err != 0) {
		member_finish_error(call, ST_INTERNAL, kv_strerror(err));
		return;
	}
	Etcdserverpb__LeaseLeasesResponse r = ETCDSERVERPB__LEASE_LEASES_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	Etcdserverpb__LeaseStatus *st = calloc(l.n ? l.n : 1, sizeof *st);
	Etcdserverpb__LeaseStatus **sp = calloc(l.n ? l.n : 1, sizeof *sp);
	if (st == NULL || sp == NULL) {
		free(st);
		free(sp);
		kv_lease_list_free(&l);
		member_finish_error(call, ST_INTERNAL, "out of memory");
		return;
	}
	for (size_t i = 0; i < l.n; i++) {
		etcdserverpb__lease_status__init(&st[i]);
		st[i].id = l.leases[i].id;
		sp[i] = &st[i];
	}
	header(m, &h);
	r.header = &h;
	r.n_leases = l.n;
	r.leases = sp;
	member_finish_msg(call, &r.base);
	free(st);
	free(sp);
	kv_lease_list_free(&l);
}

#define UNARY_HANDLER(name, fn)                                                         \
	static void name(struct net_grpc_call *call, void *data)                        \
	{                                                                               \
		static const struct net_grpc_call_callbacks cbs = { .on_message = fn }; \
		struct srv_member *m = data;                                            \
		net_grpc_call_set_callbacks(call, &cbs, m->lease);                      \
	}

UNARY_HANDLER(h_grant, on_msg_grant)
UNARY_HANDLER(h_revoke, on_msg_revoke)
UNARY_HANDLER(h_ttl, on_msg_ttl)
UNARY_HANDLER(h_leases, on_msg_leases)

/* ---- the peer side ---- */

static uint64_t ask_answer(struct lease_srv *ls, struct net_transport *t, uint64_t from,
			   const struct lease_ask_msg *q, bool final);

void lease_on_ask(struct net_transport *t, uint64_t from, enum net_channel ch, const uint8_t *buf,
		  size_t len)
{
	struct srv_member *m = net_transport_data(t);
	struct lease_srv *ls = m->lease;
	struct lease_ask_msg q;
	(void)ch;
	if (m->stopping || ls == NULL || lease_ask_decode(buf, len, &q) != 0)
		return;
	uint64_t wait_for = ask_answer(ls, t, from, &q, false);
	if (wait_for == 0)
		return;
	if (ls->n_held < LEASE_MAX_HELD)
		ls->held[ls->n_held++] = (struct lease_held){ t, from, wait_for, q };
	else
		(void)ask_answer(ls, t, from, &q, true); /* no room to hold it: not found, now */
}

/* Answers a follower's question, and returns 0. With `final` false, a lease this leader does not
 * know yet while it has committed entries left to apply is not answered: it returns the commit
 * index, and the caller holds the question until lease_applied() sees it applied. */
static uint64_t ask_answer(struct lease_srv *ls, struct net_transport *t, uint64_t from,
			   const struct lease_ask_msg *q, bool final)
{
	struct srv_member *m = ls->m;
	struct lease_answer_msg a = { .kind = q->kind, .seq = q->seq };
	if (!is_leader(m) || !ls->leading) {
		a.status = LEASE_ANS_NOT_LEADER;
	} else if (q->kind == LEASE_ASK_RENEW) {
		a.ttl = leader_renew(ls, q->id);
		a.status = a.ttl < 0 ? LEASE_ANS_NOT_FOUND : LEASE_ANS_OK;
	} else {
		a.ttl = leader_ttl(ls, q->id, &a.granted);
		a.status = a.ttl < 0 ? LEASE_ANS_NOT_FOUND : LEASE_ANS_OK;
	}
	if (a.status == LEASE_ANS_NOT_FOUND && !final) {
		struct raft_status rs;
		raft_status(m->raft, &rs);
		if (rs.commit > m->applied)
			return rs.commit;
	}
	uint8_t out[LEASE_ANSWER_SIZE];
	lease_answer_encode(&a, out);
	(void)net_transport_answer(t, from, out, sizeof out); /* a lost answer times out there */
	return 0;
}

void lease_applied(struct srv_member *m)
{
	struct lease_srv *ls = m->lease;
	if (ls == NULL || ls->n_held == 0)
		return;
	size_t kept = 0;
	for (size_t i = 0; i < ls->n_held; i++) {
		struct lease_held *h = &ls->held[i];
		if (m->applied >= h->index || m->stopping)
			(void)ask_answer(ls, h->t, h->from, &h->q, true);
		else
			ls->held[kept++] = *h;
	}
	ls->n_held = kept;
}

/* Ends a question with an error for whoever waits. */
static void ask_fail(struct lease_srv *ls, struct lease_ask *a, int code, const char *msg)
{
	struct lease_ka *ka = a->ka;
	struct net_grpc_call *call = a->call;
	ask_release(ls, a);
	if (ka != NULL) {
		ka->ask = 0;
		ka_finish(ka, code, msg);
	} else if (call != NULL) {
		net_grpc_call_set_callbacks(call, NULL, NULL);
		member_finish_error(call, code, msg);
	}
}

void lease_on_answer(struct net_transport *t, uint64_t from, enum net_channel ch,
		     const uint8_t *buf, size_t len)
{
	struct srv_member *m = net_transport_data(t);
	struct lease_srv *ls = m->lease;
	struct lease_answer_msg r;
	(void)ch;
	if (m->stopping || ls == NULL || lease_answer_decode(buf, len, &r) != 0)
		return;
	struct lease_ask *a = ask_find(ls, r.seq);
	if (a == NULL || a->to != from || a->kind != r.kind)
		return; /* timed out meanwhile, or not ours */
	if (r.status == LEASE_ANS_NOT_LEADER) {
		ask_fail(ls, a, ST_UNAVAILABLE, "etcdserver: leader changed");
		return;
	}
	struct lease_ka *ka = a->ka;
	struct net_grpc_call *call = a->call;
	int64_t id = a->id;
	bool keys = a->keys;
	ask_release(ls, a);
	if (ka != NULL) {
		ka->ask = 0;
		(void)ka_reply(ka, id, r.status == LEASE_ANS_OK ? r.ttl : 0);
	} else if (call != NULL) {
		net_grpc_call_set_callbacks(call, NULL, NULL);
		ttl_answer(m, call, id, keys, r.status == LEASE_ANS_OK ? r.ttl : -1, r.granted);
	}
}

/* ---- the leader's duties, every heartbeat ---- */

static void propose_revokes(struct lease_srv *ls)
{
	struct srv_member *m = ls->m;
	int64_t ids[LEASE_REVOKE_RATE];
	size_t max = (size_t)LEASE_REVOKE_RATE * m->heartbeat_ms / 1000u;
	if (max < 1)
		max = 1;
	if (max > LEASE_REVOKE_RATE)
		max = LEASE_REVOKE_RATE;
	size_t n = lease_tab_expired(&ls->tab, now_ms(m), LEASE_REVOKE_RETRY_MS, max, ids);
	for (size_t i = 0; i < n; i++) {
		Etcdserverpb__LeaseRevokeRequest rv = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
		Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
		rv.id = ids[i];
		req.op_case = CAIRN__SERVERPB__REQUEST__OP_LEASE_REVOKE;
		req.lease_revoke = &rv; /* id 0, member_id 0: nobody waits for it */
		if (member_propose(m, &req, NULL) != 0) {
			/* not proposed: due again at the next heartbeat */
			for (size_t k = i; k < n; k++) {
				struct lease_ent *e = lease_tab_find(&ls->tab, ids[k]);
				if (e != NULL)
					e->revoke_at = 0;
			}
			return;
		}
	}
}

static void propose_checkpoints(struct lease_srv *ls)
{
	struct srv_member *m = ls->m;
	size_t max = (size_t)LEASE_CP_RATE * m->heartbeat_ms / 1000u;
	if (max < 1)
		max = 1;
	if (max > LEASE_CP_RATE)
		max = LEASE_CP_RATE;
	if (max > ls->tab.n)
		max = ls->tab.n;
	if (max == 0)
		return;
	struct lease_cp *cps = malloc(max * sizeof *cps);
	Etcdserverpb__LeaseCheckpoint *c = malloc(max * sizeof *c);
	Etcdserverpb__LeaseCheckpoint **cp = malloc(max * sizeof *cp);
	size_t n = cps && c && cp ? lease_tab_checkpoints(&ls->tab, now_ms(m), max, cps) : 0;
	if (n > 0) {
		Etcdserverpb__LeaseCheckpointRequest lc =
			ETCDSERVERPB__LEASE_CHECKPOINT_REQUEST__INIT;
		Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
		for (size_t i = 0; i < n; i++) {
			etcdserverpb__lease_checkpoint__init(&c[i]);
			c[i].id = cps[i].id;
			c[i].remaining_ttl = cps[i].remaining;
			cp[i] = &c[i];
		}
		lc.n_checkpoints = n;
		lc.checkpoints = cp;
		req.op_case = CAIRN__SERVERPB__REQUEST__OP_LEASE_CHECKPOINT;
		req.lease_checkpoint = &lc;
		if (member_propose(m, &req, NULL) == 0)
			lease_tab_checkpointed(&ls->tab, cps, n);
	}
	free(cps);
	free(c);
	free(cp);
}

void lease_tick(struct srv_member *m)
{
	struct lease_srv *ls = m->lease;
	if (ls == NULL || m->stopping)
		return;
	uint64_t now = now_ms(m);
	for (size_t i = 0; ls->n_asks > 0 && i < LEASE_MAX_ASKS; i++) {
		struct lease_ask *a = &ls->asks[i];
		if (a->seq != 0 && a->deadline <= now)
			ask_fail(ls, a, ST_UNAVAILABLE, "etcdserver: request timed out");
	}
	if ((ls->leading && ls->built) || ls->count_known)
		srv_metrics_gauge_set(m, SRV_GAUGE_LEASES,
				      (int64_t)(ls->leading && ls->built ? ls->tab.n : ls->count));
	if (!ls->leading || !is_leader(m))
		return;
	sync_table(ls, false);
	if (!ls->built)
		return;
	propose_revokes(ls);
	propose_checkpoints(ls);
}

void lease_leader_changed(struct srv_member *m, uint64_t leader)
{
	struct lease_srv *ls = m->lease;
	if (ls == NULL)
		return;
	/* questions to the member that led before get no answer now */
	for (size_t i = 0; ls->n_asks > 0 && i < LEASE_MAX_ASKS; i++) {
		struct lease_ask *a = &ls->asks[i];
		if (a->seq != 0 && a->to != leader)
			ask_fail(ls, a, ST_UNAVAILABLE, "etcdserver: leader changed");
	}
	bool leading = leader == m->id && leader != 0;
	if (leading == ls->leading)
		return;
	ls->leading = leading;
	ls->built = false;
	if (!leading) {
		/* a follower keeps no deadlines: the next leader starts from the checkpoints */
		lease_tab_free(&ls->tab);
		return;
	}
	/* built at once, so the deadlines start now (or at the next heartbeat
	 * while a snapshot is being installed) */
	sync_table(ls, true);
}

void lease_store_changed(struct srv_member *m)
{
	if (m->lease != NULL)
		m->lease->stale = true;
}

/* ---- start and stop ---- */

int lease_register(struct srv_member *m)
{
	static const struct member_method methods[] = {
		{ "/etcdserverpb.Lease/LeaseGrant", h_grant },
		{ "/etcdserverpb.Lease/LeaseRevoke", h_revoke },
		{ "/etcdserverpb.Lease/LeaseKeepAlive", h_keepalive },
		{ "/etcdserverpb.Lease/LeaseTimeToLive", h_ttl },
		{ "/etcdserverpb.Lease/LeaseLeases", h_leases },
	};
	struct lease_srv *ls = calloc(1, sizeof *ls);
	if (ls == NULL)
		return NET_ENOMEM;
	ls->m = m;
	ls->rng = (m->id ^ uv_hrtime()) | 1;
	/* etcd's minimum TTL: 3/2 of the election timeout (in whole heartbeats),
	 * rounded up to a second, so a lease outlives a leader election */
	uint64_t ticks = m->heartbeat_ms ? m->election_ms / m->heartbeat_ms : 10;
	uint64_t min_ms = (3 * ticks / 2) * m->heartbeat_ms;
	ls->min_ttl = (int64_t)((min_ms + 999) / 1000);
	lease_tab_init(&ls->tab, (uint64_t)m->election_ms + 500);
	m->lease = ls;
	return member_register(m, methods, sizeof methods / sizeof methods[0]);
}

void lease_stop(struct srv_member *m)
{
	struct lease_srv *ls = m->lease;
	if (ls == NULL)
		return;
	for (size_t i = 0; ls->n_asks > 0 && i < LEASE_MAX_ASKS; i++)
		if (ls->asks[i].seq != 0)
			ask_fail(ls, &ls->asks[i], ST_UNAVAILABLE, "etcdserver: server stopped");
	while (ls->streams != NULL)
		ka_finish(ls->streams, ST_UNAVAILABLE, "etcdserver: server stopped");
}

void lease_free(struct srv_member *m)
{
	struct lease_srv *ls = m->lease;
	if (ls == NULL)
		return;
	while (ls->streams != NULL)
		ka_free(ls->streams); /* their calls were cancelled with their sessions */
	lease_tab_free(&ls->tab);
	free(ls);
	m->lease = NULL;
}
