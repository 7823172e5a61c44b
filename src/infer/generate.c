#include "infer/generate.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"

// The next id from the last logits, picked on the device: greedy by argmax_rows, sampling by
// sample_rows with this token's parameters (one draw of the sampler's generator, uploaded as
// the row's 4 I32 words); one id is read back. The serving engine makes the same calls, so a
// request served gives the ids generate gives for its seed, on every backend.
static ae_status next_id(const ae_backend *be, ae_sampler *sampler, ae_ptr logits, ae_ptr best,
                         ae_ptr params, int V, int32_t *id) {
    if (sampler->p.greedy) {
        be->argmax_rows(be, best, logits, 1, V);
    } else {
        ae_sample_param row = ae_sampler_row(sampler);
        AE_TRY(be->upload(be, params, &row, AE_DT_I32, 4));
        be->sample_rows(be, best, logits, params, 1, V);
    }
    return be->download(be, id, AE_DT_I32, best, 1);
}

ae_status ae_generate(const ae_model *m, const int32_t *prompt, int n_prompt, int max_new,
                      ae_sampler *sampler, int eos_id, ae_token_fn fn, void *ud,
                      ae_gen_stats *stats) {
    memset(stats, 0, sizeof *stats);
    if (n_prompt < 1) return ae_errorf(AE_ERR_ARG, "generate: the prompt is empty");
    if (max_new < 0) return ae_errorf(AE_ERR_ARG, "generate: max new tokens must be >= 0");
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size;
    ae_kv_cache cache;
    AE_TRY(ae_kv_cache_init(&cache, m, n_prompt + (max_new > 0 ? max_new : 1)));
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr logits = ae_scratch_alloc(&s, (size_t)V, AE_DT_F32); // (V)
    ae_ptr best = ae_scratch_alloc(&s, 1, AE_DT_I32);
    ae_ptr params = ae_scratch_alloc(&s, 4, AE_DT_I32); // (1) ae_sample_param
    ae_status st = s.failed ? AE_ERR_NOMEM : AE_OK;
    stats->prompt_tokens = n_prompt;
    double t0 = ae_time_now();
    int32_t id = 0;
    if (st == AE_OK) st = ae_model_forward(m, &cache, prompt, n_prompt, logits, 0);
    if (st == AE_OK && max_new > 0) st = next_id(be, sampler, logits, best, params, V, &id);
    stats->prefill_s = ae_time_now() - t0; // up to the first new token
    t0 = ae_time_now();
    for (int i = 0; st == AE_OK && i < max_new; i++) {
        stats->new_tokens++;
        if (fn && fn(ud, id)) break;
        if (id == eos_id || i + 1 == max_new) break;
        st = ae_model_decode_step(m, &cache, id, logits); // a CUDA graph on cuda
        if (st == AE_OK) st = next_id(be, sampler, logits, best, params, V, &id);
    }
    stats->decode_s = ae_time_now() - t0;
    ae_scratch_free(&s);
    ae_kv_cache_free(&cache);
    return st;
}
