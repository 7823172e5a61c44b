// Qwen3 decoder forward pass through the op interface:
//   h = embed(ids)
//   per layer: h += o_proj(attn(RoPE(q_norm(q)), RoPE(k_norm(k)), v))  on RMSNorm(h)
//              h += MLP or MoE(RMSNorm(h))
//   logits = lm_head(RMSNorm(h))
// The residual stream h is F32 on every backend; sub-block inputs and outputs are activations
// (act dtype). Each residual add is fused with the norm that follows it (add_rmsnorm).
// ae_model_decode_step runs one token the same way, recorded as backend graphs where the
// backend has them (cuda: CUDA graphs, cut between layers; see backend/ops.h, graph_*).
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/model.h"
#include "model/moe.h"

typedef struct {
    ae_scratch mem;
    ae_ptr x;    // (T, D) F32   residual stream
    ae_ptr xn;   // (T, D) act   normalised input of a sub-block
    ae_ptr tmp;  // (T, D) act   output of a sub-block
    ae_ptr g;    // (T, I) act
    ae_ptr u;    // (T, I) act
    ae_ptr ids;  // (T) I32
    ae_ptr pos;  // (T) I32 positions
} workspace;

static ae_status ws_init(workspace *w, const ae_model *m, const int32_t *ids, int T, int pos0) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    size_t D = c->hidden_size, I = c->intermediate_size;
    if (c->arch == AE_ARCH_QWEN3_MOE && (size_t)c->moe_intermediate_size > I)
        I = c->moe_intermediate_size;
    ae_scratch *s = &w->mem;
    ae_scratch_init(s, be);
    w->x = ae_scratch_alloc(s, T * D, AE_DT_F32);
    w->xn = ae_scratch_alloc(s, T * D, be->act_dtype);
    w->tmp = ae_scratch_alloc(s, T * D, be->act_dtype);
    w->g = ae_scratch_alloc(s, T * I, be->act_dtype);
    w->u = ae_scratch_alloc(s, T * I, be->act_dtype);
    w->ids = ae_scratch_alloc(s, (size_t)T, AE_DT_I32);
    w->pos = ae_scratch_positions(s, T, pos0, 0);
    if (!s->failed && be->upload(be, w->ids, ids, AE_DT_I32, (size_t)T) != AE_OK) s->failed = 1;
    if (s->failed) {
        ae_scratch_free(s);
        return AE_ERR_NOMEM;
    }
    return AE_OK;
}

double ae_forward_workspace_bytes(const ae_config *c, int64_t T, int act_bytes) {
    double a = act_bytes, D = c->hidden_size, I = c->intermediate_size, t = (double)T;
    if (c->arch == AE_ARCH_QWEN3_MOE && c->moe_intermediate_size > c->intermediate_size)
        I = c->moe_intermediate_size;
    double ws = t * D * (4 + 2 * a) + 2 * t * I * a; // x (F32), xn, tmp, g, u
    double attn = 0;                                  // the largest layer's attention scratch
    for (int l = 0; l < c->num_hidden_layers; l++) {
        double s;
        if (c->layer_attn[l] == AE_ATTN_MLA) {
            double H = c->num_attention_heads, dq = c->qk_nope_head_dim + c->qk_rope_head_dim;
            double dv = c->v_head_dim, dkv = c->qk_nope_head_dim + dv;
            s = t * a * (H * dq + c->q_lora_rank + H * dkv + H * dq + H * dv + H * dv);
        } else {
            double qd = (double)c->num_attention_heads * c->head_dim;
            double kvd = (double)c->num_key_value_heads * c->head_dim;
            s = t * a * 3 * qd; // q, a, gate
            if (c->layer_types[l] == AE_LAYER_SLIDING)
                s += 2 * a * kvd * (c->sliding_window + (t < 512 ? t : 512));
        }
        attn = s > attn ? s : attn;
    }
    double moe = c->arch == AE_ARCH_QWEN3_MOE
                     ? t * (c->num_experts * 4.0 + c->num_experts_per_tok *
                                                       (8.0 + 4.0 * (c->moe_intermediate_size + D)))
                     : 0;
    return ws + attn + moe + 4.0 * c->vocab_size;
}

