// Training ops of the CPU reference (backend/ops.h, "training losses and the optimizer", and
// embed_bwd): the embedding gradient, the stage-1 and feature losses per row, the vocabulary-
// chunked softmax statistics and KD chunk of stage 2, the sum of squares of a gradient (for the
// clipping norm), axpby and one AdamW step.
//
// The formulas are those the training code used when it ran on host arrays: the per-row
// stage-1 MSE and the cosine feature loss, the two passes of the vocabulary-chunked KD loss
// (train/loss.c now calls these ops), and the per-value AdamW update of train/optim.c (the same
// float operations in the same order as before it moved here). Row sums
// are in double; every loop is either elementwise or reduces in an order fixed by the shapes, so
// results do not depend on the number of OpenMP threads.
//
// Scaled logits. softmax_stats and kd_chunk both form a = z·inv_tau as one fp32 product (the
// GPU forms the same product), so the running maximum mx is exactly one of the a values and
// both ops shift by the same float. Across chunks the argmax compares the chunk's best against
// the running maximum in these units: for inv_tau > 0 (τ > 0) the product is monotone, so a
// strictly larger a means a strictly larger z and an exact tie in z stays with the lower id. (Two
// logits closer than the product's rounding, in different chunks, count as a tie: the lower id.)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/adam8.h"
#include "backend/cpu_internal.h"

// ---- embed_bwd --------------------------------------------------------------------------------

#define EMBED_COLS 256 // columns per OpenMP task: each task walks all tokens in order

void ae_cpu_embed_bwd(const ae_backend *be, ae_ptr dtable, ae_ptr dyp, ae_ptr idsp, int T, int D) {
    (void)be;
    float *dt = cpu_f(dtable, "embed_bwd");           // (V, D)
    const float *dy = cpu_f(dyp, "embed_bwd");        // (T, D)
    const int32_t *ids = cpu_i(idsp, "embed_bwd");    // (T)
    int nc = (D + EMBED_COLS - 1) / EMBED_COLS;
#pragma omp parallel for schedule(static) if ((size_t)T * D > 65536)
    for (int c = 0; c < nc; c++) {
        int d0 = c * EMBED_COLS, d1 = d0 + EMBED_COLS < D ? d0 + EMBED_COLS : D;
        for (int t = 0; t < T; t++) {
            float *row = dt + (size_t)ids[t] * D;
            const float *g = dy + (size_t)t * D;
            for (int d = d0; d < d1; d++) row[d] += g[d];
        }
    }
}

// ---- stage-1 and feature losses ---------------------------------------------------------------

void ae_cpu_mse_rows(const ae_backend *be, ae_ptr out, ae_ptr dyp, ae_ptr yp, ae_ptr tp, int N,
                     int D, int normalized, float scale) {
    (void)be;
    double *o64 = out.dtype == AE_DT_F64 ? out.data : NULL; // (N) F64 keeps the double losses
    float *o = o64 ? NULL : cpu_f(out, "mse_rows");         // (N)
    float *dy = cpu_f(dyp, "mse_rows");     // (N, D) or null
    const float *y = cpu_f(yp, "mse_rows"); // (N, D)
    const float *t = cpu_f(tp, "mse_rows"); // (N, D)
#pragma omp parallel for schedule(static) if (N > 16)
    for (int i = 0; i < N; i++) {
        const float *yi = y + (size_t)i * D, *ti = t + (size_t)i * D;
        double se = 0.0, tt = 0.0;
        for (int d = 0; d < D; d++) {
            double e = (double)yi[d] - ti[d];
            se += e * e;
            tt += (double)ti[d] * ti[d];
        }
        double den = normalized ? tt + 1e-6 : (double)D;
        if (o64) o64[i] = se / den;
        else o[i] = (float)(se / den);
        if (dy) {
            double c = 2.0 * scale / den;
            float *g = dy + (size_t)i * D;
            for (int d = 0; d < D; d++) g[d] = (float)(c * ((double)yi[d] - ti[d]));
        }
    }
}

