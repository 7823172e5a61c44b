// MLA teacher initialisation (`--init teacher`): a Qwen3 GQA attention module → MLA weights.
//
// Method. Notation: teacher Hq query heads, Hkv kv heads, head dim hd, hidden size D; student
// dims dn (qk_nope), dr (qk_rope), dv, R (kv_lora_rank), rq (q_lora_rank). Requirements:
// H == Hq, Hq % Hkv == 0, dr even, dr <= hd, hd % dr == 0, dn == hd − dr, dv == hd
// (AE_ERR_ARG otherwise).
//
// 0. Input model. The module's input is x = RMSNorm(h) = w_in ⊙ z, where w_in is the layer's
//    input_layernorm weight (ae_gqa_view.input_norm; taken as 1 when NULL) and z has unit RMS.
//    The scales below are chosen for z isotropic: E[x·xᵀ] = diag(w_in²).
// 1. Folding the QK-norms. The teacher computes q_h = RoPE_half(RMSNorm(Wq_h·x)·q_norm) and
//    k_g = RoPE_half(RMSNorm(Wk_g·x)·k_norm). The norm weights are a diagonal scaling and fold
//    into the rows exactly. The per-token division by rms(Wq_h·x) cannot be folded (it is the
//    approximation of the method); it is replaced by its typical value
//    rho_h = sqrt(E[rms(W_h·x)²]) = ‖W_h·diag(w_in)‖_F / sqrt(hd). Folded maps (hd, D):
//        Q_h = diag(q_norm)·Wq_h / rho(Wq_h),   K_g = diag(k_norm)·Wk_g / rho(Wk_g);
//    V_g = Wv_g unchanged.
// 2. Splitting rope / nope dimensions. Teacher pair i (dims i and i + hd/2) rotates at
//    theta^(−2i/hd); MLA's interleaved pair j (dims 2j, 2j+1 of the rope part) at theta^(−2j/dr).
//    Teacher pair i_j = j·hd/dr has exactly MLA pair j's frequency, so the rope part takes
//    pairs i_j, j = 0..dr/2−1, in the interleaved order (dim i_j → 2j, dim i_j + hd/2 → 2j+1),
//    and the nope part takes the remaining hd − dr dims in increasing order. Scores of the rope
//    part are exact; the nope dims lose their rotation.
// 3. Query. Student q_h = [Q_h rows of the nope dims | Q_h rows of the rope pairs, interleaved].
//    q_lora_rank == 0: q_proj = that (H·(dn+dr), D) matrix. q_lora_rank = rq > 0: truncated SVD
//    Q = U·S·Vᵀ; q_a_proj = V_rqᵀ (orthonormal rows; when rq exceeds the rank, further rows of a
//    full orthonormal basis of R^D, zero rows beyond D), q_b_proj = U_rq·S_rq (zero columns
//    beyond the rank), q_a_layernorm = gamma = sqrt(E|V_rqᵀ·x|² / rq)
//    = sqrt(Σ_{i<rq} Σ_c V_ci²·w_in_c² / rq) — the latent's typical RMS, so the RMSNorm between
//    the factors undoes its per-token division on average (1 when w_in = 1 and rq <= D).
//    Why orthonormal rows and not sqrt(S) on both sides: the latent V_rqᵀ·x is an isometric
//    projection of x, whose RMS varies little across tokens (for rq >= D it is exactly rms(x));
//    weighting its dims by sqrt(S) would make the RMS follow the few top directions.
// 4. Shared rope key. kv_a_proj_with_mqa rows R..R+dr−1 = the mean over the Hkv kv heads of
//    their K_g rope rows (interleaved order). Exact when Hkv == 1.
// 5. Latent kv. Stack the folded nope key rows and the value rows,
//        W = [K_1,nope; …; K_Hkv,nope; V_1; …; V_Hkv]     (Hkv·(dn+hd), D),
//    truncated SVD W ≈ W_R = U_R·S_R·V_Rᵀ. kv_a_proj_with_mqa rows 0..R−1 = V_Rᵀ (orthonormal,
//    more basis rows when R exceeds the rank, zero rows beyond D), kv_a_layernorm = gamma as in
//    step 3 (with R), kv_b_proj for query head h with kv head g = h / (Hq/Hkv): k_nope rows =
//    the rows of U_R·S_R belonging to K_g,nope, v rows = those of V_g.
//    Reported kv_rel_err = ‖W − W_R‖_F / ‖W‖_F = sqrt(Σ_{i>=R} s_i² / Σ s_i²) (0 when
//    R >= rank W).
// 6. o_proj = the teacher's o_proj (head h's value dims keep the teacher's order).
//
// Other inits. Steps 0, 1, 3, 5 and 6 are shared (mla_internal.h: mla_maps_init folds,
// mla_maps_finish factorises); `--init mha2mla` (mla_init_mha2mla.c) and `--init transmla`
// (mla_init_transmla.c) replace steps 2 and 4: which teacher rotary components become the rope
// part and the shared rope key. Every init reports the figures of merit of mla_init_eval.c,
// computed from the returned weights.
//
// Exact property (tested): with R = D (and rq = D or 0) and inputs with rms(x) = rms(w_in), the
// student equals the "linearised teacher": the teacher with each per-token q/k RMS replaced by
// rho (step 1), the nope pairs unrotated and the rope keys averaged over kv heads (exact when
// Hkv == 1) — up to the RMSNorm eps.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/attn_mla.h"
#include "model/mla_internal.h"

