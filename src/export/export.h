// attnedit export: a student folder -> a folder an inference engine loads (docs/EXPORT.md).
//
//   format hf, MLA student (every layer MLA, dense Qwen3 teacher) -> DeepSeek-V3 layout:
//     "architectures": ["DeepseekV3ForCausalLM"], every layer dense (first_k_dense_replace =
//     num_hidden_layers), the MLA tensors under their DeepSeek names (already attnedit's), an
//     explicit lm_head.weight (vLLM's DeepSeek model never ties it). transformers, vLLM and
//     SGLang load it with their own code; attnedit loads it back bit-identically.
//   format hf, MLA student of a Qwen3-MoE teacher -> DeepSeek-V2 layout: "architectures":
//     ["DeepseekV2ForCausalLM"], scoring_func softmax, topk_method greedy (one expert group),
//     norm_topk_prob the teacher's, no shared experts (n_shared_experts 0), routed_scaling_factor
//     1, leading dense layers (mlp_only_layers 0..k-1) as first_k_dense_replace = k; experts
//     under the names DeepSeek checkpoints use (mlp.experts.N.{gate,up,down}_proj, router
//     mlp.gate). transformers' DeepseekV2 never renormalises the top-k weights, so with
//     norm_topk_prob the folder also ships modeling_attnedit_deepseek_v2.py (auto_map; a router
//     that renormalises, trust_remote_code=True); vLLM/SGLang renormalise from norm_topk_prob.
//     attnedit loads it back (io/config_arch.c) bit-identically.
//   format hf, GateSWA student (dense teacher; mixed allowed) -> Qwen3 with remote code:
//     "architectures": ["AttneditGateSWAForCausalLM"], auto_map, and the two Python files
//     (src/export/hf/*.py, compiled into the binary) implementing the gate and the sinks on
//     top of transformers' Qwen3 classes (trust_remote_code=True).
// Refused with a message saying why: a teacher (nothing to export), a mixed MLA student, a
// GateSWA student of a MoE teacher, an MLA student of a MoE teacher whose dense layers are not
// all before its MoE layers (mlp_only_layers / decoder_sparse_step), an existing out_dir without force, out_dir equal to or inside the
// model folder (or containing it). Tensors are written in the model's order, converted from the
// f32 the model holds (bf16/f16: round to nearest even; a value beyond f16's range is an
// error), in safetensors files of at most shard_size bytes each (a tensor larger than that gets
// a file of its own): one file "model.safetensors", or "model-0000i-of-0000n.safetensors" with
// "model.safetensors.index.json". The folder appears atomically (temp folder + rename); on
// any failure, disk full included, nothing is left.
#ifndef AE_EXPORT_EXPORT_H
#define AE_EXPORT_EXPORT_H

#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "io/config.h"

#define AE_EXPORT_DEFAULT_SHARD 5000000000ull

typedef enum { AE_EXPORT_DEEPSEEK_V3 = 0, AE_EXPORT_GATESWA = 1, AE_EXPORT_DEEPSEEK_V2 = 2 } ae_export_kind;

// The engine a --format hf folder is for, where engines read the same config differently. Only
// the DeepSeek-V2 layout (MLA students of MoE teachers) differs: transformers (>= 5, typed
// configs) and SGLang need n_shared_experts as an integer (0: a zero-width shared MLP), vLLM
// builds a shared MLP unless it is null and then fails on its weights missing from the folder
// ("Following weights were not initialized from checkpoint"), so for vLLM it is null. vLLM runs
// on transformers < 5, whose untyped DeepseekV2Config accepts null; transformers >= 5 refuses
// such a folder. The DeepSeek-V3 and GateSWA folders are the same for every engine (GateSWA
// runs only in transformers: refused for vLLM).
typedef enum { AE_EXPORT_FOR_TRANSFORMERS = 0, AE_EXPORT_FOR_VLLM = 1 } ae_export_engine;

typedef struct {
    ae_dtype dtype;          // AE_DT_BF16 (default), AE_DT_F16 or AE_DT_F32
    uint64_t shard_size;     // largest safetensors file in bytes (0: AE_EXPORT_DEFAULT_SHARD)
    int force;               // replace an existing out_dir
    ae_export_engine engine; // --engine (hf only): transformers / sglang (default) or vllm
} ae_export_opts;

typedef struct {
    ae_export_kind kind;
    const char *architecture; // "DeepseekV3ForCausalLM" | "AttneditGateSWAForCausalLM" |
                              // "DeepseekV2ForCausalLM" (hf);
                              // "qwen3" | "qwen3moe" | "deepseek2" (gguf)
    int n_shards;
    uint64_t total_bytes;     // tensor data, all shards
    int64_t n_tensors;
} ae_export_report;

// What a model with this config exports to (--format hf), or AE_ERR_ARG / AE_ERR_UNSUPPORTED
// saying why it cannot (teacher, mixed MLA, GateSWA of MoE, MoE with dense layers after MoE
// ones). `what` names the model in the message.
ae_status ae_export_plan(const ae_config *cfg, const char *what, ae_export_kind *kind);
// Exports the student folder model_dir to out_dir (Hugging Face format). rep may be NULL.
ae_status ae_export_hf(const char *model_dir, const char *out_dir, const ae_export_opts *o,
                       ae_export_report *rep);
// --format gguf (llama.cpp, src/export/export_gguf.c): the GGUF architecture a model with this
// config exports to ("qwen3", "qwen3moe", "deepseek2"), or AE_ERR_UNSUPPORTED saying why it
// cannot (GateSWA student, mixed MLA student, MLA student of a MoE teacher with a dense layer
// after a MoE layer, sliding-window or partly dense teacher, Qwen3-MoE teacher with
// norm_topk_prob false).
ae_status ae_export_gguf_plan(const ae_config *cfg, const char *what, const char **arch);
// Writes model_dir (teacher or MLA student) as one GGUF v3 file out_file (temp file + rename:
// nothing is left on failure; an existing out_file needs o->force). o->shard_size is unused.
// rep->architecture is the GGUF architecture, n_shards 1, total_bytes the data section size.
ae_status ae_export_gguf(const char *model_dir, const char *out_file, const ae_export_opts *o,
                         ae_export_report *rep);
// "transformers" | "sglang" -> AE_EXPORT_FOR_TRANSFORMERS, "vllm" -> AE_EXPORT_FOR_VLLM;
// AE_ERR_ARG naming `opt` otherwise.
ae_status ae_export_parse_engine(const char *s, const char *opt, ae_export_engine *out);
// "bf16" | "f16" | "f32" -> dtype; AE_ERR_ARG naming `opt` otherwise.
ae_status ae_export_parse_dtype(const char *s, const char *opt, ae_dtype *out);
const char *ae_export_dtype_name(ae_dtype dt); // "bf16" | "f16" | "f32"

// Number of leading dense layers of a Qwen3-MoE config (DeepSeek's first_k_dense_replace /
// llama.cpp's leading_dense_block_count), or -1 when a dense layer follows a MoE layer
// (*bad_layer: that dense layer), which DeepSeek's layout cannot express.
int ae_export_moe_dense_lead(const ae_config *cfg, int *bad_layer);

// The Python files shipped with GateSWA and DeepSeek-V2 exports (generated from
// src/export/hf/*.py; a GateSWA export writes the *gateswa* ones, a DeepSeek-V2 export with
// norm_topk_prob the *deepseek_v2* one).
typedef struct {
    const char *name;
    const unsigned char *data;
    size_t size;
} ae_export_file;
extern const ae_export_file ae_export_hf_py_files[];
extern const int ae_export_hf_py_count;

#endif
