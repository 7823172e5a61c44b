// Figures of merit of an MLA teacher initialisation, computed from the returned weights
// (ae_mla_init_stats; printed per layer by `attnedit convert`, stored in conversion.json).
//
// Rope-part logit error. A rotary pair with query rows (qx, qy) and key rows (kx, ky) adds to
// the logit of a query at position m and a key at n, for inputs x_m, x_n:
//     cos(ωΔ)·x_mᵀ C x_n + sin(ωΔ)·x_mᵀ S x_n,  Δ = m − n,
//     C = qxᵀkx + qyᵀky,  S = qxᵀky − qyᵀkx   (D x D; the sign of S is a convention).
// Teacher form of head h in slot j: C_T, S_T summed over the pairs i of window j (FreqFold's
// view: what one pair rotating at slot j's frequency would have to carry; the frequency
// differences inside a window are not counted, they are the same approximation for every init
// that moves a non-first pair into the rope part). Folded rows (mla_init.c step 1), kv head
// g(h). Student form: its rope pair j of head h — the rows of q_proj, or of q_b_proj·q_a_proj
// when q_lora_rank > 0 (the q_a_layernorm is the latent's typical RMS, so it cancels the RMSNorm
// on average) — against the shared rope key rows of kv_a_proj_with_mqa. For inputs x = w_in ⊙ z
// with z isotropic, E[(x_mᵀ A x_n)²] = ‖diag(w_in)·A·diag(w_in)‖_F², so
//     rope_logit_err = sqrt(Σ_h,j ‖C_T − C_S‖²_w + ‖S_T − S_S‖²_w) / sqrt(Σ_h,j ‖C_T‖²_w + ‖S_T‖²_w)
// (heads and slots are separate logits: their squared errors add). The nope part is not
// counted (--init teacher carries the window's other pairs there unrotated). Each norm is a sum
// of ±outer products Σ_t σ_t a_t b_tᵀ, whose squared norm is Σ_{t,t'} σ_t σ_t' <a_t,a_t'>_w
// <b_t,b_t'>_w: no D x D matrix is formed.
//
// Rope key energy. For slot j with shared key rows k' = (k'x, k'y) and the teacher's key
// components c = (g, i) of window j (rows Kx_c, Ky_c):
//     rope_key_energy = Σ_j Σ_c <K_c, k'>²_w / ‖k'‖²_w  /  Σ_j Σ_c ‖K_c‖²_w,
// the energy of the keys along the shared key. TransMLA's principal component maximises it
// over all shared keys, so it is >= that of the mean key of --init teacher (tested).
//
// Whole q·k logit error over distances (qk_logit_err). What the two figures above leave out:
// the frequency of each teacher pair and the nope part. Per head h and relative distance Δ the
// teacher's (linearised: folded rows) logit form is
//     M_T(Δ) = Σ_{pairs i} cos(ω_i Δ)·C_i + sin(ω_i Δ)·S_i,   ω_i = θ^(−2i/hd),
// the student's M_S(Δ) = Σ_j cos(ω'_j Δ)·C'_j + sin(ω'_j Δ)·S'_j + Σ_r q_r k_rᵀ, ω'_j = θ^(−2j/dr),
// with its rope pairs against the shared key and its nope rows against the nope keys
// reconstructed through the latent (kv_b_proj·kv_a_proj rows; kv_a_layernorm is the latent's
// typical RMS, so it cancels on average). Then
//     qk_logit_err = sqrt(Σ_Δ Σ_h ‖M_T(Δ) − M_S(Δ)‖²_w / Σ_Δ Σ_h ‖M_T(Δ)‖²_w)
// over the log-spaced distances Δ = 0 and round(2^(k/2)), k = 0..22 (1 .. 2048; duplicates
// kept), equally weighted. It still leaves out the per-token q/k RMS (mla_init.c step 1) and the
// softmax, but it sees what rotating a pair at a neighbouring frequency costs at each distance.
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/mla_internal.h"

// Student query row e (< dn + dr: nope then rope) of head h as doubles (D).
static void student_q_row(const ae_mla_dims *d, const mla_host *m, int h, int e, double *out) {
    size_t row = (size_t)h * (d->dn + d->dr) + e;
    int D = d->D, ql = d->q_lora_rank;
    for (int c = 0; c < D; c++) out[c] = ql == 0 ? m->wq[row * D + c] : 0.0;
    for (int l = 0; l < ql; l++) {
        double b = m->wqb[row * ql + l];
        for (int c = 0; c < D; c++) out[c] += b * m->wqa[(size_t)l * D + c];
    }
}

