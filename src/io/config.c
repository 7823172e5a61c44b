// config.json of Qwen3ForCausalLM / Qwen3MoeForCausalLM -> ae_config.
//
// Defaults for absent (or null) fields are those of transformers' Qwen3Config / Qwen3MoeConfig
// (transformers 4.51 .. 5.x):
//   field                     Qwen3        Qwen3Moe
//   vocab_size                151936       151936
//   hidden_size               4096         2048
//   intermediate_size         22016        6144
//   num_hidden_layers         32           24
//   num_attention_heads       32           32
//   num_key_value_heads       = heads (32) 4
//   hidden_act                "silu"       "silu"
//   max_position_embeddings   32768        32768
//   initializer_range         0.02         0.02
//   rms_norm_eps              1e-6         1e-6
//   tie_word_embeddings       false        false
//   rope_theta                10000        10000
//   attention_bias            false        false
//   use_sliding_window        false        false
//   sliding_window            4096 (None unless use_sliding_window)
//   max_window_layers         28           (not a Qwen3Moe field; 28 if absent)
//   decoder_sparse_step       -            1
//   moe_intermediate_size     -            768
//   num_experts_per_tok       -            8
//   num_experts               -            128   (transformers 5 writes num_local_experts)
//   norm_topk_prob            -            false
//   mlp_only_layers           -            []
//   bos_token_id/eos_token_id None (-1)
// head_dim: absent -> 128, the Qwen3Config / Qwen3MoeConfig default, exactly as transformers
// builds the model (checked: a checkpoint saved with head_dim 128 and the field removed loads
// in transformers 5.17 with head_dim 128, tests/fixtures/models/dense_head_dim_default);
// explicit null -> hidden_size / num_attention_heads (the modeling code's fallback).
#include "io/config.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/file.h"
#include "core/mem.h"

#include "io/config_json.h"
#include "io/config_arch.h"
#include "io/config_student.h"

// A rope-type field: absent, null or "default" is plain RoPE; anything else is unsupported.
static ae_status check_rope_type(const ae_cfgctx *c, const cJSON *obj, const char *objname,
                                 const char *key) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!t || cJSON_IsNull(t)) return AE_OK;
    if (!cJSON_IsString(t))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s.%s\": expected a string, got %s", c->origin,
                         objname, key, ae_cfg_jtype(t));
    if (strcmp(t->valuestring, "default") != 0)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"%s.%s\" = \"%s\": RoPE scaling is not supported (only "
                         "\"default\")",
                         c->origin, objname, key, t->valuestring);
    return AE_OK;
}

static ae_status check_partial_rotary(const ae_cfgctx *c, const cJSON *v, const char *name) {
    double f = 1.0;
    AE_TRY(ae_cfg_get_double(c, v, name, 1.0, &f));
    if (f != 1.0)
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field \"%s\" = %g: partial RoPE is not supported",
                         c->origin, name, f);
    return AE_OK;
}

// rope_theta (old vintage) or rope_parameters.rope_theta (transformers 5); rope_scaling must be
// plain. Any rope type other than "default" is AE_ERR_UNSUPPORTED.
static ae_status parse_rope(const ae_cfgctx *c, ae_config *cfg) {
    const cJSON *top = ae_cfg_field(c, "rope_theta");
    double theta = 10000.0;
    AE_TRY(ae_cfg_get_double(c, top, "rope_theta", 10000.0, &theta));
    AE_TRY(check_partial_rotary(c, ae_cfg_field(c, "partial_rotary_factor"), "partial_rotary_factor"));
    static const char *const objs[] = {"rope_scaling", "rope_parameters"};
    for (int k = 0; k < 2; k++) {
        const cJSON *o = ae_cfg_field(c, objs[k]);
        if (!o) continue;
        if (!cJSON_IsObject(o))
            return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": expected an object, got %s",
                             c->origin, objs[k], ae_cfg_jtype(o));
        const cJSON *m;
        cJSON_ArrayForEach(m, o) {
            if (cJSON_IsObject(m))
                return ae_errorf(AE_ERR_UNSUPPORTED,
                                 "%s: field \"%s.%s\": per-layer-type RoPE parameters are not "
                                 "supported",
                                 c->origin, objs[k], m->string);
        }
        AE_TRY(check_rope_type(c, o, objs[k], "rope_type"));
        AE_TRY(check_rope_type(c, o, objs[k], "type"));
        char name[64];
        snprintf(name, sizeof name, "%s.partial_rotary_factor", objs[k]);
        AE_TRY(check_partial_rotary(c, cJSON_GetObjectItemCaseSensitive(o, "partial_rotary_factor"),
                                    name));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "rope_theta");
        if (t && !cJSON_IsNull(t)) {
            snprintf(name, sizeof name, "%s.rope_theta", objs[k]);
            AE_TRY(ae_cfg_get_double(c, t, name, theta, &theta));
        }
    }
    if (!(theta > 0.0) || !isfinite(theta))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"rope_theta\": must be positive, got %g",
                         c->origin, theta);
    cfg->rope_theta = theta;
    return AE_OK;
}

