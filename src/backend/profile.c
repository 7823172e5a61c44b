// Op-level profiler (profile.h): every slot of the wrapper syncs the inner backend, calls its op,
// syncs again and adds the wall time of the call and the second sync to the op's counter.
#include <stdlib.h>
#include <string.h>

#include "backend/profile.h"
#include "core/log.h"
#include "core/mem.h"

// Counter ids: one per op slot, then the classes that split gemm and attention.
#define PROF_OPS(X)                                                                            \
    X(alloc) X(free) X(upload) X(download) X(sync) X(copy_rows) X(copy_rows_rep)               \
    X(sum_rows_rep) X(fill) X(fill_normal)                                                     \
    X(mem_info) X(gemm) X(matmul_group) X(gate_up_silu) X(rmsnorm) X(add_rmsnorm) X(rope)        \
    X(qk_norm_rope)                                                                            \
    X(attention) X(gate_mul) X(silu_mul) X(add) X(embed) X(moe_route) X(moe_ffn)               \
    X(attention_paged) X(paged_store) X(paged_gather) X(nll_rows) X(kl_rows) X(argmax_rows) X(sample_rows) X(rmsnorm_bwd)     \
    X(rope_bwd) X(attention_bwd) X(gate_mul_bwd) X(silu_mul_bwd) X(embed_bwd) X(mse_rows)      \
    X(cosine_rows) X(softmax_stats) X(kd_chunk) X(sumsq) X(axpby) X(adamw) X(adamw8) X(mla_decode_prep) \
    X(mla_decode_absorb) X(mla_decode_attend) \
    X(moe_plan) X(moe_combine) X(moe_combine_bwd) X(moe_route_bwd)

enum {
#define PROF_ID(n) P_##n,
    PROF_OPS(PROF_ID)
#undef PROF_ID
    // gemm classes: rows M (<= 8: the decode GEMV shapes), batch, which operand is transposed
    P_GEMM_CLASS0,
    P_ATTN_T1 = P_GEMM_CLASS0 + 8, // attention with one query token (decode)
    P_ATTN_TN,                     // attention with T > 1 (prefill, chunks)
    P_COUNT
};

static const char *const g_names[P_COUNT] = {
#define PROF_NAME(n) #n,
    PROF_OPS(PROF_NAME)
#undef PROF_NAME
    [P_GEMM_CLASS0 + 0] = "gemm M<=8 batch=1 trans_b=0",
    [P_GEMM_CLASS0 + 1] = "gemm M<=8 batch=1 trans_b=1",
    [P_GEMM_CLASS0 + 2] = "gemm M<=8 batch>1 trans_b=0",
    [P_GEMM_CLASS0 + 3] = "gemm M<=8 batch>1 trans_b=1",
    [P_GEMM_CLASS0 + 4] = "gemm M>8 batch=1 trans_b=0",
    [P_GEMM_CLASS0 + 5] = "gemm M>8 batch=1 trans_b=1",
    [P_GEMM_CLASS0 + 6] = "gemm M>8 batch>1 trans_b=0",
    [P_GEMM_CLASS0 + 7] = "gemm M>8 batch>1 trans_b=1",
    [P_ATTN_T1] = "attention T=1",
    [P_ATTN_TN] = "attention T>1",
};

typedef struct {
    const ae_backend *inner;
    ae_backend self; // the table handed out (ctx points back here)
    long calls[P_COUNT];
    double seconds[P_COUNT];
} prof_state;

static prof_state *st(const ae_backend *be) { return (prof_state *)be->ctx; }

static double prof_begin(const prof_state *P) {
    P->inner->sync(P->inner); // a kept device error is reported by the caller's own sync
    return ae_time_now();
}

static void prof_end(prof_state *P, int id, int cls, double t0) {
    P->inner->sync(P->inner);
    double dt = ae_time_now() - t0;
    P->calls[id]++, P->seconds[id] += dt;
    if (cls >= 0) P->calls[cls]++, P->seconds[cls] += dt;
}

