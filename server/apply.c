/* apply.c: one committed Request applied to the store (apply.h). */
#include "apply.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kvconv.h"

/* Packs msg into out->resp. */
static int pack(const ProtobufCMessage *msg, struct apply_result *out)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	out->resp = malloc(n ? n : 1);
	if (out->resp == NULL)
		return KV_ENOMEM;
	out->resp_len = protobuf_c_message_pack(msg, out->resp);
	return out->resp_len == n ? 0 : KV_EIO;
}

static int do_put(struct kv_wtx *w, const Etcdserverpb__PutRequest *in,
		  const Etcdserverpb__ResponseHeader *h, struct kvconv_arena *a,
		  struct apply_result *out)
{
	struct kv_put_req q;
	struct kv_put_resp r;
	Etcdserverpb__PutResponse m;
	kvconv_put_req(in, &q);
	int err = kv_put(w, &q, &r);
	if (err != 0)
		return err;
	err = kvconv_put_resp(&r, h, a, &m);
	if (err == 0)
		err = pack(&m.base, out);
	out->revision = r.revision;
	kv_put_resp_free(&r);
	return err;
}

static int do_delete(struct kv_wtx *w, const Etcdserverpb__DeleteRangeRequest *in,
		     const Etcdserverpb__ResponseHeader *h, struct kvconv_arena *a,
		     struct apply_result *out)
{
	struct kv_delete_req q;
	struct kv_delete_resp r;
	Etcdserverpb__DeleteRangeResponse m;
	kvconv_delete_req(in, &q);
	int err = kv_delete_range(w, &q, &r);
	if (err != 0)
		return err;
	err = kvconv_delete_resp(&r, h, a, &m);
	if (err == 0)
		err = pack(&m.base, out);
	out->revision = r.revision;
	kv_delete_resp_free(&r);
	return err;
}

static int do_txn(struct kv_wtx *w, const Etcdserverpb__TxnRequest *in,
		  const Etcdserverpb__ResponseHeader *h, struct kvconv_arena *a,
		  struct apply_result *out)
{
	struct kv_txn_req q;
	struct kv_txn_resp r;
	Etcdserverpb__TxnResponse m;
	int err = kvconv_txn_req(in, a, &q);
	if (err == 0)
		err = kv_txn(w, &q, &r);
	if (err != 0)
		return err;
	err = kvconv_txn_resp(&r, h, a, &m);
	if (err == 0)
		err = pack(&m.base, out);
	out->revision = r.revision;
	kv_txn_resp_free(&r);
	return err;
}

/* A Range through the log: a Txn holding only it, so that it sees the
 * batch's earlier writes; the answer is the Range's own response. */
static int do_range(struct kv_wtx *w, const Etcdserverpb__RangeRequest *in,
		    const Etcdserverpb__ResponseHeader *h, struct kvconv_arena *a,
		    struct apply_result *out)
{
	struct kv_op op = { .type = KV_OP_RANGE };
	struct kv_txn_req q = { .success = &op, .n_success = 1 };
	struct kv_txn_resp r;
	Etcdserverpb__RangeResponse m;
	kvconv_range_req(in, &op.u.range);
	int err = kv_txn(w, &q, &r);
	if (err != 0)
		return err;
	err = r.n_responses == 1 && r.responses[0].type == KV_OP_RANGE ? 0 : KV_EIO;
	if (err == 0)
		err = kvconv_range_resp(&r.responses[0].u.range, h, a, &m);
	if (err == 0)
		err = pack(&m.base, out);
	out->revision = r.revision;
	kv_txn_resp_free(&r);
	return err;
}

static int current_revision(struct kv_wtx *w, int64_t *rev)
{
	/* a Txn with nothing in it changes nothing and reports the revision */
	struct kv_txn_req q = { 0 };
	struct kv_txn_resp r;
	int err = kv_txn(w, &q, &r);
	if (err == 0)
		*rev = r.revision;
	kv_txn_resp_free(&r);
	return err;
}

