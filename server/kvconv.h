/* kvconv.h: etcd's v3 messages (proto/etcdserverpb) to and from the store's
 * structs (kvstore/kv_mvcc.h), and the store's errors as the gRPC status and
 * message etcd answers with (clients match on those strings).
 *
 * Ownership: requests are converted without copying: the kv_* structs point
 * into the protobuf message, which must outlive them. Whatever a conversion
 * allocates (arrays of compares and ops, response messages) comes from a
 * kvconv_arena and is freed all at once with it. A response message built
 * from a kv_* response points into that response's memory: pack it (or
 * drop it) before freeing the kv_* response. */
#ifndef CAIRN_SERVER_KVCONV_H
#define CAIRN_SERVER_KVCONV_H

#include <stddef.h>
#include <stdint.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "kvstore.h"

/* A bump allocator for conversions: chunks of 16 KiB (or one larger chunk
 * for a larger request), everything zeroed, freed together. */
struct kvconv_chunk;
struct kvconv_arena {
	struct kvconv_chunk *head;
};

/* NULL when out of memory. */
void *kvconv_alloc(struct kvconv_arena *a, size_t size);
/* Frees every chunk; the arena is empty (and reusable) afterwards. */
void kvconv_arena_free(struct kvconv_arena *a);

/* ---- requests ---------------------------------------------------------- */

void kvconv_range_req(const Etcdserverpb__RangeRequest *in, struct kv_range_req *out);
void kvconv_put_req(const Etcdserverpb__PutRequest *in, struct kv_put_req *out);
void kvconv_delete_req(const Etcdserverpb__DeleteRangeRequest *in, struct kv_delete_req *out);
/* A Txn, nested Txns included. KV_EINVAL for an op with no request or a Txn
 * nested deeper than KV_MAX_TXN_DEPTH; KV_ETOOMANYOPS past KV_MAX_TXN_OPS in
 * one list (checked here too, since the arrays are built before the store
 * sees them); KV_ENOMEM. */
int kvconv_txn_req(const Etcdserverpb__TxnRequest *in, struct kvconv_arena *a,
		   struct kv_txn_req *out);

/* ---- responses ---------------------------------------------------------
 * Each fills *out (initialised here) with header h (copied into the arena)
 * and the response's content; 0 or KV_ENOMEM. */

int kvconv_range_resp(const struct kv_range_resp *in, const Etcdserverpb__ResponseHeader *h,
		      struct kvconv_arena *a, Etcdserverpb__RangeResponse *out);
int kvconv_put_resp(const struct kv_put_resp *in, const Etcdserverpb__ResponseHeader *h,
		    struct kvconv_arena *a, Etcdserverpb__PutResponse *out);
int kvconv_delete_resp(const struct kv_delete_resp *in, const Etcdserverpb__ResponseHeader *h,
		       struct kvconv_arena *a, Etcdserverpb__DeleteRangeResponse *out);
int kvconv_txn_resp(const struct kv_txn_resp *in, const Etcdserverpb__ResponseHeader *h,
		    struct kvconv_arena *a, Etcdserverpb__TxnResponse *out);
/* A copy of h at `revision`, from the arena; NULL on ENOMEM. */
Etcdserverpb__ResponseHeader *kvconv_header(const Etcdserverpb__ResponseHeader *h, int64_t revision,
					    struct kvconv_arena *a);
/* A KeyValue pointing into kv (no copy), from the arena; NULL on ENOMEM. */
Mvccpb__KeyValue *kvconv_kv(const struct kv_kv *kv, struct kvconv_arena *a);

/* ---- errors ------------------------------------------------------------ */

/* The gRPC status code (net/grpc.h's numbers) and message etcd answers a
 * request with when its store says err (a KV_E* code): etcd's error strings
 * where it has one ("etcdserver: mvcc: required revision has been
 * compacted", OUT_OF_RANGE), else UNKNOWN / INTERNAL with kv_strerror. */
struct kvconv_status {
	int code;
	const char *message;
};
void kvconv_error(int err, struct kvconv_status *out);

#endif /* CAIRN_SERVER_KVCONV_H */
