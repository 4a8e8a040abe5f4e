/* progress.c: the leader's view of each member: match and next index, and
 * the probe/replicate/snapshot states with a bounded window of in-flight
 * APPENDs (flow control as in etcd-io/raft, thesis §10.2.2 pipelining). */
#include "raft_int.h"

#include <string.h>

/* ---- members and progress ------------------------------------------------ */

struct raft__progress *raft__progress_get(struct raft *r, uint64_t id)
{
	for (uint32_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id == id) {
			return &r->prs[i];
		}
	}
	return NULL;
}

uint32_t raft__quorum(const struct raft *r)
{
	return raft_conf_voters(&r->conf) / 2 + 1;
}

bool raft__promotable(const struct raft *r)
{
	return raft_conf_role(&r->conf, r->id) == RAFT_VOTER;
}

void raft__infl_reset(struct raft__progress *pr)
{
	pr->infl_start = 0;
	pr->infl_count = 0;
}

bool raft__infl_full(const struct raft *r, const struct raft__progress *pr)
{
	return pr->infl_count >= r->cfg.max_inflight_msgs;
}

void raft__infl_add(const struct raft *r, struct raft__progress *pr, uint64_t last)
{
	RAFT_ASSERT(!raft__infl_full(r, pr));
	uint32_t pos = (pr->infl_start + pr->infl_count) % r->cfg.max_inflight_msgs;
	pr->infl[pos] = last;
	pr->infl_count++;
}

/* Free the in-flight messages whose last index is <= index. */
void raft__infl_free_le(const struct raft *r, struct raft__progress *pr, uint64_t index)
{
	while (pr->infl_count > 0 && pr->infl[pr->infl_start] <= index) {
		pr->infl_start = (pr->infl_start + 1) % r->cfg.max_inflight_msgs;
		pr->infl_count--;
	}
}

void raft__progress_init(struct raft *r, struct raft__progress *pr, uint64_t id, uint32_t role)
{
	memset(pr, 0, sizeof(*pr));
	pr->id = id;
	pr->role = role;
	pr->state = RAFT_PROGRESS_PROBE;
	pr->next = raft__log_last_index(&r->log) + 1;
	pr->recent_active = true;
}

void raft__become_probe(struct raft__progress *pr)
{
	if (pr->state == RAFT_PROGRESS_SNAPSHOT) {
		pr->next = RAFT_MAX(pr->match + 1, pr->snap.index + 1);
	} else {
		pr->next = pr->match + 1;
	}
	pr->state = RAFT_PROGRESS_PROBE;
	pr->probe_sent = false;
	raft__infl_reset(pr);
}

void raft__become_replicate(struct raft__progress *pr)
{
	pr->state = RAFT_PROGRESS_REPLICATE;
	pr->next = pr->match + 1;
	pr->probe_sent = false;
	raft__infl_reset(pr);
}

bool raft__paused(const struct raft *r, const struct raft__progress *pr)
{
	switch (pr->state) {
	case RAFT_PROGRESS_PROBE:
		return pr->probe_sent;
	case RAFT_PROGRESS_REPLICATE:
		return raft__infl_full(r, pr);
	default:
		return true;
	}
}

/* match moved forward: true if it did */
bool raft__progress_update(struct raft__progress *pr, uint64_t n)
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

/* A rejection: move next back (fast back-off, §3.5). False if stale. */
bool raft__progress_decr_to(struct raft__progress *pr, uint64_t rejected, uint64_t match_hint)
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
void raft__progress_sync(struct raft *r)
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
			raft__progress_init(r, pr, m->id, m->role);
		}
	}
	r->n_prs = r->conf.n;
}
