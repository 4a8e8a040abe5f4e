/* raftwire.h: the Raft core's messages (struct raft_msg, raft/raft.h) on the peer wire, as
 * protobuf cairn.raftpb.Message (proto/raft.proto), both ways. The peer transport (net/peer.h)
 * carries opaque bytes: a member encodes each message its core emits and decodes each one it
 * receives before raft_step().
 *
 * ENCODING. Every field of struct raft_msg is packed, whatever the type (proto3 omits zero
 * values, so fields a type does not use cost nothing), and the snapshot metadata only when it
 * is not all zero. Decoding what srv_raftwire_encode() produced gives back an equal raft_msg,
 * field by field, entry data bytes included.
 *
 * DECODING UNTRUSTED BYTES. srv_raftwire_decode() refuses, before the core sees anything:
 *   RAFT_ECORRUPT   bytes that are not a Message (garbage, truncated, bad wire types);
 *                   message type MSG_UNSPECIFIED or above RAFT_MSG_TYPE_MAX; an entry type or
 *                   member role outside its enum; a member id 0 or repeated in a conf; a
 *                   conf-change entry whose data raft_conf_change_decode() refuses (context
 *                   over RAFT_MAX_CONF_CONTEXT, unknown change type, id 0, wrong length)
 *   RAFT_ETOOMANYMEMBERS  more than RAFT_MAX_MEMBERS members in the snapshot's conf
 *   RAFT_ETOOBIG    an entry over lim->max_entry_bytes, more than lim->max_entries entries,
 *                   entry bytes over lim->max_msg_bytes in total, a chunk over
 *                   lim->max_chunk_bytes, or input that would make the decoder allocate
 *                   more than the budget those limits imply (srv_raftwire_budget())
 *   RAFT_ENOMEM     out of memory
 *   RAFT_EINVAL     a NULL argument
 * Every length the C structs hold in a uint32_t (entry len, chunk len, n_entries, conf n) is
 * bounded by a uint32_t limit above, so a decoded value always fits its C field. protobuf-c
 * reads an enum as the low 32 bits of its varint; the range checks apply to that value.
 * Semantic checks (stale term, unknown sender, entries in a type that takes none, snapshot
 * offsets) are left to raft_step(), which counts and drops such input (raft_stats).
 *
 * Bounded work. protobuf-c's unpacker recurses once per nested message, and raft.proto has no
 * recursive message: the deepest path is Message > SnapshotMeta > Conf > Member, four levels,
 * whatever the input (unknown fields are kept as bytes, never descended into, and the
 * deprecated group wire types are refused). Every allocation the unpacker makes (the message, its arrays, copies of
 * bytes fields, unknown fields, its scratch space) is charged to a budget derived from the
 * limits, so an input can never make the decoder hold more than that budget: one malformed
 * frame cannot exhaust memory by repeating small fields.
 *
 * Threads: no shared state; calls on different values may run concurrently. Memory comes from
 * libc malloc/free.
 */
#ifndef CAIRN_SERVER_RAFTWIRE_H
#define CAIRN_SERVER_RAFTWIRE_H

#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#ifndef SRV_API
#define SRV_API __attribute__((visibility("default")))
#endif

/* Entries the core puts in one APPEND at most (its log slice bound, raft/log.c). */
#define SRV_RAFTWIRE_MAX_SLICE_ENTRIES 16384u

/* What one decoded message may hold. Each bound is exact: 0 allows none. */
struct srv_raftwire_limits {
	uint32_t max_entries;     /* entries in one message */
	uint32_t max_entry_bytes; /* data bytes of one entry */
	uint64_t max_msg_bytes;   /* data bytes of all entries of one message */
	uint32_t max_chunk_bytes; /* snapshot chunk bytes (raft_msg.len) */
};

/* The limits that accept everything a core configured as cfg sends (every member of a cluster
 * is expected to run the same Raft configuration): max_entries SRV_RAFTWIRE_MAX_SLICE_ENTRIES,
 * max_entry_bytes cfg->max_entry_bytes, max_chunk_bytes cfg->snapshot_chunk_bytes, and
 * max_msg_bytes cfg->max_msg_bytes + cfg->max_entry_bytes, since the storage may return one
 * entry past max_msg_bytes for an APPEND (struct raft_storage, `entries`). A zero field of cfg
 * stands for the core's default, as in raft_new(). cfg is read only. */
SRV_API void srv_raftwire_limits_init(struct srv_raftwire_limits *lim,
				      const struct raft_config *cfg);

/* Bytes the decoder may allocate for one message under lim: the limits' payload plus a fixed
 * allowance per entry and per message for protobuf-c's structures. Saturates at SIZE_MAX. */
SRV_API size_t srv_raftwire_budget(const struct srv_raftwire_limits *lim);

/* Encode m into a new buffer. On success *out is a malloc'd buffer of *len bytes that the
 * caller frees with free(); m and everything it points to are only read, not kept.
 * RAFT_EINVAL for a NULL argument or an m the decoder would refuse by its schema: a type
 * outside 1..RAFT_MSG_TYPE_MAX, n_entries > 0 with entries NULL, a len > 0 with data NULL
 * (message or entry), an entry type or member role outside its enum, snap.conf.n >
 * RAFT_MAX_MEMBERS (member ids and conf-change data are the core's to get right, and limits
 * are the receiver's); RAFT_ENOMEM. On error *out is NULL and *len 0. */
SRV_API int srv_raftwire_encode(const struct raft_msg *m, uint8_t **out, size_t *len);

/* A decoded message. `msg` is the value to pass to raft_step(); its entries and data point into
 * memory this struct owns, valid until srv_raftwire_msg_free(). The other fields are private.
 * The struct may be moved (copied by value) while it holds a message. */
struct srv_raftwire_msg {
	struct raft_msg msg;
	char err[128]; /* after a failed decode: why, with context (entry number, sizes) */
	void *pb_;     /* the unpacked Cairn__Raftpb__Message */
	struct raft_entry *entries_; /* msg.entries' array */
};

/* Decode buf[0..len) (only read, not kept: out copies what it needs) under lim (read only).
 * Returns 0 and fills *out, to be released with srv_raftwire_msg_free(); or a negative code
 * listed at the top of this file, with *out holding nothing to free (freeing it anyway is
 * harmless) and out->err saying why. */
SRV_API int srv_raftwire_decode(const uint8_t *buf, size_t len,
				const struct srv_raftwire_limits *lim,
				struct srv_raftwire_msg *out);

/* Release what a decode left in m; m is then empty (msg zeroed). Safe on an empty or failed m,
 * and twice. */
SRV_API void srv_raftwire_msg_free(struct srv_raftwire_msg *m);

#endif /* CAIRN_SERVER_RAFTWIRE_H */
