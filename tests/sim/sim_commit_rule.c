/* sim_commit_rule.c: the commit-rule scenario: rounds that steer a cluster
 * into the shape of thesis §3.6.2, Figure 3.7, where a leader that counted
 * replicas of an entry of an earlier term would commit it, and a later
 * leader that never had it would overwrite it.
 *
 * A round starts at a fault event when a leader exists and every voter is
 * up; every size and moment is drawn from the seed's fault stream:
 *   SPLIT      the leader L1 (term T1) and a - 1 other voters are cut off
 *              from the rest; L1 is given 2..12 entries, which reach its
 *              side only: the "old entries". Sometimes L1 then crashes.
 *   RIVAL      the rest elect L2 (T2 > T1). In the step that elects it,
 *              before its first update is taken, L2 and b - 1 others are cut
 *              off from everyone, so its no-op and 0..6 entries of T2 land at
 *              the old entries' indexes on its side only.
 *   RECONCILE  30..800 ms later the rival's side is cut off and the old side
 *              rejoins the third; old-side nodes are made to campaign until
 *              one, L3, wins a term above T2. Its log beats the third side's,
 *              so it can win there, and it then catches the third side up on
 *              the old entries, one APPEND at a time when messages are small.
 *   BACK       L3 is cut off again (crashed, isolated alone, or with its
 *              side) 0..700 ms after its election, or 0..20 ms after its
 *              commit index first moves (0.7..1.5 s after it at the latest).
 *              An L3 that keeps the rule has committed nothing before its own
 *              no-op is on a majority, and then the rival cannot win; one that
 *              counts replicas of the old entries may have committed them
 *              with its no-op on a minority.
 *   OVERWRITE  the rival's side rejoins the third; rival-side nodes are made
 *              to campaign. L2's log (last term T2) beats every log without
 *              L3's no-op: if it wins, it overwrites the old entries.
 * Sizes: a, b < majority q, so no side commits alone; a + b >= q, so the
 * third side cannot elect on its own while L2's side is cut off; and
 * b <= voters - q, so the old side with the third is a majority. The round
 * ends (the network healed) when a leader of a later term is elected after
 * the cut, or when a phase outlasts 3 election timeouts; the next starts
 * 0.2..3 s later. Clients keep proposing to the highest-term leader, which
 * adds entries on every side. sim_check.c then flags a commit that a later
 * leader overwrote: commit safety (the terms each hard-state commit index
 * covered), leader completeness, state machine safety.
 */
#include <inttypes.h>
#include <string.h>

#include "sim.h"

enum step {
	STEP_RIVAL_PROPOSE = 1, /* give the rival its entries */
	STEP_RECONCILE,         /* cut off the rival's side, rejoin the others */
	STEP_NUDGE,             /* a node of the side wanted next campaigns */
	STEP_CUT,               /* cut off the returned leader */
	STEP_CRASH_OLD,         /* L1 crashes while cut off */
	STEP_END,               /* heal; the next round waits a while */
	STEP_WATCH,             /* a phase that outlasts its bound ends the round */
};
_Static_assert(STEP_WATCH < SIM_MAX_SLOTS, "a step travels in an event's slot");

static const char *const phase_names[] = {
	"idle", "split", "rival", "reconcile", "back", "overwrite", "ending",
};
_Static_assert(sizeof(phase_names) / sizeof(phase_names[0]) == SIM_CR_ENDING + 1, "a name a phase");

/* The longest randomized election timeout, ticks at their slowest. */
static uint64_t election_ms(const struct sim *s)
{
	return 2ULL * s->p.election_ticks * (SIM_TICK_MS + 3);
}

static void plan(struct sim *s, uint64_t delay, uint32_t step)
{
	sim_schedule(s, delay, SIM_EV_ROUND, step, s->cr.round, NULL);
}

static bool is_voter(const struct sim *s, uint32_t slot)
{
	const struct sim_node *n = &s->nodes[slot];
	return n->used && !n->stopped && !n->removed &&
	       raft_conf_role(&s->chk.conf, n->id) == RAFT_VOTER;
}

/* Nodes talk only within their group (group[slot], any small values). */
static void partition(struct sim *s, const uint8_t *group, const char *what)
{
	sim_net_heal(s);
	for (uint32_t a = 0; a < s->n_slots; a++)
		for (uint32_t b = 0; b < s->n_slots; b++)
			if (group[a] != group[b])
				sim_net_block(s, a, b);
	s->st.partitions++;
	if (!sim_tracing(s))
		return;
	char buf[256];
	size_t used = 0;
	buf[0] = '\0';
	for (uint32_t g = 0; g <= SIM_CR_NEW; g++) {
		bool any = false;
		for (uint32_t i = 0; i < s->n_slots && used + 8 < sizeof(buf); i++) {
			if (!s->nodes[i].used || group[i] != g)
				continue;
			int k = snprintf(buf + used, sizeof(buf) - used, "%s%sn%u",
					 !any && used > 0 ? " | " : "", any ? "," : "{", i + 1);
			if (k < 0)
				return;
			used += (size_t)k;
			any = true;
		}
		if (any && used + 2 < sizeof(buf)) {
			buf[used++] = '}';
			buf[used] = '\0';
		}
	}
	sim_trace(s, "ROUND %" PRIu64 ": %s: %s", s->cr.round, what, buf);
}

