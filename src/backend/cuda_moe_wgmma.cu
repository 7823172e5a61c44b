// The grouped expert GEMM on Hopper wgmma (k_expert_gemm_wgmma): moe_ffn's gate/up and down
// products and expert_matmul's forward when every expert gets many slot rows (prefill,
// training). The same contract as k_expert_gemm (cuda_moe.cu; ExpertGemm in cuda_moe.h), not
// KMAJ, and the same results up to the fp32 summation order. Compiled for sm_90a only
// (wgmma.mma_async); elsewhere the body is empty and moe_wgmma_pick keeps the caller on
// k_expert_gemm (wg_kernel_loaded).
//
// Block: 2 warpgroups (256 threads) on one row tile of BM = 128 slot rows of ONE expert (tiles
// from the plan's tile_off in tiles of kMoeWgmmaBM; warpgroup w owns tile rows 64w .. 64w + 63)
// and two 128-column accumulators per thread (64 + 64 fp32 registers):
//   DUAL (gate/up): acc0 = A · gate[e]ᵀ and acc1 = A · up[e]ᵀ over the same 128 columns n0 ..
//     n0 + 127; the epilogue writes silu(acc0) · acc1 (moe_ffn: h, bf16), or acc0 and acc1
//     (expert_matmul with two weights).
//   single weight (down, expert_matmul): acc0, acc1 = columns n0 .. n0 + 127, n0 + 128 .. n0 +
//     255 of A · w[e]ᵀ (a 256-column tile).
// Grid: one dimension, block b = row tile b / ncol, column tile b mod ncol (the blocks running
// at once share their row tiles' gathered A rows and their experts' weights in L2). A warpgroup
// whose rows are all past the expert's slots issues no wgmma (the other one then has the tensor
// cores to itself).
// Depth in steps of BK = 64 values (one 128-byte swizzle row); per step and warpgroup 4 k16-steps
// of wgmma m64n128k16 per accumulator, A (the warpgroup's 64 rows) and B (128 weight rows) both
// K-major from shared memory: x·Wᵀ with x rows and W rows along the depth.
//
// Loads: all 256 threads, cp.async 16-byte chunks, ST = 4 stages of (A: 128 rows, B: 256 weight
// rows) x 64 values = 48 KB. A row m of the tile is gathered: slot s = order[pos0 + m] (or the
// position itself when order is null), A row s / a_div. Rows past the expert's slots, weight rows
// past N and depth past Kd are zero-filled (cp.async with source size 0): they only feed output
// rows / columns that are never written, or add zeros.
// Pipeline (one __syncthreads per step): step kt waits for its tile (cp.async), issues its wgmma
// group and then waits until only that group is pending (wgmma.wait_group 1), so the tensor
// cores run step kt's group while step kt + 1's barrier and issue happen; the tile loaded at
// step kt is kt + 2, into the stage of tile kt − 2, whose group every warpgroup has finished
// (its wait in step kt − 1, then the barrier). Tiles kt − 1 .. kt + 2: the 4 stages.
//
// Shared memory layout (the wgmma "128-byte swizzle" canonical layout, as kernel F's:
// cuda_attention_wgmma.cu): a stage is A (128 rows x 128 bytes) then B (256 rows x 128 bytes);
// row r's 16-byte chunk c sits at r·128 + ((c XOR (r mod 8)) · 16); eight rows form a 1024-byte
// atom (the base aligned to 1024). Descriptors: k16-step kk starts at row 0 + 32·kk bytes, SBO =
// 1024 (next 8 rows), LBO unused (16); warpgroup w's A starts at row 64w, accumulator j's B at
// row 128j.
//
// Epilogue: accumulator element d[4n + q] of thread (warp v of the warpgroup, lane l) is tile row
// 64w + 16v + l/4 + 8·(q >> 1), column 8n + 2·(l mod 4) + (q & 1) (cuda_wgmma.h); rows past the
// expert's slots and columns past N are not written. Deterministic: no atomics.
//
// k_expert_gemm_ws: the same tiles, products and epilogue, warp-specialised (as CUTLASS's sm90
// "warp-specialized cooperative" GEMMs and FlashAttention-3), the default (MOE_WGMMA_WS_DEFAULT;
// AE_MOE_WGMMA=sync|ws or AE_MOE_WGMMA_KERNEL=sync|ws choose). 384 threads, one block per SM,
// persistent: block i takes tiles i, i + grid, ... of the order above, so the loads of its next
// tile run during its epilogue.
//   warpgroup 0, producer (setmaxnreg.dec to 40 registers): per k-step it waits for the stage's
//     "empty" mbarrier; thread 0 arms the stage's "full" mbarrier with the weight bytes and loads
//     the weight rows by TMA (a tensor map of w as [E·N rows, Kd], 128-byte swizzle: the layout
//     above; rows past N read the next expert's rows, which only feed columns never written;
//     past E·N and past Kd TMA gives zeros); all 128 threads gather the A rows by cp.async
//     (zero-filled as above) and arrive on "full" when theirs land (cp.async.mbarrier.arrive
//     .noinc): "full" completes after 128 + 1 arrivals and the TMA bytes.
//   warpgroups 1, 2, consumers (setmaxnreg.inc to 232; tile rows 0 .. 63, 64 .. 127): per k-step
//     wait "full", fence.proxy.async (the cp.async rows were written by the generic proxy),
//     issue the step's 8 wgmma, wgmma.wait_group 1, then one "empty" arrival per warp for the
//     previous step's stage (its group is done); 8 arrivals complete "empty". No block-wide
//     barrier in the loop; 4 stages: the producer runs up to 3 steps ahead.
//   Epilogue: bf16 outputs (moe_ffn's h and o) go through 16 KB of shared memory per consumer
//     warpgroup and leave as whole rows, a tile's last block while the next tile's first wgmma
//     group runs (epi_block, ExpertGemm::staged; AE_MOE_WS_EPI); fp32 outputs by fragment stores.
// Results: the same k16 products in the same order into the same accumulators as
// k_expert_gemm_wgmma, hence the same bits in every written element.
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "backend/cuda_attention.h"
#include "backend/cuda_moe.h"
#include "backend/cuda_tma.h"
#include "backend/cuda_wgmma.h"

