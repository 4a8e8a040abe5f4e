/* sim_check.c: the invariants of Raft (thesis §3.6.3, Figure 3.2), checked
 * the moment each fact appears, so every step of a run is checked.
 *
 *   election safety     at most one leader per term, ever: a term -> leader
 *                       map fed by every observation of every node;
 *   log matching        every entry any node is ever asked to store (the
 *                       update's entries: storage plus unstable) goes into a
 *                       table keyed by (index, term) holding the hash of its
 *                       content and the term of the entry before it. One
 *                       (index, term) with two contents, or two predecessor
 *                       terms, breaks the property; by induction on the index,
 *                       a unique predecessor term per (index, term) is the
 *                       whole property. A pairwise comparison of the stored
 *                       logs (sim_check_logs) backs it up now and then;
 *   leader completeness when a new leader's first entry of its term appears,
 *                       everything before it is visible: its log must hold
 *                       the highest committed index with the history's term
 *                       there (by log matching, then, the whole prefix);
 *   state machine safety the history is every index's entry as first
 *                       applied anywhere, with the state after it; every
 *                       other application must match it byte for byte, and a
 *                       snapshot restored must equal the state at its index;
 *   linearizable reads  a read served at applied index a for key k returns
 *                       the history's value of k at a, and a (and the read
 *                       index) is at least the highest index acknowledged
 *                       anywhere when the read was issued;
 *   durability          the history only grows: an acknowledged write (one
 *                       applied somewhere) is never replaced; the quiet phase
 *                       then makes every member apply past all of them;
 *   commit safety       whenever a node's hard-state commit index advances
 *                       (what it persists, tells its followers and will
 *                       apply), the term of each entry it newly covers is
 *                       recorded, and must be the term the history holds at
 *                       that index, or will hold once someone applies it. A
 *                       commit that a crash keeps from being applied, such as
 *                       an earlier term's entry committed by counting replicas
 *                       (§3.6.2, Figure 3.7), is then still checked against
 *                       whatever a later leader puts there.
 * Also checked: a vote never changes within a term in the stored hard state,
 * terms and commits never go back, applied indices are consecutive.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define PREV_UNKNOWN UINT64_MAX

struct sim_lt {
	uint64_t index; /* 0: empty slot */
	uint64_t term;
	uint64_t hash;
	uint64_t prev; /* term of index - 1, PREV_UNKNOWN if not seen */
	uint64_t node; /* first node seen with it, for the report */
};

int sim_check_init(struct sim_check *c, const struct raft_conf *conf)
{
	memset(c, 0, sizeof(*c));
	c->conf = *conf;
	return 0;
}

void sim_check_free(struct sim_check *c)
{
	for (uint64_t i = 0; i < c->hist_len; i++)
		free(c->hist[i].data);
	free(c->hist);
	free(c->leaders);
	free(c->lt);
	free(c->reads);
	free(c->claims);
	memset(c, 0, sizeof(*c));
}

uint64_t sim_check_hist_term(const struct sim *s, uint64_t index)
{
	if (index == 0 || index > s->chk.hist_len)
		return 0;
	return s->chk.hist[index - 1].term;
}

static uint64_t entry_hash(const struct raft_entry *e)
{
	uint64_t h = sim_hash(SIM_HASH_INIT, &e->type, sizeof(e->type));
	return sim_hash(h, e->data, e->len);
}

/* ------------------------------------------------------------------------ */
/* Election safety.                                                         */

void sim_check_leader(struct sim *s, struct sim_node *n, uint64_t term)
{
	struct sim_check *c = &s->chk;
	if (term >= SIM_MAX_TERM) {
		sim_fail(s, "term %" PRIu64 " reached: election storm", term);
		return;
	}
	if (term >= c->leaders_cap) {
		uint64_t cap = c->leaders_cap ? c->leaders_cap : 64;
		while (cap <= term)
			cap *= 2;
		uint64_t *l = realloc(c->leaders, cap * sizeof(*l));
		if (l == NULL) {
			sim_fail(s, "simulator out of memory");
			return;
		}
		memset(l + c->leaders_cap, 0, (cap - c->leaders_cap) * sizeof(*l));
		c->leaders = l;
		c->leaders_cap = cap;
	}
	if (c->leaders[term] != 0 && c->leaders[term] != n->id) {
		sim_fail(s, "election safety: n%" PRIu64 " and n%" PRIu64 " are both leaders of term %" PRIu64,
			 c->leaders[term], n->id, term);
		return;
	}
	c->leaders[term] = n->id;
	n->lc_pending = true;
	n->lc_term = term;
	n->lc_index = c->hist_len;
}

