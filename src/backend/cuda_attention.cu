// Attention forward on CUDA (the `attention` op; semantics in ae_attn_args, backend/ops.h; the
// fp32 reference is backend/cpu_attention.c). q, k, v, out are BF16; sinks F32 or null.
//
// Three kernels and a dispatcher:
//   A. k_attn_ref (this file): the always-correct fallback for any dims, strides, alignment.
//      One block per query row (token t, head h); keys in tiles of 128: a warp per key computes
//      the fp32 dot product, the block keeps an online softmax (running max m, sum l) and an fp32
//      accumulator of dv values in shared memory, one column per thread.
//   B. k_attn_flash (cuda_attention_flash.cu): FlashAttention-2 on tensor cores (mma.sync bf16)
//      for (dk, dv) in {(32,32), (64,64), (128,128), (192,128)}: a block of 4 warps owns 64
//      (MW = 1) or 128 (MW = 2: prefill with >= 1024 packed rows, d = 128 and 192/128) query
//      rows of ONE kv head (GQA packing: rows are (token, head-in-group) pairs); K/V tiles are
//      staged in shared memory with cp.async (double buffered); the softmax stays in registers;
//      only key tiles some row can see are visited (O(T·W) work with a sliding window).
//   C. Split-KV: when a kernel would launch too few blocks to fill the GPU (decode, short query
//      chunks over long contexts), each block's key range is split over grid.z; blocks write
//      unnormalised partials (cuda_attention.h) and k_attn_combine (this file) merges them, adds
//      the sink and writes out. Used by all three kernels; results are deterministic. The split
//      count of T = 1 calls (decode) can be set for sweeps with AE_ATTN_DEC_SPLIT (see
//      attn_pick_splits); the last call's kernel and splits: ae_cuda_attn_last (backend/cuda.h).
//   D. k_attn_mla (cuda_attention_mla.cu): absorbed MLA decode (Hkv = 1, v = the first dv values
//      of k's rows, dk/dv = 576/512 or 288/256): rows are (token, head) pairs of the single
//      latent head (16, 32 or 64 rows per block); each K tile in shared memory also serves as V;
//      O is split over NC = 4 (or 2 for 64 rows) warps per 16 rows, each owning dv/NC columns
//      and computing S for BN/NC keys; row maxima and P are exchanged through shared memory.
//   E. k_attn_mla_dec (cuda_attention_mla.cu): absorbed MLA decode for T·Hq <= 64 (the default
//      there): 8 warps keep a quarter of Q's dims each in registers, compute partial S over
//      their dims for half of a 32-key tile, and meet in shared memory for the softmax; O is
//      split over the warps by columns. AE_CUDA_MLA_KERNEL=old forces D, =new64 takes E with
//      64-key tiles (for A/B runs).
//
// With ae_attn_args.lse (training forwards) A and B also write each row's log-sum-exp (log2
// units, attn_lse2) and run unsplit (C is not used), B through attn_flash_run_lse: exactly the
// out and lse2 the tensor-core backward (cuda_attention_bwd_tc.cu) recomputes when it is not
// given them; D and E (inference only) are not used then.
//
// B, D, E and F also compute attention_paged's prefill runs (cuda_paged.cu): the same launchers
// with attn_params.pages set, keys read through a sequence's block-table row (attn_key_off).
//
//   F. k_attn_wgmma (cuda_attention_wgmma.cu): Hopper (sm_90a) prefill for dk = dv = 128 and
//      dk = 192 / dv = 128 (MLA materialised), sliding windows and ring buffers too: B's
//      algorithm on wgmma.mma_async (2 warpgroups x 64 packed rows, 128-key tiles in
//      128-byte-swizzled shared memory, P kept in registers as the A operand of P·V); never
//      split over the keys. AE_ATTN_WGMMA=1 takes it for every shape it supports (=simple: its
//      unpipelined schedule), =0 never; unset: the default of attn_wgmma_run (long prefills,
//      T·G >= 4096, at d = 128 without a window; the later shapes once WGMMA_DEFAULT_EXT is on).
//   G. k_attn_decode (cuda_attention_decode.cu): decode and other calls of T·G <= 64 packed
//      rows without lse, dk = dv = 64 or 128: grid (Hkv · head groups, splits, T), every warp
//      computes (keys split over the warps, lanes over the head dim, 16-byte K/V row loads,
//      online softmax per row), and the split-KV combine folded into the same launch (the last
//      block of a (kv head, token) to take a ticket merges the splits in split order:
//      deterministic). AE_ATTN_DECODE=0 returns these calls to B (default: on,
//      DECODE_KERNEL_DEFAULT_ON, but for single-token calls of groups wider than 4 query heads
//      a kv head: B, with splits of >= 64 keys, measured faster there; =1: G for every width).
//
// Dispatcher (ae_cuda_attention): AE_CUDA_ATTN=ref forces A. Otherwise E or D when Hkv == 1,
// (dk, dv) is one of their instantiations, k and v are the same rows (k == v, k_stride == v_stride) and the
// addresses allow 16-byte copies; else (with the same checks as B) F when it takes the
// arguments (above); else G when it takes them (above); else B when (dk, dv) is a B instantiation, Hq % Hkv == 0 and
// q, k, v are 16-byte aligned with k_stride, v_stride multiples of 8 elements (out 4-byte
// aligned); else A. A kernel whose shared memory does not fit the device falls through to the
// next one.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"

