// Whole-model training forward/backward, the parameter list and gradient models.
//
// Parameter list (ae_model_params), in HF order: model.embed_tokens.weight; per layer
// input_layernorm.weight, self_attn.* (the module's own names, ae_gswa_params / ae_mla_params),
// post_attention_layernorm.weight, then mlp.gate_proj/up_proj/down_proj.weight (dense) or
// mlp.gate.weight (router, (E, D)) and the experts PACKED one tensor per projection:
//   model.layers.N.mlp.experts.gate_proj   (E, Im, D)
//   model.layers.N.mlp.experts.up_proj     (E, Im, D)
//   model.layers.N.mlp.experts.down_proj   (E, D, Im)
// (not HF file names — the files hold one "...experts.<e>.<proj>.weight" per expert; these
// names are for the optimizer/checkpoints only); model.norm.weight; lm_head.weight only when
// untied (a tied head IS the embedding: listed once, its gradient is the embedding's).
//
// Weight decay: every 2-D weight matrix decays, embeddings and lm_head and the router included;
// 1-D tensors (RMSNorm weights, attention sinks) never do. Attention parameters take the
// module's own flag (GateSWA's g_proj, the output gate, does not decay).
//
// Tied embeddings: the gradient model is tied as well (g->lm_head == g->embed). The backward
// scatter-adds the input-embedding gradient into g->embed; the head's gradient comes from the
// loss (ae_kd_loss's dWs) and the caller accumulates it into g->lm_head, i.e. the same tensor.
//
// Memory (per token; a = bytes of the backend's activation dtype: cpu 4, cuda 2). The forward
// keeps only the residual stream entering each layer and the final normalised hidden:
//   4·D·(L + 1) + a·D               (AE_KEEP_NONE: a·D, the final hidden alone; AE_KEEP_ACT:
//                                    a·D·(L + 2), the streams rounded to act)
// plus, on host-memory backends (cpu), the routing of each MoE layer (K ints + E floats: tests
// read it). The backward recomputes one layer at a time from h_l and holds, besides the kept
// streams,
//   4·D·2  ∂loss/∂h and h_l + attention output (F32);   a·D·4  the normed inputs, sub-block
//   output / its gradient in act, the normed input's gradient;   a·I·6  dense MLP (gate, up,
//   silu(gate)⊙up and three backward buffers); MoE layers instead, per slot (K per token):
//   (a + 4)·D + 3·a·Im kept by the forward (moe_train.h) + a·D + 2·a·Im in the backward;
//   + the attention module's own activations of that one layer (attn_gateswa.c, mla_train.c).
// e.g. Qwen3-30B-A3B on cuda (D 2048, Im 768, K 8): 8·(8·2048 + 10·768) B = 188 KiB per token
// of MoE working set for the one layer in its backward (752 MiB at 4K tokens).
// e.g. Qwen3-8B on cuda (D 4096, I 12288, L 36): 37·16 KiB + 8 KiB kept = 600 KiB per token,
// ~217 KiB per token of layer working set besides the attention module's.
#include "train/model_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/layer_attn.h"
#include "model/moe.h"
#include "model/params.h"
#include "train/moe_train.h"

// Routing statistics of one MoE layer (host; kept on host-memory backends only, NULL for dense
// layers).
typedef struct {
    int *top;     // (M, K)
    float *probs; // (M, E)
} layer_routing;

struct ae_train_acts {
    int B, T, L, D;
    ae_scratch mem;         // ids, final
    ae_ptr ids;             // (M) I32
    ae_ptr *hidden;         // (L+1) × (M, D) F32, null entries when not kept
    ae_ptr final;           // (M, D) act
    layer_routing *routing; // (L)
    ae_layer_attn_acts *attn; // (L) each layer's attention-module activations (AE_KEEP_ATTN),
                              // freed by the backward as it passes the layer; else NULL
};

// ---------------------------------------------------------------- parameter lists

typedef struct {
    ae_named_param *out; // entries written here when non-NULL
    int zero;            // 1: set each tensor to 0 (ae_model_zero)
} sink;

// Appends one entry; returns n + 1.
static int push(const sink *sk, const ae_backend *be, int n, const char *name, ae_ptr t,
                int64_t numel, int decay, int is_attention) {
    if (sk->zero && !ae_ptr_is_null(t)) be->fill(be, t, (size_t)numel, 0.0f);
    if (sk->out) {
        ae_named_param *p = &sk->out[n];
        size_t len = strlen(name); // names are < 64 chars; cut defensively
        if (len >= sizeof p->name) len = sizeof p->name - 1;
        memcpy(p->name, name, len);
        p->name[len] = '\0';
        p->t = t;
        p->data = be->host_memory && t.dtype == AE_DT_F32 ? (float *)t.data : NULL;
        p->numel = numel;
        p->decay = decay;
        p->is_attention = is_attention;
    }
    return n + 1;
}

