/* gsim_observe.c: what the cores reported, held against what really happened: the views,
 * crash detection, update dissemination, false positives, convergence, and the report.
 *
 * THE VIEW. view[i][j] is the state of member j in member i's core, as i's events told it
 * (GOSSIP_EV_UPDATE sets it, GOSSIP_EV_REMOVE clears it). At the end of a run it is compared
 * with the cores' own tables (gossip_member_find), so the events and the table cannot drift.
 *
 * TIMING. With n the initial member count, l = max(1, log10(n)) and P the probe interval:
 *   minimum suspicion S_min = suspicion_mult * l * P     (memberlist's suspicionTimeout)
 *   maximum suspicion S_max = suspicion_max_mult * S_min (Lifeguard's upper bound)
 *   false-positive window W = S_max + P + probe_timeout + 2 s: the longest a suspicion raised
 *     at some moment can still end in a death (its timer, then a little dissemination)
 *   scaled push-pull interval PP = pushpull_interval * (ceil(log2 n - log2 32) + 1) above 32
 *   detection bound  D = S_max + PP + 10 P + 30 s: generous; a crash not marked dead within D
 *     by a member that was live, joined and never stalled since is a violation. A member can
 *     miss every copy of the death's broadcast (rarely, but under heavy loss the queues are
 *     long) and then learns it from its next push-pull: PP, then at most S_max of suspicion.
 *
 * FALSE POSITIVES. A core marking j dead while j has neither crashed nor begun to leave is a
 * false positive. The declarations of one incident (j, incarnation) are counted together and
 * the incident takes the cause found at its first declaration, at time t, by member i:
 *   partition    a partition was in force at some moment of [t - W, t]: when it heals, the
 *                minority's accusations reach the majority, and a member that misses
 *                the refutation (the epidemic reaches nearly all, not all) declares a
 *                member dead that the majority could reach all along;
 *   declarer-dead  i was itself held dead by the pool, after an earlier incident it had not
 *                refuted yet, at some moment of [t - W, t]: nobody gossips to a dead member,
 *                so the refutations sent meanwhile missed it (a plain earlier incident
 *                would already have failed the run);
 *   stall-long   j stalled in [t - W, t] for at least S_min / 2 (or is still stalled): a
 *                suspicion raised during the stall may legitimately run out;
 *   observer     i itself stalled in [t - W, t]: its timers ran late, before it could read
 *                the refutations that had queued up;
 *   stall-short  j stalled in [t - W, t], but for less than S_min / 2;
 *   plain        none of the above: only loss and latency.
 *
 * CONVERGENCE (after faults stop). Every live member sees every live member alive at the
 * incarnation that member holds itself, every crashed member dead, every member that left as
 * left (or, all of them alike, as dead when its leave was lost to a partition), or does not
 * know a crashed or departed member at all (a core learns no dead or left member it never
 * knew, as in memberlist); its event-built view matches its core's table; and every crash and
 * update record has reached it.
 *
 * THE CHECK "no live member is declared dead while it and a majority can talk" fails the run on
 * a plain or a stall-short incident: a stall shorter than S_min / 2 leaves the member time to
 * refute before any timer can run out. Excluded from it, and reported by cause: targets that
 * stalled for S_min / 2 or more (they may legitimately be declared dead), declarers that
 * stalled, partitions and their aftermath. It applies while the loss rate (in the window) is
 * at most fp_check_loss_bp (--fp-check-loss, 0 by default): SWIM's dissemination is an
 * epidemic in which each member misses a given refutation with a probability of about
 * e^-(retransmit limit), so under loss a member can miss every copy of one and declare the
 * refuted member dead; such incidents are measured (the false-positive rate), not forbidden.
 * Without loss no live member is suspected at all but for a stall or a partition.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gsim.h"

static const char *const fp_names[GSIM_FP_COUNT] = {
	"plain", "stall-short", "stall-long", "observer", "partition", "declarer-dead",
};

int gsim_observe_init(struct gsim *s)
{
	size_t cap = s->cap;
	s->view = calloc(cap * cap, 1);
	s->fp_inc = malloc(cap * sizeof(*s->fp_inc));
	s->fp_cause = calloc(cap, 1);
	s->pend_crash = malloc(cap * sizeof(*s->pend_crash));
	s->pend_update = malloc(cap * sizeof(*s->pend_update));
	s->rec = calloc(GSIM_MAX_RECORDS, sizeof(*s->rec));
	if (s->view == NULL || s->fp_inc == NULL || s->fp_cause == NULL ||
	    s->pend_crash == NULL || s->pend_update == NULL || s->rec == NULL)
		return -1;
	for (size_t i = 0; i < cap; i++) {
		s->fp_inc[i] = UINT32_MAX;
		s->pend_crash[i] = s->pend_update[i] = UINT32_MAX;
	}
	const struct gossip_config *c = &s->base_cfg;
	double l = log10((double)(s->p.members > 1 ? s->p.members : 1));
	if (l < 1.0)
		l = 1.0;
	s->susp_min_ms = (uint64_t)((double)c->suspicion_mult * l * (double)c->probe_interval_ms);
	s->susp_max_ms = s->susp_min_ms * c->suspicion_max_mult;
	s->fp_window_ms = s->susp_max_ms + c->probe_interval_ms + c->probe_timeout_ms + 2000;
	/* memberlist's scaling of the push-pull interval above 32 members. */
	double pp_scale = 1.0;
	if (s->p.members > 32)
		pp_scale = ceil(log2((double)s->p.members) - log2(32.0)) + 1.0;
	s->pushpull_ms = (uint64_t)((double)c->pushpull_interval_ms * pp_scale);
	s->detect_bound_ms = s->susp_max_ms + s->pushpull_ms + 10ull * c->probe_interval_ms + 30000;
	return 0;
}

