// Student fields of config.json (documented in docs/TARGETS.md):
//   "attention_target": "mla" | "gateswa"
//   "attention_replaced_layers": [0, 1, ...]       (absent: every layer)
//   MLA (DeepSeek-V3 names): "q_lora_rank" (null or 0: plain q_proj), "kv_lora_rank",
//     "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "rope_interleave" (true)
//   GateSWA: "attn_output_gate": "elementwise" | "head" | "none", "attn_sinks": bool, and the
//     window pattern in the standard "layer_types" / "sliding_window" / "use_sliding_window".
// A DeepseekV3ForCausalLM or DeepseekV2ForCausalLM folder (exported MLA student) is MLA on every
// layer, with the same MLA field names; an AttneditGateSWAForCausalLM folder is a GateSWA student.
#include "io/config_student.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "io/config_arch.h"

const char *ae_attn_kind_name(ae_attn_kind k) {
    switch (k) {
    case AE_ATTN_GQA: return "gqa";
    case AE_ATTN_MLA: return "mla";
    case AE_ATTN_GATESWA: return "gateswa";
    }
    return "?";
}

static ae_status parse_replaced(const ae_cfgctx *c, ae_config *cfg) {
    int L = cfg->num_hidden_layers;
    const cJSON *rl = ae_cfg_field(c, "attention_replaced_layers");
    if (!rl) {
        for (int l = 0; l < L; l++) cfg->layer_attn[l] = cfg->target;
        return AE_OK;
    }
    if (!cJSON_IsArray(rl) || cJSON_GetArraySize(rl) == 0)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"attention_replaced_layers\": expected a non-empty array of "
                         "layer indices, got %s",
                         c->origin, ae_cfg_jtype(rl));
    const cJSON *e;
    cJSON_ArrayForEach(e, rl) {
        int l;
        AE_TRY(ae_cfg_num_to_int(c, "attention_replaced_layers[]", e, &l));
        if (l < 0 || l >= L)
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field \"attention_replaced_layers\": layer %d is out of range "
                             "[0, %d)",
                             c->origin, l, L);
        if (cfg->layer_attn[l] != AE_ATTN_GQA)
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field \"attention_replaced_layers\": layer %d listed twice",
                             c->origin, l);
        cfg->layer_attn[l] = cfg->target;
    }
    return AE_OK;
}

static ae_status need_int(const ae_cfgctx *c, const char *key, int min, int *out) {
    const cJSON *v = ae_cfg_field(c, key);
    if (!v)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\" is required for attention_target \"%s\"",
                         c->origin, key, ae_attn_kind_name(AE_ATTN_MLA));
    AE_TRY(ae_cfg_num_to_int(c, key, v, out));
    if (*out < min)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": must be >= %d, got %d", c->origin, key,
                         min, *out);
    return AE_OK;
}

static ae_status parse_mla(const ae_cfgctx *c, ae_config *cfg) {
    AE_TRY(ae_cfg_get_int(c, "q_lora_rank", 0, &cfg->q_lora_rank));
    if (cfg->q_lora_rank < 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"q_lora_rank\": must be >= 0, got %d",
                         c->origin, cfg->q_lora_rank);
    AE_TRY(need_int(c, "kv_lora_rank", 1, &cfg->kv_lora_rank));
    AE_TRY(need_int(c, "qk_nope_head_dim", 0, &cfg->qk_nope_head_dim));
    AE_TRY(need_int(c, "qk_rope_head_dim", 2, &cfg->qk_rope_head_dim));
    AE_TRY(need_int(c, "v_head_dim", 1, &cfg->v_head_dim));
    if (cfg->qk_rope_head_dim % 2 != 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"qk_rope_head_dim\": must be even, got %d",
                         c->origin, cfg->qk_rope_head_dim);
    int interleave;
    AE_TRY(ae_cfg_get_bool(c, "rope_interleave", 1, &interleave));
    if (!interleave)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"rope_interleave\" = false: only DeepSeek's interleaved RoPE "
                         "is implemented for MLA",
                         c->origin);
    return AE_OK;
}

static ae_status parse_gateswa(const ae_cfgctx *c, ae_config *cfg) {
    const cJSON *g = ae_cfg_field(c, "attn_output_gate");
    if (!g || !cJSON_IsString(g))
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"attn_output_gate\" is required for attention_target "
                         "\"gateswa\" (\"elementwise\", \"head\" or \"none\")",
                         c->origin);
    if (!strcmp(g->valuestring, "elementwise")) cfg->attn_gate = 1;
    else if (!strcmp(g->valuestring, "head")) cfg->attn_gate = 2;
    else if (!strcmp(g->valuestring, "none")) cfg->attn_gate = 0;
    else
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"attn_output_gate\": expected \"elementwise\", \"head\" or "
                         "\"none\", got \"%.40s\"",
                         c->origin, g->valuestring);
    return ae_cfg_get_bool(c, "attn_sinks", 0, &cfg->attn_sinks);
}