#ifndef MOE_WGMMA_DEFAULT_ON
// AE_MOE_WGMMA unset: on (compute capability 9.0 with the sm_90a body). test_cuda_moe_ffn and
// test_cuda_moe_train (AE_MOE_WGMMA=1) passed on an H200 (2026-11-30 01:5x UTC); bench_moe --ffn
// measured 1.85-2.10x the mma.sync kernel (253-328 TFLOP/s), the Qwen3-30B-A3B prefill at 4K
// 33.5K -> 51.8K tok/s.
#define MOE_WGMMA_DEFAULT_ON 1
#endif
#ifndef MOE_WGMMA_WS_DEFAULT
// Which wgmma kernel runs when neither AE_MOE_WGMMA=sync|ws nor AE_MOE_WGMMA_KERNEL names one:
// 1 the warp-specialised k_expert_gemm_ws (where it can run: else k_expert_gemm_wgmma), 0
// k_expert_gemm_wgmma.
#define MOE_WGMMA_WS_DEFAULT 1
#endif

namespace {

constexpr int kBM = kMoeWgmmaBM;           // slot rows per block (2 warpgroups x 64)
constexpr int kBN = 128;                   // columns per accumulator
constexpr int kStages = 4;
constexpr int kThreads = 256;
constexpr int kABytes = kBM * 128;         // 16 KB
constexpr int kBBytes = 2 * kBN * 128;     // 32 KB: two accumulators' weight rows
constexpr int kStageBytes = kABytes + kBBytes;
constexpr size_t kSmem = (size_t)kStages * kStageBytes + 1024; // + 1 KB to align to the atom

// Columns of one block: one tile of kBN for both accumulators (DUAL), else two.
template <bool DUAL> constexpr int kCols = DUAL ? kBN : 2 * kBN;

#ifdef AE_WGMMA_DEVICE
// Epilogue of both kernels: this thread's half-row hf (accumulator elements 4n + 2hf, + 1) of a
// warpgroup's 64 x 128 accumulators, to output row `slot` from column n0 (lane: its columns).
template <bool DUAL, typename TY>
__device__ __forceinline__ void store_acc_row(const ExpertGemm &p, const float (&acc0)[64],
                                              const float (&acc1)[64], int hf, int slot, int n0,
                                              int lane) {
    const int c = 2 * (lane & 3);
    const size_t orow = (size_t)slot * p.N;
    TY *y0 = (TY *)p.y0 + orow;
#pragma unroll
    for (int n = 0; n < kBN / 8; n++) {
        const int col = n0 + 8 * n + c, q = 4 * n + 2 * hf;
        if constexpr (DUAL) {
            if (col >= p.N) continue;
            if (p.silu) {
                store_cols(y0, col, p.N, silu_mul(acc0[q], acc1[q]),
                           silu_mul(acc0[q + 1], acc1[q + 1]), p.pair, p.accumulate);
            } else {
                store_cols(y0, col, p.N, acc0[q], acc0[q + 1], p.pair, p.accumulate);
                store_cols((TY *)p.y1 + orow, col, p.N, acc1[q], acc1[q + 1], p.pair, 0);
            }
        } else {
            if (col < p.N) store_cols(y0, col, p.N, acc0[q], acc0[q + 1], p.pair, p.accumulate);
            if (col + kBN < p.N)
                store_cols(y0, col + kBN, p.N, acc1[q], acc1[q + 1], p.pair, p.accumulate);
        }
    }
}
#endif

// y0 (and y1): (slot rows, N) of TY. Dynamic shared memory kSmem; grid (row tiles x column tiles
// of kCols), the column tile fastest: the blocks running together cover few row tiles (their
// gathered A rows are read from L2 by every column tile) of few experts.
template <bool DUAL, typename TY>
__global__ void __launch_bounds__(kThreads, 1) k_expert_gemm_wgmma(const ExpertGemm p) {
#ifdef AE_WGMMA_DEVICE
    constexpr int kBK = 64;                // depth per stage: one 128-byte swizzle row
    constexpr int kRowStep = kThreads / 8; // rows per load pass: 8 chunks of 16 bytes per row
    constexpr int kALoads = kBM / kRowStep, kBLoads = 2 * kBN / kRowStep;
    extern __shared__ unsigned char smem_raw[];
    __shared__ int slot[kBM];
    const uint32_t base = smem_base_1k(smem_raw);
    unsigned char *const sbase = smem_raw + (base - smem_u32(smem_raw));

    const int ncol = (p.N + kCols<DUAL> - 1) / kCols<DUAL>;
    int e, pos0, rows;
    if (!expert_tile(p, blockIdx.x / ncol, kBM, &e, &pos0, &rows)) return;
    const int n0 = (blockIdx.x % ncol) * kCols<DUAL>, tid = threadIdx.x;
    if (tid < kBM) slot[tid] = tid >= rows ? -1 : p.order ? p.order[pos0 + tid] : pos0 + tid;
    __syncthreads();

    // This thread's chunks: chunk ch of tile rows lr + kRowStep·i (A rows, and B rows: weight
    // rows of accumulator i / (kBLoads / 2)); those rows share r mod 8, so their swizzled
    // offsets are loff + i·kRowStep·128.
    const int lr = tid >> 3, ch = tid & 7;
    const uint32_t loff = wg_swz_off(lr, ch, kBM);
    const bf16 *asrc[kALoads];
#pragma unroll
    for (int i = 0; i < kALoads; i++) {
        const int r = lr + kRowStep * i;
        asrc[i] = r < rows ? p.a0 + (int64_t)(slot[r] / p.a_div) * p.lda + ch * 8 : nullptr;
    }
    const bf16 *bsrc[kBLoads];
#pragma unroll
    for (int i = 0; i < kBLoads; i++) {
        const int r = lr + kRowStep * i, j = r / kBN; // accumulator j
        const int n = DUAL ? n0 + r % kBN : n0 + r;
        const bf16 *w = DUAL && j ? p.w1 : p.w0;
        bsrc[i] = n < p.N ? w + ((size_t)e * p.N + n) * p.Kd + ch * 8 : nullptr;
    }
    auto load_stage = [&](int kt, int st) {
        unsigned char *sa = sbase + st * kStageBytes + loff, *sb = sa + kABytes;
        const int k = kt * kBK;
        const bool kin = k + ch * 8 < p.Kd; // Kd % 8 == 0: whole chunks
#pragma unroll
        for (int i = 0; i < kALoads; i++) {
            const bool ok = kin && asrc[i];
            cp_async16(sa + i * kRowStep * 128, ok ? asrc[i] + k : p.a0, ok);
        }
#pragma unroll
        for (int i = 0; i < kBLoads; i++) {
            const bool ok = kin && bsrc[i];
            cp_async16(sb + i * kRowStep * 128, ok ? bsrc[i] + k : p.w0, ok);
        }
    };

    const int nk = (p.Kd + kBK - 1) / kBK;
#pragma unroll
    for (int t = 0; t < kStages - 2; t++) {
        if (t < nk) load_stage(t, t);
        cp_async_commit();
    }
    float acc0[64], acc1[64];
#pragma unroll
    for (int i = 0; i < 64; i++) acc0[i] = acc1[i] = 0.0f;
    // A warpgroup whose 64 rows are all past the expert's slots skips its tensor work.
    const int wg = tid >> 7;
    const bool busy = wg * 64 < rows;
    for (int kt = 0; kt < nk; kt++) {
        cp_async_wait<kStages - 3>(); // tile kt landed (this thread's part; groups: one per tile)
        fence_proxy_async();
        __syncthreads(); // everyone's part; the group of tile kt − 2 is done in both warpgroups
        if (kt + kStages - 2 < nk) load_stage(kt + kStages - 2, (kt + kStages - 2) % kStages);
        cp_async_commit();
        if (!busy) continue;
        const uint32_t sa = base + (kt % kStages) * kStageBytes + wg * 64 * 128;
        const uint32_t sb = base + (kt % kStages) * kStageBytes + kABytes;
        wg_reg_fence(acc0);
        wg_reg_fence(acc1);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < kBK / 16; kk++) {
            const uint64_t da = wg_desc(sa + kk * 32, 16, 1024);
            wg_mma_ss(acc0, da, wg_desc(sb + kk * 32, 16, 1024), 1);
            wg_mma_ss(acc1, da, wg_desc(sb + kBN * 128 + kk * 32, 16, 1024), 1);
        }
        wg_commit();
        wg_wait<1>();
    }
    wg_wait<0>();
    wg_reg_fence(acc0);
    wg_reg_fence(acc1);
    cp_async_wait<0>(); // the empty groups past the last tile