/* ------------------------------------------------------------------------ */
/* Log matching: the (index, term) table.                                   */

static size_t lt_slot(const struct sim_check *c, uint64_t index, uint64_t term)
{
	uint64_t h = index * 0x9e3779b97f4a7c15ULL ^ term * 0xc2b2ae3d27d4eb4fULL;
	h ^= h >> 29;
	return (size_t)(h & (c->lt_cap - 1));
}

static int lt_grow(struct sim_check *c)
{
	size_t cap = c->lt_cap ? c->lt_cap * 2 : 1024;
	struct sim_lt *old = c->lt;
	size_t old_cap = c->lt_cap;
	struct sim_lt *t = calloc(cap, sizeof(*t));
	if (t == NULL)
		return -1;
	c->lt = t;
	c->lt_cap = cap;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i].index == 0)
			continue;
		size_t j = lt_slot(c, old[i].index, old[i].term);
		while (t[j].index != 0)
			j = (j + 1) & (cap - 1);
		t[j] = old[i];
	}
	free(old);
	return 0;
}

static void lt_record(struct sim *s, struct sim_node *n, const struct raft_entry *e, uint64_t prev)
{
	struct sim_check *c = &s->chk;
	if ((c->lt_len + 1) * 2 > c->lt_cap && lt_grow(c) != 0) {
		sim_fail(s, "simulator out of memory");
		return;
	}
	uint64_t h = entry_hash(e);
	size_t j = lt_slot(c, e->index, e->term);
	while (c->lt[j].index != 0) {
		struct sim_lt *x = &c->lt[j];
		if (x->index == e->index && x->term == e->term) {
			if (x->hash != h) {
				sim_fail(s, "log matching: n%" PRIu64 " and n%" PRIu64 " hold different entries at"
					 " index %" PRIu64 " term %" PRIu64,
					 x->node, n->id, e->index, e->term);
				return;
			}
			if (prev != PREV_UNKNOWN) {
				if (x->prev == PREV_UNKNOWN) {
					x->prev = prev;
				} else if (x->prev != prev) {
					sim_fail(s, "log matching: entry %" PRIu64 "/%" PRIu64 " follows term %" PRIu64
						 " on n%" PRIu64 " but term %" PRIu64 " on n%" PRIu64,
						 e->index, e->term, x->prev, x->node, prev, n->id);
				}
			}
			return;
		}
		j = (j + 1) & (c->lt_cap - 1);
	}
	c->lt[j].index = e->index;
	c->lt[j].term = e->term;
	c->lt[j].hash = h;
	c->lt[j].prev = prev;
	c->lt[j].node = n->id;
	c->lt_len++;
}

/* Term of index i in the node's storage, PREV_UNKNOWN if compacted. */
static uint64_t stored_term(struct raft_storage *st, uint64_t i)
{
	if (i == 0)
		return 0;
	uint64_t t = 0;
	if (st->term(st->ctx, i, &t) != 0)
		return PREV_UNKNOWN;
	return t;
}

/* ------------------------------------------------------------------------ */
/* Commit safety: the terms that commit indexes covered.                    */

/* The term index had when it was committed (by a claim or by the history),
 * 0 if not known yet. */
static uint64_t committed_term(const struct sim *s, uint64_t index)
{
	const struct sim_check *c = &s->chk;
	if (index <= c->hist_len)
		return sim_check_hist_term(s, index);
	if (index <= c->claims_cap)
		return c->claims[index - 1].term;
	return 0;
}

