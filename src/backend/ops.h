// The op interface: the one seam between model code and the hardware. Model, eval and infer code
// is written once against this table; a backend (cpu: the fp32 reference, backend/cpu*.c; cuda:
// bf16 on NVIDIA GPUs, backend/cuda*.cu) supplies it and owns the memory the ops work on.
//
// Memory. Tensors live in backend memory (host memory on cpu, device memory on cuda) and are
// passed as typed pointers (ae_ptr: address + dtype). Shapes are explicit arguments, row-major,
// and noted as (rows, cols) below. `alloc` returns memory whose contents are undefined (the cpu
// backend happens to zero it; code that must run on every backend writes before it reads);
// `upload`/`download` move data between host arrays and backend memory, converting dtypes.
//
// Dtypes. Each backend names its activation dtype (act: cpu F32, cuda BF16) and weight dtype
// (wt: cpu F32, cuda BF16). Model code allocates activations and KV caches as `act`, the residual
// stream, logits and loss outputs as F32, ids/positions/indices as I32. An op argument noted
// "float" accepts F32 or BF16 (on cpu: F32), "act" the activation dtype, "wt" the weight dtype.
// Arithmetic, accumulation, norms, softmax and losses are fp32 (cpu: fp32, reductions that decide
// parity in double). A backend given a dtype combination it does not implement aborts with a
// message naming the op: that is a bug in the caller, never a consequence of input.
//
// Errors. Ops are asynchronous on cuda. A failure inside one (a CUDA error) is kept by the
// backend; later ops do nothing, and the next `sync` or `download` returns AE_ERR_DEVICE with
// the message. Out-of-memory on `alloc` returns a null pointer and sets the message.
//
// Backward ops ACCUMULATE into parameter gradients and into input gradients marked "+=" (shared
// inputs such as a grouped KV head receive gradient from several consumers); "=" outputs are
// overwritten. Each backward is checked against finite differences of its forward
// (tests/test_grad_ops.c). Aliasing: attention_bwd accepts dk == dv (MLA's absorbed layout);
// gate_mul_bwd and silu_mul_bwd accept dx == dy; no other backward output may alias an input.
// Backends without training support leave the backward slots NULL.
#ifndef AE_BACKEND_OPS_H
#define AE_BACKEND_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

// A typed pointer into backend memory. A null pointer (data == NULL) means "absent".
typedef struct {
    void *data;
    ae_dtype dtype;
} ae_ptr;

static inline ae_ptr ae_ptr_make(void *data, ae_dtype dt) {
    ae_ptr p;
    p.data = data;
    p.dtype = dt;
    return p;
}
static inline ae_ptr ae_ptr_null(void) { return ae_ptr_make(NULL, AE_DT_F32); }
static inline int ae_ptr_is_null(ae_ptr p) { return p.data == NULL; }
// The pointer advanced by i elements.
static inline ae_ptr ae_ptr_at(ae_ptr p, size_t i) {
    if (p.data) p.data = (char *)p.data + i * ae_dtype_size(p.dtype);
    return p;
}
// Host float array as an F32 pointer, and back: valid only on backends with host memory (cpu).
// Code that uses these checks be->host_memory first or runs on the cpu backend only (tests).
static inline ae_ptr ae_host_f32(const float *p) { return ae_ptr_make((void *)p, AE_DT_F32); }
static inline ae_ptr ae_host_i32(const int32_t *p) { return ae_ptr_make((void *)p, AE_DT_I32); }
float *ae_f32(ae_ptr p); // aborts unless p is F32 (a bug in the caller otherwise)

typedef struct ae_backend ae_backend;

// The counter-based normal deviate of fill_normal: x = splitmix64(seed + (i + 1)·φ64), two
// 24-bit uniforms u1 = (x >> 40 + ½)/2²⁴, u2 = ((x >> 16) & 0xffffff + ½)/2²⁴, Box-Muller:
// z = sqrt(−2 ln u1)·cos(2π u2). Written once here so both backends compute the same function.
#define AE_NORMAL_AT_BODY(seed, i, out)                                                    \
    do {                                                                                   \
        uint64_t x_ = (seed) + ((uint64_t)(i) + 1u) * 0x9E3779B97F4A7C15ull;               \
        x_ = (x_ ^ (x_ >> 30)) * 0xBF58476D1CE4E5B9ull;                                    \
        x_ = (x_ ^ (x_ >> 27)) * 0x94D049BB133111EBull;                                    \
        x_ ^= x_ >> 31;                                                                    \
        float u1_ = ((float)(x_ >> 40) + 0.5f) * (1.0f / 16777216.0f);                     \
        float u2_ = ((float)((x_ >> 16) & 0xffffffu) + 0.5f) * (1.0f / 16777216.0f);       \
        (out) = sqrtf(-2.0f * logf(u1_)) * cosf(6.28318530717958647692f * u2_);            \
    } while (0)

typedef enum {
    AE_ROPE_HALF = 0,        // Qwen/Llama: pairs (i, i + rd/2)
    AE_ROPE_INTERLEAVED = 1, // DeepSeek (rope_interleave): pairs (2i, 2i + 1)
} ae_rope_mode;

// Shape of one causal attention call: T queries at positions pos0..pos0+T-1 over the keys of
// positions 0..pos0+T-1. Query head h reads kv head h / (Hq / Hkv).
//   q:   (T, Hq, dk)                    out: (T, Hq, dv)       (act)
//   k:   key of position j, head g at k + row(j) * k_stride + g * dk     (dk values, act)
//   v:   value of position j, head g at v + row(j) * v_stride + g * dv   (dv values, act)
//   row(j) = j, or j % ring when ring > 0 (ring buffer of `ring` slots: then only the last
//   `ring` positions are available: window must be in 1..ring and T + window - 1 <= ring, so
//   that every key a query needs is still stored)
//   window > 0: query at position p sees keys p-window+1 .. p (itself and the window-1 before)
//   sinks (Hq, F32) or null: per-head learned logit joining the softmax with no value (gpt-oss):
//   p_j = exp(s_j) / (exp(sink_h) + sum_i exp(s_i))
// k and v may point into the same rows (MLA's absorbed form: v is the first dv values of k).
//   lse (T·Hq, F32, row t·Hq + h) or null: each query row's log-sum-exp in log2 units,
//   lse = log2(Σ_j 2^(s_j·log2 e) [+ 2^(sink_h·log2 e)]) = log2(e)·ln Z with s_j = scale·q·k_j
//   and Z the softmax denominator (sink included), so that p_j = 2^(s_j·log2 e − lse): the unit
//   the CUDA kernels work in. `attention` writes it when non-null (training forwards keep it);
//   `attention_bwd` reads it, together with the forward's `out`, instead of recomputing them.
// dkv_set (attention_bwd only): 0, dk and dv are added into; 1, they are set: the key and value
//   parts of every storage row (positions 0..pos0+T-1, or the ring's slots) are written, as if
//   zeroed first (keys no query sees get 0), and nothing else of dk, dv is touched. Saves the
//   caller a zero fill, and the kernels the loads of the old values.
typedef struct {
    int T, pos0, Hq, Hkv, dk, dv;
    int k_stride, v_stride;
    int window, ring;
    float scale;
    ae_ptr sinks;
    ae_ptr lse;
    int dkv_set;
} ae_attn_args;

