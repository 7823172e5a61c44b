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
// Activation memory kept by ae_model_train_forward, per token (fp32, 4 bytes a value):
//   D·(L + 2)              residual stream h_0..h_L and the final normalised hidden
//   L · 4·D                attention input/output, residual after attention, MLP input
//   dense layer: 3·I       gate, up, silu(gate)⊙up
//   MoE layer:   E + 2K + K·(3·Im + D) (+ 3K ints)  router probs, top-k, per-slot expert acts
//   + each attention module's own activations (attn_gateswa.c, mla_train.c).
// e.g. qwen3-micro (D 128, I 384, L 4): 768 + 2048 + 4608 values = 29 KiB per token, plus
// ~2.8 KiB per GQA layer (x, q/k/v before and after norm+rope, output): ≈ 40 KiB per token, so a
// batch of 8 × 512 tokens keeps ~160 MiB.
#include "train/model_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/layer_attn.h"
#include "model/params.h"
#include "train/moe_train.h"

typedef struct {
    float *attn_in;   // (M, D) RMSNorm(h_l; input_layernorm)
    float *attn_out;  // (M, D) attention module output
    float *h_mid;     // (M, D) h_l + attn_out
    float *mlp_in;    // (M, D) RMSNorm(h_mid; post_attention_layernorm)
    float *g, *u, *act; // (M, I) dense MLP
    ae_moe_acts moe;
    ae_layer_attn_acts attn;
} layer_acts;

struct ae_train_acts {
    int B, T, L, D;
    int32_t *ids;      // (M)
    float **hidden;    // (L+1) × (M, D)
    float *final;      // (M, D)
    layer_acts *layer; // (L)
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

static ae_status alloc_into(float **dst, size_t n) {
    *dst = ae_alloc_f32(n);
    return *dst ? AE_OK : AE_ERR_NOMEM;
}

// A zeroed F32 tensor of n values on backend be.
static ae_status zeros_into(const ae_backend *be, ae_ptr *dst, size_t n) {
    *dst = be->alloc(be, n, AE_DT_F32);
    if (ae_ptr_is_null(*dst)) return AE_ERR_NOMEM;
    be->fill(be, *dst, n, 0.0f);
    return AE_OK;
}

// The gradient of an attention module: the module's parameter list allocated as zeroed F32.
static ae_status attn_grads(const ae_backend *be, const ae_layer *L, ae_layer *G) {
    ae_param_list l;
    if (L->kind == AE_ATTN_MLA) {
        G->mla.d = L->mla.d;
        G->mla.be = be;
        l = ae_mla_params(&G->mla);
    } else {
        G->gqa.d = L->gqa.d;
        G->gqa.be = be;
        l = ae_gswa_params(&G->gqa);
    }
    ae_status st = ae_params_alloc(be, AE_DT_F32, &l);
    if (st != AE_OK) G->mla.be = G->gqa.be = NULL; // nothing left allocated
    return st;
}

static ae_status grads_fill(const ae_model *m, int attention_only, ae_model *g) {
    const ae_config *c = &m->cfg;
    size_t V = c->vocab_size, D = c->hidden_size, I = c->intermediate_size;
    size_t E = c->num_experts, Im = c->moe_intermediate_size;
    const ae_backend *be = m->be;
    AE_TRY(config_copy(&g->cfg, c));
    g->layers = ae_calloc((size_t)c->num_hidden_layers, sizeof(ae_layer));
    if (!g->layers) return AE_ERR_NOMEM;
    if (!attention_only) {
        AE_TRY(zeros_into(be, &g->embed, V * D));
        if (c->tie_word_embeddings) g->lm_head = g->embed;
        else AE_TRY(zeros_into(be, &g->lm_head, V * D));
        AE_TRY(zeros_into(be, &g->final_norm, D));
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ae_layer *L = &m->layers[l];
        ae_layer *G = &g->layers[l];
        G->kind = L->kind;
        G->is_moe = L->is_moe;
        AE_TRY(attn_grads(be, L, G));
        if (attention_only) continue;
        AE_TRY(zeros_into(be, &G->input_norm, D));
        AE_TRY(zeros_into(be, &G->post_norm, D));
        if (!L->is_moe) {
            AE_TRY(zeros_into(be, &G->w_gate, I * D));
            AE_TRY(zeros_into(be, &G->w_up, I * D));
            AE_TRY(zeros_into(be, &G->w_down, D * I));
        } else {
            AE_TRY(zeros_into(be, &G->router, E * D));
            AE_TRY(zeros_into(be, &G->e_gate, E * Im * D));
            AE_TRY(zeros_into(be, &G->e_up, E * Im * D));
            AE_TRY(zeros_into(be, &G->e_down, E * D * Im));
        }
    }
    return AE_OK;
}

// Bytes of the F32 gradients of m's parameters (attention_only: of its attention modules).
static double grads_bytes(const ae_model *m, int attention_only) {
    ae_named_param *p;
    int n;
    double bytes = 0;
    if (ae_model_params((ae_model *)m, attention_only, &p, &n) != AE_OK) return 0;
    for (int i = 0; i < n; i++) bytes += 4.0 * (double)p[i].numel;
    free(p);
    return bytes;
}

ae_status ae_model_grads_like(const ae_model *m, int attention_only, ae_model **out) {
    *out = NULL;
    ae_model *g = ae_calloc(1, sizeof *g);
    if (!g) return AE_ERR_NOMEM;
    g->be = m->be;
    g->n_params = m->n_params;
    g->src_dtype = m->src_dtype;
    ae_status st = grads_fill(m, attention_only, g);
    if (st != AE_OK) {
        ae_model_free(g);
        if (st != AE_ERR_NOMEM) return st;
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the "
                         "gradients of %s (F32, %.2f GiB)", m->be->name,
                         attention_only ? "the attention modules" : "every parameter",
                         grads_bytes(m, attention_only) / 1073741824.0);
    }
    *out = g;
    return AE_OK;
}

