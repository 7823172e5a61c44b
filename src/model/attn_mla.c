// MLA module: parameters (allocation, names, random init) and single-sequence inference in the
// materialised and the absorbed (decode) form. Formulas in attn_mla.h; training in mla_train.c,
// teacher initialisation in mla_init.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

ae_status ae_mla_init(ae_mla *m, const ae_mla_dims *d) {
    memset(m, 0, sizeof *m);
    AE_TRY(mla_check_dims(d));
    m->d = *d;
    size_t D = (size_t)d->D, H = (size_t)d->H, ql = (size_t)d->q_lora_rank;
    size_t R = (size_t)d->kv_lora_rank, dq = (size_t)(d->dn + d->dr);
    int ok = 1;
    if (ql == 0) {
        ok &= (m->wq = ae_alloc_f32(H * dq * D)) != NULL;
    } else {
        ok &= (m->wqa = ae_alloc_f32(ql * D)) != NULL;
        ok &= (m->q_a_norm = ae_alloc_f32(ql)) != NULL;
        ok &= (m->wqb = ae_alloc_f32(H * dq * ql)) != NULL;
    }
    ok &= (m->wkva = ae_alloc_f32((R + (size_t)d->dr) * D)) != NULL;
    ok &= (m->kv_a_norm = ae_alloc_f32(R)) != NULL;
    ok &= (m->wkvb = ae_alloc_f32(H * (size_t)(d->dn + d->dv) * R)) != NULL;
    ok &= (m->wo = ae_alloc_f32(D * H * (size_t)d->dv)) != NULL;
    if (!ok) {
        ae_mla_free(m);
        return AE_ERR_NOMEM;
    }
    return AE_OK;
}

void ae_mla_free(ae_mla *m) {
    if (!m) return;
    float *all[] = {m->wq, m->wqa, m->q_a_norm, m->wqb, m->wkva, m->kv_a_norm, m->wkvb, m->wo};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ae_free_aligned(all[i]);
    memset(m, 0, sizeof *m);
}

ae_param_list ae_mla_params(ae_mla *m) {
    ae_param_list l;
    memset(&l, 0, sizeof l);
    const ae_mla_dims *d = &m->d;
    int64_t D = d->D, H = d->H, ql = d->q_lora_rank, R = d->kv_lora_rank;
    int64_t dq = d->dn + d->dr;
    if (ql == 0) {
        ae_param_list_add(&l, "q_proj.weight", m->wq, H * dq, D, 1);
    } else {
        ae_param_list_add(&l, "q_a_proj.weight", m->wqa, ql, D, 1);
        ae_param_list_add(&l, "q_a_layernorm.weight", m->q_a_norm, ql, 0, 0);
        ae_param_list_add(&l, "q_b_proj.weight", m->wqb, H * dq, ql, 1);
    }
    ae_param_list_add(&l, "kv_a_proj_with_mqa.weight", m->wkva, R + d->dr, D, 1);
    ae_param_list_add(&l, "kv_a_layernorm.weight", m->kv_a_norm, R, 0, 0);
    ae_param_list_add(&l, "kv_b_proj.weight", m->wkvb, H * (d->dn + d->dv), R, 1);
    ae_param_list_add(&l, "o_proj.weight", m->wo, D, H * d->dv, 1);
    return l;
}

void ae_mla_init_random(ae_mla *m, float std, ae_rng *rng) {
    ae_param_list l = ae_mla_params(m);
    for (int i = 0; i < l.n; i++) {
        ae_param *p = &l.p[i];
        size_t n = (size_t)p->shape[0] * (size_t)(p->ndim == 2 ? p->shape[1] : 1);
        for (size_t j = 0; j < n; j++) p->data[j] = p->ndim == 2 ? std * ae_rng_normal(rng) : 1.0f;
    }
}

void mla_q_forward(const ae_backend *be, const ae_mla *m, const float *x, int M, const int *pos,
                   float *q, float *qa_raw, float *qa_n) {
    const ae_mla_dims *d = &m->d;
    int dq = d->dn + d->dr, ql = d->q_lora_rank;
    if (ql == 0) {
        be->matmul(be, q, x, m->wq, M, d->D, d->H * dq);
    } else {
        float *raw = qa_raw ? qa_raw : qa_n; // (M, ql)
        be->matmul(be, raw, x, m->wqa, M, d->D, ql);
        be->rmsnorm(be, qa_n, raw, m->q_a_norm, M, ql, d->eps);
        be->matmul(be, q, qa_n, m->wqb, M, ql, d->H * dq);
    }
    be->rope(be, q + d->dn, pos, M, d->H, dq, d->dr, d->rope_theta, AE_ROPE_INTERLEAVED);
}

