// Attention backward on CUDA (the `attention_bwd` op; semantics in ae_attn_args and the backward
// section of backend/ops.h; the fp32 reference is ae_cpu_attention_bwd in cpu_attention.c).
// q, k, v BF16 (act); dout, dq, dk, dv F32 or BF16 (each independently; dk and dv may be the
// same memory: absorbed MLA); sinks, dsinks F32.
//
// Flash-style: probabilities are recomputed from q and k, never stored as T×T. For one query
// row (t, h), in log2 units (s2 = scale·log2(e)·q·k):
//   lse2 = log2(Σ_j exp2(s2_j) [+ exp2(sink2)]),  p_j = exp2(s2_j − lse2)
//   D = Σ_j p_j dp_j with dp_j = dout·v_j  (= dout·out: with a saved forward, out and
//                                           ae_attn_args.lse, D = dout·out and lse2 is given)
//   ds_j = p_j (dp_j − D);  dq = scale Σ_j ds_j k_j;  dk_j += scale Σ_rows ds_j q;
//   dv_j += Σ_rows p_j dout;  dsink_h += Σ_t −p_sink D
// (dk_j, dv_j = instead of += with ae_attn_args.dkv_set: the tensor-core kernels store without
// loading when pos0 == 0, else zero_dkv clears the rows first.)
//
// Which kernels run (ae_cuda_attention_bwd, at the end of this file):
//   Fast path, tensor cores (cuda_attention_bwd_tc.cu: the forward flash kernel with an lse2
//     output unless the forward is saved, D per row, then split: a dK/dV kernel per key tile
//     and a dQ kernel per query tile (7 products); AE_CUDA_ATTN_BWD=fused: one kernel per key
//     tile computing dK, dV and adding dQ in key-tile order (5 products, but 3x slower on the
//     H200: its blocks wait for the ordered additions; see path_from_env); all bf16
//     mma.sync with fp32 accumulation; on compute capability 9.0 the split kernels are Hopper
//     wgmma ones for (dk, dv) = (128, 128), (192, 128): cuda_attention_bwd_wgmma.cu, see
//     pick_kernels; AE_CUDA_ATTN_BWD=wgfused: its dK/dV kernel also adding dQ over key tiles in
//     a fixed order, one kernel) when AE_CUDA_ATTN_BWD is not "ref" and
//       (dk, dv) is (32, 32), (64, 64), (128, 128) or (192, 128);  Hq % Hkv == 0;
//       no ring buffer (ring == 0, or ring >= pos0 + T: then every position is its own row);
//       dk and dv are different memory;  q, k, v 16-byte aligned;  k_stride, v_stride
//       multiples of 8;  the kernels' shared memory fits the device.
//     Any pos0, window (0, smaller or larger than T) and sinks; dout, dq, dk, dv F32 or BF16.
//   Reference path, CUDA cores (this file), for everything else: ring buffers, absorbed MLA
//     (dk == dv memory, 576/512, 288/256), other head dims, odd strides or alignment.
//
// Reference path: two kernels, each the sole writer of its outputs, every sum in a fixed order
// (no atomics):
//   Q pass (one block per query row): loop A over the row's keys computes the online max / sum
//     and the unnormalised Σ exp2(s2 − m) dp (rescaled like the forward's accumulator), giving
//     lse2 and D; loop B recomputes p and dp and forms dq. lse2, D and the row's sink gradient
//     go to a scratch buffer.
//   KV pass (one block per K/V storage row, a ring slot or a position, and kv head): the
//     contributions of every (query, head of the group) that sees a key stored in that row are
//     summed into dk, dv. 4 warps take the (query, head) pairs in a fixed interleaving, each
//     into its own shared accumulator; the 4 accumulators are added in warp order. When dk and
//     dv are the same memory (absorbed MLA: v the first dv values of k's rows), one block owns
//     a whole storage row, every kv head in turn, and writes dk, then (after a barrier) dv.
//   With a saved forward (out and a->lse given) loop A is skipped: k_attn_bwd_delta
//     (cuda_attention_bwd_tc.cu) computes D = dout·out and the sink gradients first (then D
//     carries out's bf16 rounding: equal to the recomputing call within rounding, not bit for
//     bit; the tensor-core path gives the same bits either way, see cuda_attention_bwd_tc.cu).
// Both paths: dsinks, one thread per head adds the rows' sink gradients in token order.
// These kernels take any head dims, strides, alignment, ring and window; they work on CUDA
// cores, one row at a time. AE_CUDA_ATTN_BWD=ref forces them (tests/test_cuda_grad_ops.c runs
// every case both ways).
// ae_cuda_attn_bwd_kernels (backend/cuda.h) names the kernels a call would run: the dispatcher's
// own decision (pick_kernels), for tests and benchmarks.
#include <stdlib.h>
#include <string.h>

