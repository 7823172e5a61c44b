// Full-attention KV cache: one (cap, Hkv, hd) buffer per layer for keys and for values.
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/model.h"

ae_status ae_kv_cache_init(ae_kv_cache *c, const ae_model *m, int cap) {
    memset(c, 0, sizeof *c);
    if (cap <= 0) return ae_errorf(AE_ERR_ARG, "KV cache capacity must be positive, got %d", cap);
    c->n_layers = m->cfg.num_hidden_layers;
    c->cap = cap;
    c->kv_dim = m->cfg.num_key_value_heads * m->cfg.head_dim;
    c->k = ae_calloc((size_t)c->n_layers, sizeof(float *));
    c->v = ae_calloc((size_t)c->n_layers, sizeof(float *));
    if (!c->k || !c->v) {
        ae_kv_cache_free(c);
        return AE_ERR_NOMEM;
    }
    for (int l = 0; l < c->n_layers; l++) {
        c->k[l] = ae_alloc_f32((size_t)cap * c->kv_dim);
        c->v[l] = ae_alloc_f32((size_t)cap * c->kv_dim);
        if (!c->k[l] || !c->v[l]) {
            ae_kv_cache_free(c);
            return AE_ERR_NOMEM;
        }
    }
    return AE_OK;
}

void ae_kv_cache_free(ae_kv_cache *c) {
    for (int l = 0; l < c->n_layers; l++) {
        if (c->k) ae_free_aligned(c->k[l]);
        if (c->v) ae_free_aligned(c->v[l]);
    }
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

void ae_kv_cache_reset(ae_kv_cache *c) { c->n = 0; }
