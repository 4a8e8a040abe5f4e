/* pipeline.c: a member's Raft updates through its three threads.
 *
 * THE LOOP CONTRACT (raft/raft.h) is kept like this. The loop takes one
 * update at a time and sends its messages at once. The storage thread
 * persists it (logstore_persist: one fdatasync). Back on the loop, the
 * messages that waited for the disk go out, the committed entries are
 * copied into a batch for the apply thread, and the core is advanced: the
 * next update can be taken while the batch is being applied. "Apply" in the
 * contract's step 4 thus means "handed, in order, to the apply thread",
 * which is what etcd does too; the core's own effects of conf changes still
 * happen at raft_advance. What must wait for the store waits for the apply
 * thread's completions instead: the answers to clients (they come with the
 * batch's results) and ReadIndex reads (held until the store has applied up
 * to their index).
 *
 * One batch is out to the apply thread at a time; entries committed while
 * it runs join the last queued batch, so a busy apply thread applies more
 * entries per transaction (and per fdatasync) rather than falling behind.
 * The apply thread applies each batch in one LMDB write transaction, synced,
 * with its applied index: the store is its own snapshot. Every
 * --snapshot-count entries the storage thread records a mark at the applied
 * index (logstore_snapshot_mark) and compacts the log behind it. Only when
 * the core wants to send a follower the mark's data does a snapshot thread
 * copy the store (kv_snapshot_copy_fd, from one read transaction, beside the
 * apply thread's writes) and read from the copy the applied index it stands
 * for; once the loop has seen that index applied it knows the
 * configuration then (the last change at or below it, recorded while the
 * copy ran), and the storage thread records the copy above the mark. A
 * snapshot received from the leader is installed by the apply thread, in
 * order with the batches around it, and never while a copy runs.
 *
 * Failures: a persist that fails is retried until it succeeds (never
 * skipped); a batch that fails is retried on the apply thread, in place, so
 * that later batches wait for it. A snapshot that fails is logged and
 * taken again later. Bounds: batches queued for the apply thread are bounded
 * in count and bytes; beyond them the loop takes no new update until the apply
 * thread catches up. */
#include "member_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "maint.h"

#define APPLY_MAX_BATCHES 64        /* queued batches (snapshots, installs split them) */
#define APPLY_MAX_BYTES (64u << 20) /* entries queued for the apply thread */
#define CATCHUP_ENTRIES 5000        /* log entries kept behind a snapshot, as etcd */

/* ---- results ------------------------------------------------------------ */

void member_batch_add_result(struct apply_batch *b, uint64_t id, struct apply_result *r)
{
	if (b->n_res == b->cap_res) {
		size_t cap = b->cap_res ? b->cap_res * 2 : 16;
		struct result *v = realloc(b->res, cap * sizeof *v);
		if (v == NULL) {
			apply_result_free(r); /* the client's call times out */
			return;
		}
		b->res = v;
		b->cap_res = cap;
	}
	b->res[b->n_res].id = id;
	b->res[b->n_res++].r = *r;
}

static void batch_clear_results(struct apply_batch *b)
{
	for (size_t i = 0; i < b->n_res; i++)
		apply_result_free(&b->res[i].r);
	b->n_res = 0;
}

static void batch_free(struct apply_batch *b)
{
	if (b == NULL)
		return;
	batch_clear_results(b);
	free(b->res);
	free(b->entries);
	free(b->buf);
	if (b->has_events)
		kv_events_free(&b->events);
	free(b);
}

/* ---- the apply thread ----------------------------------------------------- */

