// The decode path of moe_ffn (a handful of tokens: batch-1 decode, the serving engine's small
// decode batches): the expert products as GEMVs whose expert is read on the device, two launches
// in all, no host synchronisation (the decode step is captured in CUDA graphs).
//
// Why: at one token the grouped path (cuda_moe.cu) runs a plan kernel, mma row tiles of 16 slots
// of which 15 are padding, an fp32 o buffer and a combine: four launches whose weight reads are
// far from the copy rate. Here every weight byte is streamed once, as the dense decode GEMV does
// (cuda_gemm.cu, k_gemv): 16-byte loads that skip L1, J = 8 of them in flight per lane, tensor
// cores for the arithmetic.
//
// Groups. A slot is s = t·K + k with expert idx[s]; slots with idx outside [0, E) contribute
// nothing (k_moe_combine's contract). The valid slots of one expert, in slot order, form groups
// of up to kGroup = 8: the group's leader is the slot whose rank among its expert's slots is a
// multiple of 8. A group's products are one GEMV tile with up to 8 activation rows (the mma's A
// rows), so an expert's weights are read once per 8 slots that picked it (once, in decode: top-K
// experts are distinct per token, so at T <= 8 every expert has one group).
//
// 1. k_moe_gemv_gate_up, grid (slots, row blocks of Im): block (s, b) exits unless s leads a
//    group (each warp finds the group with a few ballots over idx); otherwise it computes the
//    gate and up rows of its block for the group's x rows and writes
//    h[slot][i] = bf16(silu(g) · u) with g, u the fp32 sums (silu_mul, as the grouped path's
//    epilogue rounds h). Tiles are pairs (gate rows n0..n0+7, up rows n0..n0+7) of kw warps each,
//    the warps of a tile splitting the depth D and adding their sums in shared memory in warp
//    order, as k_gemv_swiglu does. Block (s, 0) also writes the group table: lead[s] = the
//    member count (0: not a leader), mem[s][j] = the slot of member j.
// 2. k_moe_gemv_down, grid (row tiles of 8 of D): each block takes all groups (round robin over
//    its 8 warps, in leader order), computes the tile's 8 columns of o = h · down[e]ᵀ for every
//    member slot into shared memory (fp32), then y[t][n] = Σ_k wts[t,k] · o[t·K + k][n] over the
//    valid slots, k in order, in fp32 — k_moe_combine's sum — rounded once to y's dtype (F32 or
//    BF16). Every expert's down rows are read once per group, not once per token.
// No atomics: the same bits on every run. Against the grouped path the dot products are summed in
// another fp32 order (~1e-6 relative), so h may differ by a rare bf16 rounding flip.
//
// When it runs (moe_gemv_pick): AE_MOE_GEMV=0 never; =1 whenever the shape allows; unset (or
// another value) when T·K <= kMoeGemvDefaultSlots. The shape must have D and Im multiples of 8
// (Im > 0), 16-byte aligned x and weights (every weight load is one 16-byte load) and
// T·K <= kMoeGemvMaxSlots (the down kernel's o tile lives in shared memory); otherwise the
// grouped path runs. ae_cuda_moe_last (backend/cuda.h) names the path of the last call.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_gemv_core.h"
#include "backend/cuda_moe.h"

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kJ = 8;     // 16-byte weight loads in flight per lane per step (cuda_gemm.cu's j=8)
constexpr int kGroup = 8; // slots per group: the 8 A rows of the GEMV tile