    const int warp = (tid >> 5) & 3, lane = tid & 31;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = wg * 64 + warp * 16 + (lane >> 2) + 8 * hf;
        if (r < rows) store_acc_row<DUAL, TY>(p, acc0, acc1, hf, slot[r], n0, lane);
    }
#else
    (void)p;
#endif
}

// ---- the warp-specialised kernel (k_expert_gemm_ws) -----------------------------------------

constexpr int kWsThreads = 384;            // producer warpgroup + 2 consumer warpgroups
constexpr int kWsStages = 4;
constexpr int kWsProdRegs = 40, kWsConsRegs = 232; // 128·40 + 256·232 <= 64K registers
constexpr int kEpiBytes = 64 * kBN * 2;            // a consumer's staged 64 x 128 bf16 outputs
constexpr size_t kWsSmem = (size_t)kWsStages * kStageBytes + 2 * kEpiBytes + 1024;
static_assert(128 * kWsProdRegs + 256 * kWsConsRegs <= 65536, "register file");

#ifdef AE_WGMMA_DEVICE
constexpr int kWsConsumerWarps = 8; // "empty" arrivals per phase: one per consumer warp

// Output slot of tile row r (r < the tile's rows): A row slot / a_div, output row slot.
__device__ __forceinline__ int tile_slot(const ExpertGemm &p, int pos0, int r) {
    return p.order ? p.order[pos0 + r] : pos0 + r;
}

