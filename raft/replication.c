/* replication.c: AppendEntries and InstallSnapshot, on both sides (thesis
 * §3.5, §3.6, §5.1, §10.2): what the leader sends, what a follower keeps. */
#include "raft_int.h"

#include <string.h>

/* ---- replication, leader side (§3.5, §10.2) ------------------------------ */

void raft__start_snapshot(struct raft *r, struct raft__progress *pr);

static void send_snapshot_chunks(struct raft *r, struct raft__progress *pr)
{
	struct raft__outbox *o = &r->box[r->cur];
	uint64_t window = (uint64_t)r->cfg.snapshot_chunk_bytes * r->cfg.max_snapshot_inflight;
	while (!pr->snap_sent_all && pr->snap_offset - pr->snap_acked < window) {
		uint64_t left = pr->snap.size - pr->snap_offset;
		uint32_t len = left < r->cfg.snapshot_chunk_bytes ? (uint32_t)left :
								    r->cfg.snapshot_chunk_bytes;
		uint8_t *buf = NULL;
		uint32_t got = 0;
		if (len > 0) {
			buf = raft__arena_alloc(&o->arena, len);
			if (buf == NULL) {
				return;
			}
			int rv = r->cfg.storage.snapshot_read(r->cfg.storage.ctx, pr->snap.index,
							      pr->snap_offset, buf, len, &got);
			if (rv == RAFT_ESNAPOUTOFDATE) {
				/* a newer snapshot replaced it: start over with that */
				raft__start_snapshot(r, pr);
				return;
			}
			if (rv != 0 || got != len) {
				raft__become_probe(pr);
				return;
			}
		}
		struct raft_msg m = {
			.type = RAFT_MSG_SNAPSHOT,
			.to = pr->id,
			.term = r->term,
			.index = pr->snap_offset,
			.len = len,
			.data = buf,
			.snap = pr->snap,
			.last = pr->snap_offset + len == pr->snap.size,
		};
		raft__send(r, &m, false);
		pr->snap_offset += len;
		if (m.last) {
			pr->snap_sent_all = true;
		}
	}
}

/* §5.1: the follower needs entries the leader no longer has. */
void raft__start_snapshot(struct raft *r, struct raft__progress *pr)
{
	struct raft_snapshot_meta meta;
	int rv = r->cfg.storage.snapshot(r->cfg.storage.ctx, &meta);
	if (rv != 0 || meta.index == 0) {
		return; /* nothing to send yet; retried on the next heartbeat */
	}
	pr->state = RAFT_PROGRESS_SNAPSHOT;
	pr->snap = meta;
	pr->snap_offset = 0;
	pr->snap_acked = 0;
	pr->snap_acked_at_check = 0;
	pr->snap_stall = 0;
	pr->snap_sent_all = false;
	pr->snap_resend = false;
	raft__infl_reset(pr);
	r->stats.snapshots_sent++;
	send_snapshot_chunks(r, pr);
}

/* Send the entries pr lacks (one APPEND of at most max_msg_bytes). Returns
 * whether a message was sent. */
bool raft__send_append(struct raft *r, struct raft__progress *pr, bool send_if_empty)
{
	if (pr->id == r->id || raft__paused(r, pr)) {
		return false;
	}
	uint64_t prev = pr->next - 1;
	uint64_t prev_term;
	if (raft__log_term(&r->log, prev, &prev_term) != 0) {
		raft__start_snapshot(r, pr);
		return false;
	}
	uint64_t last = raft__log_last_index(&r->log);
	struct raft_entry *ents = NULL;
	uint32_t n = 0;
	if (pr->next <= last) {
		int rv = raft__log_slice(&r->log, &r->box[r->cur].arena, pr->next, last + 1,
					 r->cfg.max_msg_bytes, &ents, &n);
		if (rv == RAFT_ECOMPACTED) {
			raft__start_snapshot(r, pr);
			return false;
		}
		if (rv != 0) {
			return false;
		}
	}
	if (n == 0 && !send_if_empty) {
		return false;
	}
	struct raft_msg m = {
		.type = RAFT_MSG_APPEND,
		.to = pr->id,
		.term = r->term,
		.index = prev,
		.log_term = prev_term,
		.commit = r->log.committed,
		.n_entries = n,
		.entries = ents,
	};
	raft__send(r, &m, false);
	if (pr->state == RAFT_PROGRESS_REPLICATE) {
		if (n > 0) {
			uint64_t sent = ents[n - 1].index;
			pr->next = sent + 1;
			raft__infl_add(r, pr, sent);
		}
	} else {
		pr->probe_sent = true;
	}
	return true;
}

void raft__send_append_all(struct raft *r)
{
	r->bcast_pending = false;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id != r->id) {
			raft__send_append(r, &r->prs[i], true);
		}
	}
}

