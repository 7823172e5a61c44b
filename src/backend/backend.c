// Backend selection and the small helpers every caller of the op table shares.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/cuda.h"
#include "backend/mem_limit.h"
#include "backend/ops.h"
#include "core/mem.h"

float *ae_f32(ae_ptr p) {
    if (p.data && p.dtype != AE_DT_F32) {
        fprintf(stderr, "attnedit: internal error: host F32 view of a %s tensor\n",
                ae_dtype_name(p.dtype));
        abort();
    }
    return (float *)p.data;
}

// The cpu backend with ATTNEDIT_MEM_LIMIT applied (a malformed value is refused).
static ae_status open_cpu(const ae_backend **out) {
    size_t limit;
    AE_TRY(ae_mem_limit_from_env(&limit));
    ae_cpu_set_mem_limit(limit);
    *out = ae_backend_cpu();
    return AE_OK;
}

ae_status ae_backend_open(const char *name, const ae_backend **out) {
    *out = NULL;
    if (name && strcmp(name, "cpu") == 0) return open_cpu(out);
    int dev = 0;
    int automatic = !name || strcmp(name, "auto") == 0;
    const char *env = getenv("ATTNEDIT_DEVICE"); // the default of every command, when set
    if (automatic && env && *env && strcmp(env, "auto") != 0) return ae_backend_open(env, out);
    if (!automatic) {
        char *end = NULL;
        if (strcmp(name, "cuda") == 0) dev = 0;
        else if (strncmp(name, "cuda:", 5) == 0 && name[5] >= '0' && name[5] <= '9' &&
                 (dev = (int)strtol(name + 5, &end, 10), *end == '\0'))
            ;
        else
            return ae_errorf(AE_ERR_ARG, "--device '%s': expected cpu, cuda or cuda:N", name);
    }
#ifdef AE_HAVE_CUDA
    if (automatic && ae_cuda_device_count() <= 0) return open_cpu(out);
    return ae_backend_cuda_open(dev, out);
#else
    (void)dev;
    if (automatic) return open_cpu(out);
    return ae_errorf(AE_ERR_UNSUPPORTED,
                     "--device %s: this attnedit was built without CUDA (rebuild with a CUDA "
                     "toolkit installed, cmake -DAE_CUDA=ON)", name);
#endif
}

void ae_backend_close(const ae_backend *be) {
#ifdef AE_HAVE_CUDA
    if (be && be != ae_backend_cpu()) ae_backend_cuda_close(be);
#else
    (void)be;
#endif
}

void ae_backend_mem_info(const ae_backend *be, size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    if (be->mem_info) be->mem_info(be, free_bytes, total_bytes);
}

void ae_matmul(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int K, int N) {
    ae_gemm_args g = {.M = M, .N = N, .K = K, .batch = 1, .trans_a = 0, .trans_b = 1,
                      .lda = K, .ldb = K, .ldy = N, .alpha = 1.0f, .beta = 0.0f};
    be->gemm(be, &g, y, x, w);
}

void ae_matmul_add(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int K, int N) {
    ae_gemm_args g = {.M = M, .N = N, .K = K, .batch = 1, .trans_a = 0, .trans_b = 1,
                      .lda = K, .ldb = K, .ldy = N, .alpha = 1.0f, .beta = 1.0f};
    be->gemm(be, &g, y, x, w);
}

void ae_matmul_group(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                     const int *N, int M, int K) {
    if (be->matmul_group && n > 0 && n <= AE_MATMUL_GROUP_MAX) {
        be->matmul_group(be, n, y, x, w, N, M, K);
        return;
    }
    for (int i = 0; i < n; i++) ae_matmul(be, y[i], x, w[i], M, K, N[i]);
}

void ae_gate_up_silu(const ae_backend *be, ae_ptr act, ae_ptr g, ae_ptr u, ae_ptr x, ae_ptr wg,
                     ae_ptr wu, int M, int K, int N) {
    if (be->gate_up_silu) {
        be->gate_up_silu(be, act, g, u, x, wg, wu, M, K, N);
        return;
    }
    ae_ptr ys[2] = {g, u}, ws[2] = {wg, wu};
    int Ns[2] = {N, N};
    ae_matmul_group(be, 2, ys, x, ws, Ns, M, K);
    be->silu_mul(be, act, g, u, (size_t)M * N);
}

