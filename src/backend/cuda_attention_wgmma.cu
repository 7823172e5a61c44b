// F. Hopper attention forward (wgmma), for prefill at dk = dv = 128 and dk = 192 / dv = 128 (the
// MLA student's materialised attention), causal, with or without a sliding window, keys
// contiguous, in a ring buffer or paged (attention_paged's prefill runs): kernel B's results
// (cuda_attention_flash.cu) up to rounding for the shapes it takes, at Hopper's tensor-core
// rate. Compiled for sm_90a only (wgmma.mma_async): on other targets the kernel body is empty,
// the launcher sees it (wgmma_loaded) and reports that it cannot run (attn_wgmma_run returns
// 0), so the dispatcher uses kernel B.
//
// Block: 2 warpgroups (256 threads), ROWS = 128 packed query rows of ONE kv head (GQA packing as
// in kernel B: packed row pr = t·G + i is token t, query head kvh·G + i, for pr < T·G; padding
// rows are computed on zeros and never written). Warpgroup w owns rows 64w .. 64w + 63; in it,
// warp v (0..3) owns rows 16v .. 16v + 15, and lane l holds rows g = l/4 and g + 8 (the wgmma
// accumulator layout below).
//
// Key tiles: BN = 128 keys j0 .. j0 + 127 with j0 = kb + 128t, kb = lo(pos_min) the first key
// the block's first row sees (attn_lo: 0 without a window, pos − window + 1 with one), up to
// ke − 1 = the block's last position. Tiles wholly before kb or past ke are never loaded
// (released pages before a window are never read). Per tile:
//   S (64 x 128 fp32 per warpgroup) = Q·Kᵀ: wgmma m64n128k16, A = Q and B = K both from shared
//     memory (K-major: a K row [key][d] is B's column), dk / 16 k-steps over d.
//   mask, only on tiles not visible to every row of the block (both edges: the diagonal ones,
//     and with a window those starting before the last row's lo): key j of a row at position
//     pos is kept when lo(pos) <= j <= pos and j < ke.
//   online softmax per row in log2 units (kernel B's arithmetic up to rounding, wg_softmax_t),
//     P = exp2(S·scale·log2(e) − m) as bf16 registers.
//   O (64 x 128 fp32 per warpgroup) += P·V: wgmma m64n128k16 with A = P from registers (the S
//     accumulator of n8-tiles 2i, 2i+1 is exactly the A fragment of k-step i) and B = V from
//     shared memory (N-major: V is stored [key][d], d contiguous; transposed B).
// K/V tiles are fetched by all threads with cp.async (16-byte chunks; key j's row at j·k_stride,
// j·v_stride for contiguous keys, else, ADDR, at attn_key_off: a ring slot or a page row, or for
// pages of a power-of-two size (WG_KEYS_PAGED2) at pages[j >> shift]·page_stride + (j & mask)·
// stride with the tile's table entries loaded before its copies are issued), two or three stages
// deep (the schedules, k_attn_wgmma).
//
// Shared memory layout (the wgmma "128-byte swizzle" canonical layout): a 128 x d bf16 tile
// (rows = query rows or keys, columns = d) is d / 64 halves of 64 columns (16 KB each: two for
// V and for dk = 128, three for Q and K at dk = 192); in a half,
// row r is 128 bytes at r·128, and its 16-byte chunk c (columns 8c .. 8c + 7) sits at chunk
// position c XOR (r mod 8). Eight rows form a 1024-byte swizzle atom (1024-byte aligned). The
// matrix descriptors (wg_desc) then read:
//   A = Q, K-major: start at the half of k-step kk (kk/4; kk < dk / 16), +32 bytes per k-step
//     inside it (kk mod 4), + 64 rows · 128 bytes for warpgroup 1; stride between 8-row groups
//     (SBO) 1024 bytes; leading offset unused (16).
//   B = K, K-major: the same, over the tile's 128 key rows.
//   B = V, N-major (transposed): k-step kk covers keys 16kk .. 16kk + 15: start at kk·2048;
//     SBO = 1024 (next 8 keys), LBO = 16384 (the next 64 columns of d: the other half).
//
// Accumulator layout of wgmma m64nNk16 (fp32), thread (warp v of the warpgroup, lane l; g = l/4,
// c = 2·(l mod 4)): d[4n + e] is row 16v + g + 8·(e >> 1), column 8n + c + (e & 1) — kernel B's
// mma.sync layout repeated over N/8 n8-tiles. The A register fragment of k-step i (rows as D,
// k = columns 16i ..) is {d[8i], d[8i+1]}, {d[8i+2], d[8i+3]}, {d[8i+4], d[8i+5]},
// {d[8i+6], d[8i+7]} of S, each pair packed as bf16x2.
//
// Outputs as kernel B: out normalised with the sink (attn_out_scale), lse2 when asked (not the
// same bits as kernel B: the key tiles and the softmax's roundings differ). Never split over
// the keys (prefill: enough row tiles fill the GPU).
//
// dk = 192 runs the unpipelined schedule only (Q 48 KB + 2 stages of 48 + 32 KB = 208 KB; the
// overlapped schedule's third stage does not fit).
//
// This file holds F's synchronous form (k_attn_wgmma: every thread loads K/V tiles by cp.async,
// the warpgroups meet at a block barrier per tile) and its dispatcher, attn_wgmma_run; contiguous
// keys run by default in F's warp-specialised form (cuda_attention_ws.cu: a TMA producer
// warpgroup, the consumers free of block barriers), which shares this arithmetic through
// cuda_attention_wgmma.h and gives the same bits.
//
// Not taken (the dispatcher uses kernel B): head dims other than 128/128 and 192/128,
// scale <= 0, GPUs other than compute capability 9.0, builds without sm_90a (there
// AE_ATTN_WGMMA=1 keeps an error instead: wgmma_launch); by default (AE_ATTN_WGMMA unset) also
// short prefills and decode (attn_wgmma_run: F never splits the keys, B's split-KV fills the
// GPU) and, until WGMMA_DEFAULT_EXT is on, windows, rings, paged keys and dk = 192.
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention_wgmma.h"

