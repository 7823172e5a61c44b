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
    ae_scratch mem; // every buffer below
    ae_ptr pos;     // (B*T) I32 position of each row: t
    ae_ptr x;       // (B*T, D) the input, borrowed (not copied): the caller keeps it until the
                    // backward, or rebinds it to the same values (ae_mla_acts_rebind)
    ae_ptr qa_raw;  // (B*T, q_lora) x·Wqaᵀ           (q_lora_rank > 0)
    ae_ptr qa_n;    // (B*T, q_lora) RMSNorm of it     (q_lora_rank > 0)
    ae_ptr q;       // (B*T, H, dn+dr) rope'd queries
    ae_ptr c_raw;   // (B*T, R) latent before kv_a_layernorm
    ae_ptr c_n;     // (B*T, R) latent after it
    ae_ptr k;       // (B*T, H, dn+dr) keys [k_nope_h | RoPE(kr)]
    ae_ptr v;       // (B*T, H, dv)
    ae_ptr att;     // (B*T, H, dv) attention output (o_proj input)
    ae_ptr lse;     // (B*T, H) F32 its rows' log-sum-exp (ae_attn_args.lse): the backward
                    // uses att and lse instead of running the attention forward again
};

void ae_mla_acts_free(ae_mla_acts *a) {
    if (!a) return;
    ae_scratch_free(&a->mem);
    free(a);
}

static ae_status acts_alloc(const ae_backend *be, const ae_mla_dims *d, int B, int T,
                            ae_mla_acts **out) {
    ae_mla_acts *a = calloc(1, sizeof *a);
    if (!a) return ae_errorf(AE_ERR_NOMEM, "MLA: out of memory for activations");
    a->B = B;
    a->T = T;
    size_t M = (size_t)B * (size_t)T, H = (size_t)d->H, R = (size_t)d->kv_lora_rank;
    size_t dq = (size_t)(d->dn + d->dr), ql = (size_t)d->q_lora_rank;
    ae_dtype at = be->act_dtype;
    ae_scratch *s = &a->mem;
    ae_scratch_init(s, be);
    a->pos = ae_scratch_positions(s, (int)M, 0, T);
    if (ql > 0) {
        a->qa_raw = ae_scratch_alloc(s, M * ql, at);
        a->qa_n = ae_scratch_alloc(s, M * ql, at);
    }
    a->q = ae_scratch_alloc(s, M * H * dq, at);
    a->c_raw = ae_scratch_alloc(s, M * R, at);
    a->c_n = ae_scratch_alloc(s, M * R, at);
    a->k = ae_scratch_alloc(s, M * H * dq, at);
    a->v = ae_scratch_alloc(s, M * H * (size_t)d->dv, at);
    a->att = ae_scratch_alloc(s, M * H * (size_t)d->dv, at);
    a->lse = ae_scratch_alloc(s, M * H, AE_DT_F32);
    if (s->failed) {
        ae_mla_acts_free(a);
        return ae_errorf(AE_ERR_NOMEM, "MLA: out of memory for activations (%d x %d tokens)", B, T);
    }
    *out = a;
    return AE_OK;
}

void ae_mla_acts_rebind(ae_mla_acts *a, ae_ptr x) { a->x = x; }

void ae_mla_acts_output(const ae_backend *be, const ae_mla *m, const ae_mla_acts *a, ae_ptr y) {
    const ae_mla_dims *d = &m->d;
    ae_matmul(be, y, a->att, m->wo, a->B * a->T, d->H * d->dv, d->D);
}

static float attn_scale(const ae_mla_dims *d) { return (float)(1.0 / sqrt((double)(d->dn + d->dr))); }