/* n's commit index covers index, which holds term in its log. */
static void claim(struct sim *s, struct sim_node *n, uint64_t index, uint64_t term)
{
	struct sim_check *c = &s->chk;
	if (index <= c->hist_len) {
		uint64_t h = sim_check_hist_term(s, index);
		if (h != term)
			sim_fail(s, "commit safety: n%" PRIu64 " commits index %" PRIu64
				 " with term %" PRIu64 ", but the entry of term %" PRIu64
				 " was applied there",
				 n->id, index, term, h);
		return;
	}
	if (index > c->claims_cap) {
		if (index > SIM_MAX_HISTORY) {
			sim_fail(s, "history bound reached");
			return;
		}
		uint64_t cap = c->claims_cap ? c->claims_cap : 256;
		while (cap < index)
			cap *= 2;
		struct sim_claim *t = realloc(c->claims, cap * sizeof(*t));
		if (t == NULL) {
			sim_fail(s, "simulator out of memory");
			return;
		}
		memset(t + c->claims_cap, 0, (cap - c->claims_cap) * sizeof(*t));
		c->claims = t;
		c->claims_cap = cap;
	}
	struct sim_claim *x = &c->claims[index - 1];
	if (x->term == 0) {
		x->term = term;
		x->node = n->id;
	} else if (x->term != term) {
		sim_fail(s, "commit safety: n%" PRIu64 " commits index %" PRIu64
			 " with term %" PRIu64 ", but n%" PRIu64 " committed it with term %" PRIu64,
			 n->id, index, term, x->node, x->term);
	}
}

/* Record the terms of the entries that u's commit index newly covers. The
 * node's log is its storage (as of the previous update) with u's snapshot
 * and entries on top; indexes whose term is gone (compacted) are skipped,
 * as are those a commit beyond the log would name (node_finish flags it).
 * Each index is recorded once per incarnation: the cost of applying it. */
static void claim_commit(struct sim *s, struct sim_node *n, const struct raft_update *u,
			 struct raft_storage *st)
{
	uint64_t ci = u->hard_state.commit;
	uint64_t lo = n->claimed + 1;
	n->claimed = ci;
	uint64_t e0 = u->n_entries > 0 ? u->entries[0].index : UINT64_MAX;
	uint64_t elast = u->n_entries > 0 ? u->entries[u->n_entries - 1].index : 0;
	uint64_t known = u->snapshot != NULL ? u->snapshot->index : st->first_index(st->ctx) - 1;
	if (lo < known)
		lo = known;
	if (lo == 0)
		lo = 1;
	for (uint64_t i = lo; i <= ci && !s->failed; i++) {
		uint64_t t;
		if (i >= e0)
			t = i <= elast ? u->entries[i - e0].term : 0;
		else if (u->snapshot != NULL)
			t = i == u->snapshot->index ? u->snapshot->term : 0;
		else
			t = stored_term(st, i);
		if (t != 0 && t != PREV_UNKNOWN)
			claim(s, n, i, t);
	}
}

