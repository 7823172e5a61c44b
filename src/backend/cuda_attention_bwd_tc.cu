// Attention backward on tensor cores (FlashAttention-2's algorithm; mma.sync m16n8k16 bf16 ->
// fp32, the fragment layouts, ldmatrix and cp.async helpers of cuda_attention.h, as the forward
// kernel B in cuda_attention_flash.cu). When it runs: see cuda_attention_bwd.cu.
//
// When the op is not given the forward's out and log-sum-exp (ae_attn_args.lse), it starts with
//   1. the forward kernel with its lse2 output (tc_forward: as the `attention` op, F or B): out into a bf16
//      scratch (T, Hq, dv), lse2 per row. Cost: one forward (2 matrix products, see below).
//      The training forwards keep both (the `attention` op's dispatcher runs this very launch
//      when asked for lse: same kernel, unsplit, same MW), so this step is skipped there and the
//      results are the same bits.
//   2. k_attn_bwd_delta: D = Σ_d dout·out per row (one warp per row), the row's sink gradient
//      −exp2(sink2 − lse2)·D, and a bf16 copy of dout when the op's dout is F32.
// then, with p = exp2(s2 − lse2), dp = dout·v, ds = p (dp − D) recomputed tile by tile:
//   3. k_attn_bwd_kv: dK += scale·dSᵀQ, dV += PᵀdO. Block = (key tile of 64 keys, kv head),
//      4 warps of 16 keys each; K and V of the tile stay in shared memory; the block loops over
//      the packed query rows (token, head of the group) that can see the tile, BQ at a time (Q
//      and dO tiles double-buffered with cp.async), accumulating dK, dV in registers: per tile
//      Sᵀ = K·Qᵀ, Pᵀ, dV += Pᵀ·dO, dPᵀ = V·dOᵀ, dSᵀ, dK += dSᵀ·Q. Sole writer of its keys' rows.
//      Fused (the default): the same kernel also forms dQ_part = dS·K per query tile (dS through
//      shared memory) and adds it into dq: the key tiles that see a query tile add theirs in
//      key-tile order (a counter per (kv head, query tile) in global memory: the block of key
//      tile y waits until the earlier ones have added, then load-add-stores fp32 partial sums;
//      the last one writes scale·sum into dq). Blocks take their tile from a ticket counter, so
//      a block only waits on blocks that already run. 5 products, every sum in a fixed order.
//   4. split (AE_CUDA_ATTN_BWD=split) instead: k_attn_bwd_kv without dQ, then k_attn_bwd_q:
//      dq = scale·dS·K. Block = (64 packed query rows, kv head), as the forward: loops over the
//      key tiles the rows can see (K, V double-buffered): S = Q·Kᵀ, P, dP = dO·Vᵀ, dS,
//      dQ += dS·K. Sole writer of its rows. S and dP are computed twice (7 products).
//   5. wgmma (AE_CUDA_ATTN_BWD=wgmma, and the default on compute capability 9.0 for dk/dv
//      128/128 and 192/128: see pick_kernels in cuda_attention_bwd.cu) instead: the split kernels
//      of step 4 on Hopper's warpgroup multiplies (cuda_attention_bwd_wgmma.cu), after the same
//      steps 1 and 2 (attn_bwd_tc_run below).
// Products of T_q x T_k x d in all: forward 2 (skipped with a saved forward), then 5 fused or 7
// split; a backward that adds dq in float atomics also has 5, in an order that changes from run
// to run: the fused kernel's counters give it that count with a fixed order.
// Only key tiles some row can see are visited (causal: half; window W: O(T·W)); masking is
// applied only on tiles not fully visible.
//
// Precision: P and dS are rounded to bf16 as mma operands (fp32 accumulation); out is bf16, so D
// carries its rounding; dout is used in bf16.
#include <string.h>

#include "backend/cuda_attention_bwd.h"

namespace {

constexpr int kThreads = 128; // 4 warps
constexpr int kRows = 64;     // keys per dK/dV block, packed query rows per dQ block

// ldmatrix lane offsets (elements) within a tile of row stride ld (see cuda_attention_flash.cu):
//   A operand from a [row][k] tile:         row (l & 7) + 8·((l >> 3) & 1), col 8·(l >> 4)
//   B operand ("col") from an [n][k] tile:  row (l & 7) + 8·(l >> 4), col 8·((l >> 3) & 1)
//     -> b0, b1 of n-tile 0, then b0, b1 of n-tile 1
//   B operand from a [k][n] tile (.trans):  row (l & 7) + 8·((l >> 3) & 1), col 8·(l >> 4)
//     -> b0, b1 of n-tile 0, then of n-tile 1
__device__ __forceinline__ int off_a(int lane, int ld) {
    return ((lane & 7) + ((lane >> 3) & 1) * 8) * ld + (lane >> 4) * 8;
}
__device__ __forceinline__ int off_b(int lane, int ld) {
    return ((lane & 7) + (lane >> 4) * 8) * ld + ((lane >> 3) & 1) * 8;
}
__device__ __forceinline__ int off_bt(int lane, int ld) { return off_a(lane, ld); }

template <int N> __device__ __forceinline__ void zero_acc(float (&x)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; i++) x[i][0] = x[i][1] = x[i][2] = x[i][3] = 0.0f;
}

