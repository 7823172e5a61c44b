// MLA initialisation `--init transmla`: TransMLA's RoRoPE + FreqFold (Meng et al., "TransMLA:
// Multi-Head Latent Attention Is All You Need", 2025: rotate the keys' rotary components by a
// PCA so that their energy concentrates in the dimensions kept rotating — RoRoPE — and fold
// neighbouring frequencies together — FreqFold) adapted to DeepSeek's fixed rope frequencies.
//
// Notation as mla_init.c and mla_init_mha2mla.c: slot j < dr/2 rotates at theta^(−2j/dr); its
// window is the teacher pairs i = j·s .. j·s+s−1 (s = hd/dr), the first at exactly that frequency.
//
// Method. Steps 0, 1, 3, 5, 6 as mla_init.c. Then, for every slot j:
//  a. Components. Each kv head g and pair i of window j gives a 2-D rotary component
//     c = (g, i) of the folded keys: rows Kx_c = K_g row i, Ky_c = K_g row i + hd/2. Hkv·s of
//     them (FreqFold: the s pairs of a window are treated as one frequency, the slot's).
//  b. RoRoPE. Input-weighted covariance of the components, (Hkv·s) x (Hkv·s):
//        C[c][c'] = <Kx_c ⊙ w_in, Kx_c' ⊙ w_in> + <Ky_c ⊙ w_in, Ky_c' ⊙ w_in>
//     (summing the x–x and y–y blocks makes the mixing the same in x and y, so it commutes with
//     a rotation at one frequency); u = its top unit eigenvector (LAPACK dsyev, mla_svd.c). The
//     shared rope key of the slot is the principal component, k'_j = Σ_c u_c·K_c (x rows into
//     row 2j, y rows into row 2j+1): among all single shared keys it captures the most key
//     energy Σ_c <K_c, k>² / |k|² (the mean over kv heads of --init teacher is one candidate).
//  c. Queries. Head h (kv head g(h)) gets rope pair j = Σ_{i in window} u_(g(h),i)·Q_h,i, so
//     that q'·k'_j = Σ_i Q_h,i · (u_(g,i)·k'_j): every teacher pair's query meets the rank-1
//     reconstruction u_(g,i)·k'_j of its own key. Exact with one kv head and s == 1 (u = ±1).
//  d. Nope part. The same dn teacher dims as --init teacher (every pair but the windows'
//     first), with query rows unchanged and each kv head's key rows replaced by the residual
//     after removing the rope component, K_res(g,i) = K_(g,i) − u_(g,i)·k'_j, so that nothing
//     is counted twice. The residual of each window's first pair is dropped. Approximations:
//     that dropped residual; the nope dims losing their rotation (as --init teacher); the
//     folded pairs rotating at slot j's frequency instead of their own.
// Then the joint SVD of the nope keys (now residuals) and the values (step 5), as mla_init.c.
#include <stdlib.h>
#include <string.h>

#include "model/mla_internal.h"

// u (Hkv·s) of slot j: component c = g·s + (i − j·s).
static ae_status slot_components(const mla_maps *mp, int j, double *C, double *u) {
    int s = mp->s, n = mp->Hkv * s, D = mp->D;
    const float *w = mp->t->input_norm;
    for (int a = 0; a < n; a++)
        for (int b = 0; b <= a; b++) {
            int ga = a / s, ia = j * s + a % s, gb = b / s, ib = j * s + b % s;
            const double *ka = mp->Kf + (size_t)ga * mp->hd * D, *kb = mp->Kf + (size_t)gb * mp->hd * D;
            double v = mla_wdot(ka + (size_t)ia * D, kb + (size_t)ib * D, w, D) +
                       mla_wdot(ka + (size_t)(ia + mp->half) * D, kb + (size_t)(ib + mp->half) * D, w, D);
            C[a * n + b] = C[b * n + a] = v;
        }
    double lambda;
    return mla_sym_top_eig(n, C, u, &lambda);
}

// dst (D) = Σ_c coef[c]·row r_c of the blocks f (rows of component c: block of kv head c / s,
// teacher pair j·s + c % s, plus dy = 0 for x rows or hd/2 for y rows).
static void mix_rows(const mla_maps *mp, const double *f, size_t block, int ncomp, const double *coef,
                     int j, int dy, double *dst) {
    memset(dst, 0, sizeof(double) * (size_t)mp->D);
    for (int c = 0; c < ncomp; c++) {
        const double *r = f + (size_t)(c / mp->s) * block + (size_t)(j * mp->s + c % mp->s + dy) * mp->D;
        for (int e = 0; e < mp->D; e++) dst[e] += coef[c] * r[e];
    }
}

ae_status mla_fill_transmla(mla_maps *mp) {
    int s = mp->s, n = mp->Hkv * s, slots = mp->dr / 2, D = mp->D, dn = mp->dn, dq = dn + mp->dr;
    int grp = mp->Hq / mp->Hkv;
    size_t head = (size_t)mp->hd * D;
    // the nope dims and their key rows as --init teacher; the rope rows are overwritten below
    AE_TRY(mla_maps_split(mp, NULL));
    double *U = malloc(sizeof(double) * (size_t)slots * n); // (dr/2, Hkv·s) u of every slot
    double *C = malloc(sizeof(double) * (size_t)n * n);     // (Hkv·s, Hkv·s) covariance
    int *rope_dim = malloc(sizeof(int) * (size_t)mp->dr), *nope_dim = malloc(sizeof(int) * (size_t)(dn + 1));
    ae_status st = AE_OK;
    if (!U || !C || !rope_dim || !nope_dim) st = ae_errorf(AE_ERR_NOMEM, "MLA transmla init: out of memory");
    for (int j = 0; st == AE_OK && j < slots; j++) {
        double *u = U + (size_t)j * n;
        st = slot_components(mp, j, C, u);
        if (st != AE_OK) break;
        for (int dy = 0; dy <= 1; dy++) // b: k'_j, x and y rows
            mix_rows(mp, mp->Kf, head, n, u, j, dy * mp->half, mp->kr + (size_t)(2 * j + dy) * D);
        for (int h = 0; h < mp->Hq; h++) { // c: head h mixes its own pairs with its kv head's u
            for (int dy = 0; dy <= 1; dy++)
                mix_rows(mp, mp->Qf + h * head, 0, s, u + (size_t)(h / grp) * s, j, dy * mp->half,
                         mp->Q + ((size_t)h * dq + dn + 2 * j + dy) * D);
        }
    }
    if (st == AE_OK) { // d: nope key rows become residuals
        mla_dim_maps(mp, NULL, rope_dim, nope_dim);
        for (int g = 0; g < mp->Hkv; g++)
            for (int r = 0; r < dn; r++) {
                int td = nope_dim[r], i = td % mp->half, j = i / s, dy = td >= mp->half;
                double coef = U[(size_t)j * n + g * s + i % s];
                const double *k = mp->kr + (size_t)(2 * j + dy) * D;
                double *dst = mp->W + ((size_t)g * dn + r) * D;
                for (int e = 0; e < D; e++) dst[e] -= coef * k[e];
            }
    }
    free(U);
    free(C);
    free(rope_dim);
    free(nope_dim);
    return st;
}
