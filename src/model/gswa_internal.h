// Private helpers of the GateSWA/GQA module shared by its single-sequence forward and training
// (attn_gateswa.c) and the paged, batched forward of the server (forward_paged.c).
#ifndef AE_MODEL_GSWA_INTERNAL_H
#define AE_MODEL_GSWA_INTERNAL_H

#include "model/attn_gateswa.h"

// Outputs of g_proj: Hq·hd (elementwise gate), Hq (one per head) or 0 (no gate).
size_t gswa_gate_dim(const ae_gswa_dims *d);
// q of M rows of x at positions pos (M) I32: normed + rotated into q; the pre-norm projection
// into qn when given.   x: (M, D)  q, qn: (M, Hq, hd)
void gswa_project_q(const ae_backend *be, const ae_gswa *m, ae_ptr x, int M, ae_ptr pos, ae_ptr q,
                    ae_ptr qn);
// k (normed + rotated) and v of M rows; k's pre-norm projection into kn when given.
//   x: (M, D)  k, kn, v: (M, Hkv, hd)
void gswa_project_kv(const ae_backend *be, const ae_gswa *m, ae_ptr x, int M, ae_ptr pos, ae_ptr k,
                     ae_ptr v, ae_ptr kn);
// Inference projections of M rows in one matmul group: q (normed + rotated), k (normed +
// rotated), v, and the gate logits g when the module has a gate; q, or k and v, or g may be
// null (skipped). q and k go through one qk_norm_rope. Row for row what gswa_project_q,
// gswa_project_kv and the gate product of gswa_gate_out compute (cpu: bit for bit).
//   x: (M, D)  q: (M, Hq, hd)  k, v: (M, Hkv, hd)  g: (M, gate_dim)
void gswa_project_qkv(const ae_backend *be, const ae_gswa *m, ae_ptr x, int M, ae_ptr pos,
                      ae_ptr q, ae_ptr k, ae_ptr v, ae_ptr g);
// 1/sqrt(hd)
float gswa_attn_scale(const ae_gswa_dims *d);
// gswa_gate_out with the gate logits g already computed (by gswa_project_qkv).
void gswa_gated_out(const ae_backend *be, const ae_gswa *m, ae_ptr a, ae_ptr g, int M, ae_ptr y);
// y = (a ⊙ sigmoid(x·Wgᵀ))·Woᵀ for M rows (a overwritten by the gated values; g scratch
// (M, gate_dim) or null without a gate).   x: (M, D)  a: (M, Hq, hd)  y: (M, D)
void gswa_gate_out(const ae_backend *be, const ae_gswa *m, ae_ptr x, ae_ptr a, ae_ptr g, int M,
                   ae_ptr y);

#endif
