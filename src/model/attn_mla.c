// MLA module: parameters (allocation, names, random init) and single-sequence inference in the
// materialised and the absorbed (decode) form. Formulas in attn_mla.h; training in mla_train.c,
// teacher initialisation in mla_init.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/mem.h"
#include "model/attn_mla.h"
#include "model/mla_internal.h"

ae_status mla_check_dims(const ae_mla_dims *d) {
    if (!d) return ae_errorf(AE_ERR_ARG, "MLA: no dims");
    if (d->D <= 0 || d->H <= 0 || d->kv_lora_rank <= 0 || d->dv <= 0)
        return ae_errorf(AE_ERR_ARG,
                         "MLA: hidden size %d, heads %d, kv_lora_rank %d, v_head_dim %d must be > 0",
                         d->D, d->H, d->kv_lora_rank, d->dv);
    if (d->q_lora_rank < 0 || d->dn < 0)
        return ae_errorf(AE_ERR_ARG, "MLA: q_lora_rank %d and qk_nope_head_dim %d must be >= 0",
                         d->q_lora_rank, d->dn);
    if (d->dr <= 0 || d->dr % 2 != 0)
        return ae_errorf(AE_ERR_ARG, "MLA: qk_rope_head_dim %d must be even and > 0", d->dr);
    if (!(d->rope_theta > 0.0)) return ae_errorf(AE_ERR_ARG, "MLA: rope_theta must be > 0");
    if (!(d->eps >= 0.0f)) return ae_errorf(AE_ERR_ARG, "MLA: rms_norm_eps must be >= 0");
    return AE_OK;
}

int ae_mla_cache_dim(const ae_mla_dims *d) { return d->kv_lora_rank + d->dr; }

ae_param_list ae_mla_params(ae_mla *m) {
    ae_param_list l;
    memset(&l, 0, sizeof l);
    const ae_mla_dims *d = &m->d;
    int64_t D = d->D, H = d->H, ql = d->q_lora_rank, R = d->kv_lora_rank;
    int64_t dq = d->dn + d->dr;
    if (ql == 0) {
        ae_param_list_add(&l, "q_proj.weight", &m->wq, H * dq, D, 1);
    } else {
        ae_param_list_add(&l, "q_a_proj.weight", &m->wqa, ql, D, 1);
        ae_param_list_add(&l, "q_a_layernorm.weight", &m->q_a_norm, ql, 0, 0);
        ae_param_list_add(&l, "q_b_proj.weight", &m->wqb, H * dq, ql, 1);
    }
    ae_param_list_add(&l, "kv_a_proj_with_mqa.weight", &m->wkva, R + d->dr, D, 1);
    ae_param_list_add(&l, "kv_a_layernorm.weight", &m->kv_a_norm, R, 0, 0);
    ae_param_list_add(&l, "kv_b_proj.weight", &m->wkvb, H * (d->dn + d->dv), R, 1);
    ae_param_list_add(&l, "o_proj.weight", &m->wo, D, H * d->dv, 1);
    return l;
}

ae_status ae_mla_init(ae_mla *m, const ae_mla_dims *d, const ae_backend *be) {
    memset(m, 0, sizeof *m);
    AE_TRY(mla_check_dims(d));
    m->d = *d;
    m->be = be;
    ae_param_list l = ae_mla_params(m);
    ae_status st = ae_params_alloc(be, be->weight_dtype, &l);
    if (st != AE_OK) m->be = NULL;
    return st;
}

void ae_mla_free(ae_mla *m) {
    if (!m || !m->be) return;
    ae_param_list l = ae_mla_params(m);
    ae_params_free(m->be, &l);
    m->be = NULL;
}

ae_status ae_mla_init_random(ae_mla *m, float std, ae_rng *rng) {
    ae_param_list l = ae_mla_params(m);
    const ae_backend *be = m->be;
    for (int i = 0; i < l.n; i++) {
        ae_param *p = &l.p[i];
        size_t n = (size_t)ae_param_numel(p);
        uint64_t seed = ae_rng_u64(rng); // one stream per tensor, drawn in order
        if (p->ndim == 2) be->fill_normal(be, p->data, n, std, seed);
        else be->fill(be, p->data, n, 1.0f);
    }
    return be->sync(be);
}

