/* raft.c: the Raft state machine: roles and terms (thesis §3.3-3.4),
 * replication and commitment (§3.5-3.6), snapshots (§5), membership (§4),
 * leadership transfer (§3.10), ReadIndex (§6.4), pre-vote (§9.6) and
 * check-quorum (§6.2). Events come in through the raft_* calls; everything
 * the caller must do comes out through raft_ready(). */
#include "raft_int.h"

#include <string.h>

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
#define DEF(f)              \
	if (c->f == 0) {    \
		c->f = d.f; \
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
	r->read_hb_pending = false;
	r->uncommitted_bytes = 0;
	uint64_t last = raft__log_last_index(&r->log);
	for (uint32_t i = 0; i < r->n_prs; i++) {
		struct raft__progress *pr = &r->prs[i];
		uint64_t id = pr->id;
		uint32_t role = pr->role;
		raft__progress_init(r, pr, id, role);
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
		raft__fail_pending_reads(r);
	}
}

void raft__become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
	leave_leader(r);
	reset(r, term);
	r->state = RAFT_FOLLOWER;
	r->leader = leader;
}

void raft__become_pre_candidate(struct raft *r)
{
	RAFT_ASSERT(r->state != RAFT_LEADER);
	/* term and vote are left alone: a pre-vote changes nothing durable */
	r->state = RAFT_PRE_CANDIDATE;
	r->leader = 0;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		r->prs[i].vote = 0;
	}
}

void raft__become_candidate(struct raft *r)
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

