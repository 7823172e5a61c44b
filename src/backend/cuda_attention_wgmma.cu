// F. Hopper attention forward (wgmma), for dk = dv = 128 prefill: the same results as kernel B
// (cuda_attention_flash.cu) for the shapes it takes, at Hopper's tensor-core rate. Compiled for
// sm_90a only (wgmma.mma_async): on other targets the kernel body is empty and the launcher
// reports that it cannot run (attn_wgmma_run returns 0), so the dispatcher uses kernel B.
//
// Block: 2 warpgroups (256 threads), ROWS = 128 packed query rows of ONE kv head (GQA packing as
// in kernel B: packed row pr = t·G + i is token t, query head kvh·G + i, for pr < T·G; padding
// rows are computed on zeros and never written). Warpgroup w owns rows 64w .. 64w + 63; in it,
// warp v (0..3) owns rows 16v .. 16v + 15, and lane l holds rows g = l/4 and g + 8 (the wgmma
// accumulator layout below).
//
// Per key tile of BN = 128 keys (j0 .. j0 + 127):
//   S (64 x 128 fp32 per warpgroup) = Q·Kᵀ: wgmma m64n128k16, A = Q and B = K both from shared
//     memory (K-major: a K row [key][d] is B's column), 8 k-steps over d.
//   mask, only on tiles not visible to every row of the block (the diagonal ones): key j of a
//     row at position pos is kept when j <= pos and j < ke; tiles wholly past the block's last
//     position are never visited.
//   online softmax per row in log2 units (kernel B's arithmetic: same max, base, rescale and
//     bf16 rounding of P), P = exp2(S − m) as bf16 registers.
//   O (64 x 128 fp32 per warpgroup) += P·V: wgmma m64n128k16 with A = P from registers (the S
//     accumulator of n8-tiles 2i, 2i+1 is exactly the A fragment of k-step i) and B = V from
//     shared memory (N-major: V is stored [key][d], d contiguous; transposed B).
// K/V tiles are fetched by all threads with cp.async (16-byte chunks, each key row addressed by
// attn_key_off) two stages deep: tile i+1 is in flight while tile i is computed.
//
// Shared memory layout (the wgmma "128-byte swizzle" canonical layout): a 128 x 128 bf16 tile
// (rows = query rows or keys, columns = d) is two halves of 64 columns (16 KB each); in a half,
// row r is 128 bytes at r·128, and its 16-byte chunk c (columns 8c .. 8c + 7) sits at chunk
// position c XOR (r mod 8). Eight rows form a 1024-byte swizzle atom (1024-byte aligned). The
// matrix descriptors (wg_desc) then read:
//   A = Q, K-major: start at the half of k-step kk (kk/4), +32 bytes per k-step inside it
//     (kk mod 4), + 64 rows · 128 bytes for warpgroup 1; stride between 8-row groups (SBO)
//     1024 bytes; leading offset unused (16).
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
// Outputs as kernel B: out normalised with the sink (attn_out_scale), lse2 when asked (then the
// same arithmetic as kernel B, not the same bits: the summation order over keys differs). Never
// split over the keys (prefill: enough row tiles fill the GPU).
//
// Not taken (the dispatcher uses kernel B): sliding windows (and so ring buffers), paged keys,
// head dims other than 128/128, GPUs other than compute capability 9.0, builds without sm_90a.
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"

#define WG_ROWS 128                  // packed query rows per block (2 warpgroups x 64)
#define WG_BN 128                    // keys per tile
#define WG_D 128                     // dk = dv
#define WG_THREADS 256
#define WG_TILE_BYTES (128 * 128 * 2) // one 128 x 128 bf16 tile (two 16 KB halves)
#define WG_HALF_BYTES (128 * 128)     // one half: 128 rows x 64 columns
// Q tile + 2 stages of (K tile, V tile), + 1 KB to align the base to the 1024-byte swizzle atom.
#define WG_SMEM ((size_t)WG_TILE_BYTES * 5 + 1024)

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AE_WGMMA_DEVICE 1
#endif