void ae_cpu_cosine_rows(const ae_backend *be, ae_ptr out, ae_ptr dap, ae_ptr ap, ae_ptr bp, int N,
                        int D, float scale) {
    (void)be;
    float *o = cpu_f(out, "cosine_rows");      // (N)
    float *da = cpu_f(dap, "cosine_rows");     // (N, D) or null
    const float *a = cpu_f(ap, "cosine_rows"); // (N, D)
    const float *b = cpu_f(bp, "cosine_rows"); // (N, D)
#pragma omp parallel for schedule(static) if (N > 16)
    for (int i = 0; i < N; i++) {
        const float *ai = a + (size_t)i * D, *bi = b + (size_t)i * D;
        double ab = 0.0, aa = 0.0, bb = 0.0;
        for (int d = 0; d < D; d++) {
            ab += (double)ai[d] * bi[d];
            aa += (double)ai[d] * ai[d];
            bb += (double)bi[d] * bi[d];
        }
        double na = sqrt(aa), nb = sqrt(bb);
        int ok = na > 0.0 && nb > 0.0;
        double cs = ok ? ab / (na * nb) : 0.0;
        o[i] = (float)(1.0 - cs);
        if (da) {
            float *g = da + (size_t)i * D;
            if (ok) {
                // ∂(1 − cos)/∂a = −(b/(|a||b|) − cos·a/|a|²), times scale
                double c1 = -(double)scale / (na * nb), c2 = (double)scale * cs / aa;
                for (int d = 0; d < D; d++) g[d] = (float)(c1 * bi[d] + c2 * ai[d]);
            } else {
                memset(g, 0, sizeof(float) * (size_t)D);
            }
        }
    }
}

// ---- stage 2: vocabulary-chunked softmax statistics and KD ------------------------------------

void ae_cpu_softmax_stats(const ae_backend *be, ae_ptr stats, ae_ptr argp, ae_ptr zp, int64_t ldz,
                          int N, int Vc, int v0, float inv_tau) {
    (void)be;
    float *st = cpu_f(stats, "softmax_stats");     // (N, 2): (mx, se)
    int32_t *arg = cpu_i(argp, "softmax_stats");   // (N) or null
    const float *z = cpu_f(zp, "softmax_stats");   // (N, Vc), row stride ldz
#pragma omp parallel for schedule(static) if (N > 4)
    for (int i = 0; i < N; i++) {
        const float *zi = z + (size_t)i * ldz;
        float mx = v0 == 0 ? -INFINITY : st[2 * i];
        double se = v0 == 0 ? 0.0 : st[2 * i + 1];
        float cm = -INFINITY; // the chunk's largest a = z·inv_tau
        float bz = -INFINITY; // the chunk's largest z, at column bi (first on ties)
        int bi = 0;
        for (int v = 0; v < Vc; v++) {
            float av = zi[v] * inv_tau;
            if (av > cm) cm = av;
            if (zi[v] > bz) bz = zi[v], bi = v;
        }
        if (arg && (v0 == 0 || cm > mx)) arg[i] = v0 + bi;
        if (cm > mx) {
            se *= exp((double)mx - cm);
            mx = cm;
        }
        double s = 0.0;
        for (int v = 0; v < Vc; v++) s += exp((double)(zi[v] * inv_tau) - mx);
        st[2 * i] = mx;
        st[2 * i + 1] = (float)(se + s);
    }
}

void ae_cpu_kd_chunk(const ae_backend *be, ae_ptr klp, ae_ptr dzsp, int64_t ldd, ae_ptr ztp,
                     ae_ptr zsp, int64_t ldz, ae_ptr stp, ae_ptr ssp, int N, int Vc,
                     float inv_tau, float gscale) {
    (void)be;
    float *kl = cpu_f(klp, "kd_chunk");         // (N), +=
    float *dzs = cpu_f(dzsp, "kd_chunk");       // (N, Vc) row stride ldd, or null
    const float *zt = cpu_f(ztp, "kd_chunk");   // (N, Vc) row stride ldz
    const float *zs = cpu_f(zsp, "kd_chunk");   // (N, Vc) row stride ldz
    const float *st = cpu_f(stp, "kd_chunk");   // (N, 2) teacher (mx, se)
    const float *ss = cpu_f(ssp, "kd_chunk");   // (N, 2) student (mx, se)
#pragma omp parallel for schedule(static) if (N > 4)
    for (int i = 0; i < N; i++) {
        const float *a = zt + (size_t)i * ldz, *b = zs + (size_t)i * ldz;
        double lt = (double)st[2 * i] + log((double)st[2 * i + 1]); // log-sum-exp of zt/τ
        double ls = (double)ss[2 * i] + log((double)ss[2 * i + 1]);
        float *g = dzs ? dzs + (size_t)i * ldd : NULL;
        double acc = 0.0;
        for (int v = 0; v < Vc; v++) {
            double lpt = (double)(a[v] * inv_tau) - lt, lps = (double)(b[v] * inv_tau) - ls;
            double pt = exp(lpt), ps = exp(lps);
            acc += pt * (lpt - lps);
            if (g) g[v] = (float)((ps - pt) * gscale);
        }
        kl[i] = (float)((double)kl[i] + acc);
    }
}