// ---- split-KV plumbing ------------------------------------------------------------------------

static int host_lo(int pos, int window) {
    return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}

int attn_tile_keys(const attn_params *p, int rows_per_tile) {
    int nrows = p->T * p->G;
    int last = (nrows - 1) / rows_per_tile * rows_per_tile; // first packed row of the last tile
    int t_first = last / p->G;
    return p->pos0 + p->T - host_lo(p->pos0 + t_first, p->window);
}

// ---- decode's split choice (AE_ATTN_DEC_SPLIT) and the last call's plan ----------------------
// AE_ATTN_DEC_SPLIT, read at every T = 1 call (as AE_CUDA_ATTN is; a graph keeps the choice of
// its recording), for sweeping the split-KV choice of decode without a rebuild (bench_attn
// --decode sets it between runs): "N" (1..1024) a fixed split count (at most one split per key;
// 1 = unsplit), or "min_keys=N,per_sm=M" (either or both) in place of the kernel's own minimum
// keys per split and of the resident blocks per SM the heuristic fills (the occupancy). Unset:
// the heuristic as for any T. An unreadable value is reported once and ignored.
typedef struct {
    int fixed, min_keys, per_sm; // 0: not set
} dec_split_cfg;

static dec_split_cfg dec_split_get(void) {
    static int warned;
    dec_split_cfg c = {0, 0, 0};
    const char *env = getenv("AE_ATTN_DEC_SPLIT");
    if (!env || !*env) return c;
    char key[16];
    int v = 0, len = 0, ok = 1;
    if (sscanf(env, "%d%n", &v, &len) == 1 && env[len] == 0) {
        ok = v >= 1 && v <= 1024;
        if (ok) c.fixed = v;
    } else {
        for (const char *e = env; *e && ok;) {
            if (sscanf(e, "%15[a-z_]=%d%n", key, &v, &len) != 2 || v < 1) { ok = 0; break; }
            if (!strcmp(key, "min_keys")) c.min_keys = v;
            else if (!strcmp(key, "per_sm")) c.per_sm = v;
            else ok = 0;
            e += len;
            if (*e == ',') e++;
        }
    }
    if (!ok && !warned) {
        warned = 1;
        fprintf(stderr, "AE_ATTN_DEC_SPLIT: cannot read \"%s\" (want N in 1..1024, or "
                        "min_keys=N,per_sm=M; ignored)\n", env);
    }
    if (!ok) memset(&c, 0, sizeof c);
    return c;
}

// 1 while ae_cuda_attention dispatches a T = 1 call without lse (AE_ATTN_DEC_SPLIT applies). The
// backend's ops run on one host thread at a time, as its stream does.
static int g_attn_decode;

// What the last ae_cuda_attention call ran (ae_cuda_attn_last, backend/cuda.h).
static struct {
    const char *kernel;
    int splits, blocks, per_sm, keys, min_keys, picked; // picked: attn_pick_splits was asked
} g_attn_last;

