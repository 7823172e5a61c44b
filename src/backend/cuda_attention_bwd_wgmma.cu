// Attention backward on Hopper tensor cores (wgmma.mma_async, sm_90a): the split backward of
// cuda_attention_bwd_tc.cu (a dK/dV kernel per key tile, then a dQ kernel per query tile, 7
// products, every sum in a fixed order, no atomics: the same inputs give the same bits) with
// warpgroup matrix multiplies instead of mma.sync. Same parameters (attn_bwd_tc_params), same
// results up to rounding: D, the sink gradients, the forward's lse2 and the bf16 copy of dout are
// made before, by attn_bwd_tc_run (cuda_attention_bwd_tc.cu); this file only replaces step 3/4
// there. When it runs: see cuda_attention_bwd.cu (AE_CUDA_ATTN_BWD=wgmma, or the default on
// compute capability 9.0 for the shapes listed at WGMMA_BWD_DEFAULT_ON). Compiled for sm_90a
// only; elsewhere the kernel bodies are empty and attn_bwd_wgmma_loaded says so.
//
// Head dims: dk = 128 or 192, dv = 128 (the teachers' and GateSWA's layers; materialised MLA).
// Any pos0, window, GQA group G, dq / dk / dv F32 or BF16 (as the split path).
//
// Shared-memory tiles use the wgmma 128-byte swizzle layout (cuda_wgmma.h: wg_swz_off): a tile of
// R rows x D bf16 columns is D/64 column blocks of R·128 bytes. Operands:
//   K-major (A or B of a product over d): start at column block kk/4 of k-step kk, +32 bytes per
//     k-step inside it, + 64 rows · 128 bytes for the second warpgroup's rows; SBO 1024.
//   N-major (B of a product over tile rows, B stored [k][n], e.g. dO as [query row][dv]):
//     k-step i starts at row 16i (i·2048 bytes); SBO 1024 (next 8 rows), LBO R·128 (the next
//     64 columns). Every N-major tile here has R = 64 rows (LBO 8192).
// Accumulators (m64nNk16, fp32) and A-from-register fragments: see cuda_wgmma.h.
//
// dK/dV kernel (k_attn_bwd_wg_kv), block = (kv head, key tile of 128 keys), 2 warpgroups: the
//   warpgroup w owns keys j0 + 64w .. + 63. K and V of the tile stay in shared memory; the block
//   visits the packed query rows (token, head of the group: pr = t·G + i) that can see a key of
//   the tile in tiles of 64, last to first (Q, dO, lse2, D of the rows in 3 buffers, loaded with
//   cp.async; the two warpgroups staggered, see k_attn_bwd_wg_kv). Per query tile and warpgroup:
//     Sᵀ (64 keys x 64 rows) = K·Qᵀ and dPᵀ = V·dOᵀ   (m64n64k16, both operands from shared
//                                                      memory, issued together)
//     Pᵀ = exp2(Sᵀ·scale_log2 − lse2[row]) (masked: key after the row's position, before its
//       window, or a padding row);  dSᵀ = Pᵀ ∘ (dPᵀ − D[row])
//     dV += Pᵀ·dO, dK += dSᵀ·Q   (m64n128k16 (+ m64n64k16 for dk 192), A = Pᵀ / dSᵀ from
//                                 registers as bf16, B = dO / Q N-major)
//   The keys' dk (+= scale·dK) and dv (+= dV) are written once at the end: sole writer.
//   Registers: dK + dV accumulators 128 (160 at dk 192) + Sᵀ, dPᵀ 32 each per thread.
// dQ kernel (k_attn_bwd_wg_q), block = (kv head, 128 packed query rows, the last tile first),
//   warpgroup w owns rows 64w .. + 63; Q and dO of the rows stay in shared memory; the block
//   loops over the key tiles of 64 its rows can see (K, V double-buffered):
//     S = Q·Kᵀ, dP = dO·Vᵀ (m64n64k16), P, dS = P ∘ (dP − D), dQ += dS·K (A = dS from
//     registers, B = K N-major);  dq = scale·dQ, sole writer of its rows.
//   By default the dQ kernel runs warp-specialised (k_attn_bwd_wg_q_ws: a TMA producer
//   warpgroup, the two warpgroups computing free of block barriers; the same tiles and
//   arithmetic, the same bits; 1.15-1.17x at bench_distill's shapes, H200 2026-12-01);
//   AE_CUDA_ATTN_BWD_DQ=sync keeps k_attn_bwd_wg_q. The dK/dV kernel warp-specialised the same
//   way (a cp.async producer warpgroup) was measured 0.92-0.95x (its consumers, capped at 240
//   registers, spill) and not kept.
// dQ from stored dS ("ds", the default where it runs: G = 1 (MLA's materialised layout), pos0 =
//   0, no window, Q/dO and K by TMA, device memory for the tiles): the dK/dV kernel (DS) also
//   writes each warpgroup's dSᵀ tile (64 keys x 64 query rows, bf16, 8 KB; key tile kj of 64
//   keys <= query tile qi, the tiles a causal dQ needs) to global memory, each warp its 16 keys
//   through shared memory and one bulk store (cp.async.bulk) while its dK/dV products run; then
//   k_attn_bwd_wg_q_ds forms dQ = dS·K from them, 5 products in all instead of 7, at the cost of
//   writing and reading the tiles once (a head at T 4096: 2080 tiles, 17 MB). Heads run in
//   chunks whose tiles fit WGMMA_BWD_DS_MB. dk, dv: the same bits as ws; dq: its own fixed order
//   (within TOL_ATTN_TC of ws). H200, 2026-12-02 (bench_attn --bwd-paths, 2 x 4096): MLA 1.7B
//   1.251 -> 1.152 ms, MLA 8B 2.512 -> 2.343; ncu per 1.7B sequence: dK/dV 380 -> 418 us (the
//   stores: its shared memory and DRAM traffic), dQ 230 -> 131 us (DRAM 59%: reading the
//   tiles); bench_distill Qwen3-1.7B MLA stage 1 65.0-65.3k -> 66.5-67.8k tok/s, Qwen3-8B MLA
//   (8-bit states, bf16 gradients) 17.4k -> 18.2k with the same peak memory.
//   AE_CUDA_ATTN_BWD_DQ=ws / sync keep the kernels below.
// Only tiles some row can see are visited; masks are applied on tiles not fully visible.
// Precision as the split path: P and dS rounded to bf16 as operands, fp32 accumulation.
//
// Fused (AE_CUDA_ATTN_BWD=wgfused; not the default): the dK/dV kernel with FUSED also forms each
// query tile's dQ part, dS·K of its warpgroup's 64 keys (dSᵀ to shared memory by stmatrix.trans,
// then m64n64k16 with both operands in shared memory, K N-major), and adds it into fp32 sums in
// global memory in a fixed order (wgf_add_dq: counters per query tile, float2 reductions in L2);
// k_attn_bwd_wg_dq_finish then writes dq = scale·sums. 5 products instead of 7, the same bits
// for dk and dv as the split kernels, dq deterministic. Blocks take tiles from a ticket, longest
// first, and walk their query tiles last to first, so the key tiles that add to a query tile
// before a block are ahead of it. Measured slower (H200, 2026-12-01: bench_attn --bwd-paths
// 0.57-0.62x wgmma): the reductions (2.7 GB of L2 reduction sectors per MLA 1.7B sequence)
// cost 1.5-2 ms of its 3.6, the ordering 0.2-0.4 ms, the dQ products ~0.1 ms; without the
// reductions it would not beat the split kernels. docs/BENCHMARKS.md has the breakdown.
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention_bwd.h"
#include "backend/cuda_tma.h"
#include "backend/cuda_wgmma.h"

