// Qwen3 decoder forward pass through the op interface:
//   h = embed(ids)
//   per layer: h += o_proj(attn(RoPE(q_norm(q)), RoPE(k_norm(k)), v))  on RMSNorm(h)
//              h += MLP or MoE(RMSNorm(h))
//   logits = lm_head(RMSNorm(h))
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/model.h"
#include "model/moe.h"

typedef struct {
    float *x;    // (T, D)      residual stream
    float *xn;   // (T, D)      normalised input of a sub-block
    float *tmp;  // (T, D)      output of a sub-block
    float *g;    // (T, I)
    float *u;    // (T, I)
} workspace;

static void ws_free(workspace *w) {
    float *ps[] = {w->x, w->xn, w->tmp, w->g, w->u};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) ae_free_aligned(ps[i]);
}

static ae_status ws_init(workspace *w, const ae_config *c, int T) {
    memset(w, 0, sizeof *w);
    size_t D = c->hidden_size, I = c->intermediate_size;
    if (c->arch == AE_ARCH_QWEN3_MOE && (size_t)c->moe_intermediate_size > I)
        I = c->moe_intermediate_size;
    w->x = ae_alloc_f32(T * D);
    w->xn = ae_alloc_f32(T * D);
    w->tmp = ae_alloc_f32(T * D);
    w->g = ae_alloc_f32(T * I);
    w->u = ae_alloc_f32(T * I);
    if (!w->x || !w->xn || !w->tmp || !w->g || !w->u) {
        ws_free(w);
        return AE_ERR_NOMEM;
    }
    return AE_OK;
}

// Attention sub-block: x += Attn(RMSNorm(x)); the module appends this step to its cache.
// MLA decodes (T == 1) in the absorbed form and prefills materialised.
static ae_status attention_block(const ae_model *m, const ae_layer *L, ae_kv_cache *cache, int l,
                                 workspace *w, int T) {
    const ae_backend *be = m->be;
    int D = m->cfg.hidden_size, pos0 = cache->n;
    be->rmsnorm(be, w->xn, w->x, L->input_norm, T, D, (float)m->cfg.rms_norm_eps);
    if (L->kind == AE_ATTN_MLA) {
        if (T == 1) AE_TRY(ae_mla_forward_absorbed(be, &L->mla, w->xn, T, pos0, cache->latent[l], w->tmp));
        else AE_TRY(ae_mla_forward_materialized(be, &L->mla, w->xn, T, pos0, cache->latent[l], w->tmp));
    } else {
        AE_TRY(ae_gswa_forward(be, &L->gqa, w->xn, T, pos0, &cache->kv[l], w->tmp));
    }
    be->add(be, w->x, w->tmp, (size_t)T * D);
    return AE_OK;
}

// Feed-forward sub-block: x += MLP(xn) (SwiGLU) or MoE(xn).
static ae_status mlp_block(const ae_model *m, const ae_layer *L, workspace *w, int T) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    int D = c->hidden_size;
    be->rmsnorm(be, w->xn, w->x, L->post_norm, T, D, (float)c->rms_norm_eps);
    if (L->is_moe) {
        AE_TRY(ae_moe_forward(m, L, w->tmp, w->xn, T));
    } else {
        int I = c->intermediate_size;
        be->matmul(be, w->g, w->xn, L->w_gate, T, D, I);
        be->matmul(be, w->u, w->xn, L->w_up, T, D, I);
        be->silu_mul(be, w->g, w->g, w->u, (size_t)T * I);
        be->matmul(be, w->tmp, w->g, L->w_down, T, I, D);
    }
    be->add(be, w->x, w->tmp, (size_t)T * D);
    return AE_OK;
}

ae_status ae_model_forward(const ae_model *m, ae_kv_cache *cache, const int32_t *ids, int T,
                           float *logits, int all_logits) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    int D = c->hidden_size, V = c->vocab_size;
    if (T <= 0) return ae_errorf(AE_ERR_ARG, "forward: no tokens to run");
    if (cache->n + T > cache->cap)
        return ae_errorf(AE_ERR_ARG, "forward: %d + %d tokens exceed the KV cache capacity %d",
                         cache->n, T, cache->cap);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= V)
            return ae_errorf(AE_ERR_ARG, "token id %d at position %d is out of range [0, %d)",
                             ids[t], t, V);
    workspace w;
    AE_TRY(ws_init(&w, c, T));
    for (int t = 0; t < T; t++)
        memcpy(w.x + (size_t)t * D, m->embed + (size_t)ids[t] * D, sizeof(float) * D);
    ae_status st = AE_OK;
    for (int l = 0; l < c->num_hidden_layers && st == AE_OK; l++) {
        st = attention_block(m, &m->layers[l], cache, l, &w, T);
        if (st == AE_OK) st = mlp_block(m, &m->layers[l], &w, T);
    }
    if (st == AE_OK) {
        cache->n += T;
        if (logits) {
            int first = all_logits ? 0 : T - 1, rows = T - first;
            float *xr = w.x + (size_t)first * D;
            be->rmsnorm(be, xr, xr, m->final_norm, rows, D, (float)c->rms_norm_eps);
            be->matmul(be, logits, xr, m->lm_head, rows, D, V);
        }
    }
    ws_free(&w);
    return st;
}