// Attention over a paged KV cache (serving): the keys and values of many sequences live in
// fixed-size pages of one pool; each sequence's row of the block table lists its pages in
// position order. Position j of sequence s is row j % page_size of page
// table[s·max_blocks + j / page_size]:
//   key of (s, j), kv head g:   k + page·page_stride + (j % page_size)·k_stride + g·dk   (act)
//   value of (s, j), kv head g: v + page·page_stride + (j % page_size)·v_stride + g·dv   (act)
// k and v may be the same rows (absorbed MLA: v is the first dv values of k's rows).
// N query rows of any sequences in any order: row r belongs to sequence seq[r] at position
// pos[r] and sees that sequence's keys lo..pos[r], lo = max(0, pos[r] − window + 1) when
// window > 0, else 0; every block holding a visible key must name a page (>= 0; blocks wholly
// before lo may be −1: pages a sliding layer gave back). Query head h reads kv head h/(Hq/Hkv);
// sinks as in ae_attn_args. With the keys in one contiguous run this computes exactly what
// `attention` computes for the same rows (on cpu: bit for bit).
//   q: (N, Hq, dk)  out: (N, Hq, dv)  act;  seq, pos: (N) I32;  block_table: (n_seq, max_blocks) I32
// Runs (optional; host memory, so a backend can plan its launches without reading seq and pos
// back from the device): runs[0..n_runs) each name query rows that are consecutive positions of
// one sequence: rows first .. first + n − 1 with seq[r] == seq and pos[r] == pos0 + (r − first).
// Runs are listed in increasing row order and do not overlap (first >= the previous run's
// first + n, n >= 1, first + n <= N); rows outside every run are computed too. The result is
// the same with or without runs up to rounding (cuda computes long runs, prefill chunks, on
// tensor cores and the other rows with its decode kernel; cpu ignores them after checking that
// they agree with seq and pos: an internal error aborts).
typedef struct {
    int first, n; // query rows first .. first + n − 1
    int seq;      // their sequence: row `seq` of block_table
    int pos0;     // position of row `first`
} ae_paged_run;

typedef struct {
    int N, Hq, Hkv, dk, dv;
    int page_size, max_blocks;
    int64_t page_stride;
    int k_stride, v_stride;
    int window;
    float scale;
    ae_ptr sinks;
    ae_ptr seq, pos, block_table;
    int n_runs;               // 0: no description
    const ae_paged_run *runs; // (n_runs) host, or null
} ae_paged_attn_args;

// One or several independent matrix products, row-major, strides in elements:
//   y (M, N) = alpha · op(a) · op(b) + beta · y
//   op(a) (M, K) = a (M, K), row stride lda;  or aᵀ when trans_a (a is (K, M), row stride lda)
//   op(b) (K, N) = b (K, N), row stride ldb;  or bᵀ when trans_b (b is (N, K): PyTorch's Linear
//                  weight layout, row stride ldb)
//   product i of `batch` uses a + i·sa, b + i·sb, y + i·sy.
// beta == 0 overwrites y without reading it. a, b: float (cuda: BF16); y: act or F32.
typedef struct {
    int M, N, K, batch;
    int trans_a, trans_b;
    int64_t lda, ldb, ldy, sa, sb, sy;
    float alpha, beta;
} ae_gemm_args;

// Qwen3's per-head q/k RMSNorm followed by RoPE, for q and k together (qk_norm_rope): head row
// h of token t, at q + t·ldq + h·hd (h < Hq) and at k + t·ldk + g·hd (g < Hkv), hd values each.
// ldq, ldk are separate because k may be written straight into cache rows.
typedef struct {
    int M, Hq, Hkv, hd; // tokens, q heads, k heads, head dim
    int rd;             // rotated dims of each head (even, <= hd)
    int64_t ldq, ldk;   // elements between the rows of consecutive tokens
    float eps;
    double theta;
    ae_rope_mode mode;
} ae_qk_norm_rope_args;

// Absorbed-MLA decode preparation (mla_decode_prep): T new tokens of one MLA layer, H heads,
// latent width R, rope dims dr (even), q head rows of dn + dr values ([q_nope | q_rope]).
typedef struct {
    int T, H, R, dr, dn;
    int64_t ldkv;       // elements between the kv rows of consecutive tokens (>= R + dr)
    float eps;          // kv_a_layernorm epsilon
    double theta;       // rope base
    ae_rope_mode mode;  // AE_ROPE_INTERLEAVED for DeepSeek MLA
} ae_mla_prep_args;

// The scalars of one AdamW step (ae_backend.adamw); bc1 = 1 − β1^step, bc2 = 1 − β2^step.
typedef struct ae_adamw_args {
    float lr, beta1, beta2, eps, weight_decay, bc1, bc2, gscale;
} ae_adamw_args;

// Most products one matmul_group call takes.
#define AE_MATMUL_GROUP_MAX 4

// A backend's recording of a sequence of ops (the graph_* slots of ae_backend), and what it did.
typedef struct ae_graph ae_graph;
// A point in a backend's queue of work (backend/ops.h, "concurrency").
typedef struct ae_event ae_event;

