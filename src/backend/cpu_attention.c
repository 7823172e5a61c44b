// Causal attention (GQA, sliding window, ring-buffer KV, strided K/V rows, attention sinks):
// forward and backward. See ae_attn_args in backend/ops.h for the layout.
//
// For one query row (token t, head h) at position qpos, over the visible keys j:
//   s_j = scale · q·k_j
//   p_j = exp(s_j − m) / Z,  Z = Σ_j exp(s_j − m) [+ exp(sink_h − m)],  m = max(s, sink_h)
//   out = Σ_j p_j v_j;  lse = log2(e)·(m + ln Z)   (log2 units, ae_attn_args.lse)
// Backward, with p_j = 2^(s_j·log2 e − lse), dp_j = dout·v_j and D = dout·out (= Σ_j p_j dp_j):
//   dv_j += p_j dout
//   ds_j  = p_j (dp_j − D)
//   dq    = scale Σ_j ds_j k_j
//   dk_j += scale ds_j q
//   dsink += −p_sink D          (the sink has no value, so its dp is 0)
// lse and out come from the caller (the saved forward) or are recomputed row by row with the
// forward's own code (attn_row_forward), so both give the same bits.
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

float cpu_dotf(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

#define ATTN_LOG2E 1.4426950408889634

cpu_attn_norm cpu_attn_row_probs(const cpu_attn_row *r, const float *qv, float *p) {
    float mx = -INFINITY;
    for (int j = r->lo; j <= r->qpos; j++) {
        float s = cpu_dotf(qv, r->key(r, j), r->dk) * r->scale;
        p[j - r->lo] = s;
        if (s > mx) mx = s;
    }
    float sink = r->sink ? *r->sink : -INFINITY;
    if (sink > mx) mx = sink;
    double sum = r->sink ? exp((double)sink - mx) : 0.0;
    for (int j = r->lo; j <= r->qpos; j++) {
        p[j - r->lo] = expf(p[j - r->lo] - mx);
        sum += p[j - r->lo];
    }
    cpu_attn_norm nm = {.m = mx, .inv = (float)(1.0 / sum),
                        .lse2 = (float)((mx + log(sum)) * ATTN_LOG2E)};
    for (int j = r->lo; j <= r->qpos; j++) p[j - r->lo] *= nm.inv;
    return nm;
}

void cpu_attn_row_out(const cpu_attn_row *r, const float *p, float *o) {
    for (int d = 0; d < r->dv; d++) o[d] = 0.0f;
    for (int j = r->lo; j <= r->qpos; j++) {
        const float *vv = r->val(r, j);
        float pj = p[j - r->lo];
        for (int d = 0; d < r->dv; d++) o[d] += pj * vv[d];
    }
}

static const float *dense_key(const cpu_attn_row *r, int j) {
    return attn_k(r->args, r->k, j, r->kh);
}

static const float *dense_val(const cpu_attn_row *r, int j) {
    return attn_v(r->args, r->v, j, r->kh);
}

// One query row of the forward: o (dv values) = Σ_j p_j v_j; returns the row's lse2.
// p: scratch of pos0 + T floats.
static float attn_row_forward(const ae_attn_args *a, const float *qv, const float *k,
                              const float *v, int h, int qpos, float *p, float *o) {
    cpu_attn_row r = {.key = dense_key, .val = dense_val, .args = a, .k = k, .v = v,
                      .sink = sinks_of(a) ? sinks_of(a) + h : NULL, .kh = h / (a->Hq / a->Hkv),
                      .dk = a->dk, .dv = a->dv, .lo = attn_lo(a, qpos), .qpos = qpos,
                      .scale = a->scale};
    cpu_attn_norm nm = cpu_attn_row_probs(&r, qv, p);
    cpu_attn_row_out(&r, p, o);
    return nm.lse2;
}

// Probability of score s (natural units) in a row of log-sum-exp lse2 (log2 units).
static float attn_p(float s, float lse2) { return (float)exp2((double)s * ATTN_LOG2E - lse2); }

void ae_cpu_attention(const ae_backend *be, const ae_attn_args *a, ae_ptr outp, ae_ptr qp,
                      ae_ptr kp, ae_ptr vp) {
    (void)be;
    float *out = cpu_f(outp, "attention"), *lse = cpu_f(a->lse, "attention");
    const float *q = cpu_f(qp, "attention"), *k = cpu_f(kp, "attention"), *v = cpu_f(vp, "attention");
    int S = a->pos0 + a->T;
#pragma omp parallel if (attn_parallel(a))
    {
        float *p = malloc(sizeof(float) * (size_t)S);
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < a->T; t++) {
            for (int h = 0; h < a->Hq; h++) {
                size_t r = (size_t)t * a->Hq + h;
                float lse2 = attn_row_forward(a, q + r * a->dk, k, v, h, a->pos0 + t, p,
                                              out + r * a->dv);
                if (lse) lse[r] = lse2;
            }
        }
        free(p);
    }
}