int attn_pick_splits(const ae_backend *be, int blocks, int per_sm, int keys, int min_keys) {
    long s;
    if (g_attn_decode) {
        const dec_split_cfg c = dec_split_get();
        if (c.min_keys) min_keys = c.min_keys;
        if (c.per_sm) per_sm = c.per_sm;
        if (c.fixed) {
            s = c.fixed < keys ? c.fixed : keys; // empty splits would only add combine work
            goto done;
        }
    }
    {
        long want = (long)cu(be)->sm_count * (per_sm > 0 ? per_sm : 1);
        if (blocks >= want || keys < 2 * min_keys) {
            s = 1;
            goto done;
        }
        long cap = keys / min_keys;
        s = (want + blocks - 1) / blocks;
        if (s > cap) s = cap;
        if (s > 1024) s = 1024;
        if (s < 2) s = 1;
    }
done:
    if (s < 1) s = 1;
    g_attn_last.splits = (int)s, g_attn_last.blocks = blocks, g_attn_last.per_sm = per_sm;
    g_attn_last.keys = keys, g_attn_last.min_keys = min_keys, g_attn_last.picked = 1;
    return (int)s;
}

int attn_align_splits(int s, int keys, int align) {
    if (s <= 1 || align <= 1 || (g_attn_decode && dec_split_get().fixed)) return s;
    const long chunk = ((long)(keys + s - 1) / s + align - 1) / align * align;
    s = (int)((keys + chunk - 1) / chunk);
    g_attn_last.splits = s;
    return s;
}

const char *ae_cuda_attn_last(void) {
    static char buf[160];
    if (!g_attn_last.kernel) return "none";
    if (!g_attn_last.picked)
        snprintf(buf, sizeof buf, "%s, unsplit (the kernel's own launch)", g_attn_last.kernel);
    else
        snprintf(buf, sizeof buf, "%s, splits %d (blocks %d, per_sm %d, keys %d, min_keys %d)",
                 g_attn_last.kernel, g_attn_last.splits, g_attn_last.blocks, g_attn_last.per_sm,
                 g_attn_last.keys, g_attn_last.min_keys);
    return buf;
}

int attn_set_smem(const ae_backend *be, const void *kernel, size_t bytes) {
    if (bytes > cu(be)->smem_optin) return 0;
    if (bytes > 48 * 1024)
        cuda_check(be, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)bytes), "attention");
    return 1;
}

void *attn_partials_alloc(const ae_backend *be, attn_params *p) {
    size_t rows = (size_t)p->T * p->Hq * p->splits;
    size_t bytes = rows * (size_t)p->dv * sizeof(float) + 2 * rows * sizeof(float);
    float *buf = (float *)cuda_tmp_alloc(be, bytes, "attention");
    if (!buf) return NULL;
    p->opart = buf;
    p->mpart = buf + rows * (size_t)p->dv;
    p->lpart = p->mpart + rows;
    return buf;
}

