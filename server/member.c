/* member.c: one Cairn member (member.h): the Raft core, the log store, the
 * LMDB store on the storage thread, the peer transport and the gRPC
 * listeners, on one libuv loop; the calls themselves are in kvapi.c and
 * cluster.c.
 *
 * The loop follows THE LOOP CONTRACT (raft/raft.h, docs/architecture.md
 * §2.3): it takes one update at a time; sends its messages at once; gives
 * the storage thread one job that persists the update (logstore_persist)
 * and applies its committed entries to LMDB in one write transaction; and
 * when that job is done sends msgs_after_persist, answers the clients whose
 * Requests were applied, serves ReadIndex reads and advances. */
#include "member_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "gossip_store.h"
#include "kvconv.h"
#include "log.h"

/* The member of this process: one per process, so that callbacks that
 * carry only a call or a waiter id find it. */
static struct srv_member *the_member;

/* ---- ids --------------------------------------------------------------- */

/* SHA-256 of the parts, first 8 bytes big-endian, never 0 (member.h). */
static uint64_t hash_id(const void *a, size_t alen, const char *token)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	uint64_t v = 0;
	if (c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(c, a, alen) == 1 && EVP_DigestUpdate(c, token, strlen(token)) == 1 &&
	    EVP_DigestFinal_ex(c, md, &mdlen) == 1 && mdlen >= 8) {
		for (int i = 0; i < 8; i++)
			v = v << 8 | md[i];
	}
	EVP_MD_CTX_free(c);
	return v ? v : 1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

uint64_t srv_member_id_of(const char *peer_url, const char *token)
{
	return hash_id(peer_url, strlen(peer_url) + 1, token);
}

uint64_t srv_cluster_id_of(uint64_t *ids, size_t n, const char *token)
{
	qsort(ids, n, sizeof ids[0], cmp_u64);
	return hash_id(ids, n * sizeof ids[0], token);
}

