/* sim_run.c: one seed of the simulator: set-up, the step function, the
 * quiet phase that checks liveness, and the end-of-seed checks.
 *
 * THE STEP FUNCTION. A seed is one priority queue of timed events on one
 * simulated clock in milliseconds. sim_step() pops the earliest event; two
 * events at the same ms come out in the order they were scheduled (a
 * sequence number given at scheduling), so the order never depends on
 * memory addresses or the heap's shape. The kinds:
 *   TICK     a node's raft_tick(), every ~100 ms (each node's clock has its
 *            own phase and a drift of up to 3%), rescheduled by itself;
 *   DELIVER  a message arrives, its delay drawn when it was sent;
 *   DISK     a node's write completes after its disk's delay; only then are
 *            the update's after-persist messages sent and raft_advance()d;
 *   FAULT    the scenario's fault schedule acts (sim_scenario.c), then
 *            schedules its next action;
 *   CLIENT   a client proposes or reads, then schedules its next action;
 *   RESTART, STOP, HEAL, CRASH  consequences scheduled by faults, conf
 *            changes and elections (a new leader's planned crash);
 *   ROUND    a step of a commit-rule round (sim_commit_rule.c), planned by
 *            its earlier steps, by elections and by commits;
 *   LIVE     the quiet phase's probe, every 50 ms.
 * Events of a node carry its incarnation: those of a crashed incarnation
 * (its ticks, its pending write) are dropped when popped. The node an event
 * touches is then pumped (updates taken under the loop contract) and looked
 * at; each fact the step produced was checked where it appeared
 * (sim_check.c), so the invariants hold after every step.
 *
 * Randomness: every draw comes from a stream derived from the seed: network
 * and disks, faults, clients, the parameters, the choice of scenario and
 * cluster size, and one stream per node incarnation for raft_config.rand.
 * Forcing --nodes or --scenario thus changes nothing else in the run, and the
 * replay line of a "mixed" failure names the kind it drew.
 *
 * Phases: the fault phase runs --steps events; then the quiet phase heals
 * every partition, restarts every crashed member, stops loss, duplication
 * and long delays, and requires that within 10 election timeouts (at their
 * longest) a leader commits a new entry, and within 10 more every member
 * has applied it. Every loop is bounded: the fault phase by --steps, the
 * quiet phase by its deadlines, the queue by SIM_MAX_QUEUE.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define SIM_LIVE_PROBE_MS 50

void sim_fail(struct sim *s, const char *fmt, ...)
{
	if (s->failed)
		return;
	s->failed = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
	sim_trace(s, "VIOLATION: %s", s->why);
}

void sim_trace(struct sim *s, const char *fmt, ...)
{
	if (!sim_tracing(s))
		return;
	char line[1024];
	int n = snprintf(line, sizeof(line), "[%7" PRIu64 " ms #%" PRIu64 "] ", s->now, s->step);
	if (n < 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	size_t len = strlen(line);
	s->trace_hash = sim_hash(s->trace_hash, line, len);
	if (s->opts->verbose) {
		fputs(line, s->opts->out);
		fputc('\n', s->opts->out);
	}
}

void sim_schedule(struct sim *s, uint64_t delay, uint32_t kind, uint32_t slot, uint64_t gen,
		  struct sim_msg *msg)
{
	struct sim_event e = {
		.at = s->now + delay,
		.kind = kind,
		.slot = slot,
		.gen = gen,
		.msg = msg,
	};
	if (sim_queue_push(&s->q, e) != 0) {
		free(msg);
		sim_fail(s, "event queue full (%u events): message storm", SIM_MAX_QUEUE);
	}
}

int sim_init(struct sim *s, const struct sim_opts *o, uint64_t seed)
{
	memset(s, 0, sizeof(*s));
	s->seed = seed;
	s->opts = o;
	s->trace_hash = SIM_HASH_INIT;
	sim_scenario_params(s, o->nodes, o->kind);
	sim_rng_init(&s->net_rng, sim_seed_mix(seed, 1, 0));
	sim_rng_init(&s->fault_rng, sim_seed_mix(seed, 2, 0));
	sim_rng_init(&s->client_rng, sim_seed_mix(seed, 3, 0));
	/* The memstores' blocks are counted too: none may be left at the end. */
	sim_heap_counting(&s->store_heap, &s->store_blocks);
	struct raft_conf conf;
	memset(&conf, 0, sizeof(conf));
	conf.n = s->p.nodes;
	for (uint32_t i = 0; i < s->p.nodes; i++) {
		conf.members[i].id = i + 1;
		conf.members[i].role = RAFT_VOTER;
	}
	sim_check_init(&s->chk, &conf);
	const struct sim_params *p = &s->p;
	sim_trace(s, "seed %" PRIu64 ": %u nodes, scenario %s, pre_vote %d, check_quorum %d,"
		  " election %u ticks, heartbeat %u, chunk %u bytes x%u, inflight %u, msg %" PRIu64
		  " bytes, snapshot every %u keep %u, loss %u dup %u long %u per 1000, delay %u..%u"
		  " (long %u) ms, slow disks %u per 1000",
		  seed, p->nodes, sim_kind_name(p->kind), p->pre_vote, p->check_quorum,
		  p->election_ticks, p->heartbeat_ticks, p->chunk_bytes, p->snap_inflight,
		  p->max_inflight, p->max_msg_bytes, p->snap_every, p->snap_keep, p->loss_pm,
		  p->dup_pm, p->long_pm, p->delay_min, p->delay_max, p->long_max, p->slow_disk_pm);
	s->n_slots = s->p.nodes;
	for (uint32_t i = 0; i < s->p.nodes && !s->failed; i++)
		if (sim_node_start(s, i, &conf) != 0)
			return -1;
	if (!o->scripted) {
		sim_schedule(s, sim_rng_range(&s->fault_rng, p->fault_gap_min, p->fault_gap_max),
			     SIM_EV_FAULT, 0, 0, NULL);
		sim_schedule(s, sim_rng_range(&s->client_rng, 1, p->client_gap_max), SIM_EV_CLIENT, 0,
			     0, NULL);
	}
	return s->failed ? -1 : 0;
}

