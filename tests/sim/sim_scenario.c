/* sim_scenario.c: what a seed does to the cluster: its parameters, its fault
 * schedule and its clients.
 *
 * A scenario kind weighs the fault actions (the table below); "mixed" draws
 * a kind per seed. The commit-rule kind drives its partitions and crashes
 * in rounds (sim_commit_rule.c) and takes only noise from the table. The
 * fault schedule acts every fault_gap_min..max ms and the clients every
 * 1..client_gap_max ms, until the quiet phase. Each action is traced, so a
 * failing seed's trace tells the story that led to it.
 */
#include <inttypes.h>
#include <string.h>

#include "sim.h"

static const char *const kind_names[SIM_KIND_COUNT] = {
	"basic", "partition", "crash", "membership", "snapshot", "transfer", "commit-rule",
};

const char *sim_kind_name(uint32_t kind)
{
	return kind < SIM_KIND_COUNT ? kind_names[kind] : "?";
}

int sim_kind_parse(const char *name)
{
	for (int i = 0; i < SIM_KIND_COUNT; i++)
		if (strcmp(name, kind_names[i]) == 0)
			return i;
	return -1;
}

void sim_scenario_params(struct sim *s, uint32_t nodes, int kind)
{
	struct sim_params *p = &s->p;
	/* The size and the kind have their own stream, so that forcing them
	 * (as the replay line of a "mixed" seed does) changes nothing else. */
	struct sim_rng kr, r;
	sim_rng_init(&kr, sim_seed_mix(s->seed, 4, 0));
	sim_rng_init(&r, sim_seed_mix(s->seed, 5, 0));
	uint32_t drawn_nodes = 3 + 2 * (uint32_t)sim_rng_below(&kr, 3);
	uint32_t drawn_kind = (uint32_t)sim_rng_below(&kr, SIM_KIND_COUNT);
	p->nodes = nodes ? nodes : drawn_nodes;
	p->kind = kind >= 0 ? (uint32_t)kind : drawn_kind;

	if (s->opts->scripted) {
		/* The demo: defaults, a calm network, no compaction. */
		p->pre_vote = p->check_quorum = true;
		p->election_ticks = 10;
		p->heartbeat_ticks = 1;
		p->chunk_bytes = 64;
		p->snap_inflight = 4;
		p->max_inflight = 256;
		p->max_msg_bytes = 1 << 20;
		p->snap_every = 1000000;
		p->delay_min = 1;
		p->delay_max = 10;
		p->long_max = 10;
		return;
	}
	/* Mostly the configuration Cairn runs with; some seeds without pre-vote
	 * or check-quorum, some with other timeouts. */
	p->pre_vote = !sim_rng_pm(&r, 150);
	p->check_quorum = !sim_rng_pm(&r, 150);
	p->election_ticks = sim_rng_pm(&r, 750) ? 10 : (uint32_t)sim_rng_range(&r, 5, 20);
	p->heartbeat_ticks = sim_rng_pm(&r, 800) ? 1 : (uint32_t)sim_rng_range(&r, 1, 3);
	static const uint32_t chunks[] = {16, 32, 64};
	p->chunk_bytes = chunks[sim_rng_below(&r, 3)];
	p->snap_inflight = (uint32_t)sim_rng_range(&r, 1, 4);
	p->max_inflight = sim_rng_pm(&r, 500) ? 256 : (uint32_t)sim_rng_range(&r, 1, 8);
	p->max_msg_bytes = sim_rng_pm(&r, 500) ? 1 << 20 : sim_rng_range(&r, 16, 256);
	/* With tiny messages or windows the leader drains a few entries per
	 * round trip; a deployment so configured would also bound its
	 * uncommitted log, or a backlog outlasts any liveness bound. */
	if (p->max_msg_bytes < 1024 || p->max_inflight < 16)
		p->max_uncommitted = 1024;
	p->snap_every = (uint32_t)sim_rng_range(&r, 10, 60);
	p->snap_keep = (uint32_t)sim_rng_range(&r, 0, 10);
	p->loss_pm = sim_rng_pm(&r, 300) ? 0 : (uint32_t)sim_rng_range(&r, 1, 80);
	p->dup_pm = sim_rng_pm(&r, 500) ? 0 : (uint32_t)sim_rng_range(&r, 1, 50);
	p->long_pm = sim_rng_pm(&r, 500) ? 0 : (uint32_t)sim_rng_range(&r, 1, 30);
	p->delay_min = (uint32_t)sim_rng_range(&r, 1, 3);
	p->delay_max = p->delay_min + (uint32_t)sim_rng_range(&r, 2, 30);
	p->long_max = (uint32_t)sim_rng_range(&r, 100, 1500);
	p->slow_disk_pm = sim_rng_pm(&r, 500) ? 0 : (uint32_t)sim_rng_range(&r, 100, 600);
	p->client_gap_max = (uint32_t)sim_rng_range(&r, 20, 200);
	p->fault_gap_min = 200;
	p->fault_gap_max = (uint32_t)sim_rng_range(&r, 600, 3000);
	p->down_max_ms = 4000;
	if (p->kind == SIM_SNAPSHOT) {
		/* Snapshots often and little kept: whoever lags needs one. */
		p->snap_every = (uint32_t)sim_rng_range(&r, 3, 15);
		p->snap_keep = (uint32_t)sim_rng_range(&r, 0, 2);
		p->down_max_ms = 10000;
	}
	if (p->kind == SIM_COMMIT_RULE) {
		/* Figure 3.7's window is a follower catching up on the old
		 * entries: it lasts one APPEND per entry or two when messages
		 * are small, and one round trip each when the window is 1. */
		if (sim_rng_pm(&r, 750))
			p->max_msg_bytes = sim_rng_range(&r, 16, 64);
		if (sim_rng_pm(&r, 500))
			p->max_inflight = (uint32_t)sim_rng_range(&r, 1, 4);
		if (p->max_msg_bytes < 1024 || p->max_inflight < 16)
			p->max_uncommitted = 1024;
	}
}

