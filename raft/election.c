/* election.c: campaigns and votes (thesis §3.4), with pre-vote (§9.6). */
#include "raft_int.h"

/* ---- elections (§3.4, §9.6) ---------------------------------------------- */

static uint32_t poll(struct raft *r, uint64_t id, bool granted, uint32_t *rejected)
{
	struct raft__progress *pr = raft__progress_get(r, id);
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

void raft__campaign(struct raft *r, enum raft__campaign_kind kind)
{
	if (!raft__promotable(r)) {
		return;
	}
	uint32_t type;
	uint64_t vote_term;
	if (kind == CAMPAIGN_PREVOTE) {
		raft__become_pre_candidate(r);
		type = RAFT_MSG_PREVOTE;
		vote_term = r->term + 1;
	} else {
		raft__become_candidate(r);
		type = RAFT_MSG_VOTE;
		vote_term = r->term;
	}
	r->stats.elections_started++;
	uint32_t rejected;
	if (poll(r, r->id, true, &rejected) >= raft__quorum(r)) {
		/* a single voter wins at once */
		if (kind == CAMPAIGN_PREVOTE) {
			raft__campaign(r, CAMPAIGN_ELECTION);
		} else {
			raft__become_leader(r);
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

void raft__handle_vote_request(struct raft *r, const struct raft_msg *m)
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

void raft__handle_vote_response(struct raft *r, const struct raft_msg *m)
{
	bool pre = m->type == RAFT_MSG_PREVOTE_RESP;
	if ((pre && r->state != RAFT_PRE_CANDIDATE) || (!pre && r->state != RAFT_CANDIDATE)) {
		r->stats.dropped_unexpected++;
		return;
	}
	uint32_t rejected;
	uint32_t yes = poll(r, m->from, !m->reject, &rejected);
	if (yes >= raft__quorum(r)) {
		if (pre) {
			raft__campaign(r, CAMPAIGN_ELECTION);
		} else {
			raft__become_leader(r);
			raft__send_append_all(r);
		}
	} else if (rejected >= raft__quorum(r)) {
		raft__become_follower(r, r->term, 0);
	}
}