static ae_param_list attn_params(ae_layer *L) {
    return L->kind == AE_ATTN_MLA ? ae_mla_params(&L->mla) : ae_gswa_params(&L->gqa);
}

// Fills out (when non-NULL) and returns the count.
static int list_params(ae_model *m, int attention_only, ae_named_param *out, int zero) {
    const ae_config *c = &m->cfg;
    int64_t V = c->vocab_size, D = c->hidden_size, I = c->intermediate_size;
    int64_t E = c->num_experts, Im = c->moe_intermediate_size;
    sink sk = {out, zero};
    const ae_backend *be = m->be;
    int n = 0;
    char name[128];
    if (!attention_only) n = push(&sk, be, n, "model.embed_tokens.weight", m->embed, V * D, 1, 0);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ae_layer *L = &m->layers[l];
#define LNAME(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
        if (!attention_only) n = push(&sk, be, n, LNAME("input_layernorm.weight"), L->input_norm, D, 0, 0);
        ae_param_list ap = attn_params(L);
        for (int i = 0; i < ap.n; i++) {
            const ae_param *p = &ap.p[i];
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", l, p->name);
            int64_t numel = p->shape[0] * (p->ndim == 2 ? p->shape[1] : 1);
            n = push(&sk, be, n, name, p->data, numel, p->ndim == 2 && p->decay, 1);
        }
        if (attention_only) continue;
        n = push(&sk, be, n, LNAME("post_attention_layernorm.weight"), L->post_norm, D, 0, 0);
        if (!L->is_moe) {
            n = push(&sk, be, n, LNAME("mlp.gate_proj.weight"), L->w_gate, I * D, 1, 0);
            n = push(&sk, be, n, LNAME("mlp.up_proj.weight"), L->w_up, I * D, 1, 0);
            n = push(&sk, be, n, LNAME("mlp.down_proj.weight"), L->w_down, D * I, 1, 0);
        } else {
            n = push(&sk, be, n, LNAME("mlp.gate.weight"), L->router, E * D, 1, 0);
            n = push(&sk, be, n, LNAME("mlp.experts.gate_proj"), L->e_gate, E * Im * D, 1, 0);
            n = push(&sk, be, n, LNAME("mlp.experts.up_proj"), L->e_up, E * Im * D, 1, 0);
            n = push(&sk, be, n, LNAME("mlp.experts.down_proj"), L->e_down, E * D * Im, 1, 0);
        }
#undef LNAME
    }
    if (!attention_only) {
        n = push(&sk, be, n, "model.norm.weight", m->final_norm, D, 0, 0);
        if (!m->cfg.tie_word_embeddings)
            n = push(&sk, be, n, "lm_head.weight", m->lm_head, V * D, 1, 0);
    }
    return n;
}

ae_status ae_model_params(ae_model *m, int attention_only, ae_named_param **out, int *n) {
    *out = NULL;
    *n = 0;
    int count = list_params(m, attention_only, NULL, 0);
    ae_named_param *p = ae_calloc((size_t)(count > 0 ? count : 1), sizeof *p);
    if (!p) return AE_ERR_NOMEM;
    list_params(m, attention_only, p, 0);
    *out = p;
    *n = count;
    return AE_OK;
}

static ae_status config_copy(ae_config *dst, const ae_config *src) {
    *dst = *src;
    dst->mlp_only_layers = NULL;
    dst->layer_types = NULL;
    dst->layer_attn = NULL;
    size_t L = (size_t)src->num_hidden_layers;
    if (src->n_mlp_only_layers > 0 && src->mlp_only_layers) {
        dst->mlp_only_layers = ae_malloc(sizeof(int) * (size_t)src->n_mlp_only_layers);
        if (!dst->mlp_only_layers) return AE_ERR_NOMEM;
        memcpy(dst->mlp_only_layers, src->mlp_only_layers, sizeof(int) * (size_t)src->n_mlp_only_layers);
    }
    if (src->layer_types) {
        if (!(dst->layer_types = ae_malloc(sizeof *dst->layer_types * L))) return AE_ERR_NOMEM;
        memcpy(dst->layer_types, src->layer_types, sizeof *dst->layer_types * L);
    }
    if (src->layer_attn) {
        if (!(dst->layer_attn = ae_malloc(sizeof *dst->layer_attn * L))) return AE_ERR_NOMEM;
        memcpy(dst->layer_attn, src->layer_attn, sizeof *dst->layer_attn * L);
    }
    return AE_OK;
}