// The group slot s leads, as one warp sees it (every lane gets the same count): 0 when s does not
// lead one (its expert outside [0, E), or its rank among its expert's slots, in slot order, not a
// multiple of kGroup); else the member count (1..kGroup), *e the expert, and *slot_j the slot
// of member j (s itself is member 0; -1 when j >= the count). idx: (S).
__device__ int find_group(const int32_t *__restrict__ idx, int S, int E, int s, int j, int *e,
                          int *slot_j) {
    const unsigned all = 0xffffffffu;
    const int lane = threadIdx.x & 31, ex = __ldg(idx + s);
    *slot_j = -1;
    if (ex < 0 || ex >= E) return 0;
    int before = 0, n = 0;
    for (int c = 0; c < S; c += 32) {
        const int i = c + lane;
        const bool hit = i < S && __ldg(idx + i) == ex;
        const unsigned lo = __ballot_sync(all, hit && i < s), hi = __ballot_sync(all, hit && i >= s);
        before += __popc(lo);
        const int cnt = __popc(hi);
        if (j >= n && j < n + cnt && j < kGroup) { // member j is set bit (j − n) of hi
            unsigned m = hi;
            for (int q = n; q < j; q++) m &= m - 1;
            *slot_j = c + __ffs(m) - 1;
        }
        n += cnt;
    }
    if (before % kGroup) {
        *slot_j = -1;
        return 0;
    }
    *e = ex;
    return min(n, kGroup);
}

// Gate/up GEMV + SwiGLU. Grid (S, row blocks), kThreads threads; kw = 1 << kw_shift warps per
// tile (1, 2 or 4), 8 / kw tiles per block: pairs = 4 / kw gate tiles then as many up tiles, so a
// block covers 8·pairs rows of Im.
//   h: (S, Im) bf16 rows per slot;  x: (T, D);  wg, wu: (E, Im, D);  idx: (S) experts;
//   lead: (S) member counts (0: no leader);  mem: (S, kGroup) member slots (leaders' rows only).
__global__ void __launch_bounds__(kThreads, 4)
k_moe_gemv_gate_up(bf16 *__restrict__ h, int *__restrict__ lead, int *__restrict__ mem,
                   const bf16 *__restrict__ x, const bf16 *__restrict__ wg,
                   const bf16 *__restrict__ wu, const int32_t *__restrict__ idx, int S, int E,
                   int K, int D, int Im, int kw_shift) {
    __shared__ float red[kWarps][2][32];
    __shared__ float gate[kWarps / 2][kGroup][8]; // [pair][member][column in the tile], fp32
    const int s = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    int e = 0, slot = -1;
    const int n = find_group(idx, S, E, s, g, &e, &slot); // the same in every warp
    if (blockIdx.y == 0 && warp == 0) { // the group table for the down kernel
        if (lane == 0) lead[s] = n;
        if (t == 0 && g < n) mem[s * kGroup + g] = slot;
    }
    if (n == 0) return; // the whole block: no barrier below is reached by part of it

    const int kw = 1 << kw_shift, wk = warp & (kw - 1), pairs = (kWarps >> kw_shift) / 2;
    const int tile = warp >> kw_shift; // gate tiles 0..pairs-1, then the up tiles
    const bool up = tile >= pairs, has_x = g < n;
    const int pair = up ? tile - pairs : tile, n0 = ((int)blockIdx.y * pairs + pair) * 8;
    // this lane's weight row, clamped inside the expert (rows >= Im are dropped), and x row
    const bf16 *wp = (up ? wu : wg) + ((size_t)e * Im + min(n0 + g, Im - 1)) * D + 8 * t;
    const bf16 *xp = x + (size_t)((has_x ? slot : s) / K) * D + 8 * t;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    gemv_warp_sums<kJ, false>(acc, wp, xp, has_x, wk, D >> 5, (D + 31) >> 5, kw, D, t);

    if (kw > 1) {
        red[warp][0][lane] = acc[0];
        red[warp][1][lane] = acc[1];
    }
    __syncthreads();
    if (wk == 0) {
        for (int i = 1; i < kw; i++) { // the tile's warps in order
            acc[0] += red[warp + i][0][lane];
            acc[1] += red[warp + i][1][lane];
        }
        if (!up && has_x) gate[pair][g][2 * t] = acc[0], gate[pair][g][2 * t + 1] = acc[1];
    }
    __syncthreads(); // the gate sums are in shared memory
    const int col = n0 + 2 * t;
    if (wk != 0 || !up || !has_x || col >= Im) return;
    // Im % 8 == 0: columns col, col + 1 both exist and the pair is 4-byte aligned
    st2(h + (size_t)slot * Im + col, silu_mul(gate[pair][g][2 * t], acc[0]),
        silu_mul(gate[pair][g][2 * t + 1], acc[1]));
}