/* Applies the batch's entries in one write transaction. */
static int apply_entries(struct apply_batch *b)
{
	struct srv_member *m = b->m;
	struct kv_wtx *w;
	Etcdserverpb__ResponseHeader h;
	uint64_t last = m->ap_applied;
	struct raft_conf conf = m->ap_conf;
	int err = kv_txn_begin_write(m->kv, &w);
	if (err != 0)
		return err;
	member_header_init(m, &h, 0);
	h.raft_term = b->entries[b->n_entries - 1].term;
	for (uint32_t i = 0; i < b->n_entries && err == 0; i++) {
		const struct raft_entry *e = &b->entries[i];
		if (e->index <= m->ap_applied)
			continue; /* applied before a restart: replay skips it */
		last = e->index;
		if (e->type == RAFT_ENTRY_CONF_CHANGE) {
			/* the core applies its effect on the configuration itself;
			 * the copy here names the configuration of snapshots */
			struct raft_conf_change cc;
			if (raft_conf_change_decode(e->data, e->len, &cc) == 0)
				(void)raft_conf_apply(&conf, &cc);
			err = cluster_apply_conf_change(m, w, e, b);
			continue;
		}
		if (e->type != RAFT_ENTRY_NORMAL || e->len == 0)
			continue; /* no-ops */
		Cairn__Serverpb__Request *req =
			cairn__serverpb__request__unpack(NULL, e->len, e->data);
		if (req == NULL)
			continue; /* not a Request: every member skips it alike */
		struct apply_result r;
		err = apply_request(w, req, &h, &r);
		if (err == 0 && r.members_changed)
			b->members_changed = true;
		if (err == 0 && (req->op_case == CAIRN__SERVERPB__REQUEST__OP_LEASE_GRANT ||
				 req->op_case == CAIRN__SERVERPB__REQUEST__OP_LEASE_REVOKE ||
				 req->op_case == CAIRN__SERVERPB__REQUEST__OP_LEASE_CHECKPOINT))
			b->leases_changed = true;
		if (err == 0 && req->member_id == m->id && req->id != 0)
			member_batch_add_result(b, req->id, &r);
		else if (err == 0)
			apply_result_free(&r);
		cairn__serverpb__request__free_unpacked(req, NULL);
	}
	if (err == 0 && last == m->ap_applied) {
		kv_txn_abort(w); /* nothing new */
		return 0;
	}
	if (err == 0) {
		double t0 = srv_metrics_now();
		err = kv_txn_commit_events(w, last, &b->events); /* for the watch hub */
		srv_hist_observe(&m->metrics.backend_commit, srv_metrics_now() - t0);
		srv_hist_observe(&m->metrics.apply_batch, (double)b->n_entries);
	} else {
		kv_txn_abort(w);
	}
	if (err == 0) {
		m->ap_applied = last;
		m->ap_conf = conf;
		b->has_events = true;
	}
	return err;
}

/* Copies the file at src into dst (created), synced. */
static int copy_file(const char *src, const char *dst)
{
	int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -1;
	int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0) {
		close(in);
		return -1;
	}
	static __thread char buf[1 << 16];
	ssize_t n;
	int rv = 0;
	while (rv == 0 && (n = read(in, buf, sizeof buf)) != 0) {
		if (n < 0) {
			if (errno != EINTR)
				rv = -1;
			continue;
		}
		for (ssize_t off = 0; rv == 0 && off < n;) {
			ssize_t k = write(out, buf + off, (size_t)(n - off));
			if (k < 0 && errno != EINTR)
				rv = -1;
			else if (k > 0)
				off += k;
		}
	}
	if (rv == 0 && fsync(out) != 0)
		rv = -1;
	close(in);
	if (close(out) != 0)
		rv = -1;
	if (rv != 0)
		unlink(dst);
	return rv;
}

/* Replaces the store with the snapshot the logstore holds (b->snap). The
 * logstore keeps its file: the store consumes a copy, beside its data. */
static int install_snapshot(struct apply_batch *b)
{
	struct srv_member *m = b->m;
	char src[4200], dst[4200];
	int err = logstore_snapshot_path(m->ls, b->snap.index, src, sizeof src);
	if (err != 0)
		return KV_EINVAL;
	snprintf(dst, sizeof dst, "%s/db/install.tmp", m->data_dir);
	if (copy_file(src, dst) != 0)
		return KV_EIO;
	err = kv_snapshot_install(m->kv, dst);
	unlink(dst); /* consumed on success; a leftover otherwise */
	if (err != 0)
		return err;
	/* the copy names the member that took it: this one's ids again */
	struct kv_wtx *w = NULL;
	err = kv_txn_begin_write(m->kv, &w);
	if (err == 0) {
		err = kv_set_ids(w, m->cluster_id, m->id);
		if (err == 0)
			err = kv_txn_commit(w, b->snap.index);
		else
			kv_txn_abort(w);
	}
	if (err == 0) {
		m->ap_applied = b->snap.index;
		m->ap_conf = b->snap.conf;
		b->members_changed = true;
	}
	return err;
}