static void send_heartbeat(struct raft *r, struct raft__progress *pr)
{
	struct raft_msg m = {
		.type = RAFT_MSG_HEARTBEAT,
		.to = pr->id,
		.term = r->term,
		/* never ahead of what the follower is known to hold */
		.commit = RAFT_MIN(pr->match, r->log.committed),
		.context = r->hb_seq,
	};
	raft__send(r, &m, false);
}

void raft__send_heartbeat_all(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id != r->id) {
			send_heartbeat(r, &r->prs[i]);
		}
	}
}

static void insertion_sort_desc(uint64_t *a, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++) {
		uint64_t v = a[i];
		uint32_t j = i;
		while (j > 0 && a[j - 1] < v) {
			a[j] = a[j - 1];
			j--;
		}
		a[j] = v;
	}
}

void raft__on_commit_in_term(struct raft *r);

/* §3.6.2: commit the highest index a majority holds, but only by counting
 * replicas of an entry of the current term (Figure 3.7). */
bool raft__maybe_commit(struct raft *r)
{
	uint64_t matches[RAFT_MAX_MEMBERS];
	uint32_t n = 0;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].role == RAFT_VOTER) {
			matches[n++] = r->prs[i].match;
		}
	}
	if (n == 0) {
		return false;
	}
	insertion_sort_desc(matches, n);
	uint64_t qi = matches[raft__quorum(r) - 1];
	if (qi <= r->log.committed) {
		return false;
	}
	if (raft__log_term_or0(&r->log, qi) != r->term) {
		return false;
	}
	raft__log_commit_to(&r->log, qi);
	raft__on_commit_in_term(r);
	return true;
}

void raft__send_timeout_now(struct raft *r, uint64_t to)
{
	struct raft_msg m = { .type = RAFT_MSG_TIMEOUT_NOW, .to = to, .term = r->term };
	raft__send(r, &m, false);
}

void raft__handle_append_response(struct raft *r, struct raft__progress *pr,
				  const struct raft_msg *m)
{
	pr->recent_active = true;
	if (m->reject) {
		uint64_t next_probe = m->hint_index;
		if (m->hint_term > 0) {
			uint64_t t;
			raft__log_find_conflict_by_term(&r->log, m->hint_index, m->hint_term,
							&next_probe, &t);
		}
		if (raft__progress_decr_to(pr, m->index, next_probe)) {
			if (pr->state == RAFT_PROGRESS_REPLICATE) {
				raft__become_probe(pr);
			}
			raft__send_append(r, pr, false);
		}
		return;
	}
	if (m->index > raft__log_last_index(&r->log)) {
		r->stats.dropped_malformed++; /* acknowledges entries never sent */
		return;
	}
	bool was_paused = raft__paused(r, pr);
	if (!raft__progress_update(pr, m->index)) {
		return;
	}
	switch (pr->state) {
	case RAFT_PROGRESS_PROBE:
		raft__become_replicate(pr);
		break;
	case RAFT_PROGRESS_SNAPSHOT:
		if (pr->match >= pr->snap.index) {
			raft__become_replicate(pr);
		}
		break;
	case RAFT_PROGRESS_REPLICATE:
		raft__infl_free_le(r, pr, m->index);
		break;
	default:
		break;
	}
	if (raft__maybe_commit(r)) {
		raft__send_append_all(r);
	} else if (was_paused) {
		/* a paused follower missed the commit broadcast: send it the
		 * commit index now, even with no entry to carry */
		raft__send_append(r, pr, true);
	}
	/* fill the window (pipelining, §10.2.2) */
	for (uint32_t k = 0; k < r->cfg.max_inflight_msgs && raft__send_append(r, pr, false); k++) {
	}
	if (m->from == r->transferee && pr->match == raft__log_last_index(&r->log)) {
		raft__send_timeout_now(r, m->from);
	}
}

void raft__handle_heartbeat_response(struct raft *r, struct raft__progress *pr,
				     const struct raft_msg *m)
{
	pr->recent_active = true;
	pr->probe_sent = false;
	if (pr->state == RAFT_PROGRESS_REPLICATE && raft__infl_full(r, pr)) {
		/* let one more message through so a lost one cannot stall us */
		pr->infl_start = (pr->infl_start + 1) % r->cfg.max_inflight_msgs;
		pr->infl_count--;
	}
	if (pr->match < raft__log_last_index(&r->log)) {
		/* even with nothing new to send: an empty APPEND at next makes a
		 * follower that lost messages reject, which starts a probe */
		raft__send_append(r, pr, true);
	}
	if (m->context > pr->hb_acked && m->context <= r->hb_seq) {
		pr->hb_acked = m->context;
		raft__release_reads(r);
	}
}