/* ------------------------------------------------------------------------ */
/* Faults.                                                                  */

enum action {
	A_NONE,
	A_SPLIT,    /* symmetric partition into two random groups */
	A_ONEWAY,   /* asymmetric: one direction cut */
	A_ISOLATE,  /* the leader alone on its side */
	A_HEAL,
	A_CRASH,    /* a random node, back later */
	A_CRASH_LEADER,
	A_BOUNCE,   /* crash and restart at once: only the write in flight is lost */
	A_DISK,     /* a disk turns slow, or fast again */
	A_ADD,      /* a new node joins as a learner */
	A_PROMOTE,  /* a learner becomes a voter */
	A_REMOVE,   /* a member leaves */
	A_DEMOTE,   /* a voter becomes a learner */
	A_TRANSFER, /* leadership transfer */
	A_CAMPAIGN, /* a node starts an election at once */
	A_COUNT,
};

static const uint8_t weights[SIM_KIND_COUNT][A_COUNT] = {
	/*              none split oneway isolate heal crash crashL bounce disk add promote remove demote transfer campaign */
	[SIM_BASIC] = {6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1},
	[SIM_PARTITION] = {1, 3, 3, 3, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
	[SIM_CRASH] = {1, 0, 0, 0, 1, 3, 3, 3, 2, 0, 0, 0, 0, 0, 0},
	[SIM_MEMBERSHIP] = {1, 1, 0, 1, 2, 1, 1, 0, 1, 4, 3, 3, 1, 1, 0},
	[SIM_SNAPSHOT] = {1, 1, 1, 1, 2, 4, 1, 1, 1, 1, 1, 1, 0, 0, 0},
	[SIM_TRANSFER] = {1, 1, 0, 1, 2, 1, 1, 0, 1, 0, 0, 0, 0, 6, 1},
	/* Partitions and crashes come from the rounds (sim_commit_rule.c);
	 * these only add noise between and within them. */
	[SIM_COMMIT_RULE] = {5, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0},
};

static uint32_t pick_action(struct sim *s)
{
	const uint8_t *w = weights[s->p.kind];
	uint32_t total = 0;
	for (uint32_t a = 0; a < A_COUNT; a++)
		total += w[a];
	uint32_t x = (uint32_t)sim_rng_below(&s->fault_rng, total);
	for (uint32_t a = 0; a < A_COUNT; a++) {
		if (x < w[a])
			return a;
		x -= w[a];
	}
	return A_NONE;
}

/* A random running node, NULL if none. */
static struct sim_node *pick_up(struct sim *s, struct sim_rng *r)
{
	uint32_t ups[SIM_MAX_SLOTS], k = 0;
	for (uint32_t i = 0; i < s->n_slots; i++)
		if (s->nodes[i].used && s->nodes[i].up)
			ups[k++] = i;
	return k ? &s->nodes[ups[sim_rng_below(r, k)]] : NULL;
}

/* A random member of conf with the given role (0: any), other than not_id. */
static uint64_t pick_member(struct sim *s, const struct raft_conf *conf, uint32_t role, uint64_t not_id)
{
	uint64_t ids[RAFT_MAX_MEMBERS];
	uint32_t k = 0;
	for (uint32_t i = 0; i < conf->n; i++)
		if ((role == 0 || conf->members[i].role == role) && conf->members[i].id != not_id)
			ids[k++] = conf->members[i].id;
	return k ? ids[sim_rng_below(&s->fault_rng, k)] : 0;
}

static void schedule_heal(struct sim *s)
{
	s->st.partitions++;
	sim_schedule(s, sim_rng_range(&s->fault_rng, 300, 5000), SIM_EV_HEAL, 0, 0, NULL);
}

static void describe_groups(struct sim *s, const bool *in_a, char *buf, size_t cap)
{
	size_t used = 0;
	for (int side = 1; side >= 0; side--) {
		int k = snprintf(buf + used, cap - used, "%s{", side ? "" : " | ");
		if (k < 0 || (size_t)k >= cap - used)
			return;
		used += (size_t)k;
		bool first = true;
		for (uint32_t i = 0; i < s->n_slots; i++) {
			if (!s->nodes[i].used || in_a[i] != (side == 1))
				continue;
			k = snprintf(buf + used, cap - used, "%sn%u", first ? "" : ",", i + 1);
			if (k < 0 || (size_t)k >= cap - used)
				return;
			used += (size_t)k;
			first = false;
		}
		k = snprintf(buf + used, cap - used, "}");
		if (k < 0 || (size_t)k >= cap - used)
			return;
		used += (size_t)k;
	}
}

static uint32_t down_members(struct sim *s)
{
	uint32_t k = 0;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *n = &s->nodes[i];
		if (n->used && !n->stopped && !n->up)
			k++;
	}
	return k;
}

