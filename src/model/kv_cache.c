// Per-layer decode state: K/V (full or ring) for GQA/GateSWA layers, the latent for MLA layers.
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/model.h"

static size_t layer_values(const ae_model *m, int l, int cap) {
    const ae_config *cfg = &m->cfg;
    if (m->layers[l].kind == AE_ATTN_MLA) {
        ae_mla_dims d = ae_model_mla_dims(cfg);
        return (size_t)cap * ae_mla_cache_dim(&d);
    }
    ae_gswa_dims d = ae_model_gswa_dims(cfg, l);
    size_t rows = d.window > 0 ? (size_t)d.window : (size_t)cap;
    return 2 * rows * (size_t)d.Hkv * d.hd;
}

size_t ae_kv_cache_bytes(const ae_model *m, int cap) {
    size_t n = 0;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) n += layer_values(m, l, cap);
    return n * ae_dtype_size(m->be->act_dtype);
}

ae_status ae_kv_cache_init(ae_kv_cache *c, const ae_model *m, int cap) {
    memset(c, 0, sizeof *c);
    if (cap <= 0) return ae_errorf(AE_ERR_ARG, "KV cache capacity must be positive, got %d", cap);
    const ae_config *cfg = &m->cfg;
    const ae_backend *be = m->be;
    c->be = be;
    c->n_layers = cfg->num_hidden_layers;
    c->cap = cap;
    c->graphs = 1;
    c->kv = ae_calloc((size_t)c->n_layers, sizeof *c->kv);
    c->latent = ae_calloc((size_t)c->n_layers, sizeof *c->latent);
    if (!c->kv || !c->latent) {
        ae_kv_cache_free(c);
        return AE_ERR_NOMEM;
    }
    for (int l = 0; l < c->n_layers; l++) {
        ae_status st = AE_OK;
        if (m->layers[l].kind == AE_ATTN_MLA) {
            c->latent[l] = be->alloc(be, layer_values(m, l, cap), be->act_dtype);
            if (ae_ptr_is_null(c->latent[l])) st = AE_ERR_NOMEM;
        } else {
            ae_gswa_dims d = ae_model_gswa_dims(cfg, l);
            st = ae_gswa_cache_init(&c->kv[l], &d, cap, be);
        }
        if (st != AE_OK) {
            ae_kv_cache_free(c);
            return st;
        }
    }
    return AE_OK;
}

void ae_kv_cache_free(ae_kv_cache *c) {
    if (c->graph && c->be->graph_free) c->be->graph_free(c->be, c->graph);
    for (int l = 0; l < c->n_layers; l++) {
        if (c->kv) ae_gswa_cache_free(&c->kv[l]);
        if (c->latent) c->be->free(c->be, c->latent[l]);
    }
    free(c->kv);
    free(c->latent);
    memset(c, 0, sizeof *c);
}

void ae_kv_cache_reset(ae_kv_cache *c) { c->n = 0; }
