/* cluster.c: the etcd Cluster calls of a member, and the member table the
 * store keeps (kv_mvcc.h, "Members"; docs/architecture.md §6).
 *
 * A change (MemberAdd, MemberRemove, MemberUpdate, MemberPromote) is a
 * Request proposed through Raft by the member the client called, so any
 * member serves them. Applied, every member checks it alike against the
 * table (apply.c) and records it as the pending change, refused or accepted.
 * The leader settles the pending change once it has applied it: a refusal,
 * or an update (applied already), by proposing an ANSWER that answers the
 * proposer's call; an accepted add, remove or promotion by proposing the
 * conf-change entry, whose context is the change, and whose application
 * writes the table and answers the call. A promotion is checked by the
 * leader alone for the learner being in sync, as only it knows. Each member
 * publishes its own name and client URLs once it sees a leader (etcd's
 * publish), so a member added but not yet started has an empty name.
 *
 * A new member started with --initial-cluster-state existing asks a member
 * over the peer port who it is (net/frame.h, "joining"): the cluster id, its
 * id (the one given at MemberAdd, found by its peer URL) and the members. */
#include "member_int.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

enum { ST_NOT_FOUND = 5, ST_FAILED_PRECONDITION = 9 };

#define RESETTLE_MS 3000      /* a settling proposal not applied by then is made again */
#define JOIN_TIMEOUT_MS 60000 /* a joining member gives up after this */

/* ---- the table --------------------------------------------------------- */

static int load(struct srv_member *m, struct apply_members *t)
{
	struct kv_members km;
	memset(t, 0, sizeof *t);
	if (m->installing > 0)
		return KV_EIO; /* a snapshot going in: the store is not to be read */
	int err = kv_members_list(m->kv, &km);
	if (err == 0)
		err = apply_members_decode(&km, t);
	kv_members_free(&km);
	return err;
}

static const struct peer_info *peer_by_id(const struct srv_member *m, uint64_t id)
{
	for (size_t i = 0; i < m->n_peers; i++)
		if (m->peers[i].id == id)
			return &m->peers[i];
	return NULL;
}

/* The founding members, on a new cluster's first start (inside the write
 * transaction that records the ids): the same on every founding member. */
int cluster_seed(struct srv_member *m, struct kv_wtx *w)
{
	int err = 0;
	for (size_t i = 0; i < m->n_peers && err == 0; i++) {
		Etcdserverpb__Member mem = ETCDSERVERPB__MEMBER__INIT;
		mem.id = m->peers[i].id;
		mem.name = m->peers[i].name;
		mem.n_peerurls = 1;
		mem.peerurls = &m->peers[i].peer_url;
		err = apply_member_put(w, &mem);
	}
	return err;
}

static void free_peers(struct peer_info *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(p[i].name);
		free(p[i].peer_url);
	}
	free(p);
}

/* m->peers from the table (kept as they are while it is empty: a joining
 * member before it has applied anything). The transport follows when
 * `transport`. */
static int peers_from_table(struct srv_member *m, const struct apply_members *t, bool transport)
{
	if (t->n == 0)
		return 0;
	struct peer_info *np = calloc(t->n, sizeof *np);
	size_t n = 0;
	if (np == NULL)
		return -1;
	for (size_t i = 0; i < t->n; i++) {
		const Etcdserverpb__Member *mem = t->v[i];
		np[n].id = mem->id;
		np[n].name = strdup(mem->name ? mem->name : "");
		np[n].peer_url = strdup(mem->n_peerurls ? mem->peerurls[0] : "");
		n++;
		if (np[n - 1].name == NULL || np[n - 1].peer_url == NULL) {
			free_peers(np, n);
			return -1;
		}
	}
	if (transport && m->transport != NULL) {
		for (size_t i = 0; i < n; i++) {
			const struct peer_info *old = peer_by_id(m, np[i].id);
			if (np[i].id == m->id || np[i].peer_url[0] == '\0')
				continue;
			if (old == NULL || strcmp(old->peer_url, np[i].peer_url) != 0)
				(void)net_transport_add_peer(m->transport, np[i].id,
							     np[i].peer_url);
		}
		for (size_t i = 0; i < m->n_peers; i++) {
			bool kept = false;
			for (size_t k = 0; k < n; k++)
				kept |= np[k].id == m->peers[i].id;
			if (!kept && m->peers[i].id != m->id)
				(void)net_transport_remove_peer(m->transport, m->peers[i].id);
		}
	}
	free_peers(m->peers, m->n_peers);
	m->peers = np;
	m->n_peers = n;
	return 0;
}