void raft__handle_snapshot_response(struct raft *r, struct raft__progress *pr,
				    const struct raft_msg *m)
{
	pr->recent_active = true;
	if (pr->state != RAFT_PROGRESS_SNAPSHOT || m->snap.index != pr->snap.index ||
	    m->snap.term != pr->snap.term || m->index > pr->snap.size) {
		r->stats.dropped_unexpected++;
		return;
	}
	if (m->reject) {
		/* the follower wants the stream from this offset (usually 0).
		 * Resend at the next heartbeat, not now: the rest of the window
		 * draws more rejections, and a follower that cannot stage would
		 * otherwise ping-pong with us without bound. */
		pr->snap_acked = m->index;
		pr->snap_offset = m->index;
		pr->snap_sent_all = false;
		pr->snap_resend = true;
		return;
	} else if (m->index > pr->snap_acked) {
		pr->snap_acked = m->index;
		if (pr->snap_offset < pr->snap_acked) {
			pr->snap_offset = pr->snap_acked;
		}
	}
	send_snapshot_chunks(r, pr);
}

/* A stalled snapshot stream (chunks lost) is resent from the last chunk the
 * follower acknowledged. */
void raft__check_snapshot_stall(struct raft *r, struct raft__progress *pr)
{
	if (pr->snap_resend) {
		pr->snap_resend = false;
		send_snapshot_chunks(r, pr);
		return;
	}
	if (pr->snap_acked != pr->snap_acked_at_check) {
		pr->snap_acked_at_check = pr->snap_acked;
		pr->snap_stall = 0;
		return;
	}
	if (++pr->snap_stall < r->cfg.election_ticks) {
		return;
	}
	pr->snap_stall = 0;
	pr->snap_offset = pr->snap_acked;
	pr->snap_sent_all = false;
	send_snapshot_chunks(r, pr);
}

/* ---- replication, follower side ------------------------------------------ */

bool raft__append_well_formed(const struct raft_msg *m)
{
	uint64_t prev_term = m->log_term;
	for (uint32_t i = 0; i < m->n_entries; i++) {
		const struct raft_entry *e = &m->entries[i];
		if (e->index != m->index + 1 + i || e->term < prev_term || e->term > m->term ||
		    (e->len > 0 && e->data == NULL) || e->type > RAFT_ENTRY_NOOP) {
			return false;
		}
		prev_term = e->term;
	}
	return m->log_term <= m->term;
}

int raft__handle_append(struct raft *r, const struct raft_msg *m)
{
	struct raft_msg resp = { .type = RAFT_MSG_APPEND_RESP, .to = m->from, .term = r->term };
	if (m->index < r->log.committed) {
		resp.index = r->log.committed;
		raft__send(r, &resp, false);
		return 0;
	}
	if (raft__log_match_term(&r->log, m->index, m->log_term)) {
		int rv = raft__log_maybe_append(&r->log, m->entries, m->n_entries);
		if (rv == RAFT_ECORRUPT) {
			r->stats.dropped_malformed++; /* would rewrite committed entries */
			return 0;
		}
		if (rv != 0) {
			return rv;
		}
		uint64_t last_new = m->index + m->n_entries;
		raft__log_commit_to(&r->log, RAFT_MIN(m->commit, last_new));
		resp.index = last_new;
		raft__send(r, &resp, false);
		return 0;
	}
	/* §3.5 (fast back-off): tell the leader our last entry whose term is <= its prev
	 * term, so it can skip a whole term of conflicting entries at once */
	uint64_t hint = RAFT_MIN(m->index, raft__log_last_index(&r->log));
	raft__log_find_conflict_by_term(&r->log, hint, m->log_term, &resp.hint_index,
					&resp.hint_term);
	resp.index = m->index;
	resp.reject = true;
	raft__send(r, &resp, false);
	return 0;
}

void raft__handle_heartbeat(struct raft *r, const struct raft_msg *m)
{
	raft__log_commit_to(&r->log, RAFT_MIN(m->commit, raft__log_last_index(&r->log)));
	struct raft_msg resp = {
		.type = RAFT_MSG_HEARTBEAT_RESP,
		.to = m->from,
		.term = r->term,
		.context = m->context,
	};
	raft__send(r, &resp, false);
}

bool raft__conf_well_formed(const struct raft_conf *c)
{
	if (c->n == 0 || c->n > RAFT_MAX_MEMBERS) {
		return false;
	}
	for (uint32_t i = 0; i < c->n; i++) {
		if (c->members[i].id == 0 ||
		    (c->members[i].role != RAFT_VOTER && c->members[i].role != RAFT_LEARNER)) {
			return false;
		}
		for (uint32_t j = 0; j < i; j++) {
			if (c->members[j].id == c->members[i].id) {
				return false;
			}
		}
	}
	return raft_conf_voters(c) > 0;
}