#include "backend/cuda.h"
#include "backend/cuda_attention_bwd.h"

namespace {

constexpr int kRefThreads = 128, kRefTile = 128, kWarps = kRefThreads / 32;

struct bwd_params {
    const bf16 *q, *k, *v;
    const void *dout;
    void *dq, *dk, *dv;
    int dout_bf, dq_bf, dk_bf, dv_bf;
    const float *sinks; // (Hq) natural-log units, or null
    float *lse2, *delta, *dsink_row; // (T·Hq) scratch; dsink_row null when no dsinks
    int saved; // lse2 (the op's a->lse), delta and dsink_row are given: the Q pass skips loop A
    int T, pos0, Hq, Hkv, G, dk_dim, dv_dim;
    int k_stride, v_stride, window, ring;
    float scale, scale_log2;
};


// ---- Q pass -------------------------------------------------------------------------------------
// Block (row = t·Hq + h). Shared: q, dout of the row (fp32), dq accumulator, the tile's scaled
// scores s2 and dp values, storage rows of the tile's keys.
__global__ void __launch_bounds__(kRefThreads) k_attn_bwd_ref_q(const bwd_params p) {
    extern __shared__ float sm[];
    float *qs = sm, *dos = qs + p.dk_dim, *acc = dos + p.dv_dim, *sc = acc + p.dk_dim;
    float *dp = sc + kRefTile;
    int *ri = (int *)(dp + kRefTile);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int row = blockIdx.x, t = row / p.Hq, h = row % p.Hq, g = h / p.G;
    const int pos = p.pos0 + t, lo = attn_lo(pos, p.window), hi = pos + 1;
    const bf16 *qr = p.q + (size_t)row * p.dk_dim;
    for (int d = tid; d < p.dk_dim; d += kRefThreads) {
        qs[d] = __bfloat162float(qr[d]);
        acc[d] = 0.0f;
    }
    for (int d = tid; d < p.dv_dim; d += kRefThreads)
        dos[d] = ld_any(p.dout, p.dout_bf, (size_t)row * p.dv_dim + d);
    const bf16 *kh = p.k + (size_t)g * p.dk_dim, *vh = p.v + (size_t)g * p.dv_dim;

    // s2 and dp of keys j0 .. j0 + n − 1 into sc, dp (a warp per key)
    auto scores = [&](int j0, int n) {
        for (int jj = tid; jj < n; jj += kRefThreads) ri[jj] = (int)attn_row(j0 + jj, p.ring);
        __syncthreads(); // ri (and, the first time, qs, dos) ready
        for (int jj = warp; jj < n; jj += kWarps) {
            const bf16 *kr = kh + (size_t)ri[jj] * p.k_stride;
            const bf16 *vr = vh + (size_t)ri[jj] * p.v_stride;
            float s = 0.0f, e = 0.0f;
            for (int d = lane; d < p.dk_dim; d += 32) s += qs[d] * __bfloat162float(kr[d]);
            for (int d = lane; d < p.dv_dim; d += 32) e += dos[d] * __bfloat162float(vr[d]);
            s = warp_sum(s);
            e = warp_sum(e);
            if (lane == 0) {
                sc[jj] = s * p.scale_log2;
                dp[jj] = e;
            }
        }
        __syncthreads();
    };

    // loop A (unless saved): running max m, sum l, and a = Σ exp2(s2 − m) dp (every thread
    // computes the same values in the same order from shared memory)
    float m = -INFINITY, l = 0.0f, a = 0.0f;
    for (int j0 = lo; j0 < (p.saved ? lo : hi); j0 += kRefTile) {
        const int n = hi - j0 < kRefTile ? hi - j0 : kRefTile;
        scores(j0, n);
        float tmax = -INFINITY;
        for (int jj = 0; jj < n; jj++) tmax = fmaxf(tmax, sc[jj]);
        const float mn = fmaxf(m, tmax), al = exp2f(m - mn); // m = −inf first: al = 0
        float ps = 0.0f, pa = 0.0f;
        for (int jj = 0; jj < n; jj++) {
            const float e = exp2f(sc[jj] - mn);
            ps += e;
            pa += e * dp[jj];
        }
        l = l * al + ps;
        a = a * al + pa;
        m = mn;
        __syncthreads(); // sc, dp, ri are rewritten by the next tile
    }
    // every row sees at least its own key: m is finite, l >= 1
    float lse2, D;
    const int has_sink = p.sinks != nullptr;
    const float sink2 = has_sink ? p.sinks[h] * AE_ATTN_LOG2E : -INFINITY;
    if (p.saved) {
        lse2 = p.lse2[row];
        D = p.delta[row];
    } else if (has_sink) {
        const float mf = fmaxf(m, sink2), f = exp2f(m - mf);
        const float den = l * f + exp2f(sink2 - mf);
        lse2 = mf + log2f(den);
        D = a * f / den;
    } else {
        lse2 = m + log2f(l);
        D = a / l;
    }

    // loop B: ds_j = p_j (dp_j − D);  acc = Σ ds_j k_j
    for (int j0 = lo; j0 < hi; j0 += kRefTile) {
        const int n = hi - j0 < kRefTile ? hi - j0 : kRefTile;
        scores(j0, n);
        for (int jj = tid; jj < n; jj += kRefThreads)
            sc[jj] = exp2f(sc[jj] - lse2) * (dp[jj] - D);
        __syncthreads();
        for (int d = tid; d < p.dk_dim; d += kRefThreads) {
            float x = acc[d];
            for (int jj = 0; jj < n; jj++)
                x += sc[jj] * __bfloat162float(kh[(size_t)ri[jj] * p.k_stride + d]);
            acc[d] = x;
        }
        __syncthreads();
    }
    for (int d = tid; d < p.dk_dim; d += kRefThreads)
        st_any(p.dq, p.dq_bf, (size_t)row * p.dk_dim + d, p.scale * acc[d]);
    if (tid == 0 && !p.saved) {
        p.lse2[row] = lse2;
        p.delta[row] = D;
        if (p.dsink_row) p.dsink_row[row] = has_sink ? -exp2f(sink2 - lse2) * D : 0.0f;
    }
}

// ---- KV pass ------------------------------------------------------------------------------------
// Block (storage row). Shared: k and v of the current position (fp32), and per warp an
// accumulator of dk and dv values.
__global__ void __launch_bounds__(kRefThreads) k_attn_bwd_ref_kv(const bwd_params p) {
    extern __shared__ float sm[];
    const int DK = p.dk_dim, DV = p.dv_dim;
    float *ks = sm, *vs = ks + DK, *gk = vs + DV, *gv = gk + kWarps * DK; // gk, gv: [warp][d]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int row = blockIdx.x, S = p.pos0 + p.T;
    const int jmin = attn_lo(p.pos0, p.window); // no query sees a key before this position
    int j0 = row;
    const int step = p.ring > 0 ? p.ring : S;
    if (j0 < jmin) j0 += (jmin - j0 + step - 1) / step * step;
    float *gkw = gk + warp * DK, *gvw = gv + warp * DV;

    // grid.y == Hkv: this block's kv head only; grid.y == 1 (dk == dv): every kv head in turn
    const int kh_begin = gridDim.y > 1 ? blockIdx.y : 0;
    const int kh_end = gridDim.y > 1 ? blockIdx.y + 1 : p.Hkv;
    for (int kh = kh_begin; kh < kh_end; kh++) {
        for (int d = lane; d < DK; d += 32) gkw[d] = 0.0f;
        for (int d = lane; d < DV; d += 32) gvw[d] = 0.0f;
        for (int j = j0; j < S; j += step) {
            __syncthreads(); // the previous position's ks, vs are no longer read
            for (int d = tid; d < DK; d += kRefThreads)
                ks[d] = __bfloat162float(p.k[(size_t)row * p.k_stride + (size_t)kh * DK + d]);
            for (int d = tid; d < DV; d += kRefThreads)
                vs[d] = __bfloat162float(p.v[(size_t)row * p.v_stride + (size_t)kh * DV + d]);
            __syncthreads();
            // queries that see position j: positions j .. j + window − 1, i.e. tokens t0 .. t1
            const int t0 = j - p.pos0 > 0 ? j - p.pos0 : 0;
            int t1 = p.T - 1;
            if (p.window > 0 && j + p.window - 1 - p.pos0 < t1) t1 = j + p.window - 1 - p.pos0;
            const int items = (t1 - t0 + 1) * p.G;
            for (int it = warp; it < items; it += kWarps) {
                const int t = t0 + it / p.G, h = kh * p.G + it % p.G;
                const size_t r = (size_t)t * p.Hq + h;
                const bf16 *qr = p.q + r * DK;
                float s = 0.0f, e = 0.0f;
                for (int d = lane; d < DK; d += 32) s += __bfloat162float(qr[d]) * ks[d];
                for (int d = lane; d < DV; d += 32)
                    e += ld_any(p.dout, p.dout_bf, r * DV + d) * vs[d];
                s = warp_sum(s);
                e = warp_sum(e);
                const float pr = exp2f(s * p.scale_log2 - p.lse2[r]);
                const float ds = pr * (e - p.delta[r]);
                for (int d = lane; d < DV; d += 32)
                    gvw[d] += pr * ld_any(p.dout, p.dout_bf, r * DV + d);
                for (int d = lane; d < DK; d += 32) gkw[d] += ds * __bfloat162float(qr[d]);
            }
        }
        __syncthreads(); // all warps' accumulators complete
        const size_t ko = (size_t)row * p.k_stride + (size_t)kh * DK;
        for (int d = tid; d < DK; d += kRefThreads) {
            float s = 0.0f;
            for (int w = 0; w < kWarps; w++) s += gk[w * DK + d];
            st_any(p.dk, p.dk_bf, ko + d, ld_any(p.dk, p.dk_bf, ko + d) + p.scale * s);
        }
        __syncthreads(); // dk written before dv (they may be the same memory)
        const size_t vo = (size_t)row * p.v_stride + (size_t)kh * DV;
        for (int d = tid; d < DV; d += kRefThreads) {
            float s = 0.0f;
            for (int w = 0; w < kWarps; w++) s += gv[w * DV + d];
            st_any(p.dv, p.dv_bf, vo + d, ld_any(p.dv, p.dv_bf, vo + d) + s);
        }
        __syncthreads(); // accumulators are reset for the next kv head
    }
}

// dsinks[h] += Σ_t dsink_row[t·Hq + h], t in order
__global__ void k_attn_bwd_dsinks(float *dsinks, const float *dsink_row, int T, int Hq) {
    const int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= Hq) return;
    float s = 0.0f;
    for (int t = 0; t < T; t++) s += dsink_row[(size_t)t * Hq + h];
    dsinks[h] += s;
}

