// Where an exported tensor's values come from (export_internal.h): the model folder's own
// safetensors files, read one tensor at a time, never the whole model.
#include <string.h>

#include "core/mem.h"
#include "export/export_internal.h"

const ae_st_tensor *ae_export_source(const ae_st_set *src, const ae_model *m, const char *name) {
    const ae_st_tensor *t = ae_st_find(src, name);
    if (!t && m->cfg.tie_word_embeddings && !strcmp(name, "lm_head.weight"))
        t = ae_st_find(src, "model.embed_tokens.weight");
    if (!t) ae_errorf(AE_ERR_FORMAT, "export: tensor '%s' is not in the model's files", name);
    return t;
}

ae_status ae_export_read_f32(const ae_st_tensor *t, float **out) {
    *out = ae_alloc_f32(t->numel > 0 ? (size_t)t->numel : 1);
    if (!*out) return AE_ERR_NOMEM;
    ae_status st = ae_st_to_f32(t, *out);
    if (st != AE_OK) {
        ae_free_aligned(*out);
        *out = NULL;
    }
    return st;
}