static uint64_t rng_next(void *ctx)
{
	uint64_t *s = ctx; /* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

/* ---- waiters ------------------------------------------------------------- */

struct waiter *member_waiter_add(struct srv_member *m, struct net_grpc_call *call, uint64_t id)
{
	if (m->n_waiters >= MAX_WAITERS)
		return NULL;
	size_t slot = (size_t)(id % MAX_WAITERS);
	while (m->waiters[slot].id != 0)
		slot = (slot + 1) % MAX_WAITERS;
	struct waiter *w = &m->waiters[slot];
	w->id = id;
	w->call = call;
	w->deadline_ms =
		now_ms(m) + 5000 + 2 * (uint64_t)m->election_ms; /* etcd's request timeout */
	w->range = NULL;
	m->n_waiters++;
	return w;
}

struct waiter *member_waiter_find(struct srv_member *m, uint64_t id)
{
	size_t slot = (size_t)(id % MAX_WAITERS);
	for (size_t n = 0; n < MAX_WAITERS && m->waiters[slot].id != 0; n++) {
		if (m->waiters[slot].id == id)
			return &m->waiters[slot];
		slot = (slot + 1) % MAX_WAITERS;
	}
	return NULL;
}

/* Removes w, keeping later entries of its probe chain reachable. */
void member_waiter_remove(struct srv_member *m, struct waiter *w)
{
	size_t slot = (size_t)(w - m->waiters);
	if (w->range != NULL)
		etcdserverpb__range_request__free_unpacked(w->range, NULL);
	memset(w, 0, sizeof *w);
	m->n_waiters--;
	/* re-insert the rest of the cluster (linear probing deletion) */
	size_t i = (slot + 1) % MAX_WAITERS;
	while (m->waiters[i].id != 0) {
		struct waiter moved = m->waiters[i];
		memset(&m->waiters[i], 0, sizeof moved);
		m->n_waiters--;
		struct waiter *n = member_waiter_add(m, moved.call, moved.id);
		n->deadline_ms = moved.deadline_ms;
		n->range = moved.range;
		i = (i + 1) % MAX_WAITERS;
	}
}

static void on_call_cancel(struct net_grpc_call *call, void *user);

/* The call's callbacks carry its waiter id, so a moved waiter is found. */
void member_waiter_attach(struct waiter *w)
{
	static const struct net_grpc_call_callbacks cbs = { .on_cancel = on_call_cancel };
	net_grpc_call_set_callbacks(w->call, &cbs, (void *)(uintptr_t)w->id);
}

static void on_call_cancel(struct net_grpc_call *call, void *user)
{
	struct srv_member *m = the_member;
	struct waiter *w = member_waiter_find(m, (uint64_t)(uintptr_t)user);
	if (w != NULL && w->call == call)
		member_waiter_remove(m, w);
}

/* ---- responses -------------------------------------------------------- */

int member_propose(struct srv_member *m, const Cairn__Serverpb__Request *req, uint64_t *index)
{
	size_t n = cairn__serverpb__request__get_packed_size(req);
	if (n > m->max_request_bytes)
		return RAFT_ETOOBIG;
	uint8_t *buf = malloc(n ? n : 1);
	if (buf == NULL)
		return RAFT_ENOMEM;
	cairn__serverpb__request__pack(req, buf);
	int err = raft_propose(m->raft, buf, n, index);
	free(buf);
	if (err == 0)
		member_kick(m);
	return err;
}

void member_propose_call(struct srv_member *m, struct net_grpc_call *call,
			 Cairn__Serverpb__Request *req)
{
	req->id = ++m->next_seq;
	req->member_id = m->id;
	size_t n = cairn__serverpb__request__get_packed_size(req);
	if (n > m->max_request_bytes) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "etcdserver: request is too large");
		return;
	}
	if (maint_quota_refuses(m, req, n)) {
		member_finish_error(call, ST_RESOURCE_EXHAUSTED,
				    "etcdserver: mvcc: database space exceeded");
		return;
	}
	struct waiter *w = member_waiter_add(m, call, req->id);
	if (w == NULL) {
		member_finish_error(call, ST_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
		return;
	}
	int err = member_propose(m, req, NULL);
	if (err == 0) {
		member_waiter_attach(w);
		return;
	}
	member_waiter_remove(m, w);
	m->metrics.proposals_failed++;
	if (err == RAFT_ENOLEADER)
		member_finish_error(call, ST_UNAVAILABLE, "etcdserver: no leader");
	else if (err == RAFT_EBUSY)
		member_finish_error(call, ST_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
	else if (err == RAFT_ETOOBIG)
		member_finish_error(call, ST_INVALID_ARGUMENT, "etcdserver: request is too large");
	else
		member_finish_error(call, ST_UNAVAILABLE, raft_strerror(err));
}

bool member_learner_refuses(struct srv_member *m, struct net_grpc_call *call)
{
	struct raft_status rs;
	raft_status(m->raft, &rs);
	if (raft_conf_role(&rs.conf, m->id) != RAFT_LEARNER)
		return false;
	member_finish_error(call, ST_UNAVAILABLE, "etcdserver: rpc not supported for learner");
	return true;
}

static void gate(struct net_grpc_call *call, void *data)
{
	const struct member_gate *g = data;
	if (!g->learner_ok && member_learner_refuses(g->m, call))
		return;
	g->h(call, g->m);
}

int member_register(struct srv_member *m, const struct member_method *v, size_t n)
{
	int err = 0;
	for (size_t i = 0; err == 0 && i < n; i++) {
		if (m->n_gates == MAX_GATES)
			return NET_ELIMIT;
		struct member_gate *g = &m->gates[m->n_gates++];
		g->m = m;
		g->h = v[i].h;
		g->learner_ok = strcmp(v[i].path, "/etcdserverpb.Maintenance/Status") == 0 ||
				strcmp(v[i].path, "/etcdserverpb.KV/Range") == 0;
		err = net_grpc_server_register(m->grpc, v[i].path, gate, g);
	}
	return err;
}

void member_header_init(struct srv_member *m, Etcdserverpb__ResponseHeader *h, int64_t rev)
{
	etcdserverpb__response_header__init(h);
	h->cluster_id = m->cluster_id;
	h->member_id = m->id;
	h->raft_term = m->term;
	h->revision = rev;
}

void member_finish_msg(struct net_grpc_call *call, const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(n ? n : 1);
	if (buf == NULL) {
		net_grpc_call_finish(call, ST_INTERNAL, "out of memory");
		return;
	}
	protobuf_c_message_pack(msg, buf);
	int err = net_grpc_call_send(call, buf, n);
	free(buf);
	net_grpc_call_finish(call, err == 0 ? ST_OK : ST_INTERNAL, err == 0 ? "" : "send failed");
}

void member_finish_error(struct net_grpc_call *call, int code, const char *msg)
{
	net_grpc_call_finish(call, code, msg);
}

/* A Range served from the local store (serializable, or once a ReadIndex
 * read's index is applied). */
void member_serve_range(struct srv_member *m, struct net_grpc_call *call,
			const Etcdserverpb__RangeRequest *q)
{
	struct kv_range_req req;
	struct kv_range_resp resp;
	struct kvconv_arena a = { 0 };
	Etcdserverpb__RangeResponse out;
	Etcdserverpb__ResponseHeader h;
	if (m->installing > 0) {
		/* the store is being replaced by a snapshot from the leader */
		member_finish_error(call, ST_UNAVAILABLE,
				    "etcdserver: server is installing a snapshot");
		return;
	}
	kvconv_range_req(q, &req);
	int err = kv_range(m->kv, &req, &resp);
	if (err != 0) {
		struct kvconv_status st;
		kvconv_error(err, &st);
		member_finish_error(call, st.code, st.message);
		return;
	}
	member_header_init(m, &h, resp.revision);
	if (kvconv_range_resp(&resp, &h, &a, &out) != 0)
		member_finish_error(call, ST_INTERNAL, "out of memory");
	else
		member_finish_msg(call, &out.base);
	kvconv_arena_free(&a);
	kv_range_resp_free(&resp);
}

static void expire_waiters(struct srv_member *m)
{
	uint64_t now = now_ms(m);
	for (size_t i = 0; i < MAX_WAITERS && m->n_waiters > 0; i++) {
		struct waiter *w = &m->waiters[i];
		if (w->id != 0 && w->deadline_ms <= now) {
			struct net_grpc_call *call = w->call;
			if (w->range == NULL)
				m->metrics.proposals_failed++; /* a write, not a read */
			member_waiter_remove(m, w);
			member_finish_error(call, ST_UNAVAILABLE, "etcdserver: request timed out");
			i--; /* a later entry may have moved into this slot */
		}
	}
}

static void leader_down(struct srv_member *m, uint64_t id, const char *reason);

/* A follower that has heard nothing from its leader for silence_ms (no append, no heartbeat)
 * reports it down, as it does when the leader's connections are refused: a leader that is
 * frozen (SIGSTOP, a stalled VM) or cut off by the network refuses nothing, and would otherwise
 * be waited for until the election timeout. The report is safe when only this follower is cut
 * off: pre-vote then fails while the others still hear from the leader, and its next message
 * makes it this member's leader again. */
static void check_leader_silence(struct srv_member *m);

static void on_silence(uv_timer_t *t)
{
	check_leader_silence(t->data);
}

static void check_leader_silence(struct srv_member *m)
{
	uint64_t now = uv_now(m->loop);
	if (m->stopping || m->leader == 0 || m->leader == m->id) {
		m->heard_leader = 0;
		uv_timer_stop(&m->silence);
		return;
	}
	if (m->heard_leader != m->leader) {
		m->heard_leader = m->leader; /* a new leader: its silence counts from now */
		m->heard_ms = now;
	} else if (uv_is_active((uv_handle_t *)&m->silence)) {
		return; /* (the tick) its timer looks at the same leader */
	} else if (now - m->heard_ms >= m->silence_ms) {
		m->heard_ms = now; /* once per silence_ms at most */
		leader_down(m, m->leader, "silent");
	}
	/* looked at again when the silence would be long enough, not at the next tick after it:
	 * the tick would add up to a heartbeat interval */
	uv_timer_start(&m->silence, on_silence, m->heard_ms + m->silence_ms - now, 0);
}

static void on_tick(uv_timer_t *t)
{
	struct srv_member *m = t->data;
	raft_tick(m->raft);
	check_leader_silence(m);
	cluster_housekeeping(m);
	lease_tick(m);
	http_tick(m);
	gossip_store_tick(m);
	if (m->n_waiters > 0 && (uv_now(m->loop) / m->heartbeat_ms) % 10 == 0)
		expire_waiters(m);
	member_kick(m);
}

static void on_campaign(uv_timer_t *t)
{
	struct srv_member *m = t->data;
	struct raft_status rs;
	raft_status(m->raft, &rs);
	if (!m->stopping && rs.leader == 0 && rs.state != RAFT_LEADER) {
		(void)raft_campaign(m->raft);
		member_kick(m);
	}
}

uint64_t srv_campaign_rank(const struct raft_conf *conf, uint64_t term, uint64_t leader,
			   uint64_t self)
{
	uint64_t mine = srv_mix64(term ^ self);
	uint64_t rank = 0;
	for (uint32_t i = 0; i < conf->n; i++) {
		const struct raft_member *v = &conf->members[i];
		if (v->role != RAFT_VOTER || v->id == leader || v->id == self)
			continue;
		uint64_t h = srv_mix64(term ^ v->id);
		rank += h < mine || (h == mine && v->id < self);
	}
	return rank;
}

/* How long this follower waits to campaign once leader `leader` is known gone: its rank's slot
 * of a tenth of the election timeout (srv_campaign_rank), at a random moment in the slot's first
 * quarter. Two followers that both see the leader gone therefore do not campaign at once (a
 * split vote would cost a whole election timeout), and when the first cannot win (it is cut off
 * too, or its log is behind) the next tries a slot later. A slot's first tenth is left out, so
 * that the others have seen the same silence before the first pre-vote asks them. */
static uint64_t campaign_delay(struct srv_member *m, const struct raft_status *rs, uint64_t leader)
{
	uint64_t slot = m->election_ms / 10 ? m->election_ms / 10 : 1;
	uint64_t spread = slot / 4 ? slot / 4 : 1;
	return srv_campaign_rank(&rs->conf, rs->term, leader, m->id) * slot + slot / 10 +
	       rng_next(&m->rng) % spread;
}

/* Member `id` is known gone (its connections are refused, gossip found it dead or gone, or it has
 * been silent): if it is the leader, rather than waiting out the election timeout, this follower
 * ends the leader's lease (so it grants the others' votes) and campaigns in its turn
 * (campaign_delay); pre-vote keeps a wrong guess harmless. */
static void leader_down(struct srv_member *m, uint64_t id, const char *reason)
{
	struct raft_status rs;
	raft_status(m->raft, &rs);
	if (m->stopping || rs.state == RAFT_LEADER || rs.leader != id || id == 0)
		return;
	raft_report_leader_down(m->raft, id);
	uint64_t delay = campaign_delay(m, &rs, id);
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "leader-unreachable");
	srv_log_hex(&l, "leader", id);
	srv_log_str(&l, "reason", reason);
	srv_log_u64(&l, "campaign-in-ms", delay);
	srv_log_end(&l);
	uv_timer_start(&m->campaign, on_campaign, delay, 0);
	member_kick(m);
}

