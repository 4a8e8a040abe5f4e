/* kvconv.c: etcd's v3 messages to and from the store's structs (kvconv.h). */
#include "kvconv.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_BYTES 16384
#define ALIGN 16

struct kvconv_chunk {
	struct kvconv_chunk *next;
	size_t used, cap;
	_Alignas(ALIGN) unsigned char data[];
};

void *kvconv_alloc(struct kvconv_arena *a, size_t size)
{
	size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
	struct kvconv_chunk *c = a->head;
	if (c == NULL || c->cap - c->used < size) {
		size_t cap = size > CHUNK_BYTES ? size : CHUNK_BYTES;
		c = malloc(sizeof *c + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = a->head;
		a->head = c;
	}
	void *p = c->data + c->used;
	c->used += size;
	memset(p, 0, size);
	return p;
}

void kvconv_arena_free(struct kvconv_arena *a)
{
	while (a->head != NULL) {
		struct kvconv_chunk *c = a->head;
		a->head = c->next;
		free(c);
	}
}

/* ---- requests ---------------------------------------------------------- */

void kvconv_range_req(const Etcdserverpb__RangeRequest *in, struct kv_range_req *out)
{
	*out = (struct kv_range_req){
		.key = in->key.data,
		.key_len = in->key.len,
		.range_end = in->range_end.data,
		.range_end_len = in->range_end.len,
		.revision = in->revision,
		.limit = in->limit,
		.count_only = in->count_only,
		.keys_only = in->keys_only,
		/* the numbers are etcd's in both (kv_mvcc.h follows rpc.proto) */
		.sort_order = (enum kv_sort_order)in->sort_order,
		.sort_target = (enum kv_sort_target)in->sort_target,
		.min_mod_revision = in->min_mod_revision,
		.max_mod_revision = in->max_mod_revision,
		.min_create_revision = in->min_create_revision,
		.max_create_revision = in->max_create_revision,
	};
}

void kvconv_put_req(const Etcdserverpb__PutRequest *in, struct kv_put_req *out)
{
	*out = (struct kv_put_req){
		.key = in->key.data,
		.key_len = in->key.len,
		.value = in->value.data,
		.value_len = in->value.len,
		.lease = in->lease,
		.prev_kv = in->prev_kv,
		.ignore_value = in->ignore_value,
		.ignore_lease = in->ignore_lease,
	};
}

void kvconv_delete_req(const Etcdserverpb__DeleteRangeRequest *in, struct kv_delete_req *out)
{
	*out = (struct kv_delete_req){
		.key = in->key.data,
		.key_len = in->key.len,
		.range_end = in->range_end.data,
		.range_end_len = in->range_end.len,
		.prev_kv = in->prev_kv,
	};
}

static void compare_conv(const Etcdserverpb__Compare *in, struct kv_compare *out)
{
	*out = (struct kv_compare){
		.result = (enum kv_compare_result)in->result,
		.target = (enum kv_compare_target)in->target,
		.key = in->key.data,
		.key_len = in->key.len,
		.range_end = in->range_end.data,
		.range_end_len = in->range_end.len,
	};
	/* The target names the field compared; a union case that does not
	 * match it leaves the operand at its zero value, as in etcd. */
	switch (in->target_union_case) {
	case ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION:
		out->number = in->target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION ?
				      in->version :
				      0;
		break;
	case ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION:
		out->number = in->target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE ?
				      in->create_revision :
				      0;
		break;
	case ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION:
		out->number = in->target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD ?
				      in->mod_revision :
				      0;
		break;
	case ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE:
		out->number =
			in->target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE ? in->lease : 0;
		break;
	case ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE:
		if (in->target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE) {
			out->value = in->value.data;
			out->value_len = in->value.len;
		}
		break;
	default:
		break;
	}
}

static int txn_conv(const Etcdserverpb__TxnRequest *in, struct kvconv_arena *a, int depth,
		    struct kv_txn_req *out);

static int ops_conv(Etcdserverpb__RequestOp *const *in, size_t n, struct kvconv_arena *a, int depth,
		    const struct kv_op **out)
{
	*out = NULL;
	if (n == 0)
		return 0;
	if (n > KV_MAX_TXN_OPS)
		return KV_ETOOMANYOPS;
	struct kv_op *ops = kvconv_alloc(a, n * sizeof *ops);
	if (ops == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const Etcdserverpb__RequestOp *op = in[i];
		switch (op->request_case) {
		case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
			ops[i].type = KV_OP_RANGE;
			kvconv_range_req(op->request_range, &ops[i].u.range);
			break;
		case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
			ops[i].type = KV_OP_PUT;
			kvconv_put_req(op->request_put, &ops[i].u.put);
			break;
		case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
			ops[i].type = KV_OP_DELETE;
			kvconv_delete_req(op->request_delete_range, &ops[i].u.del);
			break;
		case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN: {
			struct kv_txn_req *t = kvconv_alloc(a, sizeof *t);
			if (t == NULL)
				return KV_ENOMEM;
			int err = txn_conv(op->request_txn, a, depth + 1, t);
			if (err != 0)
				return err;
			ops[i].type = KV_OP_TXN;
			ops[i].u.txn = t;
			break;
		}
		default:
			return KV_EINVAL; /* an op with no request */
		}
	}
	*out = ops;
	return 0;
}

static int txn_conv(const Etcdserverpb__TxnRequest *in, struct kvconv_arena *a, int depth,
		    struct kv_txn_req *out)
{
	memset(out, 0, sizeof *out);
	if (depth > KV_MAX_TXN_DEPTH)
		return KV_EINVAL;
	if (in->n_compare > KV_MAX_TXN_OPS)
		return KV_ETOOMANYOPS;
	if (in->n_compare > 0) {
		struct kv_compare *c = kvconv_alloc(a, in->n_compare * sizeof *c);
		if (c == NULL)
			return KV_ENOMEM;
		for (size_t i = 0; i < in->n_compare; i++)
			compare_conv(in->compare[i], &c[i]);
		out->compares = c;
		out->n_compares = in->n_compare;
	}
	int err = ops_conv(in->success, in->n_success, a, depth, &out->success);
	if (err == 0)
		err = ops_conv(in->failure, in->n_failure, a, depth, &out->failure);
	out->n_success = out->success ? in->n_success : 0;
	out->n_failure = out->failure ? in->n_failure : 0;
	return err;
}

int kvconv_txn_req(const Etcdserverpb__TxnRequest *in, struct kvconv_arena *a,
		   struct kv_txn_req *out)
{
	return txn_conv(in, a, 1, out);
}

/* ---- responses --------------------------------------------------------- */

Etcdserverpb__ResponseHeader *kvconv_header(const Etcdserverpb__ResponseHeader *h, int64_t revision,
					    struct kvconv_arena *a)
{
	Etcdserverpb__ResponseHeader *c = kvconv_alloc(a, sizeof *c);
	if (c == NULL)
		return NULL;
	etcdserverpb__response_header__init(c);
	c->cluster_id = h->cluster_id;
	c->member_id = h->member_id;
	c->raft_term = h->raft_term;
	c->revision = revision;
	return c;
}

Mvccpb__KeyValue *kvconv_kv(const struct kv_kv *kv, struct kvconv_arena *a)
{
	Mvccpb__KeyValue *m = kvconv_alloc(a, sizeof *m);
	if (m == NULL)
		return NULL;
	mvccpb__key_value__init(m);
	m->key.data = kv->key;
	m->key.len = kv->key_len;
	m->value.data = kv->value;
	m->value.len = kv->value_len;
	m->create_revision = kv->create_revision;
	m->mod_revision = kv->mod_revision;
	m->version = kv->version;
	m->lease = kv->lease;
	return m;
}

static int kvs_conv(const struct kv_kv *kvs, size_t n, struct kvconv_arena *a,
		    Mvccpb__KeyValue ***out)
{
	*out = NULL;
	if (n == 0)
		return 0;
	Mvccpb__KeyValue **v = kvconv_alloc(a, n * sizeof *v);
	if (v == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < n; i++)
		if ((v[i] = kvconv_kv(&kvs[i], a)) == NULL)
			return KV_ENOMEM;
	*out = v;
	return 0;
}

int kvconv_range_resp(const struct kv_range_resp *in, const Etcdserverpb__ResponseHeader *h,
		      struct kvconv_arena *a, Etcdserverpb__RangeResponse *out)
{
	etcdserverpb__range_response__init(out);
	if ((out->header = kvconv_header(h, in->revision, a)) == NULL)
		return KV_ENOMEM;
	out->more = in->more;
	out->count = in->count;
	int err = kvs_conv(in->kvs, in->n_kvs, a, &out->kvs);
	out->n_kvs = out->kvs ? in->n_kvs : 0;
	return err;
}

int kvconv_put_resp(const struct kv_put_resp *in, const Etcdserverpb__ResponseHeader *h,
		    struct kvconv_arena *a, Etcdserverpb__PutResponse *out)
{
	etcdserverpb__put_response__init(out);
	if ((out->header = kvconv_header(h, in->revision, a)) == NULL)
		return KV_ENOMEM;
	if (in->has_prev_kv && (out->prev_kv = kvconv_kv(&in->prev_kv, a)) == NULL)
		return KV_ENOMEM;
	return 0;
}

int kvconv_delete_resp(const struct kv_delete_resp *in, const Etcdserverpb__ResponseHeader *h,
		       struct kvconv_arena *a, Etcdserverpb__DeleteRangeResponse *out)
{
	etcdserverpb__delete_range_response__init(out);
	if ((out->header = kvconv_header(h, in->revision, a)) == NULL)
		return KV_ENOMEM;
	out->deleted = in->deleted;
	int err = kvs_conv(in->prev_kvs, in->n_prev_kvs, a, &out->prev_kvs);
	out->n_prev_kvs = out->prev_kvs ? in->n_prev_kvs : 0;
	return err;
}

/* Whether the Txn wrote anything: a put, or a delete that deleted. */
static bool txn_changed(const struct kv_txn_resp *in)
{
	for (size_t i = 0; i < in->n_responses; i++) {
		const struct kv_op_resp *r = &in->responses[i];
		if (r->type == KV_OP_PUT || (r->type == KV_OP_DELETE && r->u.del.deleted > 0) ||
		    (r->type == KV_OP_TXN && r->u.txn != NULL && txn_changed(r->u.txn)))
			return true;
	}
	return false;
}

/* The responses of a Txn with the headers etcd gives them: only a revision,
 * the one each operation saw in order. A read sees `begin` (the revision
 * before the Txn) until an earlier operation of the Txn wrote, begin + 1
 * after; a put is at begin + 1; a delete at begin + 1 once anything was
 * written. A nested Txn's own header is empty. *changed carries "written so
 * far" across nested Txns. */
static int txn_ops_conv(const struct kv_txn_resp *in, int64_t begin, bool *changed,
			struct kvconv_arena *a, Etcdserverpb__TxnResponse *out)
{
	static const Etcdserverpb__ResponseHeader bare = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	out->succeeded = in->succeeded;
	if (in->n_responses == 0)
		return 0;
	Etcdserverpb__ResponseOp **ops = kvconv_alloc(a, in->n_responses * sizeof *ops);
	if (ops == NULL)
		return KV_ENOMEM;
	out->responses = ops;
	for (size_t i = 0; i < in->n_responses; i++) {
		const struct kv_op_resp *r = &in->responses[i];
		Etcdserverpb__ResponseOp *o = kvconv_alloc(a, sizeof *o);
		if (o == NULL)
			return KV_ENOMEM;
		etcdserverpb__response_op__init(o);
		ops[i] = o;
		out->n_responses = i + 1;
		int err = KV_ENOMEM;
		switch (r->type) {
		case KV_OP_RANGE:
			o->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
			o->response_range = kvconv_alloc(a, sizeof *o->response_range);
			if (o->response_range != NULL &&
			    (err = kvconv_range_resp(&r->u.range, &bare, a, o->response_range)) == 0)
				o->response_range->header->revision = begin + *changed;
			break;
		case KV_OP_PUT:
			*changed = true;
			o->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
			o->response_put = kvconv_alloc(a, sizeof *o->response_put);
			if (o->response_put != NULL &&
			    (err = kvconv_put_resp(&r->u.put, &bare, a, o->response_put)) == 0)
				o->response_put->header->revision = begin + 1;
			break;
		case KV_OP_DELETE:
			if (r->u.del.deleted > 0)
				*changed = true;
			o->response_case =
				ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
			o->response_delete_range =
				kvconv_alloc(a, sizeof *o->response_delete_range);
			if (o->response_delete_range != NULL &&
			    (err = kvconv_delete_resp(&r->u.del, &bare, a,
						      o->response_delete_range)) == 0)
				o->response_delete_range->header->revision = begin + *changed;
			break;
		case KV_OP_TXN:
			o->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
			o->response_txn = kvconv_alloc(a, sizeof *o->response_txn);
			if (o->response_txn == NULL || r->u.txn == NULL)
				break;
			etcdserverpb__txn_response__init(o->response_txn);
			if ((o->response_txn->header = kvconv_header(&bare, 0, a)) != NULL)
				err = txn_ops_conv(r->u.txn, begin, changed, a, o->response_txn);
			break;
		}
		if (err != 0)
			return err;
	}
	return 0;
}

int kvconv_txn_resp(const struct kv_txn_resp *in, const Etcdserverpb__ResponseHeader *h,
		    struct kvconv_arena *a, Etcdserverpb__TxnResponse *out)
{
	etcdserverpb__txn_response__init(out);
	if ((out->header = kvconv_header(h, in->revision, a)) == NULL)
		return KV_ENOMEM;
	bool changed = false;
	return txn_ops_conv(in, in->revision - txn_changed(in), &changed, a, out);
}

/* ---- errors ------------------------------------------------------------ */

/* gRPC status codes (net/grpc.h has the enum; server/ keeps its own copy of
 * the few it needs so that this file does not depend on net/). */
enum {
	ST_UNKNOWN = 2,
	ST_INVALID_ARGUMENT = 3,
	ST_NOT_FOUND = 5,
	ST_RESOURCE_EXHAUSTED = 8,
	ST_FAILED_PRECONDITION = 9,
	ST_OUT_OF_RANGE = 11,
	ST_INTERNAL = 13,
	ST_UNAVAILABLE = 14,
	ST_DATA_LOSS = 15,
};

void kvconv_error(int err, struct kvconv_status *out)
{
	out->message = kv_strerror(err);
	switch (err) {
	case KV_EINVAL:
	case KV_ETOOBIG:
	case KV_ETOOMANYOPS:
	case KV_EDUPLICATEKEY:
	case KV_EKEYNOTFOUND:
	case KV_EVALUEPROVIDED:
	case KV_ELEASEPROVIDED:
	case KV_EEMPTYKEY:
		out->code = ST_INVALID_ARGUMENT;
		break;
	case KV_ECOMPACTED:
	case KV_EFUTUREREV:
		out->code = ST_OUT_OF_RANGE;
		break;
	case KV_ENOSPACE:
		out->code = ST_RESOURCE_EXHAUSTED;
		break;
	case KV_ELEASENOTFOUND:
	case KV_ENOTFOUND:
		out->code = ST_NOT_FOUND;
		break;
	case KV_ELEASEEXIST:
		out->code = ST_FAILED_PRECONDITION;
		break;
	case KV_ECORRUPT:
		out->code = ST_DATA_LOSS;
		out->message = "etcdserver: corrupt cluster";
		break;
	case KV_EDISKFULL:
	case KV_ELOCKED:
	case KV_EUNAVAILABLE:
		out->code = ST_UNAVAILABLE;
		break;
	case KV_ENOMEM:
	case KV_EIO:
		out->code = ST_INTERNAL;
		break;
	default:
		out->code = ST_UNKNOWN;
		break;
	}
}
