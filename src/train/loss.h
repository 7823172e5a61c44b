// Distillation losses with their gradients. Reductions are means over tokens (rows).
#ifndef AE_TRAIN_LOSS_H
#define AE_TRAIN_LOSS_H

#include "backend/ops.h"
#include "core/error.h"

// Vocabulary-chunked KD loss: mean over N tokens of τ²·KL(softmax(zt/τ) ‖ softmax(zs/τ)) with
// zt = ht·Wtᵀ, zs = hs·Wsᵀ computed `chunk` vocabulary rows at a time (never N×V at once).
// ht, hs: (N, D); Wt, Ws: (V, D). Writes dhs (N, D) (overwritten) and accumulates dWs (V, D)
// when non-NULL. *loss = the mean. Optional top1 (agreement count of argmax zt == argmax zs).
ae_status ae_kd_loss(const ae_backend *be, const float *ht, const float *Wt, const float *hs,
                     const float *Ws, int N, int D, int V, float tau, int chunk, float *dhs,
                     float *dWs, double *loss, int *top1);
// Mean over N rows of (1 − cos(a_i, b_i)); writes da (N, D) (overwritten) when non-NULL.
double ae_cosine_loss(const float *a, const float *b, int N, int D, float *da);
// Mean over N rows of ‖y_i − t_i‖² / D (normalized = 0) or ‖y_i − t_i‖² / (‖t_i‖² + 1e-6)
// (normalized = 1, "MSE normalised by the target's energy per token"). dy (N, D) overwritten.
double ae_mse_loss(const float *y, const float *t, int N, int D, int normalized, float *dy);

#endif