static int do_compact(struct kv_wtx *w, const Etcdserverpb__CompactionRequest *in,
		      const Etcdserverpb__ResponseHeader *h, struct kvconv_arena *a,
		      struct apply_result *out)
{
	Etcdserverpb__CompactionResponse m;
	int err = kv_compact(w, in->revision);
	if (err == 0)
		err = current_revision(w, &out->revision);
	if (err != 0)
		return err;
	etcdserverpb__compaction_response__init(&m);
	if ((m.header = kvconv_header(h, out->revision, a)) == NULL)
		return KV_ENOMEM;
	return pack(&m.base, out);
}

static int do_lease_grant(struct kv_wtx *w, const Etcdserverpb__LeaseGrantRequest *in,
			  const Etcdserverpb__ResponseHeader *h, struct kvconv_arena *a,
			  struct apply_result *out)
{
	Etcdserverpb__LeaseGrantResponse m;
	/* the proposer chose the id (never 0) and the TTL (at least etcd's
	 * minimum): applying must not pick anything of its own */
	int err = kv_lease_grant(w, in->id, in->ttl);
	if (err == 0)
		err = current_revision(w, &out->revision);
	if (err != 0)
		return err;
	etcdserverpb__lease_grant_response__init(&m);
	if ((m.header = kvconv_header(h, out->revision, a)) == NULL)
		return KV_ENOMEM;
	m.id = in->id;
	m.ttl = in->ttl;
	return pack(&m.base, out);
}

static int do_lease_revoke(struct kv_wtx *w, const Etcdserverpb__LeaseRevokeRequest *in,
			   const Etcdserverpb__ResponseHeader *h, struct kvconv_arena *a,
			   struct apply_result *out)
{
	Etcdserverpb__LeaseRevokeResponse m;
	int err = kv_lease_revoke(w, in->id, &out->revision);
	if (err != 0)
		return err;
	etcdserverpb__lease_revoke_response__init(&m);
	if ((m.header = kvconv_header(h, out->revision, a)) == NULL)
		return KV_ENOMEM;
	return pack(&m.base, out);
}

static int do_lease_checkpoint(struct kv_wtx *w, const Etcdserverpb__LeaseCheckpointRequest *in,
			       const Etcdserverpb__ResponseHeader *h, struct kvconv_arena *a,
			       struct apply_result *out)
{
	Etcdserverpb__LeaseCheckpointResponse m;
	int err = 0;
	/* a checkpoint of a lease revoked meanwhile is no error: it is gone */
	for (size_t i = 0; i < in->n_checkpoints && (err == 0 || err == KV_ELEASENOTFOUND); i++)
		err = kv_lease_checkpoint(w, in->checkpoints[i]->id,
					  in->checkpoints[i]->remaining_ttl);
	if (err == KV_ELEASENOTFOUND)
		err = 0;
	if (err == 0)
		err = current_revision(w, &out->revision);
	if (err != 0)
		return err;
	etcdserverpb__lease_checkpoint_response__init(&m);
	if ((m.header = kvconv_header(h, out->revision, a)) == NULL)
		return KV_ENOMEM;
	return pack(&m.base, out);
}

/* ---- alarms ------------------------------------------------------------- */

/* Whether a Txn puts on any path (etcd's quota cost of a Txn). */
static bool txn_puts(const Etcdserverpb__TxnRequest *t, unsigned depth)
{
	if (t == NULL || depth > KV_MAX_TXN_DEPTH)
		return false;
	Etcdserverpb__RequestOp **paths[2] = { t->success, t->failure };
	size_t n[2] = { t->n_success, t->n_failure };
	for (int p = 0; p < 2; p++)
		for (size_t i = 0; i < n[p]; i++) {
			const Etcdserverpb__RequestOp *op = paths[p][i];
			if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
				return true;
			if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
			    txn_puts(op->request_txn, depth + 1))
				return true;
		}
	return false;
}