// Q tile + `stages` stages of (K tile, V tile), + 1 KB to align the base to the 1024-byte
// swizzle atom. dk = 128: 160 KB + 1 KB (2 stages), 224 KB + 1 KB (3 stages; the opt-in limit
// is 227 KB); dk = 192: 48 + 2 · (48 + 32) = 208 KB + 1 KB (2 stages; 3 would need 288 KB).
#define WG_SMEM(dk, stages)                                                                     \
    ((size_t)WG_QK_BYTES(dk) + (size_t)(stages) * (WG_QK_BYTES(dk) + WG_TILE_BYTES) + 1024)

// Key addressing of k_attn_wgmma (its template parameter ADDR):
#define WG_KEYS_CONTIG 0 // key j at row j (k_stride, v_stride)
#define WG_KEYS_ROW 1    // row by row through attn_key_off: a ring, or pages of any size
// Pages of a power-of-two size: each thread first loads the table entries of all its rows of the
// tile (independent loads, in flight together), then issues the tile's copies; page and row of
// key j by shift and mask. (Through attn_key_off every row costs a table load, which cannot be
// hoisted over the previous row's cp.async (a "memory" clobber), and two integer divisions by
// the runtime page size (K and V): 8 dependent load-divide-copy chains per tile and thread, in
// the threads that then run the softmax.)
#define WG_KEYS_PAGED2 2

#ifdef AE_WGMMA_DEVICE

// One step of the overlapped schedule (PIPE = 1): issues S = Q·Kᵀ of the next tile (K at
// k_next, keys from j0_next) and then O += P·V of the current one (P = pcur, V at v_cur), runs
// meanwhile(), then the softmax of the next tile (into pnext) while that P·V runs; O is
// rescaled after it. pcur and pnext are distinct arrays (the caller alternates them): P·V
// reads pcur asynchronously while pnext is written.
template <int DK, class F>
__device__ __forceinline__ void wg_overlap_step(float (&o)[64], float (&s)[64],
                                                const uint32_t (&pcur)[8][4],
                                                uint32_t (&pnext)[8][4], wg_rows &w,
                                                uint32_t q_addr, uint32_t k_next, uint32_t v_cur,
                                                int j0_next, float scale_log2, F &&meanwhile) {
#pragma unroll
    for (int i = 0; i < 64; i++) s[i] = 0.0f;
    wg_reg_fence(s);
    wg_reg_fence(o);
    wg_fence();
    wg_issue_qk<DK>(s, q_addr, k_next);
    wg_commit();
    wg_issue_pv(o, pcur, v_cur);
    wg_commit();
    meanwhile();
    wg_wait<1>(); // S of the next tile done; P·V of this one may still run
    wg_reg_fence(s);
    float al[2];
    wg_softmax(s, pnext, w, al, j0_next, scale_log2);
    wg_wait<0>();
    wg_reg_fence(o);
    wg_rescale(o, al);
}
// The last tile's O += P·V.
__device__ __forceinline__ void wg_last_pv(float (&o)[64], const uint32_t (&pcur)[8][4],
                                           uint32_t v_cur) {
    wg_reg_fence(o);
    wg_fence();
    wg_issue_pv(o, pcur, v_cur);
    wg_commit();
    wg_wait<0>();
    wg_reg_fence(o);
}
#endif // AE_WGMMA_DEVICE

