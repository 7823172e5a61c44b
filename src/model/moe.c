#include "model/moe.h"

ae_status ae_moe_forward(const ae_model *m, const ae_layer *L, ae_ptr y, ae_ptr x, int T) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    int D = c->hidden_size, E = c->num_experts, K = c->num_experts_per_tok;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr logits = ae_scratch_alloc(&s, (size_t)T * E, AE_DT_F32); // (T, E) router logits
    ae_ptr idx = ae_scratch_alloc(&s, (size_t)T * K, AE_DT_I32);    // (T, K) chosen experts
    ae_ptr wts = ae_scratch_alloc(&s, (size_t)T * K, AE_DT_F32);    // (T, K) their weights
    if (s.failed) {
        ae_scratch_free(&s);
        return AE_ERR_NOMEM;
    }
    ae_matmul(be, logits, x, L->router, T, D, E);
    be->moe_route(be, idx, wts, ae_ptr_null(), logits, T, E, K, c->norm_topk_prob);
    be->moe_ffn(be, y, x, idx, wts, L->e_gate, L->e_up, L->e_down, T, D, c->moe_intermediate_size,
                E, K);
    ae_scratch_free(&s);
    return AE_OK;
}
