// Named parameter tensors of a module, so training, checkpointing and export can walk any
// attention variant the same way.
#ifndef AE_MODEL_PARAMS_H
#define AE_MODEL_PARAMS_H

#include <stdint.h>

#define AE_MAX_MODULE_PARAMS 16

typedef struct {
    const char *name;  // relative to "model.layers.N.self_attn.", e.g. "q_proj.weight", "sinks"
    float *data;       // owned by the module
    int ndim;          // 1 or 2
    int64_t shape[2];  // (rows, cols) in the PyTorch Linear layout (out, in)
    int decay;         // 1: AdamW weight decay applies (matrices); 0: norms, gates' biases, sinks
} ae_param;

typedef struct {
    int n;
    ae_param p[AE_MAX_MODULE_PARAMS];
} ae_param_list;

// Appends one tensor: cols > 0 gives a (rows, cols) matrix, cols == 0 a (rows) vector.
void ae_param_list_add(ae_param_list *l, const char *name, float *data, int64_t rows,
                       int64_t cols, int decay);

#endif