int cluster_load_peers(struct srv_member *m, char *err, size_t len)
{
	struct apply_members t;
	bool removed = false;
	if (kv_member_removed(m->kv, m->id, &removed) == 0 && removed) {
		snprintf(err, len, "the member has been permanently removed from the cluster");
		return -1;
	}
	int e = load(m, &t);
	if (e == 0 && peers_from_table(m, &t, false) != 0)
		e = KV_ENOMEM;
	apply_members_free(&t);
	if (e != 0)
		snprintf(err, len, "member table: %s", kv_strerror(e));
	return e == 0 ? 0 : -1;
}

/* ---- proposing --------------------------------------------------------- */

static void finish_raft_error(struct net_grpc_call *call, int err)
{
	if (err == RAFT_ENOLEADER)
		member_finish_error(call, ST_UNAVAILABLE, "etcdserver: no leader");
	else if (err == RAFT_EBUSY)
		member_finish_error(call, ST_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
	else
		member_finish_error(call, ST_UNAVAILABLE, "etcdserver: request timed out");
}


/* Proposes the change mc for the waiting call (mc's proposer and waiter
 * are set here). The Request's own id is 0: nothing answers the call when
 * it is applied, only when the change is settled. */
static void propose_change(struct srv_member *m, struct net_grpc_call *call,
			   Cairn__Serverpb__MemberChange *mc)
{
	uint64_t seq = ++m->next_seq;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	req.member_id = m->id;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_MEMBER_CHANGE;
	req.member_change = mc;
	mc->proposer = m->id;
	mc->waiter = seq;
	struct waiter *w = member_waiter_add(m, call, seq);
	if (w == NULL) {
		member_finish_error(call, ST_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
		return;
	}
	int err = member_propose(m, &req, NULL);
	if (err != 0) {
		member_waiter_remove(m, w);
		finish_raft_error(call, err);
		return;
	}
	member_waiter_attach(w);
}

static bool urls_valid(char *const *urls, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		struct net_url u;
		if (strlen(urls[i]) > NET_JOIN_URL_MAX || net_url_parse(urls[i], &u) != 0)
			return false;
	}
	return true;
}

/* etcd's checks of quorum, made by the member the client called, on its
 * view of the table (a member is started once it has published a name). */
static bool enough_started(const struct apply_members *t, uint64_t without, bool adding)
{
	size_t voters = adding ? 1 : 0, started = 0;
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i]->islearner || t->v[i]->id == without)
			continue;
		voters++;
		started += t->v[i]->name != NULL && t->v[i]->name[0] != '\0';
	}
	if (adding && started == 1 && voters == 2)
		return true; /* a one-member cluster grows */
	return started >= voters / 2 + 1;
}

static uint64_t new_member_id(struct srv_member *m, const char *url)
{
	uint64_t x = uv_hrtime() ^ m->cluster_id ^ m->id;
	for (const char *p = url; *p; p++)
		x = (x ^ (uint8_t)*p) * 0x100000001b3ull;
	x ^= x >> 31; /* splitmix64's finaliser */
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	return x ? x : 1;
}

