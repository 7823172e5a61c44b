// 8-bit AdamW moments (ops.h, adamw8): block-wise quantisation in the spirit of Dettmers et al.
// 2022, "8-bit Optimizers via Block-wise Quantization". Shared by the cpu reference
// (cpu_train.c) and the CUDA kernel (cuda_train.cu): the code tables are built here on the host
// by one function, so both backends decode and round against the same floats.
//
// Each tensor's moments are cut into blocks of AE_Q8_BLOCK values; a block keeps one F32 absmax
// per moment and one byte per value:
//   m: a signed float-like code, sign bit + 7-bit magnitude with 4 exponent and 3 mantissa bits
//      (FP8 e4m3's layout with subnormals, no Inf/NaN codes), normalised so that the largest
//      magnitude is 1: m = ±m_val[code & 127] · absmax(|m|). Relative step 2^-3 (rounding error
//      at most 6.25%) over a range of 2^17.9 below the block's largest |m|, then zero.
//   v: stored as sqrt(v) (halving v's dynamic range in log terms) in an unsigned code of 4
//      exponent and 4 mantissa bits normalised the same way: v = (v_val[code] · absmax(sqrt v))².
//      Relative step 2^-4 on sqrt(v) (v within about 6.3%) over a range of 2^18.9 in sqrt(v),
//      2^37.9 in v. A non-zero v never rounds to code 0: it takes the smallest non-zero code, so
//      the update's denominator sqrt(v) + eps is never zeroed (it is overestimated instead, which
//      only shrinks that value's step).
// Why not a linear code: v spans many decades within a block (squares of gradients), and m's
// small entries next to a large one would all round to zero. Why these two codes over Dettmers'
// dynamic tree code: same byte, a range as wide where it matters, and a decode that is one table
// look-up and one product on both backends. Rounding is to the code nearest to the value times
// the block's 1/absmax (ties up; the reciprocal rounded once per block, so a value costs a
// product, not a division), by comparisons against the midpoints between neighbouring codes,
// so it is exact and identical on every backend. The update itself (ae_q8_adam) is adamw's
// with the bias corrections as products by their reciprocals: one division a value instead of
// three (the kernel is bound by its arithmetic, not by its bytes: bench/bench_optim.c).
#ifndef AE_BACKEND_ADAM8_H
#define AE_BACKEND_ADAM8_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/ops.h"

#ifdef __CUDACC__
#define AE_Q8_HD __host__ __device__ __forceinline__
#else
#define AE_Q8_HD static inline
#endif
// Products and quotients rounded once on both sides (no FMA contraction on the device).
#ifdef __CUDA_ARCH__
#define AE_Q8_MUL(a, b) __fmul_rn(a, b)
#define AE_Q8_DIV(a, b) __fdiv_rn(a, b)
#define AE_Q8_ADD(a, b) __fadd_rn(a, b)
#define AE_Q8_SUB(a, b) __fsub_rn(a, b)
#define AE_Q8_SQRT(x) __fsqrt_rn(x)
#else
#define AE_Q8_MUL(a, b) ((a) * (b))
#define AE_Q8_DIV(a, b) ((a) / (b))
#define AE_Q8_ADD(a, b) ((a) + (b))
#define AE_Q8_SUB(a, b) ((a) - (b))
#define AE_Q8_SQRT(x) sqrtf(x)
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define AE_Q8_BLOCK 256 // values per quantisation block (one absmax per moment each)

// Blocks (absmax values per moment) of a tensor of n values.
AE_Q8_HD size_t ae_q8_blocks(size_t n) { return (n + AE_Q8_BLOCK - 1) / AE_Q8_BLOCK; }

// The two codes: values in increasing order (val[0] = 0, last = 1) and the midpoints between
// neighbours, mid[k] = (val[k] + val[k + 1]) / 2 in float.
typedef struct {
    float m_val[128]; // magnitudes of m's code (bit 7 is the sign)
    float m_mid[127];
    float v_val[256]; // sqrt(v)'s code
    float v_mid[255];
} ae_q8_code;

void ae_q8_code_init(ae_q8_code *c);

// The index of the code nearest to u >= 0 (ties: the larger): the number of midpoints <= u.
// mid: (n_mid) ascending. u above the last code gives the last; NaN gives 0. The definition:
// the encoders use ae_q8_nearest_guess (below), which test_optim8 checks against this.
AE_Q8_HD int ae_q8_nearest(const float *mid, int n_mid, float u) {
    int lo = 0, hi = n_mid;
    while (lo < hi) {
        int h = (lo + hi) >> 1;
        if (mid[h] <= u) lo = h + 1;
        else hi = h;
    }
    return lo;
}

// The largest magnitude of a code with mbits mantissa bits and a 4-bit exponent (adam8.c's
// code_magnitude(2^(mbits+4) − 1)): (2^(mbits+1) − 1)·2^14. m: 245760, sqrt(v): 507904.
#define AE_Q8_TOP(mbits) ((float)(((2 << (mbits)) - 1) << 14))

