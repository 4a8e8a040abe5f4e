/* apply.c: one committed Request applied to the store (apply.h). */
#include "apply.h"

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

int apply_request(struct kv_wtx *w, const Cairn__Serverpb__Request *req,
		  const Etcdserverpb__ResponseHeader *h, struct apply_result *out)
{
	struct kvconv_arena a = { 0 };
	int err;
	memset(out, 0, sizeof *out);
	out->message = "";
	switch (req->op_case) {
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
	default:
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
