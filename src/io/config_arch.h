// Internal: which model a config.json describes (architectures[0] / model_type): a Qwen3 or
// Qwen3-MoE teacher (or old-style student), an attnedit student folder, or an exported one
// (AttneditGateSWAForCausalLM, all-dense DeepseekV3ForCausalLM). See io/config.h.
#ifndef AE_IO_CONFIG_ARCH_H
#define AE_IO_CONFIG_ARCH_H

#include "io/config.h"
#include "io/config_json.h"

// Sets cfg->arch, architecture, base_architecture and folder.
ae_status ae_config_parse_arch(const ae_cfgctx *c, ae_config *cfg);
// DeepseekV3ForCausalLM only: the fields whose defaults are DeepSeek's are present, every layer
// is dense (first_k_dense_replace >= num_hidden_layers), num_key_value_heads ==
// num_attention_heads. Called once the dims are parsed.
ae_status ae_config_check_deepseek(const ae_cfgctx *c, const ae_config *cfg);

#endif
