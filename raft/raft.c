/* raft.c: the Raft state machine: roles and terms (thesis §3.3-3.4),
 * replication and commitment (§3.5-3.6), snapshots (§5), membership (§4),
 * leadership transfer (§3.10), ReadIndex (§6.4), pre-vote (§9.6) and
 * check-quorum (§6.2). Events come in through the raft_* calls; everything
 * the caller must do comes out through raft_ready(). */
#include "raft_int.h"

#include <string.h>

enum campaign_kind { CAMPAIGN_PREVOTE, CAMPAIGN_ELECTION, CAMPAIGN_TRANSFER };

static void send_append_all(struct raft *r);
static bool send_append(struct raft *r, struct raft__progress *pr, bool send_if_empty);
static void fail_pending_reads(struct raft *r);
static void release_reads(struct raft *r);

/* ---- configuration ------------------------------------------------------- */

void raft_config_init(struct raft_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->election_ticks = 10;
	cfg->heartbeat_ticks = 1;
	cfg->pre_vote = true;
	cfg->check_quorum = true;
	cfg->max_entry_bytes = 1536u * 1024u + 64u * 1024u;
	cfg->max_msg_bytes = 1024u * 1024u;
	cfg->max_inflight_msgs = 256;
	cfg->max_uncommitted_bytes = 64u * 1024u * 1024u;
	cfg->max_committed_bytes = 64u * 1024u * 1024u;
	cfg->max_pending_reads = 4096;
	cfg->snapshot_chunk_bytes = 1024u * 1024u;
	cfg->max_snapshot_inflight = 4;
}

static void config_defaults(struct raft_config *c)
{
	struct raft_config d;
	raft_config_init(&d);
#define DEF(f)                                                                              \
	if (c->f == 0) {                                                                    \
		c->f = d.f;                                                                 \
	}
	DEF(election_ticks)
	DEF(heartbeat_ticks)
	DEF(max_entry_bytes)
	DEF(max_msg_bytes)
	DEF(max_inflight_msgs)
	DEF(max_uncommitted_bytes)
	DEF(max_committed_bytes)
	DEF(max_pending_reads)
	DEF(snapshot_chunk_bytes)
	DEF(max_snapshot_inflight)
#undef DEF
	if (c->max_inflight_msgs > RAFT__MAX_INFLIGHT) {
		c->max_inflight_msgs = RAFT__MAX_INFLIGHT;
	}
}

/* ---- members and progress ------------------------------------------------ */

static struct raft__progress *progress_get(struct raft *r, uint64_t id)
{
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id == id) {
			return &r->prs[i];
		}
	}
	return NULL;
}

static uint32_t quorum(const struct raft *r)
{
	return raft_conf_voters(&r->conf) / 2 + 1;
}

static bool promotable(const struct raft *r)
{
	return raft_conf_role(&r->conf, r->id) == RAFT_VOTER;
}

static void infl_reset(struct raft__progress *pr)
{
	pr->infl_start = 0;
	pr->infl_count = 0;
}

static bool infl_full(const struct raft *r, const struct raft__progress *pr)
{
	return pr->infl_count >= r->cfg.max_inflight_msgs;
}

static void infl_add(const struct raft *r, struct raft__progress *pr, uint64_t last)
{
	RAFT_ASSERT(!infl_full(r, pr));
	uint32_t pos = (pr->infl_start + pr->infl_count) % r->cfg.max_inflight_msgs;
	pr->infl[pos] = last;
	pr->infl_count++;
}

/* Free the in-flight messages whose last index is <= index. */
static void infl_free_le(const struct raft *r, struct raft__progress *pr, uint64_t index)
{
	while (pr->infl_count > 0 && pr->infl[pr->infl_start] <= index) {
		pr->infl_start = (pr->infl_start + 1) % r->cfg.max_inflight_msgs;
		pr->infl_count--;
	}
}

static void progress_init(struct raft *r, struct raft__progress *pr, uint64_t id, uint32_t role)
{
	memset(pr, 0, sizeof(*pr));
	pr->id = id;
	pr->role = role;
	pr->state = RAFT_PROGRESS_PROBE;
	pr->next = raft__log_last_index(&r->log) + 1;
	pr->recent_active = true;
}

static void become_probe(struct raft__progress *pr)
{
	if (pr->state == RAFT_PROGRESS_SNAPSHOT) {
		pr->next = RAFT_MAX(pr->match + 1, pr->snap.index + 1);
	} else {
		pr->next = pr->match + 1;
	}
	pr->state = RAFT_PROGRESS_PROBE;
	pr->probe_sent = false;
	infl_reset(pr);
}

static void become_replicate(struct raft__progress *pr)
{
	pr->state = RAFT_PROGRESS_REPLICATE;
	pr->next = pr->match + 1;
	pr->probe_sent = false;
	infl_reset(pr);
}

static bool paused(const struct raft *r, const struct raft__progress *pr)
{
	switch (pr->state) {
	case RAFT_PROGRESS_PROBE:
		return pr->probe_sent;
	case RAFT_PROGRESS_REPLICATE:
		return infl_full(r, pr);
	default:
		return true;
	}
}

/* match moved forward: true if it did */
static bool progress_update(struct raft__progress *pr, uint64_t n)
{
	bool updated = false;
	if (pr->match < n) {
		pr->match = n;
		updated = true;
		pr->probe_sent = false;
	}
	if (pr->next < n + 1) {
		pr->next = n + 1;
	}
	return updated;
}

/* A rejection: move next back (fast back-off, §5.4.1). False if stale. */
static bool progress_decr_to(struct raft__progress *pr, uint64_t rejected, uint64_t match_hint)
{
	if (pr->state == RAFT_PROGRESS_REPLICATE) {
		if (rejected <= pr->match) {
			return false;
		}
		pr->next = pr->match + 1;
		return true;
	}
	if (pr->next == 0 || pr->next - 1 != rejected) {
		return false;
	}
	pr->next = RAFT_MAX(RAFT_MIN(rejected, match_hint + 1), pr->match + 1);
	pr->probe_sent = false;
	return true;
}

/* Rebuild the progress table from r->conf, keeping what is known of members
 * that stay. Never allocates. */
static void progress_sync(struct raft *r)
{
	struct raft__progress old[RAFT_MAX_MEMBERS];
	uint32_t n_old = r->n_prs;
	memcpy(old, r->prs, sizeof(old[0]) * n_old);
	for (uint32_t i = 0; i < r->conf.n; i++) {
		const struct raft_member *m = &r->conf.members[i];
		struct raft__progress *pr = &r->prs[i];
		uint32_t j = 0;
		for (; j < n_old; j++) {
			if (old[j].id == m->id) {
				break;
			}
		}
		if (j < n_old) {
			*pr = old[j];
			pr->role = m->role;
		} else {
			progress_init(r, pr, m->id, m->role);
		}
	}
	r->n_prs = r->conf.n;
}

