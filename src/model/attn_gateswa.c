// GateSWA attention module: parameters, initialisation, decode cache (linear or ring), inference
// forward, training forward/backward. All math goes through the op interface (backend/ops.h).
//
// Ring-buffer prefill. A sliding layer's cache holds W slots, position j in slot j % W. One new
// token (decode) is written into its slot first, which overwrites position p - W, the one key the
// query at p no longer sees; attention then reads the ring directly (ae_attn_args.ring = W).
// With T > 1 new tokens, writing them all first would overwrite keys that the earliest new
// queries still need (the query at pos0 needs pos0-W+1..pos0; writing pos0+1 already evicts
// pos0-W+1). So a prefill chunk is staged in a linear buffer instead: the L = min(pos0, W-1)
// cached positions before pos0 (copied from the ring, oldest first) followed by the T new
// keys/values; attention runs on that buffer with the window W and positions shifted by
// pos0 - L (masking depends only on distances, RoPE is already applied); then the newest
// min(W, L+T) positions are written back to their ring slots. Chunks of at most
// AE_GSWA_PREFILL_CHUNK tokens bound the staging buffer to W-1+chunk rows.
#include "model/attn_gateswa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

#define AE_GSWA_PREFILL_CHUNK 512

struct ae_gswa_acts {
    int B, T;
    float *x;  // (B, T, D)         module input
    float *qn; // (B, T, Hq, hd)    q before q_norm
    float *kn; // (B, T, Hkv, hd)   k before k_norm
    float *q;  // (B, T, Hq, hd)    q after norm + rope
    float *k;  // (B, T, Hkv, hd)   k after norm + rope
    float *v;  // (B, T, Hkv, hd)
    float *a;  // (B, T, Hq, hd)    attention output
    float *g;  // (B, T, Hq*hd | Hq) gate logits, or NULL
    float *ag; // (B, T, Hq, hd)    gated attention output (o_proj input), or NULL (== a)
};

static size_t gate_dim(const ae_gswa_dims *d) {
    return d->gate == AE_GATE_ELEMENTWISE ? (size_t)d->Hq * d->hd
           : d->gate == AE_GATE_HEAD      ? (size_t)d->Hq
                                          : 0;
}

static ae_status check_dims(const ae_gswa_dims *d) {
    if (d->D <= 0 || d->Hq <= 0 || d->Hkv <= 0 || d->hd <= 0)
        return ae_errorf(AE_ERR_ARG, "gateswa: dims must be positive (D %d, Hq %d, Hkv %d, hd %d)",
                         d->D, d->Hq, d->Hkv, d->hd);
    if (d->Hq % d->Hkv != 0)
        return ae_errorf(AE_ERR_ARG, "gateswa: Hq %d is not a multiple of Hkv %d", d->Hq, d->Hkv);
    if (d->hd % 2 != 0) return ae_errorf(AE_ERR_ARG, "gateswa: head_dim %d is odd", d->hd);
    if (d->window < 0) return ae_errorf(AE_ERR_ARG, "gateswa: window %d < 0", d->window);
    if (d->gate != AE_GATE_NONE && d->gate != AE_GATE_ELEMENTWISE && d->gate != AE_GATE_HEAD)
        return ae_errorf(AE_ERR_ARG, "gateswa: unknown gate kind %d", (int)d->gate);
    if (!(d->rope_theta > 0)) return ae_errorf(AE_ERR_ARG, "gateswa: rope_theta must be > 0");
    return AE_OK;
}

ae_status ae_gswa_init(ae_gswa *m, const ae_gswa_dims *d) {
    memset(m, 0, sizeof *m);
    AE_TRY(check_dims(d));
    m->d = *d;
    size_t D = d->D, qd = (size_t)d->Hq * d->hd, kvd = (size_t)d->Hkv * d->hd;
    m->wq = ae_alloc_f32(qd * D);
    m->wk = ae_alloc_f32(kvd * D);
    m->wv = ae_alloc_f32(kvd * D);
    m->wo = ae_alloc_f32(D * qd);
    m->q_norm = ae_alloc_f32(d->hd);
    m->k_norm = ae_alloc_f32(d->hd);
    int ok = m->wq && m->wk && m->wv && m->wo && m->q_norm && m->k_norm;
    if (ok && d->gate != AE_GATE_NONE) ok = (m->wg = ae_alloc_f32(gate_dim(d) * D)) != NULL;
    if (ok && d->sinks) ok = (m->sinks = ae_alloc_f32(d->Hq)) != NULL;
    if (!ok) {
        ae_gswa_free(m);
        return AE_ERR_NOMEM;
    }
    return AE_OK;
}