// One row's sampling parameters for sample_rows (16 bytes: 4 I32 words in backend memory).
// The rule, over probs = softmax(z / temperature): order the ids by probability descending,
// ties by the lower id; keep the first top_k (0 = all); of those keep the shortest prefix whose
// cumulative sum reaches top_p; r = u · (the kept mass); the id is the first of the order whose
// running sum exceeds r, else the last kept. The caller draws u (infer/sample.h: one draw of the
// request's generator per sampled token), so a request's ids are a function of its seed.
typedef struct {
    float temperature; // > 0; 0: argmax (the other fields are ignored)
    float top_p;       // (0, 1]
    int32_t top_k;     // >= 0; 0 = all
    float u;           // [0, 1)
} ae_sample_param;

// Scratch of ae_sample_row: one (probability, id) pair per vocabulary entry.
typedef struct {
    float p;
    int32_t id;
} ae_sample_pair;

// The rule above on one host row z (V), by a sort of the whole vocabulary: the reference that
// the cpu backend's sample_rows runs per row and ae_sampler_next calls (backend/cpu_sample.c).
// scratch: (V) pairs. Returns the id.
int ae_sample_row(const float *z, int V, const ae_sample_param *p, ae_sample_pair *scratch);
enum { AE_GRAPH_RAN = 0, AE_GRAPH_RETRY = 1, AE_GRAPH_FAILED = 2 };
typedef struct {
    long requests;       // graph_begin calls
    long ran;            // recordings that ran to the end (AE_GRAPH_RAN)
    long segments;       // segments launched
    long updated;        // segments launched by updating the previous recording's graph
    long instantiated;   // segments that needed a new executable graph (topology changed)
    long retries;        // AE_GRAPH_RETRY: the recording's workspace grew
    long failed;         // AE_GRAPH_FAILED with the recording at fault (0 or 1: then disabled)
} ae_graph_stats;

struct ae_backend {
    const char *name;      // "cpu", "cuda:0"
    const char *device;    // human-readable device, e.g. "NVIDIA H200 (139.8 GiB)"
    int host_memory;       // 1: backend memory is host memory (ae_f32 / ae_host_f32 apply)
    ae_dtype act_dtype;    // activations, KV caches
    ae_dtype weight_dtype; // model weights
    void *ctx;             // backend state

    // ---- memory ----
    // n elements of dtype dt; null pointer (message set) when out of memory.
    ae_ptr (*alloc)(const ae_backend *be, size_t n, ae_dtype dt);
    void (*free)(const ae_backend *be, ae_ptr p); // null is a no-op
    // dst (n elements) = src (n elements of src_dt on the host): F32/F16/BF16 source into a
    // float dst (converted, round to nearest even), or I32 into I32.
    ae_status (*upload)(const ae_backend *be, ae_ptr dst, const void *src, ae_dtype src_dt,
                        size_t n);
    // dst (n elements of dst_dt on the host: F32 for float sources, I32 for I32) = src. Waits for
    // the work queued before it; returns a kept device error, if any.
    ae_status (*download)(const ae_backend *be, void *dst, ae_dtype dst_dt, ae_ptr src, size_t n);
    // Waits for all queued work; returns a kept device error, if any.
    ae_status (*sync)(const ae_backend *be);
    // Strided row copy, converting between float dtypes: row r of dst (cols elements at
    // dst + r·ldd) = row r of src (at src + r·lds). dst and src must not overlap.
    void (*copy_rows)(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                      int rows, int cols);
    // copy_rows with every source row repeated: row i·rep + j of dst (at dst + (i·rep + j)·ldd)
    // = row i of src (at src + i·lds) for i < rows, j < rep; dtypes and overlap as copy_rows.
    // One call broadcasts a shared row into every head (MLA's rope key into H heads' K columns:
    // dst = K + dn, ldd = dn + dr, rep = H) where copy_rows would take one call per head.
    void (*copy_rows_rep)(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                          int rows, int rep, int cols);
    // The adjoint of copy_rows_rep: row i of dst (cols values at dst + i·ldd) = the sum of src
    // rows i·rep .. i·rep + rep − 1 (at src + (i·rep + j)·lds), added in fp32 in the order
    // j = 0, 1, .. and written over dst in its dtype. Float dtypes (cpu: F32); dst and src must not
    // overlap. MLA's backward sums the H heads' rope-key gradients into the shared key's this way.
    void (*sum_rows_rep)(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                         int rows, int rep, int cols);
    // dst[i] = value for i < n (float or I32 dst).
    void (*fill)(const ae_backend *be, ae_ptr dst, size_t n, float value);
    // dst[i] = std · z_i, z_i ~ N(0, 1) drawn from (seed, i) alone by a counter-based generator
    // (ae_normal_at below): the same values on every backend and in any order, up to the last
    // bit of each libm's logf/cosf. For random weights (benchmarks), not for training.
    void (*fill_normal)(const ae_backend *be, ae_ptr dst, size_t n, float std, uint64_t seed);
    // Free and total device memory in bytes; NULL where not tracked (cpu).
    void (*mem_info)(const ae_backend *be, size_t *free_bytes, size_t *total_bytes);

