// config.json of the engine folders (docs/EXPORT.md has the field-by-field rationale).
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "export/export_internal.h"

const char *ae_export_torch_dtype(ae_dtype dt) {
    return dt == AE_DT_BF16 ? "bfloat16" : dt == AE_DT_F16 ? "float16" : "float32";
}

static void set_item(cJSON *o, const char *key, cJSON *v) {
    if (cJSON_GetObjectItemCaseSensitive(o, key)) cJSON_ReplaceItemInObjectCaseSensitive(o, key, v);
    else cJSON_AddItemToObject(o, key, v);
}

static void set_num(cJSON *o, const char *key, double v) { set_item(o, key, cJSON_CreateNumber(v)); }

static void set_str(cJSON *o, const char *key, const char *v) {
    set_item(o, key, cJSON_CreateString(v));
}

static cJSON *str_array(const char *s) {
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, cJSON_CreateString(s));
    return a;
}

static ae_status parse_src(const char *src_json, const char *origin, cJSON **out) {
    *out = cJSON_Parse(src_json);
    if (!*out || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        return ae_errorf(AE_ERR_FORMAT, "%s: not a JSON object", origin);
    }
    return AE_OK;
}

static ae_status finish(cJSON *o, char **out) {
    *out = cJSON_Print(o);
    cJSON_Delete(o);
    return *out ? AE_OK : AE_ERR_NOMEM;
}

static void set_dtype(cJSON *o, ae_dtype dt) {
    set_str(o, "dtype", ae_export_torch_dtype(dt));        // transformers >= 4.56
    set_str(o, "torch_dtype", ae_export_torch_dtype(dt));  // older readers (vLLM on 4.x)
}