static void on_peer_down(struct net_transport *t, uint64_t id)
{
	leader_down(net_transport_data(t), id, "connection refused");
}

/* A change of the gossip view: the leader records it (gossip_store.c); a
 * member that gossip marks dead or left may be the Raft leader, found by
 * its name in the member table. */
static void on_gossip_event(void *data, const struct gossip_event *ev)
{
	struct srv_member *m = data;
	const struct gossip_member *g = &ev->member;
	if (m->stopping)
		return;
	gossip_store_event(m, ev);
	if (ev->type != GOSSIP_EV_UPDATE || g->self || ev->prev_state == g->state ||
	    (g->state != GOSSIP_DEAD && g->state != GOSSIP_LEFT))
		return;
	for (size_t i = 0; i < m->n_peers; i++)
		if (m->peers[i].id != m->id && m->peers[i].name != NULL &&
		    strcmp(m->peers[i].name, g->name) == 0) {
			leader_down(m, m->peers[i].id, "gossip");
			return;
		}
}

/* The address this server gives gossip when it listens on 0.0.0.0 or ::
 * (srv_gossip.h picks an interface otherwise): the host of its first
 * advertised client URL, when that is a numeric IP. */
static const char *gossip_advertise_host(const struct srv_config *cfg)
{
	uint8_t ip[16];
	const char *l = cfg->gossip_listen.host;
	const char *h = cfg->advertise_client_urls.n ? cfg->advertise_client_urls.v[0].host : NULL;
	if (l == NULL || (strcmp(l, "0.0.0.0") != 0 && strcmp(l, "::") != 0))
		return NULL; /* a specific address is advertised as it is */
	if (h == NULL || (inet_pton(AF_INET, h, ip) != 1 && inet_pton(AF_INET6, h, ip) != 1))
		return NULL;
	if (strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0)
		return NULL;
	return h;
}

