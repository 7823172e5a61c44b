// Qwen3-MoE sparse block on the GPU: the router (softmax over E experts, top-K, optional
// renormalisation) and the experts (SwiGLU MLPs) run as grouped GEMMs over the tokens routed to
// each expert, with no host synchronisation.
//
// moe_route: one warp per token (writing the probabilities too when asked: training). The
// probabilities are formed as cpu_moe.c does: max, exp(z - max)
// (in double, rounded to float: the correctly rounded value, which the host's expf also returns
// in all but rare cases), their sum in double, p = (float)(e / sum). Top-K takes K rounds of a
// warp argmax (ties to the lower index) over the experts not yet taken, which is the CPU's
// selection order; renormalisation divides by the fp32 sum of the K weights in slot order, as
// the CPU. Indices match the CPU exactly and weights to the last bit but for the rare expf
// rounding difference (1 ulp).
//
// moe_ffn at a handful of tokens (decode) takes the GEMV path of cuda_moe_decode.cu instead
// (AE_MOE_GEMV, moe_gemv_pick). Otherwise, for each chunk of tokens (bounding the temporaries:
// moe_chunk_bytes), in five launches:
//   1. plan (two launches over blocks of kPlanSlots slots): a slot is a (token, k) pair, s = t·K
//      + k. k_moe_count: per block, per-expert slot counts (shared atomics; each slot gets a rank
//      within its expert and block), written to the block's row of a (blocks, E) table.
//      k_moe_place: every block adds the table up (per expert: the total, and the blocks before
//      it), scans the totals into off[e] (first slot of expert e in `order`) and tile_off[e]
//      (first row tile of expert e, tiles of BMT slots: 16 when experts get few slots each, as in
//      decoding, else 64; block 0 writes both), then order[off[e] + before + rank] = s. The order
//      of slots within an expert varies run to run; it does not matter, as every slot's results
//      go to that slot's own rows (an mma row depends on its own inputs only).
//   2. gate/up GEMM: block (row tile, column tile) finds its expert by binary search in tile_off;
//      it multiplies the gathered rows of x (BMT slots, D) by the expert's gate and up rows (BN
//      each) with bf16 mma.sync (fp32 accumulation) over a cp.async pipeline (GemmShape), and
//      writes h = silu(gate) ⊙ up as bf16 into row s of h (slots, Im).
//   3. down GEMM: the same kernel on rows of h and the expert's down rows, writing o (slots, D)
//      in bf16 by default, fp32 under AE_MOE_DOWN_BF16=0 (moe_down_bf16).
//   4. combine: y[t] = Σ_k wts[t,k] · o[t·K + k] in k order (fp32, one rounding to y's dtype).
// On Hopper (compute capability 9.0, sm_90a code loaded) the dense case's gate/up and down GEMMs
// (and expert_matmul's forward) may run on wgmma instead (cuda_moe_wgmma.cu: row tiles of 128
// slots, the plan's bm then 128): AE_MOE_WGMMA=0|1 (never | wherever the shapes allow), unset:
// moe_wgmma_pick's default.
// No float atomics anywhere: results are deterministic. The grids are sized for the worst case
// (tiles <= (slots + E·(BMT-1)) / BMT) and surplus blocks exit at once.
// Agreement with the CPU (fp32 throughout): h is rounded to bf16 between the two GEMMs, o (by
// default) before the combine and y to bf16 at the end, so expect bf16-level differences
// (relative L2 error ~2e-3 measured on random data with fp32 o, a few 1e-3 of max |y|
// elementwise); the sums themselves are fp32. Slots whose expert id is outside [0, E) contribute
// nothing.
// expert_matmul / expert_matmul_bwd (training; contracts in ops.h) run the same GEMM kernel on
// slot rows already grouped by expert (moe_plan's positions: identity row order), its tile
// offsets computed on the device from the slot offsets (k_tile_offsets: one block, one scan), so
// nothing waits for the host. Forward: gate and up in one launch (two accumulators, both
// written) or one weight. Input gradient dx = Σ_i dy_i · W_i (W_i (N, Kd) per expert): the
// weights are read K-major (shared-memory rows along the output columns, B fragments through
// ldmatrix.trans) and the two products are one reduction of twice the depth into one
// accumulator; dx is overwritten or added to (one rounding). Dense tiles (64 x 64, depth 32).
// Weight gradients dW_e += dy[rows]ᵀ · x[rows]: k_expert_dw, one block per (expert, 64 x 64
// tile of dW_e) walking the expert's rows in order (no atomics). Against the CPU's per-expert
// gemm calls on the same bf16 values: F32 outputs differ by the fp32 summation order only (~1e-6
// relative), BF16 outputs by one rounding. A BF16 dW (--grad-dtype bf16) gets the same fp32
// tile sums added to its old value in fp32 and rounded once: round-to-bf16 of the F32 result
// when the old value is bf16-exact (e.g. zero).
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_moe.h"