// The dtype of the gradient of param: F32, or with bf16 the param's own BF16 (an F32 param, e.g.
// the sinks, keeps an F32 gradient: the ops that write it take F32 there).
static ae_dtype grad_dtype(ae_ptr param, int bf16) {
    return bf16 && param.dtype == AE_DT_BF16 ? AE_DT_BF16 : AE_DT_F32;
}

// A zeroed tensor of n values on backend be: the gradient of param (see grad_dtype).
static ae_status zeros_into(const ae_backend *be, ae_ptr *dst, size_t n, ae_ptr param, int bf16) {
    *dst = be->alloc(be, n, grad_dtype(param, bf16));
    if (ae_ptr_is_null(*dst)) return AE_ERR_NOMEM;
    be->fill(be, *dst, n, 0.0f);
    return AE_OK;
}

// The module's parameter list of G (its tensors still null) and of the module it mirrors.
static void attn_lists(const ae_backend *be, const ae_layer *L, ae_layer *G, ae_layer *Lc,
                       ae_param_list *gl, ae_param_list *ml) {
    *Lc = *L; // a copy: the lists hold slot addresses, read here and never written
    if (L->kind == AE_ATTN_MLA) {
        G->mla.d = L->mla.d;
        G->mla.be = be;
        *gl = ae_mla_params(&G->mla);
        *ml = ae_mla_params(&Lc->mla);
    } else {
        G->gqa.d = L->gqa.d;
        G->gqa.be = be;
        *gl = ae_gswa_params(&G->gqa);
        *ml = ae_gswa_params(&Lc->gqa);
    }
}

// The gradient of an attention module: the module's parameter list allocated zeroed, F32 (sinks
// too, as ae_params_alloc makes them), or with bf16 each tensor as grad_dtype picks.
static ae_status attn_grads(const ae_backend *be, const ae_layer *L, ae_layer *G, int bf16) {
    ae_param_list l, ml;
    ae_layer Lc;
    attn_lists(be, L, G, &Lc, &l, &ml);
    ae_status st = AE_OK;
    if (!bf16) {
        st = ae_params_alloc(be, AE_DT_F32, &l);
    } else {
        for (int i = 0; i < l.n && st == AE_OK; i++) {
            ae_param *p = &l.p[i];
            st = zeros_into(be, p->slot, (size_t)ae_param_numel(p), *ml.p[i].slot, 1);
            p->data = *p->slot;
            if (st != AE_OK) {
                l.n = i; // the tensors made so far
                ae_params_free(be, &l);
            }
        }
    }
    if (st != AE_OK) G->mla.be = G->gqa.be = NULL; // nothing left allocated
    return st;
}

static ae_status grads_fill(const ae_model *m, int attention_only, int bf16, ae_model *g) {
    const ae_config *c = &m->cfg;
    size_t V = c->vocab_size, D = c->hidden_size, I = c->intermediate_size;
    size_t E = c->num_experts, Im = c->moe_intermediate_size;
    const ae_backend *be = m->be;
    AE_TRY(config_copy(&g->cfg, c));
    g->layers = ae_calloc((size_t)c->num_hidden_layers, sizeof(ae_layer));
    if (!g->layers) return AE_ERR_NOMEM;
    if (!attention_only) {
        AE_TRY(zeros_into(be, &g->embed, V * D, m->embed, bf16));
        if (c->tie_word_embeddings) g->lm_head = g->embed;
        else AE_TRY(zeros_into(be, &g->lm_head, V * D, m->lm_head, bf16));
        AE_TRY(zeros_into(be, &g->final_norm, D, m->final_norm, bf16));
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ae_layer *L = &m->layers[l];
        ae_layer *G = &g->layers[l];
        G->kind = L->kind;
        G->is_moe = L->is_moe;
        AE_TRY(attn_grads(be, L, G, bf16));
        if (attention_only) continue;
        AE_TRY(zeros_into(be, &G->input_norm, D, L->input_norm, bf16));
        AE_TRY(zeros_into(be, &G->post_norm, D, L->post_norm, bf16));
        if (!L->is_moe) {
            AE_TRY(zeros_into(be, &G->w_gate, I * D, L->w_gate, bf16));
            AE_TRY(zeros_into(be, &G->w_up, I * D, L->w_up, bf16));
            AE_TRY(zeros_into(be, &G->w_down, D * I, L->w_down, bf16));
        } else {
            AE_TRY(zeros_into(be, &G->router, E * D, L->router, bf16));
            AE_TRY(zeros_into(be, &G->e_gate, E * Im * D, L->e_gate, bf16));
            AE_TRY(zeros_into(be, &G->e_up, E * Im * D, L->e_up, bf16));
            AE_TRY(zeros_into(be, &G->e_down, E * D * Im, L->e_down, bf16));
        }
    }
    return AE_OK;
}