// Down GEMV + combine. Grid D / 8 blocks of kThreads: block b owns columns n0 = 8b .. n0 + 7 of
// y for all T tokens. Groups (the leaders in lead, slot order) go round robin to the warps.
//   y: (T, D) TY;  h: (S, Im);  wd: (E, D, Im);  idx, wts: (S);  lead, mem: as written above.
template <typename TY>
__global__ void __launch_bounds__(kThreads, 3)
k_moe_gemv_down(TY *__restrict__ y, const bf16 *__restrict__ h, const bf16 *__restrict__ wd,
                const int32_t *__restrict__ idx, const float *__restrict__ wts,
                const int *__restrict__ lead, const int *__restrict__ mem, int T, int K, int E,
                int D, int Im) {
    __shared__ float o[kMoeGemvMaxSlots][8]; // [slot][column in the tile]: h[slot] · down rows
    const unsigned all = 0xffffffffu;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int S = T * K, n0 = (int)blockIdx.x * 8;
    int ord = 0; // leaders seen so far (every lane alike)
    for (int c = 0; c < S; c += 32) {
        const int cnt = c + lane < S ? lead[c + lane] : 0;
        for (unsigned b = __ballot_sync(all, cnt > 0); b; b &= b - 1, ord++) {
            const int bit = __ffs(b) - 1, n = __shfl_sync(all, cnt, bit), s = c + bit;
            if (ord % kWarps != warp) continue;
            const bool has_h = g < n;
            const int slot = has_h ? mem[s * kGroup + g] : s, e = idx[s];
            const bf16 *wp = wd + ((size_t)e * D + n0 + g) * Im + 8 * t;
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            gemv_warp_sums<kJ, false>(acc, wp, h + (size_t)slot * Im + 8 * t, has_h, 0, Im >> 5,
                                      (Im + 31) >> 5, 1, Im, t);
            if (has_h) o[slot][2 * t] = acc[0], o[slot][2 * t + 1] = acc[1];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < T * 8; i += kThreads) {
        const int tok = i >> 3, col = i & 7;
        float sum = 0.0f; // k_moe_combine's sum: fp32, k in order, invalid slots skipped
        for (int k = 0; k < K; k++) {
            const int s = tok * K + k, ex = idx[s];
            if (ex < 0 || ex >= E) continue;
            sum += wts[s] * o[s][col];
        }
        stf(y + (size_t)tok * D + n0 + col, sum);
    }
}

const char *g_last = "none"; // the path of the last moe_ffn call (ae_cuda_moe_last)

} // namespace

// Warps per gate/up tile (log2, 0..2): AE_MOE_GEMV_KW=1|2|4 (read at every call; bench_moe
// --decode A/Bs it), else 2 warps. Measured on the H200 (bench_moe --decode, 2026-11-30 13:51,
// µs a layer at T = 1 / 4 / 8 / 16 / 32): 1 warp 29.27 / 81.27 / 128.54 / 199.12 / 265.97, 2 warps
// 27.16 / 76.44 / 123.24 / 191.21 / 256.55, 4 warps 28.37 / 76.79 / 122.69 / 191.96 / 283.12; the
// old heuristic (gemv_pick_kw_shift: 4 warps up to T 8, 1 from 16) 28.36 / 81.22 / 128.20 /
// 198.69 / 265.54. Two warps a tile split the depth (D = 2048: 32 chunks each), a block holds 2
// tile pairs (16 rows of Im): S·Im/16 blocks, 384 at one token — one wave at 4 blocks an SM,
// where 4 warps a tile made 768 (1.45 waves).
static int gate_up_kw_shift(void) {
    const char *env = getenv("AE_MOE_GEMV_KW");
    if (env && (!strcmp(env, "1") || !strcmp(env, "2") || !strcmp(env, "4")))
        return env[0] == '1' ? 0 : env[0] == '2' ? 1 : 2;
    return 1;
}

