/* cluster.c: the etcd Cluster calls of a member. */
#include "member_int.h"

static const struct peer_info *peer_by_id(const struct srv_member *m, uint64_t id)
{
	for (size_t i = 0; i < m->n_peers; i++)
		if (m->peers[i].id == id)
			return &m->peers[i];
	return NULL;
}

static void on_msg_member_list(struct net_grpc_call *call, const uint8_t *data, size_t len,
			       void *user)
{
	struct srv_member *m = user;
	struct raft_status rs;
	Etcdserverpb__MemberListResponse out = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	Etcdserverpb__Member mem[RAFT_MAX_MEMBERS], *mp[RAFT_MAX_MEMBERS];
	char *purls[RAFT_MAX_MEMBERS][1];
	(void)data;
	(void)len;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	raft_status(m->raft, &rs);
	member_header_init(m, &h, m->revision);
	out.header = &h;
	for (uint32_t i = 0; i < rs.conf.n; i++) {
		const struct peer_info *p = peer_by_id(m, rs.conf.members[i].id);
		etcdserverpb__member__init(&mem[i]);
		mem[i].id = rs.conf.members[i].id;
		mem[i].islearner = rs.conf.members[i].role == RAFT_LEARNER;
		if (p != NULL) {
			mem[i].name = p->name;
			purls[i][0] = p->peer_url;
			mem[i].n_peerurls = 1;
			mem[i].peerurls = purls[i];
		}
		if (mem[i].id == m->id) {
			mem[i].n_clienturls = m->n_client_urls;
			mem[i].clienturls = m->client_urls;
		}
		mp[i] = &mem[i];
	}
	out.n_members = rs.conf.n;
	out.members = mp;
	member_finish_msg(call, &out.base);
}

static void h_member_list(struct net_grpc_call *call, void *data)
{
	static const struct net_grpc_call_callbacks cbs = { .on_message = on_msg_member_list };
	net_grpc_call_set_callbacks(call, &cbs, data);
}

int cluster_register(struct srv_member *m)
{
	return net_grpc_server_register(m->grpc, "/etcdserverpb.Cluster/MemberList", h_member_list,
					m);
}

int cluster_apply_conf_change(struct srv_member *m, struct kv_wtx *w, const struct raft_entry *e,
			      struct apply_batch *b)
{
	(void)m;
	(void)w;
	(void)e;
	(void)b;
	return 0;
}

void cluster_members_changed(struct srv_member *m)
{
	(void)m;
}