/* ---- state transitions (§3.3) -------------------------------------------- */

static void reset_election_timer(struct raft *r)
{
	r->election_elapsed = 0;
	uint64_t x = r->cfg.rand(r->cfg.rand_ctx);
	r->randomized_timeout = r->cfg.election_ticks + (uint32_t)(x % r->cfg.election_ticks);
}

static void reset(struct raft *r, uint64_t term)
{
	if (r->term != term) {
		r->term = term;
		r->vote = 0;
	}
	r->leader = 0;
	reset_election_timer(r);
	r->heartbeat_elapsed = 0;
	r->transferee = 0;
	r->transfer_elapsed = 0;
	r->bcast_pending = false;
	r->uncommitted_bytes = 0;
	uint64_t last = raft__log_last_index(&r->log);
	for (uint32_t i = 0; i < r->n_prs; i++) {
		struct raft__progress *pr = &r->prs[i];
		uint64_t id = pr->id;
		uint32_t role = pr->role;
		progress_init(r, pr, id, role);
		pr->next = last + 1;
		if (id == r->id) {
			/* entries below the unstable offset are durable */
			pr->match = r->log.u.has_snapshot ? 0 : r->log.u.offset - 1;
		}
	}
}

static void leave_leader(struct raft *r)
{
	if (r->state == RAFT_LEADER) {
		fail_pending_reads(r);
	}
}

static void become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
	leave_leader(r);
	reset(r, term);
	r->state = RAFT_FOLLOWER;
	r->leader = leader;
}

static void become_pre_candidate(struct raft *r)
{
	RAFT_ASSERT(r->state != RAFT_LEADER);
	/* term and vote are left alone: a pre-vote changes nothing durable */
	r->state = RAFT_PRE_CANDIDATE;
	r->leader = 0;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		r->prs[i].vote = 0;
	}
}

static void become_candidate(struct raft *r)
{
	RAFT_ASSERT(r->state != RAFT_LEADER);
	reset(r, r->term + 1);
	r->vote = r->id;
	r->state = RAFT_CANDIDATE;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		r->prs[i].vote = 0;
	}
}

static int append_local(struct raft *r, uint32_t type, const void *data, uint32_t len,
			uint64_t *index)
{
	struct raft_entry e = {
		.term = r->term,
		.index = raft__log_last_index(&r->log) + 1,
		.type = type,
		.len = len,
		.data = data,
	};
	int rv = raft__log_append(&r->log, &e, 1);
	if (rv != 0) {
		return rv;
	}
	r->uncommitted_bytes += len;
	r->bcast_pending = true;
	if (index != NULL) {
		*index = e.index;
	}
	return 0;
}

static void become_leader(struct raft *r)
{
	RAFT_ASSERT(r->state == RAFT_CANDIDATE);
	reset(r, r->term);
	r->state = RAFT_LEADER;
	r->leader = r->id;
	r->stats.leader_changes++;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id == r->id) {
			become_replicate(&r->prs[i]);
			r->prs[i].next = raft__log_last_index(&r->log) + 1;
		}
	}
	/* §3.6.2 and §6.4: an entry of the new term commits everything before
	 * it; until it is applied no membership change may start (the fix to
	 * the single-server change algorithm, §4.1). */
	int rv = append_local(r, RAFT_ENTRY_NOOP, NULL, 0, NULL);
	if (rv != 0) {
		/* without the no-op the leader could not commit: step down */
		become_follower(r, r->term, 0);
		return;
	}
	r->pending_conf_index = raft__log_last_index(&r->log);
}

/* ---- elections (§3.4, §9.6) ---------------------------------------------- */

static uint32_t poll(struct raft *r, uint64_t id, bool granted, uint32_t *rejected)
{
	struct raft__progress *pr = progress_get(r, id);
	if (pr != NULL && pr->vote == 0) {
		pr->vote = granted ? 1 : 2;
	}
	uint32_t yes = 0;
	*rejected = 0;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].role != RAFT_VOTER) {
			continue;
		}
		yes += r->prs[i].vote == 1;
		*rejected += r->prs[i].vote == 2;
	}
	return yes;
}

static void campaign(struct raft *r, enum campaign_kind kind)
{
	if (!promotable(r)) {
		return;
	}
	uint32_t type;
	uint64_t vote_term;
	if (kind == CAMPAIGN_PREVOTE) {
		become_pre_candidate(r);
		type = RAFT_MSG_PREVOTE;
		vote_term = r->term + 1;
	} else {
		become_candidate(r);
		type = RAFT_MSG_VOTE;
		vote_term = r->term;
	}
	r->stats.elections_started++;
	uint32_t rejected;
	if (poll(r, r->id, true, &rejected) >= quorum(r)) {
		/* a single voter wins at once */
		if (kind == CAMPAIGN_PREVOTE) {
			campaign(r, CAMPAIGN_ELECTION);
		} else {
			become_leader(r);
		}
		return;
	}
	uint64_t last = raft__log_last_index(&r->log);
	uint64_t last_term = raft__log_last_term(&r->log);
	for (uint32_t i = 0; i < r->n_prs; i++) {
		const struct raft__progress *pr = &r->prs[i];
		if (pr->id == r->id || pr->role != RAFT_VOTER) {
			continue;
		}
		struct raft_msg m = {
			.type = type,
			.to = pr->id,
			.term = vote_term,
			.index = last,
			.log_term = last_term,
			.context = kind == CAMPAIGN_TRANSFER,
		};
		raft__send(r, &m, false);
	}
}

static void handle_vote_request(struct raft *r, const struct raft_msg *m)
{
	bool can_vote = r->vote == m->from || (r->vote == 0 && r->leader == 0) ||
			(m->type == RAFT_MSG_PREVOTE && m->term > r->term);
	struct raft_msg resp = {
		.type = m->type == RAFT_MSG_VOTE ? RAFT_MSG_VOTE_RESP : RAFT_MSG_PREVOTE_RESP,
		.to = m->from,
	};
	if (can_vote && raft__log_up_to_date(&r->log, m->index, m->log_term)) {
		/* a granted pre-vote answers in the term the candidate asks for */
		resp.term = m->term;
		if (m->type == RAFT_MSG_VOTE) {
			r->election_elapsed = 0;
			r->vote = m->from;
		}
	} else {
		resp.term = r->term;
		resp.reject = true;
	}
	raft__send(r, &resp, false);
}

