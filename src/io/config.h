// config.json of Qwen3ForCausalLM / Qwen3MoeForCausalLM: every field that changes the math.
// Accepts both vintages real checkpoints use (rope_theta | rope_parameters.rope_theta,
// num_experts | num_local_experts, head_dim present | derived). Anything we cannot compute
// faithfully is AE_ERR_UNSUPPORTED with the field named.
// Also the folders attnedit writes for students (docs/TARGETS.md, docs/EXPORT.md):
//   AttneditStudentForCausalLM / "attnedit_student"  convert's students ("attention_target" and
//       "attnedit_base_architecture" required); older students say Qwen3ForCausalLM + target
//   AttneditGateSWAForCausalLM / "attnedit_gateswa"  export --format hf of a GateSWA student
//   DeepseekV3ForCausalLM / "deepseek_v3"            export --format hf of an MLA student: only
//       every layer dense (first_k_dense_replace >= num_hidden_layers), read as an MLA student
//       of a dense Qwen3
//   DeepseekV2ForCausalLM / "deepseek_v2"            export --format hf of an MLA student of a
//       Qwen3-MoE teacher: read as one (leading dense layers = first_k_dense_replace); only
//       Qwen3-MoE's routing (softmax, greedy top-k, no shared experts, scale 1)
#ifndef AE_IO_CONFIG_H
#define AE_IO_CONFIG_H

#include <stdint.h>

#include "core/error.h"

#define AE_MAX_LAYERS 1024
// Largest sizes config.json may give (far above any released model). They bound every size
// computed from a config (parameter counts, tensor and cache bytes) inside int64, whatever the
// file says; a larger value is refused naming the field.
#define AE_MAX_WIDTH (1 << 20)   // hidden_size, intermediate sizes, kv/q lora ranks
#define AE_MAX_VOCAB (1 << 24)   // vocab_size
#define AE_MAX_HEADS (1 << 12)   // attention / key-value heads
#define AE_MAX_HEAD_DIM (1 << 12) // head_dim and the MLA head dims
#define AE_MAX_EXPERTS 1024      // num_experts
#define AE_MAX_POSITIONS (1 << 30) // max_position_embeddings, sliding_window

typedef enum { AE_ARCH_QWEN3 = 0, AE_ARCH_QWEN3_MOE = 1 } ae_arch;
typedef enum { AE_LAYER_FULL = 0, AE_LAYER_SLIDING = 1 } ae_layer_attn;
// Which attention module a layer runs: the teacher's GQA or one of the two targets.
typedef enum { AE_ATTN_GQA = 0, AE_ATTN_MLA = 1, AE_ATTN_GATESWA = 2 } ae_attn_kind;
// What config.json's architectures[0] says the folder is.
typedef enum {
    AE_FOLDER_QWEN3 = 0,       // Qwen3ForCausalLM / Qwen3MoeForCausalLM (teacher, or old student)
    AE_FOLDER_STUDENT = 1,     // AttneditStudentForCausalLM
    AE_FOLDER_GATESWA_HF = 2,  // AttneditGateSWAForCausalLM (exported GateSWA student)
    AE_FOLDER_DEEPSEEK_V3 = 3, // DeepseekV3ForCausalLM, all layers dense (exported MLA student)
    AE_FOLDER_DEEPSEEK_V2 = 4, // DeepseekV2ForCausalLM (exported MLA student of a Qwen3-MoE)
} ae_folder_kind;

typedef struct {
    ae_arch arch;
    char architecture[64];       // architectures[0] as written, e.g. "Qwen3ForCausalLM"
    char base_architecture[64];  // the Qwen3 model it is (or was converted from):
                                 // "Qwen3ForCausalLM" | "Qwen3MoeForCausalLM"
    ae_folder_kind folder;
    int vocab_size;
    int hidden_size;
    int intermediate_size;       // dense MLP width
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int head_dim;                // explicit or hidden_size / num_attention_heads
    double rms_norm_eps;
    double rope_theta;
    int max_position_embeddings;
    int tie_word_embeddings;
    int bos_token_id, eos_token_id; // -1 when absent/null
    // MoE (arch == AE_ARCH_QWEN3_MOE)
    int num_experts;
    int num_experts_per_tok;
    int moe_intermediate_size;
    int norm_topk_prob;
    int decoder_sparse_step;
    int n_mlp_only_layers;
    int *mlp_only_layers;        // (n_mlp_only_layers,)
    // sliding window
    int use_sliding_window;
    int sliding_window;          // 0 when null
    int max_window_layers;
    ae_layer_attn *layer_types;  // (num_hidden_layers,) resolved per layer
    double initializer_range;
    // Student fields (docs/TARGETS.md); a teacher has target == AE_ATTN_GQA.
    ae_attn_kind target;         // "attention_target": "mla" | "gateswa"
    ae_attn_kind *layer_attn;    // (num_hidden_layers,) from "attention_replaced_layers"
    int q_lora_rank;             // MLA: 0 = plain q_proj
    int kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int attn_gate;               // GateSWA: 0 none, 1 elementwise, 2 one per head
    int attn_sinks;              // GateSWA: learned per-head sinks
} ae_config;

// Reads dir/config.json.
ae_status ae_config_load(const char *dir, ae_config *cfg);
// Parses JSON text; `origin` names the file in error messages.
ae_status ae_config_parse(const char *json, const char *origin, ae_config *cfg);
void ae_config_free(ae_config *cfg);
// Deep copy (the per-layer arrays are duplicated).
ae_status ae_config_copy(ae_config *dst, const ae_config *src);

// 1 if layer l uses the sparse MoE block (HF rule: not in mlp_only_layers, num_experts > 0 and
// (l + 1) % decoder_sparse_step == 0).
int ae_config_layer_is_moe(const ae_config *cfg, int l);
// Total parameter count implied by the config (embeddings counted once when tied).
int64_t ae_config_param_count(const ae_config *cfg);
// KV-cache bytes for one sequence of `ctx` tokens, bf16 (2 bytes/value), summed over layers:
// GQA/GateSWA layers store 2·kv_heads·head_dim values per token, sliding layers only for the
// last min(ctx, sliding_window) tokens; MLA layers store kv_lora_rank + qk_rope_head_dim.
int64_t ae_config_kv_bytes(const ae_config *cfg, int64_t ctx);
// Cached values per token of layer l (K and V, or the MLA latent).
int64_t ae_config_kv_values(const ae_config *cfg, int l);
// Parameters of layer l's attention module.
int64_t ae_config_attn_params(const ae_config *cfg, int l);
const char *ae_attn_kind_name(ae_attn_kind k); // "gqa", "mla", "gateswa"

#endif
