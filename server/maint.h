/* maint.h: what the Maintenance service shares beyond its own file: the
 * store's hash (the Hash call, and `cairn snapshot status`, which prints
 * the same number for a snapshot file), the quota check that raises the
 * NOSPACE alarm, and the registration of the calls. */
#ifndef CAIRN_SERVER_MAINT_H
#define CAIRN_SERVER_MAINT_H

#include <stdint.h>

#include "kvstore.h"

/* The 32-bit hash of a store: the key history (kv_hash_kv at the current
 * revision: every revision held, the kept state at the compacted one), the
 * lease table, the member table and the alarms, in that order; not the
 * Raft applied index nor the ids of the member that holds the copy. Equal
 * on members that applied the same log. *revision: the current revision.
 * 0 or a kv error. Cost: a read of the whole history. */
int maint_store_hash(struct kv_store *kv, uint32_t *hash, int64_t *revision);

/* etcd 3.4 ends a Snapshot stream with the SHA-256 of the bytes before it;
 * `etcdctl snapshot save` keeps it at the end of the file. */
#define MAINT_SNAPSHOT_SHA_LEN 32
#define MAINT_SNAPSHOT_CHUNK (32 * 1024) /* etcd's snapshot send buffer */
#define MAINT_MAX_HASHES 8 /* Hash and HashKV calls queued on the snapshot thread at once */

#endif /* CAIRN_SERVER_MAINT_H */