ae_status ae_model_zeros_like(const ae_model *m, ae_model **out) { return ae_model_grads_like(m, 0, out); }

void ae_model_zero(ae_model *g) {
    list_params(g, 0, NULL, 1);
}

// ---------------------------------------------------------------- activations

const float *ae_train_acts_hidden(const ae_train_acts *a, int l) {
    return l >= 0 && l <= a->L ? a->hidden[l] : NULL;
}
const float *ae_train_acts_attn_in(const ae_train_acts *a, int l) {
    return l >= 0 && l < a->L ? a->layer[l].attn_in : NULL;
}
const float *ae_train_acts_attn_out(const ae_train_acts *a, int l) {
    return l >= 0 && l < a->L ? a->layer[l].attn_out : NULL;
}
const float *ae_train_acts_final(const ae_train_acts *a) { return a->final; }
const int *ae_train_acts_topk(const ae_train_acts *a, int l) {
    return l >= 0 && l < a->L ? a->layer[l].moe.top : NULL;
}
const float *ae_train_acts_router_probs(const ae_train_acts *a, int l) {
    return l >= 0 && l < a->L ? a->layer[l].moe.probs : NULL;
}

void ae_train_acts_free(ae_train_acts *a) {
    if (!a) return;
    if (a->hidden)
        for (int l = 0; l <= a->L; l++) ae_free_aligned(a->hidden[l]);
    free(a->hidden);
    if (a->layer)
        for (int l = 0; l < a->L; l++) {
            layer_acts *la = &a->layer[l];
            float *ps[] = {la->attn_in, la->attn_out, la->h_mid, la->mlp_in, la->g, la->u, la->act};
            for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) ae_free_aligned(ps[i]);
            ae_moe_acts_free(&la->moe);
            ae_layer_attn_acts_free(&la->attn);
        }
    free(a->layer);
    ae_free_aligned(a->final);
    free(a->ids);
    free(a);
}

