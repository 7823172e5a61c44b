// Private to the CPU backend: the op implementations, one file per concern, gathered into the
// vtable by cpu.c. Signatures are those of the ae_backend slots (backend/ops.h).
#ifndef AE_BACKEND_CPU_INTERNAL_H
#define AE_BACKEND_CPU_INTERNAL_H

#include "backend/ops.h"

// cpu_matmul.c
void ae_cpu_matmul(const ae_backend *be, float *y, const float *x, const float *w, int M, int K,
                   int N);
void ae_cpu_matmul_bwd(const ae_backend *be, float *dx, float *dw, const float *dy,
                       const float *x, const float *w, int M, int K, int N);

// cpu_norm.c
void ae_cpu_rmsnorm(const ae_backend *be, float *y, const float *x, const float *w, int M, int D,
                    float eps);
void ae_cpu_rmsnorm_bwd(const ae_backend *be, float *dx, float *dw, const float *dy,
                        const float *x, const float *w, int M, int D, float eps);

// cpu_rope.c
void ae_cpu_rope(const ae_backend *be, float *x, const int *pos, int T, int H, int stride, int rd,
                 double theta, ae_rope_mode mode);
void ae_cpu_rope_bwd(const ae_backend *be, float *dx, const int *pos, int T, int H, int stride,
                     int rd, double theta, ae_rope_mode mode);

// cpu_attention.c
void ae_cpu_attention(const ae_backend *be, const ae_attn_args *a, float *out, const float *q,
                      const float *k, const float *v);
void ae_cpu_attention_bwd(const ae_backend *be, const ae_attn_args *a, float *dq, float *dk,
                          float *dv, float *dsinks, const float *dout, const float *q,
                          const float *k, const float *v);

// cpu_elementwise.c
void ae_cpu_gate_mul(const ae_backend *be, float *y, const float *x, const float *g, int T, int H,
                     int hd, int per_head);
void ae_cpu_gate_mul_bwd(const ae_backend *be, float *dx, float *dg, const float *dy,
                         const float *x, const float *g, int T, int H, int hd, int per_head);
void ae_cpu_silu_mul(const ae_backend *be, float *y, const float *g, const float *u, size_t n);
void ae_cpu_silu_mul_bwd(const ae_backend *be, float *dg, float *du, const float *dy,
                         const float *g, const float *u, size_t n);
void ae_cpu_add(const ae_backend *be, float *y, const float *x, size_t n);

#endif