static void apply_run(struct srv_job *job)
{
	struct apply_batch *b = (struct apply_batch *)job;
	struct srv_member *m = b->m;
	for (unsigned tries = 0;; tries++) {
		batch_clear_results(b);
		b->err = b->kind == BATCH_ENTRIES ? apply_entries(b) : install_snapshot(b);
		if (b->err == 0 || atomic_load(&m->apply_stop))
			break;
		/* a failure of this member (memory, a full disk): applied
		 * again until it works; later batches wait behind it */
		if (tries % 50 == 0)
			srv_log(SRV_LOG_ERROR, "storage-failed", "step",
				b->kind == BATCH_INSTALL ? "install-snapshot" : "apply", "error",
				kv_strerror(b->err), NULL);
		struct timespec ts = { 0, RETRY_MS * 1000000L };
		nanosleep(&ts, NULL);
	}
	if (b->err == 0) {
		struct kv_status st;
		b->applied = m->ap_applied;
		b->conf = m->ap_conf;
		if (kv_status(m->kv, &st) == 0)
			b->revision = st.revision;
	}
}

/* ---- the loop's side -------------------------------------------------------- */

static void process(struct srv_member *m);
static void snapshot_try_commit(struct srv_member *m);
static void snap_commit_run(struct srv_job *job);
static void snap_commit_done(struct srv_job *job, bool cancelled);
static void apply_next(struct srv_member *m);

static void answer_results(struct srv_member *m, struct apply_batch *b)
{
	for (size_t i = 0; i < b->n_res; i++) {
		struct waiter *w = member_waiter_find(m, b->res[i].id);
		if (w == NULL)
			continue; /* the client is gone */
		struct net_grpc_call *call = w->call;
		struct apply_result *r = &b->res[i].r;
		member_waiter_remove(m, w);
		if (r->code != 0) {
			member_finish_error(call, r->code, r->message);
		} else {
			int err = net_grpc_call_send(call, r->resp, r->resp_len);
			net_grpc_call_finish(call, err == 0 ? ST_OK : ST_INTERNAL,
					     err == 0 ? "" : "send failed");
		}
	}
	batch_clear_results(b);
}

/* Serves the held ReadIndex reads whose index the store has applied. */
static void serve_held_reads(struct srv_member *m)
{
	size_t k = 0;
	for (size_t i = 0; i < m->n_reads; i++) {
		struct held_read *hr = &m->reads[i];
		if (hr->index > m->applied || m->installing > 0) {
			m->reads[k++] = *hr;
			continue;
		}
		struct waiter *w = member_waiter_find(m, hr->id);
		if (w == NULL)
			continue; /* timed out or cancelled meanwhile */
		struct net_grpc_call *call = w->call;
		Etcdserverpb__RangeRequest *q = w->range;
		w->range = NULL;
		member_waiter_remove(m, w);
		member_serve_range(m, call, q);
		etcdserverpb__range_request__free_unpacked(q, NULL);
	}
	m->n_reads = k;
}

static void take_reads(struct srv_member *m, const struct raft_update *u)
{
	for (uint32_t i = 0; i < u->n_reads; i++) {
		const struct raft_read_state *rs = &u->reads[i];
		struct waiter *w = member_waiter_find(m, rs->id);
		if (w == NULL)
			continue;
		if (rs->status == 0 && m->n_reads < MAX_WAITERS) {
			m->reads[m->n_reads].id = rs->id;
			m->reads[m->n_reads++].index = rs->index;
			continue;
		}
		struct net_grpc_call *call = w->call;
		member_waiter_remove(m, w);
		member_finish_error(call, ST_UNAVAILABLE,
				    rs->status == RAFT_ENOLEADER ? "etcdserver: no leader" :
								   "etcdserver: leader changed");
	}
	serve_held_reads(m);
}

static bool conf_equal(const struct raft_conf *a, const struct raft_conf *b)
{
	if (a->n != b->n)
		return false;
	for (uint32_t i = 0; i < a->n; i++)
		if (a->members[i].id != b->members[i].id ||
		    a->members[i].role != b->members[i].role)
			return false;
	return true;
}

