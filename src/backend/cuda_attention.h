// Private to the attention op of the CUDA backend (cuda_attention*.cu): the parameter block all
// attention kernels share, the split-KV partial format, the launchers of the tensor-core kernels,
// and small device helpers (cp.async, ldmatrix, mma.sync wrappers, masking and normalisation).
//
// Units. Every kernel works with scores in log2 units: s2 = scale · log2(e) · q·k, so softmax
// weights are exp2(s2 − m2). Running maxima m, partial maxima and sinks are kept in these units.
//
// Split-KV partials (split s of `splits`, output row r = t·Hq + h, R = T·Hq rows):
//   opart[(s·R + r)·dv + d]  unnormalised Σ_j exp2(s2_j − m) v_j[d]   (fp32)
//   mpart[s·R + r]           m, the running max of that split (−inf when it saw no key)
//   lpart[s·R + r]           Σ_j exp2(s2_j − m)                          (0 when it saw no key)
// The combine kernel (cuda_attention.cu) merges the splits, adds the sink and writes bf16 out.
#ifndef AE_BACKEND_CUDA_ATTENTION_H
#define AE_BACKEND_CUDA_ATTENTION_H

#include <math.h>
#include <stdint.h>

#include "backend/cuda_internal.h"

#define AE_ATTN_LOG2E 1.4426950408889634f

typedef struct {
    const bf16 *q, *k, *v;
    bf16 *out;
    const float *sinks;          // (Hq) natural-log units, or null
    float *opart, *mpart, *lpart; // split partials (splits > 1), else null
    int T, pos0, Hq, Hkv, G, dk, dv; // G = Hq / Hkv
    int k_stride, v_stride, window, ring;
    float scale_log2;            // scale · log2(e)
    int splits;                  // key-range splits (grid z); 1: kernels write `out` directly
    // Paged keys (attention_paged's prefill runs; kernels B, D/E and F): when `pages` is
    // non-null, key position j lives in row j % page_size of page pages[j / page_size], page p
    // starting at k (v) + p·page_stride (attn_key_off); ring is 0 then. Pages of blocks before
    // a block's first visible key are never read (they may be −1).
    const int32_t *pages;        // the sequence's row of the block table, or null
    int page_size;
    int64_t page_stride;
} attn_params;

// ---- launchers of the tensor-core kernels -------------------------------------------------------
// Each returns 1 when it queued the work (or kept an error), 0 when it cannot run these
// arguments (no instantiation for the dims, or its shared memory does not fit): the dispatcher
// then tries the next kernel. Inputs are checked by the dispatcher (dims, alignment).
int attn_flash_has(int dk, int dv);                          // cuda_attention_flash.cu
// lse2 (T·Hq F32, row t·Hq + h, log2 units) or null: also the rows' log-sum-exp, and then
// unsplit (without it the launcher may split the keys: split-KV, cuda_attention.cu).
int attn_flash_run_lse(const ae_backend *be, const attn_params *p, float *lse2);
// Kernel F (cuda_attention_wgmma.cu, Hopper wgmma; dk = 128 or 192, dv = 128; windows, rings,
// pages; never split): 0 when it does not take these arguments (AE_ATTN_WGMMA, shape, device,
// build), as the launchers above.
int attn_wgmma_run(const ae_backend *be, const attn_params *p, float *lse2);
// Kernel F's warp-specialised form (cuda_attention_ws.cu: TMA producer, free-running consumer
// warpgroups; contiguous keys only): 0 when it does not take these arguments. Called by
// attn_wgmma_run once the shape checks above passed.
int attn_ws_run(const ae_backend *be, const attn_params *p, float *lse2);
// Kernel G (cuda_attention_decode.cu: decode, T·G <= 64 packed rows, dk = dv = 64 or 128,
// windows, rings, sinks; split-KV combined in the same launch): 0 when it does not take these
// arguments (lse2 set, pages, shape, AE_ATTN_DECODE=0), as the launchers above.
// AE_ATTN_DECODE: 0 = never kernel G; unset = DECODE_KERNEL_DEFAULT_ON (single-token calls of
// groups wider than ATTN_DEC_WIDE_G query heads a kv head left to kernel B); else on for every
// group width. Read per call.
int attn_decode_run(const ae_backend *be, const attn_params *p, const float *lse2);
// A single-token call (decode) without lse of a GQA group wider than ATTN_DEC_WIDE_G: kernel B
// takes these by default, with splits of one key tile or more (cuda_attention_decode.cu says why).
#define ATTN_DEC_WIDE_G 4
static inline int attn_dec_wide(const attn_params *p, const float *lse2) {
    return !lse2 && p->T == 1 && p->G > ATTN_DEC_WIDE_G;
}
int attn_mla_has(int dk, int dv);                            // cuda_attention_mla.cu
int attn_mla_run(const ae_backend *be, const attn_params *p);

// The parameter block of the op's arguments (contiguous or ring keys; splits 1, no pages):
// ae_cuda_attention's, and attention_paged's prefill runs (which then set the page fields).
void attn_params_init(attn_params *p, const ae_attn_args *a, ae_ptr out, ae_ptr q, ae_ptr k, ae_ptr v);

