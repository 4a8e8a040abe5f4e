/* maint.c: etcd's Maintenance service (Status, Hash, HashKV, Snapshot,
 * Alarm, Defragment, MoveLeader) and the gRPC health service of a member.
 *
 * Alarms are etcd's: (member id, type) pairs applied through Raft
 * (server/apply.c, kept in the store by kvstore/mvcc_alarms.c). A member
 * whose store would pass the quota with a write refuses it and proposes
 * NOSPACE for itself, as etcd's quota check does; while NOSPACE is raised
 * every member refuses Puts, Txns that put and lease grants when it applies
 * them, until an operator clears it (`etcdctl alarm disarm`). */
#include "member_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "grpc/health/v1/health.pb-c.h"
#include "http.h"
#include "kvconv.h"
#include "log.h"
#include "maint.h"

#define SNAP_WAIT_MS 100          /* a snapshot waits for the copy that runs */
#define SNAP_WAIT_MAX_MS 60000    /* ... at most this long */
#define SNAP_MAX_SENDS 4          /* snapshot streams at once */
#define ALARM_RAISE_EVERY_MS 1000 /* NOSPACE proposals of this member */

/* ---- the store's hash ------------------------------------------------------ */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
	return fnv(h, b, 8);
}

int maint_store_hash(struct kv_store *kv, uint32_t *hash, int64_t *revision)
{
	struct kv_hash kh;
	struct kv_lease_list ll = { 0 };
	struct kv_members mm = { 0 };
	struct kv_alarms al = { 0 };
	int err = kv_hash_kv(kv, 0, &kh);
	if (err == 0)
		err = kv_lease_list(kv, &ll);
	if (err == 0)
		err = kv_members_list(kv, &mm);
	if (err == 0)
		err = kv_alarms_list(kv, &al);
	if (err == 0) {
		uint64_t h = 0xcbf29ce484222325ull;
		h = fnv_u64(h, kh.hash);
		h = fnv_u64(h, (uint64_t)kh.revision);
		h = fnv_u64(h, (uint64_t)kh.compacted);
		for (size_t i = 0; i < ll.n; i++) {
			h = fnv_u64(h, (uint64_t)ll.leases[i].id);
			h = fnv_u64(h, (uint64_t)ll.leases[i].ttl);
			h = fnv_u64(h, (uint64_t)ll.leases[i].remaining);
		}
		for (size_t i = 0; i < mm.n; i++) {
			h = fnv_u64(h, mm.v[i].id);
			h = fnv_u64(h, mm.v[i].len);
			h = fnv(h, mm.v[i].data, mm.v[i].len);
		}
		for (size_t i = 0; i < al.n; i++) {
			h = fnv_u64(h, al.v[i].member_id);
			h = fnv_u64(h, al.v[i].type);
		}
		*hash = (uint32_t)h;
		*revision = kh.revision;
	}
	kv_alarms_free(&al);
	kv_members_free(&mm);
	kv_lease_list_free(&ll);
	return err;
}

/* ---- common pieces ------------------------------------------------------------ */

static void finish_kv_error(struct net_grpc_call *call, int err)
{
	struct kvconv_status st;
	kvconv_error(err, &st);
	member_finish_error(call, st.code, st.message);
}

static bool store_readable(struct srv_member *m, struct net_grpc_call *call)
{
	if (m->installing == 0)
		return true;
	member_finish_error(call, ST_UNAVAILABLE, "etcdserver: server is installing a snapshot");
	return false;
}

/* Proposes an AlarmRequest; call NULL: nobody waits for the answer. */
static void propose_alarm(struct srv_member *m, struct net_grpc_call *call,
			  const Etcdserverpb__AlarmRequest *ar)
{
	Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;
	req.op_case = CAIRN__SERVERPB__REQUEST__OP_ALARM;
	req.alarm = (Etcdserverpb__AlarmRequest *)ar;
	if (call != NULL) {
		member_propose_call(m, call, &req);
		return;
	}
	req.member_id = m->id;
	(void)member_propose(m, &req, NULL); /* raised again at the next refusal if lost */
}