// acc (16 x 8·N of one warp: rows r0 + g, r0 + g + 8) += A (16 x 16·KS, [row][k] tile at a,
// row stride lda) · B where B's column n is row n of the [n][k] tile at b (row stride ldb):
// i.e. acc += A·bᵀ over k = 0 .. 16·KS − 1.
template <int KS, int N>
__device__ __forceinline__ void mma_abt(float (&acc)[N][4], const bf16 *a, int lda, const bf16 *b,
                                        int ldb, int lane) {
    static_assert(N % 2 == 0, "n-tiles in pairs");
    const bf16 *al = a + off_a(lane, lda), *bl = b + off_b(lane, ldb);
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        uint32_t af[4];
        ldsm_x4(af, al + kk * 16);
#pragma unroll
        for (int n2 = 0; n2 < N / 2; n2++) {
            uint32_t bf[4];
            ldsm_x4(bf, bl + n2 * 16 * ldb + kk * 16);
            mma_bf16(acc[2 * n2], af, bf[0], bf[1]);
            mma_bf16(acc[2 * n2 + 1], af, bf[2], bf[3]);
        }
    }
}

// acc (16 x 8·N) += P (16 x 16·KS, bf16 A fragments in registers) · B, B the [k][n] tile at b
// (row stride ldb, k = 0 .. 16·KS − 1, n = 0 .. 8·N − 1).
template <int KS, int N>
__device__ __forceinline__ void mma_pb(float (&acc)[N][4], const uint32_t (&pf)[KS][4],
                                       const bf16 *b, int ldb, int lane) {
    const bf16 *bl = b + off_bt(lane, ldb);
#pragma unroll
    for (int k2 = 0; k2 < KS; k2++) {
#pragma unroll
        for (int d2 = 0; d2 < N / 2; d2++) {
            uint32_t bf[4];
            ldsm_x4_t(bf, bl + k2 * 16 * ldb + d2 * 16);
            mma_bf16(acc[2 * d2], pf[k2], bf[0], bf[1]);
            mma_bf16(acc[2 * d2 + 1], pf[k2], bf[2], bf[3]);
        }
    }
}

// Accumulator tiles 2i, 2i + 1 (16 x 16 fp32) as the A fragment of k-step i (the forward's P).
template <int N>
__device__ __forceinline__ void to_afrag(uint32_t (&f)[N / 2][4], const float (&x)[N][4]) {
#pragma unroll
    for (int i = 0; i < N / 2; i++) {
        f[i][0] = pack_bf16(x[2 * i][0], x[2 * i][1]);
        f[i][1] = pack_bf16(x[2 * i][2], x[2 * i][3]);
        f[i][2] = pack_bf16(x[2 * i + 1][0], x[2 * i + 1][1]);
        f[i][3] = pack_bf16(x[2 * i + 1][2], x[2 * i + 1][3]);
    }
}

// rows x D bf16 from global (row r at src_row(r), NULL: zero fill) into a shared tile of row
// stride ld, 16-byte cp.async chunks spread over the block's threads. `any` is a valid global
// address given to the zero-filling copies (they read nothing).
template <int ROWS, int D, typename F>
__device__ __forceinline__ void tile_load(bf16 *dst, int ld, const bf16 *any, F src_row, int tid) {
    static_assert((ROWS * (D / 8)) % kThreads == 0, "whole chunks per thread");
#pragma unroll
    for (int it = 0; it < ROWS * (D / 8) / kThreads; it++) {
        const int c = tid + it * kThreads, r = c / (D / 8), cc = c % (D / 8);
        const bf16 *src = src_row(r);
        cp_async16(dst + r * ld + cc * 8, src ? src + cc * 8 : any, src != nullptr);
    }
}

// ---- dK, dV (fused: and dQ) -----------------------------------------------------------------------
// Block = (kv head, key tile: keys j0 .. j0 + 63 from the first key any query sees). Split: kv
// head blockIdx.x, tile blockIdx.y (the longest tiles, first under a causal mask, are scheduled
// first for every head). Fused: the block takes a ticket (atomicAdd on sem[0]) and does tile
// ticket / Hkv of kv head ticket % Hkv: tickets are handed out in order to blocks that are
// running, so a block only ever waits (below) on blocks that already run.
// Warp w owns keys j0 + 16w .. +15; in its accumulators lane holds keys g = lane/4 and g + 8,
// columns 2·(lane%4) + {0,1} of each 8-wide n-tile (the mma layout). The packed query rows are
// visited in tiles of BQ aligned to multiples of BQ (the fused dQ's counters count per tile),
// from the last tile with a row that sees a key of the block's tile back to the tile holding the
// first such row; rows that do not see a key are masked by position. Shared: K, V of the tile;
// two buffers of (Q, dO, lse2, D, position) for BQ packed rows; fused: dS of the current rows
// (BQ x 64, [row][key]).
template <int DK, int DV, int BQ> struct kv_cfg {
    static constexpr int KLD = DK + 8, VLD = DV + 8; // padded rows: conflict-free ldmatrix
    static constexpr int SLD = kRows + 8;            // dS rows (fused)
    static constexpr size_t smem(bool fused) {
        return sizeof(bf16) * (size_t)(kRows + 2 * BQ) * (KLD + VLD) + sizeof(float) * 2 * 3 * BQ +
               (fused ? sizeof(bf16) * (size_t)BQ * SLD : 0);
    }
};