void raft__become_leader(struct raft *r)
{
	RAFT_ASSERT(r->state == RAFT_CANDIDATE);
	reset(r, r->term);
	r->state = RAFT_LEADER;
	r->leader = r->id;
	r->stats.leader_changes++;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id == r->id) {
			raft__become_replicate(&r->prs[i]);
			r->prs[i].next = raft__log_last_index(&r->log) + 1;
		}
	}
	/* §3.6.2 and §6.4: an entry of the new term commits everything before
	 * it; until it is applied no membership change may start (the fix to
	 * §4.1's single-server changes published after the thesis, 2015). */
	int rv = append_local(r, RAFT_ENTRY_NOOP, NULL, 0, NULL);
	if (rv != 0) {
		/* without the no-op the leader could not commit: step down */
		raft__become_follower(r, r->term, 0);
		return;
	}
	r->pending_conf_index = raft__log_last_index(&r->log);
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
	if (r->uncommitted_bytes > 0 && r->uncommitted_bytes + len > r->cfg.max_uncommitted_bytes) {
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
	if (r->box[r->cur].n_msgs >= RAFT__MAX_OUTBOX_MSGS) {
		return RAFT_EBUSY;
	}
	struct raft_entry e = { .type = RAFT_ENTRY_NORMAL, .len = (uint32_t)len, .data = data };
	struct raft_msg m = {
		.type = RAFT_MSG_PROPOSE, .to = r->leader, .n_entries = 1, .entries = &e
	};
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
	struct raft__progress *pr = raft__progress_get(r, to);
	RAFT_ASSERT(pr != NULL);
	if (pr->match == raft__log_last_index(&r->log)) {
		raft__send_timeout_now(r, to);
	} else {
		raft__send_append(r, pr, false);
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
	struct raft_msg m = { .type = RAFT_MSG_TRANSFER, .to = r->leader, .context = to };
	raft__send(r, &m, false);
	return 0;
}

int raft_campaign(struct raft *r)
{
	if (r->state == RAFT_LEADER) {
		return 0;
	}
	if (!raft__promotable(r)) {
		return RAFT_ENOTVOTER;
	}
	raft__campaign(r, r->cfg.pre_vote ? CAMPAIGN_PREVOTE : CAMPAIGN_ELECTION);
	return 0;
}

void raft_report_leader_down(struct raft *r, uint64_t id)
{
	if (r->state == RAFT_LEADER || id == 0 || r->leader != id) {
		return;
	}
	/* out of the leader's lease: campaigns of others are heard, and this
	 * member campaigns within one more randomized timeout at most */
	r->leader = 0;
	if (r->election_elapsed < r->cfg.election_ticks) {
		r->election_elapsed = r->cfg.election_ticks;
	}
}

void raft_report_unreachable(struct raft *r, uint64_t id)
{
	if (r->state != RAFT_LEADER) {
		return;
	}
	struct raft__progress *pr = raft__progress_get(r, id);
	if (pr == NULL || pr->id == r->id) {
		return;
	}
	if (pr->state == RAFT_PROGRESS_REPLICATE) {
		raft__become_probe(pr);
	}
}

/* Membership takes effect when its entry is applied (as etcd-io/raft does);
 * with one change at a time and the no-op rule this is safe (§4.1). */
static void apply_conf_change(struct raft *r, const struct raft_conf_change *cc)
{
	if (raft_conf_apply(&r->conf, cc) != 0) {
		return; /* refused identically on every member */
	}
	raft__progress_sync(r);
	if (r->state != RAFT_LEADER) {
		return;
	}
	if (!raft__promotable(r)) {
		/* removed or demoted: stop leading (§4.2.2) */
		raft__become_follower(r, r->term, 0);
		return;
	}
	if (r->transferee != 0 && raft_conf_role(&r->conf, r->transferee) != RAFT_VOTER) {
		r->transferee = 0;
	}
	(void)raft__maybe_commit(r);
	r->bcast_pending = true;
	raft__release_reads(r);
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
				if (pr->role == RAFT_VOTER &&
				    (pr->id == r->id || pr->recent_active)) {
					active++;
				}
				if (pr->id != r->id) {
					pr->recent_active = false;
				}
			}
			if (active < raft__quorum(r)) {
				raft__become_follower(r, r->term, 0);
				return;
			}
		}
	}
	if (r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
		r->heartbeat_elapsed = 0;
		r->read_hb_pending = false; /* this round carries hb_seq too */
		raft__send_heartbeat_all(r);
		for (uint32_t i = 0; i < r->n_prs; i++) {
			struct raft__progress *pr = &r->prs[i];
			if (pr->id == r->id) {
				continue;
			}
			if (pr->state == RAFT_PROGRESS_SNAPSHOT) {
				raft__check_snapshot_stall(r, pr);
			} else if (pr->state == RAFT_PROGRESS_PROBE && !pr->probe_sent &&
				   pr->next <= raft__log_last_index(&r->log)) {
				raft__send_append(r, pr, false);
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
	if (raft__promotable(r) && r->election_elapsed >= r->randomized_timeout) {
		r->election_elapsed = 0;
		raft__campaign(r, r->cfg.pre_vote ? CAMPAIGN_PREVOTE : CAMPAIGN_ELECTION);
	}
}

/* ---- step ---------------------------------------------------------------- */

static bool termless(uint32_t type)
{
	return type == RAFT_MSG_PROPOSE || type == RAFT_MSG_READ_INDEX ||
	       type == RAFT_MSG_READ_INDEX_RESP || type == RAFT_MSG_TRANSFER;
}

bool raft__from_leader(uint32_t type)
{
	return type == RAFT_MSG_APPEND || type == RAFT_MSG_HEARTBEAT || type == RAFT_MSG_SNAPSHOT ||
	       type == RAFT_MSG_TIMEOUT_NOW;
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
	if (m->type == RAFT_MSG_APPEND && !raft__append_well_formed(m)) {
		return false;
	}
	if (m->type == RAFT_MSG_SNAPSHOT) {
		if ((m->len > 0 && m->data == NULL) || m->snap.index == 0 ||
		    m->snap.term > m->term || m->index > m->snap.size ||
		    m->len > m->snap.size - m->index ||
		    m->last != (m->index + m->len == m->snap.size) ||
		    !raft__conf_well_formed(&m->snap.conf)) {
			return false;
		}
	}
	if (!termless(m->type) && m->term == 0) {
		return false;
	}
	return true;
}

/* Messages from a sender outside our configuration. Leader traffic and vote
 * requests are judged by their term and log, not by our configuration
 * (§4.1): we may not have applied the change that added the sender yet, and
 * refusing its votes can leave no electable member. A removed server cannot
 * disrupt: pre-vote finds its log behind, and check-quorum's lease ignores
 * it while a leader is heard (§4.2.3). Anything else from a stranger (its
 * responses, proposals, reads) is ignored and counted. */
static bool sender_known(const struct raft *r, const struct raft_msg *m)
{
	if (raft_conf_role(&r->conf, m->from) != 0 || r->conf.n == 0) {
		return true;
	}
	return raft__from_leader(m->type) || m->type == RAFT_MSG_READ_INDEX_RESP ||
	       m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
}

static int step_leader(struct raft *r, const struct raft_msg *m)
{
	struct raft__progress *pr = raft__progress_get(r, m->from);
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
		if (raft__leader_read(r, m->context, m->from) != 0) {
			struct raft__read rd = { .id = m->context, .from = m->from };
			raft__answer_read(r, &rd, RAFT_EBUSY);
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
		raft__handle_append_response(r, pr, m);
		break;
	case RAFT_MSG_HEARTBEAT_RESP:
		raft__handle_heartbeat_response(r, pr, m);
		break;
	case RAFT_MSG_SNAPSHOT_RESP:
		raft__handle_snapshot_response(r, pr, m);
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
		return raft__handle_append(r, m);
	case RAFT_MSG_HEARTBEAT:
		r->election_elapsed = 0;
		r->leader = m->from;
		raft__handle_heartbeat(r, m);
		return 0;
	case RAFT_MSG_SNAPSHOT:
		r->election_elapsed = 0;
		r->leader = m->from;
		return raft__handle_snapshot(r, m);
	case RAFT_MSG_TIMEOUT_NOW:
		/* §3.10: start an election at once, even inside the lease */
		raft__campaign(r, CAMPAIGN_TRANSFER);
		return 0;
	case RAFT_MSG_PROPOSE:
	case RAFT_MSG_READ_INDEX:
	case RAFT_MSG_TRANSFER:
		/* not the leader: a second hop could loop, so drop */
		if (m->type == RAFT_MSG_PROPOSE) {
			r->stats.proposals_dropped += m->n_entries;
		} else if (m->type == RAFT_MSG_READ_INDEX) {
			struct raft__read rd = { .id = m->context, .from = m->from };
			raft__answer_read(r, &rd, RAFT_ENOLEADER);
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
		} else if (raft__push_waiting(r, m->context, m->index) != 0) {
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
			} else if (raft__from_leader(m->type)) {
				raft__become_follower(r, m->term, m->from);
			} else {
				raft__become_follower(r, m->term, 0);
			}
		} else if (m->term < r->term) {
			r->stats.dropped_stale_term++;
			if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
			    (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)) {
				/* tell a stale leader about the newer term, so
				 * it steps down even when our votes are ignored */
				struct raft_msg resp = { .type = RAFT_MSG_APPEND_RESP,
							 .to = m->from,
							 .term = r->term };
				raft__send(r, &resp, false);
			} else if (m->type == RAFT_MSG_PREVOTE) {
				struct raft_msg resp = { .type = RAFT_MSG_PREVOTE_RESP,
							 .to = m->from,
							 .term = r->term,
							 .reject = true };
				raft__send(r, &resp, false);
			}
			return 0;
		}
	}
	switch (m->type) {
	case RAFT_MSG_VOTE:
	case RAFT_MSG_PREVOTE:
		raft__handle_vote_request(r, m);
		return 0;
	case RAFT_MSG_VOTE_RESP:
	case RAFT_MSG_PREVOTE_RESP:
		raft__handle_vote_response(r, m);
		return 0;
	default:
		break;
	}
	switch (r->state) {
	case RAFT_LEADER:
		if (raft__from_leader(m->type)) {
			/* two leaders in one term is impossible: a liar */
			r->stats.dropped_unexpected++;
			return 0;
		}
		return step_leader(r, m);
	case RAFT_CANDIDATE:
	case RAFT_PRE_CANDIDATE:
		if (raft__from_leader(m->type) && m->type != RAFT_MSG_TIMEOUT_NOW) {
			/* a leader of our term exists (§3.4) */
			raft__become_follower(r, r->term, m->from);
		}
		if (r->state != RAFT_FOLLOWER) {
			if (m->type == RAFT_MSG_PROPOSE) {
				r->stats.proposals_dropped += m->n_entries;
			} else if (m->type == RAFT_MSG_READ_INDEX) {
				struct raft__read rd = { .id = m->context, .from = m->from };
				raft__answer_read(r, &rd, RAFT_ENOLEADER);
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
	struct raft_hard_state hs = { .term = r->term,
				      .vote = r->vote,
				      .commit = r->log.committed };
	return hs;
}

static bool hs_equal(const struct raft_hard_state *a, const struct raft_hard_state *b)
{
	return a->term == b->term && a->vote == b->vote && a->commit == b->commit;
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
	if (r->log.u.n > r->log.u.in_progress || r->log.committed > r->log.applying) {
		return true;
	}
	if (r->state == RAFT_LEADER && (r->bcast_pending || r->read_hb_pending)) {
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
		raft__send_append_all(r); /* batching: one APPEND per follower per update */
	}
	if (r->state == RAFT_LEADER && r->read_hb_pending) {
		r->read_hb_pending = false;
		raft__send_heartbeat_all(r);
	}
	struct raft__outbox *o = &r->box[r->cur];
	struct raft__log *l = &r->log;
	int rv;
	memset(u, 0, sizeof(*u));

	/* First everything that can fail, so a failure changes nothing. Room
	 * to defer releasing every entry handed out, so a truncation while
	 * the update is out never needs memory. */
	rv = raft__grow(r->heap, (void **)&l->garbage, &l->cap_garbage, l->n_garbage + l->u.n,
			sizeof(*l->garbage));
	if (rv != 0) {
		return rv;
	}
	uint32_t n = l->u.n - l->u.in_progress;
	struct raft_entry *ents = NULL;
	if (n > 0) {
		ents = raft__arena_alloc(&o->arena, sizeof(*ents) * n);
		if (ents == NULL) {
			return RAFT_ENOMEM;
		}
		memcpy(ents, l->u.ents + l->u.in_progress, sizeof(*ents) * n);
	}
	/* committed entries to apply, at most max_committed_bytes */
	struct raft_entry *cents = NULL;
	uint32_t cn = 0;
	uint32_t n_cc = 0;
	uint64_t bytes = 0;
	if (l->committed > l->applying) {
		rv = raft__log_slice(l, &o->arena, l->applying + 1, l->committed + 1,
				     r->cfg.max_committed_bytes, &cents, &cn);
		if (rv != 0) {
			return rv;
		}
		for (uint32_t i = 0; i < cn; i++) {
			bytes += cents[i].len;
			n_cc += cents[i].type == RAFT_ENTRY_CONF_CHANGE;
		}
		rv = raft__grow(r->heap, (void **)&o->ccs, &o->cap_ccs, o->n_ccs + n_cc,
				sizeof(*o->ccs));
		if (rv != 0) {
			return rv;
		}
	}
	uint64_t applying = l->applying + cn;
	uint32_t n_ready_reads = 0;
	for (uint32_t i = 0; i < r->n_waiting; i++) {
		n_ready_reads += r->waiting[i].index <= applying;
	}
	rv = raft__grow(r->heap, (void **)&o->reads, &o->cap_reads, o->n_reads + n_ready_reads,
			sizeof(*o->reads));
	if (rv != 0) {
		return rv;
	}

	/* Then hand it out. */
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
	if (n > 0) {
		u->entries = ents;
		u->n_entries = n;
		o->persist_index = ents[n - 1].index;
		o->persist_term = ents[n - 1].term;
		l->u.in_progress = l->u.n;
	}
	for (uint32_t i = 0; i < cn; i++) {
		struct raft_conf_change cc;
		if (cents[i].type == RAFT_ENTRY_CONF_CHANGE &&
		    raft_conf_change_decode(cents[i].data, cents[i].len, &cc) == 0) {
			o->ccs[o->n_ccs++] = cc;
		}
	}
	u->committed = cents;
	u->n_committed = cn;
	l->applying = applying;
	o->apply_to = applying;
	if (r->state == RAFT_LEADER) {
		r->uncommitted_bytes =
			r->uncommitted_bytes > bytes ? r->uncommitted_bytes - bytes : 0;
	}
	/* confirmed reads whose index the entries above cover */
	uint32_t k = 0;
	for (uint32_t i = 0; i < r->n_waiting; i++) {
		struct raft_read_state *w = &r->waiting[i];
		if (w->index <= applying) {
			rv = raft__read_out(r, w->id, w->index, 0);
			RAFT_ASSERT(rv == 0); /* capacity reserved above */
		} else {
			r->waiting[k++] = *w;
		}
	}
	r->n_waiting = k;

	/* An acknowledgement queued in an older term may cover unstable
	 * entries that a newer term's leader has since replaced: sent after
	 * this write, it would claim entries the storage does not hold, and
	 * the old leader could count it toward a quorum. Entries acknowledged
	 * in a term are only ever replaced from a later term, so dropping the
	 * older terms' acknowledgements suffices; a lost ack is harmless. */
	uint32_t kept = 0;
	for (uint32_t i = 0; i < o->n_after; i++) {
		if (o->after[i].type == RAFT_MSG_APPEND_RESP && !o->after[i].reject &&
		    o->after[i].term < r->term) {
			continue;
		}
		o->after[kept++] = o->after[i];
	}
	o->n_after = kept;

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
			struct raft__progress *self = raft__progress_get(r, r->id);
			if (self != NULL && raft__progress_update(self, o->persist_index)) {
				if (raft__maybe_commit(r)) {
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
	if (cfg->id == 0 || cfg->rand == NULL || st->initial_state == NULL || st->entries == NULL ||
	    st->term == NULL || st->first_index == NULL || st->last_index == NULL ||
	    st->snapshot == NULL || st->snapshot_read == NULL) {
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
			(r->conf.n > 0 && !raft__conf_well_formed(&r->conf)))) {
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
	raft__progress_sync(r);
	raft__become_follower(r, r->term, 0);
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
