// Feed-forward sub-blocks for training: dense SwiGLU MLP and the Qwen3-MoE sparse block,
// forward (keeping what the backward needs) and backward, through the op interface (any backend
// with training ops: the same code runs on cpu and cuda).
//
// MoE math per token (x: (D), router R: (E, D)):
//   z = x·Rᵀ,  p = softmax(z),  top-k indices i_1..i_k (descending p),
//   w_j = p_{i_j} (/ Σ_j p_{i_j} when norm_topk_prob),  y = Σ_j w_j · Expert_{i_j}(x)
// Backward: dw_j = dy·ye_j; renormalised: dp_{i_j} = (dw_j − Σ_m dw_m w_m) / S (S = Σ p_sel);
// otherwise dp_{i_j} = dw_j; unselected experts get dp = 0 (top-k passes gradient only through
// the chosen probabilities); dz = p ⊙ (dp − Σ_e dp_e p_e); dx += dz·R, dR += dzᵀ·x.
//
// The ops (ops.h): moe_route (p, top-k, w), moe_plan (the slots grouped by expert, stable),
// embed as a row gather (xe[p] = x[tok[p]]), the grouped expert products expert_matmul (every
// expert's weights on its contiguous slot rows, gate and up in one call) and expert_matmul_bwd
// (their input gradients, gate and up summed in one call, and the expert weight gradients when
// gL is given: dW_e += dy[rows]ᵀ·x[rows]), moe_combine (y[t] = Σ_k w·o[pos]),
// and backward moe_combine_bwd (dye = w·dy, dw = dy·o), moe_route_bwd (dz), moe_combine without
// weights (dx[t] += Σ_k dxe[pos]).
// The slot offsets stay in backend memory: the grouped products read them there, so the block,
// forward and backward, with or without expert gradients, runs without a host synchronisation
// (on cuda: the grouped tensor-core GEMMs of cuda_moe.cu, a few launches per layer pass).
// The gradients are deterministic: every op sums in a fixed order and the slots of an expert
// are in token order.
#include "train/moe_train.h"

#include <string.h>

void ae_moe_acts_free(ae_moe_acts *a) {
    if (!a) return;
    if (a->mem.be) ae_scratch_free(&a->mem);
    memset(a, 0, sizeof *a);
}

ae_status ae_moe_train_forward(const ae_model *m, const ae_layer *L, ae_ptr x, int M, ae_ptr y,
                               ae_moe_acts *a) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    int D = c->hidden_size, E = c->num_experts, K = c->num_experts_per_tok;
    int Im = c->moe_intermediate_size;
    memset(a, 0, sizeof *a);
    if (K < 1 || K > E) return ae_errorf(AE_ERR_ARG, "moe: num_experts_per_tok %d of %d experts", K, E);
    if (!be->moe_plan || !be->moe_combine || !be->expert_matmul)
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend has no MoE training ops", be->name);
    size_t S = (size_t)M * K;
    ae_dtype at = be->act_dtype;
    a->M = M, a->E = E, a->K = K, a->Im = Im, a->D = D;
    ae_scratch *s = &a->mem;
    ae_scratch_init(s, be);
    ae_ptr logits = ae_scratch_alloc(s, (size_t)M * E, AE_DT_F32); // (M, E) router logits
    a->off = ae_scratch_alloc(s, (size_t)E + 1, AE_DT_I32);
    a->probs = ae_scratch_alloc(s, (size_t)M * E, AE_DT_F32);
    a->idx = ae_scratch_alloc(s, S, AE_DT_I32);
    a->wts = ae_scratch_alloc(s, S, AE_DT_F32);
    a->pos = ae_scratch_alloc(s, S, AE_DT_I32);
    a->tok = ae_scratch_alloc(s, S, AE_DT_I32);
    a->xe = ae_scratch_alloc(s, S * D, at);
    a->g = ae_scratch_alloc(s, S * Im, at);
    a->u = ae_scratch_alloc(s, S * Im, at);
    a->act = ae_scratch_alloc(s, S * Im, at);
    a->o = ae_scratch_alloc(s, S * D, AE_DT_F32);
    if (s->failed) {
        double mib = (double)S * ((double)D * (ae_dtype_size(at) + 4) + 3.0 * Im * ae_dtype_size(at)) /
                     1048576.0;
        ae_moe_acts_free(a);
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the MoE activations of %d tokens "
                         "(%d slots, %.1f MiB)", be->name, M, (int)S, mib);
    }
    ae_matmul(be, logits, x, L->router, M, D, E);
    be->moe_route(be, a->idx, a->wts, a->probs, logits, M, E, K, c->norm_topk_prob);
    be->moe_plan(be, a->off, a->pos, a->tok, a->idx, M, K, E);
    be->embed(be, a->xe, x, a->tok, (int)S, D); // a row gather: xe[p] = x[tok[p]]
    ae_ptr gu[2] = {a->g, a->u}, w_gu[2] = {L->e_gate, L->e_up};
    be->expert_matmul(be, 2, gu, a->xe, w_gu, a->off, (int)S, E, Im, D);
    be->silu_mul(be, a->act, a->g, a->u, S * Im);
    be->expert_matmul(be, 1, &a->o, a->act, &L->e_down, a->off, (int)S, E, D, Im);
    be->moe_combine(be, y, a->o, a->pos, a->wts, M, K, D, 0);
    return AE_OK;
}