// Producer warpgroup (threads 0 .. 127). Per k-step of every tile this block owns: waits until
// the stage is empty, thread 0 arms "full" with the weight bytes and issues the weight boxes by
// TMA, and every thread gathers its 2 A rows' 4 chunks each by cp.async (the A rows are token
// rows in slot order: no tensor map can express them), then arrives on "full" when its copies
// land (noinc). Lane pairs share a row: a warp's cp.async covers 16 rows x 32 contiguous bytes,
// whole 32-byte sectors.
template <bool DUAL>
__device__ __forceinline__ void ws_producer(const ExpertGemm &p, const CUtensorMap *tb0,
                                            const CUtensorMap *tb1, unsigned char *sbase,
                                            uint32_t base, uint32_t full, uint32_t empty,
                                            int ncol, int ntiles) {
    const int t = threadIdx.x;
    const int r0 = (t >> 5) * 32 + ((t & 31) >> 1), c0 = t & 1; // rows r0, r0 + 16; chunks c0 + 2j
    const int nk = (p.Kd + 63) / 64;
    if (t == 0) {
        tma_prefetch_map(tb0);
        if (DUAL) tma_prefetch_map(tb1);
    }
    uint32_t it = 0; // k-steps so far over this block's tiles: stage it % S, use it / S
    for (int b = blockIdx.x; b < ntiles; b += gridDim.x) {
        int e, pos0, rows;
        expert_tile(p, b / ncol, kBM, &e, &pos0, &rows);
        const int wrow = e * p.N + (b % ncol) * kCols<DUAL>; // first weight row (E·N rows)
        const bf16 *arow[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = r0 + 16 * h;
            arow[h] = r < rows ? p.a0 + (int64_t)(tile_slot(p, pos0, r) / p.a_div) * p.lda : nullptr;
        }
#pragma unroll 1
        for (int kt = 0; kt < nk; kt++, it++) {
            const int s = it % kWsStages;
            const uint32_t fb = full + 8 * s;
            mbar_wait(empty + 8 * s, ((it / kWsStages) & 1) ^ 1);
            const uint32_t sb = base + s * kStageBytes + kABytes;
            if (t == 0) {
                mbar_arrive_expect_tx(fb, kBBytes);
                tma_load_2d(sb, tb0, kt * 64, wrow, fb);
                if (DUAL) tma_load_2d(sb + kBN * 128, tb1, kt * 64, wrow, fb);
            }
            unsigned char *sa = sbase + s * kStageBytes;
            const int k = kt * 64;
#pragma unroll
            for (int h = 0; h < 2; h++) {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int ch = c0 + 2 * j;
                    const bool ok = arow[h] && k + ch * 8 < p.Kd; // Kd % 8 == 0: whole chunks
                    cp_async16(sa + wg_swz_off(r0 + 16 * h, ch, kBM), ok ? arow[h] + k + ch * 8 : p.a0,
                               ok);
                }
            }
            cp_async_mbar_arrive_noinc(fb);
        }
    }
    // Stay until the consumers released every stage (this thread's copies and thread 0's TMA
    // boxes all consumed) before leaving.
    for (int i = 0; i < kWsStages; i++, it++)
        mbar_wait(empty + 8 * (it % kWsStages), ((it / kWsStages) & 1) ^ 1);
}