int set_smem(const ae_backend *be, const void *kernel, size_t bytes) {
    if (bytes > cu(be)->smem_optin) return 0;
    if (bytes > 48 * 1024)
        cuda_check(be, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)bytes), "attention_bwd");
    return 1;
}

// dsinks[h] += Σ_t dsink_row[t·Hq + h] (nothing when dsinks is null)
void sum_dsinks(const ae_backend *be, float *dsinks, const float *dsink_row, int T, int Hq) {
    if (!dsinks) return;
    k_attn_bwd_dsinks<<<(unsigned)((Hq + 127) / 128), 128, 0, stream_of(be)>>>(dsinks, dsink_row,
                                                                               T, Hq);
    cuda_check(be, cudaGetLastError(), "attention_bwd");
}


// AE_CUDA_ATTN_BWD: "ref" the CUDA-core kernels, "fused" the tensor-core kernel that adds dQ over
// key tiles in order, "split" the mma.sync split path (dK/dV, then dQ in its own kernel),
// "wgmma" the Hopper split path (cuda_attention_bwd_wgmma.cu) wherever it takes the shape
// (attn_bwd_wgmma_takes: a build without its sm_90a code is then an error, not a silent
// fallback), else split; "wgfused" the same with the Hopper fused kernel (dQ added over key
// tiles in a fixed order); unset or anything else: the default, wgmma where WGMMA_BWD_DEFAULT_ON
// and it takes the shape (with a window only where WGMMA_BWD_WINDOW_DEFAULT_ON), else split. Split rather than fused: measured on the
// H200 (bench_attn --bwd-paths, 2026-11-29), the fused kernel ran at 0.32–0.34x split's speed (47
// against 135–147 TFLOP/s: its blocks wait on the ordered dQ additions), though it does 5
// products instead of 7.
enum bwd_path { BWD_DEFAULT, BWD_REF, BWD_SPLIT, BWD_FUSED, BWD_WGMMA, BWD_WGFUSED };
bwd_path path_from_env() {
    const char *env = getenv("AE_CUDA_ATTN_BWD");
    if (env && strcmp(env, "ref") == 0) return BWD_REF;
    if (env && strcmp(env, "fused") == 0) return BWD_FUSED;
    if (env && strcmp(env, "split") == 0) return BWD_SPLIT;
    if (env && strcmp(env, "wgmma") == 0) return BWD_WGMMA;
    if (env && strcmp(env, "wgfused") == 0) return BWD_WGFUSED;
    return BWD_DEFAULT;
}