static void crash(struct sim *s, struct sim_node *n, uint64_t down_ms)
{
	if (n == NULL || n->stopped)
		return;
	/* Mostly keep a majority up, so that the run makes progress; now and
	 * then take more down. */
	uint32_t voters = raft_conf_voters(&s->chk.conf);
	if (down_members(s) + 1 > (voters > 0 ? voters - 1 : 0) / 2 && !sim_rng_pm(&s->fault_rng, 150))
		return;
	sim_node_crash(s, n, "fault");
	sim_schedule(s, down_ms, SIM_EV_RESTART, (uint32_t)(n->id - 1), n->gen, NULL);
}

void sim_scenario_crash(struct sim *s, struct sim_node *n)
{
	crash(s, n, sim_rng_range(&s->fault_rng, 50, s->p.down_max_ms));
}

/* Figure 8 of the Raft paper: a leader that has just replicated entries of
 * earlier terms, but not yet its own first entry, crashes; a later leader
 * may then lack those entries. Random crashes seldom land in that window of
 * a few round trips, so in the crash and snapshot kinds a new leader is
 * sometimes crashed 0..150 ms after its election. */
void sim_scenario_new_leader(struct sim *s, struct sim_node *n)
{
	if (s->p.kind == SIM_COMMIT_RULE && !s->opts->scripted) {
		sim_cr_leader(s, n);
		return;
	}
	if (s->quiet || s->opts->scripted ||
	    (s->p.kind != SIM_CRASH && s->p.kind != SIM_SNAPSHOT && s->p.kind != SIM_PARTITION))
		return;
	if (!sim_rng_pm(&s->fault_rng, 250))
		return;
	sim_schedule(s, sim_rng_range(&s->fault_rng, 0, 150), SIM_EV_CRASH, (uint32_t)(n->id - 1),
		     n->gen, NULL);
}

