/* calls.c: libcairn's unary calls (KV, Lease, Cluster.MemberList, Maintenance.Status): encode
 * once into the request's own allocation, send on the next ready connection, retry by the
 * rules of cairn.h, decode the answer into an arena freed when the callback returns.
 *
 * Cost per request: one malloc (struct cl_req with the encoded bytes behind it, and room for a
 * small answer), no scan of anything proportional to the requests in flight. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "etcdserverpb/rpc.pb-c.h"

static const char *const paths[] = {
	[CL_RANGE] = "/etcdserverpb.KV/Range",
	[CL_PUT] = "/etcdserverpb.KV/Put",
	[CL_DELETE] = "/etcdserverpb.KV/DeleteRange",
	[CL_TXN] = "/etcdserverpb.KV/Txn",
	[CL_COMPACT] = "/etcdserverpb.KV/Compact",
	[CL_GRANT] = "/etcdserverpb.Lease/LeaseGrant",
	[CL_REVOKE] = "/etcdserverpb.Lease/LeaseRevoke",
	[CL_TTL] = "/etcdserverpb.Lease/LeaseTimeToLive",
	[CL_LEASES] = "/etcdserverpb.Lease/LeaseLeases",
	[CL_MEMBERS] = "/etcdserverpb.Cluster/MemberList",
	[CL_STATUS] = "/etcdserverpb.Maintenance/Status",
};

/* Calls that change nothing: retried after UNAVAILABLE too. */
static bool kind_readonly(int kind)
{
	return kind == CL_RANGE || kind == CL_TTL || kind == CL_LEASES || kind == CL_MEMBERS ||
	       kind == CL_STATUS;
}

struct cl_sconn {
	struct cl_link link; /* c->sconns */
	struct cairn_client *c;
	struct net_grpc_conn *gc;
	struct cl_req *r;
	char *url;
};

static void dispatch(struct cl_req *r);

/* ---- decoding helpers ---- */

static ProtobufCBinaryData bin(const uint8_t *p, size_t n)
{
	ProtobufCBinaryData b = {n, (uint8_t *)(uintptr_t)p};
	return b;
}

void cl_header(struct cairn_header *out, const void *pb_header)
{
	const Etcdserverpb__ResponseHeader *h = pb_header;
	memset(out, 0, sizeof(*out));
	if (h == NULL)
		return;
	out->cluster_id = h->cluster_id;
	out->member_id = h->member_id;
	out->revision = h->revision;
	out->raft_term = h->raft_term;
}

void cl_kv(struct cairn_kv *out, const void *pbkv)
{
	const Mvccpb__KeyValue *kv = pbkv;
	out->key = kv->key.data;
	out->key_len = kv->key.len;
	out->value = kv->value.data;
	out->value_len = kv->value.len;
	out->create_revision = kv->create_revision;
	out->mod_revision = kv->mod_revision;
	out->version = kv->version;
	out->lease = kv->lease;
}