// lse2: as kernel B (null: not written). Two schedules of the same arithmetic (the same bits):
//   PIPE = 0 (AE_ATTN_WGMMA=simple; dk = 192 always): per tile, wait for K/V, S = Q·Kᵀ,
//     softmax, O += P·V, each step waiting for the previous; two K/V stages (tile i+1 loads
//     during tile i).
//   PIPE = 1 (the default of kernel F at dk = 128): S of tile i+1 is issued before P·V of tile
//     i, so the softmax of tile i+1 runs while the tensor cores do P·V of tile i
//     (FlashAttention-3's intra-warpgroup overlap); O is rescaled once that P·V has completed.
//     Three K/V stages (tile i+1's K is read while tile i's V still is; tile i+2 loads
//     meanwhile), one barrier per tile.
// DK: dk (128, or 192 with dv = 128: MLA materialised). ADDR: WG_KEYS_CONTIG (rows j·k_stride),
// WG_KEYS_ROW (row by row through attn_key_off: paged or ring buffer) or WG_KEYS_PAGED2 (pages of
// a power-of-two size, the tile's table entries loaded first).
// Key tiles start at the block's first visible key kb = lo(first row's position) (0 without a
// window; not a multiple of BN with one): tile t holds keys kb + 128t .., so pages or ring
// slots before kb are never read.
template <int DK, int PIPE, int ADDR>
__global__ void __launch_bounds__(WG_THREADS, 1) k_attn_wgmma(const attn_params p, float *lse2) {
#ifdef AE_WGMMA_DEVICE
    static_assert(DK == 128 || DK == 192, "kernel F: dk 128 or 192");
    static_assert(!PIPE || DK == 128, "the overlapped schedule needs 3 stages: dk = 128 only");
    constexpr int STAGES = PIPE ? 3 : 2;
    constexpr uint32_t QK_BYTES = WG_QK_BYTES(DK), STAGE_BYTES = QK_BYTES + WG_TILE_BYTES;
    extern __shared__ unsigned char wg_smem_raw[];
    // Tiles: Q at 0, K of stage s at QK + s·(QK + V), its V right after it.
    const uint32_t base = smem_base_1k(wg_smem_raw);
    unsigned char *const sbase = wg_smem_raw + (base - smem_u32(wg_smem_raw));
    auto k_addr = [&](int stage) { return base + QK_BYTES + (uint32_t)stage * STAGE_BYTES; };

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    int kvh, tile;
    wg_block_of(p.Hkv, &kvh, &tile);
    const int G = p.G, nrows = p.T * G, R0 = tile * WG_ROWS;
    int kb, ntiles;
    wg_rows w = wg_rows_init(p, R0, wg, warp, lane, &kb, &ntiles);

    // Q tile: 128 rows x DK/8 chunks, DK/16 per thread; zero rows for padding.
    constexpr int QCH = DK / 8;
#pragma unroll
    for (int it = 0; it < WG_ROWS * QCH / WG_THREADS; it++) {
        const int c = tid + it * WG_THREADS, r = c / QCH, ch = c % QCH, pr = R0 + r;
        const bool ok = pr < nrows;
        const bf16 *src = p.q;
        if (ok) src = p.q + ((size_t)(pr / G) * p.Hq + kvh * G + pr % G) * DK + ch * 8;
        cp_async16(sbase + wg_tile_off(r, ch), src, ok);
    }
    // K/V tile t into `stage` (keys >= ke zero-filled, their rows not addressed), when
    // t < ntiles. Thread: chunk tid % 16 (columns 0..127 of K, all of V) of the tile's rows
    // tid / 16 + 16·it (it = 0..7); those rows share r mod 8, so their swizzled offsets are one
    // offset + it·2048. DK = 192: K's third half too, chunk 16 + tid % 8 of rows tid / 8 + 32·it
    // (it = 0..3; offset + it·4096).
    const int lr = tid >> 4, lch = tid & 15, lr3 = tid >> 3, lch3 = tid & 7;
    const uint32_t loff = wg_tile_off(lr, lch), loff3 = wg_tile_off(lr3, 16 + lch3);
    // WG_KEYS_PAGED2: key j is row j & pmask of page pages[j >> pshift]
    const int pshift = ADDR == WG_KEYS_PAGED2 ? __ffs(p.page_size) - 1 : 0;
    const int pmask = p.page_size - 1;
    // The table entry of key j when it exists (ok: j < ke), else 0 (WG_KEYS_PAGED2; 0 for the
    // other modes). load_kv loads all of a thread's entries of a tile before it uses any.
    auto page_of = [&](int j, bool ok) -> int {
        return ADDR == WG_KEYS_PAGED2 && ok ? __ldg(p.pages + (j >> pshift)) : 0;
    };
    // Element offset of key j's row (stride = k_stride or v_stride); page: page_of(j).
    auto key_off = [&](int j, int page, int stride) -> size_t {
        if (ADDR == WG_KEYS_PAGED2)
            return (size_t)page * (size_t)p.page_stride + (size_t)(j & pmask) * (size_t)stride;
        return ADDR == WG_KEYS_ROW ? attn_key_off(p, j, stride) : (size_t)j * (size_t)stride;
    };
    const bf16 *const kh = p.k + (size_t)kvh * DK, *const vh = p.v + (size_t)kvh * WG_DV;
    auto load_kv = [&](int t, int stage) {
        if (t >= ntiles) return;
        unsigned char *kd = sbase + QK_BYTES + stage * STAGE_BYTES;
        unsigned char *vd = kd + QK_BYTES;
        const int jt = kb + t * WG_BN;
        const bool whole = jt + WG_BN <= w.ke; // every key of the tile exists
        int pg[WG_BN / 16];
#pragma unroll
        for (int it = 0; it < WG_BN / 16; it++) {
            const int j = jt + lr + 16 * it;
            pg[it] = page_of(j, whole || j < w.ke);
        }
#pragma unroll
        for (int it = 0; it < WG_BN / 16; it++) {
            const int j = jt + lr + 16 * it;
            const bool ok = whole || j < w.ke;
            const bf16 *ks = p.k, *vs = p.v;
            if (ok) {
                ks = kh + key_off(j, pg[it], p.k_stride) + lch * 8;
                vs = vh + key_off(j, pg[it], p.v_stride) + lch * 8;
            }
            cp_async16(kd + loff + it * 2048, ks, ok);
            cp_async16(vd + loff + it * 2048, vs, ok);
        }
        if (DK > 128) {
            int pg3[WG_BN / 32];
#pragma unroll
            for (int it = 0; it < WG_BN / 32; it++) {
                const int j = jt + lr3 + 32 * it;
                pg3[it] = page_of(j, whole || j < w.ke);
            }
#pragma unroll
            for (int it = 0; it < WG_BN / 32; it++) {
                const int j = jt + lr3 + 32 * it;
                const bool ok = whole || j < w.ke;
                const bf16 *ks = ok ? kh + key_off(j, pg3[it], p.k_stride) + 128 + lch3 * 8 : p.k;
                cp_async16(kd + loff3 + it * 4096, ks, ok);
            }
        }
    };
    // cp.async group g holds tile g (group 0 also Q); a group is committed for every tile
    // number, empty past the last, so that "all but the newest N groups" names tiles. Both
    // schedules start with tiles 0 and 1 in flight.
#pragma unroll
    for (int t = 0; t < 2; t++) {
        load_kv(t, t);
        cp_async_commit();
    }

    float o[64], s[64], al[2];
    uint32_t pf[8][4];
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = 0.0f;
    const uint32_t q_addr = base + wg * 64 * 128; // this warpgroup's 64 rows of Q

    if (!PIPE) {
        for (int t = 0; t < ntiles; t++) {
            const int stage = t & 1;
            cp_async_wait<STAGES - 1>(); // tile t (and Q) landed
            fence_proxy_async();
            __syncthreads(); // ... for every thread's tensor-core reads
#pragma unroll
            for (int i = 0; i < 64; i++) s[i] = 0.0f;
            wg_reg_fence(s);
            wg_fence();
            wg_issue_qk<DK>(s, q_addr, k_addr(stage));
            wg_commit();
            wg_wait<0>();
            wg_reg_fence(s);
            wg_softmax(s, pf, w, al, kb + t * WG_BN, p.scale_log2);
            wg_rescale(o, al);
            wg_reg_fence(o);
            wg_fence();
            wg_issue_pv(o, pf, k_addr(stage) + QK_BYTES);
            wg_commit();
            wg_wait<0>();
            wg_reg_fence(o);
            __syncthreads(); // every warpgroup is done with `stage`: refill it
            load_kv(t + STAGES, stage);
            cp_async_commit();
        }
    } else {
        // tile 0's scores and P
        cp_async_wait<1>();
        fence_proxy_async();
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 64; i++) s[i] = 0.0f;
        wg_reg_fence(s);
        wg_fence();
        wg_issue_qk<DK>(s, q_addr, k_addr(0));
        wg_commit();
        wg_wait<0>();
        wg_reg_fence(s);
        wg_softmax(s, pf, w, al, kb, p.scale_log2); // O is 0: no rescale
        // Step t (tiles t and t + 1 in use) starts once tile t + 1 has landed and every
        // warpgroup has finished step t − 1, with one barrier; then the stage of tile t − 1 is
        // free and tile t + 2 is loaded into it while the tensor cores work. Tile t lives in
        // stage t mod 3. P of tile t alternates between pf (t even) and pn (t odd), so the array
        // P·V reads is never the one being written.
        uint32_t pn[8][4];
        int t = 0, stage = 0;
        auto next_stage = [](int st) { return st == STAGES - 1 ? 0 : st + 1; };
        auto await_next = [&]() { // tile t + 1 landed (the newest group), step t − 1 done
            cp_async_wait<0>();
            fence_proxy_async();
            __syncthreads();
        };
        auto load_ahead = [&]() { // tile t + 2 into the stage of tile t − 1
            load_kv(t + 2, next_stage(next_stage(stage)));
            cp_async_commit();
        };
        for (;;) {
            if (t + 1 >= ntiles) {
                wg_last_pv(o, pf, k_addr(stage) + QK_BYTES);
                break;
            }
            await_next();
            wg_overlap_step<DK>(o, s, pf, pn, w, q_addr, k_addr(next_stage(stage)),
                                k_addr(stage) + QK_BYTES, kb + (t + 1) * WG_BN, p.scale_log2,
                                load_ahead);
            t++;
            stage = next_stage(stage);
            if (t + 1 >= ntiles) {
                wg_last_pv(o, pn, k_addr(stage) + QK_BYTES);
                break;
            }
            await_next();
            wg_overlap_step<DK>(o, s, pn, pf, w, q_addr, k_addr(next_stage(stage)),
                                k_addr(stage) + QK_BYTES, kb + (t + 1) * WG_BN, p.scale_log2,
                                load_ahead);
            t++;
            stage = next_stage(stage);
        }
    }

    wg_store_rows(p, o, w, R0, wg, warp, lane, kvh, lse2);
