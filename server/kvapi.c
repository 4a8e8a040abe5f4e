/* kvapi.c: the etcd KV calls (Range, Put, DeleteRange, Txn, Compact) of a
 * member (Maintenance.Status is in maint.c). Writes become a Request proposed through
 * Raft and are answered when applied (member.c); linearizable Ranges go
 * through ReadIndex, serializable ones are served from the local store. */
#include "member_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kvconv.h"

#define UNARY(name, Type, type, field, CASE)                                                       \
	static void on_msg_##name(struct net_grpc_call *call, const uint8_t *data, size_t len,     \
				  void *user)                                                      \
	{                                                                                          \
		struct srv_member *m = user;                                                       \
		(void)user;                                                                        \
		net_grpc_call_set_callbacks(call, NULL, NULL);                                     \
		Type *q = type##__unpack(NULL, len, data);                                         \
		if (q == NULL) {                                                                   \
			member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");       \
			return;                                                                    \
		}                                                                                  \
		Cairn__Serverpb__Request req = CAIRN__SERVERPB__REQUEST__INIT;                     \
		req.op_case = CASE;                                                                \
		req.field = q;                                                                     \
		member_propose_call(m, call, &req);                                                \
		type##__free_unpacked(q, NULL);                                                    \
	}                                                                                          \
	static void h_##name(struct net_grpc_call *call, void *data)                               \
	{                                                                                          \
		static const struct net_grpc_call_callbacks cbs = { .on_message = on_msg_##name }; \
		net_grpc_call_set_callbacks(call, &cbs, data);                                     \
	}

UNARY(put, Etcdserverpb__PutRequest, etcdserverpb__put_request, put,
      CAIRN__SERVERPB__REQUEST__OP_PUT)
UNARY(delete_range, Etcdserverpb__DeleteRangeRequest, etcdserverpb__delete_range_request,
      delete_range, CAIRN__SERVERPB__REQUEST__OP_DELETE_RANGE)
UNARY(txn, Etcdserverpb__TxnRequest, etcdserverpb__txn_request, txn,
      CAIRN__SERVERPB__REQUEST__OP_TXN)
UNARY(compact, Etcdserverpb__CompactionRequest, etcdserverpb__compaction_request, compaction,
      CAIRN__SERVERPB__REQUEST__OP_COMPACTION)

static void on_msg_range(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct srv_member *m = user;
	net_grpc_call_set_callbacks(call, NULL, NULL);
	Etcdserverpb__RangeRequest *q = etcdserverpb__range_request__unpack(NULL, len, data);
	if (q == NULL) {
		member_finish_error(call, ST_INVALID_ARGUMENT, "malformed request");
		return;
	}
	if (!q->serializable && member_learner_refuses(m, call)) {
		etcdserverpb__range_request__free_unpacked(q, NULL);
		return;
	}
	if (q->serializable) {
		member_serve_range(m, call, q);
		etcdserverpb__range_request__free_unpacked(q, NULL);
		return;
	}
	/* linearizable: ReadIndex, served once applied up to its index */
	uint64_t id = ++m->next_seq;
	struct waiter *w = member_waiter_add(m, call, id);
	if (w == NULL) {
		etcdserverpb__range_request__free_unpacked(q, NULL);
		member_finish_error(call, ST_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
		return;
	}
	int err = raft_read_index(m->raft, id);
	if (err != 0) {
		member_waiter_remove(m, w);
		etcdserverpb__range_request__free_unpacked(q, NULL);
		member_finish_error(call, ST_UNAVAILABLE,
				    err == RAFT_ENOLEADER ? "etcdserver: no leader" :
							    "etcdserver: too many requests");
		return;
	}
	w->range = q;
	member_waiter_attach(w);
	member_kick(m);
}

static void h_range(struct net_grpc_call *call, void *data)
{
	static const struct net_grpc_call_callbacks cbs = { .on_message = on_msg_range };
	net_grpc_call_set_callbacks(call, &cbs, data);
}

int kvapi_register(struct srv_member *m)
{
	static const struct member_method methods[] = {
		{ "/etcdserverpb.KV/Range", h_range },
		{ "/etcdserverpb.KV/Put", h_put },
		{ "/etcdserverpb.KV/DeleteRange", h_delete_range },
		{ "/etcdserverpb.KV/Txn", h_txn },
		{ "/etcdserverpb.KV/Compact", h_compact },
	};
	return member_register(m, methods, sizeof methods / sizeof methods[0]);
}