// Squared norm of Σ_t sg[t]·a[ia[t]]·b[ib[t]]ᵀ from the Gram matrices Ga, Gb (n, n).
static double outer_norm2(const double *Ga, const double *Gb, int n, const int *ia, const int *ib,
                          const double *sg, int nt) {
    double s = 0.0;
    for (int t = 0; t < nt; t++)
        for (int u = 0; u < nt; u++) s += sg[t] * sg[u] * Ga[ia[t] * n + ia[u]] * Gb[ib[t] * n + ib[u]];
    return s;
}

// Gram matrix G (n, n) of the rows rows[0..n-1] (D each), input-weighted.
static void gram(const double *const *rows, int n, const float *w, int D, double *G) {
    for (int a = 0; a < n; a++)
        for (int b = 0; b <= a; b++) G[a * n + b] = G[b * n + a] = mla_wdot(rows[a], rows[b], w, D);
}

// Adds slot j of head h to err2 and ref2. Vectors 0..s-1: x rows of the window's pairs,
// s..2s-1: y rows, 2s / 2s+1: the student's x / y rows (queries in qv, keys in kv).
// Workspace: Gq, Gk (n, n) Gram matrices, the terms of C and S (n each): query vector ia, key
// vector ib, sign sg.
typedef struct {
    double *Gq, *Gk, *sg[2];
    int *ia[2], *ib[2];
} slot_ws;

static void slot_logit(int s, const double *const *qv, const double *const *kv, const float *w,
                       int D, const slot_ws *ws, double *err2, double *ref2) {
    int n = 2 * s + 2, nt = 2 * s + 2;
    int *const *ia = ws->ia, *const *ib = ws->ib;
    double *const *sg = ws->sg, *Gq = ws->Gq, *Gk = ws->Gk;
    gram(qv, n, w, D, Gq);
    gram(kv, n, w, D, Gk);
    for (int t = 0; t < s; t++) { // teacher: C += qx kxᵀ + qy kyᵀ, S += qx kyᵀ − qy kxᵀ
        ia[0][2 * t] = t, ib[0][2 * t] = t, sg[0][2 * t] = 1;
        ia[0][2 * t + 1] = s + t, ib[0][2 * t + 1] = s + t, sg[0][2 * t + 1] = 1;
        ia[1][2 * t] = t, ib[1][2 * t] = s + t, sg[1][2 * t] = 1;
        ia[1][2 * t + 1] = s + t, ib[1][2 * t + 1] = t, sg[1][2 * t + 1] = -1;
    }
    int x = 2 * s, y = 2 * s + 1; // student: the same forms with the opposite sign
    ia[0][2 * s] = x, ib[0][2 * s] = x, sg[0][2 * s] = -1;
    ia[0][2 * s + 1] = y, ib[0][2 * s + 1] = y, sg[0][2 * s + 1] = -1;
    ia[1][2 * s] = x, ib[1][2 * s] = y, sg[1][2 * s] = -1;
    ia[1][2 * s + 1] = y, ib[1][2 * s + 1] = x, sg[1][2 * s + 1] = 1;
    for (int f = 0; f < 2; f++) {
        *err2 += outer_norm2(Gq, Gk, n, ia[f], ib[f], sg[f], nt);
        *ref2 += outer_norm2(Gq, Gk, n, ia[f], ib[f], sg[f], nt - 2);
    }
}

// rope_key_energy (see the header) from the returned key rows.
static double key_energy(const ae_mla_dims *d, const mla_maps *mp, const mla_host *m, double *kx,
                         double *ky) {
    int D = d->D, R = d->kv_lora_rank;
    const float *w = mp->t->input_norm;
    double cap = 0.0, tot = 0.0;
    for (int j = 0; j < d->dr / 2; j++) {
        for (int c = 0; c < D; c++) {
            kx[c] = m->wkva[((size_t)R + 2 * j) * D + c];
            ky[c] = m->wkva[((size_t)R + 2 * j + 1) * D + c];
        }
        double kk = mla_wdot(kx, kx, w, D) + mla_wdot(ky, ky, w, D);
        for (int g = 0; g < mp->Hkv; g++)
            for (int i = j * mp->s; i < (j + 1) * mp->s; i++) {
                const double *x = mp->Kf + ((size_t)g * mp->hd + i) * D, *y = x + (size_t)mp->half * D;
                double p = mla_wdot(x, kx, w, D) + mla_wdot(y, ky, w, D);
                if (kk > 0.0) cap += p * p / kk;
                tot += mla_wdot(x, x, w, D) + mla_wdot(y, y, w, D);
            }
    }
    return tot > 0.0 ? cap / tot : 0.0;
}

// The distances of qk_logit_err: 0 and round(2^(k/2)), k = 0..22.
#define QK_N_DIST 24
static double qk_distance(int k) {
    return k == 0 ? 0.0 : round(pow(2.0, (k - 1) / 2.0));
}