// A void op: sync, call, sync, count.
#define PROF_VOID(id, cls, call)                                                               \
    do {                                                                                       \
        prof_state *P = st(be);                                                                \
        const ae_backend *in = P->inner;                                                       \
        double t0 = prof_begin(P);                                                             \
        call;                                                                                  \
        prof_end(P, id, cls, t0);                                                              \
    } while (0)

// ---- memory ----

static ae_ptr p_alloc(const ae_backend *be, size_t n, ae_dtype dt) {
    ae_ptr r;
    PROF_VOID(P_alloc, -1, r = in->alloc(in, n, dt));
    return r;
}
static void p_free(const ae_backend *be, ae_ptr p) { PROF_VOID(P_free, -1, in->free(in, p)); }
static ae_status p_upload(const ae_backend *be, ae_ptr dst, const void *src, ae_dtype src_dt,
                          size_t n) {
    ae_status r;
    PROF_VOID(P_upload, -1, r = in->upload(in, dst, src, src_dt, n));
    return r;
}
static ae_status p_download(const ae_backend *be, void *dst, ae_dtype dst_dt, ae_ptr src,
                            size_t n) {
    ae_status r;
    PROF_VOID(P_download, -1, r = in->download(in, dst, dst_dt, src, n));
    return r;
}
static ae_status p_sync(const ae_backend *be) {
    prof_state *P = st(be);
    double t0 = ae_time_now();
    ae_status r = P->inner->sync(P->inner);
    P->calls[P_sync]++, P->seconds[P_sync] += ae_time_now() - t0;
    return r;
}
static void p_copy_rows(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                        int rows, int cols) {
    PROF_VOID(P_copy_rows, -1, in->copy_rows(in, dst, ldd, src, lds, rows, cols));
}
static void p_copy_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                            int64_t lds, int rows, int rep, int cols) {
    PROF_VOID(P_copy_rows_rep, -1, in->copy_rows_rep(in, dst, ldd, src, lds, rows, rep, cols));
}
static void p_sum_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                           int64_t lds, int rows, int rep, int cols) {
    PROF_VOID(P_sum_rows_rep, -1, in->sum_rows_rep(in, dst, ldd, src, lds, rows, rep, cols));
}
static void p_fill(const ae_backend *be, ae_ptr dst, size_t n, float value) {
    PROF_VOID(P_fill, -1, in->fill(in, dst, n, value));
}
static void p_fill_normal(const ae_backend *be, ae_ptr dst, size_t n, float sd, uint64_t seed) {
    PROF_VOID(P_fill_normal, -1, in->fill_normal(in, dst, n, sd, seed));
}
static void p_mem_info(const ae_backend *be, size_t *free_bytes, size_t *total_bytes) {
    PROF_VOID(P_mem_info, -1, in->mem_info(in, free_bytes, total_bytes));
}

// ---- forward ----

static int gemm_class(const ae_gemm_args *g) {
    return P_GEMM_CLASS0 + (g->M > 8) * 4 + (g->batch > 1) * 2 + (g->trans_b != 0);
}