static void apply_done(struct srv_job *job, bool cancelled)
{
	struct apply_batch *b = (struct apply_batch *)job;
	struct srv_member *m = b->m;
	m->apply_batches--;
	m->apply_bytes -= b->bytes;
	m->apply_busy = false;
	if (b->kind == BATCH_INSTALL)
		m->installing--;
	if (!cancelled)
		apply_next(m); /* the apply thread goes on while this one is answered */
	if (cancelled || m->stopping || b->err != 0) {
		batch_free(b);
		return;
	}
	if (b->applied > m->applied)
		m->applied = b->applied;
	if (!conf_equal(&b->conf, &m->conf_applied)) {
		m->conf_applied = b->conf;
		if (m->snap_copying || m->snap_copied) {
			if (m->n_marks < CONF_MARKS) {
				m->marks[m->n_marks].applied = b->applied;
				m->marks[m->n_marks++].conf = b->conf;
			} else {
				m->n_marks = CONF_MARKS + 1; /* too many: this copy is dropped */
			}
		}
	}
	if (b->revision > 0)
		m->revision = b->revision;
	answer_results(m, b);
	/* watchers after the clients: a watcher never sees a change before its writer */
	if (b->leases_changed || b->kind == BATCH_INSTALL)
		lease_store_changed(m);
	lease_applied(m);
	if (b->kind == BATCH_INSTALL)
		watch_hub_resync(m, b->revision);
	else if (b->has_events)
		watch_hub_batch(m, &b->events, b->revision);
	if (b->kind == BATCH_INSTALL) {
		struct srv_log_line l;
		m->snap_index = b->snap.index;
		srv_log_begin(&l, SRV_LOG_INFO, "snapshot-installed");
		srv_log_u64(&l, "index", b->snap.index);
		srv_log_u64(&l, "term", b->snap.term);
		srv_log_u64(&l, "size", b->snap.size);
		srv_log_end(&l);
	}
	if (b->members_changed)
		cluster_members_changed(m);
	serve_held_reads(m);
	batch_free(b);
	if (m->snap_copied)
		snapshot_try_commit(m);
	process(m);
}

static struct apply_batch *batch_new(struct srv_member *m, int kind)
{
	struct apply_batch *b = calloc(1, sizeof *b);
	if (b == NULL)
		return NULL;
	b->job.run = apply_run;
	b->job.done = apply_done;
	b->m = m;
	b->kind = kind;
	return b;
}

/* Submits the oldest queued batch if the apply thread is free: one batch
 * at a time, so that entries committed meanwhile join the queue's last
 * batch and are applied in one transaction with it. */
static void apply_next(struct srv_member *m)
{
	struct apply_batch *b = m->aq_head;
	if (m->apply_busy || b == NULL || m->stopping)
		return;
	if (b->kind == BATCH_INSTALL && m->snap_copying)
		return; /* the store is not replaced under a copy: after it */
	m->aq_head = b->next;
	if (m->aq_head == NULL)
		m->aq_tail = NULL;
	b->next = NULL;
	for (uint32_t i = 0; i < b->n_entries; i++)
		if (b->entries[i].len > 0) /* offsets into buf until now */
			b->entries[i].data = b->buf + (uintptr_t)b->entries[i].data;
	m->apply_busy = true;
	if (srv_worker_submit(m->applier, &b->job) != 0) {
		srv_log(SRV_LOG_ERROR, "apply-submit-failed", NULL);
		abort(); /* one job at a time on a live worker: cannot happen */
	}
}

static void batch_queue(struct srv_member *m, struct apply_batch *b)
{
	m->apply_batches++;
	if (b->kind == BATCH_INSTALL)
		m->installing++;
	if (m->aq_tail != NULL)
		m->aq_tail->next = b;
	else
		m->aq_head = b;
	m->aq_tail = b;
	apply_next(m);
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 64;
	while (n < need)
		n *= 2;
	void *v = realloc(*p, n * size);
	if (v == NULL)
		return -1;
	*p = v;
	*cap = n;
	return 0;
}

/* The committed entries of u, copied (the core owns them until
 * raft_advance) onto the last queued batch, or into a new one. */