void sim_check_update(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
	struct raft_storage st = raft_memstore_storage(n->ms);
	struct raft_hard_state phs;
	raft_memstore_hard_state(n->ms, &phs);

	if (u->has_hard_state) {
		const struct raft_hard_state *hs = &u->hard_state;
		if (hs->term < phs.term) {
			sim_fail(s, "n%" PRIu64 ": hard state term goes back from %" PRIu64 " to %" PRIu64,
				 n->id, phs.term, hs->term);
			return;
		}
		if (hs->term == phs.term && phs.vote != 0 && hs->vote != phs.vote) {
			sim_fail(s, "n%" PRIu64 " votes twice in term %" PRIu64 ": for n%" PRIu64
				 " (stored) and now n%" PRIu64,
				 n->id, hs->term, phs.vote, hs->vote);
			return;
		}
		if (hs->commit < phs.commit) {
			sim_fail(s, "n%" PRIu64 ": hard state commit goes back from %" PRIu64 " to %" PRIu64,
				 n->id, phs.commit, hs->commit);
			return;
		}
	}

	uint64_t snap_idx = 0, snap_term = 0;
	if (u->snapshot != NULL) {
		snap_idx = u->snapshot->index;
		snap_term = u->snapshot->term;
		if (snap_idx == 0 || snap_idx > s->chk.hist_len ||
		    sim_check_hist_term(s, snap_idx) != snap_term) {
			sim_fail(s, "n%" PRIu64 " is given snapshot %" PRIu64 "/%" PRIu64
				 " which is not of the committed history (%" PRIu64 " entries, term %" PRIu64
				 " there)",
				 n->id, snap_idx, snap_term, s->chk.hist_len,
				 sim_check_hist_term(s, snap_idx));
			return;
		}
	}

	uint64_t first = st.first_index(st.ctx);
	uint64_t last = st.last_index(st.ctx);
	for (uint32_t i = 0; i < u->n_entries && !s->failed; i++) {
		const struct raft_entry *e = &u->entries[i];
		uint64_t prev;
		if (e->term == 0 || e->index == 0) {
			sim_fail(s, "n%" PRIu64 " is to store an entry with index %" PRIu64 " term %" PRIu64,
				 n->id, e->index, e->term);
			return;
		}
		if (i > 0) {
			if (e->index != u->entries[i - 1].index + 1) {
				sim_fail(s, "n%" PRIu64 ": update entries jump from %" PRIu64 " to %" PRIu64,
					 n->id, u->entries[i - 1].index, e->index);
				return;
			}
			prev = u->entries[i - 1].term;
		} else if (u->snapshot != NULL) {
			if (e->index != snap_idx + 1) {
				sim_fail(s, "n%" PRIu64 ": entries from %" PRIu64 " after snapshot %" PRIu64,
					 n->id, e->index, snap_idx);
				return;
			}
			prev = snap_term;
		} else {
			if (e->index - 1 > last) {
				sim_fail(s, "n%" PRIu64 ": entries from %" PRIu64 " leave a gap after its last"
					 " stored index %" PRIu64,
					 n->id, e->index, last);
				return;
			}
			/* Below the snapshot's index the term is gone. */
			prev = e->index < first ? PREV_UNKNOWN : stored_term(&st, e->index - 1);
		}
		if (prev != PREV_UNKNOWN && e->term < prev) {
			sim_fail(s, "n%" PRIu64 ": entry %" PRIu64 " has term %" PRIu64 " after term %" PRIu64,
				 n->id, e->index, e->term, prev);
			return;
		}
		lt_record(s, n, e, prev);
	}
	if (s->failed)
		return;
	if (u->has_hard_state && u->hard_state.commit > n->claimed)
		claim_commit(s, n, u, &st);
	if (s->failed)
		return;

	/* Leader completeness (§3.6.3): at the leader's first entry of its
	 * term, the entries before it are all visible. */
	if (n->lc_pending) {
		uint32_t k = 0;
		while (k < u->n_entries && u->entries[k].term != n->lc_term)
			k++;
		if (k == u->n_entries)
			return;
		n->lc_pending = false;
		uint64_t x = u->entries[k].index;
		uint64_t ci = n->lc_index;
		uint64_t want = sim_check_hist_term(s, ci);
		if (ci >= x) {
			sim_fail(s, "leader completeness: n%" PRIu64 ", leader of term %" PRIu64
				 ", puts its first entry at %" PRIu64 " but index %" PRIu64 " (term %" PRIu64
				 ") was committed before its election",
				 n->id, n->lc_term, x, ci, want);
			return;
		}
		uint64_t have;
		if (ci == 0)
			return;
		if (u->n_entries > 0 && ci >= u->entries[0].index)
			have = u->entries[ci - u->entries[0].index].term;
		else if (u->snapshot != NULL && ci <= snap_idx)
			return; /* covered by a snapshot, itself checked against the history */
		else if (ci < first)
			return; /* compacted into its own snapshot, checked when taken */
		else
			have = stored_term(&st, ci);
		if (have != want) {
			sim_fail(s, "leader completeness: n%" PRIu64 ", leader of term %" PRIu64 ", has term %"
				 PRIu64 " at index %" PRIu64 ", committed with term %" PRIu64,
				 n->id, n->lc_term, have, ci, want);
		}
	}
}