// Bytes of the gradients of m's parameters (attention_only: of its attention modules): 4 a
// value, or with bf16 2 for a BF16 parameter.
static double grads_bytes(const ae_model *m, int attention_only, int bf16) {
    ae_named_param *p;
    int n;
    double bytes = 0;
    if (ae_model_params((ae_model *)m, attention_only, &p, &n) != AE_OK) return 0;
    for (int i = 0; i < n; i++)
        bytes += (double)ae_dtype_size(grad_dtype(p[i].t, bf16)) * (double)p[i].numel;
    free(p);
    return bytes;
}

ae_status ae_model_grads_alloc(const ae_model *m, int attention_only, int bf16, ae_model **out) {
    *out = NULL;
    ae_model *g = ae_calloc(1, sizeof *g);
    if (!g) return AE_ERR_NOMEM;
    g->be = m->be;
    g->n_params = m->n_params;
    g->src_dtype = m->src_dtype;
    ae_status st = grads_fill(m, attention_only, bf16, g);
    if (st != AE_OK) {
        ae_model_free(g);
        if (st != AE_ERR_NOMEM) return st;
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the "
                         "gradients of %s (%s, %.2f GiB)", m->be->name,
                         attention_only ? "the attention modules" : "every parameter",
                         bf16 ? "BF16" : "F32", grads_bytes(m, attention_only, bf16) / 1073741824.0);
    }
    *out = g;
    return AE_OK;
}

ae_status ae_model_grads_like(const ae_model *m, int attention_only, ae_model **out) {
    return ae_model_grads_alloc(m, attention_only, 0, out);
}

ae_status ae_model_zeros_like(const ae_model *m, ae_model **out) { return ae_model_grads_like(m, 0, out); }

void ae_model_zero(ae_model *g) {
    list_params(g, 0, NULL, 1);
}

// ---------------------------------------------------------------- activations

ae_ptr ae_train_acts_hidden(const ae_train_acts *a, int l) {
    return l >= 0 && l <= a->L ? a->hidden[l] : ae_ptr_null();
}
ae_ptr ae_train_acts_final(const ae_train_acts *a) { return a->final; }
ae_ptr ae_train_acts_ids(const ae_train_acts *a) { return a->ids; }
const int *ae_train_acts_topk(const ae_train_acts *a, int l) {
    return l >= 0 && l < a->L ? a->routing[l].top : NULL;
}
const float *ae_train_acts_router_probs(const ae_train_acts *a, int l) {
    return l >= 0 && l < a->L ? a->routing[l].probs : NULL;
}

void ae_train_acts_free(ae_train_acts *a) {
    if (!a) return;
    const ae_backend *be = a->mem.be;
    if (a->hidden)
        for (int l = 0; l <= a->L; l++) be->free(be, a->hidden[l]);
    free(a->hidden);
    if (a->routing)
        for (int l = 0; l < a->L; l++) {
            free(a->routing[l].top);
            ae_free_aligned(a->routing[l].probs);
        }
    free(a->routing);
    if (a->attn)
        for (int l = 0; l < a->L; l++) ae_layer_attn_acts_free(&a->attn[l]);
    free(a->attn);
    ae_scratch_free(&a->mem);
    free(a);
}

static int has_dense(const ae_model *m) {
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (!m->layers[l].is_moe) return 1;
    return 0;
}

