/* sim_demo.c: `raft-sim --demo`, the narrated run behind `make run`.
 *
 * Five nodes in the simulator, with every invariant checked as in a normal
 * seed, but a script instead of random faults: an election, some entries,
 * the leader cut off by a partition, a new leader on the majority side, the
 * old one stepping down by check-quorum, the partition healing, the old
 * leader catching up, and all logs compared at the end.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "sim.h"

#define DEMO_SEED 7
#define DEMO_NODES 5

struct demo {
	FILE *out;
	uint64_t old_leader;
	bool cut;
	uint64_t cut_at;
	uint64_t dropped_at_cut;
};

static struct demo *demo_of(struct sim *s)
{
	return s->narrate_ctx;
}

static void say(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct sim *s, const char *fmt, ...)
{
	FILE *out = demo_of(s)->out;
	fprintf(out, "[%6.3f s] ", (double)s->now / 1000.0);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
}

static void narrate(struct sim *s, const char *what, struct sim_node *n)
{
	struct demo *d = demo_of(s);
	if (strcmp(what, "leader") == 0) {
		if (d->cut)
			say(s, "n%" PRIu64 " wins the election of term %" PRIu64 " on the majority side,"
			       " %.1f s after the cut: pre-vote first, then the real vote.",
			    n->id, n->term, (double)(s->now - d->cut_at) / 1000.0);
		else
			say(s, "n%" PRIu64 " wins the election and leads term %" PRIu64
			       " (it timed out first, won a pre-vote, then the vote).",
			    n->id, n->term);
	} else if (strcmp(what, "stepdown") == 0) {
		if (d->cut && n->id == d->old_leader)
			say(s, "n%" PRIu64 " steps down, still in term %" PRIu64 ": for a whole election"
			       " timeout it has not heard from a majority (check-quorum), so it stops"
			       " acting as leader although nobody told it of a newer term.",
			    n->id, n->term);
		else
			say(s, "n%" PRIu64 " steps down in term %" PRIu64 ".", n->id, n->term);
	} else if (strcmp(what, "deposed") == 0) {
		say(s, "n%" PRIu64 " learns of term %" PRIu64 " and becomes a follower.", n->id, n->term);
	}
}

typedef bool (*demo_pred)(struct sim *s, void *arg);

/* Step until pred holds; false on a violation or after limit_ms. */
static bool run_until(struct sim *s, demo_pred pred, void *arg, uint64_t limit_ms)
{
	uint64_t deadline = s->now + limit_ms;
	while (!s->failed && s->now <= deadline) {
		if (pred(s, arg))
			return true;
		if (!sim_step(s))
			return false;
	}
	return !s->failed && pred(s, arg);
}

static bool has_leader(struct sim *s, void *arg)
{
	(void)arg;
	return sim_node_leader(s) != NULL;
}

/* A leader other than the old one, and the old one no longer leading. */
static bool new_leader_and_stepdown(struct sim *s, void *arg)
{
	struct demo *d = arg;
	struct sim_node *l = sim_node_leader(s);
	struct sim_node *old = sim_node_by_id(s, d->old_leader);
	return l != NULL && l->id != d->old_leader && old->state != RAFT_LEADER;
}

struct applied_goal {
	uint64_t index;
	uint64_t skip; /* a node not waited for, 0: none */
};

static bool all_applied(struct sim *s, void *arg)
{
	struct applied_goal *g = arg;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *n = &s->nodes[i];
		if (n->used && n->id != g->skip && (n->applied < g->index || n->writing))
			return false;
	}
	return true;
}

/* No write in flight, every node's commit and stored log equal. */
static bool settled(struct sim *s, void *arg)
{
	(void)arg;
	uint64_t commit = 0, last = 0;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *n = &s->nodes[i];
		struct raft_status st;
		raft_status(n->r, &st);
		if (n->writing || raft_has_update(n->r))
			return false;
		if (i == 0) {
			commit = st.commit;
			last = st.last_index;
		} else if (st.commit != commit || st.last_index != last || n->applied != commit) {
			return false;
		}
	}
	return true;
}