static ae_status parse_moe(const ae_cfgctx *c, ae_config *cfg) {
    const cJSON *ne = ae_cfg_field(c, "num_experts"), *nle = ae_cfg_field(c, "num_local_experts");
    int a = 128, b = 128;
    if (ne) AE_TRY(ae_cfg_num_to_int(c, "num_experts", ne, &a));
    if (nle) AE_TRY(ae_cfg_num_to_int(c, "num_local_experts", nle, &b));
    if (ne && nle && a != b)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: fields \"num_experts\" (%d) and \"num_local_experts\" (%d) disagree",
                         c->origin, a, b);
    cfg->num_experts = ne ? a : b;
    if (cfg->num_experts < 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": must be >= 0, got %d", c->origin,
                         ne ? "num_experts" : "num_local_experts", cfg->num_experts);
    AE_TRY(ae_cfg_get_int(c, "num_experts_per_tok", 8, &cfg->num_experts_per_tok));
    AE_TRY(ae_cfg_get_int(c, "moe_intermediate_size", 768, &cfg->moe_intermediate_size));
    AE_TRY(ae_cfg_get_bool(c, "norm_topk_prob", 0, &cfg->norm_topk_prob));
    AE_TRY(ae_cfg_get_int(c, "decoder_sparse_step", 1, &cfg->decoder_sparse_step));
    AE_TRY(ae_cfg_need_positive(c, "decoder_sparse_step", cfg->decoder_sparse_step));
    if (cfg->num_experts > 0) {
        AE_TRY(ae_cfg_need_positive(c, "num_experts_per_tok", cfg->num_experts_per_tok));
        AE_TRY(ae_cfg_need_positive(c, "moe_intermediate_size", cfg->moe_intermediate_size));
        if (cfg->num_experts_per_tok > cfg->num_experts)
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field \"num_experts_per_tok\" (%d) exceeds the number of "
                             "experts (%d)",
                             c->origin, cfg->num_experts_per_tok, cfg->num_experts);
    }
    const cJSON *m = ae_cfg_field(c, "mlp_only_layers");
    if (m) {
        if (!cJSON_IsArray(m))
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field \"mlp_only_layers\": expected an array of layer indices, "
                             "got %s",
                             c->origin, ae_cfg_jtype(m));
        int n = cJSON_GetArraySize(m);
        cfg->mlp_only_layers = ae_calloc((size_t)(n ? n : 1), sizeof(int));
        if (!cfg->mlp_only_layers) return AE_ERR_NOMEM;
        const cJSON *e;
        int i = 0;
        cJSON_ArrayForEach(e, m) {
            char name[48];
            snprintf(name, sizeof name, "mlp_only_layers[%d]", i);
            int v;
            AE_TRY(ae_cfg_num_to_int(c, name, e, &v));
            if (v < 0 || v >= cfg->num_hidden_layers)
                return ae_errorf(AE_ERR_FORMAT,
                                 "%s: field \"%s\" = %d: not a layer index (0..%d)", c->origin,
                                 name, v, cfg->num_hidden_layers - 1);
            cfg->mlp_only_layers[i++] = v;
            cfg->n_mlp_only_layers = i;
        }
    }
    return AE_OK;
}