static void propose(struct sim *s, struct sim_node *n, uint64_t k)
{
	for (uint64_t i = 0; i < k && n->up; i++) {
		char data[SIM_KV_ENTRY_MAX];
		uint64_t op = ++s->next_op;
		uint32_t key = (uint32_t)sim_rng_below(&s->fault_rng, SIM_KV_KEYS);
		uint32_t len = sim_kv_format(data, sizeof(data), key, op);
		uint64_t index = 0;
		int rc = raft_propose(n->r, data, len, &index);
		s->st.proposals++;
		if (rc != 0)
			s->st.proposals_refused++;
		sim_trace(s,
			  "ROUND %" PRIu64 ": propose \"%s\" on n%" PRIu64 ": %s, index %" PRIu64,
			  s->cr.round, data, n->id, rc ? raft_strerror(rc) : "ok", index);
	}
	sim_node_pump(s, n);
	sim_node_observe(s, n);
}

static void crash_for(struct sim *s, struct sim_node *n, uint64_t lo, uint64_t hi, const char *why)
{
	if (n == NULL || !n->up || n->stopped)
		return;
	sim_node_crash(s, n, why);
	sim_schedule(s, sim_rng_range(&s->fault_rng, lo, hi), SIM_EV_RESTART, (uint32_t)(n->id - 1),
		     n->gen, NULL);
}

static void end_round(struct sim *s, const char *why)
{
	struct sim_cr *cr = &s->cr;
	sim_net_heal(s);
	sim_trace(s, "ROUND %" PRIu64 " ends in phase %s: %s; the network is whole again",
		  cr->round, phase_names[cr->phase], why);
	cr->phase = SIM_CR_IDLE;
	cr->round++; /* drops the events still planned for it */
	cr->idle_until = s->now + sim_rng_range(&s->fault_rng, 200, 3000);
}

/* Pick k distinct slots from the first n of ids, in place (partial shuffle). */
static void pick(struct sim *s, uint32_t *ids, uint32_t n, uint32_t k)
{
	for (uint32_t i = 0; i < k && i < n; i++) {
		uint32_t j = i + (uint32_t)sim_rng_below(&s->fault_rng, n - i);
		uint32_t t = ids[i];
		ids[i] = ids[j];
		ids[j] = t;
	}
}

bool sim_cr_fault(struct sim *s)
{
	struct sim_cr *cr = &s->cr;
	if (s->quiet || cr->phase != SIM_CR_IDLE || s->now < cr->idle_until)
		return false;
	struct sim_node *l = sim_node_leader(s);
	if (l == NULL || !is_voter(s, (uint32_t)(l->id - 1)))
		return false;
	/* Every voter up: the sizes below count on them. */
	uint32_t others[SIM_MAX_SLOTS], n_others = 0, nv = 0;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		if (!is_voter(s, i))
			continue;
		if (!s->nodes[i].up)
			return false;
		nv++;
		if (i != l->id - 1)
			others[n_others++] = i;
	}
	uint32_t q = nv / 2 + 1;
	uint32_t sizes[SIM_MAX_SLOTS], n_sizes = 0;
	for (uint32_t a = 1; a < q; a++) {
		uint32_t lo = q - a > 1 ? q - a : 1;
		uint32_t hi = nv - q < nv - a - 1 ? nv - q : nv - a - 1;
		if (lo <= hi)
			sizes[n_sizes++] = a;
	}
	if (n_sizes == 0)
		return false; /* fewer than 3 voters: no three sides */
	uint32_t a = sizes[sim_rng_below(&s->fault_rng, n_sizes)];
	cr->b_min = q - a > 1 ? q - a : 1;
	cr->b_max = nv - q < nv - a - 1 ? nv - q : nv - a - 1;
	memset(cr->group, SIM_CR_REST, sizeof(cr->group));
	cr->group[l->id - 1] = SIM_CR_OLD;
	pick(s, others, n_others, a - 1);
	for (uint32_t i = 0; i + 1 < a; i++)
		cr->group[others[i]] = SIM_CR_OLD;
	cr->phase = SIM_CR_SPLIT;
	cr->old_id = l->id;
	cr->old_term = l->term;
	cr->until = s->now + 3 * election_ms(s);
	s->st.cr_rounds++;
	sim_trace(s,
		  "ROUND %" PRIu64 ": leader n%" PRIu64 " of term %" PRIu64
		  " and %u of %u voters are cut off (the rival's side will have %u..%u)",
		  cr->round, l->id, l->term, a, nv, cr->b_min, cr->b_max);
	partition(s, cr->group, "the old side is cut off");
	propose(s, l, sim_rng_range(&s->fault_rng, 2, 12));
	if (sim_rng_pm(&s->fault_rng, 250))
		plan(s, sim_rng_range(&s->fault_rng, 10, 300), STEP_CRASH_OLD);
	plan(s, cr->until - s->now, STEP_WATCH);
	return true;
}