static void handle_vote_response(struct raft *r, const struct raft_msg *m)
{
	bool pre = m->type == RAFT_MSG_PREVOTE_RESP;
	if ((pre && r->state != RAFT_PRE_CANDIDATE) || (!pre && r->state != RAFT_CANDIDATE)) {
		r->stats.dropped_unexpected++;
		return;
	}
	uint32_t rejected;
	uint32_t yes = poll(r, m->from, !m->reject, &rejected);
	if (yes >= quorum(r)) {
		if (pre) {
			campaign(r, CAMPAIGN_ELECTION);
		} else {
			become_leader(r);
			send_append_all(r);
		}
	} else if (rejected >= quorum(r)) {
		become_follower(r, r->term, 0);
	}
}

/* ---- replication, leader side (§3.5, §10.2) ------------------------------ */

static void start_snapshot(struct raft *r, struct raft__progress *pr);

static void send_snapshot_chunks(struct raft *r, struct raft__progress *pr)
{
	struct raft__outbox *o = &r->box[r->cur];
	uint64_t window = (uint64_t)r->cfg.snapshot_chunk_bytes * r->cfg.max_snapshot_inflight;
	while (!pr->snap_sent_all && pr->snap_offset - pr->snap_acked < window) {
		uint64_t left = pr->snap.size - pr->snap_offset;
		uint32_t len = left < r->cfg.snapshot_chunk_bytes ? (uint32_t)left
								     : r->cfg.snapshot_chunk_bytes;
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
				start_snapshot(r, pr);
				return;
			}
			if (rv != 0 || got != len) {
				become_probe(pr);
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

/* §5.3: the follower needs entries the leader no longer has. */
static void start_snapshot(struct raft *r, struct raft__progress *pr)
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
	infl_reset(pr);
	r->stats.snapshots_sent++;
	send_snapshot_chunks(r, pr);
}

/* Send the entries pr lacks (one APPEND of at most max_msg_bytes). Returns
 * whether a message was sent. */
static bool send_append(struct raft *r, struct raft__progress *pr, bool send_if_empty)
{
	if (pr->id == r->id || paused(r, pr)) {
		return false;
	}
	uint64_t prev = pr->next - 1;
	uint64_t prev_term;
	if (raft__log_term(&r->log, prev, &prev_term) != 0) {
		start_snapshot(r, pr);
		return false;
	}
	uint64_t last = raft__log_last_index(&r->log);
	struct raft_entry *ents = NULL;
	uint32_t n = 0;
	if (pr->next <= last) {
		int rv = raft__log_slice(&r->log, &r->box[r->cur].arena, pr->next, last + 1,
					 r->cfg.max_msg_bytes, &ents, &n);
		if (rv == RAFT_ECOMPACTED) {
			start_snapshot(r, pr);
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
			infl_add(r, pr, sent);
		}
	} else {
		pr->probe_sent = true;
	}
	return true;
}

static void send_append_all(struct raft *r)
{
	r->bcast_pending = false;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id != r->id) {
			send_append(r, &r->prs[i], true);
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

static void send_heartbeat_all(struct raft *r)
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

static void on_commit_in_term(struct raft *r);

/* §3.6.2: commit the highest index a majority holds, but only by counting
 * replicas of an entry of the current term (Figure 3.7). */
static bool maybe_commit(struct raft *r)
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
	uint64_t qi = matches[quorum(r) - 1];
	if (qi <= r->log.committed) {
		return false;
	}
	if (raft__log_term_or0(&r->log, qi) != r->term) {
		return false;
	}
	raft__log_commit_to(&r->log, qi);
	on_commit_in_term(r);
	return true;
}

static void send_timeout_now(struct raft *r, uint64_t to)
{
	struct raft_msg m = {.type = RAFT_MSG_TIMEOUT_NOW, .to = to, .term = r->term};
	raft__send(r, &m, false);
}

static void handle_append_response(struct raft *r, struct raft__progress *pr,
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
		if (progress_decr_to(pr, m->index, next_probe)) {
			if (pr->state == RAFT_PROGRESS_REPLICATE) {
				become_probe(pr);
			}
			send_append(r, pr, false);
		}
		return;
	}
	if (m->index > raft__log_last_index(&r->log)) {
		r->stats.dropped_malformed++; /* acknowledges entries never sent */
		return;
	}
	bool was_paused = paused(r, pr);
	if (!progress_update(pr, m->index)) {
		return;
	}
	switch (pr->state) {
	case RAFT_PROGRESS_PROBE:
		become_replicate(pr);
		break;
	case RAFT_PROGRESS_SNAPSHOT:
		if (pr->match >= pr->snap.index) {
			become_replicate(pr);
		}
		break;
	case RAFT_PROGRESS_REPLICATE:
		infl_free_le(r, pr, m->index);
		break;
	default:
		break;
	}
	if (maybe_commit(r)) {
		send_append_all(r);
	} else if (was_paused) {
		send_append(r, pr, false);
	}
	/* fill the window (pipelining, §10.2.2) */
	for (uint32_t k = 0; k < r->cfg.max_inflight_msgs && send_append(r, pr, false); k++) {
	}
	if (m->from == r->transferee && pr->match == raft__log_last_index(&r->log)) {
		send_timeout_now(r, m->from);
	}
}

static void handle_heartbeat_response(struct raft *r, struct raft__progress *pr,
				      const struct raft_msg *m)
{
	pr->recent_active = true;
	pr->probe_sent = false;
	if (pr->state == RAFT_PROGRESS_REPLICATE && infl_full(r, pr)) {
		/* let one more message through so a lost one cannot stall us */
		pr->infl_start = (pr->infl_start + 1) % r->cfg.max_inflight_msgs;
		pr->infl_count--;
	}
	if (pr->match < raft__log_last_index(&r->log)) {
		/* even with nothing new to send: an empty APPEND at next makes a
		 * follower that lost messages reject, which starts a probe */
		send_append(r, pr, true);
	}
	if (m->context > pr->hb_acked && m->context <= r->hb_seq) {
		pr->hb_acked = m->context;
		release_reads(r);
	}
}

