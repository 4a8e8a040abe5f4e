/* apply.h: one committed Request (proto/cairn/request.proto) applied to the
 * store inside the batch's write transaction, on the storage thread, with
 * the answer for the client that waits for it: the packed etcd response, or
 * the gRPC status and message etcd gives for that refusal.
 *
 * Every member applies the same Requests in the same order and gets the same
 * results; only the member whose client waits sends its result anywhere. A
 * failure of this member rather than of the request (memory, the disk) fails
 * the whole batch instead: the caller aborts it and applies it again later
 * (kvstore/kv_mvcc.h, "Write transactions"). */
#ifndef CAIRN_SERVER_APPLY_H
#define CAIRN_SERVER_APPLY_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/request.pb-c.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "kvstore.h"

struct apply_result {
	int code;            /* gRPC status: 0 OK, else message says why */
	const char *message; /* static; "" when code is 0 */
	uint8_t *resp;       /* packed response (malloc'd, caller frees); NULL unless OK */
	size_t resp_len;
	int64_t revision;     /* the store's revision after the request */
	bool members_changed; /* a member Request changed the member table */
};

/* Applies req in w. h gives the header's cluster id, member id and Raft term
 * (its revision is set per response). Returns 0 with *out filled (OK or a
 * refusal), or the error that failed the batch (*out then holds nothing to
 * free). A Request with no operation, or a Range (served through the log
 * as a Txn holding only that Range), is answered like any other. */
int apply_request(struct kv_wtx *w, const Cairn__Serverpb__Request *req,
		  const Etcdserverpb__ResponseHeader *h, struct apply_result *out);

void apply_result_free(struct apply_result *r);

/* ---- the member table (kv_mvcc.h, "Members") ----
 * Each record is a packed etcdserverpb.Member; the record of id 0 is the
 * change waiting to be settled (a packed MemberChange, server/cluster.c). */
struct apply_members {
	Etcdserverpb__Member **v; /* by increasing id */
	size_t n;
	Cairn__Serverpb__MemberChange *pending; /* NULL: none */
};

/* Decodes a listed table (a record that does not decode is KV_ECORRUPT). */
int apply_members_decode(const struct kv_members *km, struct apply_members *out);
/* The table as the batch w sees it. */
int apply_members_load_w(struct kv_wtx *w, struct apply_members *out);
void apply_members_free(struct apply_members *t);
const Etcdserverpb__Member *apply_members_find(const struct apply_members *t, uint64_t id);
/* Writes mem as its id's record. */
int apply_member_put(struct kv_wtx *w, const Etcdserverpb__Member *mem);
/* Packs etcd's answer to a Cluster call into out: MemberAddResponse when
 * added is not NULL, else the layout MemberRemove, MemberUpdate and
 * MemberPromote responses share (header, members). The header's revision is
 * left out, as etcd leaves it out of every Cluster answer. */
int apply_members_response(const struct apply_members *t, const Etcdserverpb__ResponseHeader *h,
			   const Etcdserverpb__Member *added, struct apply_result *out);
/* etcd's texts for the refusals of the Cluster calls (static strings). */
extern const char *const apply_member_errors[];
/* The static copy of msg among apply_member_errors, or NULL. */
const char *apply_member_error(const char *msg);

#endif /* CAIRN_SERVER_APPLY_H */
