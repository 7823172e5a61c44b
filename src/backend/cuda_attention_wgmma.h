// The pieces of Hopper attention forward kernels shared by kernel F's two forms: the
// synchronous one (cuda_attention_wgmma.cu: every thread loads K/V tiles by cp.async, the
// warpgroups meet at a block barrier per tile) and the warp-specialised one
// (cuda_attention_ws.cu: a producer warp loads them by TMA, the two consumer warpgroups run
// free). Tile shapes, the swizzled shared-memory layout, one key tile's products and online
// softmax, and the epilogue: both forms run exactly this arithmetic, so they give the same bits.
// cuda_attention_wgmma.cu's header comment describes the layout and the accumulator fragments.
#ifndef AE_BACKEND_CUDA_ATTENTION_WGMMA_H
#define AE_BACKEND_CUDA_ATTENTION_WGMMA_H

#include "backend/cuda_attention.h"
#include "backend/cuda_wgmma.h"

#define WG_ROWS 128                  // packed query rows per block (2 warpgroups x 64)
#define WG_BN 128                    // keys per tile
#define WG_DV 128                    // dv (dk: the template parameter DK, 128 or 192)
#define WG_THREADS 256
#define WG_TILE_BYTES (128 * 128 * 2) // one 128 x 128 bf16 tile (two 16 KB halves): V
#define WG_HALF_BYTES (128 * 128)     // one half: 128 rows x 64 columns
// A 128 x dk tile (Q or K): dk / 64 halves.
#define WG_QK_BYTES(dk) (128 * (dk) * 2)

// Kernel F's grid (both forms; wg_block_of says which block computes what). The GPU starts
// blocks in index order, and a block's work grows with its row tile under a causal mask.
//   Head by head (tiles x Hkv), each head's tiles longest (latest) first: the blocks running
//     together share their head's K and V in L2. Taken where a head has more row tiles than
//     half the GPU's SMs: the heads' short tiles then end together.
//   Longest first over all heads (one dimension, Hkv · tiles blocks, heads inner): block i takes
//     row tile tiles − 1 − i / Hkv of kv head i % Hkv. Taken for fewer tiles a head, where head
//     by head left the last heads' long tiles running alone at the end: bench_attn
//     --fwd-kernels (H200, 132 SMs, 2026-12-01) Qwen3-1.7B's heads at 4K (64 tiles a head)
//     0.146 → 0.129 ms, its MLA student's (32) 0.181 → 0.153, Qwen3-8B's MLA student's (32)
//     0.310 → 0.300. With 128 tiles a head or more it was level or slower (Qwen3-8B at 32K
//     12.07 → 12.64 ms in one call; at 4K 0.232 → 0.243, within the spread between calls).
static inline dim3 wg_grid(int tiles, int Hkv, int sms) {
    if (2 * tiles > sms) return dim3((unsigned)tiles, (unsigned)Hkv);
    return dim3((unsigned)tiles * (unsigned)Hkv);
}

#ifdef AE_WGMMA_DEVICE
// Byte offset of 16-byte chunk `chunk` (columns 8·chunk ..; half chunk / 8) of row r in a
// swizzled tile.
__device__ __forceinline__ uint32_t wg_tile_off(int r, int chunk) {
    return (uint32_t)((chunk >> 3) * WG_HALF_BYTES + r * 128 + (((chunk & 7) ^ (r & 7)) << 4));
}

// This block's kv head and row tile in a grid of wg_grid (Hkv 1: the two orders are one).
__device__ __forceinline__ void wg_block_of(int Hkv, int *kvh, int *tile) {
    if (gridDim.y > 1) {
        *kvh = (int)blockIdx.y;
        *tile = (int)(gridDim.x - 1 - blockIdx.x);
    } else {
        *kvh = (int)(blockIdx.x % (unsigned)Hkv);
        *tile = (int)(gridDim.x / (unsigned)Hkv - 1 - blockIdx.x / (unsigned)Hkv);
    }
}

// ---- the pieces of one key tile (a warpgroup's 64 rows) ---------------------------------------