#else
    (void)p;
    (void)lse2;
#endif
}

// ---- launch -------------------------------------------------------------------------------------

// Packed rows (T·G) from which the default dispatch takes this kernel (AE_ATTN_WGMMA unset) for
// contiguous keys.
#ifndef WGMMA_MIN_ROWS
#define WGMMA_MIN_ROWS 4096
#endif

// AE_ATTN_WGMMA: "0" never; "1" whenever the shape allows (tests, benches); "simple" the same
// with the unpipelined schedule (PIPE = 0, for A/B runs; dk = 192 runs it always); unset: the
// default, T·G >= WGMMA_MIN_ROWS (paged keys: wgmma_paged_wins) with the schedule
// WGMMA_DEFAULT_PIPE (1: overlapped). On since both schedules passed tests/test_backend_ops.c
// on an H200 (2026-11-29 23:0x UTC; bench_attn --fwd-kernels: 414 / 490 / 501 TFLOP/s at T =
// 4K / 16K / 32K against kernel B's 175 / 224 / 229).
#ifndef WGMMA_DEFAULT_ON
#define WGMMA_DEFAULT_ON 1
#endif
#ifndef WGMMA_DEFAULT_PIPE
#define WGMMA_DEFAULT_PIPE 1
#endif
// The shapes added after that (sliding windows, ring buffers, paged keys, dk = 192) are taken by
// default when WGMMA_DEFAULT_EXT is 1: on since their GPU tests passed on an H200 (2026-11-30
// 01:5x UTC, test_backend_ops test_attention_wgmma_window / _dk192, test_cuda_paged
// test_runs_wgmma) and bench_attn / bench_paged measured them faster than kernel B (window 1024
// at 4K 1.77x, MLA 192/128 at 4K 2.36x, a paged 2048-row chunk at 32K 1.37x); 0 keeps them on B.
#ifndef WGMMA_DEFAULT_EXT
#define WGMMA_DEFAULT_EXT 1
#endif