// ae_q8_nearest's index (the number of midpoints <= u), found from a guess instead of a binary
// search: k, the code whose magnitude u·top truncates to, read off the float bits of u·top
// (below 2^(mbits+1) the magnitudes are the integers 0, 1, ...; above, exponent e and mantissa
// f give index (e − mbits + 1)·2^mbits + f), then the answer is k + (mid[k] <= u): one
// comparison. Why one is enough: between code k's value and the next code's lies exactly one
// midpoint, mid[k], so for the exact truncation k the answer is k or k + 1. The product's
// rounding (2^-24 relative) can move the truncation by one only where u·top is that close to a
// code's magnitude, i.e. u next to a code value, half a code step (>= 2^-5 relative) from any
// midpoint, and there the one comparison still lands on that code: truncated one below, mid[k]
// (the midpoint under the code) is <= u and adds one; truncated onto it, mid[k] (above) is not.
// test_optim8 checks it for every float in [0, 1.5] of both codes (2^31 values; the encoders'
// u is at most 1 up to rounding) and near every midpoint and code value. No loops: the same
// instructions for every value on the GPU.
// NaN gives 0, as ae_q8_nearest; u·top at or above the last code's magnitude gives n_mid.
AE_Q8_HD int ae_q8_nearest_guess(const float *mid, int n_mid, int mbits, float u) {
    const float x = u * AE_Q8_TOP(mbits);
    if (!(x < AE_Q8_TOP(mbits))) return u != u ? 0 : n_mid; // NaN compares false
    int k;
    if (x < (float)(2 << mbits)) {
        k = (int)x;
    } else {
        union {
            float f;
            uint32_t u;
        } b = {x};
        const int e = (int)(b.u >> 23) - 127 - mbits + 1, f = (int)(b.u >> (23 - mbits)) & ((1 << mbits) - 1);
        k = (e << mbits) + f;
    }
    return k + (mid[k] <= u); // k <= n_mid − 1 here: x is below the last code's magnitude
}

// The encoders' scale of a block whose absmax is amax: 1/amax rounded once (0 for amax 0 or
// NaN): a value x is coded as the code nearest to |x|·inv (one product a value; the quotient
// |x|/amax would be a division a value).
AE_Q8_HD float ae_q8_inv(float amax) { return amax > 0.0f ? AE_Q8_DIV(1.0f, amax) : 0.0f; }

// m's byte for x given its block's inv = ae_q8_inv(absmax) (absmax >= |x|; inv 0 gives 0).
AE_Q8_HD uint8_t ae_q8_encode_m(const ae_q8_code *c, float x, float inv) {
    if (!(inv > 0.0f)) return 0;
    float ax = x < 0.0f ? -x : x;
    int k = ae_q8_nearest_guess(c->m_mid, 127, 3, AE_Q8_MUL(ax, inv));
    return (uint8_t)(k | (x < 0.0f && k ? 0x80 : 0));
}

// sqrt(v)'s byte for s = sqrt(v) given inv = ae_q8_inv of the block's largest s (never 0 for
// s > 0).
AE_Q8_HD uint8_t ae_q8_encode_v(const ae_q8_code *c, float s, float inv) {
    if (!(inv > 0.0f)) return 0;
    int k = ae_q8_nearest_guess(c->v_mid, 255, 4, AE_Q8_MUL(s, inv));
    return (uint8_t)(k == 0 && s > 0.0f ? 1 : k);
}

AE_Q8_HD float ae_q8_decode_m(const ae_q8_code *c, uint8_t b, float amax) {
    float x = AE_Q8_MUL(c->m_val[b & 127], amax);
    return (b & 0x80) ? -x : x;
}

// sqrt(v) of byte b (v is its square).
AE_Q8_HD float ae_q8_decode_v(const ae_q8_code *c, uint8_t b, float amax) {
    return AE_Q8_MUL(c->v_val[b], amax);
}

// The scalars of one adamw8 step (ops.h), formed once on the host in float: omb = 1 − β and
// ibc = 1 / bc, so that a value's update multiplies by the bias corrections (one division a
// value, in the step itself, instead of three).
typedef struct {
    float lr, b1, omb1, b2, omb2, eps, wd, gs, ibc1, ibc2;
} ae_q8_step;

AE_Q8_HD ae_q8_step ae_q8_step_of(const ae_adamw_args *a) {
    ae_q8_step k;
    k.lr = a->lr, k.b1 = a->beta1, k.omb1 = 1.0f - a->beta1, k.b2 = a->beta2;
    k.omb2 = 1.0f - a->beta2, k.eps = a->eps, k.wd = a->weight_decay, k.gs = a->gscale;
    k.ibc1 = AE_Q8_DIV(1.0f, a->bc1), k.ibc2 = AE_Q8_DIV(1.0f, a->bc2);
    return k;
}

// One value of the adamw8 step, each operation rounded once, the same on both backends:
//   g' = g·gs;  m = β1·m + (1−β1)·g';  v = β2·v + ((1−β2)·g')·g';
//   w −= lr·((m·ibc1) / (sqrt(v·ibc2) + eps) + wd·w)
// 1 when the new w or v is Inf or NaN.
AE_Q8_HD int ae_q8_adam(const ae_q8_step *k, float *w, float *m, float *v, float g) {
    const float gj = AE_Q8_MUL(g, k->gs);
    *m = AE_Q8_ADD(AE_Q8_MUL(k->b1, *m), AE_Q8_MUL(k->omb1, gj));
    *v = AE_Q8_ADD(AE_Q8_MUL(k->b2, *v), AE_Q8_MUL(AE_Q8_MUL(k->omb2, gj), gj));
    const float mhat = AE_Q8_MUL(*m, k->ibc1), vhat = AE_Q8_MUL(*v, k->ibc2);
    const float upd = AE_Q8_ADD(AE_Q8_DIV(mhat, AE_Q8_ADD(AE_Q8_SQRT(vhat), k->eps)),
                                AE_Q8_MUL(k->wd, *w));
    *w = AE_Q8_SUB(*w, AE_Q8_MUL(k->lr, upd));
    return !isfinite(*w) || !isfinite(*v);
}

#ifdef __cplusplus
}
#endif

#endif