static bool alarm_raised(struct srv_member *m, uint64_t member, uint32_t type)
{
	struct kv_alarms al;
	bool found = false;
	if (kv_alarms_list(m->kv, &al) != 0)
		return false;
	for (size_t i = 0; i < al.n; i++)
		if (al.v[i].member_id == member && al.v[i].type == type)
			found = true;
	kv_alarms_free(&al);
	return found;
}

bool maint_quota_refuses(struct srv_member *m, const Cairn__Serverpb__Request *req, size_t cost)
{
	static uint64_t last_raise_ms;
	struct kv_space sp;
	bool puts = req->op_case == CAIRN__SERVERPB__REQUEST__OP_PUT ||
		    req->op_case == CAIRN__SERVERPB__REQUEST__OP_LEASE_GRANT;
	if (req->op_case == CAIRN__SERVERPB__REQUEST__OP_TXN) {
		/* a Put, or a nested Txn (which may hold one), on either path */
		for (size_t i = 0; i < req->txn->n_success && !puts; i++)
			puts = req->txn->success[i]->request_case >=
				       ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT &&
			       req->txn->success[i]->request_case !=
				       ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
		for (size_t i = 0; i < req->txn->n_failure && !puts; i++)
			puts = req->txn->failure[i]->request_case >=
				       ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT &&
			       req->txn->failure[i]->request_case !=
				       ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
	}
	if (!puts || m->installing > 0 || kv_space(m->kv, false, &sp) != 0)
		return false;
	/* the file's size first (cheap); the pages in use when that is not enough */
	if (sp.used_bytes + cost <= sp.quota_bytes)
		return false;
	if (kv_space(m->kv, true, &sp) != 0 || sp.used_bytes + cost <= sp.quota_bytes)
		return false;
	uint64_t now = now_ms(m);
	if (now - last_raise_ms >= ALARM_RAISE_EVERY_MS &&
	    !alarm_raised(m, m->id, ETCDSERVERPB__ALARM_TYPE__NOSPACE)) {
		Etcdserverpb__AlarmRequest ar = ETCDSERVERPB__ALARM_REQUEST__INIT;
		ar.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
		ar.memberid = m->id;
		ar.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
		last_raise_ms = now;
		struct srv_log_line l;
		srv_log_begin(&l, SRV_LOG_WARN, "alarm-raised");
		srv_log_str(&l, "alarm", "NOSPACE");
		srv_log_u64(&l, "used-bytes", sp.used_bytes);
		srv_log_u64(&l, "quota-bytes", sp.quota_bytes);
		srv_log_end(&l);
		propose_alarm(m, NULL, &ar);
	}
	return true;
}