static void on_msg_member_add(struct net_grpc_call *call, const uint8_t *data, size_t len,
			      void *user)
{
	struct srv_member *m = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__MemberAddRequest *q =
		etcdserverpb__member_add_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	struct apply_members t;
	if (!urls_valid(q->peerurls, q->n_peerurls)) {
		member_finish_error(call, ST_INVALID_ARGUMENT,
				    "etcdserver: given member URLs are invalid");
	} else if (load(m, &t) != 0) {
		member_finish_error(call, ST_UNAVAILABLE, "etcdserver: request timed out");
	} else {
		if (!q->islearner && !enough_started(&t, 0, true)) {
			member_finish_error(call, ST_FAILED_PRECONDITION,
					    "etcdserver: re-configuration failed due to not "
					    "enough started members");
		} else {
			Etcdserverpb__Member mem = ETCDSERVERPB__MEMBER__INIT;
			Cairn__Serverpb__MemberChange mc = CAIRN__SERVERPB__MEMBER_CHANGE__INIT;
			mem.id = new_member_id(m, q->peerurls[0]);
			mem.n_peerurls = q->n_peerurls;
			mem.peerurls = q->peerurls;
			mem.islearner = q->islearner;
			mc.kind = CAIRN__SERVERPB__MEMBER_CHANGE__KIND__ADD;
			mc.member = &mem;
			propose_change(m, call, &mc);
		}
		apply_members_free(&t);
	}
	etcdserverpb__member_add_request__free_unpacked(q, NULL);
}

static void on_msg_member_remove(struct net_grpc_call *call, const uint8_t *data, size_t len,
				 void *user)
{
	struct srv_member *m = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__MemberRemoveRequest *q =
		etcdserverpb__member_remove_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	struct apply_members t;
	if (load(m, &t) != 0) {
		member_finish_error(call, ST_UNAVAILABLE, "etcdserver: request timed out");
	} else {
		const Etcdserverpb__Member *cur = apply_members_find(&t, q->id);
		if (cur != NULL && !cur->islearner && !enough_started(&t, q->id, false)) {
			member_finish_error(call, ST_FAILED_PRECONDITION,
					    "etcdserver: re-configuration failed due to not "
					    "enough started members");
		} else {
			Etcdserverpb__Member mem = ETCDSERVERPB__MEMBER__INIT;
			Cairn__Serverpb__MemberChange mc = CAIRN__SERVERPB__MEMBER_CHANGE__INIT;
			mem.id = q->id;
			mc.kind = CAIRN__SERVERPB__MEMBER_CHANGE__KIND__REMOVE;
			mc.member = &mem;
			if (q->id == 0)
				member_finish_error(call, ST_NOT_FOUND,
						    "etcdserver: member not found");
			else
				propose_change(m, call, &mc);
		}
		apply_members_free(&t);
	}
	etcdserverpb__member_remove_request__free_unpacked(q, NULL);
}

static void on_msg_member_update(struct net_grpc_call *call, const uint8_t *data, size_t len,
				 void *user)
{
	struct srv_member *m = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__MemberUpdateRequest *q =
		etcdserverpb__member_update_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	if (!urls_valid(q->peerurls, q->n_peerurls)) {
		member_finish_error(call, ST_INVALID_ARGUMENT,
				    "etcdserver: given member URLs are invalid");
	} else if (q->id == 0) {
		member_finish_error(call, ST_NOT_FOUND, "etcdserver: member not found");
	} else {
		Etcdserverpb__Member mem = ETCDSERVERPB__MEMBER__INIT;
		Cairn__Serverpb__MemberChange mc = CAIRN__SERVERPB__MEMBER_CHANGE__INIT;
		mem.id = q->id;
		mem.n_peerurls = q->n_peerurls;
		mem.peerurls = q->peerurls;
		mc.kind = CAIRN__SERVERPB__MEMBER_CHANGE__KIND__UPDATE;
		mc.member = &mem;
		propose_change(m, call, &mc);
	}
	etcdserverpb__member_update_request__free_unpacked(q, NULL);
}