double mla_wdot(const double *a, const double *b, const float *w, int D) {
    double s = 0.0;
    if (!w) {
        for (int c = 0; c < D; c++) s += a[c] * b[c];
        return s;
    }
    for (int c = 0; c < D; c++) s += a[c] * b[c] * ((double)w[c] * w[c]);
    return s;
}

void mla_dim_maps(const mla_maps *mp, const int *pair, int *rope_dim, int *nope_dim) {
    int half = mp->half, n = 0;
    for (int j = 0; j < mp->dr / 2; j++) {
        int i = pair ? pair[j] : j * mp->s;
        rope_dim[2 * j] = i;
        rope_dim[2 * j + 1] = i + half;
    }
    for (int i = 0; i < mp->hd; i++) {
        int p = i % half, j = p / mp->s;
        if (p != (pair ? pair[j] : j * mp->s)) nope_dim[n++] = i;
    }
}

// Folded rows of one head: out (hd, D) = diag(norm)·W_h / rho, rho = ‖W_h·diag(w_in)‖_F/sqrt(hd)
// (step 1; w_in NULL: 1).
static void fold_head(const float *w, const float *norm, const float *w_in, int hd, int D,
                      double *out) {
    double ss = 0.0;
    for (size_t i = 0; i < (size_t)hd * D; i++) {
        double a = (double)w[i] * (w_in ? w_in[i % D] : 1.0f);
        ss += a * a;
    }
    double sc = ss > 0.0 ? sqrt((double)hd / ss) : 1.0;
    for (int i = 0; i < hd; i++)
        for (int c = 0; c < D; c++)
            out[(size_t)i * D + c] = (double)w[(size_t)i * D + c] * (norm ? norm[i] : 1.0f) * sc;
}

ae_status mla_check_teacher(const ae_mla *m, const ae_gqa_view *t, const char *method) {
    const ae_mla_dims *d = &m->d;
    if (!t || !t->wq || !t->wk || !t->wv || !t->wo)
        return ae_errorf(AE_ERR_ARG, "MLA %s init: missing teacher weights", method);
    if (t->Hq <= 0 || t->Hkv <= 0 || t->hd <= 0 || t->Hq % t->Hkv != 0 || t->hd % 2 != 0)
        return ae_errorf(AE_ERR_ARG, "MLA %s init: bad teacher heads (Hq %d, Hkv %d, hd %d)",
                         method, t->Hq, t->Hkv, t->hd);
    if (d->H != t->Hq)
        return ae_errorf(AE_ERR_ARG, "MLA %s init: %d heads, the teacher has %d query heads",
                         method, d->H, t->Hq);
    if (d->dr > t->hd || t->hd % d->dr != 0)
        return ae_errorf(AE_ERR_ARG,
                         "MLA %s init: qk_rope_head_dim %d must divide the teacher's head_dim "
                         "%d (each rope slot stands for hd/dr teacher rotary pairs, the first of "
                         "which has the slot's frequency)", method, d->dr, t->hd);
    if (d->dn != t->hd - d->dr)
        return ae_errorf(AE_ERR_ARG,
                         "MLA %s init: qk_nope_head_dim %d must be head_dim - qk_rope_head_dim "
                         "= %d (the teacher's non-rope dims become the nope part)",
                         method, d->dn, t->hd - d->dr);
    if (d->dv != t->hd)
        return ae_errorf(AE_ERR_ARG, "MLA %s init: v_head_dim %d must equal head_dim %d",
                         method, d->dv, t->hd);
    return AE_OK;
}