#ifdef AE_WGMMA_DEVICE
// ---- wgmma wrappers (sm_90a) --------------------------------------------------------------------

// Matrix descriptor of a 128-byte-swizzled operand at shared address `addr` (16-byte aligned):
// leading / stride byte offsets as described above.
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)((lbo & 0x3FFFFu) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFFu) >> 4) << 32) | (1ull << 62); // 1: 128-byte swizzle
}

#define WG_ACC64(d)                                                                               \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),           \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),   \
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),             \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),             \
        "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),             \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]),             \
        "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),             \
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),             \
        "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),             \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]),             \
        "+f"(d[62]), "+f"(d[63])
#define WG_D64                                                                                    \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
    "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
    "%56, %57, %58, %59, %60, %61, %62, %63}"

// d (64 x 128) = A·B (+ d when accumulate); A, B from shared memory, both K-major.
__device__ __forceinline__ void wg_mma_ss(float (&d)[64], uint64_t da, uint64_t db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D64
                 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : WG_ACC64(d)
                 : "l"(da), "l"(db), "r"(accumulate));
}
// d (64 x 128) += A·B; A (64 x 16) from registers (bf16x2), B from shared memory, N-major.
__device__ __forceinline__ void wg_mma_rs_nmajor(float (&d)[64], const uint32_t (&a)[4],
                                                 uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : WG_ACC64(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wg_wait0() {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Keeps the compiler from moving reads or writes of accumulator registers across a wgmma
// issue / wait (it does not know they are written asynchronously).
__device__ __forceinline__ void wg_reg_fence(float (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}
// Orders the generic-proxy writes (cp.async) to shared memory before the tensor cores read it.
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Byte offset of 16-byte chunk `chunk` (0..15: columns 8·chunk ..) of row r in a swizzled tile.
__device__ __forceinline__ uint32_t wg_tile_off(int r, int chunk) {
    return (uint32_t)((chunk >> 3) * WG_HALF_BYTES + r * 128 + (((chunk & 7) ^ (r & 7)) << 4));
}
#endif // AE_WGMMA_DEVICE

// lse2: as kernel B (null: not written).
__global__ void __launch_bounds__(WG_THREADS, 1) k_attn_wgmma(const attn_params p, float *lse2) {
#ifdef AE_WGMMA_DEVICE
    extern __shared__ unsigned char wg_smem_raw[];
    // Tiles: Q at 0, K of stage s at (1 + 2s)·TILE, V of stage s at (2 + 2s)·TILE.
    const uint32_t base = (smem_u32(wg_smem_raw) + 1023u) & ~1023u;
    unsigned char *const sbase = wg_smem_raw + (base - smem_u32(wg_smem_raw));

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int gq = lane >> 2, tq = lane & 3;
    const int kvh = blockIdx.y;
    const int tile = gridDim.x - 1 - blockIdx.x; // longest (latest) row tiles first
    const int G = p.G, nrows = p.T * G, R0 = tile * WG_ROWS;
    const int last = R0 + WG_ROWS - 1 < nrows - 1 ? R0 + WG_ROWS - 1 : nrows - 1;
    const int pos_min = p.pos0 + R0 / G;         // smallest query position of the block
    const int ke = p.pos0 + last / G + 1;        // keys 0 .. ke − 1 (no window)
    const int full_end = pos_min + 1;            // tiles with j0 + BN <= full_end: no mask

    // This thread's two rows (hf = 0, 1): packed rows R0 + 64wg + 16warp + gq + 8hf; padding
    // rows borrow the last real row's position.
    int row_pos[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = R0 + wg * 64 + warp * 16 + gq + 8 * hf;
        row_pos[hf] = p.pos0 + (r < nrows ? r : nrows - 1) / G;
    }

    // Q tile: 128 rows x 16 chunks, 8 per thread; zero rows for padding.
#pragma unroll
    for (int it = 0; it < WG_ROWS * 16 / WG_THREADS; it++) {
        const int c = tid + it * WG_THREADS, r = c >> 4, ch = c & 15, pr = R0 + r;
        const bool ok = pr < nrows;
        const bf16 *src = p.q;
        if (ok) src = p.q + ((size_t)(pr / G) * p.Hq + kvh * G + pr % G) * WG_D + ch * 8;
        cp_async16(sbase + wg_tile_off(r, ch), src, ok);
    }
    auto load_kv = [&](int j0, int stage) {
        unsigned char *kd = sbase + (1 + 2 * stage) * WG_TILE_BYTES;
        unsigned char *vd = kd + WG_TILE_BYTES;
#pragma unroll
        for (int it = 0; it < WG_BN * 16 / WG_THREADS; it++) {
            const int c = tid + it * WG_THREADS, r = c >> 4, ch = c & 15, j = j0 + r;
            const bool ok = j < ke;
            const bf16 *ks = p.k, *vs = p.v;
            if (ok) {
                ks = p.k + attn_key_off(p, j, p.k_stride) + (size_t)kvh * WG_D + ch * 8;
                vs = p.v + attn_key_off(p, j, p.v_stride) + (size_t)kvh * WG_D + ch * 8;
            }
            const uint32_t off = wg_tile_off(r, ch);
            cp_async16(kd + off, ks, ok);
            cp_async16(vd + off, vs, ok);
        }
    };
    load_kv(0, 0);
    cp_async_commit();

    float o[64];
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};

    const uint32_t q_addr = base + wg * 64 * 128; // this warpgroup's 64 rows of Q
    for (int j0 = 0, stage = 0; j0 < ke; j0 += WG_BN, stage ^= 1) {
        if (j0 + WG_BN < ke) {
            load_kv(j0 + WG_BN, stage ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_proxy_async();
        __syncthreads(); // tile j0 (and Q) visible to every warpgroup's tensor-core reads

        const uint32_t k_addr = base + (1 + 2 * stage) * WG_TILE_BYTES;
        const uint32_t v_addr = k_addr + WG_TILE_BYTES;

        // S = Q·Kᵀ
        float s[64];
#pragma unroll
        for (int i = 0; i < 64; i++) s[i] = 0.0f;
        wg_reg_fence(s);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < WG_D / 16; kk++) {
            const uint32_t koff = (kk >> 2) * WG_HALF_BYTES + (kk & 3) * 32;
            wg_mma_ss(s, wg_desc(q_addr + koff, 16, 1024), wg_desc(k_addr + koff, 16, 1024), kk > 0);
        }
        wg_commit();
        wg_wait0();
        wg_reg_fence(s);

        // scale, mask (s[4n + e]: key j0 + 8n + 2tq + (e & 1) of row half e >> 1), online softmax
        const bool full = j0 + WG_BN <= full_end;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int i = 0; i < 64; i++) {
            float x = s[i] * p.scale_log2;
            if (!full) {
                const int j = j0 + 8 * (i >> 2) + 2 * tq + (i & 1);
                if (j >= ke || j > row_pos[(i >> 1) & 1]) x = -INFINITY;
            }
            s[i] = x;
            mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], x);
        }
        float bs[2];
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const float mn = fmaxf(mrow[hf], quad_max(mx[hf]));
            bs[hf] = attn_base(mn);
            const float al = exp2f(mrow[hf] - bs[hf]); // 0 while nothing was seen
            mrow[hf] = mn;
            lrow[hf] *= al;
#pragma unroll
            for (int n = 0; n < 16; n++) {
                o[4 * n + 2 * hf] *= al;
                o[4 * n + 2 * hf + 1] *= al;
            }
        }
        uint32_t pf[8][4];
#pragma unroll
        for (int i = 0; i < 64; i++) {
            s[i] = exp2f(s[i] - bs[(i >> 1) & 1]);
            lrow[(i >> 1) & 1] += s[i]; // this lane's columns; quad-summed at the end
        }
#pragma unroll
        for (int k2 = 0; k2 < 8; k2++)
#pragma unroll
            for (int x = 0; x < 4; x++) pf[k2][x] = pack_bf16(s[8 * k2 + 2 * x], s[8 * k2 + 2 * x + 1]);

        // O += P·V
        wg_reg_fence(o);
        wg_fence();
#pragma unroll
        for (int k2 = 0; k2 < WG_BN / 16; k2++)
            wg_mma_rs_nmajor(o, pf[k2], wg_desc(v_addr + k2 * 2048, WG_HALF_BYTES, 1024));
        wg_commit();
        wg_wait0();
        wg_reg_fence(o);
        __syncthreads(); // stage `stage` is refilled by the next iteration's prefetch
    }

    // epilogue: full row sums, then out (normalised, sink added) and lse2
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = R0 + wg * 64 + warp * 16 + gq + 8 * hf;
        const float l = quad_sum(lrow[hf]);
        if (r >= nrows) continue;
        const int t = r / G, h = kvh * G + r % G;
        const size_t orow = (size_t)t * p.Hq + h;
        const int has_sink = p.sinks != nullptr;
        const float sink2 = has_sink ? p.sinks[h] * AE_ATTN_LOG2E : 0.0f;
        const float f = attn_out_scale(mrow[hf], l, has_sink, sink2);
        bf16 *dst = p.out + orow * WG_D + 2 * tq;
#pragma unroll
        for (int n = 0; n < 16; n++)
            *reinterpret_cast<uint32_t *>(dst + n * 8) =
                pack_bf16(o[4 * n + 2 * hf] * f, o[4 * n + 2 * hf + 1] * f);
        if (lse2 && tq == 0) lse2[orow] = attn_lse2(mrow[hf], l, has_sink, sink2); // own key seen
    }
