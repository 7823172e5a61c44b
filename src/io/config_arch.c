// architectures[0] / model_type of config.json: the model family and the kind of folder.
#include "io/config_arch.h"

#include <stdio.h>
#include <string.h>

#include "core/mem.h"

// architectures[0] -> model_type, and the kind of folder it names.
typedef struct {
    const char *arch, *model_type;
    ae_folder_kind folder;
} arch_name;

static const arch_name k_archs[] = {
    {"Qwen3ForCausalLM", "qwen3", AE_FOLDER_QWEN3},
    {"Qwen3MoeForCausalLM", "qwen3_moe", AE_FOLDER_QWEN3},
    {"AttneditStudentForCausalLM", "attnedit_student", AE_FOLDER_STUDENT},
    {"AttneditGateSWAForCausalLM", "attnedit_gateswa", AE_FOLDER_GATESWA_HF},
    {"DeepseekV3ForCausalLM", "deepseek_v3", AE_FOLDER_DEEPSEEK_V3},
    {"DeepseekV2ForCausalLM", "deepseek_v2", AE_FOLDER_DEEPSEEK_V2},
    // what transformers' save_pretrained writes for a DeepSeek-V2 export loaded with the shipped
    // router (trust_remote_code): the same folder
    {"AttneditDeepseekV2ForCausalLM", "deepseek_v2", AE_FOLDER_DEEPSEEK_V2},
};
#define N_ARCHS (sizeof k_archs / sizeof k_archs[0])

static ae_status set_base(const ae_cfgctx *c, const char *base, const char *field, ae_config *cfg) {
    if (strcmp(base, "Qwen3ForCausalLM") == 0) cfg->arch = AE_ARCH_QWEN3;
    else if (strcmp(base, "Qwen3MoeForCausalLM") == 0) cfg->arch = AE_ARCH_QWEN3_MOE;
    else if (field)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"%s\" = \"%.100s\": only Qwen3ForCausalLM and "
                         "Qwen3MoeForCausalLM are supported",
                         c->origin, field, base);
    else
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"architectures[0]\" = \"%.100s\": only Qwen3ForCausalLM and "
                         "Qwen3MoeForCausalLM are supported (and the student folders attnedit "
                         "writes: AttneditStudentForCausalLM, AttneditGateSWAForCausalLM, "
                         "DeepseekV3ForCausalLM, DeepseekV2ForCausalLM)",
                         c->origin, base);
    snprintf(cfg->base_architecture, sizeof cfg->base_architecture, "%s", base);
    return AE_OK;
}

// The Qwen3 model an attnedit student folder was converted from: "attnedit_base_architecture"
// (required in AttneditStudentForCausalLM folders; AttneditGateSWAForCausalLM defaults to the
// dense Qwen3ForCausalLM its Python code subclasses).
static ae_status parse_base(const ae_cfgctx *c, const char *name, ae_config *cfg) {
    const cJSON *b = ae_cfg_field(c, "attnedit_base_architecture");
    if (b && !cJSON_IsString(b))
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"attnedit_base_architecture\": expected a string, got %s",
                         c->origin, ae_cfg_jtype(b));
    if (!b && cfg->folder == AE_FOLDER_STUDENT)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"attnedit_base_architecture\" is required with "
                         "architectures[0] %s (the teacher's architecture, e.g. "
                         "\"Qwen3ForCausalLM\")",
                         c->origin, name);
    return set_base(c, b ? b->valuestring : "Qwen3ForCausalLM", "attnedit_base_architecture", cfg);
}