// The default takes the Hopper kernels (compute capability 9.0, dk/dv 128/128 and 192/128)
// when 1: without a window since the GPU tests and bench_attn --bwd-paths on an H200
// (2026-11-30: 1.42-1.51x split), and with a sliding window too where
// WGMMA_BWD_WINDOW_DEFAULT_ON is 1 (the same run, GateSWA's W 1024 at T 4096: 1.418 -> 1.018 ms
// at 1.7B heads, 2.565 -> 1.844 ms at 8B, 1.39x, dq bit-identical to split's there).
#ifndef WGMMA_BWD_DEFAULT_ON
#define WGMMA_BWD_DEFAULT_ON 1
#endif
#ifndef WGMMA_BWD_WINDOW_DEFAULT_ON
#define WGMMA_BWD_WINDOW_DEFAULT_ON 1
#endif

// The backward kernels for these arguments under AE_CUDA_ATTN_BWD, on this device and build, for
// operands that meet the tensor-core path's conditions when operands_ok (see operands_ok):
// ATTN_BWD_SPLIT, _FUSED or _WGMMA after D (the tensor-core path), kBwdRef (the CUDA-core
// kernels of this file), or kBwdNoSm90a (AE_CUDA_ATTN_BWD=wgmma on a shape the Hopper kernels
// take, in a build without their sm_90a code: an error). The one decision the dispatcher and
// ae_cuda_attn_bwd_kernels share. Not decided here: whether the kernels' shared memory fits the
// device (attn_bwd_tc_run returns 0 when not, and the CUDA-core kernels run; the kernels fit on
// compute capability 8.0 and 9.0).
constexpr int kBwdRef = -1, kBwdNoSm90a = -2;
int pick_kernels(const ae_backend *be, const ae_attn_args *a, bool operands_ok) {
    const bwd_path path = path_from_env();
    const long S = (long)a->pos0 + a->T;
    if (path == BWD_REF || !operands_ok || !attn_bwd_tc_has(a->dk, a->dv) ||
        a->Hq % a->Hkv != 0 || (a->ring != 0 && a->ring < S) || a->k_stride % 8 != 0 ||
        a->v_stride % 8 != 0)
        return kBwdRef;
    if (path == BWD_FUSED) return ATTN_BWD_FUSED;
    if (path == BWD_SPLIT || !attn_bwd_wgmma_takes(be, a->dk, a->dv)) return ATTN_BWD_SPLIT;
    const int loaded = attn_bwd_wgmma_loaded(a->dk, a->dv);
    if (path == BWD_WGMMA) return loaded ? ATTN_BWD_WGMMA : kBwdNoSm90a;
    if (path == BWD_WGFUSED) return loaded ? ATTN_BWD_WGFUSED : kBwdNoSm90a;
    const int window_ok = a->window <= 0 || WGMMA_BWD_WINDOW_DEFAULT_ON;
    return WGMMA_BWD_DEFAULT_ON && window_ok && loaded ? ATTN_BWD_WGMMA : ATTN_BWD_SPLIT;
}