// The staged epilogue (ExpertGemm::staged: bf16 outputs written, not added to, N % 8 == 0, 16-byte
// aligned rows). A consumer warpgroup puts one 64 x 128 block of its outputs into its own area of
// shared memory (`st`, kEpiBytes: row r's 16-byte chunk c at chunk c XOR (r mod 8), so the
// fragments' 4-byte writes and the rows' 16-byte reads are both free of bank conflicts), then
// writes whole rows: a warp instruction stores 2 rows x 256 bytes (4 full 128-byte lines) where
// the fragment stores covered 8 rows x 16 bytes (8 half sectors). Same values, same rounding
// (__floats2bfloat162_rn, as st2): the same bits. val(q): accumulator element q's output.
template <class F>
__device__ __forceinline__ void epi_stage(unsigned char *st, int warp, int lane, F val) {
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = warp * 16 + (lane >> 2) + 8 * hf; // (lane >> 2) == r mod 8
#pragma unroll
        for (int n = 0; n < kBN / 8; n++) {
            const int q = 4 * n + 2 * hf;
            *reinterpret_cast<__nv_bfloat162 *>(st + r * 256 + ((n ^ (lane >> 2)) << 4) +
                                                4 * (lane & 3)) =
                __floats2bfloat162_rn(val(q), val(q + 1));
        }
    }
}
// The slots of this thread's rows in epi_flush (thread t of its warpgroup: tile rows 64wg + t / 16
// + 8i), −1 past the tile's rows; loaded while the tile's first wgmma group runs.
__device__ __forceinline__ void epi_slots(const ExpertGemm &p, int pos0, int rows, int wg, int t,
                                          int (&srow)[8]) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int tr = wg * 64 + (t >> 4) + 8 * i;
        srow[i] = tr < rows ? tile_slot(p, pos0, tr) : -1;
    }
}
// The staged block to y's rows srow, columns col0 .. + 127 below N: chunk t mod 16 of the rows.
__device__ __forceinline__ void epi_flush(const ExpertGemm &p, const unsigned char *st, bf16 *y,
                                          int col0, const int (&srow)[8], int t) {
    const int ch = t & 15, col = col0 + 8 * ch;
    if (col >= p.N) return; // N % 8 == 0: a chunk is all in or all out
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int r = (t >> 4) + 8 * i;
        if (srow[i] >= 0)
            *reinterpret_cast<uint4 *>(y + (size_t)srow[i] * p.N + col) =
                *reinterpret_cast<const uint4 *>(st + r * 256 + ((ch ^ (r & 7)) << 4));
    }
}
// One staged block: wait until the warpgroup's last flush has read the area, stage, wait until
// every fragment is in; then write the rows, or (defer) leave that to the caller. Named barrier
// 1 + the warpgroup's index in the block (2, 3 for the consumers).
template <class F>
__device__ __forceinline__ void epi_block(const ExpertGemm &p, unsigned char *st, bf16 *y, int col0,
                                          const int (&srow)[8], bool defer, F val) {
    const int t = threadIdx.x & 127;
    nbar_sync(1 + (threadIdx.x >> 7), 128);
    epi_stage(st, t >> 5, t & 31, val);
    nbar_sync(1 + (threadIdx.x >> 7), 128);
    if (!defer) epi_flush(p, st, y, col0, srow, t);
}

// A staged block whose rows are still to be written (ExpertGemm::staged 2: during the next busy
// tile's first wgmma group, or after the last tile).
struct EpiPend {
    bf16 *y; // null: none
    int col0;
};

