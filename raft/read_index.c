/* read_index.c: linearizable reads without a log write (thesis §6.4): the
 * leader records its commit index, confirms it still leads with a heartbeat
 * round, and the read is served once that index is applied. */
#include "raft_int.h"

#include <string.h>

/* ---- ReadIndex (§6.4) ---------------------------------------------------- */

static bool committed_in_term(const struct raft *r)
{
	return raft__log_term_or0(&r->log, r->log.committed) == r->term;
}

int raft__push_waiting(struct raft *r, uint64_t id, uint64_t index)
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

void raft__answer_read(struct raft *r, const struct raft__read *rd, int status)
{
	if (rd->from == 0) {
		if (status == 0) {
			if (raft__push_waiting(r, rd->id, rd->index) == 0) {
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
void raft__release_reads(struct raft *r)
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
			if (pr->role == RAFT_VOTER &&
			    (pr->id == r->id || pr->hb_acked >= rd->seq)) {
				acks++;
			}
		}
		if (acks < raft__quorum(r)) {
			break;
		}
		raft__answer_read(r, rd, 0);
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
		/* one heartbeat round per update confirms every read queued
		 * since the last one (sent by raft_ready) */
		r->read_hb_pending = true;
		raft__release_reads(r);
	}
}

void raft__on_commit_in_term(struct raft *r)
{
	if (r->n_reads > 0 && committed_in_term(r)) {
		confirm_reads(r);
	}
}

void raft__fail_pending_reads(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_reads; i++) {
		raft__answer_read(r, &r->reads[i], RAFT_ELEADERLOST);
	}
	r->n_reads = 0;
}

int raft__leader_read(struct raft *r, uint64_t id, uint64_t from)
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
		return raft__leader_read(r, id, 0);
	}
	if (r->leader == 0) {
		return raft__read_out(r, id, 0, RAFT_ENOLEADER);
	}
	if (r->n_waiting >= r->cfg.max_pending_reads ||
	    r->box[r->cur].n_msgs >= RAFT__MAX_OUTBOX_MSGS) {
		return RAFT_EBUSY;
	}
	struct raft_msg m = { .type = RAFT_MSG_READ_INDEX, .to = r->leader, .context = id };
	raft__send(r, &m, false);
	return 0;
}
