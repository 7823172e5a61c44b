// Absorbed-MLA decode preparation on the GPU (mla_decode_prep, backend/ops.h): in one launch, for
// each new token t (one block per token),
//   kv[t, 0:R]     = rmsnorm(kv[t, 0:R]) ⊙ w            (in place: the latent of the cache row)
//   kv[t, R:R+dr]  = rope(kv[t, R:R+dr]) at pos[t]      (in place: the shared rope key)
//   qt[t, h, R:R+dr] = rope(q[t, h, dn:dn+dr]) at pos[t] for every head h
// which replaces an rmsnorm, two ropes and a copy_rows (four launches) per MLA layer and token.
// The arithmetic is that of the separate kernels: the sum of squares in fp32 (per-thread
// partials, warp and block trees), r = 1/sqrt(mean + eps) in double, y = w · (x · r) in fp32
// (cuda_norm.cu); rope angles from the host's inv_freq table, (float)p · inv_freq in fp32,
// cos/sin in double rounded to float, the rotation without FMA contraction (cuda_rope.cu).
// The three parts touch disjoint values, so their order inside the block does not matter.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda_internal.h"
#include "backend/cuda_mla.h"

namespace {

constexpr int kTab = 256; // inv_freq values passed by parameter (dr <= 512)
constexpr int kThreads = 256;

struct PrepFreq {
    float f[kTab];
};

// kv: (T, ldkv) [c (R) | kr (dr)];  q: (T, H, dn + dr);  qt: (T, H, R + dr);  w: (R);  pos: (T)
template <typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
k_mla_prep(TX *kv, const TX *q, TX *qt, const TW *w, const int32_t *pos, int H, int R, int dr,
           int dn, int64_t ldkv, float eps, double theta, int interleaved, PrepFreq tab) {
    extern __shared__ float2 cs[]; // (dr/2) (cos, sin) of this token's angles
    __shared__ float part[kThreads / 32];
    const int t = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int half = dr / 2;
    const float p = (float)pos[t];
    for (int i = tid; i < half; i += kThreads) {
        const float inv = i < kTab ? tab.f[i] : (float)(1.0 / pow(theta, (double)(2 * i) / dr));
        const float ang = __fmul_rn(p, inv);
        double s, c;
        sincos((double)ang, &s, &c);
        cs[i] = make_float2((float)c, (float)s);
    }
    // rmsnorm of the latent: sum of squares (fp32), then r in double as cpu_norm.c
    TX *row = kv + (size_t)t * ldkv;
    float ss = 0.0f;
    for (int d = tid; d < R; d += kThreads) {
        const float x = ldf(row + d);
        ss += x * x;
    }
    ss = warp_sum(ss);
    if (lane == 0) part[warp] = ss;
    __syncthreads(); // also: the (cos, sin) table is complete
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < kThreads / 32; i++) tot += part[i];
    const float r = (float)(1.0 / sqrt((double)tot / R + (double)eps));
    for (int d = tid; d < R; d += kThreads)
        stf(row + d, __fmul_rn(ldf(w + d), __fmul_rn(ldf(row + d), r)));
    // rope: pair i of vector v (v = -1: the shared key; v = h: head h's q_rope into qt)
    const int ia_mul = interleaved ? 2 : 1, ib_add = interleaved ? 1 : half;
    const int pairs = (H + 1) * half;
    for (int k = tid; k < pairs; k += kThreads) {
        const int v = k / half - 1, i = k % half;
        const int ia = ia_mul * i, ib = ia_mul * i + ib_add;
        const TX *src;
        TX *dst;
        if (v < 0) {
            src = dst = row + R;
        } else {
            src = q + ((size_t)t * H + v) * (dn + dr) + dn;
            dst = qt + ((size_t)t * H + v) * (R + dr) + R;
        }
        const float a = ldf(src + ia), b = ldf(src + ib), c = cs[i].x, s = cs[i].y;
        stf(dst + ia, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
        stf(dst + ib, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
    }
}

} // namespace

void ae_cuda_mla_decode_prep(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                             ae_ptr qt, ae_ptr w, ae_ptr pos) {
    if (cuda_failed(be)) return;
    cuda_need(kv, AE_M_FLOAT, "mla_decode_prep", "kv");
    cuda_need(q, AE_M_FLOAT, "mla_decode_prep", "q");
    cuda_need(qt, AE_M_FLOAT, "mla_decode_prep", "qt");
    cuda_need(w, AE_M_FLOAT, "mla_decode_prep", "w");
    cuda_need(pos, AE_M_I32, "mla_decode_prep", "pos");
    if (q.dtype != kv.dtype || qt.dtype != kv.dtype) {
        fprintf(stderr, "attnedit: internal error: cuda mla_decode_prep: kv, q, qt must share a "
                        "dtype (%s, %s, %s)\n", ae_dtype_name(kv.dtype), ae_dtype_name(q.dtype),
                ae_dtype_name(qt.dtype));
        abort();
    }
    if (a->T <= 0 || a->H <= 0 || a->R <= 0) return;
    const int half = a->dr / 2;
    PrepFreq tab;
    for (int i = 0; i < kTab; i++) // the expression of cpu_rope.c, evaluated by the same libm
        tab.f[i] = i < half ? (float)(1.0 / pow(a->theta, (double)(2 * i) / a->dr)) : 0.0f;
    const size_t smem = (size_t)(half > 0 ? half : 1) * sizeof(float2);
    const int il = a->mode == AE_ROPE_INTERLEAVED;
    AE_CUDA_FLOAT_DISPATCH(kv.dtype, TX, AE_CUDA_FLOAT_DISPATCH(w.dtype, TW,
        k_mla_prep<TX, TW><<<(unsigned)a->T, kThreads, smem, stream_of(be)>>>(
            (TX *)kv.data, (const TX *)q.data, (TX *)qt.data, (const TW *)w.data,
            (const int32_t *)pos.data, a->H, a->R, a->dr, a->dn, a->ldkv, a->eps, a->theta, il,
            tab)));
    cuda_check(be, cudaGetLastError(), "mla_decode_prep");
}
