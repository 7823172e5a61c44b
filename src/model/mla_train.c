// MLA training: forward over B sequences × T tokens in the materialised form, saving what the
// backward needs, and the backward through every parameter and the input.
//
// Backward order (reverse of the forward):
//   o_proj → attention (per sequence) → split dK into dk_nope (per head) and dkr (summed over
//   heads: kr is shared) → RoPE⁻¹ on dq_rope and dkr → kv_b_proj → kv_a_layernorm →
//   kv_a_proj_with_mqa (d[c | kr]) → q path (q_proj, or q_b_proj → q_a_layernorm → q_a_proj).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/attn_mla.h"
#include "model/mla_internal.h"

struct ae_mla_acts {
    int B, T;
    int *pos;      // (B*T) position of each row: t
    float *x;      // (B*T, D) input copy
    float *qa_raw; // (B*T, q_lora) x·Wqaᵀ           (q_lora_rank > 0)
    float *qa_n;   // (B*T, q_lora) RMSNorm of it     (q_lora_rank > 0)
    float *q;      // (B*T, H, dn+dr) rope'd queries
    float *c_raw;  // (B*T, R) latent before kv_a_layernorm
    float *c_n;    // (B*T, R) latent after it
    float *k;      // (B*T, H, dn+dr) keys [k_nope_h | RoPE(kr)]
    float *v;      // (B*T, H, dv)
    float *att;    // (B*T, H, dv) attention output (o_proj input)
};

void ae_mla_acts_free(ae_mla_acts *a) {
    if (!a) return;
    free(a->pos);
    float *all[] = {a->x, a->qa_raw, a->qa_n, a->q, a->c_raw, a->c_n, a->k, a->v, a->att};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ae_free_aligned(all[i]);
    free(a);
}

static ae_status acts_alloc(const ae_mla_dims *d, int B, int T, ae_mla_acts **out) {
    ae_mla_acts *a = calloc(1, sizeof *a);
    if (!a) return ae_errorf(AE_ERR_NOMEM, "MLA: out of memory for activations");
    a->B = B;
    a->T = T;
    size_t M = (size_t)B * (size_t)T, H = (size_t)d->H, R = (size_t)d->kv_lora_rank;
    size_t dq = (size_t)(d->dn + d->dr), ql = (size_t)d->q_lora_rank;
    int ok = (a->pos = malloc(sizeof(int) * M)) != NULL;
    ok &= (a->x = ae_alloc_f32(M * (size_t)d->D)) != NULL;
    if (ql > 0) {
        ok &= (a->qa_raw = ae_alloc_f32(M * ql)) != NULL;
        ok &= (a->qa_n = ae_alloc_f32(M * ql)) != NULL;
    }
    ok &= (a->q = ae_alloc_f32(M * H * dq)) != NULL;
    ok &= (a->c_raw = ae_alloc_f32(M * R)) != NULL;
    ok &= (a->c_n = ae_alloc_f32(M * R)) != NULL;
    ok &= (a->k = ae_alloc_f32(M * H * dq)) != NULL;
    ok &= (a->v = ae_alloc_f32(M * H * (size_t)d->dv)) != NULL;
    ok &= (a->att = ae_alloc_f32(M * H * (size_t)d->dv)) != NULL;
    if (!ok) {
        ae_mla_acts_free(a);
        return ae_errorf(AE_ERR_NOMEM, "MLA: out of memory for activations (%d x %d tokens)", B, T);
    }
    *out = a;
    return AE_OK;
}

static float attn_scale(const ae_mla_dims *d) { return (float)(1.0 / sqrt((double)(d->dn + d->dr))); }