// Key tiles (numbered from attn_lo(pos0) in steps of 64) that packed rows R0 .. R0 + BQ − 1
// (clipped at T·G) see: the first holds the first visible key of row R0, the last the key at the
// position of the last row. Every key tile in between visits the rows (see k_attn_bwd_kv).
__device__ __forceinline__ int first_key_tile(const attn_bwd_tc_params &p, int R0) {
    return (attn_lo(p.pos0 + R0 / p.G, p.window) - attn_lo(p.pos0, p.window)) / kRows;
}
template <int BQ>
__device__ __forceinline__ int last_key_tile(const attn_bwd_tc_params &p, int R0) {
    const int last = R0 + BQ - 1 < p.T * p.G - 1 ? R0 + BQ - 1 : p.T * p.G - 1;
    return (p.pos0 + last / p.G - attn_lo(p.pos0, p.window)) / kRows;
}

// Spins (one thread) until *count >= target. A count that never comes is a bug: after 20 s the
// kernel traps (an error from the next sync) instead of hanging the process.
__device__ __forceinline__ void wait_count(const int *count, int target) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    while (*(const volatile int *)count < target) {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (t - t0 > 20000000000ull) __trap();
    }
    __threadfence(); // the earlier blocks' dQ sums are read after the count
}

// Fused dQ of packed rows R0 .. R0 + BQ − 1 (kv head kvh, key tile y): dQ_part = dS·K (dS in
// shared memory, K the tile's keys), added in key-tile order: the block waits until the key
// tiles before it (first_key_tile .. y − 1) have added theirs (the rows' counter), adds with a
// plain load-add-store into the fp32 partial sums p.dq_acc (the first tile stores), and counts
// itself; the last tile writes scale·sum into p.dq instead. Warps: m-tile w % MT of the rows,
// column block w / MT of DK (MT = BQ / 16 m-tiles, 4 / MT column blocks), NCH n-tiles at a time.
template <int DK, int BQ>
__device__ __forceinline__ void dq_tile_add(const attn_bwd_tc_params &p, const bf16 *Ss,
                                            const bf16 *Ks, int kvh, int y, int R0, int tid) {
    constexpr int KLD = DK + 8, SLD = kRows + 8, MT = BQ / 16, DQC = DK / (4 / MT);
    constexpr int NCH = (DQC / 8) % 8 == 0 ? 8 : 4;
    static_assert(4 % MT == 0 && DQC % (8 * NCH) == 0, "dQ warp layout");
    const int warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
    const int nrows = p.T * p.G, first = first_key_tile(p, R0), last = last_key_tile<BQ>(p, R0);
    int *count = p.sem + 1 + (size_t)kvh * ((nrows + BQ - 1) / BQ) + R0 / BQ;
    if (tid == 0 && y > first) wait_count(count, y - first);
    __syncthreads(); // dS of every warp in Ss; the earlier tiles' sums visible

    const int mt = warp % MT, c_begin = (warp / MT) * DQC;
    uint32_t af[kRows / 16][4]; // dS rows 16·mt .. +15, all 64 keys
#pragma unroll
    for (int kk = 0; kk < kRows / 16; kk++)
        ldsm_x4(af[kk], Ss + mt * 16 * SLD + off_a(lane, SLD) + kk * 16);
    size_t roff[2];
    bool ok[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int pr = R0 + mt * 16 + gq + 8 * hf;
        ok[hf] = pr < nrows;
        roff[hf] = ok[hf] ? (size_t)((pr / p.G) * p.Hq + kvh * p.G + pr % p.G) * DK : 0;
    }
#pragma unroll
    for (int c0 = c_begin; c0 < c_begin + DQC; c0 += 8 * NCH) {
        float acc[NCH][4];
        zero_acc(acc);
        mma_pb<kRows / 16, NCH>(acc, af, Ks + c0, KLD, lane);
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            if (!ok[hf]) continue;
#pragma unroll
            for (int n = 0; n < NCH; n++) {
                const size_t i = roff[hf] + c0 + n * 8 + 2 * tq;
                float2 x = make_float2(acc[n][2 * hf], acc[n][2 * hf + 1]);
                if (y > first) { // sum so far + this tile's part
                    const float2 o = __ldcg(reinterpret_cast<const float2 *>(p.dq_acc + i));
                    x.x = o.x + x.x;
                    x.y = o.y + x.y;
                }
                if (y == last) {
                    st_any(p.dq, p.dq_bf, i, p.scale * x.x);
                    st_any(p.dq, p.dq_bf, i + 1, p.scale * x.y);
                } else {
                    __stcg(reinterpret_cast<float2 *>(p.dq_acc + i), x);
                }
            }
        }
    }
    if (y < last) { // the next key tile may add
        __threadfence();
        __syncthreads();
        if (tid == 0) atomicAdd(count, 1);
    }
}