namespace {

// ---- routing -------------------------------------------------------------------------------------

constexpr int kRouteWarps = 4;   // tokens per block
constexpr int kRouteMaxE = 1024; // experts: up to 32 per lane (a 32-bit "taken" mask per lane)
constexpr int kRouteMaxK = 32;   // one selected expert per lane

// idx, wts: (T, K);  logits, probs (null: not written): (T, E). Shared memory: kRouteWarps · E
// floats.
__global__ void __launch_bounds__(32 * kRouteWarps)
k_moe_route(int32_t *idx, float *wts, float *probs, const float *logits, int T, int E, int K,
            int renorm) {
    extern __shared__ float sp[];
    const unsigned all = 0xffffffffu;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int t = blockIdx.x * kRouteWarps + warp;
    if (t >= T) return; // warp-level work only below
    float *p = sp + (size_t)warp * E;
    const float *z = logits + (size_t)t * E;

    float mx = -INFINITY;
    for (int i = lane; i < E; i += 32) {
        float v = z[i];
        p[i] = v;
        mx = fmaxf(mx, v);
    }
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(all, mx, o));
    double sum = 0.0;
    for (int i = lane; i < E; i += 32) {
        float e = (float)exp((double)(p[i] - mx));
        p[i] = e;
        sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(all, sum, o);
    for (int i = lane; i < E; i += 32) {
        p[i] = (float)((double)p[i] / sum);
        if (probs) probs[(size_t)t * E + i] = p[i];
    }
    __syncwarp();

    // K rounds of argmax over the experts not taken; expert i = lane + 32·j is bit j of `taken`.
    uint32_t taken = 0;
    int my_i = 0;
    float my_p = 0.0f;
    for (int j = 0; j < K; j++) {
        float bv = -INFINITY;
        int bi = INT_MAX;
        for (int jj = 0, i = lane; i < E; jj++, i += 32) {
            float v = p[i];
            v = v == v ? v : -INFINITY; // NaN ranks lowest
            if (!(taken >> jj & 1u) && (v > bv || (v == bv && i < bi))) bv = v, bi = i;
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(all, bv, o);
            int oi = __shfl_xor_sync(all, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
        }
        if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
        if (lane == j) my_i = bi, my_p = p[bi];
    }
    float s = 0.0f; // the CPU's renormaliser: fp32, slot order
    for (int j = 0; j < K; j++) s += __shfl_sync(all, my_p, j);
    if (lane < K) {
        idx[(size_t)t * K + lane] = my_i;
        wts[(size_t)t * K + lane] = renorm ? my_p / s : my_p;
    }
}

// ---- plan: group slots by expert ----------------------------------------------------------------

constexpr int BN = 64;            // GEMM tile: BMT slots x BN output columns
constexpr int kSparse = 24;       // fewer slots per expert than this on average: 16-slot tiles
constexpr int kGemmThreads = 128; // 4 warps
constexpr int kPlanThreads = 1024;
constexpr int kMaxE = 2048;       // plan's shared memory: 5·E + 2 ints

// Exclusive prefix sums of a[0, n) into out[0, n], out[n] = total, all in shared memory; the
// whole block calls it. `ws`: 32 ints of shared scratch.
__device__ void block_exclusive_scan(const int *a, int *out, int n, int *ws) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int carry = 0;
    for (int base = 0; base < n; base += blockDim.x) {
        int i = base + threadIdx.x, v = i < n ? a[i] : 0, x = v;
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += y;
        }
        if (lane == 31) ws[warp] = x;
        __syncthreads();
        if (warp == 0) {
            int w = lane < nw ? ws[lane] : 0;
            for (int o = 1; o < 32; o <<= 1) {
                int y = __shfl_up_sync(0xffffffffu, w, o);
                if (lane >= o) w += y;
            }
            ws[lane] = w; // inclusive sums of the warp totals
        }
        __syncthreads();
        if (i < n) out[i] = carry + (warp > 0 ? ws[warp - 1] : 0) + x - v;
        carry += ws[nw - 1];
        __syncthreads(); // ws is rewritten by the next round
    }
    if (threadIdx.x == 0) out[n] = carry;
}

// The plan's blocks: kPlanSlots slots each (ceil(slots / kPlanSlots) blocks; one block used to
// plan every slot, 49 µs at Qwen3-30B-A3B's 32768 slots on an H200, 6% of moe_ffn).
constexpr int kPlanSlots = 4 * kPlanThreads;
static int plan_blocks(size_t slots) { return (int)((slots + kPlanSlots - 1) / kPlanSlots); }

// k_moe_count, block b of the slots [b·kPlanSlots, + kPlanSlots) below `slots`: rank[s] = the
// slot's rank among its expert's slots in this block (−1: an invalid expert, no slot), bcnt[b·E +
// e] = this block's slots of expert e. Dynamic shared memory: E ints.
__global__ void __launch_bounds__(kPlanThreads)
k_moe_count(const int32_t *idx, int slots, int E, int *rank, int *bcnt) {
    extern __shared__ int cnt[];
    for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    const int s0 = blockIdx.x * kPlanSlots, s1 = min(slots, s0 + kPlanSlots);
    for (int s = s0 + threadIdx.x; s < s1; s += blockDim.x) {
        const int e = idx[s];
        rank[s] = e >= 0 && e < E ? atomicAdd(&cnt[e], 1) : -1;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) bcnt[(size_t)blockIdx.x * E + e] = cnt[e];
}

// k_moe_place, block b (the same slots as k_moe_count's block b): from the table bcnt (gridDim.x
// rows of E), each expert's total and this block's count before it; exclusive scans of the totals
// and of their row tiles of bm (block 0 writes off, tile_off: E + 1 each); order[off[e] + before
// + rank[s]] = s. Dynamic shared memory: (5·E + 2) ints.
__global__ void __launch_bounds__(kPlanThreads)
k_moe_place(const int32_t *idx, int slots, int E, int bm, const int *rank, const int *bcnt, int *off,
            int *tile_off, int *order) {
    extern __shared__ int sm[];
    __shared__ int ws[32];
    int *tot = sm, *before = sm + E, *tiles = sm + 2 * E, *soff = sm + 3 * E,
        *stoff = sm + 4 * E + 1;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int t = 0, bf = 0;
        for (int b = 0; b < (int)gridDim.x; b++) {
            const int c = bcnt[(size_t)b * E + e];
            if (b == (int)blockIdx.x) bf = t;
            t += c;
        }
        tot[e] = t, before[e] = bf, tiles[e] = (t + bm - 1) / bm;
    }
    __syncthreads();
    block_exclusive_scan(tot, soff, E, ws);
    __syncthreads();
    block_exclusive_scan(tiles, stoff, E, ws);
    __syncthreads();
    if (blockIdx.x == 0)
        for (int e = threadIdx.x; e <= E; e += blockDim.x) off[e] = soff[e], tile_off[e] = stoff[e];
    const int s0 = blockIdx.x * kPlanSlots, s1 = min(slots, s0 + kPlanSlots);
    for (int s = s0 + threadIdx.x; s < s1; s += blockDim.x) {
        const int r = rank[s];
        if (r >= 0) {
            const int e = idx[s];
            order[soff[e] + before[e] + r] = s;
        }
    }
}

// ---- grouped GEMM ---------------------------------------------------------------------------------