// The buffers of one layer's pass (in the forward, or recomputed in the backward), reused by
// every layer of the pass.
typedef struct {
    ae_scratch mem;
    ae_ptr xn;        // (M, D) act  RMSNorm(h_l; input_layernorm): the attention module's input
    ae_ptr y;         // (M, D) act  the attention output, then the FFN output; in the backward
                      //             also ∂loss/∂h in act (the dtype the GEMMs take)
    ae_ptr hmid;      // (M, D) F32  h_l + attention output
    ae_ptr z;         // (M, D) act  RMSNorm(hmid; post_attention_layernorm): the FFN input
    ae_ptr g, u, act; // (M, I) act  dense MLP: gate, up, silu(gate) ⊙ up
    ae_ptr dx;        // (M, D) act  backward: gradient of a sub-block's normalised input
    ae_ptr dh;        // (M, D) F32  backward: ∂loss/∂ the residual stream at the current point
    ae_ptr scratch;   // 3·(M, I) act  backward of the dense MLP
} layer_bufs;

static ae_status bufs_init(layer_bufs *w, const ae_model *m, int M, int backward) {
    const ae_backend *be = m->be;
    size_t md = (size_t)M * m->cfg.hidden_size, mi = (size_t)M * m->cfg.intermediate_size;
    ae_dtype at = be->act_dtype;
    ae_scratch *s = &w->mem;
    memset(w, 0, sizeof *w);
    ae_scratch_init(s, be);
    w->xn = ae_scratch_alloc(s, md, at);
    w->y = ae_scratch_alloc(s, md, at);
    w->hmid = ae_scratch_alloc(s, md, AE_DT_F32);
    w->z = ae_scratch_alloc(s, md, at);
    if (has_dense(m)) {
        w->g = ae_scratch_alloc(s, mi, at);
        w->u = ae_scratch_alloc(s, mi, at);
        w->act = ae_scratch_alloc(s, mi, at);
        if (backward) w->scratch = ae_scratch_alloc(s, 3 * mi, at);
    }
    if (backward) {
        w->dx = ae_scratch_alloc(s, md, at);
        w->dh = ae_scratch_alloc(s, md, AE_DT_F32);
    }
    if (!s->failed) return AE_OK;
    ae_scratch_free(s);
    return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the layer buffers of a training %s of %d "
                     "tokens", be->name, backward ? "backward" : "forward", M);
}

// The attention half of layer l on the stream h (M, D) F32: w->xn = RMSNorm(h), w->y = its
// attention module's output; the module's activations go to attn when non-null (they borrow
// w->xn), else they are freed at once. frozen: no backward will run through this forward (a
// teacher's): the module's forward-only form (ae_layer_attn_forward_batch), attn null. Else the
// training forward, the one a backward's recompute runs (the same bits).
static ae_status layer_attention(const ae_model *m, int l, ae_ptr h, int B, int T, layer_bufs *w,
                                 ae_layer_attn_acts *attn, int frozen) {
    const ae_backend *be = m->be;
    const ae_layer *L = &m->layers[l];
    int D = m->cfg.hidden_size;
    be->rmsnorm(be, w->xn, h, L->input_norm, B * T, D, D, (float)m->cfg.rms_norm_eps);
    if (frozen) return ae_layer_attn_forward_batch(be, L, w->xn, B, T, w->y);
    ae_layer_attn_acts own_attn;
    ae_status st = ae_layer_attn_train_forward(be, L, w->xn, B, T, w->y, attn ? attn : &own_attn);
    if (!attn) ae_layer_attn_acts_free(&own_attn);
    return st;
}

// The rest of layer l after its attention output w->y: fills w's hmid, z (and g, u, act); a
// MoE layer runs its training forward into moe when non-null, else the inference op (moe_ffn:
// grouped, no host synchronisation); hout = h_{l+1} (M, D) F32 unless null. A dense layer's
// forward (hout given) writes h_mid into hout instead of hmid and its down projection adds onto
// it (ae_matmul_add): no pass for the residual. hout null is the backward's recompute: a dense
// FFN then stops at g and u (and act when mlp_act; y is left as it was) — its output is never
// read there, and the down projection is a third of the FFN's GEMM work.
static ae_status layer_ffn(const ae_model *m, int l, ae_ptr h, int M, layer_bufs *w, ae_moe_acts *moe,
                           ae_ptr hout, int mlp_act) {
    const ae_backend *be = m->be;
    const ae_layer *L = &m->layers[l];
    int D = m->cfg.hidden_size;
    size_t md = (size_t)M * D;
    float eps = (float)m->cfg.rms_norm_eps;
    ae_ptr none = ae_ptr_null();
    if (!L->is_moe && !ae_ptr_is_null(hout)) { // h_mid straight into hout, the MLP added onto it
        be->add_rmsnorm(be, hout, h, w->y, w->z, L->post_norm, M, D, eps);
        ae_mlp_train_forward(m, L, w->z, M, none, w->g, w->u, w->act);
        ae_matmul_add(be, hout, w->act, L->w_down, M, m->cfg.intermediate_size, D);
        return AE_OK;
    }
    be->add_rmsnorm(be, w->hmid, h, w->y, w->z, L->post_norm, M, D, eps);
    if (L->is_moe) {
        ae_status st = moe ? ae_moe_train_forward(m, L, w->z, M, w->y, moe) : ae_moe_forward(m, L, w->y, w->z, M);
        if (st != AE_OK) return st;
    } else {
        ae_mlp_train_forward(m, L, w->z, M, none, w->g, w->u, mlp_act ? w->act : none);
    }
    if (!ae_ptr_is_null(hout)) be->add(be, hout, w->hmid, w->y, md);
    return AE_OK;
}