template <int DK, int DV, int BQ, bool FUSED>
__global__ void __launch_bounds__(kThreads) k_attn_bwd_kv(const attn_bwd_tc_params p) {
    typedef kv_cfg<DK, DV, BQ> C;
    constexpr int KLD = C::KLD, VLD = C::VLD, SLD = C::SLD;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Ks = reinterpret_cast<bf16 *>(smem_raw); // (64, KLD)
    bf16 *Vs = Ks + kRows * KLD;                   // (64, VLD)
    bf16 *Qs = Vs + kRows * VLD;                   // 2 x (BQ, KLD)
    bf16 *Os = Qs + 2 * BQ * KLD;                  // 2 x (BQ, VLD): dO
    float *Ls = reinterpret_cast<float *>(Os + 2 * BQ * VLD); // 2 x BQ: lse2
    float *Ds = Ls + 2 * BQ;                                  // 2 x BQ: D
    int *Ps = reinterpret_cast<int *>(Ds + 2 * BQ);           // 2 x BQ: position (−1: none)
    bf16 *Ss = reinterpret_cast<bf16 *>(Ps + 2 * BQ);         // fused: (BQ, SLD) dS [row][key]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
    int kvh, ky;
    if constexpr (FUSED) {
        __shared__ int ticket;
        if (tid == 0) ticket = atomicAdd(p.sem, 1);
        __syncthreads();
        kvh = ticket % p.Hkv, ky = ticket / p.Hkv;
    } else {
        kvh = blockIdx.x, ky = blockIdx.y;
    }
    const int G = p.G, S = p.pos0 + p.T, nrows = p.T * G;
    const int j0 = attn_lo(p.pos0, p.window) + ky * kRows;
    // packed rows of the queries that can see a key of the tile: tokens t_lo .. t_hi
    int t_lo, t_hi;
    attn_bwd_key_tile_tokens(p, j0, kRows, &t_lo, &t_hi);
    const int r_begin = t_lo * G / BQ * BQ, r_end = (t_hi + 1) * G;

    tile_load<kRows, DK>(Ks, KLD, p.q, [&](int r) { return attn_bwd_k_row<DK>(p, kvh, j0 + r, S); },
                         tid);
    tile_load<kRows, DV>(Vs, VLD, p.q, [&](int r) { return attn_bwd_v_row<DV>(p, kvh, j0 + r, S); },
                         tid);
    // Q, dO, lse2, D, positions of packed rows R0 .. R0 + BQ − 1 into buffer b (rows past T·G
    // zero, position −1: masked)
    auto load_rows = [&](int R0, int b) {
        tile_load<BQ, DK>(Qs + b * BQ * KLD, KLD, p.q,
                          [&](int r) { return attn_bwd_q_row<DK>(p, kvh, R0 + r); }, tid);
        tile_load<BQ, DV>(Os + b * BQ * VLD, VLD, p.q,
                          [&](int r) { return attn_bwd_dout_row<DV>(p, kvh, R0 + r); }, tid);
        for (int r = tid; r < BQ; r += kThreads) {
            const attn_bwd_row_state rs = attn_bwd_row(p, kvh, R0 + r, -1);
            Ls[b * BQ + r] = rs.lse2, Ds[b * BQ + r] = rs.delta, Ps[b * BQ + r] = rs.pos;
        }
    };

    float dka[DK / 8][4], dva[DV / 8][4]; // this warp's 16 keys x DK, x DV
    zero_acc(dka);
    zero_acc(dva);
    const int jw = j0 + warp * 16 + gq; // this lane's keys: jw, jw + 8

    // query tiles last to first (r_begin < r_end always: the tile's first key sees itself). The
    // earlier key tiles that add to a query tile before this block (fused) started no later
    // (tickets) and have no more query tiles before it in this order, so a block waits about a
    // tile per earlier key tile, once, not at every tile (first to last: 5x that under a causal
    // mask, as the shorter blocks trail the longer ones).
    const int r_last = (r_end - 1) / BQ * BQ;
    load_rows(r_last, 0);
    cp_async_commit();
    for (int R0 = r_last, b = 0; R0 >= r_begin; R0 -= BQ, b ^= 1) {
        if (R0 - BQ >= r_begin) {
            load_rows(R0 - BQ, b ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); // tile R0 (and K, V) visible to all warps
        const bf16 *qt = Qs + b * BQ * KLD, *ot = Os + b * BQ * VLD;
        const float *lt = Ls + b * BQ, *dt = Ds + b * BQ;
        const int *pt = Ps + b * BQ;

        // Sᵀ (16 keys x BQ rows) = K·Qᵀ, then Pᵀ = exp2(s2 − lse2 of the column's row)
        float s[BQ / 8][4];
        zero_acc(s);
        mma_abt<DK / 16>(s, Ks + warp * 16 * KLD, KLD, qt, KLD, lane);
        const int pos_first = p.pos0 + R0 / G, pos_last = p.pos0 + (R0 + BQ - 1) / G;
        const bool full = R0 + BQ <= nrows && pos_first >= j0 + kRows - 1 &&
                          (p.window <= 0 || attn_lo(pos_last, p.window) <= j0);
#pragma unroll
        for (int n = 0; n < BQ / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = n * 8 + 2 * tq + (e & 1); // column: packed row R0 + c
                float x = s[n][e] * p.scale_log2 - lt[c];
                if (!full) {
                    const int ps = pt[c], j = jw + 8 * (e >> 1);
                    if (j > ps || j < attn_lo(ps, p.window)) x = -INFINITY; // ps −1: no row
                }
                s[n][e] = exp2f(x);
            }
        }
        uint32_t pf[BQ / 16][4];
        to_afrag<BQ / 8>(pf, s);
        mma_pb<BQ / 16, DV / 8>(dva, pf, ot, VLD, lane); // dV += Pᵀ·dO

        // dPᵀ = V·dOᵀ;  dSᵀ = Pᵀ ∘ (dPᵀ − D);  dK += dSᵀ·Q
        float dp[BQ / 8][4];
        zero_acc(dp);
        mma_abt<DV / 16>(dp, Vs + warp * 16 * VLD, VLD, ot, VLD, lane);
#pragma unroll
        for (int n = 0; n < BQ / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) dp[n][e] = s[n][e] * (dp[n][e] - dt[n * 8 + 2 * tq + (e & 1)]);
        to_afrag<BQ / 8>(pf, dp);
        mma_pb<BQ / 16, DK / 8>(dka, pf, qt, KLD, lane);
        if constexpr (FUSED) { // dS (the bf16 values dK used) as [row][key], then dQ += dS·K
#pragma unroll
            for (int n = 0; n < BQ / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    Ss[(n * 8 + 2 * tq + (e & 1)) * SLD + warp * 16 + gq + 8 * (e >> 1)] =
                        __float2bfloat16_rn(dp[n][e]);
            dq_tile_add<DK, BQ>(p, Ss, Ks, kvh, ky, R0, tid);
        }
        __syncthreads(); // buffer b (and Ss) is refilled by the next iteration
    }
    cp_async_wait<0>();

    // dk += scale·dK, dv += dV for the keys that exist (j < S); = when p.dkv_set
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int j = jw + 8 * hf;
        if (j >= S) continue;
        const size_t ko = (size_t)j * p.k_stride + (size_t)kvh * DK + 2 * tq;
        const size_t vo = (size_t)j * p.v_stride + (size_t)kvh * DV + 2 * tq;
#pragma unroll
        for (int d = 0; d < DK / 8; d++)
#pragma unroll
            for (int x = 0; x < 2; x++) {
                const size_t i = ko + d * 8 + x;
                const float old = p.dkv_set ? 0.0f : ld_any(p.dk, p.dk_bf, i);
                st_any(p.dk, p.dk_bf, i, old + p.scale * dka[d][2 * hf + x]);
            }
#pragma unroll
        for (int d = 0; d < DV / 8; d++)
#pragma unroll
            for (int x = 0; x < 2; x++) {
                const size_t i = vo + d * 8 + x;
                const float old = p.dkv_set ? 0.0f : ld_any(p.dv, p.dv_bf, i);
                st_any(p.dv, p.dv_bf, i, old + dva[d][2 * hf + x]);
            }
    }
}