// The grouped GEMM's contract: ExpertGemm (cuda_moe.h).
__device__ __forceinline__ unsigned smem_addr(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
// The four 8x8 matrices transposed: lane l receives column l/4, rows 2·(l%4) and +1.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
// c (16x8 fp32) += a (16x16 bf16, row-major) · b (16x8 bf16, column-major)
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 8 values row[k, k + 8) into shared memory: one cp.async where allowed, else plain loads with
// zeros past kd. A null row (slot past the tile, column past N) is skipped: its smem row only
// feeds output rows / columns that are never stored.
__device__ __forceinline__ void load8(bf16 *dst, const bf16 *row, int k, int kd, int vec) {
    if (!row) return;
    if (vec && k + 8 <= kd) {
        cp_async16(dst, row + k);
        return;
    }
    uint32_t w[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t lo = k + 2 * j < kd ? __bfloat16_as_ushort(row[k + 2 * j]) : 0u;
        uint32_t hi = k + 2 * j + 1 < kd ? __bfloat16_as_ushort(row[k + 2 * j + 1]) : 0u;
        w[j] = lo | hi << 16;
    }
    *reinterpret_cast<uint4 *>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
}

// Tile shapes. BMT slots x BN columns, depth BKT per pipeline stage, ST stages (cp.async):
//   dense (many slots per expert): 64 x 64, depth 32, 3 stages;
//   sparse (decoding: 1-2 slots per expert, weight streaming dominates): 16 x 64, depth 64,
//   4 stages, so that 3 stages of weights (48 KiB with gate and up) are in flight per block.
// The smem row pitch (BKT + 8 for A rows and Linear weight rows, BN + 8 for the K-major weight
// rows of KMAJ) keeps ldmatrix's 8 rows on distinct banks.
template <int BMT, int BKT, int ST, bool DUAL, bool KMAJ> struct GemmShape {
    static constexpr int NB = DUAL ? 2 * BN : BN; // weight rows per stage (gate, then up rows)
    static constexpr int PITCH = BKT + 8, PITCHK = BN + 8;
    static constexpr int B_ELEMS = KMAJ ? BKT * PITCHK : NB * PITCH; // per stage
    static constexpr size_t smem() { return (size_t)ST * (BMT * PITCH + B_ELEMS) * sizeof(bf16); }
};

// The 4 warps split the tile WM x WN (2 x 2 for BMT = 64, 1 x 4 for BMT = 16), each warp
// computing MI x NJ mma tiles of 16 x 8. Dynamic shared memory: GemmShape::smem().
template <int BMT, int BKT, int ST, bool DUAL, bool KMAJ, typename TY>
__global__ void __launch_bounds__(kGemmThreads) k_expert_gemm(ExpertGemm p) {
    using S = GemmShape<BMT, BKT, ST, DUAL, KMAJ>;
    constexpr int NB = S::NB, PITCH = S::PITCH, PITCHK = S::PITCHK, NM = DUAL ? 2 : 1;
    constexpr int WM = BMT / 32 > 0 ? BMT / 32 : 1, WN = 4 / WM;
    constexpr int MI = BMT / WM / 16, NJ = BN / WN / 8;
    constexpr int CPR = BKT / 8, RSTEP = kGemmThreads / CPR; // 16-byte chunks per row; rows per pass
    constexpr int AL = (BMT + RSTEP - 1) / RSTEP, BL = NB / RSTEP;
    constexpr int CPRK = BN / 8, RSTEPK = kGemmThreads / CPRK, BLK = BKT / RSTEPK; // KMAJ loads
    static_assert(MI >= 1 && NJ % 2 == 0 && NB % RSTEP == 0 && BKT % 16 == 0, "tile shape");
    static_assert(!(KMAJ && DUAL) && (!KMAJ || BKT % RSTEPK == 0), "K-major tile shape");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    auto sa = reinterpret_cast<bf16 (*)[BMT][PITCH]>(smem_raw);                          // [ST]
    unsigned char *sb_raw = smem_raw + (size_t)ST * BMT * PITCH * 2;
    auto sb = reinterpret_cast<bf16 (*)[NB][PITCH]>(sb_raw);      // [ST], Linear weight rows
    auto sbk = reinterpret_cast<bf16 (*)[BKT][PITCHK]>(sb_raw);   // [ST], KMAJ: rows of depth
    __shared__ int slot[BMT];

    // This block's expert and its tile of slots.
    int e, pos0, rows;
    if (!expert_tile(p, blockIdx.x, BMT, &e, &pos0, &rows)) return;
    int n0 = blockIdx.y * BN, tid = threadIdx.x;
    if (tid < BMT) slot[tid] = tid >= rows ? -1 : p.order ? p.order[pos0 + tid] : pos0 + tid;
    __syncthreads();

    // Chunks this thread loads: tile rows lr + RSTEP·i, values kc .. kc + 8 of the stage.
    int lr = tid / CPR, kc = (tid % CPR) * 8;
    int64_t arow[AL]; // A row offsets (elements), -1: no row
#pragma unroll
    for (int i = 0; i < AL; i++) {
        int r = lr + RSTEP * i;
        arow[i] = r < rows ? (int64_t)(slot[r] / p.a_div) * p.lda : -1;
    }
    const bf16 *brow[KMAJ ? 1 : BL];
    if constexpr (!KMAJ) {
#pragma unroll
        for (int i = 0; i < BL; i++) {
            int r = lr + RSTEP * i, n = n0 + r % BN;
            const bf16 *w = r < BN ? p.w0 : p.w1;
            brow[i] = n < p.N ? w + ((size_t)e * p.N + n) * p.Kd : nullptr;
        }
    }
    int lrk = tid / CPRK, nck = (tid % CPRK) * 8; // KMAJ: depth rows lrk + RSTEPK·i, columns nck..
    int nk1 = (p.Kd + BKT - 1) / BKT, nk = KMAJ ? nk1 * p.nsrc : nk1;
    auto load_stage = [&](int st, int kt) {
        int src = KMAJ && kt >= nk1, k0 = (kt - src * nk1) * BKT;
        const bf16 *as = src ? p.a1 : p.a0;
#pragma unroll
        for (int i = 0; i < AL; i++)
            if (lr + RSTEP * i < BMT)
                load8(&sa[st][lr + RSTEP * i][kc], arow[i] >= 0 ? as + arow[i] : nullptr,
                      k0 + kc, p.Kd, p.vec_a);
        if constexpr (KMAJ) {
            const bf16 *ws = src ? p.w1 : p.w0;
#pragma unroll
            for (int i = 0; i < BLK; i++) {
                int k = k0 + lrk + RSTEPK * i;
                bf16 *dst = &sbk[st][lrk + RSTEPK * i][nck];
                if (k < p.Kd) load8(dst, ws + ((size_t)e * p.Kd + k) * p.N, n0 + nck, p.N, p.vec_b);
                else *reinterpret_cast<uint4 *>(dst) = make_uint4(0u, 0u, 0u, 0u); // past the depth
            }
        } else {
#pragma unroll
            for (int i = 0; i < BL; i++)
                load8(&sb[st][lr + RSTEP * i][kc], brow[i], k0 + kc, p.Kd, p.vec_b);
        }
    };

    int warp = tid >> 5, lane = tid & 31;
    int wm = (warp / WN) * (BMT / WM), wn = (warp % WN) * (BN / WN);
    float acc[NM][MI][NJ][4];
#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
            for (int j = 0; j < NJ; j++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[m][i][j][q] = 0.0f;

#pragma unroll
    for (int st = 0; st < ST - 1; st++) {
        if (st < nk) load_stage(st, st);
        cp_async_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        cp_async_wait<ST - 2>(); // k tile kt has landed (this thread's part)
        __syncthreads();         // everyone's part; and stage (kt - 1) is free again
        int nxt = kt + ST - 1;
        if (nxt < nk) load_stage(nxt % ST, nxt);
        cp_async_commit();
        int st = kt % ST;
#pragma unroll
        for (int ks = 0; ks < BKT; ks += 16) {
            uint32_t af[MI][4];
#pragma unroll
            for (int i = 0; i < MI; i++)
                ldmatrix_x4(af[i], &sa[st][wm + 16 * i + (lane & 15)][ks + (lane >> 4) * 8]);
#pragma unroll
            for (int m = 0; m < NM; m++) {
                uint32_t bfr[NJ][2];
#pragma unroll
                for (int j = 0; j < NJ / 2; j++) {
                    uint32_t r[4];
                    if constexpr (KMAJ) // matrices (k 0-7 | 8-15) x (n 0-7 | 8-15), transposed
                        ldmatrix_x4_trans(r, &sbk[st][ks + (lane & 7) + ((lane >> 3) & 1) * 8]
                                                 [wn + 16 * j + (lane >> 4) * 8]);
                    else
                        ldmatrix_x4(r, &sb[st][m * BN + wn + 16 * j + (lane & 7) +
                                               ((lane >> 4) << 3)][ks + ((lane >> 3) & 1) * 8]);
                    bfr[2 * j][0] = r[0], bfr[2 * j][1] = r[1];
                    bfr[2 * j + 1][0] = r[2], bfr[2 * j + 1][1] = r[3];
                }
#pragma unroll
                for (int i = 0; i < MI; i++)
#pragma unroll
                    for (int j = 0; j < NJ; j++) mma_bf16(acc[m][i][j], af[i], bfr[j][0], bfr[j][1]);
            }
        }
    }
    cp_async_wait<0>();

    // Epilogue: accumulator (i, j, q) is tile row wm + 16i + lane/4 (+8 for q >= 2), column
    // wn + 8j + 2·(lane%4) (+1 for odd q).
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int r = wm + 16 * i + (lane >> 2) + 8 * half;
            if (r >= rows) continue;
            size_t base = (size_t)slot[r] * p.N;
            TY *y0 = (TY *)p.y0 + base;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                int col = n0 + wn + 8 * j + 2 * (lane & 3);
                if (col >= p.N) continue;
                float v0 = acc[0][i][j][2 * half], v1 = acc[0][i][j][2 * half + 1];
                if constexpr (DUAL) {
                    float u0 = acc[NM - 1][i][j][2 * half], u1 = acc[NM - 1][i][j][2 * half + 1];
                    if (p.silu) {
                        v0 = silu_mul(v0, u0);
                        v1 = silu_mul(v1, u1);
                    } else {
                        store_cols((TY *)p.y1 + base, col, p.N, u0, u1, p.pair, 0);
                    }
                }
                store_cols(y0, col, p.N, v0, v1, p.pair, p.accumulate);
            }
        }
}