// rows (n, D) ⊙ w_in, row by row (w NULL: unchanged).
static void weigh_rows(double *rows, int n, const float *w, int D) {
    for (int i = 0; w && i < n; i++)
        for (int c = 0; c < D; c++) rows[(size_t)i * D + c] *= w[c];
}

// Query rows of head h for qk_logit_err, times w_in: qv (2hd, D) = [teacher Q_h (hd) | student
// q rows (dn+dr)].
static void qk_query_rows(const ae_mla_dims *d, const mla_maps *mp, const mla_host *m, int h, double *qv) {
    int D = d->D, hd = mp->hd;
    memcpy(qv, mp->Qf + (size_t)h * hd * D, sizeof(double) * (size_t)hd * D);
    for (int e = 0; e < d->dn + d->dr; e++) student_q_row(d, m, h, e, qv + (size_t)(hd + e) * D);
    weigh_rows(qv, 2 * hd, mp->t->input_norm, D);
}

// Key rows of kv group g (query head h = its first), times w_in: kv (2hd, D) = [teacher K_g (hd)
// | student nope keys through the latent (dn): kv_b rows (dn, R) · kva (R, D) | shared rope key
// (dr)]. kva: kv_a_proj's first R rows in double; kvb (dn, R) scratch.
static void qk_key_rows(const ae_mla_dims *d, const mla_maps *mp, const mla_host *m, int g, int h,
                        const double *kva, double *kvb, double *kv) {
    int D = d->D, hd = mp->hd, dn = d->dn, R = d->kv_lora_rank;
    memcpy(kv, mp->Kf + (size_t)g * hd * D, sizeof(double) * (size_t)hd * D);
    for (size_t i = 0; i < (size_t)dn * R; i++) kvb[i] = m->wkvb[(size_t)h * (dn + d->dv) * R + i];
    if (dn > 0)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dn, D, R, 1.0, kvb, R, kva, D, 0.0,
                    kv + (size_t)hd * D, D);
    for (int e = 0; e < d->dr; e++)
        for (int c = 0; c < D; c++) kv[(size_t)(hd + dn + e) * D + c] = m->wkva[((size_t)R + e) * D + c];
    weigh_rows(kv, 2 * hd, mp->t->input_norm, D);
}

// The terms of M_T(Δ) − M_S(Δ) over the rows of qk_query_rows / qk_key_rows: query row qa[t],
// key row kb[t], the pair's frequency om[t] and kind kd[t] (0: cos, 1: +sin, 2: −sin,
// 3: constant); sg[t] +1 teacher, −1 student. Returns the number of terms (2hd + 2dr + dn).
static int qk_terms(const ae_mla_dims *d, int hd, int *qa, int *kb, double *om, int *kd, double *sg) {
    int n = 0, half = hd / 2, dn = d->dn;
    for (int side = 0; side < 2; side++) { // teacher pairs, then student rope pairs
        int np = side ? d->dr / 2 : half;
        for (int i = 0; i < np; i++) {
            int x = side ? hd + dn + 2 * i : i, y = side ? x + 1 : i + half;
            double w = pow(d->rope_theta, side ? -2.0 * i / d->dr : -2.0 * i / hd), sgn = side ? -1.0 : 1.0;
            int q[4] = {x, y, x, y}, k[4] = {x, y, y, x}, kind[4] = {0, 0, 1, 2};
            for (int t = 0; t < 4; t++, n++) qa[n] = q[t], kb[n] = k[t], om[n] = w, kd[n] = kind[t], sg[n] = sgn;
        }
    }
    for (int r = 0; r < dn; r++, n++) qa[n] = kb[n] = hd + r, om[n] = 0, kd[n] = 3, sg[n] = -1;
    return n;
}