static void p_gemm(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a, ae_ptr b) {
    PROF_VOID(P_gemm, gemm_class(g), in->gemm(in, g, y, a, b));
}
static void p_matmul_group(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x,
                           const ae_ptr *w, const int *N, int M, int K) {
    PROF_VOID(P_matmul_group, -1, in->matmul_group(in, n, y, x, w, N, M, K));
}
static void p_gate_up_silu(const ae_backend *be, ae_ptr act, ae_ptr g, ae_ptr u, ae_ptr x,
                           ae_ptr wg, ae_ptr wu, int M, int K, int N) {
    PROF_VOID(P_gate_up_silu, -1, in->gate_up_silu(in, act, g, u, x, wg, wu, M, K, N));
}
static void p_rmsnorm(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int D,
                      int64_t ld, float eps) {
    PROF_VOID(P_rmsnorm, -1, in->rmsnorm(in, y, x, w, M, D, ld, eps));
}
static void p_add_rmsnorm(const ae_backend *be, ae_ptr xo, ae_ptr x, ae_ptr dx, ae_ptr y,
                          ae_ptr w, int M, int D, float eps) {
    PROF_VOID(P_add_rmsnorm, -1, in->add_rmsnorm(in, xo, x, dx, y, w, M, D, eps));
}
static void p_rope(const ae_backend *be, ae_ptr x, ae_ptr pos, int T, int H, int stride, int rd,
                   double theta, ae_rope_mode mode) {
    PROF_VOID(P_rope, -1, in->rope(in, x, pos, T, H, stride, rd, theta, mode));
}
static void p_mla_decode_prep(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                              ae_ptr qt, ae_ptr w, ae_ptr pos) {
    PROF_VOID(P_mla_decode_prep, -1, in->mla_decode_prep(in, a, kv, q, qt, w, pos));
}
static void p_mla_decode_absorb(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv,
                                ae_ptr q, ae_ptr qt, ae_ptr w, ae_ptr wuk, int64_t sw, ae_ptr pos) {
    PROF_VOID(P_mla_decode_absorb, -1, in->mla_decode_absorb(in, a, kv, q, qt, w, wuk, sw, pos));
}
static void p_mla_decode_attend(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr q,
                                ae_ptr kv, ae_ptr wuv, int64_t sw, int dvo) {
    PROF_VOID(P_mla_decode_attend, -1, in->mla_decode_attend(in, a, o, q, kv, wuv, sw, dvo));
}

static void p_qk_norm_rope(const ae_backend *be, const ae_qk_norm_rope_args *a, ae_ptr q,
                           ae_ptr k, ae_ptr wq, ae_ptr wk, ae_ptr pos) {
    PROF_VOID(P_qk_norm_rope, -1, in->qk_norm_rope(in, a, q, k, wq, wk, pos));
}
static void p_attention(const ae_backend *be, const ae_attn_args *a, ae_ptr out, ae_ptr q,
                        ae_ptr k, ae_ptr v) {
    PROF_VOID(P_attention, a->T == 1 ? P_ATTN_T1 : P_ATTN_TN, in->attention(in, a, out, q, k, v));
}
static void p_gate_mul(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr g, int T, int H, int hd,
                       int per_head) {
    PROF_VOID(P_gate_mul, -1, in->gate_mul(in, y, x, g, T, H, hd, per_head));
}
static void p_silu_mul(const ae_backend *be, ae_ptr y, ae_ptr g, ae_ptr u, size_t n) {
    PROF_VOID(P_silu_mul, -1, in->silu_mul(in, y, g, u, n));
}
static void p_add(const ae_backend *be, ae_ptr y, ae_ptr a, ae_ptr b, size_t n) {
    PROF_VOID(P_add, -1, in->add(in, y, a, b, n));
}
static void p_embed(const ae_backend *be, ae_ptr y, ae_ptr table, ae_ptr ids, int T, int D) {
    PROF_VOID(P_embed, -1, in->embed(in, y, table, ids, T, D));
}
static void p_moe_route(const ae_backend *be, ae_ptr idx, ae_ptr wts, ae_ptr probs, ae_ptr logits,
                        int T, int E, int K, int renorm) {
    PROF_VOID(P_moe_route, -1, in->moe_route(in, idx, wts, probs, logits, T, E, K, renorm));
}
static void p_moe_ffn(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr idx, ae_ptr wts,
                      ae_ptr w_gate, ae_ptr w_up, ae_ptr w_down, int T, int D, int Im, int E,
                      int K) {
    PROF_VOID(P_moe_ffn, -1,
              in->moe_ffn(in, y, x, idx, wts, w_gate, w_up, w_down, T, D, Im, E, K));
}

