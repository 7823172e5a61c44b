// F, warp-specialised: kernel F's arithmetic (cuda_attention_wgmma.h: the same tiles, products,
// online softmax and epilogue, so the same bits as k_attn_wgmma) in FlashAttention-3's
// structure, for contiguous keys (prefill without a cache ring or pages; both distillation
// stages). Compiled for sm_90a only, as kernel F.
//
// Block: 3 warpgroups (384 threads) for ROWS = 128 packed query rows of one kv head (kernel F's
// packing and row order, longest row tiles first).
//   warpgroup 0, the producer (setmaxnreg.dec to WS_PROD_REGS): one thread loads the block's key
//     tiles by TMA, K and V of a tile each into a stage of its own ring (WS_STAGES stages of K,
//     as many of V), each with a "full" mbarrier (the TMA's bytes) and an "empty" one (one
//     arrival per consumer warp); the other producer threads leave at once.
//   warpgroups 1 and 2, the consumers (setmaxnreg.inc to WS_CONS_REGS): rows 0 .. 63 and
//     64 .. 127 of the block. Each loads its own 64 Q rows by cp.async and then runs kernel F's
//     overlapped schedule on its own, with no block barrier: per key tile t it issues S = Q·Kᵀ of
//     tile t + 1 and O += P·V of tile t, releases K of tile t + 1 as soon as its S is done
//     (before the softmax of tile t + 1), and V of tile t once its P·V is done. Separate K and V
//     rings let the producer refill K a whole softmax earlier than a joint stage would, and fit
//     dk = 192's overlapped schedule in shared memory (kernel F runs dk = 192 unpipelined).
//   The two consumers drift apart freely: while one runs its softmax, the other's products keep
//     the tensor cores busy.
// Tensor maps (host, per launch): K as [keys][Hkv][dk] and V as [keys][Hkv][dv] bf16 (key rows
// k_stride / v_stride apart, heads dk / dv apart), boxes of 64 values x 1 head x 128 keys, 128-
// byte swizzle: a box lands as one 16 KB half of kernel F's tile layout. Keys past the last
// position (the tensors' key count is pos0 + T) read as zeros, as kernel F's zero fill; keys
// kb + 128t .. past the block's last position are masked by the softmax as in kernel F.
//
// Not taken (attn_ws_run returns 0; kernel F's synchronous form runs): rings and paged keys,
// storage without 16-byte aligned rows, drivers without the tensor map encoder, builds without
// sm_90a.
#include "backend/cuda_attention_wgmma.h"
#include "backend/cuda_tma.h"

#define WS_THREADS 384
#define WS_PROD_REGS 24
#define WS_CONS_REGS 240
#define WS_CONS_WARPS 8 // "empty" arrivals per phase: one per consumer warp
static_assert(128 * WS_PROD_REGS + 256 * WS_CONS_REGS <= 65536, "register file");

// Q + S stages of K (dk wide) + S stages of V, + 1 KB to align the base to the swizzle atom.
// dk = 128: 32 + 3 · 64 = 224 KB (S = 3); dk = 192: 48 + 2 · 80 = 208 KB (S = 2).
#define WS_SMEM(dk, stages)                                                                     \
    ((size_t)WG_QK_BYTES(dk) + (size_t)(stages) * (WG_QK_BYTES(dk) + WG_TILE_BYTES) + 1024)

#ifdef AE_WGMMA_DEVICE
// The producer thread: key tiles 0 .. ntiles − 1 (keys kb + 128t ..) of kv head kvh; tile t
// into stage t mod S once the consumers released that stage's previous tile. V of tile t waits
// for P·V of tile t − S, K of tile t + 1 for S of tile t + 1 − S: K is issued after V so that
// neither ring waits behind the other's later release.
template <int DK, int S>
__device__ __forceinline__ void ws_produce(const CUtensorMap *tk, const CUtensorMap *tv,
                                           uint32_t kst, uint32_t vst, uint32_t bars, int kvh,
                                           int kb, int ntiles) {
    const uint32_t fullk = bars, fullv = bars + 8 * S, emptyk = bars + 16 * S,
                   emptyv = bars + 24 * S;
    tma_prefetch_map(tk);
    tma_prefetch_map(tv);
    for (int t = 0; t < ntiles; t++) {
        const int s = t % S;
        const uint32_t par = ((t / S) & 1) ^ 1;
        const int j0 = kb + t * WG_BN;
        mbar_wait(emptyk + 8 * s, par);
        mbar_arrive_expect_tx(fullk + 8 * s, WG_QK_BYTES(DK));
#pragma unroll
        for (int h = 0; h < DK / 64; h++)
            tma_load_3d(kst + s * WG_QK_BYTES(DK) + h * WG_HALF_BYTES, tk, 64 * h, kvh, j0,
                        fullk + 8 * s);
        mbar_wait(emptyv + 8 * s, par);
        mbar_arrive_expect_tx(fullv + 8 * s, WG_TILE_BYTES);
#pragma unroll
        for (int h = 0; h < WG_DV / 64; h++)
            tma_load_3d(vst + s * WG_TILE_BYTES + h * WG_HALF_BYTES, tv, 64 * h, kvh, j0,
                        fullv + 8 * s);
    }
}

