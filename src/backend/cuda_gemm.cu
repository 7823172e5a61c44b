// Matrix products of the CUDA backend (the `gemm` slot; semantics in backend/ops.h, ae_gemm_args):
//   y (M, N) = alpha · op(a) · op(b) + beta · y    row-major, strides in elements, `batch` products
// a, b: BF16; y: BF16 or F32 (other dtypes abort); products of bf16 values accumulated in fp32.
//
// Which path runs:
//   1. GEMV (k_gemv, hand-written) for the decode products of a Linear layer: batch == 1,
//      !trans_a, trans_b (b is an (N, K) weight), 1 <= M <= 8, K % 8 == 0, a and b 16-byte
//      aligned, ldb % 8 == 0 and (M == 1 or lda % 8 == 0); any alpha, beta. Memory-bound: each
//      weight byte is read once, in 16-byte loads, for all M rows; tensor cores do the arithmetic.
//      matmul_group (several weights of one x: q/k/v, gate/up) runs all its products in ONE
//      k_gemv launch when each qualifies, the grid's blocks split between the products.
//      gate_up_silu (a dense MLP's gate and up products, then silu_mul) runs as k_gemv_swiglu
//      where matmul_group would run one unsplit k_gemv launch: the same sums, silu(g)·u in the
//      epilogue, one launch instead of two (see "GEMV with the SwiGLU epilogue").
//   2. Batched small-M GEMV for per-head products at decode (absorbed MLA: q̃_h = q_nope_h·Wuk_h
//      and o_h = ctx_h·Wuv_hᵀ): batch 2..65535, !trans_a, 1 <= M <= 8, any alpha, beta, any
//      ldy and sy; one pass over the weights, product i's blocks in grid row i.
//        trans_b = 1 (b_i is (N, K)): k_gemv_batched, the GEMV tile of path 1 on a_i, b_i, y_i;
//          needs what path 1 needs of each product plus sa % 8 == 0 and sb % 8 == 0 (every
//          a_i, b_i 16-byte aligned).
//        trans_b = 0 (b_i is (K, N), row-major): k_gemv_kn: a thread owns 8 consecutive
//          columns (one 16-byte load per row, consecutive lanes on consecutive columns so a
//          warp reads whole row segments) and every KS-th row of K; the KS partial sums of a
//          column meet in shared memory and are added in a fixed order. Needs b 16-byte
//          aligned, ldb % 8 == 0 and sb % 8 == 0; any N (a last partial group of 8 columns
//          loads element by element), any K, any lda, sa.
//   3. cuBLASLt (cublasLtMatmul) for every other product with K > 0: bf16 A/B, fp32 compute and
//      scale, C/D of y's dtype, strided batches, the heuristic's first algorithm. Descriptors and
//      algorithm are cached per shape (see "plan cache"), so a repeated shape costs a look-up.
//   4. A plain per-element kernel (k_gemm_simple) for K == 0 (y := beta·y; y := 0 when beta is 0;
//      nothing when beta is 1) and for what cuBLASLt turns down: overlapping rows (ld shorter than
//      a row, more than one row), negative batch strides, or no algorithm. Any strides; slow.
// M, N or batch == 0: nothing. beta == 0 never reads y (cuBLASLt does not read C then).
//
// Agreement with the CPU fp32 reference, given the same bf16-rounded inputs: every path multiplies
// exact bf16 values and accumulates in fp32 in its own order, so an F32 y matches to ~1e-6 of
// Σ|a·b| (worst case K·2^-24). A BF16 y adds one rounding to bf16 (relative 2^-8 ≈ 0.4%); through
// cuBLASLt with beta != 0 the bf16 epilogue may round twice (alpha·acc, then + beta·y), up to one
// bf16 ulp (<= 0.8% of |alpha·acc| + |y|). Both are inside the tests' ~1e-2 relative tolerance
// unless alpha·acc and beta·y nearly cancel. The GEMV kernels (paths 1, 2) and the plain kernel
// are deterministic; cuBLASLt is for a given algorithm, workspace and device.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_gemv_core.h"
#include "backend/cuda_internal.h"

// ---- row-major -> cuBLASLt column-major mapping -------------------------------------------------
// A row-major matrix (R, C) with row stride ld is, read column-major, the matrix (C, R) with
// leading dimension ld. So row-major y (M, N) is column-major yᵀ (N, M), and we ask cuBLASLt for
//     yᵀ (N, M) = op(b)ᵀ (N, K) · op(a)ᵀ (K, M)
// i.e. cuBLASLt's A is our b, its B is our a, and (m, n, k) = (N, M, K). Stored layouts (rows x
// cols, column-major, ld) and operations, for each (trans_a, trans_b):
//   b, trans_b = 0: b is row-major (K, N)   -> A layout (N x K, ld ldb), op N:  A      = op(b)ᵀ
//   b, trans_b = 1: b is row-major (N, K)   -> A layout (K x N, ld ldb), op T:  Aᵀ     = op(b)ᵀ
//   a, trans_a = 0: a is row-major (M, K)   -> B layout (K x M, ld lda), op N:  B      = op(a)ᵀ
//   a, trans_a = 1: a is row-major (K, M)   -> B layout (M x K, ld lda), op T:  Bᵀ     = op(a)ᵀ
//   y:              y is row-major (M, N)   -> C = D layout (N x M, ld ldy)
// so (0,0): N,N   (0,1): T,N   (1,0): N,T   (1,1): T,T  (cuBLASLt transa, transb). Batch strides
// map unchanged: A uses sb, B uses sa, C/D use sy. cuBLASLt wants ld >= rows even when a matrix
// has a single column (one row of ours, where ld is never used): ld is raised to rows there.

// GEMV shape: x rows at most; threads per block; chunks of 32 k per warp step; warps per SM the
// grid aims for (tuned on an H200: J = 2 beat 1, 4 and 8; 32 warps per SM beat 16).
enum { GEMV_MAX_M = 8, GEMV_THREADS = 256, GEMV_WARPS = GEMV_THREADS / 32, GEMV_J = 2,
       GEMV_WARPS_PER_SM = 32 };