void gsim_observe_fini(struct gsim *s)
{
	free(s->view);
	free(s->fp_inc);
	free(s->fp_cause);
	free(s->pend_crash);
	free(s->pend_update);
	if (s->rec != NULL)
		for (uint32_t i = 0; i < s->n_rec; i++)
			free(s->rec[i].mark);
	free(s->rec);
	free(s->r.det_suspect);
	free(s->r.det_first);
	free(s->r.det_all);
	free(s->r.upd_all);
	s->view = NULL;
	s->rec = NULL;
	s->fp_inc = s->pend_crash = s->pend_update = NULL;
	s->fp_cause = NULL;
	s->r.det_suspect = s->r.det_first = s->r.det_all = s->r.upd_all = NULL;
}

static uint8_t *view_at(struct gsim *s, uint32_t i, uint32_t j)
{
	return &s->view[(size_t)i * s->cap + j];
}

/* ------------------------------------------------------------------------------------------ */
/* Records.                                                                                   */

static struct gsim_record *new_record(struct gsim *s, uint32_t kind, uint32_t target)
{
	if (s->n_rec >= GSIM_MAX_RECORDS)
		return NULL; /* measured enough; later ones go unmeasured */
	uint64_t *mark = malloc((size_t)s->cap * sizeof(*mark));
	if (mark == NULL) {
		gsim_fail(s, "out of memory");
		return NULL;
	}
	for (uint32_t i = 0; i < s->cap; i++)
		mark[i] = UINT64_MAX;
	struct gsim_record *r = &s->rec[s->n_rec++];
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->target = target;
	r->t0 = s->now;
	r->first_suspect = r->first_mark = r->all_marked = UINT64_MAX;
	r->measured = s->phase == GSIM_PH_FAULT;
	r->mark = mark;
	return r;
}

void gsim_record_crash(struct gsim *s, uint32_t slot)
{
	s->r.crashes++;
	struct gsim_record *r = new_record(s, GSIM_REC_CRASH, slot);
	if (r == NULL)
		return;
	s->pend_crash[slot] = (uint32_t)(r - s->rec);
	/* Members that already hold it dead (it was cut off, say) detected it at the crash. */
	for (uint32_t i = 0; i < s->n_slots; i++)
		if (i != slot && *view_at(s, i, slot) == GOSSIP_DEAD)
			r->mark[i] = s->now;
}

void gsim_record_update(struct gsim *s, uint32_t slot, uint32_t incarnation)
{
	s->r.updates++;
	uint32_t old = s->pend_update[slot];
	if (old != UINT32_MAX) {
		/* Superseded before it reached everyone: a newer incarnation carries it. */
		s->rec[old].dropped = true;
		s->pend_update[slot] = UINT32_MAX;
		s->r.updates_dropped++;
	}
	struct gsim_record *r = new_record(s, GSIM_REC_UPDATE, slot);
	if (r == NULL)
		return;
	r->incarnation = incarnation;
	s->pend_update[slot] = (uint32_t)(r - s->rec);
}

