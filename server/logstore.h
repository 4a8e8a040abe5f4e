/* logstore.h: the Raft core's durable storage (struct raft_storage of
 * raft/raft.h) on the WAL (kvstore/kv_wal.h), with snapshot files beside it,
 * usable by a member's two threads.
 *
 * LAYOUT. <data-dir>/wal/ is the WAL. <data-dir>/snap/<index>-<term>.snap
 * (index and term as 16-digit hex) is the snapshot the WAL's latest marker
 * names: an LMDB copy (kv_snapshot_copy_fd) for a local snapshot, or the
 * chunks received from a leader. Files are written as <name>.tmp, fsynced,
 * renamed, the directory fsynced; the WAL marker is recorded after that and
 * is the commit point: at open, any .tmp and any .snap that the marker does
 * not name are deleted. The marker's conf blob holds the snapshot's
 * configuration and size in a versioned encoding (logstore_conf_encode).
 *
 * THREADS. Two kinds of calls:
 *   - reader calls: the callbacks of logstore_storage() (through the core,
 *     on the member's loop thread), and logstore_release(). They never
 *     wait for a disk write of the other thread; `entries` and `term`
 *     answer from the WAL's in-memory index, snapshot_read does one pread
 *     of the held snapshot file (normally in the page cache). The callbacks
 *     are to be called from one thread at a time (the core's).
 *   - writer calls: logstore_bootstrap, logstore_persist,
 *     logstore_snapshot_save, logstore_compact, logstore_last_error; from one
 *     thread at a time (the storage thread), concurrently with reader calls.
 *   - logstore_open, logstore_set_applied, logstore_close: no other call on
 *     the logstore may run.
 * The reader sees an update's entries and hard state only once they are
 * synced (the WAL publishes a batch in one step after its fdatasync), which
 * matches THE LOOP CONTRACT: until raft_advance() the core serves those
 * entries from its own unstable tail.
 *
 * BORROWED ENTRY DATA. Entries filled by the `entries` callback point into
 * the WAL's read-only segment mappings. Each `entries` call opens a WAL read
 * section (kv_wal_read_begin) and ends the one opened by the previous call,
 * so the data stays valid until the next `entries` call (or
 * logstore_release(), or logstore_close()), even if the storage thread
 * compacts the segment away meanwhile: the WAL unmaps a deleted segment
 * only once no read section is open. The core copies the data before it
 * returns from the call that read it, and never reads storage again before
 * that copy, so this covers raft.h's "valid until the caller next changes
 * the storage" when the caller that changes it is another thread. The loop
 * should call logstore_release() once the core has returned at the end of
 * each iteration that fed it (cheap: one mutex round trip), so that segments
 * deleted by compaction are unmapped and give their disk space back at once
 * rather than at the next `entries` call.
 *
 * ERRORS. Functions return 0 or a RAFT_E* code: KV_ECOMPACTED ->
 * RAFT_ECOMPACTED, KV_EUNAVAILABLE -> RAFT_EUNAVAILABLE, KV_ENOMEM ->
 * RAFT_ENOMEM, KV_EINVAL -> RAFT_EINVAL, KV_ECORRUPT -> RAFT_ECORRUPT,
 * KV_ETOOBIG -> RAFT_ETOOBIG, any other failure (I/O, full disk, lock) ->
 * RAFT_EIO. Writer calls leave a message with context (file, kvstore error)
 * in logstore_last_error().
 */
#ifndef CAIRN_SERVER_LOGSTORE_H
#define CAIRN_SERVER_LOGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

struct logstore;

struct logstore_options {
	uint64_t segment_bytes; /* WAL segment size; 0: the WAL's default */
};

/* Open (creating if needed) the log store in data_dir: the WAL in
 * <data_dir>/wal, snapshots in <data_dir>/snap. opt may be NULL. *out is
 * freed with logstore_close(). On failure *out is NULL and a message with
 * context is written to errmsg (errlen bytes at most) if it is not NULL. */
int logstore_open(const char *data_dir, const struct logstore_options *opt, struct logstore **out,
		  char *errmsg, size_t errlen);
/* Close the WAL and free everything. Every write was already synced. */
void logstore_close(struct logstore *ls);

/* The applied index of the state machine (LMDB's), which initial_state
 * computes the configuration for. Call before raft_new(); 0 by default. */
void logstore_set_applied(struct logstore *ls, uint64_t applied);

/* The storage table reading this log store. ctx is ls, which must outlive
 * the raft node. initial_state gives the latest hard state, and the
 * configuration as of the applied index: the snapshot marker's (or the
 * founding one after a bootstrap) plus the conf-change entries after the
 * marker up to the applied index (raft_conf_apply; a malformed or refused
 * change is skipped, as the core skips it). */
struct raft_storage logstore_storage(struct logstore *ls);

/* End the read section held since the last `entries` call (see BORROWED
 * ENTRY DATA); reader thread, no-op if none is held. */
void logstore_release(struct logstore *ls);

/* Start a new cluster's log, like raft_memstore_bootstrap(): a base marker
 * with the founding configuration, then one conf-change entry per member
 * (voters first, then learners, in conf order) at indexes 1..n, term 1, and
 * the hard state {term 1, commit n}, in one synced write. RAFT_EINVAL if the
 * log is not empty or conf is not a valid founding configuration. */