// ---- GEMV: y (M, N) = alpha · x (M, K) · w (N, K)ᵀ + beta · y, M <= 8 ---------------------------
// Tensor cores do the arithmetic, so the cost per weight byte is the same for M = 1 and M = 8: one
// mma.m16n8k16 (bf16 in, fp32 accumulate) takes A = x (M rows, zero-padded to 16) and B = a tile
// of 8 weight rows, and gives those 8 outputs for every x row.
//   Tile: 8 consecutive weight rows n0..n0+7, handled by kw warps (kw = 1, 2, 4 or 8) that share
//     its K; a block of 8 warps holds 8 / kw tiles; kw grows until the grid has about
//     GEMV_WARPS_PER_SM warps per SM (small N) while each warp keeps >= 2 steps.
//   Chunk q: 32 k values [32q, 32q + 32). Lane (g = lane / 4, t = lane % 4) loads 16 bytes of
//     weight row n0 + g and of x row g (zeros when g >= M), elements 32q + 8t .. 32q + 8t + 7.
//   The sum over k does not care which k goes into which fragment slot as long as A and B agree,
//   so those 8 values feed two mmas without any shuffling: with e0..e7 the lane's elements,
//     mma 1: B = {e0 e1 | e2 e3} of the weight row (fragment rows 2t, 2t+1 | 2t+8, 2t+9, col g),
//            A = {e0 e1 | e2 e3} of the x row (fragment row g; rows g + 8 are zero);
//     mma 2: the same with e4 e5 | e6 e7.
//   Accumulator: lane (g, t) holds y[g][n0 + 2t] and y[g][n0 + 2t + 1] (fragment rows >= 8 unused).
//   A warp takes chunks wk, wk + kw, ... (wk its index in the tile), GEMV_J per step (loads first,
//   then the mmas; a partial last chunk is zero-filled); the kw partial accumulators of a tile
//   meet in shared memory, and the tile's first warp writes y.
// Weights are read once: their loads skip L1 and ask L2 for 256-byte fetches (a warp's load covers
// 64 bytes of each of 8 rows; the hint keeps DRAM reads long). x is small and read by every warp,
// so it stays in L1. Measured on an H200, back-to-back launches, M = 1..8 alike, against the
// 4.27 TB/s device copy rate: 151936 x 4096 ~100%, 12288 x 4096 ~88%, 4096 x 12288 ~85%,
// 4096 x 4096 ~65% (32 MB: launch and ramp-up cost a few microseconds); cuBLASLt measured
// 97%, 81%, 77%, 59% on the same.
//
// Variants (AE_CUDA_GEMV, for A/B measurements; bench/bench_gemv.c, tests/test_cuda_gemv.c):
// a comma-separated list of key=value, unset or empty = the default, j=8,minb=4 (chosen on an
// H200, 2026-11-30 02:17 UTC, bench_gemv: the teacher's decode GEMVs per token at 89.2% of the
// copy rate against 85.5% for j=2 without minb, and bench_infer's graphed Qwen3-8B decode 74.4 ->
// 77.9% of the bandwidth limit at 4K, 74.3 -> 75.9% at 32K; pipe=1,pdl=1 measured 89.1% alone
// but 71.6% in the decode step); j=2,minb=0 is the kernel before.
//   j=2|4|8     chunks per warp step (J: 16-byte weight loads in flight per lane; default 8;
//               the warps-per-tile heuristic keeps counting steps of 2 chunks; j=1 measured
//               slower than 2 before and is not offered)
//   pipe=1      software pipelining: a warp issues the loads of its next step before the mmas
//               of the current one, so about 2·J loads stay in flight instead of 0..J (56
//               registers at j=2: 4 blocks per SM; 94 at j=4, 142 at j=8: fewer warps)
//   kw=1|2|4|8  warps per tile, forced (default: the heuristic, gemv_kw_shift)
//   wps=N       warps per SM the heuristic aims for (default 32)
//   minb=4      __launch_bounds__ asks for 4 resident blocks per SM (<= 64 registers a thread;
//               with pipe=1 at j=4, 8 that spills; default); minb=0: no minimum, the compiler's
//               choice (34-38 registers at j=2: 6 blocks per SM)
//   split=S     split-K, 2..16 slices of K for products with >= 8 chunks per slice: grid row s
//               sums chunks [s·cps, (s+1)·cps) of every tile into an fp32 partial (S, M, N) in
//               the cuBLASLt workspace (no atomics), then k_gemv_split_sum adds the S partials in
//               order s = 0..S-1 and applies alpha, beta. The sum order changes (partials per
//               slice), so results differ from the unsplit kernel by fp32 rounding; deterministic.
//               Products whose partials exceed the workspace run unsplit.
//   pdl=1       programmatic dependent launch (sm_90+): the kernel may start while the previous
//               one finishes; it prefetches its first 2·J weight chunks per lane into L2, then
//               waits (griddepcontrol.wait) before it reads x or y, and lets the next PDL launch
//               start early (griddepcontrol.launch_dependents). Same arithmetic as without.
// j, pipe, minb and pdl keep the kernel's arithmetic exactly (the same sums in the same order);
// kw and wps change how the chunks of a tile are split between its warps (as the heuristic does
// between shapes) and split changes it further: fp32 rounding differences, deterministic all the
// same.
// L2 persistence is not offered: a decode step streams ~16 GB of weights through a 50 MB L2,
// so no weight is read twice in a step and nothing would stay resident.
struct GemvCfg {
    int j;     // chunks per warp step: 2, 4, 8
    int pipe;  // 1: the next step's loads before this step's mmas
    int kw;    // warps per tile forced (1, 2, 4, 8), 0: the heuristic
    int wps;   // warps per SM the heuristic aims for
    int minb;  // 0 or 4: resident blocks per SM asked of the compiler
    int split; // slices of K (1: none)
    int pdl;   // 1: programmatic dependent launch
};

// The variant AE_CUDA_GEMV names (see above); an unknown key or value is reported once on
// stderr and ignored.
static GemvCfg gemv_cfg(void) {
    GemvCfg c = {8, 0, 0, GEMV_WARPS_PER_SM, 4, 1, 0}; // j=8,minb=4 (see the header)
    const char *env = getenv("AE_CUDA_GEMV");
    static int warned;
    while (env && *env) {
        char key[16];
        int v = 0, len = 0;
        if (sscanf(env, "%15[a-z]=%d%n", key, &v, &len) == 2 && len > 0) {
            int ok = 1;
            if (!strcmp(key, "j") && (v == 2 || v == 4 || v == 8)) c.j = v;
            else if (!strcmp(key, "pipe") && (v == 0 || v == 1)) c.pipe = v;
            else if (!strcmp(key, "kw") && (v == 1 || v == 2 || v == 4 || v == 8)) c.kw = v;
            else if (!strcmp(key, "wps") && v >= 1 && v <= 64) c.wps = v;
            else if (!strcmp(key, "minb") && (v == 0 || v == 4)) c.minb = v;
            else if (!strcmp(key, "split") && v >= 1 && v <= 16) c.split = v;
            else if (!strcmp(key, "pdl") && (v == 0 || v == 1)) c.pdl = v;
            else ok = 0;
            if (!ok && !warned)
                fprintf(stderr, "AE_CUDA_GEMV: %s=%d is not a known setting (ignored)\n", key, v),
                    warned = 1;
            env += len;
        } else {
            if (!warned)
                fprintf(stderr, "AE_CUDA_GEMV: cannot read \"%s\" (want key=value,...)\n", env),
                    warned = 1;
            break;
        }
        if (*env == ',') env++;
    }
    return c;
}

// Programmatic dependent launch (pdl=1): n weight chunks of this lane (wp, chunk stride kw, the
// first q) asked into L2 before the wait for the previous kernel, whose output x may be; then
// the next kernel may start. No-ops below sm_90 and when the launch was not programmatic.
__device__ __forceinline__ void gemv_pdl_start(const bf16 *wp, int q, int kw, int n, int full) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    for (int i = 0; i < n && q + i * kw < full; i++)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(wp + 32 * (size_t)(q + i * kw)));
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// The products of one launch: up to AE_MATMUL_GROUP_MAX weights sharing x (matmul_group; a
// plain gemm is a set of one). Product i owns blocks [first[i], first[i + 1]) of the grid;
// with split-K its fp32 partials (S, M, N[i]) are at part[i].
template <typename TY> struct GemvSet {
    TY *y[AE_MATMUL_GROUP_MAX];
    const bf16 *w[AE_MATMUL_GROUP_MAX];
    float *part[AE_MATMUL_GROUP_MAX];
    int64_t ldy[AE_MATMUL_GROUP_MAX], ldw[AE_MATMUL_GROUP_MAX];
    int N[AE_MATMUL_GROUP_MAX];
    int first[AE_MATMUL_GROUP_MAX + 1];
    int n;
};

// Split-K: the chunks [q0, q1) of grid row blockIdx.y and its partial (M, N) (row stride N).
struct GemvSlice {
    float *part;
    int q0, q1;
};

__device__ __forceinline__ GemvSlice gemv_slice(float *part, int M, int N, int K, int cps) {
    const int s = (int)blockIdx.y, q0 = s * cps;
    return {part + (size_t)s * M * N, q0, min(q0 + cps, (K + 31) >> 5)};
}