/* ------------------------------------------------------------------------------------------ */
/* False positives.                                                                           */

static uint32_t fp_classify(struct gsim *s, uint32_t observer, uint32_t target)
{
	uint64_t lo = s->now > s->fp_window_ms ? s->now - s->fp_window_ms : 0;
	const struct gsim_member *t = &s->m[target], *o = &s->m[observer];
	/* Any partition in the window: the minority's accusations reach the majority when it
	 * heals, and a member that misses one refutation then declares a live member dead. */
	if (s->partitioned || (s->partition_healed_at > 0 && s->partition_healed_at >= lo))
		return GSIM_FP_PARTITION;
	(void)t;
	/* The declarer was itself held dead after an excused incident, not yet refuted, at some
	 * moment of the window: the pool does not gossip to a dead member, so refutations
	 * that went out then never reached it. */
	if (o->zombie_ever && o->zombie_until >= lo)
		return GSIM_FP_ZOMBIE;
	bool t_short = false;
	for (uint32_t k = 0; k < t->n_stalls; k++) {
		const struct gsim_stall *st = &t->stalls[k];
		if (st->end < lo)
			continue;
		uint64_t end = st->end == UINT64_MAX ? s->now : st->end;
		if (st->end == UINT64_MAX || end - st->start >= s->susp_min_ms / 2)
			return GSIM_FP_STALL_LONG;
		t_short = true;
	}
	for (uint32_t k = 0; k < o->n_stalls; k++)
		if (o->stalls[k].end >= lo)
			return GSIM_FP_OBSERVER;
	return t_short ? GSIM_FP_STALL_SHORT : GSIM_FP_PLAIN;
}

static void declared_dead(struct gsim *s, uint32_t observer, uint32_t target, uint32_t inc)
{
	struct gsim_member *t = &s->m[target];
	if (t->status == GSIM_CRASHED)
		return; /* a true positive */
	if (t->status == GSIM_LEAVING || t->status == GSIM_LEFT) {
		s->r.dead_after_leave++;
		return;
	}
	if (s->fp_inc[target] != inc) {
		uint32_t cause = fp_classify(s, observer, target);
		s->fp_inc[target] = inc;
		s->fp_cause[target] = (uint8_t)cause;
		t->zombie_ever = true;
		t->zombie_until = UINT64_MAX; /* until it refutes */
		if (s->phase == GSIM_PH_FAULT)
			s->r.fp_incidents[cause]++;
		gsim_trace(s, "false positive (%s): %s declared %s dead at incarnation %u",
			   fp_names[cause], s->m[observer].name, t->name, inc);
		/* Suspicions raised under loss can still end in deaths a window after it stops. */
		uint32_t loss = s->loss_bp;
		if (s->loss_ended_at != UINT64_MAX && s->now < s->loss_ended_at + s->fp_window_ms)
			loss = s->p.loss_bp;
		bool checked = loss <= s->p.fp_check_loss_bp;
		if ((cause == GSIM_FP_PLAIN || cause == GSIM_FP_STALL_SHORT) && checked)
			gsim_fail(s,
				  "%s declared %s dead at incarnation %u, though %s is alive, %s and "
				  "could talk with the majority (no partition) in the last %.0f s",
				  s->m[observer].name, t->name, inc, t->name,
				  cause == GSIM_FP_PLAIN ? "was never stalled"
							 : "stalled only briefly",
				  (double)s->fp_window_ms / 1000.0);
	}
	if (s->phase == GSIM_PH_FAULT)
		s->r.fp_decls[s->fp_cause[target]]++;
}

/* ------------------------------------------------------------------------------------------ */
/* Events.                                                                                    */

