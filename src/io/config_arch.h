// Internal: which model a config.json describes (architectures[0] / model_type): a Qwen3 or
// Qwen3-MoE teacher (or old-style student), an attnedit student folder, or an exported one
// (AttneditGateSWAForCausalLM, all-dense DeepseekV3ForCausalLM, DeepseekV2ForCausalLM with
// Qwen3-MoE's routing). See io/config.h.
#ifndef AE_IO_CONFIG_ARCH_H
#define AE_IO_CONFIG_ARCH_H

#include "io/config.h"
#include "io/config_json.h"

// Sets cfg->arch, architecture, base_architecture and folder.
ae_status ae_config_parse_arch(const ae_cfgctx *c, ae_config *cfg);
// 1 for the exported MLA folders (DeepseekV3ForCausalLM, DeepseekV2ForCausalLM).
int ae_config_is_deepseek(const ae_config *cfg);
// DeepseekV3/V2ForCausalLM: the fields whose defaults are DeepSeek's are present (V2: also
// n_routed_experts, num_experts_per_tok, moe_intermediate_size, n_shared_experts),
// num_key_value_heads == num_attention_heads, V3: every layer dense (first_k_dense_replace >=
// num_hidden_layers). Called once the dims are parsed.
ae_status ae_config_check_deepseek(const ae_cfgctx *c, const ae_config *cfg);
// DeepseekV2ForCausalLM: the MoE fields (cfg->num_experts, num_experts_per_tok,
// moe_intermediate_size, norm_topk_prob, mlp_only_layers = 0 .. first_k_dense_replace-1).
// Routing Qwen3-MoE does not compute is AE_ERR_UNSUPPORTED naming the field: n_shared_experts
// != 0, scoring_func other than "softmax", topk_method other than "greedy", group-limited
// n_group/topk_group, routed_scaling_factor != 1, moe_layer_freq != 1, auto_map naming remote
// code other than the router attnedit export ships.
ae_status ae_config_parse_deepseek_moe(const ae_cfgctx *c, ae_config *cfg);

#endif