// One 8-row tile of y = alpha · x · wᵀ + beta · y per kw = 1 << kw_shift warps; blk is the
// block's index among the blocks of this product. J chunks per step. SPLIT: only the chunks of
// sl, the tile's sums written to sl.part (no alpha, beta). PDL: see gemv_pdl_start (a template
// parameter: the runtime branch alone cost the default kernel 4 registers). PIPE: see
// gemv_warp_sums.
// x: (M, K) row stride ldx; w: (N, K) row stride ldw; y: (M, N) row stride ldy; M <= 8,
// K % 8 == 0, x, w and their rows 16-byte aligned.
template <typename TY, int J, bool SPLIT, bool PDL, bool PIPE>
__device__ __forceinline__ void gemv_tile(TY *__restrict__ y, int64_t ldy, const bf16 *__restrict__ x,
                                          int64_t ldx, const bf16 *__restrict__ w, int64_t ldw,
                                          int M, int N, int K, int kw_shift, float alpha, float beta,
                                          int blk, GemvSlice sl) {
    __shared__ float red[GEMV_WARPS][2][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kw = 1 << kw_shift, wk = warp & (kw - 1);
    const int n0 = (blk * (GEMV_WARPS >> kw_shift) + (warp >> kw_shift)) * 8;
    const int g = lane >> 2, t = lane & 3;
    // this lane's weight row (clamped inside w; results of rows >= N are dropped) and x row
    const bf16 *wp = w + (size_t)min(n0 + g, N - 1) * (size_t)ldw + 8 * t;
    const bool has_x = g < M; // lanes past the last x row read row 0 and use zeros
    const bf16 *xp = x + (size_t)(has_x ? g : 0) * (size_t)ldx + 8 * t;

    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    // chunks all inside K (up to the slice's end); all chunks (of the slice)
    const int full = SPLIT ? min(K >> 5, sl.q1) : K >> 5, chunks = SPLIT ? sl.q1 : (K + 31) >> 5;
    const int q = (SPLIT ? sl.q0 : 0) + wk;
    if (PDL) gemv_pdl_start(wp, q, kw, 2 * J, full);
    gemv_warp_sums<J, PIPE>(acc, wp, xp, has_x, q, full, chunks, kw, K, t);

    if (kw > 1) { // the tile's kw warps are consecutive; its first one sums and writes
        red[warp][0][lane] = acc[0];
        red[warp][1][lane] = acc[1];
        __syncthreads();
        if (wk != 0) return;
        for (int i = 1; i < kw; i++) {
            acc[0] += red[warp + i][0][lane];
            acc[1] += red[warp + i][1][lane];
        }
    }
    if (!has_x) return;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int n = n0 + 2 * t + i;
        if (n < N) {
            if (SPLIT) {
                sl.part[(size_t)g * (size_t)N + n] = acc[i];
                continue;
            }
            TY *out = y + (size_t)g * (size_t)ldy + n;
            float v = alpha * acc[i];
            if (beta != 0.0f) v += beta * ldf(out);
            stf(out, v);
        }
    }
}

// A single product (a Linear layer's decode GEMV): the parameters straight from the launch.
// Grid (blocks, slices); part, cps: split-K's partials and chunks per slice (SPLIT only).
// MINB: blocks per SM asked of the compiler (0: none).
template <typename TY, int J, int MINB, bool SPLIT, bool PDL, bool PIPE>
__global__ void __launch_bounds__(GEMV_THREADS, MINB)
k_gemv(TY *__restrict__ y, int64_t ldy, const bf16 *__restrict__ x, int64_t ldx,
       const bf16 *__restrict__ w, int64_t ldw, int M, int N, int K, int kw_shift, float alpha,
       float beta, float *part, int cps) {
    const GemvSlice sl = SPLIT ? gemv_slice(part, M, N, K, cps) : GemvSlice{nullptr, 0, 0};
    gemv_tile<TY, J, SPLIT, PDL, PIPE>(y, ldy, x, ldx, w, ldw, M, N, K, kw_shift, alpha, beta,
                                       (int)blockIdx.x, sl);
}

// Several products of one x (matmul_group): the block's product picked from the set. A separate
// kernel because selecting from the set in every launch measured 12-13% slower decode at batch
// 1 (H200, Qwen3-8B shapes) than the single-product kernel.
template <typename TY, int J, int MINB, bool SPLIT, bool PDL, bool PIPE>
__global__ void __launch_bounds__(GEMV_THREADS, MINB)
k_gemv_set(const GemvSet<TY> set, const bf16 *__restrict__ x, int64_t ldx, int M, int K,
           int kw_shift, float alpha, float beta, int cps) {
    // selected with constant indices: no local copy of the parameters
    TY *y = set.y[0];
    const bf16 *w = set.w[0];
    float *part = set.part[0];
    int64_t ldy = set.ldy[0], ldw = set.ldw[0];
    int N = set.N[0], block0 = 0;
#pragma unroll
    for (int i = 1; i < AE_MATMUL_GROUP_MAX; i++)
        if (i < set.n && (int)blockIdx.x >= set.first[i])
            y = set.y[i], w = set.w[i], ldy = set.ldy[i], ldw = set.ldw[i], N = set.N[i],
            block0 = set.first[i], part = set.part[i];
    const GemvSlice sl = SPLIT ? gemv_slice(part, M, N, K, cps) : GemvSlice{nullptr, 0, 0};
    gemv_tile<TY, J, SPLIT, PDL, PIPE>(y, ldy, x, ldx, w, ldw, M, N, K, kw_shift, alpha, beta,
                                       (int)blockIdx.x - block0, sl);
}

// Split-K's second pass: y_i (M, N_i) = alpha · (partial 0 + partial 1 + ... + partial S-1) +
// beta · y_i for every product i of the set, the partials (S, M, N_i) at set.part[i] added in
// slice order (deterministic). One thread per output, products one after the other.
template <typename TY>
__global__ void __launch_bounds__(GEMV_THREADS)
k_gemv_split_sum(const GemvSet<TY> set, int M, int S, float alpha, float beta) {
    int64_t e = (int64_t)blockIdx.x * GEMV_THREADS + threadIdx.x;
#pragma unroll
    for (int i = 0; i < AE_MATMUL_GROUP_MAX; i++) {
        if (i >= set.n) return;
        const int64_t size = (int64_t)M * set.N[i];
        if (e < size) {
            const int m = (int)(e / set.N[i]), n = (int)(e % set.N[i]);
            float sum = 0.0f;
            for (int s = 0; s < S; s++) sum += set.part[i][(size_t)s * size + e];
            TY *out = set.y[i] + (size_t)m * (size_t)set.ldy[i] + n;
            float v = alpha * sum;
            if (beta != 0.0f) v += beta * ldf(out);
            stf(out, v);
            return;
        }
        e -= size;
    }
}

// ---- GEMV with the SwiGLU epilogue (gate_up_silu): act = silu(x·wgᵀ) ⊙ (x·wuᵀ), M <= 8 ---------
// The matmul_group of the gate and up products followed by silu_mul, in one launch and with the
// same bits: a block's tiles are pairs, gate rows n0..n0+7 and up rows n0..n0+7, with the tile
// shape, warps per tile and chunk order of that matmul_group's launch (the same kw_shift, the
// same gemv_warp_sums, the same reduction), so each g and u is the fp32 sum k_gemv_set would
// write. The epilogue rounds them to bf16 as that store does, passes the gate values through
// shared memory to the up tile's first warp, and writes silu_mul's act = g / (1 + expf(-g)) · u
// rounded to bf16, saving the silu_mul launch and the g, u round trip through memory.
// A block of tpb = 8 >> kw_shift tiles holds tpb / 2 pairs (gate tiles first); at kw = 8 (one
// tile per block) its 8 warps do the gate tile, then the up tile.
// x: (M, K) row stride ldx; wg, wu: (N, K) row stride ldw; act: (M, N) row stride ldy.

// silu(g) · u with silu_mul's formula and operation order (cuda_elementwise.cu), so that the
// fused epilogue rounds the same float.
__device__ __forceinline__ float gemv_silu_mul(float g, float u) {
    return g / (1.0f + expf(-g)) * u;
}

// bf16 rounding of a float, as stf to a bf16 y then a read back.
__device__ __forceinline__ float gemv_bf16r(float v) {
    return __bfloat162float(__float2bfloat16_rn(v));
}