void gsim_observe_event(struct gsim *s, uint32_t observer, const struct gossip_event *ev)
{
	struct gsim_member *o = &s->m[observer];
	uint32_t j = gsim_slot_of_name(s, ev->member.name);
	if (j == UINT32_MAX) {
		gsim_fail(s, "%s reported a member '%.40s' that never existed", o->name,
			  ev->member.name ? ev->member.name : "(null)");
		return;
	}
	if (ev->member.self != (j == observer)) {
		gsim_fail(s, "%s reported %s with self=%d", o->name, s->m[j].name,
			  ev->member.self);
		return;
	}
	if (!gossip_addr_equal(&ev->member.addr, &s->m[j].addr)) {
		gsim_fail(s, "%s reported %s at an address that is not its own", o->name,
			  s->m[j].name);
		return;
	}
	uint8_t *v = view_at(s, observer, j);
	uint8_t prev = *v;
	if (ev->type == GOSSIP_EV_REMOVE) {
		if (prev != GOSSIP_DEAD && prev != GOSSIP_LEFT) {
			gsim_fail(s, "%s forgot %s while it was %s", o->name, s->m[j].name,
				  gossip_state_name(prev));
			return;
		}
		*v = 0;
		return;
	}
	if (ev->type != GOSSIP_EV_UPDATE) {
		gsim_fail(s, "%s reported an event of unknown type %u", o->name, ev->type);
		return;
	}
	uint32_t st = ev->member.state;
	if (st < GOSSIP_ALIVE || st > GOSSIP_LEFT) {
		gsim_fail(s, "%s reported %s in unknown state %u", o->name, s->m[j].name, st);
		return;
	}
	if (ev->prev_state != prev && !(prev == 0 && ev->prev_state == 0)) {
		gsim_fail(s, "%s reported %s going from %s, but its last event said %s", o->name,
			  s->m[j].name, gossip_state_name(ev->prev_state), gossip_state_name(prev));
		return;
	}
	*v = (uint8_t)st;
	if (s->opts->watch != NULL &&
	    (strcmp(s->opts->watch, o->name) == 0 || strcmp(s->opts->watch, s->m[j].name) == 0))
		gsim_trace(s, "%s: %s %s -> %s (incarnation %u)", o->name, s->m[j].name,
			   prev ? gossip_state_name(prev) : "unknown", gossip_state_name(st),
			   ev->member.incarnation);
	if (j == observer) {
		/* Its own refutation of a death others declared. */
		if (o->zombie_until == UINT64_MAX && s->fp_inc[j] != UINT32_MAX &&
		    ev->member.incarnation > s->fp_inc[j])
			o->zombie_until = s->now;
		return;
	}
	bool was_live = prev == GOSSIP_ALIVE || prev == GOSSIP_SUSPECT;
	bool is_live = st == GOSSIP_ALIVE || st == GOSSIP_SUSPECT;
	if (was_live && !is_live)
		o->live_seen--;
	else if (!was_live && is_live)
		o->live_seen++;

	uint32_t rc = s->pend_crash[j];
	if (rc != UINT32_MAX) {
		struct gsim_record *r = &s->rec[rc];
		if (st == GOSSIP_SUSPECT && r->first_suspect == UINT64_MAX)
			r->first_suspect = s->now;
		if (st == GOSSIP_DEAD) {
			if (r->first_suspect == UINT64_MAX)
				r->first_suspect = s->now;
			if (r->first_mark == UINT64_MAX)
				r->first_mark = s->now;
			if (r->mark[observer] == UINT64_MAX)
				r->mark[observer] = s->now;
		}
	}
	uint32_t ru = s->pend_update[j];
	if (ru != UINT32_MAX && ev->member.incarnation >= s->rec[ru].incarnation) {
		struct gsim_record *r = &s->rec[ru];
		if (r->first_mark == UINT64_MAX)
			r->first_mark = s->now;
		if (r->mark[observer] == UINT64_MAX)
			r->mark[observer] = s->now;
	}
	if (st == GOSSIP_DEAD && prev != GOSSIP_DEAD)
		declared_dead(s, observer, j, ev->member.incarnation);
}

void gsim_observe_stopped(struct gsim *s, uint32_t slot)
{
	uint32_t ru = s->pend_update[slot];
	if (ru != UINT32_MAX) {
		s->rec[ru].dropped = true;
		s->pend_update[slot] = UINT32_MAX;
		s->r.updates_dropped++;
	}
}

/* ------------------------------------------------------------------------------------------ */
/* The periodic sample.                                                                       */

/* A member whose view must hold a record's news: running, joined, not stalled, not leaving. */
static bool observer_due(const struct gsim *s, uint32_t i, uint32_t target)
{
	const struct gsim_member *m = &s->m[i];
	return i != target && m->status == GSIM_UP && m->joined;
}

