// Causal attention (GQA, sliding window, ring-buffer KV, strided K/V rows, attention sinks):
// forward and backward. See ae_attn_args in backend/ops.h for the layout.
//
// For one query row (token t, head h) at position qpos, over the visible keys j:
//   s_j = scale · q·k_j
//   p_j = exp(s_j − m) / Z,  Z = Σ_j exp(s_j − m) [+ exp(sink_h − m)],  m = max(s, sink_h)
//   out = Σ_j p_j v_j
// Backward, with dp_j = dout·v_j and D = Σ_j p_j dp_j (= dout·out):
//   dv_j += p_j dout
//   ds_j  = p_j (dp_j − D)
//   dq    = scale Σ_j ds_j k_j
//   dk_j += scale ds_j q
//   dsink += −p_sink D          (the sink has no value, so its dp is 0)
#include <math.h>
#include <stdlib.h>

#include "backend/cpu_internal.h"

static const float *sinks_of(const ae_attn_args *a) { return cpu_f(a->sinks, "attention"); }

// Threads only pay off with enough query-key pairs; one-token decode of a short context stays
// on the calling thread.
static int attn_parallel(const ae_attn_args *a) {
    return (long)a->T * a->Hq * (a->pos0 + a->T) * a->dk > 262144;
}

// First visible key position for a query at position qpos.
static int attn_lo(const ae_attn_args *a, int qpos) {
    int lo = 0;
    if (a->window > 0 && qpos - a->window + 1 > lo) lo = qpos - a->window + 1;
    return lo;
}

// Storage row of key position j.
static size_t attn_row(const ae_attn_args *a, int j) {
    return (size_t)(a->ring > 0 ? j % a->ring : j);
}

static const float *attn_k(const ae_attn_args *a, const float *k, int j, int kh) {
    return k + attn_row(a, j) * a->k_stride + (size_t)kh * a->dk;
}

static const float *attn_v(const ae_attn_args *a, const float *v, int j, int kh) {
    return v + attn_row(a, j) * a->v_stride + (size_t)kh * a->dv;
}

static float dotf(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

// Softmax normaliser of one row: p_j = expf(s_j − m) · inv.
typedef struct {
    float m, inv;
} attn_norm;

// Probabilities of one query row over keys lo..qpos into p[j − lo].
static attn_norm attn_probs(const ae_attn_args *a, const float *qv, const float *k, int h,
                            int qpos, float *p) {
    int lo = attn_lo(a, qpos), kh = h / (a->Hq / a->Hkv);
    float mx = -INFINITY;
    for (int j = lo; j <= qpos; j++) {
        float s = dotf(qv, attn_k(a, k, j, kh), a->dk) * a->scale;
        p[j - lo] = s;
        if (s > mx) mx = s;
    }
    float sink = sinks_of(a) ? sinks_of(a)[h] : -INFINITY;
    if (sink > mx) mx = sink;
    double sum = sinks_of(a) ? exp((double)sink - mx) : 0.0;
    for (int j = lo; j <= qpos; j++) {
        p[j - lo] = expf(p[j - lo] - mx);
        sum += p[j - lo];
    }
    attn_norm nm = {.m = mx, .inv = (float)(1.0 / sum)};
    for (int j = lo; j <= qpos; j++) p[j - lo] *= nm.inv;
    return nm;
}

void ae_cpu_attention(const ae_backend *be, const ae_attn_args *a, ae_ptr outp, ae_ptr qp,
                      ae_ptr kp, ae_ptr vp) {
    (void)be;
    float *out = cpu_f(outp, "attention");
    const float *q = cpu_f(qp, "attention"), *k = cpu_f(kp, "attention"), *v = cpu_f(vp, "attention");
    int S = a->pos0 + a->T;
#pragma omp parallel if (attn_parallel(a))
    {
        float *p = malloc(sizeof(float) * (size_t)S);
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < a->T; t++) {
            for (int h = 0; h < a->Hq; h++) {
                int qpos = a->pos0 + t, lo = attn_lo(a, qpos), kh = h / (a->Hq / a->Hkv);
                attn_probs(a, q + ((size_t)t * a->Hq + h) * a->dk, k, h, qpos, p);
                float *o = out + ((size_t)t * a->Hq + h) * a->dv;
                for (int d = 0; d < a->dv; d++) o[d] = 0.0f;
                for (int j = lo; j <= qpos; j++) {
                    const float *vv = attn_v(a, v, j, kh);
                    float pj = p[j - lo];
                    for (int d = 0; d < a->dv; d++) o[d] += pj * vv[d];
                }
            }
        }
        free(p);
    }
}