// DeepseekV3ForCausalLM (all dense, checked in config.c) or DeepseekV2ForCausalLM: every layer MLA with the file's
// DeepSeek fields; head_dim is DeepSeek's q/k head dim (no layer uses the Qwen3 one).
static ae_status parse_deepseek(const ae_cfgctx *c, const cJSON *t, ae_config *cfg) {
    if (t && (!cJSON_IsString(t) || strcmp(t->valuestring, "mla") != 0))
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"attention_target\": a %s folder is an MLA model (\"mla\"), "
                         "got %s%.40s%s",
                         c->origin, cfg->architecture, cJSON_IsString(t) ? "\"" : ae_cfg_jtype(t),
                         cJSON_IsString(t) ? t->valuestring : "", cJSON_IsString(t) ? "\"" : "");
    cfg->target = AE_ATTN_MLA;
    AE_TRY(parse_mla(c, cfg));
    cfg->head_dim = cfg->qk_nope_head_dim + cfg->qk_rope_head_dim;
    for (int l = 0; l < cfg->num_hidden_layers; l++) cfg->layer_attn[l] = AE_ATTN_MLA;
    return AE_OK;
}

ae_status ae_config_parse_student(const ae_cfgctx *c, ae_config *cfg) {
    cfg->layer_attn = ae_calloc((size_t)cfg->num_hidden_layers, sizeof *cfg->layer_attn);
    if (!cfg->layer_attn) return AE_ERR_NOMEM;
    cfg->target = AE_ATTN_GQA;
    const cJSON *t = ae_cfg_field(c, "attention_target");
    if (ae_config_is_deepseek(cfg)) return parse_deepseek(c, t, cfg);
    if (!t && cfg->folder == AE_FOLDER_STUDENT)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"attention_target\" is required with architectures[0] "
                         "AttneditStudentForCausalLM (\"mla\" or \"gateswa\")",
                         c->origin);
    if (!t && cfg->folder != AE_FOLDER_GATESWA_HF) return AE_OK; // a teacher
    if (t && !cJSON_IsString(t))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"attention_target\": expected a string, got %s",
                         c->origin, ae_cfg_jtype(t));
    const char *name = t ? t->valuestring : "gateswa";
    if (cfg->folder == AE_FOLDER_GATESWA_HF && strcmp(name, "gateswa") != 0)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field \"attention_target\" = \"%.40s\" contradicts architectures[0] "
                         "AttneditGateSWAForCausalLM (\"gateswa\")",
                         c->origin, name);
    if (!strcmp(name, "mla")) {
        cfg->target = AE_ATTN_MLA;
        AE_TRY(parse_mla(c, cfg));
    } else if (!strcmp(name, "gateswa")) {
        cfg->target = AE_ATTN_GATESWA;
        AE_TRY(parse_gateswa(c, cfg));
    } else {
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field \"attention_target\": \"%.40s\" is not a known target (mla, "
                         "gateswa)",
                         c->origin, name);
    }
    return parse_replaced(c, cfg);
}

int64_t ae_config_kv_values(const ae_config *cfg, int l) {
    if (cfg->layer_attn && cfg->layer_attn[l] == AE_ATTN_MLA)
        return (int64_t)cfg->kv_lora_rank + cfg->qk_rope_head_dim;
    return 2 * (int64_t)cfg->num_key_value_heads * cfg->head_dim;
}

int64_t ae_config_attn_params(const ae_config *cfg, int l) {
    int64_t D = cfg->hidden_size, hd = cfg->head_dim;
    int64_t nq = cfg->num_attention_heads, nkv = cfg->num_key_value_heads;
    ae_attn_kind k = cfg->layer_attn ? cfg->layer_attn[l] : AE_ATTN_GQA;
    if (k == AE_ATTN_MLA) {
        int64_t dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim, dv = cfg->v_head_dim;
        int64_t R = cfg->kv_lora_rank, Rq = cfg->q_lora_rank;
        int64_t q = Rq == 0 ? nq * (dn + dr) * D : Rq * D + Rq + nq * (dn + dr) * Rq;
        return q + (R + dr) * D + R + nq * (dn + dv) * R + D * nq * dv;
    }
    int64_t gqa = D * nq * hd + 2 * D * nkv * hd + nq * hd * D + 2 * hd; // q,k,v,o, q/k norms
    if (k == AE_ATTN_GATESWA) {
        if (cfg->attn_gate == 1) gqa += nq * hd * D;
        if (cfg->attn_gate == 2) gqa += nq * D;
        if (cfg->attn_sinks) gqa += nq;
    }
    return gqa;
}