void mla_maps_free(mla_maps *mp) {
    free(mp->Qf);
    free(mp->Kf);
    free(mp->Q);
    free(mp->W);
    free(mp->kr);
    memset(mp, 0, sizeof *mp);
}

ae_status mla_maps_init(mla_maps *mp, const ae_mla_dims *d, const ae_gqa_view *t) {
    int Hq = t->Hq, Hkv = t->Hkv, hd = t->hd, D = d->D;
    *mp = (mla_maps){.t = t, .Hq = Hq, .Hkv = Hkv, .hd = hd, .D = D, .dn = d->dn, .dr = d->dr,
                     .s = hd / d->dr, .half = hd / 2};
    size_t rows_q = (size_t)Hq * (d->dn + d->dr), rows_w = (size_t)Hkv * (d->dn + hd);
    mp->Qf = malloc(sizeof(double) * (size_t)Hq * hd * D);
    mp->Kf = malloc(sizeof(double) * (size_t)Hkv * hd * D);
    mp->Q = malloc(sizeof(double) * rows_q * D);
    mp->W = malloc(sizeof(double) * rows_w * D);
    mp->kr = calloc((size_t)d->dr * D, sizeof(double));
    if (!mp->Qf || !mp->Kf || !mp->Q || !mp->W || !mp->kr) {
        mla_maps_free(mp);
        return ae_errorf(AE_ERR_NOMEM, "MLA teacher init: out of memory for the folded maps");
    }
    size_t head = (size_t)hd * D;
    for (int h = 0; h < Hq; h++)
        fold_head(t->wq + h * head, t->q_norm, t->input_norm, hd, D, mp->Qf + h * head);
    for (int g = 0; g < Hkv; g++)
        fold_head(t->wk + g * head, t->k_norm, t->input_norm, hd, D, mp->Kf + g * head);
    double *V = mp->W + (size_t)Hkv * d->dn * D; // (Hkv*hd, D) value rows
    for (size_t i = 0; i < (size_t)Hkv * head; i++) V[i] = t->wv[i];
    return AE_OK;
}

ae_status mla_maps_split(mla_maps *mp, const int *pair) {
    int dn = mp->dn, dr = mp->dr, dq = dn + dr, hd = mp->hd, D = mp->D, Hkv = mp->Hkv;
    int *rope_dim = malloc(sizeof(int) * (size_t)dr), *nope_dim = malloc(sizeof(int) * (size_t)(dn + 1));
    if (!rope_dim || !nope_dim) {
        free(rope_dim);
        free(nope_dim);
        return ae_errorf(AE_ERR_NOMEM, "MLA teacher init: out of memory");
    }
    mla_dim_maps(mp, pair, rope_dim, nope_dim);
    size_t rowb = sizeof(double) * (size_t)D;
    for (int h = 0; h < mp->Hq; h++) { // step 2 + 3: the student's query rows
        const double *f = mp->Qf + (size_t)h * hd * D;
        for (int n = 0; n < dn; n++) memcpy(mp->Q + ((size_t)h * dq + n) * D, f + (size_t)nope_dim[n] * D, rowb);
        for (int e = 0; e < dr; e++) memcpy(mp->Q + ((size_t)h * dq + dn + e) * D, f + (size_t)rope_dim[e] * D, rowb);
    }
    memset(mp->kr, 0, rowb * (size_t)dr);
    for (int g = 0; g < Hkv; g++) { // step 2 + 4: nope key rows, mean rope key
        const double *f = mp->Kf + (size_t)g * hd * D;
        for (int n = 0; n < dn; n++) memcpy(mp->W + ((size_t)g * dn + n) * D, f + (size_t)nope_dim[n] * D, rowb);
        for (int e = 0; e < dr; e++)
            for (int c = 0; c < D; c++) mp->kr[(size_t)e * D + c] += f[(size_t)rope_dim[e] * D + c] / Hkv;
    }
    free(rope_dim);
    free(nope_dim);
    return AE_OK;
}