namespace {

constexpr int kWgThreads = 256; // 2 warpgroups
constexpr int kKeys = 128;      // keys per dK/dV block (64 per warpgroup)
constexpr int kBQ = 64;         // packed query rows per step of the dK/dV kernel
constexpr int kRowsQ = 128;     // packed query rows per dQ block (64 per warpgroup)
constexpr int kBN = 64;         // keys per step of the dQ kernel
constexpr int kBufsKV = 3;      // query-row buffers of the dK/dV kernel
constexpr int kQsThreads = 384; // the warp-specialised dQ kernel: producer + 2 consumer warpgroups
constexpr int kQsStages = 3;    // its K/V stages
constexpr int kQsProdRegs = 24, kQsConsRegs = 240;
constexpr int kQdStages = 5; // the dQ-from-dS kernel's stages (K + two dS tiles; 4: 2% slower)
constexpr uint32_t kDsTile = kBQ * 64 * 2;  // a stored dS tile: 64 query rows x 64 keys, bf16
static_assert(128 * kQsProdRegs + 256 * kQsConsRegs <= 65536, "register file");

// Shared memory of the two kernels (byte offsets from the 1024-byte aligned base; + 1 KB for the
// alignment). d 128: 166 KB and 129 KB; dk 192: 206 KB and 161 KB. The fused dK/dV kernel adds
// 16 KB: 182 KB at d 128, 223 KB at dk 192 (of the 227 KB a block may have).
template <int DK, int DV> struct wgb_cfg {
    static_assert(DV == 128 && (DK == 128 || DK == 192), "head dims of the wgmma backward");
    // dK/dV: K (kKeys x DK), V (kKeys x DV), kBufsKV x Q (kBQ x DK), kBufsKV x dO (kBQ x DV),
    // then per buffer and warpgroup the rows' lse2, D (float) and position (int; −1: padding
    // row), then the kBufsKV "full" mbarriers
    static constexpr uint32_t KV_K = 0;
    static constexpr uint32_t KV_V = KV_K + kKeys * DK * 2;
    static constexpr uint32_t KV_Q = KV_V + kKeys * DV * 2;
    static constexpr uint32_t KV_O = KV_Q + kBufsKV * kBQ * DK * 2;
    static constexpr uint32_t KV_R = KV_O + kBufsKV * kBQ * DV * 2;
    static constexpr uint32_t KV_BAR = KV_R + kBufsKV * 2 * 3 * kBQ * 4;
    static constexpr size_t KV_SMEM = KV_BAR + kBufsKV * 8 + 1024;
    // fused (dQ too): + per warpgroup dS (64 query rows x its 64 keys, the A operand of dQ += dS·K)
    static constexpr uint32_t KV_DS = (KV_BAR + kBufsKV * 8 + 1023) / 1024 * 1024;
    static constexpr size_t KV_SMEM_FUSED = KV_DS + 2 * kBQ * 64 * 2 + 1024;
    // dQ: Q (kRowsQ x DK), dO (kRowsQ x DV), 2 x K (kBN x DK), 2 x V (kBN x DV)
    static constexpr uint32_t Q_Q = 0;
    static constexpr uint32_t Q_O = Q_Q + kRowsQ * DK * 2;
    static constexpr uint32_t Q_K = Q_O + kRowsQ * DV * 2;
    static constexpr uint32_t Q_V = Q_K + 2 * kBN * DK * 2;
    static constexpr size_t Q_SMEM = Q_V + 2 * kBN * DV * 2 + 1024;
    // dQ, warp-specialised: Q and dO as above, then kQsStages x K, kQsStages x V (d 128: 161 KB,
    // dk 192: 201 KB)
    static constexpr uint32_t QS_K = Q_K;
    static constexpr uint32_t QS_V = QS_K + kQsStages * kBN * DK * 2;
    static constexpr size_t QS_SMEM = QS_V + kQsStages * kBN * DV * 2 + 1024;
    // dQ from stored dS: kQdStages x K (kBN x DK), then kQdStages x 2 dS tiles (one per
    // consumer warpgroup) (dk 192: 201 KB)
    static constexpr uint32_t QD_K = 0;
    static constexpr uint32_t QD_DS = QD_K + kQdStages * kBN * DK * 2;
    static constexpr size_t QD_SMEM = QD_DS + kQdStages * 2 * kDsTile + 1024;
};

#ifdef AE_WGMMA_DEVICE
constexpr uint32_t kNLbo = 64 * 128; // LBO of an N-major 64-row tile: one column block

// ROWS x D bf16 from global (row r at src_row(r); null: zero fill) into the swizzled tile at dst,
// 16-byte cp.async chunks spread over the block (consecutive threads: consecutive chunks of a
// row). `any` is a valid address given to the zero-filling copies (they read nothing).
template <int ROWS, int D, typename F>
__device__ __forceinline__ void wgb_load(unsigned char *dst, const bf16 *any, F src_row, int tid) {
    constexpr int CH = D / 8;
    static_assert(ROWS * CH % kWgThreads == 0, "whole chunks per thread");
    // the chunks' rows and swizzled offsets are recomputed at each call rather than kept across
    // the loops (30 registers at dk 192: they spilled)
    asm volatile("" : "+r"(tid));
#pragma unroll
    for (int it = 0; it < ROWS * CH / kWgThreads; it++) {
        const int c = tid + it * kWgThreads, r = c / CH, ch = c % CH;
        const bf16 *src = src_row(r);
        cp_async16(dst + wg_swz_off(r, ch, ROWS), src ? src + ch * 8 : any, src != nullptr);
    }
}

// Issues d (64 x 64) = A·Bᵀ over KD columns: A the 64 rows at a (in a tile of a_rows rows), B
// the 64 rows of the tile at b (b_rows rows), both K-major. Not committed.
// The k-step descriptors are a base descriptor plus the step's offset (in 16-byte units, the
// address field): the base goes through wgb_opaque so that the compiler forms them at each use
// instead of hoisting every step's descriptor of a loop-invariant tile out of the loops (two
// registers each, 40 for K and V at dk 192: the spills).
__device__ __forceinline__ uint64_t wgb_opaque(uint64_t desc) {
    asm volatile("" : "+l"(desc));
    return desc;
}
template <int KD>
__device__ __forceinline__ void wgb_issue_abt(float (&d)[32], uint32_t a, int a_rows, uint32_t b,
                                              int b_rows) {
    const uint64_t da = wgb_opaque(wg_desc(a, 16, 1024)), db = wgb_opaque(wg_desc(b, 16, 1024));
#pragma unroll
    for (int kk = 0; kk < KD / 16; kk++) {
        const uint32_t ka = (kk >> 2) * a_rows * 128 + (kk & 3) * 32;
        const uint32_t kb = (kk >> 2) * b_rows * 128 + (kk & 3) * 32;
        wg_mma_ss_n64(d, da + (ka >> 4), db + (kb >> 4), kk > 0);
    }
}
// Issues d (64 x 128) += F·B: F (64 x 64) the bf16 A fragments of 4 k-steps, B the first 128
// columns of the 64-row tile at b (N-major). Not committed.
__device__ __forceinline__ void wgb_issue_fb(float (&d)[64], const uint32_t (&f)[4][4],
                                             uint32_t b) {
    const uint64_t db = wgb_opaque(wg_desc(b, kNLbo, 1024));
#pragma unroll
    for (int i = 0; i < 4; i++) wg_mma_rs_nmajor(d, f[i], db + i * (2048 >> 4));
}
// The same for the 64 columns of one column block at b (x 64 result).
__device__ __forceinline__ void wgb_issue_fb(float (&d)[32], const uint32_t (&f)[4][4],
                                             uint32_t b) {
    const uint64_t db = wgb_opaque(wg_desc(b, kNLbo, 1024));
#pragma unroll
    for (int i = 0; i < 4; i++) wg_mma_rs_nmajor_n64(d, f[i], db + i * (2048 >> 4));
}
// dx (64 x DK) += F·X with X the 64-row tile at x (N-major): columns 0..127 into lo, 128..191
// (DK = 192) into hi.
template <int DK>
__device__ __forceinline__ void wgb_issue_fx(float (&lo)[64], float (&hi)[32],
                                             const uint32_t (&f)[4][4], uint32_t x) {
    wgb_issue_fb(lo, f, x);
    if constexpr (DK == 192) wgb_issue_fb(hi, f, x + 2 * kNLbo);
}

// A 64 x 64 accumulator as the bf16 A fragments of its 4 k-steps (cuda_wgmma.h).
__device__ __forceinline__ void wgb_frags(uint32_t (&f)[4][4], const float (&x)[32]) {
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int j = 0; j < 4; j++) f[k][j] = pack_bf16(x[8 * k + 2 * j], x[8 * k + 2 * j + 1]);
}
// Column of accumulator element i (of a 64 x N accumulator) for the lane with tq = lane % 4; its
// row half is (i >> 1) & 1 (rows g and g + 8 of the warp's 16).
__device__ __forceinline__ int wgb_col(int i, int tq) { return 8 * (i >> 2) + 2 * tq + (i & 1); }

// Pᵀ of the dK/dV kernel in place: st[i] (key jk[half], packed row c = wgb_col(i) of the query
// tile) becomes exp2(st·scale_log2 − lse2[c]), 0 when MASK and the row does not see the key (its
// position pt[c] is before the key or past the window; −1: padding row).
// The row values of a lane's columns 8n + 2tq, + 1 are adjacent: read as pairs (8-byte loads).
template <bool MASK>
__device__ __forceinline__ void wgb_probs_t(float (&st)[32], const float *lt, const int *pt,
                                            const int (&jk)[2], float scale_log2, int window,
                                            int tq) {
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const float2 l = *reinterpret_cast<const float2 *>(lt + 8 * n + 2 * tq);
        int2 ps = make_int2(0, 0);
        if (MASK) ps = *reinterpret_cast<const int2 *>(pt + 8 * n + 2 * tq);
#pragma unroll
        for (int i = 4 * n; i < 4 * n + 4; i++) { // column wgb_col(i) = 8n + 2tq + (i & 1)
            float x = st[i] * scale_log2 - ((i & 1) ? l.y : l.x);
            if (MASK) {
                const int pc = (i & 1) ? ps.y : ps.x, j = jk[(i >> 1) & 1];
                if (j > pc || j < attn_lo(pc, window)) x = -INFINITY;
            }
            st[i] = exp2f(x);
        }
    }
}
// dSᵀ in place of dPᵀ: dp[i] = st[i]·(dp[i] − D of column wgb_col(i)) (D as pairs, as above).
__device__ __forceinline__ void wgb_ds_t(float (&dp)[32], const float (&st)[32], const float *dt,
                                         int tq) {
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const float2 d = *reinterpret_cast<const float2 *>(dt + 8 * n + 2 * tq);
#pragma unroll
        for (int i = 4 * n; i < 4 * n + 4; i++) dp[i] = st[i] * (dp[i] - ((i & 1) ? d.y : d.x));
    }
}
// dk += scale·dK, dv += dV for this thread's keys jk[0], jk[1] that exist (j < S): the dK/dV
// kernels' epilogue (sole writers of their keys); = when p.dkv_set (no loads). Per key, every old
// value of a row is loaded before any sum is stored: a store to dk may alias a later load of dv
// as far as the compiler knows, so interleaved, each load would wait for the one before (a
// global round trip per value, measured 2026-12-01: tens of µs a block).
template <int N>
__device__ __forceinline__ void wgb_row_add(void *x, int bf, size_t o, float scale,
                                            const float *acc, int hf, int set) {
    // this lane's N of the row's columns: 8n + 2tq + {0, 1} (o includes 2tq), from acc[4n + 2hf + x]
    float old[N];
#pragma unroll
    for (int n = 0; n < N / 2; n++)
#pragma unroll
        for (int e = 0; e < 2; e++) old[2 * n + e] = set ? 0.0f : ld_any(x, bf, o + 8 * n + e);
#pragma unroll
    for (int n = 0; n < N / 2; n++)
#pragma unroll
        for (int e = 0; e < 2; e++)
            st_any(x, bf, o + 8 * n + e, old[2 * n + e] + scale * acc[4 * n + 2 * hf + e]);
}
template <int DK, int DV>
__device__ __forceinline__ void wgb_store_dkdv(const attn_bwd_tc_params &p, int kvh, int S,
                                               const int (&jk)[2], int tq, const float (&dka)[64],
                                               const float (&dkb)[32], const float (&dva)[64]) {
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int j = jk[hf];
        if (j >= S) continue;
        const size_t ko = (size_t)j * p.k_stride + (size_t)kvh * DK + 2 * tq;
        const size_t vo = (size_t)j * p.v_stride + (size_t)kvh * DV + 2 * tq;
        wgb_row_add<32>(p.dk, p.dk_bf, ko, p.scale, dka, hf, p.dkv_set);
        if constexpr (DK == 192)
            wgb_row_add<16>(p.dk, p.dk_bf, ko + 128, p.scale, dkb, hf, p.dkv_set);
        wgb_row_add<32>(p.dv, p.dv_bf, vo, 1.0f, dva, hf, p.dkv_set);
    }
}

