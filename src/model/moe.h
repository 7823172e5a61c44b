// Qwen3-MoE sparse block: softmax router over all experts, top-k, optional renormalisation
// (norm_topk_prob), weighted sum of SwiGLU experts.
#ifndef AE_MODEL_MOE_H
#define AE_MODEL_MOE_H

#include "model/model.h"

// Top-k of probabilities p (n): indices in descending order of value (ties -> lower index),
// weights renormalised to sum 1 when `renorm`. idx, wts: (k)
void ae_moe_route(const float *p, int n, int k, int renorm, int *idx, float *wts);

// Router softmax over all experts of one token, in place (double accumulation).   z: (n)
void ae_moe_softmax(float *z, int n);

// y = MoE(x)    x, y: (T, D)
ae_status ae_moe_forward(const ae_model *m, const ae_layer *L, float *y, const float *x, int T);

#endif