    // ---- forward ----
    void (*gemm)(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a, ae_ptr b);
    // n (1..AE_MATMUL_GROUP_MAX) Linear products of one input: y[i] (M, N[i]) = x (M, K) ·
    // w[i] (N[i], K)ᵀ, all packed: what n ae_matmul calls compute (cpu: exactly those), in one
    // launch where the backend can (cuda: the decode GEMV, M <= 8). x, w[i] as gemm's a, b; y[i]
    // act or F32, all of one dtype, overlapping neither x nor each other.
    void (*matmul_group)(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                         const int *N, int M, int K);
    // A dense MLP's SwiGLU input: act (M, N) = silu(g) ⊙ u with g = x·wgᵀ and u = x·wuᵀ, each
    // product rounded to g's dtype first: exactly matmul_group({g, u}, x, {wg, wu}) followed by
    // silu_mul(act, g, u), bit for bit (cpu: those two ops; cuda: for M <= 8 one GEMV launch whose
    // epilogue does silu_mul's arithmetic, saving a launch per layer at decode; else those ops).
    //   x: (M, K) as matmul_group's;  wg, wu: (N, K) wt;  act, g, u: (M, N) act, g and u scratch
    //   whose contents are undefined afterwards (the two-op path writes the products there);
    //   act may alias g or u. May be NULL: ae_gate_up_silu then runs the two ops.
    void (*gate_up_silu)(const ae_backend *be, ae_ptr act, ae_ptr g, ae_ptr u, ae_ptr x,
                         ae_ptr wg, ae_ptr wu, int M, int K, int N);
    // y[i] = x[i] / sqrt(mean(x[i]²) + eps) ⊙ w for M rows of D values at row stride ld (x, y
    // float; w wt (D)); y may alias x.
    void (*rmsnorm)(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int D, int64_t ld,
                    float eps);
    // Fused residual add + norm: xo = x + dx; y = rmsnorm(xo) ⊙ w.   x, xo: (M, D) F32 (the
    // residual stream; xo may be x: in place), dx: (M, D) float, y: (M, D) act, w: wt (D).
    void (*add_rmsnorm)(const ae_backend *be, ae_ptr xo, ae_ptr x, ae_ptr dx, ae_ptr y, ae_ptr w,
                        int M, int D, float eps);
    // In-place rotary embedding of rd dims per head: the vector of head h of token t starts at
    // x + (t·H + h)·stride; pair i (i < rd/2) rotates by angle pos[t] · theta^(-2i/rd).
    // x: (T, H, stride) act, rd <= stride, rd even.  pos: (T) I32
    void (*rope)(const ae_backend *be, ae_ptr x, ae_ptr pos, int T, int H, int stride, int rd,
                 double theta, ae_rope_mode mode);
    // In place, every head row of q (normed with wq) and of k (normed with wk) becomes
    // rope(rmsnorm(row) ⊙ w) at position pos[t] (see ae_qk_norm_rope_args): exactly `rmsnorm`
    // of the rows then `rope` of them (cpu: bit for bit; cuda: in one launch, keeping the normed
    // values in fp32 where the two ops round them to act in between). q or k may be null (its
    // rows are skipped).   q, k: act;  wq, wk: wt (hd);  pos: (M) I32
    void (*qk_norm_rope)(const ae_backend *be, const ae_qk_norm_rope_args *a, ae_ptr q, ae_ptr k,
                         ae_ptr wq, ae_ptr wk, ae_ptr pos);
    // Absorbed-MLA decode preparation in one call (see ae_mla_prep_args): exactly what these
    // compute in turn (cpu: those ops, bit for bit; cuda: one launch):
    //   rmsnorm(kv[t, 0:R]) ⊙ w                      in place: the latent c of the cache row
    //   rope(kv[t, R:R+dr]) at pos[t]                 in place: the shared rope key
    //   qt[t, h, R:R+dr] = rope(q[t, h, dn:dn+dr]) at pos[t]   (q is not modified)
    // qt's first R values of each row are neither read nor written (the q-absorb product's).
    //   kv: (T, ldkv) act (the new cache rows);  q: (T, H, dn + dr) act;  qt: (T, H, R + dr) act;
    //   w: wt (R);  pos: (T) I32.  qt overlaps neither q nor kv. May be NULL: callers then use
    //   rmsnorm, rope and copy_rows.
    void (*mla_decode_prep)(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                            ae_ptr qt, ae_ptr w, ae_ptr pos);
    // mla_decode_prep and the query absorption in one call (cuda: one launch for decode-sized
    // T <= 8): the prep's three parts, and for every token t and head h
    //   qt[t, h, 0:R] = q[t, h, 0:dn] · Wuk_h      (zeros when dn = 0)
    // with Wuk_h (dn, R) at wuk + h·sw (the key rows of head h of kv_b_proj: sw = (dn + dv)·R).
    //   wuk: wt.  Other arguments as mla_decode_prep. May be NULL: callers then use
    //   mla_decode_prep (or its ops) and a batched gemm.
    void (*mla_decode_absorb)(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                              ae_ptr qt, ae_ptr w, ae_ptr wuk, int64_t sw, ae_ptr pos);
    // The absorbed-MLA attention and the value absorption in one call (cuda: for T·Hq <= 64, the
    // decode attention kernel's split partials merged and multiplied by Wuv in one launch after
    // it): o[t, h, :] = Wuv_h · ctx[t, h, :], ctx = `attention`(a, q, kv, kv) (a->dv = R, one kv
    // head, no sinks, no lse), Wuv_h (dvo, R) at wuv + h·sw (the value rows of head h).
    //   o: (T, Hq, dvo) act;  q: (T, Hq, a->dk) act;  kv: the latent cache rows;  wuv: wt.
    //   ctx is not rounded to act between the two products on cuda (it is on cpu: the reference
    //   is attention then gemm). May be NULL: callers then use attention and a batched gemm.
    void (*mla_decode_attend)(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr q,
                              ae_ptr kv, ae_ptr wuv, int64_t sw, int dvo);
    // out = softmax(q·kᵀ·scale + mask [+ sink]) · v      (see ae_attn_args); also the rows'
    // log-sum-exp into a->lse when it is non-null (cuda: then never split over the keys, so that
    // out is exactly what attention_bwd would recompute)
    void (*attention)(const ae_backend *be, const ae_attn_args *a, ae_ptr out, ae_ptr q, ae_ptr k,
                      ae_ptr v);
    // y = x ⊙ sigmoid(g). x, y: (T, H, hd) act; g: (T, H, hd) elementwise, or (T, H) one per head
    // when per_head (act). y may alias x.
    void (*gate_mul)(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr g, int T, int H, int hd,
                     int per_head);
    // y = silu(g) ⊙ u     all (n) act; y may alias g or u
    void (*silu_mul)(const ae_backend *be, ae_ptr y, ae_ptr g, ae_ptr u, size_t n);
    // y = a + b    (n) float each; y may be a or b (in place: y += x is add(y, y, x))
    void (*add)(const ae_backend *be, ae_ptr y, ae_ptr a, ae_ptr b, size_t n);
    // y[t] = table[ids[t]]   y: (T, D) float;  table: (V, D) wt;  ids: (T) I32, each in [0, V)
    void (*embed)(const ae_backend *be, ae_ptr y, ae_ptr table, ae_ptr ids, int T, int D);
    // MoE routing of T tokens: probabilities = softmax(logits) over E experts; idx = the K most
    // probable (descending; ties -> lower index); wts their probabilities, renormalised to sum 1
    // when renorm; probs (may be null: inference) = the probabilities themselves (training).
    //   logits, probs: (T, E) F32;  idx: (T, K) I32;  wts: (T, K) F32
    void (*moe_route)(const ae_backend *be, ae_ptr idx, ae_ptr wts, ae_ptr probs, ae_ptr logits,
                      int T, int E, int K, int renorm);
    // MoE experts: y[t] = Σ_k wts[t,k] · down_e(silu(gate_e·x[t]) ⊙ up_e·x[t]), e = idx[t,k].
    // x, y: (T, D) act;  w_gate, w_up: (E, Im, D) wt;  w_down: (E, D, Im) wt;  idx, wts as routed.
    void (*moe_ffn)(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr idx, ae_ptr wts,
                    ae_ptr w_gate, ae_ptr w_up, ae_ptr w_down, int T, int D, int Im, int E, int K);