// ---- gradient norm, axpby, AdamW --------------------------------------------------------------

#define SUMSQ_BLOCK 65536 // values per partial sum: the order of the sum depends on n alone

void ae_cpu_sumsq(const ae_backend *be, ae_ptr out, ae_ptr xp, size_t n) {
    (void)be;
    const float *x = cpu_f(xp, "sumsq"); // (n)
    size_t nb = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    double part[64], total = 0.0;
    // blocks in groups of 64 partials; each partial sums its block in index order
    for (size_t g0 = 0; g0 < nb; g0 += 64) {
        size_t gn = nb - g0 < 64 ? nb - g0 : 64;
#pragma omp parallel for schedule(static) if (gn > 1)
        for (size_t b = 0; b < gn; b++) {
            size_t j0 = (g0 + b) * SUMSQ_BLOCK, j1 = j0 + SUMSQ_BLOCK < n ? j0 + SUMSQ_BLOCK : n;
            double s = 0.0;
            for (size_t j = j0; j < j1; j++) s += (double)x[j] * x[j];
            part[b] = s;
        }
        for (size_t b = 0; b < gn; b++) total += part[b];
    }
    if (out.dtype == AE_DT_F64) *(double *)out.data = total;
    else *cpu_f(out, "sumsq") = (float)total; // > FLT_MAX rounds to Inf; Inf/NaN propagate
}

void ae_cpu_axpby(const ae_backend *be, ae_ptr yp, float alpha, ae_ptr xp, float beta, size_t n) {
    (void)be;
    float *y = cpu_f(yp, "axpby");       // (n)
    const float *x = cpu_f(xp, "axpby"); // (n)
    if (beta == 0.0f) {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t j = 0; j < n; j++) y[j] = alpha * x[j];
    } else {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t j = 0; j < n; j++) y[j] = alpha * x[j] + beta * y[j];
    }
}

// One value of the AdamW step: the float operations of ae_adamw_step (train/optim.c) in its
// order. 1 when the new w or v is Inf or NaN.
static inline int adam_value(const ae_adamw_args *a, float *w, float *m, float *v, float g) {
    float gj = g * a->gscale;
    *m = a->beta1 * *m + (1.0f - a->beta1) * gj;
    *v = a->beta2 * *v + (1.0f - a->beta2) * gj * gj;
    float mhat = *m / a->bc1, vhat = *v / a->bc2;
    *w -= a->lr * (mhat / (sqrtf(vhat) + a->eps) + a->weight_decay * *w);
    return !isfinite(*w) || !isfinite(*v);
}

void ae_cpu_adamw(const ae_backend *be, const ae_adamw_args *a, ae_ptr wp, ae_ptr mp, ae_ptr vp,
                  ae_ptr gp, ae_ptr param, ae_ptr flagp, size_t n) {
    (void)be;
    float *w = cpu_f(wp, "adamw");       // (n) fp32 master weights
    float *m = cpu_f(mp, "adamw");       // (n)
    float *v = cpu_f(vp, "adamw");       // (n)
    const float *g = cpu_f(gp, "adamw"); // (n)
    float *p = cpu_f(param, "adamw");    // (n), null, or w itself
    int32_t *flag = cpu_i(flagp, "adamw");
    int bad = 0;
#pragma omp parallel for reduction(| : bad) if (n > 65536)
    for (size_t j = 0; j < n; j++) {
        float wj = w[j], mj = m[j], vj = v[j];
        bad |= adam_value(a, &wj, &mj, &vj, g[j]);
        w[j] = wj, m[j] = mj, v[j] = vj;
    }
    if (p && p != w) memcpy(p, w, sizeof(float) * n);
    if (bad && flag) flag[0] = 1;
}