// Whether the code of k_attn_wgmma loaded for this (compute capability 9.0) GPU is the sm_90a
// body: it has its registers (two 64-float accumulators: 160 to 250 registers), while the
// empty stand-in compiled for other targets (sm_80 code or PTX, plain sm_90 without the "a"
// features) uses a handful.
static int wgmma_loaded(const void *kernel) {
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return fa.numRegs >= 128;
}

// forced (AE_ATTN_WGMMA names kernel F): a build without its sm_90a code is an error on this
// compute capability 9.0 GPU rather than a silent fallback, so that a test or bench asking for
// kernel F never measures kernel B instead.
template <int DK, int PIPE, int ADDR>
static int wgmma_launch(const ae_backend *be, const attn_params *p0, float *lse2, int forced) {
    const void *kern = (const void *)k_attn_wgmma<DK, PIPE, ADDR>;
    const size_t smem = WG_SMEM(DK, PIPE ? 3 : 2);
    if (!wgmma_loaded(kern)) {
        if (!forced) return 0;
        cuda_check(be, cudaErrorInvalidDeviceFunction,
                   "attention (AE_ATTN_WGMMA asks for kernel F, whose sm_90a code this build "
                   "lacks: CMAKE_CUDA_ARCHITECTURES must include 90a)");
        return 1;
    }
    if (!attn_set_smem(be, kern, smem)) return 0;
    attn_params p = *p0;
    p.splits = 1;
    const int tiles = (p.T * p.G + WG_ROWS - 1) / WG_ROWS;
    k_attn_wgmma<DK, PIPE, ADDR>
        <<<wg_grid(tiles, p.Hkv, cu(be)->sm_count), WG_THREADS, smem, stream_of(be)>>>(p, lse2);
    cuda_check(be, cudaGetLastError(), "attention (wgmma kernel)");
    return 1;
}