static int submit_committed(struct srv_member *m, const struct raft_update *u)
{
	if (u->n_committed == 0)
		return 0;
	struct apply_batch *b = m->aq_tail;
	bool fresh = b == NULL || b->kind != BATCH_ENTRIES;
	if (fresh && (b = batch_new(m, BATCH_ENTRIES)) == NULL)
		return -1;
	size_t data = 0;
	for (uint32_t i = 0; i < u->n_committed; i++)
		data += u->committed[i].len;
	size_t cap_entries = b->cap_entries;
	if (grow((void **)&b->entries, &cap_entries, (size_t)b->n_entries + u->n_committed,
		 sizeof *b->entries) != 0 ||
	    grow((void **)&b->buf, &b->buf_cap, b->buf_len + data, 1) != 0) {
		b->cap_entries = (uint32_t)cap_entries;
		if (fresh)
			batch_free(b);
		return -1;
	}
	b->cap_entries = (uint32_t)cap_entries;
	for (uint32_t i = 0; i < u->n_committed; i++) {
		struct raft_entry *e = &b->entries[b->n_entries++];
		*e = u->committed[i];
		if (e->len > 0) {
			memcpy(b->buf + b->buf_len, u->committed[i].data, e->len);
			e->data = (const uint8_t *)(uintptr_t)b->buf_len; /* fixed at submit */
			b->buf_len += e->len;
		}
	}
	size_t bytes = data + u->n_committed * sizeof *b->entries;
	b->bytes += bytes;
	m->apply_bytes += bytes;
	if (fresh)
		batch_queue(m, b);
	return 0;
}

static int submit_install(struct srv_member *m, const struct raft_snapshot_meta *meta)
{
	struct apply_batch *b = batch_new(m, BATCH_INSTALL);
	if (b == NULL)
		return -1;
	b->snap = *meta;
	batch_queue(m, b);
	return 0;
}

/* ---- local snapshots ------------------------------------------------------ */

/* On the snapshot thread: a copy of the store (from one read transaction,
 * beside the apply thread's writes) and the applied index it holds. */
static void snap_copy_run(struct srv_job *job)
{
	struct snap_copy_job *j = (struct snap_copy_job *)job;
	struct srv_member *m = j->m;
	j->index = 0;
	j->err = logstore_snapshot_create(m->ls, j->path, sizeof j->path, &j->fd) != 0 ? KV_EIO : 0;
	if (j->err == 0)
		j->err = kv_snapshot_copy_fd(m->kv, j->fd);
	/* synced here, so that the storage thread's commit finds nothing to
	 * write and does not hold the log's writes behind this file */
	if (j->err == 0 && fdatasync(j->fd) != 0)
		j->err = KV_EIO;
	if (j->err == 0)
		j->err = kv_snapshot_file_applied(j->path, &j->index);
}

static void snap_drop(struct srv_member *m, const char *why, int err)
{
	struct snap_copy_job *j = &m->copyjob;
	if (j->fd >= 0) {
		close(j->fd);
		unlink(j->path);
	}
	j->fd = -1;
	m->snap_busy = false;
	m->snap_copied = false;
	if (why != NULL)
		srv_log(SRV_LOG_ERROR, "snapshot-failed", "error", why, "detail",
			err != 0 ? kv_strerror(err) : "", NULL);
}

static void snap_copy_done(struct srv_job *job, bool cancelled)
{
	struct snap_copy_job *j = (struct snap_copy_job *)job;
	struct srv_member *m = j->m;
	m->snap_copying = false;
	if (cancelled || m->stopping) {
		snap_drop(m, NULL, 0);
		return;
	}
	apply_next(m); /* an install that waited for the copy */
	if (j->err == 0 && j->index <= m->snap_index) {
		/* nothing applied since the mark: an empty entry moves the
		 * applied index on, and the next copy is above the mark */
		snap_drop(m, NULL, 0);
		(void)raft_propose(m->raft, NULL, 0, NULL);
		member_kick(m);
		return;
	}
	if (j->err != 0) {
		snap_drop(m, "copy failed", j->err);
		return;
	}
	m->snap_copied = true;
	snapshot_try_commit(m);
}

