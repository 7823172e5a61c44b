// Next-token selection: greedy (argmax, ties -> lowest id) or sampling with temperature, top-k
// and top-p (nucleus), from a seeded generator so runs are reproducible. The rule itself is the
// backend's (backend/ops.h: ae_sample_param, sample_rows); the sampler owns a request's
// parameters and its generator, which draws one uniform u per sampled token.
#ifndef AE_INFER_SAMPLE_H
#define AE_INFER_SAMPLE_H

#include <stdint.h>

#include "backend/ops.h"
#include "core/error.h"
#include "core/rng.h"

typedef struct {
    int greedy;        // 1: argmax; the fields below are ignored
    float temperature; // > 0
    int top_k;         // 0 = all
    float top_p;       // (0, 1]; 1 = all
    uint64_t seed;
} ae_sampler_params;

typedef struct {
    ae_sampler_params p;
    ae_rng rng;
    int vocab;
    ae_sample_pair *scratch; // (V) for ae_sampler_next
} ae_sampler;

// Validates the parameters (AE_ERR_ARG naming the option) and allocates scratch for V ids.
ae_status ae_sampler_init(ae_sampler *s, const ae_sampler_params *p, int vocab);
void ae_sampler_free(ae_sampler *s);
int ae_argmax(const float *x, int n);
// The next token's row of sample_rows parameters: temperature 0 for a greedy sampler (no draw),
// else the sampler's options and a fresh draw u of its generator (one per sampled token).
ae_sample_param ae_sampler_row(ae_sampler *s);
// Picks the next id from host logits (V): ae_sample_row with ae_sampler_row's parameters.
int ae_sampler_next(ae_sampler *s, const float *logits);

#endif