    // ---- paged KV cache (serving; see ae_paged_attn_args) ----
    // out = attention of the N query rows over their sequences' paged keys and values.
    void (*attention_paged)(const ae_backend *be, const ae_paged_attn_args *a, ae_ptr out,
                            ae_ptr q, ae_ptr k, ae_ptr v);
    // Scatter of N rows into page slots: row r of src (cols values at src + r·lds, act) goes to
    // dst + (slot[r] / page_size)·page_stride + (slot[r] % page_size)·ldd (act); rows with
    // slot[r] < 0 are skipped. slot: (N) I32 (slot = page·page_size + row in page).
    void (*paged_store)(const ae_backend *be, ae_ptr dst, int64_t page_stride, int page_size,
                        int64_t ldd, ae_ptr src, int64_t lds, ae_ptr slot, int N, int cols);
    // Gather of positions 0..n−1 of one sequence out of its pages: row j of dst (cols values at
    // dst + j·ldd, act) = the cols values at src + table[j / page_size]·page_stride +
    // (j % page_size)·lds (act). table: the sequence's row of a block table, at least
    // ceil(n / page_size) I32 entries, each naming a page (>= 0).
    void (*paged_gather)(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                         int64_t page_stride, int page_size, int64_t lds, ae_ptr table, int n,
                         int cols);

    // ---- scores of logit rows (evaluation, sampling) ----
    // out[t] = -log softmax(z[t])[target[t]]   z: (T, V) float;  target: (T) I32;  out: (T) F32
    void (*nll_rows)(const ae_backend *be, ae_ptr out, ae_ptr z, ae_ptr target, int T, int V);
    // out[t] = KL(softmax(zt[t]) ‖ softmax(zs[t])) (>= 0)   zt, zs: (T, V) float;  out: (T) F32
    void (*kl_rows)(const ae_backend *be, ae_ptr out, ae_ptr zt, ae_ptr zs, int T, int V);
    // out[t] = argmax_v z[t, v] (ties -> lowest v)   z: (T, V) float;  out: (T) I32
    void (*argmax_rows)(const ae_backend *be, ae_ptr out, ae_ptr z, int T, int V);
    // ids[i] = a token drawn from row i of z by the sampling rule (ae_sample_param, below) with
    // the row's own temperature, top_k, top_p and uniform u; a row of temperature 0 takes the
    // first index of its maximum (argmax_rows). Deterministic: the same inputs give the same
    // ids on every run.   ids: (N) I32;  z: (N, V) F32, row stride V;  params: (N) rows of
    // ae_sample_param, passed as (4 N) I32 words (uploaded as I32: a plain copy)
    void (*sample_rows)(const ae_backend *be, ae_ptr ids, ae_ptr z, ae_ptr params, int N, int V);

