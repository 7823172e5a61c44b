// Private to the CPU backend: the op implementations, one file per concern, gathered into the
// table by cpu.c. Signatures are those of the ae_backend slots (backend/ops.h). The cpu backend
// computes in F32 only; its tensors are host arrays (F32, or I32 for ids, positions, indices).
#ifndef AE_BACKEND_CPU_INTERNAL_H
#define AE_BACKEND_CPU_INTERNAL_H

#include "backend/ops.h"

// The float / int array behind a host pointer; aborts on another dtype (a bug in the caller).
float *cpu_f(ae_ptr p, const char *op);
int32_t *cpu_i(ae_ptr p, const char *op);

// cpu_memory.c
ae_ptr ae_cpu_alloc(const ae_backend *be, size_t n, ae_dtype dt);
void ae_cpu_free(const ae_backend *be, ae_ptr p);
ae_status ae_cpu_upload(const ae_backend *be, ae_ptr dst, const void *src, ae_dtype src_dt,
                        size_t n);
ae_status ae_cpu_download(const ae_backend *be, void *dst, ae_dtype dst_dt, ae_ptr src, size_t n);
ae_status ae_cpu_sync(const ae_backend *be);
void ae_cpu_copy_rows(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                      int rows, int cols);
void ae_cpu_copy_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                          int rows, int rep, int cols);
void ae_cpu_sum_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                         int rows, int rep, int cols);
void ae_cpu_fill(const ae_backend *be, ae_ptr dst, size_t n, float value);
void ae_cpu_fill_normal(const ae_backend *be, ae_ptr dst, size_t n, float std, uint64_t seed);
void ae_cpu_embed(const ae_backend *be, ae_ptr y, ae_ptr table, ae_ptr ids, int T, int D);

// cpu_matmul.c
void ae_cpu_gemm(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a, ae_ptr b);
void ae_cpu_matmul_group(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                         const int *N, int M, int K);
void ae_cpu_gate_up_silu(const ae_backend *be, ae_ptr act, ae_ptr g, ae_ptr u, ae_ptr x,
                         ae_ptr wg, ae_ptr wu, int M, int K, int N);

// cpu_norm.c
void ae_cpu_rmsnorm(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int D, int64_t ld,
                    float eps);
void ae_cpu_add_rmsnorm(const ae_backend *be, ae_ptr xo, ae_ptr x, ae_ptr dx, ae_ptr y,
                        ae_ptr w, int M, int D, float eps);
void ae_cpu_rmsnorm_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dw, ae_ptr dy, ae_ptr x, ae_ptr w,
                        int M, int D, float eps);

// cpu_rope.c
void ae_cpu_rope(const ae_backend *be, ae_ptr x, ae_ptr pos, int T, int H, int stride, int rd,
                 double theta, ae_rope_mode mode);
void ae_cpu_rope_bwd(const ae_backend *be, ae_ptr dx, ae_ptr pos, int T, int H, int stride, int rd,
                     double theta, ae_rope_mode mode);
void ae_cpu_qk_norm_rope(const ae_backend *be, const ae_qk_norm_rope_args *a, ae_ptr q, ae_ptr k,
                         ae_ptr wq, ae_ptr wk, ae_ptr pos);

// cpu_attention.c
void ae_cpu_attention(const ae_backend *be, const ae_attn_args *a, ae_ptr out, ae_ptr q, ae_ptr k,
                      ae_ptr v);
void ae_cpu_attention_bwd(const ae_backend *be, const ae_attn_args *a, ae_ptr dq, ae_ptr dk,
                          ae_ptr dv, ae_ptr dsinks, ae_ptr dout, ae_ptr out, ae_ptr q,
                          ae_ptr k, ae_ptr v);

// One attention query row, the arithmetic that attention (above) and attention_paged (below)
// share, whatever the storage of K and V: over the keys lo..qpos of the row's kv head kh,
//   s_j = scale · q·k_j (fp32 dot),  m = max(s, sink),  p_j = expf(s_j − m) / Z,
//   Z = Σ_j p_j [+ exp(sink − m)] in double,  o = Σ_j p_j v_j (fp32, in key order).
// key / val return the dk / dv values of key position j for kh; args, k, v and table are theirs
// to read (table: attention_paged's block-table row of the sequence, else null).
typedef struct cpu_attn_row cpu_attn_row;
struct cpu_attn_row {
    const float *(*key)(const cpu_attn_row *r, int j);
    const float *(*val)(const cpu_attn_row *r, int j);
    const void *args;     // the op's ae_attn_args / ae_paged_attn_args
    const float *k, *v;   // the op's K and V buffers
    const int32_t *table; // paged: the sequence's block-table row; else null
    const float *sink;    // the head's sink logit, or null
    int kh, dk, dv, lo, qpos;
    float scale;
};
// Softmax normaliser of one row: p_j = expf(s_j − m) · inv; lse2 the row's log-sum-exp in log2
// units (ae_attn_args.lse).
typedef struct {
    float m, inv, lse2;
} cpu_attn_norm;
float cpu_dotf(const float *a, const float *b, int n);
// The row's probabilities into p[j − lo] (p: qpos − lo + 1 floats).   qv: (dk)
cpu_attn_norm cpu_attn_row_probs(const cpu_attn_row *r, const float *qv, float *p);
// o (dv) = Σ_j p[j − lo] v_j.
void cpu_attn_row_out(const cpu_attn_row *r, const float *p, float *o);

// cpu_paged.c
void ae_cpu_attention_paged(const ae_backend *be, const ae_paged_attn_args *a, ae_ptr out,
                            ae_ptr q, ae_ptr k, ae_ptr v);