/* The rest elected n: give it a side of its own before it sends anything. */
static void rival_elected(struct sim *s, struct sim_node *n)
{
	struct sim_cr *cr = &s->cr;
	uint32_t rest[SIM_MAX_SLOTS], k = 0;
	for (uint32_t i = 0; i < s->n_slots; i++)
		if (is_voter(s, i) && cr->group[i] == SIM_CR_REST && i != n->id - 1)
			rest[k++] = i;
	uint32_t b = (uint32_t)sim_rng_range(&s->fault_rng, cr->b_min, cr->b_max);
	pick(s, rest, k, b - 1);
	cr->group[n->id - 1] = SIM_CR_NEW;
	for (uint32_t i = 0; i + 1 < b && i < k; i++)
		cr->group[rest[i]] = SIM_CR_NEW;
	cr->phase = SIM_CR_RIVAL;
	cr->rival_id = n->id;
	cr->rival_term = n->term;
	cr->until = s->now + 3 * election_ms(s);
	partition(s, cr->group,
		  "the rival is elected; its side is cut off before its first update");
	plan(s, 0, STEP_RIVAL_PROPOSE);
	plan(s, sim_rng_range(&s->fault_rng, 30, 800), STEP_RECONCILE);
}

/* An old-side node won with the third side: let it catch them up, then cut
 * it off at a moment of the round's choosing. */
static void back_elected(struct sim *s, struct sim_node *n)
{
	struct sim_cr *cr = &s->cr;
	struct raft_status st;
	raft_status(n->r, &st);
	cr->phase = SIM_CR_BACK;
	cr->back_id = n->id;
	cr->back_term = n->term;
	cr->back_commit = st.commit;
	cr->cut = (uint32_t)sim_rng_below(&s->fault_rng, 3);
	cr->cut_on_commit = sim_rng_pm(&s->fault_rng, 500);
	cr->cut_planned = !cr->cut_on_commit;
	cr->until = s->now + 3 * election_ms(s);
	s->st.cr_returns++;
	sim_trace(s,
		  "ROUND %" PRIu64 ": n%" PRIu64
		  " of the old side is back as leader of term %" PRIu64 " (commit %" PRIu64
		  "); it will be cut off %s",
		  cr->round, n->id, n->term, st.commit,
		  cr->cut_on_commit ? "when its commit index moves" : "at a random moment");
	/* With cut_on_commit this is a fallback, for a leader that never
	 * commits (its side may lose the third side to another crash). */
	plan(s,
	     cr->cut_on_commit ? sim_rng_range(&s->fault_rng, 700, 1500) :
				 sim_rng_range(&s->fault_rng, 0, 700),
	     STEP_CUT);
}

void sim_cr_leader(struct sim *s, struct sim_node *n)
{
	struct sim_cr *cr = &s->cr;
	if (s->quiet)
		return;
	uint32_t g = cr->group[n->id - 1];
	switch (cr->phase) {
	case SIM_CR_SPLIT:
		if (g == SIM_CR_REST && n->term > cr->old_term)
			rival_elected(s, n);
		break;
	case SIM_CR_RECONCILE:
		if (n->term <= cr->rival_term)
			break;
		if (g == SIM_CR_OLD)
			back_elected(s, n);
		else
			end_round(s, "a node without the old entries won first");
		break;
	case SIM_CR_OVERWRITE:
		if (n->term <= cr->back_term)
			break;
		if (g == SIM_CR_NEW) {
			s->st.cr_rivals++;
			sim_trace(s,
				  "ROUND %" PRIu64 ": the rival's side is back: n%" PRIu64
				  " leads term %" PRIu64 " over the old entries",
				  cr->round, n->id, n->term);
		}
		/* Let the new leader replicate for a while before the heal. */
		cr->phase = SIM_CR_ENDING;
		plan(s, sim_rng_range(&s->fault_rng, 300, 2000), STEP_END);
		break;
	default:
		break;
	}
}

void sim_cr_commit(struct sim *s, struct sim_node *n)
{
	struct sim_cr *cr = &s->cr;
	if (s->quiet || cr->phase != SIM_CR_BACK || cr->cut_planned || n->id != cr->back_id ||
	    n->term != cr->back_term || n->commit <= cr->back_commit)
		return;
	cr->cut_planned = true;
	plan(s, sim_rng_range(&s->fault_rng, 0, 20), STEP_CUT);
}

