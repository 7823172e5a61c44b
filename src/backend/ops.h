// The op interface. Model code is written once against these function pointers; a backend
// (cpu: the fp32 reference; cuda: a later milestone) supplies them. All tensors are dense,
// row-major float arrays owned by the caller; shapes are given explicitly.
//
// Backward ops join this table with the trainable attention targets; each will have a
// finite-difference test against its forward.
#ifndef AE_BACKEND_OPS_H
#define AE_BACKEND_OPS_H

#include <stddef.h>

typedef struct ae_backend ae_backend;

struct ae_backend {
    const char *name;

    // y = x · wᵀ     x: (M, K)  w: (N, K)  y: (M, N)   (PyTorch Linear layout)
    void (*matmul)(const ae_backend *be, float *y, const float *x, const float *w, int M, int K,
                   int N);
    // y[i] = x[i] / sqrt(mean(x[i]²) + eps) * w     x, y: (M, D)  w: (D); y may alias x
    void (*rmsnorm)(const ae_backend *be, float *y, const float *x, const float *w, int M, int D,
                    float eps);
    // In-place rotary embedding, rotate-half convention (Qwen/Llama): for each head vector,
    // pairs (i, i + hd/2) rotated by angle pos · theta^(-2i/hd).
    // x: (T, H, hd)  pos: (T)
    void (*rope)(const ae_backend *be, float *x, const int *pos, int T, int H, int hd,
                 double theta);
    // Causal grouped-query attention of T new queries at positions pos0..pos0+T-1 over keys at
    // positions 0..pos0+T-1 (the cache already holds the new keys). Query head h reads kv head
    // h / (Hq / Hkv). window > 0 limits each query to the `window` latest keys (itself included).
    // q: (T, Hq, hd)  k, v: (S, Hkv, hd) with S >= pos0 + T  out: (T, Hq, hd)
    void (*attention)(const ae_backend *be, float *out, const float *q, const float *k,
                      const float *v, int T, int pos0, int Hq, int Hkv, int hd, int window,
                      float scale);
    // y = silu(g) ⊙ u     all (n)
    void (*silu_mul)(const ae_backend *be, float *y, const float *g, const float *u, size_t n);
    // y += x    (n)
    void (*add)(const ae_backend *be, float *y, const float *x, size_t n);
};

// The fp32 reference backend (OpenBLAS GEMM, OpenMP loops).
const ae_backend *ae_backend_cpu(void);

#endif