// ---- split-KV plumbing (cuda_attention.cu) ------------------------------------------------------
// Number of key-range splits for `blocks` blocks of which `per_sm` fit on one SM at a time, when
// a block's key range is `keys` long and a split should cover at least `min_keys` keys.
int attn_pick_splits(const ae_backend *be, int blocks, int per_sm, int keys, int min_keys);
// The split count s of `keys` keys when each split takes ⌈keys / s⌉ keys rounded up to a multiple
// of `align` (dec_split_range): the fewest splits those chunks need (s itself under a fixed
// AE_ATTN_DEC_SPLIT); what ae_cuda_attn_last reports.
int attn_align_splits(int s, int keys, int align);
// Allocates the partials of p->splits splits into p (opart/mpart/lpart); returns the buffer to
// pass to attn_partials_finish (NULL on failure: the error is kept and nothing must be launched).
void *attn_partials_alloc(const ae_backend *be, attn_params *p);
// Queues the combine kernel (writes p->out) and frees the buffer.
void attn_partials_finish(const ae_backend *be, const attn_params *p, void *buf);
// Largest key range of one query row-tile of `rows_per_tile` packed rows (the last tile): used
// to decide on splitting.
int attn_tile_keys(const attn_params *p, int rows_per_tile);
// Raises the dynamic shared memory limit of a kernel; 0 when `bytes` exceeds the device's opt-in
// limit (the caller then falls back), 1 otherwise (an API error is kept).
int attn_set_smem(const ae_backend *be, const void *kernel, size_t bytes);

// ---- device helpers -----------------------------------------------------------------------------

// First visible key of a query at position pos.
__device__ __forceinline__ int attn_lo(int pos, int window) {
    return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}
// Storage row of key position j.
__device__ __forceinline__ size_t attn_row(int j, int ring) {
    return (size_t)(ring > 0 ? j % ring : j);
}
// Element offset from k (v) of the row holding key position j, stride = k_stride (v_stride):
// the one place the tensor-core kernels address keys, contiguous / ring buffer or paged.
__device__ __forceinline__ size_t attn_key_off(const attn_params &p, int j, int stride) {
    if (p.pages)
        return (size_t)p.pages[j / p.page_size] * (size_t)p.page_stride +
               (size_t)(j % p.page_size) * (size_t)stride;
    return attn_row(j, p.ring) * (size_t)stride;
}
// Factor f with out = acc · f for a row with running max m (log2 units, −inf when no key was
// seen) and sum l; sink2 = sink · log2(e) joins the denominator when has_sink. Safe for m = −inf.
__device__ __forceinline__ float attn_out_scale(float m, float l, int has_sink, float sink2) {
    if (!has_sink) return l > 0.0f ? 1.0f / l : 0.0f;
    float mf = fmaxf(m, sink2);
    if (!(mf > -INFINITY)) return 0.0f;
    float fac = exp2f(m - mf); // 0 when m = −inf
    float den = l * fac + exp2f(sink2 - mf);
    return den > 0.0f ? fac / den : 0.0f;
}
// Log-sum-exp in log2 units (ae_attn_args.lse) of a row with running max m (finite: the row saw
// a key) and sum l >= 1; sink2 = sink · log2(e) joins the denominator when has_sink.
__device__ __forceinline__ float attn_lse2(float m, float l, int has_sink, float sink2) {
    if (!has_sink) return m + log2f(l);
    const float mf = fmaxf(m, sink2);
    return mf + log2f(l * exp2f(m - mf) + exp2f(sink2 - mf));
}
// The exponent base of a running max: 0 stands in for −inf so that exp2(−inf − base) = 0 and no
// (−inf) − (−inf) NaN arises when every key seen so far is masked.
__device__ __forceinline__ float attn_base(float m) { return m == -INFINITY ? 0.0f : m; }

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
// The first 1024-byte boundary at or after p in shared memory (dynamic shared memory is only
// 16-byte aligned; the 128-byte swizzle of wgmma and TMA tiles needs 1024).
__device__ __forceinline__ uint32_t smem_base_1k(const void *p) { return (smem_u32(p) + 1023u) & ~1023u; }
// 16-byte global -> shared copy; zero-fills the destination when !ok (src is then not read).
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}
// 4 bytes (an fp32 value): zero-filled when !ok (src is then not read but must be a valid address).
__device__ __forceinline__ void cp_async4(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(ok ? 4 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ldmatrix .x4: lanes 8i..8i+7 give the row addresses (16 bytes each) of 8x8 matrix i; register
// i of every lane receives matrix i's elements (row lane/4, cols 2·(lane%4) + {0,1}) — with
// .trans, (rows 2·(lane%4) + {0,1}, col lane/4) of the matrix as stored.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

// D = A·B + D, m16n8k16, bf16 inputs, fp32 accumulate. With g = lane/4, c = 2·(lane%4):
//   A (16x16, row-major): a0 = A[g][c..c+1], a1 = A[g+8][c..c+1], a2 = A[g][c+8..c+9],
//                         a3 = A[g+8][c+8..c+9]   (lower column in the low 16 bits)
//   B (16x8, "col"):      b0 = B[c..c+1][g], b1 = B[c+8..c+9][g]
//   D (16x8 fp32):        d0, d1 = D[g][c..c+1], d2, d3 = D[g+8][c..c+1]
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two floats as a bf16x2 register (lo in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

#endif
