// A Qwen3 / Qwen3-MoE causal LM held in fp32 and run through the op interface.
// Weights are read from a Hugging Face folder (config.json + safetensors) and checked against
// the config: every expected tensor must exist with the expected shape.
#ifndef AE_MODEL_MODEL_H
#define AE_MODEL_MODEL_H

#include <stdint.h>

#include "backend/ops.h"
#include "core/error.h"
#include "io/config.h"

typedef struct {
    float *input_norm;  // (D)
    float *wq;          // (Hq*hd, D)
    float *wk;          // (Hkv*hd, D)
    float *wv;          // (Hkv*hd, D)
    float *wo;          // (D, Hq*hd)
    float *q_norm;      // (hd)
    float *k_norm;      // (hd)
    float *post_norm;   // (D)
    int is_moe;
    // dense MLP (is_moe == 0)
    float *w_gate;      // (I, D)
    float *w_up;        // (I, D)
    float *w_down;      // (D, I)
    // sparse MoE (is_moe == 1)
    float *router;      // (E, D)
    float *e_gate;      // (E, Im, D)
    float *e_up;        // (E, Im, D)
    float *e_down;      // (E, D, Im)
} ae_layer;

typedef struct {
    ae_config cfg;
    const ae_backend *be;
    float *embed;       // (V, D)
    float *lm_head;     // (V, D); == embed when tied
    float *final_norm;  // (D)
    ae_layer *layers;   // (L)
    int64_t n_params;   // counted from the loaded tensors
} ae_model;

// Loads dir/config.json and the weights (any of F32/F16/BF16, converted to f32).
ae_status ae_model_load(const char *dir, const ae_backend *be, ae_model **out);
void ae_model_free(ae_model *m);

// KV cache for full-attention layers: per layer, keys and values of every position so far.
typedef struct {
    int n_layers, cap, n; // n = tokens cached
    int kv_dim;           // Hkv * hd
    float **k;            // L × (cap, Hkv, hd)
    float **v;            // L × (cap, Hkv, hd)
} ae_kv_cache;

ae_status ae_kv_cache_init(ae_kv_cache *c, const ae_model *m, int cap);
void ae_kv_cache_free(ae_kv_cache *c);
void ae_kv_cache_reset(ae_kv_cache *c);

// Runs T tokens at positions cache->n .. cache->n+T-1, appends their K/V to the cache.
// logits: (T, V) when all_logits, else (1, V) for the last token only. NULL skips the head.
// ids must be in [0, V): checked, AE_ERR_ARG otherwise.
ae_status ae_model_forward(const ae_model *m, ae_kv_cache *cache, const int32_t *ids, int T,
                           float *logits, int all_logits);

#endif