// qk_logit_err (see the header); NAN when out of memory (a figure of merit only).
static double qk_logit_err(const ae_mla_dims *d, const mla_maps *mp, const mla_host *m) {
    int hd = mp->hd, D = d->D, N = 2 * hd, nt = 2 * hd + 2 * d->dr + d->dn, R = d->kv_lora_rank;
    int grp = mp->Hq / mp->Hkv;
    double *qv = malloc(sizeof(double) * (size_t)N * D), *kv = malloc(sizeof(double) * (size_t)N * D);
    double *kva = malloc(sizeof(double) * (size_t)R * D), *kvb = malloc(sizeof(double) * ((size_t)d->dn * R + 1));
    double *Gq = malloc(sizeof(double) * (size_t)N * N), *Gk = malloc(sizeof(double) * (size_t)N * N);
    double *om = malloc(sizeof(double) * (size_t)nt), *sg = malloc(sizeof(double) * (size_t)nt);
    double *cf = malloc(sizeof(double) * (size_t)nt);
    int *qa = malloc(sizeof(int) * (size_t)nt * 3), *kb = qa + nt, *kd = qa + 2 * nt;
    double err2 = 0.0, ref2 = 0.0, res = NAN;
    if (!qv || !kv || !kva || !kvb || !Gq || !Gk || !om || !sg || !cf || !qa) goto done;
    nt = qk_terms(d, hd, qa, kb, om, kd, sg);
    for (size_t i = 0; i < (size_t)R * D; i++) kva[i] = m->wkva[i];
    for (int h = 0; h < mp->Hq; h++) {
        if (h % grp == 0) { // the heads of a kv group share their key rows
            qk_key_rows(d, mp, m, h / grp, h, kva, kvb, kv);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, D, 1.0, kv, D, kv, D, 0.0, Gk, N);
        }
        qk_query_rows(d, mp, m, h, qv);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, D, 1.0, qv, D, qv, D, 0.0, Gq, N);
        for (int k = 0; k < QK_N_DIST; k++) {
            double dist = qk_distance(k);
            for (int t = 0; t < nt; t++) {
                double a = om[t] * dist;
                cf[t] = sg[t] * (kd[t] == 0 ? cos(a) : kd[t] == 1 ? sin(a) : kd[t] == 2 ? -sin(a) : 1.0);
            }
            for (int t = 0; t < nt; t++)
                for (int u = 0; u < nt; u++) {
                    double v = cf[t] * cf[u] * Gq[qa[t] * N + qa[u]] * Gk[kb[t] * N + kb[u]];
                    err2 += v;
                    if (sg[t] > 0 && sg[u] > 0) ref2 += v;
                }
        }
    }
    res = ref2 > 0.0 ? sqrt(fmax(err2, 0.0) / ref2) : 0.0;
done:
    free(qv), free(kv), free(kva), free(kvb), free(Gq), free(Gk), free(om), free(sg), free(cf), free(qa);
    return res;
}

void mla_eval_rope(const ae_mla_dims *d, const mla_maps *mp, const mla_host *m, ae_mla_init_stats *stats) {
    int s = mp->s, n = 2 * s + 2, D = d->D, R = d->kv_lora_rank, grp = mp->Hq / mp->Hkv;
    const float *w = mp->t->input_norm;
    double *buf = malloc(sizeof(double) * (4 * (size_t)D + 2 * (size_t)n * n + 2 * (size_t)n));
    int *idx = malloc(sizeof(int) * 4 * (size_t)n);
    const double **qv = malloc(sizeof(double *) * (size_t)n), **kv = malloc(sizeof(double *) * (size_t)n);
    if (!buf || !idx || !qv || !kv) { // a figure of merit only: reported as not computed
        stats->rope_logit_err = stats->rope_key_energy = NAN;
        free(buf), free(idx), free(qv), free(kv);
        return;
    }
    double *sq = buf, *kx = buf + 2 * (size_t)D, *Gq = buf + 4 * (size_t)D, *Gk = Gq + (size_t)n * n;
    slot_ws ws = {.Gq = Gq, .Gk = Gk, .sg = {Gk + (size_t)n * n, Gk + (size_t)n * n + n},
                  .ia = {idx, idx + n}, .ib = {idx + 2 * n, idx + 3 * n}};
    qv[2 * s] = sq, qv[2 * s + 1] = sq + D, kv[2 * s] = kx, kv[2 * s + 1] = kx + D;
    double err2 = 0.0, ref2 = 0.0;
    for (int j = 0; j < d->dr / 2; j++) {
        for (int c = 0; c < D; c++) {
            kx[c] = m->wkva[((size_t)R + 2 * j) * D + c];
            kx[D + c] = m->wkva[((size_t)R + 2 * j + 1) * D + c];
        }
        for (int h = 0; h < mp->Hq; h++) {
            const double *qf = mp->Qf + (size_t)h * mp->hd * D, *kf = mp->Kf + (size_t)(h / grp) * mp->hd * D;
            for (int t = 0; t < s; t++) {
                int i = j * s + t;
                qv[t] = qf + (size_t)i * D, qv[s + t] = qf + (size_t)(i + mp->half) * D;
                kv[t] = kf + (size_t)i * D, kv[s + t] = kf + (size_t)(i + mp->half) * D;
            }
            student_q_row(d, m, h, d->dn + 2 * j, sq);
            student_q_row(d, m, h, d->dn + 2 * j + 1, sq + D);
            slot_logit(s, qv, kv, w, D, &ws, &err2, &ref2);
        }
    }
    stats->rope_logit_err = ref2 > 0.0 ? sqrt(fmax(err2, 0.0) / ref2) : 0.0;
    stats->rope_key_energy = key_energy(d, mp, m, kx, kx + D);
    stats->qk_logit_err = qk_logit_err(d, mp, m);
    free(buf), free(idx), free(qv), free(kv);
}