// Layer l on the stream h: layer_attention, then layer_ffn.
static ae_status layer_forward(const ae_model *m, int l, ae_ptr h, int B, int T, layer_bufs *w,
                               ae_layer_attn_acts *attn, int frozen, ae_moe_acts *moe,
                               ae_ptr hout, int mlp_act) {
    AE_TRY(layer_attention(m, l, h, B, T, w, attn, frozen));
    return layer_ffn(m, l, h, B * T, w, moe, hout, mlp_act);
}

static ae_status check_forward_args(const ae_model *m, const int32_t *ids, int B, int T) {
    int V = m->cfg.vocab_size;
    if (B <= 0 || T <= 0 || (int64_t)B * T > INT32_MAX)
        return ae_errorf(AE_ERR_ARG, "train forward: B %d, T %d", B, T);
    for (int i = 0; i < B * T; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return ae_errorf(AE_ERR_ARG, "train forward: token id %d at index %d is out of range "
                             "[0, %d)", ids[i], i, V);
    return AE_OK;
}

// The acts of a forward: ids uploaded, the final hidden and n_stream residual buffers of dtype
// dt allocated.
static ae_status acts_alloc(const ae_model *m, const int32_t *ids, int B, int T, int n_stream,
                            ae_dtype dt, ae_train_acts **out) {
    const ae_backend *be = m->be;
    int L = m->cfg.num_hidden_layers, M = B * T;
    size_t md = (size_t)M * m->cfg.hidden_size;
    ae_train_acts *a = ae_calloc(1, sizeof *a);
    if (!a) return AE_ERR_NOMEM;
    *out = a;
    ae_scratch_init(&a->mem, be);
    a->B = B;
    a->T = T;
    a->L = L;
    a->D = m->cfg.hidden_size;
    a->hidden = ae_calloc((size_t)L + 1, sizeof *a->hidden);
    a->routing = ae_calloc((size_t)(L > 0 ? L : 1), sizeof *a->routing);
    if (!a->hidden || !a->routing) return AE_ERR_NOMEM;
    a->ids = ae_scratch_alloc(&a->mem, (size_t)M, AE_DT_I32);
    a->final = ae_scratch_alloc(&a->mem, md, be->act_dtype);
    int failed = a->mem.failed;
    for (int i = 0; i < n_stream && !failed; i++) {
        a->hidden[i] = be->alloc(be, md, dt);
        failed = ae_ptr_is_null(a->hidden[i]);
    }
    if (failed)
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the residual stream of a training "
                         "forward of %d tokens (%d x %.1f MiB)", be->name, M, n_stream,
                         (double)ae_dtype_size(dt) * (double)md / 1048576.0);
    return be->upload(be, a->ids, ids, AE_DT_I32, (size_t)M);
}

// Copies a MoE layer's routing out of its activations into the kept statistics (host-memory
// backends: a plain copy).
static ae_status keep_routing(const ae_backend *be, layer_routing *r, const ae_moe_acts *moe) {
    size_t mk = (size_t)moe->M * moe->K, me = (size_t)moe->M * moe->E;
    r->top = ae_malloc(sizeof(int) * mk);
    r->probs = ae_alloc_f32(me);
    if (!r->top || !r->probs) return AE_ERR_NOMEM;
    AE_TRY(be->download(be, r->top, AE_DT_I32, moe->idx, mk));
    return be->download(be, r->probs, AE_DT_F32, moe->probs, me);
}

