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
// gswa_prefill_chunk() tokens bound the staging buffer to W-1+chunk rows: 8192 (37 MB of bf16
// K/V staging at Qwen3-8B's W 1024, 8 kv heads), long enough that a chunk's K/V projection is
// an efficient GEMM and a 4K prompt is one chunk (512 made the windowed layers' projections
// 512-row GEMMs, 8 of them per 4K prompt, each with its ring copies and attention launch).
#include "model/attn_gateswa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/mem.h"
#include "model/gswa_internal.h"

#define AE_GSWA_PREFILL_CHUNK 8192

// Tokens per staged ring-prefill chunk: AE_GSWA_PREFILL_CHUNK, or the environment's
// AE_GSWA_PREFILL_CHUNK (for tests that cover many chunks cheaply and for A/B measurements),
// read at every call.
static int gswa_prefill_chunk(void) {
    return ae_env_int("AE_GSWA_PREFILL_CHUNK", AE_GSWA_PREFILL_CHUNK, 1, 1L << 24);
}

struct ae_gswa_acts {
    int B, T;
    ae_scratch mem; // every buffer below
    ae_ptr pos;     // (B*T) I32 positions t
    ae_ptr x;       // (B, T, D)         module input, borrowed (ae_gswa_train_forward)
    ae_ptr qn;      // (B, T, Hq, hd)    q before q_norm
    ae_ptr kn;      // (B, T, Hkv, hd)   k before k_norm
    ae_ptr q;       // (B, T, Hq, hd)    q after norm + rope
    ae_ptr k;       // (B, T, Hkv, hd)   k after norm + rope
    ae_ptr v;       // (B, T, Hkv, hd)
    ae_ptr a;       // (B, T, Hq, hd)    attention output
    ae_ptr lse;     // (B, T, Hq) F32    its rows' log-sum-exp (ae_attn_args.lse): the backward
                    //                   uses a and lse instead of running the forward again
    ae_ptr g;       // (B, T, Hq*hd | Hq) gate logits, or null
    ae_ptr ag;      // (B, T, Hq, hd)    gated attention output (o_proj input), or null (== a)
};

