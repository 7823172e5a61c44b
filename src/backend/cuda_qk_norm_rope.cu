// Qwen3's per-head q/k RMSNorm + RoPE in one launch (the qk_norm_rope slot; semantics in
// backend/ops.h, ae_qk_norm_rope_args): every head row of q and of k, in place, becomes
// rope(rmsnorm(row) ⊙ w). Replaces rmsnorm(q), rope(q), rmsnorm(k), rope(k): four launches.
//
// Grid: x = token, y = a group of kWarps head rows of that token (rows 0..Hq-1 are q's heads,
// Hq..Hq+Hkv-1 k's), or, from kTokenBlockMin tokens (prefill), y = 1: the block's warps loop over
// all head rows of the token (warp w: rows w, w + kWarps, ...), so the table below is computed
// once per token rather than once per group of rows (Qwen3-30B-A3B: 9 times). Block: kWarps
// warps, a warp per head row at a time. Every row's arithmetic is the same either way (the same
// bits). The block first fills a shared
// table of (cos, sin) for the rd/2 pairs of its token, exactly as cuda_rope.cu does (inv_freq
// from the host's expression of cpu_rope.c passed by parameter, the fp32 angle, cos/sin in
// double rounded to float); each warp has first read its row (lanes strided: any hd, odd or not
// a multiple of 32) into a shared fp32 row, so those loads are in flight meanwhile. Then
//   1. the row's squares, summed in fp32 per lane while reading, go through a warp tree;
//   2. r = 1 / sqrt(mean + eps) in double, as cuda_norm.cu / cpu_norm.c;
//   3. writes dims >= rd as w·(x·r), and rotates the pairs of dims < rd from the normed values
//      (y = w·(x·r) in fp32, kept unrounded), in fp32 without FMA contraction in the CPU's order.
// So the result differs from the separate ops on cuda only by not rounding the normed values to
// bf16 before the rotation (closer to the fp32 CPU reference, not farther).
//
// Prefill (M >= kTokenBlockMin) with rd = hd = 32·V (V in 2, 4, 8: Qwen3's 128 among them):
// k_qk_norm_rope_reg, a block of kRegWarps warps per token. Each warp first loads all its rows
// (up to kRegRows a pass) into registers, lane l holding dims l, l + 32, ... of each (the strided order of the kernel above,
// so the same sums and the same bits), then computes them; lane i forms row i's double-precision
// factor for the warp. The kernel above has one row's loads in flight a warp (9 rows a warp at
// Qwen3-30B-A3B's 36): one call at 4K tokens under ncu on an H200, 54.9 µs there, 44.8 µs here
// (docs/BENCHMARKS.md, 2026-12-02 12:12). Where the rows are 16-byte aligned and two tokens'
// rows fit in 48 KB, prefill runs k_qk_norm_rope_pf instead: the same passes in a persistent
// grid that prefetches each block's next token while it computes this one (38.3 µs against the
// register form's 43.9, 2026-12-02 16:23).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"
#include "backend/cuda_internal.h"
#include "backend/cuda_rope.h"

namespace {

constexpr int kWarps = 4;  // head rows per block
constexpr int kMaxHd = 2048; // head dims up to this: shared memory <= 40 KiB (no opt-in)
constexpr int kTokenBlockMin = 64; // tokens from which a block takes all head rows of its token
constexpr int kRegWarps = 8;       // k_qk_norm_rope_reg: warps per block (token)
constexpr int kRegRows = 8;        // k_qk_norm_rope_reg: rows a warp holds in registers per pass

// Row r of token t (r < Hq: q's head r, else k's head r − Hq) into the warp's shared fp32 row;
// returns the lane's partial sum of squares (lanes strided over the dims, in order).
template <typename T>
__device__ __forceinline__ float qk_row_load(T *v, float *row, int hd, int lane) {
    float ss = 0.0f;
    for (int d = lane; d < hd; d += 32) {
        float x = ldf(v + d);
        row[d] = x;
        ss += x * x;
    }
    return ss;
}

// The (cos, sin) table of position p for the rd/2 pairs into cs, by the block's threads.
__device__ __forceinline__ void rope_table(float2 *cs, float p, int half, int rd, double theta,
                                           const RopeFreq &tab) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) cs[i] = rope_cs(tab, p, i, rd, theta);
}