static void cut(struct sim *s)
{
	struct sim_cr *cr = &s->cr;
	struct sim_node *l = sim_node_by_id(s, cr->back_id);
	uint8_t group[SIM_MAX_SLOTS];
	s->st.cr_cuts++;
	switch (cr->cut) {
	case 0:
		sim_net_heal(s);
		sim_trace(s,
			  "ROUND %" PRIu64 ": n%" PRIu64 " crashes; everyone else is reconnected",
			  cr->round, cr->back_id);
		crash_for(s, l, 300, 3000, "commit-rule round: the returned leader");
		break;
	case 1:
		for (uint32_t i = 0; i < SIM_MAX_SLOTS; i++)
			group[i] = cr->group[i] == SIM_CR_OLD ? SIM_CR_OLD : SIM_CR_NEW;
		partition(s, group, "the old side is cut off again, the others are reconnected");
		break;
	default:
		memset(group, SIM_CR_NEW, sizeof(group));
		group[cr->back_id - 1] = SIM_CR_OLD;
		partition(s, group, "the returned leader is isolated, the others are reconnected");
		break;
	}
	cr->phase = SIM_CR_OVERWRITE;
	cr->until = s->now + 3 * election_ms(s);
	plan(s, sim_rng_range(&s->fault_rng, 0, 600), STEP_NUDGE);
}

/* A node of the side the phase waits for campaigns now, rather than after
 * its election timeout: the window the round aims at is short. */
static void nudge(struct sim *s)
{
	struct sim_cr *cr = &s->cr;
	uint32_t want = cr->phase == SIM_CR_RECONCILE ? SIM_CR_OLD : SIM_CR_NEW;
	uint32_t ids[SIM_MAX_SLOTS], k = 0;
	for (uint32_t i = 0; i < s->n_slots; i++)
		if (is_voter(s, i) && s->nodes[i].up && cr->group[i] == want)
			ids[k++] = i;
	if (k > 0) {
		struct sim_node *n = &s->nodes[ids[sim_rng_below(&s->fault_rng, k)]];
		int rc = raft_campaign(n->r);
		sim_trace(s, "ROUND %" PRIu64 ": n%" PRIu64 " campaigns now: %s", cr->round, n->id,
			  rc ? raft_strerror(rc) : "ok");
		sim_node_pump(s, n);
		sim_node_observe(s, n);
	}
	plan(s, sim_rng_range(&s->fault_rng, 300, 1200), STEP_NUDGE);
}

void sim_cr_event(struct sim *s, uint32_t step, uint64_t round)
{
	struct sim_cr *cr = &s->cr;
	if (s->quiet || round != cr->round)
		return;
	struct sim_node *n;
	uint8_t group[SIM_MAX_SLOTS];
	switch (step) {
	case STEP_RIVAL_PROPOSE:
		n = sim_node_by_id(s, cr->rival_id);
		if (n != NULL && n->up && n->state == RAFT_LEADER && n->term == cr->rival_term)
			propose(s, n, sim_rng_range(&s->fault_rng, 0, 6));
		break;
	case STEP_RECONCILE:
		if (cr->phase != SIM_CR_RIVAL)
			break;
		for (uint32_t i = 0; i < SIM_MAX_SLOTS; i++)
			group[i] = cr->group[i] == SIM_CR_NEW ? SIM_CR_NEW : SIM_CR_OLD;
		partition(s, group, "the rival's side is cut off, the old side rejoins the rest");
		cr->phase = SIM_CR_RECONCILE;
		cr->until = s->now + 3 * election_ms(s);
		plan(s, sim_rng_range(&s->fault_rng, 0, 400), STEP_NUDGE);
		break;
	case STEP_NUDGE:
		if (cr->phase == SIM_CR_RECONCILE || cr->phase == SIM_CR_OVERWRITE)
			nudge(s);
		break;
	case STEP_CUT:
		if (cr->phase == SIM_CR_BACK)
			cut(s);
		break;
	case STEP_CRASH_OLD:
		if (cr->phase == SIM_CR_SPLIT || cr->phase == SIM_CR_RIVAL)
			crash_for(s, sim_node_by_id(s, cr->old_id), 300, 2500,
				  "commit-rule round: the old leader, cut off");
		break;
	case STEP_END:
		end_round(s, "done");
		break;
	case STEP_WATCH:
		if (cr->phase == SIM_CR_IDLE)
			break;
		if (s->now >= cr->until)
			end_round(s, "the phase outlasted its bound");
		else
			plan(s, cr->until - s->now, STEP_WATCH);
		break;
	default:
		sim_fail(s, "unknown commit-rule step %u", step);
		break;
	}
}
