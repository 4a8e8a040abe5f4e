/* member_int.h: the member's state, shared by the files of one member:
 * member.c (the loop, the storage job, start and stop), kvapi.c (the KV
 * calls), maint.c (the Maintenance calls, alarms and gRPC health), auth.c
 * and cluster.c (the Cluster calls and the membership the store keeps). Everything here runs on the loop thread
 * unless a comment says otherwise. */
#ifndef CAIRN_SERVER_MEMBER_INT_H
#define CAIRN_SERVER_MEMBER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "apply.h"
#include "cairn/request.pb-c.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "grpc.h"
#include "grpc_uv.h"
#include "http.h"
#include "kvstore.h"
#include "logstore.h"
#include "member.h"
#include "peer.h"
#include "raft.h"
#include "raftwire.h"
#include "srv_gossip.h"
#include "tls_filter.h"
#include "worker.h"

#define MAX_WAITERS 65536 /* proposals and reads waiting for an answer */
#define MAX_LISTENERS 16
#define RETRY_MS 100 /* a failed storage job is tried again after this */

enum {
	ST_OK = 0,
	ST_INVALID_ARGUMENT = 3,
	ST_DEADLINE = 4,
	ST_RESOURCE_EXHAUSTED = 8,
	ST_INTERNAL = 13,
	ST_UNAVAILABLE = 14
};

/* A client call waiting for its Request to be applied, or for a read. */
struct waiter {
	uint64_t id; /* 0: free slot */
	struct net_grpc_call *call;
	uint64_t deadline_ms;
	Etcdserverpb__RangeRequest *range; /* reads: the request, unpacked */
};

/* One gRPC method registered by member_register: the gate's data. */
struct member_gate {
	struct srv_member *m;
	net_grpc_handler h;
	bool learner_ok;
};
#define MAX_GATES 96

/* One Request's result, carried back from the storage thread. */
struct result {
	uint64_t id;
	struct apply_result r;
};

struct peer_info {
	uint64_t id;
	char *name;
	char *peer_url;
};

/* What the apply thread does with a batch (pipeline.c). */
enum { BATCH_ENTRIES = 0, BATCH_INSTALL = 1 };

/* A batch for the apply thread: committed entries (copied: the core owns
 * an update's until raft_advance), or a snapshot to install. Results and
 * the store's state after it come back with it. */
struct apply_batch {
	struct srv_job job;
	struct srv_member *m;
	int kind;
	struct apply_batch *next;   /* the loop's queue of batches not yet submitted */
	struct raft_entry *entries; /* BATCH_ENTRIES; data in buf */
	uint32_t n_entries, cap_entries;
	uint8_t *buf;
	size_t buf_len, buf_cap;
	size_t bytes;                   /* counted in apply_bytes */
	struct raft_snapshot_meta snap; /* BATCH_INSTALL */
	int err;
	struct result *res; /* results of this member's Requests */
	size_t n_res, cap_res;
	uint64_t applied;      /* the store's applied index after the batch */
	struct raft_conf conf; /* the configuration as of that index */
	int64_t revision;      /* the store's revision after the batch */
	bool members_changed;  /* the member table changed (cluster.c) */
	bool leases_changed;   /* a lease was granted, revoked or checkpointed (lease.c) */
	struct kv_events events; /* BATCH_ENTRIES: the changes it committed, for watchers */
	bool has_events;
};

/* The storage thread's job for one update: step 2 of the contract. */
struct persist_job {
	struct srv_job job;
	struct srv_member *m;
	struct raft_update u;
	int err;
};

/* The snapshot thread's job: a copy of the store, and the applied index
 * the copy stands for. */
struct snap_copy_job {
	struct srv_job job;
	struct srv_member *m;
	char path[4200];
	int fd;
	uint64_t index;
	int err;
};

/* The configuration from an applied index on, while a copy is taken. */
struct conf_mark {
	uint64_t applied;
	struct raft_conf conf;
};
#define CONF_MARKS 16

/* The storage thread's job for a local snapshot: record it, compact. */
struct snap_commit_job {
	struct srv_job job;
	struct srv_member *m;
	bool mark; /* a mark (no copy: the store is durable by itself), or the copy in fd */
	uint64_t index;
	struct raft_conf conf;
	int fd;
	uint64_t compact_to;
	int err;
};

