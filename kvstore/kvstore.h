/* kvstore.h: Cairn's durable storage, the one public header of kvstore/.
 *
 * Two synchronous libraries, driven from the member's storage thread:
 *   kv_wal.h   the Raft log: append-only segments with a CRC32C per record,
 *              group commit, hard state and snapshot markers, recovery;
 *   kv_mvcc.h  the state machine: etcd's multi-version key-value model in
 *              LMDB, with leases, compaction, hashes and watch events.
 *   kv_heap.h  the allocator both use, replaceable.
 * Both depend on libc, LMDB and libcrypto (SHA-256 of long keys) only; server/ adapts the WAL to the Raft
 * core's storage contract. Errors: kv_err.h. */
#ifndef CAIRN_KVSTORE_H
#define CAIRN_KVSTORE_H

#include "kv_err.h"
#include "kv_heap.h"
#include "kv_wal.h"
#include "kv_mvcc.h"

#endif /* CAIRN_KVSTORE_H */
