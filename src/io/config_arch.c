// architectures[0] / model_type of config.json: the model family and the kind of folder.
#include "io/config_arch.h"

#include <stdio.h>
#include <string.h>

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
                         "DeepseekV3ForCausalLM)",
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
        for (size_t i = 0; mt && i < N_ARCHS; i++)
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
    return parse_base(c, name, cfg);
}

// transformers' DeepseekV3Config defaults differ from Qwen3's for these: an exported folder
// states them all (q_lora_rank may be null: plain q_proj).
ae_status ae_config_check_deepseek(const ae_cfgctx *c, const ae_config *cfg) {
    static const char *const need[] = {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "max_position_embeddings", "q_lora_rank", "kv_lora_rank",
        "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "first_k_dense_replace"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (strcmp(need[i], "q_lora_rank") == 0 ? !cJSON_GetObjectItemCaseSensitive(c->root, need[i])
                                                : !ae_cfg_field(c, need[i]))
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field \"%s\" is required in a DeepseekV3ForCausalLM config "
                             "(transformers' default is DeepSeek-V3's own)",
                             c->origin, need[i]);
    int dense;
    AE_TRY(ae_cfg_get_int(c, "first_k_dense_replace", 0, &dense));
    if (dense < cfg->num_hidden_layers)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"first_k_dense_replace\" = %d < num_hidden_layers %d: layers "
                         "%d.. are DeepSeek MoE layers; attnedit reads only all-dense "
                         "DeepseekV3ForCausalLM folders (MLA students of dense Qwen3 models, as "
                         "attnedit export writes them)",
                         c->origin, dense, cfg->num_hidden_layers, dense);
    if (cfg->num_key_value_heads != cfg->num_attention_heads)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"num_key_value_heads\" (%d) must equal num_attention_heads "
                         "(%d) in a DeepseekV3ForCausalLM config",
                         c->origin, cfg->num_key_value_heads, cfg->num_attention_heads);
    return AE_OK;
}