/* A ReadIndex read confirmed by the core, served once applied >= index. */
struct held_read {
	uint64_t id, index;
};

struct srv_member {
	uv_loop_t *loop;
	char *name;
	char *data_dir;
	uint64_t id, cluster_id;
	uint32_t heartbeat_ms, election_ms;
	uint32_t max_request_bytes;
	/* The leader this follower last heard from, and when (loop clock): a leader silent for
	 * silence_ms is reported down (member.c, check_leader_silence). */
	uint64_t heard_leader, heard_ms;
	uint64_t silence_ms;

	struct logstore *ls;
	struct kv_store *kv;
	struct raft *raft;
	uint64_t rng;

	struct srv_worker *worker;  /* the storage thread: persists */
	struct srv_worker *applier; /* the apply thread */
	struct persist_job job;
	bool job_busy;                         /* an update is out to the storage thread */
	size_t apply_batches, apply_bytes;     /* queued or out to the apply thread */
	struct apply_batch *aq_head, *aq_tail; /* queued, not yet submitted */
	bool apply_busy;                       /* a batch is out to the apply thread */
	unsigned installing;                   /* snapshot installs out: no reads of the store */
	struct srv_worker *snapper;            /* the snapshot thread: copies of the store */
	struct snap_copy_job copyjob;
	struct snap_commit_job snapjob;
	bool snap_busy;    /* a local snapshot is being taken or recorded */
	bool snap_copying; /* the copy runs: no snapshot install starts meanwhile */
	bool snap_copied;  /* the copy is done, waiting for its index to be applied here */
	struct raft_conf conf_applied;      /* the configuration as of m->applied */
	struct conf_mark marks[CONF_MARKS]; /* changes of conf_applied during a copy */
	size_t n_marks;
	uint64_t snapshot_count, snap_index;
	struct held_read *reads; /* MAX_WAITERS */
	size_t n_reads;
	/* the apply thread's own: the store's applied index, the configuration
	 * then (that of the snapshots it takes), and the stop flag */
	uint64_t ap_applied;
	struct raft_conf ap_conf;
	atomic_bool apply_stop;
	uv_timer_t tick; /* every heartbeat */
	uv_timer_t retry;
	uv_timer_t handoff;  /* bounds the leadership handoff at stop */
	uv_timer_t campaign; /* an election soon after the leader is known gone */
	uv_timer_t silence;  /* when the leader's silence would reach silence_ms */
	bool handoff_on;
	uv_idle_t kick; /* runs process() once the current callback returns */
	bool kick_on;

	struct srv_raftwire_limits wire_lim; /* what a peer's message may hold */
	struct net_transport *transport;
	struct net_tls_filter_ctx peer_tls, client_tls;
	struct net_grpc_server *grpc;
	struct member_gate gates[MAX_GATES]; /* member_register */
	size_t n_gates;
	struct net_grpc_listener *listeners[MAX_LISTENERS];
	size_t n_listeners;

	struct peer_info *peers;
	size_t n_peers;
	char **client_urls;
	size_t n_client_urls;

	struct waiter *waiters;
	size_t n_waiters; /* slots in use */
	uint64_t next_seq;
	uint64_t applied;
	int64_t revision;
	uint64_t term, leader;

	int lock_fd; /* <data-dir>/LOCK, flock'ed while the member runs */

	bool stopping;
	int closing; /* handles still to close */
	void (*stopped)(void *data);
	void *stopped_data;

	/* cluster.c: the pending change this leader settled last (its
	 * proposer, waiter, term and when), the last publish, removal */
	uint64_t cl_settle_proposer, cl_settle_waiter, cl_settle_term, cl_settle_at;
	uint64_t cl_published_at;
	bool cl_removed;
	bool cl_quiet; /* no pending change, attributes published: ticks skip the table */

	struct watch_hub *watch; /* watch.c: the Watch streams and their watchers */
	struct lease_srv *lease; /* lease.c: the Lease service and the leader's lease table */

	/* http.c and metrics.c: the HTTP/1.1 connections of the client port and the metrics
	 * /metrics serves (srv_metrics_gauge_set is the hook for watch and lease counts) */
	struct srv_metrics metrics;
	struct hconn *http_conns;
	size_t n_http_conns;
	void (*http_closed)(struct srv_member *m); /* set at stop: each closed connection */