#define HANDLER(name)                                                                              \
	static void h_##name(struct net_grpc_call *call, void *data)                               \
	{                                                                                          \
		static const struct net_grpc_call_callbacks cbs = { .on_message = on_msg_##name }; \
		net_grpc_call_set_callbacks(call, &cbs, data);                                     \
	}

/* ---- Status ---------------------------------------------------------------- */

static void on_msg_status(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct srv_member *m = user;
	struct raft_status rs;
	struct kv_status ks;
	struct kv_space sp = { 0 };
	struct kv_alarms al = { 0 };
	Etcdserverpb__StatusResponse out = ETCDSERVERPB__STATUS_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	(void)data;
	(void)len;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	raft_status(m->raft, &rs);
	bool readable = m->installing == 0;
	if (!readable || kv_status(m->kv, &ks) != 0)
		memset(&ks, 0, sizeof ks);
	if (readable) {
		(void)kv_space(m->kv, true, &sp);
		(void)kv_alarms_list(m->kv, &al);
	}
	member_header_init(m, &h, ks.revision);
	out.header = &h;
	out.version = (char *)SRV_SERVER_VERSION; /* the etcd API level Cairn speaks */
	out.dbsize = (int64_t)sp.file_bytes;
	out.dbsizeinuse = (int64_t)sp.used_bytes;
	out.leader = rs.leader;
	out.raftindex = rs.commit;
	out.raftterm = rs.term;
	out.raftappliedindex = ks.applied_index;
	out.islearner = raft_conf_role(&rs.conf, m->id) == RAFT_LEARNER;
	/* etcd lists "no leader" and each alarm as the alarm's text form */
	char *errs[1 + 64];
	char texts[64][96];
	size_t n = 0;
	if (rs.leader == 0)
		errs[n++] = (char *)"etcdserver: no leader";
	for (size_t i = 0; i < al.n && i < 64; i++) {
		const char *type = al.v[i].type == ETCDSERVERPB__ALARM_TYPE__NOSPACE ? "NOSPACE" :
				   al.v[i].type == ETCDSERVERPB__ALARM_TYPE__CORRUPT ? "CORRUPT" :
										       NULL;
		if (type != NULL)
			snprintf(texts[i], sizeof texts[i], "memberID:%" PRIu64 " alarm:%s ",
				 al.v[i].member_id, type);
		else
			snprintf(texts[i], sizeof texts[i],
				 "memberID:%" PRIu64 " alarm:%" PRIu32 " ", al.v[i].member_id,
				 al.v[i].type);
		errs[n++] = texts[i];
	}
	out.n_errors = n;
	out.errors = errs;
	member_finish_msg(call, &out.base);
	kv_alarms_free(&al);
}
HANDLER(status)

/* ---- Hash, HashKV ---------------------------------------------------------- */

/* Both walk the whole history, which takes seconds on a large store: they
 * run on the snapshot thread (after any copy it is making), never on the
 * loop, holding the store's reader lock so that a snapshot install waits
 * for them. */
struct hash_job {
	struct srv_job job;
	struct srv_member *m;
	struct net_grpc_call *call; /* NULL once the client is gone */
	bool kv;                    /* HashKV, else Hash */
	int64_t rev;                /* HashKV's revision, 0: the current one */
	int err;
	uint32_t hash;
	int64_t revision;  /* the header's */
	int64_t compacted; /* HashKV */
};

static void hash_run(struct srv_job *job)
{
	struct hash_job *j = (struct hash_job *)job;
	struct kv_store *kv = j->m->kv;
	if ((j->err = kv_reader_hold(kv)) != 0)
		return;
	if (!j->kv) {
		j->err = maint_store_hash(kv, &j->hash, &j->revision);
	} else {
		/* etcd: revision 0 is the current one; at or below the compacted
		 * revision "compacted", above the current one "future revision" */
		struct kv_status ks;
		struct kv_hash kh;
		j->err = kv_status(kv, &ks);
		if (j->err == 0 && j->rev > 0 && j->rev <= ks.compacted)
			j->err = KV_ECOMPACTED;
		if (j->err == 0)
			j->err = kv_hash_kv(kv, j->rev > 0 ? j->rev : 0, &kh);
		if (j->err == 0) {
			j->hash = (uint32_t)kh.hash;
			j->revision = ks.revision;
			j->compacted = kh.compacted;
		}
	}
	kv_reader_release(kv);
}

static void hash_done(struct srv_job *job, bool cancelled)
{
	struct hash_job *j = (struct hash_job *)job;
	struct net_grpc_call *call = j->call;
	if (call != NULL) {
		net_grpc_call_set_callbacks(call, NULL, NULL);
		Etcdserverpb__ResponseHeader h;
		member_header_init(j->m, &h, j->revision);
		if (cancelled) {
			member_finish_error(call, ST_UNAVAILABLE, "etcdserver: server stopped");
		} else if (j->err != 0) {
			finish_kv_error(call, j->err);
		} else if (j->kv) {
			Etcdserverpb__HashKVResponse out = ETCDSERVERPB__HASH_KVRESPONSE__INIT;
			out.header = &h;
			out.hash = j->hash;
			/* etcd's store starts with its compacted revision at -1 */
			out.compact_revision = j->compacted > 0 ? j->compacted : -1;
			member_finish_msg(call, &out.base);
		} else {
			Etcdserverpb__HashResponse out = ETCDSERVERPB__HASH_RESPONSE__INIT;
			out.header = &h;
			out.hash = j->hash;
			member_finish_msg(call, &out.base);
		}
	}
	free(j);
}

static void hash_cancel(struct net_grpc_call *call, void *user)
{
	(void)call;
	((struct hash_job *)user)->call = NULL; /* hash_done frees the job */
}

static void hash_start(struct srv_member *m, struct net_grpc_call *call, bool kv, int64_t rev)
{
	if (!store_readable(m, call))
		return;
	struct hash_job *j = calloc(1, sizeof *j);
	if (j == NULL) {
		member_finish_error(call, ST_INTERNAL, "out of memory");
		return;
	}
	j->job.run = hash_run;
	j->job.done = hash_done;
	j->m = m;
	j->call = call;
	j->kv = kv;
	j->rev = rev;
	if (srv_worker_submit(m->snapper, &j->job) != 0) {
		free(j);
		member_finish_error(call, ST_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
		return;
	}
	static const struct net_grpc_call_callbacks cbs = { .on_cancel = hash_cancel };
	net_grpc_call_set_callbacks(call, &cbs, j);
}

static void on_msg_hash(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	(void)data;
	(void)len;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	hash_start(user, call, false, 0);
}
HANDLER(hash)

static void on_msg_hash_kv(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__HashKVRequest *q = etcdserverpb__hash_kvrequest__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	int64_t rev = q->revision;
	etcdserverpb__hash_kvrequest__free_unpacked(q, NULL);
	hash_start(user, call, true, rev);
}
HANDLER(hash_kv)

/* ---- Alarm, Defragment ------------------------------------------------------- */

static void on_msg_alarm(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct srv_member *m = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__AlarmRequest *q = etcdserverpb__alarm_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	propose_alarm(m, call, q);
	etcdserverpb__alarm_request__free_unpacked(q, NULL);
}
HANDLER(alarm)

/* LMDB reuses the pages that compaction frees, so nothing needs rewriting
 * and the member keeps serving: the call reports the space and succeeds
 * (docs/operations.md, "Defragment"). */
static void on_msg_defragment(struct net_grpc_call *call, const uint8_t *data, size_t len,
			      void *user)
{
	struct srv_member *m = user;
	Etcdserverpb__DefragmentResponse out = ETCDSERVERPB__DEFRAGMENT_RESPONSE__INIT;
	struct kv_space sp;
	struct kv_status ks = { 0 };
	(void)data;
	(void)len;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	if (!store_readable(m, call))
		return;
	int err = kv_space(m->kv, true, &sp);
	if (err == 0)
		err = kv_status(m->kv, &ks);
	if (err != 0) {
		finish_kv_error(call, err);
		return;
	}
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "defragment");
	srv_log_u64(&l, "db-size", sp.file_bytes);
	srv_log_u64(&l, "db-size-in-use", sp.used_bytes);
	srv_log_bool(&l, "compaction-pending", ks.compact_target > 0);
	srv_log_end(&l);
	member_finish_msg(call, &out.base); /* no header, as etcd 3.4 answers */
}
HANDLER(defragment)

/* ---- MoveLeader ------------------------------------------------------------- */

/* A transfer asked by a client: answered once the target leads, or with
 * etcd's timeout error. */
struct move {
	struct srv_member *m;
	struct net_grpc_call *call; /* NULL once answered or cancelled */
	uv_timer_t timer;
	uint64_t target, deadline_ms;
};

static void move_closed(uv_handle_t *h)
{
	free(h->data);
}

static void move_end(struct move *mv, int code, const char *msg)
{
	if (mv->call != NULL) {
		struct net_grpc_call *call = mv->call;
		mv->call = NULL;
		net_grpc_call_set_callbacks(call, NULL, NULL);
		if (code == ST_OK) {
			/* no header, as etcd 3.4 answers */
			Etcdserverpb__MoveLeaderResponse out =
				ETCDSERVERPB__MOVE_LEADER_RESPONSE__INIT;
			member_finish_msg(call, &out.base);
		} else {
			member_finish_error(call, code, msg);
		}
	}
	uv_close((uv_handle_t *)&mv->timer, move_closed);
}

static void move_cancel(struct net_grpc_call *call, void *user)
{
	struct move *mv = user;
	(void)call;
	mv->call = NULL;
	move_end(mv, ST_OK, "");
}

static void move_tick(uv_timer_t *t)
{
	struct move *mv = t->data;
	struct srv_member *m = mv->m;
	struct raft_status rs;
	if (m->stopping) {
		move_end(mv, ST_UNAVAILABLE, "etcdserver: server stopped");
		return;
	}
	raft_status(m->raft, &rs);
	if (rs.leader == mv->target) {
		struct srv_log_line l;
		srv_log_begin(&l, SRV_LOG_INFO, "leadership-moved");
		srv_log_hex(&l, "to", mv->target);
		srv_log_end(&l);
		move_end(mv, ST_OK, "");
	} else if (now_ms(m) >= mv->deadline_ms) {
		move_end(mv, ST_DEADLINE,
			 "etcdserver: request timed out, leader transfer took too long");
	}
}

static void on_msg_move_leader(struct net_grpc_call *call, const uint8_t *data, size_t len,
			       void *user)
{
	struct srv_member *m = user;
	struct raft_status rs;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__MoveLeaderRequest *q =
		etcdserverpb__move_leader_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	uint64_t target = q->targetid;
	etcdserverpb__move_leader_request__free_unpacked(q, NULL);
	raft_status(m->raft, &rs);
	if (rs.state != RAFT_LEADER || rs.leader != m->id) {
		member_finish_error(call, 9, "etcdserver: not leader"); /* FAILED_PRECONDITION */
		return;
	}
	if (raft_conf_role(&rs.conf, target) != RAFT_VOTER) {
		member_finish_error(call, 9, "etcdserver: bad leader transferee");
		return;
	}
	struct move *mv = calloc(1, sizeof *mv);
	if (mv == NULL) {
		member_finish_error(call, ST_INTERNAL, "out of memory");
		return;
	}
	mv->m = m;
	mv->call = call;
	mv->target = target;
	mv->deadline_ms =
		now_ms(m) + 5000 + 2 * (uint64_t)m->election_ms; /* etcd's request timeout */
	uv_timer_init(m->loop, &mv->timer);
	mv->timer.data = mv;
	static const struct net_grpc_call_callbacks cbs = { .on_cancel = move_cancel };
	net_grpc_call_set_callbacks(call, &cbs, mv);
	if (target != m->id) {
		int err = raft_transfer_leadership(m->raft, target);
		if (err != 0) {
			move_end(mv, err == RAFT_EUNKNOWNMEMBER ? 9 : ST_UNAVAILABLE,
				 err == RAFT_EUNKNOWNMEMBER ? "etcdserver: bad leader transferee" :
							      raft_strerror(err));
			return;
		}
		struct srv_log_line l;
		srv_log_begin(&l, SRV_LOG_INFO, "leadership-move");
		srv_log_hex(&l, "to", target);
		srv_log_end(&l);
		member_kick(m);
	}
	uv_timer_start(&mv->timer, move_tick, 0, m->heartbeat_ms);
}
HANDLER(move_leader)

/* ---- Snapshot ----------------------------------------------------------------
 * A consistent copy of the store (kv_snapshot_copy_fd, on the snapshot
 * thread, into an unlinked file in the data directory), then streamed in
 * etcd's chunks: remaining_bytes counts what follows each chunk, and a last
 * message carries the SHA-256 of everything before it. The copy runs on the
 * member's snapshot thread, one at a time, beside the apply thread's
 * writes; a snapshot install from the leader waits for it (kv_mvcc.h), and
 * the member's own copy for a follower waits for the thread. */
struct snap_send {
	struct srv_job job; /* the snapshot thread's */
	struct srv_member *m;
	struct net_grpc_call *call; /* NULL once finished or cancelled */
	uv_timer_t timer;           /* waits while another copy runs */
	uint64_t wait_until;
	bool job_out, closing;
	int fd, err;
	uint64_t size, sent;
	EVP_MD_CTX *sha;
	uint8_t chunk[MAINT_SNAPSHOT_CHUNK];
	uint8_t *msg; /* a packed SnapshotResponse */
};

static unsigned snap_sends;

static void snap_closed(uv_handle_t *h)
{
	struct snap_send *s = h->data;
	if (s->fd >= 0)
		close(s->fd);
	EVP_MD_CTX_free(s->sha);
	free(s->msg);
	free(s);
	snap_sends--;
}

/* Frees s once nobody uses it: the call is over and the job is back. */
static void snap_release(struct snap_send *s)
{
	if (s->call != NULL || s->job_out || s->closing)
		return;
	s->closing = true;
	uv_close((uv_handle_t *)&s->timer, snap_closed);
}

static void snap_end(struct snap_send *s, int code, const char *msg)
{
	if (s->call != NULL) {
		struct net_grpc_call *call = s->call;
		s->call = NULL;
		net_grpc_call_set_callbacks(call, NULL, NULL);
		member_finish_error(call, code, msg);
	}
	snap_release(s);
}

static void snap_cancel(struct net_grpc_call *call, void *user)
{
	struct snap_send *s = user;
	(void)call;
	s->call = NULL;
	snap_release(s);
}

/* Sends chunks until the call's queue is full (on_writable resumes). */
static void snap_pump(struct net_grpc_call *call, void *user)
{
	struct snap_send *s = user;
	(void)call;
	while (s->call != NULL) {
		Etcdserverpb__SnapshotResponse r = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
		uint8_t digest[EVP_MAX_MD_SIZE];
		unsigned dlen = 0;
		size_t n = 0;
		bool last = s->sent >= s->size;
		if (!last) {
			uint64_t left = s->size - s->sent;
			n = left < sizeof s->chunk ? (size_t)left : sizeof s->chunk;
			ssize_t k = pread(s->fd, s->chunk, n, (off_t)s->sent);
			if (k != (ssize_t)n) {
				snap_end(s, ST_INTERNAL, "etcdserver: snapshot read failed");
				return;
			}
			r.remaining_bytes = left - n;
			r.blob.data = s->chunk;
			r.blob.len = n;
		} else {
			/* a copy: a send refused with NET_EAGAIN finalizes again */
			EVP_MD_CTX *c = EVP_MD_CTX_new();
			if (c == NULL || EVP_MD_CTX_copy_ex(c, s->sha) != 1 ||
			    EVP_DigestFinal_ex(c, digest, &dlen) != 1 ||
			    dlen != MAINT_SNAPSHOT_SHA_LEN) {
				EVP_MD_CTX_free(c);
				snap_end(s, ST_INTERNAL, "etcdserver: snapshot digest failed");
				return;
			}
			EVP_MD_CTX_free(c);
			r.blob.data = digest;
			r.blob.len = dlen;
		}
		size_t plen = etcdserverpb__snapshot_response__pack(&r, s->msg);
		int err = net_grpc_call_send(s->call, s->msg, plen);
		if (err == NET_EAGAIN)
			return;
		if (err != 0) {
			snap_end(s, ST_INTERNAL, "send failed");
			return;
		}
		if (last) {
			struct net_grpc_call *c = s->call;
			s->call = NULL;
			net_grpc_call_set_callbacks(c, NULL, NULL);
			net_grpc_call_finish(c, ST_OK, "");
			struct srv_log_line l;
			srv_log_begin(&l, SRV_LOG_INFO, "snapshot-sent");
			srv_log_u64(&l, "size", s->size);
			srv_log_end(&l);
			snap_release(s);
			return;
		}
		(void)EVP_DigestUpdate(s->sha, s->chunk, n);
		s->sent += n;
	}
}

static void snap_copy_run(struct srv_job *job)
{
	struct snap_send *s = (struct snap_send *)job;
	struct stat st;
	s->err = kv_snapshot_copy_fd(s->m->kv, s->fd);
	if (s->err == 0 && fstat(s->fd, &st) != 0)
		s->err = KV_EIO;
	if (s->err == 0)
		s->size = (uint64_t)st.st_size;
}

static void snap_copy_done(struct srv_job *job, bool cancelled)
{
	struct snap_send *s = (struct snap_send *)job;
	s->job_out = false;
	if (cancelled || s->err != 0 || s->call == NULL) {
		snap_end(s, ST_UNAVAILABLE,
			 cancelled ? "etcdserver: server stopped" : kv_strerror(s->err));
		return;
	}
	s->sha = EVP_MD_CTX_new();
	if (s->sha == NULL || EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL) != 1) {
		snap_end(s, ST_INTERNAL, "out of memory");
		return;
	}
	static const struct net_grpc_call_callbacks cbs = { .on_cancel = snap_cancel,
							    .on_writable = snap_pump };
	net_grpc_call_set_callbacks(s->call, &cbs, s);
	snap_pump(s->call, s);
}

