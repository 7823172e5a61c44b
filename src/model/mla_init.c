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

// Teacher dim of student rope dim e (< dr) and of student nope dim n (< dn).
static void dim_maps(int hd, int dr, int *rope_dim, int *nope_dim) {
    int half = hd / 2, step = hd / dr, n = 0;
    for (int j = 0; j < dr / 2; j++) {
        rope_dim[2 * j] = j * step;
        rope_dim[2 * j + 1] = j * step + half;
    }
    for (int i = 0; i < hd; i++) {
        int is_rope = (i % half) % step == 0;
        if (!is_rope) nope_dim[n++] = i;
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

static ae_status check_teacher(const ae_mla *m, const ae_gqa_view *t) {
    const ae_mla_dims *d = &m->d;
    if (!t || !t->wq || !t->wk || !t->wv || !t->wo)
        return ae_errorf(AE_ERR_ARG, "MLA teacher init: missing teacher weights");
    if (t->Hq <= 0 || t->Hkv <= 0 || t->hd <= 0 || t->Hq % t->Hkv != 0 || t->hd % 2 != 0)
        return ae_errorf(AE_ERR_ARG, "MLA teacher init: bad teacher heads (Hq %d, Hkv %d, hd %d)",
                         t->Hq, t->Hkv, t->hd);
    if (d->H != t->Hq)
        return ae_errorf(AE_ERR_ARG, "MLA teacher init: %d heads, the teacher has %d query heads",
                         d->H, t->Hq);
    if (d->dr > t->hd || t->hd % d->dr != 0)
        return ae_errorf(AE_ERR_ARG,
                         "MLA teacher init: qk_rope_head_dim %d must divide the teacher's head_dim "
                         "%d (the rope part takes every (hd/dr)-th teacher rotary pair, which has "
                         "the same frequency)", d->dr, t->hd);
    if (d->dn != t->hd - d->dr)
        return ae_errorf(AE_ERR_ARG,
                         "MLA teacher init: qk_nope_head_dim %d must be head_dim - qk_rope_head_dim "
                         "= %d (the teacher's non-rope dims become the nope part)",
                         d->dn, t->hd - d->dr);
    if (d->dv != t->hd)
        return ae_errorf(AE_ERR_ARG, "MLA teacher init: v_head_dim %d must equal head_dim %d",
                         d->dv, t->hd);
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

// The module's tensors as host arrays (a cpu-backend module: the factorisation runs on the host).
typedef struct {
    float *wq, *wqa, *q_a_norm, *wqb, *wkva, *kv_a_norm, *wkvb, *wo;
} host_mla;

static ae_status init_on_host(const ae_mla_dims *d, host_mla *m, const ae_gqa_view *t,
                              double *kv_rel_err) {
    int Hq = t->Hq, Hkv = t->Hkv, hd = t->hd, D = d->D, dn = d->dn, dr = d->dr, dv = d->dv;
    int dq = dn + dr, R = d->kv_lora_rank, ql = d->q_lora_rank, grp = Hq / Hkv;
    int Mq = Hq * dq, Mkv = Hkv * (dn + hd);
    int *rope_dim = malloc(sizeof(int) * (size_t)dr), *nope_dim = malloc(sizeof(int) * (size_t)(dn + 1));
    double *fold = malloc(sizeof(double) * (size_t)hd * D);  // (hd, D) one folded head
    double *Q = malloc(sizeof(double) * (size_t)Mq * D);     // (Hq*(dn+dr), D) student q rows
    double *W = malloc(sizeof(double) * (size_t)Mkv * D);    // (Hkv*(dn+hd), D) stacked kv rows
    double *kr = calloc((size_t)dr * D, sizeof(double));     // (dr, D) shared rope key rows
    float *kvb = ae_alloc_f32((size_t)Mkv * R);              // (Hkv*(dn+hd), R) U_R·S_R
    ae_status st = AE_OK;
    if (!rope_dim || !nope_dim || !fold || !Q || !W || !kr || !kvb) {
        st = ae_errorf(AE_ERR_NOMEM, "MLA teacher init: out of memory");
        goto done;
    }
    dim_maps(hd, dr, rope_dim, nope_dim);
    size_t rowb = sizeof(double) * (size_t)D;
    for (int h = 0; h < Hq; h++) { // step 1 + 3: the student's query rows
        fold_head(t->wq + (size_t)h * hd * D, t->q_norm, t->input_norm, hd, D, fold);
        for (int n = 0; n < dn; n++) memcpy(Q + ((size_t)h * dq + n) * D, fold + (size_t)nope_dim[n] * D, rowb);
        for (int e = 0; e < dr; e++)
            memcpy(Q + ((size_t)h * dq + dn + e) * D, fold + (size_t)rope_dim[e] * D, rowb);
    }
    for (int g = 0; g < Hkv; g++) { // step 1 + 4 + 5: nope key rows, mean rope key, values
        fold_head(t->wk + (size_t)g * hd * D, t->k_norm, t->input_norm, hd, D, fold);
        for (int n = 0; n < dn; n++) memcpy(W + ((size_t)g * dn + n) * D, fold + (size_t)nope_dim[n] * D, rowb);
        for (int e = 0; e < dr; e++)
            for (int c = 0; c < D; c++) kr[(size_t)e * D + c] += fold[(size_t)rope_dim[e] * D + c] / Hkv;
        for (int i = 0; i < hd; i++)
            for (int c = 0; c < D; c++)
                W[((size_t)Hkv * dn + (size_t)g * hd + i) * D + c] = t->wv[((size_t)g * hd + i) * D + c];
    }
    if (ql == 0) {
        for (size_t i = 0; i < (size_t)Mq * D; i++) m->wq[i] = (float)Q[i];
    } else {
        double qrel;
        st = factor(Q, Mq, D, ql, t->input_norm, m->wqa, m->wqb, m->q_a_norm, &qrel);
        if (st != AE_OK) goto done;
    }
    double rel = 0.0;
    st = factor(W, Mkv, D, R, t->input_norm, m->wkva, kvb, m->kv_a_norm, &rel);
    if (st != AE_OK) goto done;
    for (int e = 0; e < dr; e++)
        for (int c = 0; c < D; c++) m->wkva[((size_t)R + e) * D + c] = (float)kr[(size_t)e * D + c];
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
done:
    free(rope_dim);
    free(nope_dim);
    free(fold);
    free(Q);
    free(W);
    free(kr);
    ae_free_aligned(kvb);
    return st;
}

ae_status ae_mla_init_from_teacher(ae_mla *m, const ae_gqa_view *t, double *kv_rel_err) {
    AE_TRY(check_teacher(m, t));
    ae_mla h;
    AE_TRY(ae_mla_init(&h, &m->d, ae_backend_cpu()));
    host_mla hm = {ae_f32(h.wq),   ae_f32(h.wqa),       ae_f32(h.q_a_norm), ae_f32(h.wqb),
                   ae_f32(h.wkva), ae_f32(h.kv_a_norm), ae_f32(h.wkvb),     ae_f32(h.wo)};
    ae_status st = init_on_host(&m->d, &hm, t, kv_rel_err);
    ae_param_list src = ae_mla_params(&h), dst = ae_mla_params(m);
    for (int i = 0; st == AE_OK && i < src.n; i++)
        st = m->be->upload(m->be, dst.p[i].data, ae_f32(src.p[i].data), AE_DT_F32,
                           (size_t)ae_param_numel(&src.p[i]));
    ae_mla_free(&h);
    return st;
}