static void on_msg_member_promote(struct net_grpc_call *call, const uint8_t *data, size_t len,
				  void *user)
{
	struct srv_member *m = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__MemberPromoteRequest *q =
		etcdserverpb__member_promote_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	if (q->id == 0) {
		member_finish_error(call, ST_NOT_FOUND, "etcdserver: member not found");
	} else {
		Etcdserverpb__Member mem = ETCDSERVERPB__MEMBER__INIT;
		Cairn__Serverpb__MemberChange mc = CAIRN__SERVERPB__MEMBER_CHANGE__INIT;
		mem.id = q->id;
		mc.kind = CAIRN__SERVERPB__MEMBER_CHANGE__KIND__PROMOTE;
		mc.member = &mem;
		propose_change(m, call, &mc);
	}
	etcdserverpb__member_promote_request__free_unpacked(q, NULL);
}

static void on_msg_member_list(struct net_grpc_call *call, const uint8_t *data, size_t len,
			       void *user)
{
	struct srv_member *m = user;
	struct apply_members t;
	struct apply_result r = { 0 };
	Etcdserverpb__ResponseHeader h;
	(void)data;
	(void)len;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	if (load(m, &t) != 0) {
		member_finish_error(call, ST_UNAVAILABLE, "etcdserver: request timed out");
		return;
	}
	member_header_init(m, &h, m->revision);
	/* MemberListResponse: header 1, members 2, as the shared layout */
	if (apply_members_response(&t, &h, NULL, &r) == 0) {
		int err = net_grpc_call_send(call, r.resp, r.resp_len);
		net_grpc_call_finish(call, err == 0 ? ST_OK : ST_INTERNAL,
				     err == 0 ? "" : "send failed");
	} else {
		member_finish_error(call, ST_INTERNAL, "out of memory");
	}
	free(r.resp);
	apply_members_free(&t);
}