static uint64_t propose_some(struct sim *s, struct sim_node *l, uint32_t count, uint32_t key0)
{
	uint64_t last = 0;
	for (uint32_t i = 0; i < count; i++) {
		char data[SIM_KV_ENTRY_MAX];
		uint64_t op = ++s->next_op;
		uint32_t len = sim_kv_format(data, sizeof(data), (key0 + i) % SIM_KV_KEYS, op);
		uint64_t index = 0;
		if (raft_propose(l->r, data, len, &index) == 0)
			last = index;
	}
	sim_node_pump(s, l);
	sim_node_observe(s, l);
	return last;
}

static void table(struct sim *s)
{
	FILE *out = demo_of(s)->out;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *n = &s->nodes[i];
		struct raft_status st;
		raft_status(n->r, &st);
		fprintf(out, "             n%" PRIu64 ": %-9s term %" PRIu64 "  last index %" PRIu64
			     "  commit %" PRIu64 "  applied %" PRIu64 "\n",
			n->id, sim_state_name(st.state), st.term, st.last_index, st.commit, n->applied);
	}
}

/* Every node's stored log, entry by entry, against n1's. */
static bool logs_identical(struct sim *s, uint64_t *last, uint64_t *term)
{
	struct raft_storage a = raft_memstore_storage(s->nodes[0].ms);
	*last = a.last_index(a.ctx);
	if (a.term(a.ctx, *last, term) != 0)
		return false;
	for (uint32_t k = 1; k < s->n_slots; k++) {
		struct raft_storage b = raft_memstore_storage(s->nodes[k].ms);
		if (b.last_index(b.ctx) != *last || b.first_index(b.ctx) != a.first_index(a.ctx))
			return false;
		for (uint64_t i = a.first_index(a.ctx); i <= *last; i++) {
			struct raft_entry ea, eb;
			uint32_t na = 0, nb = 0;
			if (a.entries(a.ctx, i, i + 1, UINT64_MAX, &ea, &na) != 0 ||
			    b.entries(b.ctx, i, i + 1, UINT64_MAX, &eb, &nb) != 0 || na != 1 || nb != 1)
				return false;
			if (ea.term != eb.term || ea.type != eb.type || ea.len != eb.len ||
			    (ea.len > 0 && memcmp(ea.data, eb.data, ea.len) != 0))
				return false;
		}
	}
	return true;
}