// ---- expert weight gradients ---------------------------------------------------------------------

// dw[e] (N, Kd) += dy[rows]ᵀ · x[rows] over the rows off[e] .. off[e+1]−1 of expert e: a grouped
// TN product reduced over each expert's own rows. Grid (Kd tiles, N tiles, experts): every
// block owns one 64 x 64 tile of one expert's gradient and walks that expert's rows in order
// (depth 32 per stage, 3 cp.async stages), so each value is added to once, in a fixed order: no
// atomics, the same bits on every run. Both operands lie K-major in memory (a row of dy or x is
// one step of the reduction), so both fragments come through ldmatrix.trans; rows past the
// expert's range are zeros. dw is F32 or BF16 (TW: one rounding of old value + tile sum).
struct ExpertDw {
    const int *off;
    const bf16 *dy, *x; // (S, N), (S, Kd)
    void *dw;           // (E, N, Kd) TW
    int N, Kd;
    int vec_dy, vec_x;  // 16-byte loads allowed
};

constexpr int kDwBK = 32, kDwST = 3, kDwPitch = BN + 8;

template <typename TW>
__global__ void __launch_bounds__(kGemmThreads) k_expert_dw(ExpertDw p) {
    __shared__ __align__(16) bf16 sa[kDwST][kDwBK][kDwPitch]; // dy rows: [row][m]
    __shared__ __align__(16) bf16 sb[kDwST][kDwBK][kDwPitch]; // x rows:  [row][n]
    constexpr int CPR = BN / 8, RSTEP = kGemmThreads / CPR, LD = kDwBK / RSTEP;
    constexpr int MI = 2, NJ = 4; // 2 x 2 warps of 32 x 32
    int e = blockIdx.z, first = p.off[e], cnt = p.off[e + 1] - first;
    if (cnt <= 0) return;
    int m0 = blockIdx.y * BN, n0 = blockIdx.x * BN, tid = threadIdx.x;
    int lr = tid / CPR, c8 = (tid % CPR) * 8;
    auto load_stage = [&](int st, int kt) {
#pragma unroll
        for (int i = 0; i < LD; i++) {
            int r = lr + RSTEP * i, row = kt * kDwBK + r;
            bf16 *da = &sa[st][r][c8], *db = &sb[st][r][c8];
            if (row < cnt) {
                size_t q = (size_t)(first + row);
                load8(da, p.dy + q * p.N, m0 + c8, p.N, p.vec_dy);
                load8(db, p.x + q * p.Kd, n0 + c8, p.Kd, p.vec_x);
            } else { // past the expert's rows: zeros, as they enter the reduction
                *reinterpret_cast<uint4 *>(da) = make_uint4(0u, 0u, 0u, 0u);
                *reinterpret_cast<uint4 *>(db) = make_uint4(0u, 0u, 0u, 0u);
            }
        }
    };
    int warp = tid >> 5, lane = tid & 31, wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    float acc[MI][NJ][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;
    int nk = (cnt + kDwBK - 1) / kDwBK;
#pragma unroll
    for (int st = 0; st < kDwST - 1; st++) {
        if (st < nk) load_stage(st, st);
        cp_async_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        cp_async_wait<kDwST - 2>();
        __syncthreads();
        int nxt = kt + kDwST - 1;
        if (nxt < nk) load_stage(nxt % kDwST, nxt);
        cp_async_commit();
        int st = kt % kDwST;
#pragma unroll
        for (int ks = 0; ks < kDwBK; ks += 16) {
            uint32_t af[MI][4], bfr[NJ][2];
#pragma unroll
            for (int i = 0; i < MI; i++) // matrices (m 0-7 | 8-15) x (k 0-7 | 8-15), transposed
                ldmatrix_x4_trans(af[i], &sa[st][ks + (lane & 7) + ((lane >> 4) & 1) * 8]
                                            [wm + 16 * i + ((lane >> 3) & 1) * 8]);
#pragma unroll
            for (int j = 0; j < NJ / 2; j++) {
                uint32_t r[4];
                ldmatrix_x4_trans(r, &sb[st][ks + (lane & 7) + ((lane >> 3) & 1) * 8]
                                        [wn + 16 * j + (lane >> 4) * 8]);
                bfr[2 * j][0] = r[0], bfr[2 * j][1] = r[1];
                bfr[2 * j + 1][0] = r[2], bfr[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int j = 0; j < NJ; j++) mma_bf16(acc[i][j], af[i], bfr[j][0], bfr[j][1]);
        }
    }
    cp_async_wait<0>();
    TW *dwe = (TW *)p.dw + (size_t)e * p.N * p.Kd;
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int m = m0 + wm + 16 * i + (lane >> 2) + 8 * half;
            if (m >= p.N) continue;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                int col = n0 + wn + 8 * j + 2 * (lane & 3);
                if (col >= p.Kd) continue;
                store_cols(dwe + (size_t)m * p.Kd, col, p.Kd, acc[i][j][2 * half],
                           acc[i][j][2 * half + 1], p.Kd % 2 == 0, 1);
            }
        }
}