// ---- the fused kernel's dQ (k_attn_bwd_wg_kv<..., true>) ----
// dQ of a 64-row query tile is the sum over the key tiles that see it of dS·K. Each warpgroup
// adds its part (its 64 keys) into fp32 sums in global memory (p.dq_acc, layout of dq) with
// float2 reductions in L2, in a fixed order: key tiles first to last, warpgroup 0 then 1 of
// each. A counter per (kv head, query tile) says how many parts are in: each of a part's 128
// threads adds 1 with release semantics after its reductions, and a warpgroup waits (every
// thread, acquire) for 128 × (its part's index) before adding. So the same inputs give the same
// bits. No cycle: a part waits only for parts of earlier key tiles (blocks with an earlier
// ticket, so already running) or of warpgroup 0 of its own block, which is ahead of warpgroup 1.

// Stores four 8x8 bf16 matrices of A fragments (stmatrix .x4): lane l gives the address of row
// l % 8 of matrix l / 8, which receives row l % 8 of that matrix, or (TRANS) its column l % 8.
template <bool TRANS>
__device__ __forceinline__ void stsm_x4(uint32_t addr, const uint32_t (&r)[4]) {
    if constexpr (TRANS)
        asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n"
                     ::"r"(addr), "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
                     : "memory");
    else
        asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n"
                     ::"r"(addr), "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
                     : "memory");
}
// dSᵀ fragments (this warp's 16 keys x the tile's 64 query rows, sf of wgb_frags) into the
// warpgroup's dS tile at ds (64 rows x 64 keys, K-major, 128-byte swizzled): row = query row.
__device__ __forceinline__ void wgf_store_ds(uint32_t ds, const uint32_t (&sf)[4][4], int warp,
                                             int lane) {
    const int i = lane >> 3, rr = lane & 7;
#pragma unroll
    for (int k = 0; k < 4; k++)
        stsm_x4<true>(ds + wg_swz_off(16 * k + 8 * (i >> 1) + rr, 2 * warp + (i & 1), 64), sf[k]);
}
// dQ from stored dS: this warp's dSᵀ fragments (its 16 keys x the tile's 64 query rows, sf of
// wgb_frags) into its 2 KB of the warpgroup's dSᵀ tile at ds (64 keys x 64 query rows, rows of
// 128 bytes, 128-byte swizzled: key rows 16·warp .. + 15), so that each warp can store its part
// on its own (stmatrix without .trans: matrix i = key rows 8·(i & 1) .., query rows 8·(i >> 1)
// .. of the k-step).
__device__ __forceinline__ void wgd_store_dst(uint32_t ds, const uint32_t (&sf)[4][4], int warp,
                                              int lane) {
    const int i = lane >> 3, rr = lane & 7;
#pragma unroll
    for (int k = 0; k < 4; k++)
        stsm_x4<false>(ds + wg_swz_off(16 * warp + 8 * (i & 1) + rr, 2 * k + (i >> 1), 64), sf[k]);
}
// Waits (each thread, acquire at GPU scope) until *count >= target. A count that never comes is
// a bug: after 20 s the kernel traps (an error at the next sync) instead of hanging. The loop is
// inside the asm: a C loop would look divergent to ptxas, which then serialises the wgmma.
__device__ __forceinline__ void wgf_wait_count(const int *count, int target) {
    asm volatile("{\n.reg .pred p;\n.reg .b32 c;\n.reg .b64 t0, t;\n"
                 "mov.u64 t0, %%globaltimer;\n"
                 "AE_CNT_WAIT:\n"
                 "ld.acquire.gpu.global.b32 c, [%0];\n"
                 "setp.ge.s32 p, c, %1;\n"
                 "@p bra AE_CNT_DONE;\n"
                 "mov.u64 t, %%globaltimer;\n"
                 "sub.u64 t, t, t0;\n"
                 "setp.gt.u64 p, t, 20000000000;\n"
                 "@p trap;\n"
                 "bra AE_CNT_WAIT;\n"
                 "AE_CNT_DONE:\n}\n" ::"l"(count),
                 "r"(target)
                 : "memory");
}
// This thread's part is in: += 1, release (its reductions before).
__device__ __forceinline__ void wgf_release_count(int *count) {
    asm volatile("red.release.gpu.global.add.s32 [%0], 1;\n" ::"l"(count) : "memory");
}
// The warpgroup's part of dQ for packed rows R0 .. R0 + 63: dS (the tile at ds) times its 64
// keys of K (k_a: row 0 of them in the block's K tile, N-major with 128-row column blocks),
// 64 columns at a time, each added to p.dq_acc after the earlier parts (index `part`).
template <int DK>
__device__ __forceinline__ void wgf_add_dq(const attn_bwd_tc_params &p, uint32_t ds, uint32_t k_a,
                                           int *count, int part, int kvh, int R0, int warp,
                                           int lane) {
    const int nrows = p.T * p.G, tq = lane & 3;
    float *rowp[2]; // this lane's two rows in dq_acc (null: padding row)
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int pr = R0 + 16 * warp + (lane >> 2) + 8 * hf;
        rowp[hf] = pr < nrows ? p.dq_acc + (size_t)attn_bwd_grow(p, kvh, pr) * DK + 2 * tq : nullptr;
    }
    const uint64_t da = wgb_opaque(wg_desc(ds, 16, 1024));
#pragma unroll 1
    for (int c = 0; c < DK / 64; c++) {
        float d[32];
#pragma unroll
        for (int i = 0; i < 32; i++) d[i] = 0.0f;
        const uint64_t db = wgb_opaque(wg_desc(k_a + c * kKeys * 128, kKeys * 128, 1024));
        wg_reg_fence(d);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
            wg_mma_ss_nmajor_n64(d, da + ((kk * 32) >> 4), db + ((kk * 2048) >> 4), kk > 0);
        wg_commit();
        wg_wait<0>();
        wg_reg_fence(d);
        if (c == 0) wgf_wait_count(count, 128 * part);
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            if (!rowp[hf]) continue;
#pragma unroll
            for (int n = 0; n < 8; n++)
                atomicAdd(reinterpret_cast<float2 *>(rowp[hf] + 64 * c + 8 * n),
                          make_float2(d[4 * n + 2 * hf], d[4 * n + 2 * hf + 1]));
        }
    }
    wgf_release_count(count);
}

// ---- the dQ kernels' pieces (k_attn_bwd_wg_q and its warp-specialised form) ----

// The block of a dQ kernel: packed rows R0 .. R0 + kRowsQ − 1 (the last row tile first), the
// keys kb .. ke − 1 its rows see, and the key tiles every row sees (lo_max <= j0 <= full_hi).
struct wgb_dq_block {
    int R0, pos_max, kb, ke, lo_max, full_hi;
};
__device__ __forceinline__ wgb_dq_block wgb_dq_block_of(const attn_bwd_tc_params &p) {
    const int G = p.G, nrows = p.T * G;
    wgb_dq_block k;
    k.R0 = (gridDim.y - 1 - blockIdx.y) * kRowsQ;
    const int last = k.R0 + kRowsQ - 1 < nrows - 1 ? k.R0 + kRowsQ - 1 : nrows - 1;
    const int pos_min = p.pos0 + k.R0 / G;
    k.pos_max = p.pos0 + last / G;
    k.lo_max = attn_lo(k.pos_max, p.window);
    k.kb = attn_lo(pos_min, p.window);
    k.ke = k.pos_max + 1;
    k.full_hi = (pos_min < k.ke - 1 ? pos_min : k.ke - 1) - (kBN - 1);
    return k;
}
// This lane's two rows (packed rows r16 + lane/4 + 8hf, r16 the warp's first): position, lse2,
// D (attn_bwd_row: padding rows take the block's last position).
__device__ __forceinline__ void wgb_dq_rows(const attn_bwd_tc_params &p, int kvh, int r16,
                                            int lane, int pos_max, int (&rpos)[2],
                                            float (&rl)[2], float (&rd)[2]) {
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const attn_bwd_row_state rs = attn_bwd_row(p, kvh, r16 + (lane >> 2) + 8 * hf, pos_max);
        rpos[hf] = rs.pos, rl[hf] = rs.lse2, rd[hf] = rs.delta;
    }
}

// The pieces of one key tile of 64 keys from j0 for a warpgroup's 64 query rows (Q at q_a, dO
// at o_a; K, V of the tile at k_t, v_t). rpos, rl, rd: this lane's two rows' position, lse2, D.
// Issues S = Q·Kᵀ and dP = dO·Vᵀ, two commit groups (s and dp are overwritten).
template <int DK, int DV>
__device__ __forceinline__ void wgb_dq_issue_sdp(float (&s)[32], float (&dp)[32], uint32_t q_a,
                                                 uint32_t o_a, uint32_t k_t, uint32_t v_t) {
    wg_acc_undef(s); // the products' first k-steps overwrite them
    wg_acc_undef(dp);
    wg_reg_fence(s);
    wg_reg_fence(dp);
    wg_fence();
    wgb_issue_abt<DK>(s, q_a, kRowsQ, k_t, kBN); // S = Q·Kᵀ
    wg_commit();
    wgb_issue_abt<DV>(dp, o_a, kRowsQ, v_t, kBN); // dP = dO·Vᵀ
    wg_commit();
}
// P in place of S: exp2(S·scale_log2 − lse2), masked unless `full` (keys past the row's position
// or ke, before its window).
__device__ __forceinline__ void wgb_dq_probs(float (&s)[32], const attn_bwd_tc_params &p, int j0,
                                             bool full, int ke, const int (&rpos)[2],
                                             const float (&rl)[2], int tq) {
#pragma unroll
    for (int i = 0; i < 32; i++) {
        const int hf = (i >> 1) & 1;
        float x = s[i] * p.scale_log2 - rl[hf];
        if (!full) {
            const int j = j0 + wgb_col(i, tq);
            if (j >= ke || j > rpos[hf] || j < attn_lo(rpos[hf], p.window)) x = -INFINITY;
        }
        s[i] = exp2f(x);
    }
}
// dS = P ∘ (dP − D) as the bf16 A fragments sf (dp is overwritten).
__device__ __forceinline__ void wgb_dq_ds(uint32_t (&sf)[4][4], const float (&s)[32],
                                          float (&dp)[32], const float (&rd)[2]) {
#pragma unroll
    for (int i = 0; i < 32; i++) dp[i] = s[i] * (dp[i] - rd[(i >> 1) & 1]); // dS
    wgb_frags(sf, dp);
}
// Issues dQ += dS·K (one commit group).
template <int DK>
__device__ __forceinline__ void wgb_dq_issue_dq(float (&dqa)[64], float (&dqb)[32],
                                                const uint32_t (&sf)[4][4], uint32_t k_t) {
    wg_reg_fence(dqa);
    if constexpr (DK == 192) wg_reg_fence(dqb);
    wg_fence();
    wgb_issue_fx<DK>(dqa, dqb, sf, k_t); // dQ += dS·K
    wg_commit();
}
template <int DK>
__device__ __forceinline__ void wgb_dq_fence(float (&dqa)[64], float (&dqb)[32]) {
    wg_reg_fence(dqa);
    if constexpr (DK == 192) wg_reg_fence(dqb);
}
// The whole tile, every product waited for.
template <int DK, int DV>
__device__ __forceinline__ void wgb_dq_tile(const attn_bwd_tc_params &p, float (&dqa)[64],
                                            float (&dqb)[32], uint32_t q_a, uint32_t o_a,
                                            uint32_t k_t, uint32_t v_t, int j0, bool full, int ke,
                                            const int (&rpos)[2], const float (&rl)[2],
                                            const float (&rd)[2], int tq) {
    float s[32], dp[32];
    uint32_t sf[4][4];
    wgb_dq_issue_sdp<DK, DV>(s, dp, q_a, o_a, k_t, v_t);
    wg_wait<1>();
    wg_reg_fence(s);
    wgb_dq_probs(s, p, j0, full, ke, rpos, rl, tq);
    wg_wait<0>();
    wg_reg_fence(dp);
    wgb_dq_ds(sf, s, dp, rd);
    wgb_dq_issue_dq<DK>(dqa, dqb, sf, k_t);
    wg_wait<0>();
    wgb_dq_fence<DK>(dqa, dqb);
}