static void p_moe_plan(const ae_backend *be, ae_ptr off, ae_ptr pos, ae_ptr tok, ae_ptr idx, int T,
                       int K, int E) {
    PROF_VOID(P_moe_plan, -1, in->moe_plan(in, off, pos, tok, idx, T, K, E));
}
static void p_moe_combine(const ae_backend *be, ae_ptr y, ae_ptr o, ae_ptr pos, ae_ptr wts, int T,
                          int K, int D, int accumulate) {
    PROF_VOID(P_moe_combine, -1, in->moe_combine(in, y, o, pos, wts, T, K, D, accumulate));
}
static void p_moe_combine_bwd(const ae_backend *be, ae_ptr dye, ae_ptr dw, ae_ptr dy, ae_ptr o,
                              ae_ptr pos, ae_ptr wts, int T, int K, int D) {
    PROF_VOID(P_moe_combine_bwd, -1, in->moe_combine_bwd(in, dye, dw, dy, o, pos, wts, T, K, D));
}
static void p_moe_route_bwd(const ae_backend *be, ae_ptr dz, ae_ptr dw, ae_ptr probs, ae_ptr idx,
                            int T, int E, int K, int renorm) {
    PROF_VOID(P_moe_route_bwd, -1, in->moe_route_bwd(in, dz, dw, probs, idx, T, E, K, renorm));
}

// ---- paged, scores ----

static void p_attention_paged(const ae_backend *be, const ae_paged_attn_args *a, ae_ptr out,
                              ae_ptr q, ae_ptr k, ae_ptr v) {
    PROF_VOID(P_attention_paged, -1, in->attention_paged(in, a, out, q, k, v));
}
static void p_paged_store(const ae_backend *be, ae_ptr dst, int64_t page_stride, int page_size,
                          int64_t ldd, ae_ptr src, int64_t lds, ae_ptr slot, int N, int cols) {
    PROF_VOID(P_paged_store, -1,
              in->paged_store(in, dst, page_stride, page_size, ldd, src, lds, slot, N, cols));
}
static void p_paged_gather(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                           int64_t page_stride, int page_size, int64_t lds, ae_ptr table, int n,
                           int cols) {
    PROF_VOID(P_paged_gather, -1,
              in->paged_gather(in, dst, ldd, src, page_stride, page_size, lds, table, n, cols));
}
static void p_nll_rows(const ae_backend *be, ae_ptr out, ae_ptr z, ae_ptr target, int T, int V) {
    PROF_VOID(P_nll_rows, -1, in->nll_rows(in, out, z, target, T, V));
}
static void p_kl_rows(const ae_backend *be, ae_ptr out, ae_ptr zt, ae_ptr zs, int T, int V) {
    PROF_VOID(P_kl_rows, -1, in->kl_rows(in, out, zt, zs, T, V));
}
static void p_argmax_rows(const ae_backend *be, ae_ptr out, ae_ptr z, int T, int V) {
    PROF_VOID(P_argmax_rows, -1, in->argmax_rows(in, out, z, T, V));
}
static void p_sample_rows(const ae_backend *be, ae_ptr ids, ae_ptr z, ae_ptr params, int N,
                          int V) {
    PROF_VOID(P_sample_rows, -1, in->sample_rows(in, ids, z, params, N, V));
}

// ---- backward, training ----