ae_status ae_moe_train_backward(const ae_model *m, const ae_layer *L, const ae_moe_acts *a,
                                ae_ptr x, ae_ptr dy, ae_ptr dx, ae_layer *gL) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    int M = a->M, E = a->E, K = a->K, Im = a->Im, D = a->D;
    size_t S = (size_t)M * K;
    ae_dtype at = be->act_dtype;
    if (!be->moe_combine_bwd || !be->moe_route_bwd || !be->silu_mul_bwd || !be->expert_matmul_bwd)
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend has no MoE training ops", be->name);
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr dw = ae_scratch_alloc(&s, S, AE_DT_F32);           // (M, K) ∂/∂ routing weights
    ae_ptr dz = ae_scratch_alloc(&s, (size_t)M * E, at);       // (M, E) ∂/∂ router logits
    ae_ptr dslot = ae_scratch_alloc(&s, S * D, at);            // (S, D) dye, then dxe
    ae_ptr dg = ae_scratch_alloc(&s, S * Im, at);              // (S, Im) d act, then d gate
    ae_ptr du = ae_scratch_alloc(&s, S * Im, at);              // (S, Im) d up
    if (s.failed) {
        ae_scratch_free(&s);
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the MoE backward of %d tokens",
                         be->name, M);
    }
    // Routing: dye = w · dy per slot, dw = dy · o, then through the top-k softmax to the logits.
    be->moe_combine_bwd(be, dslot, dw, dy, a->o, a->pos, a->wts, M, K, D);
    be->moe_route_bwd(be, dz, dw, a->probs, a->idx, M, E, K, c->norm_topk_prob);
    ae_matmul_bwd(be, dx, gL ? gL->router : ae_ptr_null(), dz, x, L->router, M, D, E);

    // Experts on their slot rows: down, SwiGLU, then gate and up (their input gradients summed).
    // (expert weight gradients into gL's F32 buffers when gL is given)
    be->expert_matmul_bwd(be, 1, dg, gL ? &gL->e_down : NULL, &dslot, a->act, &L->e_down, a->off,
                          (int)S, E, D, Im, 0);
    be->silu_mul_bwd(be, dg, du, dg, a->g, a->u, S * Im); // dg == dy allowed (ops.h)
    ae_ptr dgu[2] = {dg, du}, w_gu[2] = {L->e_gate, L->e_up};
    ae_ptr gw_gu[2] = {gL ? gL->e_gate : ae_ptr_null(), gL ? gL->e_up : ae_ptr_null()};
    be->expert_matmul_bwd(be, 2, dslot, gw_gu, dgu, a->xe, w_gu, a->off, (int)S, E, Im, D, 0);
    // The gather's backward: each token receives its K slot rows in k order.
    be->moe_combine(be, dx, dslot, a->pos, ae_ptr_null(), M, K, D, 1);
    ae_scratch_free(&s);
    return AE_OK;
}

void ae_mlp_train_forward(const ae_model *m, const ae_layer *L, ae_ptr x, int M, ae_ptr y,
                          ae_ptr g, ae_ptr u, ae_ptr act) {
    const ae_backend *be = m->be;
    int D = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    ae_matmul(be, g, x, L->w_gate, M, D, I);
    ae_matmul(be, u, x, L->w_up, M, D, I);
    if (!ae_ptr_is_null(act)) be->silu_mul(be, act, g, u, (size_t)M * I);
    if (!ae_ptr_is_null(y)) ae_matmul(be, y, act, L->w_down, M, I, D);
}

void ae_mlp_train_backward(const ae_model *m, const ae_layer *L, ae_ptr x, ae_ptr g, ae_ptr u,
                           ae_ptr act, ae_ptr dy, int M, ae_ptr dx, ae_layer *gL, ae_ptr scratch) {
    const ae_backend *be = m->be;
    int D = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    size_t n = (size_t)M * I;
    ae_ptr dact = scratch, dg = ae_ptr_at(scratch, n), du = ae_ptr_at(scratch, 2 * n); // (M, I) each
    be->fill(be, dact, n, 0.0f);
    ae_matmul_bwd(be, dact, gL ? gL->w_down : ae_ptr_null(), dy, act, L->w_down, M, I, D);
    be->silu_mul_bwd(be, dg, du, dact, g, u, n);
    ae_matmul_bwd(be, dx, gL ? gL->w_gate : ae_ptr_null(), dg, x, L->w_gate, M, D, I);
    ae_matmul_bwd(be, dx, gL ? gL->w_up : ae_ptr_null(), du, x, L->w_up, M, D, I);
}