ae_status ae_config_parse_arch(const ae_cfgctx *c, ae_config *cfg) {
    const cJSON *a = ae_cfg_field(c, "architectures");
    const cJSON *mt = ae_cfg_field(c, "model_type");
    if (mt && !cJSON_IsString(mt))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"model_type\": expected a string, got %s",
                         c->origin, ae_cfg_jtype(mt));
    const char *name = NULL;
    if (a) {
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1)
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field \"architectures\": expected a non-empty array of strings",
                             c->origin);
        const cJSON *a0 = cJSON_GetArrayItem(a, 0);
        if (!cJSON_IsString(a0))
            return ae_errorf(AE_ERR_FORMAT, "%s: field \"architectures[0]\": expected a string, "
                             "got %s", c->origin, ae_cfg_jtype(a0));
        name = a0->valuestring;
    } else {
        for (size_t i = 0; mt && !name && i < N_ARCHS; i++) // the first: DeepseekV2ForCausalLM
            if (strcmp(mt->valuestring, k_archs[i].model_type) == 0) name = k_archs[i].arch;
        if (!name) return ae_errorf(AE_ERR_FORMAT, "%s: field \"architectures\" is missing", c->origin);
    }
    const arch_name *an = NULL;
    for (size_t i = 0; i < N_ARCHS; i++)
        if (strcmp(name, k_archs[i].arch) == 0) an = &k_archs[i];
    if (!an) return set_base(c, name, NULL, cfg);
    if (mt && strcmp(mt->valuestring, an->model_type) != 0)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"model_type\" = \"%.100s\" does not match architectures[0] "
                         "%s (expected \"%s\")",
                         c->origin, mt->valuestring, name, an->model_type);
    cfg->folder = an->folder;
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", name);
    if (an->folder == AE_FOLDER_QWEN3) return set_base(c, name, NULL, cfg);
    if (an->folder == AE_FOLDER_DEEPSEEK_V3) return set_base(c, "Qwen3ForCausalLM", NULL, cfg);
    if (an->folder == AE_FOLDER_DEEPSEEK_V2) return set_base(c, "Qwen3MoeForCausalLM", NULL, cfg);
    return parse_base(c, name, cfg);
}

int ae_config_is_deepseek(const ae_config *cfg) {
    return cfg->folder == AE_FOLDER_DEEPSEEK_V3 || cfg->folder == AE_FOLDER_DEEPSEEK_V2;
}

// Each field present (q_lora_rank and n_shared_experts may be null: no q LoRA, no shared experts).
static ae_status need_fields(const ae_cfgctx *c, const ae_config *cfg, const char *const *keys,
                             size_t n) {
    for (size_t i = 0; i < n; i++) {
        int nullable = !strcmp(keys[i], "q_lora_rank") || !strcmp(keys[i], "n_shared_experts");
        if (nullable ? !cJSON_GetObjectItemCaseSensitive(c->root, keys[i]) : !ae_cfg_field(c, keys[i]))
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field \"%s\" is required in a %s config (transformers' default "
                             "is DeepSeek's own)",
                             c->origin, keys[i], cfg->architecture);
    }
    return AE_OK;
}