// Scratch of one inference call; every pointer freed by scratch_free.
typedef struct {
    int *pos;     // (T)
    float *q;     // (T, H, dn+dr)
    float *qa;    // (T, q_lora)
    float *a;     // materialised: (S, R) latent copy;  absorbed: (T, H, R+dr) absorbed query
    float *b;     // materialised: (S, H, dn+dv) kv_b output;  absorbed: (T, H, R) context
    float *k;     // materialised: (S, H, dn+dr);  absorbed: (T, max(R, dn)) per-head gather
    float *v;     // materialised: (S, H, dv);  absorbed: Wuk_hᵀ (R, dn), then one head's (T, dv)
    float *o;     // (T, H, dv) attention output before o_proj
} scratch;

static void scratch_free(scratch *s) {
    free(s->pos);
    float *all[] = {s->q, s->qa, s->a, s->b, s->k, s->v, s->o};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ae_free_aligned(all[i]);
}

static ae_status scratch_alloc(scratch *s, const ae_mla_dims *d, int T, int pos0, int absorbed) {
    memset(s, 0, sizeof *s);
    size_t H = (size_t)d->H, R = (size_t)d->kv_lora_rank, dn = (size_t)d->dn;
    size_t dq = dn + (size_t)d->dr, dv = (size_t)d->dv, S = (size_t)pos0 + (size_t)T;
    size_t Tn = (size_t)T, wide = R > dn ? R : dn, wv = R * dn > Tn * dv ? R * dn : Tn * dv;
    int ok = (s->pos = malloc(sizeof(int) * Tn)) != NULL;
    ok &= (s->q = ae_alloc_f32(Tn * H * dq)) != NULL;
    ok &= (s->qa = ae_alloc_f32(Tn * (size_t)(d->q_lora_rank > 0 ? d->q_lora_rank : 1))) != NULL;
    ok &= (s->o = ae_alloc_f32(Tn * H * dv)) != NULL;
    if (absorbed) {
        ok &= (s->a = ae_alloc_f32(Tn * H * (R + (size_t)d->dr))) != NULL;
        ok &= (s->b = ae_alloc_f32(Tn * H * R)) != NULL;
        ok &= (s->k = ae_alloc_f32(Tn * wide)) != NULL;
        ok &= (s->v = ae_alloc_f32(wv)) != NULL;
    } else {
        ok &= (s->a = ae_alloc_f32(S * R)) != NULL;
        ok &= (s->b = ae_alloc_f32(S * H * (dn + dv))) != NULL;
        ok &= (s->k = ae_alloc_f32(S * H * dq)) != NULL;
        ok &= (s->v = ae_alloc_f32(S * H * dv)) != NULL;
    }
    if (!ok) {
        scratch_free(s);
        return ae_errorf(AE_ERR_NOMEM, "MLA: out of memory for %d tokens at position %d", T, pos0);
    }
    return AE_OK;
}

// The shared first half of both forms: q (T, H, dn+dr) rope'd, and the new tokens' cache rows
// [RMSNorm(c) | RoPE(kr)] written at rows pos0..pos0+T-1.
static void mla_begin(const ae_backend *be, const ae_mla *m, const float *x, int T, int pos0,
                      float *cache, scratch *s) {
    const ae_mla_dims *d = &m->d;
    int Cd = ae_mla_cache_dim(d), R = d->kv_lora_rank;
    for (int t = 0; t < T; t++) s->pos[t] = pos0 + t;
    mla_q_forward(be, m, x, T, s->pos, s->q, NULL, s->qa);
    float *rows = cache + (size_t)pos0 * Cd; // (T, R+dr)
    be->matmul(be, rows, x, m->wkva, T, d->D, Cd);
    for (int t = 0; t < T; t++)
        be->rmsnorm(be, rows + (size_t)t * Cd, rows + (size_t)t * Cd, m->kv_a_norm, 1, R, d->eps);
    be->rope(be, rows + R, s->pos, T, 1, Cd, d->dr, d->rope_theta, AE_ROPE_INTERLEAVED);
}

static ae_status check_call(const ae_mla *m, const float *x, int T, int pos0, const float *cache,
                            const float *y) {
    if (!m || !x || !cache || !y) return ae_errorf(AE_ERR_ARG, "MLA forward: NULL argument");
    if (T <= 0 || pos0 < 0)
        return ae_errorf(AE_ERR_ARG, "MLA forward: T = %d must be > 0 and pos0 = %d >= 0", T, pos0);
    return AE_OK;
}