void ae_mla_absorb_ops(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                       ae_ptr qt, ae_ptr w, ae_ptr wuk, int64_t sw, ae_ptr pos) {
    const int T = a->T, H = a->H, R = a->R, dq = a->dn + a->dr, Cd = R + a->dr;
    if (a->dn == 0) be->fill(be, qt, (size_t)T * H * Cd, 0.0f); // no nope part: latent half 0
    be->mla_decode_prep(be, a, kv, q, qt, w, pos);
    if (a->dn == 0) return;
    // per head: qt_h (T, R) = q_nope_h (T, dn) · Wuk_h (dn, R);  qt: (T, H, Cd)
    ae_gemm_args g = {.M = T, .N = R, .K = a->dn, .batch = H, .lda = (int64_t)H * dq, .sa = dq,
                      .ldb = R, .sb = sw, .ldy = (int64_t)H * Cd, .sy = Cd, .alpha = 1.0f};
    be->gemm(be, &g, qt, q, wuk);
}

void ae_mla_attend_ops(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr ctx, ae_ptr q,
                       ae_ptr kv, ae_ptr wuv, int64_t sw, int dvo) {
    const int T = a->T, H = a->Hq, R = a->dv;
    be->attention(be, a, ctx, q, kv, kv);
    // per head: o_h (T, dvo) = ctx_h (T, R) · Wuv_hᵀ, Wuv_h (dvo, R) at wuv + h·sw
    ae_gemm_args g = {.M = T, .N = dvo, .K = R, .batch = H, .trans_b = 1, .lda = (int64_t)H * R,
                      .sa = R, .ldb = R, .sb = sw, .ldy = (int64_t)H * dvo, .sy = dvo,
                      .alpha = 1.0f};
    be->gemm(be, &g, o, ctx, wuv);
}

void ae_matmul_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dw, ae_ptr dy, ae_ptr x, ae_ptr w,
                   int M, int K, int N) {
    if (!ae_ptr_is_null(dx)) { // dx (M, K) += dy (M, N) · w (N, K)
        ae_gemm_args g = {.M = M, .N = K, .K = N, .batch = 1, .trans_a = 0, .trans_b = 0,
                          .lda = N, .ldb = K, .ldy = K, .alpha = 1.0f, .beta = 1.0f};
        be->gemm(be, &g, dx, dy, w);
    }
    if (!ae_ptr_is_null(dw)) { // dw (N, K) += dyᵀ (N, M) · x (M, K)
        ae_gemm_args g = {.M = N, .N = K, .K = M, .batch = 1, .trans_a = 1, .trans_b = 0,
                          .lda = N, .ldb = K, .ldy = K, .alpha = 1.0f, .beta = 1.0f};
        // A BF16 gradient (--grad-dtype bf16): the product into an F32 temporary, then added with
        // one rounding. A GEMM that accumulates into a bf16 C may round partial sums on the way
        // (cuBLASLt's split-K: 64 bf16 ulp off where the sum cancels, measured on an H200,
        // 2026-11-30). Without memory for the temporary: the GEMM into dw itself.
        ae_ptr t = dw.dtype == AE_DT_BF16 ? be->alloc(be, (size_t)N * K, AE_DT_F32) : ae_ptr_null();
        if (ae_ptr_is_null(t)) {
            be->gemm(be, &g, dw, dy, x);
            return;
        }
        g.beta = 0.0f;
        be->gemm(be, &g, t, dy, x);
        be->add(be, dw, dw, t, (size_t)N * K);
        be->free(be, t);
    }
}

ae_status ae_sibling_open(const ae_backend *be, const ae_backend **out) {
    *out = be;
    return be->sibling_open ? be->sibling_open(be, out) : AE_OK;
}