#define HANDLER(name)                                                                              \
	static void h_##name(struct net_grpc_call *call, void *data)                               \
	{                                                                                          \
		static const struct net_grpc_call_callbacks cbs = { .on_message = on_msg_##name }; \
		net_grpc_call_set_callbacks(call, &cbs, data);                                     \
	}
HANDLER(member_list)
HANDLER(member_add)
HANDLER(member_remove)
HANDLER(member_update)
HANDLER(member_promote)

int cluster_register(struct srv_member *m)
{
	static const struct member_method methods[] = {
		{ "/etcdserverpb.Cluster/MemberList", h_member_list },
		{ "/etcdserverpb.Cluster/MemberAdd", h_member_add },
		{ "/etcdserverpb.Cluster/MemberRemove", h_member_remove },
		{ "/etcdserverpb.Cluster/MemberUpdate", h_member_update },
		{ "/etcdserverpb.Cluster/MemberPromote", h_member_promote },
	};
	return member_register(m, methods, sizeof methods / sizeof methods[0]);
}

/* ---- applying conf changes (the apply thread) -------------------------- */

int cluster_apply_conf_change(struct srv_member *m, struct kv_wtx *w, const struct raft_entry *e,
			      struct apply_batch *b)
{
	struct raft_conf_change cc;
	struct apply_members t;
	if (raft_conf_change_decode(e->data, e->len, &cc) < 0)
		return 0; /* every member skips it alike */
	int err = apply_members_load_w(w, &t);
	if (err != 0)
		return err;
	Cairn__Serverpb__MemberChange *mc =
		cc.context_len ?
			cairn__serverpb__member_change__unpack(NULL, cc.context_len, cc.context) :
			NULL;
	const Etcdserverpb__Member *cur = apply_members_find(&t, cc.id);
	Etcdserverpb__Member upd = ETCDSERVERPB__MEMBER__INIT;
	if (cur != NULL)
		upd = *cur;
	upd.id = cc.id;
	if (cc.type == RAFT_CC_REMOVE) {
		err = kv_member_delete(w, cc.id);
		if (err == KV_ENOTFOUND)
			err = 0;
		if (err == 0)
			err = kv_member_set_removed(w, cc.id);
	} else if (mc != NULL && mc->member != NULL && cur == NULL) {
		upd = *mc->member; /* added at run time: the record the change carries */
		upd.id = cc.id;
		upd.islearner = cc.type == RAFT_CC_ADD_LEARNER;
		err = apply_member_put(w, &upd);
	} else if (cur == NULL || cur->islearner != (cc.type == RAFT_CC_ADD_LEARNER)) {
		/* a founding member's entry (no context), or a promotion */
		upd.islearner = cc.type == RAFT_CC_ADD_LEARNER;
		err = apply_member_put(w, &upd);
	}
	if (err == 0 && mc != NULL && t.pending != NULL && t.pending->proposer == mc->proposer &&
	    t.pending->waiter == mc->waiter) {
		err = kv_member_delete(w, 0);
		if (err == KV_ENOTFOUND)
			err = 0;
	}
	b->members_changed = true;
	if (err == 0 && mc != NULL && mc->proposer == m->id && mc->waiter != 0) {
		struct apply_members after;
		struct apply_result r = { .message = "" };
		Etcdserverpb__ResponseHeader h;
		member_header_init(m, &h, m->revision);
		h.raft_term = e->term;
		err = apply_members_load_w(w, &after);
		if (err == 0) {
			const Etcdserverpb__Member *added =
				mc->kind == CAIRN__SERVERPB__MEMBER_CHANGE__KIND__ADD ?
					apply_members_find(&after, cc.id) :
					NULL;
			err = apply_members_response(&after, &h, added, &r);
			apply_members_free(&after);
		}
		if (err == 0)
			member_batch_add_result(b, mc->waiter, &r);
		else
			apply_result_free(&r);
	}
	if (mc != NULL)
		cairn__serverpb__member_change__free_unpacked(mc, NULL);
	apply_members_free(&t);
	return err;
}

/* ---- the loop: settling changes, publishing, following the table ------- */

/* etcd's isLearnerReady: the learner's match index within 90% of the
 * leader's. */
static bool learner_ready(struct srv_member *m, uint64_t id)
{
	struct raft_progress_info pr[RAFT_MAX_MEMBERS];
	uint32_t n = raft_progress(m->raft, pr, RAFT_MAX_MEMBERS);
	uint64_t leader = 0, learner = 0;
	bool found = false;
	for (uint32_t i = 0; i < n; i++) {
		if (pr[i].id == m->id)
			leader = pr[i].match;
		if (pr[i].id == id) {
			learner = pr[i].match;
			found = true;
		}
	}
	if (leader == 0) {
		struct raft_status rs;
		raft_status(m->raft, &rs);
		leader = rs.last_index;
	}
	return !found || (double)learner >= (double)leader * 0.9;
}

static int propose_answer(struct srv_member *m, const Cairn__Serverpb__MemberChange *p,
			  uint32_t code, const char *message)
{
	Cairn__Serverpb__MemberChange a = CAIRN__SERVERPB__MEMBER_CHANGE__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	a.kind = CAIRN__SERVERPB__MEMBER_CHANGE__KIND__ANSWER;
	a.proposer = p->proposer;
	a.waiter = p->waiter;
	a.code = code;
	a.message = (char *)message;
	req.id = p->waiter; /* answers the proposer's call where it is applied */
	req.member_id = p->proposer;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_MEMBER_CHANGE;
	req.member_change = &a;
	return member_propose(m, &req, NULL);
}

/* The most up-to-date voter other than this member that answered lately. */
static uint64_t handoff_target(struct srv_member *m, const struct raft_conf *conf)
{
	struct raft_progress_info pr[RAFT_MAX_MEMBERS];
	uint32_t n = raft_progress(m->raft, pr, RAFT_MAX_MEMBERS);
	uint64_t target = 0, best = 0;
	for (uint32_t i = 0; i < n; i++)
		if (pr[i].id != m->id && raft_conf_role(conf, pr[i].id) == RAFT_VOTER &&
		    pr[i].recent_active && pr[i].match >= best) {
			best = pr[i].match;
			target = pr[i].id;
		}
	return target;
}

/* The leader settles the pending change (once per change, again after
 * RESETTLE_MS should the proposal have been lost). */
static void settle(struct srv_member *m, const struct apply_members *t)
{
	const Cairn__Serverpb__MemberChange *p = t->pending;
	struct raft_status rs;
	if (p == NULL)
		return;
	raft_status(m->raft, &rs);
	if (rs.state != RAFT_LEADER)
		return;
	if (m->cl_settle_proposer == p->proposer && m->cl_settle_waiter == p->waiter &&
	    m->cl_settle_term == rs.term && now_ms(m) < m->cl_settle_at + RESETTLE_MS)
		return;
	int err;
	if (p->code != 0) {
		err = propose_answer(m, p, p->code, p->message);
	} else if (p->kind == CAIRN__SERVERPB__MEMBER_CHANGE__KIND__UPDATE) {
		err = propose_answer(m, p, 0, "");
	} else if (p->kind == CAIRN__SERVERPB__MEMBER_CHANGE__KIND__PROMOTE &&
		   !learner_ready(m, p->member->id)) {
		err = propose_answer(m, p, ST_FAILED_PRECONDITION,
				     "etcdserver: can only promote a learner member which is in "
				     "sync with leader");
	} else if (p->kind == CAIRN__SERVERPB__MEMBER_CHANGE__KIND__REMOVE &&
		   p->member->id == m->id && raft_conf_voters(&rs.conf) > 1) {
		/* the leader is removed: it hands leadership over first, and
		 * the new leader settles the change */
		uint64_t to = handoff_target(m, &rs.conf);
		err = to != 0 ? raft_transfer_leadership(m->raft, to) : RAFT_EBUSY;
		if (err == 0) {
			struct srv_log_line l;
			srv_log_begin(&l, SRV_LOG_INFO, "leadership-handoff");
			srv_log_hex(&l, "to", to);
			srv_log_str(&l, "reason", "this member is being removed");
			srv_log_end(&l);
			member_kick(m);
		}
	} else {
		size_t n = cairn__serverpb__member_change__get_packed_size(p);
		uint8_t ctx[RAFT_MAX_CONF_CONTEXT];
		struct raft_conf_change cc = { .id = p->member->id, .context = ctx };
		if (p->kind == CAIRN__SERVERPB__MEMBER_CHANGE__KIND__REMOVE)
			cc.type = RAFT_CC_REMOVE;
		else if (p->kind == CAIRN__SERVERPB__MEMBER_CHANGE__KIND__ADD &&
			 p->member->islearner)
			cc.type = RAFT_CC_ADD_LEARNER;
		else
			cc.type = RAFT_CC_ADD_VOTER;
		err = RAFT_ETOOBIG;
		if (n <= sizeof ctx) {
			cc.context_len = (uint32_t)cairn__serverpb__member_change__pack(p, ctx);
			err = raft_propose_conf_change(m->raft, &cc, NULL);
		}
		if (err == RAFT_ETOOBIG)
			err = propose_answer(m, p, ST_INVALID_ARGUMENT,
					     "etcdserver: given member URLs are invalid");
		if (err == 0)
			member_kick(m);
	}
	if (err == 0) {
		m->cl_settle_proposer = p->proposer;
		m->cl_settle_waiter = p->waiter;
		m->cl_settle_term = rs.term;
		m->cl_settle_at = now_ms(m);
	}
}

/* etcd's publish: this member's name and client URLs, once a leader is
 * known and the table says otherwise. Returns whether the table already
 * has them (or has no record of this member): nothing left to publish. */
static bool publish(struct srv_member *m, const struct apply_members *t)
{
	const Etcdserverpb__Member *self = apply_members_find(t, m->id);
	struct raft_status rs;
	if (self == NULL)
		return true;
	bool same = strcmp(self->name, m->name) == 0 && self->n_clienturls == m->n_client_urls;
	for (size_t i = 0; same && i < m->n_client_urls; i++)
		same = strcmp(self->clienturls[i], m->client_urls[i]) == 0;
	if (same && self->n_peerurls > 0)
		return true;
	if (m->cl_published_at + RESETTLE_MS > now_ms(m))
		return false;
	raft_status(m->raft, &rs);
	if (rs.leader == 0)
		return false;
	const struct peer_info *me = peer_by_id(m, m->id);
	char *purl = me != NULL ? me->peer_url : NULL;
	Etcdserverpb__Member mem = ETCDSERVERPB__MEMBER__INIT;
	Cairn__Serverpb__MemberChange mc = CAIRN__SERVERPB__MEMBER_CHANGE__INIT;
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	mem.id = m->id;
	mem.name = m->name;
	mem.n_clienturls = m->n_client_urls;
	mem.clienturls = m->client_urls;
	mem.n_peerurls = purl != NULL && purl[0] ? 1 : 0;
	mem.peerurls = &purl;
	mc.kind = CAIRN__SERVERPB__MEMBER_CHANGE__KIND__PUBLISH;
	mc.member = &mem;
	req.member_id = m->id;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_MEMBER_CHANGE;
	req.member_change = &mc;
	if (member_propose(m, &req, NULL) == 0)
		m->cl_published_at = now_ms(m);
	return false;
}

/* A removed member stops, as etcd's does, through the daemon's ordinary
 * graceful stop. */
static void removed(struct srv_member *m)
{
	if (m->cl_removed)
		return;
	m->cl_removed = true;
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_WARN, "removed-from-cluster");
	srv_log_hex(&l, "member-id", m->id);
	srv_log_str(&l, "detail", "the member has been permanently removed from the cluster");
	srv_log_end(&l);
	(void)kill(getpid(), SIGTERM);
}

