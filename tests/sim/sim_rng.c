/* sim_rng.c: the Raft simulator's uses of the shared generator (tests/sim/lib/sim_rng.h). */
#include "sim.h"

bool sim_rng_pm(struct sim_rng *r, uint32_t per_mille)
{
	return sim_rng_below(r, 1000) < per_mille;
}

uint64_t sim_rng_raft(void *ctx)
{
	return sim_rng_next(ctx);
}