void mla_q_forward(const ae_backend *be, const ae_mla *m, ae_ptr x, int M, ae_ptr pos, ae_ptr q,
                   ae_ptr qa_raw, ae_ptr qa_n) {
    const ae_mla_dims *d = &m->d;
    int dq = d->dn + d->dr, ql = d->q_lora_rank;
    if (ql == 0) {
        ae_matmul(be, q, x, m->wq, M, d->D, d->H * dq);
    } else {
        ae_ptr raw = ae_ptr_is_null(qa_raw) ? qa_n : qa_raw; // (M, ql)
        ae_matmul(be, raw, x, m->wqa, M, d->D, ql);
        be->rmsnorm(be, qa_n, raw, m->q_a_norm, M, ql, ql, d->eps);
        ae_matmul(be, q, qa_n, m->wqb, M, ql, d->H * dq);
    }
    be->rope(be, ae_ptr_at(q, (size_t)d->dn), pos, M, d->H, dq, d->dr, d->rope_theta,
             AE_ROPE_INTERLEAVED);
}

// The projections of x shared by both forms: q (T, H, dn+dr) before rope, and the new tokens'
// raw kv_a rows [c | kr] written at cache rows pos0..pos0+T-1. The two projections of x (q_proj
// or q_a_proj, and kv_a_proj_with_mqa) go through one matmul_group: one GEMV launch at decode on
// cuda, the same two products as separate matmuls on cpu.
static void mla_project(const ae_backend *be, const ae_mla *m, ae_ptr x, int T, int pos0,
                        ae_ptr cache, ae_ptr q, ae_ptr qa) {
    const ae_mla_dims *d = &m->d;
    int Cd = ae_mla_cache_dim(d), dq = d->dn + d->dr, ql = d->q_lora_rank;
    ae_ptr rows = ae_ptr_at(cache, (size_t)pos0 * Cd); // (T, R+dr)
    ae_ptr ys[2] = {ql == 0 ? q : qa, rows}, ws[2] = {ql == 0 ? m->wq : m->wqa, m->wkva};
    int Ns[2] = {ql == 0 ? d->H * dq : ql, Cd};
    ae_matmul_group(be, 2, ys, x, ws, Ns, T, d->D);
    if (ql > 0) { // q = RMSNorm(x·Wqaᵀ)·Wqbᵀ
        be->rmsnorm(be, qa, qa, m->q_a_norm, T, ql, ql, d->eps);
        ae_matmul(be, q, qa, m->wqb, T, ql, d->H * dq);
    }
}

// The rest of the shared first half: q's rope part rope'd in place, and the new cache rows
// become [RMSNorm(c) | RoPE(kr)].
static void mla_norm_rope(const ae_backend *be, const ae_mla *m, int T, int pos0, ae_ptr pos,
                          ae_ptr cache, ae_ptr q) {
    const ae_mla_dims *d = &m->d;
    int Cd = ae_mla_cache_dim(d), R = d->kv_lora_rank, dq = d->dn + d->dr;
    ae_ptr rows = ae_ptr_at(cache, (size_t)pos0 * Cd); // (T, R+dr)
    be->rope(be, ae_ptr_at(q, (size_t)d->dn), pos, T, d->H, dq, d->dr, d->rope_theta,
             AE_ROPE_INTERLEAVED);
    be->rmsnorm(be, rows, rows, m->kv_a_norm, T, R, Cd, d->eps);
    be->rope(be, ae_ptr_at(rows, (size_t)R), pos, T, 1, Cd, d->dr, d->rope_theta,
             AE_ROPE_INTERLEAVED);
}

// The shared first half of both forms: q (T, H, dn+dr) rope'd, and the new tokens' cache rows
// [RMSNorm(c) | RoPE(kr)] written at rows pos0..pos0+T-1.
static void mla_begin(const ae_backend *be, const ae_mla *m, ae_ptr x, int T, int pos0,
                      ae_ptr pos, ae_ptr cache, ae_ptr q, ae_ptr qa) {
    mla_project(be, m, x, T, pos0, cache, q, qa);
    mla_norm_rope(be, m, T, pos0, pos, cache, q);
}

static ae_status check_call(const ae_mla *m, int T, int pos0) {
    if (!m || !m->be) return ae_errorf(AE_ERR_ARG, "MLA forward: unallocated module");
    if (T <= 0 || pos0 < 0)
        return ae_errorf(AE_ERR_ARG, "MLA forward: T = %d must be > 0 and pos0 = %d >= 0", T, pos0);
    return AE_OK;
}

float mla_scale(const ae_mla_dims *d) { return (float)(1.0 / sqrt((double)(d->dn + d->dr))); }

int mla_kv_alloc(ae_scratch *s, const ae_mla_dims *d, int S, mla_kv_bufs *kv) {
    ae_dtype at = s->be->act_dtype;
    size_t SH = (size_t)S * d->H;
    kv->kvb = ae_scratch_alloc(s, SH * (d->dn + d->dv), at);
    kv->K = ae_scratch_alloc(s, SH * (d->dn + d->dr), at);
    kv->V = ae_scratch_alloc(s, SH * d->dv, at);
    return !s->failed;
}