size_t gswa_gate_dim(const ae_gswa_dims *d) {
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

ae_param_list ae_gswa_params(ae_gswa *m) {
    ae_param_list l;
    memset(&l, 0, sizeof l);
    const ae_gswa_dims *d = &m->d;
    int64_t D = d->D, qd = (int64_t)d->Hq * d->hd, kvd = (int64_t)d->Hkv * d->hd;
    ae_param_list_add(&l, "q_proj.weight", &m->wq, qd, D, 1);
    ae_param_list_add(&l, "k_proj.weight", &m->wk, kvd, D, 1);
    ae_param_list_add(&l, "v_proj.weight", &m->wv, kvd, D, 1);
    ae_param_list_add(&l, "o_proj.weight", &m->wo, D, qd, 1);
    ae_param_list_add(&l, "q_norm.weight", &m->q_norm, d->hd, 0, 0);
    ae_param_list_add(&l, "k_norm.weight", &m->k_norm, d->hd, 0, 0);
    if (d->gate != AE_GATE_NONE) // the output gate gets no weight decay
        ae_param_list_add(&l, "g_proj.weight", &m->wg, (int64_t)gswa_gate_dim(d), D, 0);
    if (d->sinks) ae_param_list_add(&l, "sinks", &m->sinks, d->Hq, 0, 0);
    return l;
}

ae_status ae_gswa_init(ae_gswa *m, const ae_gswa_dims *d, const ae_backend *be) {
    memset(m, 0, sizeof *m);
    AE_TRY(check_dims(d));
    m->d = *d;
    m->be = be;
    ae_param_list l = ae_gswa_params(m);
    ae_status st = ae_params_alloc(be, be->weight_dtype, &l);
    if (st != AE_OK) m->be = NULL;
    return st;
}

void ae_gswa_free(ae_gswa *m) {
    if (!m || !m->be) return;
    ae_param_list l = ae_gswa_params(m);
    ae_params_free(m->be, &l);
    m->be = NULL;
}

// Uploads n host values into dst.
static ae_status put(const ae_backend *be, ae_ptr dst, const float *src, size_t n) {
    return be->upload(be, dst, src, AE_DT_F32, n);
}

ae_status ae_gswa_init_random(ae_gswa *m, float std, ae_rng *rng) {
    ae_param_list l = ae_gswa_params(m);
    const ae_backend *be = m->be;
    for (int i = 0; i < l.n; i++) {
        const ae_param *p = &l.p[i];
        size_t n = (size_t)ae_param_numel(p);
        uint64_t seed = ae_rng_u64(rng); // one stream per tensor, drawn in order
        if (strstr(p->name, "norm")) be->fill(be, p->data, n, 1.0f);
        else if (!strcmp(p->name, "sinks")) be->fill(be, p->data, n, 0.0f);
        else be->fill_normal(be, p->data, n, std, seed);
    }
    return be->sync(be);
}

ae_status ae_gswa_init_from_teacher(ae_gswa *m, const ae_gswa *t) {
    const ae_gswa_dims *d = &m->d;
    const ae_backend *be = m->be;
    if (!be) return ae_errorf(AE_ERR_ARG, "gateswa: teacher init of an unallocated module");
    if (t->d.D != d->D || t->d.Hq != d->Hq || t->d.Hkv != d->Hkv || t->d.hd != d->hd ||
        t->be != be)
        return ae_errorf(AE_ERR_ARG, "gateswa: teacher module has other dims");
    size_t D = d->D, qd = (size_t)d->Hq * d->hd, kvd = (size_t)d->Hkv * d->hd;
    ae_copy(be, m->wq, t->wq, qd * D);
    ae_copy(be, m->wk, t->wk, kvd * D);
    ae_copy(be, m->wv, t->wv, kvd * D);
    ae_copy(be, m->q_norm, t->q_norm, (size_t)d->hd);
    ae_copy(be, m->k_norm, t->k_norm, (size_t)d->hd);
    // sigmoid(0) = 1/2 exactly; o_proj ×2 compensates (exact scaling by a power of two).
    float *wo = ae_alloc_f32(D * qd);
    if (!wo) return AE_ERR_NOMEM;
    ae_status st = be->download(be, wo, AE_DT_F32, t->wo, D * qd);
    if (st == AE_OK) {
        float scale = ae_ptr_is_null(m->wg) ? 1.0f : 2.0f;
        for (size_t i = 0; i < D * qd; i++) wo[i] *= scale;
        st = put(be, m->wo, wo, D * qd);
    }
    ae_free_aligned(wo);
    if (!ae_ptr_is_null(m->wg)) be->fill(be, m->wg, gswa_gate_dim(d) * D, 0.0f);
    if (!ae_ptr_is_null(m->sinks)) be->fill(be, m->sinks, (size_t)d->Hq, AE_GSWA_SINK_INIT);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Decode cache

ae_status ae_gswa_cache_init(ae_gswa_cache *c, const ae_gswa_dims *d, int max_positions,
                             const ae_backend *be) {
    memset(c, 0, sizeof *c);
    AE_TRY(check_dims(d));
    c->ring = d->window > 0;
    if (!c->ring && max_positions <= 0)
        return ae_errorf(AE_ERR_ARG, "gateswa cache: max_positions %d must be > 0", max_positions);
    c->be = be;
    c->rows = c->ring ? d->window : max_positions;
    c->kv_dim = d->Hkv * d->hd;
    c->k = be->alloc(be, (size_t)c->rows * c->kv_dim, be->act_dtype);
    c->v = be->alloc(be, (size_t)c->rows * c->kv_dim, be->act_dtype);
    if (ae_ptr_is_null(c->k) || ae_ptr_is_null(c->v)) {
        ae_gswa_cache_free(c);
        return AE_ERR_NOMEM;
    }
    return AE_OK;
}

void ae_gswa_cache_free(ae_gswa_cache *c) {
    if (!c || !c->be) return;
    c->be->free(c->be, c->k);
    c->be->free(c->be, c->v);
    c->k = c->v = ae_ptr_null();
    c->be = NULL;
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

// q of M rows of x at positions pos: the pre-norm projection goes to qn when given (training
// keeps it for rmsnorm_bwd), the normed + rotated q to q.   x: (M, D)  q, qn: (M, Hq, hd)
void gswa_project_q(const ae_backend *be, const ae_gswa *m, ae_ptr x, int M, ae_ptr pos,
                      ae_ptr q, ae_ptr qn) {
    const ae_gswa_dims *d = &m->d;
    ae_ptr raw = ae_ptr_is_null(qn) ? q : qn;
    ae_matmul(be, raw, x, m->wq, M, d->D, d->Hq * d->hd);
    be->rmsnorm(be, q, raw, m->q_norm, M * d->Hq, d->hd, d->hd, d->eps);
    be->rope(be, q, pos, M, d->Hq, d->hd, d->hd, d->rope_theta, AE_ROPE_HALF);
}

// k (normed + rotated) and v of M rows, k's pre-norm projection to kn when given.
//   x: (M, D)  k, kn, v: (M, Hkv, hd)
void gswa_project_kv(const ae_backend *be, const ae_gswa *m, ae_ptr x, int M, ae_ptr pos,
                       ae_ptr k, ae_ptr v, ae_ptr kn) {
    const ae_gswa_dims *d = &m->d;
    ae_ptr raw = ae_ptr_is_null(kn) ? k : kn;
    ae_matmul(be, raw, x, m->wk, M, d->D, d->Hkv * d->hd);
    ae_matmul(be, v, x, m->wv, M, d->D, d->Hkv * d->hd);
    be->rmsnorm(be, k, raw, m->k_norm, M * d->Hkv, d->hd, d->hd, d->eps);
    be->rope(be, k, pos, M, d->Hkv, d->hd, d->hd, d->rope_theta, AE_ROPE_HALF);
}

// Inference: q, k, v and the gate logits of M rows in one matmul group (one GEMV launch at
// decode on cuda), then q and k normed + rotated by one qk_norm_rope. Computes what
// gswa_project_q, gswa_project_kv and gswa_gate_out's gate product compute, row for row.
void gswa_project_qkv(const ae_backend *be, const ae_gswa *m, ae_ptr x, int M, ae_ptr pos,
                      ae_ptr q, ae_ptr k, ae_ptr v, ae_ptr g) {
    const ae_gswa_dims *d = &m->d;
    int qd = d->Hq * d->hd, kvd = d->Hkv * d->hd, n = 0, N[4];
    ae_ptr ys[4], ws[4];
    if (!ae_ptr_is_null(q)) ys[n] = q, ws[n] = m->wq, N[n++] = qd;
    if (!ae_ptr_is_null(k)) {
        ys[n] = k, ws[n] = m->wk, N[n++] = kvd;
        ys[n] = v, ws[n] = m->wv, N[n++] = kvd;
    }
    if (!ae_ptr_is_null(g) && !ae_ptr_is_null(m->wg))
        ys[n] = g, ws[n] = m->wg, N[n++] = (int)gswa_gate_dim(d);
    ae_matmul_group(be, n, ys, x, ws, N, M, d->D);
    ae_qk_norm_rope_args a = {.M = M, .Hq = d->Hq, .Hkv = d->Hkv, .hd = d->hd, .rd = d->hd,
                              .ldq = qd, .ldk = kvd, .eps = d->eps, .theta = d->rope_theta,
                              .mode = AE_ROPE_HALF};
    be->qk_norm_rope(be, &a, q, k, m->q_norm, m->k_norm, pos);
}

float gswa_attn_scale(const ae_gswa_dims *d) { return 1.0f / sqrtf((float)d->hd); }

// y = (a ⊙ sigmoid(g))·Woᵀ for M rows, g the gate logits already computed (ignored without a
// gate). a is overwritten by the gated values.  a: (M, Hq, hd)  g: (M, gswa_gate_dim)  y: (M, D)
void gswa_gated_out(const ae_backend *be, const ae_gswa *m, ae_ptr a, ae_ptr g, int M, ae_ptr y) {
    const ae_gswa_dims *d = &m->d;
    if (!ae_ptr_is_null(m->wg)) be->gate_mul(be, a, a, g, M, d->Hq, d->hd, d->gate == AE_GATE_HEAD);
    ae_matmul(be, y, a, m->wo, M, d->Hq * d->hd, d->D);
}

// y = (a ⊙ sigmoid(x·Wgᵀ))·Woᵀ for M rows. a is overwritten by the gated values; g: scratch
// (M, gswa_gate_dim) or null without a gate.  x: (M, D)  a: (M, Hq, hd)  y: (M, D)
void gswa_gate_out(const ae_backend *be, const ae_gswa *m, ae_ptr x, ae_ptr a, ae_ptr g, int M,
                     ae_ptr y) {
    const ae_gswa_dims *d = &m->d;
    if (!ae_ptr_is_null(m->wg)) ae_matmul(be, g, x, m->wg, M, d->D, (int)gswa_gate_dim(d));
    gswa_gated_out(be, m, a, g, M, y);
}

static ae_status need_backward(const ae_backend *be) {
    if (!be->rmsnorm_bwd || !be->rope_bwd || !be->attention_bwd || !be->gate_mul_bwd)
        return ae_errorf(AE_ERR_UNSUPPORTED, "gateswa: the %s backend has no training ops yet",
                         be->name);
    return AE_OK;
}

// Copies the K/V rows of positions p .. p+n-1 between a ring of W slots (position j in slot
// j % W) and n consecutive rows of `lin`: into the ring when to_ring, else out of it. At most
// two contiguous runs.
static void ring_copy(const ae_backend *be, ae_ptr ring, ae_ptr lin, int kvd, int W, int p, int n,
                      int to_ring) {
    for (int done = 0; done < n;) {
        int slot = (p + done) % W, run = n - done < W - slot ? n - done : W - slot;
        ae_ptr r = ae_ptr_at(ring, (size_t)slot * kvd), l = ae_ptr_at(lin, (size_t)done * kvd);
        if (to_ring) ae_copy(be, r, l, (size_t)run * kvd);
        else ae_copy(be, l, r, (size_t)run * kvd);
        done += run;
    }
}

// ---------------------------------------------------------------------------------------------
// Inference

ae_status ae_gswa_forward(const ae_backend *be, const ae_gswa *m, ae_ptr x, int T, int pos0,
                          ae_ptr pos, ae_gswa_cache *cache, ae_ptr y) {
    const ae_gswa_dims *d = &m->d;
    int Hq = d->Hq, Hkv = d->Hkv, hd = d->hd, W = d->window, kvd = Hkv * hd;
    if (T <= 0 || pos0 < 0) return ae_errorf(AE_ERR_ARG, "gateswa forward: T %d, pos0 %d", T, pos0);
    if (cache->kv_dim != kvd || cache->ring != (W > 0) || (cache->ring && cache->rows != W))
        return ae_errorf(AE_ERR_ARG, "gateswa forward: cache does not match the layer");
    if (!cache->ring && pos0 + T > cache->rows)
        return ae_errorf(AE_ERR_ARG, "gateswa forward: positions up to %d exceed the cache (%d)",
                         pos0 + T, cache->rows);

    int chunk = gswa_prefill_chunk();
    if (chunk > T) chunk = T;
    size_t stage_rows = cache->ring && T > 1 ? (size_t)(W - 1) + chunk : 0;
    ae_dtype at = be->act_dtype;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr q = ae_scratch_alloc(&s, (size_t)T * Hq * hd, at); // (T, Hq, hd)
    ae_ptr a = ae_scratch_alloc(&s, (size_t)T * Hq * hd, at); // (T, Hq, hd)
    ae_ptr g = ae_ptr_is_null(m->wg) ? ae_ptr_null() : ae_scratch_alloc(&s, (size_t)T * gswa_gate_dim(d), at);
    ae_ptr sk = stage_rows ? ae_scratch_alloc(&s, stage_rows * kvd, at) : ae_ptr_null(); // (W-1+chunk, Hkv, hd)
    ae_ptr sv = stage_rows ? ae_scratch_alloc(&s, stage_rows * kvd, at) : ae_ptr_null();
    if (s.failed) {
        ae_scratch_free(&s);
        return AE_ERR_NOMEM;
    }
    float scale = gswa_attn_scale(d);

    // q, k, v (and the gate) in one matmul group and one qk_norm_rope: the decode path is two
    // launches before attention. A chunked ring prefill projects q and the gate first, then k
    // and v chunk by chunk.
    if (!cache->ring) { // keys and values go straight into their cache rows
        size_t o = (size_t)pos0 * kvd;
        gswa_project_qkv(be, m, x, T, pos, q, ae_ptr_at(cache->k, o), ae_ptr_at(cache->v, o), g);
        ae_attn_args aa = ae_attn_dense(T, pos0, Hq, Hkv, hd, hd, 0, scale, m->sinks);
        be->attention(be, &aa, a, q, cache->k, cache->v);
    } else if (T == 1) {
        size_t o = (size_t)(pos0 % W) * kvd;
        gswa_project_qkv(be, m, x, 1, pos, q, ae_ptr_at(cache->k, o), ae_ptr_at(cache->v, o), g);
        ae_attn_args aa = ae_attn_dense(1, pos0, Hq, Hkv, hd, hd, W, scale, m->sinks);
        aa.ring = W;
        be->attention(be, &aa, a, q, cache->k, cache->v);
    } else {
        gswa_project_qkv(be, m, x, T, pos, q, ae_ptr_null(), ae_ptr_null(), g);
        for (int c0 = 0; c0 < T; c0 += chunk) {
            int C = T - c0 < chunk ? T - c0 : chunk, p0 = pos0 + c0;
            int L = p0 < W - 1 ? p0 : W - 1; // staged history: positions p0-L .. p0-1
            ring_copy(be, cache->k, sk, kvd, W, p0 - L, L, 0);
            ring_copy(be, cache->v, sv, kvd, W, p0 - L, L, 0);
            gswa_project_qkv(be, m, ae_ptr_at(x, (size_t)c0 * d->D), C, ae_ptr_at(pos, (size_t)c0),
                             ae_ptr_null(), ae_ptr_at(sk, (size_t)L * kvd),
                             ae_ptr_at(sv, (size_t)L * kvd), ae_ptr_null());
            // Staged row i holds position p0 - L + i: queries sit at shifted positions L..L+C-1.
            ae_attn_args aa = ae_attn_dense(C, L, Hq, Hkv, hd, hd, W, scale, m->sinks);
            size_t qo = (size_t)c0 * Hq * hd;
            be->attention(be, &aa, ae_ptr_at(a, qo), ae_ptr_at(q, qo), sk, sv);
            int keep = L + C < W ? L + C : W; // newest positions go back into the ring
            size_t first = (size_t)(L + C - keep) * kvd;
            ring_copy(be, cache->k, ae_ptr_at(sk, first), kvd, W, p0 + C - keep, keep, 1);
            ring_copy(be, cache->v, ae_ptr_at(sv, first), kvd, W, p0 + C - keep, keep, 1);
        }
    }
    gswa_gated_out(be, m, a, g, T, y);
    ae_scratch_free(&s);
    return AE_OK;
}

// ---------------------------------------------------------------------------------------------
// Training

void ae_gswa_acts_free(ae_gswa_acts *a) {
    if (!a) return;
    ae_scratch_free(&a->mem);
    free(a);
}

ae_status ae_gswa_train_forward(const ae_backend *be, const ae_gswa *m, ae_ptr x, int B, int T,
                                ae_ptr y, ae_gswa_acts **acts) {
    const ae_gswa_dims *d = &m->d;
    int Hq = d->Hq, Hkv = d->Hkv, hd = d->hd, D = d->D;
    *acts = NULL;
    if (B <= 0 || T <= 0) return ae_errorf(AE_ERR_ARG, "gateswa train_forward: B %d, T %d", B, T);
    size_t M = (size_t)B * T, qd = (size_t)Hq * hd, kvd = (size_t)Hkv * hd;
    ae_gswa_acts *s = ae_calloc(1, sizeof *s);
    if (!s) return AE_ERR_NOMEM;
    s->B = B;
    s->T = T;
    ae_scratch_init(&s->mem, be);
    ae_dtype at = be->act_dtype;
    s->pos = ae_scratch_positions(&s->mem, (int)M, 0, T);
    s->qn = ae_scratch_alloc(&s->mem, M * qd, at);
    s->kn = ae_scratch_alloc(&s->mem, M * kvd, at);
    s->q = ae_scratch_alloc(&s->mem, M * qd, at);
    s->k = ae_scratch_alloc(&s->mem, M * kvd, at);
    s->v = ae_scratch_alloc(&s->mem, M * kvd, at);
    s->a = ae_scratch_alloc(&s->mem, M * qd, at);
    s->lse = ae_scratch_alloc(&s->mem, M * Hq, AE_DT_F32);
    if (!ae_ptr_is_null(m->wg)) {
        s->g = ae_scratch_alloc(&s->mem, M * gswa_gate_dim(d), at);
        s->ag = ae_scratch_alloc(&s->mem, M * qd, at);
    }
    if (s->mem.failed) {
        ae_gswa_acts_free(s);
        return AE_ERR_NOMEM;
    }
    s->x = x;
    gswa_project_q(be, m, x, (int)M, s->pos, s->q, s->qn);
    gswa_project_kv(be, m, x, (int)M, s->pos, s->k, s->v, s->kn);
    ae_attn_args aa = ae_attn_dense(T, 0, Hq, Hkv, hd, hd, d->window, gswa_attn_scale(d), m->sinks);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * T;
        aa.lse = ae_ptr_at(s->lse, o * Hq);
        be->attention(be, &aa, ae_ptr_at(s->a, o * qd), ae_ptr_at(s->q, o * qd),
                      ae_ptr_at(s->k, o * kvd), ae_ptr_at(s->v, o * kvd));
    }
    if (!ae_ptr_is_null(m->wg)) {
        ae_matmul(be, s->g, x, m->wg, (int)M, D, (int)gswa_gate_dim(d));
        be->gate_mul(be, s->ag, s->a, s->g, (int)M, Hq, hd, d->gate == AE_GATE_HEAD);
    }
    ae_gswa_acts_output(be, m, s, y);
    *acts = s;
    return AE_OK;
}

ae_status ae_gswa_forward_batch(const ae_backend *be, const ae_gswa *m, ae_ptr x, int B, int T,
                                ae_ptr y) {
    const ae_gswa_dims *d = &m->d;
    int Hq = d->Hq, Hkv = d->Hkv, hd = d->hd;
    if (B <= 0 || T <= 0) return ae_errorf(AE_ERR_ARG, "gateswa forward: B %d, T %d", B, T);
    size_t M = (size_t)B * T, qd = (size_t)Hq * hd, kvd = (size_t)Hkv * hd;
    ae_dtype at = be->act_dtype;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr pos = ae_scratch_positions(&s, (int)M, 0, T);  // (M) I32: t in each sequence
    ae_ptr q = ae_scratch_alloc(&s, M * qd, at);           // (M, Hq, hd); then the output
    ae_ptr k = ae_scratch_alloc(&s, M * kvd, at);          // (M, Hkv, hd)
    ae_ptr v = ae_scratch_alloc(&s, M * kvd, at);          // (M, Hkv, hd)
    ae_ptr a = ae_scratch_alloc(&s, M * qd, at);           // (M, Hq, hd) attention output
    ae_ptr g = ae_ptr_is_null(m->wg) ? ae_ptr_null() : ae_scratch_alloc(&s, M * gswa_gate_dim(d), at);
    if (s.failed) {
        ae_scratch_free(&s);
        return ae_errorf(AE_ERR_NOMEM, "gateswa forward: out of %s memory (%d x %d tokens)",
                         be->name, B, T);
    }
    gswa_project_qkv(be, m, x, (int)M, pos, q, k, v, g);
    ae_attn_args aa = ae_attn_dense(T, 0, Hq, Hkv, hd, hd, d->window, gswa_attn_scale(d), m->sinks);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * T;
        be->attention(be, &aa, ae_ptr_at(a, o * qd), ae_ptr_at(q, o * qd), ae_ptr_at(k, o * kvd),
                      ae_ptr_at(v, o * kvd));
    }
    gswa_gated_out(be, m, a, g, (int)M, y);
    ae_scratch_free(&s);
    return AE_OK;
}

void ae_gswa_acts_rebind(ae_gswa_acts *a, ae_ptr x) { a->x = x; }

void ae_gswa_acts_output(const ae_backend *be, const ae_gswa *m, const ae_gswa_acts *a, ae_ptr y) {
    const ae_gswa_dims *d = &m->d;
    ae_matmul(be, y, ae_ptr_is_null(m->wg) ? a->a : a->ag, m->wo, a->B * a->T, d->Hq * d->hd, d->D);
}

ae_status ae_gswa_backward(const ae_backend *be, const ae_gswa *m, const ae_gswa_acts *s,
                           ae_ptr dy, ae_ptr dx, ae_gswa *grad) {
    const ae_gswa_dims *d = &m->d;
    int Hq = d->Hq, Hkv = d->Hkv, hd = d->hd, D = d->D, B = s->B, T = s->T;
    AE_TRY(need_backward(be));
    const ae_gswa_dims *gdm = &grad->d;
    int gated = !ae_ptr_is_null(m->wg);
    if (gdm->D != D || gdm->Hq != Hq || gdm->Hkv != Hkv || gdm->hd != hd || !grad->be ||
        gated != !ae_ptr_is_null(grad->wg) || gdm->gate != d->gate ||
        ae_ptr_is_null(m->sinks) != ae_ptr_is_null(grad->sinks))
        return ae_errorf(AE_ERR_ARG, "gateswa backward: gradient buffers do not match the module");
    size_t M = (size_t)B * T, qd = (size_t)Hq * hd, kvd = (size_t)Hkv * hd, gd = gswa_gate_dim(d);
    ae_dtype at = be->act_dtype;
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    ae_ptr dag = ae_scratch_alloc(&sc, M * qd, at);   // (M, Hq, hd) grad of the o_proj input
    ae_ptr da = gated ? ae_scratch_alloc(&sc, M * qd, at) : dag; // (M, Hq, hd) grad of attention out
    ae_ptr dg = gated ? ae_scratch_alloc(&sc, M * gd, at) : ae_ptr_null(); // (M, gswa_gate_dim)
    ae_ptr dq = ae_scratch_alloc(&sc, M * qd, at);    // (M, Hq, hd)
    ae_ptr dk = ae_scratch_alloc(&sc, M * kvd, at);   // (M, Hkv, hd)
    ae_ptr dv = ae_scratch_alloc(&sc, M * kvd, at);   // (M, Hkv, hd)
    ae_ptr dqn = ae_scratch_alloc(&sc, M * qd, at);   // (M, Hq, hd)  grad of q before q_norm
    ae_ptr dkn = ae_scratch_alloc(&sc, M * kvd, at);
    if (sc.failed) {
        ae_scratch_free(&sc);
        return AE_ERR_NOMEM;
    }
    // every gradient that the ops below accumulate into starts at zero (attention_bwd sets dk
    // and dv: dkv_set)
    ae_ptr acc[] = {dag, dqn, dkn};
    size_t accn[] = {M * qd, M * qd, M * kvd};
    for (size_t i = 0; i < sizeof acc / sizeof *acc; i++) be->fill(be, acc[i], accn[i], 0.0f);
    if (!ae_ptr_is_null(dx)) be->fill(be, dx, M * D, 0.0f);

    // y = ag·Woᵀ
    ae_matmul_bwd(be, dag, grad->wo, dy, gated ? s->ag : s->a, m->wo, (int)M, (int)qd, D);
    if (gated) { // ag = a ⊙ σ(g), g = x·Wgᵀ
        be->gate_mul_bwd(be, da, dg, dag, s->a, s->g, (int)M, Hq, hd, d->gate == AE_GATE_HEAD);
        ae_matmul_bwd(be, dx, grad->wg, dg, s->x, m->wg, (int)M, D, (int)gd);
    }
    ae_attn_args aa = ae_attn_dense(T, 0, Hq, Hkv, hd, hd, d->window, gswa_attn_scale(d), m->sinks);
    aa.dkv_set = 1;
    for (int b = 0; b < B; b++) { // from the forward's saved output and log-sum-exp
        size_t o = (size_t)b * T;
        aa.lse = ae_ptr_at(s->lse, o * Hq);
        be->attention_bwd(be, &aa, ae_ptr_at(dq, o * qd), ae_ptr_at(dk, o * kvd),
                          ae_ptr_at(dv, o * kvd), grad->sinks, ae_ptr_at(da, o * qd),
                          ae_ptr_at(s->a, o * qd), ae_ptr_at(s->q, o * qd),
                          ae_ptr_at(s->k, o * kvd), ae_ptr_at(s->v, o * kvd));
    }
    be->rope_bwd(be, dq, s->pos, (int)M, Hq, hd, hd, d->rope_theta, AE_ROPE_HALF);
    be->rope_bwd(be, dk, s->pos, (int)M, Hkv, hd, hd, d->rope_theta, AE_ROPE_HALF);
    be->rmsnorm_bwd(be, dqn, grad->q_norm, dq, s->qn, m->q_norm, (int)(M * Hq), hd, d->eps);
    be->rmsnorm_bwd(be, dkn, grad->k_norm, dk, s->kn, m->k_norm, (int)(M * Hkv), hd, d->eps);
    ae_matmul_bwd(be, dx, grad->wq, dqn, s->x, m->wq, (int)M, D, (int)qd);
    ae_matmul_bwd(be, dx, grad->wk, dkn, s->x, m->wk, (int)M, D, (int)kvd);
    ae_matmul_bwd(be, dx, grad->wv, dv, s->x, m->wv, (int)M, D, (int)kvd);
    ae_scratch_free(&sc);
    return AE_OK;
}
