// Training forward/backward of the feed-forward sub-blocks (dense SwiGLU MLP and the Qwen3-MoE
// sparse block), used by model_train.c. Internal to train/.
#ifndef AE_TRAIN_MOE_TRAIN_H
#define AE_TRAIN_MOE_TRAIN_H

#include "model/model.h"

// What the MoE backward needs. Every (token t, choice j) pair is one "slot"; slots are stored
// grouped by expert (expert e owns slots off[e] .. off[e+1]-1, tokens in increasing order), the
// order moe.c's inference forward processes them, so the output is bit-identical to it.
typedef struct {
    int M, E, K, Im, D;
    float *probs;   // (M, E)   softmax of the router logits
    int *top;       // (M, K)   selected experts, descending probability
    float *topw;    // (M, K)   routing weights (renormalised when norm_topk_prob)
    int *off;       // (E + 1)  slot ranges per expert
    int *slot_tok;  // (M*K)    token of slot s
    int *slot_of;   // (M*K)    slot of pair (t, j), indexed t*K + j
    float *g, *u;   // (M*K, Im) gate / up projections of each slot
    float *act;     // (M*K, Im) silu(g) ⊙ u
    float *ye;      // (M*K, D)  expert output of each slot (before the routing weight)
} ae_moe_acts;

// y = MoE(x)   x, y: (M, D). Fills a (free with ae_moe_acts_free).
ae_status ae_moe_train_forward(const ae_model *m, const ae_layer *L, const float *x, int M,
                               float *y, ae_moe_acts *a);
// dx += ∂/∂x (M, D). Parameter gradients accumulate into gL's router and experts unless gL is
// NULL (attention-only training: the data gradient still flows). The gradient reaches the router
// only through the selected probabilities (top-k is piecewise constant), as in PyTorch.
ae_status ae_moe_train_backward(const ae_model *m, const ae_layer *L, const ae_moe_acts *a,
                                const float *x, const float *dy, float *dx, ae_layer *gL);
void ae_moe_acts_free(ae_moe_acts *a);

// Dense SwiGLU MLP: y = (silu(x·Wgᵀ) ⊙ x·Wuᵀ)·Wdᵀ, through the op interface (any backend).
// x, y: (M, D) act;  g, u, act: (M, I) act, kept for the backward.
void ae_mlp_train_forward(const ae_model *m, const ae_layer *L, ae_ptr x, int M, ae_ptr y,
                          ae_ptr g, ae_ptr u, ae_ptr act);
// dx += ∂/∂x (M, D) act; weight gradients into gL unless NULL. scratch: 3·M·I act values.
void ae_mlp_train_backward(const ae_model *m, const ae_layer *L, ae_ptr x, ae_ptr g, ae_ptr u,
                           ae_ptr act, ae_ptr dy, int M, ae_ptr dx, ae_layer *gL, ae_ptr scratch);

#endif