// Block (output row, group of 128 columns), 16 warps: warp 0 first turns the splits' maxima and
// sums (and the sink) into per-split weights in shared memory; then warp w sums the weighted
// partials of splits w, w + 16, ... for the block's columns (lane: 4 consecutive columns, float4
// loads when dv % 4 == 0; batches of 8 splits are loaded before they are accumulated, so many
// loads are in flight), and the 16 warp sums are added in a fixed order (deterministic).
#define COMBINE_WARPS 16
#define COMBINE_COLS 128
#define COMBINE_BATCH 8
template <bool VEC> __global__ void __launch_bounds__(COMBINE_WARPS * 32) k_attn_combine(const attn_params p) {
    extern __shared__ float w[]; // splits weights
    __shared__ float s_inv;
    __shared__ float4 red[COMBINE_WARPS][COMBINE_COLS / 4];
    const int row = blockIdx.x, h = row % p.Hq, c0 = blockIdx.y * COMBINE_COLS;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t R = (size_t)p.T * p.Hq;
    if (warp == 0) {
        float mx = -INFINITY;
        for (int s = lane; s < p.splits; s += 32) mx = fmaxf(mx, p.mpart[s * R + row]);
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const int has_sink = p.sinks != nullptr;
        const float sink2 = has_sink ? p.sinks[h] * AE_ATTN_LOG2E : -INFINITY;
        const float base = attn_base(has_sink ? fmaxf(mx, sink2) : mx);
        float den = 0.0f;
        for (int s = lane; s < p.splits; s += 32) {
            float ws = exp2f(p.mpart[s * R + row] - base); // 0 for a split that saw no key
            w[s] = ws;
            den += ws * p.lpart[s * R + row];
        }
        for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
        if (has_sink) den += exp2f(sink2 - base);
        if (lane == 0) s_inv = den > 0.0f ? 1.0f / den : 0.0f;
    }
    __syncthreads();
    const int col = c0 + 4 * lane; // this lane's first column
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int s0 = warp; s0 < p.splits; s0 += COMBINE_WARPS * COMBINE_BATCH) {
        float4 x[COMBINE_BATCH];
        float ws[COMBINE_BATCH];
#pragma unroll
        for (int b = 0; b < COMBINE_BATCH; b++) {
            const int s = s0 + b * COMBINE_WARPS;
            x[b] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            ws[b] = 0.0f;
            if (s < p.splits) {
                const float *src = p.opart + (s * R + row) * p.dv + col;
                ws[b] = w[s];
                if (VEC) {
                    if (col < p.dv) x[b] = *reinterpret_cast<const float4 *>(src);
                } else {
                    if (col < p.dv) x[b].x = src[0];
                    if (col + 1 < p.dv) x[b].y = src[1];
                    if (col + 2 < p.dv) x[b].z = src[2];
                    if (col + 3 < p.dv) x[b].w = src[3];
                }
            }
        }
#pragma unroll
        for (int b = 0; b < COMBINE_BATCH; b++) {
            acc.x += ws[b] * x[b].x;
            acc.y += ws[b] * x[b].y;
            acc.z += ws[b] * x[b].z;
            acc.w += ws[b] * x[b].w;
        }
    }
    red[warp][lane] = acc;
    __syncthreads();
    const int c = threadIdx.x; // column c0 + c
    if (c < COMBINE_COLS && c0 + c < p.dv) {
        const float *r = reinterpret_cast<const float *>(&red[0][0]);
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < COMBINE_WARPS; k++) sum += r[k * COMBINE_COLS + c];
        p.out[(size_t)row * p.dv + c0 + c] = __float2bfloat16_rn(sum * s_inv);
    }
}

void attn_partials_finish(const ae_backend *be, const attn_params *p, void *buf) {
    dim3 grid((unsigned)((size_t)p->T * p->Hq), (unsigned)((p->dv + COMBINE_COLS - 1) / COMBINE_COLS));
    size_t smem = sizeof(float) * (size_t)p->splits;
    if (p->dv % 4 == 0)
        k_attn_combine<true><<<grid, COMBINE_WARPS * 32, smem, stream_of(be)>>>(*p);
    else
        k_attn_combine<false><<<grid, COMBINE_WARPS * 32, smem, stream_of(be)>>>(*p);
    cuda_check(be, cudaGetLastError(), "attention");
    cuda_tmp_free(be, buf);
}

// ---- A: reference kernel ----------------------------------------------------------------------

#define REF_THREADS 128
#define REF_TILE 128

