// libFuzzer harness: config.json (Qwen3 / Qwen3-MoE, both vintages, student fields), parsed by
// ae_config_parse from memory; an input holding a NUL byte also goes through ae_config_load
// (which must refuse it). On success the quantities `attnedit inspect` derives from a config
// alone are computed too (parameter count, KV-cache bytes, per-layer values, GPU workspace),
// and the config is deep-copied and freed.
// Promises checked (io/config.h): AE_OK or an error with a message; on success the sizes are
// positive, 1 <= num_hidden_layers <= AE_MAX_LAYERS, the per-layer arrays exist, and the
// student fields are consistent with attention_target.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "io/config.h"
#include "model/model.h"

static void derived(const ae_config *c) {
    static const int64_t ctx[] = {0, 1, 4096, 32768, 131072};
    (void)ae_config_param_count(c);
    for (size_t i = 0; i < sizeof ctx / sizeof *ctx; i++) {
        (void)ae_config_kv_bytes(c, ctx[i]);
        (void)ae_forward_workspace_bytes(c, ctx[i], 2);
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        (void)ae_config_layer_is_moe(c, l);
        (void)ae_config_kv_values(c, l);
        (void)ae_config_attn_params(c, l);
        FZ_ASSERT(c->layer_types[l] == AE_LAYER_FULL || c->layer_types[l] == AE_LAYER_SLIDING,
                  "layer_types[%d] = %d", l, (int)c->layer_types[l]);
        FZ_ASSERT(c->layer_attn[l] == AE_ATTN_GQA || c->layer_attn[l] == c->target,
                  "layer_attn[%d] = %d, target %d", l, (int)c->layer_attn[l], (int)c->target);
        FZ_ASSERT(c->layer_types[l] != AE_LAYER_SLIDING || c->sliding_window > 0,
                  "layer %d slides without a window", l);
    }
    (void)ae_attn_kind_name(c->target);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fz_cstr(data, size);
    ae_config cfg;
    fz_begin();
    ae_status st = ae_config_parse(text, "config.json", &cfg);
    fz_check(st, "ae_config_parse");
    if (st == AE_OK) {
        FZ_ASSERT(cfg.vocab_size > 0 && cfg.hidden_size > 0 && cfg.intermediate_size > 0 &&
                      cfg.num_attention_heads > 0 && cfg.num_key_value_heads > 0 &&
                      cfg.head_dim > 0 && cfg.max_position_embeddings > 0,
                  "non-positive size accepted");
        FZ_ASSERT(cfg.num_hidden_layers >= 1 && cfg.num_hidden_layers <= AE_MAX_LAYERS,
                  "num_hidden_layers %d", cfg.num_hidden_layers);
        FZ_ASSERT(cfg.num_attention_heads % cfg.num_key_value_heads == 0, "heads not divisible");
        FZ_ASSERT(cfg.layer_types && cfg.layer_attn, "per-layer arrays missing");
        FZ_ASSERT(cfg.rms_norm_eps > 0 && cfg.rope_theta > 0, "eps/theta");
        FZ_ASSERT(cfg.target != AE_ATTN_MLA || (cfg.kv_lora_rank >= 1 && cfg.qk_rope_head_dim >= 2 &&
                                                cfg.qk_rope_head_dim % 2 == 0 &&
                                                cfg.v_head_dim >= 1 && cfg.qk_nope_head_dim >= 0 &&
                                                cfg.q_lora_rank >= 0),
                  "MLA fields");
        for (int i = 0; i < cfg.n_mlp_only_layers; i++)
            FZ_ASSERT(cfg.mlp_only_layers[i] >= 0 && cfg.mlp_only_layers[i] < cfg.num_hidden_layers,
                      "mlp_only_layers[%d] = %d", i, cfg.mlp_only_layers[i]);
        derived(&cfg);
        ae_config copy;
        fz_begin();
        ae_status cst = ae_config_copy(&copy, &cfg);
        fz_check(cst, "ae_config_copy");
        if (cst == AE_OK) {
            FZ_ASSERT(copy.num_hidden_layers == cfg.num_hidden_layers &&
                          memcmp(copy.layer_attn, cfg.layer_attn,
                                 sizeof *cfg.layer_attn * (size_t)cfg.num_hidden_layers) == 0,
                      "copy differs");
            ae_config_free(&copy);
        }
        ae_config_free(&cfg);
    }
    if (memchr(data, 0, size)) { // the file reader refuses NUL bytes
        fz_write("c/config.json", data, size);
        fz_begin();
        st = ae_config_load(fz_path("c"), &cfg);
        fz_check(st, "ae_config_load");
        FZ_ASSERT(st != AE_OK, "a config.json with a NUL byte was accepted");
    }
    free(text);
    return 0;
}