static void p_rmsnorm_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dw, ae_ptr dy, ae_ptr x,
                          ae_ptr w, int M, int D, float eps) {
    PROF_VOID(P_rmsnorm_bwd, -1, in->rmsnorm_bwd(in, dx, dw, dy, x, w, M, D, eps));
}
static void p_rope_bwd(const ae_backend *be, ae_ptr dx, ae_ptr pos, int T, int H, int stride,
                       int rd, double theta, ae_rope_mode mode) {
    PROF_VOID(P_rope_bwd, -1, in->rope_bwd(in, dx, pos, T, H, stride, rd, theta, mode));
}
static void p_attention_bwd(const ae_backend *be, const ae_attn_args *a, ae_ptr dq, ae_ptr dk,
                            ae_ptr dv, ae_ptr dsinks, ae_ptr dout, ae_ptr out, ae_ptr q,
                            ae_ptr k, ae_ptr v) {
    PROF_VOID(P_attention_bwd, -1,
              in->attention_bwd(in, a, dq, dk, dv, dsinks, dout, out, q, k, v));
}
static void p_gate_mul_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dg, ae_ptr dy, ae_ptr x,
                           ae_ptr g, int T, int H, int hd, int per_head) {
    PROF_VOID(P_gate_mul_bwd, -1, in->gate_mul_bwd(in, dx, dg, dy, x, g, T, H, hd, per_head));
}
static void p_silu_mul_bwd(const ae_backend *be, ae_ptr dg, ae_ptr du, ae_ptr dy, ae_ptr g,
                           ae_ptr u, size_t n) {
    PROF_VOID(P_silu_mul_bwd, -1, in->silu_mul_bwd(in, dg, du, dy, g, u, n));
}
static void p_embed_bwd(const ae_backend *be, ae_ptr dtable, ae_ptr dy, ae_ptr ids, int T, int D) {
    PROF_VOID(P_embed_bwd, -1, in->embed_bwd(in, dtable, dy, ids, T, D));
}
static void p_mse_rows(const ae_backend *be, ae_ptr out, ae_ptr dy, ae_ptr y, ae_ptr t, int N,
                       int D, int normalized, float scale) {
    PROF_VOID(P_mse_rows, -1, in->mse_rows(in, out, dy, y, t, N, D, normalized, scale));
}
static void p_cosine_rows(const ae_backend *be, ae_ptr out, ae_ptr da, ae_ptr a, ae_ptr b, int N,
                          int D, float scale) {
    PROF_VOID(P_cosine_rows, -1, in->cosine_rows(in, out, da, a, b, N, D, scale));
}
static void p_softmax_stats(const ae_backend *be, ae_ptr stats, ae_ptr arg, ae_ptr z,
                            int64_t ldz, int N, int Vc, int v0, float inv_tau) {
    PROF_VOID(P_softmax_stats, -1, in->softmax_stats(in, stats, arg, z, ldz, N, Vc, v0, inv_tau));
}
static void p_kd_chunk(const ae_backend *be, ae_ptr kl, ae_ptr dzs, int64_t ldd, ae_ptr zt,
                       ae_ptr zs, int64_t ldz, ae_ptr s_t, ae_ptr s_s, int N, int Vc,
                       float inv_tau, float gscale) {
    PROF_VOID(P_kd_chunk, -1,
              in->kd_chunk(in, kl, dzs, ldd, zt, zs, ldz, s_t, s_s, N, Vc, inv_tau, gscale));
}
static void p_sumsq(const ae_backend *be, ae_ptr out, ae_ptr x, size_t n) {
    PROF_VOID(P_sumsq, -1, in->sumsq(in, out, x, n));
}
static void p_axpby(const ae_backend *be, ae_ptr y, float alpha, ae_ptr x, float beta, size_t n) {
    PROF_VOID(P_axpby, -1, in->axpby(in, y, alpha, x, beta, n));
}
static void p_adamw(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr m, ae_ptr v,
                    ae_ptr g, ae_ptr param, ae_ptr flag, size_t n) {
    PROF_VOID(P_adamw, -1, in->adamw(in, a, w, m, v, g, param, flag, n));
}
static void p_adamw8(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr mq, ae_ptr ms,
                     ae_ptr vq, ae_ptr vs, ae_ptr g, ae_ptr param, ae_ptr flag, size_t n) {
    PROF_VOID(P_adamw8, -1, in->adamw8(in, a, w, mq, ms, vq, vs, g, param, flag, n));
}

