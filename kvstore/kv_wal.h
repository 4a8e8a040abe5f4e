/* kv_wal.h: the Raft log's write-ahead log: a directory of append-only
 * segment files with a CRC32C on every record, group commit (one fdatasync
 * per batch), hard state and snapshot markers, recovery at open.
 *
 * kvstore/ knows nothing of Raft: the types below are plain mirrors of what
 * the core needs. server/ adapts them to struct raft_storage (raft/raft.h):
 *
 *   raft_storage callback    kv_wal call
 *   ---------------------    -------------------------------------------------
 *   initial_state            kv_wal_hard_state(); the configuration comes from
 *                            the snapshot marker's opaque conf blob (encoded by
 *                            server/) plus the conf-change entries after it
 *   entries(lo,hi,max)       kv_wal_entries(): same contract, KV_ECOMPACTED for
 *                            RAFT_ECOMPACTED, KV_EUNAVAILABLE for
 *                            RAFT_EUNAVAILABLE; data borrowed from the mapping
 *   term(i)                  kv_wal_term(): valid for the snapshot index too
 *   first_index              kv_wal_first_index() (snapshot index + 1)
 *   last_index               kv_wal_last_index() (snapshot index if empty)
 *   snapshot                 kv_wal_snapshot_get(): index, term, conf blob;
 *                            the size comes from server/'s snapshot files
 *   snapshot_read            not the WAL's: snapshot data lives beside it
 * Step 2 of THE LOOP CONTRACT maps to: kv_wal_save_snapshot() for
 * u.snapshot, then kv_wal_append(entries, hard state) for the rest (it cuts a
 * stored suffix from entries[0].index itself), then later kv_wal_compact().
 * All reads are served from memory: an index of (entry -> segment, offset,
 * term, length) is rebuilt at open by scanning every segment once.
 *
 * FILE FORMAT. <dir>/LOCK (flock'ed while open) and <dir>/<seq>.wal, seq a
 * 16-digit hex number, each segment preallocated to its full size (default
 * 64 MiB) and never rewritten once the next one exists. A segment is a run
 * of records, then zeros to its end. A record, little endian:
 *   u32 crc     CRC32C of the 8 bytes that follow and of the payload
 *   u32 len     payload bytes
 *   u32 type    1 entry, 2 hard state, 3 snapshot marker, 4 truncation;
 *               | 0x100 on the first record of each write (batch start)
 *               | 0x200 on the last record of each write (batch end)
 *   payload     entry:      u64 term, u64 index, u32 entry type, data
 *               hard state: u64 term, u64 vote, u64 commit
 *               snapshot:   u64 index, u64 term, conf blob
 *               truncation: u64 index (entries >= index are discarded)
 * A header of twelve zero bytes ends a segment. Segments are created as
 * <seq>.tmp, preallocated, synced, then renamed, so a segment either exists
 * whole or not at all.
 *
 * RECOVERY. kv_wal_open() replays every record in order. A bad record (cut
 * short by the end of the file, CRC mismatch, a zero header with data after
 * it) in the last segment is a torn tail when no whole record marked as a
 * batch start follows it: batch k+1 is written only after batch k's
 * fdatasync returned, so a later batch start proves the bad record was
 * durable. A torn tail is cut at the end of the last whole batch (the file
 * truncated there, then preallocated again with zeros, and synced),
 * whatever order the disk wrote the torn batch's pages in: a batch is all
 * or nothing, so a torn batch's truncation record goes with its entries.
 * (Exception: a batch larger than the room left in a segment spans two; if
 * its second part is torn, the first part, synced before the roll, stays.)
 * Any other bad record, or records that do not chain (an entry index that
 * is not last+1), fails the open with KV_ECORRUPT and a message naming the
 * file and offset: the WAL never opens with an acknowledged entry silently
 * missing. The one case no log can tell apart: a bit flip inside the very
 * last synced batch looks torn, and that batch is cut.
 * The hard state is the last record of its batch, so it is recovered with
 * the batch's entries or not at all, and in the spanning case above it may
 * lag them, never lead them (its commit index never exceeds the last index).
 *
 * ERRORS. Negative codes of kv_err.h. KV_EDISKFULL when a write or a
 * preallocation meets ENOSPC. A batch that needs a new segment creates it
 * before writing anything, so ENOSPC there leaves the WAL unchanged and
 * usable. A failure after bytes of a batch reached the file (write, fsync)
 * puts the WAL in a failed state: appends then return KV_EIO, reads still
 * work; reopen recovers (nothing synced before is lost).
 *
 * OWNERSHIP. kv_wal_open() allocates, kv_wal_close() frees. Entry data
 * and conf blobs passed in are copied to the file before the call returns.
 * Data returned by kv_wal_entries() points into a read-only mapping of the
 * segment; the conf blob of kv_wal_snapshot_get() is the WAL's copy. How
 * long they stay valid is under THREADS.
 *
 * THREADS. One writer thread (the member's storage thread) and any number
 * of reader threads (the member's loop thread) may use a WAL at once:
 *   - writer calls: kv_wal_append, kv_wal_save_snapshot, kv_wal_compact and
 *     kv_wal_last_error; one thread at a time, never concurrently with one
 *     another (the WAL does not serialize two writers);
 *   - reader calls, safe from any thread at any time, also during a write
 *     call: kv_wal_entries, kv_wal_term, kv_wal_first_index,
 *     kv_wal_last_index, kv_wal_bounds, kv_wal_snapshot_get,
 *     kv_wal_hard_state, kv_wal_stats, kv_wal_read_begin, kv_wal_read_end;
 *   - kv_wal_open and kv_wal_close: no other call on the WAL may run.
 * An internal mutex guards the in-memory index (entry positions and terms,
 * first and last index, hard state, snapshot marker, segment mappings). It
 * is held only while that index is read or changed, never across a write,
 * fdatasync, preallocation or file creation: a reader never waits for the
 * disk (only, at worst, for a page fault of its own on the mapped data).
 * Each reader call answers from one consistent state; two calls may see two
 * states (use kv_wal_bounds for first and last together).
 * What readers see: an append becomes visible only once its whole batch is
 * synced, in one step (its truncation, entries and hard state together), so
 * a reader never sees an entry that is not durable; a snapshot marker once
 * synced; a compaction once its segments are out of the index.
 * Borrowed data (entry data, the snapshot conf blob) stays valid:
 *   - single-threaded use: until kv_wal_compact deletes the segment holding
 *     the entry / until the next kv_wal_save_snapshot, or kv_wal_close;
 *   - with a concurrent writer: taken between kv_wal_read_begin() and
 *     kv_wal_read_end() on the same WAL, it stays valid until that
 *     kv_wal_read_end(). Mappings of segments that kv_wal_compact deletes,
 *     and replaced conf blobs, are retired rather than released while any
 *     read section is open, and released when the last one ends (by the
 *     thread that ends it: munmap/free, no disk I/O). The writer never
 *     waits for readers; a reader that keeps a section open keeps deleted
 *     segments' disk space until it ends it, so sections must be short or
 *     renewed (end, then begin again).
 */