// Consumer warpgroup wg (0, 1: tile rows 64wg .. 64wg + 63) of the same tiles: per k-step waits
// for "full", issues the step's 8 wgmma (as k_expert_gemm_wgmma: 4 k16-steps x 2 accumulators,
// the same order), lets one group stay pending, and releases the stage of the previous step
// (its group is done) with one "empty" arrival per warp. A warpgroup with no rows in the tile
// waits and releases without tensor work (the "empty" count expects every consumer warp).
template <bool DUAL, typename TY>
__device__ __forceinline__ void ws_consumer(const ExpertGemm &p, uint32_t base, uint32_t full,
                                            uint32_t empty, int ncol, int ntiles,
                                            unsigned char *sepi) {
    // wg through a shuffle: warp-uniform for ptxas (the busy branch around the wgmma).
    const int wg = __shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0) - 1;
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    const int nk = (p.Kd + 63) / 64;
    const int t = threadIdx.x & 127;
    constexpr bool kStaged = std::is_same<TY, bf16>::value;
    unsigned char *const st = sepi + wg * kEpiBytes; // this warpgroup's staging area
    float acc0[64], acc1[64];
    int srow[8];                 // epi_slots of the tile (staged epilogue)
    EpiPend pend = {nullptr, 0}; // staged 2: the last block of the previous busy tile
    uint32_t it = 0;
    for (int b = blockIdx.x; b < ntiles; b += gridDim.x) {
        int e, pos0, rows;
        expert_tile(p, b / ncol, kBM, &e, &pos0, &rows);
        const int n0 = (b % ncol) * kCols<DUAL>;
        const bool busy = wg * 64 < rows;
        bool slots_in = false;
#pragma unroll
        for (int i = 0; i < 64; i++) acc0[i] = acc1[i] = 0.0f;
#pragma unroll 1
        for (int kt = 0; kt < nk; kt++, it++) {
            const int s = it % kWsStages;
            mbar_wait(full + 8 * s, (it / kWsStages) & 1);
            if (!busy) {
                mbar_arrive_if(empty + 8 * s, lane == 0);
                continue;
            }
            fence_proxy_async(); // the cp.async (generic proxy) rows, before wgmma reads them
            const uint32_t sa = base + s * kStageBytes + wg * 64 * 128;
            const uint32_t sb = base + s * kStageBytes + kABytes;
            wg_reg_fence(acc0);
            wg_reg_fence(acc1);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const uint64_t da = wg_desc(sa + kk * 32, 16, 1024);
                wg_mma_ss(acc0, da, wg_desc(sb + kk * 32, 16, 1024), 1);
                wg_mma_ss(acc1, da, wg_desc(sb + kBN * 128 + kk * 32, 16, 1024), 1);
            }
            wg_commit();
            if (kStaged && p.staged && kt == 0) { // under the tile's first group
                if (pend.y) epi_flush(p, st, pend.y, pend.col0, srow, t);
                pend.y = nullptr;
                epi_slots(p, pos0, rows, wg, t, srow);
                slots_in = true;
            }
            wg_wait<1>(); // step kt − 1's group is done: its stage may be refilled
            mbar_arrive_if(empty + 8 * ((it - 1) % kWsStages), kt > 0 && lane == 0);
        }
        // Both paths wait (none pending when idle): ptxas then sees every accumulator write of
        // this tile done before the next tile zeroes them (else it injects a wait, C7517).
        wg_wait<0>();
        wg_reg_fence(acc0);
        wg_reg_fence(acc1);
        if (!busy) continue;
        mbar_arrive_if(empty + 8 * ((it - 1) % kWsStages), nk > 0 && lane == 0);
        if constexpr (kStaged) {
            if (p.staged) {
                if (!slots_in) epi_slots(p, pos0, rows, wg, t, srow); // no k-steps
                const bool defer = p.staged == 2;
                bf16 *y0 = (bf16 *)p.y0, *ylast = y0;
                int clast = n0;
                if constexpr (DUAL) {
                    if (p.silu) {
                        epi_block(p, st, y0, n0, srow, defer,
                                  [&](int q) { return silu_mul(acc0[q], acc1[q]); });
                    } else {
                        epi_block(p, st, y0, n0, srow, false, [&](int q) { return acc0[q]; });
                        epi_block(p, st, ylast = (bf16 *)p.y1, n0, srow, defer,
                                  [&](int q) { return acc1[q]; });
                    }
                } else {
                    epi_block(p, st, y0, n0, srow, false, [&](int q) { return acc0[q]; });
                    epi_block(p, st, y0, clast = n0 + kBN, srow, defer,
                              [&](int q) { return acc1[q]; });
                }
                if (defer) pend = {ylast, clast};
                continue;
            }
        }
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int r = wg * 64 + warp * 16 + (lane >> 2) + 8 * hf;
            if (r < rows) store_acc_row<DUAL, TY>(p, acc0, acc1, hf, tile_slot(p, pos0, r), n0, lane);
        }
    }
    if (pend.y) epi_flush(p, st, pend.y, pend.col0, srow, t); // the last busy tile's
}
#endif

// y0 (and y1): (slot rows, N) of TY. tb0 (tb1: DUAL's second weight): tensor maps of w0 (w1) as
// [E·N rows, Kd] bf16, boxes of 64 values x (DUAL ? 128 : 256) rows, 128-byte swizzle. Grid:
// at most one block per SM (persistent), block i taking tiles i, i + grid, ... of the row tile x
// column tile order of k_expert_gemm_wgmma (tile b: row tile b / ncol, column tile b mod ncol).
template <bool DUAL, typename TY>
__global__ void __launch_bounds__(kWsThreads, 1)
    k_expert_gemm_ws(const ExpertGemm p, const __grid_constant__ CUtensorMap tb0,
                     const __grid_constant__ CUtensorMap tb1) {
#ifdef AE_WGMMA_DEVICE
    extern __shared__ unsigned char smem_raw[];
    __shared__ __align__(8) uint64_t bars[2 * kWsStages]; // full[S], then empty[S]
    const uint32_t base = smem_base_1k(smem_raw);
    unsigned char *const sbase = smem_raw + (base - smem_u32(smem_raw));
    const uint32_t full = smem_u32(bars), empty = full + 8 * kWsStages;
    if (threadIdx.x == 0) {
        for (int s = 0; s < kWsStages; s++) {
            mbar_init(full + 8 * s, 128 + 1); // 128 producer threads' cp.async + the TMA arming
            mbar_init(empty + 8 * s, kWsConsumerWarps);
        }
        fence_mbar_init();
    }
    __syncthreads();
    const int ncol = (p.N + kCols<DUAL> - 1) / kCols<DUAL>;
    const int ntiles = p.tile_off[p.E] * ncol;
    // The warpgroup index through a shuffle: ptxas then knows the branch is warp-uniform (else
    // it serialises the consumers' wgmma, C7518).
    if (__shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0) == 0) {
        wg_setmaxnreg_dec<kWsProdRegs>();
        ws_producer<DUAL>(p, &tb0, &tb1, sbase, base, full, empty, ncol, ntiles);
    } else {
        wg_setmaxnreg_inc<kWsConsRegs>();
        ws_consumer<DUAL, TY>(p, base, full, empty, ncol, ntiles,
                              sbase + (size_t)kWsStages * kStageBytes);
    }