static ae_status parse_layer_types(const ae_cfgctx *c, ae_config *cfg) {
    int L = cfg->num_hidden_layers;
    cfg->layer_types = ae_calloc((size_t)L, sizeof *cfg->layer_types);
    if (!cfg->layer_types) return AE_ERR_NOMEM;
    const cJSON *lt = ae_cfg_field(c, "layer_types");
    if (!lt) {
        if (cfg->sliding_window > 0 && cfg->arch == AE_ARCH_QWEN3_MOE)
            return ae_errorf(AE_ERR_UNSUPPORTED,
                             "%s: field \"use_sliding_window\": sliding-window Qwen3-MoE without "
                             "\"layer_types\" is not supported (transformers versions disagree on "
                             "which layers slide)",
                             c->origin);
        // transformers' Qwen3Config: sliding iff sliding_window is set (use_sliding_window) and
        // the layer index is >= max_window_layers.
        for (int l = 0; l < L; l++)
            cfg->layer_types[l] = (cfg->sliding_window > 0 && l >= cfg->max_window_layers)
                                      ? AE_LAYER_SLIDING
                                      : AE_LAYER_FULL;
        return AE_OK;
    }
    if (!cJSON_IsArray(lt))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"layer_types\": expected an array, got %s",
                         c->origin, ae_cfg_jtype(lt));
    int n = cJSON_GetArraySize(lt);
    if (n != L)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"layer_types\": %d entries, but num_hidden_layers is %d",
                         c->origin, n, L);
    const cJSON *e;
    int l = 0;
    cJSON_ArrayForEach(e, lt) {
        if (cJSON_IsString(e) && strcmp(e->valuestring, "full_attention") == 0) {
            cfg->layer_types[l] = AE_LAYER_FULL;
        } else if (cJSON_IsString(e) && strcmp(e->valuestring, "sliding_attention") == 0) {
            if (cfg->sliding_window <= 0)
                return ae_errorf(AE_ERR_FORMAT,
                                 "%s: field \"layer_types[%d]\" is \"sliding_attention\", but no "
                                 "window is set (\"use_sliding_window\" false or "
                                 "\"sliding_window\" null)",
                                 c->origin, l);
            cfg->layer_types[l] = AE_LAYER_SLIDING;
        } else {
            return ae_errorf(cJSON_IsString(e) ? AE_ERR_UNSUPPORTED : AE_ERR_FORMAT,
                             "%s: field \"layer_types[%d]\": expected \"full_attention\" or "
                             "\"sliding_attention\", got %s%.60s%s",
                             c->origin, l, cJSON_IsString(e) ? "\"" : ae_cfg_jtype(e),
                             cJSON_IsString(e) ? e->valuestring : "", cJSON_IsString(e) ? "\"" : "");
        }
        l++;
    }
    return AE_OK;
}

static ae_status check_limits(const ae_cfgctx *c, const ae_config *cfg);