// Block (row = t·Hq + h, split). Shared memory: q (dk floats), acc (dv floats), scores/weights
// of the tile (REF_TILE floats), storage rows of the tile's keys (REF_TILE ints).
__global__ void __launch_bounds__(REF_THREADS) k_attn_ref(const attn_params p, float *lse2) {
    extern __shared__ float sm[];
    float *qs = sm, *acc = qs + p.dk, *sc = acc + p.dv;
    int *ri = (int *)(sc + REF_TILE);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = REF_THREADS / 32;
    const int row = blockIdx.x, split = blockIdx.y;
    const int t = row / p.Hq, h = row % p.Hq, g = h / p.G;
    const int pos = p.pos0 + t;
    int lo = attn_lo(pos, p.window), hi = pos + 1;
    if (p.splits > 1) { // this split's share of the row's keys (possibly none)
        int chunk = (hi - lo + p.splits - 1) / p.splits;
        long b = (long)lo + (long)split * chunk;
        lo = b < hi ? (int)b : hi;
        if (hi - lo > chunk) hi = lo + chunk;
    }
    const bf16 *qr = p.q + (size_t)row * p.dk;
    for (int d = tid; d < p.dk; d += REF_THREADS) qs[d] = __bfloat162float(qr[d]);
    for (int d = tid; d < p.dv; d += REF_THREADS) acc[d] = 0.0f;
    const bf16 *kh = p.k + (size_t)g * p.dk, *vh = p.v + (size_t)g * p.dv;
    float m = -INFINITY, l = 0.0f;
    for (int j0 = lo; j0 < hi; j0 += REF_TILE) {
        const int n = hi - j0 < REF_TILE ? hi - j0 : REF_TILE;
        for (int jj = tid; jj < n; jj += REF_THREADS) ri[jj] = (int)attn_row(j0 + jj, p.ring);
        __syncthreads(); // ri (and, the first time, qs) ready
        for (int jj = warp; jj < n; jj += nwarps) {
            const bf16 *kr = kh + (size_t)ri[jj] * p.k_stride;
            float s = 0.0f;
            for (int d = lane; d < p.dk; d += 32) s += qs[d] * __bfloat162float(kr[d]);
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0) sc[jj] = s * p.scale_log2;
        }
        __syncthreads();
        float tmax = -INFINITY;
        for (int jj = 0; jj < n; jj++) tmax = fmaxf(tmax, sc[jj]);
        const float mn = fmaxf(m, tmax), base = attn_base(mn);
        const float alpha = exp2f(m - base);
        __syncthreads(); // every thread has read the scores before they become weights
        for (int jj = tid; jj < n; jj += REF_THREADS) sc[jj] = exp2f(sc[jj] - base);
        __syncthreads();
        float ps = 0.0f;
        for (int jj = 0; jj < n; jj++) ps += sc[jj];
        l = l * alpha + ps;
        m = mn;
        for (int d = tid; d < p.dv; d += REF_THREADS) {
            float a = acc[d] * alpha;
            for (int jj = 0; jj < n; jj++)
                a += sc[jj] * __bfloat162float(vh[(size_t)ri[jj] * p.v_stride + d]);
            acc[d] = a;
        }
        __syncthreads(); // sc and ri are rewritten by the next tile
    }
    if (p.splits > 1) {
        const size_t pr = (size_t)split * p.T * p.Hq + row;
        for (int d = tid; d < p.dv; d += REF_THREADS) p.opart[pr * p.dv + d] = acc[d];
        if (tid == 0) {
            p.mpart[pr] = m;
            p.lpart[pr] = l;
        }
    } else {
        const int has_sink = p.sinks != nullptr;
        const float sink2 = has_sink ? p.sinks[h] * AE_ATTN_LOG2E : 0.0f;
        const float f = attn_out_scale(m, l, has_sink, sink2);
        bf16 *o = p.out + (size_t)row * p.dv;
        for (int d = tid; d < p.dv; d += REF_THREADS) o[d] = __float2bfloat16_rn(acc[d] * f);
        if (lse2 && tid == 0) lse2[row] = attn_lse2(m, l, has_sink, sink2); // m finite: own key
    }
}

// lse2 non-null: also the rows' log-sum-exp (then unsplit).
static void attn_ref_run(const ae_backend *be, attn_params *p, float *lse2) {
    size_t smem = sizeof(float) * ((size_t)p->dk + p->dv + REF_TILE) + sizeof(int) * REF_TILE;
    if (!attn_set_smem(be, (const void *)k_attn_ref, smem)) {
        cuda_check(be, cudaErrorInvalidValue, "attention (head dims too large for shared memory)");
        return;
    }
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_attn_ref, REF_THREADS, smem) !=
        cudaSuccess) {
        cudaGetLastError();
        per_sm = 1;
    }
    int rows = p->T * p->Hq;
    p->splits = lse2 ? 1 : attn_pick_splits(be, rows, per_sm, attn_tile_keys(p, 1), 256);
    void *buf = NULL;
    if (p->splits > 1 && !(buf = attn_partials_alloc(be, p))) return;
    dim3 grid((unsigned)rows, (unsigned)p->splits);
    k_attn_ref<<<grid, REF_THREADS, smem, stream_of(be)>>>(*p, lse2);
    cuda_check(be, cudaGetLastError(), "attention");
    if (buf) attn_partials_finish(be, p, buf);
}