/* etcd's capped applier: while a NOSPACE alarm is raised, a Put, a Txn
 * that puts on any path and a lease grant are refused on every member
 * alike; reads, deletes, compaction and revocations go on. */
static int capped(struct kv_wtx *w, const Cairn__Serverpb__Request *req)
{
	bool puts = req->op_case == CAIRN__SERVERPB__REQUEST__OP_PUT ||
		    req->op_case == CAIRN__SERVERPB__REQUEST__OP_LEASE_GRANT ||
		    (req->op_case == CAIRN__SERVERPB__REQUEST__OP_TXN && txn_puts(req->txn, 0));
	bool on = false;
	if (!puts)
		return 0;
	int err = kv_alarm_active_w(w, ETCDSERVERPB__ALARM_TYPE__NOSPACE, &on);
	return err != 0 ? err : on ? KV_ENOSPACE : 0;
}

/* etcd's AlarmRequest: GET lists the alarms of a type (NONE: all),
 * ACTIVATE raises one and answers it, DEACTIVATE clears one and answers it
 * if it was raised. */
static int do_alarm(struct kv_wtx *w, const Etcdserverpb__AlarmRequest *in,
		    struct apply_result *out)
{
	Etcdserverpb__AlarmResponse m;
	Etcdserverpb__AlarmMember one = ETCDSERVERPB__ALARM_MEMBER__INIT;
	Etcdserverpb__AlarmMember *one_p = &one, **list = NULL;
	struct kv_alarms al = { 0 };
	bool changed = false;
	int err = 0;
	etcdserverpb__alarm_response__init(&m);
	one.memberid = in->memberid;
	one.alarm = in->alarm;
	switch (in->action) {
	case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE:
		err = kv_alarm_set(w, in->memberid, (uint32_t)in->alarm, true, &changed);
		m.n_alarms = 1;
		m.alarms = &one_p;
		break;
	case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE:
		err = kv_alarm_set(w, in->memberid, (uint32_t)in->alarm, false, &changed);
		m.n_alarms = changed ? 1 : 0;
		m.alarms = &one_p;
		break;
	default:
		err = kv_alarms_list_w(w, &al);
		if (err == 0 && al.n > 0) {
			list = calloc(al.n, sizeof *list + sizeof **list);
			if (list == NULL)
				err = KV_ENOMEM;
		}
		for (size_t i = 0; err == 0 && i < al.n; i++) {
			if (in->alarm != ETCDSERVERPB__ALARM_TYPE__NONE &&
			    al.v[i].type != (uint32_t)in->alarm)
				continue;
			Etcdserverpb__AlarmMember *am =
				(Etcdserverpb__AlarmMember *)(list + al.n) + m.n_alarms;
			etcdserverpb__alarm_member__init(am);
			am->memberid = al.v[i].member_id;
			am->alarm = (Etcdserverpb__AlarmType)al.v[i].type;
			list[m.n_alarms++] = am;
		}
		m.alarms = list;
		break;
	}
	/* etcd 3.4 answers Alarm without a header */
	if (err == 0)
		err = current_revision(w, &out->revision);
	if (err == 0)
		err = pack(&m.base, out);
	free(list);
	kv_alarms_free(&al);
	return err;
}

/* ---- membership ------------------------------------------------------- */

const char *const apply_member_errors[] = {
	"etcdserver: member not found",
	"etcdserver: member ID already exist",
	"etcdserver: Peer URLs already exists",
	"etcdserver: too many learner members in cluster",
	"etcdserver: can only promote a learner member",
	"etcdserver: can only promote a learner member which is in sync with leader",
	"etcdserver: re-configuration failed due to not enough started members",
	"etcdserver: given member URLs are invalid",
	"etcdserver: unhealthy cluster",
	"etcdserver: request timed out",
	NULL,
};