/* A member that must have the news by the bound: it was live and joined at t0 and has not
 * stalled, been cut off, or been held dead by the pool (a false positive) since. A member that missed the news while it was stalled or cut
 * off may not hear it again until it probes the target itself (once per round of all
 * members) or runs a push-pull; the final convergence check covers it. */
static bool observer_bound(const struct gsim *s, uint32_t i, const struct gsim_record *r)
{
	const struct gsim_member *m = &s->m[i];
	if (!observer_due(s, i, r->target) || m->joined_at > r->t0)
		return false;
	if (m->ever_minority && m->minority_until >= r->t0)
		return false;
	if (m->zombie_ever && m->zombie_until >= r->t0)
		return false; /* held dead by the pool meanwhile: gossip passed it by */
	for (uint32_t k = 0; k < m->n_stalls; k++)
		if (m->stalls[k].end >= r->t0)
			return false;
	return true;
}

static void sample_record(struct gsim *s, uint32_t idx)
{
	struct gsim_record *r = &s->rec[idx];
	uint64_t last = r->t0;
	uint32_t missing = UINT32_MAX, missing_bound = UINT32_MAX;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		if (!observer_due(s, i, r->target))
			continue;
		/* A core that never knew a crashed member has nothing to detect. */
		if (r->kind == GSIM_REC_CRASH && *view_at(s, i, r->target) == 0)
			continue;
		if (r->mark[i] == UINT64_MAX) {
			if (missing == UINT32_MAX)
				missing = i;
			if (missing_bound == UINT32_MAX && observer_bound(s, i, r))
				missing_bound = i;
			continue;
		}
		if (r->mark[i] > last)
			last = r->mark[i];
	}
	if (missing == UINT32_MAX) {
		r->done = true;
		r->all_marked = last;
		if (r->kind == GSIM_REC_CRASH)
			s->pend_crash[r->target] = UINT32_MAX;
		else
			s->pend_update[r->target] = UINT32_MAX;
		gsim_trace(s, "%s of %s reached every live member in %.3f s",
			   r->kind == GSIM_REC_CRASH ? "the crash" : "the update",
			   s->m[r->target].name, (double)(last - r->t0) / 1000.0);
		return;
	}
	if (r->kind == GSIM_REC_CRASH && missing_bound != UINT32_MAX &&
	    s->now - r->t0 > s->detect_bound_ms)
		gsim_fail(s, "%s crashed %.1f s ago and %s (live, joined before, never stalled "
			     "since) still sees it %s (bound %.0f s)",
			  s->m[r->target].name, (double)(s->now - r->t0) / 1000.0,
			  s->m[missing_bound].name,
			  gossip_state_name(*view_at(s, missing_bound, r->target)),
			  (double)s->detect_bound_ms / 1000.0);
}

