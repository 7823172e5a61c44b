// Distillation losses with their gradients, through the op interface (any backend with the
// training ops; tensors in backend memory). Reductions are means over tokens (rows).
#ifndef AE_TRAIN_LOSS_H
#define AE_TRAIN_LOSS_H

#include "backend/ops.h"
#include "core/error.h"

// Tokens per block of the KD loss: each block makes two passes over the vocabulary; the second
// reads the first's logits (AE_KD_ROWS x V of each side, F32: 1.16 GiB at Qwen3's vocabulary;
// the environment's AE_KD_HOLD_MIB caps them, the chunks past the cap are recomputed with the
// same bits). 1024 since 2026-12-02: against 2048, stage 2's peak 0.8–0.9 GiB lower (Qwen3-8B
// MLA, 8-bit states + bf16 gradients: 37.6 -> 36.7 GiB; Qwen3-1.7B MLA 14.9 -> 14.1) at the
// same speed (7,751 / 7,770 -> 7,779 tok/s; 28,833 / 28,685 -> 28,773 / 28,744), H200.
#define AE_KD_ROWS 1024

// Vocabulary-chunked KD loss: mean over N tokens of τ²·KL(softmax(zt/τ) ‖ softmax(zs/τ)) with
// zt = ht·Wtᵀ, zs = hs·Wsᵀ computed for blocks of tokens, `chunk` vocabulary rows at a time
// (never N×V logits at once; chunk <= 0: a default). *loss = the mean; top1 (optional) = the
// count of tokens whose argmax zt == argmax zs. Gradients of grad_scale·loss: dhs is
// overwritten (skipped when null), dWs accumulated (skipped when null: a frozen head).
//   ht, hs: (N, D) act (final normalised hidden states);  Wt, Ws: (V, D) wt (lm_head)
//   dhs: (N, D) float;  dWs: (V, D) F32
ae_status ae_kd_loss(const ae_backend *be, ae_ptr ht, ae_ptr Wt, ae_ptr hs, ae_ptr Ws, int N,
                     int D, int V, float tau, int chunk, float grad_scale, ae_ptr dhs, ae_ptr dWs,
                     double *loss, int *top1);
// *loss = mean over N rows of (1 − cos(a_i, b_i)) (cosine_rows); da = grad_scale·∂loss/∂a
// (overwritten; skipped when null).   a, b, da: (N, D) float
ae_status ae_cosine_loss(const ae_backend *be, ae_ptr a, ae_ptr b, int N, int D, float grad_scale,
                         ae_ptr da, double *loss);
// *loss = mean over N rows of ‖y_i − t_i‖² / D (normalized = 0) or ‖y_i − t_i‖² / (‖t_i‖² +
// 1e-6) (normalized = 1, "MSE normalised by the target's energy per token") (mse_rows);
// dy = grad_scale·∂loss/∂y (overwritten; skipped when null).   y, t, dy: (N, D) float
ae_status ae_mse_loss(const ae_backend *be, ae_ptr y, ae_ptr t, int N, int D, int normalized,
                      float grad_scale, ae_ptr dy, double *loss);

#endif