#ifndef CAIRN_KV_WAL_H
#define CAIRN_KV_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

/* One log entry (mirrors struct raft_entry). */
struct kv_wal_entry {
	uint64_t term;
	uint64_t index;
	uint32_t type; /* opaque to the WAL */
	uint32_t len;
	const uint8_t *data;
};

/* Mirrors struct raft_hard_state. */
struct kv_wal_hard_state {
	uint64_t term;
	uint64_t vote;
	uint64_t commit;
};

/* The latest snapshot's identity; conf is an opaque blob of the caller's
 * (server/ encodes the membership configuration into it). index 0: none. */
struct kv_wal_snapshot {
	uint64_t index;
	uint64_t term;
	uint32_t conf_len;
	const uint8_t *conf;
};

struct kv_wal_options {
	uint64_t segment_bytes; /* 0: KV_WAL_SEGMENT_BYTES; at least 4 KiB */
};

#define KV_WAL_SEGMENT_BYTES (64u * 1024u * 1024u)
#define KV_WAL_MIN_SEGMENT_BYTES 4096u
#define KV_WAL_MAX_SEGMENT_BYTES (1024u * 1024u * 1024u)

struct kv_wal_stats {
	uint64_t appends;         /* kv_wal_append calls that succeeded */
	uint64_t entries_written; /* entry records written */
	uint64_t bytes_written;   /* record bytes written */
	uint64_t fdatasyncs;      /* fdatasync calls on segments */
	uint64_t segments_created;
	uint64_t segments_deleted;
	uint64_t torn_bytes_cut; /* at the last open */
	/* Where the next record goes: every byte before it, in this segment and
	 * the earlier ones, is synced (tests simulate power loss after it). */
	uint64_t tail_segment; /* seq: the file is <tail_segment in hex>.wal */
	uint64_t tail_offset;
};