static ae_status parse_root(const ae_cfgctx *c, ae_config *cfg) {
    if (!cJSON_IsObject(c->root))
        return ae_errorf(AE_ERR_FORMAT, "%s: top level is not a JSON object", c->origin);
    AE_TRY(ae_config_parse_arch(c, cfg));
    int moe = cfg->arch == AE_ARCH_QWEN3_MOE;

    AE_TRY(ae_cfg_get_int(c, "vocab_size", 151936, &cfg->vocab_size));
    AE_TRY(ae_cfg_get_int(c, "hidden_size", moe ? 2048 : 4096, &cfg->hidden_size));
    AE_TRY(ae_cfg_get_int(c, "intermediate_size", moe ? 6144 : 22016, &cfg->intermediate_size));
    AE_TRY(ae_cfg_get_int(c, "num_hidden_layers", moe ? 24 : 32, &cfg->num_hidden_layers));
    AE_TRY(ae_cfg_get_int(c, "num_attention_heads", 32, &cfg->num_attention_heads));
    // DeepSeek's configs default the KV heads to the attention heads, Qwen3-MoE's to 4
    AE_TRY(ae_cfg_get_int(c, "num_key_value_heads",
                          moe && !ae_config_is_deepseek(cfg) ? 4 : cfg->num_attention_heads,
                          &cfg->num_key_value_heads));
    AE_TRY(ae_cfg_need_positive(c, "vocab_size", cfg->vocab_size));
    AE_TRY(ae_cfg_need_positive(c, "hidden_size", cfg->hidden_size));
    AE_TRY(ae_cfg_need_positive(c, "intermediate_size", cfg->intermediate_size));
    AE_TRY(ae_cfg_need_positive(c, "num_hidden_layers", cfg->num_hidden_layers));
    AE_TRY(ae_cfg_need_positive(c, "num_attention_heads", cfg->num_attention_heads));
    AE_TRY(ae_cfg_need_positive(c, "num_key_value_heads", cfg->num_key_value_heads));
    if (ae_config_is_deepseek(cfg)) AE_TRY(ae_config_check_deepseek(c, cfg));
    if (cfg->num_hidden_layers > AE_MAX_LAYERS)
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field \"num_hidden_layers\": %d exceeds %d",
                         c->origin, cfg->num_hidden_layers, AE_MAX_LAYERS);
    if (cfg->num_attention_heads % cfg->num_key_value_heads != 0)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"num_attention_heads\" (%d) is not divisible by "
                         "\"num_key_value_heads\" (%d)",
                         c->origin, cfg->num_attention_heads, cfg->num_key_value_heads);
    if (ae_cfg_field(c, "head_dim")) {
        AE_TRY(ae_cfg_get_int(c, "head_dim", 0, &cfg->head_dim));
        AE_TRY(ae_cfg_need_positive(c, "head_dim", cfg->head_dim));
    } else if (!cJSON_GetObjectItemCaseSensitive(c->root, "head_dim")) {
        cfg->head_dim = 128;
    } else {
        if (cfg->hidden_size % cfg->num_attention_heads != 0)
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field \"head_dim\" is null and \"hidden_size\" (%d) is not "
                             "divisible by \"num_attention_heads\" (%d)",
                             c->origin, cfg->hidden_size, cfg->num_attention_heads);
        cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
    }

    const cJSON *act = ae_cfg_field(c, "hidden_act");
    if (act && !cJSON_IsString(act))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"hidden_act\": expected a string, got %s",
                         c->origin, ae_cfg_jtype(act));
    if (act && strcmp(act->valuestring, "silu") != 0 && strcmp(act->valuestring, "swish") != 0)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"hidden_act\" = \"%.60s\": only \"silu\" is supported",
                         c->origin, act->valuestring);
    int bias;
    AE_TRY(ae_cfg_get_bool(c, "attention_bias", 0, &bias));
    if (bias)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"attention_bias\" = true: q/k/v/o biases are not supported",
                         c->origin);
    int mlp_bias;
    AE_TRY(ae_cfg_get_bool(c, "mlp_bias", 0, &mlp_bias));
    if (mlp_bias)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"mlp_bias\" = true: MLP biases are not supported", c->origin);

    AE_TRY(ae_cfg_get_double(c, ae_cfg_field(c, "rms_norm_eps"), "rms_norm_eps", 1e-6, &cfg->rms_norm_eps));
    if (!(cfg->rms_norm_eps > 0.0) || !isfinite(cfg->rms_norm_eps))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"rms_norm_eps\": must be positive, got %g",
                         c->origin, cfg->rms_norm_eps);
    AE_TRY(ae_cfg_get_double(c, ae_cfg_field(c, "initializer_range"), "initializer_range", 0.02,
                      &cfg->initializer_range));
    AE_TRY(parse_rope(c, cfg));
    AE_TRY(ae_cfg_get_int(c, "max_position_embeddings", 32768, &cfg->max_position_embeddings));
    AE_TRY(ae_cfg_need_positive(c, "max_position_embeddings", cfg->max_position_embeddings));
    AE_TRY(ae_cfg_get_bool(c, "tie_word_embeddings", 0, &cfg->tie_word_embeddings));
    AE_TRY(ae_cfg_get_token_id(c, "bos_token_id", &cfg->bos_token_id));
    AE_TRY(ae_cfg_get_token_id(c, "eos_token_id", &cfg->eos_token_id));

    // Sliding window: transformers keeps sliding_window only when use_sliding_window is true.
    AE_TRY(ae_cfg_get_bool(c, "use_sliding_window", 0, &cfg->use_sliding_window));
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(c->root, "sliding_window");
    int window = 4096; // absent -> 4096, null -> none
    if (sw && cJSON_IsNull(sw)) window = 0;
    else if (sw) AE_TRY(ae_cfg_num_to_int(c, "sliding_window", sw, &window));
    if (window < 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"sliding_window\": must be >= 0, got %d",
                         c->origin, window);
    cfg->sliding_window = cfg->use_sliding_window ? window : 0;
    AE_TRY(ae_cfg_get_int(c, "max_window_layers", 28, &cfg->max_window_layers));
    if (cfg->max_window_layers < 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"max_window_layers\": must be >= 0, got %d",
                         c->origin, cfg->max_window_layers);

    if (cfg->folder == AE_FOLDER_DEEPSEEK_V2) {
        AE_TRY(ae_config_parse_deepseek_moe(c, cfg));
    } else if (moe) {
        AE_TRY(parse_moe(c, cfg));
    } else {
        cfg->num_experts = 0;
        cfg->num_experts_per_tok = 0;
        cfg->moe_intermediate_size = 0;
        cfg->norm_topk_prob = 0;
        cfg->decoder_sparse_step = 1;
    }
    AE_TRY(parse_layer_types(c, cfg));
    AE_TRY(ae_config_parse_student(c, cfg));
    return check_limits(c, cfg);
}

