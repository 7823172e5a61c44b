// The CUDA training ops of backend/cuda_train.cu (GPU distillation: the embedding gradient, the
// stage-1 and feature losses per row, vocabulary-chunked softmax statistics and KD, the sum of
// squares for the clipping norm, axpby and AdamW). Signatures are those of the ae_backend slots
// (backend/ops.h); the fp32 references are in backend/cpu_train.c. Private to the CUDA backend:
// included by cuda.cu (the op table) and cuda_train.cu.
#ifndef AE_BACKEND_CUDA_TRAIN_H
#define AE_BACKEND_CUDA_TRAIN_H

#include "backend/ops.h"

void ae_cuda_embed_bwd(const ae_backend *be, ae_ptr dtable, ae_ptr dy, ae_ptr ids, int T, int D);
void ae_cuda_mse_rows(const ae_backend *be, ae_ptr out, ae_ptr dy, ae_ptr y, ae_ptr t, int N,
                      int D, int normalized, float scale);
void ae_cuda_cosine_rows(const ae_backend *be, ae_ptr out, ae_ptr da, ae_ptr a, ae_ptr b, int N,
                         int D, float scale);
void ae_cuda_softmax_stats(const ae_backend *be, ae_ptr stats, ae_ptr arg, ae_ptr z, int64_t ldz,
                           int N, int Vc, int v0, float inv_tau);
void ae_cuda_kd_chunk(const ae_backend *be, ae_ptr kl, ae_ptr dzs, int64_t ldd, ae_ptr zt,
                      ae_ptr zs, int64_t ldz, ae_ptr st, ae_ptr ss, int N, int Vc, float inv_tau,
                      float gscale);
void ae_cuda_sumsq(const ae_backend *be, ae_ptr out, ae_ptr x, size_t n);
void ae_cuda_axpby(const ae_backend *be, ae_ptr y, float alpha, ae_ptr x, float beta, size_t n);
void ae_cuda_adamw(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr m, ae_ptr v,
                   ae_ptr g, ae_ptr param, ae_ptr flag, size_t n);
void ae_cuda_adamw8(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr mq, ae_ptr ms,
                    ae_ptr vq, ae_ptr vs, ae_ptr g, ae_ptr param, ae_ptr flag, size_t n);

#endif