// The byte array behind a U8 pointer; aborts on another dtype (a bug in the caller).
static uint8_t *cpu_u8(ae_ptr p, const char *op, const char *arg) {
    if (p.dtype != AE_DT_U8) {
        fprintf(stderr, "attnedit: internal error: cpu %s: argument %s has dtype %s, not U8\n", op,
                arg, ae_dtype_name(p.dtype));
        abort();
    }
    return (uint8_t *)p.data;
}

// One block of len <= AE_Q8_BLOCK values of adamw8: decode, update, new absmax, encode.
// Returns 1 when a new w or v is Inf or NaN.
static int adam8_block(const ae_q8_code *c, const ae_q8_step *k, float *w, uint8_t *mq,
                       float *ms, uint8_t *vq, float *vs, const float *g, size_t len) {
    float m[AE_Q8_BLOCK], s[AE_Q8_BLOCK]; // (len) new m and sqrtf(new v), before rounding
    const float m_amax = *ms, s_amax = *vs;
    float m_max = 0.0f, s_max = 0.0f;
    int bad = 0;
    for (size_t j = 0; j < len; j++) {
        float mj = m_amax > 0.0f ? ae_q8_decode_m(c, mq[j], m_amax) : 0.0f;
        float sj = s_amax > 0.0f ? ae_q8_decode_v(c, vq[j], s_amax) : 0.0f;
        float vj = sj * sj;
        bad |= ae_q8_adam(k, &w[j], &mj, &vj, g[j]);
        m[j] = mj;
        s[j] = sqrtf(vj);
        m_max = fmaxf(m_max, fabsf(mj));
        s_max = fmaxf(s_max, s[j]);
    }
    const float m_inv = ae_q8_inv(m_max), s_inv = ae_q8_inv(s_max);
    for (size_t j = 0; j < len; j++) {
        mq[j] = ae_q8_encode_m(c, m[j], m_inv);
        vq[j] = ae_q8_encode_v(c, s[j], s_inv);
    }
    *ms = m_max;
    *vs = s_max;
    return bad;
}

void ae_cpu_adamw8(const ae_backend *be, const ae_adamw_args *a, ae_ptr wp, ae_ptr mqp, ae_ptr msp,
                   ae_ptr vqp, ae_ptr vsp, ae_ptr gp, ae_ptr param, ae_ptr flagp, size_t n) {
    (void)be;
    float *w = cpu_f(wp, "adamw8");           // (n) fp32 master weights
    uint8_t *mq = cpu_u8(mqp, "adamw8", "mq"); // (n) m's codes
    uint8_t *vq = cpu_u8(vqp, "adamw8", "vq"); // (n) sqrt(v)'s codes
    float *ms = cpu_f(msp, "adamw8");         // (blocks) absmax of |m| per block
    float *vs = cpu_f(vsp, "adamw8");         // (blocks) absmax of sqrt(v) per block
    const float *g = cpu_f(gp, "adamw8");     // (n)
    float *p = cpu_f(param, "adamw8");        // (n), null, or w itself
    int32_t *flag = cpu_i(flagp, "adamw8");
    ae_q8_code code;
    ae_q8_code_init(&code);
    const ae_q8_step k = ae_q8_step_of(a);
    const size_t nb = ae_q8_blocks(n);
    int bad = 0;
#pragma omp parallel for reduction(| : bad) if (n > 65536)
    for (size_t b = 0; b < nb; b++) {
        size_t j0 = b * AE_Q8_BLOCK, len = n - j0 < AE_Q8_BLOCK ? n - j0 : AE_Q8_BLOCK;
        bad |= adam8_block(&code, &k, w + j0, mq + j0, ms + b, vq + j0, vs + b, g + j0, len);
    }
    if (p && p != w) memcpy(p, w, sizeof(float) * n);
    if (bad && flag) flag[0] = 1;
}