void ae_cpu_paged_store(const ae_backend *be, ae_ptr dst, int64_t page_stride, int page_size,
                        int64_t ldd, ae_ptr src, int64_t lds, ae_ptr slot, int N, int cols);
void ae_cpu_paged_gather(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                         int64_t page_stride, int page_size, int64_t lds, ae_ptr table, int n,
                         int cols);

// cpu_elementwise.c
void ae_cpu_gate_mul(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr g, int T, int H, int hd,
                     int per_head);
void ae_cpu_gate_mul_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dg, ae_ptr dy, ae_ptr x, ae_ptr g,
                         int T, int H, int hd, int per_head);
void ae_cpu_silu_mul(const ae_backend *be, ae_ptr y, ae_ptr g, ae_ptr u, size_t n);
void ae_cpu_silu_mul_bwd(const ae_backend *be, ae_ptr dg, ae_ptr du, ae_ptr dy, ae_ptr g, ae_ptr u,
                         size_t n);
void ae_cpu_add(const ae_backend *be, ae_ptr y, ae_ptr a, ae_ptr b, size_t n);

// cpu_moe.c
void ae_cpu_moe_route(const ae_backend *be, ae_ptr idx, ae_ptr wts, ae_ptr probs, ae_ptr logits,
                      int T, int E, int K, int renorm);
void ae_cpu_moe_ffn(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr idx, ae_ptr wts,
                    ae_ptr w_gate, ae_ptr w_up, ae_ptr w_down, int T, int D, int Im, int E, int K);

// cpu_moe_train.c (MoE training: slot plan, combine and its backward, router backward, grouped
// expert products)
void ae_cpu_moe_plan(const ae_backend *be, ae_ptr off, ae_ptr pos, ae_ptr tok, ae_ptr idx, int T,
                     int K, int E);
void ae_cpu_moe_combine(const ae_backend *be, ae_ptr y, ae_ptr o, ae_ptr pos, ae_ptr wts, int T,
                        int K, int D, int accumulate);
void ae_cpu_moe_combine_bwd(const ae_backend *be, ae_ptr dye, ae_ptr dw, ae_ptr dy, ae_ptr o,
                            ae_ptr pos, ae_ptr wts, int T, int K, int D);
void ae_cpu_moe_route_bwd(const ae_backend *be, ae_ptr dz, ae_ptr dw, ae_ptr probs, ae_ptr idx,
                          int T, int E, int K, int renorm);
void ae_cpu_expert_matmul(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                          ae_ptr off, int S, int E, int N, int Kd);
void ae_cpu_expert_matmul_bwd(const ae_backend *be, int n, ae_ptr dx, const ae_ptr *dw,
                              const ae_ptr *dy, ae_ptr x, const ae_ptr *w, ae_ptr off, int S, int E,
                              int N, int Kd, int accumulate);

// cpu_scores.c
void ae_cpu_nll_rows(const ae_backend *be, ae_ptr out, ae_ptr z, ae_ptr target, int T, int V);
void ae_cpu_kl_rows(const ae_backend *be, ae_ptr out, ae_ptr zt, ae_ptr zs, int T, int V);
void ae_cpu_argmax_rows(const ae_backend *be, ae_ptr out, ae_ptr z, int T, int V);

// cpu_sample.c
void ae_cpu_sample_rows(const ae_backend *be, ae_ptr ids, ae_ptr z, ae_ptr params, int N, int V);

// cpu_mla.c (absorbed-MLA decode preparation: the reference ops in sequence)
void ae_cpu_mla_decode_prep(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                            ae_ptr qt, ae_ptr w, ae_ptr pos);
void ae_cpu_mla_decode_absorb(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv,
                              ae_ptr q, ae_ptr qt, ae_ptr w, ae_ptr wuk, int64_t sw, ae_ptr pos);
void ae_cpu_mla_decode_attend(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr q,
                              ae_ptr kv, ae_ptr wuv, int64_t sw, int dvo);

// cpu_train.c (training: embedding gradient, losses per row, softmax statistics, KD, optimizer)
void ae_cpu_embed_bwd(const ae_backend *be, ae_ptr dtable, ae_ptr dy, ae_ptr ids, int T, int D);
void ae_cpu_mse_rows(const ae_backend *be, ae_ptr out, ae_ptr dy, ae_ptr y, ae_ptr t, int N, int D,
                     int normalized, float scale);
void ae_cpu_cosine_rows(const ae_backend *be, ae_ptr out, ae_ptr da, ae_ptr a, ae_ptr b, int N,
                        int D, float scale);
void ae_cpu_softmax_stats(const ae_backend *be, ae_ptr stats, ae_ptr arg, ae_ptr z, int64_t ldz,
                          int N, int Vc, int v0, float inv_tau);
void ae_cpu_kd_chunk(const ae_backend *be, ae_ptr kl, ae_ptr dzs, int64_t ldd, ae_ptr zt,
                     ae_ptr zs, int64_t ldz, ae_ptr st, ae_ptr ss, int N, int Vc, float inv_tau,
                     float gscale);
void ae_cpu_sumsq(const ae_backend *be, ae_ptr out, ae_ptr x, size_t n);
void ae_cpu_axpby(const ae_backend *be, ae_ptr y, float alpha, ae_ptr x, float beta, size_t n);
void ae_cpu_adamw(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr m, ae_ptr v,
                  ae_ptr g, ae_ptr param, ae_ptr flag, size_t n);
void ae_cpu_adamw8(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr mq, ae_ptr ms,
                   ae_ptr vq, ae_ptr vs, ae_ptr g, ae_ptr param, ae_ptr flag, size_t n);

#endif
