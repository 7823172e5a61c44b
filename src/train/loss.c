// Distillation losses: vocabulary-chunked KD (KL teacher ‖ student at temperature τ), cosine
// feature matching and (normalised) MSE, each with its gradient.
//
// KD, per token i with zt = ht_i·Wtᵀ, zs = hs_i·Wsᵀ (V logits each), pt = softmax(zt/τ),
// ps = softmax(zs/τ):  ℓ_i = τ²·Σ_v pt_v (log pt_v − log ps_v),  loss = mean_i ℓ_i,
//   ∂loss/∂zs_v = τ·(ps_v − pt_v)/N,  dhs_i = Σ_v ∂/∂zs_v · Ws_v,  dWs_v += Σ_i ∂/∂zs_v · hs_i.
// Tokens are processed in blocks of KD_ROWS; each block makes two passes over the vocabulary in
// chunks of `chunk` rows of W: pass 1 computes the logits chunk by chunk (fp32 GEMM through the
// backend) and keeps per token an online max and sum of exp (double) for teacher and student,
// giving log-sum-exp; pass 2 recomputes the same logits (bit-identical GEMMs), accumulates the
// KL in double and turns the chunk's gradient into dhs and dWs with matmul_bwd. At most
// KD_ROWS × chunk floats per logit buffer are live — never N×V. The per-token work is an
// OpenMP loop over the tokens of the block; the GEMMs are the backend's (threaded BLAS).
#include "train/loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

#define KD_ROWS 256          // tokens per block
#define KD_DEFAULT_CHUNK 4096 // vocabulary rows per chunk when chunk <= 0

typedef struct {
    double mt, st, ms, ss;  // running max / sum of exp(z/τ − max), teacher and student
    float bt, bs;           // running argmax values
    int it, is;             // and indices
} row_state;

// Pass 1 over one chunk for one row: online log-sum-exp and argmax.   zt, zs: (cv)
static void lse_update(row_state *r, const float *zt, const float *zs, int cv, int v0, double inv_tau) {
    double cmt = -INFINITY, cms = -INFINITY;
    for (int v = 0; v < cv; v++) {
        double a = zt[v] * inv_tau, b = zs[v] * inv_tau;
        if (a > cmt) cmt = a;
        if (b > cms) cms = b;
        if (zt[v] > r->bt) { r->bt = zt[v]; r->it = v0 + v; }
        if (zs[v] > r->bs) { r->bs = zs[v]; r->is = v0 + v; }
    }
    if (cmt > r->mt) { r->st *= exp(r->mt - cmt); r->mt = cmt; }
    if (cms > r->ms) { r->ss *= exp(r->ms - cms); r->ms = cms; }
    double st = 0.0, ss = 0.0;
    for (int v = 0; v < cv; v++) {
        st += exp(zt[v] * inv_tau - r->mt);
        ss += exp(zs[v] * inv_tau - r->ms);
    }
    r->st += st;
    r->ss += ss;
}

// Logits of vocabulary rows v0 .. v0+cv-1 for nb tokens, teacher and student.
//   zt, zs: (nb, cv);  ht, hs: (nb, D);  Wt, Ws: (V, D) host arrays (cpu backend)
static void chunk_logits(const ae_backend *be, float *zt, float *zs, const float *ht,
                         const float *hs, const float *Wt, const float *Ws, int v0, int nb, int D,
                         int cv) {
    ae_matmul(be, ae_host_f32(zt), ae_host_f32(ht), ae_host_f32(Wt + (size_t)v0 * D), nb, D, cv);
    ae_matmul(be, ae_host_f32(zs), ae_host_f32(hs), ae_host_f32(Ws + (size_t)v0 * D), nb, D, cv);
}