ae_status ae_model_train_forward(const ae_model *m, const int32_t *ids, int B, int T,
                                 int keep_hidden, ae_train_acts **acts) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    *acts = NULL;
    AE_TRY(check_forward_args(m, ids, B, T));
    int D = c->hidden_size, L = c->num_hidden_layers, M = B * T;
    ae_train_acts *a = NULL;
    layer_bufs w;
    const int stream = keep_hidden & ~AE_KEEP_ATTN, keep_attn = (keep_hidden & AE_KEEP_ATTN) != 0;
    const int keep_f32 = stream == AE_KEEP_F32, keep_act = stream == AE_KEEP_ACT;
    if (keep_attn && !keep_f32)
        return ae_errorf(AE_ERR_ARG, "train forward: AE_KEEP_ATTN needs AE_KEEP_F32 (the backward)");
    ae_ptr work[2] = {ae_ptr_null(), ae_ptr_null()}; // (M, D) F32 the stream, unless kept in F32
    ae_status st = acts_alloc(m, ids, B, T, stream ? L + 1 : 0,
                              keep_act ? be->act_dtype : AE_DT_F32, &a);
    if (st == AE_OK && keep_attn && !(a->attn = ae_calloc((size_t)L, sizeof *a->attn)))
        st = AE_ERR_NOMEM;
    for (int i = 0; i < 2 && st == AE_OK && !keep_f32; i++)
        if (ae_ptr_is_null(work[i] = be->alloc(be, (size_t)M * D, AE_DT_F32)))
            st = ae_errorf(AE_ERR_NOMEM, "out of %s memory for the residual stream of a training "
                           "forward of %d tokens (2 x %.1f MiB)", be->name, M,
                           4.0 * (double)M * D / 1048576.0);
    if (st == AE_OK) st = bufs_init(&w, m, M, 0);
    if (st != AE_OK) {
        for (int i = 0; i < 2; i++) be->free(be, work[i]);
        ae_train_acts_free(a);
        return st;
    }
    // the stream entering layer l: hidden[l] when kept in F32, else two buffers in turn (copied
    // into hidden[l] in the activation dtype when kept so)
#define STREAM(l) (keep_f32 ? a->hidden[(l)] : work[(l) % 2])
    be->embed(be, STREAM(0), m->embed, a->ids, M, D);
    if (keep_act) ae_copy(be, a->hidden[0], STREAM(0), (size_t)M * D);
    for (int l = 0; l < L && st == AE_OK; l++) {
        ae_moe_acts moe;
        int keep = m->layers[l].is_moe && be->host_memory; // the routing statistics (tests)
        memset(&moe, 0, sizeof moe);
        st = layer_forward(m, l, STREAM(l), B, T, &w, a->attn ? &a->attn[l] : NULL, !keep_f32,
                           keep ? &moe : NULL, STREAM(l + 1), 1);
        if (st == AE_OK && keep) st = keep_routing(be, &a->routing[l], &moe);
        if (st == AE_OK && keep_act) ae_copy(be, a->hidden[l + 1], STREAM(l + 1), (size_t)M * D);
        ae_moe_acts_free(&moe);
    }
    if (st == AE_OK) be->rmsnorm(be, a->final, STREAM(L), m->final_norm, M, D, D, (float)c->rms_norm_eps);
#undef STREAM
    for (int i = 0; i < 2; i++) be->free(be, work[i]);
    ae_scratch_free(&w.mem);
    if (st != AE_OK) {
        ae_train_acts_free(a);
        return st;
    }
    *acts = a;
    return AE_OK;
}

// ---------------------------------------------------------------- backward

static ae_status check_backward_args(const ae_model *m, const ae_train_acts *a, const ae_model *g,
                                     int attention_only) {
    const ae_config *c = &m->cfg, *gc = &g->cfg;
    const ae_backend *be = m->be;
    if (!be->rmsnorm_bwd || !be->attention_bwd || !be->embed_bwd)
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend has no training ops", be->name);
    if (gc->num_hidden_layers != c->num_hidden_layers || gc->hidden_size != c->hidden_size ||
        gc->vocab_size != c->vocab_size || !g->layers)
        return ae_errorf(AE_ERR_ARG, "train backward: the gradient model has another shape");
    if (a->L != c->num_hidden_layers || a->D != c->hidden_size || ae_ptr_is_null(a->hidden[0]) ||
        a->hidden[0].dtype != AE_DT_F32)
        return ae_errorf(AE_ERR_ARG, "train backward: the forward did not keep this model's "
                         "residual stream in F32 (keep_hidden AE_KEEP_F32)");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ae_layer *L = &m->layers[l], *G = &g->layers[l];
        if (G->kind != L->kind || (!attention_only && G->is_moe != L->is_moe))
            return ae_errorf(AE_ERR_ARG, "train backward: gradient model layer %d differs", l);
    }
    return AE_OK;
}