// Low-rank factor pair of W (M, D) at rank r (steps 3 and 5): a (r, D) = V_rᵀ (basis rows),
// b (M, r) = U_r·S_r, norm (r) = gamma, the typical RMS of a·x. Relative error via *rel.
static ae_status factor(const double *W, int M, int D, int r, const float *w_in, float *a,
                        float *b, float *norm, double *rel) {
    int k = M < D ? M : D, full = r > k;
    double *U = malloc(sizeof(double) * (size_t)M * k);           // (M, k)
    double *S = malloc(sizeof(double) * (size_t)k);               // (k)
    double *Vt = malloc(sizeof(double) * (size_t)(full ? D : k) * D); // (k or D, D)
    if (!U || !S || !Vt) {
        free(U);
        free(S);
        free(Vt);
        return ae_errorf(AE_ERR_NOMEM, "MLA teacher init: out of memory for the SVD");
    }
    ae_status st = mla_svd(M, D, W, U, S, Vt, full);
    if (st == AE_OK) {
        int nv = full ? D : k;
        for (int i = 0; i < r; i++)
            for (int c = 0; c < D; c++) a[(size_t)i * D + c] = i < nv ? (float)Vt[(size_t)i * D + c] : 0.0f;
        for (int row = 0; row < M; row++)
            for (int i = 0; i < r; i++)
                b[(size_t)row * r + i] = i < k ? (float)(U[(size_t)row * k + i] * S[i]) : 0.0f;
        double e = 0.0; // E|a·x|² for x = w_in ⊙ z, z of unit RMS: Σ_i Σ_c a_ic² w_in_c²
        for (int i = 0; i < r && i < nv; i++)
            for (int c = 0; c < D; c++) {
                double v = Vt[(size_t)i * D + c] * (w_in ? w_in[c] : 1.0f);
                e += v * v;
            }
        float g = e > 0.0 ? (float)sqrt(e / r) : 1.0f;
        for (int i = 0; i < r; i++) norm[i] = g;
        double tot = 0.0, tail = 0.0;
        for (int i = 0; i < k; i++) {
            tot += S[i] * S[i];
            if (i >= r) tail += S[i] * S[i];
        }
        *rel = tot > 0.0 ? sqrt(tail / tot) : 0.0;
    }
    free(U);
    free(S);
    free(Vt);
    return st;
}

ae_status mla_maps_finish(const ae_mla_dims *d, const mla_maps *mp, mla_host *m, double *kv_rel_err) {
    const ae_gqa_view *t = mp->t;
    int Hq = mp->Hq, Hkv = mp->Hkv, hd = mp->hd, D = d->D, dn = d->dn, dr = d->dr, dv = d->dv;
    int R = d->kv_lora_rank, ql = d->q_lora_rank, grp = Hq / Hkv;
    int Mq = Hq * (dn + dr), Mkv = Hkv * (dn + hd);
    float *kvb = ae_alloc_f32((size_t)Mkv * R); // (Hkv*(dn+hd), R) U_R·S_R
    if (!kvb) return ae_errorf(AE_ERR_NOMEM, "MLA teacher init: out of memory");
    ae_status st = AE_OK;
    if (ql == 0) {
        for (size_t i = 0; i < (size_t)Mq * D; i++) m->wq[i] = (float)mp->Q[i];
    } else {
        double qrel;
        st = factor(mp->Q, Mq, D, ql, t->input_norm, m->wqa, m->wqb, m->q_a_norm, &qrel);
    }
    double rel = 0.0;
    if (st == AE_OK) st = factor(mp->W, Mkv, D, R, t->input_norm, m->wkva, kvb, m->kv_a_norm, &rel);
    if (st == AE_OK) {
        for (int e = 0; e < dr; e++)
            for (int c = 0; c < D; c++) m->wkva[((size_t)R + e) * D + c] = (float)mp->kr[(size_t)e * D + c];
        size_t rowf = sizeof(float) * (size_t)R;
        for (int h = 0; h < Hq; h++) {
            int g = h / grp;
            float *dst = m->wkvb + (size_t)h * (dn + dv) * R; // (dn+dv, R) rows of head h
            for (int n = 0; n < dn; n++) memcpy(dst + (size_t)n * R, kvb + ((size_t)g * dn + n) * R, rowf);
            for (int i = 0; i < dv; i++)
                memcpy(dst + (size_t)(dn + i) * R, kvb + ((size_t)Hkv * dn + (size_t)g * hd + i) * R, rowf);
        }
        memcpy(m->wo, t->wo, sizeof(float) * (size_t)D * Hq * hd);
        if (kv_rel_err) *kv_rel_err = rel;
    }
    ae_free_aligned(kvb);
    return st;
}