void gsim_observe_sample(struct gsim *s)
{
	for (uint32_t i = 0; i < s->n_slots && !s->failed; i++) {
		if (s->pend_crash[i] != UINT32_MAX)
			sample_record(s, s->pend_crash[i]);
		if (s->pend_update[i] != UINT32_MAX && !s->failed)
			sample_record(s, s->pend_update[i]);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Convergence.                                                                               */

static uint8_t expected_state(const struct gsim_member *m)
{
	switch (m->status) {
	case GSIM_UP:
	case GSIM_STALLED:
		return GOSSIP_ALIVE;
	case GSIM_LEAVING:
	case GSIM_LEFT:
		return GOSSIP_LEFT;
	case GSIM_CRASHED:
		return GOSSIP_DEAD;
	default:
		return 0;
	}
}

bool gsim_converged(struct gsim *s, char *why, size_t cap)
{
	/* A member that left is expected left; dead is accepted when every member that knows it
	 * agrees (its leave was lost, say to a partition, and nobody holds it left). */
	for (uint32_t j = 0; j < s->n_slots; j++) {
		if (expected_state(&s->m[j]) != GOSSIP_LEFT)
			continue;
		uint8_t seen = 0;
		for (uint32_t i = 0; i < s->n_slots; i++) {
			if (s->m[i].status != GSIM_UP || i == j)
				continue;
			uint8_t v = *view_at(s, i, j);
			if (v == 0)
				continue;
			if (seen == 0)
				seen = v;
			if (v != seen || (v != GOSSIP_LEFT && v != GOSSIP_DEAD)) {
				if (why != NULL)
					snprintf(why, cap, "%s left, and %s sees it %s, another %s",
						 s->m[j].name, s->m[i].name, gossip_state_name(v),
						 gossip_state_name(seen));
				return false;
			}
		}
	}
	for (uint32_t i = 0; i < s->n_slots; i++) {
		const struct gsim_member *o = &s->m[i];
		if (o->status != GSIM_UP)
			continue;
		if (!o->joined) {
			if (why != NULL)
				snprintf(why, cap, "%s has not joined", o->name);
			return false;
		}
		const uint8_t *row = view_at(s, i, 0);
		for (uint32_t j = 0; j < s->n_slots; j++) {
			if (j == i)
				continue;
			uint8_t want = expected_state(&s->m[j]);
			if (row[j] == want || (want == GOSSIP_LEFT && row[j] == GOSSIP_DEAD))
				continue;
			/* A push-pull state carries dead and left members, but a core learns none
			 * it did not know (as in memberlist): a member that joined after another
			 * stopped, or never heard of it before, need not know it. */
			if (row[j] == 0 && want != GOSSIP_ALIVE)
				continue;
			if (why != NULL)
				snprintf(why, cap, "%s sees %s %s, but it is %s", o->name,
					 s->m[j].name, row[j] ? gossip_state_name(row[j]) : "unknown",
					 gossip_state_name(want));
			return false;
		}
	}
	if (why != NULL)
		snprintf(why, cap, "converged");
	return true;
}

bool gsim_pending(struct gsim *s, char *why, size_t cap)
{
	for (uint32_t i = 0; i < s->n_slots; i++) {
		uint32_t k = s->pend_crash[i] != UINT32_MAX ? s->pend_crash[i] : s->pend_update[i];
		if (k == UINT32_MAX)
			continue;
		const struct gsim_record *r = &s->rec[k];
		if (why != NULL) {
			uint32_t n = 0;
			for (uint32_t j = 0; j < s->n_slots; j++)
				n += observer_due(s, j, r->target) && r->mark[j] == UINT64_MAX &&
				     (r->kind != GSIM_REC_CRASH || *view_at(s, j, r->target) != 0);
			snprintf(why, cap, "the %s of %s at %.3f s has not reached %u live members",
				 r->kind == GSIM_REC_CRASH ? "crash" : "update", s->m[i].name,
				 (double)r->t0 / 1000.0, n);
		}
		return true;
	}
	return false;
}

bool gsim_check_views(struct gsim *s, char *why, size_t cap)
{
	/* Each live member's own incarnation, then every view against every core's table. A
	 * table that contradicts the events is a violation at once; an incarnation behind the
	 * member's own is staleness, which a later push-pull repairs: not converged yet. */
	uint32_t *inc = calloc(s->n_slots, sizeof(*inc));
	if (inc == NULL) {
		gsim_fail(s, "out of memory");
		return false;
	}
	bool ok = true;
	for (uint32_t j = 0; j < s->n_slots; j++) {
		struct gossip_member me;
		if (s->m[j].g != NULL && gossip_member_find(s->m[j].g, s->m[j].name, &me))
			inc[j] = me.incarnation;
	}
	for (uint32_t i = 0; i < s->n_slots && !s->failed && ok; i++) {
		struct gsim_member *o = &s->m[i];
		if (o->g == NULL)
			continue;
		uint32_t known = 0, live = 0;
		for (uint32_t j = 0; j < s->n_slots; j++) {
			uint8_t v = *view_at(s, i, j);
			struct gossip_member gm;
			bool found = gossip_member_find(o->g, s->m[j].name, &gm);
			if (j == i) {
				if (!found || !gm.self) {
					gsim_fail(s, "%s does not find itself", o->name);
					break;
				}
				known++;
				live++;
				continue;
			}
			if (found != (v != 0) || (found && gm.state != v)) {
				gsim_fail(s, "%s's table has %s %s, its events said %s", o->name,
					  s->m[j].name, found ? gossip_state_name(gm.state) : "absent",
					  v ? gossip_state_name(v) : "absent");
				break;
			}
			if (!found)
				continue;
			known++;
			if (gm.state == GOSSIP_ALIVE || gm.state == GOSSIP_SUSPECT)
				live++;
			if (s->m[j].g != NULL && gm.incarnation != inc[j] && ok) {
				ok = false;
				if (why != NULL)
					snprintf(why, cap, "%s has %s at incarnation %u, but %s is at %u",
						 o->name, s->m[j].name, gm.incarnation, s->m[j].name,
						 inc[j]);
			}
		}
		if (s->failed)
			break;
		if (gossip_member_count(o->g) != known || gossip_live_count(o->g) != live)
			gsim_fail(s, "%s counts %u members (%u live), its table lists %u (%u live)",
				  o->name, gossip_member_count(o->g), gossip_live_count(o->g), known,
				  live);
	}
	free(inc);
	return ok && !s->failed;
}

/* ------------------------------------------------------------------------------------------ */
/* The end of a run and its report.                                                           */

void gsim_observe_finish(struct gsim *s)
{
	struct gsim_result *r = &s->r;
	r->det_suspect = calloc(s->n_rec + 1, sizeof(uint64_t));
	r->det_first = calloc(s->n_rec + 1, sizeof(uint64_t));
	r->det_all = calloc(s->n_rec + 1, sizeof(uint64_t));
	r->upd_all = calloc(s->n_rec + 1, sizeof(uint64_t));
	if (r->det_suspect == NULL || r->det_first == NULL || r->det_all == NULL ||
	    r->upd_all == NULL) {
		gsim_fail(s, "out of memory");
		return;
	}
	for (uint32_t k = 0; k < s->n_rec; k++) {
		const struct gsim_record *rec = &s->rec[k];
		if (!rec->measured || rec->dropped || !rec->done)
			continue;
		if (rec->kind == GSIM_REC_CRASH) {
			r->det_suspect[r->n_det] =
				rec->first_suspect == UINT64_MAX ? 0 : rec->first_suspect - rec->t0;
			r->det_first[r->n_det] =
				rec->first_mark == UINT64_MAX ? 0 : rec->first_mark - rec->t0;
			r->det_all[r->n_det] = rec->all_marked - rec->t0;
			r->n_det++;
		} else {
			r->upd_all[r->n_upd++] = rec->all_marked - rec->t0;
		}
	}
	uint64_t udp = 0, pkts = 0, pp = 0;
	uint32_t live = 0;
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct gsim_member *m = &s->m[i];
		if (m->g != NULL) {
			gossip_stats(m->g, &m->last);
			live++;
		}
		udp += m->udp_bytes;
		pkts += m->udp_packets;
		pp += m->pp_bytes;
		r->core_packets_out += m->last.packets_out;
		r->core_bytes_out += m->last.bytes_out;
		r->suspicions += m->last.suspicions;
		r->refutations += m->last.refutations;
		r->deaths += m->last.deaths;
	}
	if (r->core_packets_out != r->packets || r->core_bytes_out != r->payload_bytes)
		gsim_fail(s, "the cores' gossip_stats count %" PRIu64 " datagrams, %" PRIu64
			     " bytes out; they handed the simulator %" PRIu64 " datagrams, %" PRIu64
			     " bytes",
			  r->core_packets_out, r->core_bytes_out, r->packets, r->payload_bytes);
	r->members_end = s->n_slots;
	r->live_end = live;
	double member_s = r->member_hours * 3600.0;
	if (member_s > 0) {
		r->udp_bps = (double)udp / member_s;
		r->udp_pps = (double)pkts / member_s;
		r->pp_bps = (double)pp / member_s;
	}
}

static void print_dist(FILE *f, const char *what, uint64_t *v, size_t n)
{
	if (n == 0) {
		fprintf(f, "  %-30s none measured\n", what);
		return;
	}
	double mean = gsim_mean(v, n);
	double p50 = gsim_percentile(v, n, 50), p99 = gsim_percentile(v, n, 99);
	double max = gsim_percentile(v, n, 100);
	fprintf(f, "  %-30s mean %6.2f s  p50 %6.2f s  p99 %6.2f s  max %6.2f s  (n=%zu)\n", what,
		mean / 1000.0, p50 / 1000.0, p99 / 1000.0, max / 1000.0, n);
}

void gsim_report(struct gsim *s, FILE *f)
{
	const struct gsim_result *r = &s->r;
	const struct gsim_params *p = &s->p;
	fprintf(f,
		"gossip-sim seed %" PRIu64 ": scenario %s, %u members (%u at the end, %u live), "
		"loss %.1f%%, latency %u+%u ms\n",
		s->seed, gsim_scenario_name(p->scenario), p->members, r->members_end, r->live_end,
		(double)p->loss_bp / 100.0, p->latency_ms, p->jitter_ms);
	fprintf(f,
		"  pool formed at %.1f s; faults for %.0f s; converged %.1f s after faults stopped\n",
		(double)r->boot_ms / 1000.0, (double)r->measure_ms / 1000.0,
		(double)r->converge_ms / 1000.0);
	fprintf(f,
		"  faults: %" PRIu64 " crashes, %" PRIu64 " updates, %" PRIu64 " stalls, %" PRIu64
		" partitions, %" PRIu64 " joins, %" PRIu64 " leaves\n",
		r->crashes, r->updates, r->stalls, r->partitions, r->joins, r->leaves);
	fprintf(f, "  timing: suspicion %.1f..%.1f s, false-positive window %.0f s, detection "
		   "bound %.0f s\n",
		(double)s->susp_min_ms / 1000.0, (double)s->susp_max_ms / 1000.0,
		(double)s->fp_window_ms / 1000.0, (double)s->detect_bound_ms / 1000.0);
	/* Copies: the percentiles sort in place. */
	uint64_t *tmp = malloc((r->n_det + r->n_upd + 1) * sizeof(uint64_t));
	if (tmp != NULL) {
		memcpy(tmp, r->det_suspect, r->n_det * sizeof(uint64_t));
		print_dist(f, "crash -> first suspicion", tmp, r->n_det);
		memcpy(tmp, r->det_first, r->n_det * sizeof(uint64_t));
		print_dist(f, "crash -> first dead", tmp, r->n_det);
		memcpy(tmp, r->det_all, r->n_det * sizeof(uint64_t));
		print_dist(f, "crash -> dead at every member", tmp, r->n_det);
		memcpy(tmp, r->upd_all, r->n_upd * sizeof(uint64_t));
		print_dist(f, "update -> every member", tmp, r->n_upd);
		free(tmp);
	}
	uint64_t inc = 0, decl = 0;
	for (int k = 0; k < GSIM_FP_COUNT; k++) {
		inc += r->fp_incidents[k];
		decl += r->fp_decls[k];
	}
	double mh = r->member_hours > 0 ? r->member_hours : 1;
	fprintf(f,
		"  false positives: %" PRIu64 " incidents (%" PRIu64
		" declarations) = %.4f per member-hour over %.1f member-hours\n",
		inc, decl, (double)inc / mh, r->member_hours);
	if (inc > 0) {
		fprintf(f, "    by cause:");
		for (int k = 0; k < GSIM_FP_COUNT; k++)
			fprintf(f, " %s %" PRIu64 "/%" PRIu64, fp_names[k], r->fp_incidents[k],
				r->fp_decls[k]);
		fprintf(f, " (incidents/declarations)\n");
	}
	if (r->dead_after_leave)
		fprintf(f, "  members that left marked dead instead: %" PRIu64 " declarations\n",
			r->dead_after_leave);
	fprintf(f,
		"  traffic per live member: UDP %.0f B/s (%.1f datagrams/s, with %u B of seal "
		"each), push-pull %.0f B/s, total %.0f B/s\n",
		r->udp_bps, r->udp_pps, GSIM_SEAL_OVERHEAD, r->pp_bps, r->udp_bps + r->pp_bps);
	fprintf(f,
		"  network: %" PRIu64 " datagrams, %" PRIu64 " lost, %" PRIu64 " cut, %" PRIu64
		" lost while stalled; push-pulls %" PRIu64 " merged, %" PRIu64 " failed\n",
		r->packets, r->packets_lost, r->packets_cut, r->packets_held_dropped, r->pushpulls,
		r->pushpulls_failed);
	fprintf(f,
		"  gossip_stats: %" PRIu64 " datagrams, %" PRIu64 " bytes out; the simulator "
		"carried %" PRIu64 " datagrams, %" PRIu64 " payload bytes\n",
		r->core_packets_out, r->core_bytes_out, r->packets, r->payload_bytes);
	fprintf(f,
		"  cores: %" PRIu64 " suspicions, %" PRIu64 " refutations, %" PRIu64
		" deaths; %" PRIu64 " events, %" PRIu64 " deadlines not in the future after a tick\n",
		r->suspicions, r->refutations, r->deaths, r->events, r->deadline_past);
}