struct kv_wal;

/* Open (creating if needed) the WAL in dir, replay it and take the lock.
 * opt may be NULL. On failure *out is NULL and, if errmsg is not NULL, a
 * message with context (file, offset) is written there (errlen bytes max).
 * KV_ELOCKED if another opener holds the directory; KV_ECORRUPT as above. */
KV_API int kv_wal_open(const char *dir, const struct kv_wal_options *opt, struct kv_wal **out,
		       char *errmsg, size_t errlen);
/* Unmap, close and free. Nothing is lost: every append was already synced. */
KV_API void kv_wal_close(struct kv_wal *w);

/* Append a batch durably: entries (consecutive indexes, entries[0].index in
 * [first_index, last_index + 1], or last_index + 1 after a snapshot),
 * cutting any stored entry with index >= entries[0].index first, then the
 * hard state if hs is not NULL; one fdatasync for the batch (two if it
 * crosses into a new segment). n may be 0. Returns once the batch is on disk.
 * KV_EINVAL on a bad batch (nothing written), KV_ETOOBIG if a record does
 * not fit in a segment, KV_EDISKFULL, KV_EIO. */
KV_API int kv_wal_append(struct kv_wal *w, const struct kv_wal_entry *entries, size_t n,
			 const struct kv_wal_hard_state *hs);

/* Record a snapshot marker durably (index above the current one; or index
 * 0, once, on a log that holds nothing yet: a base marker, e.g. a new
 * cluster's founding configuration, that entries from 1 on follow). Entries
 * up to its index become unavailable; if the log holds the entry at its
 * index with its term, later entries are kept (Raft thesis §5.1: a local
 * snapshot), otherwise the whole log is discarded (an installed one). */
KV_API int kv_wal_save_snapshot(struct kv_wal *w, const struct kv_wal_snapshot *snap);

/* Delete whole segments whose entries all have index <= index (which must
 * be <= the snapshot index), oldest first, never the segment being written.
 * The latest hard state and snapshot marker are re-recorded first if they
 * live in a segment to delete. Deletes nothing if no segment qualifies. */
KV_API int kv_wal_compact(struct kv_wal *w, uint64_t index);

/* Entries [lo, hi) into out (capacity hi - lo), stopping before the entry
 * that would take the total data length over max_bytes (at least one entry
 * is returned). *n gets the count. KV_ECOMPACTED if lo < first index,
 * KV_EUNAVAILABLE if hi - 1 > last index or lo >= hi. Data is borrowed (see
 * OWNERSHIP). Cost: O(entries returned), no I/O beyond page faults. */
KV_API int kv_wal_entries(struct kv_wal *w, uint64_t lo, uint64_t hi, uint64_t max_bytes,
			  struct kv_wal_entry *out, uint32_t *n);
/* Term of entry i, or of the snapshot index. KV_ECOMPACTED below it,
 * KV_EUNAVAILABLE above the last index. */
KV_API int kv_wal_term(const struct kv_wal *w, uint64_t i, uint64_t *term);
KV_API uint64_t kv_wal_first_index(const struct kv_wal *w);
KV_API uint64_t kv_wal_last_index(const struct kv_wal *w);
/* First and last index read together (one consistent state). */
KV_API void kv_wal_bounds(const struct kv_wal *w, uint64_t *first, uint64_t *last);
/* Open and close a read section (see THREADS): borrowed data taken inside
 * it stays valid until kv_wal_read_end(). Sections may nest and overlap
 * across threads; every begin needs one end before kv_wal_close(). */
KV_API void kv_wal_read_begin(struct kv_wal *w);
KV_API void kv_wal_read_end(struct kv_wal *w);
/* The latest snapshot marker (index 0 and no conf if none; index 0 with a
 * conf for a base marker); conf borrowed (see THREADS). */
KV_API void kv_wal_snapshot_get(const struct kv_wal *w, struct kv_wal_snapshot *snap);
/* The latest hard state (zeros if none). */
KV_API void kv_wal_hard_state(const struct kv_wal *w, struct kv_wal_hard_state *hs);
KV_API void kv_wal_stats(const struct kv_wal *w, struct kv_wal_stats *st);
/* Message with context of the last failed write call on w ("" if none);
 * the writer thread's (reads fail only with KV_ECOMPACTED/KV_EUNAVAILABLE). */
KV_API const char *kv_wal_last_error(const struct kv_wal *w);

#endif /* CAIRN_KV_WAL_H */