// ---- combine --------------------------------------------------------------------------------------

// y[t, d] = Σ_k wts[t,k] · o[t·K + k, d] over slots with a valid expert, k in order, in fp32
// whatever o's dtype TO (bf16, or fp32 under AE_MOE_DOWN_BF16=0: moe_down_bf16).
// Grid (T, column blocks); V columns per thread.   y: (T, D);  o: (T·K, D)
template <int V, typename TO, typename TY>
__global__ void __launch_bounds__(256)
k_moe_combine(TY *y, const TO *o, const int32_t *idx, const float *wts, int D, int K, int E) {
    int t = blockIdx.x, c = (blockIdx.y * blockDim.x + threadIdx.x) * V;
    if (c >= D) return;
    float acc[V];
#pragma unroll
    for (int q = 0; q < V; q++) acc[q] = 0.0f;
    for (int k = 0; k < K; k++) {
        size_t s = (size_t)t * K + k;
        int e = idx[s];
        if (e < 0 || e >= E) continue;
        float w = wts[s];
        float v[V];
        ldv<V>(o + s * D + c, v);
#pragma unroll
        for (int q = 0; q < V; q++) acc[q] += w * v[q];
    }
    TY *dst = y + (size_t)t * D + c;
#pragma unroll
    for (int q = 0; q < V; q++) stf(dst + q, acc[q]);
}

template <int BMT, int BKT, int ST, bool DUAL, bool KMAJ, typename TY>
void launch_gemm(const ae_backend *be, dim3 grid, const ExpertGemm &g, const char *name) {
    auto kern = k_expert_gemm<BMT, BKT, ST, DUAL, KMAJ, TY>;
    size_t smem = GemmShape<BMT, BKT, ST, DUAL, KMAJ>::smem();
    static int opted_in[64]; // per device: the opt-in above 48 KiB of shared memory is done
    int dev = cu(be)->device;
    if (smem > 48 * 1024 && (dev < 0 || dev >= 64 || !opted_in[dev])) {
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        cuda_check(be, e, name);
        if (e == cudaSuccess && dev >= 0 && dev < 64) opted_in[dev] = 1;
    }
    kern<<<grid, kGemmThreads, smem, stream_of(be)>>>(g);
    cuda_check(be, cudaGetLastError(), name);
}

// The arguments of one grouped product (see ExpertGemm; a1, w1, y1 may be null): 16-byte loads
// and paired stores where the shapes and alignments allow. ysize: bytes of an output value;
// kmaj: the weights are read K-major (their rows run along the N output columns).
ExpertGemm expert_gemm(const int *off, const int *tile_off, const int *order, int E,
                       const bf16 *a0, const bf16 *a1, int64_t lda, int a_div, const bf16 *w0,
                       const bf16 *w1, int N, int Kd, bool kmaj, void *y0, void *y1,
                       size_t ysize) {
    auto al = [](const void *q, size_t b) { return !q || (uintptr_t)q % b == 0; };
    ExpertGemm g;
    memset(&g, 0, sizeof g);
    g.off = off, g.tile_off = tile_off, g.order = order, g.E = E;
    g.a0 = a0, g.a1 = a1, g.lda = lda, g.a_div = a_div;
    g.w0 = w0, g.w1 = w1, g.N = N, g.Kd = Kd;
    g.nsrc = kmaj && a1 ? 2 : 1;
    g.vec_a = Kd % 8 == 0 && lda % 8 == 0 && al(a0, 16) && al(a1, 16);
    g.vec_b = (kmaj ? N : Kd) % 8 == 0 && al(w0, 16) && al(w1, 16);
    g.y0 = y0, g.y1 = y1;
    g.pair = N % 2 == 0 && al(y0, 2 * ysize) && al(y1, 2 * ysize);
    return g;
}

// tile_off (E + 1) of tiles of bm rows over the slot ranges off (E + 1): expert e's tiles start
// at tile_off[e]. One block; dynamic shared memory (2·E + 1) ints.
__global__ void __launch_bounds__(kPlanThreads)
k_tile_offsets(const int32_t *off, int E, int bm, int *tile_off) {
    extern __shared__ int sm[];
    __shared__ int ws[32];
    int *tiles = sm, *stoff = sm + E;
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        tiles[e] = (off[e + 1] - off[e] + bm - 1) / bm;
    __syncthreads();
    block_exclusive_scan(tiles, stoff, E, ws);
    __syncthreads();
    for (int e = threadIdx.x; e <= E; e += blockDim.x) tile_off[e] = stoff[e];
}

