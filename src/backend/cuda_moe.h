// The grouped expert GEMM's arguments and the pieces its two kernels share: k_expert_gemm
// (mma.sync, cuda_moe.cu: every GPU, every shape) and k_expert_gemm_wgmma (Hopper wgmma,
// cuda_moe_wgmma.cu: the dense case, many slot rows per expert). CUDA C++ only, internal to
// the backend.
#ifndef AE_BACKEND_CUDA_MOE_H
#define AE_BACKEND_CUDA_MOE_H

#include "backend/cuda_internal.h"

// out[r, n] (n < N) = Σ_k A[r, k] · B_e[k, n] over the row tiles of each expert e. Tile row m of
// expert e is the slot s = order[off[e] + m] with A row s / a_div (inference: x rows, a_div = K;
// h rows, a_div = 1) or, when order is null, the position p = off[e] + m itself, A row p
// (training: the rows are already grouped by expert). The output row is s (or p).
//   Weights, row-major per expert: B_e = w[e]ᵀ with w (E, N, Kd) (a Linear weight, rows of N),
//   or B_e = w[e] with w (E, Kd, N) when KMAJ (the input gradient dy · W: W read K-major;
//   k_expert_gemm only).
//   DUAL: two weights on the same A (gate w0, up w1), two accumulators; outputs y0 = silu(acc0)
//   · acc1 when silu, else y0 = acc0 and y1 = acc1. Otherwise one weight, y0 = acc0.
//   KMAJ: nsrc (1 or 2) products summed into one accumulator: a0 · B(w0) + a1 · B(w1).
//   accumulate: y0 += the result (one rounding) instead of y0 = the result.
struct ExpertGemm {
    const int *off, *tile_off, *order; // the plan; order null: identity rows
    int E;
    const bf16 *a0, *a1;  // A rows (see above), Kd values each, lda apart
    int64_t lda;
    int a_div;
    const bf16 *w0, *w1;
    int N, Kd;            // output columns, reduction depth
    int nsrc;             // KMAJ: products summed (1 or 2)
    int vec_a, vec_b;     // 16-byte loads allowed (lengths % 8 == 0, rows 16-byte aligned)
    void *y0, *y1;        // (rows, N) of the kernel's TY
    int pair;             // (col, col + 1) pairs of the outputs aligned for one store
    int silu, accumulate;
    int staged;           // k_expert_gemm_ws's epilogue for bf16 outputs: 0 fragment stores, 1
                          // rows through shared memory, 2 the same, a tile's last block written
                          // under the next tile's mma (launch_ws sets it: cuda_moe_wgmma.cu)
};

// Row tile b of tiles of bm slots (tile_off: expert e's tiles start at tile_off[e]): its expert
// *e, the position *pos0 (in off's numbering) of its first slot and its row count *rows (1 ..
// bm). False when b is past the last tile (the grids are sized for the worst case).
__device__ __forceinline__ bool expert_tile(const ExpertGemm &p, int b, int bm, int *e, int *pos0,
                                            int *rows) {
    if (b >= p.tile_off[p.E]) return false;
    int lo = 0, hi = p.E - 1; // the last expert whose first tile is <= b (it has tiles)
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (p.tile_off[mid] <= b) lo = mid;
        else hi = mid - 1;
    }
    int first = p.off[lo], m0 = (b - p.tile_off[lo]) * bm;
    *e = lo;
    *pos0 = first + m0;
    *rows = min(bm, p.off[lo + 1] - first - m0);
    return true;
}

// silu(g) · u, as cpu silu_mul.
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__device__ __forceinline__ void st2(float *p, float a, float b) {
    *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}
__device__ __forceinline__ void st2(bf16 *p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
}
// Columns col and col + 1 (when < N) of an output row: written, or added to (one rounding).
template <typename TY>
__device__ __forceinline__ void store_cols(TY *row, int col, int N, float v0, float v1, int pair,
                                           int accumulate) {
    int two = col + 1 < N;
    if (accumulate) {
        v0 += ldf(row + col);
        if (two) v1 += ldf(row + col + 1);
    }
    if (pair && two) {
        st2(row + col, v0, v1);
        return;
    }
    stf(row + col, v0);
    if (two) stf(row + col + 1, v1);
}

// ---- the wgmma path (cuda_moe_wgmma.cu) --------------------------------------------------------

// Slot rows per row tile of k_expert_gemm_wgmma: the plan / tile offsets must use this tile.
constexpr int kMoeWgmmaBM = 128;

// Whether the grouped GEMMs of one call take the wgmma kernel (decided before the plan, whose
// row tile depends on it). AE_MOE_WGMMA: "0" never; "1" wherever the shapes allow ("sync" /
// "ws": the same, naming the kernel: k_expert_gemm_wgmma / the warp-specialised
// k_expert_gemm_ws; else AE_MOE_WGMMA_KERNEL=sync|ws names it, unset: ws where it can run);
// unset: the default (MOE_WGMMA_DEFAULT_ON) where `many_rows` (the dense row tile's case).
// Always needs a compute capability 9.0 GPU and shapes_ok (depths and row pitches multiples of 8
// values, 16-byte aligned rows: every load is a 16-byte cp.async or TMA box row). Forced on such a GPU with shapes_ok but a
// build without the sm_90a code (or too little shared memory): an error kept on the backend
// (never a silent fallback), and 0.
int moe_wgmma_pick(const ae_backend *be, int many_rows, int shapes_ok);

// Queues one grouped product on the wgmma kernel: g as for k_expert_gemm (not KMAJ), its plan
// in tiles of kMoeWgmmaBM rows (row_tiles: the grid's worst-case count), outputs of dtype ydt
// (F32 or BF16). dual: w1 is the second weight (silu or two outputs, as g says).
void moe_wgmma_gemm(const ae_backend *be, const ExpertGemm &g, unsigned row_tiles, int dual,
                    ae_dtype ydt, const char *name);

// ---- the decode path (cuda_moe_decode.cu) ---------------------------------------------------

// Slots (T·K) the GEMV path takes at most (its down kernel keeps an fp32 (slots, 8) tile in shared
// memory), and at most by default (AE_MOE_GEMV unset): T <= 32 at Qwen3-30B-A3B's K = 8. The
// GEMVs were faster at every T measured (`bench_moe --decode`, H200, 2026-11-30 10:11 UTC, µs a
// call grouped / GEMV: T 1 53.1 / 28.3, 8 168.6 / 128.0, 16 236.4 / 198.4, 32 312.8 / 265.8).
constexpr int kMoeGemvMaxSlots = 256;
constexpr int kMoeGemvDefaultSlots = kMoeGemvMaxSlots;

// Whether moe_ffn takes the GEMV path: AE_MOE_GEMV "0" never, "1" wherever the shape allows,
// otherwise T·K <= kMoeGemvDefaultSlots; the shape: D, Im multiples of 8, Im > 0, T·K <=
// kMoeGemvMaxSlots, x and the three weights 16-byte aligned.
int moe_gemv_pick(int T, int K, int D, int Im, const void *x, const void *wg, const void *wu,
                  const void *wd);

// moe_ffn on the GEMV path when moe_gemv_pick says so (arguments as ae_cuda_moe_ffn, already
// checked): 1 when it took the call (the work is queued, or an error is kept on the backend), 0
// when the grouped path must run.
int moe_ffn_gemv(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr idx, ae_ptr wts, ae_ptr w_gate,
                 ae_ptr w_up, ae_ptr w_down, int T, int D, int Im, int E, int K);

#endif