// ---- dQ ----------------------------------------------------------------------------------------
// Block (kv head x; packed row tile y, the last (longest) first), rows R0 .. R0 + 63 as the
// forward's MW = 1 (rows past T·G are padding: zero Q and dO, never written). Warp w owns rows
// R0 + 16w .. +15, lane the rows g and g + 8. Shared: Q and dO of the rows, two buffers of K, V for BN keys.
template <int DK, int DV, int BN> struct q_cfg {
    static constexpr int KLD = DK + 8, VLD = DV + 8;
    static constexpr size_t SMEM = sizeof(bf16) * (size_t)(kRows + 2 * BN) * (KLD + VLD);
};

template <int DK, int DV, int BN>
__global__ void __launch_bounds__(kThreads) k_attn_bwd_q(const attn_bwd_tc_params p) {
    typedef q_cfg<DK, DV, BN> C;
    constexpr int KLD = C::KLD, VLD = C::VLD;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = reinterpret_cast<bf16 *>(smem_raw); // (64, KLD)
    bf16 *Os = Qs + kRows * KLD;                   // (64, VLD): dO
    bf16 *Ks = Os + kRows * VLD;                   // 2 x (BN, KLD)
    bf16 *Vs = Ks + 2 * BN * KLD;                  // 2 x (BN, VLD)

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
    const int kvh = blockIdx.x, G = p.G, nrows = p.T * G;
    const int R0 = (gridDim.y - 1 - blockIdx.y) * kRows;
    const int last = R0 + kRows - 1 < nrows - 1 ? R0 + kRows - 1 : nrows - 1;
    const int pos_min = p.pos0 + R0 / G, pos_max = p.pos0 + last / G;
    const int lo_max = attn_lo(pos_max, p.window);
    const int kb = attn_lo(pos_min, p.window), ke = pos_max + 1;
    // tiles with lo_max <= j0 <= full_hi are visible to every row of the block
    const int full_hi = (pos_min < ke - 1 ? pos_min : ke - 1) - (BN - 1);

    tile_load<kRows, DK>(Qs, KLD, p.q, [&](int r) { return attn_bwd_q_row<DK>(p, kvh, R0 + r); },
                         tid);
    tile_load<kRows, DV>(Os, VLD, p.q, [&](int r) { return attn_bwd_dout_row<DV>(p, kvh, R0 + r); },
                         tid);
    auto load_kv = [&](int j0, int b) {
        tile_load<BN, DK>(Ks + b * BN * KLD, KLD, p.q,
                          [&](int r) { return attn_bwd_k_row<DK>(p, kvh, j0 + r, ke); }, tid);
        tile_load<BN, DV>(Vs + b * BN * VLD, VLD, p.q,
                          [&](int r) { return attn_bwd_v_row<DV>(p, kvh, j0 + r, ke); }, tid);
    };
    load_kv(kb, 0);
    cp_async_commit();

    // this lane's rows (half hf: packed row R0 + 16w + g + 8·hf): position, lse2, D
    // (attn_bwd_row: padding rows take the last real row's position)
    int rpos[2];
    float rl[2], rd[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const attn_bwd_row_state rs = attn_bwd_row(p, kvh, R0 + warp * 16 + gq + 8 * hf, pos_max);
        rpos[hf] = rs.pos, rl[hf] = rs.lse2, rd[hf] = rs.delta;
    }
    const bool active = R0 + warp * 16 < nrows; // a warp of padding rows only helps with copies

    float dqa[DK / 8][4];
    zero_acc(dqa);
    for (int j0 = kb, b = 0; j0 < ke; j0 += BN, b ^= 1) {
        if (j0 + BN < ke) {
            load_kv(j0 + BN, b ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); // tile j0 (and Q, dO) visible to all warps
        if (active) {
            const bf16 *kt = Ks + b * BN * KLD, *vt = Vs + b * BN * VLD;
            float s[BN / 8][4];
            zero_acc(s);
            mma_abt<DK / 16>(s, Qs + warp * 16 * KLD, KLD, kt, KLD, lane); // S = Q·Kᵀ
            const bool full = j0 >= lo_max && j0 <= full_hi;
#pragma unroll
            for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int hf = e >> 1;
                    float x = s[n][e] * p.scale_log2 - rl[hf];
                    if (!full) {
                        const int j = j0 + n * 8 + 2 * tq + (e & 1);
                        if (j >= ke || j > rpos[hf] || j < attn_lo(rpos[hf], p.window))
                            x = -INFINITY;
                    }
                    s[n][e] = exp2f(x);
                }
            }
            float dp[BN / 8][4];
            zero_acc(dp);
            mma_abt<DV / 16>(dp, Os + warp * 16 * VLD, VLD, vt, VLD, lane); // dP = dO·Vᵀ
#pragma unroll
            for (int n = 0; n < BN / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) dp[n][e] = s[n][e] * (dp[n][e] - rd[e >> 1]);
            uint32_t dsf[BN / 16][4];
            to_afrag<BN / 8>(dsf, dp);
            mma_pb<BN / 16, DK / 8>(dqa, dsf, kt, KLD, lane); // dQ += dS·K
        }
        __syncthreads(); // buffer b is refilled by the next iteration's prefetch
    }