#else
    (void)p;
    (void)lse2;
#endif
}

// ---- launch -------------------------------------------------------------------------------------

// Packed rows (T·G) from which the default dispatch takes this kernel (AE_ATTN_WGMMA unset).
#ifndef WGMMA_MIN_ROWS
#define WGMMA_MIN_ROWS 4096
#endif

// AE_ATTN_WGMMA: "0" never, "1" whenever the shape allows (tests, benches), unset: the default.
// The default is off until the kernel has passed its GPU test on an H200 (tests/
// test_backend_ops.c runs it explicitly); then it becomes T·G >= WGMMA_MIN_ROWS.
#ifndef WGMMA_DEFAULT_ON
#define WGMMA_DEFAULT_ON 0
#endif

// Whether the loaded code of k_attn_wgmma is the sm_90a body: the device's machine code is for
// compute capability 9.0 and the kernel has its registers (the body keeps two 64-float
// accumulators: well over 128 registers; the empty stand-in compiled for other targets, or for
// plain sm_90 without the "a" features, uses a handful).
static int wgmma_loaded(void) {
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, (const void *)k_attn_wgmma) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return fa.binaryVersion == 90 && fa.numRegs >= 128;
}

int attn_wgmma_run(const ae_backend *be, const attn_params *p0, float *lse2) {
    const char *env = getenv("AE_ATTN_WGMMA");
    const int forced = env && strcmp(env, "1") == 0;
    if (env && strcmp(env, "0") == 0) return 0;
    if (!forced && !(WGMMA_DEFAULT_ON && p0->T * p0->G >= WGMMA_MIN_ROWS)) return 0;
    if (cu(be)->cc_major != 9 || cu(be)->cc_minor != 0 || !wgmma_loaded()) return 0;
    if (p0->dk != WG_D || p0->dv != WG_D || p0->window > 0 || p0->ring > 0 || p0->pages) return 0;
    if (!attn_set_smem(be, (const void *)k_attn_wgmma, WG_SMEM)) return 0;
    attn_params p = *p0;
    p.splits = 1;
    const int tiles = (p.T * p.G + WG_ROWS - 1) / WG_ROWS;
    dim3 grid((unsigned)tiles, (unsigned)p.Hkv);
    k_attn_wgmma<<<grid, WG_THREADS, WG_SMEM, stream_of(be)>>>(p, lse2);
    cuda_check(be, cudaGetLastError(), "attention (wgmma kernel)");
    return 1;
}