static void handle_snapshot_response(struct raft *r, struct raft__progress *pr,
				     const struct raft_msg *m)
{
	pr->recent_active = true;
	if (pr->state != RAFT_PROGRESS_SNAPSHOT || m->snap.index != pr->snap.index ||
	    m->snap.term != pr->snap.term || m->index > pr->snap.size) {
		r->stats.dropped_unexpected++;
		return;
	}
	if (m->reject) {
		/* the follower wants the stream from this offset (usually 0) */
		pr->snap_acked = m->index;
		pr->snap_offset = m->index;
		pr->snap_sent_all = false;
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
static void check_snapshot_stall(struct raft *r, struct raft__progress *pr)
{
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

static bool append_well_formed(const struct raft_msg *m)
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

static int handle_append(struct raft *r, const struct raft_msg *m)
{
	struct raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from, .term = r->term};
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
	/* §5.4.1: tell the leader our last entry whose term is <= its prev
	 * term, so it can skip a whole term of conflicting entries at once */
	uint64_t hint = RAFT_MIN(m->index, raft__log_last_index(&r->log));
	raft__log_find_conflict_by_term(&r->log, hint, m->log_term, &resp.hint_index,
					&resp.hint_term);
	resp.index = m->index;
	resp.reject = true;
	raft__send(r, &resp, false);
	return 0;
}

static void handle_heartbeat(struct raft *r, const struct raft_msg *m)
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

static bool conf_well_formed(const struct raft_conf *c)
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
	struct raft_snapshot_chunk *c = &o->chunks[o->n_chunks++];
	c->index = m->snap.index;
	c->term = m->snap.term;
	c->offset = m->index;
	c->len = m->len;
	c->data = d;
	return 0;
}

/* §5.3 InstallSnapshot receiver, chunk by chunk. */
static int handle_snapshot(struct raft *r, const struct raft_msg *m)
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
		struct raft_msg ack = {.type = RAFT_MSG_APPEND_RESP,
				       .to = m->from,
				       .term = r->term,
				       .index = r->log.committed};
		raft__send(r, &ack, false);
		return 0;
	}
	if (m->index == 0 && raft__log_match_term(&r->log, s->index, s->term)) {
		/* our log already holds the snapshot's last entry: by log
		 * matching it holds everything before, so no install */
		raft__log_commit_to(&r->log, s->index);
		struct raft_msg ack = {.type = RAFT_MSG_APPEND_RESP,
				       .to = m->from,
				       .term = r->term,
				       .index = s->index};
		raft__send(r, &ack, false);
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
	progress_sync(r);
	r->stats.snapshots_installed++;
	struct raft_msg ack = {
		.type = RAFT_MSG_APPEND_RESP, .to = m->from, .term = r->term, .index = s->index};
	raft__send(r, &ack, false);
	return 0;
}

/* ---- ReadIndex (§6.4) ---------------------------------------------------- */

static bool committed_in_term(const struct raft *r)
{
	return raft__log_term_or0(&r->log, r->log.committed) == r->term;
}

static int push_waiting(struct raft *r, uint64_t id, uint64_t index)
{
	int rv = raft__grow(r->heap, (void **)&r->waiting, &r->cap_waiting, r->n_waiting + 1,
			    sizeof(*r->waiting));
	if (rv != 0) {
		return rv;
	}
	r->waiting[r->n_waiting].id = id;
	r->waiting[r->n_waiting].index = index;
	r->waiting[r->n_waiting].status = 0;
	r->n_waiting++;
	return 0;
}

static void answer_read(struct raft *r, const struct raft__read *rd, int status)
{
	if (rd->from == 0) {
		if (status == 0) {
			if (push_waiting(r, rd->id, rd->index) == 0) {
				return;
			}
			status = RAFT_ENOMEM;
		}
		(void)raft__read_out(r, rd->id, 0, status);
		return;
	}
	struct raft_msg m = {
		.type = RAFT_MSG_READ_INDEX_RESP,
		.to = rd->from,
		.term = r->term,
		.index = rd->index,
		.context = rd->id,
		.reject = status != 0,
	};
	raft__send(r, &m, false);
}

/* Release, in order, the reads a quorum has confirmed. */
static void release_reads(struct raft *r)
{
	uint32_t k = 0;
	for (; k < r->n_reads; k++) {
		struct raft__read *rd = &r->reads[k];
		if (rd->seq == 0) {
			break;
		}
		uint32_t acks = 0;
		for (uint32_t i = 0; i < r->n_prs; i++) {
			const struct raft__progress *pr = &r->prs[i];
			if (pr->role == RAFT_VOTER && (pr->id == r->id || pr->hb_acked >= rd->seq)) {
				acks++;
			}
		}
		if (acks < quorum(r)) {
			break;
		}
		answer_read(r, rd, 0);
	}
	if (k > 0) {
		memmove(r->reads, r->reads + k, sizeof(*r->reads) * (r->n_reads - k));
		r->n_reads -= k;
	}
}

/* Give the reads still waiting for the term's first commit an index, and
 * start the heartbeat round that confirms them. */
static void confirm_reads(struct raft *r)
{
	bool any = false;
	for (uint32_t i = 0; i < r->n_reads; i++) {
		if (r->reads[i].seq == 0) {
			if (!any) {
				r->hb_seq++;
				any = true;
			}
			r->reads[i].seq = r->hb_seq;
			r->reads[i].index = r->log.committed;
		}
	}
	if (any) {
		send_heartbeat_all(r);
		release_reads(r);
	}
}

static void on_commit_in_term(struct raft *r)
{
	if (r->n_reads > 0 && committed_in_term(r)) {
		confirm_reads(r);
	}
}

static void fail_pending_reads(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_reads; i++) {
		answer_read(r, &r->reads[i], RAFT_ELEADERLOST);
	}
	r->n_reads = 0;
}

static int leader_read(struct raft *r, uint64_t id, uint64_t from)
{
	if (r->n_reads + r->n_waiting >= r->cfg.max_pending_reads) {
		return RAFT_EBUSY;
	}
	int rv = raft__grow(r->heap, (void **)&r->reads, &r->cap_reads, r->n_reads + 1,
			    sizeof(*r->reads));
	if (rv != 0) {
		return rv;
	}
	struct raft__read *rd = &r->reads[r->n_reads++];
	rd->id = id;
	rd->from = from;
	rd->index = 0;
	rd->seq = 0;
	if (committed_in_term(r)) {
		confirm_reads(r);
	}
	return 0;
}

int raft_read_index(struct raft *r, uint64_t id)
{
	if (r->state == RAFT_LEADER) {
		return leader_read(r, id, 0);
	}
	if (r->leader == 0) {
		return raft__read_out(r, id, 0, RAFT_ENOLEADER);
	}
	if (r->n_waiting >= r->cfg.max_pending_reads) {
		return RAFT_EBUSY;
	}
	struct raft_msg m = {.type = RAFT_MSG_READ_INDEX, .to = r->leader, .context = id};
	raft__send(r, &m, false);
	return 0;
}

/* ---- proposals, membership, transfer ------------------------------------- */

