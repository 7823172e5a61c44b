// Every tensor of a model under its Hugging Face name, in file order: embed_tokens, then per
// layer the two norms, the attention module, the MLP (or router and experts); the final norm;
// lm_head unless tied. The one walk that saving and exporting share.
#ifndef AE_MODEL_TENSORS_H
#define AE_MODEL_TENSORS_H

#include "model/model.h"

typedef struct {
    const char *name;  // e.g. "model.layers.3.self_attn.kv_b_proj.weight"
    ae_ptr data;       // backend memory (be->weight_dtype; GateSWA sinks F32)
    int ndim;          // 1 or 2
    int64_t shape[2];  // (rows, cols) PyTorch (out, in) layout; shape[1] unused when ndim == 1
    int replaced;      // 1: part of a replaced attention module (MLA / GateSWA)
} ae_model_tensor;

// Called once per tensor; a non-OK status stops the walk and is returned. t is valid only
// during the call.
typedef ae_status (*ae_model_tensor_fn)(void *ud, const ae_model_tensor *t);
ae_status ae_model_foreach_tensor(const ae_model *m, ae_model_tensor_fn fn, void *ud);
// Number of values of a tensor.
int64_t ae_model_tensor_numel(const ae_model_tensor *t);

#endif