static void follow(struct srv_member *m, bool changed)
{
	struct apply_members t;
	if (m->stopping || m->raft == NULL || load(m, &t) != 0)
		return;
	if (changed) {
		bool gone = false;
		(void)kv_member_removed(m->kv, m->id, &gone);
		if (gone)
			removed(m);
		else if (peers_from_table(m, &t, true) != 0)
			srv_log(SRV_LOG_ERROR, "member-table", "error", "out of memory", NULL);
	}
	bool published = true;
	if (!m->cl_removed) {
		settle(m, &t);
		published = publish(m, &t);
	}
	/* nothing for the tick to do until the table changes again */
	m->cl_quiet = t.pending == NULL && published;
	apply_members_free(&t);
}

void cluster_members_changed(struct srv_member *m)
{
	follow(m, true);
}

void cluster_housekeeping(struct srv_member *m)
{
	if (!m->cl_quiet)
		follow(m, false);
}

/* ---- joining ----------------------------------------------------------- */

int cluster_on_join(struct net_transport *tr, const char *peer_url, struct net_join_answer *out,
		    char *reason, size_t cap)
{
	struct srv_member *m = net_transport_data(tr);
	struct apply_members t;
	if (load(m, &t) != 0) {
		snprintf(reason, cap, "member table unavailable, try again");
		return -1;
	}
	const Etcdserverpb__Member *who = NULL;
	for (size_t i = 0; i < t.n; i++)
		for (size_t k = 0; k < t.v[i]->n_peerurls; k++)
			if (strcmp(t.v[i]->peerurls[k], peer_url) == 0)
				who = t.v[i];
	int rv = 0;
	if (who == NULL) {
		snprintf(reason, cap,
			 "no member with peer URL %s: add it first (etcdctl member add)", peer_url);
		rv = -1;
	}
	memset(out, 0, sizeof *out);
	out->cluster_id = m->cluster_id;
	out->member_id = who ? who->id : 0;
	for (size_t i = 0; rv == 0 && i < t.n && out->n < NET_JOIN_MAX_MEMBERS; i++) {
		if (t.v[i]->n_peerurls == 0)
			continue;
		struct net_join_member *jm = &out->members[out->n++];
		jm->id = t.v[i]->id;
		jm->learner = t.v[i]->islearner;
		snprintf(jm->url, sizeof jm->url, "%s", t.v[i]->peerurls[0]);
	}
	apply_members_free(&t);
	return rv;
}

