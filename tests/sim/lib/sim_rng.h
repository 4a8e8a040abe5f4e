/* sim_rng.h: the simulators' only source of randomness, and the hash of their traces; shared
 * by raft-sim (tests/sim) and gossip-sim (tests/sim/gossip).
 *
 * xoshiro256** (Blackman and Vigna), seeded through splitmix64 as its authors advise. Every
 * stream of a run is derived from the run's seed and two labels (sim_seed_mix), so adding draws
 * to one stream never shifts another one. */
#ifndef CAIRN_SIM_RNG_H
#define CAIRN_SIM_RNG_H

#include <stddef.h>
#include <stdint.h>

struct sim_rng {
	uint64_t s[4];
};

/* A stream seed derived from the run's seed and two stream labels. */
uint64_t sim_seed_mix(uint64_t seed, uint64_t a, uint64_t b);
void sim_rng_init(struct sim_rng *r, uint64_t seed);
uint64_t sim_rng_next(struct sim_rng *r);
/* Uniform in [0, n); 0 when n is 0. */
uint64_t sim_rng_below(struct sim_rng *r, uint64_t n);
/* Uniform in [lo, hi]. */
uint64_t sim_rng_range(struct sim_rng *r, uint64_t lo, uint64_t hi);

/* 64-bit FNV-1a, continued from h (start with SIM_HASH_INIT). */
#define SIM_HASH_INIT 0xcbf29ce484222325ULL
uint64_t sim_hash(uint64_t h, const void *data, size_t len);

#endif