#else
    (void)p;
    (void)tb0;
    (void)tb1;
#endif
}

} // namespace

// ---- host side -----------------------------------------------------------------------------

// Tensor map of expert weights w (E, N, Kd) bf16 as one [E·N rows, Kd] matrix, boxes of 64 values
// (one 128-byte swizzle row) x box_rows rows. Rows past an expert's N in a box are the next
// expert's (they feed output columns >= N, never written), rows past E·N and depth past Kd are
// zeros (TMA fills what lies outside the tensor). 0 when the driver refuses it.
static int weight_map(CUtensorMap *m, const bf16 *w, int E, int N, int Kd, int box_rows) {
    const uint64_t dims[2] = {(uint64_t)Kd, (uint64_t)E * (uint64_t)N};
    const uint64_t strides[1] = {(uint64_t)Kd * sizeof(bf16)}; // Kd % 8 == 0: 16-byte multiple
    const uint32_t box[2] = {64, (uint32_t)box_rows};
    return cuda_tmap_bf16(m, w, 2, dims, strides, box);
}

enum { kKernSync = 1, kKernWs = 2 }; // k_expert_gemm_wgmma, k_expert_gemm_ws

// The kernel a "sync" / "ws" value names, 0 for anything else.
static int kernel_named(const char *v) {
    return !v ? 0 : strcmp(v, "sync") == 0 ? kKernSync : strcmp(v, "ws") == 0 ? kKernWs : 0;
}

// Why kernel `k` cannot run on this GPU / build (null: it can).
static const char *kernel_unavailable(const ae_backend *be, int k) {
    if (k == kKernSync) {
        if (!wg_kernel_loaded((const void *)k_expert_gemm_wgmma<true, bf16>)) // 184 registers
            return "moe (AE_MOE_WGMMA asks for the wgmma expert GEMM, whose sm_90a code this build "
                   "lacks: CMAKE_CUDA_ARCHITECTURES must include 90a)";
        if (kSmem > cu(be)->smem_optin)
            return "moe (AE_MOE_WGMMA: the wgmma expert GEMM needs more shared memory per block "
                   "than this GPU allows)";
        return nullptr;
    }
    if (!wg_kernel_loaded((const void *)k_expert_gemm_ws<true, bf16>))
        return "moe (AE_MOE_WGMMA asks for the warp-specialised wgmma expert GEMM (ws), whose "
               "sm_90a code this build lacks: CMAKE_CUDA_ARCHITECTURES must include 90a)";
    if (kWsSmem > cu(be)->smem_optin)
        return "moe (AE_MOE_WGMMA: the warp-specialised wgmma expert GEMM (ws) needs more shared "
               "memory per block than this GPU allows)";
    if (!cuda_tma_available())
        return "moe (AE_MOE_WGMMA: the warp-specialised wgmma expert GEMM (ws) needs the driver's "
               "cuTensorMapEncodeTiled, which this driver does not offer)";
    return nullptr;
}

// The wgmma kernel to run: AE_MOE_WGMMA=sync|ws, else AE_MOE_WGMMA_KERNEL=sync|ws (a second
// variable because bench_moe and the tests set AE_MOE_WGMMA to 0 and 1 themselves), else the
// default (MOE_WGMMA_WS_DEFAULT; ws falls back to sync where it cannot run). *why: why the
// chosen kernel cannot run (null: it can); *named: whether a variable chose it.
static int wgmma_kernel(const ae_backend *be, const char **why, int *named) {
    int k = kernel_named(getenv("AE_MOE_WGMMA"));
    if (!k) k = kernel_named(getenv("AE_MOE_WGMMA_KERNEL"));
    *named = k != 0;
    if (!k) k = MOE_WGMMA_WS_DEFAULT ? kKernWs : kKernSync;
    *why = kernel_unavailable(be, k);
    if (*why && !*named && k == kKernWs) {
        k = kKernSync;
        *why = kernel_unavailable(be, k);
    }
    return k;
}