ae_status ae_mla_train_forward(const ae_backend *be, const ae_mla *m, ae_ptr x, int B, int T,
                               ae_ptr y, ae_mla_acts **acts) {
    if (!m || !m->be || !acts) return ae_errorf(AE_ERR_ARG, "MLA train forward: NULL argument");
    if (B <= 0 || T <= 0) return ae_errorf(AE_ERR_ARG, "MLA train forward: B = %d, T = %d", B, T);
    *acts = NULL;
    const ae_mla_dims *d = &m->d;
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv, dq = dn + dr;
    int Cd = R + dr, dkv = dn + dv, M = B * T;
    ae_mla_acts *a = NULL;
    AE_TRY(acts_alloc(be, d, B, T, &a));
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr kva = ae_scratch_alloc(&s, (size_t)M * Cd, be->act_dtype);      // (M, R+dr) [c | kr]
    ae_ptr kvb = ae_scratch_alloc(&s, (size_t)M * H * dkv, be->act_dtype); // (M, H, dn+dv)
    if (s.failed) {
        ae_scratch_free(&s);
        ae_mla_acts_free(a);
        return AE_ERR_NOMEM;
    }
    a->x = x;
    mla_q_forward(be, m, x, M, a->pos, a->q, a->qa_raw, a->qa_n);
    ae_matmul(be, kva, x, m->wkva, M, d->D, Cd);
    be->rope(be, ae_ptr_at(kva, (size_t)R), a->pos, M, 1, Cd, dr, d->rope_theta, AE_ROPE_INTERLEAVED);
    be->copy_rows(be, a->c_raw, R, kva, Cd, M, R);
    be->rmsnorm(be, a->c_n, a->c_raw, m->kv_a_norm, M, R, R, d->eps);
    ae_matmul(be, kvb, a->c_n, m->wkvb, M, R, H * dkv);
    mla_kv_split(be, d, M, kvb, a->k, a->v);
    // the shared rope key joins every head: K row (m, h) columns dn.. = kr row m (one call)
    be->copy_rows_rep(be, ae_ptr_at(a->k, (size_t)dn), dq, ae_ptr_at(kva, (size_t)R), Cd, M, H, dr);
    ae_attn_args aa = ae_attn_dense(T, 0, H, H, dq, dv, 0, attn_scale(d), ae_ptr_null());
    for (int b = 0; b < B; b++) {
        size_t qo = (size_t)b * T * H * dq, vo = (size_t)b * T * H * dv;
        aa.lse = ae_ptr_at(a->lse, (size_t)b * T * H);
        be->attention(be, &aa, ae_ptr_at(a->att, vo), ae_ptr_at(a->q, qo), ae_ptr_at(a->k, qo),
                      ae_ptr_at(a->v, vo));
    }
    ae_mla_acts_output(be, m, a, y);
    ae_scratch_free(&s);
    *acts = a;
    return AE_OK;
}

// dx (M, K) = dy (M, N) · w (N, K), overwriting dx (for a gradient nothing else has added to
// yet: no zero fill first), and dw (N, K) += dyᵀ · x as ae_matmul_bwd. dx may be null.
static void matmul_bwd_first(const ae_backend *be, ae_ptr dx, ae_ptr dw, ae_ptr dy, ae_ptr x,
                             ae_ptr w, int M, int K, int N) {
    if (!ae_ptr_is_null(dx)) {
        ae_gemm_args g = {.M = M, .N = K, .K = N, .batch = 1, .lda = N, .ldb = K, .ldy = K,
                          .alpha = 1.0f, .beta = 0.0f};
        be->gemm(be, &g, dx, dy, w);
    }
    ae_matmul_bwd(be, ae_ptr_null(), dw, dy, x, w, M, K, N);
}

static int have_bwd(const ae_backend *be) {
    return be->rmsnorm_bwd && be->rope_bwd && be->attention_bwd;
}