ae_status ae_mla_forward_materialized(const ae_backend *be, const ae_mla *m, const float *x,
                                      int T, int pos0, float *cache, float *y) {
    AE_TRY(check_call(m, x, T, pos0, cache, y));
    const ae_mla_dims *d = &m->d;
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv, dq = dn + dr;
    int Cd = ae_mla_cache_dim(d), S = pos0 + T, dkv = dn + dv;
    scratch s;
    AE_TRY(scratch_alloc(&s, d, T, pos0, 0));
    mla_begin(be, m, x, T, pos0, cache, &s);
    float *lat = s.a;  // (S, R)        normalised latents of every cached position
    float *kvb = s.b;  // (S, H, dn+dv) decompressed [k_nope | v] per head
    float *K = s.k;    // (S, H, dn+dr) keys [k_nope_h | kr]
    float *V = s.v;    // (S, H, dv)
    for (int j = 0; j < S; j++) memcpy(lat + (size_t)j * R, cache + (size_t)j * Cd, sizeof(float) * R);
    be->matmul(be, kvb, lat, m->wkvb, S, R, H * dkv);
    for (int j = 0; j < S; j++)
        for (int h = 0; h < H; h++) {
            const float *src = kvb + ((size_t)j * H + h) * dkv;
            float *kd = K + ((size_t)j * H + h) * dq;
            memcpy(kd, src, sizeof(float) * dn);
            memcpy(kd + dn, cache + (size_t)j * Cd + R, sizeof(float) * dr);
            memcpy(V + ((size_t)j * H + h) * dv, src + dn, sizeof(float) * dv);
        }
    ae_attn_args aa = ae_attn_dense(T, pos0, H, H, dq, dv, 0, (float)(1.0 / sqrt((double)dq)), NULL);
    be->attention(be, &aa, s.o, s.q, K, V);
    be->matmul(be, y, s.o, m->wo, T, H * dv, d->D);
    scratch_free(&s);
    return AE_OK;
}

ae_status ae_mla_forward_absorbed(const ae_backend *be, const ae_mla *m, const float *x, int T,
                                  int pos0, float *cache, float *y) {
    AE_TRY(check_call(m, x, T, pos0, cache, y));
    const ae_mla_dims *d = &m->d;
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv, dq = dn + dr;
    int Cd = ae_mla_cache_dim(d), dkv = dn + dv;
    scratch s;
    AE_TRY(scratch_alloc(&s, d, T, pos0, 1));
    mla_begin(be, m, x, T, pos0, cache, &s);
    float *qt = s.a;   // (T, H, R+dr) absorbed queries [Wuk_hᵀ·q_nope_h | q_rope_h]
    float *ctx = s.b;  // (T, H, R)    attention-weighted latents per head
    float *gat = s.k;  // (T, max(R, dn)) one head's slice, contiguous
    float *wt = s.v;   // (R, dn) Wuk_hᵀ
    float *tmp = s.o;  // (T, H, dv) head outputs Wuv_h·ctx_h
    for (int h = 0; h < H; h++) {
        const float *wuk = m->wkvb + (size_t)h * dkv * R; // (dn, R)
        for (int t = 0; t < T; t++) {
            float *dst = qt + ((size_t)t * H + h) * (R + dr);
            memcpy(dst + R, s.q + ((size_t)t * H + h) * dq + dn, sizeof(float) * dr);
            if (dn == 0) memset(dst, 0, sizeof(float) * R);
        }
        if (dn == 0) continue;
        for (int r = 0; r < R; r++)
            for (int n = 0; n < dn; n++) wt[(size_t)r * dn + n] = wuk[(size_t)n * R + r];
        for (int t = 0; t < T; t++)
            memcpy(gat + (size_t)t * dn, s.q + ((size_t)t * H + h) * dq, sizeof(float) * dn);
        // (T, R) product into ctx as scratch (ctx is written by attention afterwards)
        be->matmul(be, ctx, gat, wt, T, dn, R);
        for (int t = 0; t < T; t++)
            memcpy(qt + ((size_t)t * H + h) * (R + dr), ctx + (size_t)t * R, sizeof(float) * R);
    }
    ae_attn_args aa = {.T = T, .pos0 = pos0, .Hq = H, .Hkv = 1, .dk = R + dr, .dv = R,
                       .k_stride = Cd, .v_stride = Cd, .window = 0, .ring = 0,
                       .scale = (float)(1.0 / sqrt((double)dq)), .sinks = NULL};
    be->attention(be, &aa, ctx, qt, cache, cache);
    float *oh = wt; // (T, dv) one head's output (Wuk_hᵀ is no longer needed)
    for (int h = 0; h < H; h++) {
        const float *wuv = m->wkvb + ((size_t)h * dkv + dn) * R; // (dv, R)
        for (int t = 0; t < T; t++)
            memcpy(gat + (size_t)t * R, ctx + ((size_t)t * H + h) * R, sizeof(float) * R);
        be->matmul(be, oh, gat, wuv, T, R, dv);
        for (int t = 0; t < T; t++)
            memcpy(tmp + ((size_t)t * H + h) * dv, oh + (size_t)t * dv, sizeof(float) * dv);
    }
    be->matmul(be, y, tmp, m->wo, T, H * dv, d->D);
    scratch_free(&s);
    return AE_OK;
}