int moe_gemv_pick(int T, int K, int D, int Im, const void *x, const void *wg, const void *wu,
                  const void *wd) {
    auto al16 = [](const void *q) { return (uintptr_t)q % 16 == 0; };
    const char *env = getenv("AE_MOE_GEMV");
    int mode = env && !strcmp(env, "0") ? 0 : env && !strcmp(env, "1") ? 1 : -1;
    int64_t slots = (int64_t)T * K;
    int shape_ok = D % 8 == 0 && Im % 8 == 0 && Im > 0 && slots <= kMoeGemvMaxSlots && al16(x) &&
                   al16(wg) && al16(wu) && al16(wd);
    if (!shape_ok || mode == 0) return 0;
    return mode == 1 || slots <= kMoeGemvDefaultSlots;
}

int moe_ffn_gemv(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr idx, ae_ptr wts, ae_ptr w_gate,
                 ae_ptr w_up, ae_ptr w_down, int T, int D, int Im, int E, int K) {
    if (!moe_gemv_pick(T, K, D, Im, x.data, w_gate.data, w_up.data, w_down.data)) {
        g_last = "grouped";
        return 0;
    }
    g_last = "gemv";
    const char *op = "moe_ffn (gemv)";
    cudaStream_t st = stream_of(be);
    const int S = T * K;
    // temporaries: h (S, Im) bf16, then lead (S) and mem (S, kGroup) ints
    size_t b_h = ((size_t)S * Im * sizeof(bf16) + 255) & ~(size_t)255;
    size_t b_tmp = b_h + (size_t)S * (1 + kGroup) * sizeof(int);
    char *tmp = (char *)cuda_tmp_alloc(be, b_tmp, op);
    if (!tmp) return 1; // the error is kept on the backend
    // AE_CUDA_POISON=1 (tests): h starts as NaN and the table as -1, so a row the gate/up kernel
    // forgets reaches y as NaN, and a forgotten leader drops its slots (visibly wrong).
    if (cu(be)->poison) cuda_check(be, cudaMemsetAsync(tmp, 0xff, b_tmp, st), "moe_ffn poison");
    bf16 *h = (bf16 *)tmp;
    int *lead = (int *)(tmp + b_h), *mem = lead + S;

    // warps per gate/up tile (log2, at most 2: a block holds at least one pair of tiles)
    const int shift = gate_up_kw_shift();
    const int rows_per_block = 8 * ((kWarps >> shift) / 2);
    dim3 grid1((unsigned)S, (unsigned)((Im + rows_per_block - 1) / rows_per_block));
    const int32_t *ip = (const int32_t *)idx.data;
    k_moe_gemv_gate_up<<<grid1, kThreads, 0, st>>>(
        h, lead, mem, (const bf16 *)x.data, (const bf16 *)w_gate.data, (const bf16 *)w_up.data, ip,
        S, E, K, D, Im, shift);
    cuda_check(be, cudaGetLastError(), "moe_ffn gate/up (gemv)");
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, {
        k_moe_gemv_down<TY><<<(unsigned)(D / 8), kThreads, 0, st>>>(
            (TY *)y.data, h, (const bf16 *)w_down.data, ip, (const float *)wts.data, lead, mem,
            T, K, E, D, Im);
    });
    cuda_check(be, cudaGetLastError(), "moe_ffn down (gemv)");
    cuda_tmp_free(be, tmp);
    return 1;
}

extern "C" const char *ae_cuda_moe_last(void) { return g_last; }