void ae_sibling_close(const ae_backend *be, const ae_backend *sib) {
    if (sib && sib != be && be->sibling_close) be->sibling_close(sib);
}

ae_status ae_backend_status(const ae_backend *be) {
    return be->status ? be->status(be) : AE_OK;
}

ae_status ae_event_new(const ae_backend *be, ae_event **out) {
    *out = NULL;
    if (!be->event_new) return AE_OK;
    *out = be->event_new(be);
    return *out ? AE_OK : AE_ERR_NOMEM;
}

void ae_event_free(const ae_backend *be, ae_event *ev) {
    if (ev) be->event_free(be, ev);
}

void ae_event_record(const ae_backend *be, ae_event *ev) {
    if (ev) be->event_record(be, ev);
}

void ae_event_wait(const ae_backend *be, ae_event *ev) {
    if (ev) be->event_wait(be, ev);
}

void ae_copy(const ae_backend *be, ae_ptr dst, ae_ptr src, size_t n) {
    if (n > 0) be->copy_rows(be, dst, (int64_t)n, src, (int64_t)n, 1, (int)n);
}

void ae_scratch_init(ae_scratch *s, const ae_backend *be) {
    memset(s, 0, sizeof *s);
    s->be = be;
}

ae_ptr ae_scratch_alloc(ae_scratch *s, size_t n, ae_dtype dt) {
    if (s->failed) return ae_ptr_null();
    if (s->n == AE_SCRATCH_MAX) {
        fprintf(stderr, "attnedit: internal error: more than %d scratch buffers\n", AE_SCRATCH_MAX);
        abort();
    }
    ae_ptr p = s->be->alloc(s->be, n ? n : 1, dt);
    if (ae_ptr_is_null(p)) {
        s->failed = 1;
        return p;
    }
    s->p[s->n++] = p;
    return p;
}

void ae_scratch_free(ae_scratch *s) {
    for (int i = 0; i < s->n; i++) s->be->free(s->be, s->p[i]);
    s->n = 0;
}

ae_attn_args ae_attn_dense(int T, int pos0, int Hq, int Hkv, int dk, int dv, int window,
                           float scale, ae_ptr sinks) {
    ae_attn_args a = {.T = T, .pos0 = pos0, .Hq = Hq, .Hkv = Hkv, .dk = dk, .dv = dv,
                      .k_stride = Hkv * dk, .v_stride = Hkv * dv, .window = window, .ring = 0,
                      .scale = scale, .sinks = sinks, .lse = ae_ptr_null()};
    return a;
}

void ae_paged_runs_check(const ae_paged_attn_args *a, const int32_t *seq, const int32_t *pos) {
    int end = 0; // first row after the previous run
    for (int i = 0; i < a->n_runs; i++) {
        const ae_paged_run *u = &a->runs[i];
        int bad = u->n < 1 || u->first < end || u->first > a->N - u->n || u->pos0 < 0;
        for (int t = 0; !bad && seq && pos && t < u->n; t++)
            bad = seq[u->first + t] != u->seq || pos[u->first + t] != u->pos0 + t;
        if (bad) {
            fprintf(stderr, "attnedit: internal error: attention_paged run %d of %d (rows %d "
                            "+ %d, sequence %d, positions from %d) is out of order, outside the "
                            "%d rows, or disagrees with seq/pos\n",
                    i, a->n_runs, u->first, u->n, u->seq, u->pos0, a->N);
            abort();
        }
        end = u->first + u->n;
    }
}

ae_ptr ae_scratch_positions(ae_scratch *s, int n, int pos0, int period) {
    ae_ptr p = ae_scratch_alloc(s, (size_t)n, AE_DT_I32);
    if (s->failed) return p;
    int32_t *h = ae_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!h) {
        s->failed = 1;
        return ae_ptr_null();
    }
    for (int i = 0; i < n; i++) h[i] = pos0 + (period > 0 ? i % period : i);
    if (s->be->upload(s->be, p, h, AE_DT_I32, (size_t)n) != AE_OK) s->failed = 1;
    free(h);
    return s->failed ? ae_ptr_null() : p;
}