    // ---- backward (NULL where a backend has no training support) ----
    // Parameter gradients ("dw" below: rmsnorm_bwd's dw, expert_matmul_bwd's dw, embed_bwd's
    // dtable, ae_matmul_bwd's dw through gemm) are F32, or BF16 where the backend's weights are
    // bf16 (cuda; --grad-dtype bf16, train/distill.h): the same "+=", with the op's new sum
    // formed in fp32 (old value widened + this call's fp32 sum) and rounded to bf16 once per op
    // call. The cpu takes F32 only (its parameters are F32).
    // dx += ∂/∂x, dw += ∂/∂w of rmsnorm (dw may be null).   dy, x, dx: (M, D) contiguous;
    // w: (D) float;  dw: (D) F32, or BF16 where the weights are bf16 (above)
    void (*rmsnorm_bwd)(const ae_backend *be, ae_ptr dx, ae_ptr dw, ae_ptr dy, ae_ptr x, ae_ptr w,
                        int M, int D, float eps);
    // In place: the gradient of a rope'd tensor becomes the gradient of its input (the inverse
    // rotation). Same arguments as rope.
    void (*rope_bwd)(const ae_backend *be, ae_ptr dx, ae_ptr pos, int T, int H, int stride, int rd,
                     double theta, ae_rope_mode mode);
    // dq = ∂/∂q (T, Hq, dk);  dk += ∂/∂k, dv += ∂/∂v with the layouts of k, v in `a` (= when
    // a->dkv_set);
    // dsinks += ∂/∂sinks (Hq) when a->sinks and dsinks are non-null. Probabilities are recomputed
    // from q, k and the rows' log-sum-exp. Saved forward: when out (T, Hq, dv) act and a->lse are
    // both non-null they must hold what `attention` wrote for the same arguments and inputs, and
    // are used instead of running the forward again (D = Σ dout·out per row); otherwise (either
    // null) both are recomputed. With values from the same backend the results are the same
    // (cpu, and cuda's tensor-core path: bit for bit; cuda's CUDA-core path: within rounding).
    // a->lse is only read here.
    void (*attention_bwd)(const ae_backend *be, const ae_attn_args *a, ae_ptr dq, ae_ptr dk,
                          ae_ptr dv, ae_ptr dsinks, ae_ptr dout, ae_ptr out, ae_ptr q, ae_ptr k,
                          ae_ptr v);
    // dx = dy ⊙ σ(g);  dg = ∂/∂g (same shape as g, overwritten).
    void (*gate_mul_bwd)(const ae_backend *be, ae_ptr dx, ae_ptr dg, ae_ptr dy, ae_ptr x,
                         ae_ptr g, int T, int H, int hd, int per_head);
    // dg = dy ⊙ u ⊙ silu'(g);  du = dy ⊙ silu(g)   (overwritten)
    void (*silu_mul_bwd)(const ae_backend *be, ae_ptr dg, ae_ptr du, ae_ptr dy, ae_ptr g, ae_ptr u,
                         size_t n);
    // ---- MoE training (train/moe_train.c; the math is written out there) ----
    // A slot is one (token t, choice k) pair, s = t·K + k. The slot plan groups the slots by
    // expert with a stable counting sort: expert e's slots sit at positions off[e] .. off[e+1]−1
    // in increasing s (so in token order); pos[s] = the position of slot s; tok[p] = the token of
    // the slot at position p.   idx: (T, K) I32, each in [0, E);  off: (E + 1) I32;
    //   pos, tok: (T·K) I32
    void (*moe_plan)(const ae_backend *be, ae_ptr off, ae_ptr pos, ae_ptr tok, ae_ptr idx, int T,
                     int K, int E);
    // Combine of per-slot rows into tokens: y[t] = Σ_k w[t,k] · o[pos[t·K + k]] summed in k order
    // (w = 1 when wts is null: the backward of the gather of token rows into slot rows), written
    // over y, or added to it when accumulate (one rounding of y + the sum).
    //   y: (T, D) float;  o: (T·K, D) float, rows by position;  pos: (T·K) I32;  wts: (T, K) F32
    void (*moe_combine)(const ae_backend *be, ae_ptr y, ae_ptr o, ae_ptr pos, ae_ptr wts, int T,
                        int K, int D, int accumulate);
    // Backward of the weighted moe_combine, for s = t·K + k (both overwritten):
    //   dye[pos[s]] = wts[s] · dy[t]   (the gradient of the slot row)
    //   dw[s] = dy[t] · o[pos[s]]      (the gradient of the routing weight; fp32 dot, fixed order)
    //   dye: (T·K, D) float rows by position;  dw: (T, K) F32;  dy: (T, D) float;  o, pos, wts
    //   as moe_combine
    void (*moe_combine_bwd)(const ae_backend *be, ae_ptr dye, ae_ptr dw, ae_ptr dy, ae_ptr o,
                            ae_ptr pos, ae_ptr wts, int T, int K, int D);
    // Backward of moe_route to its logits: dz[t] = ∂/∂z_t of Σ_k dw[t,k] · wts[t,k] with
    // (idx, wts) = moe_route(z) held fixed in idx (top-k passes gradient through the selected
    // probabilities only). With S = Σ_k p[idx_k]: dp[idx_k] = (dw_k − Σ_j dw_j wts_j) / S when
    // renorm, else dw_k; dp = 0 elsewhere; dz = p ⊙ (dp − Σ_e dp_e p_e) (overwritten).
    //   dz: (T, E) float;  dw: (T, K) F32;  probs: (T, E) F32 (moe_route's);  idx: (T, K) I32
    void (*moe_route_bwd)(const ae_backend *be, ae_ptr dz, ae_ptr dw, ae_ptr probs, ae_ptr idx,
                          int T, int E, int K, int renorm);
    // Grouped expert products on slot rows grouped by expert (moe_plan's positions): for each
    // expert e and position p in off[e] .. off[e+1]−1, and i < n (1, or 2: gate and up at once)
    //   y[i][p] = x[p] · w[i][e]ᵀ   (w[i][e]: the (N, Kd) matrix of expert e)
    // off is read where it lies (backend memory: no host synchronisation); rows from off[E] on
    // are not written.   x: (S, Kd) act;  w[i]: (E, N, Kd) wt;  y[i]: (S, N) act or F32, all of
    // one dtype, overlapping neither x nor each other;  off: (E + 1) I32, non-decreasing from
    // off[0] = 0 to off[E] <= S
    void (*expert_matmul)(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                          ae_ptr off, int S, int E, int N, int Kd);
    // Backward of expert_matmul, for i < n (1 or 2) and e the expert of row p:
    //   dx[p] = Σ_i dy[i][p] · w[i][e]   written over dx, or added to it when accumulate (one
    //   rounding of dx + the sum: ae_matmul_bwd's "+="); skipped when dx is null
    //   dw[i][e] += Σ_p dy[i][p]ᵀ · x[p] over expert e's rows, when dw and dw[i] are non-null
    //   (each value summed in a fixed order: the same bits on every run)
    //   dx: (S, Kd) act or F32;  x: (S, Kd) act;  dy[i]: (S, N) act;  dw[i]: (E, N, Kd) F32,
    //   or BF16 where the weights are bf16 (see "backward");  w[i], off, S, E as expert_matmul
    void (*expert_matmul_bwd)(const ae_backend *be, int n, ae_ptr dx, const ae_ptr *dw,
                              const ae_ptr *dy, ae_ptr x, const ae_ptr *w, ae_ptr off, int S,
                              int E, int N, int Kd, int accumulate);
    // dtable[ids[t]] += dy[t] for t < T; each row receives its tokens' rows in token order, so
    // the sums are the same on every run (no float atomics).
    //   dtable: (V, D) F32, or BF16 where the weights are bf16 (see "backward": each row's sum
    //   in fp32, one rounding);  dy: (T, D) float;  ids: (T) I32, each in [0, V)
    void (*embed_bwd)(const ae_backend *be, ae_ptr dtable, ae_ptr dy, ae_ptr ids, int T, int D);