ae_status ae_mla_train_forward(const ae_backend *be, const ae_mla *m, const float *x, int B, int T,
                               float *y, ae_mla_acts **acts) {
    if (!m || !x || !y || !acts) return ae_errorf(AE_ERR_ARG, "MLA train forward: NULL argument");
    if (B <= 0 || T <= 0) return ae_errorf(AE_ERR_ARG, "MLA train forward: B = %d, T = %d", B, T);
    *acts = NULL;
    const ae_mla_dims *d = &m->d;
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv, dq = dn + dr;
    int Cd = R + dr, dkv = dn + dv, M = B * T;
    ae_mla_acts *a = NULL;
    AE_TRY(acts_alloc(d, B, T, &a));
    float *kva = ae_alloc_f32((size_t)M * Cd);      // (M, R+dr) [c | kr]
    float *kvb = ae_alloc_f32((size_t)M * H * dkv); // (M, H, dn+dv)
    if (!kva || !kvb) {
        ae_free_aligned(kva);
        ae_free_aligned(kvb);
        ae_mla_acts_free(a);
        return AE_ERR_NOMEM;
    }
    for (int i = 0; i < M; i++) a->pos[i] = i % T;
    memcpy(a->x, x, sizeof(float) * (size_t)M * d->D);
    mla_q_forward(be, m, x, M, a->pos, a->q, a->qa_raw, a->qa_n);
    be->matmul(be, kva, x, m->wkva, M, d->D, Cd);
    be->rope(be, kva + R, a->pos, M, 1, Cd, dr, d->rope_theta, AE_ROPE_INTERLEAVED);
    for (int i = 0; i < M; i++) memcpy(a->c_raw + (size_t)i * R, kva + (size_t)i * Cd, sizeof(float) * R);
    be->rmsnorm(be, a->c_n, a->c_raw, m->kv_a_norm, M, R, d->eps);
    be->matmul(be, kvb, a->c_n, m->wkvb, M, R, H * dkv);
    for (int i = 0; i < M; i++)
        for (int h = 0; h < H; h++) {
            const float *src = kvb + ((size_t)i * H + h) * dkv;
            float *kd = a->k + ((size_t)i * H + h) * dq;
            memcpy(kd, src, sizeof(float) * dn);
            memcpy(kd + dn, kva + (size_t)i * Cd + R, sizeof(float) * dr);
            memcpy(a->v + ((size_t)i * H + h) * dv, src + dn, sizeof(float) * dv);
        }
    ae_attn_args aa = ae_attn_dense(T, 0, H, H, dq, dv, 0, attn_scale(d), NULL);
    for (int b = 0; b < B; b++) {
        size_t qo = (size_t)b * T * H * dq, vo = (size_t)b * T * H * dv;
        be->attention(be, &aa, a->att + vo, a->q + qo, a->k + qo, a->v + vo);
    }
    be->matmul(be, y, a->att, m->wo, M, H * dv, d->D);
    ae_free_aligned(kva);
    ae_free_aligned(kvb);
    *acts = a;
    return AE_OK;
}

static int have_bwd(const ae_backend *be) {
    return be->matmul_bwd && be->rmsnorm_bwd && be->rope_bwd && be->attention_bwd;
}