// Consumer warpgroup wg (0, 1) of the block at packed row R0: kernel F's overlapped schedule over
// the producer's rings, then the epilogue.
template <int DK, int S>
__device__ __forceinline__ void ws_consume(const attn_params &p, float *lse2, unsigned char *sbase,
                                           uint32_t base, uint32_t bars, int kvh, int R0, int wg) {
    constexpr uint32_t QK_BYTES = WG_QK_BYTES(DK);
    const uint32_t fullk = bars, fullv = bars + 8 * S, emptyk = bars + 16 * S,
                   emptyv = bars + 24 * S;
    const uint32_t kst = base + QK_BYTES, vst = kst + S * QK_BYTES;
    const int tid = threadIdx.x & 127, warp = tid >> 5, lane = tid & 31;
    int kb, ntiles;
    wg_rows w = wg_rows_init(p, R0, wg, warp, lane, &kb, &ntiles);

    // This warpgroup's 64 Q rows: 64 x DK/8 chunks, DK/16 per thread; zero rows for padding.
    constexpr int QCH = DK / 8;
    const int G = p.G, nrows = p.T * G;
#pragma unroll
    for (int it = 0; it < 64 * QCH / 128; it++) {
        const int c = tid + it * 128, r = wg * 64 + c / QCH, ch = c % QCH, pr = R0 + r;
        const bool ok = pr < nrows;
        const bf16 *src = p.q;
        if (ok) src = p.q + ((size_t)(pr / G) * p.Hq + kvh * G + pr % G) * DK + ch * 8;
        cp_async16(sbase + wg_tile_off(r, ch), src, ok);
    }
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();
    nbar_sync(1 + wg, 128); // the warpgroup's Q rows

    const uint32_t q_addr = base + wg * 64 * 128;
    float o[64], s[64], al[2];
    uint32_t pf[8][4], pn[8][4];
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = 0.0f;
    const int lead = lane == 0;

    // tile 0's scores and P
    mbar_wait(fullk, 0);
#pragma unroll
    for (int i = 0; i < 64; i++) s[i] = 0.0f;
    wg_reg_fence(s);
    wg_fence();
    wg_issue_qk<DK>(s, q_addr, kst);
    wg_commit();
    wg_wait<0>();
    wg_reg_fence(s);
    mbar_arrive_if(emptyk, lead);
    wg_softmax(s, pf, w, al, kb, p.scale_log2); // O is 0: no rescale

    // Step t: S of tile t + 1 and P·V of tile t in flight together; P of tile t is in pf (t
    // even) or pn (t odd), P of tile t + 1 goes to the other.
    auto step = [&](int t, const uint32_t(&pcur)[8][4], uint32_t(&pnext)[8][4]) {
        const int sc = t % S, sn = (t + 1) % S;
        mbar_wait(fullk + 8 * sn, ((t + 1) / S) & 1);
        mbar_wait(fullv + 8 * sc, (t / S) & 1); // (landed long before: S stages ahead)
#pragma unroll
        for (int i = 0; i < 64; i++) s[i] = 0.0f;
        wg_reg_fence(s);
        wg_reg_fence(o);
        wg_fence();
        wg_issue_qk<DK>(s, q_addr, kst + sn * QK_BYTES);
        wg_commit();
        wg_issue_pv(o, pcur, vst + sc * WG_TILE_BYTES);
        wg_commit();
        wg_wait<1>(); // S of tile t + 1 done: its K stage is free
        wg_reg_fence(s);
        mbar_arrive_if(emptyk + 8 * sn, lead);
        wg_softmax(s, pnext, w, al, kb + (t + 1) * WG_BN, p.scale_log2);
        wg_wait<0>(); // P·V of tile t done: its V stage is free
        wg_reg_fence(o);
        mbar_arrive_if(emptyv + 8 * sc, lead);
        wg_rescale(o, al);
    };
    auto last = [&](int t, const uint32_t(&pcur)[8][4]) {
        const int sc = t % S;
        mbar_wait(fullv + 8 * sc, (t / S) & 1);
        wg_reg_fence(o);
        wg_fence();
        wg_issue_pv(o, pcur, vst + sc * WG_TILE_BYTES);
        wg_commit();
        wg_wait<0>();
        wg_reg_fence(o);
        mbar_arrive_if(emptyv + 8 * sc, lead);
    };
    wg_pingpong(ntiles, pf, pn, step, last);
    wg_store_rows(p, o, w, R0, wg, warp, lane, kvh, lse2);
}
#endif // AE_WGMMA_DEVICE