// transformers' DeepseekV3Config / DeepseekV2Config defaults differ from Qwen3's for these: an
// exported folder states them all (q_lora_rank may be null: plain q_proj). DeepSeek-V2 also
// needs its MoE sizes and n_shared_experts (transformers' default is 2 shared experts).
ae_status ae_config_check_deepseek(const ae_cfgctx *c, const ae_config *cfg) {
    static const char *const need[] = {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "max_position_embeddings", "q_lora_rank", "kv_lora_rank",
        "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "first_k_dense_replace"};
    static const char *const need_v2[] = {"n_routed_experts", "num_experts_per_tok",
                                          "moe_intermediate_size", "n_shared_experts"};
    int v2 = cfg->folder == AE_FOLDER_DEEPSEEK_V2;
    AE_TRY(need_fields(c, cfg, need, sizeof need / sizeof need[0]));
    if (v2) AE_TRY(need_fields(c, cfg, need_v2, sizeof need_v2 / sizeof need_v2[0]));
    int dense;
    AE_TRY(ae_cfg_get_int(c, "first_k_dense_replace", 0, &dense));
    if (dense < 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"first_k_dense_replace\": must be >= 0, got %d",
                         c->origin, dense);
    if (!v2 && dense < cfg->num_hidden_layers)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"first_k_dense_replace\" = %d < num_hidden_layers %d: layers "
                         "%d.. are DeepSeek-V3 MoE layers, whose router (sigmoid scores, expert "
                         "groups, a correction bias) is not Qwen3-MoE's; attnedit reads only "
                         "all-dense DeepseekV3ForCausalLM folders (MLA students of dense Qwen3 "
                         "models) and MLA students of Qwen3-MoE teachers as "
                         "DeepseekV2ForCausalLM, as attnedit export writes them",
                         c->origin, dense, cfg->num_hidden_layers, dense);
    if (cfg->num_key_value_heads != cfg->num_attention_heads)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"num_key_value_heads\" (%d) must equal num_attention_heads "
                         "(%d) in a %s config",
                         c->origin, cfg->num_key_value_heads, cfg->num_attention_heads,
                         cfg->architecture);
    return AE_OK;
}

// ---- DeepseekV2ForCausalLM: the routing Qwen3-MoE computes, nothing else

static ae_status refuse_routing(const ae_cfgctx *c, const char *field, const char *value,
                                const char *why) {
    return ae_errorf(AE_ERR_UNSUPPORTED,
                     "%s: field \"%s\" = %s: %s; attnedit runs DeepseekV2ForCausalLM folders only "
                     "with Qwen3-MoE's routing (scoring_func \"softmax\", topk_method \"greedy\" "
                     "over all experts, n_shared_experts 0, routed_scaling_factor 1, "
                     "moe_layer_freq 1), as attnedit export writes them",
                     c->origin, field, value, why);
}

// A string field that must be absent, null or `want`.
static ae_status need_str(const ae_cfgctx *c, const char *key, const char *want, const char *why) {
    const cJSON *v = ae_cfg_field(c, key);
    if (!v) return AE_OK;
    if (!cJSON_IsString(v))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": expected a string, got %s", c->origin,
                         key, ae_cfg_jtype(v));
    if (strcmp(v->valuestring, want) == 0) return AE_OK;
    char q[96];
    snprintf(q, sizeof q, "\"%.80s\"", v->valuestring);
    return refuse_routing(c, key, q, why);
}

// An integer field that must be absent, null or `want`.
static ae_status need_int_value(const ae_cfgctx *c, const char *key, int want, const char *why) {
    int v;
    AE_TRY(ae_cfg_get_int(c, key, want, &v));
    if (v == want) return AE_OK;
    char s[32];
    snprintf(s, sizeof s, "%d", v);
    return refuse_routing(c, key, s, why);
}

// Expert groups route by group first (vLLM and DeepSeek's own code) unless every group is kept.
static ae_status check_groups(const ae_cfgctx *c) {
    int groups, keep;
    AE_TRY(ae_cfg_get_int(c, "n_group", 1, &groups));
    AE_TRY(ae_cfg_get_int(c, "topk_group", groups, &keep));
    if (groups > 1 && keep < groups) {
        char s[64];
        snprintf(s, sizeof s, "%d (n_group %d)", keep, groups);
        return refuse_routing(c, "topk_group", s,
                              "group-limited routing (experts chosen only in the best topk_group "
                              "of n_group groups)");
    }
    return AE_OK;
}

