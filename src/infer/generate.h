// Autoregressive generation: one prefill of the prompt, then one-token decode steps against the
// KV cache. Each new id is handed to a callback as soon as it is chosen (streaming).
#ifndef AE_INFER_GENERATE_H
#define AE_INFER_GENERATE_H

#include <stdint.h>

#include "infer/sample.h"
#include "model/model.h"

// Return non-zero to stop generation early.
typedef int (*ae_token_fn)(void *ud, int32_t id);

typedef struct {
    int prompt_tokens, new_tokens;
    double prefill_s, decode_s; // wall time of the prefill and of all decode steps
} ae_gen_stats;

// Generates up to max_new ids after `prompt` (n_prompt >= 1). Stops early at eos_id (>= 0; the
// eos id is emitted) or when fn returns non-zero. Context = n_prompt + max_new tokens.
ae_status ae_generate(const ae_model *m, const int32_t *prompt, int n_prompt, int max_new,
                      ae_sampler *sampler, int eos_id, ae_token_fn fn, void *ud,
                      ae_gen_stats *stats);

#endif