#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int pr = R0 + warp * 16 + gq + 8 * hf;
        if (pr >= nrows) continue;
        const size_t o = (size_t)attn_bwd_grow(p, kvh, pr) * DK + 2 * tq;
#pragma unroll
        for (int d = 0; d < DK / 8; d++)
#pragma unroll
            for (int x = 0; x < 2; x++)
                st_any(p.dq, p.dq_bf, o + d * 8 + x, p.scale * dqa[d][2 * hf + x]);
    }
}

// ---- D, the rows' sink gradients, dout in bf16 ---------------------------------------------------
// One warp per row r: D = Σ_d dout·out; dsink_row[r] (when non-null) = −exp2(sink2 − lse2)·D. An
// F32 dout is rounded to bf16 first when dout_bf is non-null (D then uses dout as the tensor-core
// kernels see it) and the rounded values are stored there; with dout_bf null it is used as is.
__global__ void __launch_bounds__(256) k_attn_bwd_delta(const bf16 *out, const void *dout,
                                                        int dout_f32, bf16 *dout_bf,
                                                        const float *lse2, const float *sinks,
                                                        float *delta, float *dsink_row, int rows,
                                                        int Hq, int dv) {
    const int r = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    float s = 0.0f;
    for (int d = lane; d < dv; d += 32) {
        const size_t i = (size_t)r * dv + d;
        float g;
        if (!dout_f32) {
            g = __bfloat162float(((const bf16 *)dout)[i]);
        } else if (dout_bf) {
            const bf16 gb = __float2bfloat16_rn(((const float *)dout)[i]);
            dout_bf[i] = gb;
            g = __bfloat162float(gb);
        } else {
            g = ((const float *)dout)[i];
        }
        s += g * __bfloat162float(out[i]);
    }
    s = warp_sum(s);
    if (lane == 0) {
        delta[r] = s;
        if (dsink_row) dsink_row[r] = -exp2f(sinks[r % Hq] * AE_ATTN_LOG2E - lse2[r]) * s;
    }
}

