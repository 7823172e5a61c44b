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
// mla_decode_absorb (k_mla_absorb, below) runs the same per-token code in the first T blocks of
// a grid whose other blocks compute the query absorption q_nope_h · Wuk_h (one launch for both).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda_internal.h"
#include "backend/cuda_gemv_core.h"
#include "backend/cuda_mla.h"
#include "backend/cuda_rope.h"

namespace {

constexpr int kThreads = 256;

// The prep of token t by one block of kThreads threads. cs: (dr/2) float2 of shared memory (the
// token's (cos, sin) table); part: kThreads / 32 floats of shared memory.
// kv: (T, ldkv) [c (R) | kr (dr)];  q: (T, H, dn + dr);  qt: (T, H, R + dr);  w: (R);  pos: (T)
template <typename TX, typename TW>
__device__ __forceinline__ void mla_prep_token(int t, float2 *cs, float *part, TX *kv, const TX *q,
                                               TX *qt, const TW *w, const int32_t *pos, int H,
                                               int R, int dr, int dn, int64_t ldkv, float eps,
                                               double theta, int interleaved, const RopeFreq &tab) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int half = dr / 2;
    const float p = (float)pos[t];
    for (int i = tid; i < half; i += kThreads) cs[i] = rope_cs(tab, p, i, dr, theta);
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

template <typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
k_mla_prep(TX *kv, const TX *q, TX *qt, const TW *w, const int32_t *pos, int H, int R, int dr,
           int dn, int64_t ldkv, float eps, double theta, int interleaved, RopeFreq tab) {
    extern __shared__ float2 cs[]; // (dr/2) (cos, sin) of this token's angles
    __shared__ float part[kThreads / 32];
    mla_prep_token<TX, TW>((int)blockIdx.x, cs, part, kv, q, qt, w, pos, H, R, dr, dn, ldkv, eps,
                           theta, interleaved, tab);
}

// ---- prep + query absorption in one launch (mla_decode_absorb) ----------------------------------
//
// Blocks 0 .. T−1 run the prep of token blockIdx.x (tiny and latency-bound: first in the grid, so
// it starts with the first wave and ends under the weight stream); the other blocks compute
//   qt[t, h, n0 .. n0+63] = Σ_j q[t, h, j] · Wuk_h[j, n0 .. n0+63]      (j < dn, all T tokens)
// for block (head h, 64-column slice n0), the weights streamed once: thread (cg, ks) =
// (tid % 8, tid / 8) owns 8 consecutive columns (one 16-byte load a row, a warp reads four
// 128-byte row segments) and rows ks, ks + 32, ... (kAbsU loads in flight before any is used);
// the 32 partial sums of a column meet in shared memory and are added in slice order
// (deterministic). 32 heads x 128 x 512 bf16 (4 MiB) are 256 blocks of 256 threads, 4 loads a
// thread: the whole weight set in flight in about one wave. The two parts touch disjoint values
// (prep: the kv rows, q's rope part, qt's rope part; absorption: q's nope part, qt's latent part).
constexpr int kAbsCols = 64, kAbsCG = kAbsCols / 8, kAbsKS = kThreads / kAbsCG, kAbsU = 4;
constexpr int kAbsMaxDn = 256, kAbsMaxT = 8;

template <int MM>
__device__ __forceinline__ void mla_absorb_slice(int blk, float (*xs)[kAbsMaxDn], float *red,
                                                 bf16 *qt, const bf16 *q, const bf16 *wuk,
                                                 int64_t sw, int T, int H, int R, int dr, int dn) {
    const int tid = threadIdx.x, slices = (R + kAbsCols - 1) / kAbsCols;
    const int h = blk / slices, n_base = (blk % slices) * kAbsCols;
    const int cg = tid % kAbsCG, ks = tid / kAbsCG, n0 = n_base + 8 * cg;
    const int dq = dn + dr, Cd = R + dr;
    // q_nope_h of every token as fp32 (rows t >= T are zero: MM rounds T up)
    for (int i = tid; i < MM * dn; i += kThreads) {
        const int t = i / dn, j = i % dn;
        xs[t][j] = t < T ? __bfloat162float(q[((size_t)t * H + h) * dq + j]) : 0.0f;
    }
    __syncthreads();
    float acc[MM][8];
#pragma unroll
    for (int m = 0; m < MM; m++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[m][e] = 0.0f;
    const bf16 *wh = wuk + (int64_t)h * sw + n0; // (dn, R) rows, this thread's 8 columns
    if (n0 < R) { // R % 8 == 0: a thread's 8 columns are whole
        for (int j0 = ks; j0 < dn; j0 += kAbsU * kAbsKS) {
            uint4 wv[kAbsU];
#pragma unroll
            for (int u = 0; u < kAbsU; u++) {
                const int j = j0 + u * kAbsKS;
                wv[u] = j < dn ? ld_weights16(wh + (int64_t)j * R) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < kAbsU; u++) {
                const int j = j0 + u * kAbsKS;
                if (j >= dn) break;
                const uint32_t wr[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
#pragma unroll
                for (int m = 0; m < MM; m++) {
                    const float xv = xs[m][j];
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        acc[m][2 * e] = fmaf(xv, __uint_as_float(wr[e] << 16), acc[m][2 * e]);
                        acc[m][2 * e + 1] =
                            fmaf(xv, __uint_as_float(wr[e] & 0xffff0000u), acc[m][2 * e + 1]);
                    }
                }
            }
        }
    }
    // column c of the slice: partial of row slice ks at red[ks·kAbsCols + c]
#pragma unroll
    for (int m = 0; m < MM; m++) {
        if (m >= T) break;
        if (m > 0) __syncthreads(); // red of the previous token has been read
#pragma unroll
        for (int e = 0; e < 8; e++) red[ks * kAbsCols + 8 * cg + e] = acc[m][e];
        __syncthreads();
        const int n = n_base + tid;
        if (tid < kAbsCols && n < R) {
            float sum = 0.0f;
            for (int k = 0; k < kAbsKS; k++) sum += red[k * kAbsCols + tid];
            qt[((size_t)m * H + h) * Cd + n] = __float2bfloat16_rn(sum);
        }
    }
}

// kv, q, qt: bf16 act;  w: bf16 (R);  wuk: bf16, head h's (dn, R) block at wuk + h·sw
template <int MM>
__global__ void __launch_bounds__(kThreads)
k_mla_absorb(bf16 *kv, const bf16 *q, bf16 *qt, const bf16 *w, const bf16 *wuk, int64_t sw,
             const int32_t *pos, int T, int H, int R, int dr, int dn, int64_t ldkv, float eps,
             double theta, int interleaved, RopeFreq tab) {
    __shared__ float2 cs[kRopeTab];
    __shared__ float part[kThreads / 32];
    __shared__ float xs[MM][kAbsMaxDn];
    __shared__ float red[kThreads * 8];
    if ((int)blockIdx.x < T) {
        mla_prep_token<bf16, bf16>((int)blockIdx.x, cs, part, kv, q, qt, w, pos, H, R, dr, dn,
                                   ldkv, eps, theta, interleaved, tab);
        return;
    }
    mla_absorb_slice<MM>((int)blockIdx.x - T, xs, red, qt, q, wuk, sw, T, H, R, dr, dn);
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
    const RopeFreq tab = rope_freq(a->theta, a->dr);
    const size_t smem = (size_t)(half > 0 ? half : 1) * sizeof(float2);
    const int il = a->mode == AE_ROPE_INTERLEAVED;
    AE_CUDA_FLOAT_DISPATCH(kv.dtype, TX, AE_CUDA_FLOAT_DISPATCH(w.dtype, TW,
        k_mla_prep<TX, TW><<<(unsigned)a->T, kThreads, smem, stream_of(be)>>>(
            (TX *)kv.data, (const TX *)q.data, (TX *)qt.data, (const TW *)w.data,
            (const int32_t *)pos.data, a->H, a->R, a->dr, a->dn, a->ldkv, a->eps, a->theta, il,
            tab)));
    cuda_check(be, cudaGetLastError(), "mla_decode_prep");
}

// 1 when k_mla_absorb takes these arguments: bf16 tensors, decode-sized T, the weights in whole
// aligned 16-byte chunks, dims within its shared arrays.
static int absorb_fits(const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q, ae_ptr qt, ae_ptr w,
                       ae_ptr wuk, int64_t sw) {
    const int bf = kv.dtype == AE_DT_BF16 && q.dtype == AE_DT_BF16 && qt.dtype == AE_DT_BF16 &&
                   w.dtype == AE_DT_BF16 && wuk.dtype == AE_DT_BF16;
    return bf && a->T <= kAbsMaxT && a->dn <= kAbsMaxDn && a->dr / 2 <= kRopeTab && a->R % 8 == 0 &&
           sw % 8 == 0 && cuda_aligned16(wuk.data);
}

void ae_cuda_mla_decode_absorb(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv,
                               ae_ptr q, ae_ptr qt, ae_ptr w, ae_ptr wuk, int64_t sw,
                               ae_ptr pos) {
    if (cuda_failed(be)) return;
    cuda_need(wuk, AE_M_BF16, "mla_decode_absorb", "wuk");
    if (a->T <= 0 || a->H <= 0 || a->R <= 0) return;
    if (!absorb_fits(a, kv, q, qt, w, wuk, sw)) { // the ops it fuses
        ae_mla_absorb_ops(be, a, kv, q, qt, w, wuk, sw, pos);
        return;
    }
    cuda_need(pos, AE_M_I32, "mla_decode_absorb", "pos");
    const RopeFreq tab = rope_freq(a->theta, a->dr);
    const int il = a->mode == AE_ROPE_INTERLEAVED;
    const unsigned blocks = (unsigned)(a->T + a->H * ((a->R + kAbsCols - 1) / kAbsCols));
#define ABSORB_CASE(MM)                                                                           \
    k_mla_absorb<MM><<<blocks, kThreads, 0, stream_of(be)>>>(                                     \
        (bf16 *)kv.data, (const bf16 *)q.data, (bf16 *)qt.data, (const bf16 *)w.data,             \
        (const bf16 *)wuk.data, sw, (const int32_t *)pos.data, a->T, a->H, a->R, a->dr, a->dn,    \
        a->ldkv, a->eps, a->theta, il, tab)
    if (a->T == 1) ABSORB_CASE(1);
    else if (a->T == 2) ABSORB_CASE(2);
    else if (a->T <= 4) ABSORB_CASE(4);
    else ABSORB_CASE(8);
#undef ABSORB_CASE
    cuda_check(be, cudaGetLastError(), "mla_decode_absorb");
}