/* Every --snapshot-count applied entries (etcd's rule) a mark at the applied
 * index lets the log be compacted behind it: the store is durable at every
 * commit with its applied index, so no copy is needed. Each member's first
 * mark comes up to a fifth of the count later, by its id, so that the
 * members of a cluster do not all compact at once. */
static void maybe_mark(struct srv_member *m)
{
	uint64_t due = m->snap_index + m->snapshot_count;
	if (m->snap_index == 0)
		due += (m->id >> 16) % (m->snapshot_count / 5 + 1);
	if (m->snap_busy || m->stopping || m->snapshot_count == 0 || m->installing > 0 ||
	    m->applied < due || m->applied <= m->snap_index)
		return;
	struct snap_commit_job *j = &m->snapjob;
	uint64_t keep = m->snapshot_count < CATCHUP_ENTRIES ? m->snapshot_count : CATCHUP_ENTRIES;
	j->m = m;
	j->job.run = snap_commit_run;
	j->job.done = snap_commit_done;
	j->mark = true;
	j->index = m->applied;
	j->conf = m->conf_applied;
	j->fd = -1;
	j->compact_to = j->index > keep ? j->index - keep : 0;
	if (srv_worker_submit(m->worker, &j->job) == 0)
		m->snap_busy = true;
}

/* A copy of the store, when the core wants to send a follower the data of
 * a mark (logstore_snapshot_wanted): one at a time, never beside an
 * install. */
static void maybe_copy(struct srv_member *m)
{
	if (m->snap_busy || m->stopping || m->installing > 0 || !logstore_snapshot_wanted(m->ls))
		return;
	struct snap_copy_job *j = &m->copyjob;
	j->m = m;
	j->job.run = snap_copy_run;
	j->job.done = snap_copy_done;
	j->fd = -1;
	m->marks[0].applied = m->applied;
	m->marks[0].conf = m->conf_applied;
	m->n_marks = 1;
	if (srv_worker_submit(m->snapper, &j->job) != 0)
		return;
	m->snap_busy = true;
	m->snap_copying = true;
}

/* ---- the storage thread ------------------------------------------------------ */

static void persist_run(struct srv_job *job)
{
	struct persist_job *j = (struct persist_job *)job;
	bool wal = j->u.n_entries > 0 || j->u.has_hard_state;
	double t0 = wal ? srv_metrics_now() : 0;
	j->err = logstore_persist(j->m->ls, &j->u);
	/* the WAL append and its fdatasync, for etcd_disk_wal_fsync_duration_seconds */
	if (wal && j->err == 0)
		srv_hist_observe(&j->m->metrics.wal_fsync, srv_metrics_now() - t0);
}

static void snap_commit_run(struct srv_job *job)
{
	struct snap_commit_job *j = (struct snap_commit_job *)job;
	struct srv_member *m = j->m;
	if (j->mark) {
		j->err = logstore_snapshot_mark(m->ls, j->index, &j->conf);
	} else {
		j->err = logstore_snapshot_commit(m->ls, j->index, &j->conf, j->fd);
		j->fd = -1;
	}
	if (j->err == 0 && j->compact_to > 0)
		j->err = logstore_compact(m->ls, j->compact_to);
}

static void snap_commit_done(struct srv_job *job, bool cancelled)
{
	struct snap_commit_job *j = (struct snap_commit_job *)job;
	struct srv_member *m = j->m;
	if (j->fd >= 0)
		close(j->fd); /* cancelled before it ran */
	j->fd = -1;
	m->snap_busy = false;
	if (cancelled || m->stopping)
		return;
	if (j->err != 0) {
		struct raft_snapshot_meta held;
		logstore_snapshot_held(m->ls, &held);
		if (held.index >= j->index)
			/* a snapshot from the leader was installed meanwhile */
			srv_log(SRV_LOG_INFO, "snapshot-superseded", NULL);
		else
			srv_log(SRV_LOG_ERROR, "snapshot-failed", "error", raft_strerror(j->err),
				"detail", logstore_last_error(m->ls), NULL);
		return;
	}
	m->snap_index = j->index;
	struct srv_log_line l;
	srv_log_begin(&l, j->mark ? SRV_LOG_DEBUG : SRV_LOG_INFO,
		      j->mark ? "log-compacted" : "snapshot-saved");
	srv_log_u64(&l, "index", j->index);
	srv_log_u64(&l, "compacted-to", j->compact_to);
	srv_log_end(&l);
}

