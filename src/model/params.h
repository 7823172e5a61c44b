// Named parameter tensors of a module, so allocation, loading, training, checkpointing and
// export can walk any attention variant the same way.
#ifndef AE_MODEL_PARAMS_H
#define AE_MODEL_PARAMS_H

#include <stdint.h>

#include "backend/ops.h"

#define AE_MAX_MODULE_PARAMS 16

typedef struct {
    const char *name;  // relative to "model.layers.N.self_attn.", e.g. "q_proj.weight", "sinks"
    ae_ptr *slot;      // the module's field holding the tensor
    ae_ptr data;       // *slot when the list was made (backend memory, owned by the module)
    int ndim;          // 1 or 2
    int64_t shape[2];  // (rows, cols) in the PyTorch Linear layout (out, in)
    int decay;         // 1: AdamW weight decay applies (matrices); 0: norms, gates' biases, sinks
} ae_param;

typedef struct {
    int n;
    ae_param p[AE_MAX_MODULE_PARAMS];
} ae_param_list;

// Appends one tensor: cols > 0 gives a (rows, cols) matrix, cols == 0 a (rows) vector.
void ae_param_list_add(ae_param_list *l, const char *name, ae_ptr *slot, int64_t rows,
                       int64_t cols, int decay);
// Number of values of a parameter.
int64_t ae_param_numel(const ae_param *p);
// Allocates every tensor of the list into its slot on `be` (dtype dt; "sinks" always F32) and
// zeroes it; on failure frees what it made (AE_ERR_NOMEM).
ae_status ae_params_alloc(const ae_backend *be, ae_dtype dt, ae_param_list *l);
// Frees every tensor of the list and nulls its slot.
void ae_params_free(const ae_backend *be, const ae_param_list *l);

#endif