static void on_peer_recv(struct net_transport *t, uint64_t from, enum net_channel ch,
			 const uint8_t *buf, size_t len)
{
	struct srv_member *m = net_transport_data(t);
	struct srv_raftwire_msg msg;
	(void)ch;
	if (srv_raftwire_decode(buf, len, &m->wire_lim, &msg) != 0)
		return; /* a frame that is not a Raft message: dropped */
	if (msg.msg.from == from) {
		if (from == m->heard_leader)
			m->heard_ms = uv_now(m->loop);
		(void)raft_step(m->raft, &msg.msg);
	}
	srv_raftwire_msg_free(&msg);
	logstore_release(m->ls);
	member_kick(m);
}

/* The transport's and the client listeners' lines, in the member's format;
 * debug lines only at the debug level (they are not logged at all here). */
static void on_net_log(void *data, enum net_log_level level, const char *msg)
{
	static const enum srv_log_level levels[] = { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN,
						     SRV_LOG_ERROR };
	(void)data;
	srv_log(levels[level <= NET_LOG_ERROR ? level : NET_LOG_ERROR], "net", "msg", msg, NULL);
}

/* ---- start and stop ------------------------------------------------------ */

static int fail(char *err, size_t len, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return code;
}

static void member_free(struct srv_member *m)
{
	for (size_t i = 0; i < m->n_peers; i++) {
		free(m->peers[i].name);
		free(m->peers[i].peer_url);
	}
	free(m->peers);
	for (size_t i = 0; i < m->n_client_urls; i++)
		free(m->client_urls[i]);
	free(m->client_urls);
	for (size_t i = 0; m->waiters && i < MAX_WAITERS; i++)
		if (m->waiters[i].range != NULL)
			etcdserverpb__range_request__free_unpacked(m->waiters[i].range, NULL);
	free(m->waiters);
	pipeline_free(m);
	gossip_store_free(m);
	watch_hub_free(m);
	lease_free(m);
	if (m->raft != NULL)
		raft_free(m->raft);
	kv_close(m->kv);
	if (m->ls != NULL)
		logstore_close(m->ls);
	net_grpc_server_free(m->grpc);
	net_tls_ctx_free(m->peer_tls.server);
	net_tls_ctx_free(m->peer_tls.client);
	net_tls_ctx_free(m->client_tls.server);
	if (m->lock_fd >= 0)
		close(m->lock_fd); /* releases the lock */
	free(m->name);
	free(m->data_dir);
	free(m);
}

static int tls_contexts(struct srv_member *m, const struct srv_config *cfg, char *err, size_t len)
{
	/* h2 first: gRPC; http/1.1 for /health, /version, /metrics and the JSON gateway */
	static const char *const h2[] = { "h2", "http/1.1" };
	static const char *const raft_proto[] = { "cairn-raft/1" };
	bool client_https = cfg->listen_client_urls.n > 0 && cfg->listen_client_urls.v[0].https;
	bool peer_https = cfg->listen_peer_urls.n > 0 && cfg->listen_peer_urls.v[0].https;
	if (client_https) {
		struct net_tls_config c = {
			.role = NET_TLS_SERVER,
			.cert_file = cfg->client_tls.cert_file,
			.key_file = cfg->client_tls.key_file,
			.trusted_ca_file = cfg->client_tls.trusted_ca_file,
			.client_cert_auth = cfg->client_tls.client_cert_auth,
			.alpn = h2,
			.n_alpn = 2,
		};
		if (net_tls_ctx_new(&c, &m->client_tls.server, err, len) != 0)
			return -1;
	}
	if (peer_https) {
		struct net_tls_config c = {
			.role = NET_TLS_SERVER,
			.flag_prefix = "peer-",
			.cert_file = cfg->peer_tls.cert_file,
			.key_file = cfg->peer_tls.key_file,
			.trusted_ca_file = cfg->peer_tls.trusted_ca_file,
			.client_cert_auth = cfg->peer_tls.client_cert_auth,
			.alpn = raft_proto,
			.n_alpn = 1,
		};
		if (net_tls_ctx_new(&c, &m->peer_tls.server, err, len) != 0)
			return -1;
		c.role = NET_TLS_CLIENT;
		c.client_cert_auth = false;
		if (net_tls_ctx_new(&c, &m->peer_tls.client, err, len) != 0)
			return -1;
	}
	return 0;
}