static int stage_chunk(struct raft *r, const struct raft_msg *m)
{
	struct raft__outbox *o = &r->box[r->cur];
	uint64_t window = (uint64_t)r->cfg.snapshot_chunk_bytes * r->cfg.max_snapshot_inflight;
	if (o->chunk_bytes + m->len > window && o->n_chunks > 0) {
		/* more than an honest leader sends before our acks: keep
		 * memory bounded; the leader resends after a stall */
		return RAFT_EBUSY;
	}
	int rv = raft__grow(r->heap, (void **)&o->chunks, &o->cap_chunks, o->n_chunks + 1,
			    sizeof(*o->chunks));
	if (rv != 0) {
		return rv;
	}
	uint8_t *d = NULL;
	if (m->len > 0) {
		d = raft__arena_alloc(&o->arena, m->len);
		if (d == NULL) {
			return RAFT_ENOMEM;
		}
		memcpy(d, m->data, m->len);
	}
	o->chunk_bytes += m->len;
	struct raft_snapshot_chunk *c = &o->chunks[o->n_chunks++];
	c->index = m->snap.index;
	c->term = m->snap.term;
	c->offset = m->index;
	c->len = m->len;
	c->data = d;
	return 0;
}

/* §5.1 (Figure 5.3) InstallSnapshot receiver, chunk by chunk. */
int raft__handle_snapshot(struct raft *r, const struct raft_msg *m)
{
	const struct raft_snapshot_meta *s = &m->snap;
	struct raft_msg resp = {
		.type = RAFT_MSG_SNAPSHOT_RESP,
		.to = m->from,
		.term = r->term,
		.snap = *s,
	};
	resp.snap.conf.n = 0;
	if (s->index <= r->log.committed) {
		/* already have it: tell the leader where we are */
		r->stats.dropped_snapshot++;
		struct raft_msg ack = { .type = RAFT_MSG_APPEND_RESP,
					.to = m->from,
					.term = r->term,
					.index = r->log.committed };
		raft__send(r, &ack, false);
		return 0;
	}
	if (raft__log_match_term(&r->log, s->index, s->term)) {
		/* our log already holds the snapshot's last entry: by log
		 * matching it holds everything before, so no install. Checked
		 * at every chunk, not only the first: appends may have caught
		 * the log up meanwhile, and installing would throw away entries
		 * after the snapshot that we may have acknowledged already. */
		r->recv_active = false;
		raft__log_commit_to(&r->log, s->index);
		struct raft_msg ack = { .type = RAFT_MSG_APPEND_RESP,
					.to = m->from,
					.term = r->term,
					.index = s->index };
		raft__send(r, &ack, false);
		return 0;
	}
	if (r->box[r->cur].has_snapshot) {
		/* the next update already installs a snapshot, and the caller
		 * stages an update's chunks before its install: chunks of
		 * another snapshot would replace the staged one first. Drop;
		 * the leader resends once the stream stalls. */
		r->stats.dropped_snapshot++;
		return 0;
	}
	if (m->index == 0) {
		r->recv_active = true;
		r->recv_index = s->index;
		r->recv_term = s->term;
		r->recv_offset = 0;
	}
	if (!r->recv_active || s->index != r->recv_index || s->term != r->recv_term ||
	    m->index != r->recv_offset) {
		r->stats.dropped_snapshot++;
		bool same = r->recv_active && s->index == r->recv_index && s->term == r->recv_term;
		if (same && m->index < r->recv_offset) {
			/* a duplicate: re-acknowledge what we have */
			resp.index = r->recv_offset;
		} else {
			resp.index = same ? r->recv_offset : 0;
			resp.reject = true;
		}
		raft__send(r, &resp, false);
		return 0;
	}
	int rv = stage_chunk(r, m);
	if (rv == RAFT_EBUSY) {
		r->stats.dropped_snapshot++;
		return 0;
	}
	if (rv != 0) {
		return rv;
	}
	r->recv_offset += m->len;
	if (!m->last) {
		resp.index = r->recv_offset;
		raft__send(r, &resp, false);
		return 0;
	}
	/* the whole snapshot is staged: install it */
	r->recv_active = false;
	struct raft__outbox *o = &r->box[r->cur];
	o->has_snapshot = true;
	o->snapshot = *s;
	raft__log_restore(&r->log, s);
	r->log.applying = s->index;
	r->log.applied = s->index;
	r->conf = s->conf;
	raft__progress_sync(r);
	r->stats.snapshots_installed++;
	struct raft_msg ack = {
		.type = RAFT_MSG_APPEND_RESP, .to = m->from, .term = r->term, .index = s->index
	};
	raft__send(r, &ack, false);
	return 0;
}
