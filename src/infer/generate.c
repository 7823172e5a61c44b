#include "infer/generate.h"

#include <string.h>

#include "core/log.h"
#include "core/mem.h"

ae_status ae_generate(const ae_model *m, const int32_t *prompt, int n_prompt, int max_new,
                      ae_sampler *sampler, int eos_id, ae_token_fn fn, void *ud,
                      ae_gen_stats *stats) {
    memset(stats, 0, sizeof *stats);
    if (n_prompt < 1) return ae_errorf(AE_ERR_ARG, "generate: the prompt is empty");
    if (max_new < 0) return ae_errorf(AE_ERR_ARG, "generate: max new tokens must be >= 0");
    ae_kv_cache cache;
    AE_TRY(ae_kv_cache_init(&cache, m, n_prompt + (max_new > 0 ? max_new : 1)));
    float *logits = ae_alloc_f32((size_t)m->cfg.vocab_size); // (V)
    if (!logits) {
        ae_kv_cache_free(&cache);
        return AE_ERR_NOMEM;
    }
    stats->prompt_tokens = n_prompt;
    double t0 = ae_time_now();
    ae_status st = ae_model_forward(m, &cache, prompt, n_prompt, logits, 0);
    stats->prefill_s = ae_time_now() - t0;
    t0 = ae_time_now();
    for (int i = 0; st == AE_OK && i < max_new; i++) {
        int32_t id = ae_sampler_next(sampler, logits);
        stats->new_tokens++;
        if (fn && fn(ud, id)) break;
        if (id == eos_id || i + 1 == max_new) break;
        st = ae_model_forward(m, &cache, &id, 1, logits, 0);
    }
    stats->decode_s = ae_time_now() - t0;
    ae_free_aligned(logits);
    ae_kv_cache_free(&cache);
    return st;
}