static ae_status acts_alloc(const ae_model *m, int B, int T, ae_train_acts **out) {
    const ae_config *c = &m->cfg;
    int L = c->num_hidden_layers;
    size_t M = (size_t)B * T, D = c->hidden_size, I = c->intermediate_size;
    ae_train_acts *a = ae_calloc(1, sizeof *a);
    if (!a) return AE_ERR_NOMEM;
    a->B = B;
    a->T = T;
    a->L = L;
    a->D = (int)D;
    *out = a;
    a->ids = ae_malloc(sizeof(int32_t) * M);
    a->hidden = ae_calloc((size_t)L + 1, sizeof(float *));
    a->layer = ae_calloc((size_t)L, sizeof(layer_acts));
    if (!a->ids || !a->hidden || !a->layer) return AE_ERR_NOMEM;
    for (int l = 0; l <= L; l++) AE_TRY(alloc_into(&a->hidden[l], M * D));
    AE_TRY(alloc_into(&a->final, M * D));
    for (int l = 0; l < L; l++) {
        layer_acts *la = &a->layer[l];
        AE_TRY(alloc_into(&la->attn_in, M * D));
        AE_TRY(alloc_into(&la->attn_out, M * D));
        AE_TRY(alloc_into(&la->h_mid, M * D));
        AE_TRY(alloc_into(&la->mlp_in, M * D));
        if (!m->layers[l].is_moe) {
            AE_TRY(alloc_into(&la->g, M * I));
            AE_TRY(alloc_into(&la->u, M * I));
            AE_TRY(alloc_into(&la->act, M * I));
        }
    }
    return AE_OK;
}

ae_status ae_model_train_forward(const ae_model *m, const int32_t *ids, int B, int T,
                                 ae_train_acts **acts) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    *acts = NULL;
    if (B <= 0 || T <= 0) return ae_errorf(AE_ERR_ARG, "train forward: B %d, T %d", B, T);
    int D = c->hidden_size, V = c->vocab_size, M = B * T;
    float eps = (float)c->rms_norm_eps;
    if (!ae_model_on_host(m))
        return ae_errorf(AE_ERR_UNSUPPORTED, "training on %s is not implemented yet: use the cpu "
                         "backend", be->name);
    for (int i = 0; i < M; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return ae_errorf(AE_ERR_ARG, "train forward: token id %d at index %d is out of range "
                             "[0, %d)", ids[i], i, V);
    ae_train_acts *a = NULL;
    ae_status st = acts_alloc(m, B, T, &a);
    if (st != AE_OK) {
        ae_train_acts_free(a);
        return st;
    }
    memcpy(a->ids, ids, sizeof(int32_t) * (size_t)M);
    size_t MD = (size_t)M * D;
    const float *embed = ae_f32(m->embed);
    for (int i = 0; i < M; i++)
        memcpy(a->hidden[0] + (size_t)i * D, embed + (size_t)ids[i] * D, sizeof(float) * D);
    for (int l = 0; l < c->num_hidden_layers && st == AE_OK; l++) {
        const ae_layer *L = &m->layers[l];
        layer_acts *la = &a->layer[l];
        be->rmsnorm(be, ae_host_f32(la->attn_in), ae_host_f32(a->hidden[l]), L->input_norm, M, D,
                    D, eps);
        st = ae_layer_attn_train_forward(be, L, ae_host_f32(la->attn_in), B, T,
                                         ae_host_f32(la->attn_out), &la->attn);
        if (st != AE_OK) break;
        memcpy(la->h_mid, a->hidden[l], sizeof(float) * MD);
        be->add(be, ae_host_f32(la->h_mid), ae_host_f32(la->attn_out), MD);
        be->rmsnorm(be, ae_host_f32(la->mlp_in), ae_host_f32(la->h_mid), L->post_norm, M, D, D, eps);
        float *h = a->hidden[l + 1];
        if (L->is_moe) st = ae_moe_train_forward(m, L, la->mlp_in, M, h, &la->moe);
        else ae_mlp_train_forward(m, L, ae_host_f32(la->mlp_in), M, ae_host_f32(h), ae_host_f32(la->g),
                                  ae_host_f32(la->u), ae_host_f32(la->act));
        be->add(be, ae_host_f32(h), ae_host_f32(la->h_mid), MD); // h_{l+1} = mlp_out + h_mid
    }
    if (st == AE_OK)
        be->rmsnorm(be, ae_host_f32(a->final), ae_host_f32(a->hidden[c->num_hidden_layers]),
                    m->final_norm, M, D, D, eps);
    if (st != AE_OK) {
        ae_train_acts_free(a);
        return st;
    }
    *acts = a;
    return AE_OK;
}

// ---------------------------------------------------------------- backward