    // ---- training losses and the optimizer (NULL where a backend has no training support) ----
    // Every reduction below is accumulated in double in an order fixed by the shapes, so a rerun
    // gives the same bits (resumed runs are bit-identical to uninterrupted ones).
    //
    // Stage-1 loss per row and its gradient: out[i] = ‖y_i − t_i‖² / den_i with den_i = D
    // (normalized 0) or ‖t_i‖² + 1e-6 (normalized 1); dy_i = scale · 2 (y_i − t_i) / den_i
    // (overwritten; skipped when dy is null).   y, t, dy: (N, D) float;  out: (N) F32 or F64
    void (*mse_rows)(const ae_backend *be, ae_ptr out, ae_ptr dy, ae_ptr y, ae_ptr t, int N, int D,
                     int normalized, float scale);
    // Feature loss per row: out[i] = 1 − cos(a_i, b_i) (a row where a or b is all zero: cos = 0
    // and no gradient); da_i = scale · ∂out[i]/∂a_i (overwritten; skipped when da is null).
    //   a, b, da: (N, D) float;  out: (N) F32
    void (*cosine_rows)(const ae_backend *be, ae_ptr out, ae_ptr da, ae_ptr a, ae_ptr b, int N,
                        int D, float scale);
    // Online softmax statistics of a chunk of logit columns (vocabulary ids v0 .. v0+Vc−1) at
    // temperature τ, merged into each row's running state: stats[i] = (mx, se) with mx the max of
    // z·inv_tau seen so far and se = Σ exp(z·inv_tau − mx) over those columns; arg[i] (may be
    // null) = id of the largest z seen so far (ties: the lowest id). v0 == 0 starts the rows
    // afresh (stats and arg are not read). log softmax(z/τ)_v = z_v·inv_tau − mx − log(se).
    //   z: (N, Vc) F32, row stride ldz;  stats: (N, 2) F32;  arg: (N) I32
    void (*softmax_stats)(const ae_backend *be, ae_ptr stats, ae_ptr arg, ae_ptr z, int64_t ldz,
                          int N, int Vc, int v0, float inv_tau);
    // One chunk of the KD loss from the final statistics of both sides (softmax_stats over the
    // whole vocabulary): with pt = softmax(zt/τ), ps = softmax(zs/τ) on the chunk's columns,
    // kl[i] += Σ_v pt_v (log pt_v − log ps_v) and dzs = gscale · (ps − pt) (overwritten).
    //   zt, zs: (N, Vc) F32 row stride ldz;  st, ss: (N, 2) F32;  kl: (N) F32;  dzs: (N, Vc)
    //   float, row stride ldd
    void (*kd_chunk)(const ae_backend *be, ae_ptr kl, ae_ptr dzs, int64_t ldd, ae_ptr zt,
                     ae_ptr zs, int64_t ldz, ae_ptr st, ae_ptr ss, int N, int Vc, float inv_tau,
                     float gscale);
    // out[0] = Σ x_j² over n values (Inf when x holds Inf, NaN when x holds NaN; with an F32
    // out also Inf when the sum exceeds float's range: F64 keeps the double sum).
    //   x: (n) float (an F32 or BF16 gradient);  out: (1) F32 or F64
    void (*sumsq)(const ae_backend *be, ae_ptr out, ae_ptr x, size_t n);
    // y = alpha · x + beta · y; beta == 0 does not read y.   x, y: (n) float
    void (*axpby)(const ae_backend *be, ae_ptr y, float alpha, ae_ptr x, float beta, size_t n);
    // One AdamW step of n values (see ae_adamw_args), in float exactly as written:
    //   g' = g·gscale;  m = β1·m + (1−β1)·g';  v = β2·v + (1−β2)·g'²;
    //   w −= lr·((m/bc1) / (sqrtf(v/bc2) + eps) + weight_decay·w)
    // then param = w converted to param's dtype (param may be null, or w itself on cpu).
    // flag[0] is set to 1 (never cleared) when a new w or v is Inf or NaN.
    //   w, m, v: (n) F32 (w: the fp32 master copy);  g: (n) F32, or BF16 where the weights are
    //   bf16 (cuda; read exactly as fp32);  param: (n) wt;  flag: (1) I32
    void (*adamw)(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr m,
                  ae_ptr v, ae_ptr g, ae_ptr param, ae_ptr flag, size_t n);
    // adamw with 8-bit moments (backend/adam8.h: blocks of AE_Q8_BLOCK values, one F32
    // absmax per block and moment, m in a signed e4m3-like code, sqrt(v) in an unsigned
    // e4m4-like code). Per block: decode m = ±m_val[mq]·ms, v = (v_val[vq]·vs)² (a block whose
    // absmax is 0 is all zero: its codes are not read), adamw's update on every value with the
    // bias corrections as products by their reciprocals (ae_q8_adam: one division a value),
    // then the new absmax of |m| and of sqrtf(v) over the block and each value rounded to the
    // code nearest to it times 1/absmax (ae_q8_encode_m/_v, ae_q8_inv). Every code and absmax
    // of the n values is written; flag as adamw.
    //   w: (n) F32;  g: (n) F32, or BF16 as adamw's;  mq, vq: (n) U8;
    //   ms, vs: (ceil(n / AE_Q8_BLOCK)) F32;  param: (n) wt
    void (*adamw8)(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr mq, ae_ptr ms,
                   ae_ptr vq, ae_ptr vs, ae_ptr g, ae_ptr param, ae_ptr flag, size_t n);

    // ---- graphs: recorded op sequences replayed with fewer launches (NULL where a backend has
    // none: cpu; cuda: CUDA graphs, backend/cuda_graph.cu) ----
    // Between graph_begin (returning 1) and graph_end the ops are recorded instead of run, and
    // run in order in segments: the backend may end a segment at a graph_cut point and launch it
    // while the caller goes on recording. The recorded code must not upload, download or sync
    // (the recording fails), must free inside the recording every buffer it allocates there,
    // and its work must be idempotent: when graph_end does not return AE_GRAPH_RAN, some leading
    // segments may have run, and the caller restores its host state and runs the whole work again
    // from the start (op by op, or recorded once more after AE_GRAPH_RETRY). Results equal an
    // op-by-op run bit for bit. A handle serves one recurring sequence (e.g. the decode step of
    // one cache): each recording updates the handle's previous one where only arguments changed.
    ae_graph *(*graph_new)(const ae_backend *be); // NULL: out of memory
    void (*graph_free)(const ae_backend *be, ae_graph *g); // null is a no-op
    // 1: recording; 0: run the ops plainly (graphs switched off, the handle disabled after a
    // failed recording, or its first request: one-time setup of the ops runs unrecorded).
    int (*graph_begin)(const ae_backend *be, ae_graph *g);
    void (*graph_cut)(const ae_backend *be, ae_graph *g);
    // Ends the recording and runs what is left of it. ok = 0: the caller's work failed; nothing
    // more runs. Returns AE_GRAPH_RAN, AE_GRAPH_RETRY or AE_GRAPH_FAILED (a failed recording is
    // reported on stderr once, and the handle is disabled).
    int (*graph_end)(const ae_backend *be, ae_graph *g, int ok);
    void (*graph_stats)(const ae_backend *be, const ae_graph *g, ae_graph_stats *out);

    // ---- concurrency (NULL where a backend runs all work in one queue: cpu, the profiler;
    // cuda: a second stream, backend/cuda.cu) ----
    // A sibling is a second backend on the same device and memory whose queued work runs
    // concurrently with its parent's. Tensors of either may be used and freed by both, as long
    // as every use is ordered: work queued on one waits for a point of the other's queue through
    // an event (event_record marks the work queued so far; event_wait makes the work queued
    // after it wait until the last mark recorded before the call is reached; a never-recorded
    // event is no wait). A sibling keeps its own errors: its sync reports them, and `status`
    // without waiting (the errors an op kept when it was queued: allocation, launch; a fault
    // inside a running kernel shows at the next sync or download of either).
    ae_status (*sibling_open)(const ae_backend *be, const ae_backend **out);
    ae_status (*status)(const ae_backend *be);
    void (*sibling_close)(const ae_backend *sib);
    ae_event *(*event_new)(const ae_backend *be); // NULL: out of memory (message set)
    void (*event_free)(const ae_backend *be, ae_event *ev);
    void (*event_record)(const ae_backend *be, ae_event *ev);
    void (*event_wait)(const ae_backend *be, ae_event *ev);
};


