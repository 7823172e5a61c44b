#include "model/tensors.h"

#include <stdio.h>

typedef struct {
    ae_model_tensor_fn fn;
    void *ud;
    char name[256];
} walker;

static ae_status visit(walker *w, ae_ptr d, int64_t rows, int64_t cols, int replaced) {
    ae_model_tensor t = {.name = w->name, .data = d, .ndim = cols ? 2 : 1,
                         .shape = {rows, cols}, .replaced = replaced};
    return w->fn(w->ud, &t);
}

#define NAMED(w, ...) snprintf((w)->name, sizeof (w)->name, __VA_ARGS__)

static ae_status visit_layer(walker *w, const ae_model *m, int l) {
    const ae_config *c = &m->cfg;
    ae_layer *L = &m->layers[l]; // params() only reads the module's pointers
    int64_t D = c->hidden_size, I = c->intermediate_size, E = c->num_experts;
    int64_t Im = c->moe_intermediate_size;
    NAMED(w, "model.layers.%d.input_layernorm.weight", l);
    AE_TRY(visit(w, L->input_norm, D, 0, 0));
    NAMED(w, "model.layers.%d.post_attention_layernorm.weight", l);
    AE_TRY(visit(w, L->post_norm, D, 0, 0));
    ae_param_list ps = L->kind == AE_ATTN_MLA ? ae_mla_params(&L->mla) : ae_gswa_params(&L->gqa);
    for (int i = 0; i < ps.n; i++) {
        NAMED(w, "model.layers.%d.self_attn.%s", l, ps.p[i].name);
        AE_TRY(visit(w, ps.p[i].data, ps.p[i].shape[0], ps.p[i].ndim == 2 ? ps.p[i].shape[1] : 0,
                     L->kind != AE_ATTN_GQA));
    }
    if (!L->is_moe) {
        NAMED(w, "model.layers.%d.mlp.gate_proj.weight", l);
        AE_TRY(visit(w, L->w_gate, I, D, 0));
        NAMED(w, "model.layers.%d.mlp.up_proj.weight", l);
        AE_TRY(visit(w, L->w_up, I, D, 0));
        NAMED(w, "model.layers.%d.mlp.down_proj.weight", l);
        return visit(w, L->w_down, D, I, 0);
    }
    NAMED(w, "model.layers.%d.mlp.gate.weight", l);
    AE_TRY(visit(w, L->router, E, D, 0));
    for (int64_t e = 0; e < E; e++) {
        NAMED(w, "model.layers.%d.mlp.experts.%lld.gate_proj.weight", l, (long long)e);
        AE_TRY(visit(w, ae_ptr_at(L->e_gate, (size_t)(e * Im * D)), Im, D, 0));
        NAMED(w, "model.layers.%d.mlp.experts.%lld.up_proj.weight", l, (long long)e);
        AE_TRY(visit(w, ae_ptr_at(L->e_up, (size_t)(e * Im * D)), Im, D, 0));
        NAMED(w, "model.layers.%d.mlp.experts.%lld.down_proj.weight", l, (long long)e);
        AE_TRY(visit(w, ae_ptr_at(L->e_down, (size_t)(e * D * Im)), D, Im, 0));
    }
    return AE_OK;
}

ae_status ae_model_foreach_tensor(const ae_model *m, ae_model_tensor_fn fn, void *ud) {
    const ae_config *c = &m->cfg;
    walker w = {.fn = fn, .ud = ud};
    int64_t V = c->vocab_size, D = c->hidden_size;
    NAMED(&w, "model.embed_tokens.weight");
    AE_TRY(visit(&w, m->embed, V, D, 0));
    for (int l = 0; l < c->num_hidden_layers; l++) AE_TRY(visit_layer(&w, m, l));
    NAMED(&w, "model.norm.weight");
    AE_TRY(visit(&w, m->final_norm, D, 0, 0));
    if (c->tie_word_embeddings) return AE_OK;
    NAMED(&w, "lm_head.weight");
    return visit(&w, m->lm_head, V, D, 0);
}

int64_t ae_model_tensor_numel(const ae_model_tensor *t) {
    return t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
}