int sim_demo(FILE *out)
{
	static struct sim s; /* large; one per process */
	struct sim_opts o = {
		.nodes = DEMO_NODES,
		.kind = SIM_BASIC,
		.steps = 0,
		.scripted = true,
		.out = out,
	};
	struct demo d = {.out = out};
	if (sim_init(&s, &o, DEMO_SEED) != 0) {
		fprintf(out, "demo: set-up failed: %s\n", s.why);
		sim_fini(&s);
		return -1;
	}
	s.narrate = narrate;
	s.narrate_ctx = &d;
	bool ok = true;

	fprintf(out, "Cairn Raft core, narrated: five nodes in the deterministic simulator (seed %d).\n"
		     "Each message takes 1-10 ms, a tick is 100 ms, an election timeout 10-20 ticks;\n"
		     "pre-vote and check-quorum are on. Every invariant is checked after every step.\n\n",
		DEMO_SEED);
	{
		struct raft_status st;
		raft_status(s.nodes[0].r, &st);
		say(&s, "Five nodes n1..n5 start as followers of term %" PRIu64 "; their logs hold"
			" the founding configuration (entries 1..%" PRIu64 "); none knows a leader.",
		    st.term, st.last_index);
	}
	ok = run_until(&s, has_leader, NULL, 10000);
	struct sim_node *l = ok ? sim_node_leader(&s) : NULL;

	if (l != NULL) {
		uint64_t last = propose_some(&s, l, 5, 1);
		say(&s, "A client sends 5 writes to n%" PRIu64 "; they become entries %" PRIu64
			"..%" PRIu64 " of its log.",
		    l->id, last - 4, last);
		struct applied_goal g = {.index = last};
		ok = run_until(&s, all_applied, &g, 5000);
		if (ok) {
			say(&s, "All five nodes have stored, committed and applied up to index %" PRIu64 ":",
			    last);
			table(&s);
		}
	}

	struct sim_node *nl = NULL;
	if (ok && l != NULL) {
		bool in_a[SIM_MAX_SLOTS];
		memset(in_a, 0, sizeof(in_a));
		in_a[l->id - 1] = true;
		sim_net_split(&s, in_a);
		d.cut = true;
		d.cut_at = s.now;
		d.old_leader = l->id;
		d.dropped_at_cut = s.st.msgs_dropped;
		say(&s, "A partition cuts the leader n%" PRIu64 " off from the other four nodes.", l->id);
		ok = run_until(&s, new_leader_and_stepdown, &d, 20000);
		nl = ok ? sim_node_leader(&s) : NULL;
	}

	uint64_t last2 = 0;
	if (nl != NULL) {
		last2 = propose_some(&s, nl, 3, 6);
		struct applied_goal g = {.index = last2, .skip = d.old_leader};
		ok = run_until(&s, all_applied, &g, 5000);
		if (ok) {
			struct sim_node *old = sim_node_by_id(&s, d.old_leader);
			say(&s, "n%" PRIu64 " commits 3 more writes (up to index %" PRIu64
				") with the four nodes it reaches; n%" PRIu64 " is stuck at applied %" PRIu64
				", term %" PRIu64 ":",
			    nl->id, last2, old->id, old->applied, old->term);
			table(&s);
		}
	}

	if (ok && nl != NULL) {
		sim_net_heal(&s);
		say(&s, "The partition heals.");
		struct applied_goal g = {.index = last2};
		ok = run_until(&s, all_applied, &g, 10000);
		if (ok) {
			struct sim_node *old = sim_node_by_id(&s, d.old_leader);
			say(&s, "n%" PRIu64 " has heard from n%" PRIu64 ", follows it in term %" PRIu64
				" and has caught up: applied %" PRIu64 ".",
			    old->id, nl->id, old->term, old->applied);
		}
	}

	uint64_t last = 0, term = 0;
	if (ok) {
		/* Let the last acknowledgements and commit indexes settle. */
		ok = run_until(&s, settled, NULL, 5000);
		sim_check_logs(&s);
		ok = ok && !s.failed && logs_identical(&s, &last, &term);
		if (ok) {
			say(&s, "All five logs are identical, entry by entry: last index %" PRIu64
				", term %" PRIu64 ".",
			    last, term);
			table(&s);
		}
	}

	fputc('\n', out);
	if (ok && !s.failed) {
		fprintf(out,
			"Summary: %" PRIu64 " leaders elected, %" PRIu64 " client writes committed and"
			" applied on all 5 nodes, %" PRIu64 " messages delivered, %" PRIu64
			" dropped by the partition, %.1f simulated seconds in %" PRIu64
			" steps; every invariant held after every step.\n",
			s.st.leaders_elected, s.st.entries_committed, s.st.msgs_delivered,
			s.st.msgs_dropped - d.dropped_at_cut, (double)s.now / 1000.0, s.step);
	} else {
		fprintf(out, "The demo did not go as planned: %s\n",
			s.failed ? s.why : "a step did not happen in time");
		ok = false;
	}
	sim_fini(&s);
	if (s.failed && ok) {
		fprintf(out, "At the end: %s\n", s.why);
		ok = false;
	}
	return ok ? 0 : -1;
}