template <int J, int MINB, bool PDL, bool PIPE>
__global__ void __launch_bounds__(GEMV_THREADS, MINB)
k_gemv_swiglu(bf16 *__restrict__ act, int64_t ldy, const bf16 *__restrict__ x, int64_t ldx,
              const bf16 *__restrict__ wg, const bf16 *__restrict__ wu, int64_t ldw, int M, int N,
              int K, int kw_shift) {
    __shared__ float red[GEMV_WARPS][2][32];
    __shared__ float gate[GEMV_WARPS / 2][GEMV_MAX_M][8]; // [pair][x row][column in the tile]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kw = 1 << kw_shift, wk = warp & (kw - 1), tpb = GEMV_WARPS >> kw_shift;
    const int pairs = tpb > 1 ? tpb / 2 : 1, passes = tpb > 1 ? 1 : 2;
    const int g = lane >> 2, t = lane & 3;
    const bool has_x = g < M; // lanes past the last x row read row 0 and use zeros
    const bf16 *xp = x + (size_t)(has_x ? g : 0) * (size_t)ldx + 8 * t;
    const int full = K >> 5, chunks = (K + 31) >> 5;
#pragma unroll 1
    for (int pass = 0; pass < passes; pass++) {
        const int tile = (warp >> kw_shift) + pass; // gate tiles 0..pairs-1, then the up tiles
        const bool up = tile >= pairs;
        const int pair = up ? tile - pairs : tile;
        const int n0 = ((int)blockIdx.x * pairs + pair) * 8;
        // this lane's weight row, clamped inside the matrix (rows >= N are dropped)
        const bf16 *wp = (up ? wu : wg) + (size_t)min(n0 + g, N - 1) * (size_t)ldw + 8 * t;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (PDL && pass == 0) gemv_pdl_start(wp, wk, kw, 2 * J, full);
        gemv_warp_sums<J, PIPE>(acc, wp, xp, has_x, wk, full, chunks, kw, K, t);
        if (kw > 1) {
            red[warp][0][lane] = acc[0];
            red[warp][1][lane] = acc[1];
        }
        __syncthreads(); // every warp reaches both barriers: no early exit before the epilogue
        if (wk == 0) {
            for (int i = 1; i < kw; i++) { // gemv_tile's order
                acc[0] += red[warp + i][0][lane];
                acc[1] += red[warp + i][1][lane];
            }
            if (!up && has_x) { // g as the bf16 y of matmul_group holds it
                gate[pair][g][2 * t] = gemv_bf16r(acc[0]);
                gate[pair][g][2 * t + 1] = gemv_bf16r(acc[1]);
            }
        }
        __syncthreads(); // the gate values are in shared memory; red may be written again
        if (wk != 0 || !up || !has_x) continue;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int n = n0 + 2 * t + i;
            if (n < N)
                act[(size_t)g * (size_t)ldy + n] = __float2bfloat16_rn(
                    gemv_silu_mul(gate[pair][g][2 * t + i], gemv_bf16r(acc[i])));
        }
    }
}


static int gemv_applies(const ae_gemm_args *g, ae_ptr a, ae_ptr b) {
    return g->batch == 1 && !g->trans_a && g->trans_b && g->M >= 1 && g->M <= GEMV_MAX_M &&
           g->K % 8 == 0 && g->ldb % 8 == 0 && (g->M == 1 || g->lda % 8 == 0) &&
           cuda_aligned16(a.data) && cuda_aligned16(b.data);
}

// Warps per tile (log2, up to all GEMV_WARPS of the block): gemv_pick_kw_shift with GEMV_J.
static int gemv_kw_shift(int tiles, int chunks, int sm_count, int wps) {
    return gemv_pick_kw_shift(tiles, chunks, sm_count, wps, GEMV_J, 3);
}
static_assert(GEMV_WARPS == 1 << 3, "gemv_kw_shift's largest shift");

// A launch of k_gemv / k_gemv_set, programmatic (PDL) when asked.
template <typename... P, typename... A>
static cudaError_t gemv_go(void (*kernel)(P...), dim3 grid, const ae_backend *be, int pdl,
                           A... args) {
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t lc = {};
    lc.gridDim = grid;
    lc.blockDim = dim3(GEMV_THREADS);
    lc.stream = stream_of(be);
    lc.attrs = pdl ? &attr : NULL;
    lc.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&lc, kernel, args...);
}

// What gemv_launch hands to the kernel of its variant.
template <typename TY> struct GemvLaunch {
    GemvSet<TY> set;
    const bf16 *x;
    int64_t ldx;
    int M, K, shift, blocks, slices, cps, pdl;
    float alpha, beta;
};

template <typename TY, int J, int MINB, bool SPLIT, bool PDL, bool PIPE>
static cudaError_t gemv_kernel(const ae_backend *be, const GemvLaunch<TY> &l) {
    const dim3 grid((unsigned)l.blocks, (unsigned)l.slices);
    const GemvSet<TY> &s = l.set;
    if (s.n == 1)
        return gemv_go(k_gemv<TY, J, MINB, SPLIT, PDL, PIPE>, grid, be, PDL, s.y[0], s.ldy[0],
                       l.x, l.ldx, s.w[0], s.ldw[0], l.M, s.N[0], l.K, l.shift, l.alpha, l.beta,
                       s.part[0], l.cps);
    return gemv_go(k_gemv_set<TY, J, MINB, SPLIT, PDL, PIPE>, grid, be, PDL, s, l.x, l.ldx, l.M,
                   l.K, l.shift, l.alpha, l.beta, l.cps);
}

// The kernel of the variant: its template parameters picked one runtime value at a time.
template <typename TY, int J, int MINB, bool SPLIT, bool PDL>
static cudaError_t gemv_kernel_pipe(const ae_backend *be, const GemvLaunch<TY> &l, int pipe) {
    return pipe ? gemv_kernel<TY, J, MINB, SPLIT, PDL, true>(be, l)
                : gemv_kernel<TY, J, MINB, SPLIT, PDL, false>(be, l);
}

template <typename TY, int J, int MINB, bool SPLIT>
static cudaError_t gemv_kernel_pdl(const ae_backend *be, const GemvLaunch<TY> &l, int pipe) {
    return l.pdl ? gemv_kernel_pipe<TY, J, MINB, SPLIT, true>(be, l, pipe)
                 : gemv_kernel_pipe<TY, J, MINB, SPLIT, false>(be, l, pipe);
}

template <typename TY, int J, int MINB>
static cudaError_t gemv_kernel_split(const ae_backend *be, const GemvLaunch<TY> &l, int pipe) {
    return l.slices > 1 ? gemv_kernel_pdl<TY, J, MINB, true>(be, l, pipe)
                        : gemv_kernel_pdl<TY, J, MINB, false>(be, l, pipe);
}

template <typename TY, int J>
static cudaError_t gemv_kernel_minb(const ae_backend *be, const GemvLaunch<TY> &l,
                                    const GemvCfg &cfg) {
    return cfg.minb == 4 ? gemv_kernel_split<TY, J, 4>(be, l, cfg.pipe)
                         : gemv_kernel_split<TY, J, 0>(be, l, cfg.pipe);
}

// Slices of K for split-K (1: none): at most cfg.split, each of >= 8 chunks, and partials that
// fit the cuBLASLt workspace (free between cuBLASLt calls on the same stream); *cps: chunks per
// slice.
static int gemv_slices(const ae_backend *be, const GemvCfg &cfg, int M, int64_t n_total,
                       int chunks, int *cps) {
    int s = cfg.split < chunks / 8 ? cfg.split : chunks / 8;
    const ae_cuda *c = cu(be);
    while (s > 1 && (!c->lt_workspace || (size_t)s * M * n_total * 4 > c->lt_workspace_bytes)) s--;
    if (s < 1) s = 1;
    *cps = (chunks + s - 1) / s;
    return (chunks + *cps - 1) / *cps; // no empty slice
}

