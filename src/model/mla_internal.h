// Private helpers shared by the MLA files (attn_mla.c: parameters and inference; mla_train.c:
// training forward/backward; mla_init.c: teacher initialisation; mla_svd.c: LAPACK SVD).
#ifndef AE_MODEL_MLA_INTERNAL_H
#define AE_MODEL_MLA_INTERNAL_H

#include "model/attn_mla.h"

// Validates the dims (positive sizes, dr even, dn >= 0); AE_ERR_ARG with a message otherwise.
ae_status mla_check_dims(const ae_mla_dims *d);

// Query path for M tokens at positions pos (M, I32): q (M, H, dn+dr), RoPE applied to the
// q_rope slices. With q_lora_rank > 0, qa_raw (M, q_lora) receives x·Wqaᵀ and qa_n (M, q_lora)
// its RMSNorm (qa_raw may be null when not needed: then qa_n holds both steps in place).
void mla_q_forward(const ae_backend *be, const ae_mla *m, ae_ptr x, int M, ae_ptr pos, ae_ptr q,
                   ae_ptr qa_raw, ae_ptr qa_n);

// Thin SVD of the row-major (M, N) matrix A through LAPACK dgesvd: A = U·diag(S)·Vt with
// k = min(M, N), U (M, k), S (k) descending, Vt (k, N) — or (N, N) (a full orthonormal basis
// of the input space) when full_vt.
ae_status mla_svd(int M, int N, const double *A, double *U, double *S, double *Vt, int full_vt);

#endif