/* Records the snapshot the snapshot thread copied, then compacts the log:
 * once this member has applied the copy's index, so that its configuration
 * then is known (the last change at or below it). */
static void snapshot_try_commit(struct srv_member *m)
{
	struct snap_copy_job *c = &m->copyjob;
	if (!m->snap_copied || m->applied < c->index)
		return;
	if (m->n_marks > CONF_MARKS) {
		snap_drop(m, "too many configuration changes during the copy", 0);
		return;
	}
	const struct raft_conf *conf = NULL;
	for (size_t i = 0; i < m->n_marks; i++)
		if (m->marks[i].applied <= c->index)
			conf = &m->marks[i].conf;
	if (conf == NULL) {
		snap_drop(m, "no configuration for the copy's index", 0);
		return;
	}
	struct snap_commit_job *j = &m->snapjob;
	j->m = m;
	j->job.run = snap_commit_run;
	j->job.done = snap_commit_done;
	j->mark = false;
	j->compact_to = 0; /* the mark below it compacted the log already */
	j->index = c->index;
	j->conf = *conf;
	j->fd = c->fd;
	c->fd = -1;
	m->snap_copied = false;
	if (srv_worker_submit(m->worker, &j->job) != 0) {
		close(j->fd);
		unlink(c->path);
		j->fd = -1;
		m->snap_busy = false;
	}
}

static void send_msgs(struct srv_member *m, const struct raft_msg *msgs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *buf;
		size_t len;
		if (srv_raftwire_encode(&msgs[i], &buf, &len) != 0)
			continue;
		if (msgs[i].type == RAFT_MSG_SNAPSHOT)
			(void)net_transport_send_snapshot(m->transport, msgs[i].to, buf, len);
		else
			(void)net_transport_send(m->transport, msgs[i].to, buf, len);
		free(buf);
	}
}

/* Steps 3 to 6 of the contract, once the update is persisted. */
static void after_persist(struct srv_member *m, struct persist_job *j)
{
	send_msgs(m, j->u.msgs_after_persist, j->u.n_msgs_after_persist);
	if (j->u.snapshot != NULL && submit_install(m, j->u.snapshot) != 0)
		abort(); /* out of memory: the store would miss the snapshot */
	if (submit_committed(m, &j->u) != 0)
		abort(); /* out of memory: the store would miss entries */
	take_reads(m, &j->u);
	raft_advance(m->raft);
	logstore_release(m->ls);
	maybe_mark(m);
	maybe_copy(m);
}

static void on_retry(uv_timer_t *t)
{
	struct srv_member *m = t->data;
	if (!m->stopping && srv_worker_submit(m->worker, &m->job.job) != 0)
		uv_timer_start(&m->retry, on_retry, RETRY_MS, 0);
}

static void persist_done(struct srv_job *job, bool cancelled)
{
	struct persist_job *j = (struct persist_job *)job;
	struct srv_member *m = j->m;
	if (cancelled || m->stopping) {
		m->job_busy = false;
		return;
	}
	if (j->err != 0) {
		/* never skipped: tried again until the cause (a full disk,
		 * memory) is gone */
		srv_log(SRV_LOG_ERROR, "storage-failed", "step", "persist", "error",
			raft_strerror(j->err), "detail", logstore_last_error(m->ls), NULL);
		uv_timer_start(&m->retry, on_retry, RETRY_MS, 0);
		return;
	}
	after_persist(m, j);
	m->job_busy = false;
	process(m);
}

/* Takes the next update if none is out and the apply thread keeps up:
 * messages out now, the rest to the storage thread. */