// One k_gemv launch over products 0..n-1 of x (M, K) (gemv_applies to each): y[i] (M, N[i]) =
// alpha · x · w[i]ᵀ + beta · y[i]. Warps per tile are chosen for all the tiles together. The
// variant is AE_CUDA_GEMV's (gemv_cfg); split-K adds the second pass.
template <typename TY>
static void gemv_launch(const ae_backend *be, int n, TY *const *y, const int64_t *ldy,
                        const bf16 *x, int64_t ldx, const bf16 *const *w, const int64_t *ldw,
                        const int *N, int M, int K, float alpha, float beta, const char *op) {
    const GemvCfg cfg = gemv_cfg();
    GemvLaunch<TY> l;
    memset(&l, 0, sizeof l);
    int tiles = 0;
    int64_t n_total = 0;
    for (int i = 0; i < n; i++) tiles += (N[i] + 7) / 8, n_total += N[i];
    const int chunks = (K + 31) / 32;
    l.slices = cfg.split > 1 ? gemv_slices(be, cfg, M, n_total, chunks, &l.cps) : 1;
    if (cfg.kw) {
        while ((1 << l.shift) < cfg.kw) l.shift++;
    } else {
        // steps of GEMV_J, not cfg.j: the warps per tile (and so the sums) do not depend on j
        l.shift = gemv_kw_shift(tiles * l.slices, l.slices > 1 ? l.cps : chunks,
                                cu(be)->sm_count, cfg.wps);
    }
    const int tiles_per_block = GEMV_WARPS >> l.shift;
    float *part = (float *)cu(be)->lt_workspace;
    for (int i = 0; i < n; i++) {
        l.set.y[i] = y[i], l.set.w[i] = w[i], l.set.ldy[i] = ldy[i], l.set.ldw[i] = ldw[i];
        l.set.N[i] = N[i];
        l.set.first[i] = l.blocks;
        l.blocks += ((N[i] + 7) / 8 + tiles_per_block - 1) / tiles_per_block;
        if (l.slices > 1) l.set.part[i] = part, part += (size_t)l.slices * M * N[i];
    }
    l.set.first[n] = l.blocks;
    l.set.n = n;
    l.x = x, l.ldx = ldx, l.M = M, l.K = K, l.alpha = alpha, l.beta = beta;
    l.pdl = cfg.pdl && cu(be)->cc_major >= 9;
    cudaError_t e;
    switch (cfg.j) {
    case 4: e = gemv_kernel_minb<TY, 4>(be, l, cfg); break;
    case 8: e = gemv_kernel_minb<TY, 8>(be, l, cfg); break;
    default: e = gemv_kernel_minb<TY, GEMV_J>(be, l, cfg); break;
    }
    if (e == cudaSuccess && l.slices > 1) {
        const int64_t outs = (int64_t)M * n_total;
        k_gemv_split_sum<TY><<<(unsigned)((outs + GEMV_THREADS - 1) / GEMV_THREADS), GEMV_THREADS,
                               0, stream_of(be)>>>(l.set, M, l.slices, alpha, beta);
        e = cudaGetLastError();
    }
    cuda_check(be, e, op);
}

template <typename TY>
static void gemv_launch_one(const ae_backend *be, const ae_gemm_args *g, TY *y, const bf16 *x,
                            const bf16 *w) {
    gemv_launch<TY>(be, 1, &y, &g->ldy, x, g->lda, &w, &g->ldb, &g->N, g->M, g->K, g->alpha,
                    g->beta, "gemm");
}

// The k_gemv_swiglu instance of the variant: template parameters picked one runtime value at a
// time (j, minb, pdl, pipe as gemv_kernel's).
template <int J, int MINB, bool PDL>
static cudaError_t swiglu_kernel_pipe(const ae_backend *be, dim3 grid, int pipe, bf16 *act,
                                      const bf16 *x, const bf16 *wg, const bf16 *wu, int M, int N,
                                      int K, int shift) {
    const int64_t ld = N, ldk = K;
    if (pipe)
        return gemv_go(k_gemv_swiglu<J, MINB, PDL, true>, grid, be, PDL, act, ld, x, ldk, wg, wu,
                       ldk, M, N, K, shift);
    return gemv_go(k_gemv_swiglu<J, MINB, PDL, false>, grid, be, PDL, act, ld, x, ldk, wg, wu, ldk,
                   M, N, K, shift);
}

template <int J, int MINB>
static cudaError_t swiglu_kernel_pdl(const ae_backend *be, dim3 grid, const GemvCfg &cfg, int pdl,
                                     bf16 *act, const bf16 *x, const bf16 *wg, const bf16 *wu,
                                     int M, int N, int K, int shift) {
    return pdl ? swiglu_kernel_pipe<J, MINB, true>(be, grid, cfg.pipe, act, x, wg, wu, M, N, K,
                                                   shift)
               : swiglu_kernel_pipe<J, MINB, false>(be, grid, cfg.pipe, act, x, wg, wu, M, N, K,
                                                    shift);
}

template <int J>
static cudaError_t swiglu_kernel_minb(const ae_backend *be, dim3 grid, const GemvCfg &cfg, int pdl,
                                      bf16 *act, const bf16 *x, const bf16 *wg, const bf16 *wu,
                                      int M, int N, int K, int shift) {
    return cfg.minb == 4
               ? swiglu_kernel_pdl<J, 4>(be, grid, cfg, pdl, act, x, wg, wu, M, N, K, shift)
               : swiglu_kernel_pdl<J, 0>(be, grid, cfg, pdl, act, x, wg, wu, M, N, K, shift);
}

// Warps per tile (log2) of the matmul_group launch of the gate and up products (gemv_launch's
// choice for 2 products of N rows, unsplit): the fused kernel must split K the same way.
static int swiglu_kw_shift(const ae_backend *be, const GemvCfg &cfg, int N, int K) {
    int shift = 0;
    if (cfg.kw) {
        while ((1 << shift) < cfg.kw) shift++;
        return shift;
    }
    return gemv_kw_shift(2 * ((N + 7) / 8), (K + 31) / 32, cu(be)->sm_count, cfg.wps);
}

// One k_gemv_swiglu launch: act (M, N) = silu(x·wgᵀ) ⊙ (x·wuᵀ), all packed (row strides K, N).
static void swiglu_launch(const ae_backend *be, const GemvCfg &cfg, bf16 *act, const bf16 *x,
                          const bf16 *wg, const bf16 *wu, int M, int N, int K) {
    const int shift = swiglu_kw_shift(be, cfg, N, K);
    const int tpb = GEMV_WARPS >> shift, pairs = tpb > 1 ? tpb / 2 : 1;
    const dim3 grid((unsigned)(((N + 7) / 8 + pairs - 1) / pairs));
    const int pdl = cfg.pdl && cu(be)->cc_major >= 9;
    cudaError_t e;
    switch (cfg.j) {
    case 4: e = swiglu_kernel_minb<4>(be, grid, cfg, pdl, act, x, wg, wu, M, N, K, shift); break;
    case 8: e = swiglu_kernel_minb<8>(be, grid, cfg, pdl, act, x, wg, wu, M, N, K, shift); break;
    default:
        e = swiglu_kernel_minb<GEMV_J>(be, grid, cfg, pdl, act, x, wg, wu, M, N, K, shift);
        break;
    }
    cuda_check(be, e, "gate_up_silu");
}

// ---- batched small-M GEMV (path 2) ------------------------------------------------------------

// trans_b = 1: product blockIdx.y is the GEMV of path 1 on its own a, b, y.
template <typename TY>
__global__ void __launch_bounds__(GEMV_THREADS)
k_gemv_batched(TY *__restrict__ y, int64_t ldy, int64_t sy, const bf16 *__restrict__ x,
               int64_t ldx, int64_t sx, const bf16 *__restrict__ w, int64_t ldw, int64_t sw,
               int M, int N, int K, int kw_shift, float alpha, float beta) {
    const int64_t z = blockIdx.y;
    gemv_tile<TY, GEMV_J, false, false, false>(y + z * sy, ldy, x + z * sx, ldx, w + z * sw, ldw,
                                               M, N, K, kw_shift, alpha, beta, (int)blockIdx.x,
                                               GemvSlice{});
}