enum { ERR_NOT_FOUND, ERR_ID_EXISTS, ERR_URL_EXISTS, ERR_LEARNERS, ERR_NOT_LEARNER };

const char *apply_member_error(const char *msg)
{
	for (size_t i = 0; msg != NULL && apply_member_errors[i] != NULL; i++)
		if (strcmp(msg, apply_member_errors[i]) == 0)
			return apply_member_errors[i];
	return NULL;
}

void apply_members_free(struct apply_members *t)
{
	for (size_t i = 0; i < t->n; i++)
		etcdserverpb__member__free_unpacked(t->v[i], NULL);
	free(t->v);
	if (t->pending != NULL)
		cairn__serverpb__member_change__free_unpacked(t->pending, NULL);
	memset(t, 0, sizeof *t);
}

int apply_members_decode(const struct kv_members *km, struct apply_members *out)
{
	memset(out, 0, sizeof *out);
	out->v = calloc(km->n ? km->n : 1, sizeof *out->v);
	if (out->v == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < km->n; i++) {
		const struct kv_member *r = &km->v[i];
		if (r->id == 0) {
			out->pending =
				cairn__serverpb__member_change__unpack(NULL, r->len, r->data);
			if (out->pending == NULL)
				goto corrupt;
			continue;
		}
		Etcdserverpb__Member *mem = etcdserverpb__member__unpack(NULL, r->len, r->data);
		if (mem == NULL)
			goto corrupt;
		out->v[out->n++] = mem;
	}
	return 0;
corrupt:
	apply_members_free(out);
	return KV_ECORRUPT;
}

int apply_members_load_w(struct kv_wtx *w, struct apply_members *out)
{
	struct kv_members km;
	memset(out, 0, sizeof *out);
	int err = kv_members_list_w(w, &km);
	if (err == 0)
		err = apply_members_decode(&km, out);
	kv_members_free(&km);
	return err;
}

const Etcdserverpb__Member *apply_members_find(const struct apply_members *t, uint64_t id)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i]->id == id)
			return t->v[i];
	return NULL;
}

int apply_member_put(struct kv_wtx *w, const Etcdserverpb__Member *mem)
{
	size_t n = etcdserverpb__member__get_packed_size(mem);
	uint8_t *buf = malloc(n ? n : 1);
	if (buf == NULL)
		return KV_ENOMEM;
	etcdserverpb__member__pack(mem, buf);
	int err = kv_member_put(w, mem->id, buf, n);
	free(buf);
	return err;
}

int apply_members_response(const struct apply_members *t, const Etcdserverpb__ResponseHeader *h,
			   const Etcdserverpb__Member *added, struct apply_result *out)
{
	/* etcd's Cluster answers carry cluster, member and term, no revision */
	Etcdserverpb__ResponseHeader hdr = *h;
	hdr.revision = 0;
	if (added != NULL) {
		Etcdserverpb__MemberAddResponse r = ETCDSERVERPB__MEMBER_ADD_RESPONSE__INIT;
		r.header = &hdr;
		r.member = (Etcdserverpb__Member *)added;
		r.n_members = t->n;
		r.members = t->v;
		return pack(&r.base, out);
	}
	Etcdserverpb__MemberRemoveResponse r = ETCDSERVERPB__MEMBER_REMOVE_RESPONSE__INIT;
	r.header = &hdr;
	r.n_members = t->n;
	r.members = t->v;
	return pack(&r.base, out);
}

static bool urls_taken(const struct apply_members *t, const Etcdserverpb__Member *mem)
{
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i]->id == mem->id)
			continue;
		for (size_t a = 0; a < t->v[i]->n_peerurls; a++)
			for (size_t b = 0; b < mem->n_peerurls; b++)
				if (strcmp(t->v[i]->peerurls[a], mem->peerurls[b]) == 0)
					return true;
	}
	return false;
}

/* etcd's checks of a change against the table, the same on every member:
 * -1 accepted, else the index of the refusal in apply_member_errors. */