/* One line per node, for a liveness report. */
static void describe_nodes(struct sim *s, char *buf, size_t cap)
{
	size_t used = 0;
	buf[0] = '\0';
	for (uint32_t i = 0; i < s->n_slots && used + 1 < cap; i++) {
		struct sim_node *n = &s->nodes[i];
		if (!n->used)
			continue;
		int k;
		if (n->stopped) {
			k = snprintf(buf + used, cap - used, "%sn%" PRIu64 " stopped", used ? "; " : "",
				     n->id);
		} else if (!n->up) {
			k = snprintf(buf + used, cap - used, "%sn%" PRIu64 " down", used ? "; " : "", n->id);
		} else {
			struct raft_status st;
			raft_status(n->r, &st);
			k = snprintf(buf + used, cap - used,
				     "%sn%" PRIu64 " %s%s term %" PRIu64 " commit %" PRIu64
				     " applied %" PRIu64 " last %" PRIu64,
				     used ? "; " : "", n->id, sim_state_name(st.state),
				     raft_conf_role(&s->chk.conf, n->id) == 0 ? " (not a member)" : "",
				     st.term, st.commit, n->applied, st.last_index);
		}
		if (k < 0)
			break;
		used += (size_t)k;
	}
}

void sim_quiet(struct sim *s)
{
	s->quiet = true;
	s->quiet_at = s->now;
	sim_net_heal(s);
	sim_trace(s, "QUIET PHASE: partitions healed, no loss nor duplication, disks fast,"
		     " crashed members restart");
	for (uint32_t i = 0; i < s->n_slots && !s->failed; i++) {
		struct sim_node *n = &s->nodes[i];
		if (!n->used || n->stopped)
			continue;
		/* A slow disk is a fault too: it heals. */
		n->disk_min = 0;
		n->disk_max = 3;
		if (n->removed)
			sim_node_stop(s, n);
		else if (!n->up)
			sim_node_restart(s, n);
	}
	uint64_t timeout = 2ULL * s->p.election_ticks * (SIM_TICK_MS + 3);
	s->live_deadline = s->now + 10 * timeout;
	s->converge_deadline = s->live_deadline + 10 * timeout;
	s->final_op = ++s->next_op;
	sim_schedule(s, 0, SIM_EV_LIVE, 0, 0, NULL);
}

static bool converged(struct sim *s, struct sim_node **lagging)
{
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *n = &s->nodes[i];
		if (!n->used || n->stopped || raft_conf_role(&s->chk.conf, n->id) == 0)
			continue;
		if (!n->up || n->applied < s->final_index) {
			*lagging = n;
			return false;
		}
	}
	return true;
}

static void live_probe(struct sim *s)
{
	char nodes[1024];
	if (s->final_index == 0) {
		if (s->now > s->live_deadline) {
			describe_nodes(s, nodes, sizeof(nodes));
			sim_fail(s, "liveness: no leader committed a new entry within %" PRIu64
				 " ms after the faults healed [%s]",
				 s->live_deadline - s->quiet_at, nodes);
			return;
		}
		struct sim_node *l = sim_node_leader(s);
		if (l != NULL && l->term != s->final_term) {
			char data[SIM_KV_ENTRY_MAX];
			uint32_t len = sim_kv_format(data, sizeof(data), 0, s->final_op);
			uint64_t index = 0;
			int rc = raft_propose(l->r, data, len, &index);
			sim_trace(s, "LIVENESS: propose \"%s\" on n%" PRIu64 " (term %" PRIu64 "): %s, index %"
				  PRIu64,
				  data, l->id, l->term, rc ? raft_strerror(rc) : "ok", index);
			if (rc == 0)
				s->final_term = l->term;
			sim_node_pump(s, l);
			sim_node_observe(s, l);
		}
	} else {
		struct sim_node *lag = NULL;
		if (converged(s, &lag)) {
			uint64_t took = s->now - s->quiet_at;
			if (took > s->st.liveness_ms_max)
				s->st.liveness_ms_max = took;
			sim_trace(s, "CONVERGED: every member applied index %" PRIu64 " within %" PRIu64
				  " ms of the quiet phase",
				  s->final_index, took);
			s->done = true;
			return;
		}
		if (s->now > s->converge_deadline) {
			describe_nodes(s, nodes, sizeof(nodes));
			sim_fail(s, "liveness: n%" PRIu64 " has not applied index %" PRIu64 " within %" PRIu64
				 " ms after the faults healed [%s]",
				 lag->id, s->final_index, s->converge_deadline - s->quiet_at, nodes);
			return;
		}
	}
	sim_schedule(s, SIM_LIVE_PROBE_MS, SIM_EV_LIVE, 0, 0, NULL);
}

