// Writing a model (teacher or student) as a Hugging Face folder: config.json (the source
// config with the student fields set), model.safetensors, and the tokenizer/generation files
// copied from the source folder. The folder appears atomically: everything is written into
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
// Error unless out_dir is absent (or force): checked before any long work starts.
ae_status ae_save_check_target(const char *out_dir, int force);

#endif