// The operand conditions of the tensor-core path (see the file header): dk and dv different
// memory; q, k, v 16-byte aligned.
bool operands_ok(ae_ptr dk, ae_ptr dv, ae_ptr q, ae_ptr k, ae_ptr v) {
    return dk.data != dv.data && cuda_aligned16(q.data) && cuda_aligned16(k.data) &&
           cuda_aligned16(v.data);
}

// `rows` rows of `width` bytes, `pitch` bytes apart, zeroed (all-zero bytes are 0 in F32 and
// BF16): one flat memset when the rows are contiguous, else a 2D one, leaving the padding
// between rows alone. (2D memsets over the contiguous rows of the Qwen3-1.7B MLA stage 1, H200
// 2026-12-01: 62.6k tok/s, against 64.4k with the fill kernel this replaced.)
void zero_rows(const ae_backend *be, void *x, size_t pitch, size_t width, int rows) {
    cudaStream_t s = stream_of(be);
    cuda_check(be, pitch == width ? cudaMemsetAsync(x, 0, width * rows, s)
                                  : cudaMemset2DAsync(x, pitch, 0, width, rows, s),
               "attention_bwd (zeroing dk, dv)");
}

// The key and value parts of dk's and dv's storage rows zeroed (ae_attn_args.dkv_set).
void zero_dkv(const ae_backend *be, const ae_attn_args *a, const bwd_params *p) {
    const int S = a->pos0 + a->T, rows = a->ring > 0 && a->ring < S ? a->ring : S;
    const size_t ek = p->dk_bf ? 2 : 4, ev = p->dv_bf ? 2 : 4;
    zero_rows(be, p->dk, ek * a->k_stride, ek * a->Hkv * a->dk, rows);
    zero_rows(be, p->dv, ev * a->v_stride, ev * a->Hkv * a->dv, rows);
}