// Training's grouped products use the dense tile (the slot rows of a training batch are many
// per expert).
constexpr int kTrainBM = 64;

// The row tiles (bm rows) of slot ranges off (device) of S slots: tile_off in temporary device
// memory (free with cuda_tmp_free; null when that failed) and the grid's row count (the worst
// case: surplus blocks exit at once).
int *train_tiles(const ae_backend *be, ae_ptr off, int S, int E, int bm, const char *op,
                 unsigned *tiles) {
    int *tile_off = (int *)cuda_tmp_alloc(be, sizeof(int) * ((size_t)E + 1), op);
    if (!tile_off) return nullptr;
    k_tile_offsets<<<1, kPlanThreads, (size_t)(2 * E + 1) * sizeof(int), stream_of(be)>>>(
        (const int32_t *)off.data, E, bm, tile_off);
    cuda_check(be, cudaGetLastError(), op);
    size_t t = ((size_t)S + (size_t)E * (bm - 1)) / bm;
    *tiles = (unsigned)(t < (size_t)S ? t : (size_t)S);
    return tile_off;
}

void check_expert_args(const char *op, int n, int S, int E, int N, int Kd) {
    if (n < 1 || n > 2 || E < 1 || E > kMaxE || S < 0 || N < 0 || Kd < 0) {
        fprintf(stderr, "attnedit: internal error: cuda %s: n=%d S=%d E=%d N=%d Kd=%d (n 1 or 2, "
                "E 1..%d)\n", op, n, S, E, N, Kd, kMaxE);
        abort();
    }
}

// dx = Σ_i dy[i] · w[i][e] on every expert's rows (expert_matmul_bwd's input gradient).
void expert_dx(const ae_backend *be, int n, ae_ptr dx, const ae_ptr *dy, const ae_ptr *w,
               ae_ptr off, int S, int E, int N, int Kd, int accumulate) {
    const char *op = "expert_matmul_bwd";
    cuda_need(dx, AE_M_FLOAT, op, "dx");
    for (int i = 0; i < n; i++) cuda_need(w[i], AE_M_BF16, op, "w");
    unsigned tiles;
    int *tile_off = train_tiles(be, off, S, E, kTrainBM, op, &tiles);
    if (!tile_off) return;
    // In the kernel's terms: A = the dy rows (depth N), B = w[e] read K-major, Kd output columns.
    const bf16 *dy1 = n == 2 ? (const bf16 *)dy[1].data : nullptr;
    const bf16 *w1 = n == 2 ? (const bf16 *)w[1].data : nullptr;
    ExpertGemm g = expert_gemm((const int *)off.data, tile_off, nullptr, E, (const bf16 *)dy[0].data,
                               dy1, N, 1, (const bf16 *)w[0].data, w1, Kd, N, true, dx.data,
                               nullptr, ae_dtype_size(dx.dtype));
    g.accumulate = accumulate;
    dim3 grid(tiles, (unsigned)((Kd + BN - 1) / BN));
    AE_CUDA_FLOAT_DISPATCH(dx.dtype, TY, {
        launch_gemm<kTrainBM, 32, 3, false, true, TY>(be, grid, g, op);
    });
    cuda_tmp_free(be, tile_off);
}

// dw[e] += dyᵀ · x on every expert's rows (expert_matmul_bwd's weight gradient, k_expert_dw).
void expert_dw(const ae_backend *be, ae_ptr dw, ae_ptr dy, ae_ptr x, ae_ptr off, int E, int N,
               int Kd) {
    const char *op = "expert_matmul_bwd";
    cuda_need(dw, AE_M_FLOAT, op, "dw");
    cuda_need(x, AE_M_BF16, op, "x");
    if (N == 0) return;
    auto al16 = [](const void *q) { return (uintptr_t)q % 16 == 0; };
    ExpertDw g = {(const int *)off.data, (const bf16 *)dy.data, (const bf16 *)x.data,
                  dw.data, N, Kd, N % 8 == 0 && al16(dy.data),
                  Kd % 8 == 0 && al16(x.data)};
    dim3 grid((unsigned)((Kd + BN - 1) / BN), (unsigned)((N + BN - 1) / BN), (unsigned)E);
    AE_CUDA_FLOAT_DISPATCH(dw.dtype, TW,
                           k_expert_dw<TW><<<grid, kGemmThreads, 0, stream_of(be)>>>(g));
    cuda_check(be, cudaGetLastError(), op);
}

} // namespace

void ae_cuda_moe_route(const ae_backend *be, ae_ptr idx, ae_ptr wts, ae_ptr probs, ae_ptr logits,
                       int T, int E, int K, int renorm) {
    if (cuda_failed(be)) return;
    cuda_need(idx, AE_M_I32, "moe_route", "idx");
    cuda_need(wts, AE_M_F32, "moe_route", "wts");
    cuda_need(probs, AE_M_F32, "moe_route", "probs");
    cuda_need(logits, AE_M_F32, "moe_route", "logits");
    if (T <= 0 || K <= 0) return;
    if (E > kRouteMaxE || K > kRouteMaxK || K > E) {
        fprintf(stderr, "attnedit: internal error: cuda moe_route: E=%d K=%d (at most %d, %d)\n",
                E, K, kRouteMaxE, kRouteMaxK);
        abort();
    }
    unsigned blocks = (unsigned)((T + kRouteWarps - 1) / kRouteWarps);
    size_t smem = (size_t)kRouteWarps * E * sizeof(float);
    k_moe_route<<<blocks, 32 * kRouteWarps, smem, stream_of(be)>>>(
        (int32_t *)idx.data, (float *)wts.data, (float *)probs.data, (const float *)logits.data, T,
        E, K, renorm);
    cuda_check(be, cudaGetLastError(), "moe_route");
}

static size_t round256(size_t b) { return (b + 255) & ~(size_t)255; }