static void act_membership(struct sim *s, uint32_t a)
{
	struct sim_node *l = sim_node_leader(s);
	if (l == NULL)
		return;
	struct raft_status st;
	raft_status(l->r, &st);
	struct raft_conf_change cc;
	memset(&cc, 0, sizeof(cc));
	uint8_t ctx[8] = {'p', 'e', 'e', 'r', 'u', 'r', 'l', 0};
	switch (a) {
	case A_ADD:
		if (s->joiners >= SIM_MAX_JOINERS || s->n_slots >= SIM_MAX_SLOTS ||
		    st.conf.n >= RAFT_MAX_MEMBERS)
			return;
		cc.type = RAFT_CC_ADD_LEARNER;
		cc.id = s->n_slots + 1; /* a fresh id, never used before */
		cc.context = ctx;
		cc.context_len = sizeof(ctx);
		break;
	case A_PROMOTE: {
		/* A learner that has caught up, mostly (§4.2.1). */
		struct raft_progress_info pr[RAFT_MAX_MEMBERS + 8];
		uint32_t np = raft_progress(l->r, pr, RAFT_MAX_MEMBERS + 8);
		uint64_t id = pick_member(s, &st.conf, RAFT_LEARNER, 0);
		if (id == 0)
			return;
		bool caught_up = false;
		for (uint32_t i = 0; i < np; i++)
			if (pr[i].id == id && pr[i].match + 5 >= st.last_index)
				caught_up = true;
		if (!caught_up && !sim_rng_pm(&s->fault_rng, 200))
			return;
		cc.type = RAFT_CC_ADD_VOTER;
		cc.id = id;
		break;
	}
	case A_REMOVE: {
		/* Keep three voters at least; sometimes the leader removes itself. */
		uint32_t voters = raft_conf_voters(&st.conf);
		uint64_t id;
		if (sim_rng_pm(&s->fault_rng, 150))
			id = l->id;
		else
			id = pick_member(s, &st.conf, 0, l->id);
		if (id == 0)
			return;
		if (raft_conf_role(&st.conf, id) == RAFT_VOTER && voters <= 3)
			return;
		cc.type = RAFT_CC_REMOVE;
		cc.id = id;
		break;
	}
	case A_DEMOTE: {
		uint32_t voters = raft_conf_voters(&st.conf);
		uint64_t id = pick_member(s, &st.conf, RAFT_VOTER, l->id);
		if (id == 0 || voters <= 3)
			return;
		cc.type = RAFT_CC_ADD_LEARNER;
		cc.id = id;
		break;
	}
	default:
		return;
	}
	static const char *const names[] = {"?", "ADD_VOTER", "ADD_LEARNER", "REMOVE"};
	uint64_t index = 0;
	int rc = raft_propose_conf_change(l->r, &cc, &index);
	sim_trace(s, "FAULT: conf change %s n%" PRIu64 " proposed on n%" PRIu64 ": %s, index %" PRIu64,
		  names[cc.type], cc.id, l->id, rc ? raft_strerror(rc) : "ok", index);
	if (rc == 0 && a == A_ADD) {
		/* The node starts empty right away: the leader will probe it,
		 * then catch it up by entries or by snapshot. */
		uint32_t slot = s->n_slots++;
		s->joiners++;
		sim_node_start(s, slot, NULL);
	}
	sim_node_pump(s, l);
	sim_node_observe(s, l);
}

