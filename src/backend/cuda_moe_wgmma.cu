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
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"
#include "backend/cuda_moe.h"
#include "backend/cuda_wgmma.h"

#ifndef MOE_WGMMA_DEFAULT_ON
// AE_MOE_WGMMA unset: on (compute capability 9.0 with the sm_90a body). test_cuda_moe_ffn and
// test_cuda_moe_train (AE_MOE_WGMMA=1) passed on an H200 (2026-11-30 01:5x UTC); bench_moe --ffn
// measured 1.85-2.10x the mma.sync kernel (253-328 TFLOP/s), the Qwen3-30B-A3B prefill at 4K
// 33.5K -> 51.8K tok/s.
#define MOE_WGMMA_DEFAULT_ON 1
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
    const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;
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

    const int warp = (tid >> 5) & 3, lane = tid & 31, c = 2 * (lane & 3);
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = wg * 64 + warp * 16 + (lane >> 2) + 8 * hf;
        if (r >= rows) continue;
        const size_t orow = (size_t)slot[r] * p.N;
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
#else
    (void)p;
#endif
}

} // namespace

int moe_wgmma_pick(const ae_backend *be, int many_rows, int shapes_ok) {
    const char *env = getenv("AE_MOE_WGMMA");
    const int forced = env && strcmp(env, "1") == 0;
    if (env && strcmp(env, "0") == 0) return 0;
    if (!forced && !(MOE_WGMMA_DEFAULT_ON && many_rows)) return 0;
    if (cu(be)->cc_major != 9 || cu(be)->cc_minor != 0 || !shapes_ok) return 0;
    // On this GPU, forced: never a silent fallback (a test or bench asking for the wgmma kernel
    // must not measure k_expert_gemm instead).
    const char *why = nullptr;
    if (!wg_kernel_loaded((const void *)k_expert_gemm_wgmma<true, bf16>)) // 184 registers
        why = "moe (AE_MOE_WGMMA=1 asks for the wgmma expert GEMM, whose sm_90a code this build "
              "lacks: CMAKE_CUDA_ARCHITECTURES must include 90a)";
    else if (kSmem > cu(be)->smem_optin)
        why = "moe (AE_MOE_WGMMA=1: the wgmma expert GEMM needs more shared memory per block than "
              "this GPU allows)";
    if (why && forced) cuda_check(be, cudaErrorInvalidDeviceFunction, why);
    return why ? 0 : 1;
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
    dim3 grid((unsigned)blocks);
    AE_CUDA_FLOAT_DISPATCH(ydt, TY, {
        const void *kern = dual ? (const void *)k_expert_gemm_wgmma<true, TY>
                                : (const void *)k_expert_gemm_wgmma<false, TY>;
        if (!attn_set_smem(be, kern, kSmem)) {
            cuda_check(be, cudaErrorInvalidValue, name);
            return;
        }
        if (dual) k_expert_gemm_wgmma<true, TY><<<grid, kThreads, kSmem, stream_of(be)>>>(g);
        else k_expert_gemm_wgmma<false, TY><<<grid, kThreads, kSmem, stream_of(be)>>>(g);
    });
    cuda_check(be, cudaGetLastError(), name);
}