template <typename T, typename TW>
__global__ void __launch_bounds__(kWarps * 32)
k_qk_norm_rope(T *q, int64_t ldq, T *k, int64_t ldk, const TW *wq, const TW *wk,
               const int32_t *pos, int Hq, int Hkv, int hd, int rd, float eps, double theta,
               int interleaved, RopeFreq tab) {
    extern __shared__ float2 cs[]; // (rd/2) cos, sin; then the warps' rows
    const int half = rd / 2, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int t = blockIdx.x, rows = Hq + Hkv, stride = (int)gridDim.y * kWarps;
    float *row = reinterpret_cast<float *>(cs + half) + (size_t)warp * hd; // (hd) fp32 input
    auto row_ptr = [&](int r) {
        return r < Hq ? q + (size_t)t * ldq + (size_t)r * hd : k + (size_t)t * ldk + (size_t)(r - Hq) * hd;
    };
    // the first row first: its loads are in flight while the (cos, sin) table is computed (at
    // decode the kernel's time is its chain of dependent steps)
    int r = blockIdx.y * kWarps + warp;
    float ss = r < rows ? qk_row_load(row_ptr(r), row, hd, lane) : 0.0f;
    rope_table(cs, (float)pos[t], half, rd, theta, tab);
    __syncthreads(); // the only block barrier (the table and the first rows): warps go on alone
    for (bool first = true; r < rows; r += stride, first = false) {
        T *v = row_ptr(r);
        const TW *w = r < Hq ? wq : wk;
        if (!first) {
            __syncwarp(); // the previous row's reads of the buffer are done
            ss = qk_row_load(v, row, hd, lane);
        }
        ss = warp_sum(ss); // also orders the shared writes before the reads below (shfl syncs)
        __syncwarp();
        const float inv = (float)(1.0 / sqrt((double)ss / hd + (double)eps));
        for (int d = rd + lane; d < hd; d += 32) stf(v + d, ldf(w + d) * (row[d] * inv));
        for (int i = lane; i < half; i += 32) {
            int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
            float a = __fmul_rn(ldf(w + ia), __fmul_rn(row[ia], inv));
            float b = __fmul_rn(ldf(w + ib), __fmul_rn(row[ib], inv));
            float c = cs[i].x, s = cs[i].y;
            stf(v + ia, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
            stf(v + ib, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
        }
    }
}

// One pass of the prefill forms (k_qk_norm_rope_reg, k_qk_norm_rope_pf): the rows r0 + i·kRegWarps
// + warp (i < kRegRows, those < rows) of one token, their values x loaded (rows past the last:
// zeros), and the token's (cos, sin) table cs: the sums of squares, then r = 1 / sqrt(mean + eps)
// in double for row i by lane i (one double-precision chain for all the warp's rows, not one a
// row in every lane), w · (x · r) in fp32, the rotation, the stores through row_ptr(r).
template <typename T, typename TW, int V, class RowPtr>
__device__ __forceinline__ void qkn_reg_pass(const float (&x)[kRegRows][V], int r0, int rows,
                                             int Hq, const RowPtr &row_ptr, const TW *wq,
                                             const TW *wk, const float2 *cs, float eps,
                                             int interleaved, int lane, int warp) {
    constexpr int hd = 32 * V, half = hd / 2, hj = V / 2; // hj: j of a dim's partner, + or −
    float mine = 0.0f;
#pragma unroll
    for (int i = 0; i < kRegRows; i++) {
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < V; j++) ss += x[i][j] * x[i][j];
        ss = warp_sum(ss);
        if (lane == i) mine = ss;
    }
    const float inv_lane = (float)(1.0 / sqrt((double)mine / hd + (double)eps));
#pragma unroll
    for (int i = 0; i < kRegRows; i++) {
        const int r = r0 + i * kRegWarps + warp;
        if (r >= rows) break; // uniform over the warp
        T *v = row_ptr(r);
        const TW *w = r < Hq ? wq : wk;
        const float inv = __shfl_sync(0xffffffffu, inv_lane, i);
        float y[V]; // w · (x · r), fp32 (k_qk_norm_rope's normed values)
#pragma unroll
        for (int j = 0; j < V; j++) y[j] = __fmul_rn(ldf(w + lane + 32 * j), __fmul_rn(x[i][j], inv));
#pragma unroll
        for (int j = 0; j < V; j++) {
            const int d = lane + 32 * j;
            float o;
            if (interleaved) { // (a, b) = (d, d + 1) for even d: a·c − b·s, b·c + a·s
                const float other = __shfl_xor_sync(0xffffffffu, y[j], 1);
                const float2 c = cs[d >> 1];
                o = d & 1 ? __fadd_rn(__fmul_rn(y[j], c.x), __fmul_rn(other, c.y))
                          : __fsub_rn(__fmul_rn(y[j], c.x), __fmul_rn(other, c.y));
            } else if (j < hj) { // a = dim d, b = dim d + half
                const float2 c = cs[d];
                o = __fsub_rn(__fmul_rn(y[j], c.x), __fmul_rn(y[(j + hj) % V], c.y));
            } else { // b = dim d, a = dim d − half
                const float2 c = cs[d - half];
                o = __fadd_rn(__fmul_rn(y[j], c.x), __fmul_rn(y[(j + V - hj) % V], c.y));
            }
            stf(v + d, o);
        }
    }
}

// The rows of one pass into x: row r's dim lane + 32j from src(r) (rows past the last: zeros).
template <int V, class Src>
__device__ __forceinline__ void qkn_reg_load(float (&x)[kRegRows][V], int r0, int rows,
                                             const Src &src, int lane, int warp) {
#pragma unroll
    for (int i = 0; i < kRegRows; i++) { // every row's loads first: all in flight at once
        const int r = r0 + i * kRegWarps + warp;
#pragma unroll
        for (int j = 0; j < V; j++) x[i][j] = 0.0f;
        if (r < rows) {
            const auto *v = src(r);
#pragma unroll
            for (int j = 0; j < V; j++) x[i][j] = ldf(v + lane + 32 * j);
        }
    }
}

// Prefill form: grid M blocks (a token each) of kRegWarps warps, rd = hd = 32·V, V even. Lane
// l holds dims d_j = l + 32·j (j < V) of each of its rows. A pair (a, b) of rope dims is (d_j,
// d_j + hd/2), both in the lane (j and j + V/2), or, interleaved, (d, d ^ 1) in lanes l and
// l ^ 1 (the partner's value by shuffle). The arithmetic is the kernel above's, value for value.
template <typename T, typename TW, int V>
__global__ void __launch_bounds__(kRegWarps * 32)
k_qk_norm_rope_reg(T *q, int64_t ldq, T *k, int64_t ldk, const TW *wq, const TW *wk,
                   const int32_t *pos, int Hq, int Hkv, float eps, double theta, int interleaved,
                   RopeFreq tab) {
    extern __shared__ float2 cs[]; // (hd/2) cos, sin
    constexpr int hd = 32 * V, half = hd / 2;
    static_assert(V % 2 == 0, "rope pairs (d, d + hd/2) in one lane");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int t = blockIdx.x, rows = Hq + Hkv;
    auto row_ptr = [&](int r) {
        return r < Hq ? q + (size_t)t * ldq + (size_t)r * hd : k + (size_t)t * ldk + (size_t)(r - Hq) * hd;
    };
    bool table = false;
    for (int r0 = 0; r0 < rows; r0 += kRegWarps * kRegRows) {
        float x[kRegRows][V];
        qkn_reg_load<V>(x, r0, rows, [&](int r) { return (const T *)row_ptr(r); }, lane, warp);
        if (!table) { // once per token, while the first rows load
            rope_table(cs, (float)pos[t], half, hd, theta, tab);
            __syncthreads(); // the only block barrier: every warp reaches it in the first pass
            table = true;
        }
        qkn_reg_pass<T, TW, V>(x, r0, rows, Hq, row_ptr, wq, wk, cs, eps, interleaved, lane, warp);
    }
}

// Prefill form with the next token prefetched (the default prefill kernel; AE_QKN_PF): a
// persistent grid, block b taking tokens b, b + G, ... (G = gridDim.x). While it computes token
// t from shared memory, token t + G's q and k rows are copying in (cp.async, 16-byte chunks, two
// buffers) and its rope table is formed, so the loads of one token overlap the arithmetic and
// stores of the one before (k_qk_norm_rope_reg loads, then computes, then stores, its blocks
// short-lived). The same passes (qkn_reg_pass) on the same values: the same bits. Dynamic shared
// memory: two (hd/2) tables, then two buffers of the token's rows (rows · hd of T); q and k rows
// 16-byte aligned (host-checked).
template <typename T, typename TW, int V>
__global__ void __launch_bounds__(kRegWarps * 32, V == 8 ? 2 : 4) // as the reg form: 4 an SM
k_qk_norm_rope_pf(T *q, int64_t ldq, T *k, int64_t ldk, const TW *wq, const TW *wk,
                  const int32_t *pos, int M, int Hq, int Hkv, float eps, double theta,
                  int interleaved, RopeFreq tab) {
    extern __shared__ float2 cs[]; // [2][hd/2] tables, then [2][rows · hd] of T
    constexpr int hd = 32 * V, half = hd / 2, E = 16 / (int)sizeof(T); // E: values a chunk
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, G = (int)gridDim.x;
    const int rows = Hq + Hkv, nq = Hq * hd / E, nc = rows * hd / E;
    T *const buf0 = reinterpret_cast<T *>(cs + 2 * half);
    auto issue = [&](int t, int b) { // token t's rows into buffer b: q's, then k's, contiguous
        T *dst = buf0 + (size_t)b * rows * hd;
        for (int c = threadIdx.x; c < nc; c += blockDim.x) {
            const T *src = c < nq ? q + (size_t)t * ldq + (size_t)c * E
                                  : k + (size_t)t * ldk + (size_t)(c - nq) * E;
            cp_async16(dst + (size_t)c * E, src, true);
        }
    };
    int t = blockIdx.x;
    if (t >= M) return;
    issue(t, 0);
    cp_async_commit();
    rope_table(cs, (float)pos[t], half, hd, theta, tab);
    for (int i = 0; t < M; i++, t += G) {
        const int tn = t + G, b = i & 1;
        if (tn < M) issue(tn, b ^ 1);
        cp_async_commit(); // (empty past the last token: the wait below counts groups)
        if (tn < M) rope_table(cs + (b ^ 1) * half, (float)pos[tn], half, hd, theta, tab);
        cp_async_wait<1>(); // this thread's chunks of token t have landed
        __syncthreads();    // everyone's, and token t's table
        const T *rowsb = buf0 + (size_t)b * rows * hd;
        auto row_ptr = [&](int r) {
            return r < Hq ? q + (size_t)t * ldq + (size_t)r * hd
                          : k + (size_t)t * ldk + (size_t)(r - Hq) * hd;
        };
        for (int r0 = 0; r0 < rows; r0 += kRegWarps * kRegRows) {
            float x[kRegRows][V];
            qkn_reg_load<V>(x, r0, rows, [&](int r) { return rowsb + (size_t)r * hd; }, lane, warp);
            qkn_reg_pass<T, TW, V>(x, r0, rows, Hq, row_ptr, wq, wk, cs + b * half, eps,
                                   interleaved, lane, warp);
        }
        __syncthreads(); // buffer b and table b are free for token t + 2G
    }
}

// AE_QKN_REG=0 keeps prefill on k_qk_norm_rope (read at every prefill-sized call: the A/B
// switch of bench_infer, and test_backend_ops' check that both kernels give the same bits).
static int qk_reg_enabled(void) {
    const char *e = getenv("AE_QKN_REG");
    return !(e && !strcmp(e, "0"));
}
// AE_QKN_PF: prefill on k_qk_norm_rope_pf where it fits (read at every call): unset or 1 a grid
// of as many blocks as fit at once, N > 1 at most N blocks (tests: every block then takes many
// tokens), 0 the register form k_qk_norm_rope_reg. One 4K call of Qwen3-30B-A3B's shape under ncu
// on an H200 (docs/BENCHMARKS.md, 2026-12-02 16:23): 43.9 µs the register form, 38.3 µs this.
static int qk_pf_blocks(void) {
    const char *e = getenv("AE_QKN_PF");
    if (!e || !*e) return 1;
    const int n = atoi(e);
    return n > 0 ? n : 0;
}

} // namespace