// The tensor-core path, kernels `kernels` (from pick_kernels), with the reference path's
// parameters and scratch (lse2, delta, dsink_row) and the saved forward output (null:
// recomputed); dk and dv written instead of added into when dkv_set; 0 when it cannot run
// (nothing queued).
int run_fast(const ae_backend *be, const ae_attn_args *a, const bwd_params *p, const bf16 *out,
             int kernels, int dkv_set) {
    attn_bwd_tc_params tp;
    memset(&tp, 0, sizeof tp);
    tp.q = p->q, tp.k = p->k, tp.v = p->v;
    tp.dq = p->dq, tp.dk = p->dk, tp.dv = p->dv;
    tp.dq_bf = p->dq_bf, tp.dk_bf = p->dk_bf, tp.dv_bf = p->dv_bf, tp.dkv_set = dkv_set;
    tp.T = p->T, tp.pos0 = p->pos0, tp.Hq = p->Hq, tp.Hkv = p->Hkv, tp.G = p->G;
    tp.dk_dim = p->dk_dim, tp.dv_dim = p->dv_dim;
    tp.k_stride = p->k_stride, tp.v_stride = p->v_stride, tp.window = p->window;
    tp.scale = p->scale, tp.scale_log2 = p->scale_log2;
    if (kernels == kBwdNoSm90a) {
        cuda_check(be, cudaErrorInvalidDeviceFunction,
                   "attention_bwd (AE_CUDA_ATTN_BWD=wgmma|wgfused asks for the Hopper kernels, whose "
                   "sm_90a code this build lacks: CMAKE_CUDA_ARCHITECTURES must include 90a)");
        return 1;
    }
    return attn_bwd_tc_run(be, a, &tp, p->dout, p->dout_bf, out, p->lse2, p->delta,
                           p->dsink_row, (attn_bwd_kernels)kernels);
}

} // namespace