static int member_check(struct kv_wtx *w, const struct apply_members *t,
			const Cairn__Serverpb__MemberChange *mc, int *code, int *err)
{
	const Etcdserverpb__Member *mem = mc->member, *cur = apply_members_find(t, mem->id);
	bool removed = false;
	*code = 9; /* FAILED_PRECONDITION, etcd's code for most of these */
	if ((*err = kv_member_removed_w(w, mem->id, &removed)) != 0)
		return -1;
	switch (mc->kind) {
	case CAIRN__SERVERPB__MEMBER_CHANGE__KIND__ADD: {
		if (removed) {
			*code = 5;
			return ERR_NOT_FOUND;
		}
		if (cur != NULL)
			return ERR_ID_EXISTS;
		if (urls_taken(t, mem))
			return ERR_URL_EXISTS;
		size_t learners = 0;
		for (size_t i = 0; i < t->n; i++)
			learners += t->v[i]->islearner != 0;
		if (mem->islearner && learners >= 1) /* etcd's maxLearners */
			return ERR_LEARNERS;
		return -1;
	}
	case CAIRN__SERVERPB__MEMBER_CHANGE__KIND__UPDATE:
		if (cur == NULL) {
			*code = 5;
			return ERR_NOT_FOUND;
		}
		return urls_taken(t, mem) ? ERR_URL_EXISTS : -1;
	case CAIRN__SERVERPB__MEMBER_CHANGE__KIND__REMOVE:
	case CAIRN__SERVERPB__MEMBER_CHANGE__KIND__PROMOTE:
		if (cur == NULL) {
			*code = 5;
			return ERR_NOT_FOUND;
		}
		if (mc->kind == CAIRN__SERVERPB__MEMBER_CHANGE__KIND__PROMOTE && !cur->islearner)
			return ERR_NOT_LEARNER;
		return -1;
	default:
		return -1;
	}
}

/* A member's own attributes: name and client URLs; its peer URLs only when
 * the table has none for it (they change through MemberUpdate). */
static int member_publish(struct kv_wtx *w, const struct apply_members *t,
			  const Etcdserverpb__Member *in)
{
	const Etcdserverpb__Member *cur = apply_members_find(t, in->id);
	if (cur == NULL)
		return 0; /* removed meanwhile, or not added: nothing to publish */
	Etcdserverpb__Member upd = *cur;
	upd.name = in->name;
	upd.n_clienturls = in->n_clienturls;
	upd.clienturls = in->clienturls;
	if (cur->n_peerurls == 0) {
		upd.n_peerurls = in->n_peerurls;
		upd.peerurls = in->peerurls;
	}
	return apply_member_put(w, &upd);
}

static int put_pending(struct kv_wtx *w, const Cairn__Serverpb__MemberChange *pc)
{
	size_t n = cairn__serverpb__member_change__get_packed_size(pc);
	uint8_t *buf = malloc(n ? n : 1);
	if (buf == NULL)
		return KV_ENOMEM;
	cairn__serverpb__member_change__pack(pc, buf);
	int err = kv_member_put(w, 0, buf, n);
	free(buf);
	return err;
}

/* A change asked through the Cluster API is checked here and becomes the
 * pending change (id 0), for the leader to settle (server/cluster.c); an
 * ANSWER settles it, answering the proposer through this Request's id. */
