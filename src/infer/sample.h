// Next-token selection: greedy (argmax, ties -> lowest id) or sampling with temperature, top-k
// and top-p (nucleus), from a seeded generator so runs are reproducible.
#ifndef AE_INFER_SAMPLE_H
#define AE_INFER_SAMPLE_H

#include <stdint.h>

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
    float *probs; // (V)
    int *order;   // (V)
} ae_sampler;

// Validates the parameters (AE_ERR_ARG naming the option) and allocates scratch for V ids.
ae_status ae_sampler_init(ae_sampler *s, const ae_sampler_params *p, int vocab);
void ae_sampler_free(ae_sampler *s);
int ae_argmax(const float *x, int n);
// Picks the next id from logits (V).
int ae_sampler_next(ae_sampler *s, const float *logits);

#endif