// lse2: as kernel F (null: not written). tk, tv: the tensor maps of K and V (top of the file).
template <int DK, int S>
__global__ void __launch_bounds__(WS_THREADS, 1)
    k_attn_ws(const attn_params p, float *lse2, const __grid_constant__ CUtensorMap tk,
              const __grid_constant__ CUtensorMap tv) {
#ifdef AE_WGMMA_DEVICE
    static_assert(DK == 128 || DK == 192, "kernel F: dk 128 or 192");
    extern __shared__ unsigned char ws_smem_raw[];
    __shared__ __align__(8) uint64_t ws_bars[4 * S]; // full K, full V, empty K, empty V
    const uint32_t base = smem_base_1k(ws_smem_raw);
    unsigned char *const sbase = ws_smem_raw + (base - smem_u32(ws_smem_raw));
    const uint32_t bars = smem_u32(ws_bars);
    if (threadIdx.x == 0) {
        for (int s = 0; s < S; s++) {
            mbar_init(bars + 8 * s, 1);                       // full K: the producer's arming
            mbar_init(bars + 8 * (S + s), 1);                 // full V
            mbar_init(bars + 8 * (2 * S + s), WS_CONS_WARPS); // empty K
            mbar_init(bars + 8 * (3 * S + s), WS_CONS_WARPS); // empty V
        }
        fence_mbar_init();
    }
    __syncthreads();
    int kvh, tile;
    wg_block_of(p.Hkv, &kvh, &tile);
    const int R0 = tile * WG_ROWS;
    // The warpgroup through a shuffle: warp-uniform for ptxas (else it serialises the wgmma).
    const int wgi = __shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0);
    if (wgi == 0) {
        wg_setmaxnreg_dec<WS_PROD_REGS>();
        if (threadIdx.x == 0) {
            const int G = p.G, nrows = p.T * G;
            const int last = R0 + WG_ROWS - 1 < nrows - 1 ? R0 + WG_ROWS - 1 : nrows - 1;
            const int kb = attn_lo(p.pos0 + R0 / G, p.window), ke = p.pos0 + last / G + 1;
            const uint32_t kst = base + WG_QK_BYTES(DK);
            ws_produce<DK, S>(&tk, &tv, kst, kst + S * WG_QK_BYTES(DK), bars, kvh, kb,
                              (ke - kb + WG_BN - 1) / WG_BN);
        }
    } else {
        wg_setmaxnreg_inc<WS_CONS_REGS>();
        ws_consume<DK, S>(p, lse2, sbase, base, bars, kvh, R0, wgi - 1);
    }
#else
    (void)p;
    (void)lse2;
    (void)tk;
    (void)tv;
#endif
}

// ---- launch -------------------------------------------------------------------------------------

template <int DK, int S>
static int ws_launch(const ae_backend *be, const attn_params *p, float *lse2) {
    const void *kern = (const void *)k_attn_ws<DK, S>;
    if (!wg_kernel_loaded(kern)) return 0;
    if (!attn_set_smem(be, kern, WS_SMEM(DK, S))) return 0;
    CUtensorMap tk, tv;
    const int keys = p->pos0 + p->T;
    if (!cuda_tmap_keys(&tk, p->k, keys, p->Hkv, DK, p->k_stride, WG_BN) ||
        !cuda_tmap_keys(&tv, p->v, keys, p->Hkv, WG_DV, p->v_stride, WG_BN))
        return 0;
    const int tiles = (p->T * p->G + WG_ROWS - 1) / WG_ROWS;
    k_attn_ws<DK, S><<<wg_grid(tiles, p->Hkv, cu(be)->sm_count), WS_THREADS, WS_SMEM(DK, S),
                       stream_of(be)>>>(*p, lse2, tk, tv);
    cuda_check(be, cudaGetLastError(), "attention (warp-specialised wgmma kernel)");
    return 1;
}

// dk = 128 with three stages (two measured the same within 2%: bench_attn --fwd-kernels,
// 2026-12-01), dk = 192 with the two that fit.
int attn_ws_run(const ae_backend *be, const attn_params *p, float *lse2) {
    if (p->pages || p->ring > 0 || !cuda_tma_available()) return 0;
    return p->dk == 192 ? ws_launch<192, 2>(be, p, lse2) : ws_launch<128, 3>(be, p, lse2);
}