static int do_member(struct kv_wtx *w, const Cairn__Serverpb__Request *req,
		     const Etcdserverpb__ResponseHeader *h, struct apply_result *out)
{
	const Cairn__Serverpb__MemberChange *mc = req->member_change;
	struct apply_members t;
	if (mc->kind != CAIRN__SERVERPB__MEMBER_CHANGE__KIND__ANSWER &&
	    (mc->member == NULL || mc->member->id == 0))
		return KV_EINVAL;
	int err = apply_members_load_w(w, &t);
	if (err != 0)
		return err;
	out->members_changed = true;
	switch (mc->kind) {
	case CAIRN__SERVERPB__MEMBER_CHANGE__KIND__PUBLISH:
		err = member_publish(w, &t, mc->member);
		break;
	case CAIRN__SERVERPB__MEMBER_CHANGE__KIND__ANSWER:
		if (t.pending != NULL && t.pending->proposer == mc->proposer &&
		    t.pending->waiter == mc->waiter) {
			err = kv_member_delete(w, 0);
			if (err == KV_ENOTFOUND)
				err = 0;
		}
		if (err == 0 && mc->code != 0) {
			const char *msg = apply_member_error(mc->message);
			out->code = (int)mc->code;
			out->message = msg ? msg : "etcdserver: request timed out";
		} else if (err == 0) {
			err = current_revision(w, &out->revision);
			if (err == 0)
				err = apply_members_response(&t, h, NULL, out);
		}
		break;
	default: {
		Cairn__Serverpb__MemberChange pc = *mc;
		int code = 0;
		int refusal = member_check(w, &t, mc, &code, &err);
		if (err != 0)
			break;
		if (refusal >= 0) {
			pc.code = (uint32_t)code;
			pc.message = (char *)apply_member_errors[refusal];
		} else if (mc->kind == CAIRN__SERVERPB__MEMBER_CHANGE__KIND__UPDATE) {
			const Etcdserverpb__Member *cur = apply_members_find(&t, mc->member->id);
			Etcdserverpb__Member upd = *cur;
			upd.n_peerurls = mc->member->n_peerurls;
			upd.peerurls = mc->member->peerurls;
			err = apply_member_put(w, &upd);
		}
		if (err == 0)
			err = put_pending(w, &pc);
		break;
	}
	}
	apply_members_free(&t);
	return err;
}

int apply_request(struct kv_wtx *w, const Cairn__Serverpb__Request *req,
		  const Etcdserverpb__ResponseHeader *h, struct apply_result *out)
{
	struct kvconv_arena a = { 0 };
	int err;
	memset(out, 0, sizeof *out);
	out->message = "";
	err = capped(w, req);
	switch (err != 0 ? CAIRN__SERVERPB__REQUEST__OP__NOT_SET : req->op_case) {
	case CAIRN__SERVERPB__REQUEST__OP_PUT:
		err = do_put(w, req->put, h, &a, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_DELETE_RANGE:
		err = do_delete(w, req->delete_range, h, &a, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_TXN:
		err = do_txn(w, req->txn, h, &a, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_COMPACTION:
		err = do_compact(w, req->compaction, h, &a, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_LEASE_GRANT:
		err = do_lease_grant(w, req->lease_grant, h, &a, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_LEASE_REVOKE:
		err = do_lease_revoke(w, req->lease_revoke, h, &a, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_LEASE_CHECKPOINT:
		err = do_lease_checkpoint(w, req->lease_checkpoint, h, &a, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_RANGE:
		err = do_range(w, req->range, h, &a, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_MEMBER_CHANGE:
		err = do_member(w, req, h, out);
		break;
	case CAIRN__SERVERPB__REQUEST__OP_ALARM:
		err = do_alarm(w, req->alarm, out);
		break;
	default:
		if (err == 0)
			err = KV_EINVAL; /* a Request with no operation: refused */
		break;
	}
	kvconv_arena_free(&a);
	int failed = kv_txn_failed(w);
	if (failed != 0 || err == KV_ENOMEM || err == KV_EIO) {
		/* this member failed, not the request: the batch goes */
		apply_result_free(out);
		return failed != 0 ? failed : err;
	}
	if (err != 0) {
		struct kvconv_status st;
		apply_result_free(out);
		kvconv_error(err, &st);
		out->code = st.code;
		out->message = st.message;
	}
	return 0;
}

void apply_result_free(struct apply_result *r)
{
	free(r->resp);
	memset(r, 0, sizeof *r);
	r->message = "";
}