// ---- backends ----
// The fp32 reference backend (OpenBLAS GEMM, OpenMP loops).
const ae_backend *ae_backend_cpu(void);
// Opens a backend by name: "cpu", "cuda" (device 0), "cuda:N", or NULL / "auto" (the
// environment's ATTNEDIT_DEVICE when set, else cuda:0 when a CUDA device is present, else cpu). AE_ERR_UNSUPPORTED with a message when the build has no
// CUDA support or no such device exists. Close with ae_backend_close (a no-op for cpu). Both
// apply ATTNEDIT_MEM_LIMIT (backend/mem_limit.h): AE_ERR_ARG when it is malformed.
ae_status ae_backend_open(const char *name, const ae_backend **out);
void ae_backend_close(const ae_backend *be);
// Free and total device memory in bytes (0, 0 where not tracked: cpu).
void ae_backend_mem_info(const ae_backend *be, size_t *free_bytes, size_t *total_bytes);

// ---- helpers over the table (backend/backend.c) ----
// y = x · wᵀ    x: (M, K)  w: (N, K)  y: (M, N)   (PyTorch Linear layout)
void ae_matmul(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int K, int N);
// y += x · wᵀ (gemm with beta 1: a residual added in the product's epilogue, no pass of its own)
void ae_matmul_add(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int K, int N);
// y[i] = x · w[i]ᵀ for i < n (n <= AE_MATMUL_GROUP_MAX), through matmul_group where the backend
// has it, else one ae_matmul each.   x: (M, K)  w[i]: (N[i], K)  y[i]: (M, N[i])
void ae_matmul_group(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                     const int *N, int M, int K);
// act = silu(x · wgᵀ) ⊙ (x · wuᵀ) through gate_up_silu where the backend has it, else
// matmul_group into g, u and silu_mul (the op's contract).   x: (M, K)  wg, wu: (N, K)
// act, g, u: (M, N), g and u scratch
void ae_gate_up_silu(const ae_backend *be, ae_ptr act, ae_ptr g, ae_ptr u, ae_ptr x, ae_ptr wg,
                     ae_ptr wu, int M, int K, int N);
// The absorbed-MLA decode ops in their unfused form, through the table's own ops: the
// references of mla_decode_absorb (fill of qt's latent part when dn = 0, mla_decode_prep, the
// per-head gemm q_nope_h · Wuk_h; be->mla_decode_prep must be set) and of mla_decode_attend
// (attention into ctx, then the per-head gemm ctx_h · Wuv_hᵀ), and the backends' fallbacks.
// Arguments as the two slots'; ctx: (T, Hq, a->dv) scratch of any float dtype the backend takes.
void ae_mla_absorb_ops(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                       ae_ptr qt, ae_ptr w, ae_ptr wuk, int64_t sw, ae_ptr pos);
void ae_mla_attend_ops(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr ctx, ae_ptr q,
                       ae_ptr kv, ae_ptr wuv, int64_t sw, int dvo);
// dx += dy · w (M, K) when dx is non-null;  dw += dyᵀ · x (N, K) when dw is non-null.
// dw: F32, or BF16 where the weights are bf16 (the product into an F32 temporary, then `add`:
// the new sum formed in fp32 and rounded to bf16 once; see "backward").
void ae_matmul_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dw, ae_ptr dy, ae_ptr x, ae_ptr w,
                   int M, int K, int N);
// Concurrency through the table's slots, written so that one piece of code serves every
// backend: ae_sibling_open gives be itself where be has no siblings (the work then runs in one
// queue, in the order it is issued, which every event-ordered schedule allows), and the event
// helpers do nothing with a null event (ae_event_new's where be has no events).
ae_status ae_sibling_open(const ae_backend *be, const ae_backend **out);
void ae_sibling_close(const ae_backend *be, const ae_backend *sib); // sib == be: a no-op
ae_status ae_backend_status(const ae_backend *be); // be->status, AE_OK where there is none
ae_status ae_event_new(const ae_backend *be, ae_event **out);
void ae_event_free(const ae_backend *be, ae_event *ev);
void ae_event_record(const ae_backend *be, ae_event *ev);
void ae_event_wait(const ae_backend *be, ae_event *ev);
// Contiguous copy of n elements (dtype conversion as copy_rows).
void ae_copy(const ae_backend *be, ae_ptr dst, ae_ptr src, size_t n);
// Scratch buffers of one computation, freed together: allocate them all, check `failed` once
// (an allocation failure leaves its message), use them, ae_scratch_free.
#define AE_SCRATCH_MAX 32
typedef struct {
    const ae_backend *be;
    int n, failed;
    ae_ptr p[AE_SCRATCH_MAX];
} ae_scratch;
void ae_scratch_init(ae_scratch *s, const ae_backend *be);
ae_ptr ae_scratch_alloc(ae_scratch *s, size_t n, ae_dtype dt); // null once failed
// An I32 buffer of positions pos0 + (i mod period) for i < n (period 0: pos0 + i).
ae_ptr ae_scratch_positions(ae_scratch *s, int n, int pos0, int period);
void ae_scratch_free(ae_scratch *s);
// Fills an ae_attn_args for the common dense layout: k (S, Hkv, dk), v (S, Hkv, dv), no ring,
// no lse.
ae_attn_args ae_attn_dense(int T, int pos0, int Hq, int Hkv, int dk, int dv, int window,
                           float scale, ae_ptr sinks);
// Aborts (internal error: a bug in the caller) unless a->runs keep ae_paged_attn_args' contract:
// in row order, disjoint, inside the N rows, n >= 1, pos0 >= 0; and, when seq and pos (N, host)
// are given, agreeing with them. Backends call it at the start of attention_paged.
void ae_paged_runs_check(const ae_paged_attn_args *a, const int32_t *seq, const int32_t *pos);

#ifdef __cplusplus
}
#endif

#endif