// A DeepSeek-V3 config with every layer dense. Field choices:
//  - first_k_dense_replace = num_hidden_layers: transformers builds DeepseekV3MoE for layer
//    l >= first_k_dense_replace, vLLM/SGLang likewise; so no layer is MoE.
//  - n_routed_experts 1, n_shared_experts 1, num_experts_per_tok 1, n_group 1, topk_group 1,
//    moe_layer_freq 1, moe_intermediate_size = intermediate_size, norm_topk_prob true:
//    integers, since vLLM does arithmetic on them (expert weight mapping) even without MoE
//    layers and transformers' config types them int; unused otherwise.
//  - routed_scaling_factor 1.0: vLLM's fp16 path divides the residual stream by it (a no-op
//    at 1, exact); num_nextn_predict_layers 0: no multi-token-prediction layer.
//  - num_key_value_heads = num_attention_heads (MLA expands K/V per head), no head_dim (DeepSeek
//    sets it to qk_rope_head_dim itself), tie_word_embeddings false with an explicit
//    lm_head.weight (vLLM's DeepseekV2ForCausalLM never ties the head).
//
// An MLA student of a Qwen3-MoE teacher (some layer MoE) is written as DeepSeek-V2 instead,
// whose router is Qwen3-MoE's: a softmax over all experts (scoring_func "softmax"), the top k
// (topk_method "greedy", one expert group: n_group = topk_group = 1), renormalised when
// norm_topk_prob (the teacher's; vLLM and SGLang read it, transformers' DeepseekV2 does not: the
// shipped remote code does), times routed_scaling_factor 1.0; n_shared_experts 0 (transformers
// types it int; its zero-width shared MLP adds exactly 0; SGLang needs an int too), null for
// vLLM (ae_export_engine: vLLM builds a shared MLP for any integer and then misses its weights);
// first_k_dense_replace = the number of
// leading dense layers (mlp_only_layers 0..k-1), which use intermediate_size like Qwen3-MoE's.
ae_status ae_export_config_deepseek(const ae_model *m, const char *src_json, const char *origin,
                                    ae_dtype dt, ae_export_engine engine, char **out) {
    const ae_config *c = &m->cfg;
    int lead = c->arch == AE_ARCH_QWEN3_MOE ? ae_export_moe_dense_lead(c, NULL) : c->num_hidden_layers;
    if (lead < 0)
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: a dense layer follows a MoE layer", origin);
    int moe = lead < c->num_hidden_layers;
    cJSON *src;
    AE_TRY(parse_src(src_json, origin, &src));
    cJSON *o = cJSON_CreateObject();
    set_item(o, "architectures", str_array(moe ? "DeepseekV2ForCausalLM" : "DeepseekV3ForCausalLM"));
    set_str(o, "model_type", moe ? "deepseek_v2" : "deepseek_v3");
    if (moe && c->norm_topk_prob) {
        cJSON *map = cJSON_CreateObject();
        cJSON_AddStringToObject(map, "AutoModelForCausalLM",
                                "modeling_attnedit_deepseek_v2.AttneditDeepseekV2ForCausalLM");
        set_item(o, "auto_map", map);
    }
    set_num(o, "vocab_size", c->vocab_size);
    set_num(o, "hidden_size", c->hidden_size);
    set_num(o, "intermediate_size", c->intermediate_size);
    set_num(o, "num_hidden_layers", c->num_hidden_layers);
    set_num(o, "num_attention_heads", c->num_attention_heads);
    set_num(o, "num_key_value_heads", c->num_attention_heads);
    set_item(o, "q_lora_rank", c->q_lora_rank ? cJSON_CreateNumber(c->q_lora_rank) : cJSON_CreateNull());
    set_num(o, "kv_lora_rank", c->kv_lora_rank);
    set_num(o, "qk_nope_head_dim", c->qk_nope_head_dim);
    set_num(o, "qk_rope_head_dim", c->qk_rope_head_dim);
    set_num(o, "v_head_dim", c->v_head_dim);
    set_item(o, "rope_interleave", cJSON_CreateTrue());
    set_num(o, "first_k_dense_replace", lead);
    set_num(o, "moe_layer_freq", 1);
    set_num(o, "n_routed_experts", moe ? c->num_experts : 1);
    if (moe && engine == AE_EXPORT_FOR_VLLM) set_item(o, "n_shared_experts", cJSON_CreateNull());
    else set_num(o, "n_shared_experts", moe ? 0 : 1);
    set_num(o, "num_experts_per_tok", moe ? c->num_experts_per_tok : 1);
    set_num(o, "moe_intermediate_size", moe ? c->moe_intermediate_size : c->intermediate_size);
    set_num(o, "n_group", 1);
    set_num(o, "topk_group", 1);
    if (moe) {
        set_str(o, "topk_method", "greedy");
        set_str(o, "scoring_func", "softmax");
    }
    set_item(o, "norm_topk_prob", cJSON_CreateBool(moe ? c->norm_topk_prob : 1));
    set_item(o, "routed_scaling_factor", cJSON_CreateRaw("1.0"));
    set_num(o, "num_nextn_predict_layers", 0);
    set_str(o, "hidden_act", "silu");
    set_num(o, "max_position_embeddings", c->max_position_embeddings);
    set_num(o, "initializer_range", c->initializer_range);
    set_num(o, "rms_norm_eps", c->rms_norm_eps);
    set_num(o, "rope_theta", c->rope_theta);
    cJSON *rope = cJSON_CreateObject();
    cJSON_AddStringToObject(rope, "rope_type", "default");
    cJSON_AddNumberToObject(rope, "rope_theta", c->rope_theta);
    set_item(o, "rope_parameters", rope);
    set_item(o, "attention_bias", cJSON_CreateFalse());
    set_item(o, "attention_dropout", cJSON_CreateRaw("0.0"));
    set_item(o, "tie_word_embeddings", cJSON_CreateFalse());
    set_item(o, "use_cache", cJSON_CreateTrue());
    static const char *const ids[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(src, ids[i]);
        set_item(o, ids[i], v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
    }
    set_dtype(o, dt);
    set_str(o, "attnedit_base_architecture", c->base_architecture);
    cJSON_Delete(src);
    return finish(o, out);
}

// The student's config.json (every teacher field kept) as a remote-code Qwen3 model.
ae_status ae_export_config_gateswa(const ae_model *m, const char *src_json, const char *origin,
                                   ae_dtype dt, char **out) {
    static const char *const gates[] = {"none", "elementwise", "head"};
    const ae_config *c = &m->cfg;
    cJSON *o;
    AE_TRY(parse_src(src_json, origin, &o));
    set_item(o, "architectures", str_array("AttneditGateSWAForCausalLM"));
    set_str(o, "model_type", "attnedit_gateswa");
    cJSON *map = cJSON_CreateObject();
    cJSON_AddStringToObject(map, "AutoConfig", "configuration_attnedit_gateswa.AttneditGateSWAConfig");
    cJSON_AddStringToObject(map, "AutoModelForCausalLM",
                            "modeling_attnedit_gateswa.AttneditGateSWAForCausalLM");
    set_item(o, "auto_map", map);
    set_str(o, "attnedit_base_architecture", c->base_architecture);
    set_str(o, "attention_target", "gateswa");
    cJSON *layers = cJSON_CreateArray();
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (c->layer_attn[l] == AE_ATTN_GATESWA) cJSON_AddItemToArray(layers, cJSON_CreateNumber(l));
    set_item(o, "attention_replaced_layers", layers);
    set_str(o, "attn_output_gate", gates[c->attn_gate]);
    set_item(o, "attn_sinks", cJSON_CreateBool(c->attn_sinks));
    // The window pattern in the standard Qwen3 fields: layer_types decides which layers slide
    // (transformers >= 4.53; max_window_layers is then unused), sliding_window = W makes a
    // query at p see keys p-W+1..p, exactly attnedit's window.
    int any = 0;
    cJSON *types = cJSON_CreateArray();
    for (int l = 0; l < c->num_hidden_layers; l++) {
        int sl = c->layer_types[l] == AE_LAYER_SLIDING;
        any |= sl;
        cJSON_AddItemToArray(types, cJSON_CreateString(sl ? "sliding_attention" : "full_attention"));
    }
    set_item(o, "layer_types", types);
    set_item(o, "use_sliding_window", cJSON_CreateBool(any));
    set_item(o, "sliding_window", any ? cJSON_CreateNumber(c->sliding_window) : cJSON_CreateNull());
    set_dtype(o, dt);
    return finish(o, out);
}