static int propose_check(struct raft *r, size_t len)
{
	if (r->transferee != 0) {
		return RAFT_ETRANSFERRING;
	}
	if (len > r->cfg.max_entry_bytes) {
		return RAFT_ETOOBIG;
	}
	if (r->uncommitted_bytes > 0 &&
	    r->uncommitted_bytes + len > r->cfg.max_uncommitted_bytes) {
		return RAFT_EBUSY;
	}
	return 0;
}

int raft_propose(struct raft *r, const void *data, size_t len, uint64_t *index)
{
	if (index != NULL) {
		*index = 0;
	}
	if (len > 0 && data == NULL) {
		return RAFT_EINVAL;
	}
	if (len > r->cfg.max_entry_bytes) {
		return RAFT_ETOOBIG;
	}
	if (r->state == RAFT_LEADER) {
		int rv = propose_check(r, len);
		if (rv != 0) {
			return rv;
		}
		return append_local(r, RAFT_ENTRY_NORMAL, data, (uint32_t)len, index);
	}
	if (r->leader == 0) {
		return RAFT_ENOLEADER;
	}
	struct raft_entry e = {.type = RAFT_ENTRY_NORMAL, .len = (uint32_t)len, .data = data};
	struct raft_msg m = {.type = RAFT_MSG_PROPOSE, .to = r->leader, .n_entries = 1, .entries = &e};
	raft__send(r, &m, true);
	return 0;
}

int raft_propose_conf_change(struct raft *r, const struct raft_conf_change *cc, uint64_t *index)
{
	if (index != NULL) {
		*index = 0;
	}
	if (r->state != RAFT_LEADER) {
		return RAFT_ENOTLEADER;
	}
	if (r->transferee != 0) {
		return RAFT_ETRANSFERRING;
	}
	if (r->pending_conf_index > r->log.applied) {
		return RAFT_ECONFPENDING;
	}
	struct raft_conf next = r->conf;
	int rv = raft_conf_apply(&next, cc);
	if (rv != 0) {
		return rv;
	}
	uint8_t buf[RAFT_CONF_CHANGE_HEADER + RAFT_MAX_CONF_CONTEXT];
	int n = raft_conf_change_encode(cc, buf, sizeof(buf));
	if (n < 0) {
		return n;
	}
	rv = propose_check(r, (size_t)n);
	if (rv != 0) {
		return rv;
	}
	uint64_t idx;
	rv = append_local(r, RAFT_ENTRY_CONF_CHANGE, buf, (uint32_t)n, &idx);
	if (rv != 0) {
		return rv;
	}
	r->pending_conf_index = idx;
	if (index != NULL) {
		*index = idx;
	}
	return 0;
}

static int leader_transfer(struct raft *r, uint64_t to)
{
	if (raft_conf_role(&r->conf, to) == 0) {
		return RAFT_EUNKNOWNMEMBER;
	}
	if (raft_conf_role(&r->conf, to) != RAFT_VOTER) {
		return RAFT_ENOTVOTER;
	}
	if (to == r->id || to == r->transferee) {
		return 0;
	}
	r->transferee = to;
	r->transfer_elapsed = 0;
	struct raft__progress *pr = progress_get(r, to);
	RAFT_ASSERT(pr != NULL);
	if (pr->match == raft__log_last_index(&r->log)) {
		send_timeout_now(r, to);
	} else {
		send_append(r, pr, false);
	}
	return 0;
}

int raft_transfer_leadership(struct raft *r, uint64_t to)
{
	if (to == 0) {
		return RAFT_EINVAL;
	}
	if (r->state == RAFT_LEADER) {
		return leader_transfer(r, to);
	}
	if (r->leader == 0) {
		return RAFT_ENOLEADER;
	}
	struct raft_msg m = {.type = RAFT_MSG_TRANSFER, .to = r->leader, .context = to};
	raft__send(r, &m, false);
	return 0;
}

int raft_campaign(struct raft *r)
{
	if (r->state == RAFT_LEADER) {
		return 0;
	}
	if (!promotable(r)) {
		return RAFT_ENOTVOTER;
	}
	campaign(r, r->cfg.pre_vote ? CAMPAIGN_PREVOTE : CAMPAIGN_ELECTION);
	return 0;
}

void raft_report_unreachable(struct raft *r, uint64_t id)
{
	if (r->state != RAFT_LEADER) {
		return;
	}
	struct raft__progress *pr = progress_get(r, id);
	if (pr == NULL || pr->id == r->id) {
		return;
	}
	if (pr->state == RAFT_PROGRESS_REPLICATE) {
		become_probe(pr);
	}
}

/* Membership takes effect when its entry is applied (as etcd-io/raft does);
 * with one change at a time and the no-op rule this is safe (§4.1). */
static void apply_conf_change(struct raft *r, const struct raft_conf_change *cc)
{
	if (raft_conf_apply(&r->conf, cc) != 0) {
		return; /* refused identically on every member */
	}
	progress_sync(r);
	if (r->state != RAFT_LEADER) {
		return;
	}
	if (!promotable(r)) {
		/* removed or demoted: stop leading (§4.2.2) */
		become_follower(r, r->term, 0);
		return;
	}
	if (r->transferee != 0 && raft_conf_role(&r->conf, r->transferee) != RAFT_VOTER) {
		r->transferee = 0;
	}
	(void)maybe_commit(r);
	r->bcast_pending = true;
	release_reads(r);
}

/* ---- ticks --------------------------------------------------------------- */

static void tick_leader(struct raft *r)
{
	r->heartbeat_elapsed++;
	r->election_elapsed++;
	if (r->transferee != 0 && ++r->transfer_elapsed >= r->cfg.election_ticks) {
		r->transferee = 0; /* §3.10: abort a transfer that takes too long */
	}
	if (r->election_elapsed >= r->cfg.election_ticks) {
		r->election_elapsed = 0;
		if (r->cfg.check_quorum) {
			/* §6.2: a leader that has not heard from a majority for an
			 * election timeout steps down */
			uint32_t active = 0;
			for (uint32_t i = 0; i < r->n_prs; i++) {
				struct raft__progress *pr = &r->prs[i];
				if (pr->role == RAFT_VOTER && (pr->id == r->id || pr->recent_active)) {
					active++;
				}
				if (pr->id != r->id) {
					pr->recent_active = false;
				}
			}
			if (active < quorum(r)) {
				become_follower(r, r->term, 0);
				return;
			}
		}
	}
	if (r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
		r->heartbeat_elapsed = 0;
		send_heartbeat_all(r);
		for (uint32_t i = 0; i < r->n_prs; i++) {
			struct raft__progress *pr = &r->prs[i];
			if (pr->id == r->id) {
				continue;
			}
			if (pr->state == RAFT_PROGRESS_SNAPSHOT) {
				check_snapshot_stall(r, pr);
			} else if (pr->state == RAFT_PROGRESS_PROBE && !pr->probe_sent &&
				   pr->next <= raft__log_last_index(&r->log)) {
				send_append(r, pr, false);
			}
		}
	}
}