// ---- launch --------------------------------------------------------------------------------------

// Counters of the fused kernel: one ticket, then one per (kv head, tile of BQ >= 32 packed rows).
size_t fused_counters(const attn_bwd_tc_params *p) {
    return 1 + (size_t)p->Hkv * (size_t)((p->T * p->G + 31) / 32);
}

template <int DK, int DV, int BQ, int BN> struct tc_kernels {
    typedef kv_cfg<DK, DV, BQ> KV;
    typedef q_cfg<DK, DV, BN> Q;
    // Raises the shared memory limits; 0 when a kernel of the path does not fit the device.
    static int prepare(const ae_backend *be, int fused) {
        if (fused)
            return attn_set_smem(be, (const void *)k_attn_bwd_kv<DK, DV, BQ, true>, KV::smem(true));
        return attn_set_smem(be, (const void *)k_attn_bwd_kv<DK, DV, BQ, false>, KV::smem(false)) &&
               attn_set_smem(be, (const void *)k_attn_bwd_q<DK, DV, BN>, Q::SMEM);
    }
    static void launch(const ae_backend *be, attn_bwd_tc_params *p, int fused) {
        cudaStream_t s = stream_of(be);
        const int S = p->pos0 + p->T;
        const int jmin = p->window > 0 && p->pos0 - p->window + 1 > 0 ? p->pos0 - p->window + 1 : 0;
        const unsigned key_tiles = (unsigned)((S - jmin + kRows - 1) / kRows);
        if (fused) { // counters zeroed; fp32 partial sums of dq (float2 accesses): dq itself
                     // when it is F32 and 8-byte aligned, else scratch
            const size_t nc = fused_counters(p);
            const int own_acc = p->dq_bf || ((uintptr_t)p->dq & 7) != 0;
            const size_t nacc = own_acc ? (size_t)p->T * p->Hq * DK : 0;
            void *tmp =
                cuda_tmp_alloc(be, sizeof(int) * nc + sizeof(float) * nacc, "attention_bwd");
            if (!tmp) return; // error kept
            p->sem = (int *)tmp;
            p->dq_acc = own_acc ? (float *)((int *)tmp + (nc + 3) / 4 * 4) : (float *)p->dq;
            cuda_check(be, cudaMemsetAsync(p->sem, 0, sizeof(int) * nc, s), "attention_bwd");
            k_attn_bwd_kv<DK, DV, BQ, true>
                <<<key_tiles * (unsigned)p->Hkv, kThreads, KV::smem(true), s>>>(*p);
            cuda_check(be, cudaGetLastError(), "attention_bwd (fused dk, dv, dq)");
            cuda_tmp_free(be, tmp);
            return;
        }
        k_attn_bwd_kv<DK, DV, BQ, false>
            <<<dim3((unsigned)p->Hkv, key_tiles), kThreads, KV::smem(false), s>>>(*p);
        cuda_check(be, cudaGetLastError(), "attention_bwd (dk, dv)");
        dim3 gq((unsigned)p->Hkv, (unsigned)((p->T * p->G + kRows - 1) / kRows));
        k_attn_bwd_q<DK, DV, BN><<<gq, kThreads, Q::SMEM, s>>>(*p);
        cuda_check(be, cudaGetLastError(), "attention_bwd (dq)");
    }
};

// BQ (query rows per step of the dK/dV kernel) and BN (keys per step of the dQ kernel): 64,
// except 32 for dk = 192 (register budget: the dK accumulator alone is 96 registers).
#define AE_BWD_TC_DIMS(X) \
    X(32, 32, 64, 64) X(64, 64, 64, 64) X(128, 128, 64, 64) X(192, 128, 32, 32)

int tc_prepare(const ae_backend *be, int dk, int dv, int fused) {
#define X(DK, DV, BQ, BN) \
    if (dk == DK && dv == DV) return tc_kernels<DK, DV, BQ, BN>::prepare(be, fused);
    AE_BWD_TC_DIMS(X)
#undef X
    return 0;
}