// Two passes, each free of write conflicts so that no atomics or reductions across threads are
// needed and results do not depend on the thread count:
//   1. one task per query row (t, h): recompute p, then D, dq and the row's sink gradient;
//      keep the row's softmax normaliser and D.
//   2. one task per K/V storage row (a ring slot, or a position): for each kv head, sum the
//      contributions of every query that sees the key(s) stored there into dk, dv. One task
//      owns all of a storage row, so dk and dv may even alias (absorbed MLA, where k and v are
//      views of the same latent rows).
void ae_cpu_attention_bwd(const ae_backend *be, const ae_attn_args *a, ae_ptr dqp, ae_ptr dkp,
                          ae_ptr dvp, ae_ptr dsinksp, ae_ptr doutp, ae_ptr qp, ae_ptr kp,
                          ae_ptr vp) {
    (void)be;
    float *dq = cpu_f(dqp, "attention_bwd"), *dk = cpu_f(dkp, "attention_bwd");
    float *dv = cpu_f(dvp, "attention_bwd"), *dsinks = cpu_f(dsinksp, "attention_bwd");
    const float *dout = cpu_f(doutp, "attention_bwd"), *q = cpu_f(qp, "attention_bwd");
    const float *k = cpu_f(kp, "attention_bwd"), *v = cpu_f(vp, "attention_bwd");
    const float *sinks = sinks_of(a);
    int T = a->T, Hq = a->Hq, Hkv = a->Hkv, G = Hq / Hkv, S = a->pos0 + T;
    size_t nrows = (size_t)T * Hq;
    attn_norm *nm = malloc(sizeof(attn_norm) * nrows);
    float *delta = malloc(sizeof(float) * nrows);
    float *dsink_row = sinks && dsinks ? malloc(sizeof(float) * nrows) : NULL;

    // ---- pass 1: per query row ----
#pragma omp parallel if (attn_parallel(a))
    {
        float *p = malloc(sizeof(float) * (size_t)S), *dp = malloc(sizeof(float) * (size_t)S);
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < Hq; h++) {
                size_t r = (size_t)t * Hq + h;
                int qpos = a->pos0 + t, lo = attn_lo(a, qpos), kh = h / G;
                const float *dov = dout + r * a->dv;
                nm[r] = attn_probs(a, q + r * a->dk, k, h, qpos, p);
                double D = 0.0;
                for (int j = lo; j <= qpos; j++) {
                    dp[j - lo] = dotf(dov, attn_v(a, v, j, kh), a->dv);
                    D += (double)p[j - lo] * dp[j - lo];
                }
                delta[r] = (float)D;
                float *dqv = dq + r * a->dk;
                for (int d = 0; d < a->dk; d++) dqv[d] = 0.0f;
                for (int j = lo; j <= qpos; j++) {
                    float ds = p[j - lo] * (dp[j - lo] - delta[r]);
                    const float *kv = attn_k(a, k, j, kh);
                    for (int d = 0; d < a->dk; d++) dqv[d] += ds * kv[d];
                }
                for (int d = 0; d < a->dk; d++) dqv[d] *= a->scale;
                if (dsink_row) {
                    double psink = exp((double)sinks[h] - nm[r].m) * nm[r].inv;
                    dsink_row[r] = (float)(-psink * D);
                }
            }
        }
        free(p);
        free(dp);
    }
    if (dsink_row) {
        for (int h = 0; h < Hq; h++) {
            double s = 0.0;
            for (int t = 0; t < T; t++) s += dsink_row[(size_t)t * Hq + h];
            dsinks[h] += (float)s;
        }
    }

    // ---- pass 2: per K/V storage row ----
    int nstore = a->ring > 0 && a->ring < S ? a->ring : S;
    int jmin = attn_lo(a, a->pos0); // no query sees a key before this position
#pragma omp parallel if (attn_parallel(a))
    {
        float *gk = malloc(sizeof(float) * (size_t)a->dk);
        float *gv = malloc(sizeof(float) * (size_t)a->dv);
#pragma omp for schedule(dynamic, 4)
        for (int row = 0; row < nstore; row++) {
            // key positions stored in this row: row, row + ring, row + 2·ring, ... (< S)
            int j0 = row, step = a->ring > 0 ? a->ring : S;
            if (j0 < jmin) j0 += (jmin - j0 + step - 1) / step * step;
            for (int kh = 0; kh < Hkv; kh++) {
                for (int d = 0; d < a->dk; d++) gk[d] = 0.0f;
                for (int d = 0; d < a->dv; d++) gv[d] = 0.0f;
                for (int j = j0; j < S; j += step) {
                    const float *kv = attn_k(a, k, j, kh), *vv = attn_v(a, v, j, kh);
                    // queries that see position j: qpos in j .. j + window − 1
                    int t0 = j - a->pos0 > 0 ? j - a->pos0 : 0, t1 = T - 1;
                    if (a->window > 0 && j + a->window - 1 - a->pos0 < t1)
                        t1 = j + a->window - 1 - a->pos0;
                    for (int t = t0; t <= t1; t++) {
                        for (int h = kh * G; h < (kh + 1) * G; h++) {
                            size_t r = (size_t)t * Hq + h;
                            const float *qv = q + r * a->dk, *dov = dout + r * a->dv;
                            float s = dotf(qv, kv, a->dk) * a->scale;
                            float p = expf(s - nm[r].m) * nm[r].inv;
                            float ds = p * (dotf(dov, vv, a->dv) - delta[r]);
                            for (int d = 0; d < a->dv; d++) gv[d] += p * dov[d];
                            for (int d = 0; d < a->dk; d++) gk[d] += ds * qv[d];
                        }
                    }
                }
                float *dkr = dk + (size_t)row * a->k_stride + (size_t)kh * a->dk;
                for (int d = 0; d < a->dk; d++) dkr[d] += a->scale * gk[d];
                float *dvr = dv + (size_t)row * a->v_stride + (size_t)kh * a->dv;
                for (int d = 0; d < a->dv; d++) dvr[d] += gv[d];
            }
        }
        free(gk);
        free(gv);
    }
    free(nm);
    free(delta);
    free(dsink_row);
}