/* ------------------------------------------------------------------------ */
/* State machine safety and the history.                                    */

static void hist_append(struct sim *s, struct sim_node *n, const struct raft_entry *e)
{
	struct sim_check *c = &s->chk;
	if (c->hist_len == c->hist_cap) {
		if (c->hist_cap >= SIM_MAX_HISTORY) {
			sim_fail(s, "history bound reached");
			return;
		}
		uint64_t cap = c->hist_cap ? c->hist_cap * 2 : 256;
		struct sim_hist *h = realloc(c->hist, cap * sizeof(*h));
		if (h == NULL) {
			sim_fail(s, "simulator out of memory");
			return;
		}
		c->hist = h;
		c->hist_cap = cap;
	}
	uint64_t ct = committed_term(s, e->index);
	if (ct != 0 && ct != e->term) {
		sim_fail(s, "commit safety: n%" PRIu64 " applies %" PRIu64 "/%" PRIu64
			 " first, but n%" PRIu64 " committed index %" PRIu64 " with term %" PRIu64,
			 n->id, e->index, e->term, c->claims[e->index - 1].node, e->index, ct);
		return;
	}
	if (c->hist_len > 0 && e->term < c->hist[c->hist_len - 1].term) {
		sim_fail(s, "committed history: index %" PRIu64 " has term %" PRIu64 " after term %" PRIu64,
			 e->index, e->term, c->hist[c->hist_len - 1].term);
		return;
	}
	struct sim_hist *h = &c->hist[c->hist_len];
	h->term = e->term;
	h->type = e->type;
	h->len = e->len;
	h->data = NULL;
	if (e->len > 0) {
		h->data = malloc(e->len);
		if (h->data == NULL) {
			sim_fail(s, "simulator out of memory");
			return;
		}
		memcpy(h->data, e->data, e->len);
	}
	h->after = n->kv;
	c->hist_len++;

	if (e->type == RAFT_ENTRY_NORMAL) {
		uint32_t key;
		uint64_t op;
		s->st.entries_committed++;
		if (sim_kv_parse(e->data, e->len, &key, &op) && s->final_op != 0 && op == s->final_op &&
		    s->final_index == 0) {
			s->final_index = e->index;
			sim_trace(s, "LIVENESS: the new entry is committed at index %" PRIu64 ", %" PRIu64
				  " ms after the faults healed",
				  e->index, s->now - s->quiet_at);
		}
	} else if (e->type == RAFT_ENTRY_CONF_CHANGE) {
		struct raft_conf_change cc;
		if (raft_conf_change_decode(e->data, e->len, &cc) != 0)
			return;
		int rc = raft_conf_apply(&c->conf, &cc);
		s->st.conf_changes_applied++;
		static const char *const names[] = {"?", "ADD_VOTER", "ADD_LEARNER", "REMOVE"};
		sim_trace(s, "CONF CHANGE committed at %" PRIu64 ": %s n%" PRIu64 "%s (%u voters)", e->index,
			  cc.type <= 3 ? names[cc.type] : "?", cc.id, rc != 0 ? " (no effect)" : "",
			  raft_conf_voters(&c->conf));
		if (cc.type == RAFT_CC_REMOVE && rc == 0) {
			struct sim_node *x = sim_node_by_id(s, cc.id);
			if (x != NULL && !x->removed) {
				x->removed = true;
				/* Leave it running a while: it may be the leader that must
				 * commit its own removal and step down. */
				uint64_t d = s->quiet ? 0 : sim_rng_range(&s->fault_rng, 0, 2000);
				sim_schedule(s, d, SIM_EV_STOP, (uint32_t)(x->id - 1), 0, NULL);
			}
		}
	}
}