void tc_launch(const ae_backend *be, attn_bwd_tc_params *p, int fused) {
#define X(DK, DV, BQ, BN) \
    if (p->dk_dim == DK && p->dv_dim == DV) return tc_kernels<DK, DV, BQ, BN>::launch(be, p, fused);
    AE_BWD_TC_DIMS(X)
#undef X
}

} // namespace

int attn_bwd_tc_has(int dk, int dv) {
#define X(DK, DV, BQ, BN) \
    if (dk == DK && dv == DV) return attn_flash_has(dk, dv);
    AE_BWD_TC_DIMS(X)
#undef X
    return 0;
}

void attn_bwd_delta_run(const ae_backend *be, const bf16 *out, const void *dout, int dout_bf,
                        bf16 *dout_copy, const float *lse2, const float *sinks, float *delta,
                        float *dsink_row, int rows, int Hq, int dv) {
    k_attn_bwd_delta<<<cuda_blocks((size_t)rows, 8), 256, 0, stream_of(be)>>>(
        out, dout, !dout_bf, dout_bf ? NULL : dout_copy, lse2, sinks, delta, dsink_row, rows, Hq,
        dv);
    cuda_check(be, cudaGetLastError(), "attention_bwd (D)");
}

// The forward launch the `attention` op makes when asked for lse (cuda_attention.cu: Hopper kernel
// F where it takes the shape, else the flash kernel B), out into `out`, so that a recomputed
// forward has the bits of a saved one: 0 when neither can run these arguments (nothing queued).
static int tc_forward(const ae_backend *be, const ae_attn_args *a, const attn_bwd_tc_params *p,
                      bf16 *out, float *lse2) {
    attn_params f;
    memset(&f, 0, sizeof f);
    f.q = p->q;
    f.k = p->k;
    f.v = p->v;
    f.out = out;
    f.sinks = (const float *)a->sinks.data;
    f.T = a->T;
    f.pos0 = a->pos0;
    f.Hq = a->Hq;
    f.Hkv = a->Hkv;
    f.G = a->Hq / a->Hkv;
    f.dk = a->dk;
    f.dv = a->dv;
    f.k_stride = a->k_stride;
    f.v_stride = a->v_stride;
    f.window = a->window;
    f.ring = 0; // the fast path runs without a wrapping ring: every position is its own row
    f.scale_log2 = a->scale * AE_ATTN_LOG2E;
    f.splits = 1;
    if (attn_wgmma_run(be, &f, lse2)) return 1;
    return attn_flash_run_lse(be, &f, lse2);
}

int attn_bwd_tc_run(const ae_backend *be, const ae_attn_args *a, attn_bwd_tc_params *p,
                    const void *dout, int dout_bf, const bf16 *out, float *lse2, float *delta,
                    float *dsink_row, attn_bwd_kernels kernels) {
    const int fused = kernels == ATTN_BWD_FUSED;
    if (!attn_bwd_tc_has(a->dk, a->dv)) return 0;
    const int wg = kernels == ATTN_BWD_WGMMA || kernels == ATTN_BWD_WGFUSED;
    if (wg ? !attn_bwd_wgmma_prepare(be, a->dk, a->dv, kernels == ATTN_BWD_WGFUSED)
           : !tc_prepare(be, a->dk, a->dv, fused))
        return 0;
    const size_t rows = (size_t)a->T * a->Hq, no = rows * (size_t)a->dv;
    // scratch: out (bf16) unless saved, then dout in bf16 unless the op's dout can be used as it is
    const int copy_dout = !dout_bf || ((uintptr_t)dout & 15) != 0, recompute = out == NULL;
    const size_t n_scratch = no * ((size_t)recompute + (size_t)copy_dout);
    bf16 *scratch = NULL;
    if (n_scratch > 0) {
        scratch = (bf16 *)cuda_tmp_alloc(be, sizeof(bf16) * n_scratch, "attention_bwd");
        if (!scratch) return 1; // error kept
    }
    bf16 *dout_copy = copy_dout ? scratch + (recompute ? no : 0) : NULL;
    if (recompute) {
        if (!tc_forward(be, a, p, scratch, lse2)) {
            cuda_tmp_free(be, scratch);
            return 0;
        }
        out = scratch;
    }
    if (copy_dout && dout_bf) { // BF16 but unaligned: an aligned copy
        cuda_check(be, cudaMemcpyAsync(dout_copy, dout, sizeof(bf16) * no,
                                       cudaMemcpyDeviceToDevice, stream_of(be)), "attention_bwd");
        dout = dout_copy;
    }
    attn_bwd_delta_run(be, out, dout, dout_bf, dout_copy, lse2, (const float *)a->sinks.data,
                       delta, dsink_row, (int)rows, a->Hq, a->dv);
    p->dout = copy_dout ? dout_copy : (const bf16 *)dout;
    p->lse2 = lse2;
    p->delta = delta;
    if (wg)
        attn_bwd_wgmma_launch(be, p, kernels == ATTN_BWD_WGFUSED);
    else
        tc_launch(be, p, fused);
    cuda_tmp_free(be, scratch);
    return 1;
}