// dq = scale·dQ for this lane's two rows (packed rows r16 + lane/4 + 8hf, r16 the warp's first;
// padding rows not written): the dQ kernels' epilogue, sole writers of their rows.
template <int DK>
__device__ __forceinline__ void wgb_store_dq(const attn_bwd_tc_params &p, const float (&dqa)[64],
                                             const float (&dqb)[32], int kvh, int r16, int lane) {
    const int tq = lane & 3, nrows = p.T * p.G;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int pr = r16 + (lane >> 2) + 8 * hf;
        if (pr >= nrows) continue;
        const size_t o = (size_t)attn_bwd_grow(p, kvh, pr) * DK + 2 * tq;
#pragma unroll
        for (int n = 0; n < 16; n++)
#pragma unroll
            for (int x = 0; x < 2; x++)
                st_any(p.dq, p.dq_bf, o + 8 * n + x, p.scale * dqa[4 * n + 2 * hf + x]);
        if constexpr (DK == 192) {
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int x = 0; x < 2; x++)
                    st_any(p.dq, p.dq_bf, o + 128 + 8 * n + x, p.scale * dqb[4 * n + 2 * hf + x]);
        }
    }
}

#endif // AE_WGMMA_DEVICE

// dq = scale·dq_acc (F32 or BF16), n values: after the fused kernel.
__global__ void k_attn_bwd_wg_dq_finish(const float *acc, void *dq, int dq_bf, size_t n,
                                        float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        st_any(dq, dq_bf, i, scale * acc[i]);
}

#ifdef AE_WGMMA_DEVICE
// ---- the dK/dV kernel's step (k_attn_bwd_wg_kv; two pieces, with the fused kernel's dS store
// between them) ----

// A warpgroup's step on a query tile (Q at q_a, dO at o_a; the rows' lse2, D, position at lt, dt,
// pt; its 64 keys jk of K at k_a, V at v_a): waits for its turn (named barrier 3 + wg), issues
// Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ, gives the other warpgroup its turn (when pass_turn), then Pᵀ
// (masked unless fullv) and dSᵀ as the bf16 A fragments pf, sf.
template <int DK, int DV>
__device__ __forceinline__ void wgb_kv_probs(uint32_t (&pf)[4][4], uint32_t (&sf)[4][4],
                                             uint32_t k_a, uint32_t v_a, uint32_t q_a,
                                             uint32_t o_a, const float *lt, const float *dt,
                                             const int *pt, const int (&jk)[2], bool fullv,
                                             float scale_log2, int window, int tq, int wg,
                                             bool pass_turn) {
    float st[32], dp[32];
    wg_acc_undef(st); // the products' first k-steps overwrite them
    wg_acc_undef(dp);
    nbar_sync(3 + wg, 2 * 128); // this warpgroup's turn to issue
    wg_reg_fence(st);
    wg_reg_fence(dp);
    wg_fence();
    wgb_issue_abt<DK>(st, k_a, kKeys, q_a, kBQ); // Sᵀ = K·Qᵀ
    wg_commit();
    wgb_issue_abt<DV>(dp, v_a, kKeys, o_a, kBQ); // dPᵀ = V·dOᵀ
    wg_commit();
    if (pass_turn) nbar_arrive(4 - wg, 2 * 128);
    wg_wait<1>();
    wg_reg_fence(st);
    if (fullv)
        wgb_probs_t<false>(st, lt, pt, jk, scale_log2, window, tq);
    else
        wgb_probs_t<true>(st, lt, pt, jk, scale_log2, window, tq);
    wg_wait<0>();
    wg_reg_fence(dp);
    wgb_ds_t(dp, st, dt, tq); // dSᵀ
    wgb_frags(pf, st);
    wgb_frags(sf, dp);
}
// Issues dV += Pᵀ·dO, dK += dSᵀ·Q (dK columns 0..127 in dka, 128..191 in dkb at dk 192), one
// commit group; wgb_kv_acc_wait waits for it (pf, sf untouched until then).
template <int DK>
__device__ __forceinline__ void wgb_kv_acc_issue(float (&dva)[64], float (&dka)[64],
                                                 float (&dkb)[32], const uint32_t (&pf)[4][4],
                                                 const uint32_t (&sf)[4][4], uint32_t q_a,
                                                 uint32_t o_a) {
    wg_reg_fence(dva);
    wg_fence();
    wgb_issue_fb(dva, pf, o_a); // dV += Pᵀ·dO
    wg_reg_fence(dka);
    if constexpr (DK == 192) wg_reg_fence(dkb);
    wgb_issue_fx<DK>(dka, dkb, sf, q_a); // dK += dSᵀ·Q
    wg_commit();
}
template <int DK>
__device__ __forceinline__ void wgb_kv_acc_wait(float (&dva)[64], float (&dka)[64],
                                                float (&dkb)[32]) {
    wg_wait<0>();
    wg_reg_fence(dva);
    wg_reg_fence(dka);
    if constexpr (DK == 192) wg_reg_fence(dkb);
}
template <int DK>
__device__ __forceinline__ void wgb_kv_accumulate(float (&dva)[64], float (&dka)[64],
                                                  float (&dkb)[32], const uint32_t (&pf)[4][4],
                                                  const uint32_t (&sf)[4][4], uint32_t q_a,
                                                  uint32_t o_a) {
    wgb_kv_acc_issue<DK>(dva, dka, dkb, pf, sf, q_a, o_a);
    wgb_kv_acc_wait<DK>(dva, dka, dkb);
}
#endif

