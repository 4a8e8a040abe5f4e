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

#endif /* CAIRN_SERVER_APPLY_H */