void mla_kv_split(const ae_backend *be, const ae_mla_dims *d, int n, ae_ptr kvb, ae_ptr K,
                  ae_ptr V) {
    int dn = d->dn, dv = d->dv, dq = d->dn + d->dr, dkv = d->dn + d->dv, rows = n * d->H;
    if (dn > 0) be->copy_rows(be, K, dq, kvb, dkv, rows, dn);
    be->copy_rows(be, V, dv, ae_ptr_at(kvb, (size_t)dn), dkv, rows, dv);
}

void mla_kv_join(const ae_backend *be, const ae_mla_dims *d, int n, ae_ptr dK, ae_ptr dV,
                 ae_ptr dkvb) {
    int dn = d->dn, dv = d->dv, dq = d->dn + d->dr, dkv = d->dn + d->dv, rows = n * d->H;
    if (dn > 0) be->copy_rows(be, dkvb, dkv, dK, dq, rows, dn);
    be->copy_rows(be, ae_ptr_at(dkvb, (size_t)dn), dkv, dV, dv, rows, dv);
}

void mla_attend_materialized(const ae_backend *be, const ae_mla *m, int T, int pos0, ae_ptr q,
                             ae_ptr lat, int64_t ldl, const mla_kv_bufs *kv, ae_ptr o) {
    const ae_mla_dims *d = &m->d;
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv, dq = dn + dr;
    int S = pos0 + T, dkv = dn + dv;
    // [k_nope | v] per head of every cached position, from the latents (the rows' first R)
    ae_gemm_args g = {.M = S, .N = H * dkv, .K = R, .batch = 1, .trans_b = 1, .lda = ldl,
                      .ldb = R, .ldy = H * dkv, .alpha = 1.0f};
    be->gemm(be, &g, kv->kvb, lat, m->wkvb);
    mla_kv_split(be, d, S, kv->kvb, kv->K, kv->V);
    // the shared rope key joins every head: K row (s, h) columns dn.. = the latent row's last dr
    be->copy_rows_rep(be, ae_ptr_at(kv->K, (size_t)dn), dq, ae_ptr_at(lat, (size_t)R), ldl, S, H, dr);
    ae_attn_args aa = ae_attn_dense(T, pos0, H, H, dq, dv, 0, mla_scale(d), ae_ptr_null());
    be->attention(be, &aa, o, q, kv->K, kv->V);
}

ae_status ae_mla_forward_materialized(const ae_backend *be, const ae_mla *m, ae_ptr x, int T,
                                      int pos0, ae_ptr pos, ae_ptr cache, ae_ptr y) {
    AE_TRY(check_call(m, T, pos0));
    const ae_mla_dims *d = &m->d;
    int H = d->H, dv = d->dv, dq = d->dn + d->dr, Cd = ae_mla_cache_dim(d), ql = d->q_lora_rank;
    ae_dtype at = be->act_dtype;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr q = ae_scratch_alloc(&s, (size_t)T * H * dq, at);                 // (T, H, dn+dr)
    ae_ptr qa = ae_scratch_alloc(&s, (size_t)T * (ql > 0 ? ql : 1), at);     // (T, q_lora)
    ae_ptr o = ae_scratch_alloc(&s, (size_t)T * H * dv, at);                 // (T, H, dv)
    mla_kv_bufs kv;
    if (!mla_kv_alloc(&s, d, pos0 + T, &kv)) {
        ae_scratch_free(&s);
        return ae_errorf(AE_ERR_NOMEM, "MLA: out of memory for %d tokens at position %d", T, pos0);
    }
    mla_begin(be, m, x, T, pos0, pos, cache, q, qa);
    mla_attend_materialized(be, m, T, pos0, q, cache, Cd, &kv, o);
    ae_matmul(be, y, o, m->wo, T, H * dv, d->D);
    ae_scratch_free(&s);
    return AE_OK;
}

// AE_MLA_FUSE (read at every call; a CUDA graph keeps its recording's choice): 1 (default) the
// absorbed decode through mla_decode_absorb and mla_decode_attend where the backend has them
// (cuda: three launches at decode instead of five), 0 the separate ops (prep, the two per-head
// gemms, attention), for A/B runs and the tests that compare the two.
static int mla_fuse_enabled(void) { return ae_env_int("AE_MLA_FUSE", 1, 0, 1); }

// Elements of one carved piece of the absorbed path's scratch: rounded up to 64 (128 bytes of
// bf16), so every piece starts as aligned as the allocation (the attention kernels want 16).
static size_t carve_n(size_t n) { return (n + 63) / 64 * 64; }

