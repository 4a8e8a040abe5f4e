/* member.h: one Cairn member: the Raft core over the WAL (logstore.h), the
 * LMDB store applied on the storage thread (worker.h, apply.h), the peer
 * transport (net/peer.h) and the etcd v3 gRPC API on the client URLs
 * (net/grpc_uv.h), all driven by one libuv loop (docs/architecture.md §6).
 *
 * Lifecycle: srv_member_start() opens the data directory (taking its lock),
 * bootstraps a new cluster from --initial-cluster when the directory is new,
 * and starts listening; the member then runs as long as the loop runs.
 * srv_member_stop() stops it gracefully: a leader hands leadership over
 * first, in-flight requests finish (bounded), everything is synced, and
 * stopped(data) is called on the loop once every handle is closed; the
 * member is freed after it returns.
 *
 * Threads: every function here runs on the loop thread. Ownership: cfg is
 * copied where needed and may be freed after srv_member_start returns. */
#ifndef CAIRN_SERVER_MEMBER_H
#define CAIRN_SERVER_MEMBER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"

struct srv_member;

/* 0, or a negative code with a message in err (e.g. "data directory
 * default.cairn is in use by another process"). */
int srv_member_start(uv_loop_t *loop, const struct srv_config *cfg, struct srv_member **out,
		     char *err, size_t err_len);

void srv_member_stop(struct srv_member *m, void (*stopped)(void *data), void *data);

/* Member and cluster ids, as etcd derives them from peer URLs and the
 * initial cluster token (never 0). */
uint64_t srv_member_id(const struct srv_member *m);
/* The ids of a new cluster (also `cairn snapshot restore`'s): a member's from
 * its first peer URL and the cluster token, the cluster's from its members'
 * ids (sorted here, in place) and the token. SHA-256, the first 8 bytes
 * big-endian, never 0 (etcd derives both the same way, with SHA-1). */
uint64_t srv_member_id_of(const char *peer_url, const char *token);
uint64_t srv_cluster_id_of(uint64_t *ids, size_t n, const char *token);
uint64_t srv_cluster_id(const struct srv_member *m);

#endif /* CAIRN_SERVER_MEMBER_H */