// 8 bf16 values of a 16-byte word as floats.
__device__ __forceinline__ void unpack8(const uint4 v, float (&f)[8]) {
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(u[i] << 16);
        f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}

// trans_b = 0: y_z (MM, N) = alpha · x_z (MM, K) · w_z (K, N) + beta · y_z, z = blockIdx.y.
// Block: CG = 1 << cg_shift groups of 8 columns (columns 8·(blockIdx.x·CG + cg) ..) times
// KS = GEMV_THREADS / CG slices of K; thread (cg, ks) = (tid % CG, tid / CG) sums rows ks,
// ks + KS, ... of its 8 columns for all MM rows of x (x values are warp-wide broadcasts from
// L1). The KS partials of a column are added in slice order through shared memory, one x row
// at a time.
template <typename TY, int MM>
__global__ void __launch_bounds__(GEMV_THREADS)
k_gemv_kn(TY *__restrict__ y, int64_t ldy, int64_t sy, const bf16 *__restrict__ x, int64_t ldx,
          int64_t sx, const bf16 *__restrict__ w, int64_t ldw, int64_t sw, int N, int K,
          int cg_shift, float alpha, float beta) {
    constexpr int U = 4; // rows loaded before they are used
    __shared__ float red[GEMV_THREADS * 8];
    const int64_t z = blockIdx.y;
    x += z * sx, w += z * sw, y += z * sy;
    const int tid = threadIdx.x, CG = 1 << cg_shift, KS = GEMV_THREADS >> cg_shift;
    const int cg = tid & (CG - 1), ks = tid >> cg_shift;
    const int n0 = ((int)blockIdx.x * CG + cg) * 8;
    const bool vec = n0 + 8 <= N; // whole 16-byte group (rows and w 16-byte aligned)
    float acc[MM][8];
#pragma unroll
    for (int m = 0; m < MM; m++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[m][j] = 0.0f;
    auto load = [&](int k, float (&f)[8]) {
        const bf16 *row = w + (int64_t)k * ldw + n0;
        if (vec) {
            unpack8(ld_weights16(row), f);
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) f[j] = n0 + j < N ? __bfloat162float(row[j]) : 0.0f;
        }
    };
    auto use = [&](int k, const float (&f)[8]) {
#pragma unroll
        for (int m = 0; m < MM; m++) {
            const float xv = __bfloat162float(x[(int64_t)m * ldx + k]);
#pragma unroll
            for (int j = 0; j < 8; j++) acc[m][j] = fmaf(xv, f[j], acc[m][j]);
        }
    };
    if (n0 < N) {
        for (int k = ks; k < K; k += U * KS) { // U rows per step, all loads first
            float f[U][8];
#pragma unroll
            for (int u = 0; u < U; u++)
                if (k + u * KS < K) load(k + u * KS, f[u]);
#pragma unroll
            for (int u = 0; u < U; u++)
                if (k + u * KS < K) use(k + u * KS, f[u]);
        }
    }
    // column c = 8·cg + j of the block: partial of slice ks at red[(ks·CG + cg)·8 + j]
    const int c = tid, cols = CG * 8; // thread c < cols finishes column c of the block
    const int n = (int)blockIdx.x * cols + c;
#pragma unroll
    for (int m = 0; m < MM; m++) {
        if (m > 0) __syncthreads(); // red of the previous row has been read
#pragma unroll
        for (int j = 0; j < 8; j++) red[tid * 8 + j] = acc[m][j];
        __syncthreads();
        if (c < cols && n < N) {
            float sum = 0.0f;
            for (int s = 0; s < KS; s++) sum += red[s * cols + c];
            TY *out = y + (int64_t)m * ldy + n;
            float v = alpha * sum;
            if (beta != 0.0f) v += beta * ldf(out);
            stf(out, v);
        }
    }
}

static int batched_applies(const ae_gemm_args *g, ae_ptr a, ae_ptr b) {
    if (g->batch < 2 || g->batch > 65535 || g->trans_a || g->M < 1 || g->M > GEMV_MAX_M)
        return 0;
    if (g->trans_b) // path 1's conditions on every product
        return g->K % 8 == 0 && g->ldb % 8 == 0 && (g->M == 1 || g->lda % 8 == 0) &&
               g->sa % 8 == 0 && g->sb % 8 == 0 && cuda_aligned16(a.data) &&
               cuda_aligned16(b.data);
    return g->ldb % 8 == 0 && g->sb % 8 == 0 && cuda_aligned16(b.data);
}

// Column groups per block (log2) of k_gemv_kn: as many as cover N (at most 32: a block then
// spans 256 columns, each warp a 512-byte run of a row), fewer while the grid has under two
// blocks per SM and every slice of K keeps at least two rows.
static int kn_cg_shift(int N, int K, int batch, int sm_count) {
    const int groups = (N + 7) / 8;
    int shift = 0;
    while (shift < 5 && (1 << shift) < groups) shift++;
    while (shift > 2) {
        const int64_t blocks = (int64_t)batch * ((groups + (1 << shift) - 1) >> shift);
        const int ks_next = GEMV_THREADS >> (shift - 1);
        if (blocks >= 2 * (int64_t)sm_count || K < 2 * ks_next) break;
        shift--;
    }
    return shift;
}

template <typename TY>
static void batched_launch(const ae_backend *be, const ae_gemm_args *g, TY *y, const bf16 *a,
                           const bf16 *b) {
    const int sm = cu(be)->sm_count;
    if (g->trans_b) {
        const int tiles = (g->N + 7) / 8;
        const int shift =
            gemv_kw_shift(tiles * g->batch, (g->K + 31) / 32, sm, GEMV_WARPS_PER_SM);
        const int tiles_per_block = GEMV_WARPS >> shift;
        dim3 grid((unsigned)((tiles + tiles_per_block - 1) / tiles_per_block), (unsigned)g->batch);
        k_gemv_batched<TY><<<grid, GEMV_THREADS, 0, stream_of(be)>>>(
            y, g->ldy, g->sy, a, g->lda, g->sa, b, g->ldb, g->sb, g->M, g->N, g->K, shift,
            g->alpha, g->beta);
    } else {
        const int shift = kn_cg_shift(g->N, g->K, g->batch, sm);
        const int cols = 8 << shift;
        dim3 grid((unsigned)((g->N + cols - 1) / cols), (unsigned)g->batch);
#define KN_CASE(MM)                                                                              \
    case MM:                                                                                     \
        k_gemv_kn<TY, MM><<<grid, GEMV_THREADS, 0, stream_of(be)>>>(                             \
            y, g->ldy, g->sy, a, g->lda, g->sa, b, g->ldb, g->sb, g->N, g->K, shift, g->alpha,   \
            g->beta);                                                                            \
        break;
        switch (g->M) {
            KN_CASE(1) KN_CASE(2) KN_CASE(3) KN_CASE(4) KN_CASE(5) KN_CASE(6) KN_CASE(7)
            KN_CASE(8)
        }
#undef KN_CASE
    }
    cuda_check(be, cudaGetLastError(), "gemm");
}