int logstore_bootstrap(struct logstore *ls, const struct raft_conf *conf);

/* Step 2 of THE LOOP CONTRACT for u: stage u->snapshot_chunks in
 * snap/<index>-<term>.snap.tmp (fsynced); if u->snapshot is set, make the
 * staged file the held snapshot (RAFT_ECORRUPT if its identity or size do
 * not match) and record its marker (the log up to its index goes); then
 * u->entries (cutting any stored suffix) and u->hard_state in one
 * kv_wal_append, one fdatasync. Nothing of u is kept. Installing the
 * snapshot into the state machine is the caller's: logstore_snapshot_path()
 * names the file, which stays the logstore's (kv_snapshot_install consumes
 * the file it is given: give it a copy). */
int logstore_persist(struct logstore *ls, const struct raft_update *u);

/* Writes snapshot data to fd (e.g. kv_snapshot_copy_fd(store, fd)); returns
 * 0 or a negative code. The logstore fsyncs and closes fd. */
typedef int (*logstore_snapshot_writer)(void *ctx, int fd);

/* Record a local snapshot of the state machine at index (the applied index,
 * <= the last index, above the held snapshot) with conf, its configuration
 * then: the data is written by writer(ctx, fd) to a .tmp file, fsynced and
 * renamed, then the marker recorded (entries after index are kept), then
 * older snapshot files deleted. The term is the log's at index. Compaction
 * is separate (logstore_compact). RAFT_EINVAL on a bad index, RAFT_EIO if
 * write fails. */
int logstore_snapshot_save(struct logstore *ls, uint64_t index, const struct raft_conf *conf,
			   logstore_snapshot_writer writer, void *ctx);

/* A local snapshot in two steps, so that the long copy of the store runs
 * on a thread other than the storage thread, and its index can be learnt
 * from the copy itself:
 * logstore_snapshot_create (any thread, one snapshot at a time): creates
 * the file for the copy (its path into path, len bytes) and gives its
 * descriptor in *fd; the caller writes the data to it. RAFT_EINVAL if the
 * path does not fit, RAFT_EIO if the file cannot be created.
 * logstore_snapshot_commit (writer call): for the snapshot at index (above
 * the held one, in the log: RAFT_EINVAL otherwise), fsyncs and closes fd,
 * renames the file to the held name, records the marker (entries after
 * index are kept) and deletes older snapshot files, like
 * logstore_snapshot_save. fd is closed, and the file removed on failure. */
int logstore_snapshot_create(struct logstore *ls, char *path, size_t len, int *fd);
int logstore_snapshot_commit(struct logstore *ls, uint64_t index, const struct raft_conf *conf,
			     int fd);

/* A mark: a snapshot with no file, for a state machine that is durable by
 * itself at its applied index (the LMDB store), so that the log can be
 * compacted behind it without a copy. logstore_snapshot_mark (writer call)
 * records one at index (above the held snapshot, in the log; RAFT_EINVAL
 * otherwise) with conf, its configuration then, and deletes older snapshot
 * files. While a mark is held, the core's `snapshot` callback answers
 * RAFT_EUNAVAILABLE (the core tries again later) and remembers that a copy
 * is wanted; logstore_snapshot_wanted (reader call) tells, once, and the
 * caller then records a copy with logstore_snapshot_create/commit at a
 * later index. A mark survives a restart like a snapshot. */
#define LOGSTORE_NO_FILE UINT64_MAX
int logstore_snapshot_mark(struct logstore *ls, uint64_t index, const struct raft_conf *conf);
bool logstore_snapshot_wanted(struct logstore *ls);
/* The held snapshot or mark (size LOGSTORE_NO_FILE), index 0 if none. */
void logstore_snapshot_held(struct logstore *ls, struct raft_snapshot_meta *meta);

/* Delete WAL segments whose entries are all <= index (index <= the snapshot
 * index), keeping a tail for slow followers is the caller's choice of index. */
int logstore_compact(struct logstore *ls, uint64_t index);

/* Path of the held snapshot file into buf ("" and RAFT_ESNAPOUTOFDATE if no
 * snapshot is held or its index is not `index`). */
int logstore_snapshot_path(struct logstore *ls, uint64_t index, char *buf, size_t len);

/* Message with context of the last failed writer call ("" if none). */
const char *logstore_last_error(const struct logstore *ls);

/* The marker's conf blob: u32 version (1), u32 member count n, u64 snapshot
 * size, then n times (u64 id, u32 role), little endian. encode returns the
 * length (LOGSTORE_CONF_MAX at most) or RAFT_EINVAL if cap is too small or
 * conf is malformed; decode returns RAFT_ECORRUPT on anything but a well
 * formed blob (version, length, member count, ids, roles, duplicates, no
 * voter). */
#define LOGSTORE_CONF_MAX (16u + 12u * RAFT_MAX_MEMBERS)
int logstore_conf_encode(const struct raft_conf *conf, uint64_t size, uint8_t *buf, size_t cap);
int logstore_conf_decode(const uint8_t *buf, size_t len, struct raft_conf *conf, uint64_t *size);

#endif /* CAIRN_SERVER_LOGSTORE_H */