// moe_ffn's temporaries per chunk of tokens: AE_MOE_CHUNK_MIB MiB (1 .. 65536; for A/B runs:
// larger chunks give each expert more rows per GEMM and stream the weights fewer times), else
// 1024 MiB: at Qwen3-30B-A3B shapes bench_moe --ffn measured the wgmma GEMMs at 305 against 253
// TFLOP/s for T = 4096 in one chunk instead of two (2026-11-30, H200).
static size_t moe_chunk_bytes() {
    const char *env = getenv("AE_MOE_CHUNK_MIB");
    long mib = env ? strtol(env, NULL, 10) : 0;
    return (size_t)(mib >= 1 && mib <= 65536 ? mib : 1024) << 20;
}

// Whether moe_ffn's down GEMM writes its per-slot rows o as bf16 (default) or fp32
// (AE_MOE_DOWN_BF16=0; read at every call, for A/B runs). bf16 halves the bytes the down GEMM's
// epilogue writes and the combine reads (268 -> 134 MB each at Qwen3-30B-A3B, T 4096) and
// lets a chunk hold more tokens: bench_moe --ffn (H200, 2026-11-30 13:47, one call) 314.0 ->
// 319.8 TFLOP/s at T 4096 and 367.4 -> 393.6 at T 32768. The cost: one more rounding per slot
// value (2^-9 relative) before the fp32 combine, ~1.5e-3 more relative L2 error on y.
static int moe_down_bf16() {
    const char *env = getenv("AE_MOE_DOWN_BF16");
    return !(env && strcmp(env, "0") == 0);
}

void ae_cuda_moe_ffn(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr idx, ae_ptr wts,
                     ae_ptr w_gate, ae_ptr w_up, ae_ptr w_down, int T, int D, int Im, int E, int K) {
    if (cuda_failed(be)) return;
    cuda_need(y, AE_M_FLOAT, "moe_ffn", "y");
    cuda_need(x, AE_M_BF16, "moe_ffn", "x");
    cuda_need(idx, AE_M_I32, "moe_ffn", "idx");
    cuda_need(wts, AE_M_F32, "moe_ffn", "wts");
    cuda_need(w_gate, AE_M_BF16, "moe_ffn", "w_gate");
    cuda_need(w_up, AE_M_BF16, "moe_ffn", "w_up");
    cuda_need(w_down, AE_M_BF16, "moe_ffn", "w_down");
    if (T <= 0 || D <= 0) return;
    if (E <= 0 || E > kMaxE || K <= 0 || Im < 0) {
        fprintf(stderr, "attnedit: internal error: cuda moe_ffn: E=%d K=%d Im=%d (E at most %d)\n",
                E, K, Im, kMaxE);
        abort();
    }
    // A handful of tokens (decode): expert GEMVs, two launches (cuda_moe_decode.cu)
    if (moe_ffn_gemv(be, y, x, idx, wts, w_gate, w_up, w_down, T, D, Im, E, K)) return;
    cudaStream_t st = stream_of(be);
    // Tokens per chunk: temporaries (h bf16 and o bf16 or fp32 rows per slot) near 1 GiB at most
    // (moe_chunk_bytes).
    const ae_dtype odt = moe_down_bf16() ? AE_DT_BF16 : AE_DT_F32;
    const size_t osz = ae_dtype_size(odt);
    size_t per_token = (size_t)K * ((size_t)Im * 2 + (size_t)D * osz + 8);
    size_t chunk = moe_chunk_bytes() / per_token;
    if (chunk < 1) chunk = 1;
    if (chunk > (size_t)T) chunk = (size_t)T;
    if (chunk * K > (size_t)INT32_MAX / 2) chunk = (size_t)(INT32_MAX / 2) / K;
    // Chunks of equal size (a short last chunk would give its experts few rows each, mostly
    // empty row tiles)
    size_t nchunks = ((size_t)T + chunk - 1) / chunk;
    chunk = ((size_t)T + nchunks - 1) / nchunks;
    size_t slots_max = chunk * K;
    size_t b_off = round256((size_t)(E + 1) * 4), b_order = round256(slots_max * 4);
    size_t b_h = round256(slots_max * (size_t)Im * 2), b_o = round256(slots_max * (size_t)D * osz);
    size_t b_bcnt = round256((size_t)plan_blocks(slots_max) * E * 4);
    size_t b_tmp = 2 * b_off + 2 * b_order + b_h + b_o + b_bcnt;
    char *tmp = (char *)cuda_tmp_alloc(be, b_tmp, "moe_ffn");
    if (!tmp) return;
    // AE_CUDA_POISON=1 (tests): h and o start as NaN (all-ones bits), so that a row a GEMM
    // forgets to write reaches y as NaN instead of a stale value of an earlier call.
    if (cu(be)->poison) cuda_check(be, cudaMemsetAsync(tmp, 0xff, b_tmp, st), "moe_ffn poison");
    int *off = (int *)tmp, *tile_off = (int *)(tmp + b_off);
    int *order = (int *)(tmp + 2 * b_off), *rank = (int *)(tmp + 2 * b_off + b_order);
    bf16 *h = (bf16 *)(tmp + 2 * b_off + 2 * b_order);
    void *o = tmp + 2 * b_off + 2 * b_order + b_h; // (slots, D) of odt
    int *bcnt = (int *)(tmp + 2 * b_off + 2 * b_order + b_h + b_o); // (plan blocks, E)

    const bf16 *xb = (const bf16 *)x.data;
    const bf16 *wg = (const bf16 *)w_gate.data, *wu = (const bf16 *)w_up.data;
    const bf16 *wd = (const bf16 *)w_down.data;
    // The wgmma kernels' loads are whole 16-byte chunks: depths and row pitches D, Im multiples
    // of 8, 16-byte aligned x and weights (h and o are aligned temporaries).
    auto al16 = [](const void *q) { return (uintptr_t)q % 16 == 0; };
    int wg_shapes = D % 8 == 0 && Im % 8 == 0 && Im > 0 && al16(xb) && al16(wg) && al16(wu) &&
                    al16(wd);

    for (size_t t0 = 0; t0 < (size_t)T && !cuda_failed(be); t0 += chunk) {
        int Tc = (int)((size_t)T - t0 < chunk ? (size_t)T - t0 : chunk), slots = Tc * K;
        const int32_t *ic = (const int32_t *)idx.data + t0 * K;
        const float *wc = (const float *)wts.data + t0 * K;

        // Row tiles of 16 slots when experts get few slots each (decode: less wasted mma work),
        // else 64, or the wgmma kernel's 128 where it runs (moe_wgmma_pick).
        int bm = slots < kSparse * E ? 16 : 64;
        int use_wg = moe_wgmma_pick(be, bm == 64, wg_shapes);
        if (use_wg) bm = kMoeWgmmaBM;
        const int pb = plan_blocks((size_t)slots);
        k_moe_count<<<pb, kPlanThreads, (size_t)E * sizeof(int), st>>>(ic, slots, E, rank, bcnt);
        k_moe_place<<<pb, kPlanThreads, (size_t)(5 * E + 2) * sizeof(int), st>>>(
            ic, slots, E, bm, rank, bcnt, off, tile_off, order);
        cuda_check(be, cudaGetLastError(), "moe_ffn plan");

        size_t tiles = ((size_t)slots + (size_t)E * (bm - 1)) / bm;
        if (tiles > (size_t)slots) tiles = (size_t)slots;
        ExpertGemm g1 = expert_gemm(off, tile_off, order, E, xb + t0 * D, nullptr, D, K, wg, wu,
                                    Im, D, false, h, nullptr, sizeof(bf16));
        g1.silu = 1;
        ExpertGemm g2 = expert_gemm(off, tile_off, order, E, h, nullptr, Im, 1, wd, nullptr, D,
                                    Im, false, o, nullptr, osz);
        dim3 grid1((unsigned)tiles, (unsigned)((Im + BN - 1) / BN));
        dim3 grid2((unsigned)tiles, (unsigned)((D + BN - 1) / BN));
        if (use_wg) {
            moe_wgmma_gemm(be, g1, (unsigned)tiles, 1, AE_DT_BF16, "moe_ffn gate/up");
            moe_wgmma_gemm(be, g2, (unsigned)tiles, 0, odt, "moe_ffn down");
        } else if (bm == 16) {
            if (Im > 0) launch_gemm<16, 64, 4, true, false, bf16>(be, grid1, g1, "moe_ffn gate/up");
            AE_CUDA_FLOAT_DISPATCH(odt, TO, {
                launch_gemm<16, 64, 4, false, false, TO>(be, grid2, g2, "moe_ffn down");
            });
        } else {
            if (Im > 0) launch_gemm<64, 32, 3, true, false, bf16>(be, grid1, g1, "moe_ffn gate/up");
            AE_CUDA_FLOAT_DISPATCH(odt, TO, {
                launch_gemm<64, 32, 3, false, false, TO>(be, grid2, g2, "moe_ffn down");
            });
        }

        int v4 = D % 4 == 0 && (y.dtype == AE_DT_F32 ? (uintptr_t)y.data % 16 == 0
                                                      : (uintptr_t)y.data % 8 == 0);
        int cols = v4 ? D / 4 : D;
        dim3 grid3((unsigned)Tc, (unsigned)((cols + 255) / 256));
        AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, {
            TY *yc = (TY *)y.data + t0 * D;
            AE_CUDA_FLOAT_DISPATCH(odt, TO, {
                const TO *oc = (const TO *)o;
                if (v4) k_moe_combine<4, TO><<<grid3, 256, 0, st>>>(yc, oc, ic, wc, D, K, E);
                else k_moe_combine<1, TO><<<grid3, 256, 0, st>>>(yc, oc, ic, wc, D, K, E);
            });
        });
        cuda_check(be, cudaGetLastError(), "moe_ffn combine");
    }
    cuda_tmp_free(be, tmp);
}