// The dK/dV kernel (see the top of the file). Its two warpgroups are staggered: no block-wide
// barrier in the loop, so one warpgroup's softmax-gradient work (exp2, dS, fragments) runs while
// the other's products hold the tensor cores (measured 2026-11-30 19:27 UTC against the lock-step
// loop it replaced, which had a __syncthreads per query tile and double buffers: the same bits,
// bench_attn --bwd-paths 0.4-0.6% faster, bench_distill Qwen3-1.7B stage 1 MLA +1.4%/+2.2%,
// GateSWA +1.2%/+1.4% in two A/B pairs):
//   - 3 buffers of query rows; a step's tile lands on the buffer's "full" mbarrier (each of the
//     256 threads arrives when its cp.async chunks land: cp.async.mbarrier.arrive.noinc). A
//     warpgroup issues its chunks of tile i + 1 at step i, after its wait for tile i: tile i
//     holds the other warpgroup's chunks, issued at that one's step i − 1, so it has finished
//     step i − 2, the last reader of the buffer refilled (3 buffers).
//   - each warpgroup keeps its own copy of the rows' lse2, D, position (written by its threads
//     at step i − 1: lse2 and D by cp.async, landing on the tile's "full" barrier, so no thread
//     waits for a load there; the position by a store; read after its named barrier 1 + wg at
//     step i).
//   - issue order (FlashAttention-3's warpgroup ping-pong): the Sᵀ / dPᵀ products of warpgroup
//     0 step i, then warpgroup 1 step i, then warpgroup 0 step i + 1, ... through named
//     barriers 3 (warpgroup 0's turn) and 4 (warpgroup 1's), so warpgroup 0 computes its
//     probabilities while warpgroup 1's products run, and the other way round.
// TMA (not FUSED): Q and dO of a query tile come by TMA, issued by thread 0 (tq, tdo: their tensor
// maps, [T][Hq][d] with boxes of 64 columns x G heads x kBQ / G tokens, so a box is the tile's
// 64 packed rows in order; G divides kBQ), instead of cp.async from every thread; the rows' state
// still comes by cp.async. Thread 0 issues tile i + 1 where the threads issued their copies: after
// the wait for tile i, whose "full" phase needs warpgroup 1's arrivals of its step i − 1, so both
// warpgroups are past step i − 2, the last reader of the buffer refilled.
template <int DK, int DV, bool FUSED, bool TMA = false, bool DS = false>
__global__ void __launch_bounds__(kWgThreads, 1)
    k_attn_bwd_wg_kv(const attn_bwd_tc_params p, const __grid_constant__ CUtensorMap tq_map,
                     const __grid_constant__ CUtensorMap tdo_map) {
#ifdef AE_WGMMA_DEVICE
    typedef wgb_cfg<DK, DV> C;
    extern __shared__ unsigned char wgb_smem[];
    const uint32_t base = smem_base_1k(wgb_smem);
    unsigned char *const sb = wgb_smem + (base - smem_u32(wgb_smem));
    const uint32_t full = base + C::KV_BAR;

    const int tid = threadIdx.x, wg = tid >> 7, wt = tid & 127, warp = (tid >> 5) & 3;
    const int lane = tid & 31, tq = lane & 3;
    int kvh = blockIdx.x + (DS ? p.ds_h0 : 0), ky = blockIdx.y;
    if constexpr (FUSED) { // tile from a ticket (see wgf_add_dq): the longest first, heads inner
        __shared__ int ticket;
        if (tid == 0) ticket = atomicAdd(p.sem, 1);
        __syncthreads();
        kvh = ticket % p.Hkv, ky = ticket / p.Hkv;
    }
    const int G = p.G, S = p.pos0 + p.T, nrows = p.T * G;
    const int lgG = attn_bwd_lg(G); // packed rows to q/dout rows by shifts when G is 2^lgG
    const int j0 = attn_lo(p.pos0, p.window) + ky * kKeys;
    // packed rows of the queries that can see a key of the tile: tokens t_lo .. t_hi
    int t_lo, t_hi;
    attn_bwd_key_tile_tokens(p, j0, kKeys, &t_lo, &t_hi);
    const int r_begin = t_lo * G / kBQ * kBQ, r_end = (t_hi + 1) * G;
    // this warpgroup's rows' lse2, D, position of buffer b: rstate(b)[0 .. 3·kBQ)
    auto rstate = [&](int b) { return reinterpret_cast<float *>(sb + C::KV_R) + (b * 2 + wg) * 3 * kBQ; };

    if (tid == 0) {
        for (int b = 0; b < kBufsKV; b++) mbar_init(full + 8 * b, kWgThreads + (TMA ? 1 : 0));
        fence_mbar_init();
    }
    __syncthreads();

    wgb_load<kKeys, DK>(sb + C::KV_K, p.q, [&](int r) { return attn_bwd_k_row<DK>(p, kvh, j0 + r, S); },
                        tid);
    wgb_load<kKeys, DV>(sb + C::KV_V, p.q, [&](int r) { return attn_bwd_v_row<DV>(p, kvh, j0 + r, S); },
                        tid);
    // this thread's chunks of Q, dO of packed rows R0 .. R0 + kBQ − 1 into buffer b, its
    // warpgroup's copy of their row state, then its arrival on the buffer's "full" barrier
    auto load_rows = [&](int R0, int b) {
        if constexpr (TMA) {
            if (tid == 0) {
                const uint32_t fb = full + 8 * b;
                mbar_arrive_expect_tx(fb, kBQ * (DK + DV) * 2);
                const uint32_t qd = base + C::KV_Q + b * kBQ * DK * 2;
                const uint32_t od = base + C::KV_O + b * kBQ * DV * 2;
#pragma unroll
                for (int c = 0; c < DK / 64; c++)
                    tma_load_3d(qd + c * kBQ * 128, &tq_map, 64 * c, kvh * G, R0 / G, fb);
#pragma unroll
                for (int c = 0; c < DV / 64; c++)
                    tma_load_3d(od + c * kBQ * 128, &tdo_map, 64 * c, kvh * G, R0 / G, fb);
            }
        } else {
            wgb_load<kBQ, DK>(sb + C::KV_Q + b * kBQ * DK * 2, p.q,
                              [&](int r) {
                                  const int pr = R0 + r;
                                  return pr < nrows ? p.q + (size_t)attn_bwd_grow_lg(p, kvh, pr, lgG) * DK
                                                    : nullptr;
                              },
                              tid);
            wgb_load<kBQ, DV>(sb + C::KV_O + b * kBQ * DV * 2, p.q,
                              [&](int r) {
                                  const int pr = R0 + r;
                                  return pr < nrows
                                             ? p.dout + (size_t)attn_bwd_grow_lg(p, kvh, pr, lgG) * DV
                                             : nullptr;
                              },
                              tid);
        }
        float *rs3 = rstate(b);
        if (wt < kBQ) { // lse2, D by cp.async too (a load here would stall the warp), as attn_bwd_row
            const int pr = R0 + wt, real = pr < nrows;
            const size_t gr = real ? (size_t)attn_bwd_grow_lg(p, kvh, pr, lgG) : 0;
            cp_async4(rs3 + wt, p.lse2 + gr, real);
            cp_async4(rs3 + kBQ + wt, p.delta + gr, real);
            reinterpret_cast<int *>(rs3)[2 * kBQ + wt] =
                real ? p.pos0 + (lgG >= 0 ? pr >> lgG : pr / G) : -1;
        }
        cp_async_mbar_arrive_noinc(full + 8 * b);
    };

    // dK columns 0..127 in dka, 128..191 (dk 192) in dkb (unused at dk 128: never fenced, so
    // the compiler drops it)
    float dva[64], dka[64], dkb[32];
#pragma unroll
    for (int i = 0; i < 64; i++) dva[i] = dka[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) dkb[i] = 0.0f;
    const int jw = j0 + 64 * wg;                                 // the warpgroup's first key
    const int jk[2] = {jw + 16 * warp + (lane >> 2), jw + 16 * warp + (lane >> 2) + 8}; // lane's
    const uint32_t k_a = base + C::KV_K + wg * 64 * 128, v_a = base + C::KV_V + wg * 64 * 128;
    const uint32_t ds_a = base + C::KV_DS + wg * kBQ * 64 * 2; // fused, DS: this warpgroup's dS
    // DS: this warpgroup's key tile of 64 and its head's stored tiles (pos0 = 0, no window, G = 1)
    const int kj = 2 * ky + wg;
    bf16 *const ds_head = DS ? p.ds_tiles + (size_t)(kvh - p.ds_h0) * p.ds_nq * (p.ds_nq + 1) / 2 *
                                               (kDsTile / 2)
                             : nullptr;

    const int r_last = (r_end - 1) / kBQ * kBQ;
    load_rows(r_last, 0); // with K and V: all of this thread's copies so far
    if (wg == 1) nbar_arrive(3, 2 * 128); // warpgroup 0 issues first
    int it = 0;
    for (int R0 = r_last; R0 >= r_begin; R0 -= kBQ, it++) {
        const int b = it % kBufsKV;
        mbar_wait(full + 8 * b, (uint32_t)(it / kBufsKV) & 1);
        nbar_sync(1 + wg, 128); // this warpgroup's row state of the tile, written at step it − 1
        fence_proxy_async();
        if (R0 - kBQ >= r_begin) load_rows(R0 - kBQ, (it + 1) % kBufsKV);
        const uint32_t q_a = base + C::KV_Q + b * kBQ * DK * 2;
        const uint32_t o_a = base + C::KV_O + b * kBQ * DV * 2;
        const float *lt = rstate(b), *dt = lt + kBQ;
        const int *pt = reinterpret_cast<const int *>(lt + 2 * kBQ);

        // every row of the tile sees every key of the warpgroup: no mask
        const int pos_first = p.pos0 + R0 / G, pos_last = p.pos0 + (R0 + kBQ - 1) / G;
        const bool fullv = R0 + kBQ <= nrows && pos_first >= jw + 63 &&
                           (p.window <= 0 || attn_lo(pos_last, p.window) <= jw);
        uint32_t pf[4][4], sf[4][4];
        // the other warpgroup's turn after this one's products (warpgroup 1 gives none after its
        // last step: every arrival is then matched by a wait)
        wgb_kv_probs<DK, DV>(pf, sf, k_a, v_a, q_a, o_a, lt, dt, pt, jk, fullv, p.scale_log2,
                             p.window, tq, wg, wg == 0 || R0 - kBQ >= r_begin);
        if constexpr (FUSED) { // dS of the tile for dQ, written once the last dQ read it
            wgf_store_ds(ds_a, sf, warp, lane);
            fence_proxy_async();
            nbar_sync(5 + wg, 128);
        }
        if constexpr (DS) {
            // dSᵀ of the tile (query tile qi, key tile kj <= qi) to global memory, each warp its
            // 16 keys: into its slice of the staging tile (once its store of the step before has
            // read it) before the products that read sf are issued, then out by a bulk store
            // while they run
            const int qi = R0 / kBQ;
            const bool store = kj <= qi;
            if (store) {
                bulk_wait_read_if(lane == 0);
                __syncwarp();
                wgd_store_dst(ds_a, sf, warp, lane);
                fence_proxy_async();
                __syncwarp();
            }
            wgb_kv_acc_issue<DK>(dva, dka, dkb, pf, sf, q_a, o_a);
            if (store)
                bulk_store_if(ds_head + ((size_t)qi * (qi + 1) / 2 + kj) * (kDsTile / 2) + warp * 1024,
                              ds_a + warp * 2048, 2048, lane == 0);
            wgb_kv_acc_wait<DK>(dva, dka, dkb);
        } else {
            wgb_kv_accumulate<DK>(dva, dka, dkb, pf, sf, q_a, o_a);
        }
        if constexpr (FUSED) { // this warpgroup's part of the tile's dQ, after the earlier parts
            const int first = (attn_lo(p.pos0 + R0 / G, p.window) - attn_lo(p.pos0, p.window)) / kKeys;
            int *count = p.sem + 1 + (size_t)kvh * ((nrows + kBQ - 1) / kBQ) + R0 / kBQ;
            wgf_add_dq<DK>(p, ds_a, k_a, count, 2 * (ky - first) + wg, kvh, R0, warp, lane);
        }
    }
    if constexpr (DS) bulk_wait_if(lane == 0); // the stores complete before the dQ kernel
    wgb_store_dkdv<DK, DV>(p, kvh, S, jk, tq, dka, dkb, dva);
#else
    (void)p;
#endif
}