// ---- plain kernel: any strides, K == 0, shapes cuBLASLt turns down ------------------------------
// One thread per output element (grid-stride over batch · M · N), fp32 dot product over K.
template <typename TY>
__global__ void k_gemm_simple(TY *y, const bf16 *a, const bf16 *b, ae_gemm_args g) {
    const size_t total = (size_t)g.batch * (size_t)g.M * (size_t)g.N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int n = (int)(i % (size_t)g.N);
        const int m = (int)((i / (size_t)g.N) % (size_t)g.M);
        const int64_t z = (int64_t)(i / ((size_t)g.N * (size_t)g.M));
        const bf16 *az = a + z * g.sa, *bz = b + z * g.sb;
        // op(a)[m, k] and op(b)[k, n] as strides along k from their first element
        const bf16 *ap = g.trans_a ? az + m : az + (int64_t)m * g.lda;
        const int64_t as = g.trans_a ? g.lda : 1;
        const bf16 *bp = g.trans_b ? bz + (int64_t)n * g.ldb : bz + n;
        const int64_t bs = g.trans_b ? 1 : g.ldb;
        float s = 0.0f;
        for (int k = 0; k < g.K; k++) s = fmaf(ldf(ap + k * as), ldf(bp + k * bs), s);
        TY *out = y + z * g.sy + (int64_t)m * g.ldy + n;
        float v = g.alpha * s;
        if (g.beta != 0.0f) v += g.beta * ldf(out);
        stf(out, v);
    }
}

static void simple_launch(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a,
                          ae_ptr b) {
    const size_t total = (size_t)g->batch * (size_t)g->M * (size_t)g->N;
    size_t blocks = (total + 255) / 256;
    if (blocks > 65536) blocks = 65536; // grid-stride beyond
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY,
                           k_gemm_simple<TY><<<(unsigned)blocks, 256, 0, stream_of(be)>>>(
                               (TY *)y.data, (const bf16 *)a.data, (const bf16 *)b.data, *g));
    cuda_check(be, cudaGetLastError(), "gemm");
}

// ---- cuBLASLt plan cache ------------------------------------------------------------------------
// Key: the backend state, everything that shapes the descriptors, and the pointer alignments the
// algorithm was chosen for. A fixed open-addressing table shared by all backends (keyed by state
// pointer and device); one thread uses a backend, so no lock. When a probe run is full, its first
// slot is evicted (descriptors destroyed). Entries of a closed backend stay until evicted.

enum { PLAN_SLOTS = 256, PLAN_PROBES = 8 };

typedef struct {
    const void *state; // the ae_cuda
    int device, M, N, K, batch, trans_a, trans_b, y_dtype, beta_zero;
    uint32_t align_a, align_b, align_y; // bytes (1..256) the pointers were aligned to
    int64_t lda, ldb, ldy, sa, sb, sy;  // sa, sb, sy are 0 when batch == 1
} plan_key;

typedef struct {
    int used;
    int simple; // cuBLASLt has no algorithm for this shape: run k_gemm_simple
    plan_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc; // A = b, B = a, C = D = y (see the mapping above)
    cublasLtMatmulAlgo_t algo;
    size_t workspace;
} gemm_plan;

static gemm_plan g_plans[PLAN_SLOTS];

static uint32_t ptr_alignment(const void *p) {
    uint32_t al = 256;
    while (al > 1 && ((uintptr_t)p & (al - 1)) != 0) al >>= 1;
    return al;
}

static plan_key make_key(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a,
                         ae_ptr b) {
    plan_key k;
    memset(&k, 0, sizeof k); // padding bytes take part in hashing and comparison
    k.state = cu(be);
    k.device = cu(be)->device;
    k.M = g->M, k.N = g->N, k.K = g->K, k.batch = g->batch;
    k.trans_a = g->trans_a != 0, k.trans_b = g->trans_b != 0;
    k.y_dtype = (int)y.dtype;
    k.beta_zero = g->beta == 0.0f;
    k.align_a = ptr_alignment(a.data), k.align_b = ptr_alignment(b.data);
    k.align_y = ptr_alignment(y.data);
    k.lda = g->lda, k.ldb = g->ldb, k.ldy = g->ldy;
    if (g->batch > 1) k.sa = g->sa, k.sb = g->sb, k.sy = g->sy;
    return k;
}

static uint32_t key_hash(const plan_key *k) { // FNV-1a over the key's bytes
    const unsigned char *p = (const unsigned char *)k;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static void plan_release(gemm_plan *p) {
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

// Column-major layout (rows x cols, ld) of a bf16 or f32 matrix, `batch` of them `stride` apart.
static cublasStatus_t make_layout(cublasLtMatrixLayout_t *l, cudaDataType_t t, int64_t rows,
                                  int64_t cols, int64_t ld, int batch, int64_t stride) {
    if (cols == 1 && ld < rows) ld = rows; // a single column: ld unused, but checked
    cublasStatus_t st = cublasLtMatrixLayoutCreate(l, t, (uint64_t)rows, (uint64_t)cols, ld);
    if (st != CUBLAS_STATUS_SUCCESS || batch <= 1) return st;
    int32_t count = batch;
    st = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                          sizeof count);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    return cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                            &stride, sizeof stride);
}

// Descriptors and the heuristic's best algorithm for key k (mapping at the top of the file).
// A shape cuBLASLt has no algorithm for sets p->simple and succeeds.
static cublasStatus_t plan_build(const ae_cuda *c, const plan_key *k, gemm_plan *p) {
    memset(p, 0, sizeof *p);
    p->key = *k;
    const cudaDataType_t yt = k->y_dtype == AE_DT_F32 ? CUDA_R_32F : CUDA_R_16BF;
    const cublasOperation_t opa = k->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N; // on b
    const cublasOperation_t opb = k->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N; // on a
    cublasStatus_t st = cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
    if (st == CUBLAS_STATUS_SUCCESS) // A = b: (K x N) when trans_b, else (N x K)
        st = make_layout(&p->la, CUDA_R_16BF, k->trans_b ? k->K : k->N, k->trans_b ? k->N : k->K,
                         k->ldb, k->batch, k->sb);
    if (st == CUBLAS_STATUS_SUCCESS) // B = a: (M x K) when trans_a, else (K x M)
        st = make_layout(&p->lb, CUDA_R_16BF, k->trans_a ? k->M : k->K, k->trans_a ? k->K : k->M,
                         k->lda, k->batch, k->sa);
    if (st == CUBLAS_STATUS_SUCCESS) // C = D = y: (N x M)
        st = make_layout(&p->lc, yt, k->N, k->M, k->ldy, k->batch, k->sy);
    if (st != CUBLAS_STATUS_SUCCESS) return st;

    cublasLtMatmulPreference_t pref = NULL;
    st = cublasLtMatmulPreferenceCreate(&pref);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    const uint64_t ws = c->lt_workspace_bytes;
    const uint32_t al_a = k->align_b, al_b = k->align_a, al_c = k->align_y;
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                              sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                  &al_a, sizeof al_a);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                  &al_b, sizeof al_b);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                  &al_c, sizeof al_c);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                  &al_c, sizeof al_c);
    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, 1,
                                            &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE ||
        (st == CUBLAS_STATUS_SUCCESS && (found < 1 || res.state != CUBLAS_STATUS_SUCCESS))) {
        p->simple = 1; // no algorithm for this shape
        return CUBLAS_STATUS_SUCCESS;
    }
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    p->algo = res.algo;
    p->workspace = res.workspaceSize;
    return CUBLAS_STATUS_SUCCESS;
}

// The cached plan for k, built on first use; NULL after a cuBLAS error (kept in the backend).
static const gemm_plan *plan_get(const ae_backend *be, const plan_key *k) {
    const uint32_t h = key_hash(k);
    gemm_plan *slot = NULL;
    for (int i = 0; i < PLAN_PROBES; i++) {
        gemm_plan *p = &g_plans[(h + (uint32_t)i) % PLAN_SLOTS];
        if (!p->used) {
            slot = p;
            break;
        }
        if (memcmp(&p->key, k, sizeof *k) == 0) return p;
    }
    if (!slot) { // probe run full: evict its first entry
        slot = &g_plans[h % PLAN_SLOTS];
        plan_release(slot);
    }
    cublasStatus_t st = plan_build(cu(be), k, slot);
    if (st != CUBLAS_STATUS_SUCCESS) {
        plan_release(slot);
        cuda_check_blas(be, (int)st, "gemm");
        return NULL;
    }
    slot->used = 1;
    return slot;
}