void ae_cuda_expert_matmul(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                           ae_ptr off, int S, int E, int N, int Kd) {
    if (cuda_failed(be)) return;
    const char *op = "expert_matmul";
    check_expert_args(op, n, S, E, N, Kd);
    cuda_need(x, AE_M_BF16, op, "x");
    cuda_need(off, AE_M_I32, op, "off");
    for (int i = 0; i < n; i++) cuda_need(w[i], AE_M_BF16, op, "w"), cuda_need(y[i], AE_M_FLOAT, op, "y");
    if (n == 2 && y[1].dtype != y[0].dtype) {
        fprintf(stderr, "attnedit: internal error: cuda expert_matmul: outputs of two dtypes\n");
        abort();
    }
    if (S == 0 || N == 0) return;
    const bf16 *w1 = n == 2 ? (const bf16 *)w[1].data : nullptr;
    ExpertGemm g = expert_gemm((const int *)off.data, nullptr, nullptr, E, (const bf16 *)x.data,
                               nullptr, Kd, 1, (const bf16 *)w[0].data, w1, N, Kd, false,
                               y[0].data, n == 2 ? y[1].data : nullptr, ae_dtype_size(y[0].dtype));
    // Training batches give every expert many rows: the wgmma kernel where it may run.
    int use_wg = moe_wgmma_pick(be, 1, g.vec_a && g.vec_b && Kd > 0);
    unsigned tiles;
    int *tile_off = train_tiles(be, off, S, E, use_wg ? kMoeWgmmaBM : kTrainBM, op, &tiles);
    if (!tile_off) return;
    g.tile_off = tile_off;
    if (use_wg) {
        moe_wgmma_gemm(be, g, tiles, n == 2, y[0].dtype, op);
    } else {
        dim3 grid(tiles, (unsigned)((N + BN - 1) / BN));
        AE_CUDA_FLOAT_DISPATCH(y[0].dtype, TY, {
            if (n == 2) launch_gemm<kTrainBM, 32, 3, true, false, TY>(be, grid, g, op);
            else launch_gemm<kTrainBM, 32, 3, false, false, TY>(be, grid, g, op);
        });
    }
    cuda_tmp_free(be, tile_off);
}

void ae_cuda_expert_matmul_bwd(const ae_backend *be, int n, ae_ptr dx, const ae_ptr *dw,
                               const ae_ptr *dy, ae_ptr x, const ae_ptr *w, ae_ptr off, int S,
                               int E, int N, int Kd, int accumulate) {
    if (cuda_failed(be)) return;
    const char *op = "expert_matmul_bwd";
    check_expert_args(op, n, S, E, N, Kd);
    cuda_need(off, AE_M_I32, op, "off");
    for (int i = 0; i < n; i++) cuda_need(dy[i], AE_M_BF16, op, "dy");
    if (S == 0 || Kd == 0) return;
    if (!ae_ptr_is_null(dx)) expert_dx(be, n, dx, dy, w, off, S, E, N, Kd, accumulate);
    for (int i = 0; dw && i < n; i++)
        if (!ae_ptr_is_null(dw[i])) expert_dw(be, dw[i], dy[i], x, off, E, N, Kd);
}