void ae_gswa_free(ae_gswa *m) {
    if (!m) return;
    float **ps[] = {&m->wq, &m->wk, &m->wv, &m->wo, &m->q_norm, &m->k_norm, &m->wg, &m->sinks};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) {
        ae_free_aligned(*ps[i]);
        *ps[i] = NULL;
    }
}

ae_param_list ae_gswa_params(ae_gswa *m) {
    ae_param_list l;
    memset(&l, 0, sizeof l);
    const ae_gswa_dims *d = &m->d;
    int64_t D = d->D, qd = (int64_t)d->Hq * d->hd, kvd = (int64_t)d->Hkv * d->hd;
    ae_param_list_add(&l, "q_proj.weight", m->wq, qd, D, 1);
    ae_param_list_add(&l, "k_proj.weight", m->wk, kvd, D, 1);
    ae_param_list_add(&l, "v_proj.weight", m->wv, kvd, D, 1);
    ae_param_list_add(&l, "o_proj.weight", m->wo, D, qd, 1);
    ae_param_list_add(&l, "q_norm.weight", m->q_norm, d->hd, 0, 0);
    ae_param_list_add(&l, "k_norm.weight", m->k_norm, d->hd, 0, 0);
    if (m->wg) // the output gate gets no weight decay
        ae_param_list_add(&l, "g_proj.weight", m->wg, (int64_t)gate_dim(d), D, 0);
    if (m->sinks) ae_param_list_add(&l, "sinks", m->sinks, d->Hq, 0, 0);
    return l;
}

static void fill_normal(float *x, size_t n, float std, ae_rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = std * ae_rng_normal(rng);
}

void ae_gswa_init_random(ae_gswa *m, float std, ae_rng *rng) {
    const ae_gswa_dims *d = &m->d;
    size_t D = d->D, qd = (size_t)d->Hq * d->hd, kvd = (size_t)d->Hkv * d->hd;
    fill_normal(m->wq, qd * D, std, rng);
    fill_normal(m->wk, kvd * D, std, rng);
    fill_normal(m->wv, kvd * D, std, rng);
    fill_normal(m->wo, D * qd, std, rng);
    for (int i = 0; i < d->hd; i++) m->q_norm[i] = m->k_norm[i] = 1.0f;
    if (m->wg) fill_normal(m->wg, gate_dim(d) * D, std, rng);
    if (m->sinks) memset(m->sinks, 0, sizeof(float) * (size_t)d->Hq);
}

ae_status ae_gswa_init_from_teacher(ae_gswa *m, const float *wq, const float *wk, const float *wv,
                                    const float *wo, const float *q_norm, const float *k_norm) {
    const ae_gswa_dims *d = &m->d;
    if (!m->wq) return ae_errorf(AE_ERR_ARG, "gateswa: teacher init of an unallocated module");
    size_t D = d->D, qd = (size_t)d->Hq * d->hd, kvd = (size_t)d->Hkv * d->hd;
    memcpy(m->wq, wq, sizeof(float) * qd * D);
    memcpy(m->wk, wk, sizeof(float) * kvd * D);
    memcpy(m->wv, wv, sizeof(float) * kvd * D);
    memcpy(m->q_norm, q_norm, sizeof(float) * (size_t)d->hd);
    memcpy(m->k_norm, k_norm, sizeof(float) * (size_t)d->hd);
    // sigmoid(0) = 1/2 exactly; o_proj ×2 compensates (exact scaling by a power of two).
    float scale = m->wg ? 2.0f : 1.0f;
    for (size_t i = 0; i < D * qd; i++) m->wo[i] = scale * wo[i];
    if (m->wg) memset(m->wg, 0, sizeof(float) * gate_dim(d) * D);
    if (m->sinks)
        for (int h = 0; h < d->Hq; h++) m->sinks[h] = AE_GSWA_SINK_INIT;
    return AE_OK;
}

// ---------------------------------------------------------------------------------------------
// Decode cache