void ae_cuda_qk_norm_rope(const ae_backend *be, const ae_qk_norm_rope_args *a, ae_ptr q, ae_ptr k,
                          ae_ptr wq, ae_ptr wk, ae_ptr pos) {
    if (cuda_failed(be)) return;
    cuda_need(q, AE_M_FLOAT, "qk_norm_rope", "q");
    cuda_need(k, AE_M_FLOAT, "qk_norm_rope", "k");
    cuda_need(wq, AE_M_FLOAT, "qk_norm_rope", "wq");
    cuda_need(wk, AE_M_FLOAT, "qk_norm_rope", "wk");
    cuda_need(pos, AE_M_I32, "qk_norm_rope", "pos");
    const int Hq = ae_ptr_is_null(q) ? 0 : a->Hq, Hkv = ae_ptr_is_null(k) ? 0 : a->Hkv;
    const int hd = a->hd, rd = a->rd;
    if (a->M <= 0 || Hq + Hkv <= 0 || hd <= 0) return;
    ae_ptr x = Hq ? q : k, w = Hq ? wq : wk;
    if ((Hq && Hkv && (q.dtype != k.dtype || wq.dtype != wk.dtype)) || rd < 0 || rd % 2 ||
        rd > hd || hd > kMaxHd) {
        fprintf(stderr,
                "attnedit: internal error: cuda qk_norm_rope: q %s / k %s, wq %s / wk %s, hd %d, "
                "rd %d (same dtypes, rd even and <= hd <= %d expected)\n",
                ae_dtype_name(q.dtype), ae_dtype_name(k.dtype), ae_dtype_name(wq.dtype),
                ae_dtype_name(wk.dtype), hd, rd, kMaxHd);
        abort();
    }
    const int half = rd / 2;
    const RopeFreq tab = rope_freq(a->theta, rd);
    const size_t smem = sizeof(float) * (2 * (size_t)half + (size_t)kWarps * hd);
    // a block per (token, kWarps head rows) at decode-sized M; from kTokenBlockMin tokens one
    // block per token, its warps looping over the head rows: the rope table once per token
    const int groups = (Hq + Hkv + kWarps - 1) / kWarps;
    const dim3 grid((unsigned)a->M, (unsigned)(a->M >= kTokenBlockMin ? 1 : groups));
    const int il = a->mode == AE_ROPE_INTERLEAVED;
    const int32_t *pp = (const int32_t *)pos.data;
    if (a->M >= kTokenBlockMin && rd == hd && (hd == 64 || hd == 128 || hd == 256) &&
        qk_reg_enabled()) {
        const size_t smem_reg = sizeof(float2) * (size_t)half;
        const size_t es = ae_dtype_size(x.dtype);
        const size_t smem_pf = 2 * smem_reg + 2 * (size_t)(Hq + Hkv) * hd * es;
        auto al16 = [es](const void *p, int64_t ld) {
            return !p || ((uintptr_t)p % 16 == 0 && (ld * (int64_t)es) % 16 == 0);
        };
        const int pf = qk_pf_blocks();
        if (pf && smem_pf <= 48 * 1024 && al16(q.data, a->ldq) && al16(k.data, a->ldk)) {
            AE_CUDA_FLOAT_DISPATCH(x.dtype, T, AE_CUDA_FLOAT_DISPATCH(w.dtype, TW, {
                auto go = [&](auto kern) {
                    int per_sm = 0;
                    cuda_check(be, cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                                       &per_sm, kern, kRegWarps * 32, smem_pf),
                               "qk_norm_rope occupancy");
                    const long fit = (long)(per_sm > 0 ? per_sm : 1) * cu(be)->sm_count;
                    const long cap = pf > 1 ? pf : fit;
                    const unsigned G = (unsigned)(a->M < cap ? a->M : cap);
                    kern<<<G, kRegWarps * 32, smem_pf, stream_of(be)>>>(
                        (T *)q.data, a->ldq, (T *)k.data, a->ldk, (const TW *)wq.data,
                        (const TW *)wk.data, pp, a->M, Hq, Hkv, a->eps, a->theta, il, tab);
                };
                if (hd == 64) go(k_qk_norm_rope_pf<T, TW, 2>);
                else if (hd == 128) go(k_qk_norm_rope_pf<T, TW, 4>);
                else go(k_qk_norm_rope_pf<T, TW, 8>);
            }));
            cuda_check(be, cudaGetLastError(), "qk_norm_rope");
            return;
        }
        AE_CUDA_FLOAT_DISPATCH(x.dtype, T, AE_CUDA_FLOAT_DISPATCH(w.dtype, TW, {
            auto go = [&](auto kern) {
                kern<<<(unsigned)a->M, kRegWarps * 32, smem_reg, stream_of(be)>>>(
                    (T *)q.data, a->ldq, (T *)k.data, a->ldk, (const TW *)wq.data,
                    (const TW *)wk.data, pp, Hq, Hkv, a->eps, a->theta, il, tab);
            };
            if (hd == 64) go(k_qk_norm_rope_reg<T, TW, 2>);
            else if (hd == 128) go(k_qk_norm_rope_reg<T, TW, 4>);
            else go(k_qk_norm_rope_reg<T, TW, 8>);
        }));
        cuda_check(be, cudaGetLastError(), "qk_norm_rope");
        return;
    }
    AE_CUDA_FLOAT_DISPATCH(x.dtype, T, AE_CUDA_FLOAT_DISPATCH(w.dtype, TW,
        k_qk_norm_rope<T, TW><<<grid, kWarps * 32, smem, stream_of(be)>>>(
            (T *)q.data, a->ldq, (T *)k.data, a->ldk, (const TW *)wq.data, (const TW *)wk.data,
            pp, Hq, Hkv, hd, rd, a->eps, a->theta, il, tab)));
    cuda_check(be, cudaGetLastError(), "qk_norm_rope");
}