static void snap_try(uv_timer_t *t)
{
	struct snap_send *s = t->data;
	struct srv_member *m = s->m;
	if (s->call == NULL)
		return;
	if (m->stopping) {
		snap_end(s, ST_UNAVAILABLE, "etcdserver: server stopped");
		return;
	}
	if (srv_worker_pending(m->snapper) > 0) {
		/* the member copies its store for a follower: this copy waits */
		if (now_ms(m) >= s->wait_until)
			snap_end(s, ST_UNAVAILABLE, "etcdserver: request timed out");
		else
			uv_timer_start(&s->timer, snap_try, SNAP_WAIT_MS, 0);
		return;
	}
	char path[4200];
	snprintf(path, sizeof path, "%s/snapshot.send.%" PRIu64 ".tmp", m->data_dir, ++m->next_seq);
	s->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (s->fd < 0) {
		srv_log(SRV_LOG_ERROR, "snapshot-failed", "error", strerror(errno), "path", path,
			NULL);
		snap_end(s, ST_INTERNAL, "etcdserver: cannot create the snapshot file");
		return;
	}
	unlink(path); /* gone with the descriptor, even after a crash */
	s->job.run = snap_copy_run;
	s->job.done = snap_copy_done;
	if (srv_worker_submit(m->snapper, &s->job) != 0) {
		close(s->fd);
		s->fd = -1;
		uv_timer_start(&s->timer, snap_try, SNAP_WAIT_MS, 0);
		return;
	}
	s->job_out = true;
}