ae_status ae_gswa_cache_init(ae_gswa_cache *c, const ae_gswa_dims *d, int max_positions) {
    memset(c, 0, sizeof *c);
    AE_TRY(check_dims(d));
    c->ring = d->window > 0;
    if (!c->ring && max_positions <= 0)
        return ae_errorf(AE_ERR_ARG, "gateswa cache: max_positions %d must be > 0", max_positions);
    c->rows = c->ring ? d->window : max_positions;
    c->kv_dim = d->Hkv * d->hd;
    c->k = ae_alloc_f32((size_t)c->rows * c->kv_dim);
    c->v = ae_alloc_f32((size_t)c->rows * c->kv_dim);
    if (!c->k || !c->v) {
        ae_gswa_cache_free(c);
        return AE_ERR_NOMEM;
    }
    return AE_OK;
}

void ae_gswa_cache_free(ae_gswa_cache *c) {
    if (!c) return;
    ae_free_aligned(c->k);
    ae_free_aligned(c->v);
    c->k = c->v = NULL;
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

// q, k, v of M rows of x at positions pos: the pre-norm projections go to qn/kn when those are
// given (training keeps them for rmsnorm_bwd), the normed + rotated q/k to q/k.
//   x: (M, D)  q, qn: (M, Hq, hd)  k, kn, v: (M, Hkv, hd)  pos: (M)
static void project_qkv(const ae_backend *be, const ae_gswa *m, const float *x, int M,
                        const int *pos, float *q, float *k, float *v, float *qn, float *kn) {
    const ae_gswa_dims *d = &m->d;
    int D = d->D, hd = d->hd, Hq = d->Hq, Hkv = d->Hkv;
    float *qr = qn ? qn : q, *kr = kn ? kn : k;
    be->matmul(be, qr, x, m->wq, M, D, Hq * hd);
    be->matmul(be, kr, x, m->wk, M, D, Hkv * hd);
    be->matmul(be, v, x, m->wv, M, D, Hkv * hd);
    be->rmsnorm(be, q, qr, m->q_norm, M * Hq, hd, d->eps);
    be->rmsnorm(be, k, kr, m->k_norm, M * Hkv, hd, d->eps);
    be->rope(be, q, pos, M, Hq, hd, hd, d->rope_theta, AE_ROPE_HALF);
    be->rope(be, k, pos, M, Hkv, hd, hd, d->rope_theta, AE_ROPE_HALF);
}

static float attn_scale(const ae_gswa_dims *d) { return 1.0f / sqrtf((float)d->hd); }

// y = (a ⊙ sigmoid(x·Wgᵀ))·Woᵀ for M rows. a is overwritten by the gated values; g: scratch
// (M, gate_dim) or NULL without a gate.  x: (M, D)  a: (M, Hq, hd)  y: (M, D)
static void gate_out(const ae_backend *be, const ae_gswa *m, const float *x, float *a, float *g,
                     int M, float *y) {
    const ae_gswa_dims *d = &m->d;
    int qd = d->Hq * d->hd;
    if (m->wg) {
        be->matmul(be, g, x, m->wg, M, d->D, (int)gate_dim(d));
        be->gate_mul(be, a, a, g, M, d->Hq, d->hd, d->gate == AE_GATE_HEAD);
    }
    be->matmul(be, y, a, m->wo, M, qd, d->D);
}

static ae_status need_ops(const ae_backend *be, const ae_gswa *m, int backward) {
    if (m->wg && !be->gate_mul)
        return ae_errorf(AE_ERR_UNSUPPORTED, "gateswa: backend %s lacks gate_mul", be->name);
    if (backward && (!be->matmul_bwd || !be->rmsnorm_bwd || !be->rope_bwd ||
                     !be->attention_bwd || (m->wg && !be->gate_mul_bwd)))
        return ae_errorf(AE_ERR_UNSUPPORTED, "gateswa: backend %s lacks backward ops", be->name);
    return AE_OK;
}

// ---------------------------------------------------------------------------------------------
// Inference

ae_status ae_gswa_forward(const ae_backend *be, const ae_gswa *m, const float *x, int T, int pos0,
                          ae_gswa_cache *cache, float *y) {
    const ae_gswa_dims *d = &m->d;
    int Hq = d->Hq, Hkv = d->Hkv, hd = d->hd, W = d->window, kvd = Hkv * hd;
    if (T <= 0 || pos0 < 0) return ae_errorf(AE_ERR_ARG, "gateswa forward: T %d, pos0 %d", T, pos0);
    if (cache->kv_dim != kvd || cache->ring != (W > 0) || (cache->ring && cache->rows != W))
        return ae_errorf(AE_ERR_ARG, "gateswa forward: cache does not match the layer");
    if (!cache->ring && pos0 + T > cache->rows)
        return ae_errorf(AE_ERR_ARG, "gateswa forward: positions up to %d exceed the cache (%d)",
                         pos0 + T, cache->rows);
    AE_TRY(need_ops(be, m, 0));

    int chunk = T < AE_GSWA_PREFILL_CHUNK ? T : AE_GSWA_PREFILL_CHUNK;
    size_t stage_rows = cache->ring && T > 1 ? (size_t)(W - 1) + chunk : 0;
    int *pos = ae_malloc(sizeof(int) * (size_t)T);
    float *q = ae_alloc_f32((size_t)T * Hq * hd);             // (T, Hq, hd)
    float *a = ae_alloc_f32((size_t)T * Hq * hd);             // (T, Hq, hd)
    float *kn = ae_alloc_f32((size_t)T * kvd);                // (T, Hkv, hd) new keys
    float *vn = ae_alloc_f32((size_t)T * kvd);                // (T, Hkv, hd) new values
    float *g = m->wg ? ae_alloc_f32((size_t)T * gate_dim(d)) : NULL; // (T, gate_dim)
    float *sk = stage_rows ? ae_alloc_f32(stage_rows * kvd) : NULL;  // (W-1+chunk, Hkv, hd)
    float *sv = stage_rows ? ae_alloc_f32(stage_rows * kvd) : NULL;
    ae_status st = AE_OK;
    if (!pos || !q || !a || !kn || !vn || (m->wg && !g) || (stage_rows && (!sk || !sv))) {
        st = AE_ERR_NOMEM;
        goto done;
    }
    for (int t = 0; t < T; t++) pos[t] = pos0 + t;
    project_qkv(be, m, x, T, pos, q, kn, vn, NULL, NULL);
    float scale = attn_scale(d);

    if (!cache->ring) {
        memcpy(cache->k + (size_t)pos0 * kvd, kn, sizeof(float) * (size_t)T * kvd);
        memcpy(cache->v + (size_t)pos0 * kvd, vn, sizeof(float) * (size_t)T * kvd);
        ae_attn_args aa = ae_attn_dense(T, pos0, Hq, Hkv, hd, hd, 0, scale, m->sinks);
        be->attention(be, &aa, a, q, cache->k, cache->v);
    } else if (T == 1) {
        size_t slot = (size_t)(pos0 % W);
        memcpy(cache->k + slot * kvd, kn, sizeof(float) * kvd);
        memcpy(cache->v + slot * kvd, vn, sizeof(float) * kvd);
        ae_attn_args aa = ae_attn_dense(1, pos0, Hq, Hkv, hd, hd, W, scale, m->sinks);
        aa.ring = W;
        be->attention(be, &aa, a, q, cache->k, cache->v);
    } else {
        for (int c0 = 0; c0 < T; c0 += chunk) {
            int C = T - c0 < chunk ? T - c0 : chunk, p0 = pos0 + c0;
            int L = p0 < W - 1 ? p0 : W - 1; // staged history rows
            for (int i = 0; i < L; i++) { // history: positions p0-L .. p0-1, oldest first
                size_t slot = (size_t)((p0 - L + i) % W);
                memcpy(sk + (size_t)i * kvd, cache->k + slot * kvd, sizeof(float) * kvd);
                memcpy(sv + (size_t)i * kvd, cache->v + slot * kvd, sizeof(float) * kvd);
            }
            memcpy(sk + (size_t)L * kvd, kn + (size_t)c0 * kvd, sizeof(float) * (size_t)C * kvd);
            memcpy(sv + (size_t)L * kvd, vn + (size_t)c0 * kvd, sizeof(float) * (size_t)C * kvd);
            // Staged row i holds position p0 - L + i: queries sit at shifted positions L..L+C-1.
            ae_attn_args aa = ae_attn_dense(C, L, Hq, Hkv, hd, hd, W, scale, m->sinks);
            be->attention(be, &aa, a + (size_t)c0 * Hq * hd, q + (size_t)c0 * Hq * hd, sk, sv);
            int keep = L + C < W ? L + C : W; // newest positions go back into the ring
            for (int i = L + C - keep; i < L + C; i++) {
                size_t slot = (size_t)((p0 - L + i) % W);
                memcpy(cache->k + slot * kvd, sk + (size_t)i * kvd, sizeof(float) * kvd);
                memcpy(cache->v + slot * kvd, sv + (size_t)i * kvd, sizeof(float) * kvd);
            }
        }
    }
    gate_out(be, m, x, a, g, T, y);
done:
    free(pos);
    ae_free_aligned(q);
    ae_free_aligned(a);
    ae_free_aligned(kn);
    ae_free_aligned(vn);
    ae_free_aligned(g);
    ae_free_aligned(sk);
    ae_free_aligned(sv);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Training

void ae_gswa_acts_free(ae_gswa_acts *a) {
    if (!a) return;
    float *ps[] = {a->x, a->qn, a->kn, a->q, a->k, a->v, a->a, a->g, a->ag};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) ae_free_aligned(ps[i]);
    free(a);
}

ae_status ae_gswa_train_forward(const ae_backend *be, const ae_gswa *m, const float *x, int B,
                                int T, float *y, ae_gswa_acts **acts) {
    const ae_gswa_dims *d = &m->d;
    int Hq = d->Hq, Hkv = d->Hkv, hd = d->hd, D = d->D;
    *acts = NULL;
    if (B <= 0 || T <= 0) return ae_errorf(AE_ERR_ARG, "gateswa train_forward: B %d, T %d", B, T);
    AE_TRY(need_ops(be, m, 0));
    size_t M = (size_t)B * T, qd = (size_t)Hq * hd, kvd = (size_t)Hkv * hd;
    ae_gswa_acts *s = ae_calloc(1, sizeof *s);
    int *pos = ae_malloc(sizeof(int) * M);
    if (!s || !pos) {
        free(s);
        free(pos);
        return AE_ERR_NOMEM;
    }
    s->B = B;
    s->T = T;
    s->x = ae_alloc_f32(M * D);
    s->qn = ae_alloc_f32(M * qd);
    s->kn = ae_alloc_f32(M * kvd);
    s->q = ae_alloc_f32(M * qd);
    s->k = ae_alloc_f32(M * kvd);
    s->v = ae_alloc_f32(M * kvd);
    s->a = ae_alloc_f32(M * qd);
    int ok = s->x && s->qn && s->kn && s->q && s->k && s->v && s->a;
    if (ok && m->wg) ok = (s->g = ae_alloc_f32(M * gate_dim(d))) && (s->ag = ae_alloc_f32(M * qd));
    if (!ok) {
        free(pos);
        ae_gswa_acts_free(s);
        return AE_ERR_NOMEM;
    }
    memcpy(s->x, x, sizeof(float) * M * D);
    for (size_t i = 0; i < M; i++) pos[i] = (int)(i % (size_t)T);
    project_qkv(be, m, x, (int)M, pos, s->q, s->k, s->v, s->qn, s->kn);
    free(pos);
    ae_attn_args aa = ae_attn_dense(T, 0, Hq, Hkv, hd, hd, d->window, attn_scale(d), m->sinks);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * T;
        be->attention(be, &aa, s->a + o * qd, s->q + o * qd, s->k + o * kvd, s->v + o * kvd);
    }
    if (m->wg) {
        be->matmul(be, s->g, x, m->wg, (int)M, D, (int)gate_dim(d));
        be->gate_mul(be, s->ag, s->a, s->g, (int)M, Hq, hd, d->gate == AE_GATE_HEAD);
    }
    be->matmul(be, y, m->wg ? s->ag : s->a, m->wo, (int)M, (int)qd, D);
    *acts = s;
    return AE_OK;
}