void ae_cuda_attention_bwd(const ae_backend *be, const ae_attn_args *a, ae_ptr dq, ae_ptr dk,
                           ae_ptr dv, ae_ptr dsinks, ae_ptr dout, ae_ptr out, ae_ptr q, ae_ptr k,
                           ae_ptr v) {
    if (cuda_failed(be)) return;
    const char *op = "attention_bwd";
    cuda_need(out, AE_M_BF16, op, "out");
    cuda_need(a->lse, AE_M_F32, op, "lse");
    cuda_need(q, AE_M_BF16, op, "q");
    cuda_need(k, AE_M_BF16, op, "k");
    cuda_need(v, AE_M_BF16, op, "v");
    cuda_need(dout, AE_M_FLOAT, op, "dout");
    cuda_need(dq, AE_M_FLOAT, op, "dq");
    cuda_need(dk, AE_M_FLOAT, op, "dk");
    cuda_need(dv, AE_M_FLOAT, op, "dv");
    cuda_need(a->sinks, AE_M_F32, op, "sinks");
    cuda_need(dsinks, AE_M_F32, op, "dsinks");
    if (a->T <= 0 || a->Hq <= 0 || a->Hkv <= 0) return;

    bwd_params p;
    memset(&p, 0, sizeof p);
    p.q = (const bf16 *)q.data;
    p.k = (const bf16 *)k.data;
    p.v = (const bf16 *)v.data;
    p.dout = dout.data;
    p.dq = dq.data;
    p.dk = dk.data;
    p.dv = dv.data;
    p.dout_bf = dout.dtype == AE_DT_BF16;
    p.dq_bf = dq.dtype == AE_DT_BF16;
    p.dk_bf = dk.dtype == AE_DT_BF16;
    p.dv_bf = dv.dtype == AE_DT_BF16;
    p.sinks = (const float *)a->sinks.data;
    p.T = a->T;
    p.pos0 = a->pos0;
    p.Hq = a->Hq;
    p.Hkv = a->Hkv;
    p.G = a->Hq / a->Hkv;
    p.dk_dim = a->dk;
    p.dv_dim = a->dv;
    p.k_stride = a->k_stride;
    p.v_stride = a->v_stride;
    p.window = a->window;
    p.ring = a->ring;
    p.scale = a->scale;
    p.scale_log2 = a->scale * AE_ATTN_LOG2E;

    const size_t rows = (size_t)a->T * a->Hq;
    const int want_dsinks = p.sinks && !ae_ptr_is_null(dsinks);
    p.saved = !ae_ptr_is_null(out) && !ae_ptr_is_null(a->lse);
    // scratch: delta, then dsink_row (want_dsinks), then lse2 (unless saved)
    const size_t n_scratch = rows * (1 + (size_t)want_dsinks + (size_t)!p.saved);
    float *scratch = (float *)cuda_tmp_alloc(be, sizeof(float) * n_scratch, op);
    if (!scratch) return;
    p.delta = scratch;
    p.dsink_row = want_dsinks ? scratch + rows : NULL;
    p.lse2 = p.saved ? (float *)a->lse.data : scratch + rows * (1 + (size_t)want_dsinks);
    const bf16 *saved_out = p.saved ? (const bf16 *)out.data : NULL;
    cudaStream_t s = stream_of(be);

    const int kernels = pick_kernels(be, a, operands_ok(dk, dv, q, k, v));
    // dkv_set: the tensor-core kernels' blocks write their keys when every key tile has queries
    // (pos0 == 0: each key is seen by its own query); otherwise the rows are zeroed, then added to
    const int set_by_kernels = a->dkv_set && kernels != kBwdRef && a->pos0 == 0;
    if (a->dkv_set && !set_by_kernels) zero_dkv(be, a, &p);
    if (kernels != kBwdRef && run_fast(be, a, &p, saved_out, kernels, set_by_kernels)) {
        sum_dsinks(be, want_dsinks ? (float *)dsinks.data : NULL, p.dsink_row, a->T, a->Hq);
        cuda_tmp_free(be, scratch);
        return;
    }
    if (set_by_kernels) zero_dkv(be, a, &p); // the tensor-core path did not run after all

    const size_t smem_q = sizeof(float) * (2 * (size_t)a->dk + a->dv + 2 * kRefTile) +
                          sizeof(int) * kRefTile;
    const size_t smem_kv = sizeof(float) * (size_t)(kWarps + 1) * ((size_t)a->dk + a->dv);
    if (!set_smem(be, (const void *)k_attn_bwd_ref_q, smem_q) ||
        !set_smem(be, (const void *)k_attn_bwd_ref_kv, smem_kv)) {
        cuda_check(be, cudaErrorInvalidValue, "attention_bwd (head dims too large for shared memory)");
        cuda_tmp_free(be, scratch);
        return;
    }
    if (p.saved) // D and the rows' sink gradients from the saved out (dout used as given)
        attn_bwd_delta_run(be, saved_out, p.dout, p.dout_bf, NULL, p.lse2, p.sinks, p.delta,
                           p.dsink_row, (int)rows, a->Hq, a->dv);
    k_attn_bwd_ref_q<<<(unsigned)rows, kRefThreads, smem_q, s>>>(p);
    cuda_check(be, cudaGetLastError(), op);
    const int S = a->pos0 + a->T;
    const int nstore = a->ring > 0 && a->ring < S ? a->ring : S;
    // One block per (storage row, kv head), unless dk and dv are the same memory: then the kv
    // heads of a row are done by one block in turn (dv of head g may overlap dk of another head).
    dim3 grid_kv((unsigned)nstore, dk.data == dv.data ? 1u : (unsigned)a->Hkv);
    k_attn_bwd_ref_kv<<<grid_kv, kRefThreads, smem_kv, s>>>(p);
    cuda_check(be, cudaGetLastError(), op);
    sum_dsinks(be, want_dsinks ? (float *)dsinks.data : NULL, p.dsink_row, a->T, a->Hq);
    cuda_tmp_free(be, scratch);
}

extern "C" const char *ae_cuda_attn_bwd_kernels(const ae_backend *be, const ae_attn_args *a) {
    switch (pick_kernels(be, a, true)) {
    case ATTN_BWD_SPLIT: return "split";
    case ATTN_BWD_FUSED: return "fused";
    case ATTN_BWD_WGMMA: return "wgmma";
    case ATTN_BWD_WGFUSED: return "wgfused";
    case kBwdNoSm90a: return "none (wgmma forced, the build lacks its sm_90a code)";
    default: return "ref";
    }
}