void raft_tick(struct raft *r)
{
	if (r->state == RAFT_LEADER) {
		tick_leader(r);
		return;
	}
	r->election_elapsed++;
	if (promotable(r) && r->election_elapsed >= r->randomized_timeout) {
		r->election_elapsed = 0;
		campaign(r, r->cfg.pre_vote ? CAMPAIGN_PREVOTE : CAMPAIGN_ELECTION);
	}
}

/* ---- step ---------------------------------------------------------------- */

static bool termless(uint32_t type)
{
	return type == RAFT_MSG_PROPOSE || type == RAFT_MSG_READ_INDEX ||
	       type == RAFT_MSG_READ_INDEX_RESP || type == RAFT_MSG_TRANSFER;
}

static bool from_leader(uint32_t type)
{
	return type == RAFT_MSG_APPEND || type == RAFT_MSG_HEARTBEAT ||
	       type == RAFT_MSG_SNAPSHOT || type == RAFT_MSG_TIMEOUT_NOW;
}

static bool well_formed(const struct raft *r, const struct raft_msg *m)
{
	if (m->type == 0 || m->type > RAFT_MSG_TYPE_MAX || m->to != r->id || m->from == 0 ||
	    m->from == r->id) {
		return false;
	}
	if (m->n_entries > 0) {
		if (m->entries == NULL ||
		    (m->type != RAFT_MSG_APPEND && m->type != RAFT_MSG_PROPOSE)) {
			return false;
		}
		for (uint32_t i = 0; i < m->n_entries; i++) {
			if (m->entries[i].len > 0 && m->entries[i].data == NULL) {
				return false;
			}
		}
	}
	if (m->type == RAFT_MSG_APPEND && !append_well_formed(m)) {
		return false;
	}
	if (m->type == RAFT_MSG_SNAPSHOT) {
		if ((m->len > 0 && m->data == NULL) || m->snap.index == 0 ||
		    m->snap.term > m->term || m->index > m->snap.size ||
		    m->len > m->snap.size - m->index ||
		    m->last != (m->index + m->len == m->snap.size) ||
		    !conf_well_formed(&m->snap.conf)) {
			return false;
		}
	}
	if (!termless(m->type) && m->term == 0) {
		return false;
	}
	return true;
}

/* Messages from a sender outside our configuration: leader traffic is
 * judged by its term (we may not have applied the change that added the
 * sender yet, or we are a new member with no configuration); anything
 * else from a stranger is ignored. */
static bool sender_known(const struct raft *r, const struct raft_msg *m)
{
	if (raft_conf_role(&r->conf, m->from) != 0 || r->conf.n == 0) {
		return true;
	}
	return from_leader(m->type) || m->type == RAFT_MSG_READ_INDEX_RESP;
}

static int step_leader(struct raft *r, const struct raft_msg *m)
{
	struct raft__progress *pr = progress_get(r, m->from);
	switch (m->type) {
	case RAFT_MSG_PROPOSE: {
		for (uint32_t i = 0; i < m->n_entries; i++) {
			const struct raft_entry *e = &m->entries[i];
			if (e->type != RAFT_ENTRY_NORMAL || propose_check(r, e->len) != 0 ||
			    append_local(r, RAFT_ENTRY_NORMAL, e->data, e->len, NULL) != 0) {
				r->stats.proposals_dropped++;
			}
		}
		return 0;
	}
	case RAFT_MSG_READ_INDEX:
		if (leader_read(r, m->context, m->from) != 0) {
			struct raft__read rd = {.id = m->context, .from = m->from};
			answer_read(r, &rd, RAFT_EBUSY);
		}
		return 0;
	case RAFT_MSG_TRANSFER:
		(void)leader_transfer(r, m->context);
		return 0;
	default:
		break;
	}
	if (pr == NULL) {
		r->stats.dropped_unknown_member++;
		return 0;
	}
	switch (m->type) {
	case RAFT_MSG_APPEND_RESP:
		handle_append_response(r, pr, m);
		break;
	case RAFT_MSG_HEARTBEAT_RESP:
		handle_heartbeat_response(r, pr, m);
		break;
	case RAFT_MSG_SNAPSHOT_RESP:
		handle_snapshot_response(r, pr, m);
		break;
	default:
		r->stats.dropped_unexpected++;
		break;
	}
	return 0;
}