bool sim_step(struct sim *s)
{
	struct sim_event e;
	if (!sim_queue_pop(&s->q, &e))
		return false;
	s->now = e.at;
	s->step++;
	struct sim_node *n = e.slot < SIM_MAX_SLOTS ? &s->nodes[e.slot] : NULL;
	switch (e.kind) {
	case SIM_EV_TICK:
		if (!n->used || !n->up || e.gen != n->gen)
			break;
		if (s->opts->verbose)
			sim_trace(s, "tick n%" PRIu64, n->id);
		raft_tick(n->r);
		sim_node_pump(s, n);
		sim_node_observe(s, n);
		sim_schedule(s, n->tick_ms, SIM_EV_TICK, e.slot, n->gen, NULL);
		break;
	case SIM_EV_DELIVER:
		sim_net_deliver(s, e.msg);
		break;
	case SIM_EV_DISK:
		if (n->used && n->up && e.gen == n->gen)
			sim_node_disk_done(s, n);
		break;
	case SIM_EV_RESTART:
		if (n->used && !n->up && !n->stopped && e.gen == n->gen)
			sim_node_restart(s, n);
		break;
	case SIM_EV_STOP:
		if (n->used && !n->stopped)
			sim_node_stop(s, n);
		break;
	case SIM_EV_FAULT:
		if (!s->quiet)
			sim_scenario_fault(s);
		break;
	case SIM_EV_CLIENT:
		if (!s->quiet)
			sim_scenario_client(s);
		break;
	case SIM_EV_HEAL:
		if (!s->quiet) {
			sim_net_heal(s);
			sim_trace(s, "HEAL: the network is whole again");
		}
		break;
	case SIM_EV_LIVE:
		live_probe(s);
		break;
	case SIM_EV_ROUND:
		sim_cr_event(s, e.slot, e.gen);
		break;
	case SIM_EV_CRASH:
		if (!s->quiet && n->used && n->up && e.gen == n->gen) {
			sim_trace(s, "FAULT: n%" PRIu64 " crashes early in its leadership", n->id);
			sim_scenario_crash(s, n);
		}
		break;
	default:
		sim_fail(s, "unknown event kind %u", e.kind);
		break;
	}
	return true;
}

/* A fingerprint of the end state, folded into the trace hash. */
static void trace_final(struct sim *s)
{
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct sim_node *n = &s->nodes[i];
		if (!n->used || !n->up)
			continue;
		struct raft_status st;
		raft_status(n->r, &st);
		sim_trace(s, "final n%" PRIu64 ": %s term %" PRIu64 " commit %" PRIu64 " applied %" PRIu64
			  " log %" PRIu64 "..%" PRIu64,
			  n->id, sim_state_name(st.state), st.term, st.commit, n->applied, st.first_index,
			  st.last_index);
	}
}

void sim_run(struct sim *s)
{
	s->st.kinds[s->p.kind]++;
	while (!s->failed && s->step < s->opts->steps) {
		if (!sim_step(s)) {
			sim_fail(s, "event queue ran dry");
			break;
		}
		if ((s->step & 2047) == 0)
			sim_check_logs(s);
	}
	if (!s->failed)
		sim_quiet(s);
	/* Bounded by the quiet phase's deadlines; the step cap is a backstop. */
	uint64_t cap = s->step + 50000000ULL;
	while (!s->failed && !s->done) {
		if (!sim_step(s)) {
			sim_fail(s, "event queue ran dry in the quiet phase");
			break;
		}
		if (s->step > cap)
			sim_fail(s, "quiet phase exceeded its step bound");
	}
	if (!s->failed)
		sim_check_logs(s);
	if (sim_tracing(s))
		trace_final(s);
	s->st.steps += s->step;
	s->st.sim_ms += s->now;
	s->st.seeds++;
}

void sim_fini(struct sim *s)
{
	for (uint32_t i = 0; i < s->n_slots; i++)
		if (s->nodes[i].used)
			sim_node_free(s, &s->nodes[i]);
	sim_queue_free(&s->q);
	sim_check_free(&s->chk);
	if (s->store_blocks != 0)
		sim_fail(s, "the memstores left %" PRId64 " blocks allocated", s->store_blocks);
}