void sim_scenario_fault(struct sim *s)
{
	struct sim_rng *r = &s->fault_rng;
	if (s->p.kind == SIM_COMMIT_RULE && sim_cr_fault(s)) {
		uint64_t gap = sim_rng_range(r, s->p.fault_gap_min, s->p.fault_gap_max);
		sim_schedule(s, gap, SIM_EV_FAULT, 0, 0, NULL);
		return;
	}
	uint32_t a = pick_action(s);
	bool in_a[SIM_MAX_SLOTS];
	char groups[256];
	struct sim_node *n;
	switch (a) {
	case A_SPLIT: {
		bool any_a = false, any_b = false;
		for (uint32_t i = 0; i < s->n_slots; i++) {
			in_a[i] = sim_rng_pm(r, 500);
			if (s->nodes[i].used && s->nodes[i].up) {
				any_a |= in_a[i];
				any_b |= !in_a[i];
			}
		}
		if (!any_a || !any_b)
			break;
		sim_net_split(s, in_a);
		describe_groups(s, in_a, groups, sizeof(groups));
		sim_trace(s, "FAULT: partition %s", groups);
		schedule_heal(s);
		break;
	}
	case A_ONEWAY: {
		n = pick_up(s, r);
		if (n == NULL)
			break;
		uint32_t x = (uint32_t)(n->id - 1);
		uint64_t how = sim_rng_below(r, 3);
		if (how == 2) {
			struct sim_node *m = pick_up(s, r);
			if (m == NULL || m == n)
				break;
			sim_net_block(s, x, (uint32_t)(m->id - 1));
			sim_trace(s, "FAULT: n%" PRIu64 " can no longer reach n%" PRIu64 " (one way)", n->id,
				  m->id);
		} else {
			for (uint32_t i = 0; i < s->n_slots; i++) {
				if (i == x)
					continue;
				if (how == 0)
					sim_net_block(s, x, i);
				else
					sim_net_block(s, i, x);
			}
			sim_trace(s, "FAULT: n%" PRIu64 " %s (one way)", n->id,
				  how == 0 ? "can send to nobody but still hears everyone"
					   : "hears nobody but can still send");
		}
		schedule_heal(s);
		break;
	}
	case A_ISOLATE:
		n = sim_node_leader(s);
		if (n == NULL)
			break;
		memset(in_a, 0, sizeof(in_a));
		in_a[n->id - 1] = true;
		sim_net_split(s, in_a);
		sim_trace(s, "FAULT: the leader n%" PRIu64 " is isolated", n->id);
		schedule_heal(s);
		break;
	case A_HEAL:
		sim_net_heal(s);
		sim_trace(s, "FAULT: heal the network");
		break;
	case A_CRASH:
		crash(s, pick_up(s, r), sim_rng_range(r, 50, s->p.down_max_ms));
		break;
	case A_CRASH_LEADER:
		crash(s, sim_node_leader(s), sim_rng_range(r, 50, s->p.down_max_ms));
		break;
	case A_BOUNCE:
		crash(s, pick_up(s, r), sim_rng_range(r, 0, 20));
		break;
	case A_DISK:
		n = pick_up(s, r);
		if (n == NULL)
			break;
		if (n->disk_max > 3) {
			n->disk_min = 0;
			n->disk_max = 3;
		} else {
			n->disk_min = 5;
			n->disk_max = (uint32_t)sim_rng_range(r, 20, 300);
		}
		sim_trace(s, "FAULT: n%" PRIu64 "'s disk now takes %u..%u ms", n->id, n->disk_min,
			  n->disk_max);
		break;
	case A_ADD:
	case A_PROMOTE:
	case A_REMOVE:
	case A_DEMOTE:
		act_membership(s, a);
		break;
	case A_TRANSFER: {
		struct sim_node *l = sim_node_leader(s);
		if (l == NULL)
			break;
		struct raft_status st;
		raft_status(l->r, &st);
		uint64_t to = pick_member(s, &st.conf, RAFT_VOTER, l->id);
		if (to == 0)
			break;
		/* Sometimes asked of a follower, which forwards it. */
		struct sim_node *via = l;
		if (sim_rng_pm(r, 300)) {
			struct sim_node *f = pick_up(s, r);
			if (f != NULL)
				via = f;
		}
		int rc = raft_transfer_leadership(via->r, to);
		s->st.transfers++;
		sim_trace(s, "FAULT: transfer leadership n%" PRIu64 " -> n%" PRIu64 " asked of n%" PRIu64
			  ": %s",
			  l->id, to, via->id, rc ? raft_strerror(rc) : "ok");
		sim_node_pump(s, via);
		sim_node_observe(s, via);
		break;
	}
	case A_CAMPAIGN:
		n = pick_up(s, r);
		if (n == NULL)
			break;
		{
			int rc = raft_campaign(n->r);
			sim_trace(s, "FAULT: n%" PRIu64 " campaigns now: %s", n->id,
				  rc ? raft_strerror(rc) : "ok");
		}
		sim_node_pump(s, n);
		sim_node_observe(s, n);
		break;
	default:
		break;
	}
	sim_schedule(s, sim_rng_range(r, s->p.fault_gap_min, s->p.fault_gap_max), SIM_EV_FAULT, 0, 0,
		     NULL);
}