template <int DK, int DV>
__global__ void __launch_bounds__(kWgThreads, 1) k_attn_bwd_wg_q(const attn_bwd_tc_params p) {
#ifdef AE_WGMMA_DEVICE
    typedef wgb_cfg<DK, DV> C;
    extern __shared__ unsigned char wgb_smem[];
    const uint32_t base = smem_base_1k(wgb_smem);
    unsigned char *const sb = wgb_smem + (base - smem_u32(wgb_smem));

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int tq = lane & 3, kvh = blockIdx.x;
    const wgb_dq_block k = wgb_dq_block_of(p);
    const int R0 = k.R0, kb = k.kb, ke = k.ke;

    wgb_load<kRowsQ, DK>(sb + C::Q_Q, p.q, [&](int r) { return attn_bwd_q_row<DK>(p, kvh, R0 + r); },
                         tid);
    wgb_load<kRowsQ, DV>(sb + C::Q_O, p.q,
                         [&](int r) { return attn_bwd_dout_row<DV>(p, kvh, R0 + r); }, tid);
    auto load_kv = [&](int j0, int b) {
        wgb_load<kBN, DK>(sb + C::Q_K + b * kBN * DK * 2, p.q,
                          [&](int r) { return attn_bwd_k_row<DK>(p, kvh, j0 + r, ke); }, tid);
        wgb_load<kBN, DV>(sb + C::Q_V + b * kBN * DV * 2, p.q,
                          [&](int r) { return attn_bwd_v_row<DV>(p, kvh, j0 + r, ke); }, tid);
    };
    load_kv(kb, 0);
    cp_async_commit();

    int rpos[2];
    float rl[2], rd[2];
    wgb_dq_rows(p, kvh, R0 + 64 * wg + 16 * warp, lane, k.pos_max, rpos, rl, rd);
    const uint32_t q_a = base + C::Q_Q + wg * 64 * 128, o_a = base + C::Q_O + wg * 64 * 128;

    float dqa[64], dqb[32]; // dQ columns 0..127 in dqa, 128..191 (dk 192) in dqb
#pragma unroll
    for (int i = 0; i < 64; i++) dqa[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) dqb[i] = 0.0f;
    for (int j0 = kb, b = 0; j0 < ke; j0 += kBN, b ^= 1) {
        if (j0 + kBN < ke) {
            load_kv(j0 + kBN, b ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_proxy_async();
        __syncthreads(); // tile j0 (and Q, dO) visible to every thread and to the tensor cores
        const uint32_t k_t = base + C::Q_K + b * kBN * DK * 2;
        const uint32_t v_t = base + C::Q_V + b * kBN * DV * 2;
        wgb_dq_tile<DK, DV>(p, dqa, dqb, q_a, o_a, k_t, v_t, j0, j0 >= k.lo_max && j0 <= k.full_hi,
                            ke, rpos, rl, rd, tq);
        __syncthreads(); // buffer b is refilled by the next iteration's prefetch
    }

    wgb_store_dq<DK>(p, dqa, dqb, kvh, R0 + 64 * wg + 16 * warp, lane);
#else
    (void)p;
#endif
}

#ifdef AE_WGMMA_DEVICE
// The stage barriers of the warp-specialised dQ kernels, S of each: "full" (one arrival, the
// producer's, with its bytes) and "empty" (one arrival per consumer warp), initialised by thread
// 0 before a block barrier.
template <int S>
__device__ __forceinline__ void wgb_ring_init(uint32_t full, uint32_t empty) {
    if (threadIdx.x == 0) {
        for (int i = 0; i < S; i++) {
            mbar_init(full + 8 * i, 1);
            mbar_init(empty + 8 * i, 8);
        }
        fence_mbar_init();
    }
    __syncthreads();
}
#endif

// The dQ kernel, warp-specialised (FlashAttention-3's structure, as the forward's
// cuda_attention_ws.cu): the same blocks, tiles and arithmetic as k_attn_bwd_wg_q (wgb_dq_tile,
// so the same bits), 3 warpgroups. Warpgroup 0, the producer (setmaxnreg.dec): one thread loads
// the block's key tiles by TMA (tk, tv: K and V as [keys][Hkv][d], boxes of 64 x 1 x 64; keys
// past the sequence read as zeros, keys past the block's last position are masked as there)
// into kQsStages stages with a "full" mbarrier (the bytes) and an "empty" one (one arrival per
// consumer warp) each. Warpgroups 1 and 2 (rows 0 .. 63, 64 .. 127): Q and dO of the block by
// cp.async, then per key tile wait for "full", wgb_dq_tile, release; no block barrier in the
// loop, so one warpgroup's probabilities run while the other's products do.
template <int DK, int DV>
__global__ void __launch_bounds__(kQsThreads, 1)
    k_attn_bwd_wg_q_ws(const attn_bwd_tc_params p, const __grid_constant__ CUtensorMap tk,
                       const __grid_constant__ CUtensorMap tv) {
#ifdef AE_WGMMA_DEVICE
    typedef wgb_cfg<DK, DV> C;
    constexpr int S = kQsStages;
    extern __shared__ unsigned char wgb_smem[];
    __shared__ __align__(8) uint64_t qs_bars[2 * S]; // full[S], then empty[S]
    const uint32_t base = smem_base_1k(wgb_smem);
    unsigned char *const sb = wgb_smem + (base - smem_u32(wgb_smem));
    const uint32_t full = smem_u32(qs_bars), empty = full + 8 * S;
    wgb_ring_init<S>(full, empty);
    const int kvh = blockIdx.x;
    const wgb_dq_block k = wgb_dq_block_of(p);
    const int R0 = k.R0, kb = k.kb, ntiles = (k.ke - kb + kBN - 1) / kBN;
    // The warpgroup through a shuffle: warp-uniform for ptxas (else it serialises the wgmma).
    const int wgi = __shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0);
    if (wgi == 0) {
        wg_setmaxnreg_dec<kQsProdRegs>();
        if (threadIdx.x != 0) return;
        tma_prefetch_map(&tk);
        tma_prefetch_map(&tv);
        for (int t = 0; t < ntiles; t++) {
            const int st = t % S, j0 = kb + t * kBN;
            mbar_wait(empty + 8 * st, ((t / S) & 1) ^ 1);
            mbar_arrive_expect_tx(full + 8 * st, kBN * (DK + DV) * 2);
            const uint32_t kd = base + C::QS_K + st * kBN * DK * 2;
            const uint32_t vd = base + C::QS_V + st * kBN * DV * 2;
#pragma unroll
            for (int c = 0; c < DK / 64; c++)
                tma_load_3d(kd + c * kBN * 128, &tk, 64 * c, kvh, j0, full + 8 * st);
#pragma unroll
            for (int c = 0; c < DV / 64; c++)
                tma_load_3d(vd + c * kBN * 128, &tv, 64 * c, kvh, j0, full + 8 * st);
        }
        return;
    }
    wg_setmaxnreg_inc<kQsConsRegs>();
    const int ct = threadIdx.x - 128, wg = wgi - 1, warp = (ct >> 5) & 3, lane = ct & 31;
    const int tq = lane & 3;
    wgb_load<kRowsQ, DK>(sb + C::Q_Q, p.q, [&](int r) { return attn_bwd_q_row<DK>(p, kvh, R0 + r); },
                         ct);
    wgb_load<kRowsQ, DV>(sb + C::Q_O, p.q,
                         [&](int r) { return attn_bwd_dout_row<DV>(p, kvh, R0 + r); }, ct);
    cp_async_commit();
    int rpos[2];
    float rl[2], rd[2];
    wgb_dq_rows(p, kvh, R0 + 64 * wg + 16 * warp, lane, k.pos_max, rpos, rl, rd);
    cp_async_wait<0>();
    fence_proxy_async();
    nbar_sync(1, 256); // Q and dO of the block, from both consumer warpgroups' copies
    const uint32_t q_a = base + C::Q_Q + wg * 64 * 128, o_a = base + C::Q_O + wg * 64 * 128;
    float dqa[64], dqb[32]; // dQ columns 0..127 in dqa, 128..191 (dk 192) in dqb
#pragma unroll
    for (int i = 0; i < 64; i++) dqa[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) dqb[i] = 0.0f;
    // Tile t + 1's S and dP are issued before tile t's dQ += dS·K, so that its probabilities
    // and dS run while that product does; dS of tile t alternates between sfa (t even) and sfb.
    auto k_of = [&](int t) { return base + C::QS_K + (t % S) * kBN * DK * 2; };
    auto v_of = [&](int t) { return base + C::QS_V + (t % S) * kBN * DV * 2; };
    auto full_of = [&](int j0) { return j0 >= k.lo_max && j0 <= k.full_hi; };
    uint32_t sfa[4][4], sfb[4][4];
    if (ntiles > 0) { // tile 0's dS
        float s[32], dp[32];
        mbar_wait(full, 0);
        wgb_dq_issue_sdp<DK, DV>(s, dp, q_a, o_a, k_of(0), v_of(0));
        wg_wait<1>();
        wg_reg_fence(s);
        wgb_dq_probs(s, p, kb, full_of(kb), k.ke, rpos, rl, tq);
        wg_wait<0>();
        wg_reg_fence(dp);
        wgb_dq_ds(sfa, s, dp, rd);
    }
    // step t: tile t + 1's S, dP and dS (into sn) around tile t's dQ (from sc); then tile t's
    // stage is released
    auto step = [&](int t, const uint32_t(&sc)[4][4], uint32_t(&sn)[4][4]) {
        const int j1 = kb + (t + 1) * kBN;
        float s[32], dp[32];
        mbar_wait(full + 8 * ((t + 1) % S), ((t + 1) / S) & 1);
        wgb_dq_issue_sdp<DK, DV>(s, dp, q_a, o_a, k_of(t + 1), v_of(t + 1));
        wgb_dq_issue_dq<DK>(dqa, dqb, sc, k_of(t));
        wg_wait<2>();
        wg_reg_fence(s);
        wgb_dq_probs(s, p, j1, full_of(j1), k.ke, rpos, rl, tq);
        wg_wait<1>();
        wg_reg_fence(dp);
        wgb_dq_ds(sn, s, dp, rd);
        wg_wait<0>();
        wgb_dq_fence<DK>(dqa, dqb);
        mbar_arrive_if(empty + 8 * (t % S), lane == 0);
    };
    auto last_dq = [&](int t, const uint32_t(&sc)[4][4]) {
        wgb_dq_issue_dq<DK>(dqa, dqb, sc, k_of(t));
        wg_wait<0>();
        wgb_dq_fence<DK>(dqa, dqb);
        mbar_arrive_if(empty + 8 * (t % S), lane == 0);
    };
    // wg_pingpong's loop (for n >= 1) under `if (ntiles > 0)` compiled to a 6.6% slower
    // backward at dk 192 (MLA 1.7B 1.229 -> 1.310 ms, MLA 8B 2.481 -> 2.645, H200, 2026-12-01
    // 13:40 UTC): this loop stays (its PTX is that of the kernel measured at 12:34)
    for (int t = 0; t < ntiles;) {
        if (t + 1 >= ntiles) {
            last_dq(t, sfa);
            break;
        }
        step(t, sfa, sfb);
        t++;
        if (t + 1 >= ntiles) {
            last_dq(t, sfb);
            break;
        }
        step(t, sfb, sfa);
        t++;
    }
    wgb_store_dq<DK>(p, dqa, dqb, kvh, R0 + 64 * wg + 16 * warp, lane);
#else
    (void)p;
    (void)tk;
    (void)tv;
#endif
}

#ifdef AE_WGMMA_DEVICE
// Issues dQ (64 x DK) += dS·K over one key tile of 64: dS from the dSᵀ tile at ds (64 keys x 64
// query rows, as wgd_store_dst writes it: A M-major), K the 64-row tile at k (N-major); columns
// 0..127 into lo, 128..191 (DK = 192) into hi. Not committed.
template <int DK>
__device__ __forceinline__ void wgb_issue_dsk(float (&lo)[64], float (&hi)[32], uint32_t ds,
                                              uint32_t k) {
    const uint64_t da = wgb_opaque(wg_desc(ds, kNLbo, 1024));
    const uint64_t db = wgb_opaque(wg_desc(k, kNLbo, 1024));
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        wg_mma_ss_mnmajor(lo, da + ((kk * 2048) >> 4), db + ((kk * 2048) >> 4));
        if constexpr (DK == 192)
            wg_mma_ss_mnmajor_n64(hi, da + ((kk * 2048) >> 4), db + ((2 * kNLbo + kk * 2048) >> 4));
    }
}
#endif