// Attention sub-block output tmp = Attn(xn); the module appends this step to its cache.
// MLA decodes (T == 1) in the absorbed form and prefills materialised.
static ae_status attention(const ae_model *m, const ae_layer *L, ae_kv_cache *cache, int l,
                           workspace *w, int T) {
    const ae_backend *be = m->be;
    int pos0 = cache->n;
    if (L->kind == AE_ATTN_MLA) {
        if (T == 1)
            return ae_mla_forward_absorbed(be, &L->mla, w->xn, T, pos0, w->pos, cache->latent[l], w->tmp);
        return ae_mla_forward_materialized(be, &L->mla, w->xn, T, pos0, w->pos, cache->latent[l], w->tmp);
    }
    return ae_gswa_forward(be, &L->gqa, w->xn, T, pos0, w->pos, &cache->kv[l], w->tmp);
}

// out = FFN_L(x), or out += FFN_L(x) when add (out the F32 residual stream: a dense layer's down
// projection adds in its epilogue, a MoE layer's output goes through y and an add); y is the MoE
// output (out itself unless add).
static ae_status ffn_forward(const ae_model *m, const ae_layer *L, ae_ptr out, ae_ptr x, int T,
                             ae_ptr g, ae_ptr u, ae_ptr y, int add) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    int D = c->hidden_size, I = c->intermediate_size;
    if (L->is_moe) {
        AE_TRY(ae_moe_forward(m, L, y, x, T));
        if (add) be->add(be, out, out, y, (size_t)T * D);
        return AE_OK;
    }
    // g = silu(x·Wgateᵀ) ⊙ x·Wupᵀ: one GEMV launch with the SwiGLU in its epilogue at decode
    ae_gate_up_silu(be, g, g, u, x, L->w_gate, L->w_up, T, D, I);
    if (add) ae_matmul_add(be, out, g, L->w_down, T, I, D);
    else ae_matmul(be, out, g, L->w_down, T, I, D);
    return AE_OK;
}

ae_status ae_layer_ffn_forward(const ae_model *m, const ae_layer *L, ae_ptr y, ae_ptr x, int T,
                               ae_ptr g, ae_ptr u) {
    return ffn_forward(m, L, y, x, T, g, u, y, 0);
}

ae_status ae_layer_ffn_forward_add(const ae_model *m, const ae_layer *L, ae_ptr h, ae_ptr x,
                                   int T, ae_ptr g, ae_ptr u, ae_ptr y) {
    return ffn_forward(m, L, h, x, T, g, u, y, 1);
}

// Feed-forward sub-block output tmp = MLP(xn) (SwiGLU) or MoE(xn).
static ae_status mlp(const ae_model *m, const ae_layer *L, workspace *w, int T) {
    return ae_layer_ffn_forward(m, L, w->tmp, w->xn, T, w->g, w->u);
}

static ae_status check_tokens(const ae_model *m, const ae_kv_cache *cache, const int32_t *ids,
                              int T) {
    int V = m->cfg.vocab_size;
    if (T <= 0) return ae_errorf(AE_ERR_ARG, "forward: no tokens to run");
    if (cache->n + T > cache->cap)
        return ae_errorf(AE_ERR_ARG, "forward: %d + %d tokens exceed the KV cache capacity %d",
                         cache->n, T, cache->cap);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= V)
            return ae_errorf(AE_ERR_ARG, "token id %d at position %d is out of range [0, %d)",
                             ids[t], t, V);
    return AE_OK;
}