// ---- dispatcher ---------------------------------------------------------------------------------

void attn_params_init(attn_params *p, const ae_attn_args *a, ae_ptr out, ae_ptr q, ae_ptr k, ae_ptr v) {
    memset(p, 0, sizeof *p);
    p->q = (const bf16 *)q.data;
    p->k = (const bf16 *)k.data;
    p->v = (const bf16 *)v.data;
    p->out = (bf16 *)out.data;
    p->sinks = (const float *)a->sinks.data;
    p->T = a->T;
    p->pos0 = a->pos0;
    p->Hq = a->Hq;
    p->Hkv = a->Hkv;
    p->G = a->Hq / a->Hkv;
    p->dk = a->dk;
    p->dv = a->dv;
    p->k_stride = a->k_stride;
    p->v_stride = a->v_stride;
    p->window = a->window;
    p->ring = a->ring;
    p->scale_log2 = a->scale * AE_ATTN_LOG2E;
    p->splits = 1;
}

static int aligned(const void *ptr, uintptr_t n) { return ((uintptr_t)ptr & (n - 1)) == 0; }

// ran != 0: the call was `kernel`'s (recorded for ae_cuda_attn_last); the decode flag ends.
static int attn_note_run(const ae_backend *be, const char *kernel, int ran) {
    (void)be;
    if (ran) g_attn_last.kernel = kernel, g_attn_decode = 0;
    else g_attn_last.picked = 0; // a kernel that declined may have asked for splits
    return ran;
}

void ae_cuda_attention(const ae_backend *be, const ae_attn_args *a, ae_ptr out, ae_ptr q, ae_ptr k,
                       ae_ptr v) {
    if (cuda_failed(be)) return;
    cuda_need(out, AE_M_BF16, "attention", "out");
    cuda_need(q, AE_M_BF16, "attention", "q");
    cuda_need(k, AE_M_BF16, "attention", "k");
    cuda_need(v, AE_M_BF16, "attention", "v");
    cuda_need(a->sinks, AE_M_F32, "attention", "sinks");
    cuda_need(a->lse, AE_M_F32, "attention", "lse");
    if (a->T <= 0 || a->Hq <= 0 || a->Hkv <= 0) return;
    float *lse2 = (float *)a->lse.data; // the rows' log-sum-exp (training), or null

    attn_params p;
    attn_params_init(&p, a, out, q, k, v);
    memset(&g_attn_last, 0, sizeof g_attn_last);
    g_attn_decode = a->T == 1 && !lse2;

    const char *env = getenv("AE_CUDA_ATTN");
    int force_ref = env && strcmp(env, "ref") == 0;
    if (!force_ref && a->Hq % a->Hkv == 0 && aligned(q.data, 16) && aligned(k.data, 16) &&
        aligned(v.data, 16) && aligned(out.data, 4) && a->k_stride % 8 == 0 &&
        a->v_stride % 8 == 0) {
        if (!lse2 && a->Hkv == 1 && k.data == v.data && a->k_stride == a->v_stride &&
            attn_mla_has(a->dk, a->dv) && attn_note_run(be, "mla (D/E)", attn_mla_run(be, &p)))
            return;
        if (attn_note_run(be, "wgmma (F)", attn_wgmma_run(be, &p, lse2))) return;
        if (attn_note_run(be, "decode", attn_decode_run(be, &p, lse2))) return;
        if (attn_flash_has(a->dk, a->dv) &&
            attn_note_run(be, "flash (B)", attn_flash_run_lse(be, &p, lse2)))
            return;
    }
    attn_ref_run(be, &p, lse2);
    attn_note_run(be, "ref (A)", 1);
}