void sim_check_apply(struct sim *s, struct sim_node *n, const struct raft_entry *e)
{
	struct sim_check *c = &s->chk;
	if (e->index > c->hist_len + 1) {
		sim_fail(s, "n%" PRIu64 " applied %" PRIu64 " beyond the history's %" PRIu64, n->id,
			 e->index, c->hist_len);
		return;
	}
	if (e->index == c->hist_len + 1) {
		hist_append(s, n, e);
		return;
	}
	const struct sim_hist *h = &c->hist[e->index - 1];
	if (h->term != e->term || h->type != e->type || h->len != e->len ||
	    (e->len > 0 && memcmp(h->data, e->data, e->len) != 0)) {
		sim_fail(s, "state machine safety: n%" PRIu64 " applied %" PRIu64 "/%" PRIu64 " \"%.*s\","
			 " but %" PRIu64 "/%" PRIu64 " \"%.*s\" was applied there first",
			 n->id, e->index, e->term, e->type == RAFT_ENTRY_NORMAL ? (int)e->len : 0,
			 (const char *)e->data, e->index, h->term,
			 h->type == RAFT_ENTRY_NORMAL ? (int)h->len : 0, (const char *)h->data);
		return;
	}
	if (!sim_kv_equal(&n->kv, &h->after))
		sim_fail(s, "state machine safety: n%" PRIu64 "'s state after %" PRIu64
			 " differs from the history's",
			 n->id, e->index);
}

void sim_check_restore(struct sim *s, struct sim_node *n, uint64_t index, uint64_t term)
{
	struct sim_check *c = &s->chk;
	if (index > c->hist_len) {
		sim_fail(s, "n%" PRIu64 " restored snapshot %" PRIu64 " beyond the history's %" PRIu64,
			 n->id, index, c->hist_len);
		return;
	}
	if (index == 0)
		return;
	const struct sim_hist *h = &c->hist[index - 1];
	if (h->term != term) {
		sim_fail(s, "n%" PRIu64 " restored snapshot %" PRIu64 "/%" PRIu64
			 " but the history has term %" PRIu64 " there",
			 n->id, index, term, h->term);
		return;
	}
	if (!sim_kv_equal(&n->kv, &h->after))
		sim_fail(s, "state machine safety: n%" PRIu64 "'s snapshot at %" PRIu64
			 " differs from the history's state there",
			 n->id, index);
}

/* ------------------------------------------------------------------------ */
/* Reads.                                                                   */

uint64_t sim_check_read_issue(struct sim *s, struct sim_node *n, uint32_t key)
{
	struct sim_check *c = &s->chk;
	if (c->reads_len == c->reads_cap) {
		if (c->reads_cap >= SIM_MAX_READS) {
			sim_fail(s, "read table bound reached");
			return 0;
		}
		uint64_t cap = c->reads_cap ? c->reads_cap * 2 : 256;
		struct sim_read *r = realloc(c->reads, cap * sizeof(*r));
		if (r == NULL) {
			sim_fail(s, "simulator out of memory");
			return 0;
		}
		c->reads = r;
		c->reads_cap = cap;
	}
	struct sim_read *rd = &c->reads[c->reads_len++];
	rd->slot = (uint32_t)(n->id - 1);
	rd->key = key;
	rd->acked_at_issue = c->hist_len;
	rd->done = false;
	return c->reads_len;
}