// Issues S = Q·Kᵀ (DK / 16 k-steps over d; the first one overwrites s). Not committed.
template <int DK>
__device__ __forceinline__ void wg_issue_qk(float (&s)[64], uint32_t q_addr, uint32_t k_addr) {
#pragma unroll
    for (int kk = 0; kk < DK / 16; kk++) {
        const uint32_t koff = (kk >> 2) * WG_HALF_BYTES + (kk & 3) * 32;
        wg_mma_ss(s, wg_desc(q_addr + koff, 16, 1024), wg_desc(k_addr + koff, 16, 1024), kk > 0);
    }
}
// Issues O += P·V (8 k-steps over the tile's keys). Not committed.
__device__ __forceinline__ void wg_issue_pv(float (&o)[64], const uint32_t (&pf)[8][4],
                                            uint32_t v_addr) {
#pragma unroll
    for (int k2 = 0; k2 < WG_BN / 16; k2++)
        wg_mma_rs_nmajor(o, pf[k2], wg_desc(v_addr + k2 * 2048, WG_HALF_BYTES, 1024));
}

// The rows' state and the masking facts of one block (this thread's two rows hf = 0, 1).
struct wg_rows {
    float m[2], l[2]; // running max (log2 units, −inf before any key) and this lane's sum part
    int pos[2];       // query positions of the rows (padding rows: the last real row's)
    int lo[2];        // their first visible keys (attn_lo: 0 without a window)
    int ke;           // keys kb .. ke − 1 exist for the block (kb: its first row's lo)
    int full_lo, full_end; // tiles with j0 >= full_lo and j0 + BN <= full_end are visible to
                           // every row (no mask): full_lo is the last row's lo, full_end − 1
                           // the first row's position
    int tq;           // lane % 4: the columns 2tq, 2tq + 1 of each n8-tile
};

// 2^x on the MUFU unit, subnormal results flushed to 0 (exp2f adds a range fix-up of 3
// instructions per call for them: softmax weights that small do not matter next to the row's
// largest, which is 1).
__device__ __forceinline__ float wg_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Online softmax of the raw scores s of key tile j0 (s[4n + e]: key j0 + 8n + 2tq + (e & 1) of
// row half e >> 1): masks (MASK: keys j > pos, j >= ke or j < lo become −inf; the tile's
// column c = 8n + (e & 1) is kept when lim_lo <= c <= lim, lim = min(pos, ke − 1) − j0 − 2tq,
// lim_lo = lo − j0 − 2tq: <= 0 without a window), updates m and l,
// returns each half's factor al for O (O·al before adding this tile; 0 while nothing was seen)
// and P = exp2(s·scale_log2 − m) as bf16 A fragments. Kernel B's arithmetic up to rounding:
// the row max is taken on the raw scores and then scaled (the same value: scale_log2 > 0, and
// rounding is monotonic), and the scaling is fused into the exponent's FFMA.
template <bool MASK>
__device__ __forceinline__ void wg_softmax_t(float (&s)[64], uint32_t (&pf)[8][4], wg_rows &w,
                                             float (&al)[2], int j0, float scale_log2) {
    int lim[2], lim_lo[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        lim[hf] = min(w.pos[hf], w.ke - 1) - j0 - 2 * w.tq;
        lim_lo[hf] = w.lo[hf] - j0 - 2 * w.tq;
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 64; i++) {
        const int c = 8 * (i >> 2) + (i & 1), hf = (i >> 1) & 1;
        if (MASK && (c > lim[hf] || c < lim_lo[hf])) s[i] = -INFINITY;
        mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
    }
    float bs[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const float mn = fmaxf(w.m[hf], quad_max(mx[hf]) * scale_log2);
        bs[hf] = attn_base(mn);
        al[hf] = wg_exp2(w.m[hf] - bs[hf]); // 0 while nothing was seen
        w.m[hf] = mn;
        w.l[hf] *= al[hf];
    }
#pragma unroll
    for (int i = 0; i < 64; i++) {
        s[i] = wg_exp2(fmaf(s[i], scale_log2, -bs[(i >> 1) & 1]));
        w.l[(i >> 1) & 1] += s[i]; // this lane's columns; quad-summed at the end
    }
#pragma unroll
    for (int k2 = 0; k2 < 8; k2++)
#pragma unroll
        for (int x = 0; x < 4; x++) pf[k2][x] = pack_bf16(s[8 * k2 + 2 * x], s[8 * k2 + 2 * x + 1]);
}
// The same, masking only the tiles not visible to every row of the block (the diagonal ones).
// (This branch also keeps the overlapped schedule overlapped: with the softmax in one basic
// block, ptxas hoisted the following wgmma wait and barrier above it — seen in the SASS.)
__device__ __forceinline__ void wg_softmax(float (&s)[64], uint32_t (&pf)[8][4], wg_rows &w,
                                           float (&al)[2], int j0, float scale_log2) {
    if (j0 >= w.full_lo && j0 + WG_BN <= w.full_end)
        wg_softmax_t<false>(s, pf, w, al, j0, scale_log2);
    else
        wg_softmax_t<true>(s, pf, w, al, j0, scale_log2);
}

__device__ __forceinline__ void wg_rescale(float (&o)[64], const float (&al)[2]) {
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] *= al[(i >> 1) & 1];
}