static int step_follower(struct raft *r, const struct raft_msg *m)
{
	switch (m->type) {
	case RAFT_MSG_APPEND:
		r->election_elapsed = 0;
		r->leader = m->from;
		return handle_append(r, m);
	case RAFT_MSG_HEARTBEAT:
		r->election_elapsed = 0;
		r->leader = m->from;
		handle_heartbeat(r, m);
		return 0;
	case RAFT_MSG_SNAPSHOT:
		r->election_elapsed = 0;
		r->leader = m->from;
		return handle_snapshot(r, m);
	case RAFT_MSG_TIMEOUT_NOW:
		/* §3.10: start an election at once, even inside the lease */
		campaign(r, CAMPAIGN_TRANSFER);
		return 0;
	case RAFT_MSG_PROPOSE:
	case RAFT_MSG_READ_INDEX:
	case RAFT_MSG_TRANSFER:
		/* not the leader: a second hop could loop, so drop */
		if (m->type == RAFT_MSG_PROPOSE) {
			r->stats.proposals_dropped += m->n_entries;
		} else if (m->type == RAFT_MSG_READ_INDEX) {
			struct raft__read rd = {.id = m->context, .from = m->from};
			answer_read(r, &rd, RAFT_ENOLEADER);
		}
		return 0;
	default:
		r->stats.dropped_unexpected++;
		return 0;
	}
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
	if (m == NULL) {
		return RAFT_EINVAL;
	}
	r->stats.msgs_received++;
	if (!well_formed(r, m)) {
		r->stats.dropped_malformed++;
		return 0;
	}
	if (!sender_known(r, m)) {
		r->stats.dropped_unknown_member++;
		return 0;
	}
	if (m->type == RAFT_MSG_READ_INDEX_RESP) {
		/* the index was confirmed by a leader of some term: valid */
		if (m->reject) {
			(void)raft__read_out(r, m->context, 0, RAFT_ELEADERLOST);
		} else if (push_waiting(r, m->context, m->index) != 0) {
			(void)raft__read_out(r, m->context, 0, RAFT_ENOMEM);
		}
		return 0;
	}
	if (!termless(m->type)) {
		if (m->term > r->term) {
			if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
				/* §4.2.3/§6.2: inside a leader's lease, ignore a
				 * campaign unless it is a leadership transfer */
				bool force = m->context == 1;
				bool in_lease = r->cfg.check_quorum && r->leader != 0 &&
						r->election_elapsed < r->cfg.election_ticks;
				if (!force && in_lease) {
					r->stats.dropped_unexpected++;
					return 0;
				}
			}
			if (m->type == RAFT_MSG_PREVOTE ||
			    (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject)) {
				/* a pre-vote never changes our term */
			} else if (from_leader(m->type)) {
				become_follower(r, m->term, m->from);
			} else {
				become_follower(r, m->term, 0);
			}
		} else if (m->term < r->term) {
			r->stats.dropped_stale_term++;
			if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
			    (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)) {
				/* tell a stale leader about the newer term, so
				 * it steps down even when our votes are ignored */
				struct raft_msg resp = {
					.type = RAFT_MSG_APPEND_RESP, .to = m->from, .term = r->term};
				raft__send(r, &resp, false);
			} else if (m->type == RAFT_MSG_PREVOTE) {
				struct raft_msg resp = {.type = RAFT_MSG_PREVOTE_RESP,
							.to = m->from,
							.term = r->term,
							.reject = true};
				raft__send(r, &resp, false);
			}
			return 0;
		}
	}
	switch (m->type) {
	case RAFT_MSG_VOTE:
	case RAFT_MSG_PREVOTE:
		if (raft_conf_role(&r->conf, m->from) != RAFT_VOTER) {
			r->stats.dropped_unknown_member++;
			return 0;
		}
		handle_vote_request(r, m);
		return 0;
	case RAFT_MSG_VOTE_RESP:
	case RAFT_MSG_PREVOTE_RESP:
		handle_vote_response(r, m);
		return 0;
	default:
		break;
	}
	switch (r->state) {
	case RAFT_LEADER:
		if (from_leader(m->type)) {
			/* two leaders in one term is impossible: a liar */
			r->stats.dropped_unexpected++;
			return 0;
		}
		return step_leader(r, m);
	case RAFT_CANDIDATE:
	case RAFT_PRE_CANDIDATE:
		if (from_leader(m->type) && m->type != RAFT_MSG_TIMEOUT_NOW) {
			/* a leader of our term exists (§3.4) */
			become_follower(r, r->term, m->from);
		}
		if (r->state != RAFT_FOLLOWER) {
			if (m->type == RAFT_MSG_PROPOSE) {
				r->stats.proposals_dropped += m->n_entries;
			} else if (m->type == RAFT_MSG_READ_INDEX) {
				struct raft__read rd = {.id = m->context, .from = m->from};
				answer_read(r, &rd, RAFT_ENOLEADER);
			} else {
				r->stats.dropped_unexpected++;
			}
			return 0;
		}
		return step_follower(r, m);
	default:
		return step_follower(r, m);
	}
}

/* ---- updates ------------------------------------------------------------- */

static struct raft_hard_state hard_state(const struct raft *r)
{
	struct raft_hard_state hs = {
		.term = r->term, .vote = r->vote, .commit = r->log.committed};
	return hs;
}

static bool hs_equal(const struct raft_hard_state *a, const struct raft_hard_state *b)
{
	return a->term == b->term && a->vote == b->vote && a->commit == b->commit;
}

static uint64_t apply_limit(const struct raft *r)
{
	return r->log.committed;
}

bool raft_has_update(const struct raft *r)
{
	if (r->handed_out) {
		return false;
	}
	struct raft_hard_state hs = hard_state(r);
	if (!raft__outbox_empty(&r->box[r->cur]) || !hs_equal(&hs, &r->prev_hs)) {
		return true;
	}
	if (r->log.u.n > r->log.u.in_progress || apply_limit(r) > r->log.applying) {
		return true;
	}
	if (r->state == RAFT_LEADER && r->bcast_pending) {
		return true;
	}
	for (uint32_t i = 0; i < r->n_waiting; i++) {
		if (r->waiting[i].index <= r->log.applying) {
			return true;
		}
	}
	return false;
}

int raft_ready(struct raft *r, struct raft_update *u)
{
	if (r->handed_out) {
		return RAFT_EINVAL;
	}
	if (r->state == RAFT_LEADER && r->bcast_pending) {
		send_append_all(r); /* batching: one APPEND per follower per update */
	}
	struct raft__outbox *o = &r->box[r->cur];
	struct raft__log *l = &r->log;
	memset(u, 0, sizeof(*u));

	struct raft_hard_state hs = hard_state(r);
	if (!hs_equal(&hs, &r->prev_hs)) {
		u->has_hard_state = true;
		u->hard_state = hs;
		r->prev_hs = hs;
	}
	u->n_snapshot_chunks = o->n_chunks;
	u->snapshot_chunks = o->chunks;
	if (o->has_snapshot) {
		u->snapshot = &o->snapshot;
		o->snapshot_handed = o->snapshot.index;
	}

	/* entries to persist: the unstable tail not yet handed out */
	uint32_t n = l->u.n - l->u.in_progress;
	if (n > 0) {
		struct raft_entry *ents = raft__arena_alloc(&o->arena, sizeof(*ents) * n);
		if (ents == NULL) {
			return RAFT_ENOMEM;
		}
		memcpy(ents, l->u.ents + l->u.in_progress, sizeof(*ents) * n);
		u->entries = ents;
		u->n_entries = n;
		o->persist_index = ents[n - 1].index;
		o->persist_term = ents[n - 1].term;
		l->u.in_progress = l->u.n;
	}

	/* committed entries to apply, at most max_committed_bytes */
	uint64_t hi = apply_limit(r);
	o->apply_to = l->applying;
	if (hi > l->applying) {
		struct raft_entry *ents;
		uint32_t cn;
		int rv = raft__log_slice(l, &o->arena, l->applying + 1, hi + 1,
					 r->cfg.max_committed_bytes, &ents, &cn);
		if (rv != 0) {
			return rv;
		}
		uint64_t bytes = 0;
		for (uint32_t i = 0; i < cn; i++) {
			bytes += ents[i].len;
			if (ents[i].type != RAFT_ENTRY_CONF_CHANGE) {
				continue;
			}
			struct raft_conf_change cc;
			if (raft_conf_change_decode(ents[i].data, ents[i].len, &cc) != 0) {
				continue;
			}
			rv = raft__grow(r->heap, (void **)&o->ccs, &o->cap_ccs, o->n_ccs + 1,
					sizeof(*o->ccs));
			if (rv != 0) {
				return rv;
			}
			o->ccs[o->n_ccs++] = cc;
		}
		u->committed = ents;
		u->n_committed = cn;
		l->applying += cn;
		o->apply_to = l->applying;
		if (r->state == RAFT_LEADER) {
			r->uncommitted_bytes =
				r->uncommitted_bytes > bytes ? r->uncommitted_bytes - bytes : 0;
		}
	}

	/* confirmed reads whose index the entries above cover */
	uint32_t k = 0;
	for (uint32_t i = 0; i < r->n_waiting; i++) {
		struct raft_read_state *w = &r->waiting[i];
		if (w->index <= l->applying) {
			int rv = raft__read_out(r, w->id, w->index, 0);
			if (rv != 0) {
				return rv;
			}
		} else {
			r->waiting[k++] = *w;
		}
	}
	r->n_waiting = k;

	u->n_msgs = o->n_msgs;
	u->msgs = o->msgs;
	u->n_msgs_after_persist = o->n_after;
	u->msgs_after_persist = o->after;
	u->n_reads = o->n_reads;
	u->reads = o->reads;
	u->state = r->state;
	u->leader = r->leader;

	r->handed_out = true;
	r->cur ^= 1u;
	RAFT_ASSERT(raft__outbox_empty(&r->box[r->cur]));
	return 0;
}