// auto_map may only name the router attnedit ships (modeling_attnedit_deepseek_v2.py): other
// remote code computes something attnedit does not know.
static ae_status check_auto_map(const ae_cfgctx *c) {
    static const char ours[] = "modeling_attnedit_deepseek_v2.AttneditDeepseekV2ForCausalLM";
    const cJSON *map = ae_cfg_field(c, "auto_map");
    if (!map) return AE_OK;
    if (!cJSON_IsObject(map))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"auto_map\": expected an object, got %s",
                         c->origin, ae_cfg_jtype(map));
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (cJSON_IsString(e) && strcmp(e->valuestring, ours) == 0) continue;
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"auto_map.%.40s\" = %s%.100s%s: remote code attnedit does not "
                         "know (it may compute something else); attnedit reads DeepseekV2ForCausalLM "
                         "folders with transformers' own code or with the router it ships (%s)",
                         c->origin, e->string, cJSON_IsString(e) ? "\"" : "",
                         cJSON_IsString(e) ? e->valuestring : ae_cfg_jtype(e),
                         cJSON_IsString(e) ? "\"" : "", ours);
    }
    return AE_OK;
}

ae_status ae_config_parse_deepseek_moe(const ae_cfgctx *c, ae_config *cfg) {
    AE_TRY(need_int_value(c, "n_shared_experts", 0, "shared experts (Qwen3-MoE has none)"));
    AE_TRY(need_str(c, "scoring_func", "softmax", "Qwen3-MoE scores experts with a softmax"));
    AE_TRY(need_str(c, "topk_method", "greedy",
                    "group-limited or bias-corrected expert choice (Qwen3-MoE takes the top k of "
                    "all experts)"));
    AE_TRY(check_groups(c));
    double scale;
    AE_TRY(ae_cfg_get_double(c, ae_cfg_field(c, "routed_scaling_factor"), "routed_scaling_factor",
                             1.0, &scale));
    if (scale != 1.0) {
        char s[32];
        snprintf(s, sizeof s, "%g", scale);
        AE_TRY(refuse_routing(c, "routed_scaling_factor", s, "scaled expert weights"));
    }
    AE_TRY(need_int_value(c, "moe_layer_freq", 1,
                          "dense layers between MoE layers (transformers' DeepseekV2 ignores the "
                          "field, DeepSeek's own code does not)"));
    AE_TRY(check_auto_map(c));
    AE_TRY(ae_cfg_get_int(c, "n_routed_experts", 0, &cfg->num_experts));
    AE_TRY(ae_cfg_get_int(c, "num_experts_per_tok", 0, &cfg->num_experts_per_tok));
    AE_TRY(ae_cfg_get_int(c, "moe_intermediate_size", 0, &cfg->moe_intermediate_size));
    AE_TRY(ae_cfg_need_positive(c, "n_routed_experts", cfg->num_experts));
    AE_TRY(ae_cfg_need_positive(c, "num_experts_per_tok", cfg->num_experts_per_tok));
    AE_TRY(ae_cfg_need_positive(c, "moe_intermediate_size", cfg->moe_intermediate_size));
    if (cfg->num_experts_per_tok > cfg->num_experts)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"num_experts_per_tok\" (%d) exceeds n_routed_experts (%d)",
                         c->origin, cfg->num_experts_per_tok, cfg->num_experts);
    // norm_topk_prob as DeepSeek's code, vLLM, SGLang and the shipped router read it (stock
    // transformers' DeepseekV2 never renormalises; export ships the router whenever it is true).
    AE_TRY(ae_cfg_get_bool(c, "norm_topk_prob", 0, &cfg->norm_topk_prob));
    cfg->decoder_sparse_step = 1;
    // layers 0 .. first_k_dense_replace-1 dense (width intermediate_size), the rest MoE
    int dense;
    AE_TRY(ae_cfg_get_int(c, "first_k_dense_replace", 0, &dense));
    if (dense > cfg->num_hidden_layers) dense = cfg->num_hidden_layers;
    cfg->mlp_only_layers = ae_calloc((size_t)(dense ? dense : 1), sizeof(int));
    if (!cfg->mlp_only_layers) return AE_ERR_NOMEM;
    for (int l = 0; l < dense; l++) cfg->mlp_only_layers[l] = l;
    cfg->n_mlp_only_layers = dense;
    return AE_OK;
}