// Rows that overlap (ld shorter than the row with more than one row) or negative strides:
// outside what cuBLASLt accepts.
static int lt_accepts(const ae_gemm_args *g) {
    const int64_t a_row = g->trans_a ? g->M : g->K, a_rows = g->trans_a ? g->K : g->M;
    const int64_t b_row = g->trans_b ? g->K : g->N, b_rows = g->trans_b ? g->N : g->K;
    if ((a_rows > 1 && g->lda < a_row) || (b_rows > 1 && g->ldb < b_row) ||
        (g->M > 1 && g->ldy < g->N))
        return 0;
    if (g->batch > 1 && (g->sa < 0 || g->sb < 0 || g->sy < 0)) return 0;
    return 1;
}

static void lt_run(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a, ae_ptr b) {
    const plan_key k = make_key(be, g, y, a, b);
    const gemm_plan *p = plan_get(be, &k);
    if (!p) return;
    if (p->simple) {
        simple_launch(be, g, y, a, b);
        return;
    }
    const ae_cuda *c = cu(be);
    const float alpha = g->alpha, beta = g->beta;
    cublasStatus_t st = cublasLtMatmul(c->lt, p->op, &alpha, b.data, p->la, a.data, p->lb, &beta,
                                       y.data, p->lc, y.data, p->lc, &p->algo, c->lt_workspace,
                                       p->workspace, stream_of(be));
    cuda_check_blas(be, (int)st, "gemm");
}

// ---- entry -------------------------------------------------------------------------------------

void ae_cuda_gemm(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a, ae_ptr b) {
    if (cuda_failed(be)) return;
    cuda_need(y, AE_M_FLOAT, "gemm", "y");
    cuda_need(a, AE_M_BF16, "gemm", "a");
    cuda_need(b, AE_M_BF16, "gemm", "b");
    if (g->M <= 0 || g->N <= 0 || g->batch <= 0) return;
    if (g->K <= 0) { // y = beta · y (y = 0 without reading it when beta is 0)
        if (g->beta != 1.0f) simple_launch(be, g, y, a, b);
        return;
    }
    if (gemv_applies(g, a, b)) {
        AE_CUDA_FLOAT_DISPATCH(y.dtype, TY,
                               gemv_launch_one<TY>(be, g, (TY *)y.data, (const bf16 *)a.data,
                                                   (const bf16 *)b.data));
        return;
    }
    if (batched_applies(g, a, b)) {
        AE_CUDA_FLOAT_DISPATCH(y.dtype, TY,
                               batched_launch<TY>(be, g, (TY *)y.data, (const bf16 *)a.data,
                                                  (const bf16 *)b.data));
        return;
    }
    if (!lt_accepts(g)) {
        simple_launch(be, g, y, a, b);
        return;
    }
    lt_run(be, g, y, a, b);
}

// matmul_group: one GEMV launch for all products when each would take the GEMV path on its own
// (and the outputs share a dtype), else one gemm per product (cuBLASLt for M > 8).
void ae_cuda_matmul_group(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                          const int *N, int M, int K) {
    if (cuda_failed(be)) return;
    ae_gemm_args g[AE_MATMUL_GROUP_MAX];
    ae_ptr yy[AE_MATMUL_GROUP_MAX], ww[AE_MATMUL_GROUP_MAX];
    int m = 0, gemv = n >= 1 && n <= AE_MATMUL_GROUP_MAX && K > 0;
    for (int i = 0; i < n; i++) {
        cuda_need(y[i], AE_M_FLOAT, "matmul_group", "y");
        cuda_need(w[i], AE_M_BF16, "matmul_group", "w");
        if (N[i] <= 0) continue; // nothing to compute
        ae_gemm_args gi = {.M = M, .N = N[i], .K = K, .batch = 1, .trans_a = 0, .trans_b = 1,
                           .lda = K, .ldb = K, .ldy = N[i], .alpha = 1.0f, .beta = 0.0f};
        if (m < AE_MATMUL_GROUP_MAX) {
            g[m] = gi, yy[m] = y[i], ww[m] = w[i];
            gemv = gemv && gemv_applies(&gi, x, w[i]) && y[i].dtype == yy[0].dtype;
        }
        m++;
    }
    if (gemv && m > 1) {
        int64_t ldy[AE_MATMUL_GROUP_MAX], ldw[AE_MATMUL_GROUP_MAX];
        const bf16 *wp[AE_MATMUL_GROUP_MAX];
        int Ns[AE_MATMUL_GROUP_MAX];
        for (int i = 0; i < m; i++)
            ldy[i] = g[i].ldy, ldw[i] = g[i].ldb, wp[i] = (const bf16 *)ww[i].data, Ns[i] = g[i].N;
        cuda_need(x, AE_M_BF16, "matmul_group", "x");
        AE_CUDA_FLOAT_DISPATCH(yy[0].dtype, TY, {
            TY *yp[AE_MATMUL_GROUP_MAX];
            for (int i = 0; i < m; i++) yp[i] = (TY *)yy[i].data;
            gemv_launch<TY>(be, m, yp, ldy, (const bf16 *)x.data, K, wp, ldw, Ns, M, K, 1.0f,
                            0.0f, "matmul_group");
        });
        return;
    }
    for (int i = 0; i < n; i++) {
        ae_gemm_args gi = {.M = M, .N = N[i], .K = K, .batch = 1, .trans_a = 0, .trans_b = 1,
                           .lda = K, .ldb = K, .ldy = N[i], .alpha = 1.0f, .beta = 0.0f};
        ae_cuda_gemm(be, &gi, y[i], x, w[i]);
    }
}

// gate_up_silu: the fused GEMV when matmul_group would run the two products as one GEMV launch
// unsplit (so that the sums are the ones it would write) and every tensor is BF16 (act); else
// matmul_group and silu_mul themselves (M > 8: cuBLASLt; split-K; F32 outputs).
void ae_cuda_gate_up_silu(const ae_backend *be, ae_ptr act, ae_ptr g, ae_ptr u, ae_ptr x,
                          ae_ptr wg, ae_ptr wu, int M, int K, int N) {
    if (cuda_failed(be)) return;
    const char *op = "gate_up_silu";
    cuda_need(act, AE_M_FLOAT, op, "act");
    cuda_need(g, AE_M_FLOAT, op, "g");
    cuda_need(u, AE_M_FLOAT, op, "u");
    cuda_need(x, AE_M_BF16, op, "x");
    cuda_need(wg, AE_M_BF16, op, "wg");
    cuda_need(wu, AE_M_BF16, op, "wu");
    if (M <= 0 || N <= 0) return;
    const GemvCfg cfg = gemv_cfg();
    const ae_gemm_args gi = {.M = M, .N = N, .K = K, .batch = 1, .trans_a = 0, .trans_b = 1,
                             .lda = K, .ldb = K, .ldy = N, .alpha = 1.0f, .beta = 0.0f};
    int cps = 0;
    const int unsplit =
        cfg.split <= 1 || gemv_slices(be, cfg, M, 2 * (int64_t)N, (K + 31) / 32, &cps) == 1;
    if (K > 0 && unsplit && gemv_applies(&gi, x, wg) && gemv_applies(&gi, x, wu) &&
        act.dtype == AE_DT_BF16 && g.dtype == AE_DT_BF16 && u.dtype == AE_DT_BF16) {
        swiglu_launch(be, cfg, (bf16 *)act.data, (const bf16 *)x.data, (const bf16 *)wg.data,
                      (const bf16 *)wu.data, M, N, K);
        return;
    }
    ae_ptr ys[2] = {g, u}, ws[2] = {wg, wu};
    const int Ns[2] = {N, N};
    ae_cuda_matmul_group(be, 2, ys, x, ws, Ns, M, K);
    ae_cuda_silu_mul(be, act, g, u, (size_t)M * N);
}
