// Per-layer decode state: K/V (full or ring) for GQA/GateSWA layers, the latent for MLA layers.
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/model.h"

ae_status ae_kv_cache_init(ae_kv_cache *c, const ae_model *m, int cap) {
    memset(c, 0, sizeof *c);
    if (cap <= 0) return ae_errorf(AE_ERR_ARG, "KV cache capacity must be positive, got %d", cap);
    const ae_config *cfg = &m->cfg;
    c->n_layers = cfg->num_hidden_layers;
    c->cap = cap;
    c->kv = ae_calloc((size_t)c->n_layers, sizeof *c->kv);
    c->latent = ae_calloc((size_t)c->n_layers, sizeof *c->latent);
    if (!c->kv || !c->latent) {
        ae_kv_cache_free(c);
        return AE_ERR_NOMEM;
    }
    for (int l = 0; l < c->n_layers; l++) {
        ae_status st = AE_OK;
        if (m->layers[l].kind == AE_ATTN_MLA) {
            ae_mla_dims d = ae_model_mla_dims(cfg);
            c->latent[l] = ae_alloc_f32((size_t)cap * ae_mla_cache_dim(&d));
            if (!c->latent[l]) st = AE_ERR_NOMEM;
        } else {
            ae_gswa_dims d = ae_model_gswa_dims(cfg, l);
            st = ae_gswa_cache_init(&c->kv[l], &d, cap);
        }
        if (st != AE_OK) {
            ae_kv_cache_free(c);
            return st;
        }
    }
    return AE_OK;
}

void ae_kv_cache_free(ae_kv_cache *c) {
    for (int l = 0; l < c->n_layers; l++) {
        if (c->kv) ae_gswa_cache_free(&c->kv[l]);
        if (c->latent) ae_free_aligned(c->latent[l]);
    }
    free(c->kv);
    free(c->latent);
    memset(c, 0, sizeof *c);
}

void ae_kv_cache_reset(ae_kv_cache *c) { c->n = 0; }