	/* srv_gossip.h: this server's gossip member, under its --name; gossip_store.c turns its
	 * events into /cairn/members/. At stop it leaves the pool before anything else closes. */
	struct srv_gossip *gossip;
	struct gossip_store *gstore; /* gossip_store.c: the leader's reconciler, or NULL */
	bool gossip_store_members;   /* --gossip-store-members */
	bool gossip_leaving, gossip_left;
};

static inline uint64_t now_ms(struct srv_member *m)
{
	return uv_now(m->loop);
}

/* splitmix64's finaliser: a well-spread hash of a 64-bit number. */
static inline uint64_t srv_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* member.c: this follower's turn, from 0, to campaign once `leader` is known gone. The voters
 * other than the leader are ordered by a hash of the term and their ids, an order every follower
 * of that term computes alike and that changes from term to term. */
uint64_t srv_campaign_rank(const struct raft_conf *conf, uint64_t term, uint64_t leader,
			   uint64_t self);

/* Waiting calls, keyed by the member's sequence number (member.c). NULL
 * from add when the table is full. attach makes a cancel of the call
 * remove its waiter. */
struct waiter *member_waiter_add(struct srv_member *m, struct net_grpc_call *call, uint64_t id);
struct waiter *member_waiter_find(struct srv_member *m, uint64_t id);
void member_waiter_remove(struct srv_member *m, struct waiter *w);
void member_waiter_attach(struct waiter *w);

/* Responses. */
void member_header_init(struct srv_member *m, Etcdserverpb__ResponseHeader *h, int64_t rev);
void member_finish_msg(struct net_grpc_call *call, const ProtobufCMessage *msg);
void member_finish_error(struct net_grpc_call *call, int code, const char *msg);
void member_serve_range(struct srv_member *m, struct net_grpc_call *call,
			const Etcdserverpb__RangeRequest *q);

/* Proposes req (packed here) through Raft (member.c): 0, or the raft error
 * (RAFT_ETOOBIG beyond --max-request-bytes, RAFT_ENOMEM, the core's own).
 * index (may be NULL): the entry's log index on the leader, 0 when the
 * proposal was forwarded to it. */
int member_propose(struct srv_member *m, const Cairn__Serverpb__Request *req, uint64_t *index);
/* A client's Request, answered when applied: sets req's id and member id,
 * refuses it as etcd would (too large, over the quota, too many waiting,
 * no leader), else proposes it and attaches the call's waiter. */
void member_propose_call(struct srv_member *m, struct net_grpc_call *call,
			 Cairn__Serverpb__Request *req);

/* A gRPC method table, registered on m->grpc in one call: 0 or a net error.
 * Each handler is called with m as its data, behind a gate that answers as
 * etcd 3.4 does on a learner: UNAVAILABLE "etcdserver: rpc not supported
 * for learner" for every call but Maintenance.Status and Range (which
 * refuses a linearizable read itself, with member_learner_refuses). */
struct member_method {
	const char *path;
	net_grpc_handler h;
};
int member_register(struct srv_member *m, const struct member_method *v, size_t n);
/* True, with the call answered, when this member is a learner. */
bool member_learner_refuses(struct srv_member *m, struct net_grpc_call *call);


/* Takes the next Raft update once the current callback returns
 * (pipeline.c). */
void member_kick(struct srv_member *m);
/* Stops at once (member.c): waiting calls answered, handles closed. */
void member_stop_now(struct srv_member *m);

/* pipeline.c: the storage and apply threads, once the core exists
 * (0 or -1); close starts closing both and returns how many closed(m)
 * calls will follow; free releases the rest after they are closed. */
int pipeline_start(struct srv_member *m);
int pipeline_close(struct srv_member *m, void (*closed)(void *data));
void pipeline_free(struct srv_member *m);

/* Adds a result for the waiter `id` of this member to the batch (apply
 * thread); r is moved in. */
void member_batch_add_result(struct apply_batch *b, uint64_t id, struct apply_result *r);

/* cluster.c, on the apply thread, inside the batch's write transaction w: a
 * committed conf-change entry's effect on the member table the store keeps.
 * May answer a waiting call with member_batch_add_result and sets
 * b->members_changed when the table changed. Returns 0, or a kv error that
 * fails the batch (it is applied again). */
