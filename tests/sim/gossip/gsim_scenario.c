/* gsim_scenario.c: what a run does to the pool: the scenarios' parameters and the fault
 * schedule.
 *
 * Each kind of fault is its own stream: it acts, then schedules its next action a gap later,
 * the gap uniform in [mean/2, 3*mean/2] of the stream's mean (the *_every_ms parameters),
 * all drawn from the run's fault generator. Streams act only in the fault phase. Crashes and
 * leaves stop when the live members would fall below min_live_pct of the initial count.
 *
 *   steady     crashes every 20 s and a metadata update every 5 s: detection and
 *              dissemination figures; run it with --loss for the false-positive rates
 *   stall      a member stalls every 5 s for 1..30 s (half of them losing their inbound
 *              datagrams), plus crashes and updates
 *   partition  every 60 s a minority of up to 30% is cut off for 5..25 s, plus crashes and
 *              updates
 *   churn      a join every 5 s, a graceful leave every 10 s, a crash every 20 s
 *   mixed      all of them at once
 */
#include <string.h>

#include "gsim.h"

static const char *const names[GSIM_SC_COUNT] = {
	"steady", "stall", "partition", "churn", "mixed",
};

const char *gsim_scenario_name(uint32_t sc)
{
	return sc < GSIM_SC_COUNT ? names[sc] : "?";
}

int gsim_scenario_parse(const char *name)
{
	for (int i = 0; i < GSIM_SC_COUNT; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

void gsim_scenario_defaults(struct gsim_params *p, uint32_t scenario, uint32_t members)
{
	memset(p, 0, sizeof(*p));
	p->scenario = scenario;
	p->members = members;
	p->duration_ms = 300000;
	p->latency_ms = 1;
	p->jitter_ms = 4;
	/* 10 ms between starts, at most 20 s in all. */
	p->boot_ms = (uint64_t)members * 10;
	if (p->boot_ms > 20000)
		p->boot_ms = 20000;
	p->stall_mode = GSIM_STALL_EITHER;
	p->stall_min_ms = 1000;
	p->stall_max_ms = 30000;
	p->part_min_ms = 5000;
	p->part_max_ms = 25000;
	p->part_pct_max = 30;
	p->min_live_pct = 50;
	p->fp_check_loss_bp = 0;
	switch (scenario) {
	case GSIM_SC_STEADY:
		p->crash_every_ms = 20000;
		p->update_every_ms = 5000;
		break;
	case GSIM_SC_STALL:
		p->stall_every_ms = 5000;
		p->crash_every_ms = 30000;
		p->update_every_ms = 10000;
		break;
	case GSIM_SC_PARTITION:
		p->part_every_ms = 60000;
		p->crash_every_ms = 40000;
		p->update_every_ms = 10000;
		break;
	case GSIM_SC_CHURN:
		p->join_every_ms = 5000;
		p->leave_every_ms = 10000;
		p->crash_every_ms = 20000;
		p->update_every_ms = 10000;
		break;
	default:
		p->crash_every_ms = 20000;
		p->update_every_ms = 5000;
		p->stall_every_ms = 15000;
		p->part_every_ms = 90000;
		p->join_every_ms = 10000;
		p->leave_every_ms = 20000;
		break;
	}
	/* Joiners need slots. */
	p->max_slots = members;
}

enum stream { S_CRASH, S_UPDATE, S_STALL, S_PART, S_JOIN, S_LEAVE, S_COUNT };

static uint64_t every(const struct gsim *s, uint32_t stream)
{
	const struct gsim_params *p = &s->p;
	switch (stream) {
	case S_CRASH:
		return p->crash_every_ms;
	case S_UPDATE:
		return p->update_every_ms;
	case S_STALL:
		return p->stall_every_ms;
	case S_PART:
		return p->part_every_ms;
	case S_JOIN:
		return p->join_every_ms;
	case S_LEAVE:
		return p->leave_every_ms;
	default:
		return 0;
	}
}

static void next(struct gsim *s, uint32_t stream)
{
	uint64_t mean = every(s, stream);
	if (mean == 0)
		return;
	uint64_t gap = sim_rng_range(&s->fault_rng, mean / 2, mean + mean / 2);
	if (gap == 0)
		gap = 1;
	gsim_schedule(s, (struct gsim_event){
				 .at = s->now + gap, .kind = GSIM_EV_FAULT, .sub = stream});
}

void gsim_faults_start(struct gsim *s)
{
	for (uint32_t k = 0; k < S_COUNT; k++)
		next(s, k);
}

static bool may_shrink(const struct gsim *s)
{
	uint32_t live = 0;
	for (uint32_t i = 0; i < s->n_slots; i++)
		live += gsim_live(&s->m[i]);
	return (uint64_t)live * 100 > (uint64_t)s->p.members * s->p.min_live_pct;
}

void gsim_fault(struct gsim *s, uint32_t stream)
{
	if (s->phase != GSIM_PH_FAULT)
		return;
	const struct gsim_params *p = &s->p;
	uint32_t who;
	switch (stream) {
	case S_CRASH:
		if (may_shrink(s) && (who = gsim_pick_up(s, UINT32_MAX)) != UINT32_MAX)
			gsim_crash(s, who);
		break;
	case S_UPDATE:
		if ((who = gsim_pick_up(s, UINT32_MAX)) != UINT32_MAX)
			gsim_update_meta(s, who);
		break;
	case S_STALL:
		if ((who = gsim_pick_up(s, UINT32_MAX)) != UINT32_MAX) {
			uint64_t ms = sim_rng_range(&s->fault_rng, p->stall_min_ms, p->stall_max_ms);
			bool drop = p->stall_mode == GSIM_STALL_DROP ||
				    (p->stall_mode == GSIM_STALL_EITHER &&
				     sim_rng_below(&s->fault_rng, 2) == 1);
			gsim_stall(s, who, ms, drop);
		}
		break;
	case S_PART:
		if (!s->partitioned) {
			uint32_t pct = (uint32_t)sim_rng_range(&s->fault_rng, 1, p->part_pct_max);
			uint64_t ms = sim_rng_range(&s->fault_rng, p->part_min_ms, p->part_max_ms);
			gsim_partition(s, pct, ms);
		}
		break;
	case S_JOIN:
		gsim_add_member(s);
		break;
	case S_LEAVE:
		if (may_shrink(s) && (who = gsim_pick_up(s, UINT32_MAX)) != UINT32_MAX)
			gsim_leave(s, who);
		break;
	default:
		break;
	}
	next(s, stream);
}