static int peers_from_config(struct srv_member *m, const struct srv_config *cfg, char *err,
			     size_t len, struct raft_conf *conf)
{
	memset(conf, 0, sizeof *conf);
	m->peers = calloc(cfg->initial_cluster_n ? cfg->initial_cluster_n : 1, sizeof *m->peers);
	if (m->peers == NULL)
		return fail(err, len, -1, "out of memory");
	uint64_t ids[RAFT_MAX_MEMBERS];
	for (size_t i = 0; i < cfg->initial_cluster_n; i++) {
		const struct srv_cluster_entry *e = &cfg->initial_cluster_entries[i];
		uint64_t id = srv_member_id_of(e->url.text, cfg->initial_cluster_token);
		struct peer_info *p = NULL;
		for (size_t k = 0; k < m->n_peers; k++)
			if (strcmp(m->peers[k].name, e->name) == 0)
				p = &m->peers[k]; /* a second URL of the same member */
		if (p != NULL)
			continue;
		if (m->n_peers >= RAFT_MAX_MEMBERS)
			return fail(err, len, -1, "--initial-cluster: more than %d members",
				    RAFT_MAX_MEMBERS);
		p = &m->peers[m->n_peers++];
		p->id = id;
		p->name = strdup(e->name);
		p->peer_url = strdup(e->url.text);
		if (p->name == NULL || p->peer_url == NULL)
			return fail(err, len, -1, "out of memory");
		if (strcmp(e->name, cfg->name) == 0)
			m->id = id;
		conf->members[conf->n].id = id;
		conf->members[conf->n++].role = RAFT_VOTER;
		ids[m->n_peers - 1] = id;
	}
	if (m->id == 0)
		return fail(err, len, -1, "couldn't find local name \"%s\" in the initial cluster",
			    cfg->name);
	m->cluster_id = srv_cluster_id_of(ids, m->n_peers, cfg->initial_cluster_token);
	return 0;
}

/* <data-dir>/members: the cluster as this member was founded with it
 * (cluster id, its own id, each member's id, name and peer URL), written
 * once when the data directory is new, read on every later start: as in
 * etcd, the --initial-* flags count only for a new member. Lines:
 * "cluster <hex>", "self <hex>", "member <hex> <name> <url>". */
static int members_path(const struct srv_member *m, char *buf, size_t len, const char *suffix)
{
	int n = snprintf(buf, len, "%s/members%s", m->data_dir, suffix);
	return n > 0 && (size_t)n < len ? 0 : -1;
}

static int members_write(struct srv_member *m, char *err, size_t len)
{
	char path[4200], tmp[4200];
	if (members_path(m, path, sizeof path, "") || members_path(m, tmp, sizeof tmp, ".tmp"))
		return fail(err, len, -1, "data directory path too long");
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return fail(err, len, -1, "%s: %s", tmp, strerror(errno));
	fprintf(f, "cluster %016" PRIx64 "\nself %016" PRIx64 "\n", m->cluster_id, m->id);
	for (size_t i = 0; i < m->n_peers; i++)
		fprintf(f, "member %016" PRIx64 " %s %s\n", m->peers[i].id, m->peers[i].name,
			m->peers[i].peer_url);
	int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
	bad |= fclose(f) != 0;
	if (bad || rename(tmp, path) != 0)
		return fail(err, len, -1, "%s: %s", path, strerror(errno));
	int dfd = open(m->data_dir, O_RDONLY);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}

/* 1 when read, 0 when there is no file (a new data directory), -1 on error. */
static int members_read(struct srv_member *m, struct raft_conf *conf, char *err, size_t len)
{
	char path[4200], line[4400];
	if (members_path(m, path, sizeof path, ""))
		return fail(err, len, -1, "data directory path too long");
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return errno == ENOENT ? 0 : fail(err, len, -1, "%s: %s", path, strerror(errno));
	memset(conf, 0, sizeof *conf);
	m->peers = calloc(RAFT_MAX_MEMBERS, sizeof *m->peers);
	int rv = m->peers ? 1 : fail(err, len, -1, "out of memory");
	while (rv == 1 && fgets(line, sizeof line, f) != NULL) {
		uint64_t id;
		char name[256], url[4096];
		if (sscanf(line, "cluster %" SCNx64, &id) == 1) {
			m->cluster_id = id;
		} else if (sscanf(line, "self %" SCNx64, &id) == 1) {
			m->id = id;
		} else if (sscanf(line, "member %" SCNx64 " %255s %4095s", &id, name, url) == 3 &&
			   m->n_peers < RAFT_MAX_MEMBERS) {
			struct peer_info *p = &m->peers[m->n_peers++];
			p->id = id;
			p->name = strdup(name);
			p->peer_url = strdup(url);
			if (p->name == NULL || p->peer_url == NULL)
				rv = fail(err, len, -1, "out of memory");
			conf->members[conf->n].id = id;
			conf->members[conf->n++].role = RAFT_VOTER;
		} else {
			rv = fail(err, len, -1, "%s: cannot read the line \"%.80s\"", path, line);
		}
	}
	fclose(f);
	if (rv == 1 && (m->id == 0 || m->cluster_id == 0 || m->n_peers == 0))
		rv = fail(err, len, -1, "%s: incomplete", path);
	return rv;
}

/* Takes <data-dir>/LOCK for the member's lifetime: a second process on the
 * same data directory is refused with a message that says so. */