struct join_state {
	bool done;
	int status;
	struct net_join_answer a;
	char reason[NET_REFUSE_MAX + 1];
};

static void on_join_done(void *data, int status, const struct net_join_answer *a,
			 const char *reason)
{
	struct join_state *js = data;
	js->done = true;
	js->status = status;
	if (a != NULL)
		js->a = *a;
	snprintf(js->reason, sizeof js->reason, "%s", reason ? reason : "");
}

/* Asks the members of --initial-cluster, each in turn, until one answers;
 * on a loop of its own, before the member's loop runs. */
int cluster_join(struct srv_member *m, const struct srv_config *cfg, char *err, size_t len)
{
	const char *self_url = NULL;
	for (size_t i = 0; i < cfg->initial_cluster_n; i++)
		if (strcmp(cfg->initial_cluster_entries[i].name, cfg->name) == 0 && !self_url)
			self_url = cfg->initial_cluster_entries[i].url.text;
	if (self_url == NULL) {
		snprintf(err, len, "couldn't find local name \"%s\" in the initial cluster",
			 cfg->name);
		return -1;
	}
	uv_loop_t loop;
	if (uv_loop_init(&loop) != 0) {
		snprintf(err, len, "cannot start a loop to join");
		return -1;
	}
	uint64_t end = uv_hrtime() / 1000000u + JOIN_TIMEOUT_MS;
	struct join_state js = { 0 };
	/* https peer URLs: the join goes through TLS like the transport */
	struct net_stream_opts tls = { .filter = net_tls_filter_factory,
				       .filter_ctx = &m->peer_tls };
	char last[NET_REFUSE_MAX + 160] = "no member answered";
	bool answered = false;
	while (!answered && uv_hrtime() / 1000000u < end) {
		for (size_t i = 0; !answered && i < cfg->initial_cluster_n; i++) {
			const char *url = cfg->initial_cluster_entries[i].url.text;
			if (strcmp(cfg->initial_cluster_entries[i].name, cfg->name) == 0)
				continue;
			memset(&js, 0, sizeof js);
			if (net_join_ask(&loop, url, self_url, m->peer_tls.client ? &tls : NULL,
					 3000, on_join_done, &js) != 0)
				continue;
			while (!js.done)
				uv_run(&loop, UV_RUN_ONCE);
			uv_run(&loop, UV_RUN_NOWAIT); /* the closes */
			if (js.status == 0) {
				answered = true;
			} else {
				snprintf(last, sizeof last, "%s: %s", url,
					 js.reason[0] ? js.reason : net_strerror(js.status));
				srv_log(SRV_LOG_WARN, "join-attempt-failed", "member", url, "error",
					last, NULL);
			}
		}
		if (!answered)
			nanosleep(&(struct timespec){ .tv_nsec = 500000000L }, NULL);
	}
	while (uv_loop_alive(&loop))
		uv_run(&loop, UV_RUN_NOWAIT);
	(void)uv_loop_close(&loop);
	if (!answered) {
		snprintf(err, len, "cannot join the cluster: %s", last);
		return -1;
	}
	m->cluster_id = js.a.cluster_id;
	m->id = js.a.member_id;
	m->peers = calloc(js.a.n + 1, sizeof *m->peers);
	if (m->peers == NULL) {
		snprintf(err, len, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < js.a.n; i++) {
		struct peer_info *p = &m->peers[m->n_peers++];
		char hex[17];
		const char *name = NULL;
		for (size_t k = 0; k < cfg->initial_cluster_n; k++)
			if (strcmp(cfg->initial_cluster_entries[k].url.text, js.a.members[i].url) ==
			    0)
				name = cfg->initial_cluster_entries[k].name;
		snprintf(hex, sizeof hex, "%016" PRIx64, js.a.members[i].id);
		p->id = js.a.members[i].id;
		p->name = strdup(name ? name : hex);
		p->peer_url = strdup(js.a.members[i].url);
		if (p->name == NULL || p->peer_url == NULL) {
			snprintf(err, len, "out of memory");
			return -1;
		}
	}
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "joined");
	srv_log_hex(&l, "member-id", m->id);
	srv_log_hex(&l, "cluster-id", m->cluster_id);
	srv_log_end(&l);
	return 0;
}