static void on_msg_snapshot(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct srv_member *m = user;
	(void)data;
	(void)len;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	if (snap_sends >= SNAP_MAX_SENDS) {
		member_finish_error(call, ST_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
		return;
	}
	struct snap_send *s = calloc(1, sizeof *s);
	size_t cap = MAINT_SNAPSHOT_CHUNK + 64;
	if (s == NULL || (s->msg = malloc(cap)) == NULL) {
		free(s);
		member_finish_error(call, ST_INTERNAL, "out of memory");
		return;
	}
	snap_sends++;
	s->m = m;
	s->call = call;
	s->fd = -1;
	s->wait_until = now_ms(m) + SNAP_WAIT_MAX_MS;
	uv_timer_init(m->loop, &s->timer);
	s->timer.data = s;
	static const struct net_grpc_call_callbacks cbs = { .on_cancel = snap_cancel };
	net_grpc_call_set_callbacks(call, &cbs, s);
	snap_try(&s->timer);
}
HANDLER(snapshot)

/* ---- grpc.health.v1.Health --------------------------------------------------- */

/* SERVING while the member knows a leader and no alarm is raised. */
static void on_msg_health(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct srv_member *m = user;
	struct raft_status rs;
	struct kv_alarms al = { 0 };
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Grpc__Health__V1__HealthCheckRequest *q =
		grpc__health__v1__health_check_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	bool whole = q->service == NULL || q->service[0] == '\0';
	grpc__health__v1__health_check_request__free_unpacked(q, NULL);
	if (!whole) {
		member_finish_error(call, 5, "unknown service"); /* NOT_FOUND, as grpc-go */
		return;
	}
	raft_status(m->raft, &rs);
	bool ok = rs.leader != 0 && !m->stopping;
	if (ok && m->installing == 0 && kv_alarms_list(m->kv, &al) == 0 && al.n > 0)
		ok = false;
	kv_alarms_free(&al);
	Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	out.status = ok ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING :
			  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	member_finish_msg(call, &out.base);
}
HANDLER(health)

static void on_msg_health_watch(struct net_grpc_call *call, const uint8_t *data, size_t len,
				void *user)
{
	(void)data;
	(void)len;
	(void)user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	member_finish_error(call, 12, "grpc.health.v1.Health/Watch is not supported by cairn");
}
HANDLER(health_watch)

int maint_register(struct srv_member *m)
{
	static const struct member_method methods[] = {
		{ "/etcdserverpb.Maintenance/Status", h_status },
		{ "/etcdserverpb.Maintenance/Hash", h_hash },
		{ "/etcdserverpb.Maintenance/HashKV", h_hash_kv },
		{ "/etcdserverpb.Maintenance/Alarm", h_alarm },
		{ "/etcdserverpb.Maintenance/Defragment", h_defragment },
		{ "/etcdserverpb.Maintenance/MoveLeader", h_move_leader },
		{ "/etcdserverpb.Maintenance/Snapshot", h_snapshot },
		{ "/grpc.health.v1.Health/Check", h_health },
		{ "/grpc.health.v1.Health/Watch", h_health_watch },
	};
	return member_register(m, methods, sizeof methods / sizeof methods[0]);
}