int moe_wgmma_pick(const ae_backend *be, int many_rows, int shapes_ok) {
    const char *env = getenv("AE_MOE_WGMMA");
    const char *kenv = getenv("AE_MOE_WGMMA_KERNEL");
    if (kenv && *kenv && !kernel_named(kenv)) {
        cuda_check(be, cudaErrorInvalidValue,
                   "moe (AE_MOE_WGMMA_KERNEL must be sync or ws)");
        return 0;
    }
    const int forced = env && (strcmp(env, "1") == 0 || kernel_named(env));
    if (env && strcmp(env, "0") == 0) return 0;
    if (!forced && !(MOE_WGMMA_DEFAULT_ON && many_rows)) return 0;
    if (cu(be)->cc_major != 9 || cu(be)->cc_minor != 0 || !shapes_ok) return 0;
    // On this GPU, forced (or a kernel named): never a silent fallback (a test or bench asking
    // for a wgmma kernel must not measure another one instead).
    const char *why;
    int named;
    wgmma_kernel(be, &why, &named);
    if (why && (forced || named)) cuda_check(be, cudaErrorInvalidDeviceFunction, why);
    return why ? 0 : 1;
}

// The ws kernel's epilogue for bf16 outputs (ExpertGemm::staged), AE_MOE_WS_EPI: 0 the fragment
// stores, 1 staged, written at once, 2 (unset) staged, the last block's rows written under the
// next tile's first wgmma group. Read at every call (A/B runs).
static int ws_staged_mode(void) {
    const char *env = getenv("AE_MOE_WS_EPI");
    if (!env || !*env) return 2;
    return strcmp(env, "0") == 0 ? 0 : strcmp(env, "1") == 0 ? 1 : 2;
}

// Whether the ws kernel's bf16 outputs can take the staged epilogue (epi_block): values written
// (not added to), whole 16-byte chunks (N % 8 == 0) at 16-byte aligned rows.
static int ws_staged_fits(const ExpertGemm &g) {
    auto al16 = [](const void *q) { return !q || (uintptr_t)q % 16 == 0; };
    return !g.accumulate && g.N % 8 == 0 && al16(g.y0) && al16(g.y1);
}

// The warp-specialised kernel's launch: tensor maps of the weights, one block per SM at most.
template <typename TY>
static void launch_ws(const ae_backend *be, ExpertGemm g, size_t blocks, int dual,
                      const char *name) {
    g.staged = std::is_same<TY, bf16>::value && ws_staged_fits(g) ? ws_staged_mode() : 0;
    CUtensorMap tb0, tb1;
    const int box_rows = dual ? kBN : 2 * kBN;
    if (!weight_map(&tb0, g.w0, g.E, g.N, g.Kd, box_rows) ||
        !weight_map(&tb1, dual ? g.w1 : g.w0, g.E, g.N, g.Kd, box_rows)) {
        cuda_check(be, cudaErrorInvalidValue,
                   "moe (cuTensorMapEncodeTiled refused an expert weight's tensor map: weights "
                   "must be 16-byte aligned with Kd a multiple of 8)");
        return;
    }
    const void *kern = dual ? (const void *)k_expert_gemm_ws<true, TY>
                            : (const void *)k_expert_gemm_ws<false, TY>;
    if (!attn_set_smem(be, kern, kWsSmem)) {
        cuda_check(be, cudaErrorInvalidValue, name);
        return;
    }
    const size_t sms = (size_t)(cu(be)->sm_count > 0 ? cu(be)->sm_count : 1);
    dim3 grid((unsigned)(blocks < sms ? blocks : sms));
    if (dual) k_expert_gemm_ws<true, TY><<<grid, kWsThreads, kWsSmem, stream_of(be)>>>(g, tb0, tb1);
    else k_expert_gemm_ws<false, TY><<<grid, kWsThreads, kWsSmem, stream_of(be)>>>(g, tb0, tb1);
}

void moe_wgmma_gemm(const ae_backend *be, const ExpertGemm &g, unsigned row_tiles, int dual,
                    ae_dtype ydt, const char *name) {
    if (g.N == 0 || row_tiles == 0) return;
    const int cols = dual ? kCols<true> : kCols<false>;
    const size_t blocks = (size_t)row_tiles * (size_t)((g.N + cols - 1) / cols);
    if (blocks > INT32_MAX) {
        cuda_check(be, cudaErrorInvalidConfiguration, name);
        return;
    }
    const char *why;
    int named;
    const int kern = wgmma_kernel(be, &why, &named);
    if (why) { // moe_wgmma_pick said yes: only a changed environment gets here
        cuda_check(be, cudaErrorInvalidDeviceFunction, why);
        return;
    }
    AE_CUDA_FLOAT_DISPATCH(ydt, TY, {
        if (kern == kKernWs) {
            launch_ws<TY>(be, g, blocks, dual, name);
        } else {
            const void *k = dual ? (const void *)k_expert_gemm_wgmma<true, TY>
                                 : (const void *)k_expert_gemm_wgmma<false, TY>;
            if (!attn_set_smem(be, k, kSmem)) {
                cuda_check(be, cudaErrorInvalidValue, name);
                return;
            }
            dim3 grid((unsigned)blocks);
            if (dual) k_expert_gemm_wgmma<true, TY><<<grid, kThreads, kSmem, stream_of(be)>>>(g);
            else k_expert_gemm_wgmma<false, TY><<<grid, kThreads, kSmem, stream_of(be)>>>(g);
        }
    });
    cuda_check(be, cudaGetLastError(), name);
}