static ae_status at_most(const ae_cfgctx *c, const char *key, int v, int max) {
    if (v > max)
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field \"%s\" = %d exceeds the supported maximum %d",
                         c->origin, key, v, max);
    return AE_OK;
}

// The size limits of config.h, so that no size derived from the config overflows.
static ae_status check_limits(const ae_cfgctx *c, const ae_config *cfg) {
    const struct {
        const char *key;
        int v, max;
    } f[] = {
        {"vocab_size", cfg->vocab_size, AE_MAX_VOCAB},
        {"hidden_size", cfg->hidden_size, AE_MAX_WIDTH},
        {"intermediate_size", cfg->intermediate_size, AE_MAX_WIDTH},
        {"moe_intermediate_size", cfg->moe_intermediate_size, AE_MAX_WIDTH},
        {"num_attention_heads", cfg->num_attention_heads, AE_MAX_HEADS},
        {"num_key_value_heads", cfg->num_key_value_heads, AE_MAX_HEADS},
        {"head_dim", cfg->head_dim, AE_MAX_HEAD_DIM},
        {"num_experts", cfg->num_experts, AE_MAX_EXPERTS},
        {"max_position_embeddings", cfg->max_position_embeddings, AE_MAX_POSITIONS},
        {"sliding_window", cfg->sliding_window, AE_MAX_POSITIONS},
        {"kv_lora_rank", cfg->kv_lora_rank, AE_MAX_WIDTH},
        {"q_lora_rank", cfg->q_lora_rank, AE_MAX_WIDTH},
        {"qk_nope_head_dim", cfg->qk_nope_head_dim, AE_MAX_HEAD_DIM},
        {"qk_rope_head_dim", cfg->qk_rope_head_dim, AE_MAX_HEAD_DIM},
        {"v_head_dim", cfg->v_head_dim, AE_MAX_HEAD_DIM},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) AE_TRY(at_most(c, f[i].key, f[i].v, f[i].max));
    return AE_OK;
}

