// The tests' double-precision references: one per computation the ops and the models share
// (issue 14: a private copy of a reference is where a bug slips through). Each is the naive
// formula of src/backend/ops.h in double, evaluated at the inputs the op actually saw (for a
// bf16 backend: the bf16 values read back from its buffers). Used by the op and gradient tests
// (tests/test_ops.c, tests/test_grad_ops.c: the oracles of every backend) and by the model
// tests' naive forwards (test_gateswa, test_mla, ...).
#ifndef AE_TEST_REF_H
#define AE_TEST_REF_H

#include <stddef.h>
#include <stdint.h>

#include "backend/ops.h"

// y = x · wᵀ (PyTorch Linear).   x: (M, K)  w: (N, K)  y: (M, N)
void ae_ref_matmul(double *y, const double *x, const double *w, int M, int K, int N);

// y_i = x_i / sqrt(mean(x_i²) + eps) ⊙ w for M rows of D values (y may be x; w NULL: ones).
//   x, y: (M, D)  w: (D) or NULL
void ae_ref_rmsnorm(double *y, const double *x, const double *w, int M, int D, double eps);

// The RoPE angle of pair i (of rd rotated dims) at position pos, formed in float as the ops and
// transformers form it: float(pos) · float(theta^(-2i/rd)).
double ae_ref_rope_angle(int pos, int i, int rd, double theta);
// In place: the first rd values of one head vector v rotated to position pos; pairs (i, i + rd/2)
// (AE_ROPE_HALF) or (2i, 2i + 1) (AE_ROPE_INTERLEAVED), i < rd/2.   v: (rd)
void ae_ref_rope_head(double *v, int rd, int pos, double theta, ae_rope_mode mode);
// ops.h's rope on a copy: y = x with the first rd dims of each head row (t, h) (row stride
// `stride`) rotated to pos[t].   x, y: (T, H, stride)  pos: (T)
void ae_ref_rope(double *y, const double *x, const int32_t *pos, int T, int H, int stride, int rd,
                 double theta, ae_rope_mode mode);

// sigmoid(v) = 1 / (1 + exp(−v)), and silu(v) = v · sigmoid(v).
double ae_ref_sigmoid(double v);
double ae_ref_silu(double v);
// SwiGLU's product y = silu(g) ⊙ u.   g, u, y: (n)
void ae_ref_silu_mul(double *y, const double *g, const double *u, size_t n);
// The output gate y = x ⊙ sigmoid(g): g (T, H, hd) elementwise, or (T, H) one per head.
//   x, y: (T, H, hd)
void ae_ref_gate_mul(double *y, const double *x, const double *g, int T, int H, int hd,
                     int per_head);

// The tests' one log-sum-exp reference: log Σ_i exp(z_i) in double, shifted by the maximum; p
// (optional, n) receives softmax(z).   z, p: (n)
double ae_ref_logsumexp(const double *z, int n, double *p);
// The same of float logits at a scale: log Σ_i exp(scale·z_i), each product scale·z_i formed in
// float first as the ops form it (scale 1: z exactly).   z: (n)
double ae_test_logsumexp(const float *z, int n, float scale, double *p);
// −log softmax(z)[target], and KL(softmax(scale·zt) ‖ softmax(scale·zs)) of one row (the
// teacher's distribution first), both from the log-sum-exp above.   z, zt, zs: (n)
double ae_ref_nll_row(const float *z, int n, int target);
double ae_ref_kl_row(const float *zt, const float *zs, int n, float scale);

// The feature losses of one row (ops.h's mse_rows and cosine_rows): ‖y − t‖² / den with den = D,
// or ‖t‖² + 1e-6 when normalized; and 1 − cos(a, b), 1 when a or b is all zero.
//   y, t, a, b: (D)
double ae_ref_mse_row(const double *y, const double *t, int D, int normalized);
double ae_ref_cos_row(const double *a, const double *b, int D);

// The tests' one attention reference, in double. Query t (position pos0 + t), head h: softmax
// over the keys j = lo..pos0 + t (lo = pos0 + t − window + 1 when window > 0, else 0) of
// scale·q·k_j, plus the sink logit sinks[h] in the denominator when sinks is set, times v_j.
// Query head h reads kv head g = h / (Hq / Hkv); key j of head g is k[row·k_stride + g·dk],
// its value v[row·v_stride + g·dv], row = j % ring when ring > 0, else j. lse, when set,
// receives each row's log-sum-exp (natural log; the sink included), row t·Hq + h.
//   q: (T, Hq, dk)   out: (T, Hq, dv)   sinks: (Hq) or NULL   lse: (T·Hq) or NULL
typedef struct {
    int T, pos0, Hq, Hkv, dk, dv;
    size_t k_stride, v_stride;
    int window, ring;
    double scale;
    const double *sinks;
    double *lse;
} ae_test_attn;
void ae_test_attention(double *out, const ae_test_attn *a, const double *q, const double *k,
                       const double *v);

#endif