// The instantiation for p's dk (128 or 192: unpipelined only, its 3 stages do not fit) and key
// addressing ADDR (WG_KEYS_*).
template <int ADDR>
static int wgmma_launch_dk(const ae_backend *be, const attn_params *p, float *lse2, int forced,
                           int simple) {
    if (p->dk == 192) return wgmma_launch<192, 0, ADDR>(be, p, lse2, forced);
    return simple ? wgmma_launch<128, 0, ADDR>(be, p, lse2, forced)
                  : wgmma_launch<128, 1, ADDR>(be, p, lse2, forced);
}

// Default for paged keys (attention_paged's prefill runs: one sequence's chunk of T positions at
// pos0 over its pages): F never splits the keys, so it must have blocks enough for the GPU on
// its own; per block it is 2.2-2.4x faster than B (bench_attn). B splits the keys of too few
// blocks over the SMs (split-KV), so with k blocks of F (one wave at most) against B spread over
// all SMs, F wins while k / sm_count > 1 / 2.2: at least half a wave of F's blocks. The key
// count does not enter (both times scale with it; over short keys B cannot split either). One
// decode row (T = 1: Hkv blocks) stays on B's split-KV; the engine's 2048-row chunks
// (Qwen3-8B: 64 tiles x 8 kv heads = 512 blocks) take F, and so do chunks down to 264 rows there.
static int wgmma_paged_wins(const ae_backend *be, const attn_params *p) {
    const long blocks = (long)((p->T * p->G + WG_ROWS - 1) / WG_ROWS) * p->Hkv;
    return 2 * blocks >= cu(be)->sm_count;
}