ae_status ae_mla_backward(const ae_backend *be, const ae_mla *m, const ae_mla_acts *a, ae_ptr dy,
                          ae_ptr dx, ae_mla *grad) {
    if (!m || !a || !grad || !grad->be) return ae_errorf(AE_ERR_ARG, "MLA backward: NULL argument");
    if (!have_bwd(be))
        return ae_errorf(AE_ERR_UNSUPPORTED, "MLA backward: the %s backend has no training ops yet",
                         be->name);
    const ae_mla_dims *d = &m->d, *g = &grad->d;
    if (g->D != d->D || g->H != d->H || g->q_lora_rank != d->q_lora_rank ||
        g->kv_lora_rank != d->kv_lora_rank || g->dn != d->dn || g->dr != d->dr || g->dv != d->dv)
        return ae_errorf(AE_ERR_ARG, "MLA backward: gradient buffers have other dims than the module");
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv, dq = dn + dr;
    int Cd = R + dr, dkv = dn + dv, T = a->T, M = a->B * a->T, D = d->D, ql = d->q_lora_rank;
    size_t Mz = (size_t)M, qlz = (size_t)(ql > 0 ? ql : 1);
    ae_dtype at = be->act_dtype;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr datt = ae_scratch_alloc(&s, Mz * H * dv, at);  // (M, H, dv)
    ae_ptr dq_ = ae_scratch_alloc(&s, Mz * H * dq, at);   // (M, H, dn+dr)
    ae_ptr dk = ae_scratch_alloc(&s, Mz * H * dq, at);    // (M, H, dn+dr)
    ae_ptr dvv = ae_scratch_alloc(&s, Mz * H * dv, at);   // (M, H, dv)
    ae_ptr dkvb = ae_scratch_alloc(&s, Mz * H * dkv, at); // (M, H, dn+dv)
    ae_ptr dcn = ae_scratch_alloc(&s, Mz * R, at);        // (M, R) d(normalised latent)
    ae_ptr dcr = ae_scratch_alloc(&s, Mz * R, at);        // (M, R) d(raw latent)
    ae_ptr dkva = ae_scratch_alloc(&s, Mz * Cd, at);      // (M, R+dr) d[c | kr]
    ae_ptr dqa = ae_scratch_alloc(&s, Mz * qlz, at);      // (M, q_lora) d(qa_n)
    ae_ptr dqr = ae_scratch_alloc(&s, Mz * qlz, at);      // (M, q_lora) d(qa_raw)
    if (s.failed) {
        ae_scratch_free(&s);
        return AE_ERR_NOMEM;
    }
    // the gradients that ops below add into start at zero (rmsnorm_bwd's dx); datt, dcn, dqa and
    // dx are first written by overwriting products, dkva by sum_rows_rep and a copy, dk and dv by
    // attention_bwd (dkv_set)
    ae_ptr acc[] = {dcr, dqr};
    size_t accn[] = {Mz * R, Mz * qlz};
    for (size_t i = 0; i < sizeof acc / sizeof *acc; i++) be->fill(be, acc[i], accn[i], 0.0f);
    // o_proj
    matmul_bwd_first(be, datt, grad->wo, dy, a->att, m->wo, M, H * dv, D);
    // attention, one sequence at a time, from the forward's saved output and log-sum-exp
    ae_attn_args aa = ae_attn_dense(T, 0, H, H, dq, dv, 0, attn_scale(d), ae_ptr_null());
    aa.dkv_set = 1;
    for (int b = 0; b < a->B; b++) {
        size_t qo = (size_t)b * T * H * dq, vo = (size_t)b * T * H * dv;
        aa.lse = ae_ptr_at(a->lse, (size_t)b * T * H);
        be->attention_bwd(be, &aa, ae_ptr_at(dq_, qo), ae_ptr_at(dk, qo), ae_ptr_at(dvv, vo),
                          ae_ptr_null(), ae_ptr_at(datt, vo), ae_ptr_at(a->att, vo),
                          ae_ptr_at(a->q, qo), ae_ptr_at(a->k, qo), ae_ptr_at(a->v, vo));
    }
    // split dK / dV into per-head [dk_nope | dv]; the shared rope key's gradient is the sum over
    // heads (the adjoint of the forward's copy_rows_rep): per row, dkr (dr) = Σ_h dK_rope (h, dr)
    mla_kv_join(be, d, M, dk, dvv, dkvb);
    be->sum_rows_rep(be, ae_ptr_at(dkva, (size_t)R), Cd, ae_ptr_at(dk, (size_t)dn), dq, M, H, dr);
    be->rope_bwd(be, ae_ptr_at(dkva, (size_t)R), a->pos, M, 1, Cd, dr, d->rope_theta, AE_ROPE_INTERLEAVED);
    be->rope_bwd(be, ae_ptr_at(dq_, (size_t)dn), a->pos, M, H, dq, dr, d->rope_theta, AE_ROPE_INTERLEAVED);
    // kv_b_proj, kv_a_layernorm, kv_a_proj_with_mqa
    matmul_bwd_first(be, dcn, grad->wkvb, dkvb, a->c_n, m->wkvb, M, R, H * dkv);
    be->rmsnorm_bwd(be, dcr, grad->kv_a_norm, dcn, a->c_raw, m->kv_a_norm, M, R, d->eps);
    be->copy_rows(be, dkva, Cd, dcr, R, M, R); // dkva complete: [dcr | the dkr product above]
    matmul_bwd_first(be, dx, grad->wkva, dkva, a->x, m->wkva, M, D, Cd);
    // query path
    if (ql == 0) {
        ae_matmul_bwd(be, dx, grad->wq, dq_, a->x, m->wq, M, D, H * dq);
    } else {
        matmul_bwd_first(be, dqa, grad->wqb, dq_, a->qa_n, m->wqb, M, ql, H * dq);
        be->rmsnorm_bwd(be, dqr, grad->q_a_norm, dqa, a->qa_raw, m->q_a_norm, M, ql, d->eps);
        ae_matmul_bwd(be, dx, grad->wqa, dqr, a->x, m->wqa, M, D, ql);
    }
    ae_scratch_free(&s);
    return AE_OK;
}