static int lock_data_dir(struct srv_member *m, char *err, size_t len)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/LOCK", m->data_dir);
	m->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (m->lock_fd < 0)
		return fail(err, len, -1, "%s: %s", path, strerror(errno));
	if (flock(m->lock_fd, LOCK_EX | LOCK_NB) != 0)
		return fail(err, len, -1, "data directory %s is in use by another process",
			    m->data_dir);
	return 0;
}

int srv_member_start(uv_loop_t *loop, const struct srv_config *cfg, struct srv_member **out,
		     char *err, size_t err_len)
{
	*out = NULL;
	struct srv_member *m = calloc(1, sizeof *m);
	if (m == NULL)
		return fail(err, err_len, -1, "out of memory");
	m->loop = loop;
	m->lock_fd = -1;
	srv_metrics_init(&m->metrics);
	m->name = strdup(cfg->name);
	m->data_dir = strdup(cfg->data_dir);
	m->heartbeat_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : 100;
	m->election_ms = cfg->election_ms ? cfg->election_ms : 1000;
	/* Three heartbeats missed in a row, or a quarter of the election timeout if longer: far
	 * beyond a heartbeat's jitter, and still well inside the election timeout. */
	m->silence_ms = 3u * (uint64_t)m->heartbeat_ms;
	if (m->silence_ms < m->election_ms / 4u)
		m->silence_ms = m->election_ms / 4u;
	m->max_request_bytes = cfg->max_request_bytes ? cfg->max_request_bytes : 1572864;
	m->waiters = calloc(MAX_WAITERS, sizeof *m->waiters);
	struct raft_conf conf;
	int rv = m->name && m->data_dir && m->waiters ? 0 : fail(err, err_len, -1, "out of memory");
	if (rv == 0 && mkdir(m->data_dir, 0700) != 0 && errno != EEXIST)
		rv = fail(err, err_len, -1, "cannot create data directory %s: %s", m->data_dir,
			  strerror(errno));
	if (rv == 0)
		rv = lock_data_dir(m, err, err_len);
	/* the peer TLS contexts first: joining a cluster dials its members */
	if (rv == 0 && tls_contexts(m, cfg, err, err_len) != 0)
		rv = -1;
	int known = rv == 0 ? members_read(m, &conf, err, err_len) : -1;
	if (known < 0)
		rv = -1;
	if (rv == 0 && known == 0) {
		/* joining a running cluster: its members say who this one is */
		if (cfg->initial_cluster_state == SRV_CLUSTER_EXISTING)
			rv = cluster_join(m, cfg, err, err_len);
		else
			rv = peers_from_config(m, cfg, err, err_len, &conf);
		if (rv == 0)
			rv = members_write(m, err, err_len);
	}
	if (rv == 0 && logstore_open(m->data_dir, NULL, &m->ls, err, err_len) != 0)
		rv = -1;
	char db[4200];
	snprintf(db, sizeof db, "%s/db", m->data_dir);
	struct kv_options ko = { .quota_bytes = cfg->quota_backend_bytes };
	int kerr = rv == 0 ? kv_open(db, &ko, &m->kv) : 0;
	if (kerr != 0)
		rv = fail(err, err_len, -1, "cannot open the store in %s: %s", db,
			  kv_strerror(kerr));
	struct kv_status ks = { 0 };
	if (rv == 0 && (kerr = kv_status(m->kv, &ks)) != 0)
		rv = fail(err, err_len, -1, "store: %s", kv_strerror(kerr));
	if (rv == 0) {
		struct raft_storage st = logstore_storage(m->ls);
		if (st.last_index(st.ctx) == 0 && cfg->initial_cluster_state == SRV_CLUSTER_NEW) {
			/* a new member of a new cluster: write the founding log */
			int berr = logstore_bootstrap(m->ls, &conf);
			if (berr != 0)
				rv = fail(err, err_len, -1, "bootstrap: %s",
					  logstore_last_error(m->ls));
		}
	}
	if (rv == 0 && ks.cluster_id == 0) {
		struct kv_wtx *w;
		if (kv_txn_begin_write(m->kv, &w) == 0) {
			(void)kv_set_ids(w, m->cluster_id, m->id);
			if (cfg->initial_cluster_state == SRV_CLUSTER_NEW)
				(void)cluster_seed(m, w); /* the founding members' records */
			(void)kv_txn_commit(w, ks.applied_index);
		}
	}
	/* the peers as the store's member table has them now */
	if (rv == 0 && cluster_load_peers(m, err, err_len) != 0)
		rv = -1;
	m->applied = ks.applied_index;
	m->revision = ks.revision;
	m->rng = m->id ^ uv_hrtime();
	if (rv == 0) {
		struct raft_config rc;
		raft_config_init(&rc);
		rc.id = m->id;
		logstore_set_applied(m->ls, ks.applied_index);
		rc.storage = logstore_storage(m->ls);
		rc.rand = rng_next;
		rc.rand_ctx = &m->rng;
		rc.election_ticks = m->election_ms / m->heartbeat_ms;
		if (rc.election_ticks < 2)
			rc.election_ticks = 2;
		rc.heartbeat_ticks = 1;
		rc.applied = ks.applied_index;
		rc.pre_vote = true;
		rc.check_quorum = true;
		rc.max_entry_bytes = m->max_request_bytes + 65536;
		srv_raftwire_limits_init(&m->wire_lim, &rc);
		int r = raft_new(&rc, &m->raft);
		if (r != 0)
			rv = fail(err, err_len, -1, "raft: %s", raft_strerror(r));
	}
	m->snapshot_count = cfg->snapshot_count;
	if (rv == 0 && pipeline_start(m) != 0)
		rv = fail(err, err_len, -1, "cannot start the storage threads");
	if (rv != 0) {
		member_free(m);
		return rv;
	}
	/* From here on, handles: failures go through stop. */
	uv_timer_init(loop, &m->tick);
	m->tick.data = m;
	uv_timer_init(loop, &m->retry);
	m->retry.data = m;
	uv_idle_init(loop, &m->kick);
	m->kick.data = m;
	uv_timer_init(loop, &m->handoff);
	m->handoff.data = m;
	uv_timer_init(loop, &m->campaign);
	m->campaign.data = m;
	uv_timer_init(loop, &m->silence);
	m->silence.data = m;
	struct net_transport_config tc = {
		.cluster_id = m->cluster_id,
		.self_id = m->id,
		.listen_url = cfg->listen_peer_urls.n ? cfg->listen_peer_urls.v[0].text : NULL,
		.on_recv = on_peer_recv,
		.on_peer_down = on_peer_down,
		.log = on_net_log,
		.data = m,
		.on_join = cluster_on_join,
		.on_ask = lease_on_ask,
		.on_answer = lease_on_answer,
	};
	if (m->peer_tls.server != NULL) {
		tc.stream.filter = net_tls_filter_factory;
		tc.stream.filter_ctx = &m->peer_tls;
	}
	int nerr = net_transport_open(loop, &tc, &m->transport);
	for (size_t i = 0; nerr == 0 && i < m->n_peers; i++)
		if (m->peers[i].id != m->id)
			nerr = net_transport_add_peer(m->transport, m->peers[i].id,
						      m->peers[i].peer_url);
	if (nerr != 0)
		rv = fail(err, err_len, -1, "peer transport on %s: %s",
			  tc.listen_url ? tc.listen_url : "(none)", net_strerror(nerr));
	/* etcd's gRPC receive limit: --max-request-bytes plus its 512 KiB of
	 * gRPC overhead (a larger message gets grpc-go's RESOURCE_EXHAUSTED) */
	struct net_grpc_limits gl;
	net_grpc_limits_default(&gl);
	gl.max_recv_message = m->max_request_bytes + NET_GRPC_ETCD_OVERHEAD_BYTES;
	if (rv == 0 && (nerr = net_grpc_server_new(&gl, &m->grpc)) != 0)
		rv = fail(err, err_len, -1, "grpc: %s", net_strerror(nerr));
	if (rv == 0 && ((nerr = kvapi_register(m)) != 0 || (nerr = cluster_register(m)) != 0 ||
			(nerr = watch_register(m)) != 0 || (nerr = lease_register(m)) != 0 ||
			(nerr = maint_register(m)) != 0 || (nerr = auth_register(m)) != 0))
		rv = fail(err, err_len, -1, "grpc: %s", net_strerror(nerr));
	m->client_urls = calloc(cfg->advertise_client_urls.n + 1, sizeof *m->client_urls);
	for (size_t i = 0; rv == 0 && m->client_urls && i < cfg->advertise_client_urls.n; i++)
		if ((m->client_urls[m->n_client_urls] =
			     strdup(cfg->advertise_client_urls.v[i].text)))
			m->n_client_urls++;
	for (size_t i = 0; rv == 0 && i < cfg->listen_client_urls.n && i < MAX_LISTENERS; i++) {
		struct net_grpc_listener_opts lo = { .log = on_net_log,
						     .log_data = m,
						     .on_http1 = http_on_connection,
						     .http1_data = m };
		nerr = net_grpc_listener_open(loop, cfg->listen_client_urls.v[i].text, m->grpc,
					      m->client_tls.server ? &m->client_tls : NULL, &lo,
					      &m->listeners[m->n_listeners]);
		if (nerr != 0)
			rv = fail(err, err_len, -1, "cannot listen on %s: %s",
				  cfg->listen_client_urls.v[i].text, net_strerror(nerr));
		else
			m->n_listeners++;
	}
	/* Gossip last: joining announces this member to the pool. */
	if (rv == 0) {
		struct srv_gossip_options go;
		char gerr[1024] = "";
		srv_gossip_options_from_config(&go, cfg);
		m->gossip_store_members = cfg->gossip_store_members;
		go.name = cfg->name;
		go.advertise_host = gossip_advertise_host(cfg);
		go.sighup = true;
		go.on_event = on_gossip_event;
		go.data = m;
		if (srv_gossip_start(loop, &go, &m->gossip, gerr, sizeof gerr) != 0)
			rv = fail(err, err_len, -1, "%s", gerr);
	}
	*out = m;
	the_member = m;
	if (rv != 0) {
		srv_member_stop(m, NULL, NULL);
		*out = NULL;
		return rv;
	}
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "started");
	srv_log_hex(&l, "member-id", m->id);
	srv_log_hex(&l, "cluster-id", m->cluster_id);
	srv_log_str(&l, "data-dir", m->data_dir);
	srv_log_end(&l);
	uv_timer_start(&m->tick, on_tick, m->heartbeat_ms, m->heartbeat_ms);
	member_kick(m);
	return 0;
}

