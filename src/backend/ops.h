// The op interface. Model code is written once against these function pointers; a backend
// (cpu: the fp32 reference; cuda: a later milestone) supplies them. All tensors are dense,
// row-major float arrays owned by the caller; shapes are given explicitly.
//
// Every forward op that training goes through has a backward op here. Backward ops ACCUMULATE
// into parameter gradients and into input gradients marked "+=" (shared inputs such as a
// grouped KV head receive gradient from several consumers); "=" outputs are overwritten.
// Each backward is checked against finite differences of its forward (tests/test_grad_ops.c).
// Aliasing: attention_bwd accepts dk == dv (MLA's absorbed layout); gate_mul_bwd and
// silu_mul_bwd accept dx == dy; no other backward output may alias an input.
#ifndef AE_BACKEND_OPS_H
#define AE_BACKEND_OPS_H

#include <stddef.h>

typedef struct ae_backend ae_backend;

typedef enum {
    AE_ROPE_HALF = 0,        // Qwen/Llama: pairs (i, i + rd/2)
    AE_ROPE_INTERLEAVED = 1, // DeepSeek (rope_interleave): pairs (2i, 2i + 1)
} ae_rope_mode;

// Shape of one causal attention call: T queries at positions pos0..pos0+T-1 over the keys of
// positions 0..pos0+T-1. Query head h reads kv head h / (Hq / Hkv).
//   q:   (T, Hq, dk)                    out: (T, Hq, dv)
//   k:   key of position j, head g at k + row(j) * k_stride + g * dk     (dk floats)
//   v:   value of position j, head g at v + row(j) * v_stride + g * dv   (dv floats)
//   row(j) = j, or j % ring when ring > 0 (ring buffer of `ring` slots: then only the last
//   `ring` positions are available: window must be in 1..ring and T + window - 1 <= ring, so
//   that every key a query needs is still stored)
//   window > 0: query at position p sees keys p-window+1 .. p (itself and the window-1 before)
//   sinks (Hq) or NULL: per-head learned logit joining the softmax with no value (gpt-oss):
//   p_j = exp(s_j) / (exp(sink_h) + sum_i exp(s_i))
typedef struct {
    int T, pos0, Hq, Hkv, dk, dv;
    int k_stride, v_stride;
    int window, ring;
    float scale;
    const float *sinks;
} ae_attn_args;

struct ae_backend {
    const char *name;

    // ---- forward ----
    // y = x · wᵀ     x: (M, K)  w: (N, K)  y: (M, N)   (PyTorch Linear layout)
    void (*matmul)(const ae_backend *be, float *y, const float *x, const float *w, int M, int K,
                   int N);
    // y[i] = x[i] / sqrt(mean(x[i]²) + eps) * w     x, y: (M, D)  w: (D); y may alias x
    void (*rmsnorm)(const ae_backend *be, float *y, const float *x, const float *w, int M, int D,
                    float eps);
    // In-place rotary embedding of rd dims per head: the vector of head h of token t starts at
    // x + (t·H + h)·stride; pair i (i < rd/2) rotates by angle pos[t] · theta^(-2i/rd).
    // x: (T, H, stride), rd <= stride, rd even.  pos: (T)
    void (*rope)(const ae_backend *be, float *x, const int *pos, int T, int H, int stride, int rd,
                 double theta, ae_rope_mode mode);
    // out = softmax(q·kᵀ·scale + mask [+ sink]) · v      (see ae_attn_args)
    void (*attention)(const ae_backend *be, const ae_attn_args *a, float *out, const float *q,
                      const float *k, const float *v);
    // y = x ⊙ sigmoid(g). x, y: (T, H, hd); g: (T, H, hd) elementwise, or (T, H) one per head
    // when per_head. y may alias x.
    void (*gate_mul)(const ae_backend *be, float *y, const float *x, const float *g, int T, int H,
                     int hd, int per_head);
    // y = silu(g) ⊙ u     all (n)
    void (*silu_mul)(const ae_backend *be, float *y, const float *g, const float *u, size_t n);
    // y += x    (n)
    void (*add)(const ae_backend *be, float *y, const float *x, size_t n);

    // ---- backward ----
    // dx += dy · w (M, K) when dx != NULL;  dw += dyᵀ · x (N, K) when dw != NULL.
    void (*matmul_bwd)(const ae_backend *be, float *dx, float *dw, const float *dy, const float *x,
                       const float *w, int M, int K, int N);
    // dx += ∂/∂x, dw += ∂/∂w of rmsnorm (dw may be NULL).   dy, x, dx: (M, D)
    void (*rmsnorm_bwd)(const ae_backend *be, float *dx, float *dw, const float *dy, const float *x,
                        const float *w, int M, int D, float eps);
    // In place: the gradient of a rope'd tensor becomes the gradient of its input (the inverse
    // rotation). Same arguments as rope.
    void (*rope_bwd)(const ae_backend *be, float *dx, const int *pos, int T, int H, int stride,
                     int rd, double theta, ae_rope_mode mode);
    // dq = ∂/∂q (T, Hq, dk);  dk += ∂/∂k, dv += ∂/∂v with the layouts of k, v in `a`;
    // dsinks += ∂/∂sinks (Hq) when a->sinks and dsinks != NULL. Probabilities are recomputed.
    void (*attention_bwd)(const ae_backend *be, const ae_attn_args *a, float *dq, float *dk,
                          float *dv, float *dsinks, const float *dout, const float *q,
                          const float *k, const float *v);
    // dx = dy ⊙ σ(g);  dg = ∂/∂g (same shape as g, overwritten).
    void (*gate_mul_bwd)(const ae_backend *be, float *dx, float *dg, const float *dy,
                         const float *x, const float *g, int T, int H, int hd, int per_head);
    // dg = dy ⊙ u ⊙ silu'(g);  du = dy ⊙ silu(g)   (overwritten)
    void (*silu_mul_bwd)(const ae_backend *be, float *dg, float *du, const float *dy,
                         const float *g, const float *u, size_t n);
};

// The fp32 reference backend (OpenBLAS GEMM, OpenMP loops).
const ae_backend *ae_backend_cpu(void);

// Fills an ae_attn_args for the common dense layout: k (S, Hkv, dk), v (S, Hkv, dv), no ring.
ae_attn_args ae_attn_dense(int T, int pos0, int Hq, int Hkv, int dk, int dv, int window,
                           float scale, const float *sinks);

#endif