ae_status ae_mla_forward_absorbed(const ae_backend *be, const ae_mla *m, ae_ptr x, int T, int pos0,
                                  ae_ptr pos, ae_ptr cache, ae_ptr y) {
    AE_TRY(check_call(m, T, pos0));
    const ae_mla_dims *d = &m->d;
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv, dq = dn + dr;
    int Cd = ae_mla_cache_dim(d), dkv = dn + dv, ql = d->q_lora_rank;
    ae_dtype at = be->act_dtype;
    // one allocation per call, carved into the five buffers
    size_t nq = carve_n((size_t)T * H * dq), nqa = carve_n((size_t)T * (ql > 0 ? ql : 1));
    size_t nqt = carve_n((size_t)T * H * Cd), nctx = carve_n((size_t)T * H * R);
    size_t no = carve_n((size_t)T * H * dv);
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr buf = ae_scratch_alloc(&s, nq + nqa + nqt + nctx + no, at);
    if (s.failed) {
        ae_scratch_free(&s);
        return ae_errorf(AE_ERR_NOMEM, "MLA: out of memory for %d tokens at position %d", T, pos0);
    }
    ae_ptr q = buf;                         // (T, H, dn+dr)
    ae_ptr qa = ae_ptr_at(q, nq);           // (T, q_lora)
    ae_ptr qt = ae_ptr_at(qa, nqa);         // (T, H, R+dr) [Wuk_hᵀ·q_nope_h | q_rope_h]
    ae_ptr ctx = ae_ptr_at(qt, nqt);        // (T, H, R) attention-weighted latents
    ae_ptr o = ae_ptr_at(ctx, nctx);        // (T, H, dv) head outputs Wuv_h·ctx_h
    mla_project(be, m, x, T, pos0, cache, q, qa);
    ae_ptr rows = ae_ptr_at(cache, (size_t)pos0 * Cd); // (T, R+dr) the new cache rows
    ae_mla_prep_args pa = {.T = T, .H = H, .R = R, .dr = dr, .dn = dn, .ldkv = Cd, .eps = d->eps,
                           .theta = d->rope_theta, .mode = AE_ROPE_INTERLEAVED};
    const int fuse = mla_fuse_enabled();
    if (fuse && be->mla_decode_absorb) { // prep and q̃_nope = q_nope_h · Wuk_h: one call
        be->mla_decode_absorb(be, &pa, rows, q, qt, m->kv_a_norm, m->wkvb, (int64_t)dkv * R, pos);
    } else {
        if (dn == 0) be->fill(be, qt, (size_t)T * H * Cd, 0.0f); // no nope part: latent half is 0
        if (be->mla_decode_prep) { // latent norm, both ropes and q_rope into qt: one call
            be->mla_decode_prep(be, &pa, rows, q, qt, m->kv_a_norm, pos);
        } else {
            mla_norm_rope(be, m, T, pos0, pos, cache, q);
            be->copy_rows(be, ae_ptr_at(qt, (size_t)R), Cd, ae_ptr_at(q, (size_t)dn), dq, T * H,
                          dr);
        }
        if (dn > 0) { // per head: q̃_nope (T, R) = q_nope_h (T, dn) · Wuk_h (dn, R)
            ae_gemm_args g = {.M = T, .N = R, .K = dn, .batch = H, .lda = (int64_t)H * dq,
                              .sa = dq, .ldb = R, .sb = (int64_t)dkv * R, .ldy = (int64_t)H * Cd,
                              .sy = Cd, .alpha = 1.0f};
            be->gemm(be, &g, qt, q, m->wkvb);
        }
    }
    ae_attn_args aa = {.T = T, .pos0 = pos0, .Hq = H, .Hkv = 1, .dk = Cd, .dv = R,
                       .k_stride = Cd, .v_stride = Cd, .window = 0, .ring = 0,
                       .scale = mla_scale(d), .sinks = ae_ptr_null()};
    ae_ptr wuv = ae_ptr_at(m->wkvb, (size_t)dn * R); // head h's (dv, R) value rows at h·dkv·R
    if (fuse && be->mla_decode_attend) { // o_h = Wuv_h · attention_h: E and one merge launch
        be->mla_decode_attend(be, &aa, o, qt, cache, wuv, (int64_t)dkv * R, dv);
    } else { // attention into ctx, then o_h (T, dv) = ctx_h (T, R) · Wuv_hᵀ per head
        ae_mla_attend_ops(be, &aa, o, ctx, qt, cache, wuv, (int64_t)dkv * R, dv);
    }
    ae_matmul(be, y, o, m->wo, T, H * dv, d->D);
    ae_scratch_free(&s);
    return AE_OK;
}