ae_status ae_gswa_backward(const ae_backend *be, const ae_gswa *m, const ae_gswa_acts *s,
                           const float *dy, float *dx, ae_gswa *grad) {
    const ae_gswa_dims *d = &m->d;
    int Hq = d->Hq, Hkv = d->Hkv, hd = d->hd, D = d->D, B = s->B, T = s->T;
    AE_TRY(need_ops(be, m, 1));
    const ae_gswa_dims *gdm = &grad->d;
    if (gdm->D != D || gdm->Hq != Hq || gdm->Hkv != Hkv || gdm->hd != hd || !grad->wq ||
        (m->wg != NULL) != (grad->wg != NULL) || gdm->gate != d->gate ||
        (m->sinks != NULL) != (grad->sinks != NULL))
        return ae_errorf(AE_ERR_ARG, "gateswa backward: gradient buffers do not match the module");
    size_t M = (size_t)B * T, qd = (size_t)Hq * hd, kvd = (size_t)Hkv * hd, gd = gate_dim(d);
    float *dag = ae_alloc_f32(M * qd); // (M, Hq, hd) grad of the o_proj input, then of q
    float *da = m->wg ? ae_alloc_f32(M * qd) : NULL; // (M, Hq, hd) grad of attention output
    float *dg = m->wg ? ae_alloc_f32(M * gd) : NULL; // (M, gate_dim)
    float *dq = ae_alloc_f32(M * qd);  // (M, Hq, hd)
    float *dk = ae_alloc_f32(M * kvd); // (M, Hkv, hd)
    float *dv = ae_alloc_f32(M * kvd); // (M, Hkv, hd)
    float *dqn = ae_alloc_f32(M * qd); // (M, Hq, hd)  grad of q before q_norm
    float *dkn = ae_alloc_f32(M * kvd);
    ae_status st = AE_OK;
    if (!dag || (m->wg && (!da || !dg)) || !dq || !dk || !dv || !dqn || !dkn) {
        st = AE_ERR_NOMEM;
        goto done;
    }
    if (dx) memset(dx, 0, sizeof(float) * M * D);

    // y = ag·Woᵀ
    be->matmul_bwd(be, dag, grad->wo, dy, m->wg ? s->ag : s->a, m->wo, (int)M, (int)qd, D);
    if (m->wg) { // ag = a ⊙ σ(g), g = x·Wgᵀ
        be->gate_mul_bwd(be, da, dg, dag, s->a, s->g, (int)M, Hq, hd, d->gate == AE_GATE_HEAD);
        be->matmul_bwd(be, dx, grad->wg, dg, s->x, m->wg, (int)M, D, (int)gd);
    } else {
        da = dag;
        dag = NULL;
    }
    ae_attn_args aa = ae_attn_dense(T, 0, Hq, Hkv, hd, hd, d->window, attn_scale(d), m->sinks);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * T;
        be->attention_bwd(be, &aa, dq + o * qd, dk + o * kvd, dv + o * kvd,
                          grad->sinks, da + o * qd, s->q + o * qd, s->k + o * kvd,
                          s->v + o * kvd);
    }
    int *pos = ae_malloc(sizeof(int) * M);
    if (!pos) {
        st = AE_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < M; i++) pos[i] = (int)(i % (size_t)T);
    be->rope_bwd(be, dq, pos, (int)M, Hq, hd, hd, d->rope_theta, AE_ROPE_HALF);
    be->rope_bwd(be, dk, pos, (int)M, Hkv, hd, hd, d->rope_theta, AE_ROPE_HALF);
    free(pos);
    be->rmsnorm_bwd(be, dqn, grad->q_norm, dq, s->qn, m->q_norm, (int)(M * Hq), hd, d->eps);
    be->rmsnorm_bwd(be, dkn, grad->k_norm, dk, s->kn, m->k_norm, (int)(M * Hkv), hd, d->eps);
    be->matmul_bwd(be, dx, grad->wq, dqn, s->x, m->wq, (int)M, D, (int)qd);
    be->matmul_bwd(be, dx, grad->wk, dkn, s->x, m->wk, (int)M, D, (int)kvd);
    be->matmul_bwd(be, dx, grad->wv, dv, s->x, m->wv, (int)M, D, (int)kvd);
done:
    ae_free_aligned(dag);
    ae_free_aligned(da);
    ae_free_aligned(dg);
    ae_free_aligned(dq);
    ae_free_aligned(dk);
    ae_free_aligned(dv);
    ae_free_aligned(dqn);
    ae_free_aligned(dkn);
    return st;
}