// Layer l: recomputes its internals from h_l, then w->dh (∂loss/∂h_{l+1} on entry) becomes
// ∂loss/∂h_l; weight gradients into G (af: the attention module's alone).
static ae_status layer_backward(const ae_model *m, int l, const ae_train_acts *a, layer_bufs *w,
                                ae_layer *G, int af) {
    const ae_backend *be = m->be;
    const ae_layer *L = &m->layers[l];
    int D = m->cfg.hidden_size, M = a->B * a->T;
    size_t md = (size_t)M * D;
    float eps = (float)m->cfg.rms_norm_eps;
    ae_ptr none = ae_ptr_null(), h = a->hidden[l];
    ae_layer_attn_acts attn;
    ae_moe_acts moe;
    memset(&attn, 0, sizeof attn);
    memset(&moe, 0, sizeof moe);
    // the recompute: act only when the MLP's down projection is trained (its dW reads act); the
    // attention module's activations from the forward when kept (only its input and output
    // are computed again: RMSNorm and the output projection)
    ae_status st = AE_OK;
    if (a->attn && ae_layer_attn_acts_held(&a->attn[l])) {
        attn = a->attn[l];
        memset(&a->attn[l], 0, sizeof attn); // attn owns them now: freed below
        be->rmsnorm(be, w->xn, h, L->input_norm, M, D, D, eps);
        ae_layer_attn_acts_rebind(&attn, w->xn);
        ae_layer_attn_output(be, L, &attn, w->y);
    } else {
        st = layer_attention(m, l, h, a->B, a->T, w, &attn, 0);
    }
    if (st == AE_OK) st = layer_ffn(m, l, h, M, w, L->is_moe ? &moe : NULL, none, !af);
    if (st == AE_OK) { // h_{l+1} = hmid + FFN(RMSNorm(hmid)): dh passes, plus the FFN path
        ae_copy(be, w->y, w->dh, md);
        be->fill(be, w->dx, md, 0.0f);
        if (L->is_moe)
            st = ae_moe_train_backward(m, L, &moe, w->z, w->y, w->dx, af ? NULL : G);
        else
            ae_mlp_train_backward(m, L, w->z, w->g, w->u, w->act, w->y, M, w->dx, af ? NULL : G,
                                  w->scratch);
    }
    if (st == AE_OK) { // hmid = h_l + Attn(RMSNorm(h_l)); the module backward overwrites dx
        be->rmsnorm_bwd(be, w->dh, af ? none : G->post_norm, w->dx, w->hmid, L->post_norm, M, D, eps);
        ae_copy(be, w->y, w->dh, md);
        st = ae_layer_attn_backward(be, L, &attn, w->y, w->dx, G);
    }
    if (st == AE_OK)
        be->rmsnorm_bwd(be, w->dh, af ? none : G->input_norm, w->dx, h, L->input_norm, M, D, eps);
    ae_layer_attn_acts_free(&attn);
    ae_moe_acts_free(&moe);
    return st;
}

ae_status ae_model_train_backward(const ae_model *m, const ae_train_acts *a, ae_ptr d_final,
                                  ae_hidden_grad_fn add_dh, void *ctx, ae_model *g,
                                  int attention_only) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    AE_TRY(check_backward_args(m, a, g, attention_only));
    int D = c->hidden_size, M = a->B * a->T, L = c->num_hidden_layers;
    layer_bufs w;
    AE_TRY(bufs_init(&w, m, M, 1));
    be->fill(be, w.dh, (size_t)M * D, 0.0f);
    if (!ae_ptr_is_null(d_final)) // the final norm
        be->rmsnorm_bwd(be, w.dh, attention_only ? ae_ptr_null() : g->final_norm, d_final,
                        a->hidden[L], m->final_norm, M, D, (float)c->rms_norm_eps);
    ae_status st = add_dh ? add_dh(ctx, L, a->hidden[L], w.dh) : AE_OK;
    for (int l = L - 1; l >= 0 && st == AE_OK; l--) {
        st = layer_backward(m, l, a, &w, &g->layers[l], attention_only);
        if (st == AE_OK && add_dh) st = add_dh(ctx, l, a->hidden[l], w.dh);
    }
    // embeddings: rows of repeated tokens sum, in token order
    if (st == AE_OK && !attention_only) be->embed_bwd(be, g->embed, w.dh, a->ids, M, D);
    ae_scratch_free(&w.mem);
    return st;
}