static void closed_one(struct srv_member *m)
{
	if (--m->closing > 0)
		return;
	void (*stopped)(void *) = m->stopped;
	void *data = m->stopped_data;
	member_free(m);
	if (stopped != NULL)
		stopped(data);
}

static void on_handle_closed(uv_handle_t *h)
{
	closed_one(h->data);
}

static void on_listener_closed(struct net_grpc_listener *l, void *data)
{
	(void)l;
	closed_one(data);
}

static void on_transport_closed(struct net_transport *t)
{
	closed_one(net_transport_data(t));
}

static void on_worker_closed(void *data)
{
	closed_one(data);
}

static void on_gossip_left(void *data)
{
	struct srv_member *m = data;
	m->gossip_left = true;
	member_stop_now(m);
}

void member_stop_now(struct srv_member *m)
{
	if (m->stopping)
		return;
	/* First leave the gossip pool (bounded by a few gossip intervals), so
	 * the others record this member as left rather than dead. */
	if (m->gossip != NULL && !m->gossip_left) {
		if (!m->gossip_leaving) {
			m->gossip_leaving = true;
			if (m->handoff_on && !uv_is_closing((uv_handle_t *)&m->handoff))
				uv_timer_stop(&m->handoff);
			srv_gossip_leave(m->gossip, on_gossip_left, m);
		}
		return;
	}
	m->stopping = true;
	if (m->handoff_on && !uv_is_closing((uv_handle_t *)&m->handoff)) {
		uv_timer_stop(&m->handoff);
	}
	/* answer every waiting client first */
	for (size_t i = 0; m->waiters && i < MAX_WAITERS; i++) {
		struct waiter *w = &m->waiters[i];
		if (w->id != 0) {
			struct net_grpc_call *call = w->call;
			net_grpc_call_set_callbacks(call, NULL, NULL);
			if (w->range != NULL)
				etcdserverpb__range_request__free_unpacked(w->range, NULL);
			memset(w, 0, sizeof *w);
			member_finish_error(call, ST_UNAVAILABLE, "etcdserver: server stopped");
		}
	}
	m->n_waiters = 0;
	watch_hub_stop(m); /* watch streams end before the listeners drain */
	lease_stop(m);     /* so do keepalive streams */
	m->closing = 1; /* held until every close below is started */
	for (size_t i = 0; i < m->n_listeners; i++) {
		m->closing++;
		net_grpc_listener_close(m->listeners[i], 2000, on_listener_closed, m);
	}
	if (m->transport != NULL) {
		m->closing++;
		net_transport_close(m->transport, on_transport_closed);
	}
	if (m->gossip != NULL) {
		m->closing++;
		srv_gossip_stop(m->gossip, on_worker_closed, m);
		m->gossip = NULL;
	}
	m->closing += pipeline_close(m, on_worker_closed);
	m->closing += http_close_all(m, closed_one);
	m->closing += watch_hub_close(m, on_handle_closed);
	uv_handle_t *hs[] = { (uv_handle_t *)&m->tick, (uv_handle_t *)&m->retry,
			      (uv_handle_t *)&m->kick, (uv_handle_t *)&m->handoff,
			      (uv_handle_t *)&m->campaign, (uv_handle_t *)&m->silence };
	for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
		if (hs[i]->loop == m->loop && !uv_is_closing(hs[i])) {
			m->closing++;
			uv_close(hs[i], on_handle_closed);
		}
	}
	closed_one(m);
}

