// Writing a model (teacher or student) as a Hugging Face folder: config.json (the source
// config with the student fields set), model.safetensors, and the tokenizer/generation files
// copied from the source folder. A student's config.json names attnedit's own architecture
// ("architectures": ["AttneditStudentForCausalLM"], "model_type": "attnedit_student",
// "attnedit_base_architecture": the teacher's), which stock transformers refuses rather than
// misreading it as a Qwen3; a teacher keeps its Qwen3 names. The folder appears atomically: everything is written into
// "<out>.tmp.<pid>" and renamed at the end; on failure nothing is left behind.
#ifndef AE_MODEL_SAVE_H
#define AE_MODEL_SAVE_H

#include "core/error.h"
#include "model/model.h"

typedef struct {
    const char *src_dir;   // folder the model came from (config.json, tokenizer files)
    int force;             // replace an existing output folder
    int all_f32;           // write every tensor as F32 (default: replaced attention modules F32,
                           // the rest in the source dtype, which round-trips them bit-exactly)
    const char *metadata_json; // optional extra file "conversion.json" content, or NULL
} ae_save_opts;

ae_status ae_model_save(const ae_model *m, const char *out_dir, const ae_save_opts *o);
// Rewrites out_dir/model.safetensors from m (atomically: temp file + rename).
ae_status ae_model_save_weights(const ae_model *m, const char *out_dir, int all_f32);
// Writes dir/name atomically with `text` and a final newline.
ae_status ae_write_text_file(const char *dir, const char *name, const char *text);
// Copies the tokenizer and generation files (tokenizer.json, tokenizer_config.json,
// generation_config.json, special_tokens_map.json, vocab.json, merges.txt) that src_dir has
// into dst_dir (each atomically).
ae_status ae_copy_support_files(const char *src_dir, const char *dst_dir);
// Error unless out_dir is absent (or force): checked before any long work starts.
ae_status ae_save_check_target(const char *out_dir, int force);

#endif
