// Internal to src/export: the engine config.json builders and the sharded safetensors writer.
#ifndef AE_EXPORT_INTERNAL_H
#define AE_EXPORT_INTERNAL_H

#include "export/export.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/tensors.h"

// config.json text (heap, caller frees) for the export of model m (config m->cfg) whose
// student folder config.json is src_json (its token ids and other teacher fields are kept).
// `origin` names src_json in messages.
// engine: see ae_export_engine (n_shared_experts of the DeepSeek-V2 layout).
ae_status ae_export_config_deepseek(const ae_model *m, const char *src_json, const char *origin,
                                    ae_dtype dt, ae_export_engine engine, char **out);
ae_status ae_export_config_gateswa(const ae_model *m, const char *src_json, const char *origin,
                                   ae_dtype dt, char **out);
// "bfloat16" | "float16" | "float32"
const char *ae_export_torch_dtype(ae_dtype dt);

// Every tensor to export, in file order: the model's (ae_model_foreach_tensor), then, when
// untie_head and the model ties its embeddings, "lm_head.weight" = the embedding matrix.
ae_status ae_export_foreach_tensor(const ae_model *m, int untie_head, ae_model_tensor_fn fn,
                                   void *ud);

// The file tensor that tensor `name` of m (loaded by ae_model_load_shapes) is exported from,
// in src (m's folder): its own, or for "lm_head.weight" of a model that ties its embeddings,
// the embedding matrix. NULL with the message set when absent.
const ae_st_tensor *ae_export_source(const ae_st_set *src, const ae_model *m, const char *name);
// A file tensor's values as f32 into *out (heap, ae_free_aligned; NULL on failure).
ae_status ae_export_read_f32(const ae_st_tensor *t, float **out);

// Writes the tensors of m (ae_model_load_shapes), read one at a time from src (m's folder),
// into dir: safetensors files of at most shard_size bytes (header included), converted to dt,
// with model.safetensors.index.json when there are several.
ae_status ae_export_write_shards(const ae_model *m, const ae_st_set *src, int untie_head,
                                 const char *dir, ae_dtype dt, uint64_t shard_size,
                                 ae_export_report *rep);

#endif