// Paged keys whose page size is a power of two take WG_KEYS_PAGED2 (table entries of a tile
// loaded first, shift and mask) when WGMMA_PAGED_FAST is 1, WG_KEYS_ROW (attn_key_off per row)
// when 0; AE_ATTN_WGMMA_PAGED=fast / =row overrides it (other page sizes: WG_KEYS_ROW always).
// On since its GPU test (test_cuda_paged test_runs_wgmma_fast: bit for bit WG_KEYS_ROW's results)
// passed on an H200 (2026-11-30 02:16 UTC) and bench_paged measured a 2048-row teacher chunk at
// the end of 32K keys at 2.83 ms against 4.76 (WG_KEYS_ROW) and 2.51 over contiguous keys.
#ifndef WGMMA_PAGED_FAST
#define WGMMA_PAGED_FAST 1
#endif

// The key addressing mode (WG_KEYS_*) of p.
static int wgmma_keys(const attn_params *p) {
    if (!p->pages) return p->ring > 0 ? WG_KEYS_ROW : WG_KEYS_CONTIG;
    const char *env = getenv("AE_ATTN_WGMMA_PAGED");
    const int fast = env ? strcmp(env, "fast") == 0 : WGMMA_PAGED_FAST;
    const int pow2 = p->page_size > 0 && (p->page_size & (p->page_size - 1)) == 0;
    return fast && pow2 ? WG_KEYS_PAGED2 : WG_KEYS_ROW;
}

// The warp-specialised form (cuda_attention_ws.cu) runs contiguous keys by default when
// WGMMA_WS_DEFAULT is 1 (AE_ATTN_WGMMA=sync keeps the synchronous form, =ws asks for the
// warp-specialised one, an error where it cannot run).
#ifndef WGMMA_WS_DEFAULT
#define WGMMA_WS_DEFAULT 1
#endif

int attn_wgmma_run(const ae_backend *be, const attn_params *p, float *lse2) {
    const char *env = getenv("AE_ATTN_WGMMA");
    const int forced_simple = env && strcmp(env, "simple") == 0;
    const int forced_sync = env && strcmp(env, "sync") == 0;
    const int forced_ws = env && strcmp(env, "ws") == 0;
    const int forced = forced_simple || forced_sync || forced_ws || (env && strcmp(env, "1") == 0);
    const int simple = forced ? forced_simple : !WGMMA_DEFAULT_PIPE;
    const int addr = p->pages != NULL || p->ring > 0;
    const int ext = addr || p->window > 0 || p->dk != 128; // shapes added after the first tests
    if (env && strcmp(env, "0") == 0) return 0;
    if (!forced) {
        if (!WGMMA_DEFAULT_ON || (ext && !WGMMA_DEFAULT_EXT)) return 0;
        if (p->pages ? !wgmma_paged_wins(be, p) : p->T * p->G < WGMMA_MIN_ROWS) return 0;
    }
    if (cu(be)->cc_major != 9 || cu(be)->cc_minor != 0) return 0;
    if ((p->dk != 128 && p->dk != 192) || p->dv != WG_DV) return 0;
    if (!(p->scale_log2 > 0.0f)) return 0; // the softmax scales the raw row max (wg_softmax_t)
    if (forced_ws || (!simple && !forced_sync && WGMMA_WS_DEFAULT)) {
        if (attn_ws_run(be, p, lse2)) return 1;
        if (forced_ws) {
            cuda_check(be, cudaErrorInvalidDeviceFunction,
                       "attention (AE_ATTN_WGMMA=ws asks for kernel F's warp-specialised form, "
                       "which does not take these arguments: contiguous keys, an sm_90a build "
                       "and the driver's tensor map encoder)");
            return 1;
        }
    }
    switch (wgmma_keys(p)) {
    case WG_KEYS_PAGED2: return wgmma_launch_dk<WG_KEYS_PAGED2>(be, p, lse2, forced, simple);
    case WG_KEYS_ROW: return wgmma_launch_dk<WG_KEYS_ROW>(be, p, lse2, forced, simple);
    default: return wgmma_launch_dk<WG_KEYS_CONTIG>(be, p, lse2, forced, simple);
    }
}