void raft_advance(struct raft *r)
{
	RAFT_ASSERT(r->handed_out);
	struct raft__outbox *o = &r->box[r->cur ^ 1u];
	struct raft__log *l = &r->log;
	if (o->snapshot_handed != 0 && l->u.has_snapshot &&
	    l->u.snapshot.index == o->snapshot_handed) {
		l->u.has_snapshot = false; /* the storage holds it now */
	}
	if (o->persist_index != 0) {
		raft__log_stable_to(l, o->persist_index, o->persist_term);
		if (r->state == RAFT_LEADER &&
		    raft__log_match_term(l, o->persist_index, o->persist_term)) {
			/* §10.2.1: the leader counts itself once its write is done */
			struct raft__progress *self = progress_get(r, r->id);
			if (self != NULL && progress_update(self, o->persist_index)) {
				if (maybe_commit(r)) {
					r->bcast_pending = true;
				}
			}
		}
	}
	if (o->apply_to > l->applied) {
		l->applied = o->apply_to;
	}
	for (uint32_t i = 0; i < o->n_ccs; i++) {
		apply_conf_change(r, &o->ccs[i]);
	}
	raft__log_free_garbage(l);
	raft__outbox_reset(o);
	r->handed_out = false;
}

/* ---- lifecycle ----------------------------------------------------------- */

int raft_new(const struct raft_config *cfg, struct raft **out)
{
	const struct raft_storage *st = &cfg->storage;
	if (cfg->id == 0 || cfg->rand == NULL || st->initial_state == NULL ||
	    st->entries == NULL || st->term == NULL || st->first_index == NULL ||
	    st->last_index == NULL || st->snapshot == NULL || st->snapshot_read == NULL) {
		return RAFT_EINVAL;
	}
	struct raft *r = raft__malloc(cfg->heap, sizeof(*r));
	if (r == NULL) {
		return RAFT_ENOMEM;
	}
	memset(r, 0, sizeof(*r));
	r->cfg = *cfg;
	config_defaults(&r->cfg);
	if (cfg->heap != NULL) {
		r->heap_store = *cfg->heap;
		r->heap = &r->heap_store;
	}
	r->id = cfg->id;
	int rv = raft__log_init(&r->log, st, r->heap, cfg->applied);
	if (rv != 0) {
		raft__free(r->heap, r);
		return rv;
	}
	struct raft_hard_state hs;
	rv = st->initial_state(st->ctx, &hs, &r->conf);
	if (rv == 0 && (r->conf.n > RAFT_MAX_MEMBERS ||
			(r->conf.n > 0 && !conf_well_formed(&r->conf)))) {
		rv = RAFT_ECORRUPT;
	}
	uint64_t last = raft__log_last_index(&r->log);
	if (rv == 0 && (hs.commit > last || cfg->applied > last)) {
		rv = RAFT_ECORRUPT;
	}
	if (rv != 0) {
		raft__log_close(&r->log);
		raft__free(r->heap, r);
		return rv;
	}
	if (hs.commit > r->log.committed) {
		r->log.committed = hs.commit;
	}
	if (r->log.applied > r->log.committed) {
		r->log.committed = r->log.applied;
	}
	raft__outbox_init(&r->box[0], r->heap);
	raft__outbox_init(&r->box[1], r->heap);
	r->term = hs.term;
	r->vote = hs.vote;
	progress_sync(r);
	become_follower(r, r->term, 0);
	r->prev_hs = hs;
	*out = r;
	return 0;
}

void raft_free(struct raft *r)
{
	if (r == NULL) {
		return;
	}
	const struct raft_heap *h = r->heap;
	raft__outbox_close(&r->box[0], h);
	raft__outbox_close(&r->box[1], h);
	raft__log_close(&r->log);
	raft__free(h, r->reads);
	raft__free(h, r->waiting);
	raft__free(h, r);
}

/* ---- introspection ------------------------------------------------------- */

void raft_status(const struct raft *r, struct raft_status *st)
{
	memset(st, 0, sizeof(*st));
	st->id = r->id;
	st->state = r->state;
	st->term = r->term;
	st->vote = r->vote;
	st->leader = r->leader;
	st->commit = r->log.committed;
	st->applied = r->log.applied;
	st->first_index = raft__log_first_index(&r->log);
	st->last_index = raft__log_last_index(&r->log);
	st->transferee = r->transferee;
	st->conf = r->conf;
}

uint32_t raft_progress(const struct raft *r, struct raft_progress_info *out, uint32_t cap)
{
	if (r->state != RAFT_LEADER) {
		return 0;
	}
	uint32_t n = 0;
	for (uint32_t i = 0; i < r->n_prs && n < cap; i++) {
		const struct raft__progress *pr = &r->prs[i];
		out[n].id = pr->id;
		out[n].state = pr->state;
		out[n].match = pr->match;
		out[n].next = pr->next;
		out[n].inflight = pr->infl_count;
		out[n].recent_active = pr->recent_active;
		n++;
	}
	return n;
}

const struct raft_stats *raft_stats(const struct raft *r)
{
	return &r->stats;
}