// The dQ kernel from stored dS ("ds", see the file header): G = 1, pos0 = 0, no window. Block =
// (head p.ds_h0 + x, query tiles qi0 = 2·by and qi0 + 1 of 64 rows, the last first), 3
// warpgroups. Warpgroup 0, the producer: one thread loads per key tile t of 64 keys the K tile
// by TMA (tk, as k_attn_bwd_wg_q_ws) and each consumer's dS tile (qi, t), where t <= qi, by a
// bulk copy, into kQdStages stages ("full" / "empty" mbarriers as there). Warpgroups 1 and 2,
// query tiles qi0 and qi0 + 1: dQ += dS·K per key tile, in key order (A: dS from shared
// memory; B: K N-major). No masks: the dK/dV kernel stored the masked entries, padding rows and
// keys past the sequence as zeros. Then dq = scale·dQ (wgb_store_dq).
template <int DK, int DV>
__global__ void __launch_bounds__(kQsThreads, 1)
    k_attn_bwd_wg_q_ds(const attn_bwd_tc_params p, const __grid_constant__ CUtensorMap tk) {
#ifdef AE_WGMMA_DEVICE
    typedef wgb_cfg<DK, DV> C;
    constexpr int S = kQdStages;
    extern __shared__ unsigned char wgb_smem[];
    __shared__ __align__(8) uint64_t qd_bars[2 * S]; // full[S], then empty[S]
    const uint32_t base = smem_base_1k(wgb_smem);
    const uint32_t full = smem_u32(qd_bars), empty = full + 8 * S;
    wgb_ring_init<S>(full, empty);
    const int kvh = p.ds_h0 + blockIdx.x, nq = p.ds_nq;
    const int qi0 = 2 * (gridDim.y - 1 - blockIdx.y);
    const int ntiles = (qi0 + 1 < nq ? qi0 + 1 : qi0) + 1; // the key tiles of its last query tile
    const bf16 *ds_head = p.ds_tiles + (size_t)blockIdx.x * nq * (nq + 1) / 2 * (kDsTile / 2);
    // The warpgroup through a shuffle: warp-uniform for ptxas (else it serialises the wgmma).
    const int wgi = __shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0);
    if (wgi == 0) {
        wg_setmaxnreg_dec<kQsProdRegs>();
        if (threadIdx.x != 0) return;
        tma_prefetch_map(&tk);
        for (int t = 0; t < ntiles; t++) {
            const int st = t % S;
            const int n0 = t <= qi0, n1 = qi0 + 1 < nq && t <= qi0 + 1;
            mbar_wait(empty + 8 * st, ((t / S) & 1) ^ 1);
            mbar_arrive_expect_tx(full + 8 * st, kBN * DK * 2 + (n0 + n1) * kDsTile);
            const uint32_t kd = base + C::QD_K + st * kBN * DK * 2;
#pragma unroll
            for (int c = 0; c < DK / 64; c++)
                tma_load_3d(kd + c * kBN * 128, &tk, 64 * c, kvh, t * kBN, full + 8 * st);
            const uint32_t dd = base + C::QD_DS + st * 2 * kDsTile;
            if (n0)
                bulk_load(dd, ds_head + ((size_t)qi0 * (qi0 + 1) / 2 + t) * (kDsTile / 2), kDsTile,
                          full + 8 * st);
            if (n1)
                bulk_load(dd + kDsTile,
                          ds_head + ((size_t)(qi0 + 1) * (qi0 + 2) / 2 + t) * (kDsTile / 2),
                          kDsTile, full + 8 * st);
        }
        return;
    }
    wg_setmaxnreg_inc<kQsConsRegs>();
    const int ct = threadIdx.x - 128, wg = wgi - 1, warp = (ct >> 5) & 3, lane = ct & 31;
    const int qi = qi0 + wg;
    const int mine = qi < nq ? qi + 1 : 0; // the key tiles this warpgroup multiplies: 0 .. qi
    float dqa[64], dqb[32]; // dQ columns 0..127 in dqa, 128..191 (dk 192) in dqb
#pragma unroll
    for (int i = 0; i < 64; i++) dqa[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) dqb[i] = 0.0f;
    // tile t's product is issued before tile t − 1's is waited for (its stage then released);
    // the accumulators are not touched in between (a register fence there would make ptxas
    // wait for the pending product: C7517)
    wgb_dq_fence<DK>(dqa, dqb);
    for (int t = 0; t < mine; t++) {
        const int st = t % S;
        mbar_wait(full + 8 * st, (t / S) & 1);
        wg_fence();
        wgb_issue_dsk<DK>(dqa, dqb, base + C::QD_DS + (st * 2 + wg) * kDsTile,
                          base + C::QD_K + st * kBN * DK * 2);
        wg_commit();
        if (t > 0) {
            wg_wait<1>();
            mbar_arrive_if(empty + 8 * ((t - 1) % S), lane == 0);
        }
    }
    wg_wait<0>();
    wgb_dq_fence<DK>(dqa, dqb);
    if (mine > 0) mbar_arrive_if(empty + 8 * ((mine - 1) % S), lane == 0);
    for (int t = mine; t < ntiles; t++) { // the other warpgroup's last tile: released unread
        mbar_wait(full + 8 * (t % S), (t / S) & 1);
        mbar_arrive_if(empty + 8 * (t % S), lane == 0);
    }
    wgb_store_dq<DK>(p, dqa, dqb, kvh, qi * kBQ + 16 * warp, lane);
#else
    (void)p;
    (void)tk;
#endif
}

#ifndef WGMMA_BWD_KV_TMA
#define WGMMA_BWD_KV_TMA 1
#endif

// The dQ form's default: dQ from stored dS (ds) where it can run (1), else ws or sync as below.
#ifndef WGMMA_BWD_DQ_DS
#define WGMMA_BWD_DQ_DS 1
#endif
// The most device memory the stored dS tiles of one call may take (MiB; AE_CUDA_ATTN_BWD_DS_MB
// overrides): heads run in chunks that fit, and a head that alone does not (T above ~18K at
// 320 MiB: a head's tiles grow as T²), or chunks of fewer dK/dV blocks than SMs (T 16K: one
// head of 128 key blocks a chunk), take the ws / sync kernels. 320 MiB holds Qwen3-1.7B's MLA
// (16 heads, T 4096: 260 MiB) in one chunk and Qwen3-8B's (32 heads) in two.
#ifndef WGMMA_BWD_DS_MB
#define WGMMA_BWD_DS_MB 320
#endif

// What the last Hopper split backward ran for dQ (ae_cuda_attn_bwd_dq_last).
static const char *g_dq_last = "none";

// The dQ kernel's form: AE_CUDA_ATTN_BWD_DQ=sync (k_attn_bwd_wg_q) or =ws (warp-specialised: an
// error where it cannot run); unset: WGMMA_BWD_DQ_WS (ws where it can run).
#ifndef WGMMA_BWD_DQ_WS
#define WGMMA_BWD_DQ_WS 1
#endif