// This thread's two rows (packed rows R0 + 64wg + 16warp + lane/4 + 8hf of a block whose first
// packed row is R0; wg: the consumer warpgroup 0 or 1) and the block's masking facts; *kb: the
// block's first visible key, *ntiles: its key tiles.
__device__ __forceinline__ wg_rows wg_rows_init(const attn_params &p, int R0, int wg, int warp,
                                                int lane, int *kb, int *ntiles) {
    const int G = p.G, nrows = p.T * G;
    const int last = R0 + WG_ROWS - 1 < nrows - 1 ? R0 + WG_ROWS - 1 : nrows - 1;
    const int pos_min = p.pos0 + R0 / G, pos_max = p.pos0 + last / G; // the block's positions
    wg_rows w;
    w.ke = pos_max + 1;
    w.full_lo = attn_lo(pos_max, p.window);
    w.full_end = pos_min + 1;
    w.tq = lane & 3;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = R0 + wg * 64 + warp * 16 + (lane >> 2) + 8 * hf;
        w.pos[hf] = p.pos0 + (r < nrows ? r : nrows - 1) / G;
        w.lo[hf] = attn_lo(w.pos[hf], p.window);
        w.m[hf] = -INFINITY;
        w.l[hf] = 0.0f;
    }
    *kb = attn_lo(pos_min, p.window);
    *ntiles = (w.ke - *kb + WG_BN - 1) / WG_BN;
    return w;
}

// Epilogue of kv head kvh's block at packed row R0: full row sums, then out (normalised, sink
// added) and lse2 (null: not written) of this thread's two rows; padding rows are not written.
__device__ __forceinline__ void wg_store_rows(const attn_params &p, const float (&o)[64],
                                              const wg_rows &w, int R0, int wg, int warp,
                                              int lane, int kvh, float *lse2) {
    const int tq = lane & 3, G = p.G, nrows = p.T * G;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = R0 + wg * 64 + warp * 16 + (lane >> 2) + 8 * hf;
        const float l = quad_sum(w.l[hf]);
        if (r >= nrows) continue;
        const int t = r / G, h = kvh * G + r % G;
        const size_t orow = (size_t)t * p.Hq + h;
        const int has_sink = p.sinks != nullptr;
        const float sink2 = has_sink ? p.sinks[h] * AE_ATTN_LOG2E : 0.0f;
        const float f = attn_out_scale(w.m[hf], l, has_sink, sink2);
        bf16 *dst = p.out + orow * WG_DV + 2 * tq;
#pragma unroll
        for (int n = 0; n < 16; n++)
            *reinterpret_cast<uint32_t *>(dst + n * 8) =
                pack_bf16(o[4 * n + 2 * hf] * f, o[4 * n + 2 * hf + 1] * f);
        if (lse2 && tq == 0) lse2[orow] = attn_lse2(w.m[hf], l, has_sink, sink2); // own key seen
    }
}
#endif // AE_WGMMA_DEVICE

#endif