ae_status ae_kd_loss(const ae_backend *be, const float *ht, const float *Wt, const float *hs,
                     const float *Ws, int N, int D, int V, float tau, int chunk, float *dhs,
                     float *dWs, double *loss, int *top1) {
    if (N <= 0 || D <= 0 || V <= 0)
        return ae_errorf(AE_ERR_ARG, "kd loss: N %d, D %d, V %d must be positive", N, D, V);
    if (!(tau > 0.0f)) return ae_errorf(AE_ERR_ARG, "kd loss: temperature %g must be > 0", (double)tau);
    if (chunk <= 0) chunk = KD_DEFAULT_CHUNK;
    if (chunk > V) chunk = V;
    int nb_max = N < KD_ROWS ? N : KD_ROWS;
    size_t buf = (size_t)nb_max * chunk;
    float *zt = ae_alloc_f32(buf), *zs = ae_alloc_f32(buf); // (nb, cv) logits of one chunk
    row_state *rs = ae_malloc(sizeof(row_state) * (size_t)nb_max);
    double *lt = ae_malloc(sizeof(double) * (size_t)nb_max); // log-sum-exp of zt/τ per row
    double *ls = ae_malloc(sizeof(double) * (size_t)nb_max);
    double *kl = ae_malloc(sizeof(double) * (size_t)nb_max);
    if (!zt || !zs || !rs || !lt || !ls || !kl) {
        ae_free_aligned(zt);
        ae_free_aligned(zs);
        free(rs);
        free(lt);
        free(ls);
        free(kl);
        return AE_ERR_NOMEM;
    }
    if (dhs) memset(dhs, 0, sizeof(float) * (size_t)N * D);
    double inv_tau = 1.0 / tau, total = 0.0;
    float gscale = tau / (float)N;
    int agree = 0;
    for (int r0 = 0; r0 < N; r0 += KD_ROWS) {
        int nb = N - r0 < KD_ROWS ? N - r0 : KD_ROWS;
        const float *htb = ht + (size_t)r0 * D, *hsb = hs + (size_t)r0 * D;
        for (int i = 0; i < nb; i++)
            rs[i] = (row_state){-INFINITY, 0.0, -INFINITY, 0.0, -INFINITY, -INFINITY, 0, 0};
        // pass 1: log-sum-exp and argmax
        for (int v0 = 0; v0 < V; v0 += chunk) {
            int cv = V - v0 < chunk ? V - v0 : chunk;
            chunk_logits(be, zt, zs, htb, hsb, Wt, Ws, v0, nb, D, cv);
#pragma omp parallel for schedule(static) if (nb > 1)
            for (int i = 0; i < nb; i++)
                lse_update(&rs[i], zt + (size_t)i * cv, zs + (size_t)i * cv, cv, v0, inv_tau);
        }
        for (int i = 0; i < nb; i++) {
            lt[i] = rs[i].mt + log(rs[i].st);
            ls[i] = rs[i].ms + log(rs[i].ss);
            kl[i] = 0.0;
            agree += rs[i].it == rs[i].is;
        }
        // pass 2: KL and gradients, the chunk's gradient overwriting its student logits
        for (int v0 = 0; v0 < V; v0 += chunk) {
            int cv = V - v0 < chunk ? V - v0 : chunk;
            chunk_logits(be, zt, zs, htb, hsb, Wt, Ws, v0, nb, D, cv);
#pragma omp parallel for schedule(static) if (nb > 1)
            for (int i = 0; i < nb; i++) {
                const float *a = zt + (size_t)i * cv;
                float *b = zs + (size_t)i * cv;
                double acc = 0.0;
                for (int v = 0; v < cv; v++) {
                    double lpt = a[v] * inv_tau - lt[i], lps = b[v] * inv_tau - ls[i];
                    double pt = exp(lpt), ps = exp(lps);
                    acc += pt * (lpt - lps);
                    b[v] = (float)((ps - pt) * gscale);
                }
                kl[i] += acc;
            }
            if (dhs || dWs)
                ae_matmul_bwd(be, dhs ? ae_host_f32(dhs + (size_t)r0 * D) : ae_ptr_null(),
                              dWs ? ae_host_f32(dWs + (size_t)v0 * D) : ae_ptr_null(),
                              ae_host_f32(zs), ae_host_f32(hsb), ae_host_f32(Ws + (size_t)v0 * D),
                              nb, D, cv);
        }
        for (int i = 0; i < nb; i++) total += kl[i];
    }
    *loss = (double)tau * tau * total / N;
    if (top1) *top1 = agree;
    ae_free_aligned(zt);
    ae_free_aligned(zs);
    free(rs);
    free(lt);
    free(ls);
    free(kl);
    return AE_OK;
}

// 1 − cos(a, b) per row; a row with a zero vector counts cos = 0 and gets no gradient.
double ae_cosine_loss(const float *a, const float *b, int N, int D, float *da) {
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (N > 16)
    for (int i = 0; i < N; i++) {
        const float *ai = a + (size_t)i * D, *bi = b + (size_t)i * D;
        double ab = 0.0, aa = 0.0, bb = 0.0;
        for (int d = 0; d < D; d++) {
            ab += (double)ai[d] * bi[d];
            aa += (double)ai[d] * ai[d];
            bb += (double)bi[d] * bi[d];
        }
        double na = sqrt(aa), nb = sqrt(bb);
        double cs = na > 0.0 && nb > 0.0 ? ab / (na * nb) : 0.0;
        total += 1.0 - cs;
        if (da) {
            float *g = da + (size_t)i * D;
            if (na > 0.0 && nb > 0.0) {
                // ∂(1 − cos)/∂a = −(b/(|a||b|) − cos·a/|a|²), then the mean over rows
                double c1 = -1.0 / (na * nb * N), c2 = cs / (aa * N);
                for (int d = 0; d < D; d++) g[d] = (float)(c1 * bi[d] + c2 * ai[d]);
            } else {
                memset(g, 0, sizeof(float) * (size_t)D);
            }
        }
    }
    return total / N;
}

double ae_mse_loss(const float *y, const float *t, int N, int D, int normalized, float *dy) {
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (N > 16)
    for (int i = 0; i < N; i++) {
        const float *yi = y + (size_t)i * D, *ti = t + (size_t)i * D;
        double se = 0.0, tt = 0.0;
        for (int d = 0; d < D; d++) {
            double e = (double)yi[d] - ti[d];
            se += e * e;
            tt += (double)ti[d] * ti[d];
        }
        double den = normalized ? tt + 1e-6 : (double)D;
        total += se / den;
        if (dy) {
            double c = 2.0 / (den * N);
            float *g = dy + (size_t)i * D;
            for (int d = 0; d < D; d++) g[d] = (float)(c * ((double)yi[d] - ti[d]));
        }
    }
    return total / N;
}