// ---- the wrapper ----

const ae_backend *ae_backend_profile_wrap(const ae_backend *inner) {
    prof_state *P = ae_calloc(1, sizeof *P);
    if (!P) return NULL;
    P->inner = inner;
    ae_backend *b = &P->self;
    b->name = inner->name;
    b->device = inner->device;
    b->host_memory = inner->host_memory;
    b->act_dtype = inner->act_dtype;
    b->weight_dtype = inner->weight_dtype;
    b->ctx = P;
    // each slot wrapped where inner has it, NULL where inner has none
#define PROF_SLOT(n) b->n = inner->n ? p_##n : NULL;
    PROF_OPS(PROF_SLOT)
#undef PROF_SLOT
    return b;
}

void ae_backend_profile_free(const ae_backend *prof) {
    if (prof) free(st(prof));
}

void ae_backend_profile_reset(const ae_backend *prof) {
    prof_state *P = st(prof);
    memset(P->calls, 0, sizeof P->calls);
    memset(P->seconds, 0, sizeof P->seconds);
}

static int by_time_desc(const void *a, const void *b) {
    const ae_profile_entry *x = a, *y = b;
    return x->seconds < y->seconds ? 1 : x->seconds > y->seconds ? -1 : strcmp(x->name, y->name);
}

int ae_backend_profile_entries(const ae_backend *prof, ae_profile_entry *out, int max) {
    const prof_state *P = st(prof);
    ae_profile_entry all[P_COUNT];
    int n = 0;
    for (int i = 0; i < P_COUNT; i++)
        if (P->calls[i] > 0) {
            all[n].name = g_names[i];
            all[n].calls = P->calls[i];
            all[n].seconds = P->seconds[i];
            n++;
        }
    qsort(all, (size_t)n, sizeof *all, by_time_desc);
    for (int i = 0; i < n && i < max; i++) out[i] = all[i];
    return n;
}

int ae_profile_entry_is_class(const ae_profile_entry *e) { return strchr(e->name, ' ') != NULL; }

void ae_backend_profile_print(FILE *f, const char *label, const ae_backend *prof, const char *what,
                              int n, const char *unit, double plain_s) {
    ae_profile_entry e[96];
    int k = ae_backend_profile_entries(prof, e, 96);
    if (k > 96) k = 96;
    if (n < 1) n = 1;
    double total = 0;
    for (int i = 0; i < k; i++)
        if (!ae_profile_entry_is_class(&e[i])) total += e[i].seconds;
    fprintf(f, "profile | %s | %s | %s: %.1f us/%s profiled (sum of ops)", label, prof->name, what,
            1e6 * total / n, unit);
    if (plain_s > 0) fprintf(f, ", %.1f us/%s unprofiled", 1e6 * plain_s, unit);
    fprintf(f, "\n");
    char calls[32], us[32];
    snprintf(calls, sizeof calls, "calls/%s", unit);
    snprintf(us, sizeof us, "us/%s", unit);
    fprintf(f, "profile | %-32s | %10s | %10s | %6s\n", "op", calls, us, "share");
    for (int i = 0; i < k; i++) { // ops by time, each followed by its classes
        if (ae_profile_entry_is_class(&e[i])) continue;
        size_t len = strlen(e[i].name);
        for (int j = -1; j < k; j++) {
            const ae_profile_entry *x = j < 0 ? &e[i] : &e[j];
            int cls = j >= 0;
            if (cls && !(ae_profile_entry_is_class(x) && !strncmp(x->name, e[i].name, len) &&
                         x->name[len] == ' '))
                continue;
            fprintf(f, "profile | %s%-*s | %10.2f | %10.1f | %5.1f%%\n", cls ? "  " : "",
                    cls ? 30 : 32, x->name, (double)x->calls / n, 1e6 * x->seconds / n,
                    total > 0 ? 100 * x->seconds / total : 0);
        }
    }
    fflush(f);
}