int cluster_apply_conf_change(struct srv_member *m, struct kv_wtx *w, const struct raft_entry *e,
			      struct apply_batch *b);
/* cluster.c, on the loop thread, once a batch that changed the member table
 * (or installed a snapshot) is committed: the member's peer table and the
 * transport's peers follow the store's member table. */
void cluster_members_changed(struct srv_member *m);

/* Registers the KV calls (kvapi.c), the Cluster calls (cluster.c) on
 * m->grpc. 0 or a net error code. */
int kvapi_register(struct srv_member *m);
int cluster_register(struct srv_member *m);
/* The Maintenance calls and grpc.health.v1.Health (maint.c), the Auth
 * calls (auth.c). 0 or a net error code. */
int maint_register(struct srv_member *m);
int auth_register(struct srv_member *m);
/* maint.c: etcd's quota check before a write is proposed: true when the
 * store would pass its quota with `cost` more bytes and req writes (Put, a
 * Txn with a write, a lease grant); the caller refuses the call with
 * NOSPACE, and this member's NOSPACE alarm is proposed (at most once a
 * second). */
bool maint_quota_refuses(struct srv_member *m, const Cairn__Serverpb__Request *req, size_t cost);

/* watch.c: the Watch service. register creates the hub (m->watch, with
 * its idle and timer handles) and registers Watch/Watch; batch hands it an
 * applied batch's events (borrowed for the call) and the store's revision
 * after it; resync follows a snapshot install (every watcher reads the store
 * from its next revision); stop finishes every stream (member stopping);
 * close closes the hub's handles with cb (their data is m) and returns how
 * many; free releases the rest (member_free). Loop thread. */
struct watch_hub;
int watch_register(struct srv_member *m);
void watch_hub_batch(struct srv_member *m, const struct kv_events *ev, int64_t revision);
void watch_hub_resync(struct srv_member *m, int64_t revision);
void watch_hub_stop(struct srv_member *m);
int watch_hub_close(struct srv_member *m, uv_close_cb cb);
void watch_hub_free(struct srv_member *m);

/* cluster.c, at start (before the loop runs): seeds the founding members'
 * records in the first write transaction; joins a running cluster
 * (--initial-cluster-state existing), setting m->cluster_id, m->id and
 * m->peers; takes m->peers from the store's table (refusing a removed
 * member). 0, or -1 with a message in err. */
int cluster_seed(struct srv_member *m, struct kv_wtx *w);
int cluster_join(struct srv_member *m, const struct srv_config *cfg, char *err, size_t len);
int cluster_load_peers(struct srv_member *m, char *err, size_t len);
/* cluster.c: the transport's callback for a new member's join request;
 * and, every tick, the settling of pending changes and the publishing of
 * this member's attributes (loop thread). */
int cluster_on_join(struct net_transport *t, const char *peer_url, struct net_join_answer *out,
		    char *reason, size_t cap);
void cluster_housekeeping(struct srv_member *m);

/* lease.c: the Lease calls (registered with lease_register, which sets
 * m->lease); every heartbeat, the leader's expiry and checkpoints and the
 * deadlines of questions to the leader (lease_tick); the leader as the
 * latest Raft update names it (lease_leader_changed, 0: none); at stop, the
 * open streams answered (lease_stop), the rest freed (lease_free). The
 * transport's callbacks for ASK and ANSWER frames (net/frame.h). */
struct lease_srv;
int lease_register(struct srv_member *m);
void lease_tick(struct srv_member *m);
void lease_leader_changed(struct srv_member *m, uint64_t leader);
/* A batch changed the store's lease table (grant, revoke, checkpoint) or
 * replaced the store: the leader's table follows it at the next heartbeat. */
void lease_store_changed(struct srv_member *m);
/* Entries were applied: a follower's question about a lease this leader had not applied yet
 * when it came is answered now. */
void lease_applied(struct srv_member *m);
void lease_stop(struct srv_member *m);
void lease_free(struct srv_member *m);
void lease_on_ask(struct net_transport *t, uint64_t from, enum net_channel ch, const uint8_t *buf,
		  size_t len);
void lease_on_answer(struct net_transport *t, uint64_t from, enum net_channel ch,
		     const uint8_t *buf, size_t len);

#endif /* CAIRN_SERVER_MEMBER_INT_H */