void sim_check_read_serve(struct sim *s, struct sim_node *n, const struct raft_read_state *rs)
{
	struct sim_check *c = &s->chk;
	if (rs->id == 0 || rs->id > c->reads_len) {
		sim_fail(s, "n%" PRIu64 " released read #%" PRIu64 ", never issued", n->id, rs->id);
		return;
	}
	struct sim_read *rd = &c->reads[rs->id - 1];
	if (rd->slot != n->id - 1) {
		sim_fail(s, "n%" PRIu64 " released read #%" PRIu64 ", issued on n%u", n->id, rs->id,
			 rd->slot + 1);
		return;
	}
	rd->done = true;
	if (rs->status != 0) {
		s->st.reads_failed++;
		sim_trace(s, "  read #%" PRIu64 " on n%" PRIu64 " failed: %s", rs->id, n->id,
			  raft_strerror(rs->status));
		return;
	}
	if (rs->index > n->applied) {
		sim_fail(s, "n%" PRIu64 " released read #%" PRIu64 " at index %" PRIu64
			 " before applying it (applied %" PRIu64 ")",
			 n->id, rs->id, rs->index, n->applied);
		return;
	}
	if (rs->index < rd->acked_at_issue || n->applied < rd->acked_at_issue) {
		sim_fail(s, "linearizability: read #%" PRIu64 " of k%02u on n%" PRIu64 " has read index %"
			 PRIu64 " (applied %" PRIu64 "), but index %" PRIu64
			 " was acknowledged before it was issued",
			 rs->id, rd->key, n->id, rs->index, n->applied, rd->acked_at_issue);
		return;
	}
	uint64_t v = n->kv.v[rd->key];
	uint64_t want = n->applied == 0 ? 0 : c->hist[n->applied - 1].after.v[rd->key];
	if (v != want) {
		sim_fail(s, "linearizability: read #%" PRIu64 " of k%02u on n%" PRIu64 " returns %" PRIu64
			 " but the history has %" PRIu64 " at index %" PRIu64,
			 rs->id, rd->key, n->id, v, want, n->applied);
		return;
	}
	s->st.reads_served++;
	sim_trace(s, "  read #%" PRIu64 " served on n%" PRIu64 ": k%02u = %" PRIu64 " (read index %" PRIu64
		  ", applied %" PRIu64 ", acknowledged at issue %" PRIu64 ")",
		  rs->id, n->id, rd->key, v, rs->index, n->applied, rd->acked_at_issue);
}

/* ------------------------------------------------------------------------ */
/* Pairwise log comparison (stored logs).                                   */

static bool stored_entry(struct raft_storage *st, uint64_t i, struct raft_entry *e)
{
	uint32_t n = 0;
	return st->entries(st->ctx, i, i + 1, UINT64_MAX, e, &n) == 0 && n == 1;
}

void sim_check_logs(struct sim *s)
{
	for (uint32_t a = 0; a < s->n_slots && !s->failed; a++) {
		struct sim_node *na = &s->nodes[a];
		if (!na->used || na->ms == NULL)
			continue;
		struct raft_storage sa = raft_memstore_storage(na->ms);
		for (uint32_t b = a + 1; b < s->n_slots && !s->failed; b++) {
			struct sim_node *nb = &s->nodes[b];
			if (!nb->used || nb->ms == NULL)
				continue;
			struct raft_storage sb = raft_memstore_storage(nb->ms);
			uint64_t lo = sa.first_index(sa.ctx);
			if (sb.first_index(sb.ctx) > lo)
				lo = sb.first_index(sb.ctx);
			uint64_t hi = sa.last_index(sa.ctx);
			if (sb.last_index(sb.ctx) < hi)
				hi = sb.last_index(sb.ctx);
			/* The highest index where the terms agree. */
			uint64_t top = 0;
			for (uint64_t i = hi; i >= lo && i > 0; i--) {
				uint64_t ta = stored_term(&sa, i), tb = stored_term(&sb, i);
				if (ta != PREV_UNKNOWN && ta == tb) {
					top = i;
					break;
				}
			}
			for (uint64_t i = lo; i <= top && i > 0; i++) {
				struct raft_entry ea, eb;
				if (!stored_entry(&sa, i, &ea) || !stored_entry(&sb, i, &eb)) {
					sim_fail(s, "n%u or n%u cannot read back stored entry %" PRIu64, a + 1,
						 b + 1, i);
					return;
				}
				if (ea.term != eb.term || ea.type != eb.type || ea.len != eb.len ||
				    (ea.len > 0 && memcmp(ea.data, eb.data, ea.len) != 0)) {
					sim_fail(s, "log matching: n%u and n%u agree on the term at %" PRIu64
						 " but differ at %" PRIu64,
						 a + 1, b + 1, top, i);
					return;
				}
			}
		}
	}
}