static const char *method_name(ae_mla_init_method how) {
    return how == AE_MLA_INIT_MHA2MLA ? "mha2mla" : how == AE_MLA_INIT_TRANSMLA ? "transmla" : "teacher";
}

// The maps of method how, factorised into the host module, with the figures of merit.
static ae_status init_on_host(const ae_mla_dims *d, mla_host *m, const ae_gqa_view *t,
                              ae_mla_init_method how, ae_mla_init_stats *stats) {
    mla_maps mp;
    AE_TRY(mla_maps_init(&mp, d, t));
    ae_status st = how == AE_MLA_INIT_MHA2MLA    ? mla_fill_mha2mla(&mp, &stats->rope_shifted)
                   : how == AE_MLA_INIT_TRANSMLA ? mla_fill_transmla(&mp)
                                                 : mla_maps_split(&mp, NULL);
    if (st == AE_OK) st = mla_maps_finish(d, &mp, m, &stats->kv_rel_err);
    if (st == AE_OK) mla_eval_rope(d, &mp, m, stats);
    mla_maps_free(&mp);
    return st;
}

ae_status ae_mla_init_teacher_method(ae_mla *m, const ae_gqa_view *t, ae_mla_init_method how,
                                     ae_mla_init_stats *stats) {
    if (how != AE_MLA_INIT_TEACHER && how != AE_MLA_INIT_MHA2MLA && how != AE_MLA_INIT_TRANSMLA)
        return ae_errorf(AE_ERR_ARG, "MLA init: unknown method %d (teacher, mha2mla, transmla)", (int)how);
    AE_TRY(mla_check_teacher(m, t, method_name(how)));
    ae_mla_init_stats own;
    if (!stats) stats = &own;
    memset(stats, 0, sizeof *stats);
    ae_mla h;
    AE_TRY(ae_mla_init(&h, &m->d, ae_backend_cpu()));
    mla_host hm = {ae_f32(h.wq),   ae_f32(h.wqa),       ae_f32(h.q_a_norm), ae_f32(h.wqb),
                   ae_f32(h.wkva), ae_f32(h.kv_a_norm), ae_f32(h.wkvb),     ae_f32(h.wo)};
    ae_status st = init_on_host(&m->d, &hm, t, how, stats);
    ae_param_list src = ae_mla_params(&h), dst = ae_mla_params(m);
    for (int i = 0; st == AE_OK && i < src.n; i++)
        st = m->be->upload(m->be, dst.p[i].data, ae_f32(src.p[i].data), AE_DT_F32,
                           (size_t)ae_param_numel(&src.p[i]));
    ae_mla_free(&h);
    return st;
}

ae_status ae_mla_init_from_teacher(ae_mla *m, const ae_gqa_view *t, double *kv_rel_err) {
    ae_mla_init_stats stats;
    AE_TRY(ae_mla_init_teacher_method(m, t, AE_MLA_INIT_TEACHER, &stats));
    if (kv_rel_err) *kv_rel_err = stats.kv_rel_err;
    return AE_OK;
}