static ae_status check_grad_model(const ae_model *m, const ae_model *g, int attention_only) {
    const ae_config *c = &m->cfg, *gc = &g->cfg;
    if (gc->num_hidden_layers != c->num_hidden_layers || gc->hidden_size != c->hidden_size ||
        gc->vocab_size != c->vocab_size || !g->layers)
        return ae_errorf(AE_ERR_ARG, "train backward: the gradient model has another shape");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ae_layer *L = &m->layers[l], *G = &g->layers[l];
        if (G->kind != L->kind || (!attention_only && G->is_moe != L->is_moe))
            return ae_errorf(AE_ERR_ARG, "train backward: gradient model layer %d differs", l);
    }
    return AE_OK;
}

ae_status ae_model_train_backward(const ae_model *m, const ae_train_acts *a, const float *d_final,
                                  float *const *d_hidden, ae_model *g, int attention_only) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    AE_TRY(check_grad_model(m, g, attention_only));
    int D = c->hidden_size, M = a->B * a->T, Lc = c->num_hidden_layers;
    float eps = (float)c->rms_norm_eps;
    size_t MD = (size_t)M * D, I = (size_t)c->intermediate_size;
    int af = attention_only;
    float *dh = ae_alloc_f32(MD);   // (M, D) ∂loss/∂residual stream at the current point
    float *dx = ae_alloc_f32(MD);   // (M, D) gradient of a sub-block's normalised input
    float *scratch = ae_alloc_f32(3 * (size_t)M * (I > 0 ? I : 1));
    ae_status st = AE_OK;
    if (!dh || !dx || !scratch) {
        st = AE_ERR_NOMEM;
        goto done;
    }
    // final norm (d_final NULL: no loss on the output), then the extra gradient on h_L
#define HF ae_host_f32
    ae_ptr none = ae_ptr_null();
    if (d_final)
        be->rmsnorm_bwd(be, HF(dh), af ? none : g->final_norm, HF(d_final), HF(a->hidden[Lc]),
                        m->final_norm, M, D, eps);
    if (d_hidden && d_hidden[Lc]) be->add(be, HF(dh), HF(d_hidden[Lc]), MD);
    for (int l = Lc - 1; l >= 0; l--) {
        const ae_layer *L = &m->layers[l];
        ae_layer *G = &g->layers[l];
        const layer_acts *la = &a->layer[l];
        // h_{l+1} = h_mid + FFN(RMSNorm(h_mid)): dh stays, plus the FFN path
        memset(dx, 0, sizeof(float) * MD);
        if (L->is_moe) {
            st = ae_moe_train_backward(m, L, &la->moe, la->mlp_in, dh, dx, af ? NULL : G);
            if (st != AE_OK) goto done;
        } else {
            ae_mlp_train_backward(m, L, ae_host_f32(la->mlp_in), ae_host_f32(la->g),
                                  ae_host_f32(la->u), ae_host_f32(la->act), ae_host_f32(dh), M,
                                  ae_host_f32(dx), af ? NULL : G, ae_host_f32(scratch));
        }
        be->rmsnorm_bwd(be, HF(dh), af ? none : G->post_norm, HF(dx), HF(la->h_mid), L->post_norm,
                        M, D, eps);
        // h_mid = h_l + Attn(RMSNorm(h_l)); the module backward overwrites dx
        st = ae_layer_attn_backward(be, L, &la->attn, HF(dh), HF(dx), G);
        if (st != AE_OK) goto done;
        be->rmsnorm_bwd(be, HF(dh), af ? none : G->input_norm, HF(dx), HF(a->hidden[l]),
                        L->input_norm, M, D, eps);
        if (d_hidden && d_hidden[l]) be->add(be, HF(dh), HF(d_hidden[l]), MD);
    }
#undef HF
    // embeddings: scatter-add (rows of repeated tokens sum, in token order)
    if (!af)
        for (int i = 0; i < M; i++) {
            float *ge = ae_f32(g->embed) + (size_t)a->ids[i] * D;
            const float *src = dh + (size_t)i * D;
            for (int d = 0; d < D; d++) ge[d] += src[d];
        }
done:
    ae_free_aligned(dh);
    ae_free_aligned(dx);
    ae_free_aligned(scratch);
    return st;
}
