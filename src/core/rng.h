// Deterministic random numbers (xoshiro256**, seeded through splitmix64). The state is plain
// data so it can be saved in checkpoints.
#ifndef AE_CORE_RNG_H
#define AE_CORE_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} ae_rng;

void ae_rng_seed(ae_rng *r, uint64_t seed);
uint64_t ae_rng_u64(ae_rng *r);
// Uniform in [0, 1) with 24 random bits (exactly representable as float).
float ae_rng_uniform(ae_rng *r);
// Standard normal (Box-Muller).
float ae_rng_normal(ae_rng *r);

#endif
