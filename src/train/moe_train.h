// Training forward/backward of the feed-forward sub-blocks (dense SwiGLU MLP and the Qwen3-MoE
// sparse block) through the op interface, used by model_train.c and distill.c. Internal to train/.
#ifndef AE_TRAIN_MOE_TRAIN_H
#define AE_TRAIN_MOE_TRAIN_H

#include "model/model.h"

// What the MoE backward needs, in backend memory (one layer at a time: stage 2 recomputes each
// layer just before its backward). Every (token t, choice k) pair is one "slot" s = t·K + k; the
// slot rows are stored grouped by expert (moe_plan: expert e owns positions off[e] ..
// off[e+1]−1, tokens in increasing order).
typedef struct {
    int M, E, K, Im, D;
    ae_scratch mem;     // every buffer below
    ae_ptr probs;       // (M, E) F32   softmax of the router logits
    ae_ptr idx;         // (M, K) I32   selected experts, descending probability
    ae_ptr wts;         // (M, K) F32   routing weights (renormalised when norm_topk_prob)
    ae_ptr pos;         // (M·K) I32    position of slot s
    ae_ptr tok;         // (M·K) I32    token of the slot at position p
    ae_ptr off;         // (E + 1) I32  slot ranges per expert
    ae_ptr xe;          // (M·K, D) act  the gathered input row of each slot
    ae_ptr g, u, act;   // (M·K, Im) act gate / up projections, silu(g) ⊙ u
    ae_ptr o;           // (M·K, D) F32  expert output of each slot (before the routing weight)
} ae_moe_acts;

// y = MoE(x)   x, y: (M, D) act. Fills a (free with ae_moe_acts_free; also after a failure).
ae_status ae_moe_train_forward(const ae_model *m, const ae_layer *L, ae_ptr x, int M, ae_ptr y,
                               ae_moe_acts *a);
// dx += ∂/∂x (M, D) act from dy (M, D) act. Parameter gradients accumulate into gL's router and
// experts (F32) unless gL is NULL (frozen MoE layers: the data gradient still flows). The
// gradient reaches the router only through the selected probabilities (top-k is piecewise
// constant), as in PyTorch.
ae_status ae_moe_train_backward(const ae_model *m, const ae_layer *L, const ae_moe_acts *a,
                                ae_ptr x, ae_ptr dy, ae_ptr dx, ae_layer *gL);
void ae_moe_acts_free(ae_moe_acts *a);

// Dense SwiGLU MLP: y = (silu(x·Wgᵀ) ⊙ x·Wuᵀ)·Wdᵀ, through the op interface (any backend).
// x, y: (M, D) act;  g, u, act: (M, I) act, kept for the backward. A backward's recompute needs
// less: y null skips the down projection (the backward never reads y), and act null as well
// (needs y null) skips silu(g) ⊙ u, which only the down projection's weight gradient reads.
void ae_mlp_train_forward(const ae_model *m, const ae_layer *L, ae_ptr x, int M, ae_ptr y,
                          ae_ptr g, ae_ptr u, ae_ptr act);
// dx += ∂/∂x (M, D) act; weight gradients into gL unless NULL. scratch: 3·M·I act values.
void ae_mlp_train_backward(const ae_model *m, const ae_layer *L, ae_ptr x, ae_ptr g, ae_ptr u,
                           ae_ptr act, ae_ptr dy, int M, ae_ptr dx, ae_layer *gL, ae_ptr scratch);

#endif