// Two passes, each free of write conflicts so that no atomics or reductions across threads are
// needed and results do not depend on the thread count:
//   1. one task per query row (t, h): the row's lse and out (saved, or recomputed), D, dq and
//      the row's sink gradient; keep lse and D.
//   2. one task per K/V storage row (a ring slot, or a position): for each kv head, sum the
//      contributions of every query that sees the key(s) stored there into dk, dv (zeroed first
//      when a->dkv_set). One task owns all of a storage row, so dk and dv may even alias
//      (absorbed MLA, where k and v are views of the same latent rows).
void ae_cpu_attention_bwd(const ae_backend *be, const ae_attn_args *a, ae_ptr dqp, ae_ptr dkp,
                          ae_ptr dvp, ae_ptr dsinksp, ae_ptr doutp, ae_ptr outp, ae_ptr qp,
                          ae_ptr kp, ae_ptr vp) {
    (void)be;
    float *dq = cpu_f(dqp, "attention_bwd"), *dk = cpu_f(dkp, "attention_bwd");
    float *dv = cpu_f(dvp, "attention_bwd"), *dsinks = cpu_f(dsinksp, "attention_bwd");
    const float *dout = cpu_f(doutp, "attention_bwd"), *q = cpu_f(qp, "attention_bwd");
    const float *k = cpu_f(kp, "attention_bwd"), *v = cpu_f(vp, "attention_bwd");
    const float *out = cpu_f(outp, "attention_bwd"), *saved_lse = cpu_f(a->lse, "attention_bwd");
    const float *sinks = sinks_of(a);
    const int saved = out && saved_lse; // else recompute both
    int T = a->T, Hq = a->Hq, Hkv = a->Hkv, G = Hq / Hkv, S = a->pos0 + T;
    size_t nrows = (size_t)T * Hq;
    float *lse = saved ? NULL : malloc(sizeof(float) * nrows); // recomputed lse2 per row
    const float *lse2 = saved ? saved_lse : lse;
    float *delta = malloc(sizeof(float) * nrows);
    float *dsink_row = sinks && dsinks ? malloc(sizeof(float) * nrows) : NULL;

    // ---- pass 1: per query row ----
#pragma omp parallel if (attn_parallel(a))
    {
        float *p = saved ? NULL : malloc(sizeof(float) * (size_t)S);
        float *o = saved ? NULL : malloc(sizeof(float) * (size_t)a->dv);
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < Hq; h++) {
                size_t r = (size_t)t * Hq + h;
                int qpos = a->pos0 + t, lo = attn_lo(a, qpos), kh = h / G;
                const float *qv = q + r * a->dk, *dov = dout + r * a->dv, *orow = o;
                if (saved) orow = out + r * a->dv;
                else lse[r] = attn_row_forward(a, qv, k, v, h, qpos, p, o);
                double D = 0.0;
                for (int d = 0; d < a->dv; d++) D += (double)dov[d] * orow[d];
                delta[r] = (float)D;
                float *dqv = dq + r * a->dk;
                for (int d = 0; d < a->dk; d++) dqv[d] = 0.0f;
                for (int j = lo; j <= qpos; j++) {
                    const float *kv = attn_k(a, k, j, kh);
                    float pj = attn_p(cpu_dotf(qv, kv, a->dk) * a->scale, lse2[r]);
                    float ds = pj * (cpu_dotf(dov, attn_v(a, v, j, kh), a->dv) - delta[r]);
                    for (int d = 0; d < a->dk; d++) dqv[d] += ds * kv[d];
                }
                for (int d = 0; d < a->dk; d++) dqv[d] *= a->scale;
                if (dsink_row) {
                    double psink = exp2((double)sinks[h] * ATTN_LOG2E - lse2[r]);
                    dsink_row[r] = (float)(-psink * D);
                }
            }
        }
        free(p);
        free(o);
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
            if (a->dkv_set) { // the row's key and value parts start at 0 (dk, dv may alias)
                memset(dk + (size_t)row * a->k_stride, 0, sizeof(float) * (size_t)Hkv * a->dk);
                memset(dv + (size_t)row * a->v_stride, 0, sizeof(float) * (size_t)Hkv * a->dv);
            }
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
                            float p = attn_p(cpu_dotf(qv, kv, a->dk) * a->scale, lse2[r]);
                            float ds = p * (cpu_dotf(dov, vv, a->dv) - delta[r]);
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
    free(lse);
    free(delta);
    free(dsink_row);
}