template <int DK, int DV> struct wgb_kernels {
    typedef wgb_cfg<DK, DV> C;
    static int loaded() {
        return wg_kernel_loaded((const void *)k_attn_bwd_wg_kv<DK, DV, false>) &&
               wg_kernel_loaded((const void *)k_attn_bwd_wg_kv<DK, DV, true>) &&
               wg_kernel_loaded((const void *)k_attn_bwd_wg_q<DK, DV>);
    }
    static int prepare(const ae_backend *be, int fused) {
        if (fused)
            return attn_set_smem(be, (const void *)k_attn_bwd_wg_kv<DK, DV, true>, C::KV_SMEM_FUSED);
        return attn_set_smem(be, (const void *)k_attn_bwd_wg_kv<DK, DV, false>, C::KV_SMEM) &&
               attn_set_smem(be, (const void *)k_attn_bwd_wg_q<DK, DV>, C::Q_SMEM);
    }
    // The dK/dV kernel with Q and dO by TMA where it can (AE_CUDA_ATTN_BWD_KV=tma|cp; unset:
    // WGMMA_BWD_KV_TMA): a group G dividing kBQ, 16-byte aligned rows, the tensor-map encoder.
    static void launch_kv(const ae_backend *be, const attn_bwd_tc_params *p, dim3 grid) {
        cudaStream_t s = stream_of(be);
        const char *env = getenv("AE_CUDA_ATTN_BWD_KV");
        const int want = env ? strcmp(env, "tma") == 0 : WGMMA_BWD_KV_TMA;
        CUtensorMap tq, tdo;
        const void *kt = (const void *)k_attn_bwd_wg_kv<DK, DV, false, true>;
        if (want && kBQ % p->G == 0 && wg_kernel_loaded(kt) && cuda_tma_available() &&
            attn_set_smem(be, kt, C::KV_SMEM) && rows_map(&tq, p->q, p, DK) &&
            rows_map(&tdo, p->dout, p, DV)) {
            k_attn_bwd_wg_kv<DK, DV, false, true><<<grid, kWgThreads, C::KV_SMEM, s>>>(*p, tq, tdo);
            cuda_check(be, cudaGetLastError(), "attention_bwd (wgmma dk, dv; Q and dO by TMA)");
            return;
        }
        memset(&tq, 0, sizeof tq); // unused
        k_attn_bwd_wg_kv<DK, DV, false><<<grid, kWgThreads, C::KV_SMEM, s>>>(*p, tq, tq);
        cuda_check(be, cudaGetLastError(), "attention_bwd (wgmma dk, dv)");
    }
    // The tensor map of q or dout (x: [T][Hq][d] bf16) for the dK/dV kernel's query tiles:
    // boxes of 64 columns x G heads x kBQ / G tokens (the tile's packed rows in order).
    static int rows_map(CUtensorMap *m, const bf16 *x, const attn_bwd_tc_params *p, int d) {
        if ((uintptr_t)x & 15) return 0;
        const uint64_t dims[3] = {(uint64_t)d, (uint64_t)p->Hq, (uint64_t)p->T};
        const uint64_t strides[2] = {(uint64_t)d * 2, (uint64_t)p->Hq * d * 2};
        const uint32_t box[3] = {64, (uint32_t)p->G, (uint32_t)(kBQ / p->G)};
        return cuda_tmap_bf16(m, x, 3, dims, strides, box);
    }
    static void launch(const ae_backend *be, attn_bwd_tc_params *p, int fused) {
        cudaStream_t s = stream_of(be);
        const int S = p->pos0 + p->T;
        const int jmin = p->window > 0 && p->pos0 - p->window + 1 > 0 ? p->pos0 - p->window + 1 : 0;
        const unsigned key_tiles = (unsigned)((S - jmin + kKeys - 1) / kKeys);
        if (fused) {
            // a ticket and a counter per (kv head, query tile of kBQ rows), zeroed; the fp32 sums
            // of dq, zeroed: dq itself when it is F32 and 8-byte aligned, else scratch
            const size_t nc = 1 + (size_t)p->Hkv * (size_t)((p->T * p->G + kBQ - 1) / kBQ);
            const size_t nq = (size_t)p->T * p->Hq * DK;
            const int own_acc = p->dq_bf || ((uintptr_t)p->dq & 7) != 0;
            const size_t nc4 = (nc + 3) / 4 * 4;
            void *tmp = cuda_tmp_alloc(be, sizeof(int) * nc4 + (own_acc ? sizeof(float) * nq : 0),
                                       "attention_bwd");
            if (!tmp) return; // error kept
            p->sem = (int *)tmp;
            p->dq_acc = own_acc ? (float *)((int *)tmp + nc4) : (float *)p->dq;
            cuda_check(be, cudaMemsetAsync(p->sem, 0, sizeof(int) * nc, s), "attention_bwd");
            cuda_check(be, cudaMemsetAsync(p->dq_acc, 0, sizeof(float) * nq, s), "attention_bwd");
            CUtensorMap none;
            memset(&none, 0, sizeof none); // no TMA in the fused kernel
            k_attn_bwd_wg_kv<DK, DV, true>
                <<<key_tiles * (unsigned)p->Hkv, kWgThreads, C::KV_SMEM_FUSED, s>>>(*p, none, none);
            cuda_check(be, cudaGetLastError(), "attention_bwd (wgmma fused dk, dv, dq)");
            k_attn_bwd_wg_dq_finish<<<cuda_blocks(nq, 256), 256, 0, s>>>(p->dq_acc, p->dq,
                                                                          p->dq_bf, nq, p->scale);
            cuda_check(be, cudaGetLastError(), "attention_bwd (wgmma fused dq)");
            cuda_tmp_free(be, tmp);
            return;
        }
        const char *env = getenv("AE_CUDA_ATTN_BWD_DQ");
        const int want_ds = env ? strcmp(env, "ds") == 0 : WGMMA_BWD_DQ_DS;
        if (want_ds && launch_ds(be, p, key_tiles)) {
            g_dq_last = "ds";
            return;
        }
        if (env && want_ds) {
            cuda_check(be, cudaErrorInvalidDeviceFunction,
                       "attention_bwd (AE_CUDA_ATTN_BWD_DQ=ds asks for dQ from stored dS, which "
                       "cannot run here: an sm_90a build, the tensor map encoder, G = 1, pos0 = 0, "
                       "no window, a head's tiles within AE_CUDA_ATTN_BWD_DS_MB, device memory)");
            return;
        }
        launch_kv(be, p, dim3((unsigned)p->Hkv, key_tiles));
        const unsigned row_tiles = (unsigned)((p->T * p->G + kRowsQ - 1) / kRowsQ);
        const dim3 grid((unsigned)p->Hkv, row_tiles);
        const int want_ws = env ? strcmp(env, "ws") == 0 : WGMMA_BWD_DQ_WS;
        CUtensorMap tk, tv;
        const void *kws = (const void *)k_attn_bwd_wg_q_ws<DK, DV>;
        if (want_ws && wg_kernel_loaded(kws) && cuda_tma_available() &&
            attn_set_smem(be, kws, C::QS_SMEM) &&
            cuda_tmap_keys(&tk, p->k, p->pos0 + p->T, p->Hkv, DK, p->k_stride, kBN) &&
            cuda_tmap_keys(&tv, p->v, p->pos0 + p->T, p->Hkv, DV, p->v_stride, kBN)) {
            k_attn_bwd_wg_q_ws<DK, DV><<<grid, kQsThreads, C::QS_SMEM, s>>>(*p, tk, tv);
            cuda_check(be, cudaGetLastError(), "attention_bwd (wgmma dq, warp-specialised)");
            g_dq_last = "ws";
            return;
        }
        if (env && want_ws) {
            cuda_check(be, cudaErrorInvalidDeviceFunction,
                       "attention_bwd (AE_CUDA_ATTN_BWD_DQ=ws asks for the warp-specialised dQ "
                       "kernel, which cannot run here: an sm_90a build, the driver's tensor map "
                       "encoder and 16-byte aligned K and V rows)");
            return;
        }
        k_attn_bwd_wg_q<DK, DV><<<grid, kWgThreads, C::Q_SMEM, s>>>(*p);
        cuda_check(be, cudaGetLastError(), "attention_bwd (wgmma dq)");
        g_dq_last = "sync";
    }
    // Device memory for the dS tiles, stream-ordered; null (no error kept) when there is none
    // or a graph is being captured: the caller then runs the other dQ kernels.
    static void *ds_alloc(const ae_backend *be, size_t bytes) {
        void *t = NULL;
        if (cu(be)->rec || cuda_failed(be)) return NULL;
        if (cudaMallocAsync(&t, bytes, stream_of(be)) != cudaSuccess) {
            cudaGetLastError();
            return NULL;
        }
        return t;
    }
    // dQ from stored dS: per chunk of kv heads, the dK/dV kernel (Q and dO by TMA) also storing
    // its dS tiles, then k_attn_bwd_wg_q_ds. 1 when queued; 0, with nothing queued, where it
    // cannot run (G != 1, pos0 != 0, a window, no sm_90a code or tensor maps, a head's tiles
    // over the budget, chunks smaller than a wave, no device memory for them,
    // AE_CUDA_ATTN_BWD_KV=cp).
    static int launch_ds(const ae_backend *be, attn_bwd_tc_params *p, unsigned key_tiles) {
        const char *kv = getenv("AE_CUDA_ATTN_BWD_KV"); // cp: the dK/dV kernel without TMA
        const int kv_tma = kv ? strcmp(kv, "tma") == 0 : WGMMA_BWD_KV_TMA;
        if (!kv_tma || p->G != 1 || p->pos0 != 0 || p->window > 0) return 0;
        const void *kkv = (const void *)k_attn_bwd_wg_kv<DK, DV, false, true, true>;
        const void *kq = (const void *)k_attn_bwd_wg_q_ds<DK, DV>;
        CUtensorMap tq, tdo, tk;
        if (!wg_kernel_loaded(kkv) || !wg_kernel_loaded(kq) || !cuda_tma_available() ||
            !attn_set_smem(be, kkv, C::KV_SMEM_FUSED) || !attn_set_smem(be, kq, C::QD_SMEM) ||
            !rows_map(&tq, p->q, p, DK) || !rows_map(&tdo, p->dout, p, DV) ||
            !cuda_tmap_keys(&tk, p->k, p->T, p->Hkv, DK, p->k_stride, kBN))
            return 0;
        const int nq = (p->T + kBQ - 1) / kBQ;
        const size_t head_bytes = (size_t)nq * (nq + 1) / 2 * kDsTile;
        const char *mb = getenv("AE_CUDA_ATTN_BWD_DS_MB");
        const size_t budget = (size_t)(mb ? atol(mb) : WGMMA_BWD_DS_MB) << 20;
        const int hmax = (int)(budget / head_bytes < (size_t)p->Hkv ? budget / head_bytes : p->Hkv);
        if (hmax < 1) return 0;
        const int nchunks = (p->Hkv + hmax - 1) / hmax, hc = (p->Hkv + nchunks - 1) / nchunks;
        // chunks of fewer dK/dV blocks than the GPU has SMs would leave it idle behind their
        // longest (causal) blocks: the other dQ kernels then
        if (nchunks > 1 && (long)hc * key_tiles < cu(be)->sm_count) return 0;
        void *tiles = ds_alloc(be, (size_t)hc * head_bytes);
        if (!tiles) return 0;
        cudaStream_t s = stream_of(be);
        p->ds_tiles = (bf16 *)tiles;
        p->ds_nq = nq;
        for (int h0 = 0; h0 < p->Hkv; h0 += hc) {
            const unsigned n = (unsigned)(hc < p->Hkv - h0 ? hc : p->Hkv - h0);
            p->ds_h0 = h0;
            k_attn_bwd_wg_kv<DK, DV, false, true, true>
                <<<dim3(n, key_tiles), kWgThreads, C::KV_SMEM_FUSED, s>>>(*p, tq, tdo);
            cuda_check(be, cudaGetLastError(), "attention_bwd (wgmma dk, dv, storing dS)");
            k_attn_bwd_wg_q_ds<DK, DV>
                <<<dim3(n, (unsigned)(nq + 1) / 2), kQsThreads, C::QD_SMEM, s>>>(*p, tk);
            cuda_check(be, cudaGetLastError(), "attention_bwd (wgmma dq from stored dS)");
        }
        cuda_tmp_free(be, tiles);
        return 1;
    }
};

#define AE_BWD_WG_DIMS(X) X(128, 128) X(192, 128)

} // namespace

int attn_bwd_wgmma_takes(const ae_backend *be, int dk, int dv) {
    if (cu(be)->cc_major != 9 || cu(be)->cc_minor != 0) return 0;
#define X(DK, DV) \
    if (dk == DK && dv == DV) return 1;
    AE_BWD_WG_DIMS(X)
#undef X
    return 0;
}

int attn_bwd_wgmma_loaded(int dk, int dv) {
#define X(DK, DV) \
    if (dk == DK && dv == DV) return wgb_kernels<DK, DV>::loaded();
    AE_BWD_WG_DIMS(X)
#undef X
    return 0;
}

int attn_bwd_wgmma_prepare(const ae_backend *be, int dk, int dv, int fused) {
#define X(DK, DV) \
    if (dk == DK && dv == DV) return wgb_kernels<DK, DV>::prepare(be, fused);
    AE_BWD_WG_DIMS(X)
#undef X
    return 0;
}

extern "C" const char *ae_cuda_attn_bwd_dq_last(void) { return g_dq_last; }

void attn_bwd_wgmma_launch(const ae_backend *be, attn_bwd_tc_params *p, int fused) {
#define X(DK, DV) \
    if (p->dk_dim == DK && p->dv_dim == DV) return wgb_kernels<DK, DV>::launch(be, p, fused);
    AE_BWD_WG_DIMS(X)
#undef X
}