ae_status ae_mla_backward(const ae_backend *be, const ae_mla *m, const ae_mla_acts *a,
                          const float *dy, float *dx, ae_mla *grad) {
    if (!m || !a || !dy || !grad) return ae_errorf(AE_ERR_ARG, "MLA backward: NULL argument");
    if (!have_bwd(be))
        return ae_errorf(AE_ERR_UNSUPPORTED, "MLA backward: backend %s lacks backward ops", be->name);
    const ae_mla_dims *d = &m->d, *g = &grad->d;
    if (g->D != d->D || g->H != d->H || g->q_lora_rank != d->q_lora_rank ||
        g->kv_lora_rank != d->kv_lora_rank || g->dn != d->dn || g->dr != d->dr || g->dv != d->dv)
        return ae_errorf(AE_ERR_ARG, "MLA backward: gradient buffers have other dims than the module");
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv, dq = dn + dr;
    int Cd = R + dr, dkv = dn + dv, T = a->T, M = a->B * a->T, D = d->D, ql = d->q_lora_rank;
    size_t Mz = (size_t)M;
    float *datt = ae_alloc_f32(Mz * H * dv);   // (M, H, dv)
    float *dq_ = ae_alloc_f32(Mz * H * dq);    // (M, H, dn+dr)
    float *dk = ae_alloc_f32(Mz * H * dq);     // (M, H, dn+dr)
    float *dvv = ae_alloc_f32(Mz * H * dv);    // (M, H, dv)
    float *dkvb = ae_alloc_f32(Mz * H * dkv);  // (M, H, dn+dv)
    float *dcn = ae_alloc_f32(Mz * R);         // (M, R) d(normalised latent)
    float *dcr = ae_alloc_f32(Mz * R);         // (M, R) d(raw latent)
    float *dkva = ae_alloc_f32(Mz * Cd);       // (M, R+dr) d[c | kr]
    float *dqa = ae_alloc_f32(Mz * (size_t)(ql > 0 ? ql : 1));  // (M, q_lora) d(qa_n)
    float *dqr = ae_alloc_f32(Mz * (size_t)(ql > 0 ? ql : 1));  // (M, q_lora) d(qa_raw)
    ae_status st = AE_OK;
    if (!datt || !dq_ || !dk || !dvv || !dkvb || !dcn || !dcr || !dkva || !dqa || !dqr) {
        st = AE_ERR_NOMEM;
        goto done;
    }
    if (dx) memset(dx, 0, sizeof(float) * Mz * D);
    // o_proj
    be->matmul_bwd(be, datt, grad->wo, dy, a->att, m->wo, M, H * dv, D);
    // attention, one sequence at a time
    ae_attn_args aa = ae_attn_dense(T, 0, H, H, dq, dv, 0, attn_scale(d), NULL);
    for (int b = 0; b < a->B; b++) {
        size_t qo = (size_t)b * T * H * dq, vo = (size_t)b * T * H * dv;
        be->attention_bwd(be, &aa, dq_ + qo, dk + qo, dvv + vo, NULL, datt + vo, a->q + qo,
                          a->k + qo, a->v + vo);
    }
    // split dK / dV: per-head nope and value parts, the shared rope key summed over heads
    for (size_t i = 0; i < Mz; i++) {
        float *dkr = dkva + i * Cd + R;
        for (int h = 0; h < H; h++) {
            const float *src = dk + (i * H + h) * dq;
            float *dst = dkvb + (i * H + h) * dkv;
            memcpy(dst, src, sizeof(float) * dn);
            memcpy(dst + dn, dvv + (i * H + h) * dv, sizeof(float) * dv);
            for (int e = 0; e < dr; e++) dkr[e] += src[dn + e];
        }
    }
    be->rope_bwd(be, dkva + R, a->pos, M, 1, Cd, dr, d->rope_theta, AE_ROPE_INTERLEAVED);
    be->rope_bwd(be, dq_ + dn, a->pos, M, H, dq, dr, d->rope_theta, AE_ROPE_INTERLEAVED);
    // kv_b_proj, kv_a_layernorm, kv_a_proj_with_mqa
    be->matmul_bwd(be, dcn, grad->wkvb, dkvb, a->c_n, m->wkvb, M, R, H * dkv);
    be->rmsnorm_bwd(be, dcr, grad->kv_a_norm, dcn, a->c_raw, m->kv_a_norm, M, R, d->eps);
    for (size_t i = 0; i < Mz; i++) memcpy(dkva + i * Cd, dcr + i * R, sizeof(float) * R);
    be->matmul_bwd(be, dx, grad->wkva, dkva, a->x, m->wkva, M, D, Cd);
    // query path
    if (ql == 0) {
        be->matmul_bwd(be, dx, grad->wq, dq_, a->x, m->wq, M, D, H * dq);
    } else {
        be->matmul_bwd(be, dqa, grad->wqb, dq_, a->qa_n, m->wqb, M, ql, H * dq);
        be->rmsnorm_bwd(be, dqr, grad->q_a_norm, dqa, a->qa_raw, m->q_a_norm, M, ql, d->eps);
        be->matmul_bwd(be, dx, grad->wqa, dqr, a->x, m->wqa, M, D, ql);
    }
done:
    ae_free_aligned(datt);
    ae_free_aligned(dq_);
    ae_free_aligned(dk);
    ae_free_aligned(dvv);
    ae_free_aligned(dkvb);
    ae_free_aligned(dcn);
    ae_free_aligned(dcr);
    ae_free_aligned(dkva);
    ae_free_aligned(dqa);
    ae_free_aligned(dqr);
    return st;
}