static void on_handoff_timeout(uv_timer_t *t)
{
	struct srv_member *m = t->data;
	srv_log(SRV_LOG_WARN, "leadership-handoff-timeout", NULL);
	member_stop_now(m);
}

/* A leader that stops first hands leadership to its most up-to-date voter
 * among those that answered recently (if none did, it stops at once):
 * TimeoutNow, Raft thesis §3.10, so the cluster does not wait an election
 * timeout for a new leader. It stops once another member leads, or after
 * two election timeouts. */
void srv_member_stop(struct srv_member *m, void (*stopped)(void *data), void *data)
{
	if (m->stopping || m->handoff_on || m->gossip_leaving)
		return;
	m->stopped = stopped;
	m->stopped_data = data;
	struct raft_status rs;
	if (m->raft == NULL) {
		member_stop_now(m);
		return;
	}
	raft_status(m->raft, &rs);
	uint64_t target = 0, best = 0;
	if (rs.state == RAFT_LEADER && raft_conf_voters(&rs.conf) > 1) {
		struct raft_progress_info pr[RAFT_MAX_MEMBERS];
		uint32_t n = raft_progress(m->raft, pr, RAFT_MAX_MEMBERS);
		for (uint32_t i = 0; i < n; i++)
			if (pr[i].id != m->id && raft_conf_role(&rs.conf, pr[i].id) == RAFT_VOTER &&
			    pr[i].recent_active && pr[i].match >= best) {
				best = pr[i].match;
				target = pr[i].id;
			}
	}
	if (target == 0 || raft_transfer_leadership(m->raft, target) != 0) {
		member_stop_now(m);
		return;
	}
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "leadership-handoff");
	srv_log_hex(&l, "to", target);
	srv_log_end(&l);
	m->handoff_on = true;
	uv_timer_start(&m->handoff, on_handoff_timeout, 2 * (uint64_t)m->election_ms, 0);
	member_kick(m);
}

uint64_t srv_member_id(const struct srv_member *m)
{
	return m->id;
}

uint64_t srv_cluster_id(const struct srv_member *m)
{
	return m->cluster_id;
}
