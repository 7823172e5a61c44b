// Qwen3-MoE sparse block: softmax router over all experts, top-k, optional renormalisation
// (norm_topk_prob), weighted sum of SwiGLU experts. Routing and experts are backend ops
// (moe_route, moe_ffn); the cpu reference's host routines are in backend/cpu.h.
#ifndef AE_MODEL_MOE_H
#define AE_MODEL_MOE_H

#include "backend/cpu.h"
#include "model/model.h"

// y = MoE(x)    x, y: (T, D) act
ae_status ae_moe_forward(const ae_model *m, const ae_layer *L, ae_ptr y, ae_ptr x, int T);

#endif