ae_status ae_config_parse(const char *json, const char *origin, ae_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    if (!origin) origin = "config.json";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        int line = 1;
        for (const char *p = json; end && p < end; p++) line += *p == '\n';
        return ae_errorf(AE_ERR_FORMAT, "%s: not valid JSON (line %d)", origin, line);
    }
    ae_cfgctx c = {root, origin};
    ae_status st = parse_root(&c, cfg);
    cJSON_Delete(root);
    if (st != AE_OK) ae_config_free(cfg);
    return st;
}

ae_status ae_config_load(const char *dir, ae_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    char *path = ae_path_join(dir, "config.json");
    if (!path) return AE_ERR_NOMEM;
    char *text = NULL;
    size_t len = 0;
    ae_status st = ae_file_read_all(path, &text, &len);
    if (st == AE_OK) {
        if (strlen(text) != len)
            st = ae_errorf(AE_ERR_FORMAT, "%s: contains a NUL byte", path);
        else
            st = ae_config_parse(text, path, cfg);
    }
    free(text);
    free(path);
    return st;
}

void ae_config_free(ae_config *cfg) {
    if (!cfg) return;
    free(cfg->mlp_only_layers);
    free(cfg->layer_types);
    free(cfg->layer_attn);
    cfg->mlp_only_layers = NULL;
    cfg->layer_types = NULL;
    cfg->layer_attn = NULL;
    cfg->n_mlp_only_layers = 0;
}

static void *dup_array(const void *src, size_t n, size_t size) {
    if (!src) return NULL;
    void *d = ae_calloc(n ? n : 1, size);
    if (d) memcpy(d, src, n * size);
    return d;
}

ae_status ae_config_copy(ae_config *dst, const ae_config *src) {
    *dst = *src;
    int L = src->num_hidden_layers;
    dst->mlp_only_layers = dup_array(src->mlp_only_layers, (size_t)src->n_mlp_only_layers, sizeof(int));
    dst->layer_types = dup_array(src->layer_types, (size_t)L, sizeof *src->layer_types);
    dst->layer_attn = dup_array(src->layer_attn, (size_t)L, sizeof *src->layer_attn);
    if ((src->mlp_only_layers && !dst->mlp_only_layers) || (src->layer_types && !dst->layer_types) ||
        (src->layer_attn && !dst->layer_attn)) {
        ae_config_free(dst);
        return AE_ERR_NOMEM;
    }
    return AE_OK;
}

int ae_config_layer_is_moe(const ae_config *cfg, int l) {
    if (cfg->arch != AE_ARCH_QWEN3_MOE || cfg->num_experts <= 0) return 0;
    for (int i = 0; i < cfg->n_mlp_only_layers; i++)
        if (cfg->mlp_only_layers[i] == l) return 0;
    return (l + 1) % cfg->decoder_sparse_step == 0;
}

int64_t ae_config_param_count(const ae_config *cfg) {
    int64_t H = cfg->hidden_size, V = cfg->vocab_size;
    int64_t dense_mlp = 3 * H * (int64_t)cfg->intermediate_size;
    int64_t moe_mlp = (int64_t)cfg->num_experts * H                                 // router
                      + (int64_t)cfg->num_experts * 3 * H * cfg->moe_intermediate_size; // experts
    int64_t total = V * H; // embed_tokens
    for (int l = 0; l < cfg->num_hidden_layers; l++)
        total += ae_config_attn_params(cfg, l) + 2 * H +
                 (ae_config_layer_is_moe(cfg, l) ? moe_mlp : dense_mlp);
    total += H; // final norm
    if (!cfg->tie_word_embeddings) total += V * H; // lm_head
    return total;
}

int64_t ae_config_kv_bytes(const ae_config *cfg, int64_t ctx) {
    if (ctx < 0) ctx = 0;
    int64_t total = 0;
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        int64_t t = ctx;
        int mla = cfg->layer_attn && cfg->layer_attn[l] == AE_ATTN_MLA; // MLA never slides
        if (!mla && cfg->layer_types && cfg->layer_types[l] == AE_LAYER_SLIDING &&
            cfg->sliding_window > 0 && cfg->sliding_window < t)
            t = cfg->sliding_window;
        total += 2 * ae_config_kv_values(cfg, l) * t; // bf16
    }
    return total;
}