static void process(struct srv_member *m)
{
	if (m->job_busy || m->stopping || m->apply_batches >= APPLY_MAX_BATCHES ||
	    m->apply_bytes >= APPLY_MAX_BYTES || !raft_has_update(m->raft))
		return;
	struct persist_job *j = &m->job;
	int err = raft_ready(m->raft, &j->u);
	if (err != 0) {
		srv_log(SRV_LOG_ERROR, "raft-ready-failed", "error", raft_strerror(err), NULL);
		return;
	}
	if (j->u.leader != m->leader) {
		struct srv_log_line l;
		srv_log_begin(&l, SRV_LOG_INFO, "leader-changed");
		srv_log_hex(&l, "leader", j->u.leader);
		srv_log_u64(&l, "term", j->u.has_hard_state ? j->u.hard_state.term : m->term);
		srv_log_end(&l);
		if (j->u.leader != 0)
			m->metrics.leader_changes++;
		m->leader = j->u.leader;
		lease_leader_changed(m, m->leader); /* only a leader keeps lease deadlines */
	}
	if (m->handoff_on && j->u.leader != 0 && j->u.leader != m->id) {
		/* the handoff is done: stop. This update is dropped unpersisted
		 * with nothing of it sent, so it promised nothing. */
		member_stop_now(m);
		return;
	}
	if (j->u.has_hard_state)
		m->term = j->u.hard_state.term;
	send_msgs(m, j->u.msgs, j->u.n_msgs);
	if (j->u.n_snapshot_chunks == 0 && j->u.snapshot == NULL && j->u.n_entries == 0 &&
	    !j->u.has_hard_state) {
		/* nothing for the disk (heartbeats, commits, reads) */
		after_persist(m, j);
		member_kick(m);
		return;
	}
	m->job_busy = true;
	if (srv_worker_submit(m->worker, &j->job) != 0)
		uv_timer_start(&m->retry, on_retry, RETRY_MS, 0);
}

static void on_kick(uv_idle_t *h)
{
	struct srv_member *m = h->data;
	uv_idle_stop(h);
	m->kick_on = false;
	process(m);
}

/* process() after the current callback, whatever it is (never inside the
 * gRPC or transport callbacks' own stack frames). */
void member_kick(struct srv_member *m)
{
	if (!m->kick_on && !m->stopping) {
		m->kick_on = true;
		uv_idle_start(&m->kick, on_kick);
	}
}

/* ---- start and stop ----------------------------------------------------------- */

int pipeline_start(struct srv_member *m)
{
	struct raft_status rs;
	raft_status(m->raft, &rs);
	m->ap_applied = m->applied;
	m->ap_conf = rs.conf;
	m->conf_applied = rs.conf;
	m->copyjob.fd = -1;
	atomic_store(&m->apply_stop, false);
	m->job.m = m;
	m->job.job.run = persist_run;
	m->job.job.done = persist_done;
	m->snapjob.fd = -1;
	struct raft_snapshot_meta meta;
	logstore_snapshot_held(m->ls, &meta);
	m->snap_index = meta.index;
	m->reads = calloc(MAX_WAITERS, sizeof *m->reads);
	if (m->reads == NULL)
		return -1;
	if (srv_worker_start(m->loop, 4, &m->worker) != 0)
		return -1;
	if (srv_worker_start(m->loop, 2, &m->applier) != 0)
		return -1;
	/* the snapshot thread: a copy of the store for a follower, and the
	 * Hash and HashKV calls (maint.c), which read the whole store too */
	if (srv_worker_start(m->loop, 1 + MAINT_MAX_HASHES, &m->snapper) != 0)
		return -1;
	return 0;
}

int pipeline_close(struct srv_member *m, void (*closed)(void *data))
{
	int n = 0;
	atomic_store(&m->apply_stop, true);
	if (m->worker != NULL) {
		n++;
		srv_worker_close(m->worker, closed, m);
	}
	if (m->applier != NULL) {
		n++;
		srv_worker_close(m->applier, closed, m);
	}
	if (m->snapper != NULL) {
		n++;
		srv_worker_close(m->snapper, closed, m);
	}
	return n;
}

void pipeline_free(struct srv_member *m)
{
	while (m->aq_head != NULL) {
		struct apply_batch *b = m->aq_head;
		m->aq_head = b->next;
		batch_free(b);
	}
	m->aq_tail = NULL;
	free(m->reads);
	m->reads = NULL;
	if (m->snapjob.fd >= 0)
		close(m->snapjob.fd);
	if (m->copyjob.fd >= 0)
		close(m->copyjob.fd);
}