const struct cairn_kv *cl_kvs(struct cairn_client *c, void *const *pbkvs, size_t n)
{
	if (n == 0)
		return NULL;
	struct cairn_kv *kvs = cl_arena_alloc(&c->dec, n * sizeof(*kvs));
	if (kvs == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		cl_kv(&kvs[i], pbkvs[i]);
	return kvs;
}

static const struct cairn_kv *one_kv(struct cairn_client *c, const Mvccpb__KeyValue *kv)
{
	if (kv == NULL)
		return NULL;
	struct cairn_kv *out = cl_arena_alloc(&c->dec, sizeof(*out));
	if (out != NULL)
		cl_kv(out, kv);
	return out;
}

/* ---- request life ---- */

static void req_unlink(struct cl_req *r)
{
	assert(r->c->inflight > 0);
	assert(r->call == NULL);
	cl_list_del(&r->link);
	r->waiting = false;
	r->c->inflight--;
}

static void req_free(struct cl_req *r)
{
	struct cairn_client *c = r->c;
	if (r->resp != NULL && r->resp != r->resp_inline)
		free(r->resp);
	if (r->slot && c->n_req_cache < CL_REQ_CACHE) {
		r->dn.next = (struct cl_done *)(void *)c->req_cache;
		c->req_cache = r;
		c->n_req_cache++;
		return;
	}
	free(r);
}

void cl_req_cache_free(struct cairn_client *c)
{
	while (c->req_cache != NULL) {
		struct cl_req *r = c->req_cache;
		c->req_cache = (struct cl_req *)(void *)r->dn.next;
		free(r);
	}
	c->n_req_cache = 0;
}

static const char *req_endpoint(const struct cl_req *r)
{
	if (r->sc != NULL)
		return r->sc->url;
	return r->ep != NULL ? r->ep : "";
}

/* The user's callback with an error; r is unlinked and freed after. */
static void req_fail(struct cl_req *r, int code, const char *msg)
{
	struct cairn_status st = {code, msg != NULL ? msg : "", false, req_endpoint(r)};
	st.maybe_applied = !kind_readonly(r->kind) && r->maybe_applied;
	switch (r->kind) {
	case CL_RANGE: ((cairn_range_cb)r->cb)(r->data, &st, NULL); break;
	case CL_PUT: ((cairn_put_cb)r->cb)(r->data, &st, NULL); break;
	case CL_DELETE: ((cairn_delete_cb)r->cb)(r->data, &st, NULL); break;
	case CL_TXN: ((cairn_txn_cb)r->cb)(r->data, &st, NULL); break;
	case CL_COMPACT: ((cairn_header_cb)r->cb)(r->data, &st, NULL); break;
	case CL_GRANT:
	case CL_REVOKE:
	case CL_TTL:
	case CL_LEASES: ((cairn_lease_cb)r->cb)(r->data, &st, NULL); break;
	case CL_MEMBERS: ((cairn_member_list_cb)r->cb)(r->data, &st, NULL); break;
	case CL_STATUS: ((cairn_status_cb)r->cb)(r->data, &st, NULL); break;
	default: break;
	}
}

static void defer_fail(struct cl_req *r, int code, const char *msg)
{
	req_unlink(r);
	r->dcode = code;
	r->dmsg = msg;
	r->dn.kind = CL_DONE_REQ;
	cl_defer(r->c, &r->dn);
}

void cl_req_done_deferred(struct cl_req *r)
{
	req_fail(r, r->dcode, r->dmsg);
	req_free(r);
}

static void fill_range(struct cairn_client *c, struct cairn_range_result *out,
		       const Etcdserverpb__RangeResponse *m)
{
	cl_header(&out->header, m->header);
	out->kvs = cl_kvs(c, (void *const *)m->kvs, m->n_kvs);
	out->n_kvs = out->kvs != NULL ? m->n_kvs : 0;
	out->more = m->more;
	out->count = m->count;
}

static void fill_put(struct cairn_client *c, struct cairn_put_result *out,
		     const Etcdserverpb__PutResponse *m)
{
	cl_header(&out->header, m->header);
	out->prev_kv = one_kv(c, m->prev_kv);
}

static void fill_delete(struct cairn_client *c, struct cairn_delete_result *out,
			const Etcdserverpb__DeleteRangeResponse *m)
{
	cl_header(&out->header, m->header);
	out->deleted = m->deleted;
	out->prev_kvs = cl_kvs(c, (void *const *)m->prev_kvs, m->n_prev_kvs);
	out->n_prev_kvs = out->prev_kvs != NULL ? m->n_prev_kvs : 0;
}

static const char **strs(struct cairn_client *c, char **in, size_t n)
{
	if (n == 0)
		return NULL;
	const char **out = cl_arena_alloc(&c->dec, n * sizeof(*out));
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		out[i] = in[i];
	return out;
}

/* Decodes r's answer and runs the user's callback; false when the answer is not valid. */
static bool req_deliver(struct cl_req *r)
{
	struct cairn_client *c = r->c;
	ProtobufCAllocator *al = &c->dec.pb;
	struct cairn_status st = {0, "", false, req_endpoint(r)};
	size_t n = r->resp_len;
	const uint8_t *b = r->resp;
	switch (r->kind) {
	case CL_RANGE: {
		Etcdserverpb__RangeResponse *m = etcdserverpb__range_response__unpack(al, n, b);
		if (m == NULL)
			return false;
		struct cairn_range_result res;
		fill_range(c, &res, m);
		((cairn_range_cb)r->cb)(r->data, &st, &res);
		break;
	}
	case CL_PUT: {
		Etcdserverpb__PutResponse *m = etcdserverpb__put_response__unpack(al, n, b);
		if (m == NULL)
			return false;
		struct cairn_put_result res;
		fill_put(c, &res, m);
		((cairn_put_cb)r->cb)(r->data, &st, &res);
		break;
	}
	case CL_DELETE: {
		Etcdserverpb__DeleteRangeResponse *m =
			etcdserverpb__delete_range_response__unpack(al, n, b);
		if (m == NULL)
			return false;
		struct cairn_delete_result res;
		fill_delete(c, &res, m);
		((cairn_delete_cb)r->cb)(r->data, &st, &res);
		break;
	}
	case CL_TXN: {
		Etcdserverpb__TxnResponse *m = etcdserverpb__txn_response__unpack(al, n, b);
		if (m == NULL)
			return false;
		struct cairn_txn_result res = {0};
		cl_header(&res.header, m->header);
		res.succeeded = m->succeeded;
		struct cairn_op_result *ops = NULL;
		if (m->n_responses > 0) {
			ops = cl_arena_alloc(&c->dec, m->n_responses * sizeof(*ops));
			if (ops == NULL)
				return false;
			memset(ops, 0, m->n_responses * sizeof(*ops));
		}
		for (size_t i = 0; i < m->n_responses; i++) {
			const Etcdserverpb__ResponseOp *o = m->responses[i];
			switch (o->response_case) {
			case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
				ops[i].type = CAIRN_OP_RANGE;
				fill_range(c, &ops[i].u.range, o->response_range);
				break;
			case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
				ops[i].type = CAIRN_OP_PUT;
				fill_put(c, &ops[i].u.put, o->response_put);
				break;
			case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
				ops[i].type = CAIRN_OP_DELETE;
				fill_delete(c, &ops[i].u.del, o->response_delete_range);
				break;
			default:
				return false; /* a nested txn was never asked for */
			}
		}
		res.results = ops;
		res.n_results = m->n_responses;
		((cairn_txn_cb)r->cb)(r->data, &st, &res);
		break;
	}
	case CL_COMPACT: {
		Etcdserverpb__CompactionResponse *m =
			etcdserverpb__compaction_response__unpack(al, n, b);
		if (m == NULL)
			return false;
		struct cairn_header h;
		cl_header(&h, m->header);
		((cairn_header_cb)r->cb)(r->data, &st, &h);
		break;
	}
	case CL_GRANT:
	case CL_REVOKE:
	case CL_TTL:
	case CL_LEASES: {
		struct cairn_lease_result res = {0};
		if (r->kind == CL_GRANT) {
			Etcdserverpb__LeaseGrantResponse *m =
				etcdserverpb__lease_grant_response__unpack(al, n, b);
			if (m == NULL)
				return false;
			cl_header(&res.header, m->header);
			res.id = m->id;
			res.ttl = m->ttl;
			res.granted_ttl = m->ttl;
		} else if (r->kind == CL_REVOKE) {
			Etcdserverpb__LeaseRevokeResponse *m =
				etcdserverpb__lease_revoke_response__unpack(al, n, b);
			if (m == NULL)
				return false;
			cl_header(&res.header, m->header);
		} else if (r->kind == CL_TTL) {
			Etcdserverpb__LeaseTimeToLiveResponse *m =
				etcdserverpb__lease_time_to_live_response__unpack(al, n, b);
			if (m == NULL)
				return false;
			cl_header(&res.header, m->header);
			res.id = m->id;
			res.ttl = m->ttl;
			res.granted_ttl = m->grantedttl;
			if (m->n_keys > 0) {
				struct cairn_kv *keys =
					cl_arena_alloc(&c->dec, m->n_keys * sizeof(*keys));
				if (keys == NULL)
					return false;
				memset(keys, 0, m->n_keys * sizeof(*keys));
				for (size_t i = 0; i < m->n_keys; i++) {
					keys[i].key = m->keys[i].data;
					keys[i].key_len = m->keys[i].len;
				}
				res.keys = keys;
				res.n_keys = m->n_keys;
			}
		} else {
			Etcdserverpb__LeaseLeasesResponse *m =
				etcdserverpb__lease_leases_response__unpack(al, n, b);
			if (m == NULL)
				return false;
			cl_header(&res.header, m->header);
			if (m->n_leases > 0) {
				int64_t *ids = cl_arena_alloc(&c->dec, m->n_leases * sizeof(*ids));
				if (ids == NULL)
					return false;
				for (size_t i = 0; i < m->n_leases; i++)
					ids[i] = m->leases[i]->id;
				res.leases = ids;
				res.n_leases = m->n_leases;
			}
		}
		((cairn_lease_cb)r->cb)(r->data, &st, &res);
		break;
	}
	case CL_MEMBERS: {
		Etcdserverpb__MemberListResponse *m =
			etcdserverpb__member_list_response__unpack(al, n, b);
		if (m == NULL)
			return false;
		struct cairn_member_list_result res = {0};
		cl_header(&res.header, m->header);
		struct cairn_member *ms = NULL;
		if (m->n_members > 0) {
			ms = cl_arena_alloc(&c->dec, m->n_members * sizeof(*ms));
			if (ms == NULL)
				return false;
		}
		for (size_t i = 0; i < m->n_members; i++) {
			const Etcdserverpb__Member *pm = m->members[i];
			ms[i].id = pm->id;
			ms[i].name = pm->name != NULL ? pm->name : "";
			ms[i].peer_urls = strs(c, pm->peerurls, pm->n_peerurls);
			ms[i].n_peer_urls = ms[i].peer_urls != NULL ? pm->n_peerurls : 0;
			ms[i].client_urls = strs(c, pm->clienturls, pm->n_clienturls);
			ms[i].n_client_urls = ms[i].client_urls != NULL ? pm->n_clienturls : 0;
			ms[i].is_learner = pm->islearner;
		}
		res.members = ms;
		res.n_members = m->n_members;
		((cairn_member_list_cb)r->cb)(r->data, &st, &res);
		break;
	}
	case CL_STATUS: {
		Etcdserverpb__StatusResponse *m = etcdserverpb__status_response__unpack(al, n, b);
		if (m == NULL)
			return false;
		struct cairn_status_result res = {0};
		cl_header(&res.header, m->header);
		res.version = m->version != NULL ? m->version : "";
		res.db_size = m->dbsize;
		res.leader = m->leader;
		res.raft_index = m->raftindex;
		res.raft_term = m->raftterm;
		res.raft_applied_index = m->raftappliedindex;
		res.errors = strs(c, m->errors, m->n_errors);
		res.n_errors = res.errors != NULL ? m->n_errors : 0;
		res.db_size_in_use = m->dbsizeinuse;
		res.is_learner = m->islearner;
		((cairn_status_cb)r->cb)(r->data, &st, &res);
		break;
	}
	default:
		return false;
	}
	return true;
}

/* Forgets an answer kept from an attempt that is being retried. */
static void resp_reset(struct cl_req *r)
{
	if (r->resp != NULL && r->resp != r->resp_inline)
		free(r->resp);
	r->resp = NULL;
	r->resp_len = 0;
	r->got_resp = false;
}

static void unary_on_message(struct net_grpc_ccall *call, const uint8_t *data, size_t len,
			     void *user)
{
	struct cl_req *r = user;
	(void)call;
	if (r->got_resp)
		return; /* a unary call has one answer; the rest is ignored */
	if (len <= CL_RESP_INLINE) {
		r->resp = r->resp_inline;
	} else {
		r->resp = malloc(len);
		if (r->resp == NULL)
			return;
	}
	if (len > 0)
		memcpy(r->resp, data, len);
	r->resp_len = len;
	r->got_resp = true;
}

static void sweep_cb(uv_timer_t *t);

static void to_waiting(struct cl_req *r, uint64_t not_before)
{
	struct cairn_client *c = r->c;
	cl_list_del(&r->link);
	cl_list_push(&c->waiting, &r->link);
	r->waiting = true;
	r->not_before = not_before;
	if (!uv_is_active((uv_handle_t *)&c->sweep))
		uv_timer_start(&c->sweep, sweep_cb, CL_SWEEP_MS, CL_SWEEP_MS);
}

static void sconn_done(struct cl_req *r)
{
	struct cl_sconn *sc = r->sc;
	if (sc != NULL) {
		sc->r = NULL;
		if (sc->gc != NULL)
			net_grpc_conn_close(sc->gc);
	}
}

static void unary_on_close(struct net_grpc_ccall *call, int status, const char *message,
			   void *user)
{
	struct cl_req *r = user;
	struct cairn_client *c = r->c;
	r->call = NULL;
	if (status == NET_GRPC_OK) {
		req_unlink(r);
		if (!r->got_resp || !req_deliver(r))
			req_fail(r, CAIRN_INTERNAL, "cairn: response could not be decoded");
		cl_arena_reset(&c->dec);
		sconn_done(r);
		req_free(r);
		return;
	}
	bool unprocessed = net_grpc_ccall_unprocessed(call);
	/* A sent write without an answer of the server's own (a refusal such as "key not found"
	 * certainly changed nothing) may have been applied. */
	if (!unprocessed && (status == NET_GRPC_UNAVAILABLE || status == NET_GRPC_DEADLINE_EXCEEDED ||
			     status == NET_GRPC_CANCELLED || status == CAIRN_UNKNOWN ||
			     status == CAIRN_INTERNAL || status == CAIRN_DATA_LOSS))
		r->maybe_applied = true;
	uint64_t now = cl_now(c);
	bool time_left = now < r->deadline && r->attempts < CL_MAX_ATTEMPTS && !c->closing;
	if (r->sc == NULL && time_left &&
	    (unprocessed || (kind_readonly(r->kind) && status == NET_GRPC_UNAVAILABLE))) {
		if (unprocessed) {
			/* Elsewhere at once: the other connection may be up. */
			resp_reset(r);
			struct cl_conn *cn = cl_pick(c, r->conn);
			if (cn != NULL && cn != r->conn) {
				dispatch(r);
				return;
			}
		}
		uint64_t wait = (uint64_t)CL_BACKOFF_MIN_MS << (r->attempts < 5 ? r->attempts : 5);
		if (wait > CL_BACKOFF_MAX_MS)
			wait = CL_BACKOFF_MAX_MS;
		resp_reset(r);
		to_waiting(r, now + wait);
		return;
	}
	req_unlink(r);
	req_fail(r, status, message);
	sconn_done(r);
	req_free(r);
}

static const struct net_grpc_ccall_cbs unary_cbs = {unary_on_message, unary_on_close, NULL};

/* Sends r on the next ready connection, or parks it on c->waiting. */
static void dispatch(struct cl_req *r)
{
	struct cairn_client *c = r->c;
	uint64_t now = cl_now(c);
	if (now >= r->deadline) {
		defer_fail(r, CAIRN_DEADLINE_EXCEEDED, "context deadline exceeded");
		return;
	}
	for (size_t tries = 0; tries < c->n_conns; tries++) {
		struct cl_conn *cn = cl_pick(c, NULL);
		if (cn == NULL)
			break;
		struct net_grpc_ccall_opts o = {0};
		o.timeout_ms = r->deadline - now;
		int rc = net_grpc_conn_unary(cn->gc, paths[r->kind], r->buf, r->len, &o, &unary_cbs, r,
					     &r->call);
		if (rc == 0) {
			r->conn = cn;
			r->ep = cl_conn_endpoint(cn);
			r->attempts++;
			if (r->waiting) {
				cl_list_del(&r->link);
				cl_list_push(&c->reqs, &r->link);
				r->waiting = false;
			}
			return;
		}
		r->call = NULL;
		if (rc == NET_ETOOBIG) {
			defer_fail(r, CAIRN_RESOURCE_EXHAUSTED, "request is too large");
			return;
		}
		if (rc == NET_ENOMEM) {
			defer_fail(r, CAIRN_RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
	}
	if (!r->waiting)
		to_waiting(r, now);
}

void cl_req_flush(struct cairn_client *c)
{
	/* Detach first: dispatch() may park a request again. Bounded by the list's length. */
	struct cl_link list;
	if (cl_list_empty(&c->waiting))
		return;
	list = c->waiting;
	list.next->prev = &list;
	list.prev->next = &list;
	cl_list_init(&c->waiting);
	uint64_t now = cl_now(c);
	while (!cl_list_empty(&list)) {
		struct cl_req *r = CL_CONTAINER(list.next, struct cl_req, link);
		cl_list_del(&r->link);
		cl_list_push(&c->waiting, &r->link);
		if (now >= r->deadline) {
			req_unlink(r);
			req_fail(r, CAIRN_DEADLINE_EXCEEDED, "context deadline exceeded");
			req_free(r);
			continue;
		}
		if (r->not_before <= now)
			dispatch(r);
	}
}

static void sweep_cb(uv_timer_t *t)
{
	struct cairn_client *c = t->data;
	if (c->closing)
		return;
	cl_req_flush(c);
	if (cl_list_empty(&c->waiting))
		uv_timer_stop(&c->sweep);
}

void cl_req_sweep(struct cairn_client *c)
{
	sweep_cb(&c->sweep);
}

void cl_req_close_all(struct cairn_client *c)
{
	struct cl_link *heads[2] = {&c->reqs, &c->waiting};
	for (int h = 0; h < 2; h++) {
		while (!cl_list_empty(heads[h])) {
			struct cl_req *r = CL_CONTAINER(heads[h]->next, struct cl_req, link);
			if (r->call != NULL) {
				net_grpc_ccall_cancel(r->call);
				r->call = NULL;
				r->maybe_applied = true;
			}
			if (r->sc != NULL) {
				/* Its connection goes (and is freed) before the deferred callback. */
				r->sc->r = NULL;
				if (r->sc->gc != NULL)
					net_grpc_conn_close(r->sc->gc);
				r->sc = NULL;
			}
			defer_fail(r, CAIRN_CANCELLED, "client is closing");
		}
	}
}

/* ---- starting a request ---- */

static int req_start(struct cairn_client *c, int kind, const ProtobufCMessage *msg,
		     uint64_t timeout_ms, void (*cb)(void), void *data, struct cl_req **out)
{
	if (c->closing)
		return CAIRN_ECLOSED;
	if (c->inflight >= c->max_inflight)
		return CAIRN_ELIMIT;
	size_t len = protobuf_c_message_get_packed_size(msg);
	if (len > CL_MAX_REQUEST)
		return CAIRN_EINVAL;
	/* Most requests fit a slot: those reuse the allocation of an earlier one. */
	struct cl_req *r;
	bool slot = len <= CL_REQ_SLOT;
	if (slot && c->req_cache != NULL) {
		r = c->req_cache;
		c->req_cache = (struct cl_req *)(void *)r->dn.next;
		c->n_req_cache--;
	} else {
		r = malloc(sizeof(*r) + (slot ? CL_REQ_SLOT : len));
		if (r == NULL)
			return CAIRN_ENOMEM;
	}
	memset(r, 0, sizeof(*r));
	r->slot = slot;
	size_t packed = protobuf_c_message_pack(msg, r->buf);
	assert(packed == len);
	(void)packed;
	r->len = len;
	r->c = c;
	r->kind = kind;
	r->cb = cb;
	r->data = data;
	r->deadline = cl_now(c) + (timeout_ms ? timeout_ms : c->request_timeout_ms);
	cl_list_push(&c->reqs, &r->link);
	c->inflight++;
	if (out != NULL)
		*out = r;
	else
		dispatch(r);
	return 0;
}

static bool key_ok(const uint8_t *key, size_t len)
{
	return key != NULL && len > 0 && len <= CL_MAX_KEY;
}

static bool opt_bytes_ok(const uint8_t *p, size_t len)
{
	return (p == NULL && len == 0) || (p != NULL && len > 0 && len <= CL_MAX_KEY);
}

static bool range_opts_ok(const struct cairn_range_opts *o)
{
	return opt_bytes_ok(o->range_end, o->range_end_len) && o->limit >= 0 &&
	       o->sort_order >= 0 && o->sort_order <= 2 && o->sort_target >= 0 &&
	       o->sort_target <= 4;
}

static void range_msg(Etcdserverpb__RangeRequest *m, const uint8_t *key, size_t key_len,
		      const struct cairn_range_opts *o)
{
	m->key = bin(key, key_len);
	m->range_end = bin(o->range_end, o->range_end_len);
	m->limit = o->limit;
	m->revision = o->revision;
	m->sort_order = (Etcdserverpb__RangeRequest__SortOrder)o->sort_order;
	m->sort_target = (Etcdserverpb__RangeRequest__SortTarget)o->sort_target;
	m->serializable = o->serializable;
	m->keys_only = o->keys_only;
	m->count_only = o->count_only;
	m->min_mod_revision = o->min_mod_revision;
	m->max_mod_revision = o->max_mod_revision;
	m->min_create_revision = o->min_create_revision;
	m->max_create_revision = o->max_create_revision;
}

int cairn_range(struct cairn_client *c, const uint8_t *key, size_t key_len,
		const struct cairn_range_opts *opts, cairn_range_cb cb, void *data)
{
	static const struct cairn_range_opts defaults;
	const struct cairn_range_opts *o = opts != NULL ? opts : &defaults;
	if (c == NULL || cb == NULL || !key_ok(key, key_len) || !range_opts_ok(o))
		return CAIRN_EINVAL;
	Etcdserverpb__RangeRequest m = ETCDSERVERPB__RANGE_REQUEST__INIT;
	range_msg(&m, key, key_len, o);
	return req_start(c, CL_RANGE, &m.base, o->timeout_ms, (void (*)(void))cb, data, NULL);
}

int cairn_put(struct cairn_client *c, const uint8_t *key, size_t key_len, const uint8_t *value,
	      size_t value_len, const struct cairn_put_opts *opts, cairn_put_cb cb, void *data)
{
	static const struct cairn_put_opts defaults;
	const struct cairn_put_opts *o = opts != NULL ? opts : &defaults;
	if (c == NULL || cb == NULL || !key_ok(key, key_len) || (value == NULL && value_len > 0) ||
	    value_len > CL_MAX_REQUEST)
		return CAIRN_EINVAL;
	Etcdserverpb__PutRequest m = ETCDSERVERPB__PUT_REQUEST__INIT;
	m.key = bin(key, key_len);
	m.value = bin(value, value_len);
	m.lease = o->lease;
	m.prev_kv = o->prev_kv;
	m.ignore_value = o->ignore_value;
	m.ignore_lease = o->ignore_lease;
	return req_start(c, CL_PUT, &m.base, o->timeout_ms, (void (*)(void))cb, data, NULL);
}

int cairn_delete(struct cairn_client *c, const uint8_t *key, size_t key_len,
		 const struct cairn_delete_opts *opts, cairn_delete_cb cb, void *data)
{
	static const struct cairn_delete_opts defaults;
	const struct cairn_delete_opts *o = opts != NULL ? opts : &defaults;
	if (c == NULL || cb == NULL || !key_ok(key, key_len) ||
	    !opt_bytes_ok(o->range_end, o->range_end_len))
		return CAIRN_EINVAL;
	Etcdserverpb__DeleteRangeRequest m = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	m.key = bin(key, key_len);
	m.range_end = bin(o->range_end, o->range_end_len);
	m.prev_kv = o->prev_kv;
	return req_start(c, CL_DELETE, &m.base, o->timeout_ms, (void (*)(void))cb, data, NULL);
}

#define CL_TXN_MAX_OPS 4096

/* Builds the RequestOp array of one branch in the encoding arena. */
static Etcdserverpb__RequestOp **txn_ops(struct cl_arena *a, const struct cairn_op *ops, size_t n,
					 int *err)
{
	if (n == 0)
		return NULL;
	Etcdserverpb__RequestOp **out = cl_arena_alloc(a, n * sizeof(*out));
	if (out == NULL) {
		*err = CAIRN_ENOMEM;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		const struct cairn_op *op = &ops[i];
		Etcdserverpb__RequestOp *ro = cl_arena_alloc(a, sizeof(*ro));
		if (ro == NULL) {
			*err = CAIRN_ENOMEM;
			return NULL;
		}
		etcdserverpb__request_op__init(ro);
		out[i] = ro;
		if (!key_ok(op->key, op->key_len) || !opt_bytes_ok(op->range_end, op->range_end_len)) {
			*err = CAIRN_EINVAL;
			return NULL;
		}
		switch (op->type) {
		case CAIRN_OP_RANGE: {
			Etcdserverpb__RangeRequest *m = cl_arena_alloc(a, sizeof(*m));
			if (m == NULL) {
				*err = CAIRN_ENOMEM;
				return NULL;
			}
			if (!range_opts_ok(&op->range)) {
				*err = CAIRN_EINVAL;
				return NULL;
			}
			etcdserverpb__range_request__init(m);
			struct cairn_range_opts ro2 = op->range;
			ro2.range_end = op->range_end;
			ro2.range_end_len = op->range_end_len;
			range_msg(m, op->key, op->key_len, &ro2);
			ro->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
			ro->request_range = m;
			break;
		}
		case CAIRN_OP_PUT: {
			Etcdserverpb__PutRequest *m = cl_arena_alloc(a, sizeof(*m));
			if (m == NULL) {
				*err = CAIRN_ENOMEM;
				return NULL;
			}
			if (op->value == NULL && op->value_len > 0) {
				*err = CAIRN_EINVAL;
				return NULL;
			}
			etcdserverpb__put_request__init(m);
			m->key = bin(op->key, op->key_len);
			m->value = bin(op->value, op->value_len);
			m->lease = op->lease;
			m->prev_kv = op->prev_kv;
			ro->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
			ro->request_put = m;
			break;
		}
		case CAIRN_OP_DELETE: {
			Etcdserverpb__DeleteRangeRequest *m = cl_arena_alloc(a, sizeof(*m));
			if (m == NULL) {
				*err = CAIRN_ENOMEM;
				return NULL;
			}
			etcdserverpb__delete_range_request__init(m);
			m->key = bin(op->key, op->key_len);
			m->range_end = bin(op->range_end, op->range_end_len);
			m->prev_kv = op->prev_kv;
			ro->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
			ro->request_delete_range = m;
			break;
		}
		default:
			*err = CAIRN_EINVAL;
			return NULL;
		}
	}
	return out;
}

int cairn_txn(struct cairn_client *c, const struct cairn_txn *txn, cairn_txn_cb cb, void *data)
{
	if (c == NULL || txn == NULL || cb == NULL ||
	    (txn->n_compare > 0 && txn->compare == NULL) ||
	    (txn->n_success > 0 && txn->success == NULL) ||
	    (txn->n_failure > 0 && txn->failure == NULL) || txn->n_compare > CL_TXN_MAX_OPS ||
	    txn->n_success > CL_TXN_MAX_OPS || txn->n_failure > CL_TXN_MAX_OPS)
		return CAIRN_EINVAL;
	struct cl_arena *a = &c->enc;
	int err = 0;
	Etcdserverpb__TxnRequest m = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__Compare *cmps = NULL, **cmpp = NULL;
	if (txn->n_compare > 0) {
		cmps = cl_arena_alloc(a, txn->n_compare * sizeof(*cmps));
		cmpp = cl_arena_alloc(a, txn->n_compare * sizeof(*cmpp));
		if (cmps == NULL || cmpp == NULL) {
			err = CAIRN_ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < txn->n_compare; i++) {
		const struct cairn_compare *k = &txn->compare[i];
		Etcdserverpb__Compare *pc = &cmps[i];
		etcdserverpb__compare__init(pc);
		cmpp[i] = pc;
		if (!key_ok(k->key, k->key_len) || !opt_bytes_ok(k->range_end, k->range_end_len) ||
		    k->result < 0 || k->result > 3 || k->target < 0 || k->target > 4 ||
		    (k->value == NULL && k->value_len > 0)) {
			err = CAIRN_EINVAL;
			goto out;
		}
		pc->result = (Etcdserverpb__Compare__CompareResult)k->result;
		pc->target = (Etcdserverpb__Compare__CompareTarget)k->target;
		pc->key = bin(k->key, k->key_len);
		pc->range_end = bin(k->range_end, k->range_end_len);
		switch (k->target) {
		case CAIRN_CMP_VERSION:
			pc->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
			pc->version = k->number;
			break;
		case CAIRN_CMP_CREATE:
			pc->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
			pc->create_revision = k->number;
			break;
		case CAIRN_CMP_MOD:
			pc->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
			pc->mod_revision = k->number;
			break;
		case CAIRN_CMP_VALUE:
			pc->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
			pc->value = bin(k->value, k->value_len);
			break;
		default:
			pc->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
			pc->lease = k->number;
			break;
		}
	}
	m.n_compare = txn->n_compare;
	m.compare = cmpp;
	m.success = txn_ops(a, txn->success, txn->n_success, &err);
	if (err != 0)
		goto out;
	m.n_success = txn->n_success;
	m.failure = txn_ops(a, txn->failure, txn->n_failure, &err);
	if (err != 0)
		goto out;
	m.n_failure = txn->n_failure;
	err = req_start(c, CL_TXN, &m.base, txn->timeout_ms, (void (*)(void))cb, data, NULL);
out:
	cl_arena_reset(a);
	return err;
}

int cairn_compact(struct cairn_client *c, int64_t revision, bool physical, cairn_header_cb cb,
		  void *data)
{
	if (c == NULL || cb == NULL || revision <= 0)
		return CAIRN_EINVAL;
	Etcdserverpb__CompactionRequest m = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
	m.revision = revision;
	m.physical = physical;
	return req_start(c, CL_COMPACT, &m.base, 0, (void (*)(void))cb, data, NULL);
}

int cairn_lease_grant(struct cairn_client *c, int64_t ttl, int64_t id, cairn_lease_cb cb,
		      void *data)
{
	if (c == NULL || cb == NULL || ttl <= 0 || id < 0)
		return CAIRN_EINVAL;
	Etcdserverpb__LeaseGrantRequest m = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
	m.ttl = ttl;
	m.id = id;
	return req_start(c, CL_GRANT, &m.base, 0, (void (*)(void))cb, data, NULL);
}

int cairn_lease_revoke(struct cairn_client *c, int64_t id, cairn_lease_cb cb, void *data)
{
	if (c == NULL || cb == NULL || id <= 0)
		return CAIRN_EINVAL;
	Etcdserverpb__LeaseRevokeRequest m = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
	m.id = id;
	return req_start(c, CL_REVOKE, &m.base, 0, (void (*)(void))cb, data, NULL);
}

int cairn_lease_ttl(struct cairn_client *c, int64_t id, bool keys, cairn_lease_cb cb, void *data)
{
	if (c == NULL || cb == NULL || id <= 0)
		return CAIRN_EINVAL;
	Etcdserverpb__LeaseTimeToLiveRequest m = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
	m.id = id;
	m.keys = keys;
	return req_start(c, CL_TTL, &m.base, 0, (void (*)(void))cb, data, NULL);
}

int cairn_lease_list(struct cairn_client *c, cairn_lease_cb cb, void *data)
{
	if (c == NULL || cb == NULL)
		return CAIRN_EINVAL;
	Etcdserverpb__LeaseLeasesRequest m = ETCDSERVERPB__LEASE_LEASES_REQUEST__INIT;
	return req_start(c, CL_LEASES, &m.base, 0, (void (*)(void))cb, data, NULL);
}

int cairn_member_list(struct cairn_client *c, cairn_member_list_cb cb, void *data)
{
	if (c == NULL || cb == NULL)
		return CAIRN_EINVAL;
	Etcdserverpb__MemberListRequest m = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
	return req_start(c, CL_MEMBERS, &m.base, 0, (void (*)(void))cb, data, NULL);
}

/* ---- Status of one named endpoint, on a connection of its own ---- */

static void sconn_on_closed(struct net_grpc_conn *gc, int err, void *data)
{
	struct cl_sconn *sc = data;
	struct cairn_client *c = sc->c;
	(void)gc;
	(void)err;
	sc->gc = NULL;
	cl_list_del(&sc->link);
	free(sc->url);
	free(sc);
	cl_maybe_finish(c);
}

static size_t ep_trim(const char *s)
{
	size_t n = strlen(s);
	if (n > 0 && s[n - 1] == '/')
		n--;
	return n;
}

int cairn_status_get(struct cairn_client *c, const char *endpoint, cairn_status_cb cb, void *data)
{
	if (c == NULL || cb == NULL)
		return CAIRN_EINVAL;
	Etcdserverpb__StatusRequest m = ETCDSERVERPB__STATUS_REQUEST__INIT;
	if (endpoint == NULL)
		return req_start(c, CL_STATUS, &m.base, 0, (void (*)(void))cb, data, NULL);
	if (c->closing)
		return CAIRN_ECLOSED;
	/* One of the configured endpoints, with or without its http:// */
	const char *url = NULL;
	size_t el = ep_trim(endpoint);
	for (size_t i = 0; i < c->n_endpoints && url == NULL; i++) {
		const char *e = c->endpoints[i];
		size_t n = strlen(e);
		if (n == el && strncmp(e, endpoint, el) == 0)
			url = e;
		else if (strncmp(e, "http://", 7) == 0 && n - 7 == el &&
			 strncmp(e + 7, endpoint, el) == 0)
			url = e;
	}
	if (url == NULL)
		return CAIRN_EINVAL;
	struct cl_sconn *sc = calloc(1, sizeof(*sc));
	if (sc == NULL)
		return CAIRN_ENOMEM;
	sc->c = c;
	sc->url = strdup(url);
	if (sc->url == NULL) {
		free(sc);
		return CAIRN_ENOMEM;
	}
	struct cl_req *r = NULL;
	int rc = req_start(c, CL_STATUS, &m.base, 0, (void (*)(void))cb, data, &r);
	if (rc != 0) {
		free(sc->url);
		free(sc);
		return rc;
	}
	r->sc = sc;
	sc->r = r;
	struct net_grpc_conn_opts o = {0};
	o.connect_timeout_ms = c->dial_timeout_ms;
	o.tls = c->tls;
	static const struct net_grpc_conn_cbs cbs = {NULL, sconn_on_closed};
	rc = net_grpc_conn_open(c->loop, sc->url, &o, &cbs, sc, &sc->gc);
	if (rc != 0) {
		req_unlink(r);
		req_free(r);
		free(sc->url);
		free(sc);
		return rc == NET_ENOMEM ? CAIRN_ENOMEM : CAIRN_EINVAL;
	}
	cl_list_push(&c->sconns, &sc->link);
	struct net_grpc_ccall_opts co = {0};
	co.timeout_ms = r->deadline - cl_now(c);
	rc = net_grpc_conn_unary(sc->gc, paths[CL_STATUS], r->buf, r->len, &co, &unary_cbs, r,
				 &r->call);
	if (rc != 0) {
		r->call = NULL;
		sc->r = NULL;
		r->sc = NULL;
		net_grpc_conn_close(sc->gc);
		defer_fail(r, CAIRN_UNAVAILABLE, "cannot open a call");
		return 0;
	}
	r->attempts = 1;
	return 0;
}