// The whole model on the workspace's T tokens (ids and positions already uploaded): embedding,
// layers, final norm, head; appends them to the cache (cache->n += T). No host transfer, so it
// can be recorded as a graph: g is the recording in progress (cut points between layers) or NULL.
static ae_status run_model(const ae_model *m, ae_kv_cache *cache, workspace *w, int T,
                           ae_ptr logits, int all_logits, ae_graph *g) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    int D = c->hidden_size, V = c->vocab_size, nl = c->num_hidden_layers;
    float eps = (float)c->rms_norm_eps;
    be->embed(be, w->x, m->embed, w->ids, T, D);
    if (nl > 0) be->rmsnorm(be, w->xn, w->x, m->layers[0].input_norm, T, D, D, eps);
    else be->rmsnorm(be, w->xn, w->x, m->final_norm, T, D, D, eps);
    ae_status st = AE_OK;
    for (int l = 0; l < nl && st == AE_OK; l++) {
        const ae_layer *L = &m->layers[l];
        st = attention(m, L, cache, l, w, T);
        if (st != AE_OK) break;
        be->add_rmsnorm(be, w->x, w->x, w->tmp, w->xn, L->post_norm, T, D, eps);
        st = mlp(m, L, w, T);
        if (st != AE_OK) break;
        ae_ptr next = l + 1 < nl ? m->layers[l + 1].input_norm : m->final_norm;
        be->add_rmsnorm(be, w->x, w->x, w->tmp, w->xn, next, T, D, eps);
        if (g) be->graph_cut(be, g);
    }
    if (st == AE_OK) {
        cache->n += T;
        if (!ae_ptr_is_null(logits)) {
            int first = all_logits ? 0 : T - 1;
            ae_matmul(be, logits, ae_ptr_at(w->xn, (size_t)first * D), m->lm_head, T - first, D, V);
        }
    }
    return st;
}

ae_status ae_model_forward(const ae_model *m, ae_kv_cache *cache, const int32_t *ids, int T,
                           ae_ptr logits, int all_logits) {
    AE_TRY(check_tokens(m, cache, ids, T));
    workspace w;
    AE_TRY(ws_init(&w, m, ids, T, cache->n));
    ae_status st = run_model(m, cache, &w, T, logits, all_logits, NULL);
    ae_scratch_free(&w.mem);
    return st;
}

// The cache's graph handle when its decode steps are recorded (created on first use), or NULL.
static ae_graph *decode_graph(const ae_model *m, ae_kv_cache *cache) {
    const ae_backend *be = m->be;
    if (!cache->graphs || be != cache->be || !be->graph_new || !be->graph_begin) return NULL;
    if (!cache->graph) cache->graph = be->graph_new(be);
    return cache->graph;
}

ae_status ae_model_decode_step(const ae_model *m, ae_kv_cache *cache, int32_t id, ae_ptr logits) {
    const ae_backend *be = m->be;
    AE_TRY(check_tokens(m, cache, &id, 1));
    workspace w; // uploaded before the recording: it holds no host transfer
    AE_TRY(ws_init(&w, m, &id, 1, cache->n));
    ae_graph *g = decode_graph(m, cache);
    int n0 = cache->n, r = AE_GRAPH_FAILED;
    ae_status st = AE_OK;
    // recorded (once more when the recording's workspace had to grow), else op by op; a step
    // writes only its own position's cache rows, so running it again after a failed recording
    // whose first segments ran gives the same bytes
    for (int attempt = 0; attempt < 2 && g && be->graph_begin(be, g); attempt++) {
        st = run_model(m, cache, &w, 1, logits, 0, g);
        r = be->graph_end(be, g, st == AE_OK);
        if (r == AE_GRAPH_RAN) break;
        cache->n = n0;
        if (r != AE_GRAPH_RETRY) break;
    }
    if (r != AE_GRAPH_RAN) st = run_model(m, cache, &w, 1, logits, 0, NULL);
    ae_scratch_free(&w.mem);
    return st;
}