/* ------------------------------------------------------------------------ */
/* Clients.                                                                 */

void sim_scenario_client(struct sim *s)
{
	struct sim_rng *r = &s->client_rng;
	struct sim_node *n = NULL;
	if (sim_rng_pm(r, 600))
		n = sim_node_leader(s);
	if (n == NULL)
		n = pick_up(s, r);
	if (n != NULL) {
		if (sim_rng_pm(r, 700)) {
			/* Proposals, now and then a burst that the leader batches. */
			uint64_t burst = sim_rng_pm(r, 100) ? sim_rng_range(r, 2, 6) : 1;
			for (uint64_t i = 0; i < burst; i++) {
				char data[SIM_KV_ENTRY_MAX];
				uint64_t op = ++s->next_op;
				uint32_t key = (uint32_t)sim_rng_below(r, SIM_KV_KEYS);
				uint32_t len = sim_kv_format(data, sizeof(data), key, op);
				uint64_t index = 0;
				int rc = raft_propose(n->r, data, len, &index);
				s->st.proposals++;
				if (rc != 0)
					s->st.proposals_refused++;
				sim_trace(s, "CLIENT: propose \"%s\" on n%" PRIu64 ": %s, index %" PRIu64, data,
					  n->id, rc ? raft_strerror(rc) : "ok", index);
			}
		} else {
			uint32_t key = (uint32_t)sim_rng_below(r, SIM_KV_KEYS);
			uint64_t id = sim_check_read_issue(s, n, key);
			if (id != 0) {
				int rc = raft_read_index(n->r, id);
				s->st.reads_issued++;
				if (rc != 0) {
					s->chk.reads[id - 1].done = true;
					s->st.reads_failed++;
				}
				sim_trace(s, "CLIENT: read #%" PRIu64 " of k%02u on n%" PRIu64
					  " (acknowledged so far %" PRIu64 "): %s",
					  id, key, n->id, sim_check_acked(s), rc ? raft_strerror(rc) : "ok");
			}
		}
		sim_node_pump(s, n);
		sim_node_observe(s, n);
	}
	sim_schedule(s, sim_rng_range(r, 1, s->p.client_gap_max), SIM_EV_CLIENT, 0, 0, NULL);
}
